//! The TCP transport between members: one connection per peer (dialled on demand, re-dialled with
//! exponential backoff after a failure), requests multiplexed on it by id, each frame a 4-byte
//! big-endian length then a postcard body. The dialler opens with a short hello (magic, version,
//! its id) so a wrong port is refused at once. Frames over `max_frame` are refused with a logged
//! error (outgoing: the request fails unsent; incoming: the connection is closed); nothing a peer
//! sends can panic the server. Snapshots go as one full frame (`install_snapshot`).
//!
//! [`serve`] is the receiving side: it accepts peer connections and hands each request to the
//! local [`RaftBackend`]'s `handle_*`, answering on the same connection, in any order.

use crate::backend::RaftBackend;
use crate::network::{
    AdminOp, Forward, ForwardError, ForwardReply, Peer, Transport, TransportError,
};
use crate::types::{
    AppendEntriesRequest, AppendEntriesResponse, NodeId, Snapshot, SnapshotMeta, SnapshotResponse,
    Vote, VoteRequest, VoteResponse,
};
use parking_lot::Mutex;
use roster_core::backend::BackendError;
use roster_core::txn::{Applied, Envelope, Outcome};
use roster_core::{SessionId, Zxid};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc, oneshot, watch};
use tokio::task::JoinHandle;

/// What a dialler sends first: magic and protocol version, then its id (8 bytes, big-endian).
const HELLO: &[u8; 8] = b"RSTRAFT\x01";
/// Requests a peer may have in flight on one connection before the server stops reading.
const MAX_IN_FLIGHT: usize = 256;

/// Settings of the TCP transport.
#[derive(Debug, Clone)]
pub struct TcpConfig {
    /// Largest frame sent or accepted (a full snapshot travels as one frame).
    pub max_frame: usize,
    pub connect_timeout: Duration,
    /// How long an append, vote or forwarded request may go unanswered.
    pub request_timeout: Duration,
    /// How long a snapshot transfer and a membership change may take.
    pub long_timeout: Duration,
    /// First and largest pause before re-dialling a peer that could not be reached.
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// Source address of dialled links (the member's own address, so firewall rules, and
    /// peers' logs, can tell members apart even when they share a host). None: the OS picks.
    pub source_ip: Option<std::net::IpAddr>,
}

impl Default for TcpConfig {
    fn default() -> Self {
        TcpConfig {
            max_frame: 512 << 20,
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(15),
            long_timeout: Duration::from_secs(120),
            backoff_min: Duration::from_millis(50),
            backoff_max: Duration::from_secs(2),
            source_ip: None,
        }
    }
}

// ---- wire types ----

#[derive(Debug, Serialize, Deserialize)]
enum WireRequest {
    Append(AppendEntriesRequest),
    Vote(VoteRequest),
    PreVote(VoteRequest),
    Snapshot {
        vote: Vote,
        meta: SnapshotMeta,
        data: Vec<u8>,
    },
    Forward(WireForward),
}

#[derive(Debug, Serialize, Deserialize)]
enum WireForward {
    Submit(Envelope),
    Touch(Vec<SessionId>),
    Barrier,
    AddLearner { id: NodeId, addr: String },
    Promote { id: NodeId },
    Remove { id: NodeId },
}

#[derive(Debug, Serialize, Deserialize)]
enum WireResponse {
    Append(AppendEntriesResponse),
    Vote(VoteResponse),
    Snapshot(SnapshotResponse),
    Applied { zxid: Zxid, outcome: Outcome },
    Touched,
    Barrier { zxid: Zxid, index: u64 },
    Admin,
    Error(WireError),
}

#[derive(Debug, Serialize, Deserialize)]
enum WireError {
    NotLeader(Option<NodeId>),
    Unavailable(String),
    Overloaded,
    Storage(String),
    ShuttingDown,
    Unreachable(String),
    Lost(String),
    Remote(String),
}

