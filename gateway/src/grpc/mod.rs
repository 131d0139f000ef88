//! The gRPC port (default 9848 = HTTP port + 1000, where Nacos 2.x clients look for it): Roster's
//! native API as the `roster.v1` services of `proto/roster/v1/*.proto`, the standard
//! `grpc.health.v1` health service and server reflection. Every RPC calls the same
//! [`Api`](crate::api::Api) services as the HTTP front end; this module only translates
//! messages, and [`status`] maps errors. The Nacos 2.x `Request` / `BiRequestStream` services
//! ([`nacos`]) join the same port through the same [`RoutesBuilder`], before [`serve`].

pub mod config;
pub mod lease;
pub mod lock;
pub mod nacos;
pub mod registry;
pub mod status;
pub mod watch;

use crate::api::Api;
use crate::api::error::ApiError;
use futures::stream::BoxStream;
use roster_core::backend::Backend;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tonic::service::{Routes, RoutesBuilder};
use tonic::{Response, Status};

/// Code generated from `proto/roster/v1` (package `roster.v1`).
#[allow(clippy::all, missing_docs)]
pub mod proto {
    tonic::include_proto!("roster.v1");

    /// The encoded descriptors of every `roster.v1` file, for server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("roster_v1_descriptor");
}

/// A server stream of one message type.
pub type GrpcStream<T> = BoxStream<'static, Result<T, Status>>;

/// Settings of the gRPC port.
#[derive(Debug, Clone)]
pub struct GrpcOptions {
    /// Largest request message accepted (bytes); tonic refuses larger ones with OUT_OF_RANGE.
    pub max_message: usize,
}

/// Run one unary call: count and time it by method and API result code (closed sets), and map
/// its error.
pub(crate) async fn unary<T>(
    method: &'static str,
    call: impl Future<Output = Result<T, ApiError>>,
) -> Result<Response<T>, Status> {
    let started = Instant::now();
    let r = call.await;
    record(method, r.as_ref().err(), started);
    r.map(Response::new).map_err(status::to_status)
}

/// Start a streaming call: counted like a unary one (its setup), the stream itself by a gauge.
pub(crate) fn streaming<T>(
    method: &'static str,
    start: Result<GrpcStream<T>, ApiError>,
) -> Result<Response<GrpcStream<T>>, Status> {
    record(method, start.as_ref().err(), Instant::now());
    start.map(Response::new).map_err(status::to_status)
}

fn record(method: &'static str, err: Option<&ApiError>, started: Instant) {
    let result = err.map(|e| e.code).unwrap_or("OK");
    metrics::counter!("roster_grpc_requests_total", "method" => method, "result" => result)
        .increment(1);
    metrics::histogram!("roster_grpc_request_duration_seconds", "method" => method)
        .record(started.elapsed().as_secs_f64());
}

/// Counts a live server stream in `roster_grpc_streams{kind}` while it exists.
pub(crate) struct StreamGauge(&'static str);

impl StreamGauge {
    pub(crate) fn new(kind: &'static str) -> StreamGauge {
        metrics::gauge!("roster_grpc_streams", "kind" => kind).increment(1.0);
        StreamGauge(kind)
    }
}

impl Drop for StreamGauge {
    fn drop(&mut self) {
        metrics::gauge!("roster_grpc_streams", "kind" => self.0).decrement(1.0);
    }
}

/// Why the gRPC port could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum GrpcError {
    #[error("building the reflection service: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
}

