//! The `invoice_recoveries` table: one recovery per failed invoice.
//!
//! The engine locks a recovery (`SELECT … FOR UPDATE`) before it changes it,
//! so two events of the same invoice, or an event and a task outcome, apply
//! one after the other. `amount_due` and `amount_recovered` share the
//! `currency` column.

use chrono::{DateTime, Utc};
use citadel_core::ids::{CustomerId, InvoiceId, MerchantId, SubscriptionId};
use citadel_core::money::{Currency, Money};
use citadel_core::payment::Decline;
use citadel_core::recovery::Recovery;
use citadel_core::store::StoreError;
use sqlx::PgExecutor;
use sqlx::postgres::{PgArguments, Postgres};
use sqlx::query::Query;

use crate::error::{database, invalid_row};

const TABLE: &str = "invoice_recoveries";

/// An `invoice_recoveries` row as stored.
#[derive(Debug, sqlx::FromRow)]
struct RecoveryRow {
    merchant_id: i64,
    invoice_id: String,
    status: String,
    customer_id: Option<String>,
    subscription_id: Option<String>,
    amount_due: Option<i64>,
    amount_recovered: Option<i64>,
    currency: Option<String>,
    retries_made: i32,
    last_decline: Option<serde_json::Value>,
    last_event_at: DateTime<Utc>,
    close_reason: Option<String>,
    opened_at: DateTime<Utc>,
    closed_at: Option<DateTime<Utc>>,
}

impl TryFrom<RecoveryRow> for Recovery {
    type Error = StoreError;

    fn try_from(row: RecoveryRow) -> Result<Self, Self::Error> {
        let invoice = row.invoice_id.clone();
        let invalid = |message: String| invalid_row(TABLE, format!("invoice {invoice}: {message}"));
        let currency = row
            .currency
            .as_deref()
            .map(Currency::parse)
            .transpose()
            .map_err(|err| invalid(err.to_string()))?;
        let money = |minor_units: Option<i64>| match (minor_units, currency) {
            (None, _) => Ok(None),
            (Some(minor_units), Some(currency)) => Ok(Some(Money::new(minor_units, currency))),
            (Some(_), None) => Err(invalid("an amount without a currency".to_owned())),
        };
        let last_decline = row
            .last_decline
            .filter(|value| !value.is_null())
            .map(serde_json::from_value::<Decline>)
            .transpose()
            .map_err(|err| invalid(format!("invalid last_decline: {err}")))?;

        Ok(Recovery {
            merchant_id: MerchantId::new(row.merchant_id),
            invoice_id: InvoiceId::parse(row.invoice_id.as_str())
                .map_err(|err| invalid(err.to_string()))?,
            status: row
                .status
                .parse()
                .map_err(|err| invalid(format!("{err}")))?,
            customer_id: parse_optional(row.customer_id, CustomerId::parse)
                .map_err(|err| invalid(err.to_string()))?,
            subscription_id: parse_optional(row.subscription_id, SubscriptionId::parse)
                .map_err(|err| invalid(err.to_string()))?,
            amount_due: money(row.amount_due)?,
            amount_recovered: money(row.amount_recovered)?,
            retries_made: row.retries_made,
            last_decline,
            last_event_at: row.last_event_at,
            close_reason: row.close_reason,
            opened_at: row.opened_at,
            closed_at: row.closed_at,
        })
    }
}

fn parse_optional<T, E>(
    value: Option<String>,
    parse: impl FnOnce(String) -> Result<T, E>,
) -> Result<Option<T>, E> {
    value.map(parse).transpose()
}

/// The column values written for a recovery, in the order of the `$1`…`$14`
/// parameters of [`insert`] and [`update`].
struct RecoveryValues<'a> {
    recovery: &'a Recovery,
    currency: Option<Currency>,
    last_decline: Option<serde_json::Value>,
}

impl<'a> RecoveryValues<'a> {
    fn new(recovery: &'a Recovery) -> Result<Self, StoreError> {
        let currency = shared_currency(recovery)?;
        let last_decline = recovery
            .last_decline
            .as_ref()
            .map(serde_json::to_value)
            .transpose()
            .map_err(|err| invalid_row(TABLE, format!("decline does not serialize: {err}")))?;
        Ok(Self {
            recovery,
            currency,
            last_decline,
        })
    }

