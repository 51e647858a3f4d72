//! Disk index: which chunk holds each slot of one disk of one recovery point.
//!
//! File format v1 (little endian):
//!
//! | bytes | field |
//! |---|---|
//! | 0..6 | magic `VMVIDX` |
//! | 6..8 | version (1) |
//! | 8..16 | disk capacity in bytes |
//! | 16..20 | chunk size in bytes |
//! | 20..24 | reserved, 0 |
//! | 24..32 | entry count `n` |
//! | 32..32+40n | entries: slot (u64) + digest (32 bytes), slots strictly increasing |
//! | last 32 | BLAKE3 of every byte before it |
//!
//! Only non-hole slots are listed, so the file grows with the allocated data, not with the
//! capacity. It is read and written in a streaming way (no second copy of the entries).

use super::{slot_count, slot_len, validate_chunk_size, Digest, StoreError};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

const MAGIC: [u8; 6] = *b"VMVIDX";
const VERSION: u16 = 1;
const HEADER_LEN: u64 = 32;
const ENTRY_LEN: u64 = 40;
const CHECKSUM_LEN: u64 = 32;

/// The chunks of one disk of a recovery point. A slot absent from `entries` is a hole (all
/// zeros).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskIndex {
    pub capacity: u64,
    pub chunk_size: u32,
    /// Non-hole slots, sorted by slot, each slot once.
    pub entries: Vec<(u64, Digest)>,
}

impl DiskIndex {
    /// The digest of slot `slot`, or None for a hole.
    pub fn digest_at(&self, slot: u64) -> Option<&Digest> {
        self.entries
            .binary_search_by_key(&slot, |(s, _)| *s)
            .ok()
            .map(|i| &self.entries[i].1)
    }

    /// Number of slots of the disk (holes included).
    pub fn slot_count(&self) -> u64 {
        slot_count(self.capacity, self.chunk_size)
    }

    /// Length of slot `slot` (the last one may be short).
    pub fn slot_len(&self, slot: u64) -> u64 {
        slot_len(self.capacity, self.chunk_size, slot)
    }

    /// Bytes covered by non-hole slots: what restore and verify process, and the
    /// recovery point's logical size.
    pub fn logical_bytes(&self) -> u64 {
        self.entries.iter().map(|(s, _)| self.slot_len(*s)).sum()
    }

    /// Every distinct digest, sorted (what verify and garbage collection need).
    pub fn unique_digests(&self) -> Vec<Digest> {
        let mut v: Vec<Digest> = self.entries.iter().map(|(_, d)| *d).collect();
        v.sort_unstable();
        v.dedup();
        v
    }

    /// Checks the invariants: supported chunk size, slots strictly increasing and inside
    /// the disk.
    pub fn validate(&self) -> Result<(), String> {
        validate_chunk_size(self.chunk_size).map_err(|e| e.to_string())?;
        let n = self.slot_count();
        let mut prev: Option<u64> = None;
        for (s, _) in &self.entries {
            if *s >= n {
                return Err(format!("slot {s} is outside the disk ({n} slots)"));
            }
            if prev.is_some_and(|p| p >= *s) {
                return Err(format!("slot {s} is out of order or repeated"));
            }
            prev = Some(*s);
        }
        Ok(())
    }

