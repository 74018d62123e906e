//! Wall-clock helpers of the notifier: RFC 3339 text of a Unix time and the
//! next daily summary instant. Pure (the caller passes `now_ms`).

const DAY_MS: u64 = 86_400_000;

/// `2026-11-29T08:00:00Z` (UTC, whole seconds).
pub fn rfc3339(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// The first instant after `now_ms` at `minute_of_day` (UTC).
pub fn next_daily(now_ms: u64, minute_of_day: u32) -> u64 {
    let today = now_ms - now_ms % DAY_MS + u64::from(minute_of_day) * 60_000;
    if today > now_ms {
        today
    } else {
        today + DAY_MS
    }
}

/// Howard Hinnant's `civil_from_days`: days since 1970-01-01 → (y, m, d).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        // 2026-11-29T08:30:15Z
        assert_eq!(rfc3339(1_795_941_015_000), "2026-11-29T08:30:15Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn the_next_summary_is_today_or_tomorrow() {
        let midnight = 1_796_000_000_000 - 1_796_000_000_000 % DAY_MS;
        assert_eq!(next_daily(midnight + 60_000, 8 * 60), midnight + 8 * 3_600_000);
        assert_eq!(
            next_daily(midnight + 8 * 3_600_000, 8 * 60),
            midnight + DAY_MS + 8 * 3_600_000
        );
        assert_eq!(
            next_daily(midnight + 9 * 3_600_000, 8 * 60),
            midnight + DAY_MS + 8 * 3_600_000
        );
    }
}
