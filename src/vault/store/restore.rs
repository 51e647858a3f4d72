//! Restore of one disk into a sparse raw image.
//!
//! Workers take slots of the index in turn (a shared cursor, no queue), fetch, decompress
//! and re-hash each chunk, and `pwrite` it at its disk offset, skipping 4 KiB blocks of
//! zeros so the image stays sparse. The image is written to `<out>.partial`, fsynced, then
//! renamed to `out`: a failed or interrupted restore never leaves a file that looks whole.
//!
//! The file is created empty and extended with `set_len`, so it reads as zeros wherever
//! nothing is written. Before the workers start, the ranges the index holds chunks for are
//! preallocated with one `fallocate(2)` per run of consecutive slots: on ext4, an O_DIRECT
//! write that allocates blocks takes the inode lock exclusively, so the workers' writes
//! would reach the disk one at a time; into allocated (unwritten) blocks they run in
//! parallel (restore of the benchmark image: 1.5–2.1 s before, 1.1–1.4 s after). The 4 KiB
//! blocks of zeros the workers skip inside a chunk are then allocated but unwritten (they
//! read as zeros); they are punched back into holes (`FALLOC_FL_PUNCH_HOLE`) in batches, so
//! the image ends as sparse as without preallocation. Both are best-effort: where
//! `fallocate` fails (no support, or no room to reserve whole slots that will be partly
//! punched), the reservation is given back and the restore writes without it; where
//! punching fails, the restore completes with those zero blocks allocated, and says so in
//! the log.

use super::backup::io_workers;
use super::chunks::{ChunkReader, DirectFile};
use super::{digest_hex, is_zero, ChunkStore, Digest, DiskIndex, StoreError};
use crate::cancel::{CancelToken, Progress};
use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

/// Granularity of hole detection in restored images (the usual file system block).
const SPARSE_BLOCK: usize = 4096;

/// `out` + ".partial": where a restore writes until it is complete.
pub fn partial_path(out: &Path) -> PathBuf {
    let mut s: OsString = out.as_os_str().to_owned();
    s.push(".partial");
    PathBuf::from(s)
}

/// Restores the disk described by `index` to a new sparse file `out` (an error if it
/// exists). Any missing or corrupt chunk fails the restore with an error naming the chunk,
/// the slot and the disk offset, and removes the partial output. `progress` gets the raw
/// bytes of each chunk restored added (holes are not counted: set the total to
/// [`DiskIndex::logical_bytes`]).
pub fn restore_disk(
    store: &ChunkStore,
    index: &DiskIndex,
    out: &Path,
    progress: &Progress,
    cancel: &CancelToken,
    threads: usize,
) -> Result<(), StoreError> {
    index.validate().map_err(|r| {
        StoreError::Invalid(format!("cannot restore from an invalid disk index: {r}"))
    })?;
    if cancel.is_cancelled() {
        return Err(StoreError::Cancelled);
    }
    if out.symlink_metadata().is_ok() {
        return Err(StoreError::TargetExists {
            path: out.to_path_buf(),
        });
    }
    let partial = partial_path(out);
    let file = match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&partial)
    {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            return Err(StoreError::Invalid(format!(
                "{} already exists (left by an interrupted restore, or another restore to the \
                 same target is running): remove it and retry",
                partial.display()
            )))
        }
        Err(e) => {
            return Err(StoreError::io(
                format!("creating restore target {}", partial.display()),
                e,
            ))
        }
    };
    let target = DirectFile::new(file, &partial);
    let result =
        write_image(store, index, &target, &partial, progress, cancel, threads).and_then(|()| {
            target.file.sync_all().map_err(|e| {
                StoreError::io(format!("flushing restore target {}", partial.display()), e)
            })
        });
    drop(target);
    if let Err(e) = result {
        let _ = fs::remove_file(&partial);
        return Err(e);
    }
    let finish = || -> io::Result<()> {
        fs::rename(&partial, out)?;
        let parent = match out.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        File::open(parent)?.sync_all()
    };
    finish().map_err(|e| {
        let _ = fs::remove_file(&partial);
        StoreError::io(
            format!("moving the restored image into place at {}", out.display()),
            e,
        )
    })
}

