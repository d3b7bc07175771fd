use std::path::PathBuf;

use axum::body::{to_bytes, Body};
use axum::http::{Method, Request};
use serde_json::{json, Value};
use tower::ServiceExt;

use crate::files::glob_matches;
use crate::{router, Identity, Settings};

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sandbox-image-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn settings(home: PathBuf) -> Settings {
    Settings {
        api_key: None,
        max_shell_sessions: 10,
        home_dir: home,
        run_as: None,
        identity: Identity {
            pod_name: Some("sandbox-abc".into()),
            pod_uid: Some("uid-1".into()),
            sandbox_id: Some("abc".into()),
        },
    }
}

async fn call(app: &axum::Router, method: Method, uri: &str, body: Option<Value>) -> (u16, Value) {
    let (status, bytes) = call_raw(app, method, uri, body, &[]).await;
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

async fn call_raw(
    app: &axum::Router,
    method: Method,
    uri: &str,
    body: Option<Value>,
    headers: &[(&str, &str)],
) -> (u16, Vec<u8>) {
    let mut request = Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let request = match body {
        Some(body) => request
            .header("content-type", "application/json")
            .body(Body::from(body.to_string())),
        None => request.body(Body::empty()),
    }
    .unwrap();
    let answer = app.clone().oneshot(request).await.unwrap();
    let status = answer.status().as_u16();
    let bytes = to_bytes(answer.into_body(), usize::MAX).await.unwrap();
    (status, bytes.to_vec())
}

#[tokio::test]
async fn the_key_guards_everything_but_ping_in_each_of_its_three_forms() {
    let mut s = settings(scratch("key"));
    s.api_key = Some("k3y".into());
    let app = router(s);
    let (status, body) = call(&app, Method::GET, "/v1/ping", None).await;
    assert_eq!((status, body["success"].clone()), (200, json!(true)));
    let (status, body) = call(&app, Method::GET, "/v1/sandbox", None).await;
    assert_eq!(status, 401);
    assert!(body["message"].as_str().unwrap().contains("X-AIO-API-Key"));
    for headers in [
        [("x-aio-api-key", "k3y")],
        [("authorization", "Bearer k3y")],
    ] {
        let (status, _) = call_raw(&app, Method::GET, "/v1/sandbox", None, &headers).await;
        assert_eq!(status, 200, "{headers:?}");
    }
    let (status, _) = call(&app, Method::GET, "/v1/sandbox?api_key=k3y", None).await;
    assert_eq!(status, 200);
    let wrong = [("x-aio-api-key", "nope")];
    let (status, _) = call_raw(&app, Method::GET, "/v1/sandbox", None, &wrong).await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn the_context_names_the_home_directory_in_the_sdks_shape() {
    let home = scratch("context");
    let app = router(settings(home.clone()));
    let (status, body) = call(&app, Method::GET, "/v1/sandbox", None).await;
    assert_eq!(status, 200);
    assert_eq!(body["home_dir"], json!(home.display().to_string()));
    assert!(body["version"].is_string());
    for key in [
        "os",
        "arch",
        "user",
        "home_dir",
        "timezone",
        "occupied_ports",
    ] {
        assert!(!body["detail"]["system"][key].is_null(), "{key}");
    }
    assert!(body["detail"]["runtime"]["python"].is_array());
    assert!(body["detail"]["utils"].is_array());
    let (_, body) = call(&app, Method::GET, "/test/identity", None).await;
    assert_eq!(
        body["data"],
        json!({"pod_name": "sandbox-abc", "pod_uid": "uid-1", "sandbox_id": "abc"})
    );
}

#[tokio::test]
async fn shell_commands_really_run_and_sessions_keep_their_directory() {
    let home = scratch("shell");
    std::fs::create_dir_all(home.join("sub")).unwrap();
    let app = router(settings(home.clone()));
    let (status, body) = call(
        &app,
        Method::POST,
        "/v1/shell/exec",
        Some(json!({"command": "echo out; echo err >&2; exit 3"})),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["data"]["output"], json!("out\nerr\n"));
    assert_eq!(body["data"]["exit_code"], json!(3));
    assert_eq!(body["data"]["status"], json!("completed"));

    let (_, created) = call(
        &app,
        Method::POST,
        "/v1/shell/sessions/create",
        Some(json!({"id": "s1"})),
    )
    .await;
    assert_eq!(created["data"]["session_id"], json!("s1"));
    assert_eq!(
        created["data"]["working_dir"],
        json!(home.display().to_string())
    );
    let exec = |id: &'static str, command: &'static str| {
        let app = app.clone();
        async move {
            let body = json!({"id": id, "command": command, "no_change_timeout": 600});
            call(&app, Method::POST, "/v1/shell/exec", Some(body))
                .await
                .1["data"]["output"]
                .clone()
        }
    };
    assert_eq!(exec("s1", "cd sub").await, json!(""));
    let sub = format!("{}\n", home.join("sub").display());
    assert_eq!(exec("s1", "pwd").await, json!(sub));
    assert_eq!(
        exec("s2", "pwd").await,
        json!(format!("{}\n", home.display()))
    );

    let (status, _) = call(&app, Method::DELETE, "/v1/shell/sessions/s1", None).await;
    assert_eq!(status, 200);
    let (status, body) = call(&app, Method::DELETE, "/v1/shell/sessions/s1", None).await;
    assert_eq!(status, 404);
    assert_eq!(body["success"], json!(false));
}

#[tokio::test]
async fn past_max_shell_sessions_the_least_recently_used_goes() {
    let mut s = settings(scratch("sessions"));
    s.max_shell_sessions = 2;
    let app = router(s);
    for id in ["a", "b", "c"] {
        let body = json!({"id": id});
        call(&app, Method::POST, "/v1/shell/sessions/create", Some(body)).await;
    }
    let (gone, _) = call(&app, Method::DELETE, "/v1/shell/sessions/a", None).await;
    let (kept, _) = call(&app, Method::DELETE, "/v1/shell/sessions/b", None).await;
    assert_eq!((gone, kept), (404, 200));
}

#[tokio::test]
async fn bash_exec_takes_a_per_command_environment_and_keeps_streams_apart() {
    let app = router(settings(scratch("bash")));
    let body = json!({"command": "echo $SECRET; echo e >&2", "env": {"SECRET": "s3"},
        "hard_timeout": 600.0});
    let (status, body) = call(&app, Method::POST, "/v1/bash/exec", Some(body)).await;
    assert_eq!(status, 200);
    assert_eq!(body["data"]["stdout"], json!("s3\n"));
    assert_eq!(body["data"]["stderr"], json!("e\n"));
    assert_eq!(body["data"]["exit_code"], json!(0));
    assert!(body["data"]["command_id"].is_string());
    // The variable was this command's only.
    let body = json!({"command": "echo \"[$SECRET]\""});
    let (_, body) = call(&app, Method::POST, "/v1/bash/exec", Some(body)).await;
    assert_eq!(body["data"]["stdout"], json!("[]\n"));
    let body = json!({"command": "true", "env": {"1BAD": "x"}});
    let (status, body) = call(&app, Method::POST, "/v1/bash/exec", Some(body)).await;
    assert_eq!(status, 400);
    assert!(body["message"].as_str().unwrap().contains("1BAD"));
}

#[tokio::test]
async fn a_command_past_its_hard_timeout_is_stopped() {
    let app = router(settings(scratch("timeout")));
    let body = json!({"command": "sleep 5", "hard_timeout": 0.2});
    let (status, body) = call(&app, Method::POST, "/v1/shell/exec", Some(body)).await;
    assert_eq!(status, 200);
    assert_eq!(body["data"]["status"], json!("hard_timeout"));
    let body = json!({"command": "sleep 5", "hard_timeout": 0.2});
    let (_, body) = call(&app, Method::POST, "/v1/bash/exec", Some(body)).await;
    assert_eq!(body["data"]["status"], json!("timed_out"));
    // What the command started goes with it.
    let pid_file = scratch("timeout-child").join("pid");
    let command = format!("sleep 30 & echo $! > {}; wait", pid_file.display());
    let body = json!({"command": command, "hard_timeout": 0.5});
    let (_, body) = call(&app, Method::POST, "/v1/shell/exec", Some(body)).await;
    assert_eq!(body["data"]["status"], json!("hard_timeout"));
    let pid = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .to_string();
    let running = || {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
            stat.rsplit(')')
                .next()
                .is_some_and(|r| !r.starts_with(" Z"))
        })
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while running() && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(
        !running(),
        "the command's child {pid} outlived its hard timeout"
    );
}

#[tokio::test]
async fn files_are_written_read_listed_found_grepped_and_downloaded() {
    let home = scratch("files");
    let app = router(settings(home.clone()));
    let at = |name: &str| home.join(name).display().to_string();
    let write = |file: String, content: &str, extra: Value| {
        let mut body = json!({"file": file, "content": content});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        let app = app.clone();
        async move { call(&app, Method::POST, "/v1/file/write", Some(body)).await }
    };
    let (status, body) = write(at("dir/a.txt"), "one\ntwo\nthree\n", json!({})).await;
    assert_eq!(status, 200);
    assert_eq!(body["data"]["bytes_written"], json!(14));
    write(at("dir/a.txt"), "four\n", json!({"append": true})).await;
    // "\u{0}\u{1}binary" in base64
    write(
        at("dir/b.bin"),
        "AAFiaW5hcnk=",
        json!({"encoding": "base64"}),
    )
    .await;
    write(at("dir/deep/c.py"), "print('Two')\n", json!({})).await;
    assert_eq!(
        std::fs::read(home.join("dir/b.bin")).unwrap(),
        b"\x00\x01binary"
    );

    let read = json!({"file": at("dir/a.txt"), "start_line": 1, "end_line": 3});
    let (_, body) = call(&app, Method::POST, "/v1/file/read", Some(read)).await;
    assert_eq!(body["data"]["content"], json!("two\nthree\n"));
    let read = json!({"file": at("dir/a.txt")});
    let (_, body) = call(&app, Method::POST, "/v1/file/read", Some(read)).await;
    assert_eq!(body["data"]["content"], json!("one\ntwo\nthree\nfour\n"));
    let read = json!({"file": at("dir/missing")});
    let (status, body) = call(&app, Method::POST, "/v1/file/read", Some(read)).await;
    assert_eq!((status, body["success"].clone()), (404, json!(false)));
    let read = json!({"file": "relative.txt"});
    let (status, _) = call(&app, Method::POST, "/v1/file/read", Some(read)).await;
    assert_eq!(status, 400);

    let list = json!({"path": at("dir"), "recursive": true, "show_hidden": false});
    let (_, body) = call(&app, Method::POST, "/v1/file/list", Some(list)).await;
    let paths: Vec<_> = body["data"]["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        paths,
        [
            at("dir/a.txt"),
            at("dir/b.bin"),
            at("dir/deep"),
            at("dir/deep/c.py")
        ]
    );
    assert_eq!(body["data"]["directory_count"], json!(1));

    let find = json!({"path": at("dir"), "glob": "**/*.py"});
    let (_, body) = call(&app, Method::POST, "/v1/file/find", Some(find)).await;
    assert_eq!(body["data"]["files"], json!([at("dir/deep/c.py")]));
    let find = json!({"path": at("dir"), "glob": "*.txt"});
    let (_, body) = call(&app, Method::POST, "/v1/file/find", Some(find)).await;
    assert_eq!(body["data"]["files"], json!([at("dir/a.txt")]));

    let grep = json!({"path": at("dir"), "pattern": "two", "case_insensitive": true,
        "fixed_strings": false, "max_results": 10, "max_file_size": "1M", "recursive": true});
    let (_, body) = call(&app, Method::POST, "/v1/file/grep", Some(grep)).await;
    let hits: Vec<_> = body["data"]["matches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["file"].clone(),
                m["line_number"].clone(),
                m["line_content"].clone(),
            )
        })
        .collect();
    assert_eq!(
        hits,
        [
            (json!(at("dir/a.txt")), json!(2), json!("two")),
            (json!(at("dir/deep/c.py")), json!(1), json!("print('Two')")),
        ]
    );
    assert_eq!(body["data"]["truncated"], json!(false));
    let grep = json!({"path": at("dir"), "pattern": "(", "max_results": 1});
    let (status, _) = call(&app, Method::POST, "/v1/file/grep", Some(grep)).await;
    assert_eq!(status, 400);

    let uri = format!("/v1/file/download?path={}", at("dir/b.bin"));
    let (status, bytes) = call_raw(&app, Method::GET, &uri, None, &[]).await;
    assert_eq!((status, bytes.as_slice()), (200, &b"\x00\x01binary"[..]));
    let (status, bytes) = call_raw(&app, Method::GET, "/test/stream?mib=2", None, &[]).await;
    assert_eq!((status, bytes.len()), (200, 2 << 20));
    let pattern: Vec<u8> = (0..2 << 20).map(crate::files::stream_byte).collect();
    assert!(bytes == pattern, "the stream follows its pattern");
    let upload = vec![7u8; 300_000];
    let request = Request::builder()
        .method(Method::POST)
        .uri("/test/upload")
        .body(Body::from(upload.clone()))
        .unwrap();
    let answer = app.clone().oneshot(request).await.unwrap();
    assert_eq!(answer.status(), 200);
    let answer = to_bytes(answer.into_body(), usize::MAX).await.unwrap();
    let answer: Value = serde_json::from_slice(&answer).unwrap();
    assert_eq!(answer["data"]["bytes"], 300_000);
    let hash = crate::files::fnv1a(crate::files::FNV_START, &upload);
    assert_eq!(answer["data"]["fnv1a"], format!("{hash:016x}"));
}

