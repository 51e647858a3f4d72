//! What the console shows, as a plain snapshot ([`Data`]), and the background loader that
//! refreshes it from the engine.
//!
//! The UI task never touches the catalog. The loader is a tokio task that listens to the
//! engine's events, marks the parts of the snapshot they make stale, waits ~100 ms for more
//! events to arrive (a discovery of 10,000 VMs or a burst of job transitions becomes one
//! reload), then rebuilds only the stale parts on a blocking thread and sends the new
//! snapshot through a bounded channel. Parts are `Arc`s, so a snapshot is cheap to clone and
//! a part that did not change is shared, not copied.
//!
//! Jobs are loaded as a window: the newest `limit` jobs matching the Jobs tab's filter, plus
//! the number of all matching jobs — never 100,000 full rows per refresh. Scrolling near the
//! end of the window asks for a larger one.

use crate::engine::{Engine, Event, Summary};
use crate::model::*;
use crate::policy::Policy;
use crate::vault::catalog::JobFilter;
use chrono::{DateTime, Duration, Timelike, Utc};
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::{broadcast, mpsc};

/// Time range filter of the Jobs tab.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TimeRange {
    #[default]
    Day,
    Week,
    Month,
    All,
}

impl TimeRange {
    pub const ALL: [TimeRange; 4] = [
        TimeRange::Day,
        TimeRange::Week,
        TimeRange::Month,
        TimeRange::All,
    ];
    pub fn label(self) -> &'static str {
        match self {
            TimeRange::Day => "last 24 h",
            TimeRange::Week => "last 7 d",
            TimeRange::Month => "last 30 d",
            TimeRange::All => "all time",
        }
    }
    pub fn since(self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            TimeRange::Day => Some(now - Duration::hours(24)),
            TimeRange::Week => Some(now - Duration::days(7)),
            TimeRange::Month => Some(now - Duration::days(30)),
            TimeRange::All => None,
        }
    }
    pub fn next(self) -> TimeRange {
        let i = Self::ALL.iter().position(|r| *r == self).unwrap_or(0);
        Self::ALL[(i + 1) % Self::ALL.len()]
    }
}

/// Status filter of the Jobs tab (the dashboard's three groups, or one status).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StatusFilter {
    #[default]
    Any,
    /// Completed and CompletedWithWarnings (the dashboard's "Completed").
    Completed,
    Failed,
    /// InProgress and Cancelling (the dashboard's "In progress").
    InProgress,
    Cancelled,
}

impl StatusFilter {
    pub const ALL: [StatusFilter; 5] = [
        StatusFilter::Any,
        StatusFilter::Completed,
        StatusFilter::Failed,
        StatusFilter::InProgress,
        StatusFilter::Cancelled,
    ];
    pub fn label(self) -> &'static str {
        match self {
            StatusFilter::Any => "any status",
            StatusFilter::Completed => "Completed",
            StatusFilter::Failed => "Failed",
            StatusFilter::InProgress => "In progress",
            StatusFilter::Cancelled => "Cancelled",
        }
    }
    pub fn statuses(self) -> Vec<JobStatus> {
        match self {
            StatusFilter::Any => vec![],
            StatusFilter::Completed => vec![JobStatus::Completed, JobStatus::CompletedWithWarnings],
            StatusFilter::Failed => vec![JobStatus::Failed],
            StatusFilter::InProgress => vec![JobStatus::InProgress, JobStatus::Cancelling],
            StatusFilter::Cancelled => vec![JobStatus::Cancelled],
        }
    }
    pub fn next(self) -> StatusFilter {
        let i = Self::ALL.iter().position(|r| *r == self).unwrap_or(0);
        Self::ALL[(i + 1) % Self::ALL.len()]
    }
}

/// Which jobs the Jobs tab shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobsQuery {
    pub status: StatusFilter,
    pub operation: Option<JobOperation>,
    pub range: TimeRange,
    pub item_text: String,
    /// Only these jobs (`J`: the jobs a notification is about), when not empty.
    pub job_ids: Vec<String>,
    /// How many of the newest matching jobs to load.
    pub limit: usize,
}

/// The window loaded first; it grows by this much as the user scrolls to its end.
pub const JOB_WINDOW: usize = 500;

impl Default for JobsQuery {
    fn default() -> Self {
        JobsQuery {
            status: StatusFilter::Any,
            operation: None,
            range: TimeRange::Day,
            item_text: String::new(),
            job_ids: Vec::new(),
            limit: JOB_WINDOW,
        }
    }
}

