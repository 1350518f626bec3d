//! Tolerant parsing of webhook bodies into [`citadel_core::event::Event`].
//!
//! Stripe renders each event in the API version its account had when the
//! event was created, so one endpoint receives many shapes. [`parse_event`]
//! reads the body into a [`serde_json::Value`] and takes only the fields the
//! engine acts on, from old shapes and new:
//!
//! - The envelope: `id`, `type`, `created` and `data.object` are required.
//!   `account` (set on Connect events, named `user_id` before API version
//!   2017-05-25), `request` (its id and idempotency key), `api_version` and
//!   `livemode` are read when present.
//! - Invoices: the id, the customer, the amounts, the attempt count and the
//!   status. The subscription comes from the top-level `subscription` (API
//!   versions before 2025-03-31) or from `parent.subscription_details`
//!   (since). A decline reason is read when the event embeds the failed
//!   charge or payment intent as an expanded object.
//! - `charge.failed` and `payment_intent.payment_failed`: the invoice they
//!   paid (their `invoice` field exists before 2025-03-31) and the decline,
//!   from `failure_code` and `outcome` on a charge and from
//!   `last_payment_error` on a payment intent.
//! - `invoice.paid`, `invoice.payment_succeeded`, `invoice.voided`,
//!   `invoice.marked_uncollectible` and `invoice.deleted`: the invoice, as a
//!   settlement.
//! - `customer.subscription.created` and `.updated`: the id and `status`;
//!   `customer.subscription.deleted`: the id.
//!
//! Unknown fields, and changes to fields the engine does not use, never fail
//! a parse. A field the engine needs that is missing or of the wrong type is
//! a [`ParseError`] naming the field and the value. Event types the engine
//! does not act on parse to [`EventKind::Unhandled`].
//!
//! # Example
//!
//! ```
//! use citadel_core::event::EventKind;
//! use citadel_stripe::event::parse_event;
//!
//! let body = br#"{
//!     "id": "evt_1", "object": "event", "type": "customer.subscription.deleted",
//!     "account": "acct_1", "created": 1234567890,
//!     "data": {"object": {"id": "sub_1", "object": "subscription"}}
//! }"#;
//! let event = parse_event(body)?;
//!
//! assert_eq!(event.account.unwrap().as_str(), "acct_1");
//! assert!(matches!(event.kind, EventKind::SubscriptionDeleted { .. }));
//! # Ok::<(), citadel_stripe::event::ParseError>(())
//! ```

use chrono::DateTime;
use citadel_core::event::{Event, EventKind, InvoiceSnapshot, Settlement};
use citadel_core::ids::{AccountId, CustomerId, EventId, IdError, InvoiceId, SubscriptionId};
use citadel_core::money::{Currency, CurrencyError, Money};
use citadel_core::payment::{CardFingerprint, Decline};
use serde_json::{Map, Value};

/// The maximum number of characters of a JSON value that an error repeats.
const VALUE_EXCERPT_CHARS: usize = 60;

/// An error returned when a webhook body is not an event the engine can
/// read.
///
/// Each variant names the field and the value. Respond to such a request
/// with HTTP 400 and log the error, because Stripe then redelivers the event
/// while someone looks at the body.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ParseError {
    /// The body is not JSON.
    #[error("invalid event body: not JSON ({source}); pass the request body exactly as received")]
    NotJson {
        /// The JSON parser's error.
        source: serde_json::Error,
    },
    /// The body is JSON but not an object.
    #[error("invalid event body: expected a JSON object, found {found}")]
    NotAnObject {
        /// The kind of JSON value found, such as `an array`.
        found: &'static str,
    },
    /// The body's `object` field names something other than an event.
    #[error(
        "invalid event body: `object` is {object}, expected \"event\"; send only Stripe event \
         bodies to this endpoint"
    )]
    NotAnEvent {
        /// The `object` value, as JSON.
        object: String,
    },
    /// A field the engine needs is missing or `null`.
    #[error("invalid event: missing field `{field}`, which Stripe sends in every such event")]
    MissingField {
        /// The dotted path of the field, such as `data.object.id`.
        field: String,
    },
    /// A field the engine needs has another JSON type.
    #[error("invalid event: field `{field}` is {value}, expected {expected}")]
    WrongType {
        /// The dotted path of the field.
        field: String,
        /// The expected kind of value, such as `an integer`.
        expected: &'static str,
        /// The start of the value found, as JSON.
        value: String,
    },
    /// A field contains an id of the wrong kind.
    #[error("invalid event: field `{field}`: {source}")]
    InvalidId {
        /// The dotted path of the field.
        field: String,
        /// The reason the id is invalid, which names the value.
        source: IdError,
    },
    /// A currency field is not a three-letter code.
    #[error("invalid event: field `{field}`: {source}")]
    InvalidCurrency {
        /// The dotted path of the field.
        field: String,
        /// The reason the currency is invalid, which names the value.
        source: CurrencyError,
    },
    /// An amount is negative or above [`MAX_AMOUNT`].
    #[error(
        "invalid event: field `{field}` is {value}, expected an amount from 0 to {MAX_AMOUNT} minor units"
    )]
    InvalidAmount {
        /// The dotted path of the field.
        field: String,
        /// The value found.
        value: i64,
    },
    /// A timestamp is outside the range a date can hold.
    #[error("invalid event: field `{field}` is {value}, which is not a valid Unix time")]
    InvalidTimestamp {
        /// The dotted path of the field.
        field: String,
        /// The value found.
        value: i64,
    },
}

