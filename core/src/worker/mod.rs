//! The worker core: the rules a worker follows for a step on one target, as
//! plain data in and out. The worker runtime (`recman-workers`) and the
//! simulator both call it, so the simulator checks the engine against the
//! workers' real rules.
//!
//! No clock, no disk, no sockets: time is the `now_ms` argument (Unix ms).
//! Two memories, kept by the caller:
//! - `TargetMemory`, the host's freeze state of one target, shared by every
//!   worker process of the host and surviving their restarts (the runtime
//!   keeps it in the state directory under a lock; the simulator per host);
//! - `Recent`, what one process remembers and loses when it ends: answered
//!   commands (redeliveries) and snapshot names its prunes deleted.
//!
//! Per target and step, `plan_*` says what to do; the caller runs the real
//! step only when told to, then records what happened (`TargetMemory::record_*`).
//!
//! The rules:
//! - a freeze is held in the host state *before* the writer is called, and
//!   its watchdog is armed then: a freeze that fails or times out may have
//!   landed, and stays held until a thaw (the engine thaws it) or the watchdog;
//! - a freeze of one attempt runs at most once per target, whichever process
//!   of the host gets it: a redelivery gets the first outcome (`Plan::Answer`);
//! - a freeze is refused after the thaw of its attempt (`already_thawed`),
//!   after its `thaw_deadline_ms` (`deadline_passed`), and while another
//!   attempt holds the target (`busy`); all retryable, nothing frozen;
//! - a thaw ends only its own attempt's freeze (`ThawPlan::Own`); when
//!   another attempt holds the target it is a recorded no-op
//!   (`ThawPlan::Other`); when nothing holds it, the writer's thaw runs
//!   anyway (`ThawPlan::Unknown`: thaw is idempotent). Either way the
//!   attempt counts as thawed, and every thaw of it reports the window the
//!   first one ended (the real one, from the host state, whichever process
//!   froze);
//! - the watchdog thaws only the freeze it was armed for (`ThawPlan::Own`);
//!   a hold whose process is gone is taken over by a live process of the
//!   host (`adoptable`), whose watchdog then thaws it at its deadline;
//! - a snapshot already on the storage for this attempt is reported (even
//!   late: the engine records and deletes a late one); one of another job is
//!   never adopted (`name_conflict`); a snapshot is not started once its
//!   attempt is thawed on this host (`already_thawed`) or past its thaw
//!   deadline (`deadline_passed`), nor when retention deleted its name
//!   (`deleted`).

mod memory;
mod recent;

pub use memory::{
    AttemptKey, Hold, Process, TargetMemory, Thawed, ThawedBy, MEMORY_CAPACITY, MEMORY_EXPIRY_MS,
};
pub use recent::{Recent, RECENT_CAPACITY};

use recman_events::{StepError, TargetId};

/// The error code of a writer's freeze that certainly did not land because
/// someone else's freeze holds the application (fsfreeze: `EBUSY`): no hold
/// stays, so no thaw of this attempt ends that other freeze.
pub const NOT_LANDED: &str = "already_frozen";

/// What to do with a freeze command on one target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Plan {
    /// Record the hold (`TargetMemory::record_freeze_start`), arm the
    /// watchdog, run the writer's freeze, then record its outcome.
    Run,
    /// A freeze that ran already (or runs now, in another process): answer
    /// with its first outcome (the watchdog deadline, or the error), run nothing.
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
        /// How this attempt's own freeze ended, if it did.
        first: Option<Thawed>,
    },
    /// Nothing holds the target: run the writer's thaw anyway (idempotent).
    Unknown {
        /// How this attempt's freeze ended, if it did (the report says so).
        first: Option<Thawed>,
    },
}

impl ThawPlan {
    /// Whether the writer's thaw runs.
    pub fn runs(&self) -> bool {
        !matches!(self, ThawPlan::Other { .. })
    }

    /// What the thaw's report says in `by_watchdog`: the attempt's freeze
    /// was ended by a worker by itself.
    pub fn by_watchdog(&self) -> bool {
        match self {
            ThawPlan::Own(_) => false,
            ThawPlan::Other { first, .. } | ThawPlan::Unknown { first } => {
                first.is_some_and(|t| t.by == ThawedBy::Watchdog)
            }
        }
    }
}

/// What the storage holds under a snapshot's name, as the provider tells
/// (the 3PAR copy's comment and base, a marker file naming the job, …).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Existing {
    Absent,
    /// A snapshot taken for this job attempt.
    Owned(AttemptKey),
    /// Something recman did not take for a known attempt (another system's,
    /// or one without a marker): never adopted.
    Foreign(String),
}