fn write_image(
    store: &ChunkStore,
    index: &DiskIndex,
    file: &DirectFile,
    path: &Path,
    progress: &Progress,
    cancel: &CancelToken,
    threads: usize,
) -> Result<(), StoreError> {
    file.file.set_len(index.capacity).map_err(|e| {
        StoreError::io(
            format!(
                "sizing restore target {} to {} bytes",
                path.display(),
                index.capacity
            ),
            e,
        )
    })?;
    let preallocated = preallocate(&file.file, index).map_err(|e| {
        StoreError::io(
            format!(
                "sizing restore target {} after a failed preallocation",
                path.display()
            ),
            e,
        )
    })?;
    let holes = HolePuncher::new(&file.file, preallocated);
    let workers = io_workers(threads, index.chunk_size).min(index.entries.len().max(1));
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let error: Mutex<Option<StoreError>> = Mutex::new(None);
    let fail = |e: StoreError| {
        let mut slot = error.lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_none() {
            *slot = Some(e);
        }
        stop.store(true, Ordering::SeqCst);
    };
    std::thread::scope(|s| {
        for i in 0..workers {
            let work = || {
                let mut reader = match ChunkReader::new() {
                    Ok(r) => r,
                    Err(e) => return fail(e),
                };
                while !stop.load(Ordering::SeqCst) {
                    let k = next.fetch_add(1, Ordering::Relaxed);
                    let Some(&(slot, d)) = index.entries.get(k) else {
                        break;
                    };
                    if cancel.is_cancelled() {
                        return fail(StoreError::Cancelled);
                    }
                    let offset = slot * u64::from(index.chunk_size);
                    let r = restore_slot(
                        store,
                        index,
                        file,
                        path,
                        slot,
                        &d,
                        &mut reader,
                        progress,
                        &holes,
                    );
                    if let Err(e) = r {
                        return fail(match e {
                            e @ (StoreError::ChunkMissing { .. }
                            | StoreError::ChunkCorrupt { .. }) => StoreError::AtSlot {
                                slot,
                                offset,
                                source: Box::new(e),
                            },
                            e => e,
                        });
                    }
                }
            };
            if let Err(e) = std::thread::Builder::new()
                .name(format!("restore-{i}"))
                .spawn_scoped(s, work)
            {
                fail(StoreError::io("starting a restore worker thread", e));
            }
        }
    });
    if let Some(e) = error.into_inner().unwrap_or_else(|p| p.into_inner()) {
        return Err(e);
    }
    holes.finish();
    Ok(())
}

/// Allocates the ranges `index` has chunks for (one call per run of consecutive slots).
/// False, with nothing reserved, when the file system cannot (no `fallocate`, or no room
/// for whole slots): the restore then writes without it. An error only if giving the
/// reservation back failed.
fn preallocate(file: &File, index: &DiskIndex) -> io::Result<bool> {
    let cs = u64::from(index.chunk_size);
    let mut runs: Vec<(u64, u64)> = Vec::new();
    for &(slot, _) in &index.entries {
        let (s0, len) = (slot * cs, index.slot_len(slot));
        match runs.last_mut() {
            Some((_, end)) if *end == s0 => *end = s0 + len,
            _ => runs.push((s0, s0 + len)),
        }
    }
    for (start, end) in runs {
        if let Err(e) = fallocate(file, 0, start, end - start) {
            tracing::debug!(error = %e, "restore target not preallocated; writing without");
            file.set_len(0)?;
            file.set_len(index.capacity)?;
            return Ok(false);
        }
    }
    Ok(true)
}

