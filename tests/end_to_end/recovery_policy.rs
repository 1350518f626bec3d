//! Scenarios of the recovery policy on a real PostgreSQL with the Stripe
//! stand-in. They cover retry hours in merchants' time zones, the card cap
//! across merchants, the final action on the connected account, passive
//! mode, and the end of a recovery that no retry can pay.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Timelike, Utc};
use citadel::core::activity::{ActivityFilter, ActivityKind};
use citadel::core::chrono_tz::{America, Asia, Tz};
use citadel::core::event::Event;
use citadel::core::ids::{AccountId, MerchantId};
use citadel::core::merchant::{Merchant, NewMerchant};
use citadel::core::payment::{
    ActionOutcome, FinalActionRequest, PayInvoice, PaymentGateway, PaymentOutcome,
};
use citadel::core::policy::{CardCap, FinalAction, RecoveryPolicy};
use citadel::core::recovery::RecoveryStatus;
use citadel::core::store::Store;
use citadel::core::task::{Task, TaskKind, TaskStatus};
use citadel::core::{Engine, Secret, Worker, WorkerConfig, async_trait};
use citadel::postgres::PgStore;
use citadel::postgres::ephemeral::{TestDatabase, fresh_store};
use citadel::stripe::event::parse_event;
use citadel::stripe::fixtures;
use citadel::stripe::gateway::StripeGateway;
use citadel::stripe::stand_in::{ResponseKind, Scripted, StandIn};
use serde_json::Value;

use super::invoice;

const DAY: Duration = Duration::from_secs(24 * 60 * 60);

/// An API version before 2025-03-31, whose invoices name their subscription
/// at the top level and whose charges name their invoice.
const OLD_API: &str = "2020-08-27";

fn connect_event(id: &str, account: &str, event_type: &str, object: Value) -> Event {
    let mut event = fixtures::event(event_type, object);
    event["id"] = id.into();
    event["account"] = account.into();
    event["api_version"] = OLD_API.into();
    event["created"] = Utc::now().timestamp().into();
    parse_event(&serde_json::to_vec(&event).unwrap()).unwrap()
}

/// `invoice.payment_failed` of an open invoice of 2000 usd in a subscription.
fn payment_failed(id: &str, account: &str, invoice_id: &str) -> Event {
    let mut invoice = fixtures::resource("invoice").unwrap();
    invoice["id"] = invoice_id.into();
    invoice["status"] = "open".into();
    invoice["attempt_count"] = 1.into();
    invoice["amount_due"] = 2000.into();
    invoice["subscription"] = format!("sub_{invoice_id}").into();
    invoice["parent"] = Value::Null;
    connect_event(id, account, "invoice.payment_failed", invoice)
}

/// `charge.failed` of the invoice, declined for insufficient funds on the
/// card with `fingerprint`.
fn charge_failed(id: &str, account: &str, invoice_id: &str, fingerprint: &str) -> Event {
    let mut charge = fixtures::resource("charge").unwrap();
    charge["status"] = "failed".into();
    charge["paid"] = false.into();
    charge["failure_code"] = "card_declined".into();
    charge["outcome"]["type"] = "issuer_declined".into();
    charge["outcome"]["reason"] = "insufficient_funds".into();
    charge["payment_method_details"]["card"]["fingerprint"] = fingerprint.into();
    charge["invoice"] = invoice_id.into();
    connect_event(id, account, "charge.failed", charge)
}

async fn register(
    store: &PgStore,
    account: &str,
    time_zone: &str,
    policy: RecoveryPolicy,
) -> Merchant {
    let mut merchant = NewMerchant::new(account, Some(AccountId::parse(account).unwrap()));
    merchant.time_zone = time_zone.to_owned();
    merchant.policy = policy;
    store.create_merchant(&merchant).await.unwrap()
}

async fn scene() -> (PgStore, StandIn, TestDatabase) {
    let (store, database) = fresh_store().await.unwrap();
    let stand_in = StandIn::start().await.unwrap();
    (store, stand_in, database)
}

fn engine(
    store: &PgStore,
    stand_in: &StandIn,
    card_cap: CardCap,
) -> Arc<Engine<PgStore, StripeGateway>> {
    let gateway = StripeGateway::builder(Secret::new("sk_test_policy"))
        .base_url(stand_in.url())
        .build()
        .unwrap();
    Arc::new(Engine::new(store.clone(), gateway).with_card_cap(card_cap))
}

