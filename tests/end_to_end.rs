//! End-to-end tests: signed Stripe events in, a real PostgreSQL, the Stripe
//! stand-in responding, figures out.
//!
//! Each test gets a fresh database from `citadel_postgres::ephemeral` (a
//! throwaway cluster, or the server at `DATABASE_URL` when set).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use citadel::core::event::{Event, EventKind};
use citadel::core::ids::InvoiceId;
use citadel::core::merchant::NewMerchant;
use citadel::core::policy::RecoveryPolicy;
use citadel::core::recovery::RecoveryStatus;
use citadel::core::store::Store;
use citadel::core::{Engine, IntakeOutcome, Secret, Worker, WorkerConfig};
use citadel::postgres::PgStore;
use citadel::postgres::ephemeral::fresh_store;
use citadel::stripe::gateway::StripeGateway;
use citadel::stripe::stand_in::{Scripted, StandIn};
use citadel::stripe::webhook::{WebhookVerifier, sign};

#[path = "end_to_end/recovery_policy.rs"]
mod recovery_policy;
#[path = "end_to_end/scenarios.rs"]
mod scenarios;

const SOFT: &str = "in_1CitadelSoftDecline";
const HARD: &str = "in_1CitadelHardDecline";
const EXHAUSTED: &str = "in_1CitadelAlwaysDeclines";
const VOIDED: &str = "in_1CitadelVoidedLater";
const PLATFORM: &str = "in_1CitadelPlatformOwn";
const CANCELED: &str = "in_1CitadelCanceledLater";

fn sample_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/data/events")
}

fn invoice(id: &str) -> InvoiceId {
    InvoiceId::parse(id).unwrap()
}

