//! The registry: one canonical instance record per node at
//! `/roster/registry/{namespace}/{group}/{service}/{ip}#{port}#{cluster}`, ephemeral (bound to a
//! lease) or persistent; the service node above holds the service's own settings (protect
//! threshold, metadata). Nacos, Eureka and ZooKeeper layouts map onto this record.

use super::error::ApiError;
use super::feed::{Feed, Follow, Next, Under};
use super::lease::Leases;
use super::store::{ROOT, Store, segment};
use roster_core::tree::Tree;
use roster_core::txn::WriteOp;
use roster_core::{CreateMode, SessionId, Zxid, path};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;

pub const DEFAULT_NAMESPACE: &str = "public";
pub const DEFAULT_GROUP: &str = "DEFAULT_GROUP";
pub const DEFAULT_CLUSTER: &str = "DEFAULT";

/// A server-side health probe of an instance, run by the member that registered it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HealthCheck {
    /// `tcp` (connect), `http` (GET expecting 2xx) or `grpc` (grpc.health.v1 Check).
    #[serde(rename = "type")]
    pub kind: ProbeKind,
    /// Port to probe (default: the instance's port).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// For `http`: the path to GET (default `/`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Milliseconds between probes (default 5000, at least 500).
    #[serde(default = "default_interval")]
    pub interval_ms: u64,
    /// Milliseconds before a probe counts as failed (default 2000).
    #[serde(default = "default_probe_timeout")]
    pub timeout_ms: u64,
}

/// Default milliseconds between health probes.
pub fn default_interval() -> u64 {
    5000
}
/// Default milliseconds before a health probe counts as failed.
pub fn default_probe_timeout() -> u64 {
    2000
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ProbeKind {
    Tcp,
    Http,
    Grpc,
}

/// An instance as stored (the node's data) and as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Instance {
    /// `{ip}#{port}#{cluster}`: the node name.
    pub id: String,
    pub namespace: String,
    pub group: String,
    pub service: String,
    pub cluster: String,
    pub ip: String,
    pub port: u16,
    pub weight: f64,
    pub healthy: bool,
    pub enabled: bool,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    pub ephemeral: bool,
    /// The protocol it was registered through: `native`, `nacos`, `eureka`, `zookeeper`.
    pub protocol: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheck>,
    /// Fields of the registering protocol that the record has no place for, kept so that
    /// protocol shows the instance back as it was registered (Eureka: `instanceId`, `hostName`,
    /// `vipAddress`, `status`, … — docs/registry-model.md).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extra: BTreeMap<String, String>,
    /// The member that registered it (and runs its probes).
    #[serde(default)]
    pub owner: u64,
    /// The lease it is bound to (ephemeral instances); read from the node, not stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<i64>,
    /// Revision of its last change; read from the node, not stored.
    #[serde(default)]
    pub revision: u64,
}

/// What a client sends to register an instance.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default)]
    pub group: Option<String>,
    #[serde(default)]
    pub cluster: Option<String>,
    pub ip: String,
    pub port: u16,
    #[serde(default)]
    pub weight: Option<f64>,
    #[serde(default)]
    pub healthy: Option<bool>,
    #[serde(default)]
    pub enabled: Option<bool>,
    #[serde(default)]
    pub metadata: Option<BTreeMap<String, String>>,
    /// Ephemeral (default) instances need a lease and vanish with it.
    #[serde(default)]
    pub ephemeral: Option<bool>,
    #[serde(default)]
    pub lease: Option<i64>,
    #[serde(default)]
    pub health_check: Option<HealthCheck>,
}

/// A service's own settings (the service node's data).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ServiceSettings {
    /// If the healthy share of instances falls below this (0..1), healthy-only queries return
    /// every instance and say so (Nacos's protect threshold). 0 disables it.
    #[serde(default)]
    pub protect_threshold: f64,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
}

/// A service as listed.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ServiceInfo {
    pub namespace: String,
    pub group: String,
    pub service: String,
    pub instances: usize,
    pub healthy_instances: usize,
    pub settings: ServiceSettings,
}

/// Filters of an instance query.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub healthy_only: bool,
    pub clusters: Vec<String>,
    pub metadata: Vec<(String, String)>,
}

