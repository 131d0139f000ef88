//! The leader's "prep" step (ZooKeeper's PrepRequestProcessor): check a request against the tree
//! *plus* every change already prepared but not yet applied, and turn it into a deterministic
//! `TxnOp`. Failed checks become error outcomes and change nothing.

use super::Tree;
use crate::acl::{self, Acl, AuthInfo, perms};
use crate::stat::{MAX_TTL_MS, OwnerKind};
use crate::txn::{Envelope, OpResult, Outcome, Request, TxnOp, WriteOp};
use crate::{Code, CreateMode, SessionId, Stat, Zxid, path};
use std::collections::hash_map::Entry;
use std::collections::{HashSet, VecDeque};
use std::sync::Arc;

/// What prep needs to know of a node: its stat (with child count) and ACL.
#[derive(Debug, Clone)]
pub struct Record {
    pub stat: Stat,
    pub acl: Arc<[Acl]>,
}

/// Options that change what prep accepts.
#[derive(Debug, Clone, Default)]
pub struct PrepOptions {
    /// Accept TTL nodes (`zookeeper.extendedTypesEnabled`).
    pub extended_types: bool,
}

/// Changes prepared but not yet applied, newest per path (ZooKeeper's `outstandingChanges`).
/// Hashed with foldhash, as the watch tables are (see [`crate::watch::WatchManager`]).
#[derive(Default)]
pub struct Outstanding {
    by_path: foldhash::HashMap<String, (Zxid, Option<Record>)>,
    order: VecDeque<(Zxid, String)>,
    closing: foldhash::HashMap<SessionId, Zxid>,
}

/// Changes made by the request being prepared (so a multi sees its own earlier ops).
struct Scratch<'a> {
    tree: &'a Tree,
    pending: &'a Outstanding,
    changes: Vec<(String, Option<Record>)>,
}

impl Scratch<'_> {
    fn record(&self, p: &str) -> Option<Record> {
        if let Some((_, r)) = self.changes.iter().rev().find(|(q, _)| q == p) {
            return r.clone();
        }
        if let Some((_, r)) = self.pending.by_path.get(p) {
            return r.clone();
        }
        self.tree.get(p).map(|n| Record {
            stat: n.stat,
            acl: n.acl.clone(),
        })
    }

    fn existing(&self, p: &str) -> Result<Record, Code> {
        self.record(p).ok_or(Code::NoNode)
    }
}

fn check_version(current: i32, expected: i32) -> Result<i32, Code> {
    if expected != -1 && expected != current {
        return Err(Code::BadVersion);
    }
    Ok(current.wrapping_add(1))
}

fn require(acl: &[Acl], perm: i32, auth: &AuthInfo) -> Result<(), Code> {
    if acl::check(acl, perm, auth) {
        Ok(())
    } else {
        Err(Code::NoAuth)
    }
}

/// A new session's id and the transaction that creates it: the first id from `*next` that is
/// neither 0 nor held by a live session; `*next` moves past it. `passwd` is the session's
/// password (random, chosen by the caller, so the transaction itself is deterministic).
pub fn create_session(
    tree: &Tree,
    next: &mut SessionId,
    timeout_ms: i32,
    passwd: [u8; 16],
) -> (SessionId, TxnOp) {
    let mut id = *next;
    while id == 0 || tree.sessions().contains_key(&id) {
        id = id.wrapping_add(1);
    }
    *next = id.wrapping_add(1);
    (
        id,
        TxnOp::CreateSession {
            timeout_ms,
            passwd: passwd.to_vec(),
        },
    )
}

impl Outstanding {
    /// Number of prepared, unapplied changes.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// Forget changes up to and including `zxid`: the tree now holds them.
    pub fn applied(&mut self, zxid: Zxid) {
        while let Some((z, _)) = self.order.front() {
            if *z > zxid {
                break;
            }
            let (z, p) = self.order.pop_front().expect("front exists");
            if let Entry::Occupied(e) = self.by_path.entry(p)
                && e.get().0 == z
            {
                e.remove();
            }
        }
        self.closing.retain(|_, z| *z > zxid);
    }

