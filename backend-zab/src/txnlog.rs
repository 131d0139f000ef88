//! The transaction log and snapshots. On a server the log is a directory of segment files of
//! its own ([`LogFiles`]) and snapshots are files in another ([`SnapshotFiles`]); without
//! directories (the in-memory engines of the simulations) both live in the storage engine: `Log`
//! holds one entry per zxid (big-endian key, so order is zxid order), `Snapshot` the snapshots
//! keyed by the zxid they include. `Meta` holds the epochs in either case. A log that an older
//! version kept in the engine is moved into the files when they are opened; snapshots it left in
//! the engine are still read, and purged like the others.

use crate::segments::LogFiles;
pub use crate::segments::Staged;
use roster_core::Zxid;
use roster_core::snapfiles::SnapshotFiles;
use roster_core::storage::{Engine, Space, StorageError, WriteBatch};
use roster_core::tree::Tree;
use roster_core::tree::snapshot::SnapshotView;
use roster_core::txn::Txn;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

const CURRENT_EPOCH: &[u8] = b"current_epoch";
const ACCEPTED_EPOCH: &[u8] = b"accepted_epoch";

fn key(zxid: Zxid) -> [u8; 8] {
    (zxid as u64).to_be_bytes()
}

fn zxid_of(key: &[u8]) -> Result<Zxid, StorageError> {
    let b: [u8; 8] = key
        .try_into()
        .map_err(|_| StorageError(format!("bad log key {key:?}")))?;
    Ok(u64::from_be_bytes(b) as Zxid)
}

/// Lets postcard encode onto the end of a borrowed buffer.
struct Append<'a>(&'a mut Vec<u8>);

impl Extend<u8> for Append<'_> {
    fn extend<I: IntoIterator<Item = u8>>(&mut self, bytes: I) {
        self.0.extend(bytes);
    }
}

/// Whether `next` may directly follow `prev` in a log: the next counter of the same epoch, or
/// the first of a later epoch (each epoch's first proposal is counter 1, and a failed request
/// takes no zxid). From `prev` 0 (no state yet) that is any epoch's first.
pub fn follows(prev: Zxid, next: Zxid) -> bool {
    next == prev + 1 || (next >> 32 > prev >> 32 && next & 0xffff_ffff == 1)
}

/// What [`TxnLog::recover`] rebuilt.
pub struct Recovered {
    pub tree: Tree,
    /// The zxid of the snapshot it started from, if any.
    pub snapshot: Option<Zxid>,
    /// Transactions replayed from the log after it.
    pub replayed: u64,
}

/// Log and snapshot store over an engine.
#[derive(Clone)]
pub struct TxnLog {
    engine: Arc<dyn Engine>,
    files: Option<Arc<SnapshotFiles>>,
    /// The log's own files; `None`: the log is in the engine.
    segments: Option<Arc<LogFiles>>,
    /// Bytes of log entries committed through this log since it was opened (all clones).
    logged: Arc<AtomicU64>,
}

fn io_err(e: std::io::Error) -> StorageError {
    StorageError(format!("snapshot file: {e}"))
}

fn log_err(e: std::io::Error) -> StorageError {
    StorageError(format!("transaction log: {e}"))
}

/// How many entries of an engine-kept log are moved into the files per synced write.
const MOVE_BATCH: usize = 4096;

impl TxnLog {
    /// Log and snapshots in `engine` alone.
    pub fn new(engine: Arc<dyn Engine>) -> TxnLog {
        TxnLog {
            engine,
            files: None,
            segments: None,
            logged: Arc::default(),
        }
    }

    /// Snapshots as files in `snapshot_dir` and the log as files in `log_dir` when given, else
    /// each in `engine`.
    pub fn open(
        engine: Arc<dyn Engine>,
        snapshot_dir: Option<&Path>,
        log_dir: Option<&Path>,
    ) -> Result<TxnLog, StorageError> {
        let files = match snapshot_dir {
            Some(dir) => Some(Arc::new(SnapshotFiles::open(dir).map_err(|e| {
                StorageError(format!("snapshot directory {}: {e}", dir.display()))
            })?)),
            None => None,
        };
        let segments = match log_dir {
            Some(dir) => Some(Arc::new(LogFiles::open(dir).map_err(|e| {
                StorageError(format!("transaction log directory {}: {e}", dir.display()))
            })?)),
            None => None,
        };
        let log = TxnLog {
            engine,
            files,
            segments,
            logged: Arc::default(),
        };
        if let Some(seg) = &log.segments {
            log.move_engine_log(seg)?;
        }
        Ok(log)
    }

