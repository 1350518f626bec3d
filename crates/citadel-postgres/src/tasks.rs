//! The `scheduled_tasks` table: the queue.
//!
//! A task is inserted `pending`, claimed into `running` with a lease by
//! [`claim`], and finished by [`finish`] only while the lease is still its
//! own. Every move of a running task is an `UPDATE` guarded by
//! `status = 'running' AND lease_token = …`, so a worker whose lease was
//! taken over changes nothing. A heartbeat extends a held lease with
//! [`heartbeat`]. A task whose lease expired is found by [`expired_leases`]
//! and handed back by [`rescue`], which workers run on a timer.

use chrono::{DateTime, Utc};
use citadel_core::ids::{InvoiceId, MerchantId, TaskId};
use citadel_core::store::{ClaimRequest, StoreError, TaskCounts, TaskFilter};
use citadel_core::task::{Lease, NewTask, Task, TaskKind, TaskStatus, TaskUpdate};
use sqlx::PgExecutor;
use uuid::Uuid;

use crate::error::{database, invalid_row};

const TABLE: &str = "scheduled_tasks";

/// A `scheduled_tasks` row as stored.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct TaskRow {
    id: i64,
    merchant_id: i64,
    kind: String,
    invoice_id: Option<String>,
    payload: serde_json::Value,
    status: String,
    run_at: DateTime<Utc>,
    attempts: i32,
    max_attempts: i32,
    last_error: Option<String>,
    lease_owner: Option<String>,
    lease_token: Option<Uuid>,
    lease_expires_at: Option<DateTime<Utc>>,
    dedupe_key: Option<String>,
    priority: i16,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl TryFrom<TaskRow> for Task {
    type Error = StoreError;

    fn try_from(row: TaskRow) -> Result<Self, Self::Error> {
        let id = TaskId::new(row.id);
        let invalid = |message: String| invalid_row(TABLE, format!("task {id}: {message}"));
        let status = row
            .status
            .parse()
            .map_err(|err| invalid(format!("{err}")))?;
        let invoice_id = row
            .invoice_id
            .map(InvoiceId::parse)
            .transpose()
            .map_err(|err| invalid(format!("{err}")))?;
        let lease = match (row.lease_owner, row.lease_token, row.lease_expires_at) {
            (Some(owner), Some(token), Some(expires_at)) => Some(Lease {
                task_id: id,
                owner,
                token,
                expires_at,
            }),
            (None, None, None) => None,
            _ => {
                return Err(invalid(
                    "lease owner, token and expiry are partly set".into(),
                ));
            }
        };

        Ok(Task {
            id,
            merchant_id: MerchantId::new(row.merchant_id),
            kind: TaskKind::new(row.kind),
            invoice_id,
            payload: row.payload,
            status,
            run_at: row.run_at,
            attempts: row.attempts,
            max_attempts: row.max_attempts,
            last_error: row.last_error,
            lease,
            dedupe_key: row.dedupe_key,
            priority: row.priority,
            created_at: row.created_at,
            updated_at: row.updated_at,
        })
    }
}

pub(crate) fn into_tasks(rows: Vec<TaskRow>) -> Result<Vec<Task>, StoreError> {
    rows.into_iter().map(Task::try_from).collect()
}

/// Inserts a pending task; returns `None` when a live task of the merchant
/// has the same dedupe key.
pub(crate) async fn insert(
    executor: impl PgExecutor<'_>,
    task: &NewTask,
) -> Result<Option<TaskId>, StoreError> {
    const SQL: &str = "
        INSERT INTO scheduled_tasks
            (merchant_id, kind, invoice_id, payload, status, run_at, max_attempts, dedupe_key,
             priority)
        VALUES ($1, $2, $3, $4, 'pending', $5, $6, $7, $8)
        ON CONFLICT (merchant_id, dedupe_key) WHERE status IN ('pending', 'running')
        DO NOTHING
        RETURNING id";

    let id: Option<i64> = sqlx::query_scalar(SQL)
        .bind(task.merchant_id.get())
        .bind(task.kind.as_str())
        .bind(task.invoice_id.as_ref().map(InvoiceId::as_str))
        .bind(&task.payload)
        .bind(task.run_at)
        .bind(task.max_attempts)
        .bind(task.dedupe_key.as_deref())
        .bind(task.priority)
        .fetch_optional(executor)
        .await
        .map_err(database("inserting a task"))?;
    Ok(id.map(TaskId::new))
}

