//! Nacos connections: one per transport (TCP) connection, named `<millis>_<ip>_<port>` at
//! `ServerCheckRequest` as Nacos names them, registered by the `ConnectionSetupRequest` on the
//! bi-stream (which also carries the server's pushes). A connection owns, lazily, one session:
//! the ephemeral instances registered over it are bound to it, it is touched while the stream
//! lives, and it is closed when the stream ends — or expires if this member dies.

use super::{Nacos, RpcError, payload, type_of};
use crate::api::Api;
use crate::api::config::ConfigKey;
use crate::api::feed::Scope;
use crate::api::registry::ServiceKey;
use parking_lot::Mutex;
use roster_core::SessionId;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tonic::Status;

/// Server pushes queued per connection before the pusher waits for the client.
pub const PUSH_QUEUE: usize = 256;
/// Default timeout of a connection's session (`nacos_grpc_session_timeout_ms`): how long its
/// ephemeral instances outlive a member that died without closing the stream (Nacos ejects
/// silent connections after about 20 s).
pub const SESSION_TIMEOUT_MS: i32 = 20_000;
/// How long a push may wait for room in a client's queue before the connection is dropped.
const PUSH_WAIT: Duration = Duration::from_secs(10);

/// A subscribed service.
#[derive(Clone)]
pub struct Subscribed {
    pub key: ServiceKey,
    pub clusters: Vec<String>,
    /// The host list the client last got (answer or push), so only real changes are pushed.
    pub last_hosts: String,
}

/// A listened config item, with the names as the client gave them (echoed in pushes).
#[derive(Clone)]
pub struct Listened {
    pub key: ConfigKey,
    pub data_id: String,
    pub group: String,
    pub tenant: String,
}

/// One Nacos connection.
pub struct Conn {
    pub id: String,
    pub addr: SocketAddr,
    registered: AtomicBool,
    push: Mutex<Option<mpsc::Sender<Result<crate::grpc::nacos::proto::Payload, Status>>>>,
    session: tokio::sync::Mutex<Option<SessionId>>,
    pub subscriptions: Mutex<HashMap<String, Subscribed>>,
    pub listeners: Mutex<HashMap<String, Listened>>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    /// What the naming and config watchers follow, once started: the subscribed services and
    /// the listened config items, so a change elsewhere does not wake this connection.
    naming_scope: Mutex<Option<Scope>>,
    config_scope: Mutex<Option<Scope>>,
    next_push: AtomicU64,
    /// The bi-stream currently bound (a client may set up again on the same transport; only
    /// the end of the bound stream ends the connection).
    stream: AtomicU64,
    pub client_version: Mutex<String>,
    created: std::time::Instant,
}

