//! `recman audit`: verifies every record of the log (checksum, decoding,
//! sequence, hash chain) and prints each finding with its sequence number;
//! with `--head`, `--check-head`, `--export` or `--verify-export`, the
//! head and export commands of `audit_proof.rs`. Then every checkpoint of
//! the log (`crate::checkpoint`) is compared with a replay of the log to
//! its record: a damaged or mismatching one is a finding too.

use std::path::PathBuf;
use std::process::ExitCode;

use recman_events::audit::audit;
use recman_events::export::{Finding, Head};

use crate::home::Home;

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Exit codes: 0 the log is intact (and matches every --check-head), 1 findings (each\n\
printed with its seq; a checkpoint that does not match a replay of the log is one), 2 the audit could not run (no log in the data dir, log in use, unreadable\n\
store or file). --verify-export: 0 verified, 1 findings, 2 not an export, 3 intact but the\n\
--head given lies outside the range (nothing was checked against it).\n\
The audit never creates a log, and leaves a redb log's file byte-identical\n\
(unless redb must first recover it after a crash).\n\n\
Examples:\n  recman audit --head                            the head to keep elsewhere: SEQ:HASH\n  \
recman audit --check-head 1200:9f3a…           the log still holds record 1200 as published\n  \
recman audit --export 1000.. --out range.jsonl  records 1000 to the head, with their proof\n  \
recman audit --verify-export range.jsonl --head 1200:9f3a…  anywhere, without the log"
)]
pub struct Args {
    /// Print the report as one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Alone: print the log's head (last seq and the BLAKE3 hash of its
    /// record) as SEQ:HASH, to keep outside the log. With --verify-export: a
    /// head published earlier to check the exported range against.
    #[arg(long, value_name = "SEQ:HASH", num_args = 0..=1, conflicts_with_all = ["check_head", "export"])]
    pub head: Option<Option<Head>>,
    /// Besides the audit, check the log against a head published earlier
    /// (SEQ:HASH, repeatable): a log that no longer has that seq, or has
    /// another record there, lost or changed records.
    #[arg(long, value_name = "SEQ:HASH", conflicts_with_all = ["export", "verify_export"])]
    pub check_head: Vec<Head>,
    /// Write records FROM..TO (both included; FROM.. for up to the head)
    /// with their hash-chain proof: one JSON object per line.
    #[arg(long, value_name = "FROM..TO", value_parser = recman_events::export::parse_range, conflicts_with = "verify_export")]
    pub export: Option<(u64, Option<u64>)>,
    /// Where --export writes (a new file; default stdout).
    #[arg(long, value_name = "FILE", requires = "export")]
    pub out: Option<PathBuf>,
    /// Check an export file on its own (no log needed): the chain from its
    /// anchor, each record's CRC, and --head when the range reaches it.
    #[arg(long, value_name = "FILE")]
    pub verify_export: Option<PathBuf>,
}

