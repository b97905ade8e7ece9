//! Alerts: webhooks called by `run` and by `serve` when a backup fails, when
//! a source turns stale, and when it is fresh again; received here by a
//! small HTTP listener on loopback that refuses the first call, so the
//! retry is exercised too.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::helpers::{BIN, Fixture, make_db};
use crate::serve::Server;

/// A webhook receiver: answers 500 to the first `refuse` calls, 200 after.
struct Hook {
    url: String,
    /// Every call's body, refused ones too.
    calls: Arc<Mutex<Vec<Value>>>,
    stop: Arc<AtomicBool>,
}

impl Hook {
    fn start(refuse: usize) -> Hook {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let calls: Arc<Mutex<Vec<Value>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (seen, stopped) = (calls.clone(), stop.clone());
        let count = AtomicUsize::new(0);
        std::thread::spawn(move || {
            // Bounded: stops when the test drops the hook, or after 2 minutes.
            let deadline = Instant::now() + Duration::from_secs(120);
            while !stopped.load(Ordering::Relaxed) && Instant::now() < deadline {
                let Ok((stream, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                };
                stream.set_nonblocking(false).unwrap();
                let mut reader = BufReader::new(stream);
                let mut length = 0;
                loop {
                    let mut line = String::new();
                    reader.read_line(&mut line).unwrap();
                    if line == "\r\n" || line.is_empty() {
                        break;
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        length = v.trim().parse().unwrap();
                    }
                }
                let mut body = vec![0; length];
                reader.read_exact(&mut body).unwrap();
                seen.lock()
                    .unwrap()
                    .push(serde_json::from_slice(&body).unwrap());
                let status = match count.fetch_add(1, Ordering::Relaxed) < refuse {
                    true => "500 Internal Server Error",
                    false => "200 OK",
                };
                let _ = write!(
                    reader.get_mut(),
                    "HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                );
            }
        });
        Hook { url, calls, stop }
    }

    /// (event, source) of every call so far.
    fn events(&self) -> Vec<(String, String)> {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .map(|c| {
                (
                    c["event"].as_str().unwrap().to_string(),
                    c["source"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    }

    /// Waits until `n` calls arrived.
    fn wait_for(&self, n: usize, within: Duration) -> Vec<(String, String)> {
        let deadline = Instant::now() + within;
        while self.calls.lock().unwrap().len() < n && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        self.events()
    }
}

impl Drop for Hook {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn pair(event: &str, source: &str) -> (String, String) {
    (event.to_string(), source.to_string())
}

#[test]
fn run_alerts_on_failure_on_staleness_once_and_on_recovery() {
    let f = Fixture::with_repo();
    let hook = Hook::start(1);
    let missing = f.path("app.db");
    let good = f.path("good.db");
    make_db(&good, 100, "delete");
    let config = f.path("rewindb.toml");
    std::fs::write(
        &config,
        format!(
            "repository = \"{}\"\n\
             [[sqlite]]\nname = \"app\"\npaths = [\"{}\"]\nmax_age = \"1h\"\nwebhook = \"{}\"\n\
             [[sqlite]]\nname = \"good\"\npaths = [\"{}\"]\nmax_age = \"1h\"\nwebhook = \"{}\"\n",
            f.repo().display(),
            missing.display(),
            hook.url,
            good.display(),
            hook.url
        ),
    )
    .unwrap();
    let run = || {
        std::process::Command::new(BIN)
            .args(["run", "--config"])
            .arg(&config)
            .env("REWINDB_CACHE_DIR", f.path("cache"))
            .env_remove("REWINDB_REPOSITORY")
            .output()
            .unwrap()
    };
    // The missing database fails (exit 2) and was never backed up: stale.
    let out = run();
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let events = hook.events();
    // The first call was refused (500) and sent again.
    assert_eq!(
        events,
        vec![
            pair("backup_failed", "app"),
            pair("backup_failed", "app"),
            pair("stale", "app")
        ]
    );
    let first = hook.calls.lock().unwrap()[0].clone();
    assert!(
        first["message"].as_str().unwrap().contains("app.db"),
        "{first}"
    );
    assert_eq!(first["repository"], f.repo().to_str().unwrap());
    // Again: the failure is reported, the staleness not a second time.
    run();
    assert_eq!(hook.events()[3..], [pair("backup_failed", "app")]);
    // The database is back: one backup later the source is fresh again.
    make_db(&missing, 100, "delete");
    let out = run();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(hook.events()[4..], [pair("fresh", "app")]);
    // The audit log has the three runs, the failures named.
    let log: Vec<Value> = serde_json::from_str(&f.ok(&["audit", "--json"])).unwrap();
    let runs: Vec<bool> = log
        .iter()
        .filter(|e| e["action"] == "run")
        .map(|e| e["ok"].as_bool().unwrap())
        .collect();
    assert_eq!(runs, vec![false, false, true]);
    assert!(
        log[0]["detail"].as_str().unwrap().contains("app: failed"),
        "{}",
        log[0]
    );
}

#[test]
fn serve_alerts_when_a_source_turns_stale_fails_and_recovers() {
    let f = Fixture::with_repo();
    let hook = Hook::start(0);
    let db = f.path("app.db");
    make_db(&db, 100, "delete");
    let s = Server::start(
        &f,
        &db,
        &format!("max_age = \"6s\"\nwebhook = \"{}\"", hook.url),
        "stale_check_secs = 1",
    );
    // Never backed up: stale within a check or two.
    assert_eq!(
        hook.wait_for(1, Duration::from_secs(10)),
        vec![pair("stale", "app")]
    );
    assert_eq!(s.backup(None)["state"], "succeeded");
    assert_eq!(
        hook.wait_for(2, Duration::from_secs(10))[1],
        pair("fresh", "app")
    );
    // A backup that fails is reported at once.
    std::fs::remove_file(&db).unwrap();
    let r = s.post("/api/v1/sources/app/backup", json!({}));
    let job = s.wait_job(r.json::<Value>().unwrap()["id"].as_u64().unwrap());
    assert_eq!(job["state"], "failed");
    assert_eq!(
        hook.wait_for(3, Duration::from_secs(10))[2],
        pair("backup_failed", "app")
    );
    // And six seconds after the last good backup, stale again.
    assert_eq!(
        hook.wait_for(4, Duration::from_secs(15))[3],
        pair("stale", "app")
    );
    let status = s.get("/api/v1/status");
    assert_eq!(status["sources"][0]["stale"], true);
    assert!(
        status["sources"][0]["stale_reason"]
            .as_str()
            .unwrap()
            .contains("max age"),
        "{status}"
    );
}
