//! Parsing tests. Every event is built from Stripe's sample objects in
//! `fixtures3.json`, with fields changed per case.

use citadel_core::event::{EventKind, InvoiceSnapshot, Settlement, Trigger};
use proptest::prelude::*;
use serde_json::{Value, json};

use super::*;
use crate::fixtures;

const ACCOUNT: &str = "acct_1Pgc6tB7WZ01zgkW";
const INVOICE: &str = "in_1Pgc6tB7WZ01zgkWu9fdqL6I";
const CUSTOMER: &str = "cus_QXg1o8vcGmoR32";
const SUBSCRIPTION: &str = "sub_1Pgc6rB7WZ01zgkWNy0Cn5nw";
const CHARGE: &str = "ch_1PgafuB7WZ01zgkWXYmPNZs8";
const PAYMENT_INTENT: &str = "pi_1PgafyB7WZ01zgkWSjxsAJo3";

fn fixture(name: &str) -> Value {
    fixtures::resource(name).unwrap()
}

/// Builds the sample invoice after a failed payment, in the shape of API
/// versions since 2025-03-31: the subscription under `parent`.
fn current_invoice() -> Value {
    let mut invoice = fixture("invoice");
    invoice["status"] = "open".into();
    invoice["attempt_count"] = 2.into();
    invoice["attempted"] = true.into();
    invoice["amount_due"] = 2500.into();
    invoice["amount_remaining"] = 2500.into();
    invoice["currency"] = "eur".into();
    invoice["parent"]["type"] = "subscription_details".into();
    invoice["parent"]["subscription_details"]["subscription"] = SUBSCRIPTION.into();
    invoice
}

/// Builds the same invoice in the shape of API versions before 2025-03-31:
/// top-level `subscription`, `charge` and `payment_intent`, no `parent`.
fn old_invoice() -> Value {
    let mut invoice = current_invoice();
    let fields = invoice.as_object_mut().unwrap();
    fields.remove("parent");
    fields.insert("subscription".into(), SUBSCRIPTION.into());
    fields.insert("charge".into(), CHARGE.into());
    fields.insert("payment_intent".into(), PAYMENT_INTENT.into());
    fields.insert("paid".into(), false.into());
    invoice
}

/// Builds the sample charge, failed with `insufficient_funds` while paying
/// the invoice (the `invoice` field exists before 2025-03-31).
fn failed_charge() -> Value {
    let mut charge = fixture("charge");
    charge["status"] = "failed".into();
    charge["paid"] = false.into();
    charge["captured"] = false.into();
    charge["failure_code"] = "card_declined".into();
    charge["failure_message"] = "Your card has insufficient funds.".into();
    charge["outcome"]["type"] = "issuer_declined".into();
    charge["outcome"]["reason"] = "insufficient_funds".into();
    charge["outcome"]["advice_code"] = "try_again_later".into();
    charge["outcome"]["network_status"] = "declined_by_network".into();
    charge["invoice"] = INVOICE.into();
    charge
}

/// Builds the sample payment intent, failed with `stolen_card`.
fn failed_payment_intent() -> Value {
    let mut intent = fixture("payment_intent");
    intent["status"] = "requires_payment_method".into();
    intent["last_payment_error"] = json!({
        "type": "card_error",
        "code": "card_declined",
        "decline_code": "stolen_card",
        "advice_code": "do_not_try_again",
        "message": "Your card was declined.",
        "charge": CHARGE,
    });
    intent["invoice"] = INVOICE.into();
    intent
}

fn connect_event(event_type: &str, object: Value, api_version: &str) -> Value {
    let mut event = fixtures::event(event_type, object);
    event["account"] = ACCOUNT.into();
    event["api_version"] = api_version.into();
    event
}

fn parse(event: &Value) -> Result<Event, ParseError> {
    parse_event(&serde_json::to_vec(event).unwrap())
}

fn parse_kind(event: &Value) -> EventKind {
    parse(event).unwrap().kind
}

