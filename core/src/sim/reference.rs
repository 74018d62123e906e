//! An independent fold of the event log, written apart from `evolve` and
//! sharing none of its code: how each job ended, its attempt, its snapshot,
//! and the catalog of restore points. `replay_exact` compares it with the
//! core's state, so a defect in `evolve` itself (which live state and replay
//! share) is caught too. The fold is incremental (`Reference::apply` at each
//! durable event); a job that ended, left the state and agreed once is kept
//! only as an id (`gone`): no later event can change what the fold says of
//! it, so comparing it again could find nothing new.

use std::collections::{BTreeMap, HashMap, HashSet};

use recman_events::{Event, EventBody, JobId, TargetId};

use crate::{JobState, State};

/// One job, as the log tells it.
#[derive(Debug, Default)]
struct RefJob {
    targets: Vec<TargetId>,
    attempt: u32,
    /// `completed`, `failed` or `cancelled` once it ended.
    end: Option<&'static str>,
    snapshot: Option<String>,
}

/// The fold's result.
#[derive(Debug, Default)]
pub(super) struct Reference {
    jobs: BTreeMap<JobId, RefJob>,
    /// Per target: (name, job) of restore points, oldest first.
    catalog: BTreeMap<TargetId, Vec<(String, JobId)>>,
    /// Recovery jobs: their target, and whether their safety snapshot is in.
    recoveries: BTreeMap<JobId, (TargetId, bool)>,
    /// Jobs that ended, left the state and agreed with it (`retire`).
    gone: HashSet<JobId>,
}

impl Reference {
    /// Folds one more event of the log in.
    pub(super) fn apply(&mut self, e: &Event) {
        let r = self;
        match &e.body {
            // A retired job ended: its entry existed, so this changes nothing.
            EventBody::Requested { targets, .. } if !r.gone.contains(&e.job) => {
                r.jobs.entry(e.job).or_insert_with(|| RefJob {
                    targets: targets.clone(),
                    ..RefJob::default()
                });
            }
            EventBody::AttemptStarted { attempt, .. } => {
                if let Some(j) = r.jobs.get_mut(&e.job).filter(|j| j.end.is_none()) {
                    j.attempt = *attempt;
                }
            }
            EventBody::Completed { snapshot, .. } => {
                if let Some(j) = r.jobs.get_mut(&e.job).filter(|j| j.end.is_none()) {
                    j.end = Some("completed");
                    j.snapshot = Some(snapshot.name.clone());
                    for t in &j.targets {
                        r.catalog
                            .entry(t.clone())
                            .or_default()
                            .push((snapshot.name.clone(), e.job));
                    }
                }
            }
            EventBody::Failed { .. } => {
                if let Some(j) = r.jobs.get_mut(&e.job).filter(|j| j.end.is_none()) {
                    j.end = Some("failed");
                }
            }
            EventBody::Cancelled => {
                if let Some(j) = r.jobs.get_mut(&e.job).filter(|j| j.end.is_none()) {
                    j.end = Some("cancelled");
                }
            }
            // A recovery's safety snapshot is a restore point of its own.
            EventBody::RecoveryRequested { target, .. } => {
                r.recoveries.insert(e.job, (target.clone(), false));
            }
            EventBody::RecoveryStepStarted { .. } => {}
            EventBody::RecoveryStepDone {
                stage: recman_events::Stage::SafetySnapshot,
                location,
                ..
            } => {
                if let Some((t, taken)) = r.recoveries.get_mut(&e.job).filter(|(_, taken)| !taken) {
                    *taken = true;
                    let c = r.catalog.entry(t.clone()).or_default();
                    if !c.iter().any(|(n, _)| n == location) {
                        c.push((location.clone(), e.job));
                    }
                }
            }
            EventBody::SnapshotDeleted { target, name } | EventBody::SnapshotVanished { target, name } => {
                if let Some(c) = r.catalog.get_mut(target) {
                    c.retain(|(n, j)| !(n == name && *j == e.job));
                    if c.is_empty() {
                        r.catalog.remove(target);
                    }
                }
            }
            _ => {}
        }
    }

    /// Whether `job` was retired: it ended, left the state and agreed.
    pub(super) fn is_gone(&self, job: &JobId) -> bool {
        self.gone.contains(job)
    }

