//! Conformance checks of the telemetry methods: facts (append, filters, tenant
//! isolation, order), stored bytes for GiB-days, idle sessions, and outcomes set on
//! close.

use std::sync::Arc;

use cordon_core::{
    Fact, FactFilter, FactKind, Labels, Phase, RunId, SessionOutcome, Timestamp, VersionId,
    VersionStats, WorkspaceVersion,
};
use cordon_store::Store;

use super::{advance, lease, ok, session, step, tenant_with_key};
use crate::fixtures::at;

fn fact(tenant: cordon_core::TenantId, kind: FactKind, seconds: i64) -> Fact {
    Fact::new(tenant, kind, at(seconds))
}

/// Facts come back as written, oldest first, filtered by tenant, window, kind, run and
/// cursor; every field survives the round trip.
pub async fn telemetry_facts_append_list(store: Arc<dyn Store>) {
    let (a, a_key) = tenant_with_key(&*store, "a").await;
    let (b, _) = tenant_with_key(&*store, "b").await;
    let s = session(&*store, a.id, a_key.id).await;
    let run = RunId::generate();
    let mut full = fact(a.id, FactKind::Usage, 10);
    full.session_id = Some(s.id);
    full.run_id = Some(run);
    full.workload_class = Some("batch".to_owned());
    full.outcome = Some("ok".to_owned());
    full.reason = Some("EGRESS_DESTINATION_NOT_ALLOWED".to_owned());
    full.subject = Some("example.com:443 ✓".to_owned());
    full.reference = Some("egress:x@1".to_owned());
    full.value = 1.25;
    full.value2 = 0.000_5;
    full.bytes = 1 << 40;
    full.count = 7;
    let facts = vec![
        full.clone(),
        fact(a.id, FactKind::SessionClosed, 20),
        fact(b.id, FactKind::SessionClosed, 20),
        fact(a.id, FactKind::Tool, 30),
    ];
    ok(store.append_facts(&facts).await, "append");
    ok(store.append_facts(&[]).await, "append nothing");

    let all_a = ok(
        store
            .list_facts(&FactFilter {
                tenant_id: Some(a.id),
                ..Default::default()
            })
            .await,
        "list a",
    );
    assert_eq!(all_a.len(), 3);
    assert!(all_a.windows(2).all(|w| w[0].seq < w[1].seq));
    let mut read = all_a[0].clone();
    assert!(read.seq > 0);
    read.seq = 0;
    assert_eq!(read, full);

    let every = ok(store.list_facts(&FactFilter::default()).await, "list all");
    assert_eq!(every.len(), 4);
    let window = ok(
        store
            .list_facts(&FactFilter {
                from: Some(at(20)),
                to: Some(at(30)),
                ..Default::default()
            })
            .await,
        "window",
    );
    assert_eq!(window.len(), 2, "from inclusive, to exclusive");
    let kinds = ok(
        store
            .list_facts(&FactFilter {
                tenant_id: Some(a.id),
                kinds: vec![FactKind::Tool, FactKind::Usage],
                ..Default::default()
            })
            .await,
        "kinds",
    );
    assert_eq!(
        kinds.iter().map(|f| f.kind).collect::<Vec<_>>(),
        [FactKind::Usage, FactKind::Tool]
    );
    let by_run = ok(
        store
            .list_facts(&FactFilter {
                run_ids: vec![run, RunId::generate()],
                ..Default::default()
            })
            .await,
        "by run",
    );
    assert_eq!(by_run.len(), 1);
    let page = ok(
        store
            .list_facts(&FactFilter {
                after: Some(all_a[0].seq),
                limit: Some(1),
                ..Default::default()
            })
            .await,
        "page",
    );
    assert_eq!(page.len(), 1);
    assert!(page[0].seq > all_a[0].seq);
}

