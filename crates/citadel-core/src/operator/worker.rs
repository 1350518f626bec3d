//! External workers: processes in any language that claim tasks and report
//! their outcome through the operator API, under the same leases as
//! Citadel's own workers.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{Operator, OperatorError, Scope, invalid};
use crate::activity::{ActivityKind, NewActivity};
use crate::ids::TaskId;
use crate::store::{ClaimRequest, Store};
use crate::task::{Lease, Task, TaskStatus, TaskUpdate};

/// The maximum number of tasks one external claim may take.
pub const MAX_CLAIM_LIMIT: u32 = 100;

/// The maximum lease an external claim may request: one hour.
pub const MAX_LEASE: Duration = Duration::from_secs(60 * 60);

/// The outcome of an external worker's run of a task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum WorkerOutcome {
    /// The task is done.
    Completed,
    /// Run the task again at `run_at` (now when absent), after `error`.
    Retry {
        /// The reason the run did not finish.
        error: String,
        /// When the task becomes due again.
        run_at: Option<DateTime<Utc>>,
    },
    /// The task stops for good with `error`.
    Failed {
        /// The reason the task stopped.
        error: String,
    },
}

/// An external worker's report on a claimed task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompleteRequest {
    /// The lease token the claim returned.
    pub lease_token: Uuid,
    /// The run's outcome.
    #[serde(flatten)]
    pub outcome: WorkerOutcome,
}

impl<S: Store> Operator<'_, S> {
    /// Claims due tasks for an external worker. A merchant scope claims only
    /// its own merchant's tasks, and no scope claims tasks of a paused
    /// merchant.
    ///
    /// # Errors
    ///
    /// [`OperatorError::InvalidInput`] for an empty worker id or kind list,
    /// a limit of 0 or above [`MAX_CLAIM_LIMIT`], or a lease shorter than a
    /// second or longer than [`MAX_LEASE`].
    pub async fn claim(&self, request: ClaimRequest) -> Result<Vec<Task>, OperatorError> {
        validate_claim(&request)?;
        // An external worker runs no rescue timer of its own, so expired
        // leases are handed back before each of its claims.
        self.store.rescue_expired_tasks().await?;
        let tasks = match self.scope {
            Scope::Operator => self.store.claim_tasks(&request).await?,
            Scope::Merchant(own) => self.store.claim_merchant_tasks(&request, own).await?,
        };
        tracing::debug!(worker.id = %request.worker_id, claim.count = tasks.len(), "external claim");
        Ok(tasks)
    }

    /// Records an external worker's outcome of a running task, checked
    /// against its lease token, with a ledger row for a retry or failure.
    ///
    /// # Errors
    ///
    /// [`OperatorError::TaskNotFound`] when the task is not in the scope,
    /// [`OperatorError::LeaseMismatch`] when the task is not running under
    /// this token, and [`OperatorError::InvalidInput`] for an empty error.
    pub async fn complete(
        &self,
        id: TaskId,
        request: CompleteRequest,
    ) -> Result<Task, OperatorError> {
        let task = self.task(id).await?;
        let lease = match &task.lease {
            Some(lease)
                if task.status == TaskStatus::Running && lease.token == request.lease_token =>
            {
                Lease {
                    task_id: id,
                    ..lease.clone()
                }
            }
            _ => return Err(OperatorError::LeaseMismatch { id }),
        };
        let (update, activity) = outcome_update(&task, request.outcome)?;

        let mut tx = self.store.begin().await?;
        if !tx.finish_task(&lease, &update).await? {
            return Err(OperatorError::LeaseMismatch { id });
        }
        if let Some(activity) = activity {
            tx.insert_activity(&activity).await?;
        }
        tx.commit().await?;
        self.task(id).await
    }
}

/// Returns the store update and ledger row of an external outcome.
fn outcome_update(
    task: &Task,
    outcome: WorkerOutcome,
) -> Result<(TaskUpdate, Option<NewActivity>), OperatorError> {
    let entry = |kind, message: String| {
        let mut row = NewActivity::new(task.merchant_id, kind, message).task(task.id);
        row.invoice_id.clone_from(&task.invoice_id);
        row
    };
    Ok(match outcome {
        WorkerOutcome::Completed => (TaskUpdate::Complete, None),
        WorkerOutcome::Retry { error, run_at } => {
            require_error(&error)?;
            let run_at = run_at.unwrap_or_else(Utc::now);
            let message =
                format!("An external worker asked to run the task again at {run_at}: {error}");
            (
                TaskUpdate::Reschedule {
                    run_at,
                    error,
                    refund_attempt: false,
                },
                Some(entry(ActivityKind::TaskRescheduled, message)),
            )
        }
        WorkerOutcome::Failed { error } => {
            require_error(&error)?;
            let message = format!("An external worker failed the task: {error}");
            (
                TaskUpdate::Fail { error },
                Some(entry(ActivityKind::TaskFailed, message)),
            )
        }
    })
}

fn require_error(error: &str) -> Result<(), OperatorError> {
    if error.trim().is_empty() {
        return Err(invalid(
            "error",
            "the error is empty: say why the run did not finish",
        ));
    }
    Ok(())
}

fn validate_claim(request: &ClaimRequest) -> Result<(), OperatorError> {
    if request.worker_id.trim().is_empty() {
        return Err(invalid(
            "worker_id",
            "the worker id is empty: name the worker",
        ));
    }
    if request.kinds.is_empty() {
        return Err(invalid(
            "kinds",
            "no task kind given: list the kinds the worker runs",
        ));
    }
    if !(1..=MAX_CLAIM_LIMIT).contains(&request.limit) {
        return Err(invalid(
            "limit",
            format!(
                "{} is out of range: expected 1 to {MAX_CLAIM_LIMIT}",
                request.limit
            ),
        ));
    }
    if request.lease_duration < Duration::from_secs(1) || request.lease_duration > MAX_LEASE {
        return Err(invalid(
            "lease_seconds",
            format!(
                "{} s is out of range: expected 1 to {} s",
                request.lease_duration.as_secs_f64(),
                MAX_LEASE.as_secs()
            ),
        ));
    }
    Ok(())
}
