//! Nacos config over HTTP (`/nacos/v1/cs/**`, `/nacos/v2/cs/**`) on the native config service:
//! get answers the raw content with `Content-MD5` / `Config-Type` headers, publish and delete
//! answer `true`, the listener is Nacos's long poll (`Listening-Configs`, held up to
//! `Long-Pulling-Timeout` − 500 ms, at least 10 s), history pages over the native history.

use super::{NacosError, Params, encode, v2};
use crate::api::Api;
use crate::api::config::{ConfigKey, PutConfig, md5_hex};
use crate::api::feed::Next;
use crate::api::registry::DEFAULT_GROUP;
use crate::api::store::ROOT;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

fn key(p: &Params) -> Result<ConfigKey, NacosError> {
    let data_id = p.required("dataId")?;
    let group = p.get("group").unwrap_or(DEFAULT_GROUP);
    Ok(ConfigKey::new(Some(&p.namespace()), Some(group), data_id)?)
}

async fn get_config(State(api): State<Arc<Api>>, p: Params) -> Result<Response, NacosError> {
    let key = key(&p)?;
    match api.configs.get(&key) {
        Ok(item) => {
            let mut resp = item.content.into_response();
            let h = resp.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain;charset=UTF-8"),
            );
            if let Ok(v) = HeaderValue::from_str(&item.md5) {
                h.insert("Content-MD5", v);
            }
            if let Ok(v) = HeaderValue::from_str(&item.kind) {
                h.insert("Config-Type", v);
            }
            h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
            h.insert(
                header::CACHE_CONTROL,
                HeaderValue::from_static("no-cache,no-store"),
            );
            Ok(resp)
        }
        Err(e) if e.code == "NOT_FOUND" => {
            Ok((StatusCode::NOT_FOUND, "config data not exist").into_response())
        }
        Err(e) => Err(e.into()),
    }
}

/// The native CAS condition for a Nacos `casMd5`. Nacos checks the md5 only against an item
/// that exists: a missing item is created whatever md5 was sent (its `insertOrUpdateCas`), and
/// a blank md5 is no CAS at all. Dubbo relies on this: it writes the first interface → application
/// mapping with `publishConfigCas(…, "0")`. So a missing item becomes a create-only write
/// (native `""`), which still fails if someone else creates it first.
pub fn cas_condition(api: &Api, key: &ConfigKey, cas_md5: Option<&str>) -> Option<String> {
    let want = cas_md5.map(str::trim).filter(|m| !m.is_empty())?;
    // The md5 is "" only for a missing item (an empty content still hashes).
    if api.configs.state(key).0.is_empty() {
        Some(String::new())
    } else {
        Some(want.to_owned())
    }
}

async fn publish_inner(api: &Api, p: &Params) -> Result<bool, NacosError> {
    let key = key(p)?;
    let content =
        p.0.get("content")
            .filter(|c| !c.is_empty())
            .ok_or_else(|| NacosError::bad("Param 'content' is required."))?;
    api.configs
        .put(
            &key,
            PutConfig {
                content: content.clone(),
                kind: p.get("type").map(str::to_owned),
                cas_md5: cas_condition(api, &key, p.get("casMd5")),
                cas_revision: None,
            },
        )
        .await?;
    Ok(true)
}

async fn publish(State(api): State<Arc<Api>>, p: Params) -> Result<&'static str, NacosError> {
    publish_inner(&api, &p).await.map(|_| "true")
}

async fn delete_inner(api: &Api, p: &Params) -> Result<bool, NacosError> {
    let key = key(p)?;
    match api.configs.delete(&key).await {
        Ok(()) => Ok(true),
        // Nacos answers true for an item that is not there.
        Err(e) if e.code == "NOT_FOUND" => Ok(true),
        Err(e) => Err(e.into()),
    }
}

async fn delete(State(api): State<Arc<Api>>, p: Params) -> Result<&'static str, NacosError> {
    delete_inner(&api, &p).await.map(|_| "true")
}

/// One entry of `Listening-Configs`.
struct Listened {
    key: ConfigKey,
    data_id: String,
    group: String,
    tenant: Option<String>,
    md5: String,
}

