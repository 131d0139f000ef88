//! Periodic snapshots without stalling the pipeline: the caller takes a frozen view of the tree
//! (O(1), `Tree::snapshot_view`) where state and position agree, and a background thread
//! serializes it, saves it and purges the log behind it while writes go on. One snapshot at a
//! time: a request while one is still being written is skipped (the next one comes
//! `snapshot_every` transactions later; until then the log simply grows). When one is due is
//! [`SnapshotPolicy`]'s decision.

use crate::txnlog::TxnLog;
use parking_lot::{Condvar, Mutex};
use roster_core::tree::snapshot::SnapshotView;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// When a snapshot is due: after `every` transactions, once the log written since the last
/// snapshot is at least `log_ratio` times that snapshot's size — and in any case after
/// [`SnapshotPolicy::DEFER_LIMIT`] × `every` transactions.
///
/// A snapshot writes the whole tree, so with a count alone its cost per transaction grows with
/// the tree: under a `create` load of 256-byte nodes on half a million nodes, a 175 MB
/// snapshot every two seconds took ~40 % of a core and a quarter of the throughput (measured,
/// docs/benchmarks.md). What a snapshot buys is a shorter log to replay at start; the ratio
/// takes one only when the log it shortens is comparable in size to what it writes (bounded
/// write amplification, as an LSM compaction or Redis's AOF rewrite decides), and the limit
/// bounds the number of small transactions (deletes, say) replayed at start. `log_ratio` 0 is
/// ZooKeeper's rule (`snapCount`): the count alone.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SnapshotPolicy {
    pub every: u64,
    pub log_ratio: f64,
}

impl Default for SnapshotPolicy {
    fn default() -> Self {
        SnapshotPolicy {
            every: 100_000,
            log_ratio: 1.0,
        }
    }
}

impl SnapshotPolicy {
    /// A snapshot is taken at the latest after this many times `every` transactions.
    pub const DEFER_LIMIT: u64 = 10;

    /// ZooKeeper's rule: every `every` transactions.
    pub fn count(every: u64) -> SnapshotPolicy {
        SnapshotPolicy {
            every,
            log_ratio: 0.0,
        }
    }

    /// Whether to snapshot after `txns` transactions and `log_bytes` of log since the last
    /// snapshot, which was `last_snapshot_bytes` long (0: none taken since start).
    pub fn due(&self, txns: u64, log_bytes: u64, last_snapshot_bytes: u64) -> bool {
        if txns < self.every {
            return false;
        }
        txns >= self.every.saturating_mul(Self::DEFER_LIMIT)
            || log_bytes as f64 >= self.log_ratio * last_snapshot_bytes as f64
    }
}

/// The snapshot thread's nice value (0 is normal, 19 the lowest). Serializing a few hundred
/// thousand nodes keeps a core busy for a second or more; at normal priority on a 2-core machine
/// that came out of the request threads' share, and every snapshot showed as a latency spike
/// (`create` p99 of 100 ms windows up to 90 ms, once per `snapshot_every` transactions). At 10 the
/// scheduler gives it about a tenth of a contended core, and all of an idle one.
const SNAPSHOT_NICE: i32 = 10;

/// Lower the calling thread's priority to [`SNAPSHOT_NICE`] unless it already runs lower (Linux;
/// elsewhere a no-op).
fn yield_to_requests(sid: u64) {
    #[cfg(target_os = "linux")]
    {
        let tid = thread_id();
        // SAFETY: syscalls about one thread of this process; no memory is passed to them.
        let now = unsafe { libc::getpriority(libc::PRIO_PROCESS, tid) };
        if now >= SNAPSHOT_NICE {
            return;
        }
        // SAFETY: as above.
        let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, tid, SNAPSHOT_NICE) };
        if rc != 0 {
            tracing::debug!(sid, error = %std::io::Error::last_os_error(),
                "cannot lower the snapshot thread's priority; it runs at normal priority");
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = sid;
}

#[cfg(target_os = "linux")]
fn thread_id() -> libc::id_t {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::gettid() as libc::id_t }
}

/// Whether a snapshot is being written, and a signal for when it is done; and what the policy
/// needs to know of the last one.
#[derive(Default)]
struct Busy {
    on: Mutex<bool>,
    idle: Condvar,
    /// Size of the last snapshot written since start (0: none yet).
    last_bytes: AtomicU64,
    /// The log's [`TxnLog::logged_bytes`] when the last snapshot was taken.
    log_mark: AtomicU64,
}

#[derive(Clone)]
pub(crate) struct Snapshotter {
    log: TxnLog,
    retained: usize,
    /// Write on the calling thread (the deterministic simulations); otherwise on a thread.
    inline: bool,
    busy: Arc<Busy>,
    /// For logs: which member this is.
    sid: u64,
    policy: SnapshotPolicy,
}

impl Snapshotter {
    pub(crate) fn new(
        log: TxnLog,
        retained: usize,
        inline: bool,
        sid: u64,
        policy: SnapshotPolicy,
    ) -> Snapshotter {
        Snapshotter {
            log,
            retained,
            inline,
            busy: Arc::default(),
            sid,
            policy,
        }
    }

