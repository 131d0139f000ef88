//! The one thread that writes Raft's log and vote: group commit. Every write queued while the
//! previous batch was being synced goes into the next batch, so a burst of appends costs one
//! fsync. Writes are applied in the order they were queued (openraft requires vote and log I/O
//! to be serialized), and a batch completes — callbacks fire — only after its synced write.

use roster_core::storage::{Engine, WriteBatch};
use std::io;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Instant;

/// Called once the write is durable (or failed).
pub(crate) type Done = Box<dyn FnOnce(io::Result<()>) + Send>;

pub(crate) struct WriteCmd {
    pub batch: WriteBatch,
    /// Must be on disk before `done` runs. Writes that need not be (the committed pointer) ride
    /// along with the next synced batch or go unsynced on their own.
    pub sync: bool,
    pub done: Option<Done>,
}

/// Handle to the writer thread; dropping every handle stops it.
#[derive(Clone)]
pub(crate) struct Writer {
    tx: mpsc::Sender<WriteCmd>,
}

impl Writer {
    pub fn start(engine: Arc<dyn Engine>, max_batch: usize, name: String) -> Writer {
        let (tx, rx) = mpsc::channel::<WriteCmd>();
        std::thread::Builder::new()
            .name(name)
            .spawn(move || run(engine, rx, max_batch.max(1)))
            .expect("spawn raft log writer thread");
        Writer { tx }
    }

    pub fn send(&self, cmd: WriteCmd) -> io::Result<()> {
        self.tx
            .send(cmd)
            .map_err(|_| io::Error::other("raft log writer stopped"))
    }

    /// Queue a write and wait until it is durable.
    pub async fn write_durable(&self, batch: WriteBatch) -> io::Result<()> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.send(WriteCmd {
            batch,
            sync: true,
            done: Some(Box::new(move |r| {
                let _ = tx.send(r);
            })),
        })?;
        rx.await
            .map_err(|_| io::Error::other("raft log writer stopped"))?
    }
}

fn run(engine: Arc<dyn Engine>, rx: mpsc::Receiver<WriteCmd>, max_batch: usize) {
    let mut cmds: Vec<WriteCmd> = Vec::with_capacity(max_batch);
    // After a failed write nothing more may be acknowledged: a later write could otherwise
    // complete on top of a hole.
    let mut failed: Option<String> = None;
    while let Ok(first) = rx.recv() {
        cmds.push(first);
        while cmds.len() < max_batch {
            match rx.try_recv() {
                Ok(c) => cmds.push(c),
                Err(_) => break,
            }
        }
        let sync = cmds.iter().any(|c| c.sync);
        // The first batch taken as it is (usually the only one), the others copied after it.
        let mut merged = std::mem::take(&mut cmds[0].batch);
        for c in &cmds[1..] {
            merged.append(&c.batch);
        }
        let result = match &failed {
            Some(e) => Err(e.clone()),
            None => {
                let t0 = Instant::now();
                let r = engine.write(merged, sync);
                if sync {
                    metrics::histogram!("roster_storage_fsync_seconds")
                        .record(t0.elapsed().as_secs_f64());
                }
                r.map_err(|e| {
                    tracing::error!(error = %e, "raft log write failed; no further writes are acknowledged");
                    failed = Some(e.0.clone());
                    e.0
                })
            }
        };
        metrics::histogram!("roster_raft_write_batch_size").record(cmds.len() as f64);
        for c in cmds.drain(..) {
            if let Some(done) = c.done {
                done(result.clone().map_err(io::Error::other));
            }
        }
    }
}
