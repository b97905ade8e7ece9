//! Crash points on the fault-injecting storage: at every write of a backup, a
//! gc and a run of `wal push`es in turn, the "process" fails, dies before the
//! write or dies after it (`repo::storage::fault`). Then the repository is
//! opened again on what the storage holds (the restart), and `check
//! --read-data` must find nothing wrong, every snapshot must restore bit-exact,
//! and the interrupted command, run again, must succeed. A write the storage
//! tears while saying it succeeded (a lying disk) must be caught by `check`
//! and never restored as data.
//!
//! The repository lives in memory (`repo::storage::memory`), its index in a
//! temporary directory; each crash point runs on its own copy of a prepared
//! repository. The counts are in `docs/reliability.md`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rewindb::commands::backup::{BackupOptions, backup_sqlite};
use rewindb::commands::check::{CheckOptions, check};
use rewindb::commands::forget::{ForgetOptions, forget};
use rewindb::commands::gc::{GcOptions, gc};
use rewindb::commands::stream::restore_to_writer;
use rewindb::error::RepoError;
use rewindb::repo::lock::LockMode;
use rewindb::repo::storage::Storage;
use rewindb::repo::storage::fault::{Fault, Faulty};
use rewindb::repo::storage::memory::Memory;
use rewindb::repo::wal::{Pushed, WalName};
use rewindb::repo::{OpenOptions, Repository};

/// The faults every write is tried with.
const FAULTS: [Fault; 3] = [Fault::CrashBefore, Fault::CrashAfter, Fault::Fail];

fn open(storage: Arc<dyn Storage>, index: &Path, lock: LockMode) -> Result<Repository, RepoError> {
    Repository::open_in(
        storage,
        index,
        OpenOptions {
            lock: Some(lock),
            lock_wait: Duration::from_secs(5),
        },
    )
}

/// `check --read-data` of everything.
fn check_all(repo: &Repository) -> rewindb::commands::check::CheckReport {
    check(
        repo,
        &CheckOptions {
            read_data: true,
            subset: None,
        },
    )
    .unwrap()
}

/// A repository in memory with 64 KiB packs (so a few MiB spread over many).
fn new_repo() -> (Memory, tempfile::TempDir) {
    let mem = Memory::new();
    let index = tempfile::tempdir().unwrap();
    Repository::init_in(&mem, index.path(), rewindb::repo::NewRepository::Plain).unwrap();
    let config = String::from_utf8(mem.get("config.json").unwrap()).unwrap();
    mem.tamper("config.json", crate::helpers::small_packs(&config));
    (mem, index)
}

/// A prepared repository and what each of its snapshots restores to.
struct Prepared {
    mem: Memory,
    index: tempfile::TempDir,
    expected: BTreeMap<String, Vec<u8>>,
}

impl Prepared {
    /// An independent copy to run one crash point on.
    fn fork(&self) -> (Memory, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::copy(
            self.index.path().join("index.redb"),
            dir.path().join("index.redb"),
        )
        .unwrap();
        (self.mem.fork(), dir)
    }
}

/// After a restart: nothing is wrong, and every snapshot restores to what it
/// must. A snapshot not in `expected` may be the interrupted run's, which
/// must restore to `in_flight`. Returns whether that one exists.
fn verify(
    mem: &Memory,
    index: &Path,
    expected: &BTreeMap<String, Vec<u8>>,
    in_flight: Option<&[u8]>,
    point: &str,
) -> bool {
    let repo = open(Arc::new(mem.clone()), index, LockMode::Shared)
        .unwrap_or_else(|e| panic!("{point}: the repository does not open: {e}"));
    let report = check(
        &repo,
        &CheckOptions {
            read_data: true,
            subset: None,
        },
    )
    .unwrap_or_else(|e| panic!("{point}: check failed: {e}"));
    assert!(report.problems.is_empty(), "{point}: {:?}", report.problems);
    let list = repo.snapshots().unwrap();
    assert!(list.damaged.is_empty(), "{point}: {:?}", list.damaged);
    let mut extra = false;
    for id in expected.keys() {
        assert!(
            list.ok.iter().any(|(i, _)| i.to_hex().as_str() == id),
            "{point}: snapshot {id} is gone"
        );
    }
    for (id, snap) in &list.ok {
        let want = match expected.get(id.to_hex().as_str()) {
            Some(bytes) => bytes.as_slice(),
            None => {
                extra = true;
                in_flight.unwrap_or_else(|| panic!("{point}: an unexpected snapshot {id}"))
            }
        };
        let mut out = Vec::new();
        restore_to_writer(&repo, &snap.files[0], &mut out)
            .unwrap_or_else(|e| panic!("{point}: snapshot {id} does not restore: {e}"));
        assert!(out == want, "{point}: snapshot {id} restored differently");
    }
    extra
}

