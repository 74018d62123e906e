//! deploy/README.md's walk-through, run exactly as written: every shell
//! block under a `<!-- walkthrough: … -->` marker, in order, from the root of
//! the checkout, against the private broker. Only the first block (`site`:
//! the broker's address and the directories) is the test's own: the same
//! names with a loopback broker and temp dirs. `recman`, `rabbitmqctl` and
//! `python3` on PATH are the binary under test, the private node's control
//! command and a python3 with pika.
//!
//! Markers: `site`; `run` (must exit 0; `run, then NAME exits 0` also waits
//! for that process); `daemon NAME ready "TEXT"` (started in the background,
//! ready once its output holds TEXT, must still run at the end);
//! `until-exit NAME ready "TEXT"` (the same, but expected to end by itself).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use recman_testkit::amqp::{broker, RABBITMQCTL_VAR};
use recman_testkit::{free_port, recman_bin, recman_cmd_bare, wait_exit};
use recman_tests::amqp::python;

/// The broker objects the walk-through creates (vhost, users): removed
/// before and after, so that a run left behind never gets in the way.
const VHOST: &str = "recman";
const USERS: [&str; 5] = [
    "recman-engine",
    "recman-app01a",
    "recman-app01b",
    "recman-publisher",
    "recman-subscriber",
];

#[derive(Debug, PartialEq)]
enum Kind {
    Site,
    Run { then_exits: Option<String> },
    Daemon { name: String, ready: String },
    UntilExit { name: String, ready: String },
}

#[derive(Debug)]
struct Block {
    kind: Kind,
    script: String,
    /// 1-based line of the marker in deploy/README.md.
    line: usize,
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .unwrap()
}

fn parse_marker(text: &str, line: usize) -> Kind {
    let named = |rest: &str| -> (String, String) {
        let (name, ready) = rest
            .split_once(" ready ")
            .unwrap_or_else(|| panic!("line {line}: `NAME ready \"TEXT\"` expected: {text}"));
        (
            name.trim().to_string(),
            ready.trim().trim_matches('"').to_string(),
        )
    };
    if text == "site" {
        Kind::Site
    } else if text == "run" {
        Kind::Run { then_exits: None }
    } else if let Some(rest) = text.strip_prefix("run, then ") {
        let name = rest
            .strip_suffix(" exits 0")
            .unwrap_or_else(|| panic!("line {line}: `run, then NAME exits 0` expected: {text}"));
        Kind::Run {
            then_exits: Some(name.to_string()),
        }
    } else if let Some(rest) = text.strip_prefix("daemon ") {
        let (name, ready) = named(rest);
        Kind::Daemon { name, ready }
    } else if let Some(rest) = text.strip_prefix("until-exit ") {
        let (name, ready) = named(rest);
        Kind::UntilExit { name, ready }
    } else {
        panic!("line {line}: unknown walkthrough marker: {text}")
    }
}

/// Every marked block of the document, in order.
fn blocks(doc: &str) -> Vec<Block> {
    let lines: Vec<&str> = doc.lines().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let l = lines[i].trim();
        if let Some(m) = l
            .strip_prefix("<!-- walkthrough:")
            .and_then(|r| r.strip_suffix("-->"))
        {
            let kind = parse_marker(m.trim(), i + 1);
            assert_eq!(
                lines.get(i + 1).map(|l| l.trim()),
                Some("```sh"),
                "line {}: a walkthrough marker must be followed by a ```sh block",
                i + 1
            );
            let mut script = String::new();
            let mut j = i + 2;
            while lines.get(j).map(|l| l.trim()) != Some("```") {
                script.push_str(lines.get(j).expect("unterminated ```sh block"));
                script.push('\n');
                j += 1;
            }
            out.push(Block {
                kind,
                script,
                line: i + 1,
            });
            i = j;
        }
        i += 1;
    }
    out
}

/// The names the site block assigns (`NAME=value  # comment`).
fn site_names(script: &str) -> Vec<String> {
    script
        .lines()
        .filter_map(|l| l.split_once('=').map(|(n, _)| n.trim().to_string()))
        .collect()
}

fn ctl(args: &[&str]) -> std::process::Output {
    let ctl = std::env::var(RABBITMQCTL_VAR).unwrap();
    Command::new(ctl).args(args).output().unwrap()
}

