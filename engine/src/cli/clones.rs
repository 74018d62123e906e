//! `recman clones`: the clones of restore points kept until removed (where,
//! since when, by which job, from which point), from the running server or
//! the data dir.

use std::process::ExitCode;

use serde::Deserialize;
use serde_json::json;

use crate::home::Home;
use crate::render::tables;
use crate::source::{ServerArg, Source, READ_HELP};
use crate::view::CloneView;

#[derive(Debug, clap::Args)]
#[command(after_help = READ_HELP)]
pub struct Args {
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub server: ServerArg,
}

#[derive(Deserialize)]
struct ClonesBody {
    clones: Vec<CloneView>,
}

pub async fn run(g: &Home, a: Args) -> anyhow::Result<ExitCode> {
    let list = match Source::open(g, a.server.server.as_deref()).await? {
        Source::Local(v) => v.clones(),
        Source::Remote(c) => c.get::<ClonesBody>("/v1/clones").await?.clones,
    };
    if a.json {
        println!("{}", json!({ "clones": list }));
    } else {
        tables::clones(&list);
    }
    Ok(ExitCode::SUCCESS)
}
