//! Writers quiesce an application: freeze (flush and suspend writes), thaw
//! (resume), flush-logs (after a full backup). Built from the target's config.

mod exec;
mod none;

use std::sync::Arc;

use recman_events::bus::BoxFuture;
use recman_events::{JobId, SnapshotKind, StepError, TargetId};

pub use exec::ExecWriter;
pub use none::NoneWriter;

use crate::config::WriterConfig;

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
}

/// The writer a target's config asks for.
pub fn from_config(cfg: &WriterConfig) -> Arc<dyn Writer> {
    match cfg {
        WriterConfig::None => Arc::new(NoneWriter),
        WriterConfig::Exec(e) => Arc::new(ExecWriter::new(e.clone())),
    }
}
