//! `recman bench jobs --amqp`: a small run on the private broker (a vhost of
//! its own) with worker processes. The last line parses, says bus=amqp, no job
//! failed, the raw broker baseline is positive, every event was relayed
//! and reached the bench's events subscriber, and
//! the run's queues are gone afterwards.

use std::collections::HashMap;
use std::process::Command;
use std::time::Instant;

use recman_testkit::amqp::{self, Vhost};
use recman_testkit::recman_bin;

fn list_queues(vhost: &str) -> String {
    amqp::rabbitmqctl(&["list_queues", "-q", "-p", vhost, "name"])
}

#[test]
fn amqp_bench_runs_jobs_through_worker_processes() {
    let Some(vh) = Vhost::new("bench") else { return };
    let dir = tempfile::tempdir().unwrap();
    let t0 = Instant::now();
    let out = Command::new(recman_bin())
        .env_remove("RECMAN_AMQP_URL")
        .env_remove("RECMAN_CONFIG")
        .arg("--data-dir")
        .arg(dir.path())
        .args(["bench", "jobs", "--amqp", &vh.url])
        .args(["--jobs", "400", "--targets", "20", "--workers", "2"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "exit {}\n{stdout}\n{stderr}", out.status);
    eprintln!("{stdout}(in {:?})", t0.elapsed());

    let last = stdout.lines().last().unwrap_or_default();
    let kv: HashMap<&str, &str> = last
        .split_whitespace()
        .filter_map(|p| p.split_once('='))
        .collect();
    let num = |k: &str| -> f64 {
        kv.get(k)
            .unwrap_or_else(|| panic!("{k}= missing in {last:?}"))
            .parse()
            .unwrap_or_else(|e| panic!("{k}: {e} in {last:?}"))
    };
    assert_eq!(kv.get("bus"), Some(&"amqp"), "{last}");
    assert_eq!(num("jobs"), 400.0);
    assert_eq!(num("failed"), 0.0);
    assert_eq!(num("workers"), 2.0);
    assert!(num("jobs_per_s") > 0.0);
    assert!(num("job_p99_ms") >= num("job_p50_ms"));
    assert!(num("freeze_overhead_p99_us") >= num("freeze_overhead_p50_us"));
    assert!(num("raw_roundtrip_p50_us") > 0.0, "{last}");
    assert!(num("raw_msgs_per_s") > 0.0, "{last}");
    // Whole jobs: requested … completed, at least 9 events each.
    assert!(num("events") >= 400.0 * 9.0, "{last}");
    assert!(
        stdout.contains(&format!(
            "({n} relayed, the subscriber got all {n})",
            n = num("events") as u64
        )),
        "the relay published the whole log and its subscriber received it:\n{stdout}"
    );

    // The run's own queues (pool, workers, raw baseline) were deleted.
    let queues = list_queues(&vh.name);
    assert!(
        !queues.lines().any(|q| q.contains("bench-")),
        "left behind:\n{queues}"
    );
    assert!(stderr.contains("cleaning up"), "no clean-up reported:\n{stderr}");
}
