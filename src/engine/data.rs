//! Data jobs: Backup (snapshot → transfer to vault → commit), Restore and Verify.
//!
//! Commit rule: a recovery point exists only once its catalog row is committed, and that
//! happens after its chunks and indexes are durable (`Vault::sync`, index files
//! written with fsync). A crash at any line before leaves chunk files that no committed
//! point references (garbage collection sweeps them) and never a half point.

use super::jobs::{JobCtx, JobEnd, JobFail, JobSpec};
use super::ops::item_vm;
use super::restore_target::{self, Failure};
use super::{usage, Engine, Event, NoticeLevel, Result};
use crate::fsx::Dir;
use crate::model::*;
use crate::provider::qemu::human_bytes;
use crate::vault::backend::ObjectKind;
use crate::vault::catalog::ChunkRow;
use crate::vault::store::{self, BackupParams, DiskIndex};
use chrono::{DateTime, Duration, Utc};
use std::ffi::OsStr;
use std::path::{Path, PathBuf};

/// Most recovery points an item may have (DOMAIN.md).
pub const MAX_POINTS_PER_ITEM: usize = 9999;
/// Default retain-until of an on-demand backup.
pub const DEFAULT_ON_DEMAND_DAYS: i64 = 30;
/// The longest an on-demand point may be kept, in days (99 years, as Azure allows).
pub const MAX_ON_DEMAND_DAYS: i64 = 365 * 99;

/// Why `retain_until` is no retain-until for an on-demand backup taken at `now`, or None
/// when it is one: the one rule the engine and the console's form both apply.
pub fn retain_until_problem(now: DateTime<Utc>, retain_until: DateTime<Utc>) -> Option<String> {
    if retain_until <= now {
        return Some(format!(
            "retain-until {} is not in the future (now is {}); give a later date",
            retain_until.format("%Y-%m-%d %H:%M UTC"),
            now.format("%Y-%m-%d %H:%M UTC")
        ));
    }
    if retain_until > now + Duration::days(MAX_ON_DEMAND_DAYS) {
        return Some(format!(
            "retain-until {} is more than 99 years ahead; give a date before {}",
            retain_until.format("%Y-%m-%d"),
            (now + Duration::days(MAX_ON_DEMAND_DAYS)).format("%Y-%m-%d")
        ));
    }
    None
}

/// Why a backup runs.
#[derive(Debug, Clone, Copy)]
pub(crate) enum BackupKind {
    /// Back up now, kept until `retain_until`.
    OnDemand { retain_until: DateTime<Utc> },
    /// The policy's backup for the scheduled instant.
    Scheduled { scheduled_time: DateTime<Utc> },
}

/// Disk image formats a restore can write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestoreFormat {
    Raw,
    Qcow2,
    Vhd,
    Vmdk,
}

impl RestoreFormat {
    pub fn parse(s: &str) -> Option<RestoreFormat> {
        match s.to_ascii_lowercase().as_str() {
            "raw" => Some(RestoreFormat::Raw),
            "qcow2" => Some(RestoreFormat::Qcow2),
            "vhd" | "vpc" => Some(RestoreFormat::Vhd),
            "vmdk" => Some(RestoreFormat::Vmdk),
            _ => None,
        }
    }
    fn disk_format(self) -> crate::provider::qemu::DiskFormat {
        use crate::provider::qemu::DiskFormat;
        match self {
            RestoreFormat::Raw => DiskFormat::Raw,
            RestoreFormat::Qcow2 => DiskFormat::Qcow2,
            RestoreFormat::Vhd => DiskFormat::Vhd,
            RestoreFormat::Vmdk => DiskFormat::Vmdk,
        }
    }
    pub fn extension(self) -> &'static str {
        match self {
            RestoreFormat::Raw => "raw",
            RestoreFormat::Qcow2 => "qcow2",
            RestoreFormat::Vhd => "vhd",
            RestoreFormat::Vmdk => "vmdk",
        }
    }
}

/// Files a restore of `point` into `dir` writes.
pub fn restore_targets(
    item: &Item,
    point: &RecoveryPoint,
    dir: &Path,
    format: RestoreFormat,
) -> Vec<PathBuf> {
    // One plain file name per disk, whatever the VM's name holds.
    let name = item.name.replace(['/', '\0'], "_");
    point
        .disks
        .iter()
        .map(|d| dir.join(format!("{name}-disk{}.{}", d.index, format.extension())))
        .collect()
}

impl Engine {
    /// Back up now: starts a Backup job kept until `retain_until` (default 30 days).
    pub fn backup_now(&self, item: &Item, retain_until: Option<DateTime<Utc>>) -> Result<String> {
        self.require_owner()?;
        let now = self.now();
        let retain_until = retain_until.unwrap_or(now + Duration::days(DEFAULT_ON_DEMAND_DAYS));
        if let Some(problem) = retain_until_problem(now, retain_until) {
            return usage(problem);
        }
        self.check_backup_allowed(item)?;
        self.start_backup(item, BackupKind::OnDemand { retain_until }, true, None)
    }

    fn check_backup_allowed(&self, item: &Item) -> Result<()> {
        let item = self.item(&item.id)?.unwrap_or_else(|| item.clone());
        if !item.protection_state.is_under_policy() {
            let q = item.qualified_name();
            let policy = self
                .previous_policy(&item)?
                .unwrap_or_else(|| "DefaultPolicy".into());
            let why = match item.protection_state {
                ProtectionState::NotProtected if item.registration_state != RegistrationState::Registered => format!(
                    "it is not registered; register it (`vmvault register {q}`) and protect it (`vmvault protect {q} --policy DefaultPolicy`) first"
                ),
                ProtectionState::NotProtected => {
                    format!("it is not protected; protect it first: `vmvault protect {q} --policy DefaultPolicy`")
                }
                ProtectionState::ProtectionStopped => format!(
                    "its protection is stopped; resume protection first: `vmvault resume-protection {q} --policy {policy}`"
                ),
                ProtectionState::SoftDeleted => format!(
                    "its backup data is soft-deleted; undelete it (`vmvault undelete {q}`), then resume protection (`vmvault resume-protection {q} --policy {policy}`)"
                ),
                ProtectionState::BackupsSuspended => format!(
                    "its backups are suspended; resume protection first: `vmvault resume-protection {q} --policy {policy}`"
                ),
                s => format!("its state is {}", s.label().to_lowercase()),
            };
            return usage(format!("cannot back up {q}: {why}"));
        }
        if let Some(id) = self.running_on_item(&item.id, &[JobOperation::Backup]) {
            return usage(format!(
                "a backup of {} is already running (job {id}); wait for it (`vmvault job {id}`) or cancel it",
                item.qualified_name()
            ));
        }
        if self.inner.catalog.points(&item.id)?.len() >= MAX_POINTS_PER_ITEM {
            return usage(format!(
                "{} has {MAX_POINTS_PER_ITEM} recovery points, the most an item may have; let retention remove some or stop protection",
                item.qualified_name()
            ));
        }
        Ok(())
    }