/// The answer to an instance query.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct InstanceList {
    pub namespace: String,
    pub group: String,
    pub service: String,
    /// The replica's revision the list was read at.
    pub revision: u64,
    pub instances: Vec<Instance>,
    /// True when the healthy share fell below the protect threshold, so unhealthy instances are
    /// included although only healthy ones were asked for.
    pub protect_threshold_reached: bool,
}

/// A page of services.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ServicePage {
    pub total: usize,
    pub page: usize,
    pub page_size: usize,
    pub services: Vec<ServiceInfo>,
}

/// One message of a subscription stream.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum SubscribeEvent {
    /// The full set at `revision` (first message, and after any resynchronisation).
    Snapshot {
        revision: u64,
        instances: Vec<Instance>,
    },
    /// Instances added or changed, and ids removed, since the previous message.
    Change {
        revision: u64,
        upserted: Vec<Instance>,
        removed: Vec<String>,
    },
}

/// Services, instances and healthy instances in the whole registry (for gauges).
pub fn totals(t: &Tree) -> (usize, usize, usize) {
    let (mut services, mut instances, mut healthy) = (0, 0, 0);
    let root = format!("{ROOT}/registry");
    let Some(r) = t.get(&root) else {
        return (0, 0, 0);
    };
    for ns in &r.children {
        let nsp = path::join(&root, ns);
        for g in t.get(&nsp).map(|n| &n.children).into_iter().flatten() {
            let gp = path::join(&nsp, g);
            for s in t.get(&gp).map(|n| &n.children).into_iter().flatten() {
                services += 1;
                let all = collect_instances(t, &path::join(&gp, s));
                instances += all.len();
                healthy += all.iter().filter(|i| i.healthy && i.enabled).count();
            }
        }
    }
    (services, instances, healthy)
}

/// A change to an instance's mutable fields; `None` keeps a field as it is.
#[derive(Debug, Clone, Default)]
pub struct InstancePatch {
    pub weight: Option<f64>,
    pub healthy: Option<bool>,
    pub enabled: Option<bool>,
    /// Replaces the metadata.
    pub metadata: Option<BTreeMap<String, String>>,
}

impl InstancePatch {
    pub fn validate(&self) -> Result<(), ApiError> {
        if let Some(w) = self.weight
            && !(0.0..=10000.0).contains(&w)
        {
            return Err(ApiError::invalid("weight must be between 0 and 10000")
                .with_details(serde_json::json!({"field": "weight"})));
        }
        Ok(())
    }

    pub fn apply(&self, i: &mut Instance) {
        if let Some(w) = self.weight {
            i.weight = w;
        }
        if let Some(h) = self.healthy {
            i.healthy = h;
        }
        if let Some(e) = self.enabled {
            i.enabled = e;
        }
        if let Some(m) = &self.metadata {
            i.metadata = m.clone();
        }
    }
}

/// Namespace / group / service, validated, with defaults applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceKey {
    pub namespace: String,
    pub group: String,
    pub service: String,
}

impl ServiceKey {
    pub fn new(
        namespace: Option<&str>,
        group: Option<&str>,
        service: &str,
    ) -> Result<ServiceKey, ApiError> {
        let (namespace, group) = super::store::scope(namespace, group)?;
        Ok(ServiceKey {
            namespace,
            group,
            service: segment("service", service)?.to_owned(),
        })
    }

    pub fn path(&self) -> String {
        format!(
            "{ROOT}/registry/{}/{}/{}",
            self.namespace, self.group, self.service
        )
    }
}

/// The id (node name) of an instance.
pub fn instance_id(ip: &str, port: u16, cluster: &str) -> String {
    format!("{ip}#{port}#{cluster}")
}

pub fn validate_ip(ip: &str) -> Result<(), ApiError> {
    let ok = !ip.is_empty()
        && ip.len() <= 253
        && (ip.parse::<std::net::IpAddr>().is_ok()
            || ip
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_'));
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid("ip must be an IP address or a host name")
            .with_details(serde_json::json!({"field": "ip", "value": ip})))
    }
}

