//! The writer, reader, index and delta code on the in-memory storage: no
//! directory, no fsync, the same code paths a local repository takes.

use std::sync::Arc;
use std::time::Duration;

use super::delta::{DeltaEncoder, FAST_LEVEL};
use super::pack::BlobKind;
use super::reader::BlobReader;
use super::storage::memory::Memory;
use super::writer::BlobWriter;
use super::*;
use crate::crypto::Crypto;
use crate::id::ChunkId;

fn memory_repo() -> (Memory, tempfile::TempDir, Repository) {
    let mem = Memory::new();
    let index = tempfile::tempdir().unwrap();
    Repository::init_in(&mem, index.path(), NewRepository::Plain).unwrap();
    let repo = Repository::open_in(
        Arc::new(mem.clone()),
        index.path(),
        OpenOptions {
            lock: Some(LockMode::Exclusive),
            lock_wait: Duration::from_secs(1),
        },
    )
    .unwrap();
    (mem, index, repo)
}

/// A 4 KiB page of text-like bytes, different per `salt`.
fn page(salt: u8) -> Vec<u8> {
    let mut page = vec![0u8; 4096];
    blake3::Hasher::new()
        .update(&[salt])
        .finalize_xof()
        .fill(&mut page);
    page.iter_mut().for_each(|b| *b = b'a' + *b % 26);
    page
}

#[test]
fn blobs_are_stored_once_and_read_back_verified() {
    let (mem, _index, repo) = memory_repo();
    let mut writer = BlobWriter::new(&repo).unwrap();
    let a = writer.add(BlobKind::Data, &page(1)).unwrap();
    let b = writer.add(BlobKind::Data, &page(2)).unwrap();
    assert_eq!(writer.add(BlobKind::Data, &page(1)).unwrap(), a);
    let stats = writer.commit().unwrap();
    assert_eq!((stats.chunks, stats.chunks_new), (3, 2));
    // One pack object, listed with its size, and in the index.
    let packs = repo.pack_files().unwrap();
    assert_eq!(packs.len(), 1);
    assert_eq!(repo.index().unwrap().packs().unwrap(), packs);
    assert!(mem.list("packs/").unwrap()[0].name.ends_with(".pack"));
    let mut reader = BlobReader::new(&repo).unwrap();
    assert_eq!(reader.read(&a).unwrap(), page(1));
    assert_eq!(reader.read(&b).unwrap(), page(2));
    // A second writer finds both in the index and stores nothing.
    let mut writer = BlobWriter::new(&repo).unwrap();
    writer.add(BlobKind::Data, &page(2)).unwrap();
    assert_eq!(writer.commit().unwrap().chunks_new, 0);
    assert_eq!(repo.pack_files().unwrap().len(), 1);
}

#[test]
fn deltas_read_back_through_their_base() {
    let (_mem, _index, repo) = memory_repo();
    let base = page(1);
    let mut writer = BlobWriter::new(&repo).unwrap();
    let base_id = writer.add(BlobKind::Data, &base).unwrap();
    writer.commit().unwrap();
    let mut changed = base.clone();
    changed[100..120].copy_from_slice(b"twenty changed bytes");
    let id = ChunkId::of(&changed);
    let delta = DeltaEncoder::new(&repo, FAST_LEVEL)
        .unwrap()
        .encode(id, &changed, base_id)
        .unwrap()
        .expect("a small change pays as a delta");
    assert!(delta.len() < 200, "{} bytes", delta.len());
    let mut writer = BlobWriter::new(&repo).unwrap();
    writer.add_with_base(id, &changed, Some(delta)).unwrap();
    assert_eq!(writer.commit().unwrap().chunks_delta, 1);
    let mut reader = BlobReader::new(&repo).unwrap();
    assert_eq!(reader.read_with_depth(&id).unwrap(), (changed, 1));
}

