//! Watches held by this node's clients: one-shot data/exist/child watches and persistent /
//! persistent-recursive watches, triggered synchronously as transactions are applied so that an
//! event is queued to its client before any later read can observe the change.

use crate::{Zxid, path};
use foldhash::{HashMap as FastMap, HashSet as FastSet};
use smallvec::SmallVec;
use std::collections::HashSet;
use std::sync::Arc;

/// ZooKeeper `Watcher.Event.EventType` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(i32)]
pub enum EventType {
    None = -1,
    NodeCreated = 1,
    NodeDeleted = 2,
    NodeDataChanged = 3,
    NodeChildrenChanged = 4,
    DataWatchRemoved = 5,
    ChildWatchRemoved = 6,
    PersistentWatchRemoved = 7,
}

/// One notification for one watcher.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchedEvent {
    pub kind: EventType,
    pub path: Arc<str>,
    pub zxid: Zxid,
}

/// Where a watcher's events go. Must not block: called under the tree's write lock.
pub trait WatchSink: Send + Sync {
    fn notify(&self, event: WatchedEvent);
    /// The whole state was replaced (a follower installed a snapshot): events between the last
    /// notified zxid and `zxid` were not delivered one by one. Stream consumers resynchronise.
    fn reset(&self, _zxid: Zxid) {}
}

/// Identifies one watcher (a client connection).
pub type WatcherId = u64;

/// Watcher ids from here up belong to the server itself (the native API's change feed): they get
/// events like any watcher but are left out of watch counts and reports (`roster_watches`,
/// `wchs`, `wchc`), which describe clients.
pub const INTERNAL_WATCHERS: WatcherId = 1 << 62;

/// The kinds of watch a client can hold on a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WatchKind {
    /// Set by getData / exists.
    Data,
    /// Set by getChildren.
    Child,
    Persistent,
    PersistentRecursive,
}

const KINDS: [WatchKind; 4] = [
    WatchKind::Data,
    WatchKind::Child,
    WatchKind::Persistent,
    WatchKind::PersistentRecursive,
];

fn slot(kind: WatchKind) -> usize {
    match kind {
        WatchKind::Data => 0,
        WatchKind::Child => 1,
        WatchKind::Persistent => 2,
        WatchKind::PersistentRecursive => 3,
    }
}

/// Which watches a `removeWatches` / `checkWatches` call addresses (ZooKeeper `WatcherType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatcherType {
    Children,
    Data,
    Any,
    Persistent,
    PersistentRecursive,
}

impl WatcherType {
    pub fn from_i32(v: i32) -> Option<WatcherType> {
        Some(match v {
            1 => WatcherType::Children,
            2 => WatcherType::Data,
            3 => WatcherType::Any,
            4 => WatcherType::Persistent,
            5 => WatcherType::PersistentRecursive,
            _ => return None,
        })
    }
    fn kinds(self) -> &'static [WatchKind] {
        match self {
            WatcherType::Children => &[WatchKind::Child],
            WatcherType::Data => &[WatchKind::Data],
            WatcherType::Any => &KINDS,
            WatcherType::Persistent => &[WatchKind::Persistent],
            WatcherType::PersistentRecursive => &[WatchKind::PersistentRecursive],
        }
    }
}

/// All watches of this node. Its maps use foldhash rather than SipHash: every applied change looks
/// up its path and each ancestor (the change feed's recursive watch on `/`), and SipHash was ~2 %
/// of the server's time under writes. foldhash is seeded per process ("minimally DoS-resistant").
#[derive(Default)]
pub struct WatchManager {
    tables: [FastMap<Arc<str>, FastSet<WatcherId>>; 4],
    by_watcher: FastMap<WatcherId, FastSet<(WatchKind, Arc<str>)>>,
    sinks: FastMap<WatcherId, Arc<dyn WatchSink>>,
    recursive_count: usize,
}

