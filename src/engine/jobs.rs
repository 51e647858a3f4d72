//! Job lifecycle: creation, tasks, progress, cancellation, the final status. Every
//! transition is saved in the catalog and published as an event.

use super::{usage, Engine, EngineError, Event, NoticeLevel, Result, RunningJob};
use crate::cancel::{CancelToken, Progress};
use crate::model::*;
use std::sync::{Arc, Mutex, MutexGuard};

/// Live progress of a running job.
#[derive(Debug, Clone, PartialEq)]
pub struct JobProgress {
    pub id: String,
    pub bytes_done: u64,
    pub bytes_total: u64,
    /// Bytes per second, smoothed.
    pub rate: f64,
    /// The task running now.
    pub task: Option<String>,
}

impl JobProgress {
    /// Seconds left at the current rate, when it can be told.
    pub fn eta_seconds(&self) -> Option<f64> {
        if self.rate > 0.0 && self.bytes_total >= self.bytes_done {
            Some((self.bytes_total - self.bytes_done) as f64 / self.rate)
        } else {
            None
        }
    }
}

pub(crate) fn progress_of(id: &str, r: &RunningJob) -> JobProgress {
    JobProgress {
        id: id.to_string(),
        bytes_done: r.progress.done(),
        bytes_total: r.progress.total(),
        rate: r.rate,
        task: r.task.lock().unwrap_or_else(|p| p.into_inner()).clone(),
    }
}

/// How a job body ended well.
pub(crate) enum JobEnd {
    /// Completed; warnings make it CompletedWithWarnings.
    Done { warnings: Vec<String> },
    /// The body saved the final job row itself (in the same transaction as its commit).
    Saved,
}

/// How a job body ended badly.
#[derive(Debug)]
pub(crate) enum JobFail {
    Cancelled,
    Failed(ErrorDetails),
}

impl From<crate::cancel::Cancelled> for JobFail {
    fn from(_: crate::cancel::Cancelled) -> Self {
        JobFail::Cancelled
    }
}

impl From<crate::provider::ProviderError> for JobFail {
    fn from(e: crate::provider::ProviderError) -> Self {
        match e {
            crate::provider::ProviderError::Cancelled => JobFail::Cancelled,
            crate::provider::ProviderError::Failed(d) => JobFail::Failed(d),
        }
    }
}

impl From<EngineError> for JobFail {
    fn from(e: EngineError) -> Self {
        JobFail::Failed(ErrorDetails::new(
            "VaultError",
            "The vault could not complete the operation",
            e.to_string(),
        ))
    }
}

impl From<crate::vault::catalog::CatalogError> for JobFail {
    fn from(e: crate::vault::catalog::CatalogError) -> Self {
        if e.is_full() {
            return JobFail::Failed(crate::vault::store::storage_full(e.to_string()));
        }
        JobFail::vault("The vault's catalog failed", e.to_string())
    }
}

impl From<crate::vault::store::StoreError> for JobFail {
    fn from(e: crate::vault::store::StoreError) -> Self {
        match e {
            crate::vault::store::StoreError::Cancelled => JobFail::Cancelled,
            e => JobFail::Failed(e.details()),
        }
    }
}

impl JobFail {
    pub fn vault(title: &str, message: impl Into<String>) -> JobFail {
        JobFail::Failed(ErrorDetails::new("VaultError", title, message).recommend(
            "Run `vmvault verify` to check the vault, and see the log file for details.",
        ))
    }

    /// The same failure, for another job it stopped too.
    pub fn duplicate(&self) -> JobFail {
        match self {
            JobFail::Cancelled => JobFail::Cancelled,
            JobFail::Failed(d) => JobFail::Failed(d.clone()),
        }
    }
}

pub(crate) type JobResult = std::result::Result<JobEnd, JobFail>;

