//! `[api]`: where `recman up` serves the HTTP API, its bearer token file and
//! its TLS certificate (required beyond loopback unless `insecure_http`).

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
    /// `tls_cert = "path"`: the server's certificate chain (PEM), with
    /// `tls_key`; the API then speaks HTTPS only (TLS 1.2 and 1.3), and
    /// both files are read again on SIGHUP.
    pub tls_cert: Option<PathBuf>,
    /// `tls_key = "path"`: the private key of `tls_cert` (PEM).
    pub tls_key: Option<PathBuf>,
    /// `insecure_http = true`: serve plain HTTP beyond loopback, knowingly
    /// (the token then crosses the network in clear; logged as a warning).
    pub insecure_http: bool,
    /// `ca_file = "path"`: the CA (PEM) the commands of this host trust for
    /// the server's certificate (default: the system's CA store).
    pub ca_file: Option<PathBuf>,
}

impl ApiConfig {
    /// The certificate and key files, when TLS is configured.
    pub fn tls(&self) -> Option<(&std::path::Path, &std::path::Path)> {
        Some((self.tls_cert.as_deref()?, self.tls_key.as_deref()?))
    }
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
        &[
            "listen",
            "token_file",
            "max_connections",
            "header_timeout",
            "tls_cert",
            "tls_key",
            "insecure_http",
            "ca_file",
        ],
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
    let tls_cert = cx.path(t, "api", "tls_cert")?;
    let tls_key = cx.path(t, "api", "tls_key")?;
    for (given, missing) in [("tls_cert", "tls_key"), ("tls_key", "tls_cert")] {
        if field(t, given).is_some() && field(t, missing).is_none() {
            let span = field(t, given).map(|v| v.span()).unwrap_or_default();
            return Err(cx.err(
                span,
                &format!("api.{given}"),
                format!("{given} without {missing}: give both (PEM files) or neither"),
            ));
        }
    }
    let insecure_http = cx.bool(t, "api", "insecure_http")?.unwrap_or(false);
    if let Some(l) = listen {
        if !l.ip().is_loopback() && tls_cert.is_none() && !insecure_http {
            let span = field(t, "listen").map(|v| v.span()).unwrap_or_default();
            return Err(cx.err(
                span,
                "api.listen",
                format!(
                    "{l} is not a loopback address and the API has no TLS: add `tls_cert` and `tls_key` \
                     (PEM files), or `insecure_http = true` to send the token in clear knowingly, or \
                     listen on 127.0.0.1"
                ),
            ));
        }
    }
    let ca_file = cx.path(t, "api", "ca_file")?;
    Ok(ApiConfig {
        listen,
        token_file,
        max_connections,
        header_timeout,
        tls_cert,
        tls_key,
        insecure_http,
        ca_file,
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
    fn beyond_loopback_the_api_needs_tls_or_a_knowing_insecure_http() {
        let token = "token_file = \"t\"\n";
        let e = parse(&format!("[api]\nlisten = \"10.0.0.5:7080\"\n{token}"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(":2:") && e.contains("api.listen") && e.contains("no TLS"),
            "{e}"
        );
        let c = parse(&format!(
            "[api]\nlisten = \"10.0.0.5:7080\"\n{token}tls_cert = \"c.pem\"\ntls_key = \"k.pem\"\n"
        ))
        .unwrap();
        assert_eq!(
            c.api.tls(),
            Some((
                std::path::Path::new("/etc/recman/c.pem"),
                std::path::Path::new("/etc/recman/k.pem")
            ))
        );
        let c = parse(&format!(
            "[api]\nlisten = \"10.0.0.5:7080\"\n{token}insecure_http = true\n"
        ))
        .unwrap();
        assert!(c.api.insecure_http && c.api.tls().is_none());
        // Loopback needs neither.
        assert!(parse("[api]\nlisten = \"127.0.0.1:7080\"\n").is_ok());
        for (bad, key) in [
            ("tls_cert = \"c.pem\"\n", "api.tls_cert"),
            ("tls_key = \"k.pem\"\n", "api.tls_key"),
            ("insecure_http = \"yes\"\n", "api.insecure_http"),
        ] {
            let e = parse(&format!("[api]\n{bad}")).unwrap_err().to_string();
            assert!(e.contains(":2:") && e.contains(key), "{bad}: {e}");
        }
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
