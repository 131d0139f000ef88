//! The native API over HTTP: REST + JSON (docs/api.md), subscriptions as server-sent events.

use hyper::{Method, StatusCode};
use serde::Deserialize;
use serde_json::json;

use super::{Feed, Held, SubEvent};
use crate::http::{Body, Http, SseReader, enc};
use crate::load::Failure;

/// How long one config long poll is held before it is renewed.
const LISTEN_HOLD_MS: u64 = 30_000;

#[derive(Clone)]
pub struct Rest {
    http: Http,
}

#[derive(Deserialize)]
struct LeaseInfo {
    id: i64,
}

#[derive(Deserialize)]
struct IdOnly {
    id: String,
}

#[derive(Deserialize)]
struct InstanceList {
    instances: Vec<serde::de::IgnoredAny>,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Subscribed {
    Snapshot {
        instances: Vec<IdOnly>,
    },
    Change {
        upserted: Vec<IdOnly>,
        removed: Vec<String>,
    },
}

#[derive(Deserialize)]
struct ConfigItem {
    content: String,
    md5: String,
}

#[derive(Deserialize)]
struct ListenResult {
    changed: bool,
    md5: String,
}

#[derive(Deserialize)]
struct HeldBody {
    key: String,
    fencing_token: u64,
}

/// The API's error body.
#[derive(Deserialize)]
struct ErrorBody {
    code: String,
    #[serde(default)]
    message: String,
}

/// The failure an error answer stands for: the API's `code`, or the bare status.
fn failure(what: &str, status: StatusCode, body: &[u8]) -> Failure {
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(e) => Failure::new(e.code, format!("{what}: {status}: {}", e.message)),
        Err(_) => Failure::new(
            format!("HTTP_{}", status.as_u16()),
            format!("{what}: {}", String::from_utf8_lossy(body)),
        ),
    }
}

fn parse<T: serde::de::DeserializeOwned>(what: &str, body: &[u8]) -> Result<T, Failure> {
    serde_json::from_slice(body).map_err(|e| Failure::new("BadResponse", format!("{what}: {e}")))
}

impl Rest {
    pub fn new(addr: &str) -> Rest {
        Rest {
            http: Http::new(addr),
        }
    }

    /// One request whose success is a 2xx; returns the body.
    async fn ok(
        &self,
        method: Method,
        path: &str,
        body: Body<'_>,
    ) -> Result<bytes::Bytes, Failure> {
        let (status, bytes) = self.http.call(method, path, body).await?;
        if status.is_success() {
            Ok(bytes)
        } else {
            Err(failure(path, status, &bytes))
        }
    }

    pub async fn grant(&self, ttl_seconds: i64) -> Result<i64, Failure> {
        let body = json!({ "ttl_seconds": ttl_seconds })
            .to_string()
            .into_bytes();
        let b = self
            .ok(Method::POST, "/v1/leases", Body::Json(body))
            .await?;
        Ok(parse::<LeaseInfo>("lease grant", &b)?.id)
    }

    pub async fn keepalive(&self, lease: i64) -> Result<(), Failure> {
        self.ok(
            Method::POST,
            &format!("/v1/leases/{lease}/keepalive"),
            Body::Empty,
        )
        .await
        .map(drop)
    }

    pub async fn revoke(&self, lease: i64) -> Result<(), Failure> {
        self.ok(Method::DELETE, &format!("/v1/leases/{lease}"), Body::Empty)
            .await
            .map(drop)
    }

    pub async fn register(
        &self,
        group: &str,
        service: &str,
        ip: &str,
        port: u16,
        lease: i64,
    ) -> Result<(), Failure> {
        let body = json!({ "group": group, "ip": ip, "port": port, "lease": lease })
            .to_string()
            .into_bytes();
        let path = format!("/v1/registry/services/{}/instances", enc(service));
        self.ok(Method::POST, &path, Body::Json(body))
            .await
            .map(drop)
    }

    pub async fn deregister(&self, group: &str, service: &str, id: &str) -> Result<(), Failure> {
        let path = format!(
            "/v1/registry/services/{}/instances/{}?group={}",
            enc(service),
            enc(id),
            enc(group)
        );
        self.ok(Method::DELETE, &path, Body::Empty).await.map(drop)
    }

    pub async fn list(&self, group: &str, service: &str) -> Result<usize, Failure> {
        let path = format!(
            "/v1/registry/services/{}/instances?group={}",
            enc(service),
            enc(group)
        );
        let b = self.ok(Method::GET, &path, Body::Empty).await?;
        Ok(parse::<InstanceList>("instance list", &b)?.instances.len())
    }