/// What a job is, before it runs.
pub(crate) struct JobSpec {
    pub op: JobOperation,
    pub item: Option<Item>,
    pub tasks: Vec<&'static str>,
    pub user_triggered: bool,
    /// Takes one of the bounded data-job slots (backup, restore, verify, GC).
    pub data: bool,
    pub details: serde_json::Map<String, serde_json::Value>,
}

impl JobSpec {
    pub fn new(op: JobOperation, item: Option<&Item>, tasks: &[&'static str]) -> JobSpec {
        JobSpec {
            op,
            item: item.cloned(),
            tasks: tasks.to_vec(),
            user_triggered: true,
            data: false,
            details: Default::default(),
        }
    }
}

/// Handed to a job body: the job row, cancellation and progress.
pub(crate) struct JobCtx {
    pub engine: Engine,
    job: Mutex<Job>,
    pub cancel: CancelToken,
    pub progress: Arc<Progress>,
    task: Arc<Mutex<Option<String>>>,
}

impl JobCtx {
    fn job(&self) -> MutexGuard<'_, Job> {
        self.job.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn id(&self) -> String {
        self.job().id.clone()
    }

    pub fn snapshot(&self) -> Job {
        self.job().clone()
    }

    fn save_and_publish(&self) {
        {
            let mut j = self.job();
            if self.cancel.is_cancelled() && j.status == JobStatus::InProgress {
                j.status = JobStatus::Cancelling;
            }
        }
        let job = self.snapshot();
        if let Err(e) = self.engine.inner.catalog.save_job(&job) {
            tracing::error!("saving job {}: {e}", job.id);
        }
        self.engine.publish(Event::JobUpdated(Box::new(job)));
    }

    /// Starts task `i` (and records it).
    pub fn start_task(&self, i: usize) {
        let now = self.engine.now();
        {
            let mut job = self.job();
            if let Some(t) = job.tasks.get_mut(i) {
                t.status = TaskStatus::InProgress;
                t.start_time = Some(now);
                *self.task.lock().unwrap_or_else(|p| p.into_inner()) = Some(t.name.clone());
            }
        }
        self.save_and_publish();
    }

    /// Ends task `i` with `status`, recording the bytes it moved.
    pub fn end_task(&self, i: usize, status: TaskStatus) {
        let now = self.engine.now();
        {
            let mut job = self.job();
            let (done, total) = (self.progress.done(), self.progress.total());
            job.bytes_done = done;
            job.bytes_total = total;
            if let Some(t) = job.tasks.get_mut(i) {
                t.status = status;
                t.end_time = Some(now);
                if t.bytes_total == 0 {
                    t.bytes_done = done;
                    t.bytes_total = total;
                }
            }
        }
        self.save_and_publish();
    }

    /// Records a fact in the job's details (saved with the next transition).
    pub fn detail(&self, key: &str, value: impl Into<serde_json::Value>) {
        self.job().details.insert(key.to_string(), value.into());
    }

    /// The job as it will be saved when it ends with `status` now (for bodies that save
    /// their final row in their own commit transaction; follow with `JobEnd::Saved`).
    pub fn final_job(&self, status: JobStatus, error: Option<ErrorDetails>) -> Job {
        let now = self.engine.now();
        let mut job = self.job();
        finalize(
            &mut job,
            status,
            error,
            now,
            self.progress.done(),
            self.progress.total(),
        );
        job.clone()
    }
}

fn finalize(
    job: &mut Job,
    status: JobStatus,
    error: Option<ErrorDetails>,
    now: chrono::DateTime<chrono::Utc>,
    done: u64,
    total: u64,
) {
    job.status = status;
    job.end_time = Some(now.max(job.start_time));
    job.error = error;
    job.bytes_done = done;
    job.bytes_total = total;
    for t in &mut job.tasks {
        match t.status {
            TaskStatus::InProgress => {
                t.status = match status {
                    JobStatus::Completed | JobStatus::CompletedWithWarnings => {
                        TaskStatus::Completed
                    }
                    JobStatus::Cancelled | JobStatus::Cancelling => TaskStatus::Cancelled,
                    _ => TaskStatus::Failed,
                };
                t.end_time = job.end_time;
            }
            TaskStatus::NotStarted => {
                t.status = match status {
                    JobStatus::Completed | JobStatus::CompletedWithWarnings => TaskStatus::Skipped,
                    _ => TaskStatus::Cancelled,
                };
            }
            _ => {}
        }
    }
}

impl Engine {
    /// The running job of `op` on an item, if any.
    pub(crate) fn running_on_item(&self, item_id: &str, ops: &[JobOperation]) -> Option<String> {
        let running = self.inner.running.lock().unwrap_or_else(|p| p.into_inner());
        running
            .iter()
            .find(|(_, r)| r.item_id.as_deref() == Some(item_id) && ops.contains(&r.op))
            .map(|(id, _)| id.clone())
    }

