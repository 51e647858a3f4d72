//! The vault's own maintenance: Prune (expired recovery points, purge of soft-deleted
//! data) and GarbageCollect (chunks no point needs).
//!
//! Garbage collection never races a running backup: a backup pins every chunk it relies
//! on before it relies on it, GC deletes a chunk only while holding the pin set's lock
//! and only when it is unpinned, and only chunks older than the grace period are
//! candidates at all (defence in depth). Deletion order is catalog row first, then the
//! file: a crash in between leaves an orphan file (swept later), never a catalog row
//! pointing at nothing.
//!
//! **The interlock.** GC deletes what the catalog does not reference, so a catalog that
//! does not describe the store (lost and replaced, restored from an old copy, or another
//! vault's) would make it delete recovery points. Before deleting anything GC checks that
//! the catalog accounts for the store: every point folder is a committed point or one the
//! catalog announced before writing it ([`crate::vault::catalog::Catalog::record_point_write`]),
//! and a store with chunk files has a catalog that recorded backups. Otherwise the job
//! fails with `GarbageCollectionRefused`, names what it does not know, and deletes nothing.
//!
//! An announced folder whose backup never committed is removed, unless that backup
//! finished writing it (every disk it announced has a sound index naming the point): then
//! it may be a point a newer catalog committed (this one restored from a copy taken during
//! that backup), so GC keeps it and its chunks and says so in a warning. In format 2 a
//! point is committed only after its manifest is durable, so a finished folder without a
//! manifest was never committed by any catalog: it is removed like an unfinished one.

use super::jobs::{JobEnd, JobFail, JobSpec};
use super::{Engine, Event, Result};
use crate::model::*;
use crate::policy::{points_to_prune, PointRef};
use std::collections::HashSet;

fn refused(message: String) -> JobFail {
    JobFail::Failed(ErrorDetails::new(
        "GarbageCollectionRefused",
        "Garbage collection stopped without deleting anything",
        message,
    ))
}

impl Engine {
    /// Which points Prune would remove now, and which soft-deleted items it would purge.
    pub(super) fn prune_plan(&self, purge_only: bool) -> Result<(Vec<RecoveryPoint>, Vec<Item>)> {
        let now = self.now();
        let mut remove = Vec::new();
        let mut purge = Vec::new();
        for item in self.items()? {
            let points = self.inner.catalog.points(&item.id)?;
            if item.protection_state == ProtectionState::SoftDeleted {
                if item.purge_at.is_some_and(|t| t <= now) {
                    remove.extend(points);
                    purge.push(item);
                }
                continue;
            }
            if purge_only {
                continue;
            }
            // Stopped protection (retain data) keeps every point: expiry is None there.
            let refs: Vec<PointRef> = points
                .iter()
                .map(|p| PointRef {
                    id: p.id.clone(),
                    time: p.time,
                    expiry: p.expiry,
                })
                .collect();
            let gone: HashSet<String> = points_to_prune(&refs, now).into_iter().collect();
            remove.extend(points.into_iter().filter(|p| gone.contains(&p.id)));
        }
        Ok((remove, purge))
    }

    /// Runs Prune (as a job) when there is anything to prune or purge. Returns the job.
    pub(crate) fn prune_inline(&self, user_triggered: bool) -> Result<Option<Job>> {
        self.prune_with(user_triggered, false)
    }

    /// Purges soft-deleted data whose time is up (a Prune job that touches nothing else).
    pub(crate) fn purge_inline(&self) -> Result<Option<Job>> {
        self.prune_with(false, true)
    }

