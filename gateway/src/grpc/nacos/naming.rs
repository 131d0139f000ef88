//! Nacos naming over gRPC: register / deregister (ephemeral instances bound to the connection's
//! session, persistent ones to none), batch register, subscribe with `NotifySubscriberRequest`
//! pushes, query and list — on the native registry.

use super::connection::{Conn, Subscribed, Watch};
use super::{Nacos, Reply, RpcError, RpcResult, parse};
use crate::api::Api;
use crate::api::feed::{Follow, Next, Under, under};
use crate::api::registry::{DEFAULT_CLUSTER, DEFAULT_GROUP, Instance, ServiceKey, instance_id};
use crate::api::store::ROOT;
use crate::grpc::nacos::proto::Payload;
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

/// `AbstractNamingRequest` and the fields of its subclasses Roster reads.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct NamingRequest {
    namespace: Option<String>,
    service_name: String,
    group_name: Option<String>,
    #[serde(rename = "type")]
    kind: String,
    instance: Option<NacosInstance>,
    instances: Vec<NacosInstance>,
    subscribe: bool,
    clusters: Option<String>,
    cluster: Option<String>,
    healthy_only: bool,
    page_no: usize,
    page_size: usize,
}

/// `com.alibaba.nacos.api.naming.pojo.Instance`.
#[derive(Deserialize, Debug, Clone)]
#[serde(rename_all = "camelCase")]
struct NacosInstance {
    ip: String,
    port: i64,
    #[serde(default = "one")]
    weight: f64,
    #[serde(default = "yes")]
    healthy: bool,
    #[serde(default = "yes")]
    enabled: bool,
    #[serde(default = "yes")]
    ephemeral: bool,
    #[serde(default)]
    cluster_name: Option<String>,
    #[serde(default)]
    metadata: Option<BTreeMap<String, String>>,
}

fn one() -> f64 {
    1.0
}
fn yes() -> bool {
    true
}

impl NamingRequest {
    fn key(&self) -> Result<ServiceKey, RpcError> {
        if self.service_name.is_empty() {
            return Err(RpcError::invalid("serviceName is required"));
        }
        // The grouped form `group@@service` is accepted too.
        let (group, service) = match self.service_name.split_once("@@") {
            Some((g, s)) => (Some(g), s),
            None => (self.group_name.as_deref(), self.service_name.as_str()),
        };
        let ns = self.namespace.as_deref().filter(|n| !n.is_empty());
        let group = group.filter(|g| !g.is_empty()).or(Some(DEFAULT_GROUP));
        Ok(ServiceKey::new(ns, group, service)?)
    }
}

fn record(key: &ServiceKey, i: &NacosInstance) -> Result<Instance, RpcError> {
    let port = u16::try_from(i.port)
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| RpcError::invalid(format!("port {} is out of range 1..65535", i.port)))?;
    if !(0.0..=10000.0).contains(&i.weight) || i.weight.is_nan() {
        return Err(RpcError::invalid("weight must be between 0 and 10000"));
    }
    crate::api::registry::validate_ip(&i.ip)?;
    let cluster = i
        .cluster_name
        .as_deref()
        .filter(|c| !c.is_empty())
        .unwrap_or(DEFAULT_CLUSTER)
        .to_owned();
    crate::api::store::segment("cluster", &cluster)?;
    Ok(Instance {
        id: instance_id(&i.ip, port, &cluster),
        namespace: key.namespace.clone(),
        group: key.group.clone(),
        service: key.service.clone(),
        cluster,
        ip: i.ip.clone(),
        port,
        weight: i.weight,
        healthy: i.healthy,
        enabled: i.enabled,
        metadata: i.metadata.clone().unwrap_or_default(),
        extra: Default::default(),
        ephemeral: i.ephemeral,
        protocol: "nacos".into(),
        health_check: None,
        owner: 0,
        lease: None,
        revision: 0,
    })
}

/// The `ServiceInfo` of a gRPC answer or push: the raw service `name` beside `groupName`.
pub fn service_info(api: &Api, key: &ServiceKey, clusters: &[String], healthy_only: bool) -> Value {
    let mut v = crate::nacos::naming::service_info(api, key, clusters, healthy_only);
    v["name"] = json!(key.service);
    v
}

fn split_clusters(c: Option<&str>) -> Vec<String> {
    c.map(|c| {
        c.split(',')
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect()
    })
    .unwrap_or_default()
}

