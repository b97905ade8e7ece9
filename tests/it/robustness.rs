//! Overlapping runs, killed runs, damaged packs and a lost index.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::helpers::*;

#[test]
fn two_backups_started_together_both_succeed() {
    let f = Fixture::with_repo();
    let (a, b) = (f.path("a.db"), f.path("b.db"));
    make_db(&a, 60_000, "wal");
    make_db(&b, 60_000, "delete");
    let spawn = |db: &std::path::Path| {
        Command::new(BIN)
            .arg("--repo")
            .arg(f.repo())
            .args(["backup", "sqlite"])
            .arg(db)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (pa, pb) = (spawn(&a), spawn(&b));
    for p in [pa, pb] {
        let out = p.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(f.snapshots().len(), 2);
    f.ok(&["check", "--read-data"]);
    for (i, s) in f.snapshots().iter().enumerate() {
        let out = f.path(&format!("r{i}.db"));
        f.ok(&[
            "restore",
            s["id"].as_str().unwrap(),
            "--to",
            out.to_str().unwrap(),
        ]);
        assert!(integrity_ok(&out));
    }
}

#[test]
fn a_held_lock_is_refused_cleanly_with_its_own_exit_code() {
    let f = Fixture::with_repo();
    let db = f.path("a.db");
    make_db(&db, 100, "wal");
    let before = f.repo_state();
    // The lock file is created by the first locked command; make it here as
    // another rewindb would.
    let lock = std::fs::File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(f.repo().join("lock"))
        .unwrap();
    lock.lock().unwrap();
    let err = f.fails(&["--lock-wait", "0", "backup", "sqlite", "a.db"], 3);
    assert!(err.contains("locked by another rewindb process"), "{err}");
    let err = f.fails(&["--lock-wait", "1", "check"], 3);
    assert!(err.contains("waited 1s"), "{err}");
    assert!(f.repo_state() == before);
    drop(lock);
    f.backup(&[&db]);
}

#[test]
fn killed_backups_leave_earlier_snapshots_restorable() {
    let f = Fixture::with_repo();
    let db = f.path("big.db");
    make_db(&db, 200_000, "wal");
    let first = f.backup(&[&db]);
    let first_out = f.path("first.db");
    f.ok(&["restore", &first, "--to", first_out.to_str().unwrap()]);
    let first_bytes = std::fs::read(&first_out).unwrap();
    let mut seen = std::collections::HashMap::from([(first.clone(), first_bytes)]);
    let mut kills = 0;
    for round in 0..12u64 {
        update_rows(&db, 3_000, round);
        let mut child = Command::new(BIN)
            .arg("--repo")
            .arg(f.repo())
            .args(["backup", "sqlite"])
            .arg(&db)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(5 + round * 12));
        if child.try_wait().unwrap().is_none() {
            kills += 1;
        }
        let _ = child.kill(); // SIGKILL
        child.wait().unwrap();
        // Every snapshot listed is complete, verifies, and restores to the
        // bytes it restored to when it was first seen (a backup the kill
        // came too late for is listed from then on).
        f.ok(&["check", "--read-data"]);
        for s in f.snapshots() {
            let id = s["id"].as_str().unwrap().to_string();
            let bytes = f.restored_bytes(&id);
            let expected = seen.entry(id).or_insert_with(|| bytes.clone());
            assert!(*expected == bytes, "round {round}");
        }
    }
    assert!(
        kills >= 3,
        "only {kills} backups were still running when killed"
    );
    // The next backup works and restores.
    let id = f.backup(&[&db]);
    let out = f.path("final.db");
    f.ok(&["restore", &id, "--to", out.to_str().unwrap()]);
    assert!(integrity_ok(&out));
}

/// The single pack a fixture's snapshot wrote (each backup run seals its own packs).
fn packs(f: &Fixture) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for d in std::fs::read_dir(f.repo().join("packs")).unwrap() {
        for p in std::fs::read_dir(d.unwrap().path()).unwrap() {
            out.push(p.unwrap().path());
        }
    }
    out.sort();
    out
}

