//! Conformance checks of [`cordon_store::WorkflowStore`]: definitions, runs and their
//! journal, claims, dead letters and schedules, each tenant-isolated.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;

use cordon_core::{
    DeadLetter, DeadLetterId, DeadLetterStatus, JournalEntry, NewJournalEntry, NewRun, Run,
    RunFilter, RunId, RunStatus, Schedule, ScheduleId, SessionId, TenantId, Timestamp,
    WorkflowDefinition,
};
use cordon_store::{RunCreated, RunWrite, Store, StoreError, run_conflict};
use tokio::task::JoinSet;

use super::{ok, refused, some, tenant_with_key};
use crate::fixtures::{self, at};

fn definition(tenant_id: TenantId, digest: &str, name: &str, seconds: i64) -> WorkflowDefinition {
    WorkflowDefinition {
        tenant_id,
        digest: format!("sha256:{digest}"),
        name: name.to_owned(),
        document: format!("{{\"name\":\"{name}\"}}"),
        created_by: "key_creator".to_owned(),
        created_at: at(seconds),
    }
}

/// A running run without a lease, due at `due` (seconds).
fn new_run(tenant_id: TenantId, name: &str, due: Option<i64>) -> NewRun {
    NewRun {
        id: RunId::generate(),
        tenant_id,
        definition: Some(format!("sha256:{name}")),
        name: name.to_owned(),
        session_id: None,
        status: RunStatus::Running,
        input: "{\"n\":1}".to_owned(),
        state: "{}".to_owned(),
        idempotency_key: None,
        created_by: "key_creator".to_owned(),
        created_at: at(1),
        deadline: Some(at(3600)),
        next_due_at: due.map(at),
        lease_holder: None,
        lease_expires_at: None,
    }
}

fn entry(step: Option<&str>, kind: &str, seconds: i64) -> NewJournalEntry {
    NewJournalEntry {
        step: step.map(str::to_owned),
        attempt: 1,
        kind: kind.to_owned(),
        reason: None,
        detail: format!("{{\"kind\":\"{kind}\"}}"),
        at: at(seconds),
    }
}

/// The run `create_run` must store for `new` with `entries` journal entries.
fn expected_run(new: &NewRun, entries: u64) -> Run {
    Run {
        id: new.id,
        tenant_id: new.tenant_id,
        definition: new.definition.clone(),
        name: new.name.clone(),
        session_id: new.session_id,
        status: new.status,
        input: new.input.clone(),
        state: new.state.clone(),
        output: None,
        reason: None,
        idempotency_key: new.idempotency_key.clone(),
        created_by: new.created_by.clone(),
        created_at: new.created_at,
        updated_at: new.created_at,
        deadline: new.deadline,
        next_due_at: new.next_due_at,
        lease_holder: new.lease_holder.clone(),
        lease_token: i64::from(new.lease_holder.is_some()),
        lease_expires_at: new.lease_expires_at,
        journal_seq: entries,
    }
}

fn numbered(run_id: RunId, from: u64, entries: &[NewJournalEntry]) -> Vec<JournalEntry> {
    entries
        .iter()
        .zip(from..)
        .map(|(entry, seq)| JournalEntry {
            run_id,
            seq,
            step: entry.step.clone(),
            attempt: entry.attempt,
            kind: entry.kind.clone(),
            reason: entry.reason.clone(),
            detail: entry.detail.clone(),
            at: entry.at,
        })
        .collect()
}

#[track_caller]
fn new(created: RunCreated) -> Run {
    match created {
        RunCreated::New(run) => run,
        RunCreated::Existing(run) => panic!("expected a new run, got the existing {run:?}"),
    }
}

async fn create(store: &dyn Store, run: &NewRun, journal: &[NewJournalEntry]) -> Run {
    let created = new(ok(store.create_run(run, journal).await, "create run"));
    assert_eq!(created, expected_run(run, journal.len() as u64));
    created
}

async fn journal(store: &dyn Store, tenant_id: TenantId, id: RunId) -> Vec<JournalEntry> {
    ok(
        store.run_journal(tenant_id, id, 0, 100_000).await,
        "run journal",
    )
}

async fn get(store: &dyn Store, tenant_id: TenantId, id: RunId) -> Run {
    some(ok(store.get_run(tenant_id, id).await, "get run"), "run")
}

/// A [`cordon_store::RunChange`] from a closure, so that its argument's type is known.
fn change(
    apply: impl FnOnce(&mut Run) -> Result<RunWrite, StoreError> + Send + 'static,
) -> cordon_store::RunChange {
    Box::new(apply)
}

/// A change that appends `entries` and changes nothing else.
fn append(entries: Vec<NewJournalEntry>) -> cordon_store::RunChange {
    change(move |_| {
        Ok(RunWrite {
            journal: entries,
            ..RunWrite::default()
        })
    })
}

