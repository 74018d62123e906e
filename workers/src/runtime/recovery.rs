//! Recovery steps on a worker (stop, safety-snapshot, restore, rollback,
//! start, mount, unmount): each under the target's writer or provider lock,
//! never on a target this host holds frozen, and answered with where the
//! data now is.

use std::path::Path;

use recman_config::{ProviderConfig, WriterConfig};
use recman_core::worker;
use recman_events::clock;
use recman_events::wire::Command;
use recman_events::{RecoveryAction, TargetId, Until};
use recman_events::{SnapshotKind, Stage, StepDetail, StepError};
use tokio::time::Instant;

use super::Shared;
use crate::provider::{RecoveryJob, SnapshotJob};
use crate::writer::postgres::restore::{self, Replay};
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
        // A PostgreSQL target is recovered, not just copied back
        // (`writer/postgres/restore.rs`): checked before anything is
        // touched, replayed before it is started.
        let pg = match &local.cfg.writer {
            WriterConfig::Postgres(p) if p.data_directory.is_some() => Some(p),
            _ => None,
        };
        let replay = |beside: bool| Replay {
            target: t,
            point,
            until: args.action.until(),
            job: cmd.job,
            beside,
            end: step_end(cmd.thaw_deadline_ms),
        };
        let live = provider_live(&local.cfg.provider);
        let detail = match cmd.stage {
            Stage::Stop | Stage::Start => {
                let _g = local.writer_lock.lock().await;
                let mut info = String::new();
                if cmd.stage == Stage::Stop {
                    if let Some(p) = pg {
                        restore::plan(p, &replay(false))?;
                    } else if let Some(u) = args.action.until() {
                        return Err(no_replay(t, u));
                    }
                    local.writer.stop(&ctx).await?;
                } else {
                    if let (Some(p), true) = (pg, args.restored) {
                        let data = p.data_directory.clone().unwrap_or_default();
                        info = restore::recover(p, &data, &replay(false)).await?;
                    }
                    local.writer.start(&ctx).await?;
                }
                StepDetail::Recovered {
                    location: String::new(),
                    info,
                }
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
                let beside = matches!(args.action, RecoveryAction::To { .. });
                match (pg, beside) {
                    (Some(p), true) => {
                        // Everything checked before the provider writes PATH.
                        restore::plan(p, &replay(true))?;
                        let live = live.ok_or_else(|| no_live(t))?;
                        restore::data_under(p, live, Path::new("/"))?;
                        let at = local.provider.restore(req).await?;
                        let data = restore::data_under(p, live, Path::new(&at))?;
                        let info = restore::recover(p, &data, &replay(true)).await.map_err(|mut e| {
                            e.message = format!(
                                "{} (the restored files stay in {at} to be looked at: remove them before \
                                 restoring there again)",
                                e.message
                            );
                            e
                        })?;
                        StepDetail::Recovered { location: at, info }
                    }
                    (None, true) if args.action.until().is_some() => {
                        return Err(no_replay(t, args.action.until().unwrap_or(Until::Latest)))
                    }
                    _ => recovered(local.provider.restore(req).await?),
                }
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

/// The provider's live tree, which a restore brings back (`copy`: its
/// source, `btrfs`: its subvolume).
fn provider_live(p: &ProviderConfig) -> Option<&Path> {
    match p {
        ProviderConfig::Copy(c) => Some(&c.source),
        ProviderConfig::Btrfs(b) => Some(&b.subvolume),
        _ => None,
    }
}

fn no_live(t: &TargetId) -> StepError {
    StepError::new(
        "not_supported",
        format!(
            "target {t}: PostgreSQL recovery needs a provider whose snapshots are directory trees (copy, btrfs), \
             to find data_directory in the restored files"
        ),
        false,
    )
}

/// `--until` on a target without a database log to replay.
fn no_replay(t: &TargetId, u: Until) -> StepError {
    StepError::new(
        "not_supported",
        format!(
            "target {t}: --until {u} replays a PostgreSQL WAL archive: only the postgres writer with \
             data_directory set recovers (restore the point itself)"
        ),
        false,
    )
}

/// The step's own end: the command's deadline, or the writer's default.
fn step_end(deadline_ms: Option<u64>) -> Instant {
    let left = deadline_ms.map_or(recman_config::DEFAULT_PG_TIMEOUT, |d| {
        std::time::Duration::from_millis(d.saturating_sub(clock::now_ms()))
    });
    Instant::now() + left
}
