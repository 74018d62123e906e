//! recman-amqp: the `Bus` on RabbitMQ.
