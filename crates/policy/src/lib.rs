//! Authorization for Cordon: the Cedar schema and default policies shipped in
//! `policies/`, and a [`PolicyEngine`] that turns (principal, action, resource) into a
//! [`Decision`] naming the determining policies in sorted order. Tenancy (another
//! tenant's resource is "not found") is the caller's job before asking; the policies
//! repeat it as a safety net. This crate knows nothing of HTTP or SQL.

use std::collections::{HashMap, HashSet};
use std::str::FromStr;
use std::sync::Mutex;

use cedar_policy::{
    Authorizer, Context, Entities, Entity, EntityId, EntityTypeName, EntityUid, PolicyId,
    PolicySet, Request, RestrictedExpression, Schema, ValidationMode, Validator,
};
use cordon_core::{KeyId, Role, SessionAction, SessionId, TenantId};
use sha2::{Digest, Sha256};

/// The policies a fresh deployment enforces.
pub const DEFAULT_POLICIES: &str = include_str!("../policies/default.cedar");
/// The schema every policy set is validated against.
pub const SCHEMA: &str = include_str!("../policies/cordon.cedarschema");

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("invalid Cedar schema: {0}")]
    Schema(String),
    #[error("invalid Cedar policies: {0}")]
    Parse(String),
    #[error("policy {0} has no @id annotation; every policy needs one so denials can name it")]
    MissingId(String),
    #[error("policies do not validate against the schema: {0}")]
    Validation(String),
    #[error("cannot build the authorization request: {0}")]
    Request(String),
}

/// Who is asking: the authenticated API key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Principal {
    pub key_id: KeyId,
    pub tenant_id: TenantId,
    pub role: Role,
    pub system: bool,
}

