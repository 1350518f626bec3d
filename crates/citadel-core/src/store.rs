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
use crate::merchant::{Merchant, NewMerchant};
use crate::metrics::{DailyMetrics, MetricsDelta};
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

/// An event as recorded in `processed_events`.
#[derive(Debug, Clone, PartialEq)]
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

    /// Claims due pending tasks of active merchants, oldest `run_at` first,
    /// setting each one's lease and counting the attempt. Before claiming,
    /// the store hands back every task whose lease expired: to pending, or to
    /// failed when its attempts are used up.
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
/// time zone (an IANA name such as `Asia/Tokyo`), so a merchant's day ends at
/// its own midnight.
///
/// NOTE: a name the time zone database does not know counts on the UTC day,
/// with a warning in the log. Merchant registration does not check the name.
pub fn metrics_day(now: DateTime<Utc>, time_zone: &str) -> NaiveDate {
    match time_zone.parse::<chrono_tz::Tz>() {
        Ok(zone) => now.with_timezone(&zone).date_naive(),
        Err(error) => {
            tracing::warn!(
                merchant.time_zone = time_zone,
                %error,
                "unknown time zone: metrics count on the UTC day"
            );
            now.date_naive()
        }
    }
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
            assert_eq!(metrics_day(utc(now), zone), date(expected), "{now} {zone}");
        }
    }

    #[test]
    fn metrics_day_of_unknown_zone_is_utc() {
        let now = utc("2026-11-18T23:30:00Z");

        assert_eq!(metrics_day(now, "Mars/Olympus"), date("2026-11-18"));
    }
}
