//! Configuration: defaults, then `roster.toml` (or `--config FILE`), then `ROSTER_*` environment
//! variables, then command-line flags — layered into one typed `Config`. Every key is listed in
//! `docs/configuration.md` and in `roster --help`.

use clap::Parser;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Roster's settings. Keys are flat; the environment variable of `zk_listen` is `ROSTER_ZK_LISTEN`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Directory for the RocksDB store (epochs; the raft log) and, beside it, zab's log and
    /// snapshot files (`zab-log/`, `zab-snapshots/`) or raft's snapshot (`raft-snapshots/`).
    pub data_dir: PathBuf,
    /// This server's id (the high byte of session ids).
    pub server_id: u64,
    /// Consistency backend: `zab` or `raft` (CP), or `ap` (gossip, always writable; docs/ap.md).
    pub backend: String,
    /// Ensemble members, ZooKeeper style: `N=host:quorumPort:electionPort[:observer]` (also
    /// accepted with a `server.` prefix). Empty: standalone. With `raft` the quorum port is the
    /// raft port, the election port is unused and `:observer` makes a learner. With `ap` they
    /// are the seeds, and `host:quorumPort` is each member's gossip (UDP) and data (TCP) address.
    pub servers: Vec<String>,
    /// Raft: leader heartbeat interval (ms).
    pub raft_heartbeat_ms: u64,
    /// Raft: a follower that hears no leader for a random time in [this, 2 × this] ms starts an
    /// election.
    pub raft_election_timeout_ms: u64,
    /// Raft: log entries kept behind a snapshot, so a member that lags by less catches up from
    /// the log instead of receiving a whole snapshot.
    pub raft_log_retained: u64,
    /// Ticks a new leader may take to synchronise a quorum (ZooKeeper `initLimit`).
    pub init_limit: u64,
    /// Ticks a member may go without hearing from its leader, or a leader from its quorum
    /// (ZooKeeper `syncLimit`).
    pub sync_limit: u64,
    /// ZooKeeper client port.
    pub zk_listen: String,
    /// HTTP port: the native API, /metrics, /healthz, /readyz.
    pub http_listen: String,
    /// gRPC port: the native API, grpc.health.v1, reflection. Empty (the default): the HTTP
    /// address with its port + 1000 (`0.0.0.0:9848`), where Nacos 2.x clients look for it.
    pub grpc_listen: String,
    /// Largest gRPC request message accepted (bytes); larger ones are refused (OUT_OF_RANGE).
    pub grpc_max_message: usize,
    /// ZooKeeper tickTime (ms): session-expiry granularity.
    pub tick_ms: u64,
    /// Smallest session timeout granted (ms); 0 = 2 × tick_ms.
    pub min_session_timeout_ms: u64,
    /// Largest session timeout granted (ms); 0 = 20 × tick_ms.
    pub max_session_timeout_ms: u64,
    /// `jute.maxbuffer`: largest request frame accepted (bytes).
    pub max_buffer: usize,
    /// Four-letter words answered; others get ZooKeeper's "not in the whitelist" reply. `*` = all.
    pub four_letter_words: Vec<String>,
    /// Most connections from one IP address (ZooKeeper `maxClientCnxns`); 0 = unlimited.
    pub max_client_connections: usize,
    /// Close a connection that has not completed the handshake within this time (ms).
    pub handshake_timeout_ms: u64,
    /// Most requests in flight per connection before reading pauses.
    pub max_outstanding_per_connection: usize,
    /// Accept TTL nodes (`zookeeper.extendedTypesEnabled`).
    pub extended_types: bool,
    /// Super user digest, `user:BASE64(SHA1(user:password))` (`zookeeper.DigestAuthenticationProvider.superDigest`).
    pub super_digest: Option<String>,
    /// Take a snapshot after this many transactions...
    pub snapshot_every: u64,
    /// ... once the log written since the last snapshot is at least this many times its size
    /// (zab; 0: the count alone, as ZooKeeper's `snapCount`). At the latest after 10 ×
    /// `snapshot_every` transactions.
    pub snapshot_log_ratio: f64,
    /// Snapshots kept on disk.
    pub snapshots_retained: usize,
    /// Most transactions per fsync (group commit).
    pub max_batch: usize,
    /// Interval of the container / TTL node sweep (ms).
    pub container_check_ms: u64,
    /// Log filter (tracing `EnvFilter` syntax), e.g. `info` or `roster=debug`.
    pub log_level: String,
    /// Log format: `text` or `json`.
    pub log_format: String,
    /// Largest HTTP request body accepted (bytes); larger bodies get 413.
    pub http_max_body: usize,
    /// Config history entries kept per item (native API and Nacos).
    pub config_history: usize,
    /// HTTP requests per second allowed from one client IP (bursts of twice that); 0 = no limit.
    pub http_rate_limit: u32,
    /// AP: how long a member must be dead before peers remove its ephemeral nodes (ms).
    pub ap_grace_ms: u64,
    /// AP: self-preservation keeps dead members' ephemerals when more than this share (0..1) of
    /// all ephemeral nodes would vanish at once.
    pub ap_self_preservation_share: f64,
    /// AP: delete tombstones are forgotten after this long (ms); a member away longer may bring
    /// deleted nodes back.
    pub ap_tombstone_ttl_ms: u64,
    /// AP: interval of the anti-entropy digest exchange (ms).
    pub ap_anti_entropy_ms: u64,
    /// AP: failure-detector probe interval (ms).
    pub ap_probe_ms: u64,
    /// Nacos auth: require an access token (from `/nacos/v1/auth/login`) on every Nacos call,
    /// HTTP and gRPC; refused calls get 403 as Nacos answers them.
    pub nacos_auth_enabled: bool,
    /// Nacos auth users, `name:password` each.
    pub nacos_auth_users: Vec<String>,
    /// Lifetime of a Nacos access token (seconds).
    pub nacos_auth_token_ttl_s: u64,
    /// Key that signs Nacos access tokens; give every member the same one so a token from one
    /// is good on all. Empty: a random key per process.
    pub nacos_auth_secret: String,
    /// Session timeout of a Nacos 2.x gRPC connection (ms): how long its ephemeral instances
    /// outlive a member that died without closing the stream.
    pub nacos_grpc_session_timeout_ms: u64,
    /// AP: a suspected member that does not refute within this time is declared dead (ms).
    pub ap_suspect_ms: u64,
    /// Registry: import Curator (`/services`) and Dubbo (`/dubbo`) ZooKeeper layouts as instances
    /// and mirror the registry into them (docs/registry-model.md).
    pub registry_layouts: bool,
    /// Eureka: the namespace Eureka clients register into and read.
    pub eureka_namespace: String,
    /// Eureka: the group Eureka clients register into and read.
    pub eureka_group: String,
    /// Eureka: lease duration (s) when a client sends no `leaseInfo.durationInSecs`.
    pub eureka_lease_duration_s: u64,
    /// Eureka: renewal interval (s) assumed when a client sends no `leaseInfo.renewalIntervalInSecs`.
    pub eureka_renewal_interval_s: u64,
    /// Eureka: keep silent leases alive while renews fall below the threshold (self-preservation).
    pub eureka_self_preservation: bool,
    /// Eureka: share (0..1) of expected renews per minute below which self-preservation is on.
    pub eureka_renewal_percent_threshold: f64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("./data"),
            server_id: 1,
            backend: "zab".into(),
            servers: Vec::new(),
            raft_heartbeat_ms: 100,
            raft_election_timeout_ms: 1000,
            raft_log_retained: 10_000,
            init_limit: 10,
            sync_limit: 5,
            zk_listen: "0.0.0.0:2181".into(),
            http_listen: "0.0.0.0:8848".into(),
            grpc_listen: String::new(),
            grpc_max_message: 4 * 1024 * 1024,
            tick_ms: 2000,
            min_session_timeout_ms: 0,
            max_session_timeout_ms: 0,
            max_buffer: 0xfffff,
            four_letter_words: ["srvr", "ruok", "mntr", "isro"].map(String::from).to_vec(),
            max_client_connections: 60,
            handshake_timeout_ms: 10_000,
            max_outstanding_per_connection: 1000,
            extended_types: true,
            super_digest: None,
            snapshot_every: 100_000,
            snapshot_log_ratio: 1.0,
            snapshots_retained: 3,
            max_batch: 1024,
            container_check_ms: 5_000,
            log_level: "info".into(),
            log_format: "text".into(),
            http_max_body: 4 * 1024 * 1024,
            config_history: 100,
            http_rate_limit: 0,
            ap_grace_ms: 30_000,
            ap_self_preservation_share: 0.5,
            ap_tombstone_ttl_ms: 3_600_000,
            ap_anti_entropy_ms: 1000,
            ap_probe_ms: 500,
            ap_suspect_ms: 3000,
            nacos_auth_enabled: false,
            nacos_auth_users: Vec::new(),
            nacos_auth_token_ttl_s: 18_000,
            nacos_auth_secret: String::new(),
            nacos_grpc_session_timeout_ms: 20_000,
            registry_layouts: true,
            eureka_namespace: "public".into(),
            eureka_group: "DEFAULT_GROUP".into(),
            eureka_lease_duration_s: 90,
            eureka_renewal_interval_s: 30,
            eureka_self_preservation: true,
            eureka_renewal_percent_threshold: 0.85,
        }
    }
}

