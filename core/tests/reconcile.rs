//! Reconcile driven through the core: a restore point the provider no longer
//! lists leaves the catalog with an event (and the RPO sees it gone); a name
//! that looks like recman's and that no event records is reported, never
//! deleted; a reconcile waits for an idle target and holds it while the
//! provider lists; points being deleted or verified are not declared
//! vanished; a failed or silent list changes nothing; the periodic
//! reconcile is driven by the due-time index; the array's own expiry of a
//! copy is recorded with it; replay is exact.

mod support;

use std::collections::BTreeMap;

use support::{a, kinds, ok, rep, Run};

use recman_core::verify::VerifyPolicy;
use recman_core::{Core, CoreConfig, Destination, Input, JobState, Reply, TargetPolicy};
use recman_events::{
    snapshot_name, ArrayExpiry, Event, EventBody, JobId, Outcome, Stage, StepDetail, StepError, TargetId,
};

const T: u64 = 1_750_000_000_000;
const DAY: u64 = 86_400_000;

fn config(p: impl FnOnce(&mut TargetPolicy)) -> CoreConfig {
    let mut tp = TargetPolicy::new("host.a", "array.x");
    p(&mut tp);
    CoreConfig {
        targets: BTreeMap::from([(a(), tp)]),
        schedules: Vec::new(),
        seed: 1,
        mutation: None,
        bounds: Default::default(),
    }
}

fn listed(names: &[String]) -> Outcome {
    ok(StepDetail::Listed {
        names: names.to_vec(),
    })
}

impl Run {
    /// A completed job, `n`, at `now`: its snapshot's name.
    fn point(&mut self, n: u128, now: u64) -> (JobId, String) {
        let j = self.request(n, now);
        self.walk(j, now);
        assert_eq!(self.core.state().jobs[&j].state, JobState::Completed);
        (j, snapshot_name(j, 1))
    }

    fn catalog(&self) -> Vec<String> {
        self.core
            .state()
            .catalog
            .get(&a())
            .map(|c| c.iter().map(|e| e.name.clone()).collect())
            .unwrap_or_default()
    }

    fn reconcile(&mut self, now: u64) -> recman_core::Step {
        self.handle(
            Input::Reconcile {
                target: a(),
                origin: "cli".into(),
            },
            now,
        )
    }

    fn run_no(&self) -> u32 {
        self.core.state().reconcile.running[&a()].run
    }
}

#[test]
fn a_point_the_provider_lost_leaves_the_catalog_and_an_unknown_one_is_only_reported() {
    let mut r = Run::new(config(|p| p.rpo_ms = Some(DAY)));
    // The engine started two days ago with the RPO (recorded at start).
    let s = r.core.start(T - 2 * DAY);
    r.log.extend(s.events);
    let (j1, n1) = r.point(1, T);
    let (_, n2) = r.point(2, T + 100);
    let s = r.reconcile(T + 1_000);
    assert_eq!(kinds(&s.events), ["reconcile_requested", "reconcile_started"]);
    let cmd = &s.commands[0];
    assert_eq!(cmd.to, Destination::Pool("array.x".into()));
    assert_eq!(cmd.command.stage, Stage::Reconcile);
    assert_eq!(cmd.command.job, JobId::NONE);
    assert_eq!(cmd.command.attempt, 1);
    // The array expired the older copy; someone made one with our shape, and
    // another system keeps one of its own.
    let stranger = snapshot_name(JobId::from_parts(T - DAY, 99), 1);
    let names = vec![n2.clone(), stranger.clone(), "nightly-by-hand".to_string()];
    let s = r.handle(rep(JobId::NONE, 1, Stage::Reconcile, listed(&names)), T + 1_200);
    assert_eq!(
        kinds(&s.events),
        ["snapshot_vanished", "snapshot_unknown", "reconciled"]
    );
    assert_eq!(
        s.events[0].job, j1,
        "the vanished point's event goes to the job that took it"
    );
    assert_eq!(
        s.events[1].body,
        EventBody::SnapshotUnknown {
            target: a(),
            names: vec![stranger]
        }
    );
    assert!(s.commands.is_empty(), "nothing is deleted: {:?}", s.commands);
    assert_eq!(r.catalog(), std::slice::from_ref(&n2));
    let last = &r.core.state().reconcile.last[&a()];
    assert_eq!(last.vanished, [n1]);
    assert_eq!(last.outcome.as_deref(), Some("ok"));
    // The newest point goes too: the RPO counts from the engine's start
    // again, two days ago: it breaches at the next timer.
    r.reconcile(T + 2_000);
    let s = r.handle(rep(JobId::NONE, 2, Stage::Reconcile, listed(&[])), T + 2_100);
    assert_eq!(kinds(&s.events), ["snapshot_vanished", "reconciled"]);
    assert!(r.catalog().is_empty());
    let due = r.core.next_deadline().expect("the RPO timer");
    assert!(due <= T + 2_100, "the RPO is due at once: {due}");
    let s = r.handle(Input::TimerFired, T + 2_200);
    assert!(
        kinds(&s.events).contains(&"rpo_breached"),
        "{:?}",
        kinds(&s.events)
    );
    r.replay();
}

