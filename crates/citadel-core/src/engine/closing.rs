//! The policy steps around the retries: the card cap check before a
//! payment, the close of a recovery whose window ended, and the merchant's
//! final action on the connected account.
//!
//! The final action and the close are tasks, so a crash between deciding
//! and acting loses neither: the row stays until a worker runs it.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::retry::{Run, fail_bad_payload};
use super::{Engine, EngineError, TaskResult};
use crate::activity::{ActivityKind, NewActivity};
use crate::ids::{EventId, InvoiceId, SubscriptionId, TaskId};
use crate::merchant::Merchant;
use crate::metrics::MetricsDelta;
use crate::payment::{
    AccountAction, ActionOutcome, FinalActionRequest, IdempotencyKey, PaymentGateway,
};
use crate::policy::{CapCheck, FinalAction, RetryClock, transient_backoff};
use crate::recovery::{Recovery, RecoveryStatus};
use crate::store::{CardAttempt, Store, StoreError, StoreTx, metrics_day};
use crate::task::{DEFAULT_MAX_ATTEMPTS, NewTask, Task, TaskKind, TaskStatus, TaskUpdate};

/// The payload of a [`TaskKind::FINAL_ACTION`] task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FinalActionPayload {
    /// The invoice whose recovery ended.
    pub invoice_id: InvoiceId,
    /// The action to run: never [`FinalAction::LeaveOpen`], which needs no
    /// task.
    pub action: FinalAction,
    /// The subscription to cancel, for [`FinalAction::CancelSubscription`].
    pub subscription_id: Option<SubscriptionId>,
    /// The key sent as `Idempotency-Key`, fixed when the task is created.
    pub idempotency_key: String,
}

/// The payload of a [`TaskKind::CLOSE_RECOVERY`] task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CloseRecoveryPayload {
    /// The invoice whose recovery closes.
    pub invoice_id: InvoiceId,
}

/// The task or event a decision comes from, for the activity row.
#[derive(Debug, Clone, Copy)]
pub(super) enum Source<'a> {
    Task(TaskId),
    Event(&'a EventId),
}

impl Source<'_> {
    fn tag(self, entry: NewActivity) -> NewActivity {
        match self {
            Source::Task(task_id) => entry.task(task_id),
            Source::Event(event_id) => entry.event(event_id),
        }
    }
}

/// Returns the moments the merchant's schedule counts from.
pub(super) fn retry_clock(
    merchant: &Merchant,
    recovery: &Recovery,
    now: DateTime<Utc>,
) -> RetryClock {
    RetryClock {
        opened_at: recovery.opened_at,
        now,
        time_zone: merchant.parsed_time_zone(),
    }
}

/// Inserts the task that closes the recovery when its window ends, should
/// it still be open then. The engine inserts it where nothing else would end
/// the recovery: for a passive merchant when the recovery opens, and after
/// a retry that scheduled no next one (the payment is processing, the
/// invoice was not payable, or Stripe rejected the request, as it does for
/// an invoice without a payment method).
pub(super) async fn schedule_close(
    tx: &mut dyn StoreTx,
    merchant: &Merchant,
    recovery: &Recovery,
) -> Result<(), StoreError> {
    let payload = CloseRecoveryPayload {
        invoice_id: recovery.invoice_id.clone(),
    };
    let task = NewTask {
        merchant_id: merchant.id,
        kind: TaskKind::new(TaskKind::CLOSE_RECOVERY),
        invoice_id: Some(recovery.invoice_id.clone()),
        // Serializing a struct of strings cannot fail.
        payload: serde_json::to_value(&payload).unwrap_or_default(),
        run_at: merchant.policy.window_end(recovery.opened_at),
        max_attempts: DEFAULT_MAX_ATTEMPTS,
        dedupe_key: Some(format!("close:{}", recovery.invoice_id)),
        priority: 0,
    };
    tx.insert_task(&task).await?;
    Ok(())
}

