//! Checks an export file on its own (`recman audit --verify-export`): the
//! chain from the anchor through every record (CRC, decoding, sequence,
//! `prev_hash`), that the readable copies match the bytes, the head line,
//! and a head published earlier when the range reaches it. It reads line by
//! line (no line over [`MAX_LINE`], at most [`MAX_FINDINGS`] kept), so a
//! hostile file costs time in proportion to its size and nothing more.

use std::io::{BufRead, Read};

use serde::Serialize;

use super::{
    from_hex, hash32, to_hex, Finding, Head, Header, Line, RecordLine, EXPORT_VERSION, FORMAT, MAX_LINE,
};
use crate::codec;

/// Findings kept in a report; later ones are counted only.
pub const MAX_FINDINGS: usize = 1000;

/// Why a file could not be verified at all (not: what it is wrong about).
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("cannot read the export: {0}")]
    Io(#[from] std::io::Error),
    #[error("not a recman audit export: {0}")]
    NotAnExport(String),
    #[error("the export has format version {0}; this recman reads version {EXPORT_VERSION} (upgrade it)")]
    Version(u32),
}

/// What became of a published head given to the verifier.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum HeadVerdict {
    /// The range reaches the head and matches it.
    Matches { message: String },
    /// The range does not reach the head: nothing was checked against it.
    NotCovered { message: String },
    /// The range reaches the head and differs from it (also a finding).
    Differs { message: String },
}

/// What the verifier found, checked, and could not check.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    pub from: u64,
    pub to: u64,
    /// Record lines read.
    pub records: u64,
    /// The export's own head line (the log's head when it was written).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub export_head: Option<String>,
    pub findings: Vec<Finding>,
    /// Findings beyond [`MAX_FINDINGS`], counted only.
    pub more_findings: u64,
    /// What was checked, one sentence each.
    pub checked: Vec<String>,
    /// What could not be checked, and what would check it.
    pub not_checked: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub published_head: Option<HeadVerdict>,
}

impl VerifyReport {
    /// True without findings (a published head not covered is no finding).
    pub fn is_clean(&self) -> bool {
        self.findings.is_empty() && self.more_findings == 0
    }

    fn find(&mut self, seq: u64, message: impl Into<String>) {
        if self.findings.len() < MAX_FINDINGS {
            self.findings.push(Finding {
                seq,
                message: message.into(),
            });
        } else {
            self.more_findings += 1;
        }
    }
}

/// Checks the export read from `input`, against `published` when given.
pub fn verify(input: impl BufRead, published: Option<Head>) -> Result<VerifyReport, VerifyError> {
    let mut lines = Lines {
        input,
        buf: Vec::new(),
        no: 0,
    };
    let header = match lines.next()? {
        None => return Err(VerifyError::NotAnExport("the file is empty".into())),
        Some((_, Err(why))) => return Err(VerifyError::NotAnExport(format!("line 1: {why}"))),
        Some((_, Ok(bytes))) => header(bytes)?,
    };
    let mut w = Walk::new(&header, published);
    let mut head_line = None;
    while let Some((no, line)) = lines.next()? {
        let at = w.expected;
        let line = match line
            .and_then(|b| serde_json::from_slice::<Line>(b).map_err(|e| format!("not an export line: {e}")))
        {
            Ok(l) => l,
            Err(why) => {
                w.report.find(at, format!("line {no} is unreadable: {why}"));
                w.prev = None;
                continue;
            }
        };
        if let Some((seq, _)) = &head_line {
            w.report.find(
                *seq,
                format!("line {no} follows the head line, which must be the last"),
            );
            continue;
        }
        match line {
            Line::Header(_) => w.report.find(at, format!("line {no} is a second header")),
            Line::Record(r) => w.record(r),
            Line::Head(h) => match hash32(&h.hash) {
                Some(hash) => head_line = Some((h.seq, hash)),
                None => w
                    .report
                    .find(h.seq, format!("line {no}: the head's hash is not 64 hex digits")),
            },
        }
    }
    Ok(w.finish(head_line))
}

