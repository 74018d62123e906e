//! A consistency group's events reach the subscribers of each member target
//! (issue 23): one publish with routing key `<kind>.<first>` and the other
//! members as RabbitMQ `CC` keys; each bound queue gets the message once.

use lapin::options::{BasicGetOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties};
use recman_amqp::topology::EVENTS_EXCHANGE;
use recman_amqp::{AmqpBus, AmqpOptions};
use recman_events::bus::{msg_type, Address, Bus, Message, ALSO_ROUTE_HEADER, ROUTING_KEY_HEADER};
use recman_testkit::amqp::Vhost;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_event_reaches_each_members_subscribers_once() {
    let Some(vh) = Vhost::new("group-routing") else {
        return;
    };
    let bus = AmqpBus::connect(&vh.url, AmqpOptions::default())
        .await
        .expect("connect (declares the events exchange)");
    let conn = Connection::connect(&vh.url, ConnectionProperties::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    // One subscriber per binding, as the Python subscriber's --binding does.
    let mut queues = Vec::new();
    for key in [
        "completed.db-a",
        "completed.db-b",
        "completed.#",
        "#",
        "completed.other",
    ] {
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
            .unwrap();
        ch.queue_bind(
            q.name().as_str().into(),
            EVENTS_EXCHANGE.into(),
            key.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
        queues.push((key, q.name().as_str().to_string()));
    }
    let m = Message::new(msg_type::EVENT, "event/1", b"{}".to_vec())
        .with_header(ROUTING_KEY_HEADER, "completed.db-a")
        .with_header(ALSO_ROUTE_HEADER, "completed.db-b,completed.db-c");
    // Confirmed: the broker has routed it to every queue by now.
    bus.publish(Address::Events, m).await.unwrap();
    for (key, q) in &queues {
        let mut got = 0;
        while ch
            .basic_get(q.as_str().into(), BasicGetOptions { no_ack: true })
            .await
            .unwrap()
            .is_some()
        {
            got += 1;
        }
        let want = usize::from(*key != "completed.other");
        assert_eq!(got, want, "queue bound to {key} got {got} copies");
    }
}