/// The claim statement, as a macro so that [`EXPLAIN_CLAIM`] can prefix it
/// at compile time.
///
/// It claims fairly across merchants in three steps:
///
/// 1. `heads` finds each active merchant with a claimable task (only the
///    merchant `$5` when it is not null) and counts its running tasks, which
///    gives its room under `max_running_tasks`.
/// 2. `ordered` gives each merchant with room a share of the batch: the
///    batch size divided by the number of such merchants, rounded up, and at
///    most its room. It puts the merchants with the fewest running tasks
///    first, then the one whose next task is the oldest.
/// 3. `due` walks that list and locks up to each merchant's share of its
///    tasks, highest priority first, then oldest `run_at`, skipping rows that
///    another claimer has locked, and stops once the batch is full.
///
/// Both probes walk the ten priority levels (9 down to 0) one at a time, so
/// that `run_at <= now()` bounds each index range scan of
/// `(merchant_id, priority, run_at)`: tasks that are due later are never
/// read, however many there are. A single scan ordered by priority would
/// read on through every future-dated task of a merchant whose due tasks
/// run out. The per-level scans can lock up to a share per level before the
/// final `LIMIT`; such extra locks last only until the statement commits.
///
/// So a merchant with a backlog gets its share of each batch and never the
/// whole of it while another merchant has a due task. The `MATERIALIZED` CTEs
/// keep the planner from folding the lock into the `UPDATE`, so the limit is
/// never exceeded. A row changed by another claimer after this statement's
/// snapshot is checked again against the `WHERE` clause once locked, so a task
/// claimed and committed meanwhile is no longer `pending` and drops out.
///
/// N.B.: the running count is read from the statement's snapshot, so claims
/// that commit at the same moment can together exceed a merchant's
/// `max_running_tasks`, by at most one batch per concurrent claimer.
macro_rules! claim_sql {
    () => {
        "
        WITH heads AS MATERIALIZED (
            SELECT m.id AS merchant_id,
                   head.run_at AS head_run_at,
                   running.count AS running,
                   CASE WHEN m.max_running_tasks IS NULL THEN $2::bigint
                        ELSE m.max_running_tasks - running.count
                   END AS room
            FROM merchants m
            CROSS JOIN LATERAL (
                SELECT min(first.run_at) AS run_at
                FROM generate_series(9, 0, -1) AS level (priority)
                CROSS JOIN LATERAL (
                    SELECT t.run_at
                    FROM scheduled_tasks t
                    WHERE t.merchant_id = m.id
                      AND t.status = 'pending'
                      AND t.priority = level.priority
                      AND t.run_at <= now()
                      AND t.kind = ANY($1)
                      AND t.attempts < t.max_attempts
                    ORDER BY t.run_at, t.id
                    LIMIT 1
                ) first
            ) head
            CROSS JOIN LATERAL (
                SELECT count(*) AS count
                FROM scheduled_tasks r
                WHERE r.merchant_id = m.id AND r.status = 'running'
            ) running
            WHERE m.status = 'active'
              AND ($5::bigint IS NULL OR m.id = $5)
              AND head.run_at IS NOT NULL
        ),
        ordered AS MATERIALIZED (
            SELECT h.merchant_id,
                   least(h.room, ceil($2::numeric / (SELECT count(*) FROM heads WHERE room > 0))::bigint)
                       AS share
            FROM heads h
            WHERE h.room > 0
            ORDER BY h.running, h.head_run_at, h.merchant_id
        ),
        due AS MATERIALIZED (
            SELECT picked.id
            FROM ordered o
            CROSS JOIN LATERAL (
                SELECT level_tasks.id
                FROM generate_series(9, 0, -1) AS level (priority)
                CROSS JOIN LATERAL (
                    SELECT t.id, t.run_at
                    FROM scheduled_tasks t
                    WHERE t.merchant_id = o.merchant_id
                      AND t.status = 'pending'
                      AND t.priority = level.priority
                      AND t.run_at <= now()
                      AND t.kind = ANY($1)
                      AND t.attempts < t.max_attempts
                    ORDER BY t.run_at, t.id
                    LIMIT o.share
                    FOR UPDATE OF t SKIP LOCKED
                ) level_tasks
                ORDER BY level.priority DESC, level_tasks.run_at, level_tasks.id
                LIMIT o.share
            ) picked
            LIMIT $2
        )
        UPDATE scheduled_tasks t
        SET status = 'running',
            attempts = t.attempts + 1,
            lease_owner = $3,
            lease_token = gen_random_uuid(),
            lease_expires_at = now() + make_interval(secs => $4),
            updated_at = now()
        FROM due
        WHERE t.id = due.id
        RETURNING t.*"
    };
}

