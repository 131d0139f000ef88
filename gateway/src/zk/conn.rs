//! One ZooKeeper client connection: handshake (new session or resume), then requests in order.
//! Writes go to the backend and may be pipelined; a read waits behind earlier writes of the same
//! connection, so replies leave in request order and a client always reads its own writes. Watch
//! events are queued by the tree as it applies a change, so they reach the client before the reply
//! to any later read.
//!
//! One task serves the connection and writes its socket itself: it encodes every reply and event
//! into one buffer and writes that once nothing else is ready, so a burst of replies leaves in one
//! write and no reply waits for another task to be scheduled.

use super::ZkServer;
use super::frame::four_letter_word;
use super::proto::{self, ConnectRequest, ConnectResponse};
use super::registry::ConnStats;
use super::requests::{Pending, Step};
use crate::zk::fourlw;
use bytes::{Bytes, BytesMut};
use futures::FutureExt;
use futures::stream::{FuturesOrdered, StreamExt};
use roster_core::acl::{AuthInfo, Id};
use roster_core::txn::{Envelope, Outcome, Request};
use roster_core::watch::{WatchSink, WatchedEvent};
use roster_core::{Code, SessionId};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::mpsc;
use tokio_util::codec::{FramedRead, LengthDelimitedCodec};

/// Most frames queued for one client before it is considered stuck and disconnected: a client
/// that stops reading must not make the server buffer without bound.
const MAX_QUEUED_FRAMES: u64 = 100_000;

/// How long a closing connection may take to write what it still holds for the client (the
/// reply to `closeSession`, an `AUTH_FAILED`): a client that does not read is not waited for.
const CLOSE_FLUSH: Duration = Duration::from_secs(2);

/// Requests and replies handled in one turn before the task writes what it has and lets others run.
const BURST: usize = 16;

/// Queue a watch event for a connection, or disconnect a client that does not read.
fn enqueue(out: &mpsc::UnboundedSender<WatchedEvent>, conn: &ConnStats, event: WatchedEvent) {
    if conn.queued.fetch_add(1, Ordering::Relaxed) >= MAX_QUEUED_FRAMES {
        if conn.queued.load(Ordering::Relaxed) == MAX_QUEUED_FRAMES + 1 {
            tracing::warn!(conn = conn.id, peer = %conn.peer, "client does not read its replies and events; disconnecting");
            metrics::counter!("roster_zk_slow_clients_total").increment(1);
        }
        conn.kill.notify_one();
        return;
    }
    let _ = out.send(event);
}

/// Delivers watch events into a connection's queue (from whichever thread applies a change).
struct ConnSink(mpsc::UnboundedSender<WatchedEvent>, Arc<ConnStats>);

impl WatchSink for ConnSink {
    fn notify(&self, event: WatchedEvent) {
        enqueue(&self.0, &self.1, event);
    }
}

/// Serve one accepted socket until it closes.
pub async fn serve(server: Arc<ZkServer>, stream: TcpStream, peer: SocketAddr) {
    let Some(conn) = server
        .registry
        .open(peer, server.cfg.max_client_connections)
    else {
        tracing::warn!(%peer, limit = server.cfg.max_client_connections, "too many connections from this address; closing");
        metrics::counter!("roster_connections_rejected_total", "protocol" => "zookeeper")
            .increment(1);
        return;
    };
    let _ = stream.set_nodelay(true);
    if let Err(reason) = run(&server, stream, peer, &conn).await {
        tracing::debug!(conn = conn.id, %peer, reason, "connection closed");
    }
    server.registry.close(&conn);
}

