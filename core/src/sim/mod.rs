//! Deterministic simulator: drives the real `Core` with simulated workers, an
//! unreliable network, worker and engine crashes and a virtual clock, and checks
//! the design's invariants after every step.

pub mod world;

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap};
use std::fmt::Write as _;

use recman_events::{
    snapshot_name, Command, Event, EventBody, JobId, Outcome, PoolName, Report, RequestId, SnapshotKind,
    SnapshotRequest, Stage, StepDetail, StepError, TargetId, WorkerId, SCHEMA_VERSION,
};

use crate::{Core, CoreConfig, Destination, Input, JobState, Mutation, Outgoing, Reply, Rng, TargetPolicy};
use world::{Key, Provider, TargetWorld, Worker};

/// Which faults to inject besides ordinary step failures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Faults {
    None,
    Net,
    Crash,
    All,
}

impl Faults {
    pub fn parse(s: &str) -> Option<Faults> {
        Some(match s {
            "none" => Faults::None,
            "net" => Faults::Net,
            "crash" => Faults::Crash,
            "all" => Faults::All,
            _ => return None,
        })
    }
    fn net(self) -> bool {
        matches!(self, Faults::Net | Faults::All)
    }
    fn crash(self) -> bool {
        matches!(self, Faults::Crash | Faults::All)
    }
}

/// One simulation run.
#[derive(Clone, Debug)]
pub struct SimConfig {
    pub seed: u64,
    pub jobs: usize,
    pub targets: usize,
    pub groups: bool,
    pub faults: Faults,
    /// A deliberately broken core, to prove the checks catch it.
    pub mutation: Option<Mutation>,
}

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
        )
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

const T0: u64 = 1_750_000_000_000;
const FREEZE_LIMIT: u64 = 10_000;

enum Ev {
    Submit(usize),
    Resubmit(usize),
    Cancel(usize),
    ToEngine(Input),
    ToWorker(usize, Destination, Command),
    Work(usize, u32, Command),
    Watchdog(usize, Key),
    Timer,
    EngineCrash,
    EngineRestart,
    WorkerCrash,
    WorkerRestart(usize),
}

