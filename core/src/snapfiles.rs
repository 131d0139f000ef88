//! Snapshots as files beside the log, as ZooKeeper keeps them (`snapshot.<zxid>`): a snapshot is
//! streamed from a frozen view straight into its file, so it is never held whole in memory and
//! never goes through the storage engine's write-ahead log, where a 100 MB value would make every
//! transaction-log fsync queued behind it wait (measured: 0.6–1.2 s per snapshot of 200 000 –
//! 300 000 nodes, which was the p99.9 of a create run).
//!
//! A file is `MAGIC`, the snapshot bytes, then the CRC-32 of those bytes (little-endian). It is
//! written as `snapshot.<zxid>.tmp`, fsynced, renamed into place and the directory fsynced, so a
//! crash leaves either no file or a whole one. It is read back a buffer at a time and restored
//! as it is read ([`SnapshotFiles::latest_tree`]), so start-up never holds the encoding whole
//! beside the tree. [`SnapshotFiles::latest_tree`] skips a file that fails its check (a torn
//! copy, a bad disk) in favour of an older one (zab keeps the log behind its older snapshots);
//! [`SnapshotFiles::read`] reports it (raft keeps one snapshot and no log behind it, so it must
//! not fall back).
//!
//! The file's writeback is started as it is written ([`Paced`]), so the disk never receives the
//! whole snapshot at once at the final fsync: on ext4 (data=ordered) the log's next fdatasync
//! would wait behind it — measured as `create`/`delete` maxima of 60–100 ms, once per snapshot.

use crate::Zxid;
use crate::tree::Tree;
use crate::tree::snapshot::{Restorer, SnapshotView};
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 8] = b"RSTRSNP1";
const PREFIX: &str = "snapshot.";
const TMP: &str = ".tmp";

/// The snapshot files of one member, in one directory.
pub struct SnapshotFiles {
    dir: PathBuf,
}

/// A writer that checksums what passes through it.
struct Crc<W> {
    w: W,
    crc: crc32fast::Hasher,
    bytes: u64,
}

impl<W: Write> Write for Crc<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.w.write(buf)?;
        self.crc.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.w.flush()
    }
}

/// A snapshot file's body, read in order and checksummed as it goes.
pub struct Body {
    file: File,
    left: u64,
    crc: crc32fast::Hasher,
    path: PathBuf,
}

impl Body {
    fn bad(path: &Path, why: &str) -> io::Error {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: {why}", path.display()),
        )
    }

    /// Bytes of the body not read yet.
    pub fn remaining(&self) -> u64 {
        self.left
    }

    /// The file, for messages.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Once the whole body is read: whether it is what was written (its checksum). An error
    /// means what was read from it is damaged and must be discarded.
    pub fn verify(mut self) -> io::Result<()> {
        if self.left > 0 {
            return Err(Body::bad(
                &self.path,
                "checked before it was read to its end",
            ));
        }
        let mut want = [0u8; 4];
        self.file.read_exact(&mut want)?;
        if self.crc.finalize() != u32::from_le_bytes(want) {
            return Err(Body::bad(&self.path, "checksum mismatch"));
        }
        Ok(())
    }
}

impl Read for Body {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = (self.left.min(buf.len() as u64)) as usize;
        if n == 0 {
            return Ok(0);
        }
        let n = self.file.read(&mut buf[..n])?;
        if n == 0 {
            return Err(Body::bad(&self.path, "shorter than its length"));
        }
        self.crc.update(&buf[..n]);
        self.left -= n as u64;
        Ok(n)
    }
}

impl std::fmt::Debug for Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Body({}, {} bytes left)", self.path.display(), self.left)
    }
}

/// How much of a snapshot is written before its writeback is started.
const WRITEBACK_CHUNK: u64 = 1 << 20;

/// Where a file's writeback stands: `[0, waited)` is on disk, `[waited, started)` is being
/// written out, `[started, written)` is only in the page cache.
#[derive(Debug, Default, PartialEq)]
struct Writeback {
    written: u64,
    started: u64,
    waited: u64,
}

/// One step of [`Writeback`]: start writing out `start`, then wait until `wait` is on disk.
#[derive(Debug, PartialEq)]
struct Step {
    start: std::ops::Range<u64>,
    wait: std::ops::Range<u64>,
}

impl Writeback {
    /// Account `n` more bytes written; once a chunk has gathered, the step to take. At most two
    /// chunks are ever in flight or dirty, so the writer goes at the disk's pace and a concurrent
    /// fdatasync waits behind at most that much.
    fn wrote(&mut self, n: u64) -> Option<Step> {
        self.written += n;
        if self.written - self.started < WRITEBACK_CHUNK {
            return None;
        }
        let step = Step {
            start: self.started..self.written,
            wait: self.waited..self.started,
        };
        self.waited = self.started;
        self.started = self.written;
        Some(step)
    }
}

