//! The change feed under every native stream (watch, registry subscribe, config listen, lock
//! waits, election observe): one persistent-recursive watch on `/`, fired synchronously as each
//! transaction is applied, kept in a bounded ring so a client can resume from a revision, and
//! fanned out to live subscribers.
//!
//! Ordering: the sink runs under the tree's write lock, and [`Feed::subscribe`] takes the tree's
//! read lock, so a subscriber's backlog, its snapshot of the tree and its live events meet
//! without a gap or an overlap.

use foldhash::{HashMap as FastMap, HashSet as FastSet};
use parking_lot::Mutex;
use roster_core::Zxid;
use roster_core::backend::Backend;
use roster_core::path::self_and_ancestors;
use roster_core::tree::Tree;
use roster_core::watch::{EventType, WatchKind, WatchSink, WatchedEvent, WatcherId};
use smallvec::SmallVec;
use std::collections::VecDeque;
use std::sync::Arc;
use tokio::sync::broadcast;

/// The feed's watcher id: an internal one, far from connection ids (which count up from 1).
const FEED_WATCHER: WatcherId = roster_core::watch::INTERNAL_WATCHERS;

/// What happened to a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    Created,
    Changed,
    Deleted,
}

/// One change to one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub kind: ChangeKind,
    pub path: Arc<str>,
    pub revision: Zxid,
}

/// What live subscribers receive.
#[derive(Debug, Clone)]
pub enum FeedItem {
    Change(Change),
    /// The replica was replaced wholesale at this revision (snapshot install): resynchronise.
    Reset(Zxid),
}

struct Ring {
    changes: VecDeque<Change>,
    /// Every change after this revision is in `changes`.
    floor: Zxid,
    capacity: usize,
    /// Subscribers to some subtrees only (see [`Feed::subscribe_under`]).
    scoped: Scopes,
}

/// A subscriber that is sent only the changes under its prefixes (and every reset), so writes
/// elsewhere do not wake it.
struct Scoped {
    prefixes: Vec<String>,
    tx: broadcast::Sender<FeedItem>,
}

/// The scoped subscribers, indexed by prefix: a change looks up its own path and each of its
/// ancestors (as [`roster_core::watch::WatchManager`] does for recursive watches), so what a
/// write costs does not grow with the subscribers of other subtrees — thousands of listeners
/// elsewhere cost it nothing.
#[derive(Default)]
struct Scopes {
    subs: FastMap<u64, Scoped>,
    by_prefix: ByPrefix,
    next_id: u64,
    /// Forget the subscribers that went away once there are this many: a scan (one lock per
    /// subscriber) after every quarter's growth, so a subscription costs O(1) amortised and at
    /// most a quarter more channels are kept than are live. A change forgets the ones under it
    /// that it finds gone.
    prune_at: usize,
}

impl Scopes {
    /// At least this many new subscribers between scans for the ones that went away.
    const PRUNE_MIN: usize = 64;

    fn add(&mut self, prefixes: Vec<String>, tx: broadcast::Sender<FeedItem>) -> u64 {
        if self.subs.len() >= self.prune_at {
            let gone: Vec<u64> = self
                .subs
                .iter()
                .filter(|(_, s)| s.tx.receiver_count() == 0)
                .map(|(id, _)| *id)
                .collect();
            for id in gone {
                self.remove(id);
            }
            let live = self.subs.len();
            self.prune_at = live + (live / 4).max(Self::PRUNE_MIN);
        }
        let id = self.next_id;
        self.next_id += 1;
        let prefixes = outermost(prefixes);
        index(&mut self.by_prefix, id, &prefixes);
        self.subs.insert(id, Scoped { prefixes, tx });
        id
    }

    fn remove(&mut self, id: u64) {
        if let Some(s) = self.subs.remove(&id) {
            unindex(&mut self.by_prefix, id, &s.prefixes);
        }
    }

