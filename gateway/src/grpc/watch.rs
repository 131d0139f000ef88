//! `roster.v1.WatchService` on [`Watcher`](crate::api::watch::Watcher).

use super::proto::watch_service_server::WatchService;
use super::proto::{ChangeType, Resync, WatchEvent, WatchRequest, WatchResponse, watch_response};
use super::{GrpcStream, StreamGauge, streaming};
use crate::api::Api;
use crate::api::feed::ChangeKind;
use crate::api::watch::{WatchEnd, Watcher};
use futures::StreamExt;
use std::sync::Arc;
use tonic::{Request, Response, Status};

/// The watch service.
pub struct WatchSvc {
    api: Arc<Api>,
}

impl WatchSvc {
    pub fn new(api: Arc<Api>) -> WatchSvc {
        WatchSvc { api }
    }
}

fn change_type(k: ChangeKind) -> ChangeType {
    match k {
        ChangeKind::Created => ChangeType::Created,
        ChangeKind::Changed => ChangeType::Changed,
        ChangeKind::Deleted => ChangeType::Deleted,
    }
}

#[tonic::async_trait]
impl WatchService for WatchSvc {
    type WatchStream = GrpcStream<WatchResponse>;

    async fn watch(
        &self,
        req: Request<WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let r = req.into_inner();
        let from = r.from_revision.map(|v| v as i64);
        let start = Watcher::start(&self.api.store, &self.api.feed, &r.prefix, from).map(|w| {
            let st = Some((w, StreamGauge::new("watch")));
            futures::stream::unfold(st, |st| async move {
                let (mut w, gauge) = st?;
                match w.next().await {
                    Ok(ev) => {
                        let msg = WatchResponse {
                            response: Some(watch_response::Response::Event(WatchEvent {
                                r#type: change_type(ev.kind) as i32,
                                path: ev.path,
                                revision: ev.revision,
                                value: ev.value,
                            })),
                        };
                        Some((Ok(msg), Some((w, gauge))))
                    }
                    // Tell the client to read again, then end the stream.
                    Err(WatchEnd::Resync(rev)) => {
                        let msg = WatchResponse {
                            response: Some(watch_response::Response::Resync(Resync {
                                revision: rev as u64,
                            })),
                        };
                        Some((Ok(msg), None))
                    }
                    Err(WatchEnd::Closed) => None,
                }
            })
            .boxed()
        });
        streaming("watch.Watch", start)
    }
}
