//! The codec of vault format v2: raw bytes ⇄ stored blob. It compresses (when that helps),
//! encrypts and authenticates what a backend stores, checks everything it reads back, and
//! names chunks. The backend never sees plaintext when the vault is encrypted, and never
//! interprets a blob.
//!
//! # Blob format v2 (little endian)
//!
//! | bytes | field |
//! |---|---|
//! | 0..4 | magic `VMVB` |
//! | 4 | format version (2) |
//! | 5 | flags: bit 0 zstd, bit 1 encrypted (other bits 0) |
//! | 6 | kind ([`BlobKind::code`]) |
//! | 7 | reserved, 0 |
//! | 8..16 | raw length (≤ the kind's limit, [`BlobKind::max_raw_len`]) |
//! | 16..28 | nonce (random per blob; zero when not encrypted) |
//! | 28.. | payload: zstd frame or the raw bytes |
//! | last 16 | encrypted: the AES-256-GCM tag (the payload is then ciphertext) |
//! | last 32 | not encrypted, not a chunk: BLAKE3 of header, kind, name and payload |
//!
//! # What is checked, and what each failure means
//! - **Encrypted blobs** are AES-256-GCM with the vault's data key, a random 96-bit nonce
//!   per blob and associated data = header bytes 0..16 + kind + name. A wrong key, any
//!   changed bit, or a blob moved to another name or kind fails authentication
//!   ([`CodecError::AuthenticationFailed`]); nothing is decompressed before that.
//! - **Plain blobs that are not chunks** carry a BLAKE3 checksum of (header, kind, name,
//!   payload) in place of the tag, so damage and swaps are caught as well
//!   ([`CodecError::ChecksumMismatch`]). It is no defence against someone who can write
//!   the vault: only encryption is.
//! - **Chunks** are named by their content ([`Codec::chunk_name`]): with a key,
//!   `BLAKE3-keyed(name key, raw)`, so a name says nothing about the content (no one
//!   without the key can test whether the vault holds a known file); without a key, plain
//!   BLAKE3 as in format v1, so an unencrypted v1 vault keeps its chunk names. Every
//!   decoded chunk is re-hashed and compared with its name ([`CodecError::NameMismatch`]):
//!   this is what protects plain chunks, and in encrypted vaults it also catches a chunk
//!   written under a wrong name. (A change to a plain chunk that leaves what it decodes to
//!   unchanged, such as zstd's unused frame-header bit, passes: the content is still right.)
//! - An encrypted codec refuses plain blobs ([`CodecError::NotEncrypted`]): otherwise
//!   anyone who can write the vault could plant a manifest.
//! - **Bounded.** A header that claims more than its kind's limit is refused before any
//!   buffer is allocated ([`CodecError::TooLarge`]); the output buffer is sized from the
//!   header only after the payload was authenticated (encrypted), checksummed (plain), or
//!   its zstd frame was seen to declare exactly the claimed size (plain chunks).
//!   No input panics (see the fuzz-style tests).
//!
//! # Why AES-256-GCM (not ChaCha20-Poly1305)
//! Every x86-64 and ARMv8 server has AES and carry-less multiplication instructions, and
//! the RustCrypto `aes` crate detects them (and VAES) at run time. Measured on this
//! machine (AMD EPYC, AES-NI + VAES + AVX-512, one core, 4 MiB messages,
//! `cargo bench --bench stages -- aead`):
//!
//! | AEAD | encrypt | decrypt |
//! |---|---|---|
//! | AES-256-GCM (`aes-gcm` 0.11) | 2 013 MB/s | 2 066 MB/s |
//! | ChaCha20-Poly1305 (`chacha20poly1305` 0.11) | 1 003 MB/s | 1 021 MB/s |
//!
//! Backups are limited by zstd (about 100 MB/s per core at level 3) and restores by
//! decompression and BLAKE3 (about 1 GB/s): at 2 GB/s AES-GCM costs about 5 % of an
//! initial backup's CPU time, within the 10 % budget of issue 12; ChaCha20 would cost
//! twice that. Random 96-bit nonces are safe for far more blobs than a vault holds
//! (2^32 blobs under one key keep the chance of a repeated nonce below 2^-32; with 4 MiB
//! chunks that is 16 PiB of unique data). A chunk that is already stored is never
//! encrypted again (deduplication happens on its name, before encoding).
//!
//! # Buffers
//! One [`Codec`] per worker thread: it owns a zstd context for each direction, the output
//! buffer of [`Codec::encode`] (4 KiB-aligned, so a local backend can write it with
//! O_DIRECT) and a scratch buffer, all reused from blob to blob. [`Codec::decode`] writes
//! the raw bytes into the caller's [`AlignedBuf`] (ready for O_DIRECT writes by restore).

use super::keys::VaultKeys;
use super::store::{digest_hex, is_zero, Digest, MAX_CHUNK_SIZE};
use crate::direct_io::AlignedBuf;
use aes_gcm::aead::inout::InOutBuf;
use aes_gcm::aead::{self, AeadInOut, KeyInit};
use aes_gcm::Aes256Gcm;
use std::fmt;
use zeroize::Zeroizing;

/// The first bytes of every v2 blob.
pub const MAGIC: [u8; 4] = *b"VMVB";
/// The blob format version this codec writes and reads.
pub const FORMAT_V2: u8 = 2;
/// Length of the fixed header.
pub const HEADER_LEN: usize = 28;
const FLAG_ZSTD: u8 = 1;
const FLAG_ENCRYPTED: u8 = 2;
const NONCE_LEN: usize = 12;
const AEAD_TAG_LEN: usize = 16;
const CHECKSUM_LEN: usize = 32;
/// The most a blob adds to its payload (header and checksum).
pub const MAX_OVERHEAD: usize = HEADER_LEN + CHECKSUM_LEN;
/// zstd level for blobs when nothing else is asked for.
pub const DEFAULT_COMPRESSION_LEVEL: i32 = 3;

/// Context of the checksum of plain (unencrypted) non-chunk blobs.
const CHECKSUM_CONTEXT: &str = "vmvault 2026-12 plain blob checksum";

/// Size of each sample used to guess whether a buffer compresses.
const SAMPLE_LEN: usize = 4096;
/// Number of samples spread across a buffer.
const SAMPLES: usize = 4;
/// A buffer whose samples save less than this share (in 1/100) is stored raw without trying.
const MIN_SAVING_PERCENT: usize = 3;

/// What a blob is; stored in its header and bound into its authentication, so a blob
/// cannot pass for one of another kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BlobKind {
    Config,
    Key,
    Chunk,
    Index,
    Manifest,
    Item,
    Policy,
    Lock,
}

impl BlobKind {
    /// Every kind.
    pub const ALL: [BlobKind; 8] = [
        BlobKind::Config,
        BlobKind::Key,
        BlobKind::Chunk,
        BlobKind::Index,
        BlobKind::Manifest,
        BlobKind::Item,
        BlobKind::Policy,
        BlobKind::Lock,
    ];