/// The largest invoice amount accepted, in minor units. It keeps the sums in
/// `daily_metrics` within `i64`: over nine million invoices at this amount fit
/// in one merchant's day and currency.
pub const MAX_AMOUNT: i64 = 1_000_000_000_000;

/// Checks that an amount is between 0 and [`MAX_AMOUNT`].
fn checked_amount(node: &Node<'_>, key: &str, value: i64) -> Result<i64, ParseError> {
    if (0..=MAX_AMOUNT).contains(&value) {
        return Ok(value);
    }
    Err(ParseError::InvalidAmount {
        field: node.path_of(key),
        value,
    })
}

/// Parses a webhook body of any API version into an [`Event`].
///
/// Verify the body's signature first, with
/// [`WebhookVerifier`](crate::webhook::WebhookVerifier): this function trusts
/// what it reads.
///
/// # Errors
///
/// Returns a [`ParseError`] when the body is not JSON, not an event, or lacks
/// a field the engine needs for the event's type.
pub fn parse_event(payload: &[u8]) -> Result<Event, ParseError> {
    let payload: Value =
        serde_json::from_slice(payload).map_err(|source| ParseError::NotJson { source })?;
    let Value::Object(root) = &payload else {
        return Err(ParseError::NotAnObject {
            found: json_kind(&payload),
        });
    };
    let envelope = Envelope::read(&Node::root(root))?;

    Ok(Event {
        id: envelope.id,
        account: envelope.account,
        event_type: envelope.event_type,
        created: envelope.created,
        api_version: envelope.api_version,
        livemode: envelope.livemode,
        request_id: envelope.request_id,
        request_idempotency_key: envelope.request_idempotency_key,
        kind: envelope.kind,
        payload,
    })
}

/// Everything of an event but its raw JSON.
struct Envelope {
    id: EventId,
    account: Option<AccountId>,
    event_type: String,
    created: DateTime<chrono::Utc>,
    api_version: Option<String>,
    livemode: bool,
    request_id: Option<String>,
    request_idempotency_key: Option<String>,
    kind: EventKind,
}

impl Envelope {
    fn read(event: &Node<'_>) -> Result<Self, ParseError> {
        if let Some(object) = event.get("object")
            && object.as_str() != Some("event")
        {
            return Err(ParseError::NotAnEvent {
                object: excerpt(object),
            });
        }

        let id = event.id("id", EventId::parse)?;
        let event_type = event.required_str("type")?.to_owned();
        let created = event.timestamp("created")?;
        let object = event.required_object("data")?.required_object("object")?;
        let account = read_account(event)?;

        Ok(Self {
            kind: read_kind(&event_type, &object)?,
            id,
            account,
            event_type,
            created,
            api_version: event.lenient_str("api_version").map(str::to_owned),
            livemode: event.get("livemode").and_then(Value::as_bool) == Some(true),
            request_id: request_id(event),
            request_idempotency_key: request_idempotency_key(event),
        })
    }
}

/// Reads the connected account from `account`, or from `user_id`, its name
/// in API versions before 2017-05-25.
fn read_account(event: &Node<'_>) -> Result<Option<AccountId>, ParseError> {
    if let Some(account) = event.str("account")? {
        let account = parse_id(event.path_of("account"), account, AccountId::parse)?;
        return Ok(Some(account));
    }
    let Some(user_id) = event.str("user_id")? else {
        return Ok(None);
    };
    let account = parse_id(event.path_of("user_id"), user_id, AccountId::parse)?;
    Ok(Some(account))
}

