//! Backup of one disk: the bounded parallel pipeline that turns a [`DiskReader`] into chunks
//! and a [`DiskIndex`].
//!
//! Shape: the calling thread plans slots (merging allocated extents, changed extents and the
//! previous index, in one pass, never materialising a per-slot list) and sends the slots to
//! read through a bounded channel to `threads` workers. Each worker owns its buffers and
//! runs a slot end to end: read the allocated parts (holes are zero-filled, never read) →
//! zero check → BLAKE3 → dedup (previous slot, this run, the registry) → compress (skipped
//! cheaply when samples show incompressible data) → write through a temp file. Workers
//! report only `(slot, digest)`, so memory is the workers' buffers plus the index itself.
//!
//! Dedup and pins: every digest the new index references is pinned before anything relies
//! on it (see the module docs of `store` for the garbage collection protocol). A digest
//! equal to the previous index's digest of the same slot, or taken from it unread through
//! changed-block tracking, is trusted without asking the registry: `previous` must be a
//! committed recovery point that stays committed while this backup runs (the newest point
//! of an item is never pruned).

use super::chunks::ChunkEncoder;
use super::{
    slot_count, slot_len, validate_chunk_size, Digest, DiskIndex, StoreError, Vault, BUFFER_BUDGET,
};
use crate::cancel::{CancelToken, Progress};
use crate::disk::{DiskReader, ProviderError};
use crate::model::Extent;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// The catalog's set of durable, committed chunks.
pub trait ChunkRegistry: Sync {
    fn is_committed(&self, d: &Digest) -> Result<bool, StoreError>;
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A poisoned lock only means another thread panicked; the data (sets and lists) is
    // still consistent for our purposes.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Digests that running backups rely on; garbage collection must not delete them. Cheap to
/// clone (shared).
#[derive(Debug, Clone, Default)]
pub struct PinSet {
    counts: Arc<Mutex<HashMap<Digest, u32>>>,
}

impl PinSet {
    pub fn new() -> PinSet {
        PinSet::default()
    }

    /// A guard that pins digests for one backup and unpins them all when dropped.
    pub fn guard(&self) -> PinGuard {
        PinGuard {
            set: self.clone(),
            mine: Mutex::new(HashSet::new()),
        }
    }

    pub fn is_pinned(&self, d: &Digest) -> bool {
        lock(&self.counts).contains_key(d)
    }

    /// Number of distinct pinned digests.
    pub fn len(&self) -> usize {
        lock(&self.counts).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Runs `delete` (remove the catalog row, then the file) while holding the pin lock,
    /// unless `d` is pinned; returns None when pinned. Garbage collection deletes chunks
    /// only through this, so a backup either pins first (the chunk is kept) or finds the
    /// chunk no longer committed (and writes it itself).
    pub fn remove_if_unpinned<R>(&self, d: &Digest, delete: impl FnOnce() -> R) -> Option<R> {
        let counts = lock(&self.counts);
        if counts.contains_key(d) {
            None
        } else {
            let r = delete();
            drop(counts);
            Some(r)
        }
    }

    /// Like [`PinSet::remove_if_unpinned`] for many chunks at once: holds the pin lock,
    /// keeps only the unpinned digests of `ds`, and runs `delete` on them (one catalog
    /// transaction for the batch instead of one per chunk).
    pub fn remove_unpinned<R>(&self, ds: &[Digest], delete: impl FnOnce(&[Digest]) -> R) -> R {
        let counts = lock(&self.counts);
        let free: Vec<Digest> = ds
            .iter()
            .filter(|d| !counts.contains_key(*d))
            .copied()
            .collect();
        let r = delete(&free);
        drop(counts);
        r
    }
}

/// Pins held by one backup; dropping it unpins them. Keep it until the recovery point is
/// committed in the catalog.
#[derive(Debug)]
pub struct PinGuard {
    set: PinSet,
    mine: Mutex<HashSet<Digest>>,
}

impl PinGuard {
    /// Pins `d` (once per guard, however often it is called).
    pub fn pin(&self, d: &Digest) {
        if lock(&self.mine).insert(*d) {
            *lock(&self.set.counts).entry(*d).or_insert(0) += 1;
        }
    }

    /// Number of digests this guard pins.
    pub fn len(&self) -> usize {
        lock(&self.mine).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Drop for PinGuard {
    fn drop(&mut self) {
        let mine = std::mem::take(&mut *lock(&self.mine));
        let mut counts = lock(&self.set.counts);
        for d in mine {
            if let Some(c) = counts.get_mut(&d) {
                *c -= 1;
                if *c == 0 {
                    counts.remove(&d);
                }
            }
        }
    }
}

/// What [`backup_disk`] needs.
pub struct BackupParams<'a> {
    pub reader: &'a dyn DiskReader,
    /// The item's previous recovery point of this disk (committed, kept during the run).
    pub previous: Option<&'a DiskIndex>,
    /// Extents changed since `previous` (changed-block tracking); None = unknown, read
    /// every allocated extent. Ignored without a `previous` of the same capacity and chunk
    /// size.
    pub changed: Option<Vec<Extent>>,
    pub chunk_size: u32,
    pub store: &'a Vault,
    pub registry: &'a dyn ChunkRegistry,
    pub pins: &'a PinSet,
    /// Gets the bytes read from the disk added as they are read (nothing else is set).
    pub progress: &'a Progress,
    pub cancel: &'a CancelToken,
    /// Cores to use (at least 1); the pipeline runs one more worker than this (see
    /// `backup_workers`), capped so buffers stay within [`BUFFER_BUDGET`].
    pub threads: usize,
    /// zstd level (1 fastest; 3 zstd's default).
    pub compression_level: i32,
    /// Sync the store before returning. Without it the caller makes the new chunks
    /// durable ([`Vault::sync`]) before a point relies on them (one sync for several
    /// disks and backups).
    pub sync: bool,
}

/// A chunk this backup wrote (the catalog records it as committed with the point).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NewChunk {
    pub digest: Digest,
    /// Bytes in the chunk file (header included).
    pub stored_len: u64,
    pub raw_len: u64,
}

/// How the pipeline ran (for tests and benchmarks).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PipelineStats {
    pub workers: usize,
    /// Capacity of the bounded slot queue.
    pub queue_capacity: usize,
    /// Most bytes of chunk buffers alive at once.
    pub peak_buffer_bytes: usize,
    /// Time spent in the final [`Vault::sync`] (it also waits for other writers'
    /// dirty data on the same file system).
    pub sync_time: std::time::Duration,
}

/// The result of backing up one disk. Every chunk it references is durable (the store was
/// synced; with `sync: false`, once the caller synced it), so the catalog may commit the
/// recovery point; keep `pinned` until then.
#[derive(Debug)]
pub struct DiskBackup {
    pub index: DiskIndex,
    /// Bytes of the non-hole slots (the point's logical size for this disk).
    pub logical_bytes: u64,
    /// Bytes read from the disk.
    pub bytes_read: u64,
    /// Slots taken from the previous index unread (changed-block tracking).
    pub reused_slots: u64,
    pub new_chunks: Vec<NewChunk>,
    /// Sum of `new_chunks[..].stored_len`.
    pub stored_bytes: u64,
    pub pinned: PinGuard,
    pub stats: PipelineStats,
}

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("cancelled")]
    Cancelled,
    #[error("{0}")]
    Source(ProviderError),
    #[error("{0}")]
    Store(#[from] StoreError),
}

