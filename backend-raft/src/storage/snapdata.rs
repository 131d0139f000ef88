//! A raft snapshot on disk and in flight, as a stream: a member never holds a snapshot's
//! encoding whole beside the tree it is or becomes (a production tree is as large as memory
//! allows, and anything holding it twice halves what a member can serve).
//!
//! On disk a snapshot is a file in `SnapshotFiles`' frame (magic, body, checksum) whose body is
//! [`HEAD_MAGIC`], the length of the head (u32, little-endian), the head (postcard: the last log
//! id and the membership it covers), then the tree's snapshot encoding. It is written from a
//! frozen view as it is encoded and read back as it is restored. A file of an older version
//! (a postcard `StoredSnapshot`, the encoding inside it) is still read, whole.
//!
//! In flight ([`SnapData`], openraft's `SnapshotData`): the current snapshot is handed out as
//! its file opened at the encoding, and the sender reads it a piece at a time; the receiver
//! restores the tree as the pieces arrive and installs the tree.

use super::state_machine::StoredSnapshot;
use super::{decode, encode};
use crate::types::{LogId, SnapshotMeta, StoredMembership};
use roster_core::Zxid;
use roster_core::snapfiles::{Body, SnapshotFiles};
use roster_core::tree::Tree;
use roster_core::tree::snapshot::SnapshotView;
use serde::{Deserialize, Serialize};
use std::io::{self, Read, Write};

/// Marks a body in the streamed format (an older body starts with postcard's tag of an
/// `Option`, 0 or 1).
pub(crate) const HEAD_MAGIC: &[u8; 8] = b"RAFTSNP2";
/// A head is a log id and a membership: far below this; more means a damaged file.
const MAX_HEAD: u32 = 16 << 20;

#[derive(Serialize, Deserialize)]
struct Head {
    last_log_id: Option<LogId>,
    membership: StoredMembership,
}

/// A snapshot's state as openraft carries it (`SnapshotData`).
pub enum SnapData {
    /// The tree's snapshot encoding in memory: a member without a snapshot directory (tests), a
    /// snapshot small enough for one frame, a file of an older version.
    Bytes(Vec<u8>),
    /// A snapshot file, opened and read up to the tree's encoding, which is what is left of it.
    File(Body),
    /// A tree restored as its snapshot's pieces arrived, ready to install.
    Tree(Box<Tree>),
}

impl std::fmt::Debug for SnapData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SnapData::Bytes(b) => write!(f, "SnapData::Bytes({} bytes)", b.len()),
            SnapData::File(b) => write!(f, "SnapData::File({b:?})"),
            SnapData::Tree(t) => write!(f, "SnapData::Tree(zxid {:#x})", t.last_zxid()),
        }
    }
}

