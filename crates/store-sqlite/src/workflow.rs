//! Workflow storage (definitions, runs, journal, dead letters, schedules) on SQLite.
//!
//! Every write is one job of the single writer thread, so a run's read-modify-write
//! (`update_run`) and a claim see no concurrent writer: the writer is the row lock.

use std::panic::{AssertUnwindSafe, catch_unwind};

use async_trait::async_trait;
use cordon_core::{
    DeadLetter, DeadLetterId, DeadLetterStatus, JournalEntry, NewJournalEntry, NewRun, Run,
    RunFilter, RunId, RunStatus, Schedule, ScheduleId, TenantId, Timestamp, WorkflowDefinition,
};
use cordon_store::{Result, RunChange, RunCreated, RunWrite, StoreError, WorkflowStore};
use rusqlite::{Connection, Row, params};

use crate::SqliteStore;
use crate::rows::{corrupt, parse, unsigned};
use crate::store::{is_unique_violation, query_all, signed, sql, sql_or_not_found};

const DEFINITION_COLUMNS: &str = "tenant_id, digest, name, document, created_by, created_at";

fn definition_row(row: &Row<'_>) -> Result<WorkflowDefinition> {
    Ok(WorkflowDefinition {
        tenant_id: parse("tenant id", &row.get::<_, String>(0).map_err(sql)?)?,
        digest: row.get(1).map_err(sql)?,
        name: row.get(2).map_err(sql)?,
        document: row.get(3).map_err(sql)?,
        created_by: row.get(4).map_err(sql)?,
        created_at: Timestamp::from_unix_micros(row.get(5).map_err(sql)?),
    })
}

const RUN_COLUMNS: &str = "id, tenant_id, definition, name, session_id, status, input, state, \
     output, reason, idempotency_key, created_by, created_at, updated_at, deadline, \
     next_due_at, lease_holder, lease_token, lease_expires_at, journal_seq";

fn timestamp(micros: Option<i64>) -> Option<Timestamp> {
    micros.map(Timestamp::from_unix_micros)
}

/// An attempt number kept in a signed column.
fn attempt(value: i64) -> Result<u32> {
    u32::try_from(value).map_err(|error| corrupt("attempt", error))
}

fn run_row(row: &Row<'_>) -> Result<Run> {
    let session_id: Option<String> = row.get(4).map_err(sql)?;
    Ok(Run {
        id: parse("run id", &row.get::<_, String>(0).map_err(sql)?)?,
        tenant_id: parse("tenant id", &row.get::<_, String>(1).map_err(sql)?)?,
        definition: row.get(2).map_err(sql)?,
        name: row.get(3).map_err(sql)?,
        session_id: session_id.map(|id| parse("session id", &id)).transpose()?,
        status: parse::<RunStatus>("run status", &row.get::<_, String>(5).map_err(sql)?)?,
        input: row.get(6).map_err(sql)?,
        state: row.get(7).map_err(sql)?,
        output: row.get(8).map_err(sql)?,
        reason: row.get(9).map_err(sql)?,
        idempotency_key: row.get(10).map_err(sql)?,
        created_by: row.get(11).map_err(sql)?,
        created_at: Timestamp::from_unix_micros(row.get(12).map_err(sql)?),
        updated_at: Timestamp::from_unix_micros(row.get(13).map_err(sql)?),
        deadline: timestamp(row.get(14).map_err(sql)?),
        next_due_at: timestamp(row.get(15).map_err(sql)?),
        lease_holder: row.get(16).map_err(sql)?,
        lease_token: row.get(17).map_err(sql)?,
        lease_expires_at: timestamp(row.get(18).map_err(sql)?),
        journal_seq: unsigned("journal seq", row.get(19).map_err(sql)?)?,
    })
}

const JOURNAL_COLUMNS: &str = "run_id, seq, step, attempt, kind, reason, detail, at";

fn journal_row(row: &Row<'_>) -> Result<JournalEntry> {
    Ok(JournalEntry {
        run_id: parse("run id", &row.get::<_, String>(0).map_err(sql)?)?,
        seq: unsigned("journal seq", row.get(1).map_err(sql)?)?,
        step: row.get(2).map_err(sql)?,
        attempt: attempt(row.get(3).map_err(sql)?)?,
        kind: row.get(4).map_err(sql)?,
        reason: row.get(5).map_err(sql)?,
        detail: row.get(6).map_err(sql)?,
        at: Timestamp::from_unix_micros(row.get(7).map_err(sql)?),
    })
}