fn dead_letter(run: &Run, step: &str, seconds: i64) -> DeadLetter {
    DeadLetter {
        id: DeadLetterId::generate(),
        tenant_id: run.tenant_id,
        run_id: run.id,
        session_id: Some(SessionId::generate()),
        step: step.to_owned(),
        attempt: 2,
        reason: "EGRESS_DESTINATION_NOT_ALLOWED".to_owned(),
        summary: format!("{{\"step\":\"{step}\"}}"),
        status: DeadLetterStatus::Open,
        created_at: at(seconds),
        resolved_at: None,
        resolved_by: None,
    }
}

fn schedule(tenant_id: TenantId, next_fire_at: i64) -> Schedule {
    Schedule {
        id: ScheduleId::generate(),
        tenant_id,
        definition: "sha256:nightly".to_owned(),
        cron: "0 3 * * *".to_owned(),
        input: "{}".to_owned(),
        next_fire_at: at(next_fire_at),
        created_by: "key_creator".to_owned(),
        created_at: at(0),
    }
}

/// A definition is stored once per (tenant, digest): a second put returns the first.
/// Lists are newest first and per tenant.
pub async fn workflow_definitions_put_get_list(store: Arc<dyn Store>) {
    let (a, _) = tenant_with_key(&*store, "a").await;
    let (b, _) = tenant_with_key(&*store, "b").await;
    let first = definition(a.id, "one", "first", 1);
    assert_eq!(
        ok(store.put_workflow_definition(&first).await, "put"),
        first
    );
    let again = WorkflowDefinition {
        name: "renamed".to_owned(),
        created_by: "key_other".to_owned(),
        created_at: at(5),
        ..first.clone()
    };
    assert_eq!(
        ok(store.put_workflow_definition(&again).await, "put again"),
        first,
        "the first one stays"
    );
    let second = definition(a.id, "two", "second", 2);
    ok(store.put_workflow_definition(&second).await, "put second");
    assert_eq!(
        ok(
            store.get_workflow_definition(a.id, &first.digest).await,
            "get"
        ),
        Some(first.clone())
    );
    assert_eq!(
        ok(store.list_workflow_definitions(a.id).await, "list"),
        vec![second.clone(), first.clone()]
    );

    // Another tenant sees none of them, and may store the same document as its own.
    assert_eq!(
        ok(
            store.get_workflow_definition(b.id, &first.digest).await,
            "get from another tenant"
        ),
        None
    );
    assert_eq!(
        ok(store.list_workflow_definitions(b.id).await, "list b"),
        vec![]
    );
    let theirs = WorkflowDefinition {
        tenant_id: b.id,
        created_at: at(9),
        ..first.clone()
    };
    assert_eq!(
        ok(store.put_workflow_definition(&theirs).await, "put in b"),
        theirs
    );
    assert_eq!(
        ok(store.list_workflow_definitions(a.id).await, "list a"),
        vec![second, first]
    );
    assert_eq!(
        ok(
            store.get_workflow_definition(a.id, "sha256:unknown").await,
            "get unknown"
        ),
        None
    );
}

/// A new run is stored with its first journal entries; an idempotency key already used
/// in the tenant returns that run and writes nothing; another tenant may use the key.
pub async fn workflow_create_run_idempotent(store: Arc<dyn Store>) {
    let (a, _) = tenant_with_key(&*store, "a").await;
    let (b, _) = tenant_with_key(&*store, "b").await;
    let keyed = NewRun {
        idempotency_key: Some("start-1".to_owned()),
        session_id: Some(SessionId::generate()),
        ..new_run(a.id, "keyed", Some(2))
    };
    let first_entries = [
        entry(None, "run_started", 1),
        entry(Some("a"), "scheduled", 1),
    ];
    let run = create(&*store, &keyed, &first_entries).await;
    assert_eq!(run.lease_token, 0);
    assert_eq!(
        journal(&*store, a.id, run.id).await,
        numbered(run.id, 1, &first_entries)
    );

    let retry = NewRun {
        id: RunId::generate(),
        name: "retry".to_owned(),
        ..keyed.clone()
    };
    match ok(
        store
            .create_run(&retry, &[entry(None, "run_started", 3)])
            .await,
        "create with a used key",
    ) {
        RunCreated::Existing(existing) => assert_eq!(existing, run),
        RunCreated::New(created) => panic!("the key was used, yet a new run: {created:?}"),
    }
    assert_eq!(ok(store.get_run(a.id, retry.id).await, "get retry"), None);
    assert_eq!(journal(&*store, a.id, run.id).await.len(), 2);
    assert_eq!(journal(&*store, a.id, retry.id).await, vec![]);

    // The key is per tenant.
    let elsewhere = NewRun {
        id: RunId::generate(),
        tenant_id: b.id,
        ..keyed.clone()
    };
    create(&*store, &elsewhere, &[]).await;

    // Runs without a key never clash; a run created with a lease starts at token 1.
    create(&*store, &new_run(a.id, "bare", None), &[]).await;
    let leased = NewRun {
        lease_holder: Some("node-1".to_owned()),
        lease_expires_at: Some(at(30)),
        ..new_run(a.id, "bare", Some(1))
    };
    let leased_run = create(&*store, &leased, &[entry(None, "run_started", 1)]).await;
    assert_eq!(leased_run.lease_token, 1);
    assert_eq!(get(&*store, a.id, leased.id).await, leased_run);

    let error = refused(
        store
            .create_run(&new_run(TenantId::generate(), "orphan", None), &[])
            .await,
        "create a run of an unknown tenant",
    );
    assert!(matches!(error, StoreError::NotFound), "{error:?}");
}

