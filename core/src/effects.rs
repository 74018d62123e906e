//! `effects` and `recover_commands`: the commands to send once an event is durable,
//! and where to send them (a pool, or the worker that froze with the pool as fallback).

use recman_events::{Command, Event, EventBody, JobId, PoolName, Stage, TargetId, WorkerId, SCHEMA_VERSION};

use crate::decide::attempt_snapshot_name;
use crate::policy::CoreConfig;
use crate::state::{Job, JobState, State, StepStatus};

/// Where a command goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Destination {
    Pool(PoolName),
    /// The worker's own queue; the pool when that worker is gone.
    Worker {
        worker: WorkerId,
        fallback: PoolName,
    },
}

/// One command and its destination.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outgoing {
    pub to: Destination,
    pub command: Command,
}

/// Commands caused by `event`. Call it right after `evolve(state, event)` and
/// before the next event of the batch is folded in.
pub fn effects(state: &State, cfg: &CoreConfig, event: &Event) -> Vec<Outgoing> {
    if let Some(o) = crate::verify::effects(state, cfg, event) {
        return vec![o];
    }
    if let Some(o) = crate::reconcile::effects(state, cfg, event) {
        return vec![o];
    }
    if let Some(o) = crate::recovery::effects(state, cfg, event) {
        return vec![o];
    }
    let Some(job) = state.jobs.get(&event.job) else {
        return Vec::new();
    };
    match &event.body {
        EventBody::StageStarted { stage, attempt, .. } if *attempt == job.attempt => {
            stage_commands(job, cfg, *stage)
        }
        EventBody::StepFailed {
            stage: Stage::Thaw,
            target,
            attempt,
            ..
        }
        | EventBody::StepSucceeded {
            stage: Stage::Freeze,
            target,
            attempt,
            ..
        } if *attempt == job.attempt && job.state == JobState::Thawing => {
            // A thaw to try again, or a late Frozen report that names the worker.
            match job.index_of(target) {
                Some(i) if job.progress[i].thaw == StepStatus::Pending => {
                    thaw_command(job, cfg, i).into_iter().collect()
                }
                _ => Vec::new(),
            }
        }
        EventBody::PruneRequested { target, names, .. } => prune_command(state, cfg, job, target, names)
            .into_iter()
            .collect(),
        _ => Vec::new(),
    }
}

/// After replay (and after `Input::Start` decided what fell due): the
/// commands of every in-flight stage again (commands are idempotent), and
/// every delete still waiting for its outcome.
pub fn recover_commands(state: &State, cfg: &CoreConfig) -> Vec<Outgoing> {
    let mut out = Vec::new();
    for id in &state.active {
        let Some(job) = state.jobs.get(id) else { continue };
        let stage = match job.state {
            JobState::Freezing => Stage::Freeze,
            JobState::Snapshotting => Stage::Snapshot,
            JobState::Thawing => Stage::Thaw,
            JobState::FlushingLogs => Stage::FlushLogs,
            _ => continue,
        };
        out.extend(stage_commands(job, cfg, stage));
    }
    let mut by_requester: std::collections::BTreeMap<(JobId, TargetId), Vec<String>> = Default::default();
    for ((t, name), p) in &state.prunes {
        by_requester
            .entry((p.requester, t.clone()))
            .or_default()
            .push(name.clone());
    }
    for ((requester, t), names) in by_requester {
        if let Some(job) = state.jobs.get(&requester) {
            out.extend(prune_command(state, cfg, job, &t, &names));
        }
    }
    out.extend(crate::verify::recover(state, cfg));
    out.extend(crate::reconcile::recover(state, cfg));
    out.extend(crate::recovery::recover(state, cfg));
    out
}

fn base(job: &Job, cfg: &CoreConfig, stage: Stage, targets: Vec<TargetId>, message_id: String) -> Command {
    // Every target's fingerprint, or none (a config without them: not checked).
    let fingerprints = targets
        .iter()
        .map(|t| cfg.targets.get(t).and_then(|p| p.fingerprint.clone()))
        .collect::<Option<Vec<_>>>()
        .unwrap_or_default();
    Command {
        schema_version: SCHEMA_VERSION,
        message_id,
        job: job.id,
        attempt: job.attempt,
        stage,
        targets,
        kind: job.kind,
        snapshot_name: None,
        thaw_deadline_ms: None,
        prune: Vec::new(),
        fingerprints,
        recovery: None,
    }
}

