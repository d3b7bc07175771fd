//! Identifiers that callers send: validated before anything reaches Kubernetes.
//!
//! A sandbox id becomes part of object names; a thread id becomes part of a host path. Both are
//! checked here so that nothing hostile or malformed is ever created.

use std::fmt;

/// Longest sandbox id for which `sandbox-{id}-svc` still fits a 63-character DNS label.
pub const MAX_SANDBOX_ID_LEN: usize = 63 - "sandbox-".len() - "-svc".len();
/// Longest thread id.
pub const MAX_THREAD_ID_LEN: usize = 64;
/// Longest user id (a pod annotation holds it: label values stop at 63 characters).
pub const MAX_USER_ID_LEN: usize = 128;
/// The user of a request that names none (DeerFlow's default).
pub const DEFAULT_USER_ID: &str = "default";

/// Why an identifier was refused; the text says what is allowed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidId {
    #[error("sandbox_id {value} is invalid: {problem}; a sandbox_id is 1-{max} characters of \
        lowercase letters, digits and '-', starting and ending with a letter or digit (it becomes \
        part of Kubernetes object names)", max = MAX_SANDBOX_ID_LEN)]
    SandboxId {
        value: String,
        problem: &'static str,
    },
    #[error("thread_id {value} is invalid: {problem}; a thread_id is 1-{max} characters of \
        letters, digits, '_' and '-' (it becomes part of a host path)", max = MAX_THREAD_ID_LEN)]
    ThreadId {
        value: String,
        problem: &'static str,
    },
    #[error("user_id {value} is invalid: {problem}; a user_id is 1-{max} characters of letters, \
        digits, '_' and '-' (it becomes part of host paths)", max = MAX_USER_ID_LEN)]
    UserId {
        value: String,
        problem: &'static str,
    },
}

/// A DNS-1123 label short enough for every object name derived from it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SandboxId(String);

/// A thread id that is safe as one path component.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ThreadId(String);

/// A user id that is safe as one path component.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UserId(String);

/// What a name that is not a DNS label is told (names of clusters and tenants).
pub const NOT_A_DNS_LABEL: &str = "name must be a DNS label: 1-63 lowercase letters, digits or \
    '-', starting and ending with a letter or digit";

/// Whether `s` is a DNS-1123 label: 1-63 lowercase letters, digits or '-', starting and
/// ending with a letter or digit (names of clusters and tenants).
pub fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

impl SandboxId {
    pub fn parse(value: &str) -> Result<Self, InvalidId> {
        let fail = |problem| InvalidId::SandboxId {
            value: shown(value),
            problem,
        };
        if value.is_empty() {
            return Err(fail("it is empty"));
        }
        if value.len() > MAX_SANDBOX_ID_LEN {
            return Err(fail("it is too long"));
        }
        if !value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err(fail("it contains a character other than a-z, 0-9 and '-'"));
        }
        if value.starts_with('-') || value.ends_with('-') {
            return Err(fail("it starts or ends with '-'"));
        }
        Ok(SandboxId(value.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl ThreadId {
    pub fn parse(value: &str) -> Result<Self, InvalidId> {
        path_component(value, MAX_THREAD_ID_LEN, |problem| InvalidId::ThreadId {
            value: shown(value),
            problem,
        })
        .map(ThreadId)
    }

    /// The thread of a sandbox created without one: its own id (DeerFlow's rule).
    pub fn of_sandbox(id: &SandboxId) -> Self {
        ThreadId(id.as_str().to_string())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl UserId {
    pub fn parse(value: &str) -> Result<Self, InvalidId> {
        path_component(value, MAX_USER_ID_LEN, |problem| InvalidId::UserId {
            value: shown(value),
            problem,
        })
        .map(UserId)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for UserId {
    fn default() -> Self {
        UserId(DEFAULT_USER_ID.to_string())
    }
}

/// 1 to `max` letters, digits, '_' and '-': safe as one path component.
fn path_component(
    value: &str,
    max: usize,
    fail: impl Fn(&'static str) -> InvalidId,
) -> Result<String, InvalidId> {
    if value.is_empty() {
        return Err(fail("it is empty"));
    }
    if value.len() > max {
        return Err(fail("it is too long"));
    }
    if !value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(fail(
            "it contains a character other than letters, digits, '_' and '-'",
        ));
    }
    Ok(value.to_string())
}

impl fmt::Display for SandboxId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for ThreadId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Quotes a rejected value for an error message: escaped, and cut short when long.
fn shown(value: &str) -> String {
    const MAX: usize = 80;
    let cut: String = value.chars().take(MAX).collect();
    let ellipsis = if cut.len() < value.len() { "..." } else { "" };
    format!("{:?}{ellipsis}", cut)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_len_keeps_service_name_within_63() {
        let id = "a".repeat(MAX_SANDBOX_ID_LEN);
        assert_eq!(format!("sandbox-{id}-svc").len(), 63);
        assert!(SandboxId::parse(&id).is_ok());
        assert!(SandboxId::parse(&format!("{id}a")).is_err());
        assert_eq!(MAX_SANDBOX_ID_LEN, 51);
    }

    #[test]
    fn sandbox_ids() {
        for ok in ["abc-123", "a", "0", "a-b-c", "9z"] {
            assert!(SandboxId::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "", "-a", "a-", "ABC", "a_b", "a.b", "a/b", "../x", "a b", "a\0b", "é",
        ] {
            assert!(SandboxId::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn thread_ids() {
        for ok in ["thread-456", "T_1", "_", "-", &"x".repeat(64)] {
            assert!(ThreadId::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "../../etc",
            "a/b",
            "a\0b",
            "a.b",
            "..",
            &"x".repeat(65),
            "a b",
            "ü",
        ] {
            assert!(ThreadId::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn user_ids() {
        assert_eq!(UserId::default().as_str(), "default");
        for ok in ["default", "u_1-A", &"x".repeat(128)] {
            assert!(UserId::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["", "a/b", "..", "a.b", &"x".repeat(129), "a b", "ü"] {
            assert!(UserId::parse(bad).is_err(), "{bad:?}");
        }
        let e = UserId::parse("a/b").unwrap_err().to_string();
        assert!(e.starts_with("user_id \"a/b\" is invalid"), "{e}");
    }

    #[test]
    fn a_thread_less_sandbox_is_its_own_thread() {
        let id = SandboxId::parse("0a1b2c3d").unwrap();
        assert_eq!(ThreadId::of_sandbox(&id).as_str(), "0a1b2c3d");
    }

    #[test]
    fn messages_name_the_field_and_escape_the_value() {
        let e = ThreadId::parse("a\0b").unwrap_err().to_string();
        assert!(e.starts_with("thread_id \"a\\0b\" is invalid"), "{e}");
        let long = SandboxId::parse(&"x".repeat(500)).unwrap_err().to_string();
        assert!(long.contains("too long") && long.len() < 400, "{long}");
    }
}
