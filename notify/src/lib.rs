//! recman-notify: tells people about events. A [`Notifier`] follows the
//! event log (`EventLog::subscribe`, never the engine's loop), offers each
//! event that passes a sink's filter to that sink's bounded queue without
//! waiting, and each sink delivers on its own task with retries and backoff
//! (`sink.rs`): a webhook (`webhook.rs`, signed, `sign.rs`) or an email
//! (`email.rs`). An opt-in daily summary per sink reports every target's
//! newest restore point, RPO state and failures of the last 24 h
//! (`track.rs`). The log's head (`{seq, hash, at}`) goes every `[audit]
//! publish_head_every` to the sinks that list `log_head`, so a cut tail of
//! the log shows from outside. Counters for `/metrics`: [`Metrics::render`].
//!
//! Entry points: [`Notifier::start`], [`Metrics`], [`sign::verify`] (what a
//! webhook receiver does).

use std::fmt::Write;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use recman_config::{NotifyConfig, SinkConfig, LOG_HEAD_KIND};
use recman_events::clock::now_ms;
use recman_events::{EventLog, TargetId};

pub mod email;
pub mod message;
pub mod sign;
pub mod sink;
pub mod time;
mod tls;
pub mod track;
pub mod webhook;

pub use message::{Notification, TargetReport};
use sink::{Deliver, Outlet, SinkCounters};
use track::Tracker;

/// The wall clock the notifier reads (Unix ms).
pub type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

/// A sink could not be set up (its secret file, its TLS trust, an address).
#[derive(Debug, thiserror::Error)]
#[error("notify sink \"{sink}\": {message}")]
pub struct NotifyError {
    pub sink: String,
    pub message: String,
}

/// The notifier's counters, per sink.
#[derive(Debug, Default)]
pub struct Metrics {
    sinks: Vec<(String, &'static str, Arc<SinkCounters>)>,
}

impl Metrics {
    /// Prometheus text: `recman_notify_{sent,failed,dropped}_total{sink,kind}`,
    /// `recman_notify_attempts_failed_total` and the `recman_notify_pending` gauge.
    pub fn render(&self, out: &mut String) {
        type Get = fn(&SinkCounters) -> u64;
        let series: [(&str, &str, &str, Get); 5] = [
            (
                "recman_notify_sent_total",
                "counter",
                "Notifications delivered.",
                |c| c.sent.load(Ordering::Relaxed),
            ),
            (
                "recman_notify_failed_total",
                "counter",
                "Notifications given up (retries spent or refused by the receiver); each is logged.",
                |c| c.failed.load(Ordering::Relaxed),
            ),
            (
                "recman_notify_dropped_total",
                "counter",
                "Notifications dropped because the sink's queue was full.",
                |c| c.dropped.load(Ordering::Relaxed),
            ),
            (
                "recman_notify_attempts_failed_total",
                "counter",
                "Delivery attempts that failed (retries included).",
                |c| c.attempts_failed.load(Ordering::Relaxed),
            ),
            (
                "recman_notify_pending",
                "gauge",
                "Notifications queued or being delivered.",
                |c| c.pending.load(Ordering::Relaxed),
            ),
        ];
        for (name, ty, help, get) in series {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {ty}");
            for (id, kind, c) in &self.sinks {
                let _ = writeln!(out, "{name}{{sink=\"{id}\",kind=\"{kind}\"}} {}", get(c));
            }
        }
    }

    /// `(sink, counters)` of every sink.
    pub fn sinks(&self) -> impl Iterator<Item = (&str, &SinkCounters)> {
        self.sinks.iter().map(|(id, _, c)| (id.as_str(), c.as_ref()))
    }
}

/// The running notifier: a log follower and one delivery task per sink.
pub struct Notifier {
    metrics: Arc<Metrics>,
    follower: tokio::task::JoinHandle<()>,
    deliveries: Vec<tokio::task::JoinHandle<()>>,
}

impl Notifier {
    /// Starts the sinks of `sinks` (reading their secrets now: an error
    /// names the config line) and follows `log`. Events up to the log's
    /// current end are history (folded for the summary, not notified);
    /// every later one is offered to the sinks. `targets`: the config's
    /// targets with their RPO (ms), for the summary. `head_every`: how
    /// often the log's head goes to the sinks that list `log_head` (the
    /// first time at once).
    pub fn start(
        sinks: &[NotifyConfig],
        targets: Vec<(TargetId, Option<u64>)>,
        log: Arc<dyn EventLog>,
        head_every: Option<Duration>,
    ) -> Result<Notifier, NotifyError> {
        let mut built: Vec<(&NotifyConfig, Arc<dyn Deliver>)> = Vec::new();
        for cfg in sinks {
            let err = |message: String| NotifyError {
                sink: cfg.id.clone(),
                message,
            };
            let d: Arc<dyn Deliver> = match &cfg.kind {
                SinkConfig::Webhook(w) => Arc::new(webhook::Webhook::new(w, cfg.timeout).map_err(err)?),
                SinkConfig::Email(e) => Arc::new(email::Email::new(e, cfg.timeout).map_err(err)?),
            };
            built.push((cfg, d));
        }
        Ok(Notifier::start_clocked(
            built,
            targets,
            log,
            Arc::new(now_ms),
            head_every,
        ))
    }

    /// [`Notifier::start`] with the deliveries given (tests pass their own).
    pub fn start_with(
        sinks: Vec<(&NotifyConfig, Arc<dyn Deliver>)>,
        targets: Vec<(TargetId, Option<u64>)>,
        log: Arc<dyn EventLog>,
    ) -> Notifier {
        Notifier::start_clocked(sinks, targets, log, Arc::new(now_ms), None)
    }

