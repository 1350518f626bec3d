//! Card network caps: the `card_attempts` table and the card fingerprint of
//! each recovery (`invoice_recoveries.card_fingerprint`).
//!
//! The fingerprint is a card detail, so no function here logs it, and errors
//! name the invoice, never the card.

use chrono::{DateTime, Utc};
use citadel_core::ids::{InvoiceId, MerchantId};
use citadel_core::payment::CardFingerprint;
use citadel_core::store::{CardAttempt, StoreError};
use sqlx::PgExecutor;

use crate::error::{database, invalid_row};
use crate::events::advisory_lock;

const TABLE: &str = "card_attempts";

/// A `card_attempts` row as stored.
#[derive(sqlx::FromRow)]
struct AttemptRow {
    fingerprint: String,
    merchant_id: i64,
    invoice_id: String,
    attempt_key: String,
    attempted_at: DateTime<Utc>,
}

impl TryFrom<AttemptRow> for CardAttempt {
    type Error = StoreError;

    fn try_from(row: AttemptRow) -> Result<Self, Self::Error> {
        let invalid =
            |message: String| invalid_row(TABLE, format!("attempt {}: {message}", row.attempt_key));
        Ok(CardAttempt {
            fingerprint: CardFingerprint::new(row.fingerprint.clone())
                .ok_or_else(|| invalid("empty fingerprint".to_owned()))?,
            merchant_id: MerchantId::new(row.merchant_id),
            invoice_id: InvoiceId::parse(row.invoice_id.as_str())
                .map_err(|err| invalid(err.to_string()))?,
            attempt_key: row.attempt_key.clone(),
            attempted_at: row.attempted_at,
        })
    }
}

/// Stores the card of an invoice's recovery.
pub(crate) async fn set_recovery_card(
    executor: impl PgExecutor<'_>,
    merchant: MerchantId,
    invoice: &InvoiceId,
    fingerprint: &CardFingerprint,
) -> Result<(), StoreError> {
    const SQL: &str = "
        UPDATE invoice_recoveries
        SET card_fingerprint = $3
        WHERE merchant_id = $1 AND invoice_id = $2";

    sqlx::query(SQL)
        .bind(merchant.get())
        .bind(invoice.as_str())
        .bind(fingerprint.expose())
        .execute(executor)
        .await
        .map_err(database("storing the card of a recovery"))?;
    Ok(())
}

/// Returns the card of an invoice's recovery.
pub(crate) async fn recovery_card(
    executor: impl PgExecutor<'_>,
    merchant: MerchantId,
    invoice: &InvoiceId,
) -> Result<Option<CardFingerprint>, StoreError> {
    const SQL: &str = "
        SELECT card_fingerprint
        FROM invoice_recoveries
        WHERE merchant_id = $1 AND invoice_id = $2";

    let fingerprint: Option<Option<String>> = sqlx::query_scalar(SQL)
        .bind(merchant.get())
        .bind(invoice.as_str())
        .fetch_optional(executor)
        .await
        .map_err(database("reading the card of a recovery"))?;
    Ok(fingerprint.flatten().and_then(CardFingerprint::new))
}

/// Takes a transaction-level advisory lock on one card.
pub(crate) async fn lock_card(
    executor: impl PgExecutor<'_>,
    fingerprint: &CardFingerprint,
) -> Result<(), StoreError> {
    advisory_lock(executor, format!("citadel-card:{}", fingerprint.expose())).await
}

/// Lists a card's attempts after `since`, oldest first. Served by the
/// `card_attempts_fingerprint_attempted_at` index.
pub(crate) async fn attempts_since(
    executor: impl PgExecutor<'_>,
    fingerprint: &CardFingerprint,
    since: DateTime<Utc>,
) -> Result<Vec<CardAttempt>, StoreError> {
    const SQL: &str = "
        SELECT fingerprint, merchant_id, invoice_id, attempt_key, attempted_at
        FROM card_attempts
        WHERE fingerprint = $1 AND attempted_at > $2
        ORDER BY attempted_at, id";

    let rows: Vec<AttemptRow> = sqlx::query_as(SQL)
        .bind(fingerprint.expose())
        .bind(since)
        .fetch_all(executor)
        .await
        .map_err(database("listing the attempts of a card"))?;
    rows.into_iter().map(CardAttempt::try_from).collect()
}

/// Records an attempt; returns `false` when its key exists.
pub(crate) async fn insert_attempt(
    executor: impl PgExecutor<'_>,
    attempt: &CardAttempt,
) -> Result<bool, StoreError> {
    const SQL: &str = "
        INSERT INTO card_attempts
            (fingerprint, merchant_id, invoice_id, attempt_key, attempted_at)
        VALUES ($1, $2, $3, $4, $5)
        ON CONFLICT (attempt_key) DO NOTHING";

    let result = sqlx::query(SQL)
        .bind(attempt.fingerprint.expose())
        .bind(attempt.merchant_id.get())
        .bind(attempt.invoice_id.as_str())
        .bind(attempt.attempt_key.as_str())
        .bind(attempt.attempted_at)
        .execute(executor)
        .await
        .map_err(database("recording a card attempt"))?;
    Ok(result.rows_affected() == 1)
}