impl JobsQuery {
    /// Same filter, any window size.
    pub fn same_filter(&self, other: &JobsQuery) -> bool {
        self.status == other.status
            && self.operation == other.operation
            && self.range == other.range
            && self.item_text == other.item_text
            && self.job_ids == other.job_ids
    }
    pub fn to_filter(&self, now: DateTime<Utc>) -> JobFilter {
        JobFilter {
            since: self.range.since(now),
            statuses: self.status.statuses(),
            operations: self.operation.into_iter().collect(),
            item_id: None,
            item_text: (!self.item_text.trim().is_empty())
                .then(|| self.item_text.trim().to_string()),
            ids: self.job_ids.clone(),
            limit: Some(self.limit),
        }
    }
    pub fn is_filtered(&self) -> bool {
        self.status != StatusFilter::Any
            || self.operation.is_some()
            || !self.item_text.is_empty()
            || !self.job_ids.is_empty()
    }

    /// The filters in force, in words ("status Failed", "the 3 jobs of the notification"),
    /// the time range only when it is not the default.
    pub fn describe(&self) -> Vec<String> {
        let mut v = Vec::new();
        if !self.job_ids.is_empty() {
            v.push(format!(
                "the {} job(s) of the notification",
                self.job_ids.len()
            ));
        }
        if self.status != StatusFilter::Any {
            v.push(format!("status {}", self.status.label()));
        }
        if let Some(op) = self.operation {
            v.push(format!("operation {op}"));
        }
        if !self.item_text.trim().is_empty() {
            v.push(format!("item \"{}\"", self.item_text.trim()));
        }
        if self.range != TimeRange::default() && self.job_ids.is_empty() {
            v.push(self.range.label().to_string());
        }
        v
    }
}

/// The newest jobs matching a query, and how many match in all.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JobWindow {
    pub query: JobsQuery,
    pub rows: Vec<Job>,
    pub total: u64,
}

/// A policy with what the Policies tab shows about it.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyInfo {
    pub policy: Policy,
    pub builtin: bool,
    /// Items under this policy.
    pub used_by: usize,
}

/// One upcoming scheduled backup.
#[derive(Debug, Clone, PartialEq)]
pub struct Upcoming {
    pub item: String,
    pub policy: String,
    pub time: DateTime<Utc>,
}

/// Everything the views draw from (besides live progress and notices, which come from
/// events directly).
#[derive(Debug, Clone, Default)]
pub struct Data {
    /// Engine time when this snapshot was taken.
    pub now: DateTime<Utc>,
    /// Set once anything was loaded (views say "loading…" before).
    pub loaded: bool,
    pub items: Arc<Vec<Item>>,
    pub point_counts: Arc<HashMap<String, u64>>,
    /// Next scheduled backup per item id.
    pub next_backup: Arc<HashMap<String, DateTime<Utc>>>,
    /// The soonest scheduled backups.
    pub upcoming: Arc<Vec<Upcoming>>,
    pub policies: Arc<Vec<PolicyInfo>>,
    pub summary: Option<Arc<Summary>>,
    pub jobs: Arc<JobWindow>,
    /// Jobs started per clock hour, the 24 hours up to now (oldest first), with the start
    /// of each hour.
    pub jobs_per_hour: Arc<Vec<(DateTime<Utc>, u64)>>,
    pub recent_failures: Arc<Vec<Job>>,
    /// Jobs running now (InProgress or Cancelling), newest first.
    pub active_jobs: Arc<Vec<Job>>,
    /// Bumped by every load, so views can cache what they derive from it.
    pub generation: u64,
    /// Items whose protection stopped (or was suspended or soft-deleted), by id: the
    /// policy they had, when it still exists (what resuming suggests).
    pub previous_policy: Arc<HashMap<String, String>>,
}

/// Which parts of [`Data`] to reload.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stale {
    pub items: bool,
    pub jobs: bool,
    pub policies: bool,
    pub summary: bool,
}

