//! `recman jobs`, `job`, `targets`, `snapshots`, `cancel`: against the running
//! server of the data dir (its `server.json`, or `--server URL`), else
//! directly on the data dir's log through the same projection (`view`).

use std::collections::BTreeMap;
use std::process::ExitCode;

use anyhow::{bail, Context};
use recman_events::log::{open_for_reading, LogError};
use recman_events::{JobId, TargetId};
use serde::Deserialize;
use serde_json::json;

use super::Global;
use crate::api::client::{ApiFailure, Client};
use crate::view::time::rfc3339;
use crate::view::{self, JobDetail, JobSummary, SnapshotEntry, TargetView, Until, View};

const EXIT_CODES: &str =
    "Reads the running `recman up` of the data dir (DATA_DIR/server.json) or --server URL;\n\
without one, reads the data dir's event log directly.\n\n\
Exit codes: 0 done, 1 not found, 2 could not run (no log, server unreachable, bad arguments).";

/// Where a read command gets its answers.
#[derive(Debug, Clone, clap::Args)]
pub struct ServerArg {
    /// Talk to this server (e.g. http://127.0.0.1:7080) instead of the data dir's.
    #[arg(long, value_name = "URL", env = "RECMAN_SERVER")]
    pub server: Option<String>,
}

pub enum Source {
    Local(Box<View>),
    Remote(Client),
}

/// `keep_last` per target from the config, when there is one.
pub fn retention(g: &Global) -> BTreeMap<TargetId, Option<u32>> {
    let path = g.config.clone().unwrap_or_else(|| g.data_dir.join("recman.toml"));
    match recman_config::Config::load(&path) {
        Ok(c) => c.targets.iter().map(|t| (t.id.clone(), t.keep_last)).collect(),
        Err(_) => BTreeMap::new(),
    }
}

/// Builds the view of the data dir's log up to `until`.
pub fn local_view(g: &Global, until: Until) -> anyhow::Result<View> {
    let log = open_for_reading(&g.data_dir).map_err(|e| match e {
        LogError::Locked(m) => anyhow::anyhow!(
            "{m}\nanother process owns the log and no server announces itself in {}; \
             wait for it to finish, or pass --server URL",
            crate::api::discovery::path(&g.data_dir).display()
        ),
        e => anyhow::anyhow!("cannot read the event log in {}: {e}", g.data_dir.display()),
    })?;
    Ok(View::new(retention(g)).build(log.as_ref(), until)?)
}

impl Source {
    pub async fn open(g: &Global, s: &ServerArg) -> anyhow::Result<Source> {
        match Client::discover(g, s.server.as_deref()).await? {
            Some(c) => Ok(Source::Remote(c)),
            None => Ok(Source::Local(Box::new(local_view(g, Until::End)?))),
        }
    }
}

fn not_found(e: &anyhow::Error) -> bool {
    e.downcast_ref::<ApiFailure>()
        .is_some_and(|f| f.status.as_u16() == 404)
}

// ---- jobs

