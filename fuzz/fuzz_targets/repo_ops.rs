//! A sequence of repository operations (backup, forget, gc, restore, and
//! crashes in the middle of them) run on a repository in memory and checked
//! against a model: a map from snapshot to the bytes it must restore to.
//!
//! Each input byte pair is one operation; backups store a stream (`cat` of a
//! file the target edits), so later backups of a source delta-encode against
//! earlier ones and gc has delta bases to follow. Packs are sealed at 64 KiB so
//! that gc deletes and rewrites packs, not one pack holding everything.
//!
//! A crash operation arms the fault-injecting storage (`repo::storage::fault`)
//! for the next backup, forget or gc: at its Nth write the process "dies"
//! before or after the write. The repository is then opened again on what
//! the storage holds, and must check clean and hold every snapshot of the
//! model (the interrupted backup's, if it became visible, restores right).
#![no_main]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use rewindb::commands::check::{CheckOptions, check};
use rewindb::commands::forget::{ForgetOptions, forget};
use rewindb::commands::gc::{GcOptions, gc};
use rewindb::commands::stream::{StreamOptions, backup_stream, restore_to_writer};
use rewindb::repo::lock::LockMode;
use rewindb::repo::snapshot::SourceKind;
use rewindb::repo::storage::Storage;
use rewindb::repo::storage::fault::{Fault, Faulty};
use rewindb::repo::storage::memory::Memory;
use rewindb::repo::{OpenOptions, Repository};

fn open(storage: Arc<dyn Storage>, index: &Path) -> Repository {
    Repository::open_in(
        storage,
        index,
        OpenOptions {
            lock: Some(LockMode::Exclusive),
            lock_wait: std::time::Duration::from_secs(5),
        },
    )
    .unwrap()
}

fuzz_target!(|data: &[u8]| {
    if data.len() > 128 {
        return; // keep runs short
    }
    let dir = tempfile::tempdir().unwrap();
    let mem = Memory::new();
    Repository::init_in(&mem, dir.path(), rewindb::repo::NewRepository::Plain).unwrap();
    let config = String::from_utf8(mem.get("config.json").unwrap()).unwrap();
    mem.tamper(
        "config.json",
        config
            .replace(
                "\"pack_target_bytes\": 16777216",
                "\"pack_target_bytes\": 65536",
            )
            .into_bytes(),
    );
    let plain: Arc<dyn Storage> = Arc::new(mem.clone());

    // Two sources, each a file the operations edit.
    let mut contents: [Vec<u8>; 2] = [seed(0, 300_000), seed(1, 150_000)];
    let mut model: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    // The fault armed for the next changing operation.
    let mut armed: Option<(u64, Fault)> = None;
    for op in data.chunks(2) {
        let (code, arg) = (op[0], *op.get(1).unwrap_or(&0));
        if code % 5 == 4 {
            let fault =
                [Fault::CrashBefore, Fault::CrashAfter, Fault::Fail][usize::from(arg >> 6) % 3];
            armed = Some((u64::from(arg & 0x3f) + 1, fault));
            continue;
        }
        if code % 5 == 3 {
            if let Some(id) = model.keys().nth(usize::from(arg) % model.len().max(1)) {
                assert_restores(&open(plain.clone(), dir.path()), id, &model[id]);
            }
            continue;
        }
        let faulty = Arc::new(Faulty::new(plain.clone()));
        let injected = armed.take();
        if let Some((n, fault)) = injected {
            faulty.inject(n, fault);
        }
        {
            let mut repo = open(faulty.clone(), dir.path());
            match code % 5 {
                0 => {
                    let src = usize::from(arg & 1);
                    edit(&mut contents[src], arg);
                    let file = dir.path().join(format!("src{src}"));
                    std::fs::write(&file, &contents[src]).unwrap();
                    let result = backup_stream(
                        &repo,
                        &StreamOptions {
                            name: format!("source-{src}"),
                            command: vec!["cat".into(), file.display().to_string()],
                            kind: SourceKind::Command,
                            label: None,
                            recorded_as: None,
                        },
                    );
                    match result {
                        Ok((id, _)) => {
                            model.insert(id.to_hex().to_string(), contents[src].clone());
                        }
                        Err(e) => {
                            assert!(injected.is_some(), "backup failed: {e}");
                            drop(repo);
                            // Visible after all (the crash came after its last write)?
                            let repo = open(plain.clone(), dir.path());
                            for (id, _) in repo.snapshots().unwrap().ok {
                                model
                                    .entry(id.to_hex().to_string())
                                    .or_insert_with(|| contents[src].clone());
                            }
                        }
                    }
                }
                1 if !model.is_empty() => {
                    let id = model
                        .keys()
                        .nth(usize::from(arg) % model.len())
                        .unwrap()
                        .clone();
                    let result = forget(
                        &repo,
                        &ForgetOptions {
                            ids: vec![id.clone()],
                            ..ForgetOptions::default()
                        },
                    );
                    drop(repo);
                    let still_there = open(plain.clone(), dir.path())
                        .snapshots()
                        .unwrap()
                        .ok
                        .iter()
                        .any(|(i, _)| i.to_hex().as_str() == id);
                    assert!(result.is_err() || !still_there);
                    assert!(result.is_ok() || injected.is_some());
                    if !still_there {
                        model.remove(&id);
                    }
                }
                2 => {
                    let opts = GcOptions {
                        dry_run: arg & 0x80 != 0,
                        repack_threshold: f64::from(arg % 3) / 2.0,
                    };
                    let result = gc(&mut repo, &opts);
                    assert!(result.is_ok() || injected.is_some(), "gc failed");
                }
                _ => {}
            }
        } // the crashed process's lock ends with it
        if injected.is_some() {
            // The restart: what the storage holds must be whole.
            verify(&open(plain.clone(), dir.path()), &model);
        }
    }
    verify(&open(plain.clone(), dir.path()), &model);
});

