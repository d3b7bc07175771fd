//! Extra mounts the backend asks for (DeerFlow's gateway forwards its ACP workspace, per-user
//! skills and Lark CLI directories): checked against DeerFlow's rules before anything is made.
//!
//! Pure: the host base directory comes from the configuration, nothing touches a file system.

use serde::{Deserialize, Serialize};

/// Most extra mounts one sandbox may ask for (DeerFlow's `MAX_EXTRA_MOUNTS`).
pub const MAX_EXTRA_MOUNTS: usize = 10;

/// DeerFlow's ACP workspace, forwarded read-only on every thread-bound create.
pub const ACP_WORKSPACE_PATH: &str = "/mnt/acp-workspace";
/// The per-user custom skills; an extra mount here replaces the service's own.
pub const CUSTOM_SKILLS_PATH: &str = "/mnt/skills/custom";
pub const INTEGRATION_SKILLS_PATH: &str = "/mnt/skills/integrations";
pub const LARK_CONFIG_PATH: &str = "/mnt/integrations/lark-cli/config";
pub const LARK_LOCKS_PATH: &str = "/mnt/integrations/lark-cli/config/locks";
pub const LARK_DATA_PATH: &str = "/mnt/integrations/lark-cli/data";
pub const LARK_RUNTIME_PATH: &str = "/mnt/integrations/lark-cli/runtime";

/// Where the sandbox's user data is mounted.
pub const USER_DATA_PATH: &str = "/mnt/user-data";
/// Where skills appear unless a request names another path; the provisioner's own skills
/// mounts are only made there.
pub const DEFAULT_SKILLS_PATH: &str = "/mnt/skills";
/// The skill categories a request with a skills path of its own mounts below that path (as
/// extra mounts of per-thread projections).
pub const SKILL_CATEGORIES: [&str; 4] = ["public", "custom", "legacy", "integrations"];
/// System directories no mount may go into.
const SYSTEM_PATHS: [&str; 3] = ["/proc", "/sys", "/dev"];
/// The longest skills path a request may name.
const MAX_SKILLS_PATH_LEN: usize = 255;

/// The only container paths an extra mount may have (DeerFlow's `ALLOWED_EXTRA_MOUNT_PATHS`).
pub const ALLOWED_EXTRA_MOUNT_PATHS: [&str; 7] = [
    ACP_WORKSPACE_PATH,
    CUSTOM_SKILLS_PATH,
    INTEGRATION_SKILLS_PATH,
    LARK_CONFIG_PATH,
    LARK_LOCKS_PATH,
    LARK_DATA_PATH,
    LARK_RUNTIME_PATH,
];

/// An extra mount as the request states it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
pub struct ExtraMountRequest {
    /// Absolute directory on the node, inside the DeerFlow base directory
    /// (DEER_FLOW_HOST_BASE_DIR).
    #[schema(example = "/.deer-flow/users/default/threads/thread-456/acp-workspace")]
    pub host_path: String,
    /// One of DeerFlow's allowed paths, e.g. /mnt/acp-workspace.
    #[schema(example = "/mnt/acp-workspace")]
    pub container_path: String,
    #[serde(default)]
    pub read_only: bool,
}

/// The directory every extra mount's host path must lie in, and where that came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostBase {
    /// Absolute, normalised, without a trailing '/'.
    pub dir: String,
    /// Says where `dir` came from, for error messages.
    pub origin: &'static str,
}

/// A checked extra mount (kept on the sandbox's Pod, so that a resume makes it again).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExtraMount {
    /// Normalised absolute host path.
    pub host_path: String,
    /// The host path below the base directory ('/'-separated, never empty, no '..').
    pub below_base: String,
    /// One of [`ALLOWED_EXTRA_MOUNT_PATHS`], or a skill category below the request's own
    /// skills path.
    pub container_path: String,
    pub read_only: bool,
}

/// Why the extra mounts were refused; the text names the entry and the rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidMount {
    #[error("extra_mounts has {0} entries; at most {MAX_EXTRA_MOUNTS} are allowed")]
    TooMany(usize),
    #[error("extra_mounts[{index}].{field} {value:?} {rule}")]
    Entry {
        index: usize,
        field: &'static str,
        value: String,
        rule: String,
    },
}

/// Why a request's skills path was refused; the text says what to write instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("skills_container_path {value:?} {rule}")]
pub struct InvalidSkillsPath {
    pub value: String,
    pub rule: String,
}