async fn run_batches<G: PaymentGateway>(engine: &Arc<Engine<PgStore, G>>, batches: usize) {
    let worker = Worker::new(Arc::clone(engine), WorkerConfig::default());
    for _ in 0..batches {
        worker.run_batch().await.unwrap();
    }
}

/// Makes every pending task of `kind` due now.
async fn make_due(store: &PgStore, kind: &str) {
    sqlx::query("UPDATE scheduled_tasks SET run_at = now() WHERE status = 'pending' AND kind = $1")
        .bind(kind)
        .execute(store.pool())
        .await
        .unwrap();
}

async fn pending_retries(store: &PgStore, merchant: MerchantId) -> Vec<Task> {
    let tasks = store
        .list_tasks(&citadel::core::store::TaskFilter {
            status: Some(TaskStatus::Pending),
            merchant_id: Some(merchant),
            ..Default::default()
        })
        .await
        .unwrap();
    tasks
        .into_iter()
        .filter(|task| task.kind.as_str() == TaskKind::RETRY_PAYMENT)
        .collect()
}

async fn messages(store: &PgStore, merchant: MerchantId, kind: ActivityKind) -> Vec<String> {
    let filter = ActivityFilter {
        merchant_id: Some(merchant),
        kind: Some(kind),
        ..ActivityFilter::default()
    };
    let rows = store.list_activity(&filter).await.unwrap();
    rows.into_iter().map(|row| row.entry.message).collect()
}

/// Checks that `run_at` is 09:00 in `zone`, between `earliest` and a day
/// after it, and at `utc_hour` in UTC.
fn assert_nine_local(run_at: DateTime<Utc>, zone: Tz, earliest: DateTime<Utc>, utc_hour: u32) {
    let local = run_at.with_timezone(&zone);
    assert_eq!((local.hour(), local.minute()), (9, 0), "{run_at} in {zone}");
    assert_eq!(run_at.hour(), utc_hour, "{run_at} in UTC");
    assert!(run_at >= earliest, "{run_at} before {earliest}");
    assert!(
        run_at < earliest + chrono::Duration::days(1),
        "{run_at} too late"
    );
}

#[tokio::test]
async fn retry_hours_across_dst_in_utc() {
    let (store, stand_in, _database) = scene().await;
    // The second retry runs 120 days after the first one's decline, which
    // from December lands after New York's clocks move to UTC-4 in March.
    let mut policy = RecoveryPolicy::with_delays(vec![DAY, 120 * DAY]);
    policy.retry_hour = Some(9);
    let tokyo = register(&store, "acct_tokyo", "Asia/Tokyo", policy.clone()).await;
    let new_york = register(&store, "acct_newyork", "America/New_York", policy).await;
    let engine = engine(&store, &stand_in, CardCap::default());
    stand_in.script(&invoice("in_tokyo"), [Scripted::insufficient_funds()]);
    stand_in.script(&invoice("in_newyork"), [Scripted::insufficient_funds()]);

    let opened = Utc::now();
    engine
        .ingest(&payment_failed("evt_t1", "acct_tokyo", "in_tokyo"))
        .await
        .unwrap();
    engine
        .ingest(&payment_failed("evt_n1", "acct_newyork", "in_newyork"))
        .await
        .unwrap();
    let first_tokyo = pending_retries(&store, tokyo.id).await;
    let first_new_york = pending_retries(&store, new_york.id).await;
    assert_eq!(first_tokyo.len(), 1);
    assert_eq!(first_new_york.len(), 1);
    let day_later = opened + chrono::Duration::days(1);
    // Tokyo has no DST: 09:00 JST is always 00:00 UTC.
    assert_nine_local(first_tokyo[0].run_at, Asia::Tokyo, day_later, 0);
    // December in New York is EST (UTC-5): 09:00 is 14:00 UTC.
    assert_nine_local(first_new_york[0].run_at, America::New_York, day_later, 14);

    make_due(&store, TaskKind::RETRY_PAYMENT).await;
    let declined = Utc::now();
    run_batches(&engine, 1).await;
    let second_tokyo = pending_retries(&store, tokyo.id).await;
    let second_new_york = pending_retries(&store, new_york.id).await;
    assert_eq!(second_tokyo.len(), 1);
    assert_eq!(second_new_york.len(), 1);
    let later = declined + chrono::Duration::days(120);
    assert_nine_local(second_tokyo[0].run_at, Asia::Tokyo, later, 0);
    // April in New York is EDT (UTC-4): 09:00 is 13:00 UTC.
    assert_nine_local(second_new_york[0].run_at, America::New_York, later, 13);
}

