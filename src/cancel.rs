//! Cooperative cancellation and progress counters shared between a job and its workers.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Set once to ask a job to stop; long loops check it between units of work.
#[derive(Debug, Clone, Default)]
pub struct CancelToken(Arc<AtomicBool>);

/// Returned by [`CancelToken::check`] when the job was cancelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("cancelled")]
pub struct Cancelled;

impl CancelToken {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn cancel(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
    pub fn check(&self) -> Result<(), Cancelled> {
        if self.is_cancelled() {
            Err(Cancelled)
        } else {
            Ok(())
        }
    }
    /// Sleeps `d` (a simulated latency), waking early when cancelled.
    pub fn sleep(&self, d: Duration) -> Result<(), Cancelled> {
        let step = Duration::from_millis(20);
        let mut left = d;
        while !left.is_zero() {
            self.check()?;
            let s = left.min(step);
            std::thread::sleep(s);
            left -= s;
        }
        self.check()
    }
}

/// Byte counters of a running job, updated by workers and read by the engine.
#[derive(Debug, Default)]
pub struct Progress {
    pub bytes_done: AtomicU64,
    pub bytes_total: AtomicU64,
}

impl Progress {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }
    pub fn add_done(&self, n: u64) {
        self.bytes_done.fetch_add(n, Ordering::Relaxed);
    }
    pub fn add_total(&self, n: u64) {
        self.bytes_total.fetch_add(n, Ordering::Relaxed);
    }
    pub fn set_total(&self, n: u64) {
        self.bytes_total.store(n, Ordering::Relaxed);
    }
    pub fn done(&self) -> u64 {
        self.bytes_done.load(Ordering::Relaxed)
    }
    pub fn total(&self) -> u64 {
        self.bytes_total.load(Ordering::Relaxed)
    }
}
