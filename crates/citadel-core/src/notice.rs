//! Customer notices: messages to the customer at steps of a recovery.
//!
//! The engine schedules a notice as a [`TaskKind::SEND_NOTICE`] task in the
//! same transaction as the step it belongs to: when a recovery opens and
//! schedules its first retry, when an invoice is paid and when a recovery is
//! lost. A worker later runs the task and hands the [`Notice`] to the
//! engine's [`Notifier`], so a slow or failing email or SMS provider never
//! holds up intake or a retry.
//!
//! [`LogNotifier`] is the default: it only writes a log line, with ids and
//! no card detail. Plug in email, SMS or in-app delivery by implementing
//! [`Notifier`] and passing it to
//! [`Engine::with_notifier`](crate::Engine::with_notifier).
//!
//! # Example
//!
//! ```
//! use citadel_core::async_trait;
//! use citadel_core::notice::{Channel, Notice, Notifier, NotifyError};
//!
//! #[derive(Debug)]
//! struct InAppInbox;
//!
//! #[async_trait]
//! impl Notifier for InAppInbox {
//!     fn channel(&self) -> Channel {
//!         Channel::InApp
//!     }
//!
//!     async fn send(&self, notice: &Notice) -> Result<(), NotifyError> {
//!         // Store the message where the customer's dashboard shows it.
//!         println!("{:?} for invoice {}", notice.kind, notice.invoice_id);
//!         Ok(())
//!     }
//! }
//! ```

use std::fmt;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::ids::{CustomerId, InvoiceId, MerchantId};
use crate::money::Money;
use crate::recovery::Recovery;
use crate::task::{NewTask, TaskKind};

/// How many times a notice task is claimed before it fails.
pub const NOTICE_MAX_ATTEMPTS: i32 = 5;

/// The step of a recovery that a notice informs the customer of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NoticeKind {
    /// A payment failed and Citadel will retry it: ask the customer to check
    /// or update their payment method.
    PaymentFailed,
    /// The invoice was paid.
    PaymentRecovered,
    /// The recovery ended without payment.
    RecoveryLost,
}

impl NoticeKind {
    /// Returns the name used in task dedupe keys and logs.
    pub const fn as_str(self) -> &'static str {
        match self {
            NoticeKind::PaymentFailed => "payment_failed",
            NoticeKind::PaymentRecovered => "payment_recovered",
            NoticeKind::RecoveryLost => "recovery_lost",
        }
    }
}

impl fmt::Display for NoticeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The channel a [`Notifier`] delivers on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    /// Email.
    Email,
    /// A text message.
    Sms,
    /// A message inside the merchant's application.
    InApp,
    /// The log only.
    Log,
}

impl Channel {
    /// Returns the channel's name, as in the activity ledger.
    pub const fn as_str(self) -> &'static str {
        match self {
            Channel::Email => "email",
            Channel::Sms => "sms",
            Channel::InApp => "in_app",
            Channel::Log => "log",
        }
    }
}

/// A notice to one customer, the payload of a notice task. It carries ids
/// and amounts, never card details: the notifier looks up contact data
/// itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notice {
    /// The step of the recovery.
    pub kind: NoticeKind,
    /// The merchant whose customer is told.
    pub merchant_id: MerchantId,
    /// The invoice concerned.
    pub invoice_id: InvoiceId,
    /// The customer, when the invoice event named one.
    pub customer_id: Option<CustomerId>,
    /// The amount due, when known.
    pub amount_due: Option<Money>,
}

impl Notice {
    /// Creates the notice of `kind` about a recovery.
    pub fn about(kind: NoticeKind, recovery: &Recovery) -> Self {
        Self {
            kind,
            merchant_id: recovery.merchant_id,
            invoice_id: recovery.invoice_id.clone(),
            customer_id: recovery.customer_id.clone(),
            amount_due: recovery.amount_due,
        }
    }