    /// Move a log an older version kept in the engine into the files: append what the files do
    /// not have yet (synced), then delete it from the engine. A crash in between leaves both,
    /// and the next open appends nothing twice.
    fn move_engine_log(&self, seg: &LogFiles) -> Result<(), StorageError> {
        let Some((last, _)) = self.engine.last(Space::Log)? else {
            return Ok(());
        };
        let last = zxid_of(&last)?;
        let have = seg.last().unwrap_or(0);
        let mut moved = 0u64;
        let mut staged = Staged::default();
        let mut n = 0;
        let mut failed = None;
        self.engine
            .scan(Space::Log, &key(have.saturating_add(1)), &mut |k, v| {
                let z = match zxid_of(k) {
                    Ok(z) => z,
                    Err(e) => {
                        failed = Some(e);
                        return false;
                    }
                };
                staged.push(z, |b| b.extend_from_slice(v));
                n += 1;
                if n == MOVE_BATCH {
                    if let Err(e) = seg.append(&staged) {
                        failed = Some(log_err(e));
                        return false;
                    }
                    moved += n as u64;
                    n = 0;
                    staged.clear();
                }
                true
            })?;
        if let Some(e) = failed {
            return Err(e);
        }
        seg.append(&staged).map_err(log_err)?;
        moved += n as u64;
        let mut b = WriteBatch::default();
        b.delete_range(Space::Log, key(0), key(i64::MAX));
        self.engine.write(b, true)?;
        tracing::info!(
            moved,
            last_zxid = format!("{last:#x}"),
            "moved the transaction log from the storage engine into log files"
        );
        Ok(())
    }

    /// Replace what `staged` holds with the log records for `txns`, each encoded in place in
    /// its one buffer. The caller keeps `staged` from batch to batch: its buffer is allocated
    /// once, not grown by reallocation for every batch (under `delete`, with the heap full of
    /// freed nodes, those reallocations were ~7 % of the sync thread's time).
    pub fn stage(staged: &mut Staged, txns: &[Arc<Txn>]) {
        staged.clear();
        for t in txns {
            staged.push(t.zxid, |buf| {
                postcard::to_extend(&**t, Append(buf)).expect("txn serializes");
            });
        }
    }

    /// Write staged records and sync them.
    pub fn commit(&self, staged: &Staged) -> Result<(), StorageError> {
        let bytes = staged.bytes() as u64;
        match &self.segments {
            Some(seg) => seg.append(staged).map_err(log_err)?,
            None => {
                let mut batch = WriteBatch::default();
                for (z, payload) in staged.records() {
                    batch.put(Space::Log, key(z), payload);
                }
                self.engine.write(batch, true)?;
            }
        }
        self.logged.fetch_add(bytes, Ordering::Relaxed);
        Ok(())
    }

    /// Start a new log file with the next write (a snapshot is being taken), so that a purge
    /// removes whole files. No-op for a log in the engine.
    pub fn roll(&self) {
        if let Some(seg) = &self.segments {
            seg.roll();
        }
    }

    /// Bytes of log records committed since the log was opened (headers and encoded txns).
    pub fn logged_bytes(&self) -> u64 {
        self.logged.load(Ordering::Relaxed)
    }

    /// Visit every logged txn with zxid > `after`, in order.
    pub fn replay_after(&self, after: Zxid, f: &mut dyn FnMut(Txn)) -> Result<u64, StorageError> {
        let mut n = 0;
        let mut bad = None;
        let mut visit = |z: Zxid, v: &[u8]| match postcard::from_bytes::<Txn>(v) {
            Ok(t) if z == t.zxid => {
                f(t);
                n += 1;
                true
            }
            _ => {
                bad = Some(format!("corrupt log entry at zxid {z:#x}"));
                false
            }
        };
        let mut bad_key = None;
        match &self.segments {
            Some(seg) => seg.scan_after(after, &mut visit).map_err(log_err)?,
            None => self
                .engine
                .scan(
                    Space::Log,
                    &key(after.saturating_add(1)),
                    &mut |k, v| match zxid_of(k) {
                        Ok(z) => visit(z, v),
                        Err(e) => {
                            bad_key = Some(e.0);
                            false
                        }
                    },
                )?,
        }
        match bad.or(bad_key) {
            Some(e) => Err(StorageError(e)),
            None => Ok(n),
        }
    }

