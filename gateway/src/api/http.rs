//! The native API over HTTP: REST + JSON under `/v1`, server-sent events for streams, the
//! OpenAPI document at `/openapi.json`. Every error is `{code, message, details}` with a proper
//! status — including malformed JSON, unknown fields, oversize bodies and bad query strings,
//! which the extractors below turn into that shape.

use super::Api;
use super::config::{ConfigItem, ConfigKey, HistoryEntry, ListenResult, PutConfig};
use super::error::{ApiError, ErrorBody};
use super::feed::ChangeKind;
use super::lease::LeaseInfo;
use super::lock::{Contend, Held, Leader, Recipe};
use super::registry::{
    Filter, HealthCheck, Instance, InstanceList, InstancePatch, ProbeKind, RegisterRequest,
    ServiceInfo, ServiceKey, ServicePage, ServiceSettings, SubscribeEvent,
};
use super::watch::{WatchEnd, WatchEvent, Watcher};
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use futures::Stream;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use utoipa::{IntoParams, OpenApi, ToSchema};

type St = State<Arc<Api>>;
type ApiResult<T> = Result<Json<T>, ApiError>;

/// Longest a blocking acquire / campaign may wait, and a config listen may hold (the gRPC front
/// end uses the same bounds).
pub(crate) const MAX_WAIT_MS: u64 = 300_000;
pub(crate) const MAX_LISTEN_MS: u64 = 120_000;

// ---------- extractors that speak the error shape ----------

/// `Json<T>` whose rejections (bad JSON, wrong content type, too large) are API errors.
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;
    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(ApiJson(v)),
            Err(r) => Err(json_rejection(r)),
        }
    }
}

fn json_rejection(r: JsonRejection) -> ApiError {
    let status = r.status();
    let code = match status {
        StatusCode::PAYLOAD_TOO_LARGE => "PAYLOAD_TOO_LARGE",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "UNSUPPORTED_MEDIA_TYPE",
        _ => "INVALID_ARGUMENT",
    };
    // axum reports unknown fields and type errors as 422; they are bad requests to us.
    let status = if status == StatusCode::UNPROCESSABLE_ENTITY {
        StatusCode::BAD_REQUEST
    } else {
        status
    };
    ApiError::new(status, code, r.body_text())
}

/// `Query<T>` with API errors.
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(v)) => Ok(ApiQuery(v)),
            Err(r) => Err(query_rejection(r)),
        }
    }
}

fn query_rejection(r: QueryRejection) -> ApiError {
    ApiError::invalid(r.body_text())
}

/// `Path<T>` with API errors.
pub struct ApiPath<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(v)) => Ok(ApiPath(v)),
            Err(r) => Err(path_rejection(r)),
        }
    }
}

fn path_rejection(r: PathRejection) -> ApiError {
    ApiError::invalid(r.body_text())
}