/// Checks a request's skills path: absolute, normalised, of plain characters, not `/`, not a
/// system directory, and neither one of the fixed mounts (`reserved`: user data, the extra
/// mount paths, the pod template's mounts) nor inside one. None for the default path, where
/// the provisioner mounts skills itself.
pub fn check_skills_path(
    raw: &str,
    reserved: &[&str],
) -> Result<Option<String>, InvalidSkillsPath> {
    let fail = |rule: String| InvalidSkillsPath {
        value: raw.chars().take(200).collect(),
        rule,
    };
    if raw.len() > MAX_SKILLS_PATH_LEN {
        return Err(fail(format!(
            "is longer than {MAX_SKILLS_PATH_LEN} characters"
        )));
    }
    if !raw.starts_with('/') {
        return Err(fail(format!(
            "must be an absolute path, such as {DEFAULT_SKILLS_PATH}"
        )));
    }
    if !raw
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"/._-".contains(&b))
    {
        return Err(fail(
            "may contain only letters, digits, '/', '.', '_' and '-'".into(),
        ));
    }
    let normal = normalise(raw);
    if normal != raw {
        return Err(fail(format!("is not normalised; write it as {normal:?}")));
    }
    if normal == "/" {
        return Err(fail(
            "must not be the root directory; choose a directory such as /mnt/thread-skills".into(),
        ));
    }
    if normal == DEFAULT_SKILLS_PATH {
        return Ok(None);
    }
    let within = |dir: &str| normal == dir || normal.starts_with(&format!("{dir}/"));
    if let Some(system) = SYSTEM_PATHS.iter().find(|d| within(d)) {
        return Err(fail(format!(
            "lies in the system directory {system}; choose a directory such as /mnt/thread-skills"
        )));
    }
    if let Some(fixed) = reserved.iter().find(|d| within(d)) {
        return Err(fail(format!(
            "is or lies inside {fixed}, which the sandbox mounts for another purpose; choose a \
                directory of its own, such as /mnt/thread-skills"
        )));
    }
    Ok(Some(normal))
}

/// The fixed mounts a skills path may not be or lie in: the user data and every allowed extra
/// mount path.
pub fn fixed_mount_paths() -> Vec<&'static str> {
    let mut paths = vec![USER_DATA_PATH];
    paths.extend(ALLOWED_EXTRA_MOUNT_PATHS);
    paths
}

/// Checks every extra mount against DeerFlow's rules: at most ten; a host path that is
/// absolute, free of '..' and inside the base directory; an allowed container path
/// (normalised), each at most once. With a skills path of its own (`skills_path`), a request
/// may also mount each skill category below it.
pub fn check_extra_mounts(
    requested: &[ExtraMountRequest],
    base: &HostBase,
    skills_path: Option<&str>,
) -> Result<Vec<ExtraMount>, InvalidMount> {
    if requested.len() > MAX_EXTRA_MOUNTS {
        return Err(InvalidMount::TooMany(requested.len()));
    }
    let mut checked: Vec<ExtraMount> = Vec::with_capacity(requested.len());
    for (index, mount) in requested.iter().enumerate() {
        let fail = |field, value: &str, rule: String| InvalidMount::Entry {
            index,
            field,
            value: value.chars().take(200).collect(),
            rule,
        };
        let (host_path, below_base) = host_path_below(&mount.host_path, base)
            .map_err(|rule| fail("host_path", &mount.host_path, rule))?;
        let container_path = allowed_container_path(&mount.container_path, skills_path)
            .map_err(|rule| fail("container_path", &mount.container_path, rule))?;
        if let Some(first) = checked
            .iter()
            .position(|m| m.container_path == container_path)
        {
            return Err(fail(
                "container_path",
                &mount.container_path,
                format!(
                    "is already mounted by extra_mounts[{first}]; each container path may \
                    appear once"
                ),
            ));
        }
        checked.push(ExtraMount {
            host_path,
            below_base,
            container_path,
            read_only: mount.read_only,
        });
    }
    Ok(checked)
}

