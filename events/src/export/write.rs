//! Writes an export of a log's range (`recman audit --export FROM..TO`):
//! the header with the anchor, every record as stored, and the head, one
//! JSON line each, streamed in chunks (memory does not grow with the range).

use std::io::Write;

use super::head::{head, record};
use super::{to_hex, Anchor, Head, Header, Line, RecordLine, EXPORT_VERSION, FORMAT};
use crate::codec;
use crate::log::{EventLog, LogError};

/// Records read per `scan_raw` call.
const CHUNK: usize = 4096;

/// Why an export could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("{0}")]
    Range(String),
    #[error(transparent)]
    Log(#[from] LogError),
    #[error("cannot write the export: {0}")]
    Write(#[from] std::io::Error),
}

/// What was written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Exported {
    pub from: u64,
    pub to: u64,
    pub records: u64,
    pub anchor: Head,
    /// The log's head when it was written.
    pub head: Head,
    /// Seqs of the range (first, last) that the log does not hold, or whose
    /// bytes do not decode: exported as they are (the verifier names them),
    /// and worth a `recman audit`.
    pub damaged: Vec<(u64, u64)>,
}

/// Writes records `from..=to` (`to`: the head when `None`) of `log` to `out`.
pub fn export(
    log: &dyn EventLog,
    from: u64,
    to: Option<u64>,
    at_ms: u64,
    out: &mut dyn Write,
) -> Result<Exported, ExportError> {
    let head = head(log)?;
    let to = to.unwrap_or(head.seq);
    if from == 0 || to < from {
        return Err(ExportError::Range(format!("the range {from}..={to} is empty")));
    }
    if to > head.seq {
        return Err(ExportError::Range(format!(
            "the log ends at seq {}: it has no records {}..={to}",
            head.seq,
            head.seq.max(from - 1) + 1
        )));
    }
    let anchor = if from == 1 {
        Head::EMPTY
    } else {
        let bytes = record(log, from - 1)?.ok_or_else(|| {
            ExportError::Range(format!(
                "record {} (the anchor of a range from {from}) is missing from the log: run `recman audit`",
                from - 1
            ))
        })?;
        Head {
            seq: from - 1,
            hash: codec::hash(&bytes),
        }
    };
    let header = Line::Header(Header {
        format: FORMAT.into(),
        version: EXPORT_VERSION,
        from,
        to,
        anchor: Anchor {
            seq: anchor.seq,
            hash: anchor.hash_hex(),
        },
        exported_at: crate::time::rfc3339(at_ms),
        exported_at_ms: at_ms,
        backend: log.backend().as_str().into(),
        record_version: codec::RECORD_VERSION,
    });
    line(out, &header)?;
    let mut damaged: Vec<(u64, u64)> = Vec::new();
    let mut records = 0u64;
    let mut expected = from;
    let mut next = from;
    let mut failed: Option<std::io::Error> = None;
    while next <= to {
        let mut last = None;
        let want = CHUNK.min((to - next + 1) as usize);
        log.scan_raw(next, want, &mut |seq, bytes| {
            if seq > to || failed.is_some() {
                return;
            }
            last = Some(seq);
            if seq > expected {
                damaged.push((expected, seq - 1));
            }
            expected = seq + 1;
            let event = match codec::decode(bytes) {
                Ok(rec) => serde_json::to_value(&rec.event).unwrap_or(serde_json::Value::Null),
                Err(_) => {
                    damaged.push((seq, seq));
                    serde_json::Value::Null
                }
            };
            let rec = Line::Record(RecordLine {
                seq,
                hash: to_hex(&codec::hash(bytes)),
                bytes: to_hex(bytes),
                event,
            });
            records += 1;
            if let Err(e) = line(out, &rec) {
                failed = Some(e);
            }
        })?;
        if let Some(e) = failed.take() {
            return Err(e.into());
        }
        match last {
            Some(s) if s < to && s < u64::MAX => next = s + 1,
            _ => break,
        }
    }
    if expected <= to {
        damaged.push((expected, to));
    }
    line(out, &Line::Head(head.line(at_ms)))?;
    out.flush()?;
    Ok(Exported {
        from,
        to,
        records,
        anchor,
        head,
        damaged,
    })
}

fn line(out: &mut dyn Write, l: &Line) -> std::io::Result<()> {
    serde_json::to_writer(&mut *out, l)?;
    out.write_all(b"\n")
}
