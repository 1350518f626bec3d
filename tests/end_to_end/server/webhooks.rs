//! The Stripe webhook route: applied once after commit, also when the same
//! event is posted twice at once, and nothing written on a bad signature.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::Value;

use citadel::core::Secret;
use citadel::core::store::Store;
use citadel::stripe::webhook::sign;

use super::helpers::{Api, OPERATOR, WEBHOOK_SECRET, error_code};

/// Reads a failed-invoice event of the Alpha account, built from Stripe's
/// fixtures.
fn soft_decline_event() -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples/data/events/01-soft-decline-payment-failed.json");
    std::fs::read(path).unwrap()
}

fn webhook_request(body: &[u8], secret: &str) -> Request<Body> {
    let header = sign(body, &Secret::new(secret), chrono::Utc::now().timestamp());
    Request::post("/api/webhooks/stripe")
        .header("stripe-signature", header)
        .header("content-type", "application/json")
        .body(Body::from(body.to_vec()))
        .unwrap()
}

async fn processed_events(api: &Api) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM processed_events")
        .fetch_one(api.store().pool())
        .await
        .unwrap()
}

#[tokio::test]
async fn signed_webhook_is_applied_once() {
    let api = Api::start().await;
    api.merchant("acct_1CitadelDemoAlpha").await;
    let body = soft_decline_event();

    let (status, answer) = api.send(webhook_request(&body, WEBHOOK_SECRET)).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["outcome"], "applied");
    // The 200 came after the commit: the recovery and its task are visible.
    assert_eq!(api.store().list_recoveries(None).await.unwrap().len(), 1);
    let (_, tasks) = api.get("/api/tasks", OPERATOR).await;
    let retries = tasks["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|task| task["kind"] == "retry_payment")
        .count();
    assert_eq!(retries, 1, "{tasks}");

    let (status, answer) = api.send(webhook_request(&body, WEBHOOK_SECRET)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(answer["outcome"], "duplicate");
    assert_eq!(processed_events(&api).await, 1);
}

#[tokio::test]
async fn concurrent_deliveries_apply_once() {
    let api = Api::start().await;
    api.merchant("acct_1CitadelDemoAlpha").await;
    let body = soft_decline_event();

    let (first, second) = tokio::join!(
        api.send(webhook_request(&body, WEBHOOK_SECRET)),
        api.send(webhook_request(&body, WEBHOOK_SECRET)),
    );

    assert_eq!(first.0, StatusCode::OK, "{}", first.1);
    assert_eq!(second.0, StatusCode::OK, "{}", second.1);
    let mut outcomes = [first.1["outcome"].clone(), second.1["outcome"].clone()];
    outcomes.sort_by_key(Value::to_string);
    assert_eq!(outcomes, [Value::from("applied"), Value::from("duplicate")]);
    assert_eq!(processed_events(&api).await, 1);
    assert_eq!(api.store().list_recoveries(None).await.unwrap().len(), 1);
    let (_, tasks) = api.get("/api/tasks", OPERATOR).await;
    let retries = tasks["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|task| task["kind"] == "retry_payment")
        .count();
    assert_eq!(retries, 1, "{tasks}");
}

#[tokio::test]
async fn bad_signature_writes_nothing() {
    let api = Api::start().await;
    api.merchant("acct_1CitadelDemoAlpha").await;
    let body = soft_decline_event();

    let (status, answer) = api.send(webhook_request(&body, "whsec_wrong_secret")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert_eq!(error_code(&answer), "invalid_request");

    let unsigned = Request::post("/api/webhooks/stripe")
        .body(Body::from(body.clone()))
        .unwrap();
    let (status, _) = api.send(unsigned).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    let mut tampered = body.clone();
    let header = sign(
        &body,
        &Secret::new(WEBHOOK_SECRET),
        chrono::Utc::now().timestamp(),
    );
    tampered.extend_from_slice(b" ");
    let request = Request::post("/api/webhooks/stripe")
        .header("stripe-signature", header)
        .body(Body::from(tampered))
        .unwrap();
    let (status, _) = api.send(request).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    assert_eq!(processed_events(&api).await, 0);
    assert!(api.store().list_recoveries(None).await.unwrap().is_empty());
    let (_, activity) = api.get("/api/activity", OPERATOR).await;
    assert!(activity["items"].as_array().unwrap().is_empty());
}

#[tokio::test]
async fn webhook_without_secret_is_unavailable() {
    let api = Api::start_with(|config| config.webhook_secrets([])).await;
    let body = soft_decline_event();

    let (status, answer) = api.send(webhook_request(&body, WEBHOOK_SECRET)).await;

    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{answer}");
    assert_eq!(processed_events(&api).await, 0);
}

#[tokio::test]
async fn unknown_account_webhook_is_redelivered() {
    let api = Api::start().await;
    let body = soft_decline_event();

    let (status, answer) = api.send(webhook_request(&body, WEBHOOK_SECRET)).await;

    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");
    assert_eq!(error_code(&answer), "unknown_account");
    assert_eq!(processed_events(&api).await, 0);

    // Stripe's redelivery after the merchant registers is applied.
    api.merchant("acct_1CitadelDemoAlpha").await;
    let (status, answer) = api.send(webhook_request(&body, WEBHOOK_SECRET)).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["outcome"], "applied");
    assert_eq!(processed_events(&api).await, 1);
}
