//! Error responses: one JSON shape, `{"error": {"code", "message"}}`, with
//! the status that fits, and extractors that reject malformed input with it.

use axum::Json;
use axum::extract::rejection::{BytesRejection, JsonRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;

use citadel_core::operator::OperatorError;
use citadel_core::store::StoreError;

use super::views::{ErrorBody, ErrorDetail};

/// An error response to a client.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    /// Creates an error with a status, a stable code and a message.
    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    /// Creates a 400 error for input that cannot be used.
    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", message)
    }

    /// Creates a 401 error for a missing or unknown token.
    pub(crate) fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    /// Logs the cause and creates a 500 error that does not show it to the
    /// client.
    pub(crate) fn internal(context: &'static str, error: &dyn std::error::Error) -> Self {
        tracing::error!(error = %citadel_core::error_chain(error), "{context}");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("{context}; the server log has the cause, and retrying may succeed"),
        )
    }

    /// Returns the status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// Returns the message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Converts an extractor's rejection: 413 and 415 keep their status, and
    /// every other malformed body or query is a 400.
    fn from_rejection(status: StatusCode, text: String) -> Self {
        match status {
            StatusCode::PAYLOAD_TOO_LARGE => Self::new(
                status,
                "payload_too_large",
                format!("the request body is larger than the server's limit: {text}"),
            ),
            StatusCode::UNSUPPORTED_MEDIA_TYPE => Self::new(
                status,
                "unsupported_media_type",
                "the request body must be JSON: send Content-Type: application/json",
            ),
            _ => Self::invalid(text),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.to_owned(),
                message: self.message,
            },
        };
        (self.status, Json(body)).into_response()
    }
}

impl From<OperatorError> for ApiError {
    fn from(error: OperatorError) -> Self {
        let message = error.to_string();
        match error {
            OperatorError::TaskNotFound(_) | OperatorError::MerchantNotFound(_) => {
                Self::new(StatusCode::NOT_FOUND, "not_found", message)
            }
            OperatorError::Forbidden { .. } => {
                Self::new(StatusCode::FORBIDDEN, "forbidden", message)
            }
            OperatorError::TaskStatusConflict { .. }
            | OperatorError::DuplicateDedupeKey { .. }
            | OperatorError::LeaseMismatch { .. }
            | OperatorError::Store(StoreError::DuplicateAccount { .. }) => {
                Self::new(StatusCode::CONFLICT, "conflict", message)
            }
            OperatorError::InvalidInput { .. } => Self::invalid(message),
            other => Self::internal("the request failed", &other),
        }
    }
}

/// A JSON body whose rejection is an [`ApiError`].
#[derive(Debug)]
pub(crate) struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(request, state).await {
            Ok(Json(value)) => Ok(Self(value)),
            Err(rejection) => Err(json_rejection(&rejection)),
        }
    }
}

fn json_rejection(rejection: &JsonRejection) -> ApiError {
    ApiError::from_rejection(rejection.status(), rejection.body_text())
}

/// A raw body whose rejection is an [`ApiError`].
#[derive(Debug)]
pub(crate) struct ApiBytes(pub axum::body::Bytes);

impl<S: Send + Sync> FromRequest<S> for ApiBytes {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        axum::body::Bytes::from_request(request, state)
            .await
            .map(Self)
            .map_err(|rejection: BytesRejection| {
                ApiError::from_rejection(rejection.status(), rejection.body_text())
            })
    }
}

/// A query string whose rejection is an [`ApiError`].
#[derive(Debug)]
pub(crate) struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|query| Self(query.0))
            .map_err(|rejection: QueryRejection| ApiError::invalid(rejection.body_text()))
    }
}

/// Parses a value of a path or query, naming it in the error.
pub(crate) fn parse<T>(field: &str, value: &str) -> Result<T, ApiError>
where
    T: std::str::FromStr,
    T::Err: std::fmt::Display,
{
    value
        .parse()
        .map_err(|err| ApiError::invalid(format!("invalid {field}: {err}")))
}
