//! The `daily_metrics` table: counters per merchant, day and currency.
//!
//! Each delta is added with one upsert, so concurrent transactions that count
//! on the same day add up instead of overwriting each other.

use chrono::NaiveDate;
use citadel_core::ids::MerchantId;
use citadel_core::metrics::{DailyMetrics, MetricsDelta};
use citadel_core::money::Currency;
use citadel_core::store::StoreError;
use sqlx::PgExecutor;

use crate::error::{database, invalid_row};

const TABLE: &str = "daily_metrics";

/// A `daily_metrics` row as stored.
#[derive(Debug, sqlx::FromRow)]
struct MetricsRow {
    merchant_id: i64,
    day: NaiveDate,
    currency: String,
    failed_payments: i64,
    retries_attempted: i64,
    payments_recovered: i64,
    amount_recovered: i64,
    payments_lost: i64,
    amount_lost: i64,
    recovery_seconds: i64,
}

impl TryFrom<MetricsRow> for DailyMetrics {
    type Error = StoreError;

    fn try_from(row: MetricsRow) -> Result<Self, Self::Error> {
        let currency = Currency::parse(&row.currency).map_err(|err| {
            let message = format!("merchant {} on {}: {err}", row.merchant_id, row.day);
            invalid_row(TABLE, message)
        })?;

        Ok(DailyMetrics {
            merchant_id: MerchantId::new(row.merchant_id),
            day: row.day,
            currency,
            failed_payments: row.failed_payments,
            retries_attempted: row.retries_attempted,
            payments_recovered: row.payments_recovered,
            amount_recovered: row.amount_recovered,
            payments_lost: row.payments_lost,
            amount_lost: row.amount_lost,
            recovery_seconds: row.recovery_seconds,
        })
    }
}

/// Adds a delta to its merchant's day in its currency.
pub(crate) async fn add(
    executor: impl PgExecutor<'_>,
    delta: &MetricsDelta,
) -> Result<(), StoreError> {
    const SQL: &str = "
        INSERT INTO daily_metrics
            (merchant_id, day, currency, failed_payments, retries_attempted,
             payments_recovered, amount_recovered, payments_lost, amount_lost,
             recovery_seconds)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
        ON CONFLICT (merchant_id, day, currency) DO UPDATE
        SET failed_payments = daily_metrics.failed_payments + EXCLUDED.failed_payments,
            retries_attempted = daily_metrics.retries_attempted + EXCLUDED.retries_attempted,
            payments_recovered = daily_metrics.payments_recovered + EXCLUDED.payments_recovered,
            amount_recovered = daily_metrics.amount_recovered + EXCLUDED.amount_recovered,
            payments_lost = daily_metrics.payments_lost + EXCLUDED.payments_lost,
            amount_lost = daily_metrics.amount_lost + EXCLUDED.amount_lost,
            recovery_seconds = daily_metrics.recovery_seconds + EXCLUDED.recovery_seconds";

    sqlx::query(SQL)
        .bind(delta.merchant_id.get())
        .bind(delta.day)
        .bind(delta.currency.as_str())
        .bind(delta.failed_payments)
        .bind(delta.retries_attempted)
        .bind(delta.payments_recovered)
        .bind(delta.amount_recovered)
        .bind(delta.payments_lost)
        .bind(delta.amount_lost)
        .bind(delta.recovery_seconds)
        .execute(executor)
        .await
        .map_err(database("adding to daily metrics"))?;
    Ok(())
}

/// Lists the metrics of one merchant, or of all, by day.
pub(crate) async fn list(
    executor: impl PgExecutor<'_>,
    merchant: Option<MerchantId>,
) -> Result<Vec<DailyMetrics>, StoreError> {
    const SQL: &str = "
        SELECT * FROM daily_metrics
        WHERE $1::bigint IS NULL OR merchant_id = $1
        ORDER BY day, merchant_id, currency";

    let rows: Vec<MetricsRow> = sqlx::query_as(SQL)
        .bind(merchant.map(MerchantId::get))
        .fetch_all(executor)
        .await
        .map_err(database("listing daily metrics"))?;
    rows.into_iter().map(DailyMetrics::try_from).collect()
}
