//! One watch of the cache: a reflector with its retries, its state, and the refusals and
//! failures it reports.

use std::{sync::Arc, time::Duration};

use futures::StreamExt;
use kube::{
    api::ListParams,
    runtime::{reflector::store::Writer, watcher, WatchStreamExt},
    Api, Client, Resource,
};
use tokio::sync::watch;

use super::{CacheState, Records, WatchState};
use crate::k8s::refusals::Refusals;

/// What every watch of the cache shares.
pub(super) struct Watch<'a> {
    pub(super) client: Client,
    pub(super) namespace: &'a str,
    pub(super) selector: &'a str,
    pub(super) call_timeout: Duration,
    pub(super) state: Arc<watch::Sender<CacheState>>,
    pub(super) refusals: Refusals,
    pub(super) shutdown: watch::Receiver<bool>,
}

/// Failures of one watch that are not refusals: logged when they start and then at most once
/// a minute while they last (a watch retries about once a second).
const WATCH_FAILURE_LOG_EVERY: Duration = Duration::from_secs(60);

/// The longest wait between two attempts of a failing watch.
const WATCH_RETRY_MAX: Duration = Duration::from_secs(5);

/// kube's watcher reports failures but not a watch that starts again: after an outage the
/// watch may be back with nothing to report (a quiet namespace), and the cache would count as
/// broken until the next change, stopping the reaper. So a watch whose last failure is longer
/// ago than a retry can take counts as recovered once a listing through the same apiserver
/// answers (a silent or refusing apiserver keeps it broken).
const WATCH_RECOVERED_AFTER: Duration = Duration::from_secs(7);

/// Retries of a failing watch: 500 ms doubling up to WATCH_RETRY_MAX.
struct WatchBackoff(Duration);

impl WatchBackoff {
    const FIRST: Duration = Duration::from_millis(500);
}

impl Iterator for WatchBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let wait = self.0;
        self.0 = (self.0 * 2).min(WATCH_RETRY_MAX);
        Some(wait)
    }
}

impl kube::runtime::utils::Backoff for WatchBackoff {
    fn reset(&mut self) {
        self.0 = Self::FIRST;
    }
}

/// What a watch keeps of the objects it sees.
pub(super) enum Keep<K: Resource<DynamicType = ()> + Clone + 'static, R> {
    /// The objects themselves, in kube's store (for the few NetworkPolicies).
    Objects(Writer<K>),
    /// A record of each, by sandbox id; objects without one are not kept.
    Records(Records<R>, fn(&K) -> Option<(String, R)>),
}

impl<K, R> Keep<K, R>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    /// Applies one event. A listing (`Init` .. `InitDone`) replaces everything at its end,
    /// so that objects deleted while the watch was down go too.
    fn apply(&mut self, event: &watcher::Event<K>, listing: &mut Option<Vec<(Arc<str>, R)>>) {
        let (records, record_of) = match self {
            Keep::Objects(writer) => return writer.apply_watcher_event(event),
            Keep::Records(records, record_of) => (records, *record_of),
        };
        let records = records.pin();
        match event {
            watcher::Event::Apply(object) => {
                if let Some((id, record)) = record_of(object) {
                    records.insert(id.into(), Arc::new(record));
                }
            }
            watcher::Event::Delete(object) => {
                if let Some((id, _)) = record_of(object) {
                    records.remove(id.as_str());
                }
            }
            watcher::Event::Init => *listing = Some(Vec::new()),
            watcher::Event::InitApply(object) => {
                if let (Some(listed), Some((id, record))) = (listing.as_mut(), record_of(object)) {
                    listed.push((id.into(), record));
                }
            }
            watcher::Event::InitDone => {
                let listed = listing.take().unwrap_or_default();
                let ids: std::collections::HashSet<Arc<str>> =
                    listed.iter().map(|(id, _)| id.clone()).collect();
                for (id, record) in listed {
                    records.insert(id, Arc::new(record));
                }
                records.retain(|id, _| ids.contains(id));
            }
        }
    }
}

