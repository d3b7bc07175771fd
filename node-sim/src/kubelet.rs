//! How a kubelet runs one container's probes, as a pure schedule: given when the container
//! starts and when it can answer, when does the pod turn Ready, and when is the container
//! killed and restarted?
//!
//! The model follows the kubelet's prober (pkg/kubelet/prober):
//! - each probe has a worker created when the pod is admitted (time 0 here), which probes at
//!   once and then every `periodSeconds`, on its own ticker: probe times are `k * period`;
//! - a probe is skipped while the container is not running, and while the whole seconds since
//!   the container started are below `initialDelaySeconds`;
//! - readiness and liveness are skipped until the startup probe (if any) has succeeded;
//! - a container start and a startup success each trigger an immediate readiness probe (the
//!   kubelet's manual trigger on a pod sync), so Ready follows startup without waiting for the
//!   readiness ticker;
//! - a probe succeeds once the container has booted (`boot` after its start);
//! - `failureThreshold` consecutive startup or liveness failures kill the container; it is
//!   restarted at once the first time, then after 10 s, 20 s, ... (at most 300 s), as the
//!   kubelet's crash back-off does;
//! - a container without a readiness probe is ready once started (after its startup probe).
//!
//! Times are milliseconds after the pod was admitted.

/// One probe's timing, as in the pod spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    pub initial_delay_s: u64,
    pub period_ms: u64,
    pub failure_threshold: u32,
    pub success_threshold: u32,
}

impl Probe {
    /// Kubernetes' defaults for unset fields.
    pub fn new(
        initial_delay_s: Option<i32>,
        period_s: Option<i32>,
        failure: Option<i32>,
        success: Option<i32>,
    ) -> Probe {
        let positive = |v: Option<i32>, default: u64| {
            v.and_then(|v| u64::try_from(v).ok())
                .filter(|v| *v > 0)
                .unwrap_or(default)
        };
        Probe {
            initial_delay_s: initial_delay_s
                .and_then(|v| u64::try_from(v).ok())
                .unwrap_or(0),
            period_ms: positive(period_s, 10) * 1000,
            failure_threshold: positive(failure, 3) as u32,
            success_threshold: positive(success, 1) as u32,
        }
    }
}

/// The probes of the container whose readiness makes the pod's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Probes {
    pub startup: Option<Probe>,
    pub readiness: Option<Probe>,
    pub liveness: Option<Probe>,
}

/// What happens to the container, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// The container (re)started; `restarts` earlier incarnations were killed.
    Started { restarts: u32 },
    /// The startup probe succeeded (or there is none).
    StartupSucceeded,
    /// The readiness probe passed `successThreshold` times: the pod is Ready.
    Ready,
    /// The readiness probe failed `failureThreshold` times after Ready.
    NotReady,
    /// A startup or liveness probe failed `failureThreshold` times: the container is killed.
    Killed { by: Kind },
}

/// Which probe killed a container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Startup,
    Liveness,
}

/// The back-off before restart number `n` (1-based) of a killed container.
pub fn restart_backoff_ms(n: u32) -> u64 {
    if n <= 1 {
        0
    } else {
        (10_000u64 << (n - 2).min(5)).min(300_000)
    }
}

/// The container's life from its first start at `start` (after image pulls), when it answers
/// probes `boot` after each start (`None`: never), up to `max_restarts` restarts.
pub fn timeline(
    probes: &Probes,
    start: u64,
    boot: Option<u64>,
    max_restarts: u32,
) -> Vec<(u64, Event)> {
    let mut events = Vec::new();
    let mut incarnation_start = start;
    for restarts in 0..=max_restarts {
        events.push((incarnation_start, Event::Started { restarts }));
        match incarnation(probes, incarnation_start, boot, &mut events) {
            Some(killed_at) => {
                incarnation_start = killed_at + restart_backoff_ms(restarts + 1);
            }
            None => return events,
        }
    }
    events
}

