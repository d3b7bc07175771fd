//! Files: read (by lines), write (text or base64), list, find (glob), grep, and downloads that
//! stream. Files written here are given to the command user, so commands can change them.

use std::path::{Path, PathBuf};

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::Response;
use axum::Json;
use base64::Engine;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::io::AsyncReadExt;

use crate::{bad_request, ok, Failure, Shared};

fn absolute(path: &str) -> Result<PathBuf, Failure> {
    if !path.starts_with('/') {
        return Err(bad_request(format!(
            "path {path:?} is not absolute: send a path that starts with /"
        )));
    }
    Ok(PathBuf::from(path))
}

fn io_failure(path: &Path, e: std::io::Error) -> Failure {
    let status = match e.kind() {
        std::io::ErrorKind::NotFound => StatusCode::NOT_FOUND,
        std::io::ErrorKind::PermissionDenied => StatusCode::FORBIDDEN,
        _ => StatusCode::BAD_REQUEST,
    };
    Failure(status, format!("{}: {e}", path.display()))
}

#[derive(Deserialize)]
pub(crate) struct Read {
    file: String,
    start_line: Option<usize>,
    end_line: Option<usize>,
}

/// Lines `start_line..end_line` (0-based, end exclusive), or the whole file.
pub(crate) async fn read(Json(body): Json<Read>) -> Result<Json<Value>, Failure> {
    let path = absolute(&body.file)?;
    let text = tokio::fs::read_to_string(&path)
        .await
        .map_err(|e| io_failure(&path, e))?;
    let content = if body.start_line.is_none() && body.end_line.is_none() {
        text
    } else {
        let start = body.start_line.unwrap_or(0);
        let end = body.end_line.unwrap_or(usize::MAX);
        text.split_inclusive('\n')
            .skip(start)
            .take(end.saturating_sub(start))
            .collect()
    };
    Ok(ok(
        "file read",
        json!({"content": content, "file": body.file}),
    ))
}

#[derive(Deserialize)]
pub(crate) struct Write {
    file: String,
    content: String,
    encoding: Option<String>,
    #[serde(default)]
    append: bool,
}

pub(crate) async fn write(
    State(state): State<Shared>,
    Json(body): Json<Write>,
) -> Result<Json<Value>, Failure> {
    let path = absolute(&body.file)?;
    let bytes = match body.encoding.as_deref() {
        None | Some("utf-8") | Some("utf8") => body.content.into_bytes(),
        Some("base64") => base64::engine::general_purpose::STANDARD
            .decode(body.content.as_bytes())
            .map_err(|e| bad_request(format!("content is not valid base64: {e}")))?,
        Some(other) => {
            return Err(bad_request(format!(
                "encoding {other:?} is not known: use utf-8 or base64"
            )))
        }
    };
    if let Some(parent) = path.parent() {
        tokio::fs::create_dir_all(parent)
            .await
            .map_err(|e| io_failure(parent, e))?;
    }
    let mut options = tokio::fs::OpenOptions::new();
    options.create(true).write(true);
    if body.append {
        options.append(true);
    } else {
        options.truncate(true);
    }
    let mut file = options
        .open(&path)
        .await
        .map_err(|e| io_failure(&path, e))?;
    tokio::io::AsyncWriteExt::write_all(&mut file, &bytes)
        .await
        .map_err(|e| io_failure(&path, e))?;
    if let Some((uid, gid)) = state.settings.run_as {
        // Best effort: a mount may refuse it, and the write itself succeeded.
        let _ = std::os::unix::fs::chown(&path, Some(uid), Some(gid));
    }
    Ok(ok(
        "file written",
        json!({"file": body.file, "bytes_written": bytes.len()}),
    ))
}

/// Every entry under `root` (depth-first, sorted), down to `max_depth` levels.
fn walk(root: &Path, hidden: bool, max_depth: usize) -> Vec<(PathBuf, std::fs::Metadata)> {
    let mut found = Vec::new();
    let mut stack = vec![(root.to_path_buf(), 0usize)];
    while let Some((dir, depth)) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut entries: Vec<_> = entries.flatten().collect();
        entries.sort_by_key(|e| std::cmp::Reverse(e.file_name()));
        for entry in entries {
            let name = entry.file_name();
            if !hidden && name.to_string_lossy().starts_with('.') {
                continue;
            }
            let Ok(meta) = entry.metadata() else { continue };
            let path = entry.path();
            if meta.is_dir() && depth + 1 < max_depth {
                stack.push((path.clone(), depth + 1));
            }
            found.push((path, meta));
        }
    }
    found.sort_by(|a, b| a.0.cmp(&b.0));
    found
}

#[derive(Deserialize)]
pub(crate) struct List {
    path: String,
    #[serde(default)]
    recursive: bool,
    #[serde(default)]
    show_hidden: bool,
    max_depth: Option<usize>,
}