/// Reads `request.id`, or `request` itself in API versions before
/// 2017-05-25, where it was the request id as a plain string.
fn request_id(event: &Node<'_>) -> Option<String> {
    let request = event.get("request")?;
    let id = match request {
        Value::String(id) => Some(id.as_str()),
        Value::Object(request) => request.get("id").and_then(Value::as_str),
        _ => None,
    };
    id.map(str::to_owned)
}

/// Reads `request.idempotency_key`, which API versions before 2017-05-25 do
/// not send.
fn request_idempotency_key(event: &Node<'_>) -> Option<String> {
    let key = event
        .lenient_object("request")?
        .lenient_str("idempotency_key")?;
    Some(key.to_owned())
}

fn read_kind(event_type: &str, object: &Node<'_>) -> Result<EventKind, ParseError> {
    let settled = |settlement| -> Result<EventKind, ParseError> {
        Ok(EventKind::InvoiceSettled {
            invoice: read_invoice(object)?,
            settlement,
        })
    };

    match event_type {
        "invoice.payment_failed" => Ok(EventKind::InvoicePaymentFailed(read_invoice(object)?)),
        "invoice.paid" | "invoice.payment_succeeded" => settled(Settlement::Paid),
        "invoice.voided" => settled(Settlement::Voided),
        "invoice.marked_uncollectible" => settled(Settlement::MarkedUncollectible),
        "invoice.deleted" => settled(Settlement::Deleted),
        "customer.subscription.deleted" => Ok(EventKind::SubscriptionDeleted {
            subscription_id: object.id("id", SubscriptionId::parse)?,
        }),
        "customer.subscription.created" | "customer.subscription.updated" => {
            Ok(EventKind::SubscriptionChanged {
                subscription_id: object.id("id", SubscriptionId::parse)?,
                status: object.required_str("status")?.to_owned(),
            })
        }
        "charge.failed" => read_payment_declined(object, charge_decline),
        "payment_intent.payment_failed" => read_payment_declined(object, payment_intent_decline),
        _ => Ok(EventKind::Unhandled),
    }
}

