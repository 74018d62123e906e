//! The view's section of a checkpoint: what the read side folded beyond the
//! core state (timelines' steps, the catalog, the last snapshot and failure
//! per target, the metrics, the recent finished jobs), so that the API
//! starts from a checkpoint and the log's tail instead of the whole log.
//!
//! Bytes: `VIEW_FORMAT u16 LE | postcard(Section)`. The core's checkpoint
//! carries them beside the state of the same record and covers them with
//! its checksum. A section of another version, another `recent_finished`
//! or other bounds is not used (the view is then folded from the whole log:
//! slower, never wrong).

use std::collections::BTreeMap;

use recman_core::recovery::Op;
use recman_core::{Job, State};
use recman_events::{JobId, TargetId};
use serde::{Deserialize, Serialize};

use super::metrics::{Family, Histogram, FREEZE_BUCKETS, STAGE_BUCKETS};
use super::{state_name, Expiry};
use super::{
    ArrayExpiryView, FailureRef, JobExtra, PruneFailureRef, SnapshotEntry, SnapshotRef, View, ALL_STATES,
};

/// The section's own format; a change of any type below needs a new one.
pub const VIEW_FORMAT: u16 = 2;

/// A catalog entry as folded (what `snapshots()` adds at read time is not kept).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Row {
    name: String,
    targets: Vec<TargetId>,
    job: JobId,
    cut_at_ms: u64,
    kind: String,
    provider: String,
    location: String,
    size_bytes: Option<u64>,
    freeze_window_us: u64,
    prune_failure: Option<String>,
    array_expiry: Option<Expiry>,
}

/// A histogram's counts (its bounds are its family's).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Counts {
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

/// Everything the view folded beyond the core state, at one record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Section {
    /// `[engine] recent_finished` of the fold.
    recent_cap: u64,
    last_seq: u64,
    last_at_ms: u64,
    extra: BTreeMap<JobId, JobExtra>,
    /// Oldest first.
    catalog: Vec<Row>,
    last_snapshot: BTreeMap<TargetId, SnapshotRef>,
    last_failure: BTreeMap<TargetId, FailureRef>,
    last_prune_failure: BTreeMap<TargetId, PruneFailureRef>,
    stage_hist: BTreeMap<String, Counts>,
    freeze_hist: BTreeMap<String, Counts>,
    step_failures: BTreeMap<String, u64>,
    /// The recent finished jobs, oldest first.
    recent: Vec<Job>,
    /// The recent finished recovery jobs, oldest first.
    recent_ops: Vec<Op>,
    left_by_state: BTreeMap<String, u64>,
}

fn counts(f: &Family) -> BTreeMap<String, Counts> {
    f.iter()
        .map(|(k, h)| {
            let (counts, sum, count) = h.parts();
            (
                k.clone(),
                Counts {
                    counts: counts.to_vec(),
                    sum,
                    count,
                },
            )
        })
        .collect()
}

fn family(c: BTreeMap<String, Counts>, bounds: &'static [f64]) -> Result<Family, String> {
    c.into_iter()
        .map(|(k, c)| {
            Histogram::from_parts(bounds, c.counts, c.sum, c.count)
                .map(|h| (k, h))
                .ok_or_else(|| "a histogram has other buckets than this build's".to_string())
        })
        .collect()
}

impl View {
    /// The section of this view (its fold beyond the core state).
    pub fn section(&self) -> Section {
        Section {
            recent_cap: self.recent_cap as u64,
            last_seq: self.last_seq,
            last_at_ms: self.last_at_ms,
            extra: self.extra.clone(),
            catalog: self
                .catalog
                .values()
                .map(|c| Row {
                    name: c.name.clone(),
                    targets: c.targets.clone(),
                    job: c.job,
                    cut_at_ms: c.cut_at_ms,
                    kind: c.kind.clone(),
                    provider: c.provider.clone(),
                    location: c.location.clone(),
                    size_bytes: c.size_bytes,
                    freeze_window_us: c.freeze_window_us,
                    prune_failure: c.prune_failure.clone(),
                    array_expiry: c.array_expiry.as_ref().map(|e| Expiry {
                        expiration_hours: e.expiration_hours,
                        retention_hours: e.retention_hours,
                    }),
                })
                .collect(),
            last_snapshot: self.last_snapshot.clone(),
            last_failure: self.last_failure.clone(),
            last_prune_failure: self.last_prune_failure.clone(),
            stage_hist: counts(&self.stage_hist),
            freeze_hist: counts(&self.freeze_hist),
            step_failures: self.step_failures.clone(),
            recent: self.recent.in_order(),
            recent_ops: self.recent_ops.in_order(),
            left_by_state: self
                .left_by_state
                .iter()
                .map(|(k, v)| (k.to_string(), *v))
                .collect(),
        }
    }

    /// The section's bytes, for `recman_core::checkpoint::encode_with_view`.
    pub fn encode_section(&self) -> Vec<u8> {
        let out = VIEW_FORMAT.to_le_bytes().to_vec();
        // Plain maps, strings and numbers (a job as the core's checkpoint has it).
        postcard::to_extend(&self.section(), out).expect("a view section always serializes")
    }

