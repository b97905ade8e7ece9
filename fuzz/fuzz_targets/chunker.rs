//! The chunkers: chunks concatenate to the input, stay within bounds, and
//! re-synchronise after an insertion.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rewindb::chunker::{ChunkerParams, page_chunks};

fuzz_target!(|data: &[u8]| {
    let p = ChunkerParams {
        cdc_min: 64,
        cdc_avg: 256,
        cdc_max: 1024,
        page_chunk_min: 4096,
        pg_chunk: 65536,
    };
    let chunks: Vec<&[u8]> = p.cdc_chunks(data).collect();
    assert_eq!(chunks.concat(), data);
    for (i, c) in chunks.iter().enumerate() {
        assert!(c.len() <= 1024);
        assert!(i + 1 == chunks.len() || c.len() >= 64);
    }
    let pages: Vec<&[u8]> = page_chunks(data, 512, 2).collect();
    assert_eq!(pages.concat(), data);

    // An insertion a third of the way in: once the two chunkings share a cut
    // point after it, every later cut is shared (a cut depends only on the
    // bytes from the previous cut on), so the rest dedups.
    let ins_at = data.len() / 3;
    let ins_len = 1 + usize::from(data.first().copied().unwrap_or(0) % 16);
    let mut edited = data[..ins_at].to_vec();
    edited.extend(std::iter::repeat_n(0xA5u8, ins_len));
    edited.extend_from_slice(&data[ins_at..]);
    let ends = |d: &[u8]| -> Vec<usize> {
        let mut at = 0;
        p.cdc_chunks(d)
            .map(|c| {
                at += c.len();
                at
            })
            .collect()
    };
    let before = ends(data);
    let after: Vec<usize> = ends(&edited)
        .into_iter()
        .filter(|&e| e > ins_at + ins_len)
        .map(|e| e - ins_len)
        .collect();
    if let Some(&first) = before.iter().find(|e| **e > ins_at && after.contains(e)) {
        let tail = |v: &[usize]| {
            v.iter()
                .copied()
                .filter(|e| *e >= first)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            tail(&before),
            tail(&after),
            "cuts diverged after re-synchronising"
        );
    }
});