#[test]
fn damaged_pack_is_named_and_only_its_snapshots_fail() {
    let f = Fixture::with_repo();
    let (a, b) = (f.path("a.db"), f.path("b.db"));
    make_db(&a, 5_000, "wal");
    let snap_a = f.backup(&[&a]);
    let packs_a = packs(&f);
    make_db(&b, 7_000, "delete");
    update_rows(&b, 100, 5);
    let snap_b = f.backup(&[&b]);
    assert_eq!(packs_a.len(), 1);
    // Flip a byte in the middle of snapshot A's pack.
    let mut bytes = std::fs::read(&packs_a[0]).unwrap();
    let mid = bytes.len() / 3;
    bytes[mid] ^= 0x55;
    std::fs::write(&packs_a[0], &bytes).unwrap();

    // The structural check does not read blobs; --read-data finds the damage.
    let out = f.run(&["check", "--read-data"]);
    assert_eq!(out.status.code(), Some(4));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stdout.contains("does not match its hash") || stdout.contains("decompress"),
        "{stdout}"
    );
    assert!(stderr.contains(&snap_a[..8]), "{stderr}");
    assert!(!stderr.contains(&snap_b[..8]), "{stderr}");
    let affected = f.affected_snapshots();
    assert!(affected.iter().all(|s| *s == snap_a), "{affected:?}");

    // Restoring A fails and leaves nothing behind; B restores.
    let dest = f.path("out");
    std::fs::create_dir(&dest).unwrap();
    let err = f.fails(
        &[
            "restore",
            &snap_a,
            "--to",
            dest.join("a.db").to_str().unwrap(),
        ],
        4,
    );
    assert!(
        err.contains("damaged") || err.contains("decompress"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_dir(&dest).unwrap().count(),
        0,
        "restore left files"
    );
    f.ok(&[
        "restore",
        &snap_b,
        "--to",
        dest.join("b.db").to_str().unwrap(),
    ]);
    assert!(integrity_ok(&dest.join("b.db")));
}

#[test]
fn truncated_and_deleted_packs_are_reported_by_the_structural_check() {
    let f = Fixture::with_repo();
    let a = f.path("a.db");
    make_db(&a, 3_000, "wal");
    let snap = f.backup(&[&a]);
    let pack = packs(&f).remove(0);
    let len = std::fs::metadata(&pack).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&pack)
        .unwrap()
        .set_len(len - 100)
        .unwrap();
    let err = f.fails(&["check"], 4);
    assert!(err.contains(&snap[..8]), "{err}");
    std::fs::remove_file(&pack).unwrap();
    let out = f.run(&["check"]);
    assert_eq!(out.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&out.stdout).contains("is missing"));
    let err = f.fails(&["restore", &snap, "--to", "x.db"], 4);
    assert!(err.contains("missing"), "{err}");
    assert!(!f.path("x.db").exists());
}

#[test]
fn lost_or_damaged_index_is_rebuilt_from_the_packs() {
    let f = Fixture::with_repo();
    let a = f.path("a.db");
    make_db(&a, 3_000, "wal");
    f.backup(&[&a]);
    update_rows(&a, 50, 1);
    let snap = f.backup(&[&a]);
    let index = f.repo().join("index.redb");
    std::fs::remove_file(&index).unwrap();
    let err = f.fails(&["restore", &snap, "--to", "x.db"], 1);
    assert!(err.contains("rewindb repair index"), "{err}");
    let err = f.fails(&["check"], 4);
    assert!(err.contains("problem"), "{err}");
    f.ok(&["repair", "index"]);
    f.ok(&["check", "--read-data"]);
    f.ok(&["restore", &snap, "--to", "x.db"]);
    assert!(integrity_ok(&f.path("x.db")));
    // A damaged (garbage) index file is handled the same way.
    std::fs::write(&index, b"garbage garbage garbage").unwrap();
    let err = f.fails(&["backup", "sqlite", "a.db"], 1);
    assert!(err.contains("rewindb repair index"), "{err}");
    f.ok(&["repair", "index"]);
    f.backup(&[&a]);
    f.ok(&["check", "--read-data"]);
}

