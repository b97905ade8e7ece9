//! Arbitrary bytes as an index record (the 18-byte location after the pack
//! id): decoding returns an error or an entry that encodes back to the same
//! bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rewindb::id::ChunkId;
use rewindb::repo::pack::BlobEntry;

fuzz_target!(|data: &[u8]| {
    let Ok(record) = <[u8; 18]>::try_from(data) else {
        return;
    };
    let Ok(entry) = BlobEntry::decode_location(ChunkId([7; 32]), &record) else {
        return;
    };
    let mut again = [0u8; 18];
    entry.encode_location(&mut again);
    assert_eq!(again, record);
    let _ = entry.frame_range();
});
