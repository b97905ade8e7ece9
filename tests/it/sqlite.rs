//! SQLite backup and restore end to end through the binary.

use std::path::Path;

use rusqlite::Connection;

use crate::helpers::*;

/// Checkpoints and closes so the file on disk is the whole database; returns its bytes.
fn settled_bytes(db: &Path) -> Vec<u8> {
    let conn = Connection::open(db).unwrap();
    let _: (i64, i64, i64) = conn
        .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .unwrap();
    drop(conn);
    std::fs::read(db).unwrap()
}

/// Seven snapshots updating the same rows: changed pages are stored as deltas
/// of their previous version, and the chains pass the depth limit (4), so
/// this also guards delta chains and the rebase onto a chain's root.
#[test]
fn round_trip_of_several_snapshots_is_bit_exact() {
    for journal in ["wal", "delete"] {
        let f = Fixture::with_repo();
        let db = f.path("app.db");
        make_db(&db, 5_000, journal);
        let mut expected = Vec::new();
        for round in 0..7u64 {
            if round > 0 {
                update_rows(&db, 300, round);
                let conn = Connection::open(&db).unwrap();
                insert_rows(&conn, round * 1_000_000, 500);
            }
            let bytes = settled_bytes(&db);
            let id = f.backup(&[&db]);
            expected.push((id, bytes));
        }
        // Compacting the index gives back its copy-on-write garbage and
        // loses nothing (every snapshot below still restores). The backups
        // compact it themselves once half of it is free.
        let index = f.repo().join("index.redb");
        let before = std::fs::metadata(&index).unwrap().len();
        f.ok(&["repair", "compact-index"]);
        let after = std::fs::metadata(&index).unwrap().len();
        eprintln!("{journal}: index {before} bytes, {after} compacted");
        assert!(after <= before);
        assert!(
            before < 2 * after,
            "{journal}: index {before} bytes, {after} compacted"
        );
        for (i, (id, bytes)) in expected.iter().enumerate() {
            let out = f.path(&format!("restored-{journal}-{i}.db"));
            f.ok(&["restore", &id[..12], "--to", out.to_str().unwrap()]);
            assert!(
                std::fs::read(&out).unwrap() == *bytes,
                "{journal} snapshot {i} differs"
            );
        }
        f.ok(&["check", "--read-data"]);
    }
}

#[test]
fn second_backup_of_unchanged_database_adds_nothing() {
    let f = Fixture::with_repo();
    let db = f.path("app.db");
    make_db(&db, 20_000, "wal");
    f.backup(&[&db]);
    let packs_before = f.repo_state().len();
    f.backup(&[&db]);
    let snaps = f.snapshots();
    let first = snaps[0]["bytes_added"].as_u64().unwrap();
    let second = snaps[1]["bytes_added"].as_u64().unwrap();
    assert!(first > 100_000, "first backup added {first}");
    assert_eq!(second, 0, "unchanged database added {second} bytes");
    // Only the new snapshot file appeared.
    assert_eq!(f.repo_state().len(), packs_before + 1);
}

#[test]
fn small_change_costs_about_the_changed_pages() {
    let f = Fixture::with_repo();
    let db = f.path("app.db");
    make_db(&db, 100_000, "wal");
    f.backup(&[&db]);
    update_rows(&db, 20, 99);
    f.backup(&[&db]);
    let snaps = f.snapshots();
    let size = snaps[1]["logical_size"].as_u64().unwrap();
    let stats = &snaps[1]["stats"];
    let new_chunks = stats["chunks_new"].as_u64().unwrap();
    let bytes_added = stats["bytes_added"].as_u64().unwrap();
    // 20 scattered rows touch at most ~20 table pages, ~20 index pages and the
    // header page. Each changed chunk (64 KiB of pages) is stored as its
    // delta from the previous version, so what the repository grows by is
    // about those pages, not their chunks; the manifest is re-stored in part.
    let manifest = size / 4096 * 32;
    assert!(
        bytes_added <= 45 * 4096 + manifest,
        "{new_chunks} new chunks, {bytes_added} bytes added for a {size}-byte database"
    );
    assert!(bytes_added * 20 < size, "{bytes_added} of {size}");
}

