//! The benchmark disk image of issue 6, made deterministically (shared by `benches/store.rs`
//! and `benches/bench_image.rs`, which `scripts/bench-peers.sh` runs).
//!
//! Layout: the disk is cut into 4 MiB extents; exactly 40 % of them are holes (never
//! written), 30 % text-like data that zstd compresses about 3–4×, 30 % random bytes, in a
//! shuffled order. [`overwrite`] then writes 20 random 1 MiB blocks at 4 KiB-aligned
//! offsets (1 % of a 2 GiB disk). Every byte is a function of the size and the seeds.
#![allow(dead_code)]

use std::fs::OpenOptions;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use vmvault::model::Extent;

pub const MIB: u64 = 1 << 20;
pub const EXTENT: u64 = 4 * MIB;

/// splitmix64: small, fast and the same on every machine.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

pub fn fill_random(rng: &mut Rng, buf: &mut [u8]) {
    for c in buf.chunks_mut(8) {
        let v = rng.next().to_le_bytes();
        c.copy_from_slice(&v[..c.len()]);
    }
}

/// Text-like bytes (words, paths, numbers) that zstd compresses about 3–4×.
pub fn fill_text(rng: &mut Rng, buf: &mut [u8]) {
    const WORDS: [&str; 32] = [
        "usr",
        "lib",
        "bin",
        "share",
        "config",
        "kernel",
        "module",
        "system",
        "service",
        "network",
        "device",
        "driver",
        "python3",
        "package",
        "version",
        "x86_64",
        "debian",
        "include",
        "header",
        "locale",
        "timezone",
        "firmware",
        "openssl",
        "libc.so.6",
        "cache",
        "journal",
        "var",
        "log",
        "etc",
        "passwd",
        "boot",
        "initrd",
    ];
    let mut i = 0;
    let mut piece = [0u8; 32];
    while i < buf.len() {
        let x = rng.next();
        let w = WORDS[(x & 31) as usize].as_bytes();
        piece[..w.len()].copy_from_slice(w);
        let mut n = w.len();
        if x & 0x300 == 0 {
            let mut num = (x >> 16) % 100_000;
            loop {
                piece[n] = b'0' + (num % 10) as u8;
                n += 1;
                num /= 10;
                if num == 0 {
                    break;
                }
            }
        }
        piece[n] = match (x >> 10) & 7 {
            0 => b'\n',
            1 => b'/',
            2 => b'=',
            _ => b' ',
        };
        n += 1;
        let take = n.min(buf.len() - i);
        buf[i..i + take].copy_from_slice(&piece[..take]);
        i += take;
    }
}

/// Writes the mixed image of `capacity` bytes to a new sparse file at `path` (replacing
/// it); returns the bytes written (allocated).
pub fn make_image(path: &Path, capacity: u64) -> io::Result<u64> {
    let f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)?;
    f.set_len(capacity)?;
    let mut rng = Rng(42);
    // Exactly 40 % holes, 30 % compressible, 30 % random extents, in a shuffled order.
    let n = capacity.div_ceil(EXTENT) as usize;
    let mut kinds: Vec<u8> = (0..n).map(|i| ((i * 10 / n.max(1)) as u8).min(9)).collect();
    for i in (1..n).rev() {
        kinds.swap(i, (rng.next() % (i as u64 + 1)) as usize);
    }
    let mut buf = vec![0u8; EXTENT as usize];
    let mut allocated = 0;
    for (i, kind) in kinds.iter().enumerate() {
        let off = i as u64 * EXTENT;
        let len = EXTENT.min(capacity - off) as usize;
        match kind {
            0..=3 => continue, // hole, never written
            4..=6 => fill_text(&mut rng, &mut buf[..len]),
            _ => fill_random(&mut rng, &mut buf[..len]),
        }
        f.write_all_at(&buf[..len], off)?;
        allocated += len as u64;
    }
    f.sync_all()?;
    Ok(allocated)
}

/// 20 deterministic 1 MiB overwrites of random data at 4 KiB-aligned offsets (the mtime
/// changes, the size does not); returns the ranges written, sorted.
pub fn overwrite(path: &Path, capacity: u64, seed: u64) -> io::Result<Vec<Extent>> {
    let f = OpenOptions::new().write(true).open(path)?;
    let mut rng = Rng(seed);
    let mut buf = vec![0u8; MIB as usize];
    let mut changed = Vec::new();
    for _ in 0..20 {
        let off = (rng.next() % (capacity - MIB)) & !4095;
        fill_random(&mut rng, &mut buf);
        f.write_all_at(&buf, off)?;
        changed.push(Extent::new(off, MIB));
    }
    f.sync_all()?;
    changed.sort();
    Ok(changed)
}
