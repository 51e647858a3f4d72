//! The scheduler: starts each protected item's backup at its policy's time, then the
//! clean-up (Prune, then GarbageCollect when something was pruned).
//!
//! - Each item remembers the scheduled instant of the last backup the scheduler started
//!   for it (`last_scheduled_run`; set to the protection time when it is protected).
//! - When the vault was not running at a scheduled time, one catch-up backup runs when it
//!   starts, for the latest missed instant (not one per missed day).
//! - `sim advance` walks simulated time from instant to instant, running every scheduled
//!   backup and clean-up in time order, each point stamped with its scheduled instant.
//!   Garbage collection runs there in the first round with a prune more than a simulated
//!   week after the last one (and at the end), since it reads every index. A round's
//!   backups commit their points together ([`Engine::commit_backups`]).

use super::data::{note_backup_failure, BackupKind};
use super::{usage, Engine, EngineError, Event, Result};
use crate::cancel::CancelToken;
use crate::fmt;
use crate::model::*;
use crate::policy::{last_run_at_or_before, next_run_after, Policy};
use chrono::{DateTime, Duration, Utc};
use std::collections::HashMap;

/// The error code of an item whose policy the vault does not have.
const POLICY_MISSING: &str = "PolicyNotFound";

/// What `sim advance` did.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct AdvanceReport {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub backups: usize,
    pub backups_failed: usize,
    pub points_removed: usize,
    pub gc_runs: usize,
    /// Garbage collections that failed or were refused (their jobs say why).
    pub gc_failed: usize,
    /// The id of the last garbage collection that failed, for `vmvault job`.
    pub gc_failed_job: Option<String>,
    pub points_alive: usize,
    pub elapsed_seconds: f64,
    /// Stopped before `to` (Ctrl-C): the clock is where the last finished step left it.
    pub interrupted: bool,
}

impl AdvanceReport {
    /// Counts a garbage collection that ran; one that failed or was refused (the catalog
    /// does not describe the store, say) is counted as such, not as done.
    fn count_gc(&mut self, job: &Job) {
        self.gc_runs += 1;
        if job.status == JobStatus::Failed {
            self.gc_failed += 1;
            self.gc_failed_job = Some(job.id.clone());
        }
    }
}

impl Engine {
    fn scheduled_items(&self) -> Result<Vec<(Item, Policy)>> {
        let mut cache: HashMap<String, Policy> = HashMap::new();
        let mut out = Vec::new();
        for item in self.items()? {
            if !item.protection_state.is_under_policy() {
                continue;
            }
            let Some(name) = item.policy.clone() else {
                continue;
            };
            let policy = match cache.get(&name) {
                Some(p) => p.clone(),
                None => match self.inner.catalog.policy(&name)? {
                    Some(row) => {
                        let p = self.parse_policy_row(&row)?;
                        cache.insert(name, p.clone());
                        p
                    }
                    // Not scheduled (its item says why: see `flag_items_without_policy`);
                    // the other items are.
                    None => continue,
                },
            };
            out.push((item, policy));
        }
        Ok(out)
    }

    /// Items under a policy the vault does not have (a catalog rebuilt without it, or
    /// edited by hand) cannot be scheduled: each reads ProtectionError with why and what to
    /// do, once, instead of silently missing its backups.
    fn flag_items_without_policy(&self) -> Result<()> {
        // Names compare as the catalog compares them (ASCII case-insensitively); one query,
        // however many items (this runs at least once a minute).
        let policies: std::collections::HashSet<String> = self
            .inner
            .catalog
            .policies()?
            .into_iter()
            .map(|p| p.name.to_ascii_lowercase())
            .collect();
        for item in self.items()? {
            let Some(name) = item.policy.as_deref() else {
                continue;
            };
            if !item.protection_state.is_under_policy()
                || policies.contains(&name.to_ascii_lowercase())
                || item
                    .last_error
                    .as_ref()
                    .is_some_and(|e| e.code == POLICY_MISSING)
            {
                continue;
            }
            tracing::warn!(
                "{} is protected by policy {name:?}, which the vault does not have: its scheduled backups do not run",
                item.qualified_name()
            );
            let error = ErrorDetails::new(
                POLICY_MISSING,
                "The item's backup policy is missing",
                format!(
                    "{} is protected by policy \"{}\", which vault {} does not have: its scheduled backups do not run",
                    item.qualified_name(),
                    crate::fmt::echo(name),
                    self.vault_name()
                ),
            )
            .recommend(format!(
                "Create the policy again under that name (`vmvault policy create --file FILE`), or move the item to an existing one: `vmvault stop-protection {0} --retain-data`, then `vmvault resume-protection {0} --policy NAME`.",
                item.qualified_name()
            ));
            self.inner.catalog.update_item(&item.id, |i| {
                i.protection_state = ProtectionState::ProtectionError;
                i.last_error = Some(error.clone());
            })?;
            self.publish(Event::ItemsChanged);
        }
        Ok(())
    }

