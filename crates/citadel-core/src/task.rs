//! Tasks and their state machine.
//!
//! A task is one row of the queue: a unit of work for one merchant that runs
//! at or after its `run_at`. Its life is
//!
//! ```text
//!            claim              complete
//! pending ─────────▶ running ──────────▶ completed
//!   │  ▲               │ │
//!   │  └───────────────┘ │ fail
//!   │ reschedule, rescue ▼
//!   │                  failed ──operator retry──▶ pending
//!   │ cancel
//!   ▼
//! cancelled
//! ```
//!
//! [`TaskStatus::apply`] is the only place that decides whether a move is
//! allowed. Stores apply a move with a guarded update (`WHERE status = … AND
//! lease_token = …`), so a worker whose lease was taken over can never
//! overwrite a newer state.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::ids::{InvoiceId, MerchantId, TaskId};

/// The state of a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskStatus {
    /// Waiting for its `run_at`, or due and not yet claimed.
    Pending,
    /// Claimed by a worker that holds its lease.
    Running,
    /// Finished; nothing more will happen to it.
    Completed,
    /// Stopped after its attempts ran out or after an error no retry can fix;
    /// an operator can send it back to pending.
    Failed,
    /// Withdrawn before it ran, for example because the invoice was paid.
    Cancelled,
}

impl TaskStatus {
    /// Every status, in the order of the diagram above.
    pub const ALL: [TaskStatus; 5] = [
        TaskStatus::Pending,
        TaskStatus::Running,
        TaskStatus::Completed,
        TaskStatus::Failed,
        TaskStatus::Cancelled,
    ];

    /// Returns the name stored in the database and shown in APIs.
    pub const fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Pending => "pending",
            TaskStatus::Running => "running",
            TaskStatus::Completed => "completed",
            TaskStatus::Failed => "failed",
            TaskStatus::Cancelled => "cancelled",
        }
    }

    /// Returns the status that `transition` leads to from this one.
    ///
    /// # Errors
    ///
    /// Returns [`InvalidTransition`] when the move is not an edge of the state
    /// machine, such as completing a task that is not running.
    ///
    /// # Examples
    ///
    /// ```
    /// use citadel_core::task::{TaskStatus, Transition};
    ///
    /// let running = TaskStatus::Pending.apply(Transition::Claim).unwrap();
    /// assert_eq!(running, TaskStatus::Running);
    /// assert!(TaskStatus::Completed.apply(Transition::Claim).is_err());
    /// ```
    pub fn apply(self, transition: Transition) -> Result<TaskStatus, InvalidTransition> {
        use TaskStatus::*;
        use Transition::*;

        let next = match (self, transition) {
            (Pending, Claim) => Running,
            (Running, Complete) => Completed,
            (Running, Reschedule) | (Running, Rescue) => Pending,
            (Running, Fail) => Failed,
            (Failed, OperatorRetry) => Pending,
            (Pending, Cancel) => Cancelled,
            (from, transition) => return Err(InvalidTransition { from, transition }),
        };
        Ok(next)
    }

    /// Returns whether no transition leaves this status, except an
    /// operator's retry of a failed task.
    pub const fn is_final(self) -> bool {
        matches!(
            self,
            TaskStatus::Completed | TaskStatus::Failed | TaskStatus::Cancelled
        )
    }
}

