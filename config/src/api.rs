//! `[api]`: where `recman up` serves the HTTP API and the bearer token file.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use toml::de::DeTable;

use super::{field, ConfigError, Cx};

/// The default listen address of the HTTP API (loopback only).
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7080";

/// `[api]` of the config.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ApiConfig {
    /// `listen = "ADDR:PORT"` (`recman up`: default 127.0.0.1:7080;
    /// `recman engine`: no API without it or `--listen`).
    pub listen: Option<SocketAddr>,
    /// `token_file = "path"`: a file holding the bearer token clients must
    /// send. Required to listen on anything but loopback.
    pub token_file: Option<PathBuf>,
    /// `max_connections = N`: open HTTP connections at most (event streams
    /// included); one more is answered 503 and closed. Default 512.
    pub max_connections: Option<u32>,
    /// `header_timeout = "15s"`: how long a client may take to send its
    /// request headers, and how long a keep-alive connection may sit idle.
    pub header_timeout: Option<Duration>,
}

/// Bounds of `[api] header_timeout`.
const HEADER_TIMEOUT_RANGE: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(600));

pub(super) fn parse(cx: &Cx<'_>, root: &DeTable<'_>) -> Result<ApiConfig, ConfigError> {
    let Some(v) = field(root, "api") else {
        return Ok(ApiConfig::default());
    };
    let t = cx.table(v, "api")?;
    cx.check_keys(
        t,
        "api",
        &["listen", "token_file", "max_connections", "header_timeout"],
    )?;
    let listen = match cx.string(t, "api", "listen")? {
        None => None,
        Some((s, span)) => Some(s.parse::<SocketAddr>().map_err(|_| {
            cx.err(
                span,
                "api.listen",
                format!("\"{s}\" is not ADDR:PORT (e.g. {DEFAULT_LISTEN})"),
            )
        })?),
    };
    let max_connections = cx.u32(t, "api", "max_connections")?;
    if let Some(n) = max_connections {
        if !(1..=100_000).contains(&n) {
            let span = field(t, "max_connections").map(|v| v.span()).unwrap_or_default();
            return Err(cx.err(span, "api.max_connections", "must be from 1 to 100000"));
        }
    }
    let header_timeout = cx.duration(t, "api", "header_timeout")?;
    if let Some(d) = header_timeout {
        let (min, max) = HEADER_TIMEOUT_RANGE;
        if d < min || d > max {
            let span = field(t, "header_timeout").map(|v| v.span()).unwrap_or_default();
            return Err(cx.err(
                span,
                "api.header_timeout",
                format!("must be from {min:?} to {max:?}"),
            ));
        }
    }
    let token_file = cx.path(t, "api", "token_file")?;
    if let (Some(l), None) = (listen, &token_file) {
        if !l.ip().is_loopback() {
            let span = field(t, "listen").map(|v| v.span()).unwrap_or_default();
            return Err(cx.err(
                span,
                "api.listen",
                format!(
                    "{l} is not a loopback address and no token is set: add `token_file = \"/etc/recman/api-token\"` \
                     (clients then send `Authorization: Bearer <token>`) or listen on 127.0.0.1"
                ),
            ));
        }
    }
    Ok(ApiConfig {
        listen,
        token_file,
        max_connections,
        header_timeout,
    })
}

#[cfg(test)]
mod tests {
    use crate::{Config, ConfigError};

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::from_str(text, "/etc/recman/recman.toml")
    }

    #[test]
    fn api_listen_and_token_file() {
        let c = parse("[api]\nlisten = \"127.0.0.1:9000\"\ntoken_file = \"token\"\n").unwrap();
        assert_eq!(c.api.listen, Some("127.0.0.1:9000".parse().unwrap()));
        assert_eq!(
            c.api.token_file.as_deref(),
            Some(std::path::Path::new("/etc/recman/token"))
        );
        assert_eq!(parse("").unwrap().api, super::ApiConfig::default());
    }

    #[test]
    fn api_limits_are_read_and_bounded() {
        let c = parse("[api]\nmax_connections = 20\nheader_timeout = \"2s\"\n").unwrap();
        assert_eq!(c.api.max_connections, Some(20));
        assert_eq!(c.api.header_timeout, Some(std::time::Duration::from_secs(2)));
        for bad in [
            "[api]\nmax_connections = 0\n",
            "[api]\nmax_connections = 1000000\n",
            "[api]\nheader_timeout = \"1h\"\n",
            "[api]\nheader_timeout = \"1ms\"\n",
        ] {
            let e = parse(bad).unwrap_err().to_string();
            assert!(e.contains(":2:") && e.contains("api."), "{bad}: {e}");
        }
    }

    #[test]
    fn a_bad_listen_or_key_names_line_and_key() {
        let e = parse("\n[api]\nlisten = \"localhost\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(":3:") && e.contains("api.listen") && e.contains("ADDR:PORT"),
            "{e}"
        );
        let e = parse("[api]\nport = 1\n").unwrap_err().to_string();
        assert!(e.contains("api.port") || e.contains("port"), "{e}");
    }
}
