//! recman-amqp: the [`Bus`](recman_events::Bus) on RabbitMQ (lapin): durable
//! quorum queues, persistent messages, publisher confirms on every publish,
//! manual acks, a delivery limit and a dead-letter exchange with the reason in
//! a header, automatic connection recovery with re-publication of anything
//! unconfirmed.
//!
//! ```no_run
//! # async fn f() -> Result<(), recman_amqp::AmqpError> {
//! use std::sync::Arc;
//! use recman_events::Bus;
//! let bus: Arc<dyn Bus> = recman_amqp::AmqpBus::connect("amqp://127.0.0.1:5672/%2f", Default::default()).await?;
//! # Ok(()) }
//! ```

mod bus;
mod convert;
pub mod topology;
pub mod url;

pub use bus::{AmqpBus, AmqpError, AmqpOptions};
