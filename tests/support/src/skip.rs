//! The skip rule, one function and one environment variable: a test that
//! cannot run here (no broker, no root, a tool missing) calls [`skip`], which
//! prints why and lets the test return when run by hand, and panics when
//! `CI=true` (set by `tests/run` and by CI), so CI never skips silently.

use std::fmt::Display;

/// The one variable the rule reads; `true` makes a skip a failure.
pub const CI_VAR: &str = "CI";

/// True when a test that cannot run is a failure (`CI=true`).
pub fn strict() -> bool {
    std::env::var(CI_VAR).is_ok_and(|v| v == "true")
}

/// The test cannot run here because of `why`. Under `CI=true` this panics;
/// otherwise it prints `skipped: <test>: <why>` on stderr and returns, and
/// the caller returns.
#[track_caller]
pub fn skip(why: impl Display) {
    let current = std::thread::current();
    let test = current.name().unwrap_or("this test");
    if strict() {
        panic!("{test} cannot run: {why} (CI=true: a test that cannot run is a failure)");
    }
    eprintln!("skipped: {test}: {why}");
}

/// The value of `var`, or `None` after [`skip`] (unset or empty); `how` says
/// how to provide it.
#[track_caller]
pub fn need_env(var: &str, how: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => Some(v),
        _ => {
            skip(format!("{var} is not set ({how})"));
            None
        }
    }
}

/// True when running as root; otherwise [`skip`] saying what root is for.
#[track_caller]
pub fn need_root(what_for: &str) -> bool {
    if crate::sys::is_root() {
        return true;
    }
    skip(format!("needs root ({what_for})"));
    false
}

/// True when every tool is found (see [`crate::sys::which`]); otherwise
/// [`skip`] naming the missing ones.
#[track_caller]
pub fn need_tools(tools: &[&str]) -> bool {
    let missing: Vec<&str> = tools
        .iter()
        .copied()
        .filter(|t| crate::sys::which(t).is_none())
        .collect();
    if missing.is_empty() {
        return true;
    }
    skip(format!(
        "needs {} (tests/run installs it)",
        missing
            .iter()
            .map(|t| format!("`{t}`"))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    false
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    const CHILD: &str = "RECMAN_TESTKIT_SKIP_CHILD";

    /// Runs this test again as a child that calls `skip`, with and without
    /// `CI=true`.
    #[test]
    fn skip_fails_under_ci_and_only_says_why_by_hand() {
        if std::env::var_os(CHILD).is_some() {
            super::skip("the broker is away");
            return;
        }
        let run = |ci: Option<&str>| {
            let mut c = Command::new(std::env::current_exe().unwrap());
            c.args([
                "skip::tests::skip_fails_under_ci_and_only_says_why_by_hand",
                "--exact",
                "--nocapture",
            ])
            .env(CHILD, "1")
            .env_remove(super::CI_VAR);
            if let Some(v) = ci {
                c.env(super::CI_VAR, v);
            }
            let out = c.output().unwrap();
            (
                out.status.success(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        };
        let (ok, err) = run(Some("true"));
        assert!(!ok, "CI=true: a skip must fail the test\n{err}");
        assert!(
            err.contains("the broker is away") && err.contains("CI=true"),
            "{err}"
        );
        for ci in [None, Some("false")] {
            let (ok, err) = run(ci);
            assert!(ok, "CI={ci:?}: a skip returns\n{err}");
            assert!(
                err.contains("skipped: ") && err.contains("the broker is away"),
                "{err}"
            );
        }
    }
}
