//! Workflow storage (definitions, runs, journal, dead letters, schedules) on
//! PostgreSQL. A run's read-modify-write holds its row `FOR UPDATE` for the
//! transaction; claims lock candidate rows `FOR UPDATE SKIP LOCKED`, so nodes claiming
//! at once split the due runs instead of queueing on them.

use async_trait::async_trait;
use cordon_core::{
    DeadLetter, DeadLetterId, DeadLetterStatus, JournalEntry, NewJournalEntry, NewRun, Run,
    RunFilter, RunId, RunStatus, Schedule, ScheduleId, TenantId, Timestamp, WorkflowDefinition,
};
use cordon_store::{Result, RunChange, RunCreated, StoreError, WorkflowStore};
use sqlx::error::ErrorKind;
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, QueryBuilder};

use crate::PostgresStore;
use crate::rows::{corrupt, get, parse};
use crate::store::{signed, sql, sql_or_not_found, violates};

const DEFINITION_COLUMNS: &str = "tenant_id, digest, name, document, created_by, created_at";

fn definition_row(row: &PgRow) -> Result<WorkflowDefinition> {
    Ok(WorkflowDefinition {
        tenant_id: parse("tenant id", &get::<String>(row, 0)?)?,
        digest: get(row, 1)?,
        name: get(row, 2)?,
        document: get(row, 3)?,
        created_by: get(row, 4)?,
        created_at: Timestamp::from_unix_micros(get(row, 5)?),
    })
}

const RUN_COLUMNS: &str = "id, tenant_id, definition, name, session_id, status, input, state, \
     output, reason, idempotency_key, created_by, created_at, updated_at, deadline, \
     next_due_at, lease_holder, lease_token, lease_expires_at, journal_seq";

fn timestamp(micros: Option<i64>) -> Option<Timestamp> {
    micros.map(Timestamp::from_unix_micros)
}

fn unsigned(what: &str, value: i64) -> Result<u64> {
    u64::try_from(value).map_err(|error| corrupt(what, error))
}

fn attempt(value: i64) -> Result<u32> {
    u32::try_from(value).map_err(|error| corrupt("attempt", error))
}

fn run_row(row: &PgRow) -> Result<Run> {
    let session_id: Option<String> = get(row, 4)?;
    Ok(Run {
        id: parse("run id", &get::<String>(row, 0)?)?,
        tenant_id: parse("tenant id", &get::<String>(row, 1)?)?,
        definition: get(row, 2)?,
        name: get(row, 3)?,
        session_id: session_id.map(|id| parse("session id", &id)).transpose()?,
        status: parse::<RunStatus>("run status", &get::<String>(row, 5)?)?,
        input: get(row, 6)?,
        state: get(row, 7)?,
        output: get(row, 8)?,
        reason: get(row, 9)?,
        idempotency_key: get(row, 10)?,
        created_by: get(row, 11)?,
        created_at: Timestamp::from_unix_micros(get(row, 12)?),
        updated_at: Timestamp::from_unix_micros(get(row, 13)?),
        deadline: timestamp(get(row, 14)?),
        next_due_at: timestamp(get(row, 15)?),
        lease_holder: get(row, 16)?,
        lease_token: get(row, 17)?,
        lease_expires_at: timestamp(get(row, 18)?),
        journal_seq: unsigned("journal seq", get(row, 19)?)?,
    })
}

const JOURNAL_COLUMNS: &str = "run_id, seq, step, attempt, kind, reason, detail, at";

fn journal_row(row: &PgRow) -> Result<JournalEntry> {
    Ok(JournalEntry {
        run_id: parse("run id", &get::<String>(row, 0)?)?,
        seq: unsigned("journal seq", get(row, 1)?)?,
        step: get(row, 2)?,
        attempt: attempt(get(row, 3)?)?,
        kind: get(row, 4)?,
        reason: get(row, 5)?,
        detail: get(row, 6)?,
        at: Timestamp::from_unix_micros(get(row, 7)?),
    })
}

const DEAD_LETTER_COLUMNS: &str = "id, tenant_id, run_id, session_id, step, attempt, reason, \
     summary, status, created_at, resolved_at, resolved_by";