// ---------- request and query shapes ----------

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GrantLease {
    /// 1..86400 seconds.
    pub ttl_seconds: i64,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Scope {
    /// Namespace (default `public`).
    pub namespace: Option<String>,
    /// Group (default `DEFAULT_GROUP`).
    pub group: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ServicesQuery {
    pub namespace: Option<String>,
    /// Only this group (default: every group).
    pub group: Option<String>,
    /// From 1 (default 1).
    pub page: Option<usize>,
    /// 1..1000 (default 100).
    pub page_size: Option<usize>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct InstancesQuery {
    pub namespace: Option<String>,
    pub group: Option<String>,
    /// Only healthy, enabled instances (subject to the protect threshold).
    pub healthy_only: Option<bool>,
    /// Comma-separated cluster names.
    pub clusters: Option<String>,
    /// Comma-separated `key=value` pairs every instance must carry.
    pub metadata: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SubscribeQuery {
    pub namespace: Option<String>,
    pub group: Option<String>,
    /// Resume after this revision (the `id` of the last event received; the `Last-Event-ID`
    /// header does the same).
    pub from_revision: Option<u64>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateInstance {
    pub weight: Option<f64>,
    pub healthy: Option<bool>,
    pub enabled: Option<bool>,
    pub metadata: Option<std::collections::BTreeMap<String, String>>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListenQuery {
    pub namespace: Option<String>,
    pub group: Option<String>,
    /// The md5 the client holds ("" or absent: it holds nothing).
    pub md5: Option<String>,
    /// How long to hold the request, ms (default 30000, at most 120000).
    pub timeout_ms: Option<u64>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Rollback {
    /// The history entry id to restore.
    pub id: u64,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Acquire {
    pub lease: i64,
    /// How long to wait, ms; 0 (default) = try once.
    #[serde(default)]
    pub timeout_ms: u64,
    /// Semaphores only: how many may hold at once (every contender must agree).
    #[serde(default)]
    pub permits: Option<usize>,
    /// Elections only: the value the leader announces (e.g. its address).
    #[serde(default)]
    pub value: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Release {
    /// The `key` returned by acquire / campaign.
    pub key: String,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PermitsQuery {
    /// Semaphores: the permit count (default 1).
    pub permits: Option<usize>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct WatchQuery {
    /// Watch this node and everything below it.
    pub prefix: String,
    /// Deliver changes after this revision (default: from now).
    pub from_revision: Option<u64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Holders {
    pub name: String,
    pub holders: Vec<Held>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ConfigList {
    pub items: Vec<ConfigItem>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct HistoryList {
    pub entries: Vec<HistoryEntry>,
}

fn scope_key(scope: &Scope, service: &str) -> Result<ServiceKey, ApiError> {
    ServiceKey::new(scope.namespace.as_deref(), scope.group.as_deref(), service)
}

fn config_key(scope: &Scope, data_id: &str) -> Result<ConfigKey, ApiError> {
    ConfigKey::new(scope.namespace.as_deref(), scope.group.as_deref(), data_id)
}

/// A client-given wait in ms, at most `max`.
pub(crate) fn wait(ms: u64, max: u64, field: &str) -> Result<Duration, ApiError> {
    if ms > max {
        return Err(ApiError::invalid(format!("{field} is at most {max}"))
            .with_details(serde_json::json!({"field": field})));
    }
    Ok(Duration::from_millis(ms))
}

// ---------- leases ----------

/// Grant a lease (a session) with a TTL.
#[utoipa::path(post, path = "/v1/leases", tag = "leases", request_body = GrantLease,
    responses((status = 200, body = LeaseInfo), (status = "4XX", body = ErrorBody), (status = "5XX", body = ErrorBody)))]
async fn lease_grant(State(api): St, ApiJson(req): ApiJson<GrantLease>) -> ApiResult<LeaseInfo> {
    Ok(Json(api.leases.grant(req.ttl_seconds).await?))
}

/// A lease's TTL, remaining time and the keys bound to it.
#[utoipa::path(get, path = "/v1/leases/{id}", tag = "leases", params(("id" = i64, Path)),
    responses((status = 200, body = LeaseInfo), (status = "4XX", body = ErrorBody)))]
async fn lease_get(State(api): St, ApiPath(id): ApiPath<i64>) -> ApiResult<LeaseInfo> {
    Ok(Json(api.leases.info(id)?))
}

/// Keep a lease alive.
#[utoipa::path(post, path = "/v1/leases/{id}/keepalive", tag = "leases", params(("id" = i64, Path)),
    responses((status = 200, body = LeaseInfo), (status = "4XX", body = ErrorBody), (status = "5XX", body = ErrorBody)))]
async fn lease_keepalive(State(api): St, ApiPath(id): ApiPath<i64>) -> ApiResult<LeaseInfo> {
    Ok(Json(api.leases.keep_alive(id).await?))
}

/// Revoke a lease: everything bound to it is removed.
#[utoipa::path(delete, path = "/v1/leases/{id}", tag = "leases", params(("id" = i64, Path)),
    responses((status = 204), (status = "4XX", body = ErrorBody), (status = "5XX", body = ErrorBody)))]
async fn lease_revoke(State(api): St, ApiPath(id): ApiPath<i64>) -> Result<StatusCode, ApiError> {
    api.leases.revoke(id).await?;
    Ok(StatusCode::NO_CONTENT)
}

// ---------- registry ----------

/// Services, one page.
#[utoipa::path(get, path = "/v1/registry/services", tag = "registry", params(ServicesQuery),
    responses((status = 200, body = ServicePage), (status = "4XX", body = ErrorBody)))]
async fn services(State(api): St, ApiQuery(q): ApiQuery<ServicesQuery>) -> ApiResult<ServicePage> {
    Ok(Json(api.registry.services(
        q.namespace.as_deref(),
        q.group.as_deref(),
        q.page.unwrap_or(1),
        q.page_size.unwrap_or(100),
    )?))
}

/// One service: settings and instance counts.
#[utoipa::path(get, path = "/v1/registry/services/{service}", tag = "registry",
    params(("service" = String, Path), Scope),
    responses((status = 200, body = ServiceInfo), (status = "4XX", body = ErrorBody)))]
async fn service_get(
    State(api): St,
    ApiPath(service): ApiPath<String>,
    ApiQuery(scope): ApiQuery<Scope>,
) -> ApiResult<ServiceInfo> {
    Ok(Json(api.registry.service(&scope_key(&scope, &service)?)?))
}

/// Create a service or change its settings.
#[utoipa::path(put, path = "/v1/registry/services/{service}", tag = "registry",
    params(("service" = String, Path), Scope), request_body = ServiceSettings,
    responses((status = 200, body = ServiceInfo), (status = "4XX", body = ErrorBody), (status = "5XX", body = ErrorBody)))]
