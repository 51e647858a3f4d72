//! `vmvault vault rebuild`: a new catalog for a format 2 vault, from what the vault folder
//! holds (point manifests, disk indexes, item and policy objects, chunk files).
//!
//! # What it promises
//! - **Nothing stored is changed.** It reads the vault's objects and writes only a new
//!   catalog, built under a temporary name (`catalog.db.rebuild`) and moved into place
//!   without replacing anything once it is complete: a kill leaves either no catalog (run it
//!   again) or the whole new one. It refuses to run while a `catalog.db` exists.
//! - **What it cannot vouch for, it leaves.** A point whose manifest or indexes fail their
//!   checks is not recorded, and its objects are left as they are: garbage collection
//!   refuses to run while the store holds a point the catalog does not know, so its chunks
//!   are not lost before someone looks. So are indexes without a manifest (a backup killed
//!   just before its commit, or a committed point whose manifest was lost: not ours to
//!   decide). Entries that are no objects (a symbolic link, a name vmvault never gives) are
//!   named and never read.
//! - **Chunks a point needs but that are missing are not recorded as stored**, so the next
//!   backup writes them again; `verify` names the points that need them.
//!
//! What is not in the vault is not rebuilt: the job history, and the simulated clock's
//! offset (set so that the simulated time is not before the newest point).
//!
//! What the vault's objects do not keep up with is worked out again (see
//! [`super::describe`]): an item's last backup and last scheduled run from its newest
//! point when that is newer than what the item's object says, and every point's STORED
//! size from the indexes (a manifest keeps the size its point had when committed).

use super::{data_format, EngineError, EngineOptions, Result, SETTING_CHUNK_SIZE};
use super::{SETTING_CLOCK_OFFSET, SETTING_VAULT_NAME};
use crate::model::Item;
use crate::vault::backend::{Backend, ObjectKind};
use crate::vault::catalog::{Catalog, ChunkRow, CATALOG_FILE};
use crate::vault::folder::{FolderError, Layout, VaultFolder};
use crate::vault::lock::VaultLock;
use crate::vault::manifest::{self, PointManifest};
use crate::vault::store::index::IndexExpect;
use crate::vault::store::{slot_len, Digest, StoreError, Vault};
use chrono::{DateTime, Utc};
use std::collections::{HashMap, HashSet};

/// The temporary name of the catalog being rebuilt.
const TEMP_CATALOG: &str = "catalog.db.rebuild";

/// What a rebuild found.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct RebuildReport {
    pub items: usize,
    pub policies: usize,
    pub points: usize,
    pub chunks: usize,
    /// Chunks points need that are not in the store.
    pub missing_chunks: usize,
    /// What could not be used, and why (left as it is).
    pub problems: Vec<String>,
}

/// Rebuilds the catalog of the vault `opts` describes. See the module docs.
pub fn rebuild_catalog(opts: &EngineOptions) -> Result<RebuildReport> {
    // A new machine has no folder for the catalog of a vault in object storage yet.
    let folder = super::open_vault_folder(opts, opts.storage.is_some(), true)?;
    let _lock = VaultLock::acquire_patiently(folder.dir())?;
    let (folder, _lease) = super::lease_vault(folder)?;
    if folder
        .dir()
        .exists(CATALOG_FILE)
        .map_err(FolderError::from)?
    {
        return Err(EngineError::Usage(format!(
            "vault {} has a catalog.db: a rebuild never replaces one. If it is damaged or another vault's, move it (with its -wal and -shm files) out of the vault folder first",
            folder.path().display()
        )));
    }
    let marker = folder.marker()?.ok_or_else(|| {
        EngineError::Usage(match folder.remote() {
            Some(r) => format!(
                "{} holds no vault (no {}/{}/{}): check the storage settings of vault {} (bucket, container, prefix, endpoint)",
                r.location(),
                r.location(),
                ObjectKind::Config,
                crate::vault::folder::MARKER_OBJECT,
                opts.vault_name
            ),
            None => format!(
                "{} has no vault.toml: nothing says which vault this folder is, so it cannot be rebuilt. Put vault.toml back from a copy",
                folder.path().display()
            ),
        })
    })?;
    if marker.layout == Layout::V1 {
        return Err(EngineError::Usage(format!(
            "vault {} is of format 1: its catalog is its only description and cannot be rebuilt. Restore catalog.db from a copy",
            folder.path().display()
        )));
    }
    // A rebuild killed earlier left its temporary catalog: start again.
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let name = format!("{TEMP_CATALOG}{suffix}");
        if folder.dir().exists(&name).map_err(FolderError::from)? {
            folder.dir().remove_file(&name).map_err(FolderError::from)?;
        }
    }
    let catalog = Catalog::create(folder.dir(), TEMP_CATALOG)?;
    let report = match fill(opts, &folder, &catalog, &marker) {
        Ok(r) => r,
        Err(e) => {
            drop(catalog);
            for suffix in ["", "-wal", "-shm", "-journal"] {
                let _ = folder.dir().remove_file(format!("{TEMP_CATALOG}{suffix}"));
            }
            return Err(e);
        }
    };
    if let Some(remote) = folder.remote() {
        // The new catalog becomes the vault's writer before it is in place: a kill in
        // between leaves the vault's writer a catalog no one has, and every other catalog
        // (an older one put back) refuses to write; a rebuild again puts it right.
        let cache_id = uuid::Uuid::new_v4().to_string();
        catalog.set_setting(crate::vault::folder::SETTING_CACHE_ID, &cache_id)?;
        folder.write_writer(remote.as_ref(), &cache_id)?;
    }
    catalog.checkpoint()?;
    drop(catalog);
    folder
        .dir()
        .rename_noreplace(TEMP_CATALOG, folder.dir(), CATALOG_FILE)
        .map_err(FolderError::from)?;
    for suffix in ["-wal", "-shm"] {
        let _ = folder.dir().remove_file(format!("{TEMP_CATALOG}{suffix}"));
    }
    folder.dir().sync().map_err(FolderError::from)?;
    Ok(report)
}

