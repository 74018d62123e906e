//! What the notifier remembers from the log: the targets of live jobs (a
//! `failed` event names only its job), and per target the newest restore
//! point, the RPO state and the failures of the last 24 hours (for the
//! daily summary). Folded from the whole log at start, then kept up to date;
//! bounded by the live jobs and the targets.

use std::collections::{BTreeMap, HashMap, VecDeque};

use recman_events::{EventBody, JobId, StoredEvent, TargetId};

use crate::message::TargetReport;
use crate::time::rfc3339;

const DAY_MS: u64 = 86_400_000;
/// Failures remembered per target (a summary counts those of the last 24 h).
const MAX_FAILURES: usize = 1000;

#[derive(Clone, Debug, Default)]
struct TargetStatus {
    last_good_ms: Option<u64>,
    last_good_name: Option<String>,
    rpo_ms: u64,
    breached: bool,
    /// (at_ms, reason), oldest first.
    failures: VecDeque<(u64, String)>,
}

/// The notifier's projection of the log.
#[derive(Debug, Default)]
pub struct Tracker {
    jobs: HashMap<JobId, Vec<TargetId>>,
    targets: BTreeMap<TargetId, TargetStatus>,
}

impl Tracker {
    /// A tracker that reports on `targets` (the config's), with their RPO.
    pub fn new(targets: impl IntoIterator<Item = (TargetId, Option<u64>)>) -> Tracker {
        Tracker {
            jobs: HashMap::new(),
            targets: targets
                .into_iter()
                .map(|(t, rpo)| {
                    (
                        t,
                        TargetStatus {
                            rpo_ms: rpo.unwrap_or(0),
                            ..TargetStatus::default()
                        },
                    )
                })
                .collect(),
        }
    }

    /// Folds `e` in; returns the targets it concerns.
    pub fn apply(&mut self, e: &StoredEvent) -> Vec<TargetId> {
        let ev = &e.event;
        let targets = match &ev.body {
            EventBody::Requested { targets, .. } => {
                self.jobs.insert(ev.job, targets.clone());
                targets.clone()
            }
            EventBody::StepSucceeded { target, .. }
            | EventBody::StepFailed { target, .. }
            | EventBody::WatchdogThawed { target, .. }
            | EventBody::SnapshotDeleted { target, .. }
            | EventBody::SnapshotVanished { target, .. }
            | EventBody::SnapshotUnknown { target, .. }
            | EventBody::Reconciled { target, .. }
            | EventBody::ReconcileFailed { target, .. }
            | EventBody::LateSnapshot { target, .. }
            | EventBody::PruneRequested { target, .. }
            | EventBody::PruneFailed { target, .. }
            | EventBody::RpoChanged { target, .. }
            | EventBody::RpoBreached { target, .. }
            | EventBody::RpoRestored { target, .. } => vec![target.clone()],
            _ => self.jobs.get(&ev.job).cloned().unwrap_or_default(),
        };
        match &ev.body {
            EventBody::Completed { snapshot, .. } => {
                for t in &targets {
                    let s = self.targets.entry(t.clone()).or_default();
                    s.last_good_ms = Some(ev.at_ms);
                    s.last_good_name = Some(snapshot.name.clone());
                }
            }
            EventBody::Failed { reason, .. } => {
                for t in &targets {
                    let s = self.targets.entry(t.clone()).or_default();
                    s.failures.push_back((ev.at_ms, reason.clone()));
                    while s.failures.len() > MAX_FAILURES
                        || s.failures.front().is_some_and(|(at, _)| at + DAY_MS < ev.at_ms)
                    {
                        s.failures.pop_front();
                    }
                }
            }
            EventBody::RpoChanged { target, rpo_ms } => {
                let s = self.targets.entry(target.clone()).or_default();
                s.rpo_ms = *rpo_ms;
                if *rpo_ms == 0 {
                    s.breached = false;
                }
            }
            EventBody::RpoBreached { target, .. } => {
                self.targets.entry(target.clone()).or_default().breached = true;
            }
            EventBody::RpoRestored { target, .. } => {
                self.targets.entry(target.clone()).or_default().breached = false;
            }
            _ => {}
        }
        if ev.body.is_terminal() {
            self.jobs.remove(&ev.job);
        }
        targets
    }

    /// Jobs whose targets are remembered (the live ones).
    pub fn live_jobs(&self) -> usize {
        self.jobs.len()
    }