#[derive(Debug, clap::Args)]
#[command(after_help = EXIT_CODES)]
pub struct JobsArgs {
    /// Only jobs in this state (queued, freezing, frozen, snapshotting, …, completed, failed, cancelled).
    #[arg(long)]
    pub state: Option<String>,
    /// Only jobs of this target.
    #[arg(long)]
    pub target: Option<String>,
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

pub async fn jobs(g: &Global, a: JobsArgs) -> anyhow::Result<ExitCode> {
    if let Some(s) = &a.state {
        if !view::state_names().contains(&s.as_str()) {
            bail!(
                "unknown state \"{s}\" (one of {})",
                view::state_names().join(", ")
            );
        }
    }
    let limit = a.limit.clamp(1, 1000);
    let page = match Source::open(g, &a.server).await? {
        Source::Local(v) => {
            let t = a.target.clone().map(TargetId::from);
            let (jobs, next) = v.jobs(a.state.as_deref(), t.as_ref(), None, limit);
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
            c.get(&q).await?
        }
    };
    if a.json {
        println!("{}", json!({"jobs": page.jobs, "next": page.next}));
        return Ok(ExitCode::SUCCESS);
    }
    if page.jobs.is_empty() {
        println!("no jobs");
    } else {
        println!(
            "{:<36}  {:<13}  {:<24}  {:<20}  SNAPSHOT / OUTCOME",
            "JOB", "STATE", "REQUESTED", "TARGETS"
        );
    }
    for j in &page.jobs {
        let targets = j.targets.iter().map(|t| t.as_str()).collect::<Vec<_>>().join(",");
        let what = j.snapshot.clone().or(j.outcome.clone()).unwrap_or_default();
        println!(
            "{:<36}  {:<13}  {:<24}  {:<20}  {what}",
            j.id.to_string(),
            j.state,
            rfc3339(j.requested_at_ms),
            targets
        );
    }
    if page.next.is_some() {
        println!("(more: raise --limit)");
    }
    Ok(ExitCode::SUCCESS)
}

// ---- job

#[derive(Debug, clap::Args)]
#[command(after_help = EXIT_CODES)]
pub struct JobArgs {
    /// The job id (a UUID, as `recman jobs` prints it).
    pub id: JobId,
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub server: ServerArg,
}

pub async fn job(g: &Global, a: JobArgs) -> anyhow::Result<ExitCode> {
    let detail: Option<JobDetail> = match Source::open(g, &a.server).await? {
        Source::Local(v) => v.job(&a.id),
        Source::Remote(c) => match c.get(&format!("/v1/jobs/{}", a.id)).await {
            Ok(d) => Some(d),
            Err(e) if not_found(&e) => None,
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
        print_job(&d);
    }
    Ok(ExitCode::SUCCESS)
}

fn ms(us: u64) -> String {
    format!("{:.1} ms", us as f64 / 1000.0)
}

/// The timeline, readable at a glance.
pub fn print_job(d: &JobDetail) {
    let s = &d.summary;
    let targets = s
        .targets
        .iter()
        .map(|t| t.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    println!("job {}  {}", s.id, s.state.to_uppercase());
    println!(
        "  request {} · {} · from {} · targets {targets}",
        s.request_id, s.kind, s.origin
    );
    println!("  requested {}", rfc3339(s.requested_at_ms));
    if let Some(f) = s.finished_at_ms {
        println!(
            "  finished  {}  ({} ms)",
            rfc3339(f),
            f.saturating_sub(s.requested_at_ms)
        );
    }
    println!("  timeline:");
    for t in &d.timeline {
        let offset = t.started_ms.saturating_sub(s.requested_at_ms);
        let dur = t.duration_ms.map_or("running".to_string(), |d| format!("{d} ms"));
        println!(
            "    +{offset:>6} ms  {:<10} attempt {}  {:>9}  {}",
            t.stage.as_str(),
            t.attempt,
            dur,
            t.outcome.as_deref().unwrap_or("")
        );
        for st in &t.steps {
            let who = st.worker.as_ref().map_or("?".to_string(), |w| w.to_string());
            let took = st.duration_us.map(ms).unwrap_or_default();
            let mark = if st.ok { "ok" } else { "FAILED" };
            let note = st.note.as_deref().map(|n| format!(" — {n}")).unwrap_or_default();
            println!("        {} {} on {who} {took}{note}", st.target, mark);
        }
    }
    let fw = &d.freeze_window;
    match fw.window_us {
        Some(w) => println!("  freeze window: {} (limit {} ms)", ms(w), fw.budget_ms),
        None if fw.first_frozen_at_ms.is_some() => println!(
            "  freeze window: open since {}",
            rfc3339(fw.first_frozen_at_ms.unwrap_or(0))
        ),
        None => {}
    }
    if let Some(sn) = &d.snapshot_info {
        println!("  snapshot: {} at {} ({})", sn.name, sn.location, sn.provider);
    }
    if let Some(o) = &s.outcome {
        println!("  outcome: {o}");
    }
    if let Some(e) = &d.last_error {
        println!("  last error: {e}");
    }
}

// ---- targets

#[derive(Debug, clap::Args)]
#[command(after_help = EXIT_CODES)]
pub struct TargetsArgs {
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub server: ServerArg,
}

#[derive(Deserialize)]
struct TargetsBody {
    targets: Vec<TargetView>,
}

pub async fn targets(g: &Global, a: TargetsArgs) -> anyhow::Result<ExitCode> {
    let list = match Source::open(g, &a.server).await? {
        Source::Local(v) => v.targets(),
        Source::Remote(c) => c.get::<TargetsBody>("/v1/targets").await?.targets,
    };
    if a.json {
        println!("{}", json!({ "targets": list }));
    } else {
        print_targets(&list);
    }
    Ok(ExitCode::SUCCESS)
}

pub fn print_targets(list: &[TargetView]) {
    if list.is_empty() {
        println!("no targets");
        return;
    }
    println!(
        "{:<20}  {:<13}  {:>5}  {:<40}  LAST FAILURE",
        "TARGET", "STATE", "QUEUE", "LAST SNAPSHOT"
    );
    for t in list {
        let snap = t
            .last_snapshot
            .as_ref()
            .map(|s| format!("{} ({})", s.name, rfc3339(s.at_ms)))
            .unwrap_or_else(|| "-".into());
        let fail = t
            .last_failure
            .as_ref()
            .map(|f| format!("{}: {}", rfc3339(f.at_ms), f.reason))
            .unwrap_or_else(|| "-".into());
        println!(
            "{:<20}  {:<13}  {:>5}  {:<40}  {fail}",
            t.id.as_str(),
            t.state,
            t.queue_depth,
            snap
        );
    }
}

// ---- snapshots

#[derive(Debug, clap::Args)]
#[command(after_help = EXIT_CODES)]
pub struct SnapshotsArgs {
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

pub async fn snapshots(g: &Global, a: SnapshotsArgs) -> anyhow::Result<ExitCode> {
    let list = match Source::open(g, &a.server).await? {
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
    if list.is_empty() {
        println!("no snapshots");
    }
    for s in &list {
        let targets = s.targets.iter().map(|t| t.as_str()).collect::<Vec<_>>().join(",");
        let expiry = match &s.retention {
            Some(r) => format!(
                "pruned after {} more (keep_last {})",
                r.expires_after, r.keep_last
            ),
            None => "kept".into(),
        };
        println!(
            "{}  {}  {targets}  {} {}  freeze {}  {expiry}\n    {}",
            rfc3339(s.cut_at_ms),
            s.name,
            s.kind,
            s.provider,
            ms(s.freeze_window_us),
            s.location
        );
    }
    Ok(ExitCode::SUCCESS)
}

// ---- cancel

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Cancels through the running `recman up` (the engine must run to thaw what is frozen).\n\
Before the freeze the job just ends; after it, the targets are thawed first.\n\n\
Exit codes: 0 cancel recorded (or already requested), 1 no such job or it already ended,\n\
2 could not run (no server)."
)]
pub struct CancelArgs {
    pub id: JobId,
    /// Why (recorded in the log).
    #[arg(long, default_value = "cancelled from the command line")]
    pub reason: String,
    #[command(flatten)]
    pub server: ServerArg,
}

pub async fn cancel(g: &Global, a: CancelArgs) -> anyhow::Result<ExitCode> {
    let Some(c) = Client::discover(g, a.server.server.as_deref()).await? else {
        bail!(
            "no running server for {}: cancelling needs the engine; start `recman up` or pass --server URL",
            g.data_dir.display()
        );
    };
    match c
        .post(&format!("/v1/jobs/{}/cancel", a.id), &json!({"reason": a.reason}))
        .await
    {
        Ok(v) => {
            let again = v["already_requested"].as_bool().unwrap_or(false);
            println!(
                "cancel of job {} {}; follow it with `recman job {}`",
                a.id,
                if again {
                    "was already requested"
                } else {
                    "recorded"
                },
                a.id
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => match e.downcast_ref::<ApiFailure>() {
            Some(f) if f.status.as_u16() == 404 || f.status.as_u16() == 409 => {
                eprintln!("{}", f.message);
                Ok(ExitCode::from(1))
            }
            _ => Err(e).context("cancelling"),
        },
    }
}
