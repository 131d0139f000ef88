//! `roster.v1.LockService`, `SemaphoreService` and `ElectionService` on
//! [`Locks`](crate::api::lock::Locks). Waits are bounded as over HTTP (`timeout_ms` at most
//! 300000); a wait that runs out is `FAILED_PRECONDITION` with code `LOCK_HELD`.

use super::proto::election_service_server::ElectionService;
use super::proto::lock_service_server::LockService;
use super::proto::semaphore_service_server::SemaphoreService;
use super::proto::{
    self as pb, CampaignRequest, HolderList, HoldersRequest, LeaderEvent, LeaderRequest,
    LockAcquireRequest, ReleaseRequest, ReleaseResponse, SemaphoreAcquireRequest,
};
use super::{GrpcStream, StreamGauge, streaming, unary};
use crate::api::Api;
use crate::api::error::ApiError;
use crate::api::http::{MAX_WAIT_MS, wait};
use crate::api::lock::{self, Contend, Recipe};
use futures::StreamExt;
use std::sync::Arc;
use tonic::{Request, Response, Status};

impl From<lock::Held> for pb::Held {
    fn from(h: lock::Held) -> pb::Held {
        pb::Held {
            name: h.name,
            key: h.key,
            fencing_token: h.fencing_token,
            lease: h.lease,
            revision: h.revision,
        }
    }
}

impl From<lock::Leader> for pb::LeaderInfo {
    fn from(l: lock::Leader) -> pb::LeaderInfo {
        pb::LeaderInfo {
            name: l.name,
            key: l.key,
            value: l.value,
            fencing_token: l.fencing_token,
            lease: l.lease,
            revision: l.revision,
        }
    }
}

/// What every recipe's acquire does.
async fn acquire(
    api: &Api,
    recipe: Recipe,
    name: &str,
    lease: i64,
    timeout_ms: u64,
    permits: usize,
    value: Vec<u8>,
) -> Result<pb::Held, ApiError> {
    let timeout = wait(timeout_ms, MAX_WAIT_MS, "timeout_ms")?;
    Ok(api
        .locks
        .acquire(
            &api.leases,
            recipe,
            name,
            Contend {
                lease,
                permits,
                value,
                timeout,
            },
        )
        .await?
        .into())
}

async fn release(
    api: &Api,
    recipe: Recipe,
    r: ReleaseRequest,
) -> Result<ReleaseResponse, ApiError> {
    api.locks.release(recipe, &r.name, &r.key).await?;
    Ok(ReleaseResponse {})
}

fn holders(api: &Api, recipe: Recipe, r: HoldersRequest) -> Result<HolderList, ApiError> {
    let permits = match recipe {
        Recipe::Semaphore if r.permits > 0 => r.permits as usize,
        Recipe::Semaphore => 1,
        _ if r.permits > 1 => {
            return Err(ApiError::invalid("permits is for semaphores")
                .with_details(serde_json::json!({"field": "permits"})));
        }
        _ => 1,
    };
    let holders = api.locks.holders(recipe, &r.name, permits)?;
    Ok(HolderList {
        name: r.name,
        holders: holders.into_iter().map(Into::into).collect(),
    })
}

macro_rules! svc {
    ($name:ident) => {
        /// See the module doc.
        pub struct $name {
            api: Arc<Api>,
        }

        impl $name {
            pub fn new(api: Arc<Api>) -> $name {
                $name { api }
            }
        }
    };
}

svc!(LockSvc);
svc!(SemaphoreSvc);
svc!(ElectionSvc);

#[tonic::async_trait]
impl LockService for LockSvc {
    async fn acquire(
        &self,
        req: Request<LockAcquireRequest>,
    ) -> Result<Response<pb::Held>, Status> {
        let r = req.into_inner();
        unary(
            "lock.Acquire",
            acquire(
                &self.api,
                Recipe::Mutex,
                &r.name,
                r.lease,
                r.timeout_ms,
                1,
                Vec::new(),
            ),
        )
        .await
    }

    async fn release(
        &self,
        req: Request<ReleaseRequest>,
    ) -> Result<Response<ReleaseResponse>, Status> {
        unary(
            "lock.Release",
            release(&self.api, Recipe::Mutex, req.into_inner()),
        )
        .await
    }

    async fn holders(&self, req: Request<HoldersRequest>) -> Result<Response<HolderList>, Status> {
        let r = req.into_inner();
        unary("lock.Holders", async {
            holders(&self.api, Recipe::Mutex, r)
        })
        .await
    }
}

#[tonic::async_trait]
impl SemaphoreService for SemaphoreSvc {
    async fn acquire(
        &self,
        req: Request<SemaphoreAcquireRequest>,
    ) -> Result<Response<pb::Held>, Status> {
        let r = req.into_inner();
        let permits = if r.permits == 0 {
            1
        } else {
            r.permits as usize
        };
        unary(
            "semaphore.Acquire",
            acquire(
                &self.api,
                Recipe::Semaphore,
                &r.name,
                r.lease,
                r.timeout_ms,
                permits,
                Vec::new(),
            ),
        )
        .await
    }

    async fn release(
        &self,
        req: Request<ReleaseRequest>,
    ) -> Result<Response<ReleaseResponse>, Status> {
        unary(
            "semaphore.Release",
            release(&self.api, Recipe::Semaphore, req.into_inner()),
        )
        .await
    }

    async fn holders(&self, req: Request<HoldersRequest>) -> Result<Response<HolderList>, Status> {
        let r = req.into_inner();
        unary("semaphore.Holders", async {
            holders(&self.api, Recipe::Semaphore, r)
        })
        .await
    }
}

#[tonic::async_trait]
impl ElectionService for ElectionSvc {
    async fn campaign(&self, req: Request<CampaignRequest>) -> Result<Response<pb::Held>, Status> {
        let r = req.into_inner();
        unary(
            "election.Campaign",
            acquire(
                &self.api,
                Recipe::Election,
                &r.name,
                r.lease,
                r.timeout_ms,
                1,
                r.value.into_bytes(),
            ),
        )
        .await
    }

    async fn resign(
        &self,
        req: Request<ReleaseRequest>,
    ) -> Result<Response<ReleaseResponse>, Status> {
        unary(
            "election.Resign",
            release(&self.api, Recipe::Election, req.into_inner()),
        )
        .await
    }

    async fn leader(
        &self,
        req: Request<LeaderRequest>,
    ) -> Result<Response<pb::LeaderInfo>, Status> {
        let name = req.into_inner().name;
        unary("election.Leader", async {
            self.api
                .locks
                .leader(&name)?
                .map(Into::into)
                .ok_or_else(|| ApiError::not_found(format!("election {name} has no leader")))
        })
        .await
    }

    type ObserveStream = GrpcStream<LeaderEvent>;

    async fn observe(
        &self,
        req: Request<LeaderRequest>,
    ) -> Result<Response<Self::ObserveStream>, Status> {
        let name = req.into_inner().name;
        let start = self.api.locks.observe(&name).map(|obs| {
            let gauge = StreamGauge::new("observe");
            futures::stream::unfold((obs, gauge), |(mut obs, gauge)| async move {
                let leader = obs.next().await?;
                let ev = LeaderEvent {
                    leader: leader.map(Into::into),
                };
                Some((Ok(ev), (obs, gauge)))
            })
            .boxed()
        });
        streaming("election.Observe", start)
    }
}
