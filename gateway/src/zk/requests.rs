//! From decoded ZooKeeper requests to backend calls and tree reads, and from outcomes to replies.
//! Writes become `Pending` futures resolved in order; reads run under the tree's read lock, so a
//! watch registered by a read is atomic with the state it read.

use super::conn::Session;
use super::proto::{
    self, AddWatchMode, CreateKind, MultiOp, MultiResult, ReadOp, Request as Zk,
    RequestDecodeError, Response, SetWatches2,
};
use roster_core::acl::{self, Acl, AuthInfo, Id, perms};
use roster_core::backend::BackendError;
use roster_core::tree::Tree;
use roster_core::txn::{Applied, Envelope, OpResult, Outcome, Request, WriteOp};
use roster_core::watch::{EventType, WatchKind, WatchedEvent, WatcherType};
use roster_core::{Code, CreateMode, Zxid};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

/// A request waiting its turn.
pub type Pending = Pin<Box<dyn Future<Output = Step> + Send>>;

/// What resolved.
pub enum Step {
    Write {
        xid: i32,
        op: i32,
        kinds: Vec<WriteKind>,
        started: Instant,
        result: Result<Applied, BackendError>,
    },
    Read {
        xid: i32,
        op: i32,
        req: Zk,
        started: Instant,
    },
    Sync {
        xid: i32,
        path: String,
        started: Instant,
        result: Result<Zxid, BackendError>,
    },
    Closed {
        xid: i32,
        result: Result<Applied, BackendError>,
    },
    Error {
        xid: i32,
        op: i32,
        code: Code,
        started: Instant,
    },
    /// Reply with `code`, then close the connection.
    Fatal {
        xid: i32,
        code: Code,
    },
    /// The connection must close.
    Close,
    Done,
}

/// Which reply body a write gets.
#[derive(Clone, Copy)]
pub enum WriteKind {
    Create(CreateKind),
    Delete,
    SetData,
    SetAcl,
    Check,
}

/// The ops a reply is counted under, by their metrics label; anything else is "unknown".
const OPS: [(i32, &str); 29] = {
    use proto::op::*;
    [
        (CREATE, "create"),
        (CREATE2, "create2"),
        (CREATE_CONTAINER, "createContainer"),
        (CREATE_TTL, "createTTL"),
        (DELETE, "delete"),
        (EXISTS, "exists"),
        (GET_DATA, "getData"),
        (SET_DATA, "setData"),
        (GET_ACL, "getACL"),
        (SET_ACL, "setACL"),
        (GET_CHILDREN, "getChildren"),
        (GET_CHILDREN2, "getChildren2"),
        (SYNC, "sync"),
        (PING, "ping"),
        (CHECK, "check"),
        (MULTI, "multi"),
        (MULTI_READ, "multiRead"),
        (RECONFIG, "reconfig"),
        (CHECK_WATCHES, "checkWatches"),
        (REMOVE_WATCHES, "removeWatches"),
        (AUTH, "auth"),
        (SET_WATCHES, "setWatches"),
        (SET_WATCHES2, "setWatches2"),
        (SASL, "sasl"),
        (GET_EPHEMERALS, "getEphemerals"),
        (GET_ALL_CHILDREN_NUMBER, "getAllChildrenNumber"),
        (ADD_WATCH, "addWatch"),
        (WHO_AM_I, "whoAmI"),
        (CLOSE_SESSION, "closeSession"),
    ]
};

/// `OPS`' index of `op`, or `OPS.len()` for an unknown op.
fn op_slot(op: i32) -> usize {
    OPS.iter().position(|(o, _)| *o == op).unwrap_or(OPS.len())
}

fn slot_label(slot: usize) -> &'static str {
    OPS.get(slot).map_or("unknown", |(_, l)| *l)
}

fn op_label(op: i32) -> &'static str {
    slot_label(op_slot(op))
}

/// Per-op metric handles, each looked up on the op's first reply and kept: `counter!` and
/// `histogram!` with labels hash the key and search the registry on every call, which showed in
/// the profile of every request. Looked up lazily, so an op never seen exports no series (eager
/// registration put ~570 lines of zeros into `/metrics`).
#[derive(Default)]
pub struct OpMetrics {
    /// Per `OPS` slot (plus "unknown"): the duration histogram and the `result="ok"` counter.
    slots: [std::sync::OnceLock<(metrics::Histogram, metrics::Counter)>; OPS.len() + 1],
}

