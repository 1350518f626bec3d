//! The payment gateway: paying invoices over Stripe's API with async-stripe.
//!
//! [`StripeGateway`] implements [`PaymentGateway`]. Each call sends one
//! `POST /v1/invoices/{id}/pay`, with the merchant's connected account in the
//! `Stripe-Account` header and the attempt's key in `Idempotency-Key`, and
//! maps the response to a [`PaymentOutcome`]:
//!
//! | Stripe's response | outcome |
//! |---|---|
//! | 2xx, invoice `paid` | [`Paid`](PaymentOutcome::Paid) with the invoice's `amount_paid` |
//! | 2xx, invoice still `open` | [`Processing`](PaymentOutcome::Processing): the payment has not settled yet |
//! | 402 `card_error` | [`Declined`](PaymentOutcome::Declined) |
//! | `authentication_required` and other errors that need the customer | [`ActionRequired`](PaymentOutcome::ActionRequired) |
//! | 400 for an invoice already paid, void, uncollectible or deleted; 404 | [`NotPayable`](PaymentOutcome::NotPayable) |
//! | 429 | [`RateLimited`](PaymentOutcome::RateLimited) |
//! | 409 (same key in flight), 5xx, timeout, connection failure, unreadable body | [`Transient`](PaymentOutcome::Transient) |
//! | 401, 403, any other 4xx | [`Rejected`](PaymentOutcome::Rejected) |
//!
//! The gateway sends each request exactly once: the engine owns retries and
//! repeats a transient failure later with the same key. Stripe returns the
//! stored response of a key instead of charging again.
//!
//! NOTE: Stripe stores the response of every request that began executing,
//! a 500 included, and returns it for each retry with the same key. Such a
//! 500 stays [`Transient`](PaymentOutcome::Transient) until the engine's
//! attempts run out; only a 500 returned before execution began (the common
//! case) clears on a retry.
//!
//! # Example
//!
//! ```no_run
//! use std::time::Duration;
//!
//! use citadel_core::Secret;
//! use citadel_core::ids::{AccountId, InvoiceId};
//! use citadel_core::payment::{IdempotencyKey, PayInvoice, PaymentGateway};
//! use citadel_stripe::gateway::StripeGateway;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let gateway = StripeGateway::builder(Secret::new("sk_test_..."))
//!     .timeout(Duration::from_secs(20))
//!     .build()?;
//!
//! let outcome = gateway
//!     .pay_invoice(&PayInvoice {
//!         account: Some(AccountId::parse("acct_1Pgc6tB7WZ01zgkW")?),
//!         invoice: InvoiceId::parse("in_1Pgc6tB7WZ01zgkWu9fdqL6I")?,
//!         idempotency_key: IdempotencyKey::new("citadel-7-in_1Pgc6tB7WZ01zgkWu9fdqL6I-retry-1"),
//!     })
//!     .await;
//! println!("{outcome:?}");
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use citadel_core::Secret;
use citadel_core::money::{Currency, Money};
use citadel_core::payment::{
    ActionOutcome, CardFingerprint, Decline, FinalActionRequest, PayInvoice, PaymentGateway,
    PaymentOutcome,
};
use stripe::{
    ApiErrors, ApiErrorsCode, ApiErrorsType, RequestStrategy, StripeError, StripeRequest,
};
use stripe_billing::invoice::PayInvoice as PayInvoiceRequest;
use stripe_billing::{Invoice, InvoiceStatus};
use tracing::Instrument;

/// Stripe's API address, the default base URL.
pub const DEFAULT_BASE_URL: &str = "https://api.stripe.com/";

/// The default time limit of one request: 30 seconds.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// The status reported in [`PaymentOutcome::Rejected`] for a request that was
/// never sent because async-stripe refused to build it. It is the status
/// Stripe gives invalid requests.
const NOT_SENT_STATUS: u16 = 400;

/// Error codes that mean the customer must act (authenticate the payment, or
/// complete it on-session), so no off-session retry can succeed.
const CUSTOMER_ACTION_CODES: &[&str] = &[
    "authentication_required",
    "invoice_payment_intent_requires_action",
    "payment_intent_action_required",
    "payment_intent_authentication_failure",
];