#[tokio::test]
async fn same_card_cap_counts_both_merchants() {
    // Three attempts per card: the two failures Stripe reported use two.
    let cap = CardCap::new(3, 30 * DAY).unwrap();
    let (store, stand_in, _database) = scene().await;
    let policy = RecoveryPolicy::with_delays(vec![Duration::ZERO; 3]);
    let first = register(&store, "acct_first", "UTC", policy.clone()).await;
    let second = register(&store, "acct_second", "UTC", policy).await;
    let engine = engine(&store, &stand_in, cap);
    for id in ["in_first", "in_second"] {
        stand_in.script(&invoice(id), [Scripted::insufficient_funds()]);
    }

    for (account, id) in [("acct_first", "in_first"), ("acct_second", "in_second")] {
        let charge = charge_failed(&format!("evt_c_{id}"), account, id, "fp_shared_card");
        engine.ingest(&charge).await.unwrap();
        engine
            .ingest(&payment_failed(&format!("evt_p_{id}"), account, id))
            .await
            .unwrap();
    }
    run_batches(&engine, 3).await;

    let pays = stand_in
        .requests()
        .into_iter()
        .filter(|request| request.path.ends_with("/pay"))
        .count();
    assert_eq!(pays, 1, "only one retry fits under the cap of 3");
    let attempts: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM card_attempts WHERE fingerprint = 'fp_shared_card'",
    )
    .fetch_one(store.pool())
    .await
    .unwrap();
    assert_eq!(attempts, 3);

    let mut postponed = messages(&store, first.id, ActivityKind::RetryPostponed).await;
    postponed.extend(messages(&store, second.id, ActivityKind::RetryPostponed).await);
    assert!(!postponed.is_empty());
    assert!(
        postponed
            .iter()
            .all(|m| m.contains("across all merchants") && m.contains("allows 3")),
        "{postponed:?}"
    );
    let mut waiting = pending_retries(&store, first.id).await;
    waiting.extend(pending_retries(&store, second.id).await);
    assert_eq!(waiting.len(), 2, "each merchant keeps one postponed retry");
    let month = Utc::now() + chrono::Duration::days(29);
    assert!(
        waiting.iter().all(|task| task.run_at > month),
        "{waiting:?}"
    );
}

#[tokio::test]
async fn final_action_runs_on_connected_account() {
    let (store, stand_in, _database) = scene().await;
    let mut uncollectible = RecoveryPolicy::with_delays(vec![Duration::ZERO]);
    uncollectible.final_action = FinalAction::MarkUncollectible;
    let mut cancel = uncollectible.clone();
    cancel.final_action = FinalAction::CancelSubscription;
    let marker = register(&store, "acct_marks", "UTC", uncollectible).await;
    let canceller = register(&store, "acct_cancels", "UTC", cancel).await;
    let engine = engine(&store, &stand_in, CardCap::default());
    for id in ["in_marks", "in_cancels"] {
        stand_in.script(&invoice(id), [Scripted::insufficient_funds()]);
    }

    engine
        .ingest(&payment_failed("evt_m", "acct_marks", "in_marks"))
        .await
        .unwrap();
    engine
        .ingest(&payment_failed("evt_c", "acct_cancels", "in_cancels"))
        .await
        .unwrap();
    run_batches(&engine, 3).await;

    let requests = stand_in.requests();
    let marked = requests
        .iter()
        .find(|request| request.path == "/v1/invoices/in_marks/mark_uncollectible")
        .expect("mark_uncollectible was sent");
    assert_eq!(marked.method, "POST");
    assert_eq!(marked.stripe_account.as_deref(), Some("acct_marks"));
    assert!(marked.idempotency_key.is_some());
    assert_eq!(marked.outcome, ResponseKind::MarkedUncollectible);

    let cancelled = requests
        .iter()
        .find(|request| request.path == "/v1/subscriptions/sub_in_cancels")
        .expect("the subscription cancel was sent");
    assert_eq!(cancelled.method, "DELETE");
    assert_eq!(cancelled.stripe_account.as_deref(), Some("acct_cancels"));
    assert!(cancelled.idempotency_key.is_some());
    assert_eq!(cancelled.outcome, ResponseKind::SubscriptionCanceled);

    for merchant in [marker.id, canceller.id] {
        let taken = messages(&store, merchant, ActivityKind::FinalActionTaken).await;
        assert_eq!(taken.len(), 1, "{taken:?}");
        let scheduled = messages(&store, merchant, ActivityKind::FinalActionScheduled).await;
        assert_eq!(scheduled.len(), 1, "{scheduled:?}");
    }
}

