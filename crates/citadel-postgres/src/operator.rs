//! The statements behind the operator API: scoped task changes, merchant
//! tokens and updates, and the health checks.
//!
//! Each statement that takes a `merchant` restricts itself with
//! `$n::bigint IS NULL OR merchant_id = $n`, so a merchant's call can never
//! read or change another merchant's row.

use chrono::{DateTime, Utc};
use citadel_core::ids::{MerchantId, TaskId};
use citadel_core::merchant::{Merchant, NewMerchant};
use citadel_core::operator::MerchantUpdate;
use citadel_core::operator::token::TokenHash;
use citadel_core::store::{ClaimRequest, StoreError, TaskChange};
use citadel_core::task::{Task, TaskStatus};
use sqlx::{PgExecutor, PgPool};

use crate::error::{database, invalid_row};
use crate::merchants::{self, MerchantRow};
use crate::store::MIGRATOR;
use crate::tasks::{self, TaskRow};

/// The partial unique index on live tasks' dedupe keys.
const LIVE_DEDUPE_KEY: &str = "scheduled_tasks_live_dedupe_key";

/// Registers a merchant and its token hash in one transaction.
pub(crate) async fn create_merchant_with_token(
    pool: &PgPool,
    merchant: &NewMerchant,
    token_hash: &TokenHash,
) -> Result<Merchant, StoreError> {
    const SQL: &str = "INSERT INTO merchant_tokens (token_hash, merchant_id) VALUES ($1, $2)";

    let mut tx = pool
        .begin()
        .await
        .map_err(database("starting a transaction"))?;
    let created = merchants::insert(&mut *tx, merchant).await?;
    sqlx::query(SQL)
        .bind(token_hash.as_bytes().as_slice())
        .bind(created.id.get())
        .execute(&mut *tx)
        .await
        .map_err(database("storing a merchant token"))?;
    tx.commit()
        .await
        .map_err(database("committing a new merchant"))?;
    Ok(created)
}

/// Returns the merchant of a token hash.
pub(crate) async fn merchant_by_token(
    executor: impl PgExecutor<'_>,
    token_hash: &TokenHash,
) -> Result<Option<Merchant>, StoreError> {
    const SQL: &str = "
        SELECT m.* FROM merchants m
        JOIN merchant_tokens t ON t.merchant_id = m.id
        WHERE t.token_hash = $1";

    let row: Option<MerchantRow> = sqlx::query_as(SQL)
        .bind(token_hash.as_bytes().as_slice())
        .fetch_optional(executor)
        .await
        .map_err(database("looking up a merchant token"))?;
    row.map(Merchant::try_from).transpose()
}

/// Lists merchants by id after a cursor.
pub(crate) async fn list_merchants_page(
    executor: impl PgExecutor<'_>,
    after: Option<MerchantId>,
    limit: u32,
) -> Result<Vec<Merchant>, StoreError> {
    const SQL: &str = "
        SELECT * FROM merchants
        WHERE $1::bigint IS NULL OR id > $1
        ORDER BY id
        LIMIT $2";

    let rows: Vec<MerchantRow> = sqlx::query_as(SQL)
        .bind(after.map(MerchantId::get))
        .bind(crate::page_size(Some(limit)))
        .fetch_all(executor)
        .await
        .map_err(database("listing merchants"))?;
    rows.into_iter().map(Merchant::try_from).collect()
}

/// Changes a merchant's policy and status where set.
pub(crate) async fn update_merchant(
    executor: impl PgExecutor<'_>,
    id: MerchantId,
    update: &MerchantUpdate,
) -> Result<Option<Merchant>, StoreError> {
    const SQL: &str = "
        UPDATE merchants
        SET policy = coalesce($2, policy),
            status = coalesce($3, status)
        WHERE id = $1
        RETURNING *";

    let policy = update
        .policy
        .as_ref()
        .map(serde_json::to_value)
        .transpose()
        .map_err(|err| {
            invalid_row(
                "merchants",
                format!("policy does not serialize to JSON: {err}"),
            )
        })?;
    let row: Option<MerchantRow> = sqlx::query_as(SQL)
        .bind(id.get())
        .bind(policy)
        .bind(update.status.map(|status| status.as_str()))
        .fetch_optional(executor)
        .await
        .map_err(database("updating a merchant"))?;
    row.map(Merchant::try_from).transpose()
}

/// Counts tasks per status, of one merchant or of all.
pub(crate) async fn task_counts_of(
    executor: impl PgExecutor<'_>,
    merchant: Option<MerchantId>,
) -> Result<citadel_core::store::TaskCounts, StoreError> {
    const SQL: &str = "
        SELECT status, count(*) FROM scheduled_tasks
        WHERE $1::bigint IS NULL OR merchant_id = $1
        GROUP BY status";

    let rows: Vec<(String, i64)> = sqlx::query_as(SQL)
        .bind(merchant.map(MerchantId::get))
        .fetch_all(executor)
        .await
        .map_err(database("counting tasks"))?;
    tasks::counts_from_rows(rows)
}

/// Reads a task within the merchant restriction, to explain why a guarded
/// change matched no row.
async fn scoped_task(
    pool: &PgPool,
    id: TaskId,
    merchant: Option<MerchantId>,
) -> Result<Option<Task>, StoreError> {
    Ok(tasks::by_id(pool, id)
        .await?
        .filter(|task| merchant.is_none_or(|merchant| task.merchant_id == merchant)))
}