/// Add the native `roster.v1` services, health and reflection to `routes`. The health service
/// reports the overall status (service "") and each native service as SERVING while the backend
/// is ready (as `/readyz`), NOT_SERVING otherwise.
pub fn routes(
    routes: &mut RoutesBuilder,
    api: Arc<Api>,
    backend: Arc<dyn Backend>,
    opts: &GrpcOptions,
) -> Result<(), GrpcError> {
    use proto::config_service_server::ConfigServiceServer;
    use proto::election_service_server::ElectionServiceServer;
    use proto::lease_service_server::LeaseServiceServer;
    use proto::lock_service_server::LockServiceServer;
    use proto::registry_service_server::RegistryServiceServer;
    use proto::semaphore_service_server::SemaphoreServiceServer;
    use proto::watch_service_server::WatchServiceServer;
    use tonic::server::NamedService;

    let max = opts.max_message;
    routes
        .add_service(
            LeaseServiceServer::new(lease::LeaseSvc::new(api.clone()))
                .max_decoding_message_size(max),
        )
        .add_service(
            RegistryServiceServer::new(registry::RegistrySvc::new(api.clone()))
                .max_decoding_message_size(max),
        )
        .add_service(
            ConfigServiceServer::new(config::ConfigSvc::new(api.clone()))
                .max_decoding_message_size(max),
        )
        .add_service(
            LockServiceServer::new(lock::LockSvc::new(api.clone())).max_decoding_message_size(max),
        )
        .add_service(
            SemaphoreServiceServer::new(lock::SemaphoreSvc::new(api.clone()))
                .max_decoding_message_size(max),
        )
        .add_service(
            ElectionServiceServer::new(lock::ElectionSvc::new(api.clone()))
                .max_decoding_message_size(max),
        )
        .add_service(
            WatchServiceServer::new(watch::WatchSvc::new(api)).max_decoding_message_size(max),
        );

    let names: Vec<&'static str> = vec![
        "",
        <LeaseServiceServer<lease::LeaseSvc> as NamedService>::NAME,
        <RegistryServiceServer<registry::RegistrySvc> as NamedService>::NAME,
        <ConfigServiceServer<config::ConfigSvc> as NamedService>::NAME,
        <LockServiceServer<lock::LockSvc> as NamedService>::NAME,
        <SemaphoreServiceServer<lock::SemaphoreSvc> as NamedService>::NAME,
        <ElectionServiceServer<lock::ElectionSvc> as NamedService>::NAME,
        <WatchServiceServer<watch::WatchSvc> as NamedService>::NAME,
    ];
    let (reporter, health) = tonic_health::server::health_reporter();
    tokio::spawn(async move {
        let mut last = None;
        loop {
            let ready = backend.status().ready;
            if last != Some(ready) {
                let s = if ready {
                    tonic_health::ServingStatus::Serving
                } else {
                    tonic_health::ServingStatus::NotServing
                };
                for n in &names {
                    reporter.set_service_status(*n, s).await;
                }
                last = Some(ready);
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    });
    routes.add_service(health);

    // v1 and v1alpha: grpcurl and older tools still ask for the latter.
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    routes.add_service(reflection().build_v1()?);
    routes.add_service(reflection().build_v1alpha()?);
    Ok(())
}

/// Serve `routes` on `listener` until the runtime ends.
pub async fn serve(listener: TcpListener, routes: Routes) {
    use futures::StreamExt;
    // tonic sets TCP_NODELAY only on sockets it accepts itself: without it, Nagle holds small
    // reply frames back until the client's delayed ACK (~40 ms per unary call).
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener).map(|conn| {
        conn.inspect(|tcp| {
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::debug!(error = %e, "gRPC: cannot set TCP_NODELAY");
            }
        })
    });
    let server = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .add_routes(routes)
        .serve_with_incoming(incoming);
    if let Err(e) = server.await {
        tracing::error!(error = %e, "gRPC server stopped");
    }
}

#[cfg(test)]
mod tests {
    //! The services called in-process on a standalone in-memory node: messages are translated
    //! both ways and errors carry the mapped status. The wire is covered by the process test
    //! `tests/process/test_grpc_api.py` with the real grpcio client.
    use super::proto::config_service_server::ConfigService;
    use super::proto::lease_service_server::LeaseService;
    use super::proto::registry_service_server::RegistryService;
    use super::proto::*;
    use super::*;
    use futures::StreamExt;
    use roster_core::storage::MemEngine;
    use roster_zab::{Standalone, ZabConfig};
    use tonic::Request;

    fn node() -> Arc<Api> {
        let backend: Arc<dyn Backend> = Standalone::open(
            Arc::new(MemEngine::default()),
            ZabConfig {
                tick_ms: 100,
                ..ZabConfig::default()
            },
        )
        .expect("standalone node");
        Api::new(backend, 1, 10)
    }