/// Queues the merchant's final action for a recovery that ended as lost
/// after its schedule, writing one activity row that says what was decided.
pub(super) async fn schedule_final_action(
    tx: &mut dyn StoreTx,
    merchant: &Merchant,
    recovery: &Recovery,
    now: DateTime<Utc>,
    source: Source<'_>,
) -> Result<(), StoreError> {
    let action = merchant.policy.final_action;
    let decided = match (action, &recovery.subscription_id) {
        _ if merchant.policy.passive => Err(format!(
            "final action {action} not taken: the merchant is in passive mode"
        )),
        (FinalAction::LeaveOpen, _) => {
            Err("final action leave_open: the invoice stays open in Stripe".to_owned())
        }
        (FinalAction::CancelSubscription, None) => Err(
            "final action cancel_subscription not taken: the invoice belongs to no subscription"
                .to_owned(),
        ),
        (action, subscription) => Ok(FinalActionPayload {
            invoice_id: recovery.invoice_id.clone(),
            action,
            subscription_id: subscription.clone(),
            idempotency_key: format!("citadel-{}-{}-{}", merchant.id, recovery.invoice_id, action),
        }),
    };

    let (message, details) = match decided {
        Err(message) => (message, serde_json::Value::Null),
        Ok(payload) => {
            let task = NewTask {
                merchant_id: merchant.id,
                kind: TaskKind::new(TaskKind::FINAL_ACTION),
                invoice_id: Some(recovery.invoice_id.clone()),
                // Serializing a struct of strings cannot fail.
                payload: serde_json::to_value(&payload).unwrap_or_default(),
                run_at: now,
                max_attempts: DEFAULT_MAX_ATTEMPTS,
                dedupe_key: Some(format!("final:{}", recovery.invoice_id)),
                priority: 0,
            };
            let task_id = tx.insert_task(&task).await?;
            let message = format!("final action {action} scheduled on the connected account");
            (message, json!({"action": action, "next_task_id": task_id}))
        }
    };
    tracing::info!(invoice.id = %recovery.invoice_id, "{message}");
    let entry = NewActivity::new(merchant.id, ActivityKind::FinalActionScheduled, message)
        .invoice(&recovery.invoice_id)
        .details(details);
    tx.insert_activity(&source.tag(entry)).await
}

/// Reserves this retry's place under the card cap before it pays. Returns
/// `Some` when the card has used its cap: the task then runs again when the
/// oldest counted attempt leaves the window, with its claim given back.
///
/// A recovery whose declines never carried a card fingerprint is not
/// capped, because its card is unknown.
pub(super) async fn reserve_card_attempt<S: Store, G: PaymentGateway>(
    engine: &Engine<S, G>,
    run: &Run<'_>,
) -> Result<Option<TaskResult>, EngineError> {
    let Some(lease) = &run.task.lease else {
        return Ok(Some(TaskResult::LeaseLost));
    };
    let now = Utc::now();
    let invoice_id = &run.retry.invoice_id;
    let mut tx = engine.store.begin().await?;
    let Some(fingerprint) = tx.recovery_card(run.merchant.id, invoice_id).await? else {
        return Ok(None);
    };
    tx.lock_card(&fingerprint).await?;

    let cap = engine.card_cap;
    let attempts = tx
        .card_attempts_since(&fingerprint, cap.window_start(now))
        .await?;
    // A rerun of the same retry (same idempotency key) holds its place.
    if attempts
        .iter()
        .any(|attempt| attempt.attempt_key == run.retry.idempotency_key)
    {
        return Ok(None);
    }
    let times: Vec<DateTime<Utc>> = attempts
        .iter()
        .map(|attempt| attempt.attempted_at)
        .collect();

    match cap.check(&times, now) {
        CapCheck::Allowed => {
            let attempt = CardAttempt {
                fingerprint,
                merchant_id: run.merchant.id,
                invoice_id: invoice_id.clone(),
                attempt_key: run.retry.idempotency_key.clone(),
                attempted_at: now,
            };
            tx.insert_card_attempt(&attempt).await?;
            tx.commit().await?;
            Ok(None)
        }
        CapCheck::Postpone { until } => {
            let days = cap.window().as_secs() / 86_400;
            let message = format!(
                "retry {} postponed to {until}: the card has had {} attempts in the last {days} \
                 days across all merchants, and the card network cap allows {}",
                run.retry.attempt,
                times.len(),
                cap.max_attempts()
            );
            let update = TaskUpdate::Reschedule {
                run_at: until,
                error: "card network cap reached".to_owned(),
                refund_attempt: true,
            };
            TaskStatus::Running.apply(update.transition())?;
            if !tx.finish_task(lease, &update).await? {
                return Ok(Some(TaskResult::LeaseLost));
            }
            tracing::info!(activity = %ActivityKind::RetryPostponed, "{message}");
            let entry = NewActivity::new(run.merchant.id, ActivityKind::RetryPostponed, message)
                .invoice(invoice_id)
                .task(run.task.id)
                .details(json!({"attempts_in_window": times.len(), "cap": cap.max_attempts()}));
            tx.insert_activity(&entry).await?;
            tx.commit().await?;
            Ok(Some(TaskResult::Rescheduled))
        }
    }
}

