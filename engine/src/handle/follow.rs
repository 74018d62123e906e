//! Following jobs: one subscription to the log, shared by every follower,
//! hands each followed job's events to its [`JobEvents`] until the job's
//! terminal event. Events of jobs nobody follows are dropped on the spot.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use recman_events::{EventLog, JobId, LogError, StoredEvent};
use tokio::sync::mpsc;

type Tx = mpsc::UnboundedSender<Result<StoredEvent, LogError>>;
type Rx = mpsc::UnboundedReceiver<Result<StoredEvent, LogError>>;

/// Who follows which job; fed by one task reading the log.
pub(super) struct Followers {
    by_job: Mutex<HashMap<JobId, Vec<Tx>>>,
}

/// A follower's place in [`Followers`]; leaves it when dropped.
pub(super) struct Registration {
    job: JobId,
    rx: Rx,
    followers: Arc<Followers>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.rx.close();
        let mut map = self.followers.lock();
        if let Some(v) = map.get_mut(&self.job) {
            v.retain(|tx| !tx.is_closed());
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

    fn lock(&self) -> MutexGuard<'_, HashMap<JobId, Vec<Tx>>> {
        self.by_job.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// From now on, `job`'s events go to the returned registration.
    pub(super) fn register(self: &Arc<Self>, job: JobId) -> Registration {
        let (tx, rx) = mpsc::unbounded_channel();
        self.lock().entry(job).or_default().push(tx);
        Registration {
            job,
            rx,
            followers: self.clone(),
        }
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
                    for (_, txs) in map.drain() {
                        for tx in txs {
                            let _ = tx.send(Err(LogError::Store(msg.clone())));
                        }
                    }
                    return;
                }
            };
            let job = e.event.job;
            let Some(txs) = map.get_mut(&job) else { continue };
            let last = e.event.body.is_terminal();
            txs.retain(|tx| tx.send(Ok(e.clone())).is_ok());
            if last || txs.is_empty() {
                map.remove(&job);
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
    live: Registration,
    /// The last seq handed out (live events the history already had are skipped).
    after: u64,
    ended: bool,
}

impl JobEvents {
    pub(super) fn live(job: JobId, live: Registration) -> JobEvents {
        Self::with_history(job, Vec::new(), live)
    }

    pub(super) fn with_history(job: JobId, history: Vec<StoredEvent>, live: Registration) -> JobEvents {
        JobEvents {
            job,
            history: history.into(),
            live,
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
                None => match self.live.rx.recv().await? {
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
