//! The engine: applies events and runs retry tasks.
//!
//! [`Engine::ingest`] records a parsed Stripe event and applies its effect in
//! one store transaction, so a webhook handler that returns 200 only after it
//! returns never loses an event, and a redelivered event is a no-op.
//! [`Engine::run_task`] runs one claimed retry: it calls the payment gateway
//! outside any transaction, then writes the task's new state, the recovery,
//! the metrics and the activity together under the task's lease.

mod closing;
mod intake;
mod notify;
mod retry;

use std::sync::Arc;

use chrono::Utc;
use tracing::{Instrument, info_span};

use crate::event::{Event, EventKind};
use crate::ids::{AccountId, MerchantId, TaskId};
use crate::notice::{LogNotifier, Notifier};
use crate::payment::PaymentGateway;
use crate::policy::CardCap;
use crate::store::{EventRecord, Store, StoreError};
use crate::task::{InvalidTransition, Task, TaskKind};

pub use closing::{CloseRecoveryPayload, FinalActionPayload};
pub use retry::TaskResult;

/// An error from the engine. Every variant is an infrastructure failure or a
/// bug: declines and payment errors are outcomes, not errors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// The store failed; the transaction was rolled back, so retrying the
    /// same call is safe.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The engine asked for a move the task state machine forbids.
    #[error(transparent)]
    InvalidTransition(#[from] InvalidTransition),
    /// A task's merchant does not exist.
    #[error("merchant {merchant_id} of task {task_id} not found")]
    MerchantNotFound {
        /// The task.
        task_id: TaskId,
        /// The missing merchant.
        merchant_id: MerchantId,
    },
}

/// The result of [`Engine::ingest`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum IntakeOutcome {
    /// The event was recorded and applied.
    Applied {
        /// The merchant it applied to.
        merchant_id: MerchantId,
    },
    /// The event had been recorded before; nothing was done.
    Duplicate,
    /// The event was recorded; its type needs nothing from the engine.
    Ignored {
        /// The merchant, if the account is registered.
        merchant_id: Option<MerchantId>,
    },
    /// No merchant is registered for the event's account, so nothing was
    /// recorded. Once the merchant is registered, the same event (a
    /// redelivery by Stripe, or the body kept by the caller) is applied. A
    /// webhook handler that wants Stripe to redeliver returns an error
    /// status, and one that ignores accounts outside Citadel returns 200.
    UnknownAccount {
        /// The account, `None` for the platform's own.
        account: Option<AccountId>,
    },
}

/// Applies events and runs retries and notices against a store, a payment
/// gateway and a notifier.
#[derive(Debug)]
pub struct Engine<S, G> {
    store: S,
    gateway: G,
    card_cap: CardCap,
    notifier: Arc<dyn Notifier>,
}

impl<S: Store, G: PaymentGateway> Engine<S, G> {
    /// Creates an engine with the default card cap of
    /// [`CardCap::default`] (15 attempts per card in 30 days) whose customer
    /// notices are only logged ([`LogNotifier`]).
    pub fn new(store: S, gateway: G) -> Self {
        Self {
            store,
            gateway,
            card_cap: CardCap::default(),
            notifier: Arc::new(LogNotifier),
        }
    }

    /// Sets the cap on attempts per card, counted across all merchants.
    pub fn with_card_cap(mut self, card_cap: CardCap) -> Self {
        self.card_cap = card_cap;
        self
    }

    /// Returns the cap on attempts per card.
    pub fn card_cap(&self) -> CardCap {
        self.card_cap
    }

    /// Sends customer notices through `notifier` instead of the log.
    #[must_use]
    pub fn with_notifier(mut self, notifier: Arc<dyn Notifier>) -> Self {
        self.notifier = notifier;
        self
    }

    /// Returns the store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// Returns the payment gateway.
    pub fn gateway(&self) -> &G {
        &self.gateway
    }

