//! The keys of an encrypted vault at open: where its key slots live, making the keys of a
//! new vault, and unlocking them with a key file or a passphrase.
//!
//! # Where things are
//! - The **key slots** are [`ObjectKind::Key`] objects of the vault's backend (files in
//!   the vault's `keys/` folder on the local one), one per slot, named by the slot's id
//!   (the JSON of [`KeySlot`], which authenticates itself: see [`crate::vault::keys`]).
//!   They hold the master key only wrapped.
//! - The **key file** lives outside the vault folder: by default
//!   `<config folder>/keys/<vault id>.key` (mode 0600), or where the vault's `key_file`
//!   says. Losing both the key file and every passphrase (and the paper key) loses the
//!   backups: nobody, vmvault included, can read them.
//! - The catalog records the master key's id (`key_id`): a key that unlocks a slot but is
//!   not the vault's (slots swapped by someone who can write the vault) is refused, and so
//!   is a paper key of another vault.
//!
//! # Opening
//! In this order: a paper key when one is given (`VMVAULT_PAPER_KEY_FILE`,
//! `--paper-key-file`: it is the master key itself, so it opens a vault whose slots are all
//! lost), the vault's key file, a passphrase file (`--passphrase-file`,
//! `VMVAULT_PASSPHRASE_FILE`), and last a passphrase typed on the terminal when the front end
//! allows asking ([`KeySource::prompt`]).
//!
//! # Changing slots
//! A slot is added with a conditional create (never replacing an object; durable when it
//! returns) and removed by a delete and a sync of the store: each change is durable when
//! it returns, and a kill leaves each slot either whole or absent. Replacing a slot (a new passphrase) adds
//! the new one before removing the old, so a kill in between leaves both working.
//!
//! # A new vault
//! The master key, the key file and its slot are made right after the catalog and the
//! marker. A kill in between leaves an encrypted vault without a slot and without data,
//! which the next open completes (reusing a key file of that vault left by the killed
//! run); an encrypted vault with data and no slot is refused.

use super::backend::{Backend, BackendError, Created, ObjectKind, ObjectName};
use super::folder::VaultFolder;
use super::keys::{self, KeyError, KeyFile, KeySlot, MasterKey, SlotKind};
use crate::fsx::{Dir, FsxError};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The folder of key slots in a vault folder.
pub const KEYS_DIR: &str = "keys";
/// Largest key slot file read.
const SLOT_LIMIT: u64 = 64 << 10;