impl Config {
    /// openraft's election timeout range `[min, max)` for `raft_election_timeout_ms` = T.
    ///
    /// openraft starts an election only once the leader's lease has run out (the lease is its
    /// `election_timeout_max`, renewed by every heartbeat) *and* a random election timeout in
    /// `[min, max)` has passed after that, and a member refuses to vote while its lease runs: a
    /// follower waits `max + [min, max)` after the leader's last word. `[T/3, 2T/3)` makes that
    /// wait T to 4T/3 — T is the silence before an election, as ZooKeeper's and etcd's users
    /// read an election timeout. (Passing `[T, 2T)` as before made it 3T to 4T: a killed
    /// leader was replaced after 3–4 s with the default 1000.)
    pub fn raft_election_range_ms(&self) -> (u64, u64) {
        let t = self.raft_election_timeout_ms;
        (t / 3, t * 2 / 3)
    }

    /// Effective minimum session timeout.
    pub fn min_session_timeout(&self) -> u64 {
        if self.min_session_timeout_ms == 0 {
            2 * self.tick_ms
        } else {
            self.min_session_timeout_ms
        }
    }
    /// Effective maximum session timeout.
    pub fn max_session_timeout(&self) -> u64 {
        if self.max_session_timeout_ms == 0 {
            20 * self.tick_ms
        } else {
            self.max_session_timeout_ms
        }
    }
    /// The gRPC address: `grpc_listen`, or the HTTP address with its port + 1000 (port 0 stays
    /// 0: any free port).
    pub fn grpc_addr(&self) -> Result<String, ConfigError> {
        if !self.grpc_listen.is_empty() {
            return Ok(self.grpc_listen.clone());
        }
        let bad = || {
            ConfigError::Invalid(format!(
                "cannot derive grpc_listen from http_listen {:?} (port + 1000); set grpc_listen",
                self.http_listen
            ))
        };
        let (host, port) = self.http_listen.rsplit_once(':').ok_or_else(bad)?;
        let port: u16 = port.parse().map_err(|_| bad())?;
        let grpc = if port == 0 {
            0
        } else {
            port.checked_add(1000).ok_or_else(bad)?
        };
        Ok(format!("{host}:{grpc}"))
    }
    /// Is a four-letter word allowed?
    pub fn four_letter_allowed(&self, cmd: &str) -> bool {
        self.four_letter_words.iter().any(|w| w == "*" || w == cmd)
    }
}

