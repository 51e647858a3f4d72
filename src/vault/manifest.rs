//! What a format 2 vault says about itself, so that its catalog can be rebuilt from the
//! vault folder alone (`vmvault vault rebuild`).
//!
//! # Objects
//! - **Point manifest** `points/<id>/manifest`: the recovery point as committed (time,
//!   kind, expiry, consistency, sizes, disks with their exact byte sizes, the changed-block
//!   token), the chunk size, the checksum of every disk index, and the item as it was
//!   then. Written durably with the indexes, before the catalog commits the point; rewritten
//!   when the point's expiry or STORED size changes.
//! - **Item** `items/<h>` and **policy** `policies/<h>` (`h`: BLAKE3 of the id or name, as
//!   object names allow only a few characters): the current row, rewritten after every
//!   change. These writes are not fsynced one by one: the next backup's file-system sync
//!   makes them durable, and a rebuild falls back to the item in the newest manifest when an
//!   item object is missing or damaged.
//!
//! Every object is a blob of the v2 codec (encrypted in an encrypted vault) and carries the
//! vault's id, so a manifest of another vault is refused. A format 1 vault has none of
//! this; its catalog is its only description (it is rebuilt after `vmvault vault upgrade`).

use crate::model::{Item, RecoveryPoint, VmDefinition};
use crate::vault::catalog::PolicyRow;
use crate::vault::codec::BlobKind;
use crate::vault::store::{hex, parse_digest, ChunkStore, Digest, StoreError};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The file name of a point's manifest, in its point folder.
pub const MANIFEST_FILE: &str = "manifest";
/// The folder of item objects in a vault folder.
pub const ITEMS_DIR: &str = "items";
/// The folder of policy objects in a vault folder.
pub const POLICIES_DIR: &str = "policies";
/// Version of the JSON inside the objects.
const FORMAT: u32 = 1;

/// A committed recovery point, as its manifest records it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PointManifest {
    pub format: u32,
    pub vault_id: String,
    pub point: RecoveryPoint,
    /// The retain-until date of an on-demand point.
    pub retain_until: Option<DateTime<Utc>>,
    pub chunk_size: u32,
    /// Disk number → checksum (hex) of its index file.
    pub index_hashes: Vec<(u32, String)>,
    /// The item as it was when the point was committed.
    pub item: Item,
    /// What the source said the VM was (libvirt's domain XML, the disks' formats).
    #[serde(default)]
    pub definition: VmDefinition,
}

impl PointManifest {
    pub fn new(
        vault_id: &str,
        point: &RecoveryPoint,
        retain_until: Option<DateTime<Utc>>,
        chunk_size: u32,
        index_hashes: &[(u32, Digest)],
        item: &Item,
        definition: &VmDefinition,
    ) -> PointManifest {
        PointManifest {
            format: FORMAT,
            vault_id: vault_id.to_string(),
            point: point.clone(),
            retain_until,
            chunk_size,
            index_hashes: index_hashes.iter().map(|(d, h)| (*d, hex(h))).collect(),
            item: item.clone(),
            definition: definition.clone(),
        }
    }

    /// The index checksums, parsed.
    pub fn index_digests(&self) -> Option<Vec<(u32, Digest)>> {
        self.index_hashes
            .iter()
            .map(|(d, h)| parse_digest(h).map(|h| (*d, h)))
            .collect()
    }
}

/// An item object: the item's row, and when it was written (a rebuild keeps the newest of
/// this and the items in manifests).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ItemRecord {
    pub format: u32,
    pub vault_id: String,
    pub written: DateTime<Utc>,
    pub item: Item,
}

/// A policy object: the policy's row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PolicyRecord {
    pub format: u32,
    pub vault_id: String,
    pub name: String,
    pub definition: String,
    pub builtin: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl PolicyRecord {
    pub fn row(&self) -> PolicyRow {
        PolicyRow {
            name: self.name.clone(),
            definition: self.definition.clone(),
            builtin: self.builtin,
            created_at: self.created_at,
            updated_at: self.updated_at,
        }
    }
}