#[test]
fn damaged_packs_are_errors_that_name_them() {
    let (mem, _index, repo) = memory_repo();
    let mut writer = BlobWriter::new(&repo).unwrap();
    let id = writer.add(BlobKind::Data, &page(3)).unwrap();
    writer.commit().unwrap();
    let name = mem.list("packs/").unwrap()[0].name.clone();
    let mut bytes = mem.get(&name).unwrap();
    bytes[10] ^= 0xff; // inside the first frame
    mem.tamper(&name, bytes);
    let err = BlobReader::new(&repo).unwrap().read(&id).unwrap_err();
    assert!(matches!(err, RepoError::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains(&name), "{err}");
    // Gone altogether: the pack is missing, by name.
    mem.delete(&name).unwrap();
    let err = BlobReader::new(&repo).unwrap().read(&id).unwrap_err();
    assert!(matches!(err, RepoError::PackMissing { .. }), "{err}");
}

#[test]
fn the_index_is_rebuilt_from_the_pack_tables() {
    let (_mem, index_dir, mut repo) = memory_repo();
    let mut writer = BlobWriter::new(&repo).unwrap();
    let ids: Vec<ChunkId> = (0..20)
        .map(|i| writer.add(BlobKind::Data, &page(i)).unwrap())
        .collect();
    writer.commit().unwrap();
    let before = repo.index().unwrap().view().unwrap().all().unwrap();
    // An empty index in its place, then the repair.
    repo.replace_index(|_| Ok(())).unwrap();
    assert!(
        repo.index()
            .unwrap()
            .view()
            .unwrap()
            .all()
            .unwrap()
            .is_empty()
    );
    let report = crate::commands::maintenance::repair_index(&mut repo).unwrap();
    assert_eq!(report.chunks_indexed, 20);
    assert_eq!(repo.index().unwrap().view().unwrap().all().unwrap(), before);
    let mut reader = BlobReader::new(&repo).unwrap();
    for (i, id) in ids.iter().enumerate() {
        assert_eq!(reader.read(id).unwrap(), page(i as u8));
    }
    // The rebuild happened beside the index and left nothing behind.
    assert!(index_dir.path().join("index.redb").is_file());
    assert!(!index_dir.path().join(INDEX_REBUILD_FILE).exists());
}

#[test]
fn snapshots_markers_and_gc_time_are_objects() {
    let (mem, _index, repo) = memory_repo();
    let snap = snapshot::Snapshot {
        version: snapshot::SNAPSHOT_VERSION,
        time: jiff::Timestamp::from_second(1_700_000_000).unwrap(),
        source: snapshot::SourceKind::Sqlite,
        label: Some("x".into()),
        name: None,
        hostname: "test".into(),
        files: Vec::new(),
        stats: Default::default(),
        postgres: None,
        stream: None,
    };
    let id = repo.commit_snapshot(&snap).unwrap();
    assert_eq!(
        repo.commit_snapshot(&snap).unwrap(),
        id,
        "committing again is the same"
    );
    let list = repo.snapshots().unwrap();
    assert_eq!(list.ok.len(), 1);
    repo.set_protected(&id, true).unwrap();
    repo.set_protected(&id, true).unwrap();
    assert!(repo.protected().unwrap().contains(&id));
    repo.set_protected(&id, false).unwrap();
    assert!(repo.protected().unwrap().is_empty());
    assert_eq!(repo.last_gc().unwrap(), None);
    let t = jiff::Timestamp::from_second(1_800_000_000).unwrap();
    repo.record_gc(t).unwrap();
    repo.record_gc(t).unwrap();
    assert_eq!(repo.last_gc().unwrap(), Some(t));
    // A damaged snapshot object is listed as damaged, not skipped or
    // trusted, by what check reads; the listing of the other commands reads
    // the copy this machine cached (checked against its id) and no request.
    mem.tamper(&storage::snapshot_name(&id), b"{".to_vec());
    assert_eq!(repo.snapshots().unwrap().ok.len(), 1);
    let list = repo.snapshots_as_stored().unwrap();
    assert_eq!((list.ok.len(), list.damaged.len()), (0, 1));
    repo.remove_snapshot(&id).unwrap();
    assert!(repo.snapshots().unwrap().damaged.is_empty());
}

/// A repository on `Faulty(Memory)` whose writers upload from `threads`
/// threads, with 64 KiB packs so that a few hundred pages fill many.
fn uploading_repo(threads: usize) -> (Arc<storage::fault::Faulty>, tempfile::TempDir, Repository) {
    let (faulty, index, repo, _) = uploading_repo_as(threads, false);
    (faulty, index, repo)
}

/// As [`uploading_repo`], optionally remote; also the memory beneath.
fn uploading_repo_as(
    threads: usize,
    remote: bool,
) -> (
    Arc<storage::fault::Faulty>,
    tempfile::TempDir,
    Repository,
    Memory,
) {
    let mem = Memory::new();
    let index = tempfile::tempdir().unwrap();
    Repository::init_in(&mem, index.path(), NewRepository::Plain).unwrap();
    let config = String::from_utf8(mem.get("config.json").unwrap()).unwrap();
    let small = config
        .replace(
            "\"pack_target_bytes\": 16777216",
            "\"pack_target_bytes\": 65536",
        )
        .replace(
            "\"frame_target_bytes\": 1048576",
            "\"frame_target_bytes\": 16384",
        );
    assert_ne!(small, config);
    mem.replace("config.json", small.as_bytes()).unwrap();
    let mut faulty =
        storage::fault::Faulty::new(Arc::new(mem.clone())).with_parallel_uploads(threads);
    if remote {
        faulty = faulty.as_remote();
    }
    let faulty = Arc::new(faulty);
    let repo = Repository::open_in(
        faulty.clone(),
        index.path(),
        OpenOptions {
            lock: Some(LockMode::Exclusive),
            lock_wait: Duration::from_secs(1),
        },
    )
    .unwrap();
    (faulty, index, repo, mem)
}

#[test]
fn packs_uploaded_in_parallel_are_all_stored_and_indexed() {
    let (faulty, _index, repo) = uploading_repo(3);
    let mut writer = BlobWriter::new(&repo).unwrap();
    let ids: Vec<ChunkId> = (0..200)
        .map(|i| writer.add(BlobKind::Data, &page(i)).unwrap())
        .collect();
    writer.commit().unwrap();
    let packs = repo.pack_files().unwrap();
    assert!(packs.len() >= 5, "{} packs", packs.len());
    assert_eq!(faulty.writes(), packs.len() as u64);
    assert_eq!(repo.index().unwrap().packs().unwrap(), packs);
    let mut reader = BlobReader::new(&repo).unwrap();
    for (i, id) in ids.iter().enumerate() {
        assert_eq!(reader.read(id).unwrap(), page(i as u8));
    }
}

#[test]
fn a_failed_parallel_upload_fails_the_commit_and_indexes_nothing() {
    let (faulty, _index, repo) = uploading_repo(3);
    faulty.inject(2, storage::fault::Fault::Fail);
    let mut writer = BlobWriter::new(&repo).unwrap();
    let written: Result<Vec<ChunkId>, RepoError> = (0..200)
        .map(|i| writer.add(BlobKind::Data, &page(i)))
        .collect();
    // The failure surfaces at a later hand-over or at the commit.
    let err = match written {
        Err(e) => e,
        Ok(_) => writer.commit().unwrap_err(),
    };
    assert!(err.to_string().contains("injected write failure"), "{err}");
    assert!(repo.index().unwrap().packs().unwrap().is_empty());
    // The next writer stores everything (the stray packs are gc's).
    let mut writer = BlobWriter::new(&repo).unwrap();
    let ids: Vec<ChunkId> = (0..200)
        .map(|i| writer.add(BlobKind::Data, &page(i)).unwrap())
        .collect();
    writer.commit().unwrap();
    let mut reader = BlobReader::new(&repo).unwrap();
    for (i, id) in ids.iter().enumerate() {
        assert_eq!(reader.read(id).unwrap(), page(i as u8));
    }
}

#[test]
fn a_cold_cache_is_built_from_index_objects_without_reading_packs() {
    use crate::repo::index::Index;
    use crate::repo::{index_objects, rebuild};
    let (faulty, _index, repo, inner) = uploading_repo_as(2, true);
    let mut writer = BlobWriter::new(&repo).unwrap();
    let ids: Vec<ChunkId> = (0..120)
        .map(|i| writer.add(BlobKind::Data, &page(i)).unwrap())
        .collect();
    writer.commit().unwrap();
    // A second run stores changed pages as deltas against the first's.
    let mut encoder = DeltaEncoder::new(&repo, FAST_LEVEL).unwrap();
    let mut writer = BlobWriter::new(&repo).unwrap();
    for (i, base) in ids.iter().enumerate().take(30) {
        let mut changed = page(i as u8);
        changed[100..110].copy_from_slice(b"0123456789");
        let id = ChunkId::of(&changed);
        let delta = encoder.encode(id, &changed, *base).unwrap();
        writer.add_with_base(id, &changed, delta).unwrap();
    }
    assert!(writer.stats().chunks_delta > 0);
    writer.commit().unwrap();
    let objects = faulty.list(index_objects::PREFIX).unwrap();
    assert_eq!(objects.len(), 2, "one index object per run");
    let expected = {
        let mut all = repo.index().unwrap().view().unwrap().all().unwrap();
        all.sort_by_key(|(p, e)| (*p, e.id));
        all
    };
    let rebuilt = |dir: &std::path::Path| {
        let index = Index::create(&dir.join("index.redb")).unwrap();
        let report = rebuild::rebuild(faulty.as_ref(), &Crypto::plain(), &index, true).unwrap();
        let mut all = index.view().unwrap().all().unwrap();
        all.sort_by_key(|(p, e)| (*p, e.id));
        (report, all)
    };
    // Every pack's bytes replaced by garbage of the same size: only index
    // objects can still describe them, and they do, deltas and all.
    let packs = repo.pack_files().unwrap();
    let originals: Vec<(String, Vec<u8>)> = packs
        .iter()
        .map(|(id, len)| {
            let name = storage::pack_name(id);
            let bytes = inner.get(&name).unwrap();
            inner.tamper(&name, vec![0xee; *len as usize]);
            (name, bytes)
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let (report, all) = rebuilt(dir.path());
    assert_eq!(all, expected);
    assert_eq!(report.deltas_dropped, 0);
    // A damaged index object is skipped: its packs are read from their own
    // tables (here restored), with the same result.
    for (name, bytes) in &originals {
        inner.tamper(name, bytes.clone());
    }
    inner.tamper(&objects[0].name, b"RWDBIDX1 damaged".to_vec());
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(rebuilt(dir.path()).1, expected);
    // gc's pruning keeps an object while one of its packs lives.
    let live: std::collections::HashSet<_> = packs.iter().map(|(id, _)| *id).collect();
    assert_eq!(
        repo.prune_index_objects(&live).unwrap(),
        1,
        "the damaged one"
    );
    assert_eq!(repo.prune_index_objects(&Default::default()).unwrap(), 1);
    assert!(faulty.list(index_objects::PREFIX).unwrap().is_empty());
}

#[test]
fn index_objects_round_trip_and_refuse_damage() {
    use crate::repo::index_objects::{PackTable, decode, encode, name_of};
    let (_mem, _index, repo) = memory_repo();
    let mut writer = BlobWriter::new(&repo).unwrap();
    for i in 0..40 {
        writer.add(BlobKind::Data, &page(i)).unwrap();
    }
    writer.commit().unwrap();
    let view = repo.index().unwrap().view().unwrap();
    let (pack, len) = repo.pack_files().unwrap()[0];
    let entries: Vec<_> = view.all().unwrap().into_iter().map(|(_, e)| e).collect();
    let table = PackTable {
        id: pack,
        len,
        entries,
        bases: Default::default(),
    };
    let bytes = encode(std::slice::from_ref(&table));
    assert_eq!(
        decode(&name_of(&bytes), &bytes, &Crypto::plain()).unwrap(),
        vec![table.clone()]
    );
    // Any changed byte, a cut, or a wrong name is refused.
    let mut flipped = bytes.clone();
    flipped[20] ^= 1;
    assert!(decode(&name_of(&bytes), &flipped, &Crypto::plain()).is_err());
    let cut = &bytes[..bytes.len() - 7];
    assert!(decode(&name_of(cut), cut, &Crypto::plain()).is_err());
    // An entry past the end of its pack is refused.
    let short = PackTable { len: 100, ..table };
    let bytes = encode(&[short]);
    assert!(decode(&name_of(&bytes), &bytes, &Crypto::plain()).is_err());
}
