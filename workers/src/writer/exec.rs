//! The `exec` writer: user hooks from the config, each an argv run without a
//! shell, with a per-command timeout and the step described in the environment.

use recman_events::bus::BoxFuture;
use recman_events::StepError;

use super::{StepCtx, Writer};
use crate::exec;
use recman_config::ExecWriterConfig;

#[derive(Clone, Debug)]
pub struct ExecWriter {
    cfg: ExecWriterConfig,
}

impl ExecWriter {
    pub fn new(cfg: ExecWriterConfig) -> Self {
        ExecWriter { cfg }
    }

    async fn hook(&self, argv: &[String], stage: &str, ctx: &StepCtx) -> Result<(), StepError> {
        let env = [
            ("RECMAN_TARGET", ctx.target.to_string()),
            ("RECMAN_JOB", ctx.job.to_string()),
            ("RECMAN_ATTEMPT", ctx.attempt.to_string()),
            ("RECMAN_KIND", ctx.kind.as_str().to_string()),
            ("RECMAN_STAGE", stage.to_string()),
        ];
        exec::run(argv, &env, self.cfg.timeout).await.map(|_| ())
    }
}

impl Writer for ExecWriter {
    fn kind(&self) -> &'static str {
        "exec"
    }
    fn freeze<'a>(&'a self, ctx: &'a StepCtx) -> BoxFuture<'a, Result<(), StepError>> {
        Box::pin(self.hook(&self.cfg.freeze, "freeze", ctx))
    }
    fn thaw<'a>(&'a self, ctx: &'a StepCtx) -> BoxFuture<'a, Result<(), StepError>> {
        Box::pin(self.hook(&self.cfg.thaw, "thaw", ctx))
    }
    fn flush_logs<'a>(&'a self, ctx: &'a StepCtx) -> BoxFuture<'a, Result<(), StepError>> {
        Box::pin(async move {
            match &self.cfg.flush {
                Some(argv) => self.hook(argv, "flush-logs", ctx).await,
                None => Ok(()),
            }
        })
    }
}
