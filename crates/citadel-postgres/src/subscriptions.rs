//! The `subscription_states` table: the newest known state of each
//! subscription, read and written under the subscription's advisory lock.

use chrono::{DateTime, Utc};
use citadel_core::ids::{MerchantId, SubscriptionId};
use citadel_core::store::StoreError;
use citadel_core::subscription::SubscriptionState;
use sqlx::PgExecutor;

use crate::error::{database, invalid_row};

const TABLE: &str = "subscription_states";

/// A `subscription_states` row as stored.
#[derive(Debug, sqlx::FromRow)]
struct StateRow {
    merchant_id: i64,
    subscription_id: String,
    status: String,
    last_event_at: DateTime<Utc>,
}

impl TryFrom<StateRow> for SubscriptionState {
    type Error = StoreError;

    fn try_from(row: StateRow) -> Result<Self, Self::Error> {
        let subscription_id = SubscriptionId::parse(row.subscription_id)
            .map_err(|err| invalid_row(TABLE, err.to_string()))?;
        Ok(SubscriptionState {
            merchant_id: MerchantId::new(row.merchant_id),
            subscription_id,
            status: row.status,
            last_event_at: row.last_event_at,
        })
    }
}

/// Returns a subscription's state.
pub(crate) async fn get(
    executor: impl PgExecutor<'_>,
    merchant: MerchantId,
    subscription: &SubscriptionId,
) -> Result<Option<SubscriptionState>, StoreError> {
    const SQL: &str = "
        SELECT merchant_id, subscription_id, status, last_event_at
        FROM subscription_states
        WHERE merchant_id = $1 AND subscription_id = $2";

    let row: Option<StateRow> = sqlx::query_as(SQL)
        .bind(merchant.get())
        .bind(subscription.as_str())
        .fetch_optional(executor)
        .await
        .map_err(database("reading a subscription's state"))?;
    row.map(SubscriptionState::try_from).transpose()
}

/// Inserts or replaces a subscription's state.
pub(crate) async fn put(
    executor: impl PgExecutor<'_>,
    state: &SubscriptionState,
) -> Result<(), StoreError> {
    const SQL: &str = "
        INSERT INTO subscription_states (merchant_id, subscription_id, status, last_event_at)
        VALUES ($1, $2, $3, $4)
        ON CONFLICT (merchant_id, subscription_id) DO UPDATE
        SET status = EXCLUDED.status,
            last_event_at = EXCLUDED.last_event_at,
            updated_at = now()";

    sqlx::query(SQL)
        .bind(state.merchant_id.get())
        .bind(state.subscription_id.as_str())
        .bind(&state.status)
        .bind(state.last_event_at)
        .execute(executor)
        .await
        .map_err(database("writing a subscription's state"))?;
    Ok(())
}
