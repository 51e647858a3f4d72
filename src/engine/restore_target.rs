//! Where a restore writes: the target folder the user chose. vmvault does not own it, and
//! other users may be able to write in it, so it is trusted for nothing:
//! - it is checked before the job (a target problem the user must fix is a usage error:
//!   a name taken, even by a dangling symlink, a leftover work file, a read-only or
//!   unwritable folder, a file where the folder should be), then opened once; everything
//!   after goes through that handle ([`Dir`]);
//! - a raw image is written to `<name>.partial` and moved to `<name>` without replacing
//!   anything ([`store::restore_disk_at`]);
//! - a converted image (qcow2, vhd, vmdk) is made in a private work folder
//!   `.<name>.vmvault-convert` (mode 0700, inside the target folder so that the result can
//!   be moved, and writable by no one else): the raw image is restored there, qemu-img
//!   reaches it and its output through `/proc/self/fd/N` of that folder's handle, and the
//!   result is moved to `<name>` without replacing anything. The folder is removed on every
//!   path (success, failure, cancel); after a kill, the next owner of the vault removes it
//!   and `<name>.partial` ([`remove_leftovers`]), found from the targets the job recorded.

use crate::cancel::{CancelToken, Progress};
use crate::fsx::{Dir, FsxError};
use crate::provider::qemu::{self, ConvertError, DiskFormat};
use crate::provider::ProviderError;
use crate::vault::store::restore::{exists_error, partial_name, place, TargetError};
use crate::vault::store::{self, DiskIndex, StoreError, Vault};
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::path::Path;

/// The raw image inside a work folder, and its `.partial` while it is written.
const WORK_RAW: &str = "disk.raw";
/// qemu-img's output inside a work folder.
const WORK_CONVERTED: &str = "converted";

/// The private work folder of a converted restore of `name`.
fn work_dir_name(name: &OsStr) -> OsString {
    let mut s = OsString::from(".");
    s.push(name);
    s.push(".vmvault-convert");
    s
}

/// Why a restore of one disk failed.
#[derive(Debug)]
pub(crate) enum Failure {
    /// The vault's data, its storage, or the target (see [`StoreError::Target`]).
    Store(StoreError),
    /// The converter (qemu-img missing, failing, cancelled).
    Tool(ProviderError),
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Self {
        Failure::Store(e)
    }
}

impl From<TargetError> for Failure {
    fn from(e: TargetError) -> Self {
        Failure::Store(StoreError::Target(e))
    }
}

/// Checks, before a restore starts, that it can write `names` into `dir` (which the job
/// creates when missing). Every refusal names the problem and the fix.
pub(crate) fn check(dir: &Path, names: &[&OsStr]) -> Result<(), TargetError> {
    // The nearest folder that exists: the job creates the ones below it.
    let mut existing = dir;
    loop {
        match std::fs::metadata(existing) {
            Ok(_) => break,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if std::fs::symlink_metadata(existing).is_ok() {
                    return Err(TargetError::Refused(format!(
                        "{} is a symbolic link to nothing: give the path of a folder",
                        existing.display()
                    )));
                }
                match existing.parent() {
                    Some(p) if !p.as_os_str().is_empty() => existing = p,
                    _ => return Err(TargetError::io(dir, dir.display().to_string(), e)),
                }
            }
            Err(e) => return Err(TargetError::io(existing, existing.display().to_string(), e)),
        }
    }
    let d = Dir::open_user(existing).map_err(|e| TargetError::from_fsx(existing, "opening", e))?;
    let fs = d
        .fs_stat()
        .map_err(|e| TargetError::from_fsx(existing, "reading the file system of", e))?;
    if fs.read_only {
        return Err(TargetError::io(
            existing,
            existing.display().to_string(),
            io::Error::from_raw_os_error(libc::EROFS),
        ));
    }
    if !d.writable() {
        return Err(TargetError::io(
            existing,
            format!("creating files in {}", existing.display()),
            io::Error::from_raw_os_error(libc::EACCES),
        ));
    }
    if existing != dir {
        return Ok(());
    }
    for name in names {
        let taken = |n: &OsStr| {
            d.exists(n)
                .map_err(|e| TargetError::from_fsx(dir, "checking", e))
        };
        if taken(name)? {
            return Err(exists_error(&d, name));
        }
        for work in [partial_name(name), work_dir_name(name)] {
            if taken(&work)? {
                return Err(TargetError::Leftover {
                    path: d.path_of(&work),
                });
            }
        }
    }
    Ok(())
}

/// Opens the target folder for a restore job, creating it (mode 0700) when missing.
pub(crate) fn open(dir: &Path) -> Result<Dir, TargetError> {
    super::create_private_dir(dir)
        .map_err(|e| TargetError::io(dir, format!("creating the folder {}", dir.display()), e))?;
    Dir::open_user(dir).map_err(|e| TargetError::from_fsx(dir, "opening the folder", e))
}