/// Roster: a ZooKeeper-compatible coordination server. With no arguments it runs a standalone
/// node with data in ./data, ZooKeeper on :2181, HTTP (native API, /metrics, /healthz, /readyz) on
/// :8848 and gRPC (native API) on :9848.
///
/// Settings are layered: defaults, then the config file (roster.toml in the working directory, or
/// --config), then ROSTER_<KEY> environment variables (e.g. ROSTER_ZK_LISTEN), then these flags.
#[derive(Debug, Parser, Default)]
#[command(name = "roster", version, about, long_about)]
pub struct Cli {
    /// Config file (TOML). Default: ./roster.toml if present.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Print the effective configuration as TOML and exit.
    #[arg(long)]
    pub print_config: bool,
    /// Instead of serving, act as a client of a running server's native API.
    #[command(subcommand)]
    pub command: Option<crate::cli::Command>,
    /// Data directory [default: ./data]
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Server id [default: 1]
    #[arg(long)]
    pub server_id: Option<u64>,
    /// Consistency backend, zab, raft or ap [default: zab]
    #[arg(long)]
    pub backend: Option<String>,
    /// Ensemble members `N=host:quorumPort:electionPort[:observer]`, comma separated; with raft the quorum port is the raft port and `:observer` a learner [default: none, standalone]
    #[arg(long, value_delimiter = ',')]
    pub servers: Option<Vec<String>>,
    /// Raft heartbeat interval in ms [default: 100]
    #[arg(long)]
    pub raft_heartbeat_ms: Option<u64>,
    /// Raft election timeout in ms: a follower that hears nothing from its leader for between this and 4/3 of it starts an election (pre-vote first); more than 3 × the heartbeat [default: 1000]
    #[arg(long)]
    pub raft_election_timeout_ms: Option<u64>,
    /// Raft log entries kept behind a snapshot [default: 10000]
    #[arg(long)]
    pub raft_log_retained: Option<u64>,
    /// initLimit in ticks [default: 10]
    #[arg(long)]
    pub init_limit: Option<u64>,
    /// syncLimit in ticks [default: 5]
    #[arg(long)]
    pub sync_limit: Option<u64>,
    /// ZooKeeper client address [default: 0.0.0.0:2181]
    #[arg(long)]
    pub zk_listen: Option<String>,
    /// HTTP address: native API, /metrics, /healthz, /readyz [default: 0.0.0.0:8848]
    #[arg(long)]
    pub http_listen: Option<String>,
    /// gRPC address: native API, grpc.health.v1, reflection [default: the HTTP address with port + 1000, 0.0.0.0:9848]
    #[arg(long)]
    pub grpc_listen: Option<String>,
    /// Largest gRPC request message in bytes [default: 4194304]
    #[arg(long)]
    pub grpc_max_message: Option<usize>,
    /// tickTime in ms [default: 2000]
    #[arg(long)]
    pub tick_ms: Option<u64>,
    /// Minimum session timeout in ms [default: 2 × tick]
    #[arg(long)]
    pub min_session_timeout_ms: Option<u64>,
    /// Maximum session timeout in ms [default: 20 × tick]
    #[arg(long)]
    pub max_session_timeout_ms: Option<u64>,
    /// jute.maxbuffer: largest request frame in bytes [default: 1048575]
    #[arg(long)]
    pub max_buffer: Option<usize>,
    /// Allowed four-letter words, comma separated, `*` for all [default: srvr,ruok,mntr,isro]
    #[arg(long, value_delimiter = ',')]
    pub four_letter_words: Option<Vec<String>>,
    /// Most connections per client IP, 0 = unlimited [default: 60]
    #[arg(long)]
    pub max_client_connections: Option<usize>,
    /// Handshake timeout in ms [default: 10000]
    #[arg(long)]
    pub handshake_timeout_ms: Option<u64>,
    /// Requests in flight per connection before reading pauses [default: 1000]
    #[arg(long)]
    pub max_outstanding_per_connection: Option<usize>,
    /// Accept TTL nodes [default: true]
    #[arg(long)]
    pub extended_types: Option<bool>,
    /// Super user digest `user:BASE64(SHA1(user:password))` [default: none]
    #[arg(long)]
    pub super_digest: Option<String>,
    /// Transactions between snapshots [default: 100000]
    #[arg(long)]
    pub snapshot_every: Option<u64>,
    /// zab: snapshot only once the log since the last one is this many times its size (0: by
    /// count alone) [default: 1.0]
    #[arg(long)]
    pub snapshot_log_ratio: Option<f64>,
    /// Snapshots kept [default: 3]
    #[arg(long)]
    pub snapshots_retained: Option<usize>,
    /// Most transactions per fsync [default: 1024]
    #[arg(long)]
    pub max_batch: Option<usize>,
    /// Container/TTL sweep interval in ms [default: 5000]
    #[arg(long)]
    pub container_check_ms: Option<u64>,
    /// Log filter [default: info]
    #[arg(long)]
    pub log_level: Option<String>,
    /// Log format, text or json [default: text]
    #[arg(long)]
    pub log_format: Option<String>,
    /// Largest HTTP request body in bytes [default: 4194304]
    #[arg(long)]
    pub http_max_body: Option<usize>,
    /// Config history entries kept per item [default: 100]
    #[arg(long)]
    pub config_history: Option<usize>,
    /// HTTP requests per second per client IP, 0 = unlimited [default: 0]
    #[arg(long)]
    pub http_rate_limit: Option<u32>,
    /// AP: ms a member stays dead before its ephemerals are removed [default: 30000]
    #[arg(long)]
    pub ap_grace_ms: Option<u64>,
    /// AP: largest share of all ephemerals removed at once before self-preservation [default: 0.5]
    #[arg(long)]
    pub ap_self_preservation_share: Option<f64>,
    /// AP: ms before delete tombstones are forgotten [default: 3600000]
    #[arg(long)]
    pub ap_tombstone_ttl_ms: Option<u64>,
    /// AP: anti-entropy digest interval in ms [default: 1000]
    #[arg(long)]
    pub ap_anti_entropy_ms: Option<u64>,
    /// AP: failure-detector probe interval in ms [default: 500]
    #[arg(long)]
    pub ap_probe_ms: Option<u64>,
    /// AP: ms a suspected member has to refute before it is dead [default: 3000]
    #[arg(long)]
    pub ap_suspect_ms: Option<u64>,
    /// Require Nacos access tokens (`/nacos/v1/auth/login`) on Nacos HTTP and gRPC calls [default: false]
    #[arg(long)]
    pub nacos_auth_enabled: Option<bool>,
    /// Nacos auth users `name:password`, comma separated [default: none]
    #[arg(long, value_delimiter = ',')]
    pub nacos_auth_users: Option<Vec<String>>,
    /// Nacos access token lifetime in seconds [default: 18000]
    #[arg(long)]
    pub nacos_auth_token_ttl_s: Option<u64>,
    /// Key signing Nacos access tokens; the same on every member [default: random per process]
    #[arg(long)]
    pub nacos_auth_secret: Option<String>,
    /// Session timeout of a Nacos gRPC connection in ms (ephemeral instances outlive a dead member this long) [default: 20000]
    #[arg(long)]
    pub nacos_grpc_session_timeout_ms: Option<u64>,
    /// Import Curator/Dubbo ZooKeeper layouts as registry instances and mirror the registry into them [default: true]
    #[arg(long)]
    pub registry_layouts: Option<bool>,
    /// Eureka: namespace of Eureka clients [default: public]
    #[arg(long)]
    pub eureka_namespace: Option<String>,
    /// Eureka: group of Eureka clients [default: DEFAULT_GROUP]
    #[arg(long)]
    pub eureka_group: Option<String>,
    /// Eureka: lease duration in s when the client sends none [default: 90]
    #[arg(long)]
    pub eureka_lease_duration_s: Option<u64>,
    /// Eureka: renewal interval in s when the client sends none [default: 30]
    #[arg(long)]
    pub eureka_renewal_interval_s: Option<u64>,
    /// Eureka: self-preservation (keep silent leases while renews are below the threshold) [default: true]
    #[arg(long)]
    pub eureka_self_preservation: Option<bool>,
    /// Eureka: share of expected renews per minute below which self-preservation is on [default: 0.85]
    #[arg(long)]
    pub eureka_renewal_percent_threshold: Option<f64>,
}

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration: {0}")]
    Load(#[from] config::ConfigError),
    #[error("configuration: {0}")]
    Invalid(String),
}

