//! Random access to the disks of a recovery point: [`PointReader::read_at`] reads any byte
//! range of any disk, from the point's disk indexes and its chunks, without restoring it.
//! What mounts, file browsing, an NBD export and instant restore stand on.
//!
//! # What it guarantees
//! - **The bytes of the backed-up disk, or an error.** Every chunk read from the store is
//!   checked against its name (the [`ChunkSource`] re-hashes it, as restore and verify do)
//!   and against the length of its slot; damage, a missing chunk or an I/O error is a
//!   [`StoreError`] naming the chunk, the slot and its disk offset, never wrong bytes. A
//!   failed read is never cached: the next read tries the store again.
//! - **Holes cost nothing.** A slot the index does not list reads as zeros, without I/O.
//! - **Reads are exact.** A read returns `buf.len()` bytes, fewer only where the disk ends
//!   (0 at or past the end, or for an empty `buf`).
//! - **Shared by threads.** `read_at` takes `&self` and [`PointReader`] is `Send + Sync`:
//!   a FUSE server or an NBD export reads from several threads at once, and two threads
//!   that need the same chunk read it once (the second waits for the first's result).
//!
//! # Design
//! - **A chunk cache bounded in bytes** ([`ChunkCache`], default
//!   [`DEFAULT_CACHE_BYTES`]), shared by every reader given the same one (several points of
//!   one vault share chunks: the cache is keyed by digest). Small reads (4 KiB from a
//!   filesystem) hit the same chunk many times; decompressing and re-hashing a whole chunk
//!   for each would cost 1–4 ms per read instead of microseconds. Replacement is CLOCK (a
//!   reference bit per entry, a hand that clears it or evicts): near-LRU hit rates with
//!   O(1) work and no list to reorder on every hit. Entries are `Arc<[u8]>`, so an evicted
//!   chunk a reader is still copying from stays valid. Peak memory is the cache bound plus
//!   about two chunks of read buffers per thread loading a chunk at that moment (readers
//!   and read-ahead threads) and per idle buffer set kept for reuse
//!   ([`MAX_IDLE_READERS`]): with the defaults and 4 MiB chunks, 64 MiB + 8 MiB per
//!   loading thread + 16 MiB. No I/O happens under the cache's lock.
//! - **Sequential read-ahead.** Each disk remembers where its last read ended; reads that
//!   keep moving forward (each starting at most one chunk past the previous end) are a
//!   stream, and after [`SEQUENTIAL_AFTER`] of them the next `read_ahead` chunks are
//!   queued for a small pool of background threads, which load them into the cache. The
//!   queue is bounded (excess requests are dropped, never waited for), and read-ahead is
//!   capped at a quarter of the cache so that it cannot flush what random readers use. A
//!   reader never waits behind the queue: it reads what it needs itself, and only waits for
//!   a load of the very chunk it needs that has already started (that finishes sooner than
//!   a new read). Read-ahead errors are dropped: the reader that needs the chunk reads it
//!   again and reports the error itself.
//! - **A seam for the v2 store.** Chunks come from a [`ChunkSource`] with per-thread state
//!   (buffers, decompression and, in v2, decryption contexts): [`Vault`] implements
//!   it today, and the backend + codec store implements it the same way.
//!
//! Restore and verify do not use it: restore writes each chunk of a disk once, straight
//! from the aligned decode buffer into the image with O_DIRECT (a cache would add a copy
//! and hold memory for bytes never read twice), and verify checks distinct chunks by
//! digest, not disk ranges.

use super::chunks::{ChunkReader, Vault};
use super::restore::check_slot_len;
use super::{Digest, DiskIndex, StoreError};
use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

/// Default bound of a [`ChunkCache`]: 64 MiB (16 chunks of the default 4 MiB).
pub const DEFAULT_CACHE_BYTES: usize = 64 * 1024 * 1024;
/// Default read-ahead, in chunks (capped at a quarter of the cache).
pub const DEFAULT_READ_AHEAD: usize = 8;
/// Default number of read-ahead threads.
pub const DEFAULT_READ_AHEAD_THREADS: usize = 2;
/// Forward reads in a row after which a disk's reads count as a sequential stream.
pub const SEQUENTIAL_AFTER: u32 = 2;
/// Idle per-thread chunk readers (buffers, contexts) kept for reuse: each holds about two
/// chunks' worth of buffers, so only a few are kept.
pub const MAX_IDLE_READERS: usize = 2;

/// Where chunks come from: reads one chunk by digest, checked against it.
pub trait ChunkSource: Send + Sync + 'static {
    /// Reusable state of one reading thread: buffers, decompression (and decryption)
    /// contexts.
    type Reader: Send;

    /// New per-thread state.
    fn new_reader(&self) -> Result<Self::Reader, StoreError>;

    /// The raw bytes of chunk `d`, checked against its name; a missing, damaged or
    /// unreadable chunk is an error naming it.
    fn read_chunk<'r>(
        &self,
        d: &Digest,
        reader: &'r mut Self::Reader,
    ) -> Result<&'r [u8], StoreError>;

    /// Where chunk `d` is stored, for messages.
    fn location(&self, d: &Digest) -> PathBuf;
}

