//! The vault's data path: the [`Vault`] (its objects, through a storage backend), disk
//! indexes, and the backup, restore and verify pipelines that move disk bytes in and out.
//!
//! # What lives where
//! - [`chunks`]: [`Vault`] and its content-addressed chunks, chunk objects
//!   of the vault's backend (on the local one `chunks/ab/abcdef…`, 256 fan-out folders
//!   named by the first byte of the chunk's name). Format 1: a 16-byte versioned header +
//!   the payload, zstd or raw (whichever is smaller); format 2: a codec blob (compressed,
//!   then encrypted).
//! - [`points`]: the rest of a vault's objects through the same backend: the indexes and
//!   manifest of each recovery point, the item and policy objects, what the store holds of
//!   each point (for garbage collection), and removing a point manifest first.
//! - [`index`]: [`DiskIndex`], one object per disk per recovery point: the digest of every
//!   non-hole chunk slot, with a BLAKE3 checksum over the whole of it.
//! - [`backup`]: [`backup_disk`], the bounded parallel pipeline read → zero check → hash →
//!   dedup → compress → write, plus [`PinSet`] (digests a running backup relies on).
//! - [`restore`]: [`restore_disk`], parallel fetch + decompress + verify + `pwrite` into a
//!   sparse image, placed without replacing anything; [`TargetError`] for what goes wrong
//!   in the target folder (as opposed to the vault's data).
//! - [`verify`]: [`verify_chunks`], re-read + decompress + re-hash.
//! - [`reader`]: [`PointReader`], random access to the disks of a recovery point (any byte
//!   range, holes as zeros) through a bounded [`ChunkCache`] with sequential read-ahead.
//!
//! # Design rationale
//! - **Fixed-size chunks aligned to disk offsets.** VM disks change in place, so slot `i`
//!   always covers bytes `[i*cs, (i+1)*cs)`; an unchanged slot keeps its digest from one
//!   recovery point to the next, and changed-block tracking maps straight onto slots. The
//!   chunk size is any power of two from 64 KiB to 16 MiB (a vault setting): smaller chunks
//!   store less after scattered small overwrites, larger ones mean fewer files.
//! - **Holes are free.** All-zero slots are never stored: a slot missing from the index is a
//!   hole. Unallocated parts of the disk are never read (they are zeros by the reader's
//!   contract); a slot that is only partly allocated is read where allocated and zero-filled
//!   elsewhere.
//! - **Whole or absent.** A chunk is written to `.tmp-…` in its fan-out folder and renamed
//!   into place, so a final-named file is never half-written by a running process. Puts are
//!   *not* fsynced one by one (that costs a journal commit per chunk); [`Vault::sync`]
//!   makes every earlier put durable at once with `syncfs(2)`. Chunk files and restored
//!   images are written with O_DIRECT where the file system allows it (the 4 KiB-aligned
//!   part; the tail goes through the page cache): on the virtual machines we measured,
//!   buffered writes plus a final sync reach 130–250 MB/s and O_DIRECT 400–1000 MB/s, and
//!   the final sync is left with only metadata to commit. [`backup_disk`] calls it
//!   before returning, so everything a returned [`DiskBackup`] references is durable and the
//!   catalog may commit the recovery point. A crash before that sync can leave a final-named
//!   file with garbage in it; such a file is never trusted because it is not in the
//!   catalog's committed set ([`ChunkRegistry`]): the next backup that needs it rewrites it,
//!   and garbage collection sweeps it as an orphan.
//! - **Everything read is re-hashed.** `get`, restore and verify recompute BLAKE3 of the
//!   decompressed bytes; a mismatch or a missing file is a typed error naming the chunk (and,
//!   during restore, the slot and disk offset).
//! - **Bounded memory.** Each worker owns one raw buffer and one compression buffer of the
//!   chunk size and reuses them; queues between stages are bounded and carry only slot
//!   numbers. Nothing is proportional to the disk capacity: a 100 GiB sparse disk needs the
//!   same buffers as a 2 GiB one (the index itself grows with the *allocated* data, 40 bytes
//!   per non-hole slot). The number of workers is capped so that data buffers stay within
//!   [`BUFFER_BUDGET`].
//! - **Cores busy, disk busy.** A backup runs one worker more than the cores it is given
//!   (a worker waiting for its O_DIRECT chunk write leaves its core to the spare); restore
//!   and verify run two per core, because they wait for chunk reads and image writes about
//!   as long as they compute.
//! - **Unchanged slots are not copied.** Without changed-block tracking every allocated
//!   slot must be re-hashed to learn whether it changed. Where the reader offers a view of
//!   its bytes (`DiskReader::view_at`: raw image files are mapped from the page cache), a
//!   slot that has a previous digest is hashed in place, which halves the cost of an
//!   incremental backup (the copy out of the page cache cost more than BLAKE3). Only a slot
//!   that differs is read into the worker's buffer, and it is named after the hash of that
//!   copy, so a disk that changes meanwhile can never leave a chunk under the wrong name.
//!
//! # Where the time goes (2 cores, `benches/stages.rs`, `scripts/bench-peers.sh`)
//! Initial backup: zstd ≈ 75 % of the CPU time on the benchmark's text-like data (level 3:
//! ~100 MB/s per core), the copy out of the page cache ≈ 9 %, BLAKE3 ≈ 5 %, chunk writes
//! and file creation ≈ 6 %. Incremental without changed-block tracking: BLAKE3 ≈ 60 %,
//! mapping pages ≈ 25 %. Restore: decompression ≈ 50 %, BLAKE3 ≈ 18 %; the rest waits for
//! the disk.
//!
//! # Garbage collection protocol (implemented by the catalog owner)
//! A backup pins every digest its new index references ([`PinSet`]) *before* asking the
//! registry whether it is committed, and keeps the pins (the [`PinGuard`] in
//! [`DiskBackup`]) until the recovery point is committed in the catalog. Garbage collection
//! must delete a chunk only through [`PinSet::remove_if_unpinned`], which runs "delete the
//! catalog row, then the file" under the pin lock: so either the backup pinned first (GC
//! skips the chunk) or GC finished first (the registry says "not committed" and the backup
//! writes the chunk itself). Orphan files ([`Vault::list`]) and `.tmp-` files
//! ([`Vault::remove_stale_temp_files`]) are swept only after a grace period, and
//! pinned digests are never swept.

