//! Publishes survive `rabbitmqctl stop_app` / `start_app`: automatic
//! recovery, unconfirmed messages sent again, nothing lost. Alone in its test
//! binary (and in the nextest `rabbitmq` group) because it restarts the broker.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use recman_amqp::{AmqpBus, AmqpOptions};
use recman_events::bus::{msg_type, Address, Bus, Message};
use recman_events::PoolName;
use recman_testkit::{amqp, wait_for_async, DEADLINE};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_survive_a_broker_restart() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .try_init();
    let Some(url) = amqp::broker() else { return };
    // What is checked is that nothing is lost, not how fast the broker
    // comes back: on a loaded two-core machine `start_app` has taken more
    // than the default 30 s, after which the bus gives up by design.
    let opts = AmqpOptions {
        reconnect_timeout: Duration::from_secs(180),
        publish_timeout: Duration::from_secs(180),
        ..AmqpOptions::default()
    };
    let bus: Arc<dyn Bus> = AmqpBus::connect(&url, opts.clone()).await.expect("connect");
    // A consumer from before the restart must keep receiving after it.
    let other: Arc<dyn Bus> = AmqpBus::connect(&url, opts).await.expect("connect");
    let q = Address::Pool(PoolName::new(format!(
        "restart.{}",
        uuid::Uuid::now_v7().simple()
    )));
    const N: usize = 300;
    let mut c = other.consume(q.clone(), 100).await.unwrap();
    let published = Arc::new(AtomicUsize::new(0));
    let publisher = {
        let bus = bus.clone();
        let q = q.clone();
        let published = published.clone();
        tokio::spawn(async move {
            for i in 0..N {
                let m = Message::new(msg_type::COMMAND, format!("r{i}"), b"x".to_vec());
                bus.publish(q.clone(), m)
                    .await
                    .expect("publish confirmed, maybe after recovery");
                published.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    // The broker goes away in the middle of the stream, not before or after it.
    wait_for_async("the first publishes", DEADLINE, || {
        let n = published.load(Ordering::SeqCst);
        std::future::ready((n >= 20).then_some(()))
    })
    .await;
    let before_stop = published.load(Ordering::SeqCst);
    assert!(
        before_stop < N,
        "all {N} were published before the broker stopped"
    );
    tokio::task::spawn_blocking(|| {
        amqp::rabbitmqctl(&["stop_app"]);
        std::thread::sleep(Duration::from_millis(500));
        amqp::rabbitmqctl(&["start_app"]);
    })
    .await
    .unwrap();
    tokio::time::timeout(Duration::from_secs(240), publisher)
        .await
        .expect("the publisher finishes after the restart")
        .unwrap();
    let _ = &other;
    let mut got = BTreeSet::new();
    while got.len() < N {
        let d = tokio::time::timeout(Duration::from_secs(60), c.recv())
            .await
            .unwrap_or_else(|_| panic!("only {} of {N} messages arrived", got.len()))
            .expect("consumer open");
        got.insert(d.message.message_id.clone());
        let _ = d.ack().await; // a tag from before the restart may be refused: redelivered
    }
    assert_eq!(
        got.len(),
        N,
        "every published message is there (duplicates allowed, no loss)"
    );
}
