//! Encrypted repositories: every source round-trips, nothing is readable
//! without the key, passwords and key objects behave as `docs/operations.md`
//! says, and tampering is detected and never restored.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use crate::helpers::{BIN, exited_with, make_db, succeeded, update_rows};

/// Wrong password: its own exit code.
const WRONG_PASSWORD: i32 = 6;
const USAGE: i32 = 2;
const VERIFY: i32 = 4;

/// A directory with an encrypted repository `repo` (not yet created) and a
/// password file per name.
struct Vault {
    dir: tempfile::TempDir,
}

impl Vault {
    fn new() -> Vault {
        Vault {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn repo(&self) -> PathBuf {
        self.path("repo")
    }

    /// The file holding `password`.
    fn password_file(&self, password: &str) -> PathBuf {
        let file = self.path(&format!("pw-{}", password.replace(' ', "_")));
        std::fs::write(&file, format!("{password}\n")).unwrap();
        file
    }

    /// rewindb on `repo` with no password given.
    fn bare(&self, repo: &Path, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.arg("--repo")
            .arg(repo)
            .args(args)
            .env_remove("REWINDB_REPOSITORY")
            .env_remove("REWINDB_PASSWORD")
            .env_remove("REWINDB_PASSWORD_FILE")
            .env_remove("REWINDB_PASSWORD_COMMAND")
            // Cheap keys: each test makes several, and Argon2id's real
            // cost is measured in the benchmarks.
            .env("REWINDB_KDF", "1024,1")
            .env("REWINDB_CACHE_DIR", self.path("cache"))
            .current_dir(self.dir.path());
        c
    }

    /// rewindb on `repo` with `password` (from a file).
    fn with(&self, repo: &Path, password: &str, args: &[&str]) -> Output {
        self.bare(repo, args)
            .env("REWINDB_PASSWORD_FILE", self.password_file(password))
            .output()
            .unwrap()
    }

    fn ok(&self, password: &str, args: &[&str]) -> String {
        succeeded(args, self.with(&self.repo(), password, args))
    }

    fn fails(&self, password: &str, args: &[&str], code: i32) -> String {
        exited_with(args, self.with(&self.repo(), password, args), code)
    }

    fn backup(&self, password: &str, db: &Path) -> String {
        let out = self.ok(
            password,
            &["backup", "sqlite", "--json", db.to_str().unwrap()],
        );
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        v["id"].as_str().unwrap().to_string()
    }

    fn restored(&self, password: &str, id: &str) -> Vec<u8> {
        let to = self.path(&format!("restored-{}.db", &id[..8]));
        self.ok(password, &["restore", id, "--to", to.to_str().unwrap()]);
        let bytes = std::fs::read(&to).unwrap();
        std::fs::remove_file(&to).unwrap();
        bytes
    }
}

/// Every file under `dir`, by path relative to it.
fn files_under(dir: &Path) -> Vec<(String, PathBuf)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap().flatten() {
            let p = entry.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(dir).unwrap().display().to_string();
                out.push((rel, p));
            }
        }
    }
    out.sort();
    out
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// A database whose rows carry a string no ciphertext would hold.
fn secret_db(path: &Path) {
    make_db(path, 5_000, "wal");
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.execute(
        "INSERT INTO items(name, qty, note) VALUES ('customer', 1, 'CARD-4111-1111-1111-1111')",
        [],
    )
    .unwrap();
}

