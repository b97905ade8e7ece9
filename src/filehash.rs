//! A file's blake3, computed in pieces on several threads.
//!
//! BLAKE3 is a tree: a piece of `2^k` KiB that starts at a multiple of its own
//! length is a subtree of the whole input, so its chaining value can be
//! computed apart from the rest and merged in afterwards. Backup and restore
//! hash each batch of pages where they already are (on a worker thread) and
//! merge the batches' values at the end, instead of hashing every byte a second
//! time on one thread. The result is the plain `blake3` of the file, what
//! `b3sum` prints.

use blake3::hazmat::{
    ChainingValue, HasherExt, Mode, merge_subtrees_non_root, merge_subtrees_root,
};

/// One piece of the file: its chaining value, or its root hash when it turns
/// out to be the whole file.
#[derive(Clone, Copy, Debug)]
pub struct Piece {
    cv: ChainingValue,
    /// The piece hashed as a whole input, kept for the first piece only (the
    /// file is that piece alone when no second one follows).
    alone: Option<blake3::Hash>,
    len: u64,
    /// Whether the piece could be a subtree at its offset at all.
    fits: bool,
}

/// Hashes the piece of the file that starts at `offset`.
///
/// Every piece but the last must be `piece_len` bytes, a power of two of at
/// least 1 KiB, and `offset` a multiple of it; [`combine`] checks this.
pub fn piece(offset: u64, data: &[u8]) -> Piece {
    let len = data.len() as u64;
    if data.is_empty() {
        // No subtree is empty; an empty file is a root of its own.
        return Piece {
            cv: [0; 32],
            alone: (offset == 0).then(|| blake3::hash(data)),
            len,
            fits: offset == 0,
        };
    }
    // blake3 panics on a piece that cannot be a subtree; such a piece is
    // marked instead, and `combine` refuses it.
    let fits = offset.is_multiple_of(blake3::CHUNK_LEN as u64)
        && blake3::hazmat::max_subtree_len(offset).is_none_or(|max| len <= max);
    if !fits {
        return Piece {
            cv: [0; 32],
            alone: None,
            len,
            fits,
        };
    }
    let cv = blake3::Hasher::new()
        .set_input_offset(offset)
        .update(data)
        .finalize_non_root();
    let alone = (offset == 0).then(|| blake3::hash(data));
    Piece {
        cv,
        alone,
        len,
        fits,
    }
}

/// A piece hashed incrementally: `hasher` was made with
/// `set_input_offset(offset)` and fed the piece's `len` bytes. Never the
/// whole file: use [`piece`] or plain blake3 for a file of one piece.
pub fn piece_from_hasher(hasher: &blake3::Hasher, offset: u64, len: u64) -> Piece {
    let fits = len > 0
        && offset.is_multiple_of(blake3::CHUNK_LEN as u64)
        && blake3::hazmat::max_subtree_len(offset).is_none_or(|max| len <= max);
    Piece {
        cv: if fits {
            hasher.finalize_non_root()
        } else {
            [0; 32]
        },
        alone: None,
        len,
        fits,
    }
}

/// The blake3 of the whole file from its pieces, in order.
///
/// Returns `None` when the pieces do not tile a blake3 tree (unequal lengths
/// or a length that is not a power of two): a caller's bug, never the data's.
pub fn combine(pieces: &[Piece]) -> Option<blake3::Hash> {
    let (first, rest) = match pieces {
        [] => return Some(blake3::hash(b"")),
        [only] => return only.alone,
        [first, rest @ ..] => (first, rest),
    };
    let leaf = first.len;
    let (last, middle) = rest.split_last().expect("at least two pieces");
    let tiles = pieces.iter().all(|p| p.fits)
        && leaf.is_power_of_two()
        && leaf >= blake3::CHUNK_LEN as u64
        && middle.iter().all(|p| p.len == leaf)
        && (1..=leaf).contains(&last.len);
    if !tiles {
        return None;
    }
    let total = leaf * (pieces.len() as u64 - 1) + last.len;
    let split = blake3::hazmat::left_subtree_len(total);
    let at = (split / leaf) as usize;
    let left = merge(&pieces[..at], leaf, split);
    let right = merge(&pieces[at..], leaf, total - split);
    Some(merge_subtrees_root(&left, &right, Mode::Hash))
}

/// The chaining value of the subtree made of `pieces` (`len` bytes in all).
fn merge(pieces: &[Piece], leaf: u64, len: u64) -> ChainingValue {
    if let [only] = pieces {
        return only.cv;
    }
    let split = blake3::hazmat::left_subtree_len(len);
    let at = (split / leaf) as usize;
    merge_subtrees_non_root(
        &merge(&pieces[..at], leaf, split),
        &merge(&pieces[at..], leaf, len - split),
        Mode::Hash,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn in_pieces(data: &[u8], leaf: usize) -> Option<blake3::Hash> {
        let pieces: Vec<Piece> = data
            .chunks(leaf)
            .enumerate()
            .map(|(i, p)| piece((i * leaf) as u64, p))
            .collect();
        combine(&pieces)
    }

    #[test]
    fn edges_match_plain_blake3() {
        let data: Vec<u8> = (0..(1 << 16) + 1).map(|i| (i * 7 % 251) as u8).collect();
        for len in [
            0,
            1,
            1024,
            1025,
            4096,
            4097,
            8192,
            12288,
            1 << 16,
            (1 << 16) + 1,
        ] {
            for leaf in [1024, 4096, 8192] {
                let d = &data[..len];
                assert_eq!(
                    in_pieces(d, leaf),
                    Some(blake3::hash(d)),
                    "len {len} leaf {leaf}"
                );
            }
        }
    }

    #[test]
    fn pieces_that_do_not_tile_are_refused() {
        let a = piece(0, &[1; 3000]);
        let b = piece(3000, &[2; 3000]);
        assert!(combine(&[a, b]).is_none());
        let a = piece(0, &[1; 1024]);
        let b = piece(1024, &[2; 4096]); // too long for a subtree at 1024
        assert!(combine(&[a, b]).is_none());
    }

    proptest! {
        #[test]
        fn any_length_matches_plain_blake3(len in 0usize..200_000, shift in 0u32..5) {
            let data: Vec<u8> = (0..len).map(|i| (i * 31 % 253) as u8).collect();
            let leaf = 1024 << shift;
            prop_assert_eq!(in_pieces(&data, leaf), Some(blake3::hash(&data)));
        }
    }
}
