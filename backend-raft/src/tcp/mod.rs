//! The TCP transport between members: one connection per peer (dialled on demand, re-dialled with
//! exponential backoff after a failure), requests multiplexed on it by id, each frame a 4-byte
//! big-endian length then a postcard body. The dialler opens with a short hello (magic, version,
//! its id) so a wrong port is refused at once. Frames over `max_frame` are refused with a logged
//! error (outgoing: the request fails unsent; incoming: the connection is closed); nothing a peer
//! sends can panic the server. A snapshot goes as one frame when it fits in `snapshot_chunk`,
//! else in pieces of that size, in order, each answered before the next: the frame limit does not
//! bound the snapshot, and appends and votes to the same peer are not queued behind it.
//!
//! `wire` is what travels, `client` the dialling side ([`TcpTransport`]), `server` the receiving
//! side ([`serve`]: it accepts peer connections and hands each request to the local
//! [`RaftBackend`](crate::backend::RaftBackend)'s `handle_*`, answering on the same connection,
//! in any order).

mod client;
mod server;
mod wire;

pub use client::TcpTransport;
pub use server::serve;

use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::mpsc;

/// What a dialler sends first: magic and protocol version, then its id (8 bytes, big-endian).
pub(crate) const HELLO: &[u8; 8] = b"RSTRAFT\x01";
/// Requests a peer may have in flight on one connection before the server stops reading.
pub(crate) const MAX_IN_FLIGHT: usize = 256;

/// Default size of a snapshot piece: big enough that a transfer is not dominated by round
/// trips, small enough that a heartbeat queued behind one piece is late by milliseconds (4 MiB
/// at 1 Gbit/s: ~34 ms).
pub const SNAPSHOT_CHUNK: usize = 4 << 20;

/// Settings of the TCP transport.
#[derive(Debug, Clone)]
pub struct TcpConfig {
    /// Largest frame sent or accepted.
    pub max_frame: usize,
    /// Snapshots larger than this travel in pieces of this size (must be well under
    /// `max_frame`).
    pub snapshot_chunk: usize,
    pub connect_timeout: Duration,
    /// How long an append, vote or forwarded request may go unanswered.
    pub request_timeout: Duration,
    /// How long a snapshot transfer and a membership change may take.
    pub long_timeout: Duration,
    /// First and largest pause before re-dialling a peer that could not be reached.
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// A link whose sent data stays unacknowledged this long is aborted and re-dialled
    /// ([`roster_core::net::configure_peer_link`]).
    pub unacked_timeout: Duration,
    /// Source address of dialled links (the member's own address, so firewall rules, and
    /// peers' logs, can tell members apart even when they share a host). None: the OS picks.
    pub source_ip: Option<std::net::IpAddr>,
}

impl Default for TcpConfig {
    fn default() -> Self {
        TcpConfig {
            max_frame: 512 << 20,
            snapshot_chunk: SNAPSHOT_CHUNK,
            connect_timeout: roster_core::net::PEER_CONNECT_TIMEOUT,
            request_timeout: Duration::from_secs(15),
            long_timeout: crate::backend::SNAPSHOT_TRANSFER_TIMEOUT,
            backoff_min: Duration::from_millis(50),
            backoff_max: Duration::from_secs(2),
            unacked_timeout: roster_core::net::PEER_UNACKED_TIMEOUT,
            source_ip: None,
        }
    }
}

/// `len | id | body` with `len` covering id and body.
pub(crate) fn frame(id: u64, body: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(12 + body.len());
    f.extend_from_slice(&((body.len() + 8) as u32).to_be_bytes());
    f.extend_from_slice(&id.to_be_bytes());
    f.extend_from_slice(body);
    f
}

/// Why reading a frame stopped.
pub(crate) enum ReadEnd {
    Closed,
    Io(std::io::Error),
    TooLarge(usize),
}

pub(crate) async fn read_frame(
    rd: &mut OwnedReadHalf,
    max: usize,
) -> Result<(u64, Vec<u8>), ReadEnd> {
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
pub(crate) async fn write_frames(mut wr: OwnedWriteHalf, mut rx: mpsc::Receiver<Vec<u8>>) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use wire::WireResponse;

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
