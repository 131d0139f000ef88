//! The transaction log as files of its own, as ZooKeeper keeps it (`log.<zxid>`), instead of a
//! column family of the storage engine. A log is written once, read at start and by a leader
//! syncing a follower, and dropped a snapshot later; in the engine every entry was also inserted
//! into a memtable, flushed to a table file and compacted before a snapshot made it garbage
//! (about a tenth of a standalone server's CPU under writes, and the memtables' memory).
//!
//! A directory holds segments `log.<first zxid, 16 hex digits>`: `MAGIC`, then records, each a
//! 16-byte header — payload length (u32), CRC-32 of zxid and payload (u32), zxid (i64), all
//! little-endian — and the payload (the encoded txn). A batch of records is written at the end of
//! the newest segment with one `write` and one `fdatasync`; nothing is acknowledged before that
//! returns. A segment is closed when it reaches [`SEGMENT_BYTES`] or when a snapshot asks for it
//! ([`LogFiles::roll`]), so a snapshot's purge removes whole files.
//!
//! Starting a segment — create, write the magic and the zeros ahead, sync the file and its
//! directory — costs milliseconds; on the commit path it would stall every write waiting for
//! that batch. So a thread of the log's own prepares the next segment ahead (when the log is
//! opened and whenever a segment start has used the one prepared): a file `log.next`, synced with
//! its directory entry, which the segment start only renames to its `log.<zxid>` name (and
//! creates one itself only if none is ready). The rename is
//! not synced before the first batch in it is acknowledged; a crash may leave the name
//! `log.next` on a file that holds records, and opening gives it its name then (a `log.next`
//! with no good record is a spare never used, and is removed).
//!
//! Crash safety: a segment becomes the newest only after the one before it was synced whole, and
//! a batch is written only after the one before it was synced, so only the newest segment's last
//! batch can be torn. It was written over zeros, so what a crash kept it from writing is still
//! zeros. Opening scans the newest segment and cuts it at a torn record — cut short by the end of
//! the file, or failing its CRC with a sector of it still zeros: a write never acknowledged — and
//! removes it if nothing is left but the magic. A record that fails its CRC though written whole
//! may have been acknowledged: that, and a bad record anywhere else, is damage and an error
//! (see [`judge`]).

use parking_lot::Mutex;
use roster_core::Zxid;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;

const MAGIC: &[u8; 8] = b"RSTRLOG1";
const PREFIX: &str = "log.";
/// The next segment, prepared ahead (see the module's notes).
const SPARE: &str = "log.next";
const HEADER: usize = 16;
/// A segment is closed once it holds this much: the next batch starts a new one.
pub const SEGMENT_BYTES: u64 = 64 << 20;
/// How far ahead of its records a segment is filled with zeros. A synced write that stays
/// inside the file's length is a data-only fdatasync; one that grows the file also commits the
/// file system's journal, which on ext4 (data=ordered) first waits for other files' dirty data —
/// a snapshot being written, say. So the file is grown by this much at a time, in the write
/// that needs it, and most batches land in zeros written before.
const PAD_BYTES: u64 = 1 << 20;
static ZEROS: [u8; 64 << 10] = [0; 64 << 10];

/// Records encoded for one synced write, in the file format.
#[derive(Default)]
pub struct Staged {
    buf: Vec<u8>,
    first: Option<Zxid>,
    last: Zxid,
}

impl Staged {
    /// Add the record for `zxid`, whose payload `encode` appends to the buffer it is given.
    /// Zxids must increase.
    pub fn push(&mut self, zxid: Zxid, encode: impl FnOnce(&mut Vec<u8>)) {
        debug_assert!(
            self.first.is_none() || zxid > self.last,
            "zxids out of order"
        );
        let at = self.buf.len();
        self.buf.extend_from_slice(&[0; HEADER]);
        encode(&mut self.buf);
        let len = (self.buf.len() - at - HEADER) as u32;
        let zx = zxid.to_le_bytes();
        let mut crc = crc32fast::Hasher::new();
        crc.update(&zx);
        crc.update(&self.buf[at + HEADER..]);
        let h = &mut self.buf[at..at + HEADER];
        h[..4].copy_from_slice(&len.to_le_bytes());
        h[4..8].copy_from_slice(&crc.finalize().to_le_bytes());
        h[8..].copy_from_slice(&zx);
        self.first.get_or_insert(zxid);
        self.last = zxid;
    }

    /// Empty it, keeping the buffer's capacity for the next batch.
    pub fn clear(&mut self) {
        self.buf.clear();
        self.first = None;
        self.last = 0;
    }

    /// Encoded size in bytes (headers included).
    pub fn bytes(&self) -> usize {
        self.buf.len()
    }

    /// The records: zxid and payload.
    pub fn records(&self) -> impl Iterator<Item = (Zxid, &[u8])> {
        let mut rest = &self.buf[..];
        std::iter::from_fn(move || {
            if rest.is_empty() {
                return None;
            }
            let len = u32::from_le_bytes(rest[..4].try_into().expect("4 bytes")) as usize;
            let zxid = i64::from_le_bytes(rest[8..16].try_into().expect("8 bytes"));
            let payload = &rest[HEADER..HEADER + len];
            rest = &rest[HEADER + len..];
            Some((zxid, payload))
        })
    }
}

struct Segment {
    first: Zxid,
    path: PathBuf,
}

/// The writer's view: every segment, oldest first; the newest open for writing.
struct Tail {
    segments: Vec<Segment>,
    file: Option<File>,
    /// Bytes of the newest segment that hold synced records (readers stop here).
    end: u64,
    /// The newest segment's length: records, then zeros.
    padded: u64,
    last: Option<Zxid>,
    /// A write or sync failed: what is on disk is unknown, nothing more is written.
    failed: bool,
}

