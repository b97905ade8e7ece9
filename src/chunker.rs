//! Cutting bytes into chunks: page-aligned for page-structured files, FastCDC for the rest.
//!
//! The chunker never touches the filesystem: it sees byte slices and returns
//! slices of them. [`ChunkerParams`] is recorded in the repository's config at
//! `init` so that every later run cuts the same way (see `docs/format.md`).
//!
//! Why page-aligned: a database changes in pages. When one 4 KiB page of a 1 GiB
//! SQLite file changes, a content-defined chunker with a 1 MiB average re-stores
//! about 1 MiB; cutting on page boundaries re-stores about one page.

use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkerParams {
    /// FastCDC (2020 variant, normalization level 1) sizes in bytes, for data
    /// without page structure: manifests and streams.
    pub cdc_min: u32,
    pub cdc_avg: u32,
    pub cdc_max: u32,
    /// Page-structured files (SQLite) are cut on page boundaries into chunks
    /// of whole pages, as few pages as reach this many bytes (one page when
    /// the page size is at least this). 64 KiB in new local repositories: a
    /// changed chunk is stored as its delta from the previous version, so a
    /// changed page still costs about a page, while a 1 GiB database has
    /// 16,384 chunks to index, list and hash instead of 262,144
    /// (`docs/benchmarks.md`, "Chunks of 64 KiB"). 4 KiB in a bucket, where
    /// changed chunks are stored whole (`Config::new`), and in repositories
    /// made before.
    pub page_chunk_min: u32,
    /// PostgreSQL files (8 KiB pages) are cut into chunks of this many bytes:
    /// a multiple of the page, a power of two. A changed page still costs
    /// about a page, because a changed chunk is stored as its delta from the
    /// chunk at the same place in the previous base backup; a chunk of
    /// several pages costs one index entry, one manifest id and one delta
    /// header instead of one per page. Repositories made before this
    /// parameter existed cut single pages.
    #[serde(default = "single_pg_page")]
    pub pg_chunk: u32,
}

/// `pg_chunk` of repositories made before it was recorded.
fn single_pg_page() -> u32 {
    8192
}

impl Default for ChunkerParams {
    fn default() -> Self {
        ChunkerParams {
            cdc_min: 16 * 1024,
            cdc_avg: 64 * 1024,
            cdc_max: 256 * 1024,
            page_chunk_min: 64 * 1024,
            pg_chunk: 64 * 1024,
        }
    }
}

impl ChunkerParams {
    /// Checks the parameters are within what the chunkers accept.
    pub fn validate(&self) -> Result<(), String> {
        use fastcdc::v2020::{AVERAGE_MAX, AVERAGE_MIN, MAXIMUM_MAX, MINIMUM_MIN};
        let (min, avg, max) = (
            self.cdc_min as usize,
            self.cdc_avg as usize,
            self.cdc_max as usize,
        );
        let cdc_ok = min >= MINIMUM_MIN
            && min <= avg
            && avg <= max
            && (AVERAGE_MIN..=AVERAGE_MAX).contains(&avg)
            && max <= MAXIMUM_MAX;
        let power_of_two_in = |v: u32, lo: u32| (lo..=1 << 20).contains(&v) && v.is_power_of_two();
        let problem = if !cdc_ok {
            format!(
                "cdc_min {min}, cdc_avg {avg}, cdc_max {max} must be ordered, with the \
                 average from {AVERAGE_MIN} to {AVERAGE_MAX}"
            )
        } else if !power_of_two_in(self.page_chunk_min, 512) {
            format!(
                "page_chunk_min {} must be a power of two from 512 to 1048576",
                self.page_chunk_min
            )
        } else if !power_of_two_in(self.pg_chunk, single_pg_page()) {
            format!(
                "pg_chunk {} must be a power of two from 8192 to 1048576",
                self.pg_chunk
            )
        } else {
            return Ok(());
        };
        Err(format!(
            "chunker: {problem}; init writes these and later runs must cut the same way, so \
             put back the value the repository was made with"
        ))
    }

    /// How many pages of `page_size` bytes go into one chunk.
    ///
    /// ```
    /// let p = rewindb::chunker::ChunkerParams::default();
    /// assert_eq!(p.pages_per_chunk(4096), 16); // 64 KiB chunks of whole pages
    /// assert_eq!(p.pages_per_chunk(65536), 1);
    /// ```
    pub fn pages_per_chunk(&self, page_size: u32) -> usize {
        (self.page_chunk_min / page_size.max(1)).max(1) as usize
    }

    /// Cuts `data` into content-defined chunks. The slices cover `data` in order.
    pub fn cdc_chunks<'a>(&self, data: &'a [u8]) -> impl Iterator<Item = &'a [u8]> + 'a {
        fastcdc::v2020::FastCDC::new(
            data,
            self.cdc_min as usize,
            self.cdc_avg as usize,
            self.cdc_max as usize,
        )
        .map(move |c| &data[c.offset..c.offset + c.length])
    }
}

