//! The web console in a real browser: Debian's chromium, headless, driven
//! through chromedriver over the W3C WebDriver protocol (plain HTTP with
//! reqwest, no WebDriver crate), against a real `recman up` with a copy
//! target. Opens the overview, takes a snapshot from it, watches the job page
//! turn to completed live (no reload), checks the freeze band against the
//! job's events from the API, checks that the page cannot reach another
//! origin (the Content-Security-Policy), then logs in on a server with a
//! token. Screenshots of every page go to `target/test-output/console/`
//! (`RECMAN_SCREENSHOTS` to put them elsewhere).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use recman_testkit::skip;
use recman_tests::cli::Server;
use reqwest::StatusCode;
use serde_json::{json, Value};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// The W3C name of an element reference in a WebDriver answer.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// Where the screenshots go.
fn shots_dir() -> PathBuf {
    let dir = match std::env::var("RECMAN_SCREENSHOTS") {
        Ok(d) if !d.is_empty() => PathBuf::from(d),
        _ => {
            let target = std::env::var("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
            target.join("test-output/console")
        }
    };
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Standard base64 (what WebDriver's screenshot answers with).
fn base64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0);
    for c in s.bytes().filter_map(val) {
        acc = (acc << 6) | c;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}

/// chromedriver on a free loopback port, killed when dropped.
struct Driver {
    child: Child,
    url: String,
}

impl Driver {
    fn start() -> Driver {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        Driver {
            child,
            url: format!("http://127.0.0.1:{port}"),
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One browser session.
struct Browser {
    http: reqwest::Client,
    base: String,
    _profile: tempfile::TempDir,
    _driver: Driver,
}

impl Browser {
    async fn start() -> Browser {
        let driver = Driver::start();
        let http = client();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(r) = http.get(format!("{}/status", driver.url)).send().await {
                let v: Value = r.json().await.unwrap_or(Value::Null);
                if v["value"]["ready"] == true {
                    break;
                }
            }
            assert!(Instant::now() < deadline, "chromedriver did not become ready");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let profile = tempfile::tempdir().unwrap();
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    "--disable-dev-shm-usage", "--window-size=1280,1000",
                    format!("--user-data-dir={}", profile.path().display()),
                ]
            }
        }}});
        let r: Value = http
            .post(format!("{}/session", driver.url))
            .json(&caps)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let id = r["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no browser session: {r}"))
            .to_string();
        Browser {
            http,
            base: format!("{}/session/{id}", driver.url),
            _profile: profile,
            _driver: driver,
        }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req.send().await.unwrap();
        let v: Value = r.json().await.unwrap_or(Value::Null);
        v["value"].clone()
    }

    async fn goto(&self, url: &str) {
        self.call(reqwest::Method::POST, "/url", Some(json!({"url": url})))
            .await;
    }

    async fn url(&self) -> String {
        self.call(reqwest::Method::GET, "/url", None)
            .await
            .as_str()
            .unwrap_or("")
            .to_string()
    }

    /// Runs `script` (a function body) in the page and returns its value.
    async fn exec(&self, script: &str, args: Value) -> Value {
        self.call(
            reqwest::Method::POST,
            "/execute/sync",
            Some(json!({"script": script, "args": args})),
        )
        .await
    }

    /// Runs an async `script` (calls `arguments[arguments.length-1]` with its result).
    async fn exec_async(&self, script: &str) -> Value {
        self.call(
            reqwest::Method::POST,
            "/execute/async",
            Some(json!({"script": script, "args": []})),
        )
        .await
    }

    async fn find(&self, css: &str) -> Option<String> {
        let v = self
            .call(
                reqwest::Method::POST,
                "/element",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await;
        v[ELEMENT].as_str().map(str::to_string)
    }

    async fn wait_for(&self, css: &str, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            if let Some(e) = self.find(css).await {
                return e;
            }
            assert!(
                Instant::now() < deadline,
                "no `{css}` on {} within {within:?}",
                self.url().await
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn click(&self, css: &str) {
        let e = self.wait_for(css, Duration::from_secs(10)).await;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{e}/click"),
            Some(json!({})),
        )
        .await;
    }

    async fn type_in(&self, css: &str, text: &str) {
        let e = self.wait_for(css, Duration::from_secs(10)).await;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{e}/value"),
            Some(json!({"text": text})),
        )
        .await;
    }

    async fn attr(&self, css: &str, name: &str) -> Option<String> {
        self.exec(
            "var e = document.querySelector(arguments[0]); return e ? e.getAttribute(arguments[1]) : null;",
            json!([css, name]),
        )
        .await
        .as_str()
        .map(str::to_string)
    }

    async fn text(&self, css: &str) -> String {
        self.exec(
            "var e = document.querySelector(arguments[0]); return e ? e.textContent : '';",
            json!([css]),
        )
        .await
        .as_str()
        .unwrap_or("")
        .to_string()
    }

    async fn screenshot(&self, name: &str) -> PathBuf {
        let v = self.call(reqwest::Method::GET, "/screenshot", None).await;
        let png = base64_decode(v.as_str().expect("a screenshot"));
        assert!(png.starts_with(b"\x89PNG"), "not a PNG");
        let p = shots_dir().join(name);
        std::fs::write(&p, png).unwrap();
        eprintln!("screenshot: {}", p.display());
        p
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Ends chromium (chromedriver is killed right after).
        let http = self.http.clone();
        let url = self.base.clone();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build();
            if let Ok(rt) = rt {
                rt.block_on(async {
                    let _ = http.delete(url).send().await;
                });
            }
        })
        .join();
    }
}

