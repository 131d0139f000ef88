//! ZooKeeper framework layouts as registry instances, both ways (docs/registry-model.md).
//!
//! - **Import**: Curator service discovery nodes (`/services/{name}/{id}`) and Dubbo providers
//!   (`/dubbo/{interface}/providers/{url}`) are indexed as registry records in one scope
//!   (`public` / `DEFAULT_GROUP`), `protocol = "zookeeper"`, `extra["zk.layout"]` naming the
//!   layout and `extra["zk.path"]` the source node.
//! - **Project**: every healthy, enabled record of that scope that did not come from a layout is
//!   shown in it as a *mirror* node, marked (Curator: a `roster` JSON object; Dubbo: a
//!   `roster.mirror` URL parameter); a record imported from one layout is mirrored into the other.
//!
//! Marked mirrors are never imported and imported records are never mirrored back into their own
//! layout, so nothing loops and nothing counts twice. An imported record or a mirror is owned by
//! the session that owns its source (ephemeral on it, or persistent when the source is), so it
//! goes with it. Every write is conditional on the source node still being at the version read
//! (a `multi` with a `check`), so a lagging or deposed writer cannot resurrect anything.
//!
//! One task per member follows the change feed and converges the affected services; it acts only
//! on the CP leader (or standalone), and on every member of the AP backend, where writes are
//! unconditional and a member can only write ephemerals of the sessions it owns.

pub mod curator;
pub mod dubbo;

use super::error::ApiError;
use super::feed::{Feed, FeedItem, Under, under};
use super::registry::{
    DEFAULT_CLUSTER, DEFAULT_GROUP, DEFAULT_NAMESPACE, Instance, instance_id, validate_ip,
};
use super::store::{ROOT, Store, segment};
use roster_core::acl::Acl;
use roster_core::backend::Role;
use roster_core::tree::Tree;
use roster_core::txn::WriteOp;
use roster_core::{CreateMode, SessionId, Stat, path};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};

/// `extra` key naming the layout an imported record came from (`curator`, `dubbo`).
pub const LAYOUT_KEY: &str = "zk.layout";
/// `extra` key holding the source node's path.
pub const PATH_KEY: &str = "zk.path";
/// How often everything is converged again, whatever the feed said (repairs failed writes).
const SWEEP: Duration = Duration::from_secs(30);

/// The instance fields a layout node carries.
#[derive(Debug, Clone, PartialEq)]
pub struct Source {
    pub ip: String,
    pub port: u16,
    pub enabled: bool,
    pub metadata: BTreeMap<String, String>,
    pub extra: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layout {
    Curator,
    Dubbo,
}

impl Layout {
    fn name(self) -> &'static str {
        match self {
            Layout::Curator => "curator",
            Layout::Dubbo => "dubbo",
        }
    }
}

/// A unit of work: converge one thing.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Work {
    /// `/services/{name}` into the registry.
    ImportCurator(String),
    /// `/dubbo/{interface}/providers` into the registry.
    ImportDubbo(String),
    /// A registry service of the scope into both layouts.
    Project(String),
}

/// A node that should exist: its data, owner, and the source it depends on.
struct Want {
    data: Vec<u8>,
    session: SessionId,
    source: String,
    source_version: i32,
}

/// A node of ours that exists.
struct Have {
    data: Vec<u8>,
    owner: SessionId,
    version: i32,
}

/// The sync task's state.
struct Layouts {
    store: Store,
    scope_dir: String,
}

/// Start the importer/projector on this member.
pub fn start(store: Store, feed: Arc<Feed>) {
    let l = Layouts {
        store,
        scope_dir: format!("{ROOT}/registry/{DEFAULT_NAMESPACE}/{DEFAULT_GROUP}"),
    };
    tokio::spawn(l.run(feed));
}

impl Layouts {
    /// Does this member do the work? The CP leader (one writer; a stale one is harmless, its
    /// writes are conditional), or every AP member.
    fn active(&self) -> bool {
        if !self.store.capabilities().multi {
            return true;
        }
        matches!(
            self.store.backend().status().role,
            Role::Leader | Role::Standalone
        )
    }

