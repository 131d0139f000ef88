//! Eureka REST compatibility (`/eureka/**` and `/eureka/v2/**`) on the native registry: an
//! application is a service of one namespace / group (the Eureka scope), an instance is the
//! unified record with a session of its own as its lease. Register, renew, cancel, status
//! overrides, metadata, full / delta / application / instance / VIP reads, XML by default and
//! JSON on `Accept: …json`. Wire facts and decisions: docs/eureka.md.

pub mod codec;
pub mod delta;
pub mod model;
pub mod preservation;

use crate::api::Api;
use crate::api::error::ApiError;
use crate::api::registry::{DEFAULT_CLUSTER, Instance, ServiceKey, instance_id, validate_ip};
use crate::api::store::{ROOT, segment};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use model::Times;
use parking_lot::Mutex;
use roster_core::path;
use roster_core::tree::Tree;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// The namespace and group Eureka clients live in.
#[derive(Debug, Clone)]
pub struct Scope {
    pub namespace: String,
    pub group: String,
}

impl Scope {
    /// The registry folder of the scope; its children are services.
    pub fn dir(&self) -> String {
        format!("{ROOT}/registry/{}/{}", self.namespace, self.group)
    }
}

/// Settings of the Eureka front end (from `Config`).
#[derive(Debug, Clone)]
pub struct Settings {
    pub scope: Scope,
    pub renewal_s: u64,
    pub duration_s: u64,
    pub self_preservation: bool,
    pub renewal_percent_threshold: f64,
    pub server_id: u64,
}

/// The Eureka front end's state.
pub struct Eureka {
    api: Arc<Api>,
    settings: Settings,
    guard: Arc<preservation::Guard>,
    deltas: Arc<delta::Deltas>,
    /// Eureka instance id → instance node path, a hint checked on every use.
    ids: Mutex<HashMap<String, String>>,
}

/// A Eureka error: the status and a short text body (Eureka answers with bare statuses).
#[derive(Debug)]
pub struct EurekaError {
    status: StatusCode,
    message: String,
}

impl EurekaError {
    fn bad(m: impl Into<String>) -> EurekaError {
        EurekaError {
            status: StatusCode::BAD_REQUEST,
            message: m.into(),
        }
    }
    fn not_found(m: impl Into<String>) -> EurekaError {
        EurekaError {
            status: StatusCode::NOT_FOUND,
            message: m.into(),
        }
    }
}

impl From<ApiError> for EurekaError {
    fn from(e: ApiError) -> EurekaError {
        EurekaError {
            status: e.status,
            message: e.message,
        }
    }
}

impl IntoResponse for EurekaError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::warn!(status = %self.status, message = %self.message, "Eureka call failed");
        } else {
            tracing::debug!(status = %self.status, message = %self.message, "Eureka call refused");
        }
        (self.status, self.message).into_response()
    }
}

type Reply = Result<Response, EurekaError>;

impl Eureka {
    /// Start the front end's background work (delta queue, self-preservation guard).
    pub fn start(api: Arc<Api>, settings: Settings) -> Arc<Eureka> {
        let guard = preservation::Guard::new(
            settings.self_preservation,
            settings.renewal_percent_threshold,
        );
        guard.start(api.store.clone());
        let deltas = delta::Deltas::start(api.clone(), settings.scope.clone());
        Arc::new(Eureka {
            api,
            settings,
            guard,
            deltas,
            ids: Mutex::new(HashMap::new()),
        })
    }

    /// Self-preservation numbers (status page, tests).
    pub fn preservation(&self) -> preservation::Snapshot {
        self.guard.snapshot()
    }

    fn key(&self, service: &str) -> Result<ServiceKey, EurekaError> {
        Ok(ServiceKey::new(
            Some(&self.settings.scope.namespace),
            Some(&self.settings.scope.group),
            service,
        )?)
    }

