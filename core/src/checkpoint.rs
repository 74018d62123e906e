//! Checkpoints: the core `State` after record N, tied to the hash chain at N,
//! encoded compactly with a format version and a checksum (pure: no I/O).
//!
//! The body is postcard (serde, varints, no field names: a fraction of the
//! JSON size and several times faster to read and write; a small crate that
//! builds in seconds). Layout, all integers little-endian:
//!
//! ```text
//! magic "RMCKPT\0\0" | version u16 | seq u64 | head_hash [32] | body_len u64 | body
//!   | view_len u64 | view | blake3 [32]
//! ```
//!
//! `view` is an opaque section the engine's read side writes beside the
//! state at the same record (its own projection, with its own version
//! inside); empty when none was written. Version 1 had no such section: it
//! is refused by version, never mis-read. Version 3 writes the request-id
//! window as one list in arrival order (`window`), not a map and a queue.
//!
//! `head_hash` is the BLAKE3 hash of record N's stored bytes, as the log's
//! audit computes it (`recman_events::codec::hash`); the checksum covers
//! every byte before it. A checkpoint is used only when the log's record N
//! has that hash, so it can only stand for the log it was taken from.

use std::fmt;

use crate::state::State;

/// The first bytes of every checkpoint.
pub const MAGIC: &[u8; 8] = b"RMCKPT\0\0";
/// The format this build writes and reads. A checkpoint of another version
/// is skipped (the log is still there: a full replay, or an older one).
pub const FORMAT_VERSION: u16 = 4;
/// Magic, version, seq, head hash, body length.
const HEADER_LEN: usize = 8 + 2 + 8 + 32 + 8;
/// The view section's length field.
const VIEW_LEN: usize = 8;
const SUM_LEN: usize = 32;

/// What a checkpoint says about itself, read without decoding the state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub version: u16,
    /// The last record folded into the state.
    pub seq: u64,
    /// The hash of record `seq` (the genesis hash for 0).
    pub head_hash: [u8; 32],
}

/// A decoded checkpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    pub header: Header,
    pub state: State,
    /// The read side's section, undecoded (empty: none written).
    pub view: Vec<u8>,
}

/// Why a checkpoint cannot be used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CheckpointError {
    /// Shorter than its header and checksum, or than its body length says.
    Truncated {
        len: usize,
    },
    NotACheckpoint,
    /// Written by a build with another format.
    Version(u16),
    /// The bytes changed after it was written.
    Checksum,
    /// The checksum holds but the body does not decode (a bug, or a
    /// state type changed without a new format version).
    Body(String),
}

impl fmt::Display for CheckpointError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CheckpointError::Truncated { len } => write!(f, "truncated ({len} bytes)"),
            CheckpointError::NotACheckpoint => write!(f, "not a checkpoint (bad magic)"),
            CheckpointError::Version(v) => {
                write!(f, "format version {v}, this build reads version {FORMAT_VERSION}")
            }
            CheckpointError::Checksum => write!(f, "checksum mismatch: the checkpoint is damaged"),
            CheckpointError::Body(e) => write!(f, "the state does not decode: {e}"),
        }
    }
}

impl std::error::Error for CheckpointError {}

/// Encodes `state`, which must be the fold of records `1..=seq` whose last
/// record hashes to `head_hash`.
pub fn encode(seq: u64, head_hash: &[u8; 32], state: &State) -> Vec<u8> {
    encode_with_view(seq, head_hash, state, &[])
}

/// [`encode`] with the read side's section `view` (its projection at the
/// same record), stored as it is.
pub fn encode_with_view(seq: u64, head_hash: &[u8; 32], state: &State, view: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + 4096);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(head_hash);
    out.extend_from_slice(&0u64.to_le_bytes());
    // A State always serializes (no maps with failing keys, no I/O).
    let out = postcard::to_extend(state, out).expect("a State always serializes");
    let mut out = out;
    let body_len = (out.len() - HEADER_LEN) as u64;
    out[HEADER_LEN - 8..HEADER_LEN].copy_from_slice(&body_len.to_le_bytes());
    out.extend_from_slice(&(view.len() as u64).to_le_bytes());
    out.extend_from_slice(view);
    let sum = recman_events::codec::hash(&out);
    out.extend_from_slice(&sum);
    out
}

