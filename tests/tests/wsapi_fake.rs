//! The WSAPI fake itself, spoken to with a plain HTTP client: it must refuse
//! what the real array refuses (per the public WSAPI reference), or the 3par
//! tests would pass against a server more forgiving than an array.

use recman_tests::wsapi_fake::FakeWsapi;
use serde_json::{json, Value};

struct Api {
    http: reqwest::Client,
    base: String,
}

impl Api {
    fn new(fake: &FakeWsapi) -> Api {
        let tls = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
        Api {
            http: reqwest::Client::builder()
                .tls_backend_preconfigured(tls)
                .build()
                .unwrap(),
            base: format!("{}/api/v1", fake.base_url()),
        }
    }

    async fn call(&self, method: &str, path: &str, key: Option<&str>, body: Option<Value>) -> (u16, Value) {
        let mut r = self
            .http
            .request(method.parse().unwrap(), format!("{}/{path}", self.base));
        if let Some(k) = key {
            r = r.header("X-HP3PAR-WSAPI-SessionKey", k);
        }
        if let Some(b) = body {
            r = r.json(&b);
        }
        let resp = r.send().await.unwrap();
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.unwrap();
        (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }

    async fn login(&self) -> String {
        let (s, b) = self
            .call(
                "POST",
                "credentials",
                None,
                Some(json!({"user": "u", "password": "p"})),
            )
            .await;
        assert_eq!(s, 201, "{b}");
        b["key"].as_str().unwrap().to_string()
    }
}

fn snap(name: &str) -> Value {
    json!({"action": "createSnapshot", "parameters": {"name": name, "readOnly": true}})
}

#[tokio::test]
async fn sessions_are_enforced_with_wsapi_codes() {
    let fake = FakeWsapi::start_http("u", "p").await.unwrap();
    let api = Api::new(&fake);
    let (s, b) = api
        .call(
            "POST",
            "credentials",
            None,
            Some(json!({"user": "u", "password": "x"})),
        )
        .await;
    assert_eq!((s, b["code"].as_i64()), (403, Some(5)));
    let (s, b) = api.call("GET", "volumes", None, None).await;
    assert_eq!((s, b["code"].as_i64()), (401, Some(6)));
    let (s, _) = api.call("GET", "volumes", Some("made-up"), None).await;
    assert_eq!(s, 403);
    let key = api.login().await;
    assert_eq!(api.call("GET", "volumes", Some(&key), None).await.0, 200);
    assert_eq!(
        api.call("DELETE", &format!("credentials/{key}"), Some(&key), None)
            .await
            .0,
        200
    );
    assert_eq!(api.call("GET", "volumes", Some(&key), None).await.0, 403);
    assert_eq!((fake.logins(), fake.logouts()), (1, 1));
}

#[tokio::test]
async fn snapshots_follow_the_reference_rules() {
    let fake = FakeWsapi::start_http("u", "p").await.unwrap();
    fake.add_volume("v");
    fake.add_volume_set("s", &["m0", "m1"]);
    let api = Api::new(&fake);
    let k = api.login().await;
    let k = Some(k.as_str());
    let code = |b: &Value| b["code"].as_i64();

    assert_eq!(api.call("POST", "volumes/v", k, Some(snap("c1"))).await.0, 201);
    let (s, b) = api.call("POST", "volumes/v", k, Some(snap("c1"))).await;
    assert_eq!((s, code(&b)), (409, Some(22)));
    let (s, b) = api.call("POST", "volumes/nope", k, Some(snap("c2"))).await;
    assert_eq!((s, code(&b)), (404, Some(23)));
    let long = "x".repeat(32);
    let (s, b) = api.call("POST", "volumes/v", k, Some(snap(&long))).await;
    assert_eq!((s, code(&b)), (400, Some(57)));
    assert_eq!(
        api.call("POST", "volumes/v", k, Some(snap(&"x".repeat(31))))
            .await
            .0,
        201
    );
    let bad_hours = json!({"action": "createSnapshot", "parameters": {"name": "c3", "expirationHours": 0}});
    assert_eq!(
        code(&api.call("POST", "volumes/v", k, Some(bad_hours)).await.1),
        Some(12)
    );

    // Sets: the pattern, all members at once, 77 for an unknown set.
    let (s, b) = api
        .call("POST", "volumesets/nope", k, Some(snap("g-@count@")))
        .await;
    assert_eq!((s, code(&b)), (404, Some(77)));
    assert_eq!(
        code(&api.call("POST", "volumesets/s", k, Some(snap("g"))).await.1),
        Some(12)
    );
    assert_eq!(
        api.call("POST", "volumesets/s", k, Some(snap("g-@count@")))
            .await
            .0,
        201
    );
    assert_eq!(fake.snapshots_of("m0"), vec!["g-0"]);
    assert_eq!(fake.snapshots_of("m1"), vec!["g-1"]);
    let (s, b) = api.call("POST", "volumesets/s", k, Some(snap("g-@count@"))).await;
    assert_eq!((s, code(&b)), (409, Some(22)));
    let (_, b) = api.call("GET", "volumesets/s", k, None).await;
    assert_eq!(b["setmembers"], json!(["m0", "m1"]));

    // copyOf query, copyType 3.
    let (s, b) = api
        .call("GET", "volumes?query=%22copyOf%20EQ%20v%22", k, None)
        .await;
    assert_eq!(s, 200);
    let names: Vec<&str> = b["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 2, "{b}");
    assert!(b["members"]
        .as_array()
        .unwrap()
        .iter()
        .all(|m| m["copyType"] == 3 && m["copyOf"] == "v"));

    // Delete: HAS_CHILD, then fine, then 404.
    fake.add_child("c1", "child");
    let (s, b) = api.call("DELETE", "volumes/c1", k, None).await;
    assert_eq!((s, code(&b)), (409, Some(32)));
    assert_eq!(api.call("DELETE", "volumes/child", k, None).await.0, 200);
    assert_eq!(api.call("DELETE", "volumes/c1", k, None).await.0, 200);
    let (s, b) = api.call("DELETE", "volumes/c1", k, None).await;
    assert_eq!((s, code(&b)), (404, Some(23)));
}

#[tokio::test]
async fn injected_503s_come_first_then_it_answers() {
    let fake = FakeWsapi::start_http("u", "p").await.unwrap();
    let api = Api::new(&fake);
    fake.inject_503(2);
    for _ in 0..2 {
        let (s, _) = api
            .call(
                "POST",
                "credentials",
                None,
                Some(json!({"user": "u", "password": "p"})),
            )
            .await;
        assert_eq!(s, 503);
    }
    api.login().await;
    fake.set_latency(std::time::Duration::from_millis(200));
    let t = std::time::Instant::now();
    api.login().await;
    assert!(t.elapsed() >= std::time::Duration::from_millis(200));
}

#[tokio::test]
async fn promote_follows_the_reference_rules() {
    let fake = FakeWsapi::start_http("u", "p").await.unwrap();
    fake.add_volume("v");
    fake.set_content("v", "one");
    let api = Api::new(&fake);
    let k = api.login().await;
    let k = Some(k.as_str());
    let code = |b: &Value| b["code"].as_i64();
    let desc = |b: &Value| b["desc"].as_str().unwrap_or("").to_string();
    assert_eq!(api.call("POST", "volumes/v", k, Some(snap("c1"))).await.0, 201);
    fake.set_content("v", "two");
    let promote = |online: bool| json!({"action": 4, "online": online});

    // A base volume cannot be promoted; priority is not for online promotes.
    let (s, b) = api.call("PUT", "volumes/v", k, Some(promote(true))).await;
    assert_eq!(s, 409);
    assert!(desc(&b).starts_with("INV_OPERATION_VV_BASE_VOLUME"), "{b}");
    let both = json!({"action": 4, "online": true, "priority": 2});
    let (s, b) = api.call("PUT", "volumes/c1", k, Some(both)).await;
    assert_eq!(s, 409);
    assert!(desc(&b).starts_with("INV_OPERATION_PARAM_CONFLICT"), "{b}");
    let bad = json!({"action": 4, "priority": 7});
    assert_eq!(
        code(&api.call("PUT", "volumes/c1", k, Some(bad)).await.1),
        Some(46)
    );
    let (s, b) = api.call("PUT", "volumes/nope", k, Some(promote(true))).await;
    assert_eq!((s, code(&b)), (404, Some(23)));

    // Offline while the base is exported: refused; online: done, with a task.
    fake.add_vlun("v", 1, "app01");
    let (s, b) = api.call("PUT", "volumes/c1", k, Some(promote(false))).await;
    assert_eq!(s, 403);
    assert!(desc(&b).starts_with("INV_OPERATION_VV_EXPORTED"), "{b}");
    assert_eq!(fake.content("v").as_deref(), Some("two"));
    fake.set_task_polls(1);
    let (s, b) = api.call("PUT", "volumes/c1", k, Some(promote(true))).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(fake.content("v").as_deref(), Some("one"));
    let id = b["taskid"].as_i64().unwrap();
    let (_, t) = api.call("GET", &format!("tasks/{id}"), k, None).await;
    assert_eq!(t["status"], 2);
    let (_, t) = api.call("GET", &format!("tasks/{id}"), k, None).await;
    assert_eq!(t["status"], 1);
    let (s, b) = api.call("GET", "tasks/999", k, None).await;
    assert_eq!((s, code(&b)), (404, Some(145)));
    let (s, b) = api.call("GET", "tasks/x", k, None).await;
    assert_eq!((s, code(&b)), (400, Some(39)));

    // A copy of a read-only copy must be writable.
    let (s, b) = api.call("POST", "volumes/c1", k, Some(snap("c2"))).await;
    assert_eq!(s, 403);
    assert!(desc(&b).starts_with("INV_OPERATION_VV_READONLY_TO_READONLY_SNAP"));
    let rw = json!({"action": "createSnapshot", "parameters": {"name": "c2", "readOnly": false}});
    assert_eq!(api.call("POST", "volumes/c1", k, Some(rw)).await.0, 201);
    assert_eq!(fake.content("c2").as_deref(), Some("one"));
}

#[tokio::test]
async fn vluns_follow_the_reference_rules() {
    let fake = FakeWsapi::start_http("u", "p").await.unwrap();
    fake.add_volume("v");
    fake.add_volume("w");
    fake.add_host("h1");
    let api = Api::new(&fake);
    let k = api.login().await;
    let code = |b: &Value| b["code"].as_i64();
    let ks = Some(k.as_str());

    let (s, b) = api
        .call("POST", "vluns", ks, Some(json!({"hostname": "h1", "lun": 1})))
        .await;
    assert_eq!((s, code(&b)), (400, Some(40)));
    let (s, b) = api
        .call("POST", "vluns", ks, Some(json!({"volumeName": "v", "lun": 1})))
        .await;
    assert_eq!((s, code(&b)), (400, Some(40)));
    let (s, b) = api
        .call(
            "POST",
            "vluns",
            ks,
            Some(json!({"volumeName": "v", "hostname": "h1"})),
        )
        .await;
    assert_eq!((s, code(&b)), (400, Some(12)));
    let (s, b) = api
        .call(
            "POST",
            "vluns",
            ks,
            Some(json!({"volumeName": "v", "hostname": "h1", "lun": 16385})),
        )
        .await;
    assert_eq!((s, code(&b)), (400, Some(28)));
    let (s, b) = api
        .call(
            "POST",
            "vluns",
            ks,
            Some(json!({"volumeName": "v", "hostname": "nope", "lun": 1})),
        )
        .await;
    assert_eq!((s, code(&b)), (404, Some(17)));
    let (s, b) = api
        .call(
            "POST",
            "vluns",
            ks,
            Some(json!({"volumeName": "x", "hostname": "h1", "lun": 1})),
        )
        .await;
    assert_eq!((s, code(&b)), (404, Some(23)));

    // Created: 201 with the Location of the new VLUN, no body.
    let resp = api
        .http
        .post(format!("{}/vluns", api.base))
        .header("X-HP3PAR-WSAPI-SessionKey", &k)
        .json(&json!({"volumeName": "v", "hostname": "h1", "lun": 0, "autoLun": true, "maxAutoLun": 0}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 201);
    assert_eq!(resp.headers()["location"], "/api/v1/vluns/v,0,h1");
    // The same LUN on the host: EXISTENT_LUN; autoLun takes the next one,
    // even for the same volume (a second VLUN, as the array does).
    let (s, b) = api
        .call(
            "POST",
            "vluns",
            ks,
            Some(json!({"volumeName": "w", "hostname": "h1", "lun": 0})),
        )
        .await;
    assert_eq!((s, code(&b)), (409, Some(18)));
    let auto = json!({"volumeName": "v", "hostname": "h1", "lun": 0, "autoLun": true});
    assert_eq!(api.call("POST", "vluns", ks, Some(auto)).await.0, 201);
    let (_, b) = api.call("GET", "vluns", ks, None).await;
    assert_eq!(b["total"], 2);
    assert_eq!(b["members"][1]["lun"], 1);
    let (_, b) = api
        .call("GET", "vluns?query=%22volumeName%20EQ%20w%22", ks, None)
        .await;
    assert_eq!(b["total"], 0);

    // Exported volumes are not deleted; VLUNs go, then 404 NON_EXISTENT_VLUN.
    let (s, b) = api.call("DELETE", "volumes/v", ks, None).await;
    assert_eq!((s, code(&b)), (409, Some(26)));
    assert_eq!(api.call("DELETE", "vluns/v,0,h1", ks, None).await.0, 200);
    let (s, b) = api.call("DELETE", "vluns/v,0,h1", ks, None).await;
    assert_eq!((s, code(&b)), (404, Some(19)));
    let (s, b) = api.call("DELETE", "vluns/v,1,nope", ks, None).await;
    assert_eq!((s, code(&b)), (404, Some(17)));
    assert_eq!(api.call("DELETE", "vluns/v,1,h1", ks, None).await.0, 200);
    assert!(fake.vluns().is_empty());
    assert_eq!(api.call("DELETE", "volumes/v", ks, None).await.0, 200);
}
