//! The freeze watchdog's timers: for each target this worker holds frozen
//! (the hold itself, with its attempt and deadline, is in the worker core's
//! memory), the attempt the timer was armed for, when the freeze returned on
//! the monotonic clock (the freeze window starts there), and the timer that
//! thaws it if no thaw comes. The runtime arms and fires the timers; this
//! module keeps them straight (a timer only fires for the freeze it was
//! armed for).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use recman_core::worker::{self, AttemptKey};
use recman_events::TargetId;
use tokio::task::AbortHandle;

/// The watchdog of one freeze.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Armed {
    /// The attempt whose freeze it thaws.
    pub key: AttemptKey,
    /// When the writer's freeze returned (the freeze window starts here).
    pub frozen_at: Instant,
}

impl Armed {
    /// Microseconds since the freeze returned.
    pub fn window_us(&self) -> u64 {
        u64::try_from(self.frozen_at.elapsed().as_micros()).unwrap_or(u64::MAX)
    }
}

struct Entry {
    armed: Armed,
    timer: Option<AbortHandle>,
}

/// The armed watchdogs of one worker, one per frozen target. Cheap to clone
/// (shared).
#[derive(Clone, Default)]
pub struct Watchdogs {
    inner: Arc<Mutex<HashMap<TargetId, Entry>>>,
}

impl Watchdogs {
    fn lock(&self) -> MutexGuard<'_, HashMap<TargetId, Entry>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Arms the watchdog of a freeze (its timer comes with `set_timer`). An
    /// older watchdog of the same target is stopped.
    pub fn insert(&self, target: TargetId, armed: Armed) {
        if let Some(old) = self.lock().insert(target, Entry { armed, timer: None }) {
            if let Some(t) = old.timer {
                t.abort();
            }
        }
    }

    /// Attaches the timer of the watchdog armed for `key` (stopped at once if
    /// that watchdog is gone already).
    pub fn set_timer(&self, target: &TargetId, key: AttemptKey, timer: AbortHandle) {
        match self.lock().get_mut(target) {
            Some(e) if e.armed.key == key => e.timer = Some(timer),
            _ => timer.abort(),
        }
    }

    /// The writer's freeze of `key` returned at `at`: the freeze window
    /// starts there (the timer, armed before the freeze, keeps its deadline).
    pub fn frozen(&self, target: &TargetId, key: AttemptKey, at: Instant) {
        if let Some(e) = self.lock().get_mut(target).filter(|e| e.armed.key == key) {
            e.armed.frozen_at = at;
        }
    }

    /// The thaw came: the watchdog of `target` is stopped and returned.
    pub fn take(&self, target: &TargetId) -> Option<Armed> {
        let e = self.lock().remove(target)?;
        if let Some(t) = e.timer {
            t.abort();
        }
        Some(e.armed)
    }

    /// For the timer itself: takes the watchdog only if it is still the one
    /// armed for `key`. Does not abort the (calling) timer.
    pub fn take_if(&self, target: &TargetId, key: AttemptKey) -> Option<Armed> {
        let mut map = self.lock();
        match map.get(target) {
            Some(e) if e.armed.key == key => map.remove(target).map(|e| e.armed),
            _ => None,
        }
    }
}

/// The watchdog deadline of a freeze that returned at `now_ms`/`now`: the
/// engine's `thaw_deadline_ms` when given, never later than `freeze_limit`.
/// Returns (Unix ms, the same instant on the monotonic clock).
pub fn deadline(
    now_ms: u64,
    now: Instant,
    thaw_deadline_ms: Option<u64>,
    freeze_limit: Duration,
) -> (u64, Instant) {
    let limit_ms = u64::try_from(freeze_limit.as_millis()).unwrap_or(u64::MAX);
    let at_ms = worker::freeze_deadline_ms(now_ms, thaw_deadline_ms, limit_ms);
    (at_ms, now + Duration::from_millis(at_ms.saturating_sub(now_ms)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use recman_events::JobId;

    fn armed(attempt: u32) -> Armed {
        Armed {
            key: (JobId::from_parts(1, 1), attempt),
            frozen_at: Instant::now(),
        }
    }

    #[test]
    fn the_deadline_is_the_earlier_of_engine_and_limit() {
        let now = Instant::now();
        let (ms, at) = deadline(1_000, now, Some(1_500), Duration::from_secs(10));
        assert_eq!((ms, at), (1_500, now + Duration::from_millis(500)));
        let (ms, _) = deadline(1_000, now, Some(99_000), Duration::from_secs(10));
        assert_eq!(ms, 11_000);
        let (ms, at) = deadline(1_000, now, Some(10), Duration::from_secs(10));
        assert_eq!((ms, at), (10, now), "a deadline in the past fires at once");
        assert_eq!(deadline(1_000, now, None, Duration::from_secs(2)).0, 3_000);
    }

    #[test]
    fn a_timer_only_takes_its_own_freeze() {
        let f = Watchdogs::default();
        let t = TargetId::from("db01");
        f.insert(t.clone(), armed(1));
        f.insert(t.clone(), armed(2));
        assert!(
            f.take_if(&t, armed(1).key).is_none(),
            "an old timer must not thaw a newer freeze"
        );
        assert!(f.take_if(&t, armed(2).key).is_some());
        assert!(f.take(&t).is_none());
    }
}
