//! Closed log segments: the oldest group commits moved out of the live store
//! into immutable files, still hash-chained and still read through the log.
//!
//! A data dir's log may have a `segments/` directory beside its store. Each
//! file holds a contiguous run of records, `FIRST-LAST.seg` (20-digit seqs):
//!
//! ```text
//! "RMSEG001"
//! batch*   first seq u64 LE | chunk len u32 LE | chunk | index len u32 LE | index
//!          (chunk and index exactly as the store kept them, see `framed`)
//! jobs     every job with a record in the file, u128 BE, sorted, unique
//! trailer  batches end u64 | jobs u64 | first u64 | last u64 | batches u64 |
//!          min job u128 BE | max job u128 BE | BLAKE3 of all bytes before it |
//!          "RMSEGEND"
//! ```
//!
//! [`Segmented`] wraps a local store and reads records `<= the last archived
//! seq` from the files, the rest from the store, so `events`, `audit`,
//! `replay --until` and a full start-up see one log. The records keep their
//! own CRC and hash chain (`audit` walks them across the boundary); the file's
//! BLAKE3 is checked whenever a segment is loaded.
//!
//! Archiving ([`Segmented::archive`]) writes a segment (temp file, fsync,
//! rename, directory fsync) BEFORE it deletes the same batches from the live
//! store, so a crash in between leaves the records twice, never zero times:
//! reads prefer the file, and the next archive deletes the leftovers. The
//! last record always stays live (it continues the sequence and the chain).
//!
//! A job's records in segments are found through each file's job list: only
//! files whose `[min job, max job]` range holds the id are searched (job ids
//! are UUIDv7, ordered by creation), by binary search on disk.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use crate::ids::JobId;
use crate::log::framed;
use crate::log::store::{Batch, BatchVisitor, Store};
use crate::log::{LogError, RawRecord};

/// The directory of closed segments inside a data dir.
pub const DIR_NAME: &str = "segments";
const MAGIC: &[u8; 8] = b"RMSEG001";
const END: &[u8; 8] = b"RMSEGEND";
const TRAILER: usize = 8 * 5 + 16 * 2 + 32 + 8;
/// Records per segment unless the operator says otherwise.
pub const DEFAULT_SEGMENT_RECORDS: usize = 250_000;

/// What one archive run did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ArchiveReport {
    /// Segment files written.
    pub segments: usize,
    /// Records moved out of the live store.
    pub records: u64,
    /// The highest archived seq after the run (0: none).
    pub archived_through: u64,
    /// Bytes of the files written.
    pub bytes: u64,
}

/// One closed segment, as its trailer describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentInfo {
    pub first: u64,
    pub last: u64,
    pub path: PathBuf,
    pub bytes: u64,
    min_job: u128,
    max_job: u128,
    jobs_at: u64,
    jobs: u64,
}

/// A segment read into memory and checked: its batches' places.
struct Loaded {
    first: u64,
    bytes: Vec<u8>,
    /// (first seq, chunk, index) ranges of each batch.
    batches: Vec<(u64, std::ops::Range<usize>, std::ops::Range<usize>)>,
}

