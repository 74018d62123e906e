//! The `exec` writer: user hooks from the config, each an argv run without a
//! shell, with a per-command timeout and the step described in the environment.
//! `stop` and `start` (optional) serve in-place restores; without them an
//! in-place restore of the target is refused (`not_supported`).

use recman_events::bus::BoxFuture;
use recman_events::StepError;

use super::{StepCtx, Writer};
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
        super::run_hook(argv, stage, ctx, self.cfg.timeout).await
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
    fn stop<'a>(&'a self, ctx: &'a StepCtx) -> BoxFuture<'a, Result<(), StepError>> {
        Box::pin(super::recovery_hook(
            "exec",
            (self.cfg.stop.as_deref(), self.cfg.start.as_deref()),
            "stop",
            ctx,
            self.cfg.timeout,
        ))
    }
    fn start<'a>(&'a self, ctx: &'a StepCtx) -> BoxFuture<'a, Result<(), StepError>> {
        Box::pin(super::recovery_hook(
            "exec",
            (self.cfg.stop.as_deref(), self.cfg.start.as_deref()),
            "start",
            ctx,
            self.cfg.timeout,
        ))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use recman_events::{JobId, SnapshotKind, TargetId};

    use super::*;

    fn ctx() -> StepCtx {
        StepCtx {
            target: TargetId::from("app"),
            job: JobId::from_parts(16, 1),
            attempt: 1,
            kind: SnapshotKind::Copy,
        }
    }

    fn writer(stop: Option<Vec<String>>, start: Option<Vec<String>>) -> ExecWriter {
        ExecWriter::new(ExecWriterConfig {
            freeze: vec!["true".into()],
            thaw: vec!["true".into()],
            flush: None,
            stop,
            start,
            timeout: Duration::from_secs(5),
        })
    }

    /// The hooks run (no shell: `$RECMAN_STAGE` reaches the script as data)
    /// with the step in the environment; a failing one is the step's error.
    #[tokio::test]
    async fn stop_and_start_run_their_hooks() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log");
        let hook = |extra: &str| {
            Some(vec![
                "/bin/sh".into(),
                "-c".into(),
                format!(
                    "echo \"$RECMAN_STAGE $RECMAN_TARGET $RECMAN_JOB $1\" >> {}{extra}",
                    log.display()
                ),
                "sh".into(),
                "; rm -rf /nonexistent-recman".into(),
            ])
        };
        let w = writer(hook(""), hook(""));
        w.stop(&ctx()).await.unwrap();
        w.stop(&ctx()).await.unwrap(); // stopped already: the hook says ok
        w.start(&ctx()).await.unwrap();
        let job = JobId::from_parts(16, 1);
        assert_eq!(
            std::fs::read_to_string(&log).unwrap(),
            format!(
                "stop app {job} ; rm -rf /nonexistent-recman\n\
                 stop app {job} ; rm -rf /nonexistent-recman\n\
                 start app {job} ; rm -rf /nonexistent-recman\n"
            )
        );
        let w = writer(hook("; exit 3"), None);
        let e = w.stop(&ctx()).await.unwrap_err();
        assert_eq!((e.code.as_str(), e.retryable), ("exec_failed", false), "{e:?}");
    }

    /// No `stop` hook: stop is refused (no in-place restore under a live
    /// application) and the start that follows has nothing to start. A
    /// `stop` without a `start` refuses the start (the application stays
    /// down: the operator is told).
    #[tokio::test]
    async fn without_hooks_stop_and_start_are_refused() {
        let w = writer(None, None);
        let e = w.stop(&ctx()).await.unwrap_err();
        assert_eq!(e.code, "not_supported", "{e:?}");
        assert!(
            e.message.contains("--to") && e.message.contains("app"),
            "{}",
            e.message
        );
        w.start(&ctx()).await.unwrap();
        let w = writer(Some(vec!["true".into()]), None);
        w.stop(&ctx()).await.unwrap();
        let e = w.start(&ctx()).await.unwrap_err();
        assert_eq!(e.code, "not_supported", "{e:?}");
    }
}
