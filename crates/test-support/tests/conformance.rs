//! Runs every conformance check against every backend, each on a fresh store.

use std::future::Future;
use std::sync::Arc;

use cordon_store::Store;
use cordon_test_support::{TestBackend, conformance, test_store};

async fn run<F, Fut>(backend: TestBackend, check: F)
where
    F: FnOnce(Arc<dyn Store>) -> Fut,
    Fut: Future<Output = ()>,
{
    let test = test_store(backend).await;
    check(Arc::clone(&test.store)).await;
}

/// One test per check and backend, named `<backend>::<check>`.
macro_rules! conformance_tests {
    ($($check:ident),+ $(,)?) => {
        mod sqlite {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() {
                    run(TestBackend::Sqlite, conformance::$check).await;
                }
            )+

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn durable_across_reopen() {
                conformance::durable_across_reopen(test_store(TestBackend::Sqlite).await).await;
            }
        }

        mod postgres {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() {
                    run(TestBackend::Postgres, conformance::$check).await;
                }
            )+

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn durable_across_reopen() {
                conformance::durable_across_reopen(test_store(TestBackend::Postgres).await).await;
            }
        }
    };
}

conformance_tests![
    ping,
    bootstrap_happens_once,
    bootstrap_refused_after_create_tenant,
    concurrent_bootstraps_create_one_tenant,
    tenants_create_get_list,
    tenant_name_conflict,
    keys_create_get_list,
    key_creation_refusals,
    revoke_key_keeps_first_time,
    sessions_create_get,
    session_creation_refusals,
    sessions_list_filters,
    sessions_list_pagination,
    count_sessions_by_phase,
    lease_acquire_renew_held,
    lease_takeover_after_expiry,
    lease_release,
    lease_not_found,
    transition_appends_event,
    transition_wrong_phase_writes_nothing,
    transition_stale_fence_writes_nothing,
    fenced_writer_refused_after_takeover,
    concurrent_fenced_writers,
    list_events_pagination,
    idempotency_lifecycle,
    idempotency_abandon_allows_retry,
    idempotency_stale_claim_taken_over,
    idempotency_records_expire,
    concurrent_idempotency_begins,
    egress_policy_versions,
    concurrent_egress_policy_puts,
    secrets_create_get_list,
    delete_secret_revokes_leases,
    credential_leases_create_get_list,
    credential_lease_renewal,
    credential_lease_revocation,
    egress_decisions_append_list,
    deployment_value_first_writer_wins,
    versions_chain_and_conflicts,
    concurrent_version_creates,
    versions_list_and_delete,
    evidence_append_numbers_per_tenant,
    concurrent_evidence_appends,
    evidence_list_filters_and_leaf_hashes,
    evidence_shred_keeps_entries,
    evidence_checkpoints_put_latest_list,
    releases_create_get_list_delete,
    closed_sessions_oldest_first,
    live_artifact_roots_of_every_tenant,
    workflow_definitions_put_get_list,
    workflow_create_run_idempotent,
    workflow_runs_get_list_filters,
    workflow_update_run_writes_row_and_journal,
    workflow_run_journal_pages,
    workflow_concurrent_updates_serialize,
    workflow_claim_runs,
    workflow_concurrent_claims,
    workflow_dead_letters_through_update_run,
    workflow_schedules_crud_and_advance,
    telemetry_facts_append_list,
    telemetry_stored_bytes_window,
    telemetry_idle_sessions_and_outcomes,
];
