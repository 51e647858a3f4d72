//! The vault lock in object storage: a lease, one owning process at a time for a vault
//! whose objects live in an S3 bucket or an Azure Blob container.
//!
//! A vault in a local folder is locked with `flock` ([`super::lock`]), which the kernel
//! drops when its owner dies. A bucket has no such thing: the lock is an object, and since
//! a dead owner cannot delete it, it carries an expiry that its owner pushes forward while
//! it runs (a lease). Only the operations of [`Backend`] are used: `create` (a conditional
//! create, If-None-Match), `put` (overwrite), `get`, `list` and `delete`; there is no
//! conditional update or delete.
//!
//! # The protocol
//! - **Lock objects** are [`ObjectKind::Lock`] objects named `exclusive.<gen>`, `<gen>` a
//!   generation number of 20 decimal digits (zero-padded, so names sort as numbers). Names
//!   that do not parse are not lock objects of this protocol and are ignored. Each holds a
//!   small TOML text: `state = "held"` with the owner's host, pid, the pid's start time
//!   (`/proc/<pid>/stat` field 22), boot id and pid namespace, its command, a random token,
//!   when it was acquired and when it expires (unix ms); or `state = "free"`, a marker that
//!   is held by nobody (see below).
//! - **Who holds the vault** is decided by the object with the highest generation alone:
//!   it is live when it is `held` and its expiry (unix ms, by the reader's clock) has not
//!   passed. Lower objects are leftovers and never count. An object that cannot be read
//!   (damaged, foreign, more than 64 KiB) counts as live until one TTL after it was last
//!   written, so garbage delays the next owner but never lets two in.
//! - **A dead owner on this machine** is gone at once: when a live lock names this host,
//!   this kernel's boot id and this pid namespace, and its pid is not running (or runs
//!   with another start time: reused), its expiry is not waited for.
//! - **Acquire**: list the lock objects and read the highest. Live: [`LeaseError::Busy`],
//!   naming the holder. Otherwise `create` the next generation, `highest + 1` (or the
//!   floor that a `free` marker records, if higher). Exactly one of several racers
//!   creates it; the others get `AlreadyExists` and read the winner for their Busy
//!   message. The winner deletes the lower objects (best effort).
//! - **No lock object at all** (a new vault, or all removed by hand): the racers first
//!   `create` the marker `exclusive.00000000000000000000`, `free`, with a floor of the
//!   creator's clock in unix ms, then start over and read it like any highest object. So
//!   generations start from the clock and, as each takeover adds one, stay above every
//!   earlier one even after a wipe (unless there were more takeovers than milliseconds).
//! - **Refresh**: a thread of the owner wakes every [`LeaseOptions::refresh_every`]: it
//!   reads its own object (missing, or another token: lost), lists (a higher generation:
//!   lost; lower leftovers are deleted), then `put`s its object again with a new expiry.
//!   A refresh that fails for the storage's sake is tried again at the next tick; when
//!   the expiry comes without a successful one, the lease is lost. Lost stays lost: the
//!   object is never written again, and [`StorageLock::check`] fails from then on.
//! - **Release** (explicit, or on drop): stop the thread; if the object still holds our
//!   token, `create` the `free` marker `exclusive.<gen + 1>` and delete our object. The
//!   marker frees the vault at once and keeps generations rising (the next owner takes
//!   `gen + 2` and deletes the marker).
//!
//! # Why it is safe
//! - A generation is a pure function of what its creator saw (the highest object, and
//!   the marker's floor), and `create` of one name has one winner: two processes that
//!   saw the same state race for the same name. Clock-derived names would let two racers
//!   both win, each the highest in its own listing.
//! - `gen + 1` is created only by someone who saw `gen` not live (expired, released,
//!   dead). Listings reflect every create that returned before them, so whoever lists
//!   after a lock was created sees it as the highest, or sees something higher.
//! - The owner stops trusting its lock a tenth of the TTL before the expiry it wrote
//!   (timed by its monotonic clock from before the write), so others' expiry arrives
//!   after it stopped, with that much room for clock differences between machines.
//! - A refresh's `put` is not conditional. If it lands after a takeover deleted the
//!   object, it puts back an object lower than the new owner's: no one counts it, its
//!   writer learns of the loss at the next tick, and the next cleanup deletes it.
//!
//! # What it cannot do
//! - Stop a process that does not ask: an owner checks [`StorageLock::check`] before
//!   each commit or delete, and a process that stalls (suspended, swapping) between that
//!   check and its write may write after its lease ran out. The other objects of the vault
//!   have no conditional writes to fence it off with. Keep the TTL well above the longest
//!   step between two checks.
//! - Work with clocks that disagree by more than a tenth of the TTL (12 s of the default
//!   120 s): expiries are compared across machines. Run NTP.
//! - Tell a dead owner on another machine from a slow one: it waits for the expiry.

use super::backend::{Backend, BackendError, Created, ObjectInfo, ObjectKind, ObjectName};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::Path;
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The names of lock objects: this, then the generation.
const PREFIX: &str = "exclusive.";

/// Digits of a generation in a name.
const GEN_DIGITS: usize = 20;

/// The largest lock object read; larger ones are unreadable.
const MAX_OBJECT_BYTES: u64 = 64 * 1024;

/// Tries of one acquire while the lock objects change under it (a holder that released
/// between the listing and the read, a racer's marker).
const MAX_ROUNDS: usize = 8;

/// How often [`StorageLock::acquire_patiently`] tries again.
const RETRY_EVERY: Duration = Duration::from_millis(200);

/// The longest command recorded, in characters.
const COMMAND_CHARS: usize = 200;

/// The shortest refresh interval (a zero one would spin).
const MIN_REFRESH: Duration = Duration::from_millis(10);

/// The version of the lock objects' text.
const FORMAT: u32 = 1;

/// How long a lease lasts and how often its owner refreshes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseOptions {
    /// How long a lock lasts after each refresh; also how long an unreadable lock object
    /// counts as held after it was written. Default 120 s.
    pub ttl: Duration,
    /// How often the owner refreshes its lock; well below `ttl`, so that a refresh or two
    /// may fail (the network) before the lock expires. Default `ttl / 3`.
    pub refresh_every: Duration,
}

impl LeaseOptions {
    /// A lease of `ttl`, refreshed every third of it.
    pub fn with_ttl(ttl: Duration) -> LeaseOptions {
        LeaseOptions {
            ttl,
            refresh_every: ttl / 3,
        }
    }

    /// How long before the expiry it wrote the owner stops trusting its lock.
    fn margin(&self) -> Duration {
        self.ttl / 10
    }
}

impl Default for LeaseOptions {
    fn default() -> LeaseOptions {
        LeaseOptions::with_ttl(Duration::from_secs(120))
    }
}

/// Who holds a vault, as its lock object says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    /// The owner's host name, as recorded (escape it to show it: it comes from storage).
    pub host: String,
    pub pid: u32,
    /// The owner's command line, as recorded.
    pub command: String,
    /// When the lock expires unless its owner refreshes it.
    pub expires: SystemTime,
    /// The lock object's generation.
    pub generation: u64,
    /// The lock object cannot be read (damaged, foreign): `host`, `pid` and `command`
    /// are unknown, and it counts as held until one TTL after it was last written.
    pub unreadable: bool,
}

