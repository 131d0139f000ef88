//! Config: the content of `{namespace}/{group}/{data_id}` is the data of the node
//! `/roster/config/{namespace}/{group}/{data_id}` (so ZooKeeper clients read it as it is), and
//! every change made through the API also appends a history entry, in the same transaction, as a
//! sequential node under `/roster/config-history/{namespace}/{group}/{data_id}/`. The revision
//! is the node's mzxid; md5 is the hex MD5 of the content, as Nacos computes it.

use super::error::ApiError;
use super::feed::{Feed, Follow, Next, Under};
use super::store::{ROOT, Store, segment};
use md5::{Digest, Md5};
use roster_core::acl::Acl;
use roster_core::tree::Tree;
use roster_core::txn::{OpResult, WriteOp};
use roster_core::{CreateMode, Zxid, path};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;

use super::registry::DEFAULT_NAMESPACE;

/// Largest config content accepted, in bytes.
pub const MAX_CONTENT: usize = 1024 * 1024;

/// A config item's identity, validated with defaults applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigKey {
    pub namespace: String,
    pub group: String,
    pub data_id: String,
}

impl ConfigKey {
    pub fn new(
        namespace: Option<&str>,
        group: Option<&str>,
        data_id: &str,
    ) -> Result<ConfigKey, ApiError> {
        let (namespace, group) = super::store::scope(namespace, group)?;
        Ok(ConfigKey {
            namespace,
            group,
            data_id: segment("data_id", data_id)?.to_owned(),
        })
    }

    pub fn path(&self) -> String {
        format!(
            "{ROOT}/config/{}/{}/{}",
            self.namespace, self.group, self.data_id
        )
    }

    pub fn history_dir(&self) -> String {
        format!(
            "{ROOT}/config-history/{}/{}/{}",
            self.namespace, self.group, self.data_id
        )
    }
}

/// Hex MD5 of content, as Nacos reports it.
pub fn md5_hex(content: &[u8]) -> String {
    let digest = Md5::digest(content);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// A config item as read.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ConfigItem {
    pub namespace: String,
    pub group: String,
    pub data_id: String,
    pub content: String,
    pub md5: String,
    /// Content type as given at the last API write (`text`, `json`, `yaml`, `properties` ...).
    #[serde(rename = "type")]
    pub kind: String,
    /// Revision of the last change (its zxid).
    pub revision: u64,
    /// Number of changes since it was created (the node's version).
    pub version: i32,
}

/// A config write.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutConfig {
    pub content: String,
    /// Content type (default `text`).
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    /// Only write if the current md5 is this ("" = only if absent).
    #[serde(default)]
    pub cas_md5: Option<String>,
    /// Only write if the current revision is this (0 = only if absent).
    #[serde(default)]
    pub cas_revision: Option<u64>,
}

/// One history entry (stored as the entry node's data).
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HistoryEntry {
    /// The entry's id (its sequence number): the handle for rollback.
    #[serde(default)]
    pub id: u64,
    /// `put`, `delete` or `rollback`.
    pub op: String,
    pub content: String,
    pub md5: String,
    #[serde(rename = "type")]
    pub kind: String,
    /// Revision the change committed at (read from the entry node).
    #[serde(default)]
    pub revision: u64,
    /// Commit time, ms since the epoch (read from the entry node).
    #[serde(default)]
    pub time_ms: i64,
}

/// The result of a listen.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ListenResult {
    /// Whether the md5 differs from the one the client holds.
    pub changed: bool,
    /// The current md5 ("" when the item does not exist).
    pub md5: String,
    pub revision: u64,
}

/// The config service.
pub struct Configs {
    store: Store,
    feed: Arc<Feed>,
    history_max: usize,
}

fn read_item(t: &Tree, key: &ConfigKey) -> Option<ConfigItem> {
    let node = t.get(&key.path())?;
    let kind = latest_history(t, key)
        .map(|h| h.kind)
        .unwrap_or_else(|| "text".to_owned());
    Some(ConfigItem {
        namespace: key.namespace.clone(),
        group: key.group.clone(),
        data_id: key.data_id.clone(),
        content: String::from_utf8_lossy(&node.data).into_owned(),
        md5: md5_hex(&node.data),
        kind,
        revision: node.stat.mzxid as u64,
        version: node.stat.version,
    })
}