fn parse_listening(raw: &str) -> Result<Vec<Listened>, NacosError> {
    let mut out = Vec::new();
    for entry in raw.split('\u{1}').filter(|e| !e.is_empty()) {
        let f: Vec<&str> = entry.split('\u{2}').collect();
        let (data_id, group, md5, tenant) = match f.as_slice() {
            [d, g, m] => (*d, *g, *m, None),
            [d, g, m, t] => (*d, *g, *m, Some(*t)),
            _ => {
                return Err(NacosError::bad(format!(
                    "invalid Listening-Configs entry {entry:?}"
                )));
            }
        };
        let ns = tenant.filter(|t| !t.is_empty());
        out.push(Listened {
            key: ConfigKey::new(ns, Some(group), data_id)?,
            data_id: data_id.to_owned(),
            group: group.to_owned(),
            tenant: tenant.map(str::to_owned),
            md5: md5.to_owned(),
        });
    }
    if out.is_empty() {
        return Err(NacosError::bad("Listening-Configs is empty"));
    }
    Ok(out)
}

fn changed(api: &Api, listened: &[Listened]) -> String {
    let mut body = String::new();
    api.store.read(|t| {
        for l in listened {
            let now = t
                .get(&l.key.path())
                .map(|n| md5_hex(&n.data))
                .unwrap_or_default();
            if now != l.md5 {
                let mut e = format!("{}\u{2}{}", l.data_id, l.group);
                if let Some(t) = &l.tenant {
                    e.push('\u{2}');
                    e.push_str(t);
                }
                e.push('\u{1}');
                body.push_str(&encode(&e));
            }
        }
    });
    body
}

/// The long-poll listener.
async fn listener(
    State(api): State<Arc<Api>>,
    headers: HeaderMap,
    p: Params,
) -> Result<Response, NacosError> {
    let raw =
        p.0.get("Listening-Configs")
            .ok_or_else(|| NacosError::bad("Param 'Listening-Configs' is required."))?;
    let listened = parse_listening(raw)?;
    let header = |k: &str| headers.get(k).and_then(|v| v.to_str().ok());
    // Scoped to the listened keys: a write to any other config wakes neither this poll nor its
    // md5 check of every key it listens to (with the whole config directory, each config write
    // woke every poller).
    let (sub, first) = api.feed.subscribe_under(
        api.store.backend(),
        crate::api::feed::Under::paths(listened.iter().map(|l| l.key.path()).collect()),
        None,
        |t| t.last_zxid(),
    );
    let now = changed(&api, &listened);
    let no_hangup = header("Long-Pulling-Timeout-No-Hangup") == Some("true");
    let timeout_ms: Option<u64> = header("Long-Pulling-Timeout").and_then(|v| v.parse().ok());
    let reply = |body: String| {
        let mut r = body.into_response();
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html;charset=UTF-8"),
        );
        r.headers_mut()
            .insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
        r.headers_mut().insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("no-cache,no-store"),
        );
        r
    };
    let Some(timeout_ms) = timeout_ms.filter(|_| now.is_empty() && !no_hangup) else {
        return Ok(reply(now));
    };
    let hold = Duration::from_millis(timeout_ms.saturating_sub(500).clamp(10_000, 120_000));
    let mut follow = crate::api::feed::Follow::new(sub.rx, format!("{ROOT}/config"), first);
    let deadline = tokio::time::Instant::now() + hold;
    loop {
        match tokio::time::timeout_at(deadline, follow.next()).await {
            Err(_) | Ok(Next::Closed) => return Ok(reply(changed(&api, &listened))),
            Ok(_) => {
                follow.read_at(api.store.revision());
                let body = changed(&api, &listened);
                if !body.is_empty() {
                    return Ok(reply(body));
                }
            }
        }
    }
}

/// Nacos history item (`opType`: U for put / rollback, D for delete).
fn history_item(
    key: &ConfigKey,
    tenant: &str,
    e: &crate::api::config::HistoryEntry,
    with_content: bool,
) -> Value {
    let mut v = json!({
        "id": e.id.to_string(),
        "lastId": -1,
        "dataId": key.data_id,
        "group": key.group,
        "tenant": tenant,
        "appName": "",
        "md5": e.md5,
        "srcIp": "",
        "srcUser": "",
        "opType": if e.op == "delete" { "D" } else { "U" },
        "createdTime": e.time_ms,
        "lastModifiedTime": e.time_ms,
        "type": e.kind,
    });
    if with_content {
        v["content"] = json!(e.content);
    }
    v
}

