//! Locks, semaphores and leader election as server-side recipes on ephemeral-sequential nodes
//! (ZooKeeper's recipes, run by the server so every client gets them): a contender creates
//! `/roster/{locks|semaphores|elections}/{name}/c-NNNNNNNNNN` bound to its lease; the lowest
//! `permits` contenders hold. A holder's fencing token is its node's czxid: zxids only grow, so a
//! later holder always has a larger token, across leader changes and restarts.

use super::error::ApiError;
use super::feed::{Feed, Follow, Next, Under};
use super::lease::Leases;
use super::store::{ROOT, Store, segment};
use axum::http::StatusCode;
use roster_core::tree::Tree;
use roster_core::{CreateMode, SessionId, Zxid, path};
use serde::Serialize;
use std::sync::Arc;
use std::time::Duration;

/// Which recipe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recipe {
    Mutex,
    Semaphore,
    Election,
}

impl Recipe {
    fn dir(self) -> &'static str {
        match self {
            Recipe::Mutex => "locks",
            Recipe::Semaphore => "semaphores",
            Recipe::Election => "elections",
        }
    }
}

/// A held lock / permit / leadership.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Held {
    pub name: String,
    /// The contender node's path: pass it back to release / resign.
    pub key: String,
    /// Strictly increasing across holders: hand it to the storage the lock protects.
    pub fencing_token: u64,
    pub lease: i64,
    /// Revision at which this member saw the hold.
    pub revision: u64,
}

/// The current leader of an election.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Leader {
    pub name: String,
    pub key: String,
    /// The value the leader campaigned with.
    pub value: String,
    pub fencing_token: u64,
    pub lease: i64,
    pub revision: u64,
}

/// Contenders of one recipe instance, in order.
struct Contender {
    key: String,
    czxid: Zxid,
    owner: SessionId,
    data: Vec<u8>,
}

fn contenders(t: &Tree, dir: &str) -> Vec<Contender> {
    let Some(node) = t.get(dir) else {
        return Vec::new();
    };
    // Names are c-NNNNNNNNNN: sorted by name is sorted by sequence.
    node.children
        .iter()
        .filter(|c| c.starts_with("c-"))
        .filter_map(|c| {
            let p = path::join(dir, c);
            let n = t.get(&p)?;
            Some(Contender {
                key: p,
                czxid: n.stat.czxid,
                owner: n.client_stat().ephemeral_owner,
                data: n.data.clone(),
            })
        })
        .collect()
}

/// One contender's terms.
pub struct Contend {
    pub lease: SessionId,
    /// How many may hold at once (1 for a mutex or an election).
    pub permits: usize,
    /// What the holder announces (elections).
    pub value: Vec<u8>,
    /// How long to wait; zero = try once.
    pub timeout: Duration,
}

/// The lock service.
pub struct Locks {
    store: Store,
    feed: Arc<Feed>,
}

impl Locks {
    pub fn new(store: Store, feed: Arc<Feed>) -> Locks {
        Locks { store, feed }
    }

    fn dir(recipe: Recipe, name: &str) -> Result<String, ApiError> {
        Ok(format!(
            "{ROOT}/{}/{}",
            recipe.dir(),
            segment("name", name)?
        ))
    }

    fn require_cp(&self) -> Result<(), ApiError> {
        let caps = self.store.capabilities();
        if caps.locks && caps.sequential_nodes {
            Ok(())
        } else {
            Err(ApiError::new(
                StatusCode::NOT_IMPLEMENTED,
                "NEEDS_CP_BACKEND",
                format!(
                    "locks and elections need a CP backend (zab or raft); this cluster runs {}",
                    self.store.backend().status().backend
                ),
            )
            .with_details(serde_json::json!({"supported_by": ["zab", "raft"]})))
        }
    }

