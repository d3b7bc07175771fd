//! Identifiers that callers send: validated before anything reaches Kubernetes.
//!
//! A sandbox id becomes part of object names; a thread id becomes part of a host path. Both are
//! checked here so that nothing hostile or malformed is ever created.

use std::fmt;

/// Longest sandbox id for which `sandbox-{id}-svc` still fits a 63-character DNS label.
pub const MAX_SANDBOX_ID_LEN: usize = 63 - "sandbox-".len() - "-svc".len();
/// Longest thread id.
pub const MAX_THREAD_ID_LEN: usize = 64;

/// Why an identifier was refused; the text says what is allowed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidId {
    #[error("sandbox_id {value} is invalid: {problem}; a sandbox_id is 1-{max} characters of lowercase letters, digits and '-', starting and ending with a letter or digit (it becomes part of Kubernetes object names)", max = MAX_SANDBOX_ID_LEN)]
    SandboxId {
        value: String,
        problem: &'static str,
    },
    #[error("thread_id {value} is invalid: {problem}; a thread_id is 1-{max} characters of letters, digits, '_' and '-' (it becomes part of a host path)", max = MAX_THREAD_ID_LEN)]
    ThreadId {
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
        let fail = |problem| InvalidId::ThreadId {
            value: shown(value),
            problem,
        };
        if value.is_empty() {
            return Err(fail("it is empty"));
        }
        if value.len() > MAX_THREAD_ID_LEN {
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
        Ok(ThreadId(value.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
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
    fn messages_name_the_field_and_escape_the_value() {
        let e = ThreadId::parse("a\0b").unwrap_err().to_string();
        assert!(e.starts_with("thread_id \"a\\0b\" is invalid"), "{e}");
        let long = SandboxId::parse(&"x".repeat(500)).unwrap_err().to_string();
        assert!(long.contains("too long") && long.len() < 400, "{long}");
    }
}
