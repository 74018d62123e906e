//! `recman targets`: each target's state, queue depth, last snapshot and
//! last failure, from the running server or the data dir.

use std::process::ExitCode;

use serde::Deserialize;
use serde_json::json;

use crate::home::Home;
use crate::render::tables;
use crate::source::Source;
use crate::source::{ServerArg, READ_HELP};
use crate::view::TargetView;

#[derive(Debug, clap::Args)]
#[command(after_help = READ_HELP)]
pub struct Args {
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub server: ServerArg,
}

#[derive(Deserialize)]
struct TargetsBody {
    targets: Vec<TargetView>,
}

pub async fn run(g: &Home, a: Args) -> anyhow::Result<ExitCode> {
    let list = match Source::open(g, a.server.server.as_deref()).await? {
        Source::Local(v) => v.targets(),
        Source::Remote(c) => c.get::<TargetsBody>("/v1/targets").await?.targets,
    };
    if a.json {
        println!("{}", json!({ "targets": list }));
    } else {
        tables::targets(&list);
    }
    Ok(ExitCode::SUCCESS)
}
