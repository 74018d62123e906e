//! The `Bus` trait: how the engine, the workers and other systems exchange
//! messages, with AMQP's semantics (confirmed publish, prefetch, manual ack,
//! redelivery, a delivery limit, dead letters) whatever the transport.
//!
//! Implementations: `memory` (in-process, the embedded default) and the AMQP
//! bus (crate `recman-amqp`). Both must pass the suite in [`contract`].

#[cfg(feature = "contract-tests")]
pub mod contract;
pub mod memory;

use std::collections::BTreeMap;
use std::fmt;

use crate::ids::{PoolName, WorkerId};
pub use crate::log::BoxFuture;
pub use memory::MemoryBus;

/// Header that carries the reason a message was dead-lettered.
pub const REASON_HEADER: &str = "x-recman-reason";
/// Header naming the queue a dead-lettered message came from.
pub const ORIGIN_HEADER: &str = "x-recman-origin";
/// Header that sets the routing key of a message published to `Events`
/// (`<event kind>.<target>`, or `batch`); it travels with the message.
pub const ROUTING_KEY_HEADER: &str = "x-recman-routing-key";
/// Further routing keys of an event (comma-separated; a consistency group's
/// other member targets). Over RabbitMQ they become the `CC` header
/// (sender-selected distribution: each bound queue gets the message once).
pub const ALSO_ROUTE_HEADER: &str = "x-recman-also-routing-keys";
/// Header that carries the sender's user as the broker validated it (AMQP:
/// the `user_id` property, which RabbitMQ refuses unless it equals the
/// connection's user). Set by the bus on receipt only: a sender's own
/// header of this name is dropped. The engine records `amqp:<user>` as
/// `by` of what the message causes.
pub const USER_ID_HEADER: &str = "x-recman-user-id";
/// Deliveries after which a message that keeps coming back is dead-lettered.
pub const DEFAULT_DELIVERY_LIMIT: u32 = 5;
/// The reason given when a message is dead-lettered by the delivery limit.
pub const DELIVERY_LIMIT_REASON: &str = "delivery limit";

/// The `msg_type` values recman uses (the AMQP `type` property).
pub mod msg_type {
    pub const REQUEST: &str = "request";
    pub const COMMAND: &str = "command";
    pub const REPORT: &str = "report";
    pub const EVENT: &str = "event";
}

/// Where a message goes or comes from. Every address but `Events` is one
/// queue shared by its consumers (they compete); `Events` is a fan-out where
/// each consumer gets its own copy of what is published after it subscribed.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Address {
    /// Snapshot requests from other systems → the engine.
    Requests,
    /// Commands for any worker of a pool.
    Pool(PoolName),
    /// Commands for one worker (thaws go back to the worker that froze).
    Worker(WorkerId),
    /// Step reports → the engine.
    Reports,
    /// Every appended event, for audit, monitoring and other systems.
    Events,
    /// Messages refused or redelivered too often, with a reason header.
    DeadLetters,
}

impl Address {
    /// The queue (or, for `Events`, exchange) name in the AMQP topology.
    pub fn queue_name(&self) -> String {
        match self {
            Address::Requests => "recman.requests".into(),
            Address::Pool(p) => format!("recman.pool.{p}"),
            Address::Worker(w) => format!("recman.worker.{w}"),
            Address::Reports => "recman.reports".into(),
            Address::Events => "recman.events".into(),
            Address::DeadLetters => "recman.dlq".into(),
        }
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.queue_name())
    }
}

/// One message on the bus: an opaque body plus the AMQP properties recman uses.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Message {
    /// Deterministic id, so receivers can dedupe redeliveries and re-sends.
    pub message_id: String,
    /// `request`, `command`, `report` or `event` (see [`msg_type`]).
    pub msg_type: String,
    /// The payload: JSON wire messages (`crate::wire`).
    pub body: Vec<u8>,
    /// Extra headers (`traceparent`, dead-letter reason, …).
    pub headers: BTreeMap<String, String>,
}

impl Message {
    pub fn new(msg_type: impl Into<String>, message_id: impl Into<String>, body: impl Into<Vec<u8>>) -> Self {
        Message {
            message_id: message_id.into(),
            msg_type: msg_type.into(),
            body: body.into(),
            headers: BTreeMap::new(),
        }
    }

    /// Adds (or replaces) a header.
    pub fn with_header(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.insert(key.into(), value.into());
        self
    }

    pub fn header(&self, key: &str) -> Option<&str> {
        self.headers.get(key).map(String::as_str)
    }
}

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum BusError {
    #[error("the bus is closed")]
    Closed,
    /// The delivery was already settled, or its consumer (channel) went away
    /// and the message was requeued for someone else.
    #[error("delivery {0} is no longer held by this consumer (it was settled or requeued)")]
    UnknownDelivery(u64),
    #[error("broker error: {0}")]
    Broker(String),
}

