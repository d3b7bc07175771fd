//! The last listing's view of each sandbox, reused while what it was built from is unchanged:
//! a LIST of ten thousand sandboxes then shares the views it answered with last time instead
//! of reading every pod's labels, annotations, conditions and times again.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use k8s_openapi::jiff::Timestamp;

use crate::sandbox::{Listed, Sandbox};

/// What a view was built from. The resource versions change with every change of the pod or
/// of the service (a new object of the same name has a new one); the activity this process
/// noted moves the idle deadline without changing the pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Source {
    pub pod_version: Option<String>,
    pub service_version: Option<String>,
    pub activity: Option<Timestamp>,
}

impl Source {
    fn is(&self, pod: Option<&str>, service: Option<&str>, activity: Option<Timestamp>) -> bool {
        self.pod_version.as_deref() == pod
            && self.service_version.as_deref() == service
            && self.activity == activity
    }
}

struct Kept {
    source: Source,
    view: Arc<Listed>,
}

/// When a listing was made: the cache's generation (bumped by every event the watch applied)
/// and the version of the activity noted in this process.
pub(super) type Stamp = (u64, u64);

/// A listing and when it was made.
type Stamped = (Stamp, Vec<Arc<Listed>>);

/// Views by sandbox id, as the last listing left them, and that listing itself with its stamp.
/// Cheap to clone.
#[derive(Clone, Default)]
pub(super) struct Views {
    by_id: Arc<Mutex<HashMap<Arc<str>, Kept>>>,
    last: Arc<Mutex<Option<Stamped>>>,
}

/// One listing's use of the kept views: it takes them all at the start and leaves behind only
/// the sandboxes it saw, so deleted sandboxes are forgotten by the next listing. Two listings
/// at once are correct: the second builds its views afresh.
pub(super) struct Listing {
    views: Views,
    before: HashMap<Arc<str>, Kept>,
    after: HashMap<Arc<str>, Kept>,
}

impl Views {
    /// The last listing, when nothing it was made from has changed since.
    pub fn unchanged(&self, now: Stamp) -> Option<Vec<Arc<Listed>>> {
        let last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        last.as_ref()
            .filter(|(stamp, _)| *stamp == now)
            .map(|(_, listed)| listed.clone())
    }

    pub fn listing(&self, expected: usize) -> Listing {
        let before = std::mem::take(&mut *self.by_id.lock().unwrap_or_else(|e| e.into_inner()));
        Listing {
            views: self.clone(),
            before,
            after: HashMap::with_capacity(expected),
        }
    }
}

impl Listing {
    /// The view of `id`: the kept one when it was built from the same pod and service
    /// versions and activity, otherwise `build()`'s.
    pub fn view(
        &mut self,
        id: Arc<str>,
        pod: Option<&str>,
        service: Option<&str>,
        activity: Option<Timestamp>,
        build: impl FnOnce() -> Sandbox,
    ) -> Arc<Listed> {
        let kept = match self.before.remove(&id) {
            Some(kept) if kept.source.is(pod, service, activity) => kept,
            _ => Kept {
                source: Source {
                    pod_version: pod.map(str::to_string),
                    service_version: service.map(str::to_string),
                    activity,
                },
                view: Arc::new(Listed::new(build())),
            },
        };
        let view = Arc::clone(&kept.view);
        self.after.insert(id, kept);
        view
    }

    /// Keeps the listing as the answer while `stamp` stays the same. The stamp was read
    /// before the listing began, so a change during it makes the next listing look again.
    pub fn finish(&self, stamp: Stamp, listed: &[Arc<Listed>]) {
        *self.views.last.lock().unwrap_or_else(|e| e.into_inner()) = Some((stamp, listed.to_vec()));
    }
}

impl Drop for Listing {
    fn drop(&mut self) {
        let after = std::mem::take(&mut self.after);
        *self.views.by_id.lock().unwrap_or_else(|e| e.into_inner()) = after;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sandbox(id: &str, url: &str) -> Sandbox {
        serde_json::from_value(serde_json::json!({
            "sandbox_id": id, "sandbox_url": url, "status": "Running", "ready": true,
        }))
        .unwrap()
    }

    #[test]
    fn a_view_is_reused_until_its_pod_service_or_activity_changes() {
        let views = Views::default();
        let mut built = 0;
        let mut list = |pod: &str, service: &str, activity: Option<Timestamp>, url: &str| {
            let mut listing = views.listing(1);
            let view = listing.view("a".into(), Some(pod), Some(service), activity, || {
                built += 1;
                sandbox("a", url)
            });
            view.sandbox_url.clone()
        };
        assert_eq!(list("1", "1", None, "first"), "first");
        assert_eq!(list("1", "1", None, "second"), "first", "unchanged: reused");
        assert_eq!(list("2", "1", None, "pod"), "pod");
        assert_eq!(list("2", "3", None, "service"), "service");
        let now = Timestamp::now();
        assert_eq!(list("2", "3", Some(now), "activity"), "activity");
        assert_eq!(list("2", "3", Some(now), "again"), "activity");
        assert_eq!(built, 4);
    }

    #[test]
    fn the_last_listing_answers_while_its_stamp_holds() {
        let views = Views::default();
        assert!(views.unchanged((1, 0)).is_none());
        let listing = views.listing(0);
        listing.finish((1, 0), &[Arc::new(Listed::new(sandbox("a", "u")))]);
        drop(listing);
        assert_eq!(views.unchanged((1, 0)).unwrap()[0].sandbox_id, "a");
        assert!(views.unchanged((2, 0)).is_none(), "the cache changed");
        assert!(views.unchanged((1, 1)).is_none(), "activity was noted");
    }

    #[test]
    fn a_listing_forgets_the_sandboxes_it_did_not_see() {
        let views = Views::default();
        let mut listing = views.listing(2);
        for id in ["a", "b"] {
            listing.view(id.into(), Some("1"), None, None, || sandbox(id, id));
        }
        drop(listing);
        let mut listing = views.listing(1);
        listing.view("a".into(), Some("1"), None, None, || unreachable!());
        drop(listing);
        let kept = views.by_id.lock().unwrap();
        assert_eq!(kept.keys().map(|k| &**k).collect::<Vec<_>>(), ["a"]);
    }
}
