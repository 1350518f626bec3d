//! The gateway against the Stripe stand-in: real HTTP on 127.0.0.1 through
//! async-stripe, each case scripted on the stand-in.

use citadel_core::ids::{AccountId, InvoiceId};
use citadel_core::money::{Currency, Money};
use citadel_core::payment::{IdempotencyKey, PayInvoice, PaymentGateway, PaymentOutcome};
use citadel_stripe::gateway::StripeGateway;
use citadel_stripe::stand_in::{ResponseKind, Scripted, StandIn};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const INVOICE: &str = "in_1Pgc6tB7WZ01zgkWu9fdqL6I";
const ACCOUNT: &str = "acct_1Pgc6tB7WZ01zgkW";

struct Setup {
    stand_in: StandIn,
    gateway: StripeGateway,
    invoice: InvoiceId,
}

async fn setup(script: impl IntoIterator<Item = Scripted>) -> Setup {
    let stand_in = StandIn::start().await.unwrap();
    let gateway = stand_in.gateway().unwrap();
    let invoice = InvoiceId::parse(INVOICE).unwrap();
    stand_in.script(&invoice, script);
    Setup {
        stand_in,
        gateway,
        invoice,
    }
}

impl Setup {
    async fn pay(&self, key: &str) -> PaymentOutcome {
        self.pay_on(Some(ACCOUNT), key).await
    }

    async fn pay_on(&self, account: Option<&str>, key: &str) -> PaymentOutcome {
        let request = PayInvoice {
            account: account.map(|account| AccountId::parse(account).unwrap()),
            invoice: self.invoice.clone(),
            idempotency_key: IdempotencyKey::new(key),
        };
        self.gateway.pay_invoice(&request).await
    }

    fn charges(&self) -> usize {
        self.stand_in.charges(&self.invoice)
    }
}

fn money(minor_units: i64, currency: &str) -> Money {
    Money::new(minor_units, Currency::parse(currency).unwrap())
}

fn decline_of(outcome: PaymentOutcome) -> citadel_core::payment::Decline {
    match outcome {
        PaymentOutcome::Declined(decline) => decline,
        other => panic!("expected Declined, got {other:?}"),
    }
}

#[tokio::test]
async fn pay_returns_paid_with_fixture_amount() {
    let setup = setup([Scripted::Pay]).await;

    let outcome = setup.pay("citadel-1-retry-1").await;

    assert_eq!(
        outcome,
        PaymentOutcome::Paid {
            amount_paid: money(1000, "usd")
        }
    );
    assert_eq!(setup.charges(), 1);
}

#[tokio::test]
async fn pay_returns_amount_set_on_invoice() {
    let setup = setup([]).await;
    let eur = Currency::parse("eur").unwrap();
    setup.stand_in.set_invoice(&setup.invoice, 2500, eur);

    let outcome = setup.pay("citadel-1-retry-1").await;

    assert_eq!(
        outcome,
        PaymentOutcome::Paid {
            amount_paid: money(2500, "eur")
        }
    );
}

#[tokio::test]
async fn insufficient_funds_is_soft_decline() {
    let setup = setup([Scripted::insufficient_funds()]).await;

    let decline = decline_of(setup.pay("citadel-1-retry-1").await);

    assert_eq!(decline.code.as_deref(), Some("card_declined"));
    assert_eq!(decline.decline_code.as_deref(), Some("insufficient_funds"));
    assert_eq!(
        decline.message.as_deref(),
        Some("Your card has insufficient funds.")
    );
    assert_eq!(setup.charges(), 0);
}

#[tokio::test]
async fn stolen_card_is_declined() {
    let setup = setup([Scripted::stolen_card()]).await;

    let decline = decline_of(setup.pay("citadel-1-retry-1").await);

    assert_eq!(decline.decline_code.as_deref(), Some("stolen_card"));
    assert_eq!(setup.charges(), 0);
}

#[tokio::test]
async fn expired_card_is_declined_by_code() {
    let setup = setup([Scripted::expired_card()]).await;

    let decline = decline_of(setup.pay("citadel-1-retry-1").await);

    assert_eq!(decline.code.as_deref(), Some("expired_card"));
    assert_eq!(decline.decline_code, None);
}

