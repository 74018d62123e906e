//! Per-target policy (pools, freeze limit, timeouts, retries, retention) and the core's config.

use std::collections::BTreeMap;

use recman_events::{PoolName, TargetId};

use crate::decide::Mutation;
use crate::retention::RetentionPolicy;
use crate::rng::Rng;

/// How one target is handled. `TargetPolicy::new` gives the documented defaults.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TargetPolicy {
    /// Pool whose workers freeze, thaw and flush this target (`host.<name>`).
    pub writer_pool: PoolName,
    /// Pool whose workers take (and prune) snapshots (`array.<name>`).
    pub provider_pool: PoolName,
    /// Longest allowed freeze window (default 10 000 ms, the VSS commit hold).
    pub freeze_limit_ms: u64,
    /// The engine thaws this long before the limit (default 20 % of it).
    pub thaw_margin_ms: u64,
    /// The writer's own timeout of each of freeze, thaw and flush-logs (its
    /// configured `timeout`; default 25 000 ms). The engine's deadline of
    /// those stages follows it (plus [`STAGE_GRACE_MS`]), so it never gives
    /// up on a step the worker still runs.
    pub writer_timeout_ms: u64,
    /// The provider's own timeout of a snapshot (default 25 000 ms); the
    /// snapshot stage's deadline follows it and is also bounded by the
    /// freeze limit (the forced thaw).
    pub provider_timeout_ms: u64,
    /// Retries after the first attempt, for retryable failures only (default 3).
    pub max_retries: u32,
    /// First backoff (default 1 000 ms), doubled each retry, jittered.
    pub backoff_base_ms: u64,
    /// Backoff cap (default 60 000 ms).
    pub backoff_max_ms: u64,
    /// Retention: keep the newest N completed snapshots, prune the rest.
    pub keep_last: Option<u32>,
    /// `WRITER/PROVIDER` kinds of the target in the engine's config, sent in
    /// every command so that a worker configured differently refuses it.
    pub fingerprint: Option<String>,
    /// RPO: the newest good restore point may be at most this old
    /// (`schedule::rpo_plan` decides `RpoBreached` / `RpoRestored`).
    pub rpo_ms: Option<u64>,
    /// `rpo_counts = "verified"`: only verified restore points meet the RPO
    /// (`schedule::last_good_ms`); a snapshot counts once it is verified.
    pub rpo_verified: bool,
    /// The other retention rules (`keep_within`, tiers; see `retention`).
    /// `keep_last` above is folded into it by [`TargetPolicy::retention`].
    pub retention: RetentionPolicy,
    /// `[target.verify]`: how its restore points are verified (none: never).
    pub verify: Option<crate::verify::VerifyPolicy>,
    /// How often the catalog is checked against the storage
    /// (`reconcile_every`; none: only on demand). The config's default is
    /// a day; a bare policy has none.
    pub reconcile_every_ms: Option<u64>,
    /// The provider's own timeout of a restore, a rollback, a mount or a
    /// clone (`[target.recovery] timeout`, default 1 h: copying data back
    /// takes long); the writer's stop and start use `writer_timeout_ms`.
    pub recovery_timeout_ms: u64,
    /// A mount older than this is taken away by the engine
    /// (`max_mount_age`; none: mounts stay until `recman unmount`).
    pub max_mount_age_ms: Option<u64>,
    /// `require_approval`: an in-place restore waits until an admin other
    /// than its requester approves it, at most this long
    /// (`approval_expiry`); an operator's prune of the target is refused.
    /// None: no approval.
    pub approval_ms: Option<u64>,
}

impl TargetPolicy {
    pub fn new(writer_pool: impl Into<PoolName>, provider_pool: impl Into<PoolName>) -> Self {
        TargetPolicy {
            writer_pool: writer_pool.into(),
            provider_pool: provider_pool.into(),
            freeze_limit_ms: 10_000,
            thaw_margin_ms: 2_000,
            writer_timeout_ms: 25_000,
            provider_timeout_ms: 25_000,
            max_retries: 3,
            backoff_base_ms: 1_000,
            backoff_max_ms: 60_000,
            keep_last: None,
            fingerprint: None,
            rpo_ms: None,
            rpo_verified: false,
            retention: RetentionPolicy::default(),
            verify: None,
            reconcile_every_ms: None,
            recovery_timeout_ms: 3_600_000,
            max_mount_age_ms: None,
            approval_ms: None,
        }
    }

    /// Every retention rule of the target, `keep_last` included.
    pub fn retention(&self) -> RetentionPolicy {
        RetentionPolicy {
            keep_last: self.keep_last.or(self.retention.keep_last),
            ..self.retention.clone()
        }
    }
}