fn invalid(what: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

impl SnapData {
    /// The tree it holds, restoring it as it is read (blocking: call off the runtime). A file
    /// is checked against its checksum once read; a damaged one is an error.
    pub fn into_tree(self) -> io::Result<Tree> {
        match self {
            SnapData::Bytes(b) => Tree::restore(&b).map_err(invalid),
            SnapData::File(mut body) => match Tree::restore_from(&mut body) {
                Ok(tree) => {
                    body.verify()?;
                    Ok(tree)
                }
                Err(e) => {
                    // Damage usually shows first as bytes that do not decode: read the rest, so
                    // a failed checksum names the cause.
                    io::copy(&mut body, &mut io::sink())?;
                    let path = body.path().to_path_buf();
                    body.verify()?;
                    Err(invalid(format_args!("{}: {e}", path.display())))
                }
            },
            SnapData::Tree(t) => Ok(*t),
        }
    }
}

/// Stream `view` as the snapshot file of the log index `meta` covers. Returns its size.
pub(crate) fn write_file(
    files: &SnapshotFiles,
    meta: &SnapshotMeta,
    view: &SnapshotView,
) -> io::Result<u64> {
    let head = encode(&Head {
        last_log_id: meta.last_log_id,
        membership: meta.last_membership.clone(),
    });
    files.write_from(file_index(meta), |w: &mut dyn Write| {
        w.write_all(HEAD_MAGIC)?;
        w.write_all(&(head.len() as u32).to_le_bytes())?;
        w.write_all(&head)?;
        view.encode_to(w).map(drop)
    })
}

/// The last log entry a snapshot covers, for messages.
pub(crate) fn upto(meta: &SnapshotMeta) -> String {
    meta.last_log_id
        .as_ref()
        .map_or("the start".to_owned(), |l| l.to_string())
}

/// The file name's index for a snapshot covering `meta`.
pub(crate) fn file_index(meta: &SnapshotMeta) -> Zxid {
    meta.last_log_id.as_ref().map_or(0, |l| l.index()) as Zxid
}

/// Open the snapshot file of `index`: what it covers, and its state — the file positioned at
/// the tree's encoding, or (a file of an older version) the encoding read whole and checked.
pub(crate) fn open_file(
    files: &SnapshotFiles,
    index: Zxid,
) -> io::Result<(SnapshotMeta, SnapData)> {
    let mut body = files.open_body(index)?;
    let mut magic = [0u8; HEAD_MAGIC.len()];
    let n = (body.remaining() as usize).min(magic.len());
    body.read_exact(&mut magic[..n])?;
    if n == magic.len() && &magic == HEAD_MAGIC {
        let mut len = [0u8; 4];
        body.read_exact(&mut len)?;
        let len = u32::from_le_bytes(len);
        if len > MAX_HEAD || u64::from(len) > body.remaining() {
            return Err(invalid(format_args!(
                "{}: a head of {len} bytes",
                body.path().display()
            )));
        }
        let mut head = vec![0u8; len as usize];
        body.read_exact(&mut head)?;
        let head: Head = decode("snapshot head", &head)?;
        let meta = SnapshotMeta {
            last_log_id: head.last_log_id,
            last_membership: head.membership,
        };
        return Ok((meta, SnapData::File(body)));
    }
    // An older version's file: a `StoredSnapshot`, read whole.
    let mut whole = magic[..n].to_vec();
    body.read_to_end(&mut whole)?;
    body.verify()?;
    let s: StoredSnapshot = decode("snapshot", &whole)?;
    Ok(s.into_parts())
}

/// A snapshot's encoding handed out a piece at a time, for sending.
pub(crate) struct Pieces {
    src: Src,
    total: u64,
    taken: u64,
}

enum Src {
    Bytes(Vec<u8>),
    /// `None` once read to its end and checked.
    File(Option<Body>),
}

impl Pieces {
    pub(crate) fn new(data: SnapData) -> Pieces {
        let src = match data {
            SnapData::Bytes(b) => Src::Bytes(b),
            SnapData::File(body) => Src::File(Some(body)),
            // Not handed out by a state machine; encode it rather than refuse.
            SnapData::Tree(t) => Src::Bytes(t.snapshot()),
        };
        let total = match &src {
            Src::Bytes(b) => b.len() as u64,
            Src::File(b) => b.as_ref().map_or(0, Body::remaining),
        };
        Pieces {
            src,
            total,
            taken: 0,
        }
    }

    /// The encoding's length.
    pub(crate) fn total(&self) -> u64 {
        self.total
    }

    /// Where the next piece starts.
    pub(crate) fn offset(&self) -> u64 {
        self.taken
    }

    /// The next piece, of at most `max` bytes (empty once all is taken). Reads a file (blocking:
    /// call off the runtime), and checks its checksum before handing out its last piece, so a
    /// damaged file is never sent whole.
    pub(crate) fn next(&mut self, max: usize) -> io::Result<Vec<u8>> {
        let n = (self.total - self.taken).min(max as u64) as usize;
        let piece = match &mut self.src {
            Src::Bytes(b) => b[self.taken as usize..][..n].to_vec(),
            Src::File(body) => {
                let Some(b) = body.as_mut() else {
                    return Ok(Vec::new());
                };
                let mut piece = vec![0u8; n];
                b.read_exact(&mut piece)?;
                if b.remaining() == 0 {
                    body.take().expect("present").verify()?;
                }
                piece
            }
        };
        self.taken += n as u64;
        Ok(piece)
    }
}

/// A tree of `nodes` nodes of 200 bytes, for the snapshot tests here and in `tcp`.
#[cfg(test)]
pub(crate) fn tree_of(nodes: usize) -> Tree {
    use roster_core::acl::Acl;
    use roster_core::txn::{Txn, TxnOp};
    let mut t = Tree::new();
    for i in 1..=nodes {
        t.apply(&Txn {
            zxid: i as Zxid,
            time: 0,
            session: 0,
            op: TxnOp::Create {
                path: format!("/n{i}"),
                data: vec![i as u8; 200],
                acl: Acl::open_unsafe().into(),
                owner: 0,
                parent_cversion: 0,
            },
        });
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(index: u64) -> SnapshotMeta {
        SnapshotMeta {
            last_log_id: Some(LogId::new_term_index(3, index)),
            ..SnapshotMeta::default()
        }
    }

    /// A file is written from a view and read back as a stream: its head says what it covers,
    /// the rest is the view's encoding, handed out in pieces that join to it, and a file
    /// damaged anywhere is refused before its last piece is handed out (so it is never sent
    /// whole) and when it is restored.
    #[test]
    fn a_snapshot_file_is_read_in_pieces_and_a_damaged_one_is_never_handed_out_whole() {
        let dir = tempfile::tempdir().unwrap();
        let files = SnapshotFiles::open(dir.path()).unwrap();
        let tree = tree_of(20_000);
        let view = tree.snapshot_view();
        let encoding = view.encode();
        write_file(&files, &meta(42), &view).unwrap();
        assert_eq!(files.list().unwrap(), vec![42]);

        let (m, data) = open_file(&files, 42).unwrap();
        assert_eq!(m, meta(42));
        let mut pieces = Pieces::new(data);
        assert_eq!(pieces.total(), encoding.len() as u64);
        let mut joined = Vec::new();
        let mut count = 0;
        while pieces.offset() < pieces.total() {
            let p = pieces.next(1 << 20).unwrap();
            assert!(!p.is_empty() && p.len() <= 1 << 20);
            joined.extend_from_slice(&p);
            count += 1;
        }
        assert!(count >= 3, "{} bytes in {count} pieces", encoding.len());
        assert!(joined == encoding, "the pieces join to the view's encoding");
        let (_, data) = open_file(&files, 42).unwrap();
        assert_eq!(data.into_tree().unwrap().digest(), tree.digest());

        // One flipped byte in the middle.
        let path = dir.path().join("snapshot.000000000000002a");
        let mut bytes = std::fs::read(&path).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0x01;
        std::fs::write(&path, bytes).unwrap();
        let (_, data) = open_file(&files, 42).unwrap();
        let mut pieces = Pieces::new(data);
        let err = loop {
            match pieces.next(1 << 20) {
                Ok(_) => assert!(
                    pieces.offset() < pieces.total(),
                    "the last piece of a damaged file was handed out"
                ),
                Err(e) => break e,
            }
        };
        assert!(err.to_string().contains("checksum"), "{err}");
        let (_, data) = open_file(&files, 42).unwrap();
        assert!(data.into_tree().is_err());
    }

    /// A file an older version wrote (a whole `StoredSnapshot`) still opens.
    #[test]
    fn an_older_versions_file_still_opens() {
        let dir = tempfile::tempdir().unwrap();
        let files = SnapshotFiles::open(dir.path()).unwrap();
        let tree = tree_of(100);
        let old = encode(&StoredSnapshot::from_parts(&meta(7), tree.snapshot()));
        files.write_bytes(7, &old).unwrap();
        let (m, data) = open_file(&files, 7).unwrap();
        assert_eq!(m, meta(7));
        assert!(matches!(data, SnapData::Bytes(_)));
        assert_eq!(data.into_tree().unwrap().digest(), tree.digest());
    }
}
