//! Every invariant of the simulator is shown to fire: each deliberate
//! mutation (a broken engine-core rule, `recman_core::Mutation`, or a broken
//! worker-core rule, `recman_core::worker::Mutation`) is run, and the
//! invariant it breaks must be the first violation found, while the same run
//! without the mutation is clean. Several mutations bring back a defect
//! fixed before (issues 12, 22, 23): the simulator is shown to catch each.
//!
//! A mutation may break more than one promise; where another invariant can
//! fire first on some seeds, the row says which (`also`), and any other
//! invariant fails the test.

use recman_core::sim::{self, Faults, SimConfig, INVARIANTS};
use recman_core::{worker, Mutation};

#[derive(Clone, Copy, Debug, PartialEq)]
enum M {
    Core(Mutation),
    Worker(worker::Mutation),
}

/// Seeds tried per mutation before it counts as unnoticed.
const SEEDS: u64 = 16;

fn config(seed: u64, faults: Faults, m: Option<M>) -> SimConfig {
    SimConfig {
        faults,
        mutation: match m {
            Some(M::Core(c)) => Some(c),
            _ => None,
        },
        worker_mutation: match m {
            Some(M::Worker(w)) => Some(w),
            _ => None,
        },
        schedules: matches!(m, Some(M::Core(Mutation::RefireSlots | Mutation::PruneMounted))),
        engines: if matches!(
            m,
            Some(M::Core(
                Mutation::NoFencing | Mutation::TakeoverKeepsEpoch | Mutation::IgnoreFenced
            ))
        ) {
            2
        } else {
            1
        },
        ..SimConfig::full(seed, 2_000, 10)
    }
}

fn check(m: M, faults: Faults, intended: &str, also: &[&str]) {
    for seed in 1..=SEEDS {
        let Err(v) = sim::run(&config(seed, faults, Some(m))) else {
            continue;
        };
        if v.invariant == intended {
            println!(
                "{m:?} faults={faults:?} seed={seed}: {} ({})",
                v.invariant, v.detail
            );
            if let Err(clean) = sim::run(&config(seed, faults, None)) {
                panic!(
                    "the same run without {m:?} is not clean:\n{}",
                    sim::render(&clean)
                );
            }
            return;
        }
        assert!(
            also.contains(&v.invariant),
            "{m:?} (seed {seed}) fired {}, expected {intended}:\n{}",
            v.invariant,
            sim::render(&v)
        );
    }
    panic!("{m:?} went unnoticed by {intended} on {SEEDS} seeds (faults {faults:?})");
}

macro_rules! mutations {
    ($($test:ident: $m:expr, $faults:expr => $inv:literal $(, also [$($a:literal),*])?;)*) => {
        /// (mutation, faults, intended invariant, others that may fire first)
        const TABLE: &[(M, Faults, &str, &[&str])] = &[$(($m, $faults, $inv, &[$($($a),*)?])),*];
        $(
            #[test]
            fn $test() {
                check($m, $faults, $inv, &[$($($a),*)?]);
            }
        )*
    };
}

use Faults::{All, Crash, Net, None as Calm};
use M::{Core as C, Worker as W};