impl From<Forward> for WireForward {
    fn from(f: Forward) -> Self {
        match f {
            Forward::Submit(e) => WireForward::Submit(e),
            Forward::Touch(ids) => WireForward::Touch(ids),
            Forward::Barrier => WireForward::Barrier,
            Forward::Admin(AdminOp::AddLearner { id, addr }) => {
                WireForward::AddLearner { id, addr }
            }
            Forward::Admin(AdminOp::Promote { id }) => WireForward::Promote { id },
            Forward::Admin(AdminOp::Remove { id }) => WireForward::Remove { id },
        }
    }
}

impl From<WireForward> for Forward {
    fn from(f: WireForward) -> Self {
        match f {
            WireForward::Submit(e) => Forward::Submit(e),
            WireForward::Touch(ids) => Forward::Touch(ids),
            WireForward::Barrier => Forward::Barrier,
            WireForward::AddLearner { id, addr } => {
                Forward::Admin(AdminOp::AddLearner { id, addr })
            }
            WireForward::Promote { id } => Forward::Admin(AdminOp::Promote { id }),
            WireForward::Remove { id } => Forward::Admin(AdminOp::Remove { id }),
        }
    }
}

impl From<TransportError> for WireError {
    fn from(e: TransportError) -> Self {
        match e {
            TransportError::Unreachable(s) => WireError::Unreachable(s),
            TransportError::Lost(s) => WireError::Lost(s),
            TransportError::Remote(s) => WireError::Remote(s),
        }
    }
}

impl From<ForwardError> for WireError {
    fn from(e: ForwardError) -> Self {
        match e {
            ForwardError::NotLeader(l) => WireError::NotLeader(l),
            ForwardError::Transport(t) => t.into(),
            ForwardError::Backend(b) => match b {
                BackendError::Unavailable(s) => WireError::Unavailable(s),
                BackendError::Overloaded => WireError::Overloaded,
                BackendError::Storage(s) => WireError::Storage(s),
                BackendError::ShuttingDown => WireError::ShuttingDown,
                other @ BackendError::Unsupported { .. } => {
                    WireError::Unavailable(other.to_string())
                }
            },
        }
    }
}

impl From<WireError> for ForwardError {
    fn from(e: WireError) -> Self {
        match e {
            WireError::NotLeader(l) => ForwardError::NotLeader(l),
            WireError::Unavailable(s) => BackendError::Unavailable(s).into(),
            WireError::Overloaded => BackendError::Overloaded.into(),
            WireError::Storage(s) => BackendError::Storage(s).into(),
            WireError::ShuttingDown => BackendError::ShuttingDown.into(),
            WireError::Unreachable(s) => TransportError::Unreachable(s).into(),
            WireError::Lost(s) => TransportError::Lost(s).into(),
            WireError::Remote(s) => TransportError::Remote(s).into(),
        }
    }
}

/// An error reply to an openraft RPC: the peer's own failure.
fn remote(e: WireError) -> TransportError {
    match ForwardError::from(e) {
        ForwardError::Transport(t) => t,
        other => TransportError::Remote(other.to_string()),
    }
}

fn unexpected(what: &str, r: &WireResponse) -> TransportError {
    TransportError::Remote(format!("unexpected reply to {what}: {r:?}"))
}

/// `len | id | body` with `len` covering id and body.
fn frame(id: u64, body: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(12 + body.len());
    f.extend_from_slice(&((body.len() + 8) as u32).to_be_bytes());
    f.extend_from_slice(&id.to_be_bytes());
    f.extend_from_slice(body);
    f
}

/// Why reading a frame stopped.
enum ReadEnd {
    Closed,
    Io(std::io::Error),
    TooLarge(usize),
}

async fn read_frame(rd: &mut OwnedReadHalf, max: usize) -> Result<(u64, Vec<u8>), ReadEnd> {
    let mut len = [0u8; 4];
    match rd.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Err(ReadEnd::Closed),
        Err(e) => return Err(ReadEnd::Io(e)),
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > max.saturating_add(8) || len < 8 {
        return Err(ReadEnd::TooLarge(len));
    }
    let mut buf = vec![0u8; len];
    rd.read_exact(&mut buf).await.map_err(ReadEnd::Io)?;
    let id = u64::from_be_bytes(buf[..8].try_into().expect("8 bytes"));
    buf.drain(..8);
    Ok((id, buf))
}

