//! From a Pod to the sandbox's status: phase, readiness, and the most useful reason it is not
//! ready (image pull, crash loop, scheduling, probes).

use k8s_openapi::api::core::v1::{ContainerStatus, Pod, PodCondition};

use crate::{
    sandbox::{Phase, SandboxStatus},
    spec::keys::{BINDS_ANNOTATION, DATA_BOUND_CONDITION, DATA_NOT_BOUND_REASON},
};

/// A claimed pool Pod's readiness: its containers, and its data bound by the node agent. The
/// kubelet folds the agent's condition into Ready too (a readiness gate), one round trip later.
fn bound_pod_ready(conditions: &[PodCondition]) -> bool {
    let is_true = |type_| condition(conditions, type_).is_some_and(|c| c.status == "True");
    is_true("ContainersReady") && is_true(DATA_BOUND_CONDITION)
}

fn is_claimed_from_pool(pod: &Pod) -> bool {
    pod.metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(BINDS_ANNOTATION))
}

/// Reads the status a kubelet and scheduler wrote on the pod.
pub fn status_of(pod: &Pod) -> SandboxStatus {
    let status = pod.status.as_ref();
    let phase = match status.and_then(|s| s.phase.as_deref()) {
        None | Some("Pending") => Phase::Pending,
        Some("Running") => Phase::Running,
        Some("Succeeded") => Phase::Succeeded,
        Some("Failed") => Phase::Failed,
        Some(_) => Phase::Unknown,
    };
    let conditions = status.and_then(|s| s.conditions.as_deref()).unwrap_or(&[]);
    let ready = match is_claimed_from_pool(pod) {
        true => bound_pod_ready(conditions),
        false => condition(conditions, "Ready").is_some_and(|c| c.status == "True"),
    };
    let (reason, message) = if pod.metadata.deletion_timestamp.is_some() {
        (
            Some("Terminating".to_string()),
            Some("the sandbox is being deleted".to_string()),
        )
    } else if ready {
        (None, None)
    } else {
        cause(pod, phase, conditions)
    };
    SandboxStatus {
        phase,
        ready,
        reason,
        message,
    }
}

