//! The vault lock: one owning process at a time.
//!
//! An advisory lock (`flock`) on `<vault>/vault.lock` held for the life of the process;
//! the kernel drops it when the process dies, so a killed process never leaves a stale
//! lock behind. The file records the owner's pid and command so that a second process
//! can say who holds the vault instead of hanging or corrupting it.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

impl LockError {
    /// Who holds the vault, for a sentence about it: "in use by process 42 (vmvault run)".
    pub fn holder(&self) -> Option<String> {
        match self {
            LockError::Busy { pid, command, .. } => {
                Some(format!("in use by process {pid} ({command})"))
            }
            LockError::Io { .. } => None,
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
}

/// Held while this process owns the vault.
#[derive(Debug)]
pub struct VaultLock {
    _file: File,
}

/// Longest owner command shown in messages, in characters.
const SHOWN_COMMAND_CHARS: usize = 72;

/// The owner's command line for people: the program's file name (not its whole path) and
/// its arguments; a long one is cut between arguments and ends with "…", never inside an
/// option or a path.
fn shown_command(recorded: &str) -> String {
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
    pub fn acquire(dir: &Path) -> Result<VaultLock, LockError> {
        let path = dir.join("vault.lock");
        let io = |source| LockError::Io {
            path: path.clone(),
            source,
        };
        let mut opts = OpenOptions::new();
        opts.read(true).write(true).create(true).truncate(false);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut file = opts.open(&path).map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let (pid, command) = read_owner(&mut file);
                return Err(LockError::Busy {
                    path: dir.to_path_buf(),
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
    pub fn acquire_patiently(dir: &Path) -> Result<VaultLock, LockError> {
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
        let mut file = File::open(dir.join("vault.lock")).ok()?;
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
        match File::open(dir.join("vault.lock")) {
            Ok(f) => match f.try_lock_shared() {
                Ok(()) => {
                    let _ = f.unlock();
                    false
                }
                Err(_) => true,
            },
            Err(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_names_the_owner() {
        let dir = tempfile::tempdir().unwrap();
        let first = VaultLock::acquire(dir.path()).unwrap();
        // flock locks belong to the open file description: a second open in the same
        // process conflicts exactly like another process would.
        match VaultLock::acquire(dir.path()) {
            Err(LockError::Busy { pid, .. }) => assert_eq!(pid, std::process::id().to_string()),
            other => panic!("expected Busy, got {other:?}"),
        }
        assert!(VaultLock::is_held_elsewhere(dir.path()));
        drop(first);
        assert!(!VaultLock::is_held_elsewhere(dir.path()));
        VaultLock::acquire(dir.path()).unwrap();
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
        let dir = tempfile::tempdir().unwrap();
        let _first = VaultLock::acquire(dir.path()).unwrap();
        let e = VaultLock::owner(dir.path()).expect("held");
        let holder = e.holder().expect("busy");
        assert!(holder.starts_with("in use by process "), "{holder}");
        assert!(!e.to_string().contains("is is"), "{e}");
    }
}
