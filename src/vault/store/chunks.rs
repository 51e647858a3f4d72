//! The chunk store: content-addressed chunk files, fanned out in 256 folders.
//!
//! File format v1 (little endian), 16-byte header then payload:
//!
//! | bytes | field |
//! |---|---|
//! | 0..4 | magic `VMVC` |
//! | 4 | format version (1) |
//! | 5 | compression: 0 raw, 1 zstd |
//! | 6..8 | reserved, 0 |
//! | 8..12 | raw length (≤ 16 MiB) |
//! | 12..16 | payload length (= file length − 16) |
//!
//! The header carries no checksum of its own: every read re-hashes the decompressed bytes
//! and compares them with the file's name, which covers header and payload alike.
//!
//! In a vault of format 2 ([`DataFormat::V2`]) each chunk file is instead a blob of the v2
//! codec (encrypted and authenticated when the vault has keys), at the same place; the
//! store checks its name after decoding just the same.

use super::Digest;
use super::{digest_hex, DataFormat, StoreError, MAX_CHUNK_SIZE};
use crate::direct_io::AlignedBuf;
use crate::vault::backend::{Backend, BackendError, LocalBackend, ObjectKind, ObjectName};
use crate::vault::codec::{self, BlobKind, Codec, Compressor};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

const MAGIC: [u8; 4] = *b"VMVC";
const FORMAT_V1: u8 = 1;
const COMPRESSION_NONE: u8 = 0;
const COMPRESSION_ZSTD: u8 = 1;
pub(crate) const HEADER_LEN: usize = 16;
/// Prefix of temp files; garbage collection sweeps stale ones.
pub const TEMP_PREFIX: &str = ".tmp-";
/// zstd level used by [`Vault::put`]; backups pass their own.
pub const DEFAULT_COMPRESSION_LEVEL: i32 = 3;

/// A vault's data, as objects of a [`Backend`] (a vault folder, or any other store), in
/// its data format (codec, keys): content-addressed chunks ([`ObjectKind::Chunk`], this
/// file), the indexes and manifests of recovery points and the item and policy objects
/// that describe the vault (`points.rs`). The engine asks it for "chunk d", "the index of
/// disk 2 of point P", "every point you hold", "remove point P" — never for a file;
/// garbage collection, prune, verify, rebuild and the point pin protocol work through it.
/// The catalog (a SQLite cache of what it holds, plus the job history) sits beside it.
#[derive(Debug)]
pub struct Vault {
    backend: Arc<dyn Backend>,
    /// Where the chunks are, for messages (`<vault>/chunks` for a local vault).
    dir: PathBuf,
    format: DataFormat,
    /// Codecs for the vault's blobs (indexes, manifests, items, policies), kept for the
    /// next one: a codec's zstd contexts and key schedule cost more to make than a small
    /// blob costs to encode.
    blob_codecs: std::sync::Mutex<Vec<Codec>>,
}

/// Codecs kept by a store at most, and the buffers a kept codec may hold (a codec that
/// encoded a huge index gives its memory back).
const KEPT_CODECS: usize = 4;
const KEPT_CODEC_BYTES: usize = 4 << 20;

/// A codec of [`Vault::blob_codec`], given back to the store when dropped.
pub(super) struct PooledCodec<'a> {
    store: &'a Vault,
    codec: Option<Codec>,
}

impl std::ops::Deref for PooledCodec<'_> {
    type Target = Codec;
    fn deref(&self) -> &Codec {
        self.codec.as_ref().expect("present until dropped")
    }
}

impl std::ops::DerefMut for PooledCodec<'_> {
    fn deref_mut(&mut self) -> &mut Codec {
        self.codec.as_mut().expect("present until dropped")
    }
}

impl Drop for PooledCodec<'_> {
    fn drop(&mut self) {
        if let Some(c) = self.codec.take() {
            if c.buffer_capacity() <= KEPT_CODEC_BYTES {
                let mut kept = self
                    .store
                    .blob_codecs
                    .lock()
                    .unwrap_or_else(|p| p.into_inner());
                if kept.len() < KEPT_CODECS {
                    kept.push(c);
                }
            }
        }
    }
}

impl Vault {
    /// Opens (creating when missing) the chunk folder `dir` of a format 1 vault and its 256
    /// fan-out folders, with mode 0700.
    pub fn open(dir: &Path) -> Result<Vault, StoreError> {
        Vault::open_with(dir, DataFormat::V1)
    }

    /// Like [`Vault::open`], for a vault whose data is in `format`. `dir` is the
    /// `chunks` folder of a vault folder (which is made, private, when missing).
    pub fn open_with(dir: &Path, format: DataFormat) -> Result<Vault, StoreError> {
        let invalid = || {
            StoreError::Invalid(format!(
                "{} is not the chunk folder of a vault (<vault>/{CHUNKS_FOLDER})",
                dir.display()
            ))
        };
        if dir.file_name() != Some(std::ffi::OsStr::new(CHUNKS_FOLDER)) {
            return Err(invalid());
        }
        let parent = dir.parent().ok_or_else(invalid)?;
        let vault = crate::fsx::Dir::open_private(parent, true).map_err(|e| {
            StoreError::Invalid(format!("opening the vault folder of the chunk store: {e}"))
        })?;
        Vault::open_local(&vault, format)
    }

