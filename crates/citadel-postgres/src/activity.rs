//! The `usage_logs` table: the activity ledger, appended to and read newest
//! first.
//!
//! Ids come from an identity column, so a higher id was inserted later and
//! `before` pages through the ledger without gaps or repeats.

use chrono::{DateTime, Utc};
use citadel_core::activity::{Activity, ActivityFilter, ActivityKind, NewActivity};
use citadel_core::ids::{ActivityId, EventId, InvoiceId, MerchantId, TaskId};
use citadel_core::store::StoreError;
use sqlx::PgExecutor;

use crate::error::{database, invalid_row};

const TABLE: &str = "usage_logs";

/// A `usage_logs` row as stored.
#[derive(Debug, sqlx::FromRow)]
struct ActivityRow {
    id: i64,
    merchant_id: i64,
    kind: String,
    task_id: Option<i64>,
    invoice_id: Option<String>,
    event_id: Option<String>,
    message: String,
    details: Option<serde_json::Value>,
    created_at: DateTime<Utc>,
}

impl TryFrom<ActivityRow> for Activity {
    type Error = StoreError;

    fn try_from(row: ActivityRow) -> Result<Self, Self::Error> {
        let id = row.id;
        let invalid = |message: String| invalid_row(TABLE, format!("entry {id}: {message}"));
        let invoice_id = row
            .invoice_id
            .map(InvoiceId::parse)
            .transpose()
            .map_err(|err| invalid(err.to_string()))?;
        let event_id = row
            .event_id
            .map(EventId::parse)
            .transpose()
            .map_err(|err| invalid(err.to_string()))?;

        Ok(Activity {
            id: ActivityId::new(row.id),
            created_at: row.created_at,
            entry: NewActivity {
                merchant_id: MerchantId::new(row.merchant_id),
                kind: row.kind.parse().map_err(|err| invalid(format!("{err}")))?,
                task_id: row.task_id.map(TaskId::new),
                invoice_id,
                event_id,
                message: row.message,
                details: row.details.unwrap_or_default(),
            },
        })
    }
}

/// Appends an entry to the ledger.
pub(crate) async fn insert(
    executor: impl PgExecutor<'_>,
    activity: &NewActivity,
) -> Result<(), StoreError> {
    const SQL: &str = "
        INSERT INTO usage_logs
            (merchant_id, kind, task_id, invoice_id, event_id, message, details)
        VALUES ($1, $2, $3, $4, $5, $6, $7)";

    sqlx::query(SQL)
        .bind(activity.merchant_id.get())
        .bind(activity.kind.as_str())
        .bind(activity.task_id.map(TaskId::get))
        .bind(activity.invoice_id.as_ref().map(InvoiceId::as_str))
        .bind(activity.event_id.as_ref().map(EventId::as_str))
        .bind(&activity.message)
        .bind(&activity.details)
        .execute(executor)
        .await
        .map_err(database("appending to the activity ledger"))?;
    Ok(())
}

/// Lists entries newest first, one page at a time.
pub(crate) async fn list(
    executor: impl PgExecutor<'_>,
    filter: &ActivityFilter,
) -> Result<Vec<Activity>, StoreError> {
    const SQL: &str = "
        SELECT * FROM usage_logs
        WHERE ($1::bigint IS NULL OR merchant_id = $1)
          AND ($2::text IS NULL OR kind = $2)
          AND ($3::bigint IS NULL OR id < $3)
        ORDER BY id DESC
        LIMIT $4";

    let rows: Vec<ActivityRow> = sqlx::query_as(SQL)
        .bind(filter.merchant_id.map(MerchantId::get))
        .bind(filter.kind.map(ActivityKind::as_str))
        .bind(filter.before.map(ActivityId::get))
        .bind(crate::page_size(filter.limit))
        .fetch_all(executor)
        .await
        .map_err(database("listing activity"))?;
    rows.into_iter().map(Activity::try_from).collect()
}
