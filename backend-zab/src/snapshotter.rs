//! Periodic snapshots without stalling the pipeline: the caller takes a frozen view of the tree
//! (O(1), `Tree::snapshot_view`) where state and position agree, and a background thread
//! serializes it, saves it and purges the log behind it while writes go on. One snapshot at a
//! time: a request while one is still being written is skipped (the next one comes
//! `snapshot_every` transactions later; until then the log simply grows).

use crate::txnlog::TxnLog;
use parking_lot::{Condvar, Mutex};
use roster_core::tree::snapshot::SnapshotView;
use std::sync::Arc;
use std::time::Instant;

/// Whether a snapshot is being written, and a signal for when it is done.
#[derive(Default)]
struct Busy {
    on: Mutex<bool>,
    idle: Condvar,
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
}

impl Snapshotter {
    pub(crate) fn new(log: TxnLog, retained: usize, inline: bool, sid: u64) -> Snapshotter {
        Snapshotter {
            log,
            retained,
            inline,
            busy: Arc::default(),
            sid,
        }
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
        if self.inline {
            self.write(view);
            return;
        }
        let me = self.clone();
        let spawned = std::thread::Builder::new()
            .name("zab-snapshot".into())
            .spawn(move || me.write(view));
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