impl WatchManager {
    /// Register (or replace) where a watcher's events are delivered.
    pub fn register_sink(&mut self, id: WatcherId, sink: Arc<dyn WatchSink>) {
        self.sinks.insert(id, sink);
    }

    /// Add a watch; idempotent.
    pub fn add(&mut self, id: WatcherId, kind: WatchKind, path: &str) {
        let key: Arc<str> = match self.tables[slot(kind)].get_key_value(path) {
            Some((k, _)) => k.clone(),
            None => Arc::from(path),
        };
        if self.tables[slot(kind)]
            .entry(key.clone())
            .or_default()
            .insert(id)
        {
            if kind == WatchKind::PersistentRecursive {
                self.recursive_count += 1;
            }
            self.by_watcher.entry(id).or_default().insert((kind, key));
        }
    }

    fn take(&mut self, id: WatcherId, kind: WatchKind, path: &str) -> bool {
        let table = &mut self.tables[slot(kind)];
        let Some(set) = table.get_mut(path) else {
            return false;
        };
        if !set.remove(&id) {
            return false;
        }
        if set.is_empty() {
            table.remove(path);
        }
        if kind == WatchKind::PersistentRecursive {
            self.recursive_count -= 1;
        }
        if let Some(w) = self.by_watcher.get_mut(&id) {
            w.remove(&(kind, Arc::from(path)));
            if w.is_empty() {
                self.by_watcher.remove(&id);
            }
        }
        true
    }

    /// Does the watcher hold a watch of `wtype` on `path`?
    pub fn contains(&self, id: WatcherId, wtype: WatcherType, path: &str) -> bool {
        wtype.kinds().iter().any(|k| {
            self.tables[slot(*k)]
                .get(path)
                .is_some_and(|s| s.contains(&id))
        })
    }

    /// Remove the watcher's watches of `wtype` on `path`; returns the kinds removed.
    pub fn remove(&mut self, id: WatcherId, wtype: WatcherType, path: &str) -> Vec<WatchKind> {
        wtype
            .kinds()
            .iter()
            .copied()
            .filter(|k| self.take(id, *k, path))
            .collect()
    }

    /// Forget a watcher entirely (its connection is gone).
    pub fn remove_watcher(&mut self, id: WatcherId) {
        self.sinks.remove(&id);
        if let Some(ws) = self.by_watcher.remove(&id) {
            for (kind, path) in ws {
                let table = &mut self.tables[slot(kind)];
                if let Some(set) = table.get_mut(&path) {
                    set.remove(&id);
                    if set.is_empty() {
                        table.remove(&path);
                    }
                }
                if kind == WatchKind::PersistentRecursive {
                    self.recursive_count -= 1;
                }
            }
        }
    }

    /// Fire the watches an event on `path` triggers, ZooKeeper's rules: created / changed fire
    /// data watches; deleted fires data and child watches; children-changed fires child watches.
    /// Persistent watches fire for their own path; recursive ones for the path and all below it,
    /// except children-changed. One-shot watches are removed; each watcher gets one event.
    pub fn trigger(&mut self, kind: EventType, path: &str, zxid: Zxid) {
        self.fire(kind, path, None, zxid);
    }

    /// [`WatchManager::trigger`] for a path the caller already holds shared (the tree's key of
    /// the node): events carry it without copying it. Every write fires the change feed's
    /// recursive watch, which keeps its events, so a copy per event would be both an allocation
    /// per write and a second copy of each path in memory.
    pub fn trigger_shared(&mut self, kind: EventType, path: &Arc<str>, zxid: Zxid) {
        self.fire(kind, path, Some(path), zxid);
    }

