//! `roster.v1.ConfigService` on [`Configs`](crate::api::config::Configs).

use super::proto::config_service_server::ConfigService;
use super::proto::{
    self as pb, ConfigHistory, ConfigList, ConfigRef, ConfigState, DeleteConfigResponse,
    HistoryEntryRef, ListConfigsRequest, ListenConfigRequest, PutConfigRequest,
};
use super::{GrpcStream, StreamGauge, streaming, unary};
use crate::api::Api;
use crate::api::config::{self as cfg, ConfigKey, PutConfig};
use crate::api::error::ApiError;
use crate::api::feed::Next;
use futures::StreamExt;
use std::sync::Arc;
use tonic::{Request, Response, Status};

fn config_key(r: Option<ConfigRef>) -> Result<ConfigKey, ApiError> {
    let r = r.unwrap_or_default();
    ConfigKey::new(Some(&r.namespace), Some(&r.group), &r.data_id)
}

impl From<cfg::ConfigItem> for pb::ConfigItem {
    fn from(i: cfg::ConfigItem) -> pb::ConfigItem {
        pb::ConfigItem {
            namespace: i.namespace,
            group: i.group,
            data_id: i.data_id,
            content: i.content,
            md5: i.md5,
            r#type: i.kind,
            revision: i.revision,
            version: i.version,
        }
    }
}

impl From<cfg::HistoryEntry> for pb::HistoryEntry {
    fn from(e: cfg::HistoryEntry) -> pb::HistoryEntry {
        pb::HistoryEntry {
            id: e.id,
            op: e.op,
            content: e.content,
            md5: e.md5,
            r#type: e.kind,
            revision: e.revision,
            time_ms: e.time_ms,
        }
    }
}

/// The config service.
pub struct ConfigSvc {
    api: Arc<Api>,
}

impl ConfigSvc {
    pub fn new(api: Arc<Api>) -> ConfigSvc {
        ConfigSvc { api }
    }
}

#[tonic::async_trait]
impl ConfigService for ConfigSvc {
    async fn get(&self, req: Request<ConfigRef>) -> Result<Response<pb::ConfigItem>, Status> {
        let r = req.into_inner();
        unary("config.Get", async {
            Ok(self.api.configs.get(&config_key(Some(r))?)?.into())
        })
        .await
    }

    async fn put(
        &self,
        req: Request<PutConfigRequest>,
    ) -> Result<Response<pb::ConfigItem>, Status> {
        let r = req.into_inner();
        unary("config.Put", async {
            let key = config_key(r.config)?;
            let put = PutConfig {
                content: r.content,
                kind: r.r#type,
                cas_md5: r.cas_md5,
                cas_revision: r.cas_revision,
            };
            Ok(self.api.configs.put(&key, put).await?.into())
        })
        .await
    }

    async fn delete(
        &self,
        req: Request<ConfigRef>,
    ) -> Result<Response<DeleteConfigResponse>, Status> {
        let r = req.into_inner();
        unary("config.Delete", async {
            self.api.configs.delete(&config_key(Some(r))?).await?;
            Ok(DeleteConfigResponse {})
        })
        .await
    }

    async fn list(&self, req: Request<ListConfigsRequest>) -> Result<Response<ConfigList>, Status> {
        let r = req.into_inner();
        unary("config.List", async {
            let items = self.api.configs.list(Some(&r.namespace), Some(&r.group))?;
            Ok(ConfigList {
                items: items.into_iter().map(Into::into).collect(),
            })
        })
        .await
    }

    async fn history(&self, req: Request<ConfigRef>) -> Result<Response<ConfigHistory>, Status> {
        let r = req.into_inner();
        unary("config.History", async {
            let entries = self.api.configs.history(&config_key(Some(r))?);
            Ok(ConfigHistory {
                entries: entries.into_iter().map(Into::into).collect(),
            })
        })
        .await
    }

    async fn get_history_entry(
        &self,
        req: Request<HistoryEntryRef>,
    ) -> Result<Response<pb::HistoryEntry>, Status> {
        let r = req.into_inner();
        unary("config.GetHistoryEntry", async {
            let key = config_key(r.config)?;
            Ok(self.api.configs.history_entry(&key, r.id)?.into())
        })
        .await
    }

    async fn rollback(
        &self,
        req: Request<HistoryEntryRef>,
    ) -> Result<Response<pb::ConfigItem>, Status> {
        let r = req.into_inner();
        unary("config.Rollback", async {
            let key = config_key(r.config)?;
            Ok(self.api.configs.rollback(&key, r.id).await?.into())
        })
        .await
    }

    type ListenStream = GrpcStream<ConfigState>;

    async fn listen(
        &self,
        req: Request<ListenConfigRequest>,
    ) -> Result<Response<Self::ListenStream>, Status> {
        let r = req.into_inner();
        let api = self.api.clone();
        let start = config_key(r.config).map(|key| {
            // Subscribed and read at one point: no change between the first state and the
            // followed ones is missed.
            let (follow, (md5, revision)) = api.configs.follow(&key);
            let first = (md5 != r.md5).then(|| ConfigState {
                md5: md5.clone(),
                revision: revision as u64,
            });
            let st = Listening {
                api,
                key,
                follow,
                held: md5,
                first,
                _gauge: StreamGauge::new("config_listen"),
            };
            futures::stream::unfold(st, |mut st| async move {
                if let Some(first) = st.first.take() {
                    return Some((Ok(first), st));
                }
                loop {
                    match st.follow.next().await {
                        Next::Closed => return None,
                        Next::Changed(_) | Next::Resync => {
                            let (md5, revision) = st.api.configs.state(&st.key);
                            st.follow.read_at(revision);
                            if md5 != st.held {
                                st.held = md5.clone();
                                let ev = ConfigState {
                                    md5,
                                    revision: revision as u64,
                                };
                                return Some((Ok(ev), st));
                            }
                        }
                    }
                }
            })
            .boxed()
        });
        streaming("config.Listen", start)
    }
}

/// The state of one Listen stream.
struct Listening {
    api: Arc<Api>,
    key: ConfigKey,
    follow: crate::api::feed::Follow,
    /// The md5 the client was last told (or said it holds).
    held: String,
    first: Option<ConfigState>,
    _gauge: StreamGauge,
}