    /// Subscriber `id` follows `prefixes` from now on (nothing if it is gone).
    fn rescope(&mut self, id: u64, prefixes: Vec<String>) {
        let Some(s) = self.subs.get_mut(&id) else {
            return;
        };
        unindex(&mut self.by_prefix, id, &s.prefixes);
        s.prefixes = outermost(prefixes);
        index(&mut self.by_prefix, id, &s.prefixes);
    }

    /// Send `change` to the subscribers under one of whose prefixes it falls; forget those
    /// found gone.
    fn send(&mut self, change: &Change) {
        if self.subs.is_empty() {
            return;
        }
        let mut gone: SmallVec<[u64; 4]> = SmallVec::new();
        for p in self_and_ancestors(&change.path) {
            for id in self.by_prefix.get(p).into_iter().flatten() {
                if let Some(s) = self.subs.get(id)
                    && s.tx.send(FeedItem::Change(change.clone())).is_err()
                {
                    gone.push(*id);
                }
            }
        }
        for id in gone {
            self.remove(id);
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.subs.len()
    }
}

type ByPrefix = FastMap<Box<str>, SmallVec<[u64; 2]>>;

fn index(by_prefix: &mut ByPrefix, id: u64, prefixes: &[String]) {
    for p in prefixes {
        by_prefix.entry(p.as_str().into()).or_default().push(id);
    }
}

fn unindex(by_prefix: &mut ByPrefix, id: u64, prefixes: &[String]) {
    for p in prefixes {
        if let Some(ids) = by_prefix.get_mut(p.as_str()) {
            ids.retain(|i| *i != id);
            if ids.is_empty() {
                by_prefix.remove(p.as_str());
            }
        }
    }
}

/// `prefixes` without duplicates and without those inside another of them, so that a change is
/// sent once however many of a subscriber's prefixes contain it. The empty prefix is `/`, as
/// for [`under`].
fn outermost(prefixes: Vec<String>) -> Vec<String> {
    let all: FastSet<&str> = prefixes
        .iter()
        .map(|p| if p.is_empty() { "/" } else { p.as_str() })
        .collect();
    let inside_another = |p: &str| self_and_ancestors(p).skip(1).any(|q| all.contains(q));
    let mut kept: Vec<String> = all
        .iter()
        .filter(|p| !inside_another(p))
        .map(|p| p.to_string())
        .collect();
    kept.sort();
    kept
}

/// What a scoped subscription follows: the subtrees under some paths, and how many of their
/// changes the subscriber may fall behind by before it is told it lagged (and resynchronises from
/// the current state).
pub struct Under {
    prefixes: Vec<String>,
    capacity: usize,
}

impl Under {
    /// Each scoped subscriber has its own channel, allocated up front (~70 bytes a slot): 256
    /// keeps a thousand per-client listeners under 20 MB, and counts only the changes in the
    /// subscriber's own subtrees.
    pub const DEFAULT_CAPACITY: usize = 256;

    /// The subtree under `prefix`.
    pub fn path(prefix: impl Into<String>) -> Under {
        Under::paths(vec![prefix.into()])
    }

    /// The subtrees under `prefixes`.
    pub fn paths(prefixes: Vec<String>) -> Under {
        Under {
            prefixes,
            capacity: Under::DEFAULT_CAPACITY,
        }
    }

