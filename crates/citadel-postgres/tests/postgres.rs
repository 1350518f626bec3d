//! Tests of `PgStore` against a real PostgreSQL server, each on a fresh
//! database from `fresh_store`.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use citadel_core::activity::{ActivityFilter, ActivityKind, NewActivity};
use citadel_core::event::{Event, EventKind, InvoiceSnapshot, Settlement};
use citadel_core::ids::{
    AccountId, CustomerId, EventId, InvoiceId, MerchantId, SubscriptionId, TaskId,
};
use citadel_core::merchant::{Merchant, NewMerchant};
use citadel_core::metrics::MetricsDelta;
use citadel_core::money::{Currency, Money};
use citadel_core::payment::{
    ActionOutcome, Decline, FinalActionRequest, PayInvoice, PaymentGateway, PaymentOutcome,
};
use citadel_core::policy::RecoveryPolicy;
use citadel_core::recovery::{Recovery, RecoveryStatus};
use citadel_core::store::{ClaimRequest, EventRecord, Store, StoreError, TaskFilter};
use citadel_core::task::{Lease, NewTask, Task, TaskKind, TaskStatus, TaskUpdate};
use citadel_core::{Engine, IntakeOutcome, Worker, WorkerConfig};
use citadel_postgres::PgStore;
use citadel_postgres::ephemeral::{EphemeralError, EphemeralPostgres, TestDatabase, fresh_store};
use serde_json::json;
use tokio::sync::Barrier;

#[path = "postgres/engine.rs"]
mod engine;
#[path = "postgres/lease_model.rs"]
mod lease_model;

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

async fn setup() -> (PgStore, TestDatabase) {
    match fresh_store().await {
        Ok(setup) => setup,
        Err(err) => panic!("failed to set up a test database: {err}"),
    }
}

fn account(id: &str) -> AccountId {
    AccountId::parse(id).unwrap()
}

fn invoice(id: &str) -> InvoiceId {
    InvoiceId::parse(id).unwrap()
}

fn usd(minor_units: i64) -> Money {
    Money::new(minor_units, Currency::parse("usd").unwrap())
}

async fn register(store: &PgStore, account_id: &str) -> Merchant {
    store
        .create_merchant(&NewMerchant::new("Acme", Some(account(account_id))))
        .await
        .unwrap()
}

async fn register_with_delays(store: &PgStore, account_id: &str, delays: &[u64]) -> Merchant {
    let mut merchant = NewMerchant::new("Acme", Some(account(account_id)));
    merchant.policy =
        RecoveryPolicy::with_delays(delays.iter().copied().map(Duration::from_secs).collect());
    store.create_merchant(&merchant).await.unwrap()
}

/// Builds a retry task that was due a minute ago.
fn due_task(merchant_id: MerchantId, key: &str) -> NewTask {
    NewTask {
        merchant_id,
        kind: TaskKind::retry_payment(),
        invoice_id: Some(invoice("in_test")),
        payload: json!({"key": key}),
        run_at: Utc::now() - chrono::Duration::minutes(1),
        max_attempts: 5,
        dedupe_key: Some(key.to_owned()),
        priority: 0,
    }
}

async fn insert_tasks(store: &PgStore, tasks: &[NewTask]) -> Vec<TaskId> {
    let mut tx = store.begin().await.unwrap();
    let mut ids = Vec::new();
    for task in tasks {
        ids.push(
            tx.insert_task(task)
                .await
                .unwrap()
                .expect("no live duplicate"),
        );
    }
    tx.commit().await.unwrap();
    ids
}

fn claim_request(worker: &str, limit: u32) -> ClaimRequest {
    ClaimRequest {
        worker_id: worker.to_owned(),
        kinds: vec![TaskKind::retry_payment()],
        limit,
        lease_duration: Duration::from_secs(300),
    }
}

/// Lists the retry tasks, without the customer notice tasks beside them.
async fn retry_tasks(store: &PgStore) -> Vec<Task> {
    let tasks = store.list_tasks(&TaskFilter::default()).await.unwrap();
    tasks
        .into_iter()
        .filter(|task| task.kind.as_str() == TaskKind::RETRY_PAYMENT)
        .collect()
}

async fn count(store: &PgStore, sql: &'static str) -> i64 {
    sqlx::query_scalar(sql)
        .fetch_one(store.pool())
        .await
        .unwrap()
}

async fn set_merchant_status(store: &PgStore, merchant_id: MerchantId, status: &str) {
    sqlx::query("UPDATE merchants SET status = $2 WHERE id = $1")
        .bind(merchant_id.get())
        .bind(status)
        .execute(store.pool())
        .await
        .unwrap();
}

fn payment_failed(event_id: &str, account_id: &str, invoice_id: &str) -> Event {
    let snapshot = InvoiceSnapshot {
        id: invoice(invoice_id),
        customer_id: Some(CustomerId::parse("cus_1").unwrap()),
        subscription_id: Some(SubscriptionId::parse("sub_1").unwrap()),
        amount_due: usd(2500),
        amount_paid: usd(0),
        attempt_count: 1,
        status: Some("open".to_owned()),
        decline: Some(Decline::with_decline_code("insufficient_funds")),
    };
    Event {
        id: EventId::parse(event_id).unwrap(),
        account: Some(account(account_id)),
        event_type: "invoice.payment_failed".to_owned(),
        created: Utc::now(),
        api_version: Some("2025-03-31.basil".to_owned()),
        livemode: false,
        request_id: None,
        request_idempotency_key: None,
        kind: EventKind::InvoicePaymentFailed(snapshot),
        payload: json!({"id": event_id, "type": "invoice.payment_failed"}),
    }
}

/// A gateway for intake tests: intake never pays, so a call is a bug.
#[derive(Debug)]
struct UnusedGateway;

#[async_trait]
impl PaymentGateway for UnusedGateway {
    async fn pay_invoice(&self, request: &PayInvoice) -> PaymentOutcome {
        panic!("intake must not pay invoices, but paid {}", request.invoice);
    }

    async fn run_final_action(&self, request: &FinalActionRequest) -> ActionOutcome {
        panic!(
            "intake must not run final actions, but ran {:?}",
            request.action
        );
    }
}

/// A gateway that returns scripted outcomes in order and records requests.
#[derive(Debug, Default)]
struct ScriptedGateway {
    outcomes: Mutex<VecDeque<PaymentOutcome>>,
    requests: Mutex<Vec<PayInvoice>>,
}

impl ScriptedGateway {
    fn new(outcomes: impl IntoIterator<Item = PaymentOutcome>) -> Self {
        Self {
            outcomes: Mutex::new(outcomes.into_iter().collect()),
            requests: Mutex::default(),
        }
    }

    fn requests(&self) -> Vec<PayInvoice> {
        self.requests.lock().unwrap().clone()
    }
}

#[async_trait]
impl PaymentGateway for ScriptedGateway {
    async fn pay_invoice(&self, request: &PayInvoice) -> PaymentOutcome {
        self.requests.lock().unwrap().push(request.clone());
        self.outcomes
            .lock()
            .unwrap()
            .pop_front()
            .expect("a scripted outcome for every payment")
    }

    async fn run_final_action(&self, request: &FinalActionRequest) -> ActionOutcome {
        panic!("no final action is scripted, but {:?} ran", request.action);
    }
}

// ---------------------------------------------------------------------------
// Migrations
// ---------------------------------------------------------------------------

#[tokio::test]
async fn migrations_create_all_tables() {
    let (store, _db) = setup().await;

    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables
         WHERE table_schema = 'public' ORDER BY table_name",
    )
    .fetch_all(store.pool())
    .await
    .unwrap();

    for table in [
        "daily_metrics",
        "invoice_recoveries",
        "merchants",
        "processed_events",
        "scheduled_tasks",
        "usage_logs",
        "workers",
    ] {
        assert!(
            tables.iter().any(|name| name == table),
            "{table} in {tables:?}"
        );
    }
}

