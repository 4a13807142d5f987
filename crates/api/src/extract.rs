//! Extractors that turn every kind of bad input into an [`ApiError`] with a stable code,
//! before any handler runs and so before anything is written.

use axum::body::Bytes;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header::CONTENT_TYPE;
use axum::http::request::Parts;
use cordon_core::ReasonCode;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// A JSON body, with rejections mapped to reason codes.
#[derive(Debug)]
pub struct Json<T>(pub T);

pub(crate) fn body_too_large() -> ApiError {
    ApiError::new(
        ReasonCode::RequestBodyTooLarge,
        "the request body is larger than the limit",
    )
}

impl<S, T> FromRequest<S> for Json<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !is_json_content_type(request.headers()) {
            return Err(unsupported_media_type());
        }
        let bytes = body_bytes(request, state).await?;
        require_object(&bytes)?;
        axum::Json::<T>::from_bytes(&bytes)
            .map(|axum::Json(value)| Json(value))
            .map_err(|rejection: JsonRejection| {
                ApiError::new(ReasonCode::RequestBodyInvalid, rejection.body_text())
            })
    }
}

/// `application/json` or `application/<anything>+json`, parameters allowed (as axum's
/// own `Json` accepts).
fn is_json_content_type(headers: &axum::http::HeaderMap) -> bool {
    let Some(value) = headers
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
    else {
        return false;
    };
    let essence = value
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence
        .strip_prefix("application/")
        .is_some_and(|subtype| subtype == "json" || subtype.ends_with("+json"))
}

fn unsupported_media_type() -> ApiError {
    ApiError::new(
        ReasonCode::UnsupportedMediaType,
        "expected a body with `Content-Type: application/json`",
    )
}

/// The whole body, within the configured limit.
async fn body_bytes<S: Send + Sync>(request: Request, state: &S) -> Result<Bytes, ApiError> {
    Bytes::from_request(request, state)
        .await
        .map_err(|rejection| {
            if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                body_too_large()
            } else {
                ApiError::new(ReasonCode::RequestBodyInvalid, rejection.body_text())
            }
        })
}

/// Every request body of the API is a JSON object. serde would also accept a struct
/// written as an array of its fields in order (`["coding", "dev"]`), which bypasses
/// `deny_unknown_fields` and is not what the OpenAPI document describes.
fn require_object(bytes: &[u8]) -> Result<(), ApiError> {
    match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') => Ok(()),
        _ => Err(ApiError::new(
            ReasonCode::RequestBodyInvalid,
            "the request body must be a JSON object",
        )),
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
        let json_content_type = is_json_content_type(request.headers());
        let bytes = body_bytes(request, state).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(OptionalJson(T::default()));
        }
        if !json_content_type {
            return Err(unsupported_media_type());
        }
        require_object(&bytes)?;
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
