//! `[log]`: an event log in PostgreSQL instead of the data dir's file, for
//! engines that must survive the loss of their machine (a standby engine
//! waits for the log's writer lock): `postgres`, `password_file`, `schema`,
//! `lease`; for a data dir's log, `archive_after` and `segment_records`
//! (old records move to closed segment files).

use std::path::PathBuf;
use std::time::Duration;

use toml::de::DeTable;

use super::{field, ConfigError, Cx};

/// `[log] postgres = "postgresql://recman@db1:5432/recman"`,
/// `password_file = "/etc/recman/pg-password"`, `schema = "recman"`,
/// `lease = "5s"`; or, for the data dir's log, `archive_after = "30d"`,
/// `segment_records = 250000`.
/// The password never goes in the config (nor in the URL): keep it in the file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogConfig {
    /// The connection string, without a password; `None`: the data dir's log.
    pub postgres: Option<String>,
    pub password_file: Option<PathBuf>,
    /// The schema of the log's tables (default `recman`).
    pub schema: String,
    /// The leader's lease on a PostgreSQL log (default [`DEFAULT_LEASE`]): a
    /// leader that has not renewed it for this long is replaced by a standby.
    pub lease: Option<Duration>,
    /// Records older than this leave the live store for closed segments
    /// (`segments/` in the data dir); `None`: never (the default).
    pub archive_after: Option<Duration>,
    /// About how many records one segment file holds.
    pub segment_records: u32,
}

/// The default size of a closed segment, in records.
pub const DEFAULT_SEGMENT_RECORDS: u32 = 250_000;
/// The shortest `archive_after`: records younger than a day stay live.
pub const MIN_ARCHIVE_AFTER: Duration = Duration::from_secs(86_400);
/// The longest `archive_after` (about ten years).
pub const MAX_ARCHIVE_AFTER: Duration = Duration::from_secs(3_660 * 86_400);

/// The default lease of the leader of a PostgreSQL log.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(5);
/// The shortest lease allowed (renewals every fifth of it).
pub const MIN_LEASE: Duration = Duration::from_secs(1);
/// The longest lease allowed.
pub const MAX_LEASE: Duration = Duration::from_secs(600);

impl LogConfig {
    /// The lease in force.
    pub fn lease(&self) -> Duration {
        self.lease.unwrap_or(DEFAULT_LEASE)
    }

    /// Records per closed segment ([`DEFAULT_SEGMENT_RECORDS`] unless set).
    pub fn segment_records(&self) -> usize {
        match self.segment_records {
            0 => DEFAULT_SEGMENT_RECORDS as usize,
            n => n as usize,
        }
    }
}

/// The default schema of a PostgreSQL log.
pub const DEFAULT_SCHEMA: &str = "recman";

fn plain_identifier(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.starts_with(|c: char| c.is_ascii_lowercase())
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

pub(super) fn parse(cx: &Cx<'_>, root: &DeTable<'_>) -> Result<LogConfig, ConfigError> {
    let Some(v) = field(root, "log") else {
        return Ok(LogConfig {
            schema: DEFAULT_SCHEMA.into(),
            segment_records: DEFAULT_SEGMENT_RECORDS,
            ..Default::default()
        });
    };
    let t = cx.table(v, "log")?;
    cx.check_keys(
        t,
        "log",
        &[
            "postgres",
            "password_file",
            "schema",
            "lease",
            "archive_after",
            "segment_records",
        ],
    )?;
    let postgres = match cx.string(t, "log", "postgres")? {
        None => None,
        Some((u, span)) => {
            if !(u.starts_with("postgresql://") || u.starts_with("postgres://")) {
                return Err(cx.err(
                    span,
                    "log.postgres",
                    "must be a URL like postgresql://recman@db1:5432/recman",
                ));
            }
            let authority = u.split_once("://").map_or("", |(_, r)| r);
            let userinfo = authority.split(['/', '?']).next().unwrap_or("");
            if userinfo.rsplit_once('@').is_some_and(|(ui, _)| ui.contains(':')) || u.contains("password=") {
                return Err(cx.err(
                    span,
                    "log.postgres",
                    "holds a password: put it in a file and name it in password_file",
                ));
            }
            Some(u)
        }
    };
    let schema = match cx.string(t, "log", "schema")? {
        None => DEFAULT_SCHEMA.to_string(),
        Some((s, span)) => {
            if !plain_identifier(&s) {
                return Err(cx.err(
                    span,
                    "log.schema",
                    "use lower-case letters, digits and `_`, starting with a letter (at most 63)",
                ));
            }
            s
        }
    };
    let password_file = cx.path(t, "log", "password_file")?;
    if postgres.is_none() && password_file.is_some() {
        return Err(cx.err(
            v.span(),
            "log.password_file",
            "names a password but no `postgres` URL is given",
        ));
    }
    let lease = cx.duration(t, "log", "lease")?;
    if let Some(d) = lease {
        if !(MIN_LEASE..=MAX_LEASE).contains(&d) {
            let span = field(t, "lease").map(|v| v.span()).unwrap_or_default();
            return Err(cx.err(
                span,
                "log.lease",
                format!("{d:?} is out of range: from {MIN_LEASE:?} to {MAX_LEASE:?}"),
            ));
        }
        if postgres.is_none() {
            return Err(cx.err(
                field(t, "lease").map(|v| v.span()).unwrap_or_default(),
                "log.lease",
                "is a lease on a PostgreSQL log but no `postgres` URL is given",
            ));
        }
    }
    let archive_after =
        cx.duration_within(t, "log", "archive_after", MIN_ARCHIVE_AFTER, MAX_ARCHIVE_AFTER)?;
    if archive_after.is_some() && postgres.is_some() {
        return Err(cx.err(
            field(t, "archive_after").map(|v| v.span()).unwrap_or_default(),
            "log.archive_after",
            "archives a data dir's log into segment files; a PostgreSQL log is archived with \
             PostgreSQL's own tools (partitioning, pg_dump)",
        ));
    }
    let segment_records = match cx.u32(t, "log", "segment_records")? {
        None => DEFAULT_SEGMENT_RECORDS,
        Some(n) if (1_000..=10_000_000).contains(&n) => n,
        Some(n) => {
            return Err(cx.err(
                field(t, "segment_records").map(|v| v.span()).unwrap_or_default(),
                "log.segment_records",
                format!("{n} is out of range: from 1000 to 10000000"),
            ))
        }
    };
    Ok(LogConfig {
        postgres,
        password_file,
        schema,
        lease,
        archive_after,
        segment_records,
    })
}
