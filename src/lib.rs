//! Citadel recovers failed Stripe payments for many merchants at once, with
//! PostgreSQL as its only state.
//!
//! This crate is a facade over the three crates that make up Citadel, so an
//! application needs one dependency:
//!
//! - [`core`]: domain types, the task state machine, the recovery policy, the
//!   store and payment traits, the engine and the worker;
//! - [`postgres`]: the PostgreSQL store (migrations, `FOR UPDATE SKIP LOCKED`
//!   claims, idempotent event intake);
//! - [`stripe`]: webhook signature checking, tolerant event parsing and the
//!   async-stripe payment gateway.
//!
//! # Embedding the engine
//!
//! ```no_run
//! use std::sync::Arc;
//!
//! use citadel::core::{Engine, Secret, Worker, WorkerConfig};
//! use citadel::postgres::PgStore;
//! use citadel::stripe::gateway::StripeGateway;
//! use citadel::stripe::webhook::WebhookVerifier;
//!
//! # async fn run(body: &[u8], signature: &str) -> Result<(), Box<dyn std::error::Error>> {
//! let store = PgStore::connect("postgres://localhost/citadel").await?;
//! store.migrate().await?;
//! let gateway = StripeGateway::builder(Secret::new("sk_test_…")).build()?;
//! let engine = Arc::new(Engine::new(store, gateway));
//!
//! // In the webhook handler: verify, parse, record; return 200 only after Ok.
//! let verifier = WebhookVerifier::new([Secret::new("whsec_…")])?;
//! let event = verifier.verify_and_parse(body, signature)?;
//! engine.ingest(&event).await?;
//!
//! // In each worker process:
//! let worker = Worker::new(Arc::clone(&engine), WorkerConfig::default());
//! worker.run(async { tokio::signal::ctrl_c().await.ok(); }).await;
//! # Ok(())
//! # }
//! ```

pub use citadel_core as core;
pub use citadel_postgres as postgres;
pub use citadel_stripe as stripe;

#[cfg(feature = "server")]
pub mod server;

/// Compiles the README's Rust examples as doctests, so they stay true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