impl fmt::Display for Holder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.unreadable {
            return write!(
                f,
                "an unreadable lock object ({})",
                lock_name(self.generation)
            );
        }
        write!(
            f,
            "process {} ({}) on host {}",
            self.pid,
            crate::fmt::echo_at_most(
                &super::lock::shown_command(&self.command),
                super::lock::SHOWN_COMMAND_CHARS + 8
            ),
            crate::fmt::echo_at_most(&self.host, 80),
        )
    }
}

/// Why a vault's lock cannot be taken or is no longer held.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    /// Another process holds the vault.
    #[error("{}", busy_message(location, holder))]
    Busy { location: String, holder: Holder },
    /// This process held the vault and no longer does: its lock expired, or was taken
    /// over or removed. It must stop writing to the vault.
    #[error("the lock of vault {} was lost: {why}; this process stops writing to the vault. Run the job again when the vault is free", crate::fmt::escape(location))]
    Lost { location: String, why: String },
    /// The lock objects kept changing while this process tried to take the lock (others
    /// taking and releasing it).
    #[error(
        "vault {} is being locked and released by other processes all the time; try again",
        crate::fmt::escape(location)
    )]
    Contended { location: String },
    /// The highest lock object has the highest generation there can be: no lock can
    /// follow it.
    #[error("the lock object {name} of vault {} has the highest generation there can be, so no lock can follow it; once no vmvault process works on the vault, delete it", crate::fmt::escape(location))]
    Stuck { location: String, name: String },
    /// The thread that refreshes the lock could not be started (the lock was given back).
    #[error(
        "cannot start the thread that keeps the lock of vault {}: {source}",
        crate::fmt::escape(location)
    )]
    Refresher {
        location: String,
        #[source]
        source: std::io::Error,
    },
    /// The storage failed.
    #[error(transparent)]
    Storage(#[from] BackendError),
}

fn busy_message(location: &str, holder: &Holder) -> String {
    let location = crate::fmt::escape(location);
    let expires = DateTime::<Utc>::from(holder.expires);
    let clock = expires.format("%H:%M:%S UTC");
    let full = expires.format("%Y-%m-%d %H:%M:%S UTC");
    if holder.unreadable {
        return format!(
            "vault {location} is locked by {holder}, which counts as held until {clock}; if no vmvault process works on the vault, wait until then, or delete that object"
        );
    }
    format!(
        "vault {location} is in use by {holder} until {clock} unless it refreshes its lock; wait for it to finish or stop it, then try again. If that host is gone for good, the lock expires by itself at {full}"
    )
}

/// Held while this process owns a vault in object storage; a thread refreshes it. Released
/// by [`StorageLock::release`] or when dropped.
pub struct StorageLock {
    inner: Arc<Inner>,
    /// Dropped to stop the refresh thread.
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
    /// Released already (by `release`, before its drop).
    done: bool,
}

impl fmt::Debug for StorageLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StorageLock")
            .field("location", &self.inner.backend.location())
            .field("generation", &self.inner.generation)
            .field("lost", &self.inner.lost_why())
            .finish_non_exhaustive()
    }
}

impl StorageLock {
    /// Takes the lock of the vault in `backend`, or says who holds it
    /// ([`LeaseError::Busy`]). See the module docs for how.
    pub fn acquire(
        backend: Arc<dyn Backend>,
        opts: &LeaseOptions,
    ) -> Result<StorageLock, LeaseError> {
        let me = Me::now();
        for _ in 0..MAX_ROUNDS {
            if let Some(won) = try_once(&*backend, opts, &me)? {
                return StorageLock::start(backend, opts, me, won);
            }
        }
        Err(LeaseError::Contended {
            location: backend.location().to_string(),
        })
    }

    /// Takes the lock, waiting up to `patience` while another process holds it (trying
    /// again every 200 ms).
    pub fn acquire_patiently(
        backend: Arc<dyn Backend>,
        opts: &LeaseOptions,
        patience: Duration,
    ) -> Result<StorageLock, LeaseError> {
        let deadline = Instant::now() + patience;
        loop {
            match StorageLock::acquire(backend.clone(), opts) {
                Err(LeaseError::Busy { .. } | LeaseError::Contended { .. })
                    if Instant::now() < deadline =>
                {
                    let left = deadline.saturating_duration_since(Instant::now());
                    std::thread::sleep(RETRY_EVERY.min(left));
                }
                r => return r,
            }
        }
    }

    /// True once the lock is lost (taken over, removed, or not refreshed in time).
    pub fn is_lost(&self) -> bool {
        self.inner.is_lost()
    }

    /// `Err(LeaseError::Lost)` once the lock is lost: callers check this before each
    /// commit or delete.
    pub fn check(&self) -> Result<(), LeaseError> {
        match self.inner.is_lost() {
            false => Ok(()),
            true => Err(self.inner.lost_error()),
        }
    }

    /// The generation of this lock (higher than that of every earlier lock of the vault).
    pub fn generation(&self) -> u64 {
        self.inner.generation
    }

    /// Stops refreshing and gives the vault back. `Err(Lost)` if the lock was lost before
    /// (then nothing is deleted: the lock object, if any, is someone else's).
    pub fn release(mut self) -> Result<(), LeaseError> {
        self.finish()
    }

    /// Who holds the vault in `backend` now (None: nobody live), without taking it. An
    /// unreadable lock object counts as held for the default TTL after it was written.
    pub fn holder(backend: &dyn Backend) -> Result<Option<Holder>, LeaseError> {
        let opts = LeaseOptions::default();
        let objects = list_generations(backend)?;
        let Some((generation, info)) = objects.into_iter().max_by_key(|(g, _)| *g) else {
            return Ok(None);
        };
        match judge(backend, generation, &info, opts.ttl)? {
            Seen::Live(holder) => Ok(Some(holder)),
            Seen::Free { .. } | Seen::Vanished => Ok(None),
        }
    }

    /// Starts the refresh thread of a lock just won.
    fn start(
        backend: Arc<dyn Backend>,
        opts: &LeaseOptions,
        me: Me,
        won: Won,
    ) -> Result<StorageLock, LeaseError> {
        let inner = Arc::new(Inner {
            name: lock_name(won.generation),
            generation: won.generation,
            token: won.token,
            opts: opts.clone(),
            me,
            backend,
            state: Mutex::new(State {
                lost: None,
                valid_until: won.valid_until,
            }),
        });
        let (tx, rx) = mpsc::channel::<()>();
        let every = opts.refresh_every.max(MIN_REFRESH);
        let worker = inner.clone();
        let spawned = std::thread::Builder::new()
            .name("vmvault-lease".into())
            .spawn(move || loop {
                match rx.recv_timeout(every) {
                    Err(mpsc::RecvTimeoutError::Timeout) => {
                        worker.refresh();
                        if worker.is_lost() {
                            return;
                        }
                    }
                    // Stopped (the sender was dropped).
                    Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => return,
                }
            });
        match spawned {
            Ok(thread) => Ok(StorageLock {
                inner,
                stop: Some(tx),
                thread: Some(thread),
                done: false,
            }),
            Err(source) => {
                let location = inner.backend.location().to_string();
                if let Err(e) = inner.give_back() {
                    tracing::warn!(error = %e, "could not give back the lock of a vault");
                }
                Err(LeaseError::Refresher { location, source })
            }
        }
    }

