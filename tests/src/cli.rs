//! The CLI and API tests' harness: a real `recman up` on a free loopback
//! port, a bare HTTP request, the two-target config they share, and the
//! restore points a `copy` destination holds. The binary, commands on it
//! and free ports come from `recman-testkit`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use recman_testkit::{free_port, recman_bin, wait_until, DEADLINE};

/// A config with two targets, each recording freezes and thaws in
/// `DIR/<target>.state`:
/// - `slow`: the snapshot takes `slow_secs` (an exec provider that sleeps), so
///   a job stays frozen long enough to act on it;
/// - `fast`: no-op writer hooks and an immediate snapshot.
pub fn write_config(dir: &Path, slow_secs: u32, extra: &str) -> PathBuf {
    let d = dir.display();
    let text = format!(
        r#"{extra}
[[target]]
id = "slow"
freeze_limit = "30s"
retries = 0
[target.writer]
type = "exec"
freeze = ["/bin/sh", "-c", "echo frozen >> {d}/slow.state"]
thaw = ["/bin/sh", "-c", "echo thawed >> {d}/slow.state"]
[target.provider]
type = "exec"
create = ["/bin/sh", "-c", "sleep {slow_secs}; echo {d}/snaps/$RECMAN_SNAPSHOT"]
timeout = "60s"

[[target]]
id = "fast"
keep_last = 2
[target.writer]
type = "exec"
freeze = ["/bin/sh", "-c", "echo frozen >> {d}/fast.state"]
thaw = ["/bin/sh", "-c", "echo thawed >> {d}/fast.state"]
[target.provider]
type = "exec"
create = ["/bin/sh", "-c", "echo {d}/snaps/$RECMAN_SNAPSHOT"]
delete = ["true"]
"#
    );
    let p = dir.join("recman.toml");
    std::fs::write(&p, text).unwrap();
    p
}

/// Lines of `DIR/<target>.state`: `frozen` / `thawed`.
pub fn freeze_log(dir: &Path, target: &str) -> Vec<String> {
    std::fs::read_to_string(dir.join(format!("{target}.state")))
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// Whether a `recman up` on `port` answers `/readyz` with 200.
pub fn ready(port: u16) -> bool {
    let Ok(mut c) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    use std::io::{Read, Write};
    let _ = c.write_all(b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let mut buf = String::new();
    let _ = c.read_to_string(&mut buf);
    buf.starts_with("HTTP/1.1 200")
}

/// A running `recman up`, stopped with SIGTERM (then SIGKILL) when dropped.
pub struct Server {
    pub child: Option<Child>,
    pub url: String,
    pub data: PathBuf,
    pub port: u16,
}

impl Server {
    /// Starts `recman up --listen 127.0.0.1:<free port>` on `data` (config
    /// `DATA/recman.toml` if present) and waits until `/readyz` says ready.
    pub fn start(data: &Path, extra_args: &[&str]) -> Server {
        let port = free_port();
        let listen = format!("127.0.0.1:{port}");
        let mut child = Command::new(recman_bin())
            .arg("--data-dir")
            .arg(data)
            .args(["up", "--listen", &listen])
            .args(extra_args)
            .env_remove("RECMAN_DATA_DIR")
            .env_remove("RECMAN_CONFIG")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start recman up");
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let first = lines.next().and_then(Result::ok).unwrap_or_default();
        assert!(
            first.contains(&listen),
            "recman up did not say where it listens: {first:?}"
        );
        // Keep draining stdout so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        let s = Server {
            child: Some(child),
            url: format!("http://{listen}"),
            data: data.to_path_buf(),
            port,
        };
        s.wait_ready();
        s
    }

    fn wait_ready(&self) {
        wait_until(format!("recman up at {} to be ready", self.url), DEADLINE, || {
            ready(self.port)
        });
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().unwrap().id() as i32
    }

    /// Sends SIGTERM and waits (at most `within`) for the exit status.
    pub fn terminate(&mut self, within: Duration) -> ExitStatus {
        let mut child = self.child.take().expect("already stopped");
        // SAFETY: signalling our own child process.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + within;
        loop {
            if let Some(st) = child.try_wait().unwrap() {
                return st;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("recman up did not stop within {within:?} after SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: signalling our own child process.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(40);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A minimal HTTP/1.1 request on 127.0.0.1:`port` (no client library needed):
/// returns the status and the body.
pub fn http(port: u16, method: &str, path: &str, body: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    c.write_all(req.as_bytes()).unwrap();
    let mut buf = String::new();
    c.read_to_string(&mut buf).unwrap();
    let status = buf[9..12].parse().unwrap();
    let body = buf
        .split_once("\r\n\r\n")
        .map(|x| x.1.to_string())
        .unwrap_or_default();
    (status, body)
}

/// The restore points in a `copy` provider's `dest`, sorted: no manifests
/// (`.name.manifest`), no copies in progress (`.partial`); none when `dest`
/// does not exist.
pub fn copies_in(dest: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dest)
        .map(|r| {
            r.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.retain(|n| !n.starts_with('.') && !n.ends_with(".partial"));
    v.sort();
    v
}
