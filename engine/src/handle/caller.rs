//! The call side of the engine handle: submit, cancel, follow or wait for
//! jobs, and questions about the live state. [`Caller`] is a cheap clone,
//! what the HTTP API and the benchmarks' clients hold.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use recman_events::{EventLog, JobId, LogError, SnapshotRequest, StoredEvent};
use tokio::sync::{mpsc, oneshot};

use super::follow::{self, Followers, JobEvents};
use crate::runtime::{self, Call};
use recman_core::{Reply, State};

/// A request the engine accepted (or a cancel it recorded).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Accepted {
    pub job: JobId,
    /// The request id was seen before (the job is that earlier one), or the
    /// cancel was already requested.
    pub existing: bool,
}

/// Why a call did not get an [`Accepted`].
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The engine refused it; `code` is stable (`unknown_target`, `unknown_job`, …).
    #[error("request refused ({code}): {message}")]
    Rejected { code: &'static str, message: String },
    /// Shutdown began: no new requests.
    #[error("the engine is shutting down")]
    ShuttingDown,
    /// The engine is not running (it stopped or failed).
    #[error("the engine is not running")]
    Stopped,
    #[error("the engine gave no answer")]
    NoAnswer,
    /// Following the job failed: the log could not be read.
    #[error("following the job: {0}")]
    Log(#[from] LogError),
}

/// A cheap clone of the handle's call side: submit, cancel, follow, inspect.
/// What the HTTP API and the benchmarks' clients hold.
#[derive(Clone)]
pub struct Caller {
    calls: mpsc::Sender<Call>,
    accepting: Arc<AtomicBool>,
    log: Arc<dyn EventLog>,
    /// Started by the first follow.
    followers: Arc<OnceLock<Arc<Followers>>>,
    /// Who the calls are for, recorded as `by` in the events they cause
    /// (an API user, `cli:<unix user>`; empty: the engine itself).
    by: String,
}

/// What `recman prune` set going: deletes asked for now, and per target
/// with `require_approval` the prune job waiting for a second admin.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pruned {
    pub asked: usize,
    pub awaiting: Vec<(recman_events::TargetId, JobId)>,
}

impl Caller {
    /// The call side of an engine reading `calls`, on `log`.
    pub(super) fn new(calls: mpsc::Sender<Call>, log: Arc<dyn EventLog>) -> Caller {
        Caller {
            calls,
            accepting: Arc::new(AtomicBool::new(true)),
            log,
            followers: Arc::default(),
            by: String::new(),
        }
    }

    /// The same engine, calling for `by`: the events these calls cause
    /// record it (an API user's name, `cli:<unix user>`, …).
    pub fn acting_as(&self, by: &str) -> Caller {
        Caller {
            by: by.to_string(),
            ..self.clone()
        }
    }

    /// Who the calls are for (`acting_as`); empty: the engine itself.
    pub fn by(&self) -> &str {
        &self.by
    }

    /// Shutdown began: refuse submissions from now on.
    pub(super) fn stop_accepting(&self) {
        self.accepting.store(false, Ordering::SeqCst);
    }

    /// False once shutdown began: submissions are refused.
    pub fn accepting(&self) -> bool {
        self.accepting.load(Ordering::SeqCst)
    }

    /// Submits a snapshot request; answered once its events are durable.
    /// `origin` is recorded in the `requested` event (`cli`, `http`, …).
    pub async fn submit(&self, req: SnapshotRequest, origin: &str) -> Result<Accepted, CallError> {
        self.submit_as(req, origin, JobId::new_v7()).await
    }

    pub(super) async fn submit_as(
        &self,
        req: SnapshotRequest,
        origin: &str,
        new_job: JobId,
    ) -> Result<Accepted, CallError> {
        if !self.accepting() {
            return Err(CallError::ShuttingDown);
        }
        let (reply, rx) = oneshot::channel();
        let call = Call::Submit {
            req,
            origin: origin.to_string(),
            new_job,
            by: self.by.clone(),
            reply,
        };
        self.calls.send(call).await.map_err(|_| CallError::Stopped)?;
        accepted(rx.await.map_err(|_| CallError::Stopped)?)
    }

    /// Cancels a job: before its freeze it just ends; after, its targets are
    /// thawed first. Allowed while shutting down (the engine still thaws).
    pub async fn cancel(&self, job: JobId, reason: impl Into<String>) -> Result<Accepted, CallError> {
        let (reply, rx) = oneshot::channel();
        let call = Call::Cancel {
            job,
            reason: reason.into(),
            by: self.by.clone(),
            reply,
        };
        self.calls.send(call).await.map_err(|_| CallError::Stopped)?;
        accepted(rx.await.map_err(|_| CallError::Stopped)?)
    }