pub async fn handle(nacos: &Nacos, conn: &Arc<Conn>, kind: &str, p: &Payload) -> RpcResult {
    let r: NamingRequest = parse(p)?;
    let api = &nacos.api;
    match kind {
        "InstanceRequest" | "PersistentInstanceRequest" => {
            let key = r.key()?;
            let inst = r
                .instance
                .as_ref()
                .ok_or_else(|| RpcError::invalid("instance is required"))?;
            let mut rec = record(&key, inst)?;
            let persistent = kind == "PersistentInstanceRequest";
            if persistent {
                rec.ephemeral = false;
            } else if !rec.ephemeral {
                return Err(RpcError::invalid(
                    "InstanceRequest is for ephemeral instances; persistent ones use PersistentInstanceRequest",
                ));
            }
            match r.kind.as_str() {
                "registerInstance" => {
                    let session = if persistent {
                        0
                    } else {
                        conn.session(api, nacos.session_timeout_ms).await?
                    };
                    api.registry.put(&key, rec, session).await?;
                }
                "deregisterInstance" => match api.registry.deregister(&key, &rec.id).await {
                    Ok(()) => {}
                    // Nacos answers success for an instance that is already gone.
                    Err(e) if e.code == "NOT_FOUND" => {}
                    Err(e) => return Err(e.into()),
                },
                other => {
                    return Err(RpcError::invalid(format!(
                        "unsupported instance request type {other:?}"
                    )));
                }
            }
            Ok(Reply::new("InstanceResponse", json!({"type": r.kind})))
        }
        "BatchInstanceRequest" => {
            let key = r.key()?;
            if r.kind != "batchRegisterInstance" {
                return Err(RpcError::invalid(format!(
                    "unsupported batch request type {:?}",
                    r.kind
                )));
            }
            let records = r
                .instances
                .iter()
                .map(|i| record(&key, i))
                .collect::<Result<Vec<_>, _>>()?;
            let session = conn.session(api, nacos.session_timeout_ms).await?;
            // The batch is the connection's whole set for the service: what it registered
            // before and left out is removed (that is how the client deregisters from a batch).
            let keep: HashSet<&str> = records.iter().map(|r| r.id.as_str()).collect();
            let mine: Vec<String> = api
                .registry
                .list(&key, &Default::default())
                .instances
                .into_iter()
                .filter(|i| i.lease == Some(session) && !keep.contains(i.id.as_str()))
                .map(|i| i.id)
                .collect();
            for rec in records {
                api.registry.put(&key, rec, session).await?;
            }
            for id in mine {
                if let Err(e) = api.registry.deregister(&key, &id).await
                    && e.code != "NOT_FOUND"
                {
                    return Err(e.into());
                }
            }
            Ok(Reply::new("BatchInstanceResponse", json!({"type": r.kind})))
        }
        "SubscribeServiceRequest" => {
            let key = r.key()?;
            let clusters = split_clusters(r.clusters.as_deref());
            let path = key.path();
            if !r.subscribe {
                let mut subs = conn.subscriptions.lock();
                subs.remove(&path);
                conn.follow(Watch::Naming, subs.keys().cloned().collect());
                drop(subs);
                return Ok(Reply::new(
                    "SubscribeServiceResponse",
                    json!({"serviceInfo": service_info(api, &key, &clusters, false)}),
                ));
            }
            start_watch(nacos, conn);
            {
                let mut subs = conn.subscriptions.lock();
                subs.insert(
                    path.clone(),
                    Subscribed {
                        key: key.clone(),
                        clusters: clusters.clone(),
                        last_hosts: String::new(),
                    },
                );
                conn.follow(Watch::Naming, subs.keys().cloned().collect());
            }
            // Read after subscribing and following, so a change in between is pushed rather
            // than lost.
            let info = service_info(api, &key, &clusters, false);
            if let Some(s) = conn.subscriptions.lock().get_mut(&path) {
                s.last_hosts = info["hosts"].to_string();
            }
            Ok(Reply::new(
                "SubscribeServiceResponse",
                json!({"serviceInfo": info}),
            ))
        }
        "ServiceQueryRequest" => {
            let key = r.key()?;
            let clusters = split_clusters(r.cluster.as_deref());
            Ok(Reply::new(
                "QueryServiceResponse",
                json!({"serviceInfo": service_info(api, &key, &clusters, r.healthy_only)}),
            ))
        }
        "ServiceListRequest" => {
            let ns = r.namespace.as_deref().filter(|n| !n.is_empty());
            let group = r
                .group_name
                .as_deref()
                .filter(|g| !g.is_empty())
                .unwrap_or(DEFAULT_GROUP);
            let page = r.page_no.max(1);
            let size = if r.page_size == 0 {
                10
            } else {
                r.page_size.min(1000)
            };
            let s = api.registry.services(ns, Some(group), page, size)?;
            let names: Vec<String> = s.services.into_iter().map(|s| s.service).collect();
            Ok(Reply::new(
                "ServiceListResponse",
                json!({"count": s.total, "serviceNames": names}),
            ))
        }
        other => Err(RpcError::new(
            super::code::NO_HANDLER,
            format!("no naming handler for {other}"),
        )),
    }
}

