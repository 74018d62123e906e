//! Schedules and RPO driven through the core with a virtual clock: cron and
//! interval slots across DST changes (Europe/Berlin's gap and repeat),
//! overlap and catch-up rules, no double firing across an engine crash in
//! the middle of a firing, pause and resume, RPO breach and recovery.

use std::collections::BTreeMap;

use recman_core::schedule::{human_ms, rfc3339, Calendar, CalendarError, CatchUp, Overlap, Schedule};
use recman_core::{Core, CoreConfig, Input, JobState, Reply, TargetPolicy};
use recman_events::{
    Event, EventBody, JobId, Outcome, Report, SnapshotInfo, SnapshotKind, Stage, StepDetail, TargetId,
    WorkerId, SCHEMA_VERSION,
};

/// Unix ms of a UTC time written `2026-03-29T00:00:00Z`.
fn utc(s: &str) -> u64 {
    let t: jiff::Timestamp = s.parse().expect("timestamp");
    t.as_millisecond() as u64
}

fn sched(id: &str, targets: &[&str], when: Calendar) -> Schedule {
    Schedule {
        id: id.into(),
        targets: targets.iter().map(|t| TargetId::from(*t)).collect(),
        when,
        kind: SnapshotKind::Full,
        overlap: Overlap::Skip,
        catch_up: CatchUp::Once,
        jitter_ms: 0,
    }
}

fn config(schedules: Vec<Schedule>) -> CoreConfig {
    let mut targets = BTreeMap::new();
    for t in ["a", "b"] {
        targets.insert(
            TargetId::from(t),
            TargetPolicy::new(format!("host.{t}").as_str(), "array.x"),
        );
    }
    CoreConfig {
        targets,
        schedules,
        seed: 3,
        mutation: None,
        bounds: Default::default(),
    }
}

/// An engine: a core and its durable log.
struct Engine {
    core: Core,
    log: Vec<Event>,
    now: u64,
}

impl Engine {
    fn start(cfg: CoreConfig, now: u64) -> Engine {
        let mut e = Engine {
            core: Core::new(cfg),
            log: Vec::new(),
            now,
        };
        let step = e.core.start(now);
        e.log.extend(step.events);
        e
    }

    /// A restart on the same log (and maybe another config).
    fn restart(&self, cfg: CoreConfig, now: u64) -> Engine {
        let mut core = Core::new(cfg);
        for ev in &self.log {
            core.apply(ev);
        }
        let mut e = Engine {
            core,
            log: self.log.clone(),
            now,
        };
        let step = e.core.start(now);
        e.log.extend(step.events);
        e
    }

    fn input(&mut self, i: Input) -> Reply {
        let step = self.core.handle(i, self.now);
        self.log.extend(step.events);
        step.reply
    }

    /// Runs the timers up to `until`, jobs left as they are.
    fn run_until(&mut self, until: u64) {
        while let Some(d) = self.core.next_deadline().filter(|d| *d <= until) {
            self.now = self.now.max(d);
            let step = self.core.handle(Input::TimerFired, self.now);
            self.log.extend(step.events);
        }
        self.now = until;
    }

    /// The slots fired, as UTC text.
    fn fired(&self) -> Vec<String> {
        self.log
            .iter()
            .filter_map(|e| match &e.body {
                EventBody::ScheduleFired { slot_ms, .. } => Some(rfc3339(*slot_ms)),
                _ => None,
            })
            .collect()
    }

    fn kinds(&self, kind: &str) -> Vec<&Event> {
        self.log.iter().filter(|e| e.body.kind() == kind).collect()
    }

    /// Every `schedule_skipped`: (schedule, slot, missed).
    fn skips(&self) -> Vec<(String, u64, u32)> {
        self.kinds("schedule_skipped")
            .iter()
            .filter_map(|ev| match &ev.body {
                EventBody::ScheduleSkipped {
                    schedule,
                    slot_ms,
                    missed,
                    ..
                } => Some((schedule.clone(), *slot_ms, *missed)),
                _ => None,
            })
            .collect()
    }