/// Runs are found only in their tenant and listed in id order, by every filter, in
/// pages after a cursor.
pub async fn workflow_runs_get_list_filters(store: Arc<dyn Store>) {
    let (a, _) = tenant_with_key(&*store, "a").await;
    let (b, _) = tenant_with_key(&*store, "b").await;
    let session = SessionId::generate();
    let mut runs = Vec::new();
    for (name, status, session_id) in [
        ("build", RunStatus::Running, None),
        ("build", RunStatus::Waiting, Some(session)),
        ("deploy", RunStatus::Running, Some(session)),
        ("deploy", RunStatus::Succeeded, None),
        ("agent", RunStatus::Blocked, Some(session)),
    ] {
        let mut run = NewRun {
            status,
            session_id,
            ..new_run(a.id, name, Some(1))
        };
        if name == "agent" {
            run.definition = None;
        }
        runs.push(create(&*store, &run, &[]).await);
    }
    let theirs = create(&*store, &new_run(b.id, "build", Some(1)), &[]).await;
    runs.sort_by_key(|run| run.id);

    let list = |filter: RunFilter, limit: u32| {
        let store = Arc::clone(&store);
        async move { ok(store.list_runs(a.id, &filter, limit).await, "list runs") }
    };
    let matching = |keep: &dyn Fn(&Run) -> bool| -> Vec<Run> {
        runs.iter().filter(|run| keep(run)).cloned().collect()
    };
    assert_eq!(list(RunFilter::default(), 100).await, runs);
    assert_eq!(
        list(
            RunFilter {
                status: Some(RunStatus::Running),
                ..RunFilter::default()
            },
            100
        )
        .await,
        matching(&|run| run.status == RunStatus::Running)
    );
    assert_eq!(
        list(
            RunFilter {
                name: Some("deploy".to_owned()),
                ..RunFilter::default()
            },
            100
        )
        .await,
        matching(&|run| run.name == "deploy")
    );
    assert_eq!(
        list(
            RunFilter {
                definition: Some("sha256:build".to_owned()),
                ..RunFilter::default()
            },
            100
        )
        .await,
        matching(&|run| run.definition.as_deref() == Some("sha256:build"))
    );
    assert_eq!(
        list(
            RunFilter {
                session_id: Some(session),
                ..RunFilter::default()
            },
            100
        )
        .await,
        matching(&|run| run.session_id == Some(session))
    );
    assert_eq!(
        list(
            RunFilter {
                status: Some(RunStatus::Running),
                name: Some("deploy".to_owned()),
                session_id: Some(session),
                ..RunFilter::default()
            },
            100
        )
        .await,
        matching(&|run| run.status == RunStatus::Running
            && run.name == "deploy"
            && run.session_id == Some(session))
    );

    // Pages of two, each after the last id of the one before.
    let mut paged = Vec::new();
    let mut after = None;
    loop {
        let page = list(
            RunFilter {
                after,
                ..RunFilter::default()
            },
            2,
        )
        .await;
        assert!(page.len() <= 2);
        let Some(last) = page.last() else { break };
        after = Some(last.id);
        paged.extend(page);
    }
    assert_eq!(paged, runs);
    assert_eq!(
        list(
            RunFilter {
                status: Some(RunStatus::Running),
                after: Some(runs[0].id),
                ..RunFilter::default()
            },
            100
        )
        .await,
        matching(&|run| run.status == RunStatus::Running && run.id > runs[0].id)
    );

    // Tenants never see each other's runs.
    assert_eq!(
        ok(store.get_run(b.id, runs[0].id).await, "get from b"),
        None
    );
    assert_eq!(
        ok(store.get_run(a.id, theirs.id).await, "get b's from a"),
        None
    );
    assert_eq!(
        ok(
            store.list_runs(b.id, &RunFilter::default(), 100).await,
            "list b"
        ),
        vec![theirs]
    );
    assert_eq!(get(&*store, a.id, runs[2].id).await, runs[2]);
}