/// The next segment, prepared ahead by the log's thread.
struct Spare {
    dir: PathBuf,
    /// `log.next`, ready: magic and zeros written, synced with its directory entry. Taken (and
    /// the file renamed) by a segment start under the tail's lock; only the thread fills it.
    ready: Mutex<Option<File>>,
}

impl Spare {
    /// Make `log.next`, unless one is ready.
    fn prepare(&self) -> io::Result<()> {
        if self.ready.lock().is_some() {
            return Ok(());
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(self.dir.join(SPARE))?;
        let end = MAGIC.len() as u64;
        file.write_all_at(MAGIC, 0)?;
        write_zeros(&file, end, end + PAD_BYTES)?;
        file.sync_data()?;
        sync_dir(&self.dir)?;
        *self.ready.lock() = Some(file);
        Ok(())
    }
}

/// The thread that prepares spares: woken by a message, it ends when the log is dropped.
fn spawn_preparer(spare: Arc<Spare>) -> io::Result<(mpsc::Sender<()>, JoinHandle<()>)> {
    let (tx, rx) = mpsc::channel::<()>();
    let handle = std::thread::Builder::new()
        .name("zab-log-prep".into())
        .spawn(move || {
            while rx.recv().is_ok() {
                if let Err(e) = spare.prepare() {
                    tracing::warn!(dir = %spare.dir.display(), error = %e,
                        "cannot prepare the next transaction log file; it will be created when needed");
                }
            }
        })?;
    Ok((tx, handle))
}

impl Tail {
    /// Segment `i` opened for reading, with how far it may be read: the newest only as far as
    /// its synced records. An open file stays readable while a purge unlinks it.
    fn open(&self, i: usize) -> io::Result<(PathBuf, File, u64)> {
        let s = &self.segments[i];
        let file = File::open(&s.path)?;
        let limit = if i + 1 == self.segments.len() {
            self.end
        } else {
            file.metadata()?.len()
        };
        Ok((s.path.clone(), file, limit))
    }
}

/// The log files of one member, in one directory.
pub struct LogFiles {
    dir: PathBuf,
    tail: Mutex<Tail>,
    roll: AtomicBool,
    spare: Arc<Spare>,
    /// Wakes the preparer; dropped (and the thread joined) with the log, so no preparation
    /// outlives it.
    preparer: Option<(mpsc::Sender<()>, JoinHandle<()>)>,
}

impl Drop for LogFiles {
    fn drop(&mut self) {
        if let Some((tx, handle)) = self.preparer.take() {
            drop(tx);
            let _ = handle.join();
        }
    }
}

/// How a scan of one segment ended.
#[derive(Debug, PartialEq)]
enum End {
    /// At the limit, or at a zero header (space never written).
    Clean,
    /// At a record a crash may have left half-written: cut short by the end of the file, or
    /// failing its CRC with part of it still the zeros written ahead (see [`judge`]).
    Torn(String),
    /// At a record that was written whole and has changed since (or is not ours): a bad
    /// sector, a bit flip. In the newest segment too, this may be an acknowledged write.
    Damaged(String),
}

impl End {
    fn bad(&self) -> Option<&str> {
        match self {
            End::Clean => None,
            End::Torn(why) | End::Damaged(why) => Some(why),
        }
    }
}

/// The unit a disk writes whole. Finer than any real one, so a sector a crash left unwritten
/// always shows as at least one all-zero piece.
const SECTOR: u64 = 512;

/// Whether some piece of the record at `at` (`header` then `body`), cut at sector boundaries
/// of the file, is all zeros. Each batch is written over zeros (written ahead and synced, or
/// past the end of the file), so a write a crash interrupted leaves the sectors it did not
/// reach zero, and a record it tore has such a piece; a record written whole and changed since
/// has one only if its own bytes had 512 zeros in a row there.
fn has_unwritten_sector(at: u64, header: &[u8], body: &[u8]) -> bool {
    let mut pos = at;
    let mut zeros = true;
    for &b in header.iter().chain(body) {
        zeros &= b == 0;
        pos += 1;
        if pos.is_multiple_of(SECTOR) {
            if zeros {
                return true;
            }
            zeros = true;
        }
    }
    !pos.is_multiple_of(SECTOR) && zeros
}

/// Whether a whole, good record starts anywhere in `bytes` (at any offset) with a zxid in
/// `(after, after + 2^40]` — the next record's zxid, up to 256 epochs on. A torn record's own
/// bytes hold none; a record whose length field was changed to a larger one spans the records
/// after it, and they check out.
fn holds_record(bytes: &[u8], after: Zxid) -> bool {
    (0..bytes.len().saturating_sub(HEADER - 1)).any(|p| {
        let h = &bytes[p..p + HEADER];
        let zxid = i64::from_le_bytes(h[8..].try_into().expect("8 bytes"));
        // (`after` may come from a damaged header: any value.)
        if zxid
            .checked_sub(after)
            .is_none_or(|d| d <= 0 || d > 1 << 40)
        {
            return false;
        }
        let len = u32::from_le_bytes(h[..4].try_into().expect("4 bytes")) as usize;
        let Some(payload) = bytes.get(p + HEADER..p + HEADER + len) else {
            return false;
        };
        let mut c = crc32fast::Hasher::new();
        c.update(&h[8..]);
        c.update(payload);
        c.finalize() == u32::from_le_bytes(h[4..8].try_into().expect("4 bytes"))
    })
}

/// A record at `at` that is cut short (`cut`: the file ends inside it) or fails its CRC: torn
/// by a crash, or damaged? `body` is what follows its header, up to its stated length or the end
/// of the file; `after` the zxid it should follow (the previous record's, else its own field).
/// Torn only if it could be a write cut short — the file ends inside it, or part of it is still
/// zeros — and it does not span a good record (its length field changed).
fn judge(at: u64, header: &[u8; HEADER], body: &[u8], cut: bool, after: Zxid, why: String) -> End {
    if holds_record(body, after) {
        return End::Damaged(format!(
            "{why}, and records that check out follow inside its stated length (its length field \
             is damaged)"
        ));
    }
    if cut || has_unwritten_sector(at, header, body) {
        End::Torn(why)
    } else {
        End::Damaged(format!(
            "{why}, though written whole (no part of it is the zeros an interrupted write leaves)"
        ))
    }
}

/// Visit the records of the segment `file` from the start, up to `limit` bytes, while `f`
/// returns true. Returns the offset after the last record visited and how the scan ended.
fn scan_file(
    file: &File,
    limit: u64,
    f: &mut dyn FnMut(Zxid, &[u8]) -> bool,
) -> io::Result<(u64, End)> {
    let mut r = BufReader::with_capacity(1 << 20, file);
    let mut magic = [0u8; MAGIC.len()];
    if limit < MAGIC.len() as u64 || read_full(&mut r, &mut magic)? < MAGIC.len() {
        return Ok((0, End::Torn("no segment header".into())));
    }
    if magic == [0; MAGIC.len()] {
        // Created, and a crash came before its first sync.
        return Ok((0, End::Torn("segment header never written".into())));
    }
    if &magic != MAGIC {
        return Ok((0, End::Damaged("not a log segment (bad magic)".into())));
    }
    let mut at = MAGIC.len() as u64;
    let mut payload = Vec::new();
    let mut prev: Option<Zxid> = None;
    loop {
        if at == limit {
            return Ok((at, End::Clean));
        }
        let mut h = [0u8; HEADER];
        let n = read_full(&mut r, &mut h)?;
        if n == 0 && at >= limit {
            return Ok((at, End::Clean));
        }
        if n < HEADER || at + HEADER as u64 > limit {
            return Ok((at, End::Torn(format!("record header cut short at {at}"))));
        }
        if h == [0; HEADER] {
            return Ok((at, End::Clean));
        }
        let len = u32::from_le_bytes(h[..4].try_into().expect("4 bytes")) as u64;
        let crc = u32::from_le_bytes(h[4..8].try_into().expect("4 bytes"));
        let zxid = i64::from_le_bytes(h[8..].try_into().expect("8 bytes"));
        let after = prev.unwrap_or(zxid);
        if at + HEADER as u64 + len > limit {
            payload.clear();
            (&mut r)
                .take(limit - at - HEADER as u64)
                .read_to_end(&mut payload)?;
            let why = format!("record at {at} cut short");
            return Ok((at, judge(at, &h, &payload, true, after, why)));
        }
        payload.resize(len as usize, 0);
        let got = read_full(&mut r, &mut payload)?;
        if got < payload.len() {
            payload.truncate(got);
            let why = format!("record at {at} cut short");
            return Ok((at, judge(at, &h, &payload, true, after, why)));
        }
        let mut c = crc32fast::Hasher::new();
        c.update(&h[8..]);
        c.update(&payload);
        if c.finalize() != crc {
            let why = format!("record at {at} (zxid {zxid:#x}?) fails its CRC");
            return Ok((at, judge(at, &h, &payload, false, after, why)));
        }
        if prev.is_some_and(|p| zxid <= p) {
            // Its CRC holds: written whole, so not a torn write.
            return Ok((
                at,
                End::Damaged(format!("record at {at} goes back to zxid {zxid:#x}")),
            ));
        }
        prev = Some(zxid);
        if !f(zxid, &payload) {
            return Ok((at, End::Clean));
        }
        at += HEADER as u64 + len;
    }
}

/// The last record of a segment with zxid ≤ `zxid`, the offset after it, and how the scan
/// ended.
fn last_at_or_below(file: &File, limit: u64, zxid: Zxid) -> io::Result<(Option<Zxid>, u64, End)> {
    let mut last = None;
    let (end, how) = scan_file(file, limit, &mut |z, _| {
        if z > zxid {
            return false;
        }
        last = Some(z);
        true
    })?;
    Ok((last, end, how))
}

/// Write zeros over `[from, to)` of `file`.
fn write_zeros(file: &File, mut from: u64, to: u64) -> io::Result<()> {
    while from < to {
        let n = (to - from).min(ZEROS.len() as u64) as usize;
        file.write_all_at(&ZEROS[..n], from)?;
        from += n as u64;
    }
    Ok(())
}

/// Read until `buf` is full or the end of the file; returns the bytes read.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

fn damaged(path: &Path, why: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("transaction log {} is damaged: {why}", path.display()),
    )
}

