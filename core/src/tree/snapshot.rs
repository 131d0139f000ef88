//! Snapshots of the whole state (nodes, sessions, last zxid), for storage and for shipping to a
//! lagging replica. Encoded with postcard; [`Tree::snapshot`] puts nodes in path order so equal
//! trees give equal bytes, while what is stored and shipped keeps the map's order (cheaper).
//!
//! Taking a snapshot has two steps: [`Tree::snapshot_view`] shares the tree's persistent maps in
//! O(1) (call it under the tree's lock, where the state and its position agree), and
//! [`SnapshotView::encode`] serializes that frozen state without any lock, while the tree goes
//! on applying writes.

use super::{Node, SessionMeta, Tree};
use crate::acl::Acl;
use crate::stat::OwnerKind;
use crate::{SessionId, Stat, Zxid, path};
use imbl::{OrdMap, OrdSet};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

#[derive(Serialize, Deserialize)]
struct SnapNode {
    path: String,
    data: Vec<u8>,
    acl: Vec<Acl>,
    stat: Stat,
}

/// The format: what [`SnapshotView::encode_to`] writes and [`Restorer`] reads, a piece at a
/// time (so only the tests build it whole).
#[cfg_attr(not(test), allow(dead_code))]
#[derive(Serialize, Deserialize)]
struct Snap {
    last_zxid: Zxid,
    sessions: Vec<(SessionId, SessionMeta)>,
    nodes: Vec<SnapNode>,
}

/// [`SnapNode`] borrowing from the tree: the same encoding, without copying paths and data.
#[derive(Serialize)]
struct SnapNodeRef<'a> {
    path: &'a str,
    data: &'a [u8],
    acl: &'a [Acl],
    stat: Stat,
}

/// A snapshot that could not be decoded.
#[derive(Debug, thiserror::Error)]
#[error("corrupt snapshot: {0}")]
pub struct SnapshotError(String);

impl SnapshotError {
    pub fn new(why: String) -> SnapshotError {
        SnapshotError(why)
    }
}

/// The state as it was at one zxid, frozen: unaffected by later writes to the tree, cheap to take
/// and to hold (it shares unchanged nodes with the tree), `Send` so it can be encoded elsewhere.
#[derive(Clone)]
pub struct SnapshotView {
    nodes: imbl::HashMap<Arc<str>, Arc<Node>>,
    sessions: OrdMap<SessionId, SessionMeta>,
    last_zxid: Zxid,
}

impl SnapshotView {
    /// The last zxid the view includes.
    pub fn last_zxid(&self) -> Zxid {
        self.last_zxid
    }

    /// Number of znodes in the view.
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// Serialize the view: the bytes [`Tree::restore`] reads (a `Snap`), nodes in the map's own
    /// order (see [`SnapshotView::encode_to`]).
    pub fn encode(&self) -> Vec<u8> {
        self.encode_to(Vec::new())
            .expect("in-memory serialization cannot fail")
    }

    /// Serialize the view with its nodes in path order: equal states give equal bytes
    /// ([`Tree::snapshot`], digests, tests). Sorting half a million paths is about as much work
    /// as encoding them, so what is stored and shipped is [`SnapshotView::encode_to`]'s.
    pub fn encode_canonical(&self) -> Vec<u8> {
        let mut nodes: Vec<(&Arc<str>, &Arc<Node>)> = self.nodes.iter().collect();
        nodes.sort_unstable_by(|a, b| a.0.cmp(b.0));
        self.encode_nodes_to(nodes.into_iter(), Vec::new())
            .expect("in-memory serialization cannot fail")
    }

    /// Serialize the view into `w` as it goes (the bytes of [`SnapshotView::encode`]), without
    /// holding the whole encoding in memory: snapshots stream to their file. Nodes come in the
    /// order of the map they are kept in (a function of the paths and the map's hash seed):
    /// [`Tree::restore`] does not depend on it, and skipping the sort halves a snapshot's CPU
    /// time (measured under `delete` with ~500 000 nodes: the sort's string compares were 40 %
    /// of the snapshot thread).
    ///
    /// The bytes are postcard's encoding of a `Snap`, which writes a struct as its fields back
    /// to back and a sequence as its length then its elements: so the head is encoded as a tuple
    /// and the nodes one by one (borrowed, as `SnapNodeRef`) into a reused buffer, handed to `w`
    /// in 1 MiB chunks (postcard's own `io::Write` sink makes one call per byte).
    pub fn encode_to<W: std::io::Write>(&self, w: W) -> std::io::Result<W> {
        self.encode_nodes_to(self.nodes.iter(), w)
    }