    async fn run(self, feed: Arc<Feed>) {
        let mut check = tokio::time::interval(Duration::from_secs(1));
        loop {
            check.tick().await;
            if !self.active() {
                continue;
            }
            tracing::info!(
                "registry layouts: importing /services and /dubbo, projecting the registry into them"
            );
            let prefixes = vec![
                curator::BASE.to_owned(),
                dubbo::ROOT.to_owned(),
                self.scope_dir.clone(),
            ];
            let (sub, ()) = feed.subscribe_under(
                self.store.backend(),
                Under::paths(prefixes).capacity(4096),
                None,
                |_| (),
            );
            let mut rx = sub.rx;
            let mut dirty = self.everything();
            let mut retry = BTreeSet::new();
            let mut sweep = tokio::time::interval(SWEEP);
            sweep.tick().await;
            loop {
                for w in std::mem::take(&mut dirty) {
                    if !self.converge(&w).await {
                        retry.insert(w);
                    }
                }
                tokio::select! {
                    item = rx.recv() => {
                        let mut item = item;
                        loop {
                            match item {
                                Ok(FeedItem::Change(c)) => self.classify(&c.path, &mut dirty),
                                Ok(FeedItem::Reset(_)) | Err(RecvError::Lagged(_)) => {
                                    dirty = self.everything();
                                }
                                Err(RecvError::Closed) => return,
                            }
                            item = match rx.try_recv() {
                                Ok(i) => Ok(i),
                                Err(TryRecvError::Empty) => break,
                                Err(TryRecvError::Lagged(n)) => Err(RecvError::Lagged(n)),
                                Err(TryRecvError::Closed) => Err(RecvError::Closed),
                            };
                        }
                    }
                    _ = check.tick() => {
                        if !self.active() {
                            tracing::info!("registry layouts: no longer the leader; stopping");
                            break;
                        }
                        dirty.append(&mut retry);
                    }
                    _ = sweep.tick() => dirty = self.everything(),
                }
            }
        }
    }

    /// Everything there is to converge.
    fn everything(&self) -> BTreeSet<Work> {
        self.store.read(|t| {
            let kids = |p: &str| -> Vec<String> {
                t.get(p)
                    .map(|n| n.children.iter().cloned().collect())
                    .unwrap_or_default()
            };
            let mut w = BTreeSet::new();
            w.extend(kids(curator::BASE).into_iter().map(Work::ImportCurator));
            w.extend(kids(dubbo::ROOT).into_iter().map(Work::ImportDubbo));
            w.extend(kids(&self.scope_dir).into_iter().map(Work::Project));
            w
        })
    }

    /// What a changed path asks to converge.
    fn classify(&self, p: &str, dirty: &mut BTreeSet<Work>) {
        let child_of = |base: &str| -> Option<String> {
            if !under(p, base) || p == base {
                return None;
            }
            let rest = &p[base.len() + 1..];
            Some(rest.split('/').next().unwrap_or(rest).to_owned())
        };
        if let Some(name) = child_of(curator::BASE) {
            // A mirror changed or vanished by someone else's hand: project again too.
            dirty.insert(Work::Project(name.clone()));
            dirty.insert(Work::ImportCurator(name));
        } else if let Some(iface) = child_of(dubbo::ROOT) {
            dirty.insert(Work::ImportDubbo(iface));
        } else if let Some(service) = child_of(&self.scope_dir) {
            dirty.insert(Work::Project(service));
        }
    }

    /// Converge one thing; false when a write failed and it should be tried again.
    async fn converge(&self, w: &Work) -> bool {
        let r = match w {
            Work::ImportCurator(name) => self.import_curator(name).await,
            Work::ImportDubbo(iface) => self.import_dubbo(iface).await,
            Work::Project(service) => self.project(service).await,
        };
        match r {
            Ok(ok) => ok,
            Err(e) => {
                tracing::warn!(work = ?w, error = %e, "registry layouts: converging failed; will retry");
                false
            }
        }
    }

    /// The registry record an imported node becomes, in its stored form.
    fn record(
        &self,
        layout: Layout,
        service: &str,
        s: Source,
        source: &str,
        session: SessionId,
    ) -> Instance {
        let mut extra = s.extra;
        extra.insert(LAYOUT_KEY.to_owned(), layout.name().to_owned());
        extra.insert(PATH_KEY.to_owned(), source.to_owned());
        Instance {
            id: instance_id(&s.ip, s.port, DEFAULT_CLUSTER),
            namespace: DEFAULT_NAMESPACE.to_owned(),
            group: DEFAULT_GROUP.to_owned(),
            service: service.to_owned(),
            cluster: DEFAULT_CLUSTER.to_owned(),
            ip: s.ip,
            port: s.port,
            weight: 1.0,
            healthy: true,
            enabled: s.enabled,
            metadata: s.metadata,
            ephemeral: session != 0,
            protocol: "zookeeper".to_owned(),
            health_check: None,
            extra,
            // Deterministic on every member (no probes run for these).
            owner: 0,
            lease: None,
            revision: 0,
        }
    }

