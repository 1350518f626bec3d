//! Scenario tests of stop conditions, event order and idempotency: events
//! built from Stripe's sample objects, signed and verified like webhooks, on
//! a real PostgreSQL with the Stripe stand-in responding to `/pay`.

use std::sync::Arc;
use std::time::Duration;

use citadel::core::event::Event;
use citadel::core::ids::{AccountId, InvoiceId, MerchantId, SubscriptionId};
use citadel::core::merchant::NewMerchant;
use citadel::core::money::Currency;
use citadel::core::policy::RecoveryPolicy;
use citadel::core::recovery::{Recovery, RecoveryStatus};
use citadel::core::store::{Store, metrics_day};
use citadel::core::task::TaskKind;
use citadel::core::{Engine, IntakeOutcome, Secret};
use citadel::postgres::PgStore;
use citadel::postgres::ephemeral::{TestDatabase, fresh_store};
use citadel::stripe::fixtures;
use citadel::stripe::gateway::StripeGateway;
use citadel::stripe::stand_in::{Scripted, StandIn};
use citadel::stripe::webhook::{WebhookVerifier, sign};
use proptest::prelude::*;
use serde_json::{Value, json};

use super::drain;

const ACCOUNT: &str = "acct_1CitadelScenario";
const OTHER_ACCOUNT: &str = "acct_1CitadelScenarioOld";
const INVOICE: &str = "in_1CitadelScenario";
const SUBSCRIPTION: &str = "sub_1CitadelScenario";
/// The API version of the current event shapes.
const CURRENT_API: &str = "2026-09-30.clover";
/// An API version before 2025-03-31, with the old invoice shape.
const OLD_API: &str = "2020-08-27";
/// The creation time of the first event of a scenario.
const T0: i64 = 1_780_000_000;

fn invoice_id() -> InvoiceId {
    InvoiceId::parse(INVOICE).unwrap()
}

fn subscription_id() -> SubscriptionId {
    SubscriptionId::parse(SUBSCRIPTION).unwrap()
}

/// Builds the sample invoice, open after a failed payment, in the current
/// shape: the subscription under `parent.subscription_details`.
fn open_invoice() -> Value {
    let mut invoice = fixtures::resource("invoice").unwrap();
    invoice["id"] = INVOICE.into();
    invoice["status"] = "open".into();
    invoice["attempted"] = true.into();
    invoice["attempt_count"] = 1.into();
    invoice["amount_due"] = 2500.into();
    invoice["amount_remaining"] = 2500.into();
    invoice["currency"] = "usd".into();
    invoice["parent"]["type"] = "subscription_details".into();
    invoice["parent"]["subscription_details"]["subscription"] = SUBSCRIPTION.into();
    invoice
}

/// Builds the same invoice in the shape of API versions before 2025-03-31:
/// top-level `subscription` and `payment_intent`, no `parent`.
fn old_shape(mut invoice: Value) -> Value {
    let fields = invoice.as_object_mut().unwrap();
    fields.remove("parent");
    fields.insert("subscription".into(), SUBSCRIPTION.into());
    fields.insert("charge".into(), "ch_1CitadelScenario".into());
    fields.insert("payment_intent".into(), "pi_1CitadelScenario".into());
    fields.insert("paid".into(), false.into());
    invoice
}

/// Builds the sample subscription with `status`.
fn subscription(status: &str) -> Value {
    let mut subscription = fixtures::resource("subscription").unwrap();
    subscription["id"] = SUBSCRIPTION.into();
    subscription["status"] = status.into();
    subscription
}

/// Builds a Connect event of the current API version, created `offset`
/// seconds after [`T0`], caused by Stripe itself (no request).
fn event(id: &str, event_type: &str, object: Value, offset: i64) -> Value {
    let mut event = fixtures::event(event_type, object);
    event["id"] = id.into();
    event["account"] = ACCOUNT.into();
    event["api_version"] = CURRENT_API.into();
    event["created"] = (T0 + offset).into();
    event
}

/// Marks an event as caused by the customer paying by hand on Stripe's
/// hosted invoice page: a request with an id and a key that is not Citadel's.
fn by_customer(mut event: Value, request: &str) -> Value {
    event["request"] = json!({"id": request, "idempotency_key": format!("{request}-key")});
    event
}

/// Signs and verifies an event body as a webhook handler does.
fn verified(event: &Value) -> Event {
    let secret = Secret::new("whsec_scenarios");
    let verifier = WebhookVerifier::new([secret.clone()]).unwrap();
    let body = serde_json::to_vec(event).unwrap();
    let header = sign(&body, &secret, chrono::Utc::now().timestamp());
    verifier.verify_and_parse(&body, &header).unwrap()
}