/// Versions stored at some instant of a window, of one tenant or all, with their
/// session's class and run.
pub async fn telemetry_stored_bytes_window(store: Arc<dyn Store>) {
    let (a, a_key) = tenant_with_key(&*store, "a").await;
    let (b, b_key) = tenant_with_key(&*store, "b").await;
    let run = RunId::generate();
    let mut spec = crate::fixtures::new_session(a.id, a_key.id);
    spec.labels = Labels::from([("cordon.run".to_owned(), run.to_string())]);
    let s = ok(store.create_session(&spec, "creator").await, "session");
    let other = session(&*store, b.id, b_key.id).await;
    let version = |tenant, session, parent, seconds, bytes| WorkspaceVersion {
        id: VersionId::generate(),
        tenant_id: tenant,
        session_id: session,
        parent,
        root: "00".repeat(32),
        summary: String::new(),
        stats: VersionStats {
            bytes_written: bytes,
            ..Default::default()
        },
        origin: "checkpoint".to_owned(),
        created_by: "x".to_owned(),
        created_at: at(seconds),
        deleted_at: None,
    };
    let first = version(a.id, s.id, None, 10, 100);
    ok(store.create_version(&first).await, "first");
    let second = version(a.id, s.id, Some(first.id), 50, 200);
    ok(store.create_version(&second).await, "second");
    ok(
        store
            .create_version(&version(b.id, other.id, None, 10, 300))
            .await,
        "other tenant's",
    );
    let of_a = ok(store.stored_bytes(Some(a.id), at(0), at(40)).await, "a");
    assert_eq!(of_a.len(), 1, "the second was made after the window");
    assert_eq!(of_a[0].bytes, 100);
    assert_eq!(of_a[0].run_id, Some(run));
    assert_eq!(of_a[0].workload_class, "batch");
    assert_eq!(of_a[0].created_at, at(10));
    let every = ok(store.stored_bytes(None, at(0), at(100)).await, "all");
    assert_eq!(every.len(), 3);
    assert!(ok(store.stored_bytes(Some(a.id), at(0), at(5)).await, "before").is_empty());
}

/// Idle sessions: not closed, last changed before the cut-off, oldest first. A close
/// records its outcome; other transitions keep it unset.
pub async fn telemetry_idle_sessions_and_outcomes(store: Arc<dyn Store>) {
    let (a, a_key) = tenant_with_key(&*store, "a").await;
    let (b, b_key) = tenant_with_key(&*store, "b").await;
    let old = session(&*store, a.id, a_key.id).await;
    let active = advance(
        &*store,
        &session(&*store, b.id, b_key.id).await,
        Phase::Active,
    )
    .await;
    let closing = session(&*store, a.id, a_key.id).await;
    let fence = lease(&*store, a.id, closing.id, "closer", at(2))
        .await
        .token;
    let closed = ok(
        store
            .transition(&cordon_store::Transition {
                outcome: Some(SessionOutcome::Failed),
                ..step(
                    &closing,
                    Phase::Created,
                    Phase::Closed,
                    fence,
                    "closer",
                    at(2),
                )
            })
            .await,
        "close",
    );
    assert_eq!(closed.outcome, Some(SessionOutcome::Failed));
    assert_eq!(
        ok(store.get_session(a.id, closing.id).await, "get").and_then(|s| s.outcome),
        Some(SessionOutcome::Failed)
    );
    assert_eq!(active.outcome, None);
    let idle = ok(
        store.idle_sessions(Timestamp::now(), 10).await,
        "idle sessions",
    );
    let ids: Vec<_> = idle.iter().map(|s| s.id).collect();
    assert!(ids.contains(&old.id) && ids.contains(&active.id), "{ids:?}");
    assert!(!ids.contains(&closing.id), "closed sessions are not idle");
    assert!(ok(store.idle_sessions(at(-1), 10).await, "none that old").is_empty());
    assert_eq!(
        ok(store.idle_sessions(Timestamp::now(), 1).await, "limit").len(),
        1
    );
}
