//! Retention and gc: `forget` policies, protection, space reclaimed, gc beside
//! backups and WAL pushes, and gc killed with SIGKILL.

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::helpers::*;
use crate::pg::{Cluster, PgFixture};
use crate::postgres::{base_backup, wait_until_promoted};

/// Bytes of every pack file in the repository.
fn pack_bytes(repo: &Path) -> u64 {
    let mut total = 0;
    for d in std::fs::read_dir(repo.join("packs")).unwrap() {
        for p in std::fs::read_dir(d.unwrap().path()).unwrap() {
            total += p.unwrap().metadata().unwrap().len();
        }
    }
    total
}

fn ids(f: &Fixture) -> Vec<String> {
    f.snapshots()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect()
}

/// The retention property's measure: what a repository keeps after forget
/// and gc, `kept` pack bytes, is within 1.1x of `alone`, a fresh repository
/// holding the same snapshots.
fn assert_about_fresh(what: &str, kept: u64, alone: u64) {
    eprintln!("{what}: after gc {kept} pack bytes, a fresh repository {alone}");
    assert!(
        kept as f64 <= 1.1 * alone as f64,
        "{what}: after gc {kept} pack bytes, a fresh repository holding the same snapshots {alone}"
    );
}

/// Restores every snapshot (one database each) and returns its bytes by id.
fn restore_all(f: &Fixture) -> HashMap<String, Vec<u8>> {
    ids(f)
        .into_iter()
        .map(|id| {
            let bytes = f.restored_bytes(&id);
            (id, bytes)
        })
        .collect()
}

#[test]
fn forget_and_gc_keep_retained_snapshots_exact_and_reclaim_what_only_forgotten_ones_used() {
    let f = Fixture::with_repo();
    f.use_small_packs();
    // Source a: a database with history (deltas against earlier snapshots).
    let a = f.path("a.db");
    make_db(&a, 30_000, "wal");
    for round in 0..5 {
        update_rows(&a, 1_500, round);
        f.backup(&[&a]);
    }
    // Source b: its first snapshot shares (almost) nothing with its second.
    let b = f.path("b.db");
    make_db(&b, 40_000, "delete");
    let before_b1 = pack_bytes(&f.repo());
    let b1 = f.backup(&[&b]);
    let b1_bytes = pack_bytes(&f.repo()) - before_b1;
    std::fs::remove_file(&b).unwrap();
    {
        let conn = rusqlite::Connection::open(&b).unwrap();
        conn.execute_batch(
            "CREATE TABLE items(id INTEGER PRIMARY KEY, name TEXT, qty INTEGER, note TEXT);",
        )
        .unwrap();
        insert_rows(&conn, 5_000_000, 30_000);
    }
    f.backup(&[&b]);
    let before = restore_all(&f);
    assert_eq!(before.len(), 7);

    // Three of a's five go; b is untouched by a policy scoped to a.
    let plan: serde_json::Value = serde_json::from_str(&f.ok(&[
        "forget",
        "--keep-last",
        "2",
        "--source",
        a.to_str().unwrap(),
        "--json",
    ]))
    .unwrap();
    assert_eq!(plan.as_array().unwrap().len(), 1, "{plan}");
    assert_eq!(plan[0]["forget"].as_array().unwrap().len(), 3, "{plan}");
    let report: serde_json::Value = serde_json::from_str(&f.ok(&["gc", "--json"])).unwrap();
    // The index keeps exactly what a snapshot needs: a dead chunk left in it
    // would let a later backup dedup against a delta whose base is gone.
    let stats: serde_json::Value = serde_json::from_str(&f.ok(&["stats", "--json"])).unwrap();
    assert_eq!(stats["chunks"], report["live_chunks"], "{report}");
    assert_eq!(
        stats["pack_target_bytes"], 65536,
        "as this test set it: {stats}"
    );
    f.ok(&["check", "--read-data"]);
    let left = restore_all(&f);
    assert_eq!(left.len(), 4);
    for (id, bytes) in &left {
        assert!(before[id] == *bytes, "snapshot {id} changed");
    }

    // Forgetting b's first snapshot: gc gives back what only it used.
    f.ok(&["forget", &b1[..8]]);
    let dry: serde_json::Value =
        serde_json::from_str(&f.ok(&["gc", "--dry-run", "--json"])).unwrap();
    let packs_before = pack_bytes(&f.repo());
    let report: serde_json::Value = serde_json::from_str(&f.ok(&["gc", "--json"])).unwrap();
    let shrunk = packs_before - pack_bytes(&f.repo());
    eprintln!(
        "b1 added {b1_bytes} pack bytes; gc reclaimed {shrunk} ({:.1} %); dry run estimated {}",
        100.0 * shrunk as f64 / b1_bytes as f64,
        dry["reclaimed_bytes"]
    );
    assert!(
        shrunk as f64 >= 0.9 * b1_bytes as f64,
        "gc reclaimed {shrunk} of the {b1_bytes} bytes only the forgotten snapshot used: {report}"
    );
    assert_eq!(report["reclaimed_bytes"].as_u64(), Some(shrunk), "{report}");
    f.ok(&["check", "--read-data"]);
    let left = restore_all(&f);
    assert_eq!(left.len(), 3);
    for (id, bytes) in &left {
        assert!(before[id] == *bytes, "snapshot {id} changed");
    }
    // Nothing left to reclaim.
    let again: serde_json::Value = serde_json::from_str(&f.ok(&["gc", "--json"])).unwrap();
    assert_eq!(again["packs_deleted"].as_u64(), Some(0), "{again}");
}

