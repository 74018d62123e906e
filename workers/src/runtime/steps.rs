//! Step execution: a valid command for targets in the local config runs its
//! stage (freeze, snapshot, thaw, flush-logs, prune) target by target, under
//! that target's writer or provider lock, as the worker core's rules
//! (`recman_core::worker`) allow, and records what happened in its memory.

use std::sync::Arc;
use std::time::Instant;

use recman_core::worker::{self, Hold, Plan, ThawPlan, ThawedBy};
use recman_events::clock;
use recman_events::wire::Command;
use recman_events::{SnapshotInfo, Stage, StepDetail, StepError, TargetId};

use super::Shared;
use crate::provider::SnapshotJob;
use crate::watchdog::{self, Armed};

impl Shared {
    /// Runs the stage of `cmd` (every target is in the local config).
    pub(super) async fn run_step(self: &Arc<Self>, cmd: &Command) -> Result<StepDetail, StepError> {
        match cmd.stage {
            Stage::Freeze => self.freeze(cmd).await,
            Stage::Thaw => self.thaw(cmd).await,
            Stage::FlushLogs => self.flush(cmd).await,
            Stage::Snapshot => self.snapshot(cmd).await,
            Stage::Prune => self.prune(cmd).await,
            Stage::Queue => Err(StepError::new(
                "invalid_stage",
                "queue is not a worker step",
                false,
            )),
        }
    }

    async fn freeze(self: &Arc<Self>, cmd: &Command) -> Result<StepDetail, StepError> {
        let mut deadline_ms = u64::MAX;
        for (i, t) in cmd.targets.iter().enumerate() {
            match self.freeze_one(t, cmd).await {
                Ok(d) => deadline_ms = deadline_ms.min(d),
                Err(e) => {
                    // Do not leave part of a group frozen.
                    for done in &cmd.targets[..i] {
                        let _ = self.thaw_one(done, cmd).await;
                    }
                    return Err(e);
                }
            }
        }
        Ok(StepDetail::Frozen { deadline_ms })
    }

    /// Freezes `t` for the attempt of `cmd` unless the rules say otherwise;
    /// returns the watchdog deadline (Unix ms).
    async fn freeze_one(self: &Arc<Self>, t: &TargetId, cmd: &Command) -> Result<u64, StepError> {
        let local = self.local(t)?;
        let _g = local.writer_lock.lock().await;
        let key = (cmd.job, cmd.attempt);
        match worker::plan_freeze(&local.memory(), key, cmd.thaw_deadline_ms, clock::now_ms()) {
            Plan::Run => {}
            Plan::Answer(first) => return first,
            Plan::Refuse(e) => return Err(e),
        }
        if let Err(e) = local.writer.freeze(&Self::ctx(t, cmd)).await {
            local.memory().record_freeze(key, Err(e.clone()));
            return Err(e);
        }
        let (now_ms, now) = (clock::now_ms(), Instant::now());
        let (deadline_ms, at) = watchdog::deadline(now_ms, now, cmd.thaw_deadline_ms, local.cfg.freeze_limit);
        let hold = Hold {
            job: cmd.job,
            attempt: cmd.attempt,
            kind: cmd.kind,
            worker: self.id.clone(),
            frozen_at_ms: now_ms,
            deadline_ms,
        };
        local.memory().record_freeze(key, Ok(hold));
        self.arm(t, Armed { key, frozen_at: now }, at);
        Ok(deadline_ms)
    }