    /// Writes the index to `path` durably: temp file in the same folder, fsync, rename,
    /// fsync of the folder. The parent folder must exist.
    pub fn write_atomic(&self, path: &Path) -> Result<(), StoreError> {
        self.validate().map_err(|r| {
            StoreError::Invalid(format!(
                "refusing to write disk index {}: {r}",
                path.display()
            ))
        })?;
        let parent = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let name = path.file_name().ok_or_else(|| {
            StoreError::Invalid(format!(
                "disk index path {} has no file name",
                path.display()
            ))
        })?;
        let temp = parent.join(format!(
            "{}{}-{}",
            super::chunks::TEMP_PREFIX,
            name.to_string_lossy(),
            std::process::id()
        ));
        let ctx = |what: &str| format!("{what} disk index {}", path.display());
        let write = || -> io::Result<()> {
            // A temp file of ours from a crashed run may be in the way.
            let _ = fs::remove_file(&temp);
            let f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&temp)?;
            let mut w = HashingWriter {
                inner: BufWriter::with_capacity(64 * 1024, f),
                hasher: blake3::Hasher::new(),
            };
            let mut header = [0u8; HEADER_LEN as usize];
            header[..6].copy_from_slice(&MAGIC);
            header[6..8].copy_from_slice(&VERSION.to_le_bytes());
            header[8..16].copy_from_slice(&self.capacity.to_le_bytes());
            header[16..20].copy_from_slice(&self.chunk_size.to_le_bytes());
            header[24..32].copy_from_slice(&(self.entries.len() as u64).to_le_bytes());
            w.write_all(&header)?;
            for (slot, d) in &self.entries {
                w.write_all(&slot.to_le_bytes())?;
                w.write_all(d)?;
            }
            let sum = w.hasher.finalize();
            let mut f = w.inner.into_inner().map_err(|e| e.into_error())?;
            f.write_all(sum.as_bytes())?;
            f.sync_all()?;
            drop(f);
            fs::rename(&temp, path)?;
            File::open(parent)?.sync_all()
        };
        write().map_err(|e| {
            let _ = fs::remove_file(&temp);
            StoreError::io(ctx("writing"), e)
        })
    }

    /// Reads and checks an index: magic, version, size, checksum, then the invariants.
    pub fn read(path: &Path) -> Result<DiskIndex, StoreError> {
        let corrupt = |reason: String| StoreError::IndexCorrupt {
            path: path.to_path_buf(),
            reason,
        };
        let ioerr =
            |e: io::Error| StoreError::io(format!("reading disk index {}", path.display()), e);
        let f = File::open(path).map_err(ioerr)?;
        let file_len = f.metadata().map_err(ioerr)?.len();
        if file_len < HEADER_LEN + CHECKSUM_LEN {
            return Err(corrupt(format!(
                "truncated disk index ({file_len} bytes, shorter than header and checksum)"
            )));
        }
        let mut r = BufReader::with_capacity(64 * 1024, f);
        let mut hasher = blake3::Hasher::new();
        let mut header = [0u8; HEADER_LEN as usize];
        r.read_exact(&mut header).map_err(ioerr)?;
        hasher.update(&header);
        if header[..6] != MAGIC {
            return Err(corrupt("not a disk index (bad magic)".into()));
        }
        let version = u16::from_le_bytes([header[6], header[7]]);
        if version != VERSION {
            return Err(corrupt(format!(
                "unsupported disk index version {version} (this vmvault reads version {VERSION})"
            )));
        }
        let le64 = |b: &[u8]| u64::from_le_bytes(b.try_into().unwrap_or([0; 8]));
        let capacity = le64(&header[8..16]);
        let chunk_size = u32::from_le_bytes([header[16], header[17], header[18], header[19]]);
        let count = le64(&header[24..32]);
        let body_len = file_len - HEADER_LEN - CHECKSUM_LEN;
        // Only trust the count (and allocate for it) when the file size agrees with it.
        let consistent = count.checked_mul(ENTRY_LEN) == Some(body_len);
        let mut entries = Vec::new();
        if consistent {
            entries.reserve_exact(count as usize);
            let mut e = [0u8; ENTRY_LEN as usize];
            for _ in 0..count {
                r.read_exact(&mut e).map_err(ioerr)?;
                hasher.update(&e);
                let mut d = [0u8; 32];
                d.copy_from_slice(&e[8..]);
                entries.push((le64(&e[..8]), d));
            }
        } else {
            // Still hash the body, so a flipped count byte reports as a checksum mismatch.
            let mut left = body_len;
            let mut buf = [0u8; 8192];
            while left > 0 {
                let n = left.min(buf.len() as u64) as usize;
                r.read_exact(&mut buf[..n]).map_err(ioerr)?;
                hasher.update(&buf[..n]);
                left -= n as u64;
            }
        }
        let mut sum = [0u8; CHECKSUM_LEN as usize];
        r.read_exact(&mut sum).map_err(ioerr)?;
        if hasher.finalize().as_bytes() != &sum {
            return Err(corrupt("checksum mismatch".into()));
        }
        if !consistent {
            return Err(corrupt(format!(
                "entry count {count} does not match the file size {file_len}"
            )));
        }
        let index = DiskIndex {
            capacity,
            chunk_size,
            entries,
        };
        index.validate().map_err(corrupt)?;
        Ok(index)
    }
}

