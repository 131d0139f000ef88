//! Assemble a node: open storage, start the backend, bind the ZooKeeper, HTTP and gRPC ports.

use crate::config::Config;
use crate::http::{HttpState, router};
use crate::telemetry;
use crate::zk::ZkServer;
use roster_core::backend::Backend;
use roster_core::tree::prep::PrepOptions;
use roster_storage::RocksEngine;
use roster_zab::quorum::PeerConfig;
use roster_zab::{Ensemble, EnsembleConfig, MemberAddr, Standalone, ZabConfig};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;

/// A running node.
pub struct Node {
    pub backend: Arc<dyn Backend>,
    pub zk_addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub grpc_addr: SocketAddr,
    pub zk: Arc<ZkServer>,
    pub api: Arc<crate::api::Api>,
}

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("opening the store in {dir}: {source}")]
    Storage {
        dir: String,
        source: roster_core::storage::StorageError,
    },
    #[error("recovering state: {0}")]
    Recovery(#[from] roster_zab::OpenError),
    #[error("starting the AP backend: {0}")]
    Ap(#[from] roster_ap::OpenError),
    #[error("{0}")]
    Config(String),
    #[error("gRPC: {0}")]
    Grpc(#[from] crate::grpc::GrpcError),
    #[error("binding {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
}

/// Start a node and serve until the runtime ends.
pub async fn start(cfg: Config) -> Result<Node, StartError> {
    let metrics = telemetry::init_metrics();
    let cfg = Arc::new(cfg);
    let engine = RocksEngine::open(&cfg.data_dir).map_err(|source| StartError::Storage {
        dir: cfg.data_dir.display().to_string(),
        source,
    })?;
    let zab = ZabConfig {
        server_id: cfg.server_id,
        tick_ms: cfg.tick_ms,
        snapshot_every: cfg.snapshot_every,
        snapshots_retained: cfg.snapshots_retained,
        extended_types: cfg.extended_types,
        container_check_ms: cfg.container_check_ms,
        max_batch: cfg.max_batch,
        ..ZabConfig::default()
    };
    let members = cfg
        .members()
        .map_err(|e| StartError::Config(e.to_string()))?;
    let backend: Arc<dyn Backend> = if cfg.backend == "ap" {
        let (listen, seeds) = cfg
            .ap_addresses()
            .map_err(|e| StartError::Config(e.to_string()))?;
        let ap = roster_ap::ApConfig {
            server_id: cfg.server_id,
            listen,
            seeds,
            tick_ms: cfg.tick_ms,
            grace_ms: cfg.ap_grace_ms,
            max_share: cfg.ap_self_preservation_share,
            tombstone_ttl_ms: cfg.ap_tombstone_ttl_ms,
            anti_entropy_ms: cfg.ap_anti_entropy_ms,
            probe_ms: cfg.ap_probe_ms,
            suspect_ms: cfg.ap_suspect_ms,
            ..roster_ap::ApConfig::default()
        };
        roster_ap::ApBackend::open(Arc::new(engine), ap).await?
    } else if members.is_empty() {
        Standalone::open(Arc::new(engine), zab)?
    } else {
        let peer = PeerConfig {
            id: cfg.server_id,
            voters: members
                .iter()
                .filter(|m| !m.observer)
                .map(|m| m.id)
                .collect(),
            observers: members
                .iter()
                .filter(|m| m.observer)
                .map(|m| m.id)
                .collect(),
            tick_ms: cfg.tick_ms,
            init_limit: cfg.init_limit,
            sync_limit: cfg.sync_limit,
            prep: PrepOptions {
                extended_types: cfg.extended_types,
            },
            snapshot_every: cfg.snapshot_every,
            snapshots_retained: cfg.snapshots_retained,
            container_check_ms: cfg.container_check_ms,
            broken_quorum: None,
        };
        let addrs = members
            .iter()
            .map(|m| {
                (
                    m.id,
                    MemberAddr {
                        host: m.host.clone(),
                        quorum_port: m.quorum_port,
                        election_port: m.election_port,
                    },
                )
            })
            .collect();
        Ensemble::start(
            EnsembleConfig {
                peer,
                members: addrs,
            },
            Arc::new(engine),
        )
        .await?
    };
    let bind = |addr: String| async move {
        TcpListener::bind(&addr)
            .await
            .map_err(|source| StartError::Bind { addr, source })
    };
    let zk_listener = bind(cfg.zk_listen.clone()).await?;
    let http_listener = bind(cfg.http_listen.clone()).await?;
    let grpc_listen = cfg
        .grpc_addr()
        .map_err(|e| StartError::Config(e.to_string()))?;
    let grpc_listener = bind(grpc_listen.clone()).await?;
    let zk_addr = zk_listener
        .local_addr()
        .map_err(|source| StartError::Bind {
            addr: cfg.zk_listen.clone(),
            source,
        })?;
    let http_addr = http_listener
        .local_addr()
        .map_err(|source| StartError::Bind {
            addr: cfg.http_listen.clone(),
            source,
        })?;
    let grpc_addr = grpc_listener
        .local_addr()
        .map_err(|source| StartError::Bind {
            addr: grpc_listen.clone(),
            source,
        })?;
    let zk = ZkServer::new(cfg.clone(), backend.clone());
    tokio::spawn(zk.clone().serve(zk_listener));
    let api = crate::api::Api::new(backend.clone(), cfg.server_id, cfg.config_history);
    api.start_probes(cfg.server_id);
    let nacos_beats = Arc::new(crate::nacos::naming::Beats::default());
    nacos_beats.start(api.clone());
    let app = router(HttpState {
        backend: backend.clone(),
        metrics,
        api: api.clone(),
        max_body: cfg.http_max_body,
        rate_limit: cfg.http_rate_limit,
        nacos_beats,
    });
    tokio::spawn(async move {
        let app = app.into_make_service_with_connect_info::<SocketAddr>();
        if let Err(e) = axum::serve(http_listener, app).await {
            tracing::error!(error = %e, "HTTP server stopped");
        }
    });
    // Every gRPC service of the port goes into these routes (Nacos 2.x joins here too).
    let mut grpc_routes = tonic::service::RoutesBuilder::default();
    crate::grpc::routes(
        &mut grpc_routes,
        api.clone(),
        backend.clone(),
        &crate::grpc::GrpcOptions {
            max_message: cfg.grpc_max_message,
        },
    )?;
    tokio::spawn(crate::grpc::serve(grpc_listener, grpc_routes.routes()));
    let status = backend.status();
    tracing::info!(%zk_addr, %http_addr, %grpc_addr, backend = status.backend, role = status.role.as_str(),
        last_zxid = format!("{:#x}", status.last_zxid), data_dir = %cfg.data_dir.display(), "roster is serving");
    Ok(Node {
        backend,
        zk_addr,
        http_addr,
        grpc_addr,
        zk,
        api,
    })
}
