//! Unit tests of the response mapping and the builder. The tests that send
//! real HTTP to the Stripe stand-in are in `tests/stand_in.rs`.

use citadel_core::ids::InvoiceId;
use citadel_core::payment::IdempotencyKey;

use super::*;

/// Builds an error object as Stripe sends it, with the fields the mapping
/// reads.
fn api_error(
    type_: &str,
    code: Option<&str>,
    decline_code: Option<&str>,
    message: &str,
) -> ApiErrors {
    ApiErrors {
        advice_code: None,
        charge: None,
        code: code.map(|code| code.parse().unwrap()),
        decline_code: decline_code.map(str::to_owned),
        doc_url: None,
        message: Some(message.to_owned()),
        network_advice_code: None,
        network_decline_code: None,
        param: None,
        payment_intent: None,
        payment_method: None,
        payment_method_type: None,
        request_log_url: None,
        setup_intent: None,
        source: None,
        type_: type_.parse().unwrap(),
    }
}

fn card_error(decline_code: &str, message: &str) -> ApiErrors {
    api_error(
        "card_error",
        Some("card_declined"),
        Some(decline_code),
        message,
    )
}

#[test]
fn card_decline_maps_to_declined() {
    let mut error = card_error("insufficient_funds", "Your card has insufficient funds.");
    error.advice_code = Some("try_again_later".to_owned());
    error.charge = Some("ch_1PgafuB7WZ01zgkWXYmPNZs8".to_owned());

    let outcome = api_error_outcome(&error, 402);

    let expected = Decline {
        code: Some("card_declined".to_owned()),
        decline_code: Some("insufficient_funds".to_owned()),
        advice_code: Some("try_again_later".to_owned()),
        message: Some("Your card has insufficient funds.".to_owned()),
        ..Decline::default()
    };
    assert_eq!(outcome, PaymentOutcome::Declined(expected));
}

#[test]
fn network_advice_code_is_kept_apart() {
    let mut error = card_error("do_not_honor", "Your card was declined.");
    error.network_advice_code = Some("03".to_owned());

    let PaymentOutcome::Declined(decline) = api_error_outcome(&error, 402) else {
        panic!("expected Declined");
    };
    assert_eq!(decline.network_advice_code.as_deref(), Some("03"));
    assert_eq!(decline.advice_code, None);
}

#[test]
fn card_error_without_decline_code_is_declined() {
    let error = api_error(
        "card_error",
        Some("expired_card"),
        None,
        "Your card has expired.",
    );

    let PaymentOutcome::Declined(decline) = api_error_outcome(&error, 402) else {
        panic!("expected Declined");
    };
    assert_eq!(decline.code.as_deref(), Some("expired_card"));
    assert_eq!(decline.decline_code, None);
}

#[test]
fn customer_action_answers_map_to_action_required() {
    let cases = [
        (
            api_error(
                "card_error",
                Some("authentication_required"),
                Some("authentication_required"),
                "Your card was declined. This transaction requires authentication.",
            ),
            402,
        ),
        (
            api_error(
                "card_error",
                Some("card_declined"),
                Some("authentication_required"),
                "This transaction requires authentication.",
            ),
            402,
        ),
        (
            api_error(
                "invalid_request_error",
                Some("invoice_payment_intent_requires_action"),
                None,
                "The payment requires an action from the customer.",
            ),
            400,
        ),
    ];
    for (error, status) in cases {
        let outcome = api_error_outcome(&error, status);
        assert!(
            matches!(outcome, PaymentOutcome::ActionRequired { .. }),
            "{:?}: {outcome:?}",
            error.code
        );
    }
}

#[test]
fn closed_invoice_answers_map_to_not_payable() {
    let messages = [
        "Invoice is already paid",
        "You cannot pay a void invoice.",
        "This invoice is uncollectible and cannot be paid.",
        "This invoice has been deleted.",
    ];
    for message in messages {
        let error = api_error("invalid_request_error", None, None, message);

        let outcome = api_error_outcome(&error, 400);

        assert!(
            matches!(&outcome, PaymentOutcome::NotPayable { message: m } if m.contains(message)),
            "{message}: {outcome:?}"
        );
    }
}

#[test]
fn missing_invoice_maps_to_not_payable() {
    let error = api_error(
        "invalid_request_error",
        Some("resource_missing"),
        None,
        "No such invoice: 'in_404'",
    );

    let outcome = api_error_outcome(&error, 404);

    assert!(
        matches!(outcome, PaymentOutcome::NotPayable { .. }),
        "{outcome:?}"
    );
}

#[test]
fn other_invalid_request_maps_to_rejected() {
    let error = api_error(
        "invalid_request_error",
        Some("parameter_unknown"),
        None,
        "Received unknown parameter: foo",
    );

    let outcome = api_error_outcome(&error, 400);

    let PaymentOutcome::Rejected { status, message } = outcome else {
        panic!("expected Rejected, got {outcome:?}");
    };
    assert_eq!(status, 400);
    assert!(
        message.contains("Received unknown parameter: foo"),
        "{message}"
    );
    assert!(message.contains("parameter_unknown"), "{message}");
}

#[test]
fn reused_key_with_other_parameters_is_rejected() {
    let error = api_error(
        "idempotency_error",
        None,
        None,
        "Keys for idempotent requests can only be used with the same parameters they were \
         first used with.",
    );

    let outcome = api_error_outcome(&error, 400);

    assert!(
        matches!(outcome, PaymentOutcome::Rejected { status: 400, .. }),
        "{outcome:?}"
    );
}

