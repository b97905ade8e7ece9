//! Shared fixtures: temporary repositories, real SQLite databases, the rewindb binary,
//! and a writer that runs as a separate process.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::time::Duration;

use rusqlite::Connection;

pub const BIN: &str = env!("CARGO_BIN_EXE_rewindb");

/// Asserts that rewindb `args` succeeded; returns its stdout.
pub fn succeeded(args: &[&str], out: Output) -> String {
    assert!(
        out.status.success(),
        "rewindb {args:?} failed ({:?}):\n{}\nstdout:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Asserts that rewindb `args` exited with `code`; returns its stderr.
pub fn exited_with(args: &[&str], out: Output, code: i32) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        out.status.code(),
        Some(code),
        "rewindb {args:?}: stdout {}\nstderr {stderr}",
        String::from_utf8_lossy(&out.stdout)
    );
    stderr
}

/// A temporary directory with a repository path inside it (not yet created).
pub struct Fixture {
    pub dir: tempfile::TempDir,
}

impl Fixture {
    pub fn new() -> Fixture {
        Fixture {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// A fixture whose repository has been initialised.
    pub fn with_repo() -> Fixture {
        let f = Fixture::new();
        f.ok(&["init"]);
        f
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn repo(&self) -> PathBuf {
        self.path("repo")
    }

    /// Runs rewindb against this fixture's repository.
    pub fn run(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .arg("--repo")
            .arg(self.repo())
            .args(args)
            .env_remove("REWINDB_REPOSITORY")
            .current_dir(self.dir.path())
            .output()
            .unwrap()
    }

    /// Runs rewindb and asserts success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        succeeded(args, self.run(args))
    }

    /// Runs rewindb, asserts it exits with `code`; returns stderr.
    pub fn fails(&self, args: &[&str], code: i32) -> String {
        exited_with(args, self.run(args), code)
    }

    /// `snapshots --json`, parsed.
    pub fn snapshots(&self) -> Vec<serde_json::Value> {
        serde_json::from_str(&self.ok(&["snapshots", "--json"])).unwrap()
    }

    /// Backs up and returns the new snapshot's id.
    pub fn backup(&self, dbs: &[&Path]) -> String {
        let mut args = vec!["backup", "sqlite", "--json"];
        let strs: Vec<String> = dbs.iter().map(|p| p.display().to_string()).collect();
        args.extend(strs.iter().map(String::as_str));
        let v: serde_json::Value = serde_json::from_str(&self.ok(&args)).unwrap();
        v["id"].as_str().unwrap().to_string()
    }

    /// The bytes snapshot `id` (one database) restores to (`--verify hash`).
    pub fn restored_bytes(&self, id: &str) -> Vec<u8> {
        let to = self.path(&format!("restored-{}.db", &id[..8]));
        self.ok(&[
            "restore",
            id,
            "--verify",
            "hash",
            "--to",
            to.to_str().unwrap(),
        ]);
        let bytes = std::fs::read(&to).unwrap();
        std::fs::remove_file(&to).unwrap();
        bytes
    }

    /// Seals packs at 64 KiB instead of 16 MiB, so that a small database
    /// spreads over many packs (and page data and manifests part ways).
    pub fn use_small_packs(&self) {
        let cfg = self.repo().join("config.json");
        let text = std::fs::read_to_string(&cfg).unwrap();
        std::fs::write(&cfg, small_packs(&text)).unwrap();
    }

    /// The snapshot ids `check --read-data --json` names in its problems.
    pub fn affected_snapshots(&self) -> Vec<String> {
        let report: serde_json::Value =
            serde_json::from_slice(&self.run(&["check", "--read-data", "--json"]).stdout).unwrap();
        report["problems"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|p| p["affected_snapshots"].as_array().unwrap())
            .map(|v| v.as_str().unwrap().to_string())
            .collect()
    }

    /// Every file under the repository with its bytes, to prove it was not touched.
    /// How many entries the audit log has.
    pub fn audit_entries(&self) -> usize {
        std::fs::read_dir(self.repo().join("audit")).map_or(0, |d| d.count())
    }

    /// Every file of the repository but the lock and the audit log (which
    /// records restores and failed attempts too: `audit_entries` counts it).
    pub fn repo_state(&self) -> Vec<(PathBuf, Vec<u8>)> {
        let mut out = Vec::new();
        let mut stack = vec![self.repo()];
        while let Some(d) = stack.pop() {
            let Ok(rd) = std::fs::read_dir(&d) else {
                continue;
            };
            for e in rd {
                let p = e.unwrap().path();
                if p.is_dir() {
                    if p != self.repo().join("audit") {
                        stack.push(p);
                    }
                } else if p.file_name().unwrap() != "lock" {
                    out.push((p.clone(), std::fs::read(&p).unwrap()));
                }
            }
        }
        out.sort();
        out
    }
}

/// Creates a database with `rows` rows of varied text in `journal` mode ("wal" or "delete").
pub fn make_db(path: &Path, rows: u64, journal: &str) {
    let conn = Connection::open(path).unwrap();
    conn.pragma_update(None, "journal_mode", journal).unwrap();
    conn.execute_batch(
        "CREATE TABLE items(id INTEGER PRIMARY KEY, name TEXT, qty INTEGER, note TEXT);
         CREATE INDEX items_name ON items(name);",
    )
    .unwrap();
    insert_rows(&conn, 0, rows);
}

pub fn insert_rows(conn: &Connection, start: u64, rows: u64) {
    conn.execute_batch("BEGIN").unwrap();
    {
        let mut stmt = conn
            .prepare("INSERT INTO items(name, qty, note) VALUES (?1, ?2, ?3)")
            .unwrap();
        for i in start..start + rows {
            let x = i.wrapping_mul(2654435761) % 100_000;
            stmt.execute((
                format!("item-{x:05}"),
                (x % 97) as i64,
                format!("note {i} about {x} and some padding text {}", x * 7),
            ))
            .unwrap();
        }
    }
    conn.execute_batch("COMMIT").unwrap();
}

pub fn row_count(path: &Path) -> i64 {
    let conn = Connection::open(path).unwrap();
    conn.busy_timeout(Duration::from_secs(10)).unwrap();
    conn.query_row("SELECT count(*) FROM items", [], |r| r.get(0))
        .unwrap()
}

/// Updates `n` rows spread over the table.
pub fn update_rows(path: &Path, n: u64, salt: u64) {
    let conn = Connection::open(path).unwrap();
    let max: i64 = conn
        .query_row("SELECT max(id) FROM items", [], |r| r.get(0))
        .unwrap();
    conn.execute_batch("BEGIN").unwrap();
    for i in 0..n {
        let id = (i.wrapping_mul(7919).wrapping_add(salt) % max as u64) as i64 + 1;
        conn.execute(
            "UPDATE items SET qty = qty + 1, note = ?2 WHERE id = ?1",
            (id, format!("changed {salt} {i}")),
        )
        .unwrap();
    }
    conn.execute_batch("COMMIT").unwrap();
}

pub fn integrity_ok(path: &Path) -> bool {
    let conn = Connection::open(path).unwrap();
    let r: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    r == "ok"
}

/// A process that keeps inserting rows into `db` until `stop` exists.
pub struct Writer {
    child: Child,
    stop: PathBuf,
}

impl Writer {
    pub fn start(db: &Path) -> Writer {
        let stop = db.with_extension("stop");
        let child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "helpers::writer_process",
                "--ignored",
                "--nocapture",
            ])
            .env("REWINDB_TEST_WRITER_DB", db)
            .env("REWINDB_TEST_WRITER_STOP", &stop)
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // Wait until it has committed at least once.
        let before = row_count(db);
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while row_count(db) == before {
            assert!(std::time::Instant::now() < deadline, "writer never wrote");
            std::thread::sleep(Duration::from_millis(10));
        }
        Writer { child, stop }
    }