    /// Starts a Backup job. `snapshot_at` stamps the point with that instant (simulated
    /// time) instead of the clock's now.
    pub(crate) fn start_backup(
        &self,
        item: &Item,
        kind: BackupKind,
        user_triggered: bool,
        snapshot_at: Option<DateTime<Utc>>,
    ) -> Result<String> {
        let mut spec = JobSpec::new(
            JobOperation::Backup,
            Some(item),
            &["Take snapshot", "Transfer data to vault"],
        );
        spec.user_triggered = user_triggered;
        spec.data = true;
        let item = item.clone();
        self.spawn_job(spec, move |ctx| run_backup(ctx, &item, kind, snapshot_at))
    }

    /// Runs a backup on this thread up to its commit (scheduler rounds of `sim advance`,
    /// whose points [`Engine::commit_backups`] commits together, then
    /// [`Engine::finish_job`] ends their jobs). A backup that failed is ended already:
    /// its job comes back as `Err`.
    pub(crate) fn write_backup_inline(
        &self,
        item: &Item,
        kind: BackupKind,
        snapshot_at: Option<DateTime<Utc>>,
    ) -> Result<std::result::Result<(JobCtx, WrittenBackup), Job>> {
        let mut spec = JobSpec::new(
            JobOperation::Backup,
            Some(item),
            &["Take snapshot", "Transfer data to vault"],
        );
        spec.user_triggered = false;
        let (ctx, _) = self.create_job(spec)?;
        match write_backup(&ctx, item, kind, snapshot_at) {
            Ok(written) => Ok(Ok((ctx, written))),
            Err(fail) => {
                let result = Err(fail);
                note_backup_failure(&ctx, item, &result);
                self.finish_job(&ctx, result);
                Ok(Err(ctx.snapshot()))
            }
        }
    }

    /// Restores every disk of a point into `dir` as `<vm>-disk<N>.<format>`.
    pub fn restore(
        &self,
        item: &Item,
        point: &RecoveryPoint,
        dir: &Path,
        format: RestoreFormat,
    ) -> Result<String> {
        self.require_owner()?;
        let fresh = self.item(&item.id)?.unwrap_or_else(|| item.clone());
        if fresh.protection_state == ProtectionState::SoftDeleted {
            let q = fresh.qualified_name();
            return usage(format!(
                "cannot restore {q}: its backup data is soft-deleted; undelete it first (`vmvault undelete {q}`)"
            ));
        }
        // Absolute: the job records its files, and whichever process cleans up after an
        // interrupted restore may run in another working directory.
        let dir = &std::path::absolute(dir).map_err(|e| {
            super::EngineError::Usage(format!(
                "cannot use {:?} as the target folder ({e}): give the path of a folder to restore into",
                dir.display().to_string()
            ))
        })?;
        let targets = restore_targets(item, point, dir, format);
        let names: Vec<&OsStr> = targets.iter().filter_map(|t| t.file_name()).collect();
        restore_target::check(dir, &names).map_err(|e| {
            super::EngineError::Usage(format!(
                "cannot restore into {}: {e}. {}",
                dir.display(),
                e.fix()
            ))
        })?;
        let mut spec = JobSpec::new(JobOperation::Restore, Some(item), &["Restore disks"]);
        spec.data = true;
        spec.details.insert("point".into(), point.id.clone().into());
        spec.details
            .insert("target".into(), dir.display().to_string().into());
        // The files it will write: if the process dies mid-restore, the next owner of the
        // vault removes what they left half-written (see `restore_target::remove_leftovers`).
        spec.details.insert(
            "targets".into(),
            targets
                .iter()
                .map(|t| t.display().to_string())
                .collect::<Vec<_>>()
                .into(),
        );
        let point = point.clone();
        let dir = dir.to_path_buf();
        self.spawn_job(spec, move |ctx| {
            run_restore(ctx, &point, &dir, &targets, format)
        })
    }

    /// Verifies every chunk the points of `item` (or of the whole vault) need.
    pub fn verify(&self, item: Option<&Item>) -> Result<String> {
        self.require_owner()?;
        let mut spec = JobSpec::new(
            JobOperation::Verify,
            item,
            &["Read indexes", "Verify chunks"],
        );
        spec.data = true;
        let item_id = item.map(|i| i.id.clone());
        self.spawn_job(spec, move |ctx| run_verify(ctx, item_id.as_deref()))
    }

    /// Reads the index of one disk of a point, checking that it is that point's: the point
    /// and disk it names, the capacity recorded with the point and the checksum recorded at
    /// commit.
    pub(crate) fn read_index(
        &self,
        point: &RecoveryPoint,
        disk: u32,
    ) -> std::result::Result<DiskIndex, store::StoreError> {
        let chunks = self.inner.store.as_ref().ok_or_else(|| {
            store::StoreError::Invalid(
                "the vault is open read-only: indexes are read by its owner".into(),
            )
        })?;
        let capacity = point
            .disks
            .iter()
            .find(|d| d.index == disk)
            .map(|d| d.capacity)
            .ok_or_else(|| store::StoreError::IndexCorrupt {
                path: chunks.index_location(&point.id, disk),
                reason: format!("recovery point {} has no disk {disk}", point.id),
            })?;
        let checksum = self
            .inner
            .catalog
            .point_index_hashes(&point.id)
            .map_err(|e| store::StoreError::Invalid(format!("catalog: {e}")))?
            .and_then(|h| h.into_iter().find(|(d, _)| *d == disk).map(|(_, s)| s));
        if let Some(sum) = &checksum {
            if let Some(ix) =
                self.inner
                    .recent_indexes
                    .get(&point.item_id, &point.id, disk, capacity, sum)
            {
                return Ok(DiskIndex::clone(&ix));
            }
        }
        chunks.read_point_index_for(&store::index::IndexExpect {
            point_id: &point.id,
            disk,
            capacity,
            checksum,
        })
    }
}

/// Writes the folder of a new point: announced first (so that garbage collection can tell
/// it from a folder it knows nothing about), then its indexes, durably. Returns the index
/// checksums, to commit with the point.
pub(crate) fn write_point_files(
    engine: &Engine,
    point_id: &str,
    writer: &str,
    indexes: &[(u32, DiskIndex)],
) -> std::result::Result<Vec<(u32, store::Digest)>, JobFail> {
    let disk_numbers: Vec<u32> = indexes.iter().map(|(d, _)| *d).collect();
    engine
        .inner
        .catalog
        .record_point_write(point_id, writer, &disk_numbers, engine.now())?;
    write_index_files(engine, point_id, indexes, true)
}

/// The largest VM definition (libvirt domain XML) kept with a recovery point: real ones
/// are a few KiB.
const MAX_DEFINITION_BYTES: usize = 1 << 20;

/// The catalog as the store's registry of committed chunks.
pub(super) struct CatalogRegistry<'a>(pub &'a crate::vault::catalog::Catalog);