fn payment_failed_snapshot(event: &Value) -> InvoiceSnapshot {
    match parse_kind(event) {
        EventKind::InvoicePaymentFailed(snapshot) => snapshot,
        other => panic!("expected InvoicePaymentFailed, got {other:?}"),
    }
}

fn eur(minor_units: i64) -> Money {
    Money::new(minor_units, Currency::parse("eur").unwrap())
}

#[test]
fn payment_failed_current_shape() {
    let event = connect_event("invoice.payment_failed", current_invoice(), "2026-09-30");

    let snapshot = payment_failed_snapshot(&event);

    assert_eq!(snapshot.id.as_str(), INVOICE);
    assert_eq!(snapshot.customer_id.unwrap().as_str(), CUSTOMER);
    assert_eq!(snapshot.subscription_id.unwrap().as_str(), SUBSCRIPTION);
    assert_eq!(snapshot.amount_due, eur(2500));
    assert_eq!(snapshot.amount_paid, eur(0));
    assert_eq!(snapshot.attempt_count, 2);
    assert_eq!(snapshot.status.as_deref(), Some("open"));
    assert_eq!(snapshot.decline, None);
}

#[test]
fn old_and_current_shapes_give_same_snapshot() {
    let current = connect_event("invoice.payment_failed", current_invoice(), "2026-09-30");
    let old = connect_event("invoice.payment_failed", old_invoice(), "2020-08-27");

    assert_eq!(
        payment_failed_snapshot(&old),
        payment_failed_snapshot(&current)
    );
}

#[test]
fn old_shape_with_expanded_objects_gives_same_ids() {
    let mut invoice = old_invoice();
    invoice["customer"] = fixture("customer");
    invoice["subscription"] = fixture("subscription");
    let event = connect_event("invoice.payment_failed", invoice, "2020-08-27");

    let snapshot = payment_failed_snapshot(&event);

    assert_eq!(snapshot.customer_id.unwrap().as_str(), CUSTOMER);
    assert_eq!(snapshot.subscription_id.unwrap().as_str(), SUBSCRIPTION);
}

#[test]
fn current_shape_with_expanded_subscription() {
    let mut invoice = current_invoice();
    invoice["parent"]["subscription_details"]["subscription"] = fixture("subscription");
    let event = connect_event("invoice.payment_failed", invoice, "2026-09-30");

    let snapshot = payment_failed_snapshot(&event);

    assert_eq!(snapshot.subscription_id.unwrap().as_str(), SUBSCRIPTION);
}

#[test]
fn expanded_charge_on_old_invoice_gives_decline() {
    let mut invoice = old_invoice();
    invoice["charge"] = failed_charge();
    let event = connect_event("invoice.payment_failed", invoice, "2020-08-27");

    let decline = payment_failed_snapshot(&event).decline.unwrap();

    assert_eq!(decline.code.as_deref(), Some("card_declined"));
    assert_eq!(decline.decline_code.as_deref(), Some("insufficient_funds"));
    assert_eq!(decline.advice_code.as_deref(), Some("try_again_later"));
    assert_eq!(
        decline.message.as_deref(),
        Some("Your card has insufficient funds.")
    );
}

#[test]
fn expanded_payment_intent_on_old_invoice_gives_decline() {
    let mut invoice = old_invoice();
    invoice["payment_intent"] = failed_payment_intent();
    let event = connect_event("invoice.payment_failed", invoice, "2022-11-15");

    let decline = payment_failed_snapshot(&event).decline.unwrap();

    assert_eq!(decline.code.as_deref(), Some("card_declined"));
    assert_eq!(decline.decline_code.as_deref(), Some("stolen_card"));
    assert_eq!(decline.advice_code.as_deref(), Some("do_not_try_again"));
    assert_eq!(decline.message.as_deref(), Some("Your card was declined."));
}

