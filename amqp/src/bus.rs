//! `AmqpBus`: the `Bus` trait on one lapin connection. One confirm-mode
//! channel publishes; every consumer has its own channel (its prefetch, and
//! closing it requeues what it held). Settling: ack and nack map to AMQP;
//! reject (and a nack at the delivery limit) re-publishes the message to the
//! dead-letter exchange with the reason in a header, confirmed, then acks it.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_lite::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{FieldTable, ShortString};
use lapin::{Channel, Confirmation, Connection, ConnectionProperties};
use recman_events::bus::{
    Acker, Address, BoxFuture, Bus, BusError, Consumer, ConsumerSource, Delivery, Message,
    DEFAULT_DELIVERY_LIMIT, DELIVERY_LIMIT_REASON, ORIGIN_HEADER, REASON_HEADER,
};

use crate::convert::{self, ROUTING_KEY_HEADER};
use crate::topology;

/// How to connect and what to declare.
#[derive(Clone, Debug)]
pub struct AmqpOptions {
    /// Deliveries after which a message is dead-lettered (0 = never). Must
    /// match the queues' `x-delivery-limit` (+1) where they already exist.
    pub delivery_limit: u32,
    /// Shown in the broker's connection list.
    pub connection_name: String,
    /// Declare the exchanges and core queues on connect (needs the configure
    /// permission on them: the engine's role; workers may skip it).
    pub declare_topology: bool,
    /// How long a publish may wait for its confirm, reconnections included.
    pub publish_timeout: Duration,
    /// How long the first connection may take (lapin retries refused
    /// connections with a backoff; this bounds the whole).
    pub connect_timeout: Duration,
    /// How long the connection may stay down (lapin's automatic recovery
    /// included) before the bus gives up: consumers end, publishes fail, and
    /// the process exits for its supervisor to restart it.
    pub reconnect_timeout: Duration,
}