fn stage_commands(job: &Job, cfg: &CoreConfig, stage: Stage) -> Vec<Outgoing> {
    let mut out = Vec::new();
    let pending = |i: usize| match stage {
        Stage::Freeze => job.progress[i].freeze == StepStatus::Pending,
        Stage::Thaw => job.progress[i].thaw == StepStatus::Pending,
        Stage::FlushLogs => job.progress[i].flush == StepStatus::Pending,
        _ => false,
    };
    match stage {
        Stage::Snapshot => {
            if job.snapshot_status != StepStatus::Pending {
                return out;
            }
            let Some(first) = job.targets.first() else {
                return out;
            };
            let Some(p) = cfg.targets.get(first) else {
                return out;
            };
            let mut c = base(
                job,
                cfg,
                stage,
                job.targets.clone(),
                Command::message_id_for(job.id, job.attempt, stage, first),
            );
            c.snapshot_name = Some(attempt_snapshot_name(job.id, job.attempt, cfg.mutation));
            // The provider's worker starts it only before the forced thaw.
            c.thaw_deadline_ms = job.thaw_by_ms;
            out.push(Outgoing {
                to: Destination::Pool(p.provider_pool.clone()),
                command: c,
            });
        }
        Stage::Thaw => {
            for i in 0..job.targets.len() {
                if pending(i) {
                    out.extend(thaw_command(job, cfg, i));
                }
            }
        }
        Stage::Freeze | Stage::FlushLogs => {
            for (i, t) in job.targets.iter().enumerate() {
                if !pending(i) {
                    continue;
                }
                // A target dropped from the config gets no command: its stage times out.
                let Some(p) = cfg.targets.get(t) else { continue };
                let mut c = base(
                    job,
                    cfg,
                    stage,
                    vec![t.clone()],
                    Command::message_id_for(job.id, job.attempt, stage, t),
                );
                if stage == Stage::Freeze {
                    c.thaw_deadline_ms = Some(job.watchdog_at_ms);
                }
                out.push(Outgoing {
                    to: Destination::Pool(p.writer_pool.clone()),
                    command: c,
                });
            }
        }
        Stage::Queue | Stage::Prune | Stage::Verify | Stage::Reconcile => {}
        // Recovery steps are `recovery`'s.
        Stage::Stop
        | Stage::SafetySnapshot
        | Stage::Restore
        | Stage::Rollback
        | Stage::Start
        | Stage::Mount
        | Stage::Unmount => {}
    }
    out
}

/// The thaw of target `i`, to the worker that froze it when known. Each try has
/// its own message id so a worker's dedupe does not swallow a retry after a failure.
/// Tries alternate between that worker's queue and its pool: a worker that is
/// gone (crashed, restarted under another id) never answers, and any worker of
/// the pool, on the same host, can thaw a filesystem; a session-bound writer
/// (PostgreSQL) ended with its worker anyway.
fn thaw_command(job: &Job, cfg: &CoreConfig, i: usize) -> Option<Outgoing> {
    let t = job.targets.get(i)?;
    let p = cfg.targets.get(t)?;
    let mut id = Command::message_id_for(job.id, job.attempt, Stage::Thaw, t);
    if job.thaw_tries > 0 {
        id.push_str(&format!("#{}", job.thaw_tries));
    }
    let c = base(job, cfg, Stage::Thaw, vec![t.clone()], id);
    let to = match &job.progress[i].frozen_by {
        Some(w) if job.thaw_tries % 2 == 0 => Destination::Worker {
            worker: w.clone(),
            fallback: p.writer_pool.clone(),
        },
        _ => Destination::Pool(p.writer_pool.clone()),
    };
    Some(Outgoing { to, command: c })
}

/// The delete of `names` of `target` that `job` asked for (`PruneRequested`),
/// to the target's provider pool. Each round of asking has its own message id.
fn prune_command(
    state: &State,
    cfg: &CoreConfig,
    job: &Job,
    target: &TargetId,
    names: &[String],
) -> Option<Outgoing> {
    let p = cfg.targets.get(target)?;
    let tries = names
        .iter()
        .filter_map(|n| state.prunes.get(&(target.clone(), n.clone())))
        .map(|p| p.tries)
        .max()
        .unwrap_or(0);
    let mut c = base(
        job,
        cfg,
        Stage::Prune,
        vec![target.clone()],
        format!(
            "{}/{}/{}",
            Command::message_id_for(job.id, job.attempt, Stage::Prune, target),
            names.first().map(String::as_str).unwrap_or(""),
            tries
        ),
    );
    c.prune = names.to_vec();
    Some(Outgoing {
        to: Destination::Pool(p.provider_pool.clone()),
        command: c,
    })
}