    /// Drop everything (the pipeline failed and will not apply what it prepared).
    pub fn clear(&mut self) {
        self.by_path.clear();
        self.order.clear();
        self.closing.clear();
    }

    /// Is the session open (committed, and not being closed)?
    pub fn session_live(&self, tree: &Tree, session: SessionId) -> bool {
        session == 0
            || (tree.sessions().contains_key(&session) && !self.closing.contains_key(&session))
    }

    /// Prepare a request at `zxid` / `time`. `Ok` is the transaction to log and apply; `Err` is the
    /// outcome to answer with, nothing logged. Session creation is not prepared here.
    pub fn prepare(
        &mut self,
        tree: &Tree,
        env: &Envelope,
        zxid: Zxid,
        time: i64,
        opts: &PrepOptions,
    ) -> Result<TxnOp, Outcome> {
        if !matches!(env.request, Request::CloseSession) && !self.session_live(tree, env.session) {
            return Err(Outcome::Failed(Code::SessionExpired));
        }
        let mut s = Scratch {
            tree,
            pending: self,
            changes: Vec::new(),
        };
        let result = match &env.request {
            Request::Op(op) => prep_op(&mut s, op, &env.auth, env.session, time, zxid, opts)
                .map_err(Outcome::Failed),
            Request::Multi(ops) => {
                prep_multi(&mut s, ops, &env.auth, env.session, time, zxid, opts)
            }
            Request::CloseSession => Ok(prep_close(&mut s, env.session, zxid)),
            Request::DeleteContainer { path } => {
                prep_delete_container(&mut s, path, time, zxid).map_err(Outcome::Failed)
            }
            Request::CreateSession { .. } => Err(Outcome::Failed(Code::BadArguments)),
        };
        let changes = std::mem::take(&mut s.changes);
        if let Ok(op) = &result {
            for (p, r) in changes {
                self.order.push_back((zxid, p.clone()));
                self.by_path.insert(p, (zxid, r));
            }
            if matches!(op, TxnOp::CloseSession) {
                self.closing.insert(env.session, zxid);
            }
        }
        result
    }
}

fn prep_multi(
    s: &mut Scratch<'_>,
    ops: &[WriteOp],
    auth: &AuthInfo,
    session: SessionId,
    time: i64,
    zxid: Zxid,
    opts: &PrepOptions,
) -> Result<TxnOp, Outcome> {
    let mut txns = Vec::with_capacity(ops.len());
    for (i, op) in ops.iter().enumerate() {
        match prep_op(s, op, auth, session, time, zxid, opts) {
            Ok(t) => txns.push(t),
            Err(code) => {
                let results = (0..ops.len())
                    .map(|j| {
                        OpResult::Error(match j.cmp(&i) {
                            std::cmp::Ordering::Less => Code::Ok,
                            std::cmp::Ordering::Equal => code,
                            std::cmp::Ordering::Greater => Code::RuntimeInconsistency,
                        })
                    })
                    .collect();
                s.changes.clear();
                return Err(Outcome::Multi(results));
            }
        }
    }
    Ok(TxnOp::Multi(txns))
}

