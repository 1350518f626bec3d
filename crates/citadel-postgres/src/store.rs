//! [`PgStore`]: the [`Store`] over a sqlx connection pool.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use citadel_core::activity::{Activity, ActivityFilter};
use citadel_core::ids::{AccountId, InvoiceId, MerchantId, SubscriptionId, TaskId};
use citadel_core::merchant::{Merchant, NewMerchant};
use citadel_core::metrics::DailyMetrics;
use citadel_core::operator::MerchantUpdate;
use citadel_core::operator::token::TokenHash;
use citadel_core::queue::{PruneReport, Retention, TaskWakeups, WorkerInfo};
use citadel_core::recovery::Recovery;
use citadel_core::store::{
    ClaimRequest, Store, StoreError, StoreTx, TaskChange, TaskCounts, TaskFilter,
};
use citadel_core::subscription::SubscriptionState;
use citadel_core::task::{Lease, Task, TaskKind};
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use uuid::Uuid;

use crate::error::{PgError, database, redact_url};
use crate::listen::PgWakeups;
use crate::tx::PgTx;
use crate::{
    activity, merchants, metrics, operator, prune, recoveries, subscriptions, tasks, workers,
};

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
    /// `scheduled_tasks_pending_merchant` index; a sequential scan of
    /// `scheduled_tasks` there means the claim reads every task each time.
    ///
    /// # Errors
    ///
    /// [`StoreError::Database`] when the database fails.
    pub async fn explain_claim(&self, request: &ClaimRequest) -> Result<String, StoreError> {
        tasks::explain_claim(&self.pool, request).await
    }

    /// Returns the ids of running tasks whose lease expired, without
    /// changing them: the read half of [`Store::rescue_expired_tasks`].
    ///
    /// # Errors
    ///
    /// [`StoreError::Database`] when the database fails.
    pub async fn expired_leases(&self) -> Result<Vec<TaskId>, StoreError> {
        tasks::expired_leases(&self.pool).await
    }

    /// Hands back those of `ids` that are still running on an expired lease:
    /// the write half of [`Store::rescue_expired_tasks`]. It checks the
    /// status and expiry again on each locked row, so a task finished since
    /// `ids` were read stays finished. Returns how many it handed back.
    ///
    /// # Errors
    ///
    /// [`StoreError::Database`] when the database fails.
    pub async fn rescue(&self, ids: &[TaskId]) -> Result<u64, StoreError> {
        tasks::rescue(&self.pool, ids).await
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
        merchant.validate()?;
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

    async fn claim_tasks(&self, request: &ClaimRequest) -> Result<Vec<Task>, StoreError> {
        tasks::claim(&self.pool, request, None).await
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

    // Task engine: rescue, heartbeat, hand-back, worker identity, wake-ups
    // and pruning.

    /// Reads the expired leases, then hands them back with a statement that
    /// checks each one again on the locked row.
    async fn rescue_expired_tasks(&self) -> Result<u64, StoreError> {
        let expired = tasks::expired_leases(&self.pool).await?;
        let rescued = tasks::rescue(&self.pool, &expired).await?;
        if rescued > 0 {
            tracing::warn!(
                tasks.rescued = rescued,
                "handed back running tasks whose lease expired"
            );
        }
        Ok(rescued)
    }

    async fn heartbeat_tasks(
        &self,
        leases: &[Lease],
        lease_duration: Duration,
    ) -> Result<Vec<Lease>, StoreError> {
        tasks::heartbeat(&self.pool, leases, lease_duration).await
    }

    async fn release_tasks(&self, leases: &[Lease], unstarted: bool) -> Result<u64, StoreError> {
        tasks::release(&self.pool, leases, unstarted).await
    }

    async fn register_worker(&self, id: Uuid, name: &str) -> Result<(), StoreError> {
        workers::register(&self.pool, id, name).await
    }

    async fn worker_heartbeat(&self, id: Uuid) -> Result<(), StoreError> {
        workers::heartbeat(&self.pool, id).await
    }

    async fn stop_worker(&self, id: Uuid) -> Result<(), StoreError> {
        workers::stop(&self.pool, id).await
    }

    async fn list_workers(&self) -> Result<Vec<WorkerInfo>, StoreError> {
        workers::list(&self.pool).await
    }

    async fn listen_for_tasks(&self) -> Result<Option<Box<dyn TaskWakeups>>, StoreError> {
        let wakeups = PgWakeups::listen(&self.pool).await?;
        Ok(Some(Box::new(wakeups)))
    }

    async fn prune(&self, retention: &Retention) -> Result<PruneReport, StoreError> {
        prune::prune(&self.pool, retention).await
    }

    // Operator API

    async fn task_counts_of(&self, merchant: Option<MerchantId>) -> Result<TaskCounts, StoreError> {
        operator::task_counts_of(&self.pool, merchant).await
    }

    async fn list_merchants_page(
        &self,
        after: Option<MerchantId>,
        limit: u32,
    ) -> Result<Vec<Merchant>, StoreError> {
        operator::list_merchants_page(&self.pool, after, limit).await
    }

    async fn create_merchant_with_token(
        &self,
        merchant: &NewMerchant,
        token_hash: &TokenHash,
    ) -> Result<Merchant, StoreError> {
        operator::create_merchant_with_token(&self.pool, merchant, token_hash).await
    }

    async fn merchant_by_token(
        &self,
        token_hash: &TokenHash,
    ) -> Result<Option<Merchant>, StoreError> {
        operator::merchant_by_token(&self.pool, token_hash).await
    }

    async fn update_merchant(
        &self,
        id: MerchantId,
        update: &MerchantUpdate,
    ) -> Result<Option<Merchant>, StoreError> {
        operator::update_merchant(&self.pool, id, update).await
    }

    async fn retry_failed_task(
        &self,
        id: TaskId,
        merchant: Option<MerchantId>,
    ) -> Result<TaskChange, StoreError> {
        operator::retry_failed_task(&self.pool, id, merchant).await
    }

    async fn delete_task(
        &self,
        id: TaskId,
        merchant: Option<MerchantId>,
    ) -> Result<TaskChange, StoreError> {
        operator::delete_task(&self.pool, id, merchant).await
    }

    async fn delete_completed_tasks(
        &self,
        merchant: Option<MerchantId>,
    ) -> Result<u64, StoreError> {
        operator::delete_completed(&self.pool, merchant).await
    }

    async fn claim_merchant_tasks(
        &self,
        request: &ClaimRequest,
        merchant: MerchantId,
    ) -> Result<Vec<Task>, StoreError> {
        operator::claim_merchant_tasks(&self.pool, request, merchant).await
    }

    async fn pending_migrations(&self) -> Result<Vec<i64>, StoreError> {
        operator::pending_migrations(&self.pool).await
    }

    async fn oldest_due_run_at(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        operator::oldest_due_run_at(&self.pool).await
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
