//! The HTTP behaviour that needs no cluster, driven with `oneshot` against an app whose
//! Kubernetes calls would go nowhere (a closed port): every request here must be answered
//! before any of them is made.

use axum::{
    body::{to_bytes, Body},
    http::{Method, Request, StatusCode},
    Router,
};
use serde_json::{json, Value};
use tower::ServiceExt;

use crate::{cluster::Cluster, metrics::Metrics};

const KEY: &str = "test-key-0123456789";

/// The app as `serve` builds it from these flags, with a cluster that is never reached.
fn app_with(flags: &[&str]) -> Router {
    let config = crate::config::from_flags(flags);
    let metrics = Metrics::new();
    let cluster = Cluster::nowhere("default", &config, &metrics);
    let admission = config.tenancy.admission(metrics.clone());
    super::app(
        crate::fleet::Fleet::new(vec![cluster], admission, metrics),
        super::ApiSettings::from_config(&config),
    )
}

fn app() -> Router {
    app_with(&["--api-key", KEY])
}

async fn send(app: Router, request: Request<Body>) -> (StatusCode, Value, axum::http::HeaderMap) {
    let response = app.oneshot(request).await.unwrap();
    let (parts, body) = response.into_parts();
    let bytes = to_bytes(body, 1 << 20).await.unwrap();
    let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (parts.status, json, parts.headers)
}

fn request(method: Method, path: &str) -> axum::http::request::Builder {
    Request::builder()
        .method(method)
        .uri(path)
        .header("x-api-key", KEY)
}

async fn post_json(body: &str) -> (StatusCode, Value) {
    let req = request(Method::POST, "/api/sandboxes")
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap();
    let (status, json, _) = send(app(), req).await;
    (status, json)
}

fn detail(body: &Value) -> &str {
    body["detail"]
        .as_str()
        .unwrap_or_else(|| panic!("no detail in {body}"))
}

#[tokio::test]
async fn health_answers_without_a_key() {
    let req = Request::get("/health").body(Body::empty()).unwrap();
    let (status, body, _) = send(app(), req).await;
    assert_eq!((status, body), (StatusCode::OK, json!({"status": "ok"})));
}

#[tokio::test]
async fn the_openapi_document_is_served_without_a_key() {
    let req = Request::get("/openapi.json").body(Body::empty()).unwrap();
    let (status, body, _) = send(app(), req).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        body["paths"]["/api/sandboxes"]["post"].is_object(),
        "{body}"
    );
}

#[tokio::test]
async fn a_missing_key_is_401_with_a_challenge() {
    let req = Request::get("/api/sandboxes").body(Body::empty()).unwrap();
    let (status, body, headers) = send(app(), req).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(detail(&body).contains("API key"), "{body}");
    assert!(headers.contains_key("www-authenticate"));
}

#[tokio::test]
async fn a_wrong_key_is_401_and_not_echoed() {
    let req = Request::get("/api/capabilities")
        .header("x-api-key", "wrong-key-xyz")
        .body(Body::empty())
        .unwrap();
    let (status, body, _) = send(app(), req).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(!body.to_string().contains("wrong-key-xyz"), "{body}");
}

#[tokio::test]
async fn a_key_that_is_not_ascii_or_not_utf8_is_401_like_any_wrong_key() {
    for raw in [
        "clé-ünïcödé-0123456789".as_bytes(),
        &[0xff, 0xfe, 0x80, b'k', b'e', b'y'][..],
        KEY.replace('0', "\u{e9}").as_bytes(),
    ] {
        for header in ["x-api-key", "authorization"] {
            let mut value = raw.to_vec();
            if header == "authorization" {
                value.splice(0..0, b"Bearer ".iter().copied());
            }
            let req = Request::get("/api/sandboxes")
                .header(header, axum::http::HeaderValue::from_bytes(&value).unwrap())
                .body(Body::empty())
                .unwrap();
            let (status, body, headers) = send(app(), req).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{header}: {raw:?}");
            assert!(detail(&body).contains("API key"), "{body}");
            assert!(headers.contains_key("www-authenticate"));
        }
    }
}

#[tokio::test]
async fn a_bearer_token_is_a_key_too() {
    let req = Request::get("/api/capabilities")
        .header("authorization", format!("Bearer {KEY}"))
        .body(Body::empty())
        .unwrap();
    assert_eq!(send(app(), req).await.0, StatusCode::OK);
}

#[tokio::test]
async fn capabilities_list_sizes_and_modes() {
    let req = request(Method::GET, "/api/capabilities")
        .body(Body::empty())
        .unwrap();
    let (status, body, _) = send(app(), req).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["service_type"], "NodePort");
    assert_eq!(body["network_policy"], "none");
    assert_eq!(body["container_port"], 8080);
}

#[tokio::test]
async fn unknown_routes_are_404_json() {
    let req = request(Method::GET, "/api/nothing")
        .body(Body::empty())
        .unwrap();
    let (status, body, _) = send(app(), req).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(!detail(&body).is_empty());
}