    /// Pauses (`pause: Some(reason)`) or resumes a schedule; `existing`:
    /// it already was.
    pub async fn pause_schedule(&self, schedule: &str, pause: Option<String>) -> Result<Accepted, CallError> {
        let (reply, rx) = oneshot::channel();
        let call = Call::Schedule {
            schedule: schedule.to_string(),
            pause,
            by: self.by.clone(),
            reply,
        };
        self.calls.send(call).await.map_err(|_| CallError::Stopped)?;
        accepted(rx.await.map_err(|_| CallError::Stopped)?)
    }

    /// Checks `target`'s catalog against its provider's list once it is
    /// idle (`recman reconcile`); `existing`: one already waited or ran.
    pub async fn reconcile(
        &self,
        target: recman_events::TargetId,
        origin: &str,
    ) -> Result<Accepted, CallError> {
        if !self.accepting() {
            return Err(CallError::ShuttingDown);
        }
        let (reply, rx) = oneshot::channel();
        let call = Call::Reconcile {
            target,
            origin: origin.to_string(),
            by: self.by.clone(),
            reply,
        };
        self.calls.send(call).await.map_err(|_| CallError::Stopped)?;
        accepted(rx.await.map_err(|_| CallError::Stopped)?)
    }

    /// Applies the retention rules of `targets` now (`recman prune`): the
    /// deletes are recorded (`prune_requested`) and carried out like the
    /// automatic ones. Answers how many deletes were asked for, and the
    /// prune jobs of targets with `require_approval` that wait for a second
    /// admin instead (`recman approve JOB`).
    pub async fn prune(&self, targets: Vec<recman_events::TargetId>) -> Result<Pruned, CallError> {
        if !self.accepting() {
            return Err(CallError::ShuttingDown);
        }
        let (reply, rx) = oneshot::channel();
        self.calls
            .send(Call::Prune {
                targets,
                by: self.by.clone(),
                reply,
            })
            .await
            .map_err(|_| CallError::Stopped)?;
        match rx.await.map_err(|_| CallError::Stopped)? {
            Reply::Pruning { asked, awaiting } => Ok(Pruned { asked, awaiting }),
            Reply::Rejected { code, message } => Err(CallError::Rejected { code, message }),
            _ => Err(CallError::NoAnswer),
        }
    }

    /// Verifies restore point `name` of `target` again (`recman verify`):
    /// recorded as `verify_requested` under the job that took it, then run
    /// by the target's verify pool once the target is idle. Refused with
    /// `snapshot_not_found` or `verify_not_configured`.
    pub async fn verify(
        &self,
        target: recman_events::TargetId,
        name: String,
        origin: &str,
    ) -> Result<Accepted, CallError> {
        if !self.accepting() {
            return Err(CallError::ShuttingDown);
        }
        let (reply, rx) = oneshot::channel();
        let call = Call::Verify {
            target,
            name,
            origin: origin.to_string(),
            by: self.by.clone(),
            reply,
        };
        self.calls.send(call).await.map_err(|_| CallError::Stopped)?;
        accepted(rx.await.map_err(|_| CallError::Stopped)?)
    }

    /// Submits a recovery (restore, mount, unmount, clone, remove a clone);
    /// answered once `recovery_requested` is durable. Refused with the
    /// core's code (`unknown_snapshot`, `target_busy`, …).
    pub async fn recover(
        &self,
        req: recman_events::RecoveryRequest,
        origin: &str,
    ) -> Result<Accepted, CallError> {
        self.recover_as(req, origin, JobId::new_v7()).await
    }

    async fn recover_as(
        &self,
        req: recman_events::RecoveryRequest,
        origin: &str,
        new_job: JobId,
    ) -> Result<Accepted, CallError> {
        if !self.accepting() {
            return Err(CallError::ShuttingDown);
        }
        let (reply, rx) = oneshot::channel();
        let call = Call::Recover {
            ask: runtime::ask(req),
            origin: origin.to_string(),
            new_job,
            by: self.by.clone(),
            reply,
        };
        self.calls.send(call).await.map_err(|_| CallError::Stopped)?;
        accepted(rx.await.map_err(|_| CallError::Stopped)?)
    }