impl OpMetrics {
    fn of(&self, slot: usize) -> &(metrics::Histogram, metrics::Counter) {
        self.slots[slot].get_or_init(|| {
            let op = slot_label(slot);
            (
                metrics::histogram!("roster_request_duration_seconds", "protocol" => "zookeeper", "op" => op),
                metrics::counter!("roster_requests_total", "protocol" => "zookeeper", "op" => op, "result" => Code::Ok.label()),
            )
        })
    }
}

fn observe(s: &Session, op: i32, code: Code, started: Instant) {
    let el = started.elapsed();
    let slot = op_slot(op);
    let (hist, ok) = s.server.op_metrics.of(slot);
    if code == Code::Ok {
        ok.increment(1);
    } else {
        metrics::counter!("roster_requests_total", "protocol" => "zookeeper", "op" => slot_label(slot), "result" => code.label())
            .increment(1);
    }
    hist.record(el.as_secs_f64());
    s.server
        .registry
        .stats
        .record_latency(el.as_micros() as u64);
}

fn ready(step: Step) -> Option<Pending> {
    Some(Box::pin(std::future::ready(step)))
}

fn create_mode(kind: CreateKind, flags: i32) -> Result<CreateMode, Code> {
    let mode = CreateMode::from_flags(flags).ok_or(Code::BadArguments)?;
    match kind {
        CreateKind::Ttl if !mode.is_ttl() => Err(Code::BadArguments),
        CreateKind::Container if mode != CreateMode::Container => Err(Code::BadArguments),
        CreateKind::Create | CreateKind::Create2 if mode.is_ttl() => Err(Code::BadArguments),
        _ => Ok(mode),
    }
}

fn write_op(op: MultiOp) -> Result<(WriteKind, WriteOp), Code> {
    Ok(match op {
        MultiOp::Create {
            kind,
            path,
            data,
            acl,
            flags,
            ttl,
        } => {
            let mode = create_mode(kind, flags)?;
            (
                WriteKind::Create(kind),
                WriteOp::Create {
                    path,
                    data,
                    acl,
                    mode,
                    ttl,
                },
            )
        }
        MultiOp::Delete { path, version } => (WriteKind::Delete, WriteOp::Delete { path, version }),
        MultiOp::SetData {
            path,
            data,
            version,
        } => (
            WriteKind::SetData,
            WriteOp::SetData {
                path,
                data,
                version,
            },
        ),
        MultiOp::Check { path, version } => (WriteKind::Check, WriteOp::Check { path, version }),
    })
}

