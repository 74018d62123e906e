//! `deploy/rabbitmq/definitions.json` is what the code declares: the checked-in
//! file equals the generated one, and after `rabbitmqctl import_definitions`
//! into the private node the bus declares the same topology without a
//! conflict (RabbitMQ refuses a re-declare with other arguments).

use std::path::PathBuf;

use recman_amqp::topology;
use recman_amqp::{AmqpBus, AmqpOptions};
use recman_events::bus::DEFAULT_DELIVERY_LIMIT;
use recman_testkit::amqp;

fn checked_in() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/rabbitmq/definitions.json")
}

#[test]
fn checked_in_definitions_match_the_code() {
    let want = topology::definitions("recman", DEFAULT_DELIVERY_LIMIT);
    if std::env::var("RECMAN_BLESS").as_deref() == Ok("1") {
        std::fs::write(checked_in(), &want).unwrap();
    }
    let got = std::fs::read_to_string(checked_in()).expect("deploy/rabbitmq/definitions.json");
    assert_eq!(
        got, want,
        "deploy/rabbitmq/definitions.json is stale: run this test with RECMAN_BLESS=1"
    );
    let v: serde_json::Value = serde_json::from_str(&got).expect("valid JSON");
    assert_eq!(v["queues"].as_array().unwrap().len(), 3);
    assert_eq!(v["exchanges"].as_array().unwrap().len(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn definitions_import_and_match_what_the_bus_declares() {
    let Some(url) = amqp::broker() else { return };
    let vhost = format!("recman-defs-{}", std::process::id());
    let text = topology::definitions(&vhost, DEFAULT_DELIVERY_LIMIT);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("definitions.json");
    std::fs::write(&file, text).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    amqp::rabbitmqctl(&["import_definitions", file.to_str().unwrap()]);
    amqp::rabbitmqctl(&[
        "set_permissions",
        "-p",
        &vhost,
        amqp::user(&url),
        ".*",
        ".*",
        ".*",
    ]);
    let vhost_url = amqp::with_vhost(&url, &vhost);
    let bus = AmqpBus::connect(&vhost_url, AmqpOptions::default()).await;
    amqp::rabbitmqctl(&["delete_vhost", &vhost]);
    bus.expect("the bus declares the imported topology without a conflict");
}