    pub(crate) fn running_of_op(&self, op: JobOperation) -> Option<String> {
        let running = self.inner.running.lock().unwrap_or_else(|p| p.into_inner());
        running
            .iter()
            .find(|(_, r)| r.op == op)
            .map(|(id, _)| id.clone())
    }

    /// Creates a job (saved as InProgress) and runs `body` on a blocking thread.
    /// Returns the job id at once.
    pub(crate) fn spawn_job<F>(&self, spec: JobSpec, body: F) -> Result<String>
    where
        F: FnOnce(&JobCtx) -> JobResult + Send + 'static,
    {
        let (ctx, data) = self.create_job(spec)?;
        let ctx = Arc::new(ctx);
        let engine = self.clone();
        let slots = self.inner.data_slots.clone();
        let id = ctx.id();
        self.inner.rt.spawn(async move {
            let _permit = if data {
                slots.acquire_owned().await.ok()
            } else {
                None
            };
            let result = if ctx.cancel.is_cancelled() {
                Err(JobFail::Cancelled)
            } else {
                let c = ctx.clone();
                match tokio::task::spawn_blocking(move || body(&c)).await {
                    Ok(r) => r,
                    Err(e) => Err(JobFail::Failed(ErrorDetails::new(
                        "InternalError",
                        "Internal error",
                        format!("the job stopped unexpectedly: {e}"),
                    ))),
                }
            };
            engine.finish_job(&ctx, result);
        });
        Ok(id)
    }

    /// Runs a job body on the current thread (used inside other jobs and `sim advance`).
    pub(crate) fn run_job_inline<F>(&self, spec: JobSpec, body: F) -> Result<Job>
    where
        F: FnOnce(&JobCtx) -> JobResult,
    {
        let (ctx, _) = self.create_job(spec)?;
        let result = body(&ctx);
        self.finish_job(&ctx, result);
        Ok(ctx.snapshot())
    }

