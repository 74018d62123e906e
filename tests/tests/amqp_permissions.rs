//! deploy/README.md's "Users and permissions" table, on the private broker:
//! one user per role with exactly the permissions the table gives, the real
//! engine (the one that declares the topology), a worker with
//! `--no-declare`, and the Python publisher and subscriber of
//! deploy/examples/ (their passwords in files). A request goes through to
//! `completed` with nobody holding more than the table says; and the
//! worker's user cannot take another pool's commands or declare the
//! topology (the broker refuses; the worker says why and what to do, and
//! exits instead of waiting). A durable subscriber with its own row (a
//! `recman.sub.S` queue) follows the request with a binding that does not
//! match `requested`; the plain subscriber's user is refused a durable
//! queue with the row to ask for.

use std::process::Command;
use std::time::{Duration, Instant};

use recman_testkit::amqp::{password, user, Vhost};
use recman_testkit::wait_exit;
use recman_tests::amqp::{example, python, write_config, Proc, Subscriber};

#[test]
fn amqp_each_role_runs_with_the_documented_permissions_only() {
    let Some(vh) = Vhost::new("perms") else { return };
    let Some(py) = python() else { return };
    // The table, row by row (pool P = host.a, worker W = w1).
    let worker_url = vh.user(
        "worker",
        r"^recman\.(pool\.host\.a|worker\.w1)$",
        r"^recman\.(pool\.host\.a|worker\.w1|reports|dlx)$",
        r"^recman\.(pool\.host\.a|worker\.w1|commands)$",
    );
    let publisher_url = vh.user("publisher", "^$", r"^recman\.requests$", "^$");
    let subscriber_url = vh.user(
        "subscriber",
        r"^amq\.gen-.*",
        r"^amq\.gen-.*",
        r"^(amq\.gen-.*|recman\.events)$",
    );
    // The durable subscriber's row, for S = s1.
    let durable_url = vh.user(
        "durable",
        r"^recman\.sub\.s1$",
        r"^recman\.sub\.s1$",
        r"^(recman\.sub\.s1|recman\.events)$",
    );

    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // The Python clients take their passwords from files, as documented
    // (never on the command line): each URL without its password.
    let password_file = |url: &str| -> (String, String) {
        let pass = password(url);
        let file = dir.path().join(format!("{}.password", user(url)));
        std::fs::write(&file, format!("{pass}\n")).unwrap();
        (
            url.replacen(&format!(":{pass}@"), "@", 1),
            file.display().to_string(),
        )
    };
    let (publisher_url, publisher_pw) = password_file(&publisher_url);
    let (subscriber_url, subscriber_pw) = password_file(&subscriber_url);
    let (durable_url, durable_pw) = password_file(&durable_url);
    assert_eq!(
        (password(&publisher_url), password(&subscriber_url)),
        ("", ""),
        "{publisher_url} {subscriber_url}"
    );
    // Two pools: the engine declares host.b's queue too, which the worker's
    // user may not read.
    let config = write_config(dir.path(), 2, &["host.a", "host.b"]);
    let mut engine = Proc::engine(dir.path(), &data, &config, &vh.url, &[]);
    engine.wait_for("broker connected");

    // The worker's user on another pool's queue, and without --no-declare:
    // refused by the broker; the worker says why and what to do, and exits
    // (it must not hang or retry forever).
    let refused = |name: &str, pool: &str, declare: bool| -> String {
        let mut args = vec!["worker", "--amqp", &worker_url, "--pool", pool, "--id", "w1"];
        if !declare {
            args.push("--no-declare");
        }
        let mut w = Proc::spawn(name, dir.path(), &data.join(name), &config, &args);
        let t0 = Instant::now();
        let status = wait_exit(&mut w.child, Duration::from_secs(60));
        let status =
            status.unwrap_or_else(|| panic!("{name}: a refused worker kept running:\n{}", w.output()));
        let out = w.output();
        eprintln!("{name} exited ({status}) after {:?}", t0.elapsed());
        assert!(!status.success(), "{out}");
        assert!(
            out.contains("ACCESS_REFUSED"),
            "{name}: the refusal names the broker's reason:\n{out}"
        );
        assert!(
            !out.contains(password(&worker_url)),
            "{name}: the password was printed:\n{out}"
        );
        out
    };
    let out = refused("worker-wrong-pool", "host.b", false);
    assert!(out.contains("may not use it"), "{out}");
    let error = out.lines().find(|l| l.starts_with("error:")).unwrap_or_default();
    assert_eq!(
        error.matches("ACCESS_REFUSED - access to queue").count(),
        1,
        "the broker's reason once in the error:\n{out}"
    );
    let out = refused("worker-declaring", "host.a", true);
    assert!(out.contains("run the worker with --no-declare"), "{out}");

    let mut worker = Proc::spawn(
        "worker",
        dir.path(),
        &data.join("w"),
        &config,
        &[
            "worker",
            "--no-declare",
            "--amqp",
            &worker_url,
            "--pool",
            "host.a",
            "--id",
            "w1",
        ],
    );
    worker.wait_for("worker started");

    let sub = Subscriber::start(
        &py,
        dir.path(),
        &[
            "--url",
            &subscriber_url,
            "--password-file",
            &subscriber_pw,
            "--until-request",
            "perm-req-1",
        ],
    );
    // A durable queue, with a binding that does not match `requested`:
    // --until-request still learns the job (and prints only what it binds).
    let durable = Subscriber::start(
        &py,
        dir.path(),
        &[
            "--url",
            &durable_url,
            "--password-file",
            &durable_pw,
            "--queue",
            "recman.sub.s1",
            "--binding",
            "completed.#",
            "--until-request",
            "perm-req-1",
        ],
    );
    // The plain subscriber's user may not declare a durable queue: refused
    // at once, exit 2, with the row to ask for.
    let out = Command::new(&py)
        .arg(example("subscribe_events.py"))
        .args(["--url", &subscriber_url, "--password-file", &subscriber_pw])
        .args(["--queue", "recman.sub.s1"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("ACCESS_REFUSED") && err.contains("durable event subscriber"),
        "{err}"
    );

    let out = Command::new(&py)
        .arg(example("publish_request.py"))
        .args(["--url", &publisher_url, "--password-file", &publisher_pw])
        .args(["--request-id", "perm-req-1", "t0"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the publisher with write on recman.requests only: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let events = sub.finish(|| format!("engine:\n{}\nworker:\n{}", engine.output(), worker.output()));
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e["type"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(kinds.last(), Some(&"completed"), "{kinds:?}");
    // Its steps ran at the restricted worker (the only one of host.a).
    assert!(kinds.contains(&"step_succeeded"), "{kinds:?}");
    let durable = durable.finish(|| format!("engine:\n{}", engine.output()));
    let kinds: Vec<&str> = durable
        .iter()
        .map(|e| e["type"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(kinds, ["completed"], "the binding's events only");
    for p in [&mut engine, &mut worker] {
        let status = p.stop();
        assert!(
            status.is_some_and(|s| s.success()),
            "{} did not stop cleanly ({status:?}):\n{}",
            p.name,
            p.output()
        );
    }
}