fn fallocate(file: &File, mode: libc::c_int, offset: u64, len: u64) -> io::Result<()> {
    // SAFETY: fallocate only reads the descriptor, which `file` keeps open.
    let rc = unsafe {
        libc::fallocate(
            file.as_raw_fd(),
            mode,
            offset as libc::off_t,
            len as libc::off_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Ranges of zeros skipped inside preallocated chunks, punched back into holes in batches
/// of [`HolePuncher::BATCH`] ranges (a punch waits for the writes in flight, so one per
/// range would serialise the workers again) and at the end. Best-effort: after a failed
/// punch (a file system that preallocates but cannot punch) it stops and logs it; the image
/// is as correct, only less sparse.
struct HolePuncher<'f> {
    file: &'f File,
    active: AtomicBool,
    pending: Mutex<Vec<(u64, u64)>>,
}

impl<'f> HolePuncher<'f> {
    const BATCH: usize = 4096;

    fn new(file: &'f File, active: bool) -> Self {
        HolePuncher {
            file,
            active: AtomicBool::new(active),
            pending: Mutex::new(Vec::new()),
        }
    }

    /// Records that `[offset, offset + len)` reads as zeros and needs no blocks.
    fn add(&self, offset: u64, len: u64) {
        if !self.active.load(Ordering::Relaxed) || len == 0 {
            return;
        }
        let full = {
            let mut p = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            match p.last_mut() {
                Some((o, l)) if *o + *l == offset => *l += len,
                _ => p.push((offset, len)),
            }
            if p.len() >= Self::BATCH {
                std::mem::take(&mut *p)
            } else {
                Vec::new()
            }
        };
        self.punch(full);
    }

    fn punch(&self, ranges: Vec<(u64, u64)>) {
        for (offset, len) in ranges {
            if !self.active.load(Ordering::Relaxed) {
                return;
            }
            let mode = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
            if let Err(e) = fallocate(self.file, mode, offset, len) {
                self.active.store(false, Ordering::Relaxed);
                tracing::warn!(
                    error = %e,
                    offset,
                    len,
                    "restore: could not punch zero blocks back into holes; the image is \
                     complete but less sparse"
                );
            }
        }
    }

    fn finish(self) {
        let rest = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|p| p.into_inner()));
        self.punch(rest);
    }
}

#[allow(clippy::too_many_arguments)]
fn restore_slot(
    store: &ChunkStore,
    index: &DiskIndex,
    file: &DirectFile,
    path: &Path,
    slot: u64,
    d: &Digest,
    reader: &mut ChunkReader,
    progress: &Progress,
    holes: &HolePuncher,
) -> Result<(), StoreError> {
    let raw = store.read_into(d, reader)?;
    let want = index.slot_len(slot);
    if raw.len() as u64 != want {
        return Err(StoreError::ChunkCorrupt {
            digest: *d,
            path: store.path_of(d),
            reason: format!(
                "holds {} bytes but the slot is {want} bytes (chunk {} does not belong to this disk layout)",
                raw.len(),
                digest_hex(d)
            ),
        });
    }
    let offset = slot * u64::from(index.chunk_size);
    write_sparse(file, offset, raw, holes).map_err(|e| {
        StoreError::io(
            format!(
                "writing restore target {} at offset {offset}",
                path.display()
            ),
            e,
        )
    })?;
    progress.add_done(raw.len() as u64);
    Ok(())
}