#[test]
fn expanded_payments_on_current_invoice_give_decline() {
    let mut payment = fixture("invoice_payment");
    payment["invoice"] = INVOICE.into();
    payment["status"] = "failed".into();
    payment["payment"] = json!({
        "type": "payment_intent",
        "payment_intent": failed_payment_intent(),
    });
    let mut invoice = current_invoice();
    invoice["payments"] = json!({"object": "list", "data": [payment], "has_more": false});
    let event = connect_event("invoice.payment_failed", invoice, "2026-09-30");

    let decline = payment_failed_snapshot(&event).decline.unwrap();

    assert_eq!(decline.decline_code.as_deref(), Some("stolen_card"));
}

#[test]
fn payment_intent_error_without_codes() {
    // The sample's last_payment_error is {"type": "idempotency_error"}.
    let mut invoice = old_invoice();
    invoice["payment_intent"] = fixture("payment_intent");
    let event = connect_event("invoice.payment_failed", invoice, "2020-08-27");

    assert_eq!(payment_failed_snapshot(&event).decline, None);
}

#[test]
fn settled_event_types() {
    let cases = [
        ("invoice.paid", Settlement::Paid),
        ("invoice.payment_succeeded", Settlement::Paid),
        ("invoice.voided", Settlement::Voided),
        (
            "invoice.marked_uncollectible",
            Settlement::MarkedUncollectible,
        ),
        ("invoice.deleted", Settlement::Deleted),
    ];
    for (event_type, expected) in cases {
        let mut invoice = current_invoice();
        invoice["status"] = "paid".into();
        invoice["amount_paid"] = 2500.into();
        let event = connect_event(event_type, invoice, "2026-09-30");

        let EventKind::InvoiceSettled {
            invoice,
            settlement,
        } = parse_kind(&event)
        else {
            panic!("{event_type}: expected InvoiceSettled");
        };
        assert_eq!(settlement, expected, "{event_type}");
        assert_eq!(invoice.id.as_str(), INVOICE, "{event_type}");
        assert_eq!(invoice.amount_paid, eur(2500), "{event_type}");
    }
}

#[test]
fn subscription_deleted() {
    let mut subscription = fixture("subscription");
    subscription["status"] = "canceled".into();
    let event = connect_event("customer.subscription.deleted", subscription, "2026-09-30");

    let EventKind::SubscriptionDeleted { subscription_id } = parse_kind(&event) else {
        panic!("expected SubscriptionDeleted");
    };
    assert_eq!(subscription_id.as_str(), SUBSCRIPTION);
}

#[test]
fn subscription_created_and_updated_give_status() {
    let cases = [
        ("customer.subscription.created", "incomplete"),
        ("customer.subscription.updated", "past_due"),
        ("customer.subscription.updated", "canceled"),
    ];
    for (event_type, status) in cases {
        let mut subscription = fixture("subscription");
        subscription["status"] = status.into();
        let event = connect_event(event_type, subscription, "2026-09-30");

        let EventKind::SubscriptionChanged {
            subscription_id,
            status: parsed,
        } = parse_kind(&event)
        else {
            panic!("{event_type}: expected SubscriptionChanged");
        };
        assert_eq!(subscription_id.as_str(), SUBSCRIPTION, "{event_type}");
        assert_eq!(parsed, status, "{event_type}");
    }
}

#[test]
fn subscription_update_without_status_is_rejected() {
    let mut subscription = fixture("subscription");
    remove(&mut subscription, "status");
    let event = connect_event("customer.subscription.updated", subscription, "2026-09-30");

    let error = parse(&event).unwrap_err();

    assert!(
        matches!(&error, ParseError::MissingField { field } if field == "data.object.status"),
        "{error}"
    );
}

#[test]
fn request_idempotency_key_gives_trigger() {
    let cases = [
        (Value::Null, None, Trigger::Automatic),
        (
            json!({"id": "req_1", "idempotency_key": "citadel-7-in_1-retry-2"}),
            Some("citadel-7-in_1-retry-2"),
            Trigger::Citadel,
        ),
        (
            json!({"id": "req_2", "idempotency_key": "8d1e6c0a-hosted-page"}),
            Some("8d1e6c0a-hosted-page"),
            Trigger::Manual,
        ),
        (
            json!({"id": "req_3", "idempotency_key": null}),
            None,
            Trigger::Manual,
        ),
        (json!("req_old"), None, Trigger::Manual),
    ];
    for (request, key, trigger) in cases {
        let mut event = connect_event("invoice.payment_failed", current_invoice(), "2026-09-30");
        event["request"] = request.clone();

        let parsed = parse(&event).unwrap();

        assert_eq!(parsed.request_idempotency_key.as_deref(), key, "{request}");
        assert_eq!(parsed.trigger(), trigger, "{request}");
    }
}

