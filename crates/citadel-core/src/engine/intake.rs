//! The effects of each event type, applied inside the intake transaction.

use chrono::{DateTime, Utc};
use serde_json::json;

use super::closing;
use crate::activity::{ActivityKind, NewActivity};
use crate::event::{Event, IDEMPOTENCY_KEY_PREFIX, InvoiceSnapshot, Settlement, Trigger};
use crate::ids::{InvoiceId, SubscriptionId};
use crate::merchant::Merchant;
use crate::metrics::MetricsDelta;
use crate::notice::NoticeKind;
use crate::payment::Decline;
use crate::policy::{DeclineClass, classify_with};
use crate::recovery::{Recovery, RecoveryStatus};
use crate::store::{CardAttempt, StoreError, StoreTx, metrics_day};
use crate::subscription::{CANCELED, SubscriptionState};
use crate::task::{DEFAULT_MAX_ATTEMPTS, NewTask, RetryPayment, TaskKind};

use super::notify;

pub(super) struct Intake<'a> {
    pub(super) tx: &'a mut dyn StoreTx,
    pub(super) merchant: &'a Merchant,
    pub(super) event: &'a Event,
    pub(super) now: DateTime<Utc>,
}

impl Intake<'_> {
    /// Opens a recovery and schedules its first retry, unless the decline is
    /// hard or the recovery exists already.
    pub(super) async fn payment_failed(
        &mut self,
        invoice: &InvoiceSnapshot,
    ) -> Result<bool, StoreError> {
        if let Some(subscription) = &invoice.subscription_id {
            self.tx
                .lock_subscription(self.merchant.id, subscription)
                .await?;
        }
        self.tx.lock_invoice(self.merchant.id, &invoice.id).await?;
        if self.stopped_before(invoice).await? {
            return Ok(true);
        }
        if self
            .settled_before(&invoice.id, "invoice.payment_failed")
            .await?
        {
            return Ok(true);
        }

        let mut recovery = self.lock_or_insert_recovery(&invoice.id).await?;
        match recovery.status {
            RecoveryStatus::AwaitingInvoice => {}
            RecoveryStatus::Open => return self.failed_again(&mut recovery, invoice).await,
            _ => {
                let message = format!(
                    "invoice.payment_failed noted: recovery is already {}, nothing scheduled",
                    recovery.status
                );
                return self.note(&mut recovery, message).await;
            }
        }

        recovery.status = RecoveryStatus::Open;
        recovery.customer_id = invoice.customer_id.clone();
        recovery.subscription_id = invoice.subscription_id.clone();
        recovery.amount_due = Some(invoice.amount_due);
        if let Some(decline) = &invoice.decline {
            recovery.last_decline = Some(decline.clone());
        }
        recovery.saw_event(self.event.created);

        let mut delta = self.delta(invoice.amount_due.currency);
        delta.failed_payments = 1;
        self.tx.add_metrics(&delta).await?;
        let opened = format!("recovery opened for {} due", invoice.amount_due);
        self.log(
            ActivityKind::RecoveryOpened,
            &invoice.id,
            opened,
            json!({"attempt_count": invoice.attempt_count}),
        )
        .await?;

        if let Some(decline) = &invoice.decline {
            self.record_card(&recovery.invoice_id, decline).await?;
        }
        let class = recovery
            .last_decline
            .as_ref()
            .map(|decline| classify_with(decline, &self.merchant.policy.declines))
            .filter(|decided| decided.class == DeclineClass::Hard);
        match class {
            Some(decided) => {
                let reason = format!("hard decline: {}", decided.reason);
                self.lose(&mut recovery, reason).await?;
            }
            None => self.schedule_first_retry(&mut recovery).await?,
        }
        self.tx.update_recovery(&recovery).await?;
        Ok(true)
    }

    /// Returns whether a settlement of the invoice (paid, voided, marked
    /// uncollectible) was recorded earlier, noting `what` as not applied if
    /// so. Stripe delivers events in no set order, so the settlement can
    /// arrive before an older failure or decline, and it wins.
    async fn settled_before(
        &mut self,
        invoice_id: &InvoiceId,
        what: &str,
    ) -> Result<bool, StoreError> {
        let account = self.event.account.as_ref();
        let Some(settled_by) = self.tx.invoice_settlement(account, invoice_id).await? else {
            return Ok(false);
        };
        let message =
            format!("{what} not applied: the invoice was already settled by {settled_by}");
        self.log(
            ActivityKind::EventNoted,
            invoice_id,
            message,
            serde_json::Value::Null,
        )
        .await?;
        Ok(true)
    }

    /// Returns whether the invoice's subscription was deleted or canceled by
    /// an event recorded earlier, noting the failure as not applied if so.
    /// Stripe delivers events in no set order, so the deletion can come
    /// first.
    async fn stopped_before(&mut self, invoice: &InvoiceSnapshot) -> Result<bool, StoreError> {
        let Some(subscription) = &invoice.subscription_id else {
            return Ok(false);
        };
        let account = self.event.account.as_ref();
        let deleted = self.tx.subscription_deleted(account, subscription).await?;
        let state = self
            .tx
            .subscription_state(self.merchant.id, subscription)
            .await?;
        let ended = state.filter(SubscriptionState::is_ended);
        if !deleted && ended.is_none() {
            return Ok(false);
        }
        let how = match ended {
            Some(state) if !deleted => state.status,
            _ => "deleted".to_owned(),
        };
        let message = format!(
            "invoice.payment_failed not applied: subscription {subscription} was already {how}"
        );
        self.log(
            ActivityKind::EventNoted,
            &invoice.id,
            message,
            serde_json::Value::Null,
        )
        .await?;
        Ok(true)
    }

    /// Applies another failure of an open recovery's invoice. A customer's
    /// own payment attempt is only noted. A hard decline ends the recovery.
    /// Otherwise the next retry is scheduled unless it is already live, so
    /// the failure webhook of Citadel's own retry and Stripe's own retries
    /// consume no retry. An event older than one already applied never
    /// replaces the last decline.
    async fn failed_again(
        &mut self,
        recovery: &mut Recovery,
        invoice: &InvoiceSnapshot,
    ) -> Result<bool, StoreError> {
        if self.event.trigger() == Trigger::Manual {
            return self.manual_failure(recovery, invoice).await;
        }
        let newest = self.event.created >= recovery.last_event_at;
        recovery.saw_event(self.event.created);
        if let Some(decline) = invoice.decline.as_ref().filter(|_| newest) {
            recovery.last_decline = Some(decline.clone());
        }

        let hard = invoice
            .decline
            .as_ref()
            .map(|decline| classify_with(decline, &self.merchant.policy.declines))
            .filter(|decided| decided.class == DeclineClass::Hard);
        if let Some(decline) = &invoice.decline {
            self.record_card(&recovery.invoice_id, decline).await?;
        }
        if let Some(decided) = hard {
            self.cancel_tasks(recovery).await?;
            let reason = format!(
                "hard decline: {}; pending retries cancelled",
                decided.reason
            );
            self.lose(recovery, reason).await?;
        } else {
            self.schedule_next_retry(recovery).await?;
        }
        self.tx.update_recovery(recovery).await?;
        Ok(true)
    }

    /// Notes a failed payment the customer made by hand (an API request that
    /// is not Citadel's). It used the customer's own card entry, so its
    /// decline shows nothing of the payment method Citadel retries: the
    /// schedule, the retries made and the last decline stay as they are.
    async fn manual_failure(
        &mut self,
        recovery: &mut Recovery,
        invoice: &InvoiceSnapshot,
    ) -> Result<bool, StoreError> {
        let reason = invoice
            .decline
            .as_ref()
            .map_or("no reason given", Decline::reason);
        let message = format!(
            "customer's own payment attempt failed ({reason}): scheduled retries unchanged"
        );
        self.note(recovery, message).await
    }

    /// Schedules the retry after the ones already made, or ends the recovery
    /// when the schedule is used up. A live task for that retry (pending or
    /// running) keeps its place, and this failure is only noted.
    async fn schedule_next_retry(&mut self, recovery: &mut Recovery) -> Result<(), StoreError> {
        // NOTE: a late failure webhook of an earlier retry can arrive after a
        // later retry started a payment that is still processing. It then
        // schedules the next retry early, because telling the two apart needs
        // the time of each retry.
        let retries_made = u32::try_from(recovery.retries_made).unwrap_or(0);
        let next = retries_made.saturating_add(1);
        if self.merchant.policy.passive {
            return self.note_passive(recovery).await;
        }
        let clock = closing::retry_clock(self.merchant, recovery, self.now);
        let Some(run_at) = self.merchant.policy.retry_time(next, &clock) else {
            let reason = format!("all {retries_made} retries failed");
            self.lose(recovery, reason).await?;
            let source = closing::Source::Event(&self.event.id);
            return closing::schedule_final_action(
                self.tx,
                self.merchant,
                recovery,
                self.now,
                source,
            )
            .await;
        };

        let task = retry_task(self.merchant, &recovery.invoice_id, next, run_at);
        let invoice_id = recovery.invoice_id.clone();
        let Some(task_id) = self.tx.insert_task(&task).await? else {
            let message =
                format!("invoice.payment_failed noted: retry {next} is already scheduled");
            return self
                .log(
                    ActivityKind::EventNoted,
                    &invoice_id,
                    message,
                    serde_json::Value::Null,
                )
                .await;
        };
        let message = format!(
            "invoice.payment_failed with no retry pending: retry {next} of {} scheduled for {run_at}",
            self.merchant.policy.max_retries()
        );
        let details = json!({"task_id": task_id});
        self.log(ActivityKind::RetryScheduled, &invoice_id, message, details)
            .await
    }

    /// Records the decline reason a `charge.failed` or
    /// `payment_intent.payment_failed` carries, and ends an open recovery
    /// when the decline is hard.
    pub(super) async fn payment_declined(
        &mut self,
        invoice_id: &InvoiceId,
        decline: &Decline,
    ) -> Result<bool, StoreError> {
        self.tx.lock_invoice(self.merchant.id, invoice_id).await?;
        let existing = self.tx.lock_recovery(self.merchant.id, invoice_id).await?;
        let what = format!("decline {}", decline.reason());
        if existing.is_none() && self.settled_before(invoice_id, &what).await? {
            return Ok(true);
        }
        let mut recovery = match existing {
            Some(recovery) => recovery,
            None => self.insert_recovery(invoice_id).await?,
        };
        if recovery.status.is_closed() {
            let message = format!(
                "decline {} noted: recovery is already {}",
                decline.reason(),
                recovery.status
            );
            return self.note(&mut recovery, message).await;
        }

        // A hard decline, once known, is never replaced: Stripe delivers events
        // in no set order, and an older soft decline must not reopen retries.
        let overrides = &self.merchant.policy.declines;
        let known_hard = recovery
            .last_decline
            .as_ref()
            .is_some_and(|known| classify_with(known, overrides).class == DeclineClass::Hard);
        if !known_hard {
            recovery.last_decline = Some(decline.clone());
        }
        recovery.saw_event(self.event.created);
        self.record_card(invoice_id, decline).await?;
        let decided = classify_with(decline, overrides);
        let class = decided.class;
        let message = format!("decline {} recorded: {}", decline.reason(), decided.reason);
        self.log(
            ActivityKind::DeclineRecorded,
            invoice_id,
            message,
            json!({"decline": decline}),
        )
        .await?;

        if recovery.status == RecoveryStatus::Open && class == DeclineClass::Hard {
            self.cancel_tasks(&recovery).await?;
            let reason = format!(
                "hard decline: {}; pending retries cancelled",
                decided.reason
            );
            self.lose(&mut recovery, reason).await?;
        }
        self.tx.update_recovery(&recovery).await?;
        Ok(true)
    }

    /// Ends the recovery of an invoice that was paid, voided, marked
    /// uncollectible or deleted, cancelling its pending retries.
    pub(super) async fn settled(
        &mut self,
        invoice: &InvoiceSnapshot,
        settlement: Settlement,
    ) -> Result<bool, StoreError> {
        self.tx.lock_invoice(self.merchant.id, &invoice.id).await?;
        let Some(mut recovery) = self.tx.lock_recovery(self.merchant.id, &invoice.id).await? else {
            return Ok(false);
        };
        if recovery.status.is_closed() {
            let message = format!(
                "{} noted: recovery is already {}",
                self.event.event_type, recovery.status
            );
            return self.note(&mut recovery, message).await;
        }

        recovery.saw_event(self.event.created);
        self.cancel_tasks(&recovery).await?;
        let counted = recovery.status == RecoveryStatus::Open;
        match settlement {
            Settlement::Paid => {
                let amount = if invoice.amount_paid.minor_units > 0 {
                    invoice.amount_paid
                } else {
                    invoice.amount_due
                };
                recovery.amount_recovered = Some(amount);
                recovery.close(
                    RecoveryStatus::Recovered,
                    self.event.event_type.clone(),
                    self.now,
                );
                if counted {
                    let mut delta = self.delta(amount.currency);
                    delta.payments_recovered = 1;
                    delta.amount_recovered = amount.minor_units;
                    delta.recovery_seconds = (self.now - recovery.opened_at).num_seconds().max(0);
                    self.tx.add_metrics(&delta).await?;
                    notify::schedule(self.tx, &recovery, NoticeKind::PaymentRecovered, self.now)
                        .await?;
                }
                let message = format!(
                    "invoice paid ({}): recovered {amount}",
                    self.event.event_type
                );
                self.log(
                    ActivityKind::PaymentRecovered,
                    &invoice.id,
                    message,
                    json!({"counted": counted}),
                )
                .await?;
            }
            Settlement::Voided | Settlement::MarkedUncollectible | Settlement::Deleted => {
                let reason = format!("{}: no further retries", self.event.event_type);
                if counted {
                    self.lose(&mut recovery, reason).await?;
                } else {
                    recovery.close(RecoveryStatus::Lost, reason, self.now);
                }
            }
        }
        self.tx.update_recovery(&recovery).await?;
        Ok(true)
    }

    /// Records a deleted subscription as canceled and ends its open
    /// recoveries.
    pub(super) async fn subscription_deleted(
        &mut self,
        subscription: &SubscriptionId,
    ) -> Result<bool, StoreError> {
        self.tx
            .lock_subscription(self.merchant.id, subscription)
            .await?;
        self.put_subscription_state(subscription, CANCELED).await?;
        self.end_subscription_recoveries(subscription, "deleted")
            .await
    }

    /// Records a subscription's status from `customer.subscription.created`
    /// or `.updated`, unless a newer state is known, and ends the open
    /// recoveries of a subscription that moved to an ended status
    /// (`canceled`, `incomplete_expired`).
    pub(super) async fn subscription_changed(
        &mut self,
        subscription: &SubscriptionId,
        status: &str,
    ) -> Result<bool, StoreError> {
        self.tx
            .lock_subscription(self.merchant.id, subscription)
            .await?;
        if !self.put_subscription_state(subscription, status).await? {
            let message = format!(
                "{} not applied: a newer state of subscription {subscription} is known",
                self.event.event_type
            );
            self.log_without_invoice(message).await?;
            return Ok(true);
        }
        if !crate::subscription::is_ended_status(status) {
            return Ok(true);
        }
        let how = format!("moved to {status}");
        self.end_subscription_recoveries(subscription, &how).await?;
        Ok(true)
    }

    /// Stores the subscription's status at the event's time; returns `false`
    /// when a newer state was known, which is kept.
    async fn put_subscription_state(
        &mut self,
        subscription: &SubscriptionId,
        status: &str,
    ) -> Result<bool, StoreError> {
        let known = self
            .tx
            .subscription_state(self.merchant.id, subscription)
            .await?;
        let created = self.event.created;
        if known.is_some_and(|known| !known.is_replaced_by(status, created)) {
            return Ok(false);
        }
        let state = SubscriptionState {
            merchant_id: self.merchant.id,
            subscription_id: subscription.clone(),
            status: status.to_owned(),
            last_event_at: created,
        };
        self.tx.put_subscription_state(&state).await?;
        Ok(true)
    }

    /// Ends every open recovery of a subscription that was deleted or
    /// canceled (`how`), cancelling their pending retries.
    async fn end_subscription_recoveries(
        &mut self,
        subscription: &SubscriptionId,
        how: &str,
    ) -> Result<bool, StoreError> {
        let recoveries = self
            .tx
            .lock_open_recoveries_of_subscription(self.merchant.id, subscription)
            .await?;
        let applied = !recoveries.is_empty();
        for mut recovery in recoveries {
            recovery.saw_event(self.event.created);
            self.cancel_tasks(&recovery).await?;
            let reason = format!("subscription {subscription} {how}: no further retries");
            if recovery.status == RecoveryStatus::Open {
                self.lose(&mut recovery, reason).await?;
            } else {
                recovery.close(RecoveryStatus::Lost, reason, self.now);
            }
            self.tx.update_recovery(&recovery).await?;
        }
        Ok(applied)
    }

    async fn lock_or_insert_recovery(
        &mut self,
        invoice_id: &InvoiceId,
    ) -> Result<Recovery, StoreError> {
        match self.tx.lock_recovery(self.merchant.id, invoice_id).await? {
            Some(recovery) => Ok(recovery),
            None => self.insert_recovery(invoice_id).await,
        }
    }

    /// Inserts a new recovery of the invoice, or locks and returns the one a
    /// concurrent transaction inserted first.
    async fn insert_recovery(&mut self, invoice_id: &InvoiceId) -> Result<Recovery, StoreError> {
        let recovery = Recovery::new(
            self.merchant.id,
            invoice_id.clone(),
            self.event.created,
            self.now,
        );
        if self.tx.insert_recovery(&recovery).await? {
            return Ok(recovery);
        }
        // A concurrent transaction inserted it first and has committed by now.
        self.tx
            .lock_recovery(self.merchant.id, invoice_id)
            .await?
            .ok_or_else(|| StoreError::InvalidRow {
                table: "invoice_recoveries",
                message: format!("recovery of {invoice_id} vanished after a conflicting insert"),
            })
    }

    async fn schedule_first_retry(&mut self, recovery: &mut Recovery) -> Result<(), StoreError> {
        if self.merchant.policy.passive {
            closing::schedule_close(self.tx, self.merchant, recovery).await?;
            return self.note_passive(recovery).await;
        }
        let clock = closing::retry_clock(self.merchant, recovery, self.now);
        let Some(run_at) = self.merchant.policy.retry_time(1, &clock) else {
            return self
                .lose(recovery, "the merchant's policy has no retries".to_owned())
                .await;
        };
        let task = retry_task(self.merchant, &recovery.invoice_id, 1, run_at);
        let task_id = self.tx.insert_task(&task).await?;
        notify::schedule(self.tx, recovery, NoticeKind::PaymentFailed, self.now).await?;
        let message = format!(
            "retry 1 of {} scheduled for {run_at}",
            self.merchant.policy.max_retries()
        );
        let mut entry = NewActivity::new(self.merchant.id, ActivityKind::RetryScheduled, message)
            .invoice(&recovery.invoice_id)
            .event(&self.event.id);
        if let Some(task_id) = task_id {
            entry = entry.task(task_id);
        }
        self.tx.insert_activity(&entry).await
    }

    /// Records that a passive merchant's failure gets no retry from Citadel.
    async fn note_passive(&mut self, recovery: &Recovery) -> Result<(), StoreError> {
        let message = "no retry scheduled: the merchant is in passive mode, so Citadel records \
                       and reports while Stripe's own retries run"
            .to_owned();
        let invoice_id = recovery.invoice_id.clone();
        self.log(
            ActivityKind::RetrySkipped,
            &invoice_id,
            message,
            serde_json::Value::Null,
        )
        .await
    }

    /// Keeps the card a decline names on the recovery, and counts the
    /// failed payment that the event reports against the card's network cap.
    async fn record_card(
        &mut self,
        invoice_id: &InvoiceId,
        decline: &Decline,
    ) -> Result<(), StoreError> {
        let Some(fingerprint) = &decline.card_fingerprint else {
            return Ok(());
        };
        self.tx
            .set_recovery_card(self.merchant.id, invoice_id, fingerprint)
            .await?;
        // NOTE: the failure event of Citadel's own retry is counted here
        // and, under its idempotency key, when the retry reserved its place:
        // twice, which errs toward fewer attempts.
        let attempt = CardAttempt {
            fingerprint: fingerprint.clone(),
            merchant_id: self.merchant.id,
            invoice_id: invoice_id.clone(),
            attempt_key: format!("event:{}", self.event.id),
            attempted_at: self.event.created,
        };
        self.tx.insert_card_attempt(&attempt).await?;
        Ok(())
    }

    async fn cancel_tasks(&mut self, recovery: &Recovery) -> Result<(), StoreError> {
        let cancelled = self
            .tx
            .cancel_pending_tasks(self.merchant.id, &recovery.invoice_id)
            .await?;
        if cancelled == 0 {
            return Ok(());
        }
        let message = format!(
            "{cancelled} pending retries cancelled by {}",
            self.event.event_type
        );
        self.log(
            ActivityKind::TasksCancelled,
            &recovery.invoice_id,
            message,
            json!({"cancelled": cancelled}),
        )
        .await
    }

    /// Ends the recovery as lost, counting it in the metrics.
    async fn lose(&mut self, recovery: &mut Recovery, reason: String) -> Result<(), StoreError> {
        if let Some(amount) = recovery.amount_due {
            let mut delta = self.delta(amount.currency);
            delta.payments_lost = 1;
            delta.amount_lost = amount.minor_units;
            self.tx.add_metrics(&delta).await?;
        }
        let invoice_id = recovery.invoice_id.clone();
        self.log(
            ActivityKind::RecoveryLost,
            &invoice_id,
            format!("recovery lost: {reason}"),
            serde_json::Value::Null,
        )
        .await?;
        recovery.close(RecoveryStatus::Lost, reason, self.now);
        notify::schedule(self.tx, recovery, NoticeKind::RecoveryLost, self.now).await
    }

    async fn note(&mut self, recovery: &mut Recovery, message: String) -> Result<bool, StoreError> {
        recovery.saw_event(self.event.created);
        self.tx.update_recovery(recovery).await?;
        let invoice_id = recovery.invoice_id.clone();
        self.log(
            ActivityKind::EventNoted,
            &invoice_id,
            message,
            serde_json::Value::Null,
        )
        .await?;
        Ok(true)
    }

    async fn log(
        &mut self,
        kind: ActivityKind,
        invoice_id: &InvoiceId,
        message: String,
        details: serde_json::Value,
    ) -> Result<(), StoreError> {
        tracing::info!(invoice.id = %invoice_id, activity = %kind, "{message}");
        let entry = NewActivity::new(self.merchant.id, kind, message)
            .invoice(invoice_id)
            .event(&self.event.id)
            .details(details);
        self.tx.insert_activity(&entry).await
    }

    async fn log_without_invoice(&mut self, message: String) -> Result<(), StoreError> {
        tracing::info!(activity = %ActivityKind::EventNoted, "{message}");
        let entry = NewActivity::new(self.merchant.id, ActivityKind::EventNoted, message)
            .event(&self.event.id);
        self.tx.insert_activity(&entry).await
    }

    fn delta(&self, currency: crate::money::Currency) -> MetricsDelta {
        let day = metrics_day(self.now, self.merchant.parsed_time_zone());
        MetricsDelta::zero(self.merchant.id, day, currency)
    }
}

/// Builds the task of retry number `attempt` of an invoice.
pub(super) fn retry_task(
    merchant: &Merchant,
    invoice_id: &InvoiceId,
    attempt: u32,
    run_at: DateTime<Utc>,
) -> NewTask {
    let payload = RetryPayment {
        invoice_id: invoice_id.clone(),
        attempt,
        idempotency_key: format!(
            "{IDEMPOTENCY_KEY_PREFIX}{}-{invoice_id}-retry-{attempt}",
            merchant.id
        ),
    };
    NewTask {
        merchant_id: merchant.id,
        kind: TaskKind::retry_payment(),
        invoice_id: Some(invoice_id.clone()),
        // Serializing a struct of strings and integers cannot fail.
        payload: serde_json::to_value(&payload).unwrap_or_default(),
        run_at,
        max_attempts: DEFAULT_MAX_ATTEMPTS,
        dedupe_key: Some(format!("retry:{invoice_id}:{attempt}")),
        priority: 0,
    }
}