pub(crate) async fn list(Json(body): Json<List>) -> Result<Json<Value>, Failure> {
    let root = absolute(&body.path)?;
    let meta = std::fs::metadata(&root).map_err(|e| io_failure(&root, e))?;
    if !meta.is_dir() {
        return Err(bad_request(format!(
            "{} is not a directory",
            root.display()
        )));
    }
    let depth = if body.recursive {
        body.max_depth.unwrap_or(usize::MAX)
    } else {
        1
    };
    let entries = tokio::task::spawn_blocking(move || walk(&root, body.show_hidden, depth))
        .await
        .unwrap_or_default();
    let directories = entries.iter().filter(|(_, m)| m.is_dir()).count();
    let files: Vec<Value> = entries
        .iter()
        .map(|(path, meta)| {
            json!({
                "name": path.file_name().map(|n| n.to_string_lossy().into_owned()),
                "path": path.display().to_string(),
                "is_directory": meta.is_dir(),
                "size": meta.len(),
                "extension": path.extension().map(|e| e.to_string_lossy().into_owned()),
            })
        })
        .collect();
    Ok(ok(
        "listed",
        json!({
            "path": body.path,
            "total_count": files.len(),
            "directory_count": directories,
            "file_count": files.len() - directories,
            "files": files,
        }),
    ))
}

/// Shell-style glob over a `/`-separated path: `*` and `?` stay within a segment, `**`
/// crosses them.
pub(crate) fn glob_matches(pattern: &str, path: &str) -> bool {
    fn go(p: &[u8], s: &[u8]) -> bool {
        match p.first() {
            None => s.is_empty(),
            Some(b'*') if p.get(1) == Some(&b'*') => {
                let rest = p[2..].strip_prefix(b"/").unwrap_or(&p[2..]);
                if rest.is_empty() {
                    return true;
                }
                (0..=s.len()).any(|i| (i == 0 || s[i - 1] == b'/') && go(rest, &s[i..]))
                    || go(&p[2..], s)
            }
            Some(b'*') => (0..=s.len()).any(|i| !s[..i].contains(&b'/') && go(&p[1..], &s[i..])),
            Some(b'?') => s.first().is_some_and(|c| *c != b'/') && go(&p[1..], &s[1..]),
            Some(c) => s.first() == Some(c) && go(&p[1..], &s[1..]),
        }
    }
    go(pattern.as_bytes(), path.as_bytes())
}

#[derive(Deserialize)]
pub(crate) struct Find {
    path: String,
    glob: String,
}

/// Files under `path` whose path relative to it matches the glob (a glob without `/` is
/// matched against the file's name, like `find -name`).
pub(crate) async fn find(Json(body): Json<Find>) -> Result<Json<Value>, Failure> {
    let root = absolute(&body.path)?;
    std::fs::metadata(&root).map_err(|e| io_failure(&root, e))?;
    let glob = body.glob.clone();
    let found = tokio::task::spawn_blocking(move || {
        walk(&root, true, usize::MAX)
            .into_iter()
            .filter(|(_, meta)| meta.is_file())
            .filter(|(path, _)| {
                let relative = path.strip_prefix(&root).unwrap_or(path).to_string_lossy();
                let name = path.file_name().unwrap_or_default().to_string_lossy();
                glob_matches(&glob, &relative)
                    || (!glob.contains('/') && glob_matches(&glob, &name))
            })
            .map(|(path, _)| path.display().to_string())
            .collect::<Vec<_>>()
    })
    .await
    .unwrap_or_default();
    Ok(ok("found", json!({"path": body.path, "files": found})))
}

#[derive(Deserialize)]
pub(crate) struct Grep {
    path: String,
    pattern: String,
    #[serde(default)]
    case_insensitive: bool,
    #[serde(default)]
    fixed_strings: bool,
    max_results: Option<usize>,
    max_file_size: Option<String>,
    recursive: Option<bool>,
}

fn size_limit(text: &str) -> Option<u64> {
    let text = text.trim();
    let (digits, unit) = match text.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((at, _)) => text.split_at(at),
        None => (text, ""),
    };
    let factor = match unit.to_ascii_uppercase().as_str() {
        "" | "B" => 1,
        "K" | "KB" => 1 << 10,
        "M" | "MB" => 1 << 20,
        "G" | "GB" => 1 << 30,
        _ => return None,
    };
    digits.parse::<u64>().ok().map(|n| n * factor)
}