/// Cuts a buffer of whole pages into chunks of `pages_per_chunk` pages; the
/// last chunk may be shorter.
pub fn page_chunks(
    data: &[u8],
    page_size: usize,
    pages_per_chunk: usize,
) -> impl Iterator<Item = &[u8]> {
    data.chunks(page_size * pages_per_chunk)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    #[test]
    fn default_params_are_valid() {
        ChunkerParams::default().validate().unwrap();
        let bad = ChunkerParams {
            cdc_min: 1,
            ..ChunkerParams::default()
        };
        assert!(bad.validate().is_err());
    }

    #[test]
    fn pages_per_chunk_groups_small_pages_only() {
        // As buckets and repositories made before 64 KiB chunks cut them.
        let p = ChunkerParams {
            page_chunk_min: 4096,
            ..ChunkerParams::default()
        };
        assert_eq!(p.pages_per_chunk(512), 8);
        assert_eq!(p.pages_per_chunk(1024), 4);
        assert_eq!(p.pages_per_chunk(4096), 1);
        assert_eq!(p.pages_per_chunk(65536), 1);
    }

    #[test]
    fn sqlite_chunks_are_64_kib_of_whole_pages_in_new_repositories() {
        let p = ChunkerParams::default();
        assert_eq!(p.pages_per_chunk(512), 128);
        assert_eq!(p.pages_per_chunk(4096), 16);
        assert_eq!(p.pages_per_chunk(65536), 1);
    }

    #[test]
    fn postgres_chunks_are_64_kib_in_new_repositories_and_one_page_in_older_ones() {
        assert_eq!(ChunkerParams::default().pg_chunk, 65536);
        let older = r#"{"cdc_min":16384,"cdc_avg":65536,"cdc_max":262144,"page_chunk_min":4096}"#;
        let p: ChunkerParams = serde_json::from_str(older).unwrap();
        assert_eq!(p.pg_chunk, 8192);
        assert!(p.validate().is_ok());
        for bad in [4096, 3 * 8192, 2 << 20] {
            let p = ChunkerParams {
                pg_chunk: bad,
                ..ChunkerParams::default()
            };
            let err = p.validate().expect_err("out of range");
            assert!(err.contains(&format!("pg_chunk {bad} must be")), "{err}");
        }
    }

    #[test]
    fn changing_one_page_changes_one_page_chunk() {
        let page = 4096;
        let a = pseudo_random(page * 64, 7);
        let mut b = a.clone();
        b[page * 10 + 100] ^= 0xff;
        let ca: Vec<_> = page_chunks(&a, page, 1).collect();
        let cb: Vec<_> = page_chunks(&b, page, 1).collect();
        assert_eq!(ca.len(), 64);
        let differing: Vec<usize> = (0..64).filter(|&i| ca[i] != cb[i]).collect();
        assert_eq!(differing, vec![10]);
    }

    #[test]
    fn cdc_resynchronises_after_an_insertion() {
        let p = ChunkerParams::default();
        let a = pseudo_random(4 << 20, 3);
        let mut b = a.clone();
        b.splice(1_000_000..1_000_000, pseudo_random(777, 9));
        let ca: std::collections::HashSet<&[u8]> = p.cdc_chunks(&a).collect();
        let cb: Vec<&[u8]> = p.cdc_chunks(&b).collect();
        let new_bytes: usize = cb
            .iter()
            .filter(|c| !ca.contains(*c))
            .map(|c| c.len())
            .sum();
        // Only the chunk(s) around the insertion are new.
        assert!(new_bytes <= 2 * p.cdc_max as usize, "{new_bytes} new bytes");
    }

    proptest! {
        #[test]
        fn cdc_chunks_cover_input_within_bounds(len in 0usize..600_000, seed in any::<u64>()) {
            let p = ChunkerParams::default();
            let data = pseudo_random(len, seed);
            let chunks: Vec<&[u8]> = p.cdc_chunks(&data).collect();
            prop_assert_eq!(chunks.concat(), data.clone());
            for (i, c) in chunks.iter().enumerate() {
                prop_assert!(c.len() <= p.cdc_max as usize);
                if i + 1 < chunks.len() {
                    prop_assert!(c.len() >= p.cdc_min as usize);
                }
            }
        }

        #[test]
        fn page_chunks_cover_input_aligned(pages in 0usize..50, per in 1usize..5) {
            let data = pseudo_random(pages * 1024, 5);
            let chunks: Vec<&[u8]> = page_chunks(&data, 1024, per).collect();
            prop_assert_eq!(chunks.concat(), data.clone());
            for c in &chunks[..chunks.len().saturating_sub(1)] {
                prop_assert_eq!(c.len(), 1024 * per);
            }
        }
    }
}