/// `update_run` hands the change the current row, writes what it made of it with its
/// journal entries numbered on without gaps, and keeps the fields that are the store's.
/// A change that fails writes nothing; a run of another tenant is not found.
pub async fn workflow_update_run_writes_row_and_journal(store: Arc<dyn Store>) {
    let (a, _) = tenant_with_key(&*store, "a").await;
    let (b, _) = tenant_with_key(&*store, "b").await;
    let first = [entry(None, "run_started", 1)];
    let created = create(&*store, &new_run(a.id, "build", Some(2)), &first).await;

    let (seen, saw) = mpsc::channel();
    let appended = vec![
        entry(Some("compile"), "started", 3),
        entry(Some("compile"), "completed", 4),
    ];
    let journal_write = appended.clone();
    let (updated, entries) = ok(
        store
            .update_run(
                a.id,
                created.id,
                change(move |run| {
                    let _ = seen.send(run.clone());
                    run.status = RunStatus::Succeeded;
                    run.state = "{\"done\":true}".to_owned();
                    run.output = Some("{\"ok\":1}".to_owned());
                    run.reason = Some("DONE".to_owned());
                    run.next_due_at = None;
                    run.lease_holder = Some("node-1".to_owned());
                    run.lease_token = 7;
                    run.lease_expires_at = Some(at(90));
                    // The store's own fields: ignored.
                    run.id = RunId::generate();
                    run.tenant_id = TenantId::generate();
                    run.created_at = at(1000);
                    run.journal_seq = 99;
                    Ok(RunWrite {
                        journal: journal_write,
                        ..RunWrite::default()
                    })
                }),
            )
            .await,
        "update run",
    );
    assert_eq!(ok(saw.try_recv(), "the change saw the run"), created);
    assert_eq!(entries, numbered(created.id, 2, &appended));
    assert_eq!(
        updated,
        Run {
            status: RunStatus::Succeeded,
            state: "{\"done\":true}".to_owned(),
            output: Some("{\"ok\":1}".to_owned()),
            reason: Some("DONE".to_owned()),
            next_due_at: None,
            lease_holder: Some("node-1".to_owned()),
            lease_token: 7,
            lease_expires_at: Some(at(90)),
            journal_seq: 3,
            updated_at: updated.updated_at,
            ..created.clone()
        }
    );
    assert_ne!(updated.updated_at, created.updated_at, "the store sets it");
    assert_eq!(get(&*store, a.id, created.id).await, updated);
    let mut expected_journal = numbered(created.id, 1, &first);
    expected_journal.extend(entries);
    assert_eq!(journal(&*store, a.id, created.id).await, expected_journal);

    // A change that fails writes nothing, whatever it did to the run it was handed.
    let error = refused(
        store
            .update_run(
                a.id,
                created.id,
                change(|run| {
                    run.state = "{\"spoiled\":true}".to_owned();
                    Err(run_conflict("the run is finished"))
                }),
            )
            .await,
        "a failing change",
    );
    assert!(
        matches!(&error, StoreError::RunConflict(message) if message == "the run is finished"),
        "{error:?}"
    );
    assert_eq!(get(&*store, a.id, created.id).await, updated);
    assert_eq!(journal(&*store, a.id, created.id).await, expected_journal);

    // The next entries follow on without a gap; an empty write only touches the row.
    let (_, more) = ok(
        store
            .update_run(a.id, created.id, append(vec![entry(None, "signal", 5)]))
            .await,
        "append after a failed change",
    );
    assert_eq!(more.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![4]);
    let (unchanged, none) = ok(
        store.update_run(a.id, created.id, append(vec![])).await,
        "empty change",
    );
    assert_eq!(none, vec![]);
    assert_eq!(unchanged.journal_seq, 4);
    let seqs: Vec<u64> = journal(&*store, a.id, created.id)
        .await
        .iter()
        .map(|entry| entry.seq)
        .collect();
    assert_eq!(seqs, vec![1, 2, 3, 4]);

    // Another tenant's run, or no run: not found, and the change is never called.
    let called = Arc::new(AtomicBool::new(false));
    for (tenant, id) in [(b.id, created.id), (a.id, RunId::generate())] {
        let called_inside = Arc::clone(&called);
        let error = refused(
            store
                .update_run(
                    tenant,
                    id,
                    change(move |_| {
                        called_inside.store(true, Ordering::SeqCst);
                        Ok(RunWrite::default())
                    }),
                )
                .await,
            "update a run of another tenant",
        );
        assert!(matches!(error, StoreError::NotFound), "{error:?}");
    }
    assert!(!called.load(Ordering::SeqCst));
    assert_eq!(get(&*store, a.id, created.id).await, unchanged);
}