#[test]
fn sqlite_and_streams_round_trip_encrypted_and_the_repository_reads_as_noise() {
    let v = Vault::new();
    let out = v.ok("pw one", &["init"]);
    assert!(out.contains("created an encrypted repository"), "{out}");
    let db = v.path("app.db");
    secret_db(&db);
    let first = v.backup("pw one", &db);
    let first_bytes = std::fs::read(&db).unwrap();
    update_rows(&db, 300, 1);
    let second = v.backup("pw one", &db);
    let second_bytes = std::fs::read(&db).unwrap();
    assert_eq!(v.restored("pw one", &first), first_bytes);
    assert_eq!(v.restored("pw one", &second), second_bytes);

    // A command stream, twice (the second mostly deduplicated).
    let text: String = (0..20_000)
        .map(|i| format!("row {i} STREAM-SECRET-{}\n", i % 13))
        .collect();
    std::fs::write(v.path("dump.txt"), &text).unwrap();
    let dump = v.path("dump.txt");
    for _ in 0..2 {
        v.ok(
            "pw one",
            &[
                "backup",
                "command",
                "--name",
                "dump",
                "--",
                "cat",
                dump.to_str().unwrap(),
            ],
        );
    }
    let streamed = v.ok(
        "pw one",
        &["restore", "latest", "--source", "dump", "--stdout"],
    );
    assert_eq!(streamed, text);
    v.ok("pw one", &["check", "--read-data"]);

    // The second backup stored changed pages as deltas, inside sealed
    // frames: the index rebuilt from the packs finds their bases, and gc
    // rewriting every pack with garbage re-seals what it keeps.
    let second_stats: serde_json::Value =
        serde_json::from_str(&v.ok("pw one", &["snapshots", "--json"]))
            .map(|all: Vec<serde_json::Value>| all[1].clone())
            .unwrap();
    assert!(
        second_stats["stats"]["chunks_delta"].as_u64().unwrap() > 0,
        "{second_stats}"
    );
    let repaired = v.ok("pw one", &["repair", "index"]);
    assert!(
        repaired.contains("index rebuilt") && !repaired.contains("left out"),
        "{repaired}"
    );
    assert_eq!(v.restored("pw one", &second), second_bytes);
    v.ok("pw one", &["forget", &first]);
    let gc: serde_json::Value =
        serde_json::from_str(&v.ok("pw one", &["gc", "--repack-threshold", "1", "--json"]))
            .unwrap();
    assert!(gc["packs_rewritten"].as_u64().unwrap() > 0, "{gc}");
    assert_eq!(v.restored("pw one", &second), second_bytes);
    v.ok("pw one", &["check", "--read-data"]);

    let stats: serde_json::Value =
        serde_json::from_str(&v.ok("pw one", &["stats", "--json"])).unwrap();
    assert_eq!(stats["encryption"], "xchacha20poly1305", "{stats}");
    let status = v.ok("pw one", &["status"]);
    assert!(status.contains("(encrypted)"), "{status}");

    // Nothing in the repository shows the data, the page format, or a
    // plain blake3 of a page the attacker could compute.
    // (the first chunk as this repository cuts it: what a plain repository
    // would name it)
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(v.repo().join("config.json")).unwrap()).unwrap();
    let chunk = config["chunker"]["page_chunk_min"].as_u64().unwrap() as usize;
    let plain_id = blake3::hash(&first_bytes[..chunk]);
    for (name, path) in files_under(&v.repo()) {
        if name == "index.redb" {
            continue; // the local index: ids and locations, no data
        }
        let bytes = std::fs::read(&path).unwrap();
        for needle in [
            b"CARD-4111".as_slice(),
            b"STREAM-SECRET",
            b"SQLite format 3",
            b"app.db",
            plain_id.as_bytes(),
        ] {
            assert!(!contains(&bytes, needle), "{name} holds {needle:?}");
        }
    }
    // Where a plain repository of the same bytes does show that id.
    let plain = v.path("plain");
    let first_copy = v.path("first.db");
    std::fs::write(&first_copy, &first_bytes).unwrap();
    succeeded(
        &["init"],
        v.bare(&plain, &["init", "--no-encryption"])
            .output()
            .unwrap(),
    );
    let args = ["backup", "sqlite", first_copy.to_str().unwrap()];
    succeeded(&args, v.bare(&plain, &args).output().unwrap());
    assert!(
        files_under(&plain.join("packs"))
            .iter()
            .any(|(_, p)| contains(&std::fs::read(p).unwrap(), plain_id.as_bytes())),
        "a plain repository names the chunk by its plain blake3"
    );
    // Key objects are the owner's alone.
    let keys = files_under(&v.repo().join("keys"));
    assert_eq!(keys.len(), 1);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&keys[0].1).unwrap().permissions().mode();
    assert_eq!(mode & 0o077, 0, "key object mode {mode:o}");
}

