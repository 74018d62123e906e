//! WAL file names and backup labels, as plain data: which segment a
//! `backup_label` starts in, which archived files a restore point still
//! needs, and which an archive prune may remove (pg_archivecleanup's rule).
//! No I/O here; `prune.rs` applies it to the disk.

/// A WAL segment file name: 24 upper-case hex digits, timeline then segment
/// (`000000010000000000000003`).
pub fn is_segment(name: &str) -> bool {
    name.len() == 24 && name.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The segment a file of the archive belongs to: a segment itself, a
/// `.partial` segment, or a `.backup` history file (`<segment>.<offset>.backup`),
/// optionally compressed (`.gz`, `.lz4`, `.zst`, …). Timeline history files
/// (`00000002.history`) and anything else: `None` (never pruned).
pub fn segment_of(name: &str) -> Option<&str> {
    let seg = name.get(..24)?;
    if !is_segment(seg) {
        return None;
    }
    let rest = &name[24..];
    let rest = [".gz", ".lz4", ".zst", ".bz2", ".xz"]
        .iter()
        .find_map(|c| rest.strip_suffix(c))
        .unwrap_or(rest);
    let ok = rest.is_empty()
        || rest == ".partial"
        || rest
            .strip_prefix('.')
            .and_then(|r| r.strip_suffix(".backup"))
            .is_some_and(|off| off.len() == 8 && off.bytes().all(|b| b.is_ascii_hexdigit()));
    ok.then_some(seg)
}

/// The position of a segment in WAL order, timeline left out (the last 16
/// digits: log and segment number), as pg_archivecleanup compares them.
fn position(seg: &str) -> &str {
    &seg[8..]
}

/// The segment a backup started in, from its `backup_label`
/// (`START WAL LOCATION: 0/3000028 (file 000000010000000000000003)`).
pub fn label_start_segment(label: &str) -> Option<String> {
    let line = label.lines().find(|l| l.starts_with("START WAL LOCATION:"))?;
    let file = line.split("(file ").nth(1)?.strip_suffix(')')?;
    is_segment(file).then(|| file.to_string())
}

/// The segment a backup stopped in, from its `.backup` history file
/// (`STOP WAL LOCATION: 0/3000100 (file 000000010000000000000003)`).
pub fn history_stop_segment(history: &str) -> Option<String> {
    let line = history.lines().find(|l| l.starts_with("STOP WAL LOCATION:"))?;
    let file = line.split("(file ").nth(1)?.strip_suffix(')')?;
    is_segment(file).then(|| file.to_string())
}

/// Whether archived file `name` is older than everything `oldest_needed`
/// (the start segment of the oldest kept restore point) needs: segments,
/// partial segments and backup history files of an earlier position, on any
/// timeline. Timeline history files are always kept.
pub fn prunable(name: &str, oldest_needed: &str) -> bool {
    segment_of(name).is_some_and(|seg| position(seg) < position(oldest_needed))
}

/// Whether segment `seg` is at or after `other` in WAL order (timeline left out).
pub fn at_or_after(seg: &str, other: &str) -> bool {
    position(seg) >= position(other)
}

/// The segments from `first` to `last` (same timeline as `first`), in order;
/// empty when `last` is before `first`. Assumes the default 16 MiB segments
/// (256 per log file).
pub fn segments_between(first: &str, last: &str) -> Vec<String> {
    let parse = |s: &str| -> Option<(u32, u64)> {
        let tli = u32::from_str_radix(&s[..8], 16).ok()?;
        let log = u64::from_str_radix(&s[8..16], 16).ok()?;
        let seg = u64::from_str_radix(&s[16..24], 16).ok()?;
        Some((tli, log * 0x100 + seg))
    };
    let (Some((tli, a)), Some((_, b))) = (parse(first), parse(last)) else {
        return Vec::new();
    };
    (a..=b)
        .map(|n| format!("{tli:08X}{:08X}{:08X}", n / 0x100, n % 0x100))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const LABEL: &str = "START WAL LOCATION: 0/5000028 (file 000000010000000000000005)\n\
CHECKPOINT LOCATION: 0/5000060\nBACKUP METHOD: streamed\nBACKUP FROM: primary\n\
START TIME: 2026-11-29 06:00:00 UTC\nLABEL: recman pg1 r-x-1\nSTART TIMELINE: 1\n";

    #[test]
    fn names_of_the_archive_are_classified() {
        assert_eq!(
            segment_of("000000010000000000000003"),
            Some("000000010000000000000003")
        );
        assert_eq!(
            segment_of("000000010000000000000003.00000028.backup"),
            Some("000000010000000000000003")
        );
        assert_eq!(
            segment_of("000000010000000000000003.partial"),
            Some("000000010000000000000003")
        );
        assert_eq!(
            segment_of("000000010000000000000003.gz"),
            Some("000000010000000000000003")
        );
        assert_eq!(segment_of("00000002.history"), None);
        assert_eq!(segment_of("000000010000000000000003.tmp"), None);
        assert_eq!(segment_of("notes.txt"), None);
        assert_eq!(segment_of("00000001000000000000000G"), None);
    }

    #[test]
    fn start_and_stop_segments_are_read_from_labels() {
        assert_eq!(
            label_start_segment(LABEL).as_deref(),
            Some("000000010000000000000005")
        );
        assert_eq!(label_start_segment("garbage"), None);
        let history = "START WAL LOCATION: 0/5000028 (file 000000010000000000000005)\n\
STOP WAL LOCATION: 0/6000100 (file 000000010000000000000006)\n";
        assert_eq!(
            history_stop_segment(history).as_deref(),
            Some("000000010000000000000006")
        );
    }

    #[test]
    fn only_files_before_the_oldest_needed_segment_are_prunable() {
        let need = "000000020000000000000005";
        assert!(prunable("000000010000000000000004", need));
        assert!(prunable("000000010000000000000004.00000028.backup", need));
        assert!(
            !prunable("000000020000000000000005", need),
            "the needed segment itself"
        );
        assert!(!prunable("000000020000000000000005.00000028.backup", need));
        assert!(!prunable("000000010000000100000000", need), "a later log file");
        assert!(!prunable("00000002.history", need));
    }

    #[test]
    fn segment_ranges_cross_log_files() {
        assert_eq!(
            segments_between("0000000100000000000000FE", "000000010000000100000001"),
            [
                "0000000100000000000000FE",
                "0000000100000000000000FF",
                "000000010000000100000000",
                "000000010000000100000001"
            ]
        );
        assert!(segments_between("000000010000000000000005", "000000010000000000000004").is_empty());
    }
}