    /// Join the queue of `recipe`/`name` with `lease` and wait until among the first `permits`
    /// (or `timeout`; zero = try once). On timeout the contender node is removed and the
    /// error is `LOCK_HELD` with the current holders' tokens.
    pub async fn acquire(
        &self,
        leases: &Leases,
        recipe: Recipe,
        name: &str,
        c: Contend,
    ) -> Result<Held, ApiError> {
        let Contend {
            lease,
            permits,
            value,
            timeout,
        } = c;
        self.require_cp()?;
        let dir = Self::dir(recipe, name)?;
        if permits == 0 || permits > 10_000 {
            return Err(ApiError::invalid("permits must be 1..10000"));
        }
        leases.require(lease)?;
        self.store.ensure_path(&dir).await?;
        let (key, _) = self
            .store
            .create(
                lease,
                &format!("{dir}/c-"),
                value,
                CreateMode::EphemeralSequential,
                &format!("{} {name}", recipe.dir()),
            )
            .await?;
        let deadline = tokio::time::Instant::now() + timeout;
        let (sub, _) =
            self.feed
                .subscribe_under(self.store.backend(), Under::path(dir.clone()), None, |_| ());
        let mut follow = Follow::new(sub.rx, dir.clone(), 0);
        loop {
            let (revision, state) = self.store.read(|t| {
                let all = contenders(t, &dir);
                let pos = all.iter().position(|c| c.key == key);
                let state = pos.map(|i| (i < permits, all[i].czxid));
                (
                    t.last_zxid(),
                    (
                        state,
                        all.iter()
                            .take(permits)
                            .map(|c| c.czxid as u64)
                            .collect::<Vec<_>>(),
                    ),
                )
            });
            follow.read_at(revision);
            match state {
                (None, _) => {
                    // Our node is gone: the lease expired or was revoked while we waited.
                    return Err(ApiError::lease_not_found(lease));
                }
                (Some((true, czxid)), _) => {
                    metrics::counter!("roster_lock_acquired_total", "recipe" => recipe.dir())
                        .increment(1);
                    return Ok(Held {
                        name: name.to_owned(),
                        key,
                        fencing_token: czxid as u64,
                        lease,
                        revision: revision as u64,
                    });
                }
                (Some((false, _)), holders) => {
                    let wait = tokio::time::timeout_at(deadline, follow.next()).await;
                    let timed_out = match wait {
                        Err(_) => true,
                        Ok(Next::Closed) => true,
                        Ok(_) => false,
                    };
                    if timed_out {
                        // Give up our place; if the node already went with the lease, fine.
                        if let Err(e) = self.store.delete(&key, -1, "contender").await
                            && e.code != "NOT_FOUND"
                        {
                            return Err(e);
                        }
                        metrics::counter!("roster_lock_timeouts_total", "recipe" => recipe.dir())
                            .increment(1);
                        return Err(ApiError::new(
                            StatusCode::CONFLICT,
                            "LOCK_HELD",
                            format!("{} {name} is held", recipe.dir()),
                        )
                        .with_details(serde_json::json!({ "holders": holders })));
                    }
                }
            }
        }
    }

    /// Release a hold (or leave the queue / resign) by its key.
    pub async fn release(&self, recipe: Recipe, name: &str, key: &str) -> Result<(), ApiError> {
        let dir = Self::dir(recipe, name)?;
        if path::parent(key) != dir || !path::name(key).starts_with("c-") {
            return Err(ApiError::invalid(format!(
                "{key} is not a key of {} {name}",
                recipe.dir()
            ))
            .with_details(serde_json::json!({"field": "key"})));
        }
        self.store
            .delete(key, -1, &format!("{} {name}", recipe.dir()))
            .await
    }

    /// The current holders, in order.
    pub fn holders(
        &self,
        recipe: Recipe,
        name: &str,
        permits: usize,
    ) -> Result<Vec<Held>, ApiError> {
        let dir = Self::dir(recipe, name)?;
        if permits == 0 || permits > 10_000 {
            return Err(ApiError::invalid("permits must be 1..10000"));
        }
        Ok(self.store.read(|t| {
            let revision = t.last_zxid() as u64;
            contenders(t, &dir)
                .into_iter()
                .take(permits)
                .map(|c| Held {
                    name: name.to_owned(),
                    key: c.key,
                    fencing_token: c.czxid as u64,
                    lease: c.owner,
                    revision,
                })
                .collect()
        }))
    }

    /// The leader of an election, if any.
    pub fn leader(&self, name: &str) -> Result<Option<Leader>, ApiError> {
        let dir = Self::dir(Recipe::Election, name)?;
        Ok(self.store.read(|t| leader_of(t, name, &dir)))
    }

    /// Follow an election's leader: the current one first, then each change.
    pub fn observe(&self, name: &str) -> Result<Observer, ApiError> {
        let dir = Self::dir(Recipe::Election, name)?;
        let (sub, (revision, first)) =
            self.feed
                .subscribe_under(self.store.backend(), Under::path(dir.clone()), None, |t| {
                    (t.last_zxid(), leader_of(t, name, &dir))
                });
        Ok(Observer {
            store: self.store.clone(),
            follow: Follow::new(sub.rx, dir.clone(), revision),
            name: name.to_owned(),
            dir,
            last: None,
            first: Some(first),
        })
    }
}

fn leader_of(t: &Tree, name: &str, dir: &str) -> Option<Leader> {
    let revision = t.last_zxid() as u64;
    contenders(t, dir).into_iter().next().map(|c| Leader {
        name: name.to_owned(),
        key: c.key,
        value: String::from_utf8_lossy(&c.data).into_owned(),
        fencing_token: c.czxid as u64,
        lease: c.owner,
        revision,
    })
}

/// A stream of an election's leaders (`None`: no leader right now).
pub struct Observer {
    store: Store,
    follow: Follow,
    name: String,
    dir: String,
    last: Option<Option<String>>,
    first: Option<Option<Leader>>,
}

impl Observer {
    /// The next leader change; `None` when the server shuts down.
    pub async fn next(&mut self) -> Option<Option<Leader>> {
        if let Some(first) = self.first.take() {
            self.last = Some(first.as_ref().map(|l| l.key.clone()));
            return Some(first);
        }
        loop {
            match self.follow.next().await {
                Next::Closed => return None,
                Next::Changed(_) | Next::Resync => {
                    let (revision, leader) = self
                        .store
                        .read(|t| (t.last_zxid(), leader_of(t, &self.name, &self.dir)));
                    self.follow.read_at(revision);
                    let key = leader.as_ref().map(|l| l.key.clone());
                    if self.last.as_ref() != Some(&key) {
                        self.last = Some(key);
                        return Some(leader);
                    }
                }
            }
        }
    }
}
