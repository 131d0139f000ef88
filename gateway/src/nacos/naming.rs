//! Nacos naming over HTTP (`/nacos/v1/ns/**`, `/nacos/v2/ns/**`) on the native registry.
//!
//! An ephemeral instance registered over HTTP gets a lease of its own whose TTL is the instance's
//! delete timeout (30 s by default, `preserved.ip.delete.timeout` in metadata); beats keep it
//! alive. The member that receives an instance's beats marks it unhealthy once they stop for the
//! heartbeat timeout (15 s, `preserved.heart.beat.timeout`) and healthy again on the next beat;
//! the lease's expiry removes it. Persistent instances never expire.

use super::{NacosError, Params, v2};
use crate::api::Api;
use crate::api::registry::{
    DEFAULT_CLUSTER, DEFAULT_GROUP, Filter, Instance, InstancePatch, ServiceKey, ServiceSettings,
    instance_id,
};
use axum::extract::State;
use axum::response::Response;
use axum::routing::{get, put};
use axum::{Json, Router};
use parking_lot::Mutex;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

const BEAT_INTERVAL_MS: u64 = 5_000;
const BEAT_TIMEOUT_MS: u64 = 15_000;
const DELETE_TIMEOUT_MS: u64 = 30_000;

/// Split `group@@service` (or take `groupName`).
fn service_key(p: &Params) -> Result<ServiceKey, NacosError> {
    let name = p.required("serviceName")?;
    let (group, service) = match name.split_once("@@") {
        Some((g, s)) => (g.to_owned(), s.to_owned()),
        None => (
            p.get("groupName").unwrap_or(DEFAULT_GROUP).to_owned(),
            name.to_owned(),
        ),
    };
    Ok(ServiceKey::new(
        Some(&p.namespace()),
        Some(&group),
        &service,
    )?)
}

fn grouped(key: &ServiceKey) -> String {
    format!("{}@@{}", key.group, key.service)
}

fn metadata(raw: Option<&str>) -> Result<BTreeMap<String, String>, NacosError> {
    let Some(raw) = raw else {
        return Ok(BTreeMap::new());
    };
    // A JSON object (the SDKs) or `k=v,k2=v2` (the console, older clients).
    if raw.trim_start().starts_with('{') {
        let v: HashMap<String, Value> = serde_json::from_str(raw)
            .map_err(|e| NacosError::bad(format!("metadata is not a JSON object: {e}")))?;
        return Ok(v
            .into_iter()
            .map(|(k, v)| {
                let s = match v {
                    Value::String(s) => s,
                    other => other.to_string(),
                };
                (k, s)
            })
            .collect());
    }
    raw.split(',')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .ok_or_else(|| NacosError::bad(format!("metadata entry {kv} is not key=value")))
        })
        .collect()
}

fn ms_from_meta(meta: &BTreeMap<String, String>, key: &str, default: u64) -> u64 {
    meta.get(key)
        .and_then(|v| v.parse().ok())
        .filter(|v: &u64| *v > 0)
        .unwrap_or(default)
}

/// An instance as Nacos shows it.
pub fn nacos_instance(key: &ServiceKey, i: &Instance) -> Value {
    json!({
        "instanceId": format!("{}#{}#{}#{}", i.ip, i.port, i.cluster, grouped(key)),
        "ip": i.ip,
        "port": i.port,
        "weight": i.weight,
        "healthy": i.healthy,
        "enabled": i.enabled,
        "ephemeral": i.ephemeral,
        "clusterName": i.cluster,
        "serviceName": grouped(key),
        "metadata": i.metadata,
        "instanceHeartBeatInterval": ms_from_meta(&i.metadata, "preserved.heart.beat.interval", BEAT_INTERVAL_MS),
        "instanceHeartBeatTimeOut": ms_from_meta(&i.metadata, "preserved.heart.beat.timeout", BEAT_TIMEOUT_MS),
        "ipDeleteTimeout": ms_from_meta(&i.metadata, "preserved.ip.delete.timeout", DELETE_TIMEOUT_MS),
        "instanceIdGenerator": "simple",
    })
}