/// Why the keys of a vault cannot be made or opened.
#[derive(Debug, thiserror::Error)]
pub enum UnlockError {
    #[error("{0}")]
    Key(#[from] KeyError),
    #[error("vault keys: {0}")]
    Unsafe(#[from] FsxError),
    #[error("vault keys: {0}")]
    Storage(#[from] BackendError),
    /// Nothing given opens the vault.
    #[error("vault {} is encrypted and no key was found that opens it: {tried}. Give {ways}", .vault.display())]
    NoKey {
        vault: PathBuf,
        /// What was tried, and why it did not open the vault.
        tried: String,
        /// The ways the vault's slots can be opened, and the paper key.
        ways: String,
    },
    /// The vault's slots are gone while its data is there.
    #[error("vault {} is encrypted but its key slots (the `keys` folder) are missing or empty while it holds data. Put `keys/` back from a copy of the vault folder, or open the vault with its paper key (--paper-key-file FILE or VMVAULT_PAPER_KEY_FILE) and add a new key with `vmvault key add`", .vault.display())]
    NoSlots { vault: PathBuf },
    /// The key unlocks a slot but is not the vault's.
    #[error("vault {}: the key that opened {slot} is not this vault's key (its id is {found}, the catalog records {expected}): the key slots were replaced. Nothing was read or written. Put the vault's own `keys/` back from a copy", .vault.display())]
    ForeignKey {
        vault: PathBuf,
        slot: String,
        found: String,
        expected: String,
    },
    /// A key slot file that is not one.
    #[error("key slot {} is damaged or not a key slot: {reason}", .path.display())]
    BadSlot { path: PathBuf, reason: String },
    /// A paper key that is not this vault's, or that cannot be checked.
    #[error("vault {}: {reason}. Nothing was read or written", .vault.display())]
    PaperKeyRefused { vault: PathBuf, reason: String },
}

impl UnlockError {
    /// Whether what the user gave is at fault (a wrong passphrase, key file or paper key,
    /// none given, a key file others can read): the fix is theirs and nothing was changed.
    /// Otherwise the vault's keys are damaged or the environment failed.
    pub fn is_user_input(&self) -> bool {
        match self {
            UnlockError::Key(k) => matches!(
                k,
                KeyError::WrongKey { .. }
                    | KeyError::SlotKindMismatch { .. }
                    | KeyError::KeyFileAccess(_)
                    | KeyError::KeyFileInvalid { .. }
                    | KeyError::PaperKey { .. }
                    | KeyError::Passphrase { .. }
            ),
            UnlockError::NoKey { .. } | UnlockError::PaperKeyRefused { .. } => true,
            UnlockError::Unsafe(_)
            | UnlockError::Storage(_)
            | UnlockError::NoSlots { .. }
            | UnlockError::ForeignKey { .. }
            | UnlockError::BadSlot { .. } => false,
        }
    }
}

/// What may open a vault's keys.
#[derive(Debug, Clone, Default)]
pub struct KeySource {
    /// The key file configured for the vault (`key_file`), if any.
    pub key_file: Option<PathBuf>,
    /// The folder of default key files (`<config folder>/keys`), if there is a config
    /// folder.
    pub key_dir: Option<PathBuf>,
    /// A file whose first line is a passphrase (`--passphrase-file`; else
    /// `VMVAULT_PASSPHRASE_FILE` is read).
    pub passphrase_file: Option<PathBuf>,
    /// A file holding the paper key (`--paper-key-file`; else `VMVAULT_PAPER_KEY_FILE` is
    /// read).
    pub paper_key_file: Option<PathBuf>,
    /// Whether a passphrase may be asked on the terminal when nothing else opens the vault
    /// (the command line on a terminal; never the console, which owns the screen).
    pub prompt: bool,
}

/// What opened a vault's master key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Opened {
    /// A key slot (by id), with a key file or a passphrase.
    Slot { id: String, kind: SlotKind },
    /// The paper key (no slot).
    PaperKey,
}

impl Opened {
    /// The slot that opened the vault, if one did.
    pub fn slot_id(&self) -> Option<&str> {
        match self {
            Opened::Slot { id, .. } => Some(id),
            Opened::PaperKey => None,
        }
    }
}

impl std::fmt::Display for Opened {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Opened::Slot { id, kind } => write!(f, "{kind} slot {id}"),
            Opened::PaperKey => f.write_str("the paper key"),
        }
    }
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

/// The store of the key slots of the vault in `folder`; None when it has none (a vault
/// of format 1, or one whose keys were never made: nothing is made by looking).
fn slot_store(folder: &VaultFolder) -> Result<Option<Arc<dyn Backend>>, UnlockError> {
    Ok(folder.existing_objects(ObjectKind::Key)?)
}

/// The key slots of the vault in `folder`, in the order of their ids.
pub fn slots(folder: &VaultFolder) -> Result<Vec<KeySlot>, UnlockError> {
    let (good, bad) = readable_slots(folder)?;
    match bad.into_iter().next() {
        Some(e) => Err(UnlockError::BadSlot {
            path: match folder.remote() {
                Some(r) => PathBuf::from(format!("{}/{}", r.location(), ObjectKind::Key)),
                None => folder.dir().path_of(KEYS_DIR),
            },
            reason: e,
        }),
        None => Ok(good),
    }
}

/// The key slots of the vault in `folder` that can be read, and what is wrong with what
/// cannot (a stray or damaged entry must not lock the vault out while a good slot opens
/// it).
pub fn readable_slots(folder: &VaultFolder) -> Result<(Vec<KeySlot>, Vec<String>), UnlockError> {
    let Some(store) = slot_store(folder)? else {
        return Ok((Vec::new(), Vec::new()));
    };
    let mut names = store
        .list(ObjectKind::Key)
        .map(|r| r.map(|info| info.name))
        .collect::<Result<Vec<_>, _>>()?;
    names.sort();
    let (mut good, mut bad) = (Vec::new(), Vec::new());
    for name in names {
        match read_slot(store.as_ref(), &name) {
            Ok(s) => good.push(s),
            Err(e) => bad.push(e.to_string()),
        }
    }
    for stray in store.strays(ObjectKind::Key)? {
        bad.push(format!("{stray}: not a key slot"));
    }
    Ok((good, bad))
}

fn read_slot(store: &dyn Backend, name: &ObjectName) -> Result<KeySlot, UnlockError> {
    let path = PathBuf::from(store.locate(ObjectKind::Key, name));
    let bad = |reason: String| UnlockError::BadSlot {
        path: path.clone(),
        reason,
    };
    let mut bytes = Vec::new();
    match store.get_into(ObjectKind::Key, name, &mut bytes, SLOT_LIMIT) {
        Ok(()) => {}
        Err(BackendError::TooLarge { .. }) => return Err(bad("larger than any key slot".into())),
        Err(e) => return Err(e.into()),
    }
    let slot = KeySlot::from_json(name.as_str(), &bytes)?;
    if slot.id() != name.as_str() {
        return Err(bad(format!(
            "it says it is slot {}, under the name {name}",
            slot.id()
        )));
    }
    Ok(slot)
}

/// The object name of slot `id`.
fn slot_name(id: &str) -> Result<ObjectName, UnlockError> {
    ObjectName::new(id).map_err(|e| UnlockError::BadSlot {
        path: PathBuf::from(KEYS_DIR).join(crate::fmt::echo(id)),
        reason: e.to_string(),
    })
}

/// Adds `slot` to the vault in `folder`: a new object, durable when this returns, never
/// replacing one.
pub fn add_slot(folder: &VaultFolder, slot: &KeySlot) -> Result<(), UnlockError> {
    let store = folder.objects(&[ObjectKind::Key])?;
    let json = slot.to_json()?;
    let name = slot_name(slot.id())?;
    match store.create(ObjectKind::Key, &name, &json)? {
        Created::New => Ok(()),
        Created::AlreadyExists => Err(UnlockError::BadSlot {
            path: PathBuf::from(store.locate(ObjectKind::Key, &name)),
            reason: "a key slot of that id is there already; nothing was replaced".into(),
        }),
    }
}

/// Removes the slot `id` from the vault in `folder`, durably when this returns.
pub fn remove_slot(folder: &VaultFolder, id: &str) -> Result<(), UnlockError> {
    let Some(store) = slot_store(folder)? else {
        return Ok(());
    };
    store.delete(ObjectKind::Key, &slot_name(id)?)?;
    store.sync()?;
    Ok(())
}

/// Writes a new key file for the vault `vault_id` at `path` (mode 0600, never replacing a
/// file, never through a symlink) and adds its slot, labelled `label`, for `master`. The
/// key file is written first: a kill in between leaves a key file that opens nothing, never
/// a slot that nobody can open; when the slot cannot be written, the new key file is
/// removed again.
pub fn add_key_file_slot(
    folder: &VaultFolder,
    vault_id: &str,
    master: &MasterKey,
    path: &Path,
    label: &str,
) -> Result<KeySlot, UnlockError> {
    let kf = KeyFile::generate(vault_id)?;
    let slot = KeySlot::for_key_file(master, &kf, label)?;
    kf.write_new(path)?;
    if let Err(e) = add_slot(folder, &slot) {
        let _ = std::fs::remove_file(path);
        return Err(e);
    }
    Ok(slot)
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

/// Opens the master key of the vault `vault_id` in `folder` with what `source` gives: a
/// paper key first (checked against `key_id`, the id the catalog records), then its key
/// file, a passphrase file, and a passphrase asked on the terminal. Every slot is tried
/// with each.
pub fn unlock(
    folder: &VaultFolder,
    vault_id: &str,
    key_id: Option<&str>,
    source: &KeySource,
) -> Result<(MasterKey, Opened), UnlockError> {
    let paper = source
        .paper_key_file
        .clone()
        .or_else(keys::paper_key_file_from_env);
    if let Some(path) = paper {
        let master = MasterKey::read_paper_key_file(&path)?;
        let refused = |reason: String| UnlockError::PaperKeyRefused {
            vault: folder.path().to_path_buf(),
            reason,
        };
        return match key_id {
            Some(k) if k == master.key_id() => Ok((master, Opened::PaperKey)),
            Some(k) => Err(refused(format!(
                "the paper key in {} is not this vault's key (its id is {}, the vault's is {k}): it belongs to another vault",
                path.display(),
                master.key_id()
            ))),
            None => Err(refused(
                "its catalog records no key id to check a paper key against".into(),
            )),
        };
    }
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
                        Ok(m) => return Ok((m, opened(slot))),
                        Err(e @ KeyError::WrongKey { .. }) => last_wrong = Some(e),
                        Err(e) => return Err(e.into()),
                    }
                }
                tried.push(format!("key file {} opens no key slot", path.display()));
            }
            Err(KeyError::KeyFileAccess(e)) if is_not_found(&e) => {
                tried.push(match std::fs::read_link(&path) {
                    Ok(target) => format!(
                        "the key file {} is a symbolic link to {}, which is not there (a medium not mounted?)",
                        path.display(),
                        crate::fmt::echo(&target.to_string_lossy())
                    ),
                    Err(_) => format!("no key file at {}", path.display()),
                });
            }
            Err(e) => return Err(e.into()),
        }
    }
    let passphrase_file = source
        .passphrase_file
        .clone()
        .or_else(keys::passphrase_file_from_env);
    let has_passphrase_slot = slots.iter().any(|s| s.kind() == SlotKind::Passphrase);
    let (pass, from) = match passphrase_file {
        Some(pf) => (
            Some(keys::read_passphrase_file(&pf)?),
            format!("the passphrase in {}", pf.display()),
        ),
        None if source.prompt && has_passphrase_slot => (
            Some(keys::prompt_passphrase(&format!(
                "Passphrase of vault {}: ",
                folder.path().display()
            ))?),
            "the passphrase typed".to_string(),
        ),
        None => (None, String::new()),
    };
    match pass {
        Some(pass) => {
            for slot in slots.iter().filter(|s| s.kind() == SlotKind::Passphrase) {
                match slot.unlock_with_passphrase(&pass) {
                    Ok(m) => return Ok((m, opened(slot))),
                    Err(e @ KeyError::WrongKey { .. }) => last_wrong = Some(e),
                    Err(e) => return Err(e.into()),
                }
            }
            if has_passphrase_slot {
                let n = slots
                    .iter()
                    .filter(|s| s.kind() == SlotKind::Passphrase)
                    .count();
                tried.push(format!(
                    "{from} is wrong: it opens none of the vault's {n} passphrase slot(s)"
                ));
            } else {
                tried.push(format!(
                    "{from} was given, but the vault has no passphrase slot"
                ));
            }
        }
        None if has_passphrase_slot => tried.push("no passphrase given".into()),
        // Nothing to say: a passphrase would not help.
        None => {}
    }
    tried.extend(
        unreadable
            .into_iter()
            .map(|e| format!("{e} (remove it if it is not a key slot)")),
    );
    if let (Some(e), true) = (last_wrong, tried.len() == 1) {
        return Err(e.into());
    }
    // Only the ways this vault's slots can be opened, and the paper key.
    let mut ways = Vec::new();
    if slots.iter().any(|s| s.kind() == SlotKind::Keyfile) {
        let default = source
            .key_file_for(vault_id)
            .unwrap_or_else(|| PathBuf::from(format!("<config folder>/keys/{vault_id}.key")));
        ways.push(format!(
            "its key file (the vault's `key_file` in the config, default {}; a key file made for vault {vault_id} by `vmvault key export` or `key add`)",
            default.display()
        ));
    }
    if has_passphrase_slot {
        ways.push(
            "its passphrase (--passphrase-file FILE or VMVAULT_PASSPHRASE_FILE, or run on a terminal to be asked)".into(),
        );
    }
    ways.push("its paper key (--paper-key-file FILE or VMVAULT_PAPER_KEY_FILE)".into());
    Err(UnlockError::NoKey {
        vault: folder.path().to_path_buf(),
        tried: tried.join("; "),
        ways: ways.join(", or "),
    })
}

fn opened(slot: &KeySlot) -> Opened {
    Opened::Slot {
        id: slot.id().to_string(),
        kind: slot.kind(),
    }
}

/// Whether `e` says a file is not there.
fn is_not_found(e: &FsxError) -> bool {
    e.io_error()
        .is_some_and(|e| e.kind() == std::io::ErrorKind::NotFound)
}
