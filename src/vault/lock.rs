//! The vault lock: one owning process at a time.
//!
//! An advisory lock (`flock`) on `<vault>/vault.lock` held for the life of the process;
//! the kernel drops it when the process dies, so a killed process never leaves a stale
//! lock behind. The file records the owner's pid and command so that a second process
//! can say who holds the vault instead of hanging or corrupting it.
//!
//! The file is opened through the vault folder's handle ([`crate::fsx::Dir`]) without
//! following a symlink, only when it is a regular file of ours with one name, and is never
//! truncated before the lock is held: a `vault.lock` planted as a link to another file is
//! an error, never a file overwritten.

use crate::fsx::{Dir, FsxError};
use std::fs::{File, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// The lock file's name in the vault folder.
pub const LOCK_FILE: &str = "vault.lock";

impl LockError {
    /// Who holds the vault, for a sentence about it: "in use by process 42 (vmvault run)".
    pub fn holder(&self) -> Option<String> {
        match self {
            LockError::Busy { pid, command, .. } => {
                Some(format!("in use by process {pid} ({command})"))
            }
            LockError::Io { .. } | LockError::Unsafe { .. } => None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("vault {path} is in use by process {pid} ({command}); wait for it to finish or stop it, then try again")]
    Busy {
        path: PathBuf,
        pid: String,
        command: String,
    },
    #[error("cannot lock vault {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot lock vault {path}: {source}")]
    Unsafe {
        path: PathBuf,
        #[source]
        source: FsxError,
    },
}

/// Held while this process owns the vault.
#[derive(Debug)]
pub struct VaultLock {
    _file: File,
}

/// Longest owner command shown in messages, in characters.
pub(crate) const SHOWN_COMMAND_CHARS: usize = 72;

/// The owner's command line for people: the program's file name (not its whole path) and
/// its arguments; a long one is cut between arguments and ends with "…", never inside an
/// option or a path.
pub(crate) fn shown_command(recorded: &str) -> String {
    let mut words = recorded.split_whitespace();
    let Some(program) = words.next() else {
        return "vmvault".into();
    };
    let program = Path::new(program)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| program.to_string());
    let mut shown = program;
    for w in words {
        if shown.chars().count() + 1 + w.chars().count() > SHOWN_COMMAND_CHARS {
            shown.push_str(" …");
            break;
        }
        shown.push(' ');
        shown.push_str(w);
    }
    shown
}

/// Who holds a lock, as recorded in the lock file.
fn read_owner(file: &mut File) -> (String, String) {
    let mut text = String::new();
    let _ = file.seek(SeekFrom::Start(0));
    let _ = file.read_to_string(&mut text);
    let mut lines = text.lines();
    let pid = lines.next().unwrap_or("unknown").trim().to_string();
    let command = shown_command(lines.next().unwrap_or("vmvault"));
    (
        if pid.is_empty() {
            "unknown".into()
        } else {
            pid
        },
        command,
    )
}

impl VaultLock {
    /// Takes the lock of the vault in `dir`, or says who holds it.
    pub fn acquire(dir: &Dir) -> Result<VaultLock, LockError> {
        let path = dir.path_of(LOCK_FILE);
        let io = |source| LockError::Io {
            path: path.clone(),
            source,
        };
        let mut file =
            dir.open_or_create(LOCK_FILE, 0o600)
                .map_err(|source| LockError::Unsafe {
                    path: dir.path().to_path_buf(),
                    source,
                })?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let (pid, command) = read_owner(&mut file);
                return Err(LockError::Busy {
                    path: dir.path().to_path_buf(),
                    pid,
                    command,
                });
            }
            Err(TryLockError::Error(e)) => return Err(io(e)),
        }
        // The whole command line (shown_command shortens it for messages).
        let command: Vec<String> = std::env::args()
            .map(|a| a.replace(['\n', '\r'], " "))
            .collect();
        // Overwrite in place, then cut: a reader never sees an empty file once a pid was
        // written (it may see a stale one for an instant, which it cannot tell anyway).
        let text = format!("{}\n{}\n", std::process::id(), command.join(" "));
        file.seek(SeekFrom::Start(0)).map_err(io)?;
        file.write_all(text.as_bytes()).map_err(io)?;
        file.set_len(text.len() as u64).map_err(io)?;
        file.flush().map_err(io)?;
        Ok(VaultLock { _file: file })
    }

    /// Takes the lock, waiting up to two seconds while another process holds it (a
    /// process that only creates a new vault holds it for milliseconds).
    pub fn acquire_patiently(dir: &Dir) -> Result<VaultLock, LockError> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        loop {
            match VaultLock::acquire(dir) {
                Err(LockError::Busy { .. }) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                r => return r,
            }
        }
    }

    /// Who holds the lock of the vault in `dir` now (as a Busy error), if anyone.
    pub fn owner(dir: &Path) -> Option<LockError> {
        let mut file = open_for_reading(dir)?;
        match file.try_lock_shared() {
            Ok(()) => {
                let _ = file.unlock();
                None
            }
            Err(_) => {
                let (pid, command) = read_owner(&mut file);
                Some(LockError::Busy {
                    path: dir.to_path_buf(),
                    pid,
                    command,
                })
            }
        }
    }

    /// True when another process holds the lock of the vault in `dir` right now.
    pub fn is_held_elsewhere(dir: &Path) -> bool {
        match open_for_reading(dir) {
            Some(f) => match f.try_lock_shared() {
                Ok(()) => {
                    let _ = f.unlock();
                    false
                }
                Err(_) => true,
            },
            None => false,
        }
    }
}

