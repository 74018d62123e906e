//! `[[schedule]]` and a target's `rpo`: parsed into the core's types
//! (`recman_core::schedule`), every bad field named by file, line and key.

use std::time::Duration;

use recman_core::schedule::{Calendar, CalendarError, CatchUp, Overlap, Schedule};
use recman_events::{SnapshotKind, TargetId};
use toml::de::{DeTable, DeValue};

use crate::{field, join, parse_duration, ConfigError, Cx, TargetConfig};

/// The longest `rpo` and `every` (a year).
const MAX_POLICY_DURATION: Duration = Duration::from_secs(366 * 86_400);

/// `rpo = "26h"`: from a second to a year.
pub(crate) fn rpo(cx: &Cx<'_>, t: &DeTable<'_>, path: &str) -> Result<Option<Duration>, ConfigError> {
    long_duration(cx, t, path, "rpo", Duration::from_secs(1))
}

/// `rpo_counts = "any" | "verified"` (default any): which restore points
/// meet the RPO. `verified` needs a `[target.verify]` to ever be met.
pub(crate) fn rpo_counts(
    cx: &Cx<'_>,
    t: &DeTable<'_>,
    path: &str,
    has_verify: bool,
) -> Result<bool, ConfigError> {
    let Some((s, span)) = cx.string(t, path, "rpo_counts")? else {
        return Ok(false);
    };
    match s.as_str() {
        "any" => Ok(false),
        "verified" if has_verify => Ok(true),
        "verified" => Err(cx.err(
            span,
            &join(path, "rpo_counts"),
            "\"verified\" needs a [target.verify] section: without a verifier no restore point \
             is ever verified and the RPO could never be met",
        )),
        other => Err(cx.err(
            span,
            &join(path, "rpo_counts"),
            format!("\"{other}\" is not one of \"any\" (every completed snapshot) or \"verified\" (verified ones only)"),
        )),
    }
}

fn long_duration(
    cx: &Cx<'_>,
    t: &DeTable<'_>,
    path: &str,
    key: &str,
    min: Duration,
) -> Result<Option<Duration>, ConfigError> {
    match cx.string(t, path, key)? {
        None => Ok(None),
        Some((s, span)) => match parse_duration(&s) {
            Ok(d) if d >= min && d <= MAX_POLICY_DURATION => Ok(Some(d)),
            Ok(_) => Err(cx.err(
                span,
                &join(path, key),
                format!("\"{s}\" is out of range: from {}s to 366d", min.as_secs()),
            )),
            Err(m) => Err(cx.err(span, &join(path, key), m)),
        },
    }
}