struct HashingWriter<W: Write> {
    inner: W,
    hasher: blake3::Hasher,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn sample() -> DiskIndex {
        DiskIndex {
            capacity: (10 << 20) + 123,
            chunk_size: 1 << 20,
            entries: vec![(0, [1; 32]), (3, [2; 32]), (10, [3; 32])],
        }
    }

    #[test]
    fn round_trip_and_lookup() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("disk0.idx");
        let i = sample();
        i.write_atomic(&p).unwrap();
        let r = DiskIndex::read(&p).unwrap();
        assert_eq!(r, i);
        assert_eq!(r.digest_at(3), Some(&[2; 32]));
        assert_eq!(r.digest_at(4), None);
        assert_eq!(r.slot_count(), 11);
        assert_eq!(r.slot_len(10), 123);
        assert_eq!(r.logical_bytes(), (2 << 20) + 123);
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        // No temp file left behind.
        assert_eq!(fs::read_dir(t.path()).unwrap().count(), 1);
        // Overwriting is atomic too.
        let mut j = i.clone();
        j.entries.pop();
        j.write_atomic(&p).unwrap();
        assert_eq!(DiskIndex::read(&p).unwrap(), j);
    }

    #[test]
    fn every_flipped_byte_is_caught() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("disk0.idx");
        sample().write_atomic(&p).unwrap();
        let good = fs::read(&p).unwrap();
        for i in 0..good.len() {
            let mut b = good.clone();
            b[i] ^= 0x10;
            fs::write(&p, &b).unwrap();
            match DiskIndex::read(&p) {
                Err(StoreError::IndexCorrupt { reason, .. }) => {
                    if i >= 8 {
                        assert_eq!(reason, "checksum mismatch", "byte {i}");
                    }
                }
                other => panic!("flipped byte {i} not caught: {other:?}"),
            }
        }
        fs::write(&p, &good).unwrap();
        let mut b = good.clone();
        b[40] ^= 1;
        fs::write(&p, &b).unwrap();
        let msg = DiskIndex::read(&p).unwrap_err().to_string();
        assert_eq!(msg, format!("checksum mismatch in {}", p.display()));
    }

    #[test]
    fn truncation_and_wrong_magic() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("disk0.idx");
        sample().write_atomic(&p).unwrap();
        let good = fs::read(&p).unwrap();
        fs::write(&p, &good[..good.len() - 1]).unwrap();
        assert!(matches!(
            DiskIndex::read(&p),
            Err(StoreError::IndexCorrupt { .. })
        ));
        fs::write(&p, &good[..10]).unwrap();
        assert!(matches!(
            DiskIndex::read(&p),
            Err(StoreError::IndexCorrupt { .. })
        ));
        fs::write(
            &p,
            b"hello world, this is not a disk index at all. ".repeat(3),
        )
        .unwrap();
        let e = DiskIndex::read(&p).unwrap_err().to_string();
        assert!(e.contains("bad magic"), "{e}");
        assert!(matches!(
            DiskIndex::read(&t.path().join("missing.idx")),
            Err(StoreError::Io { .. })
        ));
    }

    #[test]
    fn invalid_indexes_are_refused() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("x.idx");
        let mut i = sample();
        i.entries.push((11, [4; 32]));
        assert!(i.write_atomic(&p).is_err());
        let mut i = sample();
        i.entries.swap(0, 1);
        assert!(i.write_atomic(&p).is_err());
        let mut i = sample();
        i.chunk_size = 1000;
        assert!(i.write_atomic(&p).is_err());
        assert!(!p.exists());
    }
}