struct Scenario {
    engine: Arc<Engine<PgStore, StripeGateway>>,
    stand_in: StandIn,
    merchant_id: MerchantId,
    _database: TestDatabase,
}

impl Scenario {
    /// Starts a fresh database and stand-in with one merchant whose three
    /// retries are due at once, and the invoice known to the stand-in.
    async fn start(script: Vec<Scripted>) -> Self {
        let (store, database) = fresh_store().await.unwrap();
        let stand_in = StandIn::start().await.unwrap();
        stand_in.set_invoice(&invoice_id(), 2500, Currency::parse("usd").unwrap());
        stand_in.script(&invoice_id(), script);

        let policy = RecoveryPolicy::with_delays(vec![Duration::ZERO; 3]);
        let mut merchant = NewMerchant::new("scenario merchant", Some(account(ACCOUNT)));
        merchant.policy = policy;
        let merchant = store.create_merchant(&merchant).await.unwrap();

        let gateway = stand_in.gateway().unwrap();
        Self {
            engine: Arc::new(Engine::new(store, gateway)),
            stand_in,
            merchant_id: merchant.id,
            _database: database,
        }
    }

    fn store(&self) -> &PgStore {
        self.engine.store()
    }

    async fn ingest(&self, event: &Value) -> IntakeOutcome {
        self.engine.ingest(&verified(event)).await.unwrap()
    }

    async fn recovery(&self) -> Recovery {
        self.store()
            .recovery(self.merchant_id, &invoice_id())
            .await
            .unwrap()
            .expect("the invoice has a recovery")
    }

    /// Returns the `/pay` requests the stand-in received for the invoice.
    fn pay_requests(&self) -> Vec<citadel::stripe::stand_in::RecordedRequest> {
        self.stand_in
            .requests()
            .into_iter()
            .filter(|request| request.path.contains(INVOICE))
            .collect()
    }

    async fn pending_retries(&self) -> Vec<citadel::core::task::Task> {
        let tasks = self.store().list_tasks(&Default::default()).await.unwrap();
        tasks
            .into_iter()
            .filter(|task| task.kind.as_str() == TaskKind::RETRY_PAYMENT)
            .filter(|task| task.status == citadel::core::task::TaskStatus::Pending)
            .collect()
    }
}

fn account(id: &str) -> AccountId {
    AccountId::parse(id).unwrap()
}

fn payment_failed(id: &str, offset: i64) -> Value {
    event(id, "invoice.payment_failed", open_invoice(), offset)
}

/// Adds a failed card payment with the issuer's `reason` to the invoice's
/// `payments` list, as API versions since 2025-03-31 expand it.
fn with_decline(mut invoice: Value, reason: &str) -> Value {
    let mut charge = fixtures::resource("charge").unwrap();
    charge["status"] = "failed".into();
    charge["failure_code"] = "card_declined".into();
    charge["outcome"]["reason"] = reason.into();
    let mut payment = fixtures::resource("invoice_payment").unwrap();
    payment["invoice"] = INVOICE.into();
    payment["status"] = "failed".into();
    payment["payment"] = json!({"type": "charge", "charge": charge});
    invoice["payments"] = json!({"object": "list", "data": [payment], "has_more": false});
    invoice
}

fn paid_invoice() -> Value {
    let mut invoice = open_invoice();
    invoice["status"] = "paid".into();
    invoice["amount_paid"] = 2500.into();
    invoice["amount_remaining"] = 0.into();
    invoice
}

#[tokio::test]
async fn subscription_update_before_older_create_keeps_newer_state() {
    let scenario = Scenario::start(vec![]).await;
    let updated = event(
        "evt_sub_updated",
        "customer.subscription.updated",
        subscription("past_due"),
        60,
    );
    let created = event(
        "evt_sub_created",
        "customer.subscription.created",
        subscription("incomplete"),
        0,
    );

    scenario.ingest(&updated).await;
    scenario.ingest(&created).await;

    let state = scenario
        .store()
        .subscription_state(scenario.merchant_id, &subscription_id())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(state.status, "past_due");
    assert_eq!(state.last_event_at.timestamp(), T0 + 60);
}

#[tokio::test]
async fn subscription_deleted_with_retry_queued_makes_no_pay_call() {
    let scenario = Scenario::start(vec![Scripted::Pay]).await;
    scenario.ingest(&payment_failed("evt_failed", 0)).await;
    assert_eq!(scenario.pending_retries().await.len(), 1);

    let deleted = event(
        "evt_sub_deleted",
        "customer.subscription.deleted",
        subscription("canceled"),
        10,
    );
    scenario.ingest(&deleted).await;
    drain(&scenario.engine).await;

    assert!(scenario.pay_requests().is_empty());
    assert!(scenario.pending_retries().await.is_empty());
    assert_eq!(scenario.recovery().await.status, RecoveryStatus::Lost);
}

