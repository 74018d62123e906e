//! recman-core, the sans-IO engine core: `decide` (input → events), `evolve`
//! (event → state), `effects` (event → commands) and `next_deadline`, plus the
//! `Core` driver; the worker core, the step rules every worker follows
//! (`worker`); the deterministic simulator that drives both (`sim`).
//!
//! No clock, no disk, no sockets: time is the `now_ms` argument, randomness a
//! seeded PRNG whose draws are recorded in events, so replay is exact. The
//! crate's normal dependencies hold no runtime, store or network crate
//! (`tests/run` checks `cargo tree`).

pub mod decide;
pub mod effects;
pub mod evolve;
pub mod policy;
pub mod rng;
pub mod sim;
pub mod state;
pub mod worker;

pub use decide::{decide, decide_with, Input, Mutation, Reply, MAX_THAW_TRIES};
pub use effects::{effects, recover_commands, Destination, Outgoing};
pub use evolve::evolve;
pub use policy::{CoreConfig, JobPolicy, TargetPolicy};
pub use rng::Rng;
pub use state::{CatalogEntry, Failure, Job, JobState, State, StepStatus, TargetProgress, TimelineEntry};

use recman_events::Event;

/// When the runtime must call back with `Input::TimerFired`.
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
    cfg: CoreConfig,
    state: State,
    rng: Rng,
    mutation: Option<Mutation>,
}

impl Core {
    pub fn new(cfg: CoreConfig) -> Self {
        let rng = Rng::new(cfg.seed);
        Core {
            cfg,
            state: State::default(),
            rng,
            mutation: None,
        }
    }

    /// A core with a deliberate bug (the simulator's self-test).
    pub fn with_mutation(cfg: CoreConfig, mutation: Option<Mutation>) -> Self {
        let mut c = Core::new(cfg);
        c.mutation = mutation;
        c
    }

    /// Decides, folds each event in and collects its effects. The caller makes
    /// `events` durable before sending `commands`.
    pub fn handle(&mut self, input: Input, now_ms: u64) -> Step {
        let (events, reply) = decide_with(
            &self.state,
            &self.cfg,
            &mut self.rng,
            &input,
            now_ms,
            self.mutation,
        );
        let mut commands = Vec::new();
        for e in &events {
            evolve(&mut self.state, e);
            commands.extend(effects(&self.state, &self.cfg, e));
        }
        Step {
            events,
            commands,
            reply,
        }
    }

    /// Replay: folds one event from the log. Re-seeds the PRNG from the log
    /// length so a restarted engine does not repeat the jitter it drew before.
    pub fn apply(&mut self, e: &Event) {
        evolve(&mut self.state, e);
        self.rng = Rng::new(self.cfg.seed ^ self.state.applied.wrapping_mul(0x2545_F491_4F6C_DD1D));
    }

    pub fn recover_commands(&self) -> Vec<Outgoing> {
        recover_commands(&self.state, &self.cfg)
    }

    pub fn next_deadline(&self) -> Option<u64> {
        next_deadline(&self.state)
    }

    pub fn state(&self) -> &State {
        &self.state
    }

    pub fn config(&self) -> &CoreConfig {
        &self.cfg
    }
}
