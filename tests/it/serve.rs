//! `rewindb serve`: the real binary on a loopback port, called over HTTP
//! with real tokens; real SQLite databases with a writer running; the audit
//! log read back through the API and the CLI.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use reqwest::blocking::{Client, RequestBuilder, Response};
use serde_json::{Value, json};

use crate::helpers::{BIN, Fixture, Writer, make_db, row_count};

/// The tokens every test server knows, by name, with their scopes.
pub const TOKENS: [(&str, &str); 4] = [
    ("all", "\"read\", \"backup\", \"restore\", \"admin\""),
    ("reader", "\"read\""),
    ("operator", "\"read\", \"backup\""),
    ("restorer", "\"read\", \"restore\""),
];

/// A `rewindb serve` process on a free loopback port, stopped when dropped.
pub struct Server {
    child: Child,
    pub url: String,
    pub client: Client,
    tokens: HashMap<&'static str, String>,
    /// Kept open: the server may write more.
    _stdout: Option<BufReader<std::process::ChildStdout>>,
}

impl Server {
    /// Serves `f`'s repository with a config of one SQLite source `app`
    /// over `db`, plus `extra` TOML (top-level keys before the tables, or
    /// whole tables after them).
    pub fn start(f: &Fixture, db: &Path, source_extra: &str, serve_extra: &str) -> Server {
        let client = Client::builder()
            .timeout(Duration::from_secs(120))
            .build()
            .unwrap();
        Server::start_with(f, db, source_extra, serve_extra, client)
    }