#[tokio::test]
async fn wrong_methods_are_405_json() {
    let req = request(Method::PUT, "/api/sandboxes")
        .body(Body::empty())
        .unwrap();
    let (status, body, _) = send(app(), req).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert!(!detail(&body).is_empty());
}

#[tokio::test]
async fn a_body_that_is_not_json_is_415() {
    let req = request(Method::POST, "/api/sandboxes")
        .header("content-type", "text/plain")
        .body(Body::from("sandbox_id=a"))
        .unwrap();
    assert_eq!(send(app(), req).await.0, StatusCode::UNSUPPORTED_MEDIA_TYPE);
}

#[tokio::test]
async fn a_body_over_the_limit_is_413() {
    let big = format!(
        r#"{{"sandbox_id":"a","thread_id":"{}"}}"#,
        "x".repeat(100_000)
    );
    let req = request(Method::POST, "/api/sandboxes")
        .header("content-type", "application/json")
        .body(Body::from(big))
        .unwrap();
    let (status, body, _) = send(
        app_with(&["--api-key", KEY, "--max-body-bytes", "1024"]),
        req,
    )
    .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(detail(&body).contains("1024"), "{body}");
}

#[tokio::test]
async fn malformed_and_non_object_bodies_are_422() {
    for body in [
        "{",
        "[]",
        "\"a\"",
        "{\"sandbox_id\": 1, \"thread_id\": \"t\"}",
    ] {
        let (status, answer) = post_json(body).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {answer}");
    }
}

