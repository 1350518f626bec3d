//! Running one claimed retry task.

use chrono::{DateTime, Utc};
use serde_json::json;

use super::{Engine, EngineError, closing, intake::retry_task, notify};
use crate::activity::{ActivityKind, NewActivity};
use crate::merchant::Merchant;
use crate::metrics::MetricsDelta;
use crate::money::Money;
use crate::notice::NoticeKind;
use crate::payment::{Decline, IdempotencyKey, PayInvoice, PaymentGateway, PaymentOutcome};
use crate::policy::{DeclineDecision, after_decline, transient_backoff};
use crate::recovery::{Recovery, RecoveryStatus};
use crate::store::{Store, StoreTx, metrics_day};
use crate::task::{RetryPayment, Task, TaskStatus, TaskUpdate};

/// The wait after a rate limit when Stripe names none: half a minute, so a
/// burst of requests can pass before the task runs again. Up to 10% jitter is
/// added, so tasks limited together do not return together.
const RATE_LIMIT_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// The result of one task run.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TaskResult {
    /// The invoice was paid.
    Recovered,
    /// The retry was declined and another is scheduled.
    RetryScheduled,
    /// The recovery ended without payment.
    Lost,
    /// The task ended without a payment decision (the recovery had already
    /// ended, or the invoice was not payable).
    Completed,
    /// The task will run again after a transient error.
    Rescheduled,
    /// The task failed for good.
    Failed,
    /// The task's lease was lost before the outcome was written; another
    /// worker owns the task now, and nothing was written.
    LeaseLost,
}

pub(super) struct Run<'a> {
    pub(super) task: &'a Task,
    pub(super) merchant: &'a Merchant,
    pub(super) retry: &'a RetryPayment,
}

pub(super) async fn run<S: Store, G: PaymentGateway>(
    engine: &Engine<S, G>,
    task: &Task,
) -> Result<TaskResult, EngineError> {
    let store = &engine.store;
    let merchant =
        store
            .merchant(task.merchant_id)
            .await?
            .ok_or(EngineError::MerchantNotFound {
                task_id: task.id,
                merchant_id: task.merchant_id,
            })?;

    let retry = match task.retry_payment() {
        Ok(retry) => retry,
        Err(err) => {
            let error = format!("invalid retry_payment payload: {err}");
            return fail_bad_payload(engine, task, &merchant, error).await;
        }
    };
    tracing::Span::current().record("invoice.id", retry.invoice_id.as_str());
    let run = Run {
        task,
        merchant: &merchant,
        retry: &retry,
    };

    let recovery = store.recovery(merchant.id, &retry.invoice_id).await?;
    if !recovery.is_some_and(|recovery| recovery.status == RecoveryStatus::Open) {
        return finish_without_payment(
            engine,
            &run,
            TaskUpdate::Complete,
            "retry skipped: the recovery has ended".to_owned(),
        )
        .await;
    }
    if merchant.policy.passive {
        let message = format!(
            "retry {} skipped: the merchant is in passive mode, so Citadel records and reports \
             but never retries",
            retry.attempt
        );
        return finish_without_payment(engine, &run, TaskUpdate::Complete, message).await;
    }
    if let Some(postponed) = closing::reserve_card_attempt(engine, &run).await? {
        return Ok(postponed);
    }

    let request = PayInvoice {
        account: merchant.account_id.clone(),
        invoice: retry.invoice_id.clone(),
        idempotency_key: IdempotencyKey::new(retry.idempotency_key.clone()),
    };
    let outcome = engine.gateway.pay_invoice(&request).await;
    record_outcome(engine, &run, outcome).await
}

/// Ends a task whose payload could not be read, for an operator.
pub(super) async fn fail_bad_payload<S: Store, G: PaymentGateway>(
    engine: &Engine<S, G>,
    task: &Task,
    merchant: &Merchant,
    error: String,
) -> Result<TaskResult, EngineError> {
    let Some(lease) = &task.lease else {
        return Ok(TaskResult::LeaseLost);
    };
    let update = TaskUpdate::Fail {
        error: error.clone(),
    };
    TaskStatus::Running.apply(update.transition())?;

    let mut tx = engine.store.begin().await?;
    if !tx.finish_task(lease, &update).await? {
        return Ok(TaskResult::LeaseLost);
    }
    tracing::error!(task.id = task.id.get(), "{error}");
    let entry = NewActivity::new(merchant.id, ActivityKind::TaskFailed, error).task(task.id);
    tx.insert_activity(&entry).await?;
    tx.commit().await?;
    Ok(TaskResult::Failed)
}

