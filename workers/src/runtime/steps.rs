//! Step execution: a valid command for targets in the local config runs its
//! stage (freeze, snapshot, thaw, flush-logs, prune, reconcile) target by target, under
//! that target's writer or provider lock, as the worker core's rules
//! (`recman_core::worker`) allow, and records what happened in the host's
//! freeze state (locked across processes from plan to record).

use std::sync::Arc;
use std::time::{Duration, Instant};

use recman_core::worker::{self, Hold, Plan, Recent, SnapshotPlan, ThawPlan, ThawedBy};
use recman_events::clock;
use recman_events::wire::Command;
use recman_events::{ArrayExpiry, PruneFailure, SnapshotInfo, Stage, StepDetail, StepError, TargetId};

use super::hoststate::{Locked, StateError};
use super::Shared;
use crate::provider::SnapshotJob;
use crate::watchdog::{self, Armed};

/// Targets a freeze left locked, their outcome changed in memory but not
/// yet written: written once the step's report is published (or could not
/// be), so the write is not inside the freeze window.
#[derive(Default)]
pub(super) struct AfterReport(Vec<(TargetId, Locked)>);

/// The longest a report's publish may keep a target's lock before the
/// outcome is written anyway: the watchdog's thaw needs the lock.
const AFTER_REPORT_WAIT: Duration = Duration::from_millis(100);

impl AfterReport {
    pub(super) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// How long the report may take before the outcome is written without
    /// it: [`AFTER_REPORT_WAIT`], and never past a watchdog's deadline (a
    /// broker that does not answer must not keep an application frozen).
    pub(super) fn wait(&self, now_ms: u64) -> Duration {
        self.0
            .iter()
            .filter_map(|(_, l)| l.memory.hold().map(|h| h.deadline_ms))
            .map(|d| Duration::from_millis(d.saturating_sub(now_ms)))
            .fold(AFTER_REPORT_WAIT, Duration::min)
    }
}

impl Shared {
    /// Runs the stage of `cmd` (every target is in the local config).
    /// A freeze leaves in `after` the targets whose outcome is recorded
    /// once the report is out (`Shared::record_after_report`).
    pub(super) async fn run_step(
        self: &Arc<Self>,
        cmd: &Command,
        after: &mut AfterReport,
    ) -> Result<StepDetail, StepError> {
        match cmd.stage {
            Stage::Freeze => self.freeze(cmd, after).await,
            Stage::Thaw => self.thaw(cmd).await,
            Stage::FlushLogs => self.flush(cmd).await,
            Stage::Snapshot => self.snapshot(cmd).await,
            Stage::Prune => self.prune(cmd).await,
            Stage::Verify => self.verify(cmd).await,
            Stage::Reconcile => self.list(cmd).await,
            Stage::Stop
            | Stage::SafetySnapshot
            | Stage::Restore
            | Stage::Rollback
            | Stage::Start
            | Stage::Mount
            | Stage::Unmount => self.recovery_step(cmd).await,
            Stage::Queue => Err(StepError::new(
                "invalid_stage",
                "queue is not a worker step",
                false,
            )),
        }
    }