/// Runs a [`TaskKind::CLOSE_RECOVERY`] task: ends a recovery still open when
/// its window closed, cancels its pending retries and queues the final
/// action. An invoice without a payment method, whose retries can never
/// pay, ends this way too.
pub(super) async fn run_close<S: Store, G: PaymentGateway>(
    engine: &Engine<S, G>,
    task: &Task,
) -> Result<TaskResult, EngineError> {
    let merchant = task_merchant(engine, task).await?;
    let payload: CloseRecoveryPayload = match serde_json::from_value(task.payload.clone()) {
        Ok(payload) => payload,
        Err(err) => {
            let error = format!("invalid close_recovery payload: {err}");
            return fail_bad_payload(engine, task, &merchant, error).await;
        }
    };
    let Some(lease) = &task.lease else {
        return Ok(TaskResult::LeaseLost);
    };
    let now = Utc::now();
    let mut tx = engine.store.begin().await?;
    let recovery = tx.lock_recovery(merchant.id, &payload.invoice_id).await?;
    let Some(mut recovery) = recovery.filter(|recovery| recovery.status == RecoveryStatus::Open)
    else {
        // The recovery ended before its window did: nothing to decide.
        if !tx.finish_task(lease, &TaskUpdate::Complete).await? {
            return Ok(TaskResult::LeaseLost);
        }
        tx.commit().await?;
        return Ok(TaskResult::Completed);
    };

    let cancelled = tx
        .cancel_pending_tasks(merchant.id, &recovery.invoice_id)
        .await?;
    let reason = format!(
        "the recovery window closed at {} with the invoice unpaid after {} retries",
        merchant.policy.window_end(recovery.opened_at),
        recovery.retries_made
    );
    if let Some(amount) = recovery.amount_due {
        let day = metrics_day(now, merchant.parsed_time_zone());
        let mut delta = MetricsDelta::zero(merchant.id, day, amount.currency);
        delta.payments_lost = 1;
        delta.amount_lost = amount.minor_units;
        tx.add_metrics(&delta).await?;
    }
    let message = format!("recovery lost: {reason}; {cancelled} pending retries cancelled");
    tracing::info!(invoice.id = %recovery.invoice_id, "{message}");
    let entry = NewActivity::new(merchant.id, ActivityKind::RecoveryLost, message)
        .invoice(&recovery.invoice_id)
        .task(task.id)
        .details(json!({"cancelled": cancelled}));
    tx.insert_activity(&entry).await?;
    recovery.close(RecoveryStatus::Lost, reason, now);
    tx.update_recovery(&recovery).await?;
    schedule_final_action(
        tx.as_mut(),
        &merchant,
        &recovery,
        now,
        Source::Task(task.id),
    )
    .await?;

    if !tx.finish_task(lease, &TaskUpdate::Complete).await? {
        return Ok(TaskResult::LeaseLost);
    }
    tx.commit().await?;
    Ok(TaskResult::Lost)
}