/// Every snapshot of the model restores to its bytes, no other snapshot
/// exists, and check --read-data finds nothing wrong.
fn verify(repo: &Repository, model: &BTreeMap<String, Vec<u8>>) {
    let listed: Vec<String> = repo
        .snapshots()
        .unwrap()
        .ok
        .iter()
        .map(|(id, _)| id.to_hex().to_string())
        .collect();
    assert_eq!(listed.len(), model.len(), "{listed:?}");
    for (id, bytes) in model {
        assert_restores(repo, id, bytes);
    }
    let report = check(repo, &CheckOptions { read_data: true, subset: None }).unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
}

fn assert_restores(repo: &Repository, id: &str, expected: &[u8]) {
    let list = repo.snapshots().unwrap();
    let (_, snap) = list.find(id).unwrap();
    let mut out = Vec::new();
    restore_to_writer(repo, &snap.files[0], &mut out).unwrap();
    assert!(out == expected, "snapshot {id} restored differently");
}

/// Deterministic, compressible but not trivially repetitive bytes.
fn seed(salt: u64, len: usize) -> Vec<u8> {
    let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ salt;
    (0..len)
        .map(|i| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            if i % 64 < 40 {
                b'a' + (x % 26) as u8
            } else {
                (x >> 8) as u8
            }
        })
        .collect()
}

/// Changes a source between backups: overwrite, insert, or cut a stretch.
fn edit(bytes: &mut Vec<u8>, arg: u8) {
    let at = (usize::from(arg) * 7919) % bytes.len().max(1);
    let patch = seed(u64::from(arg), 1 + usize::from(arg) * 97);
    match arg % 3 {
        0 => {
            let end = (at + patch.len()).min(bytes.len());
            bytes[at..end].copy_from_slice(&patch[..end - at]);
        }
        1 => {
            bytes.splice(at..at, patch);
        }
        _ => {
            let end = (at + patch.len()).min(bytes.len());
            bytes.drain(at..end);
        }
    }
}