    /// Services of the scope that make up application `app` (names equal ignoring case).
    fn services_of(&self, t: &Tree, app: &str) -> Vec<String> {
        let dir = self.settings.scope.dir();
        t.get(&dir)
            .map(|n| {
                n.children
                    .iter()
                    .filter(|s| s.eq_ignore_ascii_case(app))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Every instance of the scope (or of one application), with its node times.
    fn collect(&self, t: &Tree, app: Option<&str>) -> Vec<(Instance, Times)> {
        let dir = self.settings.scope.dir();
        let services: Vec<String> = match app {
            Some(a) => self.services_of(t, a),
            None => t
                .get(&dir)
                .map(|n| n.children.iter().cloned().collect())
                .unwrap_or_default(),
        };
        let mut out = Vec::new();
        for s in services {
            let sp = path::join(&dir, &s);
            for id in t.get(&sp).map(|n| &n.children).into_iter().flatten() {
                if let Some((i, ctime, mtime)) = delta::read_with_times(t, &path::join(&sp, id)) {
                    out.push((i, Times { ctime, mtime }));
                }
            }
        }
        out
    }

    /// Find an instance by its Eureka id (in one application, or anywhere in the scope).
    fn find(&self, app: Option<&str>, id: &str) -> Option<(Instance, Times)> {
        let hint = self.ids.lock().get(id).cloned();
        self.api.store.read(|t| {
            if let Some(p) = hint
                && let Some((i, ctime, mtime)) = delta::read_with_times(t, &p)
                && model::eureka_id(&i) == id
                && app.is_none_or(|a| i.service.eq_ignore_ascii_case(a))
            {
                return Some((i, Times { ctime, mtime }));
            }
            let found = self
                .collect(t, app)
                .into_iter()
                .find(|(i, _)| model::eureka_id(i) == id)?;
            let p = path::join(&self.key_path(&found.0.service), &found.0.id);
            self.ids.lock().insert(id.to_owned(), p);
            Some(found)
        })
    }

    fn key_path(&self, service: &str) -> String {
        path::join(&self.settings.scope.dir(), service)
    }

    fn info(&self, i: &Instance, times: Times, action: &str) -> Value {
        model::instance_info(
            i,
            times,
            action,
            self.settings.renewal_s,
            self.settings.duration_s,
        )
    }

    /// `{"applications": …}` of these instances; `hash` is the whole registry's.
    fn applications(&self, items: &[(Instance, Times, &str)], hash: String, version: u64) -> Value {
        let mut apps: BTreeMap<String, Vec<Value>> = BTreeMap::new();
        for (i, times, action) in items {
            apps.entry(model::app_name(&i.service))
                .or_default()
                .push(self.info(i, *times, action));
        }
        let application: Vec<Value> = apps
            .into_iter()
            .map(|(name, instance)| json!({"name": name, "instance": instance}))
            .collect();
        json!({"applications": {
            "versions__delta": version.to_string(),
            "apps__hashcode": hash,
            "application": application,
        }})
    }

    fn snapshot(&self) -> (Vec<(Instance, Times)>, u64) {
        self.api
            .store
            .read(|t| (self.collect(t, None), t.last_zxid() as u64))
    }

    fn hash_of(all: &[(Instance, Times)]) -> String {
        model::hashcode(all.iter().map(|(i, _)| model::status(i)))
    }

    // ---- operations ----

    async fn register(&self, app: &str, headers: &HeaderMap, body: &[u8]) -> Reply {
        segment("application", app)?;
        let doc = parse_body(headers, body)?;
        let r = model::registration(&doc, app).map_err(EurekaError::bad)?;
        validate_ip(&r.ip)?;
        segment("instanceId", &r.instance_id)?;
        let existing = self.find(Some(app), &r.instance_id);
        let service = match &existing {
            Some((i, _)) => i.service.clone(),
            None => self
                .api
                .store
                .read(|t| self.services_of(t, app).into_iter().next())
                .unwrap_or_else(|| app.to_lowercase()),
        };
        let key = self.key(&service)?;
        let renewal = r.renewal_s.unwrap_or(self.settings.renewal_s).min(86_400);
        let duration = r.duration_s.unwrap_or(self.settings.duration_s).min(86_400);
        // An override set through /status outlives re-registration (Eureka keeps them apart).
        let overridden = existing
            .as_ref()
            .and_then(|(i, _)| i.extra.get("overriddenStatus"))
            .and_then(|s| model::parse_status(s))
            .filter(|s| *s != model::UNKNOWN)
            .or(r.overridden);
        let status = model::effective(r.reported, overridden);
        let (healthy, enabled) = model::flags(status);
        let old_lease = existing
            .as_ref()
            .filter(|(i, _)| i.protocol == "eureka")
            .and_then(|(i, _)| i.lease);
        let session = match old_lease {
            Some(l) if self.api.store.session_exists(l) => {
                self.api.store.touch(&[l]).await?;
                l
            }
            _ => {
                self.api
                    .store
                    .open_session((duration * 1000).min(i32::MAX as u64) as i32)
                    .await?
                    .0
            }
        };
        let mut extra = r.extra;
        extra.insert("renewalIntervalInSecs".into(), renewal.to_string());
        extra.insert("durationInSecs".into(), duration.to_string());
        if let Some(o) = overridden {
            extra.insert("overriddenStatus".into(), o.into());
        }
        let id = instance_id(&r.ip, r.port, DEFAULT_CLUSTER);
        // The same Eureka instance moved to another address: drop its old record.
        if let Some((old, _)) = &existing
            && old.id != id
        {
            let _ = self.api.registry.deregister(&key, &old.id).await;
        }
        let inst = Instance {
            id,
            namespace: key.namespace.clone(),
            group: key.group.clone(),
            service: key.service.clone(),
            cluster: DEFAULT_CLUSTER.into(),
            ip: r.ip,
            port: r.port,
            weight: 1.0,
            healthy,
            enabled,
            metadata: r.metadata,
            ephemeral: true,
            protocol: "eureka".into(),
            health_check: None,
            extra,
            owner: self.settings.server_id,
            lease: None,
            revision: 0,
        };
        let stored = self.api.registry.put(&key, inst, session).await?;
        self.ids
            .lock()
            .insert(r.instance_id.clone(), path::join(&key.path(), &stored.id));
        self.guard.registered(session, renewal, duration);
        tracing::debug!(app, instance = %r.instance_id, lease = session, status, "Eureka register");
        Ok(StatusCode::NO_CONTENT.into_response())
    }

    async fn renew(&self, app: &str, id: &str, q: &HashMap<String, String>) -> Reply {
        let (i, _) = self
            .find(Some(app), id)
            .ok_or_else(|| EurekaError::not_found(format!("no instance {id} of {app}")))?;
        if let Some(l) = i.lease {
            if !self.api.store.session_exists(l) {
                return Err(EurekaError::not_found(format!("the lease of {id} expired")));
            }
            self.api.store.touch(&[l]).await?;
            let (renewal, duration) =
                model::lease_settings(&i, self.settings.renewal_s, self.settings.duration_s);
            self.guard.renewed(l, renewal, duration);
        }
        // The client changed its instance since it registered (its dirty time is newer than
        // ours): 404 makes it register again with the new info.
        let client_dirty = q
            .get("lastDirtyTimestamp")
            .and_then(|t| t.parse::<i64>().ok());
        let ours = i
            .extra
            .get("lastDirtyTimestamp")
            .and_then(|t| t.parse::<i64>().ok());
        if let (Some(c), Some(o)) = (client_dirty, ours)
            && c > o
        {
            return Err(EurekaError::not_found(format!(
                "{id}: the client's lastDirtyTimestamp {c} is newer than the registered {o}"
            )));
        }
        Ok(StatusCode::OK.into_response())
    }

    async fn cancel(&self, app: &str, id: &str) -> Reply {
        let (i, _) = self
            .find(Some(app), id)
            .ok_or_else(|| EurekaError::not_found(format!("no instance {id} of {app}")))?;
        let key = self.key(&i.service)?;
        self.api.registry.deregister(&key, &i.id).await?;
        if let Some(l) = i.lease
            && i.protocol == "eureka"
        {
            self.guard.cancelled(l);
            // The lease was this instance's own: end it unless something else is bound to it.
            if self.api.store.read(|t| t.ephemerals_of(l).next().is_none()) {
                let _ = self.api.store.close_session(l).await;
            }
        }
        self.ids.lock().remove(id);
        tracing::debug!(app, instance = id, "Eureka cancel");
        Ok(StatusCode::OK.into_response())
    }

    async fn set_status(
        &self,
        app: &str,
        id: &str,
        q: &HashMap<String, String>,
        delete: bool,
    ) -> Reply {
        let (i, _) = self
            .find(Some(app), id)
            .ok_or_else(|| EurekaError::not_found(format!("no instance {id} of {app}")))?;
        let value = match q.get("value").filter(|v| !v.is_empty()) {
            Some(v) => Some(
                model::parse_status(v)
                    .ok_or_else(|| EurekaError::bad(format!("unknown status {v}")))?,
            ),
            None => None,
        };
        let status = match (delete, value) {
            (false, Some(v)) => v,
            (false, None) => return Err(EurekaError::bad("Param 'value' is required")),
            (true, v) => v.unwrap_or(model::UNKNOWN),
        };
        let key = self.key(&i.service)?;
        let (healthy, enabled) = model::flags(status);
        self.api
            .registry
            .update(&key, &i.id, |x| {
                if delete {
                    x.extra.remove("overriddenStatus");
                } else {
                    x.extra.insert("overriddenStatus".into(), status.into());
                }
                x.extra.insert("status".into(), status.into());
                x.healthy = healthy;
                x.enabled = enabled;
            })
            .await?;
        Ok(StatusCode::OK.into_response())
    }

    async fn metadata(&self, app: &str, id: &str, q: &HashMap<String, String>) -> Reply {
        let (i, _) = self
            .find(Some(app), id)
            .ok_or_else(|| EurekaError::not_found(format!("no instance {id} of {app}")))?;
        let key = self.key(&i.service)?;
        self.api
            .registry
            .update(&key, &i.id, |x| {
                for (k, v) in q {
                    x.metadata.insert(k.clone(), v.clone());
                }
            })
            .await?;
        Ok(StatusCode::OK.into_response())
    }

    fn all(&self, json: bool) -> Reply {
        let (all, version) = self.snapshot();
        let hash = Self::hash_of(&all);
        let items: Vec<(Instance, Times, &str)> =
            all.into_iter().map(|(i, t)| (i, t, "ADDED")).collect();
        Ok(render(json, &self.applications(&items, hash, version)))
    }

    fn delta(&self, json: bool) -> Reply {
        // Read the registry first: a change landing between the two reads is then in the delta
        // and the hash may lag it, which costs the client one full fetch, never a wrong view.
        let (all, version) = self.snapshot();
        let hash = Self::hash_of(&all);
        let recent = self.deltas.recent();
        let items: Vec<(Instance, Times, &str)> = recent
            .into_iter()
            .map(|e| {
                (
                    e.instance,
                    Times {
                        ctime: e.ctime,
                        mtime: e.mtime,
                    },
                    e.action.as_str(),
                )
            })
            .collect();
        Ok(render(json, &self.applications(&items, hash, version)))
    }

    fn application(&self, app: &str, json: bool) -> Reply {
        let list = self.api.store.read(|t| self.collect(t, Some(app)));
        if list.is_empty() {
            return Err(EurekaError::not_found(format!("no application {app}")));
        }
        let instance: Vec<Value> = list
            .iter()
            .map(|(i, t)| self.info(i, *t, "ADDED"))
            .collect();
        Ok(render(
            json,
            &json!({"application": {"name": app.to_uppercase(), "instance": instance}}),
        ))
    }

    fn instance(&self, app: Option<&str>, id: &str, json: bool) -> Reply {
        let (i, t) = self
            .find(app, id)
            .ok_or_else(|| EurekaError::not_found(format!("no instance {id}")))?;
        Ok(render(
            json,
            &json!({"instance": self.info(&i, t, "ADDED")}),
        ))
    }

    fn vip(&self, vip: &str, secure: bool, json: bool) -> Reply {
        let (all, version) = self.snapshot();
        let hash = Self::hash_of(&all);
        let items: Vec<(Instance, Times, &str)> = all
            .into_iter()
            .filter(|(i, _)| model::has_vip(i, secure, vip))
            .map(|(i, t)| (i, t, "ADDED"))
            .collect();
        Ok(render(json, &self.applications(&items, hash, version)))
    }

    fn status_page(&self, json: bool) -> Reply {
        let (all, _) = self.snapshot();
        let s = self.guard.snapshot();
        let b = self.api.store.backend().status();
        let apps: std::collections::BTreeSet<String> = all
            .iter()
            .map(|(i, _)| model::app_name(&i.service))
            .collect();
        Ok(render(
            json,
            &json!({"status": {
                "selfPreservation": {
                    "enabled": s.enabled,
                    "active": s.active,
                    "leases": s.leases,
                    "expectedRenewsPerMin": s.expected_renews_per_min,
                    "renewThreshold": s.threshold,
                    "renewsLastMin": s.renews_last_min,
                },
                "applications": apps.len(),
                "instances": all.len(),
                "appsHashcode": Self::hash_of(&all),
                "backend": b.backend,
                "role": b.role.as_str(),
                "namespace": self.settings.scope.namespace,
                "group": self.settings.scope.group,
            }}),
        ))
    }
}

/// A request body: XML when the content type says so or the body starts with `<`, else JSON.
fn parse_body(headers: &HeaderMap, body: &[u8]) -> Result<Value, EurekaError> {
    let text = std::str::from_utf8(body).map_err(|_| EurekaError::bad("the body is not UTF-8"))?;
    let xml = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("xml"))
        || text.trim_start().starts_with('<');
    if xml {
        codec::from_xml(text).map_err(EurekaError::bad)
    } else {
        serde_json::from_str(text)
            .map_err(|e| EurekaError::bad(format!("the body is not JSON: {e}")))
    }
}

/// JSON if the client asked for it, else XML (Eureka's default).
fn wants_json(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.to_ascii_lowercase().contains("json"))
}

fn render(json: bool, doc: &Value) -> Response {
    if json {
        axum::Json(doc).into_response()
    } else {
        (
            [(header::CONTENT_TYPE, "application/xml")],
            codec::to_xml(doc),
        )
            .into_response()
    }
}

/// Eureka's paths are matched here rather than by the router: both `/eureka/` and
/// `/eureka/v2/`, with or without a trailing slash, instance ids with any characters.
async fn dispatch(
    State(e): State<Arc<Eureka>>,
    method: Method,
    headers: HeaderMap,
    Path(rest): Path<String>,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Response {
    let mut segs: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    if segs.first() == Some(&"v2") {
        segs.remove(0);
    }
    let q: HashMap<String, String> = query
        .as_deref()
        .map(|s| form_urlencoded::parse(s.as_bytes()).into_owned().collect())
        .unwrap_or_default();
    let json = wants_json(&headers);
    let m = &method;
    let (op, r): (&'static str, Reply) = match segs.as_slice() {
        ["apps"] if m == Method::GET => ("apps", e.all(json)),
        ["apps", "delta"] if m == Method::GET => ("delta", e.delta(json)),
        ["apps", app] if m == Method::GET => ("app", e.application(app, json)),
        ["apps", app] if m == Method::POST => ("register", e.register(app, &headers, &body).await),
        ["apps", app, id] if m == Method::GET => ("instance", e.instance(Some(app), id, json)),
        ["apps", app, id] if m == Method::PUT => ("renew", e.renew(app, id, &q).await),
        ["apps", app, id] if m == Method::DELETE => ("cancel", e.cancel(app, id).await),
        ["apps", app, id, "status"] if m == Method::PUT => {
            ("status", e.set_status(app, id, &q, false).await)
        }
        ["apps", app, id, "status"] if m == Method::DELETE => {
            ("status_delete", e.set_status(app, id, &q, true).await)
        }
        ["apps", app, id, "metadata"] if m == Method::PUT => {
            ("metadata", e.metadata(app, id, &q).await)
        }
        ["instances", id] if m == Method::GET => ("instance", e.instance(None, id, json)),
        ["vips", vip] if m == Method::GET => ("vip", e.vip(vip, false, json)),
        ["svips", vip] if m == Method::GET => ("svip", e.vip(vip, true, json)),
        ["status"] if m == Method::GET => ("status_page", e.status_page(json)),
        ["apps"]
        | ["apps", _]
        | ["apps", _, _]
        | ["apps", _, _, "status" | "metadata"]
        | ["instances", _]
        | ["vips", _]
        | ["svips", _]
        | ["status"] => (
            "other",
            Err(EurekaError {
                status: StatusCode::METHOD_NOT_ALLOWED,
                message: format!("{method} is not allowed here"),
            }),
        ),
        _ => (
            "other",
            Err(EurekaError::not_found(format!(
                "no Eureka resource /{rest}"
            ))),
        ),
    };
    let resp = match r {
        Ok(r) => r,
        Err(err) => err.into_response(),
    };
    let class = match resp.status().as_u16() {
        200..=299 => "2xx",
        400..=499 => "4xx",
        _ => "5xx",
    };
    metrics::counter!("roster_eureka_requests_total", "op" => op, "status" => class).increment(1);
    resp
}

/// The Eureka routes.
pub fn routes(e: Arc<Eureka>) -> Router {
    Router::new()
        .route("/eureka/{*rest}", any(dispatch))
        .with_state(e)
}