pub mod backup;
pub mod chunks;
pub mod index;
pub mod points;
pub mod reader;
pub mod restore;
pub mod verify;

#[cfg(test)]
pub(crate) mod testutil;

pub use crate::direct_io::AlignedBuf;
pub use backup::{
    backup_disk, discard_uncommitted, planned_read_bytes, BackupError, BackupParams, ChunkRegistry,
    DiskBackup, NewChunk, PinGuard, PinSet,
};
pub use chunks::{ChunkEncoder, Vault, DEFAULT_COMPRESSION_LEVEL};
pub use index::DiskIndex;
pub use reader::{CacheStats, ChunkCache, ChunkSource, PointReader, ReaderOptions};
pub use restore::{restore_disk, restore_disk_at, TargetError};
pub use verify::{verify_chunks, ChunkFault};

use crate::model::ErrorDetails;
use crate::vault::codec::Codec;
use crate::vault::keys::VaultKeys;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

/// How a vault's chunks and disk indexes are stored.
///
/// - **Format 1**: chunk files with a 16-byte header and a plain zstd or raw payload,
///   named by the BLAKE3 of their content; index files as written by
///   [`DiskIndex::write_atomic`]. Nothing is encrypted.
/// - **Format 2**: every chunk and index file is a blob of the v2 codec
///   ([`crate::vault::codec`]); with keys, blobs are encrypted and authenticated
///   (AES-256-GCM) and chunks are named by a keyed BLAKE3 of their content, so neither a
///   file's bytes nor its name says anything about the disk; without keys (an explicit
///   `encryption = "none"`), blobs are plain but still checksummed and bound to their name.
///
/// The layout is the same in both (`chunks/ab/<name>`, `points/<id>/disk<N>.idx`).
#[derive(Clone)]
pub enum DataFormat {
    V1,
    V2 { keys: Option<Arc<VaultKeys>> },
}

