//! `recman restore SNAPSHOT (--in-place --yes | --to PATH)`: bring a restore
//! point back, as a recovery job followed to its end. Also the one way the
//! other recovery commands (`mount`, `unmount`, `clone`) send their request
//! ([`send`]): through the running server of the data dir when there is one
//! (`POST /v1/recoveries`, followed over SSE), else in-process (the engine
//! handle with a local worker), like `recman snapshot`.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use recman_events::{JobId, RecoveryAction, RecoveryRequest, RequestId, StoredEvent, TargetId, WorkerId};
use recman_workers::runtime::Worker;

use crate::client::{ApiFailure, Client};
use crate::handle::{Drain, Engine};
use crate::home::{Home, Missing};
use crate::render::progress::{End, Progress};
use crate::source::ServerArg;

#[derive(Debug, clap::Args)]
#[command(after_help = "\
In place (--in-place --yes) brings the target's live data back to the restore point, in four steps,
each recorded in the event log:
  1. stop       the writer stops the application (exec `stop` hook, PostgreSQL stopped, …);
  2. safety-snapshot  the provider snapshots the live data as it is now, application stopped:
                this is an ordinary restore point (listed by `recman snapshots`, kind `safety`),
                so the restore itself can be undone with `recman restore SAFETY --in-place --yes`;
  3. restore    the provider reverts the live data to SNAPSHOT (on failure: rolled back);
  4. start      the writer starts the application again.
It is refused while the target is busy (a snapshot job holds or waits for it, a verification,
reconcile or other recovery runs): it must not overwrite work still in flight. Meanwhile new
snapshot jobs of the target wait in its queue. If it fails, the error says where the live data
was left: untouched, rolled back, restored (the application did not start), or unknown (the
safety snapshot holds the state before).

--to PATH restores beside production into PATH (absolute, must not exist yet, on the provider's
host); the live data is never touched.

A PostgreSQL target (writer `postgres`, with `data_directory` and `wal_archive` set) is recovered,
not just copied: its backup_label goes back into the data directory with recovery.signal and a
restore_command reading the WAL archive, and the cluster replays WAL
  - to the restore point itself (the default: consistent as of the snapshot),
  - to a time with --until 2026-11-30T10:15:00Z (transactions committed by then are kept),
  - or to the end of the archive with --until latest (the point of failure; in place, the stop
    step switches WAL first, so the archive holds every transaction committed before it).
In place, the start step waits for recovery to finish and reports the recovered LSN and time.
With --to, the worker runs the recovery itself in a private server (no TCP listener), stops it
cleanly and reports the same: PATH then holds a cluster ready to start on a port of your choice.

Examples:
  recman snapshots db01                                    # pick a restore point
  recman restore rm-06h2fvf1q3c2b0k5a8d4-a1 --to /srv/restore/db01
  recman restore rm-06h2fvf1q3c2b0k5a8d4-a1 --in-place --yes
  recman restore rm-06h2fvf1q3c2b0k5a8d4-a1 --to /srv/restore/pg --until 2026-11-30T10:15:00Z
  recman job JOB                                           # the steps, workers, durations

A target with `require_approval = true` (four-eyes) takes an in-place restore only once a second
admin approves it: the request is recorded and waits (job state awaiting_approval, nothing is
stopped or sent); this command prints the job and the command for the other admin,
`recman approve JOB`, and exits 3. Unapproved by `approval_expiry` (default 1h), it fails, never run.