/// Lines of at most [`MAX_LINE`] bytes, numbered from 1.
struct Lines<R> {
    input: R,
    buf: Vec<u8>,
    no: u64,
}

impl<R: BufRead> Lines<R> {
    /// The next non-empty line (without its newline) and its number, or why
    /// it is refused.
    #[allow(clippy::type_complexity)]
    fn next(&mut self) -> std::io::Result<Option<(u64, Result<&[u8], String>)>> {
        loop {
            self.buf.clear();
            let n = (&mut self.input)
                .take(MAX_LINE as u64 + 1)
                .read_until(b'\n', &mut self.buf)?;
            if n == 0 {
                return Ok(None);
            }
            self.no += 1;
            if self.buf.last() == Some(&b'\n') {
                self.buf.pop();
            } else if self.buf.len() > MAX_LINE {
                // Skip the rest of this line without keeping it.
                loop {
                    let chunk = self.input.fill_buf()?;
                    if chunk.is_empty() {
                        break;
                    }
                    match chunk.iter().position(|&b| b == b'\n') {
                        Some(i) => {
                            self.input.consume(i + 1);
                            break;
                        }
                        None => {
                            let len = chunk.len();
                            self.input.consume(len);
                        }
                    }
                }
                return Ok(Some((self.no, Err(format!("longer than {MAX_LINE} bytes")))));
            }
            if self.buf.last() == Some(&b'\r') {
                self.buf.pop();
            }
            if !self.buf.iter().all(u8::is_ascii_whitespace) {
                return Ok(Some((self.no, Ok(&self.buf))));
            }
        }
    }
}

fn header(bytes: &[u8]) -> Result<Header, VerifyError> {
    let v: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|e| VerifyError::NotAnExport(format!("line 1 is not JSON: {e}")))?;
    if v["type"] != "header" || v["format"] != FORMAT {
        return Err(VerifyError::NotAnExport(format!(
            "line 1 is not a header with \"format\": \"{FORMAT}\""
        )));
    }
    match v["version"].as_u64() {
        Some(n) if n == u64::from(EXPORT_VERSION) => {}
        Some(n) => return Err(VerifyError::Version(n.min(u64::from(u32::MAX)) as u32)),
        None => return Err(VerifyError::NotAnExport("the header has no version".into())),
    }
    match serde_json::from_value::<Line>(v) {
        Ok(Line::Header(h)) if h.from == 0 || h.to < h.from => Err(VerifyError::NotAnExport(format!(
            "the header's range {}..={} is empty or starts at 0",
            h.from, h.to
        ))),
        Ok(Line::Header(h)) => Ok(h),
        Ok(_) => unreachable!("the type was checked"),
        Err(e) => Err(VerifyError::NotAnExport(format!("the header is incomplete: {e}"))),
    }
}

/// The chain, carried from one record line to the next.
struct Walk {
    from: u64,
    to: u64,
    /// The seq the next record line should have.
    expected: u64,
    /// Hash of the previous record, when it could be computed.
    prev: Option<[u8; 32]>,
    anchor: Option<[u8; 32]>,
    /// The last record line: seq and hash.
    last: Option<(u64, [u8; 32])>,
    published: Option<Head>,
    /// Hash of the record at the published head's seq, if the range has it.
    at_published: Option<[u8; 32]>,
    report: VerifyReport,
}

impl Walk {
    fn new(h: &Header, published: Option<Head>) -> Walk {
        let mut report = VerifyReport {
            from: h.from,
            to: h.to,
            ..Default::default()
        };
        let anchor = hash32(&h.anchor.hash);
        if h.anchor.seq.checked_add(1) != Some(h.from) {
            report.find(
                h.from,
                format!(
                    "the header's anchor is seq {}, not the record before {}",
                    h.anchor.seq, h.from
                ),
            );
        }
        if anchor.is_none() {
            report.find(h.from, "the header's anchor hash is not 64 hex digits");
        }
        if h.from == 1 && anchor.is_some_and(|a| a != codec::GENESIS_HASH) {
            report.find(
                1,
                "a range from seq 1 must be anchored at the genesis hash (all zeros)",
            );
        }
        Walk {
            from: h.from,
            to: h.to,
            expected: h.from,
            prev: anchor,
            anchor,
            last: None,
            published,
            at_published: None,
            report,
        }
    }

