//! The `scheduled_tasks` table: the queue.
//!
//! A task is inserted `pending`, claimed into `running` with a lease by
//! [`claim`], and finished by [`finish`] only while the lease is still its
//! own. Every move of a running task is an `UPDATE` guarded by
//! `status = 'running' AND lease_token = …`, so a worker whose lease was
//! taken over changes nothing. A task whose lease expired is handed back by
//! [`rescue_expired`] before each claim.

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
            (merchant_id, kind, invoice_id, payload, status, run_at, max_attempts, dedupe_key)
        VALUES ($1, $2, $3, $4, 'pending', $5, $6, $7)
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
        .fetch_optional(executor)
        .await
        .map_err(database("inserting a task"))?;
    Ok(id.map(TaskId::new))
}

/// The claim statement, as a macro so that [`EXPLAIN_CLAIM`] can prefix it
/// at compile time.
///
/// The `MATERIALIZED` CTE picks and locks the due tasks once, skipping rows
/// that another claimer has locked, so concurrent claimers do not wait for
/// each other and cannot take the same task. A row that another claimer
/// changed after this statement's snapshot is checked again against the
/// `WHERE` clause once locked, so a task claimed and committed meanwhile is
/// no longer `pending` and drops out.
macro_rules! claim_sql {
    () => {
        "
        WITH due AS MATERIALIZED (
            SELECT t.id
            FROM scheduled_tasks t
            JOIN merchants m ON m.id = t.merchant_id
            WHERE t.status = 'pending'
              AND t.run_at <= now()
              AND t.kind = ANY($1)
              AND t.attempts < t.max_attempts
              AND m.status = 'active'
            ORDER BY t.run_at, t.id
            LIMIT $2
            FOR UPDATE OF t SKIP LOCKED
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
) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
    let kinds: Vec<&str> = request.kinds.iter().map(TaskKind::as_str).collect();
    sqlx::query(sql)
        .bind(kinds)
        .bind(i64::from(request.limit))
        .bind(request.worker_id.as_str())
        .bind(request.lease_duration.as_secs_f64())
}

/// Claims up to `request.limit` due pending tasks of active merchants,
/// oldest `run_at` first, in one statement.
///
/// NOTE: the order is global, so one merchant with a large backlog of due
/// tasks fills whole batches before later tasks of other merchants run. The
/// due tasks of a paused merchant stay in the pending index, and each claim
/// reads past them.
/// TODO: round-robin across merchants once a backlog can outlast a poll.
#[tracing::instrument(
    name = "citadel.pg.claim",
    level = "debug",
    skip_all,
    fields(worker.id = %request.worker_id, claim.limit = request.limit, claim.count)
)]
pub(crate) async fn claim(
    executor: impl PgExecutor<'_>,
    request: &ClaimRequest,
) -> Result<Vec<Task>, StoreError> {
    use sqlx::FromRow;

    let rows = claim_query(CLAIM, request)
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
    tasks.sort_by_key(|task| (task.run_at, task.id));
    tracing::Span::current().record("claim.count", tasks.len());
    Ok(tasks)
}

/// Returns the claim statement's query plan, one line per row of `EXPLAIN`.
pub(crate) async fn explain_claim(
    executor: impl PgExecutor<'_>,
    request: &ClaimRequest,
) -> Result<String, StoreError> {
    use sqlx::Row;

    let rows = claim_query(EXPLAIN_CLAIM, request)
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

/// Hands back running tasks whose lease expired: to `pending`, or to
/// `failed` when they used up their attempts. Returns how many.
///
/// Rows locked by a worker that is finishing them right now are skipped, so
/// a late but live worker still wins. Because no rescuer waits for a lock,
/// two rescuers cannot deadlock.
pub(crate) async fn rescue_expired(executor: impl PgExecutor<'_>) -> Result<u64, StoreError> {
    const SQL: &str = "
        WITH expired AS MATERIALIZED (
            SELECT id
            FROM scheduled_tasks
            WHERE status = 'running' AND lease_expires_at < now()
            ORDER BY lease_expires_at
            LIMIT 1000
            FOR UPDATE SKIP LOCKED
        )
        UPDATE scheduled_tasks t
        SET status = CASE WHEN t.attempts >= t.max_attempts THEN 'failed' ELSE 'pending' END,
            last_error = 'the lease of ' || t.lease_owner || ' expired before the task finished',
            lease_owner = NULL,
            lease_token = NULL,
            lease_expires_at = NULL,
            updated_at = now()
        FROM expired
        WHERE t.id = expired.id";

    let result = sqlx::query(SQL)
        .execute(executor)
        .await
        .map_err(database("handing back tasks with expired leases"))?;
    let rescued = result.rows_affected();
    if rescued > 0 {
        tracing::warn!(
            tasks.rescued = rescued,
            "handed back running tasks whose lease expired"
        );
    }
    Ok(rescued)
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
