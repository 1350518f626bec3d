//! [`PgTx`]: one [`StoreTx`] over a sqlx transaction.
//!
//! Every statement runs on the transaction's connection. Dropping a `PgTx`
//! without committing rolls the transaction back, which sqlx does when the
//! connection next returns to the pool.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use citadel_core::activity::NewActivity;
use citadel_core::ids::{AccountId, InvoiceId, MerchantId, SubscriptionId, TaskId};
use citadel_core::merchant::Merchant;
use citadel_core::metrics::MetricsDelta;
use citadel_core::payment::CardFingerprint;
use citadel_core::recovery::Recovery;
use citadel_core::store::{CardAttempt, EventRecord, StoreError, StoreTx};
use citadel_core::subscription::SubscriptionState;
use citadel_core::task::{Lease, NewTask, TaskUpdate};
use sqlx::{Postgres, Transaction};

use crate::error::database;
use crate::{activity, cards, events, merchants, metrics, recoveries, subscriptions, tasks};

/// A store transaction.
#[derive(Debug)]
pub(crate) struct PgTx {
    tx: Transaction<'static, Postgres>,
}

impl PgTx {
    pub(crate) fn new(tx: Transaction<'static, Postgres>) -> Self {
        Self { tx }
    }
}

#[async_trait]
impl StoreTx for PgTx {
    async fn insert_event(&mut self, event: &EventRecord) -> Result<bool, StoreError> {
        events::insert(&mut *self.tx, event).await
    }

    async fn lock_invoice(
        &mut self,
        merchant: MerchantId,
        invoice: &InvoiceId,
    ) -> Result<(), StoreError> {
        events::lock_invoice(&mut *self.tx, merchant, invoice).await
    }

    async fn lock_subscription(
        &mut self,
        merchant: MerchantId,
        subscription: &SubscriptionId,
    ) -> Result<(), StoreError> {
        events::lock_subscription(&mut *self.tx, merchant, subscription).await
    }

    async fn subscription_deleted(
        &mut self,
        account: Option<&AccountId>,
        subscription: &SubscriptionId,
    ) -> Result<bool, StoreError> {
        events::subscription_deleted(&mut *self.tx, account, subscription).await
    }

    async fn failure_recorded_since(
        &mut self,
        account: Option<&AccountId>,
        invoice: &InvoiceId,
        since: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        events::failure_since(&mut *self.tx, account, invoice, since).await
    }

    async fn invoice_settlement(
        &mut self,
        account: Option<&AccountId>,
        invoice: &InvoiceId,
    ) -> Result<Option<String>, StoreError> {
        events::settlement(&mut *self.tx, account, invoice).await
    }

    async fn merchant_by_account(
        &mut self,
        account: Option<&AccountId>,
    ) -> Result<Option<Merchant>, StoreError> {
        merchants::by_account(&mut *self.tx, account).await
    }

    async fn lock_recovery(
        &mut self,
        merchant: MerchantId,
        invoice: &InvoiceId,
    ) -> Result<Option<Recovery>, StoreError> {
        recoveries::lock(&mut *self.tx, merchant, invoice).await
    }

    async fn insert_recovery(&mut self, recovery: &Recovery) -> Result<bool, StoreError> {
        recoveries::insert(&mut *self.tx, recovery).await
    }

    async fn update_recovery(&mut self, recovery: &Recovery) -> Result<(), StoreError> {
        recoveries::update(&mut *self.tx, recovery).await
    }

    async fn lock_open_recoveries_of_subscription(
        &mut self,
        merchant: MerchantId,
        subscription: &SubscriptionId,
    ) -> Result<Vec<Recovery>, StoreError> {
        recoveries::lock_open_of_subscription(&mut *self.tx, merchant, subscription).await
    }

    async fn insert_task(&mut self, task: &NewTask) -> Result<Option<TaskId>, StoreError> {
        tasks::insert(&mut *self.tx, task).await
    }

    async fn cancel_pending_tasks(
        &mut self,
        merchant: MerchantId,
        invoice: &InvoiceId,
    ) -> Result<u64, StoreError> {
        tasks::cancel_pending_retries(&mut *self.tx, merchant, invoice).await
    }

    async fn finish_task(
        &mut self,
        lease: &Lease,
        update: &TaskUpdate,
    ) -> Result<bool, StoreError> {
        tasks::finish(&mut *self.tx, lease, update).await
    }

    async fn add_metrics(&mut self, delta: &MetricsDelta) -> Result<(), StoreError> {
        metrics::add(&mut *self.tx, delta).await
    }

    async fn insert_activity(&mut self, activity: &NewActivity) -> Result<(), StoreError> {
        activity::insert(&mut *self.tx, activity).await
    }

    async fn commit(self: Box<Self>) -> Result<(), StoreError> {
        self.tx
            .commit()
            .await
            .map_err(database("committing a transaction"))
    }

    // Recovery policy: card network caps.

    async fn set_recovery_card(
        &mut self,
        merchant: MerchantId,
        invoice: &InvoiceId,
        fingerprint: &CardFingerprint,
    ) -> Result<(), StoreError> {
        cards::set_recovery_card(&mut *self.tx, merchant, invoice, fingerprint).await
    }

    async fn recovery_card(
        &mut self,
        merchant: MerchantId,
        invoice: &InvoiceId,
    ) -> Result<Option<CardFingerprint>, StoreError> {
        cards::recovery_card(&mut *self.tx, merchant, invoice).await
    }

    async fn lock_card(&mut self, fingerprint: &CardFingerprint) -> Result<(), StoreError> {
        cards::lock_card(&mut *self.tx, fingerprint).await
    }

    async fn card_attempts_since(
        &mut self,
        fingerprint: &CardFingerprint,
        since: DateTime<Utc>,
    ) -> Result<Vec<CardAttempt>, StoreError> {
        cards::attempts_since(&mut *self.tx, fingerprint, since).await
    }

    async fn insert_card_attempt(&mut self, attempt: &CardAttempt) -> Result<bool, StoreError> {
        cards::insert_attempt(&mut *self.tx, attempt).await
    }

    // Subscriptions: the newest known state of each.

    async fn subscription_state(
        &mut self,
        merchant: MerchantId,
        subscription: &SubscriptionId,
    ) -> Result<Option<SubscriptionState>, StoreError> {
        subscriptions::get(&mut *self.tx, merchant, subscription).await
    }

    async fn put_subscription_state(
        &mut self,
        state: &SubscriptionState,
    ) -> Result<(), StoreError> {
        subscriptions::put(&mut *self.tx, state).await
    }
}