#[test]
fn charge_failed_with_invoice_gives_decline() {
    let event = connect_event("charge.failed", failed_charge(), "2020-08-27");

    let EventKind::PaymentDeclined {
        invoice_id,
        decline,
    } = parse_kind(&event)
    else {
        panic!("expected PaymentDeclined");
    };
    assert_eq!(invoice_id.as_str(), INVOICE);
    assert_eq!(decline.code.as_deref(), Some("card_declined"));
    assert_eq!(decline.decline_code.as_deref(), Some("insufficient_funds"));
    assert_eq!(decline.advice_code.as_deref(), Some("try_again_later"));
}

#[test]
fn charge_failed_reads_network_advice_code() {
    let mut charge = failed_charge();
    charge["outcome"]["advice_code"] = Value::Null;
    charge["outcome"]["network_advice_code"] = "03".into();
    let event = connect_event("charge.failed", charge, "2020-08-27");

    let EventKind::PaymentDeclined { decline, .. } = parse_kind(&event) else {
        panic!("expected PaymentDeclined");
    };
    assert_eq!(decline.network_advice_code.as_deref(), Some("03"));
    assert_eq!(decline.advice_code, None);
}

#[test]
fn charge_failed_with_expanded_invoice() {
    let mut charge = failed_charge();
    charge["invoice"] = old_invoice();
    let event = connect_event("charge.failed", charge, "2020-08-27");

    let EventKind::PaymentDeclined { invoice_id, .. } = parse_kind(&event) else {
        panic!("expected PaymentDeclined");
    };
    assert_eq!(invoice_id.as_str(), INVOICE);
}

#[test]
fn charge_failed_without_invoice_is_unhandled() {
    let mut charge = failed_charge();
    charge.as_object_mut().unwrap().remove("invoice");
    let event = connect_event("charge.failed", charge, "2026-09-30");

    assert_eq!(parse_kind(&event), EventKind::Unhandled);
}

#[test]
fn payment_intent_failed_with_invoice_gives_decline() {
    let event = connect_event(
        "payment_intent.payment_failed",
        failed_payment_intent(),
        "2022-11-15",
    );

    let EventKind::PaymentDeclined {
        invoice_id,
        decline,
    } = parse_kind(&event)
    else {
        panic!("expected PaymentDeclined");
    };
    assert_eq!(invoice_id.as_str(), INVOICE);
    assert_eq!(decline.decline_code.as_deref(), Some("stolen_card"));
    assert_eq!(decline.advice_code.as_deref(), Some("do_not_try_again"));
}

#[test]
fn payment_intent_failed_without_invoice_is_unhandled() {
    let mut intent = failed_payment_intent();
    intent["invoice"] = Value::Null;
    let event = connect_event("payment_intent.payment_failed", intent, "2026-09-30");

    assert_eq!(parse_kind(&event), EventKind::Unhandled);
}

#[test]
fn declined_payment_without_reason_has_empty_decline() {
    let mut intent = fixture("payment_intent");
    intent["invoice"] = INVOICE.into();
    let event = connect_event("payment_intent.payment_failed", intent, "2022-11-15");

    let EventKind::PaymentDeclined { decline, .. } = parse_kind(&event) else {
        panic!("expected PaymentDeclined");
    };
    assert_eq!(decline, Decline::default());
}

#[test]
fn unknown_event_type_is_unhandled() {
    // The sample event as published: a plan.created event.
    let event = fixture("event");

    let parsed = parse(&event).unwrap();

    assert_eq!(parsed.event_type, "plan.created");
    assert_eq!(parsed.kind, EventKind::Unhandled);
}