struct Item {
    at: u64,
    seq: u64,
    ev: Ev,
}
impl PartialEq for Item {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl Eq for Item {}
impl PartialOrd for Item {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Item {
    fn cmp(&self, o: &Self) -> Ordering {
        (o.at, o.seq).cmp(&(self.at, self.seq))
    }
}

struct ClientJob {
    targets: Vec<TargetId>,
    job: Option<JobId>,
}

struct Sim {
    cfg: SimConfig,
    rng: Rng,
    now: u64,
    seq: u64,
    heap: BinaryHeap<Item>,
    core: Core,
    core_cfg: CoreConfig,
    engine_up: bool,
    crash_mid_input: bool,
    parked: Vec<Input>,
    log: Vec<Event>,
    timers: BTreeSet<u64>,
    target_ids: Vec<TargetId>,
    target_index: HashMap<TargetId, usize>,
    world: Vec<TargetWorld>,
    first_freeze: HashMap<Key, u64>,
    provider: Provider,
    workers: Vec<Worker>,
    worker_index: HashMap<WorkerId, usize>,
    pools: Vec<(PoolName, Vec<usize>)>,
    pool_index: HashMap<PoolName, usize>,
    backlog: Vec<Vec<Command>>,
    clients: Vec<ClientJob>,
    holder: HashMap<TargetId, JobId>,
    messages: HashMap<JobId, Vec<String>>,
    summary: Summary,
    accepted: usize,
    finished: usize,
}

type R<T> = Result<T, Box<Violation>>;

/// Runs one simulation to quiescence.
pub fn run(cfg: &SimConfig) -> R<Summary> {
    let mut sim = Sim::new(cfg.clone());
    sim.run()?;
    Ok(sim.summary)
}

impl Sim {
    fn new(cfg: SimConfig) -> Sim {
        let mut rng = Rng::new(cfg.seed);
        let n = cfg.targets.max(1);
        let hosts = n.div_ceil(2);
        let arrays = n.clamp(1, 3);
        let mut pools = Vec::new();
        let mut workers = Vec::new();
        for h in 0..hosts {
            pools.push((PoolName::new(format!("host.h{h}")), Vec::new()));
        }
        for a in 0..arrays {
            pools.push((PoolName::new(format!("array.a{a}")), Vec::new()));
        }
        for (p, pool) in pools.iter_mut().enumerate() {
            for k in 0..2 {
                let id = WorkerId::new(format!("w-{}-{k}", pool.0.as_str()));
                pool.1.push(workers.len());
                workers.push(Worker {
                    id,
                    pool: p,
                    alive: true,
                    incarnation: 0,
                });
            }
        }
        let mut targets = BTreeMap::new();
        let mut target_ids = Vec::new();
        for i in 0..n {
            let t = TargetId::new(format!("t{i}"));
            let mut p = TargetPolicy::new(pools[i / 2].0.clone(), pools[hosts + i % arrays].0.clone());
            p.freeze_limit_ms = FREEZE_LIMIT;
            p.thaw_margin_ms = 2_000;
            p.stage_timeout_ms = 10_000;
            p.backoff_base_ms = 100;
            p.backoff_max_ms = 2_000;
            p.keep_last = (i % 2 == 0).then_some(3);
            targets.insert(t.clone(), p);
            target_ids.push(t);
        }
        let core_cfg = CoreConfig {
            targets,
            seed: cfg.seed,
        };
        let mut clients = Vec::with_capacity(cfg.jobs);
        for _ in 0..cfg.jobs {
            let first = rng.below(n as u64) as usize;
            let mut ts = vec![first];
            if cfg.groups && n > arrays && rng.chance(0.2) {
                let size = rng.range(2, 3) as usize;
                let mut j = first;
                while ts.len() < size {
                    j += arrays;
                    if j >= n {
                        break;
                    }
                    ts.push(j);
                }
            }
            clients.push(ClientJob {
                targets: ts.iter().map(|i| target_ids[*i].clone()).collect(),
                job: None,
            });
        }
        let target_index = target_ids
            .iter()
            .cloned()
            .enumerate()
            .map(|(i, t)| (t, i))
            .collect();
        let worker_index = workers
            .iter()
            .enumerate()
            .map(|(i, w)| (w.id.clone(), i))
            .collect();
        let pool_index = pools.iter().enumerate().map(|(i, p)| (p.0.clone(), i)).collect();
        let npools = pools.len();
        Sim {
            core: Core::with_mutation(core_cfg.clone(), cfg.mutation),
            core_cfg,
            rng,
            now: T0,
            seq: 0,
            heap: BinaryHeap::new(),
            engine_up: true,
            crash_mid_input: false,
            parked: Vec::new(),
            log: Vec::new(),
            timers: BTreeSet::new(),
            world: (0..n).map(|_| TargetWorld::default()).collect(),
            target_ids,
            target_index,
            first_freeze: HashMap::new(),
            provider: Provider::default(),
            workers,
            worker_index,
            pools,
            pool_index,
            backlog: vec![Vec::new(); npools],
            clients,
            holder: HashMap::new(),
            messages: HashMap::new(),
            summary: Summary {
                seed: cfg.seed,
                jobs: cfg.jobs,
                targets: n,
                ..Summary::default()
            },
            accepted: 0,
            finished: 0,
            cfg,
        }
    }

    fn push(&mut self, at: u64, ev: Ev) {
        self.seq += 1;
        self.heap.push(Item {
            at,
            seq: self.seq,
            ev,
        });
    }

    fn violation(&self, invariant: &'static str, job: Option<JobId>, detail: String) -> Box<Violation> {
        let mut trace = Vec::new();
        if let Some(j) = job {
            for e in self.log.iter().filter(|e| e.job == j) {
                trace.push(format!("{:>8} event {:?}", e.at_ms - T0, e.body));
            }
            if let Some(m) = self.messages.get(&j) {
                trace.push("-- messages --".into());
                trace.extend(m.iter().cloned());
            }
        }
        Box::new(Violation {
            seed: self.cfg.seed,
            invariant,
            detail,
            at_ms: self.now - T0,
            job,
            trace,
        })
    }

