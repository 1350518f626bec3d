//! Response bodies in Stripe's wire format, built from Stripe's sample
//! `invoice` object and Stripe's error envelope.

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::state::InvoiceState;
use crate::fixtures;

/// Builds the invoice object Stripe returns from `POST /v1/invoices/{id}/pay`:
/// the sample invoice with its id, status and amounts set.
pub(super) fn invoice(id: &str, state: &InvoiceState, now: DateTime<Utc>) -> Value {
    // The embedded fixture file always has an invoice, and a unit test of
    // `fixtures` checks it, so the bare fallback is never sent in practice.
    let mut invoice = fixtures::resource("invoice").unwrap_or_else(|| json!({"object": "invoice"}));
    let amount_due = state.amount_due;
    let amount_remaining = amount_due - state.amount_paid;

    invoice["id"] = id.into();
    invoice["status"] = state.status().into();
    invoice["currency"] = state.currency.as_str().into();
    invoice["amount_due"] = amount_due.into();
    invoice["amount_paid"] = state.amount_paid.into();
    invoice["amount_remaining"] = amount_remaining.into();
    invoice["amount_overpaid"] = 0.into();
    for total in [
        "subtotal",
        "subtotal_excluding_tax",
        "total",
        "total_excluding_tax",
    ] {
        invoice[total] = amount_due.into();
    }
    invoice["attempt_count"] = state.attempt_count.into();
    invoice["attempted"] = true.into();
    invoice["livemode"] = false.into();
    set_line_amount(&mut invoice, id, state);

    if state.paid {
        invoice["status_transitions"]["paid_at"] = now.timestamp().into();
        invoice["next_payment_attempt"] = Value::Null;
    }
    invoice
}

/// Keeps the first line item consistent with the invoice's amount.
fn set_line_amount(invoice: &mut Value, id: &str, state: &InvoiceState) {
    let Some(line) = invoice.pointer_mut("/lines/data/0") else {
        return;
    };
    line["amount"] = state.amount_due.into();
    line["currency"] = state.currency.as_str().into();
    line["invoice"] = id.into();
    invoice["lines"]["url"] = format!("/v1/invoices/{id}/lines").into();
}

/// Builds Stripe's error envelope, `{"error": {...}}`.
fn envelope(error: Value) -> Value {
    json!({ "error": error })
}

/// Builds the HTTP 402 body of a declined card.
pub(super) fn card_declined(code: &str, decline_code: Option<&str>, charge: &str) -> Value {
    let message = match decline_code.unwrap_or(code) {
        "insufficient_funds" => "Your card has insufficient funds.",
        "expired_card" => "Your card has expired.",
        "authentication_required" => {
            "Your card was declined. This transaction requires authentication."
        }
        _ => "Your card was declined.",
    };
    let doc_url = format!(
        "https://stripe.com/docs/error-codes/{}",
        code.replace('_', "-")
    );

    envelope(json!({
        "type": "card_error",
        "code": code,
        "decline_code": decline_code,
        "message": message,
        "charge": charge,
        "doc_url": doc_url,
    }))
}

/// Builds the HTTP 500 body of an error inside Stripe.
pub(super) fn server_error() -> Value {
    envelope(json!({
        "type": "api_error",
        "message": "An unknown error occurred",
    }))
}

/// Builds the HTTP 429 body of a rate-limited request.
pub(super) fn rate_limited() -> Value {
    envelope(json!({
        "type": "invalid_request_error",
        "code": "rate_limit",
        "message": "Request rate limit exceeded. Learn more about rate limits here \
                    https://stripe.com/docs/rate-limits.",
        "doc_url": "https://stripe.com/docs/error-codes/rate-limit",
    }))
}

/// Builds the HTTP 400 body Stripe returns for paying a paid invoice.
pub(super) fn already_paid() -> Value {
    envelope(json!({
        "type": "invalid_request_error",
        "message": "Invoice is already paid",
    }))
}

/// Builds the subscription object Stripe returns from
/// `DELETE /v1/subscriptions/{id}`: the sample subscription, canceled.
pub(super) fn canceled_subscription(id: &str, now: DateTime<Utc>) -> Value {
    let mut subscription =
        fixtures::resource("subscription").unwrap_or_else(|| json!({"object": "subscription"}));
    subscription["id"] = id.into();
    subscription["status"] = "canceled".into();
    subscription["canceled_at"] = now.timestamp().into();
    subscription["ended_at"] = now.timestamp().into();
    subscription["livemode"] = false.into();
    subscription
}

/// Builds the HTTP 400 body of marking a paid invoice uncollectible.
pub(super) fn not_open_for_uncollectible() -> Value {
    envelope(json!({
        "type": "invalid_request_error",
        "message": "Only open invoices can be marked uncollectible; this invoice is paid",
    }))
}

/// Builds the HTTP 400 body of a key reused with another request.
pub(super) fn idempotency_mismatch(key: &str) -> Value {
    envelope(json!({
        "type": "idempotency_error",
        "message": format!(
            "Keys for idempotent requests can only be used with the same parameters they were \
             first used with. Try using a key other than '{key}' if you meant to execute a \
             different request."
        ),
    }))
}

/// Builds the HTTP 401 body of a request without an API key. Stripe sends it
/// as an `invalid_request_error`, the type its current API uses for
/// authentication failures.
pub(super) fn missing_api_key() -> Value {
    envelope(json!({
        "type": "invalid_request_error",
        "message": "You did not provide an API key. You need to provide your API key in the \
                    Authorization header, using Bearer auth (e.g. 'Authorization: Bearer \
                    YOUR_SECRET_KEY').",
    }))
}

/// Builds the HTTP 404 body for an invoice id that cannot exist.
pub(super) fn no_such_invoice(id: &str) -> Value {
    envelope(json!({
        "type": "invalid_request_error",
        "code": "resource_missing",
        "param": "invoice",
        "message": format!("No such invoice: '{id}'"),
        "doc_url": "https://stripe.com/docs/error-codes/resource-missing",
    }))
}

/// Builds the HTTP 404 body for a route the stand-in does not serve.
pub(super) fn unrecognized_url(method: &str, path: &str) -> Value {
    envelope(json!({
        "type": "invalid_request_error",
        "message": format!(
            "Unrecognized request URL ({method}: {path}). The Stripe stand-in serves only \
             POST /v1/invoices/{{id}}/pay."
        ),
    }))
}
