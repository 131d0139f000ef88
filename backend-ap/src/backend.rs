//! The AP backend's shell around [`Member`]: recovery from the storage engine, one core thread
//! that takes a batch of inputs (local requests, peer messages, liveness changes, ticks), persists
//! it with one fsync (group commit), applies the changed paths to the tree, replies, and sends —
//! plus the tasks of the transport, the failure detector and the timers.

use crate::expiry::ExpiryConfig;
use crate::hlc::{Hlc, MemberId};
use crate::materialize::materialize;
use crate::member::{Event, Member, MemberConfig, Plan, outcome};
use crate::membership::{self, Ident, Liveness, MembershipConfig};
use crate::model::PEntry;
use crate::proto::Msg;
use crate::transport::{self, Transport};
use parking_lot::{Mutex, RwLock};
use roster_core::backend::{Backend, BackendError, Capabilities, ClusterStatus, Role, TreeView};
use roster_core::session::SessionTracker;
use roster_core::storage::{Engine, Space, StorageError, WriteBatch};
use roster_core::tree::Tree;
use roster_core::txn::{Applied, Envelope, Request, Txn, TxnOp};
use roster_core::{SessionId, Zxid};
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::{broadcast, mpsc, oneshot};

/// What the AP backend can honour.
pub const AP_CAPABILITIES: Capabilities = Capabilities {
    linearizable_writes: false,
    sequential_nodes: false,
    conditional_writes: false,
    multi: false,
    locks: false,
};

const META_INCARNATION: &[u8] = b"ap_incarnation";
const META_HLC: &[u8] = b"ap_hlc";

/// Settings of the AP backend.
#[derive(Debug, Clone)]
pub struct ApConfig {
    pub server_id: u64,
    /// UDP (gossip) and TCP (data) address of this member.
    pub listen: SocketAddr,
    /// Other members to contact first (id, address); more may join later.
    pub seeds: Vec<(MemberId, SocketAddr)>,
    /// Session-expiry granularity (ZooKeeper tickTime).
    pub tick_ms: u64,
    pub grace_ms: u64,
    pub max_share: f64,
    pub tombstone_ttl_ms: u64,
    pub anti_entropy_ms: u64,
    pub probe_ms: u64,
    pub suspect_ms: u64,
    pub queue_depth: usize,
}

impl Default for ApConfig {
    fn default() -> Self {
        ApConfig {
            server_id: 1,
            listen: "127.0.0.1:7946".parse().expect("literal"),
            seeds: Vec::new(),
            tick_ms: 2000,
            grace_ms: 30_000,
            max_share: 0.5,
            tombstone_ttl_ms: 3_600_000,
            anti_entropy_ms: 1000,
            probe_ms: 500,
            suspect_ms: 3000,
            queue_depth: 16_384,
        }
    }
}

/// Errors opening the backend.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("binding the AP address {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("corrupt AP store: {0}")]
    Corrupt(String),
}

type Reply = oneshot::Sender<Result<Applied, BackendError>>;

enum Input {
    Local(Envelope, Reply),
    Barrier(oneshot::Sender<Zxid>),
    Peer(MemberId, Msg),
    Live(Liveness),
    Tick,
}

fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The AP backend.
pub struct ApBackend {
    inputs: mpsc::Sender<Input>,
    tree: TreeView,
    applied_tx: broadcast::Sender<Arc<Txn>>,
    sessions: Arc<Mutex<SessionTracker>>,
    started: Instant,
    server_id: u64,
    incarnation: u64,
    failed: Arc<AtomicBool>,
    alive: Arc<AtomicUsize>,
}

/// Read the stored registers.
fn load(engine: &dyn Engine) -> Result<Vec<(String, PEntry)>, OpenError> {
    let mut out = Vec::new();
    let mut bad = None;
    engine.scan(Space::Snapshot, b"/", &mut |k, v| {
        if !k.starts_with(b"/") {
            return false;
        }
        match (std::str::from_utf8(k), postcard::from_bytes::<PEntry>(v)) {
            (Ok(p), Ok(e)) => out.push((p.to_owned(), e)),
            _ => {
                bad = Some(String::from_utf8_lossy(k).into_owned());
                return false;
            }
        }
        true
    })?;
    match bad {
        Some(k) => Err(OpenError::Corrupt(format!("register {k:?}"))),
        None => Ok(out),
    }
}

