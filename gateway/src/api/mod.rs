//! Roster's own API — registry, leases, config, locks and election, watch — as services on the
//! tree and sessions (so whatever it writes is visible to ZooKeeper clients, and it runs on any
//! backend), and their HTTP front end (`http`). The gRPC front end calls the same services.

pub mod config;
pub mod error;
pub mod feed;
pub mod health;
pub mod http;
pub mod layouts;
pub mod lease;
pub mod lock;
pub mod registry;
pub mod store;
pub mod watch;

use feed::Feed;
use roster_core::backend::Backend;
use std::sync::Arc;

/// Changes kept for clients resuming a stream from a revision.
pub const FEED_HISTORY: usize = 100_000;

/// Every native service, shared by the HTTP and gRPC front ends.
pub struct Api {
    pub store: store::Store,
    pub feed: Arc<Feed>,
    pub leases: lease::Leases,
    pub registry: Arc<registry::Registry>,
    pub configs: config::Configs,
    pub locks: lock::Locks,
}

impl Api {
    pub fn new(backend: Arc<dyn Backend>, server_id: u64, config_history: usize) -> Arc<Api> {
        let store = store::Store::new(backend.clone());
        let feed = Feed::start(&backend, FEED_HISTORY);
        Arc::new(Api {
            leases: lease::Leases::new(store.clone()),
            registry: Arc::new(registry::Registry::new(
                store.clone(),
                feed.clone(),
                server_id,
            )),
            configs: config::Configs::new(store.clone(), feed.clone(), config_history),
            locks: lock::Locks::new(store.clone(), feed.clone()),
            store,
            feed,
        })
    }

    /// Refresh the registry gauges (called on each scrape).
    pub fn update_gauges(&self) {
        let (services, instances, healthy) = self.store.read(registry::totals);
        metrics::gauge!("roster_registry_services").set(services as f64);
        metrics::gauge!("roster_registry_instances", "healthy" => "true").set(healthy as f64);
        metrics::gauge!("roster_registry_instances", "healthy" => "false")
            .set((instances - healthy) as f64);
    }

    /// Start the background work: health probes of the instances this member registered.
    pub fn start_probes(&self, server_id: u64) {
        health::start(self.store.clone(), self.registry.clone(), server_id);
    }

    /// Start importing the Curator and Dubbo ZooKeeper layouts and mirroring the registry into
    /// them (`layouts`).
    pub fn start_layouts(&self) {
        layouts::start(self.store.clone(), self.feed.clone());
    }
}
