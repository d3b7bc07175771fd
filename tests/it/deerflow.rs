//! The service as today's DeerFlow gateway uses it: a client that makes exactly the calls of
//! DeerFlow's `RemoteSandboxBackend` (URLs, payloads, headers, timeouts, and how it reads each
//! answer), against the real apiserver, plus the pod shapes the gateway's fields ask for.

use sandbox_provisioner::k8s::manifests;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::DeleteParams;
use reqwest::StatusCode;
use serde_json::{json, Value};
use testkit::{eventually, serve_args, RunningBinary, TestNamespace, TestService};

const KEY: &str = "gateway-test-key-0123456789";
/// DeerFlow's base directory as the tests configure it (THREADS_HOST_PATH's parent).
const BASE: &str = "/srv/deer-flow";

/// DeerFlow's `RemoteSandboxBackend`, call for call: `requests` with these timeouts, only
/// `X-API-Key` when a key is configured, no retries.
struct Gateway {
    url: String,
    key: Option<String>,
    http: reqwest::Client,
}

/// What the gateway's create sends besides the ids.
#[derive(Default, Clone)]
struct Acquire {
    user_id: Option<&'static str>,
    extra_mounts: Vec<Value>,
    provision_lark_cli_runtime: bool,
    provision_lark_cli_broker: bool,
    /// The newest gateway: `max_running + 1` shell sessions.
    max_shell_sessions: Option<u32>,
    /// The newest gateway: where the thread's skill projections go.
    skills_container_path: Option<&'static str>,
}

impl Gateway {
    fn new(url: &str, key: Option<&str>) -> Gateway {
        Gateway {
            url: url.trim_end_matches('/').to_string(),
            key: key.map(str::to_string),
            http: reqwest::Client::new(),
        }
    }

    fn with_auth(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.key {
            Some(key) => request.header("X-API-Key", key),
            None => request,
        }
    }

    /// `_provisioner_create`: POST, 30 s, `raise_for_status`, reads only `sandbox_url`.
    async fn create(
        &self,
        thread_id: Option<&str>,
        sandbox_id: &str,
        acquire: Acquire,
    ) -> Result<String, String> {
        let (status, body) = self.create_answer(thread_id, sandbox_id, acquire).await?;
        if !status.is_success() {
            return Err(format!("Cluster create failed: {status} {body}"));
        }
        body["sandbox_url"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| format!("no sandbox_url in {body}"))
    }

    /// The create call as the newest gateway reads it: the whole answer (it checks
    /// `max_shell_sessions` and fences the Pod generation by `container_id`).
    async fn create_answer(
        &self,
        thread_id: Option<&str>,
        sandbox_id: &str,
        acquire: Acquire,
    ) -> Result<(StatusCode, Value), String> {
        let mut payload = json!({
            "sandbox_id": sandbox_id,
            "thread_id": thread_id,
            "user_id": acquire.user_id.unwrap_or("default"),
            "include_legacy_skills": false,
            "provision_lark_cli_runtime": acquire.provision_lark_cli_runtime,
            "provision_lark_cli_broker": acquire.provision_lark_cli_broker,
        });
        if !acquire.extra_mounts.is_empty() {
            payload["extra_mounts"] = Value::Array(acquire.extra_mounts);
        }
        if let Some(n) = acquire.max_shell_sessions {
            payload["max_shell_sessions"] = json!(n);
        }
        if let Some(path) = acquire.skills_container_path {
            payload["skills_container_path"] = json!(path);
        }
        let answer = self
            .with_auth(self.http.post(format!("{}/api/sandboxes", self.url)))
            .json(&payload)
            .timeout(Duration::from_secs(30))
            .send()
            .await
            .map_err(|e| format!("Cluster create failed: {e}"))?;
        let status = answer.status();
        let body: Value = answer.json().await.map_err(|e| e.to_string())?;
        Ok((status, body))
    }

    /// The newest gateway's presence check (before retiring a quarantine record): GET, 10 s;
    /// only a 200 with `exists: false` proves the Pod gone, anything else keeps the record.
    async fn presence(&self, sandbox_id: &str) -> Result<(bool, Option<String>), String> {
        let answer = self
            .with_auth(
                self.http
                    .get(format!("{}/api/sandboxes/{sandbox_id}/presence", self.url)),
            )
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if !answer.status().is_success() {
            return Err(format!("HTTP {}", answer.status()));
        }
        let body: Value = answer.json().await.map_err(|e| e.to_string())?;
        assert_eq!(body["sandbox_id"], sandbox_id, "{body}");
        let exists = body["exists"].as_bool().ok_or("no exists")?;
        Ok((exists, body["container_id"].as_str().map(str::to_string)))
    }

    /// `_provisioner_destroy`: DELETE, 15 s; any answer is accepted (only logged).
    async fn destroy(&self, sandbox_id: &str) -> Option<StatusCode> {
        self.with_auth(
            self.http
                .delete(format!("{}/api/sandboxes/{sandbox_id}", self.url)),
        )
        .timeout(Duration::from_secs(15))
        .send()
        .await
        .ok()
        .map(|r| r.status())
    }

    /// `_provisioner_is_alive`: GET, 10 s; 404 is dead, another error is unknown, else
    /// `status == "Running"` exactly.
    async fn is_alive(&self, sandbox_id: &str) -> Result<bool, String> {
        let answer = self
            .with_auth(
                self.http
                    .get(format!("{}/api/sandboxes/{sandbox_id}", self.url)),
            )
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if answer.status() == StatusCode::NOT_FOUND {
            return Ok(false);
        }
        if !answer.status().is_success() {
            return Err(format!("HTTP {}", answer.status()));
        }
        let body: Value = answer.json().await.map_err(|e| e.to_string())?;
        Ok(body.get("status") == Some(&json!("Running")))
    }

