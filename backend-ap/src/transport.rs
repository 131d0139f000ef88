//! The data transport between members: plain TCP, one outgoing connection per peer, frames of
//! [`crate::proto`]. Outgoing connections are bound to this member's own address (so a firewall
//! rule can cut members apart on one host), reconnect with capped exponential backoff, and queue a
//! bounded number of frames: when a peer cannot keep up, frames are dropped and counted —
//! anti-entropy repairs whatever was lost. A peer that shows it is up (it dials us, or the failure
//! detector sees it) ends the backoff at once: members started a few seconds apart would otherwise
//! hold each other's writes for up to the backoff cap.

use crate::hlc::MemberId;
use crate::proto::{self, MAX_FRAME, Msg};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, mpsc};

/// Frames queued per peer before new ones are dropped.
const QUEUE: usize = 8192;

struct Link {
    addr: SocketAddr,
    tx: mpsc::Sender<Arc<Vec<u8>>>,
    /// Wakes the connector out of its backoff.
    wake: Arc<Notify>,
}

/// Outgoing links, by member.
pub struct Transport {
    me: MemberId,
    incarnation: u64,
    local: SocketAddr,
    links: Mutex<HashMap<MemberId, Link>>,
}

impl Transport {
    pub fn new(me: MemberId, incarnation: u64, local: SocketAddr) -> Arc<Transport> {
        Arc::new(Transport {
            me,
            incarnation,
            local,
            links: Mutex::new(HashMap::new()),
        })
    }

    /// Know (or re-address) a peer.
    pub fn add(self: &Arc<Self>, id: MemberId, addr: SocketAddr) {
        if id == self.me {
            return;
        }
        let mut links = self.links.lock();
        if links
            .get(&id)
            .is_some_and(|l| l.addr == addr && !l.tx.is_closed())
        {
            return;
        }
        let (tx, rx) = mpsc::channel(QUEUE);
        let wake = Arc::new(Notify::new());
        links.insert(
            id,
            Link {
                addr,
                tx,
                wake: wake.clone(),
            },
        );
        tokio::spawn(self.clone().connector(id, addr, rx, wake));
    }

    /// A peer is up: if its link is waiting out a backoff, dial now.
    pub fn wake(&self, id: MemberId) {
        if let Some(l) = self.links.lock().get(&id) {
            l.wake.notify_one();
        }
    }

    /// Drop the link to a peer and dial it afresh: after a partition heals, the old connection
    /// may sit in TCP retransmission backoff for seconds.
    pub fn reconnect(self: &Arc<Self>, id: MemberId) {
        let addr = self.links.lock().remove(&id).map(|l| l.addr);
        if let Some(addr) = addr {
            self.add(id, addr);
        }
    }

    /// Queue a message for a peer; false if it was dropped (unknown peer or full queue).
    pub fn send(&self, to: MemberId, msg: &Msg) -> bool {
        let frame = Arc::new(proto::encode(msg));
        self.send_frame(to, frame)
    }

    /// Queue an encoded frame (shared between peers). A frame over [`MAX_FRAME`] is not sent:
    /// the peer would refuse it by closing the link, losing what is queued behind it.
    pub fn send_frame(&self, to: MemberId, frame: Arc<Vec<u8>>) -> bool {
        if frame.len() > MAX_FRAME + 4 {
            tracing::error!(
                peer = to,
                bytes = frame.len() - 4,
                max = MAX_FRAME,
                "message over the frame limit; not sent"
            );
            metrics::counter!("roster_ap_frames_dropped_total").increment(1);
            return false;
        }
        let links = self.links.lock();
        let Some(l) = links.get(&to) else {
            return false;
        };
        match l.tx.try_send(frame) {
            Ok(()) => true,
            Err(_) => {
                metrics::counter!("roster_ap_frames_dropped_total").increment(1);
                false
            }
        }
    }

    async fn connect(&self, addr: SocketAddr) -> std::io::Result<TcpStream> {
        roster_core::net::dial_peer(
            addr,
            Some(self.local.ip()).filter(|ip| !ip.is_unspecified()),
            roster_core::net::PEER_CONNECT_TIMEOUT,
            roster_core::net::PEER_UNACKED_TIMEOUT,
        )
        .await
    }

