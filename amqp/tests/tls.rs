//! `amqps://` against the private node's TLS listener (a throwaway CA made by
//! tests/services/rabbitmq.sh): trusted through `ca_file` it works; without it
//! the connection is refused at once with a certificate error that shows no
//! password; an unreadable CA file is named.

use std::time::{Duration, Instant};

use recman_amqp::{AmqpBus, AmqpOptions};
use recman_events::bus::{msg_type, Address, Message};
use recman_events::PoolName;
use recman_testkit::amqp;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqps_with_the_ca_file_carries_messages() {
    let Some((url, ca)) = amqp::tls() else { return };
    let opts = AmqpOptions {
        ca_file: Some(ca),
        ..Default::default()
    };
    let bus = AmqpBus::connect(&url, opts).await.expect("connect over TLS");
    let q = Address::Pool(PoolName::new(format!("tls.{}", uuid::Uuid::now_v7().simple())));
    let mut c = recman_events::bus::Bus::consume(&*bus, q.clone(), 10)
        .await
        .unwrap();
    let m = Message::new(msg_type::COMMAND, "tls-1", b"over tls".to_vec());
    recman_events::bus::Bus::publish(&*bus, q, m)
        .await
        .expect("confirmed over TLS");
    let d = tokio::time::timeout(Duration::from_secs(10), c.recv())
        .await
        .expect("delivered in time")
        .expect("consumer open");
    assert_eq!(d.message.message_id, "tls-1");
    assert_eq!(d.message.body, b"over tls");
    d.ack().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqps_without_the_ca_is_refused_at_once_without_the_password() {
    let Some((url, _)) = amqp::tls() else { return };
    let password = amqp::password(&url).to_string();
    assert!(!password.is_empty(), "{url} has a password");
    let started = Instant::now();
    let e = match AmqpBus::connect(&url, AmqpOptions::default()).await {
        Ok(_) => panic!("a certificate from an unknown CA must be refused"),
        Err(e) => e.to_string(),
    };
    assert!(e.to_lowercase().contains("certificate"), "{e}");
    assert!(!e.contains(&password), "the password leaked: {e}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "not retried until the connect timeout: {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_ca_file_is_named() {
    let Some((url, _)) = amqp::tls() else { return };
    let opts = AmqpOptions {
        ca_file: Some("/nonexistent/recman-ca.pem".into()),
        ..Default::default()
    };
    let e = match AmqpBus::connect(&url, opts).await {
        Ok(_) => panic!("no CA file, no connection"),
        Err(e) => e.to_string(),
    };
    assert!(e.contains("/nonexistent/recman-ca.pem"), "{e}");
}