    /// Stops the thread, then gives the lock back if it is still ours.
    fn finish(&mut self) -> Result<(), LeaseError> {
        if std::mem::replace(&mut self.done, true) {
            return Ok(());
        }
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            // The thread never panics on purpose; if it did, the lock is still given back.
            let _ = thread.join();
        }
        // Lost by now if its expiry came without a refresh.
        let was_lost = self.inner.is_lost();
        let given_back = self.inner.give_back()?;
        match (was_lost, given_back) {
            (false, true) => Ok(()),
            (true, _) => Err(self.inner.lost_error()),
            (false, false) => {
                self.inner
                    .mark_lost("it was removed or taken over before this process released it");
                Err(self.inner.lost_error())
            }
        }
    }
}

impl Drop for StorageLock {
    fn drop(&mut self) {
        match self.finish() {
            Ok(()) => {}
            // Said when it was lost.
            Err(LeaseError::Lost { .. }) => {}
            Err(e) => tracing::error!(
                error = %e,
                "could not release the lock of the vault; it expires by itself"
            ),
        }
    }
}

/// The value of a mutex that a panic may have poisoned (every change is one assignment).
fn guard<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// What the owner and its refresh thread share.
struct Inner {
    backend: Arc<dyn Backend>,
    name: ObjectName,
    generation: u64,
    token: String,
    opts: LeaseOptions,
    me: Me,
    state: Mutex<State>,
}

struct State {
    /// Why the lock was lost, once it is.
    lost: Option<String>,
    /// When the owner stops trusting its lock: a margin before the expiry last written,
    /// timed from before that write.
    valid_until: Instant,
}

impl Inner {
    fn lost_why(&self) -> Option<String> {
        guard(&self.state).lost.clone()
    }

    fn is_lost(&self) -> bool {
        let expired = {
            let st = guard(&self.state);
            if st.lost.is_some() {
                return true;
            }
            Instant::now() >= st.valid_until
        };
        if expired {
            self.mark_lost(
                "it was not refreshed before it expired (the storage did not answer, or this process stalled)",
            );
        }
        expired
    }

    /// Records the loss and says so, once.
    fn mark_lost(&self, why: &str) {
        let mut st = guard(&self.state);
        if st.lost.is_some() {
            return;
        }
        st.lost = Some(why.to_string());
        drop(st);
        tracing::error!(
            location = %crate::fmt::escape(self.backend.location()),
            generation = self.generation,
            "{}",
            self.lost_error()
        );
    }

    fn lost_error(&self) -> LeaseError {
        LeaseError::Lost {
            location: self.backend.location().to_string(),
            why: self.lost_why().unwrap_or_else(|| "it expired".to_string()),
        }
    }

    /// One refresh: see the module docs. Storage errors leave the lock as it is, to be
    /// tried again at the next tick (or lost when the expiry comes first).
    fn refresh(&self) {
        if self.is_lost() {
            return;
        }
        let backend = &*self.backend;
        let mut buf = Vec::new();
        match backend.get_into(ObjectKind::Lock, &self.name, &mut buf, MAX_OBJECT_BYTES) {
            Ok(()) => match parse(&buf) {
                Content::Held(h) if h.token == self.token => {}
                Content::Held(h) => {
                    let holder = h.holder(self.generation);
                    return self.mark_lost(&format!("its lock object was replaced by {holder}"));
                }
                Content::Free { .. } | Content::Unreadable => {
                    return self.mark_lost("its lock object was replaced by something else")
                }
            },
            Err(e) if e.is_not_found() => {
                return self.mark_lost("its lock object was removed (taken over, or deleted)")
            }
            Err(BackendError::TooLarge { .. }) => {
                return self.mark_lost("its lock object was replaced by something else")
            }
            Err(e) => return self.transient(&e),
        }
        let objects = match list_generations(backend) {
            Ok(objects) => objects,
            Err(e) => return self.transient(&e),
        };
        if let Some((higher, info)) = objects
            .iter()
            .filter(|(g, _)| *g > self.generation)
            .max_by_key(|(g, _)| *g)
        {
            let by = match judge(backend, *higher, info, self.opts.ttl) {
                Ok(Seen::Live(holder)) => holder.to_string(),
                _ => format!("the lock object {}", lock_name(*higher)),
            };
            return self.mark_lost(&format!("it was taken over by {by}"));
        }
        delete_lower(backend, &objects, self.generation);
        // The last chance to notice an expiry before writing again.
        if self.is_lost() {
            return;
        }
        let started = Instant::now();
        let record = self
            .me
            .record(&self.token, later(SystemTime::now(), self.opts.ttl));
        match backend.put(ObjectKind::Lock, &self.name, record.as_bytes()) {
            Ok(()) => {
                let mut st = guard(&self.state);
                if st.lost.is_none() {
                    st.valid_until = valid_until(started, &self.opts);
                }
            }
            Err(e) => self.transient(&e),
        }
    }

    fn transient(&self, e: &BackendError) {
        tracing::warn!(
            error = %e,
            "could not refresh the lock of the vault; trying again at the next tick"
        );
    }

    /// Deletes the lock object if it still holds our token, after creating the `free`
    /// marker above it. True when it was ours.
    fn give_back(&self) -> Result<bool, LeaseError> {
        let backend = &*self.backend;
        let mut buf = Vec::new();
        match backend.get_into(ObjectKind::Lock, &self.name, &mut buf, MAX_OBJECT_BYTES) {
            Ok(()) => match parse(&buf) {
                Content::Held(h) if h.token == self.token => {}
                _ => return Ok(false),
            },
            Err(e) if e.is_not_found() => return Ok(false),
            Err(BackendError::TooLarge { .. }) => return Ok(false),
            Err(e) => return Err(e.into()),
        }
        // The marker frees the vault by itself; without it (it failed) the delete does.
        if let Some(next) = self.generation.checked_add(1) {
            if let Err(e) = backend.create(ObjectKind::Lock, &lock_name(next), &free_record(None)) {
                tracing::warn!(error = %e, "could not mark the lock of the vault free");
            }
        }
        backend.delete(ObjectKind::Lock, &self.name)?;
        Ok(true)
    }
}

/// A lock just won.
struct Won {
    generation: u64,
    token: String,
    valid_until: Instant,
}