/// Why an object cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{}: not a vmvault object of this version: {reason}", .path.display())]
    Invalid { path: PathBuf, reason: String },
    #[error("{}: it belongs to vault {found}, not to this vault ({expected})", .path.display())]
    OtherVault {
        path: PathBuf,
        found: String,
        expected: String,
    },
}

/// The object name of an item or policy: the hex BLAKE3 of its id or (lower-case) name.
pub fn object_name(key: &str) -> String {
    hex(blake3::hash(key.as_bytes()).as_bytes())
}

/// Where the manifest of point `id` is, in the vault folder `vault`.
pub fn manifest_path(vault: &Path, point_id: &str) -> PathBuf {
    vault
        .join(crate::vault::folder::POINTS_DIR)
        .join(point_id)
        .join(MANIFEST_FILE)
}

/// Reads and checks a JSON object of kind `kind`, name `name`, for vault `vault_id`.
fn read_json<T: serde::de::DeserializeOwned>(
    store: &ChunkStore,
    path: &Path,
    kind: BlobKind,
    name: &str,
    vault_id: &str,
    vault_of: impl FnOnce(&T) -> (&str, u32),
) -> Result<T, ManifestError> {
    let bytes = store.read_blob(path, kind, name)?;
    let value: T = serde_json::from_slice(&bytes).map_err(|e| ManifestError::Invalid {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    let (found, format) = vault_of(&value);
    if format != FORMAT {
        return Err(ManifestError::Invalid {
            path: path.to_path_buf(),
            reason: format!("object format {format} (this vmvault reads {FORMAT})"),
        });
    }
    if found != vault_id {
        return Err(ManifestError::OtherVault {
            path: path.to_path_buf(),
            found: found.to_string(),
            expected: vault_id.to_string(),
        });
    }
    Ok(value)
}

fn to_json<T: Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value).map_err(|e| StoreError::Invalid(format!("encoding JSON: {e}")))
}

/// Writes the manifest of a point into its folder, durably.
pub fn write_manifest(
    store: &ChunkStore,
    vault: &Path,
    m: &PointManifest,
    durable: bool,
) -> Result<(), StoreError> {
    let path = manifest_path(vault, &m.point.id);
    store.write_blob(
        &path,
        BlobKind::Manifest,
        &m.point.id,
        &to_json(m)?,
        durable,
    )
}

/// Reads the manifest of point `point_id`.
pub fn read_manifest(
    store: &ChunkStore,
    vault: &Path,
    point_id: &str,
    vault_id: &str,
) -> Result<PointManifest, ManifestError> {
    let path = manifest_path(vault, point_id);
    let m: PointManifest = read_json(
        store,
        &path,
        BlobKind::Manifest,
        point_id,
        vault_id,
        |m: &PointManifest| (&m.vault_id, m.format),
    )?;
    if m.point.id != point_id {
        return Err(ManifestError::Invalid {
            path,
            reason: format!("it describes point {}", m.point.id),
        });
    }
    Ok(m)
}

/// Writes (or, with `None`, removes) the object of one item.
pub fn write_item(
    store: &ChunkStore,
    vault: &Path,
    vault_id: &str,
    id: &str,
    item: Option<&Item>,
) -> Result<(), StoreError> {
    let name = object_name(id);
    let path = vault.join(ITEMS_DIR).join(&name);
    match item {
        Some(item) => {
            let record = ItemRecord {
                format: FORMAT,
                vault_id: vault_id.to_string(),
                written: Utc::now(),
                item: item.clone(),
            };
            store.write_blob(&path, BlobKind::Item, &name, &to_json(&record)?, false)
        }
        None => remove(&path),
    }
}

/// Writes (or, with `None`, removes) the object of one policy.
pub fn write_policy(
    store: &ChunkStore,
    vault: &Path,
    vault_id: &str,
    name: &str,
    row: Option<&PolicyRow>,
) -> Result<(), StoreError> {
    let object = object_name(&name.to_lowercase());
    let path = vault.join(POLICIES_DIR).join(&object);
    match row {
        Some(r) => {
            let record = PolicyRecord {
                format: FORMAT,
                vault_id: vault_id.to_string(),
                name: r.name.clone(),
                definition: r.definition.clone(),
                builtin: r.builtin,
                created_at: r.created_at,
                updated_at: r.updated_at,
            };
            store.write_blob(&path, BlobKind::Policy, &object, &to_json(&record)?, false)
        }
        None => remove(&path),
    }
}