impl fmt::Debug for DataFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DataFormat::V1 => f.write_str("V1"),
            DataFormat::V2 { keys } => write!(f, "V2(encrypted: {})", keys.is_some()),
        }
    }
}

impl DataFormat {
    /// The format version number (1 or 2).
    pub fn version(&self) -> u32 {
        match self {
            DataFormat::V1 => 1,
            DataFormat::V2 { .. } => 2,
        }
    }

    /// Whether chunks and indexes are encrypted.
    pub fn is_encrypted(&self) -> bool {
        matches!(self, DataFormat::V2 { keys: Some(_) })
    }

    /// The name of a chunk whose content is `raw`: BLAKE3, keyed with the vault's name key
    /// when the vault is encrypted.
    pub fn chunk_name(&self, raw: &[u8]) -> Digest {
        match self {
            DataFormat::V2 { keys: Some(k) } => *blake3::keyed_hash(k.name_key(), raw).as_bytes(),
            _ => *blake3::hash(raw).as_bytes(),
        }
    }

    /// A v2 codec at zstd `level` (None in format 1).
    pub(crate) fn codec(&self, level: i32) -> Result<Option<Codec>, StoreError> {
        let codec = match self {
            DataFormat::V1 => return Ok(None),
            DataFormat::V2 { keys: Some(k) } => Codec::encrypted(k, level),
            DataFormat::V2 { keys: None } => Codec::plain(level),
        };
        codec
            .map(Some)
            .map_err(|e| StoreError::Invalid(e.to_string()))
    }
}

/// BLAKE3 of the raw (uncompressed) bytes of a chunk.
pub type Digest = [u8; 32];

/// Smallest supported chunk size (64 KiB).
pub const MIN_CHUNK_SIZE: u32 = 64 * 1024;
/// Largest supported chunk size (16 MiB).
pub const MAX_CHUNK_SIZE: u32 = 16 * 1024 * 1024;
/// Chunk size of vault format v1 unless the vault setting says otherwise.
pub const DEFAULT_CHUNK_SIZE: u32 = 4 * 1024 * 1024;
/// Upper bound for the chunk buffers of one backup, restore or verify: the worker count is
/// capped so that workers × buffers × chunk size stays within it.
pub const BUFFER_BUDGET: usize = 32 * 1024 * 1024;

/// Lower-case hex of a digest: the chunk's name on disk and in messages.
pub fn digest_hex(d: &Digest) -> String {
    hex(d)
}

/// Lower-case hex of any bytes.
pub fn hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(2 * bytes.len());
    for b in bytes {
        s.push(HEX[(b >> 4) as usize] as char);
        s.push(HEX[(b & 15) as usize] as char);
    }
    s
}

/// Parses 64 hex digits (either case) into a digest.
pub fn parse_digest(s: &str) -> Option<Digest> {
    parse_hex(s)
}

/// Parses exactly `2 * N` hex digits (either case) into `N` bytes.
pub fn parse_hex<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.len() != 2 * N {
        return None;
    }
    let mut d = [0u8; N];
    for (i, out) in d.iter_mut().enumerate() {
        *out = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(d)
}

/// Checks a chunk size: a power of two between [`MIN_CHUNK_SIZE`] and [`MAX_CHUNK_SIZE`].
pub fn validate_chunk_size(cs: u32) -> Result<(), StoreError> {
    if cs.is_power_of_two() && (MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&cs) {
        Ok(())
    } else {
        Err(StoreError::Invalid(format!(
            "chunk size {cs} bytes is not supported: use a power of two from 64 KiB to 16 MiB \
             (e.g. 1048576 or 4194304)"
        )))
    }
}

