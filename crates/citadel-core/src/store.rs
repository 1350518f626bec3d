//! The store traits: everything the engine keeps, behind one seam.
//!
//! [`Store`] contains the reads and the task claim; [`StoreTx`] is one database
//! transaction in which the engine records an event or a task's outcome
//! together with every effect of it (recovery, tasks, metrics, activity).
//! Nothing is written unless [`StoreTx::commit`] succeeds, and dropping a
//! transaction rolls it back.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use crate::activity::{Activity, ActivityFilter, NewActivity};
use crate::event::{Event, EventKind};
use crate::ids::{AccountId, EventId, InvoiceId, MerchantId, SubscriptionId, TaskId};
use crate::merchant::{InvalidMerchant, Merchant, NewMerchant};
use crate::metrics::{DailyMetrics, MetricsDelta};
use crate::operator::MerchantUpdate;
use crate::operator::token::TokenHash;
use crate::payment::CardFingerprint;
use crate::queue::{PruneReport, Retention, TaskWakeups, WorkerInfo};
use crate::recovery::Recovery;
use crate::subscription::SubscriptionState;
use crate::task::{Lease, NewTask, Task, TaskKind, TaskStatus, TaskUpdate};

/// An error from a store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database failed or could not be reached.
    #[error("database error while {operation}")]
    Database {
        /// The operation that failed, such as "claiming tasks".
        operation: &'static str,
        /// The driver's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A merchant with this connected account already exists.
    #[error(
        "a merchant with account {account} already exists; use that merchant or another account"
    )]
    DuplicateAccount {
        /// The account, or `platform` for the platform's own account.
        account: String,
    },
    /// A stored row could not be read back into a domain value.
    #[error("invalid row in {table}: {message}")]
    InvalidRow {
        /// The table.
        table: &'static str,
        /// The problem found.
        message: String,
    },
    /// A merchant to register has an invalid time zone or policy.
    #[error(transparent)]
    InvalidMerchant(#[from] InvalidMerchant),
}

/// One payment attempt on a card, counted for the card network caps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CardAttempt {
    /// The card.
    pub fingerprint: CardFingerprint,
    /// The merchant that made or saw the attempt.
    pub merchant_id: MerchantId,
    /// The invoice it paid.
    pub invoice_id: InvoiceId,
    /// A key unique to the attempt, so recording it again is a no-op: the
    /// retry's idempotency key, or `event:` and the Stripe event id.
    pub attempt_key: String,
    /// When the attempt was made.
    pub attempted_at: DateTime<Utc>,
}

/// A request to claim due tasks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimRequest {
    /// The worker's id, stored as the lease owner.
    pub worker_id: String,
    /// Only tasks of these kinds are claimed.
    pub kinds: Vec<TaskKind>,
    /// At most this many tasks are claimed.
    pub limit: u32,
    /// How long the lease lasts.
    pub lease_duration: Duration,
}

/// Filters for listing tasks; `None` means any.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskFilter {
    /// Only tasks in this status.
    pub status: Option<TaskStatus>,
    /// Only tasks of this merchant.
    pub merchant_id: Option<MerchantId>,
    /// At most this many, newest first. Default 100.
    pub limit: Option<u32>,
    /// Only tasks with an id lower than this (the page after it).
    pub before: Option<TaskId>,
}

/// How many tasks are in each status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskCounts {
    /// Pending tasks.
    pub pending: i64,
    /// Running tasks.
    pub running: i64,
    /// Completed tasks.
    pub completed: i64,
    /// Failed tasks.
    pub failed: i64,
    /// Cancelled tasks.
    pub cancelled: i64,
}

/// An event as recorded in `processed_events`. Its `Debug` output leaves
/// out the payload, which can carry card details.
#[derive(Clone, PartialEq)]
pub struct EventRecord {
    /// Stripe's event id.
    pub event_id: EventId,
    /// The connected account, `None` for the platform's own.
    pub account: Option<AccountId>,
    /// The event type.
    pub event_type: String,
    /// When Stripe created the event.
    pub created: DateTime<Utc>,
    /// The invoice the event is about, when the engine acts on it.
    pub invoice_id: Option<InvoiceId>,
    /// The subscription the event is about: the deleted one of
    /// `customer.subscription.deleted`, or the invoice's.
    pub subscription_id: Option<SubscriptionId>,
    /// The whole event.
    pub payload: serde_json::Value,
}