fn damaged(path: &Path, why: impl std::fmt::Display) -> LogError {
    LogError::Store(format!(
        "the log segment {} is damaged ({why}); run `recman audit`",
        path.display()
    ))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

fn u128_be_at(b: &[u8], at: usize) -> u128 {
    u128::from_be_bytes(b[at..at + 16].try_into().expect("16 bytes"))
}

/// `FIRST-LAST.seg` → (first, last).
fn parse_name(name: &str) -> Option<(u64, u64)> {
    let stem = name.strip_suffix(".seg")?;
    let (a, b) = stem.split_once('-')?;
    if a.len() != 20 || b.len() != 20 {
        return None;
    }
    Some((a.parse().ok()?, b.parse().ok()?))
}

fn file_name(first: u64, last: u64) -> String {
    format!("{first:020}-{last:020}.seg")
}

/// Reads a segment's trailer (the whole file is checked only when loaded).
fn read_info(path: &Path) -> Result<SegmentInfo, LogError> {
    let f = File::open(path)?;
    let len = f.metadata()?.len();
    if len < (MAGIC.len() + TRAILER) as u64 {
        return Err(damaged(
            path,
            format!("{len} bytes, shorter than a header and trailer"),
        ));
    }
    let mut t = vec![0u8; TRAILER];
    f.read_exact_at(&mut t, len - TRAILER as u64)?;
    if &t[TRAILER - 8..] != END {
        return Err(damaged(path, "no trailer: the file was cut short"));
    }
    let info = SegmentInfo {
        first: u64_at(&t, 16),
        last: u64_at(&t, 24),
        path: path.to_path_buf(),
        bytes: len,
        min_job: u128_be_at(&t, 40),
        max_job: u128_be_at(&t, 56),
        jobs_at: u64_at(&t, 0),
        jobs: u64_at(&t, 8),
    };
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    if parse_name(name) != Some((info.first, info.last)) {
        return Err(damaged(
            path,
            format!("its trailer says records {}..={}", info.first, info.last),
        ));
    }
    if info.jobs_at.saturating_add(info.jobs.saturating_mul(16)) != len - TRAILER as u64 {
        return Err(damaged(path, "its job list does not end at the trailer"));
    }
    Ok(info)
}

/// Reads and checks a whole segment.
fn load(info: &SegmentInfo) -> Result<Loaded, LogError> {
    let bytes = std::fs::read(&info.path)?;
    let path = &info.path;
    if bytes.len() < MAGIC.len() + TRAILER || &bytes[..8] != MAGIC {
        return Err(damaged(path, "no segment header"));
    }
    let hash_at = bytes.len() - 40;
    if blake3::hash(&bytes[..hash_at]).as_bytes()[..] != bytes[hash_at..hash_at + 32] {
        return Err(damaged(path, "its BLAKE3 checksum does not match"));
    }
    let end = info.jobs_at as usize;
    let mut at = MAGIC.len();
    let mut batches = Vec::new();
    while at < end {
        let head = bytes
            .get(at..at + 12)
            .ok_or_else(|| damaged(path, "a batch header is cut"))?;
        let first = u64_at(head, 0);
        let clen = u32::from_le_bytes(head[8..12].try_into().expect("4 bytes")) as usize;
        let chunk = at + 12..at + 12 + clen;
        let ilen_at = chunk.end;
        let ilen = bytes
            .get(ilen_at..ilen_at + 4)
            .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")) as usize)
            .ok_or_else(|| damaged(path, "a batch is cut"))?;
        let index = ilen_at + 4..ilen_at + 4 + ilen;
        if index.end > end {
            return Err(damaged(path, "a batch runs past the job list"));
        }
        at = index.end;
        batches.push((first, chunk, index));
    }
    Ok(Loaded {
        first: info.first,
        bytes,
        batches,
    })
}

/// The highest seq of a stored batch: from its frame, else its index.
pub fn batch_last(first: u64, chunk: &[u8], index: &[u8]) -> u64 {
    match framed::split(chunk) {
        Some(records) => first + records.len() as u64 - 1,
        None => index
            .chunks_exact(24)
            .map(|e| u64::from_be_bytes(e[16..].try_into().expect("8 bytes")))
            .max()
            .unwrap_or(first),
    }
}

/// Builds one segment file in memory.
struct SegmentWriter {
    buf: Vec<u8>,
    jobs: Vec<u128>,
    first: u64,
    last: u64,
    batches: u64,
    records: u64,
}

impl SegmentWriter {
    fn new() -> SegmentWriter {
        SegmentWriter {
            buf: MAGIC.to_vec(),
            jobs: Vec::new(),
            first: 0,
            last: 0,
            batches: 0,
            records: 0,
        }
    }

    fn push(&mut self, first: u64, last: u64, chunk: &[u8], index: &[u8]) {
        if self.batches == 0 {
            self.first = first;
        }
        self.last = last;
        self.batches += 1;
        self.records += last - first + 1;
        self.buf.extend_from_slice(&first.to_le_bytes());
        self.buf.extend_from_slice(&(chunk.len() as u32).to_le_bytes());
        self.buf.extend_from_slice(chunk);
        self.buf.extend_from_slice(&(index.len() as u32).to_le_bytes());
        self.buf.extend_from_slice(index);
        self.jobs.extend(index.chunks_exact(24).map(|e| u128_be_at(e, 0)));
    }

    /// Writes the file durably into `dir` and returns what it holds.
    fn finish(mut self, dir: &Path) -> Result<SegmentInfo, LogError> {
        self.jobs.sort_unstable();
        self.jobs.dedup();
        let jobs_at = self.buf.len() as u64;
        for j in &self.jobs {
            self.buf.extend_from_slice(&j.to_be_bytes());
        }
        for v in [
            jobs_at,
            self.jobs.len() as u64,
            self.first,
            self.last,
            self.batches,
        ] {
            self.buf.extend_from_slice(&v.to_le_bytes());
        }
        let min = self.jobs.first().copied().unwrap_or(0);
        let max = self.jobs.last().copied().unwrap_or(0);
        self.buf.extend_from_slice(&min.to_be_bytes());
        self.buf.extend_from_slice(&max.to_be_bytes());
        let hash = blake3::hash(&self.buf);
        self.buf.extend_from_slice(hash.as_bytes());
        self.buf.extend_from_slice(END);
        let name = file_name(self.first, self.last);
        let path = dir.join(&name);
        let tmp = dir.join(format!("{name}.tmp"));
        {
            let mut f = File::create(&tmp)?;
            f.write_all(&self.buf)?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, &path)?;
        File::open(dir)?.sync_all()?;
        Ok(SegmentInfo {
            first: self.first,
            last: self.last,
            path,
            bytes: self.buf.len() as u64,
            min_job: min,
            max_job: max,
            jobs_at,
            jobs: self.jobs.len() as u64,
        })
    }
}

/// A local store with its closed segments in front.
pub struct Segmented {
    live: Arc<dyn Store>,
    dir: PathBuf,
    segs: RwLock<Arc<Vec<SegmentInfo>>>,
    /// The segment read last (sequential reads load each file once).
    cache: Mutex<Option<Arc<Loaded>>>,
    /// One archive run at a time.
    archiving: Mutex<()>,
}

fn poisoned() -> LogError {
    LogError::Store("the segment list lock is poisoned (a thread panicked)".into())
}

impl Segmented {
    /// Wraps `live`, the store of the data dir `data_dir`, with the segments
    /// in `data_dir/segments` (none yet is fine). Segments that do not follow
    /// each other are refused: the log would have a hole.
    pub fn open(live: Arc<dyn Store>, data_dir: &Path) -> Result<Segmented, LogError> {
        let dir = data_dir.join(DIR_NAME);
        let mut segs = Vec::new();
        if dir.is_dir() {
            for entry in std::fs::read_dir(&dir)? {
                let path = entry?.path();
                let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
                if parse_name(name).is_some() {
                    segs.push(read_info(&path)?);
                }
            }
        }
        segs.sort_by_key(|s| s.first);
        if let Some(s) = segs.first().filter(|s| s.first != 1) {
            return Err(LogError::Store(format!(
                "the log segments in {} start at record {}: the segment with the records before \
                 it is missing (restore it from your backup)",
                dir.display(),
                s.first
            )));
        }
        for pair in segs.windows(2) {
            if pair[1].first != pair[0].last + 1 {
                return Err(LogError::Store(format!(
                    "the log segments in {} do not follow each other: {} ends at record {} and {} \
                     starts at {}; a segment file is missing (restore it from your backup)",
                    dir.display(),
                    pair[0].path.display(),
                    pair[0].last,
                    pair[1].path.display(),
                    pair[1].first
                )));
            }
        }
        Ok(Segmented {
            live,
            dir,
            segs: RwLock::new(Arc::new(segs)),
            cache: Mutex::new(None),
            archiving: Mutex::new(()),
        })
    }

    /// The closed segments, oldest first.
    pub fn segments(&self) -> Result<Arc<Vec<SegmentInfo>>, LogError> {
        Ok(self.segs.read().map_err(|_| poisoned())?.clone())
    }

    fn archived_through(&self) -> Result<u64, LogError> {
        Ok(self.segments()?.last().map_or(0, |s| s.last))
    }

    fn loaded(&self, info: &SegmentInfo) -> Result<Arc<Loaded>, LogError> {
        let mut cache = self.cache.lock().map_err(|_| poisoned())?;
        if let Some(l) = cache.as_ref().filter(|l| l.first == info.first) {
            return Ok(l.clone());
        }
        let l = Arc::new(load(info)?);
        *cache = Some(l.clone());
        Ok(l)
    }

    /// Whether segment `info`'s job list holds `job` (binary search on disk).
    fn holds_job(info: &SegmentInfo, job: u128) -> Result<bool, LogError> {
        if info.jobs == 0 || job < info.min_job || job > info.max_job {
            return Ok(false);
        }
        let f = File::open(&info.path)?;
        let (mut lo, mut hi) = (0u64, info.jobs);
        let mut b = [0u8; 16];
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            f.read_exact_at(&mut b, info.jobs_at + mid * 16)?;
            match u128::from_be_bytes(b).cmp(&job) {
                std::cmp::Ordering::Equal => return Ok(true),
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
            }
        }
        Ok(false)
    }

    /// Moves the group commits whose records all lie below `before` (and at
    /// least one record behind the last) from the live store into segment
    /// files of about `per_segment` records each. Returns what it moved.
    pub fn archive_before(&self, before: u64, per_segment: usize) -> Result<ArchiveReport, LogError> {
        let _one = self.archiving.lock().map_err(|_| poisoned())?;
        let mut report = ArchiveReport {
            archived_through: self.archived_through()?,
            ..ArchiveReport::default()
        };
        // Finish a run a crash cut between a segment's rename and the delete.
        self.live.drop_before(report.archived_through + 1)?;
        let Some(last) = self.live.last()? else {
            return Ok(report);
        };
        let before = before.min(last.seq);
        std::fs::create_dir_all(&self.dir)?;
        for entry in std::fs::read_dir(&self.dir)? {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == "tmp") {
                std::fs::remove_file(&path)?;
            }
        }
        loop {
            let mut seg = SegmentWriter::new();
            let mut next = report.archived_through + 1;
            let mut done = false;
            self.live.batches(next, &mut |first, chunk, index| {
                let last = batch_last(first, chunk, index);
                if last >= before {
                    done = true;
                    return false;
                }
                seg.push(first, last, chunk, index);
                next = last + 1;
                seg.records < per_segment.max(1) as u64
            })?;
            if seg.batches == 0 {
                break;
            }
            let info = seg.finish(&self.dir)?;
            report.segments += 1;
            report.records += info.last - info.first + 1;
            report.bytes += info.bytes;
            report.archived_through = info.last;
            {
                let mut segs = self.segs.write().map_err(|_| poisoned())?;
                let mut list = (**segs).clone();
                list.push(info);
                *segs = Arc::new(list);
            }
            self.live.drop_before(next)?;
            if done {
                break;
            }
        }
        Ok(report)
    }
}

