//! Runs one argv (never through a shell) with a timeout: the whole process
//! group is killed on timeout, stderr is captured and truncated for reports.
//! A hook gets a clean environment: the allow-list `INHERITED` from the
//! worker's own, plus the step's `RECMAN_*` variables; never the worker's
//! secrets (`RECMAN_AMQP_URL`, tokens, passwords).

use std::time::Duration;

use recman_events::StepError;
use tokio::io::AsyncReadExt;
use tokio::process::Command;

/// Longest stderr excerpt put into an error message (the end is kept).
pub const STDERR_LIMIT: usize = 2048;
/// Exit status meaning "temporary failure, try again" (sysexits.h EX_TEMPFAIL).
pub const EX_TEMPFAIL: i32 = 75;
/// How long to wait for the output pipes after the process ended.
const PIPE_GRACE: Duration = Duration::from_millis(500);
/// What a hook inherits from the worker's environment (`LC_*` too).
pub const INHERITED: &[&str] = &[
    "PATH", "HOME", "LANG", "LANGUAGE", "TZ", "USER", "LOGNAME", "TMPDIR",
];
/// `PATH` for a hook when the worker has none.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The worker's variables a hook inherits.
fn inherited() -> Vec<(String, String)> {
    let mut vars: Vec<(String, String)> = std::env::vars()
        .filter(|(k, _)| INHERITED.contains(&k.as_str()) || k.starts_with("LC_"))
        .collect();
    if !vars.iter().any(|(k, _)| k == "PATH") {
        vars.push(("PATH".into(), DEFAULT_PATH.into()));
    }
    vars
}

/// What a successful command printed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ExecOutput {
    pub stdout: String,
    pub stderr: String,
}

/// Runs `argv` with extra environment `env`, killing it (and its children)
/// after `timeout`. Errors: `timeout` (retryable), `exec_failed` (retryable
/// only for exit status 75), with the end of stderr in the message.
pub async fn run(
    argv: &[String],
    env: &[(&str, String)],
    timeout: Duration,
) -> Result<ExecOutput, StepError> {
    run_as(argv, env, timeout, None).await
}

/// [`run`], as user and group `user` when given (the worker runs as root).
pub async fn run_as(
    argv: &[String],
    env: &[(&str, String)],
    timeout: Duration,
    user: Option<(u32, u32)>,
) -> Result<ExecOutput, StepError> {
    let Some((program, args)) = argv.split_first() else {
        return Err(StepError::new("exec_failed", "empty command", false));
    };
    let mut cmd = Command::new(program);
    if let Some((uid, gid)) = user {
        // Before the pre_exec hook: a change of user clears the
        // parent-death signal, which the hook sets afterwards.
        cmd.uid(uid).gid(gid);
    }
    cmd.args(args)
        .env_clear()
        .envs(inherited())
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .process_group(0);
    die_with_parent(&mut cmd);
    let mut child = cmd
        .spawn()
        .map_err(|e| StepError::new("exec_failed", format!("cannot run {program}: {e}"), false))?;
    let pid = child.id();
    let stdout = child.stdout.take().map(|s| tokio::spawn(read_capped(s)));
    let stderr = child.stderr.take().map(|s| tokio::spawn(read_capped(s)));

    let status = match tokio::time::timeout(timeout, child.wait()).await {
        Ok(Ok(status)) => Some(status),
        Ok(Err(e)) => {
            kill_group(pid);
            return Err(StepError::new(
                "exec_failed",
                format!("waiting for {program}: {e}"),
                false,
            ));
        }
        Err(_) => {
            kill_group(pid);
            let _ = child.kill().await;
            None
        }
    };
    // Children that outlive the command may hold the pipes open: do not wait for them.
    let out = collect(stdout).await;
    let err = collect(stderr).await;
    let excerpt = tail(&err);
    match status {
        None => Err(StepError::new(
            "timeout",
            with_stderr(
                format!("{program} did not finish within {timeout:?} and was killed"),
                &excerpt,
            ),
            true,
        )),
        Some(s) if s.success() => Ok(ExecOutput {
            stdout: out,
            stderr: err,
        }),
        Some(s) => {
            let (what, retryable) = match s.code() {
                Some(code) => (
                    format!("{program} exited with status {code}"),
                    code == EX_TEMPFAIL,
                ),
                None => (format!("{program} was killed by a signal ({s})"), false),
            };
            Err(StepError::new(
                "exec_failed",
                with_stderr(what, &excerpt),
                retryable,
            ))
        }
    }
}

/// The hook gets SIGKILL when the worker dies (even by SIGKILL), so a freeze
/// hook cannot outlive it and hold the application. Linux ties this to the
/// spawning thread: hooks are spawned from the runtime's worker threads, which
/// live as long as the process.
pub(crate) fn die_with_parent(cmd: &mut Command) {
    // SAFETY: only async-signal-safe calls (prctl, getppid, raise) between
    // fork and exec.
    let parent = std::process::id() as libc::pid_t;
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The worker died before the prctl took effect.
            if libc::getppid() != parent {
                libc::raise(libc::SIGKILL);
            }
            Ok(())
        });
    }
}