impl Conn {
    fn new(addr: SocketAddr) -> Conn {
        let millis = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0);
        Conn {
            id: format!("{millis}_{}_{}", addr.ip(), addr.port()),
            addr,
            registered: AtomicBool::new(false),
            push: Mutex::new(None),
            session: tokio::sync::Mutex::new(None),
            subscriptions: Mutex::new(HashMap::new()),
            listeners: Mutex::new(HashMap::new()),
            tasks: Mutex::new(Vec::new()),
            naming_scope: Mutex::new(None),
            config_scope: Mutex::new(None),
            next_push: AtomicU64::new(1),
            stream: AtomicU64::new(0),
            client_version: Mutex::new(String::new()),
            created: std::time::Instant::now(),
        }
    }

    /// The connection's session, opened on first use and kept alive while the stream lives.
    pub async fn session(
        self: &Arc<Self>,
        api: &Arc<Api>,
        timeout_ms: i32,
    ) -> Result<SessionId, RpcError> {
        let mut s = self.session.lock().await;
        if let Some(id) = *s
            && api.store.session_exists(id)
        {
            return Ok(id);
        }
        let (id, timeout) = api.store.open_session(timeout_ms).await?;
        tracing::info!(connection = %self.id, session = id, "Nacos connection opened its session");
        *s = Some(id);
        let api = api.clone();
        let me = Arc::downgrade(self);
        let every = Duration::from_millis((timeout.max(300) / 3) as u64);
        let keepalive = tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                if me.upgrade().is_none() {
                    return;
                }
                if let Err(e) = api.store.touch(&[id]).await {
                    tracing::warn!(session = id, error = %e, "keeping a Nacos connection's session alive");
                }
            }
        });
        self.tasks.lock().push(keepalive);
        Ok(id)
    }

    /// The session if one is open (for deregistration checks).
    pub async fn current_session(&self) -> Option<SessionId> {
        *self.session.lock().await
    }

    /// Send a server request (a push) on the bi-stream; waits for room, gives up after a while.
    pub async fn push(&self, kind: &str, mut body: Value) -> bool {
        let Some(tx) = self.push.lock().clone() else {
            return false;
        };
        let id = self.next_push.fetch_add(1, Ordering::Relaxed);
        body["requestId"] = json!(id.to_string());
        let p = payload(kind, &body);
        match tokio::time::timeout(PUSH_WAIT, tx.send(Ok(p))).await {
            Ok(Ok(())) => {
                metrics::counter!("roster_nacos_grpc_pushes_total", "push" => push_label(kind))
                    .increment(1);
                true
            }
            Ok(Err(_)) => false,
            Err(_) => {
                tracing::warn!(connection = %self.id, push = kind,
                    "a Nacos client did not take pushes for 10 s; dropping its stream");
                metrics::counter!("roster_nacos_grpc_push_timeouts_total").increment(1);
                self.push.lock().take();
                false
            }
        }
    }

    /// The client answered a push.
    pub fn acked(&self, p: &crate::grpc::nacos::proto::Payload) {
        tracing::trace!(connection = %self.id, response = %type_of(p), "Nacos push acknowledged");
    }

    /// Start a background task tied to this connection, once per `which`.
    /// The watcher's task is given the [`Scope`] of its feed subscription, which
    /// [`Conn::follow`] then narrows to the keys the client asks for.
    pub fn start_once(&self, which: Watch, f: impl FnOnce() -> (JoinHandle<()>, Scope)) {
        let mut scope = self.scope(which).lock();
        if scope.is_none() {
            let (task, s) = f();
            *scope = Some(s);
            self.tasks.lock().push(task);
        }
    }

    fn scope(&self, which: Watch) -> &Mutex<Option<Scope>> {
        match which {
            Watch::Naming => &self.naming_scope,
            Watch::Config => &self.config_scope,
        }
    }

    /// From now on the watcher `which` is woken by changes under `paths` only. Call it after
    /// recording a new key and before reading the key's state for the answer, so that a change
    /// in between is pushed rather than lost.
    pub fn follow(&self, which: Watch, paths: Vec<String>) {
        if let Some(s) = self.scope(which).lock().as_ref() {
            s.set(paths);
        }
    }
}

/// The per-connection watchers.
#[derive(Clone, Copy)]
pub enum Watch {
    Naming,
    Config,
}

fn push_label(kind: &str) -> &'static str {
    match kind {
        "NotifySubscriberRequest" => "NotifySubscriberRequest",
        "ConfigChangeNotifyRequest" => "ConfigChangeNotifyRequest",
        "SetupAckRequest" => "SetupAckRequest",
        _ => "other",
    }
}

/// Every live connection of this member, by transport peer address.
#[derive(Default)]
pub struct Connections {
    by_addr: Mutex<HashMap<SocketAddr, Arc<Conn>>>,
}

impl Connections {
    /// `ServerCheckRequest`: the transport's connection (a new one if none).
    pub fn check(&self, addr: SocketAddr) -> Arc<Conn> {
        self.by_addr
            .lock()
            .entry(addr)
            .or_insert_with(|| Arc::new(Conn::new(addr)))
            .clone()
    }

    /// The registered connection of this transport.
    pub fn registered(&self, addr: SocketAddr) -> Option<Arc<Conn>> {
        self.by_addr
            .lock()
            .get(&addr)
            .filter(|c| c.registered.load(Ordering::SeqCst))
            .cloned()
    }

    /// Forget transports that asked `ServerCheckRequest` but never set up a stream within
    /// `grace` (a client that gave up, a probe): nothing else would remove them.
    pub fn sweep(&self, grace: Duration) -> usize {
        let mut m = self.by_addr.lock();
        let before = m.len();
        m.retain(|_, c| c.registered.load(Ordering::SeqCst) || c.created.elapsed() < grace);
        before - m.len()
    }