/// Reads a failed charge or payment intent: it becomes
/// [`EventKind::PaymentDeclined`] when it names the invoice it paid, and
/// [`EventKind::Unhandled`] otherwise (every payment outside invoices, and
/// every payment in API versions since 2025-03-31, which dropped the field).
fn read_payment_declined(
    payment: &Node<'_>,
    decline: fn(&Node<'_>) -> Option<Decline>,
) -> Result<EventKind, ParseError> {
    let Some(invoice) = payment.reference("invoice")? else {
        return Ok(EventKind::Unhandled);
    };
    let invoice_id = parse_id(payment.path_of("invoice"), invoice, InvoiceId::parse)?;

    Ok(EventKind::PaymentDeclined {
        invoice_id,
        decline: decline(payment).unwrap_or_default(),
    })
}

fn read_invoice(invoice: &Node<'_>) -> Result<InvoiceSnapshot, ParseError> {
    let currency_code = invoice.required_str("currency")?;
    let currency =
        Currency::parse(currency_code).map_err(|source| ParseError::InvalidCurrency {
            field: invoice.path_of("currency"),
            source,
        })?;
    let amount_due = checked_amount(invoice, "amount_due", invoice.required_i64("amount_due")?)?;
    let amount_paid = invoice.i64("amount_paid")?.unwrap_or(0);
    let amount_paid = checked_amount(invoice, "amount_paid", amount_paid)?;

    Ok(InvoiceSnapshot {
        id: invoice.id("id", InvoiceId::parse)?,
        customer_id: invoice.lenient_id("customer", CustomerId::parse),
        subscription_id: invoice_subscription(invoice),
        amount_due: Money::new(amount_due, currency),
        amount_paid: Money::new(amount_paid, currency),
        attempt_count: attempt_count(invoice),
        status: invoice.lenient_str("status").map(str::to_owned),
        decline: invoice_decline(invoice),
    })
}

/// Reads the subscription from the top-level `subscription` of API versions
/// before 2025-03-31, else from `parent.subscription_details.subscription`.
fn invoice_subscription(invoice: &Node<'_>) -> Option<SubscriptionId> {
    if let Some(id) = invoice.lenient_id("subscription", SubscriptionId::parse) {
        return Some(id);
    }
    invoice
        .lenient_object("parent")?
        .lenient_object("subscription_details")?
        .lenient_id("subscription", SubscriptionId::parse)
}

/// Reads `attempt_count`, which the engine only reports: an unreadable value
/// counts as 0 and a value past `u32::MAX` as `u32::MAX`.
fn attempt_count(invoice: &Node<'_>) -> u32 {
    let count = invoice.get("attempt_count").and_then(Value::as_u64);
    count.map_or(0, |count| u32::try_from(count).unwrap_or(u32::MAX))
}

/// Reads the decline reason from a payment the invoice embeds as an expanded
/// object: `payment_intent` or `charge` (before 2025-03-31), or an entry of
/// `payments` (since). Ids that are not expanded carry no reason.
fn invoice_decline(invoice: &Node<'_>) -> Option<Decline> {
    if let Some(decline) = invoice
        .lenient_object("payment_intent")
        .and_then(|intent| payment_intent_decline(&intent))
    {
        return Some(decline);
    }
    if let Some(decline) = invoice
        .lenient_object("charge")
        .and_then(|charge| charge_decline(&charge))
    {
        return Some(decline);
    }
    invoice_payments_decline(invoice)
}

/// Reads the first decline among the `payments` list's expanded payment
/// intents and charges.
fn invoice_payments_decline(invoice: &Node<'_>) -> Option<Decline> {
    let payments = invoice.lenient_object("payments")?;
    let entries = payments.get("data")?.as_array()?;

    entries.iter().find_map(|entry| {
        let payment = entry.get("payment")?.as_object()?;
        let payment = Node::child(payment, "payments.data.payment".to_owned());
        let from_intent = payment
            .lenient_object("payment_intent")
            .and_then(|intent| payment_intent_decline(&intent));
        from_intent.or_else(|| {
            payment
                .lenient_object("charge")
                .and_then(|charge| charge_decline(&charge))
        })
    })
}

/// Reads a charge's decline: `failure_code`, `charge.outcome` (reason,
/// advice codes, Radar's type and risk level), `failure_message` and the
/// card's fingerprint.
fn charge_decline(charge: &Node<'_>) -> Option<Decline> {
    let outcome = charge.lenient_object("outcome");
    let outcome_str = |key| {
        outcome
            .as_ref()
            .and_then(|o| o.lenient_str(key))
            .map(str::to_owned)
    };
    let fingerprint = charge
        .lenient_object("payment_method_details")
        .and_then(|details| details.lenient_object("card"))
        .and_then(|card| {
            card.lenient_str("fingerprint")
                .and_then(CardFingerprint::new)
        });

    let decline = Decline {
        code: charge.lenient_str("failure_code").map(str::to_owned),
        decline_code: outcome_str("reason"),
        advice_code: outcome_str("advice_code"),
        message: charge.lenient_str("failure_message").map(str::to_owned),
        network_advice_code: outcome_str("network_advice_code"),
        outcome_type: outcome_str("type"),
        risk_level: outcome_str("risk_level"),
        card_fingerprint: fingerprint,
    };
    non_empty(decline)
}

/// Reads a payment intent's `last_payment_error`.
fn payment_intent_decline(intent: &Node<'_>) -> Option<Decline> {
    let error = intent.lenient_object("last_payment_error")?;
    let text = |key| error.lenient_str(key).map(str::to_owned);

    let fingerprint = error
        .lenient_object("payment_method")
        .and_then(|method| method.lenient_object("card"))
        .and_then(|card| {
            card.lenient_str("fingerprint")
                .and_then(CardFingerprint::new)
        });

    let decline = Decline {
        code: text("code"),
        decline_code: text("decline_code"),
        advice_code: text("advice_code"),
        message: text("message"),
        network_advice_code: text("network_advice_code"),
        card_fingerprint: fingerprint,
        ..Decline::default()
    };
    non_empty(decline)
}

fn non_empty(decline: Decline) -> Option<Decline> {
    (decline != Decline::default()).then_some(decline)
}

/// A JSON object and its dotted path from the event's root, for errors.
struct Node<'a> {
    fields: &'a Map<String, Value>,
    path: String,
}

impl<'a> Node<'a> {
    fn root(fields: &'a Map<String, Value>) -> Self {
        Self::child(fields, String::new())
    }

    fn child(fields: &'a Map<String, Value>, path: String) -> Self {
        Self { fields, path }
    }

    fn path_of(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_owned()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    /// Returns the field's value; `null` counts as absent.
    fn get(&self, key: &str) -> Option<&'a Value> {
        self.fields.get(key).filter(|value| !value.is_null())
    }

