//! Arbitrary bytes as a WAL file name, a WAL segment's first page, or a WAL
//! archive file: an error or a value, never a panic, never an allocation
//! beyond what the bytes decode to.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rewindb::repo::wal::{WalName, decode_archived, segment_header};

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(name) = WalName::parse(text)
    {
        // A parsed name prints back as itself.
        assert_eq!(name.as_str(), text);
        let _ = name.segno(16 << 20);
    }
    if let Ok(header) = segment_header(data) {
        assert!(header.seg_size.is_power_of_two());
    }
    if let Ok((header, raw)) = decode_archived(data) {
        assert_eq!(raw.len() as u64, header.raw_len);
    }
});
