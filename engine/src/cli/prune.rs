//! `recman prune [--dry-run] [TARGET...]`: the retention rules applied now;
//! `--dry-run` shows what each rule keeps and why, and what would go.

use std::process::ExitCode;

use anyhow::{bail, Context};
use recman_core::retention::Plan;
use recman_events::TargetId;
use serde::Deserialize;
use serde_json::json;

use crate::client::Client;
use crate::home::Home;
use crate::source::{current_view, ServerArg};

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Applies keep_last, keep_within and keep_hourly/daily/weekly/monthly (README, \"Retention\")\n\
now, as the engine does after every completed job. The deletes are recorded as prune_requested\n\
events and carried out by the provider's workers: this needs the running `recman up`.\n\
--dry-run changes nothing and reads the data dir's log when no server runs.\n\n\
A target with `require_approval = true` (four-eyes) loses restore points only once a second admin\n\
approves: its prune is recorded as a job that waits (state awaiting_approval, nothing is deleted);\n\
this command prints the job and the command for the other admin, `recman approve JOB`, and exits 3.\n\
Once approved, the target's rules as they stand then choose what goes. Unapproved by\n\
`approval_expiry` (default 1h), it fails and nothing is deleted. Its automatic retention after each\n\
of its jobs still runs.\n\n\
Exit codes: 0 done, 2 could not run (no server for a real prune, unknown target), 3 a prune waits\n\
for a second admin's approval."
)]
pub struct Args {
    /// Only these targets (default: every target with a retention rule).
    pub targets: Vec<String>,
    /// Show the plan, delete nothing.
    #[arg(long)]
    pub dry_run: bool,
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub server: ServerArg,
}

#[derive(Deserialize)]
struct PruneBody {
    plan: Plan,
    asked: usize,
    #[serde(default)]
    awaiting_approval: Vec<Awaiting>,
}

/// A guarded target's prune job, waiting for a second admin.
#[derive(Debug, Deserialize, serde::Serialize)]
struct Awaiting {
    target: TargetId,
    job: recman_events::JobId,
}

pub async fn run(g: &Home, a: Args) -> anyhow::Result<ExitCode> {
    let targets: Vec<TargetId> = a.targets.iter().map(|t| TargetId::from(t.as_str())).collect();
    let policies = crate::source::policies(g);
    let (plan, asked, awaiting) = match Client::discover(g, a.server.server.as_deref()).await? {
        Some(c) => {
            let body = json!({"targets": targets, "dry_run": a.dry_run});
            let v = c.post("/v1/prune", &body).await.context("pruning")?;
            let b: PruneBody = serde_json::from_value(v).context("the server's prune answer")?;
            (b.plan, b.asked, b.awaiting_approval)
        }
        None if a.dry_run => {
            let view = current_view(g).await?;
            if let Some(t) = targets
                .iter()
                .find(|t| !view.policies.contains_key(*t) && !view.state.catalog.contains_key(*t))
            {
                bail!("no target {t} in the config or the catalog");
            }
            (
                crate::prune::plan(&view.state, &view.policies, &targets),
                0,
                Vec::new(),
            )
        }
        None => bail!(
            "no running server for {}: pruning needs the engine and the provider's workers; \
             start `recman up`, pass --server URL, or look first with --dry-run",
            g.data_dir.display()
        ),
    };
    let code = if awaiting.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(3)
    };
    if a.json {
        println!(
            "{}",
            json!({"dry_run": a.dry_run, "plan": plan, "asked": asked, "awaiting_approval": awaiting})
        );
        return Ok(code);
    }
    print!("{}", crate::prune::render(&plan, &policies, a.dry_run));
    if !a.dry_run {
        println!("{asked} deletes asked for; follow them with `recman events` or `recman snapshots`");
    }
    for w in &awaiting {
        println!(
            "{}: require_approval, nothing deleted yet: prune job {} waits for a second admin: recman approve {}",
            w.target, w.job, w.job
        );
    }
    Ok(code)
}
