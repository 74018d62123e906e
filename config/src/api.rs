//! `[api]`: where `recman up` serves the HTTP API, its bearer token file and
//! its TLS certificate (required beyond loopback unless `insecure_http`),
//! and its users (`[[api.user]]`: a name, a hashed token, a role, a scope).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use toml::de::DeTable;

use super::{field, join, ConfigError, Cx};

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
    /// `[[api.user]]`: who may call the API, with which role, on which targets.
    pub users: Vec<ApiUser>,
}

/// What a caller of the API may do; each role may do everything the one
/// before it may.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Read everything: jobs, targets, snapshots, events, metrics.
    Viewer,
    /// Also snapshot, cancel, verify, mount and unmount, reconcile.
    Operator,
    /// Also restore (in place or to a path), clone, prune and delete,
    /// pause and resume schedules.
    Admin,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Viewer, Role::Operator, Role::Admin];

    pub fn as_str(&self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One `[[api.user]]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiUser {
    /// `name = "alice"`: recorded as `by` in every event the user causes.
    pub name: String,
    /// `token_file = "path"`: holds the SHA-256 of the user's token, in hex
    /// (`recman user add` writes it); never the token itself.
    pub token_file: PathBuf,
    pub role: Role,
    /// `targets = ["pg-*", "db01"]`: the targets the user may act on
    /// (`*` any run of characters, `?` one); empty: every target.
    pub targets: Vec<String>,
}

impl ApiUser {
    /// Whether the user may act on `target`.
    pub fn may_act_on(&self, target: &str) -> bool {
        in_scope(&self.targets, target)
    }
}

/// Whether `target` matches one of `patterns` (empty: every target).
pub fn in_scope(patterns: &[String], target: &str) -> bool {
    patterns.is_empty() || patterns.iter().any(|p| glob(p.as_bytes(), target.as_bytes()))
}

/// `*` matches any run of characters, `?` one; everything else itself.
/// Iterative with one backtrack point: linear in practice, never recursive.
pub fn glob(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && (pattern[p] == b'?' || pattern[p] == text[t]) {
            p += 1;
            t += 1;
        } else if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if let Some((sp, st)) = star {
            p = sp + 1;
            t = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// The name the single `[api] token_file` (a plain token) stands for: an
/// admin user.
pub const LEGACY_ADMIN: &str = "admin";

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
            "user",
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
    let users = users(cx, t, token_file.is_some())?;
    if let (Some(l), None, true) = (listen, &token_file, users.is_empty()) {
        if !l.ip().is_loopback() {
            let span = field(t, "listen").map(|v| v.span()).unwrap_or_default();
            return Err(cx.err(
                span,
                "api.listen",
                format!(
                    "{l} is not a loopback address and no token is set: add users (`[[api.user]]`, their \
                     token files written by `recman user add`) or `token_file = \"/etc/recman/api-token\"` \
                     (clients then send `Authorization: Bearer <token>`), or listen on 127.0.0.1"
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
        users,
    })
}

/// Bounds of a user's `targets`.
const MAX_SCOPE_PATTERNS: usize = 256;
const MAX_PATTERN_LEN: usize = 128;

