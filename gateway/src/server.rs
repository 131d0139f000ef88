//! Assemble a node: open storage, start the backend (zab or raft, standalone or replicated; or
//! ap), bind the ZooKeeper, HTTP and gRPC ports.

use crate::config::{Config, Member};
use crate::http::{HttpState, router};
use crate::telemetry;
use crate::zk::ZkServer;
use roster_core::backend::Backend;
use roster_core::storage::{Engine, Space, WriteBatch};
use roster_core::tree::prep::PrepOptions;
use roster_raft::{RaftBackend, RaftConfig, TcpConfig, TcpTransport};
use roster_storage::RocksEngine;
use roster_zab::quorum::PeerConfig;
use roster_zab::{Ensemble, EnsembleConfig, MemberAddr, Standalone, ZabConfig};
use std::collections::BTreeMap;
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
    /// The raft backend, when it runs (membership administration).
    pub raft: Option<Arc<RaftBackend>>,
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
    #[error("starting raft: {0}")]
    Raft(#[from] roster_raft::OpenError),
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

/// The zab backends' snapshot files, inside the data directory (beside RocksDB's own files).
const SNAPSHOT_DIR: &str = "zab-snapshots";
/// The zab backends' transaction log files, inside the data directory.
const LOG_DIR: &str = "zab-log";
/// Where a raft member keeps its snapshot, inside the data dir.
const RAFT_SNAPSHOT_DIR: &str = "raft-snapshots";

/// Start a node and serve until the runtime ends.
pub async fn start(cfg: Config) -> Result<Node, StartError> {
    let metrics = telemetry::init_metrics();
    let cfg = Arc::new(cfg);
    let engine = RocksEngine::open(&cfg.data_dir).map_err(|source| StartError::Storage {
        dir: cfg.data_dir.display().to_string(),
        source,
    })?;
    let engine: Arc<dyn Engine> = Arc::new(engine);
    claim_store(engine.as_ref(), &cfg.backend).map_err(|source| StartError::Storage {
        dir: cfg.data_dir.display().to_string(),
        source,
    })?;
    let zab = ZabConfig {
        server_id: cfg.server_id,
        tick_ms: cfg.tick_ms,
        snapshot: cfg.snapshot_policy(),
        snapshots_retained: cfg.snapshots_retained,
        extended_types: cfg.extended_types,
        container_check_ms: cfg.container_check_ms,
        max_batch: cfg.max_batch,
        snapshot_dir: Some(cfg.data_dir.join(SNAPSHOT_DIR)),
        log_dir: Some(cfg.data_dir.join(LOG_DIR)),
        ..ZabConfig::default()
    };
    let members = cfg
        .members()
        .map_err(|e| StartError::Config(e.to_string()))?;
    let mut raft = None;
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
        roster_ap::ApBackend::open(engine, ap).await?
    } else if cfg.backend == "raft" {
        let r = start_raft(&cfg, engine, &members).await?;
        raft = Some(r.clone());
        r
    } else if members.is_empty() {
        Standalone::open(engine, zab)?
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
            snapshot: cfg.snapshot_policy(),
            snapshots_retained: cfg.snapshots_retained,
            container_check_ms: cfg.container_check_ms,
            broken_quorum: None,
            snapshot_inline: false,
            snapshot_dir: Some(cfg.data_dir.join(SNAPSHOT_DIR)),
            log_dir: Some(cfg.data_dir.join(LOG_DIR)),
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
            engine,
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
    if cfg.registry_layouts {
        api.start_layouts();
    }
    let nacos_beats = Arc::new(crate::nacos::naming::Beats::default());
    nacos_beats.start(api.clone());
    let nacos_auth = Arc::new(crate::nacos::auth::NacosAuth::new(
        cfg.nacos_auth_enabled,
        &cfg.nacos_auth_users,
        cfg.nacos_auth_token_ttl_s,
        &cfg.nacos_auth_secret,
    ));
    let eureka = crate::eureka::Eureka::start(
        api.clone(),
        crate::eureka::Settings {
            scope: crate::eureka::Scope {
                namespace: cfg.eureka_namespace.clone(),
                group: cfg.eureka_group.clone(),
            },
            renewal_s: cfg.eureka_renewal_interval_s,
            duration_s: cfg.eureka_lease_duration_s,
            self_preservation: cfg.eureka_self_preservation,
            renewal_percent_threshold: cfg.eureka_renewal_percent_threshold,
            server_id: cfg.server_id,
        },
    );
    let app = router(HttpState {
        backend: backend.clone(),
        raft: raft.clone(),
        metrics,
        api: api.clone(),
        max_body: cfg.http_max_body,
        rate_limit: cfg.http_rate_limit,
        nacos_beats,
        nacos_auth: nacos_auth.clone(),
        eureka,
    });
    tokio::spawn(async move {
        let app = app.into_make_service_with_connect_info::<SocketAddr>();
        // Small JSON replies must not wait for Nagle (see grpc::serve).
        let http_listener = axum::serve::ListenerExt::tap_io(http_listener, |tcp| {
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::debug!(error = %e, "HTTP: cannot set TCP_NODELAY");
            }
        });
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
    crate::grpc::nacos::routes(
        &mut grpc_routes,
        crate::grpc::nacos::Nacos::new(api.clone(), nacos_auth, cfg.nacos_grpc_session_timeout_ms),
        cfg.grpc_max_message,
    );
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
        raft,
    })
}