async fn run(
    server: &Arc<ZkServer>,
    stream: TcpStream,
    peer: SocketAddr,
    conn: &Arc<ConnStats>,
) -> Result<(), String> {
    let (mut rd, mut wr) = stream.into_split();
    let hs_timeout = Duration::from_millis(server.cfg.handshake_timeout_ms);
    let mut first = [0u8; 4];
    match tokio::time::timeout(hs_timeout, rd.read_exact(&mut first)).await {
        Err(_) => return Err("no handshake within the timeout".into()),
        Ok(Err(e)) => return Err(format!("read: {e}")),
        Ok(Ok(_)) => {}
    }
    if let Some(cmd) = four_letter_word(first) {
        let text = fourlw::answer(server, cmd);
        let _ = tokio::time::timeout(hs_timeout, wr.write_all(text.as_bytes())).await;
        let _ = wr.shutdown().await;
        return Ok(());
    }
    let max = server.cfg.max_buffer;
    let mut frames = LengthDelimitedCodec::builder()
        .length_field_length(4)
        .max_frame_length(max)
        .new_read(rd);
    frames.read_buffer_mut().extend_from_slice(&first);
    let frame = match tokio::time::timeout(hs_timeout, frames.next()).await {
        Err(_) => return Err("no handshake within the timeout".into()),
        Ok(None) => return Err("closed during handshake".into()),
        Ok(Some(Err(e))) => return Err(format!("bad handshake frame: {e}")),
        Ok(Some(Ok(f))) => f,
    };
    let req =
        proto::decode_connect_request(&frame).map_err(|e| format!("bad connect request: {e}"))?;
    let result = session_loop(server, conn, peer, req, frames, &mut wr).await;
    let _ = tokio::time::timeout(CLOSE_FLUSH, wr.shutdown()).await;
    result
}

/// The per-connection state after the handshake.
pub struct Session {
    pub server: Arc<ZkServer>,
    pub conn: Arc<ConnStats>,
    pub id: SessionId,
    pub auth: Arc<AuthInfo>,
    /// Watch events the tree queued for this connection, not yet in `wbuf`.
    events: mpsc::UnboundedReceiver<WatchedEvent>,
    /// Replies and events encoded and not yet written, in the order the client must see them.
    wbuf: BytesMut,
    /// Frames in `wbuf`.
    frames: u64,
    /// Close the connection once `wbuf` is written.
    closing: bool,
}

impl Session {
    /// Queue a reply frame.
    pub fn reply(&mut self, xid: i32, err: Code, body: Option<&proto::Response>) {
        let zxid = self.server.backend.tree().read().last_zxid();
        self.reply_at(xid, zxid, err, body);
    }

    /// Queue a reply frame after every event queued before it.
    pub fn reply_at(&mut self, xid: i32, zxid: i64, err: Code, body: Option<&proto::Response>) {
        self.take_events();
        proto::encode_reply(&mut self.wbuf, xid, zxid, err, body);
        self.count_frame();
        self.conn.last_zxid.store(zxid, Ordering::Relaxed);
    }

    /// Queue a watch event after every event queued before it.
    pub fn event(&mut self, e: WatchedEvent) {
        self.take_events();
        encode_event(&mut self.wbuf, &e);
        self.count_frame();
    }

    /// Close the connection once what is queued is written.
    pub fn close_after_reply(&mut self) {
        self.closing = true;
    }

    fn count_frame(&mut self) {
        self.frames += 1;
        self.conn.queued.fetch_add(1, Ordering::Relaxed);
    }

    /// Move the events the tree queued into `wbuf` (they were counted as queued when sent).
    fn take_events(&mut self) {
        while let Ok(e) = self.events.try_recv() {
            encode_event(&mut self.wbuf, &e);
            self.frames += 1;
        }
    }

    /// Write `wbuf` to the socket; gives up when the server closes the connection meanwhile
    /// (a client that stops reading stops being read, its session expires, and it is closed).
    async fn flush(&mut self, wr: &mut OwnedWriteHalf) -> Result<(), String> {
        let mut off = 0;
        while off < self.wbuf.len() {
            match wr.try_write(&self.wbuf[off..]) {
                Ok(n) => off += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    tokio::select! {
                        biased;
                        _ = self.conn.kill.notified() => return Err(KILLED.into()),
                        r = wr.writable() => r.map_err(|e| format!("write: {e}"))?,
                    }
                }
                Err(e) => return Err(format!("write: {e}")),
            }
        }
        let n = std::mem::take(&mut self.frames);
        self.conn.sent.fetch_add(n, Ordering::Relaxed);
        self.conn.queued.fetch_sub(n, Ordering::Relaxed);
        self.server
            .registry
            .stats
            .packets_sent
            .fetch_add(n, Ordering::Relaxed);
        if self.wbuf.capacity() > 1 << 20 {
            // One large reply does not make the connection hold a large buffer for good.
            self.wbuf = BytesMut::new();
        } else {
            self.wbuf.clear();
        }
        Ok(())
    }
}