#[test]
fn passwords_keys_and_bad_password_input() {
    let v = Vault::new();
    let repo = v.repo();
    v.ok("alpha", &["init"]);
    let db = v.path("app.db");
    make_db(&db, 2_000, "wal");
    let id = v.backup("alpha", &db);

    // No password, and a wrong one: distinct errors, exit codes and advice.
    let out = v.bare(&repo, &["snapshots"]).output().unwrap();
    let err = exited_with(&["snapshots"], out, USAGE);
    assert!(
        err.contains("is encrypted and no password was given")
            && err.contains("REWINDB_PASSWORD_FILE"),
        "{err}"
    );
    let err = v.fails("beta", &["snapshots"], WRONG_PASSWORD);
    assert!(err.contains("does not open repository"), "{err}");
    assert!(
        !err.contains("beta"),
        "the password is never printed: {err}"
    );

    // A second password.
    let added = v
        .bare(&repo, &["key", "add"])
        .env("REWINDB_PASSWORD_FILE", v.password_file("alpha"))
        .env("REWINDB_NEW_PASSWORD_FILE", v.password_file("beta"))
        .output()
        .unwrap();
    succeeded(&["key", "add"], added);
    let keys: Vec<serde_json::Value> =
        serde_json::from_str(&v.ok("beta", &["key", "list", "--json"])).unwrap();
    assert_eq!(keys.len(), 2);
    let current: Vec<&serde_json::Value> = keys.iter().filter(|k| k["current"] == true).collect();
    assert_eq!(current.len(), 1, "{keys:?}");
    let beta_id = current[0]["id"].as_str().unwrap().to_string();
    let alpha_id = keys
        .iter()
        .map(|k| k["id"].as_str().unwrap().to_string())
        .find(|k| *k != beta_id)
        .unwrap();
    assert!(v.ok("beta", &["snapshots"]).contains(&id[..8]));

    // The key in use is not removed; another one is.
    let err = v.fails("alpha", &["key", "remove", &alpha_id], USAGE);
    assert!(err.contains("in use"), "{err}");
    v.ok("beta", &["key", "remove", &alpha_id]);
    v.fails("alpha", &["snapshots"], WRONG_PASSWORD);
    // The last key is never removed.
    let err = v.fails("beta", &["key", "remove", &beta_id], USAGE);
    assert!(err.contains("last key"), "{err}");

    // passwd: the new password opens it, the old one no longer does.
    let changed = v
        .bare(&repo, &["key", "passwd"])
        .env("REWINDB_PASSWORD_FILE", v.password_file("beta"))
        .env("REWINDB_NEW_PASSWORD_FILE", v.password_file("gamma"))
        .output()
        .unwrap();
    succeeded(&["key", "passwd"], changed);
    v.fails("beta", &["snapshots"], WRONG_PASSWORD);
    assert_eq!(v.restored("gamma", &id), std::fs::read(&db).unwrap());
    // REWINDB_PASSWORD and REWINDB_PASSWORD_COMMAND work too.
    let by_env = v
        .bare(&repo, &["snapshots"])
        .env("REWINDB_PASSWORD", "gamma")
        .output()
        .unwrap();
    succeeded(&["snapshots"], by_env);
    let by_cmd = v
        .bare(&repo, &["snapshots"])
        .env("REWINDB_PASSWORD_COMMAND", "printf gamma")
        .output()
        .unwrap();
    succeeded(&["snapshots"], by_cmd);

    // Bad password input: a clear message, exit 2, and nothing written.
    let fresh = v.path("fresh");
    let empty = v.path("empty-pw");
    std::fs::write(&empty, "\n").unwrap();
    let cases: [(&str, &str, &str); 3] = [
        ("REWINDB_PASSWORD_FILE", empty.to_str().unwrap(), "is empty"),
        (
            "REWINDB_PASSWORD_COMMAND",
            "echo nope >&2; exit 3",
            "failed",
        ),
        ("REWINDB_PASSWORD_FILE", "/nonexistent/pw", "No such file"),
    ];
    for (var, value, says) in cases {
        let out = v.bare(&fresh, &["init"]).env(var, value).output().unwrap();
        let err = exited_with(&["init"], out, USAGE);
        assert!(err.contains(var) && err.contains(says), "{var}: {err}");
        assert!(!fresh.exists(), "{var}: init wrote {}", fresh.display());
        let out = v
            .bare(&repo, &["backup", "sqlite", db.to_str().unwrap()])
            .env(var, value)
            .output()
            .unwrap();
        exited_with(&["backup"], out, USAGE);
    }
    assert_eq!(
        serde_json::from_str::<Vec<serde_json::Value>>(&v.ok("gamma", &["snapshots", "--json"]))
            .unwrap()
            .len(),
        1,
        "a refused backup saved nothing"
    );

    // A plain repository refuses a password: an encrypted one never turns plain.
    let plain = v.path("plain");
    succeeded(
        &["init"],
        v.bare(&plain, &["init", "--no-encryption"])
            .output()
            .unwrap(),
    );
    let err = exited_with(
        &["snapshots"],
        v.with(&plain, "gamma", &["snapshots"]),
        USAGE,
    );
    assert!(err.contains("is not encrypted"), "{err}");
}

