//! The native API over gRPC (`roster.v1`), through client stubs generated from
//! `proto/roster/v1` at build time. One HTTP/2 channel per client; requests multiplex on it.

use anyhow::Context;
use tonic::transport::{Channel, Endpoint};

use super::{Feed, Held, SubEvent};
use crate::http::REQUEST_TIMEOUT;
use crate::load::Failure;

#[allow(clippy::all, clippy::pedantic)]
mod pb {
    tonic::include_proto!("roster.v1");
}

use pb::config_service_client::ConfigServiceClient;
use pb::lease_service_client::LeaseServiceClient;
use pb::lock_service_client::LockServiceClient;
use pb::registry_service_client::RegistryServiceClient;

#[derive(Clone)]
pub struct Grpc {
    channel: Channel,
}

/// The failure a status stands for: the API code the server puts in `roster-code` (the same
/// code the HTTP API answers), else the gRPC code's name.
fn failure(what: &str, s: tonic::Status) -> Failure {
    let kind = s
        .metadata()
        .get("roster-code")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .unwrap_or_else(|| match s.code() {
            // Transport failures surface as UNAVAILABLE / UNKNOWN without an API code.
            tonic::Code::Unavailable => "ClientIo".into(),
            c => format!("{c:?}"),
        });
    Failure::new(kind, format!("{what}: {}", s.message()))
}