/// The journal pages by `after` and `limit`, and only in the run's tenant.
pub async fn workflow_run_journal_pages(store: Arc<dyn Store>) {
    let (a, _) = tenant_with_key(&*store, "a").await;
    let (b, _) = tenant_with_key(&*store, "b").await;
    let entries: Vec<NewJournalEntry> = (0..7)
        .map(|n| entry(Some(&format!("step-{n}")), "completed", n))
        .collect();
    let run = create(&*store, &new_run(a.id, "long", None), &entries[..3]).await;
    ok(
        store
            .update_run(a.id, run.id, append(entries[3..].to_vec()))
            .await,
        "append",
    );
    let all = numbered(run.id, 1, &entries);
    let page = |after: u64, limit: u32| {
        let store = Arc::clone(&store);
        async move { ok(store.run_journal(a.id, run.id, after, limit).await, "page") }
    };
    assert_eq!(page(0, 100).await, all);
    assert_eq!(page(0, 3).await, all[..3].to_vec());
    assert_eq!(page(3, 3).await, all[3..6].to_vec());
    assert_eq!(page(6, 3).await, all[6..].to_vec());
    assert_eq!(page(7, 3).await, vec![]);
    assert_eq!(
        ok(store.run_journal(b.id, run.id, 0, 100).await, "from b"),
        vec![]
    );
}

/// Changes racing on one run (from many tasks, on several connections for PostgreSQL)
/// each see the one before: none is lost and the journal has no gap.
pub async fn workflow_concurrent_updates_serialize(store: Arc<dyn Store>) {
    const WRITERS: u64 = 16;
    let (a, _) = tenant_with_key(&*store, "a").await;
    let run = NewRun {
        state: "0".to_owned(),
        ..new_run(a.id, "counter", None)
    };
    create(&*store, &run, &[]).await;
    let mut tasks = JoinSet::new();
    for writer in 0..WRITERS {
        let store = Arc::clone(&store);
        let (tenant, id) = (a.id, run.id);
        tasks.spawn(async move {
            store
                .update_run(
                    tenant,
                    id,
                    change(move |run| {
                        let count: u64 = run.state.parse().map_err(|error| {
                            StoreError::Backend(format!("state {:?}: {error}", run.state))
                        })?;
                        run.state = (count + 1).to_string();
                        Ok(RunWrite {
                            journal: vec![entry(Some(&format!("w{writer}")), "signal", 1)],
                            ..RunWrite::default()
                        })
                    }),
                )
                .await
        });
    }
    for outcome in tasks.join_all().await {
        ok(outcome, "concurrent update");
    }
    let final_run = get(&*store, a.id, run.id).await;
    assert_eq!(final_run.state, WRITERS.to_string());
    assert_eq!(final_run.journal_seq, WRITERS);
    let seqs: Vec<u64> = journal(&*store, a.id, run.id)
        .await
        .iter()
        .map(|entry| entry.seq)
        .collect();
    assert_eq!(seqs, (1..=WRITERS).collect::<Vec<_>>());
}

