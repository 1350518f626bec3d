//! A local Stripe stand-in for tests and demos.
//!
//! [`StandIn`] is an HTTP server on 127.0.0.1 (a free port) that serves
//! `POST /v1/invoices/{id}/pay` in Stripe's wire format, so a
//! [`StripeGateway`] pointed at [`StandIn::url`] runs its real HTTP path
//! without reaching Stripe. It lives until it is dropped or
//! [`StandIn::shutdown`] completes.
//!
//! What it does, as Stripe does:
//!
//! - **Scripts.** Each invoice responds with a queue of [`Scripted`] outcomes in
//!   order; the last one repeats, and an invoice without a script is paid.
//!   A paid invoice gets HTTP 400 "Invoice is already paid" for every new
//!   payment request, whatever its script contains.
//! - **Idempotency.** The response to a request with an `Idempotency-Key` is
//!   stored per connected account (`Stripe-Account`) and key, and a repeat
//!   gets the stored response with `Idempotent-Replayed: true`, never a
//!   second charge. A key reused for another request gets HTTP 400
//!   `idempotency_error`. Stripe stores the response of every request that
//!   began executing. Rate-limited requests and [`Scripted::ServerError`]
//!   are rejected before that and store nothing, so a retry with the same
//!   key runs the next scripted outcome, while
//!   [`Scripted::StoredServerError`] is stored like Stripe's later 500s.
//! - **Authentication.** A request without `Authorization: Bearer <key>` gets
//!   HTTP 401; any key is accepted.
//! - **Records.** [`StandIn::requests`] lists every request with its
//!   account, key, time and outcome, and [`StandIn::charges`] counts the
//!   charges actually made per invoice.
//!
//! Amounts come from [`StandIn::set_invoice`], else from Stripe's sample
//! invoice: 1000 usd.
//!
//! # Example
//!
//! ```
//! use citadel_core::ids::InvoiceId;
//! use citadel_core::payment::{IdempotencyKey, PayInvoice, PaymentGateway, PaymentOutcome};
//! use citadel_stripe::stand_in::{Scripted, StandIn};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let stand_in = StandIn::start().await?;
//! let invoice = InvoiceId::parse("in_1Pgc6tB7WZ01zgkWu9fdqL6I")?;
//! stand_in.script(&invoice, [Scripted::insufficient_funds(), Scripted::Pay]);
//!
//! let gateway = stand_in.gateway()?;
//! let pay = |key: &str| PayInvoice {
//!     account: None,
//!     invoice: invoice.clone(),
//!     idempotency_key: IdempotencyKey::new(key),
//! };
//! let first = gateway.pay_invoice(&pay("attempt-1")).await;
//! let second = gateway.pay_invoice(&pay("attempt-2")).await;
//!
//! assert!(matches!(first, PaymentOutcome::Declined(_)));
//! assert!(matches!(second, PaymentOutcome::Paid { .. }));
//! assert_eq!(stand_in.charges(&invoice), 1);
//! # Ok(())
//! # }
//! ```

mod server;
mod state;
mod wire;

use std::collections::VecDeque;
use std::io;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use citadel_core::Secret;
use citadel_core::ids::InvoiceId;
use citadel_core::money::Currency;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use self::server::{Shared, StandInListener, lock};
use self::state::State;
use crate::gateway::{GatewayConfigError, StripeGateway};

/// The API key [`StandIn::gateway`] authenticates with. The stand-in accepts
/// any key.
pub const STAND_IN_SECRET_KEY: &str = "sk_test_citadel_stand_in";

