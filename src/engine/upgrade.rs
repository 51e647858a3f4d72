//! `vmvault vault upgrade`: a format 1 vault becomes a format 2 vault (encrypted unless the
//! vault's config says `encryption = "none"`), in place and resumably.
//!
//! # How
//! 1. A new format 2 vault is made beside the old one, in `.<name>.upgrade` (same file
//!    system), and gets the old vault's policies and items.
//! 2. Every recovery point of the old vault is read back through a [`PointReader`] (chunks
//!    checked as a restore checks them) and written into the new vault by the backup
//!    pipeline, with the same id, times, expiry, kind and consistency; the new vault commits
//!    each point as a backup does (chunks and indexes durable, manifest, then the catalog).
//!    A point already in the new vault is skipped: a killed upgrade goes on where it stopped.
//! 3. When every point is there, the two folders are exchanged in one atomic rename
//!    (`renameat2(RENAME_EXCHANGE)`), and the old vault is kept as `<name>.format1` for the
//!    administrator to remove once satisfied.
//!
//! A kill before the exchange leaves the old vault working at its place (the new one is
//! only a work folder), and after it the new vault. It needs room for a second copy of the
//! vault's data while it runs. The job history is copied; the old vault's chunks are not
//! changed.

use super::data::{write_point_files, CatalogRegistry};
use super::{Engine, EngineError, Result};
use crate::cancel::CancelToken;
use crate::disk::{DiskReader, ProviderError};
use crate::model::{ErrorDetails, Extent};
use crate::vault::catalog::ChunkRow;
use crate::vault::store::{self, BackupParams, DiskIndex, PointReader, ReaderOptions, Vault};
use std::collections::HashSet;
use std::sync::Arc;

/// What an upgrade did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct UpgradeReport {
    /// Points copied by this run.
    pub points_copied: usize,
    /// Points an earlier, interrupted run had copied already.
    pub points_already_there: usize,
    pub items: usize,
    pub policies: usize,
    /// Bytes of chunk data the new vault stored.
    pub stored_bytes: u64,
}

/// Where the new vault of an upgrade of the vault in `dir` is made.
pub fn work_dir(dir: &std::path::Path) -> Option<std::path::PathBuf> {
    let name = dir.file_name()?.to_str()?;
    Some(dir.with_file_name(format!(".{name}.upgrade")))
}

/// Where the old vault is kept after the exchange.
pub fn kept_dir(dir: &std::path::Path) -> Option<std::path::PathBuf> {
    let name = dir.file_name()?.to_str()?;
    Some(dir.with_file_name(format!("{name}.format1")))
}

/// Copies every policy, item and recovery point of `old` (format 1) into `new` (format 2),
/// skipping points `new` has. `progress` is told each point as it starts.
pub fn copy_vault(
    old: &Engine,
    new: &Engine,
    cancel: &CancelToken,
    mut progress: impl FnMut(usize, usize, &str),
) -> Result<UpgradeReport> {
    let mut report = UpgradeReport::default();
    let oc = &old.inner.catalog;
    let nc = &new.inner.catalog;
    for p in oc.policies()? {
        nc.restore_policy(&p)?;
        report.policies += 1;
    }
    // Policy rows go around the catalog's mirror: write their objects now.
    let names: Vec<String> = nc.policies()?.into_iter().map(|p| p.name).collect();
    nc.notify_policies(&names);
    let items = oc.items()?;
    for item in &items {
        nc.put_item(item)?;
    }
    report.items = items.len();
    nc.copy_jobs_from(oc)?;

    let have: HashSet<String> = nc.all_points()?.into_iter().map(|p| p.id).collect();
    let points = oc.all_points()?;
    let total = points.len();
    let src = Arc::new(Vault::open_with(
        old.store()?.dir(),
        old.store()?.format().clone(),
    )?);
    for (n, point) in points.iter().enumerate() {
        cancel
            .check()
            .map_err(|_| EngineError::Failed("cancelled".into()))?;
        if have.contains(&point.id) {
            report.points_already_there += 1;
            continue;
        }
        progress(n + 1, total, &point.id);
        report.stored_bytes += copy_point(old, new, &src, point, cancel)?;
        report.points_copied += 1;
    }
    // The old vault's settings that are not data: the simulated clock.
    if let Some(off) = oc.setting(super::SETTING_CLOCK_OFFSET)? {
        nc.set_setting(super::SETTING_CLOCK_OFFSET, &off)?;
    }
    Ok(report)
}