impl From<ProviderError> for BackupError {
    fn from(e: ProviderError) -> Self {
        match e {
            ProviderError::Cancelled => BackupError::Cancelled,
            e => BackupError::Source(e),
        }
    }
}

/// Removes chunks a backup wrote that no recovery point holds, once the backup failed or
/// was cancelled (and dropped its pins): a chunk another backup pins, or that the catalog
/// has committed since, stays. Best effort (what is not removed is garbage collection's);
/// returns how many were removed.
pub fn discard_uncommitted(
    store: &Vault,
    registry: &dyn ChunkRegistry,
    pins: &PinSet,
    chunks: &[Digest],
) -> usize {
    chunks
        .iter()
        .filter(|d| {
            pins.remove_if_unpinned(d, || {
                matches!(registry.is_committed(d), Ok(false)) && store.remove(d).is_ok()
            }) == Some(true)
        })
        .count()
}

/// Number of workers for `wanted` workers and chunk size `cs` (each holds
/// `buffers_per_worker` chunk buffers), capped so buffers stay within [`BUFFER_BUDGET`].
pub(crate) fn worker_count(wanted: usize, cs: u32, buffers_per_worker: usize) -> usize {
    let per_worker = buffers_per_worker * cs as usize;
    wanted.max(1).min((BUFFER_BUDGET / per_worker).max(1))
}

/// Workers of a backup on `threads` cores: one spare, so that while a worker waits for
/// its chunk write (O_DIRECT writes are synchronous) or for a read, its core has another
/// worker to run. Backup is otherwise CPU-bound (compression, hashing).
pub(crate) fn backup_workers(threads: usize, cs: u32) -> usize {
    worker_count(threads.max(1) + 1, cs, 2)
}

/// Workers of a restore or verify on `threads` cores: two per core, because these wait
/// for the disk (chunk reads, image writes) about as long as they compute, and more
/// requests in flight keep both the cores and the disk busy.
pub(crate) fn io_workers(threads: usize, cs: u32) -> usize {
    worker_count(2 * threads.max(1), cs, 2)
}

/// Backs up one disk. See the module docs for the pipeline, and [`BackupParams`].
pub fn backup_disk(p: BackupParams) -> Result<DiskBackup, BackupError> {
    validate_chunk_size(p.chunk_size)?;
    p.cancel.check().map_err(|_| BackupError::Cancelled)?;
    let capacity = p.reader.capacity();
    let cs = p.chunk_size;
    let allocated = normalize(p.reader.allocated_extents()?, capacity);
    // Changed-block tracking only makes sense against a previous index of the same layout.
    let reuse_from = match (&p.changed, p.previous) {
        (Some(_), Some(prev)) if prev.chunk_size == cs && prev.capacity == capacity => Some(prev),
        _ => None,
    };
    let mut changed = ChangedCursor {
        ext: normalize(p.changed.clone().unwrap_or_default(), capacity),
        i: 0,
    };

    let workers = backup_workers(p.threads, cs);
    let queue_capacity = workers * 2;
    let pins = p.pins.guard();
    let shared = Shared {
        p: &p,
        pins: &pins,
        stop: AtomicBool::new(false),
        error: Mutex::new(None),
        entries: Mutex::new(Vec::new()),
        new_chunks: Mutex::new(Vec::new()),
        claimed: Mutex::new(HashSet::new()),
        bytes_read: AtomicU64::new(0),
        live_buffers: AtomicUsize::new(0),
        peak_buffers: AtomicUsize::new(0),
    };
    let mut reused_slots = 0u64;

    std::thread::scope(|s| {
        let (tx, rx) = crossbeam_channel::bounded::<Job>(queue_capacity);
        // Workers start with the first slot to read: a backup with nothing to read (an
        // unchanged disk under changed-block tracking) starts no thread.
        let mut rx = Some(rx);
        let mut start_workers = || {
            let Some(rx) = rx.take() else { return };
            for i in 0..workers {
                let rx = rx.clone();
                let shared = &shared;
                let spawned = std::thread::Builder::new()
                    .name(format!("backup-{i}"))
                    .spawn_scoped(s, move || shared.worker(rx));
                if let Err(e) = spawned {
                    shared.fail(StoreError::io("starting a backup worker thread", e).into());
                }
            }
        };

        let mut prev_cursor = 0usize;
        for (slot, reads) in (SlotPlanner {
            alloc: &allocated,
            ai: 0,
            pos: 0,
            cs: u64::from(cs),
            capacity,
        }) {
            if shared.stop.load(Ordering::SeqCst) {
                break;
            }
            if p.cancel.is_cancelled() {
                shared.fail(BackupError::Cancelled);
                break;
            }
            if let Some(prev) = reuse_from {
                let s0 = slot * u64::from(cs);
                let s1 = s0 + slot_len(capacity, cs, slot);
                if !changed.touches(s0, s1) {
                    // Unchanged since the previous point: its digest (or hole) stands.
                    let e = &prev.entries;
                    while prev_cursor < e.len() && e[prev_cursor].0 < slot {
                        prev_cursor += 1;
                    }
                    if prev_cursor < e.len() && e[prev_cursor].0 == slot {
                        let d = e[prev_cursor].1;
                        pins.pin(&d);
                        lock(&shared.entries).push((slot, d));
                    }
                    reused_slots += 1;
                    continue;
                }
            }
            start_workers();
            if tx.send(Job { slot, reads }).is_err() {
                break; // every worker has stopped; the error is recorded
            }
        }
    });

    let failed = lock(&shared.error).take();
    if let Some(e) = failed {
        // The chunks written so far are no point's: they go now (a backup that failed for
        // space gives the space back at once, not at the next garbage collection).
        let written: Vec<Digest> = lock(&shared.new_chunks).iter().map(|c| c.digest).collect();
        drop(shared);
        drop(pins);
        discard_uncommitted(p.store, p.registry, p.pins, &written);
        return Err(e);
    }
    let mut entries = std::mem::take(&mut *lock(&shared.entries));
    entries.sort_unstable_by_key(|(s, _)| *s);
    let new_chunks = std::mem::take(&mut *lock(&shared.new_chunks));
    let bytes_read = shared.bytes_read.load(Ordering::SeqCst);
    let peak_buffer_bytes = shared.peak_buffers.load(Ordering::SeqCst);
    drop(shared);
    let sync_started = std::time::Instant::now();
    if p.sync && !new_chunks.is_empty() {
        p.store.sync()?;
    }
    let sync_time = sync_started.elapsed();
    let index = DiskIndex {
        capacity,
        chunk_size: cs,
        entries,
    };
    debug_assert!(index.validate().is_ok());
    debug_assert!(index.entries.len() as u64 <= slot_count(capacity, cs));
    Ok(DiskBackup {
        logical_bytes: index.logical_bytes(),
        bytes_read,
        reused_slots,
        stored_bytes: new_chunks.iter().map(|c| c.stored_len).sum(),
        new_chunks,
        index,
        pinned: pins,
        stats: PipelineStats {
            workers,
            queue_capacity,
            peak_buffer_bytes,
            sync_time,
        },
    })
}

