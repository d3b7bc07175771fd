//! Parsing and validation of every setting.

use super::*;
use crate::spec::{NetworkPolicyMode, Placement, ProbeTimings, Seccomp};
use clap::Parser;

#[derive(Parser)]
struct TestCli {
    #[command(flatten)]
    serve: ServeArgs,
}

fn parse(args: &[&str]) -> Result<Config, ConfigError> {
    let mut argv = vec!["test"];
    argv.extend_from_slice(args);
    Config::try_from(TestCli::try_parse_from(argv).unwrap().serve)
}

#[test]
fn defaults_are_deerflows() {
    let c = parse(&[]).unwrap();
    assert_eq!(c.http.listen.to_string(), "0.0.0.0:8002");
    assert_eq!(c.connection.namespace, "deer-flow");
    assert_eq!(c.sandbox.image, DEFAULT_IMAGE);
    assert_eq!(
        c.sandbox.exposure,
        Exposure::NodePort {
            node_host: "host.docker.internal".into()
        }
    );
    assert_eq!(
        c.connection.kubeconfig_path,
        PathBuf::from("/root/.kube/config")
    );
    assert_eq!(c.connection.api_server, None);
    assert!(!c.connection.insecure_skip_tls_verify);
}

#[test]
fn relative_host_path_names_the_variable() {
    let e = parse(&["--skills-host-path", "skills"]).unwrap_err();
    assert_eq!(e.variable, "SKILLS_HOST_PATH");
    assert!(e.to_string().contains("absolute"), "{e}");
}

#[test]
fn dotdot_host_path_is_refused() {
    let e = parse(&["--threads-host-path", "/srv/../etc"]).unwrap_err();
    assert_eq!(e.variable, "THREADS_HOST_PATH");
    assert!(e.to_string().contains(".."), "{e}");
    assert!(parse(&["--threads-host-path", "/srv/..data"]).is_ok());
}

#[test]
fn host_paths_lose_trailing_slashes() {
    let c = parse(&["--threads-host-path", "/srv/threads/"]).unwrap();
    assert_eq!(
        c.sandbox.user_data,
        UserDataMount::HostPath("/srv/threads".into())
    );
}

#[test]
fn bad_namespace_listen_server_and_timeout_are_refused() {
    assert_eq!(
        parse(&["--namespace", "Deer_Flow"]).unwrap_err().variable,
        "K8S_NAMESPACE"
    );
    assert_eq!(
        parse(&["--listen", "8002"]).unwrap_err().variable,
        "PROVISIONER_LISTEN"
    );
    assert_eq!(
        parse(&["--k8s-api-server", "host.docker.internal"])
            .unwrap_err()
            .variable,
        "K8S_API_SERVER"
    );
    assert_eq!(
        parse(&["--k8s-api-timeout-seconds", "0"])
            .unwrap_err()
            .variable,
        "K8S_API_TIMEOUT_SECONDS"
    );
    assert_eq!(
        parse(&["--node-host", "http://x"]).unwrap_err().variable,
        "NODE_HOST"
    );
}

#[test]
fn security_defaults_are_strict() {
    let c = parse(&[]).unwrap();
    let s = c.sandbox.security;
    assert!(
        !s.automount_service_account_token
            && !s.enable_service_links
            && !s.allow_privilege_escalation
    );
    assert_eq!(s.seccomp, Seccomp::RuntimeDefault);
    assert_eq!(s.capabilities_drop, ["ALL"]);
    assert!(!s.capabilities_add.contains(&"NET_RAW".to_string()));
    assert!(s.capabilities_add.contains(&"SETUID".to_string()));
    assert_eq!(c.http.api_key, None);
}

