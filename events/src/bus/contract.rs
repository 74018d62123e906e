//! The contract every `Bus` implementation must keep: one generic test per
//! behaviour, instantiated per implementation with [`contract_tests!`](crate::contract_tests).
//! Queue names and message ids are unique per test run, and every check
//! ignores what other runs left behind, so a shared broker can run them too.
//!
//! Built with the `contract-tests` feature; `events/tests/bus_contract.rs` runs
//! it on the in-process bus, `amqp/tests/bus_contract.rs` on RabbitMQ.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use crate::bus::{msg_type, Address, Bus, Consumer, Delivery, Message, DELIVERY_LIMIT_REASON, REASON_HEADER};
use crate::PoolName;

const WAIT: Duration = Duration::from_secs(5);
const QUIET: Duration = Duration::from_millis(300);

fn unique_pool(test: &str) -> Address {
    Address::Pool(PoolName::new(format!(
        "contract.{test}.{}",
        uuid::Uuid::now_v7().simple()
    )))
}

fn msg(id: &str) -> Message {
    Message::new(msg_type::COMMAND, id, id.as_bytes().to_vec())
}

async fn next(c: &mut Consumer) -> Delivery {
    tokio::time::timeout(WAIT, c.recv())
        .await
        .expect("a delivery within the timeout")
        .expect("the consumer is open")
}

async fn nothing(c: &mut Consumer) {
    if let Ok(Some(d)) = tokio::time::timeout(QUIET, c.recv()).await {
        panic!("expected no delivery, got {:?}", d.message.message_id);
    }
}

/// Reads the dead-letter queue until the message `id` shows up and acks it.
/// Other dead letters (of tests running in parallel on a shared broker) are
/// held and then given back unsettled, so their own test still finds them.
async fn find_dead_letter(bus: &Arc<dyn Bus>, id: &str) -> Message {
    let mut dlq = bus.consume(Address::DeadLetters, 0).await.unwrap();
    let mut others = Vec::new();
    loop {
        let d = next(&mut dlq).await;
        if d.message.message_id == id {
            let m = d.message.clone();
            d.ack().await.unwrap();
            return m;
        }
        others.push(d);
    }
}

pub async fn round_trip_keeps_id_type_body_and_headers(bus: Arc<dyn Bus>) {
    let q = unique_pool("round_trip");
    let sent = Message::new(msg_type::REPORT, "m-1", b"{\"x\":1}".to_vec())
        .with_header(
            "traceparent",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        )
        .with_header("x-custom", "yes");
    bus.publish(q.clone(), sent.clone()).await.unwrap();
    let mut c = bus.consume(q, 10).await.unwrap();
    let d = next(&mut c).await;
    assert_eq!(d.message.message_id, "m-1");
    assert_eq!(d.message.msg_type, msg_type::REPORT);
    assert_eq!(d.message.body, sent.body);
    for (k, v) in &sent.headers {
        assert_eq!(d.message.header(k), Some(v.as_str()), "header {k}");
    }
    assert!(!d.redelivered);
    assert_eq!(d.delivery_count, 1);
    d.ack().await.unwrap();
    nothing(&mut c).await;
}

pub async fn one_queue_is_fifo(bus: Arc<dyn Bus>) {
    let q = unique_pool("fifo");
    let batch: Vec<_> = (0..10).map(|i| (q.clone(), msg(&format!("b{i}")))).collect();
    bus.publish_batch(batch).await.unwrap();
    for i in 10..20 {
        bus.publish(q.clone(), msg(&format!("b{i}"))).await.unwrap();
    }
    let mut c = bus.consume(q, 100).await.unwrap();
    for i in 0..20 {
        let d = next(&mut c).await;
        assert_eq!(d.message.message_id, format!("b{i}"));
        d.ack().await.unwrap();
    }
}

pub async fn prefetch_limits_unacked_deliveries(bus: Arc<dyn Bus>) {
    let q = unique_pool("prefetch");
    for i in 0..5 {
        bus.publish(q.clone(), msg(&format!("p{i}"))).await.unwrap();
    }
    let mut c = bus.consume(q, 2).await.unwrap();
    let d0 = next(&mut c).await;
    let d1 = next(&mut c).await;
    nothing(&mut c).await; // a third unacked delivery would break prefetch = 2
    d0.ack().await.unwrap();
    let d2 = next(&mut c).await;
    assert_eq!(d2.message.message_id, "p2");
    nothing(&mut c).await;
    d1.ack().await.unwrap();
    d2.ack().await.unwrap();
    for i in 3..5 {
        let d = next(&mut c).await;
        assert_eq!(d.message.message_id, format!("p{i}"));
        d.ack().await.unwrap();
    }
}