    /// The kind's byte in the header (never 0, so a zeroed header is no kind).
    pub fn code(self) -> u8 {
        match self {
            BlobKind::Config => 1,
            BlobKind::Key => 2,
            BlobKind::Chunk => 3,
            BlobKind::Index => 4,
            BlobKind::Manifest => 5,
            BlobKind::Item => 6,
            BlobKind::Policy => 7,
            BlobKind::Lock => 8,
        }
    }

    /// The kind whose header byte is `code`.
    pub fn from_code(code: u8) -> Option<BlobKind> {
        BlobKind::ALL.into_iter().find(|k| k.code() == code)
    }

    /// The kind's name in messages.
    pub fn name(self) -> &'static str {
        match self {
            BlobKind::Config => "config",
            BlobKind::Key => "key",
            BlobKind::Chunk => "chunk",
            BlobKind::Index => "index",
            BlobKind::Manifest => "manifest",
            BlobKind::Item => "item",
            BlobKind::Policy => "policy",
            BlobKind::Lock => "lock",
        }
    }

    /// The largest raw length a blob of this kind may have: what a decoder is willing to
    /// allocate for it. Chunks are at most 16 MiB; an index lists 40 bytes per stored
    /// chunk (1 GiB: 27 million chunks, 100 TiB of 4 MiB chunks); a manifest holds a VM's
    /// definition; the small kinds are a few hundred bytes.
    pub fn max_raw_len(self) -> u64 {
        match self {
            BlobKind::Chunk => u64::from(MAX_CHUNK_SIZE),
            BlobKind::Index => 1 << 30,
            BlobKind::Manifest => 16 << 20,
            BlobKind::Config | BlobKind::Key | BlobKind::Item | BlobKind::Policy => 1 << 20,
            BlobKind::Lock => 64 << 10,
        }
    }
}

impl fmt::Display for BlobKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a blob could not be encoded or decoded. Callers add which object it was.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The bytes are not a vault blob at all (too short, wrong magic).
    #[error("not a vault blob: {reason}")]
    NotABlob { reason: String },
    /// A blob of a format version this vmvault does not know.
    #[error("blob format version {version} is not supported (this vmvault reads version {FORMAT_V2}); use the vmvault that wrote it, or a newer one")]
    UnsupportedVersion { version: u8 },
    /// The header says another kind than the one asked for: moved or swapped.
    #[error("the blob is a {found} blob, not a {expected} blob (moved or swapped)")]
    KindMismatch { expected: BlobKind, found: BlobKind },
    /// An encrypted blob, and no key to open it.
    #[error("the blob is encrypted, and the vault was opened without a key")]
    KeyNeeded,
    /// A plain blob in an encrypted vault: refused, since anyone could have written it.
    #[error("the blob is not encrypted, but the vault is: refused (only damage or someone who can write the vault puts a plain blob there)")]
    NotEncrypted,
    /// The AEAD tag does not match: a wrong key, or a changed or swapped blob.
    #[error("authentication failed: the key is wrong, or the blob was changed or moved from another name")]
    AuthenticationFailed,
    /// The checksum of a plain blob does not match: damaged, or moved from another name.
    #[error("checksum mismatch: the blob is damaged, or was moved from another name")]
    ChecksumMismatch,
    /// The blob's structure is inconsistent (lengths, zstd data, header fields).
    #[error("the blob is damaged: {reason}")]
    Corrupt { reason: String },
    /// A chunk whose content does not hash to its name.
    #[error("the chunk's content does not match its name (it hashes to {actual})")]
    NameMismatch { actual: String },
    /// More bytes than the kind allows (claimed by a header, or given to encode).
    #[error("a {kind} blob of {len} bytes is larger than the limit of {limit} bytes for its kind")]
    TooLarge {
        kind: BlobKind,
        len: u64,
        limit: u64,
    },
    /// A compression level zstd refuses.
    #[error("zstd compression level {level} is not usable: {reason}")]
    BadLevel { level: i32, reason: String },
    /// The environment: no random numbers for a nonce, no memory for a zstd context.
    #[error("{what}: {reason}")]
    Environment { what: &'static str, reason: String },
}

impl CodecError {
    fn corrupt(reason: impl Into<String>) -> CodecError {
        CodecError::Corrupt {
            reason: reason.into(),
        }
    }

    /// Whether the error says the stored blob is bad (damaged, tampered with, swapped, or
    /// opened with the wrong key), as opposed to the caller or the environment.
    pub fn is_bad_blob(&self) -> bool {
        !matches!(
            self,
            CodecError::BadLevel { .. } | CodecError::Environment { .. }
        )
    }
}

/// The fixed header of a blob, parsed and checked for its own consistency.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobHeader {
    pub kind: BlobKind,
    pub compressed: bool,
    pub encrypted: bool,
    /// Length of the raw (decoded) bytes; within the kind's limit.
    pub raw_len: u64,
    nonce: [u8; NONCE_LEN],
}

impl BlobHeader {
    /// Parses the header at the start of `blob`. Refuses anything that is not a v2 blob
    /// header, and a raw length beyond the kind's limit.
    pub fn parse(blob: &[u8]) -> Result<BlobHeader, CodecError> {
        let Some(h) = blob.first_chunk::<HEADER_LEN>() else {
            return Err(CodecError::NotABlob {
                reason: format!(
                    "{} bytes, shorter than the {HEADER_LEN}-byte header",
                    blob.len()
                ),
            });
        };
        if h[..4] != MAGIC {
            return Err(CodecError::NotABlob {
                reason: "wrong magic".into(),
            });
        }
        if h[4] != FORMAT_V2 {
            return Err(CodecError::UnsupportedVersion { version: h[4] });
        }
        let flags = h[5];
        if flags & !(FLAG_ZSTD | FLAG_ENCRYPTED) != 0 {
            return Err(CodecError::corrupt(format!("unknown flags {flags:#04x}")));
        }
        let kind = BlobKind::from_code(h[6])
            .ok_or_else(|| CodecError::corrupt(format!("unknown kind {}", h[6])))?;
        if h[7] != 0 {
            return Err(CodecError::corrupt("reserved header byte is not zero"));
        }
        let mut len = [0u8; 8];
        len.copy_from_slice(&h[8..16]);
        let raw_len = u64::from_le_bytes(len);
        check_len(kind, raw_len)?;
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&h[16..HEADER_LEN]);
        let encrypted = flags & FLAG_ENCRYPTED != 0;
        if !encrypted && nonce != [0; NONCE_LEN] {
            return Err(CodecError::corrupt("a plain blob with a nonce"));
        }
        Ok(BlobHeader {
            kind,
            compressed: flags & FLAG_ZSTD != 0,
            encrypted,
            raw_len,
            nonce,
        })
    }

    fn write(&self, out: &mut [u8]) {
        out[..4].copy_from_slice(&MAGIC);
        out[4] = FORMAT_V2;
        out[5] = (if self.compressed { FLAG_ZSTD } else { 0 })
            | if self.encrypted { FLAG_ENCRYPTED } else { 0 };
        out[6] = self.kind.code();
        out[7] = 0;
        out[8..16].copy_from_slice(&self.raw_len.to_le_bytes());
        out[16..HEADER_LEN].copy_from_slice(&self.nonce);
    }
}