/// A SQLite database of `rows` rows of random (incompressible) bytes.
fn random_db(path: &Path, rows: u32) -> Vec<u8> {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.execute_batch(&format!(
        "CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, b BLOB);
         WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < {rows})
         INSERT INTO t(b) SELECT randomblob(300) FROM c;"
    ))
    .unwrap();
    drop(conn);
    std::fs::read(path).unwrap()
}

/// Rewrites a quarter of the rows, `part` 0..4: whole pages change, so the
/// new ones are stored whole and the old ones die with their snapshots.
fn changed(path: &Path, part: u32) -> Vec<u8> {
    let conn = rusqlite::Connection::open(path).unwrap();
    let rows: u32 = conn
        .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
        .unwrap();
    let (from, to) = (rows / 4 * (part % 4), rows / 4 * (part % 4 + 1));
    conn.execute(
        "UPDATE t SET b = randomblob(300) WHERE id > ?1 AND id <= ?2",
        [from, to],
    )
    .unwrap();
    drop(conn);
    std::fs::read(path).unwrap()
}

fn backup(repo: &Repository, db: &Path) -> rewindb::error::Result<String> {
    let (id, _) = backup_sqlite(repo, &[db.to_path_buf()], &BackupOptions::default())?;
    Ok(id.to_hex().to_string())
}

/// Runs `op` at every write with every fault, on a fresh copy each time.
/// Returns the number of crash points tried.
fn every_write(
    what: &str,
    prepared: &Prepared,
    in_flight: Option<&[u8]>,
    op: impl Fn(&mut Repository) -> Result<(), String>,
) -> usize {
    let (mem, index) = prepared.fork();
    let counting = Arc::new(Faulty::new(Arc::new(mem)));
    let mut repo = open(counting.clone(), index.path(), LockMode::Exclusive).unwrap();
    op(&mut repo).unwrap();
    drop(repo);
    let writes = counting.writes();
    assert!(writes > 0, "{what} wrote nothing");
    let mut points = 0;
    for n in 1..=writes {
        for fault in FAULTS {
            let point = format!("{what}, {fault:?} at write {n} of {writes}");
            let (mem, index) = prepared.fork();
            let faulty = Arc::new(Faulty::new(Arc::new(mem.clone())));
            faulty.inject(n, fault);
            let mut repo = open(faulty.clone(), index.path(), LockMode::Exclusive).unwrap();
            let result = op(&mut repo);
            drop(repo);
            assert!(result.is_err(), "{point}: the fault went unnoticed");
            verify(&mem, index.path(), &prepared.expected, in_flight, &point);
            // The next run succeeds, and then everything is there.
            let mut repo = open(Arc::new(mem.clone()), index.path(), LockMode::Exclusive).unwrap();
            op(&mut repo).unwrap_or_else(|e| panic!("{point}: the next run failed: {e}"));
            drop(repo);
            verify(&mem, index.path(), &prepared.expected, in_flight, &point);
            points += 1;
        }
    }
    eprintln!("{what}: {writes} writes, {points} crash points");
    points
}