impl ChunkSource for Vault {
    type Reader = ChunkReader;

    fn new_reader(&self) -> Result<ChunkReader, StoreError> {
        self.reader()
    }

    fn read_chunk<'r>(&self, d: &Digest, r: &'r mut ChunkReader) -> Result<&'r [u8], StoreError> {
        self.read_into(d, r)
    }

    fn location(&self, d: &Digest) -> PathBuf {
        self.path_of(d)
    }
}

impl<S: ChunkSource> ChunkSource for Arc<S> {
    type Reader = S::Reader;

    fn new_reader(&self) -> Result<S::Reader, StoreError> {
        (**self).new_reader()
    }

    fn read_chunk<'r>(&self, d: &Digest, r: &'r mut S::Reader) -> Result<&'r [u8], StoreError> {
        (**self).read_chunk(d, r)
    }

    fn location(&self, d: &Digest) -> PathBuf {
        (**self).location(d)
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The data behind these locks stays consistent even if a holder panicked.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Counters of a [`ChunkCache`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// The bound, in bytes.
    pub limit: usize,
    /// Bytes of chunks held now.
    pub bytes: usize,
    /// The most bytes ever held at once.
    pub peak_bytes: usize,
    pub entries: usize,
    pub hits: u64,
    pub misses: u64,
    pub evictions: u64,
}

/// Checked chunks by digest, at most `limit` bytes of them (CLOCK replacement), with
/// single-flight loading: concurrent misses of one chunk read it once.
pub struct ChunkCache {
    limit: usize,
    inner: Mutex<Clock>,
    loading: Mutex<HashMap<Digest, Arc<Load>>>,
}

struct Clock {
    slots: Vec<Entry>,
    at: HashMap<Digest, usize>,
    hand: usize,
    stats: CacheStats,
}

struct Entry {
    digest: Digest,
    data: Arc<[u8]>,
    referenced: bool,
}

impl Clock {
    fn evict_one(&mut self) {
        while !self.slots.is_empty() {
            if self.hand >= self.slots.len() {
                self.hand = 0;
            }
            let e = &mut self.slots[self.hand];
            if e.referenced {
                e.referenced = false;
                self.hand += 1;
                continue;
            }
            let gone = self.slots.swap_remove(self.hand);
            self.at.remove(&gone.digest);
            if let Some(moved) = self.slots.get(self.hand) {
                self.at.insert(moved.digest, self.hand);
            }
            self.stats.bytes -= gone.data.len();
            self.stats.evictions += 1;
            return;
        }
    }
}

/// A load in progress: its result (`Some(None)` when it failed) once done.
#[derive(Default)]
struct Load {
    done: Mutex<Option<Option<Arc<[u8]>>>>,
    cv: Condvar,
}

impl Load {
    fn wait(&self) -> Option<Arc<[u8]>> {
        let mut g = lock(&self.done);
        loop {
            if let Some(r) = g.as_ref() {
                return r.clone();
            }
            g = self.cv.wait(g).unwrap_or_else(|p| p.into_inner());
        }
    }
}

/// Ends a load (also when the loader unwinds): waiters get the result, the next miss loads
/// again.
struct LoadGuard<'c> {
    cache: &'c ChunkCache,
    digest: Digest,
    load: Arc<Load>,
    result: Option<Arc<[u8]>>,
}

impl Drop for LoadGuard<'_> {
    fn drop(&mut self) {
        lock(&self.cache.loading).remove(&self.digest);
        *lock(&self.load.done) = Some(self.result.take());
        self.load.cv.notify_all();
    }
}

impl ChunkCache {
    /// A cache of at most `limit` bytes of chunk data.
    pub fn new(limit: usize) -> ChunkCache {
        ChunkCache {
            limit,
            inner: Mutex::new(Clock {
                slots: Vec::new(),
                at: HashMap::new(),
                hand: 0,
                stats: CacheStats {
                    limit,
                    ..CacheStats::default()
                },
            }),
            loading: Mutex::new(HashMap::new()),
        }
    }

    /// The bound, in bytes.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Counters and current size.
    pub fn stats(&self) -> CacheStats {
        let c = lock(&self.inner);
        CacheStats {
            entries: c.slots.len(),
            ..c.stats
        }
    }

    /// Whether chunk `d` is cached (does not count as a use).
    pub fn contains(&self, d: &Digest) -> bool {
        lock(&self.inner).at.contains_key(d)
    }