    async fn connector(
        self: Arc<Self>,
        id: MemberId,
        addr: SocketAddr,
        mut rx: mpsc::Receiver<Arc<Vec<u8>>>,
        wake: Arc<Notify>,
    ) {
        let mut backoff = Duration::from_millis(50);
        // A frame whose write failed goes first on the next connection (a peer applies a frame
        // twice harmlessly: last writer wins).
        let mut unsent: Option<Arc<Vec<u8>>> = None;
        loop {
            // Stop when this link was replaced or dropped.
            {
                let links = self.links.lock();
                match links.get(&id) {
                    Some(l) if l.addr == addr => {}
                    _ => return,
                }
            }
            match self.connect(addr).await {
                Ok(mut s) => {
                    backoff = Duration::from_millis(50);
                    tracing::debug!(peer = id, %addr, "connected to peer");
                    let hello = proto::encode(&Msg::Hello {
                        from: self.me,
                        incarnation: self.incarnation,
                    });
                    if s.write_all(&hello).await.is_err() {
                        continue;
                    }
                    loop {
                        let frame = match unsent.take() {
                            Some(f) => f,
                            None => match rx.recv().await {
                                Some(f) => f,
                                None => break,
                            },
                        };
                        if let Err(e) = s.write_all(&frame).await {
                            tracing::debug!(peer = id, error = %e, "peer connection lost");
                            unsent = Some(frame);
                            break;
                        }
                        metrics::counter!("roster_ap_transport_bytes_total", "dir" => "sent")
                            .increment(frame.len() as u64);
                    }
                    if rx.is_closed() {
                        return;
                    }
                }
                Err(e) => {
                    tracing::trace!(peer = id, %addr, error = %e, "cannot reach peer");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {
                            backoff = (backoff * 2).min(Duration::from_secs(2));
                        }
                        _ = wake.notified() => backoff = Duration::from_millis(50),
                    }
                }
            }
        }
    }
}

/// Accept peers' connections and hand their messages to `deliver`; a peer that dials us is up, so
/// our own link to it stops waiting out its backoff.
pub async fn serve<F>(listener: TcpListener, transport: Arc<Transport>, deliver: F)
where
    F: Fn(MemberId, Msg) -> futures_lite::BoxFuture<bool> + Send + Sync + Clone + 'static,
{
    loop {
        let Ok((s, peer)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        if let Err(e) =
            roster_core::net::configure_peer_link(&s, roster_core::net::PEER_UNACKED_TIMEOUT)
        {
            tracing::warn!(%peer, error = %e, "cannot set up a peer link's options");
        }
        let deliver = deliver.clone();
        let transport = transport.clone();
        tokio::spawn(async move {
            if let Err(e) = read_peer(s, &transport, deliver).await {
                tracing::debug!(%peer, error = %e, "peer connection closed");
            }
        });
    }
}

async fn read_frame(s: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<Msg> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("frame of {len} bytes"),
        ));
    }
    buf.resize(len, 0);
    s.read_exact(buf).await?;
    metrics::counter!("roster_ap_transport_bytes_total", "dir" => "received")
        .increment(len as u64 + 4);
    proto::decode(buf).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

async fn read_peer<F>(mut s: TcpStream, transport: &Transport, deliver: F) -> std::io::Result<()>
where
    F: Fn(MemberId, Msg) -> futures_lite::BoxFuture<bool>,
{
    let mut buf = Vec::new();
    let from = match read_frame(&mut s, &mut buf).await? {
        Msg::Hello { from, .. } => {
            transport.wake(from);
            from
        }
        _ => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "first frame is not Hello",
            ));
        }
    };
    loop {
        let msg = read_frame(&mut s, &mut buf).await?;
        if !deliver(from, msg).await {
            return Ok(());
        }
    }
}

/// A boxed future, without pulling in a futures crate for one alias.
pub mod futures_lite {
    pub type BoxFuture<T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_frame_over_the_limit_is_not_queued() {
        let t = Transport::new(1, 1, "127.0.0.1:0".parse().unwrap());
        // A peer nobody answers for: frames queue for it while it is dialled.
        t.add(2, "127.0.0.1:9".parse().unwrap());
        assert!(t.send_frame(2, Arc::new(vec![0; 100])));
        assert!(t.send_frame(2, Arc::new(vec![0; MAX_FRAME + 4])));
        assert!(!t.send_frame(2, Arc::new(vec![0; MAX_FRAME + 5])));
    }
}