/// What the principal wants to do. The names match the actions in the schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    TenantCreate,
    TenantList,
    TenantRead,
    KeyCreate,
    KeyList,
    KeyRead,
    KeyRevoke,
    SessionCreate,
    SessionList,
    SessionRead,
    SessionEvents,
    Session(SessionAction),
    /// Run a command or manage processes in the session's sandbox.
    SessionExec,
    /// Read the sandbox's files, processes and state.
    SessionFilesRead,
    /// Write or delete the sandbox's files.
    SessionFilesWrite,
    /// Read the tenant's egress policy.
    EgressPolicyRead,
    /// Replace the tenant's egress policy.
    EgressPolicyWrite,
    /// Read the egress gateway's decisions in the tenant.
    EgressDecisionsRead,
    /// Store a secret (its value is never read back).
    SecretCreate,
    /// List the tenant's secrets (metadata only).
    SecretList,
    /// Read one secret's metadata.
    SecretRead,
    /// Delete a secret, revoking its leases.
    SecretDelete,
    /// Lend a secret to the session.
    SessionLeaseCreate,
    /// List the session's credential leases.
    SessionLeaseList,
    /// Extend one of the session's credential leases.
    SessionLeaseRenew,
    /// Revoke one of the session's credential leases.
    SessionLeaseRevoke,
    /// List, compare and download the session's workspace versions.
    SessionVersionsRead,
    /// Store an uploaded archive as a new version of the session's workspace.
    SessionVersionsWrite,
    /// Restore a version into the session's workspace.
    SessionRestore,
    /// Fork a new session from one of the session's versions.
    SessionFork,
    /// Promote a version of the session (or chosen paths) to a signed release.
    SessionPromote,
    /// Read the tenant's evidence log, proofs and checkpoints, and export bundles.
    EvidenceRead,
    /// List, read and download the tenant's releases.
    ReleaseRead,
    /// Store a workflow definition.
    WorkflowDefine,
    /// Read the tenant's workflow definitions.
    WorkflowRead,
    /// Start a run.
    RunStart,
    /// Record a durable step of a run, or send it an event.
    RunStep,
    /// Read runs and their journals.
    RunRead,
    /// Cancel, pause or unpause a run.
    RunControl,
    /// Decide an approval step.
    RunApprove,
    /// Read is `RunRead`; redrive or discard dead letters.
    DlqManage,
    /// Create or delete cron schedules.
    ScheduleManage,
    /// Read the tenant's SRE metrics, SLOs and weekly reports.
    MetricsRead,
    /// Mark a policy block (an egress denial or a dead letter) as a false positive.
    BlockReview,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::TenantCreate => "tenant.create",
            Action::TenantList => "tenant.list",
            Action::TenantRead => "tenant.read",
            Action::KeyCreate => "key.create",
            Action::KeyList => "key.list",
            Action::KeyRead => "key.read",
            Action::KeyRevoke => "key.revoke",
            Action::SessionCreate => "session.create",
            Action::SessionList => "session.list",
            Action::SessionRead => "session.read",
            Action::SessionEvents => "session.events",
            Action::Session(SessionAction::Activate) => "session.activate",
            Action::Session(SessionAction::Checkpoint) => "session.checkpoint",
            Action::Session(SessionAction::Suspend) => "session.suspend",
            Action::Session(SessionAction::Resume) => "session.resume",
            Action::Session(SessionAction::Close) => "session.close",
            Action::SessionExec => "session.exec",
            Action::SessionFilesRead => "session.files.read",
            Action::SessionFilesWrite => "session.files.write",
            Action::EgressPolicyRead => "egress.policy.read",
            Action::EgressPolicyWrite => "egress.policy.write",
            Action::EgressDecisionsRead => "egress.decisions.read",
            Action::SecretCreate => "secret.create",
            Action::SecretList => "secret.list",
            Action::SecretRead => "secret.read",
            Action::SecretDelete => "secret.delete",
            Action::SessionLeaseCreate => "session.lease.create",
            Action::SessionLeaseList => "session.lease.list",
            Action::SessionLeaseRenew => "session.lease.renew",
            Action::SessionLeaseRevoke => "session.lease.revoke",
            Action::SessionVersionsRead => "session.versions.read",
            Action::SessionVersionsWrite => "session.versions.write",
            Action::SessionRestore => "session.restore",
            Action::SessionFork => "session.fork",
            Action::SessionPromote => "session.promote",
            Action::EvidenceRead => "evidence.read",
            Action::ReleaseRead => "release.read",
            Action::WorkflowDefine => "workflow.define",
            Action::WorkflowRead => "workflow.read",
            Action::RunStart => "run.start",
            Action::RunStep => "run.step",
            Action::RunRead => "run.read",
            Action::RunControl => "run.control",
            Action::RunApprove => "run.approve",
            Action::DlqManage => "dlq.manage",
            Action::ScheduleManage => "schedule.manage",
            Action::MetricsRead => "metrics.read",
            Action::BlockReview => "block.review",
        }
    }
}

/// What the action is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource<'a> {
    /// The deployment as a whole (tenant management).
    Deployment,
    Tenant(TenantId),
    Key {
        id: KeyId,
        tenant_id: TenantId,
        role: Role,
        system: bool,
    },
    Session {
        id: SessionId,
        tenant_id: TenantId,
        owner: KeyId,
        workload_class: &'a str,
        environment: &'a str,
    },
}

/// The outcome of one authorization question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// The ids of the policies that determined the outcome, sorted: for a denial, the
    /// forbids that matched (empty when no permit matched at all).
    pub policies: Vec<String>,
    /// Evaluation errors Cedar reported; a policy that errors is skipped.
    pub errors: Vec<String>,
}

/// A question whose answer depends only on these values: the resource is the deployment
/// (`None`) or a tenant.
type DecisionKey = (Principal, Action, Option<TenantId>);

/// Past this many remembered decisions the cache starts over rather than grow.
const DECISION_CACHE_CAPACITY: usize = 10_000;

/// A validated policy set, ready to answer questions. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct PolicyEngine {
    policies: PolicySet,
    /// The schema's action entities, carrying each action's groups (`read`, ...).
    action_entities: Entities,
    /// Decisions about the deployment or a tenant, by (principal, action, tenant). They
    /// depend on nothing but these values and the immutable policy set, and the same
    /// callers ask them over and over (every session create, every list).
    decisions: Mutex<HashMap<DecisionKey, Decision>>,
    authorizer: Authorizer,
    version: String,
}

