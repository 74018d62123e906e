//! Users and roles of the HTTP API against a real `recman up`: every
//! operation of schemas/openapi.json called by each role (allowed or 403
//! per its `x-recman-role`, so a route without a rule fails here), tokens
//! made by `recman user add` (hashed on disk, mode 0600), a target scope
//! refusing another target, wrong and missing tokens, the legacy
//! `token_file` as the admin `admin`, and `by` in the log for HTTP requests.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use crate::api_support::{client, doc};
use recman_tests::cli::{write_config, Server};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

/// `recman user add`: the token it printed once; checks the file it wrote.
fn add_user(dir: &Path, name: &str, role: &str, extra: &[&str]) -> String {
    let file = dir.join(format!("{name}.sha256"));
    let mut args = vec![
        "user",
        "add",
        name,
        "--role",
        role,
        "--token-file",
        file.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let out = recman_testkit::recman(dir, &args);
    assert!(out.status.success(), "{}", recman_testkit::text(&out));
    let token = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(token.len() >= 64, "a long random token: {token}");
    let stored = std::fs::read_to_string(&file).unwrap();
    let digest = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(
        stored.trim(),
        hex,
        "the file holds the SHA-256 of the token, not the token"
    );
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let again = recman_testkit::recman(dir, &args);
    assert!(
        !again.status.success(),
        "an existing token file is not overwritten"
    );
    token
}

struct Setup {
    _dir: tempfile::TempDir,
    server: Server,
    /// (user, role, token)
    users: Vec<(&'static str, &'static str, String)>,
    legacy: String,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut users = Vec::new();
    let mut blocks = String::new();
    for (name, role, scope) in [
        ("vera", "viewer", None),
        ("otto", "operator", None),
        ("ada", "admin", None),
        ("sam", "operator", Some("fa*")),
    ] {
        let extra: Vec<&str> = scope.map(|s| vec!["--target", s]).unwrap_or_default();
        let token = add_user(d, name, role, &extra);
        blocks.push_str(&format!(
            "[[api.user]]\nname = \"{name}\"\ntoken_file = \"{name}.sha256\"\nrole = \"{role}\"\n{}",
            scope
                .map(|s| format!("targets = [\"{s}\"]\n"))
                .unwrap_or_default()
        ));
        users.push((name, role, token));
    }
    std::fs::write(d.join("legacy-token"), "plain-legacy-token\n").unwrap();
    write_config(d, 1, &format!("[api]\ntoken_file = \"legacy-token\"\n{blocks}"));
    let server = Server::start(d, &[]);
    Setup {
        _dir: dir,
        server,
        users,
        legacy: "plain-legacy-token".into(),
    }
}

fn rank(role: &str) -> u8 {
    match role {
        "public" => 0,
        "viewer" => 1,
        "operator" => 2,
        "admin" => 3,
        other => panic!("unknown role {other}"),
    }
}

/// A request for each operation that passes the role check and does
/// nothing harmful (unknown ids, dry runs, the quick target).
fn request_for(method: &str, path: &str, who: &str) -> (String, Option<Value>) {
    let job = "0190a5b2-0000-7000-8000-000000000001";
    let p = path
        .replace(
            "{id}",
            if path.starts_with("/v1/jobs") || path.starts_with("/v1/recoveries/") {
                job
            } else {
                "nosuch"
            },
        )
        .replace("{name}", "rm-nosuch");
    let p = if path == "/v1/targets/{id}/reconcile" {
        "/v1/targets/fast/reconcile".to_string()
    } else {
        p
    };
    let body = match (method, path) {
        ("post", "/v1/snapshots") => Some(json!({"request_id": format!("roles-{who}"), "targets": ["fast"]})),
        ("post", "/v1/recoveries") => Some(json!({
            "request_id": format!("rec-{who}"), "snapshot": "rm-nosuch", "action": {"type": "mount"}
        })),
        ("post", "/v1/prune") => Some(json!({"dry_run": true})),
        ("post", _) => Some(json!({})),
        _ => None,
    };
    (p, body)
}

async fn call(
    c: &reqwest::Client,
    url: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> (StatusCode, Value) {
    let m = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
    let mut r = c.request(m, format!("{url}{path}"));
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    if let Some(b) = body {
        r = r.json(b);
    }
    let resp = r.send().await.unwrap();
    let st = resp.status();
    let is_stream = resp
        .headers()
        .get("content-type")
        .is_some_and(|v| v.to_str().unwrap_or("").starts_with("text/event-stream"));
    if is_stream {
        return (st, Value::Null); // an event stream: the status is what counts
    }
    (st, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn every_operation_allows_and_refuses_each_role_as_documented() {
    let s = setup();
    let c = client();
    let doc = doc();
    let mut checked = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            if !["get", "post", "put", "delete", "patch"].contains(&method.as_str()) {
                continue;
            }
            let need = op["x-recman-role"]
                .as_str()
                .unwrap_or_else(|| panic!("{method} {path} has no x-recman-role: give it a role"));
            // Without a token: only the public operations.
            let (p, body) = request_for(method, path, "anon");
            let (st, e) = call(&c, &s.server.url, method, &p, None, body.as_ref()).await;
            if need == "public" {
                assert!(st.is_success(), "{method} {path} is public: {st} {e}");
            } else {
                assert_eq!(
                    st,
                    StatusCode::UNAUTHORIZED,
                    "{method} {path} without a token: {e}"
                );
                assert_eq!(e["error"]["code"], "unauthorized");
                let (st, _) = call(&c, &s.server.url, method, &p, Some("not-a-token"), body.as_ref()).await;
                assert_eq!(st, StatusCode::UNAUTHORIZED, "{method} {path} with a wrong token");
            }
            for (name, role, token) in s.users.iter().filter(|u| u.0 != "sam") {
                let (p, body) = request_for(method, path, name);
                let (st, e) = call(&c, &s.server.url, method, &p, Some(token), body.as_ref()).await;
                if rank(role) >= rank(need) {
                    assert!(
                        st != StatusCode::FORBIDDEN && st != StatusCode::UNAUTHORIZED,
                        "{method} {path} must be allowed for {role}: {st} {e}"
                    );
                } else {
                    assert_eq!(
                        st,
                        StatusCode::FORBIDDEN,
                        "{method} {path} must be refused for {role}: {e}"
                    );
                    assert_eq!(e["error"]["code"], "forbidden", "{e}");
                    let m = e["error"]["message"].as_str().unwrap();
                    assert!(m.contains(need) && m.contains(name), "{method} {path}: {m}");
                }
            }
            checked += 1;
        }
    }
    let served = recman_engine::api::operations().len();
    assert_eq!(checked, served, "every operation of the router was called");

    // A recovery needs the role of its action: an in-place restore is admin's.
    let restore = json!({
        "request_id": "rec-in-place", "snapshot": "rm-nosuch", "action": {"type": "in_place"}, "confirm": true
    });
    let token = |n: &str| s.users.iter().find(|u| u.0 == n).unwrap().2.clone();
    let (st, e) = call(
        &c,
        &s.server.url,
        "post",
        "/v1/recoveries",
        Some(&token("otto")),
        Some(&restore),
    )
    .await;
    assert_eq!(st, StatusCode::FORBIDDEN, "{e}");
    assert!(e["error"]["message"].as_str().unwrap().contains("admin"), "{e}");
    let (st, e) = call(
        &c,
        &s.server.url,
        "post",
        "/v1/recoveries",
        Some(&token("ada")),
        Some(&restore),
    )
    .await;
    assert_eq!(st, StatusCode::NOT_FOUND, "admin passes the role check: {e}");
    assert_eq!(
        doc["paths"]["/v1/recoveries"]["post"]["x-recman-role-by-action"]["in_place"],
        "admin"
    );
}

#[tokio::test]
async fn a_scope_refuses_other_targets_and_whoami_names_the_caller() {
    let s = setup();
    let c = client();
    let url = &s.server.url;
    let sam = s.users.iter().find(|u| u.0 == "sam").unwrap().2.clone();
    let (st, e) = call(
        &c,
        url,
        "post",
        "/v1/snapshots",
        Some(&sam),
        Some(&json!({"request_id": "sam-1", "targets": ["slow"]})),
    )
    .await;
    assert_eq!(st, StatusCode::FORBIDDEN, "{e}");
    assert_eq!(e["error"]["code"], "target_forbidden");
    let m = e["error"]["message"].as_str().unwrap();
    assert!(m.contains("slow") && m.contains("sam"), "{m}");
    let (st, e) = call(
        &c,
        url,
        "post",
        "/v1/targets/slow/reconcile",
        Some(&sam),
        Some(&json!({})),
    )
    .await;
    assert_eq!(
        (st, e["error"]["code"].clone()),
        (StatusCode::FORBIDDEN, json!("target_forbidden"))
    );
    // Its own target is fine, and reads show everything.
    let (st, e) = call(
        &c,
        url,
        "post",
        "/v1/snapshots",
        Some(&sam),
        Some(&json!({"request_id": "sam-2", "targets": ["fast"]})),
    )
    .await;
    assert_eq!(st, StatusCode::ACCEPTED, "{e}");
    // The log says who asked: `by` of the job (its request event).
    let job = e["job_id"].as_str().unwrap().to_string();
    let (_, j) = call(&c, url, "get", &format!("/v1/jobs/{job}"), Some(&sam), None).await;
    assert_eq!(j["by"], "sam", "{j}");
    let (_, page) = call(&c, url, "get", "/v1/jobs?request_id=sam-2", Some(&sam), None).await;
    assert_eq!(page["jobs"][0]["by"], "sam", "{page}");
    let (st, t) = call(&c, url, "get", "/v1/targets", Some(&sam), None).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(t["targets"].as_array().unwrap().len(), 2, "{t}");

    let (_, me) = call(&c, url, "get", "/v1/whoami", Some(&sam), None).await;
    assert_eq!(me, json!({"user": "sam", "role": "operator", "targets": ["fa*"]}));
    // The old single token_file is the admin `admin`.
    let (_, me) = call(&c, url, "get", "/v1/whoami", Some(&s.legacy), None).await;
    assert_eq!(me, json!({"user": "admin", "role": "admin", "targets": []}));
    // The hash is not a token.
    let hash = std::fs::read_to_string(s.server.data.join("vera.sha256")).unwrap();
    let (st, _) = call(&c, url, "get", "/v1/whoami", Some(hash.trim()), None).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
}

#[test]
fn a_token_file_holding_a_plain_token_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("bob.token"), "just-the-token\n").unwrap();
    write_config(
        d,
        1,
        "[[api.user]]\nname = \"bob\"\ntoken_file = \"bob.token\"\nrole = \"viewer\"\n",
    );
    let port = recman_testkit::free_port();
    let out = recman_testkit::recman(d, &["up", "--listen", &format!("127.0.0.1:{port}")]);
    assert_eq!(out.status.code(), Some(2), "{}", recman_testkit::text(&out));
    let text = recman_testkit::text(&out);
    assert!(
        text.contains("bob") && text.contains("SHA-256") && text.contains("recman user add"),
        "{text}"
    );
}