#[test]
fn partial_files_of_a_killed_run_are_cleared_by_the_next_writer() {
    let f = Fixture::with_repo();
    let a = f.path("a.db");
    make_db(&a, 100, "wal");
    let stale = f.repo().join("tmp").join(".rewindb-partial");
    std::fs::write(&stale, b"half a pack").unwrap();
    f.ok(&["check"]);
    assert!(stale.exists(), "a reader must not touch tmp/");
    f.backup(&[&a]);
    assert!(!stale.exists());
}

/// After a pack of page data is lost and the index rebuilt without it, the
/// next backup stores the lost pages again, even those unchanged since the
/// damaged snapshot (whose manifest survives and supplies them as delta
/// bases), so the new snapshot is whole while the old one stays reported.
#[test]
fn backup_after_a_lost_pack_stores_the_pages_again() {
    use rewindb::repo::pack::{BlobKind, decode_pack};
    let f = Fixture::with_repo();
    f.use_small_packs();
    let a = f.path("a.db");
    make_db(&a, 20_000, "wal");
    let old = f.backup(&[&a]);
    let data_only = packs(&f)
        .into_iter()
        .find(|p| {
            let entries = decode_pack(
                &std::fs::read(p).unwrap(),
                &rewindb::crypto::Crypto::plain(),
            )
            .unwrap();
            entries.iter().all(|e| e.kind == BlobKind::Data)
        })
        .expect("a pack holding only page data");
    std::fs::remove_file(&data_only).unwrap();
    f.ok(&["repair", "index"]);
    update_rows(&a, 10, 3);
    let new = f.backup(&[&a]);
    let out = f.path("new.db");
    f.ok(&["restore", &new, "--to", out.to_str().unwrap()]);
    assert!(integrity_ok(&out));
    let affected = f.affected_snapshots();
    assert!(affected.contains(&old), "{affected:?}");
    assert!(!affected.contains(&new), "{affected:?}");
}

/// Regression (review finding): `repair index` after a lost pack must also
/// leave out deltas whose base was in it. Otherwise the next backup of
/// unchanged pages would trust those deltas and list a snapshot that cannot
/// be restored.
#[test]
fn repair_drops_deltas_whose_base_is_lost() {
    use rewindb::repo::pack::{BlobKind, decode_pack};
    let f = Fixture::with_repo();
    f.use_small_packs();
    let a = f.path("a.db");
    make_db(&a, 20_000, "wal");
    let first = f.backup(&[&a]);
    let first_packs = packs(&f);
    update_rows(&a, 300, 1);
    let second = f.backup(&[&a]);
    let deltas = f.snapshots()[1]["stats"]["chunks_delta"].as_u64().unwrap();
    assert!(deltas > 0, "the second backup stored no deltas");
    // Lose the first backup's page data (its manifest pack stays).
    for p in first_packs {
        let entries = decode_pack(
            &std::fs::read(&p).unwrap(),
            &rewindb::crypto::Crypto::plain(),
        )
        .unwrap();
        if entries.iter().all(|e| e.kind == BlobKind::Data) {
            std::fs::remove_file(&p).unwrap();
        }
    }
    // The structural check follows delta bases: the second snapshot, whose
    // deltas need the lost pages, is named too.
    let err = f.fails(&["check"], 4);
    assert!(
        err.contains(&first[..8]) && err.contains(&second[..8]),
        "{err}"
    );
    let out = f.ok(&["repair", "index"]);
    assert!(out.contains("delta chunk(s) left out"), "{out}");
    let third = f.backup(&[&a]);
    let restored = f.path("third.db");
    f.ok(&["restore", &third, "--to", restored.to_str().unwrap()]);
    assert!(integrity_ok(&restored));
    assert_eq!(row_count(&restored), row_count(&a));
}

