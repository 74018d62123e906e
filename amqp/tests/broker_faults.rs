//! The AMQP bus against the broker's own delivery limit: a message whose
//! consumers keep dying is dead-lettered by RabbitMQ, with recman's reason.

use std::sync::Arc;
use std::time::Duration;

use recman_amqp::{AmqpBus, AmqpOptions};
use recman_events::bus::{
    msg_type, Address, Bus, Message, DELIVERY_LIMIT_REASON, ORIGIN_HEADER, REASON_HEADER,
};
use recman_events::PoolName;
use recman_testkit::amqp;

async fn bus(url: &str) -> Arc<dyn Bus> {
    AmqpBus::connect(url, AmqpOptions::default())
        .await
        .expect("connect")
}

fn unique_pool(name: &str) -> Address {
    Address::Pool(PoolName::new(format!(
        "faults.{name}.{}",
        uuid::Uuid::now_v7().simple()
    )))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumers_that_die_hit_the_brokers_delivery_limit() {
    let Some(url) = amqp::url() else { return };
    let bus = bus(&url).await;
    let q = unique_pool("crashloop");
    let id = format!("crash-{}", uuid::Uuid::now_v7().simple());
    bus.publish(q.clone(), Message::new(msg_type::COMMAND, &id, b"x".to_vec()))
        .await
        .unwrap();
    // Each consumer takes the message and goes away without settling it, as
    // a worker killed mid-step does: the broker counts the returns.
    for n in 1..=recman_events::bus::DEFAULT_DELIVERY_LIMIT {
        let mut c = bus.consume(q.clone(), 1).await.unwrap();
        let d = tokio::time::timeout(Duration::from_secs(5), c.recv())
            .await
            .expect("delivered")
            .unwrap();
        assert_eq!(d.delivery_count, n);
        std::mem::forget(d); // not even a nack: the channel closes with the consumer
        drop(c);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut c = bus.consume(q.clone(), 1).await.unwrap();
    assert!(
        tokio::time::timeout(Duration::from_millis(500), c.recv())
            .await
            .is_err(),
        "the message must have left the queue after the limit"
    );
    let mut dlq = bus.consume(Address::DeadLetters, 0).await.unwrap();
    let mut held = Vec::new();
    loop {
        let d = tokio::time::timeout(Duration::from_secs(5), dlq.recv())
            .await
            .expect("the dead letter arrives")
            .unwrap();
        if d.message.message_id == id {
            assert_eq!(d.message.header(REASON_HEADER), Some(DELIVERY_LIMIT_REASON));
            assert_eq!(d.message.header(ORIGIN_HEADER), Some(q.queue_name().as_str()));
            d.ack().await.unwrap();
            break;
        }
        held.push(d);
    }
}