/// An error returned by [`StripeGatewayBuilder::build`] for an unusable
/// configuration. Messages never contain the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GatewayConfigError {
    /// The secret key is empty.
    #[error("missing Stripe secret key: pass the platform's secret key (sk_...)")]
    EmptySecretKey,
    /// The key is not a secret or restricted key, or has characters an HTTP
    /// header cannot carry.
    #[error(
        "invalid Stripe secret key: expected a secret (sk_...) or restricted (rk_...) key of \
         visible ASCII characters; publishable keys (pk_...) cannot pay invoices"
    )]
    InvalidSecretKey,
    /// The base URL is not an absolute `http` or `https` URL.
    #[error(
        "invalid Stripe base URL {url:?}: {reason}; expected a URL such as {DEFAULT_BASE_URL:?}"
    )]
    InvalidBaseUrl {
        /// The URL given.
        url: String,
        /// The reason the URL is invalid.
        reason: String,
    },
    /// The timeout is zero, which would fail every request.
    #[error(
        "invalid Stripe request timeout 0 s: use a positive duration, such as the default 30 s"
    )]
    ZeroTimeout,
}

/// Pays invoices through Stripe's API. Cheap to clone.
///
/// `Debug` shows the base URL and the timeout, never the key.
#[derive(Clone)]
pub struct StripeGateway {
    client: stripe::Client,
    base_url: String,
    timeout: Duration,
}