    fn note(&mut self, job: JobId, s: String) {
        let line = format!("{:>8} {s}", self.now - T0);
        self.messages.entry(job).or_default().push(line);
    }

    fn busy(&self) -> bool {
        self.accepted < self.cfg.jobs || self.finished < self.accepted
    }

    fn run(&mut self) -> R<()> {
        let mut t = T0;
        for i in 0..self.cfg.jobs {
            t += self.rng.range(0, 10 * 50 / self.cfg.targets.max(1) as u64);
            self.push(t, Ev::Submit(i));
            if self.rng.chance(0.03) {
                let d = self.rng.range(0, 3_000);
                self.push(t + d, Ev::Cancel(i));
            }
            if self.rng.chance(0.02) {
                let d = self.rng.range(0, 5_000);
                self.push(t + d, Ev::Resubmit(i));
            }
        }
        if self.cfg.faults.crash() {
            let a = self.rng.range(5_000, 30_000);
            self.push(T0 + a, Ev::EngineCrash);
            let b = self.rng.range(500, 3_000);
            self.push(T0 + b, Ev::WorkerCrash);
        }
        while let Some(item) = self.heap.pop() {
            self.now = item.at;
            self.summary.steps += 1;
            self.step(item.ev)?;
            if self.summary.steps % 4096 == 0 {
                self.check_frozen_windows()?;
            }
            if self.summary.steps % 131_072 == 0 {
                self.check_replay()?;
            }
        }
        self.finish()
    }

    fn step(&mut self, ev: Ev) -> R<()> {
        match ev {
            Ev::Submit(i) | Ev::Resubmit(i) => {
                let req = SnapshotRequest {
                    schema_version: SCHEMA_VERSION,
                    request_id: RequestId::new(format!("r{i}")),
                    targets: self.clients[i].targets.clone(),
                    kind: SnapshotKind::Full,
                };
                let new_job = JobId::from_parts(self.now, self.rng.next_u64() as u128);
                if !self.engine_up {
                    let d = self.rng.range(500, 2_000);
                    self.push(self.now + d, Ev::Resubmit(i));
                    return Ok(());
                }
                let reply = self.engine(Input::Request {
                    req,
                    origin: "sim".into(),
                    new_job,
                })?;
                match reply {
                    Reply::Accepted { job, existing } => match self.clients[i].job {
                        None if !existing => {
                            self.clients[i].job = Some(job);
                            self.accepted += 1;
                        }
                        Some(j) if j == job && existing => {}
                        None if existing => {
                            // Accepted before, but that reply never arrived.
                            self.clients[i].job = Some(job);
                            self.accepted += 1;
                        }
                        prev => {
                            return Err(self.violation(
                                "request_idempotent",
                                Some(job),
                                format!(
                                    "request r{i} answered job {job} existing={existing}, before {prev:?}"
                                ),
                            ))
                        }
                    },
                    Reply::None => {
                        let d = self.rng.range(500, 2_000);
                        self.push(self.now + d, Ev::Resubmit(i));
                    }
                    other => {
                        return Err(self.violation(
                            "request_accepted",
                            None,
                            format!("request r{i}: {other:?}"),
                        ))
                    }
                }
            }
            Ev::Cancel(i) => {
                if let (Some(job), true) = (self.clients[i].job, self.engine_up) {
                    self.engine(Input::Cancel {
                        job,
                        reason: "sim cancel".into(),
                    })?;
                }
            }
            Ev::ToEngine(input) => {
                if self.engine_up {
                    self.engine(input)?;
                } else {
                    self.parked.push(input);
                }
            }
            Ev::Timer => {
                self.timers.remove(&self.now);
                if self.engine_up && self.core.next_deadline().is_some_and(|d| d <= self.now) {
                    self.engine(Input::TimerFired)?;
                    if self.engine_up && self.core.next_deadline().is_some_and(|d| d <= self.now) {
                        let job = self.core.state().deadlines.first().map(|(_, j)| *j);
                        let d = "a due timer changed nothing: the engine would spin".to_string();
                        return Err(self.violation("timer_progress", job, d));
                    }
                }
            }
            Ev::ToWorker(w, to, cmd) => self.deliver(w, to, cmd),
            Ev::Work(w, inc, cmd) => self.work(w, inc, cmd)?,
            Ev::Watchdog(t, key) => self.watchdog(t, key)?,
            Ev::EngineCrash => self.engine_crash()?,
            Ev::EngineRestart => self.engine_restart()?,
            Ev::WorkerCrash => {
                if self.busy() {
                    let w = self.rng.below(self.workers.len() as u64) as usize;
                    if self.workers[w].alive {
                        self.workers[w].alive = false;
                        self.workers[w].incarnation += 1;
                        let d = self.rng.range(500, 5_000);
                        self.push(self.now + d, Ev::WorkerRestart(w));
                    }
                    let d = self.rng.range(500, 4_000);
                    self.push(self.now + d, Ev::WorkerCrash);
                }
            }
            Ev::WorkerRestart(w) => {
                self.workers[w].alive = true;
                let p = self.workers[w].pool;
                let backlog = std::mem::take(&mut self.backlog[p]);
                for c in backlog {
                    self.deliver(w, Destination::Pool(self.pools[p].0.clone()), c);
                }
            }
        }
        Ok(())
    }