    /// Walks a job's current attempt to Completed (or a failed freeze).
    fn finish(&mut self, job: JobId, ok: bool) {
        let targets = self.core.state().jobs[&job].targets.clone();
        let t: Vec<&str> = targets.iter().map(|t| t.as_str()).collect();
        let attempt = self.core.state().jobs[&job].attempt;
        if !ok {
            let error = recman_events::StepError::new("exec_failed", "hook failed", false);
            self.input(rep(job, attempt, Stage::Freeze, &t, Outcome::Err { error }));
            self.input(rep(job, attempt, Stage::Thaw, &t, thawed()));
            return;
        }
        self.input(rep(
            job,
            attempt,
            Stage::Freeze,
            &t,
            ok_(StepDetail::Frozen { deadline_ms: 0 }),
        ));
        let name = recman_events::snapshot_name(job, attempt);
        let info = SnapshotInfo {
            name,
            provider: "copy".into(),
            location: "/x".into(),
            size_bytes: None,
            existed: false,
            array_expiry: None,
        };
        self.input(rep(
            job,
            attempt,
            Stage::Snapshot,
            &t[..1],
            ok_(StepDetail::Snapshot(info)),
        ));
        self.input(rep(job, attempt, Stage::Thaw, &t, thawed()));
        self.input(rep(job, attempt, Stage::FlushLogs, &t, ok_(StepDetail::Flushed)));
        assert_eq!(self.core.state().jobs[&job].state, JobState::Completed);
    }

    fn last_fired_job(&self) -> JobId {
        self.log
            .iter()
            .rev()
            .find(|e| matches!(e.body, EventBody::ScheduleFired { .. }))
            .map(|e| e.job)
            .expect("a firing")
    }
}

fn ok_(detail: StepDetail) -> Outcome {
    Outcome::Ok { detail }
}

fn thawed() -> Outcome {
    ok_(StepDetail::Thawed {
        freeze_window_us: 10,
        by_watchdog: false,
    })
}

fn rep(job: JobId, attempt: u32, stage: Stage, targets: &[&str], outcome: Outcome) -> Input {
    Input::Report(Report {
        schema_version: SCHEMA_VERSION,
        message_id: "m".into(),
        job,
        attempt,
        stage,
        targets: targets.iter().map(|t| TargetId::from(*t)).collect(),
        worker: WorkerId::from("w1"),
        duration_us: 5,
        outcome,
    })
}

#[test]
fn a_nightly_cron_crosses_the_spring_gap_and_the_autumn_repeat_in_berlin() {
    // 02:30 does not exist on 2026-03-29 (02:00 → 03:00): it fires at 03:00
    // CEST (01:00 UTC), once.
    let cal = Calendar::cron("30 2 * * *", "Europe/Berlin").expect("cron");
    let s = sched("nightly", &["a"], cal.clone());
    let mut e = Engine::start(config(vec![s.clone()]), utc("2026-03-27T12:00:00Z"));
    for _ in 0..4 {
        e.run_until(e.now + 86_400_000);
        let j = e.last_fired_job();
        if !e.core.state().jobs[&j].state.is_terminal() {
            e.finish(j, true);
        }
    }
    assert_eq!(
        e.fired(),
        [
            "2026-03-28T01:30:00Z", // CET, +01:00
            "2026-03-29T01:00:00Z", // the gap: 03:00 CEST
            "2026-03-30T00:30:00Z", // CEST, +02:00
            "2026-03-31T00:30:00Z",
        ]
    );
    // 02:30 happens twice on 2026-10-25 (03:00 CEST → 02:00 CET): once only.
    let mut e = Engine::start(config(vec![s]), utc("2026-10-23T12:00:00Z"));
    for _ in 0..3 {
        e.run_until(e.now + 86_400_000);
        let j = e.last_fired_job();
        if !e.core.state().jobs[&j].state.is_terminal() {
            e.finish(j, true);
        }
    }
    assert_eq!(
        e.fired(),
        [
            "2026-10-24T00:30:00Z",
            "2026-10-25T00:30:00Z",
            "2026-10-26T01:30:00Z"
        ]
    );
    assert_eq!(e.kinds("schedule_skipped").len(), 0);
}