/// Read an instance node into the API view.
pub fn read_instance(t: &Tree, p: &str) -> Option<Instance> {
    let node = t.get(p)?;
    let mut inst: Instance = serde_json::from_slice(&node.data).ok()?;
    let stat = node.client_stat();
    inst.lease = (stat.ephemeral_owner != 0).then_some(stat.ephemeral_owner);
    inst.revision = stat.mzxid as u64;
    Some(inst)
}

fn read_settings(t: &Tree, p: &str) -> ServiceSettings {
    t.get(p)
        .and_then(|n| serde_json::from_slice(&n.data).ok())
        .unwrap_or_default()
}

/// The registry service.
pub struct Registry {
    store: Store,
    feed: Arc<Feed>,
    server_id: u64,
}

impl Registry {
    pub fn new(store: Store, feed: Arc<Feed>, server_id: u64) -> Registry {
        Registry {
            store,
            feed,
            server_id,
        }
    }

    /// Register (or re-register, replacing) an instance.
    pub async fn register(
        &self,
        leases: &Leases,
        service: &str,
        req: RegisterRequest,
        protocol: &str,
    ) -> Result<Instance, ApiError> {
        let key = ServiceKey::new(req.namespace.as_deref(), req.group.as_deref(), service)?;
        let cluster = req
            .cluster
            .as_deref()
            .filter(|c| !c.is_empty())
            .unwrap_or(DEFAULT_CLUSTER);
        segment("cluster", cluster)?;
        validate_ip(&req.ip)?;
        let weight = req.weight.unwrap_or(1.0);
        if !(0.0..=10000.0).contains(&weight) || weight.is_nan() {
            return Err(ApiError::invalid("weight must be between 0 and 10000")
                .with_details(serde_json::json!({"field": "weight"})));
        }
        if let Some(h) = &req.health_check
            && (h.interval_ms < 500 || h.timeout_ms == 0 || h.timeout_ms > 60_000)
        {
            return Err(ApiError::invalid(
                "health_check: interval_ms must be at least 500 and timeout_ms 1..60000",
            )
            .with_details(serde_json::json!({"field": "health_check"})));
        }
        let ephemeral = req.ephemeral.unwrap_or(true);
        let session: SessionId = if ephemeral {
            let lease = req.lease.ok_or_else(|| {
                ApiError::invalid("an ephemeral instance needs a lease (grant one first)")
                    .with_details(serde_json::json!({"field": "lease"}))
            })?;
            leases.require(lease)?;
            lease
        } else {
            if req.lease.is_some() {
                return Err(ApiError::invalid("a persistent instance takes no lease")
                    .with_details(serde_json::json!({"field": "lease"})));
            }
            0
        };
        let id = instance_id(&req.ip, req.port, cluster);
        let inst = Instance {
            id: id.clone(),
            namespace: key.namespace.clone(),
            group: key.group.clone(),
            service: key.service.clone(),
            cluster: cluster.to_owned(),
            ip: req.ip,
            port: req.port,
            weight,
            healthy: req.healthy.unwrap_or(true),
            enabled: req.enabled.unwrap_or(true),
            metadata: req.metadata.unwrap_or_default(),
            ephemeral,
            protocol: protocol.to_owned(),
            health_check: req.health_check,
            extra: BTreeMap::new(),
            owner: self.server_id,
            lease: None,
            revision: 0,
        };
        self.put(&key, inst, session).await
    }

