//! One sink's outlet: a bounded queue that the log follower offers to
//! without ever waiting, and a delivery task that sends one notification at
//! a time with retries and exponential backoff. What is dropped (queue full)
//! or given up (retries spent, or refused for good) is counted for
//! `/metrics` and logged.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use recman_config::{NotifyConfig, MAX_NOTIFY_BACKOFF};
use tokio::sync::mpsc;

use crate::message::Notification;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Why one attempt failed. `permanent`: trying again cannot help (a 4xx,
/// an SMTP 5xx), so the notification is given up at once.
#[derive(Debug)]
pub struct DeliveryError {
    pub message: String,
    pub permanent: bool,
}

impl DeliveryError {
    pub fn transient(message: impl Into<String>) -> Self {
        DeliveryError {
            message: message.into(),
            permanent: false,
        }
    }
    pub fn permanent(message: impl Into<String>) -> Self {
        DeliveryError {
            message: message.into(),
            permanent: true,
        }
    }
}

/// A way to deliver a notification (webhook, email, a test double).
pub trait Deliver: Send + Sync + 'static {
    fn deliver<'a>(&'a self, n: &'a Notification) -> BoxFuture<'a, Result<(), DeliveryError>>;
    /// For logs: `webhook https://hooks.example.com` (never a secret or a URL path).
    fn describe(&self) -> String;
}

/// Counters of one sink.
#[derive(Debug, Default)]
pub struct SinkCounters {
    pub sent: AtomicU64,
    /// Given up: retries spent or refused for good.
    pub failed: AtomicU64,
    /// Not queued: the queue was full.
    pub dropped: AtomicU64,
    /// Attempts that failed (each retry counts).
    pub attempts_failed: AtomicU64,
    /// In the queue or being delivered now.
    pub pending: AtomicU64,
}

/// The follower's side of a sink.
pub struct Outlet {
    pub id: String,
    pub kind: &'static str,
    pub events: Vec<String>,
    pub summary_at_min: Option<u32>,
    /// The next daily summary (Unix ms), when one is configured.
    pub next_summary_ms: Option<u64>,
    pub counters: Arc<SinkCounters>,
    tx: mpsc::Sender<Notification>,
}

impl Outlet {
    pub fn wants(&self, kind: &str) -> bool {
        self.events.iter().any(|e| e == kind)
    }

    /// Queues `n` without waiting; a full queue drops it (counted, logged).
    pub fn offer(&self, n: Notification) {
        self.counters.pending.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = self.tx.try_send(n) {
            self.counters.pending.fetch_sub(1, Ordering::Relaxed);
            let dropped = self.counters.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            let n = match &e {
                mpsc::error::TrySendError::Full(n) | mpsc::error::TrySendError::Closed(n) => n,
            };
            // The first drop and every 100th: a sink that stays down must
            // not flood the log either.
            if dropped == 1 || dropped % 100 == 0 {
                tracing::warn!(
                    sink = %self.id,
                    kind = %n.kind,
                    delivery = %n.delivery,
                    dropped_total = dropped,
                    "notification dropped: the sink's queue is full (it cannot deliver; see recman_notify_dropped_total)"
                );
            }
        }
    }
}

/// Starts the delivery task of sink `cfg`; returns its outlet and task.
pub fn start(cfg: &NotifyConfig, to: Arc<dyn Deliver>) -> (Outlet, tokio::task::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(cfg.queue as usize);
    let counters = Arc::new(SinkCounters::default());
    let policy = Policy {
        retries: cfg.retries,
        backoff: cfg.backoff,
        timeout: cfg.timeout,
    };
    let task = tokio::spawn(deliver_all(cfg.id.clone(), rx, to, policy, counters.clone()));
    (
        Outlet {
            id: cfg.id.clone(),
            kind: cfg.kind.kind(),
            events: cfg.events.clone(),
            summary_at_min: cfg.summary_at_min,
            next_summary_ms: None,
            counters,
            tx,
        },
        task,
    )
}

#[derive(Clone, Copy, Debug)]
struct Policy {
    retries: u32,
    backoff: Duration,
    timeout: Duration,
}

async fn deliver_all(
    id: String,
    mut rx: mpsc::Receiver<Notification>,
    to: Arc<dyn Deliver>,
    p: Policy,
    c: Arc<SinkCounters>,
) {
    while let Some(n) = rx.recv().await {
        let mut wait = p.backoff;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let r = match tokio::time::timeout(p.timeout, to.deliver(&n)).await {
                Ok(r) => r,
                Err(_) => Err(DeliveryError::transient(format!(
                    "no answer within {:?}",
                    p.timeout
                ))),
            };
            match r {
                Ok(()) => {
                    c.sent.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(sink = %id, delivery = %n.delivery, kind = %n.kind, attempt, "notification delivered");
                    break;
                }
                Err(e) => {
                    c.attempts_failed.fetch_add(1, Ordering::Relaxed);
                    if e.permanent || attempt > p.retries {
                        c.failed.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(
                            sink = %id,
                            to = %to.describe(),
                            delivery = %n.delivery,
                            kind = %n.kind,
                            attempts = attempt,
                            "notification given up: {}{}",
                            e.message,
                            if e.permanent { " (refused: not retried)" } else { "" }
                        );
                        break;
                    }
                    tracing::info!(sink = %id, delivery = %n.delivery, attempt, retry_in = ?wait, "notification not delivered, retrying: {}", e.message);
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(MAX_NOTIFY_BACKOFF);
                }
            }
        }
        c.pending.fetch_sub(1, Ordering::Relaxed);
    }
}
