//! Membership administration on the HTTP port (raft only): list the members, add a learner,
//! promote a learner to voter, remove a member. Any member accepts a change and forwards it to
//! the leader. Errors are JSON `{code, message, details}` with a matching status; on zab every
//! route answers 501 naming the raft backend.

use crate::http::HttpState;
use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use roster_core::backend::BackendError;
use roster_raft::RaftBackend;
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::Arc;

/// An error answer: `{code, message, details}`.
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    details: Value,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            details: json!({}),
        }
    }

    fn details(mut self, d: Value) -> ApiError {
        self.details = d;
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(json!({"code": self.code, "message": self.message, "details": self.details})),
        )
            .into_response()
    }
}

impl From<BackendError> for ApiError {
    fn from(e: BackendError) -> ApiError {
        let (status, code) = match &e {
            BackendError::Unavailable(_)
            | BackendError::Overloaded
            | BackendError::ShuttingDown => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            BackendError::Unsupported { .. } => (StatusCode::NOT_IMPLEMENTED, "not_implemented"),
            BackendError::Storage(_) => (StatusCode::INTERNAL_SERVER_ERROR, "storage"),
        };
        ApiError::new(status, code, e.to_string())
    }
}

type Answer = Result<Json<Value>, ApiError>;

fn raft(st: &HttpState) -> Result<&Arc<RaftBackend>, ApiError> {
    st.raft.as_ref().ok_or_else(|| {
        let backend = st.backend.status().backend;
        ApiError::new(
            StatusCode::NOT_IMPLEMENTED,
            "not_implemented",
            format!(
                "membership administration needs the raft backend (backend = \"raft\"); \
                 this server runs {backend}, whose membership is the static `servers` list"
            ),
        )
        .details(json!({"backend": backend, "requires": "raft"}))
    })
}

fn members_json(r: &RaftBackend) -> Value {
    let m = r.members();
    let list = |xs: &std::collections::BTreeMap<u64, String>| {
        xs.iter()
            .map(|(id, addr)| json!({"id": id, "addr": addr}))
            .collect::<Vec<_>>()
    };
    json!({
        "backend": "raft",
        "server_id": r.id(),
        "leader": r.leader(),
        "voters": list(&m.voters),
        "learners": list(&m.learners),
    })
}

fn bad_path(e: PathRejection) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "bad_request", e.body_text())
}

/// `GET /admin/members`: this member's view of the membership.
pub async fn list(State(st): State<HttpState>) -> Answer {
    Ok(Json(members_json(raft(&st)?)))
}

#[derive(Deserialize)]
pub struct AddLearner {
    id: u64,
    addr: String,
}

/// `POST /admin/members` `{"id": N, "addr": "host:port"}`: add a learner; answers once it has
/// caught up with the leader.
pub async fn add(
    State(st): State<HttpState>,
    body: Result<Json<AddLearner>, JsonRejection>,
) -> Answer {
    let r = raft(&st)?;
    let Json(req) = body.map_err(|e| {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", e.body_text()).details(
            json!({"expected": {"id": "member id (> 0)", "addr": "host:port of its raft port"}}),
        )
    })?;
    if req.id == 0 {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "id must be > 0",
        ));
    }
    let addr_ok = req
        .addr
        .rsplit_once(':')
        .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0));
    if !addr_ok {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!(
                "addr {:?}: expected host:port (the member's raft port)",
                req.addr
            ),
        ));
    }
    if let Some(a) = r.members().voters.get(&req.id) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            format!("member {} is already a voter", req.id),
        )
        .details(json!({"id": req.id, "addr": a})));
    }
    r.add_learner(req.id, req.addr).await?;
    Ok(Json(members_json(r)))
}

/// `POST /admin/members/{id}/promote`: make a learner a voter.
pub async fn promote(State(st): State<HttpState>, id: Result<Path<u64>, PathRejection>) -> Answer {
    let r = raft(&st)?;
    let Path(id) = id.map_err(bad_path)?;
    let m = r.members();
    if !m.voters.contains_key(&id) {
        if !m.learners.contains_key(&id) {
            return Err(not_member(id));
        }
        r.promote(id).await?;
    }
    Ok(Json(members_json(r)))
}

/// `DELETE /admin/members/{id}`: remove a voter or a learner.
pub async fn remove(State(st): State<HttpState>, id: Result<Path<u64>, PathRejection>) -> Answer {
    let r = raft(&st)?;
    let Path(id) = id.map_err(bad_path)?;
    let m = r.members();
    if !m.voters.contains_key(&id) && !m.learners.contains_key(&id) {
        return Err(not_member(id));
    }
    if m.voters.len() == 1 && m.voters.contains_key(&id) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            format!("member {id} is the last voter"),
        ));
    }
    r.remove_member(id).await?;
    Ok(Json(members_json(r)))
}

fn not_member(id: u64) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("member {id} is not in the cluster"),
    )
    .details(json!({"id": id}))
}