/// Signs and verifies every sample file, as a webhook handler receives them.
fn signed_sample_events(secret: &Secret) -> Vec<Event> {
    let verifier = WebhookVerifier::new([secret.clone()]).unwrap();
    let mut paths: Vec<_> = std::fs::read_dir(sample_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    paths.sort();
    paths
        .iter()
        .map(|path| {
            let body = std::fs::read(path).unwrap();
            let header = sign(&body, secret, chrono::Utc::now().timestamp());
            verifier.verify_and_parse(&body, &header).unwrap()
        })
        .collect()
}

struct Setup {
    engine: Arc<Engine<PgStore, StripeGateway>>,
    stand_in: StandIn,
    _database: citadel::postgres::ephemeral::TestDatabase,
}

async fn setup(events: &[Event]) -> Setup {
    let (store, database) = fresh_store().await.unwrap();
    let stand_in = StandIn::start().await.unwrap();
    stand_in.script(
        &invoice(SOFT),
        [Scripted::insufficient_funds(), Scripted::Pay],
    );
    stand_in.script(&invoice(HARD), [Scripted::stolen_card()]);
    stand_in.script(&invoice(EXHAUSTED), [Scripted::insufficient_funds()]);
    stand_in.script(&invoice(PLATFORM), [Scripted::ServerError, Scripted::Pay]);

    for event in events {
        if let EventKind::InvoicePaymentFailed(invoice) = &event.kind {
            stand_in.set_invoice(
                &invoice.id,
                invoice.amount_due.minor_units,
                invoice.amount_due.currency,
            );
        }
    }

    let policy = RecoveryPolicy::with_delays(vec![Duration::ZERO, Duration::ZERO, Duration::ZERO]);
    for event in events {
        if store
            .merchant_by_account(event.account.as_ref())
            .await
            .unwrap()
            .is_none()
        {
            let mut merchant = NewMerchant::new("test merchant", event.account.clone());
            merchant.policy = policy.clone();
            store.create_merchant(&merchant).await.unwrap();
        }
    }

    let gateway = StripeGateway::builder(Secret::new("sk_test_end_to_end"))
        .base_url(stand_in.url())
        .build()
        .unwrap();
    Setup {
        engine: Arc::new(Engine::new(store, gateway)),
        stand_in,
        _database: database,
    }
}

async fn drain(engine: &Arc<Engine<PgStore, StripeGateway>>) {
    let config = WorkerConfig {
        poll_interval: Duration::from_millis(50),
        ..WorkerConfig::default()
    };
    let workers: Vec<_> = (0..2)
        .map(|_| {
            let worker = Worker::new(Arc::clone(engine), config.clone());
            tokio::spawn(async move { worker.run_until_idle().await })
        })
        .collect();
    for worker in workers {
        worker.await.unwrap().unwrap();
    }
}

#[tokio::test]
async fn sample_events_recover_and_lose_as_scripted() {
    let secret = Secret::new("whsec_end_to_end");
    let events = signed_sample_events(&secret);
    let setup = setup(&events).await;

    let mut outcomes = Vec::new();
    for event in &events {
        outcomes.push(setup.engine.ingest(event).await.unwrap());
    }
    let duplicates = outcomes
        .iter()
        .filter(|o| **o == IntakeOutcome::Duplicate)
        .count();
    assert_eq!(duplicates, 1, "{outcomes:?}");
    let ignored = outcomes
        .iter()
        .filter(|o| matches!(o, IntakeOutcome::Ignored { .. }))
        .count();
    assert_eq!(ignored, 1, "{outcomes:?}");

    drain(&setup.engine).await;

    let store = setup.engine.store();
    let recoveries: BTreeMap<String, _> = store
        .list_recoveries(None)
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.invoice_id.to_string(), r))
        .collect();
    assert_eq!(recoveries[SOFT].status, RecoveryStatus::Recovered);
    assert_eq!(recoveries[SOFT].retries_made, 2);
    assert_eq!(recoveries[HARD].status, RecoveryStatus::Lost);
    assert_eq!(recoveries[HARD].retries_made, 0);
    assert_eq!(recoveries[EXHAUSTED].status, RecoveryStatus::Lost);
    assert_eq!(recoveries[EXHAUSTED].retries_made, 3);
    assert_eq!(recoveries[VOIDED].status, RecoveryStatus::Lost);
    assert_eq!(recoveries[VOIDED].retries_made, 0);
    assert_eq!(recoveries[PLATFORM].status, RecoveryStatus::Recovered);
    assert_eq!(recoveries[PLATFORM].retries_made, 1);
    assert_eq!(recoveries[CANCELED].status, RecoveryStatus::Lost);
    assert_eq!(recoveries[CANCELED].retries_made, 0);

    // Exactly one charge per recovered invoice, none for the others.
    assert_eq!(setup.stand_in.charges(&invoice(SOFT)), 1);
    assert_eq!(setup.stand_in.charges(&invoice(PLATFORM)), 1);
    for unpaid in [HARD, EXHAUSTED, VOIDED, CANCELED] {
        assert_eq!(setup.stand_in.charges(&invoice(unpaid)), 0, "{unpaid}");
    }
    let hard_requests = setup
        .stand_in
        .requests()
        .iter()
        .filter(|r| r.path.contains(HARD))
        .count();
    assert_eq!(hard_requests, 0, "the hard decline must never be retried");

    let metrics = store.daily_metrics(None).await.unwrap();
    let recovered: i64 = metrics.iter().map(|m| m.payments_recovered).sum();
    let amount: i64 = metrics.iter().map(|m| m.amount_recovered).sum();
    let lost: i64 = metrics.iter().map(|m| m.payments_lost).sum();
    let failed: i64 = metrics.iter().map(|m| m.failed_payments).sum();
    assert_eq!(recovered, 2);
    assert_eq!(amount, 2500 + 990);
    assert_eq!(lost, 4);
    assert_eq!(failed, 6);

    let counts = store.task_counts().await.unwrap();
    assert_eq!(counts.pending, 0);
    assert_eq!(counts.running, 0);
    assert_eq!(counts.failed, 0);
}