/// Damage in the newest segment, where records may have been acknowledged: what happened and
/// the operator's two ways on.
fn damaged_at(path: &Path, at: u64, why: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!(
            "transaction log {} is damaged: {why}. It was written whole, so it and the records \
             after it may be acknowledged writes, and the log is not cut there by itself. A \
             member of an ensemble: move its data directory away and start it again, and it \
             copies the state from the leader. To keep what precedes the damage and drop the \
             rest (alone, or with no healthy quorum): `truncate -s {at} {}`, then start it.",
            path.display(),
            path.display()
        ),
    )
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// At open: a `log.next` whose first record is good was a segment in use whose rename a crash
/// lost; it gets its name and joins `segments` (it can only be the newest). Without a good
/// record it is a spare never used (or a first write torn) and is removed.
fn adopt_spare(dir: &Path, segments: &mut Vec<Segment>) -> io::Result<()> {
    let spare = dir.join(SPARE);
    let file = match File::open(&spare) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    let mut first = None;
    let (end, how) = scan_file(&file, file.metadata()?.len(), &mut |z, _| {
        first = Some(z);
        false
    })?;
    if let End::Damaged(why) = &how
        && end >= MAGIC.len() as u64
    {
        // Its first record was written whole: the segment was in use.
        return Err(damaged_at(&spare, end, why));
    }
    match first {
        None => fs::remove_file(&spare)?,
        Some(z) => {
            if let Some(prev) = segments.last()
                && prev.first >= z
            {
                return Err(damaged(
                    &spare,
                    &format!(
                        "its first zxid {z:#x} is not after the segment {}",
                        prev.path.display()
                    ),
                ));
            }
            let path = dir.join(format!("{PREFIX}{:016x}", z as u64));
            fs::rename(&spare, &path)?;
            tracing::info!(segment = %path.display(), "named a log segment whose rename a crash lost");
            segments.push(Segment { first: z, path });
        }
    }
    sync_dir(dir)
}