#[test]
fn security_settings_are_parsed_and_checked() {
    let c = parse(&[
        "--sandbox-seccomp-profile",
        "Localhost/profiles/sandbox.json",
        "--sandbox-capabilities-add",
        "cap_sys_ptrace, NET_ADMIN",
        "--sandbox-capabilities-drop",
        "",
    ])
    .unwrap();
    assert_eq!(
        c.sandbox.security.seccomp,
        Seccomp::Localhost("profiles/sandbox.json".into())
    );
    assert_eq!(
        c.sandbox.security.capabilities_add,
        ["SYS_PTRACE", "NET_ADMIN"]
    );
    assert!(c.sandbox.security.capabilities_drop.is_empty());
    assert_eq!(
        parse(&["--sandbox-seccomp-profile", "Bogus"])
            .unwrap_err()
            .variable,
        "SANDBOX_SECCOMP_PROFILE"
    );
    assert_eq!(
        parse(&["--sandbox-capabilities-add", "NET ADMIN"])
            .unwrap_err()
            .variable,
        "SANDBOX_CAPABILITIES_ADD"
    );
}

#[test]
fn api_key_rules() {
    let e = parse(&["--require-api-key"]).unwrap_err();
    assert_eq!(e.variable, "PROVISIONER_API_KEY");
    let short = parse(&["--api-key", "short"]).unwrap_err();
    assert!(
        !short.to_string().contains("short"),
        "the key is never echoed: {short}"
    );
    let c = parse(&["--api-key", "0123456789abcdef0123", "--require-api-key"]).unwrap();
    assert_eq!(c.http.api_key.as_deref(), Some("0123456789abcdef0123"));
    assert_eq!(
        parse(&["--max-concurrent-requests", "0"])
            .unwrap_err()
            .variable,
        "PROVISIONER_MAX_CONCURRENT_REQUESTS"
    );
}

#[test]
fn service_type_and_port() {
    let c = parse(&[]).unwrap();
    assert_eq!(
        (c.sandbox.exposure.service_type(), c.sandbox.port),
        ("NodePort", 8080)
    );
    let c = parse(&[
        "--sandbox-service-type",
        "ClusterIP",
        "--sandbox-container-port",
        "9090",
    ])
    .unwrap();
    assert_eq!(
        (c.sandbox.exposure, c.sandbox.port),
        (Exposure::ClusterIp, 9090)
    );
    assert_eq!(
        parse(&["--sandbox-service-type", "LoadBalancer"])
            .unwrap_err()
            .variable,
        "SANDBOX_SERVICE_TYPE"
    );
    assert_eq!(
        parse(&["--sandbox-container-port", "0"])
            .unwrap_err()
            .variable,
        "SANDBOX_CONTAINER_PORT"
    );
}

#[test]
fn sizes_from_the_environment() {
    let c = parse(&[]).unwrap();
    assert_eq!(c.sizes.sizes["default"], Sizes::deerflow_default());
    let c = parse(&[
        "--sandbox-sizes",
        r#"{"large": {"requests": {"cpu": "1"}, "limits": {"cpu": "2", "memory": "4Gi"}}}"#,
        "--sandbox-default-size",
        "large",
    ])
    .unwrap();
    assert_eq!(c.sizes.default_size, "large");
    assert_eq!(c.sizes.sizes.len(), 2);
    assert_eq!(
        parse(&["--sandbox-sizes", "{not json"])
            .unwrap_err()
            .variable,
        "SANDBOX_SIZES"
    );
    let too_big = r#"{"huge": {"limits": {"memory": "64Gi"}}}"#;
    let e = parse(&["--sandbox-sizes", too_big]).unwrap_err();
    assert_eq!(e.variable, "SANDBOX_SIZES");
    assert!(
        e.problem.contains("huge") && e.problem.contains("8Gi"),
        "{e}"
    );
    assert_eq!(
        parse(&["--sandbox-default-size", "nope"])
            .unwrap_err()
            .variable,
        "SANDBOX_DEFAULT_SIZE"
    );
    assert_eq!(
        parse(&["--sandbox-max-resources", "[]"])
            .unwrap_err()
            .variable,
        "SANDBOX_MAX_RESOURCES"
    );
}

