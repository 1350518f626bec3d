//! The task routes.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use chrono::Utc;
use serde::Deserialize;
use utoipa::IntoParams;

use citadel_core::ids::{InvoiceId, MerchantId, TaskId};
use citadel_core::operator::Operator;
use citadel_core::payment::PaymentGateway;
use citadel_core::store::{Store, TaskFilter};
use citadel_core::task::{DEFAULT_MAX_ATTEMPTS, NewTask, TaskKind, TaskStatus};

use super::ApiState;
use super::auth::Caller;
use super::error::{ApiError, ApiJson, ApiQuery, parse};
use super::views::{CreateTaskRequest, DeletedCount, ErrorBody, TaskPage, TaskView};

/// The query of `GET /api/tasks`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct TaskQuery {
    /// Only tasks in this status: `pending`, `running`, `completed`,
    /// `failed` or `cancelled`.
    status: Option<String>,
    /// Only tasks of this merchant.
    merchant_id: Option<String>,
    /// At most this many, 1 to 1000; 100 when absent.
    limit: Option<String>,
    /// Only tasks with a lower id: the `next_before` of the previous page.
    before: Option<String>,
}

impl TaskQuery {
    fn filter(&self) -> Result<TaskFilter, ApiError> {
        Ok(TaskFilter {
            status: self
                .status
                .as_deref()
                .map(|s| parse::<TaskStatus>("status", s))
                .transpose()?,
            merchant_id: self
                .merchant_id
                .as_deref()
                .map(|s| parse::<MerchantId>("merchant_id", s))
                .transpose()?,
            limit: self
                .limit
                .as_deref()
                .map(|s| parse::<u32>("limit", s))
                .transpose()?,
            before: self
                .before
                .as_deref()
                .map(|s| parse::<TaskId>("before", s))
                .transpose()?,
        })
    }
}

/// Lists tasks newest first.
#[utoipa::path(
    get, path = "/api/tasks", tag = "tasks", params(TaskQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "A page of tasks", body = TaskPage),
        (status = 400, description = "Invalid filter", body = ErrorBody),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
    )
)]
pub(crate) async fn list<S: Store, G: PaymentGateway>(
    State(state): State<ApiState<S, G>>,
    Caller(scope): Caller,
    ApiQuery(query): ApiQuery<TaskQuery>,
) -> Result<Json<TaskPage>, ApiError> {
    let filter = query.filter()?;
    let page = Operator::new(state.inner.engine.store(), scope)
        .list_tasks(filter)
        .await?;
    Ok(Json(TaskPage {
        items: page.items.into_iter().map(Into::into).collect(),
        next_before: page.next.map(TaskId::get),
    }))
}

/// Returns a task.
#[utoipa::path(
    get, path = "/api/tasks/{id}", tag = "tasks",
    params(("id" = i64, Path, description = "The task's id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The task", body = TaskView),
        (status = 400, description = "Invalid id", body = ErrorBody),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
        (status = 404, description = "No such task in the caller's scope", body = ErrorBody),
    )
)]
pub(crate) async fn get_one<S: Store, G: PaymentGateway>(
    State(state): State<ApiState<S, G>>,
    Caller(scope): Caller,
    Path(id): Path<String>,
) -> Result<Json<TaskView>, ApiError> {
    let id = parse::<TaskId>("task id", &id)?;
    let task = Operator::new(state.inner.engine.store(), scope)
        .task(id)
        .await?;
    Ok(Json(task.into()))
}

/// Queues a task.
#[utoipa::path(
    post, path = "/api/tasks", tag = "tasks", request_body = CreateTaskRequest,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "The task, queued", body = TaskView),
        (status = 400, description = "Malformed body or invalid value", body = ErrorBody),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
        (status = 404, description = "No such merchant in the caller's scope", body = ErrorBody),
        (status = 409, description = "A live task has the same dedupe key", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
    )
)]
pub(crate) async fn create<S: Store, G: PaymentGateway>(
    State(state): State<ApiState<S, G>>,
    Caller(scope): Caller,
    ApiJson(request): ApiJson<CreateTaskRequest>,
) -> Result<(StatusCode, Json<TaskView>), ApiError> {
    let merchant_id = MerchantId::new(request.merchant_id);
    if request.merchant_id <= 0 {
        return Err(ApiError::invalid(format!(
            "invalid merchant_id {}: expected a positive integer",
            request.merchant_id
        )));
    }
    let invoice_id = request
        .invoice_id
        .as_deref()
        .map(|id| parse::<InvoiceId>("invoice_id", id))
        .transpose()?;
    let task = NewTask {
        merchant_id,
        kind: TaskKind::new(request.kind),
        invoice_id,
        payload: request
            .payload
            .unwrap_or_else(|| serde_json::Value::Object(serde_json::Map::new())),
        run_at: request.run_at.unwrap_or_else(Utc::now),
        max_attempts: request.max_attempts.unwrap_or(DEFAULT_MAX_ATTEMPTS),
        dedupe_key: request.dedupe_key,
        priority: request.priority.unwrap_or(0),
    };
    let task = Operator::new(state.inner.engine.store(), scope)
        .create_task(task)
        .await?;
    Ok((StatusCode::CREATED, Json(task.into())))
}

/// Sends a failed task back to the queue, due now with its attempts reset.
#[utoipa::path(
    post, path = "/api/tasks/{id}/retry", tag = "tasks",
    params(("id" = i64, Path, description = "The task's id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The task, pending again", body = TaskView),
        (status = 400, description = "Invalid id", body = ErrorBody),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
        (status = 404, description = "No such task in the caller's scope", body = ErrorBody),
        (status = 409, description = "The task is not failed, or a live task has its dedupe key", body = ErrorBody),
    )
)]
pub(crate) async fn retry<S: Store, G: PaymentGateway>(
    State(state): State<ApiState<S, G>>,
    Caller(scope): Caller,
    Path(id): Path<String>,
) -> Result<Json<TaskView>, ApiError> {
    let id = parse::<TaskId>("task id", &id)?;
    let task = Operator::new(state.inner.engine.store(), scope)
        .retry_task(id)
        .await?;
    Ok(Json(task.into()))
}

/// Deletes a task that is not running.
#[utoipa::path(
    delete, path = "/api/tasks/{id}", tag = "tasks",
    params(("id" = i64, Path, description = "The task's id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The task as it was", body = TaskView),
        (status = 400, description = "Invalid id", body = ErrorBody),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
        (status = 404, description = "No such task in the caller's scope", body = ErrorBody),
        (status = 409, description = "The task is running", body = ErrorBody),
    )
)]
pub(crate) async fn delete<S: Store, G: PaymentGateway>(
    State(state): State<ApiState<S, G>>,
    Caller(scope): Caller,
    Path(id): Path<String>,
) -> Result<Json<TaskView>, ApiError> {
    let id = parse::<TaskId>("task id", &id)?;
    let task = Operator::new(state.inner.engine.store(), scope)
        .delete_task(id)
        .await?;
    Ok(Json(task.into()))
}

/// Deletes the completed tasks of the caller's scope.
#[utoipa::path(
    delete, path = "/api/tasks/completed", tag = "tasks",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "How many were deleted", body = DeletedCount),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
    )
)]
pub(crate) async fn clear_completed<S: Store, G: PaymentGateway>(
    State(state): State<ApiState<S, G>>,
    Caller(scope): Caller,
) -> Result<Json<DeletedCount>, ApiError> {
    let deleted = Operator::new(state.inner.engine.store(), scope)
        .clear_completed()
        .await?;
    Ok(Json(DeletedCount { deleted }))
}
