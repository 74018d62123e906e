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