/// Flips one byte of `path` at `at` (from its end when negative).
fn flip(path: &Path, at: i64) {
    let mut bytes = std::fs::read(path).unwrap();
    let i = if at < 0 { bytes.len() as i64 + at } else { at } as usize;
    bytes[i] ^= 0x01;
    std::fs::write(path, bytes).unwrap();
}

fn problems(v: &Vault, password: &str) -> String {
    let out = v.with(&v.repo(), password, &["check", "--read-data", "--json"]);
    assert_eq!(
        out.status.code(),
        Some(VERIFY),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn tampering_is_detected_by_check_and_never_restored() {
    let v = Vault::new();
    v.ok("pw", &["init"]);
    let db = v.path("app.db");
    make_db(&db, 4_000, "wal");
    let first = v.backup("pw", &db);
    update_rows(&db, 100, 2);
    let second = v.backup("pw", &db);
    let snapshot = |id: &str| v.repo().join("snapshots").join(format!("{id}.json"));

    // A flipped bit in the middle of a pack: check names both snapshots
    // (the first backup's pages are the second's too), restore writes nothing.
    let packs = files_under(&v.repo().join("packs"));
    let (_, pack) = packs
        .iter()
        .max_by_key(|(_, p)| std::fs::metadata(p).unwrap().len())
        .unwrap();
    let original = std::fs::read(pack).unwrap();
    flip(pack, original.len() as i64 / 2);
    let report = problems(&v, "pw");
    assert!(
        report.contains("authenticate") && report.contains(&first),
        "{report}"
    );
    let to = v.path("out.db");
    v.fails(
        "pw",
        &["restore", &first, "--to", to.to_str().unwrap()],
        VERIFY,
    );
    assert!(!to.exists());
    // The table too (truncated: the trailer is gone).
    std::fs::write(pack, &original[..original.len() - 100]).unwrap();
    problems(&v, "pw");
    std::fs::write(pack, &original).unwrap();
    v.ok("pw", &["check", "--read-data"]);

    // Two snapshot objects swapped: each is refused under the other's name.
    let (a, b) = (
        std::fs::read(snapshot(&first)).unwrap(),
        std::fs::read(snapshot(&second)).unwrap(),
    );
    std::fs::write(snapshot(&first), &b).unwrap();
    std::fs::write(snapshot(&second), &a).unwrap();
    let report = problems(&v, "pw");
    assert!(
        report.contains(&first) && report.contains(&second),
        "{report}"
    );
    v.fails(
        "pw",
        &["restore", &first[..8], "--to", to.to_str().unwrap()],
        USAGE,
    );
    // Truncated.
    std::fs::write(snapshot(&first), &a[..a.len() - 1]).unwrap();
    std::fs::write(snapshot(&second), &b).unwrap();
    assert!(problems(&v, "pw").contains(&first));
    std::fs::write(snapshot(&first), &a).unwrap();

    // A protect marker moved onto another snapshot protects nothing.
    v.ok("pw", &["protect", &first]);
    let markers = v.repo().join("protected");
    std::fs::copy(markers.join(&first), markers.join(&second)).unwrap();
    let report = problems(&v, "pw");
    assert!(report.contains("protect marker"), "{report}");
    std::fs::remove_file(markers.join(&second)).unwrap();
    v.ok("pw", &["check", "--read-data"]);

    // A replayed gc.json: an older copy put back after a later gc.
    v.ok("pw", &["gc"]);
    let old_gc = std::fs::read(v.repo().join("gc.json")).unwrap();
    v.ok("pw", &["forget", &second]);
    v.ok("pw", &["gc"]);
    std::fs::write(v.repo().join("gc.json"), &old_gc).unwrap();
    let report = problems(&v, "pw");
    assert!(report.contains("replayed"), "{report}");
    // gc refuses to work from it, before changing anything.
    let before = files_under(&v.repo().join("packs"));
    let err = v.fails("pw", &["gc"], VERIFY);
    assert!(err.contains("replayed"), "{err}");
    assert_eq!(files_under(&v.repo().join("packs")), before);

    // A key object forged for this repository with keys of the attacker's
    // own: it opens with the attacker's password, but config.json's mac
    // (made with the true key) refuses those keys.
    use rewindb::crypto::keys::{KdfParams, KeyObject};
    use rewindb::crypto::{MasterKeys, password::Password};
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(v.repo().join("config.json")).unwrap()).unwrap();
    let cheap = KdfParams {
        memory_kib: 1024,
        iterations: 1,
        parallelism: 1,
    };
    let forged = KeyObject::wrap(
        config["id"].as_str().unwrap(),
        &MasterKeys::generate(),
        &Password::new("attacker".into()),
        cheap,
    )
    .unwrap();
    let forged_path = v.repo().join("keys").join("0000000000000000.json");
    std::fs::write(&forged_path, serde_json::to_vec(&forged).unwrap()).unwrap();
    let err = v.fails("attacker", &["snapshots"], VERIFY);
    assert!(
        err.contains("config.json") && err.contains("authenticate"),
        "{err}"
    );
    assert!(v.ok("pw", &["snapshots"]).contains(&first[..8]));
    std::fs::remove_file(&forged_path).unwrap();

    // A config.json changed without the key.
    let config = v.repo().join("config.json");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replace("\"compression_level\": 3", "\"compression_level\": 4"),
    )
    .unwrap();
    let err = v.fails("pw", &["snapshots"], VERIFY);
    assert!(
        err.contains("config.json") && err.contains("authenticate"),
        "{err}"
    );
}

