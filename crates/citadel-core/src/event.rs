//! Stripe events, reduced to what the engine reads.
//!
//! The Stripe adapter parses webhook bodies of any API version into an
//! [`Event`], keeping only the fields the engine acts on, plus the raw JSON for
//! the record. Event types the engine does not act on become
//! [`EventKind::Unhandled`]: they are recorded and acknowledged, never
//! rejected.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::ids::{AccountId, CustomerId, EventId, InvoiceId, SubscriptionId};
use crate::money::Money;
use crate::payment::Decline;

/// A Stripe event, parsed. Its `Debug` output leaves out the payload, which
/// can carry card details such as a fingerprint and the last four digits.
#[derive(Clone, PartialEq)]
pub struct Event {
    /// Stripe's event id.
    pub id: EventId,
    /// The connected account the event happened on; `None` for the
    /// platform's own account.
    pub account: Option<AccountId>,
    /// The event type, such as `invoice.payment_failed`.
    pub event_type: String,
    /// When Stripe created the event.
    pub created: DateTime<Utc>,
    /// The API version the event is rendered in, if Stripe sent one.
    pub api_version: Option<String>,
    /// Whether the event comes from live mode.
    pub livemode: bool,
    /// The id of the API request that caused the event, or `None` when Stripe
    /// caused it itself (an automatic retry, a subscription renewal).
    pub request_id: Option<String>,
    /// The `Idempotency-Key` of that request, when Stripe sends it
    /// (`request.idempotency_key`, in API versions since 2017-05-25).
    pub request_idempotency_key: Option<String>,
    /// The fields the engine acts on.
    pub kind: EventKind,
    /// The whole event as received, kept in the event record.
    pub payload: serde_json::Value,
}

impl std::fmt::Debug for Event {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Event")
            .field("id", &self.id)
            .field("account", &self.account)
            .field("event_type", &self.event_type)
            .field("created", &self.created)
            .field("api_version", &self.api_version)
            .field("livemode", &self.livemode)
            .field("request_id", &self.request_id)
            .field("request_idempotency_key", &self.request_idempotency_key)
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

/// The part of an event the engine acts on.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum EventKind {
    /// `invoice.payment_failed`: a payment of the invoice failed.
    InvoicePaymentFailed(InvoiceSnapshot),
    /// The invoice no longer needs recovering: `invoice.paid`,
    /// `invoice.payment_succeeded`, `invoice.voided` or
    /// `invoice.marked_uncollectible`.
    InvoiceSettled {
        /// The invoice as the event shows it.
        invoice: InvoiceSnapshot,
        /// The kind of settlement.
        settlement: Settlement,
    },
    /// `charge.failed` or `payment_intent.payment_failed` that names the
    /// invoice it was paying: it carries the decline reason, which the
    /// invoice event itself does not.
    PaymentDeclined {
        /// The invoice the payment was for.
        invoice_id: InvoiceId,
        /// The decline reasons.
        decline: Decline,
    },
    /// `customer.subscription.deleted`.
    SubscriptionDeleted {
        /// The deleted subscription.
        subscription_id: SubscriptionId,
    },
    /// `customer.subscription.created` or `customer.subscription.updated`:
    /// the subscription's state at the event's time.
    SubscriptionChanged {
        /// The subscription.
        subscription_id: SubscriptionId,
        /// The subscription's `status`, such as `active`, `past_due` or
        /// `canceled`.
        status: String,
    },
    /// Any other event type, or an event the engine does not need.
    Unhandled,
}

/// The prefix of every `Idempotency-Key` Citadel sends, so that the events
/// its own requests cause can be distinguished from a customer's.
pub const IDEMPOTENCY_KEY_PREFIX: &str = "citadel-";

/// The cause of a payment event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    /// Stripe itself: an automatic retry or a renewal (the event has no
    /// request).
    Automatic,
    /// A request Citadel sent, such as its own `/pay` call (its idempotency
    /// key starts with [`IDEMPOTENCY_KEY_PREFIX`]).
    Citadel,
    /// Any other API request: the customer paying by hand on a hosted page,
    /// or someone in the Dashboard.
    Manual,
}

impl Event {
    /// Returns what caused the event, read from its `request`.
    ///
    /// NOTE: events rendered before API version 2017-05-25 carry no
    /// idempotency key, so Citadel's own requests show as [`Trigger::Manual`]
    /// there.
    pub fn trigger(&self) -> Trigger {
        if self.request_id.is_none() {
            return Trigger::Automatic;
        }
        let ours = self
            .request_idempotency_key
            .as_deref()
            .is_some_and(|key| key.starts_with(IDEMPOTENCY_KEY_PREFIX));
        if ours {
            Trigger::Citadel
        } else {
            Trigger::Manual
        }
    }
}

/// The way an invoice stopped needing recovery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Settlement {
    /// The invoice was paid (`invoice.paid`, `invoice.payment_succeeded`).
    Paid,
    /// The invoice was voided.
    Voided,
    /// The invoice was marked uncollectible.
    MarkedUncollectible,
    /// The invoice was deleted (`invoice.deleted`).
    Deleted,
}

/// The invoice fields the engine needs, read from old and new API shapes.
#[derive(Debug, Clone, PartialEq)]
pub struct InvoiceSnapshot {
    /// The invoice id.
    pub id: InvoiceId,
    /// The customer billed.
    pub customer_id: Option<CustomerId>,
    /// The subscription the invoice belongs to: top-level `subscription` in
    /// API versions before 2025-03-31, `parent.subscription_details` after.
    pub subscription_id: Option<SubscriptionId>,
    /// The amount due.
    pub amount_due: Money,
    /// The amount paid so far.
    pub amount_paid: Money,
    /// How many payment attempts Stripe has made.
    pub attempt_count: u32,
    /// The invoice status (`open`, `paid`, `void`, `uncollectible`), if sent.
    pub status: Option<String>,
    /// The decline reason, when the event embeds the failed charge or
    /// payment intent.
    pub decline: Option<Decline>,
}
