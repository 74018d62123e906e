//! `recman targets`: each target's state, queue depth, last snapshot and
//! last failure, from the running server or the data dir.

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
    crate::source::list(g, &a.server, a.json, "targets", |v| v.targets(), tables::targets).await
}