/// A claim takes the unfinished due runs whose lease is free, lapsed or the node's own,
/// oldest due first and at most `limit`; the token grows when the holder changes or the
/// lease had lapsed, and stays when a node renews its live lease.
pub async fn workflow_claim_runs(store: Arc<dyn Store>) {
    let (a, _) = tenant_with_key(&*store, "a").await;
    let (b, _) = tenant_with_key(&*store, "b").await;
    let leased = |tenant: TenantId, due: i64, holder: &str, until: i64| NewRun {
        lease_holder: Some(holder.to_owned()),
        lease_expires_at: Some(at(until)),
        ..new_run(tenant, "leased", Some(due))
    };
    let other_live = create(&*store, &leased(a.id, 4, "node-2", 200), &[]).await;
    let finished = NewRun {
        status: RunStatus::Succeeded,
        ..new_run(a.id, "finished", Some(5))
    };
    create(&*store, &finished, &[]).await;
    for status in [RunStatus::Failed, RunStatus::Cancelled] {
        create(
            &*store,
            &NewRun {
                status,
                ..new_run(a.id, "finished", Some(5))
            },
            &[],
        )
        .await;
    }
    let other_lapsed = create(&*store, &leased(b.id, 6, "node-2", 15), &[]).await;
    let own_live = create(&*store, &leased(a.id, 7, "node-1", 200), &[]).await;
    let own_lapsed = create(&*store, &leased(a.id, 8, "node-1", 15), &[]).await;
    let free = create(&*store, &new_run(b.id, "free", Some(10)), &[]).await;
    let blocked = NewRun {
        status: RunStatus::Blocked,
        ..new_run(a.id, "blocked", Some(11))
    };
    let blocked = create(&*store, &blocked, &[]).await;
    let later = create(&*store, &new_run(a.id, "later", Some(100)), &[]).await;
    create(&*store, &new_run(a.id, "waiting", None), &[]).await;

    let claimed_by = |run: &Run, node: &str, token: i64, until: i64| Run {
        lease_holder: Some(node.to_owned()),
        lease_token: token,
        lease_expires_at: Some(at(until)),
        ..run.clone()
    };
    let claims = ok(
        store.claim_runs("node-1", at(20), at(50), 100, false).await,
        "claim",
    );
    let expected = vec![
        claimed_by(&other_lapsed, "node-1", 2, 50),
        claimed_by(&own_live, "node-1", 1, 50),
        claimed_by(&own_lapsed, "node-1", 2, 50),
        claimed_by(&free, "node-1", 1, 50),
        claimed_by(&blocked, "node-1", 1, 50),
    ];
    assert_eq!(claims, expected);
    for run in &expected {
        assert_eq!(&get(&*store, run.tenant_id, run.id).await, run);
    }

    // Node 2 finds node 1's leases live: only its own run, with its token kept.
    let claims = ok(
        store.claim_runs("node-2", at(21), at(60), 100, false).await,
        "claim by node 2",
    );
    assert_eq!(claims, vec![claimed_by(&other_live, "node-2", 1, 60)]);

    // Once node 1's leases lapse, node 2 takes over the oldest due first, `limit` of them.
    let claims = ok(
        store.claim_runs("node-2", at(55), at(90), 2, false).await,
        "claim after node 1's leases lapsed",
    );
    assert_eq!(
        claims,
        vec![
            claimed_by(&other_live, "node-2", 1, 90),
            claimed_by(&other_lapsed, "node-2", 3, 90),
        ]
    );
    assert_eq!(
        ok(
            store.claim_runs("node-3", at(55), at(90), 0, false).await,
            "limit 0"
        ),
        vec![]
    );

    // Due is `next_due_at <= now`, to the microsecond.
    let claims = ok(
        store
            .claim_runs(
                "node-3",
                fixtures::at_micros(100_000_000 - 1),
                at(190),
                100,
                false,
            )
            .await,
        "claim just before `later` is due",
    );
    assert!(claims.iter().all(|run| run.id != later.id), "{claims:?}");
    let claims = ok(
        store
            .claim_runs("node-3", at(100), at(190), 100, false)
            .await,
        "claim when `later` is due",
    );
    assert!(claims.iter().any(|run| run.id == later.id), "{claims:?}");
    assert!(
        claims.iter().all(|run| !run.status.is_terminal()
            && run.next_due_at.is_some()
            && run.lease_holder.as_deref() == Some("node-3")),
        "{claims:?}"
    );

    // A dead worker's run is taken over when its lease lapses, however far off it is
    // due (its attempts in flight must run again).
    let stranded = create(&*store, &leased(b.id, 10_000, "node-9", 250), &[]).await;
    let claims = ok(
        store
            .claim_runs("node-4", at(300), at(400), 100, false)
            .await,
        "claim a lapsed lease not due",
    );
    assert_eq!(
        claims.iter().filter(|r| r.id == stranded.id).count(),
        1,
        "{claims:?}"
    );
    let taken = get(&*store, b.id, stranded.id).await;
    assert_eq!(
        (taken.lease_holder.as_deref(), taken.lease_token),
        (Some("node-4"), 2)
    );

    // A node's own live runs, due or not, come back only with `include_own`.
    let mine = NewRun {
        next_due_at: None,
        ..leased(a.id, 0, "node-5", 10_000)
    };
    let mine = create(&*store, &mine, &[]).await;
    let claims = ok(
        store
            .claim_runs("node-5", at(300), at(500), 100, false)
            .await,
        "claim without own runs",
    );
    assert!(claims.iter().all(|r| r.id != mine.id), "{claims:?}");
    let claims = ok(
        store
            .claim_runs("node-5", at(300), at(500), 100, true)
            .await,
        "claim with own runs",
    );
    let back: Vec<&Run> = claims.iter().filter(|r| r.id == mine.id).collect();
    assert_eq!(back.len(), 1, "{claims:?}");
    assert_eq!(back[0].lease_token, 1);
}

