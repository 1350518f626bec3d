//! Pruning: deletes finished rows in bounded batches, so the hot tables stay
//! small and each statement holds few locks.

use std::time::Duration;

use citadel_core::queue::{PruneReport, Retention};
use citadel_core::store::StoreError;
use sqlx::PgPool;

use crate::error::database;

/// Deletes completed and cancelled tasks, processed events and workers
/// older than `retention`, one batch per statement.
pub(crate) async fn prune(pool: &PgPool, retention: &Retention) -> Result<PruneReport, StoreError> {
    const TASKS: &str = "
        DELETE FROM scheduled_tasks
        WHERE id IN (
            SELECT id FROM scheduled_tasks
            WHERE status IN ('completed', 'cancelled')
              AND updated_at < now() - make_interval(secs => $1)
            LIMIT $2
        )";
    const EVENTS: &str = "
        DELETE FROM processed_events
        WHERE ctid = ANY(ARRAY(
            SELECT ctid FROM processed_events
            WHERE received_at < now() - make_interval(secs => $1)
            LIMIT $2
        ))";
    const WORKERS: &str = "
        DELETE FROM workers
        WHERE id IN (
            SELECT id FROM workers
            WHERE heartbeat_at < now() - make_interval(secs => $1)
            LIMIT $2
        )";

    let batch_size = i64::from(retention.batch_size.max(1));
    let report = PruneReport {
        tasks: delete_in_batches(
            pool,
            TASKS,
            retention.finished_tasks,
            batch_size,
            "pruning tasks",
        )
        .await?,
        events: delete_in_batches(
            pool,
            EVENTS,
            retention.processed_events,
            batch_size,
            "pruning processed events",
        )
        .await?,
        workers: delete_in_batches(
            pool,
            WORKERS,
            retention.workers,
            batch_size,
            "pruning workers",
        )
        .await?,
    };
    tracing::info!(
        pruned.tasks = report.tasks,
        pruned.events = report.events,
        pruned.workers = report.workers,
        "pruned old rows"
    );
    Ok(report)
}

/// Runs a `DELETE` of at most `batch_size` rows older than `age` until it
/// deletes fewer than a whole batch; returns the rows deleted in total.
async fn delete_in_batches(
    pool: &PgPool,
    sql: &'static str,
    age: Duration,
    batch_size: i64,
    operation: &'static str,
) -> Result<u64, StoreError> {
    let mut total = 0;
    loop {
        let deleted = sqlx::query(sql)
            .bind(age.as_secs_f64())
            .bind(batch_size)
            .execute(pool)
            .await
            .map_err(database(operation))?
            .rows_affected();
        total += deleted;
        if deleted < u64::try_from(batch_size).unwrap_or(u64::MAX) {
            return Ok(total);
        }
    }
}