#[test]
fn an_hourly_cron_and_an_interval_follow_real_time_through_the_repeated_hour() {
    // `0 * * * *` in Berlin fires each real hour, the repeated 02:00 too;
    // `every = "1h"` is absolute time: the same instants.
    let cron = sched(
        "hourly",
        &["a"],
        Calendar::cron("0 * * * *", "Europe/Berlin").expect("cron"),
    );
    let every = sched("every", &["b"], Calendar::every(3_600_000).expect("every"));
    let mut e = Engine::start(config(vec![cron, every]), utc("2026-10-24T23:30:00Z"));
    let mut slots: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for _ in 0..4 {
        e.run_until(e.now + 3_600_000);
        for ev in e.log.clone() {
            if let EventBody::ScheduleFired { schedule, slot_ms } = &ev.body {
                let list = slots.entry(schedule.clone()).or_default();
                if !list.contains(&rfc3339(*slot_ms)) {
                    // Left unanswered, the job times out and fails within the hour.
                    list.push(rfc3339(*slot_ms));
                }
            }
        }
    }
    let want = [
        "2026-10-25T00:00:00Z", // 02:00 CEST
        "2026-10-25T01:00:00Z", // 02:00 CET: the repeated hour
        "2026-10-25T02:00:00Z",
        "2026-10-25T03:00:00Z",
    ];
    assert_eq!(slots["hourly"], want);
    assert_eq!(slots["every"], want);
}

#[test]
fn bad_cron_and_time_zones_are_refused_with_the_reason() {
    assert!(matches!(Calendar::cron("0 2 * *", "UTC"), Err(CalendarError::Cron(m)) if m.contains("5")));
    assert!(matches!(
        Calendar::cron("0 25 * * *", "UTC"),
        Err(CalendarError::Cron(_))
    ));
    assert!(matches!(
        Calendar::cron("0 0 2 * * *", "UTC"),
        Err(CalendarError::Cron(_))
    ));
    assert!(matches!(
        Calendar::cron("0 2 * * *", "Europe/Berlim"),
        Err(CalendarError::Timezone(m)) if m.contains("Europe/Berlim")
    ));
    assert!(Calendar::cron("@daily", "UTC").is_ok());
    // The field count is checked first, with a message that says so.
    for (expr, n) in [("*", 1), ("@daily extra", 2)] {
        assert!(
            matches!(Calendar::cron(expr, "UTC"), Err(CalendarError::Cron(m)) if m.contains(&format!("has {n} fields"))),
            "{expr}"
        );
    }
    assert!(Calendar::every(500).is_err());
    // Calendars are equal when they say the same.
    assert_eq!(Calendar::every(60_000).unwrap(), Calendar::every(60_000).unwrap());
    assert_ne!(
        Calendar::every(60_000).unwrap(),
        Calendar::every(120_000).unwrap()
    );
    assert_ne!(
        Calendar::cron("0 2 * * *", "UTC").unwrap(),
        Calendar::cron("0 2 * * *", "Europe/Berlin").unwrap()
    );
}

/// A jitter is a fixed delay per schedule in `[0, jitter]`, not zero, the
/// same at every look, and different schedules spread.
#[test]
fn jitter_is_a_fixed_spread_within_its_bound() {
    let mut delays = std::collections::BTreeSet::new();
    for id in ["nightly", "db", "mail", "files"] {
        let mut s = sched(id, &["a"], Calendar::every(3_600_000).expect("every"));
        s.jitter_ms = 600_000;
        let j = s.jitter_ms();
        assert!(j <= 600_000, "{id}: {j}");
        assert_eq!(j, s.jitter_ms(), "{id}: the same at every look");
        delays.insert(j);
    }
    assert!(delays.len() > 1 && delays.iter().any(|j| *j > 0), "{delays:?}");
}

/// Catch-up after downtime with a cron schedule counts its missed slots,
/// and `catch_up = skip` with the newest slot on time fires that slot.
#[test]
fn catch_up_counts_cron_slots_and_skip_fires_a_newest_slot_on_time() {
    let t0 = utc("2026-01-01T00:00:00Z");
    let once = sched("once", &["a"], Calendar::cron("* * * * *", "UTC").expect("cron"));
    let mut skip = sched("skip", &["b"], Calendar::every(60_000).expect("every"));
    skip.catch_up = CatchUp::Skip;
    let cfg = config(vec![once, skip]);
    let e = Engine::start(cfg.clone(), t0);
    // Back 1 s after the slot of minute 10: that slot is on time.
    let e = e.restart(cfg, t0 + 601_000);
    let skipped = e.skips();
    assert_eq!(
        skipped,
        [
            ("once".to_string(), t0 + 540_000, 9),
            ("skip".to_string(), t0 + 540_000, 9)
        ]
    );
    let mut fired: Vec<(String, u64)> = e
        .kinds("schedule_fired")
        .iter()
        .filter_map(|ev| match &ev.body {
            EventBody::ScheduleFired { schedule, slot_ms } => Some((schedule.clone(), *slot_ms)),
            _ => None,
        })
        .collect();
    fired.sort();
    assert_eq!(
        fired,
        [
            ("once".to_string(), t0 + 600_000),
            ("skip".to_string(), t0 + 600_000)
        ]
    );
    // On time from here: the next slot fires, nothing more is skipped.
    let mut e = e;
    let jobs: Vec<JobId> = e.kinds("schedule_fired").iter().map(|ev| ev.job).collect();
    for j in jobs {
        e.finish(j, true);
    }
    e.run_until(t0 + 660_000);
    assert_eq!(e.kinds("schedule_fired").len(), 4);
    assert_eq!(e.kinds("schedule_skipped").len(), 2);
}