fn dead_letter_row(row: &PgRow) -> Result<DeadLetter> {
    let session_id: Option<String> = get(row, 3)?;
    Ok(DeadLetter {
        id: parse("dead-letter id", &get::<String>(row, 0)?)?,
        tenant_id: parse("tenant id", &get::<String>(row, 1)?)?,
        run_id: parse("run id", &get::<String>(row, 2)?)?,
        session_id: session_id.map(|id| parse("session id", &id)).transpose()?,
        step: get(row, 4)?,
        attempt: attempt(get(row, 5)?)?,
        reason: get(row, 6)?,
        summary: get(row, 7)?,
        status: parse::<DeadLetterStatus>("dead-letter status", &get::<String>(row, 8)?)?,
        created_at: Timestamp::from_unix_micros(get(row, 9)?),
        resolved_at: timestamp(get(row, 10)?),
        resolved_by: get(row, 11)?,
    })
}

const SCHEDULE_COLUMNS: &str =
    "id, tenant_id, definition, cron, input, next_fire_at, created_by, created_at";

fn schedule_row(row: &PgRow) -> Result<Schedule> {
    Ok(Schedule {
        id: parse("schedule id", &get::<String>(row, 0)?)?,
        tenant_id: parse("tenant id", &get::<String>(row, 1)?)?,
        definition: get(row, 2)?,
        cron: get(row, 3)?,
        input: get(row, 4)?,
        next_fire_at: Timestamp::from_unix_micros(get(row, 5)?),
        created_by: get(row, 6)?,
        created_at: Timestamp::from_unix_micros(get(row, 7)?),
    })
}

fn rows<T>(rows: Vec<PgRow>, map: fn(&PgRow) -> Result<T>) -> Result<Vec<T>> {
    rows.iter().map(map).collect()
}

/// Appends `entries` numbered from `after + 1`, in one statement.
async fn insert_journal(
    c: &mut PgConnection,
    run_id: RunId,
    after: u64,
    entries: Vec<NewJournalEntry>,
) -> Result<Vec<JournalEntry>> {
    if entries.is_empty() {
        return Ok(Vec::new());
    }
    let run = run_id.to_string();
    let mut insert: QueryBuilder<sqlx::Postgres> =
        QueryBuilder::new(format!("INSERT INTO workflow_journal ({JOURNAL_COLUMNS}) "));
    insert.push_values(entries.iter().zip(after + 1..), |mut b, (entry, seq)| {
        b.push_bind(&run)
            .push_bind(signed(seq))
            .push_bind(&entry.step)
            .push_bind(i64::from(entry.attempt))
            .push_bind(&entry.kind)
            .push_bind(&entry.reason)
            .push_bind(&entry.detail)
            .push_bind(entry.at.unix_micros());
    });
    insert.build().execute(&mut *c).await.map_err(sql)?;
    Ok(entries
        .into_iter()
        .zip(after + 1..)
        .map(|(entry, seq)| JournalEntry {
            run_id,
            seq,
            step: entry.step,
            attempt: entry.attempt,
            kind: entry.kind,
            reason: entry.reason,
            detail: entry.detail,
            at: entry.at,
        })
        .collect())
}

async fn select_run(
    c: &mut PgConnection,
    tenant_id: TenantId,
    id: RunId,
    lock: bool,
) -> Result<Option<Run>> {
    let query = format!(
        "SELECT {RUN_COLUMNS} FROM workflow_runs WHERE id = $1 AND tenant_id = $2{}",
        if lock { " FOR UPDATE" } else { "" }
    );
    sqlx::query(sqlx::AssertSqlSafe(query))
        .bind(id.to_string())
        .bind(tenant_id.to_string())
        .fetch_optional(&mut *c)
        .await
        .map_err(sql)?
        .as_ref()
        .map(run_row)
        .transpose()
}