fn clean_broker() {
    let _ = ctl(&["delete_vhost", VHOST]);
    for u in USERS {
        let _ = ctl(&["delete_user", u]);
    }
}

struct Bg {
    name: String,
    child: Child,
    log: PathBuf,
    line: usize,
}

impl Bg {
    fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Bg {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_some() {
            return;
        }
        // The whole process group: bash and the command it runs.
        unsafe { libc::kill(-(self.child.id() as i32), libc::SIGTERM) };
        if wait_exit(&mut self.child, Duration::from_secs(20)).is_none() {
            unsafe { libc::kill(-(self.child.id() as i32), libc::SIGKILL) };
        }
    }
}

struct Walk {
    root: PathBuf,
    path: String,
    prelude: String,
    logs: PathBuf,
}

impl Walk {
    fn command(&self, script: &str) -> Command {
        let mut c = Command::new("bash");
        c.arg("-c")
            .arg(format!("set -euo pipefail\n{}{script}", self.prelude))
            .current_dir(&self.root)
            .env("PATH", &self.path)
            .env_remove("RECMAN_AMQP_URL")
            .env_remove("RECMAN_CONFIG")
            .env_remove("RECMAN_DATA_DIR")
            .env_remove("RECMAN_STATE_DIR")
            .stdin(Stdio::null());
        c
    }

