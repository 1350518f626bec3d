//! The activity ledger: one row per thing that happened, with the ids
//! involved and a sentence that states the decision and its reason.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::ids::{ActivityId, EventId, InvoiceId, MerchantId, TaskId};

/// The kind of thing that happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
#[serde(rename_all = "snake_case")]
pub enum ActivityKind {
    /// An event was applied but changed nothing (for example an old event for
    /// a recovery that has ended).
    EventNoted,
    /// A recovery opened for a failed invoice.
    RecoveryOpened,
    /// A decline reason was recorded for an invoice.
    DeclineRecorded,
    /// A retry was scheduled.
    RetryScheduled,
    /// A retry was made and declined.
    RetryDeclined,
    /// A retry was not made or not scheduled: the recovery had ended, or the
    /// merchant is in passive mode.
    RetrySkipped,
    /// A retry started a payment that has not settled yet.
    PaymentProcessing,
    /// The invoice was paid.
    PaymentRecovered,
    /// The recovery ended without payment.
    RecoveryLost,
    /// Pending retries were cancelled.
    TasksCancelled,
    /// A task will run again after a transient error.
    TaskRescheduled,
    /// A task failed for good.
    TaskFailed,
    /// A retry was moved later because the card reached its network cap.
    RetryPostponed,
    /// The merchant's final action was scheduled, or not taken and why.
    FinalActionScheduled,
    /// The merchant's final action was done on the connected account.
    FinalActionTaken,
    /// A customer notice was sent.
    NoticeSent,
    /// Stripe answered a retry that the invoice needs no payment, and the
    /// recovery ended without counting as recovered or lost.
    RecoveryStopped,
}

impl ActivityKind {
    /// Every kind.
    pub const ALL: [ActivityKind; 17] = [
        ActivityKind::EventNoted,
        ActivityKind::RecoveryOpened,
        ActivityKind::DeclineRecorded,
        ActivityKind::RetryScheduled,
        ActivityKind::RetryDeclined,
        ActivityKind::RetrySkipped,
        ActivityKind::PaymentProcessing,
        ActivityKind::PaymentRecovered,
        ActivityKind::RecoveryLost,
        ActivityKind::TasksCancelled,
        ActivityKind::TaskRescheduled,
        ActivityKind::TaskFailed,
        ActivityKind::RetryPostponed,
        ActivityKind::FinalActionScheduled,
        ActivityKind::FinalActionTaken,
        ActivityKind::NoticeSent,
        ActivityKind::RecoveryStopped,
    ];

    /// Returns the name stored in the database.
    pub const fn as_str(self) -> &'static str {
        match self {
            ActivityKind::EventNoted => "event_noted",
            ActivityKind::RecoveryOpened => "recovery_opened",
            ActivityKind::DeclineRecorded => "decline_recorded",
            ActivityKind::RetryScheduled => "retry_scheduled",
            ActivityKind::RetryDeclined => "retry_declined",
            ActivityKind::RetrySkipped => "retry_skipped",
            ActivityKind::PaymentProcessing => "payment_processing",
            ActivityKind::PaymentRecovered => "payment_recovered",
            ActivityKind::RecoveryLost => "recovery_lost",
            ActivityKind::TasksCancelled => "tasks_cancelled",
            ActivityKind::TaskRescheduled => "task_rescheduled",
            ActivityKind::TaskFailed => "task_failed",
            ActivityKind::RetryPostponed => "retry_postponed",
            ActivityKind::FinalActionScheduled => "final_action_scheduled",
            ActivityKind::FinalActionTaken => "final_action_taken",
            ActivityKind::NoticeSent => "notice_sent",
            ActivityKind::RecoveryStopped => "recovery_stopped",
        }
    }
}

impl fmt::Display for ActivityKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error returned for an activity kind name that is not known.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid activity kind {0:?}")]
pub struct UnknownActivityKind(pub String);

impl FromStr for ActivityKind {
    type Err = UnknownActivityKind;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        ActivityKind::ALL
            .into_iter()
            .find(|kind| kind.as_str() == value)
            .ok_or_else(|| UnknownActivityKind(value.to_owned()))
    }
}

/// An activity row to append.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewActivity {
    /// The merchant concerned.
    pub merchant_id: MerchantId,
    /// What happened.
    pub kind: ActivityKind,
    /// The task concerned, if any.
    pub task_id: Option<TaskId>,
    /// The invoice concerned, if any.
    pub invoice_id: Option<InvoiceId>,
    /// The event that caused it, if any.
    pub event_id: Option<EventId>,
    /// One sentence that states the decision and its reason.
    pub message: String,
    /// Structured details, such as the decline code.
    pub details: serde_json::Value,
}

impl NewActivity {
    /// Creates a row with no ids but the merchant's and empty details.
    pub fn new(merchant_id: MerchantId, kind: ActivityKind, message: impl Into<String>) -> Self {
        Self {
            merchant_id,
            kind,
            task_id: None,
            invoice_id: None,
            event_id: None,
            message: message.into(),
            details: serde_json::Value::Null,
        }
    }

    /// Sets the invoice.
    pub fn invoice(mut self, invoice_id: &InvoiceId) -> Self {
        self.invoice_id = Some(invoice_id.clone());
        self
    }

    /// Sets the task.
    pub fn task(mut self, task_id: TaskId) -> Self {
        self.task_id = Some(task_id);
        self
    }

    /// Sets the event.
    pub fn event(mut self, event_id: &EventId) -> Self {
        self.event_id = Some(event_id.clone());
        self
    }

    /// Sets the details.
    pub fn details(mut self, details: serde_json::Value) -> Self {
        self.details = details;
        self
    }
}

/// An activity row as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Activity {
    /// The row's id; ids grow with time.
    pub id: ActivityId,
    /// When it was written.
    pub created_at: DateTime<Utc>,
    /// The rest of the row.
    #[serde(flatten)]
    pub entry: NewActivity,
}

/// Filters for listing activity; `None` means any.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ActivityFilter {
    /// Only rows of this merchant.
    pub merchant_id: Option<MerchantId>,
    /// Only rows of this kind.
    pub kind: Option<ActivityKind>,
    /// At most this many. Default 100.
    pub limit: Option<u32>,
    /// Only rows older than this id (the page after it).
    pub before: Option<ActivityId>,
}