/// Sends a failed task back to pending, due now with no attempts used.
///
/// The `NOT EXISTS` keeps the retried task from becoming a second live task
/// with its dedupe key. A concurrent insert of the same key that commits in
/// between is caught by the unique index instead.
pub(crate) async fn retry_failed_task(
    pool: &PgPool,
    id: TaskId,
    merchant: Option<MerchantId>,
) -> Result<TaskChange, StoreError> {
    const SQL: &str = "
        UPDATE scheduled_tasks t
        SET status = 'pending', attempts = 0, run_at = now(), updated_at = now()
        WHERE t.id = $1
          AND ($2::bigint IS NULL OR t.merchant_id = $2)
          AND t.status = 'failed'
          AND (t.dedupe_key IS NULL OR NOT EXISTS (
              SELECT 1 FROM scheduled_tasks live
              WHERE live.merchant_id = t.merchant_id
                AND live.dedupe_key = t.dedupe_key
                AND live.status IN ('pending', 'running')))
        RETURNING t.*";

    let result = sqlx::query_as::<_, TaskRow>(SQL)
        .bind(id.get())
        .bind(merchant.map(MerchantId::get))
        .fetch_optional(pool)
        .await;
    let row = match result {
        Ok(row) => row,
        Err(err) if is_live_dedupe_violation(&err) => None,
        Err(err) => return Err(database("retrying a failed task")(err)),
    };
    if let Some(row) = row {
        return Ok(TaskChange::Changed(Box::new(Task::try_from(row)?)));
    }

    Ok(match scoped_task(pool, id, merchant).await? {
        None => TaskChange::NotFound,
        Some(task) if task.status != TaskStatus::Failed => TaskChange::WrongStatus(task.status),
        Some(task) => TaskChange::DuplicateDedupeKey(task.dedupe_key.unwrap_or_default()),
    })
}

fn is_live_dedupe_violation(err: &sqlx::Error) -> bool {
    err.as_database_error()
        .is_some_and(|db| db.is_unique_violation() && db.constraint() == Some(LIVE_DEDUPE_KEY))
}

/// Deletes a task that is not running.
pub(crate) async fn delete_task(
    pool: &PgPool,
    id: TaskId,
    merchant: Option<MerchantId>,
) -> Result<TaskChange, StoreError> {
    const SQL: &str = "
        DELETE FROM scheduled_tasks
        WHERE id = $1
          AND ($2::bigint IS NULL OR merchant_id = $2)
          AND status <> 'running'
        RETURNING *";

    let row: Option<TaskRow> = sqlx::query_as(SQL)
        .bind(id.get())
        .bind(merchant.map(MerchantId::get))
        .fetch_optional(pool)
        .await
        .map_err(database("deleting a task"))?;
    if let Some(row) = row {
        return Ok(TaskChange::Changed(Box::new(Task::try_from(row)?)));
    }
    Ok(match scoped_task(pool, id, merchant).await? {
        None => TaskChange::NotFound,
        Some(task) => TaskChange::WrongStatus(task.status),
    })
}

/// Deletes completed tasks, of one merchant or of all.
pub(crate) async fn delete_completed(
    executor: impl PgExecutor<'_>,
    merchant: Option<MerchantId>,
) -> Result<u64, StoreError> {
    const SQL: &str = "
        DELETE FROM scheduled_tasks
        WHERE status = 'completed' AND ($1::bigint IS NULL OR merchant_id = $1)";

    let result = sqlx::query(SQL)
        .bind(merchant.map(MerchantId::get))
        .execute(executor)
        .await
        .map_err(database("deleting completed tasks"))?;
    Ok(result.rows_affected())
}

/// Claims due tasks of one active merchant with the main claim statement.
pub(crate) async fn claim_merchant_tasks(
    pool: &PgPool,
    request: &ClaimRequest,
    merchant: MerchantId,
) -> Result<Vec<Task>, StoreError> {
    tasks::claim(pool, request, Some(merchant)).await
}

/// Returns the versions of the embedded migrations the database has not
/// applied successfully; all of them when it was never migrated.
pub(crate) async fn pending_migrations(pool: &PgPool) -> Result<Vec<i64>, StoreError> {
    const EXISTS: &str = "SELECT to_regclass('_sqlx_migrations') IS NOT NULL";
    const APPLIED: &str = "SELECT version FROM _sqlx_migrations WHERE success";

    let exists: bool = sqlx::query_scalar(EXISTS)
        .fetch_one(pool)
        .await
        .map_err(database("checking the migrations table"))?;
    let applied: Vec<i64> = if exists {
        sqlx::query_scalar(APPLIED)
            .fetch_all(pool)
            .await
            .map_err(database("reading applied migrations"))?
    } else {
        Vec::new()
    };
    Ok(missing_versions(&applied))
}

/// Returns the earliest `run_at` of a due pending task.
pub(crate) async fn oldest_due_run_at(
    executor: impl PgExecutor<'_>,
) -> Result<Option<DateTime<Utc>>, StoreError> {
    const SQL: &str = "
        SELECT min(run_at) FROM scheduled_tasks
        WHERE status = 'pending' AND run_at <= now()";

    sqlx::query_scalar(SQL)
        .fetch_one(executor)
        .await
        .map_err(database("reading the oldest due task"))
}

/// Returns the versions embedded in this build that `applied` lacks.
pub(crate) fn missing_versions(applied: &[i64]) -> Vec<i64> {
    MIGRATOR
        .iter()
        .map(|migration| migration.version)
        .filter(|version| !applied.contains(version))
        .collect()
}