/// A file whose writeback follows its writes (Linux `sync_file_range`, as RocksDB's
/// `bytes_per_sync`). It only schedules and paces the disk writes: durability is still the final
/// `sync_all`. Where `sync_file_range` is unavailable the file is written as a plain one.
struct Paced {
    file: File,
    progress: Writeback,
    on: bool,
}

impl Paced {
    fn new(file: File) -> Paced {
        Paced {
            file,
            progress: Writeback::default(),
            on: cfg!(target_os = "linux"),
        }
    }

    #[cfg(target_os = "linux")]
    fn take(&mut self, step: Step) {
        use std::os::fd::AsRawFd;
        let fd = self.file.as_raw_fd();
        let range = |r: &std::ops::Range<u64>| {
            (r.start as libc::off64_t, (r.end - r.start) as libc::off64_t)
        };
        let (off, len) = range(&step.start);
        // SAFETY: a syscall on a file descriptor this struct owns; no memory is passed to it.
        let mut rc = unsafe { libc::sync_file_range(fd, off, len, libc::SYNC_FILE_RANGE_WRITE) };
        if rc == 0 && step.wait.end > step.wait.start {
            let (off, len) = range(&step.wait);
            let flags = libc::SYNC_FILE_RANGE_WAIT_BEFORE
                | libc::SYNC_FILE_RANGE_WRITE
                | libc::SYNC_FILE_RANGE_WAIT_AFTER;
            // SAFETY: as above.
            rc = unsafe { libc::sync_file_range(fd, off, len, flags) };
        }
        if rc != 0 {
            // Only pacing is lost; an I/O error shows again at the final fsync.
            tracing::debug!(error = %io::Error::last_os_error(),
                "cannot pace the snapshot's writeback; writing it without");
            self.on = false;
        }
    }

    #[cfg(not(target_os = "linux"))]
    fn take(&mut self, _: Step) {}
}