impl Watch<'_> {
    /// Runs one watch in the background, keeping what `keep` says.
    pub(super) fn run<K, R>(
        &self,
        mut keep: Keep<K, R>,
        mine: fn(&mut CacheState) -> &mut WatchState,
    ) where
        K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + std::fmt::Debug
            + serde::de::DeserializeOwned
            + Send
            + Sync
            + 'static,
        R: Send + Sync + 'static,
    {
        let config = watcher::Config::default().labels(self.selector);
        let kind = K::kind(&()).to_string();
        let plural = K::plural(&()).to_string();
        let api: Api<K> = Api::namespaced(self.client.clone(), self.namespace);
        let probe = (
            api.clone(),
            ListParams::default().labels(self.selector).limit(1),
        );
        let call_timeout = self.call_timeout;
        let stream = watcher(api, config).backoff(WatchBackoff(WatchBackoff::FIRST));
        let (state, refusals, mut shutdown) = (
            Arc::clone(&self.state),
            self.refusals.clone(),
            self.shutdown.clone(),
        );
        tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            let mut listing = None;
            let mut last_logged: Option<tokio::time::Instant> = None;
            // While failing: when the watch may count as recovered, and which verb failed.
            let mut recovery: Option<(tokio::time::Instant, &'static str)> = None;
            loop {
                let recovery_due = recovery.map(|(at, _)| at);
                let recovered = tokio::time::sleep_until(
                    recovery_due.unwrap_or_else(tokio::time::Instant::now),
                );
                tokio::select! {
                    _ = recovered, if recovery_due.is_some() => {
                        let answered = tokio::time::timeout(call_timeout,
                            probe.0.list(&probe.1)).await;
                        let Some((_, verb)) = recovery.take() else { continue };
                        if !matches!(answered, Ok(Ok(_))) {
                            recovery = Some((tokio::time::Instant::now() + WATCH_RECOVERED_AFTER,
                                verb));
                            continue;
                        }
                        refusals.allowed(verb, &plural);
                        if last_logged.take().is_some() {
                            tracing::info!(kind, "watch works again; reads come from memory");
                        }
                        state.send_modify(|s| {
                            let w = mine(s);
                            w.healthy = w.synced;
                            w.forbidden = false;
                            s.generation += 1;
                        });
                    }
                    event = stream.next() => match event {
                        Some(Ok(event)) => {
                            keep.apply(&event, &mut listing);
                            let synced = matches!(event, watcher::Event::InitDone);
                            if synced {
                                refusals.allowed("list", &plural);
                            }
                            // Only these come from the watch itself (the others from the listing).
                            if matches!(event,
                                watcher::Event::Apply(_) | watcher::Event::Delete(_)) {
                                refusals.allowed("watch", &plural);
                            }
                            if last_logged.take().is_some() {
                                tracing::info!(kind, "watch works again; reads come from memory");
                            }
                            recovery = None;
                            state.send_modify(|s| {
                                let w = mine(s);
                                w.synced |= synced;
                                w.healthy = true;
                                w.forbidden = false;
                                s.generation += 1;
                            });
                        }
                        Some(Err(e)) => {
                            let forbidden = refused_permission(&e);
                            let verb = match (&e, &forbidden) {
                                (_, Some((verb, _))) => *verb,
                                (watcher::Error::InitialListFailed(_), None) => "list",
                                _ => "watch",
                            };
                            recovery = Some((tokio::time::Instant::now() + WATCH_RECOVERED_AFTER,
                                verb));
                            let log_due = last_logged
                                .is_none_or(|t| t.elapsed() >= WATCH_FAILURE_LOG_EVERY);
                            match &forbidden {
                                Some((verb, message)) => refusals.refused(verb, &plural, message),
                                None if log_due => {
                                    last_logged = Some(tokio::time::Instant::now());
                                    tracing::warn!(kind, error = %e, "watch failed; reads fall \
                                        back to the apiserver until it recovers (logged again at \
                                        most once a minute)");
                                }
                                None => tracing::debug!(kind, error = %e, "watch failed again"),
                            }
                            state.send_modify(|s| {
                                let w = mine(s);
                                w.healthy = false;
                                w.forbidden = forbidden.is_some();
                            });
                        }
                        None => break,
                    },
                    changed = shutdown.changed() => {
                        if changed.is_err() || *shutdown.borrow() {
                            break;
                        }
                    }
                }
            }
            tracing::debug!(kind, "watch stopped");
        });
    }
}

/// The verb a watch failure was refused for (403), with the apiserver's message.
fn refused_permission(e: &watcher::Error) -> Option<(&'static str, String)> {
    let (verb, status) = match e {
        watcher::Error::InitialListFailed(kube::Error::Api(s)) => ("list", s),
        watcher::Error::WatchStartFailed(kube::Error::Api(s))
        | watcher::Error::WatchFailed(kube::Error::Api(s)) => ("watch", s),
        watcher::Error::WatchError(s) => ("watch", s),
        _ => return None,
    };
    // The apiserver names the verb it refused ("... cannot watch resource ..."): a listing
    // may be refused for watch when it streams.
    let named = status
        .message
        .split_once(" cannot ")
        .and_then(|(_, rest)| rest.split(' ').next())
        .and_then(|named| ["list", "watch"].into_iter().find(|v| *v == named));
    (status.code == 403).then(|| (named.unwrap_or(verb), status.message.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watch_retries_double_up_to_the_maximum_and_start_over() {
        use kube::runtime::utils::Backoff;
        let mut backoff = WatchBackoff(WatchBackoff::FIRST);
        let waits: Vec<u64> = (0..6)
            .map(|_| backoff.next().unwrap().as_millis() as u64)
            .collect();
        assert_eq!(waits, [500, 1000, 2000, 4000, 5000, 5000]);
        backoff.reset();
        assert_eq!(backoff.next(), Some(WatchBackoff::FIRST));
        // A failing watch reports again before it could be taken for recovered.
        assert!(WATCH_RETRY_MAX < WATCH_RECOVERED_AFTER);
    }
}
