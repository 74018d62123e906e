//! Config of the `3par` provider: `[array.<name>]` tables (WSAPI URL, user,
//! password file, TLS trust) and the `3par` fields of `[target.provider]`.

use std::path::PathBuf;
use std::time::Duration;

use toml::de::{DeTable, DeValue};

use super::{field, join, ConfigError, Cx};

/// Sessions one process opens to one array at most (the array serialises
/// the requests of one session and limits sessions per array).
pub const DEFAULT_MAX_SESSIONS: u32 = 4;
/// Per WSAPI request, connect included.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// The array accepts 1 to 43 800 hours for expiration and retention.
pub const MAX_HOURS: u32 = 43_800;
/// Longest 3PAR volume (and volume set) name.
pub const MAX_VOLUME_NAME: usize = 31;

/// One storage array reached through its WSAPI.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ArrayConfig {
    /// The `<name>` of `[array.<name>]`.
    pub name: String,
    /// Base URL with `/api/v1`, e.g. `https://3par-a:8080/api/v1`.
    pub api_url: String,
    pub user: String,
    /// File holding the password (first line; read at each login, never logged).
    pub password_file: PathBuf,
    /// PEM file of the CA (or the self-signed certificate) the array presents.
    pub ca_file: Option<PathBuf>,
    /// Accept any certificate (explicit opt-out; a warning is logged).
    pub insecure_skip_verify: bool,
    pub max_sessions: u32,
    pub timeout: Duration,
}

/// What a `3par` target snapshots: one volume, or one volume set (a
/// consistency group cut at one instant).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ThreeParObject {
    Volume(String),
    VolumeSet(String),
}

/// `[target.provider] type = "3par"`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ThreeParConfig {
    pub array: ArrayConfig,
    pub object: ThreeParObject,
    /// The array deletes the copy after this many hours.
    pub expiration_hours: Option<u32>,
    /// Nobody can delete the copy before this many hours (Virtual Lock
    /// licence; can never be shortened once set).
    pub retention_hours: Option<u32>,
}

const ARRAY_KEYS: &[&str] = &[
    "url",
    "user",
    "password_file",
    "ca_file",
    "insecure_skip_verify",
    "max_sessions",
    "timeout",
];

/// Parses every `[array.<name>]` of the document root.
pub(super) fn arrays(cx: &Cx<'_>, root: &DeTable<'_>) -> Result<Vec<ArrayConfig>, ConfigError> {
    let Some(v) = field(root, "array") else {
        return Ok(Vec::new());
    };
    let t = cx.table(v, "array")?;
    let mut out = Vec::new();
    for (name, item) in t.iter() {
        let key = format!("array.{}", name.get_ref());
        let name = cx.id(name.get_ref(), name.span(), &key)?;
        let a = cx.table(item, &key)?;
        cx.check_keys(a, &key, ARRAY_KEYS)?;
        let (url, url_span) = cx.required(cx.string(a, &key, "url")?, item.span(), &key, "url")?;
        let api_url = api_url(&url).map_err(|m| cx.err(url_span.clone(), &join(&key, "url"), m))?;
        let (user, user_span) = cx.required(cx.string(a, &key, "user")?, item.span(), &key, "user")?;
        if user.is_empty() {
            return Err(cx.err(user_span, &join(&key, "user"), "must not be empty"));
        }
        let password_file = cx.required(
            cx.path(a, &key, "password_file")?,
            item.span(),
            &key,
            "password_file",
        )?;
        let ca_file = cx.path(a, &key, "ca_file")?;
        let insecure_skip_verify = match field(a, "insecure_skip_verify") {
            None => false,
            Some(v) => match v.get_ref() {
                DeValue::Boolean(b) => *b,
                other => {
                    return Err(cx.err(
                        v.span(),
                        &join(&key, "insecure_skip_verify"),
                        format!("expected true or false, found {}", other.type_str()),
                    ))
                }
            },
        };
        let https = api_url.starts_with("https://");
        if https && ca_file.is_none() && !insecure_skip_verify {
            return Err(cx.err(
                url_span,
                &join(&key, "url"),
                "an https array needs ca_file = \"/path/to/ca.pem\" (the CA or the self-signed certificate the array presents) or, knowingly, insecure_skip_verify = true",
            ));
        }
        if ca_file.is_some() && insecure_skip_verify {
            let span = field(a, "insecure_skip_verify")
                .map(|v| v.span())
                .unwrap_or(item.span());
            return Err(cx.err(
                span,
                &join(&key, "insecure_skip_verify"),
                "choose one: ca_file (verify against it) or insecure_skip_verify = true (verify nothing)",
            ));
        }
        let max_sessions = cx.u32(a, &key, "max_sessions")?.unwrap_or(DEFAULT_MAX_SESSIONS);
        if max_sessions == 0 {
            let span = field(a, "max_sessions").map(|v| v.span()).unwrap_or(item.span());
            return Err(cx.err(span, &join(&key, "max_sessions"), "must be at least 1"));
        }
        out.push(ArrayConfig {
            name,
            api_url,
            user,
            password_file,
            ca_file,
            insecure_skip_verify,
            max_sessions,
            timeout: cx
                .duration(a, &key, "timeout")?
                .unwrap_or(DEFAULT_REQUEST_TIMEOUT),
        });
    }
    Ok(out)
}