    /// Chunk `d` if cached, marking it used.
    pub fn get(&self, d: &Digest) -> Option<Arc<[u8]>> {
        let mut c = lock(&self.inner);
        match c.at.get(d).copied() {
            Some(i) => {
                c.stats.hits += 1;
                let e = &mut c.slots[i];
                e.referenced = true;
                Some(e.data.clone())
            }
            None => {
                c.stats.misses += 1;
                None
            }
        }
    }

    /// Caches `data` as chunk `d` (only checked bytes may be given), evicting as needed; a
    /// chunk larger than the whole cache is not kept.
    pub fn insert(&self, d: Digest, data: Arc<[u8]>) {
        if data.len() > self.limit {
            return;
        }
        let mut c = lock(&self.inner);
        if c.at.contains_key(&d) {
            return;
        }
        while c.stats.bytes + data.len() > self.limit {
            c.evict_one();
        }
        c.stats.bytes += data.len();
        c.stats.peak_bytes = c.stats.peak_bytes.max(c.stats.bytes);
        let i = c.slots.len();
        c.slots.push(Entry {
            digest: d,
            data,
            referenced: false,
        });
        c.at.insert(d, i);
    }

    /// Chunk `d`: from the cache, from a load of it already running, or by `load` (cached
    /// when it succeeds). If a running load that was waited for fails, `load` reads the
    /// chunk again, so the error returned is this caller's own.
    pub fn get_or_load(
        &self,
        d: &Digest,
        load: impl FnOnce() -> Result<Arc<[u8]>, StoreError>,
    ) -> Result<Arc<[u8]>, StoreError> {
        if let Some(c) = self.get(d) {
            return Ok(c);
        }
        match self.start_load(d) {
            Ok(mut guard) => {
                // Loaded and cached between the miss and the start: nothing to read.
                if let Some(c) = self.peek(d) {
                    guard.result = Some(c.clone());
                    return Ok(c);
                }
                let data = load()?;
                self.insert(*d, data.clone());
                guard.result = Some(data.clone());
                Ok(data)
            }
            Err(running) => match running.wait() {
                Some(c) => Ok(c),
                None => load(),
            },
        }
    }

    /// Loads chunk `d` ahead of need, unless it is cached or being loaded; errors are
    /// dropped (whoever needs the chunk will read it and report them).
    fn load_ahead(&self, d: &Digest, load: impl FnOnce() -> Result<Arc<[u8]>, StoreError>) {
        if self.contains(d) {
            return;
        }
        if let Ok(mut guard) = self.start_load(d) {
            if self.contains(d) {
                return;
            }
            if let Ok(data) = load() {
                self.insert(*d, data.clone());
                guard.result = Some(data);
            }
        }
    }

    /// Registers a load of `d`, or returns the one already running.
    fn start_load(&self, d: &Digest) -> Result<LoadGuard<'_>, Arc<Load>> {
        let mut loading = lock(&self.loading);
        if let Some(l) = loading.get(d) {
            return Err(l.clone());
        }
        let load = Arc::new(Load::default());
        loading.insert(*d, load.clone());
        Ok(LoadGuard {
            cache: self,
            digest: *d,
            load,
            result: None,
        })
    }

    /// Chunk `d` if cached, without counting a hit or a miss.
    fn peek(&self, d: &Digest) -> Option<Arc<[u8]>> {
        let c = lock(&self.inner);
        c.at.get(d).map(|&i| c.slots[i].data.clone())
    }
}

impl Default for ChunkCache {
    fn default() -> Self {
        ChunkCache::new(DEFAULT_CACHE_BYTES)
    }
}

/// Settings of a [`PointReader`].
#[derive(Clone)]
pub struct ReaderOptions {
    /// The chunk cache; share one between readers of the same vault.
    pub cache: Arc<ChunkCache>,
    /// Chunks to load ahead of a sequential stream (0: no read-ahead). Capped so that
    /// read-ahead takes at most a quarter of the cache.
    pub read_ahead: usize,
    /// Background threads that load ahead.
    pub read_ahead_threads: usize,
}

impl Default for ReaderOptions {
    fn default() -> Self {
        ReaderOptions {
            cache: Arc::new(ChunkCache::default()),
            read_ahead: DEFAULT_READ_AHEAD,
            read_ahead_threads: DEFAULT_READ_AHEAD_THREADS,
        }
    }
}

/// One disk of the point and where its reads have been going.
struct Disk {
    number: u32,
    index: DiskIndex,
    stream: Mutex<Stream>,
}

/// Recent reads of a disk, to recognise a sequential stream.
#[derive(Default)]
struct Stream {
    /// Where the last read started and ended.
    start: u64,
    end: u64,
    /// Forward reads in a row.
    run: u32,
    /// Slots before this one were already queued for read-ahead.
    queued_until: u64,
}

