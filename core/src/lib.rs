//! recman-core, the sans-IO engine core: `decide` (input → events), `evolve`
//! (event → state), `effects` (event → commands) and `next_deadline`, plus the
//! `Core` driver; the worker core, the step rules every worker follows
//! (`worker`); the deterministic simulator that drives both (`sim`).
//!
//! No clock, no disk, no sockets: time is the `now_ms` argument, randomness a
//! seeded PRNG whose draws are recorded in events, so replay is exact. The
//! crate's normal dependencies hold no runtime, store or network crate
//! (`tests/run` checks `cargo tree`).

pub mod by;
pub mod checkpoint;
pub mod decide;
pub mod due;
pub mod effects;
pub mod evolve;
pub mod mounts_due;
pub mod policy;
pub mod prunes;
pub mod reconcile;
pub mod recovery;
pub mod retention;
pub mod rng;
pub mod schedule;
pub mod sim;
pub mod state;
pub mod verify;
pub mod window;
pub mod worker;

pub use decide::{
    attempt_snapshot_name, decide, decide_indexed, Input, Mutation, Reply, MAX_PRUNE_TRIES, MAX_THAW_TRIES,
};
pub use effects::{effects, recover_commands, Destination, Outgoing};
pub use evolve::{evolve, evolve_retiring, Retired};
pub use policy::{CoreConfig, JobPolicy, TargetPolicy};
pub use retention::{RetentionPolicy, Rule as RetentionRule};
pub use rng::Rng;
pub use state::{
    Bounds, CatalogEntry, Failure, Job, JobState, PendingPrune, RequestEntry, State, StepStatus,
    TargetProgress, TimelineEntry,
};

use std::sync::Arc;

use recman_events::Event;

/// When the runtime must call back with `Input::TimerFired` for a job
/// (`Core::next_deadline` adds the schedules' and RPOs' timers).
pub fn next_deadline(state: &State) -> Option<u64> {
    state.deadlines.first().map(|(d, _)| *d)
}

/// What one input produced: events to make durable, then commands to send, and
/// the reply for the sender.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    pub events: Vec<Event>,
    pub commands: Vec<Outgoing>,
    pub reply: Reply,
}

/// The core with its state, config and PRNG: the driver the runtime and the
/// simulator use.
#[derive(Clone, Debug)]
pub struct Core {
    /// Shared by the cores of one config (the simulator's live, resumed and
    /// reference cores): 100 000 targets' policies are some 60 MB.
    cfg: Arc<CoreConfig>,
    state: State,
    rng: Rng,
    /// When each schedule and RPO falls due, kept as events fold in.
    due: due::DueIndex,
}

impl Core {
    /// A core with an empty state (a new log; [`Core::apply`] then folds it).
    pub fn new(cfg: impl Into<Arc<CoreConfig>>) -> Self {
        // The resumed core of the empty state: PRNG seeded with the seed
        // alone (`applied` is 0), bounds and due times from `cfg`.
        Core::from_state(cfg, State::default())
    }

    /// A core resumed from a checkpoint's state (the fold of the log to
    /// some record): the due-time index is rebuilt and the PRNG re-seeded as
    /// [`Core::apply`] leaves them; the caller then applies the log's tail.
    /// The config's bounds (`state::Bounds`) apply from here on, also when
    /// the checkpoint was written under others.
    pub fn from_state(cfg: impl Into<Arc<CoreConfig>>, mut state: State) -> Self {
        let cfg = cfg.into();
        state.bounds = cfg.bounds;
        let due = due::DueIndex::build(&state, &cfg);
        let rng = Rng::new(cfg.seed ^ state.applied.wrapping_mul(0x2545_F491_4F6C_DD1D));
        Core { cfg, state, rng, due }
    }

    /// A core with a deliberate bug (the simulator's self-test).
    pub fn with_mutation(mut cfg: CoreConfig, mutation: Option<Mutation>) -> Self {
        cfg.mutation = mutation;
        Core::new(cfg)
    }