    /// `_provisioner_discover`: GET, 10 s; 404 or any error is None, else the URL.
    async fn discover(&self, sandbox_id: &str) -> Option<String> {
        let answer = self
            .with_auth(
                self.http
                    .get(format!("{}/api/sandboxes/{sandbox_id}", self.url)),
            )
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .ok()?;
        if !answer.status().is_success() {
            return None;
        }
        let body: Value = answer.json().await.ok()?;
        body["sandbox_url"].as_str().map(str::to_string)
    }

    /// `_provisioner_list`: GET, 10 s; entries need a non-empty id and URL; errors give [].
    async fn list_running(&self) -> Vec<(String, String)> {
        let Ok(answer) = self
            .with_auth(self.http.get(format!("{}/api/sandboxes", self.url)))
            .timeout(Duration::from_secs(10))
            .send()
            .await
        else {
            return vec![];
        };
        let Ok(body) = answer.json::<Value>().await else {
            return vec![];
        };
        body["sandboxes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| {
                let id = s["sandbox_id"].as_str().filter(|v| !v.is_empty())?;
                let url = s["sandbox_url"].as_str().filter(|v| !v.is_empty())?;
                Some((id.to_string(), url.to_string()))
            })
            .collect()
    }
}

/// DeerFlow's `wait_for_sandbox_ready`: `GET {url}/v1/sandbox` (5 s each), a second apart,
/// for up to 60 s; ready on the first 200.
async fn wait_for_sandbox_ready(url: &str) -> bool {
    let http = reqwest::Client::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while std::time::Instant::now() < deadline {
        let answer = http
            .get(format!("{url}/v1/sandbox"))
            .timeout(Duration::from_secs(5))
            .send()
            .await;
        if answer.is_ok_and(|r| r.status() == StatusCode::OK) {
            return true;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    false
}

/// The service as the gateway's deployment runs it: a key, and DeerFlow's host layout.
fn gateway_args(ns: &TestNamespace) -> sandbox_provisioner::config::ServeArgs {
    let mut args = serve_args(&ns.name);
    args.http.api_key = Some(KEY.into());
    args.http.allow_no_api_key = false;
    args.storage.skills_host_path = None;
    args.storage.threads_host_path = Some(format!("{BASE}/threads"));
    args
}

/// A call with the key, answered with status and JSON.
async fn keyed(
    svc: &TestService,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = svc
        .http
        .request(method, svc.url(path))
        .header("X-API-Key", KEY);
    if let Some(body) = body {
        request = request.json(&body);
    }
    TestService::answer(request).await
}

fn mount(host: &str, container: &str, read_only: bool) -> Value {
    json!({"host_path": format!("{BASE}/{host}"), "container_path": container, "read_only": read_only})
}

async fn pod(ns: &TestNamespace, id: &str) -> Value {
    serde_json::to_value(ns.pods().get(&manifests::pod_name(id)).await.unwrap()).unwrap()
}

fn volume<'a>(pod: &'a Value, name: &str) -> &'a Value {
    pod["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == name)
        .unwrap_or_else(|| panic!("no volume {name} in {}", pod["spec"]["volumes"]))
}

fn mount_paths(container: &Value) -> Vec<String> {
    container["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["mountPath"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn deerflows_gateway_runs_its_whole_sandbox_cycle() {
    let ns = TestNamespace::new("gateway").await;
    let svc = TestService::start(gateway_args(&ns)).await;
    let gateway = Gateway::new(&svc.base, Some(KEY));
    // Thread-bound: the sandbox id is sha256("{user}:{thread}")[:16]; the ACP workspace
    // comes along read-only on every such create.
    let bound = "3f2a9c0d1e4b5a67";
    let acp = mount(
        "users/alice/threads/thread-1/acp-workspace",
        "/mnt/acp-workspace",
        true,
    );
    assert_eq!(gateway.discover(bound).await, None);
    let url = gateway
        .create(
            Some("thread-1"),
            bound,
            Acquire {
                user_id: Some("alice"),
                extra_mounts: vec![acp.clone()],
                ..Acquire::default()
            },
        )
        .await
        .unwrap();
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    assert!(wait_for_sandbox_ready(&url).await, "{url} never answered");
    // The node answers once the apiserver has the pod Ready; the service's watch may deliver
    // that a few milliseconds later.
    eventually(Duration::from_secs(5), "is_alive", || async {
        (gateway.is_alive(bound).await == Ok(true)).then_some(())
    })
    .await;

    let p = pod(&ns, bound).await;
    assert_eq!(
        volume(&p, "extra-0")["hostPath"],
        json!({"path": format!("{BASE}/users/alice/threads/thread-1/acp-workspace"), "type": "Directory"})
    );
    assert_eq!(
        mount_paths(&p["spec"]["containers"][0]),
        [
            "/mnt/skills/public",
            "/mnt/skills/custom",
            "/mnt/skills/legacy",
            "/mnt/user-data",
            "/mnt/acp-workspace"
        ]
    );
    assert_eq!(
        volume(&p, "skills-custom")["hostPath"]["path"],
        format!("{BASE}/users/alice/skills_view/custom")
    );
    assert_eq!(
        volume(&p, "user-data")["hostPath"]["path"],
        format!("{BASE}/threads/thread-1/user-data")
    );
    assert_eq!(
        p["metadata"]["annotations"][manifests::USER_ANNOTATION],
        "alice"
    );
    let (_, view) = keyed(
        &svc,
        reqwest::Method::GET,
        &format!("/api/sandboxes/{bound}"),
        None,
    )
    .await;
    assert_eq!(view["status"], "Running", "{view}");
    assert_eq!(view["user_id"], "alice");
    assert_eq!(view["thread_id"], "thread-1");
    assert_eq!(view["max_shell_sessions"], Value::Null);

    // The gateway creates again (another process, a restart): same sandbox, same URL.
    let again = gateway
        .create(
            Some("thread-1"),
            bound,
            Acquire {
                user_id: Some("alice"),
                extra_mounts: vec![acp],
                ..Acquire::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(again, url);
    assert_eq!(gateway.discover(bound).await.as_deref(), Some(url.as_str()));

    // Thread-less (anonymous acquire): 8 hex digits, thread_id null.
    let anonymous = "a1b2c3d4";
    let anonymous_url = gateway
        .create(None, anonymous, Acquire::default())
        .await
        .unwrap();
    assert!(wait_for_sandbox_ready(&anonymous_url).await);
    let (_, view) = keyed(
        &svc,
        reqwest::Method::GET,
        &format!("/api/sandboxes/{anonymous}"),
        None,
    )
    .await;
    assert_eq!(
        view["thread_id"], anonymous,
        "the sandbox is its own thread"
    );
    assert_eq!(view["user_id"], "default");
    assert_eq!(
        volume(&pod(&ns, anonymous).await, "user-data")["hostPath"]["path"],
        format!("{BASE}/threads/{anonymous}/user-data")
    );

    // Start-up reconcile lists both, with their URLs.
    let mut listed = gateway.list_running().await;
    listed.sort();
    assert_eq!(
        listed,
        vec![
            (bound.to_string(), url.clone()),
            (anonymous.to_string(), anonymous_url)
        ]
    );

    // Shutdown destroys everything it owns; afterwards the sandboxes are gone (404 = dead).
    for id in [bound, anonymous] {
        assert_eq!(gateway.destroy(id).await, Some(StatusCode::OK));
        assert_eq!(gateway.is_alive(id).await, Ok(false));
        assert_eq!(gateway.discover(id).await, None);
    }
    assert_eq!(gateway.destroy(bound).await, Some(StatusCode::OK));
    assert!(gateway.list_running().await.is_empty());
    eventually(Duration::from_secs(30), "no objects left", || async {
        ns.leftovers().await.is_empty().then_some(())
    })
    .await;

    // A gateway with the wrong key gets nowhere, and is told why.
    let stranger = Gateway::new(&svc.base, Some("not-the-key-0123456789"));
    let refused = stranger
        .create(Some("thread-1"), bound, Acquire::default())
        .await
        .unwrap_err();
    assert!(refused.contains("401"), "{refused}");
    assert_eq!(stranger.list_running().await, vec![]);
    assert!(stranger.is_alive(bound).await.is_err(), "401 is not 'dead'");
}

#[tokio::test]
async fn every_mount_rule_is_400_and_nothing_is_created() {
    let ns = TestNamespace::new("mount-rules").await;
    let svc = TestService::start(gateway_args(&ns)).await;
    let ok = mount("users/u/acp", "/mnt/acp-workspace", true);
    let cases = [
        (
            vec![json!({"host_path": "users/u/acp", "container_path": "/mnt/acp-workspace"})],
            "extra_mounts[0].host_path \"users/u/acp\" must be an absolute path",
        ),
        (
            vec![ok.clone(), mount("users/../../etc", "/mnt/skills/custom", true)],
            "extra_mounts[1].host_path \"/srv/deer-flow/users/../../etc\" must not contain '..'",
        ),
        (
            vec![json!({"host_path": "/var/lib", "container_path": "/mnt/acp-workspace"})],
            "extra_mounts[0].host_path \"/var/lib\" is outside the DeerFlow base directory /srv/deer-flow (the parent of THREADS_HOST_PATH)",
        ),
        (
            vec![mount("users/u/x", "/mnt/user-data", false)],
            "extra_mounts[0].container_path \"/mnt/user-data\" is not a path extra mounts may use",
        ),
        (
            vec![mount("users/u/x", "/mnt/acp-workspace/../../etc", false)],
            "extra_mounts[0].container_path \"/mnt/acp-workspace/../../etc\" is not a path extra mounts may use",
        ),
        (
            vec![ok.clone(), mount("users/u/other", "/mnt//acp-workspace/", true)],
            "extra_mounts[1].container_path \"/mnt//acp-workspace/\" is already mounted by extra_mounts[0]",
        ),
        (vec![ok.clone(); 11], "extra_mounts has 11 entries; at most 10 are allowed"),
    ];
    for (mounts, expected) in cases {
        let body = json!({"sandbox_id": "rules-1", "thread_id": "t", "extra_mounts": mounts});
        let (code, answer) = keyed(&svc, reqwest::Method::POST, "/api/sandboxes", Some(body)).await;
        assert_eq!(code, 400, "{answer}");
        let detail = answer["detail"].as_str().unwrap();
        assert!(
            detail.contains(expected),
            "{detail}\n  expected: {expected}"
        );
    }
    assert_eq!(ns.leftovers().await, Vec::<String>::new());
    // The same request with only valid mounts goes through; the backend's custom skills
    // replace the service's own at /mnt/skills/custom (the apiserver refuses two mounts at
    // one path, so a duplicate would fail the create).
    let custom = mount("users/u/skills_view/custom", "/mnt/skills/custom", true);
    let body = json!({"sandbox_id": "rules-1", "thread_id": "t", "extra_mounts": [ok, custom]});
    let (code, answer) = keyed(&svc, reqwest::Method::POST, "/api/sandboxes", Some(body)).await;
    assert_eq!(code, 200, "{answer}");
    let p = pod(&ns, "rules-1").await;
    assert_eq!(
        mount_paths(&p["spec"]["containers"][0]),
        [
            "/mnt/skills/public",
            "/mnt/skills/legacy",
            "/mnt/user-data",
            "/mnt/acp-workspace",
            "/mnt/skills/custom"
        ]
    );
    assert_eq!(
        volume(&p, "extra-1")["hostPath"]["path"],
        format!("{BASE}/users/u/skills_view/custom")
    );
}

#[tokio::test]
async fn in_claim_mode_user_data_and_extra_mounts_are_sub_paths() {
    let ns = TestNamespace::new("gateway-pvc").await;
    let mut args = gateway_args(&ns);
    args.storage.threads_host_path = None;
    args.storage.deer_flow_host_base_dir = Some(BASE.into());
    args.storage.userdata_pvc_name = Some("deer-flow-home".into());
    args.storage.skills_pvc_name = Some("deer-flow-skills".into());
    args.storage.skills_pvc_subpath_template = Some("views/{user_id}".into());
    let svc = TestService::start(args).await;
    let gateway = Gateway::new(&svc.base, Some(KEY));
    gateway
        .create(
            Some("thread-9"),
            "pvc-1",
            Acquire {
                user_id: Some("bob"),
                extra_mounts: vec![mount(
                    "users/bob/threads/thread-9/acp-workspace",
                    "/mnt/acp-workspace",
                    true,
                )],
                ..Acquire::default()
            },
        )
        .await
        .unwrap();
    let p = pod(&ns, "pvc-1").await;
    assert_eq!(
        p["spec"]["containers"][0]["volumeMounts"],
        json!([
            {"name": "skills", "mountPath": "/mnt/skills", "readOnly": true, "subPath": "views/bob"},
            {"name": "user-data", "mountPath": "/mnt/user-data", "subPath": "deer-flow/users/bob/threads/thread-9/user-data"},
            {"name": "extra-0", "mountPath": "/mnt/acp-workspace", "readOnly": true, "subPath": "deer-flow/users/bob/threads/thread-9/acp-workspace"},
        ])
    );
    assert_eq!(
        volume(&p, "extra-0")["persistentVolumeClaim"]["claimName"],
        "deer-flow-home"
    );
}

fn lark_mounts() -> Vec<Value> {
    vec![
        mount(
            "users/u/lark/config",
            "/mnt/integrations/lark-cli/config",
            true,
        ),
        mount(
            "users/u/lark/config/locks",
            "/mnt/integrations/lark-cli/config/locks",
            false,
        ),
        mount(
            "users/u/lark/data",
            "/mnt/integrations/lark-cli/data",
            false,
        ),
    ]
}

#[tokio::test]
async fn both_lark_patterns_make_pods_the_apiserver_accepts() {
    let ns = TestNamespace::new("gateway-lark").await;
    let mut args = gateway_args(&ns);
    args.sandbox.lark_cli_init_image = Some("lark-init:test".into());
    args.sandbox.lark_cli_broker_image = Some("lark-broker:test".into());
    args.sandbox.lark_broker_deny_subcommands = Some("config".into());
    let svc = TestService::start(args).await;
    let gateway = Gateway::new(&svc.base, Some(KEY));
    let (_, capabilities) = keyed(&svc, reqwest::Method::GET, "/api/capabilities", None).await;
    assert_eq!(
        (
            &capabilities["lark_cli_init_image"],
            &capabilities["lark_cli_broker_image"]
        ),
        (&json!(true), &json!(true))
    );

    // Pattern A: the runtime is staged by an init container; the runtime extra mount the
    // gateway still forwards is replaced by the shared emptyDir.
    let mut mounts = lark_mounts();
    mounts.push(mount(
        "users/u/lark/runtime",
        "/mnt/integrations/lark-cli/runtime",
        true,
    ));
    let url = gateway
        .create(
            Some("t"),
            "lark-a",
            Acquire {
                extra_mounts: mounts.clone(),
                provision_lark_cli_runtime: true,
                ..Acquire::default()
            },
        )
        .await
        .unwrap();
    assert!(wait_for_sandbox_ready(&url).await);
    let p = pod(&ns, "lark-a").await;
    assert_eq!(p["spec"]["initContainers"][0]["name"], "lark-cli-init");
    assert_eq!(p["spec"]["initContainers"][0]["image"], "lark-init:test");
    assert_eq!(
        p["spec"]["initContainers"][0]["securityContext"]["allowPrivilegeEscalation"],
        false
    );
    let sandbox_mounts = mount_paths(&p["spec"]["containers"][0]);
    assert!(
        sandbox_mounts.ends_with(&[
            "/mnt/integrations/lark-cli/config".to_string(),
            "/mnt/integrations/lark-cli/config/locks".to_string(),
            "/mnt/integrations/lark-cli/data".to_string(),
            "/mnt/integrations/lark-cli/runtime".to_string(),
        ]),
        "{sandbox_mounts:?}"
    );
    assert_eq!(volume(&p, "lark-cli-runtime")["emptyDir"], json!({}));

    // Pattern B: the broker sidecar alone holds the credentials; the sandbox gets the shim.
    let url = gateway
        .create(
            Some("t"),
            "lark-b",
            Acquire {
                extra_mounts: mounts,
                provision_lark_cli_runtime: true,
                provision_lark_cli_broker: true,
                ..Acquire::default()
            },
        )
        .await
        .unwrap();
    assert!(wait_for_sandbox_ready(&url).await);
    let p = pod(&ns, "lark-b").await;
    assert_eq!(p["spec"]["initContainers"][0]["name"], "lark-cli-shim-init");
    assert_eq!(
        p["spec"]["initContainers"][0]["args"],
        json!(["install-shim", "/mnt/integrations/lark-cli/runtime"])
    );
    let containers = p["spec"]["containers"].as_array().unwrap();
    assert_eq!(containers.len(), 2);
    assert_eq!(
        mount_paths(&containers[0]),
        [
            "/mnt/skills/public",
            "/mnt/skills/custom",
            "/mnt/skills/legacy",
            "/mnt/user-data",
            "/mnt/integrations/lark-cli/runtime"
        ]
    );
    assert_eq!(
        containers[0]["env"],
        json!([{"name": "DEERFLOW_LARK_BROKER_URL", "value": "http://127.0.0.1:8788"}])
    );
    assert_eq!(containers[1]["name"], "lark-cli-broker");
    assert_eq!(
        mount_paths(&containers[1]),
        [
            "/var/lark/config",
            "/var/lark/config/locks",
            "/var/lark/data"
        ]
    );
    assert!(containers[1]["env"]
        .as_array()
        .unwrap()
        .contains(&json!({"name": "DEERFLOW_LARK_BROKER_DENY_SUBCOMMANDS", "value": "config"})));
    assert_eq!(
        volume(&p, "lark-cli-data")["hostPath"],
        json!({"path": format!("{BASE}/users/u/lark/data"), "type": "DirectoryOrCreate"})
    );
}

#[tokio::test]
async fn shell_capacity_is_set_echoed_and_never_silently_lowered() {
    let ns = TestNamespace::new("gateway-shells").await;
    let svc = TestService::start(gateway_args(&ns)).await;
    let http = reqwest::Client::new();
    let post = |body: Value| {
        TestService::answer(
            http.post(svc.url("/api/sandboxes"))
                .header("X-API-Key", KEY)
                .json(&body),
        )
    };
    let (code, created) =
        post(json!({"sandbox_id": "cap-1", "thread_id": "t", "max_shell_sessions": 16})).await;
    assert_eq!(
        (code, &created["max_shell_sessions"]),
        (200, &json!(16)),
        "{created}"
    );
    let p = pod(&ns, "cap-1").await;
    assert!(p["spec"]["containers"][0]["env"]
        .as_array()
        .unwrap()
        .contains(&json!({"name": "MAX_SHELL_SESSIONS", "value": "16"})));
    let uid = p["metadata"]["uid"].clone();
    let (_, got) = TestService::answer(
        http.get(svc.url("/api/sandboxes/cap-1"))
            .header("X-API-Key", KEY),
    )
    .await;
    assert_eq!(got["max_shell_sessions"], 16);
    let (_, listed) =
        TestService::answer(http.get(svc.url("/api/sandboxes")).header("X-API-Key", KEY)).await;
    assert_eq!(listed["sandboxes"][0]["max_shell_sessions"], 16, "{listed}");
    // Enough capacity (the same, less, or not asked): the existing sandbox.
    for body in [
        json!({"sandbox_id": "cap-1", "thread_id": "t", "max_shell_sessions": 16}),
        json!({"sandbox_id": "cap-1", "thread_id": "t", "max_shell_sessions": 4}),
        json!({"sandbox_id": "cap-1", "thread_id": "t"}),
    ] {
        let (code, answer) = post(body).await;
        assert_eq!(
            (code, &answer["max_shell_sessions"]),
            (200, &json!(16)),
            "{answer}"
        );
    }
    // Too little: 409 naming both values, and the pod is left alone.
    let (code, refused) =
        post(json!({"sandbox_id": "cap-1", "thread_id": "t", "max_shell_sessions": 32})).await;
    assert_eq!(code, 409, "{refused}");
    let detail = refused["detail"].as_str().unwrap();
    assert!(
        detail.contains("of 16") && detail.contains("32"),
        "{detail}"
    );
    assert_eq!(pod(&ns, "cap-1").await["metadata"]["uid"], uid);

    // A sandbox made without a capacity has the image's default (10) as far as a create knows.
    let (code, plain) = post(json!({"sandbox_id": "cap-2", "thread_id": "t"})).await;
    assert_eq!((code, &plain["max_shell_sessions"]), (200, &Value::Null));
    let (code, refused) =
        post(json!({"sandbox_id": "cap-2", "thread_id": "t", "max_shell_sessions": 11})).await;
    assert_eq!(code, 409, "{refused}");
    assert!(
        refused["detail"]
            .as_str()
            .unwrap()
            .contains("10 (the image's default)"),
        "{refused}"
    );
    let (code, _) =
        post(json!({"sandbox_id": "cap-2", "thread_id": "t", "max_shell_sessions": 10})).await;
    assert_eq!(code, 200);
    // Another user for the same sandbox id is a conflict too.
    let (code, refused) =
        post(json!({"sandbox_id": "cap-2", "thread_id": "t", "user_id": "eve"})).await;
    assert_eq!(code, 409, "{refused}");
    assert!(
        refused["detail"]
            .as_str()
            .unwrap()
            .contains("user \"default\""),
        "{refused}"
    );
}

#[tokio::test]
async fn a_service_that_outlived_its_pod_gets_a_new_pod() {
    let ns = TestNamespace::new("gateway-repair").await;
    let svc = TestService::start(gateway_args(&ns)).await;
    let gateway = Gateway::new(&svc.base, Some(KEY));
    let url = gateway
        .create(Some("t"), "orphan-1", Acquire::default())
        .await
        .unwrap();
    let old: Pod = ns.pods().get("sandbox-orphan-1").await.unwrap();
    // Remove only the pod: the Service stays (as after a node loss or a manual delete).
    ns.pods()
        .delete("sandbox-orphan-1", &DeleteParams::orphan().grace_period(0))
        .await
        .unwrap();
    eventually(Duration::from_secs(30), "the pod to be gone", || async {
        ns.pods()
            .get_opt("sandbox-orphan-1")
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
    assert!(ns
        .services()
        .get_opt("sandbox-orphan-1-svc")
        .await
        .unwrap()
        .is_some());
    // The gateway sees it gone and creates it again: a new pod behind a working URL.
    assert_eq!(gateway.is_alive("orphan-1").await, Ok(false));
    let repaired = gateway
        .create(Some("t"), "orphan-1", Acquire::default())
        .await
        .unwrap();
    let new: Pod = ns.pods().get("sandbox-orphan-1").await.unwrap();
    assert_ne!(new.metadata.uid, old.metadata.uid);
    assert!(
        wait_for_sandbox_ready(&repaired).await,
        "{repaired} (was {url})"
    );
    assert_eq!(gateway.is_alive("orphan-1").await, Ok(true));
    let service = ns.services().get("sandbox-orphan-1-svc").await.unwrap();
    assert_eq!(
        service.metadata.owner_references.unwrap()[0].uid,
        new.metadata.uid.unwrap(),
        "the Service now belongs to the new pod"
    );
}

#[tokio::test]
async fn without_a_key_the_api_is_closed_unless_opened_explicitly() {
    let ns = TestNamespace::new("gateway-nokey").await;
    let env = |allow: &str| {
        vec![
            (
                "KUBECONFIG_PATH",
                testkit::kubeconfig_path().display().to_string(),
            ),
            ("K8S_NAMESPACE", ns.name.clone()),
            ("SANDBOX_IMAGE", "sandbox:test".to_string()),
            ("NODE_HOST", "127.0.0.1".to_string()),
            ("SANDBOX_LEADER_LEASE", "0".to_string()),
            ("PROVISIONER_ALLOW_NO_API_KEY", allow.to_string()),
        ]
    };
    let mut closed = RunningBinary::start(&env("false")).await;
    let http = reqwest::Client::new();
    for path in ["/api/sandboxes", "/api/capabilities"] {
        let (code, body) = TestService::answer(http.get(format!("{}{path}", closed.base))).await;
        assert_eq!(code, 401, "{path}: {body}");
        let detail = body["detail"].as_str().unwrap();
        assert!(
            detail.contains("no API key configured") && detail.contains("PROVISIONER_API_KEY"),
            "{detail}"
        );
    }
    let gateway = Gateway::new(&closed.base, None);
    assert!(gateway
        .create(Some("t"), "nokey-1", Acquire::default())
        .await
        .unwrap_err()
        .contains("401"));
    for open in ["/health", "/readyz", "/metrics", "/openapi.json"] {
        let code = http
            .get(format!("{}{open}", closed.base))
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(code, StatusCode::OK, "{open}");
    }
    closed.sigterm();
    let (_, log) = closed.wait_exit(Duration::from_secs(20)).await;
    assert!(
        log.contains("PROVISIONER_API_KEY is not set: every /api/* request is refused with 401"),
        "{log}"
    );
    assert!(ns.leftovers().await.is_empty());

    let mut open = RunningBinary::start(&env("true")).await;
    let gateway = Gateway::new(&open.base, None);
    let url = gateway
        .create(Some("t"), "nokey-2", Acquire::default())
        .await
        .unwrap();
    assert!(wait_for_sandbox_ready(&url).await);
    assert_eq!(gateway.destroy("nokey-2").await, Some(StatusCode::OK));
    open.sigterm();
    let (_, log) = open.wait_exit(Duration::from_secs(20)).await;
    let warning = log
        .lines()
        .find(|l| l.contains("PROVISIONER_ALLOW_NO_API_KEY=true and no PROVISIONER_API_KEY"))
        .unwrap_or_else(|| panic!("no warning in {log}"));
    assert!(warning.contains("WARN"), "{warning}");
}

/// The thread's four skill projections below `path`, as the newest gateway forwards them.
fn skill_projections(user: &str, thread: &str, path: &str) -> Vec<Value> {
    ["public", "custom", "legacy", "integrations"]
        .iter()
        .map(|category| {
            mount(
                &format!("users/{user}/threads/{thread}/skills_view/{category}"),
                &format!("{path}/{category}"),
                true,
            )
        })
        .collect()
}

#[tokio::test]
async fn deerflows_newest_gateway_fences_pod_generations_and_replaces_on_conflict() {
    let ns = TestNamespace::new("gateway-next").await;
    let svc = TestService::start(gateway_args(&ns)).await;
    svc.synced().await;
    let gateway = Gateway::new(&svc.base, Some(KEY));
    let id = "7c1e0f9a2b3d4c5e";
    let skills = "/mnt/agent-skills";
    let mut mounts = vec![mount(
        "users/alice/threads/thread-9/acp-workspace",
        "/mnt/acp-workspace",
        true,
    )];
    mounts.extend(skill_projections("alice", "thread-9", skills));
    let acquire = Acquire {
        user_id: Some("alice"),
        extra_mounts: mounts,
        max_shell_sessions: Some(12),
        skills_container_path: Some(skills),
        ..Acquire::default()
    };
    assert_eq!(gateway.presence(id).await, Ok((false, None)));

    // Create with the capacity it needs and the thread's skill projections.
    let (status, first) = gateway
        .create_answer(Some("thread-9"), id, acquire.clone())
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK, "{first}");
    assert_eq!(first["max_shell_sessions"], 12);
    let generation = first["container_id"].as_str().unwrap().to_string();
    let p = pod(&ns, id).await;
    assert_eq!(p["metadata"]["uid"], generation.as_str());
    assert_eq!(
        mount_paths(&p["spec"]["containers"][0]),
        [
            "/mnt/user-data",
            "/mnt/acp-workspace",
            "/mnt/agent-skills/public",
            "/mnt/agent-skills/custom",
            "/mnt/agent-skills/legacy",
            "/mnt/agent-skills/integrations",
        ],
        "no /mnt/skills mount of the provisioner's own"
    );
    assert_eq!(
        volume(&p, "extra-4")["hostPath"],
        json!({"path": format!("{BASE}/users/alice/threads/thread-9/skills_view/integrations"), "type": "Directory"})
    );
    let url = first["sandbox_url"].as_str().unwrap();
    assert!(wait_for_sandbox_ready(url).await, "{url}");
    assert_eq!(
        gateway.presence(id).await,
        Ok((true, Some(generation.clone())))
    );

    // Reused as it is: the same generation.
    let (status, reused) = gateway
        .create_answer(Some("thread-9"), id, acquire.clone())
        .await
        .unwrap();
    assert_eq!(
        (status, &reused["container_id"]),
        (StatusCode::OK, &json!(generation))
    );

    // It needs more shell sessions now: 409, then DELETE, presence proves it gone, create.
    let bigger = Acquire {
        max_shell_sessions: Some(20),
        ..acquire.clone()
    };
    let (status, conflict) = gateway
        .create_answer(Some("thread-9"), id, bigger.clone())
        .await
        .unwrap();
    assert_eq!(status, StatusCode::CONFLICT, "{conflict}");
    assert_eq!(
        gateway.presence(id).await,
        Ok((true, Some(generation.clone()))),
        "left alone"
    );
    assert_eq!(gateway.destroy(id).await, Some(StatusCode::OK));
    assert_eq!(gateway.presence(id).await, Ok((false, None)));
    let (status, replaced) = gateway
        .create_answer(Some("thread-9"), id, bigger)
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK, "{replaced}");
    let next = replaced["container_id"].as_str().unwrap().to_string();
    assert_ne!(next, generation, "a new Pod generation");
    assert_eq!(replaced["max_shell_sessions"], 20);
    assert_eq!(gateway.presence(id).await, Ok((true, Some(next.clone()))));

    // Another skills path for the same sandbox is a conflict too, naming both paths.
    let (status, conflict) = gateway
        .create_answer(
            Some("thread-9"),
            id,
            Acquire {
                skills_container_path: None,
                extra_mounts: vec![],
                max_shell_sessions: Some(20),
                ..acquire
            },
        )
        .await
        .unwrap();
    assert_eq!(status, StatusCode::CONFLICT, "{conflict}");
    let detail = conflict["detail"].as_str().unwrap();
    assert!(
        detail.contains("/mnt/agent-skills") && detail.contains("/mnt/skills"),
        "{detail}"
    );
    assert_eq!(gateway.presence(id).await, Ok((true, Some(next))));
}

#[tokio::test]
async fn skill_projections_need_a_sound_path_and_bad_ones_create_nothing() {
    let ns = TestNamespace::new("gateway-proj").await;
    let svc = TestService::start(gateway_args(&ns)).await;
    let gateway = Gateway::new(&svc.base, Some(KEY));
    let with = |path: &'static str, mounts: Vec<Value>| Acquire {
        skills_container_path: Some(path),
        extra_mounts: mounts,
        ..Acquire::default()
    };
    let cases: Vec<(Acquire, StatusCode, &str)> = vec![
        (
            with("mnt/s", vec![]),
            StatusCode::UNPROCESSABLE_ENTITY,
            "must be an absolute path",
        ),
        (
            with("/", vec![]),
            StatusCode::UNPROCESSABLE_ENTITY,
            "must not be the root directory",
        ),
        (
            with("/mnt/s/", vec![]),
            StatusCode::UNPROCESSABLE_ENTITY,
            "is not normalised",
        ),
        (
            with("/mnt/user-data/s", vec![]),
            StatusCode::UNPROCESSABLE_ENTITY,
            "lies inside /mnt/user-data",
        ),
        (
            with("/mnt/acp-workspace", vec![]),
            StatusCode::UNPROCESSABLE_ENTITY,
            "lies inside /mnt/acp-workspace",
        ),
        (
            with("/proc/s", vec![]),
            StatusCode::UNPROCESSABLE_ENTITY,
            "system directory",
        ),
        // A category that does not exist, a host path outside the base, a projection without
        // a path of its own, and a projection below another path.
        (
            with(
                "/mnt/s",
                vec![mount(
                    "users/u/threads/t/skills_view/secret",
                    "/mnt/s/secret",
                    true,
                )],
            ),
            StatusCode::BAD_REQUEST,
            "is not a path extra mounts may use",
        ),
        (
            with(
                "/mnt/s",
                vec![
                    json!({"host_path": "/etc/skills", "container_path": "/mnt/s/public", "read_only": true}),
                ],
            ),
            StatusCode::BAD_REQUEST,
            "is outside the DeerFlow base directory",
        ),
        (
            Acquire {
                extra_mounts: skill_projections("u", "t", "/mnt/s"),
                ..Acquire::default()
            },
            StatusCode::BAD_REQUEST,
            "is not a path extra mounts may use",
        ),
        (
            with("/mnt/s", skill_projections("u", "t", "/mnt/other")),
            StatusCode::BAD_REQUEST,
            "is not a path extra mounts may use",
        ),
    ];
    for (acquire, expected, says) in cases {
        let (status, body) = gateway
            .create_answer(Some("t"), "proj-bad", acquire)
            .await
            .unwrap();
        assert_eq!(status, expected, "{body}");
        let detail = body["detail"].as_str().unwrap();
        assert!(detail.contains(says), "{detail}\n  should contain: {says}");
    }
    assert!(
        ns.leftovers().await.is_empty(),
        "{:?}",
        ns.leftovers().await
    );

    // The same projections, well formed, make a sandbox.
    let url = gateway
        .create(
            Some("t"),
            "proj-ok",
            with("/mnt/s", skill_projections("u", "t", "/mnt/s")),
        )
        .await
        .unwrap();
    assert!(wait_for_sandbox_ready(&url).await);
    let p = pod(&ns, "proj-ok").await;
    assert_eq!(
        p["metadata"]["annotations"][manifests::SKILLS_PATH_ANNOTATION],
        "/mnt/s"
    );
}

#[tokio::test]
async fn in_claim_mode_skill_projections_are_sub_paths_of_the_home_claim() {
    let ns = TestNamespace::new("gateway-pvc-proj").await;
    let mut args = gateway_args(&ns);
    args.storage.threads_host_path = None;
    args.storage.deer_flow_host_base_dir = Some(BASE.into());
    args.storage.userdata_pvc_name = Some("deer-flow-home".into());
    args.storage.skills_pvc_name = Some("deer-flow-skills".into());
    let svc = TestService::start(args).await;
    let gateway = Gateway::new(&svc.base, Some(KEY));
    gateway
        .create(
            Some("thread-9"),
            "pvc-proj",
            Acquire {
                user_id: Some("bob"),
                skills_container_path: Some("/mnt/agent-skills"),
                extra_mounts: skill_projections("bob", "thread-9", "/mnt/agent-skills")[..2]
                    .to_vec(),
                ..Acquire::default()
            },
        )
        .await
        .unwrap();
    let p = pod(&ns, "pvc-proj").await;
    assert_eq!(
        p["spec"]["containers"][0]["volumeMounts"],
        json!([
            {"name": "user-data", "mountPath": "/mnt/user-data", "subPath": "deer-flow/users/bob/threads/thread-9/user-data"},
            {"name": "extra-0", "mountPath": "/mnt/agent-skills/public", "readOnly": true, "subPath": "deer-flow/users/bob/threads/thread-9/skills_view/public"},
            {"name": "extra-1", "mountPath": "/mnt/agent-skills/custom", "readOnly": true, "subPath": "deer-flow/users/bob/threads/thread-9/skills_view/custom"},
        ]),
        "no skills claim mount of the provisioner's own"
    );
    assert_eq!(
        volume(&p, "extra-1")["persistentVolumeClaim"]["claimName"],
        "deer-flow-home"
    );
}

#[tokio::test]
async fn lark_conflicts_are_explicit_and_leave_the_sandbox_alone() {
    // No broker image: asking for the broker is 503 naming the variable, and nothing is made.
    let ns = TestNamespace::new("gateway-lark-x").await;
    let mut args = gateway_args(&ns);
    args.sandbox.lark_cli_init_image = Some("lark-init:test".into());
    let svc = TestService::start(args).await;
    let gateway = Gateway::new(&svc.base, Some(KEY));
    let broker = Acquire {
        extra_mounts: lark_mounts(),
        provision_lark_cli_runtime: true,
        provision_lark_cli_broker: true,
        ..Acquire::default()
    };
    let (status, body) = gateway
        .create_answer(Some("t"), "lark-x", broker.clone())
        .await
        .unwrap();
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("LARK_CLI_BROKER_IMAGE"),
        "{body}"
    );
    assert!(
        ns.leftovers().await.is_empty(),
        "{:?}",
        ns.leftovers().await
    );
    drop(svc);

    // With both images: a sandbox made without the broker is not silently reused for one
    // that asks for it, nor the reverse.
    let ns = TestNamespace::new("gateway-lark-c").await;
    let mut args = gateway_args(&ns);
    args.sandbox.lark_cli_init_image = Some("lark-init:test".into());
    args.sandbox.lark_cli_broker_image = Some("lark-broker:test".into());
    let svc = TestService::start(args).await;
    let gateway = Gateway::new(&svc.base, Some(KEY));
    let runtime = Acquire {
        extra_mounts: lark_mounts(),
        provision_lark_cli_runtime: true,
        ..Acquire::default()
    };
    for (id, made, asked, says) in [
        (
            "lark-r",
            &runtime,
            &broker,
            "exists without the Lark CLI broker sidecar, but this request asks for it",
        ),
        (
            "lark-b",
            &broker,
            &runtime,
            "exists with the Lark CLI broker sidecar, but this request asks without it",
        ),
    ] {
        let (status, created) = gateway
            .create_answer(Some("t"), id, made.clone())
            .await
            .unwrap();
        assert_eq!(status, StatusCode::OK, "{created}");
        let (status, conflict) = gateway
            .create_answer(Some("t"), id, asked.clone())
            .await
            .unwrap();
        assert_eq!(status, StatusCode::CONFLICT, "{conflict}");
        let detail = conflict["detail"].as_str().unwrap();
        assert!(detail.contains(says), "{detail}");
        let p = pod(&ns, id).await;
        assert_eq!(
            p["metadata"]["uid"], created["container_id"],
            "the sandbox is untouched"
        );
        let (status, again) = gateway
            .create_answer(Some("t"), id, made.clone())
            .await
            .unwrap();
        assert_eq!(
            (status, &again["container_id"]),
            (StatusCode::OK, &created["container_id"])
        );
    }
}