    /// Keeps only the ids of jobs a `compare` found ended and out of the
    /// state: what the fold says of them can no longer change (every later
    /// event of an ended job is ignored), so `compare` needs only their count.
    pub(super) fn retire(&mut self, jobs: &[JobId]) {
        for j in jobs {
            if self.jobs.remove(j).is_some() {
                self.gone.insert(*j);
            }
        }
    }

    /// Compares with the core's state; on a difference, the job it concerns
    /// and what differs. A job that left the state (`state::Bounds`) must
    /// have ended, have asked for no pending delete, and have ended as `ended` (what
    /// the state said at its end) tells.
    pub(super) fn compare(
        &self,
        state: &State,
        ended: &HashMap<JobId, super::invariants::Ended>,
    ) -> Result<Vec<JobId>, (Option<JobId>, String)> {
        let kept = state.jobs.len() as u64 + state.retired;
        if (self.jobs.len() + self.gone.len()) as u64 != kept {
            return Err((
                None,
                format!(
                    "the log holds {} jobs, the state {} and {} that left",
                    self.jobs.len() + self.gone.len(),
                    state.jobs.len(),
                    state.retired
                ),
            ));
        }
        let pending: HashSet<JobId> = state.prunes.values().map(|p| p.requester).collect();
        // Retired jobs (`retire`) left the state for good, with no delete pending.
        if let Some(id) = state.jobs.keys().find(|id| self.gone.contains(id)) {
            return Err((Some(*id), "a job that left the state is back in it".into()));
        }
        if let Some(id) = pending.iter().find(|id| self.gone.contains(id)) {
            return Err((Some(*id), "job left the state with a delete pending".into()));
        }
        let mut out = Vec::new();
        for (id, r) in &self.jobs {
            let (job_state, attempt, snapshot_name) = match state.jobs.get(id) {
                Some(j) => (j.state, j.attempt, j.snapshot.as_ref().map(|s| s.name.clone())),
                None => {
                    if r.end.is_none() {
                        return Err((Some(*id), "unfinished job in the log, not in the state".into()));
                    }
                    if pending.contains(id) {
                        return Err((Some(*id), "job left the state with a delete pending".into()));
                    }
                    let Some(e) = ended.get(id) else {
                        return Err((Some(*id), "job left the state with no recorded end".into()));
                    };
                    out.push(*id);
                    (e.state, e.attempt, e.snapshot.clone())
                }
            };
            let end = match job_state {
                JobState::Completed => Some("completed"),
                JobState::Failed => Some("failed"),
                JobState::Cancelled => Some("cancelled"),
                _ => None,
            };
            let snapshot = (end == Some("completed")).then(|| snapshot_name.clone());
            let expected_snapshot = r.end.filter(|e| *e == "completed").map(|_| r.snapshot.clone());
            if end != r.end || attempt != r.attempt || snapshot != expected_snapshot {
                return Err((
                    Some(*id),
                    format!(
                        "the log says end {:?}, attempt {}, snapshot {:?}; the state {:?}, attempt {}, snapshot {:?}",
                        r.end, r.attempt, expected_snapshot, end, attempt, snapshot
                    ),
                ));
            }
        }
        let catalog: BTreeMap<TargetId, Vec<(String, JobId)>> = state
            .catalog
            .iter()
            .filter(|(_, c)| !c.is_empty())
            .map(|(t, c)| (t.clone(), c.iter().map(|e| (e.name.clone(), e.job)).collect()))
            .collect();
        if catalog != self.catalog {
            let t = self
                .catalog
                .keys()
                .chain(catalog.keys())
                .find(|t| self.catalog.get(*t) != catalog.get(*t));
            let job = t
                .and_then(|t| self.catalog.get(t).or(catalog.get(t)))
                .and_then(|c| c.last())
                .map(|(_, j)| *j);
            return Err((
                job,
                format!(
                    "the catalog of {} differs: the log says {:?}, the state {:?}",
                    t.map_or("?", |t| t.as_str()),
                    t.and_then(|t| self.catalog.get(t)),
                    t.and_then(|t| catalog.get(t))
                ),
            ));
        }
        Ok(out)
    }
}
