//! The operator HTTP API over axum: the [`citadel_core::operator`] methods,
//! the Stripe webhook and an OpenAPI document, behind bearer tokens.
//!
//! [`router`] builds an [`axum::Router`] that an application serves as is or
//! nests in its own. The `server` example serves it with workers in the same
//! process. Routes (ids are integers):
//!
//! | route | who |
//! |---|---|
//! | `GET /api/dashboard` | any token |
//! | `GET /api/tasks` (`status`, `merchant_id`, `limit`, `before`), `POST /api/tasks` | any token |
//! | `GET /api/tasks/{id}`, `DELETE /api/tasks/{id}`, `POST /api/tasks/{id}/retry` | any token |
//! | `DELETE /api/tasks/completed` | any token |
//! | `GET /api/merchants` (`limit`, `after`), `GET /api/merchants/{id}` | any token |
//! | `POST /api/merchants`, `PATCH /api/merchants/{id}` | operator token |
//! | `GET /api/activity` (`merchant_id`, `kind`, `limit`, `before`) | any token |
//! | `POST /api/worker/claim`, `POST /api/worker/complete/{id}` | any token |
//! | `GET /api/health`, `GET /api/openapi.json` | anyone |
//! | `POST /api/webhooks/stripe` | Stripe's signature |
//!
//! A merchant token can read and change only its own merchant's rows:
//! another merchant's task or merchant id gets a 404 response, as a missing
//! one does. The webhook returns 200 only after the event's transaction
//! committed, so Stripe redelivers whatever was not, and 400 with nothing
//! written when the signature is wrong.
//!
//! # Examples
//!
//! ```no_run
//! use std::sync::Arc;
//!
//! use citadel::core::{Engine, Secret};
//! use citadel::postgres::PgStore;
//! use citadel::server::{ServerConfig, router};
//! use citadel::stripe::gateway::StripeGateway;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let store = PgStore::connect("postgres://localhost/citadel").await?;
//! store.migrate().await?;
//! let gateway = StripeGateway::builder(Secret::new("sk_test_…")).build()?;
//! let engine = Arc::new(Engine::new(store, gateway));
//!
//! let config = ServerConfig::new(Secret::new("a long random operator token"))
//!     .webhook_secrets([Secret::new("whsec_…")]);
//! let app = router(engine, config)?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! axum::serve(listener, app).await?;
//! # Ok(())
//! # }
//! ```

mod auth;
mod error;
mod merchants;
mod openapi;
mod other;
mod tasks;
pub mod views;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::routing::{get, post};

use citadel_core::operator::token::TokenHash;
use citadel_core::payment::PaymentGateway;
use citadel_core::store::Store;
use citadel_core::{Engine, Secret};
use citadel_stripe::webhook::{WebhookConfigError, WebhookVerifier};

pub use error::ApiError;
pub use openapi::ApiDoc;

/// The shortest operator token accepted, in bytes.
pub const MIN_OPERATOR_TOKEN_LEN: usize = 16;

/// The default maximum request body: 1 MiB. Stripe documents no maximum
/// event size, and its events are a few kilobytes.
pub const DEFAULT_BODY_LIMIT: usize = 1024 * 1024;

/// The settings of the HTTP API.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    operator_token: Secret,
    webhook_secrets: Vec<Secret>,
    body_limit: usize,
}

impl ServerConfig {
    /// Creates settings with the operator's bearer token, no webhook secret
    /// (the webhook route then returns 503) and a 1 MiB body limit.
    pub fn new(operator_token: Secret) -> Self {
        Self {
            operator_token,
            webhook_secrets: Vec::new(),
            body_limit: DEFAULT_BODY_LIMIT,
        }
    }

    /// Sets the webhook signing secrets (`whsec_…`); several during a
    /// rotation. Default: none.
    pub fn webhook_secrets(mut self, secrets: impl IntoIterator<Item = Secret>) -> Self {
        self.webhook_secrets = secrets.into_iter().collect();
        self
    }

    /// Sets the maximum request body in bytes; a larger body gets a 413
    /// response. Default [`DEFAULT_BODY_LIMIT`].
    pub fn body_limit(mut self, bytes: usize) -> Self {
        self.body_limit = bytes;
        self
    }
}

/// An error in the [`ServerConfig`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerConfigError {
    /// The operator token is too short to resist guessing.
    #[error(
        "the operator token has {len} bytes, fewer than {MIN_OPERATOR_TOKEN_LEN}: use a long random value, such as 32 random bytes in hex"
    )]
    OperatorTokenTooShort {
        /// Its length in bytes.
        len: usize,
    },
    /// A webhook secret is invalid.
    #[error(transparent)]
    Webhook(#[from] WebhookConfigError),
}

/// The state every handler shares.
#[derive(Debug)]
pub struct ApiState<S, G> {
    inner: Arc<Inner<S, G>>,
}

impl<S, G> Clone for ApiState<S, G> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

#[derive(Debug)]
struct Inner<S, G> {
    engine: Arc<Engine<S, G>>,
    operator_token: TokenHash,
    webhook: Option<WebhookVerifier>,
}

/// Builds the API's router over an engine.
///
/// # Errors
///
/// [`ServerConfigError`] for an operator token shorter than
/// [`MIN_OPERATOR_TOKEN_LEN`] or an invalid webhook secret.
pub fn router<S: Store, G: PaymentGateway>(
    engine: Arc<Engine<S, G>>,
    config: ServerConfig,
) -> Result<Router, ServerConfigError> {
    let len = config.operator_token.expose().len();
    if len < MIN_OPERATOR_TOKEN_LEN {
        return Err(ServerConfigError::OperatorTokenTooShort { len });
    }
    let webhook = if config.webhook_secrets.is_empty() {
        None
    } else {
        Some(WebhookVerifier::new(config.webhook_secrets)?)
    };
    let state = ApiState {
        inner: Arc::new(Inner {
            engine,
            operator_token: TokenHash::of(config.operator_token.expose()),
            webhook,
        }),
    };

    let router = Router::new()
        .route("/api/dashboard", get(other::dashboard::<S, G>))
        .route(
            "/api/tasks",
            get(tasks::list::<S, G>).post(tasks::create::<S, G>),
        )
        .route(
            "/api/tasks/completed",
            axum::routing::delete(tasks::clear_completed::<S, G>),
        )
        .route(
            "/api/tasks/{id}",
            get(tasks::get_one::<S, G>).delete(tasks::delete::<S, G>),
        )
        .route("/api/tasks/{id}/retry", post(tasks::retry::<S, G>))
        .route(
            "/api/merchants",
            get(merchants::list::<S, G>).post(merchants::create::<S, G>),
        )
        .route(
            "/api/merchants/{id}",
            get(merchants::get_one::<S, G>).patch(merchants::update::<S, G>),
        )
        .route("/api/activity", get(other::activity::<S, G>))
        .route("/api/worker/claim", post(other::claim::<S, G>))
        .route("/api/worker/complete/{id}", post(other::complete::<S, G>))
        .route("/api/health", get(other::health::<S, G>))
        .route("/api/webhooks/stripe", post(other::webhook::<S, G>))
        .route("/api/openapi.json", get(openapi::document))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(config.body_limit))
        .with_state(state);
    Ok(router)
}

async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such route: see /api/openapi.json for the routes",
    )
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not take that method: see /api/openapi.json",
    )
}