    /// Decides, folds each event in and collects its effects. The caller makes
    /// `events` durable before sending `commands`.
    pub fn handle(&mut self, input: Input, now_ms: u64) -> Step {
        self.handle_as(input, "", now_ms)
    }

    /// [`Core::handle`] for the sender `by` (see [`by::stamp`]): its events
    /// record it before they are folded, so the live state and a replay of
    /// the log agree on who asked (four-eyes compares the two admins).
    pub fn handle_as(&mut self, input: Input, by: &str, now_ms: u64) -> Step {
        let (mut events, reply) = decide_indexed(
            &self.state,
            &self.cfg,
            Some(&self.due),
            &mut self.rng,
            &input,
            now_ms,
        );
        by::attribute_schedules(&mut events);
        by::stamp(&mut events, by);
        let mut commands = Vec::new();
        for e in &events {
            self.fold(e);
            commands.extend(effects(&self.state, &self.cfg, e));
        }
        // Verification follows the folded step: the points its jobs made,
        // then what may start on the targets it touched (every target with
        // a request, on start).
        let asked = verify::follow_up(&self.state, &self.cfg, &events);
        for e in &asked {
            self.fold(e);
        }
        events.extend(asked);
        let targets = if input == Input::Start {
            self.state.verify.wanted.keys().cloned().collect()
        } else {
            verify::touched(&self.state, &events)
        };
        let started = verify::starts(&self.state, &self.cfg, now_ms, &targets);
        for e in &started {
            self.fold(e);
            commands.extend(effects(&self.state, &self.cfg, e));
        }
        events.extend(started);
        // Then the reconciles that may start (every target with a request, on start).
        let targets = if input == Input::Start {
            self.state.reconcile.wanted.keys().cloned().collect()
        } else {
            reconcile::touched(&self.state, &events)
        };
        let started = reconcile::starts(&self.state, &self.cfg, now_ms, &targets);
        for e in &started {
            self.fold(e);
            commands.extend(effects(&self.state, &self.cfg, e));
        }
        events.extend(started);
        // Then the recoveries that may start (every target with a request, on start).
        let targets = if input == Input::Start {
            self.state.recovery.wanted.keys().cloned().collect()
        } else {
            recovery::touched(&self.state, &events)
        };
        let started = recovery::starts(&self.state, &self.cfg, now_ms, &targets);
        for e in &started {
            self.fold(e);
            commands.extend(effects(&self.state, &self.cfg, e));
        }
        events.extend(started);
        by::attribute_schedules(&mut events);
        by::stamp(&mut events, by);
        if matches!(input, Input::TimerFired | Input::Start) {
            self.due.settle_recheck(&self.state, &self.cfg, now_ms);
        }
        let commands = self.mutated(commands);
        Step {
            events,
            commands,
            reply,
        }
    }

    /// The engine starts on its replayed log: first what fell due while it
    /// was down is decided (`Input::Start`: forced thaws, timeouts, retries,
    /// retention catching up), then the commands of every stage still in
    /// flight and of every delete still waiting go out again. So a snapshot
    /// whose thaw deadline passed meanwhile is never asked for again. The
    /// caller makes `events` durable before sending `commands`.
    pub fn start(&mut self, now_ms: u64) -> Step {
        let before =
            (self.cfg.mutation == Some(Mutation::ResendBeforeTimers)).then(|| self.recover_commands());
        let step = self.handle(Input::Start, now_ms);
        let mut commands = before.unwrap_or_default();
        commands.extend(self.mutated(recover_commands(&self.state, &self.cfg)));
        Step {
            events: step.events,
            commands,
            reply: Reply::None,
        }
    }

    /// Replay: folds one event from the log. Re-seeds the PRNG from the log
    /// length so a restarted engine does not repeat the jitter it drew before.
    pub fn apply(&mut self, e: &Event) {
        self.fold(e);
        self.rng = Rng::new(self.cfg.seed ^ self.state.applied.wrapping_mul(0x2545_F491_4F6C_DD1D));
    }

