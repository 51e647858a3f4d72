//! The keys of an encrypted vault (format v2): the master key, the key slots that hold it
//! wrapped, key files, the paper key, and reading a passphrase.
//!
//! # The key hierarchy
//! - The **master key** is 32 random bytes, made once per vault and never stored in the
//!   clear. From it, [`blake3::derive_key`] derives the [`VaultKeys`]: the *data key*
//!   (AES-256-GCM, for every blob) and the *name key* (keyed BLAKE3, for chunk names).
//!   Changing a passphrase or adding a key file never re-encrypts data: only a slot changes.
//! - A **key slot** ([`KeySlot`], a JSON object stored in the vault as a `Key` blob) holds
//!   the master key wrapped with AES-256-GCM under a *key-encryption key*:
//!   - a passphrase slot derives it with Argon2id from the passphrase and a random salt,
//!     with the parameters recorded in the slot (default m = 64 MiB, t = 3, p = 1: about
//!     a quarter of a second on a server core, and 64 MiB for every guess);
//!   - a key-file slot takes it from a [`KeyFile`]: 32 random bytes and the vault's id in a
//!     small TOML file, mode 0600, kept outside the vault folder.
//!
//!   The slot's id, kind and KDF parameters are the associated data of the wrapping, so
//!   they cannot be changed or swapped between slots unnoticed. A *check value* derived
//!   from the key-encryption key tells a wrong passphrase or key file
//!   ([`KeyError::WrongKey`]) from a slot whose wrapped key was changed, and a checksum
//!   over all fields tells accidental damage ([`KeyError::SlotDamaged`] in both cases).
//! - The **paper key** ([`MasterKey::paper_key`]) is the master key itself, printable:
//!   Crockford base32 in 14 groups of 4 characters, the last group a checksum, so a typo is
//!   caught before the key is tried (and for one mistyped character or two swapped
//!   neighbours, the group it is in is named). It opens the vault when every slot is lost, and can add
//!   a new slot. Whoever holds it can read every backup of the vault.
//!
//! # Secrets in memory
//! Keys live in types that wipe themselves when dropped ([`zeroize`]) and print as
//! `<secret>` in `Debug`; passphrases are returned as [`Zeroizing`] strings. This is best
//! effort: the allocator, the kernel's pipe buffers and the terminal are out of reach.

use super::store::{hex, parse_hex};
use crate::fsx::{self, FsxError};
use aes_gcm::aead::{self, AeadInOut, KeyInit};
use aes_gcm::Aes256Gcm;
use chrono::{DateTime, SubsecRound, Utc};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

/// Context of [`blake3::derive_key`] for the data key (AES-256-GCM).
pub const DATA_KEY_CONTEXT: &str = "vmvault 2026-12 data key";
/// Context of [`blake3::derive_key`] for the chunk name key (keyed BLAKE3).
pub const NAME_KEY_CONTEXT: &str = "vmvault 2026-12 chunk name key";
const KEY_ID_CONTEXT: &str = "vmvault 2026-12 key id";
const SLOT_CHECK_CONTEXT: &str = "vmvault 2026-12 key slot check";
const SLOT_CHECKSUM_CONTEXT: &str = "vmvault 2026-12 key slot checksum";
const PAPER_CHECK_CONTEXT: &str = "vmvault 2026-12 paper key check";
/// The environment variable naming a file whose first line is the passphrase.
pub const PASSPHRASE_FILE_ENV: &str = "VMVAULT_PASSPHRASE_FILE";
/// The environment variable naming a file that holds the vault's paper key.
pub const PAPER_KEY_FILE_ENV: &str = "VMVAULT_PAPER_KEY_FILE";

const SLOT_FORMAT: u32 = 1;
const KEY_FILE_FORMAT: u32 = 1;
const SALT_LEN: usize = 16;
const NONCE_LEN: usize = 12;
const WRAPPED_LEN: usize = 32 + 16;
const CHECK_LEN: usize = 16;
/// A slot object larger than this is not a slot.
const MAX_SLOT_JSON: usize = 64 << 10;
/// Longest label of a slot, in bytes.
const MAX_LABEL_LEN: usize = 200;
/// Longest passphrase read from a file or a terminal, in bytes.
const MAX_PASSPHRASE_LEN: usize = 4096;

/// Why a key could not be made, stored, read or used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The passphrase or key file does not open the slot.
    #[error("{}", wrong_key_message(*.kind, .slot, .label))]
    WrongKey {
        kind: SlotKind,
        slot: String,
        label: String,
    },
    /// The slot's stored data is damaged or was changed.
    #[error("key slot {slot} is damaged: {reason}. Open the vault with another key slot, a key file or the paper key, and add a new slot if you need one; then remove this slot's file (keys/{slot} in the vault folder) while vmvault is stopped: `vmvault key remove` removes only slots it can read")]
    SlotDamaged { slot: String, reason: String },
    /// A passphrase given to a key-file slot, or the reverse.
    #[error("key slot {slot} is a {actual} slot; it is not opened with a {tried}")]
    SlotKindMismatch {
        slot: String,
        actual: SlotKind,
        tried: SlotKind,
    },
    /// A key file that cannot be read or written (its path is in the message).
    #[error("key file {0}")]
    KeyFileAccess(#[source] FsxError),
    /// A key file whose content is not a vmvault key file.
    #[error("{} is not a usable vmvault key file: {reason}", .path.display())]
    KeyFileInvalid { path: PathBuf, reason: String },
    /// A mistyped or damaged paper key.
    #[error("paper key: {reason}")]
    PaperKey { reason: String },
    /// No passphrase, an empty one, or two that differ.
    #[error("passphrase: {reason}")]
    Passphrase { reason: String },
    /// Argon2id parameters out of range (given, or recorded in a slot).
    #[error("Argon2id parameters: {reason}")]
    KdfParams { reason: String },
    /// The environment: no random numbers, no memory for the KDF, no terminal.
    #[error("{what}: {reason}")]
    Environment { what: &'static str, reason: String },
}

fn wrong_key_message(kind: SlotKind, slot: &str, label: &str) -> String {
    match kind {
        SlotKind::Passphrase => format!(
            "wrong passphrase: it does not open key slot {slot} ({label}). Check the passphrase \
             (and the file it was read from)"
        ),
        SlotKind::Keyfile => format!(
            "wrong key file: it does not open key slot {slot} ({label}); it belongs to another \
             vault or to a slot that was removed"
        ),
    }
}

fn random<const N: usize>(what: &'static str) -> Result<[u8; N], KeyError> {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).map_err(|e| KeyError::Environment {
        what,
        reason: e.to_string(),
    })?;
    Ok(b)
}

/// The vault's master key: 32 random bytes, wiped when dropped.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct MasterKey {
    secret: [u8; 32],
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey(<secret>)")
    }
}

impl MasterKey {
    /// A new random master key (for a new vault).
    pub fn generate() -> Result<MasterKey, KeyError> {
        Ok(MasterKey {
            secret: random("drawing a random master key")?,
        })
    }

    /// A master key with known bytes (known-answer tests of the formats).
    #[cfg(test)]
    pub(crate) fn from_secret(secret: [u8; 32]) -> MasterKey {
        MasterKey { secret }
    }

    /// The keys the codec works with.
    pub fn keys(&self) -> VaultKeys {
        VaultKeys {
            data_key: blake3::derive_key(DATA_KEY_CONTEXT, &self.secret),
            name_key: blake3::derive_key(NAME_KEY_CONTEXT, &self.secret),
        }
    }

    /// A public fingerprint of the master key (16 hex digits): recorded in the vault's
    /// config, it tells a paper key of another vault from a damaged vault. It reveals
    /// nothing about the key.
    pub fn key_id(&self) -> String {
        hex(&blake3::derive_key(KEY_ID_CONTEXT, &self.secret)[..8])
    }