#[test]
fn crash_at_every_write_of_a_backup() {
    let dir = tempfile::tempdir().unwrap();
    let (mem, index) = new_repo();
    let db = dir.path().join("app.db");
    let v1 = random_db(&db, 3000);
    let repo = open(Arc::new(mem.clone()), index.path(), LockMode::Exclusive).unwrap();
    let first = backup(&repo, &db).unwrap();
    drop(repo);
    // The backup under test: an incremental of a changed database and a
    // second, new one (a full backup over many packs).
    let v2 = changed(&db, 1);
    let other = dir.path().join("other.db");
    let other_bytes = random_db(&other, 12000);
    let prepared = Prepared {
        mem,
        index,
        expected: BTreeMap::from([(first, v1)]),
    };
    let points_incremental = every_write("incremental backup", &prepared, Some(&v2), |repo| {
        backup(repo, &db).map(|_| ()).map_err(|e| e.to_string())
    });
    let points_full = every_write("full backup", &prepared, Some(&other_bytes), |repo| {
        backup(repo, &other).map(|_| ()).map_err(|e| e.to_string())
    });
    assert!(points_incremental + points_full >= 60);
}

#[test]
fn crash_at_every_write_of_a_gc() {
    let dir = tempfile::tempdir().unwrap();
    let (mem, index) = new_repo();
    let db = dir.path().join("app.db");
    let mut expected = BTreeMap::new();
    let mut ids = Vec::new();
    let repo = open(Arc::new(mem.clone()), index.path(), LockMode::Exclusive).unwrap();
    let mut bytes = random_db(&db, 12000);
    for round in 0..4 {
        let id = backup(&repo, &db).unwrap();
        expected.insert(id.clone(), bytes);
        ids.push(id);
        bytes = changed(&db, round);
    }
    // Forget the first two: their pages go, and packs shared with the kept
    // snapshots are rewritten (deltas of kept snapshots keep their bases).
    for id in &ids[..2] {
        forget(
            &repo,
            &ForgetOptions {
                ids: vec![id.clone()],
                ..ForgetOptions::default()
            },
        )
        .unwrap();
        expected.remove(id);
    }
    drop(repo);
    let prepared = Prepared {
        mem,
        index,
        expected,
    };
    let opts = GcOptions {
        dry_run: false,
        repack_threshold: 0.9,
    };
    let points = every_write("gc", &prepared, None, |repo| {
        gc(repo, &opts).map(|_| ()).map_err(|e| e.to_string())
    });
    assert!(points >= 45, "{points}");
}

/// WAL files of 64 KiB, random (so each is stored as it is) or repetitive.
fn wal_files(n: u32) -> Vec<(WalName, Vec<u8>)> {
    (1..=n)
        .map(|i| {
            let name = WalName::segment(1, u64::from(i), 16 << 20);
            let mut data = vec![0u8; 65536];
            match i % 2 {
                0 => blake3::Hasher::new()
                    .update(&i.to_le_bytes())
                    .finalize_xof()
                    .fill(&mut data),
                _ => data
                    .iter_mut()
                    .enumerate()
                    .for_each(|(j, b)| *b = (j % 251) as u8 ^ i as u8),
            }
            (name, data)
        })
        .collect()
}

const SYSID: u64 = 7_000_000_000_000_000_042;

