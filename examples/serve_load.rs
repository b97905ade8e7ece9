//! A load client for `rewindb serve` (used by `benches/serve_load.sh`):
//! `--clients` concurrent clients each GET `--path` back to back for
//! `--secs` seconds, while (with `--backup SOURCE`) backups of SOURCE run one
//! after another through the API; the server's RSS is sampled every 250 ms
//! from /proc. Prints one JSON line: requests, errors, latency percentiles,
//! RSS at the start, peak and end, and the backups that ran. Loopback only;
//! bounded in time; stops by itself.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

struct Args {
    url: String,
    token: String,
    clients: usize,
    secs: u64,
    path: String,
    pid: Option<u32>,
    backup: Option<String>,
}

fn args() -> Args {
    let mut a = Args {
        url: String::new(),
        token: String::new(),
        clients: 200,
        secs: 10,
        path: "/api/v1/snapshots".into(),
        pid: None,
        backup: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--url" => a.url = value(),
            "--token" => a.token = value(),
            "--clients" => a.clients = value().parse().unwrap(),
            "--secs" => a.secs = value().parse().unwrap(),
            "--path" => a.path = value(),
            "--pid" => a.pid = Some(value().parse().unwrap()),
            "--backup" => a.backup = Some(value()),
            other => panic!("unknown flag {other}"),
        }
    }
    assert!(
        a.url.starts_with("http://127.") || a.url.starts_with("http://localhost"),
        "loopback only: {}",
        a.url
    );
    assert!(
        a.secs <= 120 && a.clients <= 1000,
        "bounded: at most 120 s and 1000 clients"
    );
    a
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let a = args();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(a.clients)
        .build()
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let rss_start = a.pid.map(rss_kib).unwrap_or(0);
    let sampler = a.pid.map(|pid| {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut samples = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                samples.push(rss_kib(pid));
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            samples
        })
    });
    let backups = a.backup.clone().map(|source| {
        let (client, url, token, stop) =
            (client.clone(), a.url.clone(), a.token.clone(), stop.clone());
        tokio::spawn(async move {
            let mut done = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let job: Value = client
                    .post(format!("{url}/api/v1/sources/{source}/backup"))
                    .bearer_auth(&token)
                    .json(&json!({"label": "under-load"}))
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                let id = job["id"].as_u64().expect("a job");
                loop {
                    let j: Value = client
                        .get(format!("{url}/api/v1/jobs/{id}"))
                        .bearer_auth(&token)
                        .send()
                        .await
                        .unwrap()
                        .json()
                        .await
                        .unwrap();
                    if j["state"] == "succeeded" || j["state"] == "failed" {
                        done.push(j);
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
            done
        })
    });
    let deadline = Instant::now() + Duration::from_secs(a.secs);
    let mut tasks = Vec::new();
    for _ in 0..a.clients {
        let (client, url, token) = (
            client.clone(),
            format!("{}{}", a.url, a.path),
            a.token.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = Vec::new();
            while Instant::now() < deadline {
                let started = Instant::now();
                let r = client.get(&url).bearer_auth(&token).send().await;
                let ok = match r {
                    Ok(r) if r.status().is_success() => r.bytes().await.map_err(|e| e.to_string()),
                    Ok(r) => Err(format!("status {}", r.status())),
                    Err(e) => Err(e.to_string()),
                };
                latencies.push(started.elapsed());
                if let Err(e) = ok {
                    errors.push(e);
                }
            }
            (latencies, errors)
        }));
    }
    let mut latencies = Vec::new();
    let mut errors = Vec::new();
    for t in tasks {
        let (l, e) = t.await.unwrap();
        latencies.extend(l);
        errors.extend(e);
    }
    stop.store(true, Ordering::Relaxed);
    let samples = match sampler {
        Some(s) => s.await.unwrap(),
        None => Vec::new(),
    };
    let backups = match backups {
        Some(b) => b.await.unwrap(),
        None => Vec::new(),
    };
    latencies.sort();
    let summary = json!({
        "clients": a.clients,
        "secs": a.secs,
        "path": a.path,
        "requests": latencies.len(),
        "requests_per_sec": latencies.len() as f64 / a.secs as f64,
        "errors": errors.len(),
        "first_errors": errors.iter().take(3).collect::<Vec<_>>(),
        "p50_ms": percentile(&latencies, 0.50),
        "p99_ms": percentile(&latencies, 0.99),
        "max_ms": percentile(&latencies, 1.0),
        "rss_start_kib": rss_start,
        "rss_peak_kib": samples.iter().max().copied().unwrap_or(0),
        "rss_end_kib": samples.last().copied().unwrap_or(0),
        // One sample a second: flat, or growing?
        "rss_each_second_kib": samples.iter().step_by(4).collect::<Vec<_>>(),
        "backups": backups.iter().map(|j| json!({"state": j["state"], "secs": j["result"]["duration_secs"]})).collect::<Vec<_>>(),
    });
    println!("{summary}");
}