/// The `ServiceInfo` a list query answers.
pub fn service_info(api: &Api, key: &ServiceKey, clusters: &[String], healthy_only: bool) -> Value {
    let list = api.registry.list(
        key,
        &Filter {
            healthy_only,
            clusters: clusters.to_vec(),
            metadata: Vec::new(),
        },
    );
    let hosts: Vec<Value> = list
        .instances
        .iter()
        .map(|i| nacos_instance(key, i))
        .collect();
    json!({
        "name": grouped(key),
        "groupName": key.group,
        "clusters": clusters.join(","),
        "cacheMillis": 10000,
        "hosts": hosts,
        "lastRefTime": now_ms(),
        "checksum": format!("{:x}", list.revision),
        "allIPs": false,
        "reachProtectionThreshold": list.protect_threshold_reached,
        "valid": true,
    })
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Beats seen by this member, and the checker that marks silent instances unhealthy.
#[derive(Default)]
pub struct Beats {
    /// Instance node path → (service, id, last beat, timeout).
    seen: Mutex<HashMap<String, (ServiceKey, String, Instant, Duration)>>,
}

impl Beats {
    fn beat(&self, key: &ServiceKey, inst: &Instance) {
        let timeout = Duration::from_millis(ms_from_meta(
            &inst.metadata,
            "preserved.heart.beat.timeout",
            BEAT_TIMEOUT_MS,
        ));
        self.seen.lock().insert(
            format!("{}/{}", key.path(), inst.id),
            (key.clone(), inst.id.clone(), Instant::now(), timeout),
        );
    }

    /// Mark instances whose beats stopped unhealthy (every second, until the runtime ends).
    pub fn start(self: &Arc<Self>, api: Arc<Api>) {
        let me = self.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(1));
            loop {
                every.tick().await;
                let silent: Vec<(String, ServiceKey, String)> = me
                    .seen
                    .lock()
                    .iter()
                    .filter(|(_, (_, _, at, timeout))| at.elapsed() > *timeout)
                    .map(|(p, (k, id, _, _))| (p.clone(), k.clone(), id.clone()))
                    .collect();
                for (p, key, id) in silent {
                    match api.registry.get(&key, &id) {
                        Ok(i) if i.healthy => {
                            tracing::info!(service = %key.service, instance = %id,
                                "no Nacos beat within the heartbeat timeout; marking unhealthy");
                            if let Err(e) =
                                api.registry.update(&key, &id, |i| i.healthy = false).await
                            {
                                tracing::warn!(instance = %id, error = %e, "marking a silent instance unhealthy");
                            }
                        }
                        Ok(_) => {}
                        Err(_) => {
                            me.seen.lock().remove(&p);
                        }
                    }
                }
            }
        });
    }
}

#[derive(Clone)]
struct Ns {
    api: Arc<Api>,
    beats: Arc<Beats>,
}

async fn register_inner(ns: &Ns, p: &Params) -> Result<(), NacosError> {
    let key = service_key(p)?;
    let ip = p.required("ip")?.to_owned();
    let port: u16 = p
        .num("port")?
        .ok_or_else(|| NacosError::bad("Param 'port' is required."))?;
    let cluster = p
        .get("clusterName")
        .or_else(|| p.get("cluster"))
        .unwrap_or(DEFAULT_CLUSTER)
        .to_owned();
    let meta = metadata(p.get("metadata"))?;
    let ephemeral = p.bool("ephemeral")?.unwrap_or(true);
    let api = &ns.api;
    let id = instance_id(&ip, port, &cluster);
    let existing = api.registry.get(&key, &id).ok();
    let session = if ephemeral {
        // Keep the instance's own lease if it still has one; otherwise open one.
        match existing.as_ref().and_then(|i| i.lease) {
            Some(l) if api.store.session_exists(l) => {
                api.store.touch(&[l]).await?;
                l
            }
            _ => {
                let ttl = ms_from_meta(&meta, "preserved.ip.delete.timeout", DELETE_TIMEOUT_MS);
                api.store
                    .open_session(ttl.min(i32::MAX as u64) as i32)
                    .await?
                    .0
            }
        }
    } else {
        0
    };
    let inst = Instance {
        id,
        namespace: key.namespace.clone(),
        group: key.group.clone(),
        service: key.service.clone(),
        cluster,
        ip,
        port,
        weight: p.num("weight")?.unwrap_or(1.0),
        healthy: p.bool("healthy")?.unwrap_or(true),
        enabled: p.bool("enabled")?.or(p.bool("enable")?).unwrap_or(true),
        metadata: meta,
        ephemeral,
        protocol: "nacos".into(),
        health_check: None,
        extra: BTreeMap::new(),
        owner: 0,
        lease: None,
        revision: 0,
    };
    if !(0.0..=10000.0).contains(&inst.weight) {
        return Err(NacosError::bad("weight must be between 0 and 10000"));
    }
    let stored = api.registry.put(&key, inst, session).await?;
    if ephemeral {
        ns.beats.beat(&key, &stored);
    }
    Ok(())
}

