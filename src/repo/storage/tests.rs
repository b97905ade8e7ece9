//! One contract, every backend: what the repository relies on a storage for.

use std::io::ErrorKind;
use std::sync::Arc;
use std::time::Duration;

use super::fault::{Fault, Faulty};
use super::local::LocalDir;
use super::memory::Memory;
use super::*;
use crate::error::RepoError;

/// A fresh local directory laid out as a repository is (its `tmp/` exists).
fn local() -> (tempfile::TempDir, LocalDir) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("tmp")).unwrap();
    let storage = LocalDir::new(dir.path());
    (dir, storage)
}

fn contract(s: &dyn Storage) {
    // put is create-only and never overwrites.
    s.put("packs/ab/1.pack", b"first").unwrap();
    let again = s.put("packs/ab/1.pack", b"other").unwrap_err();
    assert_eq!(again.kind(), ErrorKind::AlreadyExists);
    assert_eq!(s.get("packs/ab/1.pack").unwrap(), b"first");
    // Whole and ranged reads; past the end is UnexpectedEof, missing NotFound.
    assert_eq!(s.get_range("packs/ab/1.pack", 1, 3).unwrap(), b"irs");
    let past = s.get_range("packs/ab/1.pack", 3, 3).unwrap_err();
    assert_eq!(past.kind(), ErrorKind::UnexpectedEof);
    assert!(is_not_found(&s.get("packs/ab/2.pack").unwrap_err()));
    assert!(s.open("nope").is_err_and(|e| is_not_found(&e)));
    let object = s.open("packs/ab/1.pack").unwrap();
    assert_eq!(object.len(), 5);
    // stat
    assert_eq!(s.stat("packs/ab/1.pack").unwrap(), Some(5));
    assert_eq!(s.stat("packs/ab/2.pack").unwrap(), None);
    // Objects in nested "directories", listed by prefix, sorted, with sizes.
    s.put("packs/cd/2.pack", b"22").unwrap();
    s.put("snapshots/x.json", b"{}").unwrap();
    s.put("wal/7/000000010000000000000001", b"w").unwrap();
    s.put("wal/8/00000002.history", b"hh").unwrap();
    let names = |prefix: &str| -> Vec<(String, u64)> {
        s.list(prefix)
            .unwrap()
            .into_iter()
            .map(|o| (o.name, o.size))
            .collect()
    };
    assert_eq!(
        names("packs/"),
        vec![
            ("packs/ab/1.pack".to_string(), 5),
            ("packs/cd/2.pack".to_string(), 2)
        ]
    );
    assert_eq!(names("packs/c"), vec![("packs/cd/2.pack".to_string(), 2)]);
    assert_eq!(names("wal/8/").len(), 1);
    assert_eq!(names("nothing/"), vec![]);
    assert_eq!(s.groups("wal/").unwrap(), vec!["7", "8"]);
    assert_eq!(s.groups("nothing/").unwrap(), Vec::<String>::new());
    let all: Vec<String> = names("").into_iter().map(|(n, _)| n).collect();
    assert_eq!(all.len(), 5, "{all:?}");
    // replace swaps a mutable object, and creates one.
    s.replace("gc.json", b"1").unwrap();
    s.replace("gc.json", b"22").unwrap();
    assert_eq!(s.get("gc.json").unwrap(), b"22");
    // delete: idempotent; delete_many removes them all.
    s.delete("snapshots/x.json").unwrap();
    s.delete("snapshots/x.json").unwrap();
    assert_eq!(s.stat("snapshots/x.json").unwrap(), None);
    s.delete_many(&["packs/ab/1.pack".into(), "packs/cd/2.pack".into()])
        .unwrap();
    assert_eq!(names("packs/"), vec![]);
    // A deleted name can be put again.
    s.put("packs/ab/1.pack", b"new").unwrap();
    assert_eq!(s.get("packs/ab/1.pack").unwrap(), b"new");
}

fn locks(s: &dyn Storage) {
    let short = Duration::from_millis(100);
    let a = s.lock(LockMode::Shared, short).unwrap();
    let b = s.lock(LockMode::Shared, short).unwrap();
    let refused = s.lock(LockMode::Exclusive, short).unwrap_err();
    assert!(matches!(refused, RepoError::Locked { .. }), "{refused}");
    drop((a, b));
    let w = s.lock(LockMode::Exclusive, short).unwrap();
    assert!(s.lock(LockMode::Shared, short).is_err());
    drop(w);
    s.lock(LockMode::Exclusive, short).unwrap();
}