fn prep_op(
    s: &mut Scratch<'_>,
    op: &WriteOp,
    auth: &AuthInfo,
    session: SessionId,
    time: i64,
    zxid: Zxid,
    opts: &PrepOptions,
) -> Result<TxnOp, Code> {
    match op {
        WriteOp::Create {
            path,
            data,
            acl,
            mode,
            ttl,
        } => prep_create(
            s, path, data, acl, *mode, *ttl, auth, session, time, zxid, opts,
        ),
        WriteOp::Delete { path, version } => {
            path::validate(path)?;
            if super::is_special(path) {
                return Err(Code::BadArguments);
            }
            let parent = s.existing(path::parent(path))?;
            let node = s.existing(path)?;
            require(&parent.acl, perms::DELETE, auth)?;
            check_version(node.stat.version, *version)?;
            if node.stat.num_children > 0 {
                return Err(Code::NotEmpty);
            }
            record_delete(s, path, parent, zxid);
            Ok(TxnOp::Delete { path: path.clone() })
        }
        WriteOp::SetData {
            path,
            data,
            version,
        } => {
            path::validate(path)?;
            let mut node = s.existing(path)?;
            require(&node.acl, perms::WRITE, auth)?;
            let new_version = check_version(node.stat.version, *version)?;
            node.stat.version = new_version;
            node.stat.mzxid = zxid;
            node.stat.mtime = time;
            node.stat.data_length = data.len() as i32;
            s.changes.push((path.clone(), Some(node)));
            Ok(TxnOp::SetData {
                path: path.clone(),
                data: data.clone(),
                version: new_version,
            })
        }
        WriteOp::SetAcl { path, acl, version } => {
            path::validate(path)?;
            let fixed = acl::fixup(acl, auth).ok_or(Code::InvalidAcl)?;
            let mut node = s.existing(path)?;
            require(&node.acl, perms::ADMIN, auth)?;
            let new_version = check_version(node.stat.aversion, *version)?;
            node.stat.aversion = new_version;
            node.acl = fixed.clone();
            s.changes.push((path.clone(), Some(node)));
            Ok(TxnOp::SetAcl {
                path: path.clone(),
                acl: fixed,
                version: new_version,
            })
        }
        WriteOp::Check { path, version } => {
            path::validate(path)?;
            let node = s.existing(path)?;
            require(&node.acl, perms::READ, auth)?;
            check_version(node.stat.version, *version)?;
            Ok(TxnOp::Check { path: path.clone() })
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn prep_create(
    s: &mut Scratch<'_>,
    path_in: &str,
    data: &[u8],
    acl_in: &[Acl],
    mode: CreateMode,
    ttl: i64,
    auth: &AuthInfo,
    session: SessionId,
    time: i64,
    zxid: Zxid,
    opts: &PrepOptions,
) -> Result<TxnOp, Code> {
    if mode.is_ttl() {
        if !opts.extended_types {
            return Err(Code::Unimplemented);
        }
        if ttl <= 0 || ttl > MAX_TTL_MS {
            return Err(Code::BadArguments);
        }
    }
    // A sequential create may end in '/' (the server appends the number): validate the result.
    if path_in.is_empty() || !path_in.starts_with('/') || path_in.contains('\0') {
        return Err(Code::BadArguments);
    }
    if !mode.is_sequential() {
        path::validate(path_in)?;
    }
    let parent_path = match path_in.rfind('/') {
        Some(0) => "/",
        Some(i) => &path_in[..i],
        None => return Err(Code::BadArguments),
    };
    if path_in == "/" {
        return Err(Code::NodeExists);
    }
    let acl = acl::fixup(acl_in, auth).ok_or(Code::InvalidAcl)?;
    let mut parent = s.existing(parent_path)?;
    require(&parent.acl, perms::CREATE, auth)?;
    let parent_cversion = parent.stat.cversion;
    let full = if mode.is_sequential() {
        format!("{path_in}{parent_cversion:010}")
    } else {
        path_in.to_owned()
    };
    path::validate(&full)?;
    if s.record(&full).is_some() {
        return Err(Code::NodeExists);
    }
    if matches!(
        OwnerKind::of(parent.stat.ephemeral_owner),
        OwnerKind::Ephemeral(_)
    ) {
        return Err(Code::NoChildrenForEphemerals);
    }
    let owner = match mode {
        CreateMode::Ephemeral | CreateMode::EphemeralSequential => {
            if session == 0 {
                return Err(Code::BadArguments);
            }
            OwnerKind::Ephemeral(session)
        }
        CreateMode::Container => OwnerKind::Container,
        CreateMode::PersistentWithTtl | CreateMode::PersistentSequentialWithTtl => {
            OwnerKind::Ttl(ttl)
        }
        CreateMode::Persistent | CreateMode::PersistentSequential => OwnerKind::Persistent,
    }
    .owner_value();
    parent.stat.cversion = parent_cversion + 1;
    parent.stat.num_children += 1;
    parent.stat.pzxid = zxid;
    s.changes.push((parent_path.to_owned(), Some(parent)));
    let stat = Stat {
        czxid: zxid,
        mzxid: zxid,
        ctime: time,
        mtime: time,
        ephemeral_owner: owner,
        data_length: data.len() as i32,
        pzxid: zxid,
        ..Stat::default()
    };
    s.changes.push((
        full.clone(),
        Some(Record {
            stat,
            acl: acl.clone(),
        }),
    ));
    Ok(TxnOp::Create {
        path: full,
        data: data.to_vec(),
        acl,
        owner,
        parent_cversion: parent_cversion + 1,
    })
}

fn record_delete(s: &mut Scratch<'_>, p: &str, mut parent: Record, zxid: Zxid) {
    parent.stat.num_children -= 1;
    parent.stat.pzxid = zxid;
    s.changes.push((path::parent(p).to_owned(), Some(parent)));
    s.changes.push((p.to_owned(), None));
}

fn prep_close(s: &mut Scratch<'_>, session: SessionId, zxid: Zxid) -> TxnOp {
    // Ephemerals in the tree or prepared, and not already being deleted.
    let mut paths: HashSet<String> = s.tree.ephemerals_of(session).cloned().collect();
    for (p, (_, r)) in &s.pending.by_path {
        match r {
            Some(r) if r.stat.ephemeral_owner == session => {
                paths.insert(p.clone());
            }
            None => {
                paths.remove(p);
            }
            _ => {}
        }
    }
    let mut paths: Vec<String> = paths.into_iter().collect();
    paths.sort();
    for p in paths {
        if s.record(&p)
            .is_some_and(|r| r.stat.ephemeral_owner == session)
            && let Some(parent) = s.record(path::parent(&p))
        {
            record_delete(s, &p, parent, zxid);
        }
    }
    TxnOp::CloseSession
}

fn prep_delete_container(
    s: &mut Scratch<'_>,
    p: &str,
    time: i64,
    zxid: Zxid,
) -> Result<TxnOp, Code> {
    path::validate(p)?;
    let node = s.existing(p)?;
    if node.stat.num_children > 0 {
        return Err(Code::NotEmpty);
    }
    if !super::container_due(&node.stat, time) {
        return Err(Code::BadVersion);
    }
    let parent = s.existing(path::parent(p))?;
    record_delete(s, p, parent, zxid);
    Ok(TxnOp::Delete { path: p.to_owned() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::txn::Txn;

    #[test]
    fn new_session_ids_skip_zero_and_live_sessions() {
        let mut tree = Tree::new();
        tree.apply(&Txn {
            zxid: 1,
            time: 0,
            session: 5,
            op: TxnOp::CreateSession {
                timeout_ms: 4000,
                passwd: vec![0; 16],
            },
        });
        let mut next = 4;
        let (id, op) = create_session(&tree, &mut next, 6000, [7; 16]);
        assert_eq!((id, next), (4, 5));
        assert!(
            matches!(op, TxnOp::CreateSession { timeout_ms: 6000, ref passwd } if passwd == &[7; 16])
        );
        // 5 is live: skipped.
        assert_eq!(create_session(&tree, &mut next, 6000, [0; 16]).0, 6);
        assert_eq!(next, 7);
        // 0 is never an id, also when the counter wraps onto it.
        let mut next = -1;
        assert_eq!(create_session(&tree, &mut next, 6000, [0; 16]).0, -1);
        assert_eq!(create_session(&tree, &mut next, 6000, [0; 16]).0, 1);
    }
}
