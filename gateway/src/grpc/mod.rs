//! The gRPC port (default 9848 = HTTP port + 1000, where Nacos 2.x clients look for it): Roster's
//! native API as the `roster.v1` services of `proto/roster/v1/*.proto`, the standard
//! `grpc.health.v1` health service and server reflection. Every RPC calls the same
//! [`Api`](crate::api::Api) services as the HTTP front end; this module only translates
//! messages, and [`status`] maps errors. More services (Nacos 2.x `Request` /
//! `BiRequestStream`) join the same port by being added to the [`RoutesBuilder`] that
//! [`routes`] fills, before [`serve`].

pub mod config;
pub mod lease;
pub mod lock;
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
    /// Largest request message accepted (bytes); larger ones get RESOURCE_EXHAUSTED.
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
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    let server = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .add_routes(routes)
        .serve_with_incoming(incoming);
    if let Err(e) = server.await {
        tracing::error!(error = %e, "gRPC server stopped");
    }
}
