//! What the bench binaries share: figures and the environment of the provisioner they start.

use std::time::Duration;

use crate::kubeconfig_path;

/// A duration in milliseconds.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// p50 and p99 of samples, in milliseconds (nearest rank).
pub fn percentiles_ms(mut samples: Vec<Duration>) -> (f64, f64) {
    assert!(!samples.is_empty(), "no samples to take percentiles of");
    samples.sort();
    let at = |q: f64| ms(samples[((samples.len() as f64 - 1.0) * q).round() as usize]);
    (at(0.50), at(0.99))
}

/// The provisioner as the benches run it: the first cluster's kubeconfig, `namespace`,
/// `image`, the node simulator's NodePorts on 127.0.0.1, room for many concurrent clients and
/// quiet logs. Add or override variables by pushing more (a later one wins).
pub fn bench_env(namespace: &str, image: &str) -> Vec<(&'static str, String)> {
    vec![
        ("KUBECONFIG_PATH", kubeconfig_path().display().to_string()),
        ("K8S_NAMESPACE", namespace.into()),
        ("SANDBOX_IMAGE", image.into()),
        ("NODE_HOST", "127.0.0.1".into()),
        ("PROVISIONER_MAX_CONCURRENT_REQUESTS", "1024".into()),
        ("RUST_LOG", "warn".into()),
    ]
}