/// Write queued frames until the queue closes or the socket fails; batch what is queued.
async fn write_frames(mut wr: OwnedWriteHalf, mut rx: mpsc::Receiver<Vec<u8>>) {
    let mut batch = Vec::new();
    while rx.recv_many(&mut batch, 64).await > 0 {
        for f in batch.drain(..) {
            if let Err(e) = wr.write_all(&f).await {
                tracing::debug!(error = %e, "raft peer link: write failed");
                return;
            }
        }
    }
    let _ = wr.shutdown().await;
}

// ---- client side ----

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<WireResponse>>>>;

/// One live connection to a peer.
#[derive(Clone)]
struct Conn {
    out: mpsc::Sender<Vec<u8>>,
    pending: Pending,
    dead: watch::Receiver<bool>,
    next_id: Arc<AtomicU64>,
}

impl Conn {
    fn alive(&self) -> bool {
        !*self.dead.borrow() && !self.out.is_closed()
    }

    fn start(stream: TcpStream, peer: NodeId, max_frame: usize) -> Conn {
        let (mut rd, wr) = stream.into_split();
        let (out, rx) = mpsc::channel(1024);
        let pending: Pending = Arc::default();
        let (dead_tx, dead) = watch::channel(false);
        let writer = tokio::spawn(write_frames(wr, rx));
        let p = pending.clone();
        tokio::spawn(async move {
            loop {
                match read_frame(&mut rd, max_frame).await {
                    Ok((id, body)) => match postcard::from_bytes::<WireResponse>(&body) {
                        Ok(resp) => {
                            if let Some(tx) = p.lock().remove(&id) {
                                let _ = tx.send(resp);
                            }
                        }
                        Err(e) => {
                            tracing::error!(peer, error = %e, "raft peer sent an undecodable reply; closing the link");
                            metrics::counter!("roster_raft_bad_frames_total").increment(1);
                            break;
                        }
                    },
                    Err(ReadEnd::TooLarge(n)) => {
                        tracing::error!(
                            peer,
                            bytes = n,
                            max = max_frame,
                            "raft peer reply over the frame limit; closing the link"
                        );
                        metrics::counter!("roster_raft_bad_frames_total").increment(1);
                        break;
                    }
                    Err(ReadEnd::Closed) => {
                        tracing::info!(peer, "raft peer closed the link");
                        break;
                    }
                    Err(ReadEnd::Io(e)) => {
                        tracing::info!(peer, error = %e, "raft peer link broke");
                        break;
                    }
                }
            }
            let _ = dead_tx.send(true);
            writer.abort();
            // Every request still waiting learns its outcome is unknown.
            p.lock().clear();
            metrics::gauge!("roster_raft_peer_connected", "peer" => peer.to_string()).set(0.0);
        });
        Conn {
            out,
            pending,
            dead,
            next_id: Arc::new(AtomicU64::new(1)),
        }
    }
}

struct LinkState {
    conn: Option<Conn>,
    backoff: Duration,
    retry_at: Option<Instant>,
}

struct Link {
    addr: String,
    state: tokio::sync::Mutex<LinkState>,
}

/// [`Transport`] over TCP.
pub struct TcpTransport {
    me: NodeId,
    cfg: TcpConfig,
    links: Mutex<HashMap<NodeId, Arc<Link>>>,
}

impl TcpTransport {
    pub fn new(me: NodeId, cfg: TcpConfig) -> Arc<TcpTransport> {
        Arc::new(TcpTransport {
            me,
            cfg,
            links: Mutex::new(HashMap::new()),
        })
    }

    fn link(&self, to: &Peer) -> Arc<Link> {
        let mut links = self.links.lock();
        match links.get(&to.id) {
            Some(l) if l.addr == to.addr => l.clone(),
            _ => {
                let l = Arc::new(Link {
                    addr: to.addr.clone(),
                    state: tokio::sync::Mutex::new(LinkState {
                        conn: None,
                        backoff: self.cfg.backoff_min,
                        retry_at: None,
                    }),
                });
                links.insert(to.id, l.clone());
                l
            }
        }
    }