#[test]
fn overlap_skip_records_the_skip_and_queue_one_fires_when_the_job_ends() {
    let t0 = utc("2026-01-01T00:00:00Z");
    let skip = sched("skip", &["a"], Calendar::every(60_000).expect("every"));
    let mut queue = sched("queue", &["b"], Calendar::every(60_000).expect("every"));
    queue.overlap = Overlap::QueueOne;
    let mut cfg = config(vec![skip, queue]);
    for p in cfg.targets.values_mut() {
        // Jobs that stay in their freeze for the whole test.
        p.freeze_limit_ms = 3_600_000;
        p.writer_timeout_ms = 3_600_000;
    }
    let mut e = Engine::start(cfg, t0);
    e.run_until(t0 + 60_000); // first firing of both; their jobs keep running
    assert_eq!(e.kinds("schedule_fired").len(), 2);
    e.run_until(t0 + 180_000); // two more slots each
    let skipped = e.kinds("schedule_skipped");
    assert_eq!(
        skipped.len(),
        3,
        "skip: 2 overlaps; queue_one: the second slot beyond the queued one"
    );
    assert!(skipped.iter().all(|ev| matches!(&ev.body,
        EventBody::ScheduleSkipped { reason, .. } if reason.starts_with("overlap"))));
    let queued = e.kinds("schedule_queued");
    assert_eq!(queued.len(), 1);
    let running = queued[0].job;
    // The running job ends: the queued slot fires at once.
    e.finish(running, true);
    e.run_until(e.now);
    let fired: Vec<(String, u64)> = e
        .log
        .iter()
        .filter_map(|ev| match &ev.body {
            EventBody::ScheduleFired { schedule, slot_ms } => Some((schedule.clone(), *slot_ms)),
            _ => None,
        })
        .collect();
    assert_eq!(
        fired,
        [
            ("skip".to_string(), t0 + 60_000),
            ("queue".to_string(), t0 + 60_000),
            ("queue".to_string(), t0 + 120_000)
        ]
    );
}

#[test]
fn a_slot_queued_behind_a_job_that_a_timer_ends_fires_in_that_same_decision() {
    // Found by the simulator: the job's flush-logs timed out with its
    // retries spent, the same timer ended it, and the slot queued behind it
    // became due at once (due 0) with nothing fired: one more timer round
    // was needed, and the simulator's timer_progress saw a timer that
    // changed nothing.
    let t0 = utc("2026-01-01T00:00:00Z");
    let mut queue = sched("queue", &["b"], Calendar::every(60_000).expect("every"));
    queue.overlap = Overlap::QueueOne;
    // Another schedule first in the config: the one that fires must be
    // found by the job it watches, not by its place.
    let hourly = sched("hourly", &["a"], Calendar::every(3_600_000).expect("every"));
    let mut cfg = config(vec![hourly, queue]);
    for p in cfg.targets.values_mut() {
        p.freeze_limit_ms = 3_600_000;
        p.writer_timeout_ms = 100_000;
        p.max_retries = 0;
    }
    let mut e = Engine::start(cfg, t0);
    e.run_until(t0 + 60_000);
    let job = e.last_fired_job();
    let attempt = e.core.state().jobs[&job].attempt;
    e.input(rep(
        job,
        attempt,
        Stage::Freeze,
        &["b"],
        ok_(StepDetail::Frozen { deadline_ms: 0 }),
    ));
    let info = SnapshotInfo {
        name: recman_events::snapshot_name(job, attempt),
        provider: "copy".into(),
        location: "/x".into(),
        size_bytes: None,
        existed: false,
        array_expiry: None,
    };
    e.input(rep(
        job,
        attempt,
        Stage::Snapshot,
        &["b"],
        ok_(StepDetail::Snapshot(info)),
    ));
    e.input(rep(job, attempt, Stage::Thaw, &["b"], thawed()));
    assert_eq!(e.core.state().jobs[&job].stage, Some(Stage::FlushLogs));
    e.run_until(t0 + 120_000);
    assert_eq!(
        e.kinds("schedule_queued").len(),
        1,
        "the next slot waits behind the job"
    );
    // The flush-logs deadline: the timer that ends the job.
    let due = e.core.next_deadline().expect("the flush-logs deadline");
    assert!(due > t0 + 120_000);
    e.now = due;
    let step = e.core.handle(Input::TimerFired, due);
    let kinds: Vec<&str> = step.events.iter().map(|ev| ev.body.kind()).collect();
    assert!(kinds.contains(&"failed"), "{kinds:?}");
    assert!(
        step.events.iter().any(|ev| matches!(&ev.body,
            EventBody::ScheduleFired { slot_ms, .. } if *slot_ms == t0 + 120_000)),
        "the queued slot fires in the decision that ended the job: {kinds:?}"
    );
    e.log.extend(step.events);
    assert!(
        e.core.next_deadline().is_none_or(|d| d > due),
        "nothing is due any more at {due}: {:?}",
        e.core.next_deadline()
    );
    // The index and the full scan agree on it.
    e.core.due_index_agrees().expect("index");
}