/// One try at the lock: won, busy (an error), or the objects changed (None: try again).
fn try_once(
    backend: &dyn Backend,
    opts: &LeaseOptions,
    me: &Me,
) -> Result<Option<Won>, LeaseError> {
    let location = || backend.location().to_string();
    let objects = list_generations(backend)?;
    let Some((highest, info)) = objects.iter().max_by_key(|(g, _)| *g) else {
        // The first lock (or all were removed): a marker with the clock's floor first, so
        // that every racer then computes the same generation from it.
        let floor = unix_ms(SystemTime::now());
        let _: Created =
            backend.create(ObjectKind::Lock, &lock_name(0), &free_record(Some(floor)))?;
        return Ok(None);
    };
    let next = match judge(backend, *highest, info, opts.ttl)? {
        Seen::Live(holder) => {
            return Err(LeaseError::Busy {
                location: location(),
                holder,
            })
        }
        Seen::Vanished => return Ok(None),
        Seen::Free { next: Some(next) } => next,
        Seen::Free { next: None } => {
            return Err(LeaseError::Stuck {
                location: location(),
                name: lock_name(*highest).to_string(),
            })
        }
    };
    let token = uuid::Uuid::new_v4().simple().to_string();
    let started = Instant::now();
    let record = me.record(&token, later(SystemTime::now(), opts.ttl));
    let name = lock_name(next);
    match backend.create(ObjectKind::Lock, &name, record.as_bytes())? {
        Created::New => {}
        Created::AlreadyExists => {
            // A racer won: it is the holder (unless it is gone again already).
            let Some(info) = backend.stat(ObjectKind::Lock, &name)? else {
                return Ok(None);
            };
            return match judge(backend, next, &info, opts.ttl)? {
                Seen::Live(holder) => Err(LeaseError::Busy {
                    location: location(),
                    holder,
                }),
                Seen::Free { .. } | Seen::Vanished => Ok(None),
            };
        }
    }
    delete_lower(backend, &objects, next);
    Ok(Some(Won {
        generation: next,
        token,
        valid_until: valid_until(started, opts),
    }))
}

/// Deletes the lock objects below `generation` (best effort: leftovers never count, and
/// the next cleanup tries again).
fn delete_lower(backend: &dyn Backend, objects: &[(u64, ObjectInfo)], generation: u64) {
    for (_, info) in objects.iter().filter(|(g, _)| *g < generation) {
        if let Err(e) = backend.delete(ObjectKind::Lock, &info.name) {
            tracing::debug!(error = %e, "could not delete an old lock object");
        }
    }
}

/// The lock objects of this protocol, with their generations. A listing error is an
/// error: a lock not seen could be live.
fn list_generations(backend: &dyn Backend) -> Result<Vec<(u64, ObjectInfo)>, BackendError> {
    let mut found = Vec::new();
    for info in backend.list(ObjectKind::Lock) {
        let info = info?;
        if let Some(generation) = parse_generation(info.name.as_str()) {
            found.push((generation, info));
        }
    }
    Ok(found)
}

/// The generation of a lock object's name: `exclusive.` and 20 digits that fit a u64.
fn parse_generation(name: &str) -> Option<u64> {
    let digits = name.strip_prefix(PREFIX)?;
    if digits.len() != GEN_DIGITS || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

fn lock_name(generation: u64) -> ObjectName {
    // Always valid: the prefix and digits are of the allowed characters, 30 in all.
    ObjectName::new(format!("{PREFIX}{generation:0GEN_DIGITS$}"))
        .unwrap_or_else(|_| unreachable!("lock names are valid object names"))
}

/// What the highest lock object means.
enum Seen {
    /// Someone holds the vault.
    Live(Holder),
    /// Nobody: the next lock is `next` (None: there can be none).
    Free { next: Option<u64> },
    /// It was deleted between the listing and the read.
    Vanished,
}

/// Reads the lock object of `generation` and says whether it is live.
fn judge(
    backend: &dyn Backend,
    generation: u64,
    info: &ObjectInfo,
    ttl: Duration,
) -> Result<Seen, BackendError> {
    let mut buf = Vec::new();
    let content = match backend.get_into(ObjectKind::Lock, &info.name, &mut buf, MAX_OBJECT_BYTES) {
        Ok(()) => parse(&buf),
        Err(e) if e.is_not_found() => return Ok(Seen::Vanished),
        Err(BackendError::TooLarge { .. }) => Content::Unreadable,
        Err(e) => return Err(e),
    };
    let now = SystemTime::now();
    let after = generation.checked_add(1);
    Ok(match content {
        Content::Held(h) => {
            let expires = from_unix_ms(h.expires_ms);
            if expires > now && !h.owner_is_gone() {
                Seen::Live(h.holder(generation))
            } else {
                Seen::Free { next: after }
            }
        }
        Content::Free { floor } => Seen::Free {
            next: after.map(|a| a.max(floor.unwrap_or(0))),
        },
        Content::Unreadable => {
            let until = later(info.modified, ttl);
            if until > now {
                Seen::Live(Holder {
                    host: String::new(),
                    pid: 0,
                    command: String::new(),
                    expires: until,
                    generation,
                    unreadable: true,
                })
            } else {
                Seen::Free { next: after }
            }
        }
    })
}

/// A lock object's text, as written (`state = "held"` or `"free"`; unknown keys are
/// allowed, for later versions).
#[derive(Debug, Default, Serialize, Deserialize)]
struct Record {
    format: u32,
    state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    host: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    boot_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pid_ns: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pid_start: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    command: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    token: Option<String>,
    /// RFC 3339, for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    acquired: Option<String>,
    /// RFC 3339, for people; `expires_ms` is what counts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    expires: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    expires_ms: Option<u64>,
    /// In a `free` marker: the lowest next generation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    floor: Option<u64>,
}

/// What a lock object says.
enum Content {
    Held(Held),
    Free { floor: Option<u64> },
    Unreadable,
}

/// A held lock, as recorded.
struct Held {
    host: String,
    boot_id: Option<String>,
    pid_ns: Option<String>,
    pid: u32,
    pid_start: Option<u64>,
    command: String,
    token: String,
    expires_ms: u64,
}

impl Held {
    fn holder(&self, generation: u64) -> Holder {
        Holder {
            host: self.host.clone(),
            pid: self.pid,
            command: self.command.clone(),
            expires: from_unix_ms(self.expires_ms),
            generation,
            unreadable: false,
        }
    }

    /// The owner ran on this machine (same host name, boot and pid namespace) and its
    /// process is gone: its pid runs no more, or runs another process (another start).
    /// Anything unknown means alive.
    fn owner_is_gone(&self) -> bool {
        let me = Me::machine();
        let same_machine = self.host == me.host
            && self.boot_id.is_some()
            && self.boot_id == me.boot_id
            && self.pid_ns.is_some()
            && self.pid_ns == me.pid_ns;
        let Some(recorded_start) = self.pid_start else {
            return false;
        };
        if !same_machine || self.pid == 0 {
            return false;
        }
        let proc_dir = format!("/proc/{}", self.pid);
        match std::fs::symlink_metadata(&proc_dir) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
            Err(_) => false,
            Ok(_) => process_start(self.pid).is_some_and(|start| start != recorded_start),
        }
    }
}