/// Runs a [`TaskKind::FINAL_ACTION`] task on the merchant's connected
/// account, with the key fixed when it was queued.
pub(super) async fn run_final_action<S: Store, G: PaymentGateway>(
    engine: &Engine<S, G>,
    task: &Task,
) -> Result<TaskResult, EngineError> {
    let merchant = task_merchant(engine, task).await?;
    let payload: FinalActionPayload = match serde_json::from_value(task.payload.clone()) {
        Ok(payload) => payload,
        Err(err) => {
            let error = format!("invalid final_action payload: {err}");
            return fail_bad_payload(engine, task, &merchant, error).await;
        }
    };
    let action = match (payload.action, &payload.subscription_id) {
        (FinalAction::MarkUncollectible, _) => AccountAction::MarkUncollectible {
            invoice: payload.invoice_id.clone(),
        },
        (FinalAction::CancelSubscription, Some(subscription)) => {
            AccountAction::CancelSubscription {
                subscription: subscription.clone(),
            }
        }
        (action, _) => {
            let error = format!(
                "invalid final_action payload: {action} needs no request or lacks its subscription"
            );
            return fail_bad_payload(engine, task, &merchant, error).await;
        }
    };
    let request = FinalActionRequest {
        account: merchant.account_id.clone(),
        action,
        idempotency_key: IdempotencyKey::new(payload.idempotency_key.clone()),
    };
    let outcome = engine.gateway.run_final_action(&request).await;

    let now = Utc::now();
    let (update, kind, message, result) = match outcome {
        ActionOutcome::Done => (
            TaskUpdate::Complete,
            ActivityKind::FinalActionTaken,
            format!(
                "final action {} done on the connected account",
                payload.action
            ),
            TaskResult::Completed,
        ),
        ActionOutcome::RateLimited { retry_after } => {
            let wait = retry_after.unwrap_or(std::time::Duration::from_secs(30));
            let run_at = now + chrono::Duration::from_std(wait).unwrap_or(chrono::Duration::MAX);
            let message = format!(
                "final action {} rate limited by Stripe (HTTP 429); run again at {run_at}",
                payload.action
            );
            let update = TaskUpdate::Reschedule {
                run_at,
                error: message.clone(),
                refund_attempt: true,
            };
            (
                update,
                ActivityKind::TaskRescheduled,
                message,
                TaskResult::Rescheduled,
            )
        }
        ActionOutcome::Transient { message } if task.attempts < task.max_attempts => {
            let wait = transient_backoff(task.attempts, None);
            let run_at = now + chrono::Duration::from_std(wait).unwrap_or(chrono::Duration::MAX);
            let note = format!(
                "final action {} failed ({message}); run again at {run_at} with the same \
                 idempotency key",
                payload.action
            );
            let update = TaskUpdate::Reschedule {
                run_at,
                error: message,
                refund_attempt: false,
            };
            (
                update,
                ActivityKind::TaskRescheduled,
                note,
                TaskResult::Rescheduled,
            )
        }
        ActionOutcome::Transient { message } => {
            let error = format!(
                "final action {} failed ({message}); gave up after {} attempts",
                payload.action, task.attempts
            );
            let update = TaskUpdate::Fail {
                error: error.clone(),
            };
            (update, ActivityKind::TaskFailed, error, TaskResult::Failed)
        }
        ActionOutcome::Rejected { status, message } => {
            let error = format!(
                "Stripe rejected final action {} (HTTP {status}): {message}; fix the cause, \
                 then retry the task",
                payload.action
            );
            let update = TaskUpdate::Fail {
                error: error.clone(),
            };
            (update, ActivityKind::TaskFailed, error, TaskResult::Failed)
        }
    };

    let Some(lease) = &task.lease else {
        return Ok(TaskResult::LeaseLost);
    };
    TaskStatus::Running.apply(update.transition())?;
    let mut tx = engine.store.begin().await?;
    if !tx.finish_task(lease, &update).await? {
        return Ok(TaskResult::LeaseLost);
    }
    if kind == ActivityKind::TaskFailed {
        tracing::error!(activity = %kind, "{message}");
    } else {
        tracing::info!(activity = %kind, "{message}");
    }
    let entry = NewActivity::new(merchant.id, kind, message)
        .invoice(&payload.invoice_id)
        .task(task.id)
        .details(json!({"action": payload.action}));
    tx.insert_activity(&entry).await?;
    tx.commit().await?;
    Ok(result)
}

async fn task_merchant<S: Store, G: PaymentGateway>(
    engine: &Engine<S, G>,
    task: &Task,
) -> Result<Merchant, EngineError> {
    engine
        .store
        .merchant(task.merchant_id)
        .await?
        .ok_or(EngineError::MerchantNotFound {
            task_id: task.id,
            merchant_id: task.merchant_id,
        })
}