#[test]
fn catch_up_once_fires_the_latest_missed_slot_and_skip_fires_none() {
    let t0 = utc("2026-01-01T00:00:00Z");
    let once = sched("once", &["a"], Calendar::every(60_000).expect("every"));
    let mut skip = sched("skip", &["b"], Calendar::every(60_000).expect("every"));
    skip.catch_up = CatchUp::Skip;
    let cfg = config(vec![once, skip]);
    let e = Engine::start(cfg.clone(), t0);
    // Down for ten minutes and 40 s (the newest slot is more than half a
    // period late: missed).
    let mut e = e.restart(cfg, t0 + 640_000);
    let fired = e.kinds("schedule_fired");
    assert_eq!(fired.len(), 1, "only catch_up = once fires");
    assert!(
        matches!(&fired[0].body, EventBody::ScheduleFired { schedule, slot_ms }
        if schedule == "once" && *slot_ms == t0 + 600_000)
    );
    let skipped = e.skips();
    assert_eq!(
        skipped,
        [
            ("once".to_string(), t0 + 540_000, 9),
            ("skip".to_string(), t0 + 600_000, 10)
        ]
    );
    // The book counts every missed slot, not only the skip events.
    let book = &e.core.state().book.schedules;
    assert_eq!((book["once"].skipped, book["skip"].skipped), (9, 10));
    // On time again: both fire at the next slot.
    let j = e.last_fired_job();
    e.finish(j, true);
    e.run_until(t0 + 660_000);
    assert_eq!(e.kinds("schedule_fired").len(), 3);
}

#[test]
fn a_crash_in_the_middle_of_a_firing_never_fires_the_slot_twice() {
    let t0 = utc("2026-01-01T00:00:00Z");
    let cfg = config(vec![sched(
        "s",
        &["a", "b"],
        Calendar::every(60_000).expect("every"),
    )]);
    let mut e = Engine::start(cfg.clone(), t0);
    // The firing is decided, and the engine dies before its append: nothing
    // of it is durable, the restart fires the same slot as the same job.
    let mut lost = Engine::restart(&e, cfg.clone(), t0 + 60_000);
    let decided: Vec<Event> = lost.log.split_off(e.log.len());
    let first_job = decided
        .iter()
        .find(|ev| ev.body.kind() == "schedule_fired")
        .expect("fired")
        .job;
    let mut e2 = e.restart(cfg.clone(), t0 + 61_000);
    let fired = e2.kinds("schedule_fired");
    assert_eq!(fired.len(), 1);
    assert_eq!(
        fired[0].job, first_job,
        "the slot's job id is derived from the slot"
    );
    // The firing is durable and the engine dies before sending: the
    // restart finds the slot and fires nothing.
    let e3 = e2.restart(cfg.clone(), t0 + 62_000);
    assert_eq!(e3.kinds("schedule_fired").len(), 1);
    // Another engine that missed the ScheduleFired but has the request
    // (its log without the firing event) finds the request id.
    let mut without: Vec<Event> = e2.log.clone();
    without.retain(|ev| ev.body.kind() != "schedule_fired");
    e.log = without;
    let e4 = e.restart(cfg, t0 + 63_000);
    assert_eq!(e4.kinds("schedule_fired").len(), 0);
    let skipped = e4.kinds("schedule_skipped");
    assert!(
        matches!(&skipped[..], [ev] if matches!(&ev.body, EventBody::ScheduleSkipped { reason, .. } if reason.starts_with("already fired"))),
        "{skipped:?}"
    );
    e2.run_until(t0 + 119_000);
    assert_eq!(e2.kinds("schedule_fired").len(), 1);
}