    /// One input into the engine: events become durable (the log), then the
    /// commands go out, then the invariants are checked.
    fn engine(&mut self, input: Input) -> R<Reply> {
        self.summary.inputs += 1;
        if self.crash_mid_input {
            // The engine dies after deciding but before the batch is durable:
            // nothing of it reaches the log or the network; an unacknowledged
            // report is redelivered, a request gets no reply (the client retries).
            self.crash_mid_input = false;
            self.check_replay()?;
            let _lost = self.core.handle(input.clone(), self.now);
            if matches!(input, Input::Report(_)) {
                self.parked.push(input);
            }
            self.go_down();
            return Ok(Reply::None);
        }
        let step = self.core.handle(input, self.now);
        let start = self.log.len();
        self.log.extend(step.events);
        for k in start..self.log.len() {
            self.check_event(k)?;
        }
        for o in step.commands {
            self.send_command(o);
        }
        self.arm_timer();
        Ok(step.reply)
    }

    fn arm_timer(&mut self) {
        if let Some(d) = self.core.next_deadline() {
            let d = d.max(self.now);
            if self.timers.insert(d) {
                self.push(d, Ev::Timer);
            }
        }
    }

    /// Network delay, or None when the message is dropped.
    fn net_delays(&mut self) -> Vec<u64> {
        let mut v = Vec::with_capacity(2);
        let base = self.rng.range(1, 8);
        if !self.cfg.faults.net() {
            v.push(base);
            return v;
        }
        if self.rng.chance(0.01) {
            return v;
        }
        let d = if self.rng.chance(0.01) {
            self.rng.range(100, 2_500)
        } else {
            base
        };
        v.push(d);
        if self.rng.chance(0.01) {
            let d2 = self.rng.range(1, 500);
            v.push(d2);
        }
        v
    }

    fn send_command(&mut self, o: Outgoing) {
        let c = &o.command;
        let line = format!(
            "cmd  {} a{} {:?} -> {:?}{}",
            c.stage,
            c.attempt,
            c.targets.iter().map(|t| t.as_str()).collect::<Vec<_>>(),
            o.to,
            c.thaw_deadline_ms
                .map(|d| format!(" watchdog@{}", d - T0))
                .unwrap_or_default()
        );
        self.note(c.job, line);
        for d in self.net_delays() {
            self.push(
                self.now + d,
                Ev::ToWorker(usize::MAX, o.to.clone(), o.command.clone()),
            );
        }
    }

