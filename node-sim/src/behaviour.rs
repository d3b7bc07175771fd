//! What a simulated pod does, chosen per pod so that tests can provoke each failure status.
//!
//! Annotations on the pod:
//! - `node-sim.sandbox-provisioner.dev/mode`: `ready` (default), `image-pull-failure`,
//!   `crash-loop`, `never-ready` or `unschedulable`;
//! - `node-sim.sandbox-provisioner.dev/start-delay-ms`: delay before the pod starts, in ms.
//!
//! Where the pod's creator cannot set annotations, the mode can also be chosen by the image
//! tag of the first container: `sim-<mode>` (for example `sandbox:sim-crash-loop`), and the
//! start delay by `sim-delay-<ms>` (for example `sandbox:sim-delay-1500`).

use std::{collections::BTreeMap, time::Duration};

use k8s_openapi::api::core::v1::Pod;

/// Annotation choosing the simulated behaviour.
pub const MODE_ANNOTATION: &str = "node-sim.sandbox-provisioner.dev/mode";
/// Annotation delaying the simulated start.
pub const DELAY_ANNOTATION: &str = "node-sim.sandbox-provisioner.dev/start-delay-ms";

/// The simulated outcome for one pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Ready,
    ImagePullFailure,
    CrashLoop,
    NeverReady,
    Unschedulable,
}

impl Mode {
    fn parse(s: &str) -> Option<Mode> {
        Some(match s {
            "ready" => Mode::Ready,
            "image-pull-failure" => Mode::ImagePullFailure,
            "crash-loop" => Mode::CrashLoop,
            "never-ready" => Mode::NeverReady,
            "unschedulable" => Mode::Unschedulable,
            _ => return None,
        })
    }
}

/// Reads the behaviour of a pod from its annotations, then its image tag.
pub fn mode_of(pod: &Pod) -> Mode {
    let annotations = pod.metadata.annotations.as_ref();
    if let Some(mode) = annotations
        .and_then(|a| a.get(MODE_ANNOTATION))
        .and_then(|m| Mode::parse(m.trim()))
    {
        return mode;
    }
    first_image(pod)
        .and_then(image_tag)
        .and_then(|tag| tag.strip_prefix("sim-"))
        .and_then(Mode::parse)
        .unwrap_or(Mode::Ready)
}

/// Start delay of a pod: its annotation, its image tag, or the simulator's default.
pub fn start_delay(pod: &Pod, default: Duration) -> Duration {
    let annotations: Option<&BTreeMap<String, String>> = pod.metadata.annotations.as_ref();
    annotations
        .and_then(|a| a.get(DELAY_ANNOTATION))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .or_else(|| {
            first_image(pod)
                .and_then(image_tag)
                .and_then(|t| t.strip_prefix("sim-delay-"))
                .and_then(|ms| ms.parse().ok())
        })
        .map(Duration::from_millis)
        .unwrap_or(default)
}

pub fn first_image(pod: &Pod) -> Option<&str> {
    pod.spec.as_ref()?.containers.first()?.image.as_deref()
}

fn image_tag(image: &str) -> Option<&str> {
    let last = image.rsplit('/').next()?;
    last.rsplit_once(':').map(|(_, tag)| tag)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{Container, PodSpec};

    fn pod(annotations: &[(&str, &str)], image: &str) -> Pod {
        let mut pod = Pod::default();
        pod.metadata.annotations = Some(
            annotations
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        pod.spec = Some(PodSpec {
            containers: vec![Container {
                name: "c".into(),
                image: Some(image.into()),
                ..Default::default()
            }],
            ..Default::default()
        });
        pod
    }

    #[test]
    fn annotation_wins_over_image_tag() {
        let p = pod(&[(MODE_ANNOTATION, "never-ready")], "img:sim-crash-loop");
        assert_eq!(mode_of(&p), Mode::NeverReady);
    }

    #[test]
    fn image_tag_selects_mode() {
        assert_eq!(
            mode_of(&pod(&[], "reg:5000/a/img:sim-crash-loop")),
            Mode::CrashLoop
        );
        assert_eq!(mode_of(&pod(&[], "reg:5000/a/img")), Mode::Ready);
        assert_eq!(mode_of(&pod(&[], "img:latest")), Mode::Ready);
    }

    #[test]
    fn unknown_mode_means_ready() {
        assert_eq!(
            mode_of(&pod(&[(MODE_ANNOTATION, "bogus")], "i")),
            Mode::Ready
        );
    }

    #[test]
    fn delay_from_annotation_image_tag_or_default() {
        let d = Duration::from_millis(7);
        let p = pod(&[(DELAY_ANNOTATION, "250")], "i:sim-delay-900");
        assert_eq!(start_delay(&p, d), Duration::from_millis(250));
        assert_eq!(
            start_delay(&pod(&[], "i:sim-delay-900"), d),
            Duration::from_millis(900)
        );
        assert_eq!(start_delay(&pod(&[], "i"), d), d);
        assert_eq!(mode_of(&pod(&[], "i:sim-delay-900")), Mode::Ready);
    }
}