    /// Items due at `now` with the instant each stands for (the latest missed one).
    pub(crate) fn due_backups(&self, now: DateTime<Utc>) -> Result<Vec<(Item, DateTime<Utc>)>> {
        let mut due = Vec::new();
        for (item, policy) in self.scheduled_items()? {
            let base = item.last_scheduled_run.unwrap_or(item.discovered_at);
            if next_run_after(&policy, base) <= now {
                if let Some(at) = last_run_at_or_before(&policy, now) {
                    due.push((item, at));
                }
            }
        }
        Ok(due)
    }

    /// The next instant any protected item is scheduled.
    pub fn next_scheduled(&self) -> Result<Option<DateTime<Utc>>> {
        Ok(self
            .scheduled_items()?
            .iter()
            .map(|(item, policy)| {
                next_run_after(
                    policy,
                    item.last_scheduled_run.unwrap_or(item.discovered_at),
                )
            })
            .min())
    }

    /// When the earliest soft-deleted data is due to be purged.
    pub fn next_purge(&self) -> Result<Option<DateTime<Utc>>> {
        Ok(self
            .items()?
            .iter()
            .filter(|i| i.protection_state == ProtectionState::SoftDeleted)
            .filter_map(|i| i.purge_at)
            .min())
    }

    /// Next scheduled backup of every item under a policy.
    pub fn upcoming_backups(&self) -> Result<Vec<(Item, DateTime<Utc>)>> {
        let now = self.now();
        let mut v: Vec<(Item, DateTime<Utc>)> = self
            .scheduled_items()?
            .into_iter()
            .map(|(item, policy)| {
                let base = item
                    .last_scheduled_run
                    .unwrap_or(item.discovered_at)
                    .max(now);
                let t = next_run_after(&policy, base);
                (item, t)
            })
            .collect();
        v.sort_by_key(|(_, t)| *t);
        Ok(v)
    }

    fn mark_scheduled(&self, item_id: &str, at: DateTime<Utc>) -> Result<()> {
        self.inner
            .catalog
            .update_item(item_id, |i| i.last_scheduled_run = Some(at))?;
        Ok(())
    }

    /// One live scheduler round: starts the due backups as jobs, and the clean-up after
    /// them. Returns the started job ids.
    pub fn run_scheduler_round(&self) -> Result<Vec<String>> {
        self.require_owner()?;
        let now = self.now();
        self.flag_items_without_policy()?;
        let mut started = Vec::new();
        for (item, at) in self.due_backups(now)? {
            self.mark_scheduled(&item.id, at)?;
            if let Some(id) = self.running_on_item(&item.id, &[JobOperation::Backup]) {
                tracing::warn!(
                    "scheduled backup of {} at {at} skipped: job {id} still runs",
                    item.qualified_name()
                );
                continue;
            }
            match self.start_backup(
                &item,
                BackupKind::Scheduled { scheduled_time: at },
                false,
                None,
            ) {
                Ok(id) => started.push(id),
                Err(e) => tracing::error!("scheduled backup of {}: {e}", item.qualified_name()),
            }
        }
        if started.is_empty() && self.next_purge()?.is_some_and(|t| t <= now) {
            let e = self.clone();
            self.inner.rt.spawn(async move {
                let _guard = e.inner.schedule_lock.lock().await;
                let e2 = e.clone();
                let _ = tokio::task::spawn_blocking(move || -> Result<()> {
                    if e2.purge_inline()?.is_some() {
                        e2.gc_inline(false)?;
                    }
                    Ok(())
                })
                .await;
            });
        }
        if !started.is_empty() {
            self.publish(Event::ItemsChanged);
            let engine = self.clone();
            let ids = started.clone();
            self.inner.rt.spawn(async move {
                for id in &ids {
                    let _ = engine.wait_job(id).await;
                }
                let _guard = engine.inner.schedule_lock.lock().await;
                let e = engine.clone();
                let _ = tokio::task::spawn_blocking(move || -> Result<()> {
                    if e.prune_inline(false)?.is_some() {
                        e.gc_inline(false)?;
                    }
                    Ok(())
                })
                .await;
            });
        }
        Ok(started)
    }

