//! The `processed_events` table: one row per Stripe event already applied.
//!
//! The primary key `(event_id, account_id)` turns a redelivery into a no-op:
//! the second insert of an event conflicts and inserts nothing. The platform's
//! own account is stored as `''`, because a primary key column cannot be
//! NULL.

use citadel_core::ids::{AccountId, InvoiceId, MerchantId};
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
        INSERT INTO processed_events
            (event_id, account_id, event_type, created_at, invoice_id, payload)
        VALUES ($1, $2, $3, $4, $5, $6)
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
        .bind(event.invoice_id.as_ref().map(InvoiceId::as_str))
        .bind(&event.payload)
        .execute(executor)
        .await
        .map_err(database("recording an event"))?;
    Ok(result.rows_affected() == 1)
}

/// Returns the type of the newest recorded event that settled an invoice.
pub(crate) async fn settlement(
    executor: impl PgExecutor<'_>,
    account: Option<&AccountId>,
    invoice: &InvoiceId,
) -> Result<Option<String>, StoreError> {
    const SQL: &str = "
        SELECT event_type
        FROM processed_events
        WHERE account_id = $1
          AND invoice_id = $2
          AND event_type IN ('invoice.paid', 'invoice.payment_succeeded',
                             'invoice.voided', 'invoice.marked_uncollectible')
        ORDER BY created_at DESC
        LIMIT 1";

    let account = account.map_or(PLATFORM_ACCOUNT, AccountId::as_str);
    sqlx::query_scalar(SQL)
        .bind(account)
        .bind(invoice.as_str())
        .fetch_optional(executor)
        .await
        .map_err(database("looking up an invoice's settlement"))
}

/// Takes a transaction-level advisory lock on one merchant's invoice, so
/// events about the same invoice are applied one at a time.
pub(crate) async fn lock_invoice(
    executor: impl PgExecutor<'_>,
    merchant: MerchantId,
    invoice: &InvoiceId,
) -> Result<(), StoreError> {
    const SQL: &str = "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))";

    sqlx::query(SQL)
        .bind(format!("citadel-invoice:{merchant}:{invoice}"))
        .execute(executor)
        .await
        .map_err(database("locking an invoice"))?;
    Ok(())
}
