//! The on-disk record: `[magic | schema version | codec | flags | len | payload | crc32]`.
//!
//! The payload is an rkyv archive of [`Record`]: the global sequence number, the
//! BLAKE3 hash of the previous record's bytes, and the event. The CRC covers
//! every byte before it; the next record's `prev_hash` covers every byte of this
//! one, so a changed, removed or reordered record breaks the chain.
//!
//! Version 2 records carry the event's `by`; version 1 records (written
//! before it existed) are still read, through their own layout ([`v1`]),
//! with an empty `by`. Only version 2 is written.

use rkyv::util::AlignedVec;

use crate::model::Event;

pub const MAGIC: [u8; 4] = *b"RMEV";
/// Version of the stored record layout (the one written).
pub const RECORD_VERSION: u16 = 2;
/// The first layout: events without `by`; read, never written.
pub const RECORD_VERSION_1: u16 = 1;
/// Payload codec id: rkyv 0.8.
pub const CODEC_RKYV: u8 = 1;
/// Bytes before the payload.
pub const HEADER_LEN: usize = 4 + 2 + 1 + 1 + 4;
/// Hash of the record "before the first one".
pub const GENESIS_HASH: [u8; 32] = [0; 32];

/// What is archived in the payload.
#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct Record {
    pub seq: u64,
    pub prev_hash: [u8; 32],
    pub event: Event,
}

/// The layout of version 1 records, kept to read old logs.
pub mod v1 {
    use crate::ids::JobId;
    use crate::model::EventBody;

    #[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
    pub struct Record {
        pub seq: u64,
        pub prev_hash: [u8; 32],
        pub event: Event,
    }

    #[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
    pub struct Event {
        pub at_ms: u64,
        pub job: JobId,
        pub body: EventBody,
    }

    impl From<Record> for super::Record {
        fn from(r: Record) -> super::Record {
            super::Record {
                seq: r.seq,
                prev_hash: r.prev_hash,
                event: crate::model::Event {
                    at_ms: r.event.at_ms,
                    job: r.event.job,
                    body: r.event.body,
                    by: String::new(),
                },
            }
        }
    }

    /// A version 1 record's bytes, as the old code wrote them (tests of
    /// old-log reading build logs with it).
    pub fn encode(rec: &Record) -> Vec<u8> {
        let payload = rkyv::to_bytes::<rkyv::rancor::Error>(rec).expect("events always archive");
        super::envelope(super::RECORD_VERSION_1, &payload)
    }
}

/// A checked record in its archived form, of either layout.
pub enum Archived<'a> {
    V1(&'a v1::ArchivedRecord),
    V2(&'a ArchivedRecord),
}

impl Archived<'_> {
    pub fn seq(&self) -> u64 {
        match self {
            Archived::V1(r) => r.seq.to_native(),
            Archived::V2(r) => r.seq.to_native(),
        }
    }

    pub fn prev_hash(&self) -> [u8; 32] {
        match self {
            Archived::V1(r) => r.prev_hash,
            Archived::V2(r) => r.prev_hash,
        }
    }

    pub fn body(&self) -> &crate::model::ArchivedEventBody {
        match self {
            Archived::V1(r) => &r.event.body,
            Archived::V2(r) => &r.event.body,
        }
    }
}

/// Validated access to a payload of record version `version` (in an
/// aligned buffer).
pub fn access(version: u16, payload: &[u8]) -> Result<Archived<'_>, DecodeError> {
    let e = |e: rkyv::rancor::Error| DecodeError::Payload(e.to_string());
    Ok(match version {
        RECORD_VERSION_1 => {
            Archived::V1(rkyv::access::<v1::ArchivedRecord, rkyv::rancor::Error>(payload).map_err(e)?)
        }
        _ => Archived::V2(rkyv::access::<ArchivedRecord, rkyv::rancor::Error>(payload).map_err(e)?),
    })
}

/// Why a stored record could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("record too short ({0} bytes)")]
    Truncated(usize),
    #[error("bad magic {0:02x?}")]
    BadMagic([u8; 4]),
    #[error("unsupported record version {0}")]
    UnsupportedVersion(u16),
    #[error("unsupported codec {0}")]
    UnsupportedCodec(u8),
    #[error("length field says {declared} bytes, record holds {actual}")]
    BadLength { declared: usize, actual: usize },
    #[error("checksum mismatch: stored {stored:08x}, computed {computed:08x}")]
    BadCrc { stored: u32, computed: u32 },
    #[error("payload does not decode: {0}")]
    Payload(String),
}

