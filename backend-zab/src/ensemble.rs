//! The async shell of a ZAB ensemble member: a thread that owns the `Peer` (inputs in, group
//! commit, outputs out) and TCP links to every other member — one on the election port and one on
//! the quorum port per pair, dialled by the member with the larger id, as ZooKeeper does for
//! elections. A broken quorum link is reported to the peer, which re-synchronises (followers) or
//! drops the follower (leader): nothing is silently lost between members (election notifications
//! are re-sent every tick while looking, so their links' losses are not reported). Links are
//! dialled from the member's own address within `PEER_CONNECT_TIMEOUT`, and one whose sent data
//! (or keepalive probes, when idle) stays unacknowledged for `PEER_UNACKED_TIMEOUT` — or the
//! `syncLimit`, if longer — is aborted and re-dialled (`roster_core::net`), so a member is linked
//! again as soon as a partition heals, not at TCP's next retransmission.

use crate::quorum::msg::SnapState;
use crate::quorum::{Input, Msg, Output, Peer, PeerConfig, Sid};
use bytes::{BufMut, BytesMut};
use parking_lot::Mutex;
use roster_core::backend::{Backend, BackendError, Capabilities, ClusterStatus, Role, TreeView};
use roster_core::storage::Engine;
use roster_core::transfer::{Dir, Transfer};
use roster_core::tree::snapshot::{Restorer, SnapshotView};
use roster_core::txn::{Applied, Envelope, Txn};
use roster_core::{SessionId, Zxid};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{broadcast, mpsc, oneshot};

/// Where a member listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberAddr {
    pub host: String,
    pub quorum_port: u16,
    pub election_port: u16,
}

/// An ensemble member's settings.
#[derive(Debug, Clone)]
pub struct EnsembleConfig {
    pub peer: PeerConfig,
    pub members: HashMap<Sid, MemberAddr>,
}

/// Largest frame between members. A larger message (a DIFF of very many txns) goes as several
/// frames, each but the last with [`MORE`] set in its length word; a message that fits is one
/// frame, as it always was.
const MAX_PEER_FRAME: usize = 1 << 30;
/// Set in a frame's length word when the message continues in the next frame.
const MORE: u32 = 1 << 31;
/// Largest message reassembled from frames.
const MAX_PEER_MESSAGE: usize = 64 << 30;
/// A SNAP is not a message reassembled whole: [`Msg::SnapHead`], then the snapshot's encoding
/// as a chain of frames of ~1 MiB (the encoder's chunks; each but the last with [`MORE`], the
/// last empty), encoded by the sender and restored by the receiver as they go, with at most
/// this many frames queued between the encoder (or the restorer) and the socket.
const SNAP_CHUNK_FRAMES_IN_FLIGHT: usize = 4;

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum Port {
    Election,
    Quorum,
}

impl Port {
    fn label(self) -> &'static str {
        match self {
            Port::Election => "election",
            Port::Quorum => "quorum",
        }
    }
}

/// `roster_zab_peer_connected{peer, port}`: 1 while a link to that member on that port is up.
fn link_gauge(other: Sid, port: Port) -> metrics::Gauge {
    metrics::gauge!("roster_zab_peer_connected", "peer" => other.to_string(), "port" => port.label())
}

enum Cmd {
    Input(Input),
    Submit(Envelope, oneshot::Sender<Result<Applied, BackendError>>),
    Barrier(oneshot::Sender<Result<Zxid, BackendError>>),
}

#[derive(Debug, Clone)]
struct Snapshot {
    role: Role,
    leader: Option<Sid>,
    epoch: u32,
    last_logged: Zxid,
    outstanding: usize,
    serving: bool,
    followers: Option<(usize, usize)>,
    elections: u64,
}

type Links = Arc<Mutex<HashMap<(Sid, Port), mpsc::UnboundedSender<Arc<Msg>>>>>;

/// A ZAB ensemble member implementing the backend contract.
pub struct Ensemble {
    cmds: std::sync::mpsc::Sender<Cmd>,
    tree: TreeView,
    applied: broadcast::Sender<Arc<Txn>>,
    status: Arc<Mutex<Snapshot>>,
    id: Sid,
    members: usize,
    voters: usize,
}

