//! Restore of one disk into a sparse raw image.
//!
//! Workers take slots of the index in turn (a shared cursor, no queue), fetch, decompress
//! and re-hash each chunk, and `pwrite` it at its disk offset, skipping 4 KiB blocks of
//! zeros so the image stays sparse. The image is written to `<name>.partial`, fsynced, then
//! moved to `<name>`: a failed or interrupted restore never leaves a file that looks whole.
//!
//! # The target folder is not the vault
//! The folder a restore writes into is the user's, and others may be able to write in it.
//! Everything there goes through one handle of the folder ([`Dir`]), never a path looked up
//! again: `<name>.partial` is created with `O_EXCL|O_NOFOLLOW` (a name planted in advance is
//! refused, never written through), its O_DIRECT descriptor is a reopen of that file, and
//! the finished image is moved with a rename that never replaces ([`Dir::rename_noreplace`]):
//! whatever appeared at `<name>` while the restore ran stays, and the restore fails saying
//! so. Afterwards `<name>` is checked to be the file that was written (whoever can write the
//! folder could have swapped `<name>.partial`). Every failure of the target (full, read-only,
//! no permission, a name taken, the folder gone) is a [`TargetError`], which says that the
//! target is at fault, not the vault's data, and what to do.
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
use super::chunks::ChunkReader;
use super::{digest_hex, is_zero, Digest, DiskIndex, StoreError, Vault};
use crate::cancel::{CancelToken, Progress};
use crate::direct_io::DirectFile;
use crate::fsx::{Dir, FsxError};
use crate::model::ErrorDetails;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

/// Granularity of hole detection in restored images (the usual file system block).
const SPARSE_BLOCK: usize = 4096;

/// `<name>.partial`: where a restore writes until it is complete.
pub fn partial_name(name: &OsStr) -> OsString {
    let mut s = name.to_owned();
    s.push(".partial");
    s
}

/// `out` + ".partial" (tests look for it).
#[cfg(test)]
pub(crate) fn partial_path(out: &Path) -> PathBuf {
    out.with_file_name(partial_name(out.file_name().unwrap_or_default()))
}

