//! The decoders of an encrypted repository: key objects (`keys/<id>.json`),
//! sealed messages and encrypted packs. Any bytes are refused or decoded,
//! never a panic; nothing opens without the key that sealed it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rewindb::crypto::{Crypto, MasterKeys, aad, keys};
use rewindb::repo::pack;

fuzz_target!(|data: &[u8]| {
    let _ = keys::decode(data);
    let crypto = Crypto::new(&MasterKeys::from_bytes([7; 64]));
    for kind in [aad::FRAME, aad::PACK_TABLE, aad::SNAPSHOT, aad::GC, aad::INDEX_OBJECT] {
        // Arbitrary bytes forge no message (the odds are 2^-128).
        assert!(crypto.open(kind, data).is_err());
    }
    if let Ok(entries) = pack::decode_pack(data, &crypto) {
        for e in entries {
            let r = e.frame_range();
            let _ = pack::open_frame(&crypto, &data[r.start as usize..r.end as usize]);
        }
    }
    // What is sealed opens to the same bytes.
    let sealed = crypto.seal(aad::FRAME, data);
    assert_eq!(crypto.open(aad::FRAME, &sealed).unwrap().as_ref(), data);
});
