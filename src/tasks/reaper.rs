//! The reaper: every SANDBOX_REAP_INTERVAL, on the replica that holds the lease, removes
//! expired sandboxes and sweeps orphans (see `Cluster::reap` and `Cluster::sweep`).

use std::time::Duration;

use tokio::sync::watch;

use super::leader::Leadership;
use crate::cluster::Cluster;

/// Starts the reaper; it stops when `shutdown` turns true or its sender is dropped.
pub fn spawn(
    provisioner: Cluster,
    interval: Duration,
    leadership: Leadership,
    mut shutdown: watch::Receiver<bool>,
) {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticks.tick() => {
                    let leading = leadership.is_leader();
                    provisioner.metrics().leader(leading);
                    if !leading {
                        provisioner.metrics().reaper_round(false);
                        continue;
                    }
                    // Checked again before every deletion: a replica that loses the lease
                    // mid-round stops there.
                    let removed = provisioner.reap(|| leadership.is_leader()).await;
                    let swept = provisioner.sweep(|| leadership.is_leader()).await;
                    if removed + swept > 0 {
                        tracing::info!(removed, swept, "reaper removed expired sandboxes and \
                            orphans");
                    }
                    provisioner.metrics().reaper_round(true);
                }
                changed = shutdown.changed() => {
                    if changed.is_err() || *shutdown.borrow() {
                        break;
                    }
                }
            }
        }
        tracing::debug!("reaper stopped");
    });
}