    async fn connect(&self, to: &Peer) -> Result<Conn, TransportError> {
        let link = self.link(to);
        let mut st = link.state.lock().await;
        if let Some(c) = &st.conn
            && c.alive()
        {
            return Ok(c.clone());
        }
        st.conn = None;
        if let Some(at) = st.retry_at
            && Instant::now() < at
        {
            return Err(TransportError::Unreachable(format!(
                "{} ({}): re-dialling after backoff",
                to.id, to.addr
            )));
        }
        let dial = async {
            let mut s = match self.cfg.source_ip {
                None => TcpStream::connect(&to.addr).await?,
                Some(ip) => {
                    let target = tokio::net::lookup_host(&to.addr)
                        .await?
                        .find(|a| a.is_ipv4() == ip.is_ipv4())
                        .ok_or_else(|| {
                            std::io::Error::new(
                                std::io::ErrorKind::NotFound,
                                format!("no address of {} matches the source {ip}", to.addr),
                            )
                        })?;
                    let sock = if ip.is_ipv4() {
                        tokio::net::TcpSocket::new_v4()?
                    } else {
                        tokio::net::TcpSocket::new_v6()?
                    };
                    sock.bind(std::net::SocketAddr::new(ip, 0))?;
                    sock.connect(target).await?
                }
            };
            s.set_nodelay(true)?;
            let mut hello = HELLO.to_vec();
            hello.extend_from_slice(&self.me.to_be_bytes());
            s.write_all(&hello).await?;
            Ok::<_, std::io::Error>(s)
        };
        let res = match tokio::time::timeout(self.cfg.connect_timeout, dial).await {
            Ok(r) => r,
            Err(_) => Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "connect timed out",
            )),
        };
        match res {
            Ok(s) => {
                let c = Conn::start(s, to.id, self.cfg.max_frame);
                st.conn = Some(c.clone());
                st.backoff = self.cfg.backoff_min;
                st.retry_at = None;
                metrics::gauge!("roster_raft_peer_connected", "peer" => to.id.to_string()).set(1.0);
                metrics::counter!("roster_raft_peer_connects_total", "peer" => to.id.to_string())
                    .increment(1);
                tracing::info!(peer = to.id, addr = %to.addr, "raft peer link up");
                Ok(c)
            }
            Err(e) => {
                st.retry_at = Some(Instant::now() + st.backoff);
                tracing::debug!(peer = to.id, addr = %to.addr, error = %e, backoff_ms = st.backoff.as_millis() as u64, "raft peer unreachable");
                st.backoff = (st.backoff * 2).min(self.cfg.backoff_max);
                Err(TransportError::Unreachable(format!(
                    "{} ({}): {e}",
                    to.id, to.addr
                )))
            }
        }
    }

    async fn call(
        &self,
        to: &Peer,
        req: WireRequest,
        timeout: Duration,
    ) -> Result<WireResponse, TransportError> {
        let body = postcard::to_stdvec(&req)
            .map_err(|e| TransportError::Unreachable(format!("encoding a request: {e}")))?;
        if body.len() > self.cfg.max_frame {
            tracing::error!(
                peer = to.id,
                bytes = body.len(),
                max = self.cfg.max_frame,
                "raft request over the frame limit; not sent"
            );
            metrics::counter!("roster_raft_bad_frames_total").increment(1);
            return Err(TransportError::Unreachable(format!(
                "request of {} bytes exceeds the {}-byte frame limit",
                body.len(),
                self.cfg.max_frame
            )));
        }
        let conn = self.connect(to).await?;
        let id = conn.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        conn.pending.lock().insert(id, tx);
        if conn.out.send(frame(id, &body)).await.is_err() {
            conn.pending.lock().remove(&id);
            return Err(TransportError::Unreachable(format!(
                "{}: link closed before sending",
                to.id
            )));
        }
        let mut dead = conn.dead.clone();
        let answer = async {
            tokio::select! {
                biased;
                r = rx => r.ok(),
                _ = dead.wait_for(|d| *d) => None,
            }
        };
        match tokio::time::timeout(timeout, answer).await {
            Ok(Some(r)) => Ok(r),
            Ok(None) => Err(TransportError::Lost(format!(
                "{}: link closed before the answer",
                to.id
            ))),
            Err(_) => {
                conn.pending.lock().remove(&id);
                Err(TransportError::Lost(format!(
                    "{}: no answer within {timeout:?}",
                    to.id
                )))
            }
        }
    }
}