impl std::fmt::Debug for EventRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventRecord")
            .field("event_id", &self.event_id)
            .field("account", &self.account)
            .field("event_type", &self.event_type)
            .field("created", &self.created)
            .field("invoice_id", &self.invoice_id)
            .field("subscription_id", &self.subscription_id)
            .finish_non_exhaustive()
    }
}

impl From<&Event> for EventRecord {
    fn from(event: &Event) -> Self {
        Self {
            event_id: event.id.clone(),
            account: event.account.clone(),
            event_type: event.event_type.clone(),
            created: event.created,
            invoice_id: event_invoice(event),
            subscription_id: event_subscription(event),
            payload: event.payload.clone(),
        }
    }
}

/// Returns the invoice an event is about, for the kinds the engine acts on.
fn event_invoice(event: &Event) -> Option<InvoiceId> {
    match &event.kind {
        EventKind::InvoicePaymentFailed(invoice) | EventKind::InvoiceSettled { invoice, .. } => {
            Some(invoice.id.clone())
        }
        EventKind::PaymentDeclined { invoice_id, .. } => Some(invoice_id.clone()),
        _ => None,
    }
}

/// Returns the subscription an event is about, for the kinds the engine acts
/// on.
fn event_subscription(event: &Event) -> Option<SubscriptionId> {
    match &event.kind {
        EventKind::InvoicePaymentFailed(invoice) | EventKind::InvoiceSettled { invoice, .. } => {
            invoice.subscription_id.clone()
        }
        EventKind::SubscriptionDeleted { subscription_id }
        | EventKind::SubscriptionChanged {
            subscription_id, ..
        } => Some(subscription_id.clone()),
        _ => None,
    }
}

