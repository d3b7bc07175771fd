//! The kubelet + kube-proxy loop: one task owns all state and reacts to pod and service events.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    future::Future,
    time::Duration,
};

use futures::{stream, StreamExt};
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::{
    api::{DeleteParams, Patch, PatchParams, PostParams, Preconditions},
    runtime::{watcher, WatchStreamExt},
    Api, Client, ResourceExt,
};
use sandbox_provisioner::spec::image::canonical;
use serde_json::{json, Value};
use tokio::{sync::mpsc, task::AbortHandle};

use crate::{
    behaviour::{self, Mode},
    images::{Images, Plan, Policy, Wanted},
    kubelet::{self, Event, Probe, Probes},
    status::{self, Addresses, Container, View},
    stubs::{self, Stub},
    Args,
};

type Labels = BTreeMap<String, String>;

/// Namespace and name of an object.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    namespace: String,
    name: String,
}

impl Key {
    fn of(obj: &impl ResourceExt) -> Key {
        Key {
            namespace: obj.namespace().unwrap_or_default(),
            name: obj.name_any(),
        }
    }
}

/// A pod bound to our node whose life the simulator is playing.
struct Tracked {
    key: Key,
    labels: Labels,
    ready: bool,
    task: Option<AbortHandle>,
}

struct NodePortService {
    selector: Labels,
    node_ports: Vec<u16>,
}

/// Messages from the per-pod tasks back to the loop that owns the state.
enum Internal {
    /// The apiserver has the pod Ready: its node ports open.
    Ready { uid: String },
    /// The pod is no longer Ready; `status` says why.
    NotReady { uid: String, status: Value },
    /// An image pull finished.
    Pulled { image: String },
}

#[allow(clippy::large_enum_variant)] // one value at a time, moved straight into the handler
enum Input {
    Pod(Result<watcher::Event<Pod>, watcher::Error>),
    Service(Result<watcher::Event<Service>, watcher::Error>),
    Internal(Internal),
}

struct Sim {
    args: Args,
    client: Client,
    tracked: HashMap<String, Tracked>,
    binding: HashSet<String>,
    services: HashMap<Key, NodePortService>,
    ready_pods: HashMap<String, HashMap<String, Labels>>,
    stubs: HashMap<Key, (Vec<u16>, Vec<Stub>)>,
    pods_seen_in_relist: Option<HashSet<String>>,
    services_seen_in_relist: Option<HashSet<Key>>,
    tx: mpsc::UnboundedSender<Internal>,
    images: Images,
    /// The image list the Node's status should show, written by one task.
    node_images: tokio::sync::watch::Sender<Vec<Value>>,
    /// The simulator's clock for image pulls.
    clock: tokio::time::Instant,
}

/// Watches pods and services cluster-wide until the streams end (they do not, normally).
/// `present` are the images the node already has.
pub async fn run(client: Client, args: Args, present: Vec<String>) -> anyhow::Result<()> {
    let (tx, rx) = mpsc::unbounded_channel();
    let (client_for_images, node_name) = (client.clone(), args.node_name.clone());
    let pod_events = watcher(Api::<Pod>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .map(Input::Pod);
    let svc_events = watcher(
        Api::<Service>::all(client.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .map(Input::Service);
    let internal = stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|m| (Input::Internal(m), rx))
    });
    let mut inputs = std::pin::pin!(stream::select(
        stream::select(pod_events, svc_events),
        internal
    ));
    let mut sim = Sim {
        args,
        client,
        tracked: HashMap::new(),
        binding: HashSet::new(),
        services: HashMap::new(),
        ready_pods: HashMap::new(),
        stubs: HashMap::new(),
        pods_seen_in_relist: None,
        services_seen_in_relist: None,
        tx,
        images: Images::with_present(present),
        node_images: image_writer(&client_for_images, node_name),
        clock: tokio::time::Instant::now(),
    };
    while let Some(input) = inputs.next().await {
        match input {
            Input::Pod(Ok(event)) => sim.on_pod_event(event),
            Input::Service(Ok(event)) => sim.on_service_event(event),
            Input::Pod(Err(e)) | Input::Service(Err(e)) => {
                tracing::warn!(error = %e, "watch failed; retrying with backoff")
            }
            Input::Internal(Internal::Ready { uid }) => sim.on_ready(&uid),
            Input::Internal(Internal::NotReady { uid, status }) => sim.on_not_ready(&uid, status),
            Input::Internal(Internal::Pulled { image }) => sim.on_pulled(&image),
        }
    }
    anyhow::bail!("watch streams ended")
}