    pub async fn subscribe(&self, group: &str, service: &str) -> Result<Feed<SubEvent>, Failure> {
        let path = format!(
            "/v1/registry/services/{}/subscribe?group={}",
            enc(service),
            enc(group)
        );
        let resp = self.http.send(Method::GET, &path, Body::Empty).await?;
        if !resp.status().is_success() {
            let status = resp.status();
            let body = http_body_util::BodyExt::collect(resp.into_body())
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            return Err(failure(&path, status, &body));
        }
        let mut reader = SseReader::new(resp.into_body());
        Ok(Feed::spawn(|tx| async move {
            loop {
                let item = match reader.next().await {
                    Ok(None) => return,
                    Err(e) => Err(e),
                    Ok(Some(ev)) => parse::<Subscribed>("subscribe event", ev.data.as_bytes()).map(
                        |s| match s {
                            Subscribed::Snapshot { instances } => {
                                SubEvent::Snapshot(instances.into_iter().map(|i| i.id).collect())
                            }
                            Subscribed::Change { upserted, removed } => SubEvent::Change {
                                upserted: upserted.into_iter().map(|i| i.id).collect(),
                                removed,
                            },
                        },
                    ),
                };
                let end = item.is_err();
                if tx.send(item).await.is_err() || end {
                    return;
                }
            }
        }))
    }

    pub async fn config_put(
        &self,
        group: &str,
        data_id: &str,
        content: &str,
    ) -> Result<String, Failure> {
        let body = json!({ "content": content }).to_string().into_bytes();
        let path = format!("/v1/config/{}?group={}", enc(data_id), enc(group));
        let b = self.ok(Method::PUT, &path, Body::Json(body)).await?;
        Ok(parse::<ConfigItem>("config put", &b)?.md5)
    }

    pub async fn config_get(&self, group: &str, data_id: &str) -> Result<usize, Failure> {
        let path = format!("/v1/config/{}?group={}", enc(data_id), enc(group));
        let b = self.ok(Method::GET, &path, Body::Empty).await?;
        Ok(parse::<ConfigItem>("config get", &b)?.content.len())
    }

    pub async fn config_delete(&self, group: &str, data_id: &str) -> Result<(), Failure> {
        let path = format!("/v1/config/{}?group={}", enc(data_id), enc(group));
        self.ok(Method::DELETE, &path, Body::Empty).await.map(drop)
    }

    /// Long polls in a loop, holding the last md5 seen, and yields every new one.
    pub fn config_listen(&self, group: &str, data_id: &str, md5: &str) -> Feed<String> {
        let (this, group, data_id, mut held) = (
            self.clone(),
            group.to_string(),
            data_id.to_string(),
            md5.to_string(),
        );
        Feed::spawn(|tx| async move {
            loop {
                let path = format!(
                    "/v1/config/{}/listen?group={}&md5={}&timeout_ms={LISTEN_HOLD_MS}",
                    enc(&data_id),
                    enc(&group),
                    enc(&held)
                );
                let item = match this.ok(Method::GET, &path, Body::Empty).await {
                    Ok(b) => match parse::<ListenResult>("config listen", &b) {
                        Ok(r) if !r.changed => continue,
                        Ok(r) => {
                            held = r.md5.clone();
                            Ok(r.md5)
                        }
                        Err(e) => Err(e),
                    },
                    Err(e) => Err(e),
                };
                let end = item.is_err();
                if tx.send(item).await.is_err() || end {
                    return;
                }
            }
        })
    }

    pub async fn lock_acquire(
        &self,
        name: &str,
        lease: i64,
        timeout_ms: u64,
    ) -> Result<Held, Failure> {
        let body = json!({ "lease": lease, "timeout_ms": timeout_ms })
            .to_string()
            .into_bytes();
        let path = format!("/v1/locks/{}/acquire", enc(name));
        let b = self.ok(Method::POST, &path, Body::Json(body)).await?;
        let h: HeldBody = parse("lock acquire", &b)?;
        Ok(Held {
            key: h.key,
            fencing_token: h.fencing_token,
        })
    }

    pub async fn lock_release(&self, name: &str, key: &str) -> Result<(), Failure> {
        let body = json!({ "key": key }).to_string().into_bytes();
        let path = format!("/v1/locks/{}/release", enc(name));
        self.ok(Method::POST, &path, Body::Json(body))
            .await
            .map(drop)
    }
}