impl Cli {
    /// Layer defaults → file → environment → flags.
    pub fn load(
        &self,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let defaults = config::Config::try_from(&Config::default())?;
        let mut b = config::Config::builder().add_source(defaults);
        match &self.config {
            Some(f) => b = b.add_source(config::File::from(f.as_path()).required(true)),
            None => {
                b = b.add_source(
                    config::File::from(std::path::Path::new("roster.toml")).required(false),
                )
            }
        }
        // Only ROSTER_<KEY> for a known key: other ROSTER_* variables (a test harness's
        // ROSTER_BIN, say) are not configuration.
        let mut known: Vec<String> = match toml::Value::try_from(Config::default()) {
            Ok(toml::Value::Table(t)) => t
                .keys()
                .map(|k| format!("ROSTER_{}", k.to_uppercase()))
                .collect(),
            _ => Vec::new(),
        };
        known.push("ROSTER_SUPER_DIGEST".into()); // optional, so absent from the defaults
        let env: std::collections::HashMap<String, String> =
            env.into_iter().filter(|(k, _)| known.contains(k)).collect();
        b = b.add_source(
            config::Environment::with_prefix("ROSTER")
                .prefix_separator("_")
                .try_parsing(true)
                .list_separator(",")
                .with_list_parse_key("four_letter_words")
                .with_list_parse_key("servers")
                .with_list_parse_key("nacos_auth_users")
                .source(Some(env)),
        );
        let mut cfg: Config = b.build()?.try_deserialize()?;
        macro_rules! flag {
            ($($f:ident),*) => { $( if let Some(v) = &self.$f { cfg.$f = v.clone().into(); } )* };
        }
        flag!(
            data_dir,
            server_id,
            backend,
            servers,
            raft_heartbeat_ms,
            raft_election_timeout_ms,
            raft_log_retained,
            init_limit,
            sync_limit,
            zk_listen,
            http_listen,
            grpc_listen,
            grpc_max_message,
            tick_ms,
            min_session_timeout_ms,
            max_session_timeout_ms,
            max_buffer,
            four_letter_words,
            max_client_connections,
            handshake_timeout_ms,
            max_outstanding_per_connection,
            extended_types,
            snapshot_every,
            snapshot_log_ratio,
            snapshots_retained,
            max_batch,
            container_check_ms,
            log_level,
            log_format,
            http_max_body,
            config_history,
            http_rate_limit,
            ap_grace_ms,
            ap_self_preservation_share,
            ap_tombstone_ttl_ms,
            ap_anti_entropy_ms,
            ap_probe_ms,
            ap_suspect_ms,
            nacos_auth_enabled,
            nacos_auth_users,
            nacos_auth_token_ttl_s,
            nacos_auth_secret,
            nacos_grpc_session_timeout_ms,
            registry_layouts,
            eureka_namespace,
            eureka_group,
            eureka_lease_duration_s,
            eureka_renewal_interval_s,
            eureka_self_preservation,
            eureka_renewal_percent_threshold
        );
        if let Some(d) = &self.super_digest {
            cfg.super_digest = Some(d.clone());
        }
        cfg.validate()?;
        Ok(cfg)
    }
}