    /// The children of each directory, copied under one read of the tree and parsed after it is
    /// released, so converging a large service does not hold up the writers.
    fn snapshot<const N: usize>(&self, dirs: [&str; N]) -> [Vec<Raw>; N] {
        self.store.read(|t| dirs.map(|d| children(t, d)))
    }

    async fn import_curator(&self, name: &str) -> Result<bool, ApiError> {
        let dir = path::join(curator::BASE, name);
        let prefix = format!("{dir}/");
        if segment("service", name).is_err() {
            return Ok(true);
        }
        let [sources] = self.snapshot([&dir]);
        let mut wants: BTreeMap<String, BTreeMap<String, Want>> = BTreeMap::new();
        for raw in &sources {
            let p = path::join(&dir, &raw.name);
            match curator::parse(&raw.data) {
                Ok(s) => self.want_record(Layout::Curator, name, s, &p, &raw.stat, &mut wants),
                Err(curator::Skip::Mirror) => {}
                Err(curator::Skip::Invalid(why)) => skipped("curator", &p, &why),
            }
        }
        let services = BTreeSet::from([name.to_owned()]);
        self.import(Layout::Curator, &prefix, services, wants).await
    }

    async fn import_dubbo(&self, iface: &str) -> Result<bool, ApiError> {
        let dir = format!("{}/{iface}/providers", dubbo::ROOT);
        let prefix = format!("{dir}/");
        let [sources] = self.snapshot([&dir]);
        let mut wants: BTreeMap<String, BTreeMap<String, Want>> = BTreeMap::new();
        for raw in &sources {
            let p = path::join(&dir, &raw.name);
            match dubbo::parse(&raw.name) {
                Ok((service, s)) => {
                    if let Err(e) = segment("service", &service) {
                        skipped("dubbo", &p, &e.message);
                        continue;
                    }
                    self.want_record(Layout::Dubbo, &service, s, &p, &raw.stat, &mut wants)
                }
                Err(dubbo::Skip::Mirror) => {}
                Err(dubbo::Skip::Invalid(why)) => skipped("dubbo", &p, &why),
            }
        }
        // Services that may hold records imported from here earlier: Dubbo's path segment is
        // the interface, so they are `providers:{iface}:…`.
        let mut services: BTreeSet<String> = wants.keys().cloned().collect();
        let named = format!("providers:{iface}:");
        self.store.read(|t| {
            if let Some(n) = t.get(&self.scope_dir) {
                services.extend(
                    n.children
                        .range(named.clone()..)
                        .take_while(|s| s.starts_with(&named))
                        .cloned(),
                );
            }
        });
        self.import(Layout::Dubbo, &prefix, services, wants).await
    }

    /// Add the record for one source node (the first source of an id wins; sources are visited
    /// in name order, so every member picks the same).
    fn want_record(
        &self,
        layout: Layout,
        service: &str,
        s: Source,
        source: &str,
        stat: &Stat,
        wants: &mut BTreeMap<String, BTreeMap<String, Want>>,
    ) {
        if let Err(e) = validate_ip(&s.ip) {
            skipped(layout.name(), source, &e.message);
            return;
        }
        let rec = self.record(layout, service, s, source, stat.ephemeral_owner);
        wants
            .entry(service.to_owned())
            .or_default()
            .entry(rec.id.clone())
            .or_insert_with(|| Want {
                data: serde_json::to_vec(&rec).expect("instance serialises"),
                session: stat.ephemeral_owner,
                source: source.to_owned(),
                source_version: stat.version,
            });
    }