    /// Visit, in order, the logged txns with `after` < zxid ≤ `upto` as long as each [`follows`]
    /// the one before (the first, `after`); stop at the first that does not and return where the
    /// gap is, beside the number visited. Recovery and a leader's DIFF both read the log this
    /// way: a txn past a gap would otherwise be applied or sent without the ones in between.
    pub fn replay_contiguous(
        &self,
        after: Zxid,
        upto: Zxid,
        f: &mut dyn FnMut(Txn),
    ) -> Result<(u64, Option<(Zxid, Zxid)>), StorageError> {
        let (mut prev, mut visited, mut gap) = (after, 0, None);
        self.replay_after(after, &mut |t: Txn| {
            if gap.is_some() || t.zxid > upto {
                return;
            }
            if !follows(prev, t.zxid) {
                gap = Some((prev, t.zxid));
                return;
            }
            prev = t.zxid;
            visited += 1;
            f(t);
        })?;
        Ok((visited, gap))
    }

    /// Rebuild the state: the newest snapshot that loads, then every logged transaction after
    /// it. The log must continue the snapshot without a gap, and itself have none: a missing
    /// segment, or a snapshot older than the log's start because the newer ones are damaged
    /// (or no snapshot at all), would otherwise recover a tree without the transactions in
    /// between — silently wrong. That is an error, as ZooKeeper refuses to start on log entries
    /// with no snapshot under them.
    pub fn recover(&self) -> Result<Recovered, StorageError> {
        let (snapshot, mut tree) = match self.latest_tree()? {
            Some((z, t)) => (Some(z), t),
            None => (None, Tree::new()),
        };
        let (replayed, gap) =
            self.replay_contiguous(tree.last_zxid(), Zxid::MAX, &mut |t: Txn| {
                tree.apply(&t);
            })?;
        if let Some((before, after)) = gap {
            let base = match snapshot {
                Some(z) => format!("the snapshot {z:#x}"),
                None => "no snapshot (none found, or none that loads)".to_string(),
            };
            return Err(StorageError(format!(
                "the transaction log has a gap: recovering from {base}, zxid {before:#x} is \
                 followed by {after:#x}; the transactions between are missing (a log segment or \
                 snapshot removed or damaged). A member of an ensemble: move its data directory \
                 away and start it again, and it copies the state from the leader; alone: \
                 restore the directory from a backup"
            )));
        }
        Ok(Recovered {
            tree,
            snapshot,
            replayed,
        })
    }

    /// Last logged zxid, if any.
    pub fn last_logged(&self) -> Result<Option<Zxid>, StorageError> {
        if let Some(seg) = &self.segments {
            return Ok(seg.last());
        }
        self.engine
            .last(Space::Log)?
            .map(|(k, _)| zxid_of(&k))
            .transpose()
    }

    /// Store a snapshot of `view`, streamed into its file when snapshots are files. Returns its
    /// size in bytes.
    pub fn save_view(&self, view: &SnapshotView) -> Result<u64, StorageError> {
        if let Some(f) = &self.files {
            return f.write_view(view).map_err(io_err);
        }
        let bytes = view.encode();
        let n = bytes.len() as u64;
        let mut b = WriteBatch::default();
        b.put(Space::Snapshot, key(view.last_zxid()), bytes);
        self.engine.write(b, true)?;
        Ok(n)
    }

    /// The zxids of the snapshots kept in the engine, oldest first.
    fn engine_snapshots(&self) -> Result<Vec<Zxid>, StorageError> {
        let mut snaps = Vec::new();
        self.engine.scan(Space::Snapshot, &[], &mut |k, _| {
            if let Ok(z) = zxid_of(k) {
                snaps.push(z);
            }
            true
        })?;
        Ok(snaps)
    }