#[tokio::test]
async fn started_as_root_commands_run_as_the_sandbox_user() {
    use std::os::unix::fs::MetadataExt;
    if std::fs::metadata("/proc/self").unwrap().uid() != 0 {
        eprintln!("not root: the uid switch cannot be shown here");
        return;
    }
    let home = scratch("uid");
    let mut s = settings(home);
    s.run_as = Some((1000, 1000));
    let app = router(s);
    let body = json!({"command": "id -u; id -g"});
    let (_, body) = call(&app, Method::POST, "/v1/shell/exec", Some(body)).await;
    assert_eq!(body["data"]["output"], json!("1000\n1000\n"));
}

#[test]
fn globs_keep_single_stars_within_a_segment() {
    assert!(glob_matches("*.py", "a.py"));
    assert!(!glob_matches("*.py", "d/a.py"));
    assert!(glob_matches("**/*.py", "a.py"));
    assert!(glob_matches("**/*.py", "d/e/a.py"));
    assert!(glob_matches("d/**", "d/e/a.py"));
    assert!(glob_matches("?.txt", "a.txt"));
    assert!(!glob_matches("?.txt", "ab.txt"));
    assert!(!glob_matches("*.py", "a.pyc"));
}

#[tokio::test]
async fn the_websocket_hook_echoes_text_and_binary_and_honours_the_key() {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let mut with_key = settings(scratch("ws"));
    with_key.api_key = Some("k".into());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router(with_key)).await.unwrap() });
    let refused = tokio_tungstenite::connect_async(format!("ws://{addr}/test/ws")).await;
    assert!(refused.is_err(), "no key, no socket");
    let (mut socket, _) =
        tokio_tungstenite::connect_async(format!("ws://{addr}/test/ws?api_key=k"))
            .await
            .unwrap();
    socket.send(Message::text("hello")).await.unwrap();
    assert_eq!(
        socket.next().await.unwrap().unwrap(),
        Message::text("hello")
    );
    socket.send(Message::binary(vec![0u8, 1, 2])).await.unwrap();
    assert_eq!(
        socket.next().await.unwrap().unwrap(),
        Message::binary(vec![0u8, 1, 2])
    );
    socket.close(None).await.unwrap();
}
