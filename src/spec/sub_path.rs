//! Sub-paths of a claim that depend on the sandbox: templates with `{user_id}` and
//! `{thread_id}` (USERDATA_PVC_SUBPATH_TEMPLATE, SKILLS_PVC_SUBPATH_TEMPLATE).

use crate::sandbox::{ThreadId, UserId};

/// DeerFlow's layout of user data in a claim.
pub const DEFAULT_USER_DATA_TEMPLATE: &str =
    "deer-flow/users/{user_id}/threads/{thread_id}/user-data";

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    User,
    Thread,
}

/// A checked template: relative, no '..', only known placeholders. Filled in with ids that
/// are single path components, it is always a safe sub-path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubPathTemplate(Vec<Part>);

impl SubPathTemplate {
    /// Parses a template; the error says what is wrong (the caller names the variable).
    pub fn parse(template: &str) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut rest = template;
        while let Some(open) = rest.find(['{', '}']) {
            if rest[open..].starts_with('}') {
                return Err("has a '}' without its '{'".into());
            }
            let Some(close) = rest[open..].find('}') else {
                return Err("has a '{' without its '}'".into());
            };
            if open > 0 {
                parts.push(Part::Text(rest[..open].to_string()));
            }
            parts.push(match &rest[open + 1..open + close] {
                "user_id" => Part::User,
                "thread_id" => Part::Thread,
                other => {
                    return Err(format!(
                        "has the unknown placeholder {{{other}}}; the placeholders are \
                            {{user_id}} and {{thread_id}}"
                    ))
                }
            });
            rest = &rest[open + close + 1..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_string()));
        }
        let parsed = SubPathTemplate(parts);
        // Placeholders are filled with single path components, so checking one rendering
        // checks every one.
        let sample = parsed.render_with("u", "t");
        if sample.is_empty()
            || sample.starts_with('/')
            || sample.split('/').any(|p| p == ".." || p.is_empty())
            || sample.chars().any(char::is_control)
        {
            return Err(
                "must be a relative path without '..' or empty parts, for example \
                deer-flow/users/{user_id}/threads/{thread_id}/user-data"
                    .into(),
            );
        }
        Ok(parsed)
    }

    /// The sub-path of one sandbox.
    pub fn render(&self, user: &UserId, thread: &ThreadId) -> String {
        self.render_with(user.as_str(), thread.as_str())
    }

    fn render_with(&self, user: &str, thread: &str) -> String {
        self.0
            .iter()
            .map(|p| match p {
                Part::Text(t) => t.as_str(),
                Part::User => user,
                Part::Thread => thread,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_fill_in_the_ids() {
        let user = UserId::parse("alice").unwrap();
        let thread = ThreadId::parse("t-1").unwrap();
        let t = SubPathTemplate::parse(DEFAULT_USER_DATA_TEMPLATE).unwrap();
        assert_eq!(
            t.render(&user, &thread),
            "deer-flow/users/alice/threads/t-1/user-data"
        );
        let plain = SubPathTemplate::parse("skills").unwrap();
        assert_eq!(plain.render(&user, &thread), "skills");
        let joined = SubPathTemplate::parse("u-{user_id}{thread_id}").unwrap();
        assert_eq!(joined.render(&user, &thread), "u-alicet-1");
    }

    #[test]
    fn bad_templates_say_why() {
        for (bad, why) in [
            ("users/{user}/x", "unknown placeholder {user}"),
            ("users/{user_id", "'{' without its '}'"),
            ("users/}x", "'}' without its '{'"),
            ("/abs/{user_id}", "relative path"),
            ("a/../{user_id}", "relative path"),
            ("a//{user_id}", "relative path"),
            ("", "relative path"),
        ] {
            let e = SubPathTemplate::parse(bad).unwrap_err();
            assert!(e.contains(why), "{bad:?}: {e}");
        }
    }
}