/// True when the browser and its driver are installed (else skipped, or a
/// failure under CI=true).
fn have_browser() -> bool {
    if Path::new(CHROMIUM).exists() && Path::new(CHROMEDRIVER).exists() {
        return true;
    }
    skip(format!(
        "needs Debian's chromium and chromium-driver ({CHROMIUM}, {CHROMEDRIVER}; tests/run installs them)"
    ));
    false
}

/// A copy target like `recman snapshot demo`'s: real files copied; the
/// freeze hook takes 1.5 s so the job can be watched while it runs.
fn write_config(dir: &Path, extra: &str) {
    let src = dir.join("source");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("orders.csv"), "id,item\n1,disk\n2,tape\n").unwrap();
    std::fs::write(src.join("blob.bin"), vec![7u8; 256 * 1024]).unwrap();
    let text = format!(
        "{extra}\n[[target]]\nid = \"demo\"\nkeep_last = 5\nfreeze_limit = \"10s\"\n[target.writer]\ntype = \"exec\"\n\
         freeze = [\"/bin/sh\", \"-c\", \"sleep 1.5\"]\nthaw = [\"/bin/sh\", \"-c\", \"sleep 0.2\"]\n\
         [target.provider]\ntype = \"copy\"\nsource = \"{}\"\ndest = \"{}\"\n",
        src.display(),
        dir.join("snapshots").display()
    );
    std::fs::write(dir.join("recman.toml"), text).unwrap();
}