/// The bytes [`backup_disk`] reads of a disk of `capacity` with `allocated` extents, in
/// slots of `chunk_size`: every allocated byte or, with `changed` extents (changed-block
/// tracking against a previous index of the same layout), the allocated bytes of each slot
/// a changed extent touches (such a slot is read whole). It plans with the backup's own
/// planner, so a job's total is exactly what its progress will count.
pub fn planned_read_bytes(
    allocated: Vec<Extent>,
    changed: Option<Vec<Extent>>,
    capacity: u64,
    chunk_size: u32,
) -> u64 {
    let alloc = normalize(allocated, capacity);
    let Some(changed) = changed else {
        return alloc.iter().map(|e| e.len).sum();
    };
    let mut changed = ChangedCursor {
        ext: normalize(changed, capacity),
        i: 0,
    };
    let cs = u64::from(chunk_size.max(1));
    SlotPlanner {
        alloc: &alloc,
        ai: 0,
        pos: 0,
        cs,
        capacity,
    }
    .filter(|(slot, _)| changed.touches(slot * cs, (slot * cs + cs).min(capacity)))
    .map(|(_, reads)| reads.iter().map(|e| e.len).sum::<u64>())
    .sum()
}

/// One slot to read: its allocated parts, absolute disk ranges inside the slot.
struct Job {
    slot: u64,
    reads: Vec<Extent>,
}

struct Shared<'a, 'p> {
    p: &'a BackupParams<'p>,
    pins: &'a PinGuard,
    stop: AtomicBool,
    error: Mutex<Option<BackupError>>,
    entries: Mutex<Vec<(u64, Digest)>>,
    new_chunks: Mutex<Vec<NewChunk>>,
    /// Digests handled in this run (written, or found committed): each is written once.
    claimed: Mutex<HashSet<Digest>>,
    bytes_read: AtomicU64,
    live_buffers: AtomicUsize,
    peak_buffers: AtomicUsize,
}

impl Shared<'_, '_> {
    /// Records the first error and stops the pipeline.
    fn fail(&self, e: BackupError) {
        let mut slot = lock(&self.error);
        if slot.is_none() {
            *slot = Some(e);
        }
        self.stop.store(true, Ordering::SeqCst);
    }

    fn account(&self, bytes: usize) {
        let now = self.live_buffers.fetch_add(bytes, Ordering::SeqCst) + bytes;
        self.peak_buffers.fetch_max(now, Ordering::SeqCst);
    }

    fn worker(&self, rx: crossbeam_channel::Receiver<Job>) {
        let cs = self.p.chunk_size as usize;
        // Buffers and the zstd context are made on the first slot: a worker that gets no
        // slot (a backup with fewer slots to read than workers, as most of `sim advance`'s
        // thousands of small incremental backups are) costs no allocation.
        let mut bufs: Option<(Vec<u8>, ChunkEncoder)> = None;
        let mut held = 0;
        while let Ok(job) = rx.recv() {
            if self.stop.load(Ordering::SeqCst) {
                break;
            }
            if self.p.cancel.is_cancelled() {
                self.fail(BackupError::Cancelled);
                break;
            }
            if bufs.is_none() {
                let mut enc = match self.p.store.encoder(self.p.compression_level) {
                    Ok(e) => e,
                    Err(e) => {
                        self.fail(e.into());
                        break;
                    }
                };
                enc.reserve(cs);
                let raw = vec![0u8; cs];
                held = raw.capacity() + enc.buffer_capacity();
                self.account(held);
                bufs = Some((raw, enc));
            }
            let Some((raw, enc)) = bufs.as_mut() else {
                break;
            };
            if let Err(e) = self.process(job, raw, enc) {
                self.fail(e);
                break;
            }
        }
        self.live_buffers.fetch_sub(held, Ordering::SeqCst);
    }

    fn process(&self, job: Job, raw: &mut [u8], enc: &mut ChunkEncoder) -> Result<(), BackupError> {
        let p = self.p;
        let capacity = p.reader.capacity();
        let s0 = job.slot * u64::from(p.chunk_size);
        let len = slot_len(capacity, p.chunk_size, job.slot) as usize;
        if self.unchanged_in_place(&job, s0, len) {
            return Ok(());
        }
        let buf = &mut raw[..len];
        // Read the allocated parts; the gaps between them are holes, hence zeros.
        let mut at = 0usize;
        let mut read = 0u64;
        for e in &job.reads {
            let a = (e.offset - s0) as usize;
            let b = (e.end() - s0) as usize;
            buf[at..a].fill(0);
            p.reader.read_at(e.offset, &mut buf[a..b])?;
            read += e.len;
            at = b;
        }
        buf[at..].fill(0);
        p.progress.add_done(read);
        self.bytes_read.fetch_add(read, Ordering::Relaxed);

        if super::is_zero(buf) {
            return Ok(()); // a hole: never stored
        }
        let d: Digest = p.store.name_of(buf);
        // Pin before relying on the chunk being in the store.
        self.pins.pin(&d);
        let same_as_previous = p.previous.and_then(|prev| prev.digest_at(job.slot)) == Some(&d);
        if !same_as_previous && lock(&self.claimed).insert(d) && !p.registry.is_committed(&d)? {
            let stored_len = p.store.put_with(&d, buf, enc)?;
            lock(&self.new_chunks).push(NewChunk {
                digest: d,
                stored_len,
                raw_len: len as u64,
            });
        }
        lock(&self.entries).push((job.slot, d));
        Ok(())
    }
}

impl Shared<'_, '_> {
    /// Whether slot `job` still holds what the previous point stored for it, checked on a
    /// view of the disk's bytes (no copy: see `DiskReader::view_at`); if so, records the
    /// slot and returns true. Only a slot allocated from end to end, with a previous
    /// digest, whose reader offers views, is checked so. A slot that changed is read into
    /// the worker's buffer afterwards, and its digest is computed from that copy: what is
    /// stored always matches its name, even if the disk changes meanwhile.
    fn unchanged_in_place(&self, job: &Job, s0: u64, len: usize) -> bool {
        let p = self.p;
        let Some(previous) = p.previous.and_then(|prev| prev.digest_at(job.slot)) else {
            return false;
        };
        let whole_slot = matches!(job.reads[..], [e] if e.offset == s0 && e.len == len as u64);
        if !whole_slot {
            return false;
        }
        let Some(view) = p.reader.view_at(s0, len) else {
            return false;
        };
        // A view whose file shrank under it shows zeros that are not the disk's: the slot
        // is read instead, and the read reports what happened.
        if &p.store.name_of(&view) != previous || !view.intact() {
            return false;
        }
        drop(view);
        // The previous point is committed and kept while this backup runs: its chunk
        // needs no registry query, only a pin.
        self.pins.pin(previous);
        lock(&self.entries).push((job.slot, *previous));
        p.progress.add_done(len as u64);
        self.bytes_read.fetch_add(len as u64, Ordering::Relaxed);
        true
    }
}

