//! `recman simulate` as an operator runs it: a run spread over virtual time
//! (`--over`) ends clean and prints its decision times, the same seed prints
//! the same outcome, and bad arguments are refused with a message that names
//! them.

use std::process::Command;

use recman_testkit::recman_bin;

fn simulate(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(recman_bin())
        .arg("simulate")
        .args(args)
        .output()
        .expect("run recman simulate");
    (
        out.status.code().expect("recman simulate was killed"),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The value of `key=` on `line`.
fn field(line: &str, key: &str) -> f64 {
    let pre = format!("{key}=");
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(pre.as_str()))
        .unwrap_or_else(|| panic!("no {key}= in {line:?}"))
        .parse()
        .unwrap_or_else(|e| panic!("{key} in {line:?}: {e}"))
}

#[test]
fn a_spread_run_ends_clean_and_prints_its_decision_times() {
    let args = [
        "--seed",
        "4",
        "--jobs",
        "400",
        "--targets",
        "60",
        "--groups",
        "--over",
        "2h",
    ];
    let (code, out, err) = simulate(&args);
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    let lines: Vec<&str> = out.lines().collect();
    let (first, last) = (lines[0], lines[lines.len() - 1]);
    assert!(last.contains(" violations=0 "), "{last}");
    assert!(field(last, "completed") > 360.0, "{last}");
    assert!(
        field(first, "virtual_s") >= 7_128.0,
        "the requests did not spread over 2h: {first}"
    );
    let decisions = field(first, "decisions");
    assert!(decisions >= 400.0, "{first}");
    let (p50, p99, max) = (
        field(first, "decide_p50_us"),
        field(first, "decide_p99_us"),
        field(first, "decide_max_us"),
    );
    assert!(0.0 < p50 && p50 <= p99 && p99 <= max, "{first}");
    // The slowest decision is named, with the events it made.
    let kind = first
        .split_whitespace()
        .find_map(|w| w.strip_prefix("decide_max_input="))
        .unwrap_or_default();
    assert!(
        [
            "request",
            "report",
            "timer",
            "cancel",
            "pause-schedule",
            "resume-schedule",
            "recover"
        ]
        .contains(&kind),
        "{first}"
    );
    assert!(field(first, "decide_max_events") >= 0.0, "{first}");
    // The same seed, the same run (only the wall-clock figures differ).
    let (code, again, _) = simulate(&args);
    assert_eq!(code, 0);
    let outcome = |s: &str| {
        s.lines()
            .last()
            .unwrap()
            .split_whitespace()
            .filter(|w| !w.contains("_per_s="))
            .collect::<Vec<_>>()
            .join(" ")
    };
    assert_eq!(outcome(&out), outcome(&again));
}

#[test]
fn bad_arguments_are_refused_by_name() {
    for (args, says) in [
        (vec!["--over", "0s"], "--over"),
        (vec!["--over", "soon"], "--over"),
        (vec!["--faults", "some"], "--faults must be one of"),
        (vec!["--engines", "3"], "--engines must be 1 or 2"),
    ] {
        let (code, out, err) = simulate(&args);
        assert_eq!(code, 2, "{args:?}: stdout:\n{out}\nstderr:\n{err}");
        assert!(err.contains(says), "{args:?}: {err}");
    }
}
