//! The transaction log and snapshots. The log is kept in the storage engine: `Log` holds one
//! entry per zxid (big-endian key, so order is zxid order), `Meta` the epochs. Snapshots are
//! files in a directory beside it ([`SnapshotFiles`]) when one is given, as on a server; without
//! one (the in-memory engines of the simulations) they go to the engine's `Snapshot` space, keyed
//! by the zxid they include. Snapshots an older version left in the engine are still read, and
//! purged like the others.

use roster_core::Zxid;
use roster_core::snapfiles::SnapshotFiles;
use roster_core::storage::{Engine, Space, StorageError, WriteBatch};
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

/// Log and snapshot store over an engine.
#[derive(Clone)]
pub struct TxnLog {
    engine: Arc<dyn Engine>,
    files: Option<Arc<SnapshotFiles>>,
    /// Bytes of log entries committed through this log since it was opened (all clones).
    logged: Arc<AtomicU64>,
}

fn io_err(e: std::io::Error) -> StorageError {
    StorageError(format!("snapshot file: {e}"))
}

impl TxnLog {
    /// Log and snapshots in `engine` alone.
    pub fn new(engine: Arc<dyn Engine>) -> TxnLog {
        TxnLog {
            engine,
            files: None,
            logged: Arc::default(),
        }
    }

    /// Log in `engine`; snapshots as files in `snapshot_dir` when given, else in `engine` too.
    pub fn open(
        engine: Arc<dyn Engine>,
        snapshot_dir: Option<&Path>,
    ) -> Result<TxnLog, StorageError> {
        let Some(dir) = snapshot_dir else {
            return Ok(TxnLog::new(engine));
        };
        let files = SnapshotFiles::open(dir)
            .map_err(|e| StorageError(format!("snapshot directory {}: {e}", dir.display())))?;
        Ok(TxnLog {
            engine,
            files: Some(Arc::new(files)),
            logged: Arc::default(),
        })
    }

    /// A batch holding the log entries for `txns`, each encoded in place in the batch's one
    /// buffer (which grows for the whole batch, not per entry).
    pub fn stage(txns: &[Arc<Txn>]) -> WriteBatch {
        let mut batch = WriteBatch::default();
        for t in txns {
            batch.put_with(Space::Log, &key(t.zxid), |buf| {
                postcard::to_extend(&**t, Append(buf)).expect("txn serializes");
            });
        }
        batch
    }

    /// Write a batch and fsync it.
    pub fn commit(&self, batch: WriteBatch) -> Result<(), StorageError> {
        let bytes = batch.bytes() as u64;
        self.engine.write(batch, true)?;
        self.logged.fetch_add(bytes, Ordering::Relaxed);
        Ok(())
    }

    /// Bytes of log entries committed since the log was opened (keys and encoded txns).
    pub fn logged_bytes(&self) -> u64 {
        self.logged.load(Ordering::Relaxed)
    }

    /// Visit every logged txn with zxid > `after`, in order.
    pub fn replay_after(&self, after: Zxid, f: &mut dyn FnMut(Txn)) -> Result<u64, StorageError> {
        let mut n = 0;
        let mut bad = None;
        self.engine.scan(
            Space::Log,
            &key(after.saturating_add(1)),
            &mut |k, v| match (zxid_of(k), postcard::from_bytes::<Txn>(v)) {
                (Ok(z), Ok(t)) if z == t.zxid => {
                    f(t);
                    n += 1;
                    true
                }
                _ => {
                    bad = Some(format!("corrupt log entry at key {k:?}"));
                    false
                }
            },
        )?;
        match bad {
            Some(e) => Err(StorageError(e)),
            None => Ok(n),
        }
    }

    /// Last logged zxid, if any.
    pub fn last_logged(&self) -> Result<Option<Zxid>, StorageError> {
        self.engine
            .last(Space::Log)?
            .map(|(k, _)| zxid_of(&k))
            .transpose()
    }

    /// Store a snapshot that includes every txn up to `zxid` (received whole: a leader's SNAP).
    pub fn save_snapshot(&self, zxid: Zxid, bytes: Vec<u8>) -> Result<(), StorageError> {
        if let Some(f) = &self.files {
            return f.write_bytes(zxid, &bytes).map(|_| ()).map_err(io_err);
        }
        let mut b = WriteBatch::default();
        b.put(Space::Snapshot, key(zxid), bytes);
        self.engine.write(b, true)
    }

    /// Store a snapshot of `view`, streamed into its file when snapshots are files. Returns its
    /// size in bytes.
    pub fn save_view(&self, view: &SnapshotView) -> Result<u64, StorageError> {
        if let Some(f) = &self.files {
            return f.write_view(view).map_err(io_err);
        }
        let bytes = view.encode();
        let n = bytes.len() as u64;
        self.save_snapshot(view.last_zxid(), bytes)?;
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

    /// The newest snapshot.
    pub fn latest_snapshot(&self) -> Result<Option<(Zxid, Vec<u8>)>, StorageError> {
        let in_engine = match self.engine.last(Space::Snapshot)? {
            Some((k, v)) => Some((zxid_of(&k)?, v)),
            None => None,
        };
        let in_files = match &self.files {
            Some(f) => f.latest().map_err(io_err)?,
            None => None,
        };
        Ok(match (in_engine, in_files) {
            (Some(e), Some(f)) => Some(if f.0 >= e.0 { f } else { e }),
            (e, f) => f.or(e),
        })
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
        if let Some(f) = &self.files {
            f.remove_where(|z| z < oldest_kept).map_err(io_err)?;
        }
        Ok(())
    }

    /// Drop every logged txn after `zxid` (ZAB TRUNC).
    pub fn truncate_after(&self, zxid: Zxid) -> Result<(), StorageError> {
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
        Ok(self.engine.get(Space::Log, &key(zxid))?.is_some())
    }

    /// The largest logged zxid `<= zxid`, if the log reaches back that far.
    pub fn floor(&self, zxid: Zxid) -> Result<Option<Zxid>, StorageError> {
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
