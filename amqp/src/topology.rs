//! The RabbitMQ topology recman uses: exchange and queue names, queue
//! arguments, and how each [`Address`] maps onto them. Declared idempotently
//! on start; `deploy/rabbitmq/definitions.json` is the same thing for
//! `rabbitmqctl import_definitions` (a test keeps the two equal).
//!
//! ```text
//! recman.requests (fanout)  ─▶ queue recman.requests          (engine)
//! recman.commands (direct)  ─▶ queue recman.pool.<pool>       (routing key = queue name)
//!                           ─▶ queue recman.worker.<id>       (routing key = queue name; thaw affinity)
//! recman.reports  (fanout)  ─▶ queue recman.reports           (engine)
//! recman.events   (topic)   ─▶ one exclusive queue per subscriber (routing key <event kind>.<target>)
//! recman.dlx      (fanout)  ─▶ queue recman.dlq               (reason in header x-recman-reason)
//! ```
//!
//! Every queue but the subscribers' is a durable quorum queue with
//! `x-delivery-limit` and `x-dead-letter-exchange = recman.dlx`; on a cluster
//! also `x-quorum-initial-group-size` (replicas per queue, see `AmqpOptions`).

use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::ExchangeKind;
use recman_events::bus::Address;

pub const REQUESTS_EXCHANGE: &str = "recman.requests";
pub const COMMANDS_EXCHANGE: &str = "recman.commands";
pub const REPORTS_EXCHANGE: &str = "recman.reports";
pub const EVENTS_EXCHANGE: &str = "recman.events";
pub const DEAD_LETTER_EXCHANGE: &str = "recman.dlx";
/// Worker queues unused for this long are deleted by the broker (a worker
/// that is gone for good leaves nothing behind).
pub const WORKER_QUEUE_EXPIRES_MS: i64 = 24 * 3600 * 1000;

/// The exchanges: name and kind.
pub fn exchanges() -> Vec<(&'static str, ExchangeKind)> {
    vec![
        (REQUESTS_EXCHANGE, ExchangeKind::Fanout),
        (COMMANDS_EXCHANGE, ExchangeKind::Direct),
        (REPORTS_EXCHANGE, ExchangeKind::Fanout),
        (EVENTS_EXCHANGE, ExchangeKind::Topic),
        (DEAD_LETTER_EXCHANGE, ExchangeKind::Fanout),
    ]
}

/// The queues every deployment has (pool and worker queues come and go).
pub fn core_queues() -> Vec<Address> {
    vec![Address::Requests, Address::Reports, Address::DeadLetters]
}

/// Where a message for `to` is published: exchange and routing key.
/// `Events` routing keys come from the message (see `ROUTING_KEY_HEADER`).
pub fn route(to: &Address) -> (&'static str, String) {
    match to {
        Address::Requests => (REQUESTS_EXCHANGE, String::new()),
        Address::Pool(_) | Address::Worker(_) => (COMMANDS_EXCHANGE, to.queue_name()),
        Address::Reports => (REPORTS_EXCHANGE, String::new()),
        Address::Events => (EVENTS_EXCHANGE, String::new()),
        Address::DeadLetters => (DEAD_LETTER_EXCHANGE, String::new()),
    }
}

/// The queue arguments of `addr` as (name, value) pairs, JSON-friendly.
/// `delivery_limit` = deliveries after which a message is dead-lettered
/// (0 = never); RabbitMQ counts returns, so the broker gets `limit - 1`.
/// `group_size` = `x-quorum-initial-group-size`, the replicas of each queue
/// in a cluster (`None`: the broker's default; one node needs none).
pub fn queue_arguments(
    addr: &Address,
    delivery_limit: u32,
    group_size: Option<u32>,
) -> Vec<(&'static str, ArgValue)> {
    let mut args = quorum(group_size);
    if *addr == Address::DeadLetters {
        return args;
    }
    if delivery_limit > 0 {
        args.push(("x-delivery-limit", ArgValue::Int(i64::from(delivery_limit) - 1)));
    }
    args.push(("x-dead-letter-exchange", ArgValue::Str(DEAD_LETTER_EXCHANGE)));
    if let Address::Worker(_) = addr {
        args.push(("x-expires", ArgValue::Int(WORKER_QUEUE_EXPIRES_MS)));
    }
    args
}