/// Takes a snapshot of `demo` from the overview; returns the job id once
/// the browser is on its page.
async fn snapshot_from_overview(b: &Browser, s: &Server) -> String {
    b.click("tr[data-target=\"demo\"] button.act").await;
    b.wait_for("#confirm:not([hidden])", Duration::from_secs(5)).await;
    assert!(b.text("#confirm-text").await.contains("demo"));
    b.click("#confirm-yes").await;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let url = b.url().await;
        if let Some(id) = url.strip_prefix(&format!("{}/job/", s.url)) {
            return id.to_string();
        }
        assert!(
            Instant::now() < deadline,
            "the console did not open the job page: {url}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_snapshot_live_job_page_and_freeze_band() {
    if !have_browser() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), "");
    let s = Server::start(dir.path(), &[]);
    let c = client();

    // Every console response carries the policy that keeps the browser here.
    for path in [
        "/",
        "/assets/console.js",
        "/assets/console.css",
        "/restore-points",
    ] {
        let r = c.get(format!("{}{path}", s.url)).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{path}");
        let csp = r.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .to_string();
        for want in [
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            "connect-src 'self'",
        ] {
            assert!(csp.contains(want), "{path}: {csp}");
        }
    }

    let b = Browser::start().await;
    b.goto(&format!("{}/", s.url)).await;
    b.wait_for("#targets tr[data-target=\"demo\"]", Duration::from_secs(10))
        .await;
    assert_eq!(b.text("title").await, "Overview · recman");

    // The page cannot talk to another origin: a listener on another port
    // never sees a connection, and the fetch fails.
    let other = TcpListener::bind("127.0.0.1:0").unwrap();
    other.set_nonblocking(true).unwrap();
    let other_url = format!("http://127.0.0.1:{}/x", other.local_addr().unwrap().port());
    let r = b
        .exec_async(&format!(
            "var done = arguments[arguments.length - 1]; var v = [];\
             document.addEventListener('securitypolicyviolation', function (e) {{ v.push(e.violatedDirective); }});\
             fetch('{other_url}').then(function () {{ done('fetched'); }}, function () {{ setTimeout(function () {{ done('blocked ' + v.join(',')); }}, 100); }});"
        ))
        .await;
    assert!(
        r.as_str().is_some_and(|r| r.starts_with("blocked connect-src")),
        "{r}"
    );
    assert!(other.accept().is_err(), "the browser connected to another origin");
    // The same page's own API works (connect-src 'self').
    let r = b
        .exec_async(
            "var done = arguments[arguments.length - 1]; fetch('/v1/targets').then(function (r) { return r.json(); })\
             .then(function (j) { done(j.targets[0].id); }, function (e) { done('error ' + e); });",
        )
        .await;
    assert_eq!(r, "demo");
    b.screenshot("console-overview-idle.png").await;

    // A snapshot from the console; its page updates live until completed.
    let job = snapshot_from_overview(&b, &s).await;
    b.wait_for("#job-state", Duration::from_secs(10)).await;
    let first = b.attr("#job-state", "data-state").await.unwrap_or_default();
    assert!(
        !matches!(first.as_str(), "completed" | "failed" | "cancelled"),
        "the job page should open while the job runs (1.5 s freeze), found {first}"
    );
    b.exec("window.__loadedOnce = 'yes';", json!([])).await;
    b.wait_for(
        "#live[data-live=\"open\"], #live[data-refreshed]",
        Duration::from_secs(10),
    )
    .await;
    b.screenshot("console-job-running.png").await;
    b.wait_for("#job-state[data-terminal=\"1\"]", Duration::from_secs(30))
        .await;
    assert_eq!(
        b.attr("#job-state", "data-state").await.as_deref(),
        Some("completed")
    );
    assert_eq!(
        b.exec("return window.__loadedOnce || 'reloaded';", json!([]))
            .await,
        "yes",
        "the page was updated in place over SSE, not reloaded"
    );
    let refreshed: u32 = b
        .attr("#live", "data-refreshed")
        .await
        .unwrap_or_default()
        .parse()
        .unwrap_or(0);
    assert!(refreshed >= 1, "the live part was never refreshed");
    assert_eq!(b.attr("#live", "data-live").await.as_deref(), Some("ended"));

    // The freeze band has the length the worker recorded (events from the API).
    let r = c
        .get(format!("{}/v1/events?from=1&limit=10000", s.url))
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    let events: Value = r.json().await.unwrap();
    let completed = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["event"]["job"] == job.as_str() && e["event"]["body"]["type"] == "completed")
        .unwrap_or_else(|| panic!("no completed event of {job}: {events}"))
        .clone();
    let window_us = completed["event"]["body"]["freeze_window_us"].as_u64().unwrap();
    let band = "rect.freeze-band[data-target=\"demo\"]";
    assert_eq!(
        b.attr(band, "data-window-us").await,
        Some(window_us.to_string()),
        "the band shows the recorded freeze window"
    );
    let px_per_ms: f64 = b
        .attr("#timeline", "data-px-per-ms")
        .await
        .unwrap()
        .parse()
        .unwrap();
    let width: f64 = b.attr(band, "width").await.unwrap().parse().unwrap();
    let want = (window_us as f64 / 1000.0 * px_per_ms).max(1.0);
    assert!(
        (width - want).abs() < 0.02,
        "band width {width} px, want {want} px"
    );
    let drawn = b
        .exec(
            "var r = document.querySelector(arguments[0]).getBoundingClientRect(); return r.width;",
            json!([band]),
        )
        .await
        .as_f64()
        .unwrap();
    assert!(drawn > 0.0, "the band is drawn");
    let api: Value = c
        .get(format!("{}/v1/jobs/{job}", s.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let budget_ms = api["freeze_window"]["budget_ms"].as_u64().unwrap();
    assert_eq!(b.attr(band, "data-budget-ms").await, Some(budget_ms.to_string()));
    let label = b.text("text.freeze-label").await;
    assert!(
        label.starts_with("frozen ") && label.contains(" · limit ") && budget_ms > 0,
        "{label}"
    );
    // Stages as bars; the freeze step names its worker.
    for stage in ["freeze", "snapshot", "thaw"] {
        let css = format!("g.bar.ok[data-stage=\"{stage}\"]");
        b.wait_for(&css, Duration::from_secs(1)).await;
    }
    assert!(b
        .text("g.bar[data-stage=\"freeze\"] title")
        .await
        .contains("worker "));
    assert!(b.find("#events tr[data-kind=\"completed\"]").await.is_some());
    b.screenshot("console-job.png").await;

    // The other pages, with what the job left.
    let point = api["snapshot"].as_str().unwrap().to_string();
    b.goto(&format!("{}/restore-points", s.url)).await;
    b.wait_for(&format!("tr[data-point=\"{point}\"]"), Duration::from_secs(5))
        .await;
    let restore = b
        .attr(
            &format!("tr[data-point=\"{point}\"] button.act.danger"),
            "data-body",
        )
        .await
        .expect("a restore-in-place action beside the point");
    let restore: Value = serde_json::from_str(&restore).unwrap();
    assert_eq!(restore["action"]["type"], "in_place", "{restore}");
    assert_eq!(restore["confirm"], true, "{restore}");
    assert_eq!(restore["snapshot"], point.as_str(), "{restore}");
    b.screenshot("console-restore-points.png").await;
    b.goto(&format!("{}/freeze-windows?period=24h", s.url)).await;
    b.wait_for(
        "tr[data-target=\"demo\"][data-count=\"1\"]",
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(
        b.attr("tr[data-target=\"demo\"]", "data-p99-us").await,
        Some(window_us.to_string())
    );
    b.wait_for("svg.histogram line.mark.limit", Duration::from_secs(5))
        .await;
    b.screenshot("console-freeze-windows.png").await;
    b.goto(&format!("{}/schedules", s.url)).await;
    b.wait_for("#schedules", Duration::from_secs(5)).await;
    b.screenshot("console-schedules.png").await;
    b.goto(&format!("{}/", s.url)).await;
    b.wait_for(&format!("#jobs tr[data-job=\"{job}\"]"), Duration::from_secs(5))
        .await;
    b.screenshot("console-overview.png").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_login_with_the_token_and_csrf() {
    if !have_browser() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "console-s3cret\n").unwrap();
    write_config(
        dir.path(),
        &format!("[api]\ntoken_file = \"{}\"\n", token_file.display()),
    );
    let s = Server::start(dir.path(), &[]);
    let c = client();

    // Without a session: pages send to the login form, the API refuses.
    let r = c.get(format!("{}/restore-points", s.url)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(r.headers()["location"], "/login?next=%2Frestore-points");
    let r = c.get(format!("{}/v1/targets", s.url)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = c.get(format!("{}/login", s.url)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.headers().contains_key("content-security-policy"));
    // A wrong token opens nothing; a login from another origin is refused.
    let r = c
        .post(format!("{}/login", s.url))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("token=wrong&next=%2F")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(!r.headers().contains_key("set-cookie"));
    let r = c
        .post(format!("{}/login", s.url))
        .header("origin", "http://evil.example")
        .header("content-type", "application/x-www-form-urlencoded")
        .body("token=console-s3cret")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    // The right one: a session cookie, HttpOnly and SameSite=Strict.
    let r = c
        .post(format!("{}/login", s.url))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("token=console-s3cret&next=%2F")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let cookie = r.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(cookie.starts_with("recman_session="), "{cookie}");
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    assert!(!cookie.contains("Secure"), "no TLS here: {cookie}");
    let session = cookie.split(';').next().unwrap().to_string();
    // The cookie reads the API; a write needs the CSRF token and this origin.
    let r = c
        .get(format!("{}/v1/targets", s.url))
        .header("cookie", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let page = c
        .get(format!("{}/", s.url))
        .header("cookie", &session)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let csrf = page
        .split("name=\"csrf-token\" content=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap()
        .to_string();
    assert_eq!(csrf.len(), 64, "{csrf}");
    let submit = |origin: Option<&str>, token: Option<&str>| {
        let mut r = c
            .post(format!("{}/v1/snapshots", s.url))
            .header("cookie", &session)
            .json(&json!({"request_id": "csrf-probe", "targets": ["demo"]}));
        if let Some(o) = origin {
            r = r.header("origin", o);
        }
        if let Some(t) = token {
            r = r.header("x-csrf-token", t);
        }
        r.send()
    };
    let same = s.url.clone();
    for (origin, token, why) in [
        (None, Some(csrf.as_str()), "no Origin"),
        (Some("http://evil.example"), Some(csrf.as_str()), "another origin"),
        (Some(same.as_str()), None, "no CSRF token"),
        (Some(same.as_str()), Some("0000"), "a wrong CSRF token"),
    ] {
        let r = submit(origin, token).await.unwrap();
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "{why}");
        let e: Value = r.json().await.unwrap();
        assert_eq!(e["error"]["code"], "csrf_failed", "{why}: {e}");
    }
    let jobs: Value = c
        .get(format!("{}/v1/jobs", s.url))
        .bearer_auth("console-s3cret")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(jobs["jobs"], json!([]), "no refused write went through");

    // In the browser: the login form, a wrong token, the right one, an action, logout.
    let b = Browser::start().await;
    b.goto(&format!("{}/", s.url)).await;
    b.wait_for("#login-form", Duration::from_secs(10)).await;
    assert!(b.url().await.contains("/login?next=%2F"), "{}", b.url().await);
    let refused = b
        .exec_async(
            "var done = arguments[arguments.length - 1]; fetch('/v1/targets').then(function (r) { done(r.status); });",
        )
        .await;
    assert_eq!(refused, 401, "no session, no API");
    b.screenshot("console-login.png").await;
    b.type_in("#token", "not-the-token").await;
    b.click("#login-submit").await;
    b.wait_for("#login-error", Duration::from_secs(10)).await;
    b.type_in("#token", "console-s3cret").await;
    b.click("#login-submit").await;
    b.wait_for("#targets tr[data-target=\"demo\"]", Duration::from_secs(10))
        .await;
    assert_eq!(
        b.exec("return document.cookie;", json!([])).await,
        "",
        "the session cookie is HttpOnly"
    );
    let job = snapshot_from_overview(&b, &s).await;
    b.wait_for("#job-state[data-terminal=\"1\"]", Duration::from_secs(30))
        .await;
    assert_eq!(
        b.attr("#job-state", "data-state").await.as_deref(),
        Some("completed")
    );
    let api: Value = c
        .get(format!("{}/v1/jobs/{job}", s.url))
        .bearer_auth("console-s3cret")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(api["state"], "completed");
    assert!(
        api["request_id"].as_str().unwrap().starts_with("console-"),
        "{api}"
    );
    b.click("form.logout button").await;
    b.wait_for("#login-form", Duration::from_secs(10)).await;
    b.goto(&format!("{}/schedules", s.url)).await;
    b.wait_for("#login-form", Duration::from_secs(10)).await;
    // Logging out ends that session only: the other one (reqwest's) still
    // reads, until it logs out too (its CSRF token in the form).
    let r = c
        .get(format!("{}/v1/targets", s.url))
        .header("cookie", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = c
        .post(format!("{}/logout", s.url))
        .header("cookie", &session)
        .header("origin", &s.url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("csrf={csrf}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert!(r.headers()["set-cookie"].to_str().unwrap().contains("Max-Age=0"));
    let r = c
        .get(format!("{}/v1/targets", s.url))
        .header("cookie", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "the session ended");
}