/// Work for the read-ahead threads.
#[derive(Default)]
struct Queue {
    chunks: VecDeque<Digest>,
    /// Chunks being loaded by a read-ahead thread now.
    busy: usize,
    stop: bool,
}

/// What the reader and its read-ahead threads share.
struct Shared<S: ChunkSource> {
    source: S,
    cache: Arc<ChunkCache>,
    /// Idle per-thread readers, reused.
    idle: Mutex<Vec<S::Reader>>,
    queue: Mutex<Queue>,
    /// Signalled when work is queued, when a load ends and on stop.
    wake: Condvar,
    /// Chunks read from the source by read-ahead threads.
    read_ahead_loads: AtomicU64,
}

impl<S: ChunkSource> Shared<S> {
    /// Reads and checks chunk `d` from the source, into a new shared buffer.
    fn load(&self, d: &Digest) -> Result<Arc<[u8]>, StoreError> {
        let popped = lock(&self.idle).pop();
        let mut r = match popped {
            Some(r) => r,
            None => self.source.new_reader()?,
        };
        let data: Arc<[u8]> = Arc::from(self.source.read_chunk(d, &mut r)?);
        let mut idle = lock(&self.idle);
        if idle.len() < MAX_IDLE_READERS {
            idle.push(r);
        }
        Ok(data)
    }

    /// Body of a read-ahead thread.
    fn read_ahead_worker(&self) {
        let mut q = lock(&self.queue);
        loop {
            if q.stop {
                return;
            }
            let Some(d) = q.chunks.pop_front() else {
                q = self.wake.wait(q).unwrap_or_else(|p| p.into_inner());
                continue;
            };
            q.busy += 1;
            drop(q);
            self.cache.load_ahead(&d, || {
                self.read_ahead_loads.fetch_add(1, Ordering::Relaxed);
                self.load(&d)
            });
            q = lock(&self.queue);
            q.busy -= 1;
            self.wake.notify_all();
        }
    }
}

/// Random access to the disks of one recovery point. See the module docs.
pub struct PointReader<S: ChunkSource> {
    shared: Arc<Shared<S>>,
    disks: Vec<Disk>,
    /// Read-ahead in chunks per disk (0: off), after the cap.
    read_ahead: Vec<u64>,
    /// Most chunks waiting for the read-ahead threads.
    queue_limit: usize,
    workers: Vec<JoinHandle<()>>,
}

impl<S: ChunkSource> PointReader<S> {
    /// A reader of the point whose disks are `disks` (disk number, its checked index),
    /// reading chunks from `source`.
    pub fn new(source: S, disks: Vec<(u32, DiskIndex)>, opts: ReaderOptions) -> PointReader<S> {
        let cache_quarter = opts.cache.limit() / 4;
        let read_ahead: Vec<u64> = disks
            .iter()
            .map(|(_, ix)| (cache_quarter / ix.chunk_size.max(1) as usize).min(opts.read_ahead))
            .map(|n| n as u64)
            .collect();
        let max_ahead = read_ahead.iter().copied().max().unwrap_or(0) as usize;
        let shared = Arc::new(Shared {
            source,
            cache: opts.cache,
            idle: Mutex::new(Vec::new()),
            queue: Mutex::new(Queue::default()),
            wake: Condvar::new(),
            read_ahead_loads: AtomicU64::new(0),
        });
        let threads = if max_ahead == 0 {
            0
        } else {
            opts.read_ahead_threads
        };
        let mut workers = Vec::new();
        for i in 0..threads {
            let s = shared.clone();
            match std::thread::Builder::new()
                .name(format!("point-read-ahead-{i}"))
                .spawn(move || s.read_ahead_worker())
            {
                Ok(h) => workers.push(h),
                // Fewer threads (or none: no read-ahead) is slower, not wrong.
                Err(e) => tracing::warn!(error = %e, "could not start a read-ahead thread"),
            }
        }
        let disks = disks
            .into_iter()
            .map(|(number, index)| Disk {
                number,
                index,
                stream: Mutex::new(Stream::default()),
            })
            .collect();
        PointReader {
            shared,
            disks,
            read_ahead: if workers.is_empty() {
                Vec::new()
            } else {
                read_ahead
            },
            queue_limit: 2 * max_ahead,
            workers,
        }
    }