/// Sorts, clips to the capacity, drops empty ranges and merges overlapping or adjacent
/// ones, so the planner can rely on a clean list whatever the provider returned.
fn normalize(mut v: Vec<Extent>, capacity: u64) -> Vec<Extent> {
    v.retain(|e| e.len > 0 && e.offset < capacity);
    v.sort_unstable_by_key(|e| e.offset);
    let mut out: Vec<Extent> = Vec::with_capacity(v.len());
    for e in v {
        let end = e.offset.saturating_add(e.len).min(capacity);
        match out.last_mut() {
            Some(last) if e.offset <= last.end() => {
                last.len = last.len.max(end - last.offset);
            }
            _ => out.push(Extent::new(e.offset, end - e.offset)),
        }
    }
    out
}

/// Walks the slots that touch allocated extents, in order, with the allocated parts of
/// each. Slots touching nothing allocated are holes and never produced.
struct SlotPlanner<'a> {
    alloc: &'a [Extent],
    ai: usize,
    /// Next disk offset not yet planned.
    pos: u64,
    cs: u64,
    capacity: u64,
}

impl Iterator for SlotPlanner<'_> {
    type Item = (u64, Vec<Extent>);

    fn next(&mut self) -> Option<Self::Item> {
        while self.ai < self.alloc.len() && self.alloc[self.ai].end() <= self.pos {
            self.ai += 1;
        }
        let first = self.alloc.get(self.ai)?;
        let slot = first.offset.max(self.pos) / self.cs;
        let s0 = slot * self.cs;
        let s1 = (s0 + self.cs).min(self.capacity);
        let mut reads = Vec::new();
        let mut j = self.ai;
        while let Some(e) = self.alloc.get(j) {
            if e.offset >= s1 {
                break;
            }
            let a = e.offset.max(s0);
            let b = e.end().min(s1);
            if a < b {
                reads.push(Extent::new(a, b - a));
            }
            if e.end() > s1 {
                break; // continues into the next slot
            }
            j += 1;
        }
        self.ai = j;
        self.pos = s1;
        Some((slot, reads))
    }
}

/// Answers "does any changed extent touch [s0, s1)?" for increasing ranges.
struct ChangedCursor {
    ext: Vec<Extent>,
    i: usize,
}

impl ChangedCursor {
    fn touches(&mut self, s0: u64, s1: u64) -> bool {
        while self.i < self.ext.len() && self.ext[self.i].end() <= s0 {
            self.i += 1;
        }
        self.i < self.ext.len() && self.ext[self.i].offset < s1
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{compressible, random, Counting, MemDisk};
    use super::super::{restore_disk, verify_chunks};
    use super::*;
    use std::path::Path;

    const MIB: u64 = 1 << 20;

    /// A registry backed by a set (what the catalog would hold).
    #[derive(Default)]
    struct SetRegistry {
        committed: Mutex<HashSet<Digest>>,
        queries: AtomicU64,
    }

    impl ChunkRegistry for SetRegistry {
        fn is_committed(&self, d: &Digest) -> Result<bool, StoreError> {
            self.queries.fetch_add(1, Ordering::SeqCst);
            Ok(lock(&self.committed).contains(d))
        }
    }

    impl SetRegistry {
        fn commit(&self, b: &DiskBackup) {
            let mut c = lock(&self.committed);
            for n in &b.new_chunks {
                c.insert(n.digest);
            }
        }
    }

    struct Env {
        _t: tempfile::TempDir,
        root: std::path::PathBuf,
        store: Vault,
        reg: SetRegistry,
        pins: PinSet,
        progress: Progress,
        cancel: CancelToken,
    }

    fn env() -> Env {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().to_path_buf();
        Env {
            store: Vault::open(&root.join("chunks")).unwrap(),
            _t: t,
            root,
            reg: SetRegistry::default(),
            pins: PinSet::new(),
            progress: Progress::default(),
            cancel: CancelToken::new(),
        }
    }

    impl Env {
        fn params<'a>(
            &'a self,
            reader: &'a dyn DiskReader,
            previous: Option<&'a DiskIndex>,
            changed: Option<Vec<Extent>>,
            cs: u32,
        ) -> BackupParams<'a> {
            BackupParams {
                reader,
                previous,
                changed,
                chunk_size: cs,
                store: &self.store,
                registry: &self.reg,
                pins: &self.pins,
                progress: &self.progress,
                cancel: &self.cancel,
                threads: 2,
                compression_level: 1,
                sync: true,
            }
        }

        fn backup(&self, reader: &dyn DiskReader, cs: u32) -> DiskBackup {
            let b = backup_disk(self.params(reader, None, None, cs)).unwrap();
            self.reg.commit(&b);
            b
        }

        fn restore(&self, index: &DiskIndex, name: &str) -> Vec<u8> {
            let out = self.root.join(name);
            restore_disk(
                &self.store,
                index,
                &out,
                &Progress::default(),
                &self.cancel,
                2,
            )
            .unwrap();
            std::fs::read(out).unwrap()
        }

