//! A hook does not outlive its worker: when the process that ran it dies by
//! SIGKILL, the hook is killed too (PR_SET_PDEATHSIG). The test runs itself
//! again as the "worker" (a child process that starts a long hook), kills it,
//! and watches the hook's pid go away.

use std::time::Duration;

use recman_testkit::{temp_dir, wait_for, wait_until, DEADLINE};

const CHILD_ENV: &str = "RECMAN_TEST_HOOK_PIDFILE";

fn alive(pid: i32) -> bool {
    // A zombie still answers kill(0): read its state instead.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => !s.rsplit(')').next().unwrap_or("").trim_start().starts_with('Z'),
        Err(_) => false,
    }
}

#[test]
fn a_hook_dies_with_its_worker() {
    if let Ok(pidfile) = std::env::var(CHILD_ENV) {
        // The "worker": run a hook that would sleep for a minute.
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let argv: Vec<String> = ["sh", "-c", "echo $$ > \"$0\"; exec sleep 60", &pidfile]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let _ = rt.block_on(recman_workers::exec::run(&argv, &[], Duration::from_secs(120)));
        return;
    }
    let dir = temp_dir();
    let pidfile = dir.path().join("hook.pid");
    let mut worker = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "a_hook_dies_with_its_worker", "--nocapture"])
        .env(CHILD_ENV, &pidfile)
        .spawn()
        .unwrap();
    let hook: i32 = wait_for("the hook to start", DEADLINE, || {
        std::fs::read_to_string(&pidfile).ok()?.trim().parse().ok()
    });
    assert!(alive(hook), "the hook runs");
    worker.kill().unwrap(); // SIGKILL: no cleanup code runs in the worker
    worker.wait().unwrap();
    wait_until(
        format!("hook {hook} to die with its SIGKILLed worker"),
        DEADLINE,
        || !alive(hook),
    );
}
