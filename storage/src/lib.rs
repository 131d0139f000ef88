//! roster-storage: the RocksDB implementation of `roster_core::storage::Engine`. One column family
//! per `Space`; batches are atomic; a synced write is fsynced (WAL) before it returns. This is the
//! only crate that links RocksDB.

use rocksdb::{ColumnFamilyDescriptor, DB, Direction, IteratorMode, Options, WriteOptions};
use roster_core::storage::{BatchOp, Engine, Space, StorageError, WriteBatch};
use std::path::Path;

/// Memtable size per column family. Up to two per family are resident (one filling, one
/// flushing): 8 MiB ones held 6 MiB more of the server's memory under a `set` load than these,
/// with no measurable difference in throughput (docs/benchmarks.md).
const WRITE_BUFFER: usize = 4 << 20;
/// All memtables together.
const WRITE_BUFFER_BUDGET: usize = 16 << 20;
/// Most WAL bytes kept before the column families pinning the oldest file are flushed.
const MAX_TOTAL_WAL: usize = 4 * WRITE_BUFFER;

/// Table bytes written before their writeback is started (RocksDB's suggested 1 MiB).
const BYTES_PER_SYNC: u64 = 1 << 20;

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
        // A WAL record that fails its checksum is damage, and the database does not open: the
        // default (point-in-time recovery) stops replaying there and opens without every synced
        // write after it — a flipped byte in the middle of the WAL silently lost half of 100
        // acknowledged writes (test below) — which for raft is a member forgetting entries it
        // acknowledged and votes it cast. A write cut short at the end (a crash) is still
        // tolerated. RocksDB cannot tell a recycled WAL file's stale tail from damage in this
        // mode, so it reuses no WAL files (`recycle_log_file_num` is ignored): a synced append
        // to a fresh file costs more than an overwrite (0.20 ms against 0.12 ms per fdatasync
        // here), the price of not losing acknowledged writes (docs/benchmarks.md).
        opts.set_wal_recovery_mode(rocksdb::DBRecoveryMode::TolerateCorruptedTailRecords);
        // A WAL file is freed only when every column family with data in it has flushed; a
        // family written once (metadata) would otherwise pin every WAL since (measured: 23 files,
        // 177 MB after a 10 s write load) and none would ever be deleted. Past this total
        // RocksDB flushes the families holding the oldest file.
        opts.set_max_total_wal_size(MAX_TOTAL_WAL as u64);
        // Start the writeback of flushed and compacted tables as they are written, not all at
        // their final fsync, where the log's fdatasync would queue behind megabytes of them (the
        // same reason snapshot files are paced, `roster_core::snapfiles`).
        opts.set_bytes_per_sync(BYTES_PER_SYNC);
        let cfs = Space::ALL.iter().map(|s| {
            let mut o = Options::default();
            o.set_compression_type(rocksdb::DBCompressionType::Lz4);
            o.set_write_buffer_size(WRITE_BUFFER);
            o.set_max_write_buffer_number(2);
            ColumnFamilyDescriptor::new(s.name(), o)
        });
        let db = DB::open_cf_descriptors(&opts, dir, cfs).map_err(|e| {
            if e.kind() != rocksdb::ErrorKind::Corruption {
                return err(e);
            }
            StorageError(format!(
                "{} (RocksDB found data written whole and changed since — a disk fault, not a \
                 crash — and does not open by dropping what follows it, which may be \
                 acknowledged writes. A member of an ensemble: move its data directory away and \
                 start it again, and it copies the state from the leader — a raft voter under a \
                 new server id, as it may have voted in the current term (docs/raft.md); alone: \
                 restore the directory from a backup)",
                e.into_string()
            ))
        })?;
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
        // RocksDB's batch: a 12-byte header, then per op a tag, a column family id and two
        // length-prefixed slices.
        let mut wb =
            rocksdb::WriteBatch::with_capacity_bytes(12 + batch.bytes() + 16 * batch.len());
        for op in batch.ops() {
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
            b.put(Space::Meta, b"epoch", b"7");
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

    fn wal_bytes(dir: &Path) -> u64 {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".log"))
            .map(|e| e.metadata().unwrap().len())
            .sum()
    }

    /// The backend's pattern: metadata written once, then a long stream of synced log batches,
    /// purged behind. The metadata write must not pin every WAL file written after it: once the
    /// flushes RocksDB schedules have run, the WAL is back within its bound (without the cap it
    /// keeps all ~120 MiB written since the metadata), and everything reads back after reopen.
    /// The bound is checked when the background work settles, not after every write: on a slow
    /// disk the WAL can run past it while a flush is still being written.
    #[test]
    fn the_wal_stays_bounded_under_a_long_log_stream() {
        let dir = tempfile::tempdir().unwrap();
        let value = vec![7u8; 4096];
        let n = 30_000u64; // ~120 MiB of log
        // The live memtable's WAL and the one being flushed, past the cap (no WAL files are kept
        // for reuse: see `open`).
        let bound = (MAX_TOTAL_WAL + 2 * WRITE_BUFFER) as u64;
        {
            let e = RocksEngine::open(dir.path()).unwrap();
            let mut b = WriteBatch::default();
            b.put(Space::Meta, b"epoch", b"3");
            e.write(b, true).unwrap();
            let mut peak = 0;
            for i in 0..n {
                let mut b = WriteBatch::default();
                b.put(Space::Log, i.to_be_bytes(), value.clone());
                if i % 1000 == 999 {
                    b.delete_range(Space::Log, 0u64.to_be_bytes(), (i - 500).to_be_bytes());
                }
                e.write(b, i % 16 == 15).unwrap();
                if i % 256 == 0 {
                    peak = peak.max(wal_bytes(dir.path()));
                }
            }
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
            loop {
                let now = wal_bytes(dir.path());
                if now <= bound {
                    break;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "WAL still {now} bytes a minute after the stream (bound {bound}, peak {peak})"
                );
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
        }
        let e = RocksEngine::open(dir.path()).unwrap();
        assert_eq!(e.get(Space::Meta, b"epoch").unwrap().unwrap(), b"3");
        let mut first = None;
        let mut count = 0u64;
        e.scan(Space::Log, &[], &mut |k, v| {
            first.get_or_insert(u64::from_be_bytes(k.try_into().unwrap()));
            assert_eq!(v, &value[..]);
            count += 1;
            true
        })
        .unwrap();
        let first = first.unwrap();
        // The last purge (at n - 1) removed everything before n - 1 - 500.
        assert_eq!(first, n - 1 - 500);
        assert_eq!(count, n - first);
    }

    /// Synced writes, then the WAL file the database reopens from damaged as given.
    fn damaged_wal(damage: impl FnOnce(&mut Vec<u8>)) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        {
            let e = RocksEngine::open(dir.path()).unwrap();
            for i in 0u64..100 {
                let mut b = WriteBatch::default();
                b.put(
                    Space::Log,
                    i.to_be_bytes(),
                    vec![b'a' + (i % 26) as u8; 300],
                );
                e.write(b, true).unwrap();
            }
        }
        let wal = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "log"))
            .max_by_key(|p| std::fs::metadata(p).unwrap().len())
            .unwrap();
        let mut bytes = std::fs::read(&wal).unwrap();
        assert!(
            bytes.len() > 100 * 300,
            "the writes are in the WAL, not flushed"
        );
        damage(&mut bytes);
        std::fs::write(&wal, &bytes).unwrap();
        dir
    }

    fn keys(e: &RocksEngine) -> u64 {
        let mut n = 0;
        e.scan(Space::Log, &[], &mut |_, _| {
            n += 1;
            true
        })
        .unwrap();
        n
    }

    #[test]
    fn a_damaged_wal_record_stops_the_open_instead_of_dropping_the_writes_after_it() {
        let dir = damaged_wal(|b| {
            let mid = b.len() / 2;
            b[mid] ^= 0x40;
        });
        let e = RocksEngine::open(dir.path()).err().expect("refused");
        assert!(e.0.contains("Corruption"), "{}", e.0);
        assert!(e.0.contains("move its data directory away"), "{}", e.0);
    }

    #[test]
    fn a_wal_cut_short_by_a_crash_opens_with_the_whole_writes_before_the_cut() {
        let dir = damaged_wal(|b| b.truncate(b.len() - 100));
        let e = RocksEngine::open(dir.path()).unwrap();
        assert_eq!(keys(&e), 99);
    }
}