/// An outcome the stand-in gives a payment request.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Scripted {
    /// Charge the card: HTTP 200 with the paid invoice.
    Pay,
    /// Decline the card: HTTP 402 with a `card_error`.
    Decline {
        /// Stripe's error code, such as `card_declined` or `expired_card`.
        code: String,
        /// The issuer's reason, such as `insufficient_funds`.
        decline_code: Option<String>,
    },
    /// Fail inside Stripe before the request began executing: HTTP 500 with
    /// an `api_error`, stored nowhere, so a retry with the same key runs the
    /// next scripted outcome.
    ServerError,
    /// Fail inside Stripe after the request began executing: HTTP 500 with
    /// an `api_error`, stored under the request's key like any executed
    /// request, so every retry with the same key gets the same 500.
    StoredServerError,
    /// Reject for too many requests: HTTP 429 with code `rate_limit`.
    RateLimited,
    /// Find the invoice already paid another way: HTTP 400 "Invoice is
    /// already paid". The invoice stays paid, with no charge by the
    /// stand-in.
    AlreadyPaid,
    /// Start a payment that has not settled, as a bank debit does: HTTP 200
    /// with the invoice still `open` and nothing paid yet.
    Processing,
    /// Charge the card, store the paid response under the request's key,
    /// then close the connection without sending it. The client sees a
    /// connection failure; a retry with the same key gets the stored paid
    /// response.
    ChargeThenDrop,
}

impl Scripted {
    /// Declines with `card_declined` and the issuer's `decline_code`.
    pub fn declined(decline_code: impl Into<String>) -> Self {
        Self::Decline {
            code: "card_declined".to_owned(),
            decline_code: Some(decline_code.into()),
        }
    }

    /// Declines with `insufficient_funds`, a soft decline worth retrying.
    pub fn insufficient_funds() -> Self {
        Self::declined("insufficient_funds")
    }

    /// Declines with `stolen_card`, a hard decline never to retry.
    pub fn stolen_card() -> Self {
        Self::declined("stolen_card")
    }

    /// Declines with `generic_decline`, the issuer giving no reason.
    pub fn generic_decline() -> Self {
        Self::declined("generic_decline")
    }

    /// Declines with the error code `expired_card` and no decline code.
    pub fn expired_card() -> Self {
        Self::Decline {
            code: "expired_card".to_owned(),
            decline_code: None,
        }
    }

    /// Declines because the issuer requires the customer to authenticate,
    /// which no off-session retry can do.
    pub fn authentication_required() -> Self {
        Self::Decline {
            code: "authentication_required".to_owned(),
            decline_code: Some("authentication_required".to_owned()),
        }
    }
}

/// A request the stand-in received.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RecordedRequest {
    /// The HTTP method, such as `POST`.
    pub method: String,
    /// The path, such as `/v1/invoices/in_123/pay`.
    pub path: String,
    /// The `Stripe-Account` header: the connected account, if any.
    pub stripe_account: Option<String>,
    /// The `Idempotency-Key` header, if any.
    pub idempotency_key: Option<String>,
    /// When the stand-in handled the request.
    pub at: DateTime<Utc>,
    /// The HTTP status sent, or `None` when the connection was closed
    /// without a response.
    pub status: Option<u16>,
    /// The stand-in's action.
    pub outcome: ResponseKind,
}

/// The stand-in's action on a request.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ResponseKind {
    /// Charged the card and sent the paid invoice (200).
    Paid,
    /// Declined the card (402).
    Declined {
        /// Stripe's error code.
        code: String,
        /// The issuer's reason.
        decline_code: Option<String>,
    },
    /// Started a payment that has not settled and sent the open invoice
    /// (200).
    Processing,
    /// Sent a server error (500).
    ServerError,
    /// Sent a rate limit error (429).
    RateLimited,
    /// Found the invoice already paid (400).
    AlreadyPaid,
    /// Charged the card and closed the connection without a response.
    Dropped,
    /// Sent the stored response of an earlier request with the same key,
    /// without charging.
    Replayed {
        /// The stored HTTP status.
        status: u16,
    },
    /// Rejected a key reused for another request (400).
    IdempotencyMismatch,
    /// Rejected a request without an API key (401).
    Unauthorized,
    /// Found no such invoice or route (404).
    NotFound,
    /// Marked the invoice uncollectible and sent it (200).
    MarkedUncollectible,
    /// Canceled the subscription and sent it (200).
    SubscriptionCanceled,
}