/// The normalised host path and its part below the base, or the rule it breaks.
fn host_path_below(raw: &str, base: &HostBase) -> Result<(String, String), String> {
    if raw.chars().any(char::is_control) {
        return Err("contains a control character".into());
    }
    if !raw.starts_with('/') {
        return Err("must be an absolute path".into());
    }
    let parts: Vec<&str> = raw
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    if parts.contains(&"..") {
        return Err("must not contain '..'".into());
    }
    let base_parts: Vec<&str> = base.dir.split('/').filter(|p| !p.is_empty()).collect();
    let inside = parts.len() > base_parts.len() && parts[..base_parts.len()] == base_parts[..];
    if !inside {
        return Err(format!(
            "is outside the DeerFlow base directory {} ({}); mount only directories below it, or \
                set DEER_FLOW_HOST_BASE_DIR to the base directory the backend uses",
            base.dir, base.origin
        ));
    }
    Ok((
        format!("/{}", parts.join("/")),
        parts[base_parts.len()..].join("/"),
    ))
}

/// The allowed path `raw` normalises to (as POSIX `normpath` does), or the rule it breaks.
fn allowed_container_path(raw: &str, skills_path: Option<&str>) -> Result<String, String> {
    if !raw.starts_with('/') {
        return Err("must be an absolute path".into());
    }
    let normalised = normalise(raw);
    let mut allowed: Vec<String> = ALLOWED_EXTRA_MOUNT_PATHS.map(str::to_string).to_vec();
    if let Some(skills) = skills_path {
        allowed.extend(SKILL_CATEGORIES.map(|c| format!("{skills}/{c}")));
    }
    if allowed.contains(&normalised) {
        Ok(normalised)
    } else {
        Err(format!(
            "is not a path extra mounts may use; allowed: {}",
            allowed.join(", ")
        ))
    }
}

