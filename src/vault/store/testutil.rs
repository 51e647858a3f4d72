//! Test helpers: deterministic data generators and in-memory disk readers.

use crate::cancel::CancelToken;
use crate::disk::{DiskReader, DiskView, MappedBytes, ProviderError};
use crate::model::Extent;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// splitmix64: a tiny deterministic generator, good enough for test data.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x9e37_79b9_7f4a_7c15)
    }
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// `len` incompressible bytes from `seed`.
pub fn random(seed: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    fill_random(seed, &mut v);
    v
}

pub fn fill_random(seed: u64, buf: &mut [u8]) {
    let mut r = Rng::new(seed);
    let mut it = buf.chunks_exact_mut(8);
    for c in &mut it {
        c.copy_from_slice(&r.next().to_le_bytes());
    }
    let tail = it.into_remainder();
    let last = r.next().to_le_bytes();
    tail.copy_from_slice(&last[..tail.len()]);
}

/// `len` bytes of text-like data (words and numbers) that zstd compresses about 3–4×.
pub fn compressible(seed: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    fill_compressible(seed, &mut v);
    v
}

pub fn fill_compressible(seed: u64, buf: &mut [u8]) {
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
    let mut r = Rng::new(seed);
    let mut i = 0;
    while i < buf.len() {
        let x = r.next();
        let w = WORDS[(x & 31) as usize].as_bytes();
        let mut piece = [0u8; 32];
        let mut n = 0;
        piece[..w.len()].copy_from_slice(w);
        n += w.len();
        if x & 0x300 == 0 {
            // A number now and then, like sizes and dates in config files and logs.
            let num = (x >> 16) % 100_000;
            for c in num.to_string().bytes() {
                piece[n] = c;
                n += 1;
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

/// An in-memory sparse disk: allocated extents with their bytes; everything else is a
/// hole. Reading a hole panics, because the contract says holes are never read.
pub struct MemDisk {
    pub capacity: u64,
    /// Sorted, non-overlapping.
    pub extents: Vec<(Extent, Vec<u8>)>,
    pub changed: Option<Vec<Extent>>,
}

impl MemDisk {
    pub fn new(capacity: u64) -> MemDisk {
        MemDisk {
            capacity,
            extents: Vec::new(),
            changed: None,
        }
    }

    /// Adds an allocated extent holding `data` at `offset` (after every earlier one).
    pub fn with(mut self, offset: u64, data: Vec<u8>) -> MemDisk {
        self.put(offset, data);
        self
    }

    pub fn put(&mut self, offset: u64, data: Vec<u8>) {
        assert!(offset + data.len() as u64 <= self.capacity);
        if let Some((last, _)) = self.extents.last() {
            assert!(last.end() <= offset, "extents must be added in order");
        }
        self.extents
            .push((Extent::new(offset, data.len() as u64), data));
    }

    /// Overwrites bytes inside existing extents.
    pub fn overwrite(&mut self, offset: u64, data: &[u8]) {
        for (e, bytes) in &mut self.extents {
            let s = offset.max(e.offset);
            let t = (offset + data.len() as u64).min(e.end());
            if s < t {
                bytes[(s - e.offset) as usize..(t - e.offset) as usize]
                    .copy_from_slice(&data[(s - offset) as usize..(t - offset) as usize]);
            }
        }
    }

    /// The whole disk as bytes (for small disks).
    pub fn image(&self) -> Vec<u8> {
        let mut v = vec![0u8; self.capacity as usize];
        for (e, bytes) in &self.extents {
            v[e.offset as usize..e.end() as usize].copy_from_slice(bytes);
        }
        v
    }
}

impl DiskReader for MemDisk {
    fn capacity(&self) -> u64 {
        self.capacity
    }
    fn allocated_extents(&self) -> Result<Vec<Extent>, ProviderError> {
        Ok(self.extents.iter().map(|(e, _)| *e).collect())
    }
    fn changed_extents(&self, _since: &str) -> Result<Option<Vec<Extent>>, ProviderError> {
        Ok(self.changed.clone())
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), ProviderError> {
        let end = offset + buf.len() as u64;
        assert!(end <= self.capacity, "read past the capacity");
        let mut covered = 0u64;
        for (e, bytes) in &self.extents {
            let s = offset.max(e.offset);
            let t = end.min(e.end());
            if s < t {
                buf[(s - offset) as usize..(t - offset) as usize]
                    .copy_from_slice(&bytes[(s - e.offset) as usize..(t - e.offset) as usize]);
                covered += t - s;
            }
        }
        assert_eq!(
            covered,
            buf.len() as u64,
            "read of an unallocated range at {offset}"
        );
        Ok(())
    }
    fn view_at(&self, offset: u64, len: usize) -> Option<DiskView<'_>> {
        self.slice(offset, len).map(DiskView::Borrowed)
    }
}

impl MemDisk {
    /// The bytes of `offset..offset + len` when they lie inside one extent.
    fn slice(&self, offset: u64, len: usize) -> Option<&[u8]> {
        let (e, bytes) = self
            .extents
            .iter()
            .find(|(e, _)| e.offset <= offset && offset + len as u64 <= e.end())?;
        let a = (offset - e.offset) as usize;
        Some(&bytes[a..a + len])
    }
}

/// A raw image file as a disk (sparse where nothing was put), read with pread and viewed
/// with real mappings, like the `images` source reads raw files; counts both.
pub struct FileDisk {
    pub file: std::fs::File,
    pub capacity: u64,
    pub extents: Vec<Extent>,
    pub reads: AtomicU64,
    pub views: AtomicU64,
}

impl FileDisk {
    /// A sparse file at `path` holding `disk`'s extents.
    pub fn from_mem(path: &std::path::Path, disk: &MemDisk) -> FileDisk {
        use std::os::unix::fs::FileExt;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
            .unwrap();
        file.set_len(disk.capacity).unwrap();
        for (e, bytes) in &disk.extents {
            file.write_all_at(bytes, e.offset).unwrap();
        }
        FileDisk {
            file,
            capacity: disk.capacity,
            extents: disk.extents.iter().map(|(e, _)| *e).collect(),
            reads: AtomicU64::new(0),
            views: AtomicU64::new(0),
        }
    }

    /// Writes `data` at `offset` (inside the extents).
    pub fn overwrite(&self, offset: u64, data: &[u8]) {
        use std::os::unix::fs::FileExt;
        self.file.write_all_at(data, offset).unwrap();
    }
}

impl DiskReader for FileDisk {
    fn capacity(&self) -> u64 {
        self.capacity
    }
    fn allocated_extents(&self) -> Result<Vec<Extent>, ProviderError> {
        Ok(self.extents.clone())
    }
    fn changed_extents(&self, _since: &str) -> Result<Option<Vec<Extent>>, ProviderError> {
        Ok(None)
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), ProviderError> {
        use std::os::unix::fs::FileExt;
        self.reads.fetch_add(1, Ordering::SeqCst);
        self.file
            .read_exact_at(buf, offset)
            .map_err(|e| ProviderError::io("test read", e))
    }
    fn view_at(&self, offset: u64, len: usize) -> Option<DiskView<'_>> {
        self.views.fetch_add(1, Ordering::SeqCst);
        MappedBytes::map(&self.file, offset, len)
            .ok()
            .map(DiskView::Mapped)
    }
}

/// Wraps a reader: counts reads, and can fail or cancel after a number of reads.
pub struct Counting<'a> {
    pub inner: &'a dyn DiskReader,
    pub reads: AtomicU64,
    pub bytes: AtomicU64,
    pub offsets: Mutex<Vec<u64>>,
    /// (after this many reads, cancel this token)
    pub cancel_after: Option<(u64, CancelToken)>,
    /// Reads at or after this many fail.
    pub fail_after: Option<u64>,
}

impl<'a> Counting<'a> {
    pub fn new(inner: &'a dyn DiskReader) -> Counting<'a> {
        Counting {
            inner,
            reads: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            offsets: Mutex::new(Vec::new()),
            cancel_after: None,
            fail_after: None,
        }
    }
}

impl DiskReader for Counting<'_> {
    fn capacity(&self) -> u64 {
        self.inner.capacity()
    }
    fn allocated_extents(&self) -> Result<Vec<Extent>, ProviderError> {
        self.inner.allocated_extents()
    }
    fn changed_extents(&self, since: &str) -> Result<Option<Vec<Extent>>, ProviderError> {
        self.inner.changed_extents(since)
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), ProviderError> {
        let n = self.reads.fetch_add(1, Ordering::SeqCst);
        if let Some((after, token)) = &self.cancel_after {
            if n + 1 >= *after {
                token.cancel();
            }
        }
        if let Some(after) = self.fail_after {
            if n >= after {
                return Err(ProviderError::new(
                    "DiskReadError",
                    "Could not read the disk",
                    format!("test failure at offset {offset}"),
                ));
            }
        }
        self.bytes.fetch_add(buf.len() as u64, Ordering::SeqCst);
        self.offsets.lock().unwrap().push(offset);
        self.inner.read_at(offset, buf)
    }
}

/// A small tmpfs mounted on a new folder (mode 0700 unless the options say otherwise),
/// unmounted when dropped: a file system that fills up or is read-only on demand. Needs
/// root; otherwise (or when `mount` fails) the test is skipped with the reason.
pub struct Tmpfs(tempfile::TempDir);

impl Tmpfs {
    pub fn mount(options: &str) -> Option<Tmpfs> {
        if crate::fsx::euid() != 0 {
            crate::testing::skip("mounting a tmpfs needs root");
            return None;
        }
        let t = tempfile::tempdir().unwrap();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", options, "tmpfs"])
            .arg(t.path())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            crate::testing::skip("mount -t tmpfs failed");
            return None;
        }
        Some(Tmpfs(t))
    }

    pub fn path(&self) -> &std::path::Path {
        self.0.path()
    }

    /// Changes the mount's options (`ro`, `rw`, `size=…`).
    pub fn remount(&self, options: &str) {
        let ok = std::process::Command::new("mount")
            .args(["-o", &format!("remount,{options}")])
            .arg(self.0.path())
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "mount -o remount,{options} failed");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(self.0.path())
            .status();
    }
}