impl fmt::Debug for StripeGateway {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StripeGateway")
            .field("base_url", &self.base_url)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl StripeGateway {
    /// Starts a gateway that authenticates with the platform's secret key.
    /// Payments on a connected account use the platform's key with the
    /// account in `Stripe-Account`.
    pub fn builder(secret_key: Secret) -> StripeGatewayBuilder {
        StripeGatewayBuilder {
            secret_key,
            base_url: DEFAULT_BASE_URL.to_owned(),
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// Returns the base URL requests go to.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// Returns the time limit of one request.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    async fn send(&self, request: &PayInvoice) -> PaymentOutcome {
        let key = match stripe::IdempotencyKey::new(request.idempotency_key.as_str()) {
            Ok(key) => key,
            Err(error) => {
                let message = format!("invalid idempotency key: {error}; the request was not sent");
                return PaymentOutcome::Rejected {
                    status: NOT_SENT_STATUS,
                    message,
                };
            }
        };

        // `Idempotent` sends exactly one HTTP request: async-stripe retries
        // only under `Retry` and `ExponentialBackoff`.
        let mut call = PayInvoiceRequest::new(request.invoice.as_str())
            .customize()
            .request_strategy(RequestStrategy::Idempotent(key));
        if let Some(account) = &request.account {
            call = call.account_id(stripe::AccountId::from(account.as_str()));
        }

        match call.send(&self.client).await {
            Ok(invoice) => paid_outcome(&invoice),
            Err(error) => error_outcome(error, self.timeout),
        }
    }
}

#[async_trait]
impl PaymentGateway for StripeGateway {
    async fn pay_invoice(&self, request: &PayInvoice) -> PaymentOutcome {
        let account = request.account.as_ref().map(|account| account.as_str());
        let span = tracing::info_span!(
            "stripe.pay_invoice",
            stripe.account = account,
            invoice.id = %request.invoice,
            idempotency.key = request.idempotency_key.as_str(),
        );

        async {
            let outcome = self.send(request).await;
            log_outcome(&outcome);
            outcome
        }
        .instrument(span)
        .await
    }

    async fn run_final_action(&self, request: &FinalActionRequest) -> ActionOutcome {
        let account = request.account.as_ref().map(|account| account.as_str());
        let span = tracing::info_span!(
            "stripe.final_action",
            stripe.account = account,
            idempotency.key = request.idempotency_key.as_str(),
        );
        final_action::send(&self.client, self.timeout, request)
            .instrument(span)
            .await
    }
}

/// Builds a [`StripeGateway`].
#[derive(Debug, Clone)]
pub struct StripeGatewayBuilder {
    secret_key: Secret,
    base_url: String,
    timeout: Duration,
}

impl StripeGatewayBuilder {
    /// Sets the address of Stripe's API, for a local stand-in or a proxy.
    /// Default: [`DEFAULT_BASE_URL`], `https://api.stripe.com/`.
    pub fn base_url(mut self, base_url: impl Into<String>) -> Self {
        self.base_url = base_url.into();
        self
    }

    /// Sets the time limit of one request, from sending it to reading the
    /// whole response. A request past the limit becomes
    /// [`PaymentOutcome::Transient`]. Default: [`DEFAULT_TIMEOUT`], 30
    /// seconds.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Builds the gateway.
    ///
    /// # Errors
    ///
    /// Returns a [`GatewayConfigError`] for an empty or non-secret key, a
    /// base URL that is not absolute `http` or `https`, or a zero timeout.
    pub fn build(self) -> Result<StripeGateway, GatewayConfigError> {
        let key = self.secret_key.expose();
        if key.is_empty() {
            return Err(GatewayConfigError::EmptySecretKey);
        }
        let visible_ascii = key.bytes().all(|byte| byte.is_ascii_graphic());
        if !(key.starts_with("sk_") || key.starts_with("rk_")) || !visible_ascii {
            return Err(GatewayConfigError::InvalidSecretKey);
        }
        if self.timeout.is_zero() {
            return Err(GatewayConfigError::ZeroTimeout);
        }
        let base_url = normalize_base_url(self.base_url)?;

        let client = stripe::ClientBuilder::new(key)
            .url(base_url.clone())
            .timeout(self.timeout)
            .app_info("citadel", Some(env!("CARGO_PKG_VERSION").to_owned()), None)
            .build()
            .map_err(|error| client_config_error(error, &base_url))?;

        Ok(StripeGateway {
            client,
            base_url,
            timeout: self.timeout,
        })
    }
}

/// Checks the scheme and appends the `/` that async-stripe expects before
/// `v1/...`.
fn normalize_base_url(mut url: String) -> Result<String, GatewayConfigError> {
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(GatewayConfigError::InvalidBaseUrl {
            url,
            reason: "the scheme must be http or https".to_owned(),
        });
    }
    if !url.ends_with('/') {
        url.push('/');
    }
    Ok(url)
}

fn client_config_error(error: StripeError, base_url: &str) -> GatewayConfigError {
    match error {
        StripeError::ConfigError(reason) => GatewayConfigError::InvalidBaseUrl {
            url: base_url.to_owned(),
            reason,
        },
        // async-stripe reports a key that is not a valid header value as a
        // client error; its message names only the setting, not the value.
        _ => GatewayConfigError::InvalidSecretKey,
    }
}

/// Maps a 2xx response.
///
/// Only a `paid` invoice is a recovery. `/pay` charges off-session, so a
/// payment that needs the customer fails with a 402 `authentication_required`
/// (see [`error_outcome`]) rather than a 2xx. A 2xx whose invoice is still
/// `open` therefore means Stripe accepted a payment that has not settled yet,
/// as bank debits do for days. That is [`PaymentOutcome::Processing`]: a
/// retry could only repeat the stored response or be rejected while the payment
/// processes, and calling it a decline or an action would end the recovery
/// before the payment does. Stripe's `invoice.paid` or
/// `invoice.payment_failed` event then reports how it ended.
fn paid_outcome(invoice: &Invoice) -> PaymentOutcome {
    let status = invoice
        .status
        .as_ref()
        .map_or("unknown", InvoiceStatus::as_str);
    if invoice.status != Some(InvoiceStatus::Paid) {
        let message = format!(
            "invoice is {status} after the payment request: its payment has not settled, so \
             Stripe's invoice.paid or invoice.payment_failed event decides the outcome"
        );
        return PaymentOutcome::Processing { message };
    }

    let code = invoice.currency.to_string();
    match Currency::parse(&code) {
        Ok(currency) => PaymentOutcome::Paid {
            amount_paid: Money::new(invoice.amount_paid, currency),
        },
        // Stripe only sends three-letter codes; should one ever not parse,
        // the invoice.paid event still closes the recovery.
        Err(error) => PaymentOutcome::NotPayable {
            message: format!("invoice is paid, but its currency is unreadable: {error}"),
        },
    }
}

/// Maps a failed request.
fn error_outcome(error: StripeError, timeout: Duration) -> PaymentOutcome {
    match error {
        StripeError::Stripe(error, status) => api_error_outcome(&error, status),
        StripeError::Timeout => PaymentOutcome::Transient {
            message: format!(
                "request to Stripe timed out after {} s",
                timeout.as_secs_f64()
            ),
        },
        StripeError::ClientError(message) => PaymentOutcome::Transient {
            message: format!("request to Stripe failed: {message}"),
        },
        // A body that is not Stripe's JSON: a 2xx invoice async-stripe cannot
        // read, or an error page from a proxy in front of Stripe.
        StripeError::JSONDeserialize(message) => PaymentOutcome::Transient {
            message: format!("unreadable response from Stripe: {message}"),
        },
        StripeError::ConfigError(message) => PaymentOutcome::Rejected {
            status: NOT_SENT_STATUS,
            message: format!("request not sent: {message}"),
        },
    }
}

/// Maps a response that carries Stripe's error object.
fn api_error_outcome(error: &ApiErrors, status: u16) -> PaymentOutcome {
    let message = describe(error);

    if status >= 500 {
        return PaymentOutcome::Transient { message };
    }
    if status == 429 {
        return PaymentOutcome::RateLimited { retry_after: None };
    }
    if needs_customer_action(error) {
        return PaymentOutcome::ActionRequired { message };
    }
    if status == 402 || error.type_ == ApiErrorsType::CardError {
        return PaymentOutcome::Declined(decline_of(error));
    }
    if status == 404 || error.code == Some(ApiErrorsCode::ResourceMissing) {
        return PaymentOutcome::NotPayable { message };
    }
    if status == 400 && invoice_not_payable(error) {
        return PaymentOutcome::NotPayable { message };
    }
    // 409: a request with the same key is still running. Stripe stores its
    // response and returns it to the next request with the key.
    if status == 409 {
        return PaymentOutcome::Transient { message };
    }
    PaymentOutcome::Rejected { status, message }
}

fn needs_customer_action(error: &ApiErrors) -> bool {
    let code = error.code.as_ref().map(ApiErrorsCode::as_str);
    let by_code = code.is_some_and(|code| CUSTOMER_ACTION_CODES.contains(&code));
    let by_decline = error.decline_code.as_deref() == Some("authentication_required");
    by_code || by_decline
}

/// Tells whether a 400 means the invoice can no longer be paid.
///
/// NOTE: Stripe has no error code for "invoice already paid", "void",
/// "uncollectible" or "deleted" (async-stripe 1.0.0-rc.10's `ApiErrorsCode`
/// lists none; Stripe returns `invalid_request_error` with a message such as
/// "Invoice is already paid"), so this reads the message. Should Stripe add
/// codes, match them first.
fn invoice_not_payable(error: &ApiErrors) -> bool {
    if error.type_ != ApiErrorsType::InvalidRequestError {
        return false;
    }
    let Some(message) = error.message.as_deref() else {
        return false;
    };
    let message = message.to_ascii_lowercase();
    [
        "already paid",
        "is paid",
        "void",
        "uncollectible",
        "deleted",
    ]
    .iter()
    .any(|phrase| message.contains(phrase))
}

fn decline_of(error: &ApiErrors) -> Decline {
    let fingerprint = error
        .payment_method
        .as_ref()
        .and_then(|method| method.card.as_ref())
        .and_then(|card| card.fingerprint.clone())
        .and_then(CardFingerprint::new);
    Decline {
        code: error.code.as_ref().map(|code| code.as_str().to_owned()),
        decline_code: error.decline_code.clone(),
        advice_code: error.advice_code.clone(),
        message: error.message.clone(),
        network_advice_code: error.network_advice_code.clone(),
        card_fingerprint: fingerprint,
        ..Decline::default()
    }
}

/// Returns Stripe's message with the error type and code, for outcomes that
/// carry a message.
fn describe(error: &ApiErrors) -> String {
    let message = error.message.as_deref().unwrap_or("no message");
    match &error.code {
        Some(code) => format!("{message} ({}, {})", error.type_.as_str(), code.as_str()),
        None => format!("{message} ({})", error.type_.as_str()),
    }
}

/// Logs an outcome at the level its cause deserves: a merchant's customer
/// (declines, paid, needs action) at info, Stripe or the network at warn, and
/// a request Stripe rejected at error.
fn log_outcome(outcome: &PaymentOutcome) {
    match outcome {
        PaymentOutcome::Paid { amount_paid } => {
            tracing::info!(amount.paid = %amount_paid, "invoice paid");
        }
        PaymentOutcome::Declined(decline) => {
            tracing::info!(
                decline.code = decline.code.as_deref(),
                decline.decline_code = decline.decline_code.as_deref(),
                decline.advice_code = decline.advice_code.as_deref(),
                "payment declined"
            );
        }
        PaymentOutcome::ActionRequired { message } => {
            tracing::info!(stripe.message = %message, "payment needs the customer's action");
        }
        PaymentOutcome::NotPayable { message } => {
            tracing::info!(stripe.message = %message, "invoice not payable");
        }
        PaymentOutcome::Processing { message } => {
            tracing::info!(stripe.message = %message, "payment processing");
        }
        PaymentOutcome::RateLimited { .. } => {
            tracing::warn!("payment request rate limited by Stripe (HTTP 429)");
        }
        PaymentOutcome::Transient { message } => {
            tracing::warn!(stripe.message = %message, "payment request failed; retry with the same key");
        }
        PaymentOutcome::Rejected { status, message } => {
            tracing::error!(http.status = status, stripe.message = %message, "Stripe rejected the payment request");
        }
        other => tracing::info!(outcome = ?other, "payment request finished"),
    }
}

mod final_action;
#[cfg(test)]
mod tests;