/// Every `[[api.user]]`: unique names, a known role, a token file.
fn users(cx: &Cx<'_>, api: &DeTable<'_>, legacy: bool) -> Result<Vec<ApiUser>, ConfigError> {
    let Some(v) = field(api, "user") else {
        return Ok(Vec::new());
    };
    let toml::de::DeValue::Array(items) = v.get_ref() else {
        return Err(cx.err(
            v.span(),
            "api.user",
            "must be an array of tables: write [[api.user]]",
        ));
    };
    let mut out: Vec<ApiUser> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let key = format!("api.user[{i}]");
        let t = cx.table(item, &key)?;
        cx.check_keys(t, &key, &["name", "token_file", "role", "targets"])?;
        let (name, name_span) = cx.required(cx.string(t, &key, "name")?, item.span(), &key, "name")?;
        let name = cx.id(&name, name_span.clone(), &join(&key, "name"))?;
        if let Some(prev) = out.iter().position(|u| u.name == name) {
            return Err(cx.err(
                name_span,
                &join(&key, "name"),
                format!("duplicate user \"{name}\" (already api.user[{prev}])"),
            ));
        }
        if legacy && name == LEGACY_ADMIN {
            return Err(cx.err(
                name_span,
                &join(&key, "name"),
                format!(
                    "\"{LEGACY_ADMIN}\" is the user of `[api] token_file`: give this user another name, \
                     or drop token_file"
                ),
            ));
        }
        if name.starts_with("amqp:") || name.starts_with("cli:") || name.starts_with("schedule:") {
            return Err(cx.err(
                name_span,
                &join(&key, "name"),
                "names starting amqp:, cli: or schedule: are reserved",
            ));
        }
        let token_file = cx.required(cx.path(t, &key, "token_file")?, item.span(), &key, "token_file")?;
        let (role, role_span) = cx.required(cx.string(t, &key, "role")?, item.span(), &key, "role")?;
        let role = Role::parse(&role).ok_or_else(|| {
            cx.err(
                role_span,
                &join(&key, "role"),
                format!("unknown role \"{role}\" (one of viewer, operator, admin)"),
            )
        })?;
        let targets = match field(t, "targets") {
            None => Vec::new(),
            Some(tv) => {
                let tkey = join(&key, "targets");
                let pats = cx.strings(tv, &tkey)?;
                if pats.is_empty() {
                    return Err(cx.err(
                        tv.span(),
                        &tkey,
                        "is empty: leave it out for every target, or name at least one",
                    ));
                }
                if pats.len() > MAX_SCOPE_PATTERNS {
                    return Err(cx.err(tv.span(), &tkey, format!("at most {MAX_SCOPE_PATTERNS} patterns")));
                }
                if let Some(p) = pats
                    .iter()
                    .find(|p| p.is_empty() || p.len() > MAX_PATTERN_LEN || p.chars().any(char::is_whitespace))
                {
                    return Err(cx.err(
                        tv.span(),
                        &tkey,
                        format!("bad pattern \"{p}\": 1 to {MAX_PATTERN_LEN} characters, no spaces (`*` and `?` match)"),
                    ));
                }
                pats
            }
        };
        out.push(ApiUser {
            name,
            token_file,
            role,
            targets,
        });
    }
    Ok(out)
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
    fn users_have_a_name_a_hashed_token_file_a_role_and_a_scope() {
        let c = parse(
            "[api]\nlisten = \"10.0.0.5:7080\"\ninsecure_http = true\n\
             [[api.user]]\nname = \"alice\"\ntoken_file = \"alice.sha256\"\nrole = \"operator\"\n\
             targets = [\"pg-*\", \"db01\"]\n\
             [[api.user]]\nname = \"bob\"\ntoken_file = \"/etc/bob\"\nrole = \"viewer\"\n",
        )
        .unwrap();
        let u = &c.api.users;
        assert_eq!(u.len(), 2);
        assert_eq!(
            (u[0].name.as_str(), u[0].role, u[0].token_file.to_str()),
            ("alice", super::Role::Operator, Some("/etc/recman/alice.sha256"))
        );
        assert!(u[0].may_act_on("pg-main") && u[0].may_act_on("db01") && !u[0].may_act_on("db02"));
        assert!(u[1].targets.is_empty() && u[1].may_act_on("anything"));
        for (bad, line, key, says) in [
            (
                "[[api.user]]\nname = \"a\"\ntoken_file = \"f\"\nrole = \"root\"\n",
                4,
                "api.user[0].role",
                "unknown role",
            ),
            (
                "[[api.user]]\nname = \"a\"\nrole = \"admin\"\n",
                1,
                "api.user[0].token_file",
                "missing",
            ),
            (
                "[[api.user]]\nname = \"a b\"\ntoken_file = \"f\"\nrole = \"admin\"\n",
                2,
                "api.user[0].name",
                "invalid",
            ),
            (
                "[[api.user]]\nname = \"a\"\ntoken_file = \"f\"\nrole = \"admin\"\n\
                 [[api.user]]\nname = \"a\"\ntoken_file = \"g\"\nrole = \"viewer\"\n",
                6,
                "api.user[1].name",
                "duplicate",
            ),
            (
                "[[api.user]]\nname = \"a\"\ntoken_file = \"f\"\nrole = \"admin\"\ntargets = []\n",
                5,
                "api.user[0].targets",
                "empty",
            ),
            (
                "[[api.user]]\nname = \"a\"\ntoken_file = \"f\"\nrole = \"admin\"\nrolle = 1\n",
                5,
                "api.user[0].rolle",
                "unknown key",
            ),
            (
                "token_file = \"t\"\n[[api.user]]\nname = \"admin\"\ntoken_file = \"f\"\nrole = \"admin\"\n",
                3,
                "api.user[0].name",
                "token_file",
            ),
        ] {
            let text = if bad.starts_with("token_file") {
                format!("[api]\n{bad}")
            } else {
                bad.to_string()
            };
            let e = parse(&text).unwrap_err().to_string();
            let line = if bad.starts_with("token_file") {
                line + 1
            } else {
                line
            };
            assert!(
                e.contains(&format!(":{line}:")) && e.contains(key) && e.contains(says),
                "{bad}: {e}"
            );
        }
        // Users alone are enough beyond loopback (with TLS or insecure_http).
        assert!(parse(
            "[api]\nlisten = \"10.0.0.5:7080\"\ninsecure_http = true\n\
             [[api.user]]\nname = \"a\"\ntoken_file = \"f\"\nrole = \"admin\"\n"
        )
        .is_ok());
    }

    #[test]
    fn scope_patterns_match_stars_and_question_marks() {
        use super::glob;
        for (p, t, want) in [
            ("pg-*", "pg-main", true),
            ("pg-*", "pg-", true),
            ("pg-*", "db-pg-1", false),
            ("*", "", true),
            ("db0?", "db01", true),
            ("db0?", "db011", false),
            ("*-prod-*", "eu-prod-pg", true),
            ("a*b*c", "aXbYbZc", true),
            ("a*b*c", "aXbYbZ", false),
            ("db01", "db01", true),
            ("db01", "db02", false),
        ] {
            assert_eq!(glob(p.as_bytes(), t.as_bytes()), want, "{p} vs {t}");
        }
        // Hostile patterns stay cheap: no exponential backtracking.
        let p = "*a".repeat(60);
        let t = "a".repeat(5000) + "b";
        let at = std::time::Instant::now();
        assert!(!glob(p.as_bytes(), t.as_bytes()));
        assert!(at.elapsed() < std::time::Duration::from_secs(2));
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