fn read_entry(t: &Tree, p: &str) -> Option<HistoryEntry> {
    let node = t.get(p)?;
    let mut e: HistoryEntry = serde_json::from_slice(&node.data).ok()?;
    e.id = path::name(p).trim_start_matches("h-").parse().ok()?;
    e.revision = node.stat.czxid as u64;
    e.time_ms = node.stat.ctime;
    Some(e)
}

fn latest_history(t: &Tree, key: &ConfigKey) -> Option<HistoryEntry> {
    let dir = key.history_dir();
    let node = t.get(&dir)?;
    // Sequence suffixes are zero-padded, so the last name is the newest.
    let last = node.children.iter().next_back()?;
    read_entry(t, &path::join(&dir, last))
}

impl Configs {
    pub fn new(store: Store, feed: Arc<Feed>, history_max: usize) -> Configs {
        Configs {
            store,
            feed,
            history_max: history_max.max(1),
        }
    }

    /// Does this backend keep config history (multi + sequential nodes)?
    fn keeps_history(&self) -> bool {
        let c = self.store.capabilities();
        c.multi && c.sequential_nodes
    }

    fn require_history(&self) -> Result<(), ApiError> {
        if self.keeps_history() {
            Ok(())
        } else {
            Err(ApiError::new(
                axum::http::StatusCode::NOT_IMPLEMENTED,
                "NEEDS_CP_BACKEND",
                "config history and rollback need a CP backend (zab or raft)",
            )
            .with_details(serde_json::json!({"supported_by": ["zab", "raft"]})))
        }
    }

    pub fn get(&self, key: &ConfigKey) -> Result<ConfigItem, ApiError> {
        self.store.read(|t| read_item(t, key)).ok_or_else(|| {
            ApiError::not_found(format!(
                "no config {}/{}/{}",
                key.namespace, key.group, key.data_id
            ))
        })
    }

    /// Put content, optionally compare-and-swap on md5 or revision.
    pub async fn put(&self, key: &ConfigKey, req: PutConfig) -> Result<ConfigItem, ApiError> {
        self.write(key, req, "put").await
    }

    async fn write(
        &self,
        key: &ConfigKey,
        req: PutConfig,
        op: &str,
    ) -> Result<ConfigItem, ApiError> {
        if req.content.len() > MAX_CONTENT {
            return Err(ApiError::new(
                axum::http::StatusCode::PAYLOAD_TOO_LARGE,
                "INVALID_ARGUMENT",
                format!("content is larger than {MAX_CONTENT} bytes"),
            ));
        }
        // Without a type, keep the item's current one.
        let kind = match &req.kind {
            Some(k) => k.clone(),
            None => self
                .store
                .read(|t| latest_history(t, key).map(|h| h.kind))
                .unwrap_or_else(|| "text".to_owned()),
        };
        if kind.is_empty() || kind.len() > 32 {
            return Err(ApiError::invalid("type must be 1-32 characters"));
        }
        let p = key.path();
        let hist = key.history_dir();
        self.store.ensure_path(path::parent(&p)).await?;
        // History needs multi and sequential nodes: a CP backend. On AP the content is written
        // alone (last writer wins) and the history endpoints say why they are empty.
        let with_history = self.keeps_history();
        if with_history {
            self.store.ensure_path(&hist).await?;
        }
        let conditional = req.cas_md5.is_some() || req.cas_revision.is_some();
        let what = format!("config {}", key.data_id);
        for _ in 0..5 {
            let current = self.store.read(|t| {
                t.get(&p)
                    .map(|n| (md5_hex(&n.data), n.stat.mzxid as u64, n.stat.version))
            });
            if let Some(want) = &req.cas_md5 {
                let have = current.as_ref().map(|c| c.0.as_str()).unwrap_or("");
                if have != want {
                    return Err(ApiError::conflict("md5 does not match the current content")
                        .with_details(serde_json::json!({"md5": have})));
                }
            }
            if let Some(want) = req.cas_revision {
                let have = current.as_ref().map(|c| c.1).unwrap_or(0);
                if have != want {
                    return Err(
                        ApiError::conflict("revision does not match the current one")
                            .with_details(serde_json::json!({"revision": have})),
                    );
                }
            }
            let entry = HistoryEntry {
                id: 0,
                op: op.to_owned(),
                content: req.content.clone(),
                md5: md5_hex(req.content.as_bytes()),
                kind: kind.clone(),
                revision: 0,
                time_ms: 0,
            };
            let write = match &current {
                Some((_, _, version)) => WriteOp::SetData {
                    path: p.clone(),
                    data: req.content.clone().into_bytes(),
                    version: *version,
                },
                None => WriteOp::Create {
                    path: p.clone(),
                    data: req.content.clone().into_bytes(),
                    acl: Acl::open_unsafe(),
                    mode: CreateMode::Persistent,
                    ttl: 0,
                },
            };
            let done = if with_history {
                let ops = vec![write, history_op(&hist, &entry)];
                self.store.multi(0, ops, &what).await.map(|_| ())
            } else {
                self.store.op(0, write, &what).await.map(|_| ())
            };
            match done {
                Ok(_) => {
                    metrics::counter!("roster_config_writes_total", "op" => if op == "rollback" { "rollback" } else { "put" }).increment(1);
                    if with_history {
                        self.prune(&hist).await;
                    }
                    return self.get(key);
                }
                // Someone else wrote between our read and our write: with a CAS that is a
                // conflict for the caller, without one we retry on the new state.
                Err(e)
                    if !conditional
                        && (e.code == "CONFLICT"
                            || e.code == "ALREADY_EXISTS"
                            || e.code == "NOT_FOUND") =>
                {
                    continue;
                }
                Err(e) => return Err(e),
            }
        }
        Err(ApiError::conflict(format!(
            "{what}: too much contention, try again"
        )))
    }