const DEAD_LETTER_COLUMNS: &str = "id, tenant_id, run_id, session_id, step, attempt, reason, \
     summary, status, created_at, resolved_at, resolved_by";

fn dead_letter_row(row: &Row<'_>) -> Result<DeadLetter> {
    let session_id: Option<String> = row.get(3).map_err(sql)?;
    Ok(DeadLetter {
        id: parse("dead-letter id", &row.get::<_, String>(0).map_err(sql)?)?,
        tenant_id: parse("tenant id", &row.get::<_, String>(1).map_err(sql)?)?,
        run_id: parse("run id", &row.get::<_, String>(2).map_err(sql)?)?,
        session_id: session_id.map(|id| parse("session id", &id)).transpose()?,
        step: row.get(4).map_err(sql)?,
        attempt: attempt(row.get(5).map_err(sql)?)?,
        reason: row.get(6).map_err(sql)?,
        summary: row.get(7).map_err(sql)?,
        status: parse::<DeadLetterStatus>(
            "dead-letter status",
            &row.get::<_, String>(8).map_err(sql)?,
        )?,
        created_at: Timestamp::from_unix_micros(row.get(9).map_err(sql)?),
        resolved_at: timestamp(row.get(10).map_err(sql)?),
        resolved_by: row.get(11).map_err(sql)?,
    })
}

const SCHEDULE_COLUMNS: &str =
    "id, tenant_id, definition, cron, input, next_fire_at, created_by, created_at";

fn schedule_row(row: &Row<'_>) -> Result<Schedule> {
    Ok(Schedule {
        id: parse("schedule id", &row.get::<_, String>(0).map_err(sql)?)?,
        tenant_id: parse("tenant id", &row.get::<_, String>(1).map_err(sql)?)?,
        definition: row.get(2).map_err(sql)?,
        cron: row.get(3).map_err(sql)?,
        input: row.get(4).map_err(sql)?,
        next_fire_at: Timestamp::from_unix_micros(row.get(5).map_err(sql)?),
        created_by: row.get(6).map_err(sql)?,
        created_at: Timestamp::from_unix_micros(row.get(7).map_err(sql)?),
    })
}

fn select_run(c: &Connection, tenant_id: TenantId, id: RunId) -> Result<Option<Run>> {
    let query = format!("SELECT {RUN_COLUMNS} FROM workflow_runs WHERE id = ?1 AND tenant_id = ?2");
    let values = params![id.to_string(), tenant_id.to_string()];
    Ok(query_all(c, &query, values, run_row)?.pop())
}

/// Appends `entries` to the run's journal numbered from `after + 1`.
fn insert_journal(
    c: &Connection,
    run_id: RunId,
    after: u64,
    entries: Vec<NewJournalEntry>,
) -> Result<Vec<JournalEntry>> {
    let query = format!(
        "INSERT INTO workflow_journal ({JOURNAL_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"
    );
    let mut statement = c.prepare_cached(&query).map_err(sql)?;
    let mut written = Vec::with_capacity(entries.len());
    for (entry, seq) in entries.into_iter().zip(after + 1..) {
        statement
            .execute(params![
                run_id.to_string(),
                signed(seq),
                entry.step,
                entry.attempt,
                entry.kind,
                entry.reason,
                entry.detail,
                entry.at.unix_micros(),
            ])
            .map_err(sql)?;
        written.push(JournalEntry {
            run_id,
            seq,
            step: entry.step,
            attempt: entry.attempt,
            kind: entry.kind,
            reason: entry.reason,
            detail: entry.detail,
            at: entry.at,
        });
    }
    Ok(written)
}

