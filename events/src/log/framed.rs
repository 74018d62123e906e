//! The stored form of one group commit, shared by the local backends: the
//! batch's records framed into ONE value under its first seq, its job index
//! as one value under the same key, and the in-memory job index built from it.
//!
//! Value: `[n: u32 LE][end_i: u32 LE × n][records]`; record `i` (seq `first + i`)
//! is `records[end_{i-1}..end_i]`. The framing does not depend on record
//! contents, so a damaged record damages only itself; a damaged frame is served
//! as one damaged record under the batch's first seq (so `audit` reports it,
//! and the gap after it). Index value: `[(job u128 BE, seq u64 BE) × n]`.

use std::collections::HashMap;
use std::sync::RwLock;

use crate::ids::JobId;
use crate::log::store::Batch;
use crate::log::LogError;

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// The records of one stored batch, or `None` when its frame is damaged.
pub fn split(chunk: &[u8]) -> Option<Vec<&[u8]>> {
    let n = u32_at(chunk, 0)? as usize;
    let data_start = 4usize.checked_add(n.checked_mul(4)?)?;
    let data = chunk.get(data_start..)?;
    let mut out = Vec::with_capacity(n);
    let mut start = 0usize;
    for i in 0..n {
        let end = u32_at(chunk, 4 + 4 * i)? as usize;
        out.push(data.get(start..end)?);
        start = end;
    }
    (start == data.len() && n > 0).then_some(out)
}

/// Frames records as one stored batch.
pub fn frame(records: &[&[u8]]) -> Vec<u8> {
    let total: usize = records.iter().map(|r| r.len()).sum();
    let mut out = Vec::with_capacity(4 + 4 * records.len() + total);
    out.extend_from_slice(&(records.len() as u32).to_le_bytes());
    let mut end = 0usize;
    for r in records {
        end += r.len();
        out.extend_from_slice(&(end as u32).to_le_bytes());
    }
    for r in records {
        out.extend_from_slice(r);
    }
    out
}

/// The stored value of a batch being committed.
pub fn frame_batch(batch: &Batch) -> Vec<u8> {
    let records: Vec<&[u8]> = batch.records().map(|(_, _, b)| b).collect();
    frame(&records)
}

/// The stored job index of a batch being committed.
pub fn index_value(batch: &Batch) -> Vec<u8> {
    let mut index = Vec::with_capacity(24 * batch.len());
    for it in &batch.items {
        index.extend_from_slice(&it.job.as_u128().to_be_bytes());
        index.extend_from_slice(&it.seq.to_be_bytes());
    }
    index
}

/// Calls `f(seq, record)` for each record of the batch stored under `first`,
/// until `f` returns false.
pub fn for_each_record(first: u64, chunk: &[u8], f: &mut dyn FnMut(u64, &[u8]) -> bool) {
    match split(chunk) {
        Some(recs) => {
            for (i, r) in recs.into_iter().enumerate() {
                if !f(first + i as u64, r) {
                    return;
                }
            }
        }
        // A damaged frame: hand out the whole value, which fails every check.
        None => {
            f(first, chunk);
        }
    }
}

/// The record `seq` of the batch stored under `first`, if it holds it.
pub fn record_in(first: u64, chunk: &[u8], seq: u64) -> Option<Vec<u8>> {
    let mut found = None;
    for_each_record(first, chunk, &mut |s, rec| {
        if s == seq {
            found = Some(rec.to_vec());
            return false;
        }
        true
    });
    found
}

/// The last record of the batch stored under `first`.
pub fn last_record(first: u64, chunk: &[u8]) -> (u64, Vec<u8>) {
    let mut last = (first, Vec::new());
    for_each_record(first, chunk, &mut |seq, rec| {
        last = (seq, rec.to_vec());
        true
    });
    last
}

/// A change to the stored batches.
#[derive(Debug, PartialEq, Eq)]
pub enum KeyOp {
    Put(u64, Vec<u8>),
    Remove(u64),
}

/// What overwriting (`Some`) or removing (`None`) record `seq` takes, given the
/// batch that may hold it (`holder`: its first seq and value).
pub fn rewrite(holder: Option<(u64, &[u8])>, seq: u64, bytes: Option<&[u8]>) -> Vec<KeyOp> {
    let holding = holder.and_then(|(first, chunk)| {
        let recs = split(chunk)?;
        ((seq - first) < recs.len() as u64).then_some((first, recs))
    });
    match (holding, bytes) {
        (None, Some(b)) => vec![KeyOp::Put(seq, frame(&[b]))],
        (None, None) => vec![],
        (Some((first, mut recs)), Some(b)) => {
            recs[(seq - first) as usize] = b;
            vec![KeyOp::Put(first, frame(&recs))]
        }
        (Some((first, recs)), None) => {
            let idx = (seq - first) as usize;
            let mut ops = vec![KeyOp::Remove(first)];
            if idx > 0 {
                ops.push(KeyOp::Put(first, frame(&recs[..idx])));
            }
            if idx + 1 < recs.len() {
                ops.push(KeyOp::Put(seq + 1, frame(&recs[idx + 1..])));
            }
            ops
        }
    }
}