    /// The chunk store of the vault folder `vault` (its `chunks/`, made when missing).
    pub fn open_local(vault: &crate::fsx::Dir, format: DataFormat) -> Result<Vault, StoreError> {
        // A vault's own objects: chunks, and the indexes and manifests of its points;
        // format 2 vaults also describe their items and policies.
        let kinds: &[ObjectKind] = if format.version() >= 2 {
            &[
                ObjectKind::Chunk,
                ObjectKind::Index,
                ObjectKind::Manifest,
                ObjectKind::Item,
                ObjectKind::Policy,
            ]
        } else {
            &[ObjectKind::Chunk, ObjectKind::Index, ObjectKind::Manifest]
        };
        let backend = LocalBackend::open_kinds(vault, kinds)?;
        Ok(Vault::on(
            Arc::new(backend),
            vault.path().join(CHUNKS_FOLDER),
            format,
        ))
    }

    /// A chunk store over `backend`; `dir` says where its chunks are in messages.
    pub fn on(backend: Arc<dyn Backend>, dir: PathBuf, format: DataFormat) -> Vault {
        Vault {
            backend,
            dir,
            format,
            blob_codecs: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// A codec for the vault's blobs (None in format 1), from those kept or new.
    pub(super) fn blob_codec(&self) -> Result<Option<PooledCodec<'_>>, StoreError> {
        if self.format.version() < 2 {
            return Ok(None);
        }
        let kept = self
            .blob_codecs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop();
        let codec = match kept {
            Some(c) => Some(c),
            None => self.format.codec(DEFAULT_COMPRESSION_LEVEL)?,
        };
        Ok(codec.map(|c| PooledCodec {
            store: self,
            codec: Some(c),
        }))
    }

    /// The backend the chunks are stored in.
    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }

    /// How chunks (and the vault's indexes) are stored.
    pub fn format(&self) -> &DataFormat {
        &self.format
    }

    /// The name of a chunk with content `raw` ([`DataFormat::chunk_name`]).
    pub fn name_of(&self, raw: &[u8]) -> Digest {
        self.format.chunk_name(raw)
    }

    /// An encoder for [`Vault::put_with`], compressing at zstd `level`.
    pub fn encoder(&self, level: i32) -> Result<ChunkEncoder, StoreError> {
        Ok(match self.format.codec(level)? {
            Some(c) => ChunkEncoder(Encoder::V2(Box::new(c))),
            None => ChunkEncoder::new(level)?,
        })
    }

    /// Buffers for [`Vault::read_into`].
    pub fn reader(&self) -> Result<ChunkReader, StoreError> {
        let mut r = ChunkReader::new()?;
        r.codec = self
            .format
            .codec(codec::DEFAULT_COMPRESSION_LEVEL)?
            .map(Box::new);
        Ok(r)
    }

    /// The folder this store lives in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the chunk `d` lives: `<dir>/ab/abcdef…`.
    pub fn path_of(&self, d: &Digest) -> PathBuf {
        let hex = digest_hex(d);
        self.dir.join(&hex[..2]).join(hex)
    }

    /// Stores `raw` (whose BLAKE3 is `d`) with [`DEFAULT_COMPRESSION_LEVEL`]; returns the
    /// bytes stored. See [`Vault::put_with`].
    pub fn put(&self, d: &Digest, raw: &[u8]) -> Result<u64, StoreError> {
        let mut enc = self.encoder(DEFAULT_COMPRESSION_LEVEL)?;
        self.put_with(d, raw, &mut enc)
    }

    /// Stores `raw` (named `d` by [`Vault::name_of`]) encoded by `enc` (an encoder of
    /// this store: zstd, or raw when that is not smaller; in format 2 a blob, encrypted
    /// when the vault is), through a temp file renamed into place. Not fsynced: call
    /// [`Vault::sync`] before relying on it. Returns the bytes stored (file size).
    pub fn put_with(
        &self,
        d: &Digest,
        raw: &[u8],
        enc: &mut ChunkEncoder,
    ) -> Result<u64, StoreError> {
        debug_assert_eq!(&self.name_of(raw), d, "digest does not match the data");
        if raw.len() > MAX_CHUNK_SIZE as usize {
            return Err(StoreError::Invalid(format!(
                "chunk {} is {} bytes, more than the 16 MiB limit",
                digest_hex(d),
                raw.len()
            )));
        }
        let hex = digest_hex(d);
        let image = enc.encode(&hex, raw)?;
        self.backend
            .put(ObjectKind::Chunk, &object_name(d)?, image)?;
        Ok(image.len() as u64)
    }

    /// Reads, decompresses and re-hashes chunk `d`. A missing file or any mismatch is a
    /// typed error naming the chunk.
    pub fn get(&self, d: &Digest) -> Result<Vec<u8>, StoreError> {
        let mut r = self.reader()?;
        Ok(self.read_into(d, &mut r)?.to_vec())
    }