    /// The newest snapshot, restored. A snapshot file is restored as it is read, never held
    /// whole in memory beside the tree it becomes; one kept in the engine (by an older version)
    /// is used if it is newer.
    pub fn latest_tree(&self) -> Result<Option<(Zxid, Tree)>, StorageError> {
        let in_files = match &self.files {
            Some(f) => f.latest_tree().map_err(io_err)?,
            None => None,
        };
        let in_engine = match self.engine.last(Space::Snapshot)? {
            Some((k, v)) => Some((zxid_of(&k)?, v)),
            None => None,
        };
        match (in_engine, in_files) {
            (Some((z, bytes)), f) if f.as_ref().is_none_or(|(fz, _)| *fz < z) => {
                let tree = Tree::restore(&bytes)
                    .map_err(|e| StorageError(format!("snapshot {z:#x} in the engine: {e}")))?;
                Ok(Some((z, tree)))
            }
            (_, f) => Ok(f),
        }
    }

    /// Keep the newest `keep` snapshots, and the log after the oldest of them.
    pub fn purge(&self, keep: usize) -> Result<(), StorageError> {
        let mut snaps = self.engine_snapshots()?;
        if let Some(f) = &self.files {
            snaps.extend(f.list().map_err(io_err)?);
            snaps.sort_unstable();
        }
        if snaps.len() <= keep.max(1) {
            return Ok(());
        }
        let cut = snaps.len() - keep.max(1);
        let oldest_kept = snaps[cut];
        let mut b = WriteBatch::default();
        b.delete_range(Space::Snapshot, key(0), key(oldest_kept));
        b.delete_range(Space::Log, key(0), key(oldest_kept.saturating_add(1)));
        self.engine.write(b, true)?;
        if let Some(seg) = &self.segments {
            seg.purge_through(oldest_kept).map_err(log_err)?;
        }
        if let Some(f) = &self.files {
            f.remove_where(|z| z < oldest_kept).map_err(io_err)?;
        }
        Ok(())
    }

    /// Drop every logged txn after `zxid` (ZAB TRUNC).
    pub fn truncate_after(&self, zxid: Zxid) -> Result<(), StorageError> {
        if let Some(seg) = &self.segments {
            seg.truncate_after(zxid).map_err(log_err)?;
        }
        let mut b = WriteBatch::default();
        b.delete_range(Space::Log, key(zxid.saturating_add(1)), key(i64::MAX));
        b.delete_range(Space::Snapshot, key(zxid.saturating_add(1)), key(i64::MAX));
        self.engine.write(b, true)?;
        if let Some(f) = &self.files {
            f.remove_where(|z| z > zxid).map_err(io_err)?;
        }
        Ok(())
    }

    /// Drop the whole log and every snapshot (before installing a leader's snapshot).
    pub fn clear(&self) -> Result<(), StorageError> {
        if let Some(seg) = &self.segments {
            seg.clear().map_err(log_err)?;
        }
        let mut b = WriteBatch::default();
        b.delete_range(Space::Log, key(0), key(i64::MAX));
        b.delete_range(Space::Snapshot, key(0), key(i64::MAX));
        self.engine.write(b, true)?;
        if let Some(f) = &self.files {
            f.remove_where(|_| true).map_err(io_err)?;
        }
        Ok(())
    }

    /// Is `zxid` in the log?
    pub fn contains(&self, zxid: Zxid) -> Result<bool, StorageError> {
        if let Some(seg) = &self.segments {
            return Ok(seg.floor(zxid).map_err(log_err)? == Some(zxid));
        }
        Ok(self.engine.get(Space::Log, &key(zxid))?.is_some())
    }

    /// The largest logged zxid `<= zxid`, if the log reaches back that far.
    pub fn floor(&self, zxid: Zxid) -> Result<Option<Zxid>, StorageError> {
        if let Some(seg) = &self.segments {
            return seg.floor(zxid).map_err(log_err);
        }
        let mut best = None;
        self.engine
            .scan(Space::Log, &key(0), &mut |k, _| match zxid_of(k) {
                Ok(z) if z <= zxid => {
                    best = Some(z);
                    true
                }
                _ => false,
            })?;
        Ok(best)
    }