impl LogFiles {
    /// Open (creating) the log in `dir`, cutting a torn write off the end of the newest segment.
    pub fn open(dir: &Path) -> io::Result<LogFiles> {
        fs::create_dir_all(dir)?;
        let mut segments = Vec::new();
        for e in fs::read_dir(dir)? {
            let e = e?;
            let name = e.file_name();
            let Some(hex) = name.to_str().and_then(|n| n.strip_prefix(PREFIX)) else {
                continue;
            };
            if let Ok(first) = u64::from_str_radix(hex, 16) {
                segments.push(Segment {
                    first: first as Zxid,
                    path: e.path(),
                });
            }
        }
        segments.sort_unstable_by_key(|s| s.first);
        adopt_spare(dir, &mut segments)?;
        let log = LogFiles {
            dir: dir.to_path_buf(),
            tail: Mutex::new(Tail {
                segments,
                file: None,
                end: 0,
                padded: 0,
                last: None,
                failed: false,
            }),
            roll: AtomicBool::new(false),
            spare: Arc::new(Spare {
                dir: dir.to_path_buf(),
                ready: Mutex::new(None),
            }),
            preparer: None,
        };
        log.cut_after(Zxid::MAX)?;
        let mut log = log;
        match spawn_preparer(log.spare.clone()) {
            Ok(p) => {
                log.preparer = Some(p);
                log.wake_preparer();
            }
            // Segments are then created where they are needed, as before.
            Err(e) => tracing::warn!(dir = %dir.display(), error = %e,
                "cannot start the thread that prepares log files ahead"),
        }
        Ok(log)
    }

    /// Make the newest segment end after its last good record with zxid ≤ `after` (dropping
    /// segments left with none), and open it for appending.
    fn cut_after(&self, after: Zxid) -> io::Result<()> {
        let mut t = self.tail.lock();
        t.file = None;
        t.end = 0;
        t.padded = 0;
        t.last = None;
        let mut removed = false;
        while let Some(seg) = t.segments.last() {
            let path = seg.path.clone();
            if seg.first > after {
                fs::remove_file(&path)?;
                t.segments.pop();
                removed = true;
                continue;
            }
            let file = OpenOptions::new().read(true).write(true).open(&path)?;
            let len = file.metadata()?.len();
            let (last, end, how) = last_at_or_below(&file, len, after)?;
            match &how {
                End::Damaged(why) if end >= MAGIC.len() as u64 => {
                    return Err(damaged_at(&path, end, why));
                }
                End::Torn(why) if end >= MAGIC.len() as u64 => {
                    tracing::warn!(segment = %path.display(), at = end, why = %why,
                        "cutting a torn write off the end of the transaction log");
                }
                _ => {}
            }
            if last.is_none() {
                if end == 0 && matches!(how, End::Damaged(_)) {
                    // A whole header that is not ours: not a write of ours cut short.
                    return Err(damaged(&path, "not a log segment"));
                }
                fs::remove_file(&path)?;
                t.segments.pop();
                removed = true;
                continue;
            }
            if end < len {
                file.set_len(end)?;
                file.sync_all()?;
            }
            t.file = Some(file);
            t.end = end;
            t.padded = end;
            t.last = last;
            break;
        }
        if removed {
            sync_dir(&self.dir)?;
        }
        Ok(())
    }

    /// The last zxid in the log.
    pub fn last(&self) -> Option<Zxid> {
        self.tail.lock().last
    }

    /// The first zxid in the log.
    pub fn first(&self) -> Option<Zxid> {
        self.tail.lock().segments.first().map(|s| s.first)
    }

    /// Start a new segment with the next batch (a snapshot was taken: the log before it can then
    /// be removed by whole files).
    pub fn roll(&self) {
        self.roll.store(true, Ordering::Relaxed);
    }