impl ApBackend {
    /// Recover from `engine` and join the cluster. Must run inside a tokio runtime.
    pub async fn open(engine: Arc<dyn Engine>, cfg: ApConfig) -> Result<Arc<ApBackend>, OpenError> {
        let t0 = Instant::now();
        let incarnation = engine
            .get(Space::Meta, META_INCARNATION)?
            .and_then(|v| v.try_into().ok().map(u64::from_be_bytes))
            .unwrap_or(0)
            + 1;
        let floor: Hlc = engine
            .get(Space::Meta, META_HLC)?
            .and_then(|v| postcard::from_bytes(&v).ok())
            .unwrap_or_default();
        let mut wb = WriteBatch::default();
        wb.put(Space::Meta, META_INCARNATION, incarnation.to_be_bytes());
        engine.write(wb, true)?;
        let stored = load(engine.as_ref())?;
        let registers = stored.len();
        let member = Member::new(
            MemberConfig {
                id: cfg.server_id,
                expiry: ExpiryConfig {
                    grace_ms: cfg.grace_ms,
                    max_share: cfg.max_share,
                },
                tombstone_ttl_ms: cfg.tombstone_ttl_ms,
                anti_entropy_ms: cfg.anti_entropy_ms,
            },
            incarnation,
            floor,
            stored,
            rand::random(),
        );
        let mut tree = Tree::new();
        let mut next_zxid: Zxid = ((incarnation as i64 & 0x7fff_ffff) << 32) | 1;
        let all: BTreeSet<String> = member
            .model()
            .persistent_entries()
            .map(|(p, _)| p.clone())
            .collect();
        materialize(member.model(), &mut tree, &all, &mut next_zxid);
        tracing::info!(
            incarnation,
            registers,
            nodes = tree.node_count(),
            last_zxid = format!("{:#x}", tree.last_zxid()),
            ms = t0.elapsed().as_millis() as u64,
            "AP member recovered"
        );
        let udp = tokio::net::UdpSocket::bind(cfg.listen)
            .await
            .map_err(|source| OpenError::Bind {
                addr: cfg.listen,
                source,
            })?;
        let tcp = tokio::net::TcpListener::bind(cfg.listen)
            .await
            .map_err(|source| OpenError::Bind {
                addr: cfg.listen,
                source,
            })?;
        let (inputs, rx) = mpsc::channel(cfg.queue_depth);
        let (applied_tx, _) = broadcast::channel(4096);
        let transport = Transport::new(cfg.server_id, incarnation, cfg.listen);
        let mut member = member;
        for (id, addr) in &cfg.seeds {
            transport.add(*id, *addr);
            member.add_peer(*id);
        }
        let me = Arc::new(ApBackend {
            inputs: inputs.clone(),
            tree: Arc::new(RwLock::new(tree)),
            applied_tx: applied_tx.clone(),
            sessions: Arc::new(Mutex::new(SessionTracker::new(cfg.tick_ms))),
            started: Instant::now(),
            server_id: cfg.server_id,
            incarnation,
            failed: Arc::new(AtomicBool::new(false)),
            alive: Arc::new(AtomicUsize::new(1)),
        });
        let core = Core {
            member,
            engine,
            tree: me.tree.clone(),
            applied_tx,
            sessions: me.sessions.clone(),
            started: me.started,
            next_zxid,
            transport: transport.clone(),
            failed: me.failed.clone(),
            alive: me.alive.clone(),
            last_hlc: floor,
            down: BTreeSet::new(),
        };
        let rt = tokio::runtime::Handle::current();
        std::thread::Builder::new()
            .name("ap-core".into())
            .spawn(move || {
                // The transport spawns connector tasks from here.
                let _rt = rt.enter();
                core.run(rx)
            })
            .expect("spawn the AP core thread");
        // Peers' messages.
        let tx = inputs.clone();
        tokio::spawn(transport::serve(
            tcp,
            transport.clone(),
            move |from, msg| {
                let tx = tx.clone();
                Box::pin(async move { tx.send(Input::Peer(from, msg)).await.is_ok() })
            },
        ));
        // Failure detector.
        let (live_tx, mut live_rx) = mpsc::channel(1024);
        let ident = Ident {
            id: cfg.server_id,
            addr: cfg.listen,
            bump: wall_ms(),
        };
        tokio::spawn(membership::run(
            ident,
            udp,
            cfg.seeds.clone(),
            MembershipConfig {
                probe_ms: cfg.probe_ms,
                suspect_ms: cfg.suspect_ms,
            },
            live_tx,
        ));
        let tx = inputs.clone();
        tokio::spawn(async move {
            while let Some(l) = live_rx.recv().await {
                if tx.send(Input::Live(l)).await.is_err() {
                    return;
                }
            }
        });
        // Ticks.
        let tx = inputs;
        let every = Duration::from_millis((cfg.tick_ms / 4).clamp(20, 250));
        tokio::spawn(async move {
            let mut iv = tokio::time::interval(every);
            loop {
                iv.tick().await;
                if tx.send(Input::Tick).await.is_err() {
                    return;
                }
            }
        });
        Ok(me)
    }

