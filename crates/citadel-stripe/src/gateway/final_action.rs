//! The final action of a recovery on the connected account: mark the
//! invoice uncollectible, or cancel its subscription.

use std::time::Duration;

use citadel_core::payment::{AccountAction, ActionOutcome, FinalActionRequest};
use stripe::{RequestStrategy, StripeError, StripeRequest};
use stripe_billing::invoice::MarkUncollectibleInvoice;
use stripe_billing::subscription::CancelSubscription;

use super::{NOT_SENT_STATUS, describe};

/// Sends the request once, with its idempotency key and `Stripe-Account`.
pub(super) async fn send(
    client: &stripe::Client,
    timeout: Duration,
    request: &FinalActionRequest,
) -> ActionOutcome {
    let key = match stripe::IdempotencyKey::new(request.idempotency_key.as_str()) {
        Ok(key) => key,
        Err(error) => {
            let message = format!("invalid idempotency key: {error}; the request was not sent");
            return ActionOutcome::Rejected {
                status: NOT_SENT_STATUS,
                message,
            };
        }
    };
    let account = request
        .account
        .as_ref()
        .map(|account| stripe::AccountId::from(account.as_str()));

    // `Idempotent` sends exactly one HTTP request, as for `/pay`.
    let result = match &request.action {
        AccountAction::MarkUncollectible { invoice } => {
            let mut call = MarkUncollectibleInvoice::new(invoice.as_str())
                .customize()
                .request_strategy(RequestStrategy::Idempotent(key));
            if let Some(account) = account {
                call = call.account_id(account);
            }
            call.send(client).await.map(drop)
        }
        AccountAction::CancelSubscription { subscription } => {
            let mut call = CancelSubscription::new(subscription.as_str())
                .customize()
                .request_strategy(RequestStrategy::Idempotent(key));
            if let Some(account) = account {
                call = call.account_id(account);
            }
            call.send(client).await.map(drop)
        }
    };

    let outcome = match result {
        Ok(()) => ActionOutcome::Done,
        Err(error) => error_outcome(error, timeout),
    };
    log_outcome(&outcome);
    outcome
}

/// Maps a failed request: Stripe's and the network's failures are retried
/// with the same key, and anything Stripe rejected goes to an operator.
fn error_outcome(error: StripeError, timeout: Duration) -> ActionOutcome {
    match error {
        StripeError::Stripe(error, status) => {
            let message = describe(&error);
            match status {
                429 => ActionOutcome::RateLimited { retry_after: None },
                409 | 500.. => ActionOutcome::Transient { message },
                _ => ActionOutcome::Rejected { status, message },
            }
        }
        StripeError::Timeout => ActionOutcome::Transient {
            message: format!(
                "request to Stripe timed out after {} s",
                timeout.as_secs_f64()
            ),
        },
        StripeError::ClientError(message) => ActionOutcome::Transient {
            message: format!("request to Stripe failed: {message}"),
        },
        StripeError::JSONDeserialize(message) => ActionOutcome::Transient {
            message: format!("unreadable response from Stripe: {message}"),
        },
        StripeError::ConfigError(message) => ActionOutcome::Rejected {
            status: NOT_SENT_STATUS,
            message: format!("request not sent: {message}"),
        },
    }
}

fn log_outcome(outcome: &ActionOutcome) {
    match outcome {
        ActionOutcome::Done => tracing::info!("final action done"),
        ActionOutcome::RateLimited { .. } => {
            tracing::warn!("final action rate limited by Stripe (HTTP 429)");
        }
        ActionOutcome::Transient { message } => {
            tracing::warn!(stripe.message = %message, "final action failed; retry with the same key");
        }
        ActionOutcome::Rejected { status, message } => {
            tracing::error!(http.status = status, stripe.message = %message, "Stripe rejected the final action");
        }
        other => tracing::info!(outcome = ?other, "final action finished"),
    }
}