    fn encode_nodes_to<'a, W: std::io::Write>(
        &'a self,
        nodes: impl ExactSizeIterator<Item = (&'a Arc<str>, &'a Arc<Node>)>,
        mut w: W,
    ) -> std::io::Result<W> {
        const CHUNK: usize = 1 << 20;
        let sessions: Vec<(SessionId, &SessionMeta)> =
            self.sessions.iter().map(|(k, v)| (*k, v)).collect();
        let head = (self.last_zxid, sessions, nodes.len());
        let mut buf = postcard::to_extend(&head, Vec::with_capacity(CHUNK + (64 << 10)))
            .map_err(std::io::Error::other)?;
        for (p, n) in nodes {
            buf =
                postcard::to_extend(&SnapNodeRef::of(p, n), buf).map_err(std::io::Error::other)?;
            if buf.len() >= CHUNK {
                w.write_all(&buf)?;
                buf.clear();
            }
        }
        w.write_all(&buf)?;
        Ok(w)
    }
}

/// Rebuilds a tree from snapshot bytes fed in pieces of any size ([`Restorer::push`]), decoding
/// each node as soon as its bytes are in: restoring needs the tree being built and one node's
/// worth of encoding, not the whole encoding and its decoded copy beside it. The pieces are
/// postcard's encoding of a `Snap`, split anywhere; a value cut by a piece's end is decoded again
/// when the next piece arrives.
pub struct Restorer {
    pending: Vec<u8>,
    /// Nodes still to come, once the head (zxid, sessions, node count) is decoded.
    left: Option<usize>,
    tree: Tree,
}

impl Default for Restorer {
    fn default() -> Self {
        Self::new()
    }
}

impl Restorer {
    /// A good size for the pieces read from a file or socket.
    pub const CHUNK: usize = 1 << 20;

    pub fn new() -> Restorer {
        let mut tree = Tree::new();
        tree.nodes.clear();
        tree.data_size = 0;
        Restorer {
            pending: Vec::new(),
            left: None,
            tree,
        }
    }

    /// Decode what `bytes` completes.
    pub fn push(&mut self, bytes: &[u8]) -> Result<(), SnapshotError> {
        if self.pending.is_empty() {
            // Nothing left over from the last piece (a whole snapshot in one piece, the first
            // piece): decode straight from it and keep only its cut-off tail.
            let used = self.decode(bytes)?;
            self.pending.extend_from_slice(&bytes[used..]);
        } else {
            self.pending.extend_from_slice(bytes);
            let pending = std::mem::take(&mut self.pending);
            let used = self.decode(&pending)?;
            self.pending = pending;
            self.pending.drain(..used);
        }
        Ok(())
    }

    /// Decode every whole value at the start of `bytes`; returns the bytes used.
    fn decode(&mut self, bytes: &[u8]) -> Result<usize, SnapshotError> {
        let mut rest = bytes;
        loop {
            match self.left {
                None => {
                    type Head = (Zxid, Vec<(SessionId, SessionMeta)>, usize);
                    let Some((head, r)) = take::<Head>(rest)? else {
                        break;
                    };
                    let (last_zxid, sessions, nodes) = head;
                    self.tree.last_zxid = last_zxid;
                    self.tree.sessions = sessions.into_iter().collect();
                    self.left = Some(nodes);
                    rest = r;
                }
                Some(0) => break,
                Some(n) => {
                    let Some((node, r)) = take::<SnapNode>(rest)? else {
                        break;
                    };
                    self.insert(node)?;
                    self.left = Some(n - 1);
                    rest = r;
                }
            }
        }
        Ok(bytes.len() - rest.len())
    }

    fn insert(&mut self, n: SnapNode) -> Result<(), SnapshotError> {
        let t = &mut self.tree;
        if n.path != "/" && path::validate(&n.path).is_err() {
            return Err(SnapshotError(format!("bad path {:?}", n.path)));
        }
        t.data_size += Tree::node_size(&n.path, &n.data);
        match OwnerKind::of(n.stat.ephemeral_owner) {
            OwnerKind::Ephemeral(s) => {
                t.ephemerals.entry(s).or_default().insert(n.path.clone());
            }
            OwnerKind::Container | OwnerKind::Ttl(_) => {
                t.extended.insert(n.path.clone());
            }
            OwnerKind::Persistent => {}
        }
        t.nodes.insert(
            n.path.into(),
            Arc::new(Node {
                data: n.data,
                acl: crate::acl::intern(&n.acl),
                stat: n.stat,
                children: OrdSet::new(),
            }),
        );
        Ok(())
    }