/// Parses a lock object's text; anything unexpected is [`Content::Unreadable`].
fn parse(bytes: &[u8]) -> Content {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return Content::Unreadable;
    };
    let Ok(r) = toml::from_str::<Record>(text) else {
        return Content::Unreadable;
    };
    match r.state.as_str() {
        "held" => match (r.host, r.pid, r.token, r.expires_ms) {
            (Some(host), Some(pid), Some(token), Some(expires_ms)) => Content::Held(Held {
                host,
                boot_id: r.boot_id,
                pid_ns: r.pid_ns,
                pid,
                pid_start: r.pid_start,
                command: r.command.unwrap_or_default(),
                token,
                expires_ms,
            }),
            _ => Content::Unreadable,
        },
        "free" => Content::Free { floor: r.floor },
        _ => Content::Unreadable,
    }
}

/// The text of a `free` marker.
fn free_record(floor: Option<u64>) -> Vec<u8> {
    let r = Record {
        format: FORMAT,
        state: "free".into(),
        floor,
        ..Record::default()
    };
    to_toml(&r).into_bytes()
}

fn to_toml(r: &Record) -> String {
    // Strings and integers below i64::MAX always serialize; were one to fail, the empty
    // text is an unreadable lock object, which still counts as held.
    toml::to_string(r).unwrap_or_default()
}

/// This process and its machine, as a lock records them.
#[derive(Debug, Clone)]
struct Me {
    host: String,
    boot_id: Option<String>,
    pid_ns: Option<String>,
    pid: u32,
    pid_start: Option<u64>,
    command: String,
    acquired: SystemTime,
}

impl Me {
    fn now() -> Me {
        let pid = std::process::id();
        let command: String = std::env::args()
            .map(|a| a.replace(['\n', '\r'], " "))
            .collect::<Vec<_>>()
            .join(" ")
            .chars()
            .take(COMMAND_CHARS)
            .collect();
        Me {
            pid,
            pid_start: process_start(pid),
            command,
            acquired: SystemTime::now(),
            ..Me::machine()
        }
    }

    /// The machine alone (pid 0, no command).
    fn machine() -> Me {
        Me {
            host: hostname(),
            boot_id: read_trimmed("/proc/sys/kernel/random/boot_id"),
            pid_ns: std::fs::read_link("/proc/self/ns/pid")
                .ok()
                .map(|p| p.to_string_lossy().into_owned()),
            pid: 0,
            pid_start: None,
            command: String::new(),
            acquired: UNIX_EPOCH,
        }
    }

    /// The text of our lock, expiring at `expires`.
    fn record(&self, token: &str, expires: SystemTime) -> String {
        let r = Record {
            format: FORMAT,
            state: "held".into(),
            host: Some(self.host.clone()),
            boot_id: self.boot_id.clone(),
            pid_ns: self.pid_ns.clone(),
            pid: Some(self.pid),
            pid_start: self.pid_start,
            command: Some(self.command.clone()),
            token: Some(token.to_string()),
            acquired: Some(crate::fmt::rfc3339(DateTime::<Utc>::from(self.acquired))),
            expires: Some(crate::fmt::rfc3339(DateTime::<Utc>::from(expires))),
            expires_ms: Some(unix_ms(expires)),
            floor: None,
        };
        to_toml(&r)
    }
}

/// This machine's host name, for records of who holds or wrote a vault.
pub fn hostname() -> String {
    read_trimmed("/proc/sys/kernel/hostname")
        .or_else(|| {
            let mut buf = [0u8; 256];
            // SAFETY: `buf` is valid for writes of its length, which is what is passed.
            let r = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
            let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
            (r == 0 && end > 0).then(|| String::from_utf8_lossy(&buf[..end]).into_owned())
        })
        .unwrap_or_else(|| "an unknown host".to_string())
}

fn read_trimmed(path: &str) -> Option<String> {
    let text = std::fs::read_to_string(Path::new(path)).ok()?;
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_string())
}

/// The start time of process `pid` in clock ticks since boot (`/proc/<pid>/stat` field
/// 22), None when it cannot be read.
fn process_start(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: it ends at the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    // Field 3 (state) is the first after it.
    rest.split_whitespace().nth(22 - 3)?.parse().ok()
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The end of the year 9999 in unix ms: later times (garbage, a huge TTL) stop there, so
/// that they can be added to and shown.
const LAST_MS: u64 = 253_402_300_799_000;

fn from_unix_ms(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms.min(LAST_MS))
}

/// `t + d`, stopping at the end of the year 9999.
fn later(t: SystemTime, d: Duration) -> SystemTime {
    from_unix_ms(unix_ms(t).saturating_add(u64::try_from(d.as_millis()).unwrap_or(u64::MAX)))
}

/// When an owner that wrote its expiry `ttl` ahead at `started` stops trusting its lock.
fn valid_until(started: Instant, opts: &LeaseOptions) -> Instant {
    let d = opts.ttl.saturating_sub(opts.margin());
    // A TTL too large for the monotonic clock: a year is as good as forever here.
    started
        .checked_add(d)
        .unwrap_or(started + Duration::from_secs(365 * 86_400))
}

/// A vault's backend that writes only while its [`StorageLock`] holds: every put, create,
/// delete and set-aside checks the lease first and is refused with
/// [`BackendError::LockLost`] once it is lost, so that nothing this process still has in
/// flight (a backup's chunks, a prune's deletes) lands after another process took the vault
/// over. Reads pass through. (A write already sent when the lease runs out still lands:
/// see "What it cannot do" above.)
#[derive(Debug)]
pub struct LeasedBackend {
    inner: Arc<dyn Backend>,
    lease: Arc<StorageLock>,
}

impl LeasedBackend {
    pub fn new(inner: Arc<dyn Backend>, lease: Arc<StorageLock>) -> LeasedBackend {
        LeasedBackend { inner, lease }
    }

    fn held(
        &self,
        op: super::backend::Operation,
        kind: Option<ObjectKind>,
        name: Option<&ObjectName>,
    ) -> Result<(), BackendError> {
        self.lease.check().map_err(|e| BackendError::LockLost {
            ctx: super::backend::ErrorContext::new(op, kind, name, self.inner.location()),
            why: e.to_string(),
        })
    }
}

