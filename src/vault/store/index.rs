//! Disk index: which chunk holds each slot of one disk of one recovery point.
//!
//! File format v2 (little endian):
//!
//! | bytes | field |
//! |---|---|
//! | 0..6 | magic `VMVIDX` |
//! | 6..8 | version (2) |
//! | 8..16 | disk capacity in bytes |
//! | 16..20 | chunk size in bytes |
//! | 20..24 | disk number within its recovery point |
//! | 24..32 | entry count `n` |
//! | 32..96 | id of its recovery point, UTF-8, padded with NUL bytes |
//! | 96..96+40n | entries: slot (u64) + digest (32 bytes), slots strictly increasing |
//! | last 32 | BLAKE3 of every byte before it (the index's *checksum*) |
//!
//! Version 1 (still read) has no point id (bytes 20..24 reserved, entries from byte 32).
//!
//! **An index is bound to its point.** It names its recovery point and disk, and the
//! catalog records its checksum when the point is committed; [`IndexFile::check`]
//! checks the name, the disk, the capacity and the checksum, so an index copied from
//! another point (which passes its own checksum) is refused as not this point's.
//!
//! Only non-hole slots are listed, so an index grows with the allocated data, not with the
//! capacity. Indexes are objects of the vault's backend ([`crate::vault::Vault`]): this
//! module turns them into bytes and back.

use super::{slot_count, slot_len, validate_chunk_size, Digest, StoreError};
use std::io::{self, Read, Write};
use std::path::Path;

const MAGIC: [u8; 6] = *b"VMVIDX";
const VERSION: u16 = 2;
const HEADER_LEN_V1: u64 = 32;
const HEADER_LEN: u64 = 96;
/// Longest point id an index can name.
const POINT_ID_LEN: usize = 64;
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

/// Which point and disk an index belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexOwner {
    pub point_id: String,
    pub disk: u32,
}

/// What the catalog says an index must be.
#[derive(Debug, Clone)]
pub struct IndexExpect<'a> {
    pub point_id: &'a str,
    pub disk: u32,
    /// The disk's capacity recorded with the point.
    pub capacity: u64,
    /// The checksum recorded at commit (None for points committed before it was).
    pub checksum: Option<Digest>,
}

/// The header facts of an index file that are not part of [`DiskIndex`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexFile {
    pub index: DiskIndex,
    /// None for a version 1 index (it names no point).
    pub owner: Option<IndexOwner>,
    /// BLAKE3 of the file's bytes before the checksum (the last 32 bytes).
    pub checksum: Digest,
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

    /// The refusals of [`DiskIndex::to_bytes`]: an owner the format cannot record, an
    /// index that breaks its invariants.
    fn check_writable(&self, path: &Path, owner: &IndexOwner) -> Result<(), StoreError> {
        let id = owner.point_id.as_bytes();
        if id.is_empty() || id.len() > POINT_ID_LEN || id.contains(&0) {
            return Err(StoreError::Invalid(format!(
                "refusing to write disk index {}: point id `{}` cannot be recorded in it",
                path.display(),
                owner.point_id
            )));
        }
        self.validate().map_err(|r| {
            StoreError::Invalid(format!(
                "refusing to write disk index {}: {r}",
                path.display()
            ))
        })
    }

    /// The bytes of the index of `owner` (`path` says where it goes, for messages), with
    /// its checksum: the object a format 1 vault stores; format 2 vaults store them inside
    /// a codec blob.
    pub(crate) fn to_bytes(
        &self,
        path: &Path,
        owner: &IndexOwner,
    ) -> Result<(Vec<u8>, Digest), StoreError> {
        self.check_writable(path, owner)?;
        let mut out = Vec::with_capacity(
            (HEADER_LEN + self.entries.len() as u64 * ENTRY_LEN + CHECKSUM_LEN) as usize,
        );
        let sum = self
            .serialize(owner, &mut out)
            .map_err(|e| StoreError::io("encoding a disk index", e))?;
        Ok((out, sum))
    }

    /// Writes the index file of `owner` to `out` (header, entries, checksum); returns the
    /// checksum. The owner must have passed [`DiskIndex::check_writable`].
    fn serialize(&self, owner: &IndexOwner, out: &mut impl Write) -> io::Result<Digest> {
        let id = owner.point_id.as_bytes();
        let mut w = HashingWriter {
            inner: out,
            hasher: blake3::Hasher::new(),
        };
        let mut header = [0u8; HEADER_LEN as usize];
        header[..6].copy_from_slice(&MAGIC);
        header[6..8].copy_from_slice(&VERSION.to_le_bytes());
        header[8..16].copy_from_slice(&self.capacity.to_le_bytes());
        header[16..20].copy_from_slice(&self.chunk_size.to_le_bytes());
        header[20..24].copy_from_slice(&owner.disk.to_le_bytes());
        header[24..32].copy_from_slice(&(self.entries.len() as u64).to_le_bytes());
        header[32..32 + id.len()].copy_from_slice(id);
        w.write_all(&header)?;
        for (slot, d) in &self.entries {
            w.write_all(&slot.to_le_bytes())?;
            w.write_all(d)?;
        }
        let sum = w.hasher.finalize();
        w.inner.write_all(sum.as_bytes())?;
        Ok(*sum.as_bytes())
    }

    /// Parses and checks the bytes of an index (`path` for messages): magic, version, size,
    /// checksum, then the invariants. Says nothing about which point it belongs to: see
    /// [`IndexFile::check`].
    pub(crate) fn parse_bytes(bytes: &[u8], path: &Path) -> Result<IndexFile, StoreError> {
        DiskIndex::parse(bytes, bytes.len() as u64, path)
    }
}

