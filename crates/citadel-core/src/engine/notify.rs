//! Running one claimed customer notice task, and scheduling notices.

use chrono::{DateTime, Utc};
use serde_json::json;

use super::{Engine, EngineError, TaskResult};
use crate::activity::{ActivityKind, NewActivity};
use crate::notice::{Notice, NoticeKind, NotifyError};
use crate::payment::PaymentGateway;
use crate::policy::transient_backoff;
use crate::recovery::Recovery;
use crate::store::{Store, StoreError, StoreTx};
use crate::task::{Task, TaskStatus, TaskUpdate};

/// Inserts the task that sends the notice of `kind` about a recovery, due at
/// `now`. A live notice of the same kind for the invoice is kept instead.
pub(super) async fn schedule(
    tx: &mut dyn StoreTx,
    recovery: &Recovery,
    kind: NoticeKind,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let task = Notice::about(kind, recovery).task(now);
    tx.insert_task(&task).await?;
    Ok(())
}

pub(super) async fn run<S: Store, G: PaymentGateway>(
    engine: &Engine<S, G>,
    task: &Task,
) -> Result<TaskResult, EngineError> {
    let notice: Notice = match serde_json::from_value(task.payload.clone()) {
        Ok(notice) => notice,
        Err(err) => {
            let error = format!("invalid send_notice payload: {err}");
            return finish(engine, task, None, TaskUpdate::Fail { error }).await;
        }
    };
    tracing::Span::current().record("invoice.id", notice.invoice_id.as_str());

    let update = match engine.notifier.send(&notice).await {
        Ok(()) => TaskUpdate::Complete,
        Err(error) => after_error(task, &error),
    };
    finish(engine, task, Some(&notice), update).await
}

/// Decides what follows a failed send: a retryable error runs the task again
/// after a backoff while attempts are left, and any other error fails it.
fn after_error(task: &Task, error: &NotifyError) -> TaskUpdate {
    if !error.retryable || task.attempts >= task.max_attempts {
        return TaskUpdate::Fail {
            error: format!("{error}; the notice was not sent"),
        };
    }
    let wait = transient_backoff(task.attempts, None);
    let run_at = Utc::now()
        + chrono::Duration::from_std(wait).unwrap_or_else(|_| chrono::Duration::minutes(10));
    TaskUpdate::Reschedule {
        run_at,
        error: error.to_string(),
        refund_attempt: false,
    }
}

/// Writes the task's end and its activity row under the task's lease.
async fn finish<S: Store, G: PaymentGateway>(
    engine: &Engine<S, G>,
    task: &Task,
    notice: Option<&Notice>,
    update: TaskUpdate,
) -> Result<TaskResult, EngineError> {
    let Some(lease) = &task.lease else {
        return Ok(TaskResult::LeaseLost);
    };
    TaskStatus::Running.apply(update.transition())?;

    let channel = engine.notifier.channel();
    let (kind, message, result) = match &update {
        TaskUpdate::Complete => {
            let what = notice.map_or("unknown", |notice| notice.kind.as_str());
            let message = format!("{what} notice sent by {}", channel.as_str());
            (ActivityKind::NoticeSent, message, TaskResult::Completed)
        }
        TaskUpdate::Reschedule { run_at, error, .. } => (
            ActivityKind::TaskRescheduled,
            format!("{error}; the notice is sent again at {run_at}"),
            TaskResult::Rescheduled,
        ),
        TaskUpdate::Fail { error } => {
            tracing::warn!("{error}");
            (ActivityKind::TaskFailed, error.clone(), TaskResult::Failed)
        }
    };

    let mut tx = engine.store.begin().await?;
    if !tx.finish_task(lease, &update).await? {
        return Ok(TaskResult::LeaseLost);
    }
    let mut entry = NewActivity::new(task.merchant_id, kind, message).task(task.id);
    if let Some(notice) = notice {
        entry = entry
            .invoice(&notice.invoice_id)
            .details(json!({"notice": notice.kind, "channel": channel}));
    }
    tx.insert_activity(&entry).await?;
    tx.commit().await?;
    Ok(result)
}
