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
            let mut changed = Vec::new();
            if listen {
                start_watch(nacos, conn);
            }
            for c in &r.config_listen_contexts {
                let k = key(&c.data_id, &c.group, &c.tenant)?;
                let path = k.path();
                if !listen {
                    conn.listeners.lock().remove(&path);
                    continue;
                }
                conn.listeners.lock().insert(
                    path,
                    Listened {
                        key: k.clone(),
                        data_id: c.data_id.clone(),
                        group: c.group.clone(),
                        tenant: c.tenant.clone(),
                    },
                );
                let (md5, _) = api.configs.state(&k);
                if md5 != c.md5 {
                    changed
                        .push(json!({"dataId": c.data_id, "group": c.group, "tenant": c.tenant}));
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

/// Push `ConfigChangeNotifyRequest` whenever a listened item changes.
fn start_watch(nacos: &Nacos, conn: &Arc<Conn>) {
    let api = nacos.api.clone();
    let weak = Arc::downgrade(conn);
    conn.start_once(Watch::Config, || {
        let (sub, revision) = api
            .feed
            .subscribe_under(
                api.store.backend(),
                Under::path(format!("{ROOT}/config")),
                None,
                |t| t.last_zxid(),
            );
        let mut follow = Follow::new(sub.rx, format!("{ROOT}/config"), revision);
        tokio::spawn(async move {
            loop {
                let changed = follow.next().await;
                let Some(conn) = weak.upgrade() else { return };
                let items: Vec<Listened> = {
                    let l = conn.listeners.lock();
                    match &changed {
                        Next::Closed => return,
                        Next::Resync => l.values().cloned().collect(),
                        Next::Changed(paths) => paths
                            .iter()
                            .filter_map(|p| l.get(p.as_ref()).cloned())
                            .collect(),
                    }
                };
                follow.read_at(api.store.revision());
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
        })
    });
}
