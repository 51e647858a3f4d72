//! The keys of an encrypted vault while the engine owns it: listing its key slots, adding a
//! passphrase or a key file, removing a slot, changing a passphrase, and the paper key.
//!
//! The engine keeps the vault's master key (a [`Keyring`]) from the moment it unlocked the
//! vault until it is dropped: a slot is only ever made from the key in memory, so adding
//! one needs no passphrase of another slot. Only the owner (the process holding the
//! vault's lock) has the keyring, so only it changes keys; a reader lists slots, which are
//! public metadata (id, kind, label, date, KDF parameters).
//!
//! Every change is durable when it returns (see [`crate::vault::unlock`]). A change never
//! leaves the vault without a way in that the user still has: the last slot is never
//! removed, nor the slot that opened the vault unless another slot the user can open
//! remains (a passphrase slot, or a key-file slot the vault's own key file opens).
//! Changing a passphrase adds the new slot before it removes the old one.

use super::{usage, Engine, EngineError, Result};
use crate::vault::folder::VaultFolder;
use crate::vault::keys::{Argon2Params, KeyFile, KeySlot, MasterKey, SlotKind};
use crate::vault::unlock::{self, Opened};
use chrono::{DateTime, Utc};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use zeroize::Zeroizing;

/// The unlocked master key of the vault this engine owns, and what opened it. The master
/// key wipes itself when the engine is dropped and never prints.
pub(crate) struct Keyring {
    master: MasterKey,
    vault_id: String,
    /// What opened the vault (a slot removed or replaced by this process is followed);
    /// held while keys change, so that changes never interleave.
    opened: Mutex<Opened>,
}

impl Keyring {
    pub(crate) fn new(master: MasterKey, vault_id: String, opened: Opened) -> Keyring {
        Keyring {
            master,
            vault_id,
            opened: Mutex::new(opened),
        }
    }
}

/// Argon2id parameters of a passphrase slot, as listed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KdfInfo {
    pub m_kib: u32,
    pub t: u32,
    pub p: u32,
}

impl std::fmt::Display for KdfInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.m_kib.is_multiple_of(1024) {
            write!(
                f,
                "argon2id m={} MiB t={} p={}",
                self.m_kib / 1024,
                self.t,
                self.p
            )
        } else {
            write!(f, "argon2id m={} KiB t={} p={}", self.m_kib, self.t, self.p)
        }
    }
}

/// One key slot, as listed (public metadata only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySlotInfo {
    pub id: String,
    pub kind: SlotKind,
    pub label: String,
    pub created: DateTime<Utc>,
    /// Argon2id parameters of a passphrase slot.
    pub kdf: Option<KdfInfo>,
    /// This process opened the vault with this slot.
    pub opened_this: bool,
    /// The vault's key file (the configured or default one) opens this slot.
    pub opened_by_key_file: bool,
}

impl KeySlotInfo {
    fn of(slot: &KeySlot, opened: Option<&Opened>, key_file: Option<&KeyFile>) -> KeySlotInfo {
        KeySlotInfo {
            id: slot.id().to_string(),
            kind: slot.kind(),
            label: slot.label().to_string(),
            created: slot.created(),
            kdf: slot.kdf_params().map(|p| KdfInfo {
                m_kib: p.m_kib(),
                t: p.t(),
                p: p.p(),
            }),
            opened_this: opened.and_then(Opened::slot_id) == Some(slot.id()),
            opened_by_key_file: opens_with(slot, key_file),
        }
    }
}

/// What the console's Keys popup and `vmvault key list` show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeysOverview {
    pub vault: String,
    /// Vault format (1 or 2).
    pub format: u32,
    pub encrypted: bool,
    /// The key slots, by id (none for an unencrypted vault).
    pub slots: Vec<KeySlotInfo>,
    /// Where the vault's key file is expected (`key_file`, else the default).
    pub key_file: Option<PathBuf>,
    pub key_file_exists: bool,
    /// What opened the vault ("key file slot 1a2b…", "the paper key"); None when this
    /// process only reads the vault.
    pub opened_with: Option<String>,
    /// Files of `keys/` that are no key slot (damaged, or put there): what is wrong with
    /// each. They open nothing and are not counted as slots.
    pub unreadable: Vec<String>,
}

