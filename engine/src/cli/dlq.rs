//! `recman dlq`: the broker's dead letters (queue `recman.dlq`): list them
//! with their reason and origin, show one, publish one again to where it
//! came from, or drop it. Listing and showing give every message back.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use recman_events::bus::{Address, Bus, Delivery, Message, ORIGIN_HEADER, REASON_HEADER};

use crate::broker::AmqpArgs;
use crate::home::{Home, Missing};
use crate::render::escape;

#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  \
recman dlq --amqp amqp://operator@mq1/recman --amqp-password-file /etc/recman/operator-password\n  \
recman dlq --show req/bad-1\n  \
recman dlq --republish req/nightly-db01     # back to recman.requests (or recman.reports)\n  \
recman dlq --drop req/bad-1\n\n\
A message lands in recman.dlq when the engine or a worker refused it (it did not parse or\n\
validate: the reason says why) or when it came back too often (\"delivery limit\"). Listing reads\n\
up to --limit messages and gives every one back to the queue (order kept). --republish sends the\n\
message, unchanged but for the dead-letter headers, to the queue it came from, then removes it;\n\
only requests and reports are sent again: a stale command to a worker could freeze or thaw at the\n\
wrong time, so those can only be dropped. The broker user needs the \"operator\" row of the\n\
permission table in deploy/README.md.\n\n\
Exit codes: 0 done (also: nothing dead-lettered), 1 no message with that id, 2 could not run\n\
(no broker, refused).")]
pub struct Args {
    #[command(flatten)]
    pub amqp: AmqpArgs,
    /// Print one message whole: its headers and its body.
    #[arg(long, value_name = "MESSAGE_ID", group = "action")]
    pub show: Option<String>,
    /// Publish the message again to the queue it came from, then remove it.
    #[arg(long, value_name = "MESSAGE_ID", group = "action")]
    pub republish: Option<String>,
    /// Remove the message for good.
    #[arg(long, value_name = "MESSAGE_ID", group = "action")]
    pub drop: Option<String>,
    /// Most messages read (listed, or searched for the id).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u16).range(1..))]
    pub limit: u16,
}

/// How long to wait for the first message and then for each next one: an
/// empty queue answers with nothing at all.
const FIRST_WAIT: Duration = Duration::from_secs(2);
const NEXT_WAIT: Duration = Duration::from_millis(300);

pub async fn run(g: &Home, a: Args) -> anyhow::Result<ExitCode> {
    let config = if g.config.is_some() || g.config_file().exists() {
        Some(g.load_config(Missing::Fail)?)
    } else {
        None
    };
    let bus = a
        .amqp
        .connect(
            config.as_ref(),
            format!("recman-dlq-{}", std::process::id()),
            false,
        )
        .await?;
    // How many are there: each of them is taken before any goes back, so
    // none still waiting in the queue gets ahead of those given back (a
    // quorum queue delivers returned messages first, in return order).
    let ready = bus.ready(&Address::DeadLetters).await.map_or(0, |n| n as usize);
    let mut seen = 0;
    let wait = |seen: usize| {
        if seen == 0 || seen < ready {
            FIRST_WAIT
        } else {
            NEXT_WAIT
        }
    };
    let mut consumer = bus
        .consume(Address::DeadLetters, a.limit)
        .await
        .context("reading recman.dlq (does the user have the \"operator\" row of deploy/README.md?)")?;
    let mut held: Vec<Delivery> = Vec::new();
    let wanted = a.show.as_ref().or(a.republish.as_ref()).or(a.drop.as_ref());
    let mut found = None;
    while held.len() < a.limit as usize {
        let Ok(Some(d)) = tokio::time::timeout(wait(seen), consumer.recv()).await else {
            break;
        };
        seen += 1;
        if wanted.is_some_and(|id| *id == d.message.message_id) {
            found = Some(d);
            break;
        }
        held.push(d);
    }
    let code = match (wanted, found) {
        (None, _) => {
            list(&held);
            ExitCode::SUCCESS
        }
        (Some(id), None) => {
            eprintln!(
                "no dead letter with message id {} among the {} read (see `recman dlq`)",
                escape(id),
                held.len()
            );
            ExitCode::from(1)
        }
        (Some(_), Some(d)) => {
            let (code, back) = act(&a, bus.as_ref(), d).await?;
            held.extend(back);
            code
        }
    };
    // Every message not removed goes back, in the order it was read (a
    // quorum queue delivers returned messages first, in return order).
    // Those the broker sent ahead (prefetch) and not yet read go back too,
    // after them, not at the channel's close.
    while seen < a.limit as usize {
        let Ok(Some(d)) = tokio::time::timeout(wait(seen), consumer.recv()).await else {
            break;
        };
        seen += 1;
        held.push(d);
    }
    for d in held {
        d.nack().await.context("giving a message back to recman.dlq")?;
    }
    Ok(code)
}

