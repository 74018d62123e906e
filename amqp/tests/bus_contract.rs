//! The `Bus` contract suite on RabbitMQ (the broker at `RECMAN_TEST_AMQP_URL`,
//! started by `tests/run`). Without it the tests say why and pass, unless
//! `CI=true`, where a missing broker is a failure.

use std::sync::Arc;

use recman_amqp::{AmqpBus, AmqpOptions};
use recman_events::bus::Bus;
use recman_events::contract_tests;

async fn bus_with_limit(limit: u32) -> Option<Arc<dyn Bus>> {
    let url = recman_testkit::amqp::url()?;
    let opts = AmqpOptions {
        delivery_limit: limit,
        connection_name: "recman-contract".into(),
        ..Default::default()
    };
    match AmqpBus::connect(&url, opts).await {
        Ok(b) => Some(b),
        Err(e) => panic!("{e}"),
    }
}

async fn default_limit() -> Option<Arc<dyn Bus>> {
    bus_with_limit(recman_events::bus::DEFAULT_DELIVERY_LIMIT).await
}

contract_tests!(amqp, default_limit, recman_events::bus::DEFAULT_DELIVERY_LIMIT);
