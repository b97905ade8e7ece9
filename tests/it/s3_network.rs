//! A bad network between rewindb and the bucket ([`FaultProxy`]), and the
//! server stopped in the middle of a backup: requests are retried within a
//! bounded time; a run that is cut off leaves no snapshot and no partial
//! restored file, and the next run succeeds.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::fault_proxy::FaultProxy;
use crate::helpers::succeeded;
use crate::s3::{Bucket, server, start};

/// A database of `rows` rows of 1 KiB that do not compress (so that its
/// backup uploads about as many bytes).
fn random_db(path: &Path, rows: u64) {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.execute_batch(&format!(
        "CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {rows})
         INSERT INTO t SELECT i, randomblob(1024) FROM n;"
    ))
    .unwrap();
}

fn snapshot_ids(b: &Bucket, cache: &str) -> Vec<String> {
    let list: Vec<serde_json::Value> =
        serde_json::from_str(&b.ok(cache, &["snapshots", "--json"])).unwrap();
    list.iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect()
}

/// After a cut-off run: only the snapshot `kept` is there, and the next
/// backup of `big.db` succeeds, checks clean and restores exactly.
fn only_kept_then_the_next_backup_succeeds(b: &Bucket, kept: &serde_json::Value) {
    assert_eq!(snapshot_ids(b, "c"), [kept["id"].as_str().unwrap()]);
    let snap = b.backup("c", &b.path("big.db"));
    assert_eq!(snapshot_ids(b, "c").len(), 2);
    b.ok("c", &["check", "--read-data"]);
    assert_eq!(
        b.restored("c", snap["id"].as_str().unwrap()),
        std::fs::read(b.path("big.db")).unwrap()
    );
}

