//! Pod status documents as a kubelet would write them, one per simulated outcome.

use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};
use serde_json::{json, Value};

/// What the container is doing, as reported in `containerStatuses`.
pub enum Container<'a> {
    Running { ready: bool },
    Waiting { reason: &'a str, message: &'a str },
}

/// The node's address (`hostIP`) and the one its pods report (`podIP`).
#[derive(Clone, Debug)]
pub struct Addresses {
    pub host: String,
    pub pod: String,
}

#[cfg(test)]
impl Addresses {
    /// Pods that report the node's own address.
    pub fn same(ip: &str) -> Addresses {
        Addresses {
            host: ip.into(),
            pod: ip.into(),
        }
    }
}

/// A full `status` merge patch for a pod bound to our node, everything at this moment.
pub fn pod_status(
    phase: &str,
    addresses: &Addresses,
    container_name: &str,
    image: &str,
    container: Container<'_>,
    restart_count: i32,
) -> Value {
    let now = Timestamp::now();
    let ready = matches!(container, Container::Running { ready: true });
    let names = [(container_name.to_string(), image.to_string())];
    status_at(&View {
        phase,
        addresses,
        containers: &names,
        init_containers: &[],
        container,
        admitted: now,
        container_started: now,
        started: true,
        ready_since: ready.then_some(now),
        restarts: restart_count,
        last_terminated: (restart_count > 0).then_some((now, 1)),
    })
}

/// A pod's state as a kubelet reports it, with the moment of each transition.
pub struct View<'a> {
    pub phase: &'a str,
    pub addresses: &'a Addresses,
    /// Name and image of each container; they share one state (the first one's probes decide).
    pub containers: &'a [(String, String)],
    /// Name and image of each init container (each has run to completion once the containers
    /// run).
    pub init_containers: &'a [(String, String)],
    pub container: Container<'a>,
    /// When the pod was admitted on the node (scheduled, `startTime`).
    pub admitted: Timestamp,
    /// When the current container incarnation started.
    pub container_started: Timestamp,
    /// The startup probe has passed (or there is none).
    pub started: bool,
    /// Ready since then, or not ready.
    pub ready_since: Option<Timestamp>,
    pub restarts: i32,
    /// When the previous incarnation ended, and its exit code (137: killed by a probe).
    pub last_terminated: Option<(Timestamp, i32)>,
}

/// The `status` merge patch for a [`View`].
pub fn status_at(v: &View<'_>) -> Value {
    let ready = v.ready_since.is_some();
    let running = matches!(v.container, Container::Running { .. });
    let state = match &v.container {
        Container::Running { .. } => json!({"running": {"startedAt": Time(v.container_started)}}),
        Container::Waiting { reason, message } => {
            json!({"waiting": {"reason": reason, "message": message}})
        }
    };
    let last_state = match v.last_terminated {
        Some((at, code)) => json!({"terminated": {"exitCode": code, "reason": "Error",
            "startedAt": Time(v.container_started), "finishedAt": Time(at)}}),
        None => json!({}),
    };
    let names: Vec<&str> = v.containers.iter().map(|(n, _)| n.as_str()).collect();
    let not_ready_message = format!("containers with unready status: [{}]", names.join(" "));
    let condition = |type_: &str, ok: bool, since: Timestamp, unready: bool| {
        let mut c = json!({
            "type": type_, "status": if ok { "True" } else { "False" },
            "lastTransitionTime": Time(since),
        });
        if unready {
            c["reason"] = json!("ContainersNotReady");
            c["message"] = json!(not_ready_message);
        }
        c
    };
    let ready_change = v.ready_since.unwrap_or(v.container_started);
    let containers: Vec<Value> = v
        .containers
        .iter()
        .map(|(name, image)| {
            json!({
                "name": name,
                "image": image,
                "imageID": if running { format!("sim://{image}") } else { String::new() },
                "ready": ready,
                "started": running && v.started,
                "restartCount": v.restarts,
                "state": state,
                "lastState": last_state,
            })
        })
        .collect();
    let mut status = json!({
        "phase": v.phase,
        "hostIP": v.addresses.host,
        "podIP": v.addresses.pod,
        "podIPs": [{"ip": v.addresses.pod}],
        "startTime": Time(v.admitted),
        "conditions": [
            condition("Initialized", running || v.init_containers.is_empty(), v.admitted, false),
            condition("Ready", ready, ready_change, !ready),
            condition("ContainersReady", ready, ready_change, !ready),
            condition("PodScheduled", true, v.admitted, false),
        ],
        "containerStatuses": containers,
    });
    if !v.init_containers.is_empty() {
        let init: Vec<Value> = v
            .init_containers
            .iter()
            .map(|(name, image)| {
                let state = if running || v.restarts > 0 {
                    json!({"terminated": {"exitCode": 0, "reason": "Completed",
                        "startedAt": Time(v.container_started), "finishedAt": Time(v.container_started)}})
                } else {
                    json!({"waiting": {"reason": "PodInitializing"}})
                };
                json!({"name": name, "image": image, "imageID": format!("sim://{image}"),
                       "ready": running, "restartCount": 0, "state": state})
            })
            .collect();
        status["initContainerStatuses"] = json!(init);
    }
    json!({ "status": status })
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
            &Addresses::same("127.0.0.1"),
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
            &Addresses::same("127.0.0.1"),
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
            &Addresses::same("127.0.0.1"),
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
    fn transitions_keep_their_own_times() {
        let at = |s: i64| Timestamp::from_second(1_700_000_000 + s).unwrap();
        let containers = [
            ("sandbox".to_string(), "img".to_string()),
            ("broker".to_string(), "b".to_string()),
        ];
        let init = [("init".to_string(), "i".to_string())];
        let s = status_at(&View {
            phase: "Running",
            addresses: &Addresses::same("127.0.0.1"),
            containers: &containers,
            init_containers: &init,
            container: Container::Running { ready: true },
            admitted: at(0),
            container_started: at(20),
            started: true,
            ready_since: Some(at(22)),
            restarts: 0,
            last_terminated: None,
        });
        assert_eq!(
            condition(&s, "PodScheduled")["lastTransitionTime"],
            json!(Time(at(0)))
        );
        assert_eq!(
            condition(&s, "Ready")["lastTransitionTime"],
            json!(Time(at(22)))
        );
        assert_eq!(s["status"]["startTime"], json!(Time(at(0))));
        let statuses = s["status"]["containerStatuses"].as_array().unwrap();
        assert_eq!(statuses.len(), 2);
        assert_eq!(
            statuses[0]["state"]["running"]["startedAt"],
            json!(Time(at(20)))
        );
        assert_eq!(statuses[1]["ready"], true);
        assert_eq!(
            s["status"]["initContainerStatuses"][0]["state"]["terminated"]["reason"],
            "Completed"
        );
    }

    #[test]
    fn unschedulable_sets_pod_scheduled_false() {
        let s = unschedulable("n");
        assert_eq!(condition(&s, "PodScheduled")["reason"], "Unschedulable");
        assert_eq!(condition(&s, "PodScheduled")["status"], "False");
    }
}
