//! The default policies, role by role, through the public engine.

#![allow(clippy::unwrap_used, reason = "tests")]

use cordon_core::{KeyId, Role, SessionAction, SessionId, TenantId};
use cordon_policy::{Action, PolicyEngine, Principal, Resource};

fn principal(tenant_id: TenantId, role: Role) -> Principal {
    Principal {
        key_id: KeyId::generate(),
        tenant_id,
        role,
        system: false,
    }
}

/// Renders one decision as `allow` or `deny [policy, ...]`.
fn check(engine: &PolicyEngine, who: &Principal, action: Action, resource: Resource<'_>) -> String {
    let decision = engine.authorize(who, action, &resource).unwrap();
    assert!(decision.errors.is_empty(), "{:?}", decision.errors);
    if decision.allowed {
        "allow".into()
    } else {
        format!("deny {:?}", decision.policies)
    }
}

#[test]
fn default_policies_decide_each_role() {
    let engine = PolicyEngine::with_default_policies().unwrap();
    let tenant = TenantId::generate();
    let other_tenant = TenantId::generate();
    let admin = principal(tenant, Role::Admin);
    let operator = principal(tenant, Role::Operator);
    let agent = principal(tenant, Role::Agent);
    let auditor = principal(tenant, Role::Auditor);
    let system = Principal {
        system: true,
        ..principal(tenant, Role::Admin)
    };
    let session_of = |owner: KeyId| Resource::Session {
        id: SessionId::generate(),
        tenant_id: tenant,
        owner,
        workload_class: "coding",
        environment: "dev",
    };
    let someone_else = KeyId::generate();
    let a_key = Resource::Key {
        id: someone_else,
        tenant_id: tenant,
        role: Role::Agent,
        system: false,
    };
    let activate = Action::Session(SessionAction::Activate);

    let mut table = Vec::new();
    let mut row = |label: &str, outcome: String| table.push(format!("{label:<44} {outcome}"));
    row(
        "system tenant.create",
        check(&engine, &system, Action::TenantCreate, Resource::Deployment),
    );
    row(
        "system key.create other tenant",
        check(
            &engine,
            &system,
            Action::KeyCreate,
            Resource::Tenant(other_tenant),
        ),
    );
    row(
        "admin tenant.create",
        check(&engine, &admin, Action::TenantCreate, Resource::Deployment),
    );
    row(
        "admin key.create own tenant",
        check(&engine, &admin, Action::KeyCreate, Resource::Tenant(tenant)),
    );
    row(
        "admin key.create other tenant",
        check(
            &engine,
            &admin,
            Action::KeyCreate,
            Resource::Tenant(other_tenant),
        ),
    );
    row(
        "admin activate any session",
        check(&engine, &admin, activate, session_of(someone_else)),
    );
    row(
        "operator activate any session",
        check(&engine, &operator, activate, session_of(someone_else)),
    );
    row(
        "operator key.create",
        check(
            &engine,
            &operator,
            Action::KeyCreate,
            Resource::Tenant(tenant),
        ),
    );
    row(
        "operator key.list",
        check(
            &engine,
            &operator,
            Action::KeyList,
            Resource::Tenant(tenant),
        ),
    );
    row(
        "agent session.create",
        check(
            &engine,
            &agent,
            Action::SessionCreate,
            Resource::Tenant(tenant),
        ),
    );
    row(
        "agent activate own session",
        check(&engine, &agent, activate, session_of(agent.key_id)),
    );
    row(
        "agent activate other's session",
        check(&engine, &agent, activate, session_of(someone_else)),
    );
    row(
        "agent read other's session",
        check(
            &engine,
            &agent,
            Action::SessionRead,
            session_of(someone_else),
        ),
    );
    row(
        "agent key.list",
        check(&engine, &agent, Action::KeyList, Resource::Tenant(tenant)),
    );
    row(
        "agent key.revoke",
        check(&engine, &agent, Action::KeyRevoke, a_key),
    );
    let system_key = Resource::Key {
        id: someone_else,
        tenant_id: tenant,
        role: Role::Admin,
        system: true,
    };
    row(
        "admin key.revoke system key",
        check(&engine, &admin, Action::KeyRevoke, system_key),
    );
    row(
        "system key.revoke system key",
        check(&engine, &system, Action::KeyRevoke, system_key),
    );
    row(
        "auditor read session",
        check(
            &engine,
            &auditor,
            Action::SessionRead,
            session_of(someone_else),
        ),
    );
    row(
        "auditor session events",
        check(
            &engine,
            &auditor,
            Action::SessionEvents,
            session_of(someone_else),
        ),
    );
    row(
        "auditor key.list",
        check(&engine, &auditor, Action::KeyList, Resource::Tenant(tenant)),
    );
    row(
        "auditor activate",
        check(&engine, &auditor, activate, session_of(someone_else)),
    );
    row(
        "auditor session.create",
        check(
            &engine,
            &auditor,
            Action::SessionCreate,
            Resource::Tenant(tenant),
        ),
    );
    row(
        "operator read other tenant's session",
        check(
            &engine,
            &operator,
            Action::SessionRead,
            Resource::Session {
                id: SessionId::generate(),
                tenant_id: other_tenant,
                owner: someone_else,
                workload_class: "x",
                environment: "y",
            },
        ),
    );
    row(
        "agent exec own session",
        check(
            &engine,
            &agent,
            Action::SessionExec,
            session_of(agent.key_id),
        ),
    );
    row(
        "agent exec other's session",
        check(
            &engine,
            &agent,
            Action::SessionExec,
            session_of(someone_else),
        ),
    );
    row(
        "auditor read files",
        check(
            &engine,
            &auditor,
            Action::SessionFilesRead,
            session_of(someone_else),
        ),
    );
    row(
        "auditor write files",
        check(
            &engine,
            &auditor,
            Action::SessionFilesWrite,
            session_of(someone_else),
        ),
    );
    row(
        "auditor exec",
        check(
            &engine,
            &auditor,
            Action::SessionExec,
            session_of(someone_else),
        ),
    );
    row(
        "operator exec any session",
        check(
            &engine,
            &operator,
            Action::SessionExec,
            session_of(someone_else),
        ),
    );
    let own = Resource::Tenant(tenant);
    let egress_rows = [
        (
            "admin egress.policy.write",
            &admin,
            Action::EgressPolicyWrite,
            own,
        ),
        (
            "admin secret.delete other tenant",
            &admin,
            Action::SecretDelete,
            Resource::Tenant(other_tenant),
        ),
        (
            "system secret.create other tenant",
            &system,
            Action::SecretCreate,
            Resource::Tenant(other_tenant),
        ),
        (
            "operator secret.create",
            &operator,
            Action::SecretCreate,
            own,
        ),
        ("operator secret.read", &operator, Action::SecretRead, own),
        ("agent secret.create", &agent, Action::SecretCreate, own),
        ("agent secret.list", &agent, Action::SecretList, own),
        ("agent secret.read", &agent, Action::SecretRead, own),
        (
            "agent egress.policy.read",
            &agent,
            Action::EgressPolicyRead,
            own,
        ),
        (
            "agent egress.decisions.read",
            &agent,
            Action::EgressDecisionsRead,
            own,
        ),
        (
            "auditor egress.policy.read",
            &auditor,
            Action::EgressPolicyRead,
            own,
        ),
        (
            "auditor egress.decisions.read",
            &auditor,
            Action::EgressDecisionsRead,
            own,
        ),
        ("auditor secret.list", &auditor, Action::SecretList, own),
        (
            "auditor egress.policy.write",
            &auditor,
            Action::EgressPolicyWrite,
            own,
        ),
        ("auditor secret.delete", &auditor, Action::SecretDelete, own),
    ];
    for (label, who, action, resource) in egress_rows {
        row(label, check(&engine, who, action, resource));
    }
    let lease_rows = [
        (
            "admin lease.create any session",
            &admin,
            Action::SessionLeaseCreate,
            someone_else,
        ),
        (
            "operator lease.renew any session",
            &operator,
            Action::SessionLeaseRenew,
            someone_else,
        ),
        (
            "operator lease.revoke any session",
            &operator,
            Action::SessionLeaseRevoke,
            someone_else,
        ),
        (
            "agent lease.create own session",
            &agent,
            Action::SessionLeaseCreate,
            agent.key_id,
        ),
        (
            "agent lease.revoke own session",
            &agent,
            Action::SessionLeaseRevoke,
            agent.key_id,
        ),
        (
            "agent lease.list own session",
            &agent,
            Action::SessionLeaseList,
            agent.key_id,
        ),
        (
            "agent lease.list other's session",
            &agent,
            Action::SessionLeaseList,
            someone_else,
        ),
        (
            "auditor lease.list",
            &auditor,
            Action::SessionLeaseList,
            someone_else,
        ),
        (
            "auditor lease.create",
            &auditor,
            Action::SessionLeaseCreate,
            someone_else,
        ),
    ];
    for (label, who, action, owner) in lease_rows {
        row(label, check(&engine, who, action, session_of(owner)));
    }
    let artifact_rows = [
        (
            "agent restore own session",
            &agent,
            Action::SessionRestore,
            agent.key_id,
        ),
        (
            "agent versions.read other's session",
            &agent,
            Action::SessionVersionsRead,
            someone_else,
        ),
        (
            "agent promote own session",
            &agent,
            Action::SessionPromote,
            agent.key_id,
        ),
        (
            "operator promote any session",
            &operator,
            Action::SessionPromote,
            someone_else,
        ),
        (
            "auditor versions.read",
            &auditor,
            Action::SessionVersionsRead,
            someone_else,
        ),
        (
            "auditor promote",
            &auditor,
            Action::SessionPromote,
            someone_else,
        ),
    ];
    for (label, who, action, owner) in artifact_rows {
        row(label, check(&engine, who, action, session_of(owner)));
    }
    let tenant_artifact_rows = [
        ("agent evidence.read", &agent, Action::EvidenceRead),
        ("auditor evidence.read", &auditor, Action::EvidenceRead),
        ("agent release.read", &agent, Action::ReleaseRead),
        ("agent run.start", &agent, Action::RunStart),
        ("agent run.step", &agent, Action::RunStep),
        ("agent run.control", &agent, Action::RunControl),
        ("agent run.approve", &agent, Action::RunApprove),
        ("agent dlq.manage", &agent, Action::DlqManage),
        ("operator run.approve", &operator, Action::RunApprove),
        ("operator dlq.manage", &operator, Action::DlqManage),
        ("admin schedule.manage", &admin, Action::ScheduleManage),
        ("auditor run.read", &auditor, Action::RunRead),
        ("auditor run.control", &auditor, Action::RunControl),
        ("auditor workflow.define", &auditor, Action::WorkflowDefine),
        ("agent metrics.read", &agent, Action::MetricsRead),
        ("auditor metrics.read", &auditor, Action::MetricsRead),
        ("operator block.review", &operator, Action::BlockReview),
        ("agent block.review", &agent, Action::BlockReview),
        ("auditor block.review", &auditor, Action::BlockReview),
    ];
    for (label, who, action) in tenant_artifact_rows {
        row(label, check(&engine, who, action, own));
    }
    let expected = r#"system tenant.create                         allow
system key.create other tenant               allow
admin tenant.create                          deny ["only-system-manages-tenants", "tenant-isolation"]
admin key.create own tenant                  allow
admin key.create other tenant                deny ["tenant-isolation"]
admin activate any session                   allow
operator activate any session                allow
operator key.create                          deny ["only-admins-manage-keys"]
operator key.list                            allow
agent session.create                         allow
agent activate own session                   allow
agent activate other's session               deny ["agent-own-sessions-only"]
agent read other's session                   deny ["agent-own-sessions-only"]
agent key.list                               deny ["agent-no-key-access"]
agent key.revoke                             deny ["agent-no-key-access", "only-admins-manage-keys"]
admin key.revoke system key                  deny ["system-key-protected"]
system key.revoke system key                 allow
auditor read session                         allow
auditor session events                       allow
auditor key.list                             allow
auditor activate                             deny ["auditor-read-only"]
auditor session.create                       deny ["auditor-read-only"]
operator read other tenant's session         deny ["tenant-isolation"]
agent exec own session                       allow
agent exec other's session                   deny ["agent-own-sessions-only"]
auditor read files                           allow
auditor write files                          deny ["auditor-read-only"]
auditor exec                                 deny ["auditor-read-only"]
operator exec any session                    allow
admin egress.policy.write                    allow
admin secret.delete other tenant             deny ["tenant-isolation"]
system secret.create other tenant            allow
operator secret.create                       deny ["only-admins-manage-egress"]
operator secret.read                         allow
agent secret.create                          deny ["only-admins-manage-egress"]
agent secret.list                            deny ["agent-no-secret-access"]
agent secret.read                            deny ["agent-no-secret-access"]
agent egress.policy.read                     deny ["agent-no-secret-access"]
agent egress.decisions.read                  deny ["agent-no-secret-access"]
auditor egress.policy.read                   allow
auditor egress.decisions.read                allow
auditor secret.list                          allow
auditor egress.policy.write                  deny ["auditor-read-only", "only-admins-manage-egress"]
auditor secret.delete                        deny ["auditor-read-only", "only-admins-manage-egress"]
admin lease.create any session               allow
operator lease.renew any session             allow
operator lease.revoke any session            allow
agent lease.create own session               deny ["agents-cannot-lease"]
agent lease.revoke own session               deny ["agents-cannot-lease"]
agent lease.list own session                 allow
agent lease.list other's session             deny ["agent-own-sessions-only"]
auditor lease.list                           allow
auditor lease.create                         deny ["auditor-read-only"]
agent restore own session                    allow
agent versions.read other's session          deny ["agent-own-sessions-only"]
agent promote own session                    deny ["agents-cannot-promote"]
operator promote any session                 allow
auditor versions.read                        allow
auditor promote                              deny ["auditor-read-only"]
agent evidence.read                          deny ["agent-no-evidence-access"]
auditor evidence.read                        allow
agent release.read                           allow
agent run.start                              allow
agent run.step                               allow
agent run.control                            deny ["agents-cannot-operate-runs"]
agent run.approve                            deny ["agents-cannot-operate-runs"]
agent dlq.manage                             deny ["agents-cannot-operate-runs"]
operator run.approve                         allow
operator dlq.manage                          allow
admin schedule.manage                        allow
auditor run.read                             allow
auditor run.control                          deny ["auditor-read-only"]
auditor workflow.define                      deny ["auditor-read-only"]
agent metrics.read                           deny ["agent-no-metrics-access"]
auditor metrics.read                         allow
operator block.review                        allow
agent block.review                           deny ["agents-cannot-operate-runs"]
auditor block.review                         deny ["auditor-read-only"]"#;
    assert_eq!(table.join("\n"), expected);
}

#[test]
fn policy_version_identifies_the_text() {
    let engine = PolicyEngine::with_default_policies().unwrap();
    assert!(engine.version().starts_with("sha256:"));
    let edited = format!("{}\n// edited\n", cordon_policy::DEFAULT_POLICIES);
    assert_ne!(
        PolicyEngine::from_text(&edited).unwrap().version(),
        engine.version()
    );
}

#[test]
fn policies_without_ids_or_off_schema_are_refused() {
    let no_id = "permit (principal, action, resource);";
    assert!(matches!(
        PolicyEngine::from_text(no_id),
        Err(cordon_policy::PolicyError::MissingId(_))
    ));
    let off_schema =
        r#"@id("x") permit (principal, action, resource) when { principal.nickname == "x" };"#;
    assert!(matches!(
        PolicyEngine::from_text(off_schema),
        Err(cordon_policy::PolicyError::Validation(_))
    ));
}