#[test]
fn backup_during_continuous_writes_is_consistent() {
    for journal in ["wal", "delete"] {
        let f = Fixture::with_repo();
        let db = f.path("live.db");
        make_db(&db, 150_000, journal);
        let writer = Writer::start(&db);
        let before = row_count(&db);
        let id = f.backup(&[&db]);
        let after = row_count(&db);
        writer.stop();
        assert!(
            after > before,
            "{journal}: the writer did not write during the backup"
        );
        let out = f.path("restored.db");
        f.ok(&["restore", &id, "--to", out.to_str().unwrap()]);
        assert!(
            integrity_ok(&out),
            "{journal}: restored database is damaged"
        );
        let restored = row_count(&out);
        assert!(
            (before..=after).contains(&restored),
            "{journal}: restored {restored} rows, expected between {before} and {after}"
        );
    }
}

#[test]
fn several_databases_in_one_snapshot() {
    let f = Fixture::with_repo();
    let (a, b) = (f.path("app.db"), f.path("auth.db"));
    make_db(&a, 3_000, "wal");
    make_db(&b, 1_000, "delete");
    let (ba, bb) = (settled_bytes(&a), settled_bytes(&b));
    let id = f.backup(&[&a, &b]);
    let snaps = f.snapshots();
    assert_eq!(snaps[0]["files"].as_array().unwrap().len(), 2);
    let dir = f.path("out");
    f.ok(&["restore", &id, "--to", dir.to_str().unwrap()]);
    assert!(std::fs::read(dir.join("app.db")).unwrap() == ba);
    assert!(std::fs::read(dir.join("auth.db")).unwrap() == bb);
    let one = f.path("only-auth.db");
    f.ok(&[
        "restore",
        "latest",
        "--file",
        "auth.db",
        "--to",
        one.to_str().unwrap(),
    ]);
    assert!(std::fs::read(&one).unwrap() == bb);
}

#[test]
fn restore_at_picks_the_newest_snapshot_at_or_before_the_time() {
    let f = Fixture::with_repo();
    let db = f.path("app.db");
    make_db(&db, 1_000, "wal");
    let mut counts = Vec::new();
    for round in 0..3u64 {
        let conn = Connection::open(&db).unwrap();
        insert_rows(&conn, 1_000_000 * (round + 1), 100);
        drop(conn);
        counts.push(row_count(&db));
        f.backup(&[&db]);
    }
    let snaps = f.snapshots();
    let times: Vec<jiff::Timestamp> = snaps
        .iter()
        .map(|s| s["time"].as_str().unwrap().parse().unwrap())
        .collect();
    // Exactly at the second snapshot's time, and just before the third.
    let just_before_third = times[2] - jiff::SignedDuration::from_nanos(1);
    for (at, want) in [
        (times[1], counts[1]),
        (just_before_third, counts[1]),
        (times[2], counts[2]),
    ] {
        let out = f.path(&format!("at-{}.db", at.as_nanosecond()));
        f.ok(&[
            "restore",
            "--at",
            &at.to_string(),
            "--to",
            out.to_str().unwrap(),
        ]);
        assert_eq!(row_count(&out), want, "restore --at {at}");
    }
}

#[test]
fn in_place_restore_keeps_a_safety_copy_and_drops_the_stale_wal() {
    let f = Fixture::with_repo();
    let db = f.path("app.db");
    make_db(&db, 2_000, "wal");
    let snapshot_bytes = settled_bytes(&db);
    f.backup(&[&db]);
    // Change the live database and leave the change in its WAL.
    let live = Connection::open(&db).unwrap();
    live.pragma_update(None, "wal_autocheckpoint", 0).unwrap();
    insert_rows(&live, 5_000_000, 700);
    let changed_count = row_count(&db);
    let wal = f.path("app.db-wal");
    assert!(std::fs::metadata(&wal).unwrap().len() > 0);
    std::mem::forget(live); // keep the WAL from being checkpointed on close

    // Refused without --in-place, and the file is untouched.
    let err = f.fails(&["restore", "latest", "--to", db.to_str().unwrap()], 2);
    assert!(err.contains("already exists"), "{err}");
    assert_eq!(row_count(&db), changed_count);

    let out = f.ok(&["restore", "latest", "--in-place"]);
    assert!(out.contains("kept as"), "{out}");
    assert!(std::fs::read(&db).unwrap() == snapshot_bytes);
    assert!(!wal.exists() || std::fs::metadata(&wal).unwrap().len() == 0);
    assert_eq!(row_count(&db), 2_000);
    // The safety copy, with its WAL, still holds the changed database.
    let safety = std::fs::read_dir(f.dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            let n = p.file_name().unwrap().to_string_lossy().into_owned();
            n.starts_with("app.db.rewindb-safety-") && !n.ends_with("-wal")
        })
        .expect("safety copy");
    assert_eq!(row_count(&safety), changed_count);
}