#[test]
fn pvc_settings() {
    let c = parse(&[
        "--skills-pvc-name",
        "skills",
        "--skills-pvc-subpath",
        "public/skills",
        "--userdata-pvc-name",
        "data",
    ])
    .unwrap();
    assert_eq!(
        c.sandbox.skills,
        SkillsMount::Claim {
            name: "skills".into(),
            sub_path: Some(SubPathTemplate::parse("public/skills").unwrap())
        }
    );
    assert_eq!(
        c.sandbox.user_data,
        UserDataMount::Claim {
            name: "data".into(),
            sub_path: SubPathTemplate::parse(
                "deer-flow/users/{user_id}/threads/{thread_id}/user-data"
            )
            .unwrap()
        }
    );
    assert_eq!(
        parse(&["--userdata-pvc-name", "Bad_Name"])
            .unwrap_err()
            .variable,
        "USERDATA_PVC_NAME"
    );
    assert_eq!(
        parse(&["--skills-pvc-name", "s", "--skills-pvc-subpath", "../x"])
            .unwrap_err()
            .variable,
        "SKILLS_PVC_SUBPATH"
    );
    assert_eq!(
        parse(&["--userdata-pvc-name", "d", "--threads-host-path", "/srv/t"])
            .unwrap_err()
            .variable,
        "USERDATA_PVC_NAME"
    );
}

#[test]
fn sub_path_templates_are_checked_at_start() {
    let c = parse(&[
        "--userdata-pvc-name",
        "data",
        "--userdata-pvc-subpath-template",
        "threads/{thread_id}/user-data",
        "--skills-pvc-name",
        "skills",
        "--skills-pvc-subpath-template",
        "skills/{user_id}",
    ])
    .unwrap();
    let user = crate::sandbox::UserId::parse("u").unwrap();
    let thread = crate::sandbox::ThreadId::parse("t").unwrap();
    let UserDataMount::Claim { sub_path, .. } = &c.sandbox.user_data else {
        panic!("{:?}", c.sandbox.user_data)
    };
    assert_eq!(sub_path.render(&user, &thread), "threads/t/user-data");
    let SkillsMount::Claim {
        sub_path: Some(skills),
        ..
    } = &c.sandbox.skills
    else {
        panic!("{:?}", c.sandbox.skills)
    };
    assert_eq!(skills.render(&user, &thread), "skills/u");
    for (flags, variable, problem) in [
        (
            &[
                "--userdata-pvc-name",
                "d",
                "--userdata-pvc-subpath-template",
                "x/{thread}",
            ][..],
            "USERDATA_PVC_SUBPATH_TEMPLATE",
            "unknown placeholder {thread}",
        ),
        (
            &[
                "--skills-pvc-name",
                "s",
                "--skills-pvc-subpath-template",
                "/{user_id}",
            ][..],
            "SKILLS_PVC_SUBPATH_TEMPLATE",
            "relative path",
        ),
        (
            &[
                "--skills-pvc-name",
                "s",
                "--skills-pvc-subpath",
                "a",
                "--skills-pvc-subpath-template",
                "b",
            ][..],
            "SKILLS_PVC_SUBPATH_TEMPLATE",
            "together with SKILLS_PVC_SUBPATH",
        ),
    ] {
        let e = parse(flags).unwrap_err();
        assert_eq!(e.variable, variable, "{e}");
        assert!(e.problem.contains(problem), "{e}");
    }
}