/// Regression (review finding): when the second file of a snapshot fails to
/// restore, the error says the first was restored, and where.
#[test]
fn partial_multi_file_restore_says_what_was_restored() {
    use rewindb::id::ChunkId;
    use rewindb::repo::pack::decode_pack;
    use std::collections::HashSet;
    let f = Fixture::with_repo();
    f.use_small_packs();
    let (a, b) = (f.path("a.db"), f.path("b.db"));
    make_db(&a, 5_000, "delete");
    make_db(&b, 20_000, "delete");
    // The chunks the repository cuts (whole pages, page_chunk_min long).
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(f.repo().join("config.json")).unwrap()).unwrap();
    let chunk = config["chunker"]["page_chunk_min"].as_u64().unwrap() as usize;
    let pages = |p: &std::path::Path| -> HashSet<ChunkId> {
        std::fs::read(p)
            .unwrap()
            .chunks(chunk)
            .map(ChunkId::of)
            .collect()
    };
    let (pages_a, pages_b) = (pages(&a), pages(&b));
    let id = f.backup(&[&a, &b]);
    // Lose a pack that only b.db needs.
    let only_b = packs(&f)
        .into_iter()
        .find(|p| {
            let ids: Vec<ChunkId> = decode_pack(
                &std::fs::read(p).unwrap(),
                &rewindb::crypto::Crypto::plain(),
            )
            .unwrap()
            .iter()
            .map(|e| e.id)
            .collect();
            ids.iter()
                .all(|i| pages_b.contains(i) && !pages_a.contains(i))
        })
        .expect("a pack of b.db's pages only");
    std::fs::remove_file(only_b).unwrap();
    let dir = f.path("out");
    let err = f.fails(&["restore", &id, "--to", dir.to_str().unwrap()], 4);
    assert!(
        err.contains("before that failure these were already restored"),
        "{err}"
    );
    assert!(
        err.contains(&dir.join("a.db").display().to_string()),
        "{err}"
    );
    assert!(integrity_ok(&dir.join("a.db")));
    assert!(!dir.join("b.db").exists());
}