    /// Allow falling behind by `n` changes (a process-wide follower of a busy subtree).
    pub fn capacity(mut self, n: usize) -> Under {
        self.capacity = n.max(1);
        self
    }
}

/// A scoped subscription whose subtrees change over its life — a connection adding and removing
/// the keys it listens to ([`Feed::subscribe_scoped`]) — so that it is woken only by changes to
/// those, not by every change under a common root. Dropped, it leaves the feed.
pub struct Scope {
    feed: std::sync::Weak<Feed>,
    id: u64,
}

impl Scope {
    /// Follow exactly the subtrees under `prefixes` from now on. Changes applied before this
    /// returns to a subtree it adds are not sent: read their state after calling it.
    pub fn set(&self, prefixes: Vec<String>) {
        if let Some(feed) = self.feed.upgrade() {
            feed.ring.lock().scoped.rescope(self.id, prefixes);
        }
    }
}

impl Drop for Scope {
    fn drop(&mut self) {
        if let Some(feed) = self.feed.upgrade() {
            feed.ring.lock().scoped.remove(self.id);
        }
    }
}

/// See the module doc.
pub struct Feed {
    ring: Mutex<Ring>,
    live: broadcast::Sender<FeedItem>,
}

/// A subscription: the changes after the requested revision that are still in the ring, then the
/// live items (`rx`). `resync` means the requested revision is older than the ring (or absent):
/// the caller must send its client the full current state at `revision` instead of the backlog.
pub struct Subscription {
    pub backlog: Vec<Change>,
    pub rx: broadcast::Receiver<FeedItem>,
    pub resync: bool,
    /// The replica's revision when the subscription was taken.
    pub revision: Zxid,
}

impl Feed {
    /// Start the feed on `backend`'s replica, keeping the last `capacity` changes.
    pub fn start(backend: &Arc<dyn Backend>, capacity: usize) -> Arc<Feed> {
        let tree = backend.tree();
        let t = tree.read();
        let (live, _) = broadcast::channel(4096);
        let capacity = capacity.max(1);
        let feed = Arc::new(Feed {
            ring: Mutex::new(Ring {
                // All of it up front: pages are resident only once written, and a ring that
                // grows doubles past its capacity (131 072 slots for 100 000, 4 MiB) and copies
                // itself on the way.
                changes: VecDeque::with_capacity(capacity),
                floor: t.last_zxid(),
                capacity,
                scoped: Scopes::default(),
            }),
            live,
        });
        let mut w = t.watches().lock();
        w.register_sink(FEED_WATCHER, Arc::new(Sink(feed.clone())));
        w.add(FEED_WATCHER, WatchKind::PersistentRecursive, "/");
        drop(w);
        feed
    }

    /// Subscribe from `from` (changes after it), reading the tree consistently with `at`, which
    /// runs under the tree's read lock at the subscription point.
    pub fn subscribe_with<R>(
        &self,
        backend: &Arc<dyn Backend>,
        from: Option<Zxid>,
        at: impl FnOnce(&Tree) -> R,
    ) -> (Subscription, R) {
        let (sub, _, r) = self.subscribe_inner(backend, None, from, at);
        (sub, r)
    }

    /// [`Feed::subscribe_with`] for the changes under `prefixes` only: the feed filters before
    /// sending, so a write anywhere else costs this subscriber nothing (a whole-feed subscriber
    /// is woken by every write in the system).
    pub fn subscribe_under<R>(
        &self,
        backend: &Arc<dyn Backend>,
        under: Under,
        from: Option<Zxid>,
        at: impl FnOnce(&Tree) -> R,
    ) -> (Subscription, R) {
        let (sub, _, r) = self.subscribe_inner(backend, Some(under), from, at);
        (sub, r)
    }

    /// [`Feed::subscribe_under`] whose subtrees can be changed later through the [`Scope`].
    pub fn subscribe_scoped<R>(
        self: &Arc<Self>,
        backend: &Arc<dyn Backend>,
        under: Under,
        from: Option<Zxid>,
        at: impl FnOnce(&Tree) -> R,
    ) -> (Subscription, Scope, R) {
        let (sub, id, r) = self.subscribe_inner(backend, Some(under), from, at);
        let scope = Scope {
            feed: Arc::downgrade(self),
            id: id.expect("a scoped subscription has an id"),
        };
        (sub, scope, r)
    }

