//! What this process remembers about each sandbox, in one map with one removal: the activity
//! it saw (and when it last wrote it to the pod), whether it has seen the sandbox Ready, and
//! sandboxes it created that the watch may not have delivered yet.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex, MutexGuard,
    },
    time::{Duration, Instant},
};

use jiff::Timestamp;

use crate::sandbox::{Listed, Sandbox};

/// How long a created sandbox is listed from memory while the watch has not delivered it.
pub const UNWATCHED_FOR: Duration = Duration::from_secs(10);

#[derive(Debug, Default)]
struct Remembered {
    /// The last activity seen here, and the last one written to the pod.
    activity: Option<(Timestamp, Timestamp)>,
    /// Time-to-ready is recorded the first time only.
    seen_ready: bool,
    /// Created here: its view, and when, until the watch has it.
    unwatched: Option<(Sandbox, Instant)>,
}

impl Remembered {
    fn is_empty(&self) -> bool {
        self.activity.is_none() && !self.seen_ready && self.unwatched.is_none()
    }
}

/// Per-sandbox process state. Cheap to clone (shared).
#[derive(Clone, Debug, Default)]
pub struct Memory {
    sandboxes: Arc<Mutex<HashMap<String, Remembered>>>,
    /// Bumped whenever an activity is noted: listings made before are out of date.
    activity_version: Arc<AtomicU64>,
    /// One turn per sandbox being resumed, so that concurrent wakes here make one resume.
    resuming: Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
}

impl Memory {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Remembered>> {
        self.sandboxes.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Notes activity at `now`. `written` is the newest activity the pod already records.
    /// Returns true when it is due to be written (at most once per `persist_every`); the
    /// caller then writes `now`.
    pub fn touch(
        &self,
        id: &str,
        now: Timestamp,
        written: Timestamp,
        persist_every: Duration,
    ) -> bool {
        let mut sandboxes = self.lock();
        self.activity_version.fetch_add(1, Ordering::Relaxed);
        let entry = sandboxes.entry(id.to_string()).or_default();
        let (last, last_written) = entry.activity.get_or_insert((now, written));
        *last = now;
        let due = now.duration_since(*last_written).unsigned_abs() >= persist_every;
        if due {
            *last_written = now;
        }
        due
    }

    /// The turn to resume `id`: whoever holds it resumes, the others wait and then find the
    /// sandbox awake. Turns nobody holds are dropped on the way.
    pub fn resume_turn(&self, id: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut turns = self.resuming.lock().unwrap_or_else(|e| e.into_inner());
        turns.retain(|_, turn| Arc::strong_count(turn) > 1);
        turns.entry(id.to_string()).or_default().clone()
    }

    /// Changes whenever an activity is noted.
    pub fn version(&self) -> u64 {
        self.activity_version.load(Ordering::Relaxed)
    }

    /// The last activity seen by this process.
    pub fn last_activity(&self, id: &str) -> Option<Timestamp> {
        self.lock()
            .get(id)
            .and_then(|r| r.activity)
            .map(|(last, _)| last)
    }

    /// Whether this is the first time this process sees the sandbox Ready.
    pub fn first_ready(&self, id: &str) -> bool {
        let mut sandboxes = self.lock();
        // Looked up before inserting: a LIST asks this of every sandbox every time.
        if let Some(entry) = sandboxes.get_mut(id) {
            return !std::mem::replace(&mut entry.seen_ready, true);
        }
        sandboxes.entry(id.to_string()).or_default().seen_ready = true;
        true
    }

    /// A sandbox this process just created; listed from here until the watch shows it.
    pub fn created(&self, sandbox: Sandbox, at: Instant) {
        let id = sandbox.sandbox_id.clone();
        self.lock().entry(id).or_default().unwatched = Some((sandbox, at));
    }

    /// Created sandboxes missing from `listed` (what the watch shows), newer than
    /// UNWATCHED_FOR; the others are dropped from memory.
    pub fn unwatched(&self, listed: &[Arc<Listed>], now: Instant) -> Vec<Sandbox> {
        let mut sandboxes = self.lock();
        if sandboxes.values().all(|r| r.unwatched.is_none()) {
            return Vec::new();
        }
        // A set, not a scan per entry: after a burst of creates every entry is unwatched.
        let listed: std::collections::HashSet<&str> =
            listed.iter().map(|s| s.sandbox_id.as_str()).collect();
        let mut missing = Vec::new();
        for (id, remembered) in sandboxes.iter_mut() {
            let Some((sandbox, at)) = &remembered.unwatched else {
                continue;
            };
            if now.duration_since(*at) < UNWATCHED_FOR && !listed.contains(id.as_str()) {
                missing.push(sandbox.clone());
            } else {
                remembered.unwatched = None;
            }
        }
        sandboxes.retain(|_, r| !r.is_empty());
        missing
    }