const CLAIM: &str = claim_sql!();

/// The claim statement's plan, for checking that it reads the pending index.
const EXPLAIN_CLAIM: &str = concat!("EXPLAIN ", claim_sql!());

fn claim_query<'q>(
    sql: &'static str,
    request: &'q ClaimRequest,
    merchant: Option<MerchantId>,
) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
    let kinds: Vec<&str> = request.kinds.iter().map(TaskKind::as_str).collect();
    sqlx::query(sql)
        .bind(kinds)
        .bind(i64::from(request.limit))
        .bind(request.worker_id.as_str())
        .bind(request.lease_duration.as_secs_f64())
        .bind(merchant.map(MerchantId::get))
}

/// Claims up to `request.limit` due pending tasks of active merchants in
/// one statement, sharing the batch fairly across merchants (see
/// [`claim_sql`]).
///
/// NOTE: every claim probes the pending index once per priority level of
/// each active merchant, so its cost grows with the number of active
/// merchants.
#[tracing::instrument(
    name = "citadel.pg.claim",
    level = "debug",
    skip_all,
    fields(worker.id = %request.worker_id, claim.limit = request.limit, claim.count)
)]
pub(crate) async fn claim(
    executor: impl PgExecutor<'_>,
    request: &ClaimRequest,
    merchant: Option<MerchantId>,
) -> Result<Vec<Task>, StoreError> {
    use sqlx::FromRow;

    let rows = claim_query(CLAIM, request, merchant)
        .fetch_all(executor)
        .await
        .map_err(database("claiming tasks"))?;
    let rows = rows
        .iter()
        .map(TaskRow::from_row)
        .collect::<Result<Vec<_>, _>>()
        .map_err(database("reading claimed tasks"))?;

    // RETURNING gives rows in no set order.
    let mut tasks = into_tasks(rows)?;
    tasks.sort_by_key(|task| (std::cmp::Reverse(task.priority), task.run_at, task.id));
    tracing::Span::current().record("claim.count", tasks.len());
    Ok(tasks)
}

/// Returns the claim statement's query plan, one line per row of `EXPLAIN`.
pub(crate) async fn explain_claim(
    executor: impl PgExecutor<'_>,
    request: &ClaimRequest,
) -> Result<String, StoreError> {
    use sqlx::Row;

    let rows = claim_query(EXPLAIN_CLAIM, request, None)
        .fetch_all(executor)
        .await
        .map_err(database("explaining the claim"))?;
    let lines = rows
        .iter()
        .map(|row| row.try_get::<String, _>(0))
        .collect::<Result<Vec<_>, _>>()
        .map_err(database("reading the claim's plan"))?;
    Ok(lines.join("\n"))
}

