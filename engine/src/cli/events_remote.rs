//! `recman events` while a server owns the log: the same output, read through
//! the API (`GET /v1/events` pages, then its SSE feed for `--follow`).

use std::io::Write;
use std::process::ExitCode;

use recman_events::{EventMessage, StoredEvent};
use serde::Deserialize;

use super::events::{line, Args};
use super::Global;
use crate::api::client::Client;

#[derive(Deserialize)]
struct Page {
    events: Vec<EventMessage>,
    next: u64,
}

fn print(m: EventMessage, a: &Args, out: &mut impl Write) -> anyhow::Result<()> {
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

/// `None` when no server runs for the data dir (read the log directly).
pub async fn run(g: &Global, a: &Args) -> anyhow::Result<Option<ExitCode>> {
    let Some(c) = Client::discover(g, None).await? else {
        return Ok(None);
    };
    let mut out = std::io::stdout().lock();
    let mut next = a.from.max(1);
    loop {
        let p: Page = c.get(&format!("/v1/events?from={next}&limit=10000")).await?;
        if p.events.is_empty() {
            break;
        }
        next = p.next;
        for m in p.events {
            print(m, a, &mut out)?;
        }
    }
    out.flush()?;
    if !a.follow {
        return Ok(Some(ExitCode::SUCCESS));
    }
    let mut stream = c.stream("/v1/events", Some(next - 1)).await?;
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return Ok(Some(ExitCode::SUCCESS)),
            ev = stream.next() => match ev? {
                Some(ev) => {
                    if let Ok(m) = serde_json::from_str::<EventMessage>(&ev.data) {
                        print(m, a, &mut out)?;
                        out.flush()?;
                    }
                }
                None => return Ok(Some(ExitCode::SUCCESS)),
            },
        }
    }
}
