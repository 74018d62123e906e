//! `AmqpBus`: the `Bus` trait on one lapin connection. One confirm-mode
//! channel publishes; every consumer has its own channel (its prefetch, and
//! closing it requeues what it held). Settling: ack and nack map to AMQP;
//! reject (and a nack at the delivery limit) re-publishes the message to the
//! dead-letter exchange with the reason in a header, confirmed, then acks it.
//!
//! Recovery is ours, not lapin's: lapin 4.12's automatic recovery sometimes
//! gave up after a `rabbitmqctl stop_app`/`start_app` and left a publish
//! waiting forever (seen in CI). Here a supervisor task opens a new connection
//! when the current one fails, redeclares the topology, and bumps a
//! generation; publishes that were not confirmed are sent again on it and
//! consumers subscribe again (their old delivery tags are void: the broker
//! redelivers those messages).
//!
//! A cluster is given as several URLs (one per node): the first connection
//! goes to the first node that answers, and a reconnection tries the next
//! node after the one that failed, round the list, so a dead or paused node
//! (a missed heartbeat) costs one reconnection, not the bus.

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
    DEFAULT_DELIVERY_LIMIT, DELIVERY_LIMIT_REASON, ORIGIN_HEADER, REASON_HEADER, ROUTING_KEY_HEADER,
};

use crate::convert;
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
    /// How long the connection may stay down (reconnection attempts
    /// included) before the bus gives up: consumers end, publishes fail, and
    /// the process exits for its supervisor to restart it.
    pub reconnect_timeout: Duration,
    /// PEM file with the CA certificate(s) that signed the broker's
    /// certificate (`amqps://` with a private CA); read at every connect.
    /// Without it, the system's CA store.
    pub ca_file: Option<std::path::PathBuf>,
    /// `x-quorum-initial-group-size` of the queues this bus declares: the
    /// replicas of each quorum queue in a cluster (3 for a three-node
    /// cluster). `None` leaves it to the broker (one node: one replica).
    /// Every process on one broker must use the same value: RabbitMQ refuses
    /// to declare a queue again with other arguments.
    pub quorum_group_size: Option<u32>,
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
            ca_file: None,
            quorum_group_size: None,
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

/// One connection and its confirm-mode publishing channel.
struct Link {
    conn: Connection,
    publisher: Channel,
    /// Counts connections: 0 is the first.
    generation: u64,
    /// Which of the bus's URLs it goes to.
    node: usize,
}

impl Link {
    fn up(&self) -> bool {
        self.conn.status().connected() && self.publisher.status().connected()
    }
}

struct Inner {
    /// One URL per broker node (one for a single broker).
    urls: Vec<String>,
    link: std::sync::RwLock<Arc<Link>>,
    /// The generation of the current link; consumers and publishers wait on it.
    generation: tokio::sync::watch::Sender<u64>,
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
    /// Connects (recovered by `supervise` from then on), opens the publishing channel in
    /// confirm mode and declares the topology when `opts.declare_topology`.
    pub async fn connect(url: &str, opts: AmqpOptions) -> Result<Arc<AmqpBus>, AmqpError> {
        Self::connect_any(&[url.to_string()], opts).await
    }

