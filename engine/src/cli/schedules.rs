//! `recman schedules`: each schedule's next firing and last outcome (from
//! the running server or the data dir); `recman schedules pause ID` /
//! `resume ID` through the running server.

use std::process::ExitCode;

use anyhow::{bail, Context};
use serde::Deserialize;
use serde_json::json;

use crate::client::{ApiFailure, Client};
use crate::home::Home;
use crate::source::{ServerArg, Source, READ_HELP};
use crate::view::schedules::ScheduleView;
use crate::view::time::rfc3339;

#[derive(Debug, clap::Args)]
#[command(after_help = READ_HELP)]
pub struct Args {
    #[command(subcommand)]
    pub action: Option<Action>,
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub server: ServerArg,
}

#[derive(Debug, clap::Subcommand)]
pub enum Action {
    /// Pause a schedule: its slots are skipped (recorded) until it is resumed.
    Pause {
        id: String,
        /// Why (recorded in the log).
        #[arg(long, default_value = "paused from the command line")]
        reason: String,
    },
    /// Resume a schedule: slots count from now (paused ones are not caught up).
    Resume { id: String },
}

#[derive(Deserialize)]
struct SchedulesBody {
    schedules: Vec<ScheduleView>,
}

pub async fn run(g: &Home, a: Args) -> anyhow::Result<ExitCode> {
    match a.action {
        None => list(g, a.json, a.server.server.as_deref()).await,
        Some(Action::Pause { id, reason }) => {
            pause(
                g,
                a.server.server.as_deref(),
                &id,
                "pause",
                json!({"reason": reason}),
            )
            .await
        }
        Some(Action::Resume { id }) => pause(g, a.server.server.as_deref(), &id, "resume", json!({})).await,
    }
}

async fn list(g: &Home, as_json: bool, server: Option<&str>) -> anyhow::Result<ExitCode> {
    let list = match Source::open(g, server).await? {
        Source::Local(v) => v.schedules(),
        Source::Remote(c) => c.get::<SchedulesBody>("/v1/schedules").await?.schedules,
    };
    if as_json {
        println!("{}", json!({ "schedules": list }));
        return Ok(ExitCode::SUCCESS);
    }
    if list.is_empty() {
        crate::say!("no schedules");
        return Ok(ExitCode::SUCCESS);
    }
    // Columns as wide as their longest cell (ids and target lists vary).
    let rows: Vec<[String; 5]> = list
        .iter()
        .map(|s| {
            let targets: Vec<&str> = s.targets.iter().map(|t| t.as_str()).collect();
            let next = match (&s.paused, s.next_ms, s.pending_restart) {
                (Some(_), _, _) => "paused".to_string(),
                (_, _, true) => "after restart".to_string(),
                (_, Some(n), _) => rfc3339(n),
                _ => "-".to_string(),
            };
            let mut outcome = s.last_outcome.clone().unwrap_or_else(|| "-".into());
            if let Some(skip) = &s.last_skip {
                outcome.push_str(&format!("; last skip: {skip}"));
            }
            [
                s.id.clone(),
                targets.join(","),
                next,
                s.last_slot_ms.map_or("-".to_string(), rfc3339),
                outcome,
            ]
        })
        .collect();
    let head = ["SCHEDULE", "TARGETS", "NEXT", "LAST SLOT", "LAST OUTCOME"];
    let w: Vec<usize> = (0..4)
        .map(|c| {
            rows.iter()
                .map(|r| r[c].chars().count())
                .chain([head[c].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |r: [&str; 5]| {
        format!(
            "{:<w0$}  {:<w1$}  {:<w2$}  {:<w3$}  {}",
            r[0],
            r[1],
            r[2],
            r[3],
            r[4],
            w0 = w[0],
            w1 = w[1],
            w2 = w[2],
            w3 = w[3]
        )
    };
    crate::say!("{}", line(head));
    for (s, r) in list.iter().zip(&rows) {
        crate::say!("{}", line([&r[0], &r[1], &r[2], &r[3], &r[4]]));
        crate::say!(
            "{:<w0$}  {}  fired={} skipped={}",
            "",
            s.spec,
            s.fired,
            s.skipped,
            w0 = w[0]
        );
    }
    Ok(ExitCode::SUCCESS)
}

async fn pause(
    g: &Home,
    server: Option<&str>,
    id: &str,
    verb: &str,
    body: serde_json::Value,
) -> anyhow::Result<ExitCode> {
    let Some(c) = Client::discover(g, server).await? else {
        bail!(
            "no running server for {}: {verb} needs the engine; start `recman up` or pass --server URL",
            g.data_dir.display()
        );
    };
    match c.post(&format!("/v1/schedules/{id}/{verb}"), &body).await {
        Ok(v) => {
            let again = v["already"].as_bool().unwrap_or(false);
            let done = if verb == "pause" { "paused" } else { "resumed" };
            if again {
                println!("schedule {id} was already {done}");
            } else {
                println!("schedule {id} {done} (recorded in the log)");
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => match e.downcast_ref::<ApiFailure>() {
            Some(f) if f.status.as_u16() == 404 => {
                eprintln!("{}", crate::render::escape(&f.message));
                Ok(ExitCode::from(1))
            }
            _ => Err(e).with_context(|| format!("{verb} of schedule {id}")),
        },
    }
}