    fn record(&mut self, r: RecordLine) {
        let seq = r.seq;
        let mut in_order = true;
        if seq > self.to || seq < self.from {
            self.report.find(
                seq,
                format!(
                    "record {seq} is outside the range {}..={} the header declares",
                    self.from, self.to
                ),
            );
            in_order = false;
        } else if seq > self.expected {
            let message = if seq == self.expected + 1 {
                format!(
                    "record {} is missing from the export: it was removed",
                    self.expected
                )
            } else {
                format!(
                    "records {}..={} are missing from the export: they were removed",
                    self.expected,
                    seq - 1
                )
            };
            self.report.find(self.expected, message);
            in_order = false;
        } else if seq < self.expected {
            self.report.find(
                seq,
                format!(
                    "record {seq} comes after record {}: records were reordered or repeated",
                    self.expected - 1
                ),
            );
            in_order = false;
        }
        self.expected = self.expected.max(seq.saturating_add(1));
        let Some(bytes) = from_hex(&r.bytes) else {
            self.report
                .find(seq, format!("record {seq}: its bytes are not hex"));
            self.prev = None;
            return;
        };
        let hash = codec::hash(&bytes);
        if hash32(&r.hash) != Some(hash) {
            self.report.find(
                seq,
                format!(
                    "record {seq}: its hash field {} is not the BLAKE3 of its bytes ({}): the bytes or the hash were changed",
                    r.hash,
                    to_hex(&hash)
                ),
            );
        }
        if self.published.is_some_and(|p| p.seq == seq) {
            self.at_published = Some(hash);
        }
        self.last = Some((seq, hash));
        self.report.records += 1;
        let rec = match codec::decode(&bytes) {
            Ok(rec) => rec,
            Err(e) => {
                self.report.find(seq, format!("record {seq} is damaged: {e}"));
                self.prev = None;
                return;
            }
        };
        if rec.seq != seq {
            self.report.find(
                seq,
                format!(
                    "the line says seq {seq}, its bytes say seq {}: records were moved or reordered",
                    rec.seq
                ),
            );
        } else if let (true, Some(prev)) = (in_order, self.prev) {
            if rec.prev_hash != prev {
                let message = if seq == self.from {
                    format!(
                        "hash chain broken at record {seq}: its prev_hash is not the anchor (the hash of record {}): \
                         the range does not continue the log the header names",
                        seq - 1
                    )
                } else {
                    format!(
                        "hash chain broken at record {seq}: its prev_hash does not match record {}; record {} was \
                         changed, or records were removed or reordered",
                        seq - 1,
                        seq - 1
                    )
                };
                self.report.find(seq, message);
            }
        }
        match serde_json::to_value(&rec.event) {
            Ok(v) if v == r.event => {}
            _ => self.report.find(
                seq,
                format!(
                    "record {seq}: its readable event does not match its bytes (the JSON copy was edited)"
                ),
            ),
        }
        self.prev = Some(hash);
    }

