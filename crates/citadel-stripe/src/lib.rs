//! The Stripe adapter of Citadel.
//!
//! Feature `stand-in` exposes `fixtures`, Stripe's own sample objects, to
//! build test events from.

#![cfg_attr(docsrs, feature(doc_auto_cfg))]

#[cfg(any(test, feature = "stand-in"))]
pub mod fixtures;