    fn prune_with(&self, user_triggered: bool, purge_only: bool) -> Result<Option<Job>> {
        let (remove, purge) = self.prune_plan(purge_only)?;
        if remove.is_empty() && purge.is_empty() && !user_triggered {
            return Ok(None);
        }
        let mut spec = JobSpec::new(
            JobOperation::Prune,
            None,
            &["Remove expired recovery points"],
        );
        spec.user_triggered = user_triggered;
        let job = self.run_job_inline(spec, move |ctx| {
            ctx.start_task(0);
            let ids: Vec<String> = remove.iter().map(|p| p.id.clone()).collect();
            let gone: HashSet<String> = ids.iter().cloned().collect();
            let mut restated = Vec::new();
            for item_id in remove
                .iter()
                .map(|p| p.item_id.as_str())
                .collect::<HashSet<_>>()
            {
                let points = ctx.engine.inner.catalog.points(item_id)?;
                restated.extend(ctx.engine.stored_after_prune(&points, &gone)?);
            }
            // Their manifests first (see forget_manifests), then their rows.
            ctx.engine.forget_manifests(&ids).map_err(|e| {
                JobFail::vault(
                    "Could not remove expired recovery points",
                    format!("removing their manifests: {e}"),
                )
            })?;
            ctx.engine
                .inner
                .catalog
                .delete_points(&ids, &restated, &ctx.id(), ctx.engine.now())?;
            for item in &purge {
                ctx.engine.inner.catalog.update_item(&item.id, |i| {
                    i.protection_state = ProtectionState::NotProtected;
                    i.purge_at = None;
                    i.policy = None;
                    i.last_scheduled_run = None;
                })?;
            }
            // Rows are gone (committed); the files are garbage now. A folder that cannot be
            // removed stays announced, for garbage collection to try again.
            // Rows are gone (committed); the objects are garbage now. Their announcements
            // stay until garbage collection has made their removal durable (one sync for
            // all the prunes since the last one, instead of one per prune): objects a crash
            // brought back unannounced would stop garbage collection, as points the catalog
            // cannot account for. One that cannot be removed now is removed by GC too.
            super::in_parallel(&remove, |p| {
                let disks: Vec<u32> = p.disks.iter().map(|d| d.index).collect();
                if let Err(e) = ctx.engine.remove_point_objects(&p.id, &disks) {
                    tracing::warn!(
                        "removing recovery point {}: {e}; garbage collection will try again",
                        p.id
                    );
                }
            });
            let items: HashSet<&str> = remove.iter().map(|p| p.item_id.as_str()).collect();
            for item_id in items {
                ctx.engine.publish(Event::PointsChanged {
                    item_id: item_id.to_string(),
                });
            }
            if !purge.is_empty() {
                ctx.engine.publish(Event::ItemsChanged);
            }
            ctx.detail("points_removed", ids.len());
            ctx.detail(
                "items_purged",
                purge.iter().map(|i| i.qualified_name()).collect::<Vec<_>>(),
            );
            Ok(JobEnd::Done { warnings: vec![] })
        })?;
        Ok(Some(job))
    }