    /// [`AmqpBus::connect`] to a cluster: `urls` names its nodes (one URL
    /// each). Connects to the first that answers and, when that node goes
    /// away, to the next.
    pub async fn connect_any(urls: &[String], opts: AmqpOptions) -> Result<Arc<AmqpBus>, AmqpError> {
        if urls.is_empty() {
            return Err(AmqpError::Connect {
                url: String::new(),
                reason: "no broker URL given".into(),
            });
        }
        let redacted = urls
            .iter()
            .map(|u| crate::url::redact(u))
            .collect::<Vec<_>>()
            .join(", ");
        let scrub = |text: &str| {
            urls.iter()
                .fold(text.to_string(), |t, u| crate::url::scrub(&t, u))
        };
        let connect_err = |e: lapin::Error| AmqpError::Connect {
            url: redacted.clone(),
            reason: scrub(&e.to_string()),
        };
        // A broker that is still starting refuses connections: try again
        // (the next node of a cluster) until `connect_timeout`.
        let deadline = Instant::now() + opts.connect_timeout;
        let mut attempt = 0usize;
        let link = loop {
            let node = attempt % urls.len();
            attempt += 1;
            let left = deadline.saturating_duration_since(Instant::now());
            // One node that does not answer must leave time for the others.
            let left = if urls.len() > 1 {
                left.min(NODE_CONNECT_TIMEOUT)
            } else {
                left
            };
            let err = match tokio::time::timeout(left, open_link(&urls[node], &opts, 0, node)).await {
                Ok(Ok(link)) => break link,
                Ok(Err(LinkError::CaFile(reason))) => {
                    return Err(AmqpError::Connect {
                        url: redacted.clone(),
                        reason,
                    })
                }
                // Refused credentials or an unknown vhost do not get better
                // either: only a broker that is not (yet) there is waited for.
                Ok(Err(LinkError::Amqp(e))) if !e.is_io_error() => return Err(connect_err(e)),
                Ok(Err(LinkError::Amqp(e))) => {
                    // A certificate the CA store refuses does not get better.
                    if tls_rejection(&e) {
                        return Err(AmqpError::Connect {
                            url: redacted.clone(),
                            reason: format!(
                                "{} (a broker certificate from a private CA needs its CA file: \
                                 --amqp-ca-file, [amqp] ca_file or RECMAN_AMQP_CA_FILE)",
                                scrub(&e.to_string())
                            ),
                        });
                    }
                    Some(e)
                }
                Err(_) => None,
            };
            if attempt % urls.len() != 0 {
                // The next node of the cluster at once; a pause after a full round.
                if Instant::now() < deadline {
                    continue;
                }
            }
            if Instant::now() + CONNECT_RETRY >= deadline {
                return Err(match err {
                    Some(e) => connect_err(e),
                    None => AmqpError::Connect {
                        url: redacted.clone(),
                        reason: format!(
                            "no connection within {:?} (is the broker running and reachable?)",
                            opts.connect_timeout
                        ),
                    },
                });
            }
            tokio::time::sleep(CONNECT_RETRY).await;
        };
        let bus = AmqpBus {
            inner: Arc::new(Inner {
                urls: urls.to_vec(),
                link: std::sync::RwLock::new(Arc::new(link)),
                generation: tokio::sync::watch::channel(0).0,
                declared: Mutex::new(HashSet::new()),
                opts,
                next_consumer: AtomicU64::new(1),
                lost: AtomicBool::new(false),
                lost_notify: tokio::sync::Notify::new(),
            }),
        };
        tokio::spawn(supervise(Arc::downgrade(&bus.inner)));
        if bus.inner.opts.declare_topology {
            bus.declare_topology().await.map_err(|e| AmqpError::Topology {
                url: redacted.clone(),
                reason: scrub(&e.to_string()),
            })?;
        }
        Ok(Arc::new(bus))
    }

    /// True once the connection was down longer than `reconnect_timeout`:
    /// the bus is closed for good (restart the process).
    pub fn connection_lost(&self) -> bool {
        self.inner.lost.load(Ordering::SeqCst)
    }

    fn link(&self) -> Arc<Link> {
        self.inner.link()
    }

