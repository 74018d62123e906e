//! `[audit]`: how often the engine publishes the log's head (`{seq, hash,
//! at}`) to the `[[notify]]` sinks whose `events` list `log_head`, so a cut
//! tail of the log is detectable from outside (`recman audit --check-head`).
//!
//! ```toml
//! [audit]
//! publish_head_every = "1h"   # default when a sink lists "log_head"; from 1s to 24h
//! ```

use std::time::Duration;

use toml::de::DeTable;

use super::{field, ConfigError, Cx, NotifyConfig};
use crate::notify::LOG_HEAD_KIND;

/// The period when a sink lists `log_head` and `[audit]` does not say.
pub const DEFAULT_PUBLISH_HEAD_EVERY: Duration = Duration::from_secs(3600);
const MIN: Duration = Duration::from_secs(1);

/// `[audit]` of the config.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuditConfig {
    /// How often the head goes to the sinks that list `log_head` (none: no
    /// sink does, nothing is published).
    pub publish_head_every: Option<Duration>,
}

pub(crate) fn parse(
    cx: &Cx<'_>,
    root: &DeTable<'_>,
    sinks: &[NotifyConfig],
) -> Result<AuditConfig, ConfigError> {
    let wanted = sinks.iter().any(|s| s.events.iter().any(|e| e == LOG_HEAD_KIND));
    let Some(v) = field(root, "audit") else {
        return Ok(AuditConfig {
            publish_head_every: wanted.then_some(DEFAULT_PUBLISH_HEAD_EVERY),
        });
    };
    let t = cx.table(v, "audit")?;
    cx.check_keys(t, "audit", &["publish_head_every"])?;
    let every = cx.duration(t, "audit", "publish_head_every")?;
    let span = || {
        field(t, "publish_head_every")
            .map(|v| v.span())
            .unwrap_or_default()
    };
    if let Some(d) = every {
        if d < MIN {
            return Err(cx.err(span(), "audit.publish_head_every", "at least 1s"));
        }
        if !wanted {
            return Err(cx.err(
                span(),
                "audit.publish_head_every",
                "no [[notify]] sink lists \"log_head\" in its events, so the head would go nowhere: \
                 add \"log_head\" to the events of the sink that should keep it",
            ));
        }
    }
    Ok(AuditConfig {
        publish_head_every: every.or(wanted.then_some(DEFAULT_PUBLISH_HEAD_EVERY)),
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::{Config, ConfigError, DEFAULT_PUBLISH_HEAD_EVERY};

    const SINK: &str = "[[notify]]\nid = \"heads\"\nkind = \"webhook\"\nurl = \"https://h.example.com/\"\n\
                        secret_file = \"s\"\nevents = [\"failed\", \"log_head\"]\n";

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::from_str(text, "/etc/recman/recman.toml")
    }

    #[test]
    fn a_sink_that_lists_log_head_gets_the_head_hourly_or_as_configured() {
        assert_eq!(
            parse(SINK).unwrap().audit.publish_head_every,
            Some(DEFAULT_PUBLISH_HEAD_EVERY)
        );
        let c = parse(&format!("[audit]\npublish_head_every = \"10m\"\n{SINK}")).unwrap();
        assert_eq!(c.audit.publish_head_every, Some(Duration::from_secs(600)));
        let c = parse(&SINK.replace(", \"log_head\"", "")).unwrap();
        assert_eq!(c.audit.publish_head_every, None, "no sink wants it");
    }

    #[test]
    fn bad_audit_settings_name_line_and_key() {
        for (text, line, key, says) in [
            (
                format!(
                    "[audit]\npublish_head_every = \"1h\"\n{}",
                    SINK.replace(", \"log_head\"", "")
                ),
                2,
                "audit.publish_head_every",
                "no [[notify]] sink lists \"log_head\"",
            ),
            (
                format!("[audit]\npublish_head_every = \"100ms\"\n{SINK}"),
                2,
                "audit.publish_head_every",
                "at least 1s",
            ),
            (
                format!("[audit]\npublish_head_every = \"48h\"\n{SINK}"),
                2,
                "audit.publish_head_every",
                "",
            ),
            (
                format!("[audit]\nhead_every = \"1h\"\n{SINK}"),
                2,
                "audit.head_every",
                "",
            ),
        ] {
            let e = parse(&text).unwrap_err();
            let ConfigError::Invalid { line: l, key: k, .. } = &e else {
                panic!("{e}")
            };
            assert_eq!((*l, k.as_str()), (line, key), "{text}\n{e}");
            assert!(e.to_string().contains(says), "{e}");
        }
    }
}