fn remove(path: &Path) -> Result<(), StoreError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(StoreError::io(format!("removing {}", path.display()), e)),
    }
}

/// What [`object_entries`] found in a folder of the vault.
#[derive(Debug, Default)]
pub struct Entries {
    /// Objects (files) and point folders, sorted; temp files left out.
    pub names: Vec<String>,
    /// Entries that are neither (symbolic links, devices, FIFOs): never followed or read.
    pub foreign: Vec<(String, &'static str)>,
}

/// The objects in the folder `dir` of the vault (a missing folder holds none). The folder
/// itself must be a real folder: a symbolic link there is refused, never followed.
pub fn object_entries(dir: &Path) -> Result<Entries, StoreError> {
    match std::fs::symlink_metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Entries::default()),
        Err(e) => return Err(StoreError::io(format!("listing {}", dir.display()), e)),
        Ok(m) if !m.is_dir() => {
            return Err(StoreError::Invalid(format!(
                "{} is {}, not a folder of the vault: vmvault never follows a link in a vault. Remove it (or put the vault's own folder back)",
                dir.display(),
                if m.file_type().is_symlink() { "a symbolic link" } else { "not a folder" }
            )))
        }
        Ok(_) => {}
    }
    let rd = std::fs::read_dir(dir)
        .map_err(|e| StoreError::io(format!("listing {}", dir.display()), e))?;
    let mut out = Entries::default();
    for ent in rd {
        let ent = ent.map_err(|e| StoreError::io(format!("listing {}", dir.display()), e))?;
        let Some(n) = ent.file_name().to_str().map(str::to_string) else {
            continue;
        };
        if n.starts_with('.') {
            continue;
        }
        // A name vmvault never gives (one with control characters…) is not read either,
        // and is echoed escaped.
        if crate::vault::backend::ObjectName::new(n.as_str()).is_err() {
            out.foreign
                .push((n, "an entry whose name vmvault never gives an object"));
            continue;
        }
        // The entry's own type: a link is never followed to see what it names.
        match ent.file_type() {
            Ok(t) if t.is_file() || t.is_dir() => out.names.push(n),
            Ok(t) if t.is_symlink() => out.foreign.push((n, "a symbolic link")),
            Ok(_) => out.foreign.push((n, "neither a file nor a folder")),
            Err(e) => return Err(StoreError::io(format!("listing {}", dir.display()), e)),
        }
    }
    out.names.sort();
    out.foreign.sort();
    Ok(out)
}

/// Reads an item object.
pub fn read_item(
    store: &ChunkStore,
    vault: &Path,
    name: &str,
    vault_id: &str,
) -> Result<ItemRecord, ManifestError> {
    let path = vault.join(ITEMS_DIR).join(name);
    let r: ItemRecord = read_json(
        store,
        &path,
        BlobKind::Item,
        name,
        vault_id,
        |r: &ItemRecord| (&r.vault_id, r.format),
    )?;
    if object_name(&r.item.id) != name {
        return Err(ManifestError::Invalid {
            path,
            reason: format!("it describes item {}", r.item.id),
        });
    }
    Ok(r)
}

/// Reads a policy object.
pub fn read_policy(
    store: &ChunkStore,
    vault: &Path,
    name: &str,
    vault_id: &str,
) -> Result<PolicyRecord, ManifestError> {
    let path = vault.join(POLICIES_DIR).join(name);
    let r: PolicyRecord = read_json(
        store,
        &path,
        BlobKind::Policy,
        name,
        vault_id,
        |r: &PolicyRecord| (&r.vault_id, r.format),
    )?;
    if object_name(&r.name.to_lowercase()) != name {
        return Err(ManifestError::Invalid {
            path,
            reason: format!("it describes policy {}", r.name),
        });
    }
    Ok(r)
}
