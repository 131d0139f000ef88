//! Logging and metrics setup: `tracing` to stderr (text or JSON), and the Prometheus recorder
//! behind the `metrics` facade, rendered on the HTTP port (no second HTTP server).

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use roster_core::backend::Backend;
use std::sync::OnceLock;
use std::time::Duration;

/// Install the log subscriber (once).
pub fn init_logging(filter: &str, format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(filter));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if format == "json" {
        b.json().try_init()
    } else {
        b.try_init()
    };
}

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
static PROCESS: OnceLock<metrics_process::Collector> = OnceLock::new();

/// How often histogram samples are folded into their buckets. The exporter keeps every sample
/// recorded since the last upkeep (8 bytes each, in 64-sample blocks): at 60 000 requests/s and
/// two histograms per request, every 5 s held ~5 MB under load; at 270 000 reads/s every
/// second still held 2.5 MB (heaptrack). Folding costs per sample, not per upkeep, so upkeeping
/// four times a second costs nothing more and holds a quarter.
const UPKEEP_EVERY: Duration = Duration::from_millis(250);

/// Install the Prometheus recorder (once per process) and start its upkeep.
pub fn init_metrics() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let buckets = [
                0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                1.0, 2.5, 5.0,
            ];
            // Elections and snapshots can take longer than 5 s (an election may take
            // init_limit × tick = 20 s): their buckets reach a minute. Full-name matchers win
            // over the suffix.
            let long = [
                0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0,
            ];
            let batch = [
                1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 4096.0,
            ];
            let mut builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &buckets)
                .expect("static buckets are valid")
                // Transactions per group commit: a histogram, so it aggregates across members.
                .set_buckets_for_metric(
                    Matcher::Full("roster_backend_commit_batch_txns".into()),
                    &batch,
                )
                .expect("static buckets are valid");
            for name in [
                "roster_zab_election_seconds",
                "roster_backend_snapshot_seconds",
                "roster_raft_snapshot_install_seconds",
            ] {
                builder = builder
                    .set_buckets_for_metric(Matcher::Full(name.into()), &long)
                    .expect("static buckets are valid");
            }
            let handle = builder
                .install_recorder()
                .expect("the metrics recorder is installed once");
            describe();
            PROCESS
                .get_or_init(metrics_process::Collector::default)
                .describe();
            let h = handle.clone();
            std::thread::Builder::new()
                .name("metrics-upkeep".into())
                .spawn(move || {
                    loop {
                        std::thread::sleep(UPKEEP_EVERY);
                        h.run_upkeep();
                    }
                })
                .expect("spawn metrics upkeep");
            handle
        })
        .clone()
}

fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        "roster_http_requests_total",
        "HTTP requests answered, by method, route template and status class"
    );
    describe_histogram!(
        "roster_http_request_duration_seconds",
        Unit::Seconds,
        "HTTP request handling time by method and route template (streams: until the stream opens)"
    );
    describe_counter!(
        "roster_http_rate_limited_total",
        "HTTP requests refused with 429 by the per-client-IP rate limit"
    );
    describe_gauge!(
        "roster_api_streams",
        "Open native API streams by kind (subscribe, observe, watch)"
    );
    describe_counter!(
        "roster_api_leases_granted_total",
        "Leases granted through the native API"
    );
    describe_counter!(
        "roster_registry_registrations_total",
        "Instance registrations (and re-registrations) by protocol"
    );
    describe_counter!(
        "roster_registry_deregistrations_total",
        "Instances deregistered"
    );
    describe_counter!(
        "roster_registry_protect_threshold_hits_total",
        "Healthy-only queries answered with every instance because the protect threshold was reached"
    );
    describe_counter!(
        "roster_registry_probes_total",
        "Server-side health probes by type and result"
    );
    describe_counter!(
        "roster_registry_layout_writes_total",
        "Writes keeping the Curator and Dubbo ZooKeeper layouts and the registry in step, by layout, direction and result"
    );
    describe_counter!(
        "roster_registry_layout_skipped_total",
        "Nodes in the Curator or Dubbo layouts that are not instances (skipped), by layout"
    );
    describe_gauge!(
        "roster_registry_probed_instances",
        "Instances this member probes"
    );
    describe_gauge!(
        "roster_registry_services",
        "Services in the registry (every namespace and group)"
    );
    describe_gauge!(
        "roster_registry_instances",
        "Instances in the registry, by health (healthy = healthy and enabled)"
    );
    describe_counter!(
        "roster_config_writes_total",
        "Config changes through the API by op (put, delete, rollback)"
    );
    describe_counter!(
        "roster_lock_acquired_total",
        "Locks, permits and leaderships acquired, by recipe"
    );
    describe_counter!(
        "roster_lock_timeouts_total",
        "Acquires that gave up (try or timeout), by recipe"
    );
    describe_counter!(
        "roster_requests_total",
        "Requests by protocol, operation and result"
    );
    describe_histogram!(
        "roster_request_duration_seconds",
        Unit::Seconds,
        "Request latency by protocol and operation"
    );
    describe_gauge!("roster_connections", "Open client connections by protocol");
    describe_counter!(
        "roster_connections_rejected_total",
        "Connections refused (per-IP limit)"
    );
    describe_counter!(
        "roster_zk_bad_frames_total",
        "ZooKeeper frames rejected (too large or truncated)"
    );
    describe_counter!(
        "roster_zk_slow_clients_total",
        "ZooKeeper connections closed because watch events piled up for a client that did not read them"
    );
    describe_counter!(
        "roster_zk_bad_requests_total",
        "ZooKeeper requests that could not be decoded"
    );
    describe_counter!(
        "roster_zk_four_letter_words_total",
        "Four-letter words answered"
    );
    describe_gauge!("roster_sessions", "Live sessions");
    describe_counter!(
        "roster_sessions_expired_total",
        "Sessions expired by the server"
    );
    describe_gauge!("roster_znodes", "Nodes in the tree");
    describe_gauge!("roster_ephemeral_nodes", "Ephemeral nodes in the tree");
    describe_gauge!("roster_watches", "Watches held on this node");
    describe_gauge!(
        "roster_data_bytes",
        "Approximate bytes of paths and data in the tree"
    );
    describe_histogram!(
        "roster_storage_fsync_seconds",
        Unit::Seconds,
        "Duration of one synced log write (group commit)"
    );
    describe_histogram!("roster_backend_commit_batch_txns", "Transactions per fsync");
    describe_histogram!(
        "roster_backend_commit_seconds",
        Unit::Seconds,
        "From prep to applied, per transaction"
    );
    describe_histogram!(
        "roster_backend_snapshot_seconds",
        Unit::Seconds,
        "Snapshot duration"
    );
    describe_counter!("roster_backend_txns_total", "Transactions committed");
    describe_gauge!("roster_backend_last_zxid", "Last applied zxid");
    describe_gauge!("roster_backend_epoch", "Current epoch");
    describe_gauge!(
        "roster_backend_committed_zxid",
        "Last committed zxid this member knows of (zab and raft apply on commit: the applied zxid)"
    );
    describe_gauge!(
        "roster_backend_voters",
        "Voting members configured (0 on ap, which has no quorum)"
    );
    describe_gauge!(
        "roster_backend_synced_followers",
        "On the leader: voting followers in sync with it (0 elsewhere)"
    );
    describe_gauge!(
        "roster_backend_leader_id",
        "Server id of the leader this member follows (0: none known)"
    );
    describe_counter!(
        "roster_backend_elections_total",
        "Leader elections this member has gone through since it started"
    );
    describe_gauge!(
        "roster_build_info",
        "Always 1; labels carry the version and the backend"
    );
    describe_gauge!(
        "roster_backend_outstanding",
        "Writes prepared but not yet applied"
    );
    describe_gauge!("roster_backend_ready", "1 if the backend serves requests");
    describe_gauge!(
        "roster_backend_role",
        "1 for this member's current role, 0 for the others"
    );
    describe_counter!(
        "roster_zab_elections_total",
        "Leader elections this member entered"
    );
    describe_histogram!(
        "roster_zab_election_seconds",
        Unit::Seconds,
        "From LOOKING to serving again (leader active or follower up to date)"
    );
    describe_gauge!("roster_zab_epoch", "Current ZAB epoch");
    describe_gauge!(
        "roster_zab_last_logged_zxid",
        "Last zxid in this member's log"
    );
    describe_gauge!(
        "roster_zab_synced_followers",
        "On the leader: voting followers in sync"
    );
    describe_gauge!(
        "roster_zab_synced_observers",
        "On the leader: observers in sync"
    );
    describe_gauge!(
        "roster_zab_follower_lag_txns",
        "On the leader: transactions each follower has not acknowledged"
    );
    describe_gauge!(
        "roster_raft_term",
        "Current Raft term (also roster_backend_epoch)"
    );
    describe_gauge!(
        "roster_raft_leader_id",
        "Leader this member knows (0: none)"
    );
    describe_gauge!(
        "roster_raft_commit_index",
        "Last log index this member knows committed"
    );
    describe_gauge!(
        "roster_raft_applied_index",
        "Last log index applied to this member's tree"
    );
    describe_gauge!(
        "roster_raft_last_log_index",
        "Last index in this member's log"
    );
    describe_gauge!(
        "roster_raft_replication_lag_entries",
        "On the leader: log entries each member has not matched (0 once it left)"
    );
    describe_counter!(
        "roster_raft_elections_total",
        "Leaders this member has seen elected (a new term's leader became known)"
    );
    describe_counter!(
        "roster_raft_candidacies_total",
        "Times this member stood for election"
    );
    describe_counter!(
        "roster_backend_snapshots_total",
        "Snapshots taken by this member"
    );
    describe_counter!(
        "roster_backend_snapshots_skipped_total",
        "Periodic snapshots skipped because the previous one was still being written (zab)"
    );
    describe_counter!(
        "roster_backend_snapshots_damaged_total",
        "Snapshot files that failed their check at recovery and were skipped for an older one (zab)"
    );
    describe_counter!(
        "roster_backend_snapshot_bytes_total",
        Unit::Bytes,
        "Snapshot bytes sent to or received from another member, counted as they go"
    );
    describe_counter!(
        "roster_raft_snapshots_installed_total",
        "Snapshots received from the leader and installed"
    );
    describe_histogram!(
        "roster_raft_snapshot_install_seconds",
        Unit::Seconds,
        "Duration of installing a snapshot from the leader"
    );
    describe_gauge!(
        "roster_raft_peer_connected",
        "1 while the link to a peer's raft port is up"
    );
    describe_counter!(
        "roster_raft_peer_connects_total",
        "Links dialled to a peer's raft port"
    );
    describe_counter!(
        "roster_raft_bad_frames_total",
        "Raft peer frames refused (over the limit, undecodable, bad hello)"
    );
    describe_gauge!(
        "roster_zab_peer_connected",
        "1 while the link to a member on its quorum or election port is up"
    );
    describe_counter!(
        "roster_zab_peer_connects_total",
        "Links to a member established (dialled or accepted), by port"
    );
    describe_counter!(
        "roster_zab_syncs_total",
        "Followers synchronised, by kind (diff, trunc, snap)"
    );
    describe_counter!(
        "roster_nacos_grpc_requests_total",
        "Nacos 2.x unary gRPC requests answered, by request type and result"
    );
    describe_histogram!(
        "roster_nacos_grpc_request_duration_seconds",
        "Time to answer a Nacos 2.x unary gRPC request, by request type"
    );
    describe_gauge!(
        "roster_nacos_grpc_connections",
        "Nacos 2.x connections set up on their bi-stream on this member"
    );
    describe_counter!(
        "roster_nacos_grpc_pushes_total",
        "Server requests pushed on Nacos bi-streams, by push type"
    );
    describe_counter!(
        "roster_nacos_grpc_push_timeouts_total",
        "Nacos streams dropped because the client took no push for 10 s"
    );
    describe_counter!(
        "roster_nacos_auth_refused_total",
        "Nacos calls refused for a missing, invalid or expired token, and failed logins, by protocol"
    );
    describe_counter!(
        "roster_eureka_requests_total",
        "Eureka REST requests answered, by operation and status class"
    );
    describe_gauge!(
        "roster_eureka_self_preservation",
        "1 while Eureka self-preservation keeps silent leases alive on this member"
    );
    describe_gauge!(
        "roster_eureka_renews_last_minute",
        "Eureka renews this member received in the last minute"
    );
    describe_gauge!(
        "roster_eureka_renew_threshold",
        "Eureka renews per minute below which self-preservation turns on"
    );
    describe_gauge!(
        "roster_eureka_leases",
        "Eureka instance leases held by this member"
    );
    describe_counter!(
        "roster_eureka_preserved_renewals_total",
        "Silent Eureka leases kept alive by self-preservation"
    );
}

