//! Nacos compatibility over HTTP: the open API v1 (`/nacos/v1/ns/**`, `/nacos/v1/cs/**`) and the
//! v2 envelope (`/nacos/v2/**`), on the native registry and config services — so an instance or
//! a config item written through Nacos is the same record every other protocol reads. Wire facts:
//! docs/nacos.md. Login and access tokens: [`auth`]. (The Nacos 2.x gRPC services live with the gRPC
//! front end, `grpc::nacos`.)

pub mod auth;
pub mod config;
pub mod naming;

use crate::api::Api;
use crate::api::error::ApiError;
use axum::Router;
use axum::extract::{FromRequest, Request};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use std::collections::HashMap;
use std::sync::Arc;

/// Nacos sends parameters in the query string and/or a form body; both, merged (body wins).
pub struct Params(pub HashMap<String, String>);

impl<S: Send + Sync> FromRequest<S> for Params {
    type Rejection = NacosError;
    async fn from_request(req: Request, state: &S) -> Result<Self, NacosError> {
        let mut map: HashMap<String, String> =
            req.uri().query().map(form_urlencoded).unwrap_or_default();
        let form = req
            .headers()
            .get(axum::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
        if form && req.method() != Method::GET {
            let bytes = axum::body::Bytes::from_request(req, state)
                .await
                .map_err(|e| NacosError::bad(format!("reading the body: {e}")))?;
            let body = std::str::from_utf8(&bytes)
                .map_err(|_| NacosError::bad("the form body is not UTF-8"))?;
            map.extend(form_urlencoded(body));
        }
        Ok(Params(map))
    }
}

fn form_urlencoded(s: &str) -> HashMap<String, String> {
    form_urlencoded::parse(s.as_bytes()).into_owned().collect()
}

/// Percent-encoding of everything but unreserved characters.
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl Params {
    pub fn get(&self, k: &str) -> Option<&str> {
        self.0.get(k).map(String::as_str).filter(|v| !v.is_empty())
    }

    pub fn required(&self, k: &str) -> Result<&str, NacosError> {
        self.get(k)
            .ok_or_else(|| NacosError::bad(format!("Param '{k}' is required.")))
    }

    /// A boolean as Java's `Boolean.parseBoolean` reads it: `true` in any case, else false
    /// (the Python SDK sends `True`).
    pub fn bool(&self, k: &str) -> Result<Option<bool>, NacosError> {
        Ok(self.get(k).map(|v| v.eq_ignore_ascii_case("true")))
    }

    pub fn num<T: std::str::FromStr>(&self, k: &str) -> Result<Option<T>, NacosError> {
        self.get(k)
            .map(|v| {
                v.parse()
                    .map_err(|_| NacosError::bad(format!("Param '{k}' is not a number: {v}")))
            })
            .transpose()
    }

    /// Namespace: `namespaceId` (naming) or `tenant` (config); empty is `public`.
    pub fn namespace(&self) -> String {
        self.get("namespaceId")
            .or_else(|| self.get("tenant"))
            .unwrap_or(crate::api::registry::DEFAULT_NAMESPACE)
            .to_owned()
    }
}

/// A Nacos v1 error: the status and a plain-text body, as Nacos answers (`caused: …`).
#[derive(Debug)]
pub struct NacosError {
    pub status: StatusCode,
    pub message: String,
    /// The v2 envelope's code.
    pub code: i32,
}

impl NacosError {
    pub fn bad(m: impl Into<String>) -> NacosError {
        NacosError {
            status: StatusCode::BAD_REQUEST,
            message: m.into(),
            code: 10000,
        }
    }
    pub fn not_found(m: impl Into<String>) -> NacosError {
        NacosError {
            status: StatusCode::NOT_FOUND,
            message: m.into(),
            code: 20004,
        }
    }
}

impl From<ApiError> for NacosError {
    fn from(e: ApiError) -> NacosError {
        let code = match e.status.as_u16() {
            400 => 10000,
            403 => 10001,
            404 => 20004,
            _ => 30000,
        };
        NacosError {
            status: e.status,
            message: e.message,
            code,
        }
    }
}

impl IntoResponse for NacosError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::warn!(status = %self.status, message = %self.message, "Nacos call failed");
        }
        (self.status, format!("caused: {};", self.message)).into_response()
    }
}

/// The v2 envelope `{"code", "message", "data"}`.
pub fn v2<T: serde::Serialize>(r: Result<T, NacosError>) -> Response {
    match r {
        Ok(data) => axum::Json(serde_json::json!({"code": 0, "message": "success", "data": data}))
            .into_response(),
        Err(e) => (
            e.status,
            axum::Json(serde_json::json!({"code": e.code, "message": e.message, "data": null})),
        )
            .into_response(),
    }
}

/// Every Nacos route; with auth on, all but login need an access token.
pub fn routes(
    api: Arc<Api>,
    beats: Arc<naming::Beats>,
    auth: Arc<auth::NacosAuth>,
    max_body: usize,
) -> Router {
    naming::routes(api.clone(), beats)
        .merge(config::routes(api))
        .layer(axum::middleware::from_fn_with_state(
            (auth.clone(), max_body),
            auth::require_token,
        ))
        .merge(auth::routes(auth))
}