/// An error returned when the stand-in cannot start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StandInError {
    /// No port on 127.0.0.1 could be bound.
    #[error("failed to bind the Stripe stand-in to a free port on 127.0.0.1: {source}")]
    Bind {
        /// The operating system's error.
        source: io::Error,
    },
}

/// A local Stripe stand-in; see the [module documentation](self).
///
/// Dropping it stops the server at once; [`StandIn::shutdown`] lets
/// requests in progress finish first.
#[derive(Debug)]
pub struct StandIn {
    url: String,
    shared: Shared,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<io::Result<()>>>,
}

impl StandIn {
    /// Starts the stand-in on a free port of 127.0.0.1.
    ///
    /// # Errors
    ///
    /// Returns [`StandInError::Bind`] when no port can be bound.
    pub async fn start() -> Result<Self, StandInError> {
        let listener = StandInListener::bind()
            .await
            .map_err(|source| StandInError::Bind { source })?;
        let address = listener
            .local_addr()
            .map_err(|source| StandInError::Bind { source })?;
        let shared: Shared = Arc::new(Mutex::new(State::default()));

        let (shutdown, stop) = oneshot::channel::<()>();
        let stopped = async move {
            // A dropped sender also stops the server.
            let _ = stop.await;
        };
        let task = tokio::spawn(server::serve(listener, Arc::clone(&shared), stopped));
        tracing::debug!(%address, "Stripe stand-in started");

        Ok(Self {
            url: format!("http://{address}/"),
            shared,
            shutdown: Some(shutdown),
            task: Some(task),
        })
    }

    /// Returns the base URL to give
    /// [`StripeGatewayBuilder::base_url`](crate::gateway::StripeGatewayBuilder::base_url),
    /// such as `http://127.0.0.1:41234/`.
    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// Builds a gateway that pays invoices on this stand-in, with the key
    /// [`STAND_IN_SECRET_KEY`] and the default timeout.
    ///
    /// # Errors
    ///
    /// Returns a [`GatewayConfigError`] only if the gateway's checks reject
    /// the stand-in's URL or key, which they accept.
    pub fn gateway(&self) -> Result<StripeGateway, GatewayConfigError> {
        StripeGateway::builder(Secret::new(STAND_IN_SECRET_KEY))
            .base_url(self.url())
            .build()
    }

    /// Sets the outcomes of the invoice's next payment requests, replacing
    /// its script. The last outcome repeats; an empty script pays.
    pub fn script(&self, invoice: &InvoiceId, outcomes: impl IntoIterator<Item = Scripted>) {
        let outcomes: VecDeque<Scripted> = outcomes.into_iter().collect();
        lock(&self.shared).script(invoice, outcomes);
    }

    /// Sets an open invoice's amount due and currency, replacing what the
    /// stand-in knew of it. Without it, an invoice has the sample invoice's
    /// 1000 usd.
    pub fn set_invoice(&self, invoice: &InvoiceId, amount_due: i64, currency: Currency) {
        lock(&self.shared).set_invoice(invoice, amount_due, currency);
    }

    /// Returns every request received so far, oldest first.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.shared).requests()
    }

    /// Returns how many charges the stand-in made for the invoice: at most
    /// one per idempotency key, and none for replays and declines.
    pub fn charges(&self, invoice: &InvoiceId) -> usize {
        lock(&self.shared).charges(invoice)
    }

    /// Stops accepting connections, waits for requests in progress, and
    /// stops the server.
    pub async fn shutdown(mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        let Some(task) = self.task.take() else {
            return;
        };
        match task.await {
            Ok(Ok(())) => tracing::debug!("Stripe stand-in stopped"),
            Ok(Err(error)) => tracing::warn!(%error, "Stripe stand-in stopped with an error"),
            Err(error) => tracing::warn!(%error, "Stripe stand-in task failed"),
        }
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}
