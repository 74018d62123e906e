//! `recman audit`: verifies every record of the log (checksum, decoding,
//! sequence, hash chain) and prints each finding with its sequence number.

use std::process::ExitCode;

use recman_events::audit::audit;
use recman_events::log::open_for_reading;

use crate::home::Home;

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Exit codes: 0 the log is intact, 1 findings (each printed with its seq),\n\
2 the audit could not run (no log in the data dir, log in use, unreadable store).\n\
The audit never creates a log, and leaves a redb log's file byte-identical\n\
(unless redb must first recover it after a crash)."
)]
pub struct Args {
    /// Print the report as one JSON object.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(g: &Home, a: Args) -> anyhow::Result<ExitCode> {
    let dir = &g.data_dir;
    let log = match open_for_reading(dir) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: cannot audit the event log in {}: {e}", dir.display());
            return Ok(ExitCode::from(2));
        }
    };
    let backend = log.backend();
    let report = tokio::task::spawn_blocking(move || audit(&*log)).await?;
    if a.json {
        let v = serde_json::json!({
            "data_dir": dir,
            "backend": backend.as_str(),
            "clean": report.is_clean(),
            "records": report.records,
            "last_seq": report.last_seq,
            "findings": report.findings,
            "unreadable": report.unreadable,
        });
        println!("{v}");
    } else {
        for f in &report.findings {
            println!("seq {}: {}", f.seq, f.message);
        }
        if let Some(why) = &report.unreadable {
            eprintln!("error: {why}");
        }
        let verdict = if report.is_clean() {
            "intact".to_string()
        } else {
            format!("{} finding(s)", report.findings.len())
        };
        println!(
            "audited {} records (last seq {}) of the {} log in {}: {verdict}",
            report.records,
            report.last_seq,
            backend.as_str(),
            dir.display()
        );
    }
    Ok(if report.unreadable.is_some() {
        ExitCode::from(2)
    } else if report.findings.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