/// A token rotated with `recman user add --force` takes effect on SIGHUP
/// (the old one stops working); a token file that no longer reads keeps
/// the tokens in use; `validate-config` refuses a plain token where a hash
/// belongs; the CLI sends the token of `--api-token-file`.
#[tokio::test]
async fn sighup_reads_the_token_files_again_and_the_cli_sends_its_token_file() {
    let s = setup();
    let c = client();
    let url = &s.server.url;
    let d = s.server.data.clone();
    let old = s.users.iter().find(|u| u.0 == "vera").unwrap().2.clone();
    let (st, _) = call(&c, url, "get", "/v1/whoami", Some(&old), None).await;
    assert_eq!(st, StatusCode::OK);

    let file = d.join("vera.sha256");
    let out = recman_testkit::recman(
        &d,
        &[
            "user",
            "add",
            "vera",
            "--role",
            "viewer",
            "--token-file",
            file.to_str().unwrap(),
            "--force",
        ],
    );
    assert!(out.status.success(), "{}", recman_testkit::text(&out));
    let new = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let (st, _) = call(&c, url, "get", "/v1/whoami", Some(&new), None).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED, "read at start only, until SIGHUP");

    let hup = |pid: i32| {
        let st = std::process::Command::new("kill")
            .args(["-HUP", &pid.to_string()])
            .status()
            .unwrap();
        assert!(st.success());
    };
    hup(s.server.pid());
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (st, me) = call(&c, url, "get", "/v1/whoami", Some(&new), None).await;
        if st == StatusCode::OK {
            assert_eq!(me["user"], "vera");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the new token never worked: {st}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (st, _) = call(&c, url, "get", "/v1/whoami", Some(&old), None).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED, "the replaced token stops working");

    // The CLI: the token of --api-token-file, over the config's.
    let tf = d.join("vera.token");
    std::fs::write(&tf, format!("{new}\n")).unwrap();
    let targets_with_token_file = || {
        recman_testkit::recman(
            &d,
            &[
                "targets",
                "--json",
                "--server",
                url,
                "--api-token-file",
                tf.to_str().unwrap(),
            ],
        )
    };
    let ok = targets_with_token_file();
    assert!(ok.status.success(), "{}", recman_testkit::text(&ok));
    std::fs::write(&tf, format!("{old}\n")).unwrap();
    let refused = targets_with_token_file();
    assert!(!refused.status.success(), "{}", recman_testkit::text(&refused));
    assert!(
        recman_testkit::text(&refused).contains("401"),
        "{}",
        recman_testkit::text(&refused)
    );

    // A broken file: refused by validate-config, and a SIGHUP keeps the tokens in use.
    std::fs::write(&file, "just-the-token\n").unwrap();
    let v = recman_testkit::recman(&d, &["validate-config", "--engine"]);
    assert_eq!(v.status.code(), Some(1), "{}", recman_testkit::text(&v));
    let text = recman_testkit::text(&v);
    assert!(text.contains("vera") && text.contains("SHA-256"), "{text}");
    hup(s.server.pid());
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (st, _) = call(&c, url, "get", "/v1/whoami", Some(&new), None).await;
    assert_eq!(st, StatusCode::OK, "a failed reload keeps the tokens in use");
}