#[test]
fn skills_precedence_and_the_base_directory() {
    // Nothing set: no skills (as before), extra mounts checked against DeerFlow's default.
    let c = parse(&[]).unwrap();
    assert_eq!(c.sandbox.skills, SkillsMount::None);
    assert_eq!(c.sandbox.host_base.dir, "/.deer-flow");
    // THREADS_HOST_PATH ending in /threads: its parent is the base, skills are per user.
    let c = parse(&["--threads-host-path", "/srv/df/threads/"]).unwrap();
    assert_eq!(c.sandbox.host_base.dir, "/srv/df");
    assert_eq!(
        c.sandbox.skills,
        SkillsMount::PerUser {
            base: "/srv/df".into()
        }
    );
    // A THREADS_HOST_PATH ending otherwise says nothing about the base.
    let c = parse(&["--threads-host-path", "/srv/df/data"]).unwrap();
    assert_eq!(c.sandbox.skills, SkillsMount::None);
    assert_eq!(c.sandbox.host_base.dir, "/.deer-flow");
    // DEER_FLOW_HOST_BASE_DIR wins over the parent of THREADS_HOST_PATH.
    let c = parse(&[
        "--threads-host-path",
        "/srv/df/threads",
        "--deer-flow-host-base-dir",
        "/data//deer-flow/",
    ])
    .unwrap();
    assert_eq!(c.sandbox.host_base.dir, "/data/deer-flow");
    assert_eq!(c.sandbox.host_base.origin, "DEER_FLOW_HOST_BASE_DIR");
    // SKILLS_HOST_PATH wins over the per-user layout, SKILLS_PVC_NAME over both.
    let c = parse(&[
        "--deer-flow-host-base-dir",
        "/df",
        "--skills-host-path",
        "/srv/skills",
    ])
    .unwrap();
    assert_eq!(
        c.sandbox.skills,
        SkillsMount::HostPath("/srv/skills".into())
    );
    assert_eq!(c.sandbox.host_base.dir, "/df");
    let c = parse(&["--deer-flow-host-base-dir", "/df", "--skills-pvc-name", "s"]).unwrap();
    assert!(matches!(c.sandbox.skills, SkillsMount::Claim { .. }));
    let e = parse(&["--deer-flow-host-base-dir", "df"]).unwrap_err();
    assert_eq!(e.variable, "DEER_FLOW_HOST_BASE_DIR");
}

#[test]
fn lark_images_and_the_api_key_opt_out() {
    let c = parse(&[]).unwrap();
    assert_eq!(c.sandbox.lark, crate::spec::LarkImages::default());
    assert!(!c.http.allow_no_api_key);
    let c = parse(&[
        "--lark-cli-init-image",
        "lark-init:1",
        "--lark-cli-broker-image",
        " lark-broker:1 ",
        "--lark-broker-deny-subcommands",
        "config,auth",
        "--allow-no-api-key",
    ])
    .unwrap();
    assert_eq!(c.sandbox.lark.init_image.as_deref(), Some("lark-init:1"));
    assert_eq!(
        c.sandbox.lark.broker_image.as_deref(),
        Some("lark-broker:1")
    );
    assert_eq!(
        c.sandbox.lark.broker_deny_subcommands.as_deref(),
        Some("config,auth")
    );
    assert!(c.http.allow_no_api_key);
    let e = parse(&["--lark-cli-broker-image", "a b"]).unwrap_err();
    assert_eq!(e.variable, "LARK_CLI_BROKER_IMAGE");
}