async fn service_put(
    State(api): St,
    ApiPath(service): ApiPath<String>,
    ApiQuery(scope): ApiQuery<Scope>,
    ApiJson(settings): ApiJson<ServiceSettings>,
) -> ApiResult<ServiceInfo> {
    Ok(Json(
        api.registry
            .put_service(&scope_key(&scope, &service)?, settings)
            .await?,
    ))
}

/// Delete a service without instances.
#[utoipa::path(delete, path = "/v1/registry/services/{service}", tag = "registry",
    params(("service" = String, Path), Scope),
    responses((status = 204), (status = "4XX", body = ErrorBody), (status = "5XX", body = ErrorBody)))]
async fn service_delete(
    State(api): St,
    ApiPath(service): ApiPath<String>,
    ApiQuery(scope): ApiQuery<Scope>,
) -> Result<StatusCode, ApiError> {
    api.registry
        .delete_service(&scope_key(&scope, &service)?)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Instances of a service, filtered.
#[utoipa::path(get, path = "/v1/registry/services/{service}/instances", tag = "registry",
    params(("service" = String, Path), InstancesQuery),
    responses((status = 200, body = InstanceList), (status = "4XX", body = ErrorBody)))]
async fn instances(
    State(api): St,
    ApiPath(service): ApiPath<String>,
    ApiQuery(q): ApiQuery<InstancesQuery>,
) -> ApiResult<InstanceList> {
    let key = ServiceKey::new(q.namespace.as_deref(), q.group.as_deref(), &service)?;
    let list = |s: &Option<String>| -> Vec<String> {
        s.as_deref()
            .map(|s| {
                s.split(',')
                    .map(str::trim)
                    .filter(|x| !x.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut metadata = Vec::new();
    for kv in list(&q.metadata) {
        let (k, v) = kv.split_once('=').ok_or_else(|| {
            ApiError::invalid("metadata filters are key=value pairs")
                .with_details(serde_json::json!({"field": "metadata"}))
        })?;
        metadata.push((k.to_owned(), v.to_owned()));
    }
    let filter = Filter {
        healthy_only: q.healthy_only.unwrap_or(false),
        clusters: list(&q.clusters),
        metadata,
    };
    Ok(Json(api.registry.list(&key, &filter)))
}

/// Register an instance (or replace it).
#[utoipa::path(post, path = "/v1/registry/services/{service}/instances", tag = "registry",
    params(("service" = String, Path)), request_body = RegisterRequest,
    responses((status = 200, body = Instance), (status = "4XX", body = ErrorBody), (status = "5XX", body = ErrorBody)))]
async fn register(
    State(api): St,
    ApiPath(service): ApiPath<String>,
    ApiJson(req): ApiJson<RegisterRequest>,
) -> ApiResult<Instance> {
    Ok(Json(
        api.registry
            .register(&api.leases, &service, req, "native")
            .await?,
    ))
}

/// One instance (`id` is `{ip}#{port}#{cluster}`, URL-encoded).
#[utoipa::path(get, path = "/v1/registry/services/{service}/instances/{id}", tag = "registry",
    params(("service" = String, Path), ("id" = String, Path), Scope),
    responses((status = 200, body = Instance), (status = "4XX", body = ErrorBody)))]
async fn instance_get(
    State(api): St,
    ApiPath((service, id)): ApiPath<(String, String)>,
    ApiQuery(scope): ApiQuery<Scope>,
) -> ApiResult<Instance> {
    Ok(Json(api.registry.get(&scope_key(&scope, &service)?, &id)?))
}

