//! The web console in a real browser: Debian's chromium, driven through
//! chromedriver's WebDriver API over loopback. One browser for the whole
//! walk: sign in, back up with a label and see the snapshot appear,
//! download the database and compare its hash, restore in place after the
//! confirmation that names the file, and check the page at a phone's width.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use reqwest::blocking::Client;
use serde_json::{Value, json};

use crate::helpers::{Fixture, make_db, row_count};
use crate::serve::Server;

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";
/// The W3C WebDriver element key.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// chromedriver on a loopback port with one headless browser session.
struct Browser {
    driver: Child,
    base: String,
    http: Client,
}

impl Browser {
    fn start(downloads: &Path) -> Browser {
        assert!(
            Path::new(CHROMEDRIVER).exists() && Path::new(CHROMIUM).exists(),
            "the console test needs Debian's chromium and chromium-driver \
             (apt-get install chromium chromium-driver; .ci/run installs them)"
        );
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let http = Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap();
        let root = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        while http.get(format!("{root}/status")).send().is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1280,1100"],
                "prefs": {
                    "download.default_directory": downloads,
                    "download.prompt_for_download": false,
                },
            },
        }}});
        let session: Value = http
            .post(format!("{root}/session"))
            .json(&caps)
            .send()
            .unwrap()
            .json()
            .unwrap();
        let id = session["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {session}"))
            .to_string();
        let b = Browser {
            driver,
            base: format!("{root}/session/{id}"),
            http,
        };
        // Headless Chromium saves downloads only when told where.
        b.call(
            "POST",
            "/chromium/send_command",
            json!({"cmd": "Page.setDownloadBehavior",
                   "params": {"behavior": "allow", "downloadPath": downloads}}),
        );
        b
    }

    /// A WebDriver command: its value, or its error.
    fn try_call(&self, method: &str, path: &str, body: Value) -> Result<Value, Value> {
        let url = format!("{}{path}", self.base);
        let r = match method {
            "GET" => self.http.get(url),
            "DELETE" => self.http.delete(url),
            _ => self.http.post(url).json(&body),
        };
        let v: Value = r.send().unwrap().json().unwrap();
        match v["value"].get("error") {
            Some(_) => Err(v["value"].clone()),
            None => Ok(v["value"].clone()),
        }
    }

    fn call(&self, method: &str, path: &str, body: Value) -> Value {
        self.try_call(method, path, body)
            .unwrap_or_else(|e| panic!("WebDriver {method} {path}: {e}"))
    }

    /// Clicks the first element `css` selects, waiting for one that takes
    /// the click (the console redraws parts of the page as data arrives,
    /// which leaves a reference taken a moment before stale).
    fn click_css(&self, css: &str) {
        self.wait(&format!("a click on {css}"), || {
            let el = self.all(css).into_iter().next()?;
            self.try_call("POST", &format!("/element/{el}/click"), json!({}))
                .ok()
        });
    }

    /// An attribute of an element; `None` when it is gone or stale.
    fn attr(&self, element: &str, name: &str) -> Option<String> {
        self.try_call(
            "GET",
            &format!("/element/{element}/attribute/{name}"),
            Value::Null,
        )
        .ok()?
        .as_str()
        .map(str::to_string)
    }

    fn goto(&self, url: &str) {
        self.call("POST", "/url", json!({ "url": url }));
    }

    /// The elements `css` selects now.
    fn all(&self, css: &str) -> Vec<String> {
        let found = self.call(
            "POST",
            "/elements",
            json!({"using": "css selector", "value": css}),
        );
        found
            .as_array()
            .unwrap_or_else(|| panic!("find {css}: {found}"))
            .iter()
            .map(|e| {
                e.get(ELEMENT)
                    .and_then(Value::as_str)
                    .unwrap_or_else(|| panic!("find {css}: no element reference in {e}"))
                    .to_string()
            })
            .collect()
    }

    /// The first element `css` selects, waiting up to 30 s for it.
    fn find(&self, css: &str) -> String {
        self.wait(&format!("an element {css}"), || {
            self.all(css).into_iter().next()
        })
    }

    fn wait<T>(&self, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(v) = f() {
                return v;
            }
            if Instant::now() > deadline {
                self.screenshot(
                    Path::new(env!("CARGO_TARGET_TMPDIR"))
                        .join("console-failure.png")
                        .as_path(),
                );
                panic!("timed out waiting for {what} (screenshot in target/tmp)");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn type_into(&self, element: &str, text: &str) {
        self.call(
            "POST",
            &format!("/element/{element}/value"),
            json!({ "text": text }),
        );
    }

    /// An element's text; empty when it is gone or stale (the waits retry).
    fn text(&self, element: &str) -> String {
        self.try_call("GET", &format!("/element/{element}/text"), Value::Null)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default()
    }

    fn script(&self, code: &str) -> Value {
        self.call("POST", "/execute/sync", json!({"script": code, "args": []}))
    }

    fn screenshot(&self, to: &Path) {
        let png = self.call("GET", "/screenshot", Value::Null);
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(png.as_str().unwrap())
            .unwrap();
        std::fs::write(to, bytes).unwrap();
    }

    fn resize(&self, width: u32, height: u32) {
        self.call(
            "POST",
            "/window/rect",
            json!({"width": width, "height": height}),
        );
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.http.delete(&self.base).send();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// A file that is complete in `dir` (no `.crdownload` beside it).
fn downloaded(dir: &Path, name: &str) -> Option<PathBuf> {
    let path = dir.join(name);
    let partial = std::fs::read_dir(dir).unwrap().any(|e| {
        e.unwrap()
            .file_name()
            .to_string_lossy()
            .ends_with(".crdownload")
    });
    (path.exists() && !partial).then_some(path)
}

#[test]
fn the_console_in_a_real_browser() {
    let f = Fixture::with_repo();
    let db = f.path("app.db");
    make_db(&db, 20_000, "wal");
    let s = Server::start(&f, &db, "max_age = \"1d\"", "");
    // One earlier snapshot, so the table and the chart have two.
    assert_eq!(s.backup(Some("nightly"))["state"], "succeeded");
    crate::helpers::update_rows(&db, 500, 3);
    let downloads = f.path("downloads");
    std::fs::create_dir_all(&downloads).unwrap();
    let b = Browser::start(&downloads);
    b.goto(&s.url);

    // A wrong token is refused; the right one opens the console.
    let token = b.find("#token");
    b.type_into(&token, "rwdb_wrong");
    b.click_css("#token-submit");
    b.wait("the refusal", || {
        let t = b.text(&b.find("#token-error"));
        (!t.is_empty()).then_some(t)
    });
    let token = b.find("#token");
    b.call("POST", &format!("/element/{token}/clear"), json!({}));
    b.type_into(&token, s.token("all"));
    b.click_css("#token-submit");
    b.wait("the token's name", || {
        (b.text(&b.find("#whoami")) == "all").then_some(())
    });
    b.wait("a fresh badge", || {
        let badge = b
            .all(".source[data-source=\"app\"] .badge")
            .into_iter()
            .next()?;
        b.attr(&badge, "class")?.contains("fresh").then_some(())
    });
    // The token stays for this tab only.
    let stored = b.script("return window.sessionStorage.length + ':' + window.localStorage.length");
    assert_eq!(stored, "1:0");

    // Back up now, with a label; the new snapshot appears in the table.
    let label = b.find(".source[data-source=\"app\"] .backup-label");
    b.type_into(&label, "from-the-browser");
    b.click_css(".source[data-source=\"app\"] .backup-now");
    let id = b.wait("the new snapshot's row", || {
        let row = b.all("#snapshots tbody tr").into_iter().find(|r| {
            b.all("#snapshots tbody tr .label").len() >= 2 && b.text(r).contains("from-the-browser")
        })?;
        b.attr(&row, "data-id")
    });
    let snap = s.get(&format!("/api/v1/snapshots/{id}"));
    assert_eq!(snap["label"], "from-the-browser");
    b.wait("the job's success", || {
        b.all("#jobs .job[data-state=\"succeeded\"]")
            .first()
            .cloned()
    });
    // The whole page, for the README (`REWINDB_CONSOLE_SCREENSHOT=docs/console.png`).
    b.resize(1280, 2100);
    let shot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("console.png");
    b.screenshot(&shot);
    if let Ok(to) = std::env::var("REWINDB_CONSOLE_SCREENSHOT") {
        std::fs::copy(&shot, to).unwrap();
    }
    b.resize(1280, 1100);

    // Download: the file the browser saves is the snapshot's, by hash.
    b.click_css(&format!("#snapshots tbody tr[data-id=\"{id}\"] .download"));
    let saved = b.wait("the downloaded file", || downloaded(&downloads, "app.db"));
    let bytes = std::fs::read(&saved).unwrap();
    assert_eq!(
        blake3::hash(&bytes).to_hex().as_str(),
        snap["files"][0]["blake3"].as_str().unwrap()
    );

    // Restore in place: the confirmation names the database it replaces.
    let rows_in_snapshot = {
        let copy = f.path("check.db");
        std::fs::write(&copy, &bytes).unwrap();
        row_count(&copy)
    };
    crate::helpers::insert_rows(&rusqlite::Connection::open(&db).unwrap(), 1_000_000, 77);
    assert_ne!(row_count(&db), rows_in_snapshot);
    b.click_css(&format!("#snapshots tbody tr[data-id=\"{id}\"] .restore"));
    let text = b.wait("the confirmation", || {
        let t = b.text(&b.find("#confirm-text"));
        (!t.is_empty()).then_some(t)
    });
    assert!(text.contains(db.to_str().unwrap()), "{text}");
    b.click_css("#confirm-ok");
    b.wait("the restore job's success", || {
        b.all("#jobs .job[data-state=\"succeeded\"]")
            .into_iter()
            .find(|j| b.text(j).to_lowercase().contains("restore"))
    });
    assert_eq!(row_count(&db), rows_in_snapshot);

    // The audit log shows what the browser did.
    b.wait("the audit entries", || {
        let rows = b.all("#audit tr.audit-entry");
        let text: Vec<String> = rows.iter().map(|r| b.text(r)).collect();
        (text.iter().any(|t| t.contains("download")) && text.iter().any(|t| t.contains("restore")))
            .then_some(())
    });

    // At a phone's width nothing runs off the side of the page.
    b.resize(375, 800);
    let overflow = b.wait("the narrow layout", || {
        let v = b.script("return document.documentElement.scrollWidth - window.innerWidth");
        v.as_i64()
    });
    assert!(
        overflow <= 0,
        "the page is {overflow}px wider than the window"
    );
    b.screenshot(&Path::new(env!("CARGO_TARGET_TMPDIR")).join("console-phone.png"));
}