impl store::ChunkRegistry for CatalogRegistry<'_> {
    fn is_committed(&self, d: &store::Digest) -> std::result::Result<bool, store::StoreError> {
        self.0
            .chunk_committed(d)
            .map_err(|e| store::StoreError::Invalid(format!("catalog: {e}")))
    }
}

fn store_fail(e: store::StoreError) -> JobFail {
    match e {
        // The storage's own verdict (full, read-only, access denied, something foreign in
        // the way) says who must act and how.
        ref e if e.is_full() || matches!(e, store::StoreError::Backend(_)) => {
            JobFail::Failed(e.details())
        }
        e => JobFail::vault("Could not write to the vault", e.to_string()),
    }
}

fn run_backup(
    ctx: &JobCtx,
    item: &Item,
    kind: BackupKind,
    snapshot_at: Option<DateTime<Utc>>,
) -> super::jobs::JobResult {
    let result = write_backup(ctx, item, kind, snapshot_at).and_then(|written| {
        ctx.engine
            .commit_backups(vec![(ctx, written)])
            .pop()
            .unwrap_or_else(|| Err(JobFail::vault("The backup was not committed", "no result")))
    });
    note_backup_failure(ctx, item, &result);
    result
}

/// Shows a failed backup on its item.
pub(crate) fn note_backup_failure(ctx: &JobCtx, item: &Item, result: &super::jobs::JobResult) {
    let engine = &ctx.engine;
    if let Err(fail) = result {
        // The item shows the failed attempt; a cancel leaves its state as it was.
        let now = engine.now();
        let (status, error) = match fail {
            JobFail::Cancelled => (JobStatus::Cancelled, None),
            JobFail::Failed(d) => (JobStatus::Failed, Some(d.clone())),
        };
        let _ = engine.inner.catalog.update_item(&item.id, |i| {
            i.last_backup_status = Some(status);
            i.last_backup_time = Some(now);
            if status == JobStatus::Failed {
                if i.protection_state.is_under_policy() {
                    i.protection_state = ProtectionState::ProtectionError;
                }
                i.last_error = error.clone();
            }
        });
        engine.publish(Event::ItemsChanged);
    }
}

/// A backup whose chunks are written (not yet synced) and whose point is not committed
/// yet: what [`Engine::commit_backups`] takes.
pub(crate) struct WrittenBackup {
    item: Item,
    point_kind: PointKind,
    scheduled_time: DateTime<Utc>,
    expiry: Option<DateTime<Utc>>,
    retain_until: Option<DateTime<Utc>>,
    point_stored: u64,
    at: DateTime<Utc>,
    snapshot: Box<dyn crate::provider::Snapshot>,
    warnings: Vec<String>,
    point_id: String,
    chunk_size: u32,
    indexes: Vec<(u32, DiskIndex)>,
    /// Filled by [`Engine::commit_backups`] once the indexes are written.
    index_hashes: Vec<(u32, [u8; 32])>,
    new_chunks: Vec<ChunkRow>,
    pins: Vec<store::PinGuard>,
    logical: u64,
    stored: u64,
    read: u64,
}

/// Takes the snapshot and writes the chunks of a backup (Task 1, and Task 2 up to the
/// commit). Its point is committed by [`Engine::commit_backups`].
pub(crate) fn write_backup(
    ctx: &JobCtx,
    item: &Item,
    kind: BackupKind,
    snapshot_at: Option<DateTime<Utc>>,
) -> std::result::Result<WrittenBackup, JobFail> {
    let engine = &ctx.engine;
    let store = engine.store()?;
    let item = engine.item(&item.id)?.unwrap_or_else(|| item.clone());
    if let Some(why) = super::ops::absorbed_reason(&item) {
        return Err(JobFail::Failed(why.clone()));
    }
    if item.not_found {
        return Err(JobFail::Failed(
            ErrorDetails::new(
                "UserErrorVmNotFound",
                "The VM was not found",
                format!("{} was not found at the source at the last discovery", item.qualified_name()),
            )
            .recommend("Run `vmvault discover`; if the VM was deleted, stop protection (its recovery points are kept)."),
        ));
    }

    // Task 1: Take snapshot.
    ctx.start_task(0);
    let at = snapshot_at.unwrap_or_else(|| engine.now());
    // The newest point is the incremental base: the source keeps its change tracking.
    let mut previous = engine.inner.catalog.points(&item.id)?.into_iter().last();
    let mut damaged_base = None;
    if let Some(p) = &previous {
        if engine
            .inner
            .catalog
            .damaged_points(Some(&item.id))?
            .contains(&p.id)
        {
            // Its unchanged slots may hold damaged chunks: read everything, which also
            // writes those chunks again and so repairs every point that shares them.
            damaged_base = Some(p.id.clone());
            previous = None;
        }
    }
    let since = previous.as_ref().and_then(|p| p.cbt_token.as_deref());
    let snapshot = engine
        .inner
        .opts
        .provider
        .snapshot(&item_vm(&item), at, since, &ctx.cancel)?;
    ctx.detail("consistency", snapshot.consistency().as_str());
    let mut warnings = snapshot.warnings();
    if let Some(id) = damaged_base {
        warnings.push(format!(
            "the previous recovery point {id} is damaged (see `vmvault verify`); the whole VM was read again"
        ));
    }
    ctx.end_task(0, TaskStatus::Completed);

    // Task 2: Transfer data to vault.
    ctx.start_task(1);
    let point_id = uuid::Uuid::new_v4().to_string();
    let chunk_size = engine.chunk_size();
    let registry = CatalogRegistry(&engine.inner.catalog);
    let mut indexes = Vec::new();
    let mut new_chunks: Vec<ChunkRow> = Vec::new();
    let mut pins = Vec::new();
    let (mut logical, mut stored, mut read) = (0u64, 0u64, 0u64);
    let threads = engine.inner.opts.threads.max(1);
    // Plan every disk before reading any, so the job's total is known from the start and
    // its percent and time left only move forward (a total that grew as each disk started
    // made the bar reach ~100% and fall back on multi-disk VMs).
    let mut plans = Vec::new();
    // One throttle for the job: its disks together stay under the vault's read limit.
    let throttle = match engine.inner.opts.read_limit_mib_s {
        0 => None,
        mib_s => Some(std::sync::Arc::new(crate::disk::Throttle::new(mib_s))),
    };
    for disk in snapshot.disks().to_vec() {
        ctx.cancel.check()?;
        let mut reader = snapshot.open_disk(disk.index)?;
        if let Some(t) = &throttle {
            reader = Box::new(crate::disk::Throttled::new(
                reader,
                t.clone(),
                ctx.cancel.clone(),
            ));
        }
        // The previous point's index of the same disk, when it can serve as a base.
        let prev_index = previous.as_ref().and_then(|p| {
            if !p.disks.iter().any(|d| d.index == disk.index && d.capacity == reader.capacity()) {
                return None;
            }
            match engine.read_index(p, disk.index) {
                Ok(ix) if ix.chunk_size == chunk_size && ix.capacity == reader.capacity() => Some(ix),
                Ok(_) => None,
                Err(e) => {
                    warnings.push(format!(
                        "index of disk {} of the previous point {} could not be read ({e}); read the whole disk",
                        disk.index, p.id
                    ));
                    None
                }
            }
        });
        let changed = match (
            &prev_index,
            previous.as_ref().and_then(|p| p.cbt_token.as_deref()),
        ) {
            (Some(_), Some(token)) => reader.changed_extents(token)?,
            _ => None,
        };
        let planned = planned_read_bytes(reader.as_ref(), changed.as_deref(), chunk_size)?;
        plans.push((disk, reader, prev_index, changed, planned));
    }
    ctx.progress
        .set_total(plans.iter().map(|(.., planned)| *planned).sum());
    // Everything from the first chunk written to the point's size: a failure or a cancel
    // anywhere in it gives back the chunks written so far (no point will hold them).
    let transfer = (|| -> std::result::Result<u64, JobFail> {
        for (disk, reader, prev_index, changed, _) in plans {
            ctx.cancel.check()?;
            let result = store::backup_disk(BackupParams {
                reader: reader.as_ref(),
                previous: prev_index.as_ref(),
                changed,
                chunk_size,
                store,
                registry: &registry,
                pins: &engine.inner.pins,
                progress: &ctx.progress,
                cancel: &ctx.cancel,
                threads,
                compression_level: engine.inner.opts.compression_level,
                // One sync makes the chunks and the indexes durable (commit_backups).
                sync: false,
            })
            .map_err(|e| match e {
                store::BackupError::Cancelled => JobFail::Cancelled,
                store::BackupError::Source(p) => JobFail::from(p),
                store::BackupError::Store(s) => store_fail(s),
            })?;
            logical += result.logical_bytes;
            stored += result.stored_bytes;
            read += result.bytes_read;
            new_chunks.extend(result.new_chunks.iter().map(|c| ChunkRow {
                digest: c.digest,
                stored_len: c.stored_len,
                raw_len: c.raw_len,
            }));
            indexes.push((disk.index, result.index));
            pins.push(result.pinned);
        }
        ctx.cancel.check()?;
        // What the point will be, worked out here (side by side with the other backups of
        // a round) rather than in the commit; the item's newest point, the base of its
        // STORED size, stays the newest while this backup runs.
        Ok(engine.stored_of_new_point(&item.id, &indexes, &new_chunks)?)
    })();
    let point_stored = match transfer {
        Ok(n) => n,
        Err(fail) => {
            pins.clear();
            engine.discard_chunks(&new_chunks);
            return Err(fail);
        }
    };
    let (point_kind, scheduled_time, expiry, retain_until) = match kind {
        BackupKind::OnDemand { retain_until } => (
            PointKind::OnDemand,
            at,
            Some(retain_until),
            Some(retain_until),
        ),
        BackupKind::Scheduled { scheduled_time } => {
            let expiry = item
                .policy
                .as_deref()
                .and_then(|name| engine.policy(name).ok())
                .map(|p| crate::policy::expiry_of(&p, scheduled_time));
            (PointKind::Scheduled, scheduled_time, expiry, None)
        }
    };
    Ok(WrittenBackup {
        item,
        point_kind,
        scheduled_time,
        expiry,
        retain_until,
        point_stored,
        at,
        snapshot,
        warnings,
        point_id,
        chunk_size,
        indexes,
        index_hashes: Vec::new(),
        new_chunks,
        pins,
        logical,
        stored,
        read,
    })
}

