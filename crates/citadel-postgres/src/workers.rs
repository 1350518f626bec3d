//! The `workers` table: one row per start of a worker process.

use chrono::{DateTime, Utc};
use citadel_core::queue::WorkerInfo;
use citadel_core::store::StoreError;
use sqlx::PgExecutor;
use uuid::Uuid;

use crate::error::database;

/// Inserts the row of a worker's start.
pub(crate) async fn register(
    executor: impl PgExecutor<'_>,
    id: Uuid,
    name: &str,
) -> Result<(), StoreError> {
    const SQL: &str = "INSERT INTO workers (id, name) VALUES ($1, $2)";

    sqlx::query(SQL)
        .bind(id)
        .bind(name)
        .execute(executor)
        .await
        .map_err(database("registering a worker"))?;
    Ok(())
}

/// Sets a worker's `heartbeat_at` to now.
pub(crate) async fn heartbeat(executor: impl PgExecutor<'_>, id: Uuid) -> Result<(), StoreError> {
    const SQL: &str = "UPDATE workers SET heartbeat_at = now() WHERE id = $1";

    sqlx::query(SQL)
        .bind(id)
        .execute(executor)
        .await
        .map_err(database("recording a worker's heartbeat"))?;
    Ok(())
}

/// Sets a worker's `stopped_at` to now.
pub(crate) async fn stop(executor: impl PgExecutor<'_>, id: Uuid) -> Result<(), StoreError> {
    const SQL: &str = "UPDATE workers SET stopped_at = now(), heartbeat_at = now() WHERE id = $1";

    sqlx::query(SQL)
        .bind(id)
        .execute(executor)
        .await
        .map_err(database("recording a worker's stop"))?;
    Ok(())
}

/// Lists workers, newest start first.
pub(crate) async fn list(executor: impl PgExecutor<'_>) -> Result<Vec<WorkerInfo>, StoreError> {
    const SQL: &str = "
        SELECT id, name, started_at, heartbeat_at, stopped_at
        FROM workers
        ORDER BY started_at DESC, id";

    type Row = (
        Uuid,
        String,
        DateTime<Utc>,
        DateTime<Utc>,
        Option<DateTime<Utc>>,
    );
    let rows: Vec<Row> = sqlx::query_as(SQL)
        .fetch_all(executor)
        .await
        .map_err(database("listing workers"))?;
    Ok(rows
        .into_iter()
        .map(
            |(id, name, started_at, heartbeat_at, stopped_at)| WorkerInfo {
                id,
                name,
                started_at,
                heartbeat_at,
                stopped_at,
            },
        )
        .collect())
}
