//! The `none` writer: nothing to quiesce (crash-consistent snapshots, benches).
//! Nothing to stop either: `stop` and `start` succeed, so an in-place restore
//! of a `none` target replaces data that no application recman knows of is
//! using (the operator's confirm is the only guard).

use recman_events::bus::BoxFuture;
use recman_events::StepError;

use super::{StepCtx, Writer};

#[derive(Clone, Copy, Debug, Default)]
pub struct NoneWriter;

impl Writer for NoneWriter {
    fn kind(&self) -> &'static str {
        "none"
    }
    fn freeze<'a>(&'a self, _: &'a StepCtx) -> BoxFuture<'a, Result<(), StepError>> {
        Box::pin(async { Ok(()) })
    }
    fn thaw<'a>(&'a self, _: &'a StepCtx) -> BoxFuture<'a, Result<(), StepError>> {
        Box::pin(async { Ok(()) })
    }
    fn flush_logs<'a>(&'a self, _: &'a StepCtx) -> BoxFuture<'a, Result<(), StepError>> {
        Box::pin(async { Ok(()) })
    }
    fn stop<'a>(&'a self, _: &'a StepCtx) -> BoxFuture<'a, Result<(), StepError>> {
        Box::pin(async { Ok(()) })
    }
    fn start<'a>(&'a self, _: &'a StepCtx) -> BoxFuture<'a, Result<(), StepError>> {
        Box::pin(async { Ok(()) })
    }
}

#[cfg(test)]
mod tests {
    use recman_events::{JobId, SnapshotKind, TargetId};

    use super::*;

    #[tokio::test]
    async fn stop_and_start_succeed_and_repeat() {
        let ctx = StepCtx {
            target: TargetId::from("t"),
            job: JobId::from_parts(1, 1),
            attempt: 1,
            kind: SnapshotKind::Copy,
        };
        for _ in 0..2 {
            NoneWriter.stop(&ctx).await.unwrap();
            NoneWriter.start(&ctx).await.unwrap();
        }
    }
}
