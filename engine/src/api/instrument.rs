//! Wrappers that measure what the log projection cannot see: event log append
//! latency (`TimedLog`) and bus redeliveries and dead letters (`MeteredBus`).

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use recman_events::bus::{BoxFuture, BusError, ConsumerSource};
use recman_events::log::{RawRecord, Subscription};
use recman_events::{
    Address, Backend, Bus, Consumer, Delivery, Event, EventLog, JobId, LogError, Message, StoredEvent,
};

use crate::view::metrics::{self, Histogram, APPEND_BUCKETS};

/// Process counters for `/metrics`.
pub struct Stats {
    append: Mutex<Histogram>,
    pub redeliveries: AtomicU64,
    pub dead_letters: AtomicU64,
    /// The notifier's counters, once it runs (`[[notify]]`).
    pub notify: std::sync::OnceLock<Arc<recman_notify::Metrics>>,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            append: Mutex::new(Histogram::new(APPEND_BUCKETS)),
            redeliveries: AtomicU64::new(0),
            dead_letters: AtomicU64::new(0),
            notify: std::sync::OnceLock::new(),
        }
    }
}

impl Stats {
    pub fn render(&self, out: &mut String) {
        metrics::header(
            out,
            "recman_log_append_seconds",
            "histogram",
            "Event log appends, until durable.",
        );
        if let Ok(h) = self.append.lock() {
            h.render(out, "recman_log_append_seconds", "");
        }
        metrics::header(
            out,
            "recman_bus_redeliveries_total",
            "counter",
            "Deliveries that were redelivered.",
        );
        let _ = writeln!(
            out,
            "recman_bus_redeliveries_total {}",
            self.redeliveries.load(Ordering::Relaxed)
        );
        metrics::header(
            out,
            "recman_bus_dead_letters_total",
            "counter",
            "Messages dead-lettered.",
        );
        let _ = writeln!(
            out,
            "recman_bus_dead_letters_total {}",
            self.dead_letters.load(Ordering::Relaxed)
        );
        if let Some(n) = self.notify.get() {
            n.render(out);
        }
    }
}

/// An `EventLog` that times every append.
pub struct TimedLog {
    pub inner: Arc<dyn EventLog>,
    pub stats: Arc<Stats>,
}

impl EventLog for TimedLog {
    fn append(&self, events: Vec<Event>) -> BoxFuture<'_, Result<Vec<u64>, LogError>> {
        Box::pin(async move {
            let t = Instant::now();
            let r = self.inner.append(events).await;
            if let Ok(mut h) = self.stats.append.lock() {
                h.observe(t.elapsed().as_secs_f64());
            }
            r
        })
    }
    fn read(&self, from: u64, max: usize) -> Result<Vec<StoredEvent>, LogError> {
        self.inner.read(from, max)
    }
    fn read_job(&self, job: JobId) -> Result<Vec<StoredEvent>, LogError> {
        self.inner.read_job(job)
    }
    fn read_raw(&self, from: u64, max: usize) -> Result<Vec<RawRecord>, LogError> {
        self.inner.read_raw(from, max)
    }
    fn scan_raw(&self, from: u64, max: usize, f: &mut dyn FnMut(u64, &[u8])) -> Result<usize, LogError> {
        self.inner.scan_raw(from, max, f)
    }
    fn subscribe(&self, from: u64) -> Subscription {
        self.inner.subscribe(from)
    }
    fn last_seq(&self) -> u64 {
        self.inner.last_seq()
    }
    fn backend(&self) -> Backend {
        self.inner.backend()
    }
    fn index_damage(&self) -> Vec<(u64, String)> {
        self.inner.index_damage()
    }
    fn lease(&self) -> Option<Arc<recman_events::log::lease::Lease>> {
        self.inner.lease()
    }
    fn archive(
        &self,
        before: u64,
        per_segment: usize,
    ) -> Result<recman_events::log::segments::ArchiveReport, LogError> {
        self.inner.archive(before, per_segment)
    }
    fn segments(&self) -> Result<Vec<recman_events::log::segments::SegmentInfo>, LogError> {
        self.inner.segments()
    }
}

/// A `Bus` that counts redelivered deliveries on every consumer.
pub struct MeteredBus {
    pub inner: Arc<dyn Bus>,
    pub stats: Arc<Stats>,
}

struct Counting {
    inner: Consumer,
    stats: Arc<Stats>,
}

impl ConsumerSource for Counting {
    fn recv(&mut self) -> BoxFuture<'_, Option<Delivery>> {
        Box::pin(async move {
            let d = self.inner.recv().await?;
            if d.redelivered {
                self.stats.redeliveries.fetch_add(1, Ordering::Relaxed);
            }
            Some(d)
        })
    }
}

impl Bus for MeteredBus {
    fn publish(&self, to: Address, msg: Message) -> BoxFuture<'_, Result<(), BusError>> {
        self.inner.publish(to, msg)
    }
    fn publish_batch(&self, msgs: Vec<(Address, Message)>) -> BoxFuture<'_, Result<(), BusError>> {
        self.inner.publish_batch(msgs)
    }
    fn events_subscribed(&self) -> Option<bool> {
        self.inner.events_subscribed()
    }
    fn consumed(&self, addr: &Address) -> Option<bool> {
        self.inner.consumed(addr)
    }
    fn consume(&self, from: Address, prefetch: u16) -> BoxFuture<'_, Result<Consumer, BusError>> {
        Box::pin(async move {
            let inner = self.inner.consume(from, prefetch).await?;
            Ok(Consumer::new(Box::new(Counting {
                inner,
                stats: self.stats.clone(),
            })))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use recman_events::bus::memory::MemoryBus;

    /// The engine asks the bus whether a worker is connected (a command for
    /// a worker that is gone goes to its pool; a mount `--on` one is
    /// refused): the metered bus must answer as the bus it wraps.
    #[tokio::test]
    async fn the_metered_bus_says_whether_a_queue_is_consumed() {
        let bus = MeteredBus {
            inner: Arc::new(MemoryBus::new()),
            stats: Arc::new(Stats::default()),
        };
        let w = Address::Worker(recman_events::WorkerId::from("w-1"));
        assert_eq!(bus.consumed(&w), Some(false));
        let c = bus.consume(w.clone(), 1).await.unwrap();
        assert_eq!(bus.consumed(&w), Some(true));
        drop(c);
        assert_eq!(bus.consumed(&w), Some(false));
    }
}
