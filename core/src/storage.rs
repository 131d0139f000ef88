//! The small storage-engine trait backends persist through (TiKV's `engine_traits` idea): RocksDB
//! for real runs (crate `roster-storage`), `MemEngine` for unit and simulation tests.

use parking_lot::Mutex;
use std::collections::BTreeMap;

/// A keyspace (a RocksDB column family).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Space {
    /// Transaction log, keyed by big-endian zxid.
    Log,
    /// Snapshots and their index.
    Snapshot,
    /// Small metadata (epochs, votes, ids).
    Meta,
}

impl Space {
    pub const ALL: [Space; 3] = [Space::Log, Space::Snapshot, Space::Meta];
    pub fn name(self) -> &'static str {
        match self {
            Space::Log => "log",
            Space::Snapshot => "snapshot",
            Space::Meta => "meta",
        }
    }
}

/// One change in a batch.
#[derive(Debug, Clone)]
pub enum BatchOp {
    Put {
        space: Space,
        key: Vec<u8>,
        value: Vec<u8>,
    },
    Delete {
        space: Space,
        key: Vec<u8>,
    },
    /// Delete keys in `[from, to)`.
    DeleteRange {
        space: Space,
        from: Vec<u8>,
        to: Vec<u8>,
    },
}

/// Changes written atomically.
#[derive(Debug, Clone, Default)]
pub struct WriteBatch {
    pub ops: Vec<BatchOp>,
}

impl WriteBatch {
    pub fn put(&mut self, space: Space, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) {
        self.ops.push(BatchOp::Put {
            space,
            key: key.into(),
            value: value.into(),
        });
    }
    pub fn delete(&mut self, space: Space, key: impl Into<Vec<u8>>) {
        self.ops.push(BatchOp::Delete {
            space,
            key: key.into(),
        });
    }
    pub fn delete_range(&mut self, space: Space, from: impl Into<Vec<u8>>, to: impl Into<Vec<u8>>) {
        self.ops.push(BatchOp::DeleteRange {
            space,
            from: from.into(),
            to: to.into(),
        });
    }
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
    pub fn len(&self) -> usize {
        self.ops.len()
    }
}

#[derive(Debug, thiserror::Error)]
#[error("storage: {0}")]
pub struct StorageError(pub String);

/// A key and its value.
pub type KeyValue = (Vec<u8>, Vec<u8>);

/// A durable ordered key-value store with atomic batches.
pub trait Engine: Send + Sync + 'static {
    /// Write a batch atomically; with `sync`, it is on disk when this returns (fsync).
    fn write(&self, batch: WriteBatch, sync: bool) -> Result<(), StorageError>;
    fn get(&self, space: Space, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError>;
    /// Visit keys `>= from` in order until `f` returns false.
    fn scan(
        &self,
        space: Space,
        from: &[u8],
        f: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), StorageError>;
    /// The last key of a space and its value.
    fn last(&self, space: Space) -> Result<Option<KeyValue>, StorageError>;
}

/// In-memory engine (not durable across processes).
#[derive(Default)]
#[allow(clippy::type_complexity)]
pub struct MemEngine {
    spaces: Mutex<BTreeMap<Space, BTreeMap<Vec<u8>, Vec<u8>>>>, // space -> ordered keys
}

impl Engine for MemEngine {
    fn write(&self, batch: WriteBatch, _sync: bool) -> Result<(), StorageError> {
        let mut g = self.spaces.lock();
        for op in batch.ops {
            match op {
                BatchOp::Put { space, key, value } => {
                    g.entry(space).or_default().insert(key, value);
                }
                BatchOp::Delete { space, key } => {
                    g.entry(space).or_default().remove(&key);
                }
                BatchOp::DeleteRange { space, from, to } => {
                    let m = g.entry(space).or_default();
                    let keys: Vec<Vec<u8>> = m.range(from..to).map(|(k, _)| k.clone()).collect();
                    for k in keys {
                        m.remove(&k);
                    }
                }
            }
        }
        Ok(())
    }

    fn get(&self, space: Space, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self
            .spaces
            .lock()
            .get(&space)
            .and_then(|m| m.get(key).cloned()))
    }

    fn scan(
        &self,
        space: Space,
        from: &[u8],
        f: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), StorageError> {
        let g = self.spaces.lock();
        if let Some(m) = g.get(&space) {
            for (k, v) in m.range(from.to_vec()..) {
                if !f(k, v) {
                    break;
                }
            }
        }
        Ok(())
    }

    fn last(&self, space: Space) -> Result<Option<KeyValue>, StorageError> {
        Ok(self
            .spaces
            .lock()
            .get(&space)
            .and_then(|m| m.iter().next_back().map(|(k, v)| (k.clone(), v.clone()))))
    }
}
