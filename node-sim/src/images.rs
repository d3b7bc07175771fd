//! The images on the simulated node, as a kubelet's image manager keeps them: an image is
//! pulled when a pod needs it and it is absent (or always, with `imagePullPolicy: Always`),
//! one pod's images one after another, and a pull in flight is shared by every pod that needs
//! the same image. Pulled images are listed in the Node's `status.images`, where the simulator
//! also finds them again after a restart.
//!
//! Times are milliseconds on the simulator's clock.

use std::collections::{BTreeSet, HashMap};

/// A container's `imagePullPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    Always,
    IfNotPresent,
    Never,
}

impl Policy {
    /// Kubernetes' rule: `Always` for `:latest` or no tag, `IfNotPresent` otherwise.
    pub fn of(policy: Option<&str>, image: &str) -> Policy {
        match policy {
            Some("Always") => Policy::Always,
            Some("Never") => Policy::Never,
            Some("IfNotPresent") => Policy::IfNotPresent,
            _ => {
                let last = image.rsplit('/').next().unwrap_or(image);
                let tag = last.split_once('@').map_or(last, |(name, _)| name);
                match tag.rsplit_once(':') {
                    Some((_, "latest")) | None => Policy::Always,
                    Some(_) => Policy::IfNotPresent,
                }
            }
        }
    }
}

/// One image a pod needs, in the order the kubelet pulls them (init containers first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    pub image: String,
    pub policy: Policy,
    /// How long a pull of it takes.
    pub pull_ms: u64,
}

/// The node's images.
#[derive(Debug, Default)]
pub struct Images {
    present: BTreeSet<String>,
    /// Pulls in flight, and when each is done.
    pulling: HashMap<String, u64>,
}

/// What a pod's images mean for its start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// All images are there at `at`; `pulls` were started for it (image, done at).
    StartsAt { at: u64, pulls: Vec<(String, u64)> },
    /// An image is absent and its policy forbids pulling it.
    NeverPull(String),
}

impl Images {
    /// Images already on the node (from its status, after a simulator restart).
    pub fn with_present(names: impl IntoIterator<Item = String>) -> Images {
        Images {
            present: names.into_iter().collect(),
            pulling: HashMap::new(),
        }
    }

    /// When a pod admitted at `now` has all its images, starting the pulls it needs.
    pub fn plan(&mut self, now: u64, wanted: &[Wanted]) -> Plan {
        if let Some(missing) = wanted
            .iter()
            .find(|w| w.policy == Policy::Never && !self.has(&w.image))
        {
            return Plan::NeverPull(missing.image.clone());
        }
        let mut at = now;
        let mut pulls = Vec::new();
        for w in wanted {
            if w.policy != Policy::Always && self.has(&w.image) {
                continue;
            }
            if let Some(&done) = self.pulling.get(&w.image) {
                at = at.max(done);
                continue;
            }
            // Even an instant pull is only recorded once it is reported done (`pulled`), so
            // that the node's status lists every image it pulled.
            let done = at + w.pull_ms;
            self.pulling.insert(w.image.clone(), done);
            pulls.push((w.image.clone(), done));
            at = done;
        }
        Plan::StartsAt { at, pulls }
    }

    /// A pull finished: the image is on the node. Returns whether that is news.
    pub fn pulled(&mut self, image: &str) -> bool {
        self.pulling.remove(image);
        self.present.insert(image.to_string())
    }

    fn has(&self, image: &str) -> bool {
        self.present.contains(image)
    }

    /// The images on the node, for its status.
    pub fn present(&self) -> impl Iterator<Item = &String> {
        self.present.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn want(image: &str, policy: Policy, pull_ms: u64) -> Wanted {
        Wanted {
            image: image.into(),
            policy,
            pull_ms,
        }
    }

    #[test]
    fn an_absent_image_is_pulled_once_and_shared() {
        let mut images = Images::default();
        let a = [want("sandbox:1", Policy::IfNotPresent, 20_000)];
        assert_eq!(
            images.plan(0, &a),
            Plan::StartsAt {
                at: 20_000,
                pulls: vec![("sandbox:1".into(), 20_000)]
            }
        );
        // A second pod 5 s later waits for the same pull.
        assert_eq!(
            images.plan(5_000, &a),
            Plan::StartsAt {
                at: 20_000,
                pulls: vec![]
            }
        );
        assert!(images.pulled("sandbox:1"));
        assert!(!images.pulled("sandbox:1"));
        assert_eq!(
            images.plan(30_000, &a),
            Plan::StartsAt {
                at: 30_000,
                pulls: vec![]
            }
        );
    }

    #[test]
    fn one_pods_images_are_pulled_one_after_another() {
        let mut images = Images::with_present(["pause:3".to_string()]);
        let wanted = [
            want("init:1", Policy::IfNotPresent, 1_000),
            want("sandbox:1", Policy::IfNotPresent, 2_000),
            want("pause:3", Policy::IfNotPresent, 9_000),
        ];
        assert_eq!(
            images.plan(100, &wanted),
            Plan::StartsAt {
                at: 3_100,
                pulls: vec![("init:1".into(), 1_100), ("sandbox:1".into(), 3_100)]
            }
        );
    }

    #[test]
    fn policies_are_honoured() {
        let mut images = Images::with_present(["sandbox:1".to_string()]);
        // Always pulls even a present image; Never refuses an absent one.
        assert_eq!(
            images.plan(0, &[want("sandbox:1", Policy::Always, 500)]),
            Plan::StartsAt {
                at: 500,
                pulls: vec![("sandbox:1".into(), 500)]
            }
        );
        assert_eq!(
            images.plan(0, &[want("other:1", Policy::Never, 500)]),
            Plan::NeverPull("other:1".into())
        );
        assert_eq!(
            images.plan(0, &[want("sandbox:1", Policy::Never, 500)]),
            Plan::StartsAt {
                at: 0,
                pulls: vec![]
            }
        );
        assert_eq!(Policy::of(None, "a/b:latest"), Policy::Always);
        assert_eq!(Policy::of(None, "reg:5000/b"), Policy::Always);
        assert_eq!(Policy::of(None, "reg:5000/b:1"), Policy::IfNotPresent);
        assert_eq!(Policy::of(Some("Never"), "b"), Policy::Never);
    }
}
