//! A read-rate limit: [`Throttle`] spaces reads so that together they stay under a rate,
//! and [`Throttled`] puts one in front of a [`DiskReader`]. The readers of one backup job
//! share a throttle, so a VM's disks together stay under the limit.

use super::{DiskReader, DiskView, ProviderError};
use crate::cancel::{CancelToken, Cancelled};
use crate::model::Extent;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Spaces reads so that together they do not exceed a rate (bytes are paid for before
/// they are read; a burst is never allowed).
#[derive(Debug)]
pub struct Throttle {
    bytes_per_sec: f64,
    next_free: Mutex<Instant>,
}

impl Throttle {
    /// A throttle of `mib_s` MiB/s (at least 1).
    pub fn new(mib_s: u64) -> Throttle {
        Throttle {
            bytes_per_sec: mib_s.max(1) as f64 * 1024.0 * 1024.0,
            next_free: Mutex::new(Instant::now()),
        }
    }

    /// Waits until `bytes` more may be read.
    pub fn pace(&self, bytes: usize) {
        let done_at = self.reserve(bytes);
        let now = Instant::now();
        if done_at > now {
            std::thread::sleep(done_at - now);
        }
    }

    /// Like [`Throttle::pace`], waking every tenth of a second to see whether `cancel` was
    /// cancelled (at a low limit a wait lasts seconds: a cancel must not).
    pub fn pace_or_cancel(&self, bytes: usize, cancel: &CancelToken) -> Result<(), Cancelled> {
        let done_at = self.reserve(bytes);
        loop {
            cancel.check()?;
            let now = Instant::now();
            if done_at <= now {
                return Ok(());
            }
            std::thread::sleep((done_at - now).min(Duration::from_millis(100)));
        }
    }

    /// Books `bytes` of the rate; returns when they may be read.
    fn reserve(&self, bytes: usize) -> Instant {
        let cost = Duration::from_secs_f64(bytes as f64 / self.bytes_per_sec);
        let mut next = match self.next_free.lock() {
            Ok(n) => n,
            Err(poisoned) => poisoned.into_inner(),
        };
        let start = (*next).max(Instant::now());
        *next = start + cost;
        *next
    }
}

/// A reader whose reads pass a shared [`Throttle`] first; a wait ends early, as
/// [`ProviderError::Cancelled`], when the job is cancelled.
pub struct Throttled {
    inner: Box<dyn DiskReader>,
    throttle: Arc<Throttle>,
    cancel: CancelToken,
}

impl Throttled {
    pub fn new(
        inner: Box<dyn DiskReader>,
        throttle: Arc<Throttle>,
        cancel: CancelToken,
    ) -> Throttled {
        Throttled {
            inner,
            throttle,
            cancel,
        }
    }
}

impl DiskReader for Throttled {
    fn capacity(&self) -> u64 {
        self.inner.capacity()
    }

    fn allocated_extents(&self) -> Result<Vec<Extent>, ProviderError> {
        self.inner.allocated_extents()
    }

    fn changed_extents(&self, since: &str) -> Result<Option<Vec<Extent>>, ProviderError> {
        self.inner.changed_extents(since)
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), ProviderError> {
        self.throttle.pace_or_cancel(buf.len(), &self.cancel)?;
        self.inner.read_at(offset, buf)
    }

    fn view_at(&self, offset: u64, len: usize) -> Option<DiskView<'_>> {
        let view = self.inner.view_at(offset, len)?;
        // The bytes of a view are read from the disk as they are used: pay before. A
        // cancel during the wait gives no view: the caller's `read_at` says cancelled.
        self.throttle.pace_or_cancel(len, &self.cancel).ok()?;
        Some(view)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Zeros(u64);

    impl DiskReader for Zeros {
        fn capacity(&self) -> u64 {
            self.0
        }
        fn allocated_extents(&self) -> Result<Vec<Extent>, ProviderError> {
            Ok(vec![Extent {
                offset: 0,
                len: self.0,
            }])
        }
        fn changed_extents(&self, _: &str) -> Result<Option<Vec<Extent>>, ProviderError> {
            Ok(None)
        }
        fn read_at(&self, _: u64, buf: &mut [u8]) -> Result<(), ProviderError> {
            buf.fill(0);
            Ok(())
        }
    }

    #[test]
    fn readers_sharing_a_throttle_stay_under_its_rate_together() {
        // 8 MiB/s; two readers on two threads read 2 MiB each: 4 MiB take at least
        // half a second (the first read is paid for too: no burst).
        let t = Arc::new(Throttle::new(8));
        let t0 = Instant::now();
        std::thread::scope(|s| {
            for _ in 0..2 {
                let r = Throttled::new(Box::new(Zeros(4 << 20)), t.clone(), CancelToken::new());
                s.spawn(move || {
                    let mut buf = vec![1u8; 256 << 10];
                    for i in 0..8u64 {
                        r.read_at(i * (256 << 10), &mut buf).expect("read");
                        assert!(buf.iter().all(|&b| b == 0));
                    }
                });
            }
        });
        assert!(
            t0.elapsed() >= Duration::from_millis(490),
            "4 MiB at 8 MiB/s took {:?}",
            t0.elapsed()
        );
        let r = Throttled::new(Box::new(Zeros(1 << 20)), t, CancelToken::new());
        assert_eq!(r.capacity(), 1 << 20);
        assert_eq!(r.allocated_extents().expect("extents").len(), 1);
        assert!(r.view_at(0, 4096).is_none());
    }

    #[test]
    fn a_cancel_ends_a_long_wait_at_once() {
        // 1 MiB/s, 16 MiB booked ahead: the next read would wait 16 s.
        let t = Arc::new(Throttle::new(1));
        let booked = CancelToken::new();
        booked.cancel();
        assert!(t.pace_or_cancel(16 << 20, &booked).is_err());
        let cancel = CancelToken::new();
        let r = Throttled::new(Box::new(Zeros(1 << 20)), t, cancel.clone());
        let c = cancel.clone();
        let stopper = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            c.cancel();
        });
        let t0 = Instant::now();
        let mut buf = vec![0u8; 4096];
        assert!(matches!(
            r.read_at(0, &mut buf),
            Err(ProviderError::Cancelled)
        ));
        assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
        stopper.join().expect("stopper");
    }
}