/// Begin a request. Reads run now when nothing is in flight; otherwise everything queues.
pub fn start(
    s: &mut Session,
    xid: i32,
    op: i32,
    req: Zk,
    started: Instant,
    idle: bool,
) -> Option<Pending> {
    let write = |kind: WriteKind, w: WriteOp| (vec![kind], Request::Op(w));
    let submit = match req {
        Zk::Auth { scheme, auth, .. } => {
            // Auth packets are answered at once (the client does not queue them).
            auth_packet(s, xid, &scheme, &auth);
            observe(s, op, Code::Ok, started);
            return None;
        }
        Zk::Create {
            kind,
            path,
            data,
            acl,
            flags,
            ttl,
        } => match create_mode(kind, flags) {
            Ok(mode) => write(
                WriteKind::Create(kind),
                WriteOp::Create {
                    path,
                    data,
                    acl,
                    mode,
                    ttl,
                },
            ),
            Err(code) => {
                return ready(Step::Error {
                    xid,
                    op,
                    code,
                    started,
                });
            }
        },
        Zk::Delete { path, version } => write(WriteKind::Delete, WriteOp::Delete { path, version }),
        Zk::SetData {
            path,
            data,
            version,
        } => write(
            WriteKind::SetData,
            WriteOp::SetData {
                path,
                data,
                version,
            },
        ),
        Zk::SetAcl { path, acl, version } => {
            write(WriteKind::SetAcl, WriteOp::SetAcl { path, acl, version })
        }
        // ZooKeeper ≥ 3.8.4 / 3.9.3 refuses a top-level check (ZOOKEEPER-2623): Unimplemented, then
        // the connection closes.
        Zk::Check { .. } => {
            return ready(Step::Fatal {
                xid,
                code: Code::Unimplemented,
            });
        }
        Zk::Multi(ops) => {
            let mut kinds = Vec::with_capacity(ops.len());
            let mut writes = Vec::with_capacity(ops.len());
            for o in ops {
                match write_op(o) {
                    Ok((k, w)) => {
                        kinds.push(k);
                        writes.push(w);
                    }
                    Err(code) => {
                        return ready(Step::Error {
                            xid,
                            op,
                            code,
                            started,
                        });
                    }
                }
            }
            (kinds, Request::Multi(writes))
        }
        Zk::Sync { path } => {
            let backend = s.server.backend.clone();
            return Some(Box::pin(async move {
                Step::Sync {
                    xid,
                    path,
                    started,
                    result: backend.barrier().await,
                }
            }));
        }
        Zk::CloseSession => {
            s.server.registry.unbind(s.id, s.conn.id);
            let backend = s.server.backend.clone();
            let env = Envelope {
                session: s.id,
                auth: s.auth.clone(),
                request: Request::CloseSession,
            };
            return Some(Box::pin(async move {
                Step::Closed {
                    xid,
                    result: backend.submit(env).await,
                }
            }));
        }
        Zk::Reconfig { .. } => {
            return ready(Step::Error {
                xid,
                op,
                code: Code::ReconfigDisabled,
                started,
            });
        }
        Zk::Sasl { .. } => {
            return ready(Step::Error {
                xid,
                op,
                code: Code::Unimplemented,
                started,
            });
        }
        read => {
            if idle {
                read_now(s, xid, op, read, started);
                return None;
            }
            return ready(Step::Read {
                xid,
                op,
                req: read,
                started,
            });
        }
    };
    let (kinds, request) = submit;
    let backend = s.server.backend.clone();
    let env = Envelope {
        session: s.id,
        auth: s.auth.clone(),
        request,
    };
    Some(Box::pin(async move {
        Step::Write {
            xid,
            op,
            kinds,
            started,
            result: backend.submit(env).await,
        }
    }))
}

/// A request frame that did not decode: ZooKeeper's reaction.
pub fn decode_failure(s: &mut Session, e: RequestDecodeError) -> Step {
    tracing::warn!(conn = s.conn.id, peer = %s.conn.peer, error = %e, "undecodable request");
    metrics::counter!("roster_zk_bad_requests_total").increment(1);
    if let Some((xid, code)) = e.reply() {
        s.reply(xid, code, None);
    }
    if e.closes_connection() {
        Step::Close
    } else {
        Step::Done
    }
}

/// Complete a resolved request: send its reply.
pub fn finish(s: &mut Session, step: Step) -> Step {
    match step {
        Step::Read {
            xid,
            op,
            req,
            started,
        } => {
            read_now(s, xid, op, req, started);
            Step::Done
        }
        Step::Error {
            xid,
            op,
            code,
            started,
        } => {
            s.reply(xid, code, None);
            observe(s, op, code, started);
            Step::Done
        }
        Step::Sync {
            xid,
            path,
            started,
            result,
        } => match result {
            Ok(zxid) => {
                s.reply_at(xid, zxid, Code::Ok, Some(&Response::Sync { path }));
                observe(s, proto::op::SYNC, Code::Ok, started);
                Step::Done
            }
            Err(e) => backend_failed(s, xid, proto::op::SYNC, started, e),
        },
        Step::Closed { xid, result } => {
            let zxid = match result {
                Ok(a) => a.zxid,
                Err(_) => s.server.backend.tree().read().last_zxid(),
            };
            s.reply_at(xid, zxid, Code::Ok, None);
            Step::Close
        }
        Step::Write {
            xid,
            op,
            kinds,
            started,
            result,
        } => match result {
            Ok(applied) => {
                let code = write_reply(s, xid, &kinds, applied);
                observe(s, op, code, started);
                Step::Done
            }
            Err(e) => backend_failed(s, xid, op, started, e),
        },
        Step::Fatal { xid, code } => {
            s.reply(xid, code, None);
            Step::Close
        }
        other => other,
    }
}

fn backend_failed(s: &mut Session, xid: i32, op: i32, started: Instant, e: BackendError) -> Step {
    if let BackendError::Unsupported { .. } = e {
        // The backend cannot honour this by design (e.g. a sequential create on AP): answer
        // UNIMPLEMENTED (-6), which kazoo and Curator raise to the caller without retrying, and
        // keep the connection.
        tracing::warn!(conn = s.conn.id, session = format!("{:#x}", s.id), op = op_label(op), error = %e,
            "request refused: run a zab or raft cluster for it");
        s.reply(xid, Code::Unimplemented, None);
        observe(s, op, Code::Unimplemented, started);
        return Step::Done;
    }
    tracing::warn!(conn = s.conn.id, session = format!("{:#x}", s.id), error = %e,
        "backend cannot serve the request; closing the connection so the client retries");
    Step::Close
}