/// Copies one point; returns the bytes it stored.
fn copy_point(
    old: &Engine,
    new: &Engine,
    src: &Arc<Vault>,
    point: &crate::model::RecoveryPoint,
    cancel: &CancelToken,
) -> Result<u64> {
    let mut disks = Vec::new();
    for d in &point.disks {
        disks.push((d.index, old.read_index(point, d.index)?));
    }
    let chunk_size = disks
        .first()
        .map_or(new.chunk_size(), |(_, ix)| ix.chunk_size);
    let reader = Arc::new(PointReader::new(
        SharedStore(src.clone()),
        disks.clone(),
        ReaderOptions::default(),
    ));
    let store = new.store()?;
    let registry = CatalogRegistry(&new.inner.catalog);
    let progress = crate::cancel::Progress::default();
    let mut indexes = Vec::new();
    let mut chunks: Vec<ChunkRow> = Vec::new();
    let mut pins = Vec::new();
    let mut stored = 0;
    for (disk, index) in &disks {
        let view = PointDisk {
            reader: reader.clone(),
            disk: *disk,
            index,
        };
        let result = store::backup_disk(BackupParams {
            reader: &view,
            previous: None,
            changed: None,
            chunk_size,
            store,
            registry: &registry,
            pins: &new.inner.pins,
            progress: &progress,
            cancel,
            threads: new.inner.opts.threads.max(1),
            compression_level: new.inner.opts.compression_level,
            sync: true,
        })
        .map_err(|e| EngineError::Failed(format!("copying recovery point {}: {e}", point.id)))?;
        stored += result.stored_bytes;
        chunks.extend(result.new_chunks.iter().map(|c| ChunkRow {
            digest: c.digest,
            stored_len: c.stored_len,
            raw_len: c.raw_len,
        }));
        indexes.push((*disk, result.index));
        pins.push(result.pinned);
    }
    let hashes = write_point_files(new, &point.id, "upgrade", &indexes).map_err(|f| {
        let why = match f {
            super::jobs::JobFail::Cancelled => "cancelled".to_string(),
            super::jobs::JobFail::Failed(d) => d.message,
        };
        EngineError::Failed(format!("writing recovery point {}: {why}", point.id))
    })?;
    let retain_until = old.inner.catalog.point_retain_until(&point.id)?;
    let mut copy = point.clone();
    copy.stored_bytes = stored;
    let item = new.inner.catalog.item(&point.item_id)?.ok_or_else(|| {
        EngineError::Failed(format!("no item {} for point {}", point.item_id, point.id))
    })?;
    let m = crate::vault::manifest::PointManifest::new(
        &new.vault_id()?,
        &copy,
        retain_until,
        chunk_size,
        &hashes,
        &item,
        // A format 1 vault kept no definition of the VM.
        &crate::model::VmDefinition::default(),
    );
    crate::vault::manifest::write_manifest(store, &m, true)?;
    new.inner
        .catalog
        .import_point(&copy, retain_until, chunk_size, &hashes, &chunks, new.now())?;
    drop(pins);
    Ok(stored)
}

/// A chunk store shared by readers.
struct SharedStore(Arc<Vault>);

impl store::ChunkSource for SharedStore {
    type Reader = store::chunks::ChunkReader;
    fn new_reader(&self) -> std::result::Result<Self::Reader, store::StoreError> {
        self.0.reader()
    }
    fn read_chunk<'r>(
        &self,
        d: &store::Digest,
        r: &'r mut Self::Reader,
    ) -> std::result::Result<&'r [u8], store::StoreError> {
        self.0.read_into(d, r)
    }
    fn location(&self, d: &store::Digest) -> std::path::PathBuf {
        self.0.path_of(d)
    }
}

