//! The freeze watchdog's bookkeeping: which targets this worker holds frozen,
//! since when, until when, and the timer that thaws each one if no thaw comes.
//! The runtime arms and fires the timers; this module keeps the state straight
//! (a timer only fires for the freeze it was armed for).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use recman_events::{JobId, SnapshotKind, TargetId};
use tokio::task::AbortHandle;

/// One target this worker froze and has not thawed yet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FreezeRecord {
    pub job: JobId,
    pub attempt: u32,
    pub kind: SnapshotKind,
    /// When the writer's freeze returned (the freeze window starts here).
    pub frozen_at: Instant,
    /// Unix ms at which the watchdog thaws by itself.
    pub deadline_ms: u64,
}

impl FreezeRecord {
    /// Microseconds since the freeze returned.
    pub fn window_us(&self) -> u64 {
        u64::try_from(self.frozen_at.elapsed().as_micros()).unwrap_or(u64::MAX)
    }
}

struct Entry {
    rec: FreezeRecord,
    generation: u64,
    timer: Option<AbortHandle>,
}

#[derive(Default)]
struct State {
    map: HashMap<TargetId, Entry>,
    next_generation: u64,
}

/// The frozen targets of one worker. Cheap to clone (shared).
#[derive(Clone, Default)]
pub struct FrozenTargets {
    inner: Arc<Mutex<State>>,
}

impl FrozenTargets {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records a freeze; returns its generation (for `set_timer`/`take_if`).
    /// A previous freeze of the same target is forgotten and its timer stopped.
    pub fn insert(&self, target: TargetId, rec: FreezeRecord) -> u64 {
        let mut st = self.lock();
        st.next_generation += 1;
        let generation = st.next_generation;
        if let Some(old) = st.map.insert(
            target,
            Entry {
                rec,
                generation,
                timer: None,
            },
        ) {
            if let Some(t) = old.timer {
                t.abort();
            }
        }
        generation
    }

    /// Attaches the watchdog timer of freeze `generation` (stopped at once if
    /// that freeze is already gone).
    pub fn set_timer(&self, target: &TargetId, generation: u64, timer: AbortHandle) {
        let mut st = self.lock();
        match st.map.get_mut(target) {
            Some(e) if e.generation == generation => e.timer = Some(timer),
            _ => timer.abort(),
        }
    }

    /// The thaw came: forgets the freeze and stops its timer.
    pub fn take(&self, target: &TargetId) -> Option<FreezeRecord> {
        let e = self.lock().map.remove(target)?;
        if let Some(t) = e.timer {
            t.abort();
        }
        Some(e.rec)
    }

    /// For the timer itself: forgets the freeze only if it is still the one
    /// the timer was armed for. Does not abort the (calling) timer.
    pub fn take_if(&self, target: &TargetId, generation: u64) -> Option<FreezeRecord> {
        let mut st = self.lock();
        match st.map.get(target) {
            Some(e) if e.generation == generation => st.map.remove(target).map(|e| e.rec),
            _ => None,
        }
    }

    pub fn get(&self, target: &TargetId) -> Option<FreezeRecord> {
        self.lock().map.get(target).map(|e| e.rec.clone())
    }

    /// Targets currently frozen, sorted.
    pub fn targets(&self) -> Vec<TargetId> {
        let mut v: Vec<TargetId> = self.lock().map.keys().cloned().collect();
        v.sort();
        v
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
    let limit_ms = now_ms.saturating_add(u64::try_from(freeze_limit.as_millis()).unwrap_or(u64::MAX));
    let at_ms = thaw_deadline_ms.map_or(limit_ms, |d| d.min(limit_ms));
    (at_ms, now + Duration::from_millis(at_ms.saturating_sub(now_ms)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec() -> FreezeRecord {
        FreezeRecord {
            job: JobId::from_parts(1, 1),
            attempt: 1,
            kind: SnapshotKind::Full,
            frozen_at: Instant::now(),
            deadline_ms: 0,
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
        let f = FrozenTargets::default();
        let t = TargetId::from("db01");
        let g1 = f.insert(t.clone(), rec());
        let g2 = f.insert(t.clone(), rec());
        assert!(
            f.take_if(&t, g1).is_none(),
            "an old timer must not thaw a newer freeze"
        );
        assert!(f.take_if(&t, g2).is_some());
        assert!(f.take(&t).is_none());
        assert!(f.targets().is_empty());
    }
}
