//! Audit export: a range of the log with the proof needed to check it far
//! from the log (`recman audit --export`, `--verify-export`), and the log's
//! head (`{seq, hash}`), which is published so a cut tail shows.
//!
//! The file is JSON Lines, one [`Line`] per line (`schemas/audit-export.schema.json`):
//! a `header` (range, the hash of the record before it: the anchor), one
//! `record` per sequence number (its exact stored bytes in hex, their BLAKE3
//! hash, and the decoded event for people), and the `head` of the log when it
//! was exported. The bytes are what counts: each one's CRC is checked, each
//! one's `prev_hash` must be the hash of the one before (the first one's, the
//! anchor), and a head published earlier (`seq:hash`) checks every record up
//! to it when the range reaches it.
//!
//! Parts: the format (here), [`verify`] (needs no log), `write` and `head`
//! (read a log; feature `log`).

use std::fmt;
use std::str::FromStr;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::codec::GENESIS_HASH;
use crate::model::Event;

#[cfg(feature = "log")]
pub mod head;
#[cfg(all(test, feature = "log"))]
mod tests;
pub mod verify;
#[cfg(feature = "log")]
pub mod write;

/// The `format` field of an export's header.
pub const FORMAT: &str = "recman-audit-export";
/// The `version` field of an export's header: what this build writes and reads.
pub const EXPORT_VERSION: u32 = 1;
/// The longest line a verifier reads (a record's hex is twice its bytes);
/// a longer one is a finding, never an unbounded buffer.
pub const MAX_LINE: usize = 16 << 20;

/// One line of an export file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
#[schemars(title = "AuditExportLine")]
pub enum Line {
    /// The first line.
    Header(Header),
    /// One per sequence number of the range, in order.
    Record(RecordLine),
    /// The last line: the log's head when the export was written.
    Head(HeadLine),
}

/// What the export holds and where it starts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Header {
    /// Always `recman-audit-export`.
    pub format: String,
    /// [`EXPORT_VERSION`].
    pub version: u32,
    /// First and last sequence number of the range (both included).
    pub from: u64,
    pub to: u64,
    /// The record before `from` (`from - 1`; seq 0 and the all-zero genesis
    /// hash for a range from 1): the first record's `prev_hash` must be its hash.
    pub anchor: Anchor,
    /// When the export was written (RFC 3339, UTC) and as Unix ms.
    pub exported_at: String,
    pub exported_at_ms: u64,
    /// The store it was read from (`redb`, `sled`).
    pub backend: String,
    /// The version of the stored record layout of the bytes (`codec::RECORD_VERSION`).
    pub record_version: u16,
}

/// A sequence number and the BLAKE3 hash (hex) of that record's bytes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Anchor {
    pub seq: u64,
    /// 64 hex digits.
    pub hash: String,
}

/// One record of the range.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RecordLine {
    pub seq: u64,
    /// BLAKE3 of `bytes` (64 hex digits): the next record's `prev_hash`.
    pub hash: String,
    /// The record exactly as stored (`[magic | version | codec | flags | len
    /// | payload | crc32]`), in lowercase hex.
    pub bytes: String,
    /// The event decoded from `bytes`, for people (as in
    /// `schemas/event.schema.json`); a verifier checks it matches the bytes.
    /// `null` when the stored bytes do not decode.
    #[schemars(with = "Option<Event>")]
    pub event: serde_json::Value,
}

/// The log's head at some time: its last sequence number and that record's hash.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct HeadLine {
    pub seq: u64,
    /// 64 hex digits (all zeros for an empty log).
    pub hash: String,
    /// When it was read (RFC 3339, UTC) and as Unix ms.
    pub at: String,
    pub at_ms: u64,
}

/// A head: `seq` and the BLAKE3 hash of record `seq`'s bytes. Written and
/// read as `SEQ:HEX` (`recman audit --head`, `--check-head`, `--verify-export
/// --head`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Head {
    pub seq: u64,
    pub hash: [u8; 32],
}

impl Head {
    /// The head of an empty log.
    pub const EMPTY: Head = Head {
        seq: 0,
        hash: GENESIS_HASH,
    };

