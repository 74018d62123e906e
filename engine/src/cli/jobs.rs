//! `recman jobs`: jobs newest first, from the running server or the data dir.

use std::process::ExitCode;

use anyhow::bail;
use recman_events::{JobId, TargetId};
use serde::Deserialize;
use serde_json::json;

use crate::home::Home;
use crate::render::tables;
use crate::source::Source;
use crate::source::{ServerArg, READ_HELP};
use crate::view::{self, JobSummary};

#[derive(Debug, clap::Args)]
#[command(after_help = READ_HELP)]
pub struct Args {
    /// Only jobs in this state (queued, freezing, frozen, snapshotting, …, completed, failed, cancelled).
    #[arg(long)]
    pub state: Option<String>,
    /// Only jobs of this target.
    #[arg(long)]
    pub target: Option<String>,
    /// Only the job of this request id (the sender's idempotency key, e.g.
    /// what `publish_request.py --request-id` sent): at most one.
    #[arg(long, value_name = "ID")]
    pub request_id: Option<String>,
    /// At most this many (newest first).
    #[arg(long, default_value_t = 50)]
    pub limit: usize,
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub server: ServerArg,
}

#[derive(Deserialize)]
struct JobsPage {
    jobs: Vec<JobSummary>,
    next: Option<JobId>,
}

pub async fn run(g: &Home, a: Args) -> anyhow::Result<ExitCode> {
    if let Some(s) = &a.state {
        if !view::state_names().contains(&s.as_str()) {
            bail!(
                "unknown state \"{s}\" (one of {})",
                view::state_names().join(", ")
            );
        }
    }
    if let Some(r) = &a.request_id {
        recman_events::wire::check_id("request_id", r).map_err(|e| anyhow::anyhow!("--request-id: {e}"))?;
    }
    let limit = a.limit.clamp(1, 1000);
    let page = match Source::open(g, a.server.server.as_deref()).await? {
        Source::Local(v) => {
            let t = a.target.clone().map(TargetId::from);
            let r = a.request_id.as_deref().map(recman_events::RequestId::from);
            let (jobs, next) = v.jobs(a.state.as_deref(), t.as_ref(), r.as_ref(), None, limit);
            JobsPage { jobs, next }
        }
        Source::Remote(c) => {
            let mut q = format!("/v1/jobs?limit={limit}");
            if let Some(s) = &a.state {
                q.push_str(&format!("&state={s}"));
            }
            if let Some(t) = &a.target {
                q.push_str(&format!("&target={t}"));
            }
            if let Some(r) = &a.request_id {
                q.push_str(&format!("&request_id={r}"));
            }
            c.get(&q).await?
        }
    };
    if a.json {
        println!("{}", json!({"jobs": page.jobs, "next": page.next}));
        return Ok(ExitCode::SUCCESS);
    }
    tables::jobs(&page.jobs, page.next.is_some());
    Ok(ExitCode::SUCCESS)
}