fn condition<'a>(conditions: &'a [PodCondition], type_: &str) -> Option<&'a PodCondition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// The first cause that explains why a pod is not ready, most specific first.
fn cause(pod: &Pod, phase: Phase, conditions: &[PodCondition]) -> (Option<String>, Option<String>) {
    let status = pod.status.as_ref();
    // Pod-level reasons (Evicted, NodeLost, ...).
    if let Some(reason) = status.and_then(|s| s.reason.clone()) {
        return (Some(reason), status.and_then(|s| s.message.clone()));
    }
    let containers: Vec<&ContainerStatus> = status
        .into_iter()
        .flat_map(|s| {
            s.init_container_statuses
                .iter()
                .flatten()
                .chain(s.container_statuses.iter().flatten())
        })
        .collect();
    // A container waiting for a reason (ImagePullBackOff, CrashLoopBackOff, ...).
    for c in &containers {
        if let Some(w) = c.state.as_ref().and_then(|s| s.waiting.as_ref()) {
            if let Some(reason) = w.reason.clone() {
                let message = w.message.clone().or_else(|| {
                    (c.restart_count > 0).then(|| format!("restarted {} times", c.restart_count))
                });
                return (Some(reason), message);
            }
        }
    }
    // A container that ended.
    for c in &containers {
        if let Some(t) = c.state.as_ref().and_then(|s| s.terminated.as_ref()) {
            let reason = t.reason.clone().unwrap_or_else(|| "Terminated".into());
            let message = t.message.clone().or_else(|| {
                Some(format!(
                    "container {} exited with code {}",
                    c.name, t.exit_code
                ))
            });
            return (Some(reason), message);
        }
    }
    // A claimed pool Pod whose data the node agent could not bind, or has not yet.
    if is_claimed_from_pool(pod) {
        match condition(conditions, DATA_BOUND_CONDITION) {
            Some(c) if c.status == "False" => {
                return (
                    Some(
                        c.reason
                            .clone()
                            .unwrap_or_else(|| DATA_NOT_BOUND_REASON.into()),
                    ),
                    c.message.clone(),
                )
            }
            None => {
                return (
                    Some("BindingData".into()),
                    Some("the node agent has not bound the thread's data yet".into()),
                )
            }
            Some(_) => {}
        }
    }
    // Not placed on a node (Unschedulable).
    if let Some(c) = condition(conditions, "PodScheduled").filter(|c| c.status == "False") {
        return (
            Some(c.reason.clone().unwrap_or_else(|| "NotScheduled".into())),
            c.message.clone(),
        );
    }
    // Running but failing its readiness probe.
    if phase == Phase::Running {
        if let Some(c) = condition(conditions, "Ready").filter(|c| c.status == "False") {
            return (
                Some(c.reason.clone().unwrap_or_else(|| "NotReady".into())),
                c.message.clone(),
            );
        }
    }
    (None, None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(status: serde_json::Value) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "p"}, "status": status})).unwrap()
    }

    #[test]
    fn fresh_pod_is_pending_without_reason() {
        let s = status_of(&pod(json!({})));
        assert_eq!(
            s,
            SandboxStatus {
                phase: Phase::Pending,
                ready: false,
                reason: None,
                message: None
            }
        );
    }

    #[test]
    fn running_and_ready() {
        let s = status_of(&pod(json!({
            "phase": "Running",
            "conditions": [{"type": "Ready", "status": "True"}],
        })));
        assert_eq!((s.phase, s.ready, s.reason), (Phase::Running, true, None));
    }

    #[test]
    fn image_pull_backoff_is_reported() {
        let s = status_of(&pod(json!({
            "phase": "Pending",
            "conditions": [{"type": "Ready", "status": "False", "reason": "ContainersNotReady"}],
            "containerStatuses": [{
                "name": "sandbox", "image": "i", "imageID": "", "ready": false, "restartCount": 0,
                "state": {"waiting": {"reason": "ImagePullBackOff", "message": "Back-off pulling \
                    image \"i\""}},
            }],
        })));
        assert_eq!(s.phase, Phase::Pending);
        assert_eq!(s.reason.as_deref(), Some("ImagePullBackOff"));
        assert_eq!(s.message.as_deref(), Some("Back-off pulling image \"i\""));
    }

    #[test]
    fn crash_loop_mentions_restarts_when_no_message() {
        let s = status_of(&pod(json!({
            "phase": "Running",
            "containerStatuses": [{
                "name": "sandbox", "image": "i", "imageID": "", "ready": false, "restartCount": 4,
                "state": {"waiting": {"reason": "CrashLoopBackOff"}},
            }],
        })));
        assert_eq!(s.reason.as_deref(), Some("CrashLoopBackOff"));
        assert_eq!(s.message.as_deref(), Some("restarted 4 times"));
    }

    #[test]
    fn unschedulable_comes_from_pod_scheduled() {
        let s = status_of(&pod(json!({
            "phase": "Pending",
            "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                            "message": "0/1 nodes are available"}],
        })));
        assert_eq!(s.reason.as_deref(), Some("Unschedulable"));
        assert_eq!(s.message.as_deref(), Some("0/1 nodes are available"));
    }

    #[test]
    fn running_but_not_ready_reports_the_condition() {
        let s = status_of(&pod(json!({
            "phase": "Running",
            "conditions": [{"type": "Ready", "status": "False", "reason": "ContainersNotReady",
                            "message": "containers with unready status: [sandbox]"}],
            "containerStatuses": [{
                "name": "sandbox", "image": "i", "imageID": "", "ready": false, "restartCount": 0,
                "state": {"running": {}},
            }],
        })));
        assert_eq!((s.phase, s.ready), (Phase::Running, false));
        assert_eq!(s.reason.as_deref(), Some("ContainersNotReady"));
    }

    #[test]
    fn evicted_and_terminated_and_unknown_phase() {
        let s = status_of(&pod(
            json!({"phase": "Failed", "reason": "Evicted", "message": "low memory"}),
        ));
        assert_eq!(
            (s.phase, s.reason.as_deref()),
            (Phase::Failed, Some("Evicted"))
        );
        let s = status_of(&pod(json!({
            "phase": "Failed",
            "containerStatuses": [{
                "name": "sandbox", "image": "i", "imageID": "", "ready": false, "restartCount": 0,
                "state": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}},
            }],
        })));
        assert_eq!(s.reason.as_deref(), Some("OOMKilled"));
        assert_eq!(
            s.message.as_deref(),
            Some("container sandbox exited with code 137")
        );
        assert_eq!(
            status_of(&pod(json!({"phase": "Weird"}))).phase,
            Phase::Unknown
        );
    }

    #[test]
    fn terminating_pod_says_so() {
        let mut p =
            pod(json!({"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}));
        p.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            k8s_openapi::jiff::Timestamp::now(),
        ));
        assert_eq!(status_of(&p).reason.as_deref(), Some("Terminating"));
    }

    #[test]
    fn a_claimed_pool_pod_is_ready_once_its_data_is_bound() {
        let claimed = |conditions: serde_json::Value| {
            let mut p = pod(json!({"phase": "Running", "conditions": conditions}));
            p.metadata.annotations = Some([(BINDS_ANNOTATION.to_string(), "[]".into())].into());
            status_of(&p)
        };
        let containers = json!({"type": "ContainersReady", "status": "True"});
        let waiting = claimed(json!([containers]));
        assert!(!waiting.ready);
        assert_eq!(waiting.reason.as_deref(), Some("BindingData"));
        let bound = json!({"type": DATA_BOUND_CONDITION, "status": "True"});
        assert!(
            claimed(json!([containers, bound])).ready,
            "Ready itself may lag"
        );
        let failed = json!({"type": DATA_BOUND_CONDITION, "status": "False",
            "reason": "SourceMissing", "message": "/x does not exist"});
        let s = claimed(json!([containers, failed]));
        assert!(!s.ready);
        assert_eq!(s.reason.as_deref(), Some("SourceMissing"));
        assert!(
            !claimed(json!([bound])).ready,
            "the containers must be ready too"
        );
    }
}