#[tokio::test]
async fn platform_retry_after_server_error_reuses_its_key() {
    let secret = Secret::new("whsec_end_to_end");
    let events = signed_sample_events(&secret);
    let setup = setup(&events).await;
    for event in &events {
        setup.engine.ingest(event).await.unwrap();
    }
    drain(&setup.engine).await;

    let requests: Vec<_> = setup
        .stand_in
        .requests()
        .into_iter()
        .filter(|r| r.path.contains(PLATFORM))
        .collect();
    assert_eq!(requests.len(), 2, "one 500, then one paid answer");
    assert_eq!(requests[0].idempotency_key, requests[1].idempotency_key);
    assert!(
        requests.iter().all(|r| r.stripe_account.is_none()),
        "the platform's own invoice has no Stripe-Account"
    );

    let soft: Vec<_> = setup
        .stand_in
        .requests()
        .into_iter()
        .filter(|r| r.path.contains(SOFT))
        .collect();
    assert_eq!(soft.len(), 2);
    assert_ne!(
        soft[0].idempotency_key, soft[1].idempotency_key,
        "two attempts, two keys"
    );
    assert_eq!(
        soft[0].stripe_account.as_deref(),
        Some("acct_1CitadelDemoAlpha")
    );
}

/// Returns the path of the built `recover` example, next to this test binary.
fn recover_example() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(Path::parent).unwrap();
    profile_dir.join("examples").join("recover")
}

fn run_recover(args: &[&str]) -> (serde_json::Value, String) {
    let output = Command::new(recover_example())
        .args(args)
        .arg("--json")
        .args(["--retry-delays", "0,0,0"])
        .env_remove("DATABASE_URL")
        .env_remove("STRIPE_SECRET_KEY")
        .output()
        .expect("the recover example is built by `cargo test`");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "recover failed: {stderr}");
    let report =
        serde_json::from_slice(&output.stdout).unwrap_or_else(|err| panic!("{err}: {stderr}"));
    (report, stderr)
}

#[test]
fn recover_example_reports_the_sample_run() {
    let (report, _) = run_recover(&[]);

    assert_eq!(report["events_received"], 12);
    assert_eq!(report["events_duplicate"], 1);
    assert_eq!(report["events_ignored"], 1);
    assert_eq!(report["recovered_count"], 2);
    assert_eq!(report["recovered_amount"]["usd"], 2500 + 990);
    assert_eq!(report["lost_count"], 4);
    assert_eq!(
        report["decisions_by_reason"]["lost: hard decline: stolen_card is never retried (decline table)"],
        1
    );
    assert_eq!(
        report["decisions_by_reason"]["lost: subscription moved to canceled"],
        1
    );
    assert_eq!(report["invoices"][SOFT]["retries"], 2);
    assert_eq!(report["invoices"][HARD]["retries"], 0);
    assert_eq!(report["invoices"][HARD]["state"], "lost");
    assert_eq!(report["invoices"][SOFT]["state"], "recovered");
    assert_eq!(report["invoices"][SOFT]["charges_seen_by_stand_in"], 1);
    assert_eq!(report["tasks"]["pending"], 0);
    assert!(report["retries_attempted"].as_i64().unwrap() >= 6);
}

#[test]
fn recover_example_rejects_missing_stand_in_script() {
    let output = Command::new(recover_example())
        .args(["--stand-in-script", "/nonexistent/stand-in.json"])
        .env_remove("DATABASE_URL")
        .env_remove("STRIPE_SECRET_KEY")
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap();

    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("/nonexistent/stand-in.json"), "{stderr}");
}

#[test]
fn recover_example_names_non_event_files() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        sample_dir().join("01-soft-decline-payment-failed.json"),
        dir.path().join("a.json"),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("b-not-an-event.json"),
        b"{\"hello\": \"world\"}",
    )
    .unwrap();
    std::fs::write(dir.path().join("c-not-json.json"), b"not json at all").unwrap();
    std::fs::create_dir(dir.path().join("d-a-directory.json")).unwrap();

    let (report, stderr) = run_recover(&["--events", dir.path().to_str().unwrap()]);

    assert!(stderr.contains("b-not-an-event.json"), "{stderr}");
    assert!(stderr.contains("c-not-json.json"), "{stderr}");
    assert!(stderr.contains("d-a-directory.json"), "{stderr}");
    assert_eq!(report["events_received"], 1);
    assert_eq!(report["events_rejected"], 3);
    assert_eq!(report["recovered_count"], 1);
}

#[cfg(feature = "server")]
#[path = "end_to_end/server/mod.rs"]
mod server;