    /// Like [`Vault::get`], into reusable buffers; returns the raw bytes.
    pub(crate) fn read_into<'r>(
        &self,
        d: &Digest,
        r: &'r mut ChunkReader,
    ) -> Result<&'r [u8], StoreError> {
        let path = self.path_of(d);
        let corrupt = |reason: String| StoreError::ChunkCorrupt {
            digest: *d,
            path: path.clone(),
            reason,
        };
        // Never through a link, never blocking on a FIFO: a chunk is a regular object, and
        // anything else at its name is damage.
        let most = u64::from(MAX_CHUNK_SIZE) + (HEADER_LEN as u64).max(codec::MAX_OVERHEAD as u64);
        match self
            .backend
            .get_into(ObjectKind::Chunk, &object_name(d)?, &mut r.file, most)
        {
            Ok(()) => {}
            Err(BackendError::TooLarge { size, .. }) => {
                return Err(corrupt(format!(
                    "file is {size} bytes, more than any chunk can be"
                )))
            }
            Err(e) if e.is_not_found() => {
                return Err(StoreError::ChunkMissing {
                    digest: *d,
                    path: path.clone(),
                })
            }
            // A folder too: verify sets it aside (renamed, not removed) so that the next
            // backup can store the chunk again.
            Err(BackendError::NotAnObject { what, .. }) => {
                return Err(corrupt(format!("{what} is where the chunk file should be")))
            }
            Err(e) => return Err(e.into()),
        }
        let file_len = r.file.len() as u64;
        if let Some(codec) = r.codec.as_mut() {
            // Format 2: the whole blob, then the codec's checks (name included).
            return codec
                .decode(BlobKind::Chunk, &digest_hex(d), &r.file, &mut r.raw)
                .map_err(|e| {
                    if e.is_bad_blob() {
                        corrupt(e.to_string())
                    } else {
                        StoreError::Invalid(e.to_string())
                    }
                });
        }
        if file_len < HEADER_LEN as u64 {
            return Err(corrupt(format!(
                "file is {file_len} bytes, shorter than its header"
            )));
        }
        let (header, payload) = r.file.split_at(HEADER_LEN);
        if header[..4] != MAGIC {
            return Err(corrupt("not a chunk file (bad magic)".into()));
        }
        if header[4] != FORMAT_V1 {
            return Err(corrupt(format!("unsupported chunk format {}", header[4])));
        }
        let raw_len = u32::from_le_bytes([header[8], header[9], header[10], header[11]]) as usize;
        let payload_len =
            u32::from_le_bytes([header[12], header[13], header[14], header[15]]) as usize;
        if raw_len > MAX_CHUNK_SIZE as usize {
            return Err(corrupt(format!("raw length {raw_len} exceeds 16 MiB")));
        }
        if payload_len != payload.len() {
            return Err(corrupt(format!(
                "payload is {} bytes, header says {payload_len} (truncated?)",
                payload.len()
            )));
        }
        // The raw bytes land in an aligned buffer, ready for O_DIRECT writes by restore.
        let raw: &[u8] = match header[5] {
            COMPRESSION_NONE => {
                if payload_len != raw_len {
                    return Err(corrupt(format!(
                        "raw chunk holds {payload_len} bytes, header says {raw_len}"
                    )));
                }
                let out = r.raw.get(raw_len);
                out.copy_from_slice(payload);
                out
            }
            COMPRESSION_ZSTD => {
                if payload_len >= raw_len {
                    return Err(corrupt(format!(
                        "compressed payload of {payload_len} bytes is not smaller than its \
                         raw length {raw_len}"
                    )));
                }
                let out = r.raw.get(raw_len);
                let n = r
                    .dctx
                    .decompress_to_buffer(payload, out)
                    .map_err(|e| corrupt(format!("zstd payload does not decompress: {e}")))?;
                if n != raw_len {
                    return Err(corrupt(format!(
                        "decompresses to {n} bytes, header says {raw_len}"
                    )));
                }
                out
            }
            c => return Err(corrupt(format!("unknown compression {c}"))),
        };
        let h = blake3::hash(raw);
        if h.as_bytes() != d {
            // (Format 1 only: format 2 returned above.)
            return Err(corrupt(format!(
                "content hashes to {}, not to its name",
                digest_hex(h.as_bytes())
            )));
        }
        Ok(raw)
    }

    /// Makes every earlier put and remove durable (a local vault: one `syncfs(2)` of its
    /// file system instead of an fsync per chunk).
    pub fn sync(&self) -> Result<(), StoreError> {
        Ok(self.backend.sync()?)
    }

    /// Deletes chunk `d`; a chunk already gone is not an error (GC may race with itself).
    pub fn remove(&self, d: &Digest) -> Result<(), StoreError> {
        Ok(self.backend.delete(ObjectKind::Chunk, &object_name(d)?)?)
    }

    /// Takes the damaged chunk `d` out of the store, keeping its bytes for inspection where
    /// the backend can (see [`Backend::set_aside`]); true when they were kept.
    pub fn set_aside(&self, d: &Digest) -> Result<bool, StoreError> {
        Ok(self
            .backend
            .set_aside(ObjectKind::Chunk, &object_name(d)?)?)
    }

    /// The size of chunk `d` as stored, or None when it is not there.
    pub fn stored_size(&self, d: &Digest) -> Result<Option<u64>, StoreError> {
        Ok(self
            .backend
            .stat(ObjectKind::Chunk, &object_name(d)?)?
            .map(|info| info.size))
    }

    /// Every chunk with its modification time and size, for garbage collection of orphans
    /// (chunks no recovery point references, e.g. after a crashed backup). Temp files and
    /// entries that are not chunks are skipped.
    pub fn list(&self) -> impl Iterator<Item = Result<(Digest, SystemTime, u64), StoreError>> + '_ {
        self.backend
            .list(ObjectKind::Chunk)
            .filter_map(|r| match r {
                Ok(info) => super::parse_digest(info.name.as_str())
                    .map(|d| Ok((d, info.modified, info.size))),
                Err(e) => Some(Err(e.into())),
            })
    }

    /// Removes what writes cut short left behind (temp files of crashed or cancelled
    /// writers) last modified before `older_than`; returns how many were removed.
    pub fn remove_stale_temp_files(&self, older_than: SystemTime) -> Result<u64, StoreError> {
        Ok(self.backend.cleanup_temp(older_than)?)
    }
}

