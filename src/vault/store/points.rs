//! The vault's own objects besides chunks, through its [`Backend`]: the disk indexes and
//! manifests of recovery points, and the item and policy objects that describe the vault.
//! The engine asks for "the index of disk 2 of point P" or "every point the store holds";
//! where and how they are kept (a folder per point on the local backend, object keys in a
//! bucket) is the backend's business.
//!
//! # What a point is in the store
//! A recovery point is its indexes (`<point>.d<disk>`) and, in format 2, its manifest
//! (`<point>`). The catalog records a point's write before the first of them is put
//! (the announcement GC relies on), and commits the point only after they are durable; so
//! the store may hold points the catalog does not know yet (a backup running or cut short)
//! or no longer (a prune cut short), and [`Vault::stored_points`] is how garbage
//! collection finds them.
//!
//! # Removal order
//! A point's manifest goes first, durably, then its indexes ([`Vault::remove_points`]):
//! a removal cut short leaves a point that reads as never committed (indexes without a
//! manifest), which a rebuild does not bring back and GC removes, never a manifest naming
//! indexes that are gone.

use super::chunks::{Vault, INDEX_BLOB_NAME};
use super::index::{DiskIndex, IndexExpect, IndexFile, IndexOwner};
use super::{Digest, StoreError};
use crate::vault::backend::{index_name, index_parts, BackendError, ObjectKind, ObjectName};
use crate::vault::codec::{self, BlobKind};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::SystemTime;

/// What the store holds of one recovery point.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredPoint {
    /// Whether its manifest is there (format 2: the point was committed by some catalog).
    pub manifest: bool,
    /// The disks it has an index of, in order.
    pub disks: Vec<u32>,
    /// When any of its objects was last written.
    pub modified: SystemTime,
}

/// The largest disk index read, whatever the format (a 1 GiB index lists 26 million
/// chunks: 26 TiB of data at 1 MiB chunks).
const MAX_INDEX_BYTES: u64 = (1 << 30) + codec::MAX_OVERHEAD as u64;

/// The object name of the index of disk `disk` of point `point_id`, or why the id cannot
/// be one (the invalid name is quoted, escaped).
fn index_object(point_id: &str, disk: u32) -> Result<ObjectName, StoreError> {
    index_name(point_id, disk).map_err(|e| StoreError::Invalid(format!("recovery point id: {e}")))
}

/// The object name of point `point_id`'s manifest (its id), or why the id cannot be one.
pub fn point_object_name(point_id: &str) -> Result<ObjectName, StoreError> {
    ObjectName::new(point_id).map_err(|e| StoreError::Invalid(format!("recovery point id: {e}")))
}

impl Vault {
    /// Where the index of disk `disk` of point `point_id` is kept (for messages).
    pub fn index_location(&self, point_id: &str, disk: u32) -> PathBuf {
        match index_name(point_id, disk) {
            Ok(n) => PathBuf::from(self.backend().locate(ObjectKind::Index, &n)),
            Err(_) => PathBuf::from(format!(
                "{} (index {}.d{disk})",
                self.backend().location(),
                crate::fmt::echo(point_id)
            )),
        }
    }

    /// Where the manifest of point `point_id` is kept (for messages).
    pub fn manifest_location(&self, point_id: &str) -> PathBuf {
        match ObjectName::new(point_id) {
            Ok(n) => PathBuf::from(self.backend().locate(ObjectKind::Manifest, &n)),
            Err(_) => PathBuf::from(format!(
                "{} (manifest {})",
                self.backend().location(),
                crate::fmt::echo(point_id)
            )),
        }
    }

    /// Writes the index of disk `disk` of point `point_id` (in format 2 as an encrypted,
    /// authenticated blob). With `durable`, durable when it returns (one sync of the
    /// store), else at the next [`Vault::sync`]. Returns the index's checksum, to
    /// record with the point.
    ///
    /// Every index blob is authenticated under one name ([`INDEX_BLOB_NAME`]): the point
    /// and disk it belongs to are inside it, authenticated with the rest, so an index moved
    /// from another point is refused by [`IndexFile::check`] naming the point it belongs to,
    /// rather than by a bare authentication failure.
    pub fn write_point_index(
        &self,
        point_id: &str,
        disk: u32,
        index: &DiskIndex,
        durable: bool,
    ) -> Result<Digest, StoreError> {
        let name = index_object(point_id, disk)?;
        let at = self.index_location(point_id, disk);
        let owner = IndexOwner {
            point_id: point_id.to_string(),
            disk,
        };
        let (bytes, sum) = index.to_bytes(&at, &owner)?;
        match self.blob_codec()? {
            None => self.backend().put(ObjectKind::Index, &name, &bytes)?,
            Some(mut codec) => {
                let blob = codec
                    .encode(BlobKind::Index, INDEX_BLOB_NAME, &bytes)
                    .map_err(|e| {
                        StoreError::Invalid(format!("encoding disk index {}: {e}", at.display()))
                    })?;
                self.backend().put(ObjectKind::Index, &name, blob)?;
            }
        }
        if durable {
            self.sync()?;
        }
        Ok(sum)
    }

