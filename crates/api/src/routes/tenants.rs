//! Tenants. Creating and listing them is for the system admin key only.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use cordon_core::{Tenant, TenantId, Timestamp};
use cordon_policy::{Action, Resource};
use cordon_wire::{CreateTenantRequest, ErrorBody, TenantBody, TenantList};

use super::validate;
use crate::AppState;
use crate::auth::{Caller, authorize};
use crate::error::{ApiError, ApiResult};
use crate::extract::{Json, parse_id};

pub(crate) fn tenant_body(tenant: Tenant) -> TenantBody {
    TenantBody {
        id: tenant.id.to_string(),
        name: tenant.name,
        created_at: tenant.created_at,
    }
}

/// Create a tenant (system admin only).
#[utoipa::path(post, path = "/v1/tenants", tag = "tenants",
    request_body = CreateTenantRequest,
    params(("Idempotency-Key" = Option<String>, Header, description = "Replays the first response for the same request")),
    responses(
        (status = 201, body = TenantBody),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 409, description = "TENANT_NAME_TAKEN", body = ErrorBody),
    ))]
pub(crate) async fn create_tenant(
    State(state): State<AppState>,
    caller: Caller,
    Json(request): Json<CreateTenantRequest>,
) -> ApiResult<(StatusCode, axum::Json<TenantBody>)> {
    authorize(&state, &caller, Action::TenantCreate, Resource::Deployment)?;
    validate::slug("name", &request.name)?;
    let tenant = Tenant {
        id: TenantId::generate(),
        name: request.name,
        created_at: Timestamp::now(),
    };
    state.store().create_tenant(&tenant).await?;
    tracing::info!(tenant = %tenant.id, name = %tenant.name, "tenant created");
    Ok((StatusCode::CREATED, axum::Json(tenant_body(tenant))))
}

/// List all tenants (system admin only).
#[utoipa::path(get, path = "/v1/tenants", tag = "tenants",
    responses((status = 200, body = TenantList), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub(crate) async fn list_tenants(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<axum::Json<TenantList>> {
    authorize(&state, &caller, Action::TenantList, Resource::Deployment)?;
    let tenants = state.store().list_tenants().await?;
    Ok(axum::Json(TenantList {
        items: tenants.into_iter().map(tenant_body).collect(),
    }))
}

/// Get a tenant: the caller's own, or any for the system admin.
#[utoipa::path(get, path = "/v1/tenants/{id}", tag = "tenants",
    params(("id" = String, Path, description = "Tenant id")),
    responses((status = 200, body = TenantBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn get_tenant(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<TenantBody>> {
    let id = caller.visible_tenant(Some(parse_id::<TenantId>(&id, "tenant")?))?;
    let tenant = state
        .store()
        .get_tenant(id)
        .await?
        .ok_or_else(|| ApiError::not_found("tenant"))?;
    authorize(
        &state,
        &caller,
        Action::TenantRead,
        Resource::Tenant(tenant.id),
    )?;
    Ok(axum::Json(tenant_body(tenant)))
}
