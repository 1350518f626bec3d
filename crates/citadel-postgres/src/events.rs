//! The `processed_events` table: one row per Stripe event already applied.
//!
//! The primary key `(event_id, account_id)` turns a redelivery into a no-op:
//! the second insert of an event conflicts and inserts nothing. The platform's
//! own account is stored as `''`, because a primary key column cannot be
//! NULL.

use chrono::{DateTime, Utc};
use citadel_core::ids::{AccountId, InvoiceId, MerchantId, SubscriptionId};
use citadel_core::store::{EventRecord, StoreError};
use sqlx::PgExecutor;

use crate::error::database;

/// The `account_id` stored for the platform's own account.
const PLATFORM_ACCOUNT: &str = "";

/// Returns the `account_id` stored for an event's account.
fn account_key(account: Option<&AccountId>) -> &str {
    account.map_or(PLATFORM_ACCOUNT, AccountId::as_str)
}

/// Records an event; returns `false` when it was recorded before.
///
/// While another transaction has an uncommitted insert of the same event,
/// this insert waits for it to end. It returns `false` after a commit and
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
            (event_id, account_id, event_type, created_at, invoice_id, subscription_id, payload)
        VALUES ($1, $2, $3, $4, $5, $6, $7)
        ON CONFLICT DO NOTHING";

    let account = account_key(event.account.as_ref());
    let result = sqlx::query(SQL)
        .bind(event.event_id.as_str())
        .bind(account)
        .bind(&event.event_type)
        .bind(event.created)
        .bind(event.invoice_id.as_ref().map(InvoiceId::as_str))
        .bind(event.subscription_id.as_ref().map(SubscriptionId::as_str))
        .bind(storable(&event.payload).as_ref())
        .execute(executor)
        .await
        .map_err(database("recording an event"))?;
    Ok(result.rows_affected() == 1)
}

/// Returns `payload` with each NUL character (`\u0000`) in its strings and
/// keys replaced by U+FFFD. JSON allows NUL and `jsonb` rejects it, so a
/// signed event holding one would otherwise fail to record on every
/// redelivery. Only the stored copy changes, because the engine acts on the
/// parsed fields.
fn storable(payload: &serde_json::Value) -> std::borrow::Cow<'_, serde_json::Value> {
    fn has_nul(value: &serde_json::Value) -> bool {
        match value {
            serde_json::Value::String(text) => text.contains('\0'),
            serde_json::Value::Array(items) => items.iter().any(has_nul),
            serde_json::Value::Object(fields) => fields
                .iter()
                .any(|(key, value)| key.contains('\0') || has_nul(value)),
            _ => false,
        }
    }
    fn replace_nul(value: &serde_json::Value) -> serde_json::Value {
        match value {
            serde_json::Value::String(text) => text.replace('\0', "\u{fffd}").into(),
            serde_json::Value::Array(items) => items.iter().map(replace_nul).collect(),
            serde_json::Value::Object(fields) => fields
                .iter()
                .map(|(key, value)| (key.replace('\0', "\u{fffd}"), replace_nul(value)))
                .collect(),
            other => other.clone(),
        }
    }
    if has_nul(payload) {
        std::borrow::Cow::Owned(replace_nul(payload))
    } else {
        std::borrow::Cow::Borrowed(payload)
    }
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
                             'invoice.voided', 'invoice.marked_uncollectible',
                             'invoice.deleted')
        ORDER BY created_at DESC
        LIMIT 1";

    let account = account_key(account);
    sqlx::query_scalar(SQL)
        .bind(account)
        .bind(invoice.as_str())
        .fetch_optional(executor)
        .await
        .map_err(database("looking up an invoice's settlement"))
}

/// Returns whether an `invoice.payment_failed` of the invoice was recorded at
/// or after `since`.
pub(crate) async fn failure_since(
    executor: impl PgExecutor<'_>,
    account: Option<&AccountId>,
    invoice: &InvoiceId,
    since: DateTime<Utc>,
) -> Result<bool, StoreError> {
    const SQL: &str = "
        SELECT EXISTS (
            SELECT 1
            FROM processed_events
            WHERE account_id = $1
              AND invoice_id = $2
              AND event_type = 'invoice.payment_failed'
              AND received_at >= $3
        )";

    let account = account_key(account);
    sqlx::query_scalar(SQL)
        .bind(account)
        .bind(invoice.as_str())
        .bind(since)
        .fetch_one(executor)
        .await
        .map_err(database("looking up an invoice's recent failures"))
}

/// Returns whether a `customer.subscription.deleted` of the subscription was
/// recorded.
pub(crate) async fn subscription_deleted(
    executor: impl PgExecutor<'_>,
    account: Option<&AccountId>,
    subscription: &SubscriptionId,
) -> Result<bool, StoreError> {
    const SQL: &str = "
        SELECT EXISTS (
            SELECT 1
            FROM processed_events
            WHERE account_id = $1
              AND subscription_id = $2
              AND event_type = 'customer.subscription.deleted'
        )";

    let account = account_key(account);
    sqlx::query_scalar(SQL)
        .bind(account)
        .bind(subscription.as_str())
        .fetch_one(executor)
        .await
        .map_err(database("looking up a subscription's deletion"))
}

/// Takes a transaction-level advisory lock on one merchant's invoice, so
/// events about the same invoice are applied one at a time.
pub(crate) async fn lock_invoice(
    executor: impl PgExecutor<'_>,
    merchant: MerchantId,
    invoice: &InvoiceId,
) -> Result<(), StoreError> {
    advisory_lock(executor, format!("citadel-invoice:{merchant}:{invoice}")).await
}

/// Takes a transaction-level advisory lock on one merchant's subscription.
pub(crate) async fn lock_subscription(
    executor: impl PgExecutor<'_>,
    merchant: MerchantId,
    subscription: &SubscriptionId,
) -> Result<(), StoreError> {
    advisory_lock(
        executor,
        format!("citadel-subscription:{merchant}:{subscription}"),
    )
    .await
}

/// Waits for and takes the advisory lock named by `key` until the
/// transaction ends. Two keys can hash alike, which only makes unrelated
/// events wait for each other.
pub(crate) async fn advisory_lock(
    executor: impl PgExecutor<'_>,
    key: String,
) -> Result<(), StoreError> {
    const SQL: &str = "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))";

    sqlx::query(SQL)
        .bind(key)
        .execute(executor)
        .await
        .map_err(database("taking an advisory lock"))?;
    Ok(())
}