impl IndexFile {
    /// Checks that this is the index of disk `expect.disk` of point `expect.point_id`: the
    /// point and disk it names, the capacity recorded with the point, and the checksum
    /// recorded at commit.
    pub fn check(self, path: &Path, expect: &IndexExpect<'_>) -> Result<DiskIndex, StoreError> {
        let f = self;
        let wrong = |reason: String| StoreError::IndexCorrupt {
            path: path.to_path_buf(),
            reason,
        };
        if let Some(o) = &f.owner {
            if o.point_id != expect.point_id || o.disk != expect.disk {
                return Err(wrong(format!(
                    "the index belongs to disk {} of recovery point {}, not to disk {} of {} (an index copied from another point)",
                    o.disk, o.point_id, expect.disk, expect.point_id
                )));
            }
        }
        if let Some(sum) = expect.checksum {
            if sum != f.checksum {
                return Err(wrong(
                    "the index is not the one committed with its recovery point (its checksum differs from the catalog's record)".into(),
                ));
            }
        }
        if f.index.capacity != expect.capacity {
            return Err(wrong(format!(
                "the index describes a disk of {} bytes, the recovery point one of {} bytes",
                f.index.capacity, expect.capacity
            )));
        }
        Ok(f.index)
    }
}

impl DiskIndex {
    /// Parses the `file_len` bytes of an index file from `r`, checking everything.
    fn parse(mut r: impl Read, file_len: u64, path: &Path) -> Result<IndexFile, StoreError> {
        let corrupt = |reason: String| StoreError::IndexCorrupt {
            path: path.to_path_buf(),
            reason,
        };
        let ioerr =
            |e: io::Error| StoreError::io(format!("reading disk index {}", path.display()), e);
        if file_len < HEADER_LEN_V1 + CHECKSUM_LEN {
            return Err(corrupt(format!(
                "truncated disk index ({file_len} bytes, shorter than header and checksum)"
            )));
        }
        let mut hasher = blake3::Hasher::new();
        let mut header = [0u8; HEADER_LEN as usize];
        r.read_exact(&mut header[..HEADER_LEN_V1 as usize])
            .map_err(ioerr)?;
        if header[..6] != MAGIC {
            return Err(corrupt("not a disk index (bad magic)".into()));
        }
        let version = u16::from_le_bytes([header[6], header[7]]);
        let header_len = match version {
            1 => HEADER_LEN_V1,
            VERSION => HEADER_LEN,
            _ => {
                return Err(corrupt(format!(
                    "unsupported disk index version {version} (this vmvault reads versions 1 and {VERSION})"
                )))
            }
        };
        if file_len < header_len + CHECKSUM_LEN {
            return Err(corrupt(format!(
                "truncated disk index ({file_len} bytes, shorter than header and checksum)"
            )));
        }
        r.read_exact(&mut header[HEADER_LEN_V1 as usize..header_len as usize])
            .map_err(ioerr)?;
        let header = &header[..header_len as usize];
        hasher.update(header);
        let le64 = |b: &[u8]| u64::from_le_bytes(b.try_into().unwrap_or([0; 8]));
        let capacity = le64(&header[8..16]);
        let chunk_size = u32::from_le_bytes([header[16], header[17], header[18], header[19]]);
        let count = le64(&header[24..32]);
        let body_len = file_len - header_len - CHECKSUM_LEN;
        // A disk has so many slots, and an index no more entries: never read (or hash) a
        // file bigger than that.
        // (Bounded with the smallest chunk size, so that a damaged chunk size still reads as
        // a checksum mismatch.)
        let most = slot_count(capacity, super::MIN_CHUNK_SIZE).saturating_mul(ENTRY_LEN);
        if body_len > most {
            return Err(corrupt(format!(
                "{file_len} bytes is more than an index of a {capacity}-byte disk can hold"
            )));
        }
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
        let owner = if version == 1 {
            None
        } else {
            let id = &header[32..32 + POINT_ID_LEN];
            let len = id.iter().position(|b| *b == 0).unwrap_or(POINT_ID_LEN);
            let point_id = std::str::from_utf8(&id[..len])
                .map_err(|_| corrupt("the point id in the header is not UTF-8".into()))?;
            Some(IndexOwner {
                point_id: point_id.to_string(),
                disk: u32::from_le_bytes([header[20], header[21], header[22], header[23]]),
            })
        };
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
        Ok(IndexFile {
            index,
            owner,
            checksum: sum,
        })
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

    fn owner() -> IndexOwner {
        IndexOwner {
            point_id: "0b5f4f5e-2c57-4a37-9f55-1b1f3c7a3e11".into(),
            disk: 1,
        }
    }

    fn expect(checksum: Option<Digest>) -> IndexExpect<'static> {
        IndexExpect {
            point_id: "0b5f4f5e-2c57-4a37-9f55-1b1f3c7a3e11",
            disk: 1,
            capacity: (10 << 20) + 123,
            checksum,
        }
    }