    /// This (empty, configured) view continued from a checkpoint: `state`
    /// and the view `section` at record `seq`. `Err` says why the section
    /// cannot be used (then fold the whole log instead).
    pub fn from_checkpoint(mut self, seq: u64, state: State, section: &[u8]) -> Result<View, String> {
        let s = decode(section)?;
        if s.recent_cap != self.recent_cap as u64 {
            return Err(format!(
                "its view kept {} recent finished jobs, the config {} ([engine] recent_finished)",
                s.recent_cap, self.recent_cap
            ));
        }
        if state.bounds != self.state.bounds {
            return Err("it was folded under other bounds ([engine] keep_finished, request window)".into());
        }
        if s.last_seq != seq || state.applied != seq {
            return Err(format!(
                "its view is at record {}, its state at {}, the checkpoint at {seq}",
                s.last_seq, state.applied
            ));
        }
        self.state = state;
        self.last_seq = s.last_seq;
        self.last_at_ms = s.last_at_ms;
        self.extra = s.extra;
        self.catalog.clear();
        self.catalog_by_job.clear();
        self.catalog_next = 0;
        for r in s.catalog {
            self.catalog_push(SnapshotEntry {
                array_expiry: r
                    .array_expiry
                    .map(|e| ArrayExpiryView::new(e.into(), r.cut_at_ms)),
                name: r.name,
                targets: r.targets,
                job: r.job,
                cut_at_ms: r.cut_at_ms,
                kind: r.kind,
                provider: r.provider,
                location: r.location,
                size_bytes: r.size_bytes,
                freeze_window_us: r.freeze_window_us,
                retention: None,
                prune_failure: r.prune_failure,
                verification: Vec::new(),
                in_use: Vec::new(),
            });
        }
        self.last_snapshot = s.last_snapshot;
        self.last_failure = s.last_failure;
        self.last_prune_failure = s.last_prune_failure;
        self.stage_hist = family(s.stage_hist, STAGE_BUCKETS)?;
        self.freeze_hist = family(s.freeze_hist, FREEZE_BUCKETS)?;
        self.step_failures = s.step_failures;
        self.recent = super::recent::Recent::from_list(s.recent);
        self.recent_ops = super::recent::Recent::from_list(s.recent_ops);
        self.left_by_state.clear();
        for (k, n) in s.left_by_state {
            let name = ALL_STATES
                .iter()
                .map(|st| state_name(*st))
                .find(|n| *n == k)
                .ok_or_else(|| format!("unknown job state {k:?} in its view"))?;
            self.left_by_state.insert(name, n);
        }
        Ok(self)
    }
}

/// Decodes section bytes (version first).
pub fn decode(bytes: &[u8]) -> Result<Section, String> {
    if bytes.is_empty() {
        return Err("it has no view section (written by `recman bench` or an older build)".into());
    }
    let version = bytes
        .get(..2)
        .map(|v| u16::from_le_bytes([v[0], v[1]]))
        .ok_or("its view section is truncated")?;
    if version != VIEW_FORMAT {
        return Err(format!(
            "its view section has format {version}, this build reads {VIEW_FORMAT}"
        ));
    }
    postcard::from_bytes(&bytes[2..]).map_err(|e| format!("its view section does not decode: {e}"))
}

/// The `recent_finished` a section was folded with (`None`: none usable).
pub fn recent_cap(bytes: &[u8]) -> Option<usize> {
    decode(bytes).ok().map(|s| s.recent_cap as usize)
}

/// The first difference between a checkpoint's view section and the view
/// folded from the log to the same record (`recman audit`).
pub fn difference(section: &[u8], folded: &View) -> Option<String> {
    let s = match decode(section) {
        Ok(s) => s,
        Err(e) => return Some(e),
    };
    let f = folded.section();
    if s == f {
        return None;
    }
    let parts: [(&str, bool); 13] = [
        ("recent_finished", s.recent_cap == f.recent_cap),
        (
            "last record",
            s.last_seq == f.last_seq && s.last_at_ms == f.last_at_ms,
        ),
        ("job steps", s.extra == f.extra),
        ("catalog", s.catalog == f.catalog),
        ("last snapshots", s.last_snapshot == f.last_snapshot),
        ("last failures", s.last_failure == f.last_failure),
        (
            "last prune failures",
            s.last_prune_failure == f.last_prune_failure,
        ),
        ("stage durations", s.stage_hist == f.stage_hist),
        ("freeze windows", s.freeze_hist == f.freeze_hist),
        ("step failures", s.step_failures == f.step_failures),
        ("recent finished jobs", s.recent == f.recent),
        ("recent finished recovery jobs", s.recent_ops == f.recent_ops),
        ("job counts", s.left_by_state == f.left_by_state),
    ];
    let which = parts.iter().find(|(_, same)| !same).map_or("view", |(n, _)| n);
    Some(format!("its view's {which} differ from the log's fold"))
}