fn reason(m: &Message) -> &str {
    m.header(REASON_HEADER).unwrap_or("?")
}

fn origin(m: &Message) -> &str {
    m.header(ORIGIN_HEADER).unwrap_or("?")
}

fn list(held: &[Delivery]) {
    if held.is_empty() {
        println!("recman.dlq is empty");
        return;
    }
    println!("{:<36} {:<8} {:<22} reason", "MESSAGE ID", "TYPE", "FROM");
    for d in held {
        let m = &d.message;
        let mut r = escape(reason(m)).into_owned();
        if r.chars().count() > 120 {
            r = r.chars().take(119).collect::<String>() + "…";
        }
        println!(
            "{:<36} {:<8} {:<22} {r}",
            escape(&m.message_id),
            escape(&m.msg_type),
            escape(origin(m))
        );
    }
    println!(
        "{} message(s); `recman dlq --show ID` prints one whole",
        held.len()
    );
}

/// Does what `a` asks with `d`; returns the exit code and `d` when it
/// stays in the queue (given back by the caller, in order).
async fn act(a: &Args, bus: &dyn Bus, d: Delivery) -> anyhow::Result<(ExitCode, Option<Delivery>)> {
    let m = &d.message;
    if a.show.is_some() {
        println!("message id: {}", escape(&m.message_id));
        println!("type:       {}", escape(&m.msg_type));
        for (k, v) in &m.headers {
            println!("{}: {}", escape(k), escape(v));
        }
        let body = String::from_utf8_lossy(&m.body);
        let pretty = serde_json::from_slice::<serde_json::Value>(&m.body)
            .ok()
            .and_then(|v| serde_json::to_string_pretty(&v).ok());
        println!();
        for line in pretty.as_deref().unwrap_or(&body).lines() {
            println!("{}", escape(line));
        }
        return Ok((ExitCode::SUCCESS, Some(d)));
    }
    if a.drop.is_some() {
        let id = m.message_id.clone();
        d.ack().await?;
        println!("dropped {}", escape(&id));
        return Ok((ExitCode::SUCCESS, None));
    }
    // Republish: to where it came from, requests and reports only.
    let to = match origin(m) {
        "recman.requests" => Address::Requests,
        "recman.reports" => Address::Reports,
        other => {
            let why = format!(
                "{} came from {}: only requests and reports are published again (a stale command \
                 could freeze or thaw at the wrong time); `recman dlq --drop` removes it",
                escape(&m.message_id),
                escape(other)
            );
            eprintln!("error: {why}");
            return Ok((ExitCode::from(2), Some(d)));
        }
    };
    let mut again = Message::new(m.msg_type.clone(), m.message_id.clone(), m.body.clone());
    again.headers = m.headers.clone();
    for h in [REASON_HEADER, ORIGIN_HEADER] {
        again.headers.remove(h);
    }
    let id = m.message_id.clone();
    // Published (and confirmed) before it leaves the dead-letter queue:
    // a crash in between leaves a copy in both, never in neither.
    bus.publish(to.clone(), again)
        .await
        .with_context(|| format!("publishing {} to {to}", escape(&id)))?;
    d.ack().await?;
    println!("published {} again to {to}", escape(&id));
    Ok((ExitCode::SUCCESS, None))
}