fn check_len(kind: BlobKind, len: u64) -> Result<(), CodecError> {
    let limit = kind.max_raw_len();
    if len > limit {
        return Err(CodecError::TooLarge { kind, len, limit });
    }
    Ok(())
}

/// Bytes after the payload: the AEAD tag, the plain checksum, or nothing (plain chunks).
fn trailer_len(kind: BlobKind, encrypted: bool) -> usize {
    match (encrypted, kind) {
        (true, _) => AEAD_TAG_LEN,
        (false, BlobKind::Chunk) => 0,
        (false, _) => CHECKSUM_LEN,
    }
}

/// The checksum of a plain non-chunk blob: header, kind, name (length-prefixed) and payload.
fn plain_checksum(header: &[u8], kind: BlobKind, name: &str, payload: &[u8]) -> [u8; 32] {
    let mut h = blake3::Hasher::new_derive_key(CHECKSUM_CONTEXT);
    h.update(header);
    h.update(&[kind.code()]);
    h.update(&(name.len() as u64).to_le_bytes());
    h.update(name.as_bytes());
    h.update(payload);
    *h.finalize().as_bytes()
}

/// zstd with "compress only when it helps, decided from samples": shared by the v2 codec
/// and the v1 chunk writer ([`super::store::ChunkEncoder`]).
pub(crate) struct Compressor {
    cctx: zstd::bulk::Compressor<'static>,
    sample_out: Vec<u8>,
}

impl Compressor {
    /// A compressor at zstd `level` (1 fastest … 19; 0 means zstd's default, 3).
    pub(crate) fn new(level: i32) -> Result<Compressor, CodecError> {
        let cctx = zstd::bulk::Compressor::new(level).map_err(|e| CodecError::BadLevel {
            level,
            reason: e.to_string(),
        })?;
        Ok(Compressor {
            cctx,
            sample_out: vec![0; zstd::zstd_safe::compress_bound(SAMPLE_LEN)],
        })
    }

    pub(crate) fn buffer_capacity(&self) -> usize {
        self.sample_out.capacity()
    }

    /// Compresses `raw` into `dst` (at least `raw.len()` bytes) when the result is
    /// strictly smaller; returns its length, or None to store `raw` as it is. Buffers whose
    /// samples do not compress are not tried whole (incompressible data costs only the
    /// samples).
    pub(crate) fn compress_if_smaller(&mut self, raw: &[u8], dst: &mut [u8]) -> Option<usize> {
        if raw.is_empty() || !self.samples_compress(raw) {
            return None;
        }
        // The destination is one byte shorter than the input: zstd fails when the result
        // would not be smaller, which is exactly when we keep the bytes raw.
        let dst = dst.get_mut(..raw.len() - 1)?;
        self.cctx.compress_to_buffer(raw, dst).ok()
    }

    /// Whether a few 4 KiB samples spread across `raw` compress by at least
    /// [`MIN_SAVING_PERCENT`]. Small buffers are always tried whole.
    fn samples_compress(&mut self, raw: &[u8]) -> bool {
        if raw.len() < 4 * SAMPLES * SAMPLE_LEN {
            return true;
        }
        let stride = raw.len() / SAMPLES;
        let mut sampled = 0;
        let mut packed = 0;
        for s in (0..SAMPLES).filter_map(|i| raw.get(i * stride..i * stride + SAMPLE_LEN)) {
            if is_zero(s) {
                return true;
            }
            sampled += s.len();
            packed += match self.cctx.compress_to_buffer(s, &mut self.sample_out[..]) {
                Ok(n) => n,
                Err(_) => s.len(),
            };
        }
        packed * 100 < sampled * (100 - MIN_SAVING_PERCENT)
    }
}

/// The keys an encrypted codec works with.
struct Crypto {
    aead: Aes256Gcm,
    name_key: Zeroizing<[u8; 32]>,
}

/// Encodes and decodes blobs with reusable buffers; one per worker thread. See the module
/// documentation for the format and what is checked.
pub struct Codec {
    crypto: Option<Crypto>,
    compressor: Compressor,
    dctx: zstd::bulk::Decompressor<'static>,
    level: i32,
    /// The blob [`Codec::encode`] returns (aligned for O_DIRECT).
    out: AlignedBuf,
    /// Decrypted zstd payload while decoding.
    scratch: Vec<u8>,
    /// Associated data of the blob at hand.
    aad: Vec<u8>,
}

impl fmt::Debug for Codec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Codec")
            .field("encrypted", &self.crypto.is_some())
            .field("level", &self.level)
            .finish_non_exhaustive()
    }
}

impl Codec {
    /// A codec for an unencrypted vault, compressing at zstd `level`.
    pub fn plain(level: i32) -> Result<Codec, CodecError> {
        Codec::new(None, level)
    }

    /// A codec for an encrypted vault with `keys`, compressing at zstd `level`.
    pub fn encrypted(keys: &VaultKeys, level: i32) -> Result<Codec, CodecError> {
        let crypto = Crypto {
            aead: Aes256Gcm::new(keys.data_key().into()),
            name_key: Zeroizing::new(*keys.name_key()),
        };
        Codec::new(Some(crypto), level)
    }

    fn new(crypto: Option<Crypto>, level: i32) -> Result<Codec, CodecError> {
        let dctx = zstd::bulk::Decompressor::new().map_err(|e| CodecError::Environment {
            what: "creating a zstd decompression context",
            reason: e.to_string(),
        })?;
        Ok(Codec {
            crypto,
            compressor: Compressor::new(level)?,
            dctx,
            level,
            out: AlignedBuf::default(),
            scratch: Vec::new(),
            aad: Vec::new(),
        })
    }

    /// Whether blobs are encrypted (and chunk names keyed).
    pub fn is_encrypted(&self) -> bool {
        self.crypto.is_some()
    }

    /// The name of a chunk with content `raw`: keyed BLAKE3 with the vault's name key,
    /// plain BLAKE3 without a key.
    pub fn chunk_name(&self, raw: &[u8]) -> Digest {
        match &self.crypto {
            Some(c) => *blake3::keyed_hash(&c.name_key, raw).as_bytes(),
            None => *blake3::hash(raw).as_bytes(),
        }
    }