    /// Runs the scheduler until `stop` is cancelled: a round whenever something is due
    /// (checked at the next scheduled instant, and at least once a minute since items
    /// and policies change).
    pub async fn run_scheduler(&self, stop: CancelToken) {
        let mut events = self.subscribe();
        while !stop.is_cancelled() {
            {
                let _guard = self.inner.schedule_lock.lock().await;
                if let Err(e) = self.run_scheduler_round() {
                    tracing::error!("scheduler round: {e}");
                }
            }
            let now = self.now();
            // A purge that is overdue after this round is running, or failed (a full
            // disk…): the round retries it when it wakes, at most once a minute.
            let next = [
                self.next_scheduled().ok().flatten(),
                self.next_purge().ok().flatten().filter(|t| *t > now),
            ]
            .into_iter()
            .flatten()
            .min();
            let wait = next
                .map(|t| (t - now).to_std().unwrap_or_default())
                .unwrap_or(std::time::Duration::from_secs(60))
                .clamp(
                    std::time::Duration::from_millis(200),
                    std::time::Duration::from_secs(60),
                );
            let sleep = tokio::time::sleep(wait);
            tokio::pin!(sleep);
            loop {
                tokio::select! {
                    _ = &mut sleep => break,
                    ev = events.recv() => match ev {
                        // Protection or clock changes may bring the next instant closer.
                        Ok(Event::ItemsChanged) | Ok(Event::ClockChanged(_)) | Ok(Event::PoliciesChanged) => break,
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                        _ => {}
                    },
                    // Notice a stop request promptly.
                    _ = tokio::time::sleep(std::time::Duration::from_millis(200)) => {}
                }
                if stop.is_cancelled() {
                    return;
                }
            }
        }
    }

    /// Where `sim advance` by `by` would take the clock, when the move is allowed: forward,
    /// by at most [`fmt::MAX_PERIOD_YEARS`] years, not past the year 9999.
    fn advance_target(&self, by: Duration, example: &str) -> Result<DateTime<Utc>> {
        self.require_owner()?;
        if !self.inner.clock.is_simulated() {
            return usage(format!(
                "`sim advance` needs a simulated source; vault {} uses the {} source, whose clock is real time",
                self.vault_name(),
                self.source_kind()
            ));
        }
        if by <= Duration::zero() {
            return usage(format!("give a positive duration, e.g. `{example}`"));
        }
        if by > Duration::days(365 * fmt::MAX_PERIOD_YEARS) {
            return usage(format!(
                "advance by at most {} years at a time",
                fmt::MAX_PERIOD_YEARS
            ));
        }
        let now = self.now();
        match now.checked_add_signed(by) {
            Some(t) if t <= fmt::max_time() => Ok(t),
            _ => usage(format!(
                "the simulated clock ({}) cannot move past the year 9999; advance by less",
                fmt::time(now)
            )),
        }
    }

    /// Moves the simulated clock forward by `by`, running every scheduled backup and
    /// clean-up in between in time order. When `stop` is cancelled (Ctrl-C) it stops after
    /// the step it is in, with the clock saved where that step left it.
    pub async fn sim_advance(&self, by: Duration, stop: CancelToken) -> Result<AdvanceReport> {
        self.advance_target(by, "vmvault sim advance 30d")?;
        let _guard = self.inner.schedule_lock.lock().await;
        let engine = self.clone();
        // Latencies and the read throttle are for people watching; simulated time skips them.
        let sim = self.simulator();
        if let Some(s) = &sim {
            s.set_fast_forward(true);
        }
        let r = tokio::task::spawn_blocking(move || engine.advance_blocking(by, &stop))
            .await
            .map_err(|e| EngineError::Failed(format!("sim advance stopped unexpectedly: {e}")));
        if let Some(s) = &sim {
            s.set_fast_forward(false);
        }
        r?
    }

