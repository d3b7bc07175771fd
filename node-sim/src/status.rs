//! Pod status documents as a kubelet would write them, one per simulated outcome.

use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};
use serde_json::{json, Value};

/// What the container is doing, as reported in `containerStatuses`.
pub enum Container<'a> {
    Running { ready: bool },
    Waiting { reason: &'a str, message: &'a str },
}

/// A full `status` merge patch for a pod bound to our node.
pub fn pod_status(
    phase: &str,
    node_ip: &str,
    container_name: &str,
    image: &str,
    container: Container<'_>,
    restart_count: i32,
) -> Value {
    let now = Time(Timestamp::now());
    let ready = matches!(container, Container::Running { ready: true });
    let (state, started) = match &container {
        Container::Running { .. } => (json!({"running": {"startedAt": now}}), true),
        Container::Waiting { reason, message } => (
            json!({"waiting": {"reason": reason, "message": message}}),
            false,
        ),
    };
    let last_state = if restart_count > 0 {
        json!({"terminated": {"exitCode": 1, "reason": "Error", "startedAt": now, "finishedAt": now}})
    } else {
        json!({})
    };
    let not_ready_reason = (!ready).then_some("ContainersNotReady");
    let condition = |type_: &str, ok: bool, reason: Option<&str>| {
        let mut c = json!({
            "type": type_, "status": if ok { "True" } else { "False" }, "lastTransitionTime": now,
        });
        if let Some(r) = reason {
            c["reason"] = json!(r);
            c["message"] = json!(format!(
                "containers with unready status: [{container_name}]"
            ));
        }
        c
    };
    json!({
        "status": {
            "phase": phase,
            "hostIP": node_ip,
            "podIP": node_ip,
            "podIPs": [{"ip": node_ip}],
            "startTime": now,
            "conditions": [
                condition("Initialized", true, None),
                condition("Ready", ready, not_ready_reason),
                condition("ContainersReady", ready, not_ready_reason),
                condition("PodScheduled", true, None),
            ],
            "containerStatuses": [{
                "name": container_name,
                "image": image,
                "imageID": if started { format!("sim://{image}") } else { String::new() },
                "ready": ready,
                "started": started,
                "restartCount": restart_count,
                "state": state,
                "lastState": last_state,
            }],
        }
    })
}

/// The status the scheduler writes when no node fits.
pub fn unschedulable(node_name: &str) -> Value {
    json!({
        "status": {
            "phase": "Pending",
            "conditions": [{
                "type": "PodScheduled",
                "status": "False",
                "reason": "Unschedulable",
                "message": format!("0/1 nodes are available: 1 node(s) ({node_name}) rejected the pod (simulated unschedulable)."),
                "lastTransitionTime": Time(Timestamp::now()),
            }],
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn condition<'a>(s: &'a Value, t: &str) -> &'a Value {
        s["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == t)
            .unwrap()
    }

    #[test]
    fn ready_pod_is_running_and_ready() {
        let s = pod_status(
            "Running",
            "127.0.0.1",
            "sandbox",
            "img",
            Container::Running { ready: true },
            0,
        );
        assert_eq!(s["status"]["phase"], "Running");
        assert_eq!(condition(&s, "Ready")["status"], "True");
        assert_eq!(s["status"]["containerStatuses"][0]["ready"], true);
        assert!(s["status"]["containerStatuses"][0]["state"]["running"].is_object());
    }

    #[test]
    fn waiting_pod_carries_reason_and_is_not_ready() {
        let s = pod_status(
            "Pending",
            "127.0.0.1",
            "sandbox",
            "img",
            Container::Waiting {
                reason: "ImagePullBackOff",
                message: "m",
            },
            0,
        );
        assert_eq!(condition(&s, "Ready")["status"], "False");
        assert_eq!(condition(&s, "Ready")["reason"], "ContainersNotReady");
        assert_eq!(
            s["status"]["containerStatuses"][0]["state"]["waiting"]["reason"],
            "ImagePullBackOff"
        );
    }

    #[test]
    fn restarts_record_last_termination() {
        let s = pod_status(
            "Running",
            "127.0.0.1",
            "sandbox",
            "img",
            Container::Waiting {
                reason: "CrashLoopBackOff",
                message: "m",
            },
            3,
        );
        assert_eq!(s["status"]["containerStatuses"][0]["restartCount"], 3);
        assert_eq!(
            s["status"]["containerStatuses"][0]["lastState"]["terminated"]["exitCode"],
            1
        );
    }

    #[test]
    fn unschedulable_sets_pod_scheduled_false() {
        let s = unschedulable("n");
        assert_eq!(condition(&s, "PodScheduled")["reason"], "Unschedulable");
        assert_eq!(condition(&s, "PodScheduled")["status"], "False");
    }
}