impl Engine {
    /// Commits backups whose chunks are written, together: announces their point folders
    /// (one durable transaction), writes their indexes, makes chunks, indexes and folders
    /// durable with one sync of the vault's file system, then commits their points (one
    /// durable transaction). A crash before the commit loses these points and nothing
    /// committed before them. Returns each backup's result, in order.
    pub(crate) fn commit_backups(
        &self,
        batch: Vec<(&JobCtx, WrittenBackup)>,
    ) -> Vec<super::jobs::JobResult> {
        self.commit_backups_with(batch, &[])
    }

    /// [`Engine::commit_backups`], removing the manifests of the points `expiring` (those
    /// the prune that follows will delete) before the sync that makes the new points'
    /// manifests durable, so that this one sync also makes their removal durable and the
    /// prune needs none of its own (see [`Engine::remove_manifests`]). A kill before the
    /// prune leaves points the catalog lists without their manifests, as a kill between
    /// the prune's removal of their manifests and of their rows does: the next prune
    /// removes them.
    pub(crate) fn commit_backups_with(
        &self,
        batch: Vec<(&JobCtx, WrittenBackup)>,
        expiring: &[String],
    ) -> Vec<super::jobs::JobResult> {
        let mut results: Vec<Option<super::jobs::JobResult>> = batch.iter().map(|_| None).collect();
        let mut written = Vec::with_capacity(batch.len());
        for (i, (ctx, w)) in batch.into_iter().enumerate() {
            match ctx.cancel.check() {
                Ok(()) => written.push((i, ctx, w)),
                Err(c) => results[i] = Some(Err(c.into())),
            }
        }
        if let Err(fail) = self.write_points(&mut written, &mut results) {
            for (i, _, w) in written.drain(..) {
                results[i] = Some(Err(fail.duplicate()));
                self.discard_written(w);
            }
        }
        // Each cancel is checked once more before the points are committed.
        let mut going_on = Vec::with_capacity(written.len());
        for (i, ctx, w) in written {
            match ctx.cancel.check() {
                Ok(()) => going_on.push((i, ctx, w)),
                Err(c) => {
                    results[i] = Some(Err(c.into()));
                    self.discard_written(w);
                }
            }
        }
        let written = going_on;
        for (i, result) in self.commit_written(written, expiring) {
            results[i] = Some(result);
        }
        results
            .into_iter()
            .map(|r| {
                r.unwrap_or_else(|| {
                    Err(JobFail::vault("The backup was not committed", "no result"))
                })
            })
            .collect()
    }

