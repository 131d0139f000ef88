//! The accepting side: peers' requests handed to the local `RaftBackend`.

use super::wire::{WireError, WireRequest, WireResponse};
use super::{HELLO, MAX_IN_FLIGHT, ReadEnd, TcpConfig, frame, read_frame, write_frames};
use crate::backend::RaftBackend;
use crate::network::{ForwardReply, TransportError};
use crate::types::Snapshot;
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinHandle;

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
            if let Err(e) = roster_core::net::configure_peer_link(&stream, cfg.unacked_timeout) {
                tracing::warn!(%from, error = %e, "raft port: cannot set up a peer link's options");
            }
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
    if let Some(n) = node.upgrade() {
        n.transport.peer_is_up(peer);
    }
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