impl Ensemble {
    /// Recover from `engine`, bind the member ports and start. Must run inside a tokio runtime.
    pub async fn start(
        cfg: EnsembleConfig,
        engine: Arc<dyn Engine>,
    ) -> Result<Arc<Ensemble>, crate::OpenError> {
        let me = cfg.peer.id;
        let started = Instant::now();
        roster_core::transfer::register();
        let peer = Peer::open(cfg.peer.clone(), engine, 0)?;
        let tree = peer.tree();
        // Re-publish the peer's applied stream to this backend's subscribers.
        let (applied, _) = broadcast::channel(4096);
        let mut rx = peer.subscribe();
        let fwd = applied.clone();
        tokio::spawn(async move {
            loop {
                match rx.recv().await {
                    Ok(t) => {
                        let _ = fwd.send(t);
                    }
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(missed = n, "applied stream lagged");
                    }
                    Err(_) => return,
                }
            }
        });
        let status = Arc::new(Mutex::new(Snapshot {
            role: Role::Looking,
            leader: None,
            epoch: peer.current_epoch(),
            last_logged: peer.last_logged(),
            outstanding: 0,
            serving: false,
            followers: None,
            elections: 0,
        }));
        let (cmd_tx, cmd_rx) = std::sync::mpsc::channel::<Cmd>();
        let links: Links = Arc::new(Mutex::new(HashMap::new()));
        let my_addr = cfg.members.get(&me).cloned().ok_or_else(|| {
            crate::OpenError::Config(format!("server.{me} is not among the configured members"))
        })?;
        for port in [Port::Election, Port::Quorum] {
            let p = match port {
                Port::Election => my_addr.election_port,
                Port::Quorum => my_addr.quorum_port,
            };
            let listener = TcpListener::bind((my_addr.host.as_str(), p))
                .await
                .map_err(|e| {
                    crate::OpenError::Config(format!("binding {}:{p}: {e}", my_addr.host))
                })?;
            tokio::spawn(accept_loop(
                listener,
                port,
                me,
                cfg.clone(),
                links.clone(),
                cmd_tx.clone(),
            ));
        }
        for (&other, addr) in &cfg.members {
            if other < me {
                for port in [Port::Election, Port::Quorum] {
                    tokio::spawn(dial_loop(
                        me,
                        other,
                        addr.clone(),
                        port,
                        cfg.clone(),
                        links.clone(),
                        cmd_tx.clone(),
                    ));
                }
            }
        }
        let tick = Duration::from_millis(cfg.peer.tick_ms.max(10) / 2);
        {
            let links = links.clone();
            let status = status.clone();
            std::thread::Builder::new()
                .name(format!("zab-peer-{me}"))
                .spawn(move || run_peer(peer, cmd_rx, links, status, started, tick))
                .expect("spawn peer thread");
        }
        let members = cfg.members.len();
        let voters = cfg.peer.voters.len();
        Ok(Arc::new(Ensemble {
            cmds: cmd_tx,
            tree,
            applied,
            status,
            id: me,
            members,
            voters,
        }))
    }
}