#[test]
fn placement_inline_or_from_a_file() {
    assert_eq!(parse(&[]).unwrap().sandbox.placement, Placement::default());
    let c = parse(&["--sandbox-placement", r#"{"runtimeClassName": "gvisor"}"#]).unwrap();
    assert_eq!(
        c.sandbox.placement.runtime_class_name.as_deref(),
        Some("gvisor")
    );
    let e = parse(&["--sandbox-placement", r#"{"nodeSelecter": {}}"#]).unwrap_err();
    assert_eq!(e.variable, "SANDBOX_PLACEMENT");
    assert!(e.problem.contains("nodeSelecter"), "{e}");
    let file = std::env::temp_dir().join(format!("placement-{}.json", std::process::id()));
    std::fs::write(&file, r#"{"priorityClassName": "low"}"#).unwrap();
    let c = parse(&["--sandbox-placement", file.to_str().unwrap()]).unwrap();
    std::fs::remove_file(&file).unwrap();
    assert_eq!(
        c.sandbox.placement.priority_class_name.as_deref(),
        Some("low")
    );
    assert!(parse(&["--sandbox-placement", "/nonexistent/placement.json"]).is_err());
}

#[test]
fn a_pod_template_is_read_checked_and_kept_apart_from_the_placement() {
    let dir = std::env::temp_dir().join(format!("pod-template-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let write = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    };
    assert!(parse(&[]).unwrap().sandbox.pod_template.is_empty());
    let good = write("good.yaml", "spec: {runtimeClassName: gvisor}\n");
    let c = parse(&["--sandbox-pod-template", &good]).unwrap();
    assert!(!c.sandbox.pod_template.is_empty());
    assert!(
        !c.clusters[0].sandbox.pod_template.is_empty(),
        "the single cluster's too"
    );

    let owned = write(
        "owned.yaml",
        "spec: {containers: [{name: sandbox, image: x}]}\n",
    );
    let e = parse(&["--sandbox-pod-template", &owned]).unwrap_err();
    assert_eq!(e.variable, "SANDBOX_POD_TEMPLATE");
    assert!(
        e.problem
            .contains("spec.containers[0].image is the provisioner's"),
        "{e}"
    );
    let e = parse(&["--sandbox-pod-template", "/nonexistent/template.yaml"]).unwrap_err();
    assert_eq!(e.variable, "SANDBOX_POD_TEMPLATE");
    assert!(e.problem.contains("cannot read the pod template"), "{e}");

    // A placement field may come from one of the two, not both.
    let e = parse(&[
        "--sandbox-pod-template",
        &good,
        "--sandbox-placement",
        r#"{"runtimeClassName": "kata"}"#,
    ])
    .unwrap_err();
    assert_eq!(e.variable, "SANDBOX_POD_TEMPLATE");
    assert!(
        e.problem.contains(
            "sets spec.runtimeClassName, which the placement (SANDBOX_PLACEMENT) sets too"
        ),
        "{e}"
    );
    let both = parse(&[
        "--sandbox-pod-template",
        &good,
        "--sandbox-placement",
        r#"{"nodeSelector": {"pool": "sandboxes"}}"#,
    ])
    .unwrap();
    assert!(both.sandbox.placement.node_selector.is_some());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn network_policy_modes() {
    assert_eq!(
        parse(&[]).unwrap().sandbox.network_policy,
        NetworkPolicyMode::None
    );
    let c = parse(&["--sandbox-network-policy", "isolated"]).unwrap();
    let NetworkPolicyMode::Isolated {
        ingress_from,
        egress_deny,
        dns_to,
    } = c.sandbox.network_policy
    else {
        panic!()
    };
    assert!(ingress_from.is_empty());
    assert_eq!(egress_deny.len(), 10);
    assert_eq!(dns_to.len(), 1, "the cluster's DNS Pods");
    assert_eq!(
        parse(&[
            "--sandbox-network-policy",
            "isolated",
            "--sandbox-network-policy-dns-to",
            "nope"
        ])
        .unwrap_err()
        .variable,
        "SANDBOX_NETWORK_POLICY_DNS_TO"
    );
    assert_eq!(
        parse(&["--sandbox-network-policy", "open"])
            .unwrap_err()
            .variable,
        "SANDBOX_NETWORK_POLICY"
    );
    assert_eq!(
        parse(&[
            "--sandbox-network-policy",
            "isolated",
            "--sandbox-egress-deny-cidrs",
            "10.0.0.0/8,nope"
        ])
        .unwrap_err()
        .variable,
        "SANDBOX_EGRESS_DENY_CIDRS"
    );
    assert_eq!(
        parse(&[
            "--sandbox-network-policy",
            "isolated",
            "--sandbox-network-policy-ingress-from",
            "{}"
        ])
        .unwrap_err()
        .variable,
        "SANDBOX_NETWORK_POLICY_INGRESS_FROM"
    );
    let file = std::env::temp_dir().join(format!("netpol-{}.json", std::process::id()));
    std::fs::write(&file, r#"{"policyTypes": ["Ingress"], "ingress": []}"#).unwrap();
    let c = parse(&["--sandbox-network-policy", file.to_str().unwrap()]).unwrap();
    std::fs::remove_file(&file).unwrap();
    assert!(matches!(
        c.sandbox.network_policy,
        NetworkPolicyMode::Template(_)
    ));
}

#[test]
fn timers() {
    let c = parse(&[]).unwrap();
    assert_eq!(
        c.lifecycle.timers,
        Timers {
            lifetime: Duration::ZERO,
            idle: Duration::ZERO,
            ready: Duration::from_secs(900)
        }
    );
    assert_eq!(c.lifecycle.reap_interval, Duration::from_secs(10));
    let c = parse(&[
        "--sandbox-max-lifetime",
        "2h",
        "--sandbox-idle-timeout",
        "10m",
    ])
    .unwrap();
    assert_eq!(
        (
            c.lifecycle.timers.lifetime.as_secs(),
            c.lifecycle.timers.idle.as_secs()
        ),
        (7200, 600)
    );
    assert_eq!(
        parse(&["--sandbox-idle-timeout", "soon"])
            .unwrap_err()
            .variable,
        "SANDBOX_IDLE_TIMEOUT"
    );
    assert_eq!(
        parse(&["--sandbox-reap-interval", "0"])
            .unwrap_err()
            .variable,
        "SANDBOX_REAP_INTERVAL"
    );
}

#[test]
fn api_server_override_is_parsed() {
    let c = parse(&["--k8s-api-server", "https://host.docker.internal:26443"]).unwrap();
    assert_eq!(
        c.connection.api_server.unwrap().host(),
        Some("host.docker.internal")
    );
}

#[test]
fn probe_timings_default_to_a_startup_probe_and_reach_deerflows() {
    assert_eq!(parse(&[]).unwrap().sandbox.probes, ProbeTimings::DEFAULT);
    let c = parse(&[
        "--sandbox-probe-startup-timeout",
        "0",
        "--sandbox-probe-readiness-initial-delay-seconds",
        "5",
        "--sandbox-probe-liveness-initial-delay-seconds",
        "10",
    ])
    .unwrap();
    assert_eq!(c.sandbox.probes, ProbeTimings::DEERFLOW);
    // The failure threshold covers the whole timeout.
    let c = parse(&[
        "--sandbox-probe-startup-timeout",
        "5m",
        "--sandbox-probe-startup-period-seconds",
        "2",
    ])
    .unwrap();
    assert_eq!(c.sandbox.probes.startup, Some((2, 150)));
    for (flag, value, variable) in [
        (
            "--sandbox-probe-startup-period-seconds",
            "0",
            "SANDBOX_PROBE_STARTUP_PERIOD_SECONDS",
        ),
        (
            "--sandbox-probe-readiness-period-seconds",
            "0",
            "SANDBOX_PROBE_READINESS_PERIOD_SECONDS",
        ),
        (
            "--sandbox-probe-liveness-initial-delay-seconds",
            "9999",
            "SANDBOX_PROBE_LIVENESS_INITIAL_DELAY_SECONDS",
        ),
        (
            "--sandbox-probe-startup-timeout",
            "soon",
            "SANDBOX_PROBE_STARTUP_TIMEOUT",
        ),
        (
            "--sandbox-probe-startup-timeout",
            "100h",
            "SANDBOX_PROBE_STARTUP_TIMEOUT",
        ),
    ] {
        assert_eq!(
            parse(&[flag, value]).unwrap_err().variable,
            variable,
            "{flag} {value}"
        );
    }
}

#[test]
fn gateway_mode_needs_a_public_url_and_a_secret() {
    const SECRET: &str = "0123456789abcdef0123456789abcdef";
    let c = parse(&[]).unwrap();
    assert!(!c.gateway.on);
    assert!(matches!(c.sandbox.urls, crate::spec::SandboxUrls::Direct));
    assert_eq!(c.gateway.limits.response_timeout, Duration::from_secs(610));
    assert_eq!(c.gateway.limits.idle_timeout, Duration::from_secs(610));
    assert_eq!(c.gateway.limits.max_body_bytes, 100 * 1024 * 1024);
    let error = |args: &[&str]| parse(args).unwrap_err();
    assert_eq!(
        error(&["--sandbox-url-mode", "gateway"]).variable,
        "PROVISIONER_PUBLIC_URL"
    );
    let url = [
        "--sandbox-url-mode",
        "gateway",
        "--public-url",
        "http://p:8002/",
    ];
    assert_eq!(error(&url).variable, "PROVISIONER_GATEWAY_SECRET");
    let mut short = url.to_vec();
    short.extend(["--gateway-secret", "short"]);
    let e = error(&short);
    assert_eq!(e.variable, "PROVISIONER_GATEWAY_SECRET");
    assert!(
        !e.to_string().contains("short"),
        "secrets are not shown: {e}"
    );
    for bad in ["ftp://p", "http://p/?a=1", "p:8002", ""] {
        let args = [
            "--sandbox-url-mode",
            "gateway",
            "--public-url",
            bad,
            "--gateway-secret",
            SECRET,
        ];
        assert_eq!(error(&args).variable, "PROVISIONER_PUBLIC_URL", "{bad}");
    }
    let mut good = url.to_vec();
    good.extend(["--gateway-secret", SECRET, "--sandbox-service-type", "None"]);
    let c = parse(&good).unwrap();
    assert!(c.gateway.on);
    let crate::spec::SandboxUrls::Gateway(urls) = &c.clusters[0].sandbox.urls else {
        panic!("gateway URLs")
    };
    assert_eq!(urls.public_url, "http://p:8002");
    assert_eq!(c.clusters[0].sandbox.exposure, Exposure::None);
    // Without a Service, the apiserver's proxy has nothing to go through.
    let mut apiserver = good.clone();
    apiserver.extend(["--gateway-reach", "apiserver"]);
    assert_eq!(error(&apiserver).variable, "SANDBOX_SERVICE_TYPE");
    // No Service and gateway-only settings need gateway mode.
    assert_eq!(
        error(&["--sandbox-service-type", "None"]).variable,
        "SANDBOX_SERVICE_TYPE"
    );
    assert_eq!(
        error(&["--sandbox-upstream-key", "per-sandbox"]).variable,
        "SANDBOX_UPSTREAM_KEY"
    );
    assert_eq!(
        error(&["--sandbox-url-mode", "proxy"]).variable,
        "SANDBOX_URL_MODE"
    );
}

#[test]
fn warm_pools_name_sizes_and_refuse_what_is_fixed_at_pod_start() {
    let c = parse(&[]).unwrap();
    assert!(!c.sandbox.warm_pool.on(), "no pools by default");
    assert_eq!(c.sandbox.warm_pool.max_age, Duration::from_secs(3600));
    assert_eq!(c.sandbox.warm_pool.bind_timeout, Duration::from_secs(10));
    let sizes = r#"{"large": {"requests": {"cpu": "1"}, "limits": {"cpu": "2", "memory": "2Gi"}}}"#;
    let c = parse(&[
        "--sandbox-sizes",
        sizes,
        "--sandbox-warm-pool",
        r#"{"default": 5, "large": 2}"#,
        "--threads-host-path",
        "/srv/threads",
    ])
    .unwrap();
    let pools = &c.clusters[0].sandbox.warm_pool;
    assert!(pools.on());
    let large = pools.class("large").unwrap();
    assert_eq!(
        (large.target, large.resources.limits["cpu"].as_str()),
        (2, "2")
    );
    assert_eq!(
        pools.class("default").unwrap().resources,
        crate::sandbox::Sizes::deerflow_default()
    );
    let error = |args: &[&str]| parse(args).unwrap_err();
    let e = error(&["--sandbox-warm-pool", r#"{"huge": 1}"#]);
    assert_eq!(e.variable, "SANDBOX_WARM_POOL");
    assert!(e.problem.contains("known sizes: default"), "{e}");
    let e = error(&["--sandbox-warm-pool", "5"]);
    assert!(e.problem.contains(r#"{"default": 5}"#), "{e}");
    let e = error(&["--sandbox-warm-pool", r#"{"default": 5000}"#]);
    assert!(e.problem.contains("at most 1000"), "{e}");
    let e = error(&[
        "--sandbox-warm-pool",
        r#"{"default": 1}"#,
        "--userdata-pvc-name",
        "data",
    ]);
    assert!(e.problem.contains("USERDATA_PVC_NAME"), "{e}");
    let e = error(&[
        "--sandbox-warm-pool-slot-root",
        "slots",
        "--sandbox-warm-pool",
        r#"{"default": 1}"#,
    ]);
    assert_eq!(e.variable, "SANDBOX_WARM_POOL_SLOT_ROOT");
    let e = error(&["--sandbox-warm-pool-bind-timeout", "soon"]);
    assert_eq!(e.variable, "SANDBOX_WARM_POOL_BIND_TIMEOUT");
    // A pool of nothing is no pool.
    assert!(!parse(&["--sandbox-warm-pool", r#"{"default": 0}"#])
        .unwrap()
        .sandbox
        .warm_pool
        .on());
}