fn write_reply(s: &mut Session, xid: i32, kinds: &[WriteKind], applied: Applied) -> Code {
    let one = |kind: WriteKind, r: OpResult| -> Response {
        match (kind, r) {
            (WriteKind::Create(CreateKind::Create), OpResult::Created { path, .. }) => {
                Response::Create { path }
            }
            (WriteKind::Create(_), OpResult::Created { path, stat }) => {
                Response::Create2 { path, stat }
            }
            (_, OpResult::DataSet { stat }) | (_, OpResult::AclSet { stat }) => {
                Response::Stat(stat)
            }
            _ => Response::Empty,
        }
    };
    match applied.outcome {
        Outcome::Failed(code) => {
            s.reply_at(xid, applied.zxid, code, None);
            code
        }
        Outcome::Op(r) => {
            let body = one(kinds[0], r);
            s.reply_at(xid, applied.zxid, Code::Ok, Some(&body));
            Code::Ok
        }
        Outcome::Multi(results) => {
            let failed = results.iter().any(|r| matches!(r, OpResult::Error(_)));
            let mr = results
                .into_iter()
                .zip(kinds.iter())
                .map(|(r, k)| match (r, k) {
                    (OpResult::Error(err), _) => MultiResult::Error { err },
                    (OpResult::Created { path, .. }, WriteKind::Create(CreateKind::Create)) => {
                        MultiResult::Create { path }
                    }
                    (OpResult::Created { path, stat }, _) => MultiResult::Create2 { path, stat },
                    (OpResult::Deleted, _) => MultiResult::Delete,
                    (OpResult::DataSet { stat }, _) => MultiResult::SetData { stat },
                    (OpResult::Checked, _) => MultiResult::Check,
                    (OpResult::AclSet { .. }, _) => MultiResult::Error {
                        err: Code::BadArguments,
                    },
                })
                .collect();
            s.reply_at(xid, applied.zxid, Code::Ok, Some(&Response::Multi(mr)));
            if failed { Code::ApiError } else { Code::Ok }
        }
        Outcome::SessionCreated { .. } | Outcome::SessionClosed => {
            s.reply_at(xid, applied.zxid, Code::Ok, None);
            Code::Ok
        }
    }
}

fn auth_packet(s: &mut Session, xid: i32, scheme: &str, auth: &[u8]) {
    let ok = match scheme {
        "digest" => match std::str::from_utf8(auth) {
            Ok(up) if up.contains(':') => {
                let id = acl::digest_id(up);
                let mut info: AuthInfo = (*s.auth).clone();
                if s.server.cfg.super_digest.as_deref() == Some(id.as_str()) {
                    info.ids
                        .push(Id::new("super", up.split(':').next().unwrap_or("")));
                }
                let new = Id::new("digest", &id);
                if !info.ids.contains(&new) {
                    info.ids.push(new);
                }
                s.auth = Arc::new(info);
                true
            }
            _ => false,
        },
        _ => false,
    };
    let zxid = s.server.backend.tree().read().last_zxid();
    if ok {
        s.reply_at(xid, zxid, Code::Ok, None);
    } else {
        tracing::info!(
            conn = s.conn.id,
            scheme,
            "authentication failed; closing the connection"
        );
        s.reply_at(xid, zxid, Code::AuthFailed, None);
        s.close_after_reply();
    }
}

fn core_wtype(t: proto::WatcherType) -> WatcherType {
    match t {
        proto::WatcherType::Children => WatcherType::Children,
        proto::WatcherType::Data => WatcherType::Data,
        proto::WatcherType::Any => WatcherType::Any,
        proto::WatcherType::Persistent => WatcherType::Persistent,
        proto::WatcherType::PersistentRecursive => WatcherType::PersistentRecursive,
    }
}