fn run_peer(
    mut peer: Peer,
    rx: std::sync::mpsc::Receiver<Cmd>,
    links: Links,
    status: Arc<Mutex<Snapshot>>,
    started: Instant,
    tick: Duration,
) {
    let mut next_origin: u64 = 0;
    let mut replies: HashMap<u64, oneshot::Sender<Result<Applied, BackendError>>> = HashMap::new();
    let mut barriers: HashMap<u64, oneshot::Sender<Result<Zxid, BackendError>>> = HashMap::new();
    let mut out: Vec<Output> = Vec::new();
    let mut next_tick = Instant::now() + tick;
    let mut next_metrics = Instant::now();
    let mut lagging: Vec<Sid> = Vec::new();
    let mut wake: Option<Instant> = None;
    loop {
        let due = wake.map_or(next_tick, |w| w.min(next_tick));
        let wait = due.saturating_duration_since(Instant::now());
        let first = match rx.recv_timeout(wait) {
            Ok(c) => Some(c),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => None,
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return,
        };
        let mut cmds: Vec<Cmd> = first.into_iter().collect();
        while cmds.len() < 4096 {
            match rx.try_recv() {
                Ok(c) => cmds.push(c),
                Err(_) => break,
            }
        }
        let now = started.elapsed().as_millis() as u64;
        for c in cmds {
            let input = match c {
                Cmd::Input(i) => i,
                Cmd::Submit(env, reply) => {
                    next_origin += 1;
                    replies.insert(next_origin, reply);
                    Input::Submit {
                        origin: next_origin,
                        env,
                    }
                }
                Cmd::Barrier(reply) => {
                    next_origin += 1;
                    barriers.insert(next_origin, reply);
                    Input::Barrier {
                        origin: next_origin,
                    }
                }
            };
            peer.step(now, input, &mut out);
        }
        if wake.is_some_and(|w| Instant::now() >= w) {
            peer.step(now, Input::Wake, &mut out);
        }
        if Instant::now() >= next_tick {
            peer.step(now, Input::Tick, &mut out);
            next_tick = Instant::now() + tick;
        }
        // A timer of the peer's finer than the tick (the election's finalize wait).
        wake = peer
            .next_wake()
            .map(|at| started + Duration::from_millis(at.max(now)));
        // A leader's proposals go out while it logs them itself (see `may_send_before_log`).
        if peer.may_send_before_log() {
            dispatch(&mut out, &links, &mut replies, &mut barriers);
        }
        peer.flush(&mut out);
        dispatch(&mut out, &links, &mut replies, &mut barriers);
        // Whether this member serves, and whom it follows, as of this step: the gateway admits a
        // client only while `ready`, so a member that just lost its leader must stop admitting
        // at once, not at the next refresh (up to a tick later when the loop goes quiet). Clients
        // admitted meanwhile had every request refused and reconnected, again and again.
        let mut s = status.lock();
        s.role = peer.role();
        s.leader = peer.leader();
        s.serving = peer.serving();
        s.epoch = peer.current_epoch();
        s.elections = peer.elections();
        if Instant::now() < next_metrics {
            // The rest of the status and the gauges are refreshed at most every 100 ms.
            continue;
        }
        next_metrics = Instant::now() + Duration::from_millis(100);
        s.last_logged = peer.last_logged();
        s.outstanding = peer.outstanding();
        let f = peer.followers();
        s.followers = f.as_ref().map(|v| (v.synced, v.observers));
        metrics::gauge!("roster_zab_epoch").set(s.epoch as f64);
        metrics::gauge!("roster_zab_last_logged_zxid").set(s.last_logged as f64);
        metrics::gauge!("roster_zab_synced_followers")
            .set(f.as_ref().map_or(0, |x| x.synced) as f64);
        metrics::gauge!("roster_zab_synced_observers")
            .set(f.as_ref().map_or(0, |x| x.observers) as f64);
        // Followers that left (or all of them, when we stop leading) read 0, not a stale value.
        let lags = f.map(|v| v.lag).unwrap_or_default();
        for sid in lagging
            .iter()
            .filter(|s| !lags.iter().any(|(x, _)| x == *s))
        {
            metrics::gauge!("roster_zab_follower_lag_txns", "follower" => sid.to_string()).set(0.0);
        }
        lagging.clear();
        for (sid, lag) in lags {
            metrics::gauge!("roster_zab_follower_lag_txns", "follower" => sid.to_string())
                .set(lag as f64);
            lagging.push(sid);
        }
    }
}