    /// Reads and checks the index of disk `disk` of point `point_id`, with the point it
    /// names and its checksum (in format 2, authenticated first). A missing, foreign or
    /// damaged index is [`StoreError::IndexCorrupt`] naming where it is.
    pub fn read_point_index(&self, point_id: &str, disk: u32) -> Result<IndexFile, StoreError> {
        let name = index_object(point_id, disk)?;
        let at = self.index_location(point_id, disk);
        let raw = self.get_object(ObjectKind::Index, &name, MAX_INDEX_BYTES, "disk index")?;
        let bytes = match self.blob_codec()? {
            None => raw,
            Some(mut codec) => decode(&mut codec, BlobKind::Index, INDEX_BLOB_NAME, &raw, &at)?,
        };
        DiskIndex::parse_bytes(&bytes, &at)
    }

    /// Reads the index of disk `expect.disk` of point `expect.point_id` and checks that it
    /// is that point's ([`IndexFile::check`]).
    pub fn read_point_index_for(&self, expect: &IndexExpect<'_>) -> Result<DiskIndex, StoreError> {
        let at = self.index_location(expect.point_id, expect.disk);
        self.read_point_index(expect.point_id, expect.disk)?
            .check(&at, expect)
    }

    /// Writes the description object `(kind, name)` of this format 2 vault — a manifest,
    /// an item, a policy — as a blob of `blob` kind authenticated under `name`. With
    /// `durable`, durable when it returns, else at the next [`Vault::sync`].
    pub fn put_description(
        &self,
        kind: ObjectKind,
        name: &ObjectName,
        blob: BlobKind,
        bytes: &[u8],
        durable: bool,
    ) -> Result<(), StoreError> {
        let Some(mut codec) = self.blob_codec()? else {
            return Err(StoreError::Invalid(
                "a vault of format 1 keeps no description of itself".into(),
            ));
        };
        let at = self.backend().locate(kind, name);
        let encoded = codec
            .encode(blob, name.as_str(), bytes)
            .map_err(|e| StoreError::Invalid(format!("encoding {at}: {e}")))?;
        self.backend().put(kind, name, encoded)?;
        if durable {
            self.sync()?;
        }
        Ok(())
    }

    /// Reads the description object `(kind, name)` ([`Vault::put_description`]) and
    /// returns its raw bytes. One that is missing, foreign or fails its checks is
    /// [`StoreError::IndexCorrupt`]-like damage named by where it is.
    pub fn get_description(
        &self,
        kind: ObjectKind,
        name: &ObjectName,
        blob: BlobKind,
    ) -> Result<Vec<u8>, StoreError> {
        let Some(mut codec) = self.blob_codec()? else {
            return Err(StoreError::Invalid(
                "a vault of format 1 keeps no description of itself".into(),
            ));
        };
        let what = match blob {
            BlobKind::Manifest => "point manifest",
            BlobKind::Item => "item object",
            BlobKind::Policy => "policy object",
            k => k.name(),
        };
        let limit = blob.max_raw_len() + codec::MAX_OVERHEAD as u64;
        let raw = self.get_object(kind, name, limit, what)?;
        let at = PathBuf::from(self.backend().locate(kind, name));
        decode(&mut codec, blob, name.as_str(), &raw, &at)
    }

    /// Deletes the description object `(kind, name)`; one already gone is not an error.
    /// Durable at the next [`Vault::sync`].
    pub fn delete_description(
        &self,
        kind: ObjectKind,
        name: &ObjectName,
    ) -> Result<(), StoreError> {
        Ok(self.backend().delete(kind, name)?)
    }

    /// The names of the objects of a description kind (items, policies, manifests), sorted.
    pub fn description_names(&self, kind: ObjectKind) -> Result<Vec<ObjectName>, StoreError> {
        let mut names = self
            .backend()
            .list(kind)
            .map(|r| r.map(|info| info.name))
            .collect::<Result<Vec<_>, BackendError>>()?;
        names.sort();
        Ok(names)
    }