/// The folder of a vault that holds its chunks.
pub const CHUNKS_FOLDER: &str = "chunks";

/// The object name of chunk `d`.
fn object_name(d: &Digest) -> Result<ObjectName, StoreError> {
    ObjectName::new(digest_hex(d)).map_err(|e| StoreError::Invalid(e.to_string()))
}

/// The name every format 2 index blob is authenticated under (see
/// [`Vault::write_index`]).
pub const INDEX_BLOB_NAME: &str = "disk-index";

/// Writes chunk files with reusable buffers into a reusable, aligned file image; one per
/// worker thread, made by [`Vault::encoder`]. In format 1 a reusable zstd context
/// (whether to compress is decided by the v2 codec's [`Compressor`], so both formats share
/// it); in format 2 the v2 codec.
pub struct ChunkEncoder(Encoder);

enum Encoder {
    V1 {
        compressor: Compressor,
        out: AlignedBuf,
    },
    V2(Box<Codec>),
}

impl ChunkEncoder {
    /// A format 1 encoder at zstd `level` (1 fastest … 19; 0 means zstd's default, 3).
    pub fn new(level: i32) -> Result<ChunkEncoder, StoreError> {
        let compressor = Compressor::new(level).map_err(|e| StoreError::Invalid(e.to_string()))?;
        Ok(ChunkEncoder(Encoder::V1 {
            compressor,
            out: AlignedBuf::default(),
        }))
    }

    /// Bytes held by this encoder's buffers (for the memory accounting of pipelines).
    pub(crate) fn buffer_capacity(&self) -> usize {
        match &self.0 {
            Encoder::V1 { compressor, out } => out.capacity() + compressor.buffer_capacity(),
            Encoder::V2(c) => c.buffer_capacity(),
        }
    }

    /// Allocates the buffer for chunks up to `max_len` bytes once, up front.
    pub(crate) fn reserve(&mut self, max_len: usize) {
        match &mut self.0 {
            Encoder::V1 { out, .. } => {
                out.get(HEADER_LEN + max_len);
            }
            Encoder::V2(c) => c.reserve(max_len),
        }
    }

    /// The chunk file for `raw`, named `hex`: in format 1 header + payload, zstd when
    /// strictly smaller than `raw`, else `raw` itself; in format 2 a codec blob.
    pub(crate) fn encode(&mut self, hex: &str, raw: &[u8]) -> Result<&[u8], StoreError> {
        let (compressor, out) = match &mut self.0 {
            Encoder::V1 { compressor, out } => (compressor, out),
            Encoder::V2(c) => {
                return c
                    .encode(BlobKind::Chunk, hex, raw)
                    .map_err(|e| StoreError::Invalid(format!("encoding chunk {hex}: {e}")))
            }
        };
        let buf = out.get(HEADER_LEN + raw.len());
        let (head, payload) = buf.split_at_mut(HEADER_LEN);
        let (compression, payload_len) = match compressor.compress_if_smaller(raw, payload) {
            Some(n) => (COMPRESSION_ZSTD, n),
            None => {
                payload.copy_from_slice(raw);
                (COMPRESSION_NONE, raw.len())
            }
        };
        head[..4].copy_from_slice(&MAGIC);
        head[4] = FORMAT_V1;
        head[5] = compression;
        head[6..8].fill(0);
        head[8..12].copy_from_slice(&(raw.len() as u32).to_le_bytes());
        head[12..16].copy_from_slice(&(payload_len as u32).to_le_bytes());
        Ok(&buf[..HEADER_LEN + payload_len])
    }
}

/// Reusable buffers and zstd context for reading chunks; one per worker thread.
pub struct ChunkReader {
    file: Vec<u8>,
    raw: AlignedBuf,
    dctx: zstd::bulk::Decompressor<'static>,
    /// Format 2: the codec that decodes (and authenticates) the blobs.
    codec: Option<Box<Codec>>,
}

