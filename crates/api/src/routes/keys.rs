//! API keys. A token is returned once, at creation; afterwards only metadata.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use cordon_core::{ApiKey, KeyId, TenantId, Timestamp};
use cordon_policy::{Action, Resource};
use cordon_wire::{CreateKeyRequest, CreatedKeyBody, ErrorBody, KeyBody, KeyList};
use serde::Deserialize;
use utoipa::IntoParams;

use super::validate;
use crate::AppState;
use crate::auth::{Caller, authorize, generate_token, token_digest};
use crate::error::{ApiError, ApiResult};
use crate::extract::{Json, Query, parse_id};

fn key_body(key: ApiKey) -> KeyBody {
    KeyBody {
        id: key.id.to_string(),
        tenant_id: key.tenant_id.to_string(),
        role: key.role,
        name: key.name,
        system: key.system,
        created_by: key.created_by.map(|id| id.to_string()),
        created_at: key.created_at,
        revoked_at: key.revoked_at,
    }
}

/// The tenant named by an optional `tenant_id`, as visible to the caller, and existing.
async fn target_tenant(
    state: &AppState,
    caller: &Caller,
    requested: Option<&str>,
) -> ApiResult<TenantId> {
    let requested = requested
        .map(|id| parse_id::<TenantId>(id, "tenant"))
        .transpose()?;
    let id = caller.visible_tenant(requested)?;
    if requested.is_some() && state.store().get_tenant(id).await?.is_none() {
        return Err(ApiError::not_found("tenant"));
    }
    Ok(id)
}

/// Create an API key in the caller's tenant (or, for the system admin, in any tenant).
#[utoipa::path(post, path = "/v1/keys", tag = "keys",
    request_body = CreateKeyRequest,
    params(("Idempotency-Key" = Option<String>, Header, description = "Replays the first response for the same request")),
    responses(
        (status = 201, description = "The key, with its token shown this once", body = CreatedKeyBody),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
    ))]
pub(crate) async fn create_key(
    State(state): State<AppState>,
    caller: Caller,
    Json(request): Json<CreateKeyRequest>,
) -> ApiResult<(StatusCode, axum::Json<CreatedKeyBody>)> {
    let tenant_id = target_tenant(&state, &caller, request.tenant_id.as_deref()).await?;
    authorize(
        &state,
        &caller,
        Action::KeyCreate,
        Resource::Tenant(tenant_id),
    )?;
    validate::text("name", &request.name, 128)?;
    let token = generate_token();
    let key = ApiKey {
        id: KeyId::generate(),
        tenant_id,
        role: request.role,
        name: request.name,
        system: false,
        token_digest: token_digest(&token),
        created_by: Some(caller.key.id),
        created_at: Timestamp::now(),
        revoked_at: None,
    };
    state.store().create_key(&key).await?;
    tracing::info!(key = %key.id, tenant = %tenant_id, role = %key.role, "key created");
    Ok((
        StatusCode::CREATED,
        axum::Json(CreatedKeyBody {
            key: key_body(key),
            token,
        }),
    ))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct TenantQuery {
    /// Another tenant (system admin only); defaults to the caller's.
    tenant_id: Option<String>,
}

/// List the API keys of the caller's tenant, revoked ones included.
#[utoipa::path(get, path = "/v1/keys", tag = "keys", params(TenantQuery),
    responses((status = 200, body = KeyList), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub(crate) async fn list_keys(
    State(state): State<AppState>,
    caller: Caller,
    Query(query): Query<TenantQuery>,
) -> ApiResult<axum::Json<KeyList>> {
    let tenant_id = target_tenant(&state, &caller, query.tenant_id.as_deref()).await?;
    authorize(
        &state,
        &caller,
        Action::KeyList,
        Resource::Tenant(tenant_id),
    )?;
    let keys = state.store().list_keys(tenant_id).await?;
    Ok(axum::Json(KeyList {
        items: keys.into_iter().map(key_body).collect(),
    }))
}

/// Revoke an API key. It stops authenticating at once; its metadata stays listed.
#[utoipa::path(delete, path = "/v1/keys/{id}", tag = "keys",
    params(("id" = String, Path, description = "Key id"), TenantQuery),
    responses((status = 200, body = KeyBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn revoke_key(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(query): Query<TenantQuery>,
) -> ApiResult<axum::Json<KeyBody>> {
    let id = parse_id::<KeyId>(&id, "key")?;
    let tenant_id = target_tenant(&state, &caller, query.tenant_id.as_deref()).await?;
    let key = state
        .store()
        .get_key(tenant_id, id)
        .await?
        .ok_or_else(|| ApiError::not_found("key"))?;
    let resource = Resource::Key {
        id: key.id,
        tenant_id: key.tenant_id,
        role: key.role,
        system: key.system,
    };
    authorize(&state, &caller, Action::KeyRevoke, resource)?;
    let revoked = state
        .store()
        .revoke_key(tenant_id, id, Timestamp::now())
        .await?;
    state.key_cache().evict(id);
    tracing::info!(key = %id, tenant = %tenant_id, "key revoked");
    Ok(axum::Json(key_body(revoked)))
}
