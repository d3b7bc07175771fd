//! What a simulated pod does, chosen per pod so that tests can provoke each failure status.
//!
//! Annotations on the pod:
//! - `node-sim.sandbox-provisioner.dev/mode`: `ready` (default), `image-pull-failure`,
//!   `crash-loop`, `never-ready` or `unschedulable`;
//! - `node-sim.sandbox-provisioner.dev/start-delay-ms`: delay before the pod starts, in ms.
//!
//! - `node-sim.sandbox-provisioner.dev/pull-ms`: how long pulling each of the pod's images takes
//!   when it is not on the node yet, in ms.
//!
//! Where the pod's creator cannot set annotations, the image tag can say the same in
//! directives joined by `_`: the first container's tag chooses the mode (`sim-<mode>`, for
//! example `sandbox:sim-crash-loop`) and the boot time (`sim-delay-<ms>`, for example
//! `sandbox:sim-delay-1500`), and each image's own tag its pull time (`sim-pull-<ms>`), so
//! `sandbox:sim-pull-20000_sim-delay-2000` takes 20 s to pull and 2 s to boot.
//!
//! The start delay is the container's boot: from its start until it answers probes.

use std::{collections::BTreeMap, time::Duration};

use k8s_openapi::api::core::v1::Pod;

/// Annotation choosing the simulated behaviour.
pub const MODE_ANNOTATION: &str = "node-sim.sandbox-provisioner.dev/mode";
/// Annotation delaying the simulated start.
pub const DELAY_ANNOTATION: &str = "node-sim.sandbox-provisioner.dev/start-delay-ms";
/// Annotation setting how long pulling each absent image of the pod takes.
pub const PULL_ANNOTATION: &str = "node-sim.sandbox-provisioner.dev/pull-ms";

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
        .into_iter()
        .flat_map(directives)
        .find_map(Mode::parse)
        .unwrap_or(Mode::Ready)
}

/// Start delay of a pod: its annotation, its image tag, or the simulator's default.
pub fn start_delay(pod: &Pod, default: Duration) -> Duration {
    let annotations: Option<&BTreeMap<String, String>> = pod.metadata.annotations.as_ref();
    annotations
        .and_then(|a| a.get(DELAY_ANNOTATION))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .or_else(|| first_image(pod).and_then(|image| directive_ms(image, "delay-")))
        .map(Duration::from_millis)
        .unwrap_or(default)
}

/// How long pulling `image` for this pod takes: the pod's annotation, the image's tag, or the
/// simulator's default.
pub fn pull_time(pod: &Pod, image: &str, default: Duration) -> Duration {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(PULL_ANNOTATION))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .or_else(|| directive_ms(image, "pull-"))
        .map(Duration::from_millis)
        .unwrap_or(default)
}

/// The `sim-` directives of an image's tag, without the prefix.
fn directives(image: &str) -> impl Iterator<Item = &str> {
    image_tag(image)
        .into_iter()
        .flat_map(|tag| tag.split('_'))
        .filter_map(|d| d.strip_prefix("sim-"))
}

/// The milliseconds of directive `sim-<name><ms>`.
fn directive_ms(image: &str, name: &str) -> Option<u64> {
    directives(image).find_map(|d| d.strip_prefix(name)?.parse().ok())
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
    fn directives_combine_in_one_tag() {
        let p = pod(&[], "reg:5000/sandbox:sim-pull-20000_sim-delay-2000");
        let d = Duration::from_millis(7);
        assert_eq!(start_delay(&p, d), Duration::from_millis(2000));
        assert_eq!(
            pull_time(&p, "reg:5000/sandbox:sim-pull-20000_sim-delay-2000", d),
            Duration::from_millis(20_000)
        );
        assert_eq!(pull_time(&p, "pause:3", d), d);
        assert_eq!(mode_of(&p), Mode::Ready);
        assert_eq!(
            mode_of(&pod(&[], "s:sim-delay-10_sim-never-ready")),
            Mode::NeverReady
        );
        let annotated = pod(&[(PULL_ANNOTATION, "900")], "s:sim-pull-5");
        assert_eq!(
            pull_time(&annotated, "s:sim-pull-5", d),
            Duration::from_millis(900)
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
