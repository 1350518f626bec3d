//! The dashboard, activity, external worker, health and webhook routes.

use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use serde::Deserialize;
use utoipa::IntoParams;

use citadel_core::IntakeOutcome;
use citadel_core::activity::{ActivityFilter, ActivityKind};
use citadel_core::ids::{ActivityId, MerchantId, TaskId};
use citadel_core::operator::{CompleteRequest, Operator, Scope, WorkerOutcome};
use citadel_core::payment::PaymentGateway;
use citadel_core::store::{ClaimRequest, Store};
use citadel_core::task::{Lease, TaskKind};

use super::ApiState;
use super::auth::Caller;
use super::error::{ApiBytes, ApiError, ApiJson, ApiQuery, parse};
use super::views::{
    ActivityPage, ClaimRequestBody, ClaimResponse, ClaimedTask, CompleteRequestBody, DashboardView,
    ErrorBody, HealthView, TaskView, WebhookResponse,
};

/// The batch size of an external claim that sets no limit.
const DEFAULT_CLAIM_LIMIT: u32 = 10;

/// The lease of an external claim that sets none: 5 minutes, like the
/// built-in workers.
const DEFAULT_LEASE_SECONDS: u64 = 300;

/// Returns the dashboard figures of the caller's scope.
#[utoipa::path(
    get, path = "/api/dashboard", tag = "dashboard",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The figures", body = DashboardView),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
    )
)]
pub(crate) async fn dashboard<S: Store, G: PaymentGateway>(
    State(state): State<ApiState<S, G>>,
    Caller(scope): Caller,
) -> Result<Json<DashboardView>, ApiError> {
    let dashboard = Operator::new(state.inner.engine.store(), scope)
        .dashboard()
        .await?;
    Ok(Json(dashboard.into()))
}

/// The query of `GET /api/activity`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct ActivityQuery {
    /// Only entries of this merchant.
    merchant_id: Option<String>,
    /// Only entries of this kind, such as `retry_declined`.
    kind: Option<String>,
    /// At most this many, 1 to 1000; 100 when absent.
    limit: Option<String>,
    /// Only entries with a lower id: the `next_before` of the previous page.
    before: Option<String>,
}

/// Lists the activity ledger, newest first.
#[utoipa::path(
    get, path = "/api/activity", tag = "activity", params(ActivityQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "A page of entries", body = ActivityPage),
        (status = 400, description = "Invalid filter", body = ErrorBody),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
    )
)]
pub(crate) async fn activity<S: Store, G: PaymentGateway>(
    State(state): State<ApiState<S, G>>,
    Caller(scope): Caller,
    ApiQuery(query): ApiQuery<ActivityQuery>,
) -> Result<Json<ActivityPage>, ApiError> {
    let filter = ActivityFilter {
        merchant_id: query
            .merchant_id
            .as_deref()
            .map(|s| parse::<MerchantId>("merchant_id", s))
            .transpose()?,
        kind: query
            .kind
            .as_deref()
            .map(|s| parse::<ActivityKind>("kind", s))
            .transpose()?,
        limit: query
            .limit
            .as_deref()
            .map(|s| parse::<u32>("limit", s))
            .transpose()?,
        before: query
            .before
            .as_deref()
            .map(|s| parse::<ActivityId>("before", s))
            .transpose()?,
    };
    let page = Operator::new(state.inner.engine.store(), scope)
        .list_activity(filter)
        .await?;
    Ok(Json(ActivityPage {
        items: page.items.into_iter().map(Into::into).collect(),
        next_before: page.next.map(ActivityId::get),
    }))
}

/// Claims due tasks for an external worker; a merchant token claims only
/// its own merchant's tasks.
#[utoipa::path(
    post, path = "/api/worker/claim", tag = "worker", request_body = ClaimRequestBody,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The claimed tasks and their lease tokens", body = ClaimResponse),
        (status = 400, description = "Malformed body or invalid value", body = ErrorBody),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
    )
)]
pub(crate) async fn claim<S: Store, G: PaymentGateway>(
    State(state): State<ApiState<S, G>>,
    Caller(scope): Caller,
    ApiJson(request): ApiJson<ClaimRequestBody>,
) -> Result<Json<ClaimResponse>, ApiError> {
    let kinds = match request.kinds {
        Some(kinds) => kinds.into_iter().map(TaskKind::new).collect(),
        None => vec![TaskKind::retry_payment()],
    };
    let request = ClaimRequest {
        worker_id: request.worker_id,
        kinds,
        limit: request.limit.unwrap_or(DEFAULT_CLAIM_LIMIT),
        lease_duration: Duration::from_secs(request.lease_seconds.unwrap_or(DEFAULT_LEASE_SECONDS)),
    };
    let tasks = Operator::new(state.inner.engine.store(), scope)
        .claim(request)
        .await?;
    let tasks = tasks
        .into_iter()
        .filter_map(|task| {
            let token = task.lease.as_ref().map(|lease: &Lease| lease.token)?;
            Some(ClaimedTask {
                task: task.into(),
                lease_token: token,
            })
        })
        .collect();
    Ok(Json(ClaimResponse { tasks }))
}

