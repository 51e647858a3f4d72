//! Data-path benchmark of the chunk store: backup, incremental backups, restore and verify
//! of a deterministic mixed disk image (the layout of issue 6: 4 MiB extents, ~40 % holes,
//! ~30 % compressible, ~30 % random; then 20 deterministic 1 MiB overwrites).
//!
//! Run: `cargo bench --bench store` (release build). Settings from the environment:
//! `VMVAULT_BENCH_DIR` (default: the system temp folder), `VMVAULT_BENCH_MIB` (disk size,
//! default 2048), `VMVAULT_BENCH_CHUNK_KIB` (default 1024), `VMVAULT_BENCH_LEVEL` (zstd
//! level, default 3), `VMVAULT_BENCH_THREADS` (default: available cores).
//! The image is read from the page cache (it was just written), like the peers in
//! `scripts/bench-peers.sh`; every timed step includes its final sync. The disk reader is
//! a raw file read like the `images` source reads one (pread, and views mapped from the
//! page cache for slots compared with the previous point).

use std::collections::HashSet;
use std::fs::{self, File};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;
use vmvault::cancel::{CancelToken, Progress};
use vmvault::model::Extent;
use vmvault::provider::{DiskReader, DiskView, MappedBytes, ProviderError};
use vmvault::vault::store::{
    backup_disk, restore_disk, verify_chunks, BackupParams, ChunkRegistry, Digest, DiskBackup,
    DiskIndex, PinSet, StoreError, Vault,
};

#[path = "support/image.rs"]
mod disk_image;
use disk_image::{make_image, MIB};

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn overwrite(path: &Path, capacity: u64, seed: u64) -> Vec<Extent> {
    disk_image::overwrite(path, capacity, seed).unwrap()
}

/// A raw image file as a disk: extents from SEEK_DATA/SEEK_HOLE, reads with pread.
struct FileDisk {
    file: File,
    capacity: u64,
    changed: Option<Vec<Extent>>,
}

impl DiskReader for FileDisk {
    fn capacity(&self) -> u64 {
        self.capacity
    }
    fn allocated_extents(&self) -> Result<Vec<Extent>, ProviderError> {
        let fd = self.file.as_raw_fd();
        let mut v = Vec::new();
        let mut pos: i64 = 0;
        loop {
            // SAFETY: lseek on a descriptor we own.
            let data = unsafe { libc::lseek(fd, pos, libc::SEEK_DATA) };
            if data < 0 {
                break; // ENXIO: no more data
            }
            let hole = unsafe { libc::lseek(fd, data, libc::SEEK_HOLE) };
            let hole = if hole < 0 { self.capacity as i64 } else { hole };
            v.push(Extent::new(data as u64, (hole - data) as u64));
            pos = hole;
        }
        Ok(v)
    }
    fn changed_extents(&self, _since: &str) -> Result<Option<Vec<Extent>>, ProviderError> {
        Ok(self.changed.clone())
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), ProviderError> {
        self.file
            .read_exact_at(buf, offset)
            .map_err(|e| ProviderError::io(format!("reading at {offset}"), e))
    }
    /// Mapped from the page cache, as the `images` source does for raw files.
    fn view_at(&self, offset: u64, len: usize) -> Option<DiskView<'_>> {
        MappedBytes::map(&self.file, offset, len)
            .ok()
            .map(DiskView::Mapped)
    }
}

#[derive(Default)]
struct Registry(Mutex<HashSet<Digest>>);
impl ChunkRegistry for Registry {
    fn is_committed(&self, d: &Digest) -> Result<bool, StoreError> {
        Ok(self.0.lock().unwrap().contains(d))
    }
}

/// Resets the peak RSS counter (VmHWM) of this process.
fn reset_peak_rss() {
    let _ = fs::write("/proc/self/clear_refs", "5");
}

