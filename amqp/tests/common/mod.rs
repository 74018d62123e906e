//! Shared by the AMQP integration tests: the broker URL and rabbitmqctl of the
//! private node `tests/run` starts; skip (or fail under CI=true) without them.

#![allow(dead_code)]

pub fn require(var: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(u) if !u.is_empty() => Some(u),
        _ => {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("CI=true but {var} is not set: tests/run starts the private RabbitMQ node");
            }
            eprintln!("skipped: {var} is not set (eval \"$(tests/services/rabbitmq.sh start)\" first)");
            None
        }
    }
}

pub fn url() -> Option<String> {
    require("RECMAN_TEST_AMQP_URL")
}

/// Runs rabbitmqctl against the private node.
pub fn rabbitmqctl(args: &[&str]) {
    let ctl = require("RECMAN_TEST_RABBITMQCTL").expect("RECMAN_TEST_RABBITMQCTL");
    let out = std::process::Command::new(&ctl)
        .args(args)
        .output()
        .expect("running rabbitmqctl");
    assert!(
        out.status.success(),
        "rabbitmqctl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