/// A private folder for one conversion, inside the target folder; removed when dropped.
struct Workspace<'t> {
    target: &'t Dir,
    name: OsString,
    dir: Dir,
}

impl<'t> Workspace<'t> {
    fn create(target: &'t Dir, image: &OsStr) -> Result<Workspace<'t>, TargetError> {
        let name = work_dir_name(image);
        let dir = target.create_subdir(&name).map_err(|e| {
            if e.is_exists() {
                TargetError::Leftover {
                    path: target.path_of(&name),
                }
            } else {
                TargetError::from_fsx(target.path(), "creating the work folder", e)
            }
        })?;
        Ok(Workspace { target, name, dir })
    }
}

impl Drop for Workspace<'_> {
    fn drop(&mut self) {
        clear_work_dir(&self.dir);
        // Only our folder: whoever can write the target folder may have renamed it away
        // and put another there (they gain nothing: we reach ours by its handle).
        if self
            .target
            .holds(&self.name, self.dir.fd())
            .unwrap_or(false)
        {
            if let Err(e) = self.target.remove_dir(&self.name) {
                tracing::warn!(error = %e, "could not remove the restore's work folder");
            }
        }
    }
}

/// Removes the files a conversion makes in its work folder.
fn clear_work_dir(dir: &Dir) {
    let partial = partial_name(OsStr::new(WORK_RAW));
    for name in [OsStr::new(WORK_RAW), &partial, OsStr::new(WORK_CONVERTED)] {
        match dir.remove_file(name) {
            Ok(()) => {}
            Err(e)
                if e.io_error()
                    .is_some_and(|e| e.kind() == io::ErrorKind::NotFound) => {}
            Err(e) => tracing::warn!(error = %e, "could not remove a work file of a restore"),
        }
    }
}

/// Restores one disk as `name` in `target`, converted to `format` (see the module docs).
/// Returns the placed image, open.
#[allow(clippy::too_many_arguments)]
pub(crate) fn restore_converted(
    store: &Vault,
    index: &DiskIndex,
    target: &Dir,
    name: &OsStr,
    format: DiskFormat,
    progress: &Progress,
    cancel: &CancelToken,
    threads: usize,
) -> Result<File, Failure> {
    if target
        .exists(name)
        .map_err(|e| TargetError::from_fsx(target.path(), "checking", e))?
    {
        return Err(exists_error(target, name).into());
    }
    let work = Workspace::create(target, name)?;
    let raw = OsStr::new(WORK_RAW);
    store::restore_disk_at(store, index, &work.dir, raw, progress, cancel, threads)?;
    let converted = qemu::convert_raw(&work.dir, WORK_RAW, format, WORK_CONVERTED, cancel)
        .map_err(|e| match e {
            ConvertError::Io(e) => {
                Failure::from(TargetError::from_fsx(target.path(), "converting into", e))
            }
            ConvertError::Tool(e) => Failure::Tool(e),
        })?;
    place(
        &work.dir,
        OsStr::new(WORK_CONVERTED),
        target,
        name,
        &converted,
    )?;
    Ok(converted)
}

/// Removes what a restore into `target` (a file the job recorded) left when its process
/// died: `<name>.partial` and the work folder with its files. Finished images are kept.
pub(crate) fn remove_leftovers(job_id: &str, target: &Path) {
    let (Some(folder), Some(name)) = (target.parent(), target.file_name()) else {
        return;
    };
    let dir = match Dir::open_user(folder) {
        Ok(d) => d,
        Err(e) if is_not_found(&e) => return,
        Err(e) => {
            tracing::warn!(job = %job_id, error = %e, "could not look for the leftovers of an interrupted restore");
            return;
        }
    };
    let removed = |what: &Path| {
        tracing::info!(job = %job_id, file = %what.display(), "removed a half-written file of an interrupted restore");
    };
    let failed = |what: &Path, e: &FsxError| {
        tracing::warn!(job = %job_id, file = %what.display(), error = %e, "could not remove a half-written file of an interrupted restore");
    };
    let partial = partial_name(name);
    match dir.remove_file(&partial) {
        Ok(()) => removed(&dir.path_of(&partial)),
        Err(e) if is_not_found(&e) => {}
        Err(e) => failed(&dir.path_of(&partial), &e),
    }
    let work = work_dir_name(name);
    // Only a private folder of ours (never through a symlink) is entered and emptied.
    match dir.subdir(&work, false) {
        Ok(w) => {
            clear_work_dir(&w);
            match dir.remove_dir(&work) {
                Ok(()) => removed(&dir.path_of(&work)),
                Err(e) => failed(&dir.path_of(&work), &e),
            }
        }
        Err(e) if is_not_found(&e) => {}
        Err(e) => failed(&dir.path_of(&work), &e),
    }
}

fn is_not_found(e: &FsxError) -> bool {
    e.io_error()
        .is_some_and(|e| e.kind() == io::ErrorKind::NotFound)
}