    fn subscribe_inner<R>(
        &self,
        backend: &Arc<dyn Backend>,
        under: Option<Under>,
        from: Option<Zxid>,
        at: impl FnOnce(&Tree) -> R,
    ) -> (Subscription, Option<u64>, R) {
        let tree = backend.tree();
        let t = tree.read();
        let mut ring = self.ring.lock();
        let revision = t.last_zxid();
        let wanted = |c: &Change| {
            under
                .as_ref()
                .is_none_or(|u| u.prefixes.iter().any(|p| self::under(&c.path, p)))
        };
        let (backlog, resync) = match from {
            Some(r) if r >= ring.floor && r <= revision => (
                ring.changes
                    .iter()
                    .filter(|c| c.revision > r && wanted(c))
                    .cloned()
                    .collect(),
                false,
            ),
            _ => (Vec::new(), true),
        };
        let (rx, id) = match under {
            None => (self.live.subscribe(), None),
            Some(Under { prefixes, capacity }) => {
                let (tx, rx) = broadcast::channel(capacity);
                (rx, Some(ring.scoped.add(prefixes, tx)))
            }
        };
        drop(ring);
        let r = at(&t);
        (
            Subscription {
                backlog,
                rx,
                resync,
                revision,
            },
            id,
            r,
        )
    }

    /// The oldest revision a client can resume from.
    pub fn floor(&self) -> Zxid {
        self.ring.lock().floor
    }

    /// How many scoped subscribers a change to `path` would be sent to.
    #[cfg(test)]
    pub(crate) fn woken_by(&self, path: &str) -> usize {
        let ring = self.ring.lock();
        self_and_ancestors(path)
            .map(|p| ring.scoped.by_prefix.get(p).map_or(0, |ids| ids.len()))
            .sum()
    }
}

struct Sink(Arc<Feed>);

impl WatchSink for Sink {
    fn notify(&self, event: WatchedEvent) {
        let kind = match event.kind {
            EventType::NodeCreated => ChangeKind::Created,
            EventType::NodeDataChanged => ChangeKind::Changed,
            EventType::NodeDeleted => ChangeKind::Deleted,
            _ => return,
        };
        let change = Change {
            kind,
            path: event.path,
            revision: event.zxid,
        };
        let mut ring = self.0.ring.lock();
        if ring.changes.len() == ring.capacity
            && let Some(old) = ring.changes.pop_front()
        {
            ring.floor = old.revision;
        }
        ring.changes.push_back(change.clone());
        ring.scoped.send(&change);
        // No receivers is fine.
        let _ = self.0.live.send(FeedItem::Change(change));
    }

    fn reset(&self, zxid: Zxid) {
        let mut ring = self.0.ring.lock();
        ring.changes.clear();
        ring.floor = zxid;
        for s in ring.scoped.subs.values() {
            let _ = s.tx.send(FeedItem::Reset(zxid));
        }
        let _ = self.0.live.send(FeedItem::Reset(zxid));
    }
}

/// Is `path` `prefix` itself or below it?
pub fn under(path: &str, prefix: &str) -> bool {
    prefix == "/"
        || path == prefix
        || (path.len() > prefix.len()
            && path.starts_with(prefix)
            && path.as_bytes()[prefix.len()] == b'/')
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::api::store::Store;
    use roster_core::CreateMode;

    /// A standalone in-memory node with its feed (capacity 100), for the feed's and its
    /// subscribers' tests; `create(path)` makes a persistent node.
    pub(crate) fn node() -> (Arc<dyn Backend>, Arc<Feed>, Store) {
        let backend: Arc<dyn Backend> = roster_zab::Standalone::open(
            Arc::new(roster_core::storage::MemEngine::default()),
            roster_zab::ZabConfig::default(),
        )
        .expect("standalone node");
        let feed = Feed::start(&backend, 100);
        let store = Store::new(backend.clone());
        (backend, feed, store)
    }

    pub(crate) async fn create(store: &Store, path: &str) {
        store
            .create(0, path, vec![], CreateMode::Persistent, "test")
            .await
            .expect("create");
    }

    #[test]
    fn under_respects_segment_boundaries() {
        assert!(under("/a/b", "/a"));
        assert!(under("/a", "/a"));
        assert!(!under("/ab", "/a"));
        assert!(under("/x", "/"));
    }

    /// A scoped subscriber gets the changes under its prefixes — backlog and live — and nothing
    /// from elsewhere, while a whole-feed subscriber still gets everything.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_scoped_subscription_sees_only_its_subtrees() {
        let (backend, feed, store) = node();
        create(&store, "/in").await;
        let before = backend.tree().read().last_zxid();
        create(&store, "/in/a").await;
        create(&store, "/out").await;
        let (all, ()) = feed.subscribe_with(&backend, Some(before), |_| ());
        let (mut scoped, ()) =
            feed.subscribe_under(&backend, Under::path("/in"), Some(before), |_| ());
        let paths = |cs: &[Change]| cs.iter().map(|c| c.path.to_string()).collect::<Vec<_>>();
        assert_eq!(paths(&all.backlog), ["/in/a", "/out"]);
        assert_eq!(paths(&scoped.backlog), ["/in/a"]);
        for p in ["/input", "/out/x", "/in/b"] {
            create(&store, p).await;
        }
        let mut live = Vec::new();
        while let Ok(FeedItem::Change(c)) = scoped.rx.try_recv() {
            live.push(c.path.to_string());
        }
        assert_eq!(live, ["/in/b"], "only its subtree, by whole segments");
        drop(scoped);
        create(&store, "/in/c").await;
        assert_eq!(
            feed.ring.lock().scoped.len(),
            0,
            "a dropped subscriber is forgotten at the next change under its prefix"
        );
        // Long-polling clients come and go on an idle system too: without any change, the ones
        // that went away are forgotten as new ones subscribe (in batches, not one scan each).
        let (mut live, ()) = feed.subscribe_under(&backend, Under::path("/in"), None, |_| ());
        for _ in 0..1000 {
            drop(feed.subscribe_under(&backend, Under::path("/idle"), None, |_| ()));
        }
        assert!(
            feed.ring.lock().scoped.len() <= 1 + Scopes::PRUNE_MIN,
            "{} subscribers kept",
            feed.ring.lock().scoped.len()
        );
        create(&store, "/in/d").await;
        assert!(
            matches!(live.rx.try_recv(), Ok(FeedItem::Change(c)) if &*c.path == "/in/d"),
            "the scans keep the subscribers that are still there"
        );
        drop(all);
    }

