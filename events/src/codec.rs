//! The on-disk record: `[magic | schema version | codec | flags | len | payload | crc32]`.
//!
//! The payload is an rkyv archive of [`Record`]: the global sequence number, the
//! BLAKE3 hash of the previous record's bytes, and the event. The CRC covers
//! every byte before it; the next record's `prev_hash` covers every byte of this
//! one, so a changed, removed or reordered record breaks the chain.

use rkyv::util::AlignedVec;

use crate::model::Event;

pub const MAGIC: [u8; 4] = *b"RMEV";
/// Version of the stored record layout.
pub const RECORD_VERSION: u16 = 1;
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
    let start = out.len();
    out.reserve(HEADER_LEN + payload.len() + 4);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&RECORD_VERSION.to_le_bytes());
    out.push(CODEC_RKYV);
    out.push(0);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&payload);
    let crc = crc32fast::hash(&out[start..]);
    out.extend_from_slice(&crc.to_le_bytes());
    *scratch = payload;
}

/// The BLAKE3 hash of a record's bytes, carried by the next record.
pub fn hash(bytes: &[u8]) -> [u8; 32] {
    *blake3::hash(bytes).as_bytes()
}

/// Checks the envelope (magic, version, codec, length, CRC) and returns the payload.
pub fn check_envelope(bytes: &[u8]) -> Result<&[u8], DecodeError> {
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
    if version != RECORD_VERSION {
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
    Ok(&bytes[HEADER_LEN..body_end])
}

/// Checks and fully decodes a record. The payload is copied into an aligned
/// buffer first: bytes from a store or a socket carry no alignment promise.
pub fn decode(bytes: &[u8]) -> Result<Record, DecodeError> {
    let payload = check_envelope(bytes)?;
    let mut aligned = AlignedVec::<16>::with_capacity(payload.len());
    aligned.extend_from_slice(payload);
    rkyv::from_bytes::<Record, rkyv::rancor::Error>(&aligned).map_err(|e| DecodeError::Payload(e.to_string()))
}

/// Checks a record without building the owned event (validated access only):
/// returns its sequence number and previous hash. Used by replay and audit.
pub fn verify(bytes: &[u8], scratch: &mut AlignedVec<16>) -> Result<(u64, [u8; 32]), DecodeError> {
    let payload = check_envelope(bytes)?;
    scratch.clear();
    scratch.extend_from_slice(payload);
    let archived = rkyv::access::<ArchivedRecord, rkyv::rancor::Error>(scratch)
        .map_err(|e| DecodeError::Payload(e.to_string()))?;
    Ok((archived.seq.to_native(), archived.prev_hash))
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