/// Records an external worker's outcome of a task it claimed.
#[utoipa::path(
    post, path = "/api/worker/complete/{id}", tag = "worker", request_body = CompleteRequestBody,
    params(("id" = i64, Path, description = "The task's id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The task after the outcome", body = TaskView),
        (status = 400, description = "Malformed body or invalid value", body = ErrorBody),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
        (status = 404, description = "No such task in the caller's scope", body = ErrorBody),
        (status = 409, description = "The task is not running under this lease token", body = ErrorBody),
    )
)]
pub(crate) async fn complete<S: Store, G: PaymentGateway>(
    State(state): State<ApiState<S, G>>,
    Caller(scope): Caller,
    Path(id): Path<String>,
    ApiJson(request): ApiJson<CompleteRequestBody>,
) -> Result<Json<TaskView>, ApiError> {
    let id = parse::<TaskId>("task id", &id)?;
    let error = request.error.unwrap_or_default();
    let outcome = match request.outcome.as_str() {
        "completed" => WorkerOutcome::Completed,
        "retry" => WorkerOutcome::Retry {
            error,
            run_at: request.run_at,
        },
        "failed" => WorkerOutcome::Failed { error },
        other => {
            return Err(ApiError::invalid(format!(
                "invalid outcome {other:?}: expected completed, retry or failed"
            )));
        }
    };
    let request = CompleteRequest {
        lease_token: request.lease_token,
        outcome,
    };
    let task = Operator::new(state.inner.engine.store(), scope)
        .complete(id, request)
        .await?;
    Ok(Json(task.into()))
}

/// Reports whether the database is reachable and its schema is current, and
/// how far behind the queue is. Needs no token.
#[utoipa::path(
    get, path = "/api/health", tag = "health",
    responses(
        (status = 200, description = "Healthy", body = HealthView),
        (status = 503, description = "The database is unreachable or its schema is not current", body = HealthView),
    )
)]
pub(crate) async fn health<S: Store, G: PaymentGateway>(
    State(state): State<ApiState<S, G>>,
) -> (StatusCode, Json<HealthView>) {
    let health = Operator::new(state.inner.engine.store(), Scope::Operator)
        .health()
        .await;
    let status = if health.is_healthy() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(health.into()))
}

/// Receives a Stripe webhook: checks the signature on the raw body, then
/// records and applies the event in one transaction.
#[utoipa::path(
    post, path = "/api/webhooks/stripe", tag = "webhooks",
    request_body(content = String, content_type = "application/json", description = "The event, exactly as Stripe sent it"),
    params(("Stripe-Signature" = String, Header, description = "Stripe's signature header")),
    responses(
        (status = 200, description = "The event's transaction committed, or it was a duplicate", body = WebhookResponse),
        (status = 400, description = "Missing or invalid signature, or not an event; nothing was written", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 422, description = "No merchant is registered for the event's account; nothing was written, and Stripe will redeliver", body = ErrorBody),
        (status = 500, description = "The database failed; nothing was written, and Stripe will redeliver", body = ErrorBody),
        (status = 503, description = "No webhook secret is configured", body = ErrorBody),
    )
)]
pub(crate) async fn webhook<S: Store, G: PaymentGateway>(
    State(state): State<ApiState<S, G>>,
    headers: HeaderMap,
    ApiBytes(body): ApiBytes,
) -> Result<Json<WebhookResponse>, ApiError> {
    let Some(verifier) = &state.inner.webhook else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "no webhook signing secret is configured: set STRIPE_WEBHOOK_SECRET",
        ));
    };
    let signature = headers
        .get("stripe-signature")
        .and_then(|value| value.to_str().ok())
        .ok_or_else(|| ApiError::invalid("missing Stripe-Signature header"))?;
    let event = verifier.verify_and_parse(&body, signature).map_err(|err| {
        tracing::warn!(error = %err, "webhook rejected");
        ApiError::invalid(format!("webhook rejected: {err}"))
    })?;

    let outcome = state
        .inner
        .engine
        .ingest(&event)
        .await
        .map_err(|err| ApiError::internal("recording the event failed", &err))?;
    let outcome = match outcome {
        IntakeOutcome::Applied { .. } => "applied",
        IntakeOutcome::Duplicate => "duplicate",
        IntakeOutcome::Ignored { .. } => "ignored",
        // Nothing was recorded, so a 200 would lose the event: an error
        // status makes Stripe redeliver it, and a redelivery after the
        // merchant registers is applied.
        IntakeOutcome::UnknownAccount { account } => {
            let account = account.map_or_else(
                || "the platform's own account".to_owned(),
                |id| format!("account {id}"),
            );
            tracing::warn!(event.id = %event.id, "webhook rejected: no merchant for {account}");
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "unknown_account",
                format!(
                    "no merchant is registered for {account}: register it with POST \
                     /api/merchants, and Stripe's next redelivery of this event is applied"
                ),
            ));
        }
        _ => "other",
    };
    Ok(Json(WebhookResponse {
        outcome: outcome.to_owned(),
    }))
}