    /// Write an instance record bound to `session` (0: persistent), replacing what is there.
    pub async fn put(
        &self,
        key: &ServiceKey,
        inst: Instance,
        session: SessionId,
    ) -> Result<Instance, ApiError> {
        let dir = key.path();
        let p = path::join(&dir, &inst.id);
        let mut stored = inst.clone();
        stored.lease = None;
        stored.revision = 0;
        let data = serde_json::to_vec(&stored).expect("instance serialises");
        self.store.ensure_path(&dir).await?;
        let mode = if session != 0 {
            CreateMode::Ephemeral
        } else {
            CreateMode::Persistent
        };
        let what = format!("instance {}", inst.id);
        for _ in 0..5 {
            let existing = self.store.read(|t| {
                t.get(&p)
                    .map(|n| (n.client_stat().ephemeral_owner, n.stat.version))
            });
            let r = match existing {
                None => self
                    .store
                    .create(session, &p, data.clone(), mode, &what)
                    .await
                    .map(|_| ()),
                Some((owner, version)) if owner == session => self
                    .store
                    .set(&p, data.clone(), version, &what)
                    .await
                    .map(|_| ()),
                Some((_, version)) => self
                    .store
                    .multi(
                        session,
                        vec![
                            WriteOp::Delete {
                                path: p.clone(),
                                version,
                            },
                            WriteOp::Create {
                                path: p.clone(),
                                data: data.clone(),
                                acl: roster_core::acl::Acl::open_unsafe(),
                                mode,
                                ttl: 0,
                            },
                        ],
                        &what,
                    )
                    .await
                    .map(|_| ()),
            };
            match r {
                Ok(()) => {
                    metrics::counter!("roster_registry_registrations_total", "protocol" => protocol_label(&inst.protocol)).increment(1);
                    return self
                        .store
                        .read(|t| read_instance(t, &p))
                        .ok_or_else(|| ApiError::not_found(format!("{what} vanished")));
                }
                // Raced with another writer (or the lease holder's expiry): look again.
                Err(e)
                    if e.code == "ALREADY_EXISTS"
                        || e.code == "CONFLICT"
                        || e.code == "NOT_FOUND" =>
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

    /// Remove an instance.
    pub async fn deregister(&self, key: &ServiceKey, id: &str) -> Result<(), ApiError> {
        segment("instance", id)?;
        let p = path::join(&key.path(), id);
        self.store.delete(&p, -1, &format!("instance {id}")).await?;
        metrics::counter!("roster_registry_deregistrations_total").increment(1);
        Ok(())
    }

    pub fn get(&self, key: &ServiceKey, id: &str) -> Result<Instance, ApiError> {
        segment("instance", id)?;
        let p = path::join(&key.path(), id);
        self.store.read(|t| read_instance(t, &p)).ok_or_else(|| {
            ApiError::not_found(format!("no instance {id} in service {}", key.service))
        })
    }

    /// Change an instance's mutable fields (weight, healthy, enabled, metadata), keeping its lease.
    pub async fn update(
        &self,
        key: &ServiceKey,
        id: &str,
        f: impl Fn(&mut Instance),
    ) -> Result<Instance, ApiError> {
        let p = path::join(&key.path(), segment("instance", id)?);
        for _ in 0..5 {
            let (mut inst, version) = self
                .store
                .read(|t| Some((read_instance(t, &p)?, t.get(&p)?.stat.version)))
                .ok_or_else(|| ApiError::not_found(format!("no instance {id}")))?;
            f(&mut inst);
            let mut stored = inst.clone();
            stored.lease = None;
            stored.revision = 0;
            let data = serde_json::to_vec(&stored).expect("instance serialises");
            match self
                .store
                .set(&p, data, version, &format!("instance {id}"))
                .await
            {
                Ok(_) => return self.get(key, id),
                Err(e) if e.code == "CONFLICT" => continue,
                Err(e) => return Err(e),
            }
        }
        Err(ApiError::conflict(format!(
            "instance {id}: too much contention"
        )))
    }

    /// Validate and apply a patch (what both front ends call to update an instance).
    pub async fn patch(
        &self,
        key: &ServiceKey,
        id: &str,
        patch: &InstancePatch,
    ) -> Result<Instance, ApiError> {
        patch.validate()?;
        self.update(key, id, |i| patch.apply(i)).await
    }

    /// Heartbeat: keep the instance's lease alive.
    pub async fn heartbeat(
        &self,
        leases: &Leases,
        key: &ServiceKey,
        id: &str,
    ) -> Result<Instance, ApiError> {
        let inst = self.get(key, id)?;
        if let Some(lease) = inst.lease {
            leases.keep_alive(lease).await?;
        }
        Ok(inst)
    }

    fn collect(&self, t: &Tree, key: &ServiceKey) -> Vec<Instance> {
        collect_instances(t, &key.path())
    }

    /// Instances of a service with filters and the protect threshold applied.
    pub fn list(&self, key: &ServiceKey, filter: &Filter) -> InstanceList {
        let (revision, all, settings) = self.store.read(|t| {
            (
                t.last_zxid(),
                self.collect(t, key),
                read_settings(t, &key.path()),
            )
        });
        apply_filter(key, revision, all, &settings, filter)
    }

    /// Create or update a service's settings.
    pub async fn put_service(
        &self,
        key: &ServiceKey,
        settings: ServiceSettings,
    ) -> Result<ServiceInfo, ApiError> {
        if !(0.0..=1.0).contains(&settings.protect_threshold) {
            return Err(
                ApiError::invalid("protect_threshold must be between 0 and 1")
                    .with_details(serde_json::json!({"field": "protect_threshold"})),
            );
        }
        let dir = key.path();
        self.store.ensure_path(&dir).await?;
        let data = serde_json::to_vec(&settings).expect("settings serialise");
        self.store
            .set(&dir, data, -1, &format!("service {}", key.service))
            .await?;
        self.service(key)
    }

    pub fn service(&self, key: &ServiceKey) -> Result<ServiceInfo, ApiError> {
        self.store
            .read(|t| {
                t.get(&key.path())?;
                Some(self.info(t, key))
            })
            .ok_or_else(|| ApiError::not_found(format!("no service {}", key.service)))
    }

    fn info(&self, t: &Tree, key: &ServiceKey) -> ServiceInfo {
        let inst = self.collect(t, key);
        ServiceInfo {
            namespace: key.namespace.clone(),
            group: key.group.clone(),
            service: key.service.clone(),
            instances: inst.len(),
            healthy_instances: inst.iter().filter(|i| i.healthy).count(),
            settings: read_settings(t, &key.path()),
        }
    }

    /// Delete a service that has no instances left.
    pub async fn delete_service(&self, key: &ServiceKey) -> Result<(), ApiError> {
        let dir = key.path();
        match self
            .store
            .delete(&dir, -1, &format!("service {}", key.service))
            .await
        {
            Err(e) if e.code == "FAILED_PRECONDITION" => Err(ApiError::new(
                axum::http::StatusCode::CONFLICT,
                "FAILED_PRECONDITION",
                format!("service {} still has instances", key.service),
            )),
            r => r,
        }
    }

    /// Services of a namespace (optionally one group), sorted, one page.
    pub fn services(
        &self,
        namespace: Option<&str>,
        group: Option<&str>,
        page: usize,
        page_size: usize,
    ) -> Result<ServicePage, ApiError> {
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
        if page == 0 || page_size == 0 || page_size > 1000 {
            return Err(ApiError::invalid("page starts at 1; page_size is 1..1000"));
        }
        Ok(self.store.read(|t| {
            let ns_dir = format!("{ROOT}/registry/{ns}");
            let groups: Vec<String> = match &group {
                Some(g) => vec![g.clone()],
                None => t
                    .get(&ns_dir)
                    .map(|n| n.children.iter().cloned().collect())
                    .unwrap_or_default(),
            };
            let mut keys = Vec::new();
            for g in groups {
                if let Some(n) = t.get(&path::join(&ns_dir, &g)) {
                    for s in &n.children {
                        keys.push(ServiceKey {
                            namespace: ns.clone(),
                            group: g.clone(),
                            service: s.clone(),
                        });
                    }
                }
            }
            let total = keys.len();
            let services = keys
                .iter()
                .skip((page - 1) * page_size)
                .take(page_size)
                .map(|k| self.info(t, k))
                .collect();
            ServicePage {
                total,
                page,
                page_size,
                services,
            }
        }))
    }

    /// A subscription: the full set first (or, resuming from `from`, only what changed since),
    /// then every change, coalesced, in revision order.
    pub fn subscribe(&self, key: ServiceKey, from: Option<Zxid>) -> Subscriber {
        let dir = key.path();
        let (sub, (revision, all)) =
            self.feed
                .subscribe_under(self.store.backend(), Under::path(dir.clone()), from, |t| {
                    (t.last_zxid(), self.collect(t, &key))
                });
        let first = if sub.resync {
            SubscribeEvent::Snapshot {
                revision: revision as u64,
                instances: all,
            }
        } else {
            let mut ids: Vec<String> = sub
                .backlog
                .iter()
                .filter(|c| path::parent(&c.path) == dir)
                .map(|c| path::name(&c.path).to_owned())
                .collect();
            ids.sort();
            ids.dedup();
            let (upserted, removed) = split_changes(&all, ids);
            SubscribeEvent::Change {
                revision: revision as u64,
                upserted,
                removed,
            }
        };
        Subscriber {
            store: self.store.clone(),
            follow: Follow::new(sub.rx, dir, revision),
            key,
            first: Some(first),
        }
    }
}

fn protocol_label(p: &str) -> &'static str {
    match p {
        "nacos" => "nacos",
        "eureka" => "eureka",
        "zookeeper" => "zookeeper",
        _ => "native",
    }
}

/// Split changed ids into those present now (upserts) and those gone.
fn split_changes(now: &[Instance], ids: Vec<String>) -> (Vec<Instance>, Vec<String>) {
    let mut upserted = Vec::new();
    let mut removed = Vec::new();
    for id in ids {
        match now.iter().find(|i| i.id == id) {
            Some(i) => upserted.push(i.clone()),
            None => removed.push(id),
        }
    }
    (upserted, removed)
}

/// Apply filters and the protect threshold to a service's instances.
pub fn apply_filter(
    key: &ServiceKey,
    revision: Zxid,
    all: Vec<Instance>,
    settings: &ServiceSettings,
    filter: &Filter,
) -> InstanceList {
    let mut selected: Vec<Instance> = all
        .into_iter()
        .filter(|i| filter.clusters.is_empty() || filter.clusters.contains(&i.cluster))
        .filter(|i| {
            filter
                .metadata
                .iter()
                .all(|(k, v)| i.metadata.get(k) == Some(v))
        })
        .collect();
    let mut protect = false;
    if filter.healthy_only {
        let total = selected.len();
        let healthy = selected.iter().filter(|i| i.healthy && i.enabled).count();
        if total > 0
            && settings.protect_threshold > 0.0
            && (healthy as f64) / (total as f64) < settings.protect_threshold
        {
            protect = true;
            metrics::counter!("roster_registry_protect_threshold_hits_total").increment(1);
        } else {
            selected.retain(|i| i.healthy && i.enabled);
        }
    }
    InstanceList {
        namespace: key.namespace.clone(),
        group: key.group.clone(),
        service: key.service.clone(),
        revision: revision as u64,
        instances: selected,
        protect_threshold_reached: protect,
    }
}

/// One client's subscription to one service.
pub struct Subscriber {
    store: Store,
    follow: Follow,
    key: ServiceKey,
    first: Option<SubscribeEvent>,
}

impl Subscriber {
    /// The next message; `None` when the server is shutting down.
    pub async fn next(&mut self) -> Option<SubscribeEvent> {
        if let Some(first) = self.first.take() {
            return Some(first);
        }
        let dir = self.key.path();
        loop {
            match self.follow.next().await {
                Next::Closed => return None,
                Next::Resync => {
                    let (revision, all) = self
                        .store
                        .read(|t| (t.last_zxid(), collect_instances(t, &dir)));
                    self.follow.read_at(revision);
                    return Some(SubscribeEvent::Snapshot {
                        revision: revision as u64,
                        instances: all,
                    });
                }
                Next::Changed(paths) => {
                    let ids: Vec<String> = paths
                        .iter()
                        .filter(|p| path::parent(p) == dir)
                        .map(|p| path::name(p).to_owned())
                        .collect();
                    if ids.is_empty() {
                        continue;
                    }
                    let (revision, now) = self.store.read(|t| {
                        let now: Vec<Instance> = ids
                            .iter()
                            .filter_map(|id| read_instance(t, &path::join(&dir, id)))
                            .collect();
                        (t.last_zxid(), now)
                    });
                    // Not `read_at(revision)`: only these ids were read, and a change to
                    // another one may already be queued below `revision`.
                    let (upserted, removed) = split_changes(&now, ids);
                    return Some(SubscribeEvent::Change {
                        revision: revision as u64,
                        upserted,
                        removed,
                    });
                }
            }
        }
    }
}

fn collect_instances(t: &Tree, dir: &str) -> Vec<Instance> {
    t.get(dir)
        .map(|n| {
            n.children
                .iter()
                .filter_map(|c| read_instance(t, &path::join(dir, c)))
                .collect()
        })
        .unwrap_or_default()
}