    /// Delete, recording it in the history.
    pub async fn delete(&self, key: &ConfigKey) -> Result<(), ApiError> {
        let p = key.path();
        let hist = key.history_dir();
        let what = format!("config {}", key.data_id);
        let (version, kind) = self
            .store
            .read(|t| {
                t.get(&p)
                    .map(|n| (n.stat.version, latest_history(t, key).map(|h| h.kind)))
            })
            .ok_or_else(|| ApiError::not_found(what.clone()))?;
        if !self.keeps_history() {
            self.store.delete(&p, -1, &what).await?;
            metrics::counter!("roster_config_writes_total", "op" => "delete").increment(1);
            return Ok(());
        }
        self.store.ensure_path(&hist).await?;
        let entry = HistoryEntry {
            id: 0,
            op: "delete".to_owned(),
            content: String::new(),
            md5: String::new(),
            kind: kind.unwrap_or_else(|| "text".to_owned()),
            revision: 0,
            time_ms: 0,
        };
        self.store
            .multi(
                0,
                vec![
                    WriteOp::Delete {
                        path: p.clone(),
                        version,
                    },
                    history_op(&hist, &entry),
                ],
                &what,
            )
            .await?;
        metrics::counter!("roster_config_writes_total", "op" => "delete").increment(1);
        self.prune(&hist).await;
        Ok(())
    }

    /// Drop history entries beyond the newest `history_max` (best effort).
    async fn prune(&self, hist: &str) {
        let old: Vec<String> = self.store.read(|t| {
            t.get(hist)
                .map(|n| {
                    let excess = n.children.len().saturating_sub(self.history_max);
                    n.children
                        .iter()
                        .take(excess)
                        .map(|c| path::join(hist, c))
                        .collect()
                })
                .unwrap_or_default()
        });
        for p in old {
            if let Err(e) = self.store.delete(&p, -1, "history entry").await
                && e.code != "NOT_FOUND"
            {
                tracing::debug!(path = %p, error = %e, "pruning config history");
            }
        }
    }

    /// Config items of a namespace (optionally one group), with content.
    pub fn list(
        &self,
        namespace: Option<&str>,
        group: Option<&str>,
    ) -> Result<Vec<ConfigItem>, ApiError> {
        let ns = segment(
            "namespace",
            namespace
                .filter(|s| !s.is_empty())
                .unwrap_or(DEFAULT_NAMESPACE),
        )?
        .to_owned();
        let group = match group.filter(|s| !s.is_empty()) {
            Some(g) => Some(segment("group", g)?.to_owned()),
            None => None,
        };
        Ok(self.store.read(|t| {
            let ns_dir = format!("{ROOT}/config/{ns}");
            let groups: Vec<String> = match &group {
                Some(g) => vec![g.clone()],
                None => t
                    .get(&ns_dir)
                    .map(|n| n.children.iter().cloned().collect())
                    .unwrap_or_default(),
            };
            let mut out = Vec::new();
            for g in groups {
                if let Some(n) = t.get(&path::join(&ns_dir, &g)) {
                    for d in &n.children {
                        let key = ConfigKey {
                            namespace: ns.clone(),
                            group: g.clone(),
                            data_id: d.clone(),
                        };
                        if let Some(item) = read_item(t, &key) {
                            out.push(item);
                        }
                    }
                }
            }
            out
        }))
    }