    fn deliver(&mut self, _w: usize, to: Destination, cmd: Command) {
        let pool_name = match &to {
            Destination::Worker { worker, fallback } => {
                if let Some(&w) = self.worker_index.get(worker) {
                    if self.workers[w].alive {
                        self.start_work(w, cmd);
                        return;
                    }
                }
                fallback.clone()
            }
            Destination::Pool(p) => p.clone(),
        };
        let Some(&p) = self.pool_index.get(&pool_name) else {
            return;
        };
        let alive: Vec<usize> = self.pools[p]
            .1
            .iter()
            .copied()
            .filter(|w| self.workers[*w].alive)
            .collect();
        if alive.is_empty() {
            self.backlog[p].push(cmd);
            return;
        }
        let w = alive[self.rng.below(alive.len() as u64) as usize];
        self.start_work(w, cmd);
    }

    fn start_work(&mut self, w: usize, cmd: Command) {
        let lat = match cmd.stage {
            Stage::Freeze => self.rng.range(2, 40),
            Stage::Snapshot => {
                if self.rng.chance(0.005) {
                    self.rng.range(6_000, 14_000)
                } else {
                    self.rng.range(5, 200)
                }
            }
            _ => self.rng.range(2, 40),
        };
        let inc = self.workers[w].incarnation;
        self.push(self.now + lat, Ev::Work(w, inc, cmd));
    }

    fn report(&mut self, w: usize, cmd: &Command, outcome: Outcome) {
        let line = format!(
            "rep  {} a{} {:?} from {} {}",
            cmd.stage,
            cmd.attempt,
            cmd.targets.iter().map(|t| t.as_str()).collect::<Vec<_>>(),
            self.workers[w].id,
            match &outcome {
                Outcome::Ok { detail } => format!("ok {detail:?}"),
                Outcome::Err { error } => format!("err {}", error.code),
            }
        );
        self.note(cmd.job, line);
        let r = Report {
            schema_version: SCHEMA_VERSION,
            message_id: format!("rep/{}", cmd.message_id),
            job: cmd.job,
            attempt: cmd.attempt,
            stage: cmd.stage,
            targets: cmd.targets.clone(),
            worker: self.workers[w].id.clone(),
            duration_us: 1_000,
            outcome,
        };
        for d in self.net_delays() {
            self.push(self.now + d, Ev::ToEngine(Input::Report(r.clone())));
        }
    }

    fn random_failure(&mut self, p_retry: f64, p_fatal: f64) -> Option<StepError> {
        if self.rng.chance(p_retry) {
            Some(StepError::new(
                "sim_retryable",
                "simulated retryable failure",
                true,
            ))
        } else if self.rng.chance(p_fatal) {
            Some(StepError::new(
                "sim_fatal",
                "simulated non-retryable failure",
                false,
            ))
        } else {
            None
        }
    }

    fn thaw_world(&mut self, t: usize, key: Key, by_watchdog: bool) -> R<Option<u64>> {
        let tw = &mut self.world[t];
        tw.thawed.insert(key);
        if let Some((k, _, _)) = tw.frozen {
            if k == key {
                tw.frozen = None;
                if by_watchdog {
                    tw.watchdog_thawed.insert(key);
                }
                let first = self.first_freeze.get(&key).copied().unwrap_or(self.now);
                let window = self.now - first;
                if window > FREEZE_LIMIT {
                    return Err(self.violation(
                        "freeze_window",
                        Some(key.0),
                        format!(
                            "attempt {} kept writers frozen {window} ms > limit {FREEZE_LIMIT} ms",
                            key.1
                        ),
                    ));
                }
                return Ok(Some(window));
            }
        }
        Ok(None)
    }