    /// The point folders of `written`: announced, written and synced. A backup whose folder
    /// cannot be written leaves `written` with its error in `results`; an error that stops
    /// all of them is returned.
    fn write_points(
        &self,
        written: &mut Vec<(usize, &JobCtx, WrittenBackup)>,
        results: &mut [Option<super::jobs::JobResult>],
    ) -> std::result::Result<(), JobFail> {
        if written.is_empty() {
            return Ok(());
        }
        // The folders are announced first, so that garbage collection can tell them from
        // folders it knows nothing about.
        let disks: Vec<Vec<u32>> = written
            .iter()
            .map(|(_, _, w)| w.indexes.iter().map(|(d, _)| *d).collect())
            .collect();
        let jobs: Vec<String> = written.iter().map(|(_, ctx, _)| ctx.id()).collect();
        let announce: Vec<crate::vault::catalog::PointWriteAnnounce> = written
            .iter()
            .zip(&disks)
            .zip(&jobs)
            .map(
                |(((_, _, w), disks), job_id)| crate::vault::catalog::PointWriteAnnounce {
                    point_id: &w.point_id,
                    job_id,
                    disks,
                },
            )
            .collect();
        self.inner
            .catalog
            .record_point_writes(&announce, self.now())?;
        let mut hashes = Vec::with_capacity(written.len());
        let mut indexed = Vec::with_capacity(written.len());
        for (i, ctx, w) in written.drain(..) {
            match write_indexes(self, &w) {
                Ok(h) => {
                    self.inner
                        .recent_indexes
                        .keep(&w.item.id, &w.point_id, &w.indexes, &h);
                    hashes.push(h);
                    indexed.push((i, ctx, w));
                }
                Err(fail) => {
                    results[i] = Some(Err(fail));
                    self.discard_written(w);
                }
            }
        }
        *written = indexed;
        // One sync for the chunks, the index files and the folders of every point here.
        self.sync_vault_files()?;
        for ((_, _, w), h) in written.iter_mut().zip(hashes) {
            w.index_hashes = h;
        }
        Ok(())
    }

    /// Commits the points of backups whose folders are durable, in one transaction (each
    /// in its own when that fails, so that each gets its own error).
    fn commit_written(
        &self,
        written: Vec<(usize, &JobCtx, WrittenBackup)>,
        expiring: &[String],
    ) -> Vec<(usize, super::jobs::JobResult)> {
        let mut out = Vec::with_capacity(written.len());
        let mut ready = Vec::with_capacity(written.len());
        for (i, ctx, w) in written {
            let written_chunks = w.new_chunks.clone();
            match ready_point(ctx, w) {
                Ok(p) => ready.push((i, p)),
                Err(fail) => {
                    // Its pins went with it.
                    out.push((i, Err(fail)));
                    self.discard_chunks(&written_chunks);
                }
            }
        }
        if ready.is_empty() {
            return out;
        }
        // A format 2 vault describes each point itself (for a rebuild of the catalog), once
        // its data is durable (a manifest never names what a crash can lose), and the
        // manifests are made durable (one more sync) before the catalog commits the points.
        if self.store().is_ok_and(|s| s.format().version() >= 2) {
            let mut described = Vec::with_capacity(ready.len());
            for (i, p) in ready {
                match self.write_point_manifest(&p) {
                    Ok(()) => described.push((i, p)),
                    Err(fail) => {
                        out.push((i, Err(fail)));
                        self.discard_ready(p);
                    }
                }
            }
            ready = described;
            if let Err(e) = self.remove_manifests(expiring) {
                // The prune removes them itself (and says why it cannot).
                tracing::debug!("removing the manifests of expired points before the prune: {e}");
            }
            let removals = self.inner.manifest_removals.before_sync();
            if let Err(fail) = self.sync_vault_files() {
                for (i, p) in ready.drain(..) {
                    out.push((i, Err(fail.duplicate())));
                    self.discard_described(p);
                }
                return out;
            }
            self.inner.manifest_removals.synced(removals);
        }
        let all: Vec<_> = ready.iter().map(|(_, p)| p.commit()).collect();
        let together = self.inner.catalog.commit_points(&all);
        drop(all);
        for (i, p) in ready {
            let result = match &together {
                Ok(()) => Ok(()),
                Err(_) => self.inner.catalog.commit_points(&[p.commit()]),
            };
            let item_id = p.point.item_id.clone();
            if result.is_err() {
                // Not committed: its chunks are no point's (those the catalog has committed
                // after all stay, see discard_uncommitted), and its manifest must not name
                // them once they are gone.
                self.discard_described(p);
            } else {
                drop(p.pins);
            }
            out.push((i, result.map(|()| JobEnd::Saved).map_err(JobFail::from)));
            self.publish(Event::ItemsChanged);
            self.publish(Event::PointsChanged { item_id });
        }
        out
    }
}

impl Engine {
    /// Gives back the chunks of a backup that will not be committed (once its pins are
    /// gone): a backup that failed for space frees it at once.
    fn discard_chunks(&self, chunks: &[ChunkRow]) {
        if chunks.is_empty() {
            return;
        }
        let Ok(store) = self.store() else { return };
        let digests: Vec<store::Digest> = chunks.iter().map(|c| c.digest).collect();
        let n = store::discard_uncommitted(
            store,
            &CatalogRegistry(&self.inner.catalog),
            &self.inner.pins,
            &digests,
        );
        tracing::info!(
            "{n} of the {} chunk(s) written by a backup that was not committed were removed",
            digests.len()
        );
    }

    /// [`Engine::discard_chunks`] of a point that will not be committed.
    fn discard_ready(&self, p: ReadyPoint) {
        let ReadyPoint {
            new_chunks, pins, ..
        } = p;
        drop(pins);
        self.discard_chunks(&new_chunks);
    }

    /// [`Engine::discard_ready`] of a point whose manifest may already be in the store (its
    /// commit failed: a full disk under the catalog, say). The manifest goes first, durably,
    /// and the indexes with it: a manifest left behind would name chunks given back here,
    /// and garbage collection would keep it as a point some newer catalog committed, a
    /// rebuild bring it back damaged. When the catalog has the point after all, or its
    /// objects cannot be removed, the chunks stay (garbage collection sees to them).
    fn discard_described(&self, p: ReadyPoint) {
        if self.format_version() < 2 {
            return self.discard_ready(p);
        }
        match self.inner.catalog.point(&p.point.id) {
            Ok(None) => {}
            Ok(Some(_)) => return,
            Err(e) => {
                tracing::warn!(
                    "recovery point {} was not committed, but the catalog cannot say so ({e}): its data is left for garbage collection",
                    p.point.id
                );
                return;
            }
        }
        let disks: Vec<u32> = p.index_hashes.iter().map(|(d, _)| *d).collect();
        match self.remove_point_objects(&p.point.id, &disks) {
            Ok(()) => self.discard_ready(p),
            Err(e) => tracing::warn!(
                "removing recovery point {}, which was not committed: {e}; its data is left for garbage collection",
                p.point.id
            ),
        }
    }

    /// [`Engine::discard_chunks`] of a written backup that will not be committed.
    fn discard_written(&self, w: WrittenBackup) {
        let WrittenBackup {
            new_chunks, pins, ..
        } = w;
        drop(pins);
        self.discard_chunks(&new_chunks);
    }

    /// Writes the manifest of a point about to be committed, not synced (format 2 only).
    fn write_point_manifest(&self, p: &ReadyPoint) -> std::result::Result<(), JobFail> {
        let store = self.store()?;
        if store.format().version() < 2 {
            return Ok(());
        }
        let m = crate::vault::manifest::PointManifest::new(
            &self.vault_id()?,
            &p.point,
            p.retain_until,
            p.chunk_size,
            &p.index_hashes,
            &p.item,
            &p.definition,
        );
        crate::vault::manifest::write_manifest(store, &m, false).map_err(store_fail)
    }