#[tokio::test]
async fn duplicate_fields_are_422() {
    let (status, body) = post_json(r#"{"sandbox_id":"a","sandbox_id":"b","thread_id":"t"}"#).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
}

#[tokio::test]
async fn hostile_ids_are_422_before_any_call() {
    for (sandbox_id, thread_id) in [
        ("UPPER", "t"),
        ("-a", "t"),
        (&*"a".repeat(52), "t"),
        ("a", "../../etc"),
        ("a", "a/b"),
        ("a", ""),
        ("a", "nul\u{0}byte"),
    ] {
        let body = json!({"sandbox_id": sandbox_id, "thread_id": thread_id}).to_string();
        let (status, answer) = post_json(&body).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {answer}");
    }
}

#[tokio::test]
async fn an_unknown_size_lists_the_known_ones() {
    let (status, body) = post_json(r#"{"sandbox_id":"a","thread_id":"t","size":"huge"}"#).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let detail = detail(&body);
    assert!(
        detail.contains("\"huge\"") && detail.contains("the known sizes are: default"),
        "{body}"
    );
}

#[tokio::test]
async fn resources_above_the_ceiling_are_422() {
    let body = r#"{"sandbox_id":"a","thread_id":"t","resources":{"limits":{"cpu":"64"}}}"#;
    let (status, answer) = post_json(body).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");
}

#[tokio::test]
async fn timers_beyond_a_year_are_422() {
    let body = r#"{"sandbox_id":"a","thread_id":"t","ttl_seconds":40000000}"#;
    let (status, answer) = post_json(body).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(detail(&answer).contains("ttl_seconds"), "{answer}");
}

#[tokio::test]
async fn wait_limits_out_of_range_are_422() {
    let (status, _) =
        post_json(r#"{"sandbox_id":"a","thread_id":"t","wait_ready_seconds":301}"#).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    for query in ["wait_ready=301", "wait_ready=-1", "wait_ready=abc"] {
        let req = request(Method::GET, &format!("/api/sandboxes/a?{query}"))
            .body(Body::empty())
            .unwrap();
        assert_eq!(
            send(app(), req).await.0,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{query}"
        );
    }
}

#[tokio::test]
async fn bad_ids_in_paths_are_422() {
    for (method, path) in [
        (Method::GET, "/api/sandboxes/Not_Valid"),
        (Method::DELETE, "/api/sandboxes/Not_Valid"),
        (Method::POST, "/api/sandboxes/Not_Valid/keepalive"),
    ] {
        let req = request(method.clone(), path).body(Body::empty()).unwrap();
        let (status, body, _) = send(app(), req).await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{method} {path}: {body}"
        );
    }
}

#[tokio::test]
async fn request_ids_are_echoed_or_made() {
    let req = Request::get("/health")
        .header("x-request-id", "abc-123")
        .body(Body::empty())
        .unwrap();
    // Probes are outside the request log: an API route carries the id.
    let _ = send(app(), req).await;
    let req = request(Method::GET, "/api/capabilities")
        .header("x-request-id", "abc-123")
        .body(Body::empty())
        .unwrap();
    let (_, _, headers) = send(app(), req).await;
    assert_eq!(headers["x-request-id"], "abc-123");
    let req = request(Method::GET, "/api/capabilities")
        .body(Body::empty())
        .unwrap();
    let (_, _, headers) = send(app(), req).await;
    assert_eq!(headers["x-request-id"].len(), 16, "{headers:?}");
}

#[tokio::test]
async fn an_unreachable_cluster_is_503_not_500() {
    let req = request(Method::GET, "/api/sandboxes/a")
        .body(Body::empty())
        .unwrap();
    let (status, body, _) = send(
        app_with(&["--api-key", KEY, "--k8s-api-timeout-seconds", "2"]),
        req,
    )
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(
        detail(&body).contains("cannot reach the Kubernetes API"),
        "{body}"
    );
}

#[tokio::test]
async fn without_a_key_the_api_is_closed_unless_opened_on_purpose() {
    let list = || Request::get("/api/sandboxes").body(Body::empty()).unwrap();
    let (status, body, headers) = send(app_with(&[]), list()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let why = detail(&body);
    assert!(
        why.contains("no API key configured")
            && why.contains("PROVISIONER_API_KEY")
            && why.contains("PROVISIONER_ALLOW_NO_API_KEY=true"),
        "{body}"
    );
    assert!(headers.contains_key("www-authenticate"));
    // Probes and the document stay open.
    for open in ["/health", "/openapi.json"] {
        let req = Request::get(open).body(Body::empty()).unwrap();
        assert_eq!(send(app_with(&[]), req).await.0, StatusCode::OK, "{open}");
    }
    // Opened on purpose: served without a key (capabilities make no Kubernetes call).
    let req = Request::get("/api/capabilities")
        .body(Body::empty())
        .unwrap();
    assert_eq!(
        send(app_with(&["--allow-no-api-key"]), req).await.0,
        StatusCode::OK
    );
    // A configured key still guards the API when the opt-out is also set.
    let (status, _, _) = send(app_with(&["--api-key", KEY, "--allow-no-api-key"]), list()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn capabilities_say_which_lark_images_are_set() {
    let get = || {
        request(Method::GET, "/api/capabilities")
            .body(Body::empty())
            .unwrap()
    };
    let (_, body, _) = send(app(), get()).await;
    assert_eq!(
        (&body["lark_cli_init_image"], &body["lark_cli_broker_image"]),
        (&json!(false), &json!(false))
    );
    let (_, body, _) = send(
        app_with(&["--api-key", KEY, "--lark-cli-broker-image", "broker:1"]),
        get(),
    )
    .await;
    assert_eq!(
        (&body["lark_cli_init_image"], &body["lark_cli_broker_image"]),
        (&json!(false), &json!(true))
    );
}

#[tokio::test]
async fn gateway_fields_are_checked_before_kubernetes() {
    for (body, status, expected) in [
        (
            r#"{"sandbox_id":"a","user_id":"a/b"}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            "user_id \"a/b\" is invalid",
        ),
        (
            r#"{"sandbox_id":"a","thread_id":"thread.with.dot"}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            "thread_id \"thread.with.dot\" is invalid",
        ),
        (
            r#"{"sandbox_id":"a","max_shell_sessions":0}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            "max_shell_sessions must be a whole number from 1 to 1000, got 0",
        ),
        (
            r#"{"sandbox_id":"a","max_shell_sessions":1001}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            "got 1001",
        ),
        (
            r#"{"sandbox_id":"a","extra_mounts":[
                {"host_path":"/etc","container_path":"/mnt/acp-workspace"}]}"#,
            StatusCode::BAD_REQUEST,
            "extra_mounts[0].host_path \"/etc\" is outside the DeerFlow base directory /.deer-flow",
        ),
        (
            r#"{"sandbox_id":"a","extra_mounts":[
                {"host_path":"/.deer-flow/a","container_path":"/root"}]}"#,
            StatusCode::BAD_REQUEST,
            "extra_mounts[0].container_path \"/root\" is not a path extra mounts may use",
        ),
        (
            r#"{"sandbox_id":"a","extra_mounts":[{"container_path":"/mnt/acp-workspace"}]}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            "missing field `host_path`",
        ),
        (
            r#"{"sandbox_id":"a","skills_container_path":"/mnt/user-data/skills"}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            "skills_container_path \"/mnt/user-data/skills\" is or lies inside /mnt/user-data",
        ),
        (
            r#"{"sandbox_id":"a","skills_container_path":"/"}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            "must not be the root directory",
        ),
        (
            r#"{"sandbox_id":"a","skills_container_path":"/mnt/s/../t"}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            "is not normalised; write it as \"/mnt/t\"",
        ),
        (
            r#"{"sandbox_id":"a","extra_mounts":[{
                "host_path":"/.deer-flow/users/u/threads/t/skills_view/public",
                "container_path":"/mnt/s/public"}]}"#,
            StatusCode::BAD_REQUEST,
            "is not a path extra mounts may use",
        ),
    ] {
        let (got, answer) = post_json(body).await;
        assert_eq!(got, status, "{body}: {answer}");
        assert!(detail(&answer).contains(expected), "{body}: {answer}");
    }
}
