//! Broker options shared by `recman engine`, `worker`, `up` and `bench jobs`:
//! the URLs (flags, config `[amqp] url`/`urls`, or `RECMAN_AMQP_URL`; one per
//! node of a cluster), the password file, the CA, the quorum queues'
//! replicas, and the connection itself.

use std::path::PathBuf;
use std::sync::Arc;

use recman_amqp::{AmqpBus, AmqpOptions};
use recman_config::Config;

#[derive(Debug, Clone, clap::Args)]
pub struct AmqpArgs {
    /// Broker URL, `amqp://USER@HOST:5672/VHOST` or `amqps://…` (TLS); for a
    /// cluster, once per node: the first that answers is used and, when its
    /// node goes away, the next. Default: `[amqp] url` (or `urls`) of the
    /// config, else $RECMAN_AMQP_URL (several separated by spaces). Put the
    /// password in --amqp-password-file rather than in the URL: it is never printed.
    #[arg(long = "amqp", value_name = "URL")]
    pub url: Vec<String>,
    /// File whose first line is the broker password (default: `[amqp] password_file`).
    #[arg(long, value_name = "FILE")]
    pub amqp_password_file: Option<PathBuf>,
    /// PEM file of the CA that signed the broker's certificate, for `amqps://`
    /// with a private CA (default: `[amqp] ca_file`, else $RECMAN_AMQP_CA_FILE;
    /// without one the system's CA store is used).
    #[arg(long, value_name = "FILE", env = "RECMAN_AMQP_CA_FILE")]
    pub amqp_ca_file: Option<PathBuf>,
    /// Deliveries after which a message is dead-lettered; must match the
    /// queues' `x-delivery-limit` + 1 where they already exist.
    #[arg(long, default_value_t = recman_events::bus::DEFAULT_DELIVERY_LIMIT)]
    pub delivery_limit: u32,
    /// Seconds to wait for the first connection to the broker.
    #[arg(long, value_name = "SECS", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub amqp_connect_timeout: u64,
    /// Seconds the connection may stay down (reconnection attempts included)
    /// before the process gives up and exits with status 2 for its
    /// supervisor (systemd `Restart=always`) to start it again.
    #[arg(long, value_name = "SECS", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub amqp_reconnect_timeout: u64,
    /// Replicas of each quorum queue (`x-quorum-initial-group-size`). Default:
    /// `[amqp] quorum_group_size`, else 3 when several broker URLs are given
    /// (a cluster), else the broker's default (one node). Every process on a
    /// broker must agree: RabbitMQ refuses a queue declared again with another value.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=99))]
    pub quorum_group_size: Option<u32>,
}

impl AmqpArgs {
    /// The URLs with their password, from the flags, the config or the environment.
    pub fn urls(&self, config: Option<&Config>) -> anyhow::Result<Vec<String>> {
        let cfg = config.map(|c| &c.amqp);
        let pw_file = self
            .amqp_password_file
            .clone()
            .or_else(|| cfg.and_then(|c| c.password_file.clone()));
        let from_config = cfg.map(|c| c.urls.clone()).unwrap_or_default();
        recman_amqp::url::resolve_all(&self.url, &from_config, pw_file.as_deref()).map_err(anyhow::Error::msg)
    }

    /// The replicas of each quorum queue: the flag, the config, else 3 for a
    /// cluster (several URLs), else none.
    pub fn quorum_group_size(&self, config: Option<&Config>, urls: usize) -> Option<u32> {
        self.quorum_group_size
            .or_else(|| config.and_then(|c| c.amqp.quorum_group_size))
            .or((urls > 1).then_some(3))
    }

    /// A broker is named (flag, `[amqp] url`/`urls` or $RECMAN_AMQP_URL).
    pub fn named(&self, config: &Config) -> bool {
        !self.url.is_empty()
            || !config.amqp.urls.is_empty()
            || std::env::var_os(recman_amqp::url::URL_ENV).is_some_and(|v| !v.is_empty())
    }

    /// Connects; `declare` = declare the whole topology (the engine's role).
    pub async fn connect(
        &self,
        config: Option<&Config>,
        name: String,
        declare: bool,
    ) -> anyhow::Result<Arc<AmqpBus>> {
        let urls = self.urls(config)?;
        let ca_file = self
            .amqp_ca_file
            .clone()
            .or_else(|| config.and_then(|c| c.amqp.ca_file.clone()));
        let opts = AmqpOptions {
            ca_file,
            delivery_limit: self.delivery_limit,
            connection_name: name,
            declare_topology: declare,
            connect_timeout: std::time::Duration::from_secs(self.amqp_connect_timeout.max(1)),
            reconnect_timeout: std::time::Duration::from_secs(self.amqp_reconnect_timeout.max(1)),
            quorum_group_size: self.quorum_group_size(config, urls.len()),
            ..Default::default()
        };
        Ok(AmqpBus::connect_any(&urls, opts).await?)
    }
}
