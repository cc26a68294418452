//! What a new subscription costs on disk: one durable insert into a full cache of 100, 10,000 and
//! 100,000 entries. The file format (one JSON array) forces rewriting the whole file on every
//! change, so this grows with the cache; renewals never write (they only read the in-memory map).

use std::hint::black_box;
use std::path::Path;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use stripe_licensespring::cache::{CacheEntry, SubscriptionCache};
use stripe_licensespring::model::{IntervalUnit, LicenseId, LicenseKey, SubscriptionId};

const SIZES: [usize; 3] = [100, 10_000, 100_000];

/// An entry as long as a real one: 28-character subscription id, 19-character key, 16-digit id.
fn entry(n: usize) -> CacheEntry {
    CacheEntry::new(
        SubscriptionId(format!("sub_1Bench{n:018}")),
        LicenseKey(format!("BNCH-{n:014}")),
        IntervalUnit::Month,
        LicenseId(1_764_000_000_500_001 + n as i64),
    )
}

/// A cache file holding `size` entries, opened with capacity `size`: every insert then drops the
/// oldest entry, so the file keeps its size for the whole measurement.
fn full_cache(dir: &Path, size: usize) -> SubscriptionCache {
    let path = dir.join("cache.json");
    let entries: Vec<CacheEntry> = (0..size).map(entry).collect();
    std::fs::write(&path, serde_json::to_vec(&entries).expect("entries serialize")).expect("cache file");
    SubscriptionCache::open(&path, size).expect("the cache opens")
}

fn durable_insert(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
    let mut group = c.benchmark_group("cache insert (durable, whole file)");
    // Each insert of the largest size takes tens of milliseconds: few samples keep `cargo bench` short.
    group.sample_size(10).warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(3));
    for size in SIZES {
        let dir = tempfile::tempdir().expect("temp dir");
        let cache = full_cache(dir.path(), size);
        let mut next = size;
        group.bench_with_input(BenchmarkId::from_parameter(size), &size, |b, _| {
            b.iter(|| {
                next += 1;
                runtime.block_on(cache.insert(black_box(entry(next)))).expect("insert")
            })
        });
    }
    group.finish();
}

criterion_group!(benches, durable_insert);
criterion_main!(benches);
