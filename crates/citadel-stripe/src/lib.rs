//! The Stripe adapter of Citadel.
//!
//! This crate connects `citadel-core` to Stripe:
//!
//! - [`webhook`] checks the `Stripe-Signature` header of a webhook request on
//!   the raw body, with several signing secrets during a rotation.
//! - [`event`] parses webhook bodies of any API version into
//!   [`citadel_core::event::Event`], reading only the fields the engine acts on.
//! - [`gateway`] implements [`citadel_core::payment::PaymentGateway`] over
//!   async-stripe: `POST /v1/invoices/{id}/pay` on a connected account, with an
//!   idempotency key, each response mapped to a
//!   [`PaymentOutcome`](citadel_core::payment::PaymentOutcome).
//! - `stand_in` (feature `stand-in`) is a local Stripe stand-in: an HTTP
//!   server on 127.0.0.1 that responds to invoice payments as Stripe does, for
//!   tests and demos. The feature also exposes `fixtures`, Stripe's own sample
//!   objects, to build test events from.
//!
//! # Example
//!
//! A webhook handler verifies and parses the body before handing the event to
//! the engine:
//!
//! ```
//! use citadel_core::Secret;
//! use citadel_stripe::webhook::{WebhookVerifier, sign};
//!
//! let secret = Secret::new("whsec_test");
//! let verifier = WebhookVerifier::new([secret.clone()])?;
//!
//! let body = br#"{"id": "evt_1", "object": "event", "type": "plan.created",
//!     "created": 1234567890, "data": {"object": {}}}"#;
//! let header = sign(body, &secret, chrono::Utc::now().timestamp());
//!
//! let event = verifier.verify_and_parse(body, &header)?;
//! assert_eq!(event.event_type, "plan.created");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![cfg_attr(docsrs, feature(doc_auto_cfg))]

pub mod event;
#[cfg(any(test, feature = "stand-in"))]
pub mod fixtures;
pub mod gateway;
#[cfg(feature = "stand-in")]
pub mod stand_in;
pub mod webhook;

pub use event::{ParseError, parse_event};
pub use gateway::{GatewayConfigError, StripeGateway, StripeGatewayBuilder};
#[cfg(feature = "stand-in")]
pub use stand_in::{Scripted, StandIn};
pub use webhook::{WebhookError, WebhookVerifier, sign};
