//! The vault's own maintenance: Prune (expired recovery points, purge of soft-deleted
//! data) and GarbageCollect (chunks no point needs).
//!
//! Garbage collection never races a running backup: a backup pins every chunk it relies
//! on before it relies on it, GC deletes a chunk only while holding the pin set's lock
//! and only when it is unpinned, and only chunks older than the grace period are
//! candidates at all (defence in depth). Deletion order is catalog row first, then the
//! file: a crash in between leaves an orphan file (swept later), never a catalog row
//! pointing at nothing.

use super::jobs::{JobEnd, JobFail, JobSpec};
use super::{Engine, Event, Result};
use crate::model::*;
use crate::policy::{points_to_prune, PointRef};
use std::collections::HashSet;

impl Engine {
    /// Which points Prune would remove now, and which soft-deleted items it would purge.
    fn prune_plan(&self, purge_only: bool) -> Result<(Vec<RecoveryPoint>, Vec<Item>)> {
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
            ctx.engine.inner.catalog.delete_points(&ids, &restated)?;
            for item in &purge {
                ctx.engine.inner.catalog.update_item(&item.id, |i| {
                    i.protection_state = ProtectionState::NotProtected;
                    i.purge_at = None;
                    i.policy = None;
                    i.last_scheduled_run = None;
                })?;
            }
            // Rows are gone (committed); the files are garbage now.
            for id in &ids {
                let _ = std::fs::remove_dir_all(ctx.engine.point_dir(id));
            }
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
            let mut marked: HashSet<crate::vault::store::Digest> = HashSet::new();
            for p in &points {
                ctx.cancel.check()?;
                for d in &p.disks {
                    // An index we cannot read means we do not know what is in use: sweep
                    // nothing rather than guess.
                    let ix = engine.read_index(&p.id, d.index).map_err(|e| {
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
                                .map(|d| {
                                    std::fs::metadata(store.path_of(d))
                                        .map(|m| m.len())
                                        .unwrap_or(0)
                                })
                                .sum();
                            // Rows first (durably), then files: a crash in between leaves orphan
                            // files, never a row without its file.
                            engine.inner.catalog.delete_chunks(free)?;
                            for d in free {
                                store.remove(d)?;
                            }
                            Ok((free.len() as u64, bytes))
                        })?;
                freed += n;
                freed_bytes += bytes;
            }
            // Orphan files: written by a backup that never committed (crash, cancel).
            let real_cutoff = std::time::SystemTime::now()
                .checked_sub(engine.inner.opts.gc_grace.to_std().unwrap_or_default())
                .unwrap_or(std::time::UNIX_EPOCH);
            let mut orphans = 0u64;
            for entry in store.list() {
                let (digest, mtime) = entry?;
                if in_table.contains(&digest) || marked.contains(&digest) || mtime > real_cutoff {
                    continue;
                }
                if engine
                    .inner
                    .pins
                    .remove_if_unpinned(&digest, || store.remove(&digest))
                    .is_some()
                {
                    orphans += 1;
                }
            }
            orphans += store.remove_stale_temp_files(real_cutoff)?;
            // Point folders without a catalog row (a crash between index write and commit).
            let known_points: HashSet<String> = points.iter().map(|p| p.id.clone()).collect();
            if let Ok(rd) = std::fs::read_dir(engine.inner.opts.dir.join("points")) {
                for e in rd.flatten() {
                    let name = e.file_name().to_string_lossy().to_string();
                    let old = e
                        .metadata()
                        .and_then(|m| m.modified())
                        .map(|t| t < real_cutoff)
                        .unwrap_or(false);
                    if !known_points.contains(&name) && old {
                        let _ = std::fs::remove_dir_all(e.path());
                    }
                }
            }
            ctx.detail("chunks_in_use", marked.len());
            ctx.detail("chunks_freed", freed);
            ctx.detail("bytes_freed", freed_bytes);
            ctx.detail("orphan_files_removed", orphans);
            Ok(JobEnd::Done { warnings: vec![] })
        })
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
