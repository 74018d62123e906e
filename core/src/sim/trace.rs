//! What a violation's trace shows of a job: its durable events and the
//! commands and reports around it, kept for the recent jobs only (two
//! generations of `GENERATION` jobs each), so a run's memory does not grow
//! with its length.

use std::collections::HashMap;

use recman_events::{Event, JobId};

use super::scheduler::T0;

/// Jobs per generation: a run with fewer keeps every job's trace.
const GENERATION: usize = 4_000;

/// Lines kept per job and generation (the first ones).
const LINES: usize = 2_000;

/// One generation's lines per job: events, then messages.
type Lines = HashMap<JobId, (Vec<String>, Vec<String>)>;

/// The recent jobs' traces: the current generation and the one before.
#[derive(Default)]
pub(super) struct Traces {
    current: Lines,
    previous: Lines,
}

impl Traces {
    /// A durable event of `e.job`.
    pub fn event(&mut self, e: &Event) {
        let line = format!("{:>8} event {:?}", e.at_ms.saturating_sub(T0), e.body);
        let lines = &mut self.entry(e.job).0;
        if lines.len() < LINES {
            lines.push(line);
        }
    }

    /// A command or report of `job`, or a note of the world.
    pub fn message(&mut self, job: JobId, line: String) {
        let lines = &mut self.entry(job).1;
        if lines.len() < LINES {
            lines.push(line);
        }
    }

    fn entry(&mut self, job: JobId) -> &mut (Vec<String>, Vec<String>) {
        if !self.current.contains_key(&job) && self.current.len() >= GENERATION {
            self.previous = std::mem::take(&mut self.current);
        }
        self.current.entry(job).or_default()
    }

    /// The trace of `job`: its events, then its messages.
    pub fn of(&self, job: JobId) -> Vec<String> {
        let parts: Vec<&(Vec<String>, Vec<String>)> = [self.previous.get(&job), self.current.get(&job)]
            .into_iter()
            .flatten()
            .collect();
        let mut out: Vec<String> = parts.iter().flat_map(|p| p.0.iter().cloned()).collect();
        let messages: Vec<String> = parts.iter().flat_map(|p| p.1.iter().cloned()).collect();
        if !messages.is_empty() {
            out.push("-- messages --".into());
            out.extend(messages);
        }
        out
    }
}