    /// A rescoped subscriber is woken by changes to the subtrees it follows now — added ones
    /// included, removed ones not — and leaves the feed when its scope is dropped.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_scope_follows_the_subtrees_it_is_set_to() {
        let (backend, feed, store) = node();
        for p in ["/cfg", "/cfg/a", "/cfg/b", "/cfg/c"] {
            create(&store, p).await;
        }
        let (mut sub, scope, ()) =
            feed.subscribe_scoped(&backend, Under::paths(vec![]), None, |_| ());
        let mut got = || {
            let mut paths = Vec::new();
            while let Ok(FeedItem::Change(c)) = sub.rx.try_recv() {
                paths.push(c.path.to_string());
            }
            paths
        };
        let set = |store: Store, p: &'static str| async move {
            store.set(p, b"x".to_vec(), -1, "test").await.expect("set");
        };
        set(store.clone(), "/cfg/a").await;
        assert!(got().is_empty(), "an empty scope is woken by nothing");
        scope.set(vec!["/cfg/a".into(), "/cfg/b".into()]);
        for p in ["/cfg/a", "/cfg/b", "/cfg/c"] {
            set(store.clone(), p).await;
        }
        assert_eq!(got(), ["/cfg/a", "/cfg/b"]);
        scope.set(vec!["/cfg/b".into(), "/cfg/c".into()]);
        for p in ["/cfg/a", "/cfg/b", "/cfg/c"] {
            set(store.clone(), p).await;
        }
        assert_eq!(
            got(),
            ["/cfg/b", "/cfg/c"],
            "a removed key no longer wakes it"
        );
        assert_eq!(feed.ring.lock().scoped.by_prefix.len(), 2);
        drop(scope);
        assert_eq!(
            feed.ring.lock().scoped.len(),
            0,
            "a dropped scope leaves the feed"
        );
        assert!(feed.ring.lock().scoped.by_prefix.is_empty());
    }

    /// Nested or repeated prefixes of one subscriber deliver a change once; `/` (or the empty
    /// prefix) is everything; a change deep below a prefix reaches it.
    #[tokio::test]
    async fn a_change_reaches_each_scoped_subscriber_once() {
        let (backend, feed, store) = node();
        let prefixes = |ps: &[&str]| Under::paths(ps.iter().map(|p| p.to_string()).collect());
        let (mut nested, ()) =
            feed.subscribe_under(&backend, prefixes(&["/a", "/a/b", "/a"]), None, |_| ());
        let (mut root, ()) = feed.subscribe_under(&backend, prefixes(&[""]), None, |_| ());
        let (mut sibling, ()) = feed.subscribe_under(&backend, prefixes(&["/a-b"]), None, |_| ());
        for p in ["/a", "/a/b", "/a/b/c", "/a-b", "/z"] {
            create(&store, p).await;
        }
        let drain = |rx: &mut broadcast::Receiver<FeedItem>| {
            let mut got = Vec::new();
            while let Ok(FeedItem::Change(c)) = rx.try_recv() {
                got.push(c.path.to_string());
            }
            got
        };
        assert_eq!(drain(&mut nested.rx), ["/a", "/a/b", "/a/b/c"]);
        assert_eq!(drain(&mut root.rx), ["/a", "/a/b", "/a/b/c", "/a-b", "/z"]);
        assert_eq!(drain(&mut sibling.rx), ["/a-b"]);
        assert_eq!(
            outermost(vec!["/a/b".into(), "/a".into(), "/c".into(), "/a".into()]),
            ["/a", "/c"]
        );
    }
}

