//! One ZooKeeper client connection: handshake (new session or resume), then requests in order.
//! Writes go to the backend and may be pipelined; a read waits behind earlier writes of the same
//! connection, so replies leave in request order and a client always reads its own writes. Watch
//! events are queued by the tree as it applies a change, so they reach the client before the reply
//! to any later read.

use super::ZkServer;
use super::frame::four_letter_word;
use super::proto::{self, ConnectRequest, ConnectResponse};
use super::registry::ConnStats;
use super::requests::{Pending, Step};
use crate::zk::fourlw;
use bytes::{Bytes, BytesMut};
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
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::mpsc;
use tokio_util::codec::{FramedRead, LengthDelimitedCodec};

/// What the writer task sends, in order.
pub enum Out {
    Frame(BytesMut),
    Event(WatchedEvent),
    /// Flush and close the socket.
    Close,
}

/// Most frames queued for one client before it is considered stuck and disconnected: a client
/// that stops reading must not make the server buffer without bound.
pub const MAX_QUEUED_FRAMES: u64 = 100_000;

/// Queue a frame for the writer, or disconnect a client that does not read.
pub fn enqueue(out: &mpsc::UnboundedSender<Out>, conn: &ConnStats, m: Out) {
    if conn.queued.fetch_add(1, Ordering::Relaxed) >= MAX_QUEUED_FRAMES {
        if conn.queued.load(Ordering::Relaxed) == MAX_QUEUED_FRAMES + 1 {
            tracing::warn!(conn = conn.id, peer = %conn.peer, "client does not read its replies and events; disconnecting");
            metrics::counter!("roster_zk_slow_clients_total").increment(1);
        }
        conn.kill.notify_one();
        return;
    }
    let _ = out.send(m);
}

/// Delivers watch events into a connection's outbound queue.
struct ConnSink(mpsc::UnboundedSender<Out>, Arc<ConnStats>);

impl WatchSink for ConnSink {
    fn notify(&self, event: WatchedEvent) {
        enqueue(&self.0, &self.1, Out::Event(event));
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
    let (mut rd, wr) = stream.into_split();
    let hs_timeout = Duration::from_millis(server.cfg.handshake_timeout_ms);
    let mut first = [0u8; 4];
    match tokio::time::timeout(hs_timeout, rd.read_exact(&mut first)).await {
        Err(_) => return Err("no handshake within the timeout".into()),
        Ok(Err(e)) => return Err(format!("read: {e}")),
        Ok(Ok(_)) => {}
    }
    if let Some(cmd) = four_letter_word(first) {
        let text = fourlw::answer(server, cmd);
        let mut wr = wr;
        let _ = wr.write_all(text.as_bytes()).await;
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
    let (out_tx, out_rx) = mpsc::unbounded_channel::<Out>();
    let writer = tokio::spawn(writer(wr, out_rx, conn.clone(), server.clone()));
    let result = session_loop(server, conn, peer, req, frames, out_tx).await;
    let _ = writer.await;
    result
}

async fn writer(
    mut wr: OwnedWriteHalf,
    mut rx: mpsc::UnboundedReceiver<Out>,
    conn: Arc<ConnStats>,
    server: Arc<ZkServer>,
) {
    let mut buf = BytesMut::with_capacity(64 * 1024);
    loop {
        let Some(first) = rx.recv().await else { break };
        let mut close = false;
        let mut n = 0u64;
        let mut push = |m: Out, buf: &mut BytesMut, close: &mut bool| match m {
            Out::Frame(f) => {
                buf.extend_from_slice(&f);
                n += 1;
            }
            Out::Event(e) => {
                proto::encode_watch_event(buf, e.zxid, e.kind as i32, 3, &e.path);
                n += 1;
            }
            Out::Close => *close = true,
        };
        push(first, &mut buf, &mut close);
        while !close && buf.len() < 256 * 1024 {
            match rx.try_recv() {
                Ok(m) => push(m, &mut buf, &mut close),
                Err(_) => break,
            }
        }
        if !buf.is_empty() {
            if let Err(e) = wr.write_all(&buf).await {
                tracing::debug!(conn = conn.id, error = %e, "write failed");
                conn.kill.notify_one();
                break;
            }
            buf.clear();
        }
        conn.sent.fetch_add(n, Ordering::Relaxed);
        conn.queued.fetch_sub(n, Ordering::Relaxed);
        server
            .registry
            .stats
            .packets_sent
            .fetch_add(n, Ordering::Relaxed);
        if close {
            break;
        }
    }
    let _ = wr.shutdown().await;
}

/// The per-connection state after the handshake.
pub struct Session {
    pub server: Arc<ZkServer>,
    pub conn: Arc<ConnStats>,
    pub id: SessionId,
    pub auth: Arc<AuthInfo>,
    pub out: mpsc::UnboundedSender<Out>,
}

impl Session {
    /// Queue a reply frame.
    pub fn reply(&self, xid: i32, err: Code, body: Option<&proto::Response>) {
        let zxid = self.server.backend.tree().read().last_zxid();
        self.reply_at(xid, zxid, err, body);
    }

    pub fn reply_at(&self, xid: i32, zxid: i64, err: Code, body: Option<&proto::Response>) {
        let mut buf = BytesMut::with_capacity(64);
        proto::encode_reply(&mut buf, xid, zxid, err, body);
        self.conn.last_zxid.store(zxid, Ordering::Relaxed);
        enqueue(&self.out, &self.conn, Out::Frame(buf));
    }
}

async fn session_loop(
    server: &Arc<ZkServer>,
    conn: &Arc<ConnStats>,
    peer: SocketAddr,
    req: ConnectRequest,
    mut frames: FramedRead<tokio::net::tcp::OwnedReadHalf, LengthDelimitedCodec>,
    out: mpsc::UnboundedSender<Out>,
) -> Result<(), String> {
    let backend = server.backend.clone();
    if !backend.status().ready {
        // As ZooKeeper does while it is not serving (e.g. during an election): the client tries
        // another member.
        tracing::debug!(conn = conn.id, %peer, "not serving yet; closing the connection");
        let _ = out.send(Out::Close);
        return Err("not serving".into());
    }
    let last = backend.tree().read().last_zxid();
    if req.last_zxid_seen > last {
        tracing::warn!(conn = conn.id, %peer, client_zxid = format!("{:#x}", req.last_zxid_seen),
            our_zxid = format!("{last:#x}"), "refusing session: client has seen a newer zxid");
        let _ = out.send(Out::Close);
        return Err("client ahead of server".into());
    }
    let timeout = (req.timeout.max(0) as u64).clamp(
        server.cfg.min_session_timeout(),
        server.cfg.max_session_timeout(),
    ) as i32;
    let auth = Arc::new(AuthInfo {
        ids: vec![Id::new("ip", &peer.ip().to_string())],
    });
    let refuse = |out: &mpsc::UnboundedSender<Out>| {
        let mut buf = BytesMut::new();
        let resp = ConnectResponse {
            protocol_version: 0,
            timeout: 0,
            session_id: 0,
            passwd: vec![0; 16],
            read_only: req.read_only.map(|_| false),
        };
        proto::encode_connect_response(&mut buf, &resp);
        enqueue(out, conn, Out::Frame(buf));
        let _ = out.send(Out::Close);
    };
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
                let _ = out.send(Out::Close);
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
            refuse(&out);
            return Err("session expired".into());
        }
        let _ = backend.touch(&[req.session_id]).await;
        (req.session_id, req.passwd.clone())
    };
    let mut buf = BytesMut::new();
    let resp = ConnectResponse {
        protocol_version: 0,
        timeout,
        session_id: session,
        passwd,
        read_only: req.read_only.map(|_| false),
    };
    proto::encode_connect_response(&mut buf, &resp);
    enqueue(&out, conn, Out::Frame(buf));
    conn.timeout_ms.store(timeout as i64, Ordering::Relaxed);
    server.registry.bind(session, conn);
    {
        let tree = backend.tree();
        let t = tree.read();
        t.watches()
            .lock()
            .register_sink(conn.id, Arc::new(ConnSink(out.clone(), conn.clone())));
    }
    tracing::debug!(conn = conn.id, %peer, session = format!("{session:#x}"), timeout, resumed = req.session_id != 0, "session established");
    let mut s = Session {
        server: server.clone(),
        conn: conn.clone(),
        id: session,
        auth,
        out,
    };
    let res = requests_loop(&mut s, &mut frames).await;
    backend
        .tree()
        .read()
        .watches()
        .lock()
        .remove_watcher(conn.id);
    let _ = s.out.send(Out::Close);
    res
}