mutations! {
    skip_compensating_thaw: C(Mutation::SkipCompensatingThaw), All => "every_freeze_thawed";
    no_forced_thaw: C(Mutation::NoForcedThaw), Calm => "timer_progress";
    no_thaw_after_failed_freeze: C(Mutation::NoThawAfterFailedFreeze), Calm => "engine_thaws_before_watchdog";
    ignore_queue: C(Mutation::IgnoreQueue), Calm => "one_job_per_target";
    legacy_snapshot_names: C(Mutation::LegacySnapshotNames), Calm => "snapshot_name";
    snapshot_before_all_frozen: C(Mutation::SnapshotBeforeAllFrozen), All => "consistent_snapshot";
    no_discard: C(Mutation::NoDiscard), Calm => "no_unrecorded_snapshot";
    prune_unrecorded: C(Mutation::PruneUnrecorded), Calm => "catalog_matches_storage";
    forget_requests: C(Mutation::ForgetRequests), Calm => "request_idempotent";
    reject_groups: C(Mutation::RejectGroups), Calm => "request_accepted";
    never_promote: C(Mutation::NeverPromote), Calm => "no_request_lost";
    catalog_keeps_deleted: C(Mutation::CatalogKeepsDeleted), All => "replay_exact";
    resend_before_timers: C(Mutation::ResendBeforeTimers), Crash => "no_snapshot_after_thaw";
    send_before_append: C(Mutation::SendBeforeAppend), Calm => "durable_before_send";
    refire_slots: C(Mutation::RefireSlots), Crash => "no_slot_fires_twice";
    freeze_during_verify: C(Mutation::FreezeDuringVerify), Calm => "verify_outside_freeze";
    prune_newest_verified: C(Mutation::PruneNewestVerified), Calm => "newest_verified_kept";
    reconcile_keeps_vanished: C(Mutation::ReconcileKeepsVanished), Crash => "reconcile_catalog_agrees";
    // Jobs run while the provider lists, and the answer is compared with
    // the catalog of its arrival: a point completed meanwhile "vanished".
    reconcile_unguarded: C(Mutation::ReconcileUnguarded), Calm => "reconcile_vanished_held";
    // Recovery (issue 16): the restore runs with no safety snapshot in the
    // log; a mounted point is pruned; a restore runs under a job's freeze;
    // a failed restore is not rolled back (the application starts on
    // half-restored data).
    restore_without_safety: C(Mutation::RestoreWithoutSafety), Calm => "safety_before_restore";
    prune_mounted: C(Mutation::PruneMounted), Calm => "mounted_never_pruned";
    recover_while_busy: C(Mutation::RecoverWhileBusy), Calm => "recovery_outside_freeze";
    no_rollback: C(Mutation::NoRollback), Calm => "recovery_outcome_true";
    // The start after a rollback asks for a recovery of the point's files.
    restored_after_rollback: C(Mutation::RestoredAfterRollback), Calm => "recovery_outcome_true";
    // Four-eyes (issue 20): a guarded in-place restore starts unapproved.
    skip_approval: C(Mutation::SkipApproval), Calm => "approved_before_restore";
    freeze_after_thaw: W(worker::Mutation::FreezeAfterThaw), Net => "no_freeze_after_thaw";
    thaw_ignores_attempt: W(worker::Mutation::ThawIgnoresAttempt), Calm => "thaw_own_attempt";
    // Without a hold, a failed freeze that landed is also thawed by the
    // next attempt's thaw (a thaw of another attempt's freeze).
    watchdog_after_freeze: W(worker::Mutation::WatchdogAfterFreeze), Crash => "thawed_within_limit",
        also ["thaw_own_attempt"];
    no_adoption: W(worker::Mutation::NoAdoption), Crash => "thawed_within_limit";
    refreeze_same_attempt: W(worker::Mutation::RefreezeSameAttempt), All => "one_freeze_per_attempt";
    window_from_own_memory: W(worker::Mutation::WindowFromOwnMemory), Calm => "freeze_window";
    // A snapshot started after its attempt's deadline can also be a second
    // cut of that attempt (seen on seed 1 once the verify stage drew from
    // the run's PRNG too).
    snapshot_after_deadline: W(worker::Mutation::SnapshotAfterDeadline), All => "no_snapshot_after_thaw",
        also ["one_snapshot_per_attempt"];
    snapshot_not_idempotent: W(worker::Mutation::SnapshotNotIdempotent), All => "one_snapshot_per_attempt";
    adopt_any_snapshot: W(worker::Mutation::AdoptAnySnapshot), All => "consistent_snapshot";
    // Issue 23 items 1-3 at once: a second freeze of one attempt, a thaw of
    // another attempt's freeze, a window of 0; and a snapshot after its
    // attempt's thaw (the refusal reads the shared freeze state).
    freeze_state_per_process: W(worker::Mutation::FreezeStatePerProcess), Crash => "one_freeze_per_attempt",
        also ["freeze_window", "thaw_own_attempt", "one_snapshot_per_attempt"];
    no_verify_cleanup: W(worker::Mutation::NoVerifyCleanup), Crash => "verify_cleanup";
    // A thaw that did not land, its hold released: redone only by the
    // engine's redelivered command, which reports the first (too short)
    // window, or, for a watchdog's thaw, by nobody in time.
    release_before_thaw: W(worker::Mutation::ReleaseBeforeThaw), Crash => "freeze_window",
        also ["thawed_within_limit", "every_freeze_thawed"];
    // A freeze's outcome is written after its report (issue 18); until
    // then, or for good when that write is lost, its hold answers a
    // redelivery.
    hold_does_not_answer: W(worker::Mutation::HoldDoesNotAnswer), All => "one_freeze_per_attempt";
    // Two engines (issue 19): a deposed leader that resumes appends on its
    // stale state and the log takes it; a standby takes over under the
    // epoch the old leader acted for; a fenced engine sends its batch's
    // commands all the same.
    no_fencing: C(Mutation::NoFencing), Crash => "appends_by_leader";
    takeover_keeps_epoch: C(Mutation::TakeoverKeepsEpoch), Crash => "one_leader_per_epoch";
    // (A stale command can also be a snapshot sent past its attempt's thaw:
    // seen on seed 2 once operators' prunes drew from the recoveries' PRNG.)
    ignore_fenced: C(Mutation::IgnoreFenced), Crash => "durable_before_send",
        also ["no_snapshot_after_thaw"];
    // Checkpoints (issue 19): a restart from a checkpoint that lost the
    // request-id index.
    checkpoint_loses_field: C(Mutation::CheckpointLosesField), Crash => "checkpoint_exact";
}

#[test]
fn every_mutation_is_in_the_table_and_every_invariant_has_one() {
    for m in Mutation::ALL {
        assert!(TABLE.iter().any(|r| r.0 == C(*m)), "{m:?} has no row");
    }
    for m in worker::Mutation::ALL {
        assert!(TABLE.iter().any(|r| r.0 == W(*m)), "{m:?} has no row");
    }
    for (name, _) in INVARIANTS {
        assert!(
            TABLE.iter().any(|r| r.2 == *name),
            "no mutation shows {name} fire"
        );
    }
    for r in TABLE {
        assert!(
            INVARIANTS.iter().any(|(n, _)| *n == r.2),
            "unknown invariant {}",
            r.2
        );
    }
}
