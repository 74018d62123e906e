//! `recman mounts`: the restore points exposed on hosts (where, since when,
//! by which job, writable), from the running server or the data dir.

use std::process::ExitCode;

use serde::Deserialize;
use serde_json::json;

use crate::home::Home;
use crate::render::tables;
use crate::source::{ServerArg, Source, READ_HELP};
use crate::view::MountView;

#[derive(Debug, clap::Args)]
#[command(after_help = READ_HELP)]
pub struct Args {
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub server: ServerArg,
}

#[derive(Deserialize)]
struct MountsBody {
    mounts: Vec<MountView>,
}

pub async fn run(g: &Home, a: Args) -> anyhow::Result<ExitCode> {
    let list = match Source::open(g, a.server.server.as_deref()).await? {
        Source::Local(v) => v.mounts(),
        Source::Remote(c) => c.get::<MountsBody>("/v1/mounts").await?.mounts,
    };
    if a.json {
        println!("{}", json!({ "mounts": list }));
    } else {
        tables::mounts(&list);
    }
    Ok(ExitCode::SUCCESS)
}
