//! Single-operation workloads: create, set, get, delete and a get/set mix, closed or open loop.

use std::sync::Arc;
use std::time::Instant;

use super::{Params, WorkloadResult, cleanup};
use crate::load::{self, Outcome, Stop};
use crate::record::{Progress, Recorder};
use crate::server_stats::Watch;
use crate::zk::{self, Client, EPHEMERAL, PERSISTENT};

/// A single-operation workload.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Simple {
    Create,
    Set,
    Get,
    Delete,
    /// get with probability `read_percent` %, else set, over the preloaded keys.
    Mixed {
        read_percent: f64,
    },
    /// Ephemeral create (the registration storm's operation).
    Ephemeral,
}

impl Simple {
    /// Report name.
    pub fn label(&self) -> String {
        match self {
            Simple::Create => "create".into(),
            Simple::Set => "set".into(),
            Simple::Get => "get".into(),
            Simple::Delete => "delete".into(),
            Simple::Mixed { read_percent } => format!("mixed-{read_percent}"),
            Simple::Ephemeral => "ephemeral-create".into(),
        }
    }
}

/// A cheap, well-mixed hash of a sequence number (splitmix64), for key choice without an RNG.
pub fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// The operation for `kind` on nodes under `dir`: creates and deletes use `dir/<seq>`, reads
/// and writes a random one of `keys` preloaded `dir/<key>`.
pub fn op(
    kind: Simple,
    dir: &str,
    value: Arc<Vec<u8>>,
    keys: u64,
) -> impl Fn(Client, u64) -> std::pin::Pin<Box<dyn Future<Output = Outcome> + Send>>
+ Clone
+ Send
+ Sync
+ 'static {
    let dir: Arc<str> = Arc::from(dir);
    move |client: Client, seq: u64| {
        let (dir, value) = (dir.clone(), value.clone());
        Box::pin(async move {
            let keyed = || format!("{dir}/{}", mix(seq) % keys.max(1));
            let r = match kind {
                Simple::Create => (
                    "create",
                    client
                        .create(&format!("{dir}/{seq}"), &value, &PERSISTENT)
                        .await
                        .map(drop),
                ),
                Simple::Ephemeral => (
                    "ephemeral-create",
                    client
                        .create(&format!("{dir}/{seq}"), &value, &EPHEMERAL)
                        .await
                        .map(drop),
                ),
                Simple::Delete => ("delete", client.delete(&format!("{dir}/{seq}"), None).await),
                Simple::Set => (
                    "set",
                    client.set_data(&keyed(), &value, None).await.map(drop),
                ),
                Simple::Get => ("get", client.get_data(&keyed()).await.map(drop)),
                Simple::Mixed { read_percent } => {
                    if (mix(seq ^ 0x5eed) % 10_000) as f64 / 100.0 < read_percent {
                        ("get", client.get_data(&keyed()).await.map(drop))
                    } else {
                        (
                            "set",
                            client.set_data(&keyed(), &value, None).await.map(drop),
                        )
                    }
                }
            };
            Some(r)
        })
    }
}

/// Runs a single-operation workload.
pub async fn run(kind: Simple, p: &Params) -> anyhow::Result<WorkloadResult> {
    let clients = zk::connect_many(&p.spec, p.sessions.max(1), 64, |_, _| {}).await?;
    let admin = clients[0].clone();
    let base = p.base();
    let value = Arc::new(p.value());
    let keys_dir = format!("{base}/k");
    let work_dir = format!("{base}/w");
    let warm_dir = format!("{base}/warm");
    for d in [&keys_dir, &work_dir, &warm_dir] {
        zk::ensure_path(&admin, d).await?;
    }

    // Prepare: keys to read and write, or nodes to delete.
    let mut stop = p.stop;
    match kind {
        Simple::Set | Simple::Get | Simple::Mixed { .. } => {
            eprintln!("preparing {} keys of {} B", p.keys, p.value_size);
            let prep = Arc::new(Recorder::new());
            let f = op(Simple::Create, &keys_dir, value.clone(), p.keys);
            load::closed_loop(&clients, p.depth, Stop::Ops(p.keys), prep.clone(), f).await;
            fail_on_errors(&prep, "preloading keys")?;
        }
        Simple::Delete => {
            let prep = Arc::new(Recorder::new());
            let _progress = Progress::start("prepare delete: create".into(), prep.clone());
            let f = op(Simple::Create, &work_dir, value.clone(), p.keys);
            // As many nodes as the measured phase may delete: the op count, or what creating
            // for the same duration yields (deletes are not slower than creates).
            load::closed_loop(&clients, p.depth, p.stop, prep.clone(), f).await;
            fail_on_errors(&prep, "creating nodes to delete")?;
            let created = prep.counts().0;
            stop = match p.stop {
                Stop::Ops(_) => Stop::Ops(created),
                Stop::For(d) | Stop::OpsOrFor(_, d) => Stop::OpsOrFor(created, d),
            };
        }
        Simple::Create | Simple::Ephemeral => {}
    }

    if !p.warmup.is_zero() && kind != Simple::Delete {
        eprintln!("warming up for {:?}", p.warmup);
        let f = op(
            kind,
            if matches!(kind, Simple::Create | Simple::Ephemeral) {
                &warm_dir
            } else {
                &keys_dir
            },
            value.clone(),
            p.keys,
        );
        load::closed_loop(
            &clients,
            p.depth,
            Stop::For(p.warmup),
            Arc::new(Recorder::new()),
            f,
        )
        .await;
    }

    let dir = if matches!(kind, Simple::Set | Simple::Get | Simple::Mixed { .. }) {
        &keys_dir
    } else {
        &work_dir
    };
    let f = op(kind, dir, value.clone(), p.keys);
    let rec = Arc::new(Recorder::new());
    let watch = p.watch();
    let t0 = Instant::now();
    let (mode, knee) = super::measure(
        &clients,
        p.depth,
        p,
        stop,
        p.rate,
        kind.label(),
        rec.clone(),
        f,
    )
    .await;
    let elapsed = t0.elapsed();
    let server = watch.map(Watch::finish);
    cleanup(p, &admin).await;
    Ok(WorkloadResult {
        workload: kind.label(),
        mode,
        elapsed_s: elapsed.as_secs_f64(),
        ops: rec.summarize(),
        extras: Default::default(),
        timeline: rec.timeline(),
        knee,
        server,
        fault: None,
    })
}

pub(crate) fn fail_on_errors(rec: &Recorder, what: &str) -> anyhow::Result<()> {
    let stats = rec.summarize();
    let errors: u64 = stats.iter().map(|s| s.error_count()).sum();
    if errors > 0 {
        let kinds: Vec<String> = stats
            .iter()
            .flat_map(|s| s.errors.iter().map(|(k, n)| format!("{k}×{n}")))
            .collect();
        anyhow::bail!("{what}: {errors} errors ({})", kinds.join(", "));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn mix_spreads_keys() {
        let mut seen = std::collections::HashSet::new();
        for i in 0..1000 {
            seen.insert(super::mix(i) % 100);
        }
        assert!(seen.len() > 90);
    }
}
