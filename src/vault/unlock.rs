//! The keys of an encrypted vault at open: where its key slots live, making the keys of a
//! new vault, and unlocking them with a key file or a passphrase.
//!
//! # Where things are
//! - The **key slots** are files in the vault's `keys/` folder, one per slot, named by the
//!   slot's id (the JSON of [`KeySlot`], which authenticates itself: see
//!   [`crate::vault::keys`]). They hold the master key only wrapped.
//! - The **key file** lives outside the vault folder: by default
//!   `<config folder>/keys/<vault id>.key` (mode 0600), or where the vault's `key_file`
//!   says. Losing both the key file and every passphrase (and the paper key) loses the
//!   backups: nobody, vmvault included, can read them.
//! - The catalog records the master key's id (`key_id`): a key that unlocks a slot but is
//!   not the vault's (slots swapped by someone who can write the vault) is refused.
//!
//! # A new vault
//! The master key, the key file and its slot are made right after the catalog and the
//! marker. A kill in between leaves an encrypted vault without a slot and without data,
//! which the next open completes (reusing a key file of that vault left by the killed
//! run); an encrypted vault with data and no slot is refused.

use super::folder::VaultFolder;
use super::keys::{self, KeyError, KeyFile, KeySlot, MasterKey, SlotKind};
use crate::fsx::{Dir, FsxError};
use std::path::{Path, PathBuf};

/// The folder of key slots in a vault folder.
pub const KEYS_DIR: &str = "keys";
const NO_PASSPHRASE: &str = "no passphrase file given";
/// Largest key slot file read.
const SLOT_LIMIT: u64 = 64 << 10;