/// Change an instance's weight, health, enabled flag or metadata.
#[utoipa::path(patch, path = "/v1/registry/services/{service}/instances/{id}", tag = "registry",
    params(("service" = String, Path), ("id" = String, Path), Scope), request_body = UpdateInstance,
    responses((status = 200, body = Instance), (status = "4XX", body = ErrorBody), (status = "5XX", body = ErrorBody)))]
async fn instance_update(
    State(api): St,
    ApiPath((service, id)): ApiPath<(String, String)>,
    ApiQuery(scope): ApiQuery<Scope>,
    ApiJson(req): ApiJson<UpdateInstance>,
) -> ApiResult<Instance> {
    let key = scope_key(&scope, &service)?;
    let patch = InstancePatch {
        weight: req.weight,
        healthy: req.healthy,
        enabled: req.enabled,
        metadata: req.metadata,
    };
    Ok(Json(api.registry.patch(&key, &id, &patch).await?))
}

/// Deregister an instance.
#[utoipa::path(delete, path = "/v1/registry/services/{service}/instances/{id}", tag = "registry",
    params(("service" = String, Path), ("id" = String, Path), Scope),
    responses((status = 204), (status = "4XX", body = ErrorBody), (status = "5XX", body = ErrorBody)))]
async fn deregister(
    State(api): St,
    ApiPath((service, id)): ApiPath<(String, String)>,
    ApiQuery(scope): ApiQuery<Scope>,
) -> Result<StatusCode, ApiError> {
    api.registry
        .deregister(&scope_key(&scope, &service)?, &id)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Heartbeat: keep the instance's lease alive.
#[utoipa::path(put, path = "/v1/registry/services/{service}/instances/{id}/heartbeat", tag = "registry",
    params(("service" = String, Path), ("id" = String, Path), Scope),
    responses((status = 200, body = Instance), (status = "4XX", body = ErrorBody), (status = "5XX", body = ErrorBody)))]
async fn heartbeat(
    State(api): St,
    ApiPath((service, id)): ApiPath<(String, String)>,
    ApiQuery(scope): ApiQuery<Scope>,
) -> ApiResult<Instance> {
    Ok(Json(
        api.registry
            .heartbeat(&api.leases, &scope_key(&scope, &service)?, &id)
            .await?,
    ))
}

fn last_event_id(headers: &HeaderMap) -> Option<u64> {
    headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

fn sse_event<T: Serialize>(name: &str, id: Option<u64>, body: &T) -> Event {
    let e = Event::default()
        .event(name)
        .data(serde_json::to_string(body).expect("event serialises"));
    match id {
        Some(id) => e.id(id.to_string()),
        None => e,
    }
}

fn sse<S>(stream: S) -> Response
where
    S: Stream<Item = Result<Event, Infallible>> + Send + 'static,
{
    Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

/// Subscribe to a service: server-sent events, `snapshot` (the full set) first, then `change`
/// events; each event's id is its revision, to resume from.
#[utoipa::path(get, path = "/v1/registry/services/{service}/subscribe", tag = "registry",
    params(("service" = String, Path), SubscribeQuery),
    responses((status = 200, description = "text/event-stream of SubscribeEvent", body = SubscribeEvent, content_type = "text/event-stream"),
        (status = "4XX", body = ErrorBody)))]
async fn subscribe(
    State(api): St,
    headers: HeaderMap,
    ApiPath(service): ApiPath<String>,
    ApiQuery(q): ApiQuery<SubscribeQuery>,
) -> Result<Response, ApiError> {
    let key = ServiceKey::new(q.namespace.as_deref(), q.group.as_deref(), &service)?;
    let from = q.from_revision.or_else(|| last_event_id(&headers));
    let sub = api.registry.subscribe(key, from.map(|r| r as i64));
    metrics::gauge!("roster_api_streams", "kind" => "subscribe").increment(1.0);
    let stream = futures::stream::unfold(StreamGuard::new("subscribe", sub), |mut g| async move {
        let ev = g.inner.next().await?;
        let (name, rev) = match &ev {
            SubscribeEvent::Snapshot { revision, .. } => ("snapshot", *revision),
            SubscribeEvent::Change { revision, .. } => ("change", *revision),
        };
        Some((Ok(sse_event(name, Some(rev), &ev)), g))
    });
    Ok(sse(stream))
}

/// Decrements the stream gauge when a stream ends.
struct StreamGuard<T> {
    kind: &'static str,
    inner: T,
}

impl<T> StreamGuard<T> {
    fn new(kind: &'static str, inner: T) -> StreamGuard<T> {
        StreamGuard { kind, inner }
    }
}