impl fmt::Display for TaskStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error returned for a status name that is not one of [`TaskStatus::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid task status {0:?}: expected one of pending, running, completed, failed, cancelled"
)]
pub struct UnknownStatus(pub String);

impl FromStr for TaskStatus {
    type Err = UnknownStatus;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        TaskStatus::ALL
            .into_iter()
            .find(|status| status.as_str() == value)
            .ok_or_else(|| UnknownStatus(value.to_owned()))
    }
}

/// A move between task states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transition {
    /// A worker takes a due task and its lease.
    Claim,
    /// The worker finished the task.
    Complete,
    /// The worker requests another run later, after a transient error.
    Reschedule,
    /// The lease expired without the worker finishing; the task is handed back.
    Rescue,
    /// The task stops for good: attempts used up, or an error no retry fixes.
    Fail,
    /// An operator sends a failed task back to the queue.
    OperatorRetry,
    /// The task is withdrawn before it ran.
    Cancel,
}

/// The error returned when a transition is not allowed from a status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid task transition {transition:?} from status {from}")]
pub struct InvalidTransition {
    /// The status the task was in.
    pub from: TaskStatus,
    /// The transition that was asked for.
    pub transition: Transition,
}

/// The kind of work a task does, stored as text so workers in other languages can add
/// their own kinds.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TaskKind(String);

impl TaskKind {
    /// The kind of the task that retries a failed invoice payment.
    pub const RETRY_PAYMENT: &'static str = "retry_payment";

    /// The kind of the task that sends a customer notice; its payload is a
    /// [`Notice`](crate::notice::Notice).
    pub const SEND_NOTICE: &'static str = "send_notice";

    /// Creates a kind from its name.
    pub fn new(name: impl Into<String>) -> Self {
        Self(name.into())
    }

    /// Returns the retry-payment kind.
    pub fn retry_payment() -> Self {
        Self::new(Self::RETRY_PAYMENT)
    }

    /// The kind of the task that runs a merchant's final action (mark the
    /// invoice uncollectible, cancel the subscription) on the connected
    /// account.
    pub const FINAL_ACTION: &'static str = "final_action";

    /// The kind of the task that closes a recovery still open when its
    /// window ends.
    pub const CLOSE_RECOVERY: &'static str = "close_recovery";

    /// Returns the kind's name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TaskKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The payload of a [`TaskKind::RETRY_PAYMENT`] task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetryPayment {
    /// The invoice to pay.
    pub invoice_id: InvoiceId,
    /// The number of this scheduled retry of the invoice, starting at 1.
    pub attempt: u32,
    /// The key sent as `Idempotency-Key`. It is fixed when the task is created,
    /// so every run of this task (after a timeout, a crash or a rescue) sends
    /// the same key and Stripe charges at most once.
    pub idempotency_key: String,
}

/// The lease a worker holds on a running task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// The task the lease is on.
    pub task_id: TaskId,
    /// The worker that owns it.
    pub owner: String,
    /// A token that changes on every claim; each later write checks it.
    pub token: Uuid,
    /// When the lease runs out; after it, the store hands the task back.
    pub expires_at: DateTime<Utc>,
}

/// A task as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Task {
    /// The task's id.
    pub id: TaskId,
    /// The merchant the task works for.
    pub merchant_id: MerchantId,
    /// The kind of work.
    pub kind: TaskKind,
    /// The invoice the task works on, if any.
    pub invoice_id: Option<InvoiceId>,
    /// Kind-specific input, such as a [`RetryPayment`].
    pub payload: serde_json::Value,
    /// The task's state.
    pub status: TaskStatus,
    /// When the task becomes due.
    pub run_at: DateTime<Utc>,
    /// How many times a worker has claimed it.
    pub attempts: i32,
    /// How many claims are allowed before it fails.
    pub max_attempts: i32,
    /// The error of the last failed run, if any.
    pub last_error: Option<String>,
    /// The lease, while running.
    pub lease: Option<Lease>,
    /// A key unique per merchant among live tasks, so the same work is never
    /// queued twice.
    pub dedupe_key: Option<String>,
    /// Higher runs first among the merchant's due tasks.
    #[serde(default)]
    pub priority: i16,
    /// When the task was created.
    pub created_at: DateTime<Utc>,
    /// When the task last changed.
    pub updated_at: DateTime<Utc>,
}

impl Task {
    /// Decodes the payload of a retry-payment task.
    ///
    /// # Errors
    ///
    /// Returns the decoding error when the payload is not a [`RetryPayment`].
    pub fn retry_payment(&self) -> Result<RetryPayment, serde_json::Error> {
        serde_json::from_value(self.payload.clone())
    }
}

/// A task to insert.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewTask {
    /// The merchant the task works for.
    pub merchant_id: MerchantId,
    /// The kind of work.
    pub kind: TaskKind,
    /// The invoice the task works on, if any.
    pub invoice_id: Option<InvoiceId>,
    /// Kind-specific input.
    pub payload: serde_json::Value,
    /// When the task becomes due.
    pub run_at: DateTime<Utc>,
    /// How many claims are allowed before it fails.
    pub max_attempts: i32,
    /// If set, no second live task of the merchant with the same key is
    /// inserted.
    pub dedupe_key: Option<String>,
    /// Higher runs first among the merchant's due tasks: from 0 (the
    /// default) to [`MAX_PRIORITY`].
    #[serde(default)]
    pub priority: i16,
}

/// The highest task priority. The database rejects a priority outside
/// `0..=MAX_PRIORITY`, because the claim probes each level on its own.
pub const MAX_PRIORITY: i16 = 9;

/// The default number of claims of a task before it fails. Transient errors
/// (timeouts, HTTP 5xx, rate limits) use them up; declines do not.
pub const DEFAULT_MAX_ATTEMPTS: i32 = 8;

/// The end of a running task, applied by the store under the task's lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskUpdate {
    /// The task is done.
    Complete,
    /// Run the task again at `run_at`, keeping `error` as its last error.
    Reschedule {
        /// When the task becomes due again.
        run_at: DateTime<Utc>,
        /// The reason the run did not finish.
        error: String,
        /// Whether the claim's attempt is given back, because the run was
        /// turned away before doing any work (a rate limit) and must not use
        /// up the task's attempts.
        refund_attempt: bool,
    },
    /// The task stops for good with `error`.
    Fail {
        /// The reason the task stopped.
        error: String,
    },
}

impl TaskUpdate {
    /// Returns the transition this update makes from `running`.
    pub fn transition(&self) -> Transition {
        match self {
            TaskUpdate::Complete => Transition::Complete,
            TaskUpdate::Reschedule { .. } => Transition::Reschedule,
            TaskUpdate::Fail { .. } => Transition::Fail,
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const TRANSITIONS: [Transition; 7] = [
        Transition::Claim,
        Transition::Complete,
        Transition::Reschedule,
        Transition::Rescue,
        Transition::Fail,
        Transition::OperatorRetry,
        Transition::Cancel,
    ];

    /// The edges of the state machine, written out once more by hand.
    const EDGES: [(TaskStatus, TaskStatus); 7] = [
        (TaskStatus::Pending, TaskStatus::Running),
        (TaskStatus::Running, TaskStatus::Completed),
        (TaskStatus::Running, TaskStatus::Pending),
        (TaskStatus::Running, TaskStatus::Failed),
        (TaskStatus::Failed, TaskStatus::Pending),
        (TaskStatus::Pending, TaskStatus::Cancelled),
        (TaskStatus::Running, TaskStatus::Pending),
    ];

    #[test]
    fn claim_moves_pending_to_running() {
        assert_eq!(
            TaskStatus::Pending.apply(Transition::Claim),
            Ok(TaskStatus::Running)
        );
    }

    #[test]
    fn complete_requires_running() {
        for status in [
            TaskStatus::Pending,
            TaskStatus::Completed,
            TaskStatus::Failed,
            TaskStatus::Cancelled,
        ] {
            let err = status.apply(Transition::Complete).unwrap_err();
            assert_eq!(err.from, status);
        }
        assert_eq!(
            TaskStatus::Running.apply(Transition::Complete),
            Ok(TaskStatus::Completed)
        );
    }

    #[test]
    fn cancel_only_from_pending() {
        assert_eq!(
            TaskStatus::Pending.apply(Transition::Cancel),
            Ok(TaskStatus::Cancelled)
        );
        assert!(TaskStatus::Running.apply(Transition::Cancel).is_err());
        assert!(TaskStatus::Completed.apply(Transition::Cancel).is_err());
    }

    #[test]
    fn operator_retry_only_from_failed() {
        assert_eq!(
            TaskStatus::Failed.apply(Transition::OperatorRetry),
            Ok(TaskStatus::Pending)
        );
        for status in [
            TaskStatus::Pending,
            TaskStatus::Running,
            TaskStatus::Completed,
            TaskStatus::Cancelled,
        ] {
            assert!(status.apply(Transition::OperatorRetry).is_err(), "{status}");
        }
    }

    #[test]
    fn completed_and_cancelled_accept_nothing() {
        for transition in TRANSITIONS {
            assert!(TaskStatus::Completed.apply(transition).is_err());
            assert!(TaskStatus::Cancelled.apply(transition).is_err());
        }
    }

    #[test]
    fn status_names_round_trip() {
        for status in TaskStatus::ALL {
            assert_eq!(status.as_str().parse::<TaskStatus>(), Ok(status));
        }
        let err = "done".parse::<TaskStatus>().unwrap_err();
        assert!(err.to_string().contains("\"done\""));
    }

    #[test]
    fn invalid_transition_message_names_both_sides() {
        let err = TaskStatus::Completed.apply(Transition::Claim).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid task transition Claim from status completed"
        );
    }

    proptest! {
        #[test]
        fn random_sequences_stay_on_the_graph(steps in prop::collection::vec(0..TRANSITIONS.len(), 0..64)) {
            let mut status = TaskStatus::Pending;
            for index in steps {
                match status.apply(TRANSITIONS[index]) {
                    Ok(next) => {
                        prop_assert!(EDGES.contains(&(status, next)), "{status} -> {next}");
                        status = next;
                    }
                    Err(err) => prop_assert_eq!(err.from, status),
                }
            }
        }
    }
}
