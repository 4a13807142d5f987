//! The web console's assets, built into the binary: one HTML page, its script and its
//! style sheet. They need no key; the page asks for one and calls the API with it, so
//! the console sees exactly what the key may see.

use axum::extract::Path;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

use crate::error::{ApiError, ApiResult};

const INDEX: &str = include_str!("../../ui/index.html");
const SCRIPT: &str = include_str!("../../ui/app.js");
const STYLE: &str = include_str!("../../ui/app.css");

/// Scripts and styles only from here, data only from this origin's API, no framing.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
                   img-src 'self' data:; connect-src 'self'; base-uri 'none'; \
                   form-action 'none'; frame-ancestors 'none'";

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

/// The web console (docs/console.md).
#[utoipa::path(get, path = "/ui", tag = "console", security(()),
    responses((status = 200, content_type = "text/html", body = String)))]
pub(crate) async fn index() -> Response {
    asset("text/html; charset=utf-8", INDEX)
}

/// The web console, at `/ui/` too (a path param never matches an empty segment).
#[utoipa::path(get, path = "/ui/", tag = "console", security(()),
    responses((status = 200, content_type = "text/html", body = String)))]
pub(crate) async fn index_dir() -> Response {
    asset("text/html; charset=utf-8", INDEX)
}

/// One of the console's assets: `app.js` or `app.css`.
#[utoipa::path(get, path = "/ui/{file}", tag = "console", security(()),
    params(("file" = String, Path, description = "app.js or app.css")),
    responses((status = 200, body = String), (status = 404, body = cordon_wire::ErrorBody)))]
pub(crate) async fn file(Path(file): Path<String>) -> ApiResult<Response> {
    match file.as_str() {
        "app.js" => Ok(asset("text/javascript; charset=utf-8", SCRIPT)),
        "app.css" => Ok(asset("text/css; charset=utf-8", STYLE)),
        "index.html" => Ok(asset("text/html; charset=utf-8", INDEX)),
        _ => Err(ApiError::not_found("console file")),
    }
}