async fn register(State(ns): State<Ns>, p: Params) -> Result<&'static str, NacosError> {
    register_inner(&ns, &p).await.map(|_| "ok")
}

fn instance_key(p: &Params) -> Result<(ServiceKey, String), NacosError> {
    let key = service_key(p)?;
    let ip = p.required("ip")?;
    let port: u16 = p
        .num("port")?
        .ok_or_else(|| NacosError::bad("Param 'port' is required."))?;
    let cluster = p
        .get("clusterName")
        .or_else(|| p.get("cluster"))
        .unwrap_or(DEFAULT_CLUSTER);
    Ok((key, instance_id(ip, port, cluster)))
}

async fn deregister_inner(ns: &Ns, p: &Params) -> Result<(), NacosError> {
    let (key, id) = instance_key(p)?;
    let lease = match ns.api.registry.get(&key, &id) {
        Ok(i) => i.lease,
        // Nacos answers ok for an instance that is already gone.
        Err(_) => return Ok(()),
    };
    ns.api.registry.deregister(&key, &id).await?;
    // The lease was this instance's own (registered over HTTP): end it too.
    if let Some(l) = lease
        && ns.api.store.read(|t| t.ephemerals_of(l).next().is_none())
    {
        let _ = ns.api.store.close_session(l).await;
    }
    Ok(())
}

async fn deregister(State(ns): State<Ns>, p: Params) -> Result<&'static str, NacosError> {
    deregister_inner(&ns, &p).await.map(|_| "ok")
}

async fn update_inner(ns: &Ns, p: &Params) -> Result<(), NacosError> {
    let (key, id) = instance_key(p)?;
    let patch = InstancePatch {
        weight: p.num("weight")?,
        healthy: p.bool("healthy")?,
        enabled: p.bool("enabled")?.or(p.bool("enable")?),
        metadata: match p.get("metadata") {
            Some(m) => Some(metadata(Some(m))?),
            None => None,
        },
    };
    ns.api.registry.patch(&key, &id, &patch).await?;
    Ok(())
}

async fn update(State(ns): State<Ns>, p: Params) -> Result<&'static str, NacosError> {
    update_inner(&ns, &p).await.map(|_| "ok")
}

fn detail_inner(ns: &Ns, p: &Params) -> Result<Value, NacosError> {
    let (key, id) = instance_key(p)?;
    let i = ns.api.registry.get(&key, &id).map_err(|_| {
        NacosError::not_found(format!(
            "no ips found for cluster in service {}",
            grouped(&key)
        ))
    })?;
    let mut v = nacos_instance(&key, &i);
    v["service"] = json!(grouped(&key));
    Ok(v)
}

async fn detail(State(ns): State<Ns>, p: Params) -> Result<Json<Value>, NacosError> {
    detail_inner(&ns, &p).map(Json)
}