/// Reads, merchant registration and the task claim.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Starts a transaction.
    async fn begin(&self) -> Result<Box<dyn StoreTx>, StoreError>;

    /// Registers a merchant.
    ///
    /// # Errors
    ///
    /// [`StoreError::DuplicateAccount`] when the account is already
    /// registered.
    async fn create_merchant(&self, merchant: &NewMerchant) -> Result<Merchant, StoreError>;

    /// Returns a merchant by id.
    async fn merchant(&self, id: MerchantId) -> Result<Option<Merchant>, StoreError>;

    /// Returns the merchant of a connected account (`None`: the platform's
    /// own account).
    async fn merchant_by_account(
        &self,
        account: Option<&AccountId>,
    ) -> Result<Option<Merchant>, StoreError>;

    /// Lists merchants by id.
    async fn list_merchants(&self) -> Result<Vec<Merchant>, StoreError>;

    /// Claims due pending tasks of active merchants, setting each one's
    /// lease and counting the attempt. The batch is shared fairly across
    /// merchants; within a merchant, higher priority goes first, then older
    /// `run_at`. Tasks whose lease expired are not claimed until
    /// [`Store::rescue_expired_tasks`] hands them back.
    async fn claim_tasks(&self, request: &ClaimRequest) -> Result<Vec<Task>, StoreError>;

    /// Returns a task by id.
    async fn task(&self, id: TaskId) -> Result<Option<Task>, StoreError>;

    /// Lists tasks, newest first.
    async fn list_tasks(&self, filter: &TaskFilter) -> Result<Vec<Task>, StoreError>;

    /// Counts tasks per status.
    async fn task_counts(&self) -> Result<TaskCounts, StoreError>;

    /// Returns the earliest `run_at` of a task a claim for `kinds` could
    /// take: pending, with attempts left, of an active merchant.
    async fn next_run_at(&self, kinds: &[TaskKind]) -> Result<Option<DateTime<Utc>>, StoreError>;

    /// Returns an invoice's recovery.
    async fn recovery(
        &self,
        merchant: MerchantId,
        invoice: &InvoiceId,
    ) -> Result<Option<Recovery>, StoreError>;

    /// Lists recoveries, of one merchant or of all.
    async fn list_recoveries(
        &self,
        merchant: Option<MerchantId>,
    ) -> Result<Vec<Recovery>, StoreError>;

    /// Lists activity, newest first.
    async fn list_activity(&self, filter: &ActivityFilter) -> Result<Vec<Activity>, StoreError>;

    /// Lists daily metrics, of one merchant or of all, by day.
    async fn daily_metrics(
        &self,
        merchant: Option<MerchantId>,
    ) -> Result<Vec<DailyMetrics>, StoreError>;

    // Task engine: rescue, heartbeat, hand-back, worker identity, wake-ups
    // and pruning.

    /// Hands back running tasks whose lease expired: to pending, or to
    /// failed when their attempts are used up. Returns how many. The expiry
    /// and status are checked again at write time, so a task that its
    /// worker finished in between stays finished.
    async fn rescue_expired_tasks(&self) -> Result<u64, StoreError>;

    /// Extends each of `leases` that is still held to `lease_duration` from
    /// now. Returns the leases renewed, with their new expiry; a lease that
    /// is missing was lost, and writes under it will be rejected.
    async fn heartbeat_tasks(
        &self,
        leases: &[Lease],
        lease_duration: Duration,
    ) -> Result<Vec<Lease>, StoreError>;

    /// Hands the tasks of `leases` that are still held back to pending, due
    /// now, and ends the leases. With `unstarted`, the attempt that the
    /// claim counted is given back, because the task never ran. Returns how
    /// many.
    async fn release_tasks(&self, leases: &[Lease], unstarted: bool) -> Result<u64, StoreError>;

    /// Registers a start of a worker; `id` must be new.
    async fn register_worker(&self, id: uuid::Uuid, name: &str) -> Result<(), StoreError>;

    /// Records that the worker `id` is alive now.
    async fn worker_heartbeat(&self, id: uuid::Uuid) -> Result<(), StoreError>;

    /// Records that the worker `id` shut down gracefully.
    async fn stop_worker(&self, id: uuid::Uuid) -> Result<(), StoreError>;

    /// Lists registered workers, newest start first.
    async fn list_workers(&self) -> Result<Vec<WorkerInfo>, StoreError>;

    /// Subscribes to wake-ups sent when a due task is inserted or handed
    /// back. Returns `None` when the store sends none; workers then poll.
    async fn listen_for_tasks(&self) -> Result<Option<Box<dyn TaskWakeups>>, StoreError>;

    /// Deletes finished tasks, processed events and workers older than
    /// `retention`, in statements of at most `retention.batch_size` rows,
    /// until none is left. Returns how many rows it deleted.
    async fn prune(&self, retention: &Retention) -> Result<PruneReport, StoreError>;

    // Operator API: the reads and changes behind `crate::operator`. A
    // `merchant` argument of `Some` restricts the statement to that
    // merchant's rows, and `None` covers every merchant.

    /// Counts tasks per status, of one merchant or of all.
    async fn task_counts_of(&self, merchant: Option<MerchantId>) -> Result<TaskCounts, StoreError>;

    /// Lists at most `limit` merchants by id, starting after `after`.
    async fn list_merchants_page(
        &self,
        after: Option<MerchantId>,
        limit: u32,
    ) -> Result<Vec<Merchant>, StoreError>;

    /// Registers a merchant and stores the hash of its API token, in one
    /// transaction.
    ///
    /// # Errors
    ///
    /// [`StoreError::DuplicateAccount`] when the account is already
    /// registered.
    async fn create_merchant_with_token(
        &self,
        merchant: &NewMerchant,
        token_hash: &TokenHash,
    ) -> Result<Merchant, StoreError>;

    /// Returns the merchant whose API token has this hash.
    async fn merchant_by_token(
        &self,
        token_hash: &TokenHash,
    ) -> Result<Option<Merchant>, StoreError>;

    /// Changes a merchant's policy and status; returns `None` when no
    /// merchant has this id.
    async fn update_merchant(
        &self,
        id: MerchantId,
        update: &MerchantUpdate,
    ) -> Result<Option<Merchant>, StoreError>;

    /// Sends a failed task back to pending, due now, with its attempts reset
    /// to zero.
    async fn retry_failed_task(
        &self,
        id: TaskId,
        merchant: Option<MerchantId>,
    ) -> Result<TaskChange, StoreError>;

    /// Deletes a task that is not running.
    async fn delete_task(
        &self,
        id: TaskId,
        merchant: Option<MerchantId>,
    ) -> Result<TaskChange, StoreError>;

    /// Deletes completed tasks; returns how many.
    async fn delete_completed_tasks(&self, merchant: Option<MerchantId>)
    -> Result<u64, StoreError>;

    /// Claims due tasks like [`Store::claim_tasks`], of one merchant only.
    async fn claim_merchant_tasks(
        &self,
        request: &ClaimRequest,
        merchant: MerchantId,
    ) -> Result<Vec<Task>, StoreError>;

    /// Returns the versions of the migrations this store embeds that the
    /// database has not applied.
    async fn pending_migrations(&self) -> Result<Vec<i64>, StoreError>;

    /// Returns the earliest `run_at` of a pending task that is due now, of
    /// any kind and any merchant.
    async fn oldest_due_run_at(&self) -> Result<Option<DateTime<Utc>>, StoreError>;
    // Subscriptions: the newest known state of each.

    /// Returns the newest known state of a subscription.
    async fn subscription_state(
        &self,
        merchant: MerchantId,
        subscription: &SubscriptionId,
    ) -> Result<Option<SubscriptionState>, StoreError>;
}