    /// Per target, as of `now_ms`.
    pub fn report(&self, now_ms: u64) -> Vec<TargetReport> {
        self.targets
            .iter()
            .map(|(t, s)| {
                let recent: Vec<&(u64, String)> = s
                    .failures
                    .iter()
                    .filter(|(at, _)| at + DAY_MS >= now_ms)
                    .collect();
                TargetReport {
                    target: t.clone(),
                    last_good_at: s.last_good_ms.map(rfc3339),
                    last_good_snapshot: s.last_good_name.clone(),
                    rpo: match (s.rpo_ms, s.breached) {
                        (0, _) => "none",
                        (_, true) => "breached",
                        (_, false) => "ok",
                    }
                    .into(),
                    rpo_ms: (s.rpo_ms > 0).then_some(s.rpo_ms),
                    failures_24h: recent.len() as u32,
                    last_failure: recent.last().map(|(at, r)| format!("{} {r}", rfc3339(*at))),
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use recman_events::{Event, SnapshotInfo, SnapshotKind};

    fn ev(seq: u64, at_ms: u64, job: JobId, body: EventBody) -> StoredEvent {
        StoredEvent {
            seq,
            event: Event {
                at_ms,
                job,
                body,
                by: String::new(),
            },
        }
    }

    #[test]
    fn a_failed_job_is_charged_to_its_targets_and_forgotten() {
        let job: JobId = "01930000-0000-7000-8000-000000000001".parse().unwrap();
        let (a, b) = (TargetId::from("a"), TargetId::from("b"));
        let mut t = Tracker::new([(a.clone(), Some(3_600_000)), (b.clone(), None)]);
        let req = EventBody::Requested {
            request_id: "r".into(),
            targets: vec![a.clone(), b.clone()],
            kind: SnapshotKind::Full,
            origin: "cli".into(),
        };
        assert_eq!(t.apply(&ev(1, 1000, job, req)), vec![a.clone(), b.clone()]);
        let failed = EventBody::Failed {
            attempt: 1,
            reason: "boom".into(),
        };
        assert_eq!(t.apply(&ev(2, 2000, job, failed)), vec![a.clone(), b.clone()]);
        assert_eq!(t.live_jobs(), 0);
        let r = t.report(3000);
        assert_eq!(r[0].failures_24h, 1);
        assert_eq!(r[0].rpo, "ok");
        assert_eq!(r[1].rpo, "none");
        assert!(r[0].last_failure.as_deref().unwrap().ends_with("boom"));
        // A day later, the failure no longer counts.
        assert_eq!(t.report(2000 + DAY_MS + 1)[0].failures_24h, 0);
    }

    #[test]
    fn completed_and_rpo_events_move_the_report() {
        let job: JobId = "01930000-0000-7000-8000-000000000002".parse().unwrap();
        let a = TargetId::from("a");
        let mut t = Tracker::new([(a.clone(), None)]);
        t.apply(&ev(
            1,
            10,
            JobId::NONE,
            EventBody::RpoChanged {
                target: a.clone(),
                rpo_ms: 60_000,
            },
        ));
        t.apply(&ev(
            2,
            20,
            JobId::NONE,
            EventBody::RpoBreached {
                target: a.clone(),
                rpo_ms: 60_000,
                last_good_ms: 0,
            },
        ));
        assert_eq!(t.report(30)[0].rpo, "breached");
        t.apply(&ev(
            3,
            40,
            job,
            EventBody::Requested {
                request_id: "r".into(),
                targets: vec![a.clone()],
                kind: SnapshotKind::Full,
                origin: "cli".into(),
            },
        ));
        t.apply(&ev(
            4,
            50,
            job,
            EventBody::Completed {
                attempt: 1,
                snapshot: SnapshotInfo {
                    name: "rm-x-a1".into(),
                    provider: "copy".into(),
                    location: "/s".into(),
                    size_bytes: None,
                    existed: false,
                    array_expiry: None,
                },
                freeze_window_us: 1,
            },
        ));
        t.apply(&ev(
            5,
            50,
            job,
            EventBody::RpoRestored {
                target: a.clone(),
                rpo_ms: 60_000,
                last_good_ms: 50,
            },
        ));
        let r = &t.report(60)[0];
        assert_eq!(
            (r.rpo.as_str(), r.last_good_snapshot.as_deref()),
            ("ok", Some("rm-x-a1"))
        );
    }
}