impl Default for AmqpOptions {
    fn default() -> Self {
        AmqpOptions {
            delivery_limit: DEFAULT_DELIVERY_LIMIT,
            connection_name: format!("recman-{}", std::process::id()),
            declare_topology: true,
            publish_timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(30),
            reconnect_timeout: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AmqpError {
    /// The URL's password is never part of the message.
    #[error("cannot connect to the broker at {url}: {reason}")]
    Connect { url: String, reason: String },
    #[error("cannot declare the recman topology on {url}: {reason}")]
    Topology { url: String, reason: String },
}

/// The AMQP bus. Cheap to clone; clones share the connection.
#[derive(Clone)]
pub struct AmqpBus {
    inner: Arc<Inner>,
}

struct Inner {
    conn: Connection,
    publisher: Channel,
    /// Queues this process declared (or found) already.
    declared: Mutex<HashSet<String>>,
    opts: AmqpOptions,
    next_consumer: AtomicU64,
    /// Set once the connection stayed down past `reconnect_timeout`.
    lost: AtomicBool,
    lost_notify: tokio::sync::Notify,
}

fn broker(e: impl std::fmt::Display) -> BusError {
    BusError::Broker(e.to_string())
}

impl AmqpBus {
    /// Connects (with automatic recovery), opens the publishing channel in
    /// confirm mode and declares the topology when `opts.declare_topology`.
    pub async fn connect(url: &str, opts: AmqpOptions) -> Result<Arc<AmqpBus>, AmqpError> {
        let redacted = crate::url::redact(url);
        let connect_err = |e: lapin::Error| AmqpError::Connect {
            url: redacted.clone(),
            reason: crate::url::scrub(&e.to_string(), url),
        };
        let props = ConnectionProperties::default()
            .enable_auto_recover()
            .with_connection_name(opts.connection_name.clone().into());
        let conn = tokio::time::timeout(opts.connect_timeout, Connection::connect(url, props))
            .await
            .map_err(|_| AmqpError::Connect {
                url: redacted.clone(),
                reason: format!(
                    "no connection within {:?} (is the broker running and reachable?)",
                    opts.connect_timeout
                ),
            })?
            .map_err(connect_err)?;
        let publisher = conn.create_channel().await.map_err(connect_err)?;
        publisher
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(connect_err)?;
        let bus = AmqpBus {
            inner: Arc::new(Inner {
                conn,
                publisher,
                declared: Mutex::new(HashSet::new()),
                opts,
                next_consumer: AtomicU64::new(1),
                lost: AtomicBool::new(false),
                lost_notify: tokio::sync::Notify::new(),
            }),
        };
        tokio::spawn(watch_connection(Arc::downgrade(&bus.inner)));
        if bus.inner.opts.declare_topology {
            bus.declare_topology().await.map_err(|e| AmqpError::Topology {
                url: redacted.clone(),
                reason: crate::url::scrub(&e.to_string(), url),
            })?;
        }
        Ok(Arc::new(bus))
    }

    /// True once the connection was down longer than `reconnect_timeout`:
    /// the bus is closed for good (restart the process).
    pub fn connection_lost(&self) -> bool {
        self.inner.lost.load(Ordering::SeqCst)
    }

    /// Declares the exchanges, the core queues and their bindings. Idempotent;
    /// a queue that exists with other arguments is an error that says so.
    pub async fn declare_topology(&self) -> Result<(), BusError> {
        let ch = self.inner.conn.create_channel().await.map_err(broker)?;
        for (name, kind) in topology::exchanges() {
            ch.exchange_declare(
                name.into(),
                kind,
                ExchangeDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .map_err(|e| broker(format!("declaring exchange {name}: {e}")))?;
        }
        let _ = ch.close(200, "topology declared".into()).await;
        for q in topology::core_queues() {
            self.ensure(&q).await?;
        }
        Ok(())
    }

    /// Declares the queue behind `addr` (and its binding) once per process.
    async fn ensure(&self, addr: &Address) -> Result<(), BusError> {
        if *addr == Address::Events {
            return Ok(());
        }
        // The core queues are the engine's (or the definitions file's) to
        // declare: a worker without configure permission on them skips them.
        if !self.inner.opts.declare_topology && topology::core_queues().contains(addr) {
            return Ok(());
        }
        let name = addr.queue_name();
        if self.lock_declared().contains(&name) {
            return Ok(());
        }
        let limit = self.inner.opts.delivery_limit;
        let ch = self.inner.conn.create_channel().await.map_err(broker)?;
        let args = topology::field_table(&topology::queue_arguments(addr, limit));
        let declared = ch
            .queue_declare(
                name.as_str().into(),
                QueueDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                args,
            )
            .await;
        if let Err(e) = declared {
            return Err(broker(format!(
                "declaring queue {name}: {e} (if it exists with other arguments, e.g. another \
                 delivery limit than {limit}, delete it or use the same settings)"
            )));
        }
        if let Some((exchange, key)) = topology::binding(addr) {
            ch.queue_bind(
                name.as_str().into(),
                exchange.into(),
                key.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|e| broker(format!("binding queue {name} to {exchange}: {e}")))?;
        }
        let _ = ch.close(200, "declared".into()).await;
        self.lock_declared().insert(name);
        Ok(())
    }

    fn lock_declared(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.inner.declared.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Publishes in order and waits for every confirm. Whatever was not
    /// confirmed (a nack, a dropped connection) is sent again after the
    /// connection recovered, until `publish_timeout`: receivers dedupe on
    /// `message_id`. A message no queue takes (unroutable) is an error.
    async fn publish_all(&self, msgs: &[(Address, Message)]) -> Result<(), BusError> {
        let mut seen = HashSet::new();
        for (to, _) in msgs {
            if seen.insert(to) {
                self.ensure(to).await?;
            }
        }
        let deadline = Instant::now() + self.inner.opts.publish_timeout;
        if self.connection_lost() {
            return Err(BusError::Closed);
        }
        let ch = &self.inner.publisher;
        let mut pending: Vec<usize> = (0..msgs.len()).collect();
        loop {
            let mut confirms = Vec::with_capacity(pending.len());
            let mut failed = Vec::new();
            let mut last_err = None;
            for &i in &pending {
                let (to, msg) = &msgs[i];
                let (exchange, mut key) = topology::route(to);
                if *to == Address::Events {
                    key = msg
                        .header(ROUTING_KEY_HEADER)
                        .map(str::to_string)
                        .unwrap_or_else(|| msg.msg_type.clone());
                }
                let opts = BasicPublishOptions {
                    mandatory: *to != Address::Events,
                    ..Default::default()
                };
                match ch
                    .basic_publish(
                        exchange.into(),
                        key.into(),
                        opts,
                        &msg.body,
                        convert::properties(msg),
                    )
                    .await
                {
                    Ok(c) => confirms.push((i, c)),
                    Err(e) => {
                        failed.push(i);
                        last_err = Some(e);
                    }
                }
            }
            for (i, c) in confirms {
                // A confirm from a connection that died never comes: bound the wait.
                let left = deadline
                    .saturating_duration_since(Instant::now())
                    .max(Duration::from_secs(1));
                let confirmed = match tokio::time::timeout(left, c).await {
                    Ok(r) => r,
                    Err(_) => {
                        failed.push(i);
                        continue;
                    }
                };
                match confirmed {
                    Ok(Confirmation::Ack(None)) | Ok(Confirmation::NotRequested) => {}
                    Ok(Confirmation::Ack(Some(_))) => {
                        let to = &msgs[i].0;
                        self.lock_declared().remove(&to.queue_name());
                        return Err(BusError::Broker(format!(
                            "message {} to {to} was not routed to any queue (is the topology declared?)",
                            msgs[i].1.message_id
                        )));
                    }
                    Ok(Confirmation::Nack(_)) => failed.push(i),
                    Err(e) => {
                        failed.push(i);
                        last_err = Some(e);
                    }
                }
            }
            if failed.is_empty() {
                return Ok(());
            }
            if self.connection_lost() {
                return Err(BusError::Closed);
            }
            if Instant::now() >= deadline {
                return Err(BusError::Broker(format!(
                    "{} message(s) not confirmed within {:?}{}",
                    failed.len(),
                    self.inner.opts.publish_timeout,
                    last_err.map(|e| format!(": {e}")).unwrap_or_default()
                )));
            }
            failed.sort_unstable();
            tracing::warn!(unconfirmed = failed.len(), error = ?last_err.as_ref().map(|e| e.to_string()), "publishing again after a broker error");
            let wait = match last_err {
                Some(e) => tokio::time::timeout(Duration::from_secs(30), ch.wait_for_recovery(e))
                    .await
                    .map(|r| r.is_err())
                    .unwrap_or(true),
                None => true,
            };
            if wait {
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            pending = failed;
        }
    }

    async fn consume_queue(&self, from: Address, prefetch: u16) -> Result<Consumer, BusError> {
        self.ensure(&from).await?;
        let ch = self.inner.conn.create_channel().await.map_err(broker)?;
        ch.basic_qos(prefetch, BasicQosOptions::default())
            .await
            .map_err(broker)?;
        let queue = if from == Address::Events {
            // One exclusive, server-named queue per subscriber: it lives as
            // long as the subscription.
            let q = ch
                .queue_declare(
                    "".into(),
                    QueueDeclareOptions {
                        exclusive: true,
                        auto_delete: true,
                        ..Default::default()
                    },
                    FieldTable::default(),
                )
                .await
                .map_err(broker)?;
            let name = q.name().as_str().to_string();
            ch.queue_bind(
                name.as_str().into(),
                topology::EVENTS_EXCHANGE.into(),
                "#".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(broker)?;
            name
        } else {
            from.queue_name()
        };
        let n = self.inner.next_consumer.fetch_add(1, Ordering::Relaxed);
        let tag = format!("{}-{n}", self.inner.opts.connection_name);
        let consumer = ch
            .basic_consume(
                queue.as_str().into(),
                ShortString::from(tag),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(broker)?;
        Ok(Consumer::new(Box::new(AmqpConsumer {
            bus: self.clone(),
            channel: ch,
            consumer,
            queue,
            closed: Arc::new(AtomicBool::new(false)),
        })))
    }

    /// A durable subscription to the events exchange: the quorum queue
    /// `queue` (created if missing, kept across restarts of the subscriber and
    /// of the broker) bound with `binding` (`#` = everything, `completed.#`, …).
    /// Unlike `consume(Address::Events)`, nothing is missed while away.
    pub async fn subscribe_events(
        &self,
        queue: &str,
        binding: &str,
        prefetch: u16,
    ) -> Result<Consumer, BusError> {
        let ch = self.inner.conn.create_channel().await.map_err(broker)?;
        let args = topology::field_table(&[("x-queue-type", topology::ArgValue::Str("quorum"))]);
        ch.queue_declare(
            queue.into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            args,
        )
        .await
        .map_err(|e| broker(format!("declaring queue {queue}: {e}")))?;
        ch.queue_bind(
            queue.into(),
            topology::EVENTS_EXCHANGE.into(),
            binding.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(broker)?;
        ch.basic_qos(prefetch, BasicQosOptions::default())
            .await
            .map_err(broker)?;
        let n = self.inner.next_consumer.fetch_add(1, Ordering::Relaxed);
        let tag = format!("{}-{n}", self.inner.opts.connection_name);
        let consumer = ch
            .basic_consume(
                queue.into(),
                ShortString::from(tag),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(broker)?;
        Ok(Consumer::new(Box::new(AmqpConsumer {
            bus: self.clone(),
            channel: ch,
            consumer,
            queue: queue.to_string(),
            closed: Arc::new(AtomicBool::new(false)),
        })))
    }

    /// Publishes `msg` to the dead-letter exchange with `reason` and `origin`.
    async fn dead_letter(&self, msg: Message, reason: &str, origin: &str) -> Result<(), BusError> {
        let msg = msg
            .with_header(REASON_HEADER, reason)
            .with_header(ORIGIN_HEADER, origin);
        self.publish_all(&[(Address::DeadLetters, msg)]).await
    }
}

impl Bus for AmqpBus {
    fn publish(&self, to: Address, msg: Message) -> BoxFuture<'_, Result<(), BusError>> {
        Box::pin(async move { self.publish_all(&[(to, msg)]).await })
    }

    fn publish_batch(&self, msgs: Vec<(Address, Message)>) -> BoxFuture<'_, Result<(), BusError>> {
        Box::pin(async move { self.publish_all(&msgs).await })
    }

    fn consume(&self, from: Address, prefetch: u16) -> BoxFuture<'_, Result<Consumer, BusError>> {
        Box::pin(self.consume_queue(from, prefetch))
    }
}

/// Watches the connection: when it stays down (not connected) longer than
/// `reconnect_timeout`, marks the bus lost and wakes every consumer.
async fn watch_connection(inner: std::sync::Weak<Inner>) {
    let mut down_since: Option<Instant> = None;
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let Some(inner) = inner.upgrade() else { return };
        if inner.conn.status().connected() {
            down_since = None;
            continue;
        }
        let since = *down_since.get_or_insert_with(Instant::now);
        if since.elapsed() >= inner.opts.reconnect_timeout {
            tracing::error!(
                after = ?inner.opts.reconnect_timeout,
                "the broker connection did not come back: giving up (the process should be restarted)"
            );
            inner.lost.store(true, Ordering::SeqCst);
            inner.lost_notify.notify_waiters();
            return;
        }
    }
}

struct AmqpConsumer {
    bus: AmqpBus,
    channel: Channel,
    consumer: lapin::Consumer,
    queue: String,
    /// Set when the consumer is dropped: its deliveries can no longer be settled.
    closed: Arc<AtomicBool>,
}

impl ConsumerSource for AmqpConsumer {
    fn recv(&mut self) -> BoxFuture<'_, Option<Delivery>> {
        Box::pin(async move {
            loop {
                if self.bus.connection_lost() {
                    return None;
                }
                let lost = self.bus.inner.lost_notify.notified();
                tokio::pin!(lost);
                lost.as_mut().enable();
                if self.bus.connection_lost() {
                    return None;
                }
                let next = tokio::select! {
                    n = self.consumer.next() => n,
                    _ = lost => return None,
                };
                match next {
                    Some(Ok(d)) => {
                        let (message, earlier) = convert::message(&d.properties, d.data);
                        let count = if earlier > 0 {
                            earlier + 1
                        } else if d.redelivered {
                            2
                        } else {
                            1
                        };
                        let acker = Box::new(AmqpAcker {
                            bus: self.bus.clone(),
                            acker: d.acker,
                            tag: d.delivery_tag,
                            closed: self.closed.clone(),
                            count,
                            message: message.clone(),
                            queue: self.queue.clone(),
                        });
                        return Some(Delivery::new(message, d.redelivered || count > 1, count, acker));
                    }
                    Some(Err(e)) => {
                        // With auto recovery the consumer comes back on the
                        // recovered channel; keep reading.
                        tracing::warn!(queue = %self.queue, error = %e, "consumer error; waiting for recovery");
                        if self.channel.wait_for_recovery(e).await.is_err() {
                            tokio::time::sleep(Duration::from_millis(500)).await;
                        }
                    }
                    None => return None,
                }
            }
        })
    }
}

impl Drop for AmqpConsumer {
    fn drop(&mut self) {
        self.closed.store(true, Ordering::SeqCst);
        // Closing the channel hands every unsettled delivery back to the queue.
        let ch = self.channel.clone();
        if let Ok(h) = tokio::runtime::Handle::try_current() {
            h.spawn(async move {
                let _ = ch.close(200, "consumer dropped".into()).await;
            });
        }
    }
}

/// An ack or nack on a connection that died never completes: give up after
/// this (the broker requeues the message when it notices).
const SETTLE_TIMEOUT: Duration = Duration::from_secs(10);

struct AmqpAcker {
    bus: AmqpBus,
    acker: lapin::Acker,
    tag: u64,
    closed: Arc<AtomicBool>,
    count: u32,
    message: Message,
    queue: String,
}

impl AmqpAcker {
    fn usable(&self) -> Result<(), BusError> {
        if self.closed.load(Ordering::SeqCst) || !self.acker.usable() {
            return Err(BusError::UnknownDelivery(self.tag));
        }
        Ok(())
    }

    async fn ack_now(&self) -> Result<(), BusError> {
        self.usable()?;
        let r = tokio::time::timeout(SETTLE_TIMEOUT, self.acker.ack(BasicAckOptions::default()))
            .await
            .map_err(|_| BusError::UnknownDelivery(self.tag))?;
        match r {
            Ok(true) => Ok(()),
            Ok(false) => Err(BusError::UnknownDelivery(self.tag)),
            Err(e) => Err(broker(e)),
        }
    }

    async fn requeue(&self) -> Result<(), BusError> {
        self.usable()?;
        let opts = BasicNackOptions {
            requeue: true,
            ..Default::default()
        };
        let r = tokio::time::timeout(SETTLE_TIMEOUT, self.acker.nack(opts))
            .await
            .map_err(|_| BusError::UnknownDelivery(self.tag))?;
        match r {
            Ok(true) => Ok(()),
            Ok(false) => Err(BusError::UnknownDelivery(self.tag)),
            Err(e) => Err(broker(e)),
        }
    }

    async fn dead_letter(self, reason: String) -> Result<(), BusError> {
        self.usable()?;
        self.bus
            .dead_letter(self.message.clone(), &reason, &self.queue)
            .await?;
        self.ack_now().await
    }
}

impl Acker for AmqpAcker {
    fn ack(self: Box<Self>) -> BoxFuture<'static, Result<(), BusError>> {
        Box::pin(async move { self.ack_now().await })
    }

    fn nack(self: Box<Self>) -> BoxFuture<'static, Result<(), BusError>> {
        Box::pin(async move {
            let limit = self.bus.inner.opts.delivery_limit;
            if limit > 0 && self.count >= limit && self.queue != Address::DeadLetters.queue_name() {
                self.dead_letter(DELIVERY_LIMIT_REASON.to_string()).await
            } else {
                self.requeue().await
            }
        })
    }

    fn reject(self: Box<Self>, reason: String) -> BoxFuture<'static, Result<(), BusError>> {
        Box::pin(self.dead_letter(reason))
    }

    fn dropped(self: Box<Self>) {
        if self.usable().is_err() {
            return;
        }
        if let Ok(h) = tokio::runtime::Handle::try_current() {
            h.spawn(async move {
                let _ = self.requeue().await;
            });
        }
    }
}