    /// Runs GarbageCollect (as a job) on this thread.
    pub(crate) fn gc_inline(&self, user_triggered: bool) -> Result<Job> {
        let mut spec = JobSpec::new(
            JobOperation::GarbageCollect,
            None,
            &["Mark chunks in use", "Sweep unused chunks"],
        );
        spec.user_triggered = user_triggered;
        self.run_job_inline(spec, |ctx| {
            let engine = &ctx.engine;
            let store = engine.store()?;
            ctx.start_task(0);
            let points = engine.inner.catalog.all_points()?;
            let real_cutoff = std::time::SystemTime::now()
                .checked_sub(engine.inner.opts.gc_grace.to_std().unwrap_or_default())
                .unwrap_or(std::time::UNIX_EPOCH);
            // What the store holds of points (one listing, for the interlock and for the
            // points it may remove).
            let stored = store.stored_points().map_err(|e| {
                refused(format!("cannot list the recovery points the vault holds: {e}"))
            })?;
            let stale_writes =
                engine.check_store_is_accounted_for(&points, &stored, real_cutoff)?;
            let mut marked: HashSet<crate::vault::store::Digest> = HashSet::new();
            // A folder a backup finished writing is kept with its chunks, even though this
            // catalog never saw it committed: a newer catalog may have (this one restored
            // from a copy taken during that backup).
            // Whatever its age: the grace period protects chunk files, not the committed
            // chunks such a point shares with others.
            let stale: HashSet<String> = stale_writes.into_iter().map(|w| w.point_id).collect();
            let mut kept = Vec::new();
            let mut unfinished = Vec::new();
            // Points a prune removed, whose objects are gone: only their announcements are
            // left, to go once the removal is durable.
            let mut removed_by_prune = Vec::new();
            let describes_points = store.format().version() >= 2;
            for w in engine.inner.catalog.point_writes()? {
                ctx.cancel.check()?;
                if matches!(w.purpose, crate::vault::catalog::WritePurpose::Remove)
                    && !stored.contains_key(&w.point_id)
                {
                    removed_by_prune.push(w.point_id);
                    continue;
                }
                // In format 2 a point is committed only once its manifest is durable: a
                // folder without one was never committed by any catalog, finished or not.
                let never_committed =
                    describes_points && !stored.get(&w.point_id).is_some_and(|p| p.manifest);
                match engine.finished_point_folder(&w) {
                    Some(_) if never_committed && stale.contains(&w.point_id) => {
                        unfinished.push(w.point_id)
                    }
                    Some(indexes) => {
                        for ix in indexes {
                            marked.extend(ix.entries.iter().map(|(_, d)| *d));
                        }
                        if stale.contains(&w.point_id) {
                            kept.push(w.point_id);
                        }
                    }
                    None if stale.contains(&w.point_id) => unfinished.push(w.point_id),
                    None => {}
                }
            }
            for p in &points {
                ctx.cancel.check()?;
                for d in &p.disks {
                    // An index we cannot read means we do not know what is in use: sweep
                    // nothing rather than guess.
                    let ix = engine.read_index(p, d.index).map_err(|e| {
                        JobFail::Failed(
                            ErrorDetails::new(
                                "GarbageCollectionAborted",
                                "Garbage collection stopped without deleting anything",
                                format!(
                                    "cannot read the index of recovery point {} disk {}: {e}",
                                    p.id, d.index
                                ),
                            )
                            .recommend("Run `vmvault verify` to find damaged recovery points."),
                        )
                    })?;
                    marked.extend(ix.entries.iter().map(|(_, d)| *d));
                }
            }
            ctx.end_task(0, TaskStatus::Completed);
            ctx.start_task(1);
            let now = engine.now();
            let cutoff = now - engine.inner.opts.gc_grace;
            let mut freed = 0u64;
            let mut freed_bytes = 0u64;
            // Folders of points whose backup stopped before committing them, and of points
            // a prune removed from the catalog.
            for point_id in &unfinished {
                ctx.cancel.check()?;
                let disks = stored.get(point_id).map_or(&[][..], |p| &p.disks[..]);
                engine
                    .remove_point_objects(point_id, disks)
                    .map_err(|e| {
                        JobFail::vault(
                            "Could not remove an unfinished recovery point",
                            format!("recovery point {point_id}: {e}"),
                        )
                    })?;
            }
            if !unfinished.is_empty() || !removed_by_prune.is_empty() {
                // Gone for good before their announcements go (see prune).
                store.sync().map_err(|e| {
                    JobFail::vault("Could not remove an unfinished recovery point", e.to_string())
                })?;
            }
            let unfinished_removed = unfinished.len();
            unfinished.extend(removed_by_prune);
            engine.inner.catalog.delete_point_writes(&unfinished)?;
            let known: Vec<(crate::vault::store::Digest, chrono::DateTime<chrono::Utc>)> =
                engine.inner.catalog.chunks_added()?;
            let mut in_table: HashSet<crate::vault::store::Digest> =
                HashSet::with_capacity(known.len());
            let mut candidates = Vec::new();
            for (digest, added) in known {
                in_table.insert(digest);
                if !marked.contains(&digest) && added <= cutoff {
                    candidates.push(digest);
                }
            }
            for batch in candidates.chunks(256) {
                ctx.cancel.check()?;
                let (n, bytes) =
                    engine
                        .inner
                        .pins
                        .remove_unpinned(batch, |free| -> Result<(u64, u64)> {
                            let bytes: u64 = free
                                .iter()
                                .map(|d| store.stored_size(d).ok().flatten().unwrap_or(0))
                                .sum();
                            // Rows first (durably), then files: a crash in between leaves orphan
                            // files, never a row without its file.
                            engine.inner.catalog.delete_chunks(free)?;
                            for removed in super::in_parallel(free, |d| store.remove(d)) {
                                removed?;
                            }
                            Ok((free.len() as u64, bytes))
                        })?;
                freed += n;
                freed_bytes += bytes;
            }
            // Orphan files: written by a backup that never committed (crash, cancel).
            let mut orphans = 0u64;
            for entry in store.list() {
                let (digest, mtime, size) = entry?;
                if in_table.contains(&digest) || marked.contains(&digest) || mtime > real_cutoff {
                    continue;
                }
                if let Some(r) = engine
                    .inner
                    .pins
                    .remove_if_unpinned(&digest, || store.remove(&digest))
                {
                    r?;
                    orphans += 1;
                    freed += 1;
                    freed_bytes += size;
                }
            }
            // Temp files and empty point folders are a crashed writer's only when no writer
            // of this process is running: with a short grace period, a running backup's
            // just-made point folder or temp file could look stale. Swept next time then.
            let others_running = engine
                .inner
                .running
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .any(|(id, _)| *id != ctx.id());
            let temp_files = if others_running {
                0
            } else {
                store.remove_stale_temp_files(real_cutoff)?
            };
            ctx.detail("chunks_in_use", marked.len());
            // Everything removed: unreferenced committed chunks and orphan chunk files.
            ctx.detail("chunks_freed", freed);
            ctx.detail("bytes_freed", freed_bytes);
            ctx.detail("orphan_files_removed", orphans + temp_files);
            ctx.detail("unfinished_points_removed", unfinished_removed);
            ctx.detail("uncommitted_points_kept", kept.clone());
            let mut warnings = Vec::new();
            if !kept.is_empty() {
                warnings.push(format!(
                    "kept {} recovery point folder(s) ({}) that a backup finished writing but this catalog never saw committed: they may be points of a newer catalog (was catalog.db restored from a copy taken during a backup?). Restore the newest catalog.db to get them back; to discard them, remove the folders from the vault's points/ folder while vmvault is stopped",
                    kept.len(),
                    kept.join(", ")
                ));
            }
            Ok(JobEnd::Done { warnings })
        })
    }

