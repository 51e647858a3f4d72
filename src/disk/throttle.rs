//! A read-rate limit: [`Throttle`] spaces reads so that together they stay under a rate,
//! and [`Throttled`] puts one in front of a [`DiskReader`]. The readers of one backup job
//! share a throttle, so a VM's disks together stay under the limit.

use super::{DiskReader, DiskView, ProviderError};
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
        let cost = Duration::from_secs_f64(bytes as f64 / self.bytes_per_sec);
        let done_at = {
            let mut next = match self.next_free.lock() {
                Ok(n) => n,
                Err(poisoned) => poisoned.into_inner(),
            };
            let start = (*next).max(Instant::now());
            *next = start + cost;
            *next
        };
        let now = Instant::now();
        if done_at > now {
            std::thread::sleep(done_at - now);
        }
    }
}

/// A reader whose reads pass a shared [`Throttle`] first.
pub struct Throttled {
    inner: Box<dyn DiskReader>,
    throttle: Arc<Throttle>,
}

impl Throttled {
    pub fn new(inner: Box<dyn DiskReader>, throttle: Arc<Throttle>) -> Throttled {
        Throttled { inner, throttle }
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
        self.throttle.pace(buf.len());
        self.inner.read_at(offset, buf)
    }

    fn view_at(&self, offset: u64, len: usize) -> Option<DiskView<'_>> {
        let view = self.inner.view_at(offset, len)?;
        // The bytes of a view are read from the disk as they are used: pay before.
        self.throttle.pace(len);
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
                let r = Throttled::new(Box::new(Zeros(4 << 20)), t.clone());
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
        let r = Throttled::new(Box::new(Zeros(1 << 20)), t);
        assert_eq!(r.capacity(), 1 << 20);
        assert_eq!(r.allocated_extents().expect("extents").len(), 1);
        assert!(r.view_at(0, 4096).is_none());
    }
}