#[test]
fn envelope_fields_are_read() {
    let mut event = connect_event("invoice.payment_failed", current_invoice(), "2026-09-30");
    event["livemode"] = true.into();
    event["request"] = json!({"id": "req_123", "idempotency_key": "key"});

    let parsed = parse(&event).unwrap();

    assert_eq!(parsed.id.as_str(), "evt_1Pgc76B7WZ01zgkWwyRHS12y");
    assert_eq!(parsed.account.unwrap().as_str(), ACCOUNT);
    assert_eq!(parsed.created.timestamp(), 1_234_567_890);
    assert_eq!(parsed.api_version.as_deref(), Some("2026-09-30"));
    assert!(parsed.livemode);
    assert_eq!(parsed.request_id.as_deref(), Some("req_123"));
    assert_eq!(parsed.payload, event);
}

#[test]
fn platform_event_has_no_account() {
    let event = fixtures::event("invoice.payment_failed", current_invoice());

    let parsed = parse(&event).unwrap();

    assert_eq!(parsed.account, None);
    assert_eq!(parsed.api_version, None);
    assert!(!parsed.livemode);
}

#[test]
fn old_connect_event_names_account_user_id() {
    let mut event = fixtures::event("invoice.payment_failed", old_invoice());
    event["api_version"] = "2017-02-14".into();
    event["user_id"] = ACCOUNT.into();

    let parsed = parse(&event).unwrap();

    assert_eq!(parsed.account.unwrap().as_str(), ACCOUNT);
}

#[test]
fn request_id_from_each_shape() {
    let cases = [
        (
            json!({"id": "req_1", "idempotency_key": null}),
            Some("req_1"),
        ),
        (json!({"id": null, "idempotency_key": null}), None),
        (json!("req_old"), Some("req_old")),
        (Value::Null, None),
        (json!(42), None),
    ];
    for (request, expected) in cases {
        let mut event = fixtures::event("invoice.paid", current_invoice());
        event["request"] = request.clone();

        let parsed = parse(&event).unwrap();

        assert_eq!(parsed.request_id.as_deref(), expected, "{request}");
    }
}

#[test]
fn unused_fields_changed_or_unknown_still_parse() {
    let mut invoice = current_invoice();
    invoice["lines"] = "no longer a list".into();
    invoice["automatic_tax"] = 5.into();
    invoice["brand_new_field"] = json!({"nested": [1, 2, 3]});
    invoice["customer"] = 12.into();
    invoice["status"] = json!(["open"]);
    invoice["attempt_count"] = "two".into();
    let mut event = connect_event("invoice.payment_failed", invoice, "2031-01-01");
    event["pending_webhooks"] = "many".into();
    event["livemode"] = "yes".into();
    event["api_version"] = 7.into();

    let snapshot = payment_failed_snapshot(&event);

    assert_eq!(snapshot.id.as_str(), INVOICE);
    assert_eq!(snapshot.customer_id, None);
    assert_eq!(snapshot.status, None);
    assert_eq!(snapshot.attempt_count, 0);
    assert_eq!(snapshot.amount_due, eur(2500));
}

#[test]
fn invalid_optional_ids_are_skipped() {
    // The sample invoice's parent names the placeholder "subscription".
    let mut invoice = fixture("invoice");
    invoice["customer"] = "acct_wrong_field".into();
    let event = connect_event("invoice.payment_failed", invoice, "2026-09-30");

    let snapshot = payment_failed_snapshot(&event);

    assert_eq!(snapshot.customer_id, None);
    assert_eq!(snapshot.subscription_id, None);
}

#[test]
fn attempt_count_beyond_u32_saturates() {
    let mut invoice = current_invoice();
    invoice["attempt_count"] = (u64::from(u32::MAX) + 5).into();
    let event = connect_event("invoice.payment_failed", invoice, "2026-09-30");

    assert_eq!(payment_failed_snapshot(&event).attempt_count, u32::MAX);
}