    fn required(&self, key: &str) -> Result<&'a Value, ParseError> {
        self.get(key).ok_or_else(|| ParseError::MissingField {
            field: self.path_of(key),
        })
    }

    fn wrong_type(&self, key: &str, expected: &'static str, value: &Value) -> ParseError {
        ParseError::WrongType {
            field: self.path_of(key),
            expected,
            value: excerpt(value),
        }
    }

    fn required_object(&self, key: &str) -> Result<Node<'a>, ParseError> {
        match self.required(key)? {
            Value::Object(fields) => Ok(Node::child(fields, self.path_of(key))),
            other => Err(self.wrong_type(key, "an object", other)),
        }
    }

    /// Returns the field when it is an object, and `None` otherwise: for
    /// optional parts the engine can do without.
    fn lenient_object(&self, key: &str) -> Option<Node<'a>> {
        let fields = self.get(key)?.as_object()?;
        Some(Node::child(fields, self.path_of(key)))
    }

    fn str(&self, key: &str) -> Result<Option<&'a str>, ParseError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(text)) => Ok(Some(text)),
            Some(other) => Err(self.wrong_type(key, "a string", other)),
        }
    }

    fn required_str(&self, key: &str) -> Result<&'a str, ParseError> {
        let value = self.required(key)?;
        value
            .as_str()
            .ok_or_else(|| self.wrong_type(key, "a string", value))
    }

    fn lenient_str(&self, key: &str) -> Option<&'a str> {
        self.get(key)?.as_str()
    }

    fn i64(&self, key: &str) -> Result<Option<i64>, ParseError> {
        match self.get(key) {
            None => Ok(None),
            Some(value) => value
                .as_i64()
                .map(Some)
                .ok_or_else(|| self.wrong_type(key, "an integer", value)),
        }
    }

    fn required_i64(&self, key: &str) -> Result<i64, ParseError> {
        let value = self.required(key)?;
        value
            .as_i64()
            .ok_or_else(|| self.wrong_type(key, "an integer", value))
    }

    fn timestamp(&self, key: &str) -> Result<DateTime<chrono::Utc>, ParseError> {
        let seconds = self.required_i64(key)?;
        DateTime::from_timestamp(seconds, 0).ok_or_else(|| ParseError::InvalidTimestamp {
            field: self.path_of(key),
            value: seconds,
        })
    }

    /// Reads a reference to another object: its id as a string, or the
    /// object itself when the event expanded it.
    fn reference(&self, key: &str) -> Result<Option<&'a str>, ParseError> {
        let Some(value) = self.get(key) else {
            return Ok(None);
        };
        let id = match value {
            Value::String(id) => Some(id.as_str()),
            Value::Object(object) => object.get("id").and_then(Value::as_str),
            _ => None,
        };
        id.map(Some)
            .ok_or_else(|| self.wrong_type(key, "an id or an object with an id", value))
    }

    fn id<T>(
        &self,
        key: &str,
        parse: impl FnOnce(String) -> Result<T, IdError>,
    ) -> Result<T, ParseError> {
        let value = self.required_str(key)?;
        parse_id(self.path_of(key), value, parse)
    }

    /// Reads a reference the engine can do without. An unreadable one is
    /// logged and skipped, so that the event still parses.
    fn lenient_id<T>(
        &self,
        key: &str,
        parse: impl FnOnce(String) -> Result<T, IdError>,
    ) -> Option<T> {
        let id = match self.reference(key) {
            Ok(id) => id?,
            Err(error) => {
                tracing::warn!(%error, "ignored an unreadable reference in a Stripe event");
                return None;
            }
        };
        match parse(id.to_owned()) {
            Ok(id) => Some(id),
            Err(error) => {
                let field = self.path_of(key);
                tracing::warn!(%error, event.field = %field, "ignored an invalid id in a Stripe event");
                None
            }
        }
    }
}

fn parse_id<T>(
    field: String,
    value: &str,
    parse: impl FnOnce(String) -> Result<T, IdError>,
) -> Result<T, ParseError> {
    parse(value.to_owned()).map_err(|source| ParseError::InvalidId { field, source })
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Returns the start of a value's JSON text, for error messages.
fn excerpt(value: &Value) -> String {
    let text = value.to_string();
    if text.chars().count() <= VALUE_EXCERPT_CHARS {
        return text;
    }
    let start: String = text.chars().take(VALUE_EXCERPT_CHARS).collect();
    format!("{start}…")
}

#[cfg(test)]
mod tests;
