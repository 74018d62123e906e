//! `recman snapshots [TARGET]`: the catalog of restore points with their
//! expiry under `keep_last`, from the running server or the data dir.

use std::process::ExitCode;

use recman_events::TargetId;
use serde::Deserialize;
use serde_json::json;

use crate::home::Home;
use crate::render::tables;
use crate::source::Source;
use crate::source::{ServerArg, READ_HELP};
use crate::view::SnapshotEntry;

#[derive(Debug, clap::Args)]
#[command(after_help = READ_HELP)]
pub struct Args {
    /// Only the snapshots of this target.
    pub target: Option<String>,
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub server: ServerArg,
}

#[derive(Deserialize)]
struct SnapshotsBody {
    snapshots: Vec<SnapshotEntry>,
}

pub async fn run(g: &Home, a: Args) -> anyhow::Result<ExitCode> {
    let list = match Source::open(g, a.server.server.as_deref()).await? {
        Source::Local(v) => v.snapshots(a.target.clone().map(TargetId::from).as_ref()),
        Source::Remote(c) => {
            let q = match &a.target {
                Some(t) => format!("/v1/snapshots?target={t}"),
                None => "/v1/snapshots".into(),
            };
            c.get::<SnapshotsBody>(&q).await?.snapshots
        }
    };
    if a.json {
        println!("{}", json!({ "snapshots": list }));
        return Ok(ExitCode::SUCCESS);
    }
    tables::snapshots(&list);
    Ok(ExitCode::SUCCESS)
}