fn clusters(p: &Params) -> Vec<String> {
    p.get("clusters")
        .map(|c| {
            c.split(',')
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

fn list_inner(ns: &Ns, p: &Params) -> Result<Value, NacosError> {
    let key = service_key(p)?;
    Ok(service_info(
        &ns.api,
        &key,
        &clusters(p),
        p.bool("healthyOnly")?.unwrap_or(false),
    ))
}

async fn list(State(ns): State<Ns>, p: Params) -> Result<Json<Value>, NacosError> {
    list_inner(&ns, &p).map(Json)
}

async fn beat_inner(ns: &Ns, p: &Params) -> Result<Value, NacosError> {
    // The beat is a JSON parameter; serviceName etc. may be in it or beside it.
    let beat: Value = match p.get("beat") {
        Some(b) => serde_json::from_str(b)
            .map_err(|e| NacosError::bad(format!("beat is not JSON: {e}")))?,
        None => json!({}),
    };
    let mut merged = p.0.clone();
    for k in ["ip", "port", "serviceName", "cluster"] {
        if let Some(v) = beat.get(k) {
            let s = match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            merged.entry(k.to_owned()).or_insert(s);
        }
    }
    let p = Params(merged);
    let (key, id) = instance_key(&p)?;
    let unknown =
        json!({"clientBeatInterval": BEAT_INTERVAL_MS, "code": 20404, "lightBeatEnabled": true});
    let Ok(inst) = ns.api.registry.get(&key, &id) else {
        return Ok(unknown);
    };
    match inst.lease {
        Some(l) if ns.api.store.session_exists(l) => ns.api.store.touch(&[l]).await?,
        Some(_) => return Ok(unknown),
        None => {}
    }
    ns.beats.beat(&key, &inst);
    if !inst.healthy {
        ns.api
            .registry
            .update(&key, &id, |i| i.healthy = true)
            .await?;
    }
    Ok(json!({"clientBeatInterval": BEAT_INTERVAL_MS, "code": 10200, "lightBeatEnabled": true}))
}

async fn beat(State(ns): State<Ns>, p: Params) -> Result<Json<Value>, NacosError> {
    beat_inner(&ns, &p).await.map(Json)
}

fn settings(p: &Params, base: ServiceSettings) -> Result<ServiceSettings, NacosError> {
    let mut s = base;
    if let Some(t) = p.num::<f64>("protectThreshold")? {
        s.protect_threshold = t;
    }
    if let Some(m) = p.get("metadata") {
        s.metadata = metadata(Some(m))?;
    }
    Ok(s)
}

async fn service_create_inner(ns: &Ns, p: &Params, update: bool) -> Result<(), NacosError> {
    let key = service_key(p)?;
    let current = ns.api.registry.service(&key).ok().map(|s| s.settings);
    if update && current.is_none() {
        return Err(NacosError::bad(format!(
            "service {} not found",
            grouped(&key)
        )));
    }
    let s = settings(p, current.unwrap_or_default())?;
    ns.api.registry.put_service(&key, s).await?;
    Ok(())
}

async fn service_create(State(ns): State<Ns>, p: Params) -> Result<&'static str, NacosError> {
    service_create_inner(&ns, &p, false).await.map(|_| "ok")
}

async fn service_update(State(ns): State<Ns>, p: Params) -> Result<&'static str, NacosError> {
    service_create_inner(&ns, &p, true).await.map(|_| "ok")
}

async fn service_delete(State(ns): State<Ns>, p: Params) -> Result<&'static str, NacosError> {
    let key = service_key(&p)?;
    ns.api.registry.delete_service(&key).await?;
    Ok("ok")
}

fn service_detail_inner(ns: &Ns, p: &Params) -> Result<Value, NacosError> {
    let key = service_key(p)?;
    let s =
        ns.api.registry.service(&key).map_err(|_| {
            NacosError::not_found(format!("service {} is not found!", grouped(&key)))
        })?;
    Ok(json!({
        "namespaceId": key.namespace,
        "groupName": key.group,
        "name": key.service,
        "protectThreshold": s.settings.protect_threshold,
        "metadata": s.settings.metadata,
        "selector": {"type": "none"},
        "clusters": [],
    }))
}

async fn service_detail(State(ns): State<Ns>, p: Params) -> Result<Json<Value>, NacosError> {
    service_detail_inner(&ns, &p).map(Json)
}

fn service_list_inner(ns: &Ns, p: &Params) -> Result<(usize, Vec<String>), NacosError> {
    let page: usize = p.num("pageNo")?.unwrap_or(1).max(1);
    let size: usize = p.num("pageSize")?.unwrap_or(100).clamp(1, 1000);
    let group = p.get("groupName").unwrap_or(DEFAULT_GROUP);
    let r = ns
        .api
        .registry
        .services(Some(&p.namespace()), Some(group), page, size)?;
    Ok((r.total, r.services.into_iter().map(|s| s.service).collect()))
}

async fn service_list(State(ns): State<Ns>, p: Params) -> Result<Json<Value>, NacosError> {
    let (count, doms) = service_list_inner(&ns, &p)?;
    Ok(Json(json!({"count": count, "doms": doms})))
}

