//! The `processed_events` table: one row per Stripe event already applied.
//!
//! The primary key `(event_id, account_id)` turns a redelivery into a no-op:
//! the second insert of an event conflicts and inserts nothing. The platform's
//! own account is stored as `''`, because a primary key column cannot be
//! NULL.

use citadel_core::ids::AccountId;
use citadel_core::store::{EventRecord, StoreError};
use sqlx::PgExecutor;

use crate::error::database;

/// The `account_id` stored for the platform's own account.
const PLATFORM_ACCOUNT: &str = "";

/// Records an event; returns `false` when it was recorded before.
///
/// While another transaction holds an uncommitted insert of the same event,
/// this insert waits for it to end: it returns `false` after a commit and
/// inserts after a rollback.
#[tracing::instrument(
    name = "citadel.pg.insert_event",
    level = "debug",
    skip_all,
    fields(event.id = %event.event_id)
)]
pub(crate) async fn insert(
    executor: impl PgExecutor<'_>,
    event: &EventRecord,
) -> Result<bool, StoreError> {
    const SQL: &str = "
        INSERT INTO processed_events (event_id, account_id, event_type, created_at, payload)
        VALUES ($1, $2, $3, $4, $5)
        ON CONFLICT DO NOTHING";

    let account = event
        .account
        .as_ref()
        .map_or(PLATFORM_ACCOUNT, AccountId::as_str);
    let result = sqlx::query(SQL)
        .bind(event.event_id.as_str())
        .bind(account)
        .bind(&event.event_type)
        .bind(event.created)
        .bind(&event.payload)
        .execute(executor)
        .await
        .map_err(database("recording an event"))?;
    Ok(result.rows_affected() == 1)
}