/// A watch event as ZooKeeper sends it (state 3: SyncConnected).
fn encode_event(buf: &mut BytesMut, e: &WatchedEvent) {
    proto::encode_watch_event(buf, e.zxid, e.kind as i32, 3, &e.path);
}

const KILLED: &str = "closed by the server (session expired or moved, or the client does not read)";

async fn session_loop(
    server: &Arc<ZkServer>,
    conn: &Arc<ConnStats>,
    peer: SocketAddr,
    req: ConnectRequest,
    mut frames: FramedRead<OwnedReadHalf, LengthDelimitedCodec>,
    wr: &mut OwnedWriteHalf,
) -> Result<(), String> {
    let backend = server.backend.clone();
    if !backend.status().ready {
        // As ZooKeeper does while it is not serving (e.g. during an election): the client tries
        // another member.
        tracing::debug!(conn = conn.id, %peer, "not serving yet; closing the connection");
        return Err("not serving".into());
    }
    let last = backend.tree().read().last_zxid();
    if req.last_zxid_seen > last {
        tracing::warn!(conn = conn.id, %peer, client_zxid = format!("{:#x}", req.last_zxid_seen),
            our_zxid = format!("{last:#x}"), "refusing session: client has seen a newer zxid");
        return Err("client ahead of server".into());
    }
    let timeout = (req.timeout.max(0) as u64).clamp(
        server.cfg.min_session_timeout(),
        server.cfg.max_session_timeout(),
    ) as i32;
    let hs_timeout = Duration::from_millis(server.cfg.handshake_timeout_ms);
    let auth = Arc::new(AuthInfo {
        ids: vec![Id::new("ip", &peer.ip().to_string())],
    });
    let (session, passwd) = if req.session_id == 0 {
        let env = Envelope {
            session: 0,
            auth: auth.clone(),
            request: Request::CreateSession {
                timeout_ms: timeout,
            },
        };
        match backend.submit(env).await {
            Ok(a) => match a.outcome {
                Outcome::SessionCreated {
                    session, passwd, ..
                } => (session, passwd),
                other => return Err(format!("unexpected session outcome {other:?}")),
            },
            Err(e) => {
                tracing::warn!(conn = conn.id, %peer, error = %e, "cannot create session");
                return Err(e.to_string());
            }
        }
    } else {
        let valid = backend
            .tree()
            .read()
            .sessions()
            .get(&req.session_id)
            .is_some_and(|m| m.passwd == req.passwd);
        if !valid {
            tracing::info!(conn = conn.id, %peer, session = format!("{:#x}", req.session_id),
                "reconnect with an expired or unknown session (or a wrong password)");
            // ZooKeeper's answer to an expired session: a connect response with timeout 0.
            let mut buf = BytesMut::new();
            let resp = ConnectResponse {
                protocol_version: 0,
                timeout: 0,
                session_id: 0,
                passwd: vec![0; 16],
                read_only: req.read_only.map(|_| false),
            };
            proto::encode_connect_response(&mut buf, &resp);
            let _ = tokio::time::timeout(hs_timeout, wr.write_all(&buf)).await;
            return Err("session expired".into());
        }
        let _ = backend.touch(&[req.session_id]).await;
        (req.session_id, req.passwd.clone())
    };
    let (events_tx, events) = mpsc::unbounded_channel::<WatchedEvent>();
    let mut s = Session {
        server: server.clone(),
        conn: conn.clone(),
        id: session,
        auth,
        events,
        wbuf: BytesMut::with_capacity(4096),
        frames: 0,
        closing: false,
    };
    let resp = ConnectResponse {
        protocol_version: 0,
        timeout,
        session_id: session,
        passwd,
        read_only: req.read_only.map(|_| false),
    };
    proto::encode_connect_response(&mut s.wbuf, &resp);
    s.count_frame();
    conn.timeout_ms.store(timeout as i64, Ordering::Relaxed);
    server.registry.bind(session, conn);
    {
        let tree = backend.tree();
        let t = tree.read();
        t.watches()
            .lock()
            .register_sink(conn.id, Arc::new(ConnSink(events_tx, conn.clone())));
    }
    tracing::debug!(conn = conn.id, %peer, session = format!("{session:#x}"), timeout, resumed = req.session_id != 0, "session established");
    let res = requests_loop(&mut s, &mut frames, wr).await;
    backend
        .tree()
        .read()
        .watches()
        .lock()
        .remove_watcher(conn.id);
    // Whatever ended it, what the client was already sent an answer to goes out, within bounds.
    if !s.wbuf.is_empty() {
        let _ = tokio::time::timeout(CLOSE_FLUSH, s.flush(wr)).await;
    }
    res
}

