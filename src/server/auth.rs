//! Bearer-token authentication.
//!
//! The operator token comes from the server's configuration, and each
//! merchant's token from `POST /api/merchants`. Both are compared as SHA-256
//! digests: the operator's digest is computed once at start-up, and a
//! merchant's is looked up in the store, which keeps no token in clear.

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;

use citadel_core::operator::token::TokenHash;
use citadel_core::operator::{Scope, merchant_for_token};
use citadel_core::payment::PaymentGateway;
use citadel_core::store::Store;

use super::ApiState;
use super::error::ApiError;

/// The authenticated caller's scope.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Caller(pub Scope);

impl<S: Store, G: PaymentGateway> FromRequestParts<ApiState<S, G>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &ApiState<S, G>,
    ) -> Result<Self, Self::Rejection> {
        let token = bearer_token(parts)?;
        // Comparing digests instead of the tokens themselves means a timing
        // difference can only reveal a prefix of a digest, never of a token.
        if TokenHash::of(token) == state.inner.operator_token {
            return Ok(Caller(Scope::Operator));
        }
        match merchant_for_token(state.inner.engine.store(), token).await {
            Ok(Some(merchant)) => Ok(Caller(Scope::Merchant(merchant.id))),
            Ok(None) => Err(ApiError::unauthorized(
                "invalid bearer token: use the operator token or a merchant token from POST /api/merchants",
            )),
            Err(err) => Err(ApiError::internal("checking the bearer token failed", &err)),
        }
    }
}

fn bearer_token(parts: &Parts) -> Result<&str, ApiError> {
    let header = parts.headers.get(AUTHORIZATION).ok_or_else(|| {
        ApiError::unauthorized("missing Authorization header: send Authorization: Bearer <token>")
    })?;
    let token = header
        .to_str()
        .ok()
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|token| !token.is_empty());
    token.ok_or_else(|| {
        ApiError::unauthorized("invalid Authorization header: expected Bearer <token>")
    })
}