    /// Converge the records imported from under `prefix` in `services`.
    async fn import(
        &self,
        layout: Layout,
        prefix: &str,
        services: BTreeSet<String>,
        mut wants: BTreeMap<String, BTreeMap<String, Want>>,
    ) -> Result<bool, ApiError> {
        let mut ok = true;
        for service in services {
            let dir = path::join(&self.scope_dir, &service);
            let mut want = wants.remove(&service).unwrap_or_default();
            let [records] = self.snapshot([&dir]);
            let mut have = BTreeMap::new();
            for raw in records {
                let Some(inst) = instance_of(&raw) else {
                    continue;
                };
                let ours = inst.extra.get(LAYOUT_KEY).map(String::as_str) == Some(layout.name())
                    && inst
                        .extra
                        .get(PATH_KEY)
                        .is_some_and(|s| s.starts_with(prefix));
                if ours {
                    have.insert(raw.name.clone(), raw.into_have());
                } else if want.remove(&raw.name).is_some() {
                    // Registered through another protocol (or another layout) first: that
                    // record stands for this instance; it is not counted twice.
                    tracing::debug!(service, id = %raw.name, "registry layouts: instance already registered; not imported");
                }
            }
            ok &= self.sync_dir(&dir, want, have, layout, "import").await;
        }
        Ok(ok)
    }

    /// Mirror a registry service of the scope into both layouts.
    async fn project(&self, service: &str) -> Result<bool, ApiError> {
        let dir = path::join(&self.scope_dir, service);
        let cdir = path::join(curator::BASE, service);
        let (iface, _, _) = dubbo::interface_of(service);
        let dubbo_ok = segment("interface", iface).is_ok();
        let ddir = format!("{}/{iface}/providers", dubbo::ROOT);
        let [records, cnodes, dnodes] = if dubbo_ok {
            self.snapshot([&dir, &cdir, &ddir])
        } else {
            let [records, cnodes] = self.snapshot([&dir, &cdir]);
            [records, cnodes, Vec::new()]
        };
        let mut cwant = BTreeMap::new();
        let mut dwant = BTreeMap::new();
        for raw in &records {
            let Some(inst) = instance_of(raw) else {
                continue;
            };
            if !(inst.healthy && inst.enabled) {
                continue;
            }
            let from = inst.extra.get(LAYOUT_KEY).map(String::as_str);
            let want = |data: Vec<u8>| Want {
                data,
                session: raw.stat.ephemeral_owner,
                source: path::join(&dir, &raw.name),
                source_version: raw.stat.version,
            };
            if from != Some("curator") {
                cwant.insert(
                    curator::mirror_name(&inst).to_owned(),
                    want(curator::mirror_data(&inst, raw.stat.ctime)),
                );
            }
            if from != Some("dubbo") && dubbo_ok {
                dwant.insert(dubbo::mirror_name(&inst), want(Vec::new()));
            }
        }
        let mut chave = BTreeMap::new();
        for raw in cnodes {
            if curator::is_mirror(&raw.data) {
                chave.insert(raw.name.clone(), raw.into_have());
            } else if cwant.remove(&raw.name).is_some() {
                tracing::debug!(service, id = %raw.name, "registry layouts: a Curator instance has this id; no mirror");
            }
        }
        let mut dhave = BTreeMap::new();
        if dubbo_ok {
            for raw in dnodes {
                if dubbo::mirror_service(&raw.name).as_deref() == Some(service) {
                    dhave.insert(raw.name.clone(), raw.into_have());
                }
            }
        }
        let a = self
            .sync_dir(&cdir, cwant, chave, Layout::Curator, "project")
            .await;
        let b = !dubbo_ok
            || self
                .sync_dir(&ddir, dwant, dhave, Layout::Dubbo, "project")
                .await;
        Ok(a && b)
    }

    /// Make the nodes of ours in `dir` exactly `want`; false if some write failed.
    async fn sync_dir(
        &self,
        dir: &str,
        mut want: BTreeMap<String, Want>,
        have: BTreeMap<String, Have>,
        layout: Layout,
        direction: &'static str,
    ) -> bool {
        let mut ok = true;
        for (name, h) in have {
            let p = path::join(dir, &name);
            match want.remove(&name) {
                Some(w) if w.data == h.data && w.session == h.owner => {}
                Some(w) => {
                    let mut ops = vec![WriteOp::Check {
                        path: w.source.clone(),
                        version: w.source_version,
                    }];
                    if w.session == h.owner {
                        ops.push(WriteOp::SetData {
                            path: p.clone(),
                            data: w.data,
                            version: h.version,
                        });
                    } else {
                        ops.push(WriteOp::Delete {
                            path: p.clone(),
                            version: h.version,
                        });
                        ops.push(create(&p, w.data, w.session));
                    }
                    ok &= self.write(w.session, ops, &p, layout, direction).await;
                }
                None => {
                    let ops = vec![WriteOp::Delete {
                        path: p.clone(),
                        version: h.version,
                    }];
                    ok &= self.write(0, ops, &p, layout, direction).await;
                }
            }
        }
        if !want.is_empty()
            && let Err(e) = self.store.ensure_path(dir).await
        {
            tracing::warn!(dir, error = %e, "registry layouts: cannot create the parent node");
            return false;
        }
        for (name, w) in want {
            let p = path::join(dir, &name);
            let ops = vec![
                WriteOp::Check {
                    path: w.source,
                    version: w.source_version,
                },
                create(&p, w.data, w.session),
            ];
            ok &= self.write(w.session, ops, &p, layout, direction).await;
        }
        ok
    }