/// Whether `bytes` end with the checksum of all the bytes before it (every
/// format version puts it there): a checkpoint written whole, whether or
/// not this build reads its format.
pub fn intact(bytes: &[u8]) -> bool {
    bytes.len() > SUM_LEN && {
        let (signed, sum) = bytes.split_at(bytes.len() - SUM_LEN);
        recman_events::codec::hash(signed)[..] == *sum
    }
}

/// Checks magic, version and length; returns the header. The checksum is
/// not checked (see [`decode`]).
pub fn header(bytes: &[u8]) -> Result<Header, CheckpointError> {
    if bytes.len() < 10 {
        return Err(CheckpointError::Truncated { len: bytes.len() });
    }
    if &bytes[..8] != MAGIC {
        return Err(CheckpointError::NotACheckpoint);
    }
    let version = u16::from_le_bytes([bytes[8], bytes[9]]);
    if version != FORMAT_VERSION {
        return Err(CheckpointError::Version(version));
    }
    if bytes.len() < HEADER_LEN + VIEW_LEN + SUM_LEN {
        return Err(CheckpointError::Truncated { len: bytes.len() });
    }
    let seq = u64::from_le_bytes(bytes[10..18].try_into().expect("8 bytes"));
    let head_hash: [u8; 32] = bytes[18..50].try_into().expect("32 bytes");
    let body_len = u64::from_le_bytes(bytes[50..58].try_into().expect("8 bytes"));
    view_range(bytes, body_len).ok_or(CheckpointError::Truncated { len: bytes.len() })?;
    Ok(Header {
        version,
        seq,
        head_hash,
    })
}

/// Where the view section is, when the lengths add up to `bytes.len()`.
fn view_range(bytes: &[u8], body_len: u64) -> Option<std::ops::Range<usize>> {
    let body_end = HEADER_LEN.checked_add(usize::try_from(body_len).ok()?)?;
    let len_end = body_end.checked_add(VIEW_LEN)?;
    let field = bytes.get(body_end..len_end)?;
    let view_len = usize::try_from(u64::from_le_bytes(field.try_into().ok()?)).ok()?;
    let view_end = len_end.checked_add(view_len)?;
    (view_end.checked_add(SUM_LEN)? == bytes.len()).then_some(len_end..view_end)
}

/// Checks everything and decodes the state (the view section is returned
/// as it is: the read side decodes it).
pub fn decode(bytes: &[u8]) -> Result<Checkpoint, CheckpointError> {
    let header = header(bytes)?;
    if !intact(bytes) {
        return Err(CheckpointError::Checksum);
    }
    let signed = &bytes[..bytes.len() - SUM_LEN];
    let body_len = u64::from_le_bytes(bytes[50..58].try_into().expect("8 bytes"));
    let view = view_range(bytes, body_len).ok_or(CheckpointError::Truncated { len: bytes.len() })?;
    let state: State = postcard::from_bytes(&signed[HEADER_LEN..view.start - VIEW_LEN])
        .map_err(|e| CheckpointError::Body(e.to_string()))?;
    Ok(Checkpoint {
        header,
        state,
        view: bytes[view].to_vec(),
    })
}