/// Push `NotifySubscriberRequest` to the connection whenever a subscribed service changes. The
/// connection's feed subscription follows its subscribed services only ([`Conn::follow`]), so a
/// registration elsewhere does not wake it.
fn start_watch(nacos: &Nacos, conn: &Arc<Conn>) {
    let api = nacos.api.clone();
    let weak = Arc::downgrade(conn);
    conn.start_once(Watch::Naming, || {
        // Nothing yet: the subscribe request that started this narrows it to its service.
        let (sub, scope, revision) =
            api.feed
                .subscribe_scoped(api.store.backend(), Under::paths(Vec::new()), None, |t| {
                    t.last_zxid()
                });
        let mut follow = Follow::new(sub.rx, format!("{ROOT}/registry"), revision);
        let task = tokio::spawn(async move {
            loop {
                let changed = follow.next().await;
                let Some(conn) = weak.upgrade() else { return };
                let subs: Vec<(String, Subscribed)> = {
                    let s = conn.subscriptions.lock();
                    match &changed {
                        Next::Closed => return,
                        Next::Resync => {
                            // Every subscribed service is read below: what came before is covered.
                            follow.read_at(api.store.revision());
                            s.iter().map(|(p, s)| (p.clone(), s.clone())).collect()
                        }
                        Next::Changed(paths) => s
                            .iter()
                            .filter(|(p, _)| paths.iter().any(|c| under(c, p)))
                            .map(|(p, s)| (p.clone(), s.clone()))
                            .collect(),
                    }
                };
                for (path, s) in subs {
                    let info = service_info(&api, &s.key, &s.clusters, false);
                    let hosts = info["hosts"].to_string();
                    match conn.subscriptions.lock().get_mut(&path) {
                        // Unsubscribed meanwhile, or nothing the client sees changed.
                        None => continue,
                        Some(cur) if cur.last_hosts == hosts => continue,
                        Some(cur) => cur.last_hosts = hosts,
                    }
                    let body = json!({
                        "namespace": s.key.namespace,
                        "serviceName": s.key.service,
                        "groupName": s.key.group,
                        "serviceInfo": info,
                        "module": "naming",
                    });
                    if !conn.push("NotifySubscriberRequest", body).await {
                        return;
                    }
                }
            }
        });
        (task, scope)
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grpc::nacos::{payload, test_nacos};

    async fn subscribe(nacos: &Nacos, conn: &Arc<Conn>, service: &str, on: bool) {
        let body = json!({"namespace": "public", "serviceName": service,
            "groupName": "DEFAULT_GROUP", "subscribe": on, "clusters": ""});
        let p = payload("SubscribeServiceRequest", &body);
        handle(nacos, conn, "SubscribeServiceRequest", &p)
            .await
            .expect("subscribed");
    }

    /// A registration wakes the connections subscribed to its service only, not every
    /// subscribing connection; an unsubscribed service no longer wakes it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_registration_wakes_only_the_connections_subscribed_to_it() {
        let nacos = test_nacos();
        let a = nacos.conns.check("127.0.0.1:4000".parse().unwrap());
        let b = nacos.conns.check("127.0.0.1:4001".parse().unwrap());
        subscribe(&nacos, &a, "orders", true).await;
        subscribe(&nacos, &a, "users", true).await;
        subscribe(&nacos, &b, "users", true).await;
        let instance = |svc: &str| {
            let key = ServiceKey::new(None, Some(DEFAULT_GROUP), svc).unwrap();
            format!("{}/10.0.0.1#8080", key.path())
        };
        let feed = &nacos.api.feed;
        assert_eq!(feed.woken_by(&instance("orders")), 1);
        assert_eq!(feed.woken_by(&instance("users")), 2);
        assert_eq!(
            feed.woken_by(&instance("billing")),
            0,
            "nobody subscribes to it"
        );
        subscribe(&nacos, &a, "orders", false).await;
        assert_eq!(feed.woken_by(&instance("orders")), 0, "unsubscribed");
        assert_eq!(feed.woken_by(&instance("users")), 2);
    }
}