    /// How many connections are registered.
    pub fn count(&self) -> usize {
        self.by_addr
            .lock()
            .values()
            .filter(|c| c.registered.load(Ordering::SeqCst))
            .count()
    }

    /// The bi-stream `stream` of a connection ended: unless another stream has been bound
    /// since, end the connection — stop its watchers, close its session (its ephemeral
    /// instances go).
    pub async fn close(&self, api: &Api, conn: &Arc<Conn>, stream: u64) {
        if conn.stream.load(Ordering::SeqCst) != stream {
            tracing::debug!(connection = %conn.id, "a replaced Nacos bi-stream ended");
            return;
        }
        {
            let mut m = self.by_addr.lock();
            if m.get(&conn.addr).is_some_and(|c| Arc::ptr_eq(c, conn)) {
                m.remove(&conn.addr);
            }
        }
        conn.registered.store(false, Ordering::SeqCst);
        conn.push.lock().take();
        for t in conn.tasks.lock().drain(..) {
            t.abort();
        }
        metrics::gauge!("roster_nacos_grpc_connections").decrement(1.0);
        let session = conn.session.lock().await.take();
        tracing::info!(connection = %conn.id, session = ?session, "Nacos connection closed");
        if let Some(s) = session
            && api.store.session_exists(s)
            && let Err(e) = api.store.close_session(s).await
        {
            // The session then expires on its own after its timeout.
            tracing::warn!(connection = %conn.id, session = s, error = %e,
                "closing a Nacos connection's session");
        }
    }
}

/// `ConnectionSetupRequest` on a bi-stream: register the connection and, for clients that
/// negotiate abilities (they send an `abilityTable`, 2.3+), acknowledge with the server's.
pub async fn setup(
    nacos: &Arc<Nacos>,
    addr: SocketAddr,
    p: &crate::grpc::nacos::proto::Payload,
    tx: mpsc::Sender<Result<crate::grpc::nacos::proto::Payload, Status>>,
) -> Result<(Arc<Conn>, u64), RpcError> {
    #[derive(serde::Deserialize, Default)]
    #[serde(rename_all = "camelCase", default)]
    struct Setup {
        client_version: String,
        tenant: Option<String>,
        labels: HashMap<String, String>,
        ability_table: Option<HashMap<String, bool>>,
    }
    let s: Setup = super::parse(p)?;
    let conn = nacos.conns.check(addr);
    *conn.client_version.lock() = s.client_version.clone();
    *conn.push.lock() = Some(tx);
    let stream = conn.stream.fetch_add(1, Ordering::SeqCst) + 1;
    if !conn.registered.swap(true, Ordering::SeqCst) {
        metrics::gauge!("roster_nacos_grpc_connections").increment(1.0);
    }
    tracing::info!(connection = %conn.id, client = %s.client_version,
        module = s.labels.get("module").map(String::as_str).unwrap_or(""),
        tenant = s.tenant.as_deref().unwrap_or(""), "Nacos connection registered");
    if s.ability_table.is_some() {
        conn.push(
            "SetupAckRequest",
            json!({"abilityTable": {"supportPersistentInstanceByGrpc": true}}),
        )
        .await;
    }
    Ok((conn, stream))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_transport_is_one_connection_and_unset_ones_are_swept() {
        let conns = Connections::default();
        let a: SocketAddr = "127.0.0.1:4000".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:4001".parse().unwrap();
        let first = conns.check(a);
        assert!(
            Arc::ptr_eq(&first, &conns.check(a)),
            "ServerCheck again: same connection"
        );
        assert!(first.id.ends_with("_127.0.0.1_4000"), "{}", first.id);
        assert_ne!(conns.check(b).id, first.id);
        assert!(
            conns.registered(a).is_none(),
            "not registered before its stream setup"
        );
        assert_eq!(conns.sweep(Duration::from_secs(60)), 0, "young ones stay");
        assert_eq!(conns.sweep(Duration::ZERO), 2);
        assert_eq!(conns.count(), 0);
        first.registered.store(true, Ordering::SeqCst);
        conns.by_addr.lock().insert(a, first.clone());
        assert_eq!(
            conns.sweep(Duration::ZERO),
            0,
            "registered connections are not swept"
        );
        assert!(conns.registered(a).is_some());
    }
}