    /// Records an event and applies its effect, all in one transaction.
    ///
    /// Call it with every verified webhook event and acknowledge the webhook
    /// only after it returns `Ok`: then Stripe redelivers whatever was not
    /// committed, and redeliveries of what was committed return
    /// [`IntakeOutcome::Duplicate`].
    ///
    /// # Errors
    ///
    /// [`EngineError::Store`] when the database fails; nothing was written,
    /// so the webhook should return 5xx and let Stripe redeliver.
    pub async fn ingest(&self, event: &Event) -> Result<IntakeOutcome, EngineError> {
        let span = info_span!(
            "citadel.ingest",
            event.id = %event.id,
            event.r#type = %event.event_type,
            stripe.account = event.account.as_ref().map(AccountId::as_str),
            merchant.id = tracing::field::Empty,
        );
        self.ingest_in_span(event).instrument(span).await
    }

    async fn ingest_in_span(&self, event: &Event) -> Result<IntakeOutcome, EngineError> {
        let mut tx = self.store.begin().await?;

        if !tx.insert_event(&EventRecord::from(event)).await? {
            tracing::debug!("duplicate event delivery ignored");
            return Ok(IntakeOutcome::Duplicate);
        }

        let Some(merchant) = tx.merchant_by_account(event.account.as_ref()).await? else {
            // Dropping the transaction rolls back the event record, so the
            // event can be applied once the merchant exists.
            drop(tx);
            tracing::warn!("event not applied: no merchant is registered for its account");
            return Ok(IntakeOutcome::UnknownAccount {
                account: event.account.clone(),
            });
        };
        tracing::Span::current().record("merchant.id", merchant.id.get());

        let now = Utc::now();
        let mut intake = intake::Intake {
            tx: tx.as_mut(),
            merchant: &merchant,
            event,
            now,
        };
        let applied = match &event.kind {
            EventKind::InvoicePaymentFailed(invoice) => intake.payment_failed(invoice).await?,
            EventKind::PaymentDeclined {
                invoice_id,
                decline,
            } => intake.payment_declined(invoice_id, decline).await?,
            EventKind::InvoiceSettled {
                invoice,
                settlement,
            } => intake.settled(invoice, *settlement).await?,
            EventKind::SubscriptionDeleted { subscription_id } => {
                intake.subscription_deleted(subscription_id).await?
            }
            EventKind::SubscriptionChanged {
                subscription_id,
                status,
            } => intake.subscription_changed(subscription_id, status).await?,
            EventKind::Unhandled => false,
        };
        tx.commit().await?;

        if applied {
            Ok(IntakeOutcome::Applied {
                merchant_id: merchant.id,
            })
        } else {
            Ok(IntakeOutcome::Ignored {
                merchant_id: Some(merchant.id),
            })
        }
    }

    /// Runs one claimed task (a retry, a customer notice, a final action or
    /// the close of a recovery whose window ended) and records its outcome
    /// under its lease.
    ///
    /// # Errors
    ///
    /// [`EngineError::Store`] when the database fails. The gateway may have
    /// been called already. The task then stays running until its lease
    /// expires and runs again with the same idempotency key, so Stripe
    /// charges at most once.
    pub async fn run_task(&self, task: &Task) -> Result<TaskResult, EngineError> {
        let span = info_span!(
            "citadel.task",
            task.id = task.id.get(),
            task.kind = %task.kind,
            task.attempt = task.attempts,
            merchant.id = task.merchant_id.get(),
            invoice.id = tracing::field::Empty,
        );
        match task.kind.as_str() {
            TaskKind::FINAL_ACTION => closing::run_final_action(self, task).instrument(span).await,
            TaskKind::CLOSE_RECOVERY => closing::run_close(self, task).instrument(span).await,
            TaskKind::SEND_NOTICE => notify::run(self, task).instrument(span).await,
            _ => retry::run(self, task).instrument(span).await,
        }
    }
}
