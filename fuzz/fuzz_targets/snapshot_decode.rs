//! Arbitrary bytes as a snapshot file or a manifest: an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rewindb::id::SnapshotId;
use rewindb::repo::snapshot::{Snapshot, decode_manifest};

fuzz_target!(|data: &[u8]| {
    let _ = Snapshot::decode(&SnapshotId::of(data), data, &rewindb::crypto::Crypto::plain());
    if let Ok(ids) = decode_manifest(data, (data.len() / 32) as u64) {
        assert_eq!(ids.len() * 32, data.len());
    }
});