    /// The master key as a printable paper key: 14 groups of 4 Crockford base32 characters
    /// joined by `-`; 52 characters hold the key, the last 4 a checksum.
    pub fn paper_key(&self) -> String {
        let mut bits = BitWriter::default();
        for b in self.secret {
            bits.push(u32::from(b), 8);
        }
        bits.push(0, PAPER_PAD_BITS);
        bits.push(paper_checksum(&self.secret), PAPER_CHECK_BITS);
        let chars: Zeroizing<Vec<u8>> = Zeroizing::new(
            bits.symbols
                .iter()
                .map(|&v| CROCKFORD[usize::from(v)])
                .collect(),
        );
        let groups: Vec<&str> = chars
            .chunks(4)
            .filter_map(|g| std::str::from_utf8(g).ok())
            .collect();
        groups.join("-")
    }

    /// Reads the paper key written in the file at `path` (as typed: see
    /// [`MasterKey::from_paper_key`]). The file must be the user's and private (mode 0600):
    /// whoever reads it can read every backup.
    pub fn read_paper_key_file(path: &Path) -> Result<MasterKey, KeyError> {
        let bytes = Zeroizing::new(
            fsx::read_secret_file(path, fsx::limits::KEY_FILE, "a paper key").map_err(|e| {
                KeyError::PaperKey {
                    reason: e.to_string(),
                }
            })?,
        );
        let text = std::str::from_utf8(&bytes).map_err(|_| KeyError::PaperKey {
            reason: format!("{} is not UTF-8 text", path.display()),
        })?;
        MasterKey::from_paper_key(text).map_err(|e| match e {
            KeyError::PaperKey { reason } => KeyError::PaperKey {
                reason: format!("{}: {reason}", path.display()),
            },
            e => e,
        })
    }

    /// Reads a paper key as typed: case, spaces, dashes and line breaks do not matter, and
    /// `O`, `I` and `L` are read as `0`, `1` and `1` (Crockford). A wrong length, a
    /// character that is not in the alphabet and a typo (the checksum) are told apart.
    pub fn from_paper_key(text: &str) -> Result<MasterKey, KeyError> {
        let bad = |reason: String| KeyError::PaperKey { reason };
        let mut values = Zeroizing::new(Vec::with_capacity(PAPER_CHARS));
        for c in text.chars() {
            if c.is_whitespace() || c == '-' {
                continue;
            }
            let v = crockford_value(c).ok_or_else(|| {
                bad(format!(
                    "`{c}` (character {} of the key) is not a paper-key character: they are \
                     0-9 and A-Z without I, L, O and U",
                    values.len() + 1
                ))
            })?;
            values.push(v);
        }
        if values.len() != PAPER_CHARS {
            return Err(bad(format!(
                "it has {} characters; a paper key has {PAPER_CHARS} (14 groups of 4)",
                values.len()
            )));
        }
        match decode_paper(&values) {
            Some(secret) => Ok(MasterKey { secret: *secret }),
            None => Err(bad(match locate_typo(&values) {
                Some(group) => format!(
                    "the checksum does not match: group {group} of {PAPER_GROUPS} looks \
                     mistyped or misread; compare it with the printed key"
                ),
                None => "the checksum (last group) does not match: a character was mistyped \
                         or misread; compare each group with the printed key"
                    .into(),
            })),
        }
    }

    /// Wraps the master key under `kek` for a slot whose associated data is `aad`.
    fn wrap(
        &self,
        kek: &[u8; 32],
        aad: &[u8],
    ) -> Result<([u8; NONCE_LEN], [u8; WRAPPED_LEN]), KeyError> {
        let nonce = random::<NONCE_LEN>("drawing a random nonce")?;
        let mut wrapped = [0u8; WRAPPED_LEN];
        let (ct, tag_out) = wrapped.split_at_mut(32);
        ct.copy_from_slice(&self.secret);
        let tag = Aes256Gcm::new(kek.into())
            .encrypt_inout_detached(&aead::Nonce::<Aes256Gcm>::from(nonce), aad, ct.into())
            .map_err(|_| KeyError::Environment {
                what: "wrapping the master key",
                reason: "AES-GCM refused the input".into(),
            })?;
        tag_out.copy_from_slice(&tag);
        Ok((nonce, wrapped))
    }
}

/// The keys derived from the master key, wiped when dropped.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct VaultKeys {
    data_key: [u8; 32],
    name_key: [u8; 32],
}

impl fmt::Debug for VaultKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("VaultKeys(<secret>)")
    }
}

impl VaultKeys {
    /// The AES-256-GCM key of every blob.
    pub(crate) fn data_key(&self) -> &[u8; 32] {
        &self.data_key
    }

    /// The key of chunk names (keyed BLAKE3).
    pub(crate) fn name_key(&self) -> &[u8; 32] {
        &self.name_key
    }
}

// ---- paper key ----

/// Crockford's base32 alphabet: no I, L, O, U (easily misread, or accidental words).
const CROCKFORD: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
/// 256 key bits + 4 zero bits = 52 characters; then a 20-bit checksum = 4 characters.
const PAPER_PAD_BITS: u32 = 4;
const PAPER_CHECK_BITS: u32 = 20;
const PAPER_CHARS: usize = 56;
const PAPER_GROUPS: usize = PAPER_CHARS / 4;

fn crockford_value(c: char) -> Option<u8> {
    let c = match c.to_ascii_uppercase() {
        'O' => '0',
        'I' | 'L' => '1',
        c => c,
    };
    CROCKFORD
        .iter()
        .position(|&a| char::from(a) == c)
        .map(|p| p as u8)
}

/// The master key in the paper key's 5-bit `values`, if its padding and checksum match.
fn decode_paper(values: &[u8]) -> Option<Zeroizing<[u8; 32]>> {
    let mut bits = BitReader::new(values);
    let mut secret = Zeroizing::new([0u8; 32]);
    for b in secret.iter_mut() {
        *b = bits.take(8) as u8;
    }
    let pad = bits.take(PAPER_PAD_BITS);
    let check = bits.take(PAPER_CHECK_BITS);
    (pad == 0 && check == paper_checksum(&secret)).then_some(secret)
}

/// The group (1-based) of a paper key with one mistyped character or two swapped
/// neighbours: every such correction that makes the checksum match lies in it. None when
/// no correction does, or corrections in several groups do (the 20-bit checksum leaves a
/// chance of about 1 in 600 of a stray match among the ~1 800 tried).
fn locate_typo(values: &[u8]) -> Option<usize> {
    let mut tried = Zeroizing::new(values.to_vec());
    let mut groups = Vec::new();
    for i in 0..tried.len() {
        let typed = tried[i];
        for v in (0..32).filter(|&v| v != typed) {
            tried[i] = v;
            if decode_paper(&tried).is_some() {
                groups.push(i / 4);
            }
        }
        tried[i] = typed;
        if i + 1 < tried.len() && tried[i] != tried[i + 1] {
            tried.swap(i, i + 1);
            if decode_paper(&tried).is_some() {
                groups.extend([i / 4, (i + 1) / 4]);
            }
            tried.swap(i, i + 1);
        }
    }
    let first = *groups.first()?;
    groups.iter().all(|&g| g == first).then_some(first + 1)
}

fn paper_checksum(secret: &[u8; 32]) -> u32 {
    let h = blake3::derive_key(PAPER_CHECK_CONTEXT, secret);
    (u32::from(h[0]) << 12 | u32::from(h[1]) << 4 | u32::from(h[2]) >> 4) & 0xF_FFFF
}