#[tokio::test]
async fn passive_merchant_gets_no_pay_call() {
    let (store, stand_in, _database) = scene().await;
    let mut policy = RecoveryPolicy::with_delays(vec![Duration::ZERO; 3]);
    policy.passive = true;
    policy.final_action = FinalAction::MarkUncollectible;
    let merchant = register(&store, "acct_passive", "UTC", policy).await;
    let engine = engine(&store, &stand_in, CardCap::default());

    engine
        .ingest(&payment_failed("evt_1", "acct_passive", "in_passive"))
        .await
        .unwrap();
    engine
        .ingest(&payment_failed("evt_2", "acct_passive", "in_passive"))
        .await
        .unwrap();
    run_batches(&engine, 2).await;

    assert!(stand_in.requests().is_empty(), "{:?}", stand_in.requests());
    assert!(pending_retries(&store, merchant.id).await.is_empty());
    let skipped = messages(&store, merchant.id, ActivityKind::RetrySkipped).await;
    assert_eq!(skipped.len(), 2, "{skipped:?}");
    assert!(skipped.iter().all(|m| m.contains("passive mode")));

    // When the window closes, the recovery ends, and no final action runs.
    make_due(&store, TaskKind::CLOSE_RECOVERY).await;
    run_batches(&engine, 1).await;
    let recovery = store
        .recovery(merchant.id, &invoice("in_passive"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(recovery.status, RecoveryStatus::Lost);
    assert!(stand_in.requests().is_empty(), "{:?}", stand_in.requests());
    let final_action = messages(&store, merchant.id, ActivityKind::FinalActionScheduled).await;
    assert_eq!(final_action.len(), 1);
    assert!(final_action[0].contains("passive mode"), "{final_action:?}");
}

/// A gateway for an invoice whose customer has no payment method: Stripe
/// rejects every `/pay`.
#[derive(Debug)]
struct NoPaymentMethod;

#[async_trait]
impl PaymentGateway for NoPaymentMethod {
    async fn pay_invoice(&self, _request: &PayInvoice) -> PaymentOutcome {
        PaymentOutcome::Rejected {
            status: 400,
            message: "This customer has no attached payment source or default payment method."
                .to_owned(),
        }
    }

    async fn run_final_action(&self, _request: &FinalActionRequest) -> ActionOutcome {
        ActionOutcome::Done
    }
}

#[tokio::test]
async fn invoice_without_payment_method_ends_at_window() {
    let (store, _database) = fresh_store().await.unwrap();
    let policy = RecoveryPolicy::with_delays(vec![Duration::ZERO; 2]);
    let merchant = register(&store, "acct_nopm", "UTC", policy).await;
    let engine = Arc::new(Engine::new(store.clone(), NoPaymentMethod));

    engine
        .ingest(&payment_failed("evt_1", "acct_nopm", "in_nopm"))
        .await
        .unwrap();
    run_batches(&engine, 1).await;
    let open = store
        .recovery(merchant.id, &invoice("in_nopm"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(open.status, RecoveryStatus::Open);
    let close_at: DateTime<Utc> = sqlx::query_scalar(
        "SELECT run_at FROM scheduled_tasks WHERE kind = 'close_recovery' AND status = 'pending'",
    )
    .fetch_one(store.pool())
    .await
    .unwrap();
    assert_eq!(close_at, merchant.policy.window_end(open.opened_at));

    make_due(&store, TaskKind::CLOSE_RECOVERY).await;
    run_batches(&engine, 1).await;
    let closed = store
        .recovery(merchant.id, &invoice("in_nopm"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(closed.status, RecoveryStatus::Lost);
    let lost = messages(&store, merchant.id, ActivityKind::RecoveryLost).await;
    assert_eq!(lost.len(), 1);
    assert!(lost[0].contains("window closed"), "{lost:?}");
}
