//! Writers quiesce an application: freeze (flush and suspend writes), thaw
//! (resume), flush-logs (after a full backup). Built from the target's config.

mod exec;
mod fsfreeze;
mod none;
pub mod postgres;

use std::sync::Arc;

use recman_events::bus::BoxFuture;
use recman_events::{JobId, SnapshotKind, StepError, TargetId};

pub use exec::ExecWriter;
pub use fsfreeze::{check_mountpoint, unescape as unescape_mountinfo, FsFreezeWriter};
pub use none::NoneWriter;
pub use postgres::PostgresWriter;

use recman_config::WriterConfig;

/// What a writer is told about the step it runs (passed to hooks as
/// `RECMAN_TARGET`, `RECMAN_JOB`, `RECMAN_ATTEMPT`, `RECMAN_KIND`, `RECMAN_STAGE`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StepCtx {
    pub target: TargetId,
    pub job: JobId,
    pub attempt: u32,
    pub kind: SnapshotKind,
}

/// Object-safe: the runtime holds `Arc<dyn Writer>` per target. Every method
/// must be safe to call again (commands are redelivered; thaw is idempotent).
pub trait Writer: Send + Sync {
    /// `none`, `exec`, …
    fn kind(&self) -> &'static str;
    fn freeze<'a>(&'a self, ctx: &'a StepCtx) -> BoxFuture<'a, Result<(), StepError>>;
    fn thaw<'a>(&'a self, ctx: &'a StepCtx) -> BoxFuture<'a, Result<(), StepError>>;
    fn flush_logs<'a>(&'a self, ctx: &'a StepCtx) -> BoxFuture<'a, Result<(), StepError>>;
    /// Run when the worker starts, before it takes any command, for a target
    /// that no worker process of the host holds frozen (the host's freeze
    /// state says so): thaw it if it is frozen all the same (a freeze the
    /// state does not know of). `Ok(None)`: nothing was frozen. The freezes
    /// the state records are taken over and thawed by the runtime, whatever
    /// the writer.
    fn startup_thaw(&self) -> BoxFuture<'_, Result<Option<StartupThaw>, StepError>> {
        Box::pin(async { Ok(None) })
    }
    /// After the target's provider deleted the snapshots `deleted` (retention):
    /// remove what the writer kept beside them (the `postgres` writer's labels
    /// and, with `prune_wal`, archived WAL). `listed`: the snapshots the
    /// provider still holds, when it can list them.
    fn after_prune<'a>(
        &'a self,
        deleted: &'a [String],
        listed: Option<&'a [String]>,
    ) -> BoxFuture<'a, Result<(), StepError>> {
        let _ = (deleted, listed);
        Box::pin(async { Ok(()) })
    }
    /// Before an in-place restore: stop (or fence) the application so
    /// nothing writes while its data is reverted. Idempotent (stopping a
    /// stopped application succeeds). Writers that cannot stop their
    /// application refuse (`not_supported`), so no in-place restore runs
    /// under a live application.
    fn stop<'a>(&'a self, ctx: &'a StepCtx) -> BoxFuture<'a, Result<(), StepError>> {
        Box::pin(async move { Err(not_supported(self.kind(), "stop the application", &ctx.target)) })
    }
    /// After an in-place restore (or its rollback): start the application
    /// again. Idempotent.
    fn start<'a>(&'a self, ctx: &'a StepCtx) -> BoxFuture<'a, Result<(), StepError>> {
        Box::pin(async move { Err(not_supported(self.kind(), "start the application", &ctx.target)) })
    }
}

/// Runs hook `argv` for `stage` of `ctx` (no shell; the step in `RECMAN_*`).
pub(crate) async fn run_hook(
    argv: &[String],
    stage: &str,
    ctx: &StepCtx,
    timeout: std::time::Duration,
) -> Result<(), StepError> {
    let env = [
        ("RECMAN_TARGET", ctx.target.to_string()),
        ("RECMAN_JOB", ctx.job.to_string()),
        ("RECMAN_ATTEMPT", ctx.attempt.to_string()),
        ("RECMAN_KIND", ctx.kind.as_str().to_string()),
        ("RECMAN_STAGE", stage.to_string()),
    ];
    crate::exec::run(argv, &env, timeout).await.map(|_| ())
}

/// A recovery hook (`stop`, `start`) when configured, else the refusal.
/// `start` without a hook succeeds when there is no `stop` hook either:
/// the application was never stopped (the core sends `start` after a
/// refused `stop` too), so the job ends with the stop's refusal.
pub(crate) async fn recovery_hook(
    kind: &str,
    hooks: (Option<&[String]>, Option<&[String]>),
    stage: &str,
    ctx: &StepCtx,
    timeout: std::time::Duration,
) -> Result<(), StepError> {
    let (stop, start) = hooks;
    let argv = if stage == "stop" { stop } else { start };
    match argv {
        Some(argv) => run_hook(argv, stage, ctx, timeout).await,
        None if stage == "start" && stop.is_none() => Ok(()),
        None => Err(StepError::new(
            "not_supported",
            format!(
                "target {}: the {kind} writer has no `{stage}` command configured, so it cannot {stage}                  the application for an in-place restore (add {stage} = [\"/path/to/prog\", …] to                  [target.writer], or restore with --to)",
                ctx.target
            ),
            false,
        )),
    }
}

/// The refusal of a step a writer or provider cannot do.
pub fn not_supported(kind: &str, what: &str, target: &TargetId) -> StepError {
    StepError::new(
        "not_supported",
        format!("target {target}: the {kind} writer cannot {what} (see README, \"Restore\")"),
        false,
    )
}

/// A freeze found and thawed on worker start that no job is known for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StartupThaw {
    /// What was thawed (a mountpoint).
    pub what: String,
}

/// The writer a target's config asks for.
pub fn from_config(target: &TargetId, cfg: &WriterConfig) -> Arc<dyn Writer> {
    match cfg {
        WriterConfig::None => Arc::new(NoneWriter),
        WriterConfig::Exec(e) => Arc::new(ExecWriter::new(e.clone())),
        WriterConfig::FsFreeze(f) => Arc::new(FsFreezeWriter::new(target.as_str(), f.clone())),
        WriterConfig::Postgres(p) => Arc::new(PostgresWriter::new(target.as_str(), p.clone())),
    }
}
