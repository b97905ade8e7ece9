//! Restores never follow the wrong history: a restore drill that archives
//! into production's repository, on real PostgreSQL 15 clusters.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::pg::{Cluster, PgFixture, chown_postgres};
use crate::postgres::wait_until_promoted;

/// A directory `postgres` owns, for a restored cluster's socket and data.
fn cluster_root(f: &PgFixture, name: &str) -> PathBuf {
    let root = f.path(name);
    std::fs::create_dir(&root).unwrap();
    chown_postgres(&root);
    root
}

fn wal_files(repo: &Path) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(repo.join("wal"))
        .unwrap()
        .flatten()
        .flat_map(|d| std::fs::read_dir(d.path()).unwrap().flatten())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    out.sort();
    out
}

/// The scenario: production archives on timeline 1; a drill
/// restored with the default archive mode promotes to timeline 2 and
/// archives into the same repository while production goes on. A restore
/// to a time after the fork then refuses and names both timelines;
/// `--timeline 1` restores production's rows; `snapshots` and `status`
/// show both timelines; a drill restored with `--archive-mode off`
/// archives nothing.
#[test]
fn a_restore_drill_archiving_into_production_never_becomes_the_history_restored() {
    let f = PgFixture::new();
    let mut prod = f.cluster("prod");
    prod.start();
    prod.sql(
        "CREATE TABLE t (id bigserial PRIMARY KEY, v text); \
         INSERT INTO t (v) SELECT md5(i::text) FROM generate_series(1, 2000) i",
    );
    f.ok(&[
        "backup",
        "postgres",
        "--pgdata",
        prod.data.to_str().unwrap(),
        "--conn",
        &prod.conninfo(),
    ]);
    prod.sql("INSERT INTO t (v) SELECT 'one' FROM generate_series(1, 300)");
    std::thread::sleep(Duration::from_millis(100));
    let t1 = prod.sql("SELECT clock_timestamp()");
    std::thread::sleep(Duration::from_millis(100));
    prod.sql("INSERT INTO t (v) SELECT 'two' FROM generate_series(1, 400)");
    prod.switch_and_wait(&f.repo());

    // The drill, as an operator would first run it: archiving preserved,
    // which restore says.
    let drill_root = cluster_root(&f, "drill");
    let drill_data = drill_root.join("data");
    let bin = f.bin();
    let out = f.ok(&[
        "restore",
        "--at",
        &t1,
        "--to",
        drill_data.to_str().unwrap(),
        "--rewindb-path",
        bin.to_str().unwrap(),
    ]);
    assert!(out.contains("archiving: ON"), "{out}");
    assert!(out.contains("--archive-mode off"), "{out}");
    let mut drill = Cluster::restored(&drill_root, &drill_data);
    drill.start();
    wait_until_promoted(&drill);
    drill.sql("INSERT INTO t (v) SELECT 'drill' FROM generate_series(1, 50)");
    let drill_switched = drill.switch_and_wait(&f.repo());
    assert!(drill_switched.starts_with("00000002"), "{drill_switched}");

    // Production goes on after the drill promoted.
    prod.sql("INSERT INTO t (v) SELECT 'three' FROM generate_series(1, 500)");
    std::thread::sleep(Duration::from_millis(100));
    let t2 = prod.sql("SELECT clock_timestamp()");
    let prod_at_t2 = prod.sql("SELECT count(*) FROM t");
    std::thread::sleep(Duration::from_millis(100));
    prod.sql("INSERT INTO t (v) SELECT 'four' FROM generate_series(1, 600)");
    prod.switch_and_wait(&f.repo());
    drill.sql("INSERT INTO t (v) SELECT 'drill again' FROM generate_series(1, 70)");
    drill.switch_and_wait(&f.repo());
    drill.stop();
    prod.stop(); // nothing more is archived from here on

    // A time after the fork lies on both histories: refused, both named,
    // nothing written.
    let x = f.path("x");
    let err = f.fails(&["restore", "--at", &t2, "--to", x.to_str().unwrap()], 2);
    assert!(err.contains("lies on 2 timelines"), "{err}");
    assert!(err.contains("--timeline 1"), "{err}");
    assert!(err.contains("--timeline 2"), "{err}");
    assert!(err.contains("forked from timeline 1 at"), "{err}");
    assert!(!x.exists());
    // So is "latest" (no target).
    let err = f.fails(&["restore", "latest", "--to", x.to_str().unwrap()], 2);
    assert!(err.contains("--timeline 2"), "{err}");
    // A time before the drill promoted is production's alone.
    let dry = f.ok(&[
        "restore",
        "--at",
        &t1,
        "--to",
        x.to_str().unwrap(),
        "--dry-run",
    ]);
    assert!(dry.contains("on timeline 1"), "{dry}");
    assert!(!x.exists());

    // Both histories are visible at a glance.
    let listing = f.ok(&["snapshots"]);
    assert!(listing.contains("on timeline 1:"), "{listing}");
    assert!(listing.contains("on timeline 2:"), "{listing}");
    assert!(listing.contains("two histories"), "{listing}");
    let status = f.ok(&["status"]);
    assert!(status.contains("timelines of cluster"), "{status}");
    assert!(status.contains("forked from timeline 1"), "{status}");
    let check = f.ok(&["check"]);
    assert!(check.contains("forked from timeline 1"), "{check}");

    // --timeline 1 restores production's rows at T2, and with
    // --archive-mode off the restored server archives nothing.
    let verify_root = cluster_root(&f, "verify");
    let verify_data = verify_root.join("data");
    let plan = f.ok(&[
        "restore",
        "--at",
        &t2,
        "--timeline",
        "1",
        "--archive-mode",
        "off",
        "--to",
        verify_data.to_str().unwrap(),
        "--dry-run",
        "--json",
    ]);
    let plan: serde_json::Value = serde_json::from_str(&plan).unwrap();
    assert_eq!(plan["wal"]["timeline"], 1, "{plan}");
    assert_eq!(plan["wal"]["missing"], serde_json::Value::Null, "{plan}");
    assert!(!verify_data.exists(), "a dry run writes nothing");
    let out = f.ok(&[
        "restore",
        "--at",
        &t2,
        "--timeline",
        "1",
        "--archive-mode",
        "off",
        "--to",
        verify_data.to_str().unwrap(),
        "--rewindb-path",
        bin.to_str().unwrap(),
    ]);
    assert!(out.contains("archiving: off"), "{out}");
    let before = wal_files(&f.repo());
    let mut verify = Cluster::restored(&verify_root, &verify_data);
    verify.start();
    wait_until_promoted(&verify);
    assert_eq!(
        verify.sql("SELECT count(*) FROM t"),
        prod_at_t2,
        "production's rows at T2"
    );
    assert_eq!(verify.sql("SHOW archive_mode"), "off");
    verify.sql("INSERT INTO t (v) SELECT 'verify' FROM generate_series(1, 10)");
    verify.sql("SELECT pg_switch_wal()");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(wal_files(&f.repo()), before, "the drill archived nothing");
    verify.stop();

    // --timeline 2 is the drill's history: its rows, as asked.
    let d2_root = cluster_root(&f, "drill-again");
    let d2_data = d2_root.join("data");
    f.ok(&[
        "restore",
        "latest",
        "--timeline",
        "2",
        "--archive-mode",
        "off",
        "--to",
        d2_data.to_str().unwrap(),
        "--rewindb-path",
        bin.to_str().unwrap(),
    ]);
    let mut d2 = Cluster::restored(&d2_root, &d2_data);
    d2.start();
    wait_until_promoted(&d2);
    assert_eq!(
        d2.sql("SELECT count(*) FROM t WHERE v LIKE 'drill%'"),
        "120",
        "the drill's rows"
    );
}