impl<T> Drop for StreamGuard<T> {
    fn drop(&mut self) {
        metrics::gauge!("roster_api_streams", "kind" => self.kind).decrement(1.0);
    }
}

// ---------- config ----------

/// Config items of a namespace (optionally one group).
#[utoipa::path(get, path = "/v1/config", tag = "config", params(Scope),
    responses((status = 200, body = ConfigList), (status = "4XX", body = ErrorBody)))]
async fn config_list(State(api): St, ApiQuery(scope): ApiQuery<Scope>) -> ApiResult<ConfigList> {
    Ok(Json(ConfigList {
        items: api
            .configs
            .list(scope.namespace.as_deref(), scope.group.as_deref())?,
    }))
}

/// Read a config item.
#[utoipa::path(get, path = "/v1/config/{data_id}", tag = "config", params(("data_id" = String, Path), Scope),
    responses((status = 200, body = ConfigItem), (status = "4XX", body = ErrorBody)))]
async fn config_get(
    State(api): St,
    ApiPath(data_id): ApiPath<String>,
    ApiQuery(scope): ApiQuery<Scope>,
) -> ApiResult<ConfigItem> {
    Ok(Json(api.configs.get(&config_key(&scope, &data_id)?)?))
}

/// Write a config item, optionally only if its md5 or revision is still the one given.
#[utoipa::path(put, path = "/v1/config/{data_id}", tag = "config", params(("data_id" = String, Path), Scope),
    request_body = PutConfig,
    responses((status = 200, body = ConfigItem), (status = "4XX", body = ErrorBody), (status = "5XX", body = ErrorBody)))]
async fn config_put(
    State(api): St,
    ApiPath(data_id): ApiPath<String>,
    ApiQuery(scope): ApiQuery<Scope>,
    ApiJson(req): ApiJson<PutConfig>,
) -> ApiResult<ConfigItem> {
    Ok(Json(
        api.configs.put(&config_key(&scope, &data_id)?, req).await?,
    ))
}

/// Delete a config item (recorded in its history).
#[utoipa::path(delete, path = "/v1/config/{data_id}", tag = "config", params(("data_id" = String, Path), Scope),
    responses((status = 204), (status = "4XX", body = ErrorBody), (status = "5XX", body = ErrorBody)))]
async fn config_delete(
    State(api): St,
    ApiPath(data_id): ApiPath<String>,
    ApiQuery(scope): ApiQuery<Scope>,
) -> Result<StatusCode, ApiError> {
    api.configs.delete(&config_key(&scope, &data_id)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// History of a config item, newest first.
#[utoipa::path(get, path = "/v1/config/{data_id}/history", tag = "config", params(("data_id" = String, Path), Scope),
    responses((status = 200, body = HistoryList), (status = "4XX", body = ErrorBody)))]
async fn config_history(
    State(api): St,
    ApiPath(data_id): ApiPath<String>,
    ApiQuery(scope): ApiQuery<Scope>,
) -> ApiResult<HistoryList> {
    Ok(Json(HistoryList {
        entries: api.configs.history(&config_key(&scope, &data_id)?),
    }))
}

/// One history entry.
#[utoipa::path(get, path = "/v1/config/{data_id}/history/{id}", tag = "config",
    params(("data_id" = String, Path), ("id" = u64, Path), Scope),
    responses((status = 200, body = HistoryEntry), (status = "4XX", body = ErrorBody)))]
async fn config_history_entry(
    State(api): St,
    ApiPath((data_id, id)): ApiPath<(String, u64)>,
    ApiQuery(scope): ApiQuery<Scope>,
) -> ApiResult<HistoryEntry> {
    Ok(Json(
        api.configs
            .history_entry(&config_key(&scope, &data_id)?, id)?,
    ))
}

/// Restore a history entry's content as a new change.
#[utoipa::path(post, path = "/v1/config/{data_id}/rollback", tag = "config",
    params(("data_id" = String, Path), Scope), request_body = Rollback,
    responses((status = 200, body = ConfigItem), (status = "4XX", body = ErrorBody), (status = "5XX", body = ErrorBody)))]
async fn config_rollback(
    State(api): St,
    ApiPath(data_id): ApiPath<String>,
    ApiQuery(scope): ApiQuery<Scope>,
    ApiJson(req): ApiJson<Rollback>,
) -> ApiResult<ConfigItem> {
    Ok(Json(
        api.configs
            .rollback(&config_key(&scope, &data_id)?, req.id)
            .await?,
    ))
}