/// Whether `key_file` opens `slot` (a key-file slot whose key is that file's).
fn opens_with(slot: &KeySlot, key_file: Option<&KeyFile>) -> bool {
    slot.kind() == SlotKind::Keyfile
        && key_file.is_some_and(|kf| slot.unlock_with_key_file(kf).is_ok())
}

impl Engine {
    /// Refuses a key command on a vault that has no keys.
    fn require_encrypted(&self) -> Result<()> {
        if self.is_encrypted() {
            return Ok(());
        }
        let why = if self.format_version() == 1 {
            "it is a format v1 vault, made before vaults were encrypted"
        } else {
            "it was made with encryption = \"none\""
        };
        usage(format!(
            "vault {} is not encrypted ({why}): it has no keys to list or change, and whoever can read its folder can read its backups. Key commands apply to encrypted vaults; a new vault is encrypted unless its configuration says encryption = \"none\"",
            self.vault_name()
        ))
    }

    /// The keyring, for a change of keys: only the owner of an encrypted vault has it.
    fn keyring(&self) -> Result<&Keyring> {
        self.require_encrypted()?;
        self.require_owner()?;
        self.inner.keyring.as_ref().ok_or_else(|| {
            EngineError::Failed(format!(
                "the keys of vault {} are not open in this process",
                self.vault_name()
            ))
        })
    }

    pub(crate) fn vault_folder(&self) -> Result<VaultFolder> {
        let folder = VaultFolder::open(self.vault_dir(), false)?;
        Ok(match &self.inner.remote {
            Some(r) => folder.with_remote(r.clone()),
            None => folder,
        })
    }

    /// Where the vault's key file is expected: its `key_file`, else
    /// `<config folder>/keys/<vault id>.key`.
    pub fn key_file_path(&self) -> Option<PathBuf> {
        let id = self.vault_id().ok()?;
        self.inner.opts.keys.key_file_for(&id)
    }

    /// The vault's key file, when it is there and readable.
    fn read_key_file(&self) -> Option<KeyFile> {
        self.key_file_path().and_then(|p| KeyFile::read(&p).ok())
    }

    /// What opened the vault, when this process owns an encrypted vault.
    pub fn opened_with(&self) -> Option<Opened> {
        self.inner
            .keyring
            .as_ref()
            .map(|r| r.opened.lock().unwrap_or_else(|p| p.into_inner()).clone())
    }

    /// The vault's keys at a glance (also for an unencrypted vault, which has none).
    pub fn keys_overview(&self) -> Result<KeysOverview> {
        let encrypted = self.is_encrypted();
        let (slots, unreadable) = if encrypted {
            self.list_slots()?
        } else {
            (Vec::new(), Vec::new())
        };
        let key_file = if encrypted {
            self.key_file_path()
        } else {
            None
        };
        Ok(KeysOverview {
            vault: self.vault_name().to_string(),
            format: self.format_version(),
            encrypted,
            slots,
            key_file_exists: key_file.as_deref().is_some_and(|p| p.exists()),
            key_file,
            opened_with: self.opened_with().map(|o| o.to_string()),
            unreadable,
        })
    }

    /// The key slots of the vault, by id. Works for a reader too: slots are public
    /// metadata (the master key is in them only wrapped).
    pub fn key_slots(&self) -> Result<Vec<KeySlotInfo>> {
        self.require_encrypted()?;
        Ok(self.list_slots()?.0)
    }

    /// The key slots that can be read (a stray or damaged file in `keys/` is no slot: it
    /// neither counts nor blocks a change).
    fn slots_of(&self, folder: &VaultFolder) -> Result<Vec<KeySlot>> {
        Ok(unlock::readable_slots(folder)?.0)
    }

    /// The key slot `id` names (its whole id, or a unique prefix of 4 or more characters).
    pub fn key_slot(&self, id: &str) -> Result<KeySlotInfo> {
        self.require_encrypted()?;
        let slots = self.slots_of(&self.vault_folder()?)?;
        let slot = self.find_slot(&slots, id)?;
        let opened = self.opened_with();
        Ok(KeySlotInfo::of(
            slot,
            opened.as_ref(),
            self.read_key_file().as_ref(),
        ))
    }

