//! Serves Citadel's operator API and Stripe webhook, with workers in the
//! same process.
//!
//! ```text
//! CITADEL_OPERATOR_TOKEN=$(openssl rand -hex 32) cargo run --example server
//! cargo run --example server -- --listen 127.0.0.1:9000 --no-workers
//! ```
//!
//! - `CITADEL_OPERATOR_TOKEN` (required, at least 16 bytes): the bearer token
//!   that can read and change every merchant's rows.
//! - `STRIPE_WEBHOOK_SECRET`: the webhook signing secrets, comma-separated
//!   during a rotation. Without it the webhook route answers 503.
//! - `DATABASE_URL`: the PostgreSQL database, migrated at start. Without it
//!   the server starts a throwaway cluster and removes it on exit.
//! - `STRIPE_SECRET_KEY`: pays invoices through Stripe's API. Without it the
//!   server pays on a local Stripe stand-in that accepts every payment.
//!
//! SIGTERM or Ctrl-C stops the listener, lets requests in progress finish,
//! and stops each worker after its current batch.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use tokio::sync::watch;

use citadel::core::queue::Retention;
use citadel::core::store::Store;
use citadel::core::worker::BatchReport;
use citadel::core::{Engine, Secret, Worker, WorkerConfig};
use citadel::postgres::PgStore;
use citadel::server::{ServerConfig, router};

#[path = "../common/setup.rs"]
mod setup;

use setup::{open_gateway, open_store};

/// Serve Citadel's operator API and Stripe webhook, with workers.
#[derive(Debug, Parser)]
struct Args {
    /// The address to listen on; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,

    /// Run no workers in this process: tasks then wait for other worker
    /// processes or for external workers of /api/worker/claim.
    #[arg(long)]
    no_workers: bool,

    /// Number of workers, from 1 to 64.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=64))]
    workers: u32,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                // async-stripe logs every declined request as a warning;
                // declines are expected and appear in the activity ledger.
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,stripe=error")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let config = server_config()?;

    let (store, cluster) = open_store().await?;
    let (gateway, stand_in) = open_gateway().await?;
    let engine = Arc::new(Engine::new(store, gateway));
    let app = router(Arc::clone(&engine), config)?;

    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let address = listener.local_addr()?;
    // Printed on stdout so scripts can read the port picked for port 0.
    println!("citadel server listening on http://{address}");
    tracing::info!(server.address = %address, "server started");

    let (stop, stopped) = watch::channel(false);
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown requested: finishing requests and task batches in progress");
        let _ = stop.send(true);
    });

    let mut workers = tokio::task::JoinSet::new();
    if !args.no_workers {
        for _ in 0..args.workers {
            let worker = Worker::new(Arc::clone(&engine), WorkerConfig::default());
            let stopped = stopped.clone();
            workers.spawn(async move { worker.run(until_stopped(stopped)).await });
        }
        let engine = Arc::clone(&engine);
        let stopped = stopped.clone();
        workers.spawn(async move {
            tokio::select! {
                () = prune_hourly(engine.store()) => {}
                () = until_stopped(stopped) => {}
            }
            BatchReport::default()
        });
    }

    axum::serve(listener, app)
        .with_graceful_shutdown(until_stopped(stopped))
        .await
        .context("the HTTP server failed")?;
    while let Some(joined) = workers.join_next().await {
        joined.context("a worker panicked")?;
    }
    tracing::info!("server stopped");
    drop(stand_in);
    drop(cluster);
    Ok(())
}

/// Deletes finished tasks, old processed events and old worker rows once an
/// hour, with the default retention, so the hot tables stay small.
async fn prune_hourly(store: &PgStore) {
    let mut every_hour = tokio::time::interval(Duration::from_secs(60 * 60));
    loop {
        every_hour.tick().await;
        // The store logs what each prune deleted.
        if let Err(err) = store.prune(&Retention::default()).await {
            tracing::warn!(error = %err, "pruning failed; trying again in an hour");
        }
    }
}

/// Reads the API's settings from the environment.
fn server_config() -> anyhow::Result<ServerConfig> {
    let token = std::env::var("CITADEL_OPERATOR_TOKEN").context(
        "CITADEL_OPERATOR_TOKEN is not set: set it to a long random value, such as the output of `openssl rand -hex 32`",
    )?;
    let secrets: Vec<Secret> = std::env::var("STRIPE_WEBHOOK_SECRET")
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|secret| !secret.is_empty())
        .map(Secret::new)
        .collect();
    if secrets.is_empty() {
        eprintln!("STRIPE_WEBHOOK_SECRET not set: POST /api/webhooks/stripe returns 503");
    }
    Ok(ServerConfig::new(Secret::new(token)).webhook_secrets(secrets))
}

/// Resolves on SIGTERM or Ctrl-C.
async fn wait_for_signal() {
    let ctrl_c = async {
        if let Err(err) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %err, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut sigterm) => {
                sigterm.recv().await;
            }
            Err(err) => {
                tracing::error!(error = %err, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();

    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}

/// Resolves once the shutdown flag is set.
async fn until_stopped(mut stopped: watch::Receiver<bool>) {
    // An error means the sender is gone, which also means stop.
    let _ = stopped.wait_for(|stop| *stop).await;
}