/// Hand the peer's outputs to the links and the waiting callers, in order.
fn dispatch(
    out: &mut Vec<Output>,
    links: &Links,
    replies: &mut HashMap<u64, oneshot::Sender<Result<Applied, BackendError>>>,
    barriers: &mut HashMap<u64, oneshot::Sender<Result<Zxid, BackendError>>>,
) {
    if out.is_empty() {
        return;
    }
    let links = links.lock();
    for o in out.drain(..) {
        match o {
            Output::Send { to, msg } => {
                let port = if matches!(msg, Msg::Notification { .. }) {
                    Port::Election
                } else {
                    Port::Quorum
                };
                if let Some(tx) = links.get(&(to, port)) {
                    let _ = tx.send(Arc::new(msg));
                }
            }
            Output::Reply { origin, result } => {
                if let Some(r) = replies.remove(&origin) {
                    let _ = r.send(result);
                }
            }
            Output::Barrier { origin, result } => {
                if let Some(r) = barriers.remove(&origin) {
                    let _ = r.send(result);
                }
            }
        }
    }
}

/// Append `m` to `buf` as frames of at most `max_frame` bytes (see [`MAX_PEER_FRAME`]).
fn encode(m: &Msg, buf: &mut BytesMut, max_frame: usize) {
    let body = match postcard::to_stdvec(m) {
        Ok(b) => b,
        Err(e) => {
            // Only a SNAP cannot be encoded, and the writer streams those instead.
            tracing::error!(kind = m.kind(), error = %e, "a message to a member could not be encoded; dropped");
            return;
        }
    };
    let mut pieces = body.chunks(max_frame).peekable();
    while let Some(piece) = pieces.next() {
        let more = if pieces.peek().is_some() { MORE } else { 0 };
        buf.put_u32(piece.len() as u32 | more);
        buf.extend_from_slice(piece);
    }
}