impl Store for Segmented {
    fn commit(&self, batch: &Batch) -> Result<(), LogError> {
        self.live.commit(batch)
    }

    fn scan(&self, from: u64, max: usize, f: &mut dyn FnMut(u64, &[u8])) -> Result<usize, LogError> {
        let segs = self.segments()?;
        let mut n = 0usize;
        let mut from = from;
        if let Some(through) = segs.last().map(|s| s.last) {
            if from <= through {
                let start = segs.partition_point(|s| s.last < from);
                'segs: for info in &segs[start..] {
                    if n >= max {
                        break;
                    }
                    let l = self.loaded(info)?;
                    for (i, (first, chunk, _)) in l.batches.iter().enumerate() {
                        if l.batches.get(i + 1).is_some_and(|next| next.0 <= from) {
                            continue;
                        }
                        let mut full = false;
                        framed::for_each_record(*first, &l.bytes[chunk.clone()], &mut |seq, rec| {
                            if seq < from {
                                return true;
                            }
                            if n >= max {
                                full = true;
                                return false;
                            }
                            f(seq, rec);
                            n += 1;
                            true
                        });
                        if full {
                            break 'segs;
                        }
                    }
                }
                from = through + 1;
            }
        }
        if n < max {
            n += self.live.scan(from, max - n, f)?;
        }
        Ok(n)
    }

    fn get(&self, seq: u64) -> Result<Option<Vec<u8>>, LogError> {
        let segs = self.segments()?;
        let i = segs.partition_point(|s| s.last < seq);
        match segs.get(i).filter(|s| s.first <= seq) {
            Some(info) => {
                let l = self.loaded(info)?;
                let at = l.batches.partition_point(|b| b.0 <= seq);
                Ok(at.checked_sub(1).and_then(|b| {
                    let (first, chunk, _) = &l.batches[b];
                    framed::record_in(*first, &l.bytes[chunk.clone()], seq)
                }))
            }
            None => self.live.get(seq),
        }
    }

    fn job_seqs(&self, job: JobId) -> Result<Vec<u64>, LogError> {
        let segs = self.segments()?;
        let id = job.as_u128();
        let mut out = Vec::new();
        for info in segs.iter() {
            if !Self::holds_job(info, id)? {
                continue;
            }
            let l = self.loaded(info)?;
            for (_, _, index) in &l.batches {
                for e in l.bytes[index.clone()].chunks_exact(24) {
                    if u128_be_at(e, 0) == id {
                        out.push(u64::from_be_bytes(e[16..].try_into().expect("8 bytes")));
                    }
                }
            }
        }
        let through = segs.last().map_or(0, |s| s.last);
        out.extend(self.live.job_seqs(job)?.into_iter().filter(|s| *s > through));
        out.sort_unstable();
        out.dedup();
        Ok(out)
    }

    fn last(&self) -> Result<Option<RawRecord>, LogError> {
        if let Some(r) = self.live.last()? {
            return Ok(Some(r));
        }
        let segs = self.segments()?;
        let Some(info) = segs.last() else {
            return Ok(None);
        };
        Ok(self.get(info.last)?.map(|bytes| RawRecord {
            seq: info.last,
            bytes,
        }))
    }

    fn put_raw(&self, seq: u64, bytes: Option<&[u8]>) -> Result<(), LogError> {
        if seq <= self.archived_through()? {
            return Err(LogError::Store(format!(
                "record {seq} is in a closed log segment, which is never rewritten"
            )));
        }
        self.live.put_raw(seq, bytes)
    }

    fn index_damage(&self) -> Vec<(u64, String)> {
        self.live.index_damage()
    }

    fn lease(&self) -> Option<Arc<crate::log::lease::Lease>> {
        self.live.lease()
    }

    fn batches(&self, from: u64, f: &mut BatchVisitor<'_>) -> Result<(), LogError> {
        self.live.batches(from, f)
    }

    fn drop_before(&self, before: u64) -> Result<u64, LogError> {
        self.live.drop_before(before)
    }

    fn archive(&self, before: u64, per_segment: usize) -> Result<ArchiveReport, LogError> {
        self.archive_before(before, per_segment)
    }

    fn segments(&self) -> Result<Vec<SegmentInfo>, LogError> {
        Ok((*Segmented::segments(self)?).clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::{open, open_for_reading, Backend, EventLog};
    use crate::model::{Event, EventBody};

    /// Appends `batches` group commits of 3 events each, over `jobs` jobs
    /// taking turns; returns the jobs.
    async fn fill(log: &dyn EventLog, batches: u64, jobs: &[JobId], at: u64) {
        for b in 0..batches {
            let evs = (0..3)
                .map(|i| Event {
                    at_ms: at + b * 3 + i,
                    job: jobs[((b * 3 + i) % jobs.len() as u64) as usize],
                    body: EventBody::Cancelled,
                    by: String::new(),
                })
                .collect();
            log.append(evs).await.unwrap();
        }
    }

    fn everything(log: &dyn EventLog) -> Vec<crate::StoredEvent> {
        log.read(1, usize::MAX).unwrap()
    }

    #[tokio::test]
    async fn archived_records_read_as_before_and_the_chain_holds_across() {
        let dir = tempfile::tempdir().unwrap();
        let jobs: Vec<JobId> = (0..5).map(|_| JobId::new_v7()).collect();
        let log = open(Backend::Redb, dir.path()).unwrap();
        fill(&*log, 40, &jobs, 1_000).await; // records 1..=120
        let before_all = everything(&*log);
        let before_jobs: Vec<_> = jobs.iter().map(|j| log.read_job(*j).unwrap()).collect();

        let r = log.archive(50, 12).unwrap();
        // Whole batches below 50 (1..=48), 12 records (4 batches) a segment.
        assert_eq!(r.records, 48, "{r:?}");
        assert_eq!(r.segments, 4, "{r:?}");
        assert_eq!(r.archived_through, 48, "{r:?}");
        let segs = log.segments().unwrap();
        assert_eq!(segs.len(), 4);
        assert_eq!((segs[0].first, segs[3].last), (1, 48));
        assert_eq!(everything(&*log), before_all, "the log reads the same");
        for (j, want) in jobs.iter().zip(&before_jobs) {
            assert_eq!(&log.read_job(*j).unwrap(), want, "job {j} reads the same");
        }
        assert_eq!(
            log.read(47, 3).unwrap().iter().map(|e| e.seq).collect::<Vec<_>>(),
            [47, 48, 49]
        );
        let a = crate::audit::audit(&*log);
        assert!(a.is_clean(), "{a:?}");
        assert_eq!(a.records, 120);

        // Appends continue the chain; a second run moves the rest but the
        // last record; reopening (for writing and for reading) sees it all.
        fill(&*log, 2, &jobs, 5_000).await;
        let r = log.archive(u64::MAX, 1_000).unwrap();
        assert_eq!(
            r.archived_through, 123,
            "the last batch (124..=126) stays live: {r:?}"
        );
        let all = everything(&*log);
        assert_eq!(all.len(), 126);
        drop(log);
        let log = open(Backend::Redb, dir.path()).unwrap();
        assert_eq!(everything(&*log), all);
        assert_eq!(log.last_seq(), 126);
        fill(&*log, 1, &jobs, 9_000).await;
        assert!(crate::audit::audit(&*log).is_clean());
        drop(log);
        let ro = open_for_reading(dir.path()).unwrap();
        assert_eq!(ro.read(1, usize::MAX).unwrap().len(), 129);
        assert_eq!(ro.segments().unwrap().len(), 5);
        let a = crate::audit::audit(&*ro);
        assert!(a.is_clean() && a.records == 129, "{a:?}");
    }

    #[tokio::test]
    async fn compacting_an_archived_log_gives_its_space_back() {
        let dir = tempfile::tempdir().unwrap();
        let jobs: Vec<JobId> = (0..5).map(|_| JobId::new_v7()).collect();
        let log = open(Backend::Redb, dir.path()).unwrap();
        fill(&*log, 3_000, &jobs, 1_000).await;
        let all = everything(&*log);
        let r = log.archive(u64::MAX, 100_000).unwrap();
        assert_eq!(r.archived_through, 8_997, "{r:?}");
        // One owner: not while the log is open.
        let busy = crate::log::redb_store::RedbStore::compact(dir.path());
        assert!(matches!(busy, Err(LogError::Locked(_))), "{busy:?}");
        drop(log);
        let (before, after) = crate::log::redb_store::RedbStore::compact(dir.path()).unwrap();
        assert!(after * 4 < before, "{before} -> {after} bytes");
        assert_eq!(
            std::fs::metadata(dir.path().join("events.redb")).unwrap().len(),
            after
        );
        // The same log: every record, the chain, and appends go on.
        let log = open(Backend::Redb, dir.path()).unwrap();
        assert_eq!(everything(&*log), all);
        fill(&*log, 2, &jobs, 50_000).await;
        let a = crate::audit::audit(&*log);
        assert!(a.is_clean() && a.records == 9_006, "{a:?}");
    }

    #[tokio::test]
    async fn a_crash_between_the_segment_and_the_delete_loses_and_doubles_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let copy = tempfile::tempdir().unwrap();
        let jobs: Vec<JobId> = (0..3).map(|_| JobId::new_v7()).collect();
        {
            let log = open(Backend::Redb, dir.path()).unwrap();
            fill(&*log, 10, &jobs, 1).await;
        }
        std::fs::copy(dir.path().join("events.redb"), copy.path().join("events.redb")).unwrap();
        for f in std::fs::read_dir(dir.path()).unwrap() {
            let p = f.unwrap().path();
            if p.is_file() {
                std::fs::copy(&p, copy.path().join(p.file_name().unwrap())).unwrap();
            }
        }
        let want;
        {
            let log = open(Backend::Redb, dir.path()).unwrap();
            want = everything(&*log);
            log.archive(20, 100).unwrap();
        }
        // `copy` = the segment written and renamed, the live delete not done.
        std::fs::create_dir(copy.path().join(DIR_NAME)).unwrap();
        for f in std::fs::read_dir(dir.path().join(DIR_NAME)).unwrap() {
            let p = f.unwrap().path();
            std::fs::copy(&p, copy.path().join(DIR_NAME).join(p.file_name().unwrap())).unwrap();
        }
        std::fs::write(copy.path().join(DIR_NAME).join("x.seg.tmp"), b"half a segment").unwrap();
        let log = open(Backend::Redb, copy.path()).unwrap();
        assert_eq!(everything(&*log), want, "no record twice, none lost");
        for j in &jobs {
            let seqs: Vec<u64> = log.read_job(*j).unwrap().iter().map(|e| e.seq).collect();
            let mut unique = seqs.clone();
            unique.dedup();
            assert_eq!(seqs, unique, "job {j}: each record once");
            assert_eq!(seqs.len(), 10);
        }
        let r = log.archive(0, 100).unwrap();
        assert_eq!((r.segments, r.archived_through), (0, 18), "{r:?}");
        assert!(
            !copy.path().join(DIR_NAME).join("x.seg.tmp").exists(),
            "temp files go"
        );
        let mut live = 0;
        log.scan_raw(19, usize::MAX, &mut |_, _| live += 1).unwrap();
        assert_eq!(live, 12, "the leftovers left the live store");
        assert_eq!(everything(&*log), want);
        assert!(crate::audit::audit(&*log).is_clean());
    }

    #[tokio::test]
    async fn a_damaged_or_missing_segment_is_named_not_misread() {
        let dir = tempfile::tempdir().unwrap();
        let jobs = [JobId::new_v7()];
        {
            let log = open(Backend::Redb, dir.path()).unwrap();
            fill(&*log, 10, &jobs, 1).await;
            let r = log.archive(25, 6).unwrap();
            assert_eq!(r.segments, 4, "{r:?}");
        }
        let segs: Vec<PathBuf> = {
            let mut v: Vec<PathBuf> = std::fs::read_dir(dir.path().join(DIR_NAME))
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect();
            v.sort();
            v
        };
        // A flipped byte in the second segment: reads through it fail with
        // its name, the audit says it could not read on; nothing is misread.
        let mut bytes = std::fs::read(&segs[1]).unwrap();
        bytes[20] ^= 0x40;
        std::fs::write(&segs[1], &bytes).unwrap();
        let ro = open_for_reading(dir.path()).unwrap();
        assert_eq!(ro.read(1, 6).unwrap().len(), 6, "the first segment is fine");
        let e = ro.read(1, usize::MAX).unwrap_err().to_string();
        assert!(
            e.contains("damaged") && e.contains(segs[1].to_str().unwrap()),
            "{e}"
        );
        let a = crate::audit::audit(&*ro);
        assert!(a.unreadable.is_some(), "{a:?}");
        drop(ro);
        // A missing segment in the middle is refused on open.
        std::fs::remove_file(&segs[1]).unwrap();
        let e = open(Backend::Redb, dir.path()).err().unwrap().to_string();
        assert!(e.contains("do not follow each other"), "{e}");
        std::fs::remove_file(&segs[0]).unwrap();
        let e = open_for_reading(dir.path()).err().unwrap().to_string();
        assert!(e.contains("start at record 13") && e.contains("missing"), "{e}");
        // A cut file is named.
        std::fs::write(&segs[2], &bytes[..bytes.len() - 3]).unwrap();
        let e = open_for_reading(dir.path()).err().unwrap().to_string();
        assert!(e.contains("cut short") || e.contains("trailer"), "{e}");
    }

    #[tokio::test]
    async fn logs_without_segments_say_so() {
        let log = crate::log::memory::open().unwrap();
        let e = log.archive(10, 10).unwrap_err().to_string();
        assert!(e.contains("cannot be archived"), "{e}");
        assert!(log.segments().unwrap().is_empty());
    }
}