fn insert_dead_letter(c: &Connection, entry: &DeadLetter) -> Result<()> {
    let query = format!(
        "INSERT INTO workflow_dead_letters ({DEAD_LETTER_COLUMNS})
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)"
    );
    c.prepare_cached(&query)
        .and_then(|mut s| {
            s.execute(params![
                entry.id.to_string(),
                entry.tenant_id.to_string(),
                entry.run_id.to_string(),
                entry.session_id.map(|id| id.to_string()),
                entry.step,
                entry.attempt,
                entry.reason,
                entry.summary,
                entry.status.as_str(),
                entry.created_at.unix_micros(),
                entry.resolved_at.map(Timestamp::unix_micros),
                entry.resolved_by,
            ])
        })
        .map(drop)
        .map_err(sql)
}

/// Writes every mutable column of `run`.
fn update_run_row(c: &Connection, run: &Run) -> Result<()> {
    c.prepare_cached(
        "UPDATE workflow_runs SET definition = ?3, name = ?4, session_id = ?5, status = ?6,
             input = ?7, state = ?8, output = ?9, reason = ?10, idempotency_key = ?11,
             created_by = ?12, updated_at = ?13, deadline = ?14, next_due_at = ?15,
             lease_holder = ?16, lease_token = ?17, lease_expires_at = ?18, journal_seq = ?19
         WHERE id = ?1 AND tenant_id = ?2",
    )
    .and_then(|mut s| {
        s.execute(params![
            run.id.to_string(),
            run.tenant_id.to_string(),
            run.definition,
            run.name,
            run.session_id.map(|id| id.to_string()),
            run.status.as_str(),
            run.input,
            run.state,
            run.output,
            run.reason,
            run.idempotency_key,
            run.created_by,
            run.updated_at.unix_micros(),
            run.deadline.map(Timestamp::unix_micros),
            run.next_due_at.map(Timestamp::unix_micros),
            run.lease_holder,
            run.lease_token,
            run.lease_expires_at.map(Timestamp::unix_micros),
            signed(run.journal_seq),
        ])
    })
    .map_err(|error| {
        if is_unique_violation(&error) {
            StoreError::RunConflict(format!(
                "the tenant has another run with idempotency key {:?}",
                run.idempotency_key
            ))
        } else {
            sql(error)
        }
    })
    .and_then(|updated| match updated {
        1 => Ok(()),
        _ => Err(StoreError::NotFound),
    })
}

/// Runs the caller's change; a panic in it becomes an error instead of taking the
/// writer thread (and with it every later write) down.
fn apply_change(change: RunChange, run: &mut Run) -> Result<RunWrite> {
    catch_unwind(AssertUnwindSafe(|| change(run))).unwrap_or_else(|_| {
        Err(StoreError::Backend(
            "the change of a workflow run panicked".into(),
        ))
    })
}

#[async_trait]
impl WorkflowStore for SqliteStore {
    async fn put_workflow_definition(
        &self,
        definition: &WorkflowDefinition,
    ) -> Result<WorkflowDefinition> {
        let definition = definition.clone();
        self.write(move |c| {
            let query = format!(
                "INSERT INTO workflow_definitions ({DEFINITION_COLUMNS})
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (tenant_id, digest) DO NOTHING"
            );
            c.prepare_cached(&query)
                .and_then(|mut s| {
                    s.execute(params![
                        definition.tenant_id.to_string(),
                        definition.digest,
                        definition.name,
                        definition.document,
                        definition.created_by,
                        definition.created_at.unix_micros(),
                    ])
                })
                .map_err(sql_or_not_found)?;
            let query = format!(
                "SELECT {DEFINITION_COLUMNS} FROM workflow_definitions
                 WHERE tenant_id = ?1 AND digest = ?2"
            );
            let values = params![definition.tenant_id.to_string(), definition.digest];
            query_all(c, &query, values, definition_row)?
                .pop()
                .ok_or_else(|| StoreError::Backend("the stored definition vanished".into()))
        })
        .await
    }

    async fn get_workflow_definition(
        &self,
        tenant_id: TenantId,
        digest: &str,
    ) -> Result<Option<WorkflowDefinition>> {
        let digest = digest.to_owned();
        self.read(move |c| {
            let query = format!(
                "SELECT {DEFINITION_COLUMNS} FROM workflow_definitions
                 WHERE tenant_id = ?1 AND digest = ?2"
            );
            let values = params![tenant_id.to_string(), digest];
            Ok(query_all(c, &query, values, definition_row)?.pop())
        })
        .await
    }

