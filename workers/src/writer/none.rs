//! The `none` writer: nothing to quiesce (crash-consistent snapshots, benches).

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
}