#[tokio::test]
async fn subscription_moved_to_canceled_stops_retries() {
    let scenario = Scenario::start(vec![Scripted::Pay]).await;
    scenario.ingest(&payment_failed("evt_failed", 0)).await;

    let canceled = event(
        "evt_sub_canceled",
        "customer.subscription.updated",
        subscription("canceled"),
        10,
    );
    scenario.ingest(&canceled).await;
    drain(&scenario.engine).await;

    assert!(scenario.pay_requests().is_empty());
    let recovery = scenario.recovery().await;
    assert_eq!(recovery.status, RecoveryStatus::Lost);
    assert!(
        recovery
            .close_reason
            .as_deref()
            .unwrap()
            .contains("moved to canceled"),
        "{recovery:?}"
    );
}

#[tokio::test]
async fn dropped_connection_after_charge_reuses_key() {
    let scenario = Scenario::start(vec![Scripted::ChargeThenDrop]).await;
    scenario.ingest(&payment_failed("evt_failed", 0)).await;

    drain(&scenario.engine).await;

    let requests = scenario.pay_requests();
    assert_eq!(requests.len(), 2, "{requests:?}");
    assert_eq!(requests[0].idempotency_key, requests[1].idempotency_key);
    assert_eq!(scenario.stand_in.charges(&invoice_id()), 1);
    let recovery = scenario.recovery().await;
    assert_eq!(recovery.status, RecoveryStatus::Recovered);
    assert_eq!(recovery.retries_made, 1);
}

#[tokio::test]
async fn two_attempts_use_different_keys() {
    let script = vec![Scripted::insufficient_funds(), Scripted::Pay];
    let scenario = Scenario::start(script).await;
    scenario.ingest(&payment_failed("evt_failed", 0)).await;

    drain(&scenario.engine).await;

    let requests = scenario.pay_requests();
    assert_eq!(requests.len(), 2, "{requests:?}");
    assert_ne!(requests[0].idempotency_key, requests[1].idempotency_key);
    assert_eq!(scenario.stand_in.charges(&invoice_id()), 1);
}

#[tokio::test]
async fn manual_failures_consume_no_scheduled_retry() {
    let script = vec![
        Scripted::insufficient_funds(),
        Scripted::insufficient_funds(),
        Scripted::Pay,
    ];
    let scenario = Scenario::start(script).await;
    scenario.ingest(&payment_failed("evt_failed", 0)).await;
    // The customer typed in cards by hand: one the issuer rejects as a wrong
    // number (a hard decline), then one without funds. Neither shows anything
    // of the card on file that the retries charge.
    let typo = with_decline(open_invoice(), "incorrect_number");
    let typo = event("evt_manual_1", "invoice.payment_failed", typo, 20);
    let empty = with_decline(open_invoice(), "insufficient_funds");
    let empty = event("evt_manual_2", "invoice.payment_failed", empty, 40);
    let first = by_customer(typo, "req_manual_1");
    let second = by_customer(empty, "req_manual_2");
    scenario.ingest(&first).await;
    scenario.ingest(&second).await;

    let pending = scenario.pending_retries().await;
    assert_eq!(pending.len(), 1);
    let retry = pending[0].retry_payment().unwrap();
    assert_eq!(retry.attempt, 1, "the manual failures scheduled nothing");
    let recovery = scenario.recovery().await;
    assert_eq!(recovery.status, RecoveryStatus::Open);
    assert_eq!(recovery.retries_made, 0);
    assert_eq!(recovery.last_decline, None);

    drain(&scenario.engine).await;

    let recovery = scenario.recovery().await;
    assert_eq!(
        recovery.status,
        RecoveryStatus::Recovered,
        "the third scheduled retry is still made: {recovery:?}"
    );
    assert_eq!(recovery.retries_made, 3);
}

