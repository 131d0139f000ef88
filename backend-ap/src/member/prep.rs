//! Local requests: ZooKeeper's prep step for AP. Checks run against the visible model (not the
//! tree, which lags by the batch in flight); what AP cannot honour is refused here; what passes
//! becomes a register write or an owner op, answered once the batch is durable.

use super::{Member, Plan};
use crate::model::{Eph, OwnerOp, PEntry, SessionInfo, Value};
use roster_core::acl::{self, Acl, AuthInfo, perms};
use roster_core::backend::BackendError;
use roster_core::txn::{Envelope, OpResult, Outcome, Request, WriteOp};
use roster_core::{Code, CreateMode, SessionId, path};

impl Member {
    fn local_session(&self, s: SessionId) -> bool {
        self.model
            .owner(self.cfg.id)
            .is_some_and(|o| o.sessions.contains_key(&s))
    }

    /// The ACL guarding a node (system nodes: ZooKeeper's defaults).
    fn acl_of(&self, p: &str) -> Option<acl::AclList> {
        if p == roster_core::tree::CONFIG_NODE {
            return Some(acl::intern(&Acl::read_unsafe()));
        }
        if crate::model::is_system(p) {
            return Some(acl::intern(&Acl::open_unsafe()));
        }
        self.model.visible(p).map(|v| v.value.acl.clone())
    }

    fn has_visible_child(&self, p: &str) -> bool {
        self.model
            .descendants(p)
            .iter()
            .any(|d| path::parent(d) == p && self.model.visible(d).is_some())
    }