    /// This run's incarnation (the epoch of its zxids).
    pub fn incarnation(&self) -> u64 {
        self.incarnation
    }
}

struct Core {
    member: Member,
    engine: Arc<dyn Engine>,
    tree: TreeView,
    applied_tx: broadcast::Sender<Arc<Txn>>,
    sessions: Arc<Mutex<SessionTracker>>,
    started: Instant,
    next_zxid: Zxid,
    transport: Arc<Transport>,
    failed: Arc<AtomicBool>,
    alive: Arc<AtomicUsize>,
    last_hlc: Hlc,
    down: BTreeSet<MemberId>,
}

impl Core {
    fn run(mut self, mut rx: mpsc::Receiver<Input>) {
        let mut batch = Vec::with_capacity(1024);
        loop {
            let Some(first) = rx.blocking_recv() else {
                return;
            };
            batch.push(first);
            while batch.len() < 1024 {
                match rx.try_recv() {
                    Ok(i) => batch.push(i),
                    Err(_) => break,
                }
            }
            self.batch(&mut batch);
        }
    }

    fn batch(&mut self, batch: &mut Vec<Input>) {
        let now = wall_ms();
        let failed = self.failed.load(Ordering::Acquire);
        let mut replies: Vec<(Plan, Reply)> = Vec::new();
        let mut barriers = Vec::new();
        for input in batch.drain(..) {
            match input {
                Input::Local(env, reply) => {
                    if failed && !matches!(env.request, Request::CloseSession) {
                        let _ =
                            reply.send(Err(BackendError::Storage("the AP store failed".into())));
                        continue;
                    }
                    let plan = self.member.local(&env, now);
                    if let Plan::Refused(e) = &plan {
                        tracing::info!(session = format!("{:#x}", env.session), error = %e,
                            "refused by the AP backend; zab or raft can serve it");
                        metrics::counter!("roster_ap_refused_total").increment(1);
                    }
                    replies.push((plan, reply));
                }
                Input::Barrier(r) => barriers.push(r),
                Input::Peer(from, msg) => self.member.peer(from, msg, now),
                Input::Live(Liveness::Up(id, addr)) => {
                    self.transport.add(id, addr);
                    if self.down.remove(&id) {
                        self.transport.reconnect(id);
                    } else {
                        self.transport.wake(id);
                    }
                    self.member.member_up(id);
                }
                Input::Live(Liveness::Down(id)) => {
                    self.down.insert(id);
                    self.member.member_down(id, now);
                }
                Input::Tick => {
                    self.member.tick(now);
                    let mono = self.started.elapsed().as_millis() as u64;
                    let expired = self.sessions.lock().expired(mono);
                    for s in expired {
                        tracing::info!(session = format!("{s:#x}"), "session expired");
                        metrics::counter!("roster_sessions_expired_total").increment(1);
                        let env = Envelope {
                            session: s,
                            ..Envelope::internal(Request::CloseSession)
                        };
                        self.member.local(&env, now);
                    }
                }
            }
        }
        let acts = self.member.flush();
        // Sync: one write (and one fsync when local writes wait for it) for the whole batch.
        let hlc = self.member.clock();
        if !acts.persist.is_empty() || hlc != self.last_hlc {
            let mut wb = WriteBatch::default();
            for (p, e) in &acts.persist {
                match e {
                    Some(e) => wb.put(
                        Space::Snapshot,
                        p.as_bytes(),
                        postcard::to_stdvec(e).expect("in-memory serialization cannot fail"),
                    ),
                    None => wb.delete(Space::Snapshot, p.as_bytes()),
                }
            }
            wb.put(
                Space::Meta,
                META_HLC,
                postcard::to_stdvec(&hlc).expect("in-memory serialization cannot fail"),
            );
            let t0 = Instant::now();
            let res = self.engine.write(wb, acts.durable);
            if acts.durable {
                metrics::histogram!("roster_storage_fsync_seconds")
                    .record(t0.elapsed().as_secs_f64());
            }
            match res {
                Ok(()) => self.last_hlc = hlc,
                Err(e) => {
                    tracing::error!(error = %e, "AP store write failed; refusing further writes");
                    self.failed.store(true, Ordering::Release);
                    for (_, r) in replies {
                        let _ = r.send(Err(BackendError::Storage(e.to_string())));
                    }
                    return;
                }
            }
        }
        // Final: apply to the tree, then reply.
        let mut txns: Vec<Arc<Txn>> = Vec::new();
        let mut answers = Vec::with_capacity(replies.len());
        {
            let mut tree = self.tree.write();
            for (s, timeout_ms, passwd) in &acts.opened {
                let txn = Txn {
                    zxid: self.next_zxid,
                    time: now as i64,
                    session: *s,
                    op: TxnOp::CreateSession {
                        timeout_ms: *timeout_ms,
                        passwd: passwd.clone(),
                    },
                };
                self.next_zxid += 1;
                tree.apply(&txn);
                txns.push(Arc::new(txn));
            }
            txns.extend(materialize(
                self.member.model(),
                &mut tree,
                &acts.changed,
                &mut self.next_zxid,
            ));
            for s in &acts.closed {
                let txn = Txn {
                    zxid: self.next_zxid,
                    time: now as i64,
                    session: *s,
                    op: TxnOp::CloseSession,
                };
                self.next_zxid += 1;
                tree.apply(&txn);
                txns.push(Arc::new(txn));
            }
            let last = tree.last_zxid();
            for (plan, reply) in replies {
                let res = outcome(&plan, &tree).map(|outcome| Applied {
                    zxid: last,
                    outcome,
                });
                answers.push((reply, res));
            }
            for b in barriers {
                let _ = b.send(last);
            }
        }
        {
            let mono = self.started.elapsed().as_millis() as u64;
            let mut t = self.sessions.lock();
            for (s, timeout, _) in &acts.opened {
                t.add(*s, *timeout as u64, mono);
            }
            for s in &acts.closed {
                t.remove(*s);
            }
        }
        metrics::counter!("roster_backend_txns_total").increment(txns.len() as u64);
        for t in txns {
            let _ = self.applied_tx.send(t);
        }
        // Send: fresh frames are shared between peers.
        let mut encoded: Vec<(Msg, Arc<Vec<u8>>)> = Vec::new();
        for (to, msg) in acts.send {
            let frame = match encoded.iter().find(|(m, _)| *m == msg) {
                Some((_, f)) => f.clone(),
                None => {
                    let f = Arc::new(crate::proto::encode(&msg));
                    if encoded.len() < 8 {
                        encoded.push((msg, f.clone()));
                    }
                    f
                }
            };
            self.transport.send_frame(to, frame);
        }
        // Replies after the frames are queued, so a write is on its way to the peers by the
        // time its client hears back.
        for (r, res) in answers {
            let _ = r.send(res);
        }
        for lag in acts.lags_ms {
            metrics::histogram!("roster_ap_convergence_lag_seconds").record(lag as f64 / 1000.0);
        }
        for ev in acts.events {
            match ev {
                Event::Preservation {
                    on: true,
                    owners,
                    total,
                } => {
                    tracing::warn!(
                        ?owners,
                        total_ephemerals = total,
                        "self-preservation ON: dead members' ephemeral nodes are kept, too many would vanish at once"
                    );
                }
                Event::Preservation { on: false, .. } => {
                    tracing::warn!("self-preservation OFF");
                }
                Event::Expired { owner, ephemerals } => {
                    tracing::warn!(
                        owner,
                        ephemerals,
                        "dead member's ephemeral nodes removed after the grace period"
                    );
                    metrics::counter!("roster_ap_owner_expiries_total").increment(1);
                }
                Event::Pulled { owner } => {
                    tracing::debug!(owner, "owner state pulled");
                }
            }
        }
        self.gauges();
    }