/// What to do with a snapshot command on one target (or group).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SnapshotPlan {
    /// Take the snapshot.
    Run,
    /// This attempt's snapshot is there already: report it (`existed: true`).
    Report,
    /// Refused: report this error, take nothing.
    Refuse(StepError),
}

/// A deliberately broken rule, off unless a test asks for it: the simulator
/// must report a violation when the workers do this (its self-test, like the
/// engine core's `Mutation`). Several bring back a defect fixed before.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mutation {
    /// A freeze that comes after the thaw of its attempt runs anyway.
    FreezeAfterThaw,
    /// A thaw ends whatever freeze holds the target, not only its attempt's.
    ThawIgnoresAttempt,
    /// The watchdog is armed only after a successful freeze, and a failed
    /// freeze holds nothing (issue 12 item 1).
    WatchdogAfterFreeze,
    /// A hold whose process is gone is not taken over: a crashed worker's
    /// freeze waits for the engine's thaw (issue 22).
    NoAdoption,
    /// A freeze of an attempt that ran already runs again (issue 23 item 2).
    RefreezeSameAttempt,
    /// The freeze window of a thaw by another process than the freezer is
    /// 0 (issue 23 item 3).
    WindowFromOwnMemory,
    /// A snapshot is started after its attempt's thaw or thaw deadline
    /// (issue 12 item 2).
    SnapshotAfterDeadline,
    /// A snapshot that is there already for this attempt is taken again.
    SnapshotNotIdempotent,
    /// A snapshot of another job under the same name is adopted (issue 12 item 4).
    AdoptAnySnapshot,
    /// The freeze state is per process and lost when it ends, not the
    /// host's (issue 23 items 1 and 2; the simulator's workers honour it).
    FreezeStatePerProcess,
    /// A verify worker does not clean up on start what its dead process
    /// left (clones, mounts, throw-away servers).
    NoVerifyCleanup,
    /// A thaw releases the hold before the writer's thaw runs (the
    /// watchdog's order of earlier builds): a process that dies during the
    /// thaw leaves nothing held, and a thaw that did not land is not redone.
    ReleaseBeforeThaw,
    /// A freeze whose outcome was not written (it is written after the
    /// report, issue 18) is not answered from its hold: a redelivery runs
    /// it again.
    HoldDoesNotAnswer,
}

impl Mutation {
    /// Every mutation, for the self-test that runs each one.
    pub const ALL: &'static [Mutation] = &[
        Mutation::FreezeAfterThaw,
        Mutation::ThawIgnoresAttempt,
        Mutation::WatchdogAfterFreeze,
        Mutation::NoAdoption,
        Mutation::RefreezeSameAttempt,
        Mutation::WindowFromOwnMemory,
        Mutation::SnapshotAfterDeadline,
        Mutation::SnapshotNotIdempotent,
        Mutation::AdoptAnySnapshot,
        Mutation::FreezeStatePerProcess,
        Mutation::NoVerifyCleanup,
        Mutation::ReleaseBeforeThaw,
        Mutation::HoldDoesNotAnswer,
    ];

    /// Its name on the command line (`recman simulate --mutation`).
    pub fn name(self) -> String {
        crate::decide::kebab(&format!("{self:?}"))
    }

    /// The mutation of that name.
    pub fn parse(s: &str) -> Option<Mutation> {
        Mutation::ALL.iter().copied().find(|m| m.name() == s)
    }
}

