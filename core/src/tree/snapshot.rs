//! Snapshots of the whole state (nodes, sessions, last zxid), for storage and for shipping to a
//! lagging replica. Encoded with postcard; nodes in path order so equal trees give equal bytes.

use super::{Node, SessionMeta, Tree};
use crate::acl::Acl;
use crate::stat::OwnerKind;
use crate::{SessionId, Stat, Zxid, path};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

#[derive(Serialize, Deserialize)]
struct SnapNode {
    path: String,
    data: Vec<u8>,
    acl: Vec<Acl>,
    stat: Stat,
}

#[derive(Serialize, Deserialize)]
struct Snap {
    last_zxid: Zxid,
    sessions: Vec<(SessionId, SessionMeta)>,
    nodes: Vec<SnapNode>,
}

/// A snapshot that could not be decoded.
#[derive(Debug, thiserror::Error)]
#[error("corrupt snapshot: {0}")]
pub struct SnapshotError(String);

impl Tree {
    /// Serialize the whole state.
    pub fn snapshot(&self) -> Vec<u8> {
        let mut paths: Vec<&String> = self.nodes.keys().collect();
        paths.sort();
        let snap = Snap {
            last_zxid: self.last_zxid,
            sessions: self.sessions.iter().map(|(k, v)| (*k, v.clone())).collect(),
            nodes: paths
                .into_iter()
                .map(|p| {
                    let n = &self.nodes[p];
                    SnapNode {
                        path: p.clone(),
                        data: n.data.clone(),
                        acl: n.acl.to_vec(),
                        stat: n.stat,
                    }
                })
                .collect(),
        };
        postcard::to_stdvec(&snap).expect("in-memory serialization cannot fail")
    }

    /// Rebuild a tree from `snapshot()` bytes. Watches start empty.
    pub fn restore(bytes: &[u8]) -> Result<Tree, SnapshotError> {
        let snap: Snap = postcard::from_bytes(bytes).map_err(|e| SnapshotError(e.to_string()))?;
        let mut t = Tree::new();
        t.nodes.clear();
        t.last_zxid = snap.last_zxid;
        t.sessions = snap.sessions.into_iter().collect();
        t.data_size = 0;
        for n in snap.nodes {
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
                n.path,
                Node {
                    data: n.data,
                    acl: n.acl.into(),
                    stat: n.stat,
                    children: BTreeSet::new(),
                },
            );
        }
        // Nodes are in path order, so every parent precedes its children.
        let paths: Vec<String> = t
            .nodes
            .keys()
            .filter(|p| p.as_str() != "/")
            .cloned()
            .collect();
        for p in paths {
            let parent = t
                .nodes
                .get_mut(path::parent(&p))
                .ok_or_else(|| SnapshotError(format!("orphan node {p:?}")))?;
            parent.children.insert(path::name(&p).to_owned());
        }
        for n in t.nodes.values_mut() {
            if n.children.len() as i32 != n.stat.num_children {
                return Err(SnapshotError("child count mismatch".into()));
            }
        }
        Ok(t)
    }

    /// A comparable digest of the state (paths, data, ACLs, stats, sessions), for tests and
    /// replica checks.
    pub fn digest(&self) -> u32 {
        crc32fast::hash(&self.snapshot())
    }
}