    /// Makes everything written to the vault so far durable (one sync of its store).
    fn sync_vault_files(&self) -> std::result::Result<(), JobFail> {
        self.store()?.sync().map_err(store_fail)
    }
}

/// Writes the indexes of a point, not synced; returns the index hashes.
fn write_indexes(
    engine: &Engine,
    w: &WrittenBackup,
) -> std::result::Result<Vec<(u32, [u8; 32])>, JobFail> {
    write_index_files(engine, &w.point_id, &w.indexes, false)
}

/// Writes the indexes of point `point_id` (durable when it returns with `durable`, else at
/// the store's next sync); returns the index hashes.
fn write_index_files(
    engine: &Engine,
    point_id: &str,
    indexes: &[(u32, DiskIndex)],
    durable: bool,
) -> std::result::Result<Vec<(u32, [u8; 32])>, JobFail> {
    let store = engine.store()?;
    let mut index_hashes = Vec::with_capacity(indexes.len());
    for (disk, index) in indexes {
        let sum = store
            .write_point_index(point_id, *disk, index, false)
            .map_err(store_fail)?;
        index_hashes.push((*disk, sum));
    }
    if durable {
        // One sync for all of them.
        store.sync().map_err(store_fail)?;
    }
    Ok(index_hashes)
}

/// The point of a written backup, its item's new state and its finished job, as they will
/// be committed.
fn ready_point(ctx: &JobCtx, w: WrittenBackup) -> std::result::Result<ReadyPoint, JobFail> {
    let engine = &ctx.engine;
    let WrittenBackup {
        item,
        point_kind,
        scheduled_time,
        expiry,
        retain_until,
        point_stored,
        at,
        snapshot,
        mut warnings,
        point_id,
        chunk_size,
        indexes: _,
        index_hashes,
        new_chunks,
        pins,
        logical,
        stored,
        read,
    } = w;
    let now = engine.now();
    let point = RecoveryPoint {
        id: point_id.clone(),
        item_id: item.id.clone(),
        time: at,
        scheduled_time,
        expiry,
        kind: point_kind,
        consistency: snapshot.consistency(),
        logical_bytes: logical,
        stored_bytes: point_stored,
        disks: snapshot.disks().to_vec(),
        cbt_token: snapshot.cbt_token(),
        job_id: Some(ctx.id()),
    };
    let mut definition = snapshot.definition();
    if let Some(xml) = definition
        .domain_xml
        .take_if(|x| x.len() > MAX_DEFINITION_BYTES)
    {
        // Kept with every point and read back whole by a rebuild: a definition this large
        // (a description someone filled) is left out, the point is not.
        warnings.push(format!(
            "the VM's definition is {}, more than the {} kept with a recovery point: this point was stored without it",
            crate::fmt::bytes(xml.len() as u64),
            crate::fmt::bytes(MAX_DEFINITION_BYTES as u64)
        ));
    }
    if let Err(e) = snapshot.release() {
        warnings.push(format!("releasing the snapshot: {}", e.details().message));
    }
    ctx.detail("recovery_point", point_id.clone());
    ctx.detail("logical_bytes", logical);
    ctx.detail("stored_bytes", stored);
    ctx.detail("bytes_read", read);
    ctx.detail("new_chunks", new_chunks.len());
    if !warnings.is_empty() {
        ctx.detail("warnings", warnings.clone());
    }
    let status = if warnings.is_empty() {
        JobStatus::Completed
    } else {
        JobStatus::CompletedWithWarnings
    };
    let job = ctx.final_job(status, None);
    let mut updated = engine.item(&item.id)?.unwrap_or(item.clone());
    updated.last_backup_time = Some(at);
    updated.last_backup_status = Some(status);
    let prior_error = updated.last_error.take();
    let policy_missing = updated
        .policy
        .as_deref()
        .is_some_and(|name| matches!(engine.inner.catalog.policy(name), Ok(None)));
    if updated.protection_state.is_under_policy() && !policy_missing {
        updated.protection_state = ProtectionState::Protected;
    } else if policy_missing {
        // The point is kept, but the item still has no schedule: it says so until it is
        // moved to a policy the vault has (see the scheduler).
        updated.last_error = prior_error;
    }
    Ok(ReadyPoint {
        point,
        definition,
        retain_until,
        chunk_size,
        index_hashes,
        new_chunks,
        now,
        item: updated,
        job,
        pins,
    })
}

/// A recovery point ready to commit (see [`Engine::commit_backups`]).
struct ReadyPoint {
    point: RecoveryPoint,
    /// What the source said the VM was (for the point's manifest).
    definition: crate::model::VmDefinition,
    retain_until: Option<DateTime<Utc>>,
    chunk_size: u32,
    index_hashes: Vec<(u32, [u8; 32])>,
    new_chunks: Vec<ChunkRow>,
    now: DateTime<Utc>,
    item: Item,
    job: Job,
    /// The chunks the point relies on stay pinned until it is committed.
    pins: Vec<store::PinGuard>,
}

impl ReadyPoint {
    fn commit(&self) -> crate::vault::catalog::PointCommit<'_> {
        crate::vault::catalog::PointCommit {
            point: &self.point,
            retain_until: self.retain_until,
            chunk_size: self.chunk_size,
            index_hashes: &self.index_hashes,
            chunks: &self.new_chunks,
            now: self.now,
            item: &self.item,
            job: &self.job,
        }
    }
}

/// Bytes a backup of this disk will read (see [`crate::vault::store::planned_read_bytes`]).
fn planned_read_bytes(
    reader: &dyn crate::provider::DiskReader,
    changed: Option<&[Extent]>,
    chunk_size: u32,
) -> std::result::Result<u64, crate::provider::ProviderError> {
    Ok(crate::vault::store::planned_read_bytes(
        reader.allocated_extents()?,
        changed.map(<[Extent]>::to_vec),
        reader.capacity(),
        chunk_size,
    ))
}

fn run_restore(
    ctx: &JobCtx,
    point: &RecoveryPoint,
    dir: &Path,
    targets: &[PathBuf],
    format: RestoreFormat,
) -> super::jobs::JobResult {
    let engine = &ctx.engine;
    let store = engine.store()?;
    ctx.start_task(0);
    let target = restore_target::open(dir).map_err(|e| JobFail::Failed(e.details()))?;
    let mut indexes = Vec::new();
    for d in &point.disks {
        let ix = engine
            .read_index(point, d.index)
            .map_err(|e| restore_fail(point, e.into(), &target, 0))?;
        ctx.progress.add_total(ix.logical_bytes());
        indexes.push(ix);
    }
    let need = space_needed(&indexes, format);
    let threads = engine.inner.opts.threads.max(1);
    let mut placed: Vec<(&OsStr, std::fs::File)> = Vec::new();
    for (ix, path) in indexes.iter().zip(targets) {
        let name = path.file_name().unwrap_or_default();
        let (progress, cancel) = (&ctx.progress, &ctx.cancel);
        let result = match format {
            RestoreFormat::Raw => {
                store::restore_disk_at(store, ix, &target, name, progress, cancel, threads)
                    .map_err(Failure::from)
            }
            f => restore_target::restore_converted(
                store,
                ix,
                &target,
                name,
                f.disk_format(),
                progress,
                cancel,
                threads,
            ),
        };
        match result {
            Ok(file) => placed.push((name, file)),
            Err(e) => {
                // All or nothing: the disks placed before go too (each only while its
                // name still leads to the file this restore wrote).
                for (name, file) in &placed {
                    store::restore::remove_if_ours(&target, name, file);
                }
                return Err(restore_fail(point, e, &target, need));
            }
        }
    }
    ctx.detail(
        "files",
        targets
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>(),
    );
    engine.notice(
        NoticeLevel::Info,
        format!(
            "Restore complete: {} disk image(s) in {}",
            placed.len(),
            dir.display()
        ),
        Some(&ctx.id()),
    );
    Ok(JobEnd::Done { warnings: vec![] })
}