    /// Moves the simulated clock forward as if the vault was not running: no backup runs
    /// in between; the next start of the scheduler catches up once per item.
    pub fn sim_advance_offline(&self, by: Duration) -> Result<AdvanceReport> {
        let from = self.now();
        let to = self.advance_target(by, "vmvault sim advance 3d --offline")?;
        self.move_clock(to)?;
        self.publish(Event::ClockChanged(self.now()));
        Ok(AdvanceReport {
            from,
            to,
            backups: 0,
            backups_failed: 0,
            points_removed: 0,
            gc_runs: 0,
            gc_failed: 0,
            gc_failed_job: None,
            points_alive: self.inner.catalog.all_points()?.len(),
            elapsed_seconds: 0.0,
            interrupted: false,
        })
    }

    /// The backups of one round of `sim advance` (`due` at `now`): they run side by side,
    /// each stamped with its scheduled instant (a catch-up: with now), and their points are
    /// committed together ([`Engine::commit_backups`]: one announcement, one sync and one
    /// commit for the round instead of one of each per backup). A kill before that commit
    /// loses the round's points, never one committed before; the clock was saved before
    /// the round, so the next `sim advance` reads these backups as interrupted.
    fn backup_round(&self, due: &[(Item, DateTime<Utc>)], now: DateTime<Utc>) -> Vec<Result<Job>> {
        // A simulated day's backups are small, so each one mostly waits for its source
        // and its chunk writes: two lanes per core of `engine.threads` (at least as many
        // as data jobs may run, at most 8) keep the cores busy meanwhile;
        // measured on 2 cores, 60 days of 8 VMs took 11.9 s with 2 lanes, 7.3 s
        // with 4, for the same CPU time.
        let cores = self.inner.opts.threads.max(1);
        let lanes = self
            .inner
            .opts
            .max_concurrent_jobs
            .max(2 * cores)
            .min(8)
            .min(due.len())
            .max(1);
        let next = std::sync::atomic::AtomicUsize::new(0);
        let mut begun: Vec<(usize, Result<std::result::Result<_, Job>>)> =
            std::thread::scope(|s| {
                let workers: Vec<_> = (0..lanes)
                    .map(|_| {
                        s.spawn(|| {
                            let mut out = Vec::new();
                            loop {
                                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                                let Some((item, at)) = due.get(i) else { break };
                                let stamp = if (now - *at) < Duration::seconds(1) {
                                    *at
                                } else {
                                    now
                                };
                                out.push((
                                    i,
                                    self.write_backup_inline(
                                        item,
                                        BackupKind::Scheduled {
                                            scheduled_time: *at,
                                        },
                                        Some(stamp),
                                    ),
                                ));
                            }
                            out
                        })
                    })
                    .collect();
                workers
                    .into_iter()
                    .flat_map(|w| {
                        w.join().unwrap_or_else(|_| {
                            vec![(
                                usize::MAX,
                                Err(EngineError::Failed("a backup thread panicked".into())),
                            )]
                        })
                    })
                    .collect()
            });
        begun.sort_by_key(|(i, _)| *i);
        let mut jobs = Vec::with_capacity(begun.len());
        let (mut ctxs, mut written, mut items) = (Vec::new(), Vec::new(), Vec::new());
        for (i, b) in begun {
            match b {
                Ok(Ok((ctx, w))) => {
                    ctxs.push(ctx);
                    written.push(w);
                    items.push(&due[i].0);
                }
                Ok(Err(job)) => jobs.push(Ok(job)),
                Err(e) => jobs.push(Err(e)),
            }
        }
        // The prune that follows the round: its points' manifests go with the round's sync.
        let expiring: Vec<String> = match self.prune_plan(false) {
            Ok((points, _)) => points.into_iter().map(|p| p.id).collect(),
            Err(_) => Vec::new(),
        };
        let results = self.commit_backups_with(ctxs.iter().zip(written).collect(), &expiring);
        for ((ctx, item), result) in ctxs.iter().zip(items).zip(results) {
            note_backup_failure(ctx, item, &result);
            self.finish_job(ctx, result);
            jobs.push(Ok(ctx.snapshot()));
        }
        jobs
    }