impl Sim {
    fn on_pod_event(&mut self, event: watcher::Event<Pod>) {
        match event {
            watcher::Event::Init => self.pods_seen_in_relist = Some(HashSet::new()),
            watcher::Event::InitApply(pod) => {
                if let Some(seen) = self.pods_seen_in_relist.as_mut() {
                    seen.insert(pod.uid().unwrap_or_default());
                }
                self.on_pod(pod);
            }
            watcher::Event::InitDone => {
                if let Some(seen) = self.pods_seen_in_relist.take() {
                    let gone: Vec<String> = self
                        .tracked
                        .keys()
                        .filter(|uid| !seen.contains(*uid))
                        .cloned()
                        .collect();
                    gone.iter().for_each(|uid| self.forget(uid));
                }
            }
            watcher::Event::Apply(pod) => self.on_pod(pod),
            watcher::Event::Delete(pod) => {
                let uid = pod.uid().unwrap_or_default();
                self.binding.remove(&uid);
                self.forget(&uid);
            }
        }
    }

    fn on_pod(&mut self, pod: Pod) {
        let uid = pod.uid().unwrap_or_default();
        let key = Key::of(&pod);
        let node = pod.spec.as_ref().and_then(|s| s.node_name.clone());
        let ours = node.as_deref() == Some(self.args.node_name.as_str());
        if pod.metadata.deletion_timestamp.is_some() {
            if ours {
                self.forget(&uid);
                self.spawn(finish_deletion(self.pods(&key.namespace), key, uid));
            }
            return;
        }
        match node {
            None if behaviour::mode_of(&pod) == Mode::Unschedulable => {
                if !is_marked_unschedulable(&pod) {
                    let patch = status::unschedulable(&self.args.node_name);
                    self.spawn(patch_status(self.pods(&key.namespace), key, patch));
                }
            }
            // A pod that names another scheduler (the real node's) is that scheduler's to bind.
            None if !for_default_scheduler(&pod) => {}
            None => {
                if self.binding.insert(uid) {
                    let node = self.args.node_name.clone();
                    self.spawn(bind(self.pods(&key.namespace), key, node));
                }
            }
            Some(_) if ours && !self.tracked.contains_key(&uid) => self.start_lifecycle(pod),
            Some(_) => {}
        }
    }

    /// Begins playing a newly bound pod's life according to its simulated behaviour.
    fn start_lifecycle(&mut self, pod: Pod) {
        let uid = pod.uid().unwrap_or_default();
        let key = Key::of(&pod);
        let labels = pod.labels().clone();
        self.binding.remove(&uid);
        let mode = behaviour::mode_of(&pod);
        self.tracked.insert(
            uid.clone(),
            Tracked {
                key: key.clone(),
                labels,
                ready: false,
                task: None,
            },
        );
        if mode == Mode::Ready && is_ready(&pod) {
            // Already Ready (the simulator restarted): only the stubs need to come back.
            self.on_ready(&uid);
            return;
        }
        let task = match mode {
            Mode::Ready | Mode::NeverReady | Mode::Unschedulable => self.play_kubelet(pod, mode),
            Mode::ImagePullFailure | Mode::CrashLoop => self.play_failure(pod, mode),
        };
        if let Some(t) = self.tracked.get_mut(&uid) {
            t.task = task;
        }
    }

