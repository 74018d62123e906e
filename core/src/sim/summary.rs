//! What a run reports: the `Summary` of a clean run (its key=value line is
//! parsed by tests and BENCHMARKS.md, keep it byte-identical) or the first
//! `Violation`, with the trace of the job involved (`render`).

use std::fmt::Write as _;

use recman_events::JobId;

/// Figures of a clean run.
#[derive(Clone, Debug, Default)]
pub struct Summary {
    pub seed: u64,
    pub jobs: usize,
    pub targets: usize,
    pub completed: usize,
    pub failed: usize,
    pub cancelled: usize,
    pub steps: u64,
    pub inputs: u64,
    pub events: usize,
    pub engine_crashes: u32,
    pub virtual_ms: u64,
    /// Schedule firings and RPO breaches (runs with schedules).
    pub fired: usize,
    pub rpo_breaches: usize,
    /// Verifications that passed and failed (targets with `[target.verify]`).
    pub verified: usize,
    pub verify_failed: usize,
    /// Restore points the storage lost, reconciles ended, points vanished.
    pub lost: usize,
    pub reconciled: usize,
    pub vanished: usize,
    /// Recoveries that ended, and requests for one the engine refused.
    pub recoveries: usize,
    pub recoveries_refused: usize,
    /// Engine processes, leadership changes to the other one, stops of the
    /// leader, and appends refused by the fencing (two engines).
    pub engines: usize,
    pub takeovers: u32,
    pub pauses: u32,
    pub fenced: u32,
    /// Freeze outcomes a worker never wrote (lost after its report).
    pub unrecorded: u32,
}

impl Summary {
    pub fn line(&self, wall_s: f64) -> String {
        let w = wall_s.max(1e-9);
        format!(
            "seed={} jobs={} targets={} completed={} failed={} cancelled={} violations=0 steps={} inputs_per_s={:.0} sim_jobs_per_s={:.0}",
            self.seed,
            self.jobs,
            self.targets,
            self.completed,
            self.failed,
            self.cancelled,
            self.steps,
            self.inputs as f64 / w,
            self.jobs as f64 / w
        ) + &if self.fired > 0 || self.rpo_breaches > 0 {
            format!(" fired={} rpo_breaches={}", self.fired, self.rpo_breaches)
        } else {
            String::new()
        } + &if self.verified > 0 || self.verify_failed > 0 {
            format!(" verified={} verify_failed={}", self.verified, self.verify_failed)
        } else {
            String::new()
        } + &if self.reconciled > 0 || self.lost > 0 {
            format!(
                " reconciled={} lost={} vanished={}",
                self.reconciled, self.lost, self.vanished
            )
        } else {
            String::new()
        } + &if self.recoveries > 0 || self.recoveries_refused > 0 {
            format!(
                " recoveries={} recoveries_refused={}",
                self.recoveries, self.recoveries_refused
            )
        } else {
            String::new()
        } + &if self.unrecorded > 0 {
            format!(" unrecorded={}", self.unrecorded)
        } else {
            String::new()
        } + &if self.engines > 1 {
            format!(
                " engines={} takeovers={} pauses={} fenced={}",
                self.engines, self.takeovers, self.pauses, self.fenced
            )
        } else {
            String::new()
        }
    }
}

/// A broken invariant, with the trace of the job involved.
#[derive(Clone, Debug)]
pub struct Violation {
    pub seed: u64,
    pub invariant: &'static str,
    pub detail: String,
    pub at_ms: u64,
    pub job: Option<JobId>,
    pub trace: Vec<String>,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "VIOLATION invariant={} seed={} at_ms={}",
            self.invariant, self.seed, self.at_ms
        )?;
        writeln!(f, "  {}", self.detail)?;
        if let Some(j) = self.job {
            writeln!(f, "trace of job {j}:")?;
        }
        for l in &self.trace {
            writeln!(f, "  {l}")?;
        }
        write!(
            f,
            "reproduce: recman simulate --seed {} (same options)",
            self.seed
        )
    }
}

/// Formats a violation for a terminal (`recman simulate`).
pub fn render(v: &Violation) -> String {
    let mut s = String::new();
    let _ = write!(s, "{v}");
    s
}
