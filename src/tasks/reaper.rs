//! The reaper: every SANDBOX_REAP_INTERVAL, removes sandboxes whose lifetime, idle or ready
//! timer ran out (see `Provisioner::reap`).

use std::time::Duration;

use tokio::sync::watch;

use crate::provisioner::Provisioner;

/// Starts the reaper; it stops when `shutdown` turns true or its sender is dropped.
pub fn spawn(provisioner: Provisioner, interval: Duration, mut shutdown: watch::Receiver<bool>) {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticks.tick() => {
                    let removed = provisioner.reap().await;
                    if removed > 0 {
                        tracing::info!(removed, "reaper removed expired sandboxes");
                    }
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
