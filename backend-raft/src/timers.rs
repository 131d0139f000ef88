//! Periodic duties: session expiry and the container manager (leader only), and relaying a
//! follower's session touches to the leader (every half tick, as ZooKeeper followers ping).

use crate::backend::{RaftBackend, Route};
use crate::network::Forward;
use roster_core::backend::Backend;
use roster_core::txn::{Envelope, Request};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

pub(crate) fn spawn_all(me: &Arc<RaftBackend>) {
    let half_tick = Duration::from_millis((me.cfg.tick_ms / 2).max(10));
    every(me, half_tick, expire_sessions);
    every(me, half_tick, relay_touches);
    every(
        me,
        Duration::from_millis(me.cfg.container_check_ms.max(10)),
        remove_containers,
    );
}

/// Run `duty` every `period` until the backend is dropped or shut down.
fn every<F, Fut>(me: &Arc<RaftBackend>, period: Duration, duty: F)
where
    F: Fn(Arc<RaftBackend>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let weak = Arc::downgrade(me);
    tokio::spawn(async move {
        let mut iv = tokio::time::interval(period);
        iv.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            iv.tick().await;
            let Some(me) = weak.upgrade() else { return };
            if me.closed.load(Ordering::Acquire) {
                return;
            }
            duty(me).await;
        }
    });
}

async fn expire_sessions(me: Arc<RaftBackend>) {
    if !me.is_leading() {
        return;
    }
    let now = me.shared.now_ms();
    let expired = me.shared.sessions.lock().expired(now);
    for id in expired {
        tracing::info!(session = format!("{id:#x}"), "session expired");
        metrics::counter!("roster_sessions_expired_total").increment(1);
        let me = me.clone();
        tokio::spawn(async move {
            let env = Envelope {
                session: id,
                ..Envelope::internal(Request::CloseSession)
            };
            if let Err(e) = me.submit_local(env).await {
                // A new leader re-arms the session and expires it again.
                tracing::warn!(session = format!("{id:#x}"), error = %e, "closing expired session failed");
            }
        });
    }
}

async fn relay_touches(me: Arc<RaftBackend>) {
    let ids: Vec<_> = me.touched.lock().drain().collect();
    if ids.is_empty() {
        return;
    }
    match me.route() {
        Route::Local => {
            let now = me.shared.now_ms();
            let mut t = me.shared.sessions.lock();
            for id in ids {
                t.touch(id, now);
            }
        }
        Route::Remote(peer) => {
            if let Err(e) = me
                .transport
                .forward(&peer, Forward::Touch(ids.clone()))
                .await
            {
                tracing::debug!(leader = peer.id, error = %e, "session touch relay failed; retrying next tick");
                me.touched.lock().extend(ids);
            }
        }
        Route::None => me.touched.lock().extend(ids),
    }
}

async fn remove_containers(me: Arc<RaftBackend>) {
    if !me.is_leading() {
        return;
    }
    let due = me
        .shared
        .tree
        .read()
        .expired_containers(crate::proposer::wall_ms());
    for path in due {
        let env = Envelope::internal(Request::DeleteContainer { path: path.clone() });
        match me.submit(env).await {
            Ok(a) => tracing::debug!(path, ?a.outcome, "container manager"),
            Err(e) => tracing::warn!(path, error = %e, "container delete failed"),
        }
    }
}