/// Runs one call within the request timeout.
async fn call<T>(
    what: &str,
    f: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Result<T, Failure> {
    match tokio::time::timeout(REQUEST_TIMEOUT, f).await {
        Ok(Ok(r)) => Ok(r.into_inner()),
        Ok(Err(s)) => Err(failure(what, s)),
        Err(_) => Err(Failure::new(
            "Timeout",
            format!("{what}: no answer within {REQUEST_TIMEOUT:?}"),
        )),
    }
}

fn config_ref(group: &str, data_id: &str) -> Option<pb::ConfigRef> {
    Some(pb::ConfigRef {
        namespace: String::new(),
        group: group.to_string(),
        data_id: data_id.to_string(),
    })
}

impl Grpc {
    /// Opens the channel (one HTTP/2 connection) to `addr` (`host:port`).
    pub async fn connect(addr: &str) -> anyhow::Result<Grpc> {
        let channel = Endpoint::from_shared(format!("http://{addr}"))?
            .tcp_nodelay(true)
            .connect_timeout(std::time::Duration::from_secs(5))
            .connect()
            .await
            .with_context(|| format!("connecting gRPC to {addr}"))?;
        Ok(Grpc { channel })
    }

    fn leases(&self) -> LeaseServiceClient<Channel> {
        LeaseServiceClient::new(self.channel.clone())
    }

    fn registry(&self) -> RegistryServiceClient<Channel> {
        RegistryServiceClient::new(self.channel.clone())
    }

    fn configs(&self) -> ConfigServiceClient<Channel> {
        ConfigServiceClient::new(self.channel.clone())
    }

    fn locks(&self) -> LockServiceClient<Channel> {
        LockServiceClient::new(self.channel.clone())
    }

    pub async fn grant(&self, ttl_seconds: i64) -> Result<i64, Failure> {
        let mut c = self.leases();
        let r = call("Grant", c.grant(pb::LeaseGrantRequest { ttl_seconds })).await?;
        Ok(r.id)
    }

    pub async fn keepalive(&self, lease: i64) -> Result<(), Failure> {
        let mut c = self.leases();
        call(
            "KeepAlive",
            c.keep_alive(pb::LeaseKeepAliveRequest { id: lease }),
        )
        .await
        .map(drop)
    }

    pub async fn revoke(&self, lease: i64) -> Result<(), Failure> {
        let mut c = self.leases();
        call("Revoke", c.revoke(pb::LeaseRevokeRequest { id: lease }))
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
        let mut c = self.registry();
        let req = pb::RegisterRequest {
            group: group.to_string(),
            service: service.to_string(),
            ip: ip.to_string(),
            port: port.into(),
            lease: Some(lease),
            ..Default::default()
        };
        call("Register", c.register(req)).await.map(drop)
    }

    pub async fn deregister(&self, group: &str, service: &str, id: &str) -> Result<(), Failure> {
        let mut c = self.registry();
        let req = pb::InstanceRef {
            namespace: String::new(),
            group: group.to_string(),
            service: service.to_string(),
            id: id.to_string(),
        };
        call("Deregister", c.deregister(req)).await.map(drop)
    }

    pub async fn list(&self, group: &str, service: &str) -> Result<usize, Failure> {
        let mut c = self.registry();
        let req = pb::ListInstancesRequest {
            group: group.to_string(),
            service: service.to_string(),
            ..Default::default()
        };
        Ok(call("ListInstances", c.list_instances(req))
            .await?
            .instances
            .len())
    }

    pub async fn subscribe(&self, group: &str, service: &str) -> Result<Feed<SubEvent>, Failure> {
        let mut c = self.registry();
        let req = pb::SubscribeRequest {
            namespace: String::new(),
            group: group.to_string(),
            service: service.to_string(),
            from_revision: None,
        };
        let mut stream = call("Subscribe", c.subscribe(req)).await?;
        Ok(Feed::spawn(|tx| async move {
            use pb::subscribe_event::Event;
            loop {
                let item = match stream.message().await {
                    Ok(None) => return,
                    Err(s) => Err(failure("Subscribe stream", s)),
                    Ok(Some(m)) => match m.event {
                        Some(Event::Snapshot(s)) => Ok(SubEvent::Snapshot(
                            s.instances.into_iter().map(|i| i.id).collect(),
                        )),
                        Some(Event::Change(c)) => Ok(SubEvent::Change {
                            upserted: c.upserted.into_iter().map(|i| i.id).collect(),
                            removed: c.removed,
                        }),
                        None => continue,
                    },
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
        let mut c = self.configs();
        let req = pb::PutConfigRequest {
            config: config_ref(group, data_id),
            content: content.to_string(),
            ..Default::default()
        };
        Ok(call("Put", c.put(req)).await?.md5)
    }

    pub async fn config_get(&self, group: &str, data_id: &str) -> Result<usize, Failure> {
        let mut c = self.configs();
        let req = config_ref(group, data_id).unwrap_or_default();
        Ok(call("Get", c.get(req)).await?.content.len())
    }

    pub async fn config_delete(&self, group: &str, data_id: &str) -> Result<(), Failure> {
        let mut c = self.configs();
        let req = config_ref(group, data_id).unwrap_or_default();
        call("Delete", c.delete(req)).await.map(drop)
    }

    pub async fn config_listen(
        &self,
        group: &str,
        data_id: &str,
        md5: &str,
    ) -> Result<Feed<String>, Failure> {
        let mut c = self.configs();
        let req = pb::ListenConfigRequest {
            config: config_ref(group, data_id),
            md5: md5.to_string(),
        };
        let mut stream = call("Listen", c.listen(req)).await?;
        Ok(Feed::spawn(|tx| async move {
            loop {
                let item = match stream.message().await {
                    Ok(None) => return,
                    Err(s) => Err(failure("Listen stream", s)),
                    Ok(Some(state)) => Ok(state.md5),
                };
                let end = item.is_err();
                if tx.send(item).await.is_err() || end {
                    return;
                }
            }
        }))
    }

    pub async fn lock_acquire(
        &self,
        name: &str,
        lease: i64,
        timeout_ms: u64,
    ) -> Result<Held, Failure> {
        let mut c = self.locks();
        let req = pb::LockAcquireRequest {
            name: name.to_string(),
            lease,
            timeout_ms,
        };
        let h = call("Acquire", c.acquire(req)).await?;
        Ok(Held {
            key: h.key,
            fencing_token: h.fencing_token,
        })
    }

    pub async fn lock_release(&self, name: &str, key: &str) -> Result<(), Failure> {
        let mut c = self.locks();
        let req = pb::ReleaseRequest {
            name: name.to_string(),
            key: key.to_string(),
        };
        call("Release", c.release(req)).await.map(drop)
    }
}
