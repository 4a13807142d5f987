//! `Idempotency-Key` on POST: the first request with a key runs and its response is
//! recorded; the same key with the same method, path and body replays that response;
//! the same key with anything else is refused with 422 `IDEMPOTENCY_KEY_REUSED`. Keys
//! are scoped to the calling API key. A 5xx answer is not recorded, so the client may
//! retry; a claim left pending by a crash is taken over after `stale_after`.

use axum::body::{Body, to_bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use cordon_core::{ReasonCode, Timestamp};
use cordon_store::{IdempotencyScope, IdempotencyStart, RecordedResponse};
use sha2::{Digest, Sha256};

use crate::AppState;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::body_too_large;

pub const IDEMPOTENCY_KEY: &str = "idempotency-key";
/// Set on a response that is a replay of a recorded one.
pub const IDEMPOTENT_REPLAYED: &str = "idempotent-replayed";
/// Set on a response to a request whose key an earlier, unfinished attempt had claimed:
/// the work ran again, and the earlier attempt may have taken effect too.
pub const IDEMPOTENT_RETAKEN: &str = "idempotent-retaken";
/// Recorded responses larger than this are not kept (the request is still answered).
/// Large enough for an exec result carrying the default output limits (1 MiB per
/// stream) even when JSON escaping inflates it.
const MAX_RECORDED_BODY: usize = 16 << 20;

pub(crate) async fn idempotency(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let Some(value) = request.headers().get(IDEMPOTENCY_KEY) else {
        return Ok(next.run(request).await);
    };
    if request.method() != Method::POST {
        return Ok(next.run(request).await);
    }
    let key = value
        .to_str()
        .ok()
        .filter(|key| {
            !key.is_empty() && key.len() <= 255 && key.bytes().all(|b| b.is_ascii_graphic())
        })
        .ok_or_else(|| {
            ApiError::new(
                ReasonCode::IdempotencyKeyInvalid,
                "Idempotency-Key must be 1 to 255 visible ASCII characters",
            )
        })?
        .to_owned();
    let caller = request
        .extensions()
        .get::<Caller>()
        .cloned()
        .ok_or_else(|| ApiError::internal("idempotency layer runs before authentication"))?;

    let (parts, body) = request.into_parts();
    let bytes = to_bytes(body, state.options().max_body_bytes)
        .await
        .map_err(|_| body_too_large())?;
    let mut hasher = Sha256::new();
    hasher.update(parts.method.as_str().as_bytes());
    hasher.update([0]);
    hasher.update(parts.uri.path().as_bytes());
    hasher.update([0]);
    hasher.update(&bytes);
    let fingerprint: [u8; 32] = hasher.finalize().into();

    let scope = IdempotencyScope {
        tenant_id: caller.tenant_id(),
        principal: caller.key.id,
        key,
    };
    let store = state.store();
    let start = store
        .idempotency_begin(
            &scope,
            &fingerprint,
            Timestamp::now(),
            state.options().idempotency_stale_after,
        )
        .await?;
    match start {
        IdempotencyStart::Replay(recorded) => Ok(replay(recorded)),
        IdempotencyStart::Mismatch => Err(ApiError::new(
            ReasonCode::IdempotencyKeyReused,
            "this Idempotency-Key was already used with a different request",
        )),
        IdempotencyStart::InFlight => Err(ApiError::new(
            ReasonCode::IdempotencyKeyInFlight,
            "a request with this Idempotency-Key is still in progress; retry shortly",
        )),
        start @ (IdempotencyStart::Proceed | IdempotencyStart::TakeOver) => {
            let retaken = start == IdempotencyStart::TakeOver;
            if retaken {
                tracing::warn!(
                    key = %scope.key,
                    principal = %scope.principal,
                    "an earlier attempt with this Idempotency-Key never finished; running again, \
                     and that attempt may already have taken effect"
                );
            }
            let response = next
                .run(Request::from_parts(parts, Body::from(bytes)))
                .await;
            let status = response.status();
            let (parts, body) = response.into_parts();
            let bytes = match to_bytes(body, MAX_RECORDED_BODY).await {
                Ok(bytes) => bytes,
                Err(error) => {
                    store.idempotency_abandon(&scope).await?;
                    return Err(ApiError::internal(format!(
                        "response not recordable: {error}"
                    )));
                }
            };
            if status.is_server_error() {
                store.idempotency_abandon(&scope).await?;
            } else {
                let recorded = RecordedResponse {
                    status: status.as_u16(),
                    body: bytes.to_vec(),
                };
                store
                    .idempotency_complete(&scope, &recorded, Timestamp::now())
                    .await?;
            }
            let mut response = Response::from_parts(parts, Body::from(bytes));
            if retaken {
                response
                    .headers_mut()
                    .insert(IDEMPOTENT_RETAKEN, HeaderValue::from_static("true"));
            }
            Ok(response)
        }
    }
}

fn replay(recorded: RecordedResponse) -> Response {
    let status = StatusCode::from_u16(recorded.status).unwrap_or(StatusCode::OK);
    // Every recorded answer is JSON; a streamed exec (one JSON object per line) is the
    // only one that ends with a newline.
    let content_type = if recorded.body.ends_with(b"\n") {
        "application/x-ndjson"
    } else {
        "application/json"
    };
    let mut response = (status, recorded.body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
    response
}