#[tokio::test]
async fn paid_delivered_twice_at_once_counts_once() {
    let scenario = Scenario::start(vec![]).await;
    scenario.ingest(&payment_failed("evt_failed", 0)).await;
    let paid = verified(&event("evt_paid", "invoice.paid", paid_invoice(), 30));

    let (first, second) =
        tokio::join!(scenario.engine.ingest(&paid), scenario.engine.ingest(&paid));

    let outcomes = [first.unwrap(), second.unwrap()];
    let duplicates = outcomes
        .iter()
        .filter(|outcome| **outcome == IntakeOutcome::Duplicate)
        .count();
    assert_eq!(duplicates, 1, "{outcomes:?}");
    let metrics = scenario.store().daily_metrics(None).await.unwrap();
    let recovered: i64 = metrics.iter().map(|day| day.payments_recovered).sum();
    let amount: i64 = metrics.iter().map(|day| day.amount_recovered).sum();
    assert_eq!(recovered, 1);
    assert_eq!(amount, 2500);
}

#[tokio::test]
async fn already_paid_answer_stops_without_counting() {
    let scenario = Scenario::start(vec![Scripted::AlreadyPaid]).await;
    scenario.ingest(&payment_failed("evt_failed", 0)).await;

    drain(&scenario.engine).await;
    scenario
        .ingest(&event("evt_paid", "invoice.paid", paid_invoice(), 30))
        .await;

    let recovery = scenario.recovery().await;
    assert_eq!(recovery.status, RecoveryStatus::Stopped);
    assert_eq!(scenario.pay_requests().len(), 1);
    let metrics = scenario.store().daily_metrics(None).await.unwrap();
    let recovered: i64 = metrics.iter().map(|day| day.payments_recovered).sum();
    let lost: i64 = metrics.iter().map(|day| day.payments_lost).sum();
    assert_eq!(recovered, 0, "Citadel did not collect the invoice");
    assert_eq!(lost, 0);
}

#[tokio::test]
async fn paid_invoice_stays_paid_after_late_failure() {
    let scenario = Scenario::start(vec![Scripted::Pay]).await;
    scenario.ingest(&payment_failed("evt_failed", 0)).await;
    scenario
        .ingest(&event("evt_paid", "invoice.paid", paid_invoice(), 60))
        .await;
    scenario
        .ingest(&payment_failed("evt_failed_late", 30))
        .await;

    drain(&scenario.engine).await;

    let recovery = scenario.recovery().await;
    assert_eq!(recovery.status, RecoveryStatus::Recovered);
    assert_eq!(recovery.last_event_at.timestamp(), T0 + 60);
    assert!(scenario.pay_requests().is_empty());
}

#[tokio::test]
async fn metrics_count_on_merchant_day() {
    let scenario = Scenario::start(vec![Scripted::insufficient_funds(), Scripted::Pay]).await;
    sqlx::query("UPDATE merchants SET time_zone = 'Asia/Tokyo'")
        .execute(scenario.store().pool())
        .await
        .unwrap();
    let before = metrics_day(
        chrono::Utc::now(),
        citadel::core::chrono_tz::Tz::Asia__Tokyo,
    );

    scenario.ingest(&payment_failed("evt_failed", 0)).await;
    drain(&scenario.engine).await;

    let after = metrics_day(
        chrono::Utc::now(),
        citadel::core::chrono_tz::Tz::Asia__Tokyo,
    );
    let metrics = scenario.store().daily_metrics(None).await.unwrap();
    assert_eq!(metrics.len(), 1, "{metrics:?}");
    let day = &metrics[0];
    assert!(day.day == before || day.day == after, "{day:?}");
    assert_eq!(day.failed_payments, 1);
    assert_eq!(day.retries_attempted, 2);
    assert_eq!(day.payments_recovered, 1);
    assert_eq!(day.amount_recovered, 2500);
    assert_eq!(day.recovery_rate(), Some(1.0));
    assert!(day.recovery_seconds >= 0);
    assert!(day.mean_time_to_recovery().is_some());
}

/// Runs one decision sequence in a shape and returns what the engine
/// decided: the recovery's end and the activity kinds in order.
async fn decisions(
    scenario: &Scenario,
    merchant_id: MerchantId,
    events: &[Value],
) -> (RecoveryStatus, Option<String>, Vec<String>) {
    for event in events {
        scenario.ingest(event).await;
    }
    let recovery = scenario
        .store()
        .recovery(merchant_id, &invoice_id())
        .await
        .unwrap()
        .unwrap();
    let filter = citadel::core::activity::ActivityFilter {
        merchant_id: Some(merchant_id),
        ..Default::default()
    };
    let activity = scenario.store().list_activity(&filter).await.unwrap();
    let kinds = activity
        .iter()
        .rev()
        .map(|row| row.entry.kind.to_string())
        .collect();
    let decline = recovery
        .last_decline
        .as_ref()
        .and_then(|decline| decline.decline_code.clone());
    (recovery.status, decline, kinds)
}

