//! The thaws a worker does by itself: the watchdog that thaws a freeze whose
//! thaw did not come in time, the thaw on start of what a crashed
//! predecessor left frozen, and the thaw of everything on shutdown. Each is
//! reported with `by_watchdog: true` and recorded in the worker core's memory.

use std::sync::Arc;
use std::time::{Duration, Instant};

use recman_core::worker::{self, AttemptKey, ThawPlan, ThawedBy};
use recman_events::bus::{Address, BusError};
use recman_events::clock;
use recman_events::wire::{Outcome, Report};
use recman_events::{Stage, StepDetail, StepError, TargetId, SCHEMA_VERSION};
use tracing::Instrument;

use super::{micros, own_thaw_span, report_message, Shared};
use crate::watchdog::Armed;
use crate::writer::StepCtx;

/// Attempts of a watchdog thaw before it reports failure.
const WATCHDOG_THAW_ATTEMPTS: u32 = 3;

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
    /// timer was armed for (it thaws only that freeze); `None`: whatever
    /// freeze holds the target.
    async fn watchdog_thaw(&self, t: &TargetId, armed_for: Option<AttemptKey>) {
        let Ok(local) = self.local(t) else { return };
        let _g = local.writer_lock.lock().await;
        let Some(key) = armed_for.or_else(|| local.memory().hold().map(|h| h.key())) else {
            return;
        };
        let plan = worker::plan_thaw(&local.memory(), key);
        let ThawPlan::Own(hold) = &plan else { return };
        match armed_for {
            Some(k) => self.watchdogs.take_if(t, k),
            None => self.watchdogs.take(t),
        };
        let now_ms = clock::now_ms();
        let window_us = worker::thaw_window_us(&plan, now_ms, &self.process, None);
        local
            .memory()
            .record_thaw(key, ThawedBy::Watchdog, window_us, &plan, now_ms);
        tracing::warn!(worker = %self.id, target = %t, job = %hold.job, "no thaw arrived in time: the watchdog thaws");
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
        let span = own_thaw_span(&self.id, hold.job, hold.attempt, t, "watchdog");
        let msg = report_message(&report, &span, None);
        for n in 1..=5u64 {
            match self
                .bus
                .publish(Address::Reports, msg.clone())
                .instrument(span.clone())
                .await
            {
                Ok(()) => return,
                Err(BusError::Closed) => {
                    tracing::warn!(worker = %self.id, target = %t, "bus closed: watchdog report not published");
                    return;
                }
                Err(e) => {
                    tracing::warn!(worker = %self.id, target = %t, error = %e, "watchdog report not published, retrying");
                    tokio::time::sleep(Duration::from_millis(200 * n)).await;
                }
            }
        }
    }

    /// On start, before any command: thaws what a crashed predecessor left
    /// frozen (design layer 3), logs it, and reports it under the job of the
    /// freeze when the writer kept a marker (the engine records
    /// `WatchdogThawed` with this worker's id). That attempt counts as thawed
    /// by the watchdog: a late freeze of it is refused.
    pub(super) async fn startup_thaws(&self) {
        let mut ids: Vec<&TargetId> = self.targets.keys().collect();
        ids.sort();
        for t in ids {
            let local = &self.targets[t];
            let _g = local.writer_lock.lock().await;
            let found = match local.writer.startup_thaw().await {
                Ok(Some(found)) => found,
                Ok(None) => continue,
                Err(e) => {
                    tracing::error!(worker = %self.id, target = %t, code = %e.code, message = %e.message, "thaw on start FAILED: the target may still be frozen");
                    continue;
                }
            };
            let window_us = found
                .frozen_at_ms
                .map(|at| clock::now_ms().saturating_sub(at).saturating_mul(1000))
                .unwrap_or(0);
            match found.job {
                None => {
                    tracing::warn!(worker = %self.id, target = %t, what = %found.what, "found frozen on start (no record of the job that froze it): thawed by this worker");
                }
                Some((job, attempt, _kind)) => {
                    tracing::warn!(worker = %self.id, target = %t, what = %found.what, %job, attempt, freeze_window_ms = window_us / 1000, "found frozen on start: thawed by this worker");
                    let plan = worker::plan_thaw(&local.memory(), (job, attempt));
                    local.memory().record_thaw(
                        (job, attempt),
                        ThawedBy::Watchdog,
                        window_us,
                        &plan,
                        clock::now_ms(),
                    );
                    let report = Report {
                        schema_version: SCHEMA_VERSION,
                        message_id: format!(
                            "{}/startup",
                            Report::message_id_for(job, attempt, Stage::Thaw, t, &self.id)
                        ),
                        job,
                        attempt,
                        stage: Stage::Thaw,
                        targets: vec![t.clone()],
                        worker: self.id.clone(),
                        duration_us: 0,
                        outcome: Outcome::Ok {
                            detail: StepDetail::Thawed {
                                freeze_window_us: window_us,
                                by_watchdog: true,
                            },
                        },
                    };
                    let span = own_thaw_span(&self.id, job, attempt, t, "found frozen on start");
                    let msg = report_message(&report, &span, None);
                    if let Err(e) = self.bus.publish(Address::Reports, msg).instrument(span).await {
                        tracing::warn!(worker = %self.id, target = %t, error = %e, "report of the thaw on start not published");
                    }
                }
            }
        }
    }

    /// On clean shutdown: nothing stays frozen behind us.
    pub(super) async fn thaw_everything(&self) {
        let mut held: Vec<&TargetId> = self
            .targets
            .iter()
            .filter(|(_, l)| l.memory().hold().is_some())
            .map(|(t, _)| t)
            .collect();
        held.sort();
        for t in held {
            self.watchdog_thaw(t, None).await;
        }
    }
}
