//! The chunk → hash → compress path on page-sized chunks, as `backup` runs it:
//! blake3 of each 4 KiB page, pages compressed together in 64 KiB zstd frames,
//! and a changed page delta-encoded against its previous version.
//!
//! `cargo bench --bench chunk_path`

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rewindb::id::ChunkId;
use rewindb::repo::pack::delta_dictionary;

const PAGE: usize = 4096;

/// Pages of text-like rows, compressing about like the benchmark database.
fn pages(n: usize) -> Vec<u8> {
    let words = [
        "alpha", "order", "shipped", "user", "balance", "42", "note", "the",
    ];
    let mut x = 0x9e3779b97f4a7c15u64;
    let mut out = Vec::with_capacity(n * PAGE);
    while out.len() < n * PAGE {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(words[(x % 8) as usize].as_bytes());
        out.extend_from_slice(&x.to_le_bytes()[..(x % 5) as usize]);
    }
    out.truncate(n * PAGE);
    out
}

fn chunk_path(c: &mut Criterion) {
    let data = pages(4096); // 16 MiB
    let mut g = c.benchmark_group("chunk_path");
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.sample_size(10);
    g.bench_function("blake3 per 4 KiB page", |b| {
        b.iter(|| data.chunks(PAGE).map(ChunkId::of).count())
    });
    g.bench_function("zstd-3 in 64 KiB frames", |b| {
        let mut z = zstd::bulk::Compressor::new(3).unwrap();
        b.iter(|| {
            data.chunks(64 * 1024)
                .map(|f| z.compress(f).unwrap().len())
                .sum::<usize>()
        })
    });
    g.bench_function("hash + frame compress", |b| {
        let mut z = zstd::bulk::Compressor::new(3).unwrap();
        b.iter(|| {
            let mut stored = 0;
            for frame in data.chunks(64 * 1024) {
                let ids = frame.chunks(PAGE).map(ChunkId::of).count();
                stored += z.compress(frame).unwrap().len() + ids;
            }
            stored
        })
    });
    g.finish();

    // A page with one row changed, encoded against its previous version.
    let base = &data[..PAGE];
    let mut changed = base.to_vec();
    changed[1000..1100].copy_from_slice(&data[PAGE + 7..PAGE + 107]);
    let mut g = c.benchmark_group("delta");
    g.throughput(Throughput::Bytes(PAGE as u64));
    g.bench_function("encode one changed page", |b| {
        let mut cctx = zstd::zstd_safe::CCtx::create();
        b.iter(|| {
            let dict = delta_dictionary(base);
            let mut out = Vec::with_capacity(PAGE + 64);
            cctx.compress_using_dict(&mut out, &changed, &dict, 1)
                .unwrap();
            out.len()
        })
    });
    g.finish();
}

criterion_group!(benches, chunk_path);
criterion_main!(benches);