    fn next_random(&mut self) -> u64 {
        // xorshift64*: passwords need not be cryptographic here (ZooKeeper's are `Random` too).
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545F4914F6CDD1D)
    }

    /// Take one local request at wall time `now`.
    pub fn local(&mut self, env: &Envelope, now: u64) -> Plan {
        let unsupported = |what: &str| {
            Plan::Refused(BackendError::Unsupported {
                backend: "ap",
                what: what.to_owned(),
            })
        };
        match &env.request {
            Request::Multi(_) => unsupported("multi (transactions)"),
            Request::CreateSession { timeout_ms } => {
                let session = ((self.cfg.id as i64 & 0xff) << 56)
                    | ((self.incarnation as i64 & 0xffff) << 40)
                    | (self.next_session as i64 & 0xff_ffff_ffff);
                self.next_session += 1;
                let mut passwd = Vec::with_capacity(16);
                passwd.extend_from_slice(&self.next_random().to_be_bytes());
                passwd.extend_from_slice(&self.next_random().to_be_bytes());
                self.own(OwnerOp::Open {
                    session,
                    info: SessionInfo {
                        timeout_ms: *timeout_ms,
                    },
                });
                self.acts
                    .opened
                    .push((session, *timeout_ms, passwd.clone()));
                Plan::SessionCreated {
                    session,
                    timeout_ms: *timeout_ms,
                    passwd,
                }
            }
            Request::CloseSession => {
                if self.local_session(env.session) {
                    self.own(OwnerOp::Close {
                        session: env.session,
                    });
                    self.acts.closed.push(env.session);
                }
                Plan::SessionClosed(env.session)
            }
            Request::DeleteContainer { .. } => Plan::Done(Outcome::Failed(Code::BadArguments)),
            Request::Op(op) => {
                if env.session != 0 && !self.local_session(env.session) {
                    return Plan::Done(Outcome::Failed(Code::SessionExpired));
                }
                match self.op(op, env, now) {
                    Ok(p) => p,
                    Err(c) => Plan::Done(Outcome::Failed(c)),
                }
            }
        }
    }

    fn op(&mut self, op: &WriteOp, env: &Envelope, now: u64) -> Result<Plan, Code> {
        let unsupported = |what: &str| {
            Ok(Plan::Refused(BackendError::Unsupported {
                backend: "ap",
                what: what.to_owned(),
            }))
        };
        let auth: &AuthInfo = &env.auth;
        match op {
            WriteOp::Create {
                path: p,
                data,
                acl: acl_in,
                mode,
                ..
            } => {
                if mode.is_sequential() {
                    return unsupported("sequential nodes");
                }
                if mode.is_ttl() {
                    return unsupported("TTL nodes");
                }
                path::validate(p)?;
                let parent = path::parent(p);
                let parent_acl = self.acl_of(parent).ok_or(Code::NoNode)?;
                if !acl::check(&parent_acl, perms::CREATE, auth) {
                    return Err(Code::NoAuth);
                }
                if self.model.exists(p) {
                    return Err(Code::NodeExists);
                }
                if self
                    .model
                    .visible(parent)
                    .is_some_and(|v| v.ephemeral.is_some())
                {
                    return Err(Code::NoChildrenForEphemerals);
                }
                let acl = acl::fixup(acl_in, auth).ok_or(Code::InvalidAcl)?;
                let value = Value {
                    data: data.clone(),
                    acl,
                };
                let stamp = self.stamp(now);
                if mode.is_ephemeral() {
                    if env.session == 0 {
                        return Err(Code::BadArguments);
                    }
                    self.own(OwnerOp::Put {
                        path: p.clone(),
                        eph: Eph {
                            stamp,
                            session: env.session,
                            value,
                        },
                    });
                } else {
                    // Containers are kept as plain persistent nodes (no automatic removal in AP).
                    debug_assert!(matches!(
                        mode,
                        CreateMode::Persistent | CreateMode::Container
                    ));
                    self.write_register(
                        p,
                        PEntry {
                            stamp,
                            value: Some(value),
                        },
                    );
                }
                Ok(Plan::Created(p.clone()))
            }
            WriteOp::SetData {
                path: p,
                data,
                version,
            } => {
                if *version != -1 {
                    return unsupported("conditional (versioned) writes");
                }
                path::validate(p)?;
                let v = self.model.visible(p).ok_or(Code::NoNode)?;
                if !acl::check(&v.value.acl, perms::WRITE, auth) {
                    return Err(Code::NoAuth);
                }
                let value = Value {
                    data: data.clone(),
                    acl: v.value.acl.clone(),
                };
                self.replace(p, v.ephemeral, value, now)?;
                Ok(Plan::DataSet(p.clone()))
            }
            WriteOp::SetAcl {
                path: p,
                acl: acl_in,
                version,
            } => {
                if *version != -1 {
                    return unsupported("conditional (versioned) writes");
                }
                path::validate(p)?;
                let v = self.model.visible(p).ok_or(Code::NoNode)?;
                if !acl::check(&v.value.acl, perms::ADMIN, auth) {
                    return Err(Code::NoAuth);
                }
                let acl = acl::fixup(acl_in, auth).ok_or(Code::InvalidAcl)?;
                let value = Value {
                    data: v.value.data.clone(),
                    acl,
                };
                self.replace(p, v.ephemeral, value, now)?;
                Ok(Plan::AclSet(p.clone()))
            }
            WriteOp::Delete { path: p, version } => {
                if *version != -1 {
                    return unsupported("conditional (versioned) writes");
                }
                path::validate(p)?;
                if crate::model::is_system(p) {
                    return Err(Code::BadArguments);
                }
                let v = self.model.visible(p).ok_or(Code::NoNode)?;
                let eph = v.ephemeral;
                let parent_acl = self.acl_of(path::parent(p)).ok_or(Code::NoNode)?;
                if !acl::check(&parent_acl, perms::DELETE, auth) {
                    return Err(Code::NoAuth);
                }
                if self.has_visible_child(p) {
                    return Err(Code::NotEmpty);
                }
                if eph.is_some_and(|s| self.local_session(s))
                    && self
                        .model
                        .owner(self.cfg.id)
                        .is_some_and(|o| o.ephemerals.contains_key(p))
                {
                    self.own(OwnerOp::Remove { path: p.clone() });
                }
                // A tombstone too: it hides every older candidate, whoever owns it.
                let stamp = self.stamp(now);
                self.write_register(p, PEntry { stamp, value: None });
                Ok(Plan::Deleted)
            }
            WriteOp::Check { .. } => unsupported("conditional (versioned) writes"),
        }
    }

    /// Replace the content of a visible node.
    fn replace(
        &mut self,
        p: &str,
        eph: Option<SessionId>,
        value: Value,
        now: u64,
    ) -> Result<(), Code> {
        let stamp = self.stamp(now);
        match eph {
            None => self.write_register(
                p,
                PEntry {
                    stamp,
                    value: Some(value),
                },
            ),
            Some(session) if self.local_session(session) => self.own(OwnerOp::Put {
                path: p.to_owned(),
                eph: Eph {
                    stamp,
                    session,
                    value,
                },
            }),
            // Another member's ephemeral: only its owner may change it.
            Some(_) => return Err(Code::BadArguments),
        }
        Ok(())
    }
}

/// The reply for a plan, read off the tree after the batch was applied.
pub fn outcome(plan: &Plan, tree: &roster_core::tree::Tree) -> Result<Outcome, BackendError> {
    let stat = |p: &str| tree.get(p).map(|n| n.client_stat()).unwrap_or_default();
    Ok(match plan {
        Plan::Done(o) => o.clone(),
        Plan::Refused(e) => return Err(e.clone()),
        Plan::Created(p) => Outcome::Op(OpResult::Created {
            path: p.clone(),
            stat: stat(p),
        }),
        Plan::DataSet(p) => Outcome::Op(OpResult::DataSet { stat: stat(p) }),
        Plan::AclSet(p) => Outcome::Op(OpResult::AclSet { stat: stat(p) }),
        Plan::Deleted => Outcome::Op(OpResult::Deleted),
        Plan::SessionCreated {
            session,
            timeout_ms,
            passwd,
        } => Outcome::SessionCreated {
            session: *session,
            timeout_ms: *timeout_ms,
            passwd: passwd.clone(),
        },
        Plan::SessionClosed(_) => Outcome::SessionClosed,
    })
}