/// What woke the connection.
enum Wake {
    Step(Step),
    Event(WatchedEvent),
    Frame(Option<Result<BytesMut, std::io::Error>>),
}

async fn requests_loop(
    s: &mut Session,
    frames: &mut FramedRead<OwnedReadHalf, LengthDelimitedCodec>,
    wr: &mut OwnedWriteHalf,
) -> Result<(), String> {
    let mut inflight: FuturesOrdered<Pending> = FuturesOrdered::new();
    let limit = s.server.cfg.max_outstanding_per_connection.max(1);
    let conn = s.conn.clone();
    // Any packet keeps the session alive; a burst needs only one touch per quarter tick.
    let touch_every = std::time::Duration::from_millis((s.server.cfg.tick_ms / 4).max(1));
    let mut last_touch = Instant::now() - touch_every;
    loop {
        if !s.wbuf.is_empty() {
            s.flush(wr).await?;
        }
        let mut wake = tokio::select! {
            biased;
            _ = conn.kill.notified() => return Err(KILLED.into()),
            Some(step) = inflight.next(), if !inflight.is_empty() => Wake::Step(step),
            Some(e) = s.events.recv() => Wake::Event(e),
            frame = frames.next(), if inflight.len() < limit => Wake::Frame(frame),
        };
        // Handle what woke us and then whatever else is ready without waiting (up to a burst),
        // so the replies of a pipelined batch leave in one write.
        let mut handled = 0;
        loop {
            match wake {
                Wake::Step(step) => {
                    if let Step::Close = super::requests::finish(s, step) {
                        s.close_after_reply();
                    }
                    conn.outstanding
                        .store(inflight.len() as u64, Ordering::Relaxed);
                }
                Wake::Event(e) => s.event(e),
                Wake::Frame(frame) => {
                    let frame: Bytes = match frame {
                        None => return Err("client closed the connection".into()),
                        Some(Err(e)) => {
                            tracing::warn!(conn = conn.id, peer = %conn.peer, error = %e, "bad frame; closing the connection");
                            metrics::counter!("roster_zk_bad_frames_total").increment(1);
                            return Err(format!("bad frame: {e}"));
                        }
                        Some(Ok(f)) => f.freeze(),
                    };
                    conn.received.fetch_add(1, Ordering::Relaxed);
                    s.server
                        .registry
                        .stats
                        .packets_received
                        .fetch_add(1, Ordering::Relaxed);
                    let started = Instant::now();
                    if started.duration_since(last_touch) >= touch_every {
                        last_touch = started;
                        let _ = s.server.backend.touch(&[s.id]).await;
                    }
                    match proto::decode_request(&frame) {
                        Ok((hdr, req)) => {
                            tracing::trace!(conn = conn.id, xid = hdr.xid, op = hdr.op, "request");
                            if let Some(p) = super::requests::start(
                                s,
                                hdr.xid,
                                hdr.op,
                                req,
                                started,
                                inflight.is_empty(),
                            ) {
                                inflight.push_back(p);
                            }
                        }
                        Err(e) => {
                            if let Step::Close = super::requests::decode_failure(s, e) {
                                s.close_after_reply();
                                return Err("undecodable request".into());
                            }
                        }
                    }
                }
            }
            if s.closing {
                return Ok(());
            }
            handled += 1;
            if handled == BURST {
                break;
            }
            // Polled without a waker that matters: the select above polls both again, with the
            // task's own, before the task sleeps.
            wake = if let Some(Some(step)) = (!inflight.is_empty())
                .then(|| inflight.next().now_or_never())
                .flatten()
            {
                Wake::Step(step)
            } else if inflight.len() < limit
                && let Some(frame) = frames.next().now_or_never()
            {
                Wake::Frame(frame)
            } else {
                break;
            };
        }
    }
}
