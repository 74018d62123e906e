//! `recman mount SNAPSHOT [--writable]`: expose a restore point on a host of
//! the target's provider pool, as a recovery job (sent by `restore::send`).

use std::process::ExitCode;

use recman_events::RecoveryAction;

use super::restore::{self, Common};
use crate::home::Home;

#[derive(Debug, clap::Args)]
#[command(after_help = "\
Mounts the restore point on a worker of the target's provider pool (how depends on the provider:
README, section Restore) and records the mount. The live data is never touched. While it is
mounted, retention keeps the restore point (`in use` in `recman snapshots`). `recman mounts`
lists the mounts; `recman unmount JOB` takes one away (so does the engine, after the target's
[target.recovery] max_mount_age).

Examples:
  recman mount rm-06h2fvf1q3c2b0k5a8d4-a1              # read-only
  recman mount rm-06h2fvf1q3c2b0k5a8d4-a1 --writable   # changes go to a copy, never the snapshot
  recman mounts

Exit codes: 0 mounted (the location is printed), 1 the mount failed, 2 could not run (refused).")]
pub struct Args {
    /// The restore point's name, as `recman snapshots` lists it.
    pub snapshot: String,
    /// The target whose restore point it is (needed only for a consistency group's point).
    #[arg(long)]
    pub target: Option<String>,
    /// A writable mount: writes go to a copy, the restore point stays as it was.
    #[arg(long)]
    pub writable: bool,
    /// Where: a worker pool of the config, or a worker's id (default: the
    /// target's provider pool). For a 3PAR target, the array host the copy
    /// is exported to (default: the target's mount_host).
    #[arg(long, value_name = "POOL_OR_WORKER")]
    pub on: Option<String>,
    #[command(flatten)]
    pub common: Common,
}

pub async fn run(g: &Home, a: Args) -> anyhow::Result<ExitCode> {
    let action = RecoveryAction::Mount {
        writable: a.writable,
        on: a.on,
    };
    let req = restore::request(&a.common, a.target.as_deref(), Some(&a.snapshot), action, false);
    restore::send(g, req, &a.common).await
}