    /// The first logged zxid.
    pub fn first_logged(&self) -> Result<Option<Zxid>, StorageError> {
        if let Some(seg) = &self.segments {
            return Ok(seg.first());
        }
        let mut first = None;
        self.engine.scan(Space::Log, &key(0), &mut |k, _| {
            first = zxid_of(k).ok();
            false
        })?;
        Ok(first)
    }

    pub fn accepted_epoch(&self) -> Result<u32, StorageError> {
        Ok(match self.engine.get(Space::Meta, ACCEPTED_EPOCH)? {
            Some(v) if v.len() == 4 => u32::from_be_bytes(v.try_into().expect("length checked")),
            _ => 0,
        })
    }

    pub fn set_accepted_epoch(&self, epoch: u32) -> Result<(), StorageError> {
        let mut b = WriteBatch::default();
        b.put(Space::Meta, ACCEPTED_EPOCH, epoch.to_be_bytes());
        self.engine.write(b, true)
    }

    pub fn current_epoch(&self) -> Result<u32, StorageError> {
        Ok(match self.engine.get(Space::Meta, CURRENT_EPOCH)? {
            Some(v) if v.len() == 4 => u32::from_be_bytes(v.try_into().expect("length checked")),
            _ => 0,
        })
    }

    pub fn set_current_epoch(&self, epoch: u32) -> Result<(), StorageError> {
        let mut b = WriteBatch::default();
        b.put(Space::Meta, CURRENT_EPOCH, epoch.to_be_bytes());
        self.engine.write(b, true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use roster_core::storage::MemEngine;

    fn session(zxid: Zxid) -> Arc<Txn> {
        Arc::new(Txn {
            zxid,
            time: 0,
            session: zxid,
            op: roster_core::txn::TxnOp::CreateSession {
                timeout_ms: 30_000,
                passwd: vec![1; 16],
            },
        })
    }

    fn log_with(zxids: &[Zxid]) -> (tempfile::TempDir, TxnLog) {
        let dir = tempfile::tempdir().unwrap();
        let log = TxnLog::open(Arc::new(MemEngine::default()), None, Some(dir.path())).unwrap();
        let mut staged = Staged::default();
        let txns: Vec<_> = zxids.iter().map(|z| session(*z)).collect();
        TxnLog::stage(&mut staged, &txns);
        log.commit(&staged).unwrap();
        (dir, log)
    }

    const E1: Zxid = 1 << 32;
    const E2: Zxid = 2 << 32;

    #[test]
    fn zxids_follow_within_an_epoch_and_into_a_later_epochs_first() {
        assert!(follows(0, E1 + 1));
        assert!(follows(E1 + 1, E1 + 2));
        assert!(follows(E1 + 7, E2 + 1));
        assert!(follows(0, 1));
        assert!(
            !follows(0, E1 + 2),
            "no state, and the log starts past an epoch's first"
        );
        assert!(!follows(E1 + 1, E1 + 3));
        assert!(!follows(E1 + 7, E2 + 2));
        assert!(!follows(E2 + 1, E1 + 9));
    }

    #[test]
    fn a_log_without_a_gap_recovers_across_epochs() {
        let (_dir, log) = log_with(&[E1 + 1, E1 + 2, E1 + 3, E2 + 1, E2 + 2]);
        let r = log.recover().unwrap();
        assert_eq!((r.snapshot, r.replayed), (None, 5));
        assert_eq!(r.tree.last_zxid(), E2 + 2);
        assert_eq!(r.tree.sessions().len(), 5);
    }

    #[test]
    fn a_gap_in_the_log_is_an_error_not_a_tree_without_the_missing_transactions() {
        for zxids in [
            &[E1 + 1, E1 + 2, E1 + 5, E1 + 6][..], // missing in the middle
            &[E1 + 40, E1 + 41],                   // no snapshot under a log that starts late
            &[E1 + 1, E1 + 2, E2 + 3],             // into the next epoch past its first
        ] {
            let (_dir, log) = log_with(zxids);
            let err = log.recover().err().expect("a gap");
            assert!(err.0.contains("has a gap"), "{zxids:?}: {}", err.0);
        }
    }
}
