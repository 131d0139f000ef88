//! The one error shape of the native API: `{"code", "message", "details"}` with an HTTP status,
//! and the same code mapped to a gRPC status by the gRPC front end. Backend and tree errors are
//! translated here and nowhere else.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use roster_core::Code;
use roster_core::backend::BackendError;
use serde::Serialize;
use serde_json::Value;

/// A failed API call.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: StatusCode,
    /// Stable, machine-readable (gRPC status names, plus a few of our own).
    pub code: &'static str,
    pub message: String,
    pub details: Value,
}

/// The JSON body of every error response.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// Machine-readable code, e.g. `NOT_FOUND`, `INVALID_ARGUMENT`, `NEEDS_CP_BACKEND`.
    pub code: String,
    /// What went wrong, for people.
    pub message: String,
    /// Extra facts (the field at fault, the current holder, ...); an object, possibly empty.
    #[schema(value_type = Object)]
    pub details: Value,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            details: Value::Object(Default::default()),
        }
    }

    pub fn with_details(mut self, details: Value) -> ApiError {
        self.details = details;
        self
    }

    pub fn invalid(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "INVALID_ARGUMENT", message)
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "NOT_FOUND", message)
    }

    pub fn conflict(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::CONFLICT, "CONFLICT", message)
    }

    pub fn lease_not_found(lease: i64) -> ApiError {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "LEASE_NOT_FOUND",
            format!("lease {lease:#x} does not exist or has expired"),
        )
        .with_details(serde_json::json!({ "lease": lease }))
    }

    /// A tree operation failed with a ZooKeeper code; `what` names the object for the message.
    pub fn from_code(code: Code, what: &str) -> ApiError {
        let (status, c) = match code {
            Code::NoNode => (StatusCode::NOT_FOUND, "NOT_FOUND"),
            Code::NodeExists => (StatusCode::CONFLICT, "ALREADY_EXISTS"),
            Code::BadVersion => (StatusCode::CONFLICT, "CONFLICT"),
            Code::NotEmpty => (StatusCode::CONFLICT, "FAILED_PRECONDITION"),
            Code::SessionExpired | Code::UnknownSession => {
                (StatusCode::NOT_FOUND, "LEASE_NOT_FOUND")
            }
            Code::BadArguments | Code::InvalidAcl | Code::NoChildrenForEphemerals => {
                (StatusCode::BAD_REQUEST, "INVALID_ARGUMENT")
            }
            Code::NoAuth | Code::AuthFailed => (StatusCode::FORBIDDEN, "PERMISSION_DENIED"),
            Code::Unimplemented => (StatusCode::NOT_IMPLEMENTED, "UNIMPLEMENTED"),
            Code::OperationTimeout | Code::RequestTimeout => {
                (StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE")
            }
            _ => (StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL"),
        };
        ApiError::new(status, c, format!("{what}: {code}"))
            .with_details(serde_json::json!({ "zookeeper_code": code as i32 }))
    }
}

impl From<BackendError> for ApiError {
    fn from(e: BackendError) -> ApiError {
        match &e {
            BackendError::Unsupported { backend, what } => ApiError::new(
                StatusCode::NOT_IMPLEMENTED,
                "NEEDS_CP_BACKEND",
                e.to_string(),
            )
            .with_details(serde_json::json!({
                "backend": backend, "operation": what, "supported_by": ["zab", "raft"]
            })),
            BackendError::Overloaded => ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "RESOURCE_EXHAUSTED",
                e.to_string(),
            ),
            BackendError::Unavailable(_)
            | BackendError::ShuttingDown
            | BackendError::Storage(_) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "UNAVAILABLE",
                e.to_string(),
            ),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::warn!(code = self.code, message = %self.message, "API call failed");
        }
        let body = ErrorBody {
            code: self.code.to_owned(),
            message: self.message,
            details: self.details,
        };
        (self.status, axum::Json(body)).into_response()
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} ({}): {}",
            self.code,
            self.status.as_u16(),
            self.message
        )
    }
}

impl std::error::Error for ApiError {}
