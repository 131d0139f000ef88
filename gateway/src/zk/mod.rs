//! The ZooKeeper front end: jute codec (`jute`, `proto`, `frame`), connections (`conn`), request
//! handling (`requests`), the connection registry and four-letter words.

pub mod conn;
pub mod fourlw;
pub mod frame;
pub mod jute;
pub mod proto;
pub mod registry;
pub mod requests;

use crate::config::Config;
use registry::Registry;
use roster_core::backend::Backend;
use roster_core::txn::TxnOp;
use std::sync::Arc;
use std::time::Instant;
use tokio::net::TcpListener;

/// Everything a connection needs.
pub struct ZkServer {
    pub cfg: Arc<Config>,
    pub backend: Arc<dyn Backend>,
    pub registry: Registry,
    pub started: Instant,
    /// Metric handles of the request path.
    pub op_metrics: requests::OpMetrics,
}

impl ZkServer {
    pub fn new(cfg: Arc<Config>, backend: Arc<dyn Backend>) -> Arc<ZkServer> {
        Arc::new(ZkServer {
            cfg,
            backend,
            registry: Registry::default(),
            started: Instant::now(),
            op_metrics: requests::OpMetrics::default(),
        })
    }

    /// Accept connections forever; also closes the connections of sessions that end.
    pub async fn serve(self: Arc<Self>, listener: TcpListener) {
        let me = self.clone();
        tokio::spawn(async move { me.follow_sessions().await });
        loop {
            match listener.accept().await {
                Ok((stream, peer)) => {
                    let me = self.clone();
                    tokio::spawn(conn::serve(me, stream, peer));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            }
        }
    }

    async fn follow_sessions(self: Arc<Self>) {
        let mut rx = self.backend.applied();
        loop {
            match rx.recv().await {
                Ok(txn) => {
                    if let TxnOp::CloseSession = txn.op {
                        self.registry.session_closed(txn.session);
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(
                        missed = n,
                        "session follower lagged; re-checking connections"
                    );
                    let tree = self.backend.tree();
                    for c in self.registry.connections() {
                        let sid = c.session.load(std::sync::atomic::Ordering::Relaxed);
                        if sid != 0 && !tree.read().sessions().contains_key(&sid) {
                            self.registry.session_closed(sid);
                        }
                    }
                }
                Err(_) => return,
            }
        }
    }
}