/// Packs bit fields (most significant first) into 5-bit symbols.
#[derive(Default)]
struct BitWriter {
    acc: u64,
    n: u32,
    symbols: Zeroizing<Vec<u8>>,
}

impl BitWriter {
    fn push(&mut self, value: u32, bits: u32) {
        self.acc = self.acc << bits | u64::from(value);
        self.n += bits;
        while self.n >= 5 {
            self.n -= 5;
            self.symbols.push((self.acc >> self.n) as u8 & 31);
        }
        self.acc &= (1 << self.n) - 1;
    }
}

impl Drop for BitWriter {
    fn drop(&mut self) {
        self.acc.zeroize();
    }
}

/// Reads bit fields (most significant first) from 5-bit symbols.
struct BitReader<'a> {
    symbols: std::slice::Iter<'a, u8>,
    acc: u64,
    n: u32,
}

impl<'a> BitReader<'a> {
    fn new(symbols: &'a [u8]) -> BitReader<'a> {
        BitReader {
            symbols: symbols.iter(),
            acc: 0,
            n: 0,
        }
    }

    /// The next `bits` bits (zeros past the end).
    fn take(&mut self, bits: u32) -> u32 {
        while self.n < bits {
            self.acc = self.acc << 5 | u64::from(self.symbols.next().copied().unwrap_or(0));
            self.n += 5;
        }
        self.n -= bits;
        let v = (self.acc >> self.n) as u32 & ((1 << bits) - 1);
        self.acc &= (1 << self.n) - 1;
        v
    }
}

impl Drop for BitReader<'_> {
    fn drop(&mut self) {
        self.acc.zeroize();
    }
}

// ---- key slots ----

/// What a key slot is opened with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SlotKind {
    Passphrase,
    Keyfile,
}

impl SlotKind {
    fn code(self) -> u8 {
        match self {
            SlotKind::Passphrase => 1,
            SlotKind::Keyfile => 2,
        }
    }
}

impl fmt::Display for SlotKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SlotKind::Passphrase => "passphrase",
            SlotKind::Keyfile => "key file",
        })
    }
}

/// Argon2id cost parameters of a passphrase slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Argon2Params {
    m_kib: u32,
    t: u32,
    p: u32,
}

impl Default for Argon2Params {
    /// m = 64 MiB, t = 3, p = 1 (RFC 9106's second recommended option, with p = 1 so that
    /// unlocking takes the same time on any machine).
    fn default() -> Argon2Params {
        Argon2Params {
            m_kib: 64 << 10,
            t: 3,
            p: 1,
        }
    }
}

impl Argon2Params {
    /// Most memory a slot may ask for (a slot is data someone could have changed: it must
    /// not make unlocking exhaust the machine).
    pub const MAX_M_KIB: u32 = 2 << 20;
    /// Most passes a slot may ask for.
    pub const MAX_T: u32 = 64;
    /// Most lanes a slot may ask for.
    pub const MAX_P: u32 = 16;

    /// Explicit parameters: memory in KiB, passes, lanes. Anything Argon2 accepts up to the
    /// maxima above; weaker than the default only where that is meant (tests).
    pub fn new(m_kib: u32, t: u32, p: u32) -> Result<Argon2Params, KeyError> {
        let bad = |reason: String| KeyError::KdfParams { reason };
        if m_kib > Self::MAX_M_KIB || t > Self::MAX_T || p > Self::MAX_P {
            return Err(bad(format!(
                "m = {m_kib} KiB, t = {t}, p = {p} exceed the limits (m ≤ {} KiB, t ≤ {}, p ≤ {})",
                Self::MAX_M_KIB,
                Self::MAX_T,
                Self::MAX_P
            )));
        }
        argon2::Params::new(m_kib, t, p, Some(32))
            .map_err(|e| bad(format!("m = {m_kib} KiB, t = {t}, p = {p}: {e}")))?;
        Ok(Argon2Params { m_kib, t, p })
    }

    pub fn m_kib(&self) -> u32 {
        self.m_kib
    }
    pub fn t(&self) -> u32 {
        self.t
    }
    pub fn p(&self) -> u32 {
        self.p
    }

    /// The key-encryption key of `passphrase` with `salt`.
    fn derive(&self, passphrase: &str, salt: &[u8]) -> Result<Zeroizing<[u8; 32]>, KeyError> {
        let params = argon2::Params::new(self.m_kib, self.t, self.p, Some(32)).map_err(|e| {
            KeyError::KdfParams {
                reason: e.to_string(),
            }
        })?;
        let mut kek = Zeroizing::new([0u8; 32]);
        argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
            .hash_password_into(passphrase.as_bytes(), salt, &mut kek[..])
            .map_err(|e| KeyError::Environment {
                what: "deriving a key from the passphrase (Argon2id)",
                reason: e.to_string(),
            })?;
        Ok(kek)
    }
}

/// The KDF record of a passphrase slot, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KdfRecord {
    alg: String,
    m_kib: u32,
    t: u32,
    p: u32,
    #[serde(with = "hex_bytes")]
    salt: [u8; SALT_LEN],
}

const ARGON2ID: &str = "argon2id";

/// One way into the vault: the master key wrapped under a passphrase or a key file. Stored
/// as JSON ([`KeySlot::to_json`]) in a `Key` object named by its id.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeySlot {
    format: u32,
    id: String,
    kind: SlotKind,
    label: String,
    created: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    kdf: Option<KdfRecord>,
    #[serde(with = "hex_bytes")]
    nonce: [u8; NONCE_LEN],
    #[serde(with = "hex_bytes")]
    wrapped: [u8; WRAPPED_LEN],
    #[serde(with = "hex_bytes")]
    check: [u8; CHECK_LEN],
    #[serde(with = "hex_bytes")]
    checksum: [u8; 32],
}

impl fmt::Debug for KeySlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeySlot")
            .field("id", &self.id)
            .field("kind", &self.kind)
            .field("label", &self.label)
            .field("created", &self.created)
            .finish_non_exhaustive()
    }
}

/// Length-prefixed bytes, for unambiguous hashing and associated data.
fn put_field(out: &mut Vec<u8>, field: &[u8]) {
    out.extend_from_slice(&(field.len() as u64).to_le_bytes());
    out.extend_from_slice(field);
}

/// The check value of a key-encryption key: tells a wrong key from a damaged slot.
fn check_value(kek: &[u8; 32]) -> [u8; CHECK_LEN] {
    let mut c = [0u8; CHECK_LEN];
    c.copy_from_slice(&blake3::derive_key(SLOT_CHECK_CONTEXT, kek)[..CHECK_LEN]);
    c
}

impl KeySlot {
    /// A passphrase slot for `master`: the key-encryption key is Argon2id of `passphrase`
    /// with a new random salt and `params`.
    pub fn for_passphrase(
        master: &MasterKey,
        passphrase: &str,
        params: Argon2Params,
        label: &str,
    ) -> Result<KeySlot, KeyError> {
        if passphrase.is_empty() {
            return Err(KeyError::Passphrase {
                reason: "an empty passphrase protects nothing; choose one".into(),
            });
        }
        let kdf = KdfRecord {
            alg: ARGON2ID.into(),
            m_kib: params.m_kib,
            t: params.t,
            p: params.p,
            salt: random("drawing a random salt")?,
        };
        let kek = params.derive(passphrase, &kdf.salt)?;
        KeySlot::seal(master, &kek, SlotKind::Passphrase, Some(kdf), label)
    }

    /// A key-file slot for `master`, opened by `key_file`.
    pub fn for_key_file(
        master: &MasterKey,
        key_file: &KeyFile,
        label: &str,
    ) -> Result<KeySlot, KeyError> {
        KeySlot::seal(master, &key_file.kek, SlotKind::Keyfile, None, label)
    }

