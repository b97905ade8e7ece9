//! The chunkers: chunks concatenate to the input and stay within bounds.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rewindb::chunker::{ChunkerParams, page_chunks};

fuzz_target!(|data: &[u8]| {
    let p = ChunkerParams {
        cdc_min: 64,
        cdc_avg: 256,
        cdc_max: 1024,
        page_chunk_min: 4096,
    };
    let chunks: Vec<&[u8]> = p.cdc_chunks(data).collect();
    assert_eq!(chunks.concat(), data);
    for (i, c) in chunks.iter().enumerate() {
        assert!(c.len() <= 1024);
        assert!(i + 1 == chunks.len() || c.len() >= 64);
    }
    let pages: Vec<&[u8]> = page_chunks(data, 512, 2).collect();
    assert_eq!(pages.concat(), data);
});
