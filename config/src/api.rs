//! `[api]`: where `recman up` serves the HTTP API and the bearer token file.

use std::net::SocketAddr;
use std::path::PathBuf;

use toml::de::DeTable;

use super::{field, ConfigError, Cx};

/// The default listen address of the HTTP API (loopback only).
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7080";

/// `[api]` of the config.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ApiConfig {
    /// `listen = "ADDR:PORT"` (default 127.0.0.1:7080).
    pub listen: Option<SocketAddr>,
    /// `token_file = "path"`: a file holding the bearer token clients must
    /// send. Required to listen on anything but loopback.
    pub token_file: Option<PathBuf>,
}

pub(super) fn parse(cx: &Cx<'_>, root: &DeTable<'_>) -> Result<ApiConfig, ConfigError> {
    let Some(v) = field(root, "api") else {
        return Ok(ApiConfig::default());
    };
    let t = cx.table(v, "api")?;
    cx.check_keys(t, "api", &["listen", "token_file"])?;
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
    Ok(ApiConfig {
        listen,
        token_file: cx.path(t, "api", "token_file")?,
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
