//! The native API's view of the backend: tree writes on behalf of a lease (session), with tree
//! errors turned into API errors, and reads of the local replica. Everything the API writes lives
//! under [`ROOT`] with an open ACL, so ZooKeeper clients see it too.

use super::error::ApiError;
use roster_core::acl::{Acl, AuthInfo, Id};
use roster_core::backend::{Backend, Capabilities};
use roster_core::tree::Tree;
use roster_core::txn::{Envelope, OpResult, Outcome, Request, WriteOp};
use roster_core::{Code, CreateMode, SessionId, Stat, Zxid};
use std::sync::Arc;

/// Where the native API keeps its records.
pub const ROOT: &str = "/roster";

/// Tree access for the API services.
#[derive(Clone)]
pub struct Store {
    backend: Arc<dyn Backend>,
    auth: Arc<AuthInfo>,
}

impl Store {
    pub fn new(backend: Arc<dyn Backend>) -> Store {
        Store {
            backend,
            auth: Arc::new(AuthInfo {
                ids: vec![Id::new("super", "roster-api")],
            }),
        }
    }

    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }

    pub fn capabilities(&self) -> Capabilities {
        self.backend.capabilities()
    }

    /// Read the local replica.
    pub fn read<R>(&self, f: impl FnOnce(&Tree) -> R) -> R {
        let tree = self.backend.tree();
        let t = tree.read();
        f(&t)
    }

    /// The last applied revision on this member.
    pub fn revision(&self) -> Zxid {
        self.read(|t| t.last_zxid())
    }

    async fn submit(&self, session: SessionId, request: Request) -> Result<Outcome, ApiError> {
        let applied = self
            .backend
            .submit(Envelope {
                session,
                auth: self.auth.clone(),
                request,
            })
            .await?;
        Ok(applied.outcome)
    }

    /// One write; `Err` carries the tree's code mapped for `what`.
    pub async fn op(
        &self,
        session: SessionId,
        op: WriteOp,
        what: &str,
    ) -> Result<OpResult, ApiError> {
        // Without conditional writes (AP) the API's own version guards become plain
        // last-writer-wins writes; explicit client CAS is checked by the services before this.
        let op = if self.capabilities().conditional_writes {
            op
        } else {
            unconditional(op)
        };
        match self.submit(session, Request::Op(op)).await? {
            Outcome::Op(OpResult::Error(c)) | Outcome::Failed(c) => {
                Err(ApiError::from_code(c, what))
            }
            Outcome::Op(r) => Ok(r),
            other => Err(ApiError::from_code(
                Code::SystemError,
                &format!("{what}: {other:?}"),
            )),
        }
    }

    /// Create a node; returns its final path (sequential names are decided by the leader).
    pub async fn create(
        &self,
        session: SessionId,
        path: &str,
        data: Vec<u8>,
        mode: CreateMode,
        what: &str,
    ) -> Result<(String, Stat), ApiError> {
        let op = WriteOp::Create {
            path: path.to_owned(),
            data,
            acl: Acl::open_unsafe(),
            mode,
            ttl: 0,
        };
        match self.op(session, op, what).await? {
            OpResult::Created { path, stat } => Ok((path, stat)),
            other => Err(ApiError::from_code(
                Code::SystemError,
                &format!("{what}: {other:?}"),
            )),
        }
    }

    /// Set a node's data if its version is `version` (-1: any).
    pub async fn set(
        &self,
        path: &str,
        data: Vec<u8>,
        version: i32,
        what: &str,
    ) -> Result<Stat, ApiError> {
        let op = WriteOp::SetData {
            path: path.to_owned(),
            data,
            version,
        };
        match self.op(0, op, what).await? {
            OpResult::DataSet { stat } => Ok(stat),
            other => Err(ApiError::from_code(
                Code::SystemError,
                &format!("{what}: {other:?}"),
            )),
        }
    }

    /// Delete a node if its version is `version` (-1: any).
    pub async fn delete(&self, path: &str, version: i32, what: &str) -> Result<(), ApiError> {
        let op = WriteOp::Delete {
            path: path.to_owned(),
            version,
        };
        self.op(0, op, what).await.map(|_| ())
    }

    /// All or nothing; on failure the first failing op's code.
    pub async fn multi(
        &self,
        session: SessionId,
        ops: Vec<WriteOp>,
        what: &str,
    ) -> Result<Vec<OpResult>, ApiError> {
        match self.submit(session, Request::Multi(ops)).await? {
            Outcome::Multi(rs) => {
                if let Some(c) = rs.iter().find_map(|r| match r {
                    OpResult::Error(c) if *c != Code::Ok && *c != Code::RuntimeInconsistency => {
                        Some(*c)
                    }
                    _ => None,
                }) {
                    return Err(ApiError::from_code(c, what));
                }
                Ok(rs)
            }
            Outcome::Failed(c) => Err(ApiError::from_code(c, what)),
            other => Err(ApiError::from_code(
                Code::SystemError,
                &format!("{what}: {other:?}"),
            )),
        }
    }

    /// Create `path` and any missing ancestors as persistent nodes; existing ones are fine.
    pub async fn ensure_path(&self, path: &str) -> Result<(), ApiError> {
        let missing: Vec<String> = self.read(|t| {
            let mut missing = Vec::new();
            let mut p = path;
            while p != "/" && t.get(p).is_none() {
                missing.push(p.to_owned());
                p = roster_core::path::parent(p);
            }
            missing
        });
        for p in missing.iter().rev() {
            match self
                .create(0, p, Vec::new(), CreateMode::Persistent, p)
                .await
            {
                Ok(_) => {}
                Err(e) if e.code == "ALREADY_EXISTS" => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Open a session (a lease) with this timeout.
    pub async fn open_session(&self, timeout_ms: i32) -> Result<(SessionId, i32), ApiError> {
        match self
            .submit(0, Request::CreateSession { timeout_ms })
            .await?
        {
            Outcome::SessionCreated {
                session,
                timeout_ms,
                ..
            } => Ok((session, timeout_ms)),
            other => Err(ApiError::from_code(
                Code::SystemError,
                &format!("opening a lease: {other:?}"),
            )),
        }
    }

    /// Close a session: its ephemeral nodes go with it.
    pub async fn close_session(&self, session: SessionId) -> Result<(), ApiError> {
        match self.submit(session, Request::CloseSession).await? {
            Outcome::SessionClosed => Ok(()),
            Outcome::Failed(c) => Err(ApiError::from_code(c, "closing a lease")),
            other => Err(ApiError::from_code(
                Code::SystemError,
                &format!("closing a lease: {other:?}"),
            )),
        }
    }

    /// Is this session committed and open on this member's replica?
    pub fn session_exists(&self, session: SessionId) -> bool {
        self.read(|t| t.sessions().contains_key(&session))
    }

    /// Keep sessions alive.
    pub async fn touch(&self, sessions: &[SessionId]) -> Result<(), ApiError> {
        Ok(self.backend.touch(sessions).await?)
    }
}

/// A name used as one path segment (service, group, data id, lock name ...): non-empty, at most
/// 256 bytes, no `/`, not `.` or `..`, no control characters.
pub fn segment<'a>(field: &str, value: &'a str) -> Result<&'a str, ApiError> {
    let bad = value.is_empty()
        || value.len() > 256
        || value == "."
        || value == ".."
        || value.contains('/')
        || value
            .chars()
            .any(|c| c.is_control() || ('\u{e000}'..='\u{f8ff}').contains(&c));
    if bad {
        return Err(ApiError::invalid(format!(
            "{field} must be 1-256 characters without '/', control characters, or '.'/'..' alone"
        ))
        .with_details(serde_json::json!({ "field": field, "value": value })));
    }
    Ok(value)
}

/// The same write without its version condition.
fn unconditional(op: WriteOp) -> WriteOp {
    match op {
        WriteOp::SetData { path, data, .. } => WriteOp::SetData {
            path,
            data,
            version: -1,
        },
        WriteOp::Delete { path, .. } => WriteOp::Delete { path, version: -1 },
        WriteOp::SetAcl { path, acl, .. } => WriteOp::SetAcl {
            path,
            acl,
            version: -1,
        },
        other => other,
    }
}

/// Namespace and group of a request, defaulted (`public`, `DEFAULT_GROUP`: Nacos's defaults, where
/// an empty value means the default) and validated as path segments.
pub fn scope(namespace: Option<&str>, group: Option<&str>) -> Result<(String, String), ApiError> {
    let ns = namespace
        .filter(|s| !s.is_empty())
        .unwrap_or(super::registry::DEFAULT_NAMESPACE);
    let group = group
        .filter(|s| !s.is_empty())
        .unwrap_or(super::registry::DEFAULT_GROUP);
    Ok((
        segment("namespace", ns)?.to_owned(),
        segment("group", group)?.to_owned(),
    ))
}