/// What [`Follow::next`] found.
#[derive(Debug)]
pub enum Next {
    /// These paths under the prefix changed after the last revision the caller read.
    Changed(Vec<Arc<str>>),
    /// Changes were missed (lagging subscriber or snapshot install): read the full state again.
    Resync,
    /// The feed is gone (server shutting down).
    Closed,
}

/// Follows the nodes under one prefix, coalescing changes: the caller reads the current state of
/// the changed paths and records the revision it read at with [`Follow::read_at`], so changes it
/// has already seen are skipped.
pub struct Follow {
    rx: broadcast::Receiver<FeedItem>,
    prefix: String,
    seen: Zxid,
}

impl Follow {
    /// Follow `prefix` from a subscription whose state the caller has read at `seen`.
    pub fn new(rx: broadcast::Receiver<FeedItem>, prefix: impl Into<String>, seen: Zxid) -> Follow {
        Follow {
            rx,
            prefix: prefix.into(),
            seen,
        }
    }

    /// The caller has read the *whole* followed state at `revision`: changes up to it are
    /// skipped from now on. After reading only the paths a `Changed` named, do not call it — a
    /// change to another path that arrived meanwhile (revision below the read) would be skipped
    /// and never reach the client.
    pub fn read_at(&mut self, revision: Zxid) {
        self.seen = self.seen.max(revision);
    }

    pub fn seen(&self) -> Zxid {
        self.seen
    }

    /// Wait for the next change under the prefix, then take whatever else is already queued.
    pub async fn next(&mut self) -> Next {
        let mut paths: Vec<Arc<str>> = Vec::new();
        loop {
            let item = if paths.is_empty() {
                self.rx.recv().await
            } else {
                match self.rx.try_recv() {
                    Ok(i) => Ok(i),
                    Err(broadcast::error::TryRecvError::Empty) => break,
                    Err(broadcast::error::TryRecvError::Lagged(_)) => return Next::Resync,
                    Err(broadcast::error::TryRecvError::Closed) => break,
                }
            };
            match item {
                Ok(FeedItem::Change(c)) => {
                    if c.revision > self.seen && under(&c.path, &self.prefix) {
                        paths.push(c.path);
                    }
                }
                Ok(FeedItem::Reset(_)) => return Next::Resync,
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::debug!(prefix = %self.prefix, missed = n, "stream lagged; resynchronising");
                    return Next::Resync;
                }
                Err(broadcast::error::RecvError::Closed) => return Next::Closed,
            }
        }
        paths.sort_unstable();
        paths.dedup();
        Next::Changed(paths)
    }
}