/// Which backend wrote the store (`Space::Meta`); a store is never opened by the other one.
const BACKEND_KEY: &[u8] = b"roster/backend";

/// Refuse a store written by another backend (their logs are not interchangeable); mark a new
/// one as this backend's. Stores from before the mark are recognised by raft's vote key.
fn claim_store(
    engine: &dyn Engine,
    backend: &str,
) -> Result<(), roster_core::storage::StorageError> {
    let found = match engine.get(Space::Meta, BACKEND_KEY)? {
        Some(b) => Some(String::from_utf8_lossy(&b).into_owned()),
        None if engine.get(Space::Meta, b"raft/vote")?.is_some() => Some("raft".into()),
        None if engine.last(Space::Log)?.is_some() || engine.last(Space::Meta)?.is_some() => {
            Some("zab".into())
        }
        None => None,
    };
    match found {
        Some(b) if b != backend => Err(roster_core::storage::StorageError(format!(
            "this data directory holds {b} state; it cannot be opened with backend = {backend:?} \
             (use another data_dir, or the {b} backend)"
        ))),
        Some(_) => Ok(()),
        None => {
            let mut w = WriteBatch::default();
            w.put(Space::Meta, BACKEND_KEY, backend.as_bytes());
            engine.write(w, true)
        }
    }
}

/// Open the raft backend: recover from the store, serve the raft port, and on a pristine store
/// form the cluster (`servers`' voters) or, standalone, a cluster of one.
async fn start_raft(
    cfg: &Config,
    engine: Arc<dyn Engine>,
    members: &[Member],
) -> Result<Arc<RaftBackend>, StartError> {
    let me = members.iter().find(|m| m.id == cfg.server_id);
    let addr = match me {
        Some(m) => format!("{}:{}", m.host, m.quorum_port),
        None => "local".to_string(),
    };
    let listener = match me {
        Some(_) => Some(
            TcpListener::bind(&addr)
                .await
                .map_err(|source| StartError::Bind {
                    addr: addr.clone(),
                    source,
                })?,
        ),
        None => None,
    };
    let rcfg = RaftConfig {
        node_id: cfg.server_id,
        addr: addr.clone(),
        tick_ms: cfg.tick_ms,
        heartbeat_ms: cfg.raft_heartbeat_ms,
        election_timeout_min_ms: cfg.raft_election_range_ms().0,
        election_timeout_max_ms: cfg.raft_election_range_ms().1,
        snapshot_every: cfg.snapshot_every,
        logs_kept_after_snapshot: cfg.raft_log_retained,
        extended_types: cfg.extended_types,
        container_check_ms: cfg.container_check_ms,
        max_batch: cfg.max_batch,
        snapshot_dir: Some(cfg.data_dir.join(RAFT_SNAPSHOT_DIR)),
        ..RaftConfig::default()
    };
    let tcp = TcpConfig {
        // Dial peers from this member's own address (see `TcpConfig::source_ip`).
        source_ip: me
            .and_then(|m| m.host.parse::<std::net::IpAddr>().ok())
            .filter(|ip| !ip.is_unspecified()),
        ..TcpConfig::default()
    };
    let transport = TcpTransport::new(cfg.server_id, tcp.clone());
    let node = RaftBackend::open(rcfg, engine, transport).await?;
    if let Some(l) = listener {
        roster_raft::tcp::serve(l, Arc::downgrade(&node), tcp);
    }
    let initialized = node
        .raft()
        .is_initialized()
        .await
        .map_err(|e| StartError::Config(format!("raft: {e}")))?;
    let voter = me.is_none_or(|m| !m.observer);
    if !initialized && voter {
        // Every voter of a brand-new cluster proposes the same configuration (openraft allows
        // that); learners wait to be added. A member whose disk was wiped does the same and is
        // then brought back by the leader (log reversion allowed, catch-up by snapshot).
        let voters: BTreeMap<u64, String> = if members.is_empty() {
            BTreeMap::from([(cfg.server_id, addr)])
        } else {
            members
                .iter()
                .filter(|m| !m.observer)
                .map(|m| (m.id, format!("{}:{}", m.host, m.quorum_port)))
                .collect()
        };
        tracing::info!(?voters, "pristine store: forming the raft cluster");
        if let Err(e) = node.initialize(voters).await {
            tracing::warn!(error = %e, "raft initialize");
        }
        let learners: Vec<(u64, String)> = members
            .iter()
            .filter(|m| m.observer)
            .map(|m| (m.id, format!("{}:{}", m.host, m.quorum_port)))
            .collect();
        if !learners.is_empty() {
            tokio::spawn(add_configured_learners(Arc::downgrade(&node), learners));
        }
    }
    Ok(node)
}

/// Bring the `:observer` members of a new cluster in as learners (through the leader).
async fn add_configured_learners(node: std::sync::Weak<RaftBackend>, learners: Vec<(u64, String)>) {
    for (id, addr) in learners {
        loop {
            let Some(n) = node.upgrade() else { return };
            if n.is_shut_down() {
                return;
            }
            if n.members().learners.contains_key(&id) {
                break;
            }
            match n.add_learner(id, addr.clone()).await {
                Ok(()) => {
                    tracing::info!(learner = id, %addr, "configured learner added");
                    break;
                }
                Err(e) => {
                    tracing::info!(learner = id, error = %e, "adding the configured learner; retrying");
                }
            }
            drop(n);
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        }
    }
}