#[test]
fn local_directory_keeps_the_contract() {
    let (_dir, s) = local();
    contract(&s);
    // Staging leaves nothing behind, and nothing listed but objects.
    assert_eq!(
        std::fs::read_dir(_dir.path().join("tmp")).unwrap().count(),
        0
    );
    assert_eq!(s.remove_abandoned(None).unwrap(), 0);
}

#[test]
fn local_locks_exclude_across_handles() {
    // Two handles on one directory stand for two processes (each its own
    // open file description, so flock(2) treats them apart).
    let (dir, _) = local();
    let one = LocalDir::new(dir.path());
    let two = LocalDir::new(dir.path());
    let short = Duration::from_millis(100);
    let held = one.lock(LockMode::Exclusive, short).unwrap();
    assert!(two.lock(LockMode::Shared, short).is_err());
    drop(held);
    locks(&two);
}

#[test]
fn local_objects_are_files_at_their_names() {
    // Byte-compatible with repositories made before the storage boundary:
    // an object is the file at its name under the root.
    let (dir, s) = local();
    s.put("packs/0f/abc.pack", b"bytes").unwrap();
    assert_eq!(
        std::fs::read(dir.path().join("packs/0f/abc.pack")).unwrap(),
        b"bytes"
    );
    std::fs::write(dir.path().join("snapshots.json"), b"x").unwrap();
    std::fs::create_dir(dir.path().join("snapshots")).unwrap();
    std::fs::write(dir.path().join("snapshots/a.json"), b"{}").unwrap();
    // Not objects: the lock, the index, staging and hidden files.
    for f in ["lock", "index.redb", "tmp/.rewindb-x", "snapshots/.tmp-y"] {
        std::fs::write(dir.path().join(f), b"").unwrap();
    }
    let names: Vec<String> = s.list("").unwrap().into_iter().map(|o| o.name).collect();
    assert_eq!(
        names,
        vec!["packs/0f/abc.pack", "snapshots.json", "snapshots/a.json"]
    );
    assert_eq!(s.list("snapshots/").unwrap().len(), 1);
    // The exclusive holder's sweep empties tmp/ only.
    assert_eq!(s.remove_abandoned(None).unwrap(), 0);
    assert!(!dir.path().join("tmp/.rewindb-x").exists());
    assert!(dir.path().join("snapshots/.tmp-y").exists());
}

#[test]
fn memory_keeps_the_contract() {
    let s = Memory::new();
    contract(&s);
    locks(&s);
}

#[test]
fn faults_fail_crash_and_tear() {
    let inner = Memory::new();
    let s = Faulty::new(Arc::new(inner.clone()));
    contract(&s); // no fault injected: the wrapper is transparent
    let before = s.writes();
    assert!(before > 10);

    // Fail: that write fails and changes nothing, later ones work.
    s.inject(before + 1, Fault::Fail);
    assert!(s.put("a", b"1").is_err());
    assert_eq!(inner.stat("a").unwrap(), None);
    s.put("a", b"1").unwrap();

    // ShortWrite: stored torn, reported as done.
    s.inject(before + 3, Fault::ShortWrite);
    s.put("b", b"1234").unwrap();
    assert_eq!(inner.get("b").unwrap(), b"12");

    // CrashAfter: the write lands, the caller sees an error, the process is gone.
    s.inject(before + 4, Fault::CrashAfter);
    assert!(s.put("c", b"1").is_err());
    assert_eq!(inner.get("c").unwrap(), b"1");
    assert!(s.crashed());
    assert!(s.get("a").is_err(), "reads fail after the crash");
    assert!(s.put("d", b"1").is_err());
    assert_eq!(inner.stat("d").unwrap(), None);

    // CrashBefore: nothing of that write lands.
    let s = Faulty::new(Arc::new(inner.clone()));
    s.inject(1, Fault::CrashBefore);
    assert!(s.delete("a").is_err());
    assert_eq!(inner.get("a").unwrap(), b"1");
    assert!(s.lock(LockMode::Shared, Duration::ZERO).is_err());
}
