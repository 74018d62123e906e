//! Following jobs: one subscription to the log, shared by every follower,
//! hands each followed job's events to its follower until the job's
//! terminal event: one at a time ([`JobEvents`], for a live display), or all
//! at once when the job ended (`wait`, for harnesses and benchmarks: one
//! wake-up per job). Events of jobs nobody follows are dropped on the spot.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use recman_events::{EventLog, JobId, LogError, StoredEvent};
use tokio::sync::{mpsc, oneshot};

type Item = Result<StoredEvent, LogError>;
/// A job's events, in log order, through its terminal event.
pub(super) type Ended = Result<Vec<StoredEvent>, LogError>;

/// One follower of one job.
enum Follower {
    Live(mpsc::UnboundedSender<Item>),
    /// Collects the events; sends them all with the terminal one.
    Collect(Vec<StoredEvent>, oneshot::Sender<Ended>),
}

impl Follower {
    fn gone(&self) -> bool {
        match self {
            Follower::Live(tx) => tx.is_closed(),
            Follower::Collect(_, tx) => tx.is_closed(),
        }
    }

    /// Takes one event; false when the follower went away.
    fn take(&mut self, e: StoredEvent) -> bool {
        match self {
            Follower::Live(tx) => tx.send(Ok(e)).is_ok(),
            Follower::Collect(events, tx) => {
                events.push(e);
                !tx.is_closed()
            }
        }
    }

    /// The job ended (its terminal event was taken) or the log failed.
    fn end(self, err: Option<&str>) {
        match (self, err) {
            (Follower::Live(tx), Some(m)) => {
                let _ = tx.send(Err(LogError::Store(m.to_string())));
            }
            (Follower::Live(_), None) => {}
            (Follower::Collect(_, tx), Some(m)) => {
                let _ = tx.send(Err(LogError::Store(m.to_string())));
            }
            (Follower::Collect(events, tx), None) => {
                let _ = tx.send(Ok(events));
            }
        }
    }
}

/// Who follows which job; fed by one task reading the log.
pub(super) struct Followers {
    by_job: Mutex<HashMap<JobId, Vec<Follower>>>,
}

/// A follower's place in [`Followers`]; leaves it when dropped.
pub(super) struct Registration {
    job: JobId,
    followers: Arc<Followers>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut map = self.followers.lock();
        if let Some(v) = map.get_mut(&self.job) {
            v.retain(|f| !f.gone());
            if v.is_empty() {
                map.remove(&self.job);
            }
        }
    }
}

impl Followers {
    /// Subscribes to the log from its end now: whoever registers later gets
    /// every event appended after, and reads older ones from the log.
    pub(super) fn start(log: &dyn EventLog) -> Arc<Followers> {
        let f = Arc::new(Followers {
            by_job: Mutex::new(HashMap::new()),
        });
        let sub = log.subscribe(log.last_seq() + 1);
        tokio::spawn(dispatch(sub, Arc::downgrade(&f)));
        f
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<JobId, Vec<Follower>>> {
        self.by_job.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn add(self: &Arc<Self>, job: JobId, f: Follower) -> Registration {
        self.lock().entry(job).or_default().push(f);
        Registration {
            job,
            followers: self.clone(),
        }
    }

    /// From now on, `job`'s events go to the returned receiver, one by one.
    pub(super) fn live(self: &Arc<Self>, job: JobId) -> (Registration, mpsc::UnboundedReceiver<Item>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (self.add(job, Follower::Live(tx)), rx)
    }

    /// From now on, `job`'s events are collected and sent with its terminal one.
    pub(super) fn collect(self: &Arc<Self>, job: JobId) -> (Registration, oneshot::Receiver<Ended>) {
        let (tx, rx) = oneshot::channel();
        (self.add(job, Follower::Collect(Vec::new(), tx)), rx)
    }
}

async fn dispatch(mut sub: recman_events::log::Subscription, followers: Weak<Followers>) {
    let mut buf = Vec::with_capacity(1024);
    while sub.recv_many(&mut buf, 1024).await > 0 {
        let Some(f) = followers.upgrade() else { return };
        let mut map = f.lock();
        for item in buf.drain(..) {
            let e = match item {
                Ok(e) => e,
                Err(err) => {
                    // Every follower learns it; then they all end.
                    let msg = err.to_string();
                    for (_, fs) in map.drain() {
                        fs.into_iter().for_each(|f| f.end(Some(&msg)));
                    }
                    return;
                }
            };
            let job = e.event.job;
            let Some(fs) = map.get_mut(&job) else { continue };
            let last = e.event.body.is_terminal();
            // The usual case is one follower: it gets the event itself.
            let mut e = Some(e);
            let n = fs.len();
            let mut i = 0;
            fs.retain_mut(|f| {
                i += 1;
                let ev = if i == n { e.take() } else { e.clone() };
                ev.is_some_and(|ev| f.take(ev))
            });
            if last || fs.is_empty() {
                if let Some(fs) = map.remove(&job) {
                    fs.into_iter().for_each(|f| f.end(None));
                }
            }
        }
    }
    // The log closed: dropping the senders ends every follower.
    if let Some(f) = followers.upgrade() {
        f.lock().clear();
    }
}

/// One job's events, in log order, until (and including) its terminal event.
pub struct JobEvents {
    job: JobId,
    history: VecDeque<StoredEvent>,
    live: mpsc::UnboundedReceiver<Item>,
    _registration: Registration,
    /// The last seq handed out (live events the history already had are skipped).
    after: u64,
    ended: bool,
}

impl JobEvents {
    pub(super) fn new(
        job: JobId,
        history: Vec<StoredEvent>,
        (registration, live): (Registration, mpsc::UnboundedReceiver<Item>),
    ) -> JobEvents {
        JobEvents {
            job,
            history: history.into(),
            live,
            _registration: registration,
            after: 0,
            ended: false,
        }
    }

    pub fn job(&self) -> JobId {
        self.job
    }

    /// The next event; `None` after the terminal event, or when the log
    /// closed first. Cancel-safe (use it in `select!`).
    pub async fn next(&mut self) -> Option<Result<StoredEvent, LogError>> {
        if self.ended {
            return None;
        }
        let e = loop {
            let e = match self.history.pop_front() {
                Some(e) => e,
                None => match self.live.recv().await? {
                    Ok(e) => e,
                    Err(err) => {
                        self.ended = true;
                        return Some(Err(err));
                    }
                },
            };
            if e.seq > self.after {
                break e;
            }
        };
        self.after = e.seq;
        self.ended = e.event.body.is_terminal();
        Some(Ok(e))
    }
}

/// Waits for a collecting registration; `history` (read from the log after
/// it registered) comes first, the collected events after it.
pub(super) async fn ended(
    job: JobId,
    mut history: Vec<StoredEvent>,
    (registration, rx): (Registration, oneshot::Receiver<Ended>),
) -> Ended {
    if history.last().is_some_and(|e| e.event.body.is_terminal()) {
        return Ok(history);
    }
    let collected = rx
        .await
        .map_err(|_| LogError::Store(format!("the event log closed before job {job} ended")))??;
    drop(registration);
    let after = history.last().map_or(0, |e| e.seq);
    history.extend(collected.into_iter().filter(|e| e.seq > after));
    Ok(history)
}