/// One ensemble member from `servers`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub id: u64,
    pub host: String,
    pub quorum_port: u16,
    pub election_port: u16,
    pub observer: bool,
}

impl Config {
    /// Parse `servers`; empty means standalone.
    pub fn members(&self) -> Result<Vec<Member>, ConfigError> {
        let mut out: Vec<Member> = Vec::new();
        for s in &self.servers {
            let bad = || {
                ConfigError::Invalid(format!(
                    "servers entry {s:?}: expected N=host:quorumPort:electionPort[:observer]"
                ))
            };
            let (id, rest) = s.trim().split_once('=').ok_or_else(bad)?;
            let id: u64 = id
                .trim()
                .trim_start_matches("server.")
                .parse()
                .map_err(|_| bad())?;
            let parts: Vec<&str> = rest.trim().split(':').collect();
            let (host, q, e, role) = match parts.as_slice() {
                [h, q, e] => (*h, *q, *e, None),
                [h, q, e, r] => (*h, *q, *e, Some(*r)),
                _ => return Err(bad()),
            };
            let observer = match role {
                None | Some("participant") => false,
                Some("observer") => true,
                Some(_) => return Err(bad()),
            };
            if out.iter().any(|m| m.id == id) {
                return Err(ConfigError::Invalid(format!("server.{id} is listed twice")));
            }
            out.push(Member {
                id,
                host: host.to_owned(),
                quorum_port: q.parse().map_err(|_| bad())?,
                election_port: e.parse().map_err(|_| bad())?,
                observer,
            });
        }
        if !out.is_empty() && out.iter().all(|m| m.observer) {
            return Err(ConfigError::Invalid(
                "an ensemble needs at least one participant".into(),
            ));
        }
        Ok(out)
    }

