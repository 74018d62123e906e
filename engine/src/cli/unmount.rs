//! `recman unmount JOB`: take away the mount that recovery job JOB made, as
//! a recovery job of its own (sent by `restore::send`).

use std::process::ExitCode;

use recman_events::{JobId, RecoveryAction};

use super::restore::{self, Common};
use crate::home::Home;

#[derive(Debug, clap::Args)]
#[command(after_help = "\
Unmounts on the worker that mounted it (a writable mount's copy is removed with it) and removes
the record; retention may then prune the restore point again.

Examples:
  recman mounts                      # the MOUNT (JOB) column
  recman unmount 0193a5b2-7c1e-7f00-8a3b-5d2e9c4f1a07

Exit codes: 0 unmounted, 1 the unmount failed (the mount stays recorded), 2 could not run
(refused: not a mount, an unmount of it already runs).")]
pub struct Args {
    /// The id of the job that mounted it (`recman mounts`).
    pub mount: JobId,
    #[command(flatten)]
    pub common: Common,
}

pub async fn run(g: &Home, a: Args) -> anyhow::Result<ExitCode> {
    let action = RecoveryAction::Unmount { mount: a.mount };
    let req = restore::request(&a.common, None, None, action, false);
    restore::send(g, req, &a.common).await
}
