//! Authorization of a workflow run's steps. A run acts as the key that started it: each
//! tool step is asked of Cedar as that key would ask for the matching API call, and the
//! decision is recorded as evidence like a request's. A revoked key's runs can do nothing.

use std::sync::Arc;

use async_trait::async_trait;
use cordon_control::{Control, StepAuthorizer, StepDenial};
use cordon_core::{KeyId, ReasonCode, Session, SessionAction, TenantId};
use cordon_policy::{Action, PolicyEngine, Principal, Resource};

#[derive(Debug)]
pub(crate) struct ApiAuthorizer {
    policy: Arc<PolicyEngine>,
    control: Control,
}

impl ApiAuthorizer {
    pub(crate) fn new(policy: Arc<PolicyEngine>, control: Control) -> Self {
        Self { policy, control }
    }
}

fn deny(message: impl Into<String>) -> StepDenial {
    StepDenial {
        reason: ReasonCode::AuthzDenied,
        message: message.into(),
    }
}

fn action_of(step: &str) -> Option<Action> {
    Some(match step {
        "exec" | "http" => Action::SessionExec,
        "checkpoint" | "transition:checkpoint" => Action::Session(SessionAction::Checkpoint),
        "restore" => Action::SessionRestore,
        "promote" => Action::SessionPromote,
        "transition:activate" => Action::Session(SessionAction::Activate),
        "transition:suspend" => Action::Session(SessionAction::Suspend),
        "transition:resume" => Action::Session(SessionAction::Resume),
        "transition:close" => Action::Session(SessionAction::Close),
        "session.create" => Action::SessionCreate,
        _ => return None,
    })
}

#[async_trait]
impl StepAuthorizer for ApiAuthorizer {
    async fn authorize(
        &self,
        tenant_id: TenantId,
        principal: &str,
        step: &str,
        session: Option<&Session>,
    ) -> Result<(), StepDenial> {
        let action =
            action_of(step).ok_or_else(|| deny(format!("`{step}` is not a step action")))?;
        let key_id: KeyId = principal
            .parse()
            .map_err(|_| deny(format!("`{principal}` is not a key")))?;
        let key = match self.control.store().get_key(tenant_id, key_id).await {
            Ok(Some(key)) => key,
            Ok(None) => return Err(deny("the key that started the run no longer exists")),
            Err(error) => {
                return Err(StepDenial {
                    reason: error.reason(),
                    message: error.to_string(),
                });
            }
        };
        if key.revoked_at.is_some() {
            return Err(deny("the key that started the run is revoked"));
        }
        let who = Principal {
            key_id: key.id,
            tenant_id: key.tenant_id,
            role: key.role,
            system: key.system,
        };
        let resource = match session {
            Some(s) => Resource::Session {
                id: s.id,
                tenant_id: s.tenant_id,
                owner: s.owner,
                workload_class: &s.workload_class,
                environment: &s.environment,
            },
            None => Resource::Tenant(tenant_id),
        };
        let decision = self
            .policy
            .authorize(&who, action, &resource)
            .map_err(|e| deny(format!("policy evaluation failed: {e}")))?;
        if let Some(artifacts) = self.control.artifacts() {
            let record = cordon_artifacts::evidence_log::Record::new(
                tenant_id,
                session.map(|s| s.id),
                "authz",
                principal,
            )
            .field("action", action.as_str())
            .field(
                "resource",
                session.map_or(tenant_id.to_string(), |s| s.id.to_string()),
            )
            .field("allowed", decision.allowed)
            .field("policies", decision.policies.clone())
            .field("role", key.role.as_str())
            .field("via", "workflow");
            artifacts.evidence.record_detached(record);
        }
        if decision.allowed {
            return Ok(());
        }
        Err(deny(if decision.policies.is_empty() {
            format!(
                "`{}` is not permitted: no policy allows it",
                action.as_str()
            )
        } else {
            format!(
                "`{}` is denied by policy {}",
                action.as_str(),
                decision.policies.join(", ")
            )
        }))
    }

    fn policy_version(&self) -> String {
        self.policy.version().to_owned()
    }
}