fn fill(
    opts: &EngineOptions,
    folder: &VaultFolder,
    catalog: &Catalog,
    marker: &crate::vault::folder::Marker,
) -> Result<RebuildReport> {
    let mut report = RebuildReport::default();
    let vault_id = marker.id.clone();
    marker.layout.record(catalog)?;
    catalog.set_setting(crate::vault::folder::SETTING_VAULT_ID, &vault_id)?;
    catalog.set_setting(SETTING_VAULT_NAME, &marker.name)?;
    // vault.toml is not authenticated: what it says of encryption must match the chunks.
    let chunks = folder
        .objects(&[ObjectKind::Chunk])
        .map_err(StoreError::from)?;
    if let Some(encrypted) = first_chunk_encrypted(chunks.as_ref()) {
        if encrypted != marker.layout.is_encrypted() {
            return Err(EngineError::Failed(format!(
                "vault.toml says the vault is {}, but its chunks are {}: vault.toml was changed. Nothing was written. Put the vault's own vault.toml back",
                if marker.layout.is_encrypted() { "encrypted" } else { "not encrypted" },
                if encrypted { "encrypted" } else { "not encrypted" },
            )));
        }
    }
    let mut no_key_file = None;
    let format = data_format(folder, catalog, marker.layout, &opts.keys, &mut no_key_file)?;
    let store = folder.vault(format)?;

    // Entries that are not objects (a symbolic link, a name vmvault never gives) are named
    // as problems and never followed or read.
    for kind in [ObjectKind::Policy, ObjectKind::Item, ObjectKind::Index] {
        for stray in store.backend().strays(kind).map_err(StoreError::from)? {
            report.problems.push(format!(
                "{stray}: it was not read (vmvault reads only what it stored, and never follows a link); remove it"
            ));
        }
    }
    let policy_names = store.description_names(ObjectKind::Policy)?;
    let item_names = store.description_names(ObjectKind::Item)?;
    let stored = store.stored_points()?;

    // Policies and items as their objects say.
    for name in policy_names {
        match manifest::read_policy(&store, &name, &vault_id) {
            Ok(p) => {
                catalog.restore_policy(&p.row())?;
                report.policies += 1;
            }
            Err(e) => report.problems.push(format!("policy object {name}: {e}")),
        }
    }
    let mut items: HashMap<String, Item> = HashMap::new();
    for name in item_names {
        match manifest::read_item(&store, &name, &vault_id) {
            Ok(r) => {
                items.insert(r.item.id.clone(), r.item);
            }
            Err(e) => report.problems.push(format!("item object {name}: {e}")),
        }
    }

    // Points, from their manifests and indexes.
    let mut newest: Option<DateTime<Utc>> = None;
    // Every chunk looked up so far: whether the store has it.
    let mut known_chunks: HashMap<Digest, bool> = HashMap::new();
    let mut chunk_size = None;
    let mut manifest_items: HashMap<String, (DateTime<Utc>, Item)> = HashMap::new();
    // The newest point of each item: (time, scheduled instant of a scheduled point).
    let mut newest_points: HashMap<String, (DateTime<Utc>, Option<DateTime<Utc>>)> = HashMap::new();
    let mut damaged = Vec::new();
    for (id, held) in &stored {
        let id = id.clone();
        if !held.manifest {
            // Indexes without a manifest: a backup killed just before its commit, or a
            // committed point whose manifest was lost. Not ours to decide: left alone.
            report.problems.push(format!(
                "recovery point {id} has disk indexes but no manifest (a backup stopped just before its commit, or a lost manifest); it is left as it is"
            ));
            continue;
        }
        let m = match manifest::read_manifest(&store, &id, &vault_id) {
            Ok(m) => m,
            Err(e) => {
                report.problems.push(format!(
                    "recovery point {id}: {e}; its folder is left as it is"
                ));
                continue;
            }
        };
        match point_chunks(&store, &m, &mut known_chunks) {
            Ok((chunks, missing)) => {
                if missing > 0 {
                    damaged.push(m.point.id.clone());
                }
                let hashes = m.index_digests().unwrap_or_default();
                catalog.import_point(
                    &m.point,
                    m.retain_until,
                    m.chunk_size,
                    &hashes,
                    &chunks,
                    m.point.time,
                )?;
                report.points += 1;
                report.chunks += chunks.len();
                chunk_size.get_or_insert(m.chunk_size);
                newest = newest.max(Some(m.point.time));
                let scheduled = (m.point.kind == crate::model::PointKind::Scheduled)
                    .then_some(m.point.scheduled_time);
                let entry = newest_points
                    .entry(m.point.item_id.clone())
                    .or_insert((m.point.time, scheduled));
                if entry.0 < m.point.time {
                    *entry = (m.point.time, scheduled);
                }
                let keep = manifest_items
                    .get(&m.item.id)
                    .is_none_or(|(t, _)| *t < m.point.time);
                if keep {
                    manifest_items.insert(m.item.id.clone(), (m.point.time, m.item.clone()));
                }
            }
            Err(e) => report.problems.push(format!(
                "recovery point {id}: {e}; its folder is left as it is"
            )),
        }
    }
    if !stored.is_empty() && report.points == 0 {
        let first = report.problems.first().cloned().unwrap_or_default();
        return Err(EngineError::Failed(format!(
            "none of the {} recovery point(s) could be read ({first}): the key, or vault.toml, is not this vault's. No catalog was made",
            stored.len()
        )));
    }
    report.missing_chunks = known_chunks.values().filter(|there| !**there).count();
    // Points that need missing chunks read as damaged until a verify or a backup repairs
    // them (the next backup must not take their chunks for stored).
    catalog.set_points_damaged(&damaged, &[])?;
    // An item whose object is missing or damaged comes back as its newest manifest has it.
    for (id, (_, item)) in manifest_items {
        items.entry(id).or_insert(item);
    }
    let policies: HashSet<String> = catalog
        .policies()?
        .into_iter()
        .map(|p| p.name.to_lowercase())
        .collect();
    for item in items.values_mut() {
        if let Some((time, scheduled)) = newest_points.get(&item.id) {
            catch_up_with_newest_point(item, *time, *scheduled);
        }
    }
    for item in items.values() {
        if let Some(p) = &item.policy {
            if !policies.contains(&p.to_lowercase()) {
                report.problems.push(format!(
                    "item {} is protected by policy {p}, which the vault does not describe (its policy object is missing or damaged): create the policy again (`vmvault policy create`) before its next scheduled backup",
                    item.qualified_name()
                ));
            }
        }
        catalog.put_item(item)?;
    }
    report.items = items.len();
    measure_stored(catalog, &store, items.keys())?;
    catalog.set_setting(
        SETTING_CHUNK_SIZE,
        &chunk_size.unwrap_or(opts.chunk_size).to_string(),
    )?;
    if opts.simulator.is_some() {
        // The simulated clock was in the catalog only: never before the newest point.
        let ahead = newest.map_or(0, |t| (t - Utc::now()).num_microseconds().unwrap_or(0));
        catalog.set_setting(SETTING_CLOCK_OFFSET, &ahead.max(0).to_string())?;
    }
    Ok(report)
}

