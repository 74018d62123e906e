//! The head and export parts of `recman audit`: `--head` prints the log's
//! head, `--export FROM..TO` writes a range with its hash-chain proof, and
//! `--verify-export FILE [--head SEQ:HASH]` checks such a file anywhere
//! (events/src/export/ has the format and the checks).

use std::io::{BufReader, BufWriter, Write};
use std::path::Path;
use std::process::ExitCode;

use recman_events::clock::now_ms;
use recman_events::export::verify::{verify, HeadVerdict, VerifyError};
use recman_events::export::write::{export as write_export, ExportError};
use recman_events::export::{head::head, Head};
use recman_events::EventLog;

/// `--head`: `SEQ:HASH` (or a JSON object).
pub fn print_head(log: &dyn EventLog, shown: &str, json: bool) -> anyhow::Result<ExitCode> {
    let h = match head(log) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("error: cannot read the head of the event log in {shown}: {e}");
            return Ok(ExitCode::from(2));
        }
    };
    if json {
        let line = h.line(now_ms());
        println!(
            "{}",
            serde_json::json!({"seq": h.seq, "hash": line.hash, "at": line.at, "at_ms": line.at_ms, "head": h.to_string()})
        );
    } else {
        println!("{h}");
    }
    Ok(ExitCode::SUCCESS)
}

/// `--export FROM..TO [--out FILE]`: 0 written, 1 written with damaged or
/// missing records (named; run `recman audit`), 2 not written.
pub fn export(
    log: &dyn EventLog,
    from: u64,
    to: Option<u64>,
    out: Option<&Path>,
) -> anyhow::Result<ExitCode> {
    let at = now_ms();
    let result = match out {
        None => {
            let stdout = std::io::stdout();
            let mut w = BufWriter::new(stdout.lock());
            write_export(log, from, to, at, &mut w)
        }
        Some(path) => {
            let file = match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(path)
            {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    eprintln!(
                        "error: {} exists: the export never overwrites a file (remove it or choose another --out)",
                        path.display()
                    );
                    return Ok(ExitCode::from(2));
                }
                Err(e) => {
                    eprintln!("error: cannot create {}: {e}", path.display());
                    return Ok(ExitCode::from(2));
                }
            };
            let mut w = BufWriter::new(file);
            let r = write_export(log, from, to, at, &mut w).and_then(|done| {
                let file = w.into_inner().map_err(|e| ExportError::Write(e.into_error()))?;
                file.sync_all()?;
                Ok(done)
            });
            if r.is_err() {
                // Only a file this command created: nothing of the user's is lost.
                let _ = std::fs::remove_file(path);
            }
            r
        }
    };
    let done = match result {
        Ok(d) => d,
        Err(e) => {
            eprintln!("error: no export written: {e}");
            return Ok(ExitCode::from(2));
        }
    };
    // With stdout carrying the export, the summary goes to stderr.
    let summary = format!(
        "exported records {}..={} ({} records) anchored at seq {}; the log's head is {}{}",
        done.from,
        done.to,
        done.records,
        done.anchor.seq,
        done.head,
        out.map(|p| format!(" -> {}", p.display())).unwrap_or_default()
    );
    if out.is_some() {
        println!("{summary}");
    } else {
        eprintln!("{summary}");
    }
    if done.damaged.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    for (a, b) in &done.damaged {
        let which = if a == b {
            format!("record {a}")
        } else {
            format!("records {a}..={b}")
        };
        eprintln!("warning: {which} of the range are missing or damaged in the log (exported as stored): run `recman audit`");
    }
    Ok(ExitCode::from(1))
}

/// `--verify-export FILE [--head SEQ:HASH]`: 0 verified, 1 findings, 2 not
/// an export (or unreadable), 3 intact but the head lies outside the range.
pub fn verify_export(file: &Path, published: Option<Head>, json: bool) -> anyhow::Result<ExitCode> {
    let f = match std::fs::File::open(file) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("error: cannot open {}: {e}", file.display());
            return Ok(ExitCode::from(2));
        }
    };
    let report = match verify(BufReader::new(f), published) {
        Ok(r) => r,
        Err(e @ (VerifyError::NotAnExport(_) | VerifyError::Version(_) | VerifyError::Io(_))) => {
            eprintln!("error: {}: {e}", file.display());
            return Ok(ExitCode::from(2));
        }
    };
    let not_covered = matches!(report.published_head, Some(HeadVerdict::NotCovered { .. }));
    let code = if !report.is_clean() {
        1
    } else if not_covered {
        3
    } else {
        0
    };
    if json {
        let mut v = serde_json::to_value(&report)?;
        v["file"] = file.display().to_string().into();
        v["verified"] = (code == 0).into();
        println!("{v}");
    } else {
        let mut out = std::io::stdout().lock();
        for f in &report.findings {
            writeln!(out, "seq {}: {}", f.seq, f.message)?;
        }
        if report.more_findings > 0 {
            writeln!(out, "… and {} more finding(s)", report.more_findings)?;
        }
        for c in &report.checked {
            writeln!(out, "checked: {c}")?;
        }
        for n in &report.not_checked {
            writeln!(out, "not checked: {n}")?;
        }
        let verdict = match code {
            0 if published.is_some() => "verified against the published head".to_string(),
            0 => "verified (on its own: no published head given)".to_string(),
            3 => "intact on its own, NOT checked against the published head (see above)".to_string(),
            _ => format!(
                "NOT verified: {} finding(s)",
                report.findings.len() as u64 + report.more_findings
            ),
        };
        writeln!(
            out,
            "{}: records {}..={} ({} read): {verdict}",
            file.display(),
            report.from,
            report.to,
            report.records
        )?;
    }
    Ok(ExitCode::from(code))
}
