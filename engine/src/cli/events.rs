//! `recman events`: prints the event log, one readable line (or one JSON
//! `EventMessage`) per event, optionally for one job, optionally following;
//! while a server owns the log (or with `--server URL`, from another host),
//! the same output read through its API (`GET /v1/events` pages, then its
//! SSE feed for `--follow`).

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use recman_events::log::LogError;
use recman_events::model::StoredEvent;
use recman_events::{EventMessage, JobId, SCHEMA_VERSION};
use serde::Deserialize;

use crate::client::Client;
use crate::home::Home;
use crate::render::line;
use crate::source::ServerArg;

/// Events read per chunk.
const CHUNK: usize = 4096;
/// How often `--follow` looks for new events.
const FOLLOW_POLL: Duration = Duration::from_millis(500);

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  recman events --job 019ab3c4-…      one job's history\n  \
recman events --json --from 1000    machine-readable, one EventMessage per line\n\n\
The log belongs to one process at a time: while an engine (`recman up`, `recman engine`) owns it, `--follow`\n\
waits and says so; between CLI runs it picks up new events every half second."
)]
pub struct Args {
    /// First sequence number to print.
    #[arg(long, default_value_t = 1, value_name = "SEQ")]
    pub from: u64,
    /// Only the events of this job (its full UUID).
    #[arg(long, value_name = "ID")]
    pub job: Option<JobId>,
    /// One JSON object per line (the `EventMessage` wire schema).
    #[arg(long)]
    pub json: bool,
    /// Keep running and print new events as they are appended.
    #[arg(long)]
    pub follow: bool,
    #[command(flatten)]
    pub server: ServerArg,
}

pub async fn run(g: &Home, a: Args) -> anyhow::Result<ExitCode> {
    if let Some(c) = Client::discover(g, a.server.server.as_deref()).await? {
        return remote(&c, &a).await;
    }
    let shown = g.log_shown();
    let mut next = a.from.max(1);
    let mut out = std::io::stdout().lock();
    next = print_from(g, next, &a, &mut out)
        .map_err(|e| anyhow::anyhow!("cannot read the event log in {shown}: {e}"))?;
    if !a.follow {
        return Ok(ExitCode::SUCCESS);
    }
    let mut told_locked = false;
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return Ok(ExitCode::SUCCESS),
            _ = tokio::time::sleep(FOLLOW_POLL) => {}
        }
        match print_from(g, next, &a, &mut out) {
            Ok(n) => {
                next = n;
                told_locked = false;
            }
            Err(e) if matches!(e.downcast_ref::<LogError>(), Some(LogError::Locked(_))) => {
                if !told_locked {
                    eprintln!("note: the log is owned by a running recman process; waiting for it to let go");
                    told_locked = true;
                }
            }
            Err(e) => anyhow::bail!("cannot read the event log in {shown}: {e}"),
        }
    }
}

/// Opens the log (the data dir's, or `[log] postgres`), prints events from
/// `next` on, closes it, returns the next seq to print.
fn print_from(g: &Home, mut next: u64, a: &Args, out: &mut impl Write) -> anyhow::Result<u64> {
    // Keep the LogError itself (for `Locked` below), formatted once: its
    // Display already includes its source.
    let log = g.open_log_for_reading()?;
    if let Some(job) = a.job {
        let from = next;
        for e in log.read_job(job)?.into_iter().filter(|e| e.seq >= from) {
            print_event(&e, a.json, out)?;
            next = e.seq + 1;
        }
    } else {
        loop {
            let chunk = log.read(next, CHUNK)?;
            let Some(last) = chunk.last().map(|e| e.seq) else {
                break;
            };
            for e in &chunk {
                print_event(e, a.json, out)?;
            }
            next = last + 1;
            if chunk.len() < CHUNK {
                break;
            }
        }
    }
    out.flush()?;
    Ok(next)
}

fn print_event(e: &StoredEvent, json: bool, out: &mut impl Write) -> anyhow::Result<()> {
    if json {
        let msg = EventMessage {
            schema_version: SCHEMA_VERSION,
            seq: e.seq,
            event: e.event.clone(),
        };
        serde_json::to_writer(&mut *out, &msg)?;
        writeln!(out)?;
    } else {
        writeln!(out, "{}", line(e))?;
    }
    Ok(())
}

#[derive(Deserialize)]
struct Page {
    events: Vec<EventMessage>,
    next: u64,
}

fn print_message(m: EventMessage, a: &Args, out: &mut impl Write) -> anyhow::Result<()> {
    if a.job.is_some_and(|j| j != m.event.job) {
        return Ok(());
    }
    if a.json {
        serde_json::to_writer(&mut *out, &m)?;
        writeln!(out)?;
    } else {
        let e = StoredEvent {
            seq: m.seq,
            event: m.event,
        };
        writeln!(out, "{}", line(&e))?;
    }
    Ok(())
}

/// The same output through the server that owns the log.
async fn remote(c: &Client, a: &Args) -> anyhow::Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    let mut next = a.from.max(1);
    loop {
        let p: Page = c.get(&format!("/v1/events?from={next}&limit=10000")).await?;
        if p.events.is_empty() {
            break;
        }
        next = p.next;
        for m in p.events {
            print_message(m, a, &mut out)?;
        }
    }
    out.flush()?;
    if !a.follow {
        return Ok(ExitCode::SUCCESS);
    }
    let mut stream = c.stream("/v1/events", Some(next - 1)).await?;
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return Ok(ExitCode::SUCCESS),
            ev = stream.next() => match ev? {
                Some(ev) => {
                    if let Ok(m) = serde_json::from_str::<EventMessage>(&ev.data) {
                        print_message(m, a, &mut out)?;
                        out.flush()?;
                    }
                }
                None => return Ok(ExitCode::SUCCESS),
            },
        }
    }
}