#[test]
fn repositories_with_their_own_keys_share_nothing_and_copy_needs_shared_keys() {
    let v = Vault::new();
    let db = v.path("app.db");
    secret_db(&db);
    let (one, two, three) = (v.path("one"), v.path("two"), v.path("three"));
    let on = |repo: &Path, args: &[&str]| succeeded(args, v.with(repo, "same password", args));
    let names = |repo: &Path| -> BTreeSet<String> {
        files_under(repo)
            .into_iter()
            .map(|(n, _)| n)
            .filter(|n| {
                n.starts_with("packs/") || n.starts_with("snapshots/") || n.starts_with("index/")
            })
            .collect()
    };
    on(&one, &["init"]);
    on(&two, &["init"]);
    let id_one = on(&one, &["backup", "sqlite", db.to_str().unwrap()]);
    let id_two = on(&two, &["backup", "sqlite", db.to_str().unwrap()]);
    assert!(!names(&one).is_empty());
    assert!(names(&one).is_disjoint(&names(&two)), "common object names");
    let ids = |repo: &Path| -> BTreeSet<String> {
        serde_json::from_str::<Vec<serde_json::Value>>(&on(repo, &["snapshots", "--json"]))
            .unwrap()
            .iter()
            .map(|s| s["id"].as_str().unwrap().to_string())
            .collect()
    };
    assert!(ids(&one).is_disjoint(&ids(&two)), "{id_one} / {id_two}");

    // copy between them would store everything again: refused, with the way out.
    let err = exited_with(
        &["copy"],
        v.with(
            &one,
            "same password",
            &["copy", "--to", two.to_str().unwrap()],
        ),
        USAGE,
    );
    assert!(err.contains("--keys-from"), "{err}");
    let out = v
        .bare(&three, &["init", "--keys-from", one.to_str().unwrap()])
        .env("REWINDB_PASSWORD_FILE", v.password_file("same password"))
        .env("REWINDB_NEW_PASSWORD_FILE", v.password_file("another"))
        .output()
        .unwrap();
    succeeded(&["init", "--keys-from"], out);
    // The destination's password comes from REWINDB_TO_PASSWORD_FILE.
    let copy = ["copy", "--to", three.to_str().unwrap(), "--json"];
    let out = v
        .bare(&one, &copy)
        .env("REWINDB_PASSWORD_FILE", v.password_file("same password"))
        .env("REWINDB_TO_PASSWORD_FILE", v.password_file("another"))
        .output()
        .unwrap();
    let copied: serde_json::Value = serde_json::from_str(&succeeded(&copy, out)).unwrap();
    assert!(copied["chunks_sent"].as_u64().unwrap() > 0, "{copied}");
    // The destination opens with its own password; ids are the source's.
    let listed = succeeded(
        &["snapshots"],
        v.with(&three, "another", &["snapshots", "--json"]),
    );
    assert!(
        listed.contains(&ids(&one).into_iter().next().unwrap()),
        "{listed}"
    );
    let to = v.path("from-three.db");
    succeeded(
        &["restore"],
        v.with(
            &three,
            "another",
            &["restore", "latest", "--to", to.to_str().unwrap()],
        ),
    );
    assert_eq!(std::fs::read(&to).unwrap(), std::fs::read(&db).unwrap());
    succeeded(
        &["check"],
        v.with(&three, "another", &["check", "--read-data"]),
    );
}