    /// [`Notifier::start_with`] on the wall clock `clock` (Unix ms) for the
    /// daily summaries (tests run one at a chosen time of day), publishing
    /// the head every `head_every`.
    pub fn start_clocked(
        sinks: Vec<(&NotifyConfig, Arc<dyn Deliver>)>,
        targets: Vec<(TargetId, Option<u64>)>,
        log: Arc<dyn EventLog>,
        clock: Clock,
        head_every: Option<Duration>,
    ) -> Notifier {
        let mut outlets = Vec::new();
        let mut deliveries = Vec::new();
        let mut metrics = Metrics::default();
        for (cfg, d) in sinks {
            tracing::info!(sink = %cfg.id, to = %d.describe(), events = %cfg.events.join(","), "notify sink ready");
            let (o, task) = sink::start(cfg, d);
            metrics.sinks.push((o.id.clone(), o.kind, o.counters.clone()));
            outlets.push(o);
            deliveries.push(task);
        }
        let history_end = log.last_seq();
        let head_every = head_every.filter(|_| outlets.iter().any(|o| o.wants(LOG_HEAD_KIND)));
        let follower = tokio::spawn(follow(
            log,
            history_end,
            Tracker::new(targets),
            outlets,
            clock,
            head_every,
        ));
        Notifier {
            metrics: Arc::new(metrics),
            follower,
            deliveries,
        }
    }

    pub fn metrics(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }

    /// Stops following; gives queued notifications up to `grace` to go
    /// out, then abandons them (logged with their count).
    pub async fn stop(self, grace: Duration) {
        self.follower.abort();
        let _ = self.follower.await;
        let deliveries = self.deliveries;
        let drained = async {
            while deliveries.iter().any(|t| !t.is_finished()) {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        if tokio::time::timeout(grace, drained).await.is_err() {
            for (id, c) in self.metrics.sinks() {
                let left = c.pending.load(Ordering::Relaxed);
                if left > 0 {
                    tracing::warn!(sink = %id, left, "stopping: notifications not delivered");
                }
            }
            for t in &deliveries {
                t.abort();
            }
        }
    }
}

/// Follows the log from its start: folds everything, notifies what comes
/// after `history_end`, sends each sink's daily summary when due, and the
/// log's head every `head_every` (at once the first time).
async fn follow(
    log: Arc<dyn EventLog>,
    history_end: u64,
    mut tracker: Tracker,
    mut outlets: Vec<Outlet>,
    now_ms: Clock,
    head_every: Option<Duration>,
) {
    let now = now_ms();
    for o in &mut outlets {
        o.next_summary_ms = o.summary_at_min.map(|m| time::next_daily(now, m));
    }
    let mut next_head_ms = head_every.map(|_| now);
    let mut sub = log.subscribe(1);
    loop {
        let due = outlets
            .iter()
            .filter_map(|o| o.next_summary_ms)
            .chain(next_head_ms)
            .min();
        let sleep = match due {
            Some(at) => Duration::from_millis(at.saturating_sub(now_ms())),
            None => Duration::from_secs(3600),
        };
        tokio::select! {
            item = sub.recv() => match item {
                None => break,
                Some(Err(e)) => {
                    tracing::error!("notifications stopped: cannot read the event log: {e}");
                    break;
                }
                Some(Ok(e)) => {
                    let targets = tracker.apply(&e);
                    if e.seq > history_end {
                        let kind = e.event.body.kind();
                        let wanted: Vec<&Outlet> = outlets.iter().filter(|o| o.wants(kind)).collect();
                        if !wanted.is_empty() {
                            let n = Notification::of_event(&e, targets);
                            for o in wanted {
                                o.offer(n.clone());
                            }
                        }
                    }
                }
            },
            _ = tokio::time::sleep(sleep), if due.is_some() => {
                let now = now_ms();
                if outlets.iter().any(|o| o.next_summary_ms.is_some_and(|at| at <= now)) {
                    let report = tracker.report(now);
                    for o in &mut outlets {
                        if o.next_summary_ms.is_some_and(|at| at <= now) {
                            o.offer(Notification::summary(now, report.clone()));
                            o.next_summary_ms = o.summary_at_min.map(|m| time::next_daily(now, m));
                        }
                    }
                }
                if let (Some(at), Some(every)) = (next_head_ms, head_every) {
                    if at <= now {
                        publish_head(&log, &outlets, now).await;
                        next_head_ms = Some(now + every.as_millis() as u64);
                    }
                }
            }
        }
    }
    // Closing the outlets lets each delivery task finish its queue and end.
    drop(outlets);
}

/// Offers the log's head now to the sinks that list `log_head`. A head
/// that cannot be read is logged and tried again next time.
async fn publish_head(log: &Arc<dyn EventLog>, outlets: &[Outlet], now: u64) {
    let l = log.clone();
    match tokio::task::spawn_blocking(move || recman_events::export::head::head(&*l)).await {
        Ok(Ok(head)) => {
            let n = Notification::log_head(head, now);
            for o in outlets.iter().filter(|o| o.wants(LOG_HEAD_KIND)) {
                o.offer(n.clone());
            }
        }
        Ok(Err(e)) => tracing::error!("the log's head was not published: cannot read it: {e}"),
        Err(e) => tracing::error!("the log's head was not published: {e}"),
    }
}