#[test]
fn pause_and_resume_are_events_and_paused_slots_are_not_caught_up() {
    let t0 = utc("2026-01-01T00:00:00Z");
    let mut e = Engine::start(
        config(vec![sched("s", &["a"], Calendar::every(60_000).expect("every"))]),
        t0,
    );
    let r = e.input(Input::PauseSchedule {
        schedule: "s".into(),
        reason: "maintenance".into(),
    });
    assert_eq!(
        r,
        Reply::Accepted {
            job: JobId::NONE,
            existing: false
        }
    );
    assert!(matches!(
        e.input(Input::PauseSchedule {
            schedule: "x".into(),
            reason: String::new()
        }),
        Reply::Rejected {
            code: "unknown_schedule",
            ..
        }
    ));
    e.run_until(t0 + 300_000);
    assert_eq!(e.kinds("schedule_fired").len(), 0);
    e.input(Input::ResumeSchedule { schedule: "s".into() });
    assert_eq!(e.kinds("schedule_resumed").len(), 1);
    e.run_until(t0 + 330_000);
    assert_eq!(
        e.kinds("schedule_fired").len(),
        0,
        "the paused slots are not caught up"
    );
    e.run_until(t0 + 360_000);
    assert_eq!(e.fired(), [rfc3339(t0 + 360_000)]);
}

#[test]
fn a_config_change_is_recorded_on_start_and_jitter_is_deterministic() {
    let t0 = utc("2026-01-01T00:00:00Z");
    let s = sched("s", &["a"], Calendar::every(3_600_000).expect("every"));
    let e = Engine::start(config(vec![s.clone()]), t0);
    assert_eq!(e.kinds("schedule_changed").len(), 1);
    let same = e.restart(config(vec![s.clone()]), t0 + 1_000);
    assert_eq!(
        same.kinds("schedule_changed").len(),
        1,
        "unchanged: nothing recorded"
    );
    let mut j = s.clone();
    j.jitter_ms = 600_000;
    let changed = same.restart(config(vec![j.clone()]), t0 + 2_000);
    let ch = changed.kinds("schedule_changed");
    assert_eq!(ch.len(), 2);
    assert!(matches!(&ch[1].body, EventBody::ScheduleChanged { spec, .. } if spec.contains("jitter=10m")));
    let offset = j.jitter_ms();
    assert!(offset <= 600_000);
    assert_eq!(offset, j.clone().jitter_ms(), "the same every time");
    assert_eq!(changed.core.next_deadline(), Some(t0 + 3_600_000 + offset));
    let removed = changed.restart(config(vec![]), t0 + 3_000);
    assert!(
        matches!(&removed.kinds("schedule_changed")[2].body, EventBody::ScheduleChanged { spec, .. } if spec.is_empty())
    );
}

#[test]
fn an_rpo_is_breached_by_the_timer_and_restored_by_a_completed_snapshot() {
    let t0 = utc("2026-01-01T00:00:00Z");
    let mut cfg = config(vec![]);
    cfg.targets.get_mut(&TargetId::from("a")).expect("a").rpo_ms = Some(600_000);
    let mut e = Engine::start(cfg, t0);
    assert_eq!(e.kinds("rpo_changed").len(), 1);
    assert_eq!(
        e.core.next_deadline(),
        Some(t0 + 600_000),
        "no restore point: the RPO counts from its config"
    );
    e.run_until(t0 + 600_000);
    let b = e.kinds("rpo_breached");
    assert!(matches!(&b[..], [ev] if matches!(&ev.body, EventBody::RpoBreached { last_good_ms: 0, .. })));
    assert_eq!(
        e.core.next_deadline(),
        None,
        "breached: no timer until a snapshot"
    );
    // A failed job does not restore it; a completed one does.
    let req = |rid: &str, n: u128, now: u64| Input::Request {
        req: recman_events::SnapshotRequest {
            schema_version: SCHEMA_VERSION,
            request_id: rid.into(),
            targets: vec![TargetId::from("a")],
            kind: SnapshotKind::Full,
        },
        origin: "test".into(),
        new_job: JobId::from_parts(now, n),
    };
    e.input(req("r1", 1, e.now));
    let j1 = JobId::from_parts(e.now, 1);
    e.finish(j1, false);
    assert_eq!(e.kinds("rpo_restored").len(), 0);
    e.now += 1_000;
    e.input(req("r2", 2, e.now));
    let j2 = JobId::from_parts(e.now, 2);
    e.finish(j2, true);
    let r = e.kinds("rpo_restored");
    assert!(matches!(&r[..], [ev] if ev.job == j2));
    assert_eq!(e.core.next_deadline(), Some(e.now + 600_000));
    e.run_until(e.now + 600_000);
    assert_eq!(e.kinds("rpo_breached").len(), 2);
}