    fn run(&self, b: &Block, bgs: &[Bg]) -> String {
        let out = self.command(&b.script).output().unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success(),
            "the block at deploy/README.md:{} failed ({}):\n{}\n--- its output:\n{text}\n{}",
            b.line,
            out.status,
            b.script,
            dump(bgs)
        );
        eprintln!("deploy/README.md:{} ran:\n{text}", b.line);
        text
    }

    fn start(&self, b: &Block, name: &str, ready: &str, bgs: &[Bg]) -> Bg {
        use std::os::unix::process::CommandExt;
        let log = self.logs.join(format!("{name}.log"));
        let file = std::fs::File::create(&log).unwrap();
        let child = self
            .command(&b.script)
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .process_group(0)
            .spawn()
            .unwrap();
        let mut bg = Bg {
            name: name.to_string(),
            child,
            log,
            line: b.line,
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while !bg.output().contains(ready) {
            if let Some(s) = bg.child.try_wait().unwrap() {
                panic!(
                    "{name} (deploy/README.md:{}) exited ({s}) before it printed {ready:?}:\n{}\n{}",
                    b.line,
                    bg.output(),
                    dump(bgs)
                );
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{name} (deploy/README.md:{}) did not print {ready:?} within 60 s:\n{}\n{}",
                b.line,
                bg.output(),
                dump(bgs)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        bg
    }
}

/// The output of every background process, for a failure's message.
fn dump(bgs: &[Bg]) -> String {
    bgs.iter()
        .map(|b| format!("--- {} (deploy/README.md:{}):\n{}", b.name, b.line, b.output()))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn amqp_deploy_readme_walkthrough_runs_as_written() {
    let Some(url) = broker() else { return };
    let Some(py) = python() else { return };
    let root = repo();
    let doc = std::fs::read_to_string(root.join("deploy/README.md")).unwrap();
    let blocks = blocks(&doc);
    assert!(blocks.len() >= 9, "the walk-through lost blocks: {blocks:?}");
    assert_eq!(blocks[0].kind, Kind::Site, "the first block names the site");
    assert_eq!(
        site_names(&blocks[0].script),
        ["MQ", "ETC", "DATA", "STATE", "APP", "API"],
        "the site block's names (the test gives each its own value)"
    );

    let dir = recman_testkit::temp_dir();
    let d = dir.path();
    // The broker's host:port as the walk-through's URLs want it (their own
    // users and vhost), the directories under the temp dir.
    let host = url
        .rsplit_once('@')
        .unwrap()
        .1
        .split('/')
        .next()
        .unwrap()
        .to_string();
    let site: BTreeMap<&str, String> = [
        ("MQ", host),
        ("ETC", d.join("etc").display().to_string()),
        ("DATA", d.join("data").display().to_string()),
        ("STATE", d.join("state").display().to_string()),
        ("APP", d.join("app01").display().to_string()),
        ("API", format!("127.0.0.1:{}", free_port())),
    ]
    .into();
    let prelude: String = site.iter().map(|(k, v)| format!("{k}='{v}'\n")).collect();
    // recman, rabbitmqctl and python3 as the walk-through calls them.
    let bin = d.join("bin");
    std::fs::create_dir(&bin).unwrap();
    std::os::unix::fs::symlink(recman_bin(), bin.join("recman")).unwrap();
    std::os::unix::fs::symlink(&py, bin.join("python3")).unwrap();
    let wrapper = bin.join("rabbitmqctl");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nexec {} \"$@\"\n",
            std::env::var(RABBITMQCTL_VAR).unwrap()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let logs = d.join("logs");
    std::fs::create_dir(&logs).unwrap();
    let walk = Walk {
        root,
        path: format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default()),
        prelude,
        logs,
    };

    clean_broker();
    let mut bgs: Vec<Bg> = Vec::new();
    let mut outputs = Vec::new();
    for b in &blocks[1..] {
        match &b.kind {
            Kind::Site => panic!("deploy/README.md:{}: a second site block", b.line),
            Kind::Run { then_exits } => {
                outputs.push(walk.run(b, &bgs));
                if let Some(name) = then_exits {
                    let i = bgs
                        .iter()
                        .position(|g| &g.name == name)
                        .unwrap_or_else(|| panic!("deploy/README.md:{}: no process {name}", b.line));
                    let status = wait_exit(&mut bgs[i].child, Duration::from_secs(60));
                    assert!(
                        status.is_some_and(|s| s.success()),
                        "{name} did not exit 0 within 60 s ({status:?}):\n{}",
                        dump(&bgs)
                    );
                    outputs.push(bgs.remove(i).output());
                }
            }
            Kind::Daemon { name, ready } | Kind::UntilExit { name, ready } => {
                let g = walk.start(b, name, ready, &bgs);
                bgs.push(g);
            }
        }
    }
    for g in &mut bgs {
        assert!(
            g.child.try_wait().unwrap().is_none(),
            "{} (deploy/README.md:{}) stopped before the end:\n{}",
            g.name,
            g.line,
            g.output()
        );
    }
    let all = outputs.join("\n");
    let procs = dump(&bgs);
    // The subscriber saw the job complete (it exited 0 above, and printed it).
    assert!(all.contains("\"type\": \"completed\""), "{all}\n{procs}");
    // The late subscriber found it through the API (and exited 0), and
    // `recman jobs --request-id` lists that one job.
    assert!(
        all.contains("\"api\": true") && all.contains("\"state\": \"completed\""),
        "{all}"
    );
    let listed = outputs.last().expect("the last block's output");
    assert_eq!(
        listed.lines().filter(|l| l.contains(" completed ")).count(),
        1,
        "one job for the request id: {listed}"
    );
    // `recman jobs` and `recman snapshots` on the engine's host, through its API.
    assert!(all.contains("completed"), "{all}");
    // The host's freeze state after the thaw, read by `worker --status`.
    assert!(all.contains("not frozen; last thaw"), "{all}");
    // The restore point on app01, and the hooks' record: one freeze, one
    // thaw, of the same job and attempt.
    let snapshots: Vec<_> = std::fs::read_dir(d.join("app01/snapshots"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("db.dat").is_file())
        .collect();
    assert_eq!(snapshots.len(), 1, "one restore point with the data: {all}");
    let hooks = std::fs::read_to_string(d.join("app01/hooks.log")).unwrap();
    let lines: Vec<&str> = hooks.lines().collect();
    assert_eq!(lines.len(), 2, "one freeze and one thaw: {hooks}");
    assert!(lines[0].starts_with("freeze job="), "{hooks}");
    assert_eq!(
        lines[0].trim_start_matches("freeze "),
        lines[1].trim_start_matches("thaw "),
        "the thaw ended the same job and attempt: {hooks}"
    );
    assert!(
        !lines[0].contains("job= "),
        "RECMAN_JOB reached the hook: {hooks}"
    );

    // Stop the engine and the workers (SIGTERM), then the engine's log.
    drop(bgs);
    let audit = recman_cmd_bare()
        .args(["audit", "--data-dir"])
        .arg(d.join("data"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&audit.stdout);
    assert!(
        audit.status.success() && text.contains("intact"),
        "recman audit of the walk-through's log: {text}{}",
        String::from_utf8_lossy(&audit.stderr)
    );
    clean_broker();
}