pub(crate) async fn grep(Json(body): Json<Grep>) -> Result<Json<Value>, Failure> {
    let root = absolute(&body.path)?;
    let meta = std::fs::metadata(&root).map_err(|e| io_failure(&root, e))?;
    let source = if body.fixed_strings {
        regex::escape(&body.pattern)
    } else {
        body.pattern.clone()
    };
    let pattern = regex::RegexBuilder::new(&source)
        .case_insensitive(body.case_insensitive)
        .build()
        .map_err(|e| bad_request(format!("pattern is not a valid regular expression: {e}")))?;
    let limit = match body.max_file_size.as_deref() {
        None => u64::MAX,
        Some(text) => size_limit(text).ok_or_else(|| {
            bad_request(format!(
                "max_file_size {text:?} is not a size such as 1M or 512K"
            ))
        })?,
    };
    let max_results = body.max_results.unwrap_or(usize::MAX);
    let depth = if body.recursive.unwrap_or(true) {
        usize::MAX
    } else {
        1
    };
    let found = tokio::task::spawn_blocking(move || {
        let files = if meta.is_file() {
            vec![(root.clone(), meta)]
        } else {
            walk(&root, false, depth)
        };
        let (mut matches, mut searched, mut matched, mut truncated) = (Vec::new(), 0, 0, false);
        'files: for (path, meta) in files {
            if !meta.is_file() || meta.len() > limit {
                continue;
            }
            let Ok(text) = std::fs::read_to_string(&path) else {
                continue; // binary or unreadable
            };
            searched += 1;
            let mut hit = false;
            for (n, line) in text.lines().enumerate() {
                if pattern.is_match(line) {
                    if matches.len() == max_results {
                        truncated = true;
                        break 'files;
                    }
                    hit = true;
                    matches.push(json!({
                        "file": path.display().to_string(),
                        "line_number": n + 1,
                        "line_content": line,
                    }));
                }
            }
            matched += usize::from(hit);
        }
        (matches, searched, matched, truncated)
    })
    .await
    .map_err(|e| {
        Failure(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("grep failed: {e}"),
        )
    })?;
    let (matches, searched, matched, truncated) = found;
    Ok(ok(
        "searched",
        json!({
            "path": body.path,
            "pattern": body.pattern,
            "match_count": matches.len(),
            "files_searched": searched,
            "files_matched": matched,
            "truncated": truncated,
            "matches": matches,
        }),
    ))
}

#[derive(Deserialize)]
pub(crate) struct Download {
    path: String,
}

/// The file's bytes, streamed in 64 KiB chunks.
pub(crate) async fn download(Query(q): Query<Download>) -> Result<Response, Failure> {
    let path = absolute(&q.path)?;
    let file = tokio::fs::File::open(&path)
        .await
        .map_err(|e| io_failure(&path, e))?;
    let stream = futures::stream::unfold(file, |mut file| async move {
        let mut chunk = vec![0; 64 * 1024];
        match file.read(&mut chunk).await {
            Ok(0) => None,
            Ok(n) => {
                chunk.truncate(n);
                Some((Ok::<_, std::io::Error>(chunk), file))
            }
            Err(e) => Some((Err(e), file)),
        }
    });
    Ok(octets(Body::from_stream(stream)))
}

fn octets(body: Body) -> Response {
    Response::builder()
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .body(body)
        .expect("a static header")
}

#[derive(Deserialize)]
pub(crate) struct StreamQuery {
    mib: usize,
}

/// The byte at `offset` of `/test/stream`'s answer: a pattern a test can check at every
/// position, so that a lost, repeated or reordered chunk shows.
pub fn stream_byte(offset: usize) -> u8 {
    (offset % 251) as u8
}

/// `mib` MiB of [`stream_byte`]s, produced as they are sent: for tests of large answers
/// through proxies.
pub(crate) async fn stream(Query(q): Query<StreamQuery>) -> Response {
    const CHUNK: usize = 64 * 1024;
    let chunks = futures::stream::iter((0..q.mib * 16).map(|n| {
        let chunk: Vec<u8> = (n * CHUNK..(n + 1) * CHUNK).map(stream_byte).collect();
        Ok::<_, std::io::Error>(chunk)
    }));
    octets(Body::from_stream(chunks))
}

/// FNV-1a (64 bits) of `bytes`, continuing from `hash` (start from [`FNV_START`]).
pub fn fnv1a(mut hash: u64, bytes: &[u8]) -> u64 {
    for b in bytes {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

pub const FNV_START: u64 = 0xcbf2_9ce4_8422_2325;

/// Reads the request body as it arrives and answers its length and FNV-1a hash: for tests of
/// large uploads through proxies.
pub(crate) async fn upload(body: Body) -> Result<Json<Value>, Failure> {
    use futures::StreamExt;
    let mut stream = body.into_data_stream();
    let (mut bytes, mut hash) = (0u64, FNV_START);
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| bad_request(format!("the body broke off: {e}")))?;
        bytes += chunk.len() as u64;
        hash = fnv1a(hash, &chunk);
    }
    Ok(ok(
        "received",
        json!({"bytes": bytes, "fnv1a": format!("{hash:016x}")}),
    ))
}