    fn sample() -> DiskIndex {
        DiskIndex {
            capacity: (10 << 20) + 123,
            chunk_size: 1 << 20,
            entries: vec![(0, [1; 32]), (3, [2; 32]), (10, [3; 32])],
        }
    }

    fn at() -> &'static Path {
        Path::new("points/p/disk1.idx")
    }

    fn bytes_of(i: &DiskIndex, o: &IndexOwner) -> (Vec<u8>, Digest) {
        i.to_bytes(at(), o).unwrap()
    }

    fn read(bytes: &[u8]) -> Result<DiskIndex, StoreError> {
        Ok(DiskIndex::parse_bytes(bytes, at())?.index)
    }

    fn read_for(bytes: &[u8], e: &IndexExpect<'_>) -> Result<DiskIndex, StoreError> {
        DiskIndex::parse_bytes(bytes, at())?.check(at(), e)
    }

    #[test]
    fn round_trip_and_lookup() {
        let i = sample();
        let (bytes, sum) = bytes_of(&i, &owner());
        assert_eq!(sum[..], bytes[bytes.len() - 32..]);
        let r = read(&bytes).unwrap();
        assert_eq!(r, i);
        assert_eq!(r.digest_at(3), Some(&[2; 32]));
        assert_eq!(r.digest_at(4), None);
        assert_eq!(r.slot_count(), 11);
        assert_eq!(r.slot_len(10), 123);
        assert_eq!(r.logical_bytes(), (2 << 20) + 123);
    }

    #[test]
    fn every_flipped_byte_is_caught() {
        let (good, _) = bytes_of(&sample(), &owner());
        for i in 0..good.len() {
            let mut b = good.clone();
            b[i] ^= 0x10;
            match read(&b) {
                Err(StoreError::IndexCorrupt { reason, .. }) => {
                    if i >= 8 {
                        assert_eq!(reason, "checksum mismatch", "byte {i}");
                    }
                }
                other => panic!("flipped byte {i} not caught: {other:?}"),
            }
        }
        let mut b = good.clone();
        b[40] ^= 1;
        let msg = read(&b).unwrap_err().to_string();
        assert_eq!(msg, format!("checksum mismatch in {}", at().display()));
    }

    #[test]
    fn truncation_and_wrong_magic() {
        let (good, _) = bytes_of(&sample(), &owner());
        assert!(matches!(
            read(&good[..good.len() - 1]),
            Err(StoreError::IndexCorrupt { .. })
        ));
        assert!(matches!(
            read(&good[..10]),
            Err(StoreError::IndexCorrupt { .. })
        ));
        let e = read(&b"hello world, this is not a disk index at all. ".repeat(3))
            .unwrap_err()
            .to_string();
        assert!(e.contains("bad magic"), "{e}");
        // More bytes than any index of its disk is not read through.
        let mut long = good.clone();
        long.extend(std::iter::repeat_n(0u8, 1 << 20));
        let e = read(&long).unwrap_err().to_string();
        assert!(e.contains("more than an index of a"), "{e}");
    }

    #[test]
    fn an_index_is_bound_to_its_point_disk_and_commit() {
        let (bytes, sum) = bytes_of(&sample(), &owner());
        let f = DiskIndex::parse_bytes(&bytes, at()).unwrap();
        assert_eq!(f.owner, Some(owner()));
        assert_eq!(f.checksum, sum);
        assert_eq!(read_for(&bytes, &expect(Some(sum))).unwrap(), sample());
        // Another point's index (passes its own checksum) is refused by name...
        let mut o = owner();
        o.point_id = "11111111-2222-3333-4444-555555555555".into();
        let (other, other_sum) = bytes_of(&sample(), &o);
        let e = read_for(&other, &expect(Some(sum)))
            .unwrap_err()
            .to_string();
        assert!(e.contains("copied from another point"), "{e}");
        // ...and by the recorded checksum, even when it names the same point and disk.
        let mut j = sample();
        j.entries.pop();
        let (changed, _) = bytes_of(&j, &owner());
        let e = read_for(&changed, &expect(Some(sum)))
            .unwrap_err()
            .to_string();
        assert!(e.contains("not the one committed"), "{e}");
        // Another disk of the same point.
        let mut o = owner();
        o.disk = 0;
        assert!(read_for(&bytes_of(&sample(), &o).0, &expect(None)).is_err());
        // A capacity that disagrees with the catalog's.
        let mut e = expect(None);
        e.capacity += 1;
        let msg = read_for(&bytes, &e).unwrap_err().to_string();
        assert!(msg.contains("bytes"), "{msg}");
        assert_ne!(sum, other_sum);
    }

    #[test]
    fn version_1_indexes_are_still_read() {
        let i = sample();
        let mut bytes = Vec::new();
        bytes.extend_from_slice(b"VMVIDX");
        bytes.extend_from_slice(&1u16.to_le_bytes());
        bytes.extend_from_slice(&i.capacity.to_le_bytes());
        bytes.extend_from_slice(&i.chunk_size.to_le_bytes());
        bytes.extend_from_slice(&[0; 4]);
        bytes.extend_from_slice(&(i.entries.len() as u64).to_le_bytes());
        for (slot, d) in &i.entries {
            bytes.extend_from_slice(&slot.to_le_bytes());
            bytes.extend_from_slice(d);
        }
        let sum = *blake3::hash(&bytes).as_bytes();
        bytes.extend_from_slice(&sum);
        let f = DiskIndex::parse_bytes(&bytes, at()).unwrap();
        assert_eq!(f.index, i);
        assert_eq!(f.owner, None);
        assert_eq!(f.checksum, sum);
        assert!(read_for(&bytes, &expect(Some(sum))).is_ok());
        assert!(read_for(&bytes, &expect(Some([9; 32]))).is_err());
    }

    #[test]
    fn invalid_indexes_are_refused() {
        let mut i = sample();
        i.entries.push((11, [4; 32]));
        assert!(i.to_bytes(at(), &owner()).is_err());
        let mut i = sample();
        i.entries.swap(0, 1);
        assert!(i.to_bytes(at(), &owner()).is_err());
        let mut i = sample();
        i.chunk_size = 1000;
        assert!(i.to_bytes(at(), &owner()).is_err());
        let mut o = owner();
        o.point_id = "x".repeat(POINT_ID_LEN + 1);
        assert!(sample().to_bytes(at(), &o).is_err());
    }
}