#[test]
fn missing_amount_paid_counts_as_zero() {
    let mut invoice = current_invoice();
    invoice.as_object_mut().unwrap().remove("amount_paid");
    let event = connect_event("invoice.payment_failed", invoice, "2017-08-15");

    assert_eq!(payment_failed_snapshot(&event).amount_paid, eur(0));
}

#[test]
fn not_json_is_rejected() {
    let err = parse_event(b"{\"id\": ").unwrap_err();
    assert!(matches!(err, ParseError::NotJson { .. }), "{err}");

    let err = parse_event(&[0xff, 0xfe, 0x00]).unwrap_err();
    assert!(matches!(err, ParseError::NotJson { .. }), "{err}");
}

#[test]
fn non_object_json_is_rejected() {
    let cases = [
        ("[1, 2]", "an array"),
        ("42", "a number"),
        ("\"evt_1\"", "a string"),
        ("null", "null"),
    ];
    for (body, found) in cases {
        let err = parse_event(body.as_bytes()).unwrap_err();
        assert!(
            matches!(err, ParseError::NotAnObject { found: f } if f == found),
            "{body}: {err}"
        );
    }
}

#[test]
fn invoice_body_is_not_an_event() {
    let err = parse(&current_invoice()).unwrap_err();

    assert!(matches!(err, ParseError::NotAnEvent { .. }), "{err}");
    assert!(err.to_string().contains("\"invoice\""), "{err}");
}

#[test]
fn event_without_object_field_is_accepted() {
    let mut event = fixtures::event("invoice.paid", current_invoice());
    event.as_object_mut().unwrap().remove("object");

    assert!(parse(&event).is_ok());
}

/// Applies `change` to a valid payment-failed event and returns the error.
fn error_after(change: impl FnOnce(&mut Value)) -> ParseError {
    let mut event = connect_event("invoice.payment_failed", current_invoice(), "2026-09-30");
    change(&mut event);
    parse(&event).unwrap_err()
}

/// A change applied to a valid event, to break it.
type Change = fn(&mut Value);

fn remove(value: &mut Value, key: &str) {
    value.as_object_mut().unwrap().remove(key);
}

#[test]
fn missing_envelope_fields_are_named() {
    let cases: [(&str, Change); 5] = [
        ("id", |e| remove(e, "id")),
        ("type", |e| remove(e, "type")),
        ("created", |e| e["created"] = Value::Null),
        ("data", |e| remove(e, "data")),
        ("data.object", |e| remove(&mut e["data"], "object")),
    ];
    for (field, change) in cases {
        let err = error_after(change);
        assert!(
            matches!(&err, ParseError::MissingField { field: f } if f == field),
            "{field}: {err}"
        );
        assert!(err.to_string().contains(field), "{err}");
    }
}

#[test]
fn wrong_envelope_types_are_named_with_value() {
    let cases: [(&str, Change, &str); 4] = [
        ("id", |e| e["id"] = 17.into(), "17"),
        (
            "created",
            |e| e["created"] = "yesterday".into(),
            "\"yesterday\"",
        ),
        ("created", |e| e["created"] = 1.5.into(), "1.5"),
        (
            "data.object",
            |e| e["data"]["object"] = "in_1".into(),
            "\"in_1\"",
        ),
    ];
    for (field, change, value) in cases {
        let err = error_after(change);
        let ParseError::WrongType {
            field: f, value: v, ..
        } = &err
        else {
            panic!("{field}: expected WrongType, got {err}");
        };
        assert_eq!(f, field);
        assert_eq!(v, value);
    }
}

#[test]
fn wrong_id_prefixes_are_named() {
    let cases: [(&str, Change); 3] = [
        ("id", |e| e["id"] = "in_123".into()),
        ("account", |e| e["account"] = "cus_123".into()),
        ("data.object.id", |e| {
            e["data"]["object"]["id"] = "ch_123".into()
        }),
    ];
    for (field, change) in cases {
        let err = error_after(change);
        assert!(
            matches!(&err, ParseError::InvalidId { field: f, .. } if f == field),
            "{field}: {err}"
        );
    }
}

