//! The worker core: the rules a worker follows for a step on one target, as
//! plain data in and out. The worker runtime (`recman-workers`) and the
//! simulator both call it, so the simulator checks the engine against the
//! workers' real rules.
//!
//! No clock, no disk, no sockets: time is the `now_ms` argument (Unix ms), the
//! memory a `TargetMemory` value the caller keeps, one per target. Per target
//! and step: `plan_*` says what to do; the caller runs the real step only when
//! told to, then records what happened (`TargetMemory::record_*`).
//!
//! The rules:
//! - a freeze of one attempt runs at most once per target: a redelivery gets
//!   the first outcome (`Plan::Answer`);
//! - a freeze is refused after the thaw of its attempt (`already_thawed`),
//!   after its `thaw_deadline_ms` (`deadline_passed`), and while another
//!   attempt holds the target (`busy`); all retryable, nothing frozen;
//! - a thaw ends only its own attempt's freeze (`ThawPlan::Own`); when memory
//!   says another attempt holds the target it is a recorded no-op
//!   (`ThawPlan::Other`); when memory knows no freeze it runs anyway
//!   (`ThawPlan::Unknown`: thaw is idempotent, and a restarted worker may be
//!   asked by the pool fallback). Either way the attempt counts as thawed;
//! - the watchdog thaws only the freeze it was armed for (`ThawPlan::Own`);
//! - a snapshot whose name retention deleted is not taken again (`deleted`).

mod memory;

pub use memory::{AttemptKey, Hold, TargetMemory, ThawedBy, MEMORY_CAPACITY};

use recman_events::{StepError, TargetId};

/// What to do with a freeze or snapshot command on one target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Plan {
    /// Run the real step, then record its result.
    Run,
    /// A freeze that ran already: answer with its first outcome (the
    /// watchdog deadline, or the error), run nothing.
    Answer(Result<u64, StepError>),
    /// Refused: report this error, run nothing.
    Refuse(StepError),
}

/// What a thaw of one attempt on one target does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ThawPlan {
    /// This attempt's freeze holds the target: run the writer's thaw; the
    /// freeze window ends here.
    Own(Hold),
    /// Another attempt's freeze holds the target: run nothing and report the
    /// thaw done; that freeze is not this thaw's to end.
    Other {
        holder: AttemptKey,
        /// This attempt's own freeze was ended by the watchdog.
        by_watchdog: bool,
    },
    /// Memory knows no freeze of the target: run the writer's thaw anyway
    /// (idempotent).
    Unknown {
        /// This attempt's freeze was ended by the worker by itself (watchdog,
        /// or found frozen on start): the report says so.
        by_watchdog: bool,
    },
}

impl ThawPlan {
    /// Whether the writer's thaw runs.
    pub fn runs(&self) -> bool {
        !matches!(self, ThawPlan::Other { .. })
    }

    /// What the thaw's report says in `by_watchdog`.
    pub fn by_watchdog(&self) -> bool {
        match self {
            ThawPlan::Own(_) => false,
            ThawPlan::Other { by_watchdog, .. } | ThawPlan::Unknown { by_watchdog } => *by_watchdog,
        }
    }
}

/// A deliberately broken rule, off unless a test asks for it: the simulator
/// must report a violation when the workers do this (its self-test, like the
/// engine core's `Mutation`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mutation {
    /// A freeze that comes after the thaw of its attempt runs anyway.
    FreezeAfterThaw,
    /// A thaw ends whatever freeze holds the target, not only its attempt's.
    ThawIgnoresAttempt,
}

/// The freeze of `key` (whose command carries `thaw_deadline_ms`) arrives at
/// `now_ms`.
pub fn plan_freeze(mem: &TargetMemory, key: AttemptKey, thaw_deadline_ms: Option<u64>, now_ms: u64) -> Plan {
    plan_freeze_with(mem, key, thaw_deadline_ms, now_ms, None)
}

/// `plan_freeze`, with a deliberately broken rule (tests only).
pub fn plan_freeze_with(
    mem: &TargetMemory,
    key: AttemptKey,
    thaw_deadline_ms: Option<u64>,
    now_ms: u64,
    mutation: Option<Mutation>,
) -> Plan {
    if let Some(first) = mem.freeze_outcome(key) {
        return Plan::Answer(first.clone());
    }
    if let Some(h) = mem.hold().filter(|h| h.key() == key) {
        // Frozen by this attempt, its outcome forgotten (memory is bounded).
        return Plan::Answer(Ok(h.deadline_ms));
    }
    if mem.thawed(key).is_some() && mutation != Some(Mutation::FreezeAfterThaw) {
        return Plan::Refuse(StepError::new(
            "already_thawed",
            "a thaw for this attempt came first: not frozen",
            true,
        ));
    }
    if let Some(d) = thaw_deadline_ms.filter(|d| now_ms >= *d) {
        return Plan::Refuse(StepError::new(
            "deadline_passed",
            format!(
                "the freeze came after its thaw deadline ({} ms ago): not frozen",
                now_ms - d
            ),
            true,
        ));
    }
    if let Some(h) = mem.hold() {
        return Plan::Refuse(StepError::new(
            "busy",
            format!(
                "still frozen by job {} attempt {} (until its thaw, at the latest its watchdog): not frozen",
                h.job, h.attempt
            ),
            true,
        ));
    }
    Plan::Run
}

/// The watchdog deadline of a freeze that returned at `now_ms`: the engine's
/// `thaw_deadline_ms` when given, never later than the target's freeze limit.
pub fn freeze_deadline_ms(now_ms: u64, thaw_deadline_ms: Option<u64>, freeze_limit_ms: u64) -> u64 {
    let limit = now_ms.saturating_add(freeze_limit_ms);
    thaw_deadline_ms.map_or(limit, |d| d.min(limit))
}

/// A thaw of `key` (a command, or the watchdog armed for `key`).
pub fn plan_thaw(mem: &TargetMemory, key: AttemptKey) -> ThawPlan {
    plan_thaw_with(mem, key, None)
}

/// `plan_thaw`, with a deliberately broken rule (tests only).
pub fn plan_thaw_with(mem: &TargetMemory, key: AttemptKey, mutation: Option<Mutation>) -> ThawPlan {
    let by_watchdog = mem.thawed(key) == Some(ThawedBy::Watchdog);
    match mem.hold() {
        Some(h) if h.key() == key || mutation == Some(Mutation::ThawIgnoresAttempt) => {
            ThawPlan::Own(h.clone())
        }
        Some(h) => ThawPlan::Other {
            holder: h.key(),
            by_watchdog,
        },
        None => ThawPlan::Unknown { by_watchdog },
    }
}

/// A snapshot named `name` of `target`.
pub fn plan_snapshot(mem: &TargetMemory, target: &TargetId, name: &str) -> Plan {
    if mem.is_pruned(name) {
        return Plan::Refuse(StepError::new(
            "deleted",
            format!("snapshot {name} of {target} was deleted by retention: not taken again"),
            false,
        ));
    }
    Plan::Run
}