    /// Write `staged` at the end of the log and sync it.
    pub fn append(&self, staged: &Staged) -> io::Result<()> {
        let Some(first) = staged.first else {
            return Ok(());
        };
        let mut t = self.tail.lock();
        if t.failed {
            return Err(io::Error::other(
                "an earlier log write failed; the log takes no more writes",
            ));
        }
        if t.last.is_some_and(|l| first <= l) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("zxid {first:#x} is not after the log's last"),
            ));
        }
        let roll = self.roll.swap(false, Ordering::Relaxed);
        let new_segment = t.file.is_none() || t.end >= SEGMENT_BYTES || (roll && t.last.is_some());
        if new_segment && let Err(e) = self.start_segment(&mut t, first) {
            t.failed = true;
            return Err(e);
        }
        let file = t.file.as_ref().expect("a segment is open");
        let need = t.end + staged.buf.len() as u64;
        let padded = if need > t.padded {
            need + PAD_BYTES
        } else {
            t.padded
        };
        let res = write_zeros(file, need.max(t.padded), padded)
            .and_then(|()| file.write_all_at(&staged.buf, t.end))
            .and_then(|()| file.sync_data());
        if let Err(e) = res {
            t.failed = true;
            return Err(e);
        }
        t.padded = padded;
        t.end = need;
        t.last = Some(staged.last);
        Ok(())
    }

    fn start_segment(&self, t: &mut Tail, first: Zxid) -> io::Result<()> {
        let path = self.dir.join(format!("{PREFIX}{:016x}", first as u64));
        if let Some(file) = self.spare.ready.lock().take() {
            // Not synced: if a crash loses the rename, opening finds the records under
            // `log.next` and names the file then.
            fs::rename(self.dir.join(SPARE), &path)?;
            self.wake_preparer();
            metrics::counter!("roster_backend_log_segments_total", "prepared" => "true")
                .increment(1);
            t.segments.push(Segment { first, path });
            t.file = Some(file);
            t.end = MAGIC.len() as u64;
            t.padded = MAGIC.len() as u64 + PAD_BYTES;
            return Ok(());
        }
        metrics::counter!("roster_backend_log_segments_total", "prepared" => "false").increment(1);
        self.wake_preparer();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)?;
        let end = MAGIC.len() as u64;
        file.write_all_at(MAGIC, 0)?;
        write_zeros(&file, end, end + PAD_BYTES)?;
        file.sync_data()?;
        sync_dir(&self.dir)?;
        t.segments.push(Segment { first, path });
        t.file = Some(file);
        t.end = end;
        t.padded = end + PAD_BYTES;
        Ok(())
    }

    /// Ask the thread to prepare a spare (it does nothing if one is ready).
    fn wake_preparer(&self) {
        if let Some((tx, _)) = &self.preparer {
            let _ = tx.send(());
        }
    }

    /// Wait until a spare is ready (tests).
    #[cfg(test)]
    fn spare_ready(&self) -> bool {
        for _ in 0..500 {
            if self.spare.ready.lock().is_some() {
                return true;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        false
    }

    /// The segments that may hold zxids > `after`, opened for reading (see [`Tail::open`]).
    fn readable_after(&self, after: Zxid) -> io::Result<Vec<(PathBuf, File, u64)>> {
        let t = self.tail.lock();
        let mut out = Vec::new();
        for i in 0..t.segments.len() {
            if t.segments
                .get(i + 1)
                .is_some_and(|next| next.first <= after.saturating_add(1))
            {
                continue;
            }
            out.push(t.open(i)?);
        }
        Ok(out)
    }

    /// Visit every record with zxid > `after`, in order, while `f` returns true.
    pub fn scan_after(
        &self,
        after: Zxid,
        f: &mut dyn FnMut(Zxid, &[u8]) -> bool,
    ) -> io::Result<()> {
        let mut going = true;
        for (path, file, limit) in self.readable_after(after)? {
            let (_, how) = scan_file(&file, limit, &mut |z, p| {
                if z <= after {
                    return true;
                }
                going = f(z, p);
                going
            })?;
            if let Some(why) = how.bad() {
                return Err(damaged(&path, why));
            }
            if !going {
                break;
            }
        }
        Ok(())
    }

    /// The largest zxid in the log that is ≤ `zxid`.
    pub fn floor(&self, zxid: Zxid) -> io::Result<Option<Zxid>> {
        let (path, file, limit) = {
            let t = self.tail.lock();
            let Some(i) = t.segments.iter().rposition(|s| s.first <= zxid) else {
                return Ok(None);
            };
            t.open(i)?
        };
        let (best, _, how) = last_at_or_below(&file, limit, zxid)?;
        if let Some(why) = how.bad() {
            return Err(damaged(&path, why));
        }
        Ok(best)
    }

    /// Remove the segments holding only zxids ≤ `zxid` (never the newest).
    pub fn purge_through(&self, zxid: Zxid) -> io::Result<()> {
        let mut t = self.tail.lock();
        let n = t
            .segments
            .windows(2)
            .take_while(|w| w[1].first <= zxid.saturating_add(1))
            .count();
        let gone: Vec<Segment> = t.segments.drain(..n).collect();
        drop(t);
        // Unlinked without the lock: freeing a large file's blocks takes a while, and the
        // writer must not wait for it.
        for s in &gone {
            fs::remove_file(&s.path)?;
        }
        if !gone.is_empty() {
            sync_dir(&self.dir)?;
        }
        Ok(())
    }

    /// Drop every record after `zxid` (ZAB TRUNC), durably.
    pub fn truncate_after(&self, zxid: Zxid) -> io::Result<()> {
        self.cut_after(zxid)
    }

    /// Drop the whole log, durably.
    pub fn clear(&self) -> io::Result<()> {
        let mut t = self.tail.lock();
        t.file = None;
        t.end = 0;
        t.padded = 0;
        t.last = None;
        for s in t.segments.drain(..) {
            fs::remove_file(&s.path)?;
        }
        drop(t);
        sync_dir(&self.dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn staged(zxids: impl IntoIterator<Item = Zxid>) -> Staged {
        let mut s = Staged::default();
        for z in zxids {
            s.push(z, |b| b.extend_from_slice(format!("txn {z}").as_bytes()));
        }
        s
    }

    /// Records whose payloads are `n` bytes, spanning several sectors.
    fn staged_big(zxids: impl IntoIterator<Item = Zxid>, n: usize) -> Staged {
        let mut s = Staged::default();
        for z in zxids {
            s.push(z, |b| b.resize(b.len() + n, b'x'));
        }
        s
    }

    fn all(log: &LogFiles, after: Zxid) -> Vec<(Zxid, String)> {
        let mut v = Vec::new();
        log.scan_after(after, &mut |z, p| {
            v.push((z, String::from_utf8(p.to_vec()).unwrap()));
            true
        })
        .unwrap();
        v
    }

    fn segment_files(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n != SPARE)
            .collect();
        v.sort();
        v
    }

    fn inode(path: &Path) -> u64 {
        std::os::unix::fs::MetadataExt::ino(&fs::metadata(path).unwrap())
    }

    #[test]
    fn a_new_segment_is_the_file_prepared_ahead_and_another_is_prepared_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let log = LogFiles::open(dir.path()).unwrap();
        assert!(log.spare_ready(), "a spare is prepared when the log opens");
        let spare = inode(&dir.path().join(SPARE));
        log.append(&staged(1..=3)).unwrap();
        assert_eq!(inode(&dir.path().join("log.0000000000000001")), spare);
        assert!(
            log.spare_ready(),
            "the next one is prepared after it is used"
        );
        let next = inode(&dir.path().join(SPARE));
        assert_ne!(next, spare);
        log.roll();
        log.append(&staged(4..=5)).unwrap();
        assert_eq!(inode(&dir.path().join("log.0000000000000004")), next);
        assert_eq!(all(&log, 0).len(), 5);
        drop(log);
        let log = LogFiles::open(dir.path()).unwrap();
        assert_eq!(all(&log, 0).len(), 5);
        assert_eq!(
            segment_files(dir.path()),
            ["log.0000000000000001", "log.0000000000000004"]
        );
    }

    #[test]
    fn records_in_a_segment_whose_rename_a_crash_lost_are_kept_and_named() {
        let dir = tempfile::tempdir().unwrap();
        let log = LogFiles::open(dir.path()).unwrap();
        log.append(&staged(1..=3)).unwrap();
        assert!(log.spare_ready());
        log.roll();
        log.append(&staged(4..=6)).unwrap();
        drop(log);
        // As if the unsynced rename of the spare had not reached the disk.
        fs::rename(
            dir.path().join("log.0000000000000004"),
            dir.path().join(SPARE),
        )
        .unwrap();
        let log = LogFiles::open(dir.path()).unwrap();
        let zxids: Vec<Zxid> = all(&log, 0).into_iter().map(|(z, _)| z).collect();
        assert_eq!(zxids, [1, 2, 3, 4, 5, 6]);
        assert_eq!(
            segment_files(dir.path()),
            ["log.0000000000000001", "log.0000000000000004"]
        );
        log.append(&staged([7])).unwrap();
        drop(log);
        let log = LogFiles::open(dir.path()).unwrap();
        assert_eq!(log.last(), Some(7));
        assert_eq!(all(&log, 0).len(), 7);
    }

    #[test]
    fn a_spare_without_a_good_record_is_dropped_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let log = LogFiles::open(dir.path()).unwrap();
        log.append(&staged(1..=2)).unwrap();
        assert!(log.spare_ready());
        drop(log);
        // A first write into the spare torn by a crash: its first sector reached the disk, the
        // rest of the record did not (and is still the zeros written ahead).
        let s = staged_big([3], 2000);
        let f = OpenOptions::new()
            .write(true)
            .open(dir.path().join(SPARE))
            .unwrap();
        f.write_all_at(&s.buf[..SECTOR as usize - MAGIC.len()], MAGIC.len() as u64)
            .unwrap();
        drop(f);
        let log = LogFiles::open(dir.path()).unwrap();
        assert_eq!(log.last(), Some(2));
        assert_eq!(segment_files(dir.path()), ["log.0000000000000001"]);
        log.append(&staged([3])).unwrap();
        assert_eq!(all(&log, 0).len(), 3);
    }

    #[test]
    fn records_come_back_in_order_after_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let log = LogFiles::open(dir.path()).unwrap();
        assert_eq!(log.last(), None);
        log.append(&staged(1..=3)).unwrap();
        let seg = dir.path().join(&segment_files(dir.path())[0]);
        let len = fs::metadata(&seg).unwrap().len();
        assert!(len >= PAD_BYTES, "zeros written ahead of the records");
        log.append(&staged(4..=5)).unwrap();
        assert_eq!(
            fs::metadata(&seg).unwrap().len(),
            len,
            "a batch inside the zeros does not grow the file"
        );
        assert_eq!(
            all(&log, 2).iter().map(|r| r.0).collect::<Vec<_>>(),
            [3, 4, 5]
        );
        drop(log);
        let log = LogFiles::open(dir.path()).unwrap();
        assert_eq!((log.first(), log.last()), (Some(1), Some(5)));
        assert_eq!(all(&log, 0)[3], (4, "txn 4".to_string()));
        // Appends continue after the reopened end.
        log.append(&staged([9])).unwrap();
        assert_eq!(all(&log, 4).iter().map(|r| r.0).collect::<Vec<_>>(), [5, 9]);
        assert!(log.append(&staged([9])).is_err(), "zxids must increase");
    }

    #[test]
    fn a_torn_last_write_is_cut_off_at_open_and_nothing_before_it_is_lost() {
        let dir = tempfile::tempdir().unwrap();
        let log = LogFiles::open(dir.path()).unwrap();
        log.append(&staged(1..=3)).unwrap();
        drop(log);
        // Reopening cuts the zeros written ahead: the file ends at its last record.
        drop(LogFiles::open(dir.path()).unwrap());
        let seg = dir.path().join(&segment_files(dir.path())[0]);
        let good = fs::metadata(&seg).unwrap().len();
        // A write of records 4 and 5 that reached the disk only in part, in four ways.
        let next = staged_big(4..=5, 1500).buf;
        // Where the file's second sector after `good` starts, in `next`.
        let sector = (SECTOR - good % SECTOR + SECTOR) as usize;
        for torn in [
            next[..10].to_vec(),         // header cut short by the end of the file
            next[..HEADER + 3].to_vec(), // payload cut short by the end of the file
            {
                // Whole length, but one sector of the first record never written: zeros.
                let mut b = next.clone();
                b[sector..sector + SECTOR as usize].fill(0);
                b
            },
            {
                // Only the second record's last sector: the first is zeros up to it.
                let mut b = next.clone();
                let keep = b.len() - 100;
                b[..keep].fill(0);
                b
            },
        ] {
            let f = OpenOptions::new().append(true).open(&seg).unwrap();
            f.write_all_at(&torn, good).unwrap();
            drop(f);
            let log = LogFiles::open(dir.path()).unwrap();
            assert_eq!(log.last(), Some(3));
            assert_eq!(
                fs::metadata(&seg).unwrap().len(),
                good,
                "torn bytes cut off"
            );
            assert_eq!(all(&log, 0).len(), 3);
        }
        // And a write after the cut is read back whole.
        let log = LogFiles::open(dir.path()).unwrap();
        log.append(&staged(4..=5)).unwrap();
        drop(log);
        let log = LogFiles::open(dir.path()).unwrap();
        assert_eq!(
            all(&log, 0).iter().map(|r| r.0).collect::<Vec<_>>(),
            [1, 2, 3, 4, 5]
        );
    }

    /// The newest segment's file, its bytes, and the offsets of its records.
    fn newest(dir: &Path) -> (PathBuf, Vec<u8>, Vec<usize>) {
        let path = dir.join(segment_files(dir).last().unwrap());
        let bytes = fs::read(&path).unwrap();
        let mut at = MAGIC.len();
        let mut offsets = Vec::new();
        while at + HEADER <= bytes.len() && bytes[at..at + HEADER] != [0; HEADER] {
            offsets.push(at);
            at += HEADER + u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        }
        (path, bytes, offsets)
    }

    #[test]
    fn damage_to_an_acknowledged_record_of_the_newest_segment_refuses_to_open() {
        // Each way of damaging record 2 of 5 (two synced batches, zeros ahead of them), all of
        // which a torn-write cut would have taken for the end of the log, dropping 2..=5.
        type Damage = fn(&mut [u8], usize);
        let damages: [(&str, Damage); 4] = [
            ("payload bit flip", |b, at| b[at + HEADER + 700] ^= 0x10),
            ("zxid bit flip", |b, at| b[at + 9] ^= 0x01),
            // Longer: its stated length now spans records 3.. and the zeros after them.
            ("length grown", |b, at| b[at + 2] ^= 0x01),
            // Shorter: the CRC is checked over part of its payload.
            ("length shrunk", |b, at| b[at + 1] ^= 0x04),
        ];
        for (what, damage) in damages {
            let dir = tempfile::tempdir().unwrap();
            let log = LogFiles::open(dir.path()).unwrap();
            log.append(&staged_big(1..=3, 1500)).unwrap();
            log.append(&staged_big(4..=5, 1500)).unwrap();
            drop(log);
            let (path, mut bytes, offsets) = newest(dir.path());
            assert_eq!(offsets.len(), 5);
            damage(&mut bytes, offsets[1]);
            fs::write(&path, &bytes).unwrap();
            let err = LogFiles::open(dir.path()).err().expect(what);
            let msg = err.to_string();
            assert!(msg.contains("is damaged"), "{what}: {msg}");
            if what == "length grown" {
                assert!(msg.contains("length field"), "{msg}");
            }
            let cut = format!("truncate -s {} {}", offsets[1], path.display());
            assert!(msg.contains(&cut), "{what}: {msg}");
            assert_eq!(fs::read(&path).unwrap(), bytes, "{what}: nothing cut");
            // The way on the message gives: drop the damaged record and all after it.
            OpenOptions::new()
                .write(true)
                .open(&path)
                .unwrap()
                .set_len(offsets[1] as u64)
                .unwrap();
            let log = LogFiles::open(dir.path()).unwrap();
            assert_eq!(log.last(), Some(1), "{what}");
        }
    }

    #[test]
    fn the_search_for_good_records_takes_any_zxid_a_damaged_header_gives() {
        let good = staged([5]).buf;
        let mut body = vec![0xffu8; 40]; // zxid fields of i64::MAX and -1 in there
        body.extend_from_slice(&good);
        for after in [-1, 0, 4] {
            assert!(holds_record(&body, after), "after {after}");
        }
        for after in [5, i64::MAX, i64::MIN] {
            assert!(!holds_record(&body, after), "after {after}");
        }
        assert!(
            !holds_record(&good[..good.len() - 1], 4),
            "a record cut short"
        );
    }

    #[test]
    fn a_record_that_goes_back_in_zxid_is_damage() {
        let dir = tempfile::tempdir().unwrap();
        let log = LogFiles::open(dir.path()).unwrap();
        log.append(&staged(1..=2)).unwrap();
        drop(log);
        let (path, mut bytes, offsets) = newest(dir.path());
        // Record 1 written again after 2, whole (its CRC holds).
        let first = bytes[offsets[0]..offsets[1]].to_vec();
        let end = *offsets.last().unwrap() + (offsets[1] - offsets[0]);
        bytes[end..end + first.len()].copy_from_slice(&first);
        fs::write(&path, &bytes).unwrap();
        let err = LogFiles::open(dir.path()).err().expect("refused");
        assert!(err.to_string().contains("goes back"), "{err}");
    }

    #[test]
    fn a_newest_segment_whose_header_never_reached_the_disk_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let log = LogFiles::open(dir.path()).unwrap();
        log.append(&staged(1..=2)).unwrap();
        drop(log);
        // Created and grown, and a crash before its first sync: zeros where the magic goes.
        fs::write(dir.path().join("log.0000000000000003"), vec![0; 4096]).unwrap();
        let log = LogFiles::open(dir.path()).unwrap();
        assert_eq!(log.last(), Some(2));
        assert_eq!(segment_files(dir.path()), ["log.0000000000000001"]);
    }

    #[test]
    fn damage_before_the_newest_segment_is_an_error_not_a_silent_cut() {
        let dir = tempfile::tempdir().unwrap();
        let log = LogFiles::open(dir.path()).unwrap();
        log.append(&staged(1..=3)).unwrap();
        log.roll();
        log.append(&staged(4..=6)).unwrap();
        drop(log);
        let old = dir.path().join(&segment_files(dir.path())[0]);
        let mut bytes = fs::read(&old).unwrap();
        // In the payload of the second record.
        let second = MAGIC.len() + HEADER + "txn 1".len();
        bytes[second + HEADER + 1] ^= 0xff;
        fs::write(&old, bytes).unwrap();
        let log = LogFiles::open(dir.path()).unwrap();
        let err = log.scan_after(0, &mut |_, _| true).unwrap_err();
        assert!(err.to_string().contains("damaged"), "{err}");
        assert!(err.to_string().contains("CRC"), "{err}");
    }

    #[test]
    fn an_empty_or_half_created_newest_segment_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let log = LogFiles::open(dir.path()).unwrap();
        log.append(&staged(1..=2)).unwrap();
        drop(log);
        // A crash between creating the next segment and writing its first batch.
        fs::write(dir.path().join("log.0000000000000003"), &MAGIC[..5]).unwrap();
        let log = LogFiles::open(dir.path()).unwrap();
        assert_eq!(log.last(), Some(2));
        assert_eq!(segment_files(dir.path()), ["log.0000000000000001"]);
        fs::write(dir.path().join("log.0000000000000003"), MAGIC).unwrap();
        drop(log);
        let log = LogFiles::open(dir.path()).unwrap();
        assert_eq!(segment_files(dir.path()), ["log.0000000000000001"]);
        log.append(&staged([3])).unwrap();
        assert_eq!(log.last(), Some(3));
    }

    #[test]
    fn a_foreign_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(
            dir.path().join("log.0000000000000001"),
            b"something else entirely",
        )
        .unwrap();
        let err = LogFiles::open(dir.path()).err().expect("refused");
        assert!(err.to_string().contains("not a log segment"), "{err}");
    }

    #[test]
    fn rolls_make_purge_remove_whole_files_and_keep_what_a_snapshot_needs() {
        let dir = tempfile::tempdir().unwrap();
        let log = LogFiles::open(dir.path()).unwrap();
        for chunk in [1..=10, 11..=20, 21..=30] {
            log.append(&staged(chunk)).unwrap();
            log.roll();
        }
        assert_eq!(segment_files(dir.path()).len(), 3);
        // A snapshot at 15: the first segment (1..=10) goes, the second holds 16..=20.
        log.purge_through(15).unwrap();
        assert_eq!(
            segment_files(dir.path()),
            ["log.000000000000000b", "log.0000000000000015"]
        );
        assert_eq!(all(&log, 15).first().map(|r| r.0), Some(16));
        // Never the newest segment, even when a snapshot covers it.
        log.purge_through(40).unwrap();
        assert_eq!(segment_files(dir.path()), ["log.0000000000000015"]);
        assert_eq!(log.first(), Some(21));
    }

    #[test]
    fn floor_finds_the_largest_logged_zxid_at_or_below() {
        let dir = tempfile::tempdir().unwrap();
        let log = LogFiles::open(dir.path()).unwrap();
        assert_eq!(log.floor(5).unwrap(), None);
        log.append(&staged([3, 4, 5])).unwrap();
        log.roll();
        // A new epoch: zxids jump.
        log.append(&staged([(1 << 32) + 1, (1 << 32) + 2])).unwrap();
        assert_eq!(log.floor(2).unwrap(), None);
        assert_eq!(log.floor(4).unwrap(), Some(4));
        assert_eq!(log.floor(1 << 32).unwrap(), Some(5));
        assert_eq!(log.floor((1 << 32) + 1).unwrap(), Some((1 << 32) + 1));
        assert_eq!(log.floor(i64::MAX).unwrap(), Some((1 << 32) + 2));
    }

    #[test]
    fn truncate_drops_later_records_and_segments_durably() {
        let dir = tempfile::tempdir().unwrap();
        let log = LogFiles::open(dir.path()).unwrap();
        log.append(&staged(1..=5)).unwrap();
        log.roll();
        log.append(&staged(6..=9)).unwrap();
        log.truncate_after(3).unwrap();
        assert_eq!(log.last(), Some(3));
        assert_eq!(segment_files(dir.path()), ["log.0000000000000001"]);
        log.append(&staged([7])).unwrap();
        drop(log);
        let log = LogFiles::open(dir.path()).unwrap();
        assert_eq!(
            all(&log, 0).iter().map(|r| r.0).collect::<Vec<_>>(),
            [1, 2, 3, 7]
        );
        log.clear().unwrap();
        assert_eq!((log.first(), log.last()), (None, None));
        assert!(segment_files(dir.path()).is_empty());
        log.append(&staged([100])).unwrap();
        assert_eq!(all(&log, 0).len(), 1);
    }

    #[test]
    fn a_full_segment_is_closed_and_the_next_batch_starts_another() {
        let dir = tempfile::tempdir().unwrap();
        let log = LogFiles::open(dir.path()).unwrap();
        let big = vec![7u8; (SEGMENT_BYTES / 2) as usize];
        for z in 1..=3 {
            let mut s = Staged::default();
            s.push(z, |b| b.extend_from_slice(&big));
            log.append(&s).unwrap();
        }
        assert_eq!(
            segment_files(dir.path()),
            ["log.0000000000000001", "log.0000000000000003"]
        );
        let mut n = 0;
        log.scan_after(0, &mut |_, p| {
            n += p.len();
            true
        })
        .unwrap();
        assert_eq!(n, big.len() * 3);
    }

    #[test]
    fn a_reader_sees_only_synced_records_and_survives_a_purge() {
        let dir = tempfile::tempdir().unwrap();
        let log = LogFiles::open(dir.path()).unwrap();
        log.append(&staged(1..=3)).unwrap();
        log.roll();
        log.append(&staged(4..=6)).unwrap();
        let mut seen = Vec::new();
        log.scan_after(0, &mut |z, _| {
            if z == 1 {
                // A snapshot's purge and more writes while the reader is in the first file.
                log.purge_through(5).unwrap();
                log.append(&staged([7])).unwrap();
            }
            seen.push(z);
            true
        })
        .unwrap();
        assert_eq!(
            seen,
            [1, 2, 3, 4, 5, 6],
            "the end was fixed when the scan began"
        );
    }
}
