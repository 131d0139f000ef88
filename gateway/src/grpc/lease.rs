//! `roster.v1.LeaseService` on [`Leases`](crate::api::lease::Leases).

use super::proto::lease_service_server::LeaseService;
use super::proto::{
    LeaseGrantRequest, LeaseInfo, LeaseKeepAliveRequest, LeaseRevokeRequest, LeaseRevokeResponse,
    LeaseTimeToLiveRequest,
};
use super::{GrpcStream, StreamGauge, status, streaming, unary};
use crate::api::Api;
use crate::api::lease;
use futures::StreamExt;
use std::sync::Arc;
use tonic::{Request, Response, Status, Streaming};

impl From<lease::LeaseInfo> for LeaseInfo {
    fn from(l: lease::LeaseInfo) -> LeaseInfo {
        LeaseInfo {
            id: l.id,
            ttl_seconds: l.ttl_seconds,
            remaining_seconds: l.remaining_seconds,
            keys: l.keys,
        }
    }
}

/// The lease service.
pub struct LeaseSvc {
    api: Arc<Api>,
}

impl LeaseSvc {
    pub fn new(api: Arc<Api>) -> LeaseSvc {
        LeaseSvc { api }
    }
}

#[tonic::async_trait]
impl LeaseService for LeaseSvc {
    async fn grant(&self, req: Request<LeaseGrantRequest>) -> Result<Response<LeaseInfo>, Status> {
        let ttl = req.into_inner().ttl_seconds;
        unary("lease.Grant", async {
            Ok(self.api.leases.grant(ttl).await?.into())
        })
        .await
    }

    async fn keep_alive(
        &self,
        req: Request<LeaseKeepAliveRequest>,
    ) -> Result<Response<LeaseInfo>, Status> {
        let id = req.into_inner().id;
        unary("lease.KeepAlive", async {
            Ok(self.api.leases.keep_alive(id).await?.into())
        })
        .await
    }

    type KeepAliveStreamStream = GrpcStream<LeaseInfo>;

    async fn keep_alive_stream(
        &self,
        req: Request<Streaming<LeaseKeepAliveRequest>>,
    ) -> Result<Response<Self::KeepAliveStreamStream>, Status> {
        let api = self.api.clone();
        let inbound = req.into_inner();
        let gauge = StreamGauge::new("lease_keepalive");
        // One answer per request; the first failure (an expired lease) ends the stream with its
        // status. The client closing its side ends it quietly.
        let s = futures::stream::unfold(Some((api, inbound, gauge)), |st| async move {
            let (api, mut inbound, gauge) = st?;
            match inbound.message().await {
                Ok(Some(r)) => match api.leases.keep_alive(r.id).await {
                    Ok(info) => Some((Ok(info.into()), Some((api, inbound, gauge)))),
                    Err(e) => Some((Err(status::to_status(e)), None)),
                },
                Ok(None) => None,
                Err(s) => {
                    tracing::debug!(status = %s, "keep-alive stream broke");
                    None
                }
            }
        });
        streaming("lease.KeepAliveStream", Ok(s.boxed()))
    }

    async fn revoke(
        &self,
        req: Request<LeaseRevokeRequest>,
    ) -> Result<Response<LeaseRevokeResponse>, Status> {
        let id = req.into_inner().id;
        unary("lease.Revoke", async {
            self.api.leases.revoke(id).await?;
            Ok(LeaseRevokeResponse {})
        })
        .await
    }

    async fn time_to_live(
        &self,
        req: Request<LeaseTimeToLiveRequest>,
    ) -> Result<Response<LeaseInfo>, Status> {
        let id = req.into_inner().id;
        unary("lease.TimeToLive", async {
            Ok(self.api.leases.info(id)?.into())
        })
        .await
    }
}
