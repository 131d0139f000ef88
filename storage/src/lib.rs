//! roster-storage: the RocksDB implementation of `roster_core::storage::Engine`. One column family
//! per `Space`; batches are atomic; a synced write is fsynced (WAL) before it returns. This is the
//! only crate that links RocksDB.

use rocksdb::{ColumnFamilyDescriptor, DB, Direction, IteratorMode, Options, WriteOptions};
use roster_core::storage::{BatchOp, Engine, Space, StorageError, WriteBatch};
use std::path::Path;

/// Memtable size per column family.
const WRITE_BUFFER: usize = 8 << 20;
/// All memtables together.
const WRITE_BUFFER_BUDGET: usize = 32 << 20;

/// RocksDB-backed engine.
pub struct RocksEngine {
    db: DB,
}

fn err(e: rocksdb::Error) -> StorageError {
    StorageError(e.into_string())
}

impl RocksEngine {
    /// Open (creating if needed) the database in `dir`.
    pub fn open(dir: &Path) -> Result<RocksEngine, StorageError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| StorageError(format!("{}: {e}", dir.display())))?;
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        opts.set_compression_type(rocksdb::DBCompressionType::Lz4);
        // Transaction-log writes are small and synced: keep the WAL, and let RocksDB group
        // concurrent synced writers too.
        opts.set_enable_pipelined_write(true);
        // Memory: RocksDB's defaults (a 64 MiB memtable per column family, two of them) are
        // sized for a database; here the log is truncated behind each snapshot and the state
        // lives in the tree. Small memtables bound the resident memory, and one budget caps
        // all column families together.
        opts.set_db_write_buffer_size(WRITE_BUFFER_BUDGET);
        let cfs = Space::ALL.iter().map(|s| {
            let mut o = Options::default();
            o.set_compression_type(rocksdb::DBCompressionType::Lz4);
            o.set_write_buffer_size(WRITE_BUFFER);
            o.set_max_write_buffer_number(2);
            ColumnFamilyDescriptor::new(s.name(), o)
        });
        let db = DB::open_cf_descriptors(&opts, dir, cfs).map_err(err)?;
        Ok(RocksEngine { db })
    }

    fn cf(&self, space: Space) -> &rocksdb::ColumnFamily {
        self.db
            .cf_handle(space.name())
            .expect("column families are created at open")
    }
}

impl Engine for RocksEngine {
    fn write(&self, batch: WriteBatch, sync: bool) -> Result<(), StorageError> {
        let mut wb = rocksdb::WriteBatch::default();
        for op in batch.ops {
            match op {
                BatchOp::Put { space, key, value } => wb.put_cf(self.cf(space), key, value),
                BatchOp::Delete { space, key } => wb.delete_cf(self.cf(space), key),
                BatchOp::DeleteRange { space, from, to } => {
                    wb.delete_range_cf(self.cf(space), from, to)
                }
            }
        }
        let mut wo = WriteOptions::default();
        wo.set_sync(sync);
        self.db.write_opt(wb, &wo).map_err(err)
    }

    fn get(&self, space: Space, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        self.db.get_cf(self.cf(space), key).map_err(err)
    }

    fn scan(
        &self,
        space: Space,
        from: &[u8],
        f: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), StorageError> {
        for item in self
            .db
            .iterator_cf(self.cf(space), IteratorMode::From(from, Direction::Forward))
        {
            let (k, v) = item.map_err(err)?;
            if !f(&k, &v) {
                break;
            }
        }
        Ok(())
    }

    fn last(&self, space: Space) -> Result<Option<roster_core::storage::KeyValue>, StorageError> {
        match self
            .db
            .iterator_cf(self.cf(space), IteratorMode::End)
            .next()
        {
            Some(Ok((k, v))) => Ok(Some((k.to_vec(), v.to_vec()))),
            Some(Err(e)) => Err(err(e)),
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let e = RocksEngine::open(dir.path()).unwrap();
            let mut b = WriteBatch::default();
            for i in 0u64..10 {
                b.put(Space::Log, i.to_be_bytes(), vec![i as u8]);
            }
            b.put(Space::Meta, b"epoch".to_vec(), b"7".to_vec());
            e.write(b, true).unwrap();
            let mut d = WriteBatch::default();
            d.delete_range(Space::Log, 0u64.to_be_bytes(), 5u64.to_be_bytes());
            e.write(d, true).unwrap();
        }
        let e = RocksEngine::open(dir.path()).unwrap();
        let mut keys = Vec::new();
        e.scan(Space::Log, &[], &mut |k, _| {
            keys.push(u64::from_be_bytes(k.try_into().unwrap()));
            true
        })
        .unwrap();
        assert_eq!(keys, (5..10).collect::<Vec<_>>());
        assert_eq!(e.last(Space::Log).unwrap().unwrap().1, vec![9]);
        assert_eq!(e.get(Space::Meta, b"epoch").unwrap().unwrap(), b"7");
    }
}