/// Brings what an item's object says of its last backup up to its newest point (at
/// `time`; `scheduled`: the instant it was scheduled for): item objects are not rewritten
/// for every backup, only when what they say of the item changes.
fn catch_up_with_newest_point(
    item: &mut Item,
    time: DateTime<Utc>,
    scheduled: Option<DateTime<Utc>>,
) {
    if item.last_backup_time.is_none_or(|t| t < time) {
        item.last_backup_time = Some(time);
        item.last_backup_status = Some(crate::model::JobStatus::Completed);
        item.last_error = None;
    }
    if let Some(s) = scheduled {
        if item.last_scheduled_run.is_none_or(|t| t < s) {
            item.last_scheduled_run = Some(s);
        }
    }
}

/// Measures the STORED size of every point of `items` from their indexes, as a backup
/// and a prune set it ([`super::stored`]): the chunks a point has that the item's point
/// before it has not, the oldest point all of its own. A point whose index cannot be read
/// keeps the size its manifest gave and is measured against as holding nothing (as a
/// prune does).
fn measure_stored<'a>(
    catalog: &Catalog,
    store: &Vault,
    items: impl Iterator<Item = &'a String>,
) -> Result<()> {
    let mut sizes = Vec::new();
    for item_id in items {
        let mut before: HashSet<Digest> = HashSet::new();
        for p in catalog.points(item_id)? {
            let hashes = catalog.point_index_hashes(&p.id)?.unwrap_or_default();
            let mut own = HashSet::new();
            let mut readable = true;
            for disk in &p.disks {
                let checksum = hashes
                    .iter()
                    .find(|(d, _)| *d == disk.index)
                    .map(|(_, h)| *h);
                match store.read_point_index_for(&IndexExpect {
                    point_id: &p.id,
                    disk: disk.index,
                    capacity: disk.capacity,
                    checksum,
                }) {
                    Ok(ix) => own.extend(ix.entries.iter().map(|(_, d)| *d)),
                    Err(_) => readable = false,
                }
            }
            if readable {
                sizes.push((
                    p.id.clone(),
                    catalog.chunks_stored_bytes(own.difference(&before))?,
                ));
            }
            before = own;
        }
    }
    catalog.set_points_stored(&sizes)?;
    Ok(())
}