/// The maximum number of tasks that one rescue hands back.
const RESCUE_BATCH: i64 = 1000;

/// Returns the ids of running tasks whose lease expired, oldest expiry
/// first, without locking them.
pub(crate) async fn expired_leases(
    executor: impl PgExecutor<'_>,
) -> Result<Vec<TaskId>, StoreError> {
    const SQL: &str = "
        SELECT id
        FROM scheduled_tasks
        WHERE status = 'running' AND lease_expires_at < now()
        ORDER BY lease_expires_at
        LIMIT $1";

    let ids: Vec<i64> = sqlx::query_scalar(SQL)
        .bind(RESCUE_BATCH)
        .fetch_all(executor)
        .await
        .map_err(database("finding tasks with expired leases"))?;
    Ok(ids.into_iter().map(TaskId::new).collect())
}

/// Hands back those of `ids` that are still running on an expired lease: to
/// `pending`, or to `failed` when they used up their attempts. Returns how
/// many.
///
/// The read that found `ids` may be stale by now, so the statement checks the
/// status and the expiry again on the locked row. It waits for a worker that
/// is finishing one of the tasks right now, and then reads the finished row,
/// so a task completed in between stays completed. Rows are locked in id
/// order, so two rescuers cannot deadlock.
pub(crate) async fn rescue(
    executor: impl PgExecutor<'_>,
    ids: &[TaskId],
) -> Result<u64, StoreError> {
    const SQL: &str = "
        WITH expired AS MATERIALIZED (
            SELECT id
            FROM scheduled_tasks
            WHERE id = ANY($1) AND status = 'running' AND lease_expires_at < now()
            ORDER BY id
            FOR UPDATE
        )
        UPDATE scheduled_tasks t
        SET status = CASE WHEN t.attempts >= t.max_attempts THEN 'failed' ELSE 'pending' END,
            last_error = 'the lease of worker ' || t.lease_owner || ' expired before the task finished',
            lease_owner = NULL,
            lease_token = NULL,
            lease_expires_at = NULL,
            updated_at = now()
        FROM expired
        WHERE t.id = expired.id AND t.status = 'running' AND t.lease_expires_at < now()";

    if ids.is_empty() {
        return Ok(0);
    }
    let ids: Vec<i64> = ids.iter().map(|id| id.get()).collect();
    let result = sqlx::query(SQL)
        .bind(ids)
        .execute(executor)
        .await
        .map_err(database("handing back tasks with expired leases"))?;
    Ok(result.rows_affected())
}

/// Extends the leases in `leases` that are still held to `lease_duration`
/// from now; returns the leases renewed, with their new expiry.
pub(crate) async fn heartbeat(
    executor: impl PgExecutor<'_>,
    leases: &[Lease],
    lease_duration: std::time::Duration,
) -> Result<Vec<Lease>, StoreError> {
    const SQL: &str = "
        UPDATE scheduled_tasks t
        SET lease_expires_at = now() + make_interval(secs => $3)
        FROM unnest($1::bigint[], $2::uuid[]) AS held (id, token)
        WHERE t.id = held.id AND t.status = 'running' AND t.lease_token = held.token
        RETURNING t.id, t.lease_owner, t.lease_token, t.lease_expires_at";

    if leases.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<i64> = leases.iter().map(|lease| lease.task_id.get()).collect();
    let tokens: Vec<Uuid> = leases.iter().map(|lease| lease.token).collect();
    let rows: Vec<(i64, String, Uuid, DateTime<Utc>)> = sqlx::query_as(SQL)
        .bind(ids)
        .bind(tokens)
        .bind(lease_duration.as_secs_f64())
        .fetch_all(executor)
        .await
        .map_err(database("extending task leases"))?;
    Ok(rows
        .into_iter()
        .map(|(id, owner, token, expires_at)| Lease {
            task_id: TaskId::new(id),
            owner,
            token,
            expires_at,
        })
        .collect())
}