pub async fn nack_redelivers_with_flag_and_count(bus: Arc<dyn Bus>) {
    let q = unique_pool("nack");
    bus.publish(q.clone(), msg("n-1")).await.unwrap();
    bus.publish(q.clone(), msg("n-2")).await.unwrap();
    let mut c = bus.consume(q, 1).await.unwrap();
    let d = next(&mut c).await;
    assert_eq!(
        (d.message.message_id.as_str(), d.redelivered, d.delivery_count),
        ("n-1", false, 1)
    );
    d.nack().await.unwrap();
    let d = next(&mut c).await;
    assert_eq!(d.message.message_id, "n-1", "a requeued message keeps its place");
    assert!(d.redelivered);
    assert_eq!(d.delivery_count, 2);
    d.ack().await.unwrap();
    let d = next(&mut c).await;
    assert_eq!(
        (d.message.message_id.as_str(), d.redelivered, d.delivery_count),
        ("n-2", false, 1)
    );
    d.ack().await.unwrap();
}

pub async fn dropped_delivery_is_redelivered_to_another_consumer(bus: Arc<dyn Bus>) {
    let q = unique_pool("drop_delivery");
    bus.publish(q.clone(), msg("d-1")).await.unwrap();
    let mut c1 = bus.consume(q.clone(), 1).await.unwrap();
    let mut c2 = bus.consume(q, 1).await.unwrap();
    let d = next(&mut c1).await;
    assert_eq!(d.message.message_id, "d-1");
    drop(d);
    let d = next(&mut c2).await;
    assert_eq!(d.message.message_id, "d-1");
    assert!(d.redelivered);
    assert_eq!(d.delivery_count, 2);
    d.ack().await.unwrap();
    nothing(&mut c1).await;
}

pub async fn dropped_consumer_requeues_its_unacked(bus: Arc<dyn Bus>) {
    let q = unique_pool("drop_consumer");
    bus.publish(q.clone(), msg("c-1")).await.unwrap();
    bus.publish(q.clone(), msg("c-2")).await.unwrap();
    let mut c1 = bus.consume(q.clone(), 10).await.unwrap();
    let held1 = next(&mut c1).await;
    let held2 = next(&mut c1).await;
    let mut c2 = bus.consume(q, 10).await.unwrap();
    nothing(&mut c2).await; // c1 holds both
    drop(c1);
    let a = next(&mut c2).await;
    let b = next(&mut c2).await;
    assert_eq!(a.message.message_id, "c-1");
    assert_eq!(b.message.message_id, "c-2");
    assert!(a.redelivered && b.redelivered);
    // The old deliveries belong to a closed consumer: settling them fails and
    // must not settle (or duplicate) the redelivered copies.
    assert!(held1.ack().await.is_err());
    drop(held2);
    nothing(&mut c2).await;
    a.ack().await.unwrap();
    b.ack().await.unwrap();
    nothing(&mut c2).await;
}

pub async fn delivery_limit_dead_letters_with_reason(bus: Arc<dyn Bus>, limit: u32) {
    let q = unique_pool("limit");
    let id = format!("limit-{}", uuid::Uuid::now_v7().simple());
    bus.publish(q.clone(), msg(&id)).await.unwrap();
    let mut c = bus.consume(q.clone(), 1).await.unwrap();
    for n in 1..=limit {
        let d = next(&mut c).await;
        assert_eq!(d.delivery_count, n);
        d.nack().await.unwrap();
    }
    nothing(&mut c).await; // gone from the queue after `limit` deliveries
    let dead = find_dead_letter(&bus, &id).await;
    assert_eq!(dead.header(REASON_HEADER), Some(DELIVERY_LIMIT_REASON));
    assert_eq!(dead.body, id.as_bytes());
}

pub async fn reject_dead_letters_at_once_with_reason(bus: Arc<dyn Bus>) {
    let q = unique_pool("reject");
    let id = format!("reject-{}", uuid::Uuid::now_v7().simple());
    bus.publish(q.clone(), msg(&id)).await.unwrap();
    let mut c = bus.consume(q, 1).await.unwrap();
    let d = next(&mut c).await;
    d.reject("not valid JSON: eof").await.unwrap();
    nothing(&mut c).await;
    let dead = find_dead_letter(&bus, &id).await;
    assert_eq!(dead.header(REASON_HEADER), Some("not valid JSON: eof"));
    assert_eq!(dead.msg_type, msg_type::COMMAND);
}