fn with_stderr(what: String, excerpt: &str) -> String {
    if excerpt.is_empty() {
        what
    } else {
        format!("{what}: {excerpt}")
    }
}

fn kill_group(pid: Option<u32>) {
    if let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()) {
        // SAFETY: plain syscall; the group was created for this child (process_group(0)).
        unsafe {
            libc::kill(-pid, libc::SIGKILL);
        }
    }
}

async fn read_capped<R: tokio::io::AsyncRead + Unpin>(mut r: R) -> Vec<u8> {
    const CAP: usize = 64 * 1024;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match r.read(&mut chunk).await {
            Ok(0) | Err(_) => return buf,
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                if buf.len() > CAP {
                    buf.drain(..buf.len() - CAP);
                }
            }
        }
    }
}

async fn collect(h: Option<tokio::task::JoinHandle<Vec<u8>>>) -> String {
    let Some(mut h) = h else {
        return String::new();
    };
    match tokio::time::timeout(PIPE_GRACE, &mut h).await {
        Ok(Ok(bytes)) => String::from_utf8_lossy(&bytes).into_owned(),
        _ => {
            h.abort();
            String::new()
        }
    }
}

/// The last `STDERR_LIMIT` bytes of `s`, trimmed, on a char boundary.
pub fn tail(s: &str) -> String {
    let s = s.trim();
    if s.len() <= STDERR_LIMIT {
        return s.to_string();
    }
    let mut start = s.len() - STDERR_LIMIT;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    format!("…{}", &s[start..])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Vec<String> {
        vec!["/bin/sh".into(), "-c".into(), script.into()]
    }

    #[tokio::test]
    async fn success_returns_output() {
        let out = run(&sh("echo hi; echo warn >&2"), &[], Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(out.stdout.trim(), "hi");
        assert_eq!(out.stderr.trim(), "warn");
    }

    #[tokio::test]
    async fn failure_carries_stderr_and_is_not_retryable() {
        let e = run(
            &sh("echo 'disk on fire' >&2; exit 3"),
            &[],
            Duration::from_secs(5),
        )
        .await
        .unwrap_err();
        assert_eq!(e.code, "exec_failed");
        assert!(!e.retryable);
        assert!(
            e.message.contains("status 3") && e.message.contains("disk on fire"),
            "{}",
            e.message
        );
    }

    #[tokio::test]
    async fn tempfail_is_retryable() {
        let e = run(&sh("exit 75"), &[], Duration::from_secs(5))
            .await
            .unwrap_err();
        assert_eq!((e.code.as_str(), e.retryable), ("exec_failed", true));
    }

    #[tokio::test]
    async fn timeout_kills_the_group_quickly() {
        let t = std::time::Instant::now();
        let e = run(&sh("sleep 30 & sleep 30"), &[], Duration::from_millis(200))
            .await
            .unwrap_err();
        assert_eq!((e.code.as_str(), e.retryable), ("timeout", true));
        assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    }

    #[tokio::test]
    async fn missing_program_is_named() {
        let e = run(&["/nonexistent/prog".to_string()], &[], Duration::from_secs(1))
            .await
            .unwrap_err();
        assert!(e.message.contains("/nonexistent/prog"), "{}", e.message);
    }

    /// Issue 12 item 14: the worker's secrets never reach a hook.
    #[tokio::test]
    async fn hooks_get_a_clean_environment() {
        // Each test runs in its own process (nextest): changing it is safe.
        std::env::set_var("RECMAN_AMQP_URL", "amqp://worker:s3cret@mq1/recman");
        std::env::set_var("RECMAN_API_TOKEN", "t0ken");
        std::env::set_var("PGPASSWORD", "pgs3cret");
        std::env::set_var("LC_TIME", "C.UTF-8");
        let out = run(&sh("env"), &[("RECMAN_JOB", "j1".into())], Duration::from_secs(5))
            .await
            .unwrap();
        for secret in [
            "s3cret",
            "t0ken",
            "pgs3cret",
            "RECMAN_AMQP_URL",
            "RECMAN_API_TOKEN",
        ] {
            assert!(
                !out.stdout.contains(secret),
                "{secret} reached the hook:\n{}",
                out.stdout
            );
        }
        let names: Vec<&str> = out.stdout.lines().filter_map(|l| l.split('=').next()).collect();
        for n in &names {
            assert!(
                INHERITED.contains(n)
                    || n.starts_with("LC_")
                    || *n == "RECMAN_JOB"
                    || *n == "PWD"
                    || *n == "SHLVL"
                    || *n == "_",
                "{n} reached the hook"
            );
        }
        assert!(out.stdout.contains("RECMAN_JOB=j1") && out.stdout.contains("LC_TIME=C.UTF-8"));
        assert!(names.contains(&"PATH"), "{names:?}");
    }

    #[test]
    fn long_stderr_is_truncated_to_its_end() {
        let s = format!("{}END", "x".repeat(10_000));
        let t = tail(&s);
        assert!(t.len() <= STDERR_LIMIT + 4 && t.ends_with("END"));
    }
}
