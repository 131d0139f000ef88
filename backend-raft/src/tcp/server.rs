//! The accepting side: peers' requests handed to the local `RaftBackend`.

use super::wire::{WireError, WireRequest, WireResponse};
use super::{HELLO, MAX_IN_FLIGHT, ReadEnd, TcpConfig, frame, read_frame, write_frames};
use crate::backend::RaftBackend;
use crate::network::{ForwardReply, TransportError};
use crate::storage::{SnapData, upto};
use crate::types::{Snapshot, SnapshotMeta, Vote};
use roster_core::transfer::{Dir, Transfer};
use roster_core::tree::Tree;
use roster_core::tree::snapshot::Restorer;
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
    // The snapshot this peer is sending in pieces, if any; lost with the link (the sender then
    // starts over on the next).
    let partial = Partial::default();
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
        let partial = partial.clone();
        tokio::spawn(async move {
            let resp = handle(&n, req, &partial, peer).await;
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

/// Pieces queued for the restoring thread beyond the one it decodes: a piece is answered once
/// queued, so the next one travels while this one is restored.
const PIECES_QUEUED: usize = 2;

/// A snapshot arriving in pieces on one link, restored as they come by a thread of its own.
struct Incoming {
    meta: SnapshotMeta,
    total: u64,
    received: u64,
    pieces: mpsc::Sender<Vec<u8>>,
    restored: tokio::task::JoinHandle<Result<Tree, String>>,
    progress: Transfer,
}

type Partial = Arc<parking_lot::Mutex<Option<Incoming>>>;

/// Restore a snapshot from the pieces `rx` hands over, on a blocking thread.
fn restoring(mut rx: mpsc::Receiver<Vec<u8>>) -> tokio::task::JoinHandle<Result<Tree, String>> {
    tokio::task::spawn_blocking(move || {
        let mut r = Restorer::new();
        while let Some(piece) = rx.blocking_recv() {
            r.push(&piece).map_err(|e| e.to_string())?;
        }
        r.finish().map_err(|e| e.to_string())
    })
}

/// What the restoring thread ended with (its error, when it stopped early at bad bytes).
async fn restored(h: tokio::task::JoinHandle<Result<Tree, String>>) -> Result<Tree, String> {
    h.await
        .unwrap_or_else(|e| Err(format!("restoring the snapshot: {e}")))
}

/// Add a piece to the link's partial snapshot: it is queued for the link's restoring thread and
/// answered then (at most [`PIECES_QUEUED`] wait), so restoring overlaps the transfer. The
/// restored tree once the last piece is in, None while more are due, an error (and the partial
/// snapshot dropped) for a piece that does not continue it or bytes that do not decode. Never
/// more of the encoding is held than a few pieces and a node.
async fn add_piece(
    partial: &Partial,
    peer: u64,
    meta: &SnapshotMeta,
    offset: u64,
    total: u64,
    data: Vec<u8>,
) -> Result<Option<Tree>, String> {
    let held = partial.lock().take();
    let continues = |i: &Incoming| i.meta == *meta && i.total == total && i.received == offset;
    let mut incoming = match held {
        _ if offset == 0 => {
            let (tx, rx) = mpsc::channel(PIECES_QUEUED);
            Incoming {
                meta: meta.clone(),
                total,
                received: 0,
                pieces: tx,
                restored: restoring(rx),
                progress: Transfer::new(Dir::Received, peer, upto(meta), Some(total)),
            }
        }
        Some(i) if continues(&i) => i,
        held => {
            return Err(format!(
                "snapshot up to {}: piece at {offset} of {total} does not continue {}",
                upto(meta),
                held.map_or("nothing".to_owned(), |i| format!(
                    "the one up to {} at {} of {}",
                    upto(&i.meta),
                    i.received,
                    i.total
                ))
            ));
        }
    };
    let len = data.len() as u64;
    incoming.received += len;
    incoming.progress.add(len);
    if incoming.received > total {
        return Err(format!(
            "snapshot up to {}: pieces exceed its {total} bytes",
            upto(meta)
        ));
    }
    if incoming.pieces.send(data).await.is_err() {
        // The restorer stopped at bytes that do not decode: its error says why.
        let e = restored(incoming.restored)
            .await
            .err()
            .unwrap_or_else(|| "the restorer stopped".into());
        return Err(format!("snapshot up to {}: {e}", upto(meta)));
    }
    if incoming.received < total {
        // Unless a new snapshot started on this link meanwhile (the sender gave this one up).
        let mut p = partial.lock();
        if p.is_none() {
            *p = Some(incoming);
        }
        return Ok(None);
    }
    let Incoming {
        pieces,
        restored: handle,
        progress,
        ..
    } = incoming;
    drop(pieces);
    let tree = restored(handle)
        .await
        .map_err(|e| format!("snapshot up to {}: {e}", upto(meta)))?;
    tracing::info!(peer, upto = %upto(meta), bytes = total, nodes = tree.node_count(),
        ms = progress.elapsed().as_millis() as u64, "snapshot received in pieces");
    Ok(Some(tree))
}

/// Install a snapshot that arrived whole (one frame) or was restored as its pieces came.
async fn install(n: &RaftBackend, vote: Vote, meta: SnapshotMeta, data: SnapData) -> WireResponse {
    let snapshot = Snapshot {
        meta,
        snapshot: data,
    };
    n.handle_install_snapshot(vote, snapshot)
        .await
        .map_or_else(|e| WireResponse::Error(e.into()), WireResponse::Snapshot)
}

async fn handle(n: &RaftBackend, req: WireRequest, partial: &Partial, peer: u64) -> WireResponse {
    let err = |e: TransportError| WireResponse::Error(e.into());
    match req {
        WireRequest::SnapshotChunk {
            vote,
            meta,
            offset,
            total,
            data,
        } => match add_piece(partial, peer, &meta, offset, total, data).await {
            Ok(None) => WireResponse::SnapshotPart,
            Ok(Some(tree)) => install(n, vote, meta, SnapData::Tree(Box::new(tree))).await,
            Err(e) => {
                tracing::warn!(peer, error = %e, "refusing a snapshot piece; the sender starts over");
                WireResponse::Error(WireError::Remote(e))
            }
        },
        WireRequest::Append(r) => n
            .handle_append_entries(r)
            .await
            .map_or_else(err, WireResponse::Append),
        WireRequest::Vote(r) => n.handle_vote(r).await.map_or_else(err, WireResponse::Vote),
        WireRequest::PreVote(r) => n
            .handle_pre_vote(r)
            .await
            .map_or_else(err, WireResponse::Vote),
        WireRequest::Snapshot { vote, meta, data } => {
            install(n, vote, meta, SnapData::Bytes(data)).await
        }
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
    use crate::storage::tree_of;
    use crate::types::LogId;

    fn meta(index: u64) -> SnapshotMeta {
        SnapshotMeta {
            last_log_id: Some(LogId::new_term_index(1, index)),
            ..SnapshotMeta::default()
        }
    }

    /// Feed `bytes` in pieces of `size`; the outcome of the last, or the first refusal.
    async fn feed(
        p: &Partial,
        m: &SnapshotMeta,
        bytes: &[u8],
        size: usize,
    ) -> Result<Option<Tree>, String> {
        let mut out = Ok(None);
        for (i, piece) in bytes.chunks(size).enumerate() {
            match out {
                Ok(None) => {}
                Ok(Some(_)) => panic!("whole before its last piece"),
                Err(_) => return out,
            }
            out = add(p, m, (i * size) as u64, bytes.len() as u64, piece).await;
        }
        out
    }

    async fn add(
        p: &Partial,
        m: &SnapshotMeta,
        offset: u64,
        total: u64,
        piece: &[u8],
    ) -> Result<Option<Tree>, String> {
        add_piece(p, 1, m, offset, total, piece.to_vec()).await
    }

    /// Pieces are restored as they arrive, in order, into the tree that was sent; anything
    /// else is refused and drops what was held.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn pieces_restore_in_order_and_anything_else_is_refused() {
        let p = Partial::default();
        let (m, other) = (meta(10), meta(20));
        let tree = tree_of(3000);
        let bytes = tree.snapshot();
        let got = feed(&p, &m, &bytes, 7919)
            .await
            .unwrap()
            .expect("whole after the last piece");
        assert_eq!(got.digest(), tree.digest());
        assert!(
            p.lock().is_none(),
            "nothing is held once the snapshot is whole"
        );

        let total = bytes.len() as u64;
        let piece = |i: usize| &bytes[i * 100..(i + 1) * 100];
        // A gap, a repeated piece, another snapshot's piece: refused, and what was held dropped.
        assert!(matches!(add(&p, &m, 0, total, piece(0)).await, Ok(None)));
        assert!(add(&p, &m, 200, total, piece(2)).await.is_err());
        assert!(
            add(&p, &m, 100, total, piece(1)).await.is_err(),
            "dropped after a refusal"
        );
        assert!(matches!(add(&p, &m, 0, total, piece(0)).await, Ok(None)));
        assert!(add(&p, &m, 100, total + 1, piece(1)).await.is_err());
        assert!(matches!(add(&p, &m, 0, total, piece(0)).await, Ok(None)));
        assert!(add(&p, &other, 100, total, piece(1)).await.is_err());
        // A new first piece starts over, whatever was held.
        assert!(matches!(add(&p, &m, 0, total, piece(0)).await, Ok(None)));
        let small = tree_of(3);
        let got = feed(&p, &other, &small.snapshot(), 50)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got.digest(), small.digest());
        // More bytes than announced; bytes that are not a snapshot.
        assert!(add(&p, &m, 0, 50, &bytes[..100]).await.is_err());
        assert!(add(&p, &m, 0, 6, b"abcdef").await.is_err());
        assert!(p.lock().is_none());
        // Bad bytes early in a long transfer: refused by the time the last piece is in at the
        // latest (pieces are answered once queued, so maybe later than the bad one).
        let mut bad = bytes.clone();
        bad[5000..5400].fill(0xff); // longer than a node: it covers lengths, not only data
        assert!(feed(&p, &m, &bad, 1000).await.is_err());
        assert!(p.lock().is_none(), "nothing held after a refusal");
    }
}
