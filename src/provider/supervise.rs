//! Child processes (`qemu-img`, `qemu-nbd`, `virsh`): every one is started here, so that it
//! dies with vmvault, and recorded, so that the next run ends any an earlier one left.
//!
//! # Dying with vmvault
//! A `qemu-nbd` that outlives a killed vmvault keeps the image's lock (the VM cannot
//! start); a `qemu-img convert` keeps writing. So each child asks the kernel for SIGKILL
//! when its parent goes away (`PR_SET_PDEATHSIG`). The kernel sends it when the *thread*
//! that forked the child exits, not the process: tokio's blocking threads exit after 10 s
//! idle, which would kill a long-lived qemu-nbd under a running backup. So every child is
//! forked by one spawner thread that lives as long as the process. A child forked just as
//! vmvault died would miss the signal: before exec it checks that its parent is still
//! the vmvault that forked it, and gives up otherwise.
//!
//! # Leftovers of an earlier run
//! The death signal covers every way vmvault can die, but not a child that was started by
//! an older vmvault, or a grandchild in the child's process group. Each child is recorded
//! in the data folder's `children/` folder (one owner-only file per child: its pid, start
//! time and executable, its command, and the vmvault process that owns it), and the record
//! is removed once the child is reaped. When vmvault starts ([`init`]), it ends the
//! recorded children whose owner is gone, only while their pid, start time and executable
//! still match the record (a pid the system gave to another process meanwhile is left
//! alone), and removes their records.
//!
//! Children run in their own process group: killing one ends what it started too (ssh for
//! `qemu+ssh://` connections).

use crate::fsx::{self, Dir};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::sync::{mpsc, Mutex, OnceLock};

/// The records of this process's children, once [`init`] found the data folder.
static REGISTRY: OnceLock<Registry> = OnceLock::new();

struct Registry {
    dir: Dir,
    owner: Proc,
}

/// A process as the system knows it: a pid alone may be reused, pid + start time is not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Proc {
    pid: u32,
    /// Clock ticks since boot (`/proc/PID/stat`, field 22).
    start: u64,
}

impl Proc {
    fn of(pid: u32) -> Option<Proc> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let f = stat_fields(&stat)?;
        Some(Proc {
            pid,
            start: f.get(19)?.parse().ok()?,
        })
    }

    fn me() -> Option<Proc> {
        Proc::of(std::process::id())
    }

    /// Whether this very process still runs (not only its pid).
    fn alive(&self) -> bool {
        Proc::of(self.pid).is_some_and(|p| p == *self)
    }
}

/// Fields of `/proc/PID/stat` after the command name (field 3, `state`, is index 0).
fn stat_fields(stat: &str) -> Option<Vec<&str>> {
    // The command name may hold spaces and parentheses: it ends at the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    Some(rest.split_whitespace().collect())
}

fn exe_of(pid: u32) -> Option<PathBuf> {
    std::fs::read_link(format!("/proc/{pid}/exe")).ok()
}

/// Finds the data folder's record of children and ends the leftovers of earlier runs.
/// Called once per process, when the data folder is known; without it children still die
/// with vmvault, they are only not recorded.
pub fn init(data_dir: &Path) {
    if REGISTRY.get().is_some() {
        return;
    }
    let dir = match Dir::open_private(&data_dir.join("children"), true) {
        Ok(d) => d,
        Err(e) => {
            tracing::warn!(error = %e, "child processes are not recorded (their leftovers cannot be ended by the next run)");
            return;
        }
    };
    let Some(owner) = Proc::me() else {
        tracing::warn!("cannot read /proc/self/stat: child processes are not recorded");
        return;
    };
    sweep(&dir);
    let _ = REGISTRY.set(Registry { dir, owner });
}

/// What one record says.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Record {
    owner: Proc,
    child: Proc,
    exe: PathBuf,
    command: String,
}

impl Record {
    fn file_name(&self) -> String {
        format!("{}-{}", self.child.pid, self.child.start)
    }

