//! The backend conformance suite (design §9.2): one set of behaviours every [`Backend`] must
//! show, generic over the contract, run by each backend's own tests (`testkit` feature).
//!
//! A backend's test supplies a [`Factory`] that starts a fresh deployment on empty storage (one
//! member, or a cluster with a leader) and can restart it from the same storage; [`run`] runs
//! each [`Check`] on a fresh deployment and returns a [`Report`] instead of panicking, so a test
//! can also prove that a check fails against a deliberately wrong backend ([`flawed`]).
//!
//! The suite is capability-aware: a backend reporting no sequential nodes / conditional writes /
//! multi / locks must refuse them with [`BackendError::Unsupported`] (never weaken them), and the
//! checks that exercise those features only do so when they are offered.

mod checks;
pub mod flawed;

use crate::acl::{Acl, AuthInfo};
use crate::backend::{Backend, BackendError};
use crate::txn::{Applied, Envelope, OpResult, Outcome, Request, WriteOp};
use crate::{CreateMode, SessionId};
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Builds deployments of the backend under test.
#[async_trait::async_trait]
pub trait Factory: Send {
    /// A label for reports ("zab standalone", "raft 3 members").
    fn name(&self) -> String;
    /// Start a fresh deployment on empty storage and return its members once one of them can
    /// take writes. In a cluster, the checks write through every member, so followers must
    /// forward.
    async fn start(&mut self) -> Vec<Arc<dyn Backend>>;
    /// Stop every member and open it again on the *same* storage engine; return the new
    /// handles (old handles are dropped by the suite).
    async fn restart(&mut self) -> Vec<Arc<dyn Backend>>;
    /// Stop the deployment (end of a check).
    async fn stop(&mut self);
    /// The session tick the deployment was configured with (expiry granularity).
    fn tick_ms(&self) -> u64;
}

/// One behaviour of the contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Check {
    /// create / getData / setData / delete, stats and error codes, through every member.
    Crud,
    /// Version-checked setData / delete (CAS) and `Check` ops, when offered.
    ConditionalWrites,
    /// Sequential numbering: distinct, gap-free under concurrency, continuing after deletes.
    SequentialNodes,
    /// Ephemerals go when their session is closed, on every member; the session is gone.
    EphemeralsOnClose,
    /// Ephemerals go when their session expires (nobody touches it).
    EphemeralsOnExpiry,
    /// `touch` keeps a session alive past its timeout (from any member).
    TouchKeepsAlive,
    /// A multi applies all or nothing and is one transaction.
    MultiAtomicity,
    /// The applied stream carries every transaction in zxid order, and watches fire with the
    /// change's zxid, before the write's reply on the member that answered it.
    WatchesAndAppliedOrder,
    /// `barrier` on any member sees everything committed before the call.
    Barrier,
    /// Each capability is either honoured in full or refused with `Unsupported`.
    Capabilities,
    /// After a restart on the same storage, every acknowledged write, session and ephemeral is
    /// there and zxids keep increasing.
    Recovery,
}

impl Check {
    /// Every check, in the order [`run`] reports them.
    pub const ALL: &'static [Check] = &[
        Check::Crud,
        Check::ConditionalWrites,
        Check::SequentialNodes,
        Check::EphemeralsOnClose,
        Check::EphemeralsOnExpiry,
        Check::TouchKeepsAlive,
        Check::MultiAtomicity,
        Check::WatchesAndAppliedOrder,
        Check::Barrier,
        Check::Capabilities,
        Check::Recovery,
    ];
}

/// What a run came to: one entry per check, `Err` with the reason when it failed.
#[derive(Debug)]
pub struct Report {
    pub subject: String,
    pub results: Vec<(Check, Result<(), String>)>,
}

impl Report {
    /// The checks that failed, with why.
    pub fn failures(&self) -> Vec<(Check, &str)> {
        self.results
            .iter()
            .filter_map(|(c, r)| r.as_ref().err().map(|e| (*c, e.as_str())))
            .collect()
    }

    /// Did `check` fail?
    pub fn failed(&self, check: Check) -> bool {
        self.results.iter().any(|(c, r)| *c == check && r.is_err())
    }

    /// Panic with every failure if any check failed.
    pub fn assert_passed(&self) {
        let f = self.failures();
        assert!(f.is_empty(), "{self}");
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "conformance of {}:", self.subject)?;
        for (c, r) in &self.results {
            match r {
                Ok(()) => writeln!(f, "  ok    {c:?}")?,
                Err(e) => writeln!(f, "  FAIL  {c:?}: {e}")?,
            }
        }
        Ok(())
    }
}