    fn fire(&mut self, kind: EventType, path: &str, shared: Option<&Arc<str>>, zxid: Zxid) {
        let oneshot: &[WatchKind] = match kind {
            EventType::NodeCreated | EventType::NodeDataChanged => &[WatchKind::Data],
            EventType::NodeDeleted => &[WatchKind::Data, WatchKind::Child],
            EventType::NodeChildrenChanged => &[WatchKind::Child],
            _ => &[],
        };
        // Usually one watcher (the feed) or a few: kept off the heap.
        let mut fired: SmallVec<[WatcherId; 8]> = SmallVec::new();
        for k in oneshot {
            if let Some(set) = self.tables[slot(*k)].remove(path) {
                for id in set {
                    if let Some(w) = self.by_watcher.get_mut(&id) {
                        w.remove(&(*k, Arc::from(path)));
                        if w.is_empty() {
                            self.by_watcher.remove(&id);
                        }
                    }
                    fired.push(id);
                }
            }
        }
        if let Some(set) = self.tables[slot(WatchKind::Persistent)].get(path) {
            fired.extend(set.iter().copied());
        }
        if kind != EventType::NodeChildrenChanged && self.recursive_count > 0 {
            let table = &self.tables[slot(WatchKind::PersistentRecursive)];
            for p in path::self_and_ancestors(path) {
                if let Some(set) = table.get(p) {
                    fired.extend(set.iter().copied());
                }
            }
        }
        if fired.is_empty() {
            return;
        }
        fired.sort_unstable();
        fired.dedup();
        let path: Arc<str> = shared.cloned().unwrap_or_else(|| Arc::from(path));
        for id in fired {
            if let Some(sink) = self.sinks.get(&id) {
                sink.notify(WatchedEvent {
                    kind,
                    path: path.clone(),
                    zxid,
                });
            }
        }
    }

    /// Tell every sink the state was replaced at `zxid` (see [`WatchSink::reset`]).
    pub fn reset_all(&self, zxid: Zxid) {
        for sink in self.sinks.values() {
            sink.reset(zxid);
        }
    }

    /// Clients' watches: total, distinct watched paths, watchers.
    pub fn counts(&self) -> (usize, usize, usize) {
        let mut watches = 0;
        let mut watchers = 0;
        let mut paths: HashSet<&Arc<str>> = HashSet::new();
        for (id, set) in &self.by_watcher {
            if *id >= INTERNAL_WATCHERS {
                continue;
            }
            watchers += 1;
            watches += set.len();
            paths.extend(set.iter().map(|(_, p)| p));
        }
        (watches, paths.len(), watchers)
    }

    /// Clients' watches per watcher, for `wchc`-style reports.
    pub fn by_watcher(&self) -> impl Iterator<Item = (WatcherId, Vec<(WatchKind, Arc<str>)>)> + '_ {
        self.by_watcher
            .iter()
            .filter(|(id, _)| **id < INTERNAL_WATCHERS)
            .map(|(id, s)| (*id, s.iter().cloned().collect()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use parking_lot::Mutex;

    #[derive(Default)]
    struct Sink(Mutex<Vec<(EventType, String)>>);
    impl WatchSink for Sink {
        fn notify(&self, e: WatchedEvent) {
            self.0.lock().push((e.kind, e.path.to_string()));
        }
    }

    #[test]
    fn oneshot_persistent_and_recursive() {
        let mut m = WatchManager::default();
        let s = Arc::new(Sink::default());
        m.register_sink(1, s.clone());
        m.add(1, WatchKind::Data, "/a");
        m.add(1, WatchKind::Child, "/a");
        m.add(1, WatchKind::PersistentRecursive, "/");
        m.trigger(EventType::NodeDeleted, "/a", 5);
        // one event despite three matching watches
        assert_eq!(s.0.lock().len(), 1);
        m.trigger(EventType::NodeDataChanged, "/a", 6);
        assert_eq!(s.0.lock().len(), 2, "recursive fires again, one-shots gone");
        m.trigger(EventType::NodeChildrenChanged, "/", 7);
        assert_eq!(
            s.0.lock().len(),
            2,
            "recursive never sends children-changed"
        );
        m.remove_watcher(1);
        assert_eq!(m.counts(), (0, 0, 0));
    }
}