    /// The readable slots, and what is wrong with the other files of `keys/`.
    fn list_slots(&self) -> Result<(Vec<KeySlotInfo>, Vec<String>)> {
        let opened = self.opened_with();
        let key_file = self.read_key_file();
        let (slots, unreadable) = unlock::readable_slots(&self.vault_folder()?)?;
        let slots = slots
            .iter()
            .map(|s| KeySlotInfo::of(s, opened.as_ref(), key_file.as_ref()))
            .collect();
        Ok((slots, unreadable))
    }

    /// Adds a passphrase slot (Argon2id with the default parameters) labelled `label`.
    pub fn add_passphrase_slot(&self, passphrase: &str, label: &str) -> Result<KeySlotInfo> {
        self.add_passphrase_slot_with(passphrase, Argon2Params::default(), label)
    }

    pub(crate) fn add_passphrase_slot_with(
        &self,
        passphrase: &str,
        params: Argon2Params,
        label: &str,
    ) -> Result<KeySlotInfo> {
        let ring = self.keyring()?;
        let opened = ring.opened.lock().unwrap_or_else(|p| p.into_inner());
        let slot = KeySlot::for_passphrase(&ring.master, passphrase, params, label)
            .map_err(|e| EngineError::Usage(e.to_string()))?;
        unlock::add_slot(&self.vault_folder()?, &slot)?;
        tracing::info!(vault = %self.vault_name(), slot = %slot.id(), kind = "passphrase", "key slot added");
        Ok(KeySlotInfo::of(&slot, Some(&opened), None))
    }

    /// Writes a new key file at `path` (mode 0600; never over an existing file, never
    /// through a symlink; its folder must exist) and adds its slot, labelled `label`.
    pub fn add_key_file_slot(&self, path: &Path, label: &str) -> Result<KeySlotInfo> {
        let ring = self.keyring()?;
        let opened = ring.opened.lock().unwrap_or_else(|p| p.into_inner());
        let folder = self.vault_folder()?;
        let slot = unlock::add_key_file_slot(&folder, &ring.vault_id, &ring.master, path, label)
            .map_err(|e| match e {
                e if e.is_user_input() => EngineError::Usage(e.to_string()),
                e => EngineError::Unlock(e),
            })?;
        tracing::info!(vault = %self.vault_name(), slot = %slot.id(), kind = "key file", key_file = %path.display(), "key slot added");
        Ok(KeySlotInfo::of(&slot, Some(&opened), None))
    }

    /// Removes the key slot `id` (the whole id, or its first 4 or more characters).
    /// Refused for the last slot, and for the slot that opened the vault unless another
    /// slot the user can still open remains; nothing is changed then.
    pub fn remove_key_slot(&self, id: &str) -> Result<KeySlotInfo> {
        let ring = self.keyring()?;
        let mut opened = ring.opened.lock().unwrap_or_else(|p| p.into_inner());
        let folder = self.vault_folder()?;
        let slots = self.slots_of(&folder)?;
        let slot = self.find_slot(&slots, id)?;
        let key_file = self.read_key_file();
        let info = KeySlotInfo::of(slot, Some(&opened), key_file.as_ref());
        let others: Vec<&KeySlot> = slots.iter().filter(|s| s.id() != slot.id()).collect();
        if others.is_empty() {
            return usage(format!(
                "key slot {} is the last key slot of vault {}: without it nothing (but the paper key) opens the vault. Nothing was changed. Add another key first (`vmvault key add --passphrase` or `--key-file PATH`), then remove this one",
                slot.id(),
                self.vault_name()
            ));
        }
        if opened.slot_id() == Some(slot.id()) {
            let passphrase = others.iter().any(|s| s.kind() == SlotKind::Passphrase);
            let by_key_file = others.iter().any(|s| opens_with(s, key_file.as_ref()));
            if !passphrase && !by_key_file {
                let key_file = self
                    .key_file_path()
                    .map(|p| p.display().to_string())
                    .unwrap_or_else(|| "the vault's key file".into());
                return usage(format!(
                    "key slot {} ({}) opened vault {} in this command, and none of the other slots could open it next time: they are key-file slots that the vault's key file ({key_file}) does not open, and there is no passphrase slot. Nothing was changed. Add a passphrase first (`vmvault key add --passphrase`), or set the vault's key_file to another key file and remove this slot with that one",
                    slot.id(),
                    slot.kind(),
                    self.vault_name()
                ));
            }
        }
        unlock::remove_slot(&folder, slot.id())?;
        if opened.slot_id() == Some(slot.id()) {
            // The key in memory stays valid; what opened it is gone.
            *opened = Opened::PaperKey;
        }
        tracing::info!(vault = %self.vault_name(), slot = %slot.id(), kind = %slot.kind(), "key slot removed");
        Ok(info)
    }

