//! The merchant routes.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use utoipa::IntoParams;

use citadel_core::ids::{AccountId, MerchantId};
use citadel_core::merchant::{MerchantStatus, NewMerchant};
use citadel_core::operator::{MerchantUpdate, Operator};
use citadel_core::payment::PaymentGateway;
use citadel_core::store::Store;

use super::ApiState;
use super::auth::Caller;
use super::error::{ApiError, ApiJson, ApiQuery, parse};
use super::views::{
    CreateMerchantRequest, CreatedMerchantView, ErrorBody, MerchantPage, MerchantView,
    UpdateMerchantRequest,
};

/// The query of `GET /api/merchants`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct MerchantQuery {
    /// At most this many, 1 to 1000; 100 when absent.
    limit: Option<String>,
    /// Only merchants with a higher id: the `next_after` of the previous
    /// page.
    after: Option<String>,
}

/// Lists merchants by id; a merchant token lists only its own.
#[utoipa::path(
    get, path = "/api/merchants", tag = "merchants", params(MerchantQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "A page of merchants", body = MerchantPage),
        (status = 400, description = "Invalid limit or cursor", body = ErrorBody),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
    )
)]
pub(crate) async fn list<S: Store, G: PaymentGateway>(
    State(state): State<ApiState<S, G>>,
    Caller(scope): Caller,
    ApiQuery(query): ApiQuery<MerchantQuery>,
) -> Result<Json<MerchantPage>, ApiError> {
    let limit = query
        .limit
        .as_deref()
        .map(|s| parse::<u32>("limit", s))
        .transpose()?;
    let after = query
        .after
        .as_deref()
        .map(|s| parse::<MerchantId>("after", s))
        .transpose()?;
    let page = Operator::new(state.inner.engine.store(), scope)
        .list_merchants(after, limit)
        .await?;
    Ok(Json(MerchantPage {
        items: page.items.into_iter().map(Into::into).collect(),
        next_after: page.next.map(MerchantId::get),
    }))
}

/// Returns a merchant.
#[utoipa::path(
    get, path = "/api/merchants/{id}", tag = "merchants",
    params(("id" = i64, Path, description = "The merchant's id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The merchant", body = MerchantView),
        (status = 400, description = "Invalid id", body = ErrorBody),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
        (status = 404, description = "No such merchant in the caller's scope", body = ErrorBody),
    )
)]
pub(crate) async fn get_one<S: Store, G: PaymentGateway>(
    State(state): State<ApiState<S, G>>,
    Caller(scope): Caller,
    Path(id): Path<String>,
) -> Result<Json<MerchantView>, ApiError> {
    let id = parse::<MerchantId>("merchant id", &id)?;
    let merchant = Operator::new(state.inner.engine.store(), scope)
        .merchant(id)
        .await?;
    Ok(Json(merchant.into()))
}

/// Registers a merchant and returns its API token, once.
#[utoipa::path(
    post, path = "/api/merchants", tag = "merchants", request_body = CreateMerchantRequest,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "The merchant and its token", body = CreatedMerchantView),
        (status = 400, description = "Malformed body or invalid value", body = ErrorBody),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
        (status = 403, description = "Not the operator token", body = ErrorBody),
        (status = 409, description = "The account is already registered", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
    )
)]
pub(crate) async fn create<S: Store, G: PaymentGateway>(
    State(state): State<ApiState<S, G>>,
    Caller(scope): Caller,
    ApiJson(request): ApiJson<CreateMerchantRequest>,
) -> Result<(StatusCode, Json<CreatedMerchantView>), ApiError> {
    let account_id = request
        .account_id
        .as_deref()
        .map(|id| parse::<AccountId>("account_id", id))
        .transpose()?;
    let mut merchant = NewMerchant::new(request.name, account_id);
    if let Some(policy) = request.policy {
        merchant.policy = policy;
    }
    if let Some(time_zone) = request.time_zone {
        merchant.time_zone = time_zone;
    }
    let created = Operator::new(state.inner.engine.store(), scope)
        .create_merchant(merchant)
        .await?;
    let view = CreatedMerchantView {
        merchant: created.merchant.into(),
        token: created.token.expose().to_owned(),
    };
    Ok((StatusCode::CREATED, Json(view)))
}

/// Changes a merchant's policy or status (`paused` or `active`).
#[utoipa::path(
    patch, path = "/api/merchants/{id}", tag = "merchants", request_body = UpdateMerchantRequest,
    params(("id" = i64, Path, description = "The merchant's id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The merchant as changed", body = MerchantView),
        (status = 400, description = "Malformed body or invalid value", body = ErrorBody),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
        (status = 403, description = "Not the operator token", body = ErrorBody),
        (status = 404, description = "No such merchant", body = ErrorBody),
    )
)]
pub(crate) async fn update<S: Store, G: PaymentGateway>(
    State(state): State<ApiState<S, G>>,
    Caller(scope): Caller,
    Path(id): Path<String>,
    ApiJson(request): ApiJson<UpdateMerchantRequest>,
) -> Result<Json<MerchantView>, ApiError> {
    let id = parse::<MerchantId>("merchant id", &id)?;
    let status = request
        .status
        .as_deref()
        .map(|s| parse::<MerchantStatus>("status", s))
        .transpose()?;
    let update = MerchantUpdate {
        policy: request.policy,
        status,
    };
    let merchant = Operator::new(state.inner.engine.store(), scope)
        .update_merchant(id, update)
        .await?;
    Ok(Json(merchant.into()))
}
