//! Random access to a recovery point (`PointReader`, issue 12): a large sparse disk whose
//! allocated chunks (half text-like, half random) are spread evenly over it.
//!
//! Measures, on the local chunk store:
//! - the first 4 KiB of a cold chunk (not in the chunk cache): with the chunk file in the
//!   page cache, and with it dropped from there (`posix_fadvise(DONTNEED)`, this file only);
//!   median and worst of the sample;
//! - random 4 KiB reads warm (a working set that fits the chunk cache, loaded first), from
//!   one thread and from four;
//! - random 4 KiB reads over the whole disk (mostly holes; the chunks mostly not cached);
//! - a sequential scan of the same chunks laid out one after the other, in 128 KiB reads,
//!   with and without read-ahead.
//!
//! Goals (issue 12): ≥ 20,000 random 4 KiB reads/s warm; the first byte of a cold chunk in
//! < 5 ms.
//!
//! The chunk store is a format 2 one, encrypted as vmvault makes them (`VMVAULT_BENCH_PLAIN=1`:
//! not encrypted).
//!
//! Run: `cargo bench --bench point_reader`. Settings from the environment:
//! `VMVAULT_BENCH_DIR` (default: the system temp folder), `VMVAULT_BENCH_DISK_GIB` (disk
//! size, default 64), `VMVAULT_BENCH_MIB` (allocated data, default 512),
//! `VMVAULT_BENCH_CHUNK_KIB` (default 1024), `VMVAULT_BENCH_READS` (random reads per
//! measurement, default 200000).

#[path = "support/image.rs"]
mod disk_image;

