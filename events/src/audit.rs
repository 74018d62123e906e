//! Verifying a stored log: `audit` reports every damaged, changed, removed or
//! reordered record; `replay` is the fast checked walk (for startup and the
//! benchmark) that stops at the first problem.
//!
//! Checks per record: the envelope and its CRC, rkyv validation of the payload,
//! the sequence number in the payload equals the key it is stored under, keys
//! are contiguous from 1 (a gap is a removed record), and `prev_hash` equals the
//! BLAKE3 hash of the previous record's bytes.

use rkyv::util::AlignedVec;
use serde::Serialize;

use crate::codec::{self, Archived};
use crate::log::{EventLog, LogError};
use crate::model::ArchivedEventBody;

/// Records read per `scan_raw` call.
const CHUNK: usize = 65_536;

/// One problem, at one sequence number (shared with the export's verifier).
pub use crate::export::Finding;

/// What `audit` found.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct AuditReport {
    /// Records read.
    pub records: u64,
    /// Highest key seen (0 for an empty log).
    pub last_seq: u64,
    pub findings: Vec<Finding>,
    /// Set when the store itself could not be read to the end: the audit is
    /// incomplete, which is different from "found problems".
    pub unreadable: Option<String>,
}

impl AuditReport {
    /// True when every record was read and nothing was found.
    pub fn is_clean(&self) -> bool {
        self.findings.is_empty() && self.unreadable.is_none()
    }
}

/// The per-record checks, carried from one record to the next.
struct Walker {
    /// The key the next record should have.
    expected: u64,
    /// Hash of the previous record, when it could be checked.
    prev: Option<[u8; 32]>,
    scratch: AlignedVec<16>,
}

impl Walker {
    fn new() -> Self {
        Walker {
            expected: 1,
            prev: Some(codec::GENESIS_HASH),
            scratch: AlignedVec::with_capacity(4096),
        }
    }

    /// Checks one record and reports its problems to `report`; returns its
    /// archived form when it passed every check.
    fn step(&mut self, key: u64, bytes: &[u8], report: &mut dyn FnMut(Finding)) -> Option<Archived<'_>> {
        let mut clean = true;
        if key != self.expected {
            let message = if key == self.expected + 1 {
                format!("record {} is missing: it was removed from the log", self.expected)
            } else {
                format!(
                    "records {}..={} are missing: they were removed from the log",
                    self.expected,
                    key - 1
                )
            };
            report(Finding {
                seq: self.expected,
                message,
            });
            clean = false;
            // The chain across a gap is broken by definition; don't report it twice.
            self.prev = None;
        }
        self.expected = key + 1;
        let (version, payload) = match codec::open_envelope(bytes) {
            Ok(p) => p,
            Err(e) => {
                report(Finding {
                    seq: key,
                    message: format!("record {key} is damaged: {e}"),
                });
                self.prev = None;
                return None;
            }
        };
        self.scratch.clear();
        self.scratch.extend_from_slice(payload);
        let archived = match codec::access(version, &self.scratch) {
            Ok(a) => a,
            Err(e) => {
                report(Finding {
                    seq: key,
                    message: format!("record {key} has a valid checksum but does not decode: {e}"),
                });
                self.prev = None;
                return None;
            }
        };
        let said = archived.seq();
        if said != key {
            report(Finding {
                seq: key,
                message: format!(
                    "record stored under seq {key} says it is seq {said}: records were moved or reordered"
                ),
            });
        }
        if let Some(prev) = self.prev {
            if archived.prev_hash() != prev {
                let message = if key == 1 {
                    "hash chain broken at record 1: it does not start from the genesis hash \
                     (records before it were removed or it was replaced)"
                        .to_string()
                } else {
                    format!(
                        "hash chain broken at record {key}: its prev_hash does not match record {}; \
                         record {} was changed, or records were removed or reordered",
                        key - 1,
                        key - 1
                    )
                };
                report(Finding { seq: key, message });
                clean = false;
            }
        }
        self.prev = Some(codec::hash(bytes));
        clean.then_some(archived)
    }
}

/// Reads every record of `log` and reports every problem found.
pub fn audit(log: &dyn EventLog) -> AuditReport {
    let mut report = AuditReport::default();
    let mut walker = Walker::new();
    let mut from = 1;
    loop {
        let mut last_key = None;
        let mut findings = Vec::new();
        let res = log.scan_raw(from, CHUNK, &mut |key, bytes| {
            last_key = Some(key);
            walker.step(key, bytes, &mut |f| findings.push(f));
        });
        report.findings.append(&mut findings);
        match res {
            Err(e) => {
                report.unreadable = Some(format!("reading the log from seq {from} failed: {e}"));
                break;
            }
            Ok(n) => {
                report.records += n as u64;
                match last_key {
                    Some(k) if n == CHUNK && k < u64::MAX => {
                        report.last_seq = k;
                        from = k + 1;
                    }
                    Some(k) => {
                        report.last_seq = k;
                        break;
                    }
                    None => break,
                }
            }
        }
    }
    // The records were read from their own table; a damaged job index is a
    // finding too (it serves `recman job` and `events --job`).
    for (first, why) in log.index_damage() {
        report.findings.push(Finding {
            seq: first,
            message: format!("the job index is damaged: {why}"),
        });
    }
    report
}

/// Why `replay` stopped.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("the log is damaged at {0}; run `recman audit` for every finding")]
    Damaged(Finding),
    #[error(transparent)]
    Log(#[from] LogError),
}

/// What `replay` walked.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReplayStats {
    pub records: u64,
    pub last_seq: u64,
}

/// Walks the whole log with every check of `audit` and hands each event's
/// body, in its validated archived form (no owned copy is built), to `f`.
/// Stops at the first problem.
pub fn replay(
    log: &dyn EventLog,
    mut f: impl FnMut(u64, &ArchivedEventBody),
) -> Result<ReplayStats, ReplayError> {
    let mut stats = ReplayStats::default();
    let mut walker = Walker::new();
    let mut from = 1;
    loop {
        let mut first_finding: Option<Finding> = None;
        let mut last_key = None;
        let n = log.scan_raw(from, CHUNK, &mut |key, bytes| {
            if first_finding.is_some() {
                return;
            }
            last_key = Some(key);
            let mut found = None;
            if let Some(rec) = walker.step(key, bytes, &mut |finding| {
                found.get_or_insert(finding);
            }) {
                f(key, rec.body());
            }
            first_finding = found;
        })?;
        if let Some(finding) = first_finding {
            return Err(ReplayError::Damaged(finding));
        }
        stats.records += n as u64;
        match last_key {
            Some(k) => {
                stats.last_seq = k;
                if n < CHUNK || k == u64::MAX {
                    return Ok(stats);
                }
                from = k + 1;
            }
            None => return Ok(stats),
        }
    }
}