/// The due-time index (`recman_core::due`) gives what a look at every
/// schedule and RPO gives: simulated logs with schedules, RPOs, crashes and
/// network faults are replayed through a `Core`, the index is checked after
/// every event, and at every instant of the log a timer decided with the
/// index decides exactly what one looking at everything decides.
#[test]
fn the_due_index_agrees_with_a_full_scan_through_simulated_logs() {
    use recman_core::sim::{self, Faults, SimConfig};
    use recman_core::{decide, decide_indexed, Rng};
    let mut timers = 0;
    let mut fired = 0;
    for (seed, faults) in [(3, Faults::All), (4, Faults::Crash), (5, Faults::Net)] {
        let c = SimConfig {
            faults,
            ..SimConfig::full(seed, 400, 40)
        };
        let (_, log, cfg) = sim::run_with_config(&c).unwrap_or_else(|v| panic!("{}", sim::render(&v)));
        let mut core = Core::new(cfg.clone());
        for (n, e) in log.iter().enumerate() {
            core.apply(e);
            if let Err(why) = core.due_index_agrees() {
                panic!("seed {seed}, after event {n} ({:?}): {why}", e.body);
            }
            let next_at = log.get(n + 1).map(|x| x.at_ms);
            if next_at == Some(e.at_ms) {
                continue; // the timer's decision is looked at once per instant
            }
            // A timer at this instant and at the next due time.
            let due = core.next_deadline().filter(|d| *d >= e.at_ms);
            for now in [Some(e.at_ms), due].into_iter().flatten() {
                let full = decide(core.state(), &cfg, &mut Rng::new(1), &Input::TimerFired, now);
                let ix = decide_indexed(
                    core.state(),
                    &cfg,
                    Some(core.due_index()),
                    &mut Rng::new(1),
                    &Input::TimerFired,
                    now,
                );
                assert_eq!(full, ix, "seed {seed}, after event {n}, timer at {now}");
                timers += 1;
                fired += full
                    .0
                    .iter()
                    .filter(|e| {
                        matches!(
                            e.body,
                            EventBody::ScheduleFired { .. } | EventBody::RpoBreached { .. }
                        )
                    })
                    .count();
            }
        }
    }
    // The comparison saw policy decisions, not only empty timers.
    assert!(timers > 1_000 && fired > 100, "timers {timers}, firings {fired}");
}

#[test]
fn durations_print_in_the_largest_unit_that_divides() {
    let cases = [
        (0, "0ms"),
        (1_500, "1500ms"),
        (90_000, "90s"),
        (120_000, "2m"),
        (14_400_000, "4h"),
        (172_800_000, "2d"),
    ];
    for (ms, want) in cases {
        assert_eq!(human_ms(ms), want, "{ms} ms");
    }
}

/// An RPO change is recorded once: a target whose RPO was removed and
/// which then leaves the config records nothing more at later starts.
#[test]
fn an_rpo_change_is_recorded_once_even_when_its_target_leaves() {
    let t0 = utc("2026-01-01T00:00:00Z");
    let mut cfg = config(Vec::new());
    let a = TargetId::from("a");
    cfg.targets.get_mut(&a).unwrap().rpo_ms = Some(86_400_000);
    let e = Engine::start(cfg.clone(), t0);
    assert_eq!(e.kinds("rpo_changed").len(), 1);
    cfg.targets.get_mut(&a).unwrap().rpo_ms = None;
    let e = e.restart(cfg.clone(), t0 + 1_000);
    assert_eq!(e.kinds("rpo_changed").len(), 2, "removed: recorded as 0");
    cfg.targets.remove(&a);
    let e = e.restart(cfg.clone(), t0 + 2_000);
    let e = e.restart(cfg, t0 + 3_000);
    assert_eq!(e.kinds("rpo_changed").len(), 2, "nothing left to record");
}