async fn history_inner(api: &Api, p: &Params) -> Result<Value, NacosError> {
    let key = key(p)?;
    let tenant = p
        .get("tenant")
        .or(p.get("namespaceId"))
        .unwrap_or("")
        .to_owned();
    if let Some(nid) = p.num::<u64>("nid")? {
        let e = api.configs.history_entry(&key, nid)?;
        return Ok(history_item(&key, &tenant, &e, true));
    }
    let all = api.configs.history(&key);
    let page: usize = p.num("pageNo")?.unwrap_or(1).max(1);
    let size: usize = p.num("pageSize")?.unwrap_or(100).clamp(1, 500);
    let items: Vec<Value> = all
        .iter()
        .skip((page - 1) * size)
        .take(size)
        .map(|e| history_item(&key, &tenant, e, false))
        .collect();
    Ok(json!({
        "totalCount": all.len(),
        "pageNumber": page,
        "pagesAvailable": all.len().div_ceil(size),
        "pageItems": items,
    }))
}

async fn history(State(api): State<Arc<Api>>, p: Params) -> Result<Json<Value>, NacosError> {
    history_inner(&api, &p).await.map(Json)
}

async fn v2_get(State(api): State<Arc<Api>>, p: Params) -> Response {
    let r = async {
        let key = key(&p)?;
        api.configs
            .get(&key)
            .map(|i| i.content)
            .map_err(|e| match e.code {
                "NOT_FOUND" => NacosError::not_found("config data not exist"),
                _ => e.into(),
            })
    };
    v2(r.await)
}
async fn v2_publish(State(api): State<Arc<Api>>, p: Params) -> Response {
    v2(publish_inner(&api, &p).await)
}
async fn v2_delete(State(api): State<Arc<Api>>, p: Params) -> Response {
    v2(delete_inner(&api, &p).await)
}
async fn v2_history(State(api): State<Arc<Api>>, p: Params) -> Response {
    v2(history_inner(&api, &p).await)
}

/// The config routes.
pub fn routes(api: Arc<Api>) -> Router {
    Router::new()
        .route(
            "/nacos/v1/cs/configs",
            get(get_config).post(publish).delete(delete),
        )
        .route(
            "/nacos/v1/cs/configs/listener",
            axum::routing::post(listener),
        )
        .route("/nacos/v1/cs/history", get(history))
        .route(
            "/nacos/v2/cs/config",
            get(v2_get).post(v2_publish).delete(v2_delete),
        )
        .route("/nacos/v2/cs/history", get(v2_history))
        .with_state(api)
}

#[cfg(test)]
mod tests {
    use super::*;
    use roster_core::backend::Backend;
    use roster_core::storage::MemEngine;
    use roster_zab::{Standalone, ZabConfig};

    fn node() -> Arc<Api> {
        let backend: Arc<dyn Backend> =
            Standalone::open(Arc::new(MemEngine::default()), ZabConfig::default())
                .expect("standalone node");
        Api::new(backend, 1, 10)
    }

    fn put(content: &str, cas_md5: Option<String>) -> PutConfig {
        PutConfig {
            content: content.to_owned(),
            kind: None,
            cas_md5,
            cas_revision: None,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn cas_publish_creates_a_missing_item_and_guards_an_existing_one() {
        let api = node();
        let key = ConfigKey::new(None, Some("mapping"), "org.example.EchoService").unwrap();
        // Blank is no CAS at all.
        assert_eq!(cas_condition(&api, &key, None), None);
        assert_eq!(cas_condition(&api, &key, Some(" ")), None);
        // Missing: created whatever md5 was sent (Dubbo sends "0").
        let cas = cas_condition(&api, &key, Some("0"));
        assert_eq!(cas.as_deref(), Some(""));
        api.configs.put(&key, put("app-a", cas)).await.unwrap();
        assert_eq!(api.configs.get(&key).unwrap().content, "app-a");
        // Existing: a stale md5 is refused, the current one accepted.
        let stale = cas_condition(&api, &key, Some("0"));
        let err = api
            .configs
            .put(&key, put("app-b", stale))
            .await
            .unwrap_err();
        assert_eq!(err.code, "CONFLICT");
        let md5 = md5_hex(b"app-a");
        let cas = cas_condition(&api, &key, Some(&md5));
        api.configs
            .put(&key, put("app-b,app-a", cas))
            .await
            .unwrap();
        assert_eq!(api.configs.get(&key).unwrap().content, "app-b,app-a");
    }
}