#[test]
fn authentication_and_permission_errors_are_rejected() {
    for status in [401, 403] {
        let error = api_error(
            "invalid_request_error",
            None,
            None,
            "Invalid API Key provided",
        );

        let outcome = api_error_outcome(&error, status);

        assert!(
            matches!(outcome, PaymentOutcome::Rejected { status: s, .. } if s == status),
            "{status}: {outcome:?}"
        );
    }
}

#[test]
fn rate_limit_maps_to_rate_limited() {
    let error = api_error(
        "invalid_request_error",
        Some("rate_limit"),
        None,
        "Request rate limit exceeded.",
    );

    let outcome = api_error_outcome(&error, 429);

    assert_eq!(outcome, PaymentOutcome::RateLimited { retry_after: None });
}

#[test]
fn server_errors_and_key_in_flight_are_transient() {
    let server = api_error("api_error", None, None, "An unknown error occurred");
    let in_flight = api_error(
        "invalid_request_error",
        Some("idempotency_key_in_use"),
        None,
        "There is currently another in-progress request using this Idempotent Key.",
    );

    for (error, status) in [(&server, 500), (&server, 503), (&in_flight, 409)] {
        let outcome = api_error_outcome(error, status);
        assert!(
            matches!(outcome, PaymentOutcome::Transient { .. }),
            "{status}: {outcome:?}"
        );
    }
}

#[test]
fn client_failures_are_transient() {
    let timeout = Duration::from_secs(30);
    let cases = [
        (StripeError::Timeout, "timed out after 30 s"),
        (
            StripeError::ClientError("connection closed before message completed".to_owned()),
            "connection closed",
        ),
        (
            StripeError::JSONDeserialize("error deserializing request data".to_owned()),
            "unreadable response",
        ),
    ];
    for (error, expected) in cases {
        let outcome = error_outcome(error, timeout);
        assert!(
            matches!(&outcome, PaymentOutcome::Transient { message } if message.contains(expected)),
            "{expected}: {outcome:?}"
        );
    }
}

#[test]
fn builder_defaults() {
    let gateway = StripeGateway::builder(Secret::new("sk_test_123"))
        .build()
        .unwrap();

    assert_eq!(gateway.base_url(), "https://api.stripe.com/");
    assert_eq!(gateway.timeout(), Duration::from_secs(30));
}

#[test]
fn builder_appends_slash_to_base_url() {
    let gateway = StripeGateway::builder(Secret::new("sk_test_123"))
        .base_url("http://127.0.0.1:4010")
        .build()
        .unwrap();

    assert_eq!(gateway.base_url(), "http://127.0.0.1:4010/");
}

#[test]
fn builder_rejects_bad_keys() {
    let cases = [
        ("", GatewayConfigError::EmptySecretKey),
        ("pk_test_123", GatewayConfigError::InvalidSecretKey),
        ("sk_test_1\n23", GatewayConfigError::InvalidSecretKey),
        ("sk_test_1 23", GatewayConfigError::InvalidSecretKey),
        ("sk_test_1\t23", GatewayConfigError::InvalidSecretKey),
    ];
    for (key, expected) in cases {
        let err = StripeGateway::builder(Secret::new(key))
            .build()
            .unwrap_err();
        assert_eq!(err, expected, "{key:?}");
        assert!(!err.to_string().contains("test_1"), "{err}");
    }
}

#[test]
fn builder_rejects_bad_base_urls() {
    for url in [
        "api.stripe.com",
        "ftp://api.stripe.com/",
        "http://exa mple.com/",
    ] {
        let err = StripeGateway::builder(Secret::new("sk_test_123"))
            .base_url(url)
            .build()
            .unwrap_err();
        assert!(
            matches!(&err, GatewayConfigError::InvalidBaseUrl { url: u, .. } if u.starts_with(url.trim_end_matches('/'))),
            "{url}: {err}"
        );
    }
}

#[test]
fn builder_rejects_zero_timeout() {
    let err = StripeGateway::builder(Secret::new("sk_test_123"))
        .timeout(Duration::ZERO)
        .build()
        .unwrap_err();

    assert_eq!(err, GatewayConfigError::ZeroTimeout);
}

#[test]
fn debug_hides_the_key() {
    let builder = StripeGateway::builder(Secret::new("sk_test_very_secret"));
    let gateway = builder.clone().build().unwrap();

    for debug in [format!("{builder:?}"), format!("{gateway:?}")] {
        assert!(!debug.contains("very_secret"), "{debug}");
    }
}

#[tokio::test]
async fn over_long_idempotency_key_is_not_sent() {
    // Port 1 on 127.0.0.1 has no listener: a request sent there would come
    // back Transient, not Rejected.
    let gateway = StripeGateway::builder(Secret::new("sk_test_123"))
        .base_url("http://127.0.0.1:1/")
        .build()
        .unwrap();
    let request = PayInvoice {
        account: None,
        invoice: InvoiceId::parse("in_1Pgc6tB7WZ01zgkWu9fdqL6I").unwrap(),
        idempotency_key: IdempotencyKey::new("k".repeat(256)),
    };

    let outcome = gateway.pay_invoice(&request).await;

    assert!(
        matches!(&outcome, PaymentOutcome::Rejected { status: 400, message } if message.contains("not sent")),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn unreachable_stripe_is_transient() {
    let gateway = StripeGateway::builder(Secret::new("sk_test_123"))
        .base_url("http://127.0.0.1:1/")
        .build()
        .unwrap();
    let request = PayInvoice {
        account: None,
        invoice: InvoiceId::parse("in_1Pgc6tB7WZ01zgkWu9fdqL6I").unwrap(),
        idempotency_key: IdempotencyKey::new("citadel-1-in_1-retry-1"),
    };

    let outcome = gateway.pay_invoice(&request).await;

    assert!(
        matches!(outcome, PaymentOutcome::Transient { .. }),
        "{outcome:?}"
    );
}
