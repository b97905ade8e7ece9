//! Arbitrary bytes as a pack: decoding returns an error or entries whose
//! frames lie inside the pack; decoding frames and blobs never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rewindb::repo::pack::{self, Compression};

fuzz_target!(|data: &[u8]| {
    let Ok(entries) = pack::decode_pack(data, &rewindb::crypto::Crypto::plain()) else {
        return;
    };
    let mut dctx = zstd::bulk::Decompressor::new().unwrap();
    for e in entries {
        let r = e.frame_range();
        assert!(r.end <= data.len() as u64);
        let stored = &data[r.start as usize..r.end as usize];
        if e.compression == Compression::ZstdDelta {
            let _ = pack::decode_delta_header(stored);
        } else if let Ok(frame) = pack::decode_frame(&mut dctx, e.compression, stored) {
            let _ = pack::blob_in_frame(&e, &frame, &rewindb::crypto::Crypto::plain());
        }
    }
});
