//! Nacos config over gRPC: query, publish (with `casMd5`), remove, and batch listen — answered at
//! once with the items whose md5 differs, then `ConfigChangeNotifyRequest` pushed on the
//! connection's stream whenever a listened item changes (the client then queries it).

use super::connection::{Conn, Listened, Watch};
use super::{Nacos, Reply, RpcError, RpcResult, code, parse};
use crate::api::config::{ConfigKey, PutConfig};
use crate::api::feed::{Follow, Next, Under};
use crate::api::registry::DEFAULT_GROUP;
use crate::api::store::ROOT;
use crate::grpc::nacos::proto::Payload;
use serde::Deserialize;
use serde_json::json;
use std::collections::HashMap;
use std::sync::Arc;

/// `AbstractConfigRequest` and the fields of its subclasses Roster reads.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct ConfigRequest {
    data_id: String,
    group: String,
    tenant: String,
    tag: Option<String>,
    content: Option<String>,
    cas_md5: Option<String>,
    addition_map: HashMap<String, String>,
    listen: Option<bool>,
    config_listen_contexts: Vec<ListenContext>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct ListenContext {
    data_id: String,
    group: String,
    tenant: String,
    md5: String,
}

fn key(data_id: &str, group: &str, tenant: &str) -> Result<ConfigKey, RpcError> {
    if data_id.is_empty() {
        return Err(RpcError::invalid("dataId is required"));
    }
    let group = if group.is_empty() {
        DEFAULT_GROUP
    } else {
        group
    };
    // Config's tenant "" is the public namespace.
    let ns = Some(tenant).filter(|t| !t.is_empty());
    Ok(ConfigKey::new(ns, Some(group), data_id)?)
}

pub async fn handle(nacos: &Nacos, conn: &Arc<Conn>, kind: &str, p: &Payload) -> RpcResult {
    let r: ConfigRequest = parse(p)?;
    let api = &nacos.api;
    match kind {
        "ConfigQueryRequest" => {
            if r.tag.as_deref().is_some_and(|t| !t.is_empty()) {
                // Tagged (gray) configs are not kept: a tag query finds nothing, as on a
                // Nacos server without that tag.
                return Err(
                    RpcError::new(code::CONFIG_NOT_FOUND, "config data not exist")
                        .typed("ConfigQueryResponse"),
                );
            }
            let k = key(&r.data_id, &r.group, &r.tenant)?;
            match api.configs.get(&k) {
                Ok(item) => {
                    let mtime = api
                        .store
                        .read(|t| t.get(&k.path()).map(|n| n.stat.mtime))
                        .unwrap_or(0);
                    Ok(Reply::new(
                        "ConfigQueryResponse",
                        json!({
                            "content": item.content,
                            "md5": item.md5,
                            "contentType": item.kind,
                            "lastModified": mtime,
                            "beta": false,
                        }),
                    ))
                }
                Err(e) if e.code == "NOT_FOUND" => Err(RpcError::new(
                    code::CONFIG_NOT_FOUND,
                    "config data not exist",
                )
                .typed("ConfigQueryResponse")),
                Err(e) => Err(e.into()),
            }
        }
        "ConfigPublishRequest" => {
            let k = key(&r.data_id, &r.group, &r.tenant)?;
            let content = r
                .content
                .filter(|c| !c.is_empty())
                .ok_or_else(|| RpcError::invalid("content is required"))?;
            let put = PutConfig {
                content,
                kind: r
                    .addition_map
                    .get("type")
                    .filter(|t| !t.is_empty())
                    .cloned(),
                cas_md5: crate::nacos::config::cas_condition(api, &k, r.cas_md5.as_deref()),
                cas_revision: None,
            };
            match api.configs.put(&k, put).await {
                Ok(_) => Ok(Reply::new("ConfigPublishResponse", json!({}))),
                // The client reads a failed CAS from this type. ALREADY_EXISTS: the item was
                // missing when we looked and someone created it before our create-only write.
                Err(e)
                    if e.code == "CONFLICT"
                        || e.code == "FAILED_PRECONDITION"
                        || e.code == "ALREADY_EXISTS" =>
                {
                    Err(RpcError::new(
                        code::SERVER_ERROR,
                        "Cas publish fail, server md5 may have changed.",
                    )
                    .typed("ConfigPublishResponse"))
                }
                Err(e) => Err(e.into()),
            }
        }
        "ConfigRemoveRequest" => {
            let k = key(&r.data_id, &r.group, &r.tenant)?;
            match api.configs.delete(&k).await {
                Ok(()) => {}
                Err(e) if e.code == "NOT_FOUND" => {}
                Err(e) => return Err(e.into()),
            }
            Ok(Reply::new("ConfigRemoveResponse", json!({})))
        }
        "ConfigBatchListenRequest" => {
            let listen = r.listen.unwrap_or(true);
            let keys = r
                .config_listen_contexts
                .iter()
                .map(|c| key(&c.data_id, &c.group, &c.tenant))
                .collect::<Result<Vec<_>, _>>()?;
            if listen {
                start_watch(nacos, conn);
            }
            {
                let mut l = conn.listeners.lock();
                for (c, k) in r.config_listen_contexts.iter().zip(&keys) {
                    if listen {
                        let listened = Listened {
                            key: k.clone(),
                            data_id: c.data_id.clone(),
                            group: c.group.clone(),
                            tenant: c.tenant.clone(),
                        };
                        l.insert(k.path(), listened);
                    } else {
                        l.remove(&k.path());
                    }
                }
                conn.follow(Watch::Config, l.keys().cloned().collect());
            }
            // Read after following, so a change in between is pushed or answered, never lost.
            let mut changed = Vec::new();
            if listen {
                for (c, k) in r.config_listen_contexts.iter().zip(&keys) {
                    let (md5, _) = api.configs.state(k);
                    if md5 != c.md5 {
                        changed.push(
                            json!({"dataId": c.data_id, "group": c.group, "tenant": c.tenant}),
                        );
                    }
                }
            }
            Ok(Reply::new(
                "ConfigChangeBatchListenResponse",
                json!({"changedConfigs": changed}),
            ))
        }
        other => Err(RpcError::new(
            code::NO_HANDLER,
            format!("no config handler for {other}"),
        )),
    }
}