    async fn thaw(self: &Arc<Self>, cmd: &Command) -> Result<StepDetail, StepError> {
        let mut window = 0;
        let mut by_watchdog = false;
        let mut first_err = None;
        for t in &cmd.targets {
            match self.thaw_one(t, cmd).await {
                Ok((w, wd)) => {
                    window = window.max(w);
                    by_watchdog |= wd;
                }
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(StepDetail::Thawed {
                freeze_window_us: window,
                by_watchdog,
            }),
        }
    }

    /// Thaws `t` for the attempt of `cmd`: its own freeze, or (when this
    /// worker remembers none) whatever is frozen, since thaw is idempotent; a
    /// recorded no-op when another attempt's freeze holds it. Returns the
    /// freeze window in µs (0 when unknown) and whether the watchdog had
    /// ended this attempt's freeze already.
    pub(super) async fn thaw_one(
        self: &Arc<Self>,
        t: &TargetId,
        cmd: &Command,
    ) -> Result<(u64, bool), StepError> {
        let local = self.local(t)?;
        let _g = local.writer_lock.lock().await;
        let key = (cmd.job, cmd.attempt);
        let plan = worker::plan_thaw(&local.memory(), key);
        local.memory().record_thaw(key, ThawedBy::Command, &plan);
        let by_watchdog = plan.by_watchdog();
        match plan {
            ThawPlan::Other { holder, .. } => {
                tracing::info!(worker = %self.id, target = %t, job = %cmd.job, attempt = cmd.attempt, holder_job = %holder.0, holder_attempt = holder.1, "thaw of an attempt that does not hold the target: nothing thawed");
                Ok((0, by_watchdog))
            }
            ThawPlan::Unknown { .. } => {
                local.writer.thaw(&Self::ctx(t, cmd)).await?;
                Ok((0, by_watchdog))
            }
            ThawPlan::Own(hold) => {
                let armed = self.watchdogs.take(t);
                match local.writer.thaw(&Self::ctx(t, cmd)).await {
                    Ok(()) => Ok((armed.map(|a| a.window_us()).unwrap_or(0), by_watchdog)),
                    Err(e) => {
                        // Still frozen as far as we know: keep the watchdog on it.
                        let at = Instant::now()
                            + std::time::Duration::from_millis(
                                hold.deadline_ms.saturating_sub(clock::now_ms()),
                            );
                        let frozen_at = armed.map_or_else(Instant::now, |a| a.frozen_at);
                        local.memory().record_thaw_failed(hold);
                        self.arm(t, Armed { key, frozen_at }, at);
                        Err(e)
                    }
                }
            }
        }
    }

    async fn flush(&self, cmd: &Command) -> Result<StepDetail, StepError> {
        for t in &cmd.targets {
            let local = self.local(t)?;
            let _g = local.writer_lock.lock().await;
            local.writer.flush_logs(&Self::ctx(t, cmd)).await?;
        }
        Ok(StepDetail::Flushed)
    }

    async fn snapshot(&self, cmd: &Command) -> Result<StepDetail, StepError> {
        let name = cmd
            .snapshot_name
            .as_deref()
            .ok_or_else(|| StepError::new("invalid_command", "no snapshot_name", false))?;
        let mut infos: Vec<SnapshotInfo> = Vec::new();
        for t in &cmd.targets {
            let local = self.local(t)?;
            let _g = local.provider_lock.lock().await;
            if let Plan::Refuse(e) = worker::plan_snapshot(&local.memory(), t, name) {
                return Err(e);
            }
            let req = SnapshotJob {
                name,
                target: t,
                kind: cmd.kind,
                job: Some((cmd.job, cmd.attempt)),
            };
            infos.push(local.provider.snapshot_job(req).await?);
        }
        Ok(StepDetail::Snapshot(merge(name, infos)))
    }

    async fn prune(&self, cmd: &Command) -> Result<StepDetail, StepError> {
        let mut deleted: Vec<String> = Vec::new();
        let mut first_err: Option<StepError> = None;
        for t in &cmd.targets {
            let local = self.local(t)?;
            let _g = local.provider_lock.lock().await;
            for name in &cmd.prune {
                // Missing counts as deleted: a redelivered prune must say the same.
                // A failure (e.g. a snapshot with a child) does not stop the
                // others: one stuck snapshot must not block retention.
                match local.provider.delete(name, t).await {
                    Ok(_) => {
                        local.memory().record_pruned(name);
                        if !deleted.contains(name) {
                            deleted.push(name.clone());
                        }
                    }
                    Err(e) => {
                        first_err.get_or_insert(e);
                    }
                }
            }
        }
        match first_err {
            // Progress is reported (the engine records what is gone); the
            // stuck snapshot stays in the catalog and its error is reported
            // by the next prune that has nothing else to delete.
            Some(e) if deleted.is_empty() => Err(e),
            Some(e) => {
                tracing::warn!(worker = %self.id, job = %cmd.job, code = %e.code, message = %e.message, "a snapshot could not be pruned; the others were");
                Ok(StepDetail::Pruned { deleted })
            }
            None => Ok(StepDetail::Pruned { deleted }),
        }
    }
}

/// One snapshot info for a consistency group: locations joined, sizes added.
fn merge(name: &str, mut infos: Vec<SnapshotInfo>) -> SnapshotInfo {
    if infos.len() == 1 {
        return infos.remove(0);
    }
    SnapshotInfo {
        name: name.to_string(),
        provider: infos.first().map(|i| i.provider.clone()).unwrap_or_default(),
        location: infos
            .iter()
            .map(|i| i.location.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        size_bytes: infos.iter().map(|i| i.size_bytes).sum(),
        existed: !infos.is_empty() && infos.iter().all(|i| i.existed),
    }
}