/// Hands the tasks of `leases` that are still held back to `pending`, due
/// now; with `unstarted`, gives back the attempt their claim counted. Returns
/// how many. Sends a wake-up on `citadel_tasks` so that other workers claim
/// them at once.
pub(crate) async fn release(
    executor: impl PgExecutor<'_>,
    leases: &[Lease],
    unstarted: bool,
) -> Result<u64, StoreError> {
    const SQL: &str = "
        WITH released AS (
            UPDATE scheduled_tasks t
            SET status = 'pending',
                attempts = t.attempts - CASE WHEN $3 THEN 1 ELSE 0 END,
                last_error = CASE WHEN $3 THEN t.last_error
                                  ELSE 'worker ' || t.lease_owner || ' stopped before the task finished'
                             END,
                run_at = least(t.run_at, now()),
                lease_owner = NULL,
                lease_token = NULL,
                lease_expires_at = NULL,
                updated_at = now()
            FROM unnest($1::bigint[], $2::uuid[]) AS held (id, token)
            WHERE t.id = held.id AND t.status = 'running' AND t.lease_token = held.token
            RETURNING t.id
        )
        SELECT (SELECT count(*) FROM released),
               (SELECT count(*) FROM (SELECT pg_notify('citadel_tasks', '') FROM released LIMIT 1) n)";

    if leases.is_empty() {
        return Ok(0);
    }
    let ids: Vec<i64> = leases.iter().map(|lease| lease.task_id.get()).collect();
    let tokens: Vec<Uuid> = leases.iter().map(|lease| lease.token).collect();
    let (released, _notified): (i64, i64) = sqlx::query_as(SQL)
        .bind(ids)
        .bind(tokens)
        .bind(unstarted)
        .fetch_one(executor)
        .await
        .map_err(database("handing back claimed tasks"))?;
    Ok(u64::try_from(released).unwrap_or(0))
}

/// Applies `update` to a running task while `lease` is still its lease;
/// returns whether it did.
#[tracing::instrument(
    name = "citadel.pg.finish",
    level = "debug",
    skip_all,
    fields(task.id = lease.task_id.get(), task.status)
)]
pub(crate) async fn finish(
    executor: impl PgExecutor<'_>,
    lease: &Lease,
    update: &TaskUpdate,
) -> Result<bool, StoreError> {
    const SQL: &str = "
        UPDATE scheduled_tasks
        SET status = $3,
            run_at = coalesce($4, run_at),
            attempts = attempts - $6,
            last_error = coalesce($5, last_error),
            lease_owner = NULL,
            lease_token = NULL,
            lease_expires_at = NULL,
            updated_at = now()
        WHERE id = $1 AND status = 'running' AND lease_token = $2";

    let (status, run_at, error, refund) = match update {
        TaskUpdate::Complete => (TaskStatus::Completed, None, None, 0),
        TaskUpdate::Reschedule {
            run_at,
            error,
            refund_attempt,
        } => (
            TaskStatus::Pending,
            Some(*run_at),
            Some(error),
            i32::from(*refund_attempt),
        ),
        TaskUpdate::Fail { error } => (TaskStatus::Failed, None, Some(error), 0),
    };
    tracing::Span::current().record("task.status", status.as_str());

    let result = sqlx::query(SQL)
        .bind(lease.task_id.get())
        .bind(lease.token)
        .bind(status.as_str())
        .bind(run_at)
        .bind(error)
        .bind(refund)
        .execute(executor)
        .await
        .map_err(database("finishing a task"))?;
    Ok(result.rows_affected() == 1)
}