/// Plays one incarnation; returns when it was killed, or None when it settled (nothing more
/// would change) or an hour passed.
fn incarnation(
    probes: &Probes,
    start: u64,
    boot: Option<u64>,
    events: &mut Vec<(u64, Event)>,
) -> Option<u64> {
    let booted = |t: u64| boot.is_some_and(|b| t >= start + b);
    let eligible = |p: &Probe, t: u64| t >= start && (t - start) / 1000 >= p.initial_delay_s;
    let horizon = start + boot.unwrap_or(0) + 3_600_000;
    // Per kind: the index of its next tick (ticks before the start find nothing running).
    let first_tick = |p: &Option<Probe>| p.map(|p| start.div_ceil(p.period_ms));
    let (mut startup_k, mut readiness_k, mut liveness_k) = (
        first_tick(&probes.startup),
        first_tick(&probes.readiness),
        first_tick(&probes.liveness),
    );
    let mut started = probes.startup.is_none();
    let mut ready = false;
    if started {
        events.push((start, Event::StartupSucceeded));
        startup_k = None;
        if probes.readiness.is_none() {
            events.push((start, Event::Ready));
            ready = true;
        }
    }
    // Readiness runs triggered by a pod sync: the container start, a startup success.
    let mut manual: Vec<u64> = vec![start];
    let (mut ready_ok, mut ready_fail, mut live_fail, mut startup_fail) = (0u32, 0u32, 0u32, 0u32);
    loop {
        // The earliest due probe; at one instant: startup, manual readiness, readiness, liveness.
        let tick = |k: Option<u64>, p: &Option<Probe>| k.zip(*p).map(|(k, p)| k * p.period_ms);
        let mut due: Vec<(u64, u8)> = Vec::new();
        if let Some(t) = tick(startup_k, &probes.startup) {
            due.push((t, 0));
        }
        if probes.readiness.is_some() {
            if let Some(&t) = manual.iter().min() {
                due.push((t, 1));
            }
        }
        if let Some(t) = tick(readiness_k, &probes.readiness) {
            due.push((t, 2));
        }
        if let Some(t) = tick(liveness_k, &probes.liveness) {
            due.push((t, 3));
        }
        let &(t, which) = due.iter().min()?;
        if t > horizon || (ready && booted(t)) {
            // Every later probe passes (or an hour of the same passed): settled.
            return None;
        }
        let ok = booted(t);
        match which {
            0 => {
                startup_k = startup_k.map(|k| k + 1);
                let p = probes.startup.expect("a startup tick has a probe");
                if !eligible(&p, t) {
                    continue;
                }
                if ok {
                    started = true;
                    startup_k = None;
                    events.push((t, Event::StartupSucceeded));
                    if probes.readiness.is_none() {
                        ready = true;
                        events.push((t, Event::Ready));
                    } else {
                        manual.push(t);
                    }
                } else {
                    startup_fail += 1;
                    if startup_fail >= p.failure_threshold {
                        events.push((t, Event::Killed { by: Kind::Startup }));
                        return Some(t);
                    }
                }
            }
            1 | 2 => {
                if which == 1 {
                    manual.retain(|m| *m != t);
                } else {
                    readiness_k = readiness_k.map(|k| k + 1);
                }
                let p = probes.readiness.expect("a readiness run has a probe");
                if !started || !eligible(&p, t) {
                    continue;
                }
                if ok {
                    ready_ok += 1;
                    ready_fail = 0;
                    if !ready && ready_ok >= p.success_threshold {
                        ready = true;
                        events.push((t, Event::Ready));
                    }
                } else {
                    ready_fail += 1;
                    ready_ok = 0;
                    if ready && ready_fail >= p.failure_threshold {
                        ready = false;
                        events.push((t, Event::NotReady));
                    }
                }
            }
            _ => {
                liveness_k = liveness_k.map(|k| k + 1);
                let p = probes.liveness.expect("a liveness tick has a probe");
                if !started || !eligible(&p, t) {
                    continue;
                }
                if ok {
                    live_fail = 0;
                } else {
                    live_fail += 1;
                    if live_fail >= p.failure_threshold {
                        events.push((t, Event::Killed { by: Kind::Liveness }));
                        return Some(t);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// DeerFlow's probes: readiness 5 s delay / 5 s period, liveness 10 s / 10 s, no startup.
    fn deerflow() -> Probes {
        Probes {
            startup: None,
            readiness: Some(Probe::new(Some(5), Some(5), Some(3), None)),
            liveness: Some(Probe::new(Some(10), Some(10), Some(3), None)),
        }
    }

    /// The service's defaults: startup every second for 120 s, then readiness and liveness.
    fn fast() -> Probes {
        Probes {
            startup: Some(Probe::new(Some(0), Some(1), Some(120), None)),
            readiness: Some(Probe::new(Some(0), Some(5), Some(3), None)),
            liveness: Some(Probe::new(Some(0), Some(10), Some(3), None)),
        }
    }

    fn ready_at(events: &[(u64, Event)]) -> Option<u64> {
        events
            .iter()
            .find(|(_, e)| *e == Event::Ready)
            .map(|(t, _)| *t)
    }

    #[test]
    fn deerflows_probes_make_a_one_second_boot_wait_five() {
        assert_eq!(
            ready_at(&timeline(&deerflow(), 0, Some(1_000), 3)),
            Some(5_000)
        );
    }

    #[test]
    fn deerflows_probes_make_a_boot_just_past_five_wait_ten() {
        assert_eq!(
            ready_at(&timeline(&deerflow(), 0, Some(5_100), 3)),
            Some(10_000)
        );
    }

    #[test]
    fn a_pull_shifts_the_start_but_not_the_ticker() {
        // Started at 20 s (after the pull): ticks stay on the 5 s grid from admission, and the
        // first one at least 5 whole seconds after the start is at 25 s.
        assert_eq!(
            ready_at(&timeline(&deerflow(), 20_000, Some(2_000), 3)),
            Some(25_000)
        );
        // Started at 20.3 s: 25 s is only 4.7 s later, so 30 s.
        assert_eq!(
            ready_at(&timeline(&deerflow(), 20_300, Some(2_000), 3)),
            Some(30_000)
        );
    }

    #[test]
    fn a_startup_probe_makes_ready_follow_the_boot_within_a_period() {
        assert_eq!(ready_at(&timeline(&fast(), 0, Some(2_000), 3)), Some(2_000));
        assert_eq!(ready_at(&timeline(&fast(), 0, Some(2_300), 3)), Some(3_000));
        // After a pull that ends off the grid: the next whole-second tick after the boot.
        assert_eq!(
            ready_at(&timeline(&fast(), 20_300, Some(2_000), 3)),
            Some(23_000)
        );
        assert_eq!(ready_at(&timeline(&fast(), 0, Some(0), 3)), Some(0));
    }

    #[test]
    fn the_readiness_probe_waits_for_startup_then_runs_at_once() {
        let events = timeline(&fast(), 0, Some(7_500), 3);
        assert_eq!(
            events,
            vec![
                (0, Event::Started { restarts: 0 }),
                (8_000, Event::StartupSucceeded),
                (8_000, Event::Ready),
            ]
        );
    }

    #[test]
    fn success_threshold_counts_consecutive_successes() {
        let mut probes = fast();
        probes.readiness = Some(Probe::new(Some(0), Some(5), Some(3), Some(2)));
        // Manual run at 2 s (first success), the 5 s tick (second).
        assert_eq!(ready_at(&timeline(&probes, 0, Some(2_000), 3)), Some(5_000));
    }

    #[test]
    fn a_container_that_never_answers_is_killed_by_its_startup_probe_and_backs_off() {
        let events = timeline(&fast(), 0, None, 2);
        let kills: Vec<u64> = events
            .iter()
            .filter(|(_, e)| matches!(e, Event::Killed { by: Kind::Startup }))
            .map(|(t, _)| *t)
            .collect();
        // 120 failures at 0, 1, ..., 119 s; restarted at once (its first probe is the tick of
        // the restart), killed 120 probes later; then 10 s of back-off.
        assert_eq!(kills, vec![119_000, 238_000, 367_000]);
        assert!(events.contains(&(119_000, Event::Started { restarts: 1 })));
        assert!(events.contains(&(248_000, Event::Started { restarts: 2 })));
        assert_eq!(ready_at(&events), None);
    }

    #[test]
    fn without_a_startup_probe_liveness_kills_a_slow_boot() {
        // DeerFlow's liveness fails at 10, 20 and 30 s for a 35 s boot: killed at 30 s, again
        // and again, never Ready.
        let events = timeline(&deerflow(), 0, Some(35_000), 1);
        assert!(events.contains(&(30_000, Event::Killed { by: Kind::Liveness })));
        assert_eq!(ready_at(&events), None);
        // The startup probe gives the same boot its time.
        assert_eq!(
            ready_at(&timeline(&fast(), 0, Some(35_000), 1)),
            Some(35_000)
        );
    }

    #[test]
    fn a_container_without_probes_is_ready_when_it_starts() {
        assert_eq!(
            timeline(&Probes::default(), 1_500, Some(0), 3),
            vec![
                (1_500, Event::Started { restarts: 0 }),
                (1_500, Event::StartupSucceeded),
                (1_500, Event::Ready),
            ]
        );
    }

    #[test]
    fn back_off_doubles_to_five_minutes() {
        let backoffs: Vec<u64> = (1..=8).map(restart_backoff_ms).collect();
        assert_eq!(
            backoffs,
            vec![0, 10_000, 20_000, 40_000, 80_000, 160_000, 300_000, 300_000]
        );
    }
}
