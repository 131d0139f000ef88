//! The one place an [`ApiError`] becomes a gRPC [`Status`]: the gRPC code follows the API code
//! (not the HTTP status), the message is `"{CODE}: {message}"`, and the API code and details
//! travel as metadata (`roster-code`, `roster-details`, the details as JSON), so a client sees
//! exactly what the HTTP API would have put in its error body.
//!
//! Choices: `CONFLICT` (a compare-and-swap or version check lost to another writer) is
//! `ABORTED` — gRPC's code for "retry the read-modify-write"; `LOCK_HELD` (a try-lock or a timed
//! acquire that ran out) is `FAILED_PRECONDITION` — retrying at once will fail the same way until
//! the holder lets go. `COMPACTED` (resume from a revision older than the history) is
//! `OUT_OF_RANGE`, as etcd does.

use crate::api::error::ApiError;
use tonic::metadata::MetadataValue;
use tonic::{Code, Status};

/// Metadata key carrying the API error code (e.g. `LEASE_NOT_FOUND`).
pub const CODE_KEY: &str = "roster-code";
/// Metadata key carrying the API error details, a JSON object (ASCII, non-ASCII escaped).
pub const DETAILS_KEY: &str = "roster-details";

/// The gRPC code of an API error code.
pub fn grpc_code(api_code: &str, http_status: u16) -> Code {
    match api_code {
        "INVALID_ARGUMENT" | "UNSUPPORTED_MEDIA_TYPE" => Code::InvalidArgument,
        "NOT_FOUND" | "LEASE_NOT_FOUND" => Code::NotFound,
        "ALREADY_EXISTS" => Code::AlreadyExists,
        "CONFLICT" => Code::Aborted,
        "LOCK_HELD" | "FAILED_PRECONDITION" => Code::FailedPrecondition,
        "NEEDS_CP_BACKEND" | "UNIMPLEMENTED" => Code::Unimplemented,
        "UNAVAILABLE" => Code::Unavailable,
        "RESOURCE_EXHAUSTED" | "PAYLOAD_TOO_LARGE" => Code::ResourceExhausted,
        "PERMISSION_DENIED" => Code::PermissionDenied,
        "UNAUTHENTICATED" => Code::Unauthenticated,
        "COMPACTED" => Code::OutOfRange,
        "DEADLINE_EXCEEDED" => Code::DeadlineExceeded,
        "INTERNAL" => Code::Internal,
        // A code this table does not know yet: go by the HTTP status the API chose.
        _ => match http_status {
            400 => Code::InvalidArgument,
            401 => Code::Unauthenticated,
            403 => Code::PermissionDenied,
            404 => Code::NotFound,
            409 => Code::Aborted,
            410 => Code::OutOfRange,
            413 | 429 => Code::ResourceExhausted,
            501 => Code::Unimplemented,
            503 => Code::Unavailable,
            504 => Code::DeadlineExceeded,
            _ => Code::Unknown,
        },
    }
}

/// JSON with every non-ASCII character escaped, so it is a valid ASCII metadata value.
fn ascii_json(v: &serde_json::Value) -> String {
    let s = v.to_string();
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_ascii() && !c.is_ascii_control() {
            out.push(c);
        } else {
            let mut buf = [0u16; 2];
            for u in c.encode_utf16(&mut buf) {
                out.push_str(&format!("\\u{u:04x}"));
            }
        }
    }
    out
}

/// Map an API error to a gRPC status.
pub fn to_status(e: ApiError) -> Status {
    let code = grpc_code(e.code, e.status.as_u16());
    let mut message = format!("{}: {}", e.code, e.message);
    if matches!(e.code, "NEEDS_CP_BACKEND") && !message.contains("zab") {
        message.push_str(" (needs a CP backend: zab or raft)");
    }
    if matches!(code, Code::Internal | Code::Unknown | Code::Unavailable) {
        tracing::warn!(code = e.code, message = %e.message, "gRPC call failed");
    }
    let mut status = Status::new(code, message);
    let md = status.metadata_mut();
    if let Ok(v) = MetadataValue::try_from(e.code) {
        md.insert(CODE_KEY, v);
    }
    if let Ok(v) = MetadataValue::try_from(ascii_json(&e.details).as_str()) {
        md.insert(DETAILS_KEY, v);
    }
    status
}

impl From<ApiError> for Status {
    fn from(e: ApiError) -> Status {
        to_status(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::StatusCode;
    use roster_core::backend::BackendError;

    #[test]
    fn api_codes_map_to_grpc_codes() {
        let cases = [
            (ApiError::invalid("x"), Code::InvalidArgument),
            (ApiError::not_found("x"), Code::NotFound),
            (ApiError::lease_not_found(7), Code::NotFound),
            (ApiError::conflict("x"), Code::Aborted),
            (
                ApiError::new(StatusCode::CONFLICT, "LOCK_HELD", "held"),
                Code::FailedPrecondition,
            ),
            (
                ApiError::new(StatusCode::CONFLICT, "ALREADY_EXISTS", "x"),
                Code::AlreadyExists,
            ),
            (
                ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "PAYLOAD_TOO_LARGE", "x"),
                Code::ResourceExhausted,
            ),
            (
                ApiError::from(BackendError::Overloaded),
                Code::ResourceExhausted,
            ),
            (
                ApiError::from(BackendError::Unavailable("no quorum".into())),
                Code::Unavailable,
            ),
            (
                ApiError::new(StatusCode::GONE, "COMPACTED", "old"),
                Code::OutOfRange,
            ),
            (
                ApiError::new(StatusCode::IM_A_TEAPOT, "SOMETHING_NEW", "x"),
                Code::Unknown,
            ),
            (
                ApiError::new(StatusCode::NOT_FOUND, "SOMETHING_NEW", "x"),
                Code::NotFound,
            ),
        ];
        for (e, want) in cases {
            let what = e.to_string();
            assert_eq!(to_status(e).code(), want, "{what}");
        }
    }

    #[test]
    fn needs_cp_backend_names_the_cp_backends_and_carries_details() {
        let e = ApiError::from(BackendError::Unsupported {
            backend: "ap",
            what: "sequential nodes".into(),
        });
        let s = to_status(e);
        assert_eq!(s.code(), Code::Unimplemented);
        assert!(
            s.message().starts_with("NEEDS_CP_BACKEND: "),
            "{}",
            s.message()
        );
        assert!(s.message().contains("zab") && s.message().contains("raft"));
        assert_eq!(s.metadata().get(CODE_KEY).unwrap(), "NEEDS_CP_BACKEND");
        let details: serde_json::Value =
            serde_json::from_str(s.metadata().get(DETAILS_KEY).unwrap().to_str().unwrap()).unwrap();
        assert_eq!(details["supported_by"], serde_json::json!(["zab", "raft"]));

        let bare = to_status(ApiError::new(
            StatusCode::NOT_IMPLEMENTED,
            "NEEDS_CP_BACKEND",
            "locks need it",
        ));
        assert!(bare.message().contains("zab or raft"), "{}", bare.message());
    }

    #[test]
    fn non_ascii_details_survive_as_escaped_json() {
        let e = ApiError::invalid("bad").with_details(serde_json::json!({"value": "grüß 🦀"}));
        let s = to_status(e);
        let raw = s.metadata().get(DETAILS_KEY).unwrap().to_str().unwrap();
        assert!(raw.is_ascii());
        let v: serde_json::Value = serde_json::from_str(raw).unwrap();
        assert_eq!(v["value"], "grüß 🦀");
    }
}
