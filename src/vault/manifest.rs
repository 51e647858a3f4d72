//! What a format 2 vault says about itself, so that its catalog can be rebuilt from the
//! vault folder alone (`vmvault vault rebuild`).
//!
//! # Objects
//! All of them are objects of the vault's backend (a folder per kind on the local one).
//! - **Point manifest** (object `<point>`, `points/<id>/manifest` on the local backend): the recovery point as committed (time,
//!   kind, expiry, consistency, sizes, disks with their exact byte sizes, the changed-block
//!   token), the chunk size, the checksum of every disk index, and the item as it was
//!   then. Written durably with the indexes, before the catalog commits the point; rewritten
//!   when the point's expiry or STORED size changes.
//! - **Item** (`items/<h>`) and **policy** (`policies/<h>`) (`h`: BLAKE3 of the id or name, as
//!   object names allow only a few characters): the current row, rewritten after every
//!   change. These writes are not fsynced one by one: the next backup's file-system sync
//!   makes them durable, and a rebuild falls back to the item in the newest manifest when an
//!   item object is missing or damaged.
//!
//! Every object is a blob of the v2 codec (encrypted in an encrypted vault) and carries the
//! vault's id, so a manifest of another vault is refused. A format 1 vault has none of
//! this; its catalog is its only description (it is rebuilt after `vmvault vault upgrade`).

use crate::model::{Item, RecoveryPoint, VmDefinition};
use crate::vault::backend::{ObjectKind, ObjectName};
use crate::vault::catalog::PolicyRow;
use crate::vault::codec::BlobKind;
use crate::vault::store::{hex, parse_digest, Digest, StoreError, Vault};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// The folder of item objects in a vault folder (local backend).
pub const ITEMS_DIR: &str = "items";
/// The folder of policy objects in a vault folder (local backend).
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

/// An object name made by [`object_name`].
pub(crate) fn hashed_name(key: &str) -> Result<ObjectName, StoreError> {
    ObjectName::new(object_name(key)).map_err(|e| StoreError::Invalid(e.to_string()))
}

/// Reads and checks a JSON object `(kind, name)`, a blob of `blob` kind, for vault
/// `vault_id`.
fn read_json<T: serde::de::DeserializeOwned>(
    store: &Vault,
    kind: ObjectKind,
    name: &ObjectName,
    blob: BlobKind,
    vault_id: &str,
    vault_of: impl FnOnce(&T) -> (&str, u32),
) -> Result<T, ManifestError> {
    let path = PathBuf::from(store.backend().locate(kind, name));
    let bytes = store.get_description(kind, name, blob)?;
    let value: T = serde_json::from_slice(&bytes).map_err(|e| ManifestError::Invalid {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    let (found, format) = vault_of(&value);
    if format != FORMAT {
        return Err(ManifestError::Invalid {
            path,
            reason: format!("object format {format} (this vmvault reads {FORMAT})"),
        });
    }
    if found != vault_id {
        return Err(ManifestError::OtherVault {
            path,
            found: found.to_string(),
            expected: vault_id.to_string(),
        });
    }
    Ok(value)
}

fn to_json<T: Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value).map_err(|e| StoreError::Invalid(format!("encoding JSON: {e}")))
}

/// Writes the manifest of a point (with `durable`, durable when it returns; else at the
/// store's next sync).
pub fn write_manifest(store: &Vault, m: &PointManifest, durable: bool) -> Result<(), StoreError> {
    store.put_description(
        ObjectKind::Manifest,
        &crate::vault::store::points::point_object_name(&m.point.id)?,
        BlobKind::Manifest,
        &to_json(m)?,
        durable,
    )
}

/// Reads the manifest of point `point_id`.
pub fn read_manifest(
    store: &Vault,
    point_id: &str,
    vault_id: &str,
) -> Result<PointManifest, ManifestError> {
    let name = crate::vault::store::points::point_object_name(point_id)?;
    let m: PointManifest = read_json(
        store,
        ObjectKind::Manifest,
        &name,
        BlobKind::Manifest,
        vault_id,
        |m: &PointManifest| (&m.vault_id, m.format),
    )?;
    if m.point.id != point_id {
        return Err(ManifestError::Invalid {
            path: store.manifest_location(point_id),
            reason: format!("it describes point {}", m.point.id),
        });
    }
    Ok(m)
}

/// Writes (or, with `None`, removes) the object of one item; durable at the store's next
/// sync.
pub fn write_item(
    store: &Vault,
    vault_id: &str,
    id: &str,
    item: Option<&Item>,
) -> Result<(), StoreError> {
    let name = hashed_name(id)?;
    match item {
        Some(item) => {
            let record = ItemRecord {
                format: FORMAT,
                vault_id: vault_id.to_string(),
                written: Utc::now(),
                item: item.clone(),
            };
            store.put_description(
                ObjectKind::Item,
                &name,
                BlobKind::Item,
                &to_json(&record)?,
                false,
            )
        }
        None => store.delete_description(ObjectKind::Item, &name),
    }
}

/// Writes (or, with `None`, removes) the object of one policy; durable at the store's next
/// sync.
pub fn write_policy(
    store: &Vault,
    vault_id: &str,
    name: &str,
    row: Option<&PolicyRow>,
) -> Result<(), StoreError> {
    let object = hashed_name(&name.to_lowercase())?;
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
            store.put_description(
                ObjectKind::Policy,
                &object,
                BlobKind::Policy,
                &to_json(&record)?,
                false,
            )
        }
        None => store.delete_description(ObjectKind::Policy, &object),
    }
}

/// Reads the item object `name`.
pub fn read_item(
    store: &Vault,
    name: &ObjectName,
    vault_id: &str,
) -> Result<ItemRecord, ManifestError> {
    let r: ItemRecord = read_json(
        store,
        ObjectKind::Item,
        name,
        BlobKind::Item,
        vault_id,
        |r: &ItemRecord| (&r.vault_id, r.format),
    )?;
    if object_name(&r.item.id) != name.as_str() {
        return Err(ManifestError::Invalid {
            path: PathBuf::from(store.backend().locate(ObjectKind::Item, name)),
            reason: format!("it describes item {}", r.item.id),
        });
    }
    Ok(r)
}

/// Reads the policy object `name`.
pub fn read_policy(
    store: &Vault,
    name: &ObjectName,
    vault_id: &str,
) -> Result<PolicyRecord, ManifestError> {
    let r: PolicyRecord = read_json(
        store,
        ObjectKind::Policy,
        name,
        BlobKind::Policy,
        vault_id,
        |r: &PolicyRecord| (&r.vault_id, r.format),
    )?;
    if object_name(&r.name.to_lowercase()) != name.as_str() {
        return Err(ManifestError::Invalid {
            path: PathBuf::from(store.backend().locate(ObjectKind::Policy, name)),
            reason: format!("it describes policy {}", r.name),
        });
    }
    Ok(r)
}
