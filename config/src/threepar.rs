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
    /// The 3PAR host (as defined on the array) that mounts export the copy
    /// to; only mounts need it.
    pub mount_host: Option<String>,
    /// Where the config declares this provider (`file:line:column: key`),
    /// so a key missing for a recovery step is reported at its place.
    pub at: String,
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
    "mount_host",
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
    let expiration_hours = hours("expiration_hours")?;
    let retention_hours = hours("retention_hours")?;
    if let (Some(e), Some(r)) = (expiration_hours, retention_hours) {
        if r > e {
            let span = field(p, "retention_hours").map(|v| v.span()).unwrap_or(p_span);
            return Err(cx.err(
                span,
                &join(pkey, "retention_hours"),
                format!("{r} h of retention outlast the {e} h expiration: the array refuses that"),
            ));
        }
    }
    let mount_host = match cx.string(p, pkey, "mount_host")? {
        None => None,
        Some((h, span)) => {
            check_volume_name(&h).map_err(|m| cx.err(span, &join(pkey, "mount_host"), m))?;
            Some(h)
        }
    };
    Ok(ThreeParConfig {
        array,
        object,
        expiration_hours,
        retention_hours,
        mount_host,
        at: format!("{}: {pkey}", cx.at(p_span)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Config;

    const ARRAY: &str = "[array.a]\nurl = \"https://3par-a.example:8080\"\nuser = \"recman\"\npassword_file = \"secrets/a.pw\"\nca_file = \"/etc/recman/a-ca.pem\"\n";

    fn target(provider: &str) -> String {
        format!("{ARRAY}\n[[target]]\nid = \"db01\"\npool = \"host.mbx01\"\n[target.writer]\ntype = \"none\"\n[target.provider]\ntype = \"3par\"\n{provider}")
    }

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::from_str(text, "/etc/recman/recman.toml")
    }

    /// The error is at `line` for `key` and says `needle`.
    fn refused(text: &str, line: usize, key: &str, needle: &str) {
        let e = parse(text).expect_err("should be refused");
        let s = e.to_string();
        assert!(s.starts_with(&format!("/etc/recman/recman.toml:{line}:")), "{s}");
        assert!(s.contains(&format!(": {key}: ")), "{s}");
        assert!(s.contains(needle), "{s} should say {needle}");
    }

    #[test]
    fn a_3par_target_parses_with_its_array_and_defaults() {
        let c = parse(&target(
            "array = \"a\"\nvolume = \"DB01-vv\"\nexpiration_hours = 336\n",
        ))
        .unwrap();
        let t = &c.targets[0];
        assert_eq!(t.provider_pool.as_str(), "array.a", "the array's pool by default");
        assert_eq!(t.pool.as_str(), "host.mbx01");
        let crate::ProviderConfig::ThreePar(p) = &t.provider else {
            panic!("{:?}", t.provider)
        };
        assert_eq!(p.array.api_url, "https://3par-a.example:8080/api/v1");
        assert_eq!(p.array.password_file, PathBuf::from("/etc/recman/secrets/a.pw"));
        assert_eq!(p.array.max_sessions, DEFAULT_MAX_SESSIONS);
        assert_eq!(p.object, ThreeParObject::Volume("DB01-vv".into()));
        assert_eq!((p.expiration_hours, p.retention_hours), (Some(336), None));
        assert_eq!(p.mount_host, None);
        assert_eq!(p.at, "/etc/recman/recman.toml:12:1: target[0].provider");
        assert_eq!(
            t.to_string(),
            "db01 (writer none in host.mbx01, provider 3par in array.a)"
        );

        let text = target("array = \"a\"\nvolume_set = \"DB-set\"\n").replace(
            "pool = \"host.mbx01\"",
            "pool = \"host.mbx01\"\nprovider_pool = \"array.backup\"",
        );
        let c = parse(&text).unwrap();
        assert_eq!(c.targets[0].provider_pool.as_str(), "array.backup");
    }

    #[test]
    fn base_urls_get_api_v1_and_nothing_else() {
        assert_eq!(
            api_url("http://10.0.0.5:8008").unwrap(),
            "http://10.0.0.5:8008/api/v1"
        );
        assert_eq!(api_url("https://a:443/").unwrap(), "https://a:443/api/v1");
        assert_eq!(api_url("https://a:8080/api/v1").unwrap(), "https://a:8080/api/v1");
        assert!(api_url("a:8080").unwrap_err().contains("https://"));
        assert!(api_url("https://a:8080/other")
            .unwrap_err()
            .contains("base URL only"));
        assert!(api_url("https://u:pw@a:8080")
            .unwrap_err()
            .contains("password_file"));
    }

    #[test]
    fn arrays_need_trust_for_https_and_say_how() {
        let no_trust = ARRAY.replace("ca_file = \"/etc/recman/a-ca.pem\"\n", "");
        refused(&no_trust, 2, "array.a.url", "insecure_skip_verify = true");
        let both = format!("{ARRAY}insecure_skip_verify = true\n");
        refused(&both, 6, "array.a.insecure_skip_verify", "choose one");
        let insecure = format!("{no_trust}insecure_skip_verify = true\n");
        assert!(parse(&insecure).is_ok());
        let plain = no_trust.replace("https://3par-a.example:8080", "http://3par-a.example:8008");
        assert!(parse(&plain).is_ok(), "plain HTTP needs no trust settings");
        refused(
            &ARRAY.replace("user = \"recman\"\n", ""),
            1,
            "array.a.user",
            "missing",
        );
        refused(
            &format!("{ARRAY}pasword = \"x\"\n"),
            6,
            "array.a.pasword",
            "unknown key",
        );
        refused(
            &format!("{ARRAY}max_sessions = 0\n"),
            6,
            "array.a.max_sessions",
            "at least 1",
        );
        refused(
            &ARRAY.replace("[array.a]", "[array.\"a b\"]"),
            1,
            "array.a b",
            "invalid name",
        );
    }

    #[test]
    fn target_fields_are_checked() {
        refused(
            &target("volume = \"v\"\n"),
            12,
            "target[0].provider.array",
            "missing",
        );
        refused(
            &target("array = \"b\"\nvolume = \"v\"\n"),
            14,
            "target[0].provider.array",
            "unknown array \"b\" (declared: a)",
        );
        refused(
            &target("array = \"a\"\n"),
            12,
            "target[0].provider.volume",
            "volume_set",
        );
        refused(
            &target("array = \"a\"\nvolume = \"v\"\nvolume_set = \"s\"\n"),
            16,
            "target[0].provider.volume_set",
            "not both",
        );
        refused(
            &target("array = \"a\"\nvolume = \"a-volume-name-longer-than-31-chars\"\n"),
            15,
            "target[0].provider.volume",
            "1 to 31 characters",
        );
        refused(
            &target("array = \"a\"\nvolume = \"v/../x\"\n"),
            15,
            "target[0].provider.volume",
            "only letters",
        );
        refused(
            &target("array = \"a\"\nvolume = \"v\"\nexpiration_hours = 43801\n"),
            16,
            "target[0].provider.expiration_hours",
            "1 to 43800",
        );
        refused(
            &target("array = \"a\"\nvolume = \"v\"\nexpiration_hours = 24\nretention_hours = 48\n"),
            17,
            "target[0].provider.retention_hours",
            "outlast",
        );
        refused(
            &target("array = \"a\"\nvolume = \"v\"\nmount_host = \"a b\"\n"),
            16,
            "target[0].provider.mount_host",
            "only letters",
        );
        let c = parse(&target(
            "array = \"a\"\nvolume = \"v\"\nmount_host = \"backup01\"\n",
        ))
        .unwrap();
        let crate::ProviderConfig::ThreePar(p) = &c.targets[0].provider else {
            panic!()
        };
        assert_eq!(p.mount_host.as_deref(), Some("backup01"));
        refused(
            &target("array = \"a\"\nvolume = \"v\"\nsource = \"/x\"\n"),
            16,
            "target[0].provider.source",
            "unknown key",
        );
    }
}