    fn gauges(&self) {
        let m = &self.member;
        metrics::gauge!("roster_ap_self_preservation").set(if m.preserving() { 1.0 } else { 0.0 });
        let counts: BTreeMap<MemberId, usize> = m.model().owner_counts();
        for (owner, n) in &counts {
            metrics::gauge!("roster_ap_ephemerals", "owner" => owner.to_string()).set(*n as f64);
        }
        for d in &self.down {
            if !counts.contains_key(d) {
                metrics::gauge!("roster_ap_ephemerals", "owner" => d.to_string()).set(0.0);
            }
        }
        metrics::counter!("roster_ap_anti_entropy_repairs_total").absolute(m.stats.repairs);
        metrics::counter!("roster_ap_owner_pulls_total").absolute(m.stats.pulls);
        metrics::counter!("roster_ap_delta_gaps_total").absolute(m.stats.gaps);
        let alive = 1 + m.peers().iter().filter(|p| !m.is_down(**p)).count();
        self.alive.store(alive, Ordering::Relaxed);
    }
}

#[async_trait::async_trait]
impl Backend for ApBackend {
    async fn submit(&self, req: Envelope) -> Result<Applied, BackendError> {
        let (tx, rx) = oneshot::channel();
        self.inputs
            .send(Input::Local(req, tx))
            .await
            .map_err(|_| BackendError::ShuttingDown)?;
        rx.await.map_err(|_| BackendError::ShuttingDown)?
    }