    pub(crate) fn create_job(&self, spec: JobSpec) -> Result<(JobCtx, bool)> {
        self.require_owner()?;
        if self.is_stopping() {
            return Err(EngineError::Failed(
                "vmvault is stopping: no new job starts".into(),
            ));
        }
        let now = self.now();
        let job = Job {
            id: uuid::Uuid::new_v4().to_string(),
            operation: spec.op,
            item_id: spec.item.as_ref().map(|i| i.id.clone()),
            item: spec
                .item
                .as_ref()
                .map(|i| i.qualified_name())
                .unwrap_or_else(|| self.vault_name().to_string()),
            status: JobStatus::InProgress,
            start_time: now,
            end_time: None,
            bytes_done: 0,
            bytes_total: 0,
            is_user_triggered: spec.user_triggered,
            tasks: spec
                .tasks
                .iter()
                .map(|n| JobTask {
                    name: n.to_string(),
                    status: TaskStatus::NotStarted,
                    start_time: None,
                    end_time: None,
                    bytes_done: 0,
                    bytes_total: 0,
                })
                .collect(),
            error: None,
            details: spec.details,
        };
        self.inner.catalog.save_job(&job)?;
        let cancel = CancelToken::new();
        let progress = Progress::new();
        let task = Arc::new(Mutex::new(None));
        {
            let mut running = self.inner.running.lock().unwrap_or_else(|p| p.into_inner());
            // A stop that came after the check above cancels this job too (it took the
            // list of running jobs before this one was in it, or will see it).
            if self.is_stopping() {
                cancel.cancel();
            }
            running.insert(
                job.id.clone(),
                RunningJob {
                    op: spec.op,
                    item_id: job.item_id.clone(),
                    cancel: cancel.clone(),
                    progress: progress.clone(),
                    task: task.clone(),
                    last_done: 0,
                    rate: 0.0,
                },
            );
        }
        tracing::info!(job = %job.id, op = %job.operation, item = %job.item, "job started");
        self.publish(Event::JobUpdated(Box::new(job.clone())));
        Ok((
            JobCtx {
                engine: self.clone(),
                job: Mutex::new(job),
                cancel,
                progress,
                task,
            },
            spec.data,
        ))
    }

    pub(crate) fn finish_job(&self, ctx: &JobCtx, result: JobResult) {
        let now = self.now();
        let (done, total) = (ctx.progress.done(), ctx.progress.total());
        // A body that saved its final row itself (with its commit) needs no second save.
        let saved = matches!(result, Ok(JobEnd::Saved));
        let job = {
            let mut job = ctx.job();
            match result {
                Ok(JobEnd::Saved) => {}
                Ok(JobEnd::Done { warnings }) => {
                    let status = if warnings.is_empty() {
                        JobStatus::Completed
                    } else {
                        JobStatus::CompletedWithWarnings
                    };
                    if !warnings.is_empty() {
                        job.details.insert("warnings".into(), warnings.into());
                    }
                    finalize(&mut job, status, None, now, done, total);
                }
                Err(JobFail::Cancelled) => {
                    let e = ErrorDetails::new("OperationCancelled", "Cancelled", "the job was cancelled before it finished; nothing it had started was committed");
                    finalize(&mut job, JobStatus::Cancelled, Some(e), now, done, total);
                }
                Err(JobFail::Failed(mut e)) => {
                    if e.code == "VaultStorageFull" {
                        if let Some(note) = crate::fsx::space_note(self.vault_dir()) {
                            if !e.message.contains(&note) {
                                // Measured now, once the job gave back what it wrote (a
                                // failed backup removes its chunks): what it lacked is more.
                                e.message = format!(
                                    "{}; at the job's end, after what it wrote was removed, {note}",
                                    e.message
                                );
                            }
                        }
                    }
                    finalize(&mut job, JobStatus::Failed, Some(e), now, done, total)
                }
            }
            job.clone()
        };
        {
            // The end must be known even when it cannot be recorded (the vault's disk is
            // full): kept in memory, shown by this engine, and saved again with the next
            // job's end. Removed from `running` only after, so a waiter never sees neither.
            let mut unsaved = self.inner.unsaved.lock().unwrap_or_else(|p| p.into_inner());
            unsaved.retain(|_, j| self.inner.catalog.save_job(j).is_err());
            let stored = if saved {
                Ok(())
            } else {
                self.inner.catalog.save_job(&job)
            };
            if let Err(e) = stored {
                tracing::error!("saving final state of job {}: {e}", job.id);
                unsaved.insert(job.id.clone(), job.clone());
            }
            // Logged before the job leaves the running set: waiters (and so the CLI's
            // exit) go on only after that, so every job's end is in the log exactly once.
            tracing::info!(job = %job.id, status = %job.status, "job finished");
            let mut running = self.inner.running.lock().unwrap_or_else(|p| p.into_inner());
            running.remove(&job.id);
        }
        match job.status {
            JobStatus::Failed => {
                let msg = job
                    .error
                    .as_ref()
                    .map(|e| e.message.clone())
                    .unwrap_or_default();
                self.notice(
                    NoticeLevel::Error,
                    format!("{} of {} failed: {msg}", job.operation, job.item),
                    Some(&job.id),
                );
            }
            JobStatus::Cancelled => self.notice(
                NoticeLevel::Warning,
                format!("{} of {} cancelled", job.operation, job.item),
                Some(&job.id),
            ),
            _ => {}
        }
        self.publish(Event::JobUpdated(Box::new(job)));
    }