    fn to_text(&self) -> String {
        format!(
            "owner {} {}\nchild {} {}\nexe {}\ncommand {}\n",
            self.owner.pid,
            self.owner.start,
            self.child.pid,
            self.child.start,
            self.exe.display(),
            self.command.replace('\n', " ")
        )
    }

    fn parse(text: &str) -> Option<Record> {
        let mut owner = None;
        let mut child = None;
        let mut exe = None;
        let mut command = String::new();
        let proc_of = |v: &str| {
            let (p, s) = v.split_once(' ')?;
            Some(Proc {
                pid: p.parse().ok()?,
                start: s.parse().ok()?,
            })
        };
        for line in text.lines() {
            let (key, value) = line.split_once(' ')?;
            match key {
                "owner" => owner = proc_of(value),
                "child" => child = proc_of(value),
                "exe" => exe = Some(PathBuf::from(value)),
                "command" => command = value.to_string(),
                _ => {}
            }
        }
        Some(Record {
            owner: owner?,
            child: child?,
            exe: exe?,
            command,
        })
    }
}

/// Ends the recorded children whose owner is gone and removes their records; returns the
/// commands of the children it ended.
fn sweep(dir: &Dir) -> Vec<String> {
    let mut ended = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir.proc_path()) else {
        return ended;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let record = dir
            .open_read(&name)
            .ok()
            .and_then(|f| {
                let mut text = String::new();
                f.take(16 << 10).read_to_string(&mut text).ok()?;
                Some(text)
            })
            .and_then(|t| Record::parse(&t));
        let Some(record) = record else {
            // Not ours, or cut short by a crash while it was written: nothing to match.
            let _ = dir.remove_file(&name);
            continue;
        };
        if record.owner.alive() {
            continue; // another vmvault's child, still supervised
        }
        if end_if_same(&record) {
            tracing::info!(
                pid = record.child.pid,
                command = %record.command,
                "ended a child process that an earlier vmvault run left behind"
            );
            ended.push(record.command.clone());
        }
        let _ = dir.remove_file(&name);
    }
    ended
}

/// Kills the recorded child (and its process group) when the process with its pid is
/// still the one recorded: same start time, same executable.
fn end_if_same(r: &Record) -> bool {
    // A pidfd names one process for good: what is checked below is what gets the signal.
    let pidfd = pidfd_open(r.child.pid);
    if !r.child.alive() || exe_of(r.child.pid).as_deref() != Some(r.exe.as_path()) {
        return false;
    }
    let leads_group = std::fs::read_to_string(format!("/proc/{}/stat", r.child.pid))
        .ok()
        .and_then(|s| stat_fields(&s).and_then(|f| f.get(2).and_then(|g| g.parse::<u32>().ok())))
        == Some(r.child.pid);
    // SAFETY: plain signal sends; the group is the recorded child's own (checked above).
    unsafe {
        if leads_group {
            libc::kill(-(r.child.pid as libc::pid_t), libc::SIGKILL);
        }
        match &pidfd {
            Some(fd) => {
                libc::syscall(
                    libc::SYS_pidfd_send_signal,
                    fd.as_raw_fd(),
                    libc::SIGKILL,
                    std::ptr::null::<libc::siginfo_t>(),
                    0,
                );
            }
            None => {
                libc::kill(r.child.pid as libc::pid_t, libc::SIGKILL);
            }
        }
    }
    true
}

fn pidfd_open(pid: u32) -> Option<OwnedFd> {
    // SAFETY: pidfd_open returns a new descriptor (or -1), owned by the OwnedFd.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

// ---------------------------------------------------------------------------------------
// Spawning

struct SpawnRequest {
    cmd: Command,
    reply: mpsc::SyncSender<io::Result<Child>>,
}

/// The spawner thread's queue (None when the thread could not be started).
fn spawner() -> Option<&'static Mutex<mpsc::Sender<SpawnRequest>>> {
    static SPAWNER: OnceLock<Option<Mutex<mpsc::Sender<SpawnRequest>>>> = OnceLock::new();
    SPAWNER
        .get_or_init(|| {
            let (tx, rx) = mpsc::channel::<SpawnRequest>();
            std::thread::Builder::new()
                .name("vmvault-spawner".into())
                .spawn(move || {
                    // Lives as long as the process: the queue's sender is never dropped.
                    for mut req in rx {
                        let _ = req.reply.send(req.cmd.spawn());
                    }
                })
                .ok()
                .map(|_| Mutex::new(tx))
        })
        .as_ref()
}