impl Write for Paced {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        if self.on
            && let Some(step) = self.progress.wrote(n as u64)
        {
            self.take(step);
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl SnapshotFiles {
    /// Use (creating if needed) `dir`; half-written files of an earlier crash are removed.
    pub fn open(dir: &Path) -> io::Result<SnapshotFiles> {
        fs::create_dir_all(dir)?;
        for e in fs::read_dir(dir)? {
            let e = e?;
            let name = e.file_name();
            let name = name.to_string_lossy();
            if name.starts_with(PREFIX) && name.ends_with(TMP) {
                tracing::info!(file = %e.path().display(), "removing a snapshot left half-written");
                fs::remove_file(e.path())?;
            }
        }
        Ok(SnapshotFiles {
            dir: dir.to_path_buf(),
        })
    }

    fn path(&self, zxid: Zxid) -> PathBuf {
        self.dir.join(format!("{PREFIX}{:016x}", zxid as u64))
    }

    /// The zxids of the snapshots present, oldest first.
    pub fn list(&self) -> io::Result<Vec<Zxid>> {
        let mut out = Vec::new();
        for e in fs::read_dir(&self.dir)? {
            let name = e?.file_name();
            let name = name.to_string_lossy();
            if let Some(hex) = name.strip_prefix(PREFIX)
                && hex.len() == 16
                && let Ok(z) = u64::from_str_radix(hex, 16)
            {
                out.push(z as Zxid);
            }
        }
        out.sort_unstable();
        Ok(out)
    }

    /// Stream `view` into the snapshot file of its zxid. Returns the bytes written.
    pub fn write_view(&self, view: &SnapshotView) -> io::Result<u64> {
        self.write_with(view.last_zxid(), |w| view.encode_to(w).map(|_| ()))
    }

    /// Store snapshot bytes received whole (a leader's SNAP).
    pub fn write_bytes(&self, zxid: Zxid, bytes: &[u8]) -> io::Result<u64> {
        self.write_with(zxid, |w| w.write_all(bytes))
    }

    /// Stream a body of the caller's making (raft: its head, then a view's encoding) into the
    /// file of `zxid`, as [`SnapshotFiles::write_view`] does. Returns the bytes written.
    pub fn write_from(
        &self,
        zxid: Zxid,
        body: impl FnOnce(&mut dyn Write) -> io::Result<()>,
    ) -> io::Result<u64> {
        self.write_with(zxid, |w| body(w))
    }

    fn write_with(
        &self,
        zxid: Zxid,
        body: impl FnOnce(&mut Crc<Paced>) -> io::Result<()>,
    ) -> io::Result<u64> {
        let path = self.path(zxid);
        let tmp = self.dir.join(format!("{PREFIX}{:016x}{TMP}", zxid as u64));
        let res = (|| {
            // Through `Paced` from the first byte, so its ranges are the file's offsets.
            let mut f = Paced::new(File::create(&tmp)?);
            f.write_all(MAGIC)?;
            // Unbuffered: the body writes large chunks (`SnapshotView::encode_to` hands over
            // 1 MiB at a time, a received SNAP is one slice), so the checksum and the file see
            // few, large writes.
            let mut w = Crc {
                w: f,
                crc: crc32fast::Hasher::new(),
                bytes: 0,
            };
            body(&mut w)?;
            let Crc {
                w: Paced { mut file, .. },
                crc,
                bytes,
            } = w;
            file.write_all(&crc.finalize().to_le_bytes())?;
            file.sync_all()?;
            drop(file);
            fs::rename(&tmp, &path)?;
            File::open(&self.dir)?.sync_all()?;
            Ok(bytes + MAGIC.len() as u64 + 4)
        })();
        if res.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        res
    }

    /// Read and check the snapshot of `zxid`, whole (for small files and tests: restoring and
    /// sending read it as a stream, [`SnapshotFiles::read_into`] and [`SnapshotFiles::open_body`]).
    pub fn read(&self, zxid: Zxid) -> io::Result<Vec<u8>> {
        let mut buf = Vec::new();
        self.read_into(zxid, &mut |b| {
            buf.extend_from_slice(b);
            Ok(())
        })?;
        Ok(buf)
    }

    /// Read the snapshot of `zxid` a buffer at a time, handing its bytes to `sink` as they are
    /// read, and check its checksum at the end: if this fails, discard what `sink` built.
    pub fn read_into(
        &self,
        zxid: Zxid,
        sink: &mut dyn FnMut(&[u8]) -> io::Result<()>,
    ) -> io::Result<()> {
        let mut body = self.open_body(zxid)?;
        let mut buf = vec![0u8; Restorer::CHUNK];
        while body.remaining() > 0 {
            let n = (body.remaining() as usize).min(buf.len());
            body.read_exact(&mut buf[..n])?;
            sink(&buf[..n])?;
        }
        body.verify()
    }

    /// The snapshot of `zxid` opened for reading its body as a stream (raft sends it to a
    /// member a piece at a time): the file stays readable through the handle if a newer
    /// snapshot replaces it meanwhile. Call [`Body::verify`] once it is read.
    pub fn open_body(&self, zxid: Zxid) -> io::Result<Body> {
        let path = self.path(zxid);
        let mut file = File::open(&path)?;
        let len = file.metadata()?.len();
        let mut magic = [0u8; MAGIC.len()];
        if len < (MAGIC.len() + 4) as u64 || file.read_exact(&mut magic).is_err() || &magic != MAGIC
        {
            return Err(Body::bad(&path, "not a snapshot file"));
        }
        Ok(Body {
            file,
            left: len - MAGIC.len() as u64 - 4,
            crc: crc32fast::Hasher::new(),
            path,
        })
    }

    /// The newest snapshot that reads back intact, restored as it is read (never held whole in
    /// memory beside the tree it becomes). A file that fails its check or does not decode is
    /// skipped for an older one (zab keeps the log behind older snapshots).
    pub fn latest_tree(&self) -> io::Result<Option<(Zxid, Tree)>> {
        for zxid in self.list()?.into_iter().rev() {
            let mut r = Restorer::new();
            let res = self
                .read_into(zxid, &mut |b| {
                    r.push(b)
                        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
                })
                .and_then(|()| {
                    r.finish()
                        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
                });
            match res {
                Ok(tree) => return Ok(Some((zxid, tree))),
                Err(e) => {
                    tracing::warn!(error = %e, zxid = format!("{zxid:#x}"), "skipping a damaged snapshot; trying an older one");
                    metrics::counter!("roster_backend_snapshots_damaged_total").increment(1);
                }
            }
        }
        Ok(None)
    }

    /// Remove the snapshots whose zxid matches `drop`.
    pub fn remove_where(&self, drop: impl Fn(Zxid) -> bool) -> io::Result<()> {
        let mut removed = false;
        for z in self.list()? {
            if drop(z) {
                fs::remove_file(self.path(z))?;
                removed = true;
            }
        }
        if removed {
            File::open(&self.dir)?.sync_all()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::Tree;

    #[test]
    fn a_streamed_snapshot_reads_back_as_the_encoded_view() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("snapshot.0000000000000007.tmp"), b"torn").unwrap();
        let files = SnapshotFiles::open(dir.path()).unwrap();
        assert!(
            !dir.path().join("snapshot.0000000000000007.tmp").exists(),
            "a half-written file of an earlier crash is removed"
        );
        let tree = Tree::new();
        let view = tree.snapshot_view();
        let n = files.write_view(&view).unwrap();
        assert_eq!(files.list().unwrap(), vec![view.last_zxid()]);
        let bytes = files.read(view.last_zxid()).unwrap();
        assert_eq!(bytes, view.encode());
        assert_eq!(n as usize, bytes.len() + MAGIC.len() + 4);
        files.write_bytes(9, &bytes).unwrap();
        assert_eq!(files.list().unwrap(), vec![view.last_zxid(), 9]);
        files.remove_where(|z| z < 9).unwrap();
        assert_eq!(files.list().unwrap(), vec![9]);
        // Truncated: not a snapshot any more, and nothing older to fall back to.
        let p = files.path(9);
        let len = std::fs::metadata(&p).unwrap().len();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&p)
            .unwrap()
            .set_len(len - 3)
            .unwrap();
        assert!(files.read(9).is_err());
        assert!(files.latest_tree().unwrap().is_none());
    }

    #[test]
    fn writeback_is_started_per_chunk_and_waited_for_one_chunk_behind() {
        const C: u64 = WRITEBACK_CHUNK;
        let mut wb = Writeback::default();
        assert_eq!(
            wb.wrote(C - 1),
            None,
            "less than a chunk stays in the page cache"
        );
        let first = wb.wrote(1).expect("a whole chunk is started");
        assert_eq!((first.start, first.wait), (0..C, 0..0));
        assert_eq!(wb.wrote(C / 2), None);
        let second = wb.wrote(C).expect("the next chunk");
        assert_eq!(
            (second.start, second.wait),
            (C..2 * C + C / 2, 0..C),
            "starting a chunk waits for the one before it"
        );
        let third = wb.wrote(3 * C).expect("a write larger than a chunk");
        assert_eq!(
            (third.start, third.wait),
            (2 * C + C / 2..5 * C + C / 2, C..2 * C + C / 2)
        );
    }

    #[test]
    fn a_paced_snapshot_of_many_chunks_reads_back_whole() {
        let dir = tempfile::tempdir().unwrap();
        let files = SnapshotFiles::open(dir.path()).unwrap();
        let body: Vec<u8> = (0..5 * WRITEBACK_CHUNK + 12_345)
            .map(|i| (i * 7 % 251) as u8)
            .collect();
        files
            .write_with(3, |w| {
                for piece in body.chunks(64 << 10) {
                    w.write_all(piece)?;
                }
                assert_eq!(
                    w.w.on,
                    cfg!(target_os = "linux"),
                    "pacing is in use on Linux"
                );
                // Ranges are file offsets (the magic counts); the last two chunks were started
                // and are left to the final fsync.
                assert_eq!(
                    w.w.progress.waited,
                    4 * WRITEBACK_CHUNK + MAGIC.len() as u64
                );
                Ok(())
            })
            .unwrap();
        assert_eq!(files.read(3).unwrap(), body);
    }

    /// A tree of `n` nodes of 100 bytes under `/n`.
    fn tree_of(n: u32) -> Tree {
        use crate::acl::{Acl, intern};
        use crate::txn::{Txn, TxnOp};
        let mut t = Tree::new();
        let mut zxid = 0;
        let mut create = |t: &mut Tree, path: String| {
            zxid += 1;
            t.apply(&Txn {
                zxid,
                time: 0,
                session: 0,
                op: TxnOp::Create {
                    path,
                    data: vec![7; 100],
                    acl: intern(&Acl::open_unsafe()),
                    owner: 0,
                    parent_cversion: 0,
                },
            });
        };
        create(&mut t, "/n".into());
        for i in 0..n {
            create(&mut t, format!("/n/{i:08}"));
        }
        t
    }

    #[test]
    fn the_latest_snapshot_is_restored_as_it_is_read_and_a_damaged_one_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let files = SnapshotFiles::open(dir.path()).unwrap();
        let older = tree_of(10);
        // Several read buffers' worth, so nodes are cut across the restorer's pieces.
        let newer = tree_of(30_000);
        files.write_view(&older.snapshot_view()).unwrap();
        let size = files.write_view(&newer.snapshot_view()).unwrap();
        assert!(size > 3 * Restorer::CHUNK as u64, "{size} bytes");
        let (zxid, tree) = files.latest_tree().unwrap().unwrap();
        assert_eq!(zxid, newer.last_zxid());
        assert_eq!(tree.snapshot(), newer.snapshot());
        // One byte of a node's data flipped: it decodes, but the checksum gives it away.
        let p = files.path(newer.last_zxid());
        let mut bytes = std::fs::read(&p).unwrap();
        let at = bytes.len() / 2;
        bytes[at] ^= 0x01;
        std::fs::write(&p, &bytes).unwrap();
        let (zxid, tree) = files.latest_tree().unwrap().unwrap();
        assert_eq!(zxid, older.last_zxid());
        assert_eq!(tree.snapshot(), older.snapshot());
    }
}