#[async_trait::async_trait]
impl Transport for TcpTransport {
    async fn append_entries(
        &self,
        to: &Peer,
        rpc: AppendEntriesRequest,
    ) -> Result<AppendEntriesResponse, TransportError> {
        match self
            .call(to, WireRequest::Append(rpc), self.cfg.request_timeout)
            .await?
        {
            WireResponse::Append(r) => Ok(r),
            WireResponse::Error(e) => Err(remote(e)),
            r => Err(unexpected("append", &r)),
        }
    }

    async fn vote(&self, to: &Peer, rpc: VoteRequest) -> Result<VoteResponse, TransportError> {
        match self
            .call(to, WireRequest::Vote(rpc), self.cfg.request_timeout)
            .await?
        {
            WireResponse::Vote(r) => Ok(r),
            WireResponse::Error(e) => Err(remote(e)),
            r => Err(unexpected("vote", &r)),
        }
    }

    async fn pre_vote(&self, to: &Peer, rpc: VoteRequest) -> Result<VoteResponse, TransportError> {
        match self
            .call(to, WireRequest::PreVote(rpc), self.cfg.request_timeout)
            .await?
        {
            WireResponse::Vote(r) => Ok(r),
            WireResponse::Error(e) => Err(remote(e)),
            r => Err(unexpected("pre-vote", &r)),
        }
    }

    async fn install_snapshot(
        &self,
        to: &Peer,
        vote: Vote,
        snapshot: Snapshot,
    ) -> Result<SnapshotResponse, TransportError> {
        let req = WireRequest::Snapshot {
            vote,
            meta: snapshot.meta,
            data: snapshot.snapshot,
        };
        match self.call(to, req, self.cfg.long_timeout).await? {
            WireResponse::Snapshot(r) => Ok(r),
            WireResponse::Error(e) => Err(remote(e)),
            r => Err(unexpected("snapshot", &r)),
        }
    }

    async fn forward(&self, to: &Peer, req: Forward) -> Result<ForwardReply, ForwardError> {
        let timeout = match req {
            Forward::Admin(_) => self.cfg.long_timeout,
            _ => self.cfg.request_timeout,
        };
        match self
            .call(to, WireRequest::Forward(req.into()), timeout)
            .await?
        {
            WireResponse::Applied { zxid, outcome } => {
                Ok(ForwardReply::Applied(Applied { zxid, outcome }))
            }
            WireResponse::Touched => Ok(ForwardReply::Touched),
            WireResponse::Barrier { zxid, index } => Ok(ForwardReply::Barrier { zxid, index }),
            WireResponse::Admin => Ok(ForwardReply::Admin),
            WireResponse::Error(e) => Err(e.into()),
            r => Err(unexpected("a forwarded request", &r).into()),
        }
    }
}

// ---- server side ----

/// Accept peer connections on `listener` and serve them from `node` until the task is aborted
/// or the node is dropped.
pub fn serve(listener: TcpListener, node: Weak<RaftBackend>, cfg: TcpConfig) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let (stream, from) = match listener.accept().await {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "raft port: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            if node.strong_count() == 0 {
                return;
            }
            let _ = stream.set_nodelay(true);
            tokio::spawn(serve_conn(stream, from, node.clone(), cfg.max_frame));
        }
    })
}

