//! A hook does not outlive its worker: when the process that ran it dies by
//! SIGKILL, the hook is killed too (PR_SET_PDEATHSIG). The test runs itself
//! again as the "worker" (a child process that starts a long hook), kills it,
//! and watches the hook's pid go away.

use std::path::Path;
use std::time::{Duration, Instant};

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
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("hook.pid");
    let mut worker = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "a_hook_dies_with_its_worker", "--nocapture"])
        .env(CHILD_ENV, &pidfile)
        .spawn()
        .unwrap();
    let hook = wait_for_pid(&pidfile);
    assert!(alive(hook), "the hook runs");
    worker.kill().unwrap(); // SIGKILL: no cleanup code runs in the worker
    worker.wait().unwrap();
    let t = Instant::now();
    while alive(hook) && t.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!alive(hook), "hook {hook} outlived its SIGKILLed worker");
}

fn wait_for_pid(path: &Path) -> i32 {
    let t = Instant::now();
    loop {
        if let Ok(s) = std::fs::read_to_string(path) {
            if let Ok(p) = s.trim().parse() {
                return p;
            }
        }
        assert!(t.elapsed() < Duration::from_secs(10), "the hook never started");
        std::thread::sleep(Duration::from_millis(10));
    }
}