/// Claims racing from two nodes never hand one run to both.
pub async fn workflow_concurrent_claims(store: Arc<dyn Store>) {
    const RUNS: usize = 24;
    const CLAIMS_PER_NODE: usize = 8;
    let (a, _) = tenant_with_key(&*store, "a").await;
    for n in 0..RUNS {
        create(&*store, &new_run(a.id, "racing", Some(n as i64)), &[]).await;
    }
    let mut tasks = JoinSet::new();
    for claim in 0..CLAIMS_PER_NODE {
        for node in ["node-1", "node-2"] {
            let store = Arc::clone(&store);
            tasks.spawn(async move {
                let claims = store.claim_runs(node, at(100), at(200), 4, false).await;
                (node, claim, claims)
            });
        }
    }
    let mut taken: [BTreeSet<RunId>; 2] = [BTreeSet::new(), BTreeSet::new()];
    for (node, claim, outcome) in tasks.join_all().await {
        let claims = ok(outcome, "concurrent claim");
        let mine = usize::from(node == "node-2");
        for run in claims {
            assert_eq!(run.lease_holder.as_deref(), Some(node), "claim {claim}");
            assert_eq!(run.lease_token, 1, "one claim, one holder: {run:?}");
            taken[mine].insert(run.id);
        }
    }
    let both: Vec<&RunId> = taken[0].intersection(&taken[1]).collect();
    assert!(both.is_empty(), "claimed by both nodes: {both:?}");
    for (node, ids) in ["node-1", "node-2"].into_iter().zip(&taken) {
        for id in ids {
            let run = get(&*store, a.id, *id).await;
            assert_eq!(run.lease_holder.as_deref(), Some(node));
            assert_eq!(run.lease_token, 1);
        }
    }
    assert!(!taken[0].is_empty() || !taken[1].is_empty());
}

/// Dead-letter entries come and go with the run's changes: created in one, resolved in a
/// later one (once: an entry that is not open stays as it is), listed per tenant by
/// status, run and cursor.
pub async fn workflow_dead_letters_through_update_run(store: Arc<dyn Store>) {
    let (a, _) = tenant_with_key(&*store, "a").await;
    let (b, _) = tenant_with_key(&*store, "b").await;
    let run = create(&*store, &new_run(a.id, "blocked", Some(1)), &[]).await;
    let other_run = create(&*store, &new_run(a.id, "other", Some(1)), &[]).await;
    let theirs_run = create(&*store, &new_run(b.id, "theirs", Some(1)), &[]).await;

    let add = |run: &Run, entries: Vec<DeadLetter>| {
        let store = Arc::clone(&store);
        let (tenant, id) = (run.tenant_id, run.id);
        async move {
            ok(
                store
                    .update_run(
                        tenant,
                        id,
                        change(move |run| {
                            run.status = RunStatus::Blocked;
                            Ok(RunWrite {
                                journal: vec![entry(Some("fetch"), "blocked", 2)],
                                dead_letters: entries,
                                ..RunWrite::default()
                            })
                        }),
                    )
                    .await,
                "add dead letters",
            )
        }
    };
    let first = dead_letter(&run, "fetch", 2);
    let second = dead_letter(&run, "push", 3);
    let (blocked, _) = add(&run, vec![first.clone(), second.clone()]).await;
    assert_eq!(blocked.status, RunStatus::Blocked);
    let elsewhere = dead_letter(&other_run, "fetch", 4);
    add(&other_run, vec![elsewhere.clone()]).await;
    let theirs = dead_letter(&theirs_run, "fetch", 5);
    add(&theirs_run, vec![theirs.clone()]).await;

    let list = |status: Option<DeadLetterStatus>,
                run_id: Option<RunId>,
                after: Option<DeadLetterId>,
                limit: u32| {
        let store = Arc::clone(&store);
        async move {
            ok(
                store
                    .list_dead_letters(a.id, status, run_id, after, limit)
                    .await,
                "list dead letters",
            )
        }
    };
    let all_of_a = vec![first.clone(), second.clone(), elsewhere.clone()];
    assert_eq!(
        ok(store.get_dead_letter(a.id, first.id).await, "get"),
        Some(first.clone())
    );
    assert_eq!(list(None, None, None, 100).await, all_of_a);
    assert_eq!(
        list(Some(DeadLetterStatus::Open), Some(run.id), None, 100).await,
        vec![first.clone(), second.clone()]
    );
    assert_eq!(
        list(None, None, Some(first.id), 1).await,
        vec![second.clone()]
    );
    assert_eq!(
        list(None, None, Some(second.id), 100).await,
        vec![elsewhere.clone()]
    );
    assert_eq!(
        ok(store.get_dead_letter(b.id, first.id).await, "get from b"),
        None
    );
    assert_eq!(
        ok(
            store.list_dead_letters(b.id, None, None, None, 100).await,
            "list b"
        ),
        vec![theirs.clone()]
    );

    // Resolving: the first entry once; the second again later is a no-op; an entry of
    // another run cannot be resolved through this one.
    let resolve = |resolutions: Vec<(DeadLetterId, DeadLetterStatus, String)>| {
        let store = Arc::clone(&store);
        let id = run.id;
        async move {
            ok(
                store
                    .update_run(
                        a.id,
                        id,
                        change(move |run| {
                            run.status = RunStatus::Running;
                            Ok(RunWrite {
                                resolve_dead_letters: resolutions,
                                ..RunWrite::default()
                            })
                        }),
                    )
                    .await,
                "resolve dead letters",
            )
        }
    };
    let (redriven, _) = resolve(vec![
        (first.id, DeadLetterStatus::Redriven, "key_operator".into()),
        (
            elsewhere.id,
            DeadLetterStatus::Discarded,
            "key_operator".into(),
        ),
    ])
    .await;
    let first_redriven = DeadLetter {
        status: DeadLetterStatus::Redriven,
        resolved_at: Some(redriven.updated_at),
        resolved_by: Some("key_operator".to_owned()),
        ..first.clone()
    };
    assert_eq!(
        ok(store.get_dead_letter(a.id, first.id).await, "get resolved"),
        Some(first_redriven.clone())
    );
    assert_eq!(
        ok(
            store.get_dead_letter(a.id, elsewhere.id).await,
            "get other run's"
        ),
        Some(elsewhere.clone())
    );
    resolve(vec![
        (first.id, DeadLetterStatus::Discarded, "key_late".into()),
        (second.id, DeadLetterStatus::Discarded, "key_late".into()),
    ])
    .await;
    assert_eq!(
        ok(store.get_dead_letter(a.id, first.id).await, "resolved once"),
        Some(first_redriven.clone())
    );
    let second_discarded = some(
        ok(store.get_dead_letter(a.id, second.id).await, "get second"),
        "second dead letter",
    );
    assert_eq!(second_discarded.status, DeadLetterStatus::Discarded);
    assert_eq!(second_discarded.resolved_by.as_deref(), Some("key_late"));
    assert_eq!(
        list(Some(DeadLetterStatus::Open), None, None, 100).await,
        vec![elsewhere.clone()]
    );
    assert_eq!(
        list(Some(DeadLetterStatus::Redriven), None, None, 100).await,
        vec![first_redriven]
    );
    assert_eq!(
        list(None, Some(run.id), None, 100).await.len(),
        2,
        "resolved entries stay listed"
    );
}

