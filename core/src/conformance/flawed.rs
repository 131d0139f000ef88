//! Deliberately wrong backends, to prove the suite's checks can fail: [`Flawed`] wraps a real
//! backend and breaks one promise of the contract; [`FlawedFactory`] wraps a factory so every
//! member it builds carries the flaw.

use super::Factory;
use crate::backend::{Backend, BackendError, Capabilities, ClusterStatus, TreeView};
use crate::txn::{Applied, Envelope, Outcome, Request, Txn, WriteOp};
use crate::{SessionId, Zxid};
use std::sync::Arc;
use tokio::sync::broadcast;

/// One broken promise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flaw {
    /// `touch` does nothing (sessions of live clients expire).
    IgnoresTouch,
    /// Reports no multi support, yet runs multis anyway (a capability not honoured).
    ClaimsNoMultiButRunsIt,
    /// The applied stream never carries anything.
    SilentAppliedStream,
    /// `barrier` answers at once with the local position, without waiting for anything.
    BarrierDoesNotWait,
    /// Version-checked setData/delete are run as unconditional ones (CAS weakened).
    WeakensConditionalWrites,
    /// Closing a session is answered without doing it (its ephemerals stay).
    IgnoresSessionClose,
    /// A restart comes back on empty storage ([`FlawedFactory`] only).
    ForgetsOnRestart,
}

/// `inner` with `flaw`.
pub struct Flawed {
    pub inner: Arc<dyn Backend>,
    pub flaw: Flaw,
    /// Kept so `applied()` can hand out receivers of a channel nobody sends on.
    silent: broadcast::Sender<Arc<Txn>>,
}

impl Flawed {
    pub fn wrap(inner: Arc<dyn Backend>, flaw: Flaw) -> Arc<dyn Backend> {
        Arc::new(Flawed {
            inner,
            flaw,
            silent: broadcast::channel(1).0,
        })
    }
}

#[async_trait::async_trait]
impl Backend for Flawed {
    async fn submit(&self, mut req: Envelope) -> Result<Applied, BackendError> {
        match (&mut req.request, self.flaw) {
            (
                Request::Op(WriteOp::SetData { version, .. } | WriteOp::Delete { version, .. }),
                Flaw::WeakensConditionalWrites,
            ) => *version = -1,
            (Request::CloseSession, Flaw::IgnoresSessionClose) => {
                return Ok(Applied {
                    zxid: self.inner.tree().read().last_zxid(),
                    outcome: Outcome::SessionClosed,
                });
            }
            _ => {}
        }
        self.inner.submit(req).await
    }
    fn tree(&self) -> TreeView {
        self.inner.tree()
    }
    async fn barrier(&self) -> Result<Zxid, BackendError> {
        if self.flaw == Flaw::BarrierDoesNotWait {
            return Ok(self.inner.tree().read().last_zxid());
        }
        self.inner.barrier().await
    }
    fn applied(&self) -> broadcast::Receiver<Arc<Txn>> {
        if self.flaw == Flaw::SilentAppliedStream {
            return self.silent.subscribe();
        }
        self.inner.applied()
    }
    async fn touch(&self, sessions: &[SessionId]) -> Result<(), BackendError> {
        if self.flaw == Flaw::IgnoresTouch {
            return Ok(());
        }
        self.inner.touch(sessions).await
    }
    fn capabilities(&self) -> Capabilities {
        let mut c = self.inner.capabilities();
        if self.flaw == Flaw::ClaimsNoMultiButRunsIt {
            c.multi = false;
        }
        c
    }
    fn status(&self) -> ClusterStatus {
        self.inner.status()
    }
}

/// A factory whose members all carry `flaw`.
pub struct FlawedFactory<F> {
    pub inner: F,
    pub flaw: Flaw,
}

#[async_trait::async_trait]
impl<F: Factory> Factory for FlawedFactory<F> {
    fn name(&self) -> String {
        format!("{} with {:?}", self.inner.name(), self.flaw)
    }
    async fn start(&mut self) -> Vec<Arc<dyn Backend>> {
        let m = self.inner.start().await;
        m.into_iter().map(|b| Flawed::wrap(b, self.flaw)).collect()
    }
    async fn restart(&mut self) -> Vec<Arc<dyn Backend>> {
        let m = if self.flaw == Flaw::ForgetsOnRestart {
            self.inner.stop().await;
            self.inner.start().await
        } else {
            self.inner.restart().await
        };
        m.into_iter().map(|b| Flawed::wrap(b, self.flaw)).collect()
    }
    async fn stop(&mut self) {
        self.inner.stop().await
    }
    fn tick_ms(&self) -> u64 {
        self.inner.tick_ms()
    }
}
