//! The dialling side: one multiplexed link per peer, re-dialled with backoff.

use super::wire::{WireRequest, WireResponse, remote, unexpected};
use super::{HELLO, ReadEnd, TcpConfig, frame, read_frame, write_frames};
use crate::network::{Forward, ForwardError, ForwardReply, Peer, Transport, TransportError};
use crate::storage::{Pieces, upto};
use crate::types::{
    AppendEntriesRequest, AppendEntriesResponse, NodeId, Snapshot, SnapshotResponse, Vote,
    VoteRequest, VoteResponse,
};
use parking_lot::Mutex;
use roster_core::transfer::{Dir, Transfer};
use roster_core::txn::Applied;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, watch};

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<WireResponse>>>>;

/// Removes an unanswered request's entry from its link's pending map when the call ends.
struct Forget<'a> {
    pending: &'a Pending,
    id: u64,
    armed: bool,
}

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.pending.lock().remove(&self.id);
        }
    }
}

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
        // Bounded by `connect_timeout` inside; the hello then goes into an empty send buffer.
        let dial = async {
            let mut s = roster_core::net::dial_peer(
                &*to.addr,
                self.cfg.source_ip,
                self.cfg.connect_timeout,
                self.cfg.unacked_timeout,
            )
            .await?;
            let mut hello = HELLO.to_vec();
            hello.extend_from_slice(&self.me.to_be_bytes());
            s.write_all(&hello).await?;
            Ok::<_, std::io::Error>(s)
        };
        match dial.await {
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
        // Forget the request if this call ends unanswered — timed out, or dropped by its caller
        // (openraft abandons an append at its own deadline); an answer already removed it.
        let mut forget = Forget {
            pending: &conn.pending,
            id,
            armed: true,
        };
        if conn.out.send(frame(id, &body)).await.is_err() {
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
            Ok(Some(r)) => {
                forget.armed = false;
                Ok(r)
            }
            Ok(None) => Err(TransportError::Lost(format!(
                "{}: link closed before the answer",
                to.id
            ))),
            Err(_) => Err(TransportError::Lost(format!(
                "{}: no answer within {timeout:?}",
                to.id
            ))),
        }
    }
}

#[async_trait::async_trait]
impl Transport for TcpTransport {
    fn peer_is_up(&self, peer: NodeId) {
        let Some(link) = self.links.lock().get(&peer).cloned() else {
            return;
        };
        // A link being dialled right now is busy; it needs no nudge.
        if let Ok(mut st) = link.state.try_lock()
            && st.retry_at.take().is_some()
        {
            st.backoff = self.cfg.backoff_min;
            tracing::debug!(peer, "raft peer dialled in; re-dialling it without waiting");
        }
    }

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
        let chunk = self.cfg.snapshot_chunk.max(1);
        let mut pieces = read_ahead(Pieces::new(snapshot.snapshot), chunk);
        let total = pieces.total;
        let mut next = async || {
            pieces.next().await.map_err(|e| {
                tracing::error!(peer = to.id, error = %e, "cannot read the snapshot to send");
                TransportError::Lost(format!("reading the snapshot to send: {e}"))
            })
        };
        if total <= chunk as u64 {
            let data = next().await?;
            let req = WireRequest::Snapshot {
                vote,
                meta: snapshot.meta,
                data,
            };
            return match self.call(to, req, self.cfg.long_timeout).await? {
                WireResponse::Snapshot(r) => Ok(r),
                WireResponse::Error(e) => Err(remote(e)),
                r => Err(unexpected("snapshot", &r)),
            };
        }
        let mut progress = Transfer::new(Dir::Sent, to.id, upto(&snapshot.meta), Some(total));
        loop {
            let offset = progress.done();
            let data = next().await?;
            let len = data.len() as u64;
            let last = offset + len == total;
            let req = WireRequest::SnapshotChunk {
                vote,
                meta: snapshot.meta.clone(),
                offset,
                total,
                data,
            };
            // A piece is a plain request; the last one also waits for the install.
            let timeout = if last {
                self.cfg.long_timeout
            } else {
                self.cfg.request_timeout
            };
            progress.add(len);
            match self.call(to, req, timeout).await? {
                WireResponse::SnapshotPart if !last => {}
                WireResponse::Snapshot(r) if last => {
                    tracing::info!(
                        peer = to.id,
                        bytes = total,
                        pieces = total.div_ceil(chunk as u64),
                        ms = progress.elapsed().as_millis() as u64,
                        "snapshot sent in pieces"
                    );
                    return Ok(r);
                }
                WireResponse::Error(e) => return Err(remote(e)),
                r => return Err(unexpected("snapshot piece", &r)),
            }
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

/// A snapshot's pieces read by a blocking thread of their own, at most [`READ_AHEAD`] ahead of
/// the link: the file is read while the pieces before travel, and no more of it is held.
struct ReadAhead {
    rx: mpsc::Receiver<std::io::Result<Vec<u8>>>,
    total: u64,
}

const READ_AHEAD: usize = 2;

fn read_ahead(mut pieces: Pieces, max: usize) -> ReadAhead {
    let total = pieces.total();
    let (tx, rx) = mpsc::channel(READ_AHEAD);
    tokio::task::spawn_blocking(move || {
        while pieces.offset() < pieces.total() {
            let piece = pieces.next(max);
            let failed = piece.is_err();
            // A closed channel: the send was given up.
            if tx.blocking_send(piece).is_err() || failed {
                return;
            }
        }
    });
    ReadAhead { rx, total }
}

impl ReadAhead {
    /// The next piece (empty for an empty snapshot).
    async fn next(&mut self) -> std::io::Result<Vec<u8>> {
        match self.rx.recv().await {
            Some(piece) => piece,
            None if self.total == 0 => Ok(Vec::new()),
            None => Err(std::io::Error::other("the snapshot's reader stopped")),
        }
    }
}