    fn seal(
        master: &MasterKey,
        kek: &[u8; 32],
        kind: SlotKind,
        kdf: Option<KdfRecord>,
        label: &str,
    ) -> Result<KeySlot, KeyError> {
        check_label(label)?;
        let mut slot = KeySlot {
            format: SLOT_FORMAT,
            id: hex(&random::<8>("drawing a slot id")?),
            kind,
            label: label.to_string(),
            created: Utc::now().trunc_subsecs(0),
            kdf,
            nonce: [0; NONCE_LEN],
            wrapped: [0; WRAPPED_LEN],
            check: check_value(kek),
            checksum: [0; 32],
        };
        (slot.nonce, slot.wrapped) = master.wrap(kek, &slot.associated_data())?;
        slot.checksum = slot.compute_checksum();
        Ok(slot)
    }

    /// The slot's id: also the name of its object in the vault.
    pub fn id(&self) -> &str {
        &self.id
    }
    pub fn kind(&self) -> SlotKind {
        self.kind
    }
    pub fn label(&self) -> &str {
        &self.label
    }
    pub fn created(&self) -> DateTime<Utc> {
        self.created
    }
    /// The recorded Argon2id parameters of a passphrase slot.
    pub fn kdf_params(&self) -> Option<Argon2Params> {
        self.kdf.as_ref().map(|k| Argon2Params {
            m_kib: k.m_kib,
            t: k.t,
            p: k.p,
        })
    }

    /// The slot as stored.
    pub fn to_json(&self) -> Result<Vec<u8>, KeyError> {
        serde_json::to_vec_pretty(self).map_err(|e| KeyError::Environment {
            what: "writing a key slot as JSON",
            reason: e.to_string(),
        })
    }

    /// Reads the slot stored as the object `name`: refused as damaged when it is not a
    /// slot, fails its checksum, or names another id (a slot moved to another name).
    pub fn from_json(name: &str, json: &[u8]) -> Result<KeySlot, KeyError> {
        let damaged = |reason: String| KeyError::SlotDamaged {
            slot: name.to_string(),
            reason,
        };
        if json.len() > MAX_SLOT_JSON {
            return Err(damaged(format!(
                "{} bytes, more than a slot can be",
                json.len()
            )));
        }
        let slot: KeySlot =
            serde_json::from_slice(json).map_err(|e| damaged(format!("not a key slot ({e})")))?;
        if slot.format != SLOT_FORMAT {
            return Err(damaged(format!(
                "slot format {} is not known to this vmvault (it reads {SLOT_FORMAT})",
                slot.format
            )));
        }
        if slot.compute_checksum() != slot.checksum {
            return Err(damaged("its checksum does not match its content".into()));
        }
        if slot.id != name {
            return Err(damaged(format!(
                "it is slot {}, stored under another name",
                slot.id
            )));
        }
        if slot.kind == SlotKind::Keyfile && slot.kdf.is_some() {
            return Err(damaged("a key-file slot with a KDF record".into()));
        }
        if slot.kind == SlotKind::Passphrase {
            slot.argon2_params()?;
        }
        Ok(slot)
    }

    /// The Argon2id parameters recorded in a passphrase slot, refused (before anything is
    /// derived) when they are not Argon2id or beyond [`Argon2Params`]' limits: a slot is
    /// data someone could have written, and must not make unlocking exhaust the machine.
    fn argon2_params(&self) -> Result<Argon2Params, KeyError> {
        let kdf = self
            .kdf
            .as_ref()
            .ok_or_else(|| self.damaged("no KDF record"))?;
        if kdf.alg != ARGON2ID {
            return Err(self.damaged(&format!("unknown KDF `{}`", kdf.alg)));
        }
        Argon2Params::new(kdf.m_kib, kdf.t, kdf.p).map_err(|e| self.damaged(&e.to_string()))
    }

    /// Opens the slot with `passphrase`.
    pub fn unlock_with_passphrase(&self, passphrase: &str) -> Result<MasterKey, KeyError> {
        self.expect_kind(SlotKind::Passphrase)?;
        let params = self.argon2_params()?;
        let salt = self.kdf.as_ref().map(|k| k.salt).unwrap_or_default();
        let kek = params.derive(passphrase, &salt)?;
        self.unwrap_with(&kek)
    }

    /// Opens the slot with `key_file`.
    pub fn unlock_with_key_file(&self, key_file: &KeyFile) -> Result<MasterKey, KeyError> {
        self.expect_kind(SlotKind::Keyfile)?;
        self.unwrap_with(&key_file.kek)
    }

    fn expect_kind(&self, tried: SlotKind) -> Result<(), KeyError> {
        if self.kind != tried {
            return Err(KeyError::SlotKindMismatch {
                slot: self.id.clone(),
                actual: self.kind,
                tried,
            });
        }
        Ok(())
    }

    fn damaged(&self, reason: &str) -> KeyError {
        KeyError::SlotDamaged {
            slot: self.id.clone(),
            reason: reason.to_string(),
        }
    }

    fn unwrap_with(&self, kek: &[u8; 32]) -> Result<MasterKey, KeyError> {
        if check_value(kek) != self.check {
            return Err(KeyError::WrongKey {
                kind: self.kind,
                slot: self.id.clone(),
                label: self.label.clone(),
            });
        }
        let (ct, tag) = self.wrapped.split_at(32);
        let mut master = MasterKey { secret: [0; 32] };
        let tag = aead::Tag::<Aes256Gcm>::try_from(tag)
            .map_err(|_| self.damaged("wrapped key of the wrong length"))?;
        Aes256Gcm::new(kek.into())
            .decrypt_inout_detached(
                &aead::Nonce::<Aes256Gcm>::from(self.nonce),
                &self.associated_data(),
                aead::inout::InOutBuf::new(ct, &mut master.secret)
                    .map_err(|_| self.damaged("wrapped key of the wrong length"))?,
                &tag,
            )
            .map_err(|_| {
                self.damaged(
                    "the key is right, but the wrapped master key does not authenticate: the \
                     slot was changed",
                )
            })?;
        Ok(master)
    }

    /// What the wrapping authenticates besides the key: format, id, kind and KDF record.
    fn associated_data(&self) -> Vec<u8> {
        let mut ad = b"vmvault key slot".to_vec();
        ad.extend_from_slice(&self.format.to_le_bytes());
        put_field(&mut ad, self.id.as_bytes());
        ad.push(self.kind.code());
        if let Some(k) = &self.kdf {
            put_field(&mut ad, k.alg.as_bytes());
            for v in [k.m_kib, k.t, k.p] {
                ad.extend_from_slice(&v.to_le_bytes());
            }
            ad.extend_from_slice(&k.salt);
        }
        ad
    }

    /// Checksum of every field (against accidental damage; it holds no secret).
    fn compute_checksum(&self) -> [u8; 32] {
        let mut h = blake3::Hasher::new_derive_key(SLOT_CHECKSUM_CONTEXT);
        let mut fields = self.associated_data();
        put_field(&mut fields, self.label.as_bytes());
        fields.extend_from_slice(&self.created.timestamp().to_le_bytes());
        fields.extend_from_slice(&self.created.timestamp_subsec_nanos().to_le_bytes());
        fields.extend_from_slice(&self.nonce);
        fields.extend_from_slice(&self.wrapped);
        fields.extend_from_slice(&self.check);
        h.update(&fields);
        *h.finalize().as_bytes()
    }
}

fn check_label(label: &str) -> Result<(), KeyError> {
    if label.len() > MAX_LABEL_LEN || label.chars().any(char::is_control) {
        return Err(KeyError::Passphrase {
            reason: format!(
                "a slot label is one line of at most {MAX_LABEL_LEN} bytes, without control \
                 characters"
            ),
        });
    }
    Ok(())
}

