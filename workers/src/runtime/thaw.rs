//! The thaws a worker does by itself: the watchdog that thaws a freeze whose
//! thaw did not come in time, the take-over (on start and while running) of
//! freezes whose worker process died, so its own watchdog thaws them, and
//! the thaw on shutdown of what this process holds. Each is reported with
//! `by_watchdog: true` and recorded in the host's freeze state.

use std::sync::Arc;
use std::time::{Duration, Instant};

use recman_core::worker::{self, AttemptKey, ThawPlan, ThawedBy};
use recman_events::bus::{Address, BusError};
use recman_events::clock;
use recman_events::wire::{Outcome, Report};
use recman_events::{Stage, StepDetail, StepError, TargetId, SCHEMA_VERSION};
use tracing::Instrument;

use super::hoststate::Locked;
use super::{micros, own_thaw_span, report_message, Shared};
use crate::watchdog::Armed;
use crate::writer::StepCtx;

/// Attempts of a watchdog thaw before it reports failure.
const WATCHDOG_THAW_ATTEMPTS: u32 = 3;
/// After a watchdog thaw failed every attempt: when it tries again.
const WATCHDOG_RETRY_AFTER: Duration = Duration::from_secs(5);
/// How often a running worker looks for freezes of dead processes.
const SENTINEL_EVERY: Duration = Duration::from_millis(500);

impl Shared {
    /// Arms the watchdog of a freeze: at `at`, unless a thaw came first, the
    /// worker thaws by itself.
    pub(super) fn arm(self: &Arc<Self>, t: &TargetId, armed: Armed, at: Instant) {
        self.watchdogs.insert(t.clone(), armed);
        let me = self.clone();
        let target = t.clone();
        let key = armed.key;
        let timer = tokio::spawn(async move {
            tokio::time::sleep_until(at.into()).await;
            me.watchdog_thaw(&target, Some(key)).await;
        });
        self.watchdogs.set_timer(t, key, timer.abort_handle());
    }

