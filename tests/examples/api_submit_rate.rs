//! A measurement, not a test (BENCHMARKS.md): submit rate and latency of
//! `POST /v1/snapshots` against a real `recman up` with 64 no-op targets.
//! Run: `cargo build --release --bin recman && cargo run --release -p recman-tests --example api_submit_rate`.

use std::time::{Duration, Instant};

use recman_tests::cli::Server;
use reqwest::StatusCode;
use serde_json::json;

fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

#[tokio::main]
async fn main() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("recman.toml"),
        (0..64)
            .map(|i| format!("[[target]]\nid = \"t{i}\"\n[target.writer]\ntype = \"none\"\n[target.provider]\ntype = \"none\"\n"))
            .collect::<String>(),
    )
    .unwrap();
    let s = Server::start(dir.path(), &[]);
    let c = client();
    let (n, clients) = (4000usize, 64usize);
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for k in 0..clients {
        let (c, url) = (c.clone(), format!("{}/v1/snapshots", s.url));
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            for i in (k..n).step_by(clients) {
                let t = Instant::now();
                let r = c
                    .post(&url)
                    .json(&json!({"request_id": format!("b{i}"), "targets": [format!("t{}", i % 64)]}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), StatusCode::ACCEPTED);
                lat.push(t.elapsed().as_micros() as u64);
            }
            lat
        }));
    }
    let mut lat: Vec<u64> = Vec::new();
    for t in tasks {
        lat.extend(t.await.unwrap());
    }
    let secs = t0.elapsed().as_secs_f64();
    lat.sort();
    let p = |q: f64| lat[((lat.len() - 1) as f64 * q) as usize] as f64 / 1000.0;
    println!(
        "api_submits={n} clients={clients} submits_per_s={:.0} submit_p50_ms={:.2} submit_p99_ms={:.2}",
        n as f64 / secs,
        p(0.5),
        p(0.99)
    );
}