/// Schedules are created, listed per tenant and deleted; due ones of every tenant come
/// soonest first; advancing is a compare-and-set of the next fire time.
pub async fn workflow_schedules_crud_and_advance(store: Arc<dyn Store>) {
    let (a, _) = tenant_with_key(&*store, "a").await;
    let (b, _) = tenant_with_key(&*store, "b").await;
    let first = schedule(a.id, 10);
    let second = schedule(a.id, 5);
    let theirs = schedule(b.id, 7);
    for schedule in [&first, &second, &theirs] {
        ok(store.create_schedule(schedule).await, "create schedule");
    }
    refused(
        store.create_schedule(&first).await,
        "create a schedule twice",
    );
    assert_eq!(
        ok(store.list_schedules(a.id).await, "list a"),
        vec![first.clone(), second.clone()]
    );
    assert_eq!(
        ok(store.list_schedules(b.id).await, "list b"),
        vec![theirs.clone()]
    );

    let due = |now: Timestamp, limit: u32| {
        let store = Arc::clone(&store);
        async move { ok(store.due_schedules(now, limit).await, "due schedules") }
    };
    assert_eq!(due(at(4), 100).await, vec![]);
    assert_eq!(
        due(at(10), 100).await,
        vec![second.clone(), theirs.clone(), first.clone()]
    );
    assert_eq!(due(at(8), 1).await, vec![second.clone()]);

    // Two nodes fire the same instant: only the first moves it.
    assert!(ok(
        store.advance_schedule(second.id, at(5), at(65)).await,
        "advance"
    ));
    assert!(!ok(
        store.advance_schedule(second.id, at(5), at(66)).await,
        "advance from a stale time"
    ));
    let advanced = Schedule {
        next_fire_at: at(65),
        ..second.clone()
    };
    assert_eq!(due(at(8), 100).await, vec![theirs.clone()]);

    // Deleting is per tenant.
    let error = refused(
        store.delete_schedule(b.id, first.id).await,
        "delete from another tenant",
    );
    assert!(matches!(error, StoreError::NotFound), "{error:?}");
    ok(store.delete_schedule(a.id, first.id).await, "delete");
    let error = refused(store.delete_schedule(a.id, first.id).await, "delete twice");
    assert!(matches!(error, StoreError::NotFound), "{error:?}");
    assert!(!ok(
        store.advance_schedule(first.id, at(10), at(70)).await,
        "advance a deleted schedule"
    ));
    assert_eq!(
        ok(store.list_schedules(a.id).await, "list after delete"),
        vec![advanced.clone()]
    );
    assert_eq!(due(at(100), 100).await, vec![theirs, advanced]);
}