    pub fn hash_hex(&self) -> String {
        to_hex(&self.hash)
    }

    /// The head as a `head` line read at `at_ms`.
    pub fn line(&self, at_ms: u64) -> HeadLine {
        HeadLine {
            seq: self.seq,
            hash: self.hash_hex(),
            at: crate::time::rfc3339(at_ms),
            at_ms,
        }
    }
}

impl fmt::Display for Head {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.seq, self.hash_hex())
    }
}

impl FromStr for Head {
    type Err = String;
    fn from_str(s: &str) -> Result<Head, String> {
        let bad =
            || format!("\"{s}\" is not a head: write SEQ:HASH (a sequence number, a colon, 64 hex digits)");
        let (seq, hash) = s.trim().split_once(':').ok_or_else(bad)?;
        let seq: u64 = seq.parse().map_err(|_| bad())?;
        Ok(Head {
            seq,
            hash: hash32(hash).ok_or_else(bad)?,
        })
    }
}

/// One problem, at one sequence number.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub seq: u64,
    pub message: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "seq {}: {}", self.seq, self.message)
    }
}

/// Lowercase hex.
pub fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

/// Hex (either case) to bytes; `None` for an odd length or a non-hex digit.
pub fn from_hex(s: &str) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    if b.len() % 2 != 0 {
        return None;
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    };
    b.chunks_exact(2)
        .map(|p| Some(digit(p[0])? << 4 | digit(p[1])?))
        .collect()
}

/// 64 hex digits to a hash.
pub fn hash32(s: &str) -> Option<[u8; 32]> {
    from_hex(s)?.try_into().ok()
}

/// `FROM..TO` (both included) or `FROM..` (to the log's head): what
/// `--export` takes. `TO` is `None` for an open range.
pub fn parse_range(s: &str) -> Result<(u64, Option<u64>), String> {
    let bad = |why: &str| {
        format!("\"{s}\" is not a range: {why} (write FROM..TO, both included, or FROM.. for up to the head)")
    };
    let (from, to) = s.trim().split_once("..").ok_or_else(|| bad("no `..`"))?;
    let from: u64 = from.parse().map_err(|_| bad("FROM is not a sequence number"))?;
    if from == 0 {
        return Err(bad("sequence numbers start at 1"));
    }
    let to = match to.strip_prefix('=').unwrap_or(to) {
        "" => None,
        t => Some(t.parse::<u64>().map_err(|_| bad("TO is not a sequence number"))?),
    };
    if let Some(t) = to {
        if t < from {
            return Err(bad("TO is before FROM"));
        }
    }
    Ok((from, to))
}

#[cfg(test)]
mod format_tests {
    use super::*;

    #[test]
    fn heads_and_hex_round_trip_and_bad_ones_are_refused() {
        let h = Head {
            seq: 42,
            hash: [0xab; 32],
        };
        let s = h.to_string();
        assert_eq!(s, format!("42:{}", "ab".repeat(32)));
        assert_eq!(s.parse::<Head>().unwrap(), h);
        assert_eq!(s.to_uppercase().parse::<Head>().unwrap(), h);
        for bad in [
            "42",
            "x:ab",
            &format!("42:{}", "ab".repeat(31)),
            &format!("42:{}g", "a".repeat(63)),
        ] {
            let e = bad.parse::<Head>().unwrap_err();
            assert!(e.contains("SEQ:HASH"), "{e}");
        }
        assert_eq!(from_hex("0aFf"), Some(vec![0x0a, 0xff]));
        assert_eq!(from_hex("0a0"), None);
        assert_eq!(to_hex(&[0, 1, 254]), "0001fe");
    }

    #[test]
    fn ranges() {
        assert_eq!(parse_range("3..9"), Ok((3, Some(9))));
        assert_eq!(parse_range("3..=9"), Ok((3, Some(9))));
        assert_eq!(parse_range("3..3"), Ok((3, Some(3))));
        assert_eq!(parse_range("3.."), Ok((3, None)));
        for bad in ["0..3", "9..3", "3", "a..b", "3..x", "..3"] {
            assert!(parse_range(bad).is_err(), "{bad}");
        }
    }
}