        fn chunk_files(&self) -> usize {
            self.store.list().count()
        }
    }

    /// 9.5 slots of 1 MiB: random, compressible, zeros written as data, a hole, a slot
    /// only partly allocated, a repeated chunk and a short last slot.
    fn mixed_disk() -> MemDisk {
        let cap = 9 * MIB + MIB / 2;
        let mut zeros_and_text = vec![0u8; MIB as usize];
        zeros_and_text[300_000..400_000].copy_from_slice(&compressible(3, 100_000));
        MemDisk::new(cap)
            .with(0, random(1, MIB as usize))
            .with(MIB, compressible(2, MIB as usize))
            .with(2 * MIB, vec![0u8; MIB as usize]) // allocated but zero: a hole
            // slot 3 unallocated
            .with(4 * MIB + 4096, random(4, 8192)) // slot 4 partly allocated
            .with(5 * MIB, zeros_and_text)
            .with(6 * MIB, random(1, MIB as usize)) // same as slot 0
            .with(7 * MIB + MIB / 2, compressible(5, MIB as usize)) // straddles 7 and 8
            .with(9 * MIB, random(6, (MIB / 2) as usize)) // short last slot
    }

    #[test]
    fn restore_is_bit_identical_with_holes_and_short_last_slot() {
        let e = env();
        let disk = mixed_disk();
        let b = e.backup(&disk, MIB as u32);
        let slots: Vec<u64> = b.index.entries.iter().map(|(s, _)| *s).collect();
        assert_eq!(
            slots,
            vec![0, 1, 4, 5, 6, 7, 8, 9],
            "slots 2 (zeros) and 3 are holes"
        );
        assert_eq!(b.index.digest_at(0), b.index.digest_at(6));
        // Slot 0 and 6 share one chunk; 7 distinct chunks are stored.
        assert_eq!(b.new_chunks.len(), 7);
        assert_eq!(e.chunk_files(), 7);
        assert_eq!(
            b.bytes_read,
            disk.extents.iter().map(|(x, _)| x.len).sum::<u64>()
        );
        assert_eq!(e.progress.done(), b.bytes_read);
        assert_eq!(b.logical_bytes, 7 * MIB + MIB / 2);
        assert_eq!(e.restore(&b.index, "disk0.raw"), disk.image());
        // Random data is stored raw, so stored bytes stay below raw + headers.
        let raw: u64 = b.new_chunks.iter().map(|c| c.raw_len).sum();
        assert!(b.stored_bytes < raw);
    }

    #[test]
    fn every_chunk_size_round_trips() {
        let e = env();
        let disk = mixed_disk();
        for shift in [16u32, 17, 20, 22, 24] {
            let b = backup_disk(e.params(&disk, None, None, 1 << shift)).unwrap();
            assert_eq!(b.index.chunk_size, 1 << shift);
            let name = format!("cs{shift}.raw");
            assert_eq!(
                e.restore(&b.index, &name),
                disk.image(),
                "chunk size 2^{shift}"
            );
        }
        assert!(matches!(
            backup_disk(e.params(&disk, None, None, 3 << 20)),
            Err(BackupError::Store(StoreError::Invalid(_)))
        ));
    }

    #[test]
    fn dedup_writes_identical_chunks_once_and_trusts_the_registry() {
        let e = env();
        let block = compressible(9, MIB as usize);
        let mut disk = MemDisk::new(8 * MIB);
        for i in 0..8 {
            disk.put(i * MIB, block.clone());
        }
        let b = e.backup(&disk, MIB as u32);
        assert_eq!(b.index.entries.len(), 8);
        assert_eq!(b.new_chunks.len(), 1, "eight identical chunks, one write");
        assert_eq!(e.chunk_files(), 1);

        // A second disk with the same content and a registry that has it committed (no
        // previous index): nothing is written, everything is pinned.
        let b2 = backup_disk(e.params(&disk, None, None, MIB as u32)).unwrap();
        assert!(b2.new_chunks.is_empty());
        assert_eq!(b2.stored_bytes, 0);
        assert_eq!(b2.pinned.len(), 1);
        assert!(e.pins.is_pinned(&block_digest(&block)));
        drop(b2);
        assert!(
            e.pins.is_pinned(&block_digest(&block)),
            "the first backup still pins it"
        );
        drop(b);
        assert!(e.pins.is_empty(), "dropping the backups unpins");
    }

    fn block_digest(b: &[u8]) -> Digest {
        *blake3::hash(b).as_bytes()
    }

    #[test]
    fn registry_is_asked_after_pinning() {
        // The registry checks that the digest it is asked about is already pinned.
        struct Checking<'a>(&'a PinSet);
        impl ChunkRegistry for Checking<'_> {
            fn is_committed(&self, d: &Digest) -> Result<bool, StoreError> {
                assert!(self.0.is_pinned(d), "asked before pinning");
                Ok(true)
            }
        }
        let e = env();
        let disk = mixed_disk();
        let reg = Checking(&e.pins);
        let mut p = e.params(&disk, None, None, MIB as u32);
        p.registry = &reg;
        let b = backup_disk(p).unwrap();
        assert!(b.new_chunks.is_empty());
        assert_eq!(b.pinned.len(), b.index.unique_digests().len());
    }

    #[test]
    fn incremental_with_cbt_reads_only_changed_slots() {
        let e = env();
        let cap = 64 * MIB;
        let mut disk = MemDisk::new(cap);
        for i in 0..32u64 {
            disk.put(i * 2 * MIB, compressible(100 + i, (MIB + MIB / 2) as usize));
        }
        let first = e.backup(&disk, MIB as u32);

        // Change bytes in slots 4 and 41 (two 8 KiB writes) and report them.
        disk.overwrite(4 * MIB + 10, &random(7, 8192));
        disk.overwrite(40 * MIB + MIB + 100, &random(8, 8192));
        disk.changed = Some(vec![
            Extent::new(4 * MIB + 10, 8192),
            Extent::new(41 * MIB + 100, 8192),
        ]);
        let counting = Counting::new(&disk);
        let progress = Progress::default();
        let mut p = e.params(
            &counting,
            Some(&first.index),
            disk.changed.clone(),
            MIB as u32,
        );
        p.progress = &progress;
        let second = backup_disk(p).unwrap();
        e.reg.commit(&second);

        let mut slots: Vec<u64> = counting
            .offsets
            .lock()
            .unwrap()
            .iter()
            .map(|o| o / MIB)
            .collect();
        slots.sort_unstable();
        slots.dedup();
        assert_eq!(slots, vec![4, 41], "only the two changed slots are read");
        assert_eq!(second.bytes_read, MIB + MIB / 2);
        assert_eq!(progress.done(), second.bytes_read);
        assert_eq!(second.new_chunks.len(), 2);
        for (slot, d) in &second.index.entries {
            if *slot != 4 && *slot != 41 {
                assert_eq!(first.index.digest_at(*slot), Some(d), "slot {slot} reused");
            }
        }
        assert_ne!(first.index.digest_at(4), second.index.digest_at(4));
        assert_eq!(second.reused_slots, first.index.entries.len() as u64 - 2);
        assert_eq!(second.pinned.len(), second.index.unique_digests().len());
        assert_eq!(e.restore(&second.index, "inc.raw"), disk.image());
        // And the first point still restores as it was.
        assert_ne!(e.restore(&first.index, "full.raw"), disk.image());
    }

    #[test]
    fn incremental_without_cbt_writes_only_changed_chunks() {
        let e = env();
        let mut disk = MemDisk::new(16 * MIB).with(0, compressible(1, 16 * MIB as usize));
        let first = e.backup(&disk, MIB as u32);
        disk.overwrite(5 * MIB + 77, &random(3, 1000));
        let q0 = e.reg.queries.load(Ordering::SeqCst);
        let second = backup_disk(e.params(&disk, Some(&first.index), None, MIB as u32)).unwrap();
        assert_eq!(
            second.bytes_read,
            16 * MIB,
            "without CBT everything allocated is read"
        );
        assert_eq!(second.new_chunks.len(), 1);
        // Slots equal to the previous slot need no registry query.
        assert_eq!(e.reg.queries.load(Ordering::SeqCst) - q0, 1);
        assert_eq!(e.restore(&second.index, "x.raw"), disk.image());
    }

    #[test]
    fn unchanged_slots_are_checked_in_place_and_only_changed_ones_are_read() {
        use super::super::testutil::FileDisk;
        let e = env();
        let mut mem = MemDisk::new(24 * MIB + MIB / 2);
        mem.put(0, compressible(1, 8 * MIB as usize));
        mem.put(8 * MIB, random(2, 8 * MIB as usize));
        mem.put(20 * MIB + 4096, random(3, 4096)); // slot 20: partly allocated
        mem.put(24 * MIB, compressible(4, (MIB / 2) as usize)); // short last slot
        let disk = FileDisk::from_mem(&e.root.join("disk.raw"), &mem);
        let first = e.backup(&disk, MIB as u32);
        let reads_first = disk.reads.load(Ordering::SeqCst);
        assert_eq!(
            disk.views.load(Ordering::SeqCst),
            0,
            "no previous: nothing to compare"
        );

        // Change slots 3 and 9 (and the partly allocated slot 20), no changed-block tracking.
        disk.overwrite(3 * MIB + 100, &random(5, 5000));
        disk.overwrite(9 * MIB + MIB - 10, &random(6, 10));
        disk.overwrite(20 * MIB + 4096, &random(7, 4096));
        mem.overwrite(3 * MIB + 100, &random(5, 5000));
        mem.overwrite(9 * MIB + MIB - 10, &random(6, 10));
        mem.overwrite(20 * MIB + 4096, &random(7, 4096));
        let progress = Progress::default();
        let mut p = e.params(&disk, Some(&first.index), None, MIB as u32);
        p.progress = &progress;
        let second = backup_disk(p).unwrap();
        e.reg.commit(&second);
        // 16 whole slots + the short last one are viewed; only the two that changed are
        // read after their view, plus slot 20 (partly allocated: always read).
        assert_eq!(disk.views.load(Ordering::SeqCst), 17);
        assert_eq!(disk.reads.load(Ordering::SeqCst) - reads_first, 3);
        assert_eq!(second.new_chunks.len(), 3);
        assert_eq!(
            second.bytes_read, first.bytes_read,
            "every allocated byte counted once"
        );
        assert_eq!(progress.done(), second.bytes_read);
        assert_eq!(second.pinned.len(), second.index.unique_digests().len());
        // The same index a full backup computes, and the same bytes back.
        let full = backup_disk(e.params(&mem, None, None, MIB as u32)).unwrap();
        assert_eq!(second.index, full.index);
        assert_eq!(e.restore(&second.index, "viewed.raw"), mem.image());
    }

    /// A file disk truncated to `at` bytes right after a view past `at` is mapped (what a
    /// process that ignores QEMU's locks can do to an image during a backup).
    struct TruncatedUnderView<'a> {
        inner: &'a super::super::testutil::FileDisk,
        path: std::path::PathBuf,
        at: u64,
    }

    impl DiskReader for TruncatedUnderView<'_> {
        fn capacity(&self) -> u64 {
            self.inner.capacity()
        }
        fn allocated_extents(&self) -> Result<Vec<Extent>, ProviderError> {
            self.inner.allocated_extents()
        }
        fn changed_extents(&self, _: &str) -> Result<Option<Vec<Extent>>, ProviderError> {
            Ok(None)
        }
        fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), ProviderError> {
            self.inner.read_at(offset, buf)
        }
        fn view_at(&self, offset: u64, len: usize) -> Option<crate::disk::DiskView<'_>> {
            let view = self.inner.view_at(offset, len)?;
            if offset + len as u64 > self.at {
                let f = std::fs::OpenOptions::new()
                    .write(true)
                    .open(&self.path)
                    .unwrap();
                f.set_len(self.at).unwrap();
            }
            Some(view)
        }
    }

    /// Without the SIGBUS handler, hashing the view kills the process; without the check
    /// of `intact`, the slot (zeros past the cut, as it held before) passes as unchanged
    /// and the backup "succeeds" on a truncated image.
    #[test]
    fn a_disk_file_truncated_under_a_view_fails_the_backup() {
        use super::super::testutil::FileDisk;
        let e = env();
        let mut mem = MemDisk::new(2 * MIB);
        mem.put(0, random(1, MIB as usize));
        let mut tail = vec![0u8; MIB as usize];
        tail[..4096].copy_from_slice(&random(2, 4096));
        mem.put(MIB, tail);
        let path = e.root.join("disk.raw");
        let disk = FileDisk::from_mem(&path, &mem);
        let first = e.backup(&disk, MIB as u32);
        let cut = TruncatedUnderView {
            inner: &disk,
            path,
            at: MIB + 4096,
        };
        let r = backup_disk(e.params(&cut, Some(&first.index), None, MIB as u32));
        assert!(
            matches!(r, Err(BackupError::Source(_))),
            "a truncated disk must fail the backup: {:?}",
            r.map(|b| b.index)
        );
    }

    /// A disk whose views show other bytes than its reads (it changes between the two).
    struct Shifting<'a> {
        inner: &'a MemDisk,
        view_of: Vec<u8>,
    }

    impl DiskReader for Shifting<'_> {
        fn capacity(&self) -> u64 {
            self.inner.capacity
        }
        fn allocated_extents(&self) -> Result<Vec<Extent>, ProviderError> {
            self.inner.allocated_extents()
        }
        fn changed_extents(&self, _: &str) -> Result<Option<Vec<Extent>>, ProviderError> {
            Ok(None)
        }
        fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), ProviderError> {
            self.inner.read_at(offset, buf)
        }
        fn view_at(&self, offset: u64, len: usize) -> Option<crate::disk::DiskView<'_>> {
            let a = offset as usize;
            Some(crate::disk::DiskView::Borrowed(&self.view_of[a..a + len]))
        }
    }

    #[test]
    fn a_slot_changing_between_view_and_read_is_stored_as_read() {
        let e = env();
        let mut disk = MemDisk::new(4 * MIB).with(0, compressible(1, 4 * MIB as usize));
        let first = e.backup(&disk, MIB as u32);
        // The view of slot 2 shows one change, the read that follows another.
        let mut seen = disk.image();
        seen[2 * MIB as usize + 7] ^= 1;
        disk.overwrite(2 * MIB + 9, &[0xAB; 3]);
        let shifting = Shifting {
            inner: &disk,
            view_of: seen,
        };
        let b = backup_disk(e.params(&shifting, Some(&first.index), None, MIB as u32)).unwrap();
        let want = *blake3::hash(&disk.image()[2 * MIB as usize..3 * MIB as usize]).as_bytes();
        assert_eq!(
            b.index.digest_at(2),
            Some(&want),
            "named after the bytes read"
        );
        assert_eq!(b.new_chunks.len(), 1);
        let ds = b.index.unique_digests();
        let faults = verify_chunks(&e.store, &ds, &Progress::default(), &e.cancel, 2).unwrap();
        assert!(faults.is_empty(), "{faults:?}");
        e.reg.commit(&b);
        assert_eq!(e.restore(&b.index, "shifted.raw"), disk.image());
    }

    #[test]
    fn cbt_against_another_layout_reads_everything() {
        let e = env();
        let disk = mixed_disk();
        let first = e.backup(&disk, MIB as u32);
        let counting = Counting::new(&disk);
        let b =
            backup_disk(e.params(&counting, Some(&first.index), Some(vec![]), 1 << 19)).unwrap();
        assert_eq!(b.reused_slots, 0);
        assert_eq!(b.bytes_read, first.bytes_read);
        assert_eq!(e.restore(&b.index, "y.raw"), disk.image());
    }

    #[test]
    fn cancel_mid_backup_leaves_no_partial_chunk() {
        let e = env();
        let mut disk = MemDisk::new(64 * MIB);
        for i in 0..64 {
            disk.put(i * MIB, compressible(i, MIB as usize));
        }
        let mut counting = Counting::new(&disk);
        counting.cancel_after = Some((10, e.cancel.clone()));
        let r = backup_disk(e.params(&counting, None, None, MIB as u32));
        assert!(matches!(r, Err(BackupError::Cancelled)), "{r:?}");
        let reads = counting.reads.load(Ordering::SeqCst);
        assert!(reads <= 10 + 2, "stopped promptly ({reads} reads)");
        // Every final-named chunk file is whole; pins are released.
        for item in e.store.list() {
            let (d, _, _) = item.unwrap();
            e.store.get(&d).unwrap();
        }
        assert!(e.pins.is_empty());
    }

    #[test]
    fn read_error_is_a_source_error() {
        let e = env();
        let disk = mixed_disk();
        let mut counting = Counting::new(&disk);
        counting.fail_after = Some(3);
        let r = backup_disk(e.params(&counting, None, None, MIB as u32));
        match r {
            Err(BackupError::Source(pe)) => assert!(pe.to_string().contains("test failure")),
            other => panic!("{other:?}"),
        }
        assert!(e.pins.is_empty());
    }

    #[test]
    fn sparse_100_gib_disk_uses_bounded_buffers() {
        let e = env();
        let cap = 100u64 << 30;
        let mut disk = MemDisk::new(cap);
        // 64 extents of 256 KiB scattered over 100 GiB, plus the very last bytes.
        for i in 0..64u64 {
            disk.put(i * (cap / 64) + 12345, compressible(i, 256 * 1024));
        }
        disk.put(cap - 1000, random(1, 1000));
        let cs = 4 * MIB as u32;
        let b = e.backup(&disk, cs);
        assert_eq!(b.index.entries.len(), 65);
        assert_eq!(b.index.capacity, cap);
        let workers = b.stats.workers;
        assert_eq!(workers, 3, "two cores and a spare");
        let per_worker = 2 * cs as usize + 64 * 1024; // raw + compressed + samples
        assert!(
            b.stats.peak_buffer_bytes <= workers * per_worker,
            "peak {} bytes of buffers",
            b.stats.peak_buffer_bytes
        );
        assert!(b.stats.peak_buffer_bytes >= 2 * cs as usize);
        assert_eq!(b.stats.queue_capacity, 2 * workers);

        // A 2 GiB disk holding the same data gets the same workers, queue and bound.
        let small = MemDisk::new(2 << 30).with(12345, compressible(0, 256 * 1024));
        let b2 = e.backup(&small, cs);
        assert_eq!(
            (b2.stats.workers, b2.stats.queue_capacity),
            (workers, b.stats.queue_capacity)
        );
        assert!(b2.stats.peak_buffer_bytes <= workers * per_worker);

        // Restore of the 100 GiB disk stays sparse.
        let out = e.root.join("big.raw");
        restore_disk(&e.store, &b.index, &out, &Progress::default(), &e.cancel, 2).unwrap();
        let m = std::fs::metadata(&out).unwrap();
        assert_eq!(m.len(), cap);
        use std::os::unix::fs::MetadataExt;
        assert!(
            m.blocks() * 512 < 64 * MIB,
            "{} bytes allocated",
            m.blocks() * 512
        );
        check_extents(&out, &disk);
    }

    /// The restored file holds every extent's bytes (reading only those ranges).
    fn check_extents(path: &Path, disk: &MemDisk) {
        use std::os::unix::fs::FileExt;
        let f = std::fs::File::open(path).unwrap();
        for (x, bytes) in &disk.extents {
            let mut buf = vec![0u8; bytes.len()];
            f.read_exact_at(&mut buf, x.offset).unwrap();
            assert!(buf == *bytes, "extent at {}", x.offset);
        }
    }

    #[test]
    fn gc_deletes_only_unpinned_chunks() {
        let pins = PinSet::new();
        let g1 = pins.guard();
        let g2 = pins.guard();
        let (a, b) = ([1u8; 32], [2u8; 32]);
        g1.pin(&a);
        g1.pin(&a); // once per guard
        g2.pin(&a);
        assert_eq!((g1.len(), pins.len()), (1, 1));
        let mut ran = false;
        assert_eq!(pins.remove_if_unpinned(&a, || ran = true), None);
        assert!(!ran, "a pinned chunk is not deleted");
        drop(g1);
        assert!(pins.is_pinned(&a), "still pinned by the second backup");
        drop(g2);
        assert_eq!(pins.remove_if_unpinned(&a, || 7), Some(7));
        assert_eq!(pins.remove_if_unpinned(&b, || 8), Some(8));
        assert!(pins.is_empty());
    }

    #[test]
    fn worker_count_respects_the_budget() {
        assert_eq!(worker_count(2, 1 << 20, 2), 2);
        assert_eq!(worker_count(0, 1 << 20, 2), 1);
        assert_eq!(worker_count(64, 4 << 20, 2), 4);
        assert_eq!(worker_count(8, 16 << 20, 2), 1);
        // A spare worker for backups, two per core for restore and verify; the budget
        // still caps them.
        assert_eq!(backup_workers(2, 1 << 20), 3);
        assert_eq!(backup_workers(0, 1 << 20), 2);
        assert_eq!(io_workers(2, 1 << 20), 4);
        assert_eq!(io_workers(2, 16 << 20), 1);
        assert_eq!(backup_workers(64, 4 << 20), 4);
    }

    #[test]
    fn planned_read_bytes_without_changed_blocks_is_every_allocated_byte() {
        let alloc = vec![Extent::new(0, 3 * MIB), Extent::new(10 * MIB, 4096)];
        assert_eq!(
            planned_read_bytes(alloc, None, 16 * MIB, MIB as u32),
            3 * MIB + 4096
        );
    }

    #[test]
    fn planned_read_bytes_with_changed_extents_counts_their_whole_slots() {
        // Slot 0 and 1 fully allocated, slot 5 half allocated.
        let alloc = vec![Extent::new(0, 2 * MIB), Extent::new(5 * MIB, MIB / 2)];
        // 4 KiB changed in slot 0, two extents in slot 5 (counted once), one spanning
        // slots 1 and 2 (slot 2 is a hole: nothing to read there).
        let changed = vec![
            Extent::new(4096, 4096),
            Extent::new(5 * MIB + 10, 10),
            Extent::new(5 * MIB + 100, 10),
            Extent::new(2 * MIB - 10, 20),
        ];
        let cs = MIB as u32;
        assert_eq!(
            planned_read_bytes(alloc.clone(), Some(changed), 8 * MIB, cs),
            MIB + MIB + MIB / 2,
            "slots 0, 1 whole; slot 5's allocated half"
        );
        assert_eq!(
            planned_read_bytes(alloc, Some(vec![]), 8 * MIB, cs),
            0,
            "nothing changed"
        );
    }

    #[test]
    fn planner_and_normalize() {
        let alloc = normalize(
            vec![
                Extent::new(5000, 100),
                Extent::new(0, 10),
                Extent::new(10, 5),
                Extent::new(4000, 2000),
                Extent::new(9000, 0),
                Extent::new(20_000, 99_999),
            ],
            20_500,
        );
        assert_eq!(
            alloc,
            vec![
                Extent::new(0, 15),
                Extent::new(4000, 2000),
                Extent::new(20_000, 500)
            ]
        );
        let plan: Vec<_> = SlotPlanner {
            alloc: &alloc,
            ai: 0,
            pos: 0,
            cs: 4096,
            capacity: 20_500,
        }
        .collect();
        assert_eq!(
            plan,
            vec![
                (0, vec![Extent::new(0, 15), Extent::new(4000, 96)]),
                (1, vec![Extent::new(4096, 1904)]),
                (4, vec![Extent::new(20_000, 480)]),
                (5, vec![Extent::new(20_480, 20)]), // the short last slot
            ]
        );
        let mut c = ChangedCursor {
            ext: vec![Extent::new(100, 10), Extent::new(8192, 1)],
            i: 0,
        };
        assert!(c.touches(0, 4096));
        assert!(!c.touches(4096, 8192));
        assert!(c.touches(8192, 12288));
        assert!(!c.touches(12288, 16384));
    }

    #[test]
    fn damaged_chunk_is_named_by_verify_and_restore() {
        let e = env();
        let disk = mixed_disk();
        let b = e.backup(&disk, MIB as u32);
        // Damage the chunk of slot 1 (compressible) and remove the one of slot 9.
        let d1 = *b.index.digest_at(1).unwrap();
        let d9 = *b.index.digest_at(9).unwrap();
        let p = e.store.path_of(&d1);
        let mut bytes = std::fs::read(&p).unwrap();
        bytes[100] ^= 0x01;
        std::fs::write(&p, bytes).unwrap();
        std::fs::remove_file(e.store.path_of(&d9)).unwrap();

        let ds = b.index.unique_digests();
        let faults = verify_chunks(&e.store, &ds, &Progress::default(), &e.cancel, 2).unwrap();
        let mut named: Vec<Digest> = faults.iter().map(|(d, _)| *d).collect();
        named.sort();
        let mut want = vec![d1, d9];
        want.sort();
        assert_eq!(named, want);
        assert!(faults
            .iter()
            .any(|(d, f)| *d == d9 && *f == super::super::ChunkFault::Missing));

        let out = e.root.join("bad.raw");
        let err =
            restore_disk(&e.store, &b.index, &out, &Progress::default(), &e.cancel, 1).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("slot 1") || msg.contains("slot 9"), "{msg}");
        assert!(matches!(err.faulty_chunk(), Some(d) if d == d1 || d == d9));
        assert!(!out.exists());
        assert!(!super::super::restore::partial_path(&out).exists());
    }

    /// Random layouts: restore equals the disk, and an incremental backup driven by
    /// changed-block tracking yields exactly the index a full backup would.
    #[test]
    fn random_layouts_round_trip_and_cbt_matches_full() {
        use super::super::testutil::{fill_random, Rng};
        let cs: u32 = 64 * 1024;
        for seed in 0..12u64 {
            let e = env();
            let mut r = Rng::new(seed);
            let cap = (1 + r.next() % 40) * u64::from(cs) + r.next() % 5000;
            let mut disk = MemDisk::new(cap);
            let mut at = r.next() % 70_000;
            while at < cap {
                let len = (1 + r.next() % 150_000).min(cap - at);
                let mut data = match r.next() % 3 {
                    0 => random(r.next(), len as usize),
                    1 => compressible(r.next(), len as usize),
                    _ => vec![0u8; len as usize],
                };
                if r.next().is_multiple_of(4) {
                    data[..(len as usize) / 2].fill(0);
                }
                disk.put(at, data);
                at += len + [0, 1, 4096, 100_000][(r.next() % 4) as usize];
            }
            let first = e.backup(&disk, cs);
            let name = format!("r{seed}.raw");
            assert_eq!(e.restore(&first.index, &name), disk.image(), "seed {seed}");

            // Overwrite a few ranges inside extents; CBT reports them (and a spurious one).
            let mut changed = Vec::new();
            for _ in 0..1 + r.next() % 4 {
                let (x, _) = disk.extents[(r.next() % disk.extents.len() as u64) as usize];
                let off = x.offset + r.next() % x.len;
                let len = (1 + r.next() % 20_000).min(x.end() - off);
                let mut data = vec![0u8; len as usize];
                if !r.next().is_multiple_of(3) {
                    fill_random(r.next(), &mut data);
                }
                disk.overwrite(off, &data);
                changed.push(Extent::new(off, len));
            }
            changed.push(Extent::new(r.next() % cap, 10));
            let planned = planned_read_bytes(
                disk.allocated_extents().unwrap(),
                Some(changed.clone()),
                cap,
                cs,
            );
            let inc = backup_disk(e.params(&disk, Some(&first.index), Some(changed), cs)).unwrap();
            e.reg.commit(&inc);
            assert_eq!(inc.bytes_read, planned, "seed {seed}: planned = read");
            let full = backup_disk(e.params(&disk, None, None, cs)).unwrap();
            assert_eq!(inc.index, full.index, "seed {seed}");
            assert!(inc.bytes_read <= full.bytes_read);
            let all = planned_read_bytes(disk.allocated_extents().unwrap(), None, cap, cs);
            assert_eq!(full.bytes_read, all, "seed {seed}: planned = read");
            let name = format!("r{seed}-inc.raw");
            assert_eq!(e.restore(&inc.index, &name), disk.image(), "seed {seed}");
        }
    }

    #[test]
    fn verify_after_backup_is_clean() {
        let e = env();
        let b = e.backup(&mixed_disk(), MIB as u32);
        let ds = b.index.unique_digests();
        let faults = verify_chunks(&e.store, &ds, &Progress::default(), &e.cancel, 2).unwrap();
        assert!(faults.is_empty());
    }
}