/// Long-poll: returns as soon as the item's md5 differs from `md5`, or at the timeout with
/// `changed: false`.
#[utoipa::path(get, path = "/v1/config/{data_id}/listen", tag = "config",
    params(("data_id" = String, Path), ListenQuery),
    responses((status = 200, body = ListenResult), (status = "4XX", body = ErrorBody)))]
async fn config_listen(
    State(api): St,
    ApiPath(data_id): ApiPath<String>,
    ApiQuery(q): ApiQuery<ListenQuery>,
) -> ApiResult<ListenResult> {
    let key = ConfigKey::new(q.namespace.as_deref(), q.group.as_deref(), &data_id)?;
    let timeout = wait(q.timeout_ms.unwrap_or(30_000), MAX_LISTEN_MS, "timeout_ms")?;
    Ok(Json(
        api.configs
            .listen(&key, q.md5.as_deref().unwrap_or(""), timeout)
            .await,
    ))
}

// ---------- locks, semaphores, elections ----------

async fn acquire(api: &Api, recipe: Recipe, name: &str, req: Acquire) -> ApiResult<Held> {
    let timeout = wait(req.timeout_ms, MAX_WAIT_MS, "timeout_ms")?;
    let permits = match recipe {
        Recipe::Semaphore => req.permits.unwrap_or(1),
        _ if req.permits.is_some() => {
            return Err(ApiError::invalid("permits is for semaphores")
                .with_details(serde_json::json!({"field": "permits"})));
        }
        _ => 1,
    };
    let value = req.value.unwrap_or_default().into_bytes();
    Ok(Json(
        api.locks
            .acquire(
                &api.leases,
                recipe,
                name,
                Contend {
                    lease: req.lease,
                    permits,
                    value,
                    timeout,
                },
            )
            .await?,
    ))
}

/// Acquire a mutex with a lease: try (timeout 0) or wait. The fencing token only grows.
#[utoipa::path(post, path = "/v1/locks/{name}/acquire", tag = "locks", params(("name" = String, Path)),
    request_body = Acquire,
    responses((status = 200, body = Held), (status = 409, description = "held by another (LOCK_HELD)", body = ErrorBody),
        (status = "4XX", body = ErrorBody), (status = "5XX", body = ErrorBody)))]
async fn lock_acquire(
    State(api): St,
    ApiPath(name): ApiPath<String>,
    ApiJson(req): ApiJson<Acquire>,
) -> ApiResult<Held> {
    acquire(&api, Recipe::Mutex, &name, req).await
}

/// Release a mutex (or leave its queue).
#[utoipa::path(post, path = "/v1/locks/{name}/release", tag = "locks", params(("name" = String, Path)),
    request_body = Release,
    responses((status = 204), (status = "4XX", body = ErrorBody), (status = "5XX", body = ErrorBody)))]
async fn lock_release(
    State(api): St,
    ApiPath(name): ApiPath<String>,
    ApiJson(req): ApiJson<Release>,
) -> Result<StatusCode, ApiError> {
    api.locks.release(Recipe::Mutex, &name, &req.key).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The holder of a mutex (empty list: free).
#[utoipa::path(get, path = "/v1/locks/{name}", tag = "locks", params(("name" = String, Path)),
    responses((status = 200, body = Holders), (status = "4XX", body = ErrorBody)))]
async fn lock_get(State(api): St, ApiPath(name): ApiPath<String>) -> ApiResult<Holders> {
    let holders = api.locks.holders(Recipe::Mutex, &name, 1)?;
    Ok(Json(Holders { name, holders }))
}

/// Acquire a semaphore permit.
#[utoipa::path(post, path = "/v1/semaphores/{name}/acquire", tag = "locks", params(("name" = String, Path)),
    request_body = Acquire,
    responses((status = 200, body = Held), (status = "4XX", body = ErrorBody), (status = "5XX", body = ErrorBody)))]
async fn sem_acquire(
    State(api): St,
    ApiPath(name): ApiPath<String>,
    ApiJson(req): ApiJson<Acquire>,
) -> ApiResult<Held> {
    acquire(&api, Recipe::Semaphore, &name, req).await
}

/// Release a semaphore permit.
#[utoipa::path(post, path = "/v1/semaphores/{name}/release", tag = "locks", params(("name" = String, Path)),
    request_body = Release,
    responses((status = 204), (status = "4XX", body = ErrorBody), (status = "5XX", body = ErrorBody)))]