/// Whether recovery step `stage` of `job` may run on a target whose host
/// state is `mem`, at `now_ms`, the command's deadline `deadline_ms`:
/// - the compensations (rollback, start, unmount) always run;
/// - the others are not started once the deadline passed (`deadline_passed`:
///   the engine gives up on them then);
/// - nothing that touches the live data (stop, safety-snapshot, restore,
///   rollback) runs while a freeze is held on the host (`target_frozen`,
///   retryable): the engine holds the target, this is the host's own check
///   (a freeze whose job ended with a failed thaw waits for its watchdog).
pub fn plan_recovery(
    mem: &TargetMemory,
    stage: recman_events::Stage,
    deadline_ms: Option<u64>,
    now_ms: u64,
) -> Result<(), StepError> {
    use recman_events::Stage;
    if !matches!(stage, Stage::Rollback | Stage::Start | Stage::Unmount) {
        if let Some(d) = deadline_ms.filter(|d| now_ms >= *d) {
            return Err(StepError::new(
                "deadline_passed",
                format!("{stage} was due to end by {d} ms: not started"),
                false,
            ));
        }
    }
    if matches!(
        stage,
        Stage::Stop | Stage::SafetySnapshot | Stage::Restore | Stage::Rollback
    ) {
        if let Some(h) = mem.hold() {
            let (job, attempt) = h.key();
            return Err(StepError::new(
                "target_frozen",
                format!("frozen by job {job} attempt {attempt}: no recovery step runs under a freeze"),
                true,
            ));
        }
    }
    Ok(())
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
    let refreeze = mutation == Some(Mutation::RefreezeSameAttempt);
    if let (Some(first), false) = (mem.freeze_outcome(key), refreeze) {
        return Plan::Answer(first.clone());
    }
    let hold_answers = !refreeze && mutation != Some(Mutation::HoldDoesNotAnswer);
    if let Some(h) = mem.hold().filter(|h| h.key() == key && hold_answers) {
        // Frozen (or freezing) by this attempt, its outcome not recorded yet
        // or forgotten.
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
    if let Some(h) = mem.hold().filter(|h| h.key() != key) {
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

/// The watchdog deadline of a freeze that starts at `now_ms`: the engine's
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
    let first = mem.thawed(key);
    match mem.hold() {
        Some(h) if h.key() == key || mutation == Some(Mutation::ThawIgnoresAttempt) => {
            ThawPlan::Own(h.clone())
        }
        Some(h) => ThawPlan::Other {
            holder: h.key(),
            first,
        },
        None => ThawPlan::Unknown { first },
    }
}

/// The freeze window a thaw reports, in µs: the one it ends (from the host
/// state: since the writer's freeze returned, whichever process froze), or
/// the one the attempt's first thaw ended.
pub fn thaw_window_us(plan: &ThawPlan, now_ms: u64, me: &Process, mutation: Option<Mutation>) -> u64 {
    match plan {
        ThawPlan::Own(h) if mutation == Some(Mutation::WindowFromOwnMemory) && &h.process != me => 0,
        ThawPlan::Own(h) => now_ms.saturating_sub(h.frozen_at_ms).saturating_mul(1000),
        ThawPlan::Other { first, .. } | ThawPlan::Unknown { first } => first.map_or(0, |t| t.window_us),
    }
}

/// The hold a live process must take over, if any: one whose process is
/// gone (`alive` says which are not), so its watchdog died with it.
pub fn adoptable(
    mem: &TargetMemory,
    alive: impl Fn(&Process) -> bool,
    mutation: Option<Mutation>,
) -> Option<Hold> {
    if mutation == Some(Mutation::NoAdoption) {
        return None;
    }
    mem.hold().filter(|h| !alive(&h.process)).cloned()
}

/// A snapshot `name` of `target` for attempt `key` (whose command carries
/// the thaw deadline), with what the storage holds under that name and
/// whether this process deleted it (`pruned`).
#[allow(clippy::too_many_arguments)]
pub fn plan_snapshot(
    host: &TargetMemory,
    pruned: bool,
    target: &TargetId,
    name: &str,
    key: AttemptKey,
    existing: &Existing,
    thaw_deadline_ms: Option<u64>,
    now_ms: u64,
    mutation: Option<Mutation>,
) -> SnapshotPlan {
    match existing {
        Existing::Owned(k) if *k == key && mutation != Some(Mutation::SnapshotNotIdempotent) => {
            return SnapshotPlan::Report;
        }
        Existing::Owned(_) | Existing::Foreign(_) if mutation == Some(Mutation::AdoptAnySnapshot) => {
            return SnapshotPlan::Report;
        }
        Existing::Owned(k) if *k != key => {
            return SnapshotPlan::Refuse(StepError::new(
                "name_conflict",
                format!(
                    "a snapshot named {name} of {target} exists and belongs to job {} attempt {}, not to this \
                     one: not adopted, nothing taken",
                    k.0, k.1
                ),
                true,
            ));
        }
        Existing::Foreign(what) => {
            return SnapshotPlan::Refuse(StepError::new(
                "name_conflict",
                format!("{what} already exists under the name {name} of {target} and was not taken for this job: not adopted, nothing taken"),
                true,
            ));
        }
        _ => {}
    }
    if pruned {
        return SnapshotPlan::Refuse(StepError::new(
            "deleted",
            format!("snapshot {name} of {target} was deleted: not taken again"),
            false,
        ));
    }
    if mutation == Some(Mutation::SnapshotAfterDeadline) {
        return SnapshotPlan::Run;
    }
    if host.thawed(key).is_some() {
        return SnapshotPlan::Refuse(StepError::new(
            "already_thawed",
            format!("the writers of {target} were thawed for this attempt already: a snapshot now would not be consistent; nothing taken"),
            true,
        ));
    }
    if let Some(d) = thaw_deadline_ms.filter(|d| now_ms >= *d) {
        return SnapshotPlan::Refuse(StepError::new(
            "deadline_passed",
            format!(
                "the snapshot came {} ms after its thaw deadline: the writers are thawed, nothing taken",
                now_ms - d
            ),
            true,
        ));
    }
    SnapshotPlan::Run
}