/// Fixed-size byte arrays as lower-case hex in JSON and TOML.
mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer, const N: usize>(b: &[u8; N], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::hex(b))
    }

    pub fn deserialize<'de, D: Deserializer<'de>, const N: usize>(
        d: D,
    ) -> Result<[u8; N], D::Error> {
        let s = String::deserialize(d)?;
        super::parse_hex(&s)
            .ok_or_else(|| serde::de::Error::custom(format!("expected {} hex digits", 2 * N)))
    }
}

// ---- key files ----

/// A key file: a random key-encryption key for the vault `vault_id`, kept outside the
/// vault (TOML, mode 0600). The key is wiped when dropped.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct KeyFile {
    #[zeroize(skip)]
    vault_id: String,
    kek: [u8; 32],
}

impl fmt::Debug for KeyFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyFile")
            .field("vault_id", &self.vault_id)
            .field("key", &"<secret>")
            .finish()
    }
}

/// A key file as stored.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyFileToml {
    format: u32,
    vault_id: String,
    key: Zeroizing<String>,
}

impl KeyFile {
    /// A new random key file for the vault `vault_id`.
    pub fn generate(vault_id: &str) -> Result<KeyFile, KeyError> {
        Ok(KeyFile {
            vault_id: vault_id.to_string(),
            kek: random("drawing a random key")?,
        })
    }

    /// The id of the vault this key file is for.
    pub fn vault_id(&self) -> &str {
        &self.vault_id
    }

    /// Writes the key file as the new file `path` (mode 0600): never through a symlink,
    /// never over an existing file, and whole or not at all.
    pub fn write_new(&self, path: &Path) -> Result<(), KeyError> {
        let (folder, name) = split_path(path)?;
        let dir = fsx::Dir::open_user(folder).map_err(KeyError::KeyFileAccess)?;
        let text = Zeroizing::new(format!(
            "# vmvault key file: it opens the vault below. Keep it secret (mode 0600) and keep a\n\
             # copy somewhere safe: without it, a passphrase or the paper key, the vault's backups\n\
             # cannot be read.\n\
             format = {KEY_FILE_FORMAT}\n\
             vault_id = {}\n\
             key = \"{}\"\n",
            toml::Value::String(self.vault_id.clone()),
            Zeroizing::new(hex(&self.kek[..])).as_str()
        ));
        dir.write_new(name, text.as_bytes(), 0o600)
            .map_err(KeyError::KeyFileAccess)
    }

    /// Reads the key file at `path`: a regular file of at most a few KiB, refused when its
    /// group or others can read it (with the `chmod` that fixes it).
    pub fn read(path: &Path) -> Result<KeyFile, KeyError> {
        let bytes = Zeroizing::new(
            fsx::read_secret_file(path, fsx::limits::KEY_FILE, "a vault key")
                .map_err(KeyError::KeyFileAccess)?,
        );
        let invalid = |reason: String| KeyError::KeyFileInvalid {
            path: path.to_path_buf(),
            reason,
        };
        let text = std::str::from_utf8(&bytes).map_err(|_| invalid("not UTF-8 text".into()))?;
        // The parser's message only: its usual snippet of the line would print the key.
        let raw: KeyFileToml = toml::from_str(text).map_err(|e| {
            let line = e
                .span()
                .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
            invalid(match line {
                Some(l) => format!("not a key file (line {l}: {})", e.message()),
                None => format!("not a key file ({})", e.message()),
            })
        })?;
        if raw.format != KEY_FILE_FORMAT {
            return Err(invalid(format!(
                "key file format {} is not known to this vmvault (it reads {KEY_FILE_FORMAT})",
                raw.format
            )));
        }
        let kek = parse_hex::<32>(raw.key.trim())
            .ok_or_else(|| invalid("`key` is not 64 hex digits".into()))?;
        Ok(KeyFile {
            vault_id: raw.vault_id,
            kek,
        })
    }
}

/// The folder and file name of `path` (the folder `.` for a bare name).
fn split_path(path: &Path) -> Result<(&Path, &std::ffi::OsStr), KeyError> {
    let name = path.file_name().ok_or_else(|| KeyError::KeyFileInvalid {
        path: path.to_path_buf(),
        reason: "the path names no file".into(),
    })?;
    let folder = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    Ok((folder, name))
}

// ---- passphrase input ----

/// Secret text (a passphrase being typed or handed to the engine): wiped when dropped,
/// `<secret>` in `Debug`, and no `Display`, so it cannot end up in a log or a message by
/// accident. Room for the longest passphrase is reserved up front, so typing never moves
/// (and leaves behind) a copy.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Zeroizing<String>);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<secret>)")
    }
}

impl Default for Secret {
    fn default() -> Secret {
        Secret(Zeroizing::new(String::with_capacity(
            MAX_PASSPHRASE_LEN + 4,
        )))
    }
}

impl From<Zeroizing<String>> for Secret {
    fn from(s: Zeroizing<String>) -> Secret {
        Secret(s)
    }
}

impl Secret {
    /// The text, for the one place that needs it (deriving a key).
    pub fn expose(&self) -> &str {
        &self.0
    }
    /// Appends a typed character (up to [`MAX_PASSPHRASE_LEN`] bytes; more is dropped).
    pub fn push(&mut self, c: char) {
        if self.0.len() + c.len_utf8() <= MAX_PASSPHRASE_LEN {
            self.0.push(c);
        }
    }
    /// Removes the last character.
    pub fn pop(&mut self) {
        self.0.pop();
    }
    /// Wipes the text.
    pub fn clear(&mut self) {
        self.0.zeroize();
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    /// Characters typed (to draw as many dots).
    pub fn chars(&self) -> usize {
        self.0.chars().count()
    }
}

/// The passphrase file named by [`PASSPHRASE_FILE_ENV`], if set.
pub fn passphrase_file_from_env() -> Option<PathBuf> {
    std::env::var_os(PASSPHRASE_FILE_ENV)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// The paper key file named by [`PAPER_KEY_FILE_ENV`], if set.
pub fn paper_key_file_from_env() -> Option<PathBuf> {
    std::env::var_os(PAPER_KEY_FILE_ENV)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// The passphrase from, in this order: `file` (a `--passphrase-file` flag), the file named
/// by [`PASSPHRASE_FILE_ENV`], or a prompt on the terminal without echo.
pub fn read_passphrase(file: Option<&Path>, prompt: &str) -> Result<Zeroizing<String>, KeyError> {
    match file
        .map(Path::to_path_buf)
        .or_else(passphrase_file_from_env)
    {
        Some(p) => read_passphrase_file(&p),
        None => prompt_passphrase(prompt),
    }
}

/// The first line of the file at `path` (at most 64 KiB are read), without its line end.
pub fn read_passphrase_file(path: &Path) -> Result<Zeroizing<String>, KeyError> {
    let bytes = Zeroizing::new(
        fsx::read_input_file(path, fsx::limits::PASSPHRASE_FILE, "a passphrase file").map_err(
            |e| KeyError::Passphrase {
                reason: e.to_string(),
            },
        )?,
    );
    let line = bytes.split(|&b| b == b'\n').next().unwrap_or_default();
    passphrase_from_line(line, &format!("the first line of {}", path.display()))
}

/// A passphrase from one line of input (without its `\n`; a `\r` before it is dropped).
fn passphrase_from_line(line: &[u8], from: &str) -> Result<Zeroizing<String>, KeyError> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let bad = |reason: String| KeyError::Passphrase { reason };
    if line.is_empty() {
        return Err(bad(format!("{from} is empty")));
    }
    if line.len() > MAX_PASSPHRASE_LEN {
        return Err(bad(format!(
            "{from} is longer than {MAX_PASSPHRASE_LEN} bytes"
        )));
    }
    let text = std::str::from_utf8(line).map_err(|_| bad(format!("{from} is not UTF-8 text")))?;
    Ok(Zeroizing::new(text.to_string()))
}

/// Asks for the passphrase on the terminal (`/dev/tty`) without echoing it.
pub fn prompt_passphrase(prompt: &str) -> Result<Zeroizing<String>, KeyError> {
    prompt_on(&open_tty()?, prompt)
}

/// Asks for a new passphrase twice on the terminal; both must match.
pub fn prompt_new_passphrase() -> Result<Zeroizing<String>, KeyError> {
    let tty = open_tty()?;
    let first = prompt_on(&tty, "New passphrase: ")?;
    let second = prompt_on(&tty, "Repeat the new passphrase: ")?;
    if first != second {
        return Err(KeyError::Passphrase {
            reason: "the two passphrases differ; nothing was changed".into(),
        });
    }
    Ok(first)
}

fn open_tty() -> Result<File, KeyError> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")
        .map_err(|e| KeyError::Passphrase {
            reason: format!(
                "no terminal to ask on ({e}); give it with --passphrase-file or \
                 {PASSPHRASE_FILE_ENV}"
            ),
        })
}

/// Turns the terminal's echo off until dropped (also on an early return or a panic).
struct EchoOff<'a> {
    tty: &'a File,
    saved: libc::termios,
}