impl Stale {
    pub const ALL: Stale = Stale {
        items: true,
        jobs: true,
        policies: true,
        summary: true,
    };
    pub fn any(self) -> bool {
        self.items || self.jobs || self.policies || self.summary
    }
    pub fn merge(&mut self, o: Stale) {
        self.items |= o.items;
        self.jobs |= o.jobs;
        self.policies |= o.policies;
        self.summary |= o.summary;
    }
    /// What an engine event makes stale.
    pub fn of_event(e: &Event) -> Stale {
        match e {
            Event::JobUpdated(_) => Stale {
                jobs: true,
                summary: true,
                ..Default::default()
            }, // Policy usage counts items: they change with protection.
            Event::ItemsChanged => Stale {
                items: true,
                summary: true,
                policies: true,
                ..Default::default()
            },
            Event::PointsChanged { .. } => Stale {
                items: true,
                summary: true,
                ..Default::default()
            },
            Event::PoliciesChanged => Stale {
                policies: true,
                items: true,
                ..Default::default()
            },
            Event::ClockChanged(_) => Stale::ALL,
            Event::JobProgress(_) | Event::Notice(_) => Stale::default(),
        }
    }
}

/// How many upcoming backups and recent failures the dashboard lists.
const DASHBOARD_ROWS: usize = 20;

/// Rebuilds the stale parts of `prev` from the engine (blocking: catalog reads).
pub fn load(engine: &Engine, prev: &Data, stale: Stale, query: &JobsQuery) -> Result<Data, String> {
    let mut d = prev.clone();
    let now = engine.now();
    d.now = now;
    let err = |e: crate::engine::EngineError| e.to_string();
    // Policies first: the items part uses them for the next backups.
    if stale.policies || stale.items || d.policies.is_empty() {
        let list = engine.policies().map_err(err)?;
        d.policies = Arc::new(
            list.into_iter()
                .map(|(row, p)| PolicyInfo {
                    used_by: 0,
                    builtin: row.builtin,
                    policy: p,
                })
                .collect(),
        );
    }
    if stale.items {
        // The items are read once; usage, next backups and the item counts of the summary
        // are derived from them here (the engine's helpers would each read them again).
        let items = engine.items().map_err(err)?;
        d.point_counts = Arc::new(engine.point_counts().map_err(err)?);
        let policies: HashMap<&str, &Policy> = d
            .policies
            .iter()
            .map(|p| (p.policy.name.as_str(), &p.policy))
            .collect();
        let mut previous = HashMap::new();
        for i in items.iter().filter(|i| {
            matches!(
                i.protection_state,
                ProtectionState::ProtectionStopped
                    | ProtectionState::BackupsSuspended
                    | ProtectionState::SoftDeleted
            )
        }) {
            if let Some(p) = engine.previous_policy(i).map_err(err)? {
                previous.insert(i.id.clone(), p);
            }
        }
        d.previous_policy = Arc::new(previous);
        let mut usage: HashMap<String, usize> = HashMap::new();
        let mut upcoming: Vec<(DateTime<Utc>, &Item)> = Vec::new();
        for i in items
            .iter()
            .filter(|i| i.protection_state.is_under_policy())
        {
            let Some(name) = i.policy.as_deref() else {
                continue;
            };
            *usage.entry(name.to_string()).or_insert(0) += 1;
            if let Some(p) = policies.get(name) {
                upcoming.push((next_backup(p, i, now), i));
            }
        }
        upcoming.sort_by_key(|(t, _)| *t);
        d.next_backup = Arc::new(upcoming.iter().map(|(t, i)| (i.id.clone(), *t)).collect());
        d.upcoming = Arc::new(
            upcoming
                .iter()
                .take(DASHBOARD_ROWS)
                .map(|(t, i)| Upcoming {
                    item: i.qualified_name(),
                    policy: i.policy.clone().unwrap_or_default(),
                    time: *t,
                })
                .collect(),
        );
        d.policies = Arc::new(
            d.policies
                .iter()
                .map(|p| PolicyInfo {
                    used_by: usage.get(&p.policy.name).copied().unwrap_or(0),
                    ..p.clone()
                })
                .collect(),
        );
        d.items = Arc::new(items);
    }
    if stale.jobs || !d.jobs.query.eq(query) {
        let filter = query.to_filter(now);
        let rows = engine.job_list(&filter).map_err(err)?;
        let total = engine.job_count(&filter).map_err(err)?;
        d.jobs = Arc::new(JobWindow {
            query: query.clone(),
            rows,
            total,
        });
    }
    if stale.jobs {
        let active = engine
            .job_list(&JobFilter {
                statuses: vec![JobStatus::InProgress, JobStatus::Cancelling],
                limit: Some(200),
                ..Default::default()
            })
            .map_err(err)?;
        d.active_jobs = Arc::new(
            active
                .into_iter()
                .filter(|j| j.status.is_active())
                .collect(),
        );
        d.recent_failures = Arc::new(
            engine
                .job_list(&JobFilter {
                    statuses: vec![JobStatus::Failed],
                    since: Some(now - Duration::days(7)),
                    limit: Some(DASHBOARD_ROWS),
                    ..Default::default()
                })
                .map_err(err)?,
        );
        d.jobs_per_hour = Arc::new(hour_buckets(
            now,
            &engine
                .jobs_per_hour(hour_start(now) - Duration::hours(23))
                .map_err(err)?,
        ));
    }
    let jobs_24h = if stale.jobs || d.summary.is_none() {
        Some(
            engine
                .job_counts_since(now - Duration::hours(24))
                .map_err(err)?,
        )
    } else {
        None
    };
    if stale.summary || stale.items || d.summary.is_none() {
        // Item counts as Engine::summary counts them; storage from the engine.
        let items = &d.items;
        let storage = engine.storage_summary().map_err(err)?;
        d.summary = Some(Arc::new(Summary {
            protected: items
                .iter()
                .filter(|i| i.protection_state.is_under_policy())
                .count() as u64,
            registered: items
                .iter()
                .filter(|i| i.registration_state == RegistrationState::Registered)
                .count() as u64,
            needs_attention: items.iter().filter(|i| i.needs_attention()).count() as u64,
            jobs_24h: jobs_24h
                .or_else(|| d.summary.as_ref().map(|s| s.jobs_24h))
                .unwrap_or_default(),
            storage,
            time: now,
        }));
    } else if let (Some(c), Some(s)) = (jobs_24h, &d.summary) {
        d.summary = Some(Arc::new(Summary {
            jobs_24h: c,
            time: now,
            ..(**s).clone()
        }));
    }
    d.loaded = true;
    d.generation = prev.generation + 1;
    Ok(d)
}