#[tokio::test]
async fn migrations_set_autovacuum_scale_factors() {
    let (store, _db) = setup().await;

    for (table, expected) in [
        ("scheduled_tasks", 0.05),
        ("processed_events", 0.05),
        ("usage_logs", 0.10),
    ] {
        let options: Vec<String> = sqlx::query_scalar(
            "SELECT coalesce(reloptions, '{}')::text[] FROM pg_class
             WHERE oid = to_regclass($1)",
        )
        .bind(table)
        .fetch_one(store.pool())
        .await
        .unwrap();

        let value = options
            .iter()
            .find_map(|option| option.strip_prefix("autovacuum_vacuum_scale_factor="))
            .unwrap_or_else(|| panic!("no scale factor on {table}: {options:?}"));
        let value: f64 = value.parse().unwrap();
        assert!((value - expected).abs() < 1e-9, "{table}: {value}");
    }
}

// ---------------------------------------------------------------------------
// Merchants
// ---------------------------------------------------------------------------

#[tokio::test]
async fn merchant_round_trips() {
    let (store, _db) = setup().await;
    let mut new = NewMerchant::new("Acme", Some(account("acct_1")));
    new.policy = RecoveryPolicy::with_delays(vec![Duration::from_secs(60)]);
    new.time_zone = "Europe/Paris".to_owned();

    let created = store.create_merchant(&new).await.unwrap();

    assert_eq!(created.name, "Acme");
    assert_eq!(created.policy, new.policy);
    assert_eq!(created.time_zone, "Europe/Paris");
    assert_eq!(
        store.merchant(created.id).await.unwrap(),
        Some(created.clone())
    );
    let by_account = store.merchant_by_account(Some(&account("acct_1"))).await;
    assert_eq!(by_account.unwrap(), Some(created.clone()));
    assert_eq!(store.merchant_by_account(None).await.unwrap(), None);
    assert_eq!(store.list_merchants().await.unwrap(), vec![created]);
}

#[tokio::test]
async fn duplicate_account_is_rejected() {
    let (store, _db) = setup().await;
    register(&store, "acct_1").await;

    let err = store
        .create_merchant(&NewMerchant::new("Other", Some(account("acct_1"))))
        .await
        .unwrap_err();

    assert!(
        matches!(&err, StoreError::DuplicateAccount { account } if account == "acct_1"),
        "{err:?}"
    );
    assert_eq!(store.list_merchants().await.unwrap().len(), 1);
}

#[tokio::test]
async fn second_platform_merchant_is_rejected() {
    let (store, _db) = setup().await;
    let platform = store
        .create_merchant(&NewMerchant::new("Platform", None))
        .await
        .unwrap();

    let err = store
        .create_merchant(&NewMerchant::new("Platform again", None))
        .await
        .unwrap_err();

    assert!(
        matches!(&err, StoreError::DuplicateAccount { account } if account == "platform"),
        "{err:?}"
    );
    assert_eq!(
        store.merchant_by_account(None).await.unwrap(),
        Some(platform)
    );
}

// ---------------------------------------------------------------------------
// Tasks
// ---------------------------------------------------------------------------

#[tokio::test]
async fn insert_task_dedupes_live_tasks_only() {
    let (store, _db) = setup().await;
    let merchant = register(&store, "acct_1").await;
    let task = due_task(merchant.id, "retry:in_test:1");

    let mut tx = store.begin().await.unwrap();
    let first = tx.insert_task(&task).await.unwrap();
    let second = tx.insert_task(&task).await.unwrap();
    tx.commit().await.unwrap();
    assert!(first.is_some());
    assert_eq!(second, None);

    let claimed = store.claim_tasks(&claim_request("w", 10)).await.unwrap();
    let lease = claimed[0].lease.clone().unwrap();
    let mut tx = store.begin().await.unwrap();
    assert_eq!(
        tx.insert_task(&task).await.unwrap(),
        None,
        "running is live"
    );
    assert!(tx.finish_task(&lease, &TaskUpdate::Complete).await.unwrap());
    let third = tx.insert_task(&task).await.unwrap();
    tx.commit().await.unwrap();
    assert!(third.is_some(), "a completed task frees its key");
}

#[tokio::test]
async fn claim_sets_lease_and_counts_attempt() {
    let (store, _db) = setup().await;
    let merchant = register(&store, "acct_1").await;
    let ids = insert_tasks(&store, &[due_task(merchant.id, "a")]).await;
    let before = Utc::now();

    let claimed = store
        .claim_tasks(&claim_request("worker-1", 10))
        .await
        .unwrap();

    assert_eq!(claimed.len(), 1);
    let task = &claimed[0];
    assert_eq!(task.id, ids[0]);
    assert_eq!(task.status, TaskStatus::Running);
    assert_eq!(task.attempts, 1);
    let lease = task.lease.as_ref().expect("a claimed task has a lease");
    assert_eq!(lease.task_id, task.id);
    assert_eq!(lease.owner, "worker-1");
    assert!(lease.expires_at > before + chrono::Duration::seconds(290));
    assert_eq!(store.task(task.id).await.unwrap().as_ref(), Some(task));
}

#[tokio::test]
async fn claim_takes_oldest_first_and_at_most_limit() {
    let (store, _db) = setup().await;
    let merchant = register(&store, "acct_1").await;
    let mut tasks = Vec::new();
    for minutes in [5, 30, 10, 20] {
        let mut task = due_task(merchant.id, &format!("t{minutes}"));
        task.run_at = Utc::now() - chrono::Duration::minutes(minutes);
        tasks.push(task);
    }
    let mut later = due_task(merchant.id, "later");
    later.run_at = Utc::now() + chrono::Duration::hours(1);
    tasks.push(later);
    let mut other_kind = due_task(merchant.id, "other");
    other_kind.kind = TaskKind::new("send_email");
    tasks.push(other_kind);
    insert_tasks(&store, &tasks).await;

    let first = store.claim_tasks(&claim_request("w", 2)).await.unwrap();
    let second = store.claim_tasks(&claim_request("w", 10)).await.unwrap();
    let third = store.claim_tasks(&claim_request("w", 10)).await.unwrap();

    let keys = |tasks: &[citadel_core::task::Task]| -> Vec<String> {
        tasks
            .iter()
            .map(|task| task.dedupe_key.clone().unwrap())
            .collect()
    };
    assert_eq!(keys(&first), ["t30", "t20"]);
    assert_eq!(keys(&second), ["t10", "t5"]);
    assert!(third.is_empty(), "{:?}", keys(&third));
}

#[tokio::test]
async fn claim_skips_tasks_at_attempt_limit() {
    let (store, _db) = setup().await;
    let merchant = register(&store, "acct_1").await;
    let mut exhausted = due_task(merchant.id, "exhausted");
    exhausted.max_attempts = 1;
    exhausted.run_at = Utc::now() - chrono::Duration::hours(1);
    let ids = insert_tasks(&store, &[exhausted, due_task(merchant.id, "fresh")]).await;
    sqlx::query("UPDATE scheduled_tasks SET attempts = 1 WHERE id = $1")
        .bind(ids[0].get())
        .execute(store.pool())
        .await
        .unwrap();

    let claimed = store.claim_tasks(&claim_request("w", 10)).await.unwrap();

    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].id, ids[1]);
    let exhausted = store.task(ids[0]).await.unwrap().unwrap();
    assert_eq!(exhausted.status, TaskStatus::Pending);
    assert_eq!(exhausted.attempts, 1);
}