    /// Replaces the passphrase of the passphrase slot `id` by `new`: a new slot (same
    /// label, default Argon2id parameters) is added, then the old one removed; a kill in
    /// between leaves both, each opening with its own passphrase. Returns the new slot.
    pub fn change_passphrase(&self, id: &str, new: &str) -> Result<KeySlotInfo> {
        self.change_passphrase_with(id, new, Argon2Params::default())
    }

    pub(crate) fn change_passphrase_with(
        &self,
        id: &str,
        new: &str,
        params: Argon2Params,
    ) -> Result<KeySlotInfo> {
        let ring = self.keyring()?;
        let mut opened = ring.opened.lock().unwrap_or_else(|p| p.into_inner());
        let folder = self.vault_folder()?;
        let slots = self.slots_of(&folder)?;
        let old = self.find_slot(&slots, id)?;
        if old.kind() != SlotKind::Passphrase {
            return usage(format!(
                "key slot {} is a {} slot, not a passphrase slot. To replace a key file, add a new one (`vmvault key add --key-file PATH`) and then remove slot {}",
                old.id(),
                old.kind(),
                old.id()
            ));
        }
        let slot = KeySlot::for_passphrase(&ring.master, new, params, old.label())
            .map_err(|e| EngineError::Usage(e.to_string()))?;
        unlock::add_slot(&folder, &slot)?;
        tracing::info!(vault = %self.vault_name(), slot = %slot.id(), replaces = %old.id(), kind = "passphrase", "key slot added");
        unlock::remove_slot(&folder, old.id())?;
        tracing::info!(vault = %self.vault_name(), slot = %old.id(), kind = "passphrase", "key slot removed");
        if opened.slot_id() == Some(old.id()) {
            *opened = Opened::Slot {
                id: slot.id().to_string(),
                kind: SlotKind::Passphrase,
            };
        }
        Ok(KeySlotInfo::of(&slot, Some(&opened), None))
    }

    /// The vault's paper key (the master key, printable): whoever holds it reads every
    /// backup of the vault, and it opens the vault when every key slot is lost.
    pub fn paper_key(&self) -> Result<Zeroizing<String>> {
        let ring = self.keyring()?;
        tracing::info!(vault = %self.vault_name(), "paper key exported");
        Ok(Zeroizing::new(ring.master.paper_key()))
    }

