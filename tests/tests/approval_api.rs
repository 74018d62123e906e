//! Four-eyes approval (issue 20) against a real `recman up` with an HTTP
//! API, two admins (ada, bea) and an operator (otto), on a `copy` target
//! with `require_approval = true` and a 3 s `approval_expiry`: an in-place
//! restore waits (`awaiting_approval`, no step sent, the live data and the
//! application untouched); its requester's own approval is a 403, an
//! operator's a 403; the second admin's approval runs it to the end; both
//! names are in the log (`recman events --json`, `recman job --json`). A
//! second request, asked with `recman restore` (exit 3, the command to
//! approve), is left alone: it expires, never runs, and `recman approve`
//! after that is refused. An operator's prune of the target waits for a
//! second admin too (`recman prune` exits 3 with the command to approve);
//! approved, its deletes go out; the restore point goes from the storage.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::api_support::{assert_matches, client};
use recman_testkit::{recman_cmd, text};
use recman_tests::cli::Server;
use reqwest::StatusCode;
use serde_json::{json, Value};

/// `recman ARGS` with `token` as RECMAN_TOKEN (the CLI finds the server).
fn recman_as(dir: &Path, token: &str, args: &[&str]) -> std::process::Output {
    recman_cmd(dir)
        .env("RECMAN_TOKEN", token)
        .args(args)
        .output()
        .expect("run recman")
}

