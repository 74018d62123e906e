//! `recman log archive` and `recman log segments`: move the old records of a
//! data dir's log into closed segment files now, and list the segments.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Subcommand;
use recman_events::log;
use serde_json::json;

use crate::home::Home;

#[derive(Debug, Subcommand)]
pub enum LogCommand {
    /// Move old records out of the live log into closed segment files now.
    Archive(ArchiveArgs),
    /// List the closed segments of the log: records, size, file.
    Segments(SegmentsArgs),
}

#[derive(Debug, clap::Args)]
#[command(
    after_help = "The live log (events.redb) keeps the recent records; older ones go to\n\
DATA_DIR/segments/FIRST-LAST.seg, immutable files that stay part of the log: `recman events`,\n\
`recman audit`, `recman job` and `recman replay --until` read them as before, and the hash chain\n\
runs across. Copy them to cheaper storage like any file, but keep them in segments/: a missing\n\
segment is refused when the log is opened.\n\n\
A running engine archives by itself with `[log] archive_after = \"30d\"` (at start, then daily); this command\n\
is for a stopped one (the log has one owner). The last record always stays live. It then compacts\n\
events.redb, giving the archived records' space back to the file system (the engine's own archiving\n\
reuses that space but cannot shrink the file while it is open).\n\n\
Examples:\n  recman log archive --older-than 30d\n  recman log archive --before 1000000 --segment-records 100000\n\n\
Exit codes: 0 done (also when nothing was old enough), 2 could not run (no log, log in use,\n\
a PostgreSQL log, a damaged segment)."
)]
pub struct ArchiveArgs {
    /// Records recorded longer ago than this (e.g. 30d, 12h).
    #[arg(long, value_name = "DURATION", value_parser = parse_age, required_unless_present = "before", conflicts_with = "before")]
    pub older_than: Option<Duration>,
    /// Records with a sequence number below this one.
    #[arg(long, value_name = "SEQ")]
    pub before: Option<u64>,
    /// About how many records one segment file holds (default: the
    /// config's `[log] segment_records`, else 250000).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1_000..=10_000_000))]
    pub segment_records: Option<u32>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct SegmentsArgs {
    #[arg(long)]
    pub json: bool,
}

fn parse_age(s: &str) -> Result<Duration, String> {
    recman_config::parse_duration(s)
}

pub async fn run(g: &Home, c: LogCommand) -> anyhow::Result<ExitCode> {
    match c {
        LogCommand::Archive(a) => archive(g, a).await,
        LogCommand::Segments(a) => segments(g, a),
    }
}

async fn archive(g: &Home, a: ArchiveArgs) -> anyhow::Result<ExitCode> {
    if g.log_place()?.is_some() {
        bail!(
            "the config's log is in PostgreSQL: archive it with PostgreSQL's own tools \
             (partitioning, pg_dump); segments are for a data dir's log"
        );
    }
    let Some(backend) = log::detect(&g.data_dir)? else {
        bail!("no event log in {}", g.data_dir.display());
    };
    let per_segment = match a.segment_records {
        Some(n) => n as usize,
        None => {
            let path = g.config_file();
            if path.exists() {
                recman_config::Config::load(&path)?.log.segment_records()
            } else {
                log::segments::DEFAULT_SEGMENT_RECORDS
            }
        }
    };
    let dir = g.data_dir.clone();
    let older_than = a.older_than;
    let before = a.before;
    let report = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
        let log = crate::home::open_detected_patiently(&dir)
            .map_err(|e| crate::api::discovery::explain_locked(&dir, e))?;
        let r = match (before, older_than) {
            (Some(seq), _) => log.archive(seq, per_segment)?,
            (None, Some(age)) => {
                crate::archive::run_once(log.as_ref(), age, per_segment, recman_events::clock::now_ms())?
            }
            (None, None) => unreachable!("clap requires one"),
        };
        let last = log.last_seq();
        drop(log);
        // The space of what went into segments, given back (the engine's
        // own archiving cannot: the file is open while it runs).
        // The archive stands if this fails (say, an engine started meanwhile).
        let sizes = match backend {
            log::Backend::Redb => match log::redb_store::RedbStore::compact(&dir) {
                Ok(sizes) => Some(sizes),
                Err(e) => {
                    eprintln!(
                        "warning: archived, but {} was not compacted: {e}",
                        log::redb_store::FILE_NAME
                    );
                    None
                }
            },
            _ => None,
        };
        Ok((r, last, sizes))
    })
    .await
    .context("the archiving task")??;
    let (r, last, sizes) = report;
    if a.json {
        println!(
            "{}",
            json!({
                "segments_written": r.segments,
                "records": r.records,
                "bytes": r.bytes,
                "archived_through": r.archived_through,
                "last_seq": last,
                "live_file_bytes_before": sizes.map(|s| s.0),
                "live_file_bytes": sizes.map(|s| s.1),
            })
        );
    } else if r.records == 0 {
        println!(
            "nothing to archive: the log's records {} to {last} are live and none is old enough \
             (the last record always stays live)",
            r.archived_through + 1
        );
    } else {
        println!(
            "archived {} records into {} segment file(s) ({} bytes) in {}; records 1 to {} are \
             in segments, {} to {last} live",
            r.records,
            r.segments,
            r.bytes,
            g.data_dir.join(log::segments::DIR_NAME).display(),
            r.archived_through,
            r.archived_through + 1
        );
    }
    if let (Some((before, after)), false) = (sizes, a.json) {
        println!(
            "compacted the live log file {}: {} -> {} bytes",
            g.data_dir.join(log::redb_store::FILE_NAME).display(),
            before,
            after
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn segments(g: &Home, a: SegmentsArgs) -> anyhow::Result<ExitCode> {
    let log = g
        .open_log_for_reading()
        .map_err(|e| crate::api::discovery::explain_locked(&g.data_dir, e))?;
    let segs = log.segments()?;
    if a.json {
        let list: Vec<_> = segs
            .iter()
            .map(|s| json!({"first": s.first, "last": s.last, "bytes": s.bytes, "path": s.path}))
            .collect();
        println!("{}", json!({"segments": list, "last_seq": log.last_seq()}));
        return Ok(ExitCode::SUCCESS);
    }
    if segs.is_empty() {
        println!("no closed segments: all {} records are live", log.last_seq());
        return Ok(ExitCode::SUCCESS);
    }
    println!("{:>12} {:>12} {:>12}  FILE", "FIRST", "LAST", "BYTES");
    for s in segs.iter() {
        println!(
            "{:>12} {:>12} {:>12}  {}",
            s.first,
            s.last,
            s.bytes,
            s.path.display()
        );
    }
    let through = segs.last().map_or(0, |s| s.last);
    println!(
        "{} segment(s) hold records 1 to {through}; {} to {} are live",
        segs.len(),
        through + 1,
        log.last_seq()
    );
    Ok(ExitCode::SUCCESS)
}