    async fn freeze(
        self: &Arc<Self>,
        cmd: &Command,
        after: &mut AfterReport,
    ) -> Result<StepDetail, StepError> {
        let mut deadline_ms = u64::MAX;
        let last = cmd.targets.len().saturating_sub(1);
        for (i, t) in cmd.targets.iter().enumerate() {
            // Only the last target's outcome waits for the report: a step
            // never holds one target's lock while it takes another's.
            let defer = (i == last).then_some(&mut *after);
            match self.freeze_one(t, cmd, defer).await {
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
    async fn freeze_one(
        self: &Arc<Self>,
        t: &TargetId,
        cmd: &Command,
        after: Option<&mut AfterReport>,
    ) -> Result<u64, StepError> {
        let local = self.local(t)?;
        let _g = local.writer_lock.lock().await;
        // Until the outcome is recorded, no other process of the host plans
        // a freeze or a thaw of this target.
        let mut host = self.lock_state(t).await?;
        self.adopt(t, &mut host).await;
        let key = (cmd.job, cmd.attempt);
        match worker::plan_freeze(&host.memory, key, cmd.thaw_deadline_ms, clock::now_ms()) {
            Plan::Run => {}
            Plan::Answer(first) => return first,
            Plan::Refuse(e) => return Err(e),
        }
        // Held (durably) and watched before the writer is called: a freeze
        // that fails or times out may have landed (issue 12 item 1).
        let (now_ms, now) = (clock::now_ms(), Instant::now());
        let (deadline_ms, at) = watchdog::deadline(now_ms, now, cmd.thaw_deadline_ms, local.cfg.freeze_limit);
        host.memory.record_freeze_start(Hold {
            job: cmd.job,
            attempt: cmd.attempt,
            kind: cmd.kind,
            process: self.process().clone(),
            frozen_at_ms: now_ms,
            deadline_ms,
        });
        self.save_state(&host).await?;
        self.arm(t, Armed { key, frozen_at: now }, at);
        let result = local
            .writer
            .freeze(&Self::ctx(t, cmd))
            .await
            .map(|()| deadline_ms);
        if result.is_ok() {
            // The window starts when the freeze returned, as in the host state.
            self.watchdogs.frozen(t, key, Instant::now());
        }
        host.memory.record_freeze(key, result.clone(), clock::now_ms());
        if let (Ok(_), Some(after)) = (&result, after) {
            // Written after the report is out, still under the lock: the
            // frozen application does not wait for it. Until then (and for
            // good if this process dies first) the hold, already durable,
            // answers for it: a redelivered freeze gets its deadline, a
            // restart thaws it (the simulator's unrecorded outcomes).
            after.0.push((t.clone(), host));
            return result;
        }
        self.record_outcome(t, &host).await;
        if let Err(e) = &result {
            if e.code == worker::NOT_LANDED {
                self.watchdogs.take_if(t, key);
            }
        }
        result
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
        let mut host = self.lock_state(t).await?;
        self.adopt(t, &mut host).await;
        let key = (cmd.job, cmd.attempt);
        let plan = worker::plan_thaw(&host.memory, key);
        let armed = match &plan {
            ThawPlan::Own(_) => self.watchdogs.take(t),
            _ => None,
        };
        let (now_ms, window) = self.window_now(armed.as_ref(), key, &plan);
        let by_watchdog = plan.by_watchdog();
        if !matches!(plan, ThawPlan::Own(_)) {
            // Nothing of this attempt is held: nothing to release first.
            host.memory
                .record_thaw(key, ThawedBy::Command, window, &plan, now_ms);
            self.record_thaw_state(t, &host).await;
        }
        match &plan {
            ThawPlan::Other { holder, .. } => {
                tracing::info!(worker = %self.id, target = %t, job = %cmd.job, attempt = cmd.attempt, holder_job = %holder.0, holder_attempt = holder.1, "thaw of an attempt that does not hold the target: nothing thawed");
                Ok((window, by_watchdog))
            }
            ThawPlan::Unknown { .. } => {
                local.writer.thaw(&Self::ctx(t, cmd)).await?;
                Ok((window, by_watchdog))
            }
            ThawPlan::Own(hold) => {
                // The hold is released in the host state only once the
                // writer's thaw returned: a process that dies in the middle
                // leaves it held, so another process adopts it and thaws
                // again (idempotent), and the window it records is not the
                // one of a thaw that never happened.
                match local.writer.thaw(&Self::ctx(t, cmd)).await {
                    Ok(()) => {
                        // The window ends when the writer's thaw returned.
                        let (now_ms, window) = self.window_now(armed.as_ref(), key, &plan);
                        host.memory
                            .record_thaw(key, ThawedBy::Command, window, &plan, now_ms);
                        self.record_thaw_state(t, &host).await;
                        Ok((window, by_watchdog))
                    }
                    Err(e) => {
                        // Still frozen as far as we know: keep the watchdog on
                        // it, its window still counted from the freeze.
                        let now = Instant::now();
                        let at = now
                            + std::time::Duration::from_millis(
                                hold.deadline_ms.saturating_sub(clock::now_ms()),
                            );
                        let frozen_at = armed.map(|a| a.frozen_at).unwrap_or_else(|| {
                            now.checked_sub(std::time::Duration::from_millis(
                                clock::now_ms().saturating_sub(hold.frozen_at_ms),
                            ))
                            .unwrap_or(now)
                        });
                        // The hold was never released: this process's
                        // watchdog is the one that thaws it from now on.
                        let mut hold = hold.clone();
                        hold.process = self.process().clone();
                        host.memory.record_thaw_failed(hold);
                        host.memory.record_adopt(key, self.process().clone());
                        let _ = self.save_state(&host).await;
                        self.arm(t, Armed { key, frozen_at }, at);
                        Err(e)
                    }
                }
            }
        }
    }

    /// Saves a recorded thaw; a failure is logged (a hold left in the state
    /// is thawed again, idempotent, by a watchdog, never a freeze of another
    /// attempt).
    async fn record_thaw_state(&self, t: &TargetId, host: &Locked) {
        if let Err(e) = self.save_state(host).await {
            tracing::warn!(worker = %self.id, target = %t, code = %e.code, message = %e.message, "the thaw was not recorded");
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
            let pruned = self.lock_pruned().contains(name);
            // What the storage holds under the name (a redelivery after a
            // crash finds its own; another job's is never adopted).
            let existing = local.provider.lookup(name, t).await?;
            let plan = self
                .state
                .peek(t, |host| {
                    worker::plan_snapshot(
                        host,
                        pruned,
                        t,
                        name,
                        (cmd.job, cmd.attempt),
                        &existing,
                        cmd.thaw_deadline_ms,
                        clock::now_ms(),
                        None,
                    )
                })
                .await
                .map_err(state_error)?;
            if let SnapshotPlan::Refuse(e) = plan {
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

    /// Deletes the names of `cmd`; each that cannot be deleted is reported
    /// with its error (`failed`), the others still are (one stuck snapshot,
    /// e.g. a 3PAR copy with a child, must not block retention). A name not
    /// there counts as deleted: a redelivered prune says the same.
    /// Verifies the snapshot of `cmd` (`crate::verify`), stopped at the
    /// command's deadline; one verification of a target at a time here.
    async fn verify(&self, cmd: &Command) -> Result<StepDetail, StepError> {
        let Some(t) = cmd.targets.first() else {
            return Err(StepError::new("invalid_command", "verify names no target", false));
        };
        let local = self.local(t)?;
        let Some(v) = local.cfg.verify.as_ref() else {
            return Err(StepError::new(
                "verify_not_configured",
                format!("{t} has no [target.verify] in this worker's config"),
                false,
            ));
        };
        let Some(name) = cmd.snapshot_name.as_deref() else {
            return Err(StepError::new(
                "invalid_command",
                "verify names no snapshot",
                false,
            ));
        };
        let _g = local.verify_lock.lock().await;
        let now = clock::now_ms();
        let deadline = cmd.thaw_deadline_ms.unwrap_or(u64::MAX);
        if now >= deadline {
            return Err(StepError::new(
                "deadline_passed",
                format!("the verification of {name} was due to end at {deadline} ms: not started"),
                false,
            ));
        }
        let budget = std::time::Duration::from_millis(deadline - now).min(v.timeout);
        let checked = crate::verify::verify(&local.cfg, v, name, budget).await?;
        Ok(StepDetail::Verified { checked })
    }

    async fn prune(&self, cmd: &Command) -> Result<StepDetail, StepError> {
        let mut deleted: Vec<String> = Vec::new();
        let mut failed: Vec<PruneFailure> = Vec::new();
        for t in &cmd.targets {
            let local = self.local(t)?;
            let _g = local.provider_lock.lock().await;
            let mut gone: Vec<String> = Vec::new();
            for name in &cmd.prune {
                match local.provider.delete(name, t).await {
                    Ok(_) => {
                        self.lock_pruned().insert_first(name.clone(), ());
                        gone.push(name.clone());
                        if !deleted.contains(name) {
                            deleted.push(name.clone());
                        }
                    }
                    Err(error) => {
                        tracing::warn!(worker = %self.id, job = %cmd.job, target = %t, snapshot = %name, code = %error.code, message = %error.message, "a snapshot could not be pruned");
                        failed.push(PruneFailure {
                            name: name.clone(),
                            error,
                        });
                    }
                }
            }
            // What the writer keeps beside the snapshots goes with them.
            let listed = local.provider.list(t).await.ok();
            if let Err(e) = local.writer.after_prune(&gone, listed.as_deref()).await {
                tracing::warn!(worker = %self.id, job = %cmd.job, target = %t, code = %e.code, message = %e.message, "the writer's files of pruned snapshots could not be pruned");
            }
        }
        Ok(StepDetail::Pruned { deleted, failed })
    }

    /// A reconcile: the names of the snapshots the target's provider holds
    /// (`Provider::list`, recman's and any other under its place), under
    /// the provider lock so no snapshot or delete of this process is half
    /// done. The engine compares them with its catalog.
    async fn list(&self, cmd: &Command) -> Result<StepDetail, StepError> {
        let Some(t) = cmd.targets.first() else {
            return Err(StepError::new(
                "invalid_command",
                "a reconcile names no target",
                false,
            ));
        };
        let local = self.local(t)?;
        // `none` takes nothing: its empty list would make every restore
        // point of the catalog vanish.
        if local.provider.kind() == "none" {
            return Err(StepError::new(
                "not_supported",
                format!("target {t}: the none provider keeps no snapshots to list"),
                false,
            ));
        }
        let _g = local.provider_lock.lock().await;
        let names = local.provider.list(t).await?;
        tracing::info!(worker = %self.id, target = %t, run = cmd.attempt, listed = names.len(), "reconcile: listed the provider's snapshots");
        Ok(StepDetail::Listed { names })
    }

    /// Writes a freeze's outcome (its failure is logged: the hold answers).
    async fn record_outcome(&self, t: &TargetId, host: &Locked) {
        if let Err(e) = self.save_state(host).await {
            // The hold is recorded: a redelivery still gets this attempt's deadline.
            tracing::warn!(worker = %self.id, target = %t, code = %e.code, message = %e.message, "the freeze's outcome was not recorded");
        }
    }

    /// Records what a step left for after its report (see [`AfterReport`]),
    /// and lets the targets' locks go.
    pub(super) async fn record_after_report(&self, after: AfterReport) {
        for (t, host) in after.0 {
            self.record_outcome(&t, &host).await;
        }
    }

    /// Locks `t`'s host freeze state for this process.
    pub(super) async fn lock_state(&self, t: &TargetId) -> Result<Locked, StepError> {
        self.state.lock(t).await.map_err(state_error)
    }

    /// Writes the locked state back (durably) before anything else happens.
    pub(super) async fn save_state(&self, l: &Locked) -> Result<(), StepError> {
        self.state.save(l).await.map_err(state_error)
    }

    fn lock_pruned(&self) -> std::sync::MutexGuard<'_, Recent<()>> {
        self.pruned.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A host state that cannot be read or written: the step is not run and is
/// tried again.
pub(super) fn state_error(e: StateError) -> StepError {
    StepError::new("host_state", e.to_string(), true)
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
        array_expiry: infos
            .iter()
            .filter_map(|i| i.array_expiry)
            .reduce(ArrayExpiry::combine),
    }
}