    fn bind(self, query: Query<'a, Postgres, PgArguments>) -> Query<'a, Postgres, PgArguments> {
        let recovery = self.recovery;
        query
            .bind(recovery.merchant_id.get())
            .bind(recovery.invoice_id.as_str())
            .bind(recovery.status.as_str())
            .bind(recovery.customer_id.as_ref().map(CustomerId::as_str))
            .bind(
                recovery
                    .subscription_id
                    .as_ref()
                    .map(SubscriptionId::as_str),
            )
            .bind(recovery.amount_due.map(|money| money.minor_units))
            .bind(recovery.amount_recovered.map(|money| money.minor_units))
            .bind(self.currency.map(String::from))
            .bind(recovery.retries_made)
            .bind(self.last_decline)
            .bind(recovery.last_event_at)
            .bind(recovery.close_reason.as_deref())
            .bind(recovery.opened_at)
            .bind(recovery.closed_at)
    }
}

/// Returns the one currency of the recovery's amounts.
fn shared_currency(recovery: &Recovery) -> Result<Option<Currency>, StoreError> {
    let due = recovery.amount_due.map(|money| money.currency);
    let recovered = recovery.amount_recovered.map(|money| money.currency);
    match (due, recovered) {
        (Some(due), Some(recovered)) if due != recovered => Err(invalid_row(
            TABLE,
            format!(
                "invoice {}: amount due in {due} but amount recovered in {recovered}; \
                 one recovery stores one currency",
                recovery.invoice_id
            ),
        )),
        _ => Ok(due.or(recovered)),
    }
}

/// Inserts a recovery; returns `false` when one exists for the invoice.
pub(crate) async fn insert(
    executor: impl PgExecutor<'_>,
    recovery: &Recovery,
) -> Result<bool, StoreError> {
    const SQL: &str = "
        INSERT INTO invoice_recoveries
            (merchant_id, invoice_id, status, customer_id, subscription_id, amount_due,
             amount_recovered, currency, retries_made, last_decline, last_event_at,
             close_reason, opened_at, closed_at)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
        ON CONFLICT (merchant_id, invoice_id) DO NOTHING";

    let values = RecoveryValues::new(recovery)?;
    let result = values
        .bind(sqlx::query(SQL))
        .execute(executor)
        .await
        .map_err(database("inserting a recovery"))?;
    Ok(result.rows_affected() == 1)
}

/// Writes a recovery back over its row.
pub(crate) async fn update(
    executor: impl PgExecutor<'_>,
    recovery: &Recovery,
) -> Result<(), StoreError> {
    const SQL: &str = "
        UPDATE invoice_recoveries
        SET status = $3,
            customer_id = $4,
            subscription_id = $5,
            amount_due = $6,
            amount_recovered = $7,
            currency = $8,
            retries_made = $9,
            last_decline = $10,
            last_event_at = $11,
            close_reason = $12,
            opened_at = $13,
            closed_at = $14
        WHERE merchant_id = $1 AND invoice_id = $2";

    let values = RecoveryValues::new(recovery)?;
    let result = values
        .bind(sqlx::query(SQL))
        .execute(executor)
        .await
        .map_err(database("updating a recovery"))?;
    if result.rows_affected() == 0 {
        let message = format!(
            "recovery of invoice {} of merchant {} not found; insert it before updating it",
            recovery.invoice_id, recovery.merchant_id
        );
        return Err(invalid_row(TABLE, message));
    }
    Ok(())
}

/// Locks and returns an invoice's recovery until the transaction ends.
pub(crate) async fn lock(
    executor: impl PgExecutor<'_>,
    merchant: MerchantId,
    invoice: &InvoiceId,
) -> Result<Option<Recovery>, StoreError> {
    const SQL: &str = "
        SELECT * FROM invoice_recoveries
        WHERE merchant_id = $1 AND invoice_id = $2
        FOR UPDATE";

    let row: Option<RecoveryRow> = sqlx::query_as(SQL)
        .bind(merchant.get())
        .bind(invoice.as_str())
        .fetch_optional(executor)
        .await
        .map_err(database("locking a recovery"))?;
    row.map(Recovery::try_from).transpose()
}

/// Locks and returns the recoveries of a subscription that have not ended.
pub(crate) async fn lock_open_of_subscription(
    executor: impl PgExecutor<'_>,
    merchant: MerchantId,
    subscription: &SubscriptionId,
) -> Result<Vec<Recovery>, StoreError> {
    const SQL: &str = "
        SELECT * FROM invoice_recoveries
        WHERE merchant_id = $1
          AND subscription_id = $2
          AND status IN ('open', 'awaiting_invoice')
        ORDER BY invoice_id
        FOR UPDATE";

    let rows: Vec<RecoveryRow> = sqlx::query_as(SQL)
        .bind(merchant.get())
        .bind(subscription.as_str())
        .fetch_all(executor)
        .await
        .map_err(database("locking the recoveries of a subscription"))?;
    rows.into_iter().map(Recovery::try_from).collect()
}

/// Returns an invoice's recovery without locking it.
pub(crate) async fn get(
    executor: impl PgExecutor<'_>,
    merchant: MerchantId,
    invoice: &InvoiceId,
) -> Result<Option<Recovery>, StoreError> {
    const SQL: &str = "SELECT * FROM invoice_recoveries WHERE merchant_id = $1 AND invoice_id = $2";

    let row: Option<RecoveryRow> = sqlx::query_as(SQL)
        .bind(merchant.get())
        .bind(invoice.as_str())
        .fetch_optional(executor)
        .await
        .map_err(database("reading a recovery"))?;
    row.map(Recovery::try_from).transpose()
}

/// Lists the recoveries of one merchant, or of all, oldest first.
pub(crate) async fn list(
    executor: impl PgExecutor<'_>,
    merchant: Option<MerchantId>,
) -> Result<Vec<Recovery>, StoreError> {
    const SQL: &str = "
        SELECT * FROM invoice_recoveries
        WHERE $1::bigint IS NULL OR merchant_id = $1
        ORDER BY merchant_id, opened_at, invoice_id";

    let rows: Vec<RecoveryRow> = sqlx::query_as(SQL)
        .bind(merchant.map(MerchantId::get))
        .fetch_all(executor)
        .await
        .map_err(database("listing recoveries"))?;
    rows.into_iter().map(Recovery::try_from).collect()
}