    fn work(&mut self, w: usize, inc: u32, cmd: Command) -> R<()> {
        if !self.workers[w].alive || self.workers[w].incarnation != inc {
            return Ok(());
        }
        let key = (cmd.job, cmd.attempt);
        match cmd.stage {
            Stage::Freeze => {
                let Some(&t) = cmd.targets.first().and_then(|t| self.target_index.get(t)) else {
                    return Ok(());
                };
                let deadline = cmd.thaw_deadline_ms.unwrap_or(0);
                let res = if let Some(r) = self.world[t].freeze_results.get(&key) {
                    r.clone()
                } else {
                    let r = if self.world[t].thawed.contains(&key) {
                        Err(StepError::new(
                            "already_thawed",
                            "a thaw for this attempt came first",
                            true,
                        ))
                    } else if self.now >= deadline {
                        Err(StepError::new(
                            "deadline_passed",
                            "freeze arrived after its thaw deadline",
                            true,
                        ))
                    } else if self.world[t].frozen.is_some() {
                        Err(StepError::new("busy", "target frozen by another job", true))
                    } else if let Some(e) = self.random_failure(0.02, 0.003) {
                        Err(e)
                    } else {
                        self.world[t].frozen = Some((key, w, deadline));
                        self.first_freeze.entry(key).or_insert(self.now);
                        self.push(deadline, Ev::Watchdog(t, key));
                        Ok(deadline)
                    };
                    self.world[t].freeze_results.insert(key, r.clone());
                    r
                };
                let outcome = match res {
                    Ok(deadline_ms) => Outcome::Ok {
                        detail: StepDetail::Frozen { deadline_ms },
                    },
                    Err(error) => Outcome::Err { error },
                };
                self.report(w, &cmd, outcome);
            }
            Stage::Thaw => {
                let Some(&t) = cmd.targets.first().and_then(|t| self.target_index.get(t)) else {
                    return Ok(());
                };
                if let Some(error) = self.random_failure(0.01, 0.0) {
                    self.report(w, &cmd, Outcome::Err { error });
                    return Ok(());
                }
                let by_wd = self.world[t].watchdog_thawed.contains(&key);
                let window = self.thaw_world(t, key, false)?;
                let detail = StepDetail::Thawed {
                    freeze_window_us: window.unwrap_or(0) * 1_000,
                    by_watchdog: by_wd && window.is_none(),
                };
                self.report(w, &cmd, Outcome::Ok { detail });
            }
            Stage::Snapshot => {
                let expected = snapshot_name(cmd.job, cmd.attempt);
                let name = cmd.snapshot_name.clone().unwrap_or_default();
                if name != expected {
                    return Err(self.violation(
                        "snapshot_name",
                        Some(cmd.job),
                        format!("snapshot command named {name:?}, expected {expected}"),
                    ));
                }
                if self.provider.deleted.contains(&name) {
                    let error = StepError::new("deleted", "this snapshot was deleted by retention", false);
                    self.report(w, &cmd, Outcome::Err { error });
                    return Ok(());
                }
                if self.provider.snapshots.contains(&name) {
                    let detail = StepDetail::Snapshot(Provider::info(&name, true));
                    self.report(w, &cmd, Outcome::Ok { detail });
                    return Ok(());
                }
                if let Some(error) = self.random_failure(0.02, 0.003) {
                    self.report(w, &cmd, Outcome::Err { error });
                    return Ok(());
                }
                let consistent = cmd.targets.iter().all(|t| {
                    self.target_index
                        .get(t)
                        .is_some_and(|&i| matches!(self.world[i].frozen, Some((k, _, _)) if k == key))
                });
                self.provider.snapshots.insert(name.clone());
                let n = {
                    let n = self.provider.created.entry(key).or_insert(0);
                    *n += 1;
                    *n
                };
                if n > 1 {
                    return Err(self.violation(
                        "one_snapshot_per_attempt",
                        Some(cmd.job),
                        format!("attempt {} took {n} snapshots", cmd.attempt),
                    ));
                }
                self.provider.consistent.insert(key, consistent);
                let detail = StepDetail::Snapshot(Provider::info(&name, false));
                self.report(w, &cmd, Outcome::Ok { detail });
            }
            Stage::FlushLogs => {
                let outcome = match self.random_failure(0.01, 0.001) {
                    Some(error) => Outcome::Err { error },
                    None => Outcome::Ok {
                        detail: StepDetail::Flushed,
                    },
                };
                self.report(w, &cmd, outcome);
            }
            Stage::Prune => {
                for n in &cmd.prune {
                    self.provider.snapshots.remove(n);
                    self.provider.deleted.insert(n.clone());
                }
                let detail = StepDetail::Pruned {
                    deleted: cmd.prune.clone(),
                };
                self.report(w, &cmd, Outcome::Ok { detail });
            }
            Stage::Queue => {}
        }
        Ok(())
    }