#[test]
fn postgres_point_in_time_recovery_from_an_encrypted_repository() {
    use crate::pg::{Cluster, PgFixture};
    use crate::postgres::{make_table, wait_until_promoted};

    let f = PgFixture::encrypted();
    let mut c = f.cluster("primary");
    c.start();
    make_table(&c, 20_000);
    crate::postgres::base_backup(&f, &c);
    c.sql("INSERT INTO t (v) SELECT 'after backup' FROM generate_series(1, 1234)");
    std::thread::sleep(Duration::from_millis(100));
    let t = c.sql("SELECT clock_timestamp()");
    let at_t = c.sql("SELECT count(*) FROM t");
    std::thread::sleep(Duration::from_millis(100));
    c.sql("INSERT INTO t (v) SELECT 'after T' FROM generate_series(1, 999)");
    c.switch_and_wait(&f.repo());
    // The archive holds ciphertext: no WAL page header, no row text.
    let wal = files_under(&f.repo().join("wal"));
    assert!(!wal.is_empty());
    for (name, path) in &wal {
        let bytes = std::fs::read(path).unwrap();
        assert!(!contains(&bytes, b"after backup"), "{name}");
        assert!(!contains(&bytes, b"RWDBWAL1"), "{name}: a plain header");
    }
    f.ok(&["check", "--read-data"]);

    // The restored server fetches WAL with the same password file.
    let to = c.root.join("at-t");
    f.ok(&[
        "restore",
        "--at",
        &t,
        "--to",
        to.to_str().unwrap(),
        "--rewindb-path",
        f.bin().to_str().unwrap(),
    ]);
    let settings = std::fs::read_to_string(to.join("postgresql.auto.conf")).unwrap();
    assert!(settings.contains("REWINDB_PASSWORD_FILE="), "{settings}");
    assert!(!settings.contains("pg secret"), "{settings}");
    let mut r = Cluster::restored(&c.root, &to);
    c.stop();
    r.start();
    wait_until_promoted(&r);
    assert_eq!(r.sql("SELECT count(*) FROM t"), at_t, "rows at T");
    r.stop();

    // A password given only in REWINDB_PASSWORD cannot reach restore_command:
    // refused before anything is written.
    let to = c.root.join("refused");
    let out = Command::new(f.bin())
        .args([
            "--repo",
            f.repo().to_str().unwrap(),
            "restore",
            "latest",
            "--to",
            to.to_str().unwrap(),
        ])
        .env("REWINDB_PASSWORD", "pg secret")
        .env("REWINDB_CACHE_DIR", f.path("cache"))
        .env_remove("REWINDB_REPOSITORY")
        .output()
        .unwrap();
    let err = exited_with(&["restore"], out, USAGE);
    assert!(err.contains("restore_command"), "{err}");
    assert!(!to.exists());

    // One archived segment's object put under another's name: refused.
    let segments: Vec<&(String, PathBuf)> = wal
        .iter()
        .filter(|(n, _)| n.len() > 24 && !n.contains('.'))
        .collect();
    assert!(segments.len() >= 2, "{wal:?}");
    std::fs::copy(&segments[0].1, &segments[1].1).unwrap();
    let out = f.run(&["check", "--read-data", "--json"]);
    assert_eq!(out.status.code(), Some(VERIFY));
    let report = String::from_utf8_lossy(&out.stdout);
    let swapped = segments[1].0.rsplit('/').next().unwrap();
    assert!(
        report.contains(swapped) && report.contains("authenticate"),
        "{report}"
    );
}