Exit codes: 0 completed, 1 the recovery failed (the reason and the live data's state on stderr),
2 could not run (refused: unknown snapshot, another target's, target busy, no --yes; bad config),
3 it waits for a second admin's approval (follow it with `recman job JOB`).")]
pub struct Args {
    /// The restore point's name, as `recman snapshots` lists it.
    pub snapshot: String,
    /// The target whose restore point it is (needed only for a consistency
    /// group's point, which every member lists).
    #[arg(long)]
    pub target: Option<String>,
    /// Revert the target's live data to the restore point (stop, safety
    /// snapshot, revert, start). Needs --yes.
    #[arg(long, conflicts_with = "to", required_unless_present = "to")]
    pub in_place: bool,
    /// Confirm an in-place restore: the live data is overwritten.
    #[arg(long, requires = "in_place")]
    pub yes: bool,
    /// Restore into this new directory beside production instead.
    #[arg(long, value_name = "PATH")]
    pub to: Option<String>,
    /// A PostgreSQL target: replay the WAL archive past the restore point,
    /// to this RFC 3339 time or to `latest` (the end of the archive).
    /// Default: the restore point itself.
    #[arg(long, value_name = "TIME|latest")]
    pub until: Option<recman_events::Until>,
    #[command(flatten)]
    pub common: Common,
}

/// The flags every recovery request command has.
#[derive(Debug, clap::Args)]
pub struct Common {
    /// Idempotency key (default: a fresh one). The same id follows the same job.
    #[arg(long)]
    pub request_id: Option<String>,
    /// Print only the job's summary as JSON (job id, state, steps, location, reason).
    #[arg(long)]
    pub json: bool,
    /// Submit through this server (default: the running `recman up` of the data dir, if any).
    #[command(flatten)]
    pub server: ServerArg,
}

pub async fn run(g: &Home, a: Args) -> anyhow::Result<ExitCode> {
    let action = match (&a.to, a.in_place) {
        (Some(path), _) => RecoveryAction::To {
            path: path.clone(),
            until: a.until,
        },
        (None, true) if !a.yes => bail!(
            "an in-place restore overwrites the live data of the target with {}: add --yes to confirm \
             (a safety snapshot of the live data is taken first; --to PATH restores beside it instead)",
            a.snapshot
        ),
        (None, _) => RecoveryAction::InPlace { until: a.until },
    };
    let req = request(&a.common, a.target.as_deref(), Some(&a.snapshot), action, a.yes);
    send(g, req, &a.common).await
}

/// A recovery request from the command line's flags.
pub fn request(
    c: &Common,
    target: Option<&str>,
    snapshot: Option<&str>,
    action: RecoveryAction,
    confirm: bool,
) -> RecoveryRequest {
    RecoveryRequest {
        schema_version: recman_events::SCHEMA_VERSION,
        request_id: RequestId::from(
            c.request_id
                .clone()
                .unwrap_or_else(|| format!("cli-{}", JobId::new_v7())),
        ),
        target: target.map(TargetId::from),
        snapshot: snapshot.map(str::to_string),
        action,
        confirm,
    }
}

/// Sends `req` (through the server, else in-process), follows the job to
/// its end and says how it ended. Exit 0 completed, 1 failed; a refusal is
/// an error (exit 2).
pub async fn send(g: &Home, req: RecoveryRequest, c: &Common) -> anyhow::Result<ExitCode> {
    req.validate().map_err(|e| anyhow::anyhow!("{e}"))?;
    let human = !c.json;
    let (end, progress) = match Client::discover(g, c.server.server.as_deref()).await? {
        Some(client) => remote(&client, &req, human).await?,
        None => embedded(g, &req, human).await?,
    };
    if c.json {
        println!("{}", serde_json::to_string_pretty(&progress.summary)?);
    } else if end == End::Completed {
        next_steps(&req.action, &progress);
    }
    Ok(match end {
        End::Completed => ExitCode::SUCCESS,
        End::Failed | End::Cancelled => ExitCode::from(1),
        End::AwaitingApproval => ExitCode::from(3),
    })
}

/// What to do next, after a recovery completed.
fn next_steps(action: &RecoveryAction, p: &Progress) {
    let job = &p.summary.job_id;
    match action {
        RecoveryAction::InPlace { .. } => {
            if let Some(s) = &p.summary.safety_snapshot {
                crate::say!(
                    "the live data as it was before is kept as restore point {s}: \
                     `recman restore {s} --in-place --yes` goes back"
                );
            }
        }
        RecoveryAction::Mount { .. } => {
            crate::say!("take it away with `recman unmount {job}` (list: `recman mounts`)")
        }
        RecoveryAction::Clone { name } => {
            crate::say!("kept until `recman clone rm {name}` (list: `recman clones`)")
        }
        _ => {}
    }
}

fn refused(e: anyhow::Error) -> anyhow::Error {
    match e.downcast_ref::<ApiFailure>() {
        Some(f) => anyhow::anyhow!("request refused ({}): {}", f.code, f.message),
        None => e,
    }
}

fn seen_before(existing: bool) -> &'static str {
    if existing {
        " (the same request id was seen before: following that job)"
    } else {
        ""
    }
}

/// Through a server: `POST /v1/recoveries`, then the job's events over SSE.
async fn remote(c: &Client, req: &RecoveryRequest, human: bool) -> anyhow::Result<(End, Progress)> {
    let body = serde_json::to_value(req)?;
    let accepted = c.post("/v1/recoveries", &body).await.map_err(refused)?;
    let job: JobId = accepted["job_id"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .context("the server's answer has no job_id")?;
    let existing = accepted["existing"].as_bool().unwrap_or(false);
    let mut progress = Progress::new(job, human, std::io::stdout().is_terminal());
    if human {
        println!("job {job} (via {}){}", c.base, seen_before(existing));
    }
    let mut feed = c.follow(job);
    let mut tick = tokio::time::interval(progress.tick_every().unwrap_or(Duration::from_secs(3600)));
    loop {
        tokio::select! {
            ev = feed.next() => match ev? {
                Some(ev) => if let Some(end) = progress.on_event(&ev) {
                    return Ok((end, progress));
                },
                None => bail!("lost the event stream of job {job}; it goes on in the server: `recman job {job}`"),
            },
            _ = tick.tick() => progress.tick(),
        }
    }
}

/// In-process: the data dir's log, the engine and a local worker for the
/// config's targets, stopped once the job ended.
async fn embedded(g: &Home, req: &RecoveryRequest, human: bool) -> anyhow::Result<(End, Progress)> {
    let config = g.load_config(Missing::Fail)?;
    crate::home::check_host(
        &config,
        crate::home::local_pools(&config).as_deref(),
        Some(&g.data_dir),
    )?;
    let command = match req.action {
        RecoveryAction::InPlace { .. } | RecoveryAction::To { .. } => "restore",
        RecoveryAction::Mount { .. } => "mount",
        RecoveryAction::Unmount { .. } => "unmount",
        RecoveryAction::Clone { .. } | RecoveryAction::RemoveClone { .. } => "clone",
        RecoveryAction::Prune => "prune",
    };
    g.check_log(command)?;
    let worker =
        Worker::from_config(WorkerId::from(format!("local-{}", std::process::id())), &config).with_state_dir(
            super::worker::state_dir(None, &config, g.data_dir.join("worker-state")),
        );
    let engine = Engine::builder(&config)
        .data_dir(&g.data_dir)
        .worker(worker)
        .start()
        .await?;
    let followed = follow_local(&engine, req, human).await;
    // The job ended (or was refused): stop at once.
    let stopped = engine.shutdown(Drain::Skip).await;
    let (end, progress) = followed?;
    stopped?;
    let end = end.context("the event log closed before the job ended")?;
    Ok((end, progress))
}

async fn follow_local(
    engine: &Engine,
    req: &RecoveryRequest,
    human: bool,
) -> anyhow::Result<(Option<End>, Progress)> {
    let (accepted, mut events) = engine
        .caller()
        .acting_as(&super::identity())
        .recover_and_follow(req.clone(), "cli")
        .await?;
    let mut progress = Progress::new(accepted.job, human, std::io::stdout().is_terminal());
    if human {
        println!("job {}{}", accepted.job, seen_before(accepted.existing));
    }
    let mut tick = tokio::time::interval(progress.tick_every().unwrap_or(Duration::from_secs(3600)));
    loop {
        tokio::select! {
            ev = events.next() => match ev {
                Some(ev) => {
                    let ev: StoredEvent = ev?;
                    if let Some(end) = progress.on_event(&ev) {
                        return Ok((Some(end), progress));
                    }
                }
                None => return Ok((None, progress)),
            },
            _ = tick.tick() => progress.tick(),
        }
    }
}
