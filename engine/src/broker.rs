//! Broker options shared by `recman engine`, `worker`, `up` and `bench jobs`:
//! the URL (flag, config `[amqp] url`, or `RECMAN_AMQP_URL`), the password
//! file, the CA, and the connection itself.

use std::path::PathBuf;
use std::sync::Arc;

use recman_amqp::{AmqpBus, AmqpOptions};
use recman_config::Config;

#[derive(Debug, Clone, clap::Args)]
pub struct AmqpArgs {
    /// Broker URL, `amqp://USER@HOST:5672/VHOST` or `amqps://…` (TLS). Default:
    /// `[amqp] url` of the config, else $RECMAN_AMQP_URL. Put the password in
    /// --amqp-password-file rather than in the URL: it is never printed.
    #[arg(long = "amqp", value_name = "URL")]
    pub url: Option<String>,
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
}

impl AmqpArgs {
    /// The URL with its password, from the flag, the config or the environment.
    pub fn url(&self, config: Option<&Config>) -> anyhow::Result<String> {
        let cfg = config.map(|c| &c.amqp);
        let pw_file = self
            .amqp_password_file
            .clone()
            .or_else(|| cfg.and_then(|c| c.password_file.clone()));
        recman_amqp::url::resolve(
            self.url.as_deref(),
            cfg.and_then(|c| c.url.as_deref()),
            pw_file.as_deref(),
        )
        .map_err(anyhow::Error::msg)
    }

    /// A broker is named (flag, `[amqp] url` or $RECMAN_AMQP_URL).
    pub fn named(&self, config: &Config) -> bool {
        self.url.is_some()
            || config.amqp.url.is_some()
            || std::env::var_os(recman_amqp::url::URL_ENV).is_some_and(|v| !v.is_empty())
    }

    /// Connects; `declare` = declare the whole topology (the engine's role).
    pub async fn connect(
        &self,
        config: Option<&Config>,
        name: String,
        declare: bool,
    ) -> anyhow::Result<Arc<AmqpBus>> {
        let url = self.url(config)?;
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
            ..Default::default()
        };
        Ok(AmqpBus::connect(&url, opts).await?)
    }
}