    /// Builds the task that sends this notice at `run_at`. Its dedupe key
    /// keeps one live notice of each kind per invoice.
    pub fn task(&self, run_at: DateTime<Utc>) -> NewTask {
        NewTask {
            merchant_id: self.merchant_id,
            kind: TaskKind::new(TaskKind::SEND_NOTICE),
            invoice_id: Some(self.invoice_id.clone()),
            // Serializing a struct of ids, enums and integers cannot fail.
            payload: serde_json::to_value(self).unwrap_or_default(),
            run_at,
            max_attempts: NOTICE_MAX_ATTEMPTS,
            dedupe_key: Some(format!("notice:{}:{}", self.invoice_id, self.kind)),
            priority: 0,
        }
    }
}

/// An error from a [`Notifier`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("sending the notice failed: {message}")]
pub struct NotifyError {
    /// What failed, without contact data or secrets.
    pub message: String,
    /// Whether sending again later may succeed (a timeout, a provider
    /// outage). A notice task that gets a permanent error fails at once.
    pub retryable: bool,
}

impl NotifyError {
    /// Creates an error that sending again later may clear.
    pub fn retryable(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            retryable: true,
        }
    }

    /// Creates an error that no later attempt will clear.
    pub fn permanent(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            retryable: false,
        }
    }
}

/// Delivers customer notices on one channel.
#[async_trait]
pub trait Notifier: fmt::Debug + Send + Sync + 'static {
    /// Returns the channel this notifier delivers on, for the activity
    /// ledger.
    fn channel(&self) -> Channel;

    /// Sends one notice. A notice task can run more than once (after a
    /// crash or an expired lease), so deliver idempotently where the
    /// channel allows, keyed by the invoice and [`Notice::kind`].
    ///
    /// # Errors
    ///
    /// A [`NotifyError`]; a retryable one runs the task again after a
    /// backoff.
    async fn send(&self, notice: &Notice) -> Result<(), NotifyError>;
}

/// The default [`Notifier`]: writes one `info` log line per notice, with the
/// merchant, invoice and customer ids and the notice kind.
#[derive(Debug, Clone, Copy, Default)]
pub struct LogNotifier;

#[async_trait]
impl Notifier for LogNotifier {
    fn channel(&self) -> Channel {
        Channel::Log
    }

    async fn send(&self, notice: &Notice) -> Result<(), NotifyError> {
        tracing::info!(
            merchant.id = notice.merchant_id.get(),
            invoice.id = %notice.invoice_id,
            customer.id = notice.customer_id.as_ref().map(CustomerId::as_str),
            notice.kind = %notice.kind,
            "customer notice (logged only)"
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::money::Currency;

    fn recovery() -> Recovery {
        let now = Utc::now();
        let mut recovery = Recovery::new(
            MerchantId::new(7),
            InvoiceId::parse("in_1").unwrap(),
            now,
            now,
        );
        recovery.amount_due = Some(Money::new(2500, Currency::parse("usd").unwrap()));
        recovery
    }

    #[test]
    fn notice_task_round_trips_its_payload() {
        let notice = Notice::about(NoticeKind::PaymentFailed, &recovery());
        let task = notice.task(Utc::now());

        assert_eq!(task.kind.as_str(), TaskKind::SEND_NOTICE);
        assert_eq!(
            task.dedupe_key.as_deref(),
            Some("notice:in_1:payment_failed")
        );
        let decoded: Notice = serde_json::from_value(task.payload).unwrap();
        assert_eq!(decoded, notice);
    }

    #[tokio::test]
    async fn log_notifier_accepts_every_kind() {
        let kinds = [
            NoticeKind::PaymentFailed,
            NoticeKind::PaymentRecovered,
            NoticeKind::RecoveryLost,
        ];
        for kind in kinds {
            let notice = Notice::about(kind, &recovery());
            assert_eq!(LogNotifier.send(&notice).await, Ok(()));
        }
    }
}
