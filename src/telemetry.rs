//! Logging setup: lines on stderr, human-readable or JSON (`LOG_FORMAT=json`), filtered by
//! `RUST_LOG` (default `info`).

const DEFAULT_FILTER: &str = "info,kube=warn,hyper=warn";

/// kube's watcher logs every failed attempt (about once a second while a watch fails); the
/// cache reports the same failures once, rate-limited, with the fix.
const QUIET_WATCHER: &str = "kube_runtime::watcher=error";

/// The filter directives: `RUST_LOG` or the default, with the watcher quietened unless
/// `RUST_LOG` says otherwise about kube_runtime.
fn filter_spec(rust_log: Option<&str>) -> String {
    let spec = rust_log
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .unwrap_or(DEFAULT_FILTER);
    if spec.contains("kube_runtime") {
        spec.to_string()
    } else {
        format!("{spec},{QUIET_WATCHER}")
    }
}

/// Installs the global tracing subscriber; call once, first thing in `main`.
pub fn init() {
    let spec = filter_spec(std::env::var("RUST_LOG").ok().as_deref());
    let filter = tracing_subscriber::EnvFilter::try_new(spec)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_FILTER));
    let json = std::env::var("LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("json"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .init();
    } else {
        builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_watcher_is_quiet_unless_asked_for() {
        assert_eq!(
            filter_spec(None),
            format!("{DEFAULT_FILTER},{QUIET_WATCHER}")
        );
        assert_eq!(
            filter_spec(Some(" ")),
            format!("{DEFAULT_FILTER},{QUIET_WATCHER}")
        );
        assert_eq!(filter_spec(Some("warn")), format!("warn,{QUIET_WATCHER}"));
        assert_eq!(
            filter_spec(Some("kube_runtime=debug")),
            "kube_runtime=debug"
        );
    }
}
