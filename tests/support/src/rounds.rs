//! Waiting for the service's background loops to have run, instead of sleeping and hoping:
//! a test that asserts that something did not happen first waits until the loop that would
//! have done it has completed its rounds (counted on `/metrics`).

use std::time::Duration;

use crate::eventually;

/// Whether the service leads its default cluster's reaping (1) or not (0).
pub const LEADER: &str = r#"sandbox_provisioner_leader{cluster="default"}"#;

/// The sum of every sample of a metric family whose name (with labels) starts with `prefix`,
/// from the service at `base`.
pub async fn metric_sum(base: &str, prefix: &str) -> f64 {
    let text = reqwest::get(format!("{base}/metrics"))
        .await
        .expect("the service answers /metrics")
        .text()
        .await
        .expect("a metrics page");
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

/// Waits until the samples of `prefix` have grown by `more` (for up to a minute).
pub async fn counted(base: &str, prefix: &str, more: f64, what: &str) {
    let from = metric_sum(base, prefix).await;
    eventually(Duration::from_secs(60), what, || async {
        (metric_sum(base, prefix).await >= from + more).then_some(())
    })
    .await;
}

/// Waits until the reaper of the service at `base` has ended `rounds` more rounds (as leader
/// or follower), so that whatever they would do is done.
pub async fn reaper_rounds(base: &str, rounds: u32) {
    let what = format!("{rounds} more reaper rounds");
    counted(base, REAPER_ROUNDS, f64::from(rounds), &what).await;
}

/// The reaper's completed rounds, every cluster and role.
pub const REAPER_ROUNDS: &str = "sandbox_provisioner_reaper_rounds_total{";
/// Checks of the tenant file, every result (`...{result="invalid"}` for one).
pub const TENANT_FILE_CHECKS: &str = "sandbox_provisioner_tenant_file_checks_total{";