#[async_trait]
impl WorkflowStore for PostgresStore {
    async fn put_workflow_definition(
        &self,
        definition: &WorkflowDefinition,
    ) -> Result<WorkflowDefinition> {
        let mut tx = self.pool.begin().await.map_err(sql)?;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO workflow_definitions ({DEFINITION_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (tenant_id, digest) DO NOTHING"
        )))
        .bind(definition.tenant_id.to_string())
        .bind(&definition.digest)
        .bind(&definition.name)
        .bind(&definition.document)
        .bind(&definition.created_by)
        .bind(definition.created_at.unix_micros())
        .execute(&mut *tx)
        .await
        .map_err(sql_or_not_found)?;
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {DEFINITION_COLUMNS} FROM workflow_definitions WHERE tenant_id = $1 AND digest = $2"
        )))
        .bind(definition.tenant_id.to_string())
        .bind(&definition.digest)
        .fetch_one(&mut *tx)
        .await
        .map_err(sql)?;
        tx.commit().await.map_err(sql)?;
        definition_row(&row)
    }

    async fn get_workflow_definition(
        &self,
        tenant_id: TenantId,
        digest: &str,
    ) -> Result<Option<WorkflowDefinition>> {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {DEFINITION_COLUMNS} FROM workflow_definitions WHERE tenant_id = $1 AND digest = $2"
        )))
        .bind(tenant_id.to_string())
        .bind(digest)
        .fetch_optional(&self.pool)
        .await
        .map_err(sql)?
        .as_ref()
        .map(definition_row)
        .transpose()
    }

    async fn list_workflow_definitions(
        &self,
        tenant_id: TenantId,
    ) -> Result<Vec<WorkflowDefinition>> {
        let found = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {DEFINITION_COLUMNS} FROM workflow_definitions
             WHERE tenant_id = $1 ORDER BY created_at DESC, digest"
        )))
        .bind(tenant_id.to_string())
        .fetch_all(&self.pool)
        .await
        .map_err(sql)?;
        rows(found, definition_row)
    }

    async fn create_run(&self, run: &NewRun, journal: &[NewJournalEntry]) -> Result<RunCreated> {
        let mut tx = self.pool.begin().await.map_err(sql)?;
        let lease_token = i64::from(run.lease_holder.is_some());
        let inserted = sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO workflow_runs ({RUN_COLUMNS})
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, NULL, NULL, $9, $10, $11, $11, $12,
                     $13, $14, $15, $16, $17)
             ON CONFLICT (tenant_id, idempotency_key) DO NOTHING"
        )))
        .bind(run.id.to_string())
        .bind(run.tenant_id.to_string())
        .bind(&run.definition)
        .bind(&run.name)
        .bind(run.session_id.map(|id| id.to_string()))
        .bind(run.status.as_str())
        .bind(&run.input)
        .bind(&run.state)
        .bind(&run.idempotency_key)
        .bind(&run.created_by)
        .bind(run.created_at.unix_micros())
        .bind(run.deadline.map(Timestamp::unix_micros))
        .bind(run.next_due_at.map(Timestamp::unix_micros))
        .bind(&run.lease_holder)
        .bind(lease_token)
        .bind(run.lease_expires_at.map(Timestamp::unix_micros))
        .bind(signed(journal.len() as u64))
        .execute(&mut *tx)
        .await
        .map_err(sql_or_not_found)?;
        if inserted.rows_affected() == 0 {
            tx.rollback().await.map_err(sql)?;
            let existing = sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT {RUN_COLUMNS} FROM workflow_runs WHERE tenant_id = $1 AND idempotency_key = $2"
            )))
            .bind(run.tenant_id.to_string())
            .bind(&run.idempotency_key)
            .fetch_optional(&self.pool)
            .await
            .map_err(sql)?
            .ok_or_else(|| StoreError::Backend("the run holding the key vanished".into()))?;
            return Ok(RunCreated::Existing(run_row(&existing)?));
        }
        insert_journal(&mut tx, run.id, 0, journal.to_vec()).await?;
        let created = select_run(&mut tx, run.tenant_id, run.id, false)
            .await?
            .ok_or_else(|| StoreError::Backend("the created run vanished".into()))?;
        tx.commit().await.map_err(sql)?;
        Ok(RunCreated::New(created))
    }

    async fn get_run(&self, tenant_id: TenantId, id: RunId) -> Result<Option<Run>> {
        let mut c = self.pool.acquire().await.map_err(sql)?;
        select_run(&mut c, tenant_id, id, false).await
    }

    async fn list_runs(
        &self,
        tenant_id: TenantId,
        filter: &RunFilter,
        limit: u32,
    ) -> Result<Vec<Run>> {
        let found = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {RUN_COLUMNS} FROM workflow_runs
             WHERE tenant_id = $1
               AND ($2::TEXT IS NULL OR status = $2)
               AND ($3::TEXT IS NULL OR name = $3)
               AND ($4::TEXT IS NULL OR definition = $4)
               AND ($5::TEXT IS NULL OR session_id = $5)
               AND ($6::TEXT IS NULL OR id > $6)
             ORDER BY id LIMIT $7"
        )))
        .bind(tenant_id.to_string())
        .bind(filter.status.map(RunStatus::as_str))
        .bind(&filter.name)
        .bind(&filter.definition)
        .bind(filter.session_id.map(|id| id.to_string()))
        .bind(filter.after.map(|id| id.to_string()))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(sql)?;
        rows(found, run_row)
    }

    async fn update_run(
        &self,
        tenant_id: TenantId,
        id: RunId,
        change: RunChange,
    ) -> Result<(Run, Vec<JournalEntry>)> {
        let mut tx = self.pool.begin().await.map_err(sql)?;
        let stored = select_run(&mut tx, tenant_id, id, true)
            .await?
            .ok_or(StoreError::NotFound)?;
        let mut run = stored.clone();
        let write = match change(&mut run) {
            Ok(write) => write,
            Err(error) => {
                tx.rollback().await.map_err(sql)?;
                return Err(error);
            }
        };
        run.id = stored.id;
        run.tenant_id = stored.tenant_id;
        run.created_at = stored.created_at;
        run.updated_at = Timestamp::now();
        run.journal_seq = stored.journal_seq + write.journal.len() as u64;
        let updated = sqlx::query(
            "UPDATE workflow_runs SET definition = $3, name = $4, session_id = $5, status = $6,
                 input = $7, state = $8, output = $9, reason = $10, idempotency_key = $11,
                 created_by = $12, updated_at = $13, deadline = $14, next_due_at = $15,
                 lease_holder = $16, lease_token = $17, lease_expires_at = $18, journal_seq = $19
             WHERE id = $1 AND tenant_id = $2",
        )
        .bind(run.id.to_string())
        .bind(run.tenant_id.to_string())
        .bind(&run.definition)
        .bind(&run.name)
        .bind(run.session_id.map(|id| id.to_string()))
        .bind(run.status.as_str())
        .bind(&run.input)
        .bind(&run.state)
        .bind(&run.output)
        .bind(&run.reason)
        .bind(&run.idempotency_key)
        .bind(&run.created_by)
        .bind(run.updated_at.unix_micros())
        .bind(run.deadline.map(Timestamp::unix_micros))
        .bind(run.next_due_at.map(Timestamp::unix_micros))
        .bind(&run.lease_holder)
        .bind(run.lease_token)
        .bind(run.lease_expires_at.map(Timestamp::unix_micros))
        .bind(signed(run.journal_seq))
        .execute(&mut *tx)
        .await;
        match updated {
            Ok(_) => {}
            Err(error) if violates(&error, ErrorKind::UniqueViolation) => {
                return Err(StoreError::RunConflict(format!(
                    "the tenant has another run with idempotency key {:?}",
                    run.idempotency_key
                )));
            }
            Err(error) => return Err(sql(error)),
        }
        let entries = insert_journal(&mut tx, run.id, stored.journal_seq, write.journal).await?;
        for entry in &write.dead_letters {
            if entry.run_id != run.id || entry.tenant_id != run.tenant_id {
                return Err(StoreError::Backend(format!(
                    "dead-letter entry {} is not of run {}",
                    entry.id, run.id
                )));
            }
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "INSERT INTO workflow_dead_letters ({DEAD_LETTER_COLUMNS})
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
            )))
            .bind(entry.id.to_string())
            .bind(entry.tenant_id.to_string())
            .bind(entry.run_id.to_string())
            .bind(entry.session_id.map(|id| id.to_string()))
            .bind(&entry.step)
            .bind(i64::from(entry.attempt))
            .bind(&entry.reason)
            .bind(&entry.summary)
            .bind(entry.status.as_str())
            .bind(entry.created_at.unix_micros())
            .bind(entry.resolved_at.map(Timestamp::unix_micros))
            .bind(&entry.resolved_by)
            .execute(&mut *tx)
            .await
            .map_err(sql)?;
        }
        for (entry, status, by) in &write.resolve_dead_letters {
            sqlx::query(
                "UPDATE workflow_dead_letters SET status = $1, resolved_at = $2, resolved_by = $3
                 WHERE id = $4 AND run_id = $5 AND tenant_id = $6 AND status = 'open'",
            )
            .bind(status.as_str())
            .bind(run.updated_at.unix_micros())
            .bind(by)
            .bind(entry.to_string())
            .bind(run.id.to_string())
            .bind(run.tenant_id.to_string())
            .execute(&mut *tx)
            .await
            .map_err(sql)?;
        }
        tx.commit().await.map_err(sql)?;
        Ok((run, entries))
    }

    async fn claim_runs(
        &self,
        node: &str,
        now: Timestamp,
        lease_until: Timestamp,
        limit: u32,
        include_own: bool,
    ) -> Result<Vec<Run>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let found = sqlx::query(sqlx::AssertSqlSafe(format!(
            "WITH candidates AS (
                 SELECT id, next_due_at FROM workflow_runs
                  WHERE next_due_at <= $1
                    AND status NOT IN ('succeeded', 'failed', 'cancelled')
                    AND (lease_holder IS NULL OR lease_expires_at <= $1 OR lease_holder = $2)
                 UNION
                 SELECT id, next_due_at FROM workflow_runs
                  WHERE lease_holder IS NOT NULL AND lease_expires_at <= $1
                    AND status NOT IN ('succeeded', 'failed', 'cancelled')
                 UNION
                 SELECT id, next_due_at FROM workflow_runs
                  WHERE $5 AND lease_holder = $2
                    AND status NOT IN ('succeeded', 'failed', 'cancelled')
             ),
             -- The lease is checked again here, on the row being locked: the candidates
             -- were read from the statement's snapshot, and a claim another node
             -- committed since would otherwise be taken over (its lock released, the
             -- row not skipped). PostgreSQL re-evaluates these conditions on the newest
             -- version of a row it waited for.
             claimed AS (
                 SELECT r.id FROM workflow_runs r JOIN candidates c ON c.id = r.id
                  WHERE r.status NOT IN ('succeeded', 'failed', 'cancelled')
                    AND (r.lease_holder IS NULL OR r.lease_expires_at <= $1
                         OR r.lease_holder = $2)
                  ORDER BY c.next_due_at NULLS LAST, r.id
                  LIMIT $4
                  FOR UPDATE OF r SKIP LOCKED
             )
             UPDATE workflow_runs r
                SET lease_token = CASE
                        WHEN r.lease_holder IS DISTINCT FROM $2 OR r.lease_expires_at <= $1
                        THEN r.lease_token + 1 ELSE r.lease_token END,
                    lease_holder = $2, lease_expires_at = $3
               FROM claimed WHERE r.id = claimed.id
             RETURNING {}",
            RUN_COLUMNS
                .split(", ")
                .map(|c| format!("r.{c}"))
                .collect::<Vec<_>>()
                .join(", ")
        )))
        .bind(now.unix_micros())
        .bind(node)
        .bind(lease_until.unix_micros())
        .bind(i64::from(limit))
        .bind(include_own)
        .fetch_all(&self.pool)
        .await
        .map_err(sql)?;
        let mut claimed = rows(found, run_row)?;
        claimed.sort_by_key(|r| (r.next_due_at.map_or(i64::MAX, Timestamp::unix_micros), r.id));
        Ok(claimed)
    }

    async fn run_journal(
        &self,
        tenant_id: TenantId,
        id: RunId,
        after: u64,
        limit: u32,
    ) -> Result<Vec<JournalEntry>> {
        let found = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {JOURNAL_COLUMNS} FROM workflow_journal
             WHERE run_id = $1 AND seq > $2
               AND EXISTS (SELECT 1 FROM workflow_runs WHERE id = $1 AND tenant_id = $3)
             ORDER BY seq LIMIT $4"
        )))
        .bind(id.to_string())
        .bind(signed(after))
        .bind(tenant_id.to_string())
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(sql)?;
        rows(found, journal_row)
    }

    async fn get_dead_letter(
        &self,
        tenant_id: TenantId,
        id: DeadLetterId,
    ) -> Result<Option<DeadLetter>> {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {DEAD_LETTER_COLUMNS} FROM workflow_dead_letters WHERE id = $1 AND tenant_id = $2"
        )))
        .bind(id.to_string())
        .bind(tenant_id.to_string())
        .fetch_optional(&self.pool)
        .await
        .map_err(sql)?
        .as_ref()
        .map(dead_letter_row)
        .transpose()
    }

    async fn list_dead_letters(
        &self,
        tenant_id: TenantId,
        status: Option<DeadLetterStatus>,
        run_id: Option<RunId>,
        after: Option<DeadLetterId>,
        limit: u32,
    ) -> Result<Vec<DeadLetter>> {
        let found = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {DEAD_LETTER_COLUMNS} FROM workflow_dead_letters
             WHERE tenant_id = $1
               AND ($2::TEXT IS NULL OR status = $2)
               AND ($3::TEXT IS NULL OR run_id = $3)
               AND ($4::TEXT IS NULL OR id > $4)
             ORDER BY id LIMIT $5"
        )))
        .bind(tenant_id.to_string())
        .bind(status.map(DeadLetterStatus::as_str))
        .bind(run_id.map(|id| id.to_string()))
        .bind(after.map(|id| id.to_string()))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(sql)?;
        rows(found, dead_letter_row)
    }

    async fn create_schedule(&self, schedule: &Schedule) -> Result<()> {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO workflow_schedules ({SCHEDULE_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
        )))
        .bind(schedule.id.to_string())
        .bind(schedule.tenant_id.to_string())
        .bind(&schedule.definition)
        .bind(&schedule.cron)
        .bind(&schedule.input)
        .bind(schedule.next_fire_at.unix_micros())
        .bind(&schedule.created_by)
        .bind(schedule.created_at.unix_micros())
        .execute(&self.pool)
        .await
        .map_err(sql_or_not_found)?;
        Ok(())
    }

    async fn list_schedules(&self, tenant_id: TenantId) -> Result<Vec<Schedule>> {
        let found = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {SCHEDULE_COLUMNS} FROM workflow_schedules WHERE tenant_id = $1 ORDER BY id"
        )))
        .bind(tenant_id.to_string())
        .fetch_all(&self.pool)
        .await
        .map_err(sql)?;
        rows(found, schedule_row)
    }

    async fn delete_schedule(&self, tenant_id: TenantId, id: ScheduleId) -> Result<()> {
        let deleted =
            sqlx::query("DELETE FROM workflow_schedules WHERE id = $1 AND tenant_id = $2")
                .bind(id.to_string())
                .bind(tenant_id.to_string())
                .execute(&self.pool)
                .await
                .map_err(sql)?;
        if deleted.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    async fn due_schedules(&self, now: Timestamp, limit: u32) -> Result<Vec<Schedule>> {
        let found = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {SCHEDULE_COLUMNS} FROM workflow_schedules
             WHERE next_fire_at <= $1 ORDER BY next_fire_at, id LIMIT $2"
        )))
        .bind(now.unix_micros())
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(sql)?;
        rows(found, schedule_row)
    }

    async fn advance_schedule(
        &self,
        id: ScheduleId,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<bool> {
        let moved = sqlx::query(
            "UPDATE workflow_schedules SET next_fire_at = $3 WHERE id = $1 AND next_fire_at = $2",
        )
        .bind(id.to_string())
        .bind(from.unix_micros())
        .bind(to.unix_micros())
        .execute(&self.pool)
        .await
        .map_err(sql)?;
        Ok(moved.rows_affected() == 1)
    }
}