#[tokio::test]
async fn claim_skips_paused_merchants() {
    let (store, _db) = setup().await;
    let paused = register(&store, "acct_paused").await;
    let active = register(&store, "acct_active").await;
    let mut early = due_task(paused.id, "paused");
    early.run_at = Utc::now() - chrono::Duration::hours(1);
    insert_tasks(&store, &[early, due_task(active.id, "active")]).await;
    set_merchant_status(&store, paused.id, "paused").await;

    let claimed = store.claim_tasks(&claim_request("w", 10)).await.unwrap();

    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].merchant_id, active.id);
    assert_eq!(
        store
            .next_run_at(&[TaskKind::retry_payment()])
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        store.merchant(paused.id).await.unwrap().unwrap().status,
        citadel_core::merchant::MerchantStatus::Paused
    );

    set_merchant_status(&store, paused.id, "active").await;
    let resumed = store.claim_tasks(&claim_request("w", 10)).await.unwrap();
    assert_eq!(resumed.len(), 1);
    assert_eq!(resumed[0].merchant_id, paused.id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_claimers_never_share_a_task() {
    const TASKS: usize = 500;
    const CLAIMERS: usize = 4;
    let (store, db) = setup().await;
    let merchant = register(&store, "acct_1").await;
    let tasks: Vec<NewTask> = (0..TASKS)
        .map(|n| due_task(merchant.id, &format!("task-{n}")))
        .collect();
    insert_tasks(&store, &tasks).await;

    let barrier = Arc::new(Barrier::new(CLAIMERS));
    let mut claimers = Vec::new();
    for n in 0..CLAIMERS {
        let claimer = PgStore::connect(db.url()).await.unwrap();
        let barrier = Arc::clone(&barrier);
        claimers.push(tokio::spawn(async move {
            let request = claim_request(&format!("worker-{n}"), 7);
            barrier.wait().await;
            let mut ids = Vec::new();
            loop {
                let batch = claimer.claim_tasks(&request).await.unwrap();
                if batch.is_empty() {
                    return ids;
                }
                assert!(batch.len() <= 7);
                ids.extend(batch.iter().map(|task| task.id));
            }
        }));
    }

    let mut all = Vec::new();
    let mut claimers_with_tasks = 0;
    for claimer in claimers {
        let ids = claimer.await.unwrap();
        if !ids.is_empty() {
            claimers_with_tasks += 1;
        }
        all.extend(ids);
    }
    let unique: HashSet<TaskId> = all.iter().copied().collect();
    assert_eq!(unique.len(), all.len(), "a task was claimed twice");
    assert_eq!(all.len(), TASKS);
    assert!(claimers_with_tasks > 1, "only one claimer got tasks");
    let running = count(
        &store,
        "SELECT count(*) FROM scheduled_tasks WHERE status = 'running' AND attempts = 1",
    )
    .await;
    assert_eq!(running, i64::try_from(TASKS).unwrap());
}

#[tokio::test]
async fn finish_with_stale_lease_changes_nothing() {
    let (store, _db) = setup().await;
    let merchant = register(&store, "acct_1").await;
    insert_tasks(&store, &[due_task(merchant.id, "a")]).await;
    let task = store
        .claim_tasks(&claim_request("w", 1))
        .await
        .unwrap()
        .remove(0);
    let lease = task.lease.clone().unwrap();
    let stale = Lease {
        token: uuid::Uuid::new_v4(),
        ..lease.clone()
    };

    let mut tx = store.begin().await.unwrap();
    let finished = tx.finish_task(&stale, &TaskUpdate::Complete).await.unwrap();
    tx.commit().await.unwrap();

    assert!(!finished);
    assert_eq!(store.task(task.id).await.unwrap(), Some(task.clone()));

    let mut tx = store.begin().await.unwrap();
    assert!(tx.finish_task(&lease, &TaskUpdate::Complete).await.unwrap());
    assert!(
        !tx.finish_task(&lease, &TaskUpdate::Complete).await.unwrap(),
        "a finished task accepts no second finish"
    );
    tx.commit().await.unwrap();
    let done = store.task(task.id).await.unwrap().unwrap();
    assert_eq!(done.status, TaskStatus::Completed);
    assert_eq!(done.lease, None);
}

#[tokio::test]
async fn finish_reschedules_and_fails() {
    let (store, _db) = setup().await;
    let merchant = register(&store, "acct_1").await;
    insert_tasks(
        &store,
        &[due_task(merchant.id, "a"), due_task(merchant.id, "b")],
    )
    .await;
    let claimed = store.claim_tasks(&claim_request("w", 2)).await.unwrap();
    let run_at = Utc::now() + chrono::Duration::minutes(5);
    let reschedule = TaskUpdate::Reschedule {
        run_at,
        error: "timed out".to_owned(),
        refund_attempt: false,
    };
    let fail = TaskUpdate::Fail {
        error: "HTTP 401".to_owned(),
    };

    let mut tx = store.begin().await.unwrap();
    assert!(
        tx.finish_task(claimed[0].lease.as_ref().unwrap(), &reschedule)
            .await
            .unwrap()
    );
    assert!(
        tx.finish_task(claimed[1].lease.as_ref().unwrap(), &fail)
            .await
            .unwrap()
    );
    tx.commit().await.unwrap();

    let rescheduled = store.task(claimed[0].id).await.unwrap().unwrap();
    assert_eq!(rescheduled.status, TaskStatus::Pending);
    assert_eq!(rescheduled.last_error.as_deref(), Some("timed out"));
    assert_eq!(rescheduled.lease, None);
    assert!((rescheduled.run_at - run_at).num_milliseconds().abs() < 1);
    let failed = store.task(claimed[1].id).await.unwrap().unwrap();
    assert_eq!(failed.status, TaskStatus::Failed);
    assert_eq!(failed.last_error.as_deref(), Some("HTTP 401"));
    assert_eq!(failed.lease, None);
    assert_eq!(
        store
            .next_run_at(&[TaskKind::retry_payment()])
            .await
            .unwrap()
            .map(|at| at.timestamp()),
        Some(run_at.timestamp())
    );
}

#[tokio::test]
async fn expired_lease_is_handed_back() {
    let (store, _db) = setup().await;
    let merchant = register(&store, "acct_1").await;
    let mut last_try = due_task(merchant.id, "last-try");
    last_try.max_attempts = 1;
    let ids = insert_tasks(&store, &[due_task(merchant.id, "a"), last_try]).await;
    let mut short = claim_request("dead-worker", 10);
    short.lease_duration = Duration::ZERO;
    let first = store.claim_tasks(&short).await.unwrap();
    assert_eq!(first.len(), 2);
    tokio::time::sleep(Duration::from_millis(20)).await;

    let nothing = store
        .claim_tasks(&claim_request("live-worker", 10))
        .await
        .unwrap();
    assert!(
        nothing.is_empty(),
        "a claim takes no task of an expired lease"
    );
    let rescued = store.rescue_expired_tasks().await.unwrap();
    assert_eq!(rescued, 2);
    let second = store
        .claim_tasks(&claim_request("live-worker", 10))
        .await
        .unwrap();

    assert_eq!(second.len(), 1);
    assert_eq!(second[0].id, ids[0]);
    assert_eq!(second[0].attempts, 2);
    assert_eq!(second[0].lease.as_ref().unwrap().owner, "live-worker");
    let out_of_attempts = store.task(ids[1]).await.unwrap().unwrap();
    assert_eq!(out_of_attempts.status, TaskStatus::Failed);
    assert!(out_of_attempts.last_error.unwrap().contains("dead-worker"));

    let old_lease = first
        .iter()
        .find(|task| task.id == ids[0])
        .unwrap()
        .lease
        .clone();
    let mut tx = store.begin().await.unwrap();
    let finished = tx
        .finish_task(&old_lease.unwrap(), &TaskUpdate::Complete)
        .await
        .unwrap();
    assert!(!finished, "the dead worker's lease no longer writes");
}

#[tokio::test]
async fn cancel_pending_tasks_of_one_invoice() {
    let (store, _db) = setup().await;
    let merchant = register(&store, "acct_1").await;
    let mut other_invoice = due_task(merchant.id, "other");
    other_invoice.invoice_id = Some(invoice("in_other"));
    let mut other_kind = due_task(merchant.id, "email");
    other_kind.kind = TaskKind::new("send_email");
    let mut later = due_task(merchant.id, "later");
    later.run_at = Utc::now() + chrono::Duration::days(1);
    let ids = insert_tasks(
        &store,
        &[due_task(merchant.id, "a"), later, other_invoice, other_kind],
    )
    .await;

    let mut tx = store.begin().await.unwrap();
    let cancelled = tx
        .cancel_pending_tasks(merchant.id, &invoice("in_test"))
        .await
        .unwrap();
    tx.commit().await.unwrap();

    assert_eq!(cancelled, 2);
    let statuses: Vec<TaskStatus> = {
        let mut statuses = Vec::new();
        for id in &ids {
            statuses.push(store.task(*id).await.unwrap().unwrap().status);
        }
        statuses
    };
    assert_eq!(
        statuses,
        [
            TaskStatus::Cancelled,
            TaskStatus::Cancelled,
            TaskStatus::Pending,
            TaskStatus::Pending
        ]
    );
}

#[tokio::test]
async fn list_tasks_pages_newest_first() {
    let (store, _db) = setup().await;
    let first = register(&store, "acct_1").await;
    let second = register(&store, "acct_2").await;
    let tasks: Vec<NewTask> = (0..5)
        .map(|n| {
            due_task(
                if n % 2 == 0 { first.id } else { second.id },
                &format!("t{n}"),
            )
        })
        .collect();
    let ids = insert_tasks(&store, &tasks).await;
    store.claim_tasks(&claim_request("w", 1)).await.unwrap();

    let page = |limit, before| TaskFilter {
        limit: Some(limit),
        before,
        ..TaskFilter::default()
    };
    let ids_of = |tasks: Vec<citadel_core::task::Task>| -> Vec<TaskId> {
        tasks.into_iter().map(|task| task.id).collect()
    };

    let first_page = ids_of(store.list_tasks(&page(2, None)).await.unwrap());
    assert_eq!(first_page, [ids[4], ids[3]]);
    let second_page = ids_of(store.list_tasks(&page(2, Some(ids[3]))).await.unwrap());
    assert_eq!(second_page, [ids[2], ids[1]]);
    let of_first = TaskFilter {
        merchant_id: Some(first.id),
        ..TaskFilter::default()
    };
    let of_first = ids_of(store.list_tasks(&of_first).await.unwrap());
    assert_eq!(of_first, [ids[4], ids[2], ids[0]]);
    let running = TaskFilter {
        status: Some(TaskStatus::Running),
        ..TaskFilter::default()
    };
    assert_eq!(ids_of(store.list_tasks(&running).await.unwrap()), [ids[0]]);

    let counts = store.task_counts().await.unwrap();
    assert_eq!(counts.pending, 4);
    assert_eq!(counts.running, 1);
    assert_eq!(counts.completed, 0);
}

#[tokio::test]
async fn claim_plan_locks_rows_from_pending_index() {
    let (store, _db) = setup().await;
    let merchant = register(&store, "acct_1").await;
    sqlx::query(
        "INSERT INTO scheduled_tasks (merchant_id, kind, status, run_at, max_attempts)
         SELECT $1, 'retry_payment', 'completed', now() - n * interval '1 second', 5
         FROM generate_series(1, 20000) AS n",
    )
    .bind(merchant.id.get())
    .execute(store.pool())
    .await
    .unwrap();
    let tasks: Vec<NewTask> = (0..20)
        .map(|n| due_task(merchant.id, &format!("t{n}")))
        .collect();
    insert_tasks(&store, &tasks).await;
    sqlx::query("ANALYZE scheduled_tasks")
        .execute(store.pool())
        .await
        .unwrap();

    let plan = store.explain_claim(&claim_request("w", 10)).await.unwrap();

    assert!(plan.contains("LockRows"), "{plan}");
    assert!(plan.contains("scheduled_tasks_pending_merchant"), "{plan}");
    assert!(!plan.contains("Seq Scan on scheduled_tasks"), "{plan}");
    assert_eq!(
        count(
            &store,
            "SELECT count(*) FROM scheduled_tasks WHERE status = 'running'"
        )
        .await,
        0
    );
}

// ---------------------------------------------------------------------------
// Events, recoveries, metrics and activity
// ---------------------------------------------------------------------------

#[tokio::test]
async fn insert_event_twice_records_once() {
    let (store, _db) = setup().await;
    let event = EventRecord::from(&payment_failed("evt_1", "acct_1", "in_1"));
    let mut platform_event = event.clone();
    platform_event.account = None;

    let mut tx = store.begin().await.unwrap();
    assert!(tx.insert_event(&event).await.unwrap());
    assert!(!tx.insert_event(&event).await.unwrap());
    assert!(
        tx.insert_event(&platform_event).await.unwrap(),
        "another account"
    );
    tx.commit().await.unwrap();

    let accounts: Vec<String> = sqlx::query_scalar(
        "SELECT account_id FROM processed_events WHERE event_id = 'evt_1' ORDER BY account_id",
    )
    .fetch_all(store.pool())
    .await
    .unwrap();
    assert_eq!(accounts, ["", "acct_1"]);
}

#[tokio::test]
async fn dropped_transaction_rolls_back() {
    let (store, _db) = setup().await;
    let event = EventRecord::from(&payment_failed("evt_1", "acct_1", "in_1"));

    let mut tx = store.begin().await.unwrap();
    assert!(tx.insert_event(&event).await.unwrap());
    drop(tx);

    let mut tx = store.begin().await.unwrap();
    assert!(
        tx.insert_event(&event).await.unwrap(),
        "the first insert was rolled back"
    );
}

#[tokio::test]
async fn recovery_round_trips() {
    let (store, _db) = setup().await;
    let merchant = register(&store, "acct_1").await;
    let now = Utc::now();
    let mut recovery = Recovery::new(merchant.id, invoice("in_1"), now, now);

    let mut tx = store.begin().await.unwrap();
    assert!(tx.insert_recovery(&recovery).await.unwrap());
    assert!(!tx.insert_recovery(&recovery).await.unwrap());
    let locked = tx
        .lock_recovery(merchant.id, &invoice("in_1"))
        .await
        .unwrap();
    assert_eq!(
        locked.map(|found| found.status),
        Some(RecoveryStatus::AwaitingInvoice)
    );
    recovery.status = RecoveryStatus::Open;
    recovery.customer_id = Some(CustomerId::parse("cus_1").unwrap());
    recovery.subscription_id = Some(SubscriptionId::parse("sub_1").unwrap());
    recovery.amount_due = Some(usd(2500));
    recovery.amount_recovered = Some(usd(2500));
    recovery.retries_made = 2;
    recovery.last_decline = Some(Decline::with_decline_code("insufficient_funds"));
    recovery.close(RecoveryStatus::Recovered, "paid by a retry", now);
    tx.update_recovery(&recovery).await.unwrap();
    tx.commit().await.unwrap();

    let stored = store
        .recovery(merchant.id, &invoice("in_1"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.status, recovery.status);
    assert_eq!(stored.amount_due, recovery.amount_due);
    assert_eq!(stored.amount_recovered, recovery.amount_recovered);
    assert_eq!(stored.last_decline, recovery.last_decline);
    assert_eq!(stored.customer_id, recovery.customer_id);
    assert_eq!(stored.subscription_id, recovery.subscription_id);
    assert_eq!(stored.retries_made, 2);
    assert_eq!(stored.close_reason.as_deref(), Some("paid by a retry"));
    assert_eq!(
        store
            .list_recoveries(Some(merchant.id))
            .await
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        store
            .list_recoveries(Some(MerchantId::new(999)))
            .await
            .unwrap()
            .len(),
        0
    );
}

#[tokio::test]
async fn open_recoveries_of_subscription_are_locked() {
    let (store, _db) = setup().await;
    let merchant = register(&store, "acct_1").await;
    let now = Utc::now();
    let subscription = SubscriptionId::parse("sub_1").unwrap();
    let mut tx = store.begin().await.unwrap();
    for (invoice_id, status) in [
        ("in_1", RecoveryStatus::Open),
        ("in_2", RecoveryStatus::AwaitingInvoice),
        ("in_3", RecoveryStatus::Lost),
    ] {
        let mut recovery = Recovery::new(merchant.id, invoice(invoice_id), now, now);
        recovery.status = status;
        recovery.subscription_id = Some(subscription.clone());
        tx.insert_recovery(&recovery).await.unwrap();
    }
    tx.commit().await.unwrap();

    let mut tx = store.begin().await.unwrap();
    let open = tx
        .lock_open_recoveries_of_subscription(merchant.id, &subscription)
        .await
        .unwrap();

    let invoices: Vec<&str> = open
        .iter()
        .map(|recovery| recovery.invoice_id.as_str())
        .collect();
    assert_eq!(invoices, ["in_1", "in_2"]);
}

#[tokio::test]
async fn metrics_add_up() {
    let (store, _db) = setup().await;
    let merchant = register(&store, "acct_1").await;
    let day = Utc::now().date_naive();
    let usd = Currency::parse("usd").unwrap();
    let mut failed = MetricsDelta::zero(merchant.id, day, usd);
    failed.failed_payments = 1;
    let mut recovered = MetricsDelta::zero(merchant.id, day, usd);
    recovered.payments_recovered = 1;
    recovered.amount_recovered = 2500;
    let mut euro = MetricsDelta::zero(merchant.id, day, Currency::parse("eur").unwrap());
    euro.payments_lost = 1;
    euro.amount_lost = 900;

    let mut tx = store.begin().await.unwrap();
    for delta in [&failed, &failed, &recovered, &euro] {
        tx.add_metrics(delta).await.unwrap();
    }
    tx.commit().await.unwrap();

    let metrics = store.daily_metrics(Some(merchant.id)).await.unwrap();
    assert_eq!(metrics.len(), 2);
    let dollars = metrics.iter().find(|row| row.currency == usd).unwrap();
    assert_eq!(dollars.failed_payments, 2);
    assert_eq!(dollars.payments_recovered, 1);
    assert_eq!(dollars.amount_recovered, 2500);
    let euros = metrics.iter().find(|row| row.currency != usd).unwrap();
    assert_eq!(euros.amount_lost, 900);
}

#[tokio::test]
async fn activity_pages_newest_first() {
    let (store, _db) = setup().await;
    let first = register(&store, "acct_1").await;
    let second = register(&store, "acct_2").await;
    let mut tx = store.begin().await.unwrap();
    for n in 0..5 {
        let merchant = if n == 4 { second.id } else { first.id };
        let entry = NewActivity::new(merchant, ActivityKind::RetryScheduled, format!("entry {n}"))
            .invoice(&invoice("in_1"))
            .event(&EventId::parse("evt_1").unwrap())
            .task(TaskId::new(7))
            .details(json!({"n": n}));
        tx.insert_activity(&entry).await.unwrap();
    }
    tx.insert_activity(&NewActivity::new(
        first.id,
        ActivityKind::TaskFailed,
        "failed",
    ))
    .await
    .unwrap();
    tx.commit().await.unwrap();

    let of_first = ActivityFilter {
        merchant_id: Some(first.id),
        kind: Some(ActivityKind::RetryScheduled),
        limit: Some(2),
        before: None,
    };
    let page = store.list_activity(&of_first).await.unwrap();
    let messages: Vec<&str> = page.iter().map(|row| row.entry.message.as_str()).collect();
    assert_eq!(messages, ["entry 3", "entry 2"]);
    assert_eq!(page[0].entry.details, json!({"n": 3}));
    assert_eq!(page[0].entry.task_id, Some(TaskId::new(7)));
    let next = ActivityFilter {
        before: Some(page[1].id),
        limit: Some(10),
        ..of_first
    };
    let rest = store.list_activity(&next).await.unwrap();
    let messages: Vec<&str> = rest.iter().map(|row| row.entry.message.as_str()).collect();
    assert_eq!(messages, ["entry 1", "entry 0"]);
    let all = store
        .list_activity(&ActivityFilter::default())
        .await
        .unwrap();
    assert_eq!(all.len(), 6);
    assert_eq!(all[0].entry.details, serde_json::Value::Null);
}

// ---------------------------------------------------------------------------
// The engine on PostgreSQL
// ---------------------------------------------------------------------------

#[tokio::test]
async fn ingest_twice_applies_once() {
    let (store, _db) = setup().await;
    let merchant = register(&store, "acct_1").await;
    let engine = Engine::new(store.clone(), UnusedGateway);
    let event = payment_failed("evt_1", "acct_1", "in_1");

    let first = engine.ingest(&event).await.unwrap();
    let second = engine.ingest(&event).await.unwrap();

    assert_eq!(
        first,
        IntakeOutcome::Applied {
            merchant_id: merchant.id
        }
    );
    assert_eq!(second, IntakeOutcome::Duplicate);
    assert_eq!(
        count(&store, "SELECT count(*) FROM processed_events").await,
        1
    );
    assert_eq!(
        count(
            &store,
            "SELECT count(*) FROM scheduled_tasks WHERE kind = 'retry_payment'"
        )
        .await,
        1
    );
}

#[tokio::test]
async fn event_with_nul_character_is_recorded() {
    let (store, _db) = setup().await;
    register(&store, "acct_1").await;
    let engine = Engine::new(store.clone(), UnusedGateway);
    let mut event = payment_failed("evt_nul", "acct_1", "in_1");
    event.payload["data"]["object"]["description"] = "bad\u{0}text".into();

    let outcome = engine.ingest(&event).await;

    assert!(outcome.is_ok(), "{outcome:?}");
    let stored: String =
        sqlx::query_scalar("SELECT payload #>> '{data,object,description}' FROM processed_events")
            .fetch_one(store.pool())
            .await
            .unwrap();
    assert_eq!(stored, "bad\u{fffd}text");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_ingest_of_same_event_applies_once() {
    const EVENTS: usize = 20;
    let (store, db) = setup().await;
    register(&store, "acct_1").await;
    let engines = [
        Arc::new(Engine::new(
            PgStore::connect(db.url()).await.unwrap(),
            UnusedGateway,
        )),
        Arc::new(Engine::new(
            PgStore::connect(db.url()).await.unwrap(),
            UnusedGateway,
        )),
    ];

    for n in 0..EVENTS {
        let event = payment_failed(&format!("evt_{n}"), "acct_1", &format!("in_{n}"));
        let barrier = Arc::new(Barrier::new(engines.len()));
        let runs: Vec<_> = engines
            .iter()
            .map(|engine| {
                let (engine, event, barrier) =
                    (Arc::clone(engine), event.clone(), Arc::clone(&barrier));
                tokio::spawn(async move {
                    barrier.wait().await;
                    engine.ingest(&event).await.unwrap()
                })
            })
            .collect();
        let mut applied = 0;
        for run in runs {
            match run.await.unwrap() {
                IntakeOutcome::Applied { .. } => applied += 1,
                IntakeOutcome::Duplicate => {}
                other => panic!("unexpected outcome {other:?}"),
            }
        }
        assert_eq!(applied, 1, "event {n} applied {applied} times");
    }

    let expected = i64::try_from(EVENTS).unwrap();
    assert_eq!(
        count(&store, "SELECT count(*) FROM processed_events").await,
        expected
    );
    assert_eq!(
        count(
            &store,
            "SELECT count(*) FROM scheduled_tasks WHERE kind = 'retry_payment'"
        )
        .await,
        expected
    );
    assert_eq!(
        count(&store, "SELECT count(*) FROM invoice_recoveries").await,
        expected
    );
    let failed_payments = count(
        &store,
        "SELECT coalesce(sum(failed_payments), 0)::bigint FROM daily_metrics",
    )
    .await;
    assert_eq!(failed_payments, expected);
}

#[tokio::test]
async fn ingest_for_unknown_account_applies_after_registration() {
    let (store, _db) = setup().await;
    let engine = Engine::new(store.clone(), UnusedGateway);
    let event = payment_failed("evt_1", "acct_late", "in_1");

    let outcome = engine.ingest(&event).await.unwrap();

    assert_eq!(
        outcome,
        IntakeOutcome::UnknownAccount {
            account: Some(account("acct_late"))
        }
    );
    assert_eq!(
        count(&store, "SELECT count(*) FROM processed_events").await,
        0
    );
    assert_eq!(
        count(
            &store,
            "SELECT count(*) FROM scheduled_tasks WHERE kind = 'retry_payment'"
        )
        .await,
        0
    );

    let merchant = register(&store, "acct_late").await;
    let replayed = engine.ingest(&event).await.unwrap();

    assert_eq!(
        replayed,
        IntakeOutcome::Applied {
            merchant_id: merchant.id
        }
    );
    assert_eq!(
        count(
            &store,
            "SELECT count(*) FROM scheduled_tasks WHERE kind = 'retry_payment'"
        )
        .await,
        1
    );
}

#[tokio::test]
async fn worker_recovers_payment_after_decline() {
    let (store, _db) = setup().await;
    let merchant = register_with_delays(&store, "acct_1", &[0, 0]).await;
    let gateway = ScriptedGateway::new([
        PaymentOutcome::Declined(Decline::with_decline_code("insufficient_funds")),
        PaymentOutcome::Paid {
            amount_paid: usd(2500),
        },
    ]);
    let engine = Arc::new(Engine::new(store.clone(), gateway));
    let worker = Worker::new(Arc::clone(&engine), WorkerConfig::default());
    let intake = engine
        .ingest(&payment_failed("evt_1", "acct_1", "in_1"))
        .await
        .unwrap();
    assert_eq!(
        intake,
        IntakeOutcome::Applied {
            merchant_id: merchant.id
        }
    );

    let declined = worker.run_batch().await.unwrap();
    let paid = worker.run_batch().await.unwrap();
    let notice = worker.run_batch().await.unwrap();
    let idle = worker.run_batch().await.unwrap();

    assert_eq!(declined.claimed, 2, "retry 1 and the payment_failed notice");
    assert_eq!(declined.retried, 1);
    assert_eq!(paid.claimed, 1);
    assert_eq!(paid.recovered, 1);
    assert_eq!(notice.claimed, 1, "the payment_recovered notice");
    assert_eq!(idle.claimed, 0);

    let tasks = store.list_tasks(&TaskFilter::default()).await.unwrap();
    assert_eq!(tasks.len(), 4);
    assert!(
        tasks
            .iter()
            .all(|task| task.status == TaskStatus::Completed),
        "{tasks:?}"
    );
    assert!(tasks.iter().all(|task| task.lease.is_none()));
    let requests = engine.gateway().requests();
    let keys: Vec<&str> = requests
        .iter()
        .map(|request| request.idempotency_key.as_str())
        .collect();
    assert_eq!(keys.len(), 2);
    assert_ne!(keys[0], keys[1], "each retry has its own idempotency key");
    assert_eq!(requests[0].account, Some(account("acct_1")));

    let recovery = store
        .recovery(merchant.id, &invoice("in_1"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(recovery.status, RecoveryStatus::Recovered);
    assert_eq!(recovery.amount_recovered, Some(usd(2500)));
    assert_eq!(recovery.retries_made, 2);
    assert!(recovery.closed_at.is_some());

    let metrics = store.daily_metrics(Some(merchant.id)).await.unwrap();
    assert_eq!(metrics.len(), 1);
    assert_eq!(metrics[0].failed_payments, 1);
    assert_eq!(metrics[0].retries_attempted, 2);
    assert_eq!(metrics[0].payments_recovered, 1);
    assert_eq!(metrics[0].amount_recovered, 2500);
    assert_eq!(metrics[0].payments_lost, 0);

    let activity = store
        .list_activity(&ActivityFilter::default())
        .await
        .unwrap();
    let kinds: Vec<ActivityKind> = activity.iter().rev().map(|row| row.entry.kind).collect();
    // A notice task is due with the retry, and workers run the two in
    // either order, so notices are counted apart from the retry's steps.
    let notices = kinds
        .iter()
        .filter(|kind| **kind == ActivityKind::NoticeSent)
        .count();
    assert_eq!(notices, 2, "{kinds:?}");
    let steps: Vec<ActivityKind> = kinds
        .into_iter()
        .filter(|kind| *kind != ActivityKind::NoticeSent)
        .collect();
    assert_eq!(
        steps,
        [
            ActivityKind::RecoveryOpened,
            ActivityKind::RetryScheduled,
            ActivityKind::RetryDeclined,
            ActivityKind::RetryScheduled,
            ActivityKind::PaymentRecovered,
        ]
    );
    assert!(
        activity
            .iter()
            .all(|row| row.entry.merchant_id == merchant.id)
    );
}

#[tokio::test]
async fn worker_skips_task_of_settled_invoice() {
    let (store, _db) = setup().await;
    let merchant = register_with_delays(&store, "acct_1", &[3600]).await;
    let engine = Arc::new(Engine::new(store.clone(), UnusedGateway));
    engine
        .ingest(&payment_failed("evt_1", "acct_1", "in_1"))
        .await
        .unwrap();
    let mut paid = payment_failed("evt_2", "acct_1", "in_1");
    paid.event_type = "invoice.paid".to_owned();
    let EventKind::InvoicePaymentFailed(mut snapshot) = paid.kind else {
        unreachable!("payment_failed builds an invoice.payment_failed event");
    };
    snapshot.amount_paid = usd(2500);
    paid.kind = EventKind::InvoiceSettled {
        invoice: snapshot,
        settlement: Settlement::Paid,
    };

    let outcome = engine.ingest(&paid).await.unwrap();

    assert_eq!(
        outcome,
        IntakeOutcome::Applied {
            merchant_id: merchant.id
        }
    );
    let retries = retry_tasks(&store).await;
    assert_eq!(retries.len(), 1);
    assert_eq!(retries[0].status, TaskStatus::Cancelled);
    let recovery = store
        .recovery(merchant.id, &invoice("in_1"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(recovery.status, RecoveryStatus::Recovered);
    let worker = Worker::new(engine, WorkerConfig::default());
    let report = worker.run_batch().await.unwrap();
    assert_eq!(
        report.claimed, 2,
        "only the payment_failed and payment_recovered notices run"
    );
    assert_eq!(report.recovered, 0);
}

/// Checks that timestamps survive the round trip at microsecond precision,
/// PostgreSQL's resolution.
#[tokio::test]
async fn timestamps_keep_microseconds() {
    let (store, _db) = setup().await;
    let merchant = register(&store, "acct_1").await;
    let run_at: DateTime<Utc> = "2030-01-02T03:04:05.123456Z".parse().unwrap();
    let mut task = due_task(merchant.id, "a");
    task.run_at = run_at;

    let id = insert_tasks(&store, &[task]).await[0];

    assert_eq!(store.task(id).await.unwrap().unwrap().run_at, run_at);
    assert_eq!(
        store
            .next_run_at(&[TaskKind::retry_payment()])
            .await
            .unwrap(),
        Some(run_at)
    );
}

// ---------------------------------------------------------------------------
// The ephemeral cluster
// ---------------------------------------------------------------------------

#[tokio::test]
async fn ephemeral_cluster_is_removed_on_drop() {
    let cluster = EphemeralPostgres::start().unwrap();
    let data_dir = cluster.data_dir().to_path_buf();
    let port = cluster.port();
    let url = cluster.create_database("demo").await.unwrap();
    let store = PgStore::connect(&url).await.unwrap();
    store.migrate().await.unwrap();
    assert!(store.list_merchants().await.unwrap().is_empty());
    store.pool().close().await;

    let err = cluster.create_database("Bad-Name").await.unwrap_err();
    assert!(
        matches!(err, EphemeralError::InvalidDatabaseName { .. }),
        "{err:?}"
    );
    assert!(data_dir.join("PG_VERSION").is_file());
    drop(cluster);

    assert!(!data_dir.exists(), "{} still exists", data_dir.display());
    let connected = std::net::TcpStream::connect(("127.0.0.1", port));
    assert!(connected.is_err(), "the server still listens on {port}");
}

#[tokio::test]
async fn next_run_at_ignores_other_kinds() {
    let (store, _db) = setup().await;
    let merchant = register(&store, "acct_1").await;
    let mut email = due_task(merchant.id, "email");
    email.kind = TaskKind::new("send_email");
    insert_tasks(&store, &[email]).await;

    let retry_kinds = [TaskKind::retry_payment()];
    assert_eq!(store.next_run_at(&retry_kinds).await.unwrap(), None);

    let email_kinds = [TaskKind::new("send_email")];
    assert!(store.next_run_at(&email_kinds).await.unwrap().is_some());
}

/// A gateway that, while its pay call is in flight, has a stop event
/// ingested by another engine on the same database, then returns `outcome`.
#[derive(Debug)]
struct StopEventDuringPay {
    store: PgStore,
    stop_event: Event,
    outcome: PaymentOutcome,
}

#[async_trait]
impl PaymentGateway for StopEventDuringPay {
    async fn pay_invoice(&self, _request: &PayInvoice) -> PaymentOutcome {
        let webhook = Engine::new(self.store.clone(), UnusedGateway);
        webhook.ingest(&self.stop_event).await.unwrap();
        self.outcome.clone()
    }

    async fn run_final_action(&self, request: &FinalActionRequest) -> ActionOutcome {
        panic!("no final action is expected, but {:?} ran", request.action);
    }
}

#[tokio::test]
async fn paid_retry_after_stop_event_counts_once() {
    let (store, _db) = setup().await;
    let merchant = register_with_delays(&store, "acct_1", &[0]).await;
    let mut voided = payment_failed("evt_2", "acct_1", "in_1");
    voided.event_type = "invoice.voided".to_owned();
    let EventKind::InvoicePaymentFailed(snapshot) = voided.kind else {
        unreachable!("payment_failed builds an invoice.payment_failed event");
    };
    voided.kind = EventKind::InvoiceSettled {
        invoice: snapshot,
        settlement: Settlement::Voided,
    };
    let gateway = StopEventDuringPay {
        store: store.clone(),
        stop_event: voided,
        outcome: PaymentOutcome::Paid {
            amount_paid: usd(2500),
        },
    };
    let engine = Arc::new(Engine::new(store.clone(), gateway));
    engine
        .ingest(&payment_failed("evt_1", "acct_1", "in_1"))
        .await
        .unwrap();

    let report = Worker::new(engine, WorkerConfig::default())
        .run_batch()
        .await
        .unwrap();

    assert_eq!(report.recovered, 1);
    let recovery = store
        .recovery(merchant.id, &invoice("in_1"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(recovery.status, RecoveryStatus::Recovered);
    let metrics = store.daily_metrics(Some(merchant.id)).await.unwrap();
    let recovered: i64 = metrics.iter().map(|day| day.payments_recovered).sum();
    let lost: i64 = metrics.iter().map(|day| day.payments_lost).sum();
    let amount_lost: i64 = metrics.iter().map(|day| day.amount_lost).sum();
    assert_eq!(recovered, 1);
    assert_eq!(lost, 0, "the loss counted by the stop event is taken back");
    assert_eq!(amount_lost, 0);
}

/// Turns a `payment_failed` test event into a settlement of the same invoice.
fn settlement(event_id: &str, account_id: &str, invoice_id: &str, settlement: Settlement) -> Event {
    let mut event = payment_failed(event_id, account_id, invoice_id);
    let EventKind::InvoicePaymentFailed(mut snapshot) = event.kind else {
        unreachable!("payment_failed builds an invoice.payment_failed event");
    };
    event.event_type = match settlement {
        Settlement::Paid => "invoice.paid",
        Settlement::Voided => "invoice.voided",
        _ => "invoice.marked_uncollectible",
    }
    .to_owned();
    if settlement == Settlement::Paid {
        snapshot.amount_paid = usd(2500);
    }
    event.kind = EventKind::InvoiceSettled {
        invoice: snapshot,
        settlement,
    };
    event
}

#[tokio::test]
async fn settlement_delivered_before_failure_wins() {
    for kind in [Settlement::Paid, Settlement::Voided] {
        let (store, _db) = setup().await;
        let merchant = register(&store, "acct_1").await;
        let engine = Engine::new(store.clone(), UnusedGateway);
        let mut failure = payment_failed("evt_1", "acct_1", "in_1");
        failure.created = Utc::now() - chrono::Duration::minutes(5);

        engine
            .ingest(&settlement("evt_2", "acct_1", "in_1", kind))
            .await
            .unwrap();
        let outcome = engine.ingest(&failure).await.unwrap();

        assert_eq!(
            outcome,
            IntakeOutcome::Applied {
                merchant_id: merchant.id
            },
            "{kind:?}"
        );
        let recovery = store.recovery(merchant.id, &invoice("in_1")).await.unwrap();
        assert!(recovery.is_none(), "{kind:?}: {recovery:?}");
        assert_eq!(
            count(
                &store,
                "SELECT count(*) FROM scheduled_tasks WHERE kind = 'retry_payment'"
            )
            .await,
            0,
            "{kind:?}"
        );
        let noted = count(
            &store,
            "SELECT count(*) FROM usage_logs WHERE kind = 'event_noted' AND message LIKE '%already settled%'",
        )
        .await;
        assert_eq!(noted, 1, "{kind:?}");
    }
}

#[tokio::test]
async fn concurrent_settlement_and_failure_leave_no_retry() {
    let (store, _db) = setup().await;
    register(&store, "acct_1").await;
    let first = Arc::new(Engine::new(store.clone(), UnusedGateway));
    let second = Arc::new(Engine::new(
        PgStore::connect(_db.url()).await.unwrap(),
        UnusedGateway,
    ));

    let mut races = Vec::new();
    for n in 0..20 {
        let invoice_id = format!("in_{n}");
        let failure = payment_failed(&format!("evt_f{n}"), "acct_1", &invoice_id);
        let paid = settlement(
            &format!("evt_p{n}"),
            "acct_1",
            &invoice_id,
            Settlement::Paid,
        );
        let (a, b) = (Arc::clone(&first), Arc::clone(&second));
        races.push(tokio::spawn(
            async move { a.ingest(&failure).await.unwrap() },
        ));
        races.push(tokio::spawn(async move { b.ingest(&paid).await.unwrap() }));
    }
    for race in races {
        race.await.unwrap();
    }

    assert_eq!(
        count(
            &store,
            "SELECT count(*) FROM scheduled_tasks WHERE status = 'pending' AND kind = 'retry_payment'"
        )
        .await,
        0,
        "whichever event came first, no retry of a paid invoice is left"
    );
    let open = count(
        &store,
        "SELECT count(*) FROM invoice_recoveries WHERE status IN ('open', 'awaiting_invoice')",
    )
    .await;
    assert_eq!(open, 0);
}

#[tokio::test]
async fn processing_payment_that_fails_gets_next_retry() {
    let (store, _db) = setup().await;
    let merchant = register_with_delays(&store, "acct_1", &[0, 0]).await;
    let gateway = ScriptedGateway::new([
        PaymentOutcome::Processing {
            message: "invoice is open".to_owned(),
        },
        PaymentOutcome::Paid {
            amount_paid: usd(2500),
        },
    ]);
    let engine = Arc::new(Engine::new(store.clone(), gateway));
    let worker = Worker::new(Arc::clone(&engine), WorkerConfig::default());
    engine
        .ingest(&payment_failed("evt_1", "acct_1", "in_1"))
        .await
        .unwrap();
    worker.run_batch().await.unwrap();

    let recovery = store
        .recovery(merchant.id, &invoice("in_1"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(recovery.status, RecoveryStatus::Open);
    assert_eq!(recovery.retries_made, 1);
    let pending_retries = "SELECT count(*) FROM scheduled_tasks \
                           WHERE status = 'pending' AND kind = 'retry_payment'";
    assert_eq!(count(&store, pending_retries).await, 0);

    engine
        .ingest(&payment_failed("evt_2", "acct_1", "in_1"))
        .await
        .unwrap();
    assert_eq!(count(&store, pending_retries).await, 1);
    worker.run_batch().await.unwrap();

    let recovery = store
        .recovery(merchant.id, &invoice("in_1"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(recovery.status, RecoveryStatus::Recovered);
    assert_eq!(recovery.retries_made, 2);
    let keys: Vec<_> = engine
        .gateway()
        .requests()
        .into_iter()
        .map(|request| request.idempotency_key)
        .collect();
    assert_eq!(keys.len(), 2);
    assert_ne!(
        keys[0], keys[1],
        "the retry after the failure uses a new key"
    );
}

#[tokio::test]
async fn repeated_failures_consume_no_retry() {
    let (store, _db) = setup().await;
    let merchant = register_with_delays(&store, "acct_1", &[3600, 3600]).await;
    let engine = Engine::new(store.clone(), UnusedGateway);

    for event_id in ["evt_1", "evt_2", "evt_3"] {
        engine
            .ingest(&payment_failed(event_id, "acct_1", "in_1"))
            .await
            .unwrap();
    }

    let pending = retry_tasks(&store)
        .await
        .into_iter()
        .filter(|task| task.status == TaskStatus::Pending)
        .count();
    assert_eq!(pending, 1, "one retry, whatever the number of failures");
    let recovery = store
        .recovery(merchant.id, &invoice("in_1"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(recovery.retries_made, 0);
    let failed: i64 = store
        .daily_metrics(Some(merchant.id))
        .await
        .unwrap()
        .iter()
        .map(|day| day.failed_payments)
        .sum();
    assert_eq!(failed, 1, "one failed invoice");
}

#[tokio::test]
async fn action_required_after_stop_event_counts_nothing_more() {
    for kind in [Settlement::Voided, Settlement::Paid] {
        let (store, _db) = setup().await;
        let merchant = register_with_delays(&store, "acct_1", &[0]).await;
        let gateway = StopEventDuringPay {
            store: store.clone(),
            stop_event: settlement("evt_2", "acct_1", "in_1", kind),
            outcome: PaymentOutcome::ActionRequired {
                message: "authentication_required".to_owned(),
            },
        };
        let engine = Arc::new(Engine::new(store.clone(), gateway));
        engine
            .ingest(&payment_failed("evt_1", "acct_1", "in_1"))
            .await
            .unwrap();

        Worker::new(engine, WorkerConfig::default())
            .run_batch()
            .await
            .unwrap();

        let recovery = store
            .recovery(merchant.id, &invoice("in_1"))
            .await
            .unwrap()
            .unwrap();
        let expected = match kind {
            Settlement::Paid => RecoveryStatus::Recovered,
            _ => RecoveryStatus::Lost,
        };
        assert_eq!(recovery.status, expected, "{kind:?}");
        let metrics = store.daily_metrics(Some(merchant.id)).await.unwrap();
        let lost: i64 = metrics.iter().map(|day| day.payments_lost).sum();
        let recovered: i64 = metrics.iter().map(|day| day.payments_recovered).sum();
        assert_eq!(lost + recovered, 1, "{kind:?}: one end per invoice");
    }
}

/// Builds a `charge.failed` that names the invoice and carries a decline.
fn charge_failed(event_id: &str, invoice_id: &str, decline_code: &str, minutes_ago: i64) -> Event {
    let mut event = payment_failed(event_id, "acct_1", invoice_id);
    event.event_type = "charge.failed".to_owned();
    event.created = Utc::now() - chrono::Duration::minutes(minutes_ago);
    event.kind = EventKind::PaymentDeclined {
        invoice_id: invoice(invoice_id),
        decline: Decline::with_decline_code(decline_code),
    };
    event
}

#[tokio::test]
async fn older_soft_decline_keeps_known_hard_decline() {
    let (store, _db) = setup().await;
    let merchant = register_with_delays(&store, "acct_1", &[0]).await;
    let engine = Engine::new(store.clone(), UnusedGateway);
    let mut failure = payment_failed("evt_3", "acct_1", "in_1");
    if let EventKind::InvoicePaymentFailed(snapshot) = &mut failure.kind {
        snapshot.decline = None;
    }

    engine
        .ingest(&charge_failed("evt_1", "in_1", "stolen_card", 1))
        .await
        .unwrap();
    engine
        .ingest(&charge_failed("evt_2", "in_1", "insufficient_funds", 5))
        .await
        .unwrap();
    engine.ingest(&failure).await.unwrap();

    let recovery = store
        .recovery(merchant.id, &invoice("in_1"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(recovery.status, RecoveryStatus::Lost);
    assert_eq!(recovery.last_decline.unwrap().reason(), "stolen_card");
    assert_eq!(
        count(
            &store,
            "SELECT count(*) FROM scheduled_tasks WHERE kind = 'retry_payment'"
        )
        .await,
        0
    );
}

/// Checks strings that fail to parse, which return at once; the redaction of
/// a valid URL's password is unit-tested beside `redact_url`.
#[tokio::test]
async fn connect_errors_hide_passwords() {
    for url in [
        "host=127.0.0.1 port=1 user=app password=Hunter2Secret dbname=citadel",
        "postgres://app:Hunter2/Secret@127.0.0.1:1/citadel",
        "postgres://app:Hunter2?Secret@127.0.0.1:1/citadel",
    ] {
        let err = PgStore::connect(url).await.unwrap_err();

        let shown = format!("{err} {err:?} {}", citadel_core::error_chain(&err));
        assert!(!shown.contains("Secret"), "{url}: {shown}");
    }
}

#[tokio::test]
async fn subscription_deleted_before_failure_wins() {
    let (store, _db) = setup().await;
    let merchant = register(&store, "acct_1").await;
    let engine = Engine::new(store.clone(), UnusedGateway);
    let mut deleted = payment_failed("evt_1", "acct_1", "in_1");
    deleted.event_type = "customer.subscription.deleted".to_owned();
    deleted.kind = EventKind::SubscriptionDeleted {
        subscription_id: SubscriptionId::parse("sub_1").unwrap(),
    };
    let mut failure = payment_failed("evt_2", "acct_1", "in_1");
    failure.created = Utc::now() - chrono::Duration::minutes(5);

    engine.ingest(&deleted).await.unwrap();
    engine.ingest(&failure).await.unwrap();

    let recovery = store.recovery(merchant.id, &invoice("in_1")).await.unwrap();
    assert!(recovery.is_none(), "{recovery:?}");
    assert_eq!(
        count(
            &store,
            "SELECT count(*) FROM scheduled_tasks WHERE kind = 'retry_payment'"
        )
        .await,
        0
    );
    let noted = count(
        &store,
        "SELECT count(*) FROM usage_logs WHERE message LIKE '%already deleted%'",
    )
    .await;
    assert_eq!(noted, 1);

    let other = payment_failed("evt_3", "acct_1", "in_2");
    let EventKind::InvoicePaymentFailed(mut snapshot) = other.kind.clone() else {
        unreachable!("payment_failed builds an invoice.payment_failed event");
    };
    snapshot.subscription_id = Some(SubscriptionId::parse("sub_2").unwrap());
    let other = Event {
        kind: EventKind::InvoicePaymentFailed(snapshot),
        ..other
    };
    engine.ingest(&other).await.unwrap();
    assert_eq!(
        count(
            &store,
            "SELECT count(*) FROM scheduled_tasks WHERE kind = 'retry_payment'"
        )
        .await,
        1,
        "another subscription's invoice still gets its retry"
    );
}

#[tokio::test]
async fn processing_payment_failing_in_flight_gets_next_retry() {
    let (store, _db) = setup().await;
    let merchant = register_with_delays(&store, "acct_1", &[0, 3600]).await;
    let gateway = StopEventDuringPay {
        store: store.clone(),
        stop_event: payment_failed("evt_2", "acct_1", "in_1"),
        outcome: PaymentOutcome::Processing {
            message: "invoice is open".to_owned(),
        },
    };
    let engine = Arc::new(Engine::new(store.clone(), gateway));
    engine
        .ingest(&payment_failed("evt_1", "acct_1", "in_1"))
        .await
        .unwrap();

    let report = Worker::new(engine, WorkerConfig::default())
        .run_batch()
        .await
        .unwrap();

    assert_eq!(report.retried, 1);
    let recovery = store
        .recovery(merchant.id, &invoice("in_1"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(recovery.status, RecoveryStatus::Open);
    assert_eq!(recovery.retries_made, 1);
    let pending = store
        .list_tasks(&TaskFilter {
            status: Some(TaskStatus::Pending),
            ..TaskFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(pending.len(), 1, "retry 2 is scheduled");
    assert_eq!(pending[0].retry_payment().unwrap().attempt, 2);
}

#[tokio::test]
async fn rate_limit_gives_back_the_attempt() {
    let (store, _db) = setup().await;
    register_with_delays(&store, "acct_1", &[0]).await;
    let gateway = ScriptedGateway::new([PaymentOutcome::RateLimited { retry_after: None }]);
    let engine = Arc::new(Engine::new(store.clone(), gateway));
    engine
        .ingest(&payment_failed("evt_1", "acct_1", "in_1"))
        .await
        .unwrap();

    let report = Worker::new(engine, WorkerConfig::default())
        .run_batch()
        .await
        .unwrap();

    assert_eq!(report.retried, 1);
    let tasks = retry_tasks(&store).await;
    assert_eq!(tasks.len(), 1);
    assert_eq!(tasks[0].status, TaskStatus::Pending);
    assert_eq!(
        tasks[0].attempts, 0,
        "a rate-limited run uses up no attempt"
    );
    assert!(tasks[0].run_at > Utc::now() + chrono::Duration::seconds(20));
    assert!(tasks[0].last_error.as_deref().unwrap().contains("429"));
}

#[tokio::test]
async fn late_decline_of_settled_invoice_opens_nothing() {
    let (store, _db) = setup().await;
    let merchant = register(&store, "acct_1").await;
    let engine = Engine::new(store.clone(), UnusedGateway);

    engine
        .ingest(&settlement("evt_1", "acct_1", "in_1", Settlement::Paid))
        .await
        .unwrap();
    engine
        .ingest(&charge_failed("evt_2", "in_1", "insufficient_funds", 5))
        .await
        .unwrap();

    let recovery = store.recovery(merchant.id, &invoice("in_1")).await.unwrap();
    assert!(recovery.is_none(), "{recovery:?}");
}
