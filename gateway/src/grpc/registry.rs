//! `roster.v1.RegistryService` on [`Registry`](crate::api::registry::Registry).

use super::proto::registry_service_server::RegistryService;
use super::proto::{
    self as pb, DeleteServiceResponse, DeregisterResponse, InstanceList, InstanceRef,
    ListInstancesRequest, ListServicesRequest, ProbeType, PutServiceRequest, RegisterRequest,
    ServiceInfo, ServicePage, ServiceRef, SubscribeEvent, SubscribeRequest, UpdateInstanceRequest,
};
use super::{GrpcStream, StreamGauge, streaming, unary};
use crate::api::Api;
use crate::api::error::ApiError;
use crate::api::registry::{self as reg, Filter, InstancePatch, ProbeKind, ServiceKey};
use futures::StreamExt;
use std::sync::Arc;
use tonic::{Request, Response, Status};

fn port(p: u32, field: &str) -> Result<u16, ApiError> {
    u16::try_from(p).map_err(|_| {
        ApiError::invalid(format!("{field} must be 0..65535"))
            .with_details(serde_json::json!({"field": field, "value": p}))
    })
}

fn key(namespace: &str, group: &str, service: &str) -> Result<ServiceKey, ApiError> {
    ServiceKey::new(Some(namespace), Some(group), service)
}

fn service_key(r: Option<ServiceRef>) -> Result<ServiceKey, ApiError> {
    let r = r.unwrap_or_default();
    key(&r.namespace, &r.group, &r.service)
}

fn instance_ref(r: Option<InstanceRef>) -> Result<(ServiceKey, String), ApiError> {
    let r = r.unwrap_or_default();
    Ok((key(&r.namespace, &r.group, &r.service)?, r.id))
}

fn health_check_in(h: pb::HealthCheck) -> Result<reg::HealthCheck, ApiError> {
    let kind = match ProbeType::try_from(h.r#type) {
        Ok(ProbeType::Tcp) => ProbeKind::Tcp,
        Ok(ProbeType::Http) => ProbeKind::Http,
        Ok(ProbeType::Grpc) => ProbeKind::Grpc,
        _ => {
            return Err(
                ApiError::invalid("health_check.type must be TCP, HTTP or GRPC")
                    .with_details(serde_json::json!({"field": "health_check.type"})),
            );
        }
    };
    Ok(reg::HealthCheck {
        kind,
        port: h.port.map(|p| port(p, "health_check.port")).transpose()?,
        path: h.path,
        interval_ms: h.interval_ms.unwrap_or_else(reg::default_interval),
        timeout_ms: h.timeout_ms.unwrap_or_else(reg::default_probe_timeout),
    })
}

fn health_check_out(h: reg::HealthCheck) -> pb::HealthCheck {
    pb::HealthCheck {
        r#type: match h.kind {
            ProbeKind::Tcp => ProbeType::Tcp,
            ProbeKind::Http => ProbeType::Http,
            ProbeKind::Grpc => ProbeType::Grpc,
        } as i32,
        port: h.port.map(u32::from),
        path: h.path,
        interval_ms: Some(h.interval_ms),
        timeout_ms: Some(h.timeout_ms),
    }
}

impl From<reg::Instance> for pb::Instance {
    fn from(i: reg::Instance) -> pb::Instance {
        pb::Instance {
            id: i.id,
            namespace: i.namespace,
            group: i.group,
            service: i.service,
            cluster: i.cluster,
            ip: i.ip,
            port: u32::from(i.port),
            weight: i.weight,
            healthy: i.healthy,
            enabled: i.enabled,
            metadata: i.metadata,
            ephemeral: i.ephemeral,
            protocol: i.protocol,
            health_check: i.health_check.map(health_check_out),
            owner: i.owner,
            lease: i.lease,
            revision: i.revision,
        }
    }
}

impl From<reg::ServiceSettings> for pb::ServiceSettings {
    fn from(s: reg::ServiceSettings) -> pb::ServiceSettings {
        pb::ServiceSettings {
            protect_threshold: s.protect_threshold,
            metadata: s.metadata,
        }
    }
}

impl From<reg::ServiceInfo> for ServiceInfo {
    fn from(s: reg::ServiceInfo) -> ServiceInfo {
        ServiceInfo {
            namespace: s.namespace,
            group: s.group,
            service: s.service,
            instances: s.instances as u64,
            healthy_instances: s.healthy_instances as u64,
            settings: Some(s.settings.into()),
        }
    }
}

impl From<reg::InstanceList> for InstanceList {
    fn from(l: reg::InstanceList) -> InstanceList {
        InstanceList {
            namespace: l.namespace,
            group: l.group,
            service: l.service,
            revision: l.revision,
            instances: l.instances.into_iter().map(Into::into).collect(),
            protect_threshold_reached: l.protect_threshold_reached,
        }
    }
}

impl From<reg::SubscribeEvent> for SubscribeEvent {
    fn from(e: reg::SubscribeEvent) -> SubscribeEvent {
        use pb::subscribe_event::Event;
        match e {
            reg::SubscribeEvent::Snapshot {
                revision,
                instances,
            } => SubscribeEvent {
                revision,
                event: Some(Event::Snapshot(pb::InstanceSnapshot {
                    instances: instances.into_iter().map(Into::into).collect(),
                })),
            },
            reg::SubscribeEvent::Change {
                revision,
                upserted,
                removed,
            } => SubscribeEvent {
                revision,
                event: Some(Event::Change(pb::InstanceChange {
                    upserted: upserted.into_iter().map(Into::into).collect(),
                    removed,
                })),
            },
        }
    }
}

/// The registry service.
pub struct RegistrySvc {
    api: Arc<Api>,
}