pub async fn competing_consumers_share_and_deliver_once(bus: Arc<dyn Bus>) {
    let q = unique_pool("compete");
    const N: usize = 60;
    let mut tasks = Vec::new();
    for _ in 0..2 {
        let mut c = bus.consume(q.clone(), 3).await.unwrap();
        tasks.push(tokio::spawn(async move {
            let mut got = Vec::new();
            while let Ok(Some(d)) = tokio::time::timeout(Duration::from_millis(800), c.recv()).await {
                got.push(d.message.message_id.clone());
                tokio::time::sleep(Duration::from_millis(2)).await;
                d.ack().await.unwrap();
            }
            got
        }));
    }
    for i in 0..N {
        bus.publish(q.clone(), msg(&format!("w{i}"))).await.unwrap();
    }
    let mut all = Vec::new();
    for t in tasks {
        let got = t.await.unwrap();
        assert!(!got.is_empty(), "each consumer gets a share");
        all.extend(got);
    }
    assert_eq!(all.len(), N, "each message delivered exactly once");
    let distinct: BTreeSet<_> = all.iter().collect();
    assert_eq!(distinct.len(), N);
}

/// Next event of this run (ids starting with `prefix`); acks and skips events
/// that other tests publish on a shared broker.
async fn next_event(c: &mut Consumer, prefix: &str) -> Delivery {
    loop {
        let d = next(c).await;
        if d.message.message_id.starts_with(prefix) {
            return d;
        }
        d.ack().await.unwrap();
    }
}

async fn no_event(c: &mut Consumer, prefix: &str) {
    while let Ok(Some(d)) = tokio::time::timeout(QUIET, c.recv()).await {
        if d.message.message_id.starts_with(prefix) {
            panic!("expected no event, got {:?}", d.message.message_id);
        }
        d.ack().await.unwrap();
    }
}

pub async fn events_fan_out_to_every_subscriber(bus: Arc<dyn Bus>) {
    let run = format!("ev-{}-", uuid::Uuid::now_v7().simple());
    let ev = |i: u32| {
        let id = format!("{run}{i}");
        Message::new(msg_type::EVENT, id.clone(), id.into_bytes())
    };
    // Nobody listens yet: dropped, like an unbound exchange.
    bus.publish(Address::Events, ev(0)).await.unwrap();
    let mut a = bus.consume(Address::Events, 10).await.unwrap();
    let mut b = bus.consume(Address::Events, 10).await.unwrap();
    for i in 1..=3 {
        bus.publish(Address::Events, ev(i)).await.unwrap();
    }
    for c in [&mut a, &mut b] {
        for i in 1..=3 {
            let d = next_event(c, &run).await;
            assert_eq!(d.message.message_id, format!("{run}{i}"));
            d.ack().await.unwrap();
        }
        no_event(c, &run).await;
    }
}

pub async fn queues_keep_messages_until_someone_consumes(bus: Arc<dyn Bus>) {
    let w = Address::Worker(crate::WorkerId::new(format!(
        "contract-w-{}",
        uuid::Uuid::now_v7().simple()
    )));
    bus.publish(w.clone(), msg("early")).await.unwrap();
    let mut c = bus.consume(w, 1).await.unwrap();
    let d = next(&mut c).await;
    assert_eq!(d.message.message_id, "early");
    d.ack().await.unwrap();
}

/// Instantiates the whole suite for one implementation:
/// `contract_tests!(module_name, factory, delivery_limit)`, where `factory`
/// is an `async fn() -> Option<Arc<dyn Bus>>`; `None` means the bus cannot be
/// had here (no broker): the factory prints why and the test returns.
#[macro_export]
macro_rules! contract_tests {
    ($name:ident, $factory:expr, $limit:expr) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            use $crate::bus::contract as c;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn round_trip() {
                if let Some(bus) = ($factory)().await {
                    c::round_trip_keeps_id_type_body_and_headers(bus).await
                }
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn fifo() {
                if let Some(bus) = ($factory)().await {
                    c::one_queue_is_fifo(bus).await
                }
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn prefetch() {
                if let Some(bus) = ($factory)().await {
                    c::prefetch_limits_unacked_deliveries(bus).await
                }
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn nack() {
                if let Some(bus) = ($factory)().await {
                    c::nack_redelivers_with_flag_and_count(bus).await
                }
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn dropped_delivery() {
                if let Some(bus) = ($factory)().await {
                    c::dropped_delivery_is_redelivered_to_another_consumer(bus).await
                }
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn dropped_consumer() {
                if let Some(bus) = ($factory)().await {
                    c::dropped_consumer_requeues_its_unacked(bus).await
                }
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn delivery_limit() {
                if let Some(bus) = ($factory)().await {
                    c::delivery_limit_dead_letters_with_reason(bus, $limit).await
                }
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn reject() {
                if let Some(bus) = ($factory)().await {
                    c::reject_dead_letters_at_once_with_reason(bus).await
                }
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn competing_consumers() {
                if let Some(bus) = ($factory)().await {
                    c::competing_consumers_share_and_deliver_once(bus).await
                }
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn events_fan_out() {
                if let Some(bus) = ($factory)().await {
                    c::events_fan_out_to_every_subscriber(bus).await
                }
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn queues_keep_messages() {
                if let Some(bus) = ($factory)().await {
                    c::queues_keep_messages_until_someone_consumes(bus).await
                }
            }
        }
    };
}