/// Encodes one record.
pub fn encode(seq: u64, prev_hash: &[u8; 32], event: &Event) -> Vec<u8> {
    let rec = Record {
        seq,
        prev_hash: *prev_hash,
        event: event.clone(),
    };
    encode_record(&rec)
}

/// Encodes a record already built.
pub fn encode_record(rec: &Record) -> Vec<u8> {
    let mut out = Vec::new();
    encode_into(rec, &mut AlignedVec::new(), &mut out);
    out
}

/// Encodes a record onto the end of `out`, serializing through `scratch` (whose
/// capacity is kept between calls): the writer's hot path, no allocation once
/// the buffers have grown.
pub fn encode_into(rec: &Record, scratch: &mut AlignedVec, out: &mut Vec<u8>) {
    let mut buf = std::mem::take(scratch);
    buf.clear();
    let payload =
        rkyv::api::high::to_bytes_in::<_, rkyv::rancor::Error>(rec, buf).expect("events always archive");
    envelope_into(RECORD_VERSION, &payload, out);
    *scratch = payload;
}

fn envelope(version: u16, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    envelope_into(version, payload, &mut out);
    out
}

fn envelope_into(version: u16, payload: &[u8], out: &mut Vec<u8>) {
    let start = out.len();
    out.reserve(HEADER_LEN + payload.len() + 4);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&version.to_le_bytes());
    out.push(CODEC_RKYV);
    out.push(0);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(payload);
    let crc = crc32fast::hash(&out[start..]);
    out.extend_from_slice(&crc.to_le_bytes());
}

/// The BLAKE3 hash of a record's bytes, carried by the next record.
pub fn hash(bytes: &[u8]) -> [u8; 32] {
    *blake3::hash(bytes).as_bytes()
}

/// Checks the envelope (magic, version, codec, length, CRC) and returns the payload.
pub fn check_envelope(bytes: &[u8]) -> Result<&[u8], DecodeError> {
    open_envelope(bytes).map(|(_, p)| p)
}

/// Checks the envelope and returns the record version and the payload.
pub fn open_envelope(bytes: &[u8]) -> Result<(u16, &[u8]), DecodeError> {
    if bytes.len() < HEADER_LEN + 4 {
        return Err(DecodeError::Truncated(bytes.len()));
    }
    let magic: [u8; 4] = bytes[0..4].try_into().expect("4 bytes");
    if magic != MAGIC {
        return Err(DecodeError::BadMagic(magic));
    }
    let body_end = bytes.len() - 4;
    let stored = u32::from_le_bytes(bytes[body_end..].try_into().expect("4 bytes"));
    let computed = crc32fast::hash(&bytes[..body_end]);
    if stored != computed {
        return Err(DecodeError::BadCrc { stored, computed });
    }
    let version = u16::from_le_bytes([bytes[4], bytes[5]]);
    if version != RECORD_VERSION && version != RECORD_VERSION_1 {
        return Err(DecodeError::UnsupportedVersion(version));
    }
    if bytes[6] != CODEC_RKYV {
        return Err(DecodeError::UnsupportedCodec(bytes[6]));
    }
    let declared = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes")) as usize;
    let actual = body_end - HEADER_LEN;
    if declared != actual {
        return Err(DecodeError::BadLength { declared, actual });
    }
    Ok((version, &bytes[HEADER_LEN..body_end]))
}

/// Checks and fully decodes a record. The payload is copied into an aligned
/// buffer first: bytes from a store or a socket carry no alignment promise.
pub fn decode(bytes: &[u8]) -> Result<Record, DecodeError> {
    let (version, payload) = open_envelope(bytes)?;
    let mut aligned = AlignedVec::<16>::with_capacity(payload.len());
    aligned.extend_from_slice(payload);
    let e = |e: rkyv::rancor::Error| DecodeError::Payload(e.to_string());
    if version == RECORD_VERSION_1 {
        return rkyv::from_bytes::<v1::Record, rkyv::rancor::Error>(&aligned)
            .map(Record::from)
            .map_err(e);
    }
    rkyv::from_bytes::<Record, rkyv::rancor::Error>(&aligned).map_err(e)
}

