//! The transaction log and snapshots, kept in the storage engine: `Log` holds one entry per zxid
//! (big-endian key, so order is zxid order), `Snapshot` holds whole-tree snapshots keyed by the
//! zxid they include, `Meta` the current epoch.

use roster_core::Zxid;
use roster_core::storage::{Engine, Space, StorageError, WriteBatch};
use roster_core::txn::Txn;
use std::sync::Arc;

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

/// Log and snapshot store over an engine.
#[derive(Clone)]
pub struct TxnLog {
    engine: Arc<dyn Engine>,
}

impl TxnLog {
    pub fn new(engine: Arc<dyn Engine>) -> TxnLog {
        TxnLog { engine }
    }

    /// Add the log entries for `txns` to a batch.
    pub fn stage(batch: &mut WriteBatch, txns: &[Arc<Txn>]) {
        for t in txns {
            batch.put(
                Space::Log,
                key(t.zxid),
                postcard::to_stdvec(&**t).expect("txn serializes"),
            );
        }
    }

    /// Write a batch and fsync it.
    pub fn commit(&self, batch: WriteBatch) -> Result<(), StorageError> {
        self.engine.write(batch, true)
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

    /// Store a snapshot that includes every txn up to `zxid`.
    pub fn save_snapshot(&self, zxid: Zxid, bytes: Vec<u8>) -> Result<(), StorageError> {
        let mut b = WriteBatch::default();
        b.put(Space::Snapshot, key(zxid), bytes);
        self.engine.write(b, true)
    }

    /// The newest snapshot.
    pub fn latest_snapshot(&self) -> Result<Option<(Zxid, Vec<u8>)>, StorageError> {
        match self.engine.last(Space::Snapshot)? {
            Some((k, v)) => Ok(Some((zxid_of(&k)?, v))),
            None => Ok(None),
        }
    }

    /// Keep the newest `keep` snapshots, and the log after the oldest of them.
    pub fn purge(&self, keep: usize) -> Result<(), StorageError> {
        let mut snaps = Vec::new();
        self.engine.scan(Space::Snapshot, &[], &mut |k, _| {
            if let Ok(z) = zxid_of(k) {
                snaps.push(z);
            }
            true
        })?;
        if snaps.len() <= keep.max(1) {
            return Ok(());
        }
        let cut = snaps.len() - keep.max(1);
        let oldest_kept = snaps[cut];
        let mut b = WriteBatch::default();
        b.delete_range(Space::Snapshot, key(0).to_vec(), key(oldest_kept).to_vec());
        b.delete_range(
            Space::Log,
            key(0).to_vec(),
            key(oldest_kept.saturating_add(1)).to_vec(),
        );
        self.engine.write(b, true)
    }

    /// Drop every logged txn after `zxid` (ZAB TRUNC).
    pub fn truncate_after(&self, zxid: Zxid) -> Result<(), StorageError> {
        let mut b = WriteBatch::default();
        b.delete_range(
            Space::Log,
            key(zxid.saturating_add(1)).to_vec(),
            key(i64::MAX).to_vec(),
        );
        b.delete_range(
            Space::Snapshot,
            key(zxid.saturating_add(1)).to_vec(),
            key(i64::MAX).to_vec(),
        );
        self.engine.write(b, true)
    }

    /// Drop the whole log and every snapshot (before installing a leader's snapshot).
    pub fn clear(&self) -> Result<(), StorageError> {
        let mut b = WriteBatch::default();
        b.delete_range(Space::Log, key(0).to_vec(), key(i64::MAX).to_vec());
        b.delete_range(Space::Snapshot, key(0).to_vec(), key(i64::MAX).to_vec());
        self.engine.write(b, true)
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
        b.put(
            Space::Meta,
            ACCEPTED_EPOCH.to_vec(),
            epoch.to_be_bytes().to_vec(),
        );
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
        b.put(
            Space::Meta,
            CURRENT_EPOCH.to_vec(),
            epoch.to_be_bytes().to_vec(),
        );
        self.engine.write(b, true)
    }
}
