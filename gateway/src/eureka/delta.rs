//! The recently-changed queue behind `GET apps/delta`: every change to an instance of the Eureka
//! scope, whatever protocol made it, seen on the registry's change feed and kept for
//! [`RETENTION`] (Eureka's default, 3 minutes). One entry per instance — its last change — so a
//! client applying a delta ends with the instance as it is now (or without it). A client whose
//! result does not match `apps__hashcode` fetches everything, so a gap here (a lagging feed, a
//! replica reset) costs a full fetch, never a wrong registry.

use super::Scope;
use crate::api::Api;
use crate::api::feed::{ChangeKind, FeedItem, Under};
use crate::api::registry::{Instance, read_instance};
use parking_lot::Mutex;
use roster_core::path;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::broadcast::error::RecvError;

/// How long a change stays in the delta.
pub const RETENTION: Duration = Duration::from_secs(180);

/// What happened to an instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Added,
    Modified,
    Deleted,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Added => "ADDED",
            Action::Modified => "MODIFIED",
            Action::Deleted => "DELETED",
        }
    }
}

/// One instance's last change.
#[derive(Debug, Clone)]
pub struct Entry {
    pub at: Instant,
    pub action: Action,
    /// The instance as it is now (for a deletion: as it was last seen).
    pub instance: Instance,
    pub ctime: i64,
    pub mtime: i64,
}

#[derive(Default)]
struct State {
    /// Instance node path → its last change.
    recent: HashMap<String, Entry>,
    /// Instance node path → the record last seen (to describe deletions).
    known: HashMap<String, (Instance, i64, i64)>,
}

/// See the module doc.
pub struct Deltas {
    /// The registry directory of the scope (`{dir}/{service}/{id}`), formatted once: every change
    /// in the tree passes through `on_change`.
    dir: String,
    state: Mutex<State>,
}

impl Deltas {
    /// Start following the feed.
    pub fn start(api: Arc<Api>, scope: Scope) -> Arc<Deltas> {
        let d = Arc::new(Deltas {
            dir: scope.dir(),
            state: Mutex::new(State::default()),
        });
        let me = Arc::downgrade(&d);
        let dir = d.dir.clone();
        let (sub, known) = api.feed.subscribe_under(
            api.store.backend(),
            Under::path(dir.clone()).capacity(4096),
            None,
            |t| scan(t, &dir),
        );
        d.state.lock().known = known;
        let mut rx = sub.rx;
        tokio::spawn(async move {
            loop {
                let item = rx.recv().await;
                let Some(d) = me.upgrade() else { return };
                match item {
                    Ok(FeedItem::Change(c)) => d.on_change(&api, &c.path, c.kind),
                    Ok(FeedItem::Reset(_)) | Err(RecvError::Lagged(_)) => {
                        // Changes were missed: relearn the records; clients reconcile by hash.
                        tracing::info!("Eureka delta: the change feed skipped; rescanning");
                        let known = api.store.read(|t| scan(t, &dir));
                        d.state.lock().known = known;
                    }
                    Err(RecvError::Closed) => return,
                }
            }
        });
        d
    }

    fn on_change(&self, api: &Api, p: &str, kind: ChangeKind) {
        // Instances are at {dir}/{service}/{id}.
        let parent = path::parent(p);
        if path::parent(parent) != self.dir {
            return;
        }
        let now = Instant::now();
        let mut st = self.state.lock();
        st.recent
            .retain(|_, e| now.duration_since(e.at) < RETENTION);
        match kind {
            ChangeKind::Deleted => {
                if let Some((inst, ctime, mtime)) = st.known.remove(p) {
                    st.recent.insert(
                        p.to_owned(),
                        Entry {
                            at: now,
                            action: Action::Deleted,
                            instance: inst,
                            ctime,
                            mtime,
                        },
                    );
                }
            }
            ChangeKind::Created | ChangeKind::Changed => {
                let Some((inst, ctime, mtime)) = api.store.read(|t| read_with_times(t, p)) else {
                    return;
                };
                let action = if kind == ChangeKind::Created {
                    Action::Added
                } else {
                    Action::Modified
                };
                st.known.insert(p.to_owned(), (inst.clone(), ctime, mtime));
                st.recent.insert(
                    p.to_owned(),
                    Entry {
                        at: now,
                        action,
                        instance: inst,
                        ctime,
                        mtime,
                    },
                );
            }
        }
    }

    /// The changes of the last [`RETENTION`], oldest first.
    pub fn recent(&self) -> Vec<Entry> {
        let now = Instant::now();
        let st = self.state.lock();
        let mut v: Vec<Entry> = st
            .recent
            .values()
            .filter(|e| now.duration_since(e.at) < RETENTION)
            .cloned()
            .collect();
        v.sort_by_key(|e| e.at);
        v
    }
}

/// An instance node with its creation and modification times.
pub fn read_with_times(t: &roster_core::tree::Tree, p: &str) -> Option<(Instance, i64, i64)> {
    let inst = read_instance(t, p)?;
    let stat = t.get(p)?.stat;
    Some((inst, stat.ctime, stat.mtime))
}

fn scan(t: &roster_core::tree::Tree, dir: &str) -> HashMap<String, (Instance, i64, i64)> {
    let mut out = HashMap::new();
    for s in t.get(dir).map(|n| &n.children).into_iter().flatten() {
        let sp = path::join(dir, s);
        for id in t.get(&sp).map(|n| &n.children).into_iter().flatten() {
            let ip = path::join(&sp, id);
            if let Some(x) = read_with_times(t, &ip) {
                out.insert(ip, x);
            }
        }
    }
    out
}