fn uid(type_name: &str, id: &str) -> Result<EntityUid, PolicyError> {
    let type_name = EntityTypeName::from_str(type_name)
        .map_err(|error| PolicyError::Request(error.to_string()))?;
    Ok(EntityUid::from_type_name_and_id(
        type_name,
        EntityId::new(id),
    ))
}

fn entity(
    uid: EntityUid,
    attributes: Vec<(&str, RestrictedExpression)>,
    parents: Vec<EntityUid>,
) -> Result<Entity, PolicyError> {
    let attributes: HashMap<String, RestrictedExpression> = attributes
        .into_iter()
        .map(|(name, value)| (name.to_owned(), value))
        .collect();
    Entity::new(uid, attributes, parents.into_iter().collect::<HashSet<_>>())
        .map_err(|error| PolicyError::Request(error.to_string()))
}

fn key_entity(
    id: KeyId,
    tenant: &EntityUid,
    role: Role,
    system: bool,
) -> Result<Entity, PolicyError> {
    entity(
        uid("Cordon::Key", &id.to_string())?,
        vec![
            (
                "role",
                RestrictedExpression::new_string(role.as_str().to_owned()),
            ),
            (
                "tenant",
                RestrictedExpression::new_entity_uid(tenant.clone()),
            ),
            ("system", RestrictedExpression::new_bool(system)),
        ],
        vec![tenant.clone()],
    )
}

impl PolicyEngine {
    /// The engine for the policies shipped in the repository.
    pub fn with_default_policies() -> Result<Self, PolicyError> {
        Self::from_text(DEFAULT_POLICIES)
    }

    /// Parses and validates `text` against the schema. Every policy needs an `@id`.
    pub fn from_text(text: &str) -> Result<Self, PolicyError> {
        let (schema, _warnings) = Schema::from_cedarschema_str(SCHEMA)
            .map_err(|error| PolicyError::Schema(error.to_string()))?;
        let parsed =
            PolicySet::from_str(text).map_err(|error| PolicyError::Parse(error.to_string()))?;
        let mut policies = PolicySet::new();
        for policy in parsed.policies() {
            let id = policy
                .annotation("id")
                .ok_or_else(|| PolicyError::MissingId(policy.id().to_string()))?;
            let renamed = policy.new_id(PolicyId::new(id));
            policies
                .add(renamed)
                .map_err(|error| PolicyError::Parse(error.to_string()))?;
        }
        let validation = Validator::new(schema.clone()).validate(&policies, ValidationMode::Strict);
        if !validation.validation_passed() {
            let problems: Vec<String> = validation
                .validation_errors()
                .map(|error| error.to_string())
                .collect();
            return Err(PolicyError::Validation(problems.join("; ")));
        }
        let digest = Sha256::digest(text.as_bytes());
        let version = format!("sha256:{}", hex::encode(&digest[..8]));
        let action_entities = schema
            .action_entities()
            .map_err(|error| PolicyError::Schema(error.to_string()))?;
        Ok(Self {
            policies,
            action_entities,
            decisions: Mutex::new(HashMap::new()),
            authorizer: Authorizer::new(),
            version,
        })
    }

    /// Identifies the policy text: recorded on each session as its policy version.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// Decides whether `principal` may take `action` on `resource`.
    pub fn authorize(
        &self,
        principal: &Principal,
        action: Action,
        resource: &Resource<'_>,
    ) -> Result<Decision, PolicyError> {
        let cache_key = match *resource {
            Resource::Deployment => Some((*principal, action, None)),
            Resource::Tenant(id) => Some((*principal, action, Some(id))),
            Resource::Key { .. } | Resource::Session { .. } => None,
        };
        if let Some(key) = &cache_key
            && let Some(decision) = self.decisions.lock().ok().and_then(|d| d.get(key).cloned())
        {
            return Ok(decision);
        }
        let decision = self.evaluate(principal, action, resource)?;
        if let Some(key) = cache_key
            && decision.errors.is_empty()
            && let Ok(mut decisions) = self.decisions.lock()
        {
            if decisions.len() >= DECISION_CACHE_CAPACITY {
                decisions.clear();
            }
            decisions.insert(key, decision.clone());
        }
        Ok(decision)
    }