#[test]
fn invoice_fields_the_engine_needs_are_checked() {
    let err = error_after(|e| remove(&mut e["data"]["object"], "amount_due"));
    assert!(
        matches!(&err, ParseError::MissingField { field } if field == "data.object.amount_due"),
        "{err}"
    );

    let err = error_after(|e| e["data"]["object"]["currency"] = "euro".into());
    assert!(matches!(err, ParseError::InvalidCurrency { .. }), "{err}");
    assert!(err.to_string().contains("euro"), "{err}");

    let err = error_after(|e| e["data"]["object"]["amount_paid"] = "0".into());
    assert!(matches!(err, ParseError::WrongType { .. }), "{err}");
}

#[test]
fn negative_and_huge_amounts_are_rejected() {
    for (field, value) in [
        ("amount_due", -500),
        ("amount_due", i64::MAX),
        ("amount_paid", -1),
    ] {
        let err = error_after(|e| e["data"]["object"][field] = value.into());

        let expected_field = format!("data.object.{field}");
        assert!(
            matches!(&err, ParseError::InvalidAmount { field: f, value: v } if *f == expected_field && *v == value),
            "{field}={value}: {err}"
        );
        assert!(err.to_string().contains(&value.to_string()), "{err}");
    }
}

#[test]
fn invalid_user_id_is_rejected() {
    let mut event = fixtures::event("invoice.payment_failed", old_invoice());
    event["user_id"] = "in_1Wrong".into();

    let err = parse(&event).unwrap_err();

    assert!(
        matches!(&err, ParseError::InvalidId { field, .. } if field == "user_id"),
        "{err}"
    );
    assert!(err.to_string().contains("in_1Wrong"), "{err}");
}

#[test]
fn out_of_range_created_is_rejected() {
    let err = error_after(|e| e["created"] = i64::MAX.into());

    assert!(
        matches!(
            err,
            ParseError::InvalidTimestamp {
                value: i64::MAX,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn invalid_invoice_reference_on_charge_is_rejected() {
    let mut charge = failed_charge();
    charge["invoice"] = json!({"object": "invoice"});
    let event = connect_event("charge.failed", charge, "2020-08-27");

    let err = parse(&event).unwrap_err();

    assert!(
        matches!(&err, ParseError::WrongType { field, .. } if field == "data.object.invoice"),
        "{err}"
    );
}

#[test]
fn long_values_are_shortened_in_errors() {
    let err = error_after(|e| e["created"] = "x".repeat(1_000).into());

    let ParseError::WrongType { value, .. } = err else {
        panic!("expected WrongType");
    };
    assert!(value.chars().count() <= VALUE_EXCERPT_CHARS + 1, "{value}");
}

/// Arbitrary JSON, with the keys the parser reads among the object keys so
/// that nested shapes reach its code paths.
fn arbitrary_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        "(evt|in|acct|sub|cus)_[a-z0-9]{0,4}".prop_map(Value::from),
        ".{0,12}".prop_map(Value::from),
    ];
    let key = prop_oneof![
        prop::sample::select(vec![
            "id",
            "object",
            "type",
            "created",
            "data",
            "account",
            "request",
            "invoice",
            "customer",
            "subscription",
            "parent",
            "subscription_details",
            "currency",
            "amount_due",
            "amount_paid",
            "charge",
            "payment_intent",
            "payments",
            "payment",
            "last_payment_error",
            "outcome",
        ])
        .prop_map(str::to_owned),
        "[a-z_]{0,8}",
    ];
    leaf.prop_recursive(5, 96, 8, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(key.clone(), inner, 0..8)
                .prop_map(|fields| Value::Object(fields.into_iter().collect())),
        ]
    })
}

/// Event types the parser handles, each with a valid event.
fn valid_event() -> impl Strategy<Value = Value> {
    prop::sample::select(vec![
        connect_event("invoice.payment_failed", current_invoice(), "2026-09-30"),
        connect_event("invoice.payment_failed", old_invoice(), "2020-08-27"),
        connect_event("invoice.paid", current_invoice(), "2026-09-30"),
        connect_event("charge.failed", failed_charge(), "2020-08-27"),
        connect_event(
            "payment_intent.payment_failed",
            failed_payment_intent(),
            "2022-11-15",
        ),
        connect_event(
            "customer.subscription.deleted",
            fixture("subscription"),
            "2026-09-30",
        ),
    ])
}