    /// Whether a snapshot is due `txns` transactions after the last one (see
    /// [`SnapshotPolicy`]).
    pub(crate) fn due(&self, txns: u64) -> bool {
        let logged = self
            .log
            .logged_bytes()
            .saturating_sub(self.busy.log_mark.load(Ordering::Relaxed));
        self.policy
            .due(txns, logged, self.busy.last_bytes.load(Ordering::Relaxed))
    }

    /// Wait until no snapshot is being written. A member calls this before it rewrites its
    /// history (TRUNC, or a leader's SNAP replacing everything): a snapshot of the old history
    /// still being written would otherwise land after the rewrite, and a restart would load it.
    pub(crate) fn wait_idle(&self) {
        let t0 = Instant::now();
        let mut on = self.busy.on.lock();
        while *on {
            self.busy.idle.wait(&mut on);
        }
        drop(on);
        let waited = t0.elapsed();
        if waited.as_millis() > 0 {
            tracing::info!(
                sid = self.sid,
                ms = waited.as_millis() as u64,
                "waited for a snapshot in progress before rewriting the log"
            );
        }
    }

    /// Snapshot `view` (taken from the tree's applied, hence committed, state).
    pub(crate) fn take(&self, view: SnapshotView) {
        if std::mem::replace(&mut *self.busy.on.lock(), true) {
            tracing::info!(
                sid = self.sid,
                zxid = format!("{:#x}", view.last_zxid()),
                "previous snapshot still being written; this one is skipped"
            );
            metrics::counter!("roster_backend_snapshots_skipped_total").increment(1);
            return;
        }
        self.busy
            .log_mark
            .store(self.log.logged_bytes(), Ordering::Relaxed);
        // The log written from here on goes to a new file, which the purge after the next
        // snapshots can remove whole.
        self.log.roll();
        if self.inline {
            self.write(view);
            return;
        }
        let me = self.clone();
        let spawned = std::thread::Builder::new()
            .name("zab-snapshot".into())
            .spawn(move || {
                yield_to_requests(me.sid);
                me.write(view)
            });
        if let Err(e) = spawned {
            tracing::warn!(sid = self.sid, error = %e, "cannot start the snapshot thread; snapshot skipped");
            self.done();
        }
    }

    fn write(&self, view: SnapshotView) {
        let t0 = Instant::now();
        let zxid = view.last_zxid();
        let nodes = view.node_count();
        let saved = self.log.save_view(&view);
        drop(view);
        let mut size = 0;
        let res = saved.and_then(|n| {
            size = n;
            self.busy.last_bytes.store(n, Ordering::Relaxed);
            self.log.purge(self.retained)
        });
        metrics::histogram!("roster_backend_snapshot_seconds").record(t0.elapsed().as_secs_f64());
        match res {
            Ok(()) => {
                metrics::counter!("roster_backend_snapshots_total").increment(1);
                tracing::info!(
                    sid = self.sid,
                    zxid = format!("{zxid:#x}"),
                    nodes,
                    bytes = size,
                    ms = t0.elapsed().as_millis() as u64,
                    "snapshot taken"
                )
            }
            Err(e) => {
                tracing::warn!(sid = self.sid, error = %e, zxid = format!("{zxid:#x}"), "snapshot failed; the log is kept")
            }
        }
        self.done();
    }

    fn done(&self) {
        *self.busy.on.lock() = false;
        self.busy.idle.notify_all();
    }
}

#[cfg(test)]
mod policy_tests {
    use super::SnapshotPolicy;

    #[test]
    fn a_snapshot_is_due_by_count_then_by_log_size_and_at_the_latest_by_ten_counts() {
        let p = SnapshotPolicy {
            every: 100,
            log_ratio: 1.0,
        };
        assert!(!p.due(99, u64::MAX, 0), "never before `every`");
        assert!(p.due(100, 0, 0), "no snapshot yet: the count decides");
        assert!(!p.due(100, 999, 1000), "log smaller than the last snapshot");
        assert!(p.due(100, 1000, 1000), "log as large as the last snapshot");
        assert!(!p.due(999, 0, 1000));
        assert!(p.due(1000, 0, 1000), "ten times `every` whatever the log");
        let half = SnapshotPolicy {
            log_ratio: 0.5,
            ..p
        };
        assert!(half.due(100, 500, 1000));
        assert!(!half.due(100, 499, 1000));
        let zk = SnapshotPolicy::count(100);
        assert!(zk.due(100, 0, u64::MAX), "ratio 0: the count alone");
        assert!(!zk.due(99, 0, 0));
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    fn nice() -> i32 {
        // SAFETY: as in yield_to_requests.
        unsafe { libc::getpriority(libc::PRIO_PROCESS, thread_id()) }
    }

    #[test]
    fn yield_to_requests_lowers_only_the_calling_thread() {
        let here = nice();
        let (before, after) = std::thread::spawn(|| {
            let before = nice();
            yield_to_requests(0);
            (before, nice())
        })
        .join()
        .unwrap();
        assert_eq!(after, before.max(SNAPSHOT_NICE));
        assert_eq!(nice(), here, "only the snapshot thread is lowered");
    }
}