/// A problem of the restore target: the folder the user chose or its file system, not the
/// vault's data (the recovery point is intact and can be restored once it is fixed).
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// Something (a file, a folder, a symlink, dangling or not) is at the target's name.
    #[error("{} already exists ({kind}); restore never replaces anything", .path.display())]
    Exists { path: PathBuf, kind: &'static str },
    /// A work file of a restore is there: another restore into the same folder runs, or
    /// one was interrupted and its leftovers could not be removed.
    #[error("{} already exists: another restore into this folder is running, or an interrupted one left it", .path.display())]
    Leftover { path: PathBuf },
    /// After the move, the target's name leads to another file than the one written.
    #[error("{} is not the restored image: someone who can write in the folder replaced the file while the restore placed it", .path.display())]
    Changed { path: PathBuf },
    /// The folder or a file in it is refused by the safe-file rules (see [`crate::fsx`]).
    #[error("{0}")]
    Refused(String),
    /// The file system refused an operation (full, read-only, no permission, gone, …).
    #[error("{what}: {source}")]
    Io {
        /// What was being done, with the path.
        what: String,
        /// The target folder, named in the fix.
        folder: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// `path`, or the nearest folder above it that exists (`/` at worst).
fn existing_ancestor(path: &Path) -> &Path {
    path.ancestors()
        .find(|p| !p.as_os_str().is_empty() && p.symlink_metadata().is_ok())
        .unwrap_or(Path::new("/"))
}

impl TargetError {
    /// An I/O error in the target folder `folder` while doing `what` (which names the path).
    pub fn io(folder: &Path, what: impl Into<String>, source: io::Error) -> TargetError {
        TargetError::Io {
            what: what.into(),
            folder: folder.to_path_buf(),
            source,
        }
    }

    /// A failed [`Dir`] operation in the target folder `folder` while doing `what` (the
    /// path the error names is appended).
    pub fn from_fsx(folder: &Path, what: &str, e: FsxError) -> TargetError {
        match e {
            FsxError::Io { path, source } => {
                TargetError::io(folder, format!("{what} {}", path.display()), source)
            }
            FsxError::NotDir { path } => TargetError::io(
                folder,
                format!("{what} {}", path.display()),
                io::Error::from_raw_os_error(libc::ENOTDIR),
            ),
            FsxError::Exists { path } => TargetError::Exists {
                kind: "something",
                path,
            },
            e => TargetError::Refused(e.to_string()),
        }
    }

    /// The OS error behind this one, if any.
    pub fn os_error(&self) -> Option<i32> {
        match self {
            TargetError::Io { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }

    /// Whether the target's file system ran out of space (or quota).
    pub fn is_full(&self) -> bool {
        matches!(self.os_error(), Some(libc::ENOSPC | libc::EDQUOT))
    }

    /// A stable code per problem, a title, and what the user can do.
    fn class(&self) -> (&'static str, &'static str, String) {
        let folder = |f: &Path| format!("'{}'", f.display());
        // Hints about the file system name a folder that is there when the user reads
        // them (a work folder the restore made is gone by then).
        let on_fs = |f: &Path| folder(existing_ancestor(f));
        match self {
            TargetError::Exists { path, .. } => (
                "RestoreTargetExists",
                "The restore target already exists",
                format!("Move {} away, or restore into another folder.", path.display()),
            ),
            TargetError::Leftover { path } => (
                "RestoreTargetInUse",
                "A restore into this folder is running or was interrupted",
                format!(
                    "If no other restore into this folder is running, remove {} and restore again.",
                    path.display()
                ),
            ),
            TargetError::Changed { .. } => (
                "RestoreTargetChanged",
                "The restore target was changed by someone else",
                "Restore into a folder that only you can write (mode 0700).".to_string(),
            ),
            TargetError::Refused(_) => (
                "RestoreTargetRefused",
                "The restore target is refused",
                "Restore into a folder of your own that others cannot change.".to_string(),
            ),
            TargetError::Io { folder: f, .. } => match self.os_error() {
                Some(libc::ENOSPC) => (
                    "RestoreTargetFull",
                    "The restore target's file system is full",
                    format!(
                        "Free space on the file system that holds {} (`df -h {}`), or restore into a folder on another file system.",
                        on_fs(f),
                        on_fs(f)
                    ),
                ),
                Some(libc::EDQUOT) => (
                    "RestoreTargetFull",
                    "The disk quota of the restore target is exhausted",
                    format!(
                        "Free space within the quota that applies to {}, raise the quota, or restore into another folder.",
                        on_fs(f)
                    ),
                ),
                Some(libc::EROFS) => (
                    "RestoreTargetReadOnly",
                    "The restore target is on a read-only file system",
                    format!(
                        "Restore into a folder on a writable file system, or remount the one that holds {} read-write.",
                        on_fs(f)
                    ),
                ),
                Some(libc::EACCES | libc::EPERM) => (
                    "RestoreTargetAccessDenied",
                    "vmvault may not write in the restore target",
                    format!(
                        "Restore into a folder that {} may write, or allow it to write in {} (permissions, ACLs, `chattr -i`).",
                        crate::fsx::user_name(crate::fsx::euid()),
                        folder(f)
                    ),
                ),
                Some(libc::ENOENT) => (
                    "RestoreTargetMissing",
                    "The restore target folder is missing",
                    format!(
                        "{} (or a folder above it) was removed or renamed: create it again or choose another folder, then restore again.",
                        folder(f)
                    ),
                ),
                Some(libc::ENOTDIR) => (
                    "RestoreTargetNotAFolder",
                    "The restore target is not a folder",
                    format!(
                        "{} or a part of its path is a file: give the path of a folder.",
                        folder(f)
                    ),
                ),
                Some(libc::EFBIG) => (
                    "RestoreTargetTooLarge",
                    "The restore target's file system cannot hold a file this large",
                    "Restore into a folder on a file system that allows large files (ext4, xfs, btrfs).".to_string(),
                ),
                _ => (
                    "RestoreTargetError",
                    "Writing the restore target failed",
                    format!(
                        "Check the file system and the disk that hold {} (`dmesg`).",
                        on_fs(f)
                    ),
                ),
            },
        }
    }

    /// The stable code of this problem (`RestoreTargetFull`, …).
    pub fn code(&self) -> &'static str {
        self.class().0
    }

    /// What the user can do about it.
    pub fn fix(&self) -> String {
        self.class().2
    }

    /// The details to record on a job.
    pub fn details(&self) -> ErrorDetails {
        let (code, title, fix) = self.class();
        ErrorDetails::new(code, title, self.to_string())
            .recommend(fix)
            .recommend("The recovery point is intact: nothing in the vault was changed. Restore again once the target is fixed.")
    }
}

impl From<TargetError> for StoreError {
    fn from(e: TargetError) -> Self {
        StoreError::Target(e)
    }
}

/// The error for `name` in `dir` being taken, saying what is there.
pub fn exists_error(dir: &Dir, name: &OsStr) -> TargetError {
    TargetError::Exists {
        path: dir.path_of(name),
        kind: dir.entry_kind(name).ok().flatten().unwrap_or("something"),
    }
}

/// Restores the disk described by `index` to the new sparse file `out`: like
/// [`restore_disk_at`] in the folder of `out`, opened once by its path.
pub fn restore_disk(
    store: &Vault,
    index: &DiskIndex,
    out: &Path,
    progress: &Progress,
    cancel: &CancelToken,
    threads: usize,
) -> Result<File, StoreError> {
    let folder = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let name = out
        .file_name()
        .ok_or_else(|| StoreError::Invalid(format!("{} does not name a file", out.display())))?;
    let dir = Dir::open_user(folder)
        .map_err(|e| TargetError::from_fsx(folder, "opening the target folder", e))?;
    restore_disk_at(store, index, &dir, name, progress, cancel, threads)
}

/// Restores the disk described by `index` to the new sparse file `name` in `dir` (an error
/// if anything is there, and the restore never replaces what appears there meanwhile).
/// Any missing or corrupt chunk fails the restore with an error naming the chunk, the slot
/// and the disk offset; every failure removes the partial output. `progress` gets the raw
/// bytes of each chunk restored added (holes are not counted: set the total to
/// [`DiskIndex::logical_bytes`]). Returns the placed file, open for reading.
pub fn restore_disk_at(
    store: &Vault,
    index: &DiskIndex,
    dir: &Dir,
    name: &OsStr,
    progress: &Progress,
    cancel: &CancelToken,
    threads: usize,
) -> Result<File, StoreError> {
    index.validate().map_err(|r| {
        StoreError::Invalid(format!("cannot restore from an invalid disk index: {r}"))
    })?;
    if cancel.is_cancelled() {
        return Err(StoreError::Cancelled);
    }
    let folder = dir.path();
    if dir
        .exists(name)
        .map_err(|e| TargetError::from_fsx(folder, "checking", e))?
    {
        return Err(exists_error(dir, name).into());
    }
    let partial = partial_name(name);
    let partial_path = dir.path_of(&partial);
    let file = dir.create_new_rw(&partial, 0o600).map_err(|e| {
        if e.is_exists() {
            TargetError::Leftover {
                path: partial_path.clone(),
            }
        } else {
            TargetError::from_fsx(folder, "creating", e)
        }
    })?;
    let target = DirectFile::new(file);
    let result = write_image(
        store,
        index,
        &target,
        &partial_path,
        progress,
        cancel,
        threads,
    )
    .and_then(|()| {
        target
            .file
            .sync_all()
            .map_err(|e| target_io(&partial_path, "flushing", e))
    })
    .and_then(|()| place(dir, &partial, dir, name, &target.file));
    let DirectFile { file, .. } = target;
    if let Err(e) = result {
        remove_if_ours(dir, &partial, &file);
        return Err(e);
    }
    Ok(file)
}

/// Moves the finished `partial` in `from` (the file `file`) to `name` in `dir` (on the same
/// file system) without replacing anything, checks that `name` now leads to that file, and
/// makes the move durable.
pub fn place(
    from: &Dir,
    partial: &OsStr,
    dir: &Dir,
    name: &OsStr,
    file: &File,
) -> Result<(), StoreError> {
    #[cfg(test)]
    hooks::before_placing();
    let folder = dir.path();
    from.rename_noreplace(partial, dir, name).map_err(|e| {
        if e.is_exists() {
            exists_error(dir, name)
        } else {
            TargetError::from_fsx(folder, "moving the restored image into place at", e)
        }
    })?;
    let ours = dir
        .holds(name, file.as_fd())
        .map_err(|e| TargetError::from_fsx(folder, "checking", e))?;
    if !ours {
        return Err(TargetError::Changed {
            path: dir.path_of(name),
        }
        .into());
    }
    dir.sync()
        .map_err(|e| TargetError::from_fsx(folder, "flushing the folder", e).into())
}

/// Removes `name` from `dir` if it is the file `file` (a file someone else put there
/// meanwhile is left alone).
pub fn remove_if_ours(dir: &Dir, name: &OsStr, file: &File) {
    if dir.holds(name, file.as_fd()).unwrap_or(false) {
        if let Err(e) = dir.remove_file(name) {
            tracing::warn!(error = %e, "could not remove a file of a failed restore");
        }
    }
}

#[cfg(test)]
pub(crate) mod hooks {
    //! A test's hook into a running restore (this thread only).
    use std::cell::RefCell;

    thread_local! {
        static BEFORE_PLACING: RefCell<Option<Box<dyn FnOnce()>>> = const { RefCell::new(None) };
    }

    /// Runs `f` once, just before the next restore on this thread places its image.
    pub fn on_placing(f: impl FnOnce() + 'static) {
        BEFORE_PLACING.with(|h| *h.borrow_mut() = Some(Box::new(f)));
    }

    pub(super) fn before_placing() {
        if let Some(f) = BEFORE_PLACING.with(|h| h.borrow_mut().take()) {
            f();
        }
    }
}

fn write_image(
    store: &Vault,
    index: &DiskIndex,
    file: &DirectFile,
    path: &Path,
    progress: &Progress,
    cancel: &CancelToken,
    threads: usize,
) -> Result<(), StoreError> {
    file.file
        .set_len(index.capacity)
        .map_err(|e| target_io(path, &format!("sizing to {} bytes", index.capacity), e))?;
    let preallocated = preallocate(&file.file, index)
        .map_err(|e| target_io(path, "sizing after a failed preallocation", e))?;
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
                let mut reader = match store.reader() {
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

/// An I/O error on the file `path` of the target folder while `what`.
fn target_io(path: &Path, what: &str, e: io::Error) -> StoreError {
    let folder = path.parent().unwrap_or(path);
    TargetError::io(folder, format!("{} ({what})", path.display()), e).into()
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
    store: &Vault,
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
    check_slot_len(d, raw.len(), index.slot_len(slot), || store.path_of(d))?;
    let offset = slot * u64::from(index.chunk_size);
    write_sparse(file, offset, raw, holes)
        .map_err(|e| target_io(path, &format!("writing at offset {offset}"), e))?;
    progress.add_done(raw.len() as u64);
    Ok(())
}

/// Checks that chunk `d`, `len` bytes long, fills a slot of `want` bytes: a sound chunk of
/// another length does not belong to this disk layout. `path` says where the chunk is.
pub(crate) fn check_slot_len(
    d: &Digest,
    len: usize,
    want: u64,
    path: impl FnOnce() -> PathBuf,
) -> Result<(), StoreError> {
    if len as u64 == want {
        return Ok(());
    }
    Err(StoreError::ChunkCorrupt {
        digest: *d,
        path: path(),
        reason: format!(
            "holds {len} bytes but the slot is {want} bytes (chunk {} does not belong to this disk layout)",
            digest_hex(d)
        ),
    })
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
    use super::super::testutil::{compressible, random, Tmpfs};
    use super::*;
    use std::fs::{self, OpenOptions};
    use std::os::unix::fs::MetadataExt;

    /// Restores `index` to `out` with `threads`, without progress or cancel.
    fn restore(s: &Vault, index: &DiskIndex, out: &Path, threads: usize) -> Result<(), StoreError> {
        restore_disk(
            s,
            index,
            out,
            &Progress::default(),
            &CancelToken::new(),
            threads,
        )
        .map(drop)
    }

    fn store_with(chunks: &[&[u8]]) -> (tempfile::TempDir, Vault, Vec<Digest>) {
        let t = tempfile::tempdir().unwrap();
        let s = Vault::open(&t.path().join("chunks")).unwrap();
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
        assert!(
            matches!(e, StoreError::Target(TargetError::Exists { .. })),
            "{e}"
        );
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

    /// A one-chunk disk in a fresh store, and the folder to restore it into.
    fn one_chunk_disk() -> (tempfile::TempDir, Vault, DiskIndex) {
        let (t, s, ds) = store_with(&[&random(1, 1 << 16)]);
        let index = DiskIndex {
            capacity: 1 << 20,
            chunk_size: 1 << 16,
            entries: vec![(0, ds[0])],
        };
        (t, s, index)
    }

    fn target_code(e: &StoreError) -> &'static str {
        match e {
            StoreError::Target(t) => t.code(),
            e => panic!("not a target error: {e}"),
        }
    }

    #[test]
    fn what_appears_at_the_target_while_restoring_is_kept() {
        let (t, s, index) = one_chunk_disk();
        let out = t.path().join("d.raw");
        // A file, then a dangling symlink, created while the image is written.
        let planted = out.clone();
        hooks::on_placing(move || fs::write(&planted, b"theirs").unwrap());
        let e = restore(&s, &index, &out, 2).unwrap_err();
        assert_eq!(target_code(&e), "RestoreTargetExists", "{e}");
        assert!(e.to_string().contains("never replaces"), "{e}");
        assert_eq!(fs::read(&out).unwrap(), b"theirs");
        assert!(!partial_path(&out).exists());

        let out = t.path().join("e.raw");
        let planted = out.clone();
        hooks::on_placing(move || std::os::unix::fs::symlink("/nonexistent", &planted).unwrap());
        let e = restore(&s, &index, &out, 2).unwrap_err();
        assert!(e.to_string().contains("a symbolic link"), "{e}");
        assert_eq!(fs::read_link(&out).unwrap(), Path::new("/nonexistent"));
        assert!(!partial_path(&out).exists());
    }

    #[test]
    fn a_partial_file_swapped_meanwhile_is_not_taken_for_the_image() {
        let (t, s, index) = one_chunk_disk();
        let out = t.path().join("d.raw");
        let (partial, moved) = (partial_path(&out), t.path().join("moved"));
        hooks::on_placing(move || {
            fs::rename(&partial, &moved).unwrap();
            fs::write(&partial, b"theirs").unwrap();
        });
        let e = restore(&s, &index, &out, 2).unwrap_err();
        assert_eq!(target_code(&e), "RestoreTargetChanged", "{e}");
    }

    #[test]
    fn names_planted_before_the_restore_are_refused_and_left_alone() {
        let (t, s, index) = one_chunk_disk();
        let victim = t.path().join("victim");
        fs::write(&victim, b"precious").unwrap();
        // A dangling symlink at the target counts as something there.
        let out = t.path().join("d.raw");
        std::os::unix::fs::symlink(t.path().join("nothing"), &out).unwrap();
        let e = restore(&s, &index, &out, 2).unwrap_err();
        assert_eq!(target_code(&e), "RestoreTargetExists", "{e}");
        assert!(fs::symlink_metadata(&out).unwrap().is_symlink());
        assert!(!t.path().join("nothing").exists());
        // A symlink at the `.partial` name is never written through.
        let out = t.path().join("e.raw");
        std::os::unix::fs::symlink(&victim, partial_path(&out)).unwrap();
        let e = restore(&s, &index, &out, 2).unwrap_err();
        assert_eq!(target_code(&e), "RestoreTargetInUse", "{e}");
        assert!(e.to_string().contains("e.raw.partial"), "{e}");
        assert_eq!(fs::read(&victim).unwrap(), b"precious");
        assert!(!out.exists());
    }

    #[test]
    fn a_full_or_read_only_target_is_the_target_s_problem() {
        // 4 MiB of incompressible data into 1 MiB.
        let chunks: Vec<Vec<u8>> = (0..4).map(|i| random(10 + i, 1 << 20)).collect();
        let refs: Vec<&[u8]> = chunks.iter().map(|c| c.as_slice()).collect();
        let (_t, s, ds) = store_with(&refs);
        let index = DiskIndex {
            capacity: 8 << 20,
            chunk_size: 1 << 20,
            entries: ds.iter().enumerate().map(|(i, d)| (i as u64, *d)).collect(),
        };
        let Some(small) = Tmpfs::mount("size=1m,mode=0700") else {
            return;
        };
        let out = small.path().join("d.raw");
        let e = restore(&s, &index, &out, 2).unwrap_err();
        assert_eq!(target_code(&e), "RestoreTargetFull", "{e}");
        let d = e.details();
        assert!(d.message.contains("No space left"), "{d:?}");
        assert!(d.recommendations[0].contains("df -h"), "{d:?}");
        assert!(!d.to_string().contains("verify"), "{d:?}");
        assert!(!out.exists() && !partial_path(&out).exists());
        let Some(ro) = Tmpfs::mount("size=1m,ro") else {
            return;
        };
        let e = restore(&s, &index, &ro.path().join("d.raw"), 2).unwrap_err();
        assert_eq!(target_code(&e), "RestoreTargetReadOnly", "{e}");
        assert!(e.details().recommendations[0].contains("read-write"), "{e}");
    }

    #[test]
    fn file_system_hints_name_a_folder_that_exists() {
        let dir = tempfile::tempdir().unwrap();
        let gone = dir.path().join(".d.raw.vmvault-convert");
        let e = TargetError::io(
            &gone,
            "writing converted",
            io::Error::from_raw_os_error(libc::ENOSPC),
        );
        let fix = e.fix();
        assert!(
            fix.contains(&format!("`df -h '{}'`", dir.path().display())),
            "{fix}"
        );
        assert!(!fix.contains("vmvault-convert"), "{fix}");
    }

    #[test]
    fn each_target_problem_has_its_own_code_and_fix() {
        let folder = Path::new("/srv/restore");
        let cases = [
            (libc::ENOSPC, "RestoreTargetFull", "Free space"),
            (libc::EDQUOT, "RestoreTargetFull", "quota"),
            (libc::EROFS, "RestoreTargetReadOnly", "read-write"),
            (libc::EACCES, "RestoreTargetAccessDenied", "may write"),
            (libc::EPERM, "RestoreTargetAccessDenied", "may write"),
            (libc::ENOENT, "RestoreTargetMissing", "create it again"),
            (libc::ENOTDIR, "RestoreTargetNotAFolder", "a file"),
            (libc::EFBIG, "RestoreTargetTooLarge", "large files"),
            (libc::EIO, "RestoreTargetError", "dmesg"),
        ];
        for (errno, code, fix) in cases {
            let e = StoreError::from(TargetError::io(
                folder,
                "writing /srv/restore/d.raw.partial",
                io::Error::from_raw_os_error(errno),
            ));
            let d = e.details();
            assert_eq!(d.code, code, "errno {errno}");
            assert!(d.recommendations[0].contains(fix), "{d:?}");
            assert!(d.recommendations[1].contains("intact"), "{d:?}");
            assert!(d.message.contains("d.raw.partial"), "{d:?}");
        }
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
        let f = DirectFile::new(f);
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