    /// Approves recovery `job` as this caller's `by` (a second admin; the
    /// API checked the role and scope). Refused with the core's code
    /// (`self_approval`, `approval_expired`, `approver_unknown`, …);
    /// `existing`: this admin approved it already.
    pub async fn approve(&self, job: JobId) -> Result<Accepted, CallError> {
        if !self.accepting() {
            return Err(CallError::ShuttingDown);
        }
        let (reply, rx) = oneshot::channel();
        let call = Call::Approve {
            job,
            by: self.by.clone(),
            reply,
        };
        self.calls.send(call).await.map_err(|_| CallError::Stopped)?;
        accepted(rx.await.map_err(|_| CallError::Stopped)?)
    }

    /// [`Caller::recover`], then its events until the recovery ended (as
    /// [`Caller::submit_and_follow`]).
    pub async fn recover_and_follow(
        &self,
        req: recman_events::RecoveryRequest,
        origin: &str,
    ) -> Result<(Accepted, JobEvents), CallError> {
        let new_job = JobId::new_v7();
        let early = self.followers().live(new_job);
        let a = self.recover_as(req, origin, new_job).await?;
        if a.job == new_job && !a.existing {
            return Ok((a, JobEvents::new(new_job, Vec::new(), early)));
        }
        drop(early);
        Ok((a, self.follow(a.job)?))
    }

    /// Runs `f` on the live core state; the answer comes once everything the
    /// engine decided before is durable (so after a replay, or a submit, the
    /// log already holds what the state shows).
    pub async fn query<T: Send + 'static>(
        &self,
        f: impl FnOnce(&State) -> T + Send + 'static,
    ) -> Result<T, CallError> {
        let (tx, rx) = oneshot::channel();
        let query: runtime::Query = Box::new(move |s| {
            let v = f(s);
            Box::new(move || {
                let _ = tx.send(v);
            })
        });
        self.calls
            .send(Call::Inspect(query))
            .await
            .map_err(|_| CallError::Stopped)?;
        rx.await.map_err(|_| CallError::Stopped)
    }

    /// A copy of the live core state (see [`Caller::query`]).
    pub async fn inspect(&self) -> Result<State, CallError> {
        self.query(State::clone).await
    }

    /// Submits and follows the job from its first event: the follow starts
    /// before the job exists, so nothing is read back from the log (unless
    /// the request id was seen before: then that job is followed from its
    /// start in the log).
    pub async fn submit_and_follow(
        &self,
        req: SnapshotRequest,
        origin: &str,
    ) -> Result<(Accepted, JobEvents), CallError> {
        let new_job = JobId::new_v7();
        let early = self.followers().live(new_job);
        let a = self.submit_as(req, origin, new_job).await?;
        if a.job == new_job && !a.existing {
            return Ok((a, JobEvents::new(new_job, Vec::new(), early)));
        }
        drop(early);
        Ok((a, self.follow(a.job)?))
    }

    /// The events of `job`, from its first one (read from the log) until its
    /// terminal event, live, one at a time.
    pub fn follow(&self, job: JobId) -> Result<JobEvents, LogError> {
        let live = self.followers().live(job);
        let history = self.log.read_job(job)?;
        Ok(JobEvents::new(job, history, live))
    }

    /// Submits, then waits until the job ended: all its events, through the
    /// terminal one (see [`Caller::submit_and_follow`]; one wake-up per job,
    /// for harnesses and benchmarks).
    pub async fn submit_and_wait(
        &self,
        req: SnapshotRequest,
        origin: &str,
    ) -> Result<(Accepted, Vec<StoredEvent>), CallError> {
        let new_job = JobId::new_v7();
        let early = self.followers().collect(new_job);
        let a = self.submit_as(req, origin, new_job).await?;
        if a.job == new_job && !a.existing {
            return Ok((a, follow::ended(new_job, Vec::new(), early).await?));
        }
        drop(early);
        Ok((a, self.wait(a.job).await?))
    }

    /// Waits until `job` ended: all its events (the earlier ones read from
    /// the log), through the terminal one.
    pub async fn wait(&self, job: JobId) -> Result<Vec<StoredEvent>, LogError> {
        let collect = self.followers().collect(job);
        let history = self.log.read_job(job)?;
        follow::ended(job, history, collect).await
    }

    fn followers(&self) -> &Arc<Followers> {
        self.followers.get_or_init(|| Followers::start(self.log.as_ref()))
    }
}

fn accepted(r: Reply) -> Result<Accepted, CallError> {
    match r {
        Reply::Accepted { job, existing } => Ok(Accepted { job, existing }),
        Reply::Rejected { code, message } => Err(CallError::Rejected { code, message }),
        Reply::None | Reply::Pruning { .. } => Err(CallError::NoAnswer),
    }
}