#[test]
fn crash_at_every_wal_push() {
    let files = wal_files(30);
    let push_all = |storage: &dyn Storage| -> Result<(), RepoError> {
        let plain = rewindb::crypto::Crypto::plain();
        let archive = rewindb::repo::wal::WalArchive::new(storage, &plain);
        for (name, data) in &files {
            archive.push(SYSID, name, data.as_slice(), data.len() as u64)?;
        }
        Ok(())
    };
    let mut points = 0;
    for n in 1..=files.len() as u64 {
        for fault in FAULTS.into_iter().chain([Fault::ShortWrite]) {
            let point = format!("wal push, {fault:?} at push {n}");
            let (mem, index) = new_repo();
            let faulty = Faulty::new(Arc::new(mem.clone()));
            faulty.inject(n, fault);
            let result = push_all(&faulty);
            let plain = rewindb::crypto::Crypto::plain();
            let archive = rewindb::repo::wal::WalArchive::new(&mem, &plain);
            if fault == Fault::ShortWrite {
                // The storage said yes and kept half: the push after it
                // went on; check must find the torn file, a re-push must
                // refuse to call it archived, and fetch must not return it.
                assert!(result.is_ok(), "{point}");
                let (name, data) = &files[n as usize - 1];
                assert!(archive.read(SYSID, name).is_err(), "{point}");
                let again = archive.push(SYSID, name, data.as_slice(), data.len() as u64);
                assert!(
                    matches!(again, Err(RepoError::WalConflict { .. })),
                    "{point}"
                );
                let repo = open(Arc::new(mem.clone()), index.path(), LockMode::Shared).unwrap();
                let report = check_all(&repo);
                assert_eq!(report.problems.len(), 1, "{point}: {:?}", report.problems);
                points += 1;
                continue;
            }
            assert!(result.is_err(), "{point}: the fault went unnoticed");
            // Every push that returned is archived, whole; the one that
            // failed is whole or absent.
            for (i, (name, data)) in files.iter().enumerate() {
                let stored = archive.read(SYSID, name).unwrap();
                match (i as u64 + 1).cmp(&n) {
                    std::cmp::Ordering::Less => assert!(stored.as_ref() == Some(data), "{point}"),
                    std::cmp::Ordering::Equal => {
                        assert!(stored.is_none() || stored.as_ref() == Some(data), "{point}");
                    }
                    std::cmp::Ordering::Greater => assert!(stored.is_none(), "{point}"),
                }
            }
            // PostgreSQL retries from the failed segment on: each push
            // stores or finds its file archived already.
            for (name, data) in &files[n as usize - 1..] {
                let pushed = archive
                    .push(SYSID, name, data.as_slice(), data.len() as u64)
                    .unwrap_or_else(|e| panic!("{point}: retry of {name}: {e}"));
                assert!(matches!(pushed, Pushed::Stored | Pushed::AlreadyArchived));
            }
            for (name, data) in &files {
                assert!(archive.read(SYSID, name).unwrap().as_ref() == Some(data));
            }
            points += 1;
        }
    }
    eprintln!("wal push: {} pushes, {points} crash points", files.len());
    assert!(points >= 100, "{points}");
}

#[test]
fn torn_backup_writes_are_caught_never_restored() {
    // A storage that loses half of a write and says it kept it all: each
    // write of a full backup in turn. check --read-data must report it, and
    // no restore may return bytes other than the database's.
    let dir = tempfile::tempdir().unwrap();
    let db: PathBuf = dir.path().join("app.db");
    let bytes = random_db(&db, 3000);
    let (mem, index) = new_repo();
    let prepared = Prepared {
        mem,
        index,
        expected: BTreeMap::new(),
    };
    let (mem, index) = prepared.fork();
    let counting = Arc::new(Faulty::new(Arc::new(mem)));
    let repo = open(counting.clone(), index.path(), LockMode::Exclusive).unwrap();
    backup(&repo, &db).unwrap();
    drop(repo);
    let writes = counting.writes();
    for n in 1..=writes {
        let point = format!("torn write {n} of {writes}");
        let (mem, index) = prepared.fork();
        let faulty = Arc::new(Faulty::new(Arc::new(mem.clone())));
        faulty.inject(n, Fault::ShortWrite);
        let repo = open(faulty, index.path(), LockMode::Exclusive).unwrap();
        let _ = backup(&repo, &db);
        drop(repo);
        let repo = open(Arc::new(mem.clone()), index.path(), LockMode::Shared).unwrap();
        let report = check_all(&repo);
        let list = repo.snapshots().unwrap();
        assert!(
            !report.problems.is_empty() || !list.damaged.is_empty(),
            "{point}: check found nothing"
        );
        for (id, snap) in &list.ok {
            let mut out = Vec::new();
            if restore_to_writer(&repo, &snap.files[0], &mut out).is_ok() {
                assert!(out == bytes, "{point}: snapshot {id} restored wrong bytes");
            }
        }
    }
    assert!(writes >= 8, "{writes}");
}