    /// A pod that fails the old way: its image never pulls, or its container keeps crashing.
    fn play_failure(&mut self, pod: Pod, mode: Mode) -> Option<AbortHandle> {
        let key = Key::of(&pod);
        let delay = behaviour::start_delay(&pod, Duration::from_millis(self.args.start_delay_ms));
        let container = first_container_name(&pod);
        let image = behaviour::first_image(&pod).unwrap_or_default().to_string();
        let ip = self.args.addresses();
        let pods = self.pods(&key.namespace);
        let crash_interval = Duration::from_millis(self.args.crash_interval_ms);
        let task = tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let doc = |phase: &str, c: Container<'_>, restarts: i32| {
                status::pod_status(phase, &ip, &container, &image, c, restarts)
            };
            if mode == Mode::ImagePullFailure {
                let message = format!("Back-off pulling image \"{image}\"");
                let waiting = Container::Waiting {
                    reason: "ImagePullBackOff",
                    message: &message,
                };
                patch_status(pods, key, doc("Pending", waiting, 0)).await;
                return;
            }
            let message = format!("back-off restarting failed container {container}");
            for restarts in 1.. {
                let waiting = Container::Waiting {
                    reason: "CrashLoopBackOff",
                    message: &message,
                };
                patch_status(pods.clone(), key.clone(), doc("Running", waiting, restarts)).await;
                tokio::time::sleep(crash_interval).await;
            }
        });
        Some(task.abort_handle())
    }

    /// A pod whose life the kubelet model decides: image pulls, boot and probes.
    fn play_kubelet(&mut self, pod: Pod, mode: Mode) -> Option<AbortHandle> {
        let uid = pod.uid().unwrap_or_default();
        let key = Key::of(&pod);
        let spec = pod.spec.clone().unwrap_or_default();
        let default_pull = Duration::from_millis(self.args.pull_ms);
        let wanted: Vec<Wanted> = spec
            .init_containers
            .iter()
            .flatten()
            .chain(spec.containers.iter())
            .filter_map(|c| {
                let image = c.image.clone()?;
                Some(Wanted {
                    policy: Policy::of(c.image_pull_policy.as_deref(), &image),
                    pull_ms: millis(behaviour::pull_time(&pod, &image, default_pull)),
                    image,
                })
            })
            .collect();
        let names = |list: &[k8s_openapi::api::core::v1::Container]| -> Vec<(String, String)> {
            list.iter()
                .map(|c| (c.name.clone(), c.image.clone().unwrap_or_default()))
                .collect()
        };
        let containers = names(&spec.containers);
        let init_containers = names(spec.init_containers.as_deref().unwrap_or_default());
        let now = millis(self.clock.elapsed());
        let admitted = k8s_openapi::jiff::Timestamp::now();
        let ip = self.args.addresses();
        let pods = self.pods(&key.namespace);
        let plan = self.images.plan(now, &wanted);
        let start = match plan {
            Plan::NeverPull(image) => {
                let message =
                    format!("Container image \"{image}\" is not present with pull policy of Never");
                let doc = status_at_admission(
                    &ip,
                    &containers,
                    &init_containers,
                    admitted,
                    "ErrImageNeverPull",
                    &message,
                );
                self.spawn(patch_status(pods, key, doc));
                return None;
            }
            Plan::StartsAt { at, pulls } => {
                for (image, done) in pulls {
                    let tx = self.tx.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(Duration::from_millis(done.saturating_sub(now))).await;
                        let _ = tx.send(Internal::Pulled { image });
                    });
                }
                at - now
            }
        };
        let first = spec.containers.first();
        let probe = |p: Option<&k8s_openapi::api::core::v1::Probe>| {
            p.map(|p| {
                Probe::new(
                    p.initial_delay_seconds,
                    p.period_seconds,
                    p.failure_threshold,
                    p.success_threshold,
                )
            })
        };
        let probes = Probes {
            startup: probe(first.and_then(|c| c.startup_probe.as_ref())),
            readiness: probe(first.and_then(|c| c.readiness_probe.as_ref())),
            liveness: probe(first.and_then(|c| c.liveness_probe.as_ref())),
        };
        let boot = match mode {
            Mode::NeverReady => None,
            _ => Some(millis(behaviour::start_delay(
                &pod,
                Duration::from_millis(self.args.start_delay_ms),
            ))),
        };
        let events = kubelet::timeline(&probes, start, boot, 10);
        let tx = self.tx.clone();
        let origin = tokio::time::Instant::now();
        let task = tokio::spawn(async move {
            if start > 0 {
                let reason = if init_containers.is_empty() {
                    "ContainerCreating"
                } else {
                    "PodInitializing"
                };
                let doc =
                    status_at_admission(&ip, &containers, &init_containers, admitted, reason, "");
                patch_status(pods.clone(), key.clone(), doc).await;
            }
            let wall = |t: u64| {
                admitted
                    .checked_add(k8s_openapi::jiff::SignedDuration::from_millis(t as i64))
                    .unwrap_or(admitted)
            };
            let mut seen = Seen::default();
            let mut i = 0;
            while i < events.len() {
                let t = events[i].0;
                tokio::time::sleep_until(origin + Duration::from_millis(t)).await;
                let was_ready = seen.ready_since.is_some();
                let mut turned_ready = false;
                while i < events.len() && events[i].0 == t {
                    turned_ready |= events[i].1 == Event::Ready;
                    seen.apply(events[i].1, wall(t));
                    i += 1;
                }
                let ready_since = seen.ready_since;
                let back_off = format!(
                    "back-off restarting failed container {}",
                    containers
                        .first()
                        .map(|(n, _)| n.as_str())
                        .unwrap_or_default()
                );
                let container = if seen.running {
                    Container::Running {
                        ready: ready_since.is_some(),
                    }
                } else {
                    Container::Waiting {
                        reason: "CrashLoopBackOff",
                        message: &back_off,
                    }
                };
                let doc = status::status_at(&View {
                    phase: "Running",
                    addresses: &ip,
                    containers: &containers,
                    init_containers: &init_containers,
                    container,
                    admitted,
                    container_started: seen.container_started.unwrap_or(admitted),
                    started: seen.started,
                    ready_since,
                    restarts: seen.restarts,
                    last_terminated: seen.last_terminated,
                });
                if turned_ready && ready_since.is_some() {
                    // As in a cluster, traffic follows the recorded status: the endpoints
                    // controller and kube-proxy route to a pod only after the kubelet has
                    // reported it Ready.
                    patch_status(pods.clone(), key.clone(), doc).await;
                    let _ = tx.send(Internal::Ready { uid: uid.clone() });
                } else if was_ready && ready_since.is_none() {
                    let _ = tx.send(Internal::NotReady {
                        uid: uid.clone(),
                        status: doc,
                    });
                } else {
                    patch_status(pods.clone(), key.clone(), doc).await;
                }
            }
        });
        Some(task.abort_handle())
    }

    /// The apiserver has a pod Ready: open the node ports of the Services selecting it.
    fn on_ready(&mut self, uid: &str) {
        let Some(t) = self.tracked.get_mut(uid) else {
            return;
        };
        if t.ready {
            return;
        }
        t.ready = true;
        let (key, labels) = (t.key.clone(), t.labels.clone());
        self.ready_pods
            .entry(key.namespace.clone())
            .or_default()
            .insert(key.name.clone(), labels.clone());
        self.refresh_services_selecting(&key.namespace, &labels);
    }

    /// A pod is no longer Ready: close its node ports, then report it.
    fn on_not_ready(&mut self, uid: &str, status: Value) {
        let Some(t) = self.tracked.get_mut(uid) else {
            return;
        };
        let key = t.key.clone();
        if t.ready {
            t.ready = false;
            let labels = t.labels.clone();
            self.unready(&key, &labels);
        }
        self.spawn(patch_status(self.pods(&key.namespace), key, status));
    }

    /// An image finished pulling: the node lists it.
    fn on_pulled(&mut self, image: &str) {
        if !self.images.pulled(image) {
            return;
        }
        tracing::info!(image, "image pulled");
        let listed: Vec<Value> = self
            .images
            .present()
            .map(|name| {
                let canonical = canonical(name);
                let names: Vec<&str> = if canonical == *name {
                    vec![name.as_str()]
                } else {
                    vec![canonical.as_str(), name.as_str()]
                };
                json!({"names": names, "sizeBytes": 1})
            })
            .collect();
        // The one writer sends the newest list (two patches in flight could land out of
        // order, and the older list would drop an image).
        self.node_images.send_replace(listed);
    }

    /// Stops playing a pod: cancels its task and closes ports that no longer have a ready pod.
    fn forget(&mut self, uid: &str) {
        let Some(t) = self.tracked.remove(uid) else {
            return;
        };
        if let Some(task) = t.task {
            task.abort();
        }
        if t.ready {
            self.unready(&t.key, &t.labels);
        }
    }

    /// Takes a pod out of the ready set and closes the node ports only it kept open.
    fn unready(&mut self, key: &Key, labels: &Labels) {
        if let Some(ns) = self.ready_pods.get_mut(&key.namespace) {
            ns.remove(&key.name);
            if ns.is_empty() {
                self.ready_pods.remove(&key.namespace);
            }
        }
        self.refresh_services_selecting(&key.namespace, labels);
    }

    fn on_service_event(&mut self, event: watcher::Event<Service>) {
        match event {
            watcher::Event::Init => self.services_seen_in_relist = Some(HashSet::new()),
            watcher::Event::InitApply(svc) => {
                if let Some(seen) = self.services_seen_in_relist.as_mut() {
                    seen.insert(Key::of(&svc));
                }
                self.on_service(svc);
            }
            watcher::Event::InitDone => {
                if let Some(seen) = self.services_seen_in_relist.take() {
                    let gone: Vec<Key> = self
                        .services
                        .keys()
                        .filter(|k| !seen.contains(*k))
                        .cloned()
                        .collect();
                    for key in gone {
                        self.services.remove(&key);
                        self.refresh_service(&key);
                    }
                }
            }
            watcher::Event::Apply(svc) => self.on_service(svc),
            watcher::Event::Delete(svc) => {
                let key = Key::of(&svc);
                self.services.remove(&key);
                self.refresh_service(&key);
            }
        }
    }

    fn on_service(&mut self, svc: Service) {
        let key = Key::of(&svc);
        let spec = svc.spec.unwrap_or_default();
        let selector = spec.selector.unwrap_or_default();
        let node_ports: Vec<u16> = spec
            .ports
            .unwrap_or_default()
            .iter()
            .filter_map(|p| p.node_port)
            .filter_map(|p| u16::try_from(p).ok())
            .collect();
        if spec.type_.as_deref() == Some("NodePort")
            && !selector.is_empty()
            && !node_ports.is_empty()
        {
            self.services.insert(
                key.clone(),
                NodePortService {
                    selector,
                    node_ports,
                },
            );
        } else {
            self.services.remove(&key);
        }
        self.refresh_service(&key);
    }

    fn refresh_services_selecting(&mut self, namespace: &str, labels: &Labels) {
        let keys: Vec<Key> = self
            .services
            .iter()
            .filter(|(k, s)| k.namespace == namespace && selects(&s.selector, labels))
            .map(|(k, _)| k.clone())
            .collect();
        keys.iter().for_each(|k| self.refresh_service(k));
    }

    /// Serves the service's node ports exactly while it selects at least one ready pod.
    fn refresh_service(&mut self, key: &Key) {
        let wanted = self.services.get(key).filter(|svc| {
            self.ready_pods
                .get(&key.namespace)
                .is_some_and(|pods| pods.values().any(|l| selects(&svc.selector, l)))
        });
        let Some(svc) = wanted else {
            if self.stubs.remove(key).is_some() {
                tracing::info!(service = %key.name, namespace = %key.namespace, "node ports closed");
            }
            return;
        };
        if self
            .stubs
            .get(key)
            .is_some_and(|(ports, _)| *ports == svc.node_ports)
        {
            return;
        }
        self.stubs.remove(key);
        let mut running = Vec::new();
        for &port in &svc.node_ports {
            match stubs::start(self.args.node_ip, port, &key.namespace, &key.name) {
                Ok(stub) => running.push(stub),
                Err(e) => tracing::warn!(port, error = %e, "cannot serve node port"),
            }
        }
        tracing::info!(service = %key.name, namespace = %key.namespace, ports = ?svc.node_ports, "node ports open");
        self.stubs
            .insert(key.clone(), (svc.node_ports.clone(), running));
    }

    fn pods(&self, namespace: &str) -> Api<Pod> {
        Api::namespaced(self.client.clone(), namespace)
    }

    fn spawn(&self, fut: impl Future<Output = ()> + Send + 'static) {
        tokio::spawn(fut);
    }
}