/// Send the snapshot `view` of `zxid`: [`Msg::SnapHead`], then its encoding as a chain of
/// frames, encoded on a blocking thread a few chunks ahead of the socket (see
/// [`SNAP_CHUNK_FRAMES_IN_FLIGHT`]).
async fn send_snapshot(
    wr: &mut (impl AsyncWriteExt + Unpin),
    zxid: Zxid,
    view: SnapshotView,
    buf: &mut BytesMut,
    peer: Sid,
) -> std::io::Result<()> {
    buf.clear();
    encode(&Msg::SnapHead { zxid }, buf, MAX_PEER_FRAME);
    wr.write_all(buf).await?;
    buf.clear();
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(SNAP_CHUNK_FRAMES_IN_FLIGHT);
    let encoder = tokio::task::spawn_blocking(move || {
        struct Chunks(mpsc::Sender<Vec<u8>>);
        impl std::io::Write for Chunks {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0
                    .blocking_send(b.to_vec())
                    .map_err(|_| std::io::Error::other("the link closed"))?;
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        view.encode_to(Chunks(tx)).map(drop)
    });
    let mut progress = Transfer::new(Dir::Sent, peer, format!("{zxid:#x}"), None);
    while let Some(chunk) = rx.recv().await {
        if chunk.is_empty() {
            continue;
        }
        wr.write_all(&(chunk.len() as u32 | MORE).to_be_bytes())
            .await?;
        wr.write_all(&chunk).await?;
        progress.add(chunk.len() as u64);
    }
    encoder
        .await
        .map_err(std::io::Error::other)
        .and_then(|r| r)?;
    wr.write_all(&0u32.to_be_bytes()).await?;
    tracing::info!(
        zxid = format!("{zxid:#x}"),
        peer,
        bytes = progress.done(),
        ms = progress.elapsed().as_millis() as u64,
        "snapshot sent"
    );
    Ok(())
}

/// Read the frames of a snapshot announced by [`Msg::SnapHead`] and restore it as they come,
/// on a blocking thread a few frames behind the socket.
async fn receive_snapshot(
    s: &mut (impl AsyncReadExt + Unpin),
    zxid: Zxid,
    max_frame: usize,
    peer: Sid,
) -> std::io::Result<Msg> {
    let invalid = |what: String| std::io::Error::new(std::io::ErrorKind::InvalidData, what);
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(SNAP_CHUNK_FRAMES_IN_FLIGHT);
    let restorer = tokio::task::spawn_blocking(move || {
        let mut r = Restorer::new();
        while let Some(chunk) = rx.blocking_recv() {
            r.push(&chunk)?;
        }
        r.finish()
    });
    let mut progress = Transfer::new(Dir::Received, peer, format!("{zxid:#x}"), None);
    let read = async {
        loop {
            let word = s.read_u32().await?;
            let len = (word & !MORE) as usize;
            if len > max_frame {
                return Err(invalid("peer frame too large".into()));
            }
            let mut chunk = vec![0u8; len];
            s.read_exact(&mut chunk).await?;
            progress.add(len as u64);
            // A send fails only when the restorer stopped at bad bytes: its error says why.
            if !chunk.is_empty() && tx.send(chunk).await.is_err() {
                return Ok(());
            }
            if word & MORE == 0 {
                return Ok(());
            }
        }
    };
    let read = read.await;
    drop(tx);
    let restored = restorer.await.map_err(std::io::Error::other)?;
    read?;
    let tree = restored.map_err(|e| invalid(format!("snapshot {zxid:#x}: {e}")))?;
    tracing::info!(
        zxid = format!("{zxid:#x}"),
        peer,
        bytes = progress.done(),
        nodes = tree.node_count(),
        ms = progress.elapsed().as_millis() as u64,
        "snapshot received"
    );
    Ok(Msg::Snap {
        zxid,
        state: SnapState::Restored(Arc::new(Mutex::new(Some(tree)))),
    })
}

/// Read one message, a snapshot restored whole from its stream of frames.
async fn read_message(
    s: &mut (impl AsyncReadExt + Unpin),
    buf: &mut BytesMut,
    max_frame: usize,
    peer: Sid,
) -> std::io::Result<Msg> {
    match read_frame(s, buf, max_frame).await? {
        Msg::SnapHead { zxid } => receive_snapshot(s, zxid, max_frame, peer).await,
        m => Ok(m),
    }
}

/// Read one message: one frame, or the frames of a message larger than `max_frame`.
async fn read_frame(
    s: &mut (impl AsyncReadExt + Unpin),
    buf: &mut BytesMut,
    max_frame: usize,
) -> std::io::Result<Msg> {
    let invalid = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what);
    buf.clear();
    loop {
        let word = s.read_u32().await?;
        let len = (word & !MORE) as usize;
        if len > max_frame {
            return Err(invalid("peer frame too large"));
        }
        if buf.len() + len > MAX_PEER_MESSAGE {
            return Err(invalid("peer message too large"));
        }
        let start = buf.len();
        buf.resize(start + len, 0);
        s.read_exact(&mut buf[start..]).await?;
        if word & MORE == 0 {
            break;
        }
    }
    postcard::from_bytes(&buf[..])
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

/// Serve one established link until it breaks, then report it lost (a quorum link). A newer
/// link to the same member and port replaces this one in `links`: the newer one reports this one
/// lost before it reads anything (so the peer sees the loss before what comes over the new
/// link), and this one ends without reporting, its writer gone with its sender, which closes it.
async fn serve_link(
    stream: TcpStream,
    me: Sid,
    other: Sid,
    port: Port,
    links: Links,
    cmds: std::sync::mpsc::Sender<Cmd>,
) {
    let (mut rd, mut wr) = stream.into_split();
    let (tx, mut rx) = mpsc::unbounded_channel::<Arc<Msg>>();
    let mine = tx.downgrade();
    let replaced = links.lock().insert((other, port), tx).is_some();
    tracing::debug!(sid = me, other, ?port, replaced, "link up");
    link_gauge(other, port).set(1.0);
    metrics::counter!("roster_zab_peer_connects_total", "peer" => other.to_string(), "port" => port.label())
        .increment(1);
    // Only the quorum link's losses matter to the protocol: election notifications are
    // re-announced every tick while looking, so losing some costs nothing, and a follower keeps
    // its leader over a broken election link, as ZooKeeper's does.
    let reports = port == Port::Quorum;
    if replaced && reports {
        // What was still queued on the old link is lost.
        let _ = cmds.send(Cmd::Input(Input::Disconnected(other)));
    }
    let writer = tokio::spawn(async move {
        let mut buf = BytesMut::with_capacity(64 * 1024);
        while let Some(m) = rx.recv().await {
            // Up to 1 024 queued messages go in one write; a snapshot is streamed in its turn.
            let mut next = Some(m);
            let mut n = 0;
            while let Some(m) = next.take() {
                if let Msg::Snap {
                    zxid,
                    state: SnapState::View(view),
                } = &*m
                {
                    if !buf.is_empty() && wr.write_all(&buf).await.is_err() {
                        return;
                    }
                    if let Err(e) =
                        send_snapshot(&mut wr, *zxid, view.clone(), &mut buf, other).await
                    {
                        tracing::info!(sid = me, other, error = %e, "sending a snapshot failed");
                        return;
                    }
                    buf.clear();
                } else {
                    encode(&m, &mut buf, MAX_PEER_FRAME);
                }
                n += 1;
                if n < 1024 {
                    next = rx.try_recv().ok();
                }
            }
            if wr.write_all(&buf).await.is_err() {
                return;
            }
            buf.clear();
        }
    });
    let mut buf = BytesMut::new();
    loop {
        match read_message(&mut rd, &mut buf, MAX_PEER_FRAME, other).await {
            Ok(msg) => {
                if cmds
                    .send(Cmd::Input(Input::Message { from: other, msg }))
                    .is_err()
                {
                    break;
                }
            }
            Err(e) => {
                tracing::info!(sid = me, other, port = port.label(), error = %e, "link to a member down");
                break;
            }
        }
    }
    writer.abort();
    // Still the current link (not replaced by a newer one): take it out and report the loss.
    let mut l = links.lock();
    if l.get(&(other, port))
        .is_some_and(|t| mine.upgrade().is_some_and(|m| m.same_channel(t)))
    {
        l.remove(&(other, port));
        drop(l);
        link_gauge(other, port).set(0.0);
        if reports {
            let _ = cmds.send(Cmd::Input(Input::Disconnected(other)));
        }
    }
}

/// How long a link's sent data may stay unacknowledged before the link is aborted: the shared
/// 5 s, or the `syncLimit` when that is longer — an operator who raised it for a slow network
/// expects a member to ride out that much silence, as ZooKeeper's does.
fn unacked_timeout(cfg: &EnsembleConfig) -> Duration {
    roster_core::net::PEER_UNACKED_TIMEOUT.max(Duration::from_millis(
        cfg.peer.tick_ms.saturating_mul(cfg.peer.sync_limit),
    ))
}

async fn dial_loop(
    me: Sid,
    other: Sid,
    addr: MemberAddr,
    port: Port,
    cfg: EnsembleConfig,
    links: Links,
    cmds: std::sync::mpsc::Sender<Cmd>,
) {
    let p = match port {
        Port::Election => addr.election_port,
        Port::Quorum => addr.quorum_port,
    };
    // Dial from this member's own address, as raft and AP members do (firewall rules and
    // peers' logs tell members apart even on one host); a name is left to the OS.
    let source = cfg
        .members
        .get(&me)
        .and_then(|m| m.host.parse::<std::net::IpAddr>().ok())
        .filter(|ip| !ip.is_unspecified());
    let unacked = unacked_timeout(&cfg);
    // The first failed dial after a working link (or at start) is logged; the retries, every
    // 2 s while the member stays unreachable, are not, until it is reached again.
    let mut failing = false;
    loop {
        match roster_core::net::dial_peer(
            (addr.host.as_str(), p),
            source,
            roster_core::net::PEER_CONNECT_TIMEOUT,
            unacked,
        )
        .await
        {
            Ok(mut s) => {
                if failing {
                    tracing::info!(
                        sid = me,
                        other,
                        port = port.label(),
                        "member reachable again"
                    );
                    failing = false;
                }
                if s.write_u64(me).await.is_ok() {
                    serve_link(s, me, other, port, links.clone(), cmds.clone()).await;
                }
            }
            Err(e) if !failing => {
                tracing::info!(sid = me, other, port = port.label(), addr = %addr.host, error = %e,
                    "cannot reach a member; retrying");
                failing = true;
            }
            Err(e) => tracing::trace!(sid = me, other, error = %e, "dial failed"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        if cmds.send(Cmd::Input(Input::Tick)).is_err() {
            return;
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    port: Port,
    me: Sid,
    cfg: EnsembleConfig,
    links: Links,
    cmds: std::sync::mpsc::Sender<Cmd>,
) {
    loop {
        let Ok((mut s, peer)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        if let Err(e) = roster_core::net::configure_peer_link(&s, unacked_timeout(&cfg)) {
            tracing::warn!(sid = me, %peer, error = %e, "cannot set up a member link's options");
        }
        let links = links.clone();
        let cmds = cmds.clone();
        let known = cfg.members.keys().copied().collect::<Vec<_>>();
        tokio::spawn(async move {
            let other = match tokio::time::timeout(Duration::from_secs(5), s.read_u64()).await {
                Ok(Ok(id)) => id,
                _ => return,
            };
            if !known.contains(&other) || other <= me {
                tracing::warn!(sid = me, other, %peer, "refusing a link from an unknown or lower member id");
                return;
            }
            serve_link(s, me, other, port, links, cmds).await;
        });
    }
}

#[async_trait::async_trait]
impl Backend for Ensemble {
    async fn submit(&self, req: Envelope) -> Result<Applied, BackendError> {
        let (tx, rx) = oneshot::channel();
        self.cmds
            .send(Cmd::Submit(req, tx))
            .map_err(|_| BackendError::ShuttingDown)?;
        rx.await.map_err(|_| BackendError::ShuttingDown)?
    }

    fn tree(&self) -> TreeView {
        self.tree.clone()
    }

    async fn barrier(&self) -> Result<Zxid, BackendError> {
        let (tx, rx) = oneshot::channel();
        self.cmds
            .send(Cmd::Barrier(tx))
            .map_err(|_| BackendError::ShuttingDown)?;
        rx.await.map_err(|_| BackendError::ShuttingDown)?
    }

    fn applied(&self) -> broadcast::Receiver<Arc<Txn>> {
        self.applied.subscribe()
    }

    async fn touch(&self, sessions: &[SessionId]) -> Result<(), BackendError> {
        self.cmds
            .send(Cmd::Input(Input::Touch(sessions.to_vec())))
            .map_err(|_| BackendError::ShuttingDown)
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::CP
    }

    fn status(&self) -> ClusterStatus {
        let s = self.status.lock().clone();
        // One read guard, dropped at the end of this statement. (Two `read()` temporaries in the
        // struct literal below lived together: with the member's apply queued for the write lock
        // between them, the second read waited for the writer and the writer for the first read
        // — a follower under load deadlocked. tests/ensemble_status.rs.)
        let applied = self.tree.read().last_zxid();
        ClusterStatus {
            backend: "zab",
            role: s.role,
            server_id: self.id,
            leader: s.leader,
            epoch: s.epoch as u64,
            last_zxid: applied,
            committed_zxid: applied,
            members: self.members,
            voters: self.voters,
            outstanding: s.outstanding,
            ready: s.serving,
            synced_followers: s.followers.map(|f| f.0),
            synced_observers: s.followers.map(|f| f.1),
            elections: s.elections,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use roster_core::tree::Tree;

    /// The length words of the frames in `bytes`: (length, more).
    fn frames(bytes: &[u8]) -> Vec<(usize, bool)> {
        let mut out = Vec::new();
        let mut at = 0;
        while at < bytes.len() {
            let word = u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap());
            let len = (word & !MORE) as usize;
            out.push((len, word & MORE != 0));
            at += 4 + len;
        }
        assert_eq!(at, bytes.len(), "frames end where the bytes do");
        out
    }

    #[tokio::test]
    async fn a_message_larger_than_a_frame_goes_in_several_and_comes_back_whole() {
        let sessions: Vec<SessionId> = (0..5_000i64).map(|i| i * 7_919).collect();
        let touch = Msg::Touch {
            sessions: sessions.clone(),
        };
        let mut out = BytesMut::new();
        encode(&touch, &mut out, 1024);
        encode(&Msg::UpToDate, &mut out, 1024);
        let f = frames(&out);
        assert!(f.len() >= 11, "{} frames", f.len());
        assert!(f.iter().all(|(len, _)| *len <= 1024));
        // Every frame of the big message but its last says more follows; the small message
        // after it is one frame, flagged as nothing, exactly as before.
        let last_of_big = f.iter().position(|(_, more)| !more).unwrap();
        assert_eq!(last_of_big, f.len() - 2);
        assert!(!f[f.len() - 1].1);

        let mut rd = &out[..];
        let mut buf = BytesMut::new();
        match read_frame(&mut rd, &mut buf, 1024).await.unwrap() {
            Msg::Touch { sessions: got } => assert_eq!(got, sessions),
            m => panic!("{m:?}"),
        }
        assert!(matches!(
            read_frame(&mut rd, &mut buf, 1024).await.unwrap(),
            Msg::UpToDate
        ));
        // A frame over the reader's limit is refused, not read.
        let mut rd = &out[..];
        let err = read_frame(&mut rd, &mut buf, 100).await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
    }

    /// A tree of `n` nodes of 200 bytes under `/s`.
    fn tree_of(n: u32) -> Tree {
        use roster_core::acl::{Acl, intern};
        use roster_core::txn::TxnOp;
        let mut t = Tree::new();
        for i in 0..=n {
            let path = if i == 0 {
                "/s".to_owned()
            } else {
                format!("/s/{i:08}")
            };
            t.apply(&Txn {
                zxid: i as Zxid + 1,
                time: 0,
                session: 0,
                op: TxnOp::Create {
                    path,
                    data: vec![(i % 251) as u8; 200],
                    acl: intern(&Acl::open_unsafe()),
                    owner: 0,
                    parent_cversion: 0,
                },
            });
        }
        t
    }

    #[tokio::test]
    async fn a_snapshot_is_streamed_in_chunks_and_restored_as_it_comes() {
        let tree = tree_of(20_000);
        let zxid = tree.last_zxid();
        let mut wire = Vec::new();
        let mut buf = BytesMut::new();
        send_snapshot(&mut wire, zxid, tree.snapshot_view(), &mut buf, 2)
            .await
            .unwrap();
        encode(&Msg::UpToDate, &mut buf, MAX_PEER_FRAME);
        wire.extend_from_slice(&buf);
        // SnapHead, then the encoding in frames of ~1 MiB (never the whole in one), an empty
        // last frame, then the next message.
        let f = frames(&wire);
        let encoded = tree.snapshot_view().encode().len();
        assert!(encoded > 4 << 20, "{encoded} bytes");
        assert!(!f[0].1, "the head is a message of its own");
        let body = &f[1..f.len() - 1];
        assert!(body.len() >= 4, "{} frames", body.len());
        assert!(body.iter().all(|(len, _)| *len < 2 << 20));
        assert_eq!(body.iter().map(|(len, _)| len).sum::<usize>(), encoded);
        assert_eq!(body.last().unwrap(), &(0, false));
        assert!(body[..body.len() - 1].iter().all(|(_, more)| *more));

        let mut rd = &wire[..];
        let mut rbuf = BytesMut::new();
        match read_message(&mut rd, &mut rbuf, MAX_PEER_FRAME, 1)
            .await
            .unwrap()
        {
            Msg::Snap { zxid: z, state } => {
                assert_eq!(z, zxid);
                assert_eq!(state.into_tree().unwrap().snapshot(), tree.snapshot());
            }
            m => panic!("{m:?}"),
        }
        assert!(matches!(
            read_message(&mut rd, &mut rbuf, MAX_PEER_FRAME, 1)
                .await
                .unwrap(),
            Msg::UpToDate
        ));

        // Cut short: an error, not a tree.
        let mut rd = &wire[..wire.len() / 2];
        assert!(
            read_message(&mut rd, &mut rbuf, MAX_PEER_FRAME, 1)
                .await
                .is_err()
        );
    }
}