    fn watchdog(&mut self, t: usize, key: Key) -> R<()> {
        let Some((k, w, _)) = self.world[t].frozen else {
            return Ok(());
        };
        if k != key {
            return Ok(());
        }
        if self.cfg.faults == Faults::None {
            // Without lost messages or crashes the engine's own thaw (layer 1)
            // must always come before the watchdog (layer 2).
            let d = format!(
                "{} thawed by the watchdog: the engine did not thaw in time",
                self.target_ids[t]
            );
            return Err(self.violation("engine_thaws_before_watchdog", Some(key.0), d));
        }
        let window = self.thaw_world(t, key, true)?.unwrap_or(0);
        self.note(
            key.0,
            format!("watchdog thawed {} (attempt {})", self.target_ids[t], key.1),
        );
        if self.workers[w].alive {
            let cmd = Command {
                schema_version: SCHEMA_VERSION,
                message_id: format!("watchdog/{}/{}/{}", key.0, key.1, self.target_ids[t]),
                job: key.0,
                attempt: key.1,
                stage: Stage::Thaw,
                targets: vec![self.target_ids[t].clone()],
                kind: SnapshotKind::Full,
                snapshot_name: None,
                thaw_deadline_ms: None,
                prune: Vec::new(),
            };
            let detail = StepDetail::Thawed {
                freeze_window_us: window * 1_000,
                by_watchdog: true,
            };
            self.report(w, &cmd, Outcome::Ok { detail });
        }
        Ok(())
    }

    fn engine_crash(&mut self) -> R<()> {
        if !self.busy() || !self.engine_up {
            return Ok(());
        }
        if self.rng.chance(0.5) {
            self.crash_mid_input = true;
            return Ok(());
        }
        self.check_replay()?;
        self.go_down();
        Ok(())
    }

    fn go_down(&mut self) {
        self.summary.engine_crashes += 1;
        self.engine_up = false;
        self.timers.clear();
        let d = self.rng.range(200, 3_000);
        self.push(self.now + d, Ev::EngineRestart);
    }

    fn engine_restart(&mut self) -> R<()> {
        let mut core = Core::with_mutation(self.core_cfg.clone(), self.cfg.mutation);
        for e in &self.log {
            core.apply(e);
        }
        self.core = core;
        self.engine_up = true;
        for o in self.core.recover_commands() {
            self.send_command(o);
        }
        let parked = std::mem::take(&mut self.parked);
        for p in parked {
            let d = self.rng.range(1, 50);
            self.push(self.now + d, Ev::ToEngine(p));
        }
        self.arm_timer();
        // A timer may be due already.
        self.push(self.now, Ev::Timer);
        self.timers.insert(self.now);
        let a = self.rng.range(20_000, 90_000);
        self.push(self.now + a, Ev::EngineCrash);
        Ok(())
    }

    fn check_replay(&self) -> R<()> {
        let mut core = Core::new(self.core_cfg.clone());
        for e in &self.log {
            core.apply(e);
        }
        if core.state() != self.core.state() {
            let job = self
                .core
                .state()
                .jobs
                .iter()
                .find(|(id, j)| core.state().jobs.get(id) != Some(j))
                .map(|(id, _)| *id);
            return Err(self.violation(
                "replay_exact",
                job,
                "state rebuilt from the log differs from the live state".into(),
            ));
        }
        Ok(())
    }