/// SIGKILL during `restore --in-place` at varied points: the live path always
/// holds a sound database, either the one it had or the restored one (the old
/// file is hard-linked to its safety name before anything moves).
#[test]
fn killed_in_place_restores_always_leave_a_database_at_the_path() {
    let f = Fixture::with_repo();
    let db = f.path("live.db");
    make_db(&db, 60_000, "delete");
    let snapshot_rows = row_count(&db);
    f.backup(&[&db]);
    let mut interrupted = 0;
    for round in 0..12u64 {
        // Change the live database so the two candidates differ.
        let conn = rusqlite::Connection::open(&db).unwrap();
        insert_rows(&conn, 50_000_000 + round * 1_000, 500);
        drop(conn);
        let live_rows = row_count(&db);
        let mut child = Command::new(BIN)
            .arg("--repo")
            .arg(f.repo())
            .args(["restore", "latest", "--in-place", "--verify", "hash"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(2 + round * 6));
        if child.try_wait().unwrap().is_none() {
            interrupted += 1;
        }
        let _ = child.kill();
        child.wait().unwrap();
        assert!(db.is_file(), "round {round}: the live path is empty");
        assert!(
            integrity_ok(&db),
            "round {round}: the live database is damaged"
        );
        let rows = row_count(&db);
        assert!(
            rows == live_rows || rows == snapshot_rows,
            "round {round}: {rows} rows, expected {live_rows} or {snapshot_rows}"
        );
    }
    assert!(
        interrupted >= 3,
        "only {interrupted} restores were still running when killed"
    );
}

/// SIGKILL during `repair index`: the old index stays in place until the new
/// one is complete, so every snapshot restores afterwards.
#[test]
fn killed_index_repairs_leave_a_usable_index() {
    let f = Fixture::with_repo();
    f.use_small_packs();
    let db = f.path("a.db");
    make_db(&db, 40_000, "wal");
    let id = f.backup(&[&db]);
    for round in 0..8u64 {
        let mut child = Command::new(BIN)
            .arg("--repo")
            .arg(f.repo())
            .args(["repair", "index"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(1 + round * 4));
        let _ = child.kill();
        child.wait().unwrap();
        f.ok(&["check"]);
        let out = f.path(&format!("r{round}.db"));
        f.ok(&[
            "restore",
            &id,
            "--verify",
            "hash",
            "--to",
            out.to_str().unwrap(),
        ]);
        std::fs::remove_file(&out).unwrap();
    }
}

/// A size-limited filesystem for a repository: a tmpfs mounted for the test
/// (root, where the machine allows it), unmounted on drop.
struct SmallFs {
    dir: std::path::PathBuf,
}

impl SmallFs {
    /// None when the machine does not allow it (or `REWINDB_TEST_NO_MOUNT`
    /// is set, to exercise the fallback).
    fn mount(dir: &std::path::Path, mib: u64) -> Option<SmallFs> {
        std::fs::create_dir_all(dir).unwrap();
        if std::env::var_os("REWINDB_TEST_NO_MOUNT").is_some() {
            return None;
        }
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(dir)
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| SmallFs {
            dir: dir.to_path_buf(),
        })
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.dir).status();
    }
}

/// A database of `mib` MiB of random (incompressible) bytes.
fn random_db(path: &std::path::Path, mib: u64) {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.execute_batch("CREATE TABLE b(x BLOB); BEGIN;")
        .unwrap();
    for _ in 0..mib * 256 {
        conn.execute("INSERT INTO b VALUES (randomblob(4000))", [])
            .unwrap();
    }
    conn.execute_batch("COMMIT").unwrap();
}

/// A backup that runs out of space fails with a message saying so, leaves
/// the earlier snapshot restorable, and the next backup after space is freed
/// succeeds. On a tmpfs of 24 MiB when the machine lets the test mount one;
/// otherwise the same with the file size limit (`ulimit -f`), which makes
/// writes fail with EFBIG as a full disk makes them fail with ENOSPC.
#[test]
fn a_full_disk_fails_the_backup_cleanly_and_the_next_one_succeeds() {
    let f = Fixture::new();
    let small = SmallFs::mount(&f.path("small"), 24);
    let repo = f.path("small").join("repo");
    let run = |args: &[&str], limit_kib: Option<u64>| {
        let mut cmd = match limit_kib {
            // SIGXFSZ ignored (inherited through exec): the write fails instead.
            Some(kib) => {
                let mut c = Command::new("bash");
                c.args([
                    "-c",
                    &format!("trap '' XFSZ; ulimit -f {kib}; exec \"$0\" \"$@\""),
                    BIN,
                ]);
                c
            }
            None => Command::new(BIN),
        };
        cmd.arg("--repo")
            .arg(&repo)
            .args(args)
            .current_dir(f.dir.path())
            .output()
            .unwrap()
    };
    let ok = |args: &[&str]| succeeded(args, run(args, None));
    ok(&["init"]);
    let first = f.path("first.db");
    make_db(&first, 20_000, "wal");
    let v: serde_json::Value =
        serde_json::from_str(&ok(&["backup", "sqlite", "--json", "first.db"])).unwrap();
    let first_id = v["id"].as_str().unwrap().to_string();
    let big = f.path("big.db");
    random_db(&big, 16);
    // Fill the filesystem (or limit file sizes) so the big backup cannot fit.
    let filler = f.path("small").join("filler");
    let limit = if small.is_some() {
        std::fs::write(&filler, vec![0u8; 12 << 20]).unwrap();
        None
    } else {
        Some(4096) // KiB: packs are sealed at 16 MiB
    };
    let out = run(&["backup", "sqlite", "big.db"], limit);
    let err = exited_with(&["backup", "sqlite", "big.db"], out, 1);
    assert!(
        err.contains("the repository's filesystem is full") && err.contains("free space"),
        "{err}"
    );
    // Nothing half-made is visible; the earlier snapshot restores.
    let snaps: Vec<serde_json::Value> =
        serde_json::from_str(&ok(&["snapshots", "--json"])).unwrap();
    assert_eq!(snaps.len(), 1);
    ok(&["check", "--read-data"]);
    let out_db = f.path("first-restored.db");
    ok(&["restore", &first_id, "--to", out_db.to_str().unwrap()]);
    assert!(integrity_ok(&out_db));
    // Space freed: the same backup succeeds, and gc clears what the failed one left.
    if small.is_some() {
        std::fs::remove_file(&filler).unwrap();
    }
    let v: serde_json::Value =
        serde_json::from_str(&ok(&["backup", "sqlite", "--json", "big.db"])).unwrap();
    ok(&["gc"]);
    ok(&["check", "--read-data"]);
    let out_big = f.path("big-restored.db");
    ok(&[
        "restore",
        v["id"].as_str().unwrap(),
        "--to",
        out_big.to_str().unwrap(),
    ]);
    assert!(std::fs::read(&out_big).unwrap() == std::fs::read(&big).unwrap());
    eprintln!(
        "full disk simulated with {}",
        if small.is_some() {
            "a 24 MiB tmpfs"
        } else {
            "ulimit -f"
        }
    );
    drop(small);
}

