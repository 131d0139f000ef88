//! Native watch: every change under a prefix of the tree, one event per node change, in revision
//! order — what a ZooKeeper persistent-recursive watch delivers (created / changed / deleted; no
//! children-changed), plus the node's value when it is still the value of that revision. A
//! client resumes from the last revision it saw; if that is older than this member's history
//! (or the replica was replaced by a snapshot install), it is told to read again and re-watch,
//! as etcd's compaction error does.

use super::error::ApiError;
use super::feed::{ChangeKind, Feed, FeedItem, Under, under};
use super::store::Store;
use axum::http::StatusCode;
use roster_core::Zxid;
use serde::Serialize;
use std::collections::VecDeque;
use std::sync::Arc;
use tokio::sync::broadcast;

/// Changes under its prefix a watch stream may fall behind by before it must resync (~64 KB of
/// channel per stream).
const WATCH_LAG: usize = 1024;

/// One event of a watch stream.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct WatchEvent {
    #[serde(rename = "type")]
    pub kind: ChangeKind,
    pub path: String,
    pub revision: u64,
    /// The node's data, when it is valid UTF-8 and still the data written at `revision`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

/// Why a watch stream ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchEnd {
    /// Events were missed (slow client, or a snapshot replaced the replica): read again.
    Resync(Zxid),
    Closed,
}

/// A running watch.
pub struct Watcher {
    store: Store,
    prefix: String,
    backlog: VecDeque<super::feed::Change>,
    rx: broadcast::Receiver<FeedItem>,
}

impl Watcher {
    /// Watch `prefix` from after `from` (None: from now).
    pub fn start(
        store: &Store,
        feed: &Arc<Feed>,
        prefix: &str,
        from: Option<Zxid>,
    ) -> Result<Watcher, ApiError> {
        if roster_core::path::validate(prefix).is_err() {
            return Err(ApiError::invalid("prefix must be a valid absolute path")
                .with_details(serde_json::json!({"field": "prefix"})));
        }
        // Scoped to the prefix: writes elsewhere neither wake the stream nor count towards its
        // lag (on the whole feed, a burst of unrelated writes ended quiet watches with a resync).
        let (sub, now) = feed.subscribe_under(
            store.backend(),
            Under::path(prefix).capacity(WATCH_LAG),
            from,
            |t| t.last_zxid(),
        );
        if from.is_some() && sub.resync {
            return Err(ApiError::new(
                StatusCode::GONE,
                "COMPACTED",
                "the requested revision is older than this member's history; read the state and watch from its revision",
            )
            .with_details(serde_json::json!({"oldest_revision": feed.floor(), "revision": now})));
        }
        Ok(Watcher {
            store: store.clone(),
            prefix: prefix.to_owned(),
            backlog: sub.backlog.into(),
            rx: sub.rx,
        })
    }

    /// The next event, or why the stream ends.
    pub async fn next(&mut self) -> Result<WatchEvent, WatchEnd> {
        loop {
            let change = match self.backlog.pop_front() {
                Some(c) => c,
                None => match self.rx.recv().await {
                    Ok(FeedItem::Change(c)) => c,
                    Ok(FeedItem::Reset(z)) => return Err(WatchEnd::Resync(z)),
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        return Err(WatchEnd::Resync(self.store.revision()));
                    }
                    Err(broadcast::error::RecvError::Closed) => return Err(WatchEnd::Closed),
                },
            };
            if !under(&change.path, &self.prefix) {
                continue;
            }
            let value = if change.kind == ChangeKind::Deleted {
                None
            } else {
                self.store.read(|t| {
                    t.get(&change.path)
                        .filter(|n| n.stat.mzxid == change.revision)
                        .and_then(|n| String::from_utf8(n.data.clone()).ok())
                })
            };
            return Ok(WatchEvent {
                kind: change.kind,
                path: change.path.to_string(),
                revision: change.revision as u64,
                value,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::feed::tests::{create, node};
    use roster_core::CreateMode;

    /// A watch on a quiet prefix is not ended by a burst of writes elsewhere (more than any
    /// channel holds), and still sees the next change under its prefix.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn unrelated_writes_do_not_end_a_watch() {
        let (_backend, feed, store) = node();
        for p in ["/quiet", "/busy"] {
            create(&store, p).await;
        }
        let mut w = Watcher::start(&store, &feed, "/quiet", None).unwrap();
        let burst: Vec<_> = (0..5000)
            .map(|i| {
                let store = store.clone();
                tokio::spawn(async move { create(&store, &format!("/busy/n{i}")).await })
            })
            .collect();
        for t in burst {
            t.await.unwrap();
        }
        store
            .create(0, "/quiet/x", b"v".to_vec(), CreateMode::Persistent, "test")
            .await
            .unwrap();
        let e = tokio::time::timeout(std::time::Duration::from_secs(10), w.next())
            .await
            .expect("an event")
            .expect("the watch is still running");
        assert_eq!((e.kind, e.path.as_str()), (ChangeKind::Created, "/quiet/x"));
    }
}