/// Checks a record without building the owned event (validated access only):
/// returns its sequence number and previous hash. Used by replay and audit.
pub fn verify(bytes: &[u8], scratch: &mut AlignedVec<16>) -> Result<(u64, [u8; 32]), DecodeError> {
    let (version, payload) = open_envelope(bytes)?;
    scratch.clear();
    scratch.extend_from_slice(payload);
    let archived = access(version, scratch)?;
    Ok((archived.seq(), archived.prev_hash()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{JobId, RequestId, TargetId};
    use crate::model::{EventBody, SnapshotKind};

    fn ev() -> Event {
        Event {
            at_ms: 1_764_000_000_000,
            job: JobId::from_parts(1_764_000_000_000, 9),
            body: EventBody::Requested {
                request_id: RequestId::from("r1"),
                targets: vec![TargetId::from("db01")],
                kind: SnapshotKind::Full,
                origin: "test".into(),
            },
            by: String::new(),
        }
    }

    #[test]
    fn round_trips_even_from_a_misaligned_buffer() {
        let bytes = encode(7, &[3; 32], &ev());
        let mut shifted = vec![0u8; 1];
        shifted.extend_from_slice(&bytes);
        let rec = decode(&shifted[1..]).unwrap();
        assert_eq!(rec.seq, 7);
        assert_eq!(rec.prev_hash, [3; 32]);
        assert_eq!(rec.event, ev());
        let mut scratch = AlignedVec::new();
        assert_eq!(verify(&shifted[1..], &mut scratch).unwrap(), (7, [3; 32]));
    }

    #[test]
    fn encode_into_appends_exactly_what_encode_returns() {
        let mut scratch = AlignedVec::new();
        let mut out = b"prefix".to_vec();
        let rec = Record {
            seq: 3,
            prev_hash: [9; 32],
            event: ev(),
        };
        encode_into(&rec, &mut scratch, &mut out);
        let one = out.len();
        encode_into(&rec, &mut scratch, &mut out);
        assert_eq!(&out[6..one], &encode(3, &[9; 32], &ev())[..]);
        assert_eq!(&out[one..], &out[6..one]);
    }

    #[test]
    fn a_version_1_record_still_decodes_with_an_empty_by() {
        let mut e = ev();
        let old = v1::Record {
            seq: 4,
            prev_hash: [5; 32],
            event: v1::Event {
                at_ms: e.at_ms,
                job: e.job,
                body: e.body.clone(),
            },
        };
        let bytes = v1::encode(&old);
        assert_eq!(u16::from_le_bytes([bytes[4], bytes[5]]), RECORD_VERSION_1);
        let rec = decode(&bytes).unwrap();
        assert_eq!((rec.seq, rec.prev_hash, &rec.event), (4, [5; 32], &e));
        let mut scratch = AlignedVec::new();
        assert_eq!(verify(&bytes, &mut scratch).unwrap(), (4, [5; 32]));
        // A new record carries `by`, and the hash of its bytes covers it.
        e.by = "alice".into();
        let new = encode(4, &[5; 32], &e);
        assert_eq!(u16::from_le_bytes([new[4], new[5]]), RECORD_VERSION);
        assert_eq!(decode(&new).unwrap().event.by, "alice");
        let mut other = e.clone();
        other.by = "mallory".into();
        assert_ne!(hash(&new), hash(&encode(4, &[5; 32], &other)));
        // An unknown version is refused, not guessed.
        let mut v3 = new.clone();
        v3[4] = 3;
        let end = v3.len() - 4;
        let crc = crc32fast::hash(&v3[..end]).to_le_bytes();
        v3[end..].copy_from_slice(&crc);
        assert_eq!(decode(&v3), Err(DecodeError::UnsupportedVersion(3)));
    }

    #[test]
    fn every_flipped_byte_is_detected() {
        let bytes = encode(1, &GENESIS_HASH, &ev());
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x40;
            assert!(decode(&b).is_err(), "flip at byte {i} went unnoticed");
        }
    }

    #[test]
    fn truncation_is_detected() {
        let bytes = encode(1, &GENESIS_HASH, &ev());
        for n in 0..bytes.len() {
            assert!(decode(&bytes[..n]).is_err(), "truncation to {n} went unnoticed");
        }
    }
}