#[test]
fn a_reconcile_waits_for_an_idle_target_and_holds_it_while_the_provider_lists() {
    let mut r = Run::new(config(|_| {}));
    let (_, n1) = r.point(1, T);
    let j2 = r.request(2, T + 100);
    // The job runs: the reconcile waits.
    let s = r.reconcile(T + 101);
    assert_eq!(kinds(&s.events), ["reconcile_requested"]);
    assert!(s.commands.is_empty());
    // Asked again while waiting: the same request.
    let s = r.reconcile(T + 102);
    assert!(s.events.is_empty());
    assert_eq!(
        s.reply,
        Reply::Accepted {
            job: JobId::NONE,
            existing: true
        }
    );
    // The job ends: the reconcile starts.
    let s = r.walk(j2, T + 100);
    assert!(
        kinds(&s.events).ends_with(&["completed", "reconcile_started"]),
        "{:?}",
        kinds(&s.events)
    );
    // A job asked for while the provider lists waits for the answer.
    let j3 = r.request(3, T + 200);
    assert_eq!(r.core.state().jobs[&j3].state, JobState::Queued);
    let names = vec![n1.clone(), snapshot_name(j2, 1)];
    let s = r.handle(rep(JobId::NONE, 1, Stage::Reconcile, listed(&names)), T + 300);
    assert_eq!(
        kinds(&s.events),
        ["reconciled", "attempt_started", "stage_started"]
    );
    assert_eq!(r.core.state().jobs[&j3].state, JobState::Freezing);
    assert_eq!(r.catalog().len(), 2);
    r.replay();
}

#[test]
fn points_being_deleted_or_verified_are_not_declared_vanished() {
    let mut r = Run::new(config(|p| {
        p.keep_last = Some(1);
        p.verify = Some(VerifyPolicy::new("checksum"));
    }));
    let (_, n1) = r.point(1, T);
    // The verification of n1 runs; the second point asks for n1's delete.
    assert_eq!(r.core.state().verify.running[&a()].name, n1);
    let s = r.reconcile(T + 10);
    assert_eq!(kinds(&s.events), ["reconcile_requested", "reconcile_started"]);
    let s = r.handle(rep(JobId::NONE, 1, Stage::Reconcile, listed(&[])), T + 20);
    assert_eq!(kinds(&s.events), ["reconciled"], "n1 is being verified");
    assert_eq!(r.catalog(), std::slice::from_ref(&n1));
    // n1's verification fails: it is not the newest verified point, and
    // retention may delete it.
    let e = StepError::new("checksum_mismatch", "a file differs", false);
    let owner = r.core.state().verify.running[&a()].owner;
    r.handle(rep(owner, 1, Stage::Verify, Outcome::Err { error: e }), T + 30);
    let (j2, n2) = r.point(2, T + 100);
    assert!(
        r.core.state().prunes.contains_key(&(a(), n1.clone())),
        "n1's delete is pending"
    );
    // n2 is being verified now, n1 being deleted: neither vanishes.
    r.reconcile(T + 200);
    let run = r.run_no();
    let s = r.handle(rep(JobId::NONE, run, Stage::Reconcile, listed(&[])), T + 300);
    assert_eq!(kinds(&s.events), ["reconciled"]);
    assert_eq!(r.catalog(), [n1, n2]);
    let _ = j2;
    r.replay();
}

#[test]
fn a_failed_or_silent_list_changes_nothing_and_a_stale_answer_is_ignored() {
    let mut r = Run::new(config(|_| {}));
    let (_, n1) = r.point(1, T);
    r.reconcile(T + 10);
    let e = StepError::new("3par_unreachable", "the array did not answer", true);
    let s = r.handle(
        rep(JobId::NONE, 1, Stage::Reconcile, Outcome::Err { error: e }),
        T + 20,
    );
    assert_eq!(kinds(&s.events), ["reconcile_failed"]);
    assert_eq!(r.catalog(), std::slice::from_ref(&n1));
    // Run 2 is silent: it times out.
    let s = r.reconcile(T + 30);
    assert_eq!(kinds(&s.events), ["reconcile_requested", "reconcile_started"]);
    assert_eq!(r.run_no(), 2);
    // Run 1's answer again, late: ignored.
    let s = r.handle(rep(JobId::NONE, 1, Stage::Reconcile, listed(&[])), T + 40);
    assert!(s.events.is_empty(), "{:?}", kinds(&s.events));
    let due = r.core.next_deadline().expect("the reconcile's deadline");
    let s = r.handle(Input::TimerFired, due);
    assert_eq!(kinds(&s.events), ["reconcile_failed"]);
    let EventBody::ReconcileFailed { error, .. } = &s.events[0].body else {
        unreachable!()
    };
    assert_eq!(error.code, "timeout");
    assert_eq!(r.catalog(), [n1]);
    assert!(r.core.state().reconcile.running.is_empty());
    r.replay();
}