/// Redact digest hashes for callers with READ but not ADMIN (ZooKeeper 3.8's getACL).
fn visible_acl(acl: &[Acl], auth: &AuthInfo) -> Result<Vec<Acl>, Code> {
    if acl::check(acl, perms::ADMIN, auth) {
        return Ok(acl.to_vec());
    }
    if !acl::check(acl, perms::READ, auth) {
        return Err(Code::NoAuth);
    }
    Ok(acl
        .iter()
        .map(|a| {
            if a.id.scheme == "digest" {
                let user = a.id.id.split(':').next().unwrap_or("");
                Acl {
                    perms: a.perms,
                    id: Id::new("digest", &format!("{user}:x")),
                }
            } else {
                a.clone()
            }
        })
        .collect())
}

/// Run a read (or a watch-management request) against the local tree and reply.
fn read_now(s: &mut Session, xid: i32, op: i32, req: Zk, started: Instant) {
    let tree = s.server.backend.tree();
    let t = tree.read();
    let zxid = t.last_zxid();
    let me = s.conn.id;
    let result: Result<Option<Response>, Code> = match req {
        Zk::Ping => {
            drop(t);
            s.reply_at(xid, zxid, Code::Ok, None);
            return;
        }
        Zk::Exists { path, watch } => {
            if watch {
                t.watches().lock().add(me, WatchKind::Data, &path);
            }
            match t.get(&path) {
                Some(n) => Ok(Some(Response::Stat(n.client_stat()))),
                None => Err(Code::NoNode),
            }
        }
        Zk::GetData { path, watch } => match t.get(&path) {
            None => Err(Code::NoNode),
            Some(n) if !acl::check(&n.acl, perms::READ, &s.auth) => Err(Code::NoAuth),
            Some(n) => {
                if watch {
                    t.watches().lock().add(me, WatchKind::Data, &path);
                }
                Ok(Some(Response::GetData {
                    data: n.data.clone(),
                    stat: n.client_stat(),
                }))
            }
        },
        Zk::GetChildren { path, watch } | Zk::GetChildren2 { path, watch } => match t.get(&path) {
            None => Err(Code::NoNode),
            Some(n) if !acl::check(&n.acl, perms::READ, &s.auth) => Err(Code::NoAuth),
            Some(n) => {
                if watch {
                    t.watches().lock().add(me, WatchKind::Child, &path);
                }
                let children: Vec<String> = n.children.iter().cloned().collect();
                Ok(Some(if op == proto::op::GET_CHILDREN2 {
                    Response::Children2 {
                        children,
                        stat: n.client_stat(),
                    }
                } else {
                    Response::Children(children)
                }))
            }
        },
        Zk::GetAcl { path } => match t.get(&path) {
            None => Err(Code::NoNode),
            Some(n) => visible_acl(&n.acl, &s.auth).map(|acl| {
                Some(Response::GetAcl {
                    acl,
                    stat: n.client_stat(),
                })
            }),
        },
        Zk::GetAllChildrenNumber { path } => match t.get(&path) {
            None => Err(Code::NoNode),
            Some(n) if !acl::check(&n.acl, perms::READ, &s.auth) => Err(Code::NoAuth),
            Some(_) => Ok(Some(Response::AllChildrenNumber(
                t.all_children_number(&path).unwrap_or(0) as i32,
            ))),
        },
        Zk::GetEphemerals { prefix_path } => {
            let all = prefix_path.is_empty() || prefix_path == "/";
            let v = t
                .ephemerals_of(s.id)
                .filter(|p| all || p.starts_with(&prefix_path))
                .cloned()
                .collect();
            Ok(Some(Response::Ephemerals(v)))
        }
        Zk::MultiRead(ops) => {
            let results = ops
                .into_iter()
                .map(|o| {
                    let (path, data) = match &o {
                        ReadOp::GetData { path } => (path, true),
                        ReadOp::GetChildren { path } => (path, false),
                    };
                    match t.get(path) {
                        None => MultiResult::Error { err: Code::NoNode },
                        Some(n) if !acl::check(&n.acl, perms::READ, &s.auth) => {
                            MultiResult::Error { err: Code::NoAuth }
                        }
                        Some(n) if data => MultiResult::GetData {
                            data: n.data.clone(),
                            stat: n.client_stat(),
                        },
                        Some(n) => MultiResult::GetChildren {
                            children: n.children.iter().cloned().collect(),
                        },
                    }
                })
                .collect();
            Ok(Some(Response::Multi(results)))
        }
        Zk::CheckWatches { path, watcher_type } => {
            if t.watches()
                .lock()
                .contains(me, core_wtype(watcher_type), &path)
            {
                Ok(None)
            } else {
                Err(Code::NoWatcher)
            }
        }
        Zk::RemoveWatches { path, watcher_type } => {
            if t.watches()
                .lock()
                .remove(me, core_wtype(watcher_type), &path)
                .is_empty()
            {
                Err(Code::NoWatcher)
            } else {
                Ok(None)
            }
        }
        Zk::AddWatch { path, mode } => {
            let kind = match mode {
                AddWatchMode::Persistent => WatchKind::Persistent,
                AddWatchMode::PersistentRecursive => WatchKind::PersistentRecursive,
            };
            t.watches().lock().add(me, kind, &path);
            Ok(Some(Response::AddWatch))
        }
        Zk::SetWatches(w) => {
            set_watches(
                s,
                &t,
                SetWatches2 {
                    relative_zxid: w.relative_zxid,
                    data: w.data,
                    exist: w.exist,
                    child: w.child,
                    persistent: vec![],
                    persistent_recursive: vec![],
                },
            );
            drop(t);
            s.reply_at(xid, zxid, Code::Ok, None);
            return;
        }
        Zk::SetWatches2(w) => {
            set_watches(s, &t, w);
            drop(t);
            s.reply_at(xid, zxid, Code::Ok, None);
            return;
        }
        Zk::WhoAmI => Ok(Some(Response::WhoAmI(
            s.auth
                .ids
                .iter()
                .map(|i| {
                    let user = if i.scheme == "digest" {
                        i.id.split(':').next().unwrap_or("").to_owned()
                    } else {
                        i.id.clone()
                    };
                    (i.scheme.clone(), user)
                })
                .collect(),
        ))),
        other => {
            tracing::error!(
                op = other.op(),
                "request routed to the read path by mistake"
            );
            Err(Code::SystemError)
        }
    };
    let code = match &result {
        Ok(_) => Code::Ok,
        Err(c) => *c,
    };
    // Queue the reply while still holding the tree's read lock: a write that changes what was
    // read (and fires the watch this read set) needs the write lock, so its event is queued
    // after this reply, as ZooKeeper orders them. Clients register a watcher when the reply
    // arrives and drop events for paths they do not watch yet: an event overtaking the reply
    // would be lost (a lock waiter would wait forever).
    match result {
        Ok(body) => s.reply_at(
            xid,
            zxid,
            Code::Ok,
            Some(body.as_ref().unwrap_or(&Response::Empty)),
        ),
        Err(c) => s.reply_at(xid, zxid, c, None),
    }
    drop(t);
    observe(s, op, code, started);
}

