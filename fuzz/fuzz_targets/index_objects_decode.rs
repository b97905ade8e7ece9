//! The decoder of index objects (`index/<hash>.idx`): any bytes are refused
//! or decoded, never a panic, and what decodes encodes back to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rewindb::crypto::Crypto;
use rewindb::repo::index_objects::{decode, encode, name_of};

fuzz_target!(|data: &[u8]| {
    // Named by their own hash, so the decoder itself is what is tried.
    if let Ok(packs) = decode(&name_of(data), data, &Crypto::plain()) {
        assert_eq!(encode(&packs), data);
    }
    // Under another name, nothing is accepted.
    assert!(decode("index/0.idx", data, &Crypto::plain()).is_err());
});