#[test]
fn forget_dry_run_explains_itself_and_protected_or_labelled_snapshots_stay() {
    let f = Fixture::with_repo();
    let db = f.path("a.db");
    make_db(&db, 2_000, "wal");
    let mut snaps = Vec::new();
    for round in 0..4 {
        update_rows(&db, 50, round);
        let mut args = vec!["backup", "sqlite", "--json", "a.db"];
        if round == 1 {
            args.extend(["--label", "before-migration"]);
        }
        let v: serde_json::Value = serde_json::from_str(&f.ok(&args)).unwrap();
        snaps.push(v["id"].as_str().unwrap().to_string());
    }
    f.ok(&["protect", &snaps[0][..8]]);
    let listing = f.ok(&["snapshots"]);
    assert!(listing.contains("[protected]"), "{listing}");

    // No policy is not "forget everything".
    let err = f.fails(&["forget"], 2);
    assert!(err.contains("give a policy"), "{err}");
    let err = f.fails(&["forget", "--keep-within", "soon"], 2);
    assert!(err.contains("malformed duration"), "{err}");

    let state = f.repo_state();
    let plan: serde_json::Value = serde_json::from_str(&f.ok(&[
        "forget",
        "--keep-last",
        "1",
        "--keep-label",
        "before-migration",
        "--dry-run",
        "--json",
    ]))
    .unwrap();
    assert!(f.repo_state() == state, "a dry run changed the repository");
    let kept: HashMap<String, Vec<String>> = plan[0]["keep"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| {
            (
                k["id"].as_str().unwrap().to_string(),
                k["reasons"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|r| r.as_str().unwrap().to_string())
                    .collect(),
            )
        })
        .collect();
    assert_eq!(kept[&snaps[0]], ["protected"]);
    assert_eq!(kept[&snaps[1]], ["label"]);
    assert_eq!(kept[&snaps[3]], ["newest", "last"]);
    let forgotten: Vec<&str> = plan[0]["forget"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["id"].as_str().unwrap())
        .collect();
    assert_eq!(forgotten, [snaps[2].as_str()]);
    let text = f.ok(&["forget", "--keep-last", "1", "--dry-run"]);
    assert!(text.contains("would forget 2"), "{text}");
    assert!(text.contains("(protected)"), "{text}");

    // A protected snapshot is not forgotten by id either, until unprotected.
    let err = f.fails(&["forget", &snaps[0][..8]], 2);
    assert!(err.contains("is protected"), "{err}");
    assert!(f.repo_state() == state);
    f.ok(&["unprotect", &snaps[0][..8]]);
    // Even --keep-last 0 style policies keep the newest.
    f.ok(&["forget", "--keep-daily", "1"]);
    assert_eq!(ids(&f), [snaps[3].clone()]);
    f.ok(&["gc"]);
    f.ok(&["check", "--read-data"]);
    let out = f.path("latest.db");
    f.ok(&["restore", "latest", "--to", out.to_str().unwrap()]);
    assert!(integrity_ok(&out));
}