    async fn next<T>(s: &mut GrpcStream<T>) -> T {
        tokio::time::timeout(Duration::from_secs(5), s.next())
            .await
            .expect("a message within 5 s")
            .expect("stream open")
            .expect("no error")
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn register_list_and_subscribe_round_trip() {
        let api = node();
        let leases = lease::LeaseSvc::new(api.clone());
        let reg = registry::RegistrySvc::new(api.clone());
        let l = leases
            .grant(Request::new(LeaseGrantRequest { ttl_seconds: 30 }))
            .await
            .unwrap()
            .into_inner();
        let mut sub = reg
            .subscribe(Request::new(SubscribeRequest {
                service: "svc".into(),
                ..Default::default()
            }))
            .await
            .unwrap()
            .into_inner();
        let first = next(&mut sub).await;
        assert!(
            matches!(&first.event, Some(subscribe_event::Event::Snapshot(s)) if s.instances.is_empty())
        );
        let inst = reg
            .register(Request::new(RegisterRequest {
                service: "svc".into(),
                ip: "10.0.0.9".into(),
                port: 81,
                lease: Some(l.id),
                metadata: [("k".to_string(), "v".to_string())].into(),
                health_check: Some(HealthCheck {
                    r#type: ProbeType::Tcp as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(inst.id, "10.0.0.9#81#DEFAULT");
        assert_eq!(inst.lease, Some(l.id));
        let hc = inst.health_check.clone().unwrap();
        assert_eq!((hc.interval_ms, hc.timeout_ms), (Some(5000), Some(2000)));
        let ev = next(&mut sub).await;
        match ev.event {
            Some(subscribe_event::Event::Change(c)) => {
                assert_eq!(c.upserted, vec![inst.clone()]);
                assert!(ev.revision > first.revision);
            }
            other => panic!("expected a change, got {other:?}"),
        }
        let list = reg
            .list_instances(Request::new(ListInstancesRequest {
                service: "svc".into(),
                metadata: [("k".to_string(), "v".to_string())].into(),
                ..Default::default()
            }))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(list.instances, vec![inst]);

        let bad = reg
            .register(Request::new(RegisterRequest {
                service: "svc".into(),
                ip: "10.0.0.9".into(),
                port: 70_000,
                ephemeral: Some(false),
                ..Default::default()
            }))
            .await
            .unwrap_err();
        assert_eq!(bad.code(), tonic::Code::InvalidArgument);
        let gone = leases
            .keep_alive(Request::new(LeaseKeepAliveRequest { id: 4242 }))
            .await
            .unwrap_err();
        assert_eq!(gone.code(), tonic::Code::NotFound);
        assert_eq!(
            gone.metadata().get(status::CODE_KEY).unwrap(),
            "LEASE_NOT_FOUND"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn config_listen_sends_each_new_md5_and_cas_conflict_is_aborted() {
        let api = node();
        let cfg = config::ConfigSvc::new(api.clone());
        let r = ConfigRef {
            data_id: "d".into(),
            ..Default::default()
        };
        let put = |content: &str, cas: Option<String>| PutConfigRequest {
            config: Some(r.clone()),
            content: content.into(),
            cas_md5: cas,
            ..Default::default()
        };
        let v1 = cfg
            .put(Request::new(put("one", None)))
            .await
            .unwrap()
            .into_inner();
        let mut listen = cfg
            .listen(Request::new(ListenConfigRequest {
                config: Some(r.clone()),
                md5: v1.md5.clone(),
            }))
            .await
            .unwrap()
            .into_inner();
        let v2 = cfg
            .put(Request::new(put("two", None)))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(next(&mut listen).await.md5, v2.md5);
        let stale = cfg
            .put(Request::new(put("three", Some(v1.md5))))
            .await
            .unwrap_err();
        assert_eq!(stale.code(), tonic::Code::Aborted);
        assert_eq!(stale.metadata().get(status::CODE_KEY).unwrap(), "CONFLICT");
        cfg.delete(Request::new(r.clone())).await.unwrap();
        assert_eq!(next(&mut listen).await.md5, "");
    }
}