/// Ends a retry task that made no payment call, recording why.
async fn finish_without_payment<S: Store, G: PaymentGateway>(
    engine: &Engine<S, G>,
    run: &Run<'_>,
    update: TaskUpdate,
    message: String,
) -> Result<TaskResult, EngineError> {
    let Some(lease) = &run.task.lease else {
        return Ok(TaskResult::LeaseLost);
    };
    TaskStatus::Running.apply(update.transition())?;

    let mut tx = engine.store.begin().await?;
    if !tx.finish_task(lease, &update).await? {
        return Ok(TaskResult::LeaseLost);
    }
    tracing::info!(activity = %ActivityKind::RetrySkipped, "{message}");
    let entry = NewActivity::new(run.merchant.id, ActivityKind::RetrySkipped, message)
        .task(run.task.id)
        .invoice(&run.retry.invoice_id);
    tx.insert_activity(&entry).await?;
    tx.commit().await?;
    Ok(TaskResult::Completed)
}

async fn record_outcome<S: Store, G: PaymentGateway>(
    engine: &Engine<S, G>,
    run: &Run<'_>,
    outcome: PaymentOutcome,
) -> Result<TaskResult, EngineError> {
    let Some(lease) = &run.task.lease else {
        return Ok(TaskResult::LeaseLost);
    };
    let now = Utc::now();
    let mut tx = engine.store.begin().await?;
    let Some(mut recovery) = tx
        .lock_recovery(run.merchant.id, &run.retry.invoice_id)
        .await?
    else {
        return Err(EngineError::Store(crate::store::StoreError::InvalidRow {
            table: "invoice_recoveries",
            message: format!(
                "recovery of {} missing for task {}",
                run.retry.invoice_id, run.task.id
            ),
        }));
    };

    let mut writer = OutcomeWriter {
        tx: tx.as_mut(),
        run,
        recovery: &mut recovery,
        now,
    };
    let (update, result) = writer.apply(outcome).await?;
    TaskStatus::Running.apply(update.transition())?;
    // No retry follows a run that ended this way, so only Stripe's events or
    // the window's end can close the recovery now.
    let stalled = matches!(result, TaskResult::Completed | TaskResult::Failed);
    if stalled && recovery.status == RecoveryStatus::Open {
        closing::schedule_close(tx.as_mut(), run.merchant, &recovery).await?;
    }
    if !tx.finish_task(lease, &update).await? {
        tracing::warn!("task lease lost before its outcome was written; the outcome is discarded");
        return Ok(TaskResult::LeaseLost);
    }
    tx.update_recovery(&recovery).await?;
    tx.commit().await?;
    Ok(result)
}

struct OutcomeWriter<'a> {
    tx: &'a mut dyn StoreTx,
    run: &'a Run<'a>,
    recovery: &'a mut Recovery,
    now: chrono::DateTime<Utc>,
}