impl RegistrySvc {
    pub fn new(api: Arc<Api>) -> RegistrySvc {
        RegistrySvc { api }
    }
}

#[tonic::async_trait]
impl RegistryService for RegistrySvc {
    async fn register(
        &self,
        req: Request<RegisterRequest>,
    ) -> Result<Response<pb::Instance>, Status> {
        let r = req.into_inner();
        unary("registry.Register", async {
            let service = r.service;
            let req = reg::RegisterRequest {
                namespace: Some(r.namespace),
                group: Some(r.group),
                cluster: Some(r.cluster),
                ip: r.ip,
                port: port(r.port, "port")?,
                weight: r.weight,
                healthy: r.healthy,
                enabled: r.enabled,
                metadata: (!r.metadata.is_empty()).then_some(r.metadata),
                ephemeral: r.ephemeral,
                lease: r.lease,
                health_check: r.health_check.map(health_check_in).transpose()?,
            };
            Ok(self
                .api
                .registry
                .register(&self.api.leases, &service, req, "native")
                .await?
                .into())
        })
        .await
    }

    async fn deregister(
        &self,
        req: Request<InstanceRef>,
    ) -> Result<Response<DeregisterResponse>, Status> {
        let r = req.into_inner();
        unary("registry.Deregister", async {
            let (key, id) = instance_ref(Some(r))?;
            self.api.registry.deregister(&key, &id).await?;
            Ok(DeregisterResponse {})
        })
        .await
    }

    async fn heartbeat(&self, req: Request<InstanceRef>) -> Result<Response<pb::Instance>, Status> {
        let r = req.into_inner();
        unary("registry.Heartbeat", async {
            let (key, id) = instance_ref(Some(r))?;
            Ok(self
                .api
                .registry
                .heartbeat(&self.api.leases, &key, &id)
                .await?
                .into())
        })
        .await
    }

    async fn update(
        &self,
        req: Request<UpdateInstanceRequest>,
    ) -> Result<Response<pb::Instance>, Status> {
        let r = req.into_inner();
        unary("registry.Update", async {
            let (key, id) = instance_ref(r.instance)?;
            let patch = InstancePatch {
                weight: r.weight,
                healthy: r.healthy,
                enabled: r.enabled,
                metadata: r.metadata.map(|m| m.entries),
            };
            Ok(self.api.registry.patch(&key, &id, &patch).await?.into())
        })
        .await
    }

    async fn get_instance(
        &self,
        req: Request<InstanceRef>,
    ) -> Result<Response<pb::Instance>, Status> {
        let r = req.into_inner();
        unary("registry.GetInstance", async {
            let (key, id) = instance_ref(Some(r))?;
            Ok(self.api.registry.get(&key, &id)?.into())
        })
        .await
    }

    async fn list_instances(
        &self,
        req: Request<ListInstancesRequest>,
    ) -> Result<Response<InstanceList>, Status> {
        let r = req.into_inner();
        unary("registry.ListInstances", async {
            let key = key(&r.namespace, &r.group, &r.service)?;
            let filter = Filter {
                healthy_only: r.healthy_only,
                clusters: r.clusters.into_iter().filter(|c| !c.is_empty()).collect(),
                metadata: r.metadata.into_iter().collect(),
            };
            Ok(self.api.registry.list(&key, &filter).into())
        })
        .await
    }

    async fn get_service(&self, req: Request<ServiceRef>) -> Result<Response<ServiceInfo>, Status> {
        let r = req.into_inner();
        unary("registry.GetService", async {
            Ok(self.api.registry.service(&service_key(Some(r))?)?.into())
        })
        .await
    }

    async fn put_service(
        &self,
        req: Request<PutServiceRequest>,
    ) -> Result<Response<ServiceInfo>, Status> {
        let r = req.into_inner();
        unary("registry.PutService", async {
            let key = service_key(r.service)?;
            let s = r.settings.unwrap_or_default();
            let settings = reg::ServiceSettings {
                protect_threshold: s.protect_threshold,
                metadata: s.metadata,
            };
            Ok(self.api.registry.put_service(&key, settings).await?.into())
        })
        .await
    }

    async fn delete_service(
        &self,
        req: Request<ServiceRef>,
    ) -> Result<Response<DeleteServiceResponse>, Status> {
        let r = req.into_inner();
        unary("registry.DeleteService", async {
            self.api
                .registry
                .delete_service(&service_key(Some(r))?)
                .await?;
            Ok(DeleteServiceResponse {})
        })
        .await
    }

    async fn list_services(
        &self,
        req: Request<ListServicesRequest>,
    ) -> Result<Response<ServicePage>, Status> {
        let r = req.into_inner();
        unary("registry.ListServices", async {
            let page = if r.page == 0 { 1 } else { r.page as usize };
            let size = if r.page_size == 0 {
                100
            } else {
                r.page_size as usize
            };
            let p = self
                .api
                .registry
                .services(Some(&r.namespace), Some(&r.group), page, size)?;
            Ok(ServicePage {
                total: p.total as u64,
                page: p.page as u32,
                page_size: p.page_size as u32,
                services: p.services.into_iter().map(Into::into).collect(),
            })
        })
        .await
    }

    type SubscribeStream = GrpcStream<SubscribeEvent>;

    async fn subscribe(
        &self,
        req: Request<SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let r = req.into_inner();
        let start = key(&r.namespace, &r.group, &r.service).map(|key| {
            let sub = self
                .api
                .registry
                .subscribe(key, r.from_revision.map(|v| v as i64));
            let gauge = StreamGauge::new("subscribe");
            futures::stream::unfold((sub, gauge), |(mut sub, gauge)| async move {
                let ev = sub.next().await?;
                Some((Ok(ev.into()), (sub, gauge)))
            })
            .boxed()
        });
        streaming("registry.Subscribe", start)
    }
}