/// One disk of a point, read as a source disk.
struct PointDisk<'a> {
    reader: Arc<PointReader<SharedStore>>,
    disk: u32,
    index: &'a DiskIndex,
}

impl DiskReader for PointDisk<'_> {
    fn capacity(&self) -> u64 {
        self.index.capacity
    }

    fn allocated_extents(&self) -> std::result::Result<Vec<Extent>, ProviderError> {
        let cs = u64::from(self.index.chunk_size);
        let mut out: Vec<Extent> = Vec::new();
        for (slot, _) in &self.index.entries {
            let offset = slot * cs;
            let len = self.index.slot_len(*slot);
            match out.last_mut() {
                Some(last) if last.offset + last.len == offset => last.len += len,
                _ => out.push(Extent::new(offset, len)),
            }
        }
        Ok(out)
    }

    fn changed_extents(
        &self,
        _since: &str,
    ) -> std::result::Result<Option<Vec<Extent>>, ProviderError> {
        Ok(None)
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::result::Result<(), ProviderError> {
        let n = self.reader.read_at(self.disk, offset, buf).map_err(|e| {
            ProviderError::Failed(ErrorDetails::new(
                "RecoveryPointDataDamaged",
                "The old vault's data is damaged",
                e.to_string(),
            ))
        })?;
        if n != buf.len() {
            return Err(ProviderError::Failed(ErrorDetails::new(
                "RecoveryPointDataDamaged",
                "The old vault's data is damaged",
                format!(
                    "disk {} ends before offset {}",
                    self.disk,
                    offset + buf.len() as u64
                ),
            )));
        }
        Ok(())
    }
}

/// Whether the vault in `dir` is being upgraded or was: the work folder or the kept old
/// vault beside it.
pub fn leftovers(
    dir: &std::path::Path,
) -> (Option<std::path::PathBuf>, Option<std::path::PathBuf>) {
    let exists = |p: Option<std::path::PathBuf>| p.filter(|p| p.symlink_metadata().is_ok());
    (exists(work_dir(dir)), exists(kept_dir(dir)))
}

/// The last step: the new vault (in the work folder) takes the old one's place in one
/// atomic exchange, and the old one is kept as `<name>.format1`. Both engines must be shut
/// down. Also finishes an upgrade killed between the two renames.
pub fn exchange(dir: &std::path::Path, exchanged_already: bool) -> Result<std::path::PathBuf> {
    let bad = |what: &str| EngineError::Failed(format!("{}: {what}", dir.display()));
    let parent = dir
        .parent()
        .ok_or_else(|| bad("the vault folder has no parent"))?;
    let name = dir.file_name().ok_or_else(|| bad("no folder name"))?;
    let work = work_dir(dir).ok_or_else(|| bad("the folder name is not UTF-8"))?;
    let kept = kept_dir(dir).ok_or_else(|| bad("the folder name is not UTF-8"))?;
    let work_name = work.file_name().ok_or_else(|| bad("no folder name"))?;
    let kept_name = kept.file_name().ok_or_else(|| bad("no folder name"))?;
    let p = crate::fsx::Dir::open_private(parent, false)
        .map_err(|e| EngineError::Failed(format!("the folder of the vaults: {e}")))?;
    if !exchanged_already {
        p.rename_exchange(work_name, name).map_err(|e| {
            EngineError::Failed(format!("exchanging the upgraded vault into place: {e}"))
        })?;
        p.sync()
            .map_err(|e| EngineError::Failed(format!("syncing {}: {e}", parent.display())))?;
    }
    p.rename_noreplace(work_name, &p, kept_name).map_err(|e| {
        EngineError::Failed(format!(
            "keeping the old vault as {}: {e}; it is at {} meanwhile",
            kept.display(),
            work.display()
        ))
    })?;
    p.sync()
        .map_err(|e| EngineError::Failed(format!("syncing {}: {e}", parent.display())))?;
    Ok(kept)
}