/// How long one check may take before it counts as failed.
const CHECK_DEADLINE: Duration = Duration::from_secs(90);

/// Run `checks`, each on a fresh deployment from `factory`.
pub async fn run(factory: &mut dyn Factory, checks: &[Check]) -> Report {
    let mut results = Vec::new();
    for &check in checks {
        let members = factory.start().await;
        let mut ctx = Ctx {
            members,
            factory: &mut *factory,
        };
        let r = match tokio::time::timeout(CHECK_DEADLINE, checks::run(check, &mut ctx)).await {
            Ok(r) => r,
            Err(_) => Err(format!("did not finish within {CHECK_DEADLINE:?}")),
        };
        drop(ctx);
        factory.stop().await;
        results.push((check, r));
    }
    Report {
        subject: factory.name(),
        results,
    }
}

/// What a check works with.
pub(crate) struct Ctx<'a> {
    pub members: Vec<Arc<dyn Backend>>,
    pub factory: &'a mut dyn Factory,
}

impl Ctx<'_> {
    /// Member `i` (wrapping), so checks written for clusters run on one member too.
    pub fn m(&self, i: usize) -> &Arc<dyn Backend> {
        &self.members[i % self.members.len()]
    }

    pub fn n(&self) -> usize {
        self.members.len()
    }

    pub fn tick(&self) -> Duration {
        Duration::from_millis(self.factory.tick_ms().max(1))
    }
}

pub(crate) type CheckResult = Result<(), String>;

/// `ensure!(cond, "why {}", x)`: fail the check with the message unless `cond` holds.
macro_rules! ensure {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(format!($($fmt)+));
        }
    };
}
pub(crate) use ensure;

pub(crate) fn env(session: SessionId, request: Request) -> Envelope {
    Envelope {
        session,
        auth: Arc::new(AuthInfo::default()),
        request,
    }
}

pub(crate) fn create_req(path: &str, data: &[u8], mode: CreateMode) -> Request {
    Request::Op(WriteOp::Create {
        path: path.into(),
        data: data.to_vec(),
        acl: Acl::open_unsafe(),
        mode,
        ttl: 0,
    })
}

pub(crate) fn set_req(path: &str, data: &[u8], version: i32) -> Request {
    Request::Op(WriteOp::SetData {
        path: path.into(),
        data: data.to_vec(),
        version,
    })
}

pub(crate) fn delete_req(path: &str, version: i32) -> Request {
    Request::Op(WriteOp::Delete {
        path: path.into(),
        version,
    })
}

/// Submit, turning a backend error into a check failure that says what was being done.
pub(crate) async fn submit(
    b: &Arc<dyn Backend>,
    session: SessionId,
    request: Request,
) -> Result<Applied, String> {
    let what = format!("{request:?}");
    b.submit(env(session, request))
        .await
        .map_err(|e| format!("{what} failed: {e}"))
}

/// Submit a create that must succeed; its path.
pub(crate) async fn must_create(
    b: &Arc<dyn Backend>,
    session: SessionId,
    path: &str,
    data: &[u8],
    mode: CreateMode,
) -> Result<(Applied, String), String> {
    let a = submit(b, session, create_req(path, data, mode)).await?;
    match &a.outcome {
        Outcome::Op(OpResult::Created { path: p, .. }) => {
            let p = p.clone();
            Ok((a, p))
        }
        o => Err(format!("create {path}: expected Created, got {o:?}")),
    }
}

pub(crate) async fn new_session(
    b: &Arc<dyn Backend>,
    timeout_ms: i32,
) -> Result<SessionId, String> {
    match submit(b, 0, Request::CreateSession { timeout_ms })
        .await?
        .outcome
    {
        Outcome::SessionCreated { session, .. } => Ok(session),
        o => Err(format!("create session: {o:?}")),
    }
}

/// Barrier, retried while the deployment has no leader (just started or restarted).
pub(crate) async fn barrier(b: &Arc<dyn Backend>) -> Result<crate::Zxid, String> {
    retry(Duration::from_secs(20), || b.barrier())
        .await
        .map_err(|e| format!("barrier: {e}"))
}

/// Retry while the answer is `Unavailable`, until `within` has passed.
pub(crate) async fn retry<T, F, Fut>(within: Duration, mut f: F) -> Result<T, BackendError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, BackendError>>,
{
    let deadline = Instant::now() + within;
    loop {
        match f().await {
            Err(BackendError::Unavailable(_)) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            r => return r,
        }
    }
}

/// Poll `cond` every 10 ms until it holds or `within` passes.
pub(crate) async fn eventually(within: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