#[tokio::test]
async fn old_and_current_shapes_give_same_decisions() {
    let scenario = Scenario::start(vec![]).await;
    let mut old_merchant = NewMerchant::new("old API merchant", Some(account(OTHER_ACCOUNT)));
    old_merchant.policy = RecoveryPolicy::with_delays(vec![Duration::ZERO; 3]);
    let old_merchant = scenario
        .store()
        .create_merchant(&old_merchant)
        .await
        .unwrap();

    let current_invoice = with_decline(open_invoice(), "insufficient_funds");
    let mut old_invoice = old_shape(open_invoice());
    old_invoice["charge"] = current_invoice["payments"]["data"][0]["payment"]["charge"].clone();

    let current = [
        payment_failed("evt_new_failed", 0),
        event(
            "evt_new_failed_2",
            "invoice.payment_failed",
            current_invoice,
            5,
        ),
        event(
            "evt_new_canceled",
            "customer.subscription.updated",
            subscription("canceled"),
            10,
        ),
    ];
    let old: Vec<Value> = [
        event(
            "evt_old_failed",
            "invoice.payment_failed",
            old_shape(open_invoice()),
            0,
        ),
        event("evt_old_failed_2", "invoice.payment_failed", old_invoice, 5),
        event(
            "evt_old_canceled",
            "customer.subscription.updated",
            subscription("canceled"),
            10,
        ),
    ]
    .into_iter()
    .map(|mut event| {
        event["account"] = OTHER_ACCOUNT.into();
        event["api_version"] = OLD_API.into();
        event
    })
    .collect();

    let from_current = decisions(&scenario, scenario.merchant_id, &current).await;
    let from_old = decisions(&scenario, old_merchant.id, &old).await;

    assert_eq!(from_current.0, RecoveryStatus::Lost);
    assert_eq!(from_current.1.as_deref(), Some("insufficient_funds"));
    assert_eq!(from_old, from_current);
}

/// Builds one of the six events that end a recovery, by number.
fn stop_event(kind: u8, offset: i64) -> Value {
    let mut invoice = open_invoice();
    match kind {
        0 => event("evt_stop", "invoice.paid", paid_invoice(), offset),
        1 => {
            invoice["status"] = "void".into();
            event("evt_stop", "invoice.voided", invoice, offset)
        }
        2 => {
            invoice["status"] = "uncollectible".into();
            event("evt_stop", "invoice.marked_uncollectible", invoice, offset)
        }
        3 => event("evt_stop", "invoice.deleted", invoice, offset),
        4 => event(
            "evt_stop",
            "customer.subscription.deleted",
            subscription("canceled"),
            offset,
        ),
        _ => event(
            "evt_stop",
            "customer.subscription.updated",
            subscription("canceled"),
            offset,
        ),
    }
}

/// Ingests `events` in order, draining the workers after the step numbered
/// `drain_after`, and returns the number of `/pay` calls made after the stop
/// event was recorded.
async fn pay_calls_after_stop(events: Vec<(bool, Value)>, drain_after: usize) -> usize {
    let script = vec![Scripted::insufficient_funds(); 3];
    let scenario = Scenario::start(script).await;
    let mut calls_at_stop = None;
    for (step, (is_stop, event)) in events.iter().enumerate() {
        scenario.ingest(event).await;
        if *is_stop {
            calls_at_stop = Some(scenario.pay_requests().len());
        }
        if step == drain_after {
            drain(&scenario.engine).await;
        }
    }
    drain(&scenario.engine).await;
    scenario.pay_requests().len() - calls_at_stop.unwrap()
}

proptest! {
    // Each case starts a database and a stand-in, so keep the count small.
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn no_retry_after_stop_event_in_any_order(
        stop in 0u8..6,
        order in Just(vec![0usize, 1, 2, 3]).prop_shuffle(),
        drain_after in 0usize..4,
    ) {
        // Event 0: Stripe's failure; 1: a customer's failed attempt; 2: a
        // later automatic failure; 3: the stop event. Offsets follow the
        // index, so the delivery order is a shuffle of creation order.
        let events: Vec<(bool, Value)> = order
            .iter()
            .map(|&index| {
                let offset = i64::try_from(index).unwrap() * 10;
                let event = match index {
                    0 => payment_failed("evt_failed", offset),
                    1 => by_customer(payment_failed("evt_manual", offset), "req_manual"),
                    2 => payment_failed("evt_failed_again", offset),
                    _ => stop_event(stop, offset),
                };
                (index == 3, event)
            })
            .collect();

        let runtime = tokio::runtime::Runtime::new().unwrap();
        let calls = runtime.block_on(pay_calls_after_stop(events, drain_after));

        prop_assert_eq!(calls, 0);
    }
}