/// The first difference between a checkpoint's state and the fold of the
/// log to the same record (`recman audit`, the simulator's
/// `checkpoint_exact`); `None` when they are equal.
pub fn difference(checkpoint: &State, folded: &State) -> Option<String> {
    if checkpoint == folded {
        return None;
    }
    if checkpoint.applied != folded.applied {
        return Some(format!(
            "it folded {} events, the log {}",
            checkpoint.applied, folded.applied
        ));
    }
    if checkpoint.jobs.len() != folded.jobs.len() {
        return Some(format!(
            "{} jobs, the log's fold {}",
            checkpoint.jobs.len(),
            folded.jobs.len()
        ));
    }
    for (id, j) in &folded.jobs {
        match checkpoint.jobs.get(id) {
            None => return Some(format!("job {id} is missing")),
            Some(c) if c != j => return Some(format!("job {id} differs")),
            _ => {}
        }
    }
    let parts: [(&str, bool); 11] = [
        ("queues", checkpoint.queues == folded.queues),
        ("requests", checkpoint.requests == folded.requests),
        ("catalog", checkpoint.catalog == folded.catalog),
        ("active", checkpoint.active == folded.active),
        ("deadlines", checkpoint.deadlines == folded.deadlines),
        ("prunes", checkpoint.prunes == folded.prunes),
        ("book", checkpoint.book == folded.book),
        ("verify", checkpoint.verify == folded.verify),
        ("reconcile", checkpoint.reconcile == folded.reconcile),
        ("recovery", checkpoint.recovery == folded.recovery),
        ("jobs", checkpoint.jobs == folded.jobs),
    ];
    let which = parts.iter().find(|(_, same)| !same).map_or("state", |(n, _)| n);
    Some(format!("its {which} differ from the log's fold"))
}

