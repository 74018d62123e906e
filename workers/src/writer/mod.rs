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
pub use fsfreeze::{check_mountpoint, unescape as unescape_mountinfo, FreezeMarker, FsFreezeWriter};
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
    /// Run once when the worker starts, before it takes any command: thaw
    /// what a crashed predecessor left frozen. `Ok(None)`: nothing was frozen.
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
}

/// A freeze found and thawed on worker start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StartupThaw {
    /// What was thawed (a mountpoint).
    pub what: String,
    /// The job, attempt and kind of the freeze, when its marker survived.
    pub job: Option<(JobId, u32, SnapshotKind)>,
    /// Unix ms of the freeze, when known.
    pub frozen_at_ms: Option<u64>,
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