    /// The slot `typed` names: its whole id or a unique prefix of 4 or more characters.
    fn find_slot<'a>(&self, slots: &'a [KeySlot], typed: &str) -> Result<&'a KeySlot> {
        let id = super::id_prefix(typed, "key slot id")?.to_ascii_lowercase();
        let found: Vec<&KeySlot> = slots.iter().filter(|s| s.id().starts_with(&id)).collect();
        match found.as_slice() {
            [one] => Ok(one),
            [] => usage(format!(
                "vault {} has no key slot \"{id}\"; `vmvault key list` lists them",
                self.vault_name()
            )),
            many => usage(format!(
                "key slot id prefix \"{id}\" is ambiguous: it matches {}; give more characters",
                many.iter().map(|s| s.id()).collect::<Vec<_>>().join(", ")
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{EngineOptions, OpenMode};
    use crate::provider::sim::{SimProvider, SimSettings, Subscription};
    use crate::vault::folder::Layout;
    use crate::vault::unlock::KeySource;
    use std::os::unix::fs::PermissionsExt;
    use std::sync::Arc;

    /// Argon2id parameters cheap enough for tests.
    fn cheap() -> Argon2Params {
        Argon2Params::new(256, 1, 1).unwrap()
    }

    struct Fixture {
        dir: tempfile::TempDir,
        rt: tokio::runtime::Runtime,
    }

    impl Fixture {
        fn new() -> Fixture {
            let dir = tempfile::tempdir().unwrap();
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .unwrap();
            Fixture { dir, rt }
        }

        fn key_file(&self) -> PathBuf {
            self.dir.path().join("vault.key")
        }

        fn open_with(&self, layout: Layout, keys: KeySource) -> Result<Engine> {
            let _guard = self.rt.enter();
            let cfg = SimSettings::default();
            let sub = Subscription::load(&cfg).unwrap();
            let sim = Arc::new(SimProvider::new(sub, &cfg));
            Engine::open(
                EngineOptions {
                    vault_name: "vault".into(),
                    region: "westeurope".into(),
                    dir: self.dir.path().join("vault"),
                    provider: sim.clone(),
                    simulator: Some(sim),
                    chunk_size: 64 * 1024,
                    compression_level: 1,
                    read_limit_mib_s: 0,
                    gc_grace: chrono::Duration::minutes(0),
                    max_concurrent_jobs: 1,
                    threads: 1,
                    other_vaults: vec![],
                    new_layout: layout,
                    keys,
                    storage: None,
                },
                OpenMode::Exclusive,
            )
        }

        fn open(&self) -> Engine {
            self.open_with(
                Layout::V2 { encrypted: true },
                KeySource {
                    key_file: Some(self.key_file()),
                    ..KeySource::default()
                },
            )
            .unwrap()
        }

        fn passphrase_file(&self, name: &str, text: &str) -> PathBuf {
            let p = self.dir.path().join(name);
            std::fs::write(&p, text).unwrap();
            p
        }

        /// Opens with only a passphrase (the key file named does not exist).
        fn open_with_passphrase(&self, file: &Path) -> Result<Engine> {
            self.open_with(
                Layout::V2 { encrypted: true },
                KeySource {
                    key_file: Some(self.dir.path().join("missing.key")),
                    passphrase_file: Some(file.to_path_buf()),
                    ..KeySource::default()
                },
            )
        }
    }

    #[test]
    fn the_slot_that_opened_the_vault_is_kept_until_another_way_in_exists() {
        let f = Fixture::new();
        let engine = f.open();
        let slots = engine.key_slots().unwrap();
        assert_eq!(slots.len(), 1);
        let first = slots[0].clone();
        assert!(first.opened_this && first.opened_by_key_file, "{first:?}");
        // The last slot.
        let e = engine.remove_key_slot(&first.id).unwrap_err();
        assert!(matches!(e, EngineError::Usage(_)), "{e}");
        assert!(e.to_string().contains("last key slot"), "{e}");
        // A second key file elsewhere: the configured key file does not open it.
        let other = engine
            .add_key_file_slot(&f.dir.path().join("other.key"), "usb stick")
            .unwrap();
        assert!(!other.opened_by_key_file);
        let e = engine.remove_key_slot(&first.id[..6]).unwrap_err();
        assert!(e.to_string().contains("opened vault vault"), "{e}");
        assert_eq!(engine.key_slots().unwrap().len(), 2, "nothing changed");
        // With a passphrase slot, the opening slot may go.
        let pass = engine
            .add_passphrase_slot_with("correct horse", cheap(), "admin")
            .unwrap();
        assert_eq!(pass.kdf.map(|k| (k.m_kib, k.t, k.p)), Some((256, 1, 1)));
        let removed = engine.remove_key_slot(&first.id).unwrap();
        assert_eq!(removed.id, first.id);
        let left: Vec<String> = engine
            .key_slots()
            .unwrap()
            .into_iter()
            .map(|s| s.id)
            .collect();
        assert_eq!(left.len(), 2);
        assert!(!left.contains(&first.id));
        assert_eq!(engine.opened_with(), Some(Opened::PaperKey));
        // Not-a-slot ids are usage errors.
        for bad in ["zz", "ab", "0000000000000000"] {
            let e = engine.remove_key_slot(bad).unwrap_err();
            assert!(matches!(e, EngineError::Usage(_)), "{bad}: {e}");
        }
    }

    #[test]
    fn changing_a_passphrase_replaces_its_slot_and_a_kill_in_between_keeps_both() {
        let f = Fixture::new();
        let engine = f.open();
        let old = engine
            .add_passphrase_slot_with("old secret", cheap(), "admin")
            .unwrap();
        let new = engine
            .change_passphrase_with(&old.id, "new secret", cheap())
            .unwrap();
        assert_eq!(new.label, "admin");
        assert_ne!(new.id, old.id);
        let ids: Vec<String> = engine
            .key_slots()
            .unwrap()
            .into_iter()
            .map(|s| s.id)
            .collect();
        assert!(ids.contains(&new.id) && !ids.contains(&old.id), "{ids:?}");
        // A key-file slot has no passphrase to change.
        let kf = ids.iter().find(|i| **i != new.id).unwrap();
        let e = engine.change_passphrase_with(kf, "x", cheap()).unwrap_err();
        assert!(e.to_string().contains("not a passphrase slot"), "{e}");
        // The state a kill between the two steps leaves: both slots open the vault.
        let ring = engine.keyring().unwrap();
        let folder = engine.vault_folder().unwrap();
        let again =
            KeySlot::for_passphrase(&ring.master, "newer secret", cheap(), "admin").unwrap();
        unlock::add_slot(&folder, &again).unwrap();
        drop(engine);
        let p_new = f.passphrase_file("new", "new secret\n");
        let p_newer = f.passphrase_file("newer", "newer secret\n");
        let p_old = f.passphrase_file("old", "old secret\n");
        for p in [&p_new, &p_newer] {
            let e = f.open_with_passphrase(p).unwrap();
            assert!(
                matches!(
                    e.opened_with(),
                    Some(Opened::Slot {
                        kind: SlotKind::Passphrase,
                        ..
                    })
                ),
                "{:?}",
                e.opened_with()
            );
        }
        let e = f.open_with_passphrase(&p_old).err().expect("old refused");
        assert!(e.to_string().contains("is wrong"), "{e}");
    }

    #[test]
    fn the_paper_key_opens_a_vault_whose_slots_are_all_lost() {
        let f = Fixture::new();
        let engine = f.open();
        let paper = engine.paper_key().unwrap();
        drop(engine);
        let keys = f.dir.path().join("vault").join(unlock::KEYS_DIR);
        for e in std::fs::read_dir(&keys).unwrap() {
            std::fs::remove_file(e.unwrap().path()).unwrap();
        }
        std::fs::remove_file(f.key_file()).unwrap();
        // Some data, so the vault is not taken for a new one.
        std::fs::create_dir_all(f.dir.path().join("vault/points/p1")).unwrap();
        let e = f
            .open_with(
                Layout::V2 { encrypted: true },
                KeySource {
                    key_file: Some(f.key_file()),
                    ..KeySource::default()
                },
            )
            .err();
        assert!(
            e.as_ref()
                .is_some_and(|e| e.to_string().contains("paper key")),
            "{e:?}"
        );
        let pk = f.dir.path().join("paper.txt");
        std::fs::write(&pk, format!("{}\n", paper.as_str())).unwrap();
        std::fs::set_permissions(&pk, std::fs::Permissions::from_mode(0o600)).unwrap();
        let engine = f
            .open_with(
                Layout::V2 { encrypted: true },
                KeySource {
                    key_file: Some(f.key_file()),
                    paper_key_file: Some(pk),
                    ..KeySource::default()
                },
            )
            .unwrap();
        assert_eq!(engine.opened_with(), Some(Opened::PaperKey));
        assert!(engine.key_slots().unwrap().is_empty());
        engine.add_key_file_slot(&f.key_file(), "key file").unwrap();
        drop(engine);
        let engine = f.open();
        assert_eq!(engine.key_slots().unwrap().len(), 1);
    }

    #[test]
    fn an_unencrypted_vault_has_no_keys_to_change() {
        for layout in [Layout::V1, Layout::V2 { encrypted: false }] {
            let f = Fixture::new();
            let engine = f.open_with(layout, KeySource::default()).unwrap();
            let overview = engine.keys_overview().unwrap();
            assert!(!overview.encrypted && overview.slots.is_empty());
            let errors = [
                engine.key_slots().map(|_| ()).unwrap_err(),
                engine
                    .add_passphrase_slot("pw", "x")
                    .map(|_| ())
                    .unwrap_err(),
                engine.remove_key_slot("abcd").map(|_| ()).unwrap_err(),
                engine.paper_key().map(|_| ()).unwrap_err(),
            ];
            for e in errors {
                assert!(matches!(e, EngineError::Usage(_)), "{e}");
                assert!(e.to_string().contains("is not encrypted"), "{e}");
            }
        }
    }
}
