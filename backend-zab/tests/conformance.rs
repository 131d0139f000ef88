//! The backend conformance suite (`roster_core::conformance`) against the standalone ZAB server
//! on the in-memory engine, and proof that its checks fail against deliberately wrong wrappers of
//! it. (The ensemble's shell binds TCP ports and has no shutdown yet, so in-process ensembles are
//! covered by `ensemble_sim.rs` instead.)

use roster_core::backend::Backend;
use roster_core::conformance::flawed::{Flaw, FlawedFactory};
use roster_core::conformance::{self, Check, Factory};
use roster_core::storage::{Engine, MemEngine};
use roster_zab::{SnapshotPolicy, Standalone, ZabConfig};
use std::sync::Arc;

struct StandaloneFactory {
    engine: Option<Arc<MemEngine>>,
    node: Option<Arc<Standalone>>,
}

fn cfg() -> ZabConfig {
    ZabConfig {
        tick_ms: 100,
        container_check_ms: 50,
        snapshot: SnapshotPolicy {
            every: 50,
            ..SnapshotPolicy::default()
        },
        ..ZabConfig::default()
    }
}

impl StandaloneFactory {
    fn new() -> Self {
        StandaloneFactory {
            engine: None,
            node: None,
        }
    }

    fn open(&mut self) -> Vec<Arc<dyn Backend>> {
        let engine: Arc<dyn Engine> = self.engine.clone().expect("an engine");
        let node = Standalone::open(engine, cfg()).expect("open standalone");
        self.node = Some(node.clone());
        vec![node]
    }
}

#[async_trait::async_trait]
impl Factory for StandaloneFactory {
    fn name(&self) -> String {
        "zab standalone".into()
    }
    async fn start(&mut self) -> Vec<Arc<dyn Backend>> {
        self.engine = Some(Arc::new(MemEngine::default()));
        self.open()
    }
    async fn restart(&mut self) -> Vec<Arc<dyn Backend>> {
        if let Some(n) = self.node.take() {
            n.close();
        }
        self.open()
    }
    async fn stop(&mut self) {
        if let Some(n) = self.node.take() {
            n.close();
        }
        self.engine = None;
    }
    fn tick_ms(&self) -> u64 {
        cfg().tick_ms
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standalone_conforms() {
    let report = conformance::run(&mut StandaloneFactory::new(), Check::ALL).await;
    eprintln!("{report}");
    report.assert_passed();
}

/// Each flaw is caught by the check written for it, so those checks can fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_suite_catches_deliberately_wrong_backends() {
    for (flaw, check) in [
        (Flaw::IgnoresTouch, Check::TouchKeepsAlive),
        (Flaw::ClaimsNoMultiButRunsIt, Check::Capabilities),
        (Flaw::SilentAppliedStream, Check::WatchesAndAppliedOrder),
        (Flaw::BarrierDoesNotWait, Check::Barrier),
        (Flaw::WeakensConditionalWrites, Check::ConditionalWrites),
        (Flaw::WeakensConditionalWrites, Check::Capabilities),
        (Flaw::IgnoresSessionClose, Check::EphemeralsOnClose),
        (Flaw::ForgetsOnRestart, Check::Recovery),
    ] {
        // A flaw that shows only under a race (a barrier that does not wait is seen only when
        // a write queued before it is still unapplied when it answers) gets a few runs: on a
        // loaded machine one run of the Barrier check once missed it (the full suite, session 13).
        let mut report = None;
        for _ in 0..5 {
            let mut f = FlawedFactory {
                inner: StandaloneFactory::new(),
                flaw,
            };
            let r = conformance::run(&mut f, &[check]).await;
            let caught = r.failed(check);
            report = Some(r);
            if caught {
                break;
            }
        }
        let report = report.expect("ran");
        assert!(
            report.failed(check),
            "{check:?} did not catch {flaw:?} in 5 runs:\n{report}"
        );
        eprintln!("{report}");
    }
}
