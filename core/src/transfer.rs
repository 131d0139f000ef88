//! Progress of a snapshot travelling between members. A large one takes seconds to minutes
//! (a gigabyte at a gigabit is 8 s before it is restored), and a member catching up is what an
//! operator watches: so the bytes are counted in `roster_backend_snapshot_bytes_total{dir}` as
//! they go, and the transfer is logged at most every [`LOG_EVERY`] while it lasts, not only at
//! its end.

use std::time::{Duration, Instant};

/// How often a transfer in progress is logged.
pub const LOG_EVERY: Duration = Duration::from_secs(5);

/// Which way a transfer goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    Sent,
    Received,
}

impl Dir {
    fn label(self) -> &'static str {
        match self {
            Dir::Sent => "sent",
            Dir::Received => "received",
        }
    }
}

/// Make both directions' series exist from the start (at 0), so a rate over them reads 0 rather
/// than nothing until a first transfer. Called by members (not by a standalone server).
pub fn register() {
    for dir in [Dir::Sent, Dir::Received] {
        metrics::counter!("roster_backend_snapshot_bytes_total", "dir" => dir.label()).increment(0);
    }
}

/// One snapshot transfer's progress.
pub struct Transfer {
    dir: Dir,
    peer: u64,
    /// What the snapshot covers (a zxid, a log index), for the log.
    upto: String,
    total: Option<u64>,
    done: u64,
    started: Instant,
    logged: Instant,
    bytes: metrics::Counter,
}

impl Transfer {
    /// A transfer to or from `peer` of the snapshot up to `upto`, of `total` bytes if known.
    pub fn new(dir: Dir, peer: u64, upto: String, total: Option<u64>) -> Transfer {
        let now = Instant::now();
        Transfer {
            dir,
            peer,
            upto,
            total,
            done: 0,
            started: now,
            logged: now,
            bytes: metrics::counter!("roster_backend_snapshot_bytes_total", "dir" => dir.label()),
        }
    }

    /// `n` more bytes went; logs the progress if it was last logged [`LOG_EVERY`] ago.
    pub fn add(&mut self, n: u64) {
        self.bytes.increment(n);
        if self.advance(n, Instant::now()) {
            let mib = |b: u64| (b as f64 / f64::from(1 << 20) * 10.0).round() / 10.0;
            tracing::info!(
                dir = self.dir.label(),
                peer = self.peer,
                upto = %self.upto,
                mib = mib(self.done),
                of_mib = self.total.map(mib),
                secs = self.started.elapsed().as_secs(),
                "snapshot transfer in progress"
            );
        }
    }

    /// Bytes so far.
    pub fn done(&self) -> u64 {
        self.done
    }

    /// Time since the transfer started.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Count `n` bytes at `now`; whether a progress line is due.
    fn advance(&mut self, n: u64, now: Instant) -> bool {
        self.done += n;
        if now.duration_since(self.logged) < LOG_EVERY {
            return false;
        }
        self.logged = now;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_transfer_is_reported_every_interval_and_counts_every_byte() {
        let mut t = Transfer::new(Dir::Sent, 2, "0x1".into(), Some(100));
        let t0 = t.started;
        assert!(!t.advance(10, t0 + Duration::from_secs(1)), "too soon");
        assert!(t.advance(10, t0 + LOG_EVERY), "due after the interval");
        assert!(!t.advance(10, t0 + LOG_EVERY + Duration::from_secs(4)));
        assert!(t.advance(10, t0 + LOG_EVERY * 2 + Duration::from_secs(1)));
        assert_eq!(t.done(), 40);
    }
}
