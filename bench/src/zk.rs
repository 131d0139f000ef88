//! The ZooKeeper side of the harness: sessions through the `zookeeper-client` crate, error kinds
//! for reports, and the tree chores (a run's base path, and removing it afterwards).

use std::time::{Duration, Instant};

use anyhow::Context;
use futures::StreamExt;
use zookeeper_client as zk;

pub use zk::Client;

/// Persistent nodes, open ACL (what every benchmark node uses).
pub const PERSISTENT: zk::CreateOptions<'static> =
    zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all());
/// Ephemeral nodes, open ACL.
pub const EPHEMERAL: zk::CreateOptions<'static> =
    zk::CreateMode::Ephemeral.with_acls(zk::Acls::anyone_all());

/// How a session is opened.
#[derive(Clone, Debug)]
pub struct SessionSpec {
    /// Connect string: `host:port[,host:port…]`.
    pub target: String,
    pub session_timeout: Duration,
    /// Dropping the client leaves the session to expire instead of closing it.
    pub detached: bool,
}

/// Opens one session, retrying for a while: a server that has just started (a cold JVM)
/// may drop the first handshakes.
pub async fn connect(spec: &SessionSpec) -> anyhow::Result<Client> {
    let deadline = Instant::now() + spec.session_timeout.max(Duration::from_secs(5)) * 3;
    loop {
        let mut c = Client::connector().with_session_timeout(spec.session_timeout);
        if spec.detached {
            c = c.with_detached();
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let err = match tokio::time::timeout(left, c.connect(&spec.target)).await {
            Ok(Ok(client)) => return Ok(client),
            Ok(Err(e)) => anyhow::Error::new(e),
            Err(_) => anyhow::anyhow!("timed out"),
        };
        if Instant::now() + Duration::from_millis(200) >= deadline {
            return Err(err).with_context(|| format!("connecting to {}", spec.target));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Opens `n` sessions, at most `parallel` handshakes at a time. Calls `each` with the time each
/// handshake took.
pub async fn connect_many(
    spec: &SessionSpec,
    n: usize,
    parallel: usize,
    mut each: impl FnMut(Instant, Instant),
) -> anyhow::Result<Vec<Client>> {
    let mut clients = Vec::with_capacity(n);
    let mut stream = futures::stream::iter(0..n)
        .map(|_| async {
            let t = Instant::now();
            let c = connect(spec).await;
            (t, Instant::now(), c)
        })
        .buffer_unordered(parallel.max(1));
    while let Some((t0, t1, c)) = stream.next().await {
        clients.push(c?);
        each(t0, t1);
    }
    Ok(clients)
}

/// A short, stable name for an error, for the errors-by-kind table.
pub fn error_kind(e: &zk::Error) -> String {
    if let zk::Error::Custom(_) = e {
        // The client library's own I/O failures (a connection reset under a write…).
        return "ClientIo".into();
    }
    let debug = format!("{e:?}");
    debug
        .split(|c: char| !c.is_alphanumeric())
        .next()
        .unwrap_or("Unknown")
        .to_string()
}

/// Creates `path` and any missing parents as persistent nodes.
pub async fn ensure_path(client: &Client, path: &str) -> anyhow::Result<()> {
    client
        .mkdir(path, &PERSISTENT)
        .await
        .with_context(|| format!("creating {path}"))
}

/// Removes `path` and everything under it, pipelining deletes; gives up after `budget`.
pub async fn remove_tree(client: &Client, path: &str, budget: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + budget;
    remove_tree_inner(client, path.to_string(), deadline).await
}

fn remove_tree_inner<'a>(
    client: &'a Client,
    path: String,
    deadline: Instant,
) -> futures::future::BoxFuture<'a, anyhow::Result<()>> {
    Box::pin(async move {
        if Instant::now() > deadline {
            anyhow::bail!("cleanup of {path} ran out of time");
        }
        let children = match client.list_children(&path).await {
            Ok(c) => c,
            Err(zk::Error::NoNode) => return Ok(()),
            Err(e) => return Err(e).with_context(|| format!("listing {path}")),
        };
        let mut leaves = futures::stream::iter(children)
            .map(|child| {
                let child_path = format!("{}/{child}", path.trim_end_matches('/'));
                async move {
                    match client.delete(&child_path, None).await {
                        Ok(()) | Err(zk::Error::NoNode) => Ok(()),
                        Err(zk::Error::NotEmpty) => {
                            remove_tree_inner(client, child_path, deadline).await
                        }
                        Err(e) => Err(e).with_context(|| format!("deleting {child_path}")),
                    }
                }
            })
            .buffer_unordered(256);
        while let Some(r) = leaves.next().await {
            r?;
        }
        match client.delete(&path, None).await {
            Ok(()) | Err(zk::Error::NoNode) => Ok(()),
            Err(e) => Err(e).with_context(|| format!("deleting {path}")),
        }
    })
}

/// Polls the number of children of `path` every `every` until `done(count)` holds or `deadline`.
/// Returns the time it held, or None at the deadline.
pub async fn wait_children(
    client: &Client,
    path: &str,
    every: Duration,
    deadline: Instant,
    mut done: impl FnMut(i32) -> bool,
) -> anyhow::Result<Option<Instant>> {
    loop {
        let stat = client
            .check_stat(path)
            .await
            .with_context(|| format!("stat {path}"))?;
        let n = stat.map(|s| s.num_children).unwrap_or(0);
        if done(n) {
            return Ok(Some(Instant::now()));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        tokio::time::sleep(every).await;
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn error_kinds_are_variant_names() {
        assert_eq!(
            super::error_kind(&super::zk::Error::NodeExists),
            "NodeExists"
        );
        assert_eq!(
            super::error_kind(&super::zk::Error::UnexpectedError("x y".into())),
            "UnexpectedError"
        );
    }
}
