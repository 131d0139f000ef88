//! Socket settings for the links between members.

use std::net::IpAddr;
use std::time::Duration;
use tokio::net::{TcpSocket, TcpStream, ToSocketAddrs};

/// How long dialling a member may take. Without a bound, a connect into a partition waits for
/// the kernel's SYN retries (about two minutes), and after the heal for the next retry (up to
/// half a minute later); bounded, the dialler tries afresh and gets through at once.
pub const PEER_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// How long data sent on a member-to-member link may stay unacknowledged by the peer's kernel
/// before the link is aborted ([`configure_peer_link`]).
pub const PEER_UNACKED_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a member-to-member link may sit idle before its kernel probes the peer, and the
/// pause between probes ([`configure_peer_link`]).
pub const PEER_KEEPALIVE: Duration = Duration::from_secs(1);

/// Set up a member-to-member link, dialled or accepted: `TCP_NODELAY` (member messages are small
/// and wait for their answers), and what makes a partition break the link promptly, whether it
/// carries data or not, so that it is re-dialled and works as soon as the network does:
///
/// - Data sent on it that stays unacknowledged for `unacked` aborts it (Linux
///   `TCP_USER_TIMEOUT`). Without that, a link whose packets the partition dropped stays open
///   and retransmits with exponential backoff: after a 30 s partition the next retransmission
///   can be another 30 s away, so requests on the healed link wait that long. A live peer's
///   kernel acknowledges within milliseconds however busy the process is, as long as its
///   receive buffer has room; a peer that stops reading for the whole timeout while data waits
///   for it (a zero window: megabytes queued, e.g. a snapshot) is aborted as well — checked on
///   Linux 6.18 — so such a link is given up a little sooner than its requests' own deadlines
///   would.
/// - An idle link is probed every [`PEER_KEEPALIVE`] (TCP keepalive), and unanswered probes
///   abort it the same way. Without that, an idle link — a ZAB leader's election link, which
///   it never writes to — outlived a partition in which its peer had dropped its own end, and
///   the peer, which may not dial (the larger id dials), could not reach it again.
pub fn configure_peer_link(
    stream: &tokio::net::TcpStream,
    unacked: Duration,
) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let sock = socket2::SockRef::from(stream);
    let keepalive = socket2::TcpKeepalive::new().with_time(PEER_KEEPALIVE);
    #[cfg(any(target_os = "linux", target_os = "android"))]
    let keepalive = keepalive.with_interval(PEER_KEEPALIVE).with_retries(3);
    sock.set_tcp_keepalive(&keepalive)?;
    #[cfg(any(target_os = "linux", target_os = "android"))]
    sock.set_tcp_user_timeout(Some(unacked))?;
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    let _ = unacked;
    Ok(())
}

/// Dial a member-to-member link to `target`: from `source` when given (the member's own address,
/// so firewall rules and peers' logs tell members apart even when they share a host), within
/// `connect_timeout` (name lookup included), set up by [`configure_peer_link`].
pub async fn dial_peer(
    target: impl ToSocketAddrs,
    source: Option<IpAddr>,
    connect_timeout: Duration,
    unacked_timeout: Duration,
) -> std::io::Result<TcpStream> {
    let dial = async {
        let addr = tokio::net::lookup_host(target)
            .await?
            .find(|a| source.is_none_or(|ip| a.is_ipv4() == ip.is_ipv4()))
            .ok_or_else(|| {
                std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    match source {
                        Some(ip) => format!("no address of the peer matches the source {ip}"),
                        None => "the peer's name resolves to no address".to_owned(),
                    },
                )
            })?;
        let sock = if addr.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        if let Some(ip) = source.filter(|ip| !ip.is_unspecified()) {
            sock.bind(std::net::SocketAddr::new(ip, 0))?;
        }
        sock.connect(addr).await
    };
    let s = tokio::time::timeout(connect_timeout, dial)
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))??;
    configure_peer_link(&s, unacked_timeout)?;
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn dial_peer_binds_the_source_and_bounds_the_connect() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let to = l.local_addr().unwrap();
        let src: IpAddr = "127.0.0.7".parse().unwrap();
        let s = dial_peer(to, Some(src), PEER_CONNECT_TIMEOUT, PEER_UNACKED_TIMEOUT)
            .await
            .unwrap();
        let (_, from) = l.accept().await.unwrap();
        assert_eq!(
            from.ip(),
            src,
            "the link is dialled from the member's own address"
        );
        assert!(s.nodelay().unwrap());
        let sock = socket2::SockRef::from(&s);
        assert!(sock.keepalive().unwrap());
        #[cfg(target_os = "linux")]
        {
            assert_eq!(sock.tcp_user_timeout().unwrap(), Some(PEER_UNACKED_TIMEOUT));
            assert_eq!(sock.tcp_keepalive_time().unwrap(), PEER_KEEPALIVE);
            assert_eq!(sock.tcp_keepalive_interval().unwrap(), PEER_KEEPALIVE);
        }
        // A name that resolves to no address of the source's family is refused, not dialled.
        let v6: IpAddr = "::1".parse().unwrap();
        let e = dial_peer(to, Some(v6), PEER_CONNECT_TIMEOUT, PEER_UNACKED_TIMEOUT)
            .await
            .unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::NotFound);
    }
}