/// The chunks the indexes of the point `m` reference that are not in `known` yet, with
/// their stored and raw sizes, and how many of the chunks it needs are missing from the
/// store (counted for every point that needs them, not only the first one looked at: each
/// such point must read as damaged). Each index is checked against the manifest (point,
/// disk, capacity, checksum); what was looked up goes into `known` once the whole point is
/// accepted.
fn point_chunks(
    store: &Vault,
    m: &PointManifest,
    known: &mut HashMap<Digest, bool>,
) -> std::result::Result<(Vec<ChunkRow>, usize), String> {
    let hashes = m
        .index_digests()
        .ok_or_else(|| "the manifest's index checksums are not hex digests".to_string())?;
    let mut rows = Vec::new();
    let mut missing = 0;
    let mut seen: HashSet<Digest> = HashSet::new();
    let mut looked_up: HashMap<Digest, bool> = HashMap::new();
    for disk in &m.point.disks {
        let checksum = hashes
            .iter()
            .find(|(d, _)| *d == disk.index)
            .map(|(_, h)| *h)
            .ok_or_else(|| format!("the manifest has no index checksum for disk {}", disk.index))?;
        let index = store
            .read_point_index_for(&IndexExpect {
                point_id: &m.point.id,
                disk: disk.index,
                capacity: disk.capacity,
                checksum: Some(checksum),
            })
            .map_err(|e| e.to_string())?;
        for (slot, d) in &index.entries {
            if !seen.insert(*d) {
                continue;
            }
            match known.get(d) {
                Some(true) => continue,
                Some(false) => {
                    missing += 1;
                    continue;
                }
                None => {}
            }
            match store.stored_size(d) {
                Ok(Some(stored_len)) => {
                    looked_up.insert(*d, true);
                    rows.push(ChunkRow {
                        digest: *d,
                        stored_len,
                        raw_len: slot_len(index.capacity, index.chunk_size, *slot),
                    })
                }
                _ => {
                    looked_up.insert(*d, false);
                    missing += 1
                }
            }
        }
    }
    known.extend(looked_up);
    Ok((rows, missing))
}

/// Whether the chunks in `backend` are encrypted, from the header of the first chunk of
/// format 2 listed (None: no such chunk).
fn first_chunk_encrypted(backend: &dyn Backend) -> Option<bool> {
    for info in backend.list(ObjectKind::Chunk).flatten() {
        let Ok(head) = backend.get_range(ObjectKind::Chunk, &info.name, 0, 6) else {
            continue;
        };
        if head[..4] == crate::vault::codec::MAGIC {
            return Some(head[5] & 2 != 0);
        }
    }
    None
}