    /// One conditional write (a `multi`; on AP, the same ops one by one without conditions).
    async fn write(
        &self,
        session: SessionId,
        ops: Vec<WriteOp>,
        p: &str,
        layout: Layout,
        direction: &'static str,
    ) -> bool {
        let what = format!("registry layout node {p}");
        let r = if self.store.capabilities().multi {
            self.store.multi(session, ops, &what).await.map(|_| ())
        } else {
            let mut r = Ok(());
            for op in ops {
                if matches!(op, WriteOp::Check { .. }) {
                    continue;
                }
                if let Err(e) = self.store.op(session, op, &what).await {
                    r = Err(e);
                    break;
                }
            }
            r
        };
        let result = match &r {
            Ok(()) => "ok",
            // The owning session is gone (its ephemerals go with it), or, on AP, it belongs to
            // another member, which writes this node itself: nothing to retry here.
            Err(e) if e.code == "LEASE_NOT_FOUND" => {
                tracing::debug!(
                    path = p,
                    session = format!("{session:#x}"),
                    "registry layouts: session not open on this member; left to its owner"
                );
                metrics::counter!("roster_registry_layout_writes_total",
                    "layout" => layout.name(), "direction" => direction, "result" => "not_owner")
                .increment(1);
                return true;
            }
            // The source changed or went (its own event follows), or another member got there:
            // the next round sees the new state.
            Err(e) if matches!(e.code, "NOT_FOUND" | "CONFLICT" | "ALREADY_EXISTS") => {
                tracing::debug!(path = p, error = %e, "registry layouts: write raced; converging again");
                "raced"
            }
            Err(e) => {
                tracing::warn!(path = p, session = format!("{session:#x}"), error = %e,
                    "registry layouts: write failed");
                "error"
            }
        };
        metrics::counter!("roster_registry_layout_writes_total",
            "layout" => layout.name(), "direction" => direction, "result" => result)
        .increment(1);
        r.is_ok()
    }
}

/// A node as read under the tree lock: its name, data and stat as clients see it.
struct Raw {
    name: String,
    data: Vec<u8>,
    stat: Stat,
}

impl Raw {
    fn into_have(self) -> Have {
        Have {
            data: self.data,
            owner: self.stat.ephemeral_owner,
            version: self.stat.version,
        }
    }
}

/// The children of `dir` (none if it is absent).
fn children(t: &Tree, dir: &str) -> Vec<Raw> {
    let Some(n) = t.get(dir) else {
        return Vec::new();
    };
    n.children
        .iter()
        .filter_map(|c| {
            let node = t.get(&path::join(dir, c))?;
            Some(Raw {
                name: c.clone(),
                data: node.data.clone(),
                stat: node.client_stat(),
            })
        })
        .collect()
}

/// A registry record, as `registry::read_instance` reads it from a node.
fn instance_of(raw: &Raw) -> Option<Instance> {
    let mut inst: Instance = serde_json::from_slice(&raw.data).ok()?;
    inst.lease = (raw.stat.ephemeral_owner != 0).then_some(raw.stat.ephemeral_owner);
    inst.revision = raw.stat.mzxid as u64;
    Some(inst)
}

fn create(p: &str, data: Vec<u8>, session: SessionId) -> WriteOp {
    WriteOp::Create {
        path: p.to_owned(),
        data,
        acl: Acl::open_unsafe(),
        mode: if session != 0 {
            CreateMode::Ephemeral
        } else {
            CreateMode::Persistent
        },
        ttl: 0,
    }
}

fn skipped(layout: &'static str, p: &str, why: &str) {
    tracing::debug!(
        layout,
        path = p,
        why,
        "registry layouts: node is not an instance; skipped"
    );
    metrics::counter!("roster_registry_layout_skipped_total", "layout" => layout).increment(1);
}