/// How much longer than a step's own timeout the engine waits for its
/// report: the worker reports its own timeout (with its reason) first.
pub const STAGE_GRACE_MS: u64 = 5_000;

/// Everything the core needs besides state and input.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct CoreConfig {
    pub targets: BTreeMap<TargetId, TargetPolicy>,
    /// `[[schedule]]`s, in config order.
    pub schedules: Vec<crate::schedule::Schedule>,
    /// Seed of the jitter PRNG (the values drawn are recorded in events).
    pub seed: u64,
    /// A deliberate bug, for the simulator's self-test only (`None` anywhere else).
    pub mutation: Option<Mutation>,
    /// How long finished jobs and request ids stay in the state.
    pub bounds: crate::state::Bounds,
}

/// The policy of one job: the strictest combination of its targets' policies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobPolicy {
    pub freeze_limit_ms: u64,
    pub thaw_margin_ms: u64,
    /// Deadline of freeze, thaw and flush-logs: the slowest writer's timeout + grace.
    pub stage_timeout_ms: u64,
    /// Deadline of the snapshot stage (and of a prune's answer): the slowest
    /// provider's timeout + grace.
    pub snapshot_timeout_ms: u64,
    pub max_retries: u32,
    pub backoff_base_ms: u64,
    pub backoff_max_ms: u64,
}

impl JobPolicy {
    /// From the first Frozen report to the engine's forced thaw.
    pub fn freeze_budget_ms(&self) -> u64 {
        self.freeze_limit_ms - self.thaw_margin_ms.min(self.freeze_limit_ms / 2)
    }

    /// How long one thaw try may go unanswered before the next (to the other
    /// destination, see `effects::thaw_command`): the thaw margin, at least
    /// 1 s, at most the stage timeout. A frozen application waits on it.
    pub fn thaw_try_ms(&self) -> u64 {
        self.thaw_margin_ms.max(1_000).min(self.stage_timeout_ms)
    }

    /// From the freeze stage start to the writers' watchdog thaw.
    pub fn watchdog_offset_ms(&self) -> u64 {
        self.freeze_limit_ms - self.thaw_margin_ms.min(self.freeze_limit_ms / 2) / 2
    }

    /// Exponential backoff with equal jitter before attempt `failed_attempt + 1`.
    pub fn backoff_ms(&self, failed_attempt: u32, rng: &mut Rng) -> u64 {
        let shift = failed_attempt.saturating_sub(1).min(30);
        let exp = self.backoff_base_ms.saturating_mul(1u64 << shift);
        let d = exp.min(self.backoff_max_ms).max(1);
        d / 2 + rng.range(0, d - d / 2)
    }
}

impl CoreConfig {
    /// Combined policy of a job's targets; unknown targets (config changed
    /// since the job was accepted) fall back to the defaults.
    pub fn job_policy(&self, targets: &[TargetId]) -> JobPolicy {
        let d = TargetPolicy::new("", "");
        let mut it = targets.iter().map(|t| self.targets.get(t).unwrap_or(&d));
        let first = it.next().unwrap_or(&d);
        let mut p = JobPolicy {
            freeze_limit_ms: first.freeze_limit_ms,
            thaw_margin_ms: first.thaw_margin_ms,
            stage_timeout_ms: first.writer_timeout_ms,
            snapshot_timeout_ms: first.provider_timeout_ms,
            max_retries: first.max_retries,
            backoff_base_ms: first.backoff_base_ms,
            backoff_max_ms: first.backoff_max_ms,
        };
        for t in it {
            p.freeze_limit_ms = p.freeze_limit_ms.min(t.freeze_limit_ms);
            p.thaw_margin_ms = p.thaw_margin_ms.max(t.thaw_margin_ms);
            // A group's stage waits for its slowest member's own timeout.
            p.stage_timeout_ms = p.stage_timeout_ms.max(t.writer_timeout_ms);
            p.snapshot_timeout_ms = p.snapshot_timeout_ms.max(t.provider_timeout_ms);
            p.max_retries = p.max_retries.min(t.max_retries);
            p.backoff_base_ms = p.backoff_base_ms.max(t.backoff_base_ms);
            p.backoff_max_ms = p.backoff_max_ms.max(t.backoff_max_ms);
        }
        p.stage_timeout_ms = p.stage_timeout_ms.saturating_add(STAGE_GRACE_MS);
        p.snapshot_timeout_ms = p.snapshot_timeout_ms.saturating_add(STAGE_GRACE_MS);
        p
    }
}