    /// Asks a running job to stop. It ends as Cancelled, recording what it had done.
    pub fn cancel_job(&self, id: &str) -> Result<Job> {
        let job = self.job(id)?;
        if !job.status.is_active() {
            return usage(format!(
                "job {} is not running (status {}); nothing to cancel",
                job.id, job.status
            ));
        }
        if !self.is_owner() {
            // The job runs in the process that owns the vault: ask it through the catalog.
            self.require_owner().or_else(|e| match e {
                EngineError::Locked(_) => Ok(()),
                e => Err(e),
            })?;
            crate::vault::catalog::Catalog::request_cancel(self.inner.catalog.path(), &job.id)?;
            let mut j = job;
            j.status = JobStatus::Cancelling;
            return Ok(j);
        }
        let token = {
            let running = self.inner.running.lock().unwrap_or_else(|p| p.into_inner());
            running.get(&job.id).map(|r| r.cancel.clone())
        };
        let Some(token) = token else {
            return usage(format!("job {} is not running in this process", job.id));
        };
        token.cancel();
        let mut j = job;
        if j.status == JobStatus::InProgress {
            j.status = JobStatus::Cancelling;
            // Only the status changes here; the job's own thread owns the other fields.
            self.inner.catalog.mark_cancelling(&j.id)?;
            self.publish(Event::JobUpdated(Box::new(j.clone())));
        }
        Ok(j)
    }

    /// Publishes progress of running jobs a few times a second and saves it to the
    /// catalog about once a second (so `vmvault job ID` in another shell sees it).
    pub(crate) fn spawn_progress_ticker(&self) {
        let weak = Arc::downgrade(&self.inner);
        self.inner.rt.spawn(async move {
            let mut tick: u64 = 0;
            let period = std::time::Duration::from_millis(250);
            loop {
                tokio::time::sleep(period).await;
                let Some(inner) = weak.upgrade() else { break };
                let engine = Engine { inner };
                tick += 1;
                let updates: Vec<JobProgress> = {
                    let mut running = engine
                        .inner
                        .running
                        .lock()
                        .unwrap_or_else(|p| p.into_inner());
                    running
                        .iter_mut()
                        .filter_map(|(id, r)| {
                            let done = r.progress.done();
                            let delta =
                                done.saturating_sub(r.last_done) as f64 / period.as_secs_f64();
                            r.rate = if r.rate == 0.0 {
                                delta
                            } else {
                                0.7 * r.rate + 0.3 * delta
                            };
                            let changed =
                                done != r.last_done || r.progress.total() > 0 && r.rate > 0.0;
                            r.last_done = done;
                            changed.then(|| progress_of(id, r))
                        })
                        .collect()
                };
                if tick.is_multiple_of(4) {
                    // Cancels asked for by other processes (`vmvault cancel` in a shell).
                    if let Ok(ids) = engine.inner.catalog.cancel_requests() {
                        for id in ids {
                            let mine = engine
                                .inner
                                .running
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .contains_key(&id);
                            if mine {
                                let _ = engine.cancel_job(&id);
                            }
                        }
                    }
                }
                for p in updates {
                    if tick.is_multiple_of(4) {
                        let _ = engine.inner.catalog.save_job_progress(
                            &p.id,
                            p.bytes_done,
                            p.bytes_total,
                        );
                    }
                    engine.publish(Event::JobProgress(p));
                }
            }
        });
    }
}