use disk_image::{fill_random, fill_text, Rng, MIB};
use std::fs::{self, File};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use vmvault::vault::store::{
    ChunkCache, DataFormat, Digest, DiskIndex, PointReader, ReaderOptions, Vault,
};

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Drops chunk `d`'s file from the page cache.
fn drop_from_page_cache(store: &Vault, d: &Digest) {
    if let Ok(f) = File::open(store.path_of(d)) {
        // SAFETY: advice on a descriptor we own; no memory is passed.
        unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Median and worst of `times`.
fn median_max(mut times: Vec<Duration>) -> (f64, f64) {
    times.sort_unstable();
    let mid = times.get(times.len() / 2).copied().unwrap_or_default();
    (ms(mid), ms(times.last().copied().unwrap_or_default()))
}

/// `n` random 4 KiB reads from each of `threads` threads at offsets `pick` chooses; reads/s.
fn random_reads(
    r: &PointReader<Arc<Vault>>,
    threads: u64,
    n: u64,
    pick: impl Fn(&mut Rng) -> u64 + Sync,
) -> f64 {
    let t = Instant::now();
    std::thread::scope(|s| {
        for i in 0..threads {
            let pick = &pick;
            s.spawn(move || {
                let mut rng = Rng(1000 + i);
                let mut buf = [0u8; 4096];
                for _ in 0..n {
                    let offset = pick(&mut rng) & !4095;
                    r.read_at(0, offset, &mut buf).unwrap();
                }
            });
        }
    });
    (threads * n) as f64 / t.elapsed().as_secs_f64()
}

fn main() {
    if std::env::args()
        .skip(1)
        .any(|a| !a.starts_with('-') && a != "point_reader")
    {
        return;
    }
    let capacity = env_u64("VMVAULT_BENCH_DISK_GIB", 64) << 30;
    let allocated = env_u64("VMVAULT_BENCH_MIB", 512) * MIB;
    let cs = env_u64("VMVAULT_BENCH_CHUNK_KIB", 1024) * 1024;
    let reads = env_u64("VMVAULT_BENCH_READS", 200_000);
    let base: PathBuf = std::env::var_os("VMVAULT_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir)
        .join(format!("vmvault-point-reader-{}", std::process::id()));
    // A vault as vmvault makes one: format 2, encrypted (VMVAULT_BENCH_PLAIN=1: format 2
    // without encryption).
    let keys = match std::env::var_os("VMVAULT_BENCH_PLAIN") {
        Some(_) => None,
        None => Some(Arc::new(
            vmvault::vault::keys::MasterKey::generate().unwrap().keys(),
        )),
    };
    let encrypted = keys.is_some();
    let store = Arc::new(Vault::open_with(&base.join("chunks"), DataFormat::V2 { keys }).unwrap());

    // Allocated chunks spread evenly over the disk.
    let chunks = (allocated / cs).max(1);
    let slots = capacity.div_ceil(cs);
    let stride = (slots / chunks).max(1);
    let mut rng = Rng(7);
    let mut raw = vec![0u8; cs as usize];
    let mut entries = Vec::new();
    let t = Instant::now();
    for i in 0..chunks.min(slots) {
        if i % 2 == 0 {
            fill_text(&mut rng, &mut raw);
        } else {
            fill_random(&mut rng, &mut raw);
        }
        let d = store.name_of(&raw);
        store.put(&d, &raw).unwrap();
        entries.push((i * stride, d));
    }
    store.sync().unwrap();
    let index = DiskIndex {
        capacity,
        chunk_size: cs as u32,
        entries,
    };
    println!(
        "format 2, {}; disk {} GiB, {} chunks of {} KiB allocated ({} MiB, half text, half random), written in {:.1} s",
        if encrypted { "encrypted" } else { "not encrypted" },
        capacity >> 30,
        index.entries.len(),
        cs / 1024,
        index.entries.len() as u64 * cs / MIB,
        t.elapsed().as_secs_f64()
    );
    let reader = |read_ahead: usize| {
        PointReader::new(
            store.clone(),
            vec![(0, index.clone())],
            ReaderOptions {
                cache: Arc::new(ChunkCache::default()),
                read_ahead,
                ..ReaderOptions::default()
            },
        )
    };
    let n_cold = index.entries.len().min(64);
    let mut buf = vec![0u8; 4096];

    // Cold chunks: each read is the first of its chunk.
    for dropped in [false, true] {
        let r = reader(0);
        let mut times = Vec::new();
        for (slot, d) in index.entries.iter().take(n_cold) {
            if dropped {
                drop_from_page_cache(&store, d);
            }
            let t = Instant::now();
            r.read_at(0, slot * cs + cs / 2, &mut buf).unwrap();
            times.push(t.elapsed());
        }
        let (mid, max) = median_max(times);
        println!(
            "first 4 KiB of a cold chunk, chunk file {:<20} median {mid:6.2} ms, worst {max:6.2} ms ({n_cold} chunks)",
            if dropped { "not in the page cache" } else { "in the page cache" },
        );
    }

    // Warm: a working set of half the cache, loaded first.
    let r = reader(0);
    let working: Vec<u64> = index
        .entries
        .iter()
        .take((32 * MIB / cs).max(1) as usize)
        .map(|(s, _)| *s)
        .collect();
    for s in &working {
        r.read_at(0, s * cs, &mut buf).unwrap();
    }
    let pick_warm = |rng: &mut Rng| {
        let s = working[(rng.next() % working.len() as u64) as usize];
        s * cs + rng.next() % cs
    };
    for threads in [1, 4] {
        let per_s = random_reads(&r, threads, reads / threads, pick_warm);
        println!(
            "random 4 KiB reads, warm ({} MiB working set), {threads} thread(s): {per_s:>10.0} reads/s",
            working.len() as u64 * cs / MIB
        );
    }
    let st = r.cache().stats();
    println!(
        "  cache: {} hits, {} misses, peak {} MiB of {} MiB",
        st.hits,
        st.misses,
        st.peak_bytes as u64 / MIB,
        st.limit as u64 / MIB
    );

    // Anywhere on the disk: mostly holes, the rest mostly cache misses.
    let r = reader(0);
    let whole = random_reads(&r, 1, (reads / 10).max(1), |rng| rng.next() % capacity);
    let st = r.cache().stats();
    println!(
        "random 4 KiB reads over the whole disk, 1 thread:   {whole:>10.0} reads/s ({} chunk misses)",
        st.misses
    );

    // Sequential scan of the same chunks, laid out one after the other.
    let dense = DiskIndex {
        capacity: index.entries.len() as u64 * cs,
        chunk_size: cs as u32,
        entries: (0..).zip(index.entries.iter().map(|(_, d)| *d)).collect(),
    };
    for read_ahead in [0, 8] {
        let r = PointReader::new(
            store.clone(),
            vec![(0, dense.clone())],
            ReaderOptions {
                read_ahead,
                ..ReaderOptions::default()
            },
        );
        let mut big = vec![0u8; 128 * 1024];
        let t = Instant::now();
        let mut at = 0;
        while at < dense.capacity {
            at += r.read_at(0, at, &mut big).unwrap() as u64;
        }
        let secs = t.elapsed().as_secs_f64();
        println!(
            "sequential scan, 128 KiB reads, read-ahead {read_ahead}: {:>7.0} MB/s ({} MiB, {:.2} s, {} chunks loaded ahead)",
            dense.capacity as f64 / 1e6 / secs,
            dense.capacity / MIB,
            secs,
            r.read_ahead_loads()
        );
    }
    let _ = fs::remove_dir_all(&base);
}
