//! Recovery steps on a worker (stop, safety-snapshot, restore, rollback,
//! start, mount, unmount): each under the target's writer or provider lock,
//! never on a target this host holds frozen, and answered with where the
//! data now is.

use recman_core::worker;
use recman_events::clock;
use recman_events::wire::Command;
use recman_events::{SnapshotKind, Stage, StepDetail, StepError};

use super::Shared;
use crate::provider::{RecoveryJob, SnapshotJob};
use crate::writer::StepCtx;

impl Shared {
    /// Runs recovery step `cmd` on its one target.
    pub(super) async fn recovery_step(&self, cmd: &Command) -> Result<StepDetail, StepError> {
        let invalid = |why: &str| StepError::new("invalid_command", format!("{} {why}", cmd.stage), false);
        let [t] = cmd.targets.as_slice() else {
            return Err(invalid("names one target"));
        };
        let Some(args) = cmd.recovery.as_ref() else {
            return Err(invalid("carries no recovery arguments"));
        };
        let Some(point) = cmd.snapshot_name.as_deref() else {
            return Err(invalid("names no snapshot"));
        };
        crate::provider::check_snapshot_name(point)?;
        let local = self.local(t)?;
        // The worker core's rules: the deadline, never under a freeze.
        let host = self.lock_state(t).await?;
        worker::plan_recovery(&host.memory, cmd.stage, cmd.thaw_deadline_ms, clock::now_ms())?;
        drop(host);
        let req = RecoveryJob {
            point,
            target: t,
            action: &args.action,
            safety: args.safety.as_deref(),
            location: args.location.as_deref(),
            job: cmd.job,
        };
        let ctx = StepCtx {
            target: t.clone(),
            job: cmd.job,
            attempt: cmd.attempt,
            kind: SnapshotKind::Copy,
        };
        let recovered = |location: String| StepDetail::Recovered {
            location,
            info: String::new(),
        };
        // One recovery step of the target at a time on this host, whichever
        // process runs it (a rollback waits for a restore still running).
        let _host = match cmd.stage {
            Stage::Stop | Stage::Start => None,
            _ => self
                .state
                .lock_recovery(t)
                .await
                .map_err(super::steps::state_error)?,
        };
        let detail = match cmd.stage {
            Stage::Stop | Stage::Start => {
                let _g = local.writer_lock.lock().await;
                if cmd.stage == Stage::Stop {
                    local.writer.stop(&ctx).await?;
                } else {
                    local.writer.start(&ctx).await?;
                }
                recovered(String::new())
            }
            Stage::SafetySnapshot => {
                let _g = local.provider_lock.lock().await;
                let info = local
                    .provider
                    .snapshot_job(SnapshotJob {
                        name: point,
                        target: t,
                        kind: SnapshotKind::Copy,
                        job: Some((cmd.job, cmd.attempt)),
                    })
                    .await?;
                StepDetail::Snapshot(info)
            }
            Stage::Restore => {
                let _g = local.provider_lock.lock().await;
                recovered(local.provider.restore(req).await?)
            }
            Stage::Rollback => {
                let _g = local.provider_lock.lock().await;
                recovered(local.provider.rollback(req).await?)
            }
            Stage::Mount => {
                let _g = local.provider_lock.lock().await;
                recovered(local.provider.mount(req).await?)
            }
            Stage::Unmount => {
                let _g = local.provider_lock.lock().await;
                local.provider.unmount(req).await?;
                recovered(args.location.clone().unwrap_or_default())
            }
            _ => return Err(invalid("is not a recovery step")),
        };
        tracing::info!(worker = %self.id, target = %t, job = %cmd.job, stage = %cmd.stage, point, "recovery step done");
        Ok(detail)
    }
}
