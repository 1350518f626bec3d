//! The core of Citadel: domain types, the task state machine, the recovery
//! policy, the store and payment traits, and the engine and worker that tie
//! them together.
//!
//! This crate depends on neither PostgreSQL nor Stripe's HTTP API. The
//! `citadel-postgres` crate implements [`store::Store`], and
//! `citadel-stripe` implements [`payment::PaymentGateway`] and parses
//! webhooks into [`event::Event`].
//!
//! # How a failed payment is recovered
//!
//! 1. A verified webhook event goes to [`engine::Engine::ingest`], which in
//!    one transaction records the event id (a redelivery is a no-op), opens
//!    the invoice's [`recovery::Recovery`] and schedules its first retry as a
//!    [`task::Task`] row.
//! 2. A [`worker::Worker`] claims due tasks with a lease and calls
//!    [`engine::Engine::run_task`], which pays the invoice on the merchant's
//!    connected account with an idempotency key fixed at scheduling time.
//! 3. The [`policy`] decides what follows: recovered, another retry, or lost;
//!    the task, the recovery, the [`metrics`] and the [`activity`] ledger are
//!    written in one transaction under the task's lease.

#![cfg_attr(docsrs, feature(doc_auto_cfg))]

pub mod activity;
pub mod engine;
pub mod event;
pub mod ids;
pub mod merchant;
pub mod metrics;
pub mod money;
pub mod notice;
pub mod operator;
pub mod payment;
pub mod policy;
pub mod queue;
pub mod recovery;
pub mod secret;
pub mod store;
pub mod subscription;
pub mod task;
pub mod worker;

/// The attribute macro the store and gateway traits are written with;
/// implement [`payment::PaymentGateway`] or [`store::Store`] under it.
pub use async_trait::async_trait;
/// The IANA time zone database the policy computes retry hours with, so
/// callers can build a [`policy::RetryClock`] without a second copy.
pub use chrono_tz;
pub use engine::{Engine, EngineError, IntakeOutcome};
pub use secret::Secret;
pub use worker::{TaskHandler, Wakeup, Worker, WorkerConfig};

/// Formats an error with all its sources, such as
/// `database error while claiming tasks: connection refused`, for logs and
/// messages that must show the cause.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_chain_shows_sources() {
        let io = std::io::Error::other("connection refused");
        let error = store::StoreError::Database {
            operation: "claiming tasks",
            source: Box::new(io),
        };
        assert_eq!(
            error_chain(&error),
            "database error while claiming tasks: connection refused"
        );
    }
}