    /// The interlock (see the module docs): fails, deleting nothing, unless the catalog
    /// accounts for everything in the store. Returns the announced point writes whose
    /// folders may go (their job is not running and they are older than the grace period).
    fn check_store_is_accounted_for(
        &self,
        points: &[RecoveryPoint],
        stored: &std::collections::BTreeMap<String, crate::vault::store::points::StoredPoint>,
        cutoff: std::time::SystemTime,
    ) -> std::result::Result<Vec<crate::vault::catalog::PointWrite>, JobFail> {
        let catalog = &self.inner.catalog;
        let known: HashSet<&str> = points.iter().map(|p| p.id.as_str()).collect();
        let writes = catalog.point_writes()?;
        let announced: HashSet<&str> = writes.iter().map(|w| w.point_id.as_str()).collect();
        let running: HashSet<String> = self
            .inner
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .cloned()
            .collect();
        let store = self.store()?;
        let unknown: Vec<&String> = stored
            .keys()
            .filter(|id| !known.contains(id.as_str()) && !announced.contains(id.as_str()))
            .collect();
        let mut stale = Vec::new();
        if !unknown.is_empty() {
            let shown: Vec<String> = unknown
                .iter()
                .take(5)
                .map(|id| {
                    // Where its objects are: the manifest, else its first index.
                    let at = match stored
                        .get(*id)
                        .filter(|p| !p.manifest)
                        .and_then(|p| p.disks.first())
                    {
                        Some(&disk) => store.index_location(id, disk),
                        None => store.manifest_location(id),
                    };
                    at.display().to_string()
                })
                .collect();
            return Err(JobFail::Failed(
                ErrorDetails::new(
                    "GarbageCollectionRefused",
                    "Garbage collection refused: the catalog does not describe the store",
                    format!(
                        "{} recovery point(s) in the vault are not in the catalog ({}{}); the catalog may be an old copy or another vault's. Nothing was deleted",
                        unknown.len(),
                        shown.join(", "),
                        if unknown.len() > shown.len() { ", …" } else { "" }
                    ),
                )
                .recommend("If catalog.db was restored from an old copy, put back a newer one: the points it does not know hold data.")
                .recommend("If you are sure no catalog knows these points (e.g. left by a vmvault older than 0.2 that crashed during a backup), move their folders out of points/; garbage collection then runs again."),
            ));
        }
        if !catalog.knows_stored_data()? {
            let chunk_files = self
                .store()?
                .list()
                .filter(|r| r.as_ref().is_ok_and(|(_, t, _)| *t <= cutoff))
                .take(1)
                .count();
            if chunk_files > 0 {
                return Err(JobFail::Failed(
                    ErrorDetails::new(
                        "GarbageCollectionRefused",
                        "Garbage collection refused: the catalog does not describe the store",
                        "the store holds chunk files, but the catalog has no record of any backup (a catalog lost and replaced?). Nothing was deleted",
                    )
                    .recommend("Restore catalog.db from a copy while vmvault is stopped.")
                    .recommend("If this vault never kept a backup you need, move its chunks/ folder away; garbage collection then runs again."),
                ));
            }
        }
        for w in writes {
            // A point the store holds nothing of is old however young its announcement.
            let old = stored.get(&w.point_id).is_none_or(|p| p.modified <= cutoff);
            if !running.contains(&w.job_id) && old {
                stale.push(w);
            }
        }
        Ok(stale)
    }

