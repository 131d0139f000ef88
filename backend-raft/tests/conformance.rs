//! The backend conformance suite (`roster_core::conformance`) against Raft: one member, and
//! three members joined by the in-process `Router` (writes, touches and barriers through
//! followers are forwarded to the leader).

mod common;

use common::Cluster;
use roster_core::backend::Backend;
use roster_core::conformance::{self, Check, Factory};
use std::sync::Arc;

struct RaftFactory {
    size: u64,
    cluster: Option<Cluster>,
}

impl RaftFactory {
    fn new(size: u64) -> Self {
        RaftFactory {
            size,
            cluster: None,
        }
    }

    fn members(&self) -> Vec<Arc<dyn Backend>> {
        let c = self.cluster.as_ref().expect("started");
        c.nodes()
            .into_iter()
            .map(|n| n as Arc<dyn Backend>)
            .collect()
    }
}

#[async_trait::async_trait]
impl Factory for RaftFactory {
    fn name(&self) -> String {
        format!("raft, {} member(s)", self.size)
    }
    async fn start(&mut self) -> Vec<Arc<dyn Backend>> {
        self.cluster = Some(Cluster::start(self.size).await);
        self.members()
    }
    async fn restart(&mut self) -> Vec<Arc<dyn Backend>> {
        let c = self.cluster.as_mut().expect("started");
        let mut engines = Vec::new();
        for id in 1..=self.size {
            engines.push((id, c.stop(id).await));
        }
        for (id, e) in engines {
            c.open(id, e).await;
        }
        c.wait_leader(20).await;
        self.members()
    }
    async fn stop(&mut self) {
        if let Some(c) = self.cluster.take() {
            c.shutdown().await;
        }
    }
    fn tick_ms(&self) -> u64 {
        common::cfg(1).tick_ms
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_single_member_conforms() {
    let report = conformance::run(&mut RaftFactory::new(1), Check::ALL).await;
    eprintln!("{report}");
    report.assert_passed();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_members_conform() {
    let report = conformance::run(&mut RaftFactory::new(3), Check::ALL).await;
    eprintln!("{report}");
    report.assert_passed();
}