/// A child process that dies with vmvault, is killed (with its process group) when
/// dropped, and is recorded in the data folder while it runs.
#[derive(Debug)]
pub struct Supervised {
    child: Child,
    /// Set once the child was waited for: its pid may then belong to another process.
    reaped: bool,
    record: Option<String>,
}

impl Supervised {
    /// Starts `cmd` in its own process group; the descriptors in `inherit` stay open in
    /// the child under the same numbers (for `/proc/self/fd/N` paths), all others are
    /// closed on exec as usual.
    pub fn spawn(mut cmd: Command, inherit: &[RawFd]) -> io::Result<Supervised> {
        let parent = std::process::id() as libc::pid_t;
        let inherit = inherit.to_vec();
        cmd.process_group(0);
        // SAFETY: the closure runs in the forked child before exec and calls only
        // async-signal-safe functions (fcntl, prctl, getppid); it allocates nothing.
        unsafe {
            cmd.pre_exec(move || {
                for &fd in &inherit {
                    if libc::fcntl(fd, libc::F_SETFD, 0) == -1 {
                        return Err(io::Error::last_os_error());
                    }
                }
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) == -1 {
                    return Err(io::Error::last_os_error());
                }
                // vmvault died between fork and prctl: the signal will never come.
                if libc::getppid() != parent {
                    return Err(io::Error::other("vmvault exited while starting the tool"));
                }
                Ok(())
            });
        }
        let child = match spawner() {
            Some(queue) => {
                let (reply, answer) = mpsc::sync_channel(1);
                queue
                    .lock()
                    .map_err(|_| io::Error::other("the spawner thread is gone"))?
                    .send(SpawnRequest { cmd, reply })
                    .map_err(|_| io::Error::other("the spawner thread is gone"))?;
                answer
                    .recv()
                    .map_err(|_| io::Error::other("the spawner thread is gone"))??
            }
            // No thread could be started: this thread forks (its exit would end the child).
            None => cmd.spawn()?,
        };
        let record = Self::record(&child);
        Ok(Supervised {
            child,
            reaped: false,
            record,
        })
    }

    fn record(child: &Child) -> Option<String> {
        let reg = REGISTRY.get()?;
        let proc = Proc::of(child.id())?;
        let record = Record {
            owner: reg.owner,
            child: proc,
            exe: exe_of(child.id())?,
            command: command_line(child.id()),
        };
        let name = record.file_name();
        let written = reg.dir.create_new(&name, 0o600).and_then(|mut f| {
            f.write_all(record.to_text().as_bytes())
                .map_err(|e| fsx::FsxError::Io {
                    path: reg.dir.path_of(&name),
                    source: e,
                })
        });
        match written {
            Ok(()) => Some(name),
            Err(e) => {
                tracing::warn!(error = %e, "could not record a child process");
                None
            }
        }
    }

    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// The child's pipes (`stdout`, `stderr`) to take.
    pub fn child_mut(&mut self) -> &mut Child {
        &mut self.child
    }

    /// The exit status once the child has exited.
    pub fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        let status = self.child.try_wait()?;
        if status.is_some() {
            self.reaped();
        }
        Ok(status)
    }

    /// Kills the child and its process group, and waits for it.
    pub fn kill(&mut self) {
        if self.reaped {
            return;
        }
        // SAFETY: the child is not reaped yet, so its pid (its process group's id) still
        // names it; kill with a negative pid signals that group.
        unsafe {
            libc::kill(-(self.child.id() as libc::pid_t), libc::SIGKILL);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.reaped();
    }

    fn reaped(&mut self) {
        self.reaped = true;
        if let (Some(name), Some(reg)) = (self.record.take(), REGISTRY.get()) {
            let _ = reg.dir.remove_file(name);
        }
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The child's command line, for records and messages.
fn command_line(pid: u32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|raw| {
            raw.split(|&b| b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn wait_gone(p: Proc) -> bool {
        let t0 = Instant::now();
        while p.alive() && t0.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(10));
        }
        !p.alive()
    }

    #[test]
    fn records_round_trip() {
        let r = Record {
            owner: Proc { pid: 10, start: 20 },
            child: Proc { pid: 30, start: 40 },
            exe: "/usr/bin/qemu-nbd".into(),
            command: "qemu-nbd --read-only\nx".into(),
        };
        let back = Record::parse(&r.to_text()).unwrap();
        assert_eq!(back.command, "qemu-nbd --read-only x");
        assert_eq!(
            (back.owner, back.child, back.exe),
            (r.owner, r.child, r.exe)
        );
        assert_eq!(Record::parse("owner 1 2\n"), None);
    }

    #[test]
    fn a_child_forked_by_a_thread_that_exits_lives_on_and_inherits_only_given_fds() {
        let dir = tempfile::tempdir().unwrap();
        let keep = std::fs::File::open(dir.path()).unwrap();
        let other = std::fs::File::open(dir.path()).unwrap();
        let (k, o) = (keep.as_raw_fd(), other.as_raw_fd());
        // The thread that asks for the child exits at once; the child must not die with it.
        let mut child = std::thread::spawn(move || {
            let mut cmd = Command::new("sh");
            cmd.args([
                "-c",
                &format!(
                    "test -e /proc/self/fd/{k} && ! test -e /proc/self/fd/{o} && exec sleep 30"
                ),
            ]);
            Supervised::spawn(cmd, &[k]).unwrap()
        })
        .join()
        .unwrap();
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(
            child.try_wait().unwrap(),
            None,
            "the child died early or saw the wrong descriptors"
        );
        let p = Proc::of(child.id()).unwrap();
        drop(child);
        assert!(wait_gone(p), "dropping a Supervised kills its child");
        drop((keep, other));
    }

    #[test]
    fn the_sweep_ends_only_recorded_children_of_owners_that_are_gone() {
        let data = tempfile::tempdir().unwrap();
        let dir = Dir::open_private(&data.path().join("children"), true).unwrap();
        let spawn_sleep = || {
            let mut c = Command::new("sleep");
            c.arg("60").process_group(0);
            c.spawn().unwrap()
        };
        let (mut left, mut kept, mut recycled) = (spawn_sleep(), spawn_sleep(), spawn_sleep());
        let me = Proc::me().unwrap();
        // An owner that is gone: our own pid with another start time.
        let gone = Proc {
            pid: me.pid,
            start: me.start + 1,
        };
        let write = |owner: Proc, child: &Child, start_delta: u64| {
            let mut p = Proc::of(child.id()).unwrap();
            p.start += start_delta;
            let r = Record {
                owner,
                child: p,
                exe: exe_of(child.id()).unwrap(),
                command: "sleep 60".into(),
            };
            dir.create_new(r.file_name(), 0o600)
                .unwrap()
                .write_all(r.to_text().as_bytes())
                .unwrap();
        };
        write(gone, &left, 0);
        write(me, &kept, 0); // its owner runs: left alone
        write(gone, &recycled, 1); // the pid now names another process: left alone
        dir.create_new("garbage", 0o600).unwrap();
        let ended = sweep(&dir);
        assert_eq!(ended, vec!["sleep 60".to_string()]);
        assert!(left.wait().unwrap().code().is_none(), "killed by a signal");
        assert_eq!(kept.try_wait().unwrap(), None);
        assert_eq!(recycled.try_wait().unwrap(), None);
        let rest: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(
            rest,
            vec![format!(
                "{}-{}",
                kept.id(),
                Proc::of(kept.id()).unwrap().start
            )]
        );
        for c in [&mut kept, &mut recycled] {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