/// job → its seqs (ascending), in memory.
#[derive(Default)]
pub struct JobIndex {
    map: RwLock<HashMap<u128, Vec<u64>>>,
    /// Batches whose index could not be loaded (lenient opens only).
    damaged: RwLock<Vec<(u64, String)>>,
}

fn poisoned() -> LogError {
    LogError::Store("the job index lock is poisoned (a thread panicked)".into())
}

impl JobIndex {
    /// Adds one stored index value (read on open).
    pub fn load(&self, first: u64, value: &[u8]) -> Result<(), LogError> {
        if value.len() % 24 != 0 {
            return Err(LogError::Store(format!(
                "the job index of the batch at seq {first} is damaged ({} bytes); run `recman audit`",
                value.len()
            )));
        }
        let mut map = self.map.write().map_err(|_| poisoned())?;
        for e in value.chunks_exact(24) {
            let mut job = [0u8; 16];
            job.copy_from_slice(&e[..16]);
            let mut seq = [0u8; 8];
            seq.copy_from_slice(&e[16..]);
            map.entry(u128::from_be_bytes(job))
                .or_default()
                .push(u64::from_be_bytes(seq));
        }
        Ok(())
    }

    /// Like `load`, but a damaged value is noted (see `damage`) instead of
    /// refused: for opens that only read, so the records stay auditable.
    pub fn load_lenient(&self, first: u64, value: Result<&[u8], LogError>) {
        if let Err(e) = value.and_then(|v| self.load(first, v)) {
            if let Ok(mut d) = self.damaged.write() {
                d.push((first, e.to_string()));
            }
        }
    }

    /// What `load_lenient` could not load.
    pub fn damage(&self) -> Vec<(u64, String)> {
        self.damaged.read().map(|d| d.clone()).unwrap_or_default()
    }

    /// Adds a committed batch.
    pub fn add(&self, batch: &Batch) -> Result<(), LogError> {
        let mut map = self.map.write().map_err(|_| poisoned())?;
        for it in &batch.items {
            map.entry(it.job.as_u128()).or_default().push(it.seq);
        }
        Ok(())
    }

    /// Forgets every seq below `before` (their records left the store).
    pub fn drop_before(&self, before: u64) -> Result<(), LogError> {
        let mut map = self.map.write().map_err(|_| poisoned())?;
        map.retain(|_, seqs| {
            seqs.retain(|s| *s >= before);
            !seqs.is_empty()
        });
        map.shrink_to_fit();
        Ok(())
    }

    pub fn seqs(&self, job: JobId) -> Result<Vec<u64>, LogError> {
        if let Some((first, why)) = self.damage().first() {
            return Err(LogError::Store(format!(
                "the job index is damaged (batch at seq {first}: {why}), so a job's events cannot \
                 be looked up; read the whole log (`recman events`) and run `recman audit`"
            )));
        }
        let map = self.map.read().map_err(|_| poisoned())?;
        Ok(map.get(&job.as_u128()).cloned().unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_split_back_and_damaged_frames_are_refused() {
        let recs: Vec<&[u8]> = vec![b"abc", b"", b"defgh"];
        let f = frame(&recs);
        assert_eq!(split(&f).unwrap(), recs);
        for cut in 0..f.len() {
            assert!(split(&f[..cut]).is_none(), "truncated at {cut}");
        }
        let mut bad = f.clone();
        bad[4] = 200; // first end beyond the data
        assert!(split(&bad).is_none());
        let mut bad = f;
        bad[0] = 9; // more records than frames
        assert!(split(&bad).is_none());
    }

    #[test]
    fn removing_a_record_splits_its_batch_around_it() {
        let recs: Vec<&[u8]> = vec![b"a", b"b", b"c", b"d"];
        let f = frame(&recs);
        assert_eq!(
            rewrite(Some((10, &f)), 12, None),
            vec![
                KeyOp::Remove(10),
                KeyOp::Put(10, frame(&recs[..2])),
                KeyOp::Put(13, frame(&recs[3..]))
            ]
        );
        assert_eq!(
            rewrite(Some((10, &f)), 10, None),
            vec![KeyOp::Remove(10), KeyOp::Put(11, frame(&recs[1..]))]
        );
        assert_eq!(rewrite(Some((10, &f)), 14, None), vec![]);
        assert_eq!(
            rewrite(Some((10, &f)), 11, Some(b"X")),
            vec![KeyOp::Put(10, frame(&[b"a", b"X", b"c", b"d"]))]
        );
        assert_eq!(rewrite(None, 3, Some(b"X")), vec![KeyOp::Put(3, frame(&[b"X"]))]);
    }
}