/// Waits (a minute at most) until `what` has uploaded as far as the proxy
/// was told to hold it.
fn wait_until_held(proxy: &FaultProxy, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !proxy.holding() {
        assert!(Instant::now() < deadline, "{what} never reached the hold");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_flaky_network_is_retried_and_changes_nothing() {
    let proxy = FaultProxy::new(server().s3);
    let b = Bucket::on(proxy.port, "flaky");
    b.ok("c", &["init"]);
    proxy.set_flaky(true);
    let db = b.path("app.db");
    random_db(&db, 6_000);
    let snap = b.backup("c", &db);
    let id = snap["id"].as_str().unwrap();
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute_batch("UPDATE t SET v = randomblob(1024) WHERE id % 30 = 0")
        .unwrap();
    b.backup("c", &db);
    // More runs, each a new process with new connections, until enough
    // faults have been met (a bounded number of tries).
    for round in 0..8 {
        if proxy.faults() >= 6 {
            break;
        }
        rusqlite::Connection::open(&db)
            .unwrap()
            .execute_batch(&format!(
                "UPDATE t SET v = randomblob(1024) WHERE id % 50 = {round}"
            ))
            .unwrap();
        b.backup("c", &db);
    }
    // A new machine (an empty cache) rebuilds its index over the same link.
    assert_eq!(b.restored("new", id), b.restored("c", id));
    b.ok("c", &["check", "--read-data"]);
    assert!(
        proxy.faults() >= 6,
        "only {} faults were injected: the test proves nothing",
        proxy.faults()
    );
    proxy.set_flaky(false);
    let first = b.restored("c", id);
    assert_eq!(
        blake3::hash(&first).to_hex().as_str(),
        snap["files"][0]["blake3"].as_str().unwrap()
    );
}

#[test]
fn a_backup_cut_off_by_the_network_leaves_no_snapshot_and_the_next_run_succeeds() {
    let proxy = FaultProxy::new(server().s3);
    let b = Bucket::on(proxy.port, "cut-backup");
    b.ok("c", &["init"]);
    let db = b.path("app.db");
    random_db(&db, 2_000);
    let kept = b.backup("c", &db);
    random_db(&b.path("big.db"), 12_000);
    // The link dies 4 MiB into the upload of the new backup's pack.
    proxy.down_after_upload(4 << 20);
    let started = Instant::now();
    let out = b
        .command(
            "c",
            &["backup", "sqlite", b.path("big.db").to_str().unwrap()],
        )
        .env("REWINDB_S3_RETRY_SECS", "3")
        .output()
        .unwrap();
    assert!(proxy.is_down());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the backup succeeded: {err}");
    assert!(
        err.contains(&b.url),
        "the message names the repository: {err}"
    );
    // Retries are bounded (3 s here, plus each request's own attempts).
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "{:?}",
        started.elapsed()
    );
    proxy.set_down(false);
    only_kept_then_the_next_backup_succeeds(&b, &kept);
}

#[test]
fn a_restore_cut_off_leaves_no_partial_file() {
    let proxy = FaultProxy::new(server().s3);
    let b = Bucket::on(proxy.port, "cut-restore");
    b.ok("c", &["init"]);
    let db = b.path("app.db");
    random_db(&db, 8_000);
    let snap = b.backup("c", &db);
    let id = snap["id"].as_str().unwrap();
    let target_dir = b.path("restore");
    std::fs::create_dir(&target_dir).unwrap();
    let target = target_dir.join("app.db");
    proxy.down_after_download(2 << 20);
    let out = b
        .command("c", &["restore", id, "--to", target.to_str().unwrap()])
        .env("REWINDB_S3_RETRY_SECS", "3")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the restore succeeded: {err}");
    assert!(proxy.is_down());
    let left: Vec<_> = std::fs::read_dir(&target_dir).unwrap().collect();
    assert!(left.is_empty(), "left in the target directory: {left:?}");
    proxy.set_down(false);
    b.ok("c", &["restore", id, "--to", target.to_str().unwrap()]);
    assert_eq!(std::fs::read(&target).unwrap(), std::fs::read(&db).unwrap());
}

#[test]
fn the_server_killed_mid_backup_then_restarted_loses_nothing() {
    // A server of this test's own: the others keep theirs.
    let own = start();
    let proxy = FaultProxy::new(own.s3);
    let b = Bucket::on(proxy.port, "killed-server");
    b.ok("c", &["init"]);
    let db = b.path("app.db");
    random_db(&db, 2_000);
    let kept = b.backup("c", &db);
    random_db(&b.path("big.db"), 12_000);
    // The upload hangs 4 MiB in; the server is killed while it hangs.
    proxy.hold_after_upload(4 << 20);
    let backup = b
        .command(
            "c",
            &["backup", "sqlite", b.path("big.db").to_str().unwrap()],
        )
        .env("REWINDB_S3_RETRY_SECS", "3")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_until_held(&proxy, "the backup");
    own.kill();
    proxy.set_hold(false);
    let out = backup.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the backup succeeded: {err}");
    assert!(
        err.contains(&b.url),
        "the message names the repository: {err}"
    );
    // The same data and ports again (the proxy reaches it as before):
    // what was saved before is all there.
    let _own = own.restart();
    only_kept_then_the_next_backup_succeeds(&b, &kept);
}

#[test]
fn a_copy_killed_midway_is_completed_by_the_next_run_and_buckets_copy_to_buckets() {
    let proxy = FaultProxy::new(server().s3);
    let b = Bucket::on(proxy.port, "copy-killed");
    let local = b.path("local");
    let local_cmd = |args: &[&str]| b.command_on(local.to_str().unwrap(), "lc", args);
    succeeded(&["init"], local_cmd(&["init"]).output().unwrap());
    let db = b.path("app.db");
    random_db(&db, 12_000);
    let args = ["backup", "sqlite", db.to_str().unwrap()];
    succeeded(&args, local_cmd(&args).output().unwrap());
    let protect_me = {
        let out = local_cmd(&["snapshots", "--json"]).output().unwrap();
        let list: serde_json::Value = serde_json::from_str(&succeeded(&[], out)).unwrap();
        list[0]["id"].as_str().unwrap().to_string()
    };
    succeeded(&[], local_cmd(&["protect", &protect_me]).output().unwrap());
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute_batch("UPDATE t SET v = randomblob(1024) WHERE id % 3 = 0")
        .unwrap();
    succeeded(&args, local_cmd(&args).output().unwrap());
    b.ok("c", &["init"]);
    // The copy is killed (SIGKILL) while its upload hangs 4 MiB in.
    proxy.hold_after_upload(4 << 20);
    let mut copy = local_cmd(&["copy", "--to", &b.url])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_until_held(&proxy, "the copy");
    copy.kill().unwrap();
    copy.wait().unwrap();
    proxy.set_hold(false);
    assert!(
        snapshot_ids(&b, "c").is_empty(),
        "a snapshot of a cut-off copy"
    );
    // The next run completes it: every snapshot, its protection, exact.
    let out = local_cmd(&["copy", "--to", &b.url, "--json"])
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_str(&succeeded(&["copy"], out)).unwrap();
    assert_eq!(report["copied"].as_array().unwrap().len(), 2, "{report}");
    let there: Vec<serde_json::Value> =
        serde_json::from_str(&b.ok("c", &["snapshots", "--json"])).unwrap();
    assert_eq!(there.len(), 2);
    assert!(there[0]["protected"].as_bool().unwrap(), "{there:?}");
    b.ok("c", &["check", "--read-data"]);
    let newest = there[1]["id"].as_str().unwrap();
    assert_eq!(b.restored("c", newest), std::fs::read(&db).unwrap());
    // Bucket to bucket: another prefix, through no local repository.
    let other = format!("{}-offsite", b.url);
    let on_other =
        |args: &[&str]| succeeded(args, b.command_on(&other, "oc", args).output().unwrap());
    on_other(&["init"]);
    b.ok("c", &["copy", "--to", &other]);
    let copied: Vec<serde_json::Value> =
        serde_json::from_str(&on_other(&["snapshots", "--json"])).unwrap();
    let ids = |v: &[serde_json::Value]| -> Vec<String> {
        v.iter()
            .map(|s| s["id"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(ids(&copied), ids(&there));
    on_other(&["check", "--read-data"]);
    let to = b.path("from-other.db");
    on_other(&["restore", newest, "--to", to.to_str().unwrap()]);
    assert_eq!(std::fs::read(&to).unwrap(), std::fs::read(&db).unwrap());
}

#[test]
fn a_restore_downloads_each_pack_about_once() {
    // The restore's two reader threads share what is fetched, read ahead of
    // each other, and a frame across two fetched ranges is not fetched again.
    let proxy = FaultProxy::new(server().s3);
    let b = Bucket::on(proxy.port, "download-once");
    b.ok("c", &["init"]);
    let db = b.path("app.db");
    random_db(&db, 24_000);
    let snap = b.backup("c", &db);
    let stored = snap["stats"]["bytes_added"].as_u64().unwrap();
    let before = proxy.downloaded();
    let to = b.path("restored.db");
    b.ok(
        "c",
        &[
            "restore",
            snap["id"].as_str().unwrap(),
            "--to",
            to.to_str().unwrap(),
        ],
    );
    let downloaded = proxy.downloaded() - before;
    assert_eq!(std::fs::read(&to).unwrap(), std::fs::read(&db).unwrap());
    assert!(
        downloaded < stored + stored / 4,
        "the restore downloaded {downloaded} bytes for {stored} stored"
    );
}