/// Every `[[schedule]]`, checked against the targets.
pub(crate) fn schedules(
    cx: &Cx<'_>,
    root: &DeTable<'_>,
    targets: &[TargetConfig],
) -> Result<Vec<Schedule>, ConfigError> {
    let Some(v) = field(root, "schedule") else {
        return Ok(Vec::new());
    };
    let DeValue::Array(items) = v.get_ref() else {
        return Err(cx.err(
            v.span(),
            "schedule",
            "must be an array of tables: write [[schedule]]",
        ));
    };
    let mut out: Vec<Schedule> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let key = format!("schedule[{i}]");
        let t = cx.table(item, &key)?;
        cx.check_keys(
            t,
            &key,
            &[
                "id", "targets", "cron", "every", "timezone", "kind", "overlap", "catch_up", "jitter",
            ],
        )?;
        let (id, id_span) = cx.required(cx.string(t, &key, "id")?, item.span(), &key, "id")?;
        let id = cx.id(&id, id_span.clone(), &join(&key, "id"))?;
        if let Some(prev) = out.iter().position(|s| s.id == id) {
            return Err(cx.err(
                id_span,
                &join(&key, "id"),
                format!("duplicate schedule id \"{id}\" (already used by schedule[{prev}])"),
            ));
        }
        let tkey = join(&key, "targets");
        let Some(tv) = field(t, "targets") else {
            return Err(cx.err(item.span(), &tkey, "missing (required): the targets to snapshot"));
        };
        let names = cx.strings(tv, &tkey)?;
        if names.is_empty() {
            return Err(cx.err(tv.span(), &tkey, "must name at least one target"));
        }
        let mut ids: Vec<TargetId> = Vec::new();
        for n in names {
            let Some(target) = targets.iter().find(|x| x.id.as_str() == n) else {
                return Err(cx.err(
                    tv.span(),
                    &tkey,
                    format!("unknown target \"{n}\" (no [[target]] has this id)"),
                ));
            };
            if let Some(first) = ids.first().and_then(|f| targets.iter().find(|x| &x.id == f)) {
                if first.provider_pool != target.provider_pool {
                    return Err(cx.err(
                        tv.span(),
                        &tkey,
                        format!(
                            "a consistency group needs one provider pool: {} uses {} and {} uses {}",
                            first.id, first.provider_pool, target.id, target.provider_pool
                        ),
                    ));
                }
            }
            if ids.contains(&target.id) {
                return Err(cx.err(tv.span(), &tkey, format!("target \"{n}\" is named twice")));
            }
            ids.push(target.id.clone());
        }
        let cron = cx.string(t, &key, "cron")?;
        let every = long_duration(cx, t, &key, "every", Duration::from_secs(1))?;
        let tz = cx.string(t, &key, "timezone")?;
        let when = match (cron, every) {
            (Some(_), Some(_)) => {
                return Err(cx.err(item.span(), &key, "write either cron or every, not both"));
            }
            (None, None) => {
                return Err(cx.err(
                    item.span(),
                    &key,
                    "missing cron or every: write cron = \"0 2 * * *\" or every = \"4h\"",
                ))
            }
            (None, Some(d)) => {
                if let Some((_, span)) = tz {
                    return Err(cx.err(
                        span,
                        &join(&key, "timezone"),
                        "only with cron (every counts absolute time)",
                    ));
                }
                Calendar::every(d.as_millis() as u64).map_err(|m| {
                    let span = field(t, "every").map(|v| v.span()).unwrap_or(item.span());
                    cx.err(span, &join(&key, "every"), m)
                })?
            }
            (Some((expr, span)), None) => {
                let (zone, zspan) = tz.unwrap_or_else(|| ("UTC".into(), span.clone()));
                match Calendar::cron(&expr, &zone) {
                    Ok(c) => c,
                    Err(CalendarError::Cron(m)) => return Err(cx.err(span, &join(&key, "cron"), m)),
                    Err(CalendarError::Timezone(m)) => return Err(cx.err(zspan, &join(&key, "timezone"), m)),
                }
            }
        };
        let kind = match cx.string(t, &key, "kind")? {
            None => SnapshotKind::Full,
            Some((s, _)) if s == "full" => SnapshotKind::Full,
            Some((s, _)) if s == "copy" => SnapshotKind::Copy,
            Some((s, span)) => {
                return Err(cx.err(span, &join(&key, "kind"), format!("\"{s}\": use full or copy")))
            }
        };
        let overlap = match cx.string(t, &key, "overlap")? {
            None => Overlap::Skip,
            Some((s, _)) if s == "skip" => Overlap::Skip,
            Some((s, _)) if s == "queue_one" => Overlap::QueueOne,
            Some((s, span)) => {
                return Err(cx.err(
                    span,
                    &join(&key, "overlap"),
                    format!("\"{s}\": use skip or queue_one"),
                ))
            }
        };
        let catch_up = match cx.string(t, &key, "catch_up")? {
            None => CatchUp::Once,
            Some((s, _)) if s == "skip" => CatchUp::Skip,
            Some((s, _)) if s == "once" => CatchUp::Once,
            Some((s, span)) => {
                return Err(cx.err(
                    span,
                    &join(&key, "catch_up"),
                    format!("\"{s}\": use skip or once"),
                ))
            }
        };
        let jitter = match cx.string(t, &key, "jitter")? {
            None => Duration::ZERO,
            Some((s, span)) => match parse_duration(&s) {
                Ok(d) if d <= Duration::from_secs(86_400) => d,
                Ok(_) => return Err(cx.err(span, &join(&key, "jitter"), "at most 24h")),
                Err(m) => return Err(cx.err(span, &join(&key, "jitter"), m)),
            },
        };
        out.push(Schedule {
            id,
            targets: ids,
            when,
            kind,
            overlap,
            catch_up,
            jitter_ms: jitter.as_millis() as u64,
        });
    }
    Ok(out)
}