    /// Invariants at each event the engine makes durable.
    fn check_event(&mut self, k: usize) -> R<()> {
        let e = &self.log[k];
        let job_id = e.job;
        let Some(job) = self.core.state().jobs.get(&job_id) else {
            return Ok(());
        };
        let targets = job.targets.clone();
        let attempt = job.attempt;
        match &e.body {
            EventBody::AttemptStarted { .. } => {
                for t in &targets {
                    if let Some(other) = self.holder.get(t) {
                        if *other != job_id {
                            let d = format!("job {job_id} started on {t} while job {other} holds it");
                            return Err(self.violation("one_job_per_target", Some(job_id), d));
                        }
                    }
                    self.holder.insert(t.clone(), job_id);
                }
            }
            EventBody::RetryScheduled { .. }
            | EventBody::Completed { .. }
            | EventBody::Failed { .. }
            | EventBody::Cancelled => {
                let loud =
                    matches!(&e.body, EventBody::Failed { reason, .. } if reason.starts_with("thaw_failed"));
                let kind = e.body.kind();
                if !loud {
                    for t in &targets {
                        let i = self.target_index[t];
                        if matches!(self.world[i].frozen, Some((key, _, _)) if key == (job_id, attempt)) {
                            let d = format!(
                                "job moved on ({kind}) while {t} is still frozen by its attempt {attempt}"
                            );
                            return Err(self.violation("every_freeze_thawed", Some(job_id), d));
                        }
                    }
                }
                if let EventBody::Completed { attempt, .. } = &e.body {
                    if self.provider.consistent.get(&(job_id, *attempt)) != Some(&true) {
                        let d = format!("completed with attempt {attempt}'s snapshot, not cut while every writer was frozen");
                        return Err(self.violation("consistent_snapshot", Some(job_id), d));
                    }
                }
                if e.body.is_terminal() {
                    self.finished += 1;
                    for t in &targets {
                        if self.holder.get(t) == Some(&job_id) {
                            self.holder.remove(t);
                        }
                    }
                    match &e.body {
                        EventBody::Completed { .. } => self.summary.completed += 1,
                        EventBody::Failed { .. } => self.summary.failed += 1,
                        _ => self.summary.cancelled += 1,
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn check_frozen_windows(&self) -> R<()> {
        for tw in &self.world {
            if let Some((key, _, _)) = tw.frozen {
                let first = self.first_freeze.get(&key).copied().unwrap_or(self.now);
                if self.now - first > FREEZE_LIMIT {
                    return Err(self.violation(
                        "freeze_window",
                        Some(key.0),
                        format!("still frozen {} ms after the first freeze", self.now - first),
                    ));
                }
            }
        }
        Ok(())
    }

    fn finish(&mut self) -> R<()> {
        self.summary.virtual_ms = self.now - T0;
        self.summary.events = self.log.len();
        for (t, tw) in self.world.iter().enumerate() {
            if let Some((key, _, _)) = tw.frozen {
                let d = format!("{} still frozen at the end", self.target_ids[t]);
                return Err(self.violation("every_freeze_thawed", Some(key.0), d));
            }
        }
        for (i, c) in self.clients.iter().enumerate() {
            let Some(job) = c.job else {
                return Err(self.violation("no_request_lost", None, format!("request r{i} never accepted")));
            };
            match self.core.state().jobs.get(&job) {
                Some(j) if j.state.is_terminal() => {}
                other => {
                    let d = format!(
                        "job of request r{i} not finished at quiescence: {:?}",
                        other.map(|j| j.state)
                    );
                    return Err(self.violation("no_request_lost", Some(job), d));
                }
            }
        }
        if self.core.state().jobs.values().any(|j| !j.state.is_terminal()) {
            return Err(self.violation("no_request_lost", None, "a job is not finished".into()));
        }
        self.check_replay()?;
        let _ = JobState::Completed;
        Ok(())
    }
}

/// Formats a violation for a terminal (`recman simulate`).
pub fn render(v: &Violation) -> String {
    let mut s = String::new();
    let _ = write!(s, "{v}");
    s
}
