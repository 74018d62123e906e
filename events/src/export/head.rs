//! The head of a log (`recman audit --head`, published by the engine) and
//! the check of a log against a head published earlier (`--check-head`):
//! the one thing the hash chain alone cannot see is records cut off its
//! tail, and a head kept elsewhere shows that.

use super::{to_hex, Finding, Head};
use crate::codec;
use crate::log::{EventLog, LogError};

/// The stored bytes of record `seq`, if the log has it.
pub fn record(log: &dyn EventLog, seq: u64) -> Result<Option<Vec<u8>>, LogError> {
    Ok(log
        .read_raw(seq, 1)?
        .into_iter()
        .find(|r| r.seq == seq)
        .map(|r| r.bytes))
}

/// The log's head now: its last durable seq and that record's hash
/// ([`Head::EMPTY`] for an empty log).
pub fn head(log: &dyn EventLog) -> Result<Head, LogError> {
    let seq = log.last_seq();
    if seq == 0 {
        return Ok(Head::EMPTY);
    }
    match record(log, seq)? {
        Some(bytes) => Ok(Head {
            seq,
            hash: codec::hash(&bytes),
        }),
        None => Err(LogError::Store(format!(
            "the log says its last record is {seq} but does not hold it"
        ))),
    }
}

/// Checks `log` against a head published earlier: `None` when the log
/// still holds record `published.seq` with the published hash (with a clean
/// `audit`, every record up to it is then the one that was published);
/// otherwise the finding, naming the seq.
pub fn check_head(log: &dyn EventLog, published: &Head) -> Result<Option<Finding>, LogError> {
    let p = published.seq;
    if p == 0 {
        return Ok(None);
    }
    let last = log.last_seq();
    if last < p {
        let lost = if last + 1 == p {
            format!("record {p} is")
        } else {
            format!("records {}..={p} are", last + 1)
        };
        return Ok(Some(Finding {
            seq: p,
            message: format!(
                "the log lost records: it ends at seq {last}, but the published head {published} says record {p} \
                 existed; {lost} gone (the log's tail was cut, or the log was replaced by an older copy)"
            ),
        }));
    }
    Ok(match record(log, p)? {
        None => Some(Finding {
            seq: p,
            message: format!(
                "the log lost record {p}, the published head {published}: it was removed (the log goes on to seq {last})"
            ),
        }),
        Some(bytes) => {
            let have = codec::hash(&bytes);
            (have != published.hash).then(|| Finding {
                seq: p,
                message: format!(
                    "record {p} is not the one the published head names (hash {} here, {} published): the log lost \
                     or changed records up to seq {p} after the head was published (e.g. its tail was cut and new \
                     events were appended)",
                    to_hex(&have),
                    published.hash_hex()
                ),
            })
        }
    })
}