    fn evaluate(
        &self,
        principal: &Principal,
        action: Action,
        resource: &Resource<'_>,
    ) -> Result<Decision, PolicyError> {
        let principal_tenant = uid("Cordon::Tenant", &principal.tenant_id.to_string())?;
        let principal_entity = key_entity(
            principal.key_id,
            &principal_tenant,
            principal.role,
            principal.system,
        )?;
        let principal_uid = principal_entity.uid();
        let mut entities = vec![principal_entity, entity(principal_tenant, vec![], vec![])?];

        let resource_uid = match *resource {
            Resource::Deployment => uid("Cordon::Deployment", "cordon")?,
            Resource::Tenant(id) => uid("Cordon::Tenant", &id.to_string())?,
            Resource::Key {
                id,
                tenant_id,
                role,
                system,
            } => {
                let tenant = uid("Cordon::Tenant", &tenant_id.to_string())?;
                let key = key_entity(id, &tenant, role, system)?;
                let key_uid = key.uid();
                entities.push(key);
                entities.push(entity(tenant, vec![], vec![])?);
                key_uid
            }
            Resource::Session {
                id,
                tenant_id,
                owner,
                workload_class,
                environment,
            } => {
                let tenant = uid("Cordon::Tenant", &tenant_id.to_string())?;
                let owner = uid("Cordon::Key", &owner.to_string())?;
                let session = entity(
                    uid("Cordon::Session", &id.to_string())?,
                    vec![
                        (
                            "tenant",
                            RestrictedExpression::new_entity_uid(tenant.clone()),
                        ),
                        ("owner", RestrictedExpression::new_entity_uid(owner)),
                        (
                            "workload_class",
                            RestrictedExpression::new_string(workload_class.into()),
                        ),
                        (
                            "environment",
                            RestrictedExpression::new_string(environment.into()),
                        ),
                    ],
                    vec![tenant.clone()],
                )?;
                let session_uid = session.uid();
                entities.push(session);
                entities.push(entity(tenant, vec![], vec![])?);
                session_uid
            }
        };
        if !entities.iter().any(|e| e.uid() == resource_uid) {
            entities.push(entity(resource_uid.clone(), vec![], vec![])?);
        }
        // Two tenant entities may be the same one; keep the first of each uid.
        let mut seen = HashSet::new();
        entities.retain(|e| seen.insert(e.uid()));

        // The policies were validated against the schema at load, and the entities and
        // request are built above from typed values in the schema's shape: validating
        // them again per request would cost more than the evaluation itself.
        let action_uid = uid("Cordon::Action", action.as_str())?;
        let action_entity = self
            .action_entities
            .get(&action_uid)
            .cloned()
            .ok_or_else(|| {
                PolicyError::Request(format!("action {} is not in the schema", action.as_str()))
            })?;
        entities.push(action_entity);
        let entities = Entities::from_entities(entities, None)
            .map_err(|error| PolicyError::Request(error.to_string()))?;
        let request = Request::new(
            principal_uid,
            action_uid,
            resource_uid,
            Context::empty(),
            None,
        )
        .map_err(|error| PolicyError::Request(error.to_string()))?;
        let response = self
            .authorizer
            .is_authorized(&request, &self.policies, &entities);
        let mut policies: Vec<String> = response
            .diagnostics()
            .reason()
            .map(|id| id.to_string())
            .collect();
        policies.sort();
        let errors = response
            .diagnostics()
            .errors()
            .map(|error| error.to_string())
            .collect();
        Ok(Decision {
            allowed: response.decision() == cedar_policy::Decision::Allow,
            policies,
            errors,
        })
    }
}