/// The next scheduled backup of an item under `policy` — as `Engine::upcoming_backups`
/// computes it (from the last scheduled run, never before now).
pub fn next_backup(policy: &Policy, item: &Item, now: DateTime<Utc>) -> DateTime<Utc> {
    let base = item
        .last_scheduled_run
        .unwrap_or(item.discovered_at)
        .max(now);
    crate::policy::next_run_after(policy, base)
}

/// The start of the clock hour of `t`.
pub fn hour_start(t: DateTime<Utc>) -> DateTime<Utc> {
    t.with_minute(0)
        .and_then(|t| t.with_second(0))
        .and_then(|t| t.with_nanosecond(0))
        .unwrap_or(t)
}

/// 24 hourly buckets ending with the hour of `now`, filled from per-hour counts.
pub fn hour_buckets(
    now: DateTime<Utc>,
    counts: &[(DateTime<Utc>, u64)],
) -> Vec<(DateTime<Utc>, u64)> {
    let last = hour_start(now);
    (0..24)
        .map(|i| {
            let h = last - Duration::hours(23 - i);
            (
                h,
                counts
                    .iter()
                    .find(|(t, _)| *t == h)
                    .map(|(_, n)| *n)
                    .unwrap_or(0),
            )
        })
        .collect()
}

/// Requests to the loader.
#[derive(Debug, Clone)]
pub enum LoadRequest {
    /// Reload these parts.
    Stale(Stale),
    /// The Jobs tab's filter or window changed.
    Query(JobsQuery),
}

/// Handle of a running loader task.
pub struct Loader {
    pub requests: mpsc::UnboundedSender<LoadRequest>,
    task: tokio::task::JoinHandle<()>,
}

impl Loader {
    /// Starts the loader of `engine`; snapshots arrive on `out`. `poll` reloads everything
    /// that often even without events (a read-only console: another process changes the
    /// vault and its events do not reach us).
    pub fn start(
        engine: Engine,
        out: mpsc::Sender<Result<Data, String>>,
        poll: Option<std::time::Duration>,
    ) -> Loader {
        let (tx, rx) = mpsc::unbounded_channel();
        let events = engine.subscribe();
        let task = tokio::spawn(loader_task(engine, rx, events, out, poll));
        let _ = tx.send(LoadRequest::Stale(Stale::ALL));
        Loader { requests: tx, task }
    }

    pub fn request(&self, r: LoadRequest) {
        let _ = self.requests.send(r);
    }
}

