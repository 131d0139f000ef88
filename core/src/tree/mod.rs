//! The replicated state: ZooKeeper's hierarchical namespace plus the session table, changed only
//! by applying `Txn`s in zxid order (`apply`), read directly by front ends, and prepared against
//! by the leader (`prep`).

mod apply;
pub mod prep;
pub mod snapshot;

use crate::acl::Acl;
use crate::stat::OwnerKind;
use crate::watch::WatchManager;
use crate::{SessionId, Stat, Zxid, path};
use imbl::{OrdMap, OrdSet};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

/// One znode. `stat.num_children` and `stat.data_length` are kept in step with `children`/`data`.
/// As in ZooKeeper, the stored `cversion` counts child *creations* (it numbers sequential nodes);
/// clients see `2 * creations - children` (creations + deletions): use [`Node::client_stat`].
/// `children` is a persistent set so that a node shared with a snapshot copies in O(1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub data: Vec<u8>,
    pub acl: Arc<[Acl]>,
    pub stat: Stat,
    pub children: OrdSet<String>,
}

impl Node {
    /// The `Stat` as clients see it.
    pub fn client_stat(&self) -> Stat {
        client_stat(&self.stat)
    }
}

/// Translate a stored stat to the client view (ZooKeeper's `DataNode.copyStat`): cversion counts
/// creations and deletions, and container / TTL markers read as `ephemeralOwner = 0`.
pub fn client_stat(stored: &Stat) -> Stat {
    let ephemeral_owner = match OwnerKind::of(stored.ephemeral_owner) {
        OwnerKind::Ephemeral(s) => s,
        _ => 0,
    };
    Stat {
        cversion: stored
            .cversion
            .wrapping_mul(2)
            .wrapping_sub(stored.num_children),
        ephemeral_owner,
        ..*stored
    }
}

/// A session as committed: what survives restarts and fail-over.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionMeta {
    pub timeout_ms: i32,
    pub passwd: Vec<u8>,
}

/// The whole state machine. Nodes and sessions live in persistent maps: [`Tree::snapshot_view`]
/// shares them in O(1), so a snapshot is serialized without holding the tree's lock, and writes
/// after it copy only the paths they touch.
pub struct Tree {
    nodes: imbl::HashMap<Arc<str>, Arc<Node>>,
    ephemerals: HashMap<SessionId, BTreeSet<String>>,
    /// Container and TTL nodes: candidates for the container manager.
    extended: BTreeSet<String>,
    sessions: OrdMap<SessionId, SessionMeta>,
    last_zxid: Zxid,
    data_size: u64,
    watches: Mutex<WatchManager>,
}

/// Data of `/zookeeper/config` in standalone mode (no dynamic reconfig).
pub const CONFIG_NODE: &str = "/zookeeper/config";
pub const QUOTA_NODE: &str = "/zookeeper/quota";
pub const ZOOKEEPER_NODE: &str = "/zookeeper";

impl Default for Tree {
    fn default() -> Self {
        Tree::new()
    }
}

impl Tree {
    /// An empty tree holding `/`, `/zookeeper`, `/zookeeper/quota` and `/zookeeper/config`.
    pub fn new() -> Tree {
        let mut t = Tree {
            nodes: imbl::HashMap::new(),
            ephemerals: HashMap::new(),
            extended: BTreeSet::new(),
            sessions: OrdMap::new(),
            last_zxid: 0,
            data_size: 0,
            watches: Mutex::new(WatchManager::default()),
        };
        let open: Arc<[Acl]> = Acl::open_unsafe().into();
        for p in ["/", ZOOKEEPER_NODE, QUOTA_NODE, CONFIG_NODE] {
            let acl = if p == CONFIG_NODE {
                Acl::read_unsafe().into()
            } else {
                open.clone()
            };
            t.nodes.insert(
                p.into(),
                Arc::new(Node {
                    data: Vec::new(),
                    acl,
                    stat: Stat::default(),
                    children: OrdSet::new(),
                }),
            );
            // Counted as ZooKeeper counts them (a fresh 3.8 reports 44), and as a tree
            // restored from a snapshot counts them.
            t.data_size += Tree::node_size(p, &[]);
        }
        // As a fresh ZooKeeper 3.8 shows it.
        t.node_mut(CONFIG_NODE)
            .expect("just inserted")
            .stat
            .aversion = -1;
        t.link_child(ZOOKEEPER_NODE);
        t.link_child(QUOTA_NODE);
        t.link_child(CONFIG_NODE);
        t
    }