#[test]
fn gc_killed_at_any_point_leaves_every_snapshot_restorable() {
    let f = Fixture::with_repo();
    f.use_small_packs();
    let db = f.path("a.db");
    make_db(&db, 40_000, "wal");
    let mut expected: HashMap<String, Vec<u8>> = HashMap::new();
    // A new snapshot, and the bytes it restores to right after it is made.
    let backup = |round: u64, expected: &mut HashMap<String, Vec<u8>>| {
        update_rows(&db, 4_000, round);
        let id = f.backup(&[&db]);
        let bytes = f.restored_bytes(&id);
        expected.insert(id, bytes);
    };
    for round in 0..3 {
        backup(round, &mut expected);
    }
    // How long one gc takes here, to spread the kills over it.
    backup(100, &mut expected);
    f.ok(&["forget", "--keep-last", "3"]);
    let started = Instant::now();
    f.ok(&["gc", "--repack-threshold", "1"]);
    let full = started.elapsed();
    let rounds = 24u32;
    let mut killed_running = 0;
    let mut reencoding = 0;
    for round in 0..rounds {
        backup(u64::from(round) + 1, &mut expected);
        f.ok(&["forget", "--keep-last", "3"]);
        // The oldest kept snapshot's deltas are against a forgotten one's
        // pages: this gc stores them whole while it is killed.
        let dry: serde_json::Value =
            serde_json::from_str(&f.ok(&["gc", "--dry-run", "--json"])).unwrap();
        if dry["chunks_reencoded"].as_u64().unwrap() > 0 {
            reencoding += 1;
        }
        let mut child = Command::new(BIN)
            .arg("--repo")
            .arg(f.repo())
            .args(["gc", "--repack-threshold", "1"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(full.mul_f64(f64::from(round) / f64::from(rounds)));
        if child.try_wait().unwrap().is_none() {
            killed_running += 1;
        }
        let _ = child.kill(); // SIGKILL
        child.wait().unwrap();
        // Consistent (orphan packs are harmless), and every listed snapshot
        // restores to the bytes it restored to when it was made.
        f.ok(&["check"]);
        for id in ids(&f) {
            assert!(
                f.restored_bytes(&id) == expected[&id],
                "round {round}: snapshot {id} changed"
            );
        }
    }
    eprintln!(
        "{killed_running} of {rounds} gc runs killed while running (a full gc: {full:?}), \
         {reencoding} of them re-encoding deltas"
    );
    assert_eq!(
        reencoding, rounds,
        "every killed gc had deltas to store whole"
    );
    assert!(
        killed_running >= rounds / 2,
        "only {killed_running} gc runs were still running when killed (a full one took {full:?})"
    );
    // A gc that finishes removes what the killed ones left behind.
    let report: serde_json::Value = serde_json::from_str(&f.ok(&["gc", "--json"])).unwrap();
    let stats: serde_json::Value = serde_json::from_str(&f.ok(&["stats", "--json"])).unwrap();
    assert_eq!(stats["chunks"], report["live_chunks"], "{report}");
    let check: serde_json::Value =
        serde_json::from_str(&f.ok(&["check", "--read-data", "--json"])).unwrap();
    assert_eq!(check["orphan_packs"].as_u64(), Some(0), "{check}");
    assert_eq!(check["problems"].as_array().unwrap().len(), 0, "{check}");
}

#[test]
fn gc_runs_beside_backups_and_wal_pushes_and_keeps_the_wal_retained_backups_need() {
    let f = PgFixture::new();
    let mut c = f.cluster("primary");
    c.start();
    c.sql(
        "CREATE TABLE t (id bigserial PRIMARY KEY, v text); \
         INSERT INTO t (v) SELECT md5(i::text) FROM generate_series(1, 20000) i",
    );
    let db = f.path("app.db");
    make_db(&db, 20_000, "wal");
    let writer = Writer::start(&db);
    let data = c.data.to_str().unwrap().to_string();
    let conn = c.conninfo();
    let stop = std::sync::atomic::AtomicBool::new(false);
    let rounds = 20;
    let (gc_runs, switches) = std::thread::scope(|s| {
        let switching = s.spawn(|| {
            let mut n = 0u64;
            // Capped: a failing push would keep every segment in pg_wal.
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && n < 400 {
                c.sql("INSERT INTO t (v) SELECT 'during' FROM generate_series(1, 500)");
                c.sql("SELECT pg_switch_wal()");
                n += 1;
                std::thread::sleep(Duration::from_millis(50));
            }
            n
        });
        let collecting = s.spawn(|| {
            let mut n = 0;
            while n < rounds || !stop.load(std::sync::atomic::Ordering::Relaxed) {
                f.ok(&["forget", "--keep-last", "3"]);
                f.ok(&["gc", "--repack-threshold", "1"]);
                n += 1;
            }
            n
        });
        for _ in 0..rounds {
            f.ok(&["backup", "sqlite", db.to_str().unwrap()]);
            f.ok(&["backup", "postgres", "--pgdata", &data, "--conn", &conn]);
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        (collecting.join().unwrap(), switching.join().unwrap())
    });
    writer.stop();
    eprintln!("{gc_runs} gc runs beside {rounds} rounds of backups and {switches} WAL switches");
    assert!(gc_runs >= rounds);
    assert_eq!(
        c.sql("SELECT failed_count FROM pg_stat_archiver"),
        "0",
        "every push succeeded"
    );
    f.ok(&["forget", "--keep-last", "3"]);
    let report: serde_json::Value = serde_json::from_str(&f.ok(&["gc", "--json"])).unwrap();
    let rows = c.sql("SELECT count(*) FROM t");
    let last = c.switch_and_wait(&f.repo());
    f.ok(&["check", "--read-data"]);

    let snaps: Vec<serde_json::Value> =
        serde_json::from_str(&f.ok(&["snapshots", "--json"])).unwrap();
    let base_backups: Vec<&serde_json::Value> =
        snaps.iter().filter(|s| s["source"] == "postgres").collect();
    assert_eq!(base_backups.len(), 3);
    assert_eq!(snaps.len(), 6);
    // The archive starts at the oldest retained base backup's first segment.
    let oldest = base_backups[0];
    let start_wal = oldest["postgres"]["start_wal"].as_str().unwrap();
    let sysid = oldest["postgres"]["system_identifier"].as_str().unwrap();
    let mut segments: Vec<String> = std::fs::read_dir(f.repo().join("wal").join(sysid))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.len() == 24)
        .collect();
    segments.sort();
    // (It began at segment 1: the gc runs above removed what came before.)
    assert_eq!(segments[0], start_wal, "{report}");
    assert_ne!(start_wal, "000000010000000000000001");
    for s in &base_backups {
        assert!(!s["pitr_window"].is_null(), "{s}");
    }

    // Every retained SQLite snapshot restores and verifies.
    for s in snaps.iter().filter(|s| s["source"] == "sqlite") {
        let to = f.path(&format!("r-{}.db", s["short_id"].as_str().unwrap()));
        f.ok(&[
            "restore",
            s["id"].as_str().unwrap(),
            "--to",
            to.to_str().unwrap(),
        ]);
    }
    // The oldest retained base backup replays all the WAL kept after it.
    let to = c.root.join("from-oldest");
    f.ok(&[
        "restore",
        oldest["id"].as_str().unwrap(),
        "--to",
        to.to_str().unwrap(),
        "--rewindb-path",
        f.bin().to_str().unwrap(),
    ]);
    c.stop();
    let mut r = Cluster::restored(&c.root, &to);
    r.start();
    wait_until_promoted(&r);
    assert_eq!(r.sql("SELECT count(*) FROM t"), rows, "rows up to {last}");
}

/// The retention property for SQLite: after six backups of a database with
/// heavy churn, keeping only the newest and running gc leaves about what a
/// fresh repository holding that one snapshot needs, not the chain of old
/// page versions its deltas were made against. Every step restores exactly.
#[test]
fn after_forget_and_gc_a_repository_is_about_the_size_of_a_fresh_one() {
    let f = Fixture::with_repo();
    let db = f.path("app.db");
    make_db(&db, 30_000, "delete");
    f.backup(&[&db]);
    for round in 0..5 {
        update_rows(&db, 4_000, round);
        f.backup(&[&db]);
    }
    let newest = ids(&f).pop().unwrap();
    let bytes = std::fs::read(&db).unwrap();
    f.ok(&["forget", "--keep-last", "1"]);
    let report: serde_json::Value = serde_json::from_str(&f.ok(&["gc", "--json"])).unwrap();
    assert!(report["chunks_reencoded"].as_u64().unwrap() > 0, "{report}");
    f.ok(&["check", "--read-data"]);
    assert_eq!(f.restored_bytes(&newest), bytes);

    let fresh = Fixture::with_repo();
    fresh.backup(&[&db]);
    eprintln!("{report}");
    assert_about_fresh("sqlite", pack_bytes(&f.repo()), pack_bytes(&fresh.repo()));
    // A backup after the gc still deduplicates against what it kept.
    update_rows(&db, 100, 99);
    let next = f.backup(&[&db]);
    assert_eq!(f.restored_bytes(&next), std::fs::read(&db).unwrap());
    f.ok(&["check", "--read-data"]);
}

/// The retention property for command streams: six versions of a dump,
/// each stored as deltas against the one before; keeping the newest and
/// running gc leaves about what a fresh repository holding it needs.
#[test]
fn after_forget_and_gc_a_stream_repository_is_about_the_size_of_a_fresh_one() {
    let f = Fixture::with_repo();
    let dump = f.path("dump.sql");
    let version = |v: u64| -> String {
        (0..40_000u64)
            .map(|i| {
                let x = if i % 5 == v % 5 { i * 7 + v } else { i * 7 };
                format!("INSERT INTO t VALUES ({i}, 'row {x} of the table');\n")
            })
            .collect()
    };
    let args = [
        "backup", "command", "--name", "dump", "--", "cat", "dump.sql",
    ];
    for v in 0..6 {
        std::fs::write(&dump, version(v)).unwrap();
        f.ok(&args);
    }
    let newest = std::fs::read_to_string(&dump).unwrap();
    f.ok(&["forget", "--keep-last", "1"]);
    let report: serde_json::Value = serde_json::from_str(&f.ok(&["gc", "--json"])).unwrap();
    assert!(report["chunks_reencoded"].as_u64().unwrap() > 0, "{report}");
    f.ok(&["check", "--read-data"]);
    assert_eq!(f.ok(&["restore", "latest", "--stdout"]), newest);

    let fresh = Fixture::with_repo();
    std::fs::write(fresh.path("dump.sql"), &newest).unwrap();
    fresh.ok(&args);
    assert_about_fresh("stream", pack_bytes(&f.repo()), pack_bytes(&fresh.repo()));
}

/// The retention property for PostgreSQL base backups: four base backups
/// with updates between them (each stored as deltas against the one
/// before); keeping the newest and running gc leaves about what a fresh
/// repository holding one base backup of the same cluster needs.
#[test]
fn after_forget_and_gc_base_backups_take_about_what_a_fresh_repository_does() {
    let f = PgFixture::new();
    let mut c = f.cluster("primary");
    c.start();
    crate::postgres::make_table(&c, 60_000);
    base_backup(&f, &c);
    for round in 0..3 {
        c.sql(&format!(
            "UPDATE t SET v = md5(v || '{round}') WHERE id % 4 = {round}; CHECKPOINT"
        ));
        base_backup(&f, &c);
    }
    let rows = c.sql("SELECT count(*), sum(length(v)) FROM t");
    f.ok(&["forget", "--keep-last", "1"]);
    let report: serde_json::Value = serde_json::from_str(&f.ok(&["gc", "--json"])).unwrap();
    assert!(report["chunks_reencoded"].as_u64().unwrap() > 0, "{report}");
    f.ok(&["check", "--read-data"]);

    // A fresh repository holding that one base backup: `copy` stores each
    // of its chunks whole, as a first base backup would.
    let fresh = f.path("fresh");
    let init = Command::new(f.bin())
        .args(["--repo", fresh.to_str().unwrap(), "init", "--no-encryption"])
        .output()
        .unwrap();
    succeeded(&["init"], init);
    f.ok(&["copy", "--to", fresh.to_str().unwrap(), "latest"]);
    eprintln!("{report}");
    assert_about_fresh("postgres", pack_bytes(&f.repo()), pack_bytes(&fresh));
    // The one kept base backup still recovers.
    let to = c.root.join("restored");
    c.stop();
    let bin = f.bin();
    f.ok(&[
        "restore",
        "latest",
        "--immediate",
        "--to",
        to.to_str().unwrap(),
        "--rewindb-path",
        bin.to_str().unwrap(),
    ]);
    let mut r = Cluster::restored(&c.root, &to);
    r.start();
    wait_until_promoted(&r);
    assert_eq!(r.sql("SELECT count(*), sum(length(v)) FROM t"), rows);
}
