//! Who is connected: connections (for `cons`/`stat`), which connection holds each session (a
//! reconnect elsewhere closes the old one), per-IP connection counts, and server counters.

use parking_lot::Mutex;
use roster_core::SessionId;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Instant;
use tokio::sync::Notify;

/// A connection id (also its watcher id).
pub type ConnId = u64;

/// Live counters of one connection.
pub struct ConnStats {
    pub id: ConnId,
    pub peer: SocketAddr,
    pub session: AtomicI64,
    pub timeout_ms: AtomicI64,
    pub received: AtomicU64,
    pub sent: AtomicU64,
    pub outstanding: AtomicU64,
    /// Frames queued for the socket and not yet written.
    pub queued: AtomicU64,
    pub last_zxid: AtomicI64,
    pub started: Instant,
    /// Tells the connection to close (session expired or moved).
    pub kill: Notify,
}

/// Server-wide request counters (as ZooKeeper's `ServerStats`).
#[derive(Default)]
pub struct ServerStats {
    pub packets_received: AtomicU64,
    pub packets_sent: AtomicU64,
    pub requests: AtomicU64,
    pub latency_total_us: AtomicU64,
    pub latency_max_us: AtomicU64,
    pub latency_min_us: AtomicU64,
}

impl ServerStats {
    pub fn record_latency(&self, us: u64) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.latency_total_us.fetch_add(us, Ordering::Relaxed);
        self.latency_max_us.fetch_max(us, Ordering::Relaxed);
        let min = self.latency_min_us.load(Ordering::Relaxed);
        if min == 0 || us < min {
            self.latency_min_us.store(us.max(1), Ordering::Relaxed);
        }
    }

    /// (min, avg, max) in ms, as `srvr` prints them.
    pub fn latency_ms(&self) -> (f64, f64, f64) {
        let n = self.requests.load(Ordering::Relaxed);
        let avg = if n == 0 {
            0.0
        } else {
            self.latency_total_us.load(Ordering::Relaxed) as f64 / n as f64 / 1000.0
        };
        (
            self.latency_min_us.load(Ordering::Relaxed) as f64 / 1000.0,
            avg,
            self.latency_max_us.load(Ordering::Relaxed) as f64 / 1000.0,
        )
    }

    pub fn reset(&self) {
        for a in [
            &self.packets_received,
            &self.packets_sent,
            &self.requests,
            &self.latency_total_us,
            &self.latency_max_us,
            &self.latency_min_us,
        ] {
            a.store(0, Ordering::Relaxed);
        }
    }
}

/// All connections of the ZooKeeper front end.
#[derive(Default)]
pub struct Registry {
    next: AtomicU64,
    conns: Mutex<HashMap<ConnId, Arc<ConnStats>>>,
    by_session: Mutex<HashMap<SessionId, Arc<ConnStats>>>,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    pub stats: ServerStats,
}

impl Registry {
    /// Admit a new connection, unless `peer`'s IP already has `limit` (0 = no limit).
    pub fn open(&self, peer: SocketAddr, limit: usize) -> Option<Arc<ConnStats>> {
        {
            let mut ips = self.per_ip.lock();
            let n = ips.entry(peer.ip()).or_default();
            if limit > 0 && *n >= limit {
                return None;
            }
            *n += 1;
        }
        let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let c = Arc::new(ConnStats {
            id,
            peer,
            session: AtomicI64::new(0),
            timeout_ms: AtomicI64::new(0),
            received: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            outstanding: AtomicU64::new(0),
            queued: AtomicU64::new(0),
            last_zxid: AtomicI64::new(0),
            started: Instant::now(),
            kill: Notify::new(),
        });
        self.conns.lock().insert(id, c.clone());
        metrics::gauge!("roster_connections", "protocol" => "zookeeper").increment(1.0);
        Some(c)
    }

    /// Bind a session to a connection; a previous connection holding it is told to close.
    pub fn bind(&self, session: SessionId, conn: &Arc<ConnStats>) {
        conn.session.store(session, Ordering::Relaxed);
        if let Some(prev) = self.by_session.lock().insert(session, conn.clone())
            && prev.id != conn.id
        {
            tracing::info!(
                session = format!("{session:#x}"),
                old = prev.id,
                new = conn.id,
                "session moved to a new connection; closing the old one"
            );
            prev.kill.notify_one();
        }
    }

    /// Detach a session from its connection (before the client's own close).
    pub fn unbind(&self, session: SessionId, conn: ConnId) {
        let mut m = self.by_session.lock();
        if m.get(&session).is_some_and(|c| c.id == conn) {
            m.remove(&session);
        }
    }

    /// The session was closed or expired: close its connection.
    pub fn session_closed(&self, session: SessionId) {
        if let Some(c) = self.by_session.lock().remove(&session) {
            c.kill.notify_one();
        }
    }

    /// Forget a connection.
    pub fn close(&self, conn: &Arc<ConnStats>) {
        self.conns.lock().remove(&conn.id);
        let s = conn.session.load(Ordering::Relaxed);
        if s != 0 {
            self.unbind(s, conn.id);
        }
        let mut ips = self.per_ip.lock();
        if let Some(n) = ips.get_mut(&conn.peer.ip()) {
            *n -= 1;
            if *n == 0 {
                ips.remove(&conn.peer.ip());
            }
        }
        metrics::gauge!("roster_connections", "protocol" => "zookeeper").decrement(1.0);
    }

    /// Current connections.
    pub fn connections(&self) -> Vec<Arc<ConnStats>> {
        let mut v: Vec<_> = self.conns.lock().values().cloned().collect();
        v.sort_by_key(|c| c.id);
        v
    }

    /// Sessions bound to a connection here.
    pub fn session_count(&self) -> usize {
        self.by_session.lock().len()
    }
}