#[test]
fn restored_file_keeps_the_source_permissions() {
    use std::os::unix::fs::PermissionsExt;
    let f = Fixture::with_repo();
    let db = f.path("app.db");
    make_db(&db, 100, "delete");
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o640)).unwrap();
    f.backup(&[&db]);
    let out = f.path("out.db");
    f.ok(&["restore", "latest", "--to", out.to_str().unwrap()]);
    let mode = std::fs::metadata(&out).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o640);
}

/// A database that was already damaged when it was backed up (an index that
/// contradicts its table): its bytes restore exactly, but `--verify full`
/// (the default) refuses to put it in place and leaves nothing; `quick`
/// (which skips index contents, as documented) and `hash` (bytes only) accept.
#[test]
fn restore_verification_levels() {
    let f = Fixture::with_repo();
    let db = f.path("app.db");
    make_db(&db, 3_000, "delete");
    {
        // The schema now says the index covers `qty`; its entries hold `name`.
        let conn = Connection::open(&db).unwrap();
        conn.execute_batch(
            "PRAGMA writable_schema=ON;
             UPDATE sqlite_master SET sql='CREATE INDEX items_name ON items(qty)'
               WHERE name='items_name';",
        )
        .unwrap();
    }
    assert!(!integrity_ok(&db));
    let bytes = std::fs::read(&db).unwrap();
    f.backup(&[&db]);
    // The default (hash) restores the bytes backed up, damage and all; the
    // SQLite check of --verify full refuses them.
    {
        let out = f.path("default.db");
        f.ok(&["restore", "latest", "--to", out.to_str().unwrap()]);
        assert!(std::fs::read(&out).unwrap() == bytes, "the default restore");
    }
    {
        let cmd = ["restore", "latest", "--verify", "full", "--to", "full.db"];
        let err = f.fails(&cmd, 4);
        assert!(err.contains("fails PRAGMA integrity_check"), "{err}");
        assert!(!f.path("full.db").exists(), "a refused restore left a file");
        let leftovers = std::fs::read_dir(f.dir.path())
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .contains(".rewindb-")
            })
            .count();
        assert_eq!(leftovers, 0, "temporary file left behind");
    }
    for verify in ["quick", "hash"] {
        let out = f.path(&format!("{verify}.db"));
        f.ok(&[
            "restore",
            "latest",
            "--verify",
            verify,
            "--to",
            out.to_str().unwrap(),
        ]);
        assert!(std::fs::read(&out).unwrap() == bytes, "--verify {verify}");
    }
    let err = f.fails(
        &["restore", "latest", "--verify", "nope", "--to", "x.db"],
        2,
    );
    assert!(err.contains("--verify"), "{err}");
}

/// Regression (review finding): a `-wal` left beside a deleted database would
/// be replayed onto the restored file by the first SQLite to open it.
#[test]
fn restore_refuses_or_moves_a_leftover_wal() {
    let f = Fixture::with_repo();
    let db = f.path("app.db");
    make_db(&db, 1_000, "wal");
    let bytes = settled_bytes(&db);
    f.backup(&[&db]);
    // Leave a WAL full of other commits beside a deleted database.
    let other = f.path("other.db");
    make_db(&other, 10, "wal");
    let live = Connection::open(&other).unwrap();
    live.pragma_update(None, "wal_autocheckpoint", 0).unwrap();
    insert_rows(&live, 9_000_000, 500);
    std::fs::copy(f.path("other.db-wal"), f.path("app.db-wal")).unwrap();
    std::mem::forget(live);
    std::fs::remove_file(&db).unwrap();

    let err = f.fails(&["restore", "latest", "--to", db.to_str().unwrap()], 2);
    assert!(err.contains("app.db-wal is left beside"), "{err}");
    assert!(!db.exists());
    f.ok(&["restore", "latest", "--in-place"]);
    assert!(
        !f.path("app.db-wal").exists()
            || std::fs::metadata(f.path("app.db-wal")).unwrap().len() == 0
    );
    assert!(std::fs::read(&db).unwrap() == bytes);
    assert_eq!(row_count(&db), 1_000);
    assert!(integrity_ok(&db));
}