/// `https://array:8080` → `https://array:8080/api/v1` (a trailing `/api/v1`
/// or `/` is accepted too).
pub fn api_url(url: &str) -> Result<String, String> {
    let u = url.trim().trim_end_matches('/');
    let rest = u
        .strip_prefix("https://")
        .or_else(|| u.strip_prefix("http://"))
        .ok_or_else(|| format!("\"{url}\" must start with https:// (or http:// for the plain WSAPI port)"))?;
    let host = rest.split('/').next().unwrap_or("");
    if host.is_empty() {
        return Err(format!("\"{url}\" names no host"));
    }
    if host.contains('@') {
        return Err("put the user in `user` and the password in `password_file`, not in the URL".into());
    }
    let base = u.strip_suffix("/api/v1").unwrap_or(u);
    if base.len() > base.find("://").map(|i| i + 3).unwrap_or(0) + host.len() {
        return Err(format!(
            "\"{url}\": give the array's base URL only, e.g. https://array:8080 (/api/v1 is appended)"
        ));
    }
    Ok(format!("{base}/api/v1"))
}

/// A 3PAR volume or set name: 1 to 31 of `[A-Za-z0-9._-]`.
fn check_volume_name(s: &str) -> Result<(), String> {
    if s.is_empty() || s.len() > MAX_VOLUME_NAME {
        return Err(format!(
            "\"{s}\" must be 1 to {MAX_VOLUME_NAME} characters (3PAR limit)"
        ));
    }
    if !s.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)) {
        return Err(format!("\"{s}\": only letters, digits, '.', '_' and '-'"));
    }
    Ok(())
}

pub(super) const PROVIDER_KEYS: &[&str] = &[
    "type",
    "array",
    "volume",
    "volume_set",
    "expiration_hours",
    "retention_hours",
];

/// The `3par` fields of `[target.provider]` (`p`, whose span is `p_span`).
pub(super) fn provider(
    cx: &Cx<'_>,
    p: &DeTable<'_>,
    p_span: std::ops::Range<usize>,
    pkey: &str,
    arrays: &[ArrayConfig],
) -> Result<ThreeParConfig, ConfigError> {
    cx.check_keys(p, pkey, PROVIDER_KEYS)?;
    let (name, span) = cx.required(cx.string(p, pkey, "array")?, p_span.clone(), pkey, "array")?;
    let array = match arrays.iter().find(|a| a.name == name) {
        Some(a) => a.clone(),
        None => {
            let known: Vec<&str> = arrays.iter().map(|a| a.name.as_str()).collect();
            return Err(cx.err(
                span,
                &join(pkey, "array"),
                if known.is_empty() {
                    format!("no [array.{name}] in this config: declare it with url, user and password_file")
                } else {
                    format!("unknown array \"{name}\" (declared: {})", known.join(", "))
                },
            ));
        }
    };
    let object = match (cx.string(p, pkey, "volume")?, cx.string(p, pkey, "volume_set")?) {
        (Some((v, span)), None) => {
            check_volume_name(&v).map_err(|m| cx.err(span, &join(pkey, "volume"), m))?;
            ThreeParObject::Volume(v)
        }
        (None, Some((s, span))) => {
            check_volume_name(&s).map_err(|m| cx.err(span, &join(pkey, "volume_set"), m))?;
            ThreeParObject::VolumeSet(s)
        }
        (Some(_), Some((_, span))) => {
            return Err(cx.err(
                span,
                &join(pkey, "volume_set"),
                "give either volume or volume_set, not both",
            ))
        }
        (None, None) => {
            return Err(cx.err(
                p_span,
                &join(pkey, "volume"),
                "missing (required): volume = \"<virtual volume>\" or volume_set = \"<volume set>\"",
            ))
        }
    };
    let hours = |key: &str| -> Result<Option<u32>, ConfigError> {
        match cx.u32(p, pkey, key)? {
            Some(h) if h == 0 || h > MAX_HOURS => {
                let span = field(p, key).map(|v| v.span()).unwrap_or(p_span.clone());
                Err(cx.err(span, &join(pkey, key), format!("must be 1 to {MAX_HOURS} hours")))
            }
            h => Ok(h),
        }
    };
    Ok(ThreeParConfig {
        array,
        object,
        expiration_hours: hours("expiration_hours")?,
        retention_hours: hours("retention_hours")?,
    })
}