async fn requests_loop(
    s: &mut Session,
    frames: &mut FramedRead<tokio::net::tcp::OwnedReadHalf, LengthDelimitedCodec>,
) -> Result<(), String> {
    let mut inflight: FuturesOrdered<Pending> = FuturesOrdered::new();
    let limit = s.server.cfg.max_outstanding_per_connection.max(1);
    let conn = s.conn.clone();
    // Any packet keeps the session alive; a burst needs only one touch per quarter tick.
    let touch_every = std::time::Duration::from_millis((s.server.cfg.tick_ms / 4).max(1));
    let mut last_touch = Instant::now() - touch_every;
    loop {
        tokio::select! {
            biased;
            _ = conn.kill.notified() => return Err("closed by the server (session expired or moved)".into()),
            Some(step) = inflight.next(), if !inflight.is_empty() => {
                conn.outstanding.store(inflight.len() as u64, Ordering::Relaxed);
                if let Step::Close = super::requests::finish(s, step) {
                    return Ok(());
                }
            }
            frame = frames.next(), if inflight.len() < limit => {
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
                s.server.registry.stats.packets_received.fetch_add(1, Ordering::Relaxed);
                let started = Instant::now();
                if started.duration_since(last_touch) >= touch_every {
                    last_touch = started;
                    let _ = s.server.backend.touch(&[s.id]).await;
                }
                match proto::decode_request(&frame) {
                    Ok((hdr, req)) => {
                        tracing::trace!(conn = conn.id, xid = hdr.xid, op = hdr.op, "request");
                        if let Some(p) = super::requests::start(s, hdr.xid, hdr.op, req, started, inflight.is_empty()) {
                            inflight.push_back(p);
                        }
                    }
                    Err(e) => {
                        if let Step::Close = super::requests::decode_failure(s, e) {
                            return Err("undecodable request".into());
                        }
                    }
                }
            }
        }
    }
}