/// Lexical normalisation of an absolute POSIX path: '.' and empty parts go, '..' climbs.
fn normalise(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            other => parts.push(other),
        }
    }
    format!("/{}", parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> HostBase {
        HostBase {
            dir: "/.deer-flow".into(),
            origin: "DEER_FLOW_HOST_BASE_DIR",
        }
    }

    fn mount(host: &str, container: &str) -> ExtraMountRequest {
        ExtraMountRequest {
            host_path: host.into(),
            container_path: container.into(),
            read_only: true,
        }
    }

    #[test]
    fn a_gateway_mount_is_normalised() {
        let checked = check_extra_mounts(
            &[mount(
                "/.deer-flow//users/u1/./acp-workspace/",
                "/mnt/x/../acp-workspace/",
            )],
            &base(),
            None,
        )
        .unwrap();
        assert_eq!(
            checked,
            vec![ExtraMount {
                host_path: "/.deer-flow/users/u1/acp-workspace".into(),
                below_base: "users/u1/acp-workspace".into(),
                container_path: ACP_WORKSPACE_PATH.into(),
                read_only: true,
            }]
        );
    }

    #[test]
    fn every_rule_names_the_entry() {
        let ok = mount("/.deer-flow/a", "/mnt/acp-workspace");
        let cases: Vec<(Vec<ExtraMountRequest>, &str)> =
            vec![
            (vec![mount("relative/a", "/mnt/acp-workspace")], "extra_mounts[0].host_path \
                \"relative/a\" must be an absolute path"),
            (vec![ok.clone(), mount("/.deer-flow/../etc", "/mnt/skills/custom")],
                "extra_mounts[1].host_path \"/.deer-flow/../etc\" must not contain '..'"),
            (vec![mount("/etc", "/mnt/acp-workspace")], "extra_mounts[0].host_path \"/etc\" is \
                outside the DeerFlow base directory /.deer-flow"),
            (vec![mount("/.deer-flow", "/mnt/acp-workspace")], "is outside the DeerFlow base \
                directory"),
            (vec![mount("/.deer-flow-other/a", "/mnt/acp-workspace")], "is outside the DeerFlow \
                base directory"),
            (vec![mount("/.deer-flow/a\n", "/mnt/acp-workspace")], "contains a control character"),
            (vec![mount("/.deer-flow/a", "/etc")], "extra_mounts[0].container_path \"/etc\" is \
                not a path extra mounts may use; allowed: /mnt/acp-workspace"),
            (vec![mount("/.deer-flow/a", "mnt/acp-workspace")], "extra_mounts[0].container_path \
                \"mnt/acp-workspace\" must be an absolute path"),
            (vec![mount("/.deer-flow/a", "/mnt/user-data")], "is not a path extra mounts may use"),
            (vec![ok.clone(), mount("/.deer-flow/b", "/mnt/acp-workspace/.")],
                "extra_mounts[1].container_path \"/mnt/acp-workspace/.\" is already mounted by \
                    extra_mounts[0]"),
            (vec![ok.clone(); 11], "extra_mounts has 11 entries; at most 10 are allowed"),
        ];
        for (mounts, expected) in cases {
            let e = check_extra_mounts(&mounts, &base(), None)
                .unwrap_err()
                .to_string();
            assert!(e.contains(expected), "{e}\n  should contain: {expected}");
        }
    }

    #[test]
    fn ten_distinct_allowed_mounts_pass_and_none_is_fine() {
        assert_eq!(check_extra_mounts(&[], &base(), None), Ok(vec![]));
        let all: Vec<_> = ALLOWED_EXTRA_MOUNT_PATHS
            .iter()
            .map(|p| mount(&format!("/.deer-flow/x{p}"), p))
            .collect();
        assert_eq!(check_extra_mounts(&all, &base(), None).unwrap().len(), 7);
    }

    #[test]
    fn a_skills_path_of_its_own_is_checked_and_admits_its_projections() {
        let fixed = fixed_mount_paths();
        let check = |raw: &str| check_skills_path(raw, &fixed);
        assert_eq!(check("/mnt/skills"), Ok(None), "the default");
        assert_eq!(
            check("/mnt/thread-skills"),
            Ok(Some("/mnt/thread-skills".into()))
        );
        assert_eq!(check("/opt/skills_v2"), Ok(Some("/opt/skills_v2".into())));
        let refusals = [
            ("mnt/skills", "must be an absolute path"),
            ("/", "must not be the root directory"),
            (
                "/mnt//skills",
                "is not normalised; write it as \"/mnt/skills\"",
            ),
            ("/mnt/x/../y", "is not normalised; write it as \"/mnt/y\""),
            ("/mnt/x/", "is not normalised; write it as \"/mnt/x\""),
            ("/mnt/./x", "is not normalised"),
            ("/mnt/user-data", "is or lies inside /mnt/user-data"),
            ("/mnt/user-data/skills", "is or lies inside /mnt/user-data"),
            (
                "/mnt/acp-workspace/s",
                "is or lies inside /mnt/acp-workspace",
            ),
            (
                "/mnt/integrations/lark-cli/config/s",
                "lies inside /mnt/integrations/lark-cli/config",
            ),
            ("/proc/skills", "lies in the system directory /proc"),
            ("/dev", "lies in the system directory /dev"),
            ("/mnt/sk ills", "may contain only letters"),
            ("/mnt/skills\n", "may contain only letters"),
        ];
        for (raw, rule) in refusals {
            let e = check(raw).unwrap_err().to_string();
            assert!(e.contains(rule), "{raw:?}: {e}\n  should contain: {rule}");
        }
        assert!(check(&format!("/{}", "a".repeat(300))).is_err());

        // Its four categories become allowed extra mount paths, from host paths in the base.
        let projection = |category: &str| ExtraMountRequest {
            host_path: format!("/.deer-flow/users/u/threads/t/skills_view/{category}"),
            container_path: format!("/mnt/thread-skills/{category}"),
            read_only: true,
        };
        let all: Vec<_> = SKILL_CATEGORIES.iter().map(|c| projection(c)).collect();
        let checked = check_extra_mounts(&all, &base(), Some("/mnt/thread-skills")).unwrap();
        assert_eq!(checked[3].container_path, "/mnt/thread-skills/integrations");
        assert_eq!(
            checked[0].below_base,
            "users/u/threads/t/skills_view/public"
        );
        // Not without the skills path, not other categories, not from outside the base.
        let e = check_extra_mounts(&all, &base(), None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("is not a path extra mounts may use"), "{e}");
        let mut other = projection("public");
        other.container_path = "/mnt/thread-skills/private".into();
        let e = check_extra_mounts(&[other], &base(), Some("/mnt/thread-skills"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("/mnt/thread-skills/public, /mnt/thread-skills/custom"),
            "{e}"
        );
        let mut outside = projection("public");
        outside.host_path = "/etc/skills".into();
        let e = check_extra_mounts(&[outside], &base(), Some("/mnt/thread-skills"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("is outside the DeerFlow base directory"), "{e}");
    }
}