    /// Every recovery point the store holds objects of, by id.
    pub fn stored_points(&self) -> Result<BTreeMap<String, StoredPoint>, StoreError> {
        let mut points: BTreeMap<String, StoredPoint> = BTreeMap::new();
        fn add<'m>(
            points: &'m mut BTreeMap<String, StoredPoint>,
            id: &str,
            modified: SystemTime,
        ) -> &'m mut StoredPoint {
            let p = points.entry(id.to_string()).or_insert(StoredPoint {
                manifest: false,
                disks: Vec::new(),
                modified,
            });
            p.modified = p.modified.max(modified);
            p
        }
        for info in self.backend().list(ObjectKind::Index) {
            let info = info?;
            if let Some((point, disk)) = index_parts(info.name.as_str()) {
                add(&mut points, point, info.modified).disks.push(disk);
            }
        }
        for info in self.backend().list(ObjectKind::Manifest) {
            let info = info?;
            add(&mut points, info.name.as_str(), info.modified).manifest = true;
        }
        for p in points.values_mut() {
            p.disks.sort_unstable();
        }
        Ok(points)
    }

    /// Removes the manifests of the points `ids`, durably: a kill after this leaves points
    /// that read as never committed, never a manifest a rebuild would bring back once the
    /// catalog rows (and then the chunks) of its point were gone. Returns how many were
    /// there.
    pub fn remove_manifests(&self, ids: &[String]) -> Result<usize, StoreError> {
        let removed = self.remove_manifests_unsynced(ids)?;
        if removed > 0 {
            self.sync()?;
        }
        Ok(removed)
    }

    /// [`Vault::remove_manifests`] without the sync: durable at the next [`Vault::sync`],
    /// which the caller must see to before it relies on the removal.
    pub fn remove_manifests_unsynced(&self, ids: &[String]) -> Result<usize, StoreError> {
        let mut removed = 0;
        for id in ids {
            let name = point_object_name(id)?;
            let there = self.backend().stat(ObjectKind::Manifest, &name);
            if there.ok().flatten().is_some() {
                removed += 1;
            }
            self.backend().delete(ObjectKind::Manifest, &name)?;
        }
        Ok(removed)
    }

    /// Removes every object of point `id`: its manifest first, durably (see the module
    /// docs), then the indexes of `disks`. Durable at the next [`Vault::sync`].
    pub fn remove_point(&self, id: &str, disks: &[u32]) -> Result<(), StoreError> {
        self.remove_manifests(&[id.to_string()])?;
        for &disk in disks {
            let name = index_object(id, disk)?;
            self.backend().delete(ObjectKind::Index, &name)?;
        }
        Ok(())
    }

    /// Reads the whole object `(kind, name)` of at most `limit` bytes; what cannot be an
    /// object of ours (missing, a planted link or FIFO, too large) is damage named by where
    /// it is, other failures are the backend's.
    fn get_object(
        &self,
        kind: ObjectKind,
        name: &ObjectName,
        limit: u64,
        what: &str,
    ) -> Result<Vec<u8>, StoreError> {
        let mut buf = Vec::new();
        match self.backend().get_into(kind, name, &mut buf, limit) {
            Ok(()) => Ok(buf),
            Err(e) => {
                let at = PathBuf::from(self.backend().locate(kind, name));
                Err(match e {
                    BackendError::NotFound { .. } => StoreError::IndexCorrupt {
                        path: at,
                        reason: format!("the {what} is missing"),
                    },
                    BackendError::TooLarge { size, .. } => StoreError::IndexCorrupt {
                        path: at,
                        reason: format!("{size} bytes is more than any {what} can be"),
                    },
                    // Named by where the foreign entry is (a linked point folder, not the
                    // object's file "in" it).
                    e @ BackendError::NotAnObject { .. } => StoreError::IndexCorrupt {
                        path: PathBuf::from(&e.context().location),
                        reason: format!("the {what} cannot be read: {e}"),
                    },
                    e => StoreError::Backend(e),
                })
            }
        }
    }
}

/// Decodes a blob read from `at`; one that fails its checks is damage named by `at`.
fn decode(
    codec: &mut codec::Codec,
    kind: BlobKind,
    name: &str,
    raw: &[u8],
    at: &std::path::Path,
) -> Result<Vec<u8>, StoreError> {
    codec.decode_to_vec(kind, name, raw).map_err(|e| {
        if e.is_bad_blob() {
            StoreError::IndexCorrupt {
                path: at.to_path_buf(),
                reason: e.to_string(),
            }
        } else {
            StoreError::Invalid(e.to_string())
        }
    })
}