async fn serve_conn(
    mut stream: TcpStream,
    from: std::net::SocketAddr,
    node: Weak<RaftBackend>,
    max_frame: usize,
) {
    let mut hello = [0u8; 16];
    match tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut hello)).await {
        Ok(Ok(_)) if &hello[..8] == HELLO => {}
        Ok(Ok(_)) => {
            tracing::error!(%from, "raft port: not a Roster raft peer (bad hello); closing");
            metrics::counter!("roster_raft_bad_frames_total").increment(1);
            return;
        }
        _ => {
            tracing::warn!(%from, "raft port: no hello; closing");
            return;
        }
    }
    let peer = u64::from_be_bytes(hello[8..].try_into().expect("8 bytes"));
    tracing::info!(peer, %from, "raft peer connected");
    let (mut rd, wr) = stream.into_split();
    let (out, rx) = mpsc::channel::<Vec<u8>>(1024);
    let writer = tokio::spawn(write_frames(wr, rx));
    let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    loop {
        let (id, body) = match read_frame(&mut rd, max_frame).await {
            Ok(f) => f,
            Err(ReadEnd::TooLarge(n)) => {
                tracing::error!(
                    peer,
                    bytes = n,
                    max = max_frame,
                    "raft request over the frame limit; closing the link"
                );
                metrics::counter!("roster_raft_bad_frames_total").increment(1);
                break;
            }
            Err(ReadEnd::Closed) => break,
            Err(ReadEnd::Io(e)) => {
                tracing::debug!(peer, error = %e, "raft peer link broke");
                break;
            }
        };
        let req = match postcard::from_bytes::<WireRequest>(&body) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(peer, error = %e, "undecodable raft request; closing the link");
                metrics::counter!("roster_raft_bad_frames_total").increment(1);
                break;
            }
        };
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            break;
        };
        // A stopped node closes its links, so peers re-dial whatever serves the port next.
        let Some(n) = node.upgrade().filter(|n| !n.is_shut_down()) else {
            break;
        };
        let out = out.clone();
        tokio::spawn(async move {
            let resp = handle(&n, req).await;
            drop(n);
            let body = match postcard::to_stdvec(&resp) {
                Ok(b) if b.len() <= max_frame => b,
                Ok(b) => {
                    tracing::error!(peer, bytes = b.len(), "raft reply over the frame limit");
                    postcard::to_stdvec(&WireResponse::Error(WireError::Remote(
                        "reply over the frame limit".into(),
                    )))
                    .unwrap_or_default()
                }
                Err(e) => {
                    tracing::error!(peer, error = %e, "encoding a raft reply");
                    return;
                }
            };
            let _ = out.send(frame(id, &body)).await;
            drop(permit);
        });
    }
    drop(out);
    // Replies still being computed are dropped with the link; the peer counts them lost.
    let _ = writer.await;
}

async fn handle(n: &RaftBackend, req: WireRequest) -> WireResponse {
    let err = |e: TransportError| WireResponse::Error(e.into());
    match req {
        WireRequest::Append(r) => n
            .handle_append_entries(r)
            .await
            .map_or_else(err, WireResponse::Append),
        WireRequest::Vote(r) => n.handle_vote(r).await.map_or_else(err, WireResponse::Vote),
        WireRequest::PreVote(r) => n
            .handle_pre_vote(r)
            .await
            .map_or_else(err, WireResponse::Vote),
        WireRequest::Snapshot { vote, meta, data } => n
            .handle_install_snapshot(
                vote,
                Snapshot {
                    meta,
                    snapshot: data,
                },
            )
            .await
            .map_or_else(err, WireResponse::Snapshot),
        WireRequest::Forward(f) => match n.handle_forward(f.into()).await {
            Ok(ForwardReply::Applied(a)) => WireResponse::Applied {
                zxid: a.zxid,
                outcome: a.outcome,
            },
            Ok(ForwardReply::Touched) => WireResponse::Touched,
            Ok(ForwardReply::Barrier { zxid, index }) => WireResponse::Barrier { zxid, index },
            Ok(ForwardReply::Admin) => WireResponse::Admin,
            Err(e) => WireResponse::Error(e.into()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_refuse_oversize() {
        let resp = WireResponse::Barrier {
            zxid: 0x5_0000_0007,
            index: 42,
        };
        let body = postcard::to_stdvec(&resp).unwrap();
        let f = frame(9, &body);
        assert_eq!(
            u32::from_be_bytes(f[..4].try_into().unwrap()) as usize,
            f.len() - 4
        );
        assert_eq!(u64::from_be_bytes(f[4..12].try_into().unwrap()), 9);
        match postcard::from_bytes::<WireResponse>(&f[12..]).unwrap() {
            WireResponse::Barrier { zxid, index } => assert_eq!((zxid, index), (0x5_0000_0007, 42)),
            r => panic!("{r:?}"),
        }
    }
}