/// Namespaces that hold anything (registry or config), `public` first.
async fn namespaces(State(ns): State<Ns>) -> Json<Value> {
    let names = ns.api.store.read(|t| {
        let mut names = std::collections::BTreeSet::new();
        for area in ["registry", "config"] {
            if let Some(n) = t.get(&format!("{}/{area}", crate::api::store::ROOT)) {
                names.extend(n.children.iter().cloned());
            }
        }
        names.remove("public");
        names
    });
    let mut data = vec![
        json!({"namespace": "", "namespaceShowName": "public", "namespaceDesc": "Public Namespace", "quota": 200, "configCount": 0, "type": 0}),
    ];
    data.extend(names.into_iter().map(|n| {
        json!({"namespace": n, "namespaceShowName": n, "namespaceDesc": "", "quota": 200, "configCount": 0, "type": 2})
    }));
    Json(json!({"code": 200, "message": null, "data": data}))
}

// ---- v2: the same operations in the `{code, message, data}` envelope ----

async fn v2_register(State(ns): State<Ns>, p: Params) -> Response {
    v2(register_inner(&ns, &p).await.map(|_| "ok"))
}
async fn v2_deregister(State(ns): State<Ns>, p: Params) -> Response {
    v2(deregister_inner(&ns, &p).await.map(|_| "ok"))
}
async fn v2_update(State(ns): State<Ns>, p: Params) -> Response {
    v2(update_inner(&ns, &p).await.map(|_| "ok"))
}
async fn v2_detail(State(ns): State<Ns>, p: Params) -> Response {
    v2(detail_inner(&ns, &p))
}
async fn v2_list(State(ns): State<Ns>, p: Params) -> Response {
    v2(list_inner(&ns, &p))
}
async fn v2_beat(State(ns): State<Ns>, p: Params) -> Response {
    v2(beat_inner(&ns, &p).await)
}
async fn v2_service_create(State(ns): State<Ns>, p: Params) -> Response {
    v2(service_create_inner(&ns, &p, false).await.map(|_| "ok"))
}
async fn v2_service_update(State(ns): State<Ns>, p: Params) -> Response {
    v2(service_create_inner(&ns, &p, true).await.map(|_| "ok"))
}
async fn v2_service_delete(State(ns): State<Ns>, p: Params) -> Response {
    let r = async {
        let key = service_key(&p)?;
        ns.api.registry.delete_service(&key).await?;
        Ok::<_, NacosError>("ok")
    };
    v2(r.await)
}
async fn v2_service_detail(State(ns): State<Ns>, p: Params) -> Response {
    v2(service_detail_inner(&ns, &p))
}
async fn v2_service_list(State(ns): State<Ns>, p: Params) -> Response {
    v2(service_list_inner(&ns, &p)
        .map(|(count, services)| json!({"count": count, "services": services})))
}

/// The naming routes.
pub fn routes(api: Arc<Api>, beats: Arc<Beats>) -> Router {
    let st = Ns { api, beats };
    Router::new()
        .route(
            "/nacos/v1/ns/instance",
            get(detail)
                .post(register)
                .delete(deregister)
                .put(update)
                .patch(update),
        )
        .route("/nacos/v1/ns/instance/list", get(list))
        .route("/nacos/v1/ns/instance/beat", put(beat))
        .route(
            "/nacos/v1/ns/service",
            get(service_detail)
                .post(service_create)
                .put(service_update)
                .delete(service_delete),
        )
        .route("/nacos/v1/ns/service/list", get(service_list))
        .route("/nacos/v1/console/namespaces", get(namespaces))
        .route(
            "/nacos/v2/ns/instance",
            get(v2_detail)
                .post(v2_register)
                .delete(v2_deregister)
                .put(v2_update),
        )
        .route("/nacos/v2/ns/instance/list", get(v2_list))
        .route("/nacos/v2/ns/instance/beat", put(v2_beat))
        .route(
            "/nacos/v2/ns/service",
            get(v2_service_detail)
                .post(v2_service_create)
                .put(v2_service_update)
                .delete(v2_service_delete),
        )
        .route("/nacos/v2/ns/service/list", get(v2_service_list))
        .with_state(st)
}
