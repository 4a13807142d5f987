//! Extractors that turn every kind of bad input into an [`ApiError`] with a stable code,
//! before any handler runs and so before anything is written.

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::header::CONTENT_TYPE;
use cordon_core::ReasonCode;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// A JSON body, with rejections mapped to reason codes.
#[derive(Debug)]
pub struct Json<T>(pub T);

fn json_rejection(rejection: JsonRejection) -> ApiError {
    match rejection {
        JsonRejection::MissingJsonContentType(_) => ApiError::new(
            ReasonCode::UnsupportedMediaType,
            "expected a body with `Content-Type: application/json`",
        ),
        JsonRejection::BytesRejection(rejection)
            if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE =>
        {
            body_too_large()
        }
        other => ApiError::new(ReasonCode::RequestBodyInvalid, other.body_text()),
    }
}

pub(crate) fn body_too_large() -> ApiError {
    ApiError::new(ReasonCode::RequestBodyTooLarge, "the request body is larger than the limit")
}

impl<S, T> FromRequest<S> for Json<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        axum::Json::<T>::from_request(request, state)
            .await
            .map(|axum::Json(value)| Json(value))
            .map_err(json_rejection)
    }
}

/// A JSON body that may be absent altogether (no body, or an empty one): then
/// `T::default()`. A body that is present must be valid JSON.
#[derive(Debug)]
pub struct OptionalJson<T>(pub T);

impl<S, T> FromRequest<S> for OptionalJson<T>
where
    T: DeserializeOwned + Default,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let has_content_type = request.headers().contains_key(CONTENT_TYPE);
        let bytes = axum::body::Bytes::from_request(request, state).await.map_err(|rejection| {
            if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                body_too_large()
            } else {
                ApiError::new(ReasonCode::RequestBodyInvalid, rejection.body_text())
            }
        })?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(OptionalJson(T::default()));
        }
        if !has_content_type {
            return Err(ApiError::new(
                ReasonCode::UnsupportedMediaType,
                "expected a body with `Content-Type: application/json`",
            ));
        }
        serde_json::from_slice(&bytes)
            .map(OptionalJson)
            .map_err(|error| ApiError::new(ReasonCode::RequestBodyInvalid, error.to_string()))
    }
}

/// Query parameters, with rejections mapped to `REQUEST_QUERY_INVALID`.
#[derive(Debug)]
pub struct Query<T>(pub T);

impl<S, T> FromRequestParts<S> for Query<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(value)| Query(value))
            .map_err(|rejection: QueryRejection| {
                ApiError::new(ReasonCode::RequestQueryInvalid, rejection.body_text())
            })
    }
}

/// Parses a path id; a malformed id is simply not found.
pub(crate) fn parse_id<T: std::str::FromStr>(text: &str, what: &str) -> Result<T, ApiError> {
    text.parse().map_err(|_| ApiError::not_found(what))
}
