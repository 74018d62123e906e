//! Between recman's [`Message`] and AMQP properties: message id, type,
//! persistent delivery, JSON content type, headers as long strings, the
//! schema version header, the dead-letter reason for broker-made dead
//! letters, and the broker-validated `user_id` (as `USER_ID_HEADER`).

use std::collections::BTreeMap;

use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::BasicProperties;
use recman_events::bus::{
    Message, ALSO_ROUTE_HEADER, DELIVERY_LIMIT_REASON, ORIGIN_HEADER, REASON_HEADER, USER_ID_HEADER,
};
/// The wire schema version of the body.
pub const SCHEMA_HEADER: &str = "x-recman-schema-version";
/// RabbitMQ's count of earlier deliveries (quorum queues).
const DELIVERY_COUNT_HEADER: &str = "x-delivery-count";

pub fn properties(msg: &Message) -> BasicProperties {
    let mut headers = FieldTable::default();
    for (k, v) in &msg.headers {
        if k == USER_ID_HEADER {
            continue; // the receiving bus sets it from `user_id`
        }
        headers.insert(
            ShortString::from(k.as_str()),
            AMQPValue::LongString(v.as_str().into()),
        );
    }
    // RabbitMQ's sender-selected distribution: the message also goes where
    // these routing keys lead, once per queue.
    if let Some(also) = msg.headers.get(ALSO_ROUTE_HEADER) {
        let keys: Vec<AMQPValue> = also
            .split(',')
            .filter(|k| !k.is_empty())
            .map(|k| AMQPValue::LongString(k.into()))
            .collect();
        headers.insert("CC".into(), AMQPValue::FieldArray(keys.into()));
    }
    if !msg.headers.contains_key(SCHEMA_HEADER) {
        headers.insert(
            SCHEMA_HEADER.into(),
            AMQPValue::LongString(recman_events::SCHEMA_VERSION.to_string().into()),
        );
    }
    BasicProperties::default()
        .with_message_id(msg.message_id.as_str().into())
        .with_type(msg.msg_type.as_str().into())
        .with_content_type("application/json".into())
        .with_delivery_mode(2)
        .with_app_id("recman".into())
        .with_headers(headers)
}

fn value_text(v: &AMQPValue) -> Option<String> {
    Some(match v {
        AMQPValue::LongString(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        AMQPValue::ShortString(s) => s.as_str().to_string(),
        AMQPValue::Boolean(b) => b.to_string(),
        AMQPValue::ShortShortInt(i) => i.to_string(),
        AMQPValue::ShortShortUInt(i) => i.to_string(),
        AMQPValue::ShortInt(i) => i.to_string(),
        AMQPValue::ShortUInt(i) => i.to_string(),
        AMQPValue::LongInt(i) => i.to_string(),
        AMQPValue::LongUInt(i) => i.to_string(),
        AMQPValue::LongLongInt(i) => i.to_string(),
        AMQPValue::Timestamp(t) => t.to_string(),
        _ => return None,
    })
}

/// The message, and how many deliveries it had before this one.
pub fn message(props: &BasicProperties, body: Vec<u8>) -> (Message, u32) {
    let mut headers = BTreeMap::new();
    let mut earlier = 0;
    if let Some(t) = props.headers() {
        for (k, v) in t.inner() {
            if k.as_str() == DELIVERY_COUNT_HEADER {
                earlier = value_text(v).and_then(|s| s.parse().ok()).unwrap_or(0);
                continue;
            }
            if k.as_str() == USER_ID_HEADER {
                continue; // a sender's claim, not the broker's: dropped
            }
            if let Some(text) = value_text(v) {
                headers.insert(k.as_str().to_string(), text);
            }
        }
    }
    // The broker refuses a `user_id` that is not the publishing
    // connection's user, so this one is validated.
    if let Some(u) = props.user_id() {
        headers.insert(USER_ID_HEADER.into(), u.as_str().to_string());
    }
    // Dead-lettered by the broker itself (delivery limit, expiry): name the
    // reason the way recman does.
    if !headers.contains_key(REASON_HEADER) {
        if let Some(r) = headers.get("x-first-death-reason").cloned() {
            let reason = if r == "delivery_limit" {
                DELIVERY_LIMIT_REASON.to_string()
            } else {
                r
            };
            headers.insert(REASON_HEADER.into(), reason);
            if let Some(q) = headers.get("x-first-death-queue").cloned() {
                headers.entry(ORIGIN_HEADER.into()).or_insert(q);
            }
        }
    }
    let msg = Message {
        message_id: props
            .message_id()
            .as_ref()
            .map(|s| s.as_str().to_string())
            .unwrap_or_default(),
        msg_type: props
            .kind()
            .as_ref()
            .map(|s| s.as_str().to_string())
            .unwrap_or_default(),
        body,
        headers,
    };
    (msg, earlier)
}
