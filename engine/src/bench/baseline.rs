//! The broker's own speed, for benchmarks to compare with: bare round trips
//! and confirmed throughput of ~300-byte persistent messages through a quorum
//! queue, with plain lapin (no recman code in the path).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use futures_lite::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions,
    QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Connection, ConnectionProperties};

/// Size of a raw message: about a command or a report.
pub const RAW_BYTES: usize = 300;

/// What [`raw`] measured.
#[derive(Clone, Copy, Debug)]
pub struct RawFigures {
    /// Median of publish → confirm and delivery → ack, one message at a time.
    pub roundtrip_p50_us: u64,
    /// Messages published, confirmed, consumed and acked per second with
    /// confirms in flight.
    pub msgs_per_s: f64,
}

#[derive(Debug, thiserror::Error)]
#[error("broker baseline: {0}")]
pub struct BaselineError(String);

fn err(e: impl std::fmt::Display) -> BaselineError {
    BaselineError(e.to_string())
}

/// On a quorum queue `queue` of its own (declared, then deleted): `roundtrips`
/// round trips one at a time (publish, wait for the confirm and the delivery,
/// ack), then `messages` with `in_flight` confirms outstanding while a
/// consumer acks them.
pub async fn raw(
    url: &str,
    ca_file: Option<&std::path::Path>,
    queue: &str,
    group_size: Option<u32>,
    roundtrips: usize,
    messages: usize,
    in_flight: usize,
) -> Result<RawFigures, BaselineError> {
    let conn = connect(url, ca_file, Duration::from_secs(30)).await?;
    let result = raw_on(
        &conn,
        queue,
        group_size,
        roundtrips.max(1),
        messages,
        in_flight.max(1),
    )
    .await;
    if let Ok(ch) = conn.create_channel().await {
        let _ = ch.queue_delete(queue.into(), QueueDeleteOptions::default()).await;
    }
    let _ = conn.close(200, "baseline done".into()).await;
    result
}

/// A plain connection (no recovery), trusting `ca_file` for `amqps://` when given.
async fn connect(
    url: &str,
    ca_file: Option<&std::path::Path>,
    within: Duration,
) -> Result<Connection, BaselineError> {
    let props = ConnectionProperties::default().with_connection_name("recman-baseline".into());
    let connecting = async {
        match ca_file {
            None => Connection::connect(url, props).await,
            Some(path) => {
                let pem = std::fs::read_to_string(path)
                    .map_err(|e| lapin::Error::from(lapin::ErrorKind::IOError(std::sync::Arc::new(e))))?;
                let tls = lapin::tcp::OwnedTLSConfig {
                    identity: None,
                    cert_chain: Some(pem),
                };
                Connection::connect_with_config(url, props, tls, lapin::runtime::default_runtime()?).await
            }
        }
    };
    tokio::time::timeout(within, connecting)
        .await
        .map_err(|_| err(format!("no connection within {within:?}")))?
        .map_err(|e| err(recman_amqp::url::scrub(&e.to_string(), url)))
}

async fn raw_on(
    conn: &Connection,
    queue: &str,
    group_size: Option<u32>,
    roundtrips: usize,
    messages: usize,
    in_flight: usize,
) -> Result<RawFigures, BaselineError> {
    let publisher = conn.create_channel().await.map_err(err)?;
    publisher
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .map_err(err)?;
    let sub = conn.create_channel().await.map_err(err)?;
    let prefetch = u16::try_from(in_flight * 2).unwrap_or(u16::MAX);
    sub.basic_qos(prefetch, BasicQosOptions::default())
        .await
        .map_err(err)?;
    let mut args = FieldTable::default();
    args.insert("x-queue-type".into(), AMQPValue::LongString("quorum".into()));
    if let Some(n) = group_size {
        args.insert(
            "x-quorum-initial-group-size".into(),
            AMQPValue::LongLongInt(n.into()),
        );
    }
    sub.queue_declare(
        queue.into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        args,
    )
    .await
    .map_err(|e| err(format!("declaring the quorum queue {queue}: {e}")))?;
    let mut consumer = sub
        .basic_consume(
            queue.into(),
            "recman-baseline".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(err)?;
    let body = vec![b'x'; RAW_BYTES];
    let publish = || {
        publisher.basic_publish(
            "".into(),
            queue.into(),
            BasicPublishOptions::default(),
            &body,
            BasicProperties::default().with_delivery_mode(2),
        )
    };

    let mut rtts = Vec::with_capacity(roundtrips);
    for _ in 0..roundtrips {
        let t = Instant::now();
        let confirm = publish().await.map_err(err)?;
        let (confirmed, delivery) = tokio::join!(confirm, consumer.next());
        if !confirmed.map_err(err)?.is_ack() {
            return Err(err("the broker refused a message"));
        }
        let d = delivery.ok_or_else(|| err("the consumer ended"))?.map_err(err)?;
        d.acker.ack(BasicAckOptions::default()).await.map_err(err)?;
        rtts.push(t.elapsed().as_micros() as u64);
    }
    rtts.sort_unstable();
    let roundtrip_p50_us = rtts[rtts.len() / 2];

    let t0 = Instant::now();
    let consume = async {
        for _ in 0..messages {
            let d = consumer
                .next()
                .await
                .ok_or_else(|| err("the consumer ended"))?
                .map_err(err)?;
            d.acker.ack(BasicAckOptions::default()).await.map_err(err)?;
        }
        Ok::<(), BaselineError>(())
    };
    let produce = async {
        let mut pending: VecDeque<_> = VecDeque::with_capacity(in_flight);
        for _ in 0..messages {
            if pending.len() >= in_flight {
                if let Some(c) = pending.pop_front() {
                    acked(c).await?;
                }
            }
            pending.push_back(publish().await.map_err(err)?);
        }
        for c in pending {
            acked(c).await?;
        }
        Ok::<(), BaselineError>(())
    };
    let (c, p) = tokio::join!(consume, produce);
    c?;
    p?;
    Ok(RawFigures {
        roundtrip_p50_us,
        msgs_per_s: messages as f64 / t0.elapsed().as_secs_f64().max(1e-9),
    })
}

async fn acked(
    c: impl std::future::Future<Output = lapin::Result<lapin::Confirmation>>,
) -> Result<(), BaselineError> {
    if c.await.map_err(err)?.is_ack() {
        Ok(())
    } else {
        Err(err("the broker refused a message"))
    }
}

/// Deletes `queues` (a missing one is fine): a benchmark's clean-up.
pub async fn delete_queues(
    url: &str,
    ca_file: Option<&std::path::Path>,
    queues: &[String],
) -> Result<(), BaselineError> {
    let conn = connect(url, ca_file, Duration::from_secs(10)).await?;
    for q in queues {
        // A channel per delete: a failed delete closes its channel.
        let ch = conn.create_channel().await.map_err(err)?;
        if let Err(e) = ch
            .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
            .await
        {
            tracing::debug!(queue = %q, error = %e, "queue not deleted");
        }
        let _ = ch.close(200, "deleted".into()).await;
    }
    let _ = conn.close(200, "cleanup done".into()).await;
    Ok(())
}
