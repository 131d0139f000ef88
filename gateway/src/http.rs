//! The HTTP port: the native API (`/v1/...`, `/openapi.json`), Nacos (`/nacos/...`), Eureka
//! (`/eureka/...`), Prometheus
//! `/metrics`, `/healthz` (the process is up), `/readyz` (the backend can serve: it has recovered
//! and its log is writable) and `/admin/members` (raft membership, `crate::admin`). Every response
//! outside `/metrics` is JSON; errors use the API's error shape.

use crate::api::Api;
use crate::api::error::ApiError;
use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use metrics_exporter_prometheus::PrometheusHandle;
use roster_core::backend::Backend;
use serde_json::json;
use std::sync::Arc;
use std::time::Instant;

#[derive(Clone)]
pub struct HttpState {
    pub backend: Arc<dyn Backend>,
    /// Set when the backend is raft (membership administration).
    pub raft: Option<Arc<roster_raft::RaftBackend>>,
    pub metrics: PrometheusHandle,
    pub api: Arc<Api>,
    pub max_body: usize,
    /// Requests per second per client IP; 0 = unlimited.
    pub rate_limit: u32,
    /// Nacos HTTP beats seen by this member.
    pub nacos_beats: Arc<crate::nacos::naming::Beats>,
    /// Nacos login and access tokens (shared with the gRPC port).
    pub nacos_auth: Arc<crate::nacos::auth::NacosAuth>,
    /// The Eureka front end (leases seen by this member, delta queue).
    pub eureka: Arc<crate::eureka::Eureka>,
}

type IpLimiter = governor::DefaultKeyedRateLimiter<std::net::IpAddr>;

pub fn router(state: HttpState) -> Router {
    let ops = Router::new()
        .route("/metrics", get(metrics))
        .route(
            "/healthz",
            get(|| async { (StatusCode::OK, axum::Json(json!({"status": "ok"}))) }),
        )
        .route("/readyz", get(readyz))
        .route(
            "/admin/members",
            get(crate::admin::list).post(crate::admin::add),
        )
        .route("/admin/members/{id}/promote", post(crate::admin::promote))
        .route(
            "/admin/members/{id}",
            axum::routing::delete(crate::admin::remove),
        )
        .with_state(state.clone());
    let app = ops
        .merge(crate::api::http::routes(state.api.clone()))
        .merge(crate::nacos::routes(
            state.api.clone(),
            state.nacos_beats.clone(),
            state.nacos_auth.clone(),
            state.max_body,
        ))
        .merge(crate::eureka::routes(state.eureka.clone()))
        .fallback(|| async { ApiError::not_found("no such route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "METHOD_NOT_ALLOWED",
                "this route does not take that method",
            )
        })
        .layer(middleware::from_fn(observe))
        .layer(DefaultBodyLimit::max(state.max_body));
    match std::num::NonZeroU32::new(state.rate_limit) {
        None => app,
        Some(rate) => {
            let burst = rate.saturating_mul(std::num::NonZeroU32::new(2).expect("2 > 0"));
            let limiter: Arc<IpLimiter> = Arc::new(governor::RateLimiter::keyed(
                governor::Quota::per_second(rate).allow_burst(burst),
            ));
            let sweep = Arc::downgrade(&limiter);
            tokio::spawn(async move {
                // Forget idle clients now and then so the table stays small.
                let mut every = tokio::time::interval(std::time::Duration::from_secs(60));
                loop {
                    every.tick().await;
                    let Some(l) = sweep.upgrade() else { return };
                    l.retain_recent();
                }
            });
            app.layer(middleware::from_fn(move |req: Request, next: Next| {
                let limiter = limiter.clone();
                async move { limit(limiter, req, next).await }
            }))
        }
    }
}

/// Refuse a client IP over its rate with 429 and the error shape.
async fn limit(limiter: Arc<IpLimiter>, req: Request, next: Next) -> Response {
    let ip = req
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip());
    if let Some(ip) = ip
        && let Err(not_until) = limiter.check_key(&ip)
    {
        metrics::counter!("roster_http_rate_limited_total").increment(1);
        let wait = not_until.wait_time_from(governor::clock::Clock::now(
            &governor::clock::DefaultClock::default(),
        ));
        let mut resp = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "RESOURCE_EXHAUSTED",
            "too many requests from this address",
        )
        .with_details(json!({"retry_after_ms": wait.as_millis() as u64}))
        .into_response();
        resp.headers_mut().insert(
            header::RETRY_AFTER,
            header::HeaderValue::from(wait.as_secs().max(1)),
        );
        return resp;
    }
    next.run(req).await
}

/// Count and time every request by route template (a closed set) and status class.
async fn observe(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned());
    let method = req.method().as_str().to_owned();
    let started = Instant::now();
    let resp = next.run(req).await;
    let route = route.unwrap_or_else(|| "unmatched".into());
    if route != "/metrics" {
        let class = match resp.status().as_u16() {
            200..=299 => "2xx",
            300..=399 => "3xx",
            400..=499 => "4xx",
            _ => "5xx",
        };
        metrics::counter!("roster_http_requests_total", "method" => method.clone(), "route" => route.clone(), "status" => class)
            .increment(1);
        metrics::histogram!("roster_http_request_duration_seconds", "method" => method, "route" => route)
            .record(started.elapsed().as_secs_f64());
    }
    resp
}

async fn metrics(State(st): State<HttpState>) -> impl IntoResponse {
    crate::telemetry::update_gauges(&*st.backend);
    st.api.update_gauges();
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        st.metrics.render(),
    )
}

async fn readyz(State(st): State<HttpState>) -> impl IntoResponse {
    let s = st.backend.status();
    let body = json!({
        "ready": s.ready,
        "backend": s.backend,
        "role": s.role.as_str(),
        "server_id": s.server_id,
        "leader": s.leader,
        "epoch": s.epoch,
        "last_zxid": format!("{:#x}", s.last_zxid),
    });
    let code = if s.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, axum::Json(body))
}