    /// The indexes of an announced point folder that a backup finished writing: every disk
    /// it announced has a sound index that names this point and disk. None for a folder
    /// a prune announced, or one whose backup stopped before its last index.
    fn finished_point_folder(
        &self,
        w: &crate::vault::catalog::PointWrite,
    ) -> Option<Vec<crate::vault::store::index::DiskIndex>> {
        let crate::vault::catalog::WritePurpose::Write { disks } = &w.purpose else {
            return None;
        };
        if disks.is_empty() {
            return None;
        }
        disks
            .iter()
            .map(|&disk| {
                let f = self
                    .store()
                    .ok()?
                    .read_point_index(&w.point_id, disk)
                    .ok()?;
                let owner = f.owner?;
                (owner.point_id == w.point_id && owner.disk == disk).then_some(f.index)
            })
            .collect()
    }

    /// Prune now (as a user-triggered job), on a blocking thread.
    pub async fn prune_now(&self) -> Result<Option<Job>> {
        self.require_owner()?;
        let e = self.clone();
        tokio::task::spawn_blocking(move || e.prune_inline(true))
            .await
            .map_err(|e| super::EngineError::Failed(format!("prune stopped unexpectedly: {e}")))?
    }

    /// Garbage-collect now (as a user-triggered job), on a blocking thread.
    pub async fn gc_now(&self) -> Result<Job> {
        self.require_owner()?;
        let e = self.clone();
        tokio::task::spawn_blocking(move || e.gc_inline(true))
            .await
            .map_err(|e| {
                super::EngineError::Failed(format!("garbage collection stopped unexpectedly: {e}"))
            })?
    }
}
