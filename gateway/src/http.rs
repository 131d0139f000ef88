//! The HTTP port: Prometheus `/metrics`, `/healthz` (the process is up) and `/readyz` (the backend
//! can serve: it has recovered and its log is writable), and `/admin/members` (raft membership,
//! `crate::admin`). Later issues add the REST APIs here.

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use metrics_exporter_prometheus::PrometheusHandle;
use roster_core::backend::Backend;
use serde_json::json;
use std::sync::Arc;

#[derive(Clone)]
pub struct HttpState {
    pub backend: Arc<dyn Backend>,
    /// Set when the backend is raft (membership administration).
    pub raft: Option<Arc<roster_raft::RaftBackend>>,
    pub metrics: PrometheusHandle,
}

pub fn router(state: HttpState) -> Router {
    Router::new()
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
        .fallback(|| async {
            (
                StatusCode::NOT_FOUND,
                axum::Json(json!({"error": "not found"})),
            )
        })
        .with_state(state)
}

async fn metrics(State(st): State<HttpState>) -> impl IntoResponse {
    crate::telemetry::update_gauges(&*st.backend);
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