/// One transaction. Dropping it without [`StoreTx::commit`] rolls it back.
#[async_trait]
pub trait StoreTx: Send {
    /// Records an event; returns `false` when it was already recorded, in
    /// which case the caller must apply nothing. A concurrent transaction
    /// recording the same event waits for this one to end.
    async fn insert_event(&mut self, event: &EventRecord) -> Result<bool, StoreError>;

    /// Serializes the intake of events about one invoice: waits until no
    /// other transaction holds the invoice's lock, and holds it until this
    /// transaction ends.
    async fn lock_invoice(
        &mut self,
        merchant: MerchantId,
        invoice: &InvoiceId,
    ) -> Result<(), StoreError>;

    /// Serializes the intake of events about one subscription, like
    /// [`StoreTx::lock_invoice`]. Take it before any invoice lock.
    async fn lock_subscription(
        &mut self,
        merchant: MerchantId,
        subscription: &SubscriptionId,
    ) -> Result<(), StoreError>;

    /// Returns whether a `customer.subscription.deleted` of the subscription
    /// was recorded.
    async fn subscription_deleted(
        &mut self,
        account: Option<&AccountId>,
        subscription: &SubscriptionId,
    ) -> Result<bool, StoreError>;

    /// Returns whether an `invoice.payment_failed` of the invoice was recorded
    /// at or after `since` (by the database's clock).
    async fn failure_recorded_since(
        &mut self,
        account: Option<&AccountId>,
        invoice: &InvoiceId,
        since: DateTime<Utc>,
    ) -> Result<bool, StoreError>;

    /// Returns the type of a recorded event that settled the invoice
    /// (`invoice.paid`, `invoice.payment_succeeded`, `invoice.voided`,
    /// `invoice.marked_uncollectible` or `invoice.deleted`), if any.
    async fn invoice_settlement(
        &mut self,
        account: Option<&AccountId>,
        invoice: &InvoiceId,
    ) -> Result<Option<String>, StoreError>;

    /// Returns the merchant of a connected account.
    async fn merchant_by_account(
        &mut self,
        account: Option<&AccountId>,
    ) -> Result<Option<Merchant>, StoreError>;

    /// Locks and returns an invoice's recovery until the transaction ends.
    async fn lock_recovery(
        &mut self,
        merchant: MerchantId,
        invoice: &InvoiceId,
    ) -> Result<Option<Recovery>, StoreError>;

    /// Inserts a recovery; returns `false` when a concurrent transaction
    /// inserted one for the same invoice first (lock and read it then).
    async fn insert_recovery(&mut self, recovery: &Recovery) -> Result<bool, StoreError>;

    /// Writes a locked recovery back.
    async fn update_recovery(&mut self, recovery: &Recovery) -> Result<(), StoreError>;

    /// Locks and returns the recoveries of a subscription that have not
    /// ended.
    async fn lock_open_recoveries_of_subscription(
        &mut self,
        merchant: MerchantId,
        subscription: &SubscriptionId,
    ) -> Result<Vec<Recovery>, StoreError>;

    /// Inserts a task; returns `None` when a live task of the merchant has
    /// the same dedupe key.
    async fn insert_task(&mut self, task: &NewTask) -> Result<Option<TaskId>, StoreError>;

    /// Cancels the pending retry tasks of an invoice; returns how many.
    async fn cancel_pending_tasks(
        &mut self,
        merchant: MerchantId,
        invoice: &InvoiceId,
    ) -> Result<u64, StoreError>;

    /// Applies `update` to a running task, only while `lease` is still the
    /// task's lease. Returns `false` when it is not, because the lease expired
    /// and the task was rescued or claimed again. The caller must then roll
    /// back.
    async fn finish_task(&mut self, lease: &Lease, update: &TaskUpdate)
    -> Result<bool, StoreError>;

    /// Adds to a merchant's metrics of one day and currency.
    async fn add_metrics(&mut self, delta: &MetricsDelta) -> Result<(), StoreError>;

