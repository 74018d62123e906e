//! `recman job ID`: one job with its timeline, from the running server or the data dir.

use std::process::ExitCode;

use recman_events::JobId;

use crate::client::ApiFailure;
use crate::home::Home;
use crate::render::tables;
use crate::source::Source;
use crate::source::{ServerArg, READ_HELP};
use crate::view::JobDetail;

#[derive(Debug, clap::Args)]
#[command(after_help = READ_HELP)]
pub struct Args {
    /// The job id (a UUID, as `recman jobs` prints it).
    pub id: JobId,
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub server: ServerArg,
}

pub async fn run(g: &Home, a: Args) -> anyhow::Result<ExitCode> {
    let detail: Option<JobDetail> = match Source::open(g, a.server.server.as_deref()).await? {
        Source::Local(v) => match v.job(&a.id) {
            Some(d) => Some(d),
            None => crate::source::local_job(g, a.id)?,
        },
        Source::Remote(c) => match c.get(&format!("/v1/jobs/{}", a.id)).await {
            Ok(d) => Some(d),
            Err(e) if ApiFailure::is_not_found(&e) => None,
            Err(e) => return Err(e),
        },
    };
    let Some(d) = detail else {
        eprintln!("no job {}", a.id);
        return Ok(ExitCode::from(1));
    };
    if a.json {
        println!("{}", serde_json::to_string(&d)?);
    } else {
        tables::timeline(&d);
    }
    Ok(ExitCode::SUCCESS)
}