/// Bytes a restore writes into its target folder at most: the data of every disk, and
/// while a disk is converted, its raw image beside the result.
fn space_needed(indexes: &[DiskIndex], format: RestoreFormat) -> u64 {
    let data: u64 = indexes.iter().map(DiskIndex::logical_bytes).sum();
    let beside = match format {
        RestoreFormat::Raw => 0,
        _ => indexes
            .iter()
            .map(DiskIndex::logical_bytes)
            .max()
            .unwrap_or(0),
    };
    data.saturating_add(beside)
}

/// The job's error for a failed restore, by whose problem it is: the target's (what to fix
/// there; the point is intact), the converter's, the vault storage's, or damaged data.
fn restore_fail(point: &RecoveryPoint, e: Failure, target: &Dir, need: u64) -> JobFail {
    let e = match e {
        Failure::Tool(e) => return JobFail::from(e),
        Failure::Store(store::StoreError::Cancelled) => return JobFail::Cancelled,
        Failure::Store(store::StoreError::Target(t)) => {
            let mut d = t.details();
            if t.is_full() && need > 0 {
                let free = target
                    .fs_stat()
                    .map(|s| format!("; {} are free there now", human_bytes(s.free_bytes)))
                    .unwrap_or_default();
                d.recommendations.insert(
                    1,
                    format!(
                        "This restore writes up to {} into {}{free}.",
                        human_bytes(need),
                        target.path().display()
                    ),
                );
            }
            return JobFail::Failed(d);
        }
        Failure::Store(e) => e,
    };
    let at = format!(
        "recovery point {} (taken {})",
        point.id,
        point.time.format("%Y-%m-%d %H:%M UTC")
    );
    if let store::StoreError::Io { .. } | store::StoreError::Backend(_) = e {
        // The vault's storage failed (not the data): see its details.
        let mut d = e.details();
        d.message = format!("{at}: {}", d.message);
        return JobFail::Failed(d);
    }
    JobFail::Failed(
        ErrorDetails::new(
            "RecoveryPointDataDamaged",
            "The recovery point cannot be restored",
            format!("{at}: {e}"),
        )
        .recommend("Run `vmvault verify` to list every affected recovery point.")
        .recommend("Restore another recovery point of this item; the others do not depend on the damaged data."),
    )
}

