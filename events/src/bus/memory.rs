//! The in-process bus: tokio primitives that keep AMQP's semantics (per-queue
//! FIFO, competing consumers, prefetch, manual ack, requeue on nack or drop,
//! a delivery limit, a dead-letter queue, a fan-out for events).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use tokio::sync::Notify;

use super::{
    Acker, Address, Bus, BusError, Consumer, ConsumerSource, Delivery, Message, DEFAULT_DELIVERY_LIMIT,
    DELIVERY_LIMIT_REASON, ORIGIN_HEADER, REASON_HEADER,
};
use crate::log::BoxFuture;

/// An in-process message bus. Cheap to clone; clones share the queues.
#[derive(Clone)]
pub struct MemoryBus {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Mutex<Registry>,
    delivery_limit: u32,
    dlq: Arc<Queue>,
    next_consumer: AtomicU64,
}

#[derive(Default)]
struct Registry {
    queues: HashMap<Address, Arc<Queue>>,
    /// One private queue per `Events` consumer, dropped with it.
    subscribers: Vec<Weak<Queue>>,
    closed: bool,
}

struct Queue {
    name: String,
    state: Mutex<QueueState>,
    notify: Notify,
    /// Where refused messages go; `None` for the dead-letter queue itself.
    dlq: Option<Arc<Queue>>,
    delivery_limit: u32,
    /// Consumers attached now (`Bus::consumed`).
    consumers: AtomicUsize,
}

#[derive(Default)]
struct QueueState {
    ready: VecDeque<Pending>,
    unacked: HashMap<u64, Unacked>,
    held: HashMap<u64, usize>,
    next_tag: u64,
    next_seq: u64,
    closed: bool,
}

struct Pending {
    /// Publish order, so requeued messages go back to their place.
    seq: u64,
    message: Message,
    /// Deliveries so far.
    deliveries: u32,
}

struct Unacked {
    pending: Pending,
    consumer: u64,
}

enum Settle {
    Ack,
    Requeue,
    DeadLetter(String),
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves plain data behind: keep going.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Queue {
    fn new(name: String, dlq: Option<Arc<Queue>>, delivery_limit: u32) -> Arc<Queue> {
        Arc::new(Queue {
            name,
            state: Mutex::new(QueueState::default()),
            notify: Notify::new(),
            dlq,
            delivery_limit,
            consumers: AtomicUsize::new(0),
        })
    }

    fn push(&self, message: Message) -> Result<(), BusError> {
        {
            let mut st = lock(&self.state);
            if st.closed {
                return Err(BusError::Closed);
            }
            let seq = st.next_seq;
            st.next_seq += 1;
            st.ready.push_back(Pending {
                seq,
                message,
                deliveries: 0,
            });
        }
        self.notify.notify_waiters();
        Ok(())
    }

    /// Takes the next message for `consumer` if it has room under `prefetch`.
    fn try_take(&self, consumer: u64, prefetch: u16) -> Result<Option<(u64, Message, u32)>, ()> {
        let mut st = lock(&self.state);
        if st.closed {
            return Err(());
        }
        let held = st.held.get(&consumer).copied().unwrap_or(0);
        if prefetch != 0 && held >= prefetch as usize {
            return Ok(None);
        }
        let Some(mut p) = st.ready.pop_front() else {
            return Ok(None);
        };
        p.deliveries += 1;
        let tag = st.next_tag;
        st.next_tag += 1;
        let out = (tag, p.message.clone(), p.deliveries);
        st.unacked.insert(tag, Unacked { pending: p, consumer });
        *st.held.entry(consumer).or_insert(0) += 1;
        Ok(Some(out))
    }

    fn settle(&self, tag: u64, how: Settle) -> Result<(), BusError> {
        let dead = {
            let mut st = lock(&self.state);
            let Some(u) = st.unacked.remove(&tag) else {
                return Err(BusError::UnknownDelivery(tag));
            };
            if let Some(h) = st.held.get_mut(&u.consumer) {
                *h = h.saturating_sub(1);
            }
            match how {
                Settle::Ack => None,
                Settle::DeadLetter(reason) => Some((u.pending, reason)),
                Settle::Requeue => self.requeue_locked(&mut st, u.pending),
            }
        };
        self.notify.notify_waiters();
        if let Some((p, reason)) = dead {
            self.dead_letter(p, &reason);
        }
        Ok(())
    }

    /// Puts a message back at its place, or hands it back for dead-lettering
    /// when it reached the delivery limit.
    fn requeue_locked(&self, st: &mut QueueState, p: Pending) -> Option<(Pending, String)> {
        if self.dlq.is_some() && self.delivery_limit > 0 && p.deliveries >= self.delivery_limit {
            return Some((p, DELIVERY_LIMIT_REASON.to_string()));
        }
        let at = st
            .ready
            .iter()
            .position(|q| q.seq > p.seq)
            .unwrap_or(st.ready.len());
        st.ready.insert(at, p);
        None
    }

    fn dead_letter(&self, p: Pending, reason: &str) {
        match &self.dlq {
            Some(dlq) => {
                let msg = p
                    .message
                    .with_header(REASON_HEADER, reason)
                    .with_header(ORIGIN_HEADER, self.name.clone());
                if dlq.push(msg).is_err() {
                    tracing::warn!(queue = %self.name, reason, "bus closed: dead letter dropped");
                }
            }
            None => tracing::warn!(
                message_id = %p.message.message_id,
                reason,
                "message refused on the dead-letter queue: dropped"
            ),
        }
    }

    /// A consumer went away: everything it held goes back to the queue.
    fn consumer_gone(&self, consumer: u64) {
        self.consumers.fetch_sub(1, Ordering::SeqCst);
        let dead: Vec<(Pending, String)> = {
            let mut st = lock(&self.state);
            st.held.remove(&consumer);
            let tags: Vec<u64> = st
                .unacked
                .iter()
                .filter(|(_, u)| u.consumer == consumer)
                .map(|(t, _)| *t)
                .collect();
            let mut dead = Vec::new();
            for t in tags {
                if let Some(u) = st.unacked.remove(&t) {
                    if let Some(d) = self.requeue_locked(&mut st, u.pending) {
                        dead.push(d);
                    }
                }
            }
            dead
        };
        self.notify.notify_waiters();
        for (p, reason) in dead {
            self.dead_letter(p, &reason);
        }
    }

    fn close(&self) {
        lock(&self.state).closed = true;
        self.notify.notify_waiters();
    }

    fn depth(&self) -> (usize, usize) {
        let st = lock(&self.state);
        (st.ready.len(), st.unacked.len())
    }
}

struct MemoryAcker {
    queue: Arc<Queue>,
    tag: u64,
}

impl Acker for MemoryAcker {
    fn ack(self: Box<Self>) -> BoxFuture<'static, Result<(), BusError>> {
        let r = self.queue.settle(self.tag, Settle::Ack);
        Box::pin(async move { r })
    }