/// Number of chunk slots of a disk: the last one may be short.
pub fn slot_count(capacity: u64, chunk_size: u32) -> u64 {
    capacity.div_ceil(u64::from(chunk_size))
}

/// Length in bytes of slot `slot` (the last slot of a disk may be short).
pub fn slot_len(capacity: u64, chunk_size: u32, slot: u64) -> u64 {
    let start = slot * u64::from(chunk_size);
    capacity.saturating_sub(start).min(u64::from(chunk_size))
}

/// Whether every byte is zero. Compares against a static zero block with `memcmp`, which is
/// vectorised and much faster than a byte loop.
pub fn is_zero(buf: &[u8]) -> bool {
    static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];
    buf.chunks(ZEROS.len()).all(|c| c == &ZEROS[..c.len()])
}

/// An error of the chunk store, a disk index, restore or verify.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// An I/O error of the vault's storage, with what was being done.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("chunk {} is missing from the chunk store (expected at {})", digest_hex(.digest), .path.display())]
    ChunkMissing { digest: Digest, path: PathBuf },
    #[error("chunk {} is corrupt ({}): {reason}", digest_hex(.digest), .path.display())]
    ChunkCorrupt {
        digest: Digest,
        path: PathBuf,
        reason: String,
    },
    /// A disk index failed its checks; `reason` is e.g. "checksum mismatch".
    #[error("{reason} in {}", .path.display())]
    IndexCorrupt { path: PathBuf, reason: String },
    /// A chunk error while restoring one slot of a disk.
    #[error("slot {slot} (disk offset {offset}): {source}")]
    AtSlot {
        slot: u64,
        offset: u64,
        #[source]
        source: Box<StoreError>,
    },
    /// A problem of the restore target (its folder, its file system), not of the vault.
    #[error(transparent)]
    Target(TargetError),
    /// The vault's storage failed (or refused) an operation.
    #[error(transparent)]
    Backend(#[from] crate::vault::backend::BackendError),
    #[error("{0}")]
    Invalid(String),
    #[error("cancelled")]
    Cancelled,
}

impl StoreError {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        StoreError::Io {
            context: context.into(),
            source,
        }
    }

    /// The vault's storage is full (the fix is room, not a retry or a verify).
    pub fn is_full(&self) -> bool {
        match self {
            StoreError::Io { source, .. } => crate::fsx::is_full(source),
            StoreError::Backend(b) => b.is_full(),
            StoreError::AtSlot { source, .. } => source.is_full(),
            _ => false,
        }
    }

    /// The chunk this error is about, if any (to find the recovery points that need it).
    pub fn faulty_chunk(&self) -> Option<Digest> {
        match self {
            StoreError::ChunkMissing { digest, .. } | StoreError::ChunkCorrupt { digest, .. } => {
                Some(*digest)
            }
            StoreError::AtSlot { source, .. } => source.faulty_chunk(),
            _ => None,
        }
    }

    /// The details to record on a job.
    pub fn details(&self) -> ErrorDetails {
        let inner = match self {
            StoreError::AtSlot { source, .. } => source.as_ref(),
            e => e,
        };
        let msg = self.to_string();
        match inner {
            StoreError::ChunkMissing { .. } => {
                ErrorDetails::new("ChunkMissing", "A chunk of the vault is missing", msg)
                    .recommend("Run `vmvault verify` to list every recovery point that needs it.")
                    .recommend("Restore from another recovery point, or take a new backup.")
            }
            StoreError::ChunkCorrupt { .. } => ErrorDetails::new(
                "ChunkCorrupt",
                "A chunk of the vault is corrupt",
                msg,
            )
            .recommend("Run `vmvault verify` to list every recovery point that needs it.")
            .recommend(
                "Check the vault's storage for disk errors; restore from another recovery point.",
            ),
            StoreError::IndexCorrupt { .. } => ErrorDetails::new(
                "DiskIndexCorrupt",
                "A disk index of the vault is corrupt",
                msg,
            )
            .recommend(
                "Restore from another recovery point; check the vault's storage for disk errors.",
            ),
            StoreError::Io { source, .. } if crate::fsx::is_full(source) => storage_full(msg),
            StoreError::Io { .. } => {
                ErrorDetails::new("VaultStorageError", "The vault's storage failed", msg).recommend(
                    "Check free space, permissions and health of the vault's storage location.",
                )
            }
            StoreError::Target(t) => t.details(),
            StoreError::Backend(b) => b.details(),
            StoreError::Invalid(_) => ErrorDetails::new("InvalidArgument", "Invalid argument", msg),
            StoreError::Cancelled => ErrorDetails::new(
                "OperationCancelled",
                "Cancelled",
                "the operation was cancelled",
            ),
            StoreError::AtSlot { .. } => ErrorDetails::new("VaultStorageError", "Vault error", msg),
        }
    }
}