fn run_verify(ctx: &JobCtx, item_id: Option<&str>) -> super::jobs::JobResult {
    let engine = &ctx.engine;
    let store = engine.store()?;
    ctx.start_task(0);
    let points = match item_id {
        Some(id) => engine.inner.catalog.points(id)?,
        None => engine.inner.catalog.all_points()?,
    };
    let items: std::collections::HashMap<String, String> = engine
        .items()?
        .into_iter()
        .map(|i| (i.id.clone(), i.qualified_name()))
        .collect();
    // digest → points that need it
    let mut needed: std::collections::HashMap<store::Digest, Vec<usize>> = Default::default();
    let mut damaged: std::collections::BTreeMap<usize, Vec<String>> = Default::default();
    let mut bad_indexes = 0usize;
    let mut total = 0u64;
    for (pi, p) in points.iter().enumerate() {
        ctx.cancel.check()?;
        for d in &p.disks {
            match engine.read_index(p, d.index) {
                Ok(ix) => {
                    for (slot, digest) in &ix.entries {
                        let v = needed.entry(*digest).or_default();
                        if v.is_empty() {
                            total += ix.slot_len(*slot);
                        }
                        v.push(pi);
                    }
                }
                Err(e) => {
                    bad_indexes += 1;
                    damaged
                        .entry(pi)
                        .or_default()
                        .push(format!("index of disk {}: {e}", d.index))
                }
            }
        }
    }
    ctx.end_task(0, TaskStatus::Completed);
    ctx.start_task(1);
    ctx.progress.set_total(total);
    let digests: Vec<store::Digest> = needed.keys().copied().collect();
    let faults = store::verify_chunks(
        store,
        &digests,
        &ctx.progress,
        &ctx.cancel,
        engine.inner.opts.threads.max(1),
    )
    .map_err(|e| match e {
        store::StoreError::Cancelled => JobFail::Cancelled,
        e => store_fail(e),
    })?;
    for (digest, fault) in &faults {
        for pi in needed.get(digest).map(|v| v.as_slice()).unwrap_or(&[]) {
            damaged
                .entry(*pi)
                .or_default()
                .push(format!("chunk {}: {fault}", store::digest_hex(digest)));
        }
    }
    ctx.detail("points_checked", points.len());
    ctx.detail("chunks_checked", digests.len());
    // Missing and corrupt chunks stop counting as stored, so the next backup that meets
    // their data writes them again (repairing every point that shares them); corrupt files
    // are set aside as `<chunk>.damaged` for inspection. Unreadable ones (an I/O error) are
    // only reported: they may be fine. A chunk a running backup has pinned is left for the
    // next verify, as garbage collection leaves it: that backup is relying on it.
    let bad: Vec<store::Digest> = faults
        .iter()
        .filter(|(_, f)| !matches!(f, store::ChunkFault::Unreadable(_)))
        .map(|(d, _)| *d)
        .collect();
    let set_aside = engine
        .inner
        .pins
        .remove_unpinned(&bad, |free| -> Result<usize> {
            engine.inner.catalog.delete_chunks(free)?;
            let free: std::collections::HashSet<&store::Digest> = free.iter().collect();
            let mut renamed = 0;
            for (d, fault) in &faults {
                if free.contains(d) && matches!(fault, store::ChunkFault::Corrupt(_)) {
                    match store.set_aside(d) {
                        Ok(true) => renamed += 1,
                        Ok(false) => {}
                        Err(e) => tracing::warn!(
                            "could not set the damaged chunk {} aside: {e}",
                            store::digest_hex(d)
                        ),
                    }
                }
            }
            Ok(renamed)
        })?;
    let damaged_ids: Vec<String> = damaged.keys().map(|pi| points[*pi].id.clone()).collect();
    let clean_ids: Vec<String> = points
        .iter()
        .enumerate()
        .filter(|(pi, _)| !damaged.contains_key(pi))
        .map(|(_, p)| p.id.clone())
        .collect();
    engine
        .inner
        .catalog
        .set_points_damaged(&damaged_ids, &clean_ids)?;
    // The vault's description of itself, which only a rebuild reads otherwise: item and
    // policy objects mended from the catalog, unreadable manifests named.
    let mut description_warnings = Vec::new();
    if store.format().version() >= 2 {
        let vault_id = engine
            .inner
            .catalog
            .setting(crate::vault::folder::SETTING_VAULT_ID)?
            .unwrap_or_default();
        let checked: Vec<Item> = match item_id {
            Some(id) => engine.item(id)?.into_iter().collect(),
            None => engine.items()?,
        };
        let check = super::describe::check_description(
            store,
            &engine.inner.catalog,
            &vault_id,
            &checked,
            &points,
            item_id.is_none(),
        )?;
        if !check.rewritten.is_empty() {
            description_warnings.push(format!(
                "{} object(s) of the vault's description of itself were missing, damaged or out of date and were written again from the catalog: {}",
                check.rewritten.len(),
                check.rewritten.join(", ")
            ));
            ctx.detail("description_rewritten", check.rewritten);
        }
        if !check.not_rewritten.is_empty() {
            description_warnings.push(format!(
                "object(s) of the vault's description could not be written again: {}; a rebuild of the catalog would miss them: fix the cause and run verify again",
                check.not_rewritten.join("; ")
            ));
            ctx.detail("description_not_rewritten", check.not_rewritten);
        }
        if !check.unreadable_manifests.is_empty() {
            description_warnings.push(format!(
                "the manifest of {} recovery point(s) cannot be read (their data is checked apart from it): a rebuild of the catalog would leave them out, so keep this catalog (back it up): {}",
                check.unreadable_manifests.len(),
                check.unreadable_manifests.join("; ")
            ));
            ctx.detail("unreadable_manifests", check.unreadable_manifests);
        }
    }
    // Entries in the vault that are no objects of it: never read, named so that the
    // administrator can remove them (a planted link, a file copied in by hand).
    let mut strays = Vec::new();
    // Folders that could not be looked through (a folder someone else may write, say): no
    // entries of theirs, but said as what they are.
    let mut unlisted = Vec::new();
    for kind in [
        ObjectKind::Chunk,
        ObjectKind::Index,
        ObjectKind::Item,
        ObjectKind::Policy,
    ] {
        match store.backend().strays(kind) {
            Ok(found) => strays.extend(found.into_iter().map(|s| s.to_string())),
            Err(e) => unlisted.push(format!(
                "the vault's {kind} objects could not be looked through for entries that are no objects: {e}"
            )),
        }
    }
    // The key slots: what is there that no key slot is (a stray, or a slot that cannot be
    // read), as `key list` says it.
    if engine.is_encrypted() {
        match engine
            .vault_folder()
            .map_err(|e| e.to_string())
            .and_then(|f| crate::vault::unlock::readable_slots(&f).map_err(|e| e.to_string()))
        {
            Ok((_, bad)) => strays.extend(bad.into_iter().map(|b| format!("key slots: {b}"))),
            Err(e) => unlisted.push(format!(
                "the vault's key slots could not be looked through: {e}"
            )),
        }
    }
    if !strays.is_empty() {
        ctx.detail("stray_entries", strays.clone());
    }
    if !unlisted.is_empty() {
        ctx.detail("not_looked_through", unlisted.clone());
    }
    if damaged.is_empty() {
        let mut warnings = match strays.len() {
            0 => vec![],
            n => {
                const SHOWN: usize = 10;
                let mut w = format!(
                    "{n} entr{} in the vault folder {} not something vmvault stored and {} not read (never followed): {}",
                    if n == 1 { "y" } else { "ies" },
                    if n == 1 { "is" } else { "are" },
                    if n == 1 { "was" } else { "were" },
                    strays[..n.min(SHOWN)].join("; ")
                );
                if n > SHOWN {
                    w.push_str(&format!("; and {} more (see the job's details)", n - SHOWN));
                }
                w.push_str(if n == 1 {
                    ". Remove it while vmvault is stopped"
                } else {
                    ". Remove them while vmvault is stopped"
                });
                vec![w]
            }
        };
        warnings.extend(unlisted);
        warnings.extend(description_warnings);
        return Ok(JobEnd::Done { warnings });
    }
    let affected: Vec<serde_json::Value> = damaged
        .iter()
        .map(|(pi, problems)| {
            let p = &points[*pi];
            serde_json::json!({
                "point": p.id,
                "item": items.get(&p.item_id).cloned().unwrap_or_else(|| p.item_id.clone()),
                "time": crate::vault::catalog::fmt_time(p.time),
                "problems": problems,
            })
        })
        .collect();
    ctx.detail("affected_points", affected);
    let names: Vec<String> = damaged
        .keys()
        .map(|pi| {
            let p = &points[*pi];
            format!(
                "{} of {} ({})",
                p.id,
                items
                    .get(&p.item_id)
                    .cloned()
                    .unwrap_or_else(|| p.item_id.clone()),
                p.time.format("%Y-%m-%d %H:%M UTC")
            )
        })
        .collect();
    Err(JobFail::Failed(verify_failure(
        bad_indexes,
        faults.len(),
        set_aside,
        &names,
    )))
}

/// The error of a verify that found damage: what was damaged (indexes, chunks) and the
/// advice for each, since a backup repairs damaged chunks but never a point's index.
fn verify_failure(
    bad_indexes: usize,
    bad_chunks: usize,
    set_aside: usize,
    points: &[String],
) -> ErrorDetails {
    let mut what = Vec::new();
    if bad_indexes > 0 {
        what.push(format!("{bad_indexes} damaged or missing disk index(es)"));
    }
    if bad_chunks > 0 {
        what.push(format!("{bad_chunks} damaged chunk(s)"));
    }
    let mut e = ErrorDetails::new(
        "RecoveryPointDataDamaged",
        "Verification found damaged data",
        format!(
            "{}; {} recovery point(s) affected: {}",
            what.join(" and "),
            points.len(),
            points.join("; ")
        ),
    )
    .recommend("Restore from a recovery point that is not affected.");
    if bad_indexes > 0 {
        e = e.recommend("A disk index lists the chunks of one disk of one recovery point (points/<point>/disk<N>.idx in the vault folder) and no backup writes it again: put the vault folder's points/ back from a copy; the other recovery points do not depend on it.");
    }
    if bad_chunks > 0 {
        e = e.recommend("Back up the affected items again: the next backup reads them whole and writes the damaged chunks again where the VM still holds that data, which repairs every point that shares them.");
    }
    let files = if set_aside > 0 {
        format!(" ({set_aside} damaged chunk file(s) were set aside as chunks/<ab>/<chunk>.damaged, for inspection)")
    } else {
        String::new()
    };
    e.recommend(format!(
        "Check the vault's storage for hardware faults{files}."
    ))
}