    fn nack(self: Box<Self>) -> BoxFuture<'static, Result<(), BusError>> {
        let r = self.queue.settle(self.tag, Settle::Requeue);
        Box::pin(async move { r })
    }

    fn reject(self: Box<Self>, reason: String) -> BoxFuture<'static, Result<(), BusError>> {
        let r = self.queue.settle(self.tag, Settle::DeadLetter(reason));
        Box::pin(async move { r })
    }

    fn dropped(self: Box<Self>) {
        // Already settled or requeued with its consumer: nothing to do.
        let _ = self.queue.settle(self.tag, Settle::Requeue);
    }
}

struct MemoryConsumer {
    queue: Arc<Queue>,
    id: u64,
    prefetch: u16,
}

impl ConsumerSource for MemoryConsumer {
    fn recv(&mut self) -> BoxFuture<'_, Option<Delivery>> {
        Box::pin(async move {
            loop {
                let notified = self.queue.notify.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                match self.queue.try_take(self.id, self.prefetch) {
                    Err(()) => return None,
                    Ok(Some((tag, message, count))) => {
                        let acker = Box::new(MemoryAcker {
                            queue: self.queue.clone(),
                            tag,
                        });
                        return Some(Delivery::new(message, count > 1, count, acker));
                    }
                    Ok(None) => notified.await,
                }
            }
        })
    }
}

impl Drop for MemoryConsumer {
    fn drop(&mut self) {
        self.queue.consumer_gone(self.id);
    }
}

impl Default for MemoryBus {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryBus {
    /// A bus with the default delivery limit (5).
    pub fn new() -> Self {
        Self::with_delivery_limit(DEFAULT_DELIVERY_LIMIT)
    }

    /// A bus whose queues dead-letter a message after `limit` deliveries
    /// (0 = never).
    pub fn with_delivery_limit(limit: u32) -> Self {
        let dlq = Queue::new(Address::DeadLetters.queue_name(), None, 0);
        let mut registry = Registry::default();
        registry.queues.insert(Address::DeadLetters, dlq.clone());
        MemoryBus {
            inner: Arc::new(Inner {
                registry: Mutex::new(registry),
                delivery_limit: limit,
                dlq,
                next_consumer: AtomicU64::new(1),
            }),
        }
    }

    /// The queue behind `addr`, created on first use (never for `Events`).
    fn queue(&self, reg: &mut Registry, addr: &Address) -> Arc<Queue> {
        reg.queues
            .entry(addr.clone())
            .or_insert_with(|| {
                Queue::new(
                    addr.queue_name(),
                    Some(self.inner.dlq.clone()),
                    self.inner.delivery_limit,
                )
            })
            .clone()
    }

    fn publish_one(&self, to: Address, msg: Message) -> Result<(), BusError> {
        let mut reg = lock(&self.inner.registry);
        if reg.closed {
            return Err(BusError::Closed);
        }
        if to == Address::Events {
            reg.subscribers.retain(|w| w.strong_count() > 0);
            let subs: Vec<Arc<Queue>> = reg.subscribers.iter().filter_map(Weak::upgrade).collect();
            drop(reg);
            for q in subs {
                // A subscriber that closed meanwhile just misses it.
                let _ = q.push(msg.clone());
            }
            return Ok(());
        }
        let q = self.queue(&mut reg, &to);
        drop(reg);
        q.push(msg)
    }