/// The lock file of the vault in `dir`, opened for reading without following a symlink
/// (readers do not own the vault; a planted link is treated as no lock).
fn open_for_reading(dir: &Path) -> Option<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(dir.join(LOCK_FILE))
        .ok()
        .filter(|f| f.metadata().is_ok_and(|m| m.is_file()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vault_dir() -> (tempfile::TempDir, Dir) {
        let t = tempfile::tempdir().unwrap();
        let d = Dir::open_private(t.path(), false).unwrap();
        (t, d)
    }

    #[test]
    fn second_lock_names_the_owner() {
        let (dir, d) = vault_dir();
        let first = VaultLock::acquire(&d).unwrap();
        // flock locks belong to the open file description: a second open in the same
        // process conflicts exactly like another process would.
        match VaultLock::acquire(&d) {
            Err(LockError::Busy { pid, .. }) => assert_eq!(pid, std::process::id().to_string()),
            other => panic!("expected Busy, got {other:?}"),
        }
        assert!(VaultLock::is_held_elsewhere(dir.path()));
        drop(first);
        assert!(!VaultLock::is_held_elsewhere(dir.path()));
        VaultLock::acquire(&d).unwrap();
    }

    #[test]
    fn a_planted_lock_link_is_never_written_through() {
        let (dir, d) = vault_dir();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"root:secret\n").unwrap();
        std::os::unix::fs::symlink(&victim, dir.path().join(LOCK_FILE)).unwrap();
        let e = VaultLock::acquire(&d).unwrap_err();
        assert!(matches!(e, LockError::Unsafe { .. }), "{e}");
        assert!(e.to_string().contains("symbolic link"), "{e}");
        assert_eq!(std::fs::read(&victim).unwrap(), b"root:secret\n");
        // Readers do not follow it either (nothing of the victim reaches a message).
        assert!(VaultLock::owner(dir.path()).is_none());
        // A hard link to another file is refused too.
        std::fs::remove_file(dir.path().join(LOCK_FILE)).unwrap();
        std::fs::hard_link(&victim, dir.path().join(LOCK_FILE)).unwrap();
        assert!(VaultLock::acquire(&d).is_err());
        assert_eq!(std::fs::read(&victim).unwrap(), b"root:secret\n");
    }

    #[test]
    fn owner_command_is_whole_or_cut_between_arguments() {
        assert_eq!(
            shown_command("/work/target/debug/vmvault run --data-dir /srv/vmvault"),
            "vmvault run --data-dir /srv/vmvault"
        );
        let long = format!(
            "/usr/bin/vmvault --config /etc/vmvault/config.toml --data-dir {} run",
            "/srv/very/long/path/to/the/data/folder/of/this/vault"
        );
        let shown = shown_command(&long);
        assert_eq!(
            shown,
            "vmvault --config /etc/vmvault/config.toml --data-dir …"
        );
        assert!(shown.chars().count() <= SHOWN_COMMAND_CHARS + 2);
        assert_eq!(shown_command(""), "vmvault");
    }

    #[test]
    fn busy_error_names_the_holder_once() {
        let (dir, d) = vault_dir();
        let _first = VaultLock::acquire(&d).unwrap();
        let e = VaultLock::owner(dir.path()).expect("held");
        let holder = e.holder().expect("busy");
        assert!(holder.starts_with("in use by process "), "{holder}");
        assert!(!e.to_string().contains("is is"), "{e}");
    }
}
