//! `recman mounts`: the restore points exposed on hosts (where, since when,
//! by which job, writable), from the running server or the data dir.

use std::process::ExitCode;

use crate::home::Home;
use crate::render::tables;
use crate::source::{ServerArg, READ_HELP};

#[derive(Debug, clap::Args)]
#[command(after_help = READ_HELP)]
pub struct Args {
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub server: ServerArg,
}

pub async fn run(g: &Home, a: Args) -> anyhow::Result<ExitCode> {
    crate::source::list(g, &a.server, a.json, "mounts", |v| v.mounts(), tables::mounts).await
}