    /// As [`start`](Self::start), calling it with `client`.
    pub fn start_with(
        f: &Fixture,
        db: &Path,
        source_extra: &str,
        serve_extra: &str,
        client: Client,
    ) -> Server {
        let mut tokens = HashMap::new();
        let mut text = format!(
            "repository = \"{}\"\n[[sqlite]]\nname = \"app\"\npaths = [\"{}\"]\n{source_extra}\n\
             [serve]\nlisten = \"127.0.0.1:0\"\nrestore_dir = \"{}\"\n{serve_extra}\n",
            f.repo().display(),
            db.display(),
            f.path("restores").display()
        );
        std::fs::create_dir_all(f.path("restores")).unwrap();
        for (name, scopes) in TOKENS {
            let token = format!("rwdb_test_{name}_{}", std::process::id());
            text.push_str(&format!(
                "[[serve.token]]\nname = \"{name}\"\nscopes = [{scopes}]\nblake3 = \"{}\"\n",
                blake3::hash(token.as_bytes()).to_hex()
            ));
            tokens.insert(name, token);
        }
        let config = f.path("rewindb.toml");
        std::fs::write(&config, text).unwrap();
        let mut child = Command::new(BIN)
            .args(["serve", "--config"])
            .arg(&config)
            .env_remove("REWINDB_REPOSITORY")
            .env("REWINDB_CACHE_DIR", f.path("cache"))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        // From here on a failed start must not leave the server running.
        let mut server = Server {
            child,
            url: String::new(),
            client,
            tokens,
            _stdout: None,
        };
        let mut line = String::new();
        let mut stdout = BufReader::new(stdout);
        stdout.read_line(&mut line).unwrap();
        server._stdout = Some(stdout);
        server.url = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("serve printed {line:?}"))
            .to_string();
        assert!(server.url.contains("://127.0.0.1:"), "{}", server.url);
        server
    }

    pub fn token(&self, name: &str) -> &str {
        &self.tokens[name]
    }

    /// A request to `path` (under the server) as token `who` (`None`: no token).
    pub fn request(&self, method: &str, path: &str, who: Option<&str>) -> RequestBuilder {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let r = self.client.request(method, format!("{}{path}", self.url));
        match who {
            Some(w) => r.bearer_auth(self.token(w)),
            None => r,
        }
    }

    pub fn get(&self, path: &str) -> Value {
        let r = self.request("GET", path, Some("all")).send().unwrap();
        assert_eq!(r.status(), StatusCode::OK, "GET {path}");
        r.json().unwrap()
    }

    pub fn post(&self, path: &str, body: Value) -> Response {
        self.request("POST", path, Some("all"))
            .json(&body)
            .send()
            .unwrap()
    }

    /// Waits for job `id` to finish; returns it.
    pub fn wait_job(&self, id: u64) -> Value {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let job = self.get(&format!("/api/v1/jobs/{id}"));
            if job["state"] != "queued" && job["state"] != "running" {
                return job;
            }
            assert!(Instant::now() < deadline, "job {id} never finished: {job}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Starts a backup of `app` and waits for it; returns the finished job.
    pub fn backup(&self, label: Option<&str>) -> Value {
        let r = self.post("/api/v1/sources/app/backup", json!({ "label": label }));
        assert_eq!(r.status(), StatusCode::ACCEPTED);
        let job: Value = r.json().unwrap();
        self.wait_job(job["id"].as_u64().unwrap())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The error code of a JSON error answer.
fn code(r: Response) -> (StatusCode, String) {
    let status = r.status();
    let v: Value = r.json().unwrap_or(Value::Null);
    (
        status,
        v["error"]["code"].as_str().unwrap_or("").to_string(),
    )
}

/// The audit log as the API gives it, oldest first: (who, action, ok).
fn audit_actions(s: &Server) -> Vec<(String, String, bool)> {
    let mut log: Vec<Value> = serde_json::from_value(s.get("/api/v1/audit?limit=1000")).unwrap();
    log.reverse();
    log.iter()
        .map(|e| {
            (
                e["who"].as_str().unwrap().to_string(),
                e["action"].as_str().unwrap().to_string(),
                e["ok"].as_bool().unwrap(),
            )
        })
        .collect()
}

#[test]
fn every_endpoint_wants_a_token_and_its_scope() {
    let f = Fixture::with_repo();
    let db = f.path("app.db");
    make_db(&db, 2000, "wal");
    let s = Server::start(&f, &db, "", "");
    let job = s.backup(Some("first"));
    assert_eq!(job["state"], "succeeded", "{job}");
    let id = job["snapshot"].as_str().unwrap().to_string();
    let short = &id[..12];
    // (method, path, body, scope needed, the status a right token gets)
    let calls: Vec<(&str, String, Value, &str, StatusCode)> = vec![
        (
            "GET",
            "/api/v1/snapshots".into(),
            Value::Null,
            "reader",
            StatusCode::OK,
        ),
        (
            "GET",
            format!("/api/v1/snapshots/{short}"),
            Value::Null,
            "reader",
            StatusCode::OK,
        ),
        (
            "GET",
            "/api/v1/status".into(),
            Value::Null,
            "reader",
            StatusCode::OK,
        ),
        (
            "GET",
            "/api/v1/stats".into(),
            Value::Null,
            "reader",
            StatusCode::OK,
        ),
        (
            "GET",
            "/api/v1/jobs".into(),
            Value::Null,
            "reader",
            StatusCode::OK,
        ),
        (
            "GET",
            "/api/v1/jobs/1".into(),
            Value::Null,
            "reader",
            StatusCode::OK,
        ),
        (
            "GET",
            "/api/v1/audit".into(),
            Value::Null,
            "reader",
            StatusCode::OK,
        ),
        (
            "GET",
            "/metrics".into(),
            Value::Null,
            "reader",
            StatusCode::OK,
        ),
        (
            "POST",
            "/api/v1/check".into(),
            json!({}),
            "operator",
            StatusCode::ACCEPTED,
        ),
        (
            "POST",
            "/api/v1/sources/app/backup".into(),
            json!({"label": "second"}),
            "operator",
            StatusCode::ACCEPTED,
        ),
        (
            "GET",
            format!("/api/v1/snapshots/{short}/download"),
            Value::Null,
            "restorer",
            StatusCode::OK,
        ),
        (
            "POST",
            format!("/api/v1/snapshots/{short}/restore"),
            json!({"in_place": true, "dry_run": true}),
            "restorer",
            StatusCode::OK,
        ),
        (
            "POST",
            format!("/api/v1/snapshots/{short}/protect"),
            json!({"protected": true}),
            "all",
            StatusCode::OK,
        ),
        (
            "POST",
            "/api/v1/forget".into(),
            json!({"source": "app", "keep": {"last": 5}, "dry_run": true}),
            "all",
            StatusCode::OK,
        ),
        (
            "DELETE",
            format!("/api/v1/snapshots/{short}"),
            Value::Null,
            "all",
            StatusCode::CONFLICT,
        ),
        (
            "POST",
            "/api/v1/import?source=app".into(),
            Value::Null,
            "operator",
            StatusCode::BAD_REQUEST,
        ),
    ];
    for (method, path, body, right, expected) in &calls {
        let send = |who: Option<&str>| {
            let r = s.request(method, path, who);
            match body {
                Value::Null => r.send().unwrap(),
                b => r.json(b).send().unwrap(),
            }
        };
        assert_eq!(
            code(send(None)),
            (StatusCode::UNAUTHORIZED, "unauthorized".into()),
            "{method} {path}"
        );
        let forged = s
            .request(method, path, None)
            .bearer_auth("rwdb_not_a_token")
            .send()
            .unwrap();
        assert_eq!(code(forged).0, StatusCode::UNAUTHORIZED, "{method} {path}");
        // A token without the scope: the reader for anything but reads,
        // the operator for reads' opposite.
        let lacking = match *right {
            "reader" => None,
            "operator" | "restorer" | "all" => Some("reader"),
            _ => unreachable!(),
        };
        if let Some(who) = lacking {
            assert_eq!(
                code(send(Some(who))),
                (StatusCode::FORBIDDEN, "forbidden".into()),
                "{method} {path}"
            );
        }
        let r = send(Some(right));
        assert_eq!(r.status(), *expected, "{method} {path}: {:?}", r.text());
    }
    // The protected snapshot was refused above with `protected`.
    let r = s
        .request("DELETE", &format!("/api/v1/snapshots/{short}"), Some("all"))
        .send()
        .unwrap();
    assert_eq!(code(r), (StatusCode::CONFLICT, "protected".into()));
    // The console's files need no token.
    for page in ["/", "/console.js", "/console.css"] {
        let r = s.client.get(format!("{}{page}", s.url)).send().unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{page}");
    }
    // Unknown paths are JSON 404s, not the console.
    let r = s
        .request("GET", "/api/v1/nothing", Some("all"))
        .send()
        .unwrap();
    assert_eq!(code(r), (StatusCode::NOT_FOUND, "not_found".into()));
}

#[test]
fn bad_tokens_from_one_address_are_slowed_down() {
    let f = Fixture::with_repo();
    let db = f.path("app.db");
    make_db(&db, 10, "delete");
    let s = Server::start(&f, &db, "", "");
    let started = Instant::now();
    for _ in 0..5 {
        let r = s
            .request("GET", "/api/v1/status", None)
            .bearer_auth("rwdb_guess")
            .send()
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }
    // 100 + 200 + 400 + 800 ms of waiting before the 2nd to 5th answers.
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(1400), "{took:?}");
    // A right token waits its turn once, then clears the record.
    s.request("GET", "/api/v1/status", Some("reader"))
        .send()
        .unwrap();
    let started = Instant::now();
    let r = s
        .request("GET", "/api/v1/status", Some("reader"))
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(
        started.elapsed() < Duration::from_millis(1000),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn backup_download_restore_and_the_audit_log_through_the_api() {
    let f = Fixture::with_repo();
    let db = f.path("app.db");
    make_db(&db, 20_000, "wal");
    let s = Server::start(&f, &db, "", "");
    // A backup while a writer commits.
    let writer = Writer::start(&db);
    let job = s.backup(Some("before-upgrade"));
    writer.stop();
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_eq!(job["who"], "all");
    assert!(job["progress"]["done"].as_u64().unwrap() > 0, "{job}");
    assert_eq!(job["progress"]["done"], job["progress"]["total"], "{job}");
    let id = job["snapshot"].as_str().unwrap().to_string();
    let snaps: Vec<Value> =
        serde_json::from_value(s.get("/api/v1/snapshots?label=before-upgrade")).unwrap();
    assert_eq!(snaps.len(), 1);
    assert_eq!(snaps[0]["id"], id.as_str());
    assert_eq!(snaps[0]["name"], "app");
    let file = &snaps[0]["files"][0];
    // The download is the snapshot's file, byte for byte, with its hash as ETag.
    let r = s
        .request(
            "GET",
            &format!("/api/v1/snapshots/{}/download", &id[..8]),
            Some("restorer"),
        )
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        r.headers()["etag"].to_str().unwrap(),
        format!("\"{}\"", file["blake3"].as_str().unwrap())
    );
    assert_eq!(r.content_length(), file["size"].as_u64());
    let body = r.bytes().unwrap();
    assert_eq!(
        blake3::hash(&body).to_hex().as_str(),
        file["blake3"].as_str().unwrap()
    );
    assert_eq!(body.as_ref(), f.restored_bytes(&id).as_slice());

    // Path traversal: file= and restore targets outside what is allowed.
    let r = s
        .request(
            "GET",
            &format!("/api/v1/snapshots/{id}/download?file=../../etc/passwd"),
            Some("all"),
        )
        .send()
        .unwrap();
    assert_eq!(code(r).0, StatusCode::NOT_FOUND);
    std::os::unix::fs::symlink("/tmp", f.path("restores/escape")).unwrap();
    for (to, status) in [
        ("../outside", StatusCode::BAD_REQUEST),
        ("/etc", StatusCode::BAD_REQUEST),
        ("a/../../b", StatusCode::BAD_REQUEST),
        ("./a", StatusCode::BAD_REQUEST),
        ("escape/x", StatusCode::FORBIDDEN),
    ] {
        let r = s.post(
            &format!("/api/v1/snapshots/{id}/restore"),
            json!({ "to": to }),
        );
        assert_eq!(r.status(), status, "to {to:?}: {:?}", r.text());
    }
    assert!(!f.path("outside").exists() && !Path::new("/tmp/x/app.db").exists());
    // A restore under restore_dir.
    let r = s.post(
        &format!("/api/v1/snapshots/{id}/restore"),
        json!({"to": "drill/one"}),
    );
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let job = s.wait_job(r.json::<Value>().unwrap()["id"].as_u64().unwrap());
    assert_eq!(job["state"], "succeeded", "{job}");
    let drilled = std::fs::read(f.path("restores/drill/one/app.db")).unwrap();
    assert_eq!(drilled, body.as_ref());

    // In place: the dry run names exactly what is replaced, then the
    // restore keeps a safety copy of the database it replaces.
    let rows_backed_up = row_count(&f.path("restores/drill/one/app.db"));
    crate::helpers::update_rows(&db, 100, 7);
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute("DELETE FROM items WHERE id < 500", [])
        .unwrap();
    drop(conn);
    let plan: Value = s
        .post(
            &format!("/api/v1/snapshots/{id}/restore"),
            json!({"in_place": true, "dry_run": true}),
        )
        .json()
        .unwrap();
    assert_eq!(plan["files"][0]["dest"], db.to_str().unwrap());
    assert_eq!(plan["files"][0]["replace"], true);
    let r = s.post(
        &format!("/api/v1/snapshots/{id}/restore"),
        json!({"in_place": true}),
    );
    let job = s.wait_job(r.json::<Value>().unwrap()["id"].as_u64().unwrap());
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_eq!(row_count(&db), rows_backed_up);
    let kept = job["result"]["restored"][0]["safety_copy"]
        .as_str()
        .unwrap();
    assert!(Path::new(kept).exists(), "{job}");

    // Forget: protected refused, then unprotected and forgotten.
    assert_eq!(
        s.post(&format!("/api/v1/snapshots/{id}/protect"), json!({}))
            .status(),
        StatusCode::OK
    );
    let r = s
        .request("DELETE", &format!("/api/v1/snapshots/{id}"), Some("all"))
        .send()
        .unwrap();
    assert_eq!(code(r), (StatusCode::CONFLICT, "protected".into()));
    let r = s.post(
        &format!("/api/v1/snapshots/{id}/protect"),
        json!({"protected": false}),
    );
    assert_eq!(r.status(), StatusCode::OK);
    let r = s
        .request("DELETE", &format!("/api/v1/snapshots/{id}"), Some("all"))
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let left: Vec<Value> = serde_json::from_value(s.get("/api/v1/snapshots")).unwrap();
    assert!(left.is_empty(), "{left:?}");
    let r = s
        .request(
            "GET",
            &format!("/api/v1/snapshots/{}", &id[..8]),
            Some("all"),
        )
        .send()
        .unwrap();
    assert_eq!(code(r).0, StatusCode::NOT_FOUND);

    // Every mutating call is in the log, by token, with its outcome.
    let log = audit_actions(&s);
    let expect: Vec<(&str, &str, bool)> = vec![
        ("all", "backup", true),
        ("restorer", "download", true),
        ("local", "restore", true),
        ("all", "download", false),
        // The five targets outside restore_dir, refused.
        ("all", "restore", false),
        ("all", "restore", false),
        ("all", "restore", false),
        ("all", "restore", false),
        ("all", "restore", false),
        ("all", "restore", true),
        ("all", "restore", true),
        ("all", "protect", true),
        ("all", "forget", false),
        ("all", "unprotect", true),
        ("all", "forget", true),
    ];
    let got: Vec<(&str, &str, bool)> = log
        .iter()
        .map(|(w, a, ok)| {
            let who = if w.starts_with("local:") {
                "local"
            } else {
                w.as_str()
            };
            (who, a.as_str(), *ok)
        })
        .collect();
    assert_eq!(got, expect);
    // The CLI reads the same log, and logs its own actions.
    let cli: Vec<Value> = serde_json::from_str(&f.ok(&["audit", "--json"])).unwrap();
    assert_eq!(cli.len(), expect.len());
    assert!(cli[0]["from"].as_str().unwrap().starts_with("127.0.0.1:"));
    f.ok(&["backup", "sqlite", db.to_str().unwrap()]);
    let cli: Vec<Value> =
        serde_json::from_str(&f.ok(&["audit", "--json", "--limit", "1"])).unwrap();
    assert_eq!(cli[0]["action"], "backup");
    assert!(cli[0]["who"].as_str().unwrap().starts_with("local:"));
    assert!(cli[0]["from"].as_str().unwrap().starts_with("cli@"));
    assert_eq!(cli[0]["ok"], true);
    // Metrics name the source and the repository's size (the listing
    // behind them is at most a second old).
    std::thread::sleep(Duration::from_millis(1100));
    let text = s
        .request("GET", "/metrics", Some("reader"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(
        text.contains("rewindb_snapshots{source=\"app\"} 1"),
        "{text}"
    );
    assert!(text.contains("rewindb_repository_bytes "), "{text}");
    assert!(
        text.contains("rewindb_jobs{kind=\"restore\",state=\"succeeded\"} 2"),
        "{text}"
    );
}

#[test]
fn a_second_backup_of_a_busy_source_is_refused_with_the_running_job() {
    let f = Fixture::with_repo();
    let db = f.path("app.db");
    make_db(&db, 50_000, "delete");
    let s = Server::start(&f, &db, "", "");
    let first = s.post("/api/v1/sources/app/backup", json!({}));
    assert_eq!(first.status(), StatusCode::ACCEPTED);
    let first: Value = first.json().unwrap();
    let second = s.post("/api/v1/sources/app/backup", json!({"label": "again"}));
    assert_eq!(second.status(), StatusCode::CONFLICT);
    let body: Value = second.json().unwrap();
    assert_eq!(body["error"]["code"], "busy");
    assert_eq!(body["error"]["job"], first["id"]);
    assert_eq!(
        s.wait_job(first["id"].as_u64().unwrap())["state"],
        "succeeded"
    );
    // Once it is done, the source takes another.
    assert_eq!(s.backup(Some("again"))["state"], "succeeded");
    let r = s.post("/api/v1/sources/nope/backup", json!({}));
    assert_eq!(code(r), (StatusCode::NOT_FOUND, "not_found".into()));
}

#[test]
fn malformed_and_oversized_bodies_and_imports() {
    let f = Fixture::with_repo();
    let db = f.path("app.db");
    make_db(&db, 3000, "delete");
    let s = Server::start(&f, &db, "", "max_upload = \"1MiB\"");
    let post_raw = |path: &str, body: Vec<u8>| {
        s.request("POST", path, Some("all"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .unwrap()
    };
    assert_eq!(
        code(post_raw(
            "/api/v1/sources/app/backup",
            b"{\"label\":".to_vec()
        )),
        (StatusCode::BAD_REQUEST, "bad_request".into())
    );
    assert_eq!(
        code(post_raw(
            "/api/v1/sources/app/backup",
            b"{\"lable\":\"x\"}".to_vec()
        ))
        .0,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        code(post_raw("/api/v1/check", b"[1,2]".to_vec())).0,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        code(post_raw("/api/v1/forget", b"{}".to_vec())).0,
        StatusCode::BAD_REQUEST
    );
    // Bodies refused before they are read go through a client of their own
    // that keeps no connection: the server closes one whose body it did not
    // read, and a pooled one would fail the next call.
    let once = Client::builder().pool_max_idle_per_host(0).build().unwrap();
    let huge = format!("{{\"label\":\"{}\"}}", "x".repeat(100_000)).into_bytes();
    let refused = once
        .post(format!("{}/api/v1/sources/app/backup", s.url))
        .bearer_auth(s.token("all"))
        .header("content-type", "application/json")
        .body(huge)
        .send();
    match refused {
        Ok(r) => assert_eq!(code(r), (StatusCode::PAYLOAD_TOO_LARGE, "too_large".into())),
        Err(e) => assert!(e.is_request() || e.is_body(), "{e}"),
    }
    assert_eq!(
        code(
            s.request("GET", "/api/v1/snapshots?limit=many", Some("all"))
                .send()
                .unwrap()
        )
        .0,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        code(
            s.request("GET", "/api/v1/jobs/x", Some("all"))
                .send()
                .unwrap()
        )
        .0,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        code(
            s.request("GET", "/api/v1/snapshots/zz", Some("all"))
                .send()
                .unwrap()
        )
        .0,
        StatusCode::BAD_REQUEST
    );
    // Imports: too large, not SQLite, a damaged SQLite file; nothing stored.
    let import = |body: Vec<u8>| {
        s.request(
            "POST",
            "/api/v1/import?source=app&label=uploaded",
            Some("operator"),
        )
        .header("content-type", "application/octet-stream")
        .body(body)
        .send()
        .unwrap()
    };
    // Over max_upload, declared or streamed without a length: refused
    // (413, or the connection closed while the client still sends).
    let too_large = |sent: reqwest::Result<Response>| match sent {
        Ok(r) => assert_eq!(code(r), (StatusCode::PAYLOAD_TOO_LARGE, "too_large".into())),
        Err(e) => assert!(e.is_request() || e.is_body(), "{e}"),
    };
    let url = format!("{}/api/v1/import?source=app", s.url);
    too_large(
        once.post(&url)
            .bearer_auth(s.token("operator"))
            .body(vec![0u8; 2 << 20])
            .send(),
    );
    too_large(
        once.post(&url)
            .bearer_auth(s.token("operator"))
            .body(reqwest::blocking::Body::new(
                std::io::repeat(7).take(3 << 20),
            ))
            .send(),
    );
    assert_eq!(
        code(import(b"hello, not a database".to_vec())).0,
        StatusCode::BAD_REQUEST
    );
    let mut damaged = std::fs::read(&db).unwrap();
    let mid = damaged.len() / 2;
    damaged[mid..mid + 4096].fill(0x55);
    assert_eq!(code(import(damaged)).0, StatusCode::BAD_REQUEST);
    let listed: Vec<Value> = serde_json::from_value(s.get("/api/v1/snapshots")).unwrap();
    assert!(listed.is_empty(), "{listed:?}");
    // A sound upload becomes a snapshot of the source, restored exactly.
    let other = f.path("other.db");
    make_db(&other, 1234, "delete");
    let sent = std::fs::read(&other).unwrap();
    let r = import(sent.clone());
    assert_eq!(r.status(), StatusCode::CREATED);
    let snap: Value = r.json().unwrap();
    assert_eq!(snap["name"], "app");
    assert_eq!(snap["label"], "uploaded");
    assert_eq!(snap["files"][0]["source_path"], db.to_str().unwrap());
    assert_eq!(f.restored_bytes(snap["id"].as_str().unwrap()), sent);
    let log = audit_actions(&s);
    let imports: Vec<bool> = log
        .iter()
        .filter(|(_, a, _)| a == "import")
        .map(|(_, _, ok)| *ok)
        .collect();
    assert_eq!(imports, vec![false, false, true], "{log:?}");
}

#[test]
fn a_damaged_chunk_stops_a_download_before_its_end() {
    let f = Fixture::with_repo();
    let db = f.path("app.db");
    make_db(&db, 60_000, "delete");
    let s = Server::start(&f, &db, "", "");
    let job = s.backup(None);
    let id = job["snapshot"].as_str().unwrap().to_string();
    // One byte in the middle of the one pack.
    let packs: Vec<PathBuf> = walk(&f.repo().join("packs"));
    let pack = packs
        .iter()
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .unwrap();
    let mut bytes = std::fs::read(pack).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x40;
    std::fs::write(pack, &bytes).unwrap();
    let r = s
        .request(
            "GET",
            &format!("/api/v1/snapshots/{id}/download"),
            Some("all"),
        )
        .send()
        .unwrap();
    let declared = r.content_length().unwrap();
    match r.bytes() {
        Ok(body) => panic!(
            "a complete body of {} bytes (declared {declared})",
            body.len()
        ),
        Err(e) => eprintln!("the transfer stopped as it should: {e}"),
    }
    // Logged once the reading side has stopped too.
    let deadline = Instant::now() + Duration::from_secs(20);
    let log = loop {
        let log = audit_actions(&s);
        if log.last().unwrap().1 == "download" || Instant::now() > deadline {
            break log;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(log.last().unwrap().1, "download", "{log:?}");
    assert!(!log.last().unwrap().2, "{log:?}");
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn tls_when_the_config_names_a_certificate() {
    let f = Fixture::with_repo();
    let db = f.path("app.db");
    make_db(&db, 100, "delete");
    let (cert, key) = (f.path("cert.pem"), f.path("key.pem"));
    let made = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
        ])
        .args(["-nodes", "-days", "1", "-subj", "/CN=rewindb-test"])
        .args(["-addext", "subjectAltName=IP:127.0.0.1"])
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .args(["-addext", "extendedKeyUsage=serverAuth"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let pem = std::fs::read(&cert).unwrap();
    let client = Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let s = Server::start_with(
        &f,
        &db,
        "",
        &format!(
            "tls_cert = \"{}\"\ntls_key = \"{}\"",
            cert.display(),
            key.display()
        ),
        client,
    );
    assert!(s.url.starts_with("https://127.0.0.1:"), "{}", s.url);
    assert_eq!(s.get("/api/v1/whoami")["name"], "all");
    assert_eq!(s.backup(Some("over-tls"))["state"], "succeeded");
    // Plain HTTP to the TLS port gets no API answer.
    let plain = Client::new()
        .get(s.url.replace("https://", "http://") + "/api/v1/whoami")
        .bearer_auth(s.token("all"))
        .send();
    assert!(plain.map(|r| !r.status().is_success()).unwrap_or(true));
}
