//! Runs Citadel end to end on a directory of Stripe events.
//!
//! ```text
//! cargo run --example recover                      # sample events, throwaway database, Stripe stand-in
//! cargo run --example recover -- --json            # the report as one JSON object
//! cargo run --example recover -- --events DIR      # your own event files (any API version)
//! ```
//!
//! Each `*.json` file in the events directory is one Stripe event. The example
//! signs it as Stripe would, checks the signature and parses it through the
//! same path a webhook handler uses, registers a merchant per account seen,
//! ingests every event, runs workers until no task is left, and prints a
//! report per merchant and in total.
//!
//! Without `DATABASE_URL` it starts a throwaway PostgreSQL from the machine's
//! server binaries and removes it on exit. Without `STRIPE_SECRET_KEY` it pays
//! invoices on a local Stripe stand-in, scripted by `--stand-in-script`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;

use citadel::core::event::{Event, EventKind};
use citadel::core::ids::{AccountId, InvoiceId, MerchantId};
use citadel::core::merchant::{Merchant, NewMerchant};
use citadel::core::policy::RecoveryPolicy;
use citadel::core::store::{Store, StoreError};
use citadel::core::{Engine, IntakeOutcome, Secret, Worker, WorkerConfig, error_chain};
use citadel::postgres::PgStore;
use citadel::stripe::gateway::StripeGateway;
use citadel::stripe::stand_in::{Scripted, StandIn};
use citadel::stripe::webhook::{WebhookVerifier, sign};

mod report;
#[path = "../common/setup.rs"]
mod setup;

use report::Report;
use setup::{open_gateway, open_store};

/// Recover failed Stripe payments from a directory of events.
#[derive(Debug, Parser)]
struct Args {
    /// Directory of Stripe event files (`*.json`, one event each, any API version).
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/data/events"))]
    events: PathBuf,

    /// Outcomes the Stripe stand-in gives per invoice: a JSON object mapping
    /// invoice ids to lists such as ["insufficient_funds", "pay"]. Unlisted
    /// invoices are paid on the first retry.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/data/stand-in.json"))]
    stand_in_script: PathBuf,

    /// Seconds between scheduled retries of each merchant's demo policy,
    /// comma-separated (at most one year each).
    #[arg(long, default_value = "1,2,3", value_delimiter = ',', value_parser = parse_delay)]
    retry_delays: Vec<u64>,

    /// Number of concurrent workers, from 1 to 64.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=64))]
    workers: u32,

    /// Print the report as one JSON object.
    #[arg(long)]
    json: bool,
}

/// The maximum retry delay the example accepts, in seconds: one year.
const MAX_DELAY_SECONDS: u64 = 365 * 24 * 60 * 60;

fn parse_delay(value: &str) -> Result<u64, String> {
    let seconds: u64 = value
        .trim()
        .parse()
        .map_err(|_| format!("invalid delay {value:?}: expected whole seconds, such as 60"))?;
    if seconds > MAX_DELAY_SECONDS {
        return Err(format!(
            "delay {seconds} s is longer than one year ({MAX_DELAY_SECONDS} s)"
        ));
    }
    Ok(seconds)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                // async-stripe logs every declined request as a warning;
                // declines are expected here and appear in the report.
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,stripe=error")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();

    let (store, cluster) = open_store().await?;
    let (gateway, stand_in) = open_gateway().await?;
    if let Some(stand_in) = &stand_in {
        load_script(stand_in, &args.stand_in_script)?;
    }
    let engine = Arc::new(Engine::new(store.clone(), gateway));

    let secret = Secret::new(format!("whsec_{}", uuid::Uuid::new_v4().simple()));
    let (files, rejected) = read_events(&args.events, &secret)?;
    let policy = RecoveryPolicy::with_delays(
        args.retry_delays
            .iter()
            .map(|s| Duration::from_secs(*s))
            .collect(),
    );
    let merchants = register_merchants(&store, &files, &policy).await?;

    if let Some(stand_in) = &stand_in {
        bill_invoices(stand_in, &files);
    }

    let mut report = Report::new(stand_in.is_some(), cluster.is_some());
    report.events_rejected = rejected;
    for file in &files {
        ingest(&engine, file, &mut report).await;
    }
    run_workers(&engine, args.workers).await?;

    report
        .collect(&store, &merchants, stand_in.as_ref())
        .await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        report.print();
    }
    Ok(())
}

