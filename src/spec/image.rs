//! Image references as nodes report them: a container runtime lists `docker.io/library/x:tag`
//! for an image a pod named `x:tag`, so comparing a configured image with a node's
//! `status.images` needs both in one form.

/// The name a container runtime reports for `image`: with its registry, `library/` for Docker
/// Hub's official images, and a tag (`latest` when none is given).
pub fn canonical(image: &str) -> String {
    let (name, digest) = match image.split_once('@') {
        Some((name, digest)) => (name, format!("@{digest}")),
        None => (image, String::new()),
    };
    let last = name.rsplit('/').next().unwrap_or(name);
    let tagged = if digest.is_empty() && !last.contains(':') {
        format!("{name}:latest")
    } else {
        name.to_string()
    };
    let first = tagged.split('/').next().unwrap_or_default();
    let has_registry = tagged.contains('/')
        && (first.contains('.') || first.contains(':') || first == "localhost");
    let full = if has_registry {
        tagged
    } else if tagged.contains('/') {
        format!("docker.io/{tagged}")
    } else {
        format!("docker.io/library/{tagged}")
    };
    format!("{full}{digest}")
}

/// Whether a node's reported image name is the configured `image`.
pub fn is_reported_as(image: &str, reported: &str) -> bool {
    reported == image || canonical(reported) == canonical(image)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_and_full_names_are_one_image() {
        for (image, reported) in [
            ("python:3.12", "docker.io/library/python:3.12"),
            ("python", "docker.io/library/python:latest"),
            ("bitnami/redis:7", "docker.io/bitnami/redis:7"),
            ("reg.example/a/b:1", "reg.example/a/b:1"),
            ("localhost:5000/a", "localhost:5000/a:latest"),
        ] {
            assert!(is_reported_as(image, reported), "{image} ~ {reported}");
            assert_eq!(canonical(image), canonical(reported));
        }
        assert!(!is_reported_as(
            "python:3.12",
            "docker.io/library/python:3.11"
        ));
        assert!(!is_reported_as(
            "reg.example/python:3.12",
            "docker.io/library/python:3.12"
        ));
    }

    #[test]
    fn canonical_names_are_what_runtimes_report() {
        for (image, name) in [
            ("python:3.12", "docker.io/library/python:3.12"),
            ("python", "docker.io/library/python:latest"),
            ("bitnami/redis:7", "docker.io/bitnami/redis:7"),
            ("reg.example/a/b:1", "reg.example/a/b:1"),
            ("localhost:5000/a", "localhost:5000/a:latest"),
            ("reg:5000/a:1", "reg:5000/a:1"),
            ("a@sha256:00", "docker.io/library/a@sha256:00"),
            ("reg.example/a:1@sha256:00", "reg.example/a:1@sha256:00"),
        ] {
            assert_eq!(canonical(image), name, "{image}");
        }
    }
}