/// One byte flipped at 48 places spread over a pack (frames, entry table,
/// trailer): `check --read-data` detects every one and names the snapshot,
/// and restoring it fails with exit 4 and writes nothing.
#[test]
fn every_flipped_byte_of_a_pack_is_detected() {
    let f = Fixture::with_repo();
    let db = f.path("a.db");
    make_db(&db, 3_000, "wal");
    let snap = f.backup(&[&db]);
    let pack = packs(&f).remove(0);
    let clean = std::fs::read(&pack).unwrap();
    let reference = f.path("reference.db");
    f.ok(&["restore", &snap, "--to", reference.to_str().unwrap()]);
    let expected = std::fs::read(&reference).unwrap();
    let flips = 48;
    let mut detected = 0;
    for i in 0..flips {
        // Evenly spread, and the last byte too.
        let at = (clean.len() - 1) * i / (flips - 1);
        let mut bytes = clean.clone();
        bytes[at] ^= 0x01;
        std::fs::write(&pack, &bytes).unwrap();
        let out = f.run(&["check", "--read-data"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        if out.status.code() == Some(4) && stderr.contains(&snap[..8]) {
            detected += 1;
        } else {
            eprintln!("flip at {at} of {}: {:?} {stderr}", clean.len(), out.status);
        }
        // A restore reads blobs, not the entry table: it either fails (exit
        // 4, nothing written) or, when the flip missed every blob it reads,
        // writes exactly the original.
        let dest = f.path("restored.db");
        let out = f.run(&["restore", &snap, "--to", dest.to_str().unwrap()]);
        if out.status.success() {
            assert!(std::fs::read(&dest).unwrap() == expected, "flip at {at}");
            std::fs::remove_file(&dest).unwrap();
        } else {
            assert_eq!(out.status.code(), Some(4), "flip at {at}");
            assert!(!dest.exists(), "flip at {at}: restore left a file");
        }
    }
    std::fs::write(&pack, &clean).unwrap();
    f.ok(&["check", "--read-data"]);
    eprintln!("{detected} of {flips} flipped bytes detected");
    assert_eq!(detected, flips);
}