    /// Appends to the activity ledger.
    async fn insert_activity(&mut self, activity: &NewActivity) -> Result<(), StoreError>;

    /// Commits the transaction.
    async fn commit(self: Box<Self>) -> Result<(), StoreError>;

    // Recovery policy: card network caps.

    /// Stores the fingerprint of the card an invoice's payments use.
    async fn set_recovery_card(
        &mut self,
        merchant: MerchantId,
        invoice: &InvoiceId,
        fingerprint: &CardFingerprint,
    ) -> Result<(), StoreError>;

    /// Returns the fingerprint of the card an invoice's payments use, once a
    /// decline carried it.
    async fn recovery_card(
        &mut self,
        merchant: MerchantId,
        invoice: &InvoiceId,
    ) -> Result<Option<CardFingerprint>, StoreError>;

    /// Serializes the cap check of one card across all merchants: waits
    /// until no other transaction holds the card's lock, and holds it until
    /// this transaction ends.
    async fn lock_card(&mut self, fingerprint: &CardFingerprint) -> Result<(), StoreError>;

    /// Lists the card's attempts after `since`, oldest first.
    async fn card_attempts_since(
        &mut self,
        fingerprint: &CardFingerprint,
        since: DateTime<Utc>,
    ) -> Result<Vec<CardAttempt>, StoreError>;

    /// Records an attempt; returns `false` when its key was recorded before.
    async fn insert_card_attempt(&mut self, attempt: &CardAttempt) -> Result<bool, StoreError>;
    // Subscriptions: the newest known state of each.

    /// Returns the newest known state of a subscription. Call it under
    /// [`StoreTx::lock_subscription`].
    async fn subscription_state(
        &mut self,
        merchant: MerchantId,
        subscription: &SubscriptionId,
    ) -> Result<Option<SubscriptionState>, StoreError>;

    /// Inserts or replaces a subscription's state.
    async fn put_subscription_state(&mut self, state: &SubscriptionState)
    -> Result<(), StoreError>;
}

/// Returns the day a metric counts on: the date at `now` in the merchant's
/// time zone, so a merchant's day ends at its own midnight. Callers pass
/// [`Merchant::parsed_time_zone`], which falls back to UTC for a name the
/// time zone database does not know.
pub fn metrics_day(now: DateTime<Utc>, time_zone: chrono_tz::Tz) -> NaiveDate {
    now.with_timezone(&time_zone).date_naive()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(text: &str) -> DateTime<Utc> {
        text.parse().unwrap()
    }

    fn date(text: &str) -> NaiveDate {
        text.parse().unwrap()
    }

    #[test]
    fn metrics_day_follows_time_zone() {
        let cases = [
            ("2026-11-18T23:30:00Z", "UTC", "2026-11-18"),
            ("2026-11-18T23:30:00Z", "Asia/Tokyo", "2026-11-19"),
            ("2026-11-18T03:30:00Z", "America/New_York", "2026-11-17"),
            // New York is UTC-4 in summer time and UTC-5 after it ends on
            // 2026-11-01 at 06:00 UTC.
            ("2026-11-01T04:30:00Z", "America/New_York", "2026-11-01"),
            ("2026-11-01T03:30:00Z", "America/New_York", "2026-10-31"),
        ];
        for (now, zone, expected) in cases {
            let zone: chrono_tz::Tz = zone.parse().unwrap();
            assert_eq!(metrics_day(utc(now), zone), date(expected), "{now} {zone}");
        }
    }

    #[test]
    fn metrics_day_of_unknown_zone_is_utc() {
        let now = utc("2026-11-18T23:30:00Z");
        let merchant = Merchant {
            id: MerchantId::new(1),
            name: "Mars".to_owned(),
            account_id: None,
            status: crate::merchant::MerchantStatus::Active,
            policy: crate::policy::RecoveryPolicy::default(),
            time_zone: "Mars/Olympus".to_owned(),
            created_at: now,
        };

        assert_eq!(
            metrics_day(now, merchant.parsed_time_zone()),
            date("2026-11-18")
        );
    }
}

// Operator API

/// The result of a store change to one task that the task's status may
/// prevent.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum TaskChange {
    /// The change was made; the task as it is now, or as it was before a
    /// delete.
    Changed(Box<Task>),
    /// No task with this id exists within the merchant restriction.
    NotFound,
    /// The task's status does not allow the change.
    WrongStatus(TaskStatus),
    /// Retrying the task would make a second live task with its dedupe key.
    DuplicateDedupeKey(String),
}
