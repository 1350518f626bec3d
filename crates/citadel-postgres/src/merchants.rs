//! The `merchants` table: one row per tenant, keyed by its connected account.
//!
//! `account_id` is unique, and NULL stands for the platform's own account, of
//! which a partial unique index allows at most one row.

use chrono::{DateTime, Utc};
use citadel_core::ids::{AccountId, MerchantId};
use citadel_core::merchant::{Merchant, NewMerchant};
use citadel_core::store::StoreError;
use sqlx::PgExecutor;

use crate::error::{database, invalid_row};

const TABLE: &str = "merchants";

/// The unique constraint on `account_id`.
const ACCOUNT_KEY: &str = "merchants_account_id_key";

/// The partial unique index that allows one platform merchant.
const PLATFORM_KEY: &str = "merchants_platform_account_key";

/// A `merchants` row as stored.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct MerchantRow {
    id: i64,
    name: String,
    account_id: Option<String>,
    status: String,
    policy: serde_json::Value,
    time_zone: String,
    created_at: DateTime<Utc>,
}

impl TryFrom<MerchantRow> for Merchant {
    type Error = StoreError;

    fn try_from(row: MerchantRow) -> Result<Self, Self::Error> {
        let account_id = row
            .account_id
            .map(AccountId::parse)
            .transpose()
            .map_err(|err| invalid_row(TABLE, format!("merchant {}: {err}", row.id)))?;
        let status = row
            .status
            .parse()
            .map_err(|err| invalid_row(TABLE, format!("merchant {}: {err}", row.id)))?;
        let policy = serde_json::from_value(row.policy).map_err(|err| {
            invalid_row(TABLE, format!("merchant {}: invalid policy: {err}", row.id))
        })?;

        Ok(Merchant {
            id: MerchantId::new(row.id),
            name: row.name,
            account_id,
            status,
            policy,
            time_zone: row.time_zone,
            created_at: row.created_at,
        })
    }
}

/// Inserts a merchant and returns it as stored.
pub(crate) async fn insert(
    executor: impl PgExecutor<'_>,
    merchant: &NewMerchant,
) -> Result<Merchant, StoreError> {
    const SQL: &str = "
        INSERT INTO merchants (name, account_id, status, policy, time_zone)
        VALUES ($1, $2, 'active', $3, $4)
        RETURNING *";

    let policy = serde_json::to_value(&merchant.policy)
        .map_err(|err| invalid_row(TABLE, format!("policy does not serialize to JSON: {err}")))?;
    let row: MerchantRow = sqlx::query_as(SQL)
        .bind(&merchant.name)
        .bind(merchant.account_id.as_ref().map(AccountId::as_str))
        .bind(policy)
        .bind(&merchant.time_zone)
        .fetch_one(executor)
        .await
        .map_err(|err| insert_error(err, merchant.account_id.as_ref()))?;
    row.try_into()
}

/// Maps a unique violation on the account to [`StoreError::DuplicateAccount`].
fn insert_error(err: sqlx::Error, account: Option<&AccountId>) -> StoreError {
    let duplicate = err.as_database_error().is_some_and(|db| {
        db.is_unique_violation() && matches!(db.constraint(), Some(ACCOUNT_KEY | PLATFORM_KEY))
    });
    if duplicate {
        let account = account.map_or_else(|| "platform".to_owned(), ToString::to_string);
        return StoreError::DuplicateAccount { account };
    }
    database("registering a merchant")(err)
}

/// Returns a merchant by id.
pub(crate) async fn by_id(
    executor: impl PgExecutor<'_>,
    id: MerchantId,
) -> Result<Option<Merchant>, StoreError> {
    const SQL: &str = "SELECT * FROM merchants WHERE id = $1";

    let row: Option<MerchantRow> = sqlx::query_as(SQL)
        .bind(id.get())
        .fetch_optional(executor)
        .await
        .map_err(database("reading a merchant"))?;
    row.map(Merchant::try_from).transpose()
}

/// Returns the merchant of a connected account, or the platform's merchant
/// when `account` is `None`.
pub(crate) async fn by_account(
    executor: impl PgExecutor<'_>,
    account: Option<&AccountId>,
) -> Result<Option<Merchant>, StoreError> {
    let Some(account) = account else {
        return platform(executor).await;
    };
    const SQL: &str = "SELECT * FROM merchants WHERE account_id = $1";

    let row: Option<MerchantRow> = sqlx::query_as(SQL)
        .bind(account.as_str())
        .fetch_optional(executor)
        .await
        .map_err(database("reading the merchant of an account"))?;
    row.map(Merchant::try_from).transpose()
}

/// Returns the merchant of the platform's own account.
async fn platform(executor: impl PgExecutor<'_>) -> Result<Option<Merchant>, StoreError> {
    const SQL: &str = "SELECT * FROM merchants WHERE account_id IS NULL";

    let row: Option<MerchantRow> = sqlx::query_as(SQL)
        .fetch_optional(executor)
        .await
        .map_err(database("reading the platform's merchant"))?;
    row.map(Merchant::try_from).transpose()
}

/// Lists every merchant by id.
pub(crate) async fn list(executor: impl PgExecutor<'_>) -> Result<Vec<Merchant>, StoreError> {
    const SQL: &str = "SELECT * FROM merchants ORDER BY id";

    let rows: Vec<MerchantRow> = sqlx::query_as(SQL)
        .fetch_all(executor)
        .await
        .map_err(database("listing merchants"))?;
    rows.into_iter().map(Merchant::try_from).collect()
}