fn load_script(stand_in: &StandIn, path: &Path) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the stand-in script {}", path.display()))?;
    let script: BTreeMap<String, Vec<String>> = serde_json::from_str(&text)
        .with_context(|| format!("invalid stand-in script {}", path.display()))?;
    for (invoice, outcomes) in script {
        let invoice = InvoiceId::parse(invoice)
            .with_context(|| format!("in stand-in script {}", path.display()))?;
        let outcomes = outcomes
            .iter()
            .map(|name| {
                scripted(name).with_context(|| format!("in stand-in script {}", path.display()))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        stand_in.script(&invoice, outcomes);
    }
    Ok(())
}

fn scripted(name: &str) -> anyhow::Result<Scripted> {
    Ok(match name {
        "pay" => Scripted::Pay,
        "insufficient_funds" => Scripted::insufficient_funds(),
        "stolen_card" => Scripted::stolen_card(),
        "server_error" => Scripted::ServerError,
        "rate_limited" => Scripted::RateLimited,
        "already_paid" => Scripted::AlreadyPaid,
        other => anyhow::bail!(
            "unknown outcome {other:?}: expected pay, insufficient_funds, stolen_card, server_error, rate_limited or already_paid"
        ),
    })
}

/// Tells the stand-in the amount due of every invoice the events name, so
/// its responses carry the real amounts.
fn bill_invoices(stand_in: &StandIn, files: &[EventFile]) {
    for file in files {
        if let EventKind::InvoicePaymentFailed(invoice) = &file.event.kind {
            stand_in.set_invoice(
                &invoice.id,
                invoice.amount_due.minor_units,
                invoice.amount_due.currency,
            );
        }
    }
}

/// A verified, parsed event file.
struct EventFile {
    name: String,
    event: Event,
}

/// Reads every `*.json` file, signs it as Stripe would and parses it through
/// the webhook path. A file that fails is reported, counted and skipped.
fn read_events(dir: &Path, secret: &Secret) -> anyhow::Result<(Vec<EventFile>, u64)> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read the events directory {}", dir.display()))?
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "json"))
        .collect();
    if paths.is_empty() {
        eprintln!("no *.json event files in {}", dir.display());
    }
    paths.sort();

    let verifier = WebhookVerifier::new([secret.clone()])?;
    let mut files = Vec::new();
    let mut rejected = 0;
    for path in paths {
        match read_event(&path, &verifier, secret) {
            Ok(event) => {
                let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
                files.push(EventFile {
                    name: name.unwrap_or_default(),
                    event,
                });
            }
            Err(reason) => {
                eprintln!("skipping {}: {reason}", path.display());
                rejected += 1;
            }
        }
    }
    Ok((files, rejected))
}

/// Reads one file, signs it as Stripe would and verifies and parses it.
fn read_event(path: &Path, verifier: &WebhookVerifier, secret: &Secret) -> Result<Event, String> {
    let body = std::fs::read(path).map_err(|err| format!("cannot read it: {err}"))?;
    let header = sign(&body, secret, chrono::Utc::now().timestamp());
    verifier
        .verify_and_parse(&body, &header)
        .map_err(|err| err.to_string())
}

/// Registers one merchant per account seen, with the demo policy.
async fn register_merchants(
    store: &PgStore,
    files: &[EventFile],
    policy: &RecoveryPolicy,
) -> anyhow::Result<BTreeMap<MerchantId, Merchant>> {
    let mut merchants = BTreeMap::new();
    for file in files {
        let account = file.event.account.as_ref();
        if let Some(existing) = store.merchant_by_account(account).await? {
            merchants.insert(existing.id, existing);
            continue;
        }
        let name = account.map_or_else(
            || "platform".to_owned(),
            |a: &AccountId| format!("merchant {a}"),
        );
        let mut new = NewMerchant::new(name, account.cloned());
        new.policy = policy.clone();
        let merchant =
            match store.create_merchant(&new).await {
                Ok(merchant) => merchant,
                // Another process registered the account since the lookup.
                Err(StoreError::DuplicateAccount { .. }) => store
                    .merchant_by_account(account)
                    .await?
                    .context("merchant vanished after a duplicate registration")?,
                Err(err) => return Err(err.into()),
            };
        merchants.insert(merchant.id, merchant);
    }
    Ok(merchants)
}

/// Ingests one event. A failure is reported and counted, and the run goes on
/// with the next file, because the failed transaction wrote nothing.
async fn ingest(engine: &Engine<PgStore, StripeGateway>, file: &EventFile, report: &mut Report) {
    let outcome = match engine.ingest(&file.event).await {
        Ok(outcome) => outcome,
        Err(err) => {
            eprintln!(
                "skipping {}: ingesting it failed: {}",
                file.name,
                error_chain(&err)
            );
            report.events_rejected += 1;
            return;
        }
    };
    report.events_received += 1;
    match outcome {
        IntakeOutcome::Applied { .. } => report.events_applied += 1,
        IntakeOutcome::Duplicate => report.events_duplicate += 1,
        IntakeOutcome::Ignored { .. } => report.events_ignored += 1,
        IntakeOutcome::UnknownAccount { .. } => report.events_unknown_account += 1,
        _ => {}
    }
}

async fn run_workers(
    engine: &Arc<Engine<PgStore, StripeGateway>>,
    count: u32,
) -> anyhow::Result<()> {
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..count {
        // A short lease, so a task whose outcome could not be written is run
        // again within the demo instead of after the default five minutes.
        let config = WorkerConfig {
            poll_interval: Duration::from_millis(100),
            lease_duration: Duration::from_secs(30),
            ..WorkerConfig::default()
        };
        let worker = Worker::new(Arc::clone(engine), config);
        workers.spawn(async move { worker.run_until_idle().await });
    }
    while let Some(joined) = workers.join_next().await {
        joined.context("a worker panicked")??;
    }
    Ok(())
}
