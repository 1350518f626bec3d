//! The payment side: paying an invoice on a merchant's connected account.
//!
//! [`PaymentGateway`] is what the engine calls to retry an invoice. Every
//! response, including a network failure, becomes a [`PaymentOutcome`] that the
//! recovery policy acts on, so the gateway itself has no error type.

use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::ids::{AccountId, InvoiceId, SubscriptionId};
use crate::money::Money;

/// The reasons a card issuer or Stripe gave for a declined payment.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decline {
    /// Stripe's error code, such as `card_declined` or `expired_card`.
    pub code: Option<String>,
    /// The issuer's reason, such as `insufficient_funds` or `stolen_card`.
    pub decline_code: Option<String>,
    /// The card network's advice code, such as `do_not_try_again`.
    pub advice_code: Option<String>,
    /// Stripe's human-readable message, which contains no card details.
    pub message: Option<String>,
    /// The card network's own advice code (`network_advice_code`), such as
    /// Mastercard's merchant advice code `03`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_advice_code: Option<String>,
    /// Radar's verdict on the charge (`charge.outcome.type`), such as
    /// `issuer_declined` or `blocked`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome_type: Option<String>,
    /// Radar's risk level of the charge (`charge.outcome.risk_level`):
    /// `normal`, `elevated` or `highest`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub risk_level: Option<String>,
    /// The fingerprint of the card that was declined. Never serialized, so
    /// it stays out of the activity ledger and the stored decline.
    #[serde(skip)]
    pub card_fingerprint: Option<CardFingerprint>,
}

/// Stripe's fingerprint of a card number (`card.fingerprint`): the same for
/// one card on every account of a platform, so it identifies the card for
/// the network caps.
///
/// It is a card detail: `Debug` prints `CardFingerprint(..)`, and it has no
/// `Display` or `Serialize`.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct CardFingerprint(String);

impl CardFingerprint {
    /// Wraps a fingerprint; `None` when it is empty.
    pub fn new(fingerprint: impl Into<String>) -> Option<Self> {
        let fingerprint = fingerprint.into();
        (!fingerprint.trim().is_empty()).then_some(Self(fingerprint))
    }

    /// Returns the fingerprint, for storage. Never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for CardFingerprint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CardFingerprint(..)")
    }
}

impl Decline {
    /// Creates a decline with only an issuer's decline code.
    pub fn with_decline_code(decline_code: impl Into<String>) -> Self {
        Self {
            decline_code: Some(decline_code.into()),
            ..Self::default()
        }
    }

    /// Returns the most specific code present: the decline code, else the
    /// error code, else `unknown`.
    pub fn reason(&self) -> &str {
        self.decline_code
            .as_deref()
            .or(self.code.as_deref())
            .unwrap_or("unknown")
    }
}

/// An `Idempotency-Key` for one payment attempt.
///
/// Stripe stores the response to the first request made with a key for at least
/// 24 hours and returns it for any repeat, so a retried request never charges
/// twice.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    /// Creates a key. Stripe accepts at most 255 characters.
    pub fn new(key: impl Into<String>) -> Self {
        Self(key.into())
    }

    /// Returns the key.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A request to pay an open invoice with its customer's saved payment method.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayInvoice {
    /// The connected account that owns the invoice, or `None` for the
    /// platform's own account.
    pub account: Option<AccountId>,
    /// The invoice to pay.
    pub invoice: InvoiceId,
    /// The key that makes the request safe to repeat.
    pub idempotency_key: IdempotencyKey,
}

