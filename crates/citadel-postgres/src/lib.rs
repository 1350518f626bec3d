//! Citadel's store in PostgreSQL, over sqlx.
//!
//! [`PgStore`] implements [`citadel_core::store::Store`]: merchants, the task
//! queue, the processed Stripe events, one recovery per failed invoice, daily
//! metrics and the activity ledger, each in its own table. The migrations in
//! this crate's `migrations/` folder create them, autovacuum settings for
//! the high-churn tables included; [`PgStore::migrate`] applies them.
//!
//! - Workers claim due tasks with one statement that locks them with
//!   `FOR UPDATE SKIP LOCKED` and marks them running, so any number of
//!   workers on any number of machines share the queue without taking the
//!   same task twice.
//! - A running task changes only through an `UPDATE` guarded by its lease
//!   token, so a worker whose lease expired can no longer write.
//! - An event is recorded with `INSERT … ON CONFLICT DO NOTHING` in the same
//!   transaction as its effects, so a redelivered event changes nothing.
//!
//! The `ephemeral` feature adds the `ephemeral` module, which starts a
//! throwaway PostgreSQL cluster for tests and examples.
//!
//! # Examples
//!
//! ```no_run
//! use citadel_core::merchant::NewMerchant;
//! use citadel_core::store::Store;
//! use citadel_postgres::PgStore;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let store = PgStore::connect("postgres://citadel@localhost/citadel").await?;
//! store.migrate().await?;
//! let merchant = store
//!     .create_merchant(&NewMerchant::new("Acme", Some("acct_1Acme".parse()?)))
//!     .await?;
//! println!("registered merchant {}", merchant.id);
//! # Ok(())
//! # }
//! ```

#![cfg_attr(docsrs, feature(doc_auto_cfg))]

mod activity;
mod cards;
mod error;
mod events;
mod listen;
mod merchants;
mod metrics;
mod operator;
mod prune;
mod recoveries;
mod store;
mod subscriptions;
mod tasks;
mod tx;
mod workers;

#[cfg(feature = "ephemeral")]
pub mod ephemeral;

pub use error::PgError;
pub use store::PgStore;

/// The number of rows a list returns when the filter sets no limit.
const DEFAULT_PAGE_SIZE: u32 = 100;

/// The maximum number of rows a list returns, whatever limit the filter sets.
const MAX_PAGE_SIZE: u32 = 1000;

/// Returns the `LIMIT` of a list: `limit`, else the default, at most the cap.
fn page_size(limit: Option<u32>) -> i64 {
    i64::from(limit.unwrap_or(DEFAULT_PAGE_SIZE).min(MAX_PAGE_SIZE))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_size_defaults_and_caps() {
        assert_eq!(page_size(None), 100);
        assert_eq!(page_size(Some(5)), 5);
        assert_eq!(page_size(Some(5000)), 1000);
    }
}