    /// Messages waiting in `addr`'s queue (not those delivered and not yet
    /// settled), by a passive declare: it changes nothing.
    pub async fn ready(&self, addr: &Address) -> Result<u32, BusError> {
        let ch = self.link().conn.create_channel().await.map_err(broker)?;
        let q = ch
            .queue_declare(
                addr.queue_name().as_str().into(),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .map_err(broker)?;
        let _ = ch.close(200, "counted".into()).await;
        Ok(q.message_count())
    }

    /// The URL (redacted) of the node the bus is connected to now.
    pub fn connected_to(&self) -> String {
        crate::url::redact(&self.inner.urls[self.link().node])
    }

    /// Waits until a link newer than `generation` is up (or the bus is lost,
    /// or `timeout` passed). True when there is one.
    async fn newer_link(&self, generation: u64, timeout: Duration) -> bool {
        let mut rx = self.inner.generation.subscribe();
        let wait = rx.wait_for(|g| *g > generation);
        let lost = self.inner.lost_notify.notified();
        tokio::pin!(lost);
        lost.as_mut().enable();
        if self.connection_lost() {
            return false;
        }
        tokio::select! {
            r = tokio::time::timeout(timeout, wait) => matches!(r, Ok(Ok(_))),
            _ = lost => false,
        }
    }

    /// Declares the exchanges, the core queues and their bindings. Idempotent;
    /// a queue that exists with other arguments is an error that says so.
    pub async fn declare_topology(&self) -> Result<(), BusError> {
        let ch = self.link().conn.create_channel().await.map_err(broker)?;
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
        let ch = self.link().conn.create_channel().await.map_err(broker)?;
        let group = self.inner.opts.quorum_group_size;
        let args = topology::field_table(&topology::queue_arguments(addr, limit, group));
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
            let e = e.to_string();
            let hint = if e.contains("ACCESS_REFUSED") {
                "this user may not use it: see its role in deploy/README.md, \"Users and \
                 permissions\"; a worker's user may read only its own pools' and worker queues"
                    .to_string()
            } else {
                format!(
                    "if it exists with other arguments, e.g. another delivery limit than {limit}, \
                     delete it or use the same settings"
                )
            };
            return Err(broker(format!("declaring queue {name}: {e} ({hint})")));
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
        let mut pending: Vec<usize> = (0..msgs.len()).collect();
        loop {
            let link = self.link();
            let ch = &link.publisher;
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
                let left = deadline
                    .saturating_duration_since(Instant::now())
                    .max(Duration::from_secs(1));
                let sent = ch.basic_publish(
                    exchange.into(),
                    key.into(),
                    opts,
                    &msg.body,
                    convert::properties(msg),
                );
                match tokio::time::timeout(left, sent).await {
                    Ok(Ok(c)) => confirms.push((i, c)),
                    Ok(Err(e)) => {
                        failed.push(i);
                        last_err = Some(e.to_string());
                    }
                    Err(_) => {
                        failed.push(i);
                        last_err = Some("the broker did not take the message".into());
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
                        last_err = Some(e.to_string());
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
            tracing::warn!(unconfirmed = failed.len(), error = ?last_err, "publishing again after a broker error");
            if link.up() {
                // A nack on a healthy connection: try again shortly.
                tokio::time::sleep(Duration::from_millis(250)).await;
            } else {
                let left = deadline.saturating_duration_since(Instant::now());
                self.newer_link(link.generation, left).await;
            }
            pending = failed;
        }
    }

    async fn consume_queue(&self, from: Address, prefetch: u16) -> Result<Consumer, BusError> {
        let source = if from == Address::Events {
            Source::EventsExclusive
        } else {
            Source::Queue(from)
        };
        self.consumer(source, prefetch).await
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
        let source = Source::Durable {
            queue: queue.to_string(),
            binding: binding.to_string(),
        };
        self.consumer(source, prefetch).await
    }

    async fn consumer(&self, source: Source, prefetch: u16) -> Result<Consumer, BusError> {
        let sub = self.subscribe(&source, prefetch).await?;
        Ok(Consumer::new(Box::new(AmqpConsumer {
            bus: self.clone(),
            source,
            prefetch,
            sub,
            closed: Arc::new(AtomicBool::new(false)),
        })))
    }

    /// Opens a channel on the current link, declares what `source` needs and
    /// starts consuming.
    async fn subscribe(&self, source: &Source, prefetch: u16) -> Result<Subscription, BusError> {
        if let Source::Queue(addr) = source {
            self.ensure(addr).await?;
        }
        let link = self.link();
        let ch = link.conn.create_channel().await.map_err(broker)?;
        ch.basic_qos(prefetch, BasicQosOptions::default())
            .await
            .map_err(broker)?;
        let queue = match source {
            Source::Queue(addr) => addr.queue_name(),
            Source::EventsExclusive => {
                // One exclusive, server-named queue per subscriber: it lives
                // as long as the subscription (and its connection).
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
                bind_events(&ch, &name, "#").await?;
                name
            }
            Source::Durable { queue, binding } => {
                let args = topology::field_table(&topology::quorum(self.inner.opts.quorum_group_size));
                ch.queue_declare(
                    queue.as_str().into(),
                    QueueDeclareOptions {
                        durable: true,
                        ..Default::default()
                    },
                    args,
                )
                .await
                .map_err(|e| broker(format!("declaring queue {queue}: {e}")))?;
                bind_events(&ch, queue, binding).await?;
                queue.clone()
            }
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
        Ok(Subscription {
            channel: ch,
            consumer,
            queue,
            generation: link.generation,
        })
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

/// Pause between attempts to connect.
const CONNECT_RETRY: Duration = Duration::from_millis(500);
/// How long one node of a cluster may take to accept a connection before
/// the next is tried.
const NODE_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

enum LinkError {
    CaFile(String),
    Amqp(lapin::Error),
}

impl From<lapin::Error> for LinkError {
    fn from(e: lapin::Error) -> Self {
        LinkError::Amqp(e)
    }
}

impl std::fmt::Display for LinkError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LinkError::CaFile(m) => f.write_str(m),
            LinkError::Amqp(e) => e.fmt(f),
        }
    }
}

/// True when the error is a TLS certificate problem (the text is all lapin
/// gives us).
fn tls_rejection(e: &lapin::Error) -> bool {
    let t = e.to_string().to_ascii_lowercase();
    t.contains("certificate") || t.contains("unknownissuer") || t.contains("fatal alert")
}

/// Opens a connection (without lapin's own recovery) and its confirm-mode
/// publishing channel.
async fn open_link(url: &str, opts: &AmqpOptions, generation: u64, node: usize) -> Result<Link, LinkError> {
    let name = opts.connection_name.clone();
    let props = ConnectionProperties::default().with_connection_name(name.into());
    let conn = match &opts.ca_file {
        None => Connection::connect(url, props).await?,
        Some(path) => {
            let pem = std::fs::read_to_string(path)
                .map_err(|e| LinkError::CaFile(format!("cannot read the CA file {}: {e}", path.display())))?;
            let tls = lapin::tcp::OwnedTLSConfig {
                identity: None,
                cert_chain: Some(pem),
            };
            let runtime = lapin::runtime::default_runtime()?;
            Connection::connect_with_config(url, props, tls, runtime).await?
        }
    };
    let publisher = conn.create_channel().await?;
    publisher.confirm_select(ConfirmSelectOptions::default()).await?;
    Ok(Link {
        conn,
        publisher,
        generation,
        node,
    })
}

async fn bind_events(ch: &Channel, queue: &str, binding: &str) -> Result<(), BusError> {
    ch.queue_bind(
        queue.into(),
        topology::EVENTS_EXCHANGE.into(),
        binding.into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .map_err(broker)
}

impl Inner {
    fn link(&self) -> Arc<Link> {
        self.link.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// Watches the connection and replaces it when it fails: a new connection,
/// the topology declared again, then the new generation announced. When no
/// connection could be made for `reconnect_timeout`, marks the bus lost and
/// wakes every consumer.
async fn supervise(inner: std::sync::Weak<Inner>) {
    let mut down_since: Option<Instant> = None;
    // Attempts since the connection failed: the first goes to the node after
    // the one that failed (it is likely gone), then round the list.
    let mut attempt = 0usize;
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let Some(inner) = inner.upgrade() else { return };
        let old = inner.link();
        if old.up() {
            down_since = None;
            continue;
        }
        let since = *down_since.get_or_insert_with(|| {
            attempt = 0;
            tracing::warn!(
                node = %crate::url::redact(&inner.urls[old.node]),
                "the broker connection failed; reconnecting"
            );
            Instant::now()
        });
        if since.elapsed() >= inner.opts.reconnect_timeout {
            tracing::error!(
                after = ?inner.opts.reconnect_timeout,
                "the broker connection did not come back: giving up (the process should be restarted)"
            );
            inner.lost.store(true, Ordering::SeqCst);
            inner.lost_notify.notify_waiters();
            return;
        }
        let generation = old.generation + 1;
        let n = inner.urls.len();
        let node = (old.node + 1 + attempt) % n;
        attempt += 1;
        let url = &inner.urls[node];
        let wait = if n > 1 {
            NODE_CONNECT_TIMEOUT
        } else {
            Duration::from_secs(10)
        };
        let opened = tokio::time::timeout(wait, open_link(url, &inner.opts, generation, node)).await;
        let link = match opened {
            Ok(Ok(link)) => link,
            Ok(Err(e)) => {
                let e = crate::url::scrub(&e.to_string(), url);
                tracing::debug!(node = %crate::url::redact(url), error = %e, "reconnecting: not yet");
                // The next node at once; a pause after a full round.
                if attempt % n == 0 {
                    tokio::time::sleep(CONNECT_RETRY).await;
                }
                continue;
            }
            Err(_) => continue,
        };
        // Close what is left of the old connection (its io thread) in the background.
        let dead = old.clone();
        tokio::spawn(async move {
            let closing = dead.conn.close(320, "replaced".into());
            let _ = tokio::time::timeout(Duration::from_secs(5), closing).await;
        });
        *inner.link.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(link);
        inner.declared.lock().unwrap_or_else(|e| e.into_inner()).clear();
        let bus = AmqpBus { inner: inner.clone() };
        if inner.opts.declare_topology {
            if let Err(e) = bus.declare_topology().await {
                tracing::warn!(error = %e, "reconnected, but declaring the topology failed");
            }
        }
        tracing::warn!(
            generation,
            node = %crate::url::redact(url),
            down_for = ?since.elapsed(),
            "reconnected to the broker"
        );
        down_since = None;
        inner.generation.send_replace(generation);
    }
}

/// What a consumer reads from, kept to subscribe again after a reconnection.
enum Source {
    Queue(Address),
    /// A private, exclusive queue bound to the events exchange (events
    /// published while the connection is down are not seen).
    EventsExclusive,
    /// A named durable subscription (see `subscribe_events`).
    Durable {
        queue: String,
        binding: String,
    },
}

/// A consumer's channel on one link.
struct Subscription {
    channel: Channel,
    consumer: lapin::Consumer,
    queue: String,
    generation: u64,
}

struct AmqpConsumer {
    bus: AmqpBus,
    source: Source,
    prefetch: u16,
    sub: Subscription,
    /// Set when the consumer is dropped: its deliveries can no longer be settled.
    closed: Arc<AtomicBool>,
}

impl AmqpConsumer {
    /// After the consumer's channel failed: waits until a connection is up
    /// (the same one when only the channel closed, a new one otherwise) and
    /// consumes again. False when the bus is lost.
    async fn resubscribe(&mut self) -> bool {
        loop {
            if self.bus.connection_lost() {
                return false;
            }
            let current = self.bus.link();
            if !current.up() {
                let wait = self.bus.inner.opts.reconnect_timeout + Duration::from_secs(5);
                self.bus.newer_link(current.generation, wait).await;
                continue;
            }
            match self.bus.subscribe(&self.source, self.prefetch).await {
                Ok(sub) => {
                    tracing::info!(queue = %sub.queue, "consuming again");
                    // Deliveries from the old channel can no longer be settled;
                    // closing it (if it is still open) hands them back.
                    self.closed.store(true, Ordering::SeqCst);
                    self.closed = Arc::new(AtomicBool::new(false));
                    let old = std::mem::replace(&mut self.sub, sub);
                    tokio::spawn(async move {
                        let closing = old.channel.close(200, "consuming again".into());
                        let _ = tokio::time::timeout(Duration::from_secs(5), closing).await;
                    });
                    return true;
                }
                Err(e) => {
                    tracing::warn!(queue = %self.sub.queue, error = %e, "consuming again failed; retrying");
                    tokio::time::sleep(CONNECT_RETRY).await;
                }
            }
        }
    }

    /// The broker cancelled the consumer (its queue was deleted) while the
    /// connection and the channel stay up.
    async fn cancelled_by_broker(&self) -> bool {
        let steady = || {
            let link = self.bus.link();
            link.up() && link.generation == self.sub.generation && self.sub.channel.status().connected()
        };
        if !steady() {
            return false;
        }
        // A connection that is just failing may not show it yet.
        tokio::time::sleep(CONNECT_RETRY).await;
        steady()
    }
}

impl ConsumerSource for AmqpConsumer {
    fn recv(&mut self) -> BoxFuture<'_, Option<Delivery>> {
        Box::pin(async move {
            loop {
                if self.bus.connection_lost() {
                    return None;
                }
                let next = {
                    let bus = self.bus.clone();
                    let lost = bus.inner.lost_notify.notified();
                    tokio::pin!(lost);
                    lost.as_mut().enable();
                    if self.bus.connection_lost() {
                        return None;
                    }
                    tokio::select! {
                        n = self.sub.consumer.next() => n,
                        _ = lost => return None,
                    }
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
                            queue: self.sub.queue.clone(),
                        });
                        return Some(Delivery::new(message, d.redelivered || count > 1, count, acker));
                    }
                    Some(Err(e)) => {
                        tracing::warn!(queue = %self.sub.queue, error = %e, "consumer error; waiting for the connection");
                        if !self.resubscribe().await {
                            return None;
                        }
                    }
                    None => {
                        // The channel closed (the connection failed, or a
                        // channel error), or the broker cancelled the consumer.
                        if self.cancelled_by_broker().await || !self.resubscribe().await {
                            return None;
                        }
                    }
                }
            }
        })
    }
}

impl Drop for AmqpConsumer {
    fn drop(&mut self) {
        self.closed.store(true, Ordering::SeqCst);
        // Closing the channel hands every unsettled delivery back to the queue.
        let ch = self.sub.channel.clone();
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