    /// The node at `path` for changing: copied first if a snapshot view still shares it.
    fn node_mut(&mut self, path: &str) -> Option<&mut Node> {
        self.nodes.get_mut(path).map(Arc::make_mut)
    }

    fn link_child(&mut self, p: &str) {
        let parent = self
            .node_mut(path::parent(p))
            .expect("parent of a system node");
        parent.children.insert(path::name(p).to_owned());
        parent.stat.num_children = parent.children.len() as i32;
    }

    /// Replace the whole state with `other`'s (a snapshot from the leader), keeping the watches of
    /// this node's clients.
    pub fn replace_state(&mut self, other: Tree) {
        let watches = std::mem::take(self.watches.get_mut());
        *self = other;
        *self.watches.get_mut() = watches;
        self.watches.get_mut().reset_all(self.last_zxid);
    }

    /// The node at `path`.
    pub fn get(&self, path: &str) -> Option<&Node> {
        self.nodes.get(path).map(|n| &**n)
    }

    /// Last applied zxid.
    pub fn last_zxid(&self) -> Zxid {
        self.last_zxid
    }

    /// Number of znodes, including the system nodes.
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// Approximate bytes of path + data held (as ZooKeeper's `approximate_data_size`).
    pub fn data_size(&self) -> u64 {
        self.data_size
    }

    /// Watches held on this node.
    pub fn watches(&self) -> &Mutex<WatchManager> {
        &self.watches
    }

    /// Committed sessions.
    pub fn sessions(&self) -> &OrdMap<SessionId, SessionMeta> {
        &self.sessions
    }

    /// Ephemeral paths owned by `session`, in path order.
    pub fn ephemerals_of(&self, session: SessionId) -> impl Iterator<Item = &String> {
        self.ephemerals.get(&session).into_iter().flatten()
    }

    /// Number of ephemeral nodes.
    pub fn ephemeral_count(&self) -> usize {
        self.ephemerals.values().map(|s| s.len()).sum()
    }

    /// Number of nodes strictly below `path` (`getAllChildrenNumber`).
    pub fn all_children_number(&self, path: &str) -> Option<usize> {
        let node = self.nodes.get(path)?;
        let mut count = 0;
        let mut stack: Vec<String> = node
            .children
            .iter()
            .map(|c| crate::path::join(path, c))
            .collect();
        while let Some(p) = stack.pop() {
            count += 1;
            if let Some(n) = self.nodes.get(p.as_str()) {
                stack.extend(n.children.iter().map(|c| crate::path::join(&p, c)));
            }
        }
        Some(count)
    }

    /// Container / TTL nodes the container manager should delete at wall-clock `now_ms`.
    pub fn expired_containers(&self, now_ms: i64) -> Vec<String> {
        self.extended
            .iter()
            .filter(|p| {
                self.nodes
                    .get(p.as_str())
                    .is_some_and(|n| container_due(&n.stat, now_ms))
            })
            .cloned()
            .collect()
    }

    /// Approximate in-memory size of the node (for metrics).
    fn node_size(path: &str, data: &[u8]) -> u64 {
        (path.len() + data.len()) as u64
    }
}

/// The nodes ZooKeeper protects from deletion (`ZKDatabase.isSpecialPath`).
pub fn is_special(p: &str) -> bool {
    matches!(p, "/" | ZOOKEEPER_NODE | QUOTA_NODE | CONFIG_NODE)
}

/// Is a container / TTL node with this stat due for removal at `now_ms`?
pub fn container_due(stat: &Stat, now_ms: i64) -> bool {
    if stat.num_children != 0 {
        return false;
    }
    match OwnerKind::of(stat.ephemeral_owner) {
        // A container that never had a child is kept (ZooKeeper: cversion > 0).
        OwnerKind::Container => stat.cversion > 0,
        OwnerKind::Ttl(ttl) => stat.mtime.saturating_add(ttl) <= now_ms,
        _ => false,
    }
}
