//! The change feed under every native stream (watch, registry subscribe, config listen, lock
//! waits, election observe): one persistent-recursive watch on `/`, fired synchronously as each
//! transaction is applied, kept in a bounded ring so a client can resume from a revision, and
//! fanned out to live subscribers.
//!
//! Ordering: the sink runs under the tree's write lock, and [`Feed::subscribe`] takes the tree's
//! read lock, so a subscriber's backlog, its snapshot of the tree and its live events meet
//! without a gap or an overlap.

use parking_lot::Mutex;
use roster_core::Zxid;
use roster_core::backend::Backend;
use roster_core::tree::Tree;
use roster_core::watch::{EventType, WatchKind, WatchSink, WatchedEvent, WatcherId};
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
    scoped: Vec<Scoped>,
}

/// A subscriber that is sent only the changes under its prefixes (and every reset), so writes
/// elsewhere do not wake it.
struct Scoped {
    prefixes: Vec<String>,
    tx: broadcast::Sender<FeedItem>,
}

impl Scoped {
    fn wants(&self, path: &str) -> bool {
        self.prefixes.iter().any(|p| under(path, p))
    }
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
        let feed = Arc::new(Feed {
            ring: Mutex::new(Ring {
                changes: VecDeque::with_capacity(capacity.min(1 << 16)),
                floor: t.last_zxid(),
                capacity: capacity.max(1),
                scoped: Vec::new(),
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
        self.subscribe_inner(backend, None, from, at)
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
        self.subscribe_inner(backend, Some(under), from, at)
    }

    fn subscribe_inner<R>(
        &self,
        backend: &Arc<dyn Backend>,
        under: Option<Under>,
        from: Option<Zxid>,
        at: impl FnOnce(&Tree) -> R,
    ) -> (Subscription, R) {
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
        let rx = match under {
            None => self.live.subscribe(),
            Some(Under { prefixes, capacity }) => {
                // Forget subscribers that went away, here as at each change: long-polling
                // clients come and go on an idle system too.
                ring.scoped.retain(|s| s.tx.receiver_count() > 0);
                let (tx, rx) = broadcast::channel(capacity);
                ring.scoped.push(Scoped { prefixes, tx });
                rx
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
            r,
        )
    }

    /// The oldest revision a client can resume from.
    pub fn floor(&self) -> Zxid {
        self.ring.lock().floor
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
        // One pass: send to the subscribers that want the change, and drop those that went away.
        ring.scoped.retain(|s| {
            if s.tx.receiver_count() == 0 {
                return false;
            }
            if s.wants(&change.path) {
                let _ = s.tx.send(FeedItem::Change(change.clone()));
            }
            true
        });
        // No receivers is fine.
        let _ = self.0.live.send(FeedItem::Change(change));
    }

    fn reset(&self, zxid: Zxid) {
        let mut ring = self.0.ring.lock();
        ring.changes.clear();
        ring.floor = zxid;
        for s in &ring.scoped {
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
        assert!(
            feed.ring.lock().scoped.is_empty(),
            "a dropped subscriber is forgotten at the next change"
        );
        for _ in 0..3 {
            drop(feed.subscribe_under(&backend, Under::path("/in"), None, |_| ()));
        }
        assert_eq!(
            feed.ring.lock().scoped.len(),
            1,
            "and at the next subscription, without any change"
        );
        drop(all);
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

    /// The caller has read the state at `revision`.
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