    /// Allocates the output buffer for raw blobs up to `max_len` bytes once, up front.
    pub fn reserve(&mut self, max_len: usize) {
        self.out.get(max_len + MAX_OVERHEAD);
    }

    /// Bytes held by this codec's buffers (for the memory accounting of pipelines).
    pub fn buffer_capacity(&self) -> usize {
        self.out.capacity()
            + self.scratch.capacity()
            + self.aad.capacity()
            + self.compressor.buffer_capacity()
    }

    /// The blob storing `raw` as the object `kind`/`name`, in the codec's reusable
    /// 4 KiB-aligned buffer (valid until the next call). zstd is used when it makes the
    /// payload strictly smaller. A chunk's `name` must be the hex of
    /// [`Codec::chunk_name`] of `raw`.
    pub fn encode(&mut self, kind: BlobKind, name: &str, raw: &[u8]) -> Result<&[u8], CodecError> {
        check_len(kind, raw.len() as u64)?;
        debug_assert!(
            kind != BlobKind::Chunk || digest_hex(&self.chunk_name(raw)) == name,
            "a chunk must be encoded under its name"
        );
        let encrypted = self.crypto.is_some();
        let mut nonce = [0u8; NONCE_LEN];
        if encrypted {
            getrandom::fill(&mut nonce).map_err(|e| CodecError::Environment {
                what: "drawing a random nonce",
                reason: e.to_string(),
            })?;
        }
        let trailer = trailer_len(kind, encrypted);
        let buf = self.out.get(HEADER_LEN + raw.len() + trailer);
        let (head, rest) = buf.split_at_mut(HEADER_LEN);
        let compressed = self.compressor.compress_if_smaller(raw, rest);
        let payload_len = compressed.unwrap_or(raw.len());
        BlobHeader {
            kind,
            compressed: compressed.is_some(),
            encrypted,
            raw_len: raw.len() as u64,
            nonce,
        }
        .write(head);
        let (payload, tail) = rest.split_at_mut(payload_len);
        match &self.crypto {
            Some(c) => {
                fill_aad(&mut self.aad, head, kind, name);
                let nonce = aead::Nonce::<Aes256Gcm>::from(nonce);
                let inout = if compressed.is_some() {
                    InOutBuf::from(payload)
                } else {
                    InOutBuf::new(raw, payload).map_err(|_| CodecError::corrupt("length"))?
                };
                let tag = c
                    .aead
                    .encrypt_inout_detached(&nonce, &self.aad, inout)
                    .map_err(|_| CodecError::TooLarge {
                        kind,
                        len: raw.len() as u64,
                        limit: kind.max_raw_len(),
                    })?;
                tail[..AEAD_TAG_LEN].copy_from_slice(&tag);
            }
            None => {
                if compressed.is_none() {
                    payload.copy_from_slice(raw);
                }
                if trailer > 0 {
                    let sum = plain_checksum(head, kind, name, payload);
                    tail[..CHECKSUM_LEN].copy_from_slice(&sum);
                }
            }
        }
        Ok(&buf[..HEADER_LEN + payload_len + trailer])
    }

    /// Decodes `blob`, read as the object `kind`/`name`, into `out` (4 KiB-aligned, reused):
    /// checks the header, authenticates (encrypted) or checksums (plain non-chunk blobs),
    /// decompresses within the kind's limit and, for a chunk, re-hashes the raw bytes and
    /// compares them with `name`. Returns the raw bytes.
    pub fn decode<'o>(
        &mut self,
        kind: BlobKind,
        name: &str,
        blob: &[u8],
        out: &'o mut AlignedBuf,
    ) -> Result<&'o [u8], CodecError> {
        let raw = self.decode_with(kind, name, blob, |n| out.get(n))?;
        Ok(raw)
    }

    /// Like [`Codec::decode`], into a new vector (for small blobs: manifests, keys, …).
    pub fn decode_to_vec(
        &mut self,
        kind: BlobKind,
        name: &str,
        blob: &[u8],
    ) -> Result<Vec<u8>, CodecError> {
        let mut v = Vec::new();
        let out = &mut v;
        self.decode_with(kind, name, blob, move |n| {
            out.resize(n, 0);
            out.as_mut_slice()
        })?;
        Ok(v)
    }

    /// Decodes into the buffer `alloc(raw length)` returns, called only once the claimed
    /// length is backed by the blob (see the module documentation, "Bounded").
    fn decode_with<'o>(
        &mut self,
        kind: BlobKind,
        name: &str,
        blob: &[u8],
        alloc: impl FnOnce(usize) -> &'o mut [u8],
    ) -> Result<&'o mut [u8], CodecError> {
        let h = BlobHeader::parse(blob)?;
        if h.kind != kind {
            return Err(CodecError::KindMismatch {
                expected: kind,
                found: h.kind,
            });
        }
        match (h.encrypted, self.crypto.is_some()) {
            (true, false) => return Err(CodecError::KeyNeeded),
            (false, true) => return Err(CodecError::NotEncrypted),
            _ => {}
        }
        // Within the kind's limit (checked by `parse`), so it fits in memory.
        let raw_len = h.raw_len as usize;
        let (head, body) = blob.split_at(HEADER_LEN);
        let payload_len = body
            .len()
            .checked_sub(trailer_len(kind, h.encrypted))
            .ok_or_else(|| CodecError::corrupt("shorter than its header and tag (truncated?)"))?;
        let (payload, trailer) = body.split_at(payload_len);
        if h.compressed && payload_len >= raw_len {
            return Err(CodecError::corrupt(format!(
                "compressed payload of {payload_len} bytes is not smaller than its raw length \
                 {raw_len}"
            )));
        }
        if !h.compressed && payload_len != raw_len {
            return Err(CodecError::corrupt(format!(
                "payload is {payload_len} bytes, the header says {raw_len} (truncated?)"
            )));
        }
        let raw = match &self.crypto {
            Some(c) => {
                fill_aad(&mut self.aad, &head[..16], kind, name);
                let nonce = aead::Nonce::<Aes256Gcm>::from(h.nonce);
                let tag = aead::Tag::<Aes256Gcm>::try_from(trailer)
                    .map_err(|_| CodecError::corrupt("tag length"))?;
                let open = |inout: InOutBuf<'_, '_, u8>| {
                    c.aead
                        .decrypt_inout_detached(&nonce, &self.aad, inout, &tag)
                        .map_err(|_| CodecError::AuthenticationFailed)
                };
                if h.compressed {
                    self.scratch.resize(payload_len, 0);
                    open(
                        InOutBuf::new(payload, &mut self.scratch[..])
                            .map_err(|_| CodecError::corrupt("length"))?,
                    )?;
                    decompress(&mut self.dctx, &self.scratch, raw_len, alloc)?
                } else {
                    let raw = alloc(raw_len);
                    open(InOutBuf::new(payload, raw).map_err(|_| CodecError::corrupt("length"))?)?;
                    raw
                }
            }
            None => {
                if !trailer.is_empty() && plain_checksum(head, kind, name, payload) != trailer {
                    return Err(CodecError::ChecksumMismatch);
                }
                if h.compressed {
                    decompress(&mut self.dctx, payload, raw_len, alloc)?
                } else {
                    let raw = alloc(raw_len);
                    raw.copy_from_slice(payload);
                    raw
                }
            }
        };
        if kind == BlobKind::Chunk {
            let actual = digest_hex(&self.chunk_name(raw));
            if actual != name {
                return Err(CodecError::NameMismatch { actual });
            }
        }
        Ok(raw)
    }
}