/// The details of a job stopped by a full vault storage (the engine adds where and how
/// much is free).
pub fn storage_full(message: String) -> ErrorDetails {
    ErrorDetails::new("VaultStorageFull", "The vault's storage is full", message)
        .recommend("Free space on the file system that holds the vault, or move the vault to a larger one (`storage` of the vault in the config).")
        .recommend("Nothing this job wrote was committed: recovery points already stored are intact, and the next run starts afresh.")
}

/// Short form of a digest for logs: the first 12 hex digits.
pub struct ShortDigest<'a>(pub &'a Digest);

impl fmt::Display for ShortDigest<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in &self.0[..6] {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip() {
        let mut d = [0u8; 32];
        for (i, b) in d.iter_mut().enumerate() {
            *b = (i * 37 + 5) as u8;
        }
        let h = digest_hex(&d);
        assert_eq!(h.len(), 64);
        assert_eq!(parse_digest(&h), Some(d));
        assert_eq!(parse_digest(&h.to_uppercase()), Some(d));
        assert_eq!(parse_digest(&h[..63]), None);
        assert_eq!(parse_digest(&format!("{}zz", &h[..62])), None);
    }

    #[test]
    fn chunk_size_rules() {
        assert!(validate_chunk_size(64 * 1024).is_ok());
        assert!(validate_chunk_size(1 << 20).is_ok());
        assert!(validate_chunk_size(16 << 20).is_ok());
        assert!(validate_chunk_size(32 * 1024).is_err());
        assert!(validate_chunk_size(32 << 20).is_err());
        assert!(validate_chunk_size(3 << 20).is_err());
    }

    #[test]
    fn slots_and_short_last_slot() {
        let cs = 1 << 20;
        assert_eq!(slot_count(0, cs), 0);
        assert_eq!(slot_count(3 << 20, cs), 3);
        assert_eq!(slot_count((3 << 20) + 1, cs), 4);
        assert_eq!(slot_len((3 << 20) + 10, cs, 3), 10);
        assert_eq!(slot_len((3 << 20) + 10, cs, 2), 1 << 20);
        assert_eq!(slot_len(3 << 20, cs, 3), 0);
    }

    #[test]
    fn zero_detection() {
        let mut v = vec![0u8; 200_000];
        assert!(is_zero(&v));
        v[199_999] = 1;
        assert!(!is_zero(&v));
        v[199_999] = 0;
        v[0] = 1;
        assert!(!is_zero(&v));
        assert!(is_zero(&[]));
    }

    #[test]
    fn errors_name_the_chunk_and_slot() {
        let d = [0xabu8; 32];
        let e = StoreError::AtSlot {
            slot: 7,
            offset: 7 << 20,
            source: Box::new(StoreError::ChunkMissing {
                digest: d,
                path: PathBuf::from("/v/chunks/ab/abab"),
            }),
        };
        let s = e.to_string();
        assert!(s.contains("slot 7"), "{s}");
        assert!(s.contains(&digest_hex(&d)), "{s}");
        assert_eq!(e.faulty_chunk(), Some(d));
        assert_eq!(e.details().code, "ChunkMissing");
    }
}
