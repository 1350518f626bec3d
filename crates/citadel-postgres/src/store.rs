//! [`PgStore`]: the [`Store`] over a sqlx connection pool.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use citadel_core::activity::{Activity, ActivityFilter};
use citadel_core::ids::{AccountId, InvoiceId, MerchantId, SubscriptionId, TaskId};
use citadel_core::merchant::{Merchant, NewMerchant};
use citadel_core::metrics::DailyMetrics;
use citadel_core::recovery::Recovery;
use citadel_core::store::{ClaimRequest, Store, StoreError, StoreTx, TaskCounts, TaskFilter};
use citadel_core::subscription::SubscriptionState;
use citadel_core::task::{Task, TaskKind};
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

use crate::error::{PgError, database, redact_url};
use crate::tx::PgTx;
use crate::{activity, merchants, metrics, recoveries, subscriptions, tasks};

/// The migrations in this crate's `migrations/` folder, embedded at compile
/// time.
pub(crate) static MIGRATOR: Migrator = sqlx::migrate!();

/// The `application_name` the store's connections report to PostgreSQL, as
/// shown in `pg_stat_activity`.
const APPLICATION_NAME: &str = "citadel";

/// Citadel's store in PostgreSQL.
///
/// Cloning is cheap: clones share one connection pool.
///
/// # Examples
///
/// ```no_run
/// use citadel_postgres::PgStore;
///
/// # async fn run() -> Result<(), citadel_postgres::PgError> {
/// let store = PgStore::connect("postgres://citadel@localhost/citadel").await?;
/// store.migrate().await?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
}

impl PgStore {
    /// Creates a store over an existing pool.
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// Connects a new pool with sqlx's default pool settings.
    ///
    /// # Errors
    ///
    /// [`PgError::InvalidUrl`] when `url` is not a PostgreSQL URL, and
    /// [`PgError::Connect`] when no connection can be opened.
    pub async fn connect(url: &str) -> Result<Self, PgError> {
        let options: PgConnectOptions = url.parse().map_err(|source| PgError::InvalidUrl {
            url: redact_url(url),
            source,
        })?;
        let options = options.application_name(APPLICATION_NAME);

        let pool = PgPoolOptions::new()
            .connect_with(options)
            .await
            .map_err(|source| PgError::Connect {
                url: redact_url(url),
                source,
            })?;
        Ok(Self::new(pool))
    }

    /// Applies the migrations that the database has not applied yet.
    ///
    /// Concurrent callers on the same database are safe: sqlx holds an
    /// advisory lock while it migrates.
    ///
    /// # Errors
    ///
    /// [`PgError::Migrate`] when a migration fails, or when an applied
    /// migration differs from the one embedded in this crate.
    pub async fn migrate(&self) -> Result<(), PgError> {
        MIGRATOR.run(&self.pool).await.map_err(PgError::Migrate)
    }

    /// Returns the connection pool.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Returns the query plan of the statement that
    /// [`Store::claim_tasks`] runs for `request`, without running it.
    ///
    /// On a healthy queue the plan locks rows (`LockRows`) found through the
    /// `scheduled_tasks_pending_run_at` index; a sequential scan of
    /// `scheduled_tasks` there means the claim reads every task each time.
    ///
    /// # Errors
    ///
    /// [`StoreError::Database`] when the database fails.
    pub async fn explain_claim(&self, request: &ClaimRequest) -> Result<String, StoreError> {
        tasks::explain_claim(&self.pool, request).await
    }
}

#[async_trait]
impl Store for PgStore {
    async fn begin(&self) -> Result<Box<dyn StoreTx>, StoreError> {
        let tx = self
            .pool
            .begin()
            .await
            .map_err(database("starting a transaction"))?;
        Ok(Box::new(PgTx::new(tx)))
    }

    async fn create_merchant(&self, merchant: &NewMerchant) -> Result<Merchant, StoreError> {
        merchants::insert(&self.pool, merchant).await
    }

    async fn merchant(&self, id: MerchantId) -> Result<Option<Merchant>, StoreError> {
        merchants::by_id(&self.pool, id).await
    }

    async fn merchant_by_account(
        &self,
        account: Option<&AccountId>,
    ) -> Result<Option<Merchant>, StoreError> {
        merchants::by_account(&self.pool, account).await
    }

    async fn list_merchants(&self) -> Result<Vec<Merchant>, StoreError> {
        merchants::list(&self.pool).await
    }

    /// Hands back tasks whose lease expired, then claims.
    async fn claim_tasks(&self, request: &ClaimRequest) -> Result<Vec<Task>, StoreError> {
        tasks::rescue_expired(&self.pool).await?;

        tasks::claim(&self.pool, request).await
    }

    async fn task(&self, id: TaskId) -> Result<Option<Task>, StoreError> {
        tasks::by_id(&self.pool, id).await
    }

    async fn list_tasks(&self, filter: &TaskFilter) -> Result<Vec<Task>, StoreError> {
        tasks::list(&self.pool, filter).await
    }

    async fn task_counts(&self) -> Result<TaskCounts, StoreError> {
        tasks::counts(&self.pool).await
    }

    async fn next_run_at(&self, kinds: &[TaskKind]) -> Result<Option<DateTime<Utc>>, StoreError> {
        tasks::next_run_at(&self.pool, kinds).await
    }

    async fn recovery(
        &self,
        merchant: MerchantId,
        invoice: &InvoiceId,
    ) -> Result<Option<Recovery>, StoreError> {
        recoveries::get(&self.pool, merchant, invoice).await
    }

    async fn list_recoveries(
        &self,
        merchant: Option<MerchantId>,
    ) -> Result<Vec<Recovery>, StoreError> {
        recoveries::list(&self.pool, merchant).await
    }

    async fn list_activity(&self, filter: &ActivityFilter) -> Result<Vec<Activity>, StoreError> {
        activity::list(&self.pool, filter).await
    }

    async fn daily_metrics(
        &self,
        merchant: Option<MerchantId>,
    ) -> Result<Vec<DailyMetrics>, StoreError> {
        metrics::list(&self.pool, merchant).await
    }

    // Subscriptions: the newest known state of each.

    async fn subscription_state(
        &self,
        merchant: MerchantId,
        subscription: &SubscriptionId,
    ) -> Result<Option<SubscriptionState>, StoreError> {
        subscriptions::get(&self.pool, merchant, subscription).await
    }
}
