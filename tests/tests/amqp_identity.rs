//! `by` of a request sent over RabbitMQ, on the private broker: the engine
//! records `amqp:<user>` from the message's `user_id` property, which the
//! broker validates. A message whose `user_id` is not the publishing
//! connection's user is refused by the broker (the channel closes,
//! nothing reaches the engine); one with the right `user_id` is recorded
//! with it; a sender's own `x-recman-user-id` header is not believed.

use std::time::Duration;

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Connection, ConnectionProperties};
use recman_events::bus::Address;
use recman_testkit::amqp::{user, Vhost};
use recman_tests::amqp::{next_event, write_config, Proc, VhostBus};

async fn publish(
    conn: &Connection,
    id: &str,
    user_id: Option<&str>,
    header: Option<&str>,
) -> Result<(), String> {
    let ch = conn.create_channel().await.map_err(|e| e.to_string())?;
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .map_err(|e| e.to_string())?;
    let body = serde_json::json!({"request_id": id, "targets": ["t0"]}).to_string();
    let mut props = BasicProperties::default()
        .with_message_id(format!("req/{id}").into())
        .with_type("request".into())
        .with_content_type("application/json".into())
        .with_delivery_mode(2);
    if let Some(u) = user_id {
        props = props.with_user_id(u.into());
    }
    if let Some(h) = header {
        let mut t = FieldTable::default();
        t.insert("x-recman-user-id".into(), AMQPValue::LongString(h.into()));
        props = props.with_headers(t);
    }
    let confirm = ch
        .basic_publish(
            recman_amqp::topology::REQUESTS_EXCHANGE.into(),
            "".into(),
            BasicPublishOptions::default(),
            body.as_bytes(),
            props,
        )
        .await
        .map_err(|e| e.to_string())?;
    let c = tokio::time::timeout(Duration::from_secs(10), confirm)
        .await
        .map_err(|_| "no confirm".to_string())?
        .map_err(|e| e.to_string())?;
    if !c.is_ack() {
        return Err(format!("nacked: {c:?}"));
    }
    // A refusal closes the channel asynchronously: a round trip shows it.
    ch.basic_qos(1, Default::default())
        .await
        .map_err(|e| e.to_string())?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqp_the_broker_validated_user_id_is_recorded_as_by() {
    let Some(vh) = Vhost::new("identity") else { return };
    let publisher = vh.user("publisher", "^$", r"^recman\.requests$", "^$");
    let name = user(&publisher).to_string();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = write_config(dir.path(), 1, &["host.a"]);
    let bus = vh.bus().await;
    let mut events = bus.consume(Address::Events, 256).await.unwrap();
    let mut engine = Proc::engine(dir.path(), &data, &config, &vh.url, &[]);
    engine.wait_for("broker connected");

    let conn = Connection::connect(&publisher, ConnectionProperties::default())
        .await
        .unwrap();
    // Forged: another user's name. The broker refuses it.
    let forged = publish(&conn, "forged", Some("admin"), None).await;
    let e = forged.expect_err("the broker must refuse a user_id that is not the connection's user");
    assert!(e.contains("user_id") || e.contains("PRECONDITION"), "{e}");
    // The right one, with a forged header beside it that must be ignored.
    publish(&conn, "honest", Some(&name), Some("admin"))
        .await
        .expect("the connection's own user_id is accepted");
    // No user_id at all: recorded without one (nobody to name).
    publish(&conn, "anonymous", None, Some("admin")).await.unwrap();

    let ctx = || format!("engine said:\n{}", engine.output());
    let mut seen = std::collections::BTreeMap::new();
    while seen.len() < 2 {
        let v = next_event(&mut events, "requested", None, 30, &ctx).await;
        let id = v["event"]["body"]["request_id"].as_str().unwrap().to_string();
        seen.insert(id, v["event"]["by"].clone());
    }
    assert_eq!(seen["honest"], format!("amqp:{name}"), "{seen:?}");
    assert!(
        seen["anonymous"].is_null(),
        "a sender's header is not an identity: {seen:?}"
    );
    assert!(!seen.contains_key("forged"));
    engine.stop();
    let log = recman_tests::amqp::read_log(&data);
    let by: Vec<(String, serde_json::Value)> = log
        .iter()
        .filter(|m| m["event"]["body"]["type"] == "requested")
        .map(|m| {
            (
                m["event"]["body"]["request_id"].as_str().unwrap().to_string(),
                m["event"]["by"].clone(),
            )
        })
        .collect();
    assert_eq!(by.len(), 2, "the forged request never reached the log: {by:?}");
    assert!(
        by.contains(&("honest".into(), serde_json::json!(format!("amqp:{name}")))),
        "{by:?}"
    );
}