/// The result of a [`PayInvoice`] request.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PaymentOutcome {
    /// The invoice is paid.
    Paid {
        /// The amount paid.
        amount_paid: Money,
    },
    /// The card was declined.
    Declined(Decline),
    /// The payment needs the customer (3-D Secure or another action), so no
    /// off-session retry can succeed.
    ActionRequired {
        /// Stripe's error message.
        message: String,
    },
    /// Stripe accepted a payment that has not settled yet (a bank debit, for
    /// example). Stripe's `invoice.paid` or `invoice.payment_failed` event
    /// reports how it ends; the retry counts as made.
    Processing {
        /// Stripe's description of the payment's state.
        message: String,
    },
    /// The invoice cannot be paid any more: it is already paid, void,
    /// uncollectible or deleted. This is not a recovery by Citadel.
    NotPayable {
        /// Stripe's error message.
        message: String,
    },
    /// Stripe returned HTTP 429, so try again after the wait.
    RateLimited {
        /// The wait Stripe asked for, if it sent one.
        retry_after: Option<Duration>,
    },
    /// The request may not have reached Stripe, or Stripe failed (a timeout, a
    /// dropped connection, HTTP 5xx, a response that could not be read). Retry
    /// with the same idempotency key.
    Transient {
        /// The error description.
        message: String,
    },
    /// Stripe rejected the request itself (a bad API key, a missing
    /// permission on the connected account, an invalid parameter): retrying
    /// cannot help until an operator fixes the cause.
    Rejected {
        /// The HTTP status.
        status: u16,
        /// Stripe's error message.
        message: String,
    },
}

/// A change Citadel makes on a connected account after a recovery's
/// schedule is used up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccountAction {
    /// `POST /v1/invoices/{id}/mark_uncollectible`.
    MarkUncollectible {
        /// The invoice.
        invoice: InvoiceId,
    },
    /// `DELETE /v1/subscriptions/{id}`.
    CancelSubscription {
        /// The subscription.
        subscription: SubscriptionId,
    },
}

/// A request to run an [`AccountAction`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FinalActionRequest {
    /// The connected account, or `None` for the platform's own account.
    pub account: Option<AccountId>,
    /// What to do.
    pub action: AccountAction,
    /// The key that makes the request safe to repeat.
    pub idempotency_key: IdempotencyKey,
}

/// The result of a [`FinalActionRequest`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ActionOutcome {
    /// Stripe made the change.
    Done,
    /// Stripe returned HTTP 429, so try again after the wait.
    RateLimited {
        /// The wait Stripe asked for, if it sent one.
        retry_after: Option<Duration>,
    },
    /// The request may not have reached Stripe, or Stripe failed. Retry with
    /// the same idempotency key.
    Transient {
        /// The error description.
        message: String,
    },
    /// Stripe rejected the request (the invoice is already paid, the
    /// subscription is gone, a permission is missing): retrying cannot help.
    Rejected {
        /// The HTTP status.
        status: u16,
        /// Stripe's error message.
        message: String,
    },
}

/// Pays invoices on connected accounts, and runs the final action of a
/// recovery there.
#[cfg_attr(test, mockall::automock)]
#[async_trait]
pub trait PaymentGateway: Send + Sync + 'static {
    /// Attempts to pay the invoice, returning how it went.
    async fn pay_invoice(&self, request: &PayInvoice) -> PaymentOutcome;

    /// Runs a final action on the connected account, returning how it went.
    async fn run_final_action(&self, request: &FinalActionRequest) -> ActionOutcome;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_stays_out_of_debug_and_json() {
        let decline = Decline {
            decline_code: Some("insufficient_funds".to_owned()),
            card_fingerprint: CardFingerprint::new("fp_secret_card"),
            ..Decline::default()
        };
        let debug = format!("{decline:?}");
        assert!(!debug.contains("fp_secret_card"), "{debug}");
        assert!(debug.contains("CardFingerprint(..)"), "{debug}");

        let json = serde_json::to_string(&decline).unwrap();
        assert!(!json.contains("fp_secret_card"), "{json}");
        assert!(!json.contains("card_fingerprint"), "{json}");
    }

    #[test]
    fn empty_fingerprint_is_none() {
        assert_eq!(CardFingerprint::new("  "), None);
        assert_eq!(
            CardFingerprint::new("fp_1").map(|fp| fp.expose().to_owned()),
            Some("fp_1".to_owned())
        );
    }
}