    /// Forgets the sandboxes that no longer exist (deleted by another replica or by hand):
    /// those missing from `existing`, except ones created here that the watch may not show yet.
    pub fn keep_only(&self, exists: impl Fn(&str) -> bool) {
        self.lock()
            .retain(|id, r| exists(id) || r.unwatched.is_some());
        self.activity_version.fetch_add(1, Ordering::Relaxed);
    }

    /// Forgets everything about a deleted sandbox.
    pub fn forget(&self, id: &str) {
        self.lock().remove(id);
        self.activity_version.fetch_add(1, Ordering::Relaxed);
    }

    /// How many sandboxes are remembered (for tests and leak checks).
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::Phase;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn sandbox(id: &str) -> Sandbox {
        Sandbox {
            sandbox_id: id.into(),
            sandbox_url: String::new(),
            status: Phase::Pending,
            ready: false,
            reason: None,
            message: None,
            thread_id: None,
            user_id: "default".into(),
            max_shell_sessions: None,
            container_id: None,
            created_at: None,
            expires_at: None,
            cluster: "default".into(),
            tenant: "default".into(),
        }
    }

    #[test]
    fn activity_is_due_once_per_interval() {
        let m = Memory::default();
        let created = at("2026-01-01T00:00:00Z");
        let every = Duration::from_secs(30);
        assert!(!m.touch("a", at("2026-01-01T00:00:10Z"), created, every));
        assert_eq!(m.last_activity("a"), Some(at("2026-01-01T00:00:10Z")));
        assert!(m.touch("a", at("2026-01-01T00:00:31Z"), created, every));
        assert!(!m.touch("a", at("2026-01-01T00:00:50Z"), created, every));
        assert!(m.touch("a", at("2026-01-01T00:01:01Z"), created, every));
        assert_eq!(m.last_activity("b"), None);
    }

    #[test]
    fn readiness_is_first_seen_once() {
        let m = Memory::default();
        assert!(m.first_ready("a"));
        assert!(!m.first_ready("a"));
        assert!(m.first_ready("b"));
    }

    #[test]
    fn unwatched_creations_are_listed_until_watched_or_old() {
        let m = Memory::default();
        let start = Instant::now();
        m.created(sandbox("a"), start);
        m.created(sandbox("b"), start);
        let listed = [Arc::new(Listed::new(sandbox("b")))];
        let missing = m.unwatched(&listed, start + Duration::from_secs(1));
        assert_eq!(
            missing
                .iter()
                .map(|s| s.sandbox_id.as_str())
                .collect::<Vec<_>>(),
            ["a"]
        );
        // Once watched it is not listed from memory again, and is forgotten.
        assert!(m
            .unwatched(&[], start + Duration::from_secs(2))
            .iter()
            .all(|s| s.sandbox_id == "a"));
        assert!(m.unwatched(&[], start + UNWATCHED_FOR).is_empty());
        assert!(m.is_empty(), "nothing else was remembered about them");
    }

    #[test]
    fn sandboxes_gone_elsewhere_are_forgotten() {
        let m = Memory::default();
        let now = at("2026-01-01T00:00:00Z");
        for id in ["kept", "gone"] {
            m.touch(id, now, now, Duration::from_secs(1));
        }
        m.created(sandbox("new"), Instant::now());
        m.keep_only(|id| id == "kept");
        assert_eq!(m.last_activity("kept"), Some(now));
        assert_eq!(m.last_activity("gone"), None);
        assert_eq!(m.len(), 2, "the new one stays until the watch shows it");
    }

    #[test]
    fn forget_drops_every_kind_of_state() {
        let m = Memory::default();
        let now = at("2026-01-01T00:00:00Z");
        m.touch("a", now, now, Duration::from_secs(1));
        m.first_ready("a");
        m.created(sandbox("a"), Instant::now());
        assert_eq!(m.len(), 1);
        m.forget("a");
        assert!(m.is_empty());
        assert!(
            m.first_ready("a"),
            "forgotten: seen for the first time again"
        );
    }
}
