//! Helpers of the multi-process AMQP tests: a fresh vhost on the private
//! broker `tests/run` starts, the real `recman` binary as engine and workers,
//! a config, and reading the log back. Without a broker the tests say why
//! and return, unless CI=true.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use recman_amqp::{AmqpBus, AmqpOptions};
use recman_events::bus::Bus;

pub fn require(var: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(u) if !u.is_empty() => Some(u),
        _ => {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("CI=true but {var} is not set: tests/run starts the private RabbitMQ node");
            }
            eprintln!("skipped: {var} is not set (eval \"$(tests/services/rabbitmq.sh start)\" first)");
            None
        }
    }
}

pub fn rabbitmqctl(args: &[&str]) {
    let ctl = require("RECMAN_TEST_RABBITMQCTL").expect("RECMAN_TEST_RABBITMQCTL");
    let out = Command::new(&ctl)
        .args(args)
        .output()
        .expect("running rabbitmqctl");
    assert!(
        out.status.success(),
        "rabbitmqctl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A vhost of its own for one test (deleted on drop), and its URL.
pub struct Vhost {
    pub name: String,
    pub url: String,
}

impl Vhost {
    pub fn new(test: &str) -> Option<Vhost> {
        let base = require("RECMAN_TEST_AMQP_URL")?;
        require("RECMAN_TEST_RABBITMQCTL")?;
        let name = format!("{test}-{}", std::process::id());
        rabbitmqctl(&["add_vhost", &name]);
        let user = base.split("://").nth(1)?.split(':').next()?.to_string();
        rabbitmqctl(&["set_permissions", "-p", &name, &user, ".*", ".*", ".*"]);
        let url = format!("{}/{name}", &base[..base.rfind('/')?]);
        Some(Vhost { name, url })
    }

    pub async fn bus(&self) -> Arc<dyn Bus> {
        self.amqp().await
    }

    pub async fn amqp(&self) -> Arc<AmqpBus> {
        let opts = AmqpOptions {
            connection_name: "recman-test".into(),
            ..Default::default()
        };
        AmqpBus::connect(&self.url, opts)
            .await
            .expect("connect to the test vhost")
    }
}

impl Drop for Vhost {
    fn drop(&mut self) {
        if let Some(ctl) = std::env::var_os("RECMAN_TEST_RABBITMQCTL") {
            let _ = Command::new(ctl).args(["delete_vhost", &self.name]).output();
        }
    }
}

#[path = "../common/mod.rs"]
mod common;
/// The `recman` binary, found as every CLI test finds it.
#[allow(unused_imports)] // not every test binary that shares this module runs the CLI
pub use common::recman_bin;

/// A config with `n` targets `t0..` whose writers run in `pools` (round
/// robin) and whose provider is `none`; the writer's hooks are `true`.
pub fn write_config(dir: &Path, n: usize, pools: &[&str]) -> PathBuf {
    let mut s = String::from("[engine]\nfreeze_limit = \"10s\"\n");
    for i in 0..n {
        let pool = pools[i % pools.len()];
        s.push_str(&format!(
            "[[target]]\nid = \"t{i}\"\npool = \"{pool}\"\nretries = 5\n[target.writer]\ntype = \"exec\"\nfreeze = [\"true\"]\nthaw = [\"true\"]\n[target.provider]\ntype = \"none\"\n"
        ));
    }
    let p = dir.join("recman.toml");
    std::fs::write(&p, s).unwrap();
    p
}

/// A `recman` process; killed (SIGKILL) on drop if still running.
pub struct Proc {
    pub child: Child,
    pub name: String,
    pub log: PathBuf,
}

impl Proc {
    pub fn spawn(name: &str, dir: &Path, data: &Path, config: &Path, args: &[&str]) -> Proc {
        Self::spawn_env(name, dir, data, config, args, &[])
    }

    /// [`Proc::spawn`] with extra environment variables.
    pub fn spawn_env(
        name: &str,
        dir: &Path,
        data: &Path,
        config: &Path,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Proc {
        let log = dir.join(format!("{name}.log"));
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let child = Command::new(recman_bin())
            .arg("--data-dir")
            .arg(data)
            .arg("--config")
            .arg(config)
            .args(args)
            .env(
                "RECMAN_LOG",
                "recman=info,recman_engine=info,recman_workers=info,recman_amqp=info,warn",
            )
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(f.try_clone().unwrap())
            .stderr(f)
            .spawn()
            .expect("spawning recman");
        Proc {
            child,
            name: name.into(),
            log,
        }
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then waits up to 20 s.
    pub fn stop(&mut self) -> Option<std::process::ExitStatus> {
        unsafe {
            libc_kill(self.child.id() as i32, 15);
        }
        for _ in 0..200 {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        self.kill9();
        None
    }

    /// Waits (up to 30 s) until the process printed `text`.
    pub fn wait_for(&mut self, text: &str) {
        for _ in 0..300 {
            if self.output().contains(text) {
                return;
            }
            self.assert_running();
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("{} did not print {text:?}:\n{}", self.name, self.output());
    }

    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn assert_running(&mut self) {
        if let Ok(Some(s)) = self.child.try_wait() {
            panic!("{} exited ({s}):\n{}", self.name, self.output());
        }
    }
}

extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.kill9();
        }
    }
}

/// Every event of the log, through `recman events --json` (engine stopped).
pub fn read_log(data: &Path) -> Vec<serde_json::Value> {
    let out = Command::new(recman_bin())
        .arg("--data-dir")
        .arg(data)
        .args(["events", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("one EventMessage per line"))
        .collect()
}

pub fn request(id: &str, targets: &[&str]) -> recman_events::bus::Message {
    let body = serde_json::json!({"schema_version": 1, "request_id": id, "targets": targets});
    recman_events::bus::Message::new(
        recman_events::bus::msg_type::REQUEST,
        format!("req/{id}"),
        serde_json::to_vec(&body).unwrap(),
    )
}