    /// The walk of `sim advance`. Every move of the clock is saved before the step at the
    /// new time runs ([`Engine::move_clock`]), so after a kill at any moment the saved clock
    /// is at least the time of every committed point and job.
    fn advance_blocking(&self, by: Duration, stop: &CancelToken) -> Result<AdvanceReport> {
        let started = std::time::Instant::now();
        let from = self.now();
        let target = self.advance_target(by, "vmvault sim advance 30d")?;
        let mut report = AdvanceReport {
            from,
            to: target,
            backups: 0,
            backups_failed: 0,
            points_removed: 0,
            gc_runs: 0,
            gc_failed: 0,
            gc_failed_job: None,
            points_alive: 0,
            elapsed_seconds: 0.0,
            interrupted: false,
        };
        // Garbage collection runs when more than a simulated week has passed since the last
        // one, counted from the instants the clock moved to, so that when it runs does not
        // depend on how long the rounds took (a clock that went on moving in real time made
        // it run on the 7th or the 8th day).
        self.flag_items_without_policy()?;
        let mut round_at = from;
        let mut last_gc = from;
        let mut pruned_since_gc = false;
        loop {
            if stop.is_cancelled() {
                report.interrupted = true;
                break;
            }
            let now = self.now();
            let due = self.due_backups(now)?;
            if !due.is_empty() {
                // One transaction for the round's items.
                let ids: Vec<&str> = due.iter().map(|(item, _)| item.id.as_str()).collect();
                self.inner.catalog.update_items(&ids, |i, item| {
                    item.last_scheduled_run = Some(due[i].1);
                })?;
                for job in self.backup_round(&due, now) {
                    let job = job?;
                    report.backups += 1;
                    if job.status == JobStatus::Failed {
                        report.backups_failed += 1;
                    }
                }
                if let Some(job) = self.prune_inline(false)? {
                    let n = job
                        .details
                        .get("points_removed")
                        .and_then(|v| v.as_u64())
                        .unwrap_or(0) as usize;
                    report.points_removed += n;
                    pruned_since_gc |= n > 0;
                }
                if pruned_since_gc && round_at - last_gc > Duration::days(7) {
                    let job = self.gc_inline(false)?;
                    report.count_gc(&job);
                    last_gc = round_at;
                    pruned_since_gc = false;
                }
                continue;
            }
            // Soft-deleted data whose 14 days are over is purged at that instant.
            if self.next_purge()?.is_some_and(|t| t <= now) {
                if let Some(job) = self.purge_inline()? {
                    if job.status == JobStatus::Failed {
                        // It would stay due: stop here, with the clock where it is.
                        self.save_clock()?;
                        self.publish(Event::ClockChanged(self.now()));
                        let why = job
                            .error
                            .as_ref()
                            .map(|e| format!("{}: {}", e.title, e.message))
                            .unwrap_or_else(|| "the job failed".into());
                        return Err(EngineError::Failed(format!(
                            "sim advance stopped at {}: purging soft-deleted data failed ({why});                              fix the cause, then run `vmvault sim advance` again (`vmvault job {}` has the details)",
                            self.now().format("%Y-%m-%d %H:%M UTC"),
                            job.id
                        )));
                    }
                    report.points_removed += job
                        .details
                        .get("points_removed")
                        .and_then(|v| v.as_u64())
                        .unwrap_or(0) as usize;
                    pruned_since_gc = true;
                }
                continue;
            }
            let next = [self.next_scheduled()?, self.next_purge()?]
                .into_iter()
                .flatten()
                .min();
            match next {
                Some(t) if t <= target => {
                    self.move_clock(t)?;
                    round_at = t;
                }
                _ => break,
            }
        }
        if report.interrupted {
            report.to = self.now();
        } else {
            // Clean-up runs after scheduled backups only (as `policy preview` assumes):
            // points that expire after the last round stay until the next one.
            self.move_clock(target)?;
            if pruned_since_gc {
                let job = self.gc_inline(false)?;
                report.count_gc(&job);
            }
        }
        self.publish(Event::ClockChanged(self.now()));
        self.publish(Event::ItemsChanged);
        report.points_alive = self.inner.catalog.all_points()?.len();
        report.elapsed_seconds = started.elapsed().as_secs_f64();
        Ok(report)
    }
}