async fn sem_release(
    State(api): St,
    ApiPath(name): ApiPath<String>,
    ApiJson(req): ApiJson<Release>,
) -> Result<StatusCode, ApiError> {
    api.locks
        .release(Recipe::Semaphore, &name, &req.key)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Holders of a semaphore.
#[utoipa::path(get, path = "/v1/semaphores/{name}", tag = "locks", params(("name" = String, Path), PermitsQuery),
    responses((status = 200, body = Holders), (status = "4XX", body = ErrorBody)))]
async fn sem_get(
    State(api): St,
    ApiPath(name): ApiPath<String>,
    ApiQuery(q): ApiQuery<PermitsQuery>,
) -> ApiResult<Holders> {
    let permits = q.permits.unwrap_or(1);
    if permits == 0 || permits > 10_000 {
        return Err(ApiError::invalid("permits must be 1..10000"));
    }
    let holders = api.locks.holders(Recipe::Semaphore, &name, permits)?;
    Ok(Json(Holders { name, holders }))
}

/// Campaign for leadership with a lease and a value; returns once leader (or 409 at timeout).
#[utoipa::path(post, path = "/v1/elections/{name}/campaign", tag = "elections", params(("name" = String, Path)),
    request_body = Acquire,
    responses((status = 200, body = Held), (status = "4XX", body = ErrorBody), (status = "5XX", body = ErrorBody)))]
async fn campaign(
    State(api): St,
    ApiPath(name): ApiPath<String>,
    ApiJson(req): ApiJson<Acquire>,
) -> ApiResult<Held> {
    acquire(&api, Recipe::Election, &name, req).await
}

/// Resign leadership (or withdraw a candidacy).
#[utoipa::path(post, path = "/v1/elections/{name}/resign", tag = "elections", params(("name" = String, Path)),
    request_body = Release,
    responses((status = 204), (status = "4XX", body = ErrorBody), (status = "5XX", body = ErrorBody)))]
async fn resign(
    State(api): St,
    ApiPath(name): ApiPath<String>,
    ApiJson(req): ApiJson<Release>,
) -> Result<StatusCode, ApiError> {
    api.locks.release(Recipe::Election, &name, &req.key).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The current leader.
#[utoipa::path(get, path = "/v1/elections/{name}/leader", tag = "elections", params(("name" = String, Path)),
    responses((status = 200, body = Leader), (status = "4XX", body = ErrorBody)))]
async fn leader(State(api): St, ApiPath(name): ApiPath<String>) -> ApiResult<Leader> {
    api.locks
        .leader(&name)?
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("election {name} has no leader")))
}

/// Observe an election: server-sent `leader` events (data `null` when there is none).
#[utoipa::path(get, path = "/v1/elections/{name}/observe", tag = "elections", params(("name" = String, Path)),
    responses((status = 200, description = "text/event-stream of Leader", body = Leader, content_type = "text/event-stream"),
        (status = "4XX", body = ErrorBody)))]
async fn observe(State(api): St, ApiPath(name): ApiPath<String>) -> Result<Response, ApiError> {
    let obs = api.locks.observe(&name)?;
    metrics::gauge!("roster_api_streams", "kind" => "observe").increment(1.0);
    let stream = futures::stream::unfold(StreamGuard::new("observe", obs), |mut g| async move {
        let leader = g.inner.next().await?;
        let rev = leader.as_ref().map(|l| l.revision);
        Some((Ok(sse_event("leader", rev, &leader)), g))
    });
    Ok(sse(stream))
}

// ---------- watch ----------

/// Watch a prefix of the tree: server-sent `change` events (created / changed / deleted, one per
/// node change, in revision order). A `resync` event ends the stream when events were missed.
#[utoipa::path(get, path = "/v1/watch", tag = "watch", params(WatchQuery),
    responses((status = 200, description = "text/event-stream of WatchEvent", body = WatchEvent, content_type = "text/event-stream"),
        (status = 410, description = "from_revision is older than this member's history (COMPACTED)", body = ErrorBody),
        (status = "4XX", body = ErrorBody)))]