/// `x-queue-type = quorum`, and the replica count when one is set.
pub fn quorum(group_size: Option<u32>) -> Vec<(&'static str, ArgValue)> {
    let mut args = vec![("x-queue-type", ArgValue::Str("quorum"))];
    if let Some(n) = group_size {
        args.push(("x-quorum-initial-group-size", ArgValue::Int(i64::from(n))));
    }
    args
}

/// A queue argument value.
#[derive(Clone, Debug, PartialEq)]
pub enum ArgValue {
    Str(&'static str),
    Int(i64),
}

/// The arguments as an AMQP field table.
pub fn field_table(args: &[(&'static str, ArgValue)]) -> FieldTable {
    let mut t = FieldTable::default();
    for (k, v) in args {
        let v = match v {
            ArgValue::Str(s) => AMQPValue::LongString((*s).into()),
            ArgValue::Int(i) => AMQPValue::LongLongInt(*i),
        };
        t.insert(ShortString::from(*k), v);
    }
    t
}

/// The exchange a queue is bound to and the binding key.
pub fn binding(addr: &Address) -> Option<(&'static str, String)> {
    match addr {
        Address::Events => None,
        other => Some(route(other)),
    }
}

/// `deploy/rabbitmq/definitions.json` for the vhost `vhost`: the exchanges,
/// the core queues and their bindings, with `delivery_limit`.
pub fn definitions(vhost: &str, delivery_limit: u32) -> String {
    let mut ex = Vec::new();
    for (name, kind) in exchanges() {
        ex.push(format!(
            "    {{\"name\": \"{name}\", \"vhost\": \"{vhost}\", \"type\": \"{}\", \"durable\": true, \"auto_delete\": false, \"internal\": false, \"arguments\": {{}}}}",
            kind_name(&kind)
        ));
    }
    let mut qs = Vec::new();
    let mut bs = Vec::new();
    for q in core_queues() {
        let args: Vec<String> = queue_arguments(&q, delivery_limit, None)
            .iter()
            .map(|(k, v)| match v {
                ArgValue::Str(s) => format!("\"{k}\": \"{s}\""),
                ArgValue::Int(i) => format!("\"{k}\": {i}"),
            })
            .collect();
        qs.push(format!(
            "    {{\"name\": \"{}\", \"vhost\": \"{vhost}\", \"durable\": true, \"auto_delete\": false, \"arguments\": {{{}}}}}",
            q.queue_name(),
            args.join(", ")
        ));
        if let Some((exchange, key)) = binding(&q) {
            bs.push(format!(
                "    {{\"source\": \"{exchange}\", \"vhost\": \"{vhost}\", \"destination\": \"{}\", \"destination_type\": \"queue\", \"routing_key\": \"{key}\", \"arguments\": {{}}}}",
                q.queue_name()
            ));
        }
    }
    format!(
        "{{\n  \"vhosts\": [{{\"name\": \"{vhost}\"}}],\n  \"exchanges\": [\n{}\n  ],\n  \"queues\": [\n{}\n  ],\n  \"bindings\": [\n{}\n  ]\n}}\n",
        ex.join(",\n"),
        qs.join(",\n"),
        bs.join(",\n")
    )
}

fn kind_name(k: &ExchangeKind) -> &'static str {
    match k {
        ExchangeKind::Direct => "direct",
        ExchangeKind::Fanout => "fanout",
        ExchangeKind::Topic => "topic",
        ExchangeKind::Headers => "headers",
        _ => "direct",
    }
}
