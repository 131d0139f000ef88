//! Socket settings for the links between members.

use std::time::Duration;

/// How long data sent on a member-to-member link may stay unacknowledged by the peer's kernel
/// before the link is aborted ([`abort_unacked_after`]).
pub const PEER_UNACKED_TIMEOUT: Duration = Duration::from_secs(5);

/// Abort the connection when data sent on it stays unacknowledged for `after` (Linux
/// `TCP_USER_TIMEOUT`; elsewhere nothing). Without it a link whose packets were dropped by a
/// partition stays open and retransmits with exponential backoff: after a 30 s partition the
/// next retransmission can be another 30 s away, so requests on the healed link wait that long.
/// Aborted, the link is re-dialled, which succeeds as soon as the network does. A live peer's
/// kernel acknowledges within milliseconds however busy the process is, as long as its receive
/// buffer has room; a peer that stops reading for the whole timeout while data waits for it
/// (a zero window: megabytes queued, e.g. a snapshot) is aborted as well — checked on Linux
/// 6.18 — which its requests' own timeouts would treat as lost anyway.
pub fn abort_unacked_after(stream: &tokio::net::TcpStream, after: Duration) -> std::io::Result<()> {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        socket2::SockRef::from(stream).set_tcp_user_timeout(Some(after))
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    {
        let _ = (stream, after);
        Ok(())
    }
}