    /// The tree, once every node has come: parents linked to their children and checked.
    pub fn finish(self) -> Result<Tree, SnapshotError> {
        match self.left {
            Some(0) => {}
            None => return Err(SnapshotError("cut short before its first node".into())),
            Some(n) => return Err(SnapshotError(format!("cut short, {n} nodes missing"))),
        }
        let mut t = self.tree;
        let paths: Vec<Arc<str>> = t.nodes.keys().filter(|p| &***p != "/").cloned().collect();
        for p in paths {
            let parent = t
                .nodes
                .get_mut(path::parent(&p))
                .map(Arc::make_mut)
                .ok_or_else(|| SnapshotError(format!("orphan node {p:?}")))?;
            parent.children.insert(path::name(&p).to_owned());
        }
        for n in t.nodes.values() {
            if n.children.len() as i32 != n.stat.num_children {
                return Err(SnapshotError("child count mismatch".into()));
            }
        }
        Ok(t)
    }
}

/// Decode one `T` from the start of `bytes`: `None` if its bytes are not all there yet.
fn take<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<Option<(T, &[u8])>, SnapshotError> {
    match postcard::take_from_bytes::<T>(bytes) {
        Ok(v) => Ok(Some(v)),
        Err(postcard::Error::DeserializeUnexpectedEnd) => Ok(None),
        Err(e) => Err(SnapshotError(e.to_string())),
    }
}

impl<'a> SnapNodeRef<'a> {
    fn of(path: &'a str, n: &'a Node) -> Self {
        SnapNodeRef {
            path,
            data: &n.data,
            acl: &n.acl,
            stat: n.stat,
        }
    }
}

impl Tree {
    /// The current state, frozen, in O(1): see the module docs.
    pub fn snapshot_view(&self) -> SnapshotView {
        SnapshotView {
            nodes: self.nodes.clone(),
            sessions: self.sessions.clone(),
            last_zxid: self.last_zxid,
        }
    }

    /// Serialize the whole state, canonically (`snapshot_view().encode_canonical()`): equal
    /// states give equal bytes.
    pub fn snapshot(&self) -> Vec<u8> {
        self.snapshot_view().encode_canonical()
    }

    /// Rebuild a tree from `snapshot()` bytes. Watches start empty.
    pub fn restore(bytes: &[u8]) -> Result<Tree, SnapshotError> {
        let mut r = Restorer::new();
        r.push(bytes)?;
        r.finish()
    }

    /// Rebuild a tree from snapshot bytes read from `r` as they come (a file, a socket), holding
    /// no more of the encoding than a node and a read buffer. Watches start empty.
    pub fn restore_from(mut r: impl std::io::Read) -> Result<Tree, SnapshotError> {
        let mut restorer = Restorer::new();
        let mut buf = vec![0u8; Restorer::CHUNK];
        loop {
            let n = match r.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(SnapshotError(format!("reading the snapshot: {e}"))),
            };
            restorer.push(&buf[..n])?;
        }
        restorer.finish()
    }

    /// A comparable digest of the state (paths, data, ACLs, stats, sessions), for tests and
    /// replica checks.
    pub fn digest(&self) -> u32 {
        crc32fast::hash(&self.snapshot())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::txn::{Txn, TxnOp};

    #[test]
    fn the_streamed_encoding_is_a_snap_and_a_cut_one_is_refused() {
        let mut tree = Tree::new();
        tree.apply(&Txn {
            zxid: 7,
            time: 0,
            session: 5,
            op: TxnOp::CreateSession {
                timeout_ms: 4000,
                passwd: vec![0; 16],
            },
        });
        let bytes = tree.snapshot_view().encode();
        let snap: Snap = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(snap.last_zxid, 7);
        assert_eq!(snap.sessions.len(), 1);
        assert_eq!(snap.nodes.len(), tree.node_count());
        for cut in [0, 1, bytes.len() / 2, bytes.len() - 1] {
            let mut r = Restorer::new();
            r.push(&bytes[..cut]).unwrap();
            assert!(r.finish().is_err(), "cut at {cut} of {}", bytes.len());
        }
        let mut r = Restorer::new();
        for b in &bytes {
            r.push(std::slice::from_ref(b)).unwrap();
        }
        assert_eq!(r.finish().unwrap().snapshot(), tree.snapshot());
    }
}