    /// `evolve`, with the fold's deliberate bug when asked for.
    fn fold(&mut self, e: &Event) {
        if self.cfg.mutation == Some(Mutation::CatalogKeepsDeleted) {
            if let recman_events::EventBody::SnapshotDeleted { .. } = &e.body {
                self.state.applied += 1;
                self.due.observe(&self.state, &self.cfg, e);
                return;
            }
        }
        evolve(&mut self.state, e);
        self.due.observe(&self.state, &self.cfg, e);
    }

    /// The commands, with the sending's deliberate bug when asked for.
    fn mutated(&self, mut commands: Vec<Outgoing>) -> Vec<Outgoing> {
        if self.cfg.mutation == Some(Mutation::NoThawAfterFailedFreeze) {
            // The old rule: a failed freeze did not land, so it gets no thaw.
            commands.retain(|o| {
                let c = &o.command;
                c.stage != recman_events::Stage::Thaw
                    || !self.state.jobs.get(&c.job).is_some_and(|j| {
                        c.targets.iter().all(|t| {
                            j.index_of(t)
                                .is_some_and(|i| j.progress[i].freeze == StepStatus::Failed)
                        })
                    })
            });
        }
        commands
    }

    pub fn recover_commands(&self) -> Vec<Outgoing> {
        self.mutated(recover_commands(&self.state, &self.cfg))
    }

    /// The earliest timer: a job's, a schedule's slot, an RPO's, a
    /// verification's or a reconcile's.
    pub fn next_deadline(&self) -> Option<u64> {
        [
            next_deadline(&self.state),
            self.due.first(),
            verify::next_due(&self.state),
            reconcile::next_due(&self.state),
            recovery::next_due(&self.state, self.due.mounts.earliest()),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Whether the due-time index holds what a look at every schedule and
    /// RPO gives (tests replay simulated logs through it): the first
    /// difference otherwise.
    pub fn due_index_agrees(&self) -> Result<(), String> {
        for (i, s) in self.cfg.schedules.iter().enumerate() {
            let (ix, full) = (
                self.due.get(&due::DueKey::Schedule(i)),
                schedule::schedule_due(&self.state, s),
            );
            if ix != full {
                return Err(format!("schedule {}: index {ix:?}, full scan {full:?}", s.id));
            }
        }
        for (t, p) in &self.cfg.targets {
            let full = p
                .rpo_ms
                .and_then(|r| schedule::rpo_due(&self.state, &self.cfg, t, r));
            let ix = self.due.get(&due::DueKey::Rpo(t.clone()));
            if ix != full {
                return Err(format!("rpo of {t}: index {ix:?}, full scan {full:?}"));
            }
            let full = p
                .reconcile_every_ms
                .and_then(|every| reconcile::due(&self.state, t, every));
            let ix = self.due.get(&due::DueKey::Reconcile(t.clone()));
            if ix != full {
                return Err(format!("reconcile of {t}: index {ix:?}, full scan {full:?}"));
            }
        }
        let reconciles = self.cfg.targets.iter().filter_map(|(t, p)| {
            p.reconcile_every_ms
                .and_then(|every| reconcile::due(&self.state, t, every))
        });
        let full = schedule::next_due(&self.state, &self.cfg)
            .into_iter()
            .chain(reconciles)
            .min();
        if self.due.first() != full {
            return Err(format!("first: index {:?}, full scan {full:?}", self.due.first()));
        }
        let mounts = recovery::mounts_due(&self.state, &self.cfg);
        if self.due.mounts.earliest() != mounts {
            return Err(format!(
                "mounts: kept {:?}, full scan {mounts:?}",
                self.due.mounts.earliest()
            ));
        }
        Ok(())
    }

    /// The due-time index of schedules and RPOs.
    pub fn due_index(&self) -> &due::DueIndex {
        &self.due
    }

    pub fn state(&self) -> &State {
        &self.state
    }

    /// The state, without the rest of the core.
    pub fn into_state(self) -> State {
        self.state
    }

    pub fn config(&self) -> &CoreConfig {
        &self.cfg
    }
}
