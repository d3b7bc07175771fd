//! The pool keeper: on the replica that holds the lease, keeps each warm pool at its target
//! (see `Cluster::keep_pools`). A round runs when the cluster's objects change (a claim, a Pod
//! becoming ready or going) and at least every few seconds.

use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::leader::Leadership;
use crate::cluster::Cluster;

/// The shortest pause between rounds: a burst of claims is answered by one round.
const AT_MOST_EVERY: Duration = Duration::from_millis(200);
/// The longest pause between rounds.
const AT_LEAST_EVERY: Duration = Duration::from_secs(2);
/// Failures are logged when they start and then at most this often while they last.
const FAILURE_LOG_EVERY: Duration = Duration::from_secs(60);

/// Starts the keeper (a no-op for a cluster without pools); it stops when `shutdown` turns
/// true or its sender is dropped.
pub fn spawn(cluster: Cluster, leadership: Leadership, mut shutdown: watch::Receiver<bool>) {
    if !cluster.spec().warm_pool.on() {
        return;
    }
    tokio::spawn(async move {
        let mut last_logged: Option<Instant> = None;
        loop {
            if leadership.is_leader() {
                let round = cluster.keep_pools(|| leadership.is_leader()).await;
                if round.created + round.removed > 0 {
                    tracing::debug!(
                        created = round.created,
                        removed = round.removed,
                        "pool keeper round"
                    );
                }
                match round.failures.first() {
                    Some(first) if last_logged.is_none_or(|t| t.elapsed() >= FAILURE_LOG_EVERY) => {
                        last_logged = Some(Instant::now());
                        tracing::warn!(failures = round.failures.len(), first = %first,
                            "the pool keeper could not keep every pool at its target; it \
                            retries every round (logged again at most once a minute)");
                    }
                    Some(_) => {}
                    None => last_logged = None,
                }
            }
            let paused = tokio::time::sleep(AT_MOST_EVERY);
            tokio::select! {
                _ = async {
                    paused.await;
                    let mut first = true;
                    cluster.cache().wait_for(AT_LEAST_EVERY, |_| !std::mem::take(&mut first)).await;
                } => {}
                changed = shutdown.changed() => {
                    if changed.is_err() || *shutdown.borrow() {
                        break;
                    }
                }
            }
        }
        tracing::debug!("pool keeper stopped");
    });
}