/// What a pod's status says of its container, as the schedule's events change it.
#[derive(Debug, Default, PartialEq)]
struct Seen {
    restarts: i32,
    container_started: Option<k8s_openapi::jiff::Timestamp>,
    running: bool,
    /// The startup probe passed.
    started: bool,
    ready_since: Option<k8s_openapi::jiff::Timestamp>,
    last_terminated: Option<(k8s_openapi::jiff::Timestamp, i32)>,
}

impl Seen {
    fn apply(&mut self, event: Event, at: k8s_openapi::jiff::Timestamp) {
        match event {
            Event::Started { restarts } => {
                self.restarts = restarts as i32;
                self.container_started = Some(at);
                self.running = true;
                self.started = false;
                self.ready_since = None;
            }
            Event::StartupSucceeded => self.started = true,
            Event::Ready => self.ready_since = Some(at),
            Event::NotReady => self.ready_since = None,
            Event::Killed { .. } => {
                // Killed by a probe: SIGKILL's exit code.
                self.last_terminated = Some((at, 137));
                self.running = false;
                self.ready_since = None;
            }
        }
    }
}

/// Writes the node's image list whenever it changes, the newest one each time.
fn image_writer(client: &Client, node: String) -> tokio::sync::watch::Sender<Vec<Value>> {
    let (sender, mut changed) = tokio::sync::watch::channel(Vec::new());
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(client.clone());
    tokio::spawn(async move {
        while changed.changed().await.is_ok() {
            // Until it is written: a failed write is tried again with the newest list.
            loop {
                let listed = changed.borrow_and_update().clone();
                let patch = json!({"status": {"images": listed}});
                let (params, patch) = (PatchParams::default(), Patch::Merge(&patch));
                let call = nodes.patch_status(&node, &params, &patch);
                if matches!(with_timeout(call).await, Ok(Ok(_))) {
                    break;
                }
                tracing::warn!(node, "recording pulled images on the node failed; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    });
    sender
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn first_container_name(pod: &Pod) -> String {
    pod.spec
        .as_ref()
        .and_then(|s| s.containers.first())
        .map(|c| c.name.clone())
        .unwrap_or_default()
}

/// The status of an admitted pod whose containers have not started.
fn status_at_admission(
    ip: &Addresses,
    containers: &[(String, String)],
    init_containers: &[(String, String)],
    admitted: k8s_openapi::jiff::Timestamp,
    reason: &str,
    message: &str,
) -> Value {
    status::status_at(&View {
        phase: "Pending",
        addresses: ip,
        containers,
        init_containers,
        container: Container::Waiting { reason, message },
        admitted,
        container_started: admitted,
        started: false,
        ready_since: None,
        restarts: 0,
        last_terminated: None,
    })
}

fn selects(selector: &Labels, labels: &Labels) -> bool {
    !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

fn condition_is(pod: &Pod, type_: &str, status: &str, reason: Option<&str>) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| {
            cs.iter().any(|c| {
                c.type_ == type_
                    && c.status == status
                    && reason.is_none_or(|r| c.reason.as_deref() == Some(r))
            })
        })
}

fn is_ready(pod: &Pod) -> bool {
    condition_is(pod, "Ready", "True", None)
}

fn is_marked_unschedulable(pod: &Pod) -> bool {
    condition_is(pod, "PodScheduled", "False", Some("Unschedulable"))
}

async fn with_timeout<T>(fut: impl Future<Output = T>) -> Result<T, tokio::time::error::Elapsed> {
    tokio::time::timeout(Duration::from_secs(10), fut).await
}

async fn bind(pods: Api<Pod>, key: Key, node: String) {
    let binding = json!({
        "apiVersion": "v1",
        "kind": "Binding",
        "metadata": { "name": key.name, "namespace": key.namespace },
        "target": { "apiVersion": "v1", "kind": "Node", "name": node },
    });
    let params = PostParams::default();
    let call = pods.create_subresource::<_, Value>("binding", &key.name, &params, &binding);
    match with_timeout(call).await {
        Ok(Ok(_)) => tracing::info!(pod = %key.name, namespace = %key.namespace, "bound"),
        Ok(Err(e)) => tracing::warn!(pod = %key.name, error = %e, "binding failed"),
        Err(_) => tracing::warn!(pod = %key.name, "binding timed out"),
    }
}

async fn patch_status(pods: Api<Pod>, key: Key, status: Value) {
    let (params, patch) = (PatchParams::default(), Patch::Merge(&status));
    match with_timeout(pods.patch_status(&key.name, &params, &patch)).await {
        Ok(Ok(_)) => {
            let phase = status["status"]["phase"].as_str().unwrap_or_default();
            tracing::info!(pod = %key.name, namespace = %key.namespace, phase, "status reported");
        }
        Ok(Err(e)) => tracing::debug!(pod = %key.name, error = %e, "status patch failed"),
        Err(_) => tracing::warn!(pod = %key.name, "status patch timed out"),
    }
}

/// What a kubelet does once the containers are gone: remove the pod for good.
async fn finish_deletion(pods: Api<Pod>, key: Key, uid: String) {
    let params = DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: Some(Preconditions {
            uid: Some(uid),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    match with_timeout(pods.delete(&key.name, &params)).await {
        Ok(Ok(_)) => tracing::info!(pod = %key.name, namespace = %key.namespace, "deleted"),
        Ok(Err(kube::Error::Api(e))) if e.code == 404 || e.code == 409 => {}
        Ok(Err(e)) => tracing::warn!(pod = %key.name, error = %e, "finishing deletion failed"),
        Err(_) => tracing::warn!(pod = %key.name, "finishing deletion timed out"),
    }
}

/// Whether the pod is left to the default scheduler, which this simulator stands in for.
fn for_default_scheduler(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.scheduler_name.as_deref())
        .is_none_or(|name| name == DEFAULT_SCHEDULER)
}

const DEFAULT_SCHEDULER: &str = "default-scheduler";

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn pods_for_another_scheduler_are_left_alone() {
        let with = |name: Option<&str>| Pod {
            spec: Some(k8s_openapi::api::core::v1::PodSpec {
                scheduler_name: name.map(str::to_string),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(for_default_scheduler(&with(None)));
        assert!(for_default_scheduler(&with(Some("default-scheduler"))));
        assert!(!for_default_scheduler(&with(Some("sandbox-real-node"))));
    }

    #[test]
    fn events_change_what_the_status_says() {
        let at = |s: i64| k8s_openapi::jiff::Timestamp::from_second(s).unwrap();
        let mut seen = Seen::default();
        seen.apply(Event::Started { restarts: 0 }, at(1));
        seen.apply(Event::StartupSucceeded, at(3));
        seen.apply(Event::Ready, at(3));
        assert_eq!(
            (seen.running, seen.started, seen.ready_since),
            (true, true, Some(at(3)))
        );
        seen.apply(
            Event::Killed {
                by: crate::kubelet::Kind::Liveness,
            },
            at(9),
        );
        assert_eq!((seen.running, seen.ready_since), (false, None));
        seen.apply(Event::Started { restarts: 1 }, at(19));
        assert_eq!(
            seen,
            Seen {
                restarts: 1,
                container_started: Some(at(19)),
                running: true,
                started: false,
                ready_since: None,
                last_terminated: Some((at(9), 137)),
            }
        );
    }

    #[test]
    fn selector_must_be_subset_and_non_empty() {
        let l = labels(&[("app", "x"), ("sandbox-id", "a")]);
        assert!(selects(&labels(&[("sandbox-id", "a")]), &l));
        assert!(!selects(&labels(&[("sandbox-id", "b")]), &l));
        assert!(!selects(&labels(&[]), &l));
    }
}
