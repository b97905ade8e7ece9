//! A sequence of repository operations (backup, forget, gc, restore) run on a
//! real repository in a temporary directory and checked against a model: a
//! map from snapshot to the bytes it must restore to.
//!
//! Each input byte pair is one operation; backups store a stream (`cat` of a
//! file the target edits), so later backups of a source delta-encode against
//! earlier ones and gc has delta bases to follow. Packs are sealed at 64 KiB so
//! that gc deletes and rewrites packs, not one pack holding everything.
#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;
use rewindb::commands::check::{CheckOptions, check};
use rewindb::commands::forget::{ForgetOptions, forget};
use rewindb::commands::gc::{GcOptions, gc};
use rewindb::commands::stream::{StreamOptions, backup_stream, restore_to_writer};
use rewindb::repo::lock::LockMode;
use rewindb::repo::snapshot::SourceKind;
use rewindb::repo::{OpenOptions, Repository};

fuzz_target!(|data: &[u8]| {
    if data.len() > 64 {
        return; // each operation costs fsyncs: keep runs short
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("repo");
    Repository::init(&root).unwrap();
    let cfg = root.join("config.json");
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(
        &cfg,
        text.replace("\"pack_target_bytes\": 16777216", "\"pack_target_bytes\": 65536"),
    )
    .unwrap();
    let mut repo = Repository::open(
        &root,
        OpenOptions {
            lock: Some(LockMode::Exclusive),
            lock_wait: std::time::Duration::from_secs(5),
        },
    )
    .unwrap();

    // Two sources, each a file the operations edit.
    let mut contents: [Vec<u8>; 2] = [seed(0, 300_000), seed(1, 150_000)];
    let mut model: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for op in data.chunks(2) {
        let (code, arg) = (op[0], *op.get(1).unwrap_or(&0));
        match code % 4 {
            0 => {
                let src = usize::from(arg & 1);
                edit(&mut contents[src], arg);
                let file = dir.path().join(format!("src{src}"));
                std::fs::write(&file, &contents[src]).unwrap();
                let (id, _) = backup_stream(
                    &repo,
                    &StreamOptions {
                        name: format!("source-{src}"),
                        command: vec!["cat".into(), file.display().to_string()],
                        kind: SourceKind::Command,
                        label: None,
                    },
                )
                .unwrap();
                model.insert(id.to_hex(), contents[src].clone());
            }
            1 if !model.is_empty() => {
                let id = model.keys().nth(usize::from(arg) % model.len()).unwrap().clone();
                forget(
                    &repo,
                    &ForgetOptions {
                        ids: vec![id.clone()],
                        ..ForgetOptions::default()
                    },
                )
                .unwrap();
                model.remove(&id);
            }
            2 => {
                let opts = GcOptions {
                    dry_run: arg & 0x80 != 0,
                    repack_threshold: f64::from(arg % 3) / 2.0,
                };
                gc(&mut repo, &opts).unwrap();
            }
            _ => {
                if let Some(id) = model.keys().nth(usize::from(arg) % model.len().max(1)) {
                    assert_restores(&repo, id, &model[id]);
                }
            }
        }
    }
    for (id, bytes) in &model {
        assert_restores(&repo, id, bytes);
    }
    let report = check(&repo, &CheckOptions { read_data: true }).unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
});

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
            if i % 64 < 40 { b'a' + (x % 26) as u8 } else { (x >> 8) as u8 }
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