#[test]
fn a_thousand_slots_due_at_once_fire_a_bounded_batch_per_decision() {
    use recman_core::due::MAX_DUE_PER_DECISION;
    let t0 = utc("2026-01-01T00:00:00Z");
    let n = 1000;
    let mut cfg = config(Vec::new());
    for i in 0..n {
        let t = format!("t{i:04}");
        cfg.targets
            .insert(TargetId::from(t.as_str()), TargetPolicy::new("host.x", "array.x"));
        cfg.schedules.push(sched(
            &format!("s{i:04}"),
            &[&t],
            Calendar::every(60_000).expect("every"),
        ));
    }
    let mut e = Engine::start(cfg, t0);
    let slot = t0 + 60_000;
    e.now = slot;
    let mut batches = Vec::new();
    while e.core.next_deadline().is_some_and(|d| d <= slot) {
        let step = e.core.handle(Input::TimerFired, slot);
        let fired = step
            .events
            .iter()
            .filter(|ev| matches!(ev.body, EventBody::ScheduleFired { .. }))
            .count();
        assert!(fired > 0, "a due timer fired nothing: it would spin");
        batches.push(fired);
        e.log.extend(step.events);
        assert!(batches.len() <= n, "no end to the timers");
    }
    // One decision never takes more than the bound; together they take all,
    // each slot once, on time (no skip), in the order they fell due.
    assert!(batches.iter().all(|b| *b <= MAX_DUE_PER_DECISION), "{batches:?}");
    assert_eq!(batches.len(), n.div_ceil(MAX_DUE_PER_DECISION), "{batches:?}");
    assert_eq!(batches.iter().sum::<usize>(), n);
    assert!(e.skips().is_empty(), "{:?}", e.skips());
    let fired = e.fired();
    assert_eq!(fired.len(), n);
    assert!(fired.iter().all(|s| *s == rfc3339(slot)), "{fired:?}");
    let mut jobs: Vec<JobId> = e.kinds("schedule_fired").iter().map(|ev| ev.job).collect();
    jobs.sort();
    jobs.dedup();
    assert_eq!(jobs.len(), n, "one job per slot");
    assert_eq!(e.core.due_index_agrees(), Ok(()));
}

#[test]
fn after_a_restart_a_breached_rpo_is_not_looked_at_by_every_timer_and_still_restores() {
    let t0 = utc("2026-01-01T00:00:00Z");
    let mut cfg = config(vec![sched("s", &["b"], Calendar::every(60_000).expect("every"))]);
    cfg.targets.get_mut(&TargetId::from("a")).expect("a").rpo_ms = Some(600_000);
    let mut e = Engine::start(cfg.clone(), t0);
    e.run_until(t0 + 600_000);
    assert_eq!(e.kinds("rpo_breached").len(), 1);
    let a = TargetId::from("a");
    // An engine restarted from a checkpoint rebuilds its index with every
    // breached RPO aside; its first decision sees that nothing is left to
    // decide for it.
    let now = t0 + 600_500;
    let mut core = Core::from_state(cfg, e.core.state().clone());
    let step = core.start(now);
    let mut log = e.log.clone();
    log.extend(step.events);
    let mut e = Engine { core, log, now };
    let looked_at = |e: &Engine| e.core.due_index().due(e.now, usize::MAX).1;
    assert!(!looked_at(&e).contains(&a), "{:?}", looked_at(&e));
    e.run_until(t0 + 900_000); // the schedule's timers fire meanwhile
    assert!(!looked_at(&e).contains(&a));
    assert_eq!(e.kinds("rpo_breached").len(), 1, "breached once");
    // A completed snapshot still restores it.
    e.input(Input::Request {
        req: recman_events::SnapshotRequest {
            schema_version: SCHEMA_VERSION,
            request_id: "r1".into(),
            targets: vec![a.clone()],
            kind: SnapshotKind::Full,
        },
        origin: "test".into(),
        new_job: JobId::from_parts(e.now, 1),
    });
    e.finish(JobId::from_parts(e.now, 1), true);
    assert_eq!(e.kinds("rpo_restored").len(), 1);
    assert_eq!(e.core.due_index_agrees(), Ok(()));
}