impl<'a> EchoOff<'a> {
    fn new(tty: &'a File) -> std::io::Result<EchoOff<'a>> {
        let mut t = std::mem::MaybeUninit::<libc::termios>::uninit();
        // SAFETY: tcgetattr fills the whole struct on success.
        if unsafe { libc::tcgetattr(tty.as_raw_fd(), t.as_mut_ptr()) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: initialised by the successful call above.
        let saved = unsafe { t.assume_init() };
        let mut quiet = saved;
        // No echo of what is typed; the final newline is still echoed (ECHONL).
        quiet.c_lflag &= !(libc::ECHO | libc::ECHOE | libc::ECHOK);
        quiet.c_lflag |= libc::ECHONL | libc::ICANON;
        // SAFETY: a valid termios for a descriptor we hold open.
        if unsafe { libc::tcsetattr(tty.as_raw_fd(), libc::TCSAFLUSH, &quiet) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(EchoOff { tty, saved })
    }
}

impl Drop for EchoOff<'_> {
    fn drop(&mut self) {
        // SAFETY: restores the settings read in `new` on the same open descriptor.
        unsafe { libc::tcsetattr(self.tty.as_raw_fd(), libc::TCSANOW, &self.saved) };
    }
}

/// Writes `prompt` to the terminal `tty` and reads one line without echo.
fn prompt_on(tty: &File, prompt: &str) -> Result<Zeroizing<String>, KeyError> {
    let term_err = |e: std::io::Error| KeyError::Environment {
        what: "asking for the passphrase on the terminal",
        reason: e.to_string(),
    };
    let _echo_off = EchoOff::new(tty).map_err(term_err)?;
    let mut out = tty;
    out.write_all(prompt.as_bytes())
        .and_then(|_| out.flush())
        .map_err(term_err)?;
    let mut line = Zeroizing::new(Vec::with_capacity(MAX_PASSPHRASE_LEN + 1));
    let mut byte = [0u8; 1];
    let mut input = tty;
    loop {
        match input.read(&mut byte) {
            Ok(0) => break,
            Ok(_) if byte[0] == b'\n' => break,
            Ok(_) if line.len() > MAX_PASSPHRASE_LEN => {}
            Ok(_) => line.push(byte[0]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(term_err(e)),
        }
    }
    byte.zeroize();
    passphrase_from_line(&line, "the passphrase typed")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::skip;
    use std::os::unix::fs::{symlink, PermissionsExt};

    /// Argon2id parameters cheap enough for tests (the default costs 64 MiB and ~0.25 s).
    fn cheap() -> Argon2Params {
        Argon2Params::new(256, 1, 1).unwrap()
    }

    fn private_tmp() -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        std::fs::set_permissions(t.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        t
    }

    /// Both keys of `a` and `b` are the same.
    fn same_keys(a: &MasterKey, b: &MasterKey) -> bool {
        let (a, b) = (a.keys(), b.keys());
        a.data_key() == b.data_key() && a.name_key() == b.name_key()
    }

    /// The slot as stored, with `edit` applied to its JSON and the checksum made valid
    /// again (what someone who can write the vault can do).
    fn forged(slot: &KeySlot, edit: impl FnOnce(&mut serde_json::Value)) -> Vec<u8> {
        let mut v: serde_json::Value = serde_json::from_slice(&slot.to_json().unwrap()).unwrap();
        edit(&mut v);
        let mut s: KeySlot = serde_json::from_value(v).unwrap();
        s.checksum = s.compute_checksum();
        serde_json::to_vec(&s).unwrap()
    }

    #[test]
    fn a_passphrase_slot_opens_with_its_passphrase_only() {
        let master = MasterKey::generate().unwrap();
        let slot = KeySlot::for_passphrase(&master, "correct horse", cheap(), "admin").unwrap();
        let stored = KeySlot::from_json(slot.id(), &slot.to_json().unwrap()).unwrap();
        assert_eq!(
            (stored.kind(), stored.label()),
            (SlotKind::Passphrase, "admin")
        );
        let opened = stored.unlock_with_passphrase("correct horse").unwrap();
        assert!(same_keys(&opened, &master));
        assert_eq!(opened.key_id(), master.key_id());
        let e = stored.unlock_with_passphrase("correct horse ").unwrap_err();
        assert!(matches!(e, KeyError::WrongKey { .. }), "{e}");
        assert!(e.to_string().contains("wrong passphrase"), "{e}");
        assert!(e.to_string().contains(slot.id()), "{e}");
        let e = stored
            .unlock_with_key_file(&KeyFile::generate("v").unwrap())
            .unwrap_err();
        assert!(matches!(e, KeyError::SlotKindMismatch { .. }), "{e}");
        let e = KeySlot::for_passphrase(&master, "", cheap(), "x").unwrap_err();
        assert!(matches!(e, KeyError::Passphrase { .. }), "{e}");
    }

    #[test]
    fn argon2_parameters_are_recorded_in_the_slot_and_authenticated() {
        assert_eq!(
            Argon2Params::default(),
            Argon2Params::new(64 << 10, 3, 1).unwrap(),
            "the default is m = 64 MiB, t = 3, p = 1"
        );
        let master = MasterKey::generate().unwrap();
        let params = Argon2Params::new(512, 2, 1).unwrap();
        let slot = KeySlot::for_passphrase(&master, "pw", params, "").unwrap();
        let json: serde_json::Value = serde_json::from_slice(&slot.to_json().unwrap()).unwrap();
        assert_eq!(json["kdf"]["alg"], "argon2id");
        assert_eq!(
            (&json["kdf"]["m_kib"], &json["kdf"]["t"], &json["kdf"]["p"]),
            (&512.into(), &2.into(), &1.into())
        );
        assert_eq!(json["kdf"]["salt"].as_str().unwrap().len(), 2 * SALT_LEN);
        let stored = KeySlot::from_json(slot.id(), &slot.to_json().unwrap()).unwrap();
        assert_eq!(stored.kdf_params(), Some(params));
        // Weaker parameters written into the slot: the derived key is another one.
        let weaker = forged(&slot, |v| v["kdf"]["m_kib"] = 256.into());
        let weaker = KeySlot::from_json(slot.id(), &weaker).unwrap();
        let e = weaker.unlock_with_passphrase("pw").unwrap_err();
        assert!(matches!(e, KeyError::WrongKey { .. }), "{e}");
    }

    /// A slot is data someone could have written: parameters that would make unlocking
    /// take 100 GiB or hours are refused before anything is derived.
    #[test]
    fn absurd_argon2_parameters_from_a_slot_are_refused_before_deriving() {
        let master = MasterKey::generate().unwrap();
        let slot = KeySlot::for_passphrase(&master, "pw", cheap(), "").unwrap();
        let cases: [(&str, u64); 5] = [
            ("m_kib", 100 << 20),
            ("m_kib", u64::from(Argon2Params::MAX_M_KIB) + 1),
            ("t", u64::from(u32::MAX)),
            ("p", 0),
            ("p", 1 << 20),
        ];
        for (field, value) in cases {
            let json = forged(&slot, |v| v["kdf"][field] = value.into());
            let e = KeySlot::from_json(slot.id(), &json).unwrap_err();
            assert!(
                matches!(e, KeyError::SlotDamaged { .. }),
                "{field} = {value}: {e}"
            );
            assert!(e.to_string().contains("Argon2id"), "{e}");
        }
        let json = forged(&slot, |v| v["kdf"]["alg"] = "scrypt".into());
        let e = KeySlot::from_json(slot.id(), &json).unwrap_err();
        assert!(e.to_string().contains("unknown KDF `scrypt`"), "{e}");
        for (m, t, p) in [
            (Argon2Params::MAX_M_KIB + 1, 1, 1),
            (1024, 0, 1),
            (1024, 1, 0),
        ] {
            assert!(Argon2Params::new(m, t, p).is_err(), "{m} {t} {p}");
        }
        assert!(Argon2Params::new(Argon2Params::MAX_M_KIB, 1, 1).is_ok());
    }

    #[test]
    fn a_changed_or_moved_slot_is_refused_as_damaged() {
        let master = MasterKey::generate().unwrap();
        let kf = KeyFile::generate("vault-1").unwrap();
        let slot = KeySlot::for_key_file(&master, &kf, "laptop").unwrap();
        let json = slot.to_json().unwrap();
        let e = KeySlot::from_json("0011223344556677", &json).unwrap_err();
        assert!(e.to_string().contains("stored under another name"), "{e}");
        let relabelled = String::from_utf8(json.clone())
            .unwrap()
            .replace("laptop", "server");
        let e = KeySlot::from_json(slot.id(), relabelled.as_bytes()).unwrap_err();
        assert!(e.to_string().contains("checksum"), "{e}");
        for bad in [&b"{}"[..], b"not json", &vec![b' '; MAX_SLOT_JSON + 1]] {
            let e = KeySlot::from_json(slot.id(), bad).unwrap_err();
            assert!(matches!(e, KeyError::SlotDamaged { .. }), "{e}");
        }
        // The wrapped key changed by someone who also fixed the checksum.
        let tampered = forged(&slot, |v| {
            let w = v["wrapped"].as_str().unwrap().to_string();
            v["wrapped"] =
                format!("{}{}", if &w[..2] == "00" { "01" } else { "00" }, &w[2..]).into();
        });
        let e = KeySlot::from_json(slot.id(), &tampered)
            .unwrap()
            .unlock_with_key_file(&kf)
            .unwrap_err();
        assert!(e.to_string().contains("the slot was changed"), "{e}");
        // A KDF record slipped into a key-file slot.
        let mixed = forged(&slot, |v| {
            v["kdf"] = serde_json::json!({"alg": "argon2id", "m_kib": 256, "t": 1, "p": 1,
                "salt": "00112233445566778899aabbccddeeff"});
        });
        assert!(KeySlot::from_json(slot.id(), &mixed).is_err());
    }

    #[test]
    fn a_key_file_is_written_new_and_owner_only_and_opens_its_slot() {
        let t = private_tmp();
        let path = t.path().join("vault.key");
        let master = MasterKey::generate().unwrap();
        let kf = KeyFile::generate("vault-1").unwrap();
        let slot = KeySlot::for_key_file(&master, &kf, "key file").unwrap();
        kf.write_new(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let read = KeyFile::read(&path).unwrap();
        assert_eq!(read.vault_id(), "vault-1");
        assert!(same_keys(
            &slot.unlock_with_key_file(&read).unwrap(),
            &master
        ));
        // Never replaced: the first key file stays as it was.
        let before = std::fs::read(&path).unwrap();
        let other = KeyFile::generate("vault-1").unwrap();
        let e = other.write_new(&path).unwrap_err();
        assert!(e.to_string().contains("already exists"), "{e}");
        assert_eq!(std::fs::read(&path).unwrap(), before);
        // Another key file does not open the slot.
        let e = slot.unlock_with_key_file(&other).unwrap_err();
        assert!(matches!(e, KeyError::WrongKey { .. }), "{e}");
        assert!(e.to_string().contains("wrong key file"), "{e}");
        assert!(slot.unlock_with_passphrase("pw").is_err());
        // No temp files are left behind.
        let names: Vec<_> = std::fs::read_dir(t.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["vault.key"]);
    }

    #[test]
    fn a_key_file_is_never_written_through_a_symlink() {
        let t = private_tmp();
        let target = t.path().join("target");
        let link = t.path().join("vault.key");
        symlink(&target, &link).unwrap();
        let kf = KeyFile::generate("v").unwrap();
        let e = kf.write_new(&link).unwrap_err();
        assert!(matches!(e, KeyError::KeyFileAccess(_)), "{e}");
        assert!(!target.exists(), "nothing written where the link points");
        std::fs::write(&target, b"precious").unwrap();
        assert!(kf.write_new(&link).is_err());
        assert_eq!(std::fs::read(&target).unwrap(), b"precious");
    }

    #[test]
    fn a_key_file_others_can_read_or_of_another_user_is_refused_with_the_fix() {
        let t = private_tmp();
        let path = t.path().join("vault.key");
        KeyFile::generate("v").unwrap().write_new(&path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = KeyFile::read(&path).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains(&format!("chmod 600 '{}'", path.display())),
            "{msg}"
        );
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(KeyFile::read(&path).is_ok());
        if crate::fsx::euid() != 0 {
            skip("chown to another user needs root");
            return;
        }
        std::os::unix::fs::chown(&path, Some(65534), None).unwrap();
        let e = KeyFile::read(&path).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("belongs to") && msg.contains("chown root"),
            "{msg}"
        );
    }

    #[test]
    fn a_malformed_key_file_is_refused_without_printing_its_key() {
        let t = private_tmp();
        let secret = "eab17bca".repeat(8);
        let path = t.path().join("k");
        std::fs::write(
            &path,
            format!("format = 1\nvault_id = \"v\"\nkey = {secret}\n"),
        )
        .unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let e = KeyFile::read(&path).unwrap_err().to_string();
        assert!(e.contains("line 3"), "{e}");
        assert!(!e.contains("eab17bca"), "the key is in the message: {e}");
    }

    #[test]
    fn a_file_that_is_no_key_file_is_refused() {
        let t = private_tmp();
        let cases: [(&str, &[u8], &str); 5] = [
            ("garbage", b"\xff\xfe", "not UTF-8"),
            ("empty", b"", "not a key file"),
            (
                "short key",
                b"format = 1\nvault_id = \"v\"\nkey = \"abcd\"\n",
                "64 hex digits",
            ),
            (
                "future",
                b"format = 9\nvault_id = \"v\"\nkey = \"00\"\n",
                "format 9",
            ),
            (
                "extra",
                b"format = 1\nvault_id = \"v\"\nkey = \"00\"\nmore = 1\n",
                "not a key file",
            ),
        ];
        for (name, text, says) in cases {
            let path = t.path().join(name);
            std::fs::write(&path, text).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
            let e = KeyFile::read(&path).unwrap_err();
            assert!(matches!(e, KeyError::KeyFileInvalid { .. }), "{name}: {e}");
            assert!(e.to_string().contains(says), "{name}: {e}");
        }
        let e = KeyFile::read(&t.path().join("missing")).unwrap_err();
        assert!(matches!(e, KeyError::KeyFileAccess(_)), "{e}");
    }

    #[test]
    fn the_paper_key_round_trips_however_it_is_typed() {
        let master = MasterKey::generate().unwrap();
        let paper = master.paper_key();
        let groups: Vec<&str> = paper.split('-').collect();
        assert_eq!(groups.len(), PAPER_GROUPS);
        assert!(groups
            .iter()
            .all(|g| g.len() == 4 && g.bytes().all(|c| CROCKFORD.contains(&c))));
        let sloppy = paper
            .to_lowercase()
            .replace('-', " ")
            .replace('0', "o")
            .replace('1', "l");
        for typed in [
            paper.clone(),
            sloppy,
            format!("  {}\n", paper.replace('-', "")),
        ] {
            assert!(
                same_keys(&MasterKey::from_paper_key(&typed).unwrap(), &master),
                "{typed}"
            );
        }
        // Known answer: the layout of the paper key is fixed for good.
        let known = MasterKey::from_secret([0xA5; 32]).paper_key();
        assert!(known.starts_with("MPJT-B9D5-MPJT"), "{known}");
        assert!(same_keys(
            &MasterKey::from_paper_key(&known).unwrap(),
            &MasterKey::from_secret([0xA5; 32])
        ));
    }

    #[test]
    fn a_paper_key_typo_is_caught_and_its_group_named() {
        let master = MasterKey::from_secret(std::array::from_fn(|i| (i * 37) as u8));
        let paper = master.paper_key();
        let mut named = 0;
        for (i, c) in paper.char_indices().filter(|(_, c)| *c != '-') {
            let group = i / 5 + 1;
            let typo = if c == 'X' { 'Y' } else { 'X' };
            let mut bad = paper.clone();
            bad.replace_range(i..i + 1, &typo.to_string());
            let e = MasterKey::from_paper_key(&bad).unwrap_err();
            let msg = e.to_string();
            assert!(msg.contains("checksum does not match"), "{msg}");
            if msg.contains(&format!("group {group} of 14")) {
                named += 1;
            } else {
                assert!(
                    !msg.contains("group "),
                    "position {i}: a wrong group in {msg}"
                );
            }
        }
        assert!(named >= 54, "the group was named for {named} of 56 typos");
        // Two neighbours swapped.
        let mut chars: Vec<char> = paper.chars().collect();
        let at = chars
            .iter()
            .zip(&chars[1..])
            .position(|(a, b)| a != b && *a != '-' && *b != '-')
            .unwrap();
        chars.swap(at, at + 1);
        let swapped: String = chars.into_iter().collect();
        let e = MasterKey::from_paper_key(&swapped).unwrap_err();
        assert!(
            e.to_string()
                .contains(&format!("group {} of 14", at / 5 + 1)),
            "{e}"
        );
        // Wrong length and a character outside the alphabet are told apart.
        let e = MasterKey::from_paper_key(&paper[..paper.len() - 2]).unwrap_err();
        assert!(e.to_string().contains("54 characters"), "{e}");
        let e = MasterKey::from_paper_key(&paper.replacen(&paper[..1], "U", 1)).unwrap_err();
        assert!(e.to_string().contains("`U` (character 1"), "{e}");
    }

    #[test]
    fn secrets_are_wiped_and_never_shown() {
        fn wiped_on_drop<T: ZeroizeOnDrop>(_: &T) {}
        let master = MasterKey::generate().unwrap();
        let keys = master.keys();
        let kf = KeyFile::generate("vault-7").unwrap();
        wiped_on_drop(&master);
        wiped_on_drop(&keys);
        wiped_on_drop(&kf);
        let slot = KeySlot::for_key_file(&master, &kf, "lbl").unwrap();
        let shown = format!("{master:?} {keys:?} {kf:?} {slot:?} {master:#?} {kf:#?}");
        assert!(
            shown.contains("vault-7") && shown.contains("lbl"),
            "{shown}"
        );
        let secrets: [&[u8]; 5] = [
            &master.secret,
            keys.data_key(),
            keys.name_key(),
            &kf.kek,
            &slot.wrapped,
        ];
        for secret in secrets {
            assert!(!shown.contains(&hex(secret)), "{shown}");
            assert!(!shown.contains(&hex(secret).to_uppercase()), "{shown}");
            assert!(
                !shown.contains(format!("{:?}", &secret[..3]).trim_end_matches(']')),
                "{shown}"
            );
        }
        let mut wiped = MasterKey::from_secret([9; 32]);
        wiped.zeroize();
        assert_eq!(wiped.secret, [0; 32]);
        let mut wiped = KeyFile::generate("v").unwrap();
        wiped.zeroize();
        assert_eq!((wiped.kek, wiped.vault_id()), ([0; 32], "v"));
    }

    #[test]
    fn secret_text_never_prints_and_is_bounded() {
        let mut s = Secret::default();
        for c in "hunter2".chars() {
            s.push(c);
        }
        s.pop();
        assert_eq!((s.expose(), s.chars()), ("hunter", 6));
        let shown = format!("{s:?} {s:#?}");
        assert!(!shown.contains("hunter"), "{shown}");
        let capacity = s.0.capacity();
        for _ in 0..MAX_PASSPHRASE_LEN + 10 {
            s.push('é');
        }
        assert!(s.expose().len() <= MAX_PASSPHRASE_LEN);
        assert_eq!(s.0.capacity(), capacity, "typing never reallocates");
        s.clear();
        assert!(s.is_empty());
    }

    #[test]
    fn a_passphrase_file_gives_its_first_line_bounded() {
        let t = private_tmp();
        let file = |name: &str, text: &[u8]| {
            let p = t.path().join(name);
            std::fs::write(&p, text).unwrap();
            p
        };
        let p = file("crlf", b"s3cret pass\r\nsecond line\n");
        assert_eq!(read_passphrase_file(&p).unwrap().as_str(), "s3cret pass");
        let p = file("bare", b"no newline");
        assert_eq!(
            read_passphrase(Some(&p), "unused").unwrap().as_str(),
            "no newline"
        );
        for (name, text, says) in [
            ("empty", &b""[..], "is empty"),
            ("blank", b"\nafter", "is empty"),
            (
                "long line",
                &[b'a'; MAX_PASSPHRASE_LEN + 1][..],
                "longer than 4096",
            ),
            ("binary", b"\xff\xfe\n", "not UTF-8"),
        ] {
            let e = read_passphrase_file(&file(name, text)).unwrap_err();
            assert!(e.to_string().contains(says), "{name}: {e}");
        }
        let big = file(
            "big",
            &vec![b'a'; fsx::limits::PASSPHRASE_FILE as usize + 1],
        );
        let e = read_passphrase_file(&big).unwrap_err();
        assert!(e.to_string().contains("too large"), "{e}");
    }

    #[test]
    fn a_passphrase_file_that_is_a_fifo_is_refused_without_waiting() {
        let t = private_tmp();
        let fifo = t.path().join("fifo");
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let e = read_passphrase_file(&fifo).unwrap_err();
        assert!(e.to_string().contains("FIFO"), "{e}");
        assert!(read_passphrase_file(Path::new("/dev/zero")).is_err());
        assert!(read_passphrase_file(t.path()).is_err(), "a folder");
    }
}