/// Associated data of an encrypted blob: header bytes 0..16 (magic, version, flags, kind,
/// raw length), the kind asked for, and the name (last, so no length prefix is needed).
fn fill_aad(aad: &mut Vec<u8>, header: &[u8], kind: BlobKind, name: &str) {
    aad.clear();
    aad.extend_from_slice(&header[..16]);
    aad.push(kind.code());
    aad.extend_from_slice(name.as_bytes());
}

/// Decompresses the zstd `payload` into `alloc(raw_len)`, after checking that its frame
/// declares exactly `raw_len` bytes (so a damaged header cannot make us allocate).
fn decompress<'o>(
    dctx: &mut zstd::bulk::Decompressor<'static>,
    payload: &[u8],
    raw_len: usize,
    alloc: impl FnOnce(usize) -> &'o mut [u8],
) -> Result<&'o mut [u8], CodecError> {
    match zstd::zstd_safe::get_frame_content_size(payload) {
        Ok(Some(n)) if n == raw_len as u64 => {}
        Ok(Some(n)) => {
            return Err(CodecError::corrupt(format!(
                "the zstd frame holds {n} bytes, the header says {raw_len}"
            )))
        }
        Ok(None) | Err(_) => {
            return Err(CodecError::corrupt(
                "the payload is not a zstd frame of known size",
            ))
        }
    }
    let raw = alloc(raw_len);
    let n = dctx
        .decompress_to_buffer(payload, &mut *raw)
        .map_err(|e| CodecError::corrupt(format!("the zstd payload does not decompress: {e}")))?;
    if n != raw_len {
        return Err(CodecError::corrupt(format!(
            "decompresses to {n} bytes, the header says {raw_len}"
        )));
    }
    Ok(raw)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vault::keys::MasterKey;
    use crate::vault::store::hex;
    use crate::vault::store::testutil::{compressible, random};
    use proptest::prelude::*;

    fn plain() -> Codec {
        Codec::plain(3).unwrap()
    }

    fn encrypted() -> Codec {
        Codec::encrypted(&MasterKey::generate().unwrap().keys(), 3).unwrap()
    }

    /// The name `codec` gives `raw` as a `kind` object: the chunk name for chunks.
    fn name_of(codec: &Codec, kind: BlobKind, raw: &[u8]) -> String {
        match kind {
            BlobKind::Chunk => digest_hex(&codec.chunk_name(raw)),
            k => format!("{k}-1"),
        }
    }

    /// Encodes and decodes `raw` both ways (aligned buffer and vector); returns the header.
    fn round_trip(codec: &mut Codec, kind: BlobKind, raw: &[u8]) -> BlobHeader {
        let name = name_of(codec, kind, raw);
        let blob = codec.encode(kind, &name, raw).unwrap();
        assert_eq!(
            blob.as_ptr() as usize % 4096,
            0,
            "the blob is 4 KiB-aligned"
        );
        let blob = blob.to_vec();
        let h = BlobHeader::parse(&blob).unwrap();
        let mut out = AlignedBuf::default();
        let got = codec.decode(kind, &name, &blob, &mut out).unwrap();
        assert!(got == raw, "{kind}: {} bytes differ", raw.len());
        if !got.is_empty() {
            assert_eq!(got.as_ptr() as usize % 4096, 0, "decoded bytes are aligned");
        }
        assert!(codec.decode_to_vec(kind, &name, &blob).unwrap() == raw);
        h
    }

    #[test]
    fn every_kind_round_trips_plain_and_encrypted() {
        let mut zeros_random = random(3, 256 << 10);
        zeros_random[..128 << 10].fill(0);
        let samples: [(&str, Vec<u8>, Option<bool>); 6] = [
            ("empty", vec![], Some(false)),
            ("one byte", vec![42], Some(false)),
            ("text", compressible(1, 60_000), Some(true)),
            ("random", random(2, 60_000), Some(false)),
            ("zeros", vec![0; 60_000], Some(true)),
            ("half zeros", zeros_random, None),
        ];
        for codec in [&mut plain(), &mut encrypted()] {
            for kind in BlobKind::ALL {
                for (what, raw, compressed) in &samples {
                    if raw.len() as u64 > kind.max_raw_len() {
                        continue;
                    }
                    let h = round_trip(codec, kind, raw);
                    assert_eq!(h.kind, kind);
                    assert_eq!(h.encrypted, codec.is_encrypted());
                    assert_eq!(h.raw_len, raw.len() as u64);
                    if let Some(c) = compressed {
                        assert_eq!(h.compressed, *c, "{kind}, {what}");
                    }
                }
            }
        }
    }

    #[test]
    fn sixteen_mib_chunks_round_trip_and_more_is_refused() {
        let limit = MAX_CHUNK_SIZE as usize;
        let noise = random(4, limit);
        for codec in [&mut plain(), &mut encrypted()] {
            assert!(!round_trip(codec, BlobKind::Chunk, &noise).compressed);
            assert!(round_trip(codec, BlobKind::Chunk, &vec![0; limit]).compressed);
            let big = vec![1u8; limit + 1];
            let e = codec.encode(BlobKind::Chunk, "x", &big).unwrap_err();
            assert!(matches!(e, CodecError::TooLarge { .. }), "{e}");
        }
    }

    #[test]
    fn incompressible_payloads_cost_only_the_header_and_tag() {
        let noise = random(5, 1 << 20);
        let mut p = plain();
        let n = name_of(&p, BlobKind::Chunk, &noise);
        assert_eq!(
            p.encode(BlobKind::Chunk, &n, &noise).unwrap().len(),
            HEADER_LEN + (1 << 20)
        );
        let n = name_of(&p, BlobKind::Index, &noise);
        assert_eq!(
            p.encode(BlobKind::Index, &n, &noise).unwrap().len(),
            MAX_OVERHEAD + (1 << 20)
        );
        let mut e = encrypted();
        let n = name_of(&e, BlobKind::Chunk, &noise);
        assert_eq!(
            e.encode(BlobKind::Chunk, &n, &noise).unwrap().len(),
            HEADER_LEN + (1 << 20) + AEAD_TAG_LEN
        );
    }

    #[test]
    fn keyed_chunk_names_hide_content_differ_between_keys_and_are_stable() {
        let data = compressible(6, 100_000);
        let master = MasterKey::generate().unwrap();
        let a1 = Codec::encrypted(&master.keys(), 3).unwrap();
        let a2 = Codec::encrypted(&master.keys(), 1).unwrap();
        let b = encrypted();
        let p = plain();
        assert_eq!(
            p.chunk_name(&data),
            *blake3::hash(&data).as_bytes(),
            "v1 names"
        );
        assert_eq!(
            a1.chunk_name(&data),
            a2.chunk_name(&data),
            "stable for one key"
        );
        assert_ne!(a1.chunk_name(&data), p.chunk_name(&data));
        assert_ne!(a1.chunk_name(&data), b.chunk_name(&data));
        assert_ne!(a1.chunk_name(&data), a1.chunk_name(&data[1..]));
    }

    #[test]
    fn a_blob_read_under_another_name_or_kind_fails() {
        let raw = compressible(7, 10_000);
        for mut codec in [plain(), encrypted()] {
            let blob = codec
                .encode(BlobKind::Manifest, "p1", &raw)
                .unwrap()
                .to_vec();
            let e = codec
                .decode_to_vec(BlobKind::Manifest, "p2", &blob)
                .unwrap_err();
            if codec.is_encrypted() {
                assert!(matches!(e, CodecError::AuthenticationFailed), "{e}");
            } else {
                assert!(matches!(e, CodecError::ChecksumMismatch), "{e}");
            }
            let e = codec
                .decode_to_vec(BlobKind::Item, "p1", &blob)
                .unwrap_err();
            assert!(
                matches!(
                    e,
                    CodecError::KindMismatch {
                        expected: BlobKind::Item,
                        found: BlobKind::Manifest
                    }
                ),
                "{e}"
            );
            // A chunk stored under the name of another chunk.
            let other = digest_hex(&codec.chunk_name(b"other"));
            let name = digest_hex(&codec.chunk_name(&raw));
            let chunk = codec.encode(BlobKind::Chunk, &name, &raw).unwrap().to_vec();
            let e = codec
                .decode_to_vec(BlobKind::Chunk, &other, &chunk)
                .unwrap_err();
            if codec.is_encrypted() {
                assert!(matches!(e, CodecError::AuthenticationFailed), "{e}");
            } else {
                assert!(matches!(e, CodecError::NameMismatch { .. }), "{e}");
                assert!(e.to_string().contains(&name), "{e}");
            }
        }
    }

    #[test]
    fn a_wrong_key_fails_authentication_and_plain_and_encrypted_do_not_mix() {
        let raw = compressible(8, 50_000);
        let mut a = encrypted();
        let mut b = encrypted();
        let mut p = plain();
        let blob = a.encode(BlobKind::Index, "i", &raw).unwrap().to_vec();
        let e = b.decode_to_vec(BlobKind::Index, "i", &blob).unwrap_err();
        assert!(matches!(e, CodecError::AuthenticationFailed), "{e}");
        assert!(e.to_string().contains("key is wrong"), "{e}");
        assert!(e.is_bad_blob());
        let e = p.decode_to_vec(BlobKind::Index, "i", &blob).unwrap_err();
        assert!(matches!(e, CodecError::KeyNeeded), "{e}");
        let plain_blob = p.encode(BlobKind::Index, "i", &raw).unwrap().to_vec();
        let e = a
            .decode_to_vec(BlobKind::Index, "i", &plain_blob)
            .unwrap_err();
        assert!(matches!(e, CodecError::NotEncrypted), "{e}");
    }

    #[test]
    fn nonces_are_fresh_for_every_blob() {
        let mut e = encrypted();
        let one = e
            .encode(BlobKind::Config, "config", b"same")
            .unwrap()
            .to_vec();
        let two = e
            .encode(BlobKind::Config, "config", b"same")
            .unwrap()
            .to_vec();
        assert_ne!(one[16..HEADER_LEN], two[16..HEADER_LEN]);
        assert_ne!(one, two);
    }

    /// A codec, a blob it encoded, the kind and name it was encoded as, and its raw bytes.
    type Sample = (Codec, BlobKind, String, Vec<u8>, Vec<u8>);

    /// Small blobs of every kind of layout: plain/encrypted × chunk/other × zstd/raw.
    fn small_blobs() -> Vec<Sample> {
        let mut v = Vec::new();
        for enc in [false, true] {
            for kind in [BlobKind::Chunk, BlobKind::Manifest] {
                for raw in [compressible(9, 300), random(10, 120)] {
                    let mut codec = if enc { encrypted() } else { plain() };
                    let name = name_of(&codec, kind, &raw);
                    let blob = codec.encode(kind, &name, &raw).unwrap().to_vec();
                    v.push((codec, kind, name, raw, blob));
                }
            }
        }
        v
    }

    /// Encrypted blobs and plain non-chunk blobs are authenticated as a whole: no flipped
    /// bit passes. A plain chunk is checked by its name only, so a flip may pass when it
    /// changes nothing that is decoded (zstd's unused frame-header bit), never otherwise.
    #[test]
    fn every_flipped_bit_is_detected() {
        for (mut codec, kind, name, raw, blob) in small_blobs() {
            let h = BlobHeader::parse(&blob).unwrap();
            assert_eq!(h.compressed, raw.len() == 300, "both layouts are covered");
            assert!(codec.decode_to_vec(kind, &name, &blob).unwrap() == raw);
            let whole = h.encrypted || kind != BlobKind::Chunk;
            let mut passed = 0;
            for bit in 0..blob.len() * 8 {
                let mut bad = blob.clone();
                bad[bit / 8] ^= 1 << (bit % 8);
                let what = format!(
                    "{kind}, encrypted {}, compressed {}: flipping bit {bit}",
                    h.encrypted, h.compressed
                );
                match codec.decode_to_vec(kind, &name, &bad) {
                    Err(e) => assert!(e.is_bad_blob(), "{what}: {e}"),
                    Ok(_) if whole => panic!("{what} went unnoticed"),
                    Ok(got) => {
                        assert!(got == raw, "{what} decoded to other content");
                        passed += 1;
                    }
                }
            }
            assert!(
                passed <= 8,
                "{kind}: {passed} flipped bits changed nothing decoded"
            );
        }
    }

    #[test]
    fn every_truncation_and_extension_is_detected() {
        for (mut codec, kind, name, _raw, blob) in small_blobs() {
            for len in 0..blob.len() {
                let r = codec.decode_to_vec(kind, &name, &blob[..len]);
                assert!(
                    r.is_err(),
                    "{kind}: truncated to {len} bytes went unnoticed"
                );
                if len < HEADER_LEN {
                    assert!(matches!(r, Err(CodecError::NotABlob { .. })), "{r:?}");
                }
            }
            let mut longer = blob.clone();
            longer.push(0);
            assert!(codec.decode_to_vec(kind, &name, &longer).is_err());
        }
    }

    #[test]
    fn headers_claiming_too_much_are_refused_before_allocating() {
        let mut p = plain();
        let raw = compressible(11, 1000);
        let name = name_of(&p, BlobKind::Chunk, &raw);
        let blob = p.encode(BlobKind::Chunk, &name, &raw).unwrap().to_vec();
        assert!(BlobHeader::parse(&blob).unwrap().compressed);
        for claim in [
            u64::from(MAX_CHUNK_SIZE) + 1,
            u64::MAX,
            u64::from(MAX_CHUNK_SIZE),
        ] {
            let mut bad = blob.clone();
            bad[8..16].copy_from_slice(&claim.to_le_bytes());
            let mut out = AlignedBuf::default();
            let e = p
                .decode(BlobKind::Chunk, &name, &bad, &mut out)
                .unwrap_err();
            if claim > u64::from(MAX_CHUNK_SIZE) {
                assert!(matches!(e, CodecError::TooLarge { .. }), "{e}");
            } else {
                // Within the limit, but the zstd frame says otherwise.
                assert!(matches!(e, CodecError::Corrupt { .. }), "{e}");
            }
            assert_eq!(out.capacity(), 0, "nothing was allocated for {claim}");
        }
        // An encrypted blob is authenticated before its output is allocated.
        let mut e = encrypted();
        let name = name_of(&e, BlobKind::Chunk, &raw);
        let mut bad = e.encode(BlobKind::Chunk, &name, &raw).unwrap().to_vec();
        bad[8..16].copy_from_slice(&u64::from(MAX_CHUNK_SIZE).to_le_bytes());
        let mut out = AlignedBuf::default();
        let err = e
            .decode(BlobKind::Chunk, &name, &bad, &mut out)
            .unwrap_err();
        assert!(matches!(err, CodecError::AuthenticationFailed), "{err}");
        assert_eq!(out.capacity(), 0);
    }

    #[test]
    fn other_formats_are_told_apart() {
        let mut p = plain();
        let e = p
            .decode_to_vec(BlobKind::Chunk, "x", b"VMVC\x01\x00\x00\x00")
            .unwrap_err();
        assert!(matches!(e, CodecError::NotABlob { .. }), "{e}");
        let mut blob = p
            .encode(BlobKind::Config, "config", b"{}")
            .unwrap()
            .to_vec();
        blob[4] = 3;
        let e = p
            .decode_to_vec(BlobKind::Config, "config", &blob)
            .unwrap_err();
        assert!(
            matches!(e, CodecError::UnsupportedVersion { version: 3 }),
            "{e}"
        );
        assert!(e.to_string().contains("newer"), "{e}");
        // zstd clamps most levels; one it refuses is reported, never a panic.
        for level in [1000, i32::MAX, i32::MIN, -5] {
            match Codec::plain(level) {
                Ok(_) | Err(CodecError::BadLevel { .. }) => {}
                Err(e) => panic!("level {level}: {e}"),
            }
        }
    }

    #[test]
    fn debug_output_shows_no_key() {
        let master = MasterKey::generate().unwrap();
        let keys = master.keys();
        let codec = Codec::encrypted(&keys, 3).unwrap();
        let shown = format!("{codec:?}");
        assert!(shown.contains("encrypted: true"), "{shown}");
        for secret in [keys.data_key(), keys.name_key()] {
            assert!(
                !shown.contains(&crate::vault::store::hex(secret)),
                "{shown}"
            );
            assert!(!shown.contains(format!("{:?}", &secret[..4]).trim_end_matches(']')));
        }
    }

    /// The small kinds round-trip at exactly their limit; one byte more is refused when
    /// encoding, and a header claiming one byte more is refused for every kind.
    #[test]
    fn every_kind_round_trips_at_its_limit_and_refuses_one_byte_more() {
        for codec in [&mut plain(), &mut encrypted()] {
            for kind in BlobKind::ALL {
                let limit = kind.max_raw_len();
                if limit <= 16 << 20 {
                    let limit = limit as usize;
                    let noise = random(12, limit);
                    assert!(!round_trip(codec, kind, &noise).compressed, "{kind}");
                    assert!(
                        round_trip(codec, kind, &vec![7; limit]).compressed,
                        "{kind}"
                    );
                    let e = codec.encode(kind, "n", &vec![7; limit + 1]).unwrap_err();
                    assert!(matches!(e, CodecError::TooLarge { .. }), "{kind}: {e}");
                }
                let name = name_of(codec, kind, b"x");
                let mut blob = codec.encode(kind, &name, b"x").unwrap().to_vec();
                blob[8..16].copy_from_slice(&(limit + 1).to_le_bytes());
                let e = BlobHeader::parse(&blob).unwrap_err();
                assert!(
                    matches!(e, CodecError::TooLarge { kind: k, len, limit: l }
                        if k == kind && len == limit + 1 && l == limit),
                    "{kind}: {e}"
                );
            }
        }
    }

    /// Random bytes, random bytes behind a well-formed header, and valid blobs damaged in
    /// every way (overwritten, cut, extended, header fields rewritten) never panic, never
    /// decode to other content, and never make the decoder allocate more than the blob
    /// holds, except a plain compressed chunk (which may allocate what its zstd frame
    /// declares, at most the chunk limit) or a blob left valid. Deterministic: a fixed seed.
    #[test]
    fn fuzzed_blobs_are_errors_without_panics_or_large_allocations() {
        use crate::vault::store::testutil::Rng;
        let mut rng = Rng::new(0x5eed_c0dec);
        let mut valid = small_blobs();
        let limit_blobs: Vec<_> = [plain(), encrypted()]
            .into_iter()
            .map(|mut c| {
                let blob = c.encode(BlobKind::Index, "i", &[0; 4000]).unwrap().to_vec();
                (c, BlobKind::Index, "i".to_string(), vec![0; 4000], blob)
            })
            .collect();
        valid.extend(limit_blobs);
        for round in 0..20_000u64 {
            let pick = (rng.next() % valid.len() as u64) as usize;
            let (codec, kind, name, raw, blob) = &mut valid[pick];
            let mut input = match round % 3 {
                0 => random(rng.next(), (rng.next() % 1200) as usize),
                1 => {
                    let mut b = blob[..16].to_vec();
                    b[5] = (rng.next() % 4) as u8;
                    b[8..16]
                        .copy_from_slice(&(rng.next() % (2 * kind.max_raw_len())).to_le_bytes());
                    b.extend(random(rng.next(), (rng.next() % 1200) as usize));
                    b
                }
                _ => blob.clone(),
            };
            for _ in 0..1 + rng.next() % 4 {
                let at = (rng.next() % (input.len() as u64 + 1)) as usize;
                let byte = rng.next() as u8;
                match rng.next() % 6 {
                    0 => input.truncate(at),
                    1 => input.insert(at, byte),
                    2 if (8..HEADER_LEN).contains(&at) && input.len() >= 16 => {
                        // A length field rewritten: small, at the kind's limit, or beyond.
                        let claims = [0, 1, kind.max_raw_len(), kind.max_raw_len() + 1, u64::MAX];
                        let claim = claims[(rng.next() % 5) as usize];
                        input[8..16].copy_from_slice(&claim.to_le_bytes());
                    }
                    _ if at < input.len() => input[at] ^= byte | 1,
                    _ => {}
                }
            }
            let mut out = AlignedBuf::default();
            let result = codec
                .decode(*kind, name, &input, &mut out)
                .map(|r| r == raw);
            assert!(
                !matches!(result, Ok(false)),
                "round {round}: {kind} decoded to other content"
            );
            let bound = if result.is_ok() {
                raw.len()
            } else if codec.is_encrypted() || *kind != BlobKind::Chunk {
                input.len()
            } else {
                MAX_CHUNK_SIZE as usize
            };
            assert!(
                out.capacity() <= bound + 4096,
                "round {round}: {kind}, {} bytes allocated for a blob of {}",
                out.capacity(),
                input.len()
            );
        }
    }

    /// The derivations and the layout are pinned: a chunk name and a blob of a known key
    /// must read the same in every later version (otherwise existing vaults break).
    #[test]
    fn known_answers_pin_chunk_names_and_the_blob_layout() {
        let master = MasterKey::from_secret(std::array::from_fn(|i| i as u8));
        let mut e = Codec::encrypted(&master.keys(), 3).unwrap();
        let mut p = plain();
        let content = b"vmvault known answer";
        assert_eq!(
            digest_hex(&e.chunk_name(content)),
            "002e9da2fb0ce6bee6223ba44ba1f0a6c33321f768fcce8e57c76bb0e77c3424"
        );
        assert_eq!(
            digest_hex(&p.chunk_name(content)),
            "7eadfcf21aa7ff32164c808329a25c03d52b672652ce0fdee4227f4271554274",
            "unkeyed names are v1's plain BLAKE3"
        );
        // Plain blobs have no nonce: the bytes are fixed.
        assert_eq!(
            hex(p.encode(BlobKind::Config, "config", content).unwrap()),
            "564d5642020001001400000000000000000000000000000000000000766d7661756c74206b6e6f77\
             6e20616e737765724ec92ffcf849f68bbfbf0f19a5f7fdbc9de9aa668e92de33870813523c75bef5"
        );
        // An encrypted blob written once by this format (its nonce was random).
        let stored = "564d564202020100140000000000000023ac4f6263dbc78438843bf1c76de34d8e318db6c132\
                      7d1bfcfcac31c58f8e9d6df1446b26505f290f8a452cee83c061";
        let stored: Vec<u8> = (0..stored.len() / 2)
            .map(|i| u8::from_str_radix(&stored[2 * i..2 * i + 2], 16).unwrap())
            .collect();
        assert_eq!(
            e.decode_to_vec(BlobKind::Config, "config", &stored)
                .unwrap(),
            content
        );
        let fresh = e.encode(BlobKind::Config, "config", content).unwrap();
        assert_eq!(fresh[..16], stored[..16], "same header, another nonce");
        assert_eq!(fresh.len(), stored.len());
    }

    /// Decoding reuses the caller's buffer and the codec's own: once warm, neither grows
    /// nor moves, whatever the order of the blobs.
    #[test]
    fn decode_and_encode_reuse_their_buffers() {
        for mut codec in [plain(), encrypted()] {
            let raws = [compressible(13, 200_000), random(14, 150_000), vec![0; 100]];
            let blobs: Vec<(String, Vec<u8>)> = raws
                .iter()
                .map(|raw| {
                    let name = name_of(&codec, BlobKind::Chunk, raw);
                    let blob = codec.encode(BlobKind::Chunk, &name, raw).unwrap().to_vec();
                    (name, blob)
                })
                .collect();
            let mut out = AlignedBuf::default();
            for ((name, blob), raw) in blobs.iter().zip(&raws) {
                assert!(codec.decode(BlobKind::Chunk, name, blob, &mut out).unwrap() == raw);
            }
            let warm = (out.capacity(), codec.buffer_capacity());
            let at = out.get(1).as_ptr();
            for _ in 0..3 {
                for ((name, blob), raw) in blobs.iter().zip(&raws).rev() {
                    let got = codec.decode(BlobKind::Chunk, name, blob, &mut out).unwrap();
                    assert!(got == raw);
                    assert_eq!(got.as_ptr(), at, "decoded in place");
                    let enc = codec.encode(BlobKind::Chunk, name, raw).unwrap();
                    assert!(enc.len() <= blob.len() + 1);
                }
                assert_eq!((out.capacity(), codec.buffer_capacity()), warm);
            }
        }
    }

    proptest! {
        // A fixed seed: the same cases on every run and every machine (no flaky CI).
        #![proptest_config(ProptestConfig {
            rng_seed: proptest::test_runner::RngSeed::Fixed(0x0c0d_ec00),
            failure_persistence: None,
            ..ProptestConfig::with_cases(2000)
        })]

        /// Arbitrary bytes, and arbitrary bytes behind a valid-looking header, never panic.
        #[test]
        fn decoding_arbitrary_bytes_never_panics(
            body in proptest::collection::vec(any::<u8>(), 0..600),
            head in proptest::collection::vec(any::<u8>(), 0..HEADER_LEN),
            kind in 0usize..8,
            enc in any::<bool>(),
        ) {
            let kind = BlobKind::ALL[kind];
            let mut codec = if enc { encrypted() } else { plain() };
            let _ = codec.decode_to_vec(kind, "n", &body);
            let mut blob = MAGIC.to_vec();
            blob.push(FORMAT_V2);
            blob.extend_from_slice(&head);
            blob.extend_from_slice(&body);
            let _ = codec.decode_to_vec(kind, "n", &blob);
        }

        /// Damaging a valid blob anywhere (overwrites, cuts, insertions) is never accepted as
        /// other content.
        #[test]
        fn damaged_blobs_never_decode_to_other_content(
            which in 0usize..8,
            edits in proptest::collection::vec((any::<usize>(), any::<u8>(), 0u8..3), 1..6),
        ) {
            let mut blobs = small_blobs();
            let (codec, kind, name, raw, blob) = &mut blobs[which];
            let mut bad = blob.clone();
            for (at, byte, op) in edits {
                let i = at % (bad.len() + 1);
                match op {
                    0 if i < bad.len() => bad[i] = byte,
                    1 => bad.truncate(i),
                    _ => bad.insert(i, byte),
                }
            }
            if let Ok(got) = codec.decode_to_vec(*kind, name, &bad) {
                prop_assert!(&got == raw);
            }
        }
    }
}