/// The data.object fields the parser reads for some event type.
const READ_FIELDS: &[&str] = &[
    "id",
    "currency",
    "amount_due",
    "amount_paid",
    "customer",
    "subscription",
    "parent",
    "attempt_count",
    "status",
    "charge",
    "payment_intent",
    "payments",
    "invoice",
    "failure_code",
    "failure_message",
    "outcome",
    "last_payment_error",
];

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = parse_event(&bytes);
    }

    #[test]
    fn arbitrary_json_never_panics(value in arbitrary_json()) {
        let _ = parse(&value);
    }

    #[test]
    fn arbitrary_data_object_never_panics(
        event in valid_event(),
        object in arbitrary_json(),
    ) {
        let mut event = event;
        event["data"]["object"] = object;
        let _ = parse(&event);
    }

    #[test]
    fn any_value_in_a_read_field_never_panics(
        event in valid_event(),
        field in prop::sample::select(READ_FIELDS),
        value in arbitrary_json(),
    ) {
        let mut event = event;
        event["data"]["object"][field] = value;
        let _ = parse(&event);
    }

    #[test]
    fn changing_an_unread_field_keeps_the_kind(
        event in valid_event(),
        field in "[a-z_]{1,12}",
        value in arbitrary_json(),
    ) {
        prop_assume!(!READ_FIELDS.contains(&field.as_str()));
        let expected = parse(&event).unwrap();
        let mut event = event;
        event["data"]["object"][field.as_str()] = value;

        let parsed = parse(&event);

        prop_assert!(parsed.is_ok(), "{:?}", parsed.err());
        prop_assert_eq!(parsed.unwrap().kind, expected.kind);
    }
}

#[test]
fn charge_failed_reads_radar_and_fingerprint() {
    let mut charge = failed_charge();
    charge["outcome"]["type"] = "blocked".into();
    charge["outcome"]["risk_level"] = "highest".into();
    charge["payment_method_details"]["card"]["fingerprint"] = "fp_charge_card".into();
    let event = connect_event("charge.failed", charge, "2020-08-27");

    let EventKind::PaymentDeclined { decline, .. } = parse_kind(&event) else {
        panic!("expected PaymentDeclined");
    };
    assert_eq!(decline.outcome_type.as_deref(), Some("blocked"));
    assert_eq!(decline.risk_level.as_deref(), Some("highest"));
    let fingerprint = decline.card_fingerprint.expect("fingerprint read");
    assert_eq!(fingerprint.expose(), "fp_charge_card");
}

#[test]
fn event_debug_leaves_out_card_details() {
    let mut charge = failed_charge();
    charge["payment_method_details"]["card"]["fingerprint"] = "fp_secret_card".into();
    charge["payment_method_details"]["card"]["last4"] = "4242".into();
    let event = parse(&connect_event("charge.failed", charge, "2020-08-27")).unwrap();

    let debug = format!("{event:?}");

    assert!(!debug.contains("fp_secret_card"), "{debug}");
    assert!(!debug.contains("4242"), "{debug}");
    assert!(debug.contains("charge.failed"), "{debug}");
}

#[test]
fn payment_intent_reads_card_fingerprint() {
    let mut intent = failed_payment_intent();
    intent["last_payment_error"]["payment_method"] =
        json!({"card": {"fingerprint": "fp_intent_card"}});
    intent["last_payment_error"]["network_advice_code"] = "21".into();
    let event = connect_event("payment_intent.payment_failed", intent, "2020-08-27");

    let EventKind::PaymentDeclined { decline, .. } = parse_kind(&event) else {
        panic!("expected PaymentDeclined");
    };
    assert_eq!(decline.network_advice_code.as_deref(), Some("21"));
    let fingerprint = decline.card_fingerprint.expect("fingerprint read");
    assert_eq!(fingerprint.expose(), "fp_intent_card");
}