    /// Thaws `t` without being asked (its deadline passed, or shutting down)
    /// and reports it with `by_watchdog: true`. `armed_for`: the attempt the
    /// timer was armed for (it thaws only that freeze); `None`: the freeze
    /// this process holds (its own or one it took over), never another
    /// live process's.
    async fn watchdog_thaw(self: &Arc<Self>, t: &TargetId, armed_for: Option<AttemptKey>) {
        let Ok(local) = self.local(t) else { return };
        let _g = local.writer_lock.lock().await;
        let mut host = match self.lock_state(t).await {
            Ok(h) => h,
            Err(e) => {
                tracing::error!(worker = %self.id, target = %t, message = %e.message, "watchdog: the host freeze state is unreadable; thawing what this process froze");
                return self.thaw_unrecorded(t, armed_for).await;
            }
        };
        let mine = host
            .memory
            .hold()
            .filter(|h| &h.process == self.process())
            .map(|h| h.key());
        let Some(key) = armed_for.or(mine) else {
            return;
        };
        let plan = worker::plan_thaw(&host.memory, key);
        let ThawPlan::Own(hold) = &plan else { return };
        let armed = match armed_for {
            Some(k) => self.watchdogs.take_if(t, k),
            None => self.watchdogs.take(t),
        };
        // So far (a failed thaw re-arms from it); it ends when the thaw returned.
        let (_, mut window_us) = self.window_now(armed.as_ref(), key, &plan);
        // As for a commanded thaw, the hold is released only once the
        // writer's thaw returned: a process killed in the middle leaves it
        // held, so another process adopts it and thaws again (idempotent).
        // Its record then carries the window up to that later thaw, an upper
        // bound: nobody can know whether the interrupted one landed.
        tracing::warn!(worker = %self.id, target = %t, job = %hold.job, attempt = hold.attempt, "no thaw arrived in time: the watchdog thaws");
        let ctx = StepCtx {
            target: t.clone(),
            job: hold.job,
            attempt: hold.attempt,
            kind: hold.kind,
        };
        let start = Instant::now();
        let mut result = Err(StepError::new("internal", "not run", true));
        for n in 1..=WATCHDOG_THAW_ATTEMPTS {
            result = local.writer.thaw(&ctx).await;
            if result.is_ok() || n == WATCHDOG_THAW_ATTEMPTS {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500 * u64::from(n))).await;
        }
        if result.is_ok() {
            // The window ends when the writer's thaw returned (after any retries).
            let now_ms;
            (now_ms, window_us) = self.window_now(armed.as_ref(), key, &plan);
            host.memory
                .record_thaw(key, ThawedBy::Watchdog, window_us, &plan, now_ms);
            if let Err(e) = self.save_state(&host).await {
                tracing::warn!(worker = %self.id, target = %t, message = %e.message, "the watchdog's thaw was not recorded");
            }
        } else {
            // The target is frozen as far as anyone knows: the hold stays,
            // adopted by this process, and the watchdog tries again; another
            // job's freeze is refused meanwhile.
            host.memory.record_adopt(key, self.process().clone());
            let _ = self.save_state(&host).await;
            let frozen_at = armed.map(|a| a.frozen_at).unwrap_or_else(|| {
                start
                    .checked_sub(Duration::from_micros(window_us))
                    .unwrap_or(start)
            });
            self.arm(t, Armed { key, frozen_at }, Instant::now() + WATCHDOG_RETRY_AFTER);
        }
        drop(host);
        let outcome = match result {
            Ok(()) => Outcome::Ok {
                detail: StepDetail::Thawed {
                    freeze_window_us: window_us,
                    by_watchdog: true,
                },
            },
            Err(error) => {
                tracing::error!(worker = %self.id, target = %t, code = %error.code, message = %error.message, "watchdog thaw FAILED: the target may still be frozen");
                Outcome::Err { error }
            }
        };
        let report = Report {
            schema_version: SCHEMA_VERSION,
            message_id: format!(
                "{}/watchdog",
                Report::message_id_for(hold.job, hold.attempt, Stage::Thaw, t, &self.id)
            ),
            job: hold.job,
            attempt: hold.attempt,
            stage: Stage::Thaw,
            targets: vec![t.clone()],
            worker: self.id.clone(),
            duration_us: micros(start.elapsed()),
            outcome,
        };
        self.publish_own_thaw(t, &report, "watchdog").await;
    }

    /// The state cannot be read: a watchdog still thaws the freeze it was
    /// armed for (a thaw too many is harmless, a freeze left is not).
    async fn thaw_unrecorded(&self, t: &TargetId, armed_for: Option<AttemptKey>) {
        let (Ok(local), Some(key)) = (self.local(t), armed_for) else {
            return;
        };
        if self.watchdogs.take_if(t, key).is_none() {
            return;
        }
        let ctx = StepCtx {
            target: t.clone(),
            job: key.0,
            attempt: key.1,
            kind: recman_events::SnapshotKind::Full,
        };
        if let Err(e) = local.writer.thaw(&ctx).await {
            tracing::error!(worker = %self.id, target = %t, code = %e.code, message = %e.message, "watchdog thaw FAILED: the target may still be frozen");
        }
    }

    async fn publish_own_thaw(&self, t: &TargetId, report: &Report, why: &'static str) {
        let span = own_thaw_span(&self.id, report.job, report.attempt, t, why);
        let msg = report_message(report, &span, None);
        for n in 1..=5u64 {
            match self
                .bus
                .publish(Address::Reports, msg.clone())
                .instrument(span.clone())
                .await
            {
                Ok(()) => return,
                Err(BusError::Closed) => {
                    tracing::warn!(worker = %self.id, target = %t, "bus closed: {why} report not published");
                    return;
                }
                Err(e) => {
                    tracing::warn!(worker = %self.id, target = %t, error = %e, "{why} report not published, retrying");
                    tokio::time::sleep(Duration::from_millis(200 * n)).await;
                }
            }
        }
    }

    /// The freeze window of attempt `key` ending now, in µs, and now (Unix
    /// ms). The host state keeps milliseconds; when this process armed the
    /// freeze, its monotonic clock gives microseconds (a window under 1 ms
    /// is not 0, and a wall clock step does not shorten it).
    pub(super) fn window_now(&self, armed: Option<&Armed>, key: AttemptKey, plan: &ThawPlan) -> (u64, u64) {
        let now_ms = clock::now_ms();
        let window = match armed {
            Some(a) if a.key == key => a.window_us(),
            _ => worker::thaw_window_us(plan, now_ms, self.process(), None),
        };
        (now_ms, window)
    }

    /// Takes over the hold of `t` if its process is dead (its watchdog died
    /// with it): this process's watchdog thaws it at its deadline, at once
    /// when that is past. Called with the target's writer lock and state
    /// lock held; returns whether it adopted one.
    pub(super) async fn adopt(self: &Arc<Self>, t: &TargetId, host: &mut Locked) -> bool {
        let Some(h) = worker::adoptable(&host.memory, |p| self.state.alive(p), None) else {
            return false;
        };
        host.memory.record_adopt(h.key(), self.process().clone());
        if let Err(e) = self.save_state(host).await {
            tracing::warn!(worker = %self.id, target = %t, message = %e.message, "the take-over of a freeze was not recorded");
        }
        let now_ms = clock::now_ms();
        let now = Instant::now();
        let frozen_at = now
            .checked_sub(Duration::from_millis(now_ms.saturating_sub(h.frozen_at_ms)))
            .unwrap_or(now);
        let at = now + Duration::from_millis(h.deadline_ms.saturating_sub(now_ms));
        tracing::warn!(
            worker = %self.id, target = %t, job = %h.job, attempt = h.attempt,
            dead_worker = %h.process.worker,
            frozen_for_ms = now_ms.saturating_sub(h.frozen_at_ms),
            thaw_in_ms = h.deadline_ms.saturating_sub(now_ms),
            "found frozen by a worker process that is gone: taken over, its watchdog thaws it"
        );
        self.arm(
            t,
            Armed {
                key: h.key(),
                frozen_at,
            },
            at,
        );
        true
    }

    /// On start, before any command: takes over every freeze of its targets
    /// that a dead worker process of the host left (design layer 3; any
    /// writer), so its watchdog thaws them (at once when past their deadline)
    /// and reports them under their job (the engine records
    /// `WatchdogThawed` with this worker's id). A target no process holds
    /// that the writer finds frozen anyway (fsfreeze) is thawed and logged.
    pub(super) async fn startup_thaws(self: &Arc<Self>) {
        let mut ids: Vec<&TargetId> = self.targets.keys().collect();
        ids.sort();
        for t in ids {
            let local = &self.targets[t];
            let _g = local.writer_lock.lock().await;
            let mut host = match self.lock_state(t).await {
                Ok(h) => h,
                Err(e) => {
                    tracing::error!(worker = %self.id, target = %t, message = %e.message, "cannot read the host freeze state on start");
                    continue;
                }
            };
            if self.adopt(t, &mut host).await || host.memory.hold().is_some() {
                // Held by a live process (its watchdog runs) or now by us.
                continue;
            }
            match local.writer.startup_thaw().await {
                Ok(Some(found)) => {
                    tracing::warn!(worker = %self.id, target = %t, what = %found.what, "found frozen on start (no record of the job that froze it): thawed by this worker");
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::error!(worker = %self.id, target = %t, code = %e.code, message = %e.message, "thaw on start FAILED: the target may still be frozen");
                }
            }
        }
    }

    /// While running: takes over the freezes of worker processes of the host
    /// that died since (checked every `SENTINEL_EVERY`), so a freeze is
    /// thawed at its deadline even when its worker and the engine are gone.
    pub(super) async fn sentinel(self: Arc<Self>) {
        let mut ids: Vec<TargetId> = self.targets.keys().cloned().collect();
        ids.sort();
        loop {
            tokio::time::sleep(SENTINEL_EVERY).await;
            for t in &ids {
                let orphan = self
                    .state
                    .peek(t, |m| worker::adoptable(m, |p| self.state.alive(p), None))
                    .await
                    .ok()
                    .flatten();
                if orphan.is_none() {
                    continue;
                }
                let local = &self.targets[t];
                let _g = local.writer_lock.lock().await;
                if let Ok(mut host) = self.lock_state(t).await {
                    self.adopt(t, &mut host).await;
                }
            }
        }
    }

    /// On clean shutdown: nothing this process holds stays frozen behind it
    /// (another live worker's freezes are left to it).
    pub(super) async fn thaw_everything(self: &Arc<Self>) {
        let mut held: Vec<&TargetId> = Vec::new();
        for t in self.targets.keys() {
            let mine = self
                .state
                .peek(t, |m| m.hold().is_some_and(|h| &h.process == self.process()))
                .await;
            if mine.unwrap_or(false) {
                held.push(t);
            }
        }
        held.sort();
        for t in held {
            self.watchdog_thaw(t, None).await;
        }
    }
}
