//! `recman clone SNAPSHOT --as NAME` and `recman clone rm NAME`: a writable,
//! independent copy of a restore point kept until removed, made and removed
//! by recovery jobs (sent by `restore::send`).

use std::process::ExitCode;

use anyhow::bail;
use recman_events::RecoveryAction;

use super::restore::{self, Common};
use crate::home::Home;

#[derive(Debug, clap::Args)]
#[command(
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true,
    after_help = "\
A clone is a writable copy of a restore point that lives on its own (how depends on the
provider: README, section Restore), made on a worker of the target's provider pool and kept,
with its name, until `recman clone rm NAME`. The live data is never touched. `recman clones` lists them.

Examples:
  recman clone rm-06h2fvf1q3c2b0k5a8d4-a1 --as db01-test
  recman clones
  recman clone rm db01-test

Exit codes: 0 done (the clone's location is printed), 1 the job failed, 2 could not run
(refused: unknown snapshot, a clone of that name exists, not a clone)."
)]
pub struct Args {
    #[command(subcommand)]
    pub remove: Option<Remove>,
    /// The restore point's name, as `recman snapshots` lists it.
    #[arg(required = true)]
    pub snapshot: Option<String>,
    /// The clone's name (letters, digits, `._:@-`; unique).
    #[arg(long = "as", value_name = "NAME", required = true)]
    pub name: Option<String>,
    /// The target whose restore point it is (needed only for a consistency group's point).
    #[arg(long)]
    pub target: Option<String>,
    #[command(flatten)]
    pub common: Common,
}

#[derive(Debug, clap::Subcommand)]
pub enum Remove {
    /// Remove a clone (its data goes; the restore point stays).
    Rm {
        /// The clone's name (`recman clones`).
        name: String,
        #[command(flatten)]
        common: Common,
    },
}

pub async fn run(g: &Home, a: Args) -> anyhow::Result<ExitCode> {
    if let Some(Remove::Rm { name, common }) = a.remove {
        let req = restore::request(&common, None, None, RecoveryAction::RemoveClone { name }, false);
        return restore::send(g, req, &common).await;
    }
    let (Some(snapshot), Some(name)) = (a.snapshot, a.name) else {
        bail!("name the restore point and the clone: recman clone SNAPSHOT --as NAME");
    };
    let req = restore::request(
        &a.common,
        a.target.as_deref(),
        Some(&snapshot),
        RecoveryAction::Clone { name },
        false,
    );
    restore::send(g, req, &a.common).await
}
