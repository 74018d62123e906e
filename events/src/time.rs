//! Unix milliseconds ⇄ RFC 3339 (UTC), without a date-time dependency: what
//! the CLI prints and parses, and the wire's point-in-time restore target.

/// `2026-11-26T01:45:00.123Z`.
pub fn rfc3339(ms: u64) -> String {
    let secs = (ms / 1000) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms % 1000
    )
}

/// Parses `YYYY-MM-DDTHH:MM:SS[.fff][Z|±HH:MM]` (a space may replace the `T`).
pub fn parse_rfc3339(s: &str) -> Result<u64, String> {
    let bad = || format!("invalid time \"{s}\" (write e.g. 2026-11-26T01:45:00Z)");
    let b = s.trim().as_bytes();
    if b.len() < 19 || b[4] != b'-' || b[7] != b'-' || !(b[10] == b'T' || b[10] == b' ' || b[10] == b't') {
        return Err(bad());
    }
    let num = |r: std::ops::Range<usize>| -> Result<i64, String> {
        std::str::from_utf8(&b[r])
            .ok()
            .and_then(|x| x.parse().ok())
            .ok_or_else(bad)
    };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return Err(bad());
    }
    let mut i = 19;
    let mut frac_ms = 0i64;
    if i < b.len() && b[i] == b'.' {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        let digits = std::str::from_utf8(&b[start..i]).map_err(|_| bad())?;
        if digits.is_empty() {
            return Err(bad());
        }
        let mut ms3 = digits.chars().take(3).collect::<String>();
        while ms3.len() < 3 {
            ms3.push('0');
        }
        frac_ms = ms3.parse().map_err(|_| bad())?;
    }
    let offset_s = match &b[i..] {
        [] | [b'Z'] | [b'z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let p = |x: &[u8]| std::str::from_utf8(x).ok().and_then(|v| v.parse::<i64>().ok());
            let (oh, om) = (p(&[*h1, *h2]).ok_or_else(bad)?, p(&[*m1, *m2]).ok_or_else(bad)?);
            let o = oh * 3600 + om * 60;
            if *sign == b'+' {
                o
            } else {
                -o
            }
        }
        _ => return Err(bad()),
    };
    let days = days_from_civil(y, mo, d);
    let secs = days * 86_400 + h * 3600 + mi * 60 + sec - offset_s;
    if secs < 0 {
        return Err(bad());
    }
    Ok(secs as u64 * 1000 + frac_ms as u64)
}

// Howard Hinnant's algorithms (public domain), proleptic Gregorian calendar.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_offsets() {
        let ms = 1_795_650_300_123; // 2026-11-26T...
        assert_eq!(parse_rfc3339(&rfc3339(ms)).unwrap(), ms);
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(1_764_081_211_123), "2025-11-25T14:33:31.123Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(parse_rfc3339("2000-03-01T00:00:00Z").unwrap(), 951_868_800_000);
        assert_eq!(
            parse_rfc3339("2000-03-01T01:00:00+01:00").unwrap(),
            parse_rfc3339("2000-03-01T00:00:00Z").unwrap()
        );
        assert!(parse_rfc3339("yesterday").is_err());
        assert!(parse_rfc3339("2000-13-01T00:00:00Z").is_err());
    }
}