/// Re-register watches after a reconnect, firing at once those whose change the client missed.
fn set_watches(s: &mut Session, t: &Tree, w: SetWatches2) {
    let me = s.conn.id;
    let rel = w.relative_zxid;
    tracing::debug!(
        conn = me,
        session = format!("{:#x}", s.id),
        rel = format!("{rel:#x}"),
        data = w.data.len(),
        exist = w.exist.len(),
        child = w.child.len(),
        persistent = w.persistent.len(),
        recursive = w.persistent_recursive.len(),
        "setWatches"
    );
    let mut fire: Vec<(EventType, String)> = Vec::new();
    let mut wm = t.watches().lock();
    for p in w.data {
        match t.get(&p) {
            None => fire.push((EventType::NodeDeleted, p)),
            Some(n) if n.stat.mzxid > rel => fire.push((EventType::NodeDataChanged, p)),
            Some(_) => wm.add(me, WatchKind::Data, &p),
        }
    }
    for p in w.exist {
        match t.get(&p) {
            Some(_) => fire.push((EventType::NodeCreated, p)),
            None => wm.add(me, WatchKind::Data, &p),
        }
    }
    for p in w.child {
        match t.get(&p) {
            None => fire.push((EventType::NodeDeleted, p)),
            Some(n) if n.stat.pzxid > rel => fire.push((EventType::NodeChildrenChanged, p)),
            Some(_) => wm.add(me, WatchKind::Child, &p),
        }
    }
    for p in w.persistent {
        wm.add(me, WatchKind::Persistent, &p);
    }
    for p in w.persistent_recursive {
        wm.add(me, WatchKind::PersistentRecursive, &p);
    }
    drop(wm);
    for (kind, path) in fire {
        s.event(WatchedEvent {
            kind,
            path: path.into(),
            zxid: t.last_zxid(),
        });
    }
}