#[test]
fn an_unknown_target_is_refused() {
    let mut r = Run::new(config(|_| {}));
    let s = r.handle(
        Input::Reconcile {
            target: TargetId::from("nope"),
            origin: "cli".into(),
        },
        T,
    );
    assert!(
        matches!(
            s.reply,
            Reply::Rejected {
                code: "unknown_target",
                ..
            }
        ),
        "{:?}",
        s.reply
    );
    assert!(s.events.is_empty());
}

#[test]
fn the_periodic_reconcile_runs_every_interval_from_the_due_time_index() {
    let mut r = Run::new(config(|p| p.reconcile_every_ms = Some(DAY)));
    assert_eq!(
        r.core.next_deadline(),
        None,
        "nothing to reconcile before the first point"
    );
    let (_, n1) = r.point(1, T);
    let at = r.core.state().catalog[&a()][0].at_ms;
    assert_eq!(r.core.next_deadline(), Some(at + DAY));
    r.core.due_index_agrees().expect("index");
    let s = r.handle(Input::TimerFired, at + DAY);
    assert_eq!(kinds(&s.events), ["reconcile_requested", "reconcile_started"]);
    assert_eq!(s.commands.len(), 1);
    r.core.due_index_agrees().expect("index");
    let s = r.handle(
        rep(JobId::NONE, 1, Stage::Reconcile, listed(&[n1])),
        at + DAY + 50,
    );
    assert_eq!(kinds(&s.events), ["reconciled"]);
    assert_eq!(
        r.core.next_deadline(),
        Some(at + 2 * DAY),
        "a day after the last one started"
    );
    r.core.due_index_agrees().expect("index");
    // A restart replays the log: the same due time.
    let mut again = Core::new(r.core.config().clone());
    for e in &r.log {
        again.apply(e);
    }
    assert_eq!(again.next_deadline(), Some(at + 2 * DAY));
    again.due_index_agrees().expect("index after replay");
    r.replay();
}

#[test]
fn a_reconcile_in_flight_is_sent_again_after_a_restart() {
    let mut r = Run::new(config(|_| {}));
    r.point(1, T);
    r.reconcile(T + 10);
    let mut again = Core::new(r.core.config().clone());
    for e in &r.log {
        again.apply(e);
    }
    let s = again.start(T + 20);
    let c: Vec<_> = s
        .commands
        .iter()
        .filter(|o| o.command.stage == Stage::Reconcile)
        .collect();
    assert_eq!(c.len(), 1, "{:?}", s.commands);
    assert_eq!(c[0].command.attempt, 1);
}

/// A 3PAR copy's `expiration_hours` / `retention_hours` come with the
/// snapshot report; the stored step leaves them out (its archived layout is
/// fixed), so `snapshot_expiry` records them in the job that took the copy,
/// before its `completed`. A provider without such a clock records none.
#[test]
fn the_arrays_expiry_of_a_copy_is_recorded_with_the_snapshot() {
    let mut r = Run::new(config(|_| {}));
    let expiry = ArrayExpiry {
        expiration_hours: Some(336),
        retention_hours: Some(24),
    };
    r.array_expiry = Some(expiry);
    let (j, name) = r.point(1, T);
    let of_job: Vec<Event> = r.log.iter().filter(|e| e.job == j).cloned().collect();
    let k = kinds(&of_job);
    let at = |kind: &str| {
        k.iter()
            .position(|x| *x == kind)
            .unwrap_or_else(|| panic!("no {kind}: {k:?}"))
    };
    assert!(at("snapshot_expiry") < at("completed"), "{k:?}");
    assert!(
        of_job.iter().any(|e| e.body
            == EventBody::SnapshotExpiry {
                target: a(),
                name: name.clone(),
                expiry
            }),
        "{of_job:#?}"
    );
    r.array_expiry = None;
    let (j2, _) = r.point(2, T + DAY);
    assert!(
        !r.log
            .iter()
            .any(|e| e.job == j2 && matches!(e.body, EventBody::SnapshotExpiry { .. })),
        "{:#?}",
        r.log
    );
    r.replay();
}

#[test]
fn only_names_of_recmans_shape_look_like_ours() {
    use recman_core::reconcile::looks_ours;
    let id20 = "0123456789abcdefghij";
    let id16 = "0123456789abcdef";
    for yes in [format!("rm-{id20}-a1"), format!("rm-{id16}-a12")] {
        assert!(looks_ours(&yes), "{yes}");
    }
    for no in [
        format!("rm-{id20}-a"),
        format!("rm-{id20}-ax"),
        format!("rm-{id20}x-a1"),
        "rm-0123456789abcdefghi-a1".to_string(),
        "rm-0123456789ABCDEFGHIJ-a1".to_string(),
        format!("xx-{id20}-a1"),
        format!("rm-{id20}"),
        "nightly-by-hand".to_string(),
    ] {
        assert!(!looks_ours(&no), "{no}");
    }
}