impl Backend for LeasedBackend {
    fn location(&self) -> &str {
        self.inner.location()
    }
    fn locate(&self, kind: ObjectKind, name: &ObjectName) -> String {
        self.inner.locate(kind, name)
    }
    fn put(&self, kind: ObjectKind, name: &ObjectName, data: &[u8]) -> Result<(), BackendError> {
        self.held(super::backend::Operation::Put, Some(kind), Some(name))?;
        self.inner.put(kind, name, data)
    }
    fn create(
        &self,
        kind: ObjectKind,
        name: &ObjectName,
        data: &[u8],
    ) -> Result<Created, BackendError> {
        self.held(super::backend::Operation::Create, Some(kind), Some(name))?;
        self.inner.create(kind, name, data)
    }
    fn get_into(
        &self,
        kind: ObjectKind,
        name: &ObjectName,
        buf: &mut Vec<u8>,
        max: u64,
    ) -> Result<(), BackendError> {
        self.inner.get_into(kind, name, buf, max)
    }
    fn get_range(
        &self,
        kind: ObjectKind,
        name: &ObjectName,
        offset: u64,
        len: usize,
    ) -> Result<Vec<u8>, BackendError> {
        self.inner.get_range(kind, name, offset, len)
    }
    fn stat(
        &self,
        kind: ObjectKind,
        name: &ObjectName,
    ) -> Result<Option<ObjectInfo>, BackendError> {
        self.inner.stat(kind, name)
    }
    fn list(&self, kind: ObjectKind) -> super::backend::ObjectList<'_> {
        self.inner.list(kind)
    }
    fn delete(&self, kind: ObjectKind, name: &ObjectName) -> Result<(), BackendError> {
        self.held(super::backend::Operation::Delete, Some(kind), Some(name))?;
        self.inner.delete(kind, name)
    }
    fn sync(&self) -> Result<(), BackendError> {
        // A sync after the lease ran out must not report what may have landed too late as
        // durable work of the owner.
        self.held(super::backend::Operation::Sync, None, None)?;
        self.inner.sync()
    }
    fn set_aside(&self, kind: ObjectKind, name: &ObjectName) -> Result<bool, BackendError> {
        self.held(super::backend::Operation::Delete, Some(kind), Some(name))?;
        self.inner.set_aside(kind, name)
    }
    fn strays(&self, kind: ObjectKind) -> Result<Vec<super::backend::Stray>, BackendError> {
        self.inner.strays(kind)
    }
    fn cleanup_temp(&self, older_than: SystemTime) -> Result<u64, BackendError> {
        self.held(super::backend::Operation::Sweep, None, None)?;
        self.inner.cleanup_temp(older_than)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vault::backend::{MemoryBackend, ObjectStoreBackend, Operation};
    use std::sync::Barrier;

    fn memory() -> (Arc<MemoryBackend>, Arc<dyn Backend>) {
        let m = Arc::new(MemoryBackend::new());
        (m.clone(), m)
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// A lease of `ttl_ms` whose thread never ticks in a test: the test refreshes by hand.
    fn manual(ttl_ms: u64) -> LeaseOptions {
        LeaseOptions {
            ttl: ms(ttl_ms),
            refresh_every: Duration::from_secs(3600),
        }
    }

    fn generations(b: &dyn Backend) -> Vec<u64> {
        let mut g: Vec<u64> = list_generations(b)
            .unwrap()
            .into_iter()
            .map(|(g, _)| g)
            .collect();
        g.sort();
        g
    }

    fn busy(r: Result<StorageLock, LeaseError>) -> (Holder, String) {
        match r {
            Err(e @ LeaseError::Busy { .. }) => {
                let msg = e.to_string();
                let LeaseError::Busy { holder, .. } = e else {
                    unreachable!()
                };
                (holder, msg)
            }
            other => panic!("expected Busy, got {other:?}"),
        }
    }

    fn lost_message(l: &StorageLock) -> String {
        match l.check() {
            Err(e @ LeaseError::Lost { .. }) => e.to_string(),
            other => panic!("expected Lost, got {other:?}"),
        }
    }

    /// A lock of another process of this machine (pid, start), as its owner would write it.
    fn record_of(host: &str, pid: u32, pid_start: Option<u64>, expires: SystemTime) -> String {
        Me {
            host: host.into(),
            pid,
            pid_start,
            command: "/usr/bin/vmvault run".into(),
            acquired: SystemTime::now(),
            ..Me::machine()
        }
        .record("someone-else", expires)
    }

    fn put_lock(b: &dyn Backend, generation: u64, text: &[u8]) {
        b.put(ObjectKind::Lock, &lock_name(generation), text)
            .unwrap();
    }

    /// Rewrites the lock object of `generation` with an expiry in the past: what others
    /// see of an owner that stalled past its expiry (or whose clock is behind).
    fn expire_by_hand(b: &dyn Backend, generation: u64) {
        let text = b.get(ObjectKind::Lock, &lock_name(generation)).unwrap();
        let mut r: Record = toml::from_str(std::str::from_utf8(&text).unwrap()).unwrap();
        r.expires_ms = Some(unix_ms(SystemTime::now()) - 1);
        put_lock(b, generation, to_toml(&r).as_bytes());
    }

    fn exists(b: &dyn Backend, generation: u64) -> bool {
        b.stat(ObjectKind::Lock, &lock_name(generation))
            .unwrap()
            .is_some()
    }

    #[test]
    fn a_second_acquire_is_busy_and_names_the_holder() {
        let (_, b) = memory();
        let opts = LeaseOptions::default();
        let before = unix_ms(SystemTime::now());
        let first = StorageLock::acquire(b.clone(), &opts).unwrap();
        // The first generation of a vault comes from the clock.
        assert!(first.generation() >= before, "{}", first.generation());
        let (holder, msg) = busy(StorageLock::acquire(b.clone(), &opts));
        assert_eq!(holder.pid, std::process::id());
        assert_eq!(holder.host, hostname());
        assert_eq!(holder.generation, first.generation());
        assert!(!holder.unreadable);
        let left = holder.expires.duration_since(SystemTime::now()).unwrap();
        assert!(left > Duration::from_secs(100) && left <= Duration::from_secs(120));
        let pid = std::process::id();
        for words in [
            &format!("vault memory is in use by process {pid} (") as &str,
            &format!(") on host {} until ", hostname()),
            "UTC unless it refreshes its lock; wait for it to finish or stop it, then try again",
            "If that host is gone for good, the lock expires by itself at ",
        ] {
            assert!(msg.contains(words), "{words:?} not in {msg}");
        }
        assert_eq!(StorageLock::holder(&*b).unwrap(), Some(holder));
        assert!(!first.is_lost());
        first.check().unwrap();
        assert!(format!("{first:?}").contains("StorageLock"));
    }

    #[test]
    fn release_lets_the_next_acquire_win_and_generations_only_rise() {
        let (_, b) = memory();
        let opts = LeaseOptions::default();
        let mut last = 0;
        for _ in 0..5 {
            let l = StorageLock::acquire(b.clone(), &opts).unwrap();
            assert!(l.generation() > last, "{} after {last}", l.generation());
            last = l.generation();
            l.release().unwrap();
            assert_eq!(StorageLock::holder(&*b).unwrap(), None);
            // Only the marker above the released lock is left.
            assert_eq!(generations(&*b), vec![last + 1]);
        }
        // Lock objects all removed by hand: the clock's floor keeps generations rising
        // (five locks were taken in far more than five milliseconds, after this sleep).
        std::thread::sleep(ms(10));
        for g in generations(&*b) {
            b.delete(ObjectKind::Lock, &lock_name(g)).unwrap();
        }
        let l = StorageLock::acquire(b.clone(), &opts).unwrap();
        assert!(l.generation() > last, "{} after {last}", l.generation());
        // The marker it started from is gone.
        assert_eq!(generations(&*b), vec![l.generation()]);
    }

    #[test]
    fn dropping_the_lock_releases_it_promptly() {
        let (_, b) = memory();
        // Refreshed every 40 s: the drop must not wait for a tick.
        let l = StorageLock::acquire(b.clone(), &LeaseOptions::default()).unwrap();
        let generation = l.generation();
        let t = Instant::now();
        drop(l);
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
        assert!(!exists(&*b, generation));
        let next = StorageLock::acquire(b.clone(), &LeaseOptions::default()).unwrap();
        assert!(next.generation() > generation);
    }

    #[test]
    fn a_refreshed_lock_outlives_its_ttl() {
        let (m, b) = memory();
        let opts = LeaseOptions {
            ttl: ms(600),
            refresh_every: ms(100),
        };
        let l = StorageLock::acquire(b.clone(), &opts).unwrap();
        let t = Instant::now();
        while t.elapsed() < ms(1500) {
            let (holder, _) = busy(StorageLock::acquire(b.clone(), &opts));
            assert_eq!(holder.generation, l.generation());
            l.check().unwrap();
            std::thread::sleep(ms(100));
        }
        assert!(m.count(Operation::Put) >= 5, "{}", m.count(Operation::Put));
        l.release().unwrap();
        assert_eq!(StorageLock::holder(&*b).unwrap(), None);
    }

    /// Acquire, race, release and take over, on any backend.
    fn race_and_takeover(b: Arc<dyn Backend>, threads: usize, rounds: usize) {
        let mut last = 0;
        for round in 0..rounds {
            let barrier = Arc::new(Barrier::new(threads));
            let tries: Vec<_> = (0..threads)
                .map(|_| {
                    let (b, barrier) = (b.clone(), barrier.clone());
                    std::thread::spawn(move || {
                        barrier.wait();
                        StorageLock::acquire(b, &LeaseOptions::default())
                    })
                })
                .collect();
            let results: Vec<_> = tries.into_iter().map(|t| t.join().unwrap()).collect();
            let (won, others): (Vec<_>, Vec<_>) = results.into_iter().partition(|r| r.is_ok());
            assert_eq!(won.len(), 1, "round {round}: {won:?}");
            let winner = won.into_iter().next().unwrap().unwrap();
            for r in others {
                let (holder, _) = busy(r);
                assert_eq!(holder.generation, winner.generation(), "round {round}");
            }
            assert!(winner.generation() > last, "round {round}");
            last = winner.generation();
            winner.release().unwrap();
        }

        // An owner seen as expired (it stalled) is taken over with a higher generation;
        // it finds out at its next refresh and never writes its object again.
        let a = StorageLock::acquire(b.clone(), &manual(60_000)).unwrap();
        assert!(a.generation() > last);
        expire_by_hand(&*b, a.generation());
        let c = StorageLock::acquire(b.clone(), &LeaseOptions::default()).unwrap();
        assert!(c.generation() > a.generation());
        assert!(
            !exists(&*b, a.generation()),
            "the winner deletes older locks"
        );
        assert!(!a.is_lost(), "it cannot know before it looks");
        a.inner.refresh();
        assert!(a.is_lost());
        let msg = lost_message(&a);
        assert!(
            msg.contains("was lost: its lock object was removed"),
            "{msg}"
        );
        assert!(
            msg.contains("this process stops writing to the vault"),
            "{msg}"
        );
        a.inner.refresh();
        assert!(!exists(&*b, a.generation()), "never written again");
        c.check().unwrap();
        // Releasing a lost lock says so and leaves the new owner's alone.
        assert!(matches!(a.release(), Err(LeaseError::Lost { .. })));
        let holder = StorageLock::holder(&*b).unwrap().unwrap();
        assert_eq!(holder.generation, c.generation());
        c.release().unwrap();
        assert_eq!(StorageLock::holder(&*b).unwrap(), None);
    }

    #[test]
    fn racing_acquirers_exactly_one_wins_then_a_takeover() {
        let (_, b) = memory();
        race_and_takeover(b, 8, 20);
    }

    #[test]
    fn racing_and_takeover_in_s3() {
        let Some(spec) = crate::vault::backend::object::testenv::s3() else {
            return;
        };
        let b = Arc::new(crate::vault::backend::object::open(&spec).unwrap());
        race_and_takeover(b, 8, 3);
    }

    #[test]
    fn racing_and_takeover_in_azure() {
        let Some(spec) = crate::vault::backend::object::testenv::azure() else {
            return;
        };
        let b: Arc<ObjectStoreBackend> =
            Arc::new(crate::vault::backend::object::open(&spec).unwrap());
        race_and_takeover(b, 8, 3);
    }

    #[test]
    fn a_higher_generation_found_at_refresh_means_lost_and_nothing_is_written() {
        let (m, b) = memory();
        let a = StorageLock::acquire(b.clone(), &manual(60_000)).unwrap();
        expire_by_hand(&*b, a.generation());
        // The new owner cannot delete the old lock: the old owner still finds its own
        // object, and a higher generation beside it.
        m.fail_next(Operation::Delete, 10, libc::EIO);
        let c = StorageLock::acquire(b.clone(), &LeaseOptions::default()).unwrap();
        m.fail_next(Operation::Delete, 0, libc::EIO);
        let before = b.get(ObjectKind::Lock, &lock_name(a.generation())).unwrap();
        let puts = m.count(Operation::Put);
        a.inner.refresh();
        let msg = lost_message(&a);
        assert!(
            msg.contains(&format!("taken over by process {}", std::process::id())),
            "{msg}"
        );
        assert_eq!(m.count(Operation::Put), puts);
        let after = b.get(ObjectKind::Lock, &lock_name(a.generation())).unwrap();
        assert_eq!(before, after);
        // The old lock is still its own (same token): releasing it deletes it, and says it
        // was lost.
        let old = a.generation();
        assert!(matches!(a.release(), Err(LeaseError::Lost { .. })));
        assert!(!exists(&*b, old));
        c.check().unwrap();
        assert_eq!(
            StorageLock::holder(&*b).unwrap().unwrap().generation,
            c.generation()
        );
    }

    #[test]
    fn an_unrefreshed_lock_expires_by_itself_and_is_taken_over() {
        let (_, b) = memory();
        let opts = manual(300);
        let a = StorageLock::acquire(b.clone(), &opts).unwrap();
        busy(StorageLock::acquire(b.clone(), &opts));
        std::thread::sleep(ms(350));
        // The owner stops trusting it a margin before others see it expire.
        assert!(a.is_lost());
        let msg = lost_message(&a);
        assert!(msg.contains("not refreshed before it expired"), "{msg}");
        let c = StorageLock::acquire(b.clone(), &opts).unwrap();
        assert!(c.generation() > a.generation());
        assert!(matches!(a.release(), Err(LeaseError::Lost { .. })));
        c.release().unwrap();
    }

    #[test]
    fn a_failed_refresh_is_tried_again_until_the_expiry() {
        let (m, b) = memory();
        let a = StorageLock::acquire(b.clone(), &manual(300)).unwrap();
        let until = || guard(&a.inner.state).valid_until;
        let first = until();
        // Storing or listing fails: nothing changes, the next tick tries again.
        m.fail_next(Operation::Put, 1, libc::EIO);
        a.inner.refresh();
        m.fail_next(Operation::List, 1, libc::EIO);
        a.inner.refresh();
        assert!(!a.is_lost());
        assert_eq!(until(), first);
        std::thread::sleep(ms(5));
        a.inner.refresh();
        let second = until();
        assert!(second > first);
        // Reading fails until the expiry: lost, without writing anything.
        m.fail_next(Operation::Get, 1000, libc::EIO);
        a.inner.refresh();
        assert!(!a.is_lost());
        assert_eq!(until(), second);
        std::thread::sleep(ms(350));
        let puts = m.count(Operation::Put);
        a.inner.refresh();
        assert!(a.is_lost());
        assert_eq!(m.count(Operation::Put), puts);
        let msg = lost_message(&a);
        assert!(msg.contains("not refreshed before it expired"), "{msg}");
        m.fail_next(Operation::Get, 0, libc::EIO);
        // Still its own object: the release deletes it (and says the lock was lost).
        assert!(matches!(a.release(), Err(LeaseError::Lost { .. })));
        assert_eq!(StorageLock::holder(&*b).unwrap(), None);
    }

    #[test]
    fn a_lock_of_a_dead_process_of_this_machine_is_taken_over_at_once() {
        let (_, b) = memory();
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        let an_hour = SystemTime::now() + Duration::from_secs(3600);
        let host = hostname();

        put_lock(
            &*b,
            1000,
            record_of(&host, dead, Some(1), an_hour).as_bytes(),
        );
        let l = StorageLock::acquire(b.clone(), &LeaseOptions::default()).unwrap();
        assert_eq!(l.generation(), 1001);
        assert_eq!(generations(&*b), vec![1001]);
        drop(l);

        // Our own pid with another start time: the pid was reused, the owner is gone.
        let me = std::process::id();
        let start = process_start(me).unwrap();
        put_lock(
            &*b,
            2000,
            record_of(&host, me, Some(start + 1), an_hour).as_bytes(),
        );
        let l = StorageLock::acquire(b.clone(), &LeaseOptions::default()).unwrap();
        assert_eq!(l.generation(), 2001);
        drop(l);

        // Alive (this very process), on another host, or without a start time: waited for.
        for (host, pid, start) in [
            (host.as_str(), me, Some(start)),
            ("elsewhere", dead, Some(1)),
            (host.as_str(), dead, None),
        ] {
            let (_, b) = memory();
            put_lock(&*b, 3000, record_of(host, pid, start, an_hour).as_bytes());
            let (holder, _) = busy(StorageLock::acquire(b.clone(), &LeaseOptions::default()));
            assert_eq!((holder.host.as_str(), holder.pid), (host, pid));
        }
    }

    #[test]
    fn garbage_never_panics_and_counts_as_live_for_a_ttl() {
        let garbage: Vec<Vec<u8>> = vec![
            b"".to_vec(),
            vec![0xff, 0xfe, 0x00, 0x1b],
            b"state = 1".to_vec(),
            b"[[[".to_vec(),
            b"format = 1\nstate = \"held\"\n".to_vec(),
            b"format = 1\nstate = \"held\"\nhost = \"h\"\npid = -1\ntoken = \"t\"\nexpires_ms = 1\n"
                .to_vec(),
            b"format = 1\nstate = \"weird\"\n".to_vec(),
            vec![b'a'; 100 * 1024],
        ];
        let opts = manual(300);
        let backends: Vec<_> = garbage
            .iter()
            .map(|g| {
                let (_, b) = memory();
                put_lock(&*b, 500, g);
                let (holder, msg) = busy(StorageLock::acquire(b.clone(), &opts));
                assert!(holder.unreadable);
                assert_eq!(holder.generation, 500);
                assert!(
                    msg.contains(
                        "locked by an unreadable lock object (exclusive.00000000000000000500)"
                    ),
                    "{msg}"
                );
                // Without a TTL of its own, `holder` counts the default one.
                let seen = StorageLock::holder(&*b).unwrap().unwrap();
                assert!(seen.unreadable && seen.expires > SystemTime::now() + ms(60_000));
                b
            })
            .collect();
        std::thread::sleep(ms(350));
        for b in backends {
            let l = StorageLock::acquire(b.clone(), &opts).unwrap();
            assert_eq!(l.generation(), 501);
        }

        // Names that are no lock names of this protocol are ignored, and left alone.
        let (_, b) = memory();
        for name in [
            "exclusive.abc",
            "exclusive.1",
            "exclusive.99999999999999999999",
            "other",
        ] {
            b.put(ObjectKind::Lock, &ObjectName::new(name).unwrap(), b"x")
                .unwrap();
        }
        let l = StorageLock::acquire(b.clone(), &opts).unwrap();
        assert_eq!(b.list(ObjectKind::Lock).count(), 5);
        drop(l);

        // An expiry far in the future is shown, not a panic.
        let (_, b) = memory();
        let text = "format = 1\nstate = \"held\"\nhost = \"h\\u001b[2J\"\npid = 7\ntoken = \"t\"\nexpires_ms = 9000000000000000000\n";
        put_lock(&*b, 7, text.as_bytes());
        let (holder, msg) = busy(StorageLock::acquire(b.clone(), &opts));
        assert_eq!(holder.host, "h\x1b[2J");
        assert!(msg.contains("9999-12-31"), "{msg}");
        assert!(!msg.contains('\x1b'), "{msg:?}");
    }

    #[test]
    fn no_lock_can_follow_the_highest_generation() {
        let (_, b) = memory();
        put_lock(&*b, u64::MAX, &free_record(None));
        let e = StorageLock::acquire(b.clone(), &manual(300)).unwrap_err();
        assert!(matches!(e, LeaseError::Stuck { .. }), "{e}");
        assert!(
            e.to_string().contains("exclusive.18446744073709551615"),
            "{e}"
        );
    }

    #[test]
    fn acquire_patiently_waits_for_a_release() {
        let (_, b) = memory();
        let opts = LeaseOptions::default();
        let first = StorageLock::acquire(b.clone(), &opts).unwrap();
        let t = Instant::now();
        busy(StorageLock::acquire_patiently(b.clone(), &opts, ms(300)));
        assert!(t.elapsed() >= ms(300));
        let releaser = std::thread::spawn(move || {
            std::thread::sleep(ms(300));
            first.release().unwrap();
        });
        let second = StorageLock::acquire_patiently(b.clone(), &opts, ms(5000)).unwrap();
        releaser.join().unwrap();
        second.check().unwrap();
    }

    #[test]
    fn a_listing_error_is_an_error() {
        let (m, b) = memory();
        m.fail_next(Operation::List, 1, libc::EIO);
        let e = StorageLock::acquire(b.clone(), &LeaseOptions::default()).unwrap_err();
        assert!(matches!(e, LeaseError::Storage(_)), "{e}");
        assert!(e.to_string().contains("listing the lock objects"), "{e}");
    }

    #[test]
    fn the_lock_is_send_and_sync() {
        fn both<T: Send + Sync>() {}
        both::<StorageLock>();
    }
}