impl ChunkReader {
    /// New buffers and a zstd decompression context, for format 1 (see
    /// [`Vault::reader`]).
    fn new() -> Result<ChunkReader, StoreError> {
        let dctx = zstd::bulk::Decompressor::new()
            .map_err(|e| StoreError::io("creating a zstd decompression context", e))?;
        Ok(ChunkReader {
            file: Vec::new(),
            raw: AlignedBuf::default(),
            dctx,
            codec: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{compressible, random};
    use super::*;
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

    fn digest(b: &[u8]) -> Digest {
        *blake3::hash(b).as_bytes()
    }

    #[test]
    fn put_get_round_trip_compressed_and_raw() {
        let t = tempfile::tempdir().unwrap();
        let s = Vault::open(&t.path().join("chunks")).unwrap();
        let text = compressible(7, 1 << 20);
        let noise = random(8, 1 << 20);
        let dt = digest(&text);
        let dn = digest(&noise);
        let st = s.put(&dt, &text).unwrap();
        let sn = s.put(&dn, &noise).unwrap();
        assert!(
            st < (text.len() / 2) as u64,
            "compressible chunk stored {st} bytes"
        );
        assert_eq!(
            sn,
            (noise.len() + HEADER_LEN) as u64,
            "random chunk must be kept raw"
        );
        assert_eq!(s.get(&dt).unwrap(), text);
        assert_eq!(s.get(&dn).unwrap(), noise);
        assert_eq!(fs::metadata(s.path_of(&dt)).unwrap().len(), st);
        s.sync().unwrap();
    }

    #[test]
    fn modes_are_private() {
        let t = tempfile::tempdir().unwrap();
        let s = Vault::open(&t.path().join("chunks")).unwrap();
        let data = b"hello".repeat(1000);
        let d = digest(&data);
        s.put(&d, &data).unwrap();
        let fmode = fs::metadata(s.path_of(&d)).unwrap().permissions().mode() & 0o777;
        let dmode = fs::metadata(s.path_of(&d).parent().unwrap())
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        let rmode = fs::metadata(s.dir()).unwrap().permissions().mode() & 0o777;
        assert_eq!((fmode, dmode, rmode), (0o600, 0o700, 0o700));
    }

    #[test]
    fn flipped_byte_is_corrupt_and_names_the_chunk() {
        let t = tempfile::tempdir().unwrap();
        let s = Vault::open(&t.path().join("chunks")).unwrap();
        for data in [compressible(1, 300_000), random(2, 300_000)] {
            let d = digest(&data);
            s.put(&d, &data).unwrap();
            let p = s.path_of(&d);
            let mut bytes = fs::read(&p).unwrap();
            let mid = bytes.len() / 2;
            bytes[mid] ^= 0x40;
            fs::write(&p, &bytes).unwrap();
            let e = s.get(&d).unwrap_err();
            assert!(
                matches!(e, StoreError::ChunkCorrupt { digest, .. } if digest == d),
                "{e}"
            );
            assert!(e.to_string().contains(&digest_hex(&d)));
        }
    }

    #[test]
    fn header_damage_is_corrupt() {
        let t = tempfile::tempdir().unwrap();
        let s = Vault::open(&t.path().join("chunks")).unwrap();
        let data = compressible(3, 100_000);
        let d = digest(&data);
        s.put(&d, &data).unwrap();
        let p = s.path_of(&d);
        let good = fs::read(&p).unwrap();
        for (i, what) in [
            (0, "magic"),
            (4, "format"),
            (5, "compression"),
            (9, "length"),
        ] {
            let mut b = good.clone();
            b[i] ^= 0x01;
            fs::write(&p, &b).unwrap();
            assert!(
                matches!(s.get(&d), Err(StoreError::ChunkCorrupt { .. })),
                "damaged {what} not detected"
            );
        }
        fs::write(&p, &good[..good.len() - 1]).unwrap();
        assert!(matches!(s.get(&d), Err(StoreError::ChunkCorrupt { .. })));
        fs::write(&p, &good[..5]).unwrap();
        assert!(matches!(s.get(&d), Err(StoreError::ChunkCorrupt { .. })));
    }

    #[test]
    fn missing_chunk_is_typed() {
        let t = tempfile::tempdir().unwrap();
        let s = Vault::open(&t.path().join("chunks")).unwrap();
        let d = [7u8; 32];
        let e = s.get(&d).unwrap_err();
        assert!(matches!(e, StoreError::ChunkMissing { digest, .. } if digest == d));
        assert!(e.to_string().contains(&digest_hex(&d)));
        s.remove(&d).unwrap(); // already gone: fine
    }

    #[test]
    fn links_and_fifos_at_a_chunk_name_are_damage_not_data() {
        let t = tempfile::tempdir().unwrap();
        let s = Vault::open(&t.path().join("chunks")).unwrap();
        let a = compressible(1, 70_000);
        let b = compressible(2, 70_000);
        let (da, db) = (digest(&a), digest(&b));
        s.put(&da, &a).unwrap();
        // A link at b's name to a's file (a sound chunk file, but not b's) and elsewhere.
        fs::create_dir_all(s.path_of(&db).parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(s.path_of(&da), s.path_of(&db)).unwrap();
        let e = s.get(&db).unwrap_err();
        assert!(matches!(e, StoreError::ChunkCorrupt { .. }), "{e}");
        assert!(e.to_string().contains("symbolic link"), "{e}");
        // A FIFO: refused at once (opening it without O_NONBLOCK would hang).
        fs::remove_file(s.path_of(&db)).unwrap();
        let c =
            std::ffi::CString::new(s.path_of(&db).into_os_string().into_encoded_bytes()).unwrap();
        // SAFETY: `c` is a NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let e = s.get(&db).unwrap_err();
        assert!(matches!(e, StoreError::ChunkCorrupt { .. }), "{e}");
        assert!(e.to_string().contains("FIFO"), "{e}");
        assert_eq!(s.get(&da).unwrap(), a);
    }

    #[test]
    fn list_skips_temp_files_and_sweep_removes_stale_ones() {
        let t = tempfile::tempdir().unwrap();
        let s = Vault::open(&t.path().join("chunks")).unwrap();
        let a = compressible(1, 70_000);
        let b = random(2, 70_000);
        let (da, db) = (digest(&a), digest(&b));
        s.put(&da, &a).unwrap();
        s.put(&db, &b).unwrap();
        let tmp = s.dir().join("00").join(format!("{TEMP_PREFIX}abc-1-1"));
        fs::write(&tmp, b"partial").unwrap();
        fs::write(s.dir().join("00").join("README"), b"not a chunk").unwrap();
        let mut listed: Vec<Digest> = s.list().map(|r| r.unwrap().0).collect();
        listed.sort();
        let mut want = vec![da, db];
        want.sort();
        assert_eq!(listed, want);

        let past = SystemTime::now() - std::time::Duration::from_secs(3600);
        assert_eq!(s.remove_stale_temp_files(past).unwrap(), 0);
        assert!(tmp.exists());
        let future = SystemTime::now() + std::time::Duration::from_secs(3600);
        assert_eq!(s.remove_stale_temp_files(future).unwrap(), 1);
        assert!(!tmp.exists());

        s.remove(&da).unwrap();
        assert!(matches!(s.get(&da), Err(StoreError::ChunkMissing { .. })));
        assert_eq!(s.list().count(), 1);
    }

    #[test]
    fn encoder_keeps_incompressible_raw_and_mixed_compressed() {
        let mut enc = ChunkEncoder::new(1).unwrap();
        let noise = random(5, 1 << 20);
        let img = enc.encode("", &noise).unwrap();
        assert_eq!(img[5], COMPRESSION_NONE);
        assert!(img[HEADER_LEN..] == noise[..]);
        // Half zeros, half noise: the samples see zeros, so it is compressed.
        let mut mixed = noise.clone();
        mixed[..1 << 19].fill(0);
        let img = enc.encode("", &mixed).unwrap();
        assert_eq!(img[5], COMPRESSION_ZSTD);
        assert!(img.len() < (1 << 19) + 4096);
        // A tiny chunk is always tried.
        let img = enc.encode("", &[1u8; 100]).unwrap();
        assert_eq!(img[5], COMPRESSION_ZSTD);
    }
}

#[cfg(test)]
mod format2_tests {
    use super::super::index::{IndexExpect, IndexOwner};
    use super::super::testutil::{compressible, random};
    use super::super::DiskIndex;
    use super::*;
    use crate::vault::keys::MasterKey;
    use std::fs;
    use std::sync::Arc;

    fn encrypted_store(dir: &Path) -> Vault {
        let keys = MasterKey::generate().unwrap().keys();
        Vault::open_with(
            dir,
            DataFormat::V2 {
                keys: Some(Arc::new(keys)),
            },
        )
        .unwrap()
    }

    fn contains(hay: &[u8], needle: &[u8]) -> bool {
        hay.windows(needle.len()).any(|w| w == needle)
    }

    #[test]
    fn encrypted_chunks_round_trip_and_say_nothing_of_their_content() {
        let t = tempfile::tempdir().unwrap();
        let s = encrypted_store(&t.path().join("chunks"));
        let text = compressible(7, 1 << 20);
        let noise = random(8, 1 << 20);
        for raw in [&text, &noise] {
            let d = s.name_of(raw);
            // The name is keyed: not the plain BLAKE3 anyone could compute.
            assert_ne!(d, *blake3::hash(raw).as_bytes());
            s.put(&d, raw).unwrap();
            assert_eq!(&s.get(&d).unwrap(), raw);
            let file = fs::read(s.path_of(&d)).unwrap();
            assert!(!contains(&file, &raw[1000..1032]), "plaintext in the file");
            // Not a zstd frame either (which would decompress to the disk's bytes).
            assert!(zstd::decode_all(&file[..]).is_err());
        }
        // Compression still happens (before encryption).
        let d = s.name_of(&text);
        assert!(fs::metadata(s.path_of(&d)).unwrap().len() < (text.len() / 2) as u64);
    }

    #[test]
    fn a_tampered_chunk_a_wrong_key_or_a_plain_file_is_a_corrupt_chunk() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("chunks");
        let s = encrypted_store(&dir);
        let data = compressible(3, 256 * 1024);
        let d = s.name_of(&data);
        s.put(&d, &data).unwrap();
        let path = s.path_of(&d);
        let good = fs::read(&path).unwrap();

        let mut bad = good.clone();
        let at = bad.len() / 2;
        bad[at] ^= 1;
        fs::write(&path, &bad).unwrap();
        match s.get(&d) {
            Err(StoreError::ChunkCorrupt { reason, .. }) => {
                assert!(reason.contains("authentication failed"), "{reason}")
            }
            other => panic!("tampering not caught: {other:?}"),
        }

        // The right bytes, opened with another vault's key.
        fs::write(&path, &good).unwrap();
        let other = encrypted_store(&dir);
        assert!(matches!(
            other.get(&d),
            Err(StoreError::ChunkCorrupt { .. })
        ));

        // A plain format 1 chunk file planted at the name.
        let plain = Vault::open(&t.path().join("v1").join("chunks")).unwrap();
        let pd = *blake3::hash(&data).as_bytes();
        plain.put(&pd, &data).unwrap();
        fs::copy(plain.path_of(&pd), &path).unwrap();
        assert!(matches!(s.get(&d), Err(StoreError::ChunkCorrupt { .. })));

        // A file far larger than any chunk is refused without reading it whole.
        let f = fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.set_len(u64::from(MAX_CHUNK_SIZE) * 2).unwrap();
        match s.get(&d) {
            Err(StoreError::ChunkCorrupt { reason, .. }) => {
                assert!(reason.contains("more than any chunk"), "{reason}")
            }
            other => panic!("oversized file not refused: {other:?}"),
        }
    }

    #[test]
    fn unencrypted_format_2_round_trips_with_plain_names() {
        let t = tempfile::tempdir().unwrap();
        let s = Vault::open_with(
            &t.path().join("c").join("chunks"),
            DataFormat::V2 { keys: None },
        )
        .unwrap();
        let data = compressible(5, 300_000);
        let d = s.name_of(&data);
        assert_eq!(d, *blake3::hash(&data).as_bytes());
        s.put(&d, &data).unwrap();
        assert_eq!(s.get(&d).unwrap(), data);
        // A format 1 reader does not take it for one of its own files.
        let v1 = Vault::open(&t.path().join("c").join("chunks")).unwrap();
        assert!(matches!(v1.get(&d), Err(StoreError::ChunkCorrupt { .. })));
    }

    #[test]
    fn encrypted_indexes_round_trip_and_a_swapped_one_is_refused() {
        let t = tempfile::tempdir().unwrap();
        let s = encrypted_store(&t.path().join("chunks"));
        let index = DiskIndex {
            capacity: (8 << 20) + 5,
            chunk_size: 1 << 20,
            entries: vec![(0, [7; 32]), (8, [9; 32])],
        };
        let a = "aaaaaaaa-1111-2222-3333-444444444444";
        let b = "bbbbbbbb-1111-2222-3333-444444444444";
        let pa = t.path().join("points").join(a).join("disk0.idx");
        let pb = t.path().join("points").join(b).join("disk0.idx");
        let expect = |point: &'static str, checksum| IndexExpect {
            point_id: point,
            disk: 0,
            capacity: index.capacity,
            checksum: Some(checksum),
        };
        let owner = |point: &str| IndexOwner {
            point_id: point.into(),
            disk: 0,
        };
        let sa = s.write_point_index(a, 0, &index, true).unwrap();
        let sb = s.write_point_index(b, 0, &index, true).unwrap();
        assert_eq!(s.read_point_index_for(&expect(a, sa)).unwrap(), index);
        let file = fs::read(&pa).unwrap();
        assert!(!contains(&file, a.as_bytes()), "the point id is in clear");
        assert!(!contains(&file, &[7; 32]), "a chunk name is in clear");
        // b's index copied over a's: refused, naming the point it belongs to.
        fs::copy(&pb, &pa).unwrap();
        let e = s
            .read_point_index_for(&expect(a, sa))
            .unwrap_err()
            .to_string();
        assert!(e.contains("copied from another point"), "{e}");
        assert!(e.contains(b), "{e}");
        // A changed byte fails authentication.
        let mut bytes = fs::read(&pb).unwrap();
        let at = bytes.len() - 20;
        bytes[at] ^= 4;
        fs::write(&pa, &bytes).unwrap();
        let e = s
            .read_point_index_for(&expect(a, sa))
            .unwrap_err()
            .to_string();
        assert!(e.contains("authentication failed"), "{e}");
        assert_eq!(s.read_point_index_for(&expect(b, sb)).unwrap(), index);
        // A plain v1 index at the name is refused too.
        fs::write(&pa, index.to_bytes(&pa, &owner(a)).unwrap().0).unwrap();
        assert!(matches!(
            s.read_point_index_for(&expect(a, sa)),
            Err(StoreError::IndexCorrupt { .. })
        ));
        // So is a missing one, named by where it should be.
        fs::remove_file(&pa).unwrap();
        let e = s.read_point_index_for(&expect(a, sa)).unwrap_err();
        assert!(matches!(e, StoreError::IndexCorrupt { .. }), "{e}");
        assert!(e.to_string().contains("missing"), "{e}");
        assert!(e.to_string().contains(&pa.display().to_string()), "{e}");
    }
}

/// The chunk store over the in-memory backend: the same store, a different place.
#[cfg(test)]
mod backend_tests {
    use super::super::testutil::{compressible, random};
    use super::*;
    use crate::vault::backend::{MemoryBackend, Operation};
    use crate::vault::keys::MasterKey;

    fn on_memory(format: DataFormat) -> (Arc<MemoryBackend>, Vault) {
        let mem = Arc::new(MemoryBackend::new());
        let store = Vault::on(mem.clone(), PathBuf::from("memory/chunks"), format);
        (mem, store)
    }

    fn formats() -> Vec<DataFormat> {
        let keys = MasterKey::generate().unwrap().keys();
        vec![
            DataFormat::V1,
            DataFormat::V2 { keys: None },
            DataFormat::V2 {
                keys: Some(Arc::new(keys)),
            },
        ]
    }

    #[test]
    fn chunks_round_trip_list_and_go_in_every_format() {
        for format in formats() {
            let (mem, s) = on_memory(format);
            let text = compressible(3, 700_000);
            let noise = random(4, 1 << 20);
            let (dt, dn) = (s.name_of(&text), s.name_of(&noise));
            let st = s.put(&dt, &text).unwrap();
            let sn = s.put(&dn, &noise).unwrap();
            assert!(st < text.len() as u64 / 2, "{st}");
            assert_eq!(s.get(&dt).unwrap(), text);
            assert_eq!(s.get(&dn).unwrap(), noise);
            assert_eq!(s.stored_size(&dt).unwrap(), Some(st));
            let mut listed: Vec<(Digest, u64)> = s
                .list()
                .map(|r| r.map(|(d, _, n)| (d, n)).unwrap())
                .collect();
            listed.sort();
            let mut expect = vec![(dt, st), (dn, sn)];
            expect.sort();
            assert_eq!(listed, expect);
            s.sync().unwrap();
            assert_eq!(mem.count(Operation::Sync), 1);
            s.remove(&dt).unwrap();
            s.remove(&dt).unwrap();
            assert!(matches!(s.get(&dt), Err(StoreError::ChunkMissing { .. })));
            assert_eq!(s.stored_size(&dt).unwrap(), None);
            assert_eq!(s.list().count(), 1);
        }
    }

    #[test]
    fn damaged_swapped_and_giant_objects_are_corrupt_chunks() {
        for format in formats() {
            let (mem, s) = on_memory(format);
            let a = random(5, 300_000);
            let b = random(6, 300_000);
            let (da, db) = (s.name_of(&a), s.name_of(&b));
            s.put(&da, &a).unwrap();
            s.put(&db, &b).unwrap();
            let name = |d: &Digest| ObjectName::new(digest_hex(d)).unwrap();
            // One bit flipped.
            let mut bytes = mem.get(ObjectKind::Chunk, &name(&da)).unwrap();
            let mid = bytes.len() / 2;
            bytes[mid] ^= 1;
            mem.put(ObjectKind::Chunk, &name(&da), &bytes).unwrap();
            assert!(matches!(s.get(&da), Err(StoreError::ChunkCorrupt { .. })));
            // Another chunk's object under this name.
            let other = mem.get(ObjectKind::Chunk, &name(&db)).unwrap();
            mem.put(ObjectKind::Chunk, &name(&da), &other).unwrap();
            let e = s.get(&da).unwrap_err();
            assert!(matches!(e, StoreError::ChunkCorrupt { .. }), "{e}");
            assert_eq!(e.faulty_chunk(), Some(da));
            // More than any chunk can be: refused before it is read.
            let giant = vec![0u8; MAX_CHUNK_SIZE as usize + 70_000];
            mem.put(ObjectKind::Chunk, &name(&da), &giant).unwrap();
            let e = s.get(&da).unwrap_err();
            assert!(e.to_string().contains("more than any chunk can be"), "{e}");
            // The other chunk is untouched.
            assert_eq!(s.get(&db).unwrap(), b);
        }
    }

    #[test]
    fn a_full_backend_is_a_full_store_and_keeps_what_it_held() {
        let mem = Arc::new(MemoryBackend::with_capacity(400_000));
        let s = Vault::on(mem.clone(), PathBuf::from("memory/chunks"), DataFormat::V1);
        let a = random(7, 300_000);
        let da = s.name_of(&a);
        s.put(&da, &a).unwrap();
        let b = random(8, 300_000);
        let e = s.put(&s.name_of(&b), &b).unwrap_err();
        assert!(e.is_full(), "{e}");
        assert_eq!(e.details().code, "VaultStorageFull", "{:?}", e.details());
        assert_eq!(s.get(&da).unwrap(), a);
        mem.fail_next(Operation::Sync, 1, libc::EIO);
        let e = s.sync().unwrap_err();
        assert!(!e.is_full());
        assert!(e.to_string().contains("memory"), "{e}");
    }
}