    fn finish(mut self, head_line: Option<(u64, [u8; 32])>) -> VerifyReport {
        let (from, to) = (self.from, self.to);
        let last_seq = self.last.map(|(s, _)| s);
        if self.expected <= to {
            let first = self.expected;
            self.report.find(
                first,
                if first == to {
                    format!("record {to} is missing from the end of the export (the header says it ends at {to})")
                } else {
                    format!("records {first}..={to} are missing from the end of the export (the header says it ends at {to})")
                },
            );
        }
        match head_line {
            None => self.report.find(
                to,
                "the export has no head line at its end: the file was cut short",
            ),
            Some((seq, hash)) => {
                self.report.export_head = Some(Head { seq, hash }.to_string());
                if seq < to {
                    self.report.find(
                        seq,
                        format!("the head line says the log ended at seq {seq}, inside the range ..={to}"),
                    );
                } else if seq == to {
                    match self.last {
                        Some((s, h)) if s == seq && h == hash => self.report.checked.push(format!(
                            "the range ends at the log's head when it was exported (seq {seq})"
                        )),
                        Some((s, _)) if s == seq => self.report.find(
                            seq,
                            format!(
                                "record {seq} does not match the head line (the head when it was exported)"
                            ),
                        ),
                        _ => {}
                    }
                } else {
                    self.report.not_checked.push(format!(
                        "the log went on to seq {seq} when it was exported; records {}..={seq} are not in the export",
                        to + 1
                    ));
                }
            }
        }
        if self.report.records > 0 {
            self.report.checked.push(format!(
                "{} record(s), seq {from}..={}: each one's CRC and decoding, and one hash chain from the anchor \
                 (the hash of record {}) through every record",
                self.report.records,
                last_seq.unwrap_or(to),
                from - 1
            ));
        }
        let verdict = match self.published {
            None => {
                self.report.not_checked.push(
                    "no published head was given (--head SEQ:HASH): the export shows one unbroken chain, but not \
                     that the log it came from is the one whose head was published"
                        .into(),
                );
                None
            }
            Some(p) => Some(self.published_verdict(p, head_line.map(|(s, _)| s))),
        };
        self.report.published_head = verdict;
        self.report
    }

    fn published_verdict(&mut self, p: Head, export_head: Option<u64>) -> HeadVerdict {
        let (from, to) = (self.from, self.to);
        if let Some(e) = export_head.filter(|e| *e < p.seq) {
            self.report.find(
                p.seq,
                format!(
                    "the log ended at seq {e} when it was exported, before the published head at seq {}: \
                     it had lost records (its tail was cut)",
                    p.seq
                ),
            );
        }
        let differs = |seq: u64, what: &str, have: &[u8; 32], s: &mut Walk| {
            let message = format!(
                "{what} differs from the published head at seq {seq} (hash {} here, {} published): the log was \
                 changed at or before seq {seq} before it was exported",
                to_hex(have),
                p.hash_hex()
            );
            s.report.find(seq, message.clone());
            HeadVerdict::Differs { message }
        };
        if p.seq.checked_add(1) == Some(from) {
            return match self.anchor {
                Some(a) if a == p.hash => {
                    let message = format!(
                        "the range continues from the published head: its anchor is record {} with the published hash",
                        p.seq
                    );
                    self.report.checked.push(message.clone());
                    HeadVerdict::Matches { message }
                }
                Some(a) => differs(p.seq, "the anchor", &a, self),
                None => HeadVerdict::NotCovered {
                    message: "the anchor hash is unreadable".into(),
                },
            };
        }
        if p.seq >= from && p.seq <= to {
            return match self.at_published {
                Some(h) if h == p.hash => {
                    let message = if p.seq == to {
                        format!(
                            "records {from}..={to} are the ones the published head (seq {}) covers",
                            p.seq
                        )
                    } else {
                        format!(
                            "records {from}..={} are the ones the published head (seq {}) covers; records {}..={to} \
                             chain on from it (appended after it was published)",
                            p.seq,
                            p.seq,
                            p.seq + 1
                        )
                    };
                    self.report.checked.push(message.clone());
                    HeadVerdict::Matches { message }
                }
                Some(h) => differs(p.seq, &format!("record {}", p.seq), &h, self),
                None => {
                    let message = format!(
                        "record {} (the published head) is missing from the export, so it was not checked",
                        p.seq
                    );
                    self.report.not_checked.push(message.clone());
                    HeadVerdict::NotCovered { message }
                }
            };
        }
        let message = if p.seq > to {
            format!(
                "the range ends at seq {to}, before the published head at seq {}: it proves only itself; export \
                 {from}..{} (or {from}.. for up to the current head) to check it against that head",
                p.seq, p.seq
            )
        } else {
            format!(
                "the published head (seq {}) lies before the range, which starts at seq {from}: export from seq {} \
                 (or earlier) to check it against that head",
                p.seq,
                p.seq + 1
            )
        };
        self.report.not_checked.push(message.clone());
        HeadVerdict::NotCovered { message }
    }
}