    fn tree(&self) -> TreeView {
        self.tree.clone()
    }

    async fn barrier(&self) -> Result<Zxid, BackendError> {
        let (tx, rx) = oneshot::channel();
        self.inputs
            .send(Input::Barrier(tx))
            .await
            .map_err(|_| BackendError::ShuttingDown)?;
        rx.await.map_err(|_| BackendError::ShuttingDown)
    }

    fn applied(&self) -> broadcast::Receiver<Arc<Txn>> {
        self.applied_tx.subscribe()
    }

    async fn touch(&self, sessions: &[SessionId]) -> Result<(), BackendError> {
        let now = self.started.elapsed().as_millis() as u64;
        let mut t = self.sessions.lock();
        for s in sessions {
            t.touch(*s, now);
        }
        Ok(())
    }

    fn capabilities(&self) -> Capabilities {
        AP_CAPABILITIES
    }

    fn status(&self) -> ClusterStatus {
        let last = self.tree.read().last_zxid();
        ClusterStatus {
            backend: "ap",
            // No leader: every member orders its own writes (docs/ap.md).
            role: Role::Standalone,
            server_id: self.server_id,
            leader: None,
            epoch: self.incarnation,
            last_zxid: last,
            committed_zxid: last,
            members: self.alive.load(Ordering::Relaxed),
            voters: 0,
            outstanding: self.inputs.max_capacity() - self.inputs.capacity(),
            ready: !self.failed.load(Ordering::Acquire),
            synced_followers: None,
            synced_observers: None,
            elections: 0,
        }
    }
}