/// A page that changes before every backup stays a delta when its chain of
/// bases reaches the depth reads allow (four): it is then encoded against
/// the chain's root. Every snapshot restores exactly.
#[test]
fn pages_changed_in_every_backup_stay_deltas_past_the_depth_limit() {
    let f = Fixture::with_repo();
    let db = f.path("app.db");
    make_db(&db, 50_000, "wal");
    let mut expected = vec![settled_bytes(&db)];
    let mut ids = vec![f.backup(&[&db])];
    for round in 1..=7 {
        update_rows(&db, 20, 7); // the same rows, the same pages
        expected.push(settled_bytes(&db));
        ids.push(f.backup(&[&db]));
        let snaps = f.snapshots();
        let stats = &snaps[round]["stats"];
        let (new, delta) = (
            stats["chunks_new"].as_u64().unwrap(),
            stats["chunks_delta"].as_u64().unwrap(),
        );
        eprintln!(
            "round {round}: {new} new chunks, {delta} as deltas, {} bytes added",
            stats["bytes_added"]
        );
        // The manifest's meta blobs are new but never deltas.
        let meta = new - delta;
        // 20 rows on as many pages, in 64 KiB chunks: a dozen chunks or more.
        assert!(
            delta >= 10,
            "round {round}: {delta} of {new} new chunks as deltas"
        );
        assert!(
            meta <= 4,
            "round {round}: {new} new chunks, {delta} as deltas"
        );
    }
    for (id, want) in ids.iter().zip(&expected) {
        assert_eq!(&f.restored_bytes(id), want, "snapshot {id}");
    }
    // Keeping only the newest snapshot, gc must keep the roots its rebased
    // deltas need (and the chains between).
    f.ok(&["forget", "--keep-last", "1"]);
    f.ok(&["gc"]);
    f.ok(&["check", "--read-data"]);
    let newest = ids.last().unwrap();
    assert_eq!(&f.restored_bytes(newest), expected.last().unwrap());
}

/// Databases with the smallest and the largest page sizes, over 1 MiB and
/// not a multiple of it: chunks of eight 512-byte pages or of one 64 KiB
/// page, hashed in batches that must tile the blake3 tree on backup and on
/// restore (a debug build asserts they do).
#[test]
fn smallest_and_largest_page_sizes_round_trip() {
    for (page_size, rows) in [(512u32, 17_000u64), (65536, 17_000)] {
        let f = Fixture::with_repo();
        let db = f.path(&format!("p{page_size}.db"));
        {
            let conn = Connection::open(&db).unwrap();
            conn.pragma_update(None, "page_size", page_size).unwrap();
            // Switching to WAL writes the header, with that page size.
            conn.pragma_update(None, "journal_mode", "wal").unwrap();
        }
        make_db(&db, rows, "wal");
        let mut expected = vec![settled_bytes(&db)];
        let len = expected[0].len() as u64;
        assert!(
            len > 1 << 20 && !len.is_multiple_of(1 << 20),
            "{page_size}: {len} bytes"
        );
        let mut ids = vec![f.backup(&[&db])];
        update_rows(&db, 50, 3);
        expected.push(settled_bytes(&db));
        ids.push(f.backup(&[&db]));
        let snaps = f.snapshots();
        assert_eq!(snaps[0]["files"][0]["page_size"], page_size, "{page_size}");
        for (id, want) in ids.iter().zip(&expected) {
            assert!(
                &f.restored_bytes(id) == want,
                "{page_size}: snapshot {id} differs"
            );
        }
    }
}