    /// AP: this member's gossip/data address and the other members' (seeds), from `servers`
    /// (`host:quorumPort` of each entry). No servers: a lone member on an ephemeral port.
    pub fn ap_addresses(
        &self,
    ) -> Result<(std::net::SocketAddr, Vec<(u64, std::net::SocketAddr)>), ConfigError> {
        use std::net::ToSocketAddrs;
        let resolve = |m: &Member| {
            (m.host.as_str(), m.quorum_port)
                .to_socket_addrs()
                .ok()
                .and_then(|mut a| a.next())
                .ok_or_else(|| {
                    ConfigError::Invalid(format!("server.{}: cannot resolve {}", m.id, m.host))
                })
        };
        let members = self.members()?;
        let mut listen = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
        let mut seeds = Vec::new();
        for m in &members {
            if m.id == self.server_id {
                listen = resolve(m)?;
            } else {
                seeds.push((m.id, resolve(m)?));
            }
        }
        Ok((listen, seeds))
    }

    /// When the zab backend takes snapshots (`snapshot_every`, `snapshot_log_ratio`).
    pub fn snapshot_policy(&self) -> roster_zab::SnapshotPolicy {
        roster_zab::SnapshotPolicy {
            every: self.snapshot_every,
            log_ratio: self.snapshot_log_ratio,
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        if !matches!(self.backend.as_str(), "zab" | "raft" | "ap") {
            return bad(format!(
                "backend {:?} is not available (available: zab, raft, ap)",
                self.backend
            ));
        }
        if !(self.snapshot_log_ratio.is_finite() && self.snapshot_log_ratio >= 0.0) {
            return bad(format!(
                "snapshot_log_ratio must be a number >= 0, not {}",
                self.snapshot_log_ratio
            ));
        }
        if !(0.0..=1.0).contains(&self.ap_self_preservation_share) {
            return bad("ap_self_preservation_share must be between 0 and 1".into());
        }
        if !(0.0..=1.0).contains(&self.eureka_renewal_percent_threshold) {
            return bad("eureka_renewal_percent_threshold must be between 0 and 1".into());
        }
        if !(1..=86_400).contains(&self.eureka_lease_duration_s)
            || !(1..=86_400).contains(&self.eureka_renewal_interval_s)
        {
            return bad(
                "eureka_lease_duration_s and eureka_renewal_interval_s must be 1..86400".into(),
            );
        }
        if self.eureka_namespace.is_empty()
            || self.eureka_group.is_empty()
            || self.eureka_namespace.contains('/')
            || self.eureka_group.contains('/')
        {
            return bad("eureka_namespace and eureka_group must be non-empty, without '/'".into());
        }
        if self.ap_anti_entropy_ms == 0 || self.ap_probe_ms == 0 {
            return bad("ap_anti_entropy_ms and ap_probe_ms must be > 0".into());
        }
        if self.raft_heartbeat_ms == 0 || self.raft_election_range_ms().0 <= self.raft_heartbeat_ms
        {
            return bad(format!(
                "raft_election_timeout_ms ({}) must be more than 3 × raft_heartbeat_ms ({}, > 0): \
                 a follower gives the leader a third of it between heartbeats",
                self.raft_election_timeout_ms, self.raft_heartbeat_ms
            ));
        }
        if self.tick_ms == 0 {
            return bad("tick_ms must be > 0".into());
        }
        if self.min_session_timeout() > self.max_session_timeout() {
            return bad("min_session_timeout_ms exceeds max_session_timeout_ms".into());
        }
        if self.max_buffer < 1024 {
            return bad("max_buffer must be at least 1024".into());
        }
        let members = self.members()?;
        if !members.is_empty() && !members.iter().any(|m| m.id == self.server_id) {
            return bad(format!(
                "server_id {} is not among the servers",
                self.server_id
            ));
        }
        if self.http_max_body < 1024 {
            return bad("http_max_body must be at least 1024".into());
        }
        self.grpc_addr()?;
        if !(1000..=3_600_000).contains(&self.nacos_grpc_session_timeout_ms) {
            return bad("nacos_grpc_session_timeout_ms must be between 1000 and 3600000".into());
        }
        if self.grpc_max_message < 1024 {
            return bad("grpc_max_message must be at least 1024".into());
        }
        if self.config_history == 0 {
            return bad("config_history must be at least 1".into());
        }
        if !matches!(self.log_format.as_str(), "text" | "json") {
            return bad(format!(
                "log_format {:?}: use text or json",
                self.log_format
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layers_file_then_env_then_flags() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("roster.toml");
        std::fs::write(
            &file,
            "zk_listen = \"127.0.0.1:1\"\ntick_ms = 500\nhttp_listen = \"127.0.0.1:9\"\n",
        )
        .unwrap();
        let cli = Cli {
            config: Some(file),
            http_listen: Some("127.0.0.1:3".into()),
            ..Cli::default()
        };
        let env = vec![
            ("ROSTER_ZK_LISTEN".to_string(), "127.0.0.1:2".to_string()),
            ("ROSTER_HTTP_LISTEN".to_string(), "127.0.0.1:8".to_string()),
            (
                "ROSTER_FOUR_LETTER_WORDS".to_string(),
                "ruok,stat".to_string(),
            ),
            ("OTHER".to_string(), "x".to_string()),
            ("ROSTER_BIN".to_string(), "/not/a/setting".to_string()),
        ];
        let cfg = cli.load(env).unwrap();
        assert_eq!(cfg.tick_ms, 500, "file over default");
        assert_eq!(cfg.zk_listen, "127.0.0.1:2", "env over file");
        assert_eq!(cfg.http_listen, "127.0.0.1:3", "flag over env");
        assert_eq!(cfg.four_letter_words, vec!["ruok", "stat"]);
        assert_eq!(cfg.max_session_timeout(), 10_000);
        assert_eq!(cfg.data_dir, PathBuf::from("./data"), "default kept");
    }

    #[test]
    fn every_setting_has_a_documented_flag() {
        use clap::CommandFactory;
        let cmd = Cli::command();
        let toml::Value::Table(keys) = toml::Value::try_from(Config::default()).unwrap() else {
            panic!()
        };
        // The manifest dir cargo gives the running test, not the one baked in at compile time:
        // a target dir shared between clones would read another clone's docs.
        let dir = std::env::var("CARGO_MANIFEST_DIR").expect("run by cargo test");
        let docs = std::fs::read_to_string(format!("{dir}/../docs/configuration.md")).unwrap();
        for key in keys.keys().map(String::as_str).chain(["super_digest"]) {
            let flag = key.replace('_', "-");
            let arg = cmd
                .get_arguments()
                .find(|a| a.get_long() == Some(flag.as_str()));
            assert!(
                arg.is_some_and(|a| a.get_help().is_some()),
                "--{flag} missing or undocumented"
            );
            assert!(
                docs.contains(&format!("`{key}`")),
                "{key} missing from docs/configuration.md"
            );
        }
    }

    #[test]
    fn grpc_port_defaults_to_http_port_plus_1000() {
        let cfg = Cli::default().load(vec![]).unwrap();
        assert_eq!(cfg.grpc_addr().unwrap(), "0.0.0.0:9848");
        let cfg = Cli {
            http_listen: Some("127.0.0.1:28848".into()),
            ..Cli::default()
        }
        .load(vec![])
        .unwrap();
        assert_eq!(cfg.grpc_addr().unwrap(), "127.0.0.1:29848");
        let cfg = Cli {
            http_listen: Some("[::1]:0".into()),
            ..Cli::default()
        }
        .load(vec![])
        .unwrap();
        assert_eq!(cfg.grpc_addr().unwrap(), "[::1]:0");
        let cfg = Cli {
            grpc_listen: Some("127.0.0.1:7".into()),
            ..Cli::default()
        }
        .load(vec![])
        .unwrap();
        assert_eq!(cfg.grpc_addr().unwrap(), "127.0.0.1:7");
        assert!(
            Cli {
                http_listen: Some("127.0.0.1:65000".into()),
                ..Cli::default()
            }
            .load(vec![])
            .is_err(),
            "port + 1000 overflows"
        );
    }

    #[test]
    fn parses_zookeeper_style_members() {
        let cli = Cli {
            servers: Some(vec![
                "server.1=127.0.0.1:2888:3888".into(),
                "2=h2:2889:3889:observer".into(),
            ]),
            ..Cli::default()
        };
        let cfg = cli.load(vec![]).unwrap();
        let m = cfg.members().unwrap();
        assert_eq!(
            m[0],
            Member {
                id: 1,
                host: "127.0.0.1".into(),
                quorum_port: 2888,
                election_port: 3888,
                observer: false
            }
        );
        assert!(m[1].observer);
        let bad = Cli {
            servers: Some(vec!["1=h:1".into()]),
            ..Cli::default()
        };
        assert!(bad.load(vec![]).is_err());
        let not_member = Cli {
            server_id: Some(9),
            servers: Some(vec!["1=h:1:2".into()]),
            ..Cli::default()
        };
        assert!(not_member.load(vec![]).is_err());
    }

    #[test]
    fn rejects_unknown_keys_and_bad_values() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("r.toml");
        std::fs::write(&file, "no_such_key = 1\n").unwrap();
        assert!(
            Cli {
                config: Some(file),
                ..Cli::default()
            }
            .load(vec![])
            .is_err()
        );
        assert!(
            Cli {
                backend: Some("etcd".into()),
                ..Cli::default()
            }
            .load(vec![])
            .is_err()
        );
        assert!(
            Cli {
                backend: Some("raft".into()),
                raft_election_timeout_ms: Some(50),
                ..Cli::default()
            }
            .load(vec![])
            .is_err(),
            "an election timeout under the heartbeat is refused"
        );
        assert!(
            Cli {
                backend: Some("raft".into()),
                raft_election_timeout_ms: Some(300),
                ..Cli::default()
            }
            .load(vec![])
            .is_err(),
            "an election timeout of 3 heartbeats leaves none between them"
        );
        let raft = Cli {
            backend: Some("raft".into()),
            ..Cli::default()
        }
        .load(vec![("ROSTER_RAFT_HEARTBEAT_MS".into(), "50".into())])
        .unwrap();
        assert_eq!(
            (raft.backend.as_str(), raft.raft_heartbeat_ms),
            ("raft", 50)
        );
    }

    #[test]
    fn a_raft_follower_waits_about_its_election_timeout_not_three_times_it() {
        let c = Cli {
            backend: Some("raft".into()),
            ..Cli::default()
        }
        .load(vec![])
        .unwrap();
        let t = c.raft_election_timeout_ms;
        let (min, max) = c.raft_election_range_ms();
        // openraft: the leader's lease (= max) runs out, then a random timeout in [min, max).
        let (soonest, latest) = (max + min, max + max);
        assert!(
            soonest >= t - 1 && latest <= t * 4 / 3,
            "{t} ms configured, elections after {soonest}..{latest} ms of silence"
        );
        assert!(min > c.raft_heartbeat_ms && min < max);
    }
}