pub async fn run(g: &Home, a: Args) -> anyhow::Result<ExitCode> {
    if let Some(file) = &a.verify_export {
        return super::audit_proof::verify_export(file, a.head.flatten(), a.json);
    }
    if let Some(Some(h)) = a.head {
        eprintln!(
            "error: --head {h} checks an export (with --verify-export FILE); to check this log against it, \
             write --check-head {h}"
        );
        return Ok(ExitCode::from(2));
    }
    let dir = &g.data_dir;
    let shown = g.log_shown();
    let log = match g.open_log_for_reading() {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: cannot audit the event log in {shown}: {e}");
            return Ok(ExitCode::from(2));
        }
    };
    if a.head.is_some() {
        return super::audit_proof::print_head(&*log, &shown, a.json);
    }
    if let Some((from, to)) = a.export {
        return super::audit_proof::export(&*log, from, to, a.out.as_deref());
    }
    let backend = log.backend();
    let checks = a.check_head.clone();
    let ck_log = log.clone();
    let (report, heads) = tokio::task::spawn_blocking(move || {
        let report = audit(&*log);
        let heads: Vec<Result<Option<Finding>, String>> = checks
            .iter()
            .map(|h| recman_events::export::head::check_head(&*log, h).map_err(|e| e.to_string()))
            .collect();
        (report, heads)
    })
    .await?;
    let mut head_findings = Vec::new();
    let mut unreadable = report.unreadable.clone();
    for (h, r) in a.check_head.iter().zip(heads) {
        match r {
            Ok(None) => {}
            Ok(Some(f)) => head_findings.push(f),
            Err(e) => unreadable = Some(format!("checking the head {h} failed: {e}")),
        }
    }
    // The checkpoints, against a replay of an intact log.
    let mut ck_findings: Vec<Finding> = Vec::new();
    let mut ck_checked = 0usize;
    let mut ck_other = 0usize;
    let ck_place;
    match g.checkpoint_store_for_reading() {
        Err(e) => {
            ck_place = String::new();
            unreadable.get_or_insert(format!("finding the checkpoints failed: {e:#}"));
        }
        Ok(store) => {
            ck_place = store.place();
            if report.is_clean() {
                match crate::checkpoint::verify_all(store.as_ref(), ck_log.as_ref()).await {
                    Ok(verdicts) => {
                        ck_other = verdicts.iter().filter(|v| v.other_format.is_some()).count();
                        ck_checked = verdicts.len() - ck_other;
                        ck_findings.extend(verdicts.into_iter().filter_map(|v| {
                            v.problem.map(|p| Finding {
                                seq: v.seq,
                                message: format!(
                                    "the checkpoint at record {} ({ck_place}) is wrong: {p}",
                                    v.seq
                                ),
                            })
                        }));
                    }
                    Err(e) => {
                        unreadable
                            .get_or_insert(format!("checking the checkpoints in {ck_place} failed: {e:#}"));
                    }
                }
            }
        }
    }
    head_findings.append(&mut ck_findings);
    let clean = report.is_clean() && head_findings.is_empty() && unreadable.is_none();
    if a.json {
        let v = serde_json::json!({
            "data_dir": dir,
            "log": shown,
            "backend": backend.as_str(),
            "clean": clean,
            "records": report.records,
            "last_seq": report.last_seq,
            "findings": report.findings,
            "head_findings": head_findings,
            "heads_checked": a.check_head.iter().map(Head::to_string).collect::<Vec<_>>(),
            "checkpoints_checked": ck_checked,
            "checkpoints_other_format": ck_other,
            "checkpoints": ck_place,
            "unreadable": unreadable,
        });
        println!("{v}");
    } else {
        for f in report.findings.iter().chain(&head_findings) {
            println!("seq {}: {}", f.seq, f.message);
        }
        if let Some(why) = &unreadable {
            eprintln!("error: {why}");
        }
        let verdict = if clean {
            "intact".to_string()
        } else {
            format!("{} finding(s)", report.findings.len() + head_findings.len())
        };
        println!(
            "audited {} records (last seq {}) of the {} log in {}: {verdict}",
            report.records,
            report.last_seq,
            backend.as_str(),
            shown
        );
        if ck_checked > 0 {
            println!("checked {ck_checked} checkpoint(s) in {ck_place} against a replay of the log");
        }
        if ck_other > 0 {
            println!(
                "not checked: {ck_other} intact checkpoint(s) in {ck_place} of another build's format \
                 (this build does not use them; newer ones replace them)"
            );
        }
        if !a.check_head.is_empty() && head_findings.is_empty() && unreadable.is_none() {
            for h in &a.check_head {
                println!(
                    "the log still holds record {} as published ({h}){}",
                    h.seq,
                    if report.is_clean() {
                        ", and every record up to it chains to it"
                    } else {
                        ""
                    }
                );
            }
        }
    }
    Ok(if unreadable.is_some() {
        ExitCode::from(2)
    } else if clean {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