/// How a bus implementation settles one delivery. Used through [`Delivery`].
pub trait Acker: Send {
    fn ack(self: Box<Self>) -> BoxFuture<'static, Result<(), BusError>>;
    /// Requeue (or dead-letter once past the delivery limit).
    fn nack(self: Box<Self>) -> BoxFuture<'static, Result<(), BusError>>;
    /// Dead-letter now with `reason`.
    fn reject(self: Box<Self>, reason: String) -> BoxFuture<'static, Result<(), BusError>>;
    /// The delivery was dropped unsettled: requeue, as a nack would.
    fn dropped(self: Box<Self>);
}

/// A message handed to a consumer. Settle it with `ack`, `nack` or `reject`;
/// dropping it unsettled requeues it.
pub struct Delivery {
    pub message: Message,
    /// True when the message was delivered before (to anyone).
    pub redelivered: bool,
    /// How many times it has been delivered, this time included (1 = first).
    pub delivery_count: u32,
    acker: Option<Box<dyn Acker>>,
}

impl fmt::Debug for Delivery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Delivery")
            .field("message", &self.message)
            .field("redelivered", &self.redelivered)
            .field("delivery_count", &self.delivery_count)
            .field("settled", &self.acker.is_none())
            .finish()
    }
}

impl Delivery {
    /// For bus implementations.
    pub fn new(message: Message, redelivered: bool, delivery_count: u32, acker: Box<dyn Acker>) -> Self {
        Delivery {
            message,
            redelivered,
            delivery_count,
            acker: Some(acker),
        }
    }

    /// Done with it: the broker forgets the message.
    pub async fn ack(mut self) -> Result<(), BusError> {
        match self.acker.take() {
            Some(a) => a.ack().await,
            None => Err(BusError::UnknownDelivery(0)),
        }
    }

    /// Give it back: it is redelivered (`redelivered = true`), or
    /// dead-lettered with reason "delivery limit" once past the limit.
    pub async fn nack(mut self) -> Result<(), BusError> {
        match self.acker.take() {
            Some(a) => a.nack().await,
            None => Err(BusError::UnknownDelivery(0)),
        }
    }

    /// Refuse it for good: dead-lettered now, `reason` in [`REASON_HEADER`].
    pub async fn reject(mut self, reason: &str) -> Result<(), BusError> {
        match self.acker.take() {
            Some(a) => a.reject(reason.to_string()).await,
            None => Err(BusError::UnknownDelivery(0)),
        }
    }
}

impl Drop for Delivery {
    fn drop(&mut self) {
        if let Some(a) = self.acker.take() {
            a.dropped();
        }
    }
}

/// What a bus implementation provides behind a [`Consumer`].
pub trait ConsumerSource: Send {
    fn recv(&mut self) -> BoxFuture<'_, Option<Delivery>>;
}

/// A subscription to one address. Dropping it requeues every delivery it
/// holds that was not settled yet (as closing an AMQP channel does).
pub struct Consumer {
    source: Box<dyn ConsumerSource>,
}

impl Consumer {
    /// For bus implementations.
    pub fn new(source: Box<dyn ConsumerSource>) -> Self {
        Consumer { source }
    }

    /// The next delivery, waiting for one; `None` once the bus is closed.
    /// Waits while this consumer holds `prefetch` unsettled deliveries.
    pub async fn recv(&mut self) -> Option<Delivery> {
        self.source.recv().await
    }
}

/// A message bus with AMQP semantics. Object-safe: share it as `Arc<dyn Bus>`.
pub trait Bus: Send + Sync + 'static {
    /// Returns once the broker has the message (publisher confirm). A queue
    /// that nobody consumes yet keeps it; `Events` with no subscriber drops it.
    fn publish(&self, to: Address, msg: Message) -> BoxFuture<'_, Result<(), BusError>>;
    /// Publishes in order; returns once all are confirmed.
    fn publish_batch(&self, msgs: Vec<(Address, Message)>) -> BoxFuture<'_, Result<(), BusError>>;
    /// Starts consuming `from` with at most `prefetch` unsettled deliveries
    /// (0 = unlimited). Several consumers of one queue compete for messages.
    fn consume(&self, from: Address, prefetch: u16) -> BoxFuture<'_, Result<Consumer, BusError>>;
    /// Whether anyone subscribes to `Events` right now, when the bus can
    /// tell: the in-process bus can (`Some`), a broker cannot (`None`, the
    /// default: other processes may). The events relay builds no messages
    /// that would be dropped.
    fn events_subscribed(&self) -> Option<bool> {
        None
    }
    /// Whether a queue has a consumer right now, when the bus can tell (the
    /// in-process bus: `Some`; a broker: `None`). The engine sends a
    /// command meant for one worker to its pool when that worker is gone.
    fn consumed(&self, _addr: &Address) -> Option<bool> {
        None
    }
}
