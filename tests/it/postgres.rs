//! PostgreSQL: base backups, WAL archiving and point-in-time restore, on real
//! PostgreSQL 15 clusters (see `pg.rs`).

use std::path::Path;
use std::time::{Duration, Instant};

use crate::pg::{Cluster, PgFixture, wait_for_wal};

/// A table of `rows` rows of about 100 bytes.
pub fn make_table(c: &Cluster, rows: u64) {
    c.sql(&format!(
        "CREATE TABLE t (id bigserial PRIMARY KEY, v text); \
         INSERT INTO t (v) SELECT repeat(md5(i::text), 3) FROM generate_series(1, {rows}) i"
    ));
}

/// A base backup of `c` into `f`'s repository; returns its report.
pub fn base_backup(f: &PgFixture, c: &Cluster) -> String {
    f.ok(&[
        "backup",
        "postgres",
        "--pgdata",
        c.data.to_str().unwrap(),
        "--conn",
        &c.conninfo(),
    ])
}

fn restore(f: &PgFixture, to: &Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec!["restore", "--to", to.to_str().unwrap()];
    args.extend_from_slice(extra);
    f.run(&args)
}

/// Restores into `to` with `extra` (this binary as restore_command), starts
/// the restored cluster and waits until recovery has promoted it.
fn restore_and_recover(f: &PgFixture, root: &Path, to: &Path, extra: &[&str]) -> Cluster {
    let bin = f.bin();
    let mut args = extra.to_vec();
    args.extend(["--rewindb-path", bin.to_str().unwrap()]);
    let out = restore(f, to, &args);
    assert!(
        out.status.success(),
        "restore {extra:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut r = Cluster::restored(root, to);
    r.start();
    wait_until_promoted(&r);
    r
}

#[test]
fn pitr_restores_exactly_the_rows_committed_at_time_t() {
    let f = PgFixture::new();
    let mut c = f.cluster("primary");
    c.start();
    make_table(&c, 20_000);
    let out = base_backup(&f, &c);
    assert!(out.contains("base backup"), "{out}");
    let at_backup = c.sql("SELECT count(*) FROM t");
    // Transactions after the backup; T falls between two of them.
    c.sql("INSERT INTO t (v) SELECT 'after backup' FROM generate_series(1, 1234)");
    std::thread::sleep(Duration::from_millis(100));
    let t = c.sql("SELECT clock_timestamp()");
    let at_t = c.sql("SELECT count(*) FROM t");
    std::thread::sleep(Duration::from_millis(100));
    c.sql("INSERT INTO t (v) SELECT 'after T' FROM generate_series(1, 999)");
    c.sql("DELETE FROM t WHERE id % 7 = 0");
    c.switch_and_wait(&f.repo());

    // The snapshot lists the base backup with its LSN range and the window.
    let listing = f.ok(&["snapshots"]);
    assert!(listing.contains("LSN 0/"), "{listing}");
    assert!(listing.contains("PITR window"), "{listing}");

    let to = c.root.join("at-t");
    let out = restore(
        &f,
        &to,
        &["--at", &t, "--rewindb-path", f.bin().to_str().unwrap()],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let settings = std::fs::read_to_string(to.join("postgresql.auto.conf")).unwrap();
    assert!(settings.contains("recovery_target_time"), "{settings}");
    assert!(to.join("recovery.signal").exists());
    let mut r = Cluster::restored(&c.root, &to);
    c.stop(); // same socket directory and port: one server at a time
    r.start();
    wait_until_promoted(&r);
    assert_eq!(r.sql("SELECT count(*) FROM t"), at_t, "rows at T");

    // The restored server promoted to timeline 2 and archives into the same
    // repository. A restore to a time on timeline 2 follows the history file
    // from the base backup (timeline 1) across the switch.
    assert_eq!(
        r.sql("SELECT timeline_id FROM pg_control_checkpoint()"),
        "2"
    );
    r.sql("INSERT INTO t (v) SELECT 'timeline 2' FROM generate_series(1, 321)");
    std::thread::sleep(Duration::from_millis(100));
    let t2 = r.sql("SELECT clock_timestamp()");
    let at_t2 = r.sql("SELECT count(*) FROM t");
    std::thread::sleep(Duration::from_millis(100));
    r.sql("INSERT INTO t (v) SELECT 'after T2' FROM generate_series(1, 55)");
    let switched = r.switch_and_wait(&f.repo());
    assert!(switched.starts_with("00000002"), "{switched}");
    r.stop();
    // Timeline 1 holds WAL past the fork (the rows after T), so the archive
    // holds two histories at T2: refused, both named, until one is chosen.
    let to = c.root.join("at-t2");
    let err = f.fails(&["restore", "--at", &t2, "--to", to.to_str().unwrap()], 2);
    assert!(
        err.contains("--timeline 1") && err.contains("--timeline 2"),
        "{err}"
    );
    let mut r2 = restore_and_recover(&f, &c.root, &to, &["--at", &t2, "--timeline", "2"]);
    assert_eq!(
        r2.sql("SELECT count(*) FROM t"),
        at_t2,
        "rows at T2 on timeline 2"
    );
    r2.stop();

    // To the end of the base backup only.
    let to = c.root.join("immediate");
    let r = restore_and_recover(&f, &c.root, &to, &["--immediate"]);
    assert_eq!(
        r.sql("SELECT count(*) FROM t"),
        at_backup,
        "rows at the backup"
    );
}

pub fn wait_until_promoted(c: &Cluster) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while c.sql("SELECT pg_is_in_recovery()") != "f" {
        assert!(
            Instant::now() < deadline,
            "the restored cluster did not finish recovery"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn wal_push_is_idempotent_refuses_conflicts_and_fetch_reports_missing_files() {
    let f = PgFixture::new();
    let mut c = f.cluster("primary");
    c.start();
    make_table(&c, 1000);
    let name = c.switch_and_wait(&f.repo());
    let sysid = c.system_identifier();
    let stored = f.repo().join("wal").join(&sysid).join(&name);
    let stored_bytes = std::fs::read(&stored).unwrap();

    // The segment as PostgreSQL pushed it, fetched back.
    let original = f.path(&name);
    f.ok(&[
        "wal",
        "fetch",
        &name,
        original.to_str().unwrap(),
        "--system-id",
        &sysid,
    ]);
    assert_eq!(std::fs::metadata(&original).unwrap().len(), 16 << 20);

    // Pushed again with the same content (PostgreSQL retrying): success.
    f.ok(&["wal", "push", original.to_str().unwrap()]);
    // Different content under the same name: refused, nothing overwritten.
    let mut changed = std::fs::read(&original).unwrap();
    changed[5 << 20] ^= 0xff;
    let dir = f.path("changed");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join(&name), &changed).unwrap();
    let err = f.fails(&["wal", "push", dir.join(&name).to_str().unwrap()], 1);
    assert!(
        err.contains(&name) && err.contains("different content"),
        "{err}"
    );
    assert_eq!(std::fs::read(&stored).unwrap(), stored_bytes);

    // A segment of another cluster, pushed from this cluster's data directory
    // (as a misconfigured archive_command would): refused by system identifier.
    let other = f.cluster("other");
    let out = f.run_in(&other.data, &["wal", "push", original.to_str().unwrap()]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("system identifier"));

    // A segment renamed to another segment's name: refused.
    let renamed = f.path("000000010000000000000063");
    std::fs::copy(&original, &renamed).unwrap();
    let err = f.fails(&["wal", "push", renamed.to_str().unwrap()], 2);
    assert!(err.contains("refusing to archive"), "{err}");

    // Fetch of a file that is not archived exits non-zero (PostgreSQL relies
    // on it), and writes nothing.
    let dest = f.path("fetched");
    let err = f.fails(
        &[
            "wal",
            "fetch",
            "0000000100000000000000FE",
            dest.to_str().unwrap(),
            "--system-id",
            &sysid,
        ],
        1,
    );
    assert!(err.contains("not archived"), "{err}");
    assert!(!dest.exists());
    // Names that are not WAL names are usage errors.
    f.fails(
        &["wal", "fetch", "../etc/passwd", dest.to_str().unwrap()],
        2,
    );
    f.fails(
        &["wal", "push", f.path("nothing-here").to_str().unwrap()],
        2,
    );

    // A damaged archive file is never fetched.
    let mut bytes = std::fs::read(&stored).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x55;
    std::fs::write(&stored, &bytes).unwrap();
    let err = f.fails(
        &[
            "wal",
            "fetch",
            &name,
            dest.to_str().unwrap(),
            "--system-id",
            &sysid,
        ],
        4,
    );
    assert!(err.contains(&name), "{err}");
    assert!(!dest.exists());
}

#[test]
fn a_gap_in_the_wal_is_named_before_anything_is_written() {
    let f = PgFixture::new();
    let mut c = f.cluster("primary");
    c.start();
    make_table(&c, 1000);
    base_backup(&f, &c);
    let mut names = Vec::new();
    for _ in 0..3 {
        c.sql("INSERT INTO t (v) SELECT 'x' FROM generate_series(1, 100)");
        names.push(c.switch_and_wait(&f.repo()));
    }
    let t = c.sql("SELECT clock_timestamp()");
    c.sql("INSERT INTO t (v) VALUES ('after')");
    names.push(c.switch_and_wait(&f.repo()));
    let sysid = c.system_identifier();
    let lost = &names[1];
    std::fs::remove_file(f.repo().join("wal").join(&sysid).join(lost)).unwrap();

    let to = c.root.join("restored");
    let out = restore(&f, &to, &["--at", &t]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(lost.as_str()) && err.contains("not in the repository"),
        "{err}"
    );
    assert!(!to.exists(), "nothing may be written");
    let leftovers: Vec<_> = std::fs::read_dir(&c.root)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains("rewindb-restore"))
        .collect();
    assert!(leftovers.is_empty());

    // A target that is not empty is refused too.
    std::fs::create_dir(&to).unwrap();
    std::fs::write(to.join("something"), b"x").unwrap();
    let out = restore(&f, &to, &["--immediate"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not empty"));
    // And the live data directory above all.
    let out = restore(&f, &c.data, &["--immediate"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("postmaster.pid"));
}

#[test]
fn wal_push_keeps_succeeding_while_a_base_backup_runs() {
    let f = PgFixture::new();
    let mut c = f.cluster("primary");
    c.start();
    // Large enough that the base backup takes a while.
    make_table(&c, 300_000);
    let before: u64 = c
        .sql("SELECT archived_count FROM pg_stat_archiver")
        .parse()
        .unwrap();
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (switches, backups) = std::thread::scope(|s| {
        let switching = s.spawn(|| {
            let mut n = 0u64;
            // Capped: a push that failed would keep every segment in pg_wal.
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && n < 400 {
                c.sql("INSERT INTO t (v) SELECT 'during' FROM generate_series(1, 200)");
                c.sql("SELECT pg_switch_wal()");
                n += 1;
            }
            n
        });
        let mut backups = 0;
        let started = Instant::now();
        while backups < 2 || started.elapsed() < Duration::from_secs(3) {
            base_backup(&f, &c);
            backups += 1;
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        (switching.join().unwrap(), backups)
    });
    let last = c.switch_and_wait(&f.repo());
    wait_for_wal(&f.repo(), &last);
    let failed = c.sql("SELECT failed_count FROM pg_stat_archiver");
    let after: u64 = c
        .sql("SELECT archived_count FROM pg_stat_archiver")
        .parse()
        .unwrap();
    assert_eq!(failed, "0", "every push succeeded");
    assert!(
        after - before >= switches,
        "{switches} switches during {backups} backups, {} segments archived",
        after - before
    );
    assert!(
        switches >= 5,
        "only {switches} pushes happened during the backups"
    );
}

#[test]
fn check_postgres_proves_archiving_or_names_the_problem() {
    let f = PgFixture::new();
    let mut c = f.cluster("primary");
    c.start();
    let conn = c.conninfo();
    let out = f.ok(&["check", "postgres", "--conn", &conn]);
    assert!(out.contains("arrived in the repository"), "{out}");
    // The version as people write it (15.18), not server_version_num.
    let version = c.sql("SHOW server_version");
    let major_minor: String = version.split_whitespace().next().unwrap().to_string();
    assert!(out.contains(&format!("server {major_minor},")), "{out}");

    // archive_command not calling rewindb.
    c.sql("ALTER SYSTEM SET archive_command = '/bin/true'");
    c.sql("SELECT pg_reload_conf()");
    std::thread::sleep(Duration::from_millis(300));
    let out = f.run(&["check", "postgres", "--conn", &conn]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("PROBLEM  archive_command") && text.contains("does not call"),
        "{text}"
    );

    // Archiving into another repository.
    let elsewhere = f.path("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    c.sql(&format!(
        "ALTER SYSTEM SET archive_command = '{} --repo {} wal push %p'",
        f.bin().display(),
        elsewhere.display()
    ));
    c.sql("SELECT pg_reload_conf()");
    std::thread::sleep(Duration::from_millis(300));
    let out = f.run(&["check", "postgres", "--conn", &conn]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("not into this repository"), "{text}");

    // The right command, but the server's user cannot write the archive.
    c.sql("ALTER SYSTEM RESET archive_command");
    c.sql("SELECT pg_reload_conf()");
    std::thread::sleep(Duration::from_millis(300));
    let wal = f.repo().join("wal");
    std::process::Command::new("chown")
        .args(["-R", "root:root"])
        .arg(&wal)
        .status()
        .unwrap();
    std::fs::set_permissions(&wal, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let out = f.run(&["check", "postgres", "--conn", &conn]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("PROBLEM  permissions") && text.contains("cannot write"),
        "{text}"
    );
}

#[test]
fn killed_or_racing_wal_pushes_never_leave_a_wrong_segment() {
    use std::process::{Command, Stdio};
    let f = PgFixture::new();
    let mut c = f.cluster("primary");
    c.start();
    make_table(&c, 5000);
    let name = c.switch_and_wait(&f.repo());
    let sysid = c.system_identifier();
    c.stop();
    // The segment, and a scratch repository to push it into again and again.
    let segment = f.path(&name);
    f.ok(&[
        "wal",
        "fetch",
        &name,
        segment.to_str().unwrap(),
        "--system-id",
        &sysid,
    ]);
    let original = std::fs::read(&segment).unwrap();
    let scratch = f.path("scratch");
    let in_scratch = |args: &[&str]| {
        let out = Command::new(f.bin())
            .arg("--repo")
            .arg(&scratch)
            .args(args)
            .output()
            .unwrap();
        crate::helpers::succeeded(args, out);
    };
    in_scratch(&["init"]);
    let archived = scratch.join("wal").join(&sysid).join(&name);
    let fetched = f.path("fetched");
    let mut killed_midway = 0;
    for round in 0..20u64 {
        let _ = std::fs::remove_file(&archived);
        let mut child = Command::new(f.bin())
            .args(["--repo", scratch.to_str().unwrap(), "wal", "push"])
            .arg(&segment)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Spread the kills over the push (about 30-60 ms in a debug build).
        std::thread::sleep(Duration::from_micros(round * 2500));
        let _ = child.kill(); // SIGKILL
        let status = child.wait().unwrap();
        if !status.success() {
            killed_midway += 1;
        }
        // Whatever the instant: the archive checks clean, and the name is
        // absent or holds the whole segment.
        in_scratch(&["check", "--read-data"]);
        if archived.exists() {
            let _ = std::fs::remove_file(&fetched);
            in_scratch(&[
                "wal",
                "fetch",
                &name,
                fetched.to_str().unwrap(),
                "--system-id",
                &sysid,
            ]);
            assert_eq!(std::fs::read(&fetched).unwrap(), original, "round {round}");
        }
        // PostgreSQL retries the push: it succeeds, and the archive is right.
        in_scratch(&["wal", "push", segment.to_str().unwrap()]);
        let _ = std::fs::remove_file(&fetched);
        in_scratch(&[
            "wal",
            "fetch",
            &name,
            fetched.to_str().unwrap(),
            "--system-id",
            &sysid,
        ]);
        assert_eq!(std::fs::read(&fetched).unwrap(), original, "round {round}");
    }
    assert!(
        killed_midway >= 5,
        "only {killed_midway} of 20 pushes were killed before exiting"
    );

    // Pushes of the same segment racing each other (PostgreSQL retrying while
    // an earlier attempt still runs): all succeed, one copy is stored.
    for round in 0..5 {
        let _ = std::fs::remove_file(&archived);
        let racers: Vec<_> = (0..4)
            .map(|_| {
                Command::new(f.bin())
                    .args(["--repo", scratch.to_str().unwrap(), "wal", "push"])
                    .arg(&segment)
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for racer in racers {
            let out = racer.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "round {round}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let _ = std::fs::remove_file(&fetched);
        in_scratch(&[
            "wal",
            "fetch",
            &name,
            fetched.to_str().unwrap(),
            "--system-id",
            &sysid,
        ]);
        assert_eq!(
            std::fs::read(&fetched).unwrap(),
            original,
            "race round {round}"
        );
    }
}

#[test]
fn pg_dump_snapshots_dedup_restore_into_a_fresh_database_and_failures_save_nothing() {
    let f = PgFixture::new();
    let mut c = f.cluster("primary");
    c.start();
    // Rows of text that compresses about 2x, like most real data.
    c.sql(
        "CREATE TABLE accounts (aid int PRIMARY KEY, abalance int, filler text); \
         INSERT INTO accounts SELECT i, 0, md5(i::text) || ' ' || md5((i * 7)::text) \
         FROM generate_series(1, 200000) i",
    );
    let pg_dump = format!("{}/pg_dump", crate::pg::PG_BIN);
    let conn = c.conninfo();
    let dump = |f: &PgFixture| -> serde_json::Value {
        let out = f.ok(&[
            "backup",
            "pg-dump",
            "--conn",
            &conn,
            "--pg-dump",
            &pg_dump,
            "--json",
        ]);
        serde_json::from_str(&out).unwrap()
    };
    let first = dump(&f);
    // 1 % of the rows change, spread over the table.
    c.sql("UPDATE accounts SET abalance = abalance + aid, filler = 'changed' WHERE aid % 100 = 0");
    let second = dump(&f);
    let added = |v: &serde_json::Value| v["stats"]["bytes_added"].as_f64().unwrap();
    let ratio = added(&second) / added(&first);
    eprintln!(
        "pg_dump of {} bytes: first snapshot added {}, second {} ({ratio:.3} of the first)",
        second["logical_size"],
        added(&first),
        added(&second)
    );
    assert!(ratio < 0.2, "the second dump added {ratio:.3} of the first");

    // Restored through --stdout into a new database: the same data.
    c.sql("CREATE DATABASE restored");
    let mut restore = std::process::Command::new(f.bin())
        .args([
            "--repo",
            f.repo().to_str().unwrap(),
            "restore",
            "latest",
            "--source",
        ])
        .arg("pg_dump-postgres")
        .arg("--stdout")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let psql = std::process::Command::new("psql")
        .args([
            "-h",
            c.root.to_str().unwrap(),
            "-U",
            "postgres",
            "-d",
            "restored",
            "-qX",
        ])
        .args(["-v", "ON_ERROR_STOP=1"])
        .stdin(restore.stdout.take().unwrap())
        .output()
        .unwrap();
    assert!(restore.wait().unwrap().success());
    assert!(
        psql.status.success(),
        "{}",
        String::from_utf8_lossy(&psql.stderr)
    );
    let digest = "SELECT count(*), sum(abalance), md5(string_agg(aid || ':' || abalance || filler, ',' ORDER BY aid)) FROM accounts";
    let original = c.sql(digest);
    let restored = std::process::Command::new("psql")
        .args([
            "-h",
            c.root.to_str().unwrap(),
            "-U",
            "postgres",
            "-d",
            "restored",
            "-qtAX",
            "-c",
            digest,
        ])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&restored.stdout).trim(), original);

    // Failures leave no snapshot and say why.
    let before = f.ok(&["snapshots", "--json"]);
    let err = f.fails(
        &[
            "backup",
            "pg-dump",
            "--conn",
            "host=/nonexistent dbname=nope",
            "--pg-dump",
            &pg_dump,
        ],
        1,
    );
    assert!(
        err.contains("no snapshot was saved") && err.contains("nonexistent"),
        "{err}"
    );
    let err = f.fails(
        &[
            "backup",
            "command",
            "--name",
            "fails",
            "--",
            "sh",
            "-c",
            "echo partial; echo oops >&2; false",
        ],
        1,
    );
    assert!(
        err.contains("exited with status 1") && err.contains("oops"),
        "{err}"
    );
    let err = f.fails(
        &[
            "backup",
            "command",
            "--name",
            "killed",
            "--",
            "sh",
            "-c",
            "echo partial; kill -9 $$",
        ],
        1,
    );
    assert!(err.contains("killed by signal 9"), "{err}");
    // A dump cut short (a pg_dump stand-in that exits 0 halfway) is refused too.
    let fake = f.path("fake_pg_dump");
    std::fs::write(
        &fake,
        "#!/bin/sh\necho '-- PostgreSQL database dump'\necho 'CREATE TABLE x ();'\n",
    )
    .unwrap();
    std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let err = f.fails(
        &[
            "backup",
            "pg-dump",
            "--conn",
            &conn,
            "--pg-dump",
            fake.to_str().unwrap(),
        ],
        1,
    );
    assert!(err.contains("cut short"), "{err}");
    assert_eq!(f.ok(&["snapshots", "--json"]), before);
}

#[test]
fn check_reads_the_wal_archive_and_names_the_base_backups_a_damaged_segment_affects() {
    let f = PgFixture::new();
    let mut c = f.cluster("primary");
    c.start();
    make_table(&c, 2000);
    base_backup(&f, &c);
    let sysid = c.system_identifier();
    let names: Vec<String> = (0..2).map(|_| c.switch_and_wait(&f.repo())).collect();
    c.stop();
    let out = f.ok(&["check", "--read-data"]);
    assert!(out.contains("WAL files"), "{out}");
    let backup_id = f.ok(&["snapshots", "--json"]);
    let backup_id: serde_json::Value = serde_json::from_str(&backup_id).unwrap();
    let backup_id = backup_id[0]["id"].as_str().unwrap().to_string();

    // A flipped byte inside a segment archived after the backup: found by
    // --read-data, and the base backup is named (its PITR would read it).
    let path = f.repo().join("wal").join(&sysid).join(&names[0]);
    let mut bytes = std::fs::read(&path).unwrap();
    let at = bytes.len() - 10;
    bytes[at] ^= 0x40;
    std::fs::write(&path, &bytes).unwrap();
    f.ok(&["check"]); // headers only: still fine
    let out = f.run(&["check", "--read-data", "--json"]);
    assert_eq!(out.status.code(), Some(4));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let problem = report["problems"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["what"].as_str().unwrap().contains(&names[0]))
        .unwrap_or_else(|| panic!("{report}"));
    assert_eq!(problem["affected_snapshots"][0], backup_id.as_str());

    // The segment the backup needs to be consistent, deleted: named too.
    let start_wal: serde_json::Value =
        serde_json::from_str(&f.ok(&["snapshots", "--json"])).unwrap();
    let start_wal = start_wal[0]["postgres"]["start_wal"]
        .as_str()
        .unwrap()
        .to_string();
    std::fs::remove_file(f.repo().join("wal").join(&sysid).join(&start_wal)).unwrap();
    let out = f.run(&["check"]);
    assert_eq!(out.status.code(), Some(4));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&start_wal) && text.contains("not in the repository"),
        "{text}"
    );
}

#[test]
fn restore_to_a_named_restore_point_and_to_an_lsn() {
    let f = PgFixture::new();
    let mut c = f.cluster("primary");
    c.start();
    make_table(&c, 3000);
    base_backup(&f, &c);
    c.sql("INSERT INTO t (v) SELECT 'a' FROM generate_series(1, 111)");
    c.sql("SELECT pg_create_restore_point('before-b')");
    let at_point = c.sql("SELECT count(*) FROM t");
    c.sql("INSERT INTO t (v) SELECT 'b' FROM generate_series(1, 222)");
    let lsn = c.sql("SELECT pg_current_wal_insert_lsn()");
    let at_lsn = c.sql("SELECT count(*) FROM t");
    c.sql("INSERT INTO t (v) SELECT 'c' FROM generate_series(1, 333)");
    c.switch_and_wait(&f.repo());
    c.stop();
    for (dir, args, want) in [
        ("point", vec!["--target-name", "before-b"], &at_point),
        // The first restore promoted to timeline 2, branching before the LSN:
        // only timeline 1 reaches it.
        (
            "lsn",
            vec!["--lsn", lsn.as_str(), "--timeline", "current"],
            &at_lsn,
        ),
    ] {
        let mut r = restore_and_recover(&f, &c.root, &c.root.join(dir), &args);
        assert_eq!(&r.sql("SELECT count(*) FROM t"), want, "{dir}");
        r.stop();
    }
    // The restores above promoted to new timelines forking from timeline 1,
    // which holds WAL past their forks: the LSN lies on more than one
    // history. Said before anything is written, with each way out.
    let out = restore(&f, &c.root.join("y"), &["--lsn", lsn.as_str()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--timeline 1 ") && err.contains("--timeline 2 "),
        "{err}"
    );
    assert!(!c.root.join("y").exists());
    // As the README writes it: `restore latest --lsn`.
    let out = restore(
        &f,
        &c.root.join("z"),
        &[
            "latest",
            "--lsn",
            lsn.as_str(),
            "--timeline",
            "current",
            "--dry-run",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // An LSN before the base backup ended cannot be reached from it.
    let err = f.fails(
        &[
            "restore",
            "--lsn",
            "0/10",
            "--to",
            c.root.join("x").to_str().unwrap(),
        ],
        2,
    );
    assert!(err.contains("no base backup ended at or before"), "{err}");
}

/// Page-aware base backups: a few updated rows cost a few delta-encoded
/// chunks, not their files, both in a new repository (chunks of 64 KiB) and
/// in one made before `pg_chunk` was recorded (chunks of one 8 KiB page).
/// Each second backup restores, and the restored server has the updates.
#[test]
fn a_few_updated_rows_cost_a_few_chunks_not_their_files() {
    let mut chunks = Vec::new();
    for (legacy, chunk_len) in [(false, 65536), (true, 8192)] {
        let f = PgFixture::new();
        if legacy {
            let path = f.repo().join("config.json");
            let mut config: serde_json::Value =
                serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
            config["chunker"]
                .as_object_mut()
                .unwrap()
                .remove("pg_chunk");
            std::fs::write(&path, serde_json::to_vec(&config).unwrap()).unwrap();
        }
        let mut c = f.cluster("primary");
        c.start();
        make_table(&c, 60_000); // about 8 MiB of heap: the multi-threaded path
        // Hint bits and the visibility map set now, or the UPDATE's scan
        // would set them on every page.
        c.sql("VACUUM FREEZE t");
        let backup = |f: &PgFixture| -> serde_json::Value {
            let conn = c.conninfo();
            let data = c.data.to_str().unwrap().to_string();
            let out = f.ok(&[
                "backup", "postgres", "--pgdata", &data, "--conn", &conn, "--json",
            ]);
            serde_json::from_str(&out).unwrap()
        };
        let first = backup(&f);
        c.sql("UPDATE t SET v = 'changed' WHERE id % 10000 = 0");
        c.sql("CHECKPOINT");
        let second = backup(&f);
        let stat = |v: &serde_json::Value, k: &str| v["stats"][k].as_u64().unwrap();
        let heap = std::fs::metadata(c.data.join(c.sql("SELECT pg_relation_filepath('t')")))
            .unwrap()
            .len();
        eprintln!(
            "chunk {chunk_len}: full backup added {} bytes in {} chunks; after 6 updated rows \
             the second added {} bytes, {} new chunks ({} as deltas); the table's heap is {heap} bytes",
            stat(&first, "bytes_added"),
            stat(&first, "chunks"),
            stat(&second, "bytes_added"),
            stat(&second, "chunks_new"),
            stat(&second, "chunks_delta"),
        );
        chunks.push(stat(&first, "chunks"));
        // The rows changed pages of the heap and its index, and catalog
        // files changed: each costs a delta, not the file.
        assert!(stat(&second, "chunks_delta") >= 6, "{second}");
        assert!(
            stat(&second, "bytes_added") < 64 * 1024,
            "the second backup added {} bytes",
            stat(&second, "bytes_added")
        );
        assert!(stat(&second, "bytes_added") * 20 < stat(&first, "bytes_added"));
        c.stop();

        let to = c.root.join("restored");
        let mut r = restore_and_recover(&f, &c.root, &to, &["--immediate"]);
        assert_eq!(r.sql("SELECT count(*) FROM t WHERE v = 'changed'"), "6");
        assert_eq!(r.sql("SELECT count(*) FROM t"), "60000");
        r.stop();
    }
    // The big files are cut as each repository says (the small ones are a
    // chunk each either way).
    assert!(
        chunks[0] * 2 < chunks[1],
        "chunks of the full backups: {chunks:?}"
    );
}