/// `#[serde(with)]` for the fields whose types (from `recman-events`) are
/// shaped for JSON only (internally tagged, fields left out when empty): a
/// human-readable format (the API's JSON) gets them as they are; the
/// checkpoint's binary format gets them as embedded JSON bytes.
pub mod embed {
    use serde::de::DeserializeOwned;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<T: Serialize, S: Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            v.serialize(s)
        } else {
            let bytes = serde_json::to_vec(v).map_err(serde::ser::Error::custom)?;
            s.serialize_bytes(&bytes)
        }
    }

    pub fn deserialize<'de, T: DeserializeOwned, D: Deserializer<'de>>(d: D) -> Result<T, D::Error> {
        if d.is_human_readable() {
            T::deserialize(d)
        } else {
            let bytes: &[u8] = <&[u8]>::deserialize(d)?;
            serde_json::from_slice(bytes).map_err(serde::de::Error::custom)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::{self, SimConfig};
    use crate::Core;

    /// A state with jobs in every phase, schedules, verifications,
    /// reconciles and recoveries: a simulated run's log, folded.
    fn folded() -> (crate::CoreConfig, Vec<recman_events::Event>, State) {
        let cfg = SimConfig::full(7, 300, 12);
        let (_, log, core_cfg) = sim::run_with_config(&cfg).expect("a clean run");
        let mut core = Core::new(core_cfg.clone());
        for e in &log {
            core.apply(e);
        }
        let state = core.state().clone();
        (core_cfg, log, state)
    }

    #[test]
    fn a_checkpoint_round_trips_and_resumes_like_a_full_fold() {
        let (cfg, log, state) = folded();
        // Finished jobs left (bounded state); the request window, the
        // catalog, the ledgers and the jobs that stay are what is checked.
        assert!(
            !state.jobs.is_empty()
                && state.requests.len() > 100
                && !state.catalog.is_empty()
                && !state.recovery.ops.is_empty()
                && !state.book.schedules.is_empty(),
            "jobs={} requests={}",
            state.jobs.len(),
            state.requests.len()
        );
        let hash = [7u8; 32];
        let bytes = encode(log.len() as u64, &hash, &state);
        let ck = decode(&bytes).unwrap();
        assert_eq!(ck.header.seq, log.len() as u64);
        assert_eq!(ck.header.head_hash, hash);
        assert_eq!(difference(&ck.state, &state), None);
        assert!(ck.state == state);
        // Half way: a checkpoint of the first half plus the second half.
        let half = log.len() / 2;
        let mut first = Core::new(cfg.clone());
        for e in &log[..half] {
            first.apply(e);
        }
        let ck = decode(&encode(half as u64, &hash, first.state())).unwrap();
        let mut resumed = Core::from_state(cfg.clone(), ck.state);
        for e in &log[half..] {
            resumed.apply(e);
        }
        assert_eq!(difference(resumed.state(), &state), None);
        assert_eq!(resumed.due_index_agrees(), Ok(()));
        let mut full = Core::new(cfg);
        for e in &log {
            full.apply(e);
        }
        assert_eq!(resumed.next_deadline(), full.next_deadline());
        // Compact: the whole checkpoint is smaller than the JSON of part of
        // the same state (its jobs, catalog and request window).
        let json = serde_json::to_vec(&(&state.jobs, &state.catalog, &state.requests))
            .unwrap()
            .len();
        assert!(
            bytes.len() < json,
            "{} bytes, part of the state as JSON {json}",
            bytes.len()
        );
    }

    #[test]
    fn damage_version_and_truncation_are_refused() {
        let (_, log, state) = folded();
        let bytes = encode(log.len() as u64, &[1; 32], &state);
        let mut flipped = bytes.clone();
        flipped[HEADER_LEN + 100] ^= 0x40;
        assert_eq!(decode(&flipped), Err(CheckpointError::Checksum));
        let mut versioned = bytes.clone();
        versioned[8] = 9;
        assert_eq!(decode(&versioned), Err(CheckpointError::Version(9)));
        assert!(matches!(
            decode(&bytes[..bytes.len() - 1]),
            Err(CheckpointError::Truncated { .. })
        ));
        assert!(matches!(
            decode(&bytes[..5]),
            Err(CheckpointError::Truncated { .. })
        ));
        let mut other = bytes.clone();
        other[0] = b'X';
        assert_eq!(decode(&other), Err(CheckpointError::NotACheckpoint));
        assert_eq!(header(&bytes).unwrap().seq, log.len() as u64);
        // A version-1 checkpoint (no view section) is refused by its
        // version, not read as something else.
        let mut v1 = bytes.clone();
        v1[8..10].copy_from_slice(&1u16.to_le_bytes());
        assert_eq!(decode(&v1), Err(CheckpointError::Version(1)));
    }

    #[test]
    fn the_view_section_round_trips_and_is_covered_by_the_checksum() {
        let (_, log, state) = folded();
        let n = log.len() as u64;
        let plain = decode(&encode(n, &[2; 32], &state)).unwrap();
        assert!(plain.view.is_empty());
        let section = b"the read side's bytes".to_vec();
        let bytes = encode_with_view(n, &[2; 32], &state, &section);
        let ck = decode(&bytes).unwrap();
        assert_eq!(ck.view, section);
        assert_eq!(difference(&ck.state, &state), None);
        let mut flipped = bytes.clone();
        let at = bytes.len() - SUM_LEN - 3;
        flipped[at] ^= 1;
        assert_eq!(decode(&flipped), Err(CheckpointError::Checksum));
        // A view length that does not add up is a truncation, not a panic.
        let mut long = bytes.clone();
        let at = bytes.len() - SUM_LEN - section.len() - VIEW_LEN;
        long[at..at + 8].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(matches!(decode(&long), Err(CheckpointError::Truncated { .. })));
    }

    #[test]
    fn the_difference_names_what_differs() {
        let (_, _, state) = folded();
        let mut lossy = state.clone();
        lossy.requests.clear();
        assert_eq!(
            difference(&lossy, &state).as_deref(),
            Some("its requests differ from the log's fold")
        );
        let mut changed = state.clone();
        let (id, job) = changed.jobs.iter_mut().next().unwrap();
        job.attempt += 1;
        let id = *id;
        assert_eq!(difference(&changed, &state), Some(format!("job {id} differs")));
    }

    /// The API's JSON of a job is unchanged by the checkpoint's embedding.
    #[test]
    fn json_of_embedded_fields_is_unchanged() {
        let (_, _, state) = folded();
        let job = state.jobs.values().find(|j| j.snapshot.is_some()).unwrap();
        let v = serde_json::to_value(job).unwrap();
        assert!(v["snapshot"]["name"].is_string(), "{v}");
        let op = state.recovery.ops.values().next().unwrap();
        let v = serde_json::to_value(op).unwrap();
        assert!(v["action"]["type"].is_string(), "{v}");
    }
}