/// Cancels the pending retry tasks of an invoice; returns how many.
pub(crate) async fn cancel_pending_retries(
    executor: impl PgExecutor<'_>,
    merchant: MerchantId,
    invoice: &InvoiceId,
) -> Result<u64, StoreError> {
    const SQL: &str = "
        UPDATE scheduled_tasks
        SET status = 'cancelled', updated_at = now()
        WHERE merchant_id = $1 AND invoice_id = $2 AND status = 'pending' AND kind = $3";

    let result = sqlx::query(SQL)
        .bind(merchant.get())
        .bind(invoice.as_str())
        .bind(TaskKind::RETRY_PAYMENT)
        .execute(executor)
        .await
        .map_err(database("cancelling pending tasks"))?;
    Ok(result.rows_affected())
}

/// Returns a task by id.
pub(crate) async fn by_id(
    executor: impl PgExecutor<'_>,
    id: TaskId,
) -> Result<Option<Task>, StoreError> {
    const SQL: &str = "SELECT * FROM scheduled_tasks WHERE id = $1";

    let row: Option<TaskRow> = sqlx::query_as(SQL)
        .bind(id.get())
        .fetch_optional(executor)
        .await
        .map_err(database("reading a task"))?;
    row.map(Task::try_from).transpose()
}

/// Lists tasks newest first, one page at a time.
pub(crate) async fn list(
    executor: impl PgExecutor<'_>,
    filter: &TaskFilter,
) -> Result<Vec<Task>, StoreError> {
    const SQL: &str = "
        SELECT * FROM scheduled_tasks
        WHERE ($1::text IS NULL OR status = $1)
          AND ($2::bigint IS NULL OR merchant_id = $2)
          AND ($3::bigint IS NULL OR id < $3)
        ORDER BY id DESC
        LIMIT $4";

    let rows: Vec<TaskRow> = sqlx::query_as(SQL)
        .bind(filter.status.map(TaskStatus::as_str))
        .bind(filter.merchant_id.map(MerchantId::get))
        .bind(filter.before.map(TaskId::get))
        .bind(crate::page_size(filter.limit))
        .fetch_all(executor)
        .await
        .map_err(database("listing tasks"))?;
    into_tasks(rows)
}

/// Counts tasks per status.
pub(crate) async fn counts(executor: impl PgExecutor<'_>) -> Result<TaskCounts, StoreError> {
    const SQL: &str = "SELECT status, count(*) FROM scheduled_tasks GROUP BY status";

    let rows: Vec<(String, i64)> = sqlx::query_as(SQL)
        .fetch_all(executor)
        .await
        .map_err(database("counting tasks"))?;
    counts_from_rows(rows)
}

/// Builds the counts from `(status, count)` rows.
pub(crate) fn counts_from_rows(rows: Vec<(String, i64)>) -> Result<TaskCounts, StoreError> {
    let mut counts = TaskCounts::default();
    for (status, count) in rows {
        let status: TaskStatus = status
            .parse()
            .map_err(|err| invalid_row(TABLE, format!("{err}")))?;
        let slot = match status {
            TaskStatus::Pending => &mut counts.pending,
            TaskStatus::Running => &mut counts.running,
            TaskStatus::Completed => &mut counts.completed,
            TaskStatus::Failed => &mut counts.failed,
            TaskStatus::Cancelled => &mut counts.cancelled,
        };
        *slot = count;
    }
    Ok(counts)
}

/// Returns the earliest `run_at` among the tasks a claim for `kinds` could
/// take: pending, with attempts left, of an active merchant.
pub(crate) async fn next_run_at(
    executor: impl PgExecutor<'_>,
    kinds: &[TaskKind],
) -> Result<Option<DateTime<Utc>>, StoreError> {
    const SQL: &str = "
        SELECT min(t.run_at)
        FROM scheduled_tasks t
        JOIN merchants m ON m.id = t.merchant_id
        WHERE t.status = 'pending'
          AND t.kind = ANY($1)
          AND t.attempts < t.max_attempts
          AND m.status = 'active'";

    let kinds: Vec<&str> = kinds.iter().map(TaskKind::as_str).collect();
    sqlx::query_scalar(SQL)
        .bind(kinds)
        .fetch_one(executor)
        .await
        .map_err(database("reading the next task's run time"))
}