impl Drop for Loader {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Debounce: after the first stale mark, wait this long for more before reloading.
pub const DEBOUNCE: std::time::Duration = std::time::Duration::from_millis(100);

async fn loader_task(
    engine: Engine,
    mut rx: mpsc::UnboundedReceiver<LoadRequest>,
    mut events: broadcast::Receiver<Event>,
    out: mpsc::Sender<Result<Data, String>>,
    poll: Option<std::time::Duration>,
) {
    let mut data = Data::default();
    let mut query = JobsQuery::default();
    let mut stale = Stale::default();
    let mut poll_timer = poll.map(|p| tokio::time::interval_at(tokio::time::Instant::now() + p, p));
    loop {
        // Wait for something to do.
        if !stale.any() && data.jobs.query == query {
            tokio::select! {
                r = rx.recv() => match r {
                    Some(LoadRequest::Stale(s)) => stale.merge(s),
                    Some(LoadRequest::Query(q)) => query = q,
                    None => return,
                },
                e = events.recv() => match e {
                    Ok(e) => stale.merge(Stale::of_event(&e)),
                    Err(broadcast::error::RecvError::Lagged(_)) => stale = Stale::ALL,
                    Err(broadcast::error::RecvError::Closed) => {
                        // No more events (read-only); keep serving requests.
                        events = tokio::sync::broadcast::channel(1).1;
                    }
                },
                _ = async { match poll_timer.as_mut() { Some(t) => { t.tick().await; } None => std::future::pending::<()>().await } } => {
                    stale = Stale::ALL;
                }
            }
            if !stale.any() && data.jobs.query == query {
                continue;
            }
        }
        // Debounce: collect what else arrives within the window.
        let deadline = tokio::time::sleep(DEBOUNCE);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                _ = &mut deadline => break,
                r = rx.recv() => match r {
                    Some(LoadRequest::Stale(s)) => stale.merge(s),
                    Some(LoadRequest::Query(q)) => query = q,
                    None => return,
                },
                e = events.recv() => match e {
                    Ok(e) => stale.merge(Stale::of_event(&e)),
                    Err(broadcast::error::RecvError::Lagged(_)) => stale = Stale::ALL,
                    Err(broadcast::error::RecvError::Closed) => events = tokio::sync::broadcast::channel(1).1,
                },
            }
        }
        let (e, prev, s, q) = (engine.clone(), data.clone(), stale, query.clone());
        stale = Stale::default();
        let result = tokio::task::spawn_blocking(move || load(&e, &prev, s, &q)).await;
        let result = match result {
            Ok(r) => r,
            Err(e) => Err(format!("loading from the vault stopped unexpectedly: {e}")),
        };
        match &result {
            Ok(d) => data = d.clone(),
            Err(_) => {
                // Mark the query as loaded so a persistent error does not spin; the next
                // event or request retries.
                let mut w = (*data.jobs).clone();
                w.query = query.clone();
                data.jobs = Arc::new(w);
            }
        }
        if out.send(result).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn hour_buckets_cover_24_hours_ending_now() {
        let now = Utc.with_ymd_and_hms(2026, 11, 28, 10, 42, 0).unwrap();
        let counts = vec![
            (Utc.with_ymd_and_hms(2026, 11, 28, 10, 0, 0).unwrap(), 5),
            (Utc.with_ymd_and_hms(2026, 11, 27, 11, 0, 0).unwrap(), 2),
        ];
        let b = hour_buckets(now, &counts);
        assert_eq!(b.len(), 24);
        assert_eq!(
            b[23],
            (Utc.with_ymd_and_hms(2026, 11, 28, 10, 0, 0).unwrap(), 5)
        );
        assert_eq!(
            b[0],
            (Utc.with_ymd_and_hms(2026, 11, 27, 11, 0, 0).unwrap(), 2)
        );
        assert_eq!(b.iter().map(|x| x.1).sum::<u64>(), 7);
    }

    #[test]
    fn filters_cycle_and_map_to_statuses() {
        assert_eq!(StatusFilter::Any.next(), StatusFilter::Completed);
        assert_eq!(StatusFilter::Cancelled.next(), StatusFilter::Any);
        assert_eq!(
            StatusFilter::InProgress.statuses(),
            vec![JobStatus::InProgress, JobStatus::Cancelling]
        );
        assert_eq!(TimeRange::All.next(), TimeRange::Day);
        let q = JobsQuery {
            item_text: "  ".into(),
            ..Default::default()
        };
        assert!(q.to_filter(Utc::now()).item_text.is_none());
    }
}