/// Push `ConfigChangeNotifyRequest` whenever a listened item changes. The connection's feed
/// subscription follows its listened items only ([`Conn::follow`]): a publish wakes the
/// connections listening to that item, not every listening connection.
fn start_watch(nacos: &Nacos, conn: &Arc<Conn>) {
    let api = nacos.api.clone();
    let weak = Arc::downgrade(conn);
    conn.start_once(Watch::Config, || {
        // Nothing yet: the listen request that started this narrows it to its items.
        let (sub, scope, revision) = api.feed.subscribe_scoped(
            api.store.backend(),
            Under::paths(Vec::new()),
            None,
            |t| t.last_zxid(),
        );
        let mut follow = Follow::new(sub.rx, format!("{ROOT}/config"), revision);
        let task = tokio::spawn(async move {
            loop {
                let changed = follow.next().await;
                let Some(conn) = weak.upgrade() else { return };
                let items: Vec<Listened> = {
                    let l = conn.listeners.lock();
                    match &changed {
                        Next::Closed => return,
                        Next::Resync => {
                            // Every listened item is pushed below: what came before is covered.
                            follow.read_at(api.store.revision());
                            l.values().cloned().collect()
                        }
                        Next::Changed(paths) => paths
                            .iter()
                            .filter_map(|p| l.get(p.as_ref()).cloned())
                            .collect(),
                    }
                };
                for i in items {
                    let body = json!({
                        "dataId": i.data_id,
                        "group": i.group,
                        "tenant": i.tenant,
                        "module": "config",
                    });
                    tracing::debug!(connection = %conn.id, data_id = %i.key.data_id, "pushing a config change");
                    if !conn.push("ConfigChangeNotifyRequest", body).await {
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

    async fn listen(nacos: &Nacos, conn: &Arc<Conn>, data_ids: &[&str], on: bool) -> RpcResult {
        let contexts: Vec<_> = data_ids
            .iter()
            .map(|d| json!({"dataId": d, "group": "DEFAULT_GROUP", "tenant": "", "md5": ""}))
            .collect();
        let body = json!({"listen": on, "configListenContexts": contexts});
        let p = payload("ConfigBatchListenRequest", &body);
        handle(nacos, conn, "ConfigBatchListenRequest", &p).await
    }

    fn path(data_id: &str) -> String {
        key(data_id, "", "").unwrap().path()
    }

    /// Each listening connection is woken only by changes to the items it listens to — a
    /// publish does not wake every connection that listens to something — and stops being
    /// woken by an item it no longer listens to.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_publish_wakes_only_the_connections_listening_to_it() {
        let nacos = test_nacos();
        let a = nacos.conns.check("127.0.0.1:4000".parse().unwrap());
        let b = nacos.conns.check("127.0.0.1:4001".parse().unwrap());
        listen(&nacos, &a, &["app.yaml", "db.yaml"], true)
            .await
            .unwrap();
        listen(&nacos, &b, &["db.yaml"], true).await.unwrap();
        let feed = &nacos.api.feed;
        assert_eq!(feed.woken_by(&path("app.yaml")), 1);
        assert_eq!(feed.woken_by(&path("db.yaml")), 2);
        assert_eq!(
            feed.woken_by(&path("other.yaml")),
            0,
            "nobody listens to it"
        );
        listen(&nacos, &a, &["app.yaml"], false).await.unwrap();
        assert_eq!(feed.woken_by(&path("app.yaml")), 0, "no longer listened to");
        assert_eq!(feed.woken_by(&path("db.yaml")), 2);
        // A bad key in a batch changes nothing.
        let err = listen(&nacos, &b, &["x.yaml", ""], true).await.unwrap_err();
        assert_eq!(err.code, code::INVALID_PARAM);
        assert_eq!(feed.woken_by(&path("x.yaml")), 0);
        drop(a);
        nacos.conns.sweep(std::time::Duration::ZERO);
        assert_eq!(
            feed.woken_by(&path("db.yaml")),
            1,
            "a gone connection leaves the feed"
        );
    }
}