    /// History, newest first.
    pub fn history(&self, key: &ConfigKey) -> Vec<HistoryEntry> {
        let dir = key.history_dir();
        self.store.read(|t| {
            t.get(&dir)
                .map(|n| {
                    n.children
                        .iter()
                        .rev()
                        .filter_map(|c| read_entry(t, &path::join(&dir, c)))
                        .collect()
                })
                .unwrap_or_default()
        })
    }

    pub fn history_entry(&self, key: &ConfigKey, id: u64) -> Result<HistoryEntry, ApiError> {
        self.require_history()?;
        let p = path::join(&key.history_dir(), &format!("h-{id:010}"));
        self.store.read(|t| read_entry(t, &p)).ok_or_else(|| {
            ApiError::not_found(format!("no history entry {id} for {}", key.data_id))
        })
    }

    /// Restore the content (and type) of a history entry as a new change.
    pub async fn rollback(&self, key: &ConfigKey, id: u64) -> Result<ConfigItem, ApiError> {
        let entry = self.history_entry(key, id)?;
        if entry.op == "delete" {
            return Err(ApiError::invalid(format!(
                "history entry {id} is a delete; roll back to a put"
            )));
        }
        let req = PutConfig {
            content: entry.content,
            kind: Some(entry.kind),
            cas_md5: None,
            cas_revision: None,
        };
        self.write(key, req, "rollback").await
    }

    /// Wait until the item's md5 differs from `md5` (immediately if it already does), or until
    /// `timeout`.
    pub async fn listen(&self, key: &ConfigKey, md5: &str, timeout: Duration) -> ListenResult {
        let p = key.path();
        let current = |t: &Tree| {
            (
                t.get(&p).map(|n| md5_hex(&n.data)).unwrap_or_default(),
                t.last_zxid(),
            )
        };
        let (sub, (now, revision)) =
            self.feed
                .subscribe_under(self.store.backend(), Under::path(p.clone()), None, current);
        if now != md5 {
            return ListenResult {
                changed: true,
                md5: now,
                revision: revision as u64,
            };
        }
        let mut follow = Follow::new(sub.rx, p.clone(), revision);
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match tokio::time::timeout_at(deadline, follow.next()).await {
                Err(_) | Ok(Next::Closed) => {
                    let (now, revision) = self.store.read(current);
                    return ListenResult {
                        changed: now != md5,
                        md5: now,
                        revision: revision as u64,
                    };
                }
                Ok(Next::Changed(_)) | Ok(Next::Resync) => {
                    let (now, revision) = self.store.read(current);
                    follow.read_at(revision);
                    if now != md5 {
                        return ListenResult {
                            changed: true,
                            md5: now,
                            revision: revision as u64,
                        };
                    }
                }
            }
        }
    }

    /// The feed, for streaming listeners.
    pub fn follow(&self, key: &ConfigKey) -> (Follow, ConfigItemState) {
        let p = key.path();
        let (sub, state) =
            self.feed
                .subscribe_under(self.store.backend(), Under::path(p.clone()), None, |t| {
                    (
                        t.get(&p).map(|n| md5_hex(&n.data)).unwrap_or_default(),
                        t.last_zxid(),
                    )
                });
        (Follow::new(sub.rx, p, state.1), state)
    }

    /// The current md5 and revision of an item ("" when absent).
    pub fn state(&self, key: &ConfigKey) -> ConfigItemState {
        let p = key.path();
        self.store.read(|t| {
            (
                t.get(&p).map(|n| md5_hex(&n.data)).unwrap_or_default(),
                t.last_zxid(),
            )
        })
    }
}

/// (md5, revision) of a config item.
pub type ConfigItemState = (String, Zxid);

fn history_op(dir: &str, entry: &HistoryEntry) -> WriteOp {
    WriteOp::Create {
        path: format!("{dir}/h-"),
        data: serde_json::to_vec(entry).expect("history entry serialises"),
        acl: Acl::open_unsafe(),
        mode: CreateMode::PersistentSequential,
        ttl: 0,
    }
}

/// The sequence id of a created history entry, from a multi's results.
pub fn created_entry_id(results: &[OpResult]) -> Option<u64> {
    results.iter().find_map(|r| match r {
        OpResult::Created { path: p, .. } if path::name(p).starts_with("h-") => {
            path::name(p)[2..].parse().ok()
        }
        _ => None,
    })
}