    pub fn stop(mut self) {
        std::fs::write(&self.stop, b"").unwrap();
        let status = self.child.wait().unwrap();
        assert!(status.success(), "writer failed");
    }
}

impl Drop for Writer {
    /// A test that panicked before `stop` must not leave the writer running.
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Not a test: the body of [`Writer`]'s child process.
#[test]
#[ignore]
fn writer_process() {
    let (Ok(db), Ok(stop)) = (
        std::env::var("REWINDB_TEST_WRITER_DB"),
        std::env::var("REWINDB_TEST_WRITER_STOP"),
    ) else {
        return;
    };
    let conn = Connection::open(&db).unwrap();
    conn.busy_timeout(Duration::from_secs(30)).unwrap();
    let mut next: u64 = 10_000_000;
    while !Path::new(&stop).exists() {
        insert_rows(&conn, next, 20);
        next += 20;
    }
}

/// A new repository's `config.json` with packs sealed at 64 KiB instead of
/// 16 MiB and frames of 16 KiB, so that a small database spreads over many
/// packs, each of several frames, as a large one does with the defaults.
pub fn small_packs(config: &str) -> Vec<u8> {
    let mut config: serde_json::Value = serde_json::from_str(config).unwrap();
    assert_eq!(config["pack_target_bytes"], 16 << 20, "{config}");
    config["pack_target_bytes"] = (64 << 10).into();
    config["frame_target_bytes"] = (16 << 10).into();
    serde_json::to_vec_pretty(&config).unwrap()
}