/// Why the keys of a vault cannot be made or opened.
#[derive(Debug, thiserror::Error)]
pub enum UnlockError {
    #[error("{0}")]
    Key(#[from] KeyError),
    #[error("vault keys: {0}")]
    Unsafe(#[from] FsxError),
    /// Nothing given opens the vault.
    #[error("vault {} is encrypted and no key was found that opens it: {tried}. Give its key file (the vault's `key_file` in the config, default {}) or a passphrase file (VMVAULT_PASSPHRASE_FILE)", .vault.display(), .default_key_file.display())]
    NoKey {
        vault: PathBuf,
        default_key_file: PathBuf,
        tried: String,
    },
    /// The vault's slots are gone while its data is there.
    #[error("vault {} is encrypted but its key slots (the `keys` folder) are missing or empty while it holds data. Put `keys/` back from a copy of the vault folder", .vault.display())]
    NoSlots { vault: PathBuf },
    /// The key unlocks a slot but is not the vault's.
    #[error("vault {}: the key that opened slot {slot} is not this vault's key (its id is {found}, the catalog records {expected}): the key slots were replaced. Nothing was read or written. Put the vault's own `keys/` back from a copy", .vault.display())]
    ForeignKey {
        vault: PathBuf,
        slot: String,
        found: String,
        expected: String,
    },
    /// A key slot file that is not one.
    #[error("key slot {} is damaged or not a key slot: {reason}", .path.display())]
    BadSlot { path: PathBuf, reason: String },
}

/// What may open a vault's keys.
#[derive(Debug, Clone)]
pub struct KeySource {
    /// The key file configured for the vault (`key_file`), if any.
    pub key_file: Option<PathBuf>,
    /// The folder of default key files (`<config folder>/keys`), if there is a config
    /// folder.
    pub key_dir: Option<PathBuf>,
    /// A file whose first line is a passphrase (`VMVAULT_PASSPHRASE_FILE`).
    pub passphrase_file: Option<PathBuf>,
}

impl KeySource {
    /// The key file of vault `vault_id`: the configured one, else the default one.
    pub fn key_file_for(&self, vault_id: &str) -> Option<PathBuf> {
        self.key_file.clone().or_else(|| {
            self.key_dir
                .as_ref()
                .map(|d| d.join(format!("{vault_id}.key")))
        })
    }
}

/// The key slots of the vault in `folder`, in the order of their ids.
pub fn slots(folder: &VaultFolder) -> Result<Vec<KeySlot>, UnlockError> {
    let (good, bad) = readable_slots(folder)?;
    match bad.into_iter().next() {
        Some(e) => Err(UnlockError::BadSlot {
            path: folder.dir().path_of(KEYS_DIR),
            reason: e,
        }),
        None => Ok(good),
    }
}

/// The key slots of the vault in `folder` that can be read, and what is wrong with the
/// files of `keys/` that cannot (a stray or damaged file must not lock the vault out while
/// a good slot opens it).
pub fn readable_slots(folder: &VaultFolder) -> Result<(Vec<KeySlot>, Vec<String>), UnlockError> {
    let dir = match folder.dir().subdir(KEYS_DIR, false) {
        Ok(d) => d,
        Err(e) if is_not_found(&e) => return Ok((Vec::new(), Vec::new())),
        Err(e) => return Err(e.into()),
    };
    let mut names: Vec<String> = dir
        .entry_names()?
        .into_iter()
        .filter_map(|n| n.into_string().ok())
        .filter(|n| !n.starts_with('.'))
        .collect();
    names.sort();
    let (mut good, mut bad) = (Vec::new(), Vec::new());
    for name in names {
        match read_slot(&dir, &name) {
            Ok(s) => good.push(s),
            Err(e) => bad.push(e.to_string()),
        }
    }
    Ok((good, bad))
}

fn read_slot(dir: &Dir, name: &str) -> Result<KeySlot, UnlockError> {
    use std::io::Read;
    let path = dir.path_of(name);
    let bad = |reason: String| UnlockError::BadSlot {
        path: path.clone(),
        reason,
    };
    let f = dir.open_read(name)?;
    let mut bytes = Vec::new();
    f.take(SLOT_LIMIT + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| bad(e.to_string()))?;
    if bytes.len() as u64 > SLOT_LIMIT {
        return Err(bad("larger than any key slot".into()));
    }
    let slot = KeySlot::from_json(name, &bytes)?;
    if slot.id() != name {
        return Err(bad(format!(
            "it says it is slot {}, under the name {name}",
            slot.id()
        )));
    }
    Ok(slot)
}

/// Adds `slot` to the vault in `folder`: a new file, durable when this returns, never
/// replacing one.
pub fn add_slot(folder: &VaultFolder, slot: &KeySlot) -> Result<(), UnlockError> {
    let dir = folder.dir().subdir(KEYS_DIR, true)?;
    let json = slot.to_json()?;
    dir.write_new(slot.id(), &json, 0o600)?;
    dir.sync()?;
    Ok(())
}

/// Makes the keys of the new vault `vault_id` in `folder`: a master key, a key file at
/// `key_file` (reused when a killed earlier creation of this vault left it) and its slot.
pub fn create_keys(
    folder: &VaultFolder,
    vault_id: &str,
    key_file: &Path,
) -> Result<MasterKey, UnlockError> {
    let kf = match KeyFile::read(key_file) {
        Ok(kf) if kf.vault_id() == vault_id => kf,
        Ok(_) => {
            return Err(KeyError::KeyFileInvalid {
                path: key_file.to_path_buf(),
                reason: format!("it is the key file of another vault, not of the new vault {vault_id}; move it away or set another key_file"),
            }
            .into())
        }
        Err(KeyError::KeyFileAccess(e)) if is_not_found(&e) => {
            if let Some(parent) = key_file.parent().filter(|p| !p.as_os_str().is_empty()) {
                Dir::open_private(parent, true)?;
            }
            let kf = KeyFile::generate(vault_id)?;
            kf.write_new(key_file)?;
            kf
        }
        Err(e) => return Err(e.into()),
    };
    let master = MasterKey::generate()?;
    let slot = KeySlot::for_key_file(&master, &kf, "key file")?;
    add_slot(folder, &slot)?;
    Ok(master)
}

/// Opens the master key of the vault `vault_id` in `folder` with what `source` gives: its
/// key file first, then a passphrase file. Every slot is tried with each.
pub fn unlock(
    folder: &VaultFolder,
    vault_id: &str,
    source: &KeySource,
) -> Result<(MasterKey, String), UnlockError> {
    let (slots, unreadable) = readable_slots(folder)?;
    if slots.is_empty() && unreadable.is_empty() {
        return Err(UnlockError::NoSlots {
            vault: folder.path().to_path_buf(),
        });
    }
    let mut tried = Vec::new();
    let mut last_wrong: Option<KeyError> = None;
    if let Some(path) = source.key_file_for(vault_id) {
        match KeyFile::read(&path) {
            Ok(kf) => {
                for slot in slots.iter().filter(|s| s.kind() == SlotKind::Keyfile) {
                    match slot.unlock_with_key_file(&kf) {
                        Ok(m) => return Ok((m, slot.id().to_string())),
                        Err(e @ KeyError::WrongKey { .. }) => last_wrong = Some(e),
                        Err(e) => return Err(e.into()),
                    }
                }
                tried.push(format!("key file {} opens no key slot", path.display()));
            }
            Err(KeyError::KeyFileAccess(e)) if is_not_found(&e) => {
                tried.push(format!("no key file at {}", path.display()));
            }
            Err(e) => return Err(e.into()),
        }
    }
    let passphrase_file = source
        .passphrase_file
        .clone()
        .or_else(keys::passphrase_file_from_env);
    match passphrase_file {
        Some(pf) => {
            let pass = keys::read_passphrase_file(&pf)?;
            for slot in slots.iter().filter(|s| s.kind() == SlotKind::Passphrase) {
                match slot.unlock_with_passphrase(&pass) {
                    Ok(m) => return Ok((m, slot.id().to_string())),
                    Err(e @ KeyError::WrongKey { .. }) => last_wrong = Some(e),
                    Err(e) => return Err(e.into()),
                }
            }
            tried.push(format!(
                "the passphrase in {} opens no key slot",
                pf.display()
            ));
        }
        None => tried.push(NO_PASSPHRASE.into()),
    }
    tried.extend(
        unreadable
            .into_iter()
            .map(|e| format!("{e} (remove it if it is not a key slot)")),
    );
    let has_passphrase_slot = slots.iter().any(|s| s.kind() == SlotKind::Passphrase);
    if !has_passphrase_slot {
        tried.retain(|t| t != NO_PASSPHRASE);
    }
    if let (Some(e), true) = (last_wrong, tried.len() == 1) {
        return Err(e.into());
    }
    Err(UnlockError::NoKey {
        vault: folder.path().to_path_buf(),
        default_key_file: source
            .key_file_for(vault_id)
            .unwrap_or_else(|| PathBuf::from(format!("<config folder>/keys/{vault_id}.key"))),
        tried: tried.join("; "),
    })
}

/// Whether `e` says a file is not there.
fn is_not_found(e: &FsxError) -> bool {
    e.io_error()
        .is_some_and(|e| e.kind() == std::io::ErrorKind::NotFound)
}