    /// The disk numbers of the point.
    pub fn disks(&self) -> impl Iterator<Item = u32> + '_ {
        self.disks.iter().map(|d| d.number)
    }

    /// The size in bytes of disk `disk`, None if the point has no such disk.
    pub fn disk_size(&self, disk: u32) -> Option<u64> {
        self.disk(disk).map(|d| d.index.capacity)
    }

    /// The cache this reader uses.
    pub fn cache(&self) -> &Arc<ChunkCache> {
        &self.shared.cache
    }

    /// Chunks read from the source by read-ahead threads so far.
    pub fn read_ahead_loads(&self) -> u64 {
        self.shared.read_ahead_loads.load(Ordering::Relaxed)
    }

    /// Waits until no read-ahead is queued or running (for tests and benchmarks).
    pub fn wait_read_ahead_idle(&self) {
        let mut q = lock(&self.shared.queue);
        while !q.chunks.is_empty() || q.busy > 0 {
            if self.workers.is_empty() {
                return;
            }
            q = self.shared.wake.wait(q).unwrap_or_else(|p| p.into_inner());
        }
    }

    fn disk(&self, disk: u32) -> Option<&Disk> {
        self.disks.iter().find(|d| d.number == disk)
    }

    /// Reads bytes of disk `disk` from `offset` into `buf`; returns how many: `buf.len()`,
    /// fewer only where the disk ends. Holes read as zeros; a faulty chunk is an error
    /// naming it, its slot and its offset.
    pub fn read_at(&self, disk: u32, offset: u64, buf: &mut [u8]) -> Result<usize, StoreError> {
        let pos = self.disks.iter().position(|d| d.number == disk);
        let Some((i, d)) = pos.map(|i| (i, &self.disks[i])) else {
            return Err(StoreError::Invalid(format!(
                "the recovery point has no disk {disk} (its disks: {})",
                self.disks()
                    .map(|n| n.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        };
        let ix = &d.index;
        let len = ix.capacity.saturating_sub(offset).min(buf.len() as u64) as usize;
        if len == 0 {
            return Ok(0);
        }
        let cs = u64::from(ix.chunk_size);
        self.note_read(i, offset, len as u64);
        let mut done = 0usize;
        while done < len {
            let at = offset + done as u64;
            let slot = at / cs;
            let within = (at % cs) as usize;
            let n = (cs as usize - within).min(len - done);
            let out = &mut buf[done..done + n];
            match ix.digest_at(slot) {
                None => out.fill(0),
                Some(digest) => {
                    let chunk = self
                        .chunk(ix, slot, digest)
                        .map_err(|e| StoreError::AtSlot {
                            slot,
                            offset: slot * cs,
                            source: Box::new(e),
                        })?;
                    out.copy_from_slice(&chunk[within..within + n]);
                }
            }
            done += n;
        }
        Ok(len)
    }

    /// Chunk `digest` of slot `slot`, checked to fill the slot exactly.
    fn chunk(&self, ix: &DiskIndex, slot: u64, digest: &Digest) -> Result<Arc<[u8]>, StoreError> {
        let s = &self.shared;
        let data = s.cache.get_or_load(digest, || s.load(digest))?;
        check_slot_len(digest, data.len(), ix.slot_len(slot), || {
            s.source.location(digest)
        })?;
        Ok(data)
    }

    /// Follows the reads of disk `i`; on a sequential stream, queues the chunks ahead of it.
    fn note_read(&self, i: usize, offset: u64, len: u64) {
        let Some(&ahead) = self.read_ahead.get(i) else {
            return;
        };
        let d = &self.disks[i];
        let cs = u64::from(d.index.chunk_size);
        let end = offset + len;
        let (from, to) = {
            let mut st = lock(&d.stream);
            let forward = offset >= st.start && offset <= st.end.saturating_add(cs);
            st.run = if forward { st.run.saturating_add(1) } else { 0 };
            st.start = offset;
            st.end = end;
            if st.run < SEQUENTIAL_AFTER {
                st.queued_until = 0;
                return;
            }
            let next = (end - 1) / cs + 1;
            let from = next.max(st.queued_until);
            let to = (next + ahead).min(d.index.slot_count());
            st.queued_until = st.queued_until.max(to);
            (from, to)
        };
        if from >= to {
            return;
        }
        let s = &self.shared;
        let mut q = lock(&s.queue);
        for slot in from..to {
            if q.chunks.len() >= self.queue_limit {
                break;
            }
            if let Some(digest) = d.index.digest_at(slot) {
                if !s.cache.contains(digest) {
                    q.chunks.push_back(*digest);
                }
            }
        }
        s.wake.notify_all();
    }
}

impl<S: ChunkSource> Drop for PointReader<S> {
    fn drop(&mut self) {
        lock(&self.shared.queue).stop = true;
        self.shared.wake.notify_all();
        for h in self.workers.drain(..) {
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{compressible, random, Rng};
    use super::super::{digest_hex, restore_disk};
    use super::*;
    use crate::cancel::{CancelToken, Progress};
    use std::fs;

    const CS: usize = 64 * 1024;
    /// 40 full slots and a short last one.
    const CAPACITY: u64 = 40 * CS as u64 + 1000;

    /// A chunk store that counts reads, by whom.
    struct Counting {
        store: Vault,
        demand: AtomicU64,
        ahead: AtomicU64,
    }

    impl Counting {
        fn reads(&self) -> (u64, u64) {
            (
                self.demand.load(Ordering::SeqCst),
                self.ahead.load(Ordering::SeqCst),
            )
        }
    }

    impl ChunkSource for Counting {
        type Reader = ChunkReader;
        fn new_reader(&self) -> Result<ChunkReader, StoreError> {
            self.store.reader()
        }
        fn read_chunk<'r>(
            &self,
            d: &Digest,
            r: &'r mut ChunkReader,
        ) -> Result<&'r [u8], StoreError> {
            let ahead = std::thread::current()
                .name()
                .is_some_and(|n| n.starts_with("point-read-ahead"));
            let n = if ahead { &self.ahead } else { &self.demand };
            n.fetch_add(1, Ordering::SeqCst);
            self.store.read_into(d, r)
        }
        fn location(&self, d: &Digest) -> PathBuf {
            self.store.path_of(d)
        }
    }

    /// A disk of 41 slots: random and text-like chunks, a hole every fifth slot from slot
    /// 3, slot 7 a copy of slot 2, and a short last slot; with its restored image.
    struct Fixture {
        _dir: tempfile::TempDir,
        source: Arc<Counting>,
        index: DiskIndex,
        image: Vec<u8>,
    }

    impl Fixture {
        fn new() -> Fixture {
            let dir = tempfile::tempdir().unwrap();
            let store = Vault::open(&dir.path().join("chunks")).unwrap();
            let mut entries = Vec::new();
            for slot in 0..41u64 {
                if slot % 5 == 3 {
                    continue;
                }
                let data = match slot {
                    40 => compressible(40, 1000),
                    7 => random(2, CS),
                    s if s % 2 == 0 => random(s, CS),
                    s => compressible(s, CS),
                };
                let d = *blake3::hash(&data).as_bytes();
                store.put(&d, &data).unwrap();
                entries.push((slot, d));
            }
            let index = DiskIndex {
                capacity: CAPACITY,
                chunk_size: CS as u32,
                entries,
            };
            let out = dir.path().join("disk.raw");
            let (p, c) = (Progress::default(), CancelToken::new());
            restore_disk(&store, &index, &out, &p, &c, 2).unwrap();
            let image = fs::read(&out).unwrap();
            assert_eq!(image.len() as u64, CAPACITY);
            let source = Arc::new(Counting {
                store,
                demand: AtomicU64::new(0),
                ahead: AtomicU64::new(0),
            });
            Fixture {
                _dir: dir,
                source,
                index,
                image,
            }
        }

        fn reader(&self, opts: ReaderOptions) -> PointReader<Arc<Counting>> {
            PointReader::new(self.source.clone(), vec![(0, self.index.clone())], opts)
        }

        fn digest(&self, slot: u64) -> Digest {
            *self.index.digest_at(slot).unwrap()
        }

        fn chunk_file(&self, slot: u64) -> PathBuf {
            self.source.store.path_of(&self.digest(slot))
        }

        /// Asserts that reading `len` bytes at `offset` gives the image's bytes.
        fn check(&self, r: &PointReader<Arc<Counting>>, offset: u64, len: usize) {
            let mut buf = vec![0xa5u8; len];
            let n = r.read_at(0, offset, &mut buf).unwrap();
            let end = offset.saturating_add(len as u64).min(CAPACITY);
            let want = end.saturating_sub(offset) as usize;
            assert_eq!(n, want, "length of the read of {len} bytes at {offset}");
            if want > 0 {
                assert!(
                    buf[..n] == self.image[offset as usize..end as usize],
                    "bytes of the read of {len} bytes at {offset}"
                );
            }
        }
    }

    fn no_read_ahead() -> ReaderOptions {
        ReaderOptions {
            read_ahead: 0,
            ..ReaderOptions::default()
        }
    }

    #[test]
    fn reads_equal_the_restored_image() {
        let fx = Fixture::new();
        let r = fx.reader(ReaderOptions::default());
        let cs = CS as u64;
        let cases = [
            (0, 4096),
            (cs - 10, 20),              // across a chunk boundary
            (2 * cs + 5, 3 * CS),       // across holes and chunks
            (3 * cs + 100, 4096),       // inside a hole
            (40 * cs, 1000),            // the short last slot
            (40 * cs + 990, 4096),      // past the end: short
            (CAPACITY - 1, 1),          // the last byte
            (CAPACITY, 4096),           // at the end: nothing
            (CAPACITY + 12345, 10),     // beyond: nothing
            (u64::MAX - 3, 10),         // far beyond: nothing, no overflow
            (17, 0),                    // empty buffer
            (0, CAPACITY as usize + 7), // the whole disk at once
        ];
        for (offset, len) in cases {
            fx.check(&r, offset, len);
        }
        let mut rng = Rng::new(7);
        for _ in 0..500 {
            let offset = rng.next() % (CAPACITY + 2000);
            let len = match rng.next() % 4 {
                0 => 4096,
                1 => (rng.next() % 512) as usize,
                _ => (rng.next() % (3 * CS as u64)) as usize,
            };
            fx.check(&r, offset, len);
        }
        assert_eq!(r.disk_size(0), Some(CAPACITY));
        assert_eq!(r.disk_size(1), None);
        assert_eq!(r.disks().collect::<Vec<_>>(), vec![0]);
    }

    #[test]
    fn holes_are_zeros_without_reading() {
        let fx = Fixture::new();
        let r = fx.reader(no_read_ahead());
        let cs = CS as u64;
        for hole in [3u64, 8, 13, 38] {
            let mut buf = vec![1u8; CS];
            assert_eq!(r.read_at(0, hole * cs, &mut buf).unwrap(), CS);
            assert!(buf.iter().all(|b| *b == 0), "slot {hole}");
        }
        assert_eq!(fx.source.reads(), (0, 0));
        // A chunk read twice is read from the store once.
        fx.check(&r, 2 * cs, 100);
        fx.check(&r, 2 * cs + 4096, 100);
        assert_eq!(fx.source.reads(), (1, 0));
        // Slot 7 holds the same chunk as slot 2: cached by digest.
        fx.check(&r, 7 * cs, CS);
        assert_eq!(fx.source.reads(), (1, 0));
    }

    #[test]
    fn threads_read_at_once() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<PointReader<Vault>>();
        send_sync::<PointReader<Arc<Counting>>>();
        let fx = Fixture::new();
        // A cache of 8 chunks: threads race for loads and evictions.
        let r = fx.reader(ReaderOptions {
            cache: Arc::new(ChunkCache::new(8 * CS)),
            ..ReaderOptions::default()
        });
        std::thread::scope(|s| {
            for t in 0..4u64 {
                let (fx, r) = (&fx, &r);
                s.spawn(move || {
                    let mut rng = Rng::new(100 + t);
                    for i in 0..300 {
                        if t == 0 {
                            // One sequential stream among the random readers.
                            fx.check(r, (i * 8192) % CAPACITY, 8192);
                        } else {
                            let offset = rng.next() % CAPACITY;
                            fx.check(r, offset, (rng.next() % (2 * CS as u64)) as usize);
                        }
                    }
                });
            }
        });
        let st = r.cache().stats();
        assert!(st.peak_bytes <= 8 * CS, "{st:?}");
    }

    #[test]
    fn a_damaged_or_missing_chunk_is_an_error_and_never_cached() {
        let fx = Fixture::new();
        let r = fx.reader(ReaderOptions::default());
        let cs = CS as u64;
        let (bad, d) = (5u64, fx.digest(5));
        let path = fx.chunk_file(bad);
        let good = fs::read(&path).unwrap();
        let mut damaged = good.clone();
        let mid = damaged.len() / 2;
        damaged[mid] ^= 0x10;
        fs::write(&path, &damaged).unwrap();
        // Read directly, and reached by a sequential stream whose read-ahead (queued by its
        // second read, waited for after each) went over it first.
        for (offset, len) in [(bad * cs + 10, 2 * CS), (0, 16384)] {
            let mut buf = vec![0u8; len];
            let mut at = offset;
            let e = loop {
                match r.read_at(0, at, &mut buf) {
                    Ok(n) => at += n as u64,
                    Err(e) => break e,
                }
                r.wait_read_ahead_idle();
            };
            assert!(matches!(&e, StoreError::AtSlot { slot: 5, .. }), "{e}");
            assert_eq!(e.faulty_chunk(), Some(d));
            let msg = e.to_string();
            assert!(
                msg.contains(&digest_hex(&d)) && msg.contains("corrupt"),
                "{msg}"
            );
            assert!(msg.contains(&format!("offset {}", bad * cs)), "{msg}");
            assert!(!r.cache().contains(&d));
        }
        assert!(fx.source.reads().1 > 0, "read-ahead went over the damage");
        // Repaired: read again, not an error remembered.
        fs::write(&path, &good).unwrap();
        fx.check(&r, bad * cs, CS);
        assert!(r.cache().contains(&d));

        // Missing: typed, naming the chunk; a cached chunk is still served after its file
        // went (it was checked when read).
        let r2 = fx.reader(no_read_ahead());
        let (gone, dg) = (11u64, fx.digest(11));
        fs::remove_file(fx.chunk_file(gone)).unwrap();
        let e = r2.read_at(0, gone * cs, &mut [0u8; 10]).unwrap_err();
        let StoreError::AtSlot { source, .. } = &e else {
            panic!("{e}")
        };
        assert!(matches!(**source, StoreError::ChunkMissing { digest, .. } if digest == dg));
        assert!(!r2.cache().contains(&dg));
        fs::remove_file(&path).unwrap();
        fx.check(&r, bad * cs, CS);
    }

    #[test]
    fn a_chunk_of_the_wrong_length_is_refused() {
        let fx = Fixture::new();
        let mut index = fx.index.clone();
        // The short last chunk where a full slot is.
        let short = fx.digest(40);
        index.entries[0].1 = short;
        let r = PointReader::new(fx.source.clone(), vec![(3, index)], no_read_ahead());
        let e = r.read_at(3, 0, &mut [0u8; 10]).unwrap_err();
        assert_eq!(e.faulty_chunk(), Some(short));
        assert!(e.to_string().contains("slot is 65536 bytes"), "{e}");
        let e = r.read_at(0, 0, &mut [0u8; 10]).unwrap_err();
        assert!(matches!(e, StoreError::Invalid(_)), "{e}");
        assert!(e.to_string().contains("no disk 0 (its disks: 3)"), "{e}");
    }

    #[test]
    fn the_cache_stays_within_its_bound() {
        let fx = Fixture::new();
        // Three and a half chunks.
        let limit = 7 * CS / 2;
        let cache = Arc::new(ChunkCache::new(limit));
        let r = fx.reader(ReaderOptions {
            cache: cache.clone(),
            ..ReaderOptions::default()
        });
        let cs = CS as u64;
        for pass in 0..2 {
            for slot in 0..41u64 {
                fx.check(&r, slot * cs + pass * 100, 4096);
                let st = cache.stats();
                // Three full chunks, or two and the short last one.
                assert!(st.bytes <= limit && st.entries <= 4, "{st:?}");
            }
        }
        let st = cache.stats();
        assert!(st.peak_bytes <= limit && st.peak_bytes >= 3 * CS, "{st:?}");
        assert!(st.evictions > 0, "{st:?}");
        // A chunk larger than the whole cache is served, not kept.
        let tiny = ChunkCache::new(CS - 1);
        let r = fx.reader(ReaderOptions {
            cache: Arc::new(tiny),
            ..no_read_ahead()
        });
        fx.check(&r, 0, CS);
        assert_eq!(r.cache().stats().bytes, 0);
    }

    #[test]
    fn clock_evicts_what_was_not_used_again() {
        let c = ChunkCache::new(300);
        let chunk = |b: u8| -> Arc<[u8]> { Arc::from(vec![b; 100]) };
        for b in 1..=3 {
            c.insert([b; 32], chunk(b));
        }
        assert!(c.get(&[1; 32]).is_some());
        c.insert([4; 32], chunk(4));
        // 1 was used since it came in; 2 was not.
        assert!(c.contains(&[1; 32]) && !c.contains(&[2; 32]));
        assert!(c.contains(&[3; 32]) && c.contains(&[4; 32]));
        let st = c.stats();
        assert_eq!((st.bytes, st.entries, st.evictions), (300, 3, 1));
        assert_eq!(&c.get(&[4; 32]).unwrap()[..], &[4; 100][..]);
    }

    #[test]
    fn a_sequential_scan_is_read_ahead_random_reads_are_not() {
        let fx = Fixture::new();
        let cs = CS as u64;
        let opts = || ReaderOptions {
            read_ahead: 4,
            read_ahead_threads: 1,
            ..ReaderOptions::default()
        };
        // Random: backwards, and forward in jumps of more than a chunk.
        let r = fx.reader(opts());
        for slot in (0..41u64).rev().chain((0..41).step_by(3)) {
            fx.check(&r, slot * cs + 512, 4096);
        }
        r.wait_read_ahead_idle();
        assert_eq!(r.read_ahead_loads(), 0);
        assert_eq!(fx.source.reads().1, 0);
        drop(r);

        // Sequential, 16 KiB at a time: after two reads, the next 4 slots are loaded ahead.
        let before = fx.source.reads();
        let r = fx.reader(opts());
        fx.check(&r, 0, 16384);
        fx.check(&r, 16384, 16384);
        r.wait_read_ahead_idle();
        assert_eq!(
            fx.source.reads().0 - before.0,
            1,
            "only slot 0 read on demand"
        );
        for slot in 1..5u64 {
            // Slot 3 is a hole; the others were loaded ahead.
            if let Some(d) = fx.index.digest_at(slot) {
                assert!(r.cache().contains(d), "slot {slot} loaded ahead");
            }
        }
        for at in (32768..CAPACITY).step_by(16384) {
            fx.check(&r, at, 16384);
        }
        r.wait_read_ahead_idle();
        let (demand, ahead) = fx.source.reads();
        let (demand, ahead) = (demand - before.0, ahead - before.1);
        assert!(ahead >= 3, "read ahead: {ahead}, on demand: {demand}");
        assert_eq!(ahead, r.read_ahead_loads());
        // Each distinct chunk read once (slot 7 repeats slot 2).
        let distinct = fx.index.unique_digests().len() as u64;
        assert_eq!(demand + ahead, distinct);
    }
}