fn peak_rss_mib() -> f64 {
    let s = fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

/// User + system CPU seconds of this process so far.
fn cpu_secs() -> f64 {
    // SAFETY: getrusage fills the struct we pass.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(u.ru_utime) + tv(u.ru_stime)
}

fn dir_bytes(dir: &Path) -> u64 {
    let mut n = 0;
    for e in fs::read_dir(dir).unwrap().flatten() {
        let m = e.metadata().unwrap();
        n += if m.is_dir() {
            dir_bytes(&e.path())
        } else {
            m.len()
        };
    }
    n
}

fn file_digest(p: &Path) -> blake3::Hash {
    use std::io::Read;
    let mut f = File::open(p).unwrap();
    let mut h = blake3::Hasher::new();
    let mut buf = vec![0u8; 4 << 20];
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    h.finalize()
}

struct Row {
    step: &'static str,
    secs: f64,
    cpu: f64,
    data_mib: f64,
    rss: f64,
    stored: u64,
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument other than "store" skips us.
    if std::env::args()
        .skip(1)
        .any(|a| !a.starts_with('-') && a != "store")
    {
        return;
    }
    let size = env_u64("VMVAULT_BENCH_MIB", 2048) * MIB;
    let cs = (env_u64("VMVAULT_BENCH_CHUNK_KIB", 1024) * 1024) as u32;
    let level = env_u64("VMVAULT_BENCH_LEVEL", 3) as i32;
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let threads = env_u64("VMVAULT_BENCH_THREADS", cores as u64) as usize;
    let base: PathBuf = std::env::var_os("VMVAULT_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir)
        .join(format!("vmvault-bench-{}", std::process::id()));
    fs::create_dir_all(&base).unwrap();
    let image = base.join("disk.raw");
    println!(
        "disk {} MiB, chunk {} KiB, zstd level {level}, {threads} threads, folder {}",
        size / MIB,
        cs / 1024,
        base.display()
    );
    let t = Instant::now();
    let allocated = make_image(&image, size).unwrap();
    println!(
        "image made in {:.2} s: {} MiB allocated ({:.0} % holes)",
        t.elapsed().as_secs_f64(),
        allocated / MIB,
        100.0 * (1.0 - allocated as f64 / size as f64)
    );

    let store = Vault::open(&base.join("chunks")).unwrap();
    let registry = Registry::default();
    let pins = PinSet::new();
    let cancel = CancelToken::new();
    let mut rows = Vec::new();

    let backup = |changed: Option<Vec<Extent>>,
                  previous: Option<&DiskIndex>,
                  cbt: bool|
     -> (DiskBackup, f64, f64, f64) {
        let disk = FileDisk {
            file: File::open(&image).unwrap(),
            capacity: size,
            changed: changed.clone(),
        };
        let progress = Progress::default();
        reset_peak_rss();
        let c0 = cpu_secs();
        let t = Instant::now();
        let b = backup_disk(BackupParams {
            reader: &disk,
            previous,
            changed: if cbt { changed } else { None },
            chunk_size: cs,
            store: &store,
            registry: &registry,
            pins: &pins,
            progress: &progress,
            cancel: &cancel,
            threads,
            compression_level: level,
            sync: true,
        })
        .unwrap();
        let secs = t.elapsed().as_secs_f64();
        let cpu = cpu_secs() - c0;
        let rss = peak_rss_mib();
        if b.stats.sync_time.as_secs_f64() > 0.001 {
            println!(
                "  (backup: {:.3} s of it in the final sync of the chunk store)",
                b.stats.sync_time.as_secs_f64()
            );
        }
        let mut c = registry.0.lock().unwrap();
        for n in &b.new_chunks {
            c.insert(n.digest);
        }
        (b, secs, cpu, rss)
    };

    let (full, secs, cpu, rss) = backup(None, None, false);
    rows.push(Row {
        step: "initial backup",
        secs,
        cpu,
        data_mib: full.bytes_read as f64 / MIB as f64,
        rss,
        stored: full.stored_bytes,
    });
    let ratio = full.logical_bytes as f64 / full.stored_bytes.max(1) as f64;

    let (unchanged, secs, cpu, rss) = backup(None, Some(&full.index), false);
    rows.push(Row {
        step: "unchanged (no CBT)",
        secs,
        cpu,
        data_mib: unchanged.bytes_read as f64 / MIB as f64,
        rss,
        stored: unchanged.stored_bytes,
    });

    let changed = overwrite(&image, size, 7);
    let (inc, secs, cpu, rss) = backup(Some(changed.clone()), Some(&full.index), false);
    rows.push(Row {
        step: "1% changed (no CBT)",
        secs,
        cpu,
        data_mib: inc.bytes_read as f64 / MIB as f64,
        rss,
        stored: inc.stored_bytes,
    });

    let changed2 = overwrite(&image, size, 8);
    let (inc_cbt, secs, cpu, rss) = backup(Some(changed2), Some(&inc.index), true);
    rows.push(Row {
        step: "1% changed (CBT)",
        secs,
        cpu,
        data_mib: inc_cbt.bytes_read as f64 / MIB as f64,
        rss,
        stored: inc_cbt.stored_bytes,
    });

    let out = base.join("restored.raw");
    reset_peak_rss();
    let c0 = cpu_secs();
    let t = Instant::now();
    restore_disk(
        &store,
        &inc_cbt.index,
        &out,
        &Progress::default(),
        &cancel,
        threads,
    )
    .unwrap();
    rows.push(Row {
        step: "restore",
        secs: t.elapsed().as_secs_f64(),
        cpu: cpu_secs() - c0,
        data_mib: inc_cbt.index.logical_bytes() as f64 / MIB as f64,
        rss: peak_rss_mib(),
        stored: 0,
    });
    let restored_blocks = fs::metadata(&out).unwrap().blocks() * 512;
    let identical = file_digest(&out) == file_digest(&image);

    let digests = inc_cbt.index.unique_digests();
    let progress = Progress::default();
    reset_peak_rss();
    let c0 = cpu_secs();
    let t = Instant::now();
    let faults = verify_chunks(&store, &digests, &progress, &cancel, threads).unwrap();
    rows.push(Row {
        step: "verify",
        secs: t.elapsed().as_secs_f64(),
        cpu: cpu_secs() - c0,
        data_mib: progress.done() as f64 / MIB as f64,
        rss: peak_rss_mib(),
        stored: 0,
    });

    println!();
    println!(
        "{:<22} {:>8} {:>8} {:>12} {:>12} {:>10} {:>12}",
        "step", "wall s", "cpu s", "disk MiB/s", "data MiB/s", "peak MiB", "stored MB"
    );
    for r in &rows {
        println!(
            "{:<22} {:>8.3} {:>8.3} {:>12.0} {:>12.0} {:>10.1} {:>12.1}",
            r.step,
            r.secs,
            r.cpu,
            size as f64 / MIB as f64 / r.secs,
            r.data_mib / r.secs,
            r.rss,
            r.stored as f64 / 1e6
        );
    }
    println!();
    println!(
        "chunk store: {:.1} MB on disk, {} files; initial dedup+compression ratio {ratio:.2}",
        dir_bytes(&base.join("chunks")) as f64 / 1e6,
        store.list().count()
    );
    println!(
        "restore: bit-identical {identical}, {} MiB allocated of {} MiB; verify faults: {}",
        restored_blocks / MIB,
        size / MIB,
        faults.len()
    );
    drop((full, unchanged, inc, inc_cbt));
    if std::env::var_os("VMVAULT_BENCH_KEEP").is_none() {
        let _ = fs::remove_dir_all(&base);
    }
    assert!(identical, "restored image differs from the disk");
    assert!(faults.is_empty());
}