    async fn list_workflow_definitions(
        &self,
        tenant_id: TenantId,
    ) -> Result<Vec<WorkflowDefinition>> {
        self.read(move |c| {
            let query = format!(
                "SELECT {DEFINITION_COLUMNS} FROM workflow_definitions
                 WHERE tenant_id = ?1 ORDER BY created_at DESC, digest"
            );
            query_all(c, &query, params![tenant_id.to_string()], definition_row)
        })
        .await
    }

    async fn create_run(&self, run: &NewRun, journal: &[NewJournalEntry]) -> Result<RunCreated> {
        let (run, journal) = (run.clone(), journal.to_vec());
        self.write(move |c| {
            let lease_token = i64::from(run.lease_holder.is_some());
            let query = format!(
                "INSERT INTO workflow_runs ({RUN_COLUMNS})
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, NULL, NULL, ?9, ?10, ?11, ?11, ?12,
                     ?13, ?14, ?15, ?16, ?17)"
            );
            let inserted = c.prepare_cached(&query).and_then(|mut s| {
                s.execute(params![
                    run.id.to_string(),
                    run.tenant_id.to_string(),
                    run.definition,
                    run.name,
                    run.session_id.map(|id| id.to_string()),
                    run.status.as_str(),
                    run.input,
                    run.state,
                    run.idempotency_key,
                    run.created_by,
                    run.created_at.unix_micros(),
                    run.deadline.map(Timestamp::unix_micros),
                    run.next_due_at.map(Timestamp::unix_micros),
                    run.lease_holder,
                    lease_token,
                    run.lease_expires_at.map(Timestamp::unix_micros),
                    signed(journal.len() as u64),
                ])
            });
            match inserted {
                Ok(_) => {}
                Err(error) if is_unique_violation(&error) => {
                    // The key is taken (or, for a bug, the id): the insert wrote nothing.
                    let Some(key) = &run.idempotency_key else {
                        return Err(sql(error));
                    };
                    let query = format!(
                        "SELECT {RUN_COLUMNS} FROM workflow_runs
                         WHERE tenant_id = ?1 AND idempotency_key = ?2"
                    );
                    let values = params![run.tenant_id.to_string(), key];
                    return match query_all(c, &query, values, run_row)?.pop() {
                        Some(existing) => Ok(RunCreated::Existing(existing)),
                        None => Err(sql(error)),
                    };
                }
                Err(error) => return Err(sql_or_not_found(error)),
            }
            insert_journal(c, run.id, 0, journal)?;
            let created = select_run(c, run.tenant_id, run.id)?
                .ok_or_else(|| StoreError::Backend("the created run vanished".into()))?;
            Ok(RunCreated::New(created))
        })
        .await
    }

    async fn get_run(&self, tenant_id: TenantId, id: RunId) -> Result<Option<Run>> {
        self.read(move |c| select_run(c, tenant_id, id)).await
    }

    async fn list_runs(
        &self,
        tenant_id: TenantId,
        filter: &RunFilter,
        limit: u32,
    ) -> Result<Vec<Run>> {
        let filter = filter.clone();
        self.read(move |c| {
            let query = format!(
                "SELECT {RUN_COLUMNS} FROM workflow_runs
                 WHERE tenant_id = ?1
                   AND (?2 IS NULL OR status = ?2)
                   AND (?3 IS NULL OR name = ?3)
                   AND (?4 IS NULL OR definition = ?4)
                   AND (?5 IS NULL OR session_id = ?5)
                   AND (?6 IS NULL OR id > ?6)
                 ORDER BY id LIMIT ?7"
            );
            let values = params![
                tenant_id.to_string(),
                filter.status.map(RunStatus::as_str),
                filter.name,
                filter.definition,
                filter.session_id.map(|id| id.to_string()),
                filter.after.map(|id| id.to_string()),
                limit,
            ];
            query_all(c, &query, values, run_row)
        })
        .await
    }

    async fn update_run(
        &self,
        tenant_id: TenantId,
        id: RunId,
        change: RunChange,
    ) -> Result<(Run, Vec<JournalEntry>)> {
        self.write(move |c| {
            let stored = select_run(c, tenant_id, id)?.ok_or(StoreError::NotFound)?;
            let mut run = stored.clone();
            let write = apply_change(change, &mut run)?;
            // The fields the change may not touch are the store's.
            run.id = stored.id;
            run.tenant_id = stored.tenant_id;
            run.created_at = stored.created_at;
            run.updated_at = Timestamp::now();
            run.journal_seq = stored.journal_seq + write.journal.len() as u64;
            update_run_row(c, &run)?;
            let entries = insert_journal(c, run.id, stored.journal_seq, write.journal)?;
            for entry in &write.dead_letters {
                if entry.run_id != run.id || entry.tenant_id != run.tenant_id {
                    return Err(StoreError::Backend(format!(
                        "dead-letter entry {} is not of run {}",
                        entry.id, run.id
                    )));
                }
                insert_dead_letter(c, entry)?;
            }
            let mut resolve = c
                .prepare_cached(
                    "UPDATE workflow_dead_letters
                     SET status = ?1, resolved_at = ?2, resolved_by = ?3
                     WHERE id = ?4 AND run_id = ?5 AND tenant_id = ?6 AND status = 'open'",
                )
                .map_err(sql)?;
            for (entry, status, by) in &write.resolve_dead_letters {
                resolve
                    .execute(params![
                        status.as_str(),
                        run.updated_at.unix_micros(),
                        by,
                        entry.to_string(),
                        run.id.to_string(),
                        run.tenant_id.to_string(),
                    ])
                    .map_err(sql)?;
            }
            Ok((run, entries))
        })
        .await
    }

    async fn claim_runs(
        &self,
        node: &str,
        now: Timestamp,
        lease_until: Timestamp,
        limit: u32,
        include_own: bool,
    ) -> Result<Vec<Run>> {
        let node = node.to_owned();
        self.write(move |c| {
            let (now, lease_until) = (now.unix_micros(), lease_until.unix_micros());
            let due: Vec<String> = c
                .prepare_cached(
                    "SELECT id FROM (
                       SELECT id, next_due_at FROM workflow_runs
                        WHERE next_due_at <= ?1
                          AND status NOT IN ('succeeded', 'failed', 'cancelled')
                          AND (lease_holder IS NULL OR lease_expires_at <= ?1 OR lease_holder = ?2)
                       UNION
                       SELECT id, next_due_at FROM workflow_runs
                        WHERE lease_holder IS NOT NULL AND lease_expires_at <= ?1
                          AND status NOT IN ('succeeded', 'failed', 'cancelled')
                       UNION
                       SELECT id, next_due_at FROM workflow_runs
                        WHERE ?4 AND lease_holder IS NOT NULL AND lease_holder = ?2
                          AND status NOT IN ('succeeded', 'failed', 'cancelled'))
                     ORDER BY next_due_at, id LIMIT ?3",
                )
                .and_then(|mut s| {
                    s.query_map(params![now, node, limit, include_own], |row| row.get(0))?
                        .collect()
                })
                .map_err(sql)?;
            // The token grows when the holder changes or the lease had lapsed; a node
            // renewing its live lease keeps its token.
            let query = format!(
                "UPDATE workflow_runs
                 SET lease_token = CASE
                         WHEN lease_holder IS NULL OR lease_holder <> ?2
                              OR lease_expires_at <= ?3
                         THEN lease_token + 1 ELSE lease_token END,
                     lease_holder = ?2, lease_expires_at = ?4
                 WHERE id = ?1
                 RETURNING {RUN_COLUMNS}"
            );
            let mut claimed = Vec::with_capacity(due.len());
            for id in due {
                claimed.extend(query_all(
                    c,
                    &query,
                    params![id, node, now, lease_until],
                    run_row,
                )?);
            }
            Ok(claimed)
        })
        .await
    }

    async fn run_journal(
        &self,
        tenant_id: TenantId,
        id: RunId,
        after: u64,
        limit: u32,
    ) -> Result<Vec<JournalEntry>> {
        self.read(move |c| {
            let query = format!(
                "SELECT {JOURNAL_COLUMNS} FROM workflow_journal
                 WHERE run_id = ?1 AND seq > ?2
                   AND EXISTS (SELECT 1 FROM workflow_runs WHERE id = ?1 AND tenant_id = ?3)
                 ORDER BY seq LIMIT ?4"
            );
            let values = params![id.to_string(), signed(after), tenant_id.to_string(), limit];
            query_all(c, &query, values, journal_row)
        })
        .await
    }

    async fn get_dead_letter(
        &self,
        tenant_id: TenantId,
        id: DeadLetterId,
    ) -> Result<Option<DeadLetter>> {
        self.read(move |c| {
            let query = format!(
                "SELECT {DEAD_LETTER_COLUMNS} FROM workflow_dead_letters
                 WHERE id = ?1 AND tenant_id = ?2"
            );
            let values = params![id.to_string(), tenant_id.to_string()];
            Ok(query_all(c, &query, values, dead_letter_row)?.pop())
        })
        .await
    }

    async fn list_dead_letters(
        &self,
        tenant_id: TenantId,
        status: Option<DeadLetterStatus>,
        run_id: Option<RunId>,
        after: Option<DeadLetterId>,
        limit: u32,
    ) -> Result<Vec<DeadLetter>> {
        self.read(move |c| {
            let query = format!(
                "SELECT {DEAD_LETTER_COLUMNS} FROM workflow_dead_letters
                 WHERE tenant_id = ?1
                   AND (?2 IS NULL OR status = ?2)
                   AND (?3 IS NULL OR run_id = ?3)
                   AND (?4 IS NULL OR id > ?4)
                 ORDER BY id LIMIT ?5"
            );
            let values = params![
                tenant_id.to_string(),
                status.map(DeadLetterStatus::as_str),
                run_id.map(|id| id.to_string()),
                after.map(|id| id.to_string()),
                limit,
            ];
            query_all(c, &query, values, dead_letter_row)
        })
        .await
    }

    async fn create_schedule(&self, schedule: &Schedule) -> Result<()> {
        let schedule = schedule.clone();
        self.write(move |c| {
            let query = format!(
                "INSERT INTO workflow_schedules ({SCHEDULE_COLUMNS})
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"
            );
            c.prepare_cached(&query)
                .and_then(|mut s| {
                    s.execute(params![
                        schedule.id.to_string(),
                        schedule.tenant_id.to_string(),
                        schedule.definition,
                        schedule.cron,
                        schedule.input,
                        schedule.next_fire_at.unix_micros(),
                        schedule.created_by,
                        schedule.created_at.unix_micros(),
                    ])
                })
                .map(drop)
                .map_err(sql_or_not_found)
        })
        .await
    }

    async fn list_schedules(&self, tenant_id: TenantId) -> Result<Vec<Schedule>> {
        self.read(move |c| {
            let query = format!(
                "SELECT {SCHEDULE_COLUMNS} FROM workflow_schedules WHERE tenant_id = ?1 ORDER BY id"
            );
            query_all(c, &query, params![tenant_id.to_string()], schedule_row)
        })
        .await
    }

    async fn delete_schedule(&self, tenant_id: TenantId, id: ScheduleId) -> Result<()> {
        self.write(move |c| {
            let deleted = c
                .prepare_cached("DELETE FROM workflow_schedules WHERE id = ?1 AND tenant_id = ?2")
                .and_then(|mut s| s.execute(params![id.to_string(), tenant_id.to_string()]))
                .map_err(sql)?;
            match deleted {
                0 => Err(StoreError::NotFound),
                _ => Ok(()),
            }
        })
        .await
    }

    async fn due_schedules(&self, now: Timestamp, limit: u32) -> Result<Vec<Schedule>> {
        self.read(move |c| {
            let query = format!(
                "SELECT {SCHEDULE_COLUMNS} FROM workflow_schedules
                 WHERE next_fire_at <= ?1 ORDER BY next_fire_at, id LIMIT ?2"
            );
            query_all(c, &query, params![now.unix_micros(), limit], schedule_row)
        })
        .await
    }

    async fn advance_schedule(
        &self,
        id: ScheduleId,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<bool> {
        self.write(move |c| {
            c.prepare_cached(
                "UPDATE workflow_schedules SET next_fire_at = ?3
                 WHERE id = ?1 AND next_fire_at = ?2",
            )
            .and_then(|mut s| {
                s.execute(params![
                    id.to_string(),
                    from.unix_micros(),
                    to.unix_micros()
                ])
            })
            .map(|moved| moved == 1)
            .map_err(sql)
        })
        .await
    }
}