    /// Messages waiting (not delivered) and delivered-but-unsettled on `addr`.
    /// `Events` has no shared queue: always `(0, 0)`.
    pub fn depth(&self, addr: &Address) -> (usize, usize) {
        let reg = lock(&self.inner.registry);
        reg.queues.get(addr).map(|q| q.depth()).unwrap_or((0, 0))
    }

    /// Closes every queue: consumers get `None`, publishes fail.
    pub fn close(&self) {
        let mut reg = lock(&self.inner.registry);
        reg.closed = true;
        for q in reg.queues.values() {
            q.close();
        }
        for q in reg.subscribers.iter().filter_map(Weak::upgrade) {
            q.close();
        }
    }
}

impl Bus for MemoryBus {
    fn publish(&self, to: Address, msg: Message) -> BoxFuture<'_, Result<(), BusError>> {
        let r = self.publish_one(to, msg);
        Box::pin(async move { r })
    }

    fn publish_batch(&self, msgs: Vec<(Address, Message)>) -> BoxFuture<'_, Result<(), BusError>> {
        let r = msgs
            .into_iter()
            .try_for_each(|(to, msg)| self.publish_one(to, msg));
        Box::pin(async move { r })
    }

    fn events_subscribed(&self) -> Option<bool> {
        let reg = lock(&self.inner.registry);
        Some(reg.subscribers.iter().any(|w| w.strong_count() > 0))
    }

    fn consumed(&self, addr: &Address) -> Option<bool> {
        let reg = lock(&self.inner.registry);
        Some(
            reg.queues
                .get(addr)
                .is_some_and(|q| q.consumers.load(Ordering::SeqCst) > 0),
        )
    }

    fn consume(&self, from: Address, prefetch: u16) -> BoxFuture<'_, Result<Consumer, BusError>> {
        let r = (|| {
            let mut reg = lock(&self.inner.registry);
            if reg.closed {
                return Err(BusError::Closed);
            }
            let queue = if from == Address::Events {
                let q = Queue::new(
                    format!(
                        "{}.{}",
                        from.queue_name(),
                        self.inner.next_consumer.load(Ordering::Relaxed)
                    ),
                    Some(self.inner.dlq.clone()),
                    self.inner.delivery_limit,
                );
                reg.subscribers.push(Arc::downgrade(&q));
                q
            } else {
                self.queue(&mut reg, &from)
            };
            let id = self.inner.next_consumer.fetch_add(1, Ordering::Relaxed);
            queue.consumers.fetch_add(1, Ordering::SeqCst);
            Ok(Consumer::new(Box::new(MemoryConsumer { queue, id, prefetch })))
        })();
        Box::pin(async move { r })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(i: u64) -> Message {
        Message::new(
            super::super::msg_type::EVENT,
            format!("event/{i}"),
            vec![0u8; 300],
        )
    }

    /// The events relay publishes every event here, subscribers or not: with
    /// none, nothing is kept (no queue, no growth) and publishing never waits.
    #[tokio::test]
    async fn consumed_says_whether_a_queue_has_a_consumer_now() {
        let bus = MemoryBus::new();
        let w = Address::Worker(crate::WorkerId::from("local-1"));
        assert_eq!(bus.consumed(&w), Some(false), "never declared");
        let c = bus.consume(w.clone(), 1).await.unwrap();
        assert_eq!(bus.consumed(&w), Some(true));
        drop(c);
        assert_eq!(bus.consumed(&w), Some(false), "its consumer went away");
    }

    #[tokio::test]
    async fn events_nobody_subscribes_to_are_dropped_not_kept() {
        let bus = MemoryBus::new();
        for i in 0..10_000 {
            bus.publish(Address::Events, event(i)).await.unwrap();
        }
        assert_eq!(bus.depth(&Address::Events), (0, 0));
        assert_eq!(bus.events_subscribed(), Some(false));
        {
            let reg = lock(&bus.inner.registry);
            assert!(reg.subscribers.is_empty());
            assert!(!reg.queues.contains_key(&Address::Events));
        }
        // A subscriber gets what is published after it subscribed, and its
        // queue goes with it.
        let mut sub = bus.consume(Address::Events, 0).await.unwrap();
        assert_eq!(bus.events_subscribed(), Some(true));
        bus.publish(Address::Events, event(10_000)).await.unwrap();
        let d = sub.recv().await.unwrap();
        assert_eq!(d.message.message_id, "event/10000");
        d.ack().await.unwrap();
        drop(sub);
        assert_eq!(bus.events_subscribed(), Some(false));
        for i in 10_001..20_000 {
            bus.publish(Address::Events, event(i)).await.unwrap();
        }
        assert!(
            lock(&bus.inner.registry).subscribers.is_empty(),
            "the dropped subscriber's queue is gone"
        );
    }
}