async fn watch(
    State(api): St,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<WatchQuery>,
) -> Result<Response, ApiError> {
    let from = q.from_revision.or_else(|| last_event_id(&headers));
    let watcher = Watcher::start(&api.store, &api.feed, &q.prefix, from.map(|r| r as i64))?;
    metrics::gauge!("roster_api_streams", "kind" => "watch").increment(1.0);
    let stream = futures::stream::unfold(
        Some(StreamGuard::new("watch", watcher)),
        |g| async move {
            let mut g = g?;
            match g.inner.next().await {
                Ok(ev) => {
                    let rev = ev.revision;
                    Some((Ok(sse_event("change", Some(rev), &ev)), Some(g)))
                }
                Err(WatchEnd::Resync(rev)) => Some((
                    Ok(sse_event(
                        "resync",
                        None,
                        &serde_json::json!({"revision": rev, "message": "events were missed; read again and watch from the new revision"}),
                    )),
                    None,
                )),
                Err(WatchEnd::Closed) => None,
            }
        },
    );
    Ok(sse(stream))
}

// ---------- the document and the router ----------

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Roster native API",
        version = "1",
        description = "Registry, leases, config, locks, elections and watches on Roster's tree. Errors are {code, message, details}."
    ),
    paths(
        lease_grant,
        lease_get,
        lease_keepalive,
        lease_revoke,
        services,
        service_get,
        service_put,
        service_delete,
        instances,
        register,
        instance_get,
        instance_update,
        deregister,
        heartbeat,
        subscribe,
        config_list,
        config_get,
        config_put,
        config_delete,
        config_history,
        config_history_entry,
        config_rollback,
        config_listen,
        lock_acquire,
        lock_release,
        lock_get,
        sem_acquire,
        sem_release,
        sem_get,
        campaign,
        resign,
        leader,
        observe,
        watch
    ),
    components(schemas(
        ErrorBody,
        GrantLease,
        LeaseInfo,
        ServicePage,
        ServiceInfo,
        ServiceSettings,
        InstanceList,
        Instance,
        RegisterRequest,
        HealthCheck,
        ProbeKind,
        UpdateInstance,
        SubscribeEvent,
        ConfigList,
        ConfigItem,
        PutConfig,
        HistoryList,
        HistoryEntry,
        Rollback,
        ListenResult,
        Acquire,
        Release,
        Held,
        Holders,
        Leader,
        WatchEvent,
        ChangeKind
    ))
)]
pub struct ApiDoc;

/// The OpenAPI document, as served.
pub fn openapi() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// The native API routes (merged into the HTTP port's router).
pub fn routes(api: Arc<Api>) -> Router {
    let doc = serde_json::to_value(openapi()).expect("OpenAPI document serialises");
    Router::new()
        .route("/openapi.json", get(move || async move { Json(doc) }))
        .route("/v1/leases", post(lease_grant))
        .route("/v1/leases/{id}", get(lease_get).delete(lease_revoke))
        .route("/v1/leases/{id}/keepalive", post(lease_keepalive))
        .route("/v1/registry/services", get(services))
        .route(
            "/v1/registry/services/{service}",
            get(service_get).put(service_put).delete(service_delete),
        )
        .route(
            "/v1/registry/services/{service}/instances",
            get(instances).post(register),
        )
        .route(
            "/v1/registry/services/{service}/instances/{id}",
            get(instance_get).patch(instance_update).delete(deregister),
        )
        .route(
            "/v1/registry/services/{service}/instances/{id}/heartbeat",
            put(heartbeat),
        )
        .route("/v1/registry/services/{service}/subscribe", get(subscribe))
        .route("/v1/config", get(config_list))
        .route(
            "/v1/config/{data_id}",
            get(config_get).put(config_put).delete(config_delete),
        )
        .route("/v1/config/{data_id}/history", get(config_history))
        .route(
            "/v1/config/{data_id}/history/{id}",
            get(config_history_entry),
        )
        .route("/v1/config/{data_id}/rollback", post(config_rollback))
        .route("/v1/config/{data_id}/listen", get(config_listen))
        .route("/v1/locks/{name}", get(lock_get))
        .route("/v1/locks/{name}/acquire", post(lock_acquire))
        .route("/v1/locks/{name}/release", post(lock_release))
        .route("/v1/semaphores/{name}", get(sem_get))
        .route("/v1/semaphores/{name}/acquire", post(sem_acquire))
        .route("/v1/semaphores/{name}/release", post(sem_release))
        .route("/v1/elections/{name}/campaign", post(campaign))
        .route("/v1/elections/{name}/resign", post(resign))
        .route("/v1/elections/{name}/leader", get(leader))
        .route("/v1/elections/{name}/observe", get(observe))
        .route("/v1/watch", get(watch))
        .with_state(api)
}