impl OutcomeWriter<'_> {
    async fn apply(
        &mut self,
        outcome: PaymentOutcome,
    ) -> Result<(TaskUpdate, TaskResult), EngineError> {
        match outcome {
            PaymentOutcome::Paid { amount_paid } => self.paid(amount_paid).await,
            PaymentOutcome::Declined(decline) => self.declined(decline).await,
            PaymentOutcome::ActionRequired { message } => {
                self.count_retry().await?;
                if self.recovery.status != RecoveryStatus::Open {
                    let note = format!(
                        "retry {} needs the customer ({message}) after the recovery ended as {}",
                        self.run.retry.attempt, self.recovery.status
                    );
                    self.log(ActivityKind::RetryDeclined, note, serde_json::Value::Null)
                        .await?;
                    return Ok((TaskUpdate::Complete, TaskResult::Completed));
                }
                let reason = format!(
                    "customer action required ({message}): off-session retries cannot succeed"
                );
                self.lose(reason).await?;
                Ok((TaskUpdate::Complete, TaskResult::Lost))
            }
            PaymentOutcome::NotPayable { message } => self.not_payable(message).await,
            PaymentOutcome::Processing { message } => self.processing(message).await,
            PaymentOutcome::RateLimited { retry_after } => self.rate_limited(retry_after).await,
            PaymentOutcome::Transient { message } => {
                let wait = transient_backoff(self.run.task.attempts, None);
                self.transient(message, wait).await
            }
            PaymentOutcome::Rejected { status, message } => {
                let error = format!(
                    "Stripe rejected the request (HTTP {status}): {message}; fix the cause, then retry the task"
                );
                tracing::error!(http.status = status, "{error}");
                self.log(
                    ActivityKind::TaskFailed,
                    error.clone(),
                    json!({"status": status}),
                )
                .await?;
                Ok((TaskUpdate::Fail { error }, TaskResult::Failed))
            }
        }
    }

    /// Records a payment made by this retry. The money moved, so the payment
    /// counts as recovered even when a stop event ended the recovery while the
    /// call was in flight. A loss counted for it then is taken back on the day
    /// it was counted, so the invoice is never both lost and recovered.
    async fn paid(&mut self, amount_paid: Money) -> Result<(TaskUpdate, TaskResult), EngineError> {
        self.count_retry().await?;
        let counted = self.recovery.status != RecoveryStatus::Recovered;
        let mut message = format!(
            "retry {} paid the invoice: recovered {amount_paid}",
            self.run.retry.attempt
        );

        if self.recovery.status == RecoveryStatus::Lost {
            self.take_back_loss().await?;
            message.push_str(", and the loss counted when the recovery ended is taken back");
        }
        if counted {
            let recovery_seconds = (self.now - self.recovery.opened_at).num_seconds().max(0);
            self.recovery.amount_recovered = Some(amount_paid);
            self.recovery
                .close(RecoveryStatus::Recovered, "paid by a retry", self.now);
            self.add_metrics(|delta| {
                delta.payments_recovered = 1;
                delta.amount_recovered = amount_paid.minor_units;
                delta.recovery_seconds = recovery_seconds;
            })
            .await?;
            let kind = NoticeKind::PaymentRecovered;
            notify::schedule(self.tx, self.recovery, kind, self.now).await?;
        }

        let details = json!({"counted": counted});
        self.log(ActivityKind::PaymentRecovered, message, details)
            .await?;
        Ok((TaskUpdate::Complete, TaskResult::Recovered))
    }

    /// Ends an open recovery as stopped when Stripe responds that the invoice
    /// is already paid, void, uncollectible or deleted. Citadel did not
    /// collect it, so it counts as neither recovered nor lost, and Stripe's
    /// own event about the invoice, when it arrives, is only noted.
    async fn not_payable(
        &mut self,
        message: String,
    ) -> Result<(TaskUpdate, TaskResult), EngineError> {
        if self.recovery.status != RecoveryStatus::Open {
            let note = format!(
                "invoice not payable ({message}); the recovery had already ended as {}",
                self.recovery.status
            );
            self.log(ActivityKind::RetrySkipped, note, serde_json::Value::Null)
                .await?;
            return Ok((TaskUpdate::Complete, TaskResult::Completed));
        }

        let cancelled = self
            .tx
            .cancel_pending_tasks(self.run.merchant.id, &self.recovery.invoice_id)
            .await?;
        let reason = format!("Stripe reports the invoice is not payable: {message}");
        let note = format!("recovery stopped: {reason}; not counted as recovered or lost");
        let details = json!({"cancelled": cancelled});
        self.log(ActivityKind::RecoveryStopped, note, details)
            .await?;
        self.recovery
            .close(RecoveryStatus::Stopped, reason, self.now);
        Ok((TaskUpdate::Complete, TaskResult::Completed))
    }

    /// Subtracts the loss that ending this recovery added to the metrics, on
    /// the day it was added. A recovery lost without a known amount due was
    /// never counted, so nothing is subtracted then.
    async fn take_back_loss(&mut self) -> Result<(), EngineError> {
        let Some(amount_due) = self.recovery.amount_due else {
            return Ok(());
        };
        let closed_at = self.recovery.closed_at.unwrap_or(self.now);
        let day = metrics_day(closed_at, self.run.merchant.parsed_time_zone());
        let mut delta = MetricsDelta::zero(self.run.merchant.id, day, amount_due.currency);
        delta.payments_lost = -1;
        delta.amount_lost = -amount_due.minor_units;
        self.tx.add_metrics(&delta).await?;
        Ok(())
    }

    /// Records a payment that has not settled. Its failure may already have
    /// been recorded while this call was in flight. Intake could not schedule
    /// the next retry then, because this one was still running, so this
    /// function schedules it.
    async fn processing(
        &mut self,
        message: String,
    ) -> Result<(TaskUpdate, TaskResult), EngineError> {
        self.count_retry().await?;
        let attempt = self.run.retry.attempt;
        let note = format!(
            "retry {attempt} started a payment that has not settled ({message}); \
             the next invoice.paid or invoice.payment_failed decides"
        );
        self.log(
            ActivityKind::PaymentProcessing,
            note,
            serde_json::Value::Null,
        )
        .await?;

        let account = self.run.merchant.account_id.as_ref();
        let claimed_at = self.run.task.updated_at;
        let failed_meanwhile = self
            .tx
            .failure_recorded_since(account, &self.recovery.invoice_id, claimed_at)
            .await?;
        if !failed_meanwhile || self.recovery.status != RecoveryStatus::Open {
            return Ok((TaskUpdate::Complete, TaskResult::Completed));
        }

        let next = attempt.saturating_add(1);
        let clock = closing::retry_clock(self.run.merchant, self.recovery, self.now);
        let Some(run_at) = self.run.merchant.policy.retry_time(next, &clock) else {
            self.lose(format!("all {attempt} retries failed")).await?;
            self.schedule_final_action().await?;
            return Ok((TaskUpdate::Complete, TaskResult::Lost));
        };
        self.schedule_retry(next, run_at).await?;
        Ok((TaskUpdate::Complete, TaskResult::RetryScheduled))
    }

    /// Inserts the task of retry `next` and its activity row.
    async fn schedule_retry(
        &mut self,
        next: u32,
        run_at: DateTime<Utc>,
    ) -> Result<(), EngineError> {
        let task = retry_task(self.run.merchant, &self.recovery.invoice_id, next, run_at);
        let task_id = self.tx.insert_task(&task).await?;
        let scheduled = format!(
            "retry {next} of {} scheduled for {run_at}",
            self.run.merchant.policy.max_retries()
        );
        let mut entry = NewActivity::new(
            self.run.merchant.id,
            ActivityKind::RetryScheduled,
            scheduled,
        )
        .invoice(&self.recovery.invoice_id)
        .task(self.run.task.id);
        if let Some(task_id) = task_id {
            entry = entry.details(json!({"next_task_id": task_id}));
        }
        self.tx.insert_activity(&entry).await?;
        Ok(())
    }

    async fn declined(
        &mut self,
        decline: Decline,
    ) -> Result<(TaskUpdate, TaskResult), EngineError> {
        self.count_retry().await?;
        if let Some(fingerprint) = &decline.card_fingerprint {
            self.tx
                .set_recovery_card(self.run.merchant.id, &self.recovery.invoice_id, fingerprint)
                .await?;
        }
        let attempt = self.run.retry.attempt;
        let clock = closing::retry_clock(self.run.merchant, self.recovery, self.now);
        let decision = after_decline(&self.run.merchant.policy, &decline, attempt, &clock);
        self.recovery.last_decline = Some(decline.clone());
        let code = decline.reason().to_owned();
        let details = json!({"decline": decline});

        if self.recovery.status != RecoveryStatus::Open {
            let message = format!("retry {attempt} declined ({code}) after the recovery ended");
            self.log(ActivityKind::RetryDeclined, message, details)
                .await?;
            return Ok((TaskUpdate::Complete, TaskResult::Completed));
        }

        match decision {
            DeclineDecision::RetryAt {
                attempt: next,
                run_at,
                reason,
            } => {
                let message = format!(
                    "retry {attempt} declined ({reason}): retry {next} scheduled for {run_at}"
                );
                self.log(ActivityKind::RetryDeclined, message, details)
                    .await?;
                self.schedule_retry(next, run_at).await?;
                Ok((TaskUpdate::Complete, TaskResult::RetryScheduled))
            }
            DeclineDecision::StopHardDecline { reason } => {
                self.log(
                    ActivityKind::RetryDeclined,
                    format!("retry {attempt} declined ({reason})"),
                    details,
                )
                .await?;
                self.lose(format!("hard decline {code}: no further retries"))
                    .await?;
                Ok((TaskUpdate::Complete, TaskResult::Lost))
            }
            DeclineDecision::StopScheduleExhausted { reason } => {
                self.log(
                    ActivityKind::RetryDeclined,
                    format!("retry {attempt} declined ({reason}), and it was the last one"),
                    details,
                )
                .await?;
                self.lose(format!("all {attempt} retries declined")).await?;
                self.schedule_final_action().await?;
                Ok((TaskUpdate::Complete, TaskResult::Lost))
            }
        }
    }

    /// Queues the merchant's final action for a recovery that used up its
    /// schedule, or records why none runs.
    async fn schedule_final_action(&mut self) -> Result<(), EngineError> {
        let source = closing::Source::Task(self.run.task.id);
        closing::schedule_final_action(self.tx, self.run.merchant, self.recovery, self.now, source)
            .await?;
        Ok(())
    }

    /// Runs the task again after a rate limit, giving back the claim's
    /// attempt: Stripe turned the request away before doing anything, so a
    /// long burst of rate limits must not fail a payment that would succeed.
    async fn rate_limited(
        &mut self,
        retry_after: Option<std::time::Duration>,
    ) -> Result<(TaskUpdate, TaskResult), EngineError> {
        let wait = transient_backoff(0, Some(retry_after.unwrap_or(RATE_LIMIT_WAIT)));
        let run_at = self.now
            + chrono::Duration::from_std(wait).unwrap_or_else(|_| chrono::Duration::minutes(10));
        let note = format!(
            "rate limited by Stripe (HTTP 429); run again at {run_at}, attempt not counted"
        );
        tracing::info!("{note}");
        self.log(ActivityKind::TaskRescheduled, note, serde_json::Value::Null)
            .await?;
        let update = TaskUpdate::Reschedule {
            run_at,
            error: "rate limited by Stripe (HTTP 429)".to_owned(),
            refund_attempt: true,
        };
        Ok((update, TaskResult::Rescheduled))
    }

    async fn transient(
        &mut self,
        message: String,
        wait: std::time::Duration,
    ) -> Result<(TaskUpdate, TaskResult), EngineError> {
        let task = self.run.task;
        if task.attempts >= task.max_attempts {
            let error = format!("{message}; gave up after {} attempts", task.attempts);
            tracing::warn!(task.attempts = task.attempts, "{error}");
            self.log(
                ActivityKind::TaskFailed,
                error.clone(),
                serde_json::Value::Null,
            )
            .await?;
            return Ok((TaskUpdate::Fail { error }, TaskResult::Failed));
        }
        let run_at = self.now
            + chrono::Duration::from_std(wait).unwrap_or_else(|_| chrono::Duration::minutes(10));
        let note = format!("{message}; run again at {run_at} with the same idempotency key");
        tracing::info!(task.attempts = task.attempts, "{note}");
        self.log(ActivityKind::TaskRescheduled, note, serde_json::Value::Null)
            .await?;
        Ok((
            TaskUpdate::Reschedule {
                run_at,
                error: message,
                refund_attempt: false,
            },
            TaskResult::Rescheduled,
        ))
    }

    async fn count_retry(&mut self) -> Result<(), EngineError> {
        self.recovery.retries_made += 1;
        self.add_metrics(|delta| delta.retries_attempted = 1).await
    }

    async fn lose(&mut self, reason: String) -> Result<(), EngineError> {
        let amount_lost = self
            .recovery
            .amount_due
            .map_or(0, |amount| amount.minor_units);
        self.add_metrics(|delta| {
            delta.payments_lost = 1;
            delta.amount_lost = amount_lost;
        })
        .await?;
        self.log(
            ActivityKind::RecoveryLost,
            format!("recovery lost: {reason}"),
            serde_json::Value::Null,
        )
        .await?;
        self.recovery.close(RecoveryStatus::Lost, reason, self.now);
        let kind = NoticeKind::RecoveryLost;
        notify::schedule(self.tx, self.recovery, kind, self.now).await?;
        Ok(())
    }

    /// Adds to today's metrics in the invoice's currency. An open recovery
    /// always has its amount due, and one without it is not counted.
    async fn add_metrics(
        &mut self,
        fill: impl FnOnce(&mut MetricsDelta),
    ) -> Result<(), EngineError> {
        let Some(amount_due) = self.recovery.amount_due else {
            return Ok(());
        };
        let mut delta = MetricsDelta::zero(
            self.run.merchant.id,
            metrics_day(self.now, self.run.merchant.parsed_time_zone()),
            amount_due.currency,
        );
        fill(&mut delta);
        self.tx.add_metrics(&delta).await?;
        Ok(())
    }

    async fn log(
        &mut self,
        kind: ActivityKind,
        message: String,
        details: serde_json::Value,
    ) -> Result<(), EngineError> {
        tracing::info!(activity = %kind, "{message}");
        let entry = NewActivity::new(self.run.merchant.id, kind, message)
            .invoice(&self.recovery.invoice_id)
            .task(self.run.task.id)
            .details(details);
        self.tx.insert_activity(&entry).await?;
        Ok(())
    }
}