#[tokio::test]
async fn authentication_required_needs_action() {
    let setup = setup([Scripted::authentication_required()]).await;

    let outcome = setup.pay("citadel-1-retry-1").await;

    assert!(
        matches!(outcome, PaymentOutcome::ActionRequired { .. }),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn server_error_is_transient() {
    let setup = setup([Scripted::ServerError]).await;

    let outcome = setup.pay("citadel-1-retry-1").await;

    assert!(
        matches!(&outcome, PaymentOutcome::Transient { message } if message.contains("api_error")),
        "{outcome:?}"
    );
    assert_eq!(setup.charges(), 0);
    assert_eq!(
        setup.stand_in.requests().len(),
        1,
        "the gateway never retries"
    );
}

#[tokio::test]
async fn retry_after_server_error_pays_once() {
    let setup = setup([Scripted::ServerError, Scripted::Pay]).await;

    let first = setup.pay("citadel-1-retry-1").await;
    let retry = setup.pay("citadel-1-retry-1").await;

    assert!(
        matches!(first, PaymentOutcome::Transient { .. }),
        "{first:?}"
    );
    assert!(matches!(retry, PaymentOutcome::Paid { .. }), "{retry:?}");
    assert_eq!(setup.charges(), 1);
}

#[tokio::test]
async fn stored_server_error_repeats_for_same_key() {
    let setup = setup([Scripted::StoredServerError, Scripted::Pay]).await;

    let first = setup.pay("citadel-1-retry-1").await;
    let retry = setup.pay("citadel-1-retry-1").await;

    assert!(
        matches!(first, PaymentOutcome::Transient { .. }),
        "{first:?}"
    );
    assert!(
        matches!(retry, PaymentOutcome::Transient { .. }),
        "{retry:?}"
    );
    assert_eq!(
        setup.stand_in.requests()[1].outcome,
        ResponseKind::Replayed { status: 500 }
    );
    assert_eq!(setup.charges(), 0);
}

#[tokio::test]
async fn rate_limit_is_rate_limited() {
    let setup = setup([Scripted::RateLimited]).await;

    let outcome = setup.pay("citadel-1-retry-1").await;

    assert_eq!(outcome, PaymentOutcome::RateLimited { retry_after: None });
    assert_eq!(
        setup.stand_in.requests().len(),
        1,
        "the gateway never retries"
    );
}

#[tokio::test]
async fn already_paid_is_not_payable() {
    let setup = setup([Scripted::AlreadyPaid]).await;

    let outcome = setup.pay("citadel-1-retry-1").await;

    assert!(
        matches!(&outcome, PaymentOutcome::NotPayable { message } if message.contains("already paid")),
        "{outcome:?}"
    );
    assert_eq!(setup.charges(), 0);
}

#[tokio::test]
async fn unsettled_payment_is_processing() {
    let setup = setup([Scripted::Processing]).await;

    let outcome = setup.pay("citadel-1-retry-1").await;

    assert!(
        matches!(&outcome, PaymentOutcome::Processing { message } if message.contains("open")),
        "{outcome:?}"
    );
    assert_eq!(setup.charges(), 0);
}

#[tokio::test]
async fn paid_invoice_is_not_payable_with_new_key() {
    let setup = setup([Scripted::Pay]).await;

    setup.pay("citadel-1-retry-1").await;
    let outcome = setup.pay("citadel-1-retry-2").await;

    assert!(
        matches!(outcome, PaymentOutcome::NotPayable { .. }),
        "{outcome:?}"
    );
    assert_eq!(setup.charges(), 1);
}

#[tokio::test]
async fn same_key_twice_charges_once() {
    let setup = setup([Scripted::Pay]).await;

    let first = setup.pay("citadel-1-retry-1").await;
    let second = setup.pay("citadel-1-retry-1").await;

    assert_eq!(first, second);
    assert!(matches!(first, PaymentOutcome::Paid { .. }), "{first:?}");
    assert_eq!(setup.charges(), 1);
    let outcomes: Vec<_> = setup
        .stand_in
        .requests()
        .into_iter()
        .map(|request| request.outcome)
        .collect();
    assert_eq!(
        outcomes,
        [ResponseKind::Paid, ResponseKind::Replayed { status: 200 }]
    );
}

#[tokio::test]
async fn dropped_connection_then_retry_pays_once() {
    let setup = setup([Scripted::ChargeThenDrop]).await;

    let dropped = setup.pay("citadel-1-retry-1").await;
    assert!(
        matches!(&dropped, PaymentOutcome::Transient { message } if message.contains("request to Stripe failed")),
        "{dropped:?}"
    );
    assert_eq!(setup.charges(), 1);

    let retry = setup.pay("citadel-1-retry-1").await;

    assert_eq!(
        retry,
        PaymentOutcome::Paid {
            amount_paid: money(1000, "usd")
        }
    );
    assert_eq!(setup.charges(), 1);
    let requests = setup.stand_in.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[0].outcome, ResponseKind::Dropped);
    assert_eq!(requests[0].status, None);
    assert_eq!(requests[1].outcome, ResponseKind::Replayed { status: 200 });
}

#[tokio::test]
async fn request_carries_account_and_key() {
    let setup = setup([Scripted::Pay]).await;

    setup.pay("citadel-7-in_1-retry-1").await;

    let requests = setup.stand_in.requests();
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    assert_eq!(request.method, "POST");
    assert_eq!(request.path, format!("/v1/invoices/{INVOICE}/pay"));
    assert_eq!(request.stripe_account.as_deref(), Some(ACCOUNT));
    assert_eq!(
        request.idempotency_key.as_deref(),
        Some("citadel-7-in_1-retry-1")
    );
    assert_eq!(request.status, Some(200));
}

#[tokio::test]
async fn platform_request_has_no_account() {
    let setup = setup([Scripted::Pay]).await;

    setup.pay_on(None, "citadel-1-retry-1").await;

    assert_eq!(setup.stand_in.requests()[0].stripe_account, None);
}

#[tokio::test]
async fn each_attempt_key_is_recorded() {
    let setup = setup([Scripted::insufficient_funds(), Scripted::Pay]).await;

    let first = setup.pay("citadel-1-retry-1").await;
    let second = setup.pay("citadel-1-retry-2").await;

    assert!(matches!(first, PaymentOutcome::Declined(_)), "{first:?}");
    assert!(matches!(second, PaymentOutcome::Paid { .. }), "{second:?}");
    let keys: Vec<_> = setup
        .stand_in
        .requests()
        .into_iter()
        .map(|request| request.idempotency_key)
        .collect();
    assert_eq!(
        keys,
        [
            Some("citadel-1-retry-1".to_owned()),
            Some("citadel-1-retry-2".to_owned())
        ]
    );
    assert_eq!(setup.charges(), 1);
}

#[tokio::test]
async fn key_is_scoped_to_account() {
    let setup = setup([Scripted::insufficient_funds()]).await;

    setup.pay_on(Some(ACCOUNT), "citadel-1-retry-1").await;
    setup
        .pay_on(Some("acct_1OtherMerchant"), "citadel-1-retry-1")
        .await;

    let outcomes: Vec<_> = setup
        .stand_in
        .requests()
        .into_iter()
        .map(|request| request.outcome)
        .collect();
    assert!(
        outcomes
            .iter()
            .all(|outcome| matches!(outcome, ResponseKind::Declined { .. })),
        "{outcomes:?}"
    );
}

#[tokio::test]
async fn stopped_stand_in_is_transient() {
    let setup = setup([Scripted::Pay]).await;
    let Setup {
        stand_in,
        gateway,
        invoice,
    } = setup;
    stand_in.shutdown().await;

    let request = PayInvoice {
        account: None,
        invoice,
        idempotency_key: IdempotencyKey::new("citadel-1-retry-1"),
    };
    let outcome = gateway.pay_invoice(&request).await;

    assert!(
        matches!(outcome, PaymentOutcome::Transient { .. }),
        "{outcome:?}"
    );
}

/// Sends one raw HTTP/1.1 request and returns the whole response text.
async fn raw_request(stand_in: &StandIn, request_head: &str) -> String {
    let address = stand_in
        .url()
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    let mut stream = TcpStream::connect(&address).await.unwrap();
    let request = format!(
        "{request_head}\r\nHost: {address}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();

    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    response
}

#[tokio::test]
async fn missing_api_key_gets_401() {
    let setup = setup([Scripted::Pay]).await;

    let response = raw_request(
        &setup.stand_in,
        &format!("POST /v1/invoices/{INVOICE}/pay HTTP/1.1"),
    )
    .await;

    assert!(response.starts_with("HTTP/1.1 401"), "{response}");
    assert!(response.contains("invalid_request_error"), "{response}");
    assert!(
        response.contains("You did not provide an API key"),
        "{response}"
    );
    assert_eq!(setup.charges(), 0);
}

#[tokio::test]
async fn replayed_response_is_marked() {
    let setup = setup([Scripted::Pay]).await;
    let head = format!(
        "POST /v1/invoices/{INVOICE}/pay HTTP/1.1\r\nAuthorization: Bearer sk_test_raw\r\n\
         Idempotency-Key: raw-1"
    );

    let first = raw_request(&setup.stand_in, &head).await;
    let second = raw_request(&setup.stand_in, &head).await;

    assert!(first.starts_with("HTTP/1.1 200"), "{first}");
    assert!(!first.contains("idempotent-replayed"), "{first}");
    assert!(second.starts_with("HTTP/1.1 200"), "{second}");
    assert!(second.contains("idempotent-replayed: true"), "{second}");
    assert_eq!(setup.charges(), 1);
}

#[tokio::test]
async fn unknown_route_gets_404() {
    let setup = setup([]).await;

    let response = raw_request(
        &setup.stand_in,
        "GET /v1/customers HTTP/1.1\r\nAuthorization: Bearer sk_test_raw",
    )
    .await;

    assert!(response.starts_with("HTTP/1.1 404"), "{response}");
    assert!(response.contains("Unrecognized request URL"), "{response}");
    assert_eq!(setup.stand_in.requests()[0].outcome, ResponseKind::NotFound);
}