/// Writes the non-zero runs of `data` at `offset`; whole 4 KiB blocks of zeros are skipped
/// (the file must read as zeros there already) and handed to `holes`.
fn write_sparse(
    file: &DirectFile,
    offset: u64,
    data: &[u8],
    holes: &HolePuncher,
) -> io::Result<()> {
    let mut run_start: Option<usize> = None;
    let mut zeros_start: Option<usize> = None;
    let mut pos = 0;
    while pos < data.len() {
        let end = (pos + SPARSE_BLOCK).min(data.len());
        if is_zero(&data[pos..end]) {
            if let Some(s) = run_start.take() {
                file.write_all_at(&data[s..pos], offset + s as u64)?;
            }
            zeros_start.get_or_insert(pos);
        } else {
            if let Some(z) = zeros_start.take() {
                holes.add(offset + z as u64, (pos - z) as u64);
            }
            run_start.get_or_insert(pos);
        }
        pos = end;
    }
    if let Some(s) = run_start {
        file.write_all_at(&data[s..], offset + s as u64)?;
    }
    if let Some(z) = zeros_start {
        holes.add(offset + z as u64, (data.len() - z) as u64);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{compressible, random};
    use super::*;
    use std::os::unix::fs::MetadataExt;

    /// Restores `index` to `out` with `threads`, without progress or cancel.
    fn restore(
        s: &ChunkStore,
        index: &DiskIndex,
        out: &Path,
        threads: usize,
    ) -> Result<(), StoreError> {
        restore_disk(
            s,
            index,
            out,
            &Progress::default(),
            &CancelToken::new(),
            threads,
        )
    }

    fn store_with(chunks: &[&[u8]]) -> (tempfile::TempDir, ChunkStore, Vec<Digest>) {
        let t = tempfile::tempdir().unwrap();
        let s = ChunkStore::open(&t.path().join("chunks")).unwrap();
        let ds = chunks
            .iter()
            .map(|c| {
                let d = *blake3::hash(c).as_bytes();
                s.put(&d, c).unwrap();
                d
            })
            .collect();
        (t, s, ds)
    }

    #[test]
    fn restores_sparse_and_exact() {
        let cs = 1 << 16;
        let mut a = random(1, cs);
        a[8192..3 * 8192].fill(0); // zero blocks inside a chunk stay holes too
        let b = compressible(2, 1000);
        let (t, s, ds) = store_with(&[&a, &b]);
        let cap = 1000 * cs as u64 + 1000; // the last slot is short
        let index = DiskIndex {
            capacity: cap,
            chunk_size: cs as u32,
            entries: vec![(3, ds[0]), (1000, ds[1])],
        };
        let out = t.path().join("disk0.raw");
        let progress = Progress::default();
        restore_disk(&s, &index, &out, &progress, &CancelToken::new(), 2).unwrap();
        let img = fs::read(&out).unwrap();
        let mut want = vec![0u8; cap as usize];
        want[3 * cs..4 * cs].copy_from_slice(&a);
        want[1000 * cs..].copy_from_slice(&b);
        assert!(img == want);
        let m = fs::metadata(&out).unwrap();
        assert!(
            m.blocks() * 512 <= (cs as u64 - 2 * 8192) + 8192,
            "{} blocks",
            m.blocks()
        );
        assert_eq!(progress.done(), index.logical_bytes());
        assert!(!partial_path(&out).exists());

        // The target exists now: refused, untouched.
        let e = restore_disk(&s, &index, &out, &progress, &CancelToken::new(), 2).unwrap_err();
        assert!(matches!(e, StoreError::TargetExists { .. }), "{e}");
    }

    #[test]
    fn many_zero_runs_inside_chunks_are_punched_back_into_holes() {
        // 40 chunks of 1 MiB, every other 4 KiB block zero: 5,120 zero runs, more than one
        // batch of the hole puncher, in preallocated chunks.
        let cs = 1 << 20;
        let chunks: Vec<Vec<u8>> = (0..40)
            .map(|i| {
                let mut c = random(100 + i, cs);
                for b in c.chunks_mut(2 * SPARSE_BLOCK) {
                    b[..SPARSE_BLOCK].fill(0);
                }
                c
            })
            .collect();
        let refs: Vec<&[u8]> = chunks.iter().map(|c| c.as_slice()).collect();
        let (t, s, ds) = store_with(&refs);
        let index = DiskIndex {
            capacity: 64 * cs as u64,
            chunk_size: cs as u32,
            entries: ds
                .iter()
                .enumerate()
                .map(|(i, d)| (i as u64 + 2, *d))
                .collect(),
        };
        let out = t.path().join("d.raw");
        restore(&s, &index, &out, 2).unwrap();
        let img = fs::read(&out).unwrap();
        for (i, c) in chunks.iter().enumerate() {
            assert!(img[(i + 2) * cs..(i + 3) * cs] == c[..], "chunk {i}");
        }
        assert!(img[..2 * cs].iter().all(|b| *b == 0) && img[42 * cs..].iter().all(|b| *b == 0));
        // Half of each chunk is data; a file system without fallocate never allocated the
        // zeros, one with it must have punched every one of them (unpunched, 40 MiB would be
        // allocated). The margin is for the extent tree of 5,120 fragments.
        let allocated = fs::metadata(&out).unwrap().blocks() * 512;
        assert!(
            allocated <= 40 * cs as u64 / 2 + 512 * 1024,
            "{allocated} bytes allocated"
        );
    }

    #[test]
    fn corrupt_or_missing_chunk_names_slot_and_leaves_nothing() {
        let cs = 1 << 16;
        let a = random(1, cs);
        let b = compressible(2, cs);
        let (t, s, ds) = store_with(&[&a, &b]);
        let index = DiskIndex {
            capacity: 8 * cs as u64,
            chunk_size: cs as u32,
            entries: vec![(2, ds[0]), (5, ds[1])],
        };
        // Flip a byte of the compressed chunk.
        let p = s.path_of(&ds[1]);
        let mut bytes = fs::read(&p).unwrap();
        let last = bytes.len() - 3;
        bytes[last] ^= 1;
        fs::write(&p, bytes).unwrap();
        let out = t.path().join("d.raw");
        let e = restore(&s, &index, &out, 2).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("slot 5") && msg.contains(&digest_hex(&ds[1])),
            "{msg}"
        );
        assert!(msg.contains(&format!("offset {}", 5 * cs)), "{msg}");
        assert_eq!(e.faulty_chunk(), Some(ds[1]));
        assert!(!out.exists() && !partial_path(&out).exists());

        fs::remove_file(s.path_of(&ds[0])).unwrap();
        let e = restore(&s, &index, &out, 1).unwrap_err();
        assert!(matches!(e.faulty_chunk(), Some(d) if d == ds[0] || d == ds[1]));
        assert!(!out.exists() && !partial_path(&out).exists());
    }

    #[test]
    fn chunk_of_the_wrong_length_is_refused() {
        let cs = 1 << 16;
        let short = compressible(1, 100);
        let (t, s, ds) = store_with(&[&short]);
        let index = DiskIndex {
            capacity: 4 * cs as u64,
            chunk_size: cs as u32,
            entries: vec![(1, ds[0])],
        };
        let out = t.path().join("d.raw");
        let e = restore(&s, &index, &out, 2).unwrap_err();
        assert!(e.to_string().contains("slot 1"), "{e}");
        assert!(!out.exists());
    }

    #[test]
    fn cancelled_restore_removes_the_partial_file() {
        let (t, s, ds) = store_with(&[&random(1, 1 << 16)]);
        let index = DiskIndex {
            capacity: 1 << 20,
            chunk_size: 1 << 16,
            entries: vec![(0, ds[0])],
        };
        let c = CancelToken::new();
        c.cancel();
        let out = t.path().join("d.raw");
        let e = restore_disk(&s, &index, &out, &Progress::default(), &c, 2).unwrap_err();
        assert!(matches!(e, StoreError::Cancelled));
        assert!(!out.exists() && !partial_path(&out).exists());
    }

    #[test]
    fn write_sparse_skips_zero_blocks_only() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("f");
        let f = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .read(true)
            .open(&p)
            .unwrap();
        f.set_len(1 << 20).unwrap();
        let f = DirectFile::new(f, &p);
        let mut data = vec![0u8; 5 * 4096 + 10];
        data[4096] = 1; // block 1
        data[5 * 4096 + 9] = 2; // the short tail
        write_sparse(&f, 4096, &data, &HolePuncher::new(&f.file, false)).unwrap();
        let img = fs::read(&p).unwrap();
        assert_eq!(img[4096 + 4096], 1);
        assert_eq!(img[4096 + 5 * 4096 + 9], 2);
        assert_eq!(img.iter().filter(|b| **b != 0).count(), 2);
    }
}
