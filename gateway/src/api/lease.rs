//! Leases: a lease is a session. Granting one opens a session with the TTL as its timeout;
//! keep-alives touch it; when it expires (or is revoked) the leader commits its close and every
//! ephemeral node bound to it — instances, lock holders, candidates — goes with it.

use super::error::ApiError;
use super::store::Store;
use parking_lot::Mutex;
use roster_core::SessionId;
use serde::Serialize;
use std::collections::HashMap;
use std::time::Instant;

/// Shortest and longest TTL a lease may have, in seconds.
pub const MIN_TTL: i64 = 1;
pub const MAX_TTL: i64 = 24 * 3600;

/// A lease as the API shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct LeaseInfo {
    /// The lease id (also the ZooKeeper session id owning its ephemeral nodes).
    pub id: i64,
    /// TTL in seconds, as granted.
    pub ttl_seconds: i64,
    /// Seconds left, as seen from this member's last keep-alive (absent if this member has not
    /// seen one since it started).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remaining_seconds: Option<i64>,
    /// Paths of the ephemeral nodes bound to the lease.
    pub keys: Vec<String>,
}

/// The lease service.
pub struct Leases {
    store: Store,
    /// When this member last kept each lease alive.
    seen: Mutex<HashMap<SessionId, Instant>>,
}

impl Leases {
    pub fn new(store: Store) -> Leases {
        Leases {
            store,
            seen: Mutex::new(HashMap::new()),
        }
    }

    pub fn validate_ttl(ttl_seconds: i64) -> Result<i32, ApiError> {
        if !(MIN_TTL..=MAX_TTL).contains(&ttl_seconds) {
            return Err(ApiError::invalid(format!(
                "ttl_seconds must be between {MIN_TTL} and {MAX_TTL}"
            ))
            .with_details(serde_json::json!({"field": "ttl_seconds", "value": ttl_seconds})));
        }
        Ok((ttl_seconds * 1000) as i32)
    }

    pub async fn grant(&self, ttl_seconds: i64) -> Result<LeaseInfo, ApiError> {
        let timeout = Self::validate_ttl(ttl_seconds)?;
        let (id, granted) = self.store.open_session(timeout).await?;
        self.seen.lock().insert(id, Instant::now());
        metrics::counter!("roster_api_leases_granted_total").increment(1);
        Ok(LeaseInfo {
            id,
            ttl_seconds: i64::from(granted) / 1000,
            remaining_seconds: Some(i64::from(granted) / 1000),
            keys: Vec::new(),
        })
    }

    /// Keep a lease alive; `LEASE_NOT_FOUND` once it has expired.
    pub async fn keep_alive(&self, id: SessionId) -> Result<LeaseInfo, ApiError> {
        if !self.store.session_exists(id) {
            self.seen.lock().remove(&id);
            return Err(ApiError::lease_not_found(id));
        }
        self.store.touch(&[id]).await?;
        self.seen.lock().insert(id, Instant::now());
        self.info(id)
    }

    pub async fn revoke(&self, id: SessionId) -> Result<(), ApiError> {
        if !self.store.session_exists(id) {
            return Err(ApiError::lease_not_found(id));
        }
        self.store.close_session(id).await?;
        self.seen.lock().remove(&id);
        Ok(())
    }

    pub fn info(&self, id: SessionId) -> Result<LeaseInfo, ApiError> {
        let (ttl_ms, keys) = self
            .store
            .read(|t| {
                t.sessions()
                    .get(&id)
                    .map(|m| (m.timeout_ms, t.ephemerals_of(id).cloned().collect()))
            })
            .ok_or_else(|| ApiError::lease_not_found(id))?;
        let ttl = i64::from(ttl_ms) / 1000;
        let remaining = self
            .seen
            .lock()
            .get(&id)
            .map(|at| (ttl - at.elapsed().as_secs() as i64).max(0));
        Ok(LeaseInfo {
            id,
            ttl_seconds: ttl,
            remaining_seconds: remaining,
            keys,
        })
    }

    /// Fail unless the lease exists on this member's replica.
    pub fn require(&self, id: SessionId) -> Result<(), ApiError> {
        if self.store.session_exists(id) {
            Ok(())
        } else {
            Err(ApiError::lease_not_found(id))
        }
    }
}