/// `recman user add NAME --role ROLE`: the token it printed.
fn add_user(dir: &Path, name: &str, role: &str) -> String {
    let file = dir.join(format!("{name}.sha256"));
    let out = recman_cmd(dir)
        .args(["user", "add", name, "--role", role, "--token-file"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// The target `docs` (live data in DIR/src, the application's stop and
/// start append to DIR/app.log), guarded by four-eyes; the three users.
fn config(dir: &Path) -> [String; 4] {
    let tokens = [
        add_user(dir, "ada", "admin"),
        add_user(dir, "bea", "admin"),
        add_user(dir, "otto", "operator"),
        add_user(dir, "cleo", "admin"),
    ];
    let d = dir.display();
    let text = format!(
        "[api]\n\
         [[api.user]]\nname = \"ada\"\ntoken_file = \"ada.sha256\"\nrole = \"admin\"\n\
         [[api.user]]\nname = \"bea\"\ntoken_file = \"bea.sha256\"\nrole = \"admin\"\n\
         [[api.user]]\nname = \"otto\"\ntoken_file = \"otto.sha256\"\nrole = \"operator\"\n\
         [[api.user]]\nname = \"cleo\"\ntoken_file = \"cleo.sha256\"\nrole = \"admin\"\ntargets = [\"pg-*\"]\n\n\
         [[target]]\nid = \"docs\"\nkeep_last = 1\nrequire_approval = true\napproval_expiry = \"3s\"\n\
         [target.writer]\ntype = \"exec\"\nfreeze = [\"true\"]\nthaw = [\"true\"]\n\
         stop = [\"/bin/sh\", \"-c\", \"echo stopped >> {d}/app.log\"]\n\
         start = [\"/bin/sh\", \"-c\", \"echo started >> {d}/app.log\"]\n\
         [target.provider]\ntype = \"copy\"\nsource = \"{d}/src\"\ndest = \"{d}/snaps\"\n"
    );
    std::fs::write(dir.join("recman.toml"), text).unwrap();
    std::fs::create_dir_all(dir.join("src")).unwrap();
    std::fs::write(dir.join("src/file"), "v1").unwrap();
    tokens
}

struct Api {
    c: reqwest::Client,
    url: String,
}

impl Api {
    async fn call(
        &self,
        token: &str,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut r = self
            .c
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(token);
        if let Some(b) = body {
            r = r.json(&b);
        }
        let r = r.send().await.unwrap();
        let st = r.status();
        (st, r.json().await.unwrap_or(Value::Null))
    }

    async fn post(&self, token: &str, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(token, reqwest::Method::POST, path, Some(body)).await
    }

    async fn job(&self, token: &str, id: &str) -> Value {
        let (st, j) = self
            .call(token, reqwest::Method::GET, &format!("/v1/jobs/{id}"), None)
            .await;
        assert_eq!(st, StatusCode::OK, "{j}");
        assert_matches("JobDetail", &j);
        j
    }

    /// Job `id` once its state is one of `states`, within `within`.
    async fn until(&self, token: &str, id: &str, states: &[&str], within: Duration) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let j = self.job(token, id).await;
            if states.iter().any(|s| j["state"] == *s) {
                return j;
            }
            assert!(Instant::now() < deadline, "job {id} is not {states:?}: {j}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

#[tokio::test]
async fn an_in_place_restore_waits_for_a_second_admin_and_expires_without_one() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let [ada, bea, otto, cleo] = config(d);
    let s = Server::start(d, &[]);
    let api = Api {
        c: client(),
        url: s.url.clone(),
    };

    // A restore point of v1; the live data moves on to v2.
    let (st, a) = api
        .post(
            &otto,
            "/v1/snapshots",
            json!({"request_id": "snap-1", "targets": ["docs"]}),
        )
        .await;
    assert_eq!(st, StatusCode::ACCEPTED, "{a}");
    let snap = api
        .until(
            &otto,
            a["job_id"].as_str().unwrap(),
            &["completed", "failed"],
            Duration::from_secs(30),
        )
        .await;
    assert_eq!(snap["state"], "completed", "{snap}");
    let point = snap["snapshot"].as_str().unwrap().to_string();
    std::fs::write(d.join("src/file"), "v2").unwrap();

    // ada asks for an in-place restore: accepted, and it waits.
    let body =
        json!({"request_id": "r-1", "snapshot": point, "action": {"type": "in_place"}, "confirm": true});
    let (st, a) = api.post(&ada, "/v1/recoveries", body).await;
    assert_eq!(st, StatusCode::ACCEPTED, "{a}");
    let j1 = a["job_id"].as_str().unwrap().to_string();
    let j = api.job(&ada, &j1).await;
    assert_eq!(j["state"], "awaiting_approval", "{j}");
    assert_eq!(j["by"], "ada", "{j}");
    assert!(
        j["recovery"]["approval"]["expires_at_ms"].as_u64().is_some(),
        "{j}"
    );
    assert!(j["recovery"]["approval"].get("approved_by").is_none(), "{j}");
    assert_eq!(j["timeline"], json!([]), "no step was sent: {j}");
    let (_, waiting) = api
        .call(
            &ada,
            reqwest::Method::GET,
            "/v1/jobs?state=awaiting_approval",
            None,
        )
        .await;
    assert!(
        waiting["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["id"] == j1.as_str()),
        "{waiting}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(read(&d.join("src/file")), "v2", "the live data is untouched");
    assert_eq!(read(&d.join("app.log")), "", "the application was not stopped");

    // The console's job page offers the Approve button to a second admin
    // only (the API refuses everyone else anyway).
    for (who, token, button) in [("bea", &bea, true), ("ada", &ada, false), ("otto", &otto, false)] {
        let page = api
            .c
            .get(format!("{}/job/{j1}", api.url))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(page.status(), StatusCode::OK, "{who}");
        let html = page.text().await.unwrap();
        assert!(html.contains("id=\"awaiting-approval\""), "{who}: {html}");
        assert_eq!(html.contains("id=\"approve\""), button, "{who}: {html}");
    }

    // Its requester cannot approve it; an operator may not; the job waits.
    let approve = format!("/v1/recoveries/{j1}/approve");
    let (st, e) = api.post(&ada, &approve, json!({})).await;
    assert_eq!(
        (st, e["error"]["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("self_approval")),
        "{e}"
    );
    assert_matches("Error", &e);
    assert!(
        e["error"]["message"].as_str().unwrap().contains("second admin"),
        "{e}"
    );
    let (st, e) = api.post(&otto, &approve, json!({})).await;
    assert_eq!(
        (st, e["error"]["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("forbidden")),
        "{e}"
    );
    // An admin whose scope excludes the target may not either.
    let (st, e) = api.post(&cleo, &approve, json!({})).await;
    assert_eq!(
        (st, e["error"]["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("target_forbidden")),
        "{e}"
    );
    assert_eq!(api.job(&ada, &j1).await["state"], "awaiting_approval");

    // bea approves: it runs to the end; the live data is the point's.
    let (st, ok) = api.post(&bea, &approve, json!({})).await;
    assert_eq!(st, StatusCode::ACCEPTED, "{ok}");
    assert_matches("ApprovalAccepted", &ok);
    assert_eq!(
        (ok["approved_by"].as_str(), ok["already_approved"].as_bool()),
        (Some("bea"), Some(false)),
        "{ok}"
    );
    let j = api
        .until(&ada, &j1, &["completed", "failed"], Duration::from_secs(30))
        .await;
    assert_eq!(j["state"], "completed", "{j}");
    assert_eq!(j["recovery"]["approval"]["approved_by"], "bea", "{j}");
    assert_eq!(read(&d.join("src/file")), "v1");
    assert_eq!(read(&d.join("app.log")), "stopped\nstarted\n");

    // Both names in the log: the request is ada's, the approval bea's.
    let out = recman_as(d, &ada, &["events", "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let events: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .filter(|e: &Value| e["event"]["job"] == j1.as_str())
        .collect();
    let of = |kind: &str| {
        events
            .iter()
            .find(|e| e["event"]["body"]["type"] == kind)
            .unwrap_or_else(|| panic!("no {kind} in {events:?}"))
            .clone()
    };
    assert_eq!(of("recovery_requested")["event"]["by"], "ada");
    assert_eq!(of("approval_required")["event"]["by"], "ada");
    let approved = of("approved");
    assert_eq!(approved["event"]["by"], "bea", "{approved}");
    assert_eq!(approved["event"]["body"]["requester"], "ada", "{approved}");
    let seq = |e: &Value| e["seq"].as_u64().unwrap();
    assert!(
        seq(&approved) < seq(&of("recovery_step_started")),
        "approved before the first step"
    );
    let out = recman_as(d, &ada, &["events"]);
    let human = text(&out);
    assert!(
        human.contains("approved") && human.contains("by=bea") && human.contains("requested_by=ada"),
        "{human}"
    );

    // A second request with the CLI waits and says how to approve it.
    std::fs::write(d.join("src/file"), "v3").unwrap();
    let out = recman_as(d, &ada, &["restore", &point, "--in-place", "--yes"]);
    let said = text(&out);
    assert_eq!(out.status.code(), Some(3), "{said}");
    assert!(said.contains("awaiting approval by a second admin"), "{said}");
    let j2 = said
        .split("recman approve ")
        .nth(1)
        .and_then(|r| r.split('`').next())
        .unwrap_or_else(|| panic!("no `recman approve JOB` in {said}"))
        .to_string();
    assert_ne!(j2, j1);
    let j = api.job(&bea, &j2).await;
    assert_eq!(
        (j["state"].as_str(), j["by"].as_str()),
        (Some("awaiting_approval"), Some("ada")),
        "{j}"
    );

    // Left alone, it expires: failed, never run, the live data untouched.
    let j = api
        .until(&bea, &j2, &["failed", "completed"], Duration::from_secs(15))
        .await;
    assert_eq!(j["state"], "failed", "{j}");
    assert!(j["outcome"].as_str().unwrap().contains("approval expired"), "{j}");
    assert_eq!(j["recovery"]["live"], "untouched", "{j}");
    assert_eq!(j["timeline"], json!([]), "{j}");
    assert_eq!(read(&d.join("src/file")), "v3");
    assert_eq!(
        read(&d.join("app.log")),
        "stopped\nstarted\n",
        "not stopped again"
    );

    // An approval after the expiry is refused, by the API and the CLI.
    let (st, e) = api
        .post(&bea, &format!("/v1/recoveries/{j2}/approve"), json!({}))
        .await;
    assert_eq!(
        (st, e["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("approval_expired")),
        "{e}"
    );
    let out = recman_as(d, &bea, &["approve", &j2]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("approval_expired"), "{}", text(&out));
    assert_eq!(read(&d.join("src/file")), "v3");

    // The catalog holds the point and j1's safety snapshot: keep_last = 1
    // would delete the point, but a prune of the guarded target waits for
    // a second admin: a prune job, nothing deleted.
    let stored = d.join("snaps").join(&point);
    assert!(stored.exists(), "{}", stored.display());
    let (st, p) = api.post(&ada, "/v1/prune", json!({"targets": ["docs"]})).await;
    assert_eq!(st, StatusCode::ACCEPTED, "{p}");
    assert_matches("PruneAnswer", &p);
    assert_eq!(p["asked"], 0, "{p}");
    assert_eq!(p["plan"]["prune"]["docs"], json!([point]), "{p}");
    let [w] = p["awaiting_approval"].as_array().unwrap().as_slice() else {
        panic!("one prune job awaits approval: {p}")
    };
    assert_eq!(w["target"], "docs", "{p}");
    let jp = w["job"].as_str().unwrap().to_string();
    let j = api.job(&bea, &jp).await;
    assert_eq!(
        (j["state"].as_str(), j["kind"].as_str(), j["by"].as_str()),
        (Some("awaiting_approval"), Some("prune"), Some("ada")),
        "{j}"
    );
    // The console offers the other admin the Approve button, saying what
    // it approves.
    let page = api
        .c
        .get(format!("{}/job/{jp}", api.url))
        .bearer_auth(&bea)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains("id=\"approve\"") && page.contains("Approve this prune?"),
        "{page}"
    );
    // Asked again with the CLI: the same job, exit 3, how to approve it.
    let out = recman_as(d, &otto, &["prune", "docs"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "an operator may not prune: {}",
        text(&out)
    );
    let out = recman_as(d, &ada, &["prune", "docs"]);
    let said = text(&out);
    assert_eq!(out.status.code(), Some(3), "{said}");
    assert!(said.contains(&format!("recman approve {jp}")), "{said}");
    // Its requester cannot approve it; the other admin does: the delete
    // goes out at once, and the job is completed.
    let approve = format!("/v1/recoveries/{jp}/approve");
    let (st, e) = api.post(&ada, &approve, json!({})).await;
    assert_eq!(
        (st, e["error"]["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("self_approval")),
        "{e}"
    );
    assert!(stored.exists(), "nothing deleted before the approval");
    let out = recman_as(d, &bea, &["approve", &jp]);
    assert!(out.status.success(), "{}", text(&out));
    let j = api
        .until(&bea, &jp, &["completed", "failed"], Duration::from_secs(30))
        .await;
    assert_eq!(j["state"], "completed", "{j}");
    assert_eq!(j["recovery"]["approval"]["approved_by"], "bea", "{j}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while stored.exists() {
        assert!(Instant::now() < deadline, "{} was not deleted", stored.display());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let out = recman_as(d, &ada, &["events", "--json"]);
    let asked: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .filter(|e: &Value| e["event"]["body"]["type"] == "prune_requested")
        .collect();
    assert!(
        asked
            .iter()
            .any(|e| e["event"]["by"] == "bea" && e["event"]["body"]["names"] == json!([point])),
        "the approver asked for the delete: {asked:?}"
    );
}