/// Refresh gauges read from state (called on each scrape).
pub fn update_gauges(backend: &dyn Backend) {
    if let Some(p) = PROCESS.get() {
        p.collect();
    }
    let s = backend.status();
    let tree = backend.tree();
    let t = tree.read();
    let (watches, _, _) = t.watches().lock().counts();
    // Only `backend` as a label: it never changes in a process, so no stale series are left
    // behind when the role changes (the role is `roster_backend_role`).
    let labels = [("backend", s.backend)];
    for role in ["standalone", "leader", "follower", "observer", "looking"] {
        let v = if role == s.role.as_str() { 1.0 } else { 0.0 };
        metrics::gauge!("roster_backend_role", "role" => role).set(v);
    }
    metrics::gauge!("roster_sessions").set(t.sessions().len() as f64);
    metrics::gauge!("roster_znodes").set(t.node_count() as f64);
    metrics::gauge!("roster_ephemeral_nodes").set(t.ephemeral_count() as f64);
    metrics::gauge!("roster_watches").set(watches as f64);
    metrics::gauge!("roster_data_bytes").set(t.data_size() as f64);
    metrics::gauge!("roster_backend_epoch", &labels).set(s.epoch as f64);
    // Replication-agnostic views of what each backend also reports in its own terms (read from
    // its status at scrape time, the one place they are set), so one
    // dashboard and one set of alerts serve zab and raft clusters alike.
    metrics::gauge!("roster_backend_last_zxid").set(s.last_zxid as f64);
    metrics::gauge!("roster_backend_committed_zxid").set(s.committed_zxid as f64);
    metrics::gauge!("roster_backend_voters").set(s.voters as f64);
    metrics::gauge!("roster_backend_synced_followers").set(s.synced_followers.unwrap_or(0) as f64);
    metrics::gauge!("roster_backend_leader_id").set(s.leader.unwrap_or(0) as f64);
    metrics::counter!("roster_backend_elections_total").absolute(s.elections);
    metrics::gauge!("roster_build_info", "version" => env!("CARGO_PKG_VERSION"), "backend" => s.backend).set(1.0);
    metrics::gauge!("roster_backend_outstanding").set(s.outstanding as f64);
    metrics::gauge!("roster_backend_ready", &labels).set(if s.ready { 1.0 } else { 0.0 });
}
