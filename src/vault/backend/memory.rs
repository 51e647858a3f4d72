//! The in-memory backend: every vault operation testable without a disk.
//!
//! Same semantics as the other backends (it passes the same conformance suite), including
//! durability: puts and deletes become durable at [`Backend::sync`], creates at once, and
//! [`MemoryBackend::crash`] forgets everything that was not durable, as a power cut would.
//! For tests of the layers above it can also fail on demand
//! ([`MemoryBackend::fail_next`]: "the next 3 puts find the disk full"), hold only so many
//! bytes ([`MemoryBackend::with_capacity`]), refuse writes like a read-only mount
//! ([`MemoryBackend::set_read_only`]) and count what was asked of it
//! ([`MemoryBackend::count`]). Its errors are classified as the local backend classifies
//! the same errno.

use super::{
    check_kind_name, checked_range, Backend, BackendError, Created, ErrorContext, ObjectInfo,
    ObjectKind, ObjectList, ObjectName, Operation,
};
use std::collections::BTreeMap;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

const LOCATION: &str = "memory";

#[derive(Debug, Clone)]
struct Stored {
    /// Shared between the current and the durable view.
    data: Arc<[u8]>,
    modified: SystemTime,
}

type Objects = BTreeMap<(ObjectKind, ObjectName), Stored>;

#[derive(Debug, Default)]
struct State {
    /// What readers see.
    objects: Objects,
    /// What would survive a crash: as of the last sync, plus every create since.
    durable: Objects,
    /// Injected failures: operation → (how many more times, errno).
    faults: BTreeMap<Operation, (u64, i32)>,
    /// Operations asked for (failed ones included).
    counts: BTreeMap<Operation, u64>,
    /// Bytes of object data it may hold (None: no limit).
    capacity: Option<u64>,
    /// Writes fail as on a read-only mount.
    read_only: bool,
}

impl State {
    /// Bytes of object data held.
    fn used(&self) -> u64 {
        self.objects.values().map(|o| o.data.len() as u64).sum()
    }
}

/// Objects in a map in memory, with fault injection. See the module docs.
#[derive(Debug, Default)]
pub struct MemoryBackend {
    state: Mutex<State>,
}

impl MemoryBackend {
    pub fn new() -> MemoryBackend {
        MemoryBackend::default()
    }

    /// A backend that holds at most `bytes` of object data: a put or create that would
    /// need more fails as a full disk does.
    pub fn with_capacity(bytes: u64) -> MemoryBackend {
        let b = MemoryBackend::default();
        b.lock().capacity = Some(bytes);
        b
    }

    /// Makes every put, create and delete fail as on a read-only mount (`true`), or
    /// accepts them again (`false`). Reads and `sync` still work, as they do on one.
    pub fn set_read_only(&self, read_only: bool) {
        self.lock().read_only = read_only;
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A test that panicked while holding the lock leaves consistent data (every change
        // is a single map operation).
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes the next `times` calls of `op` fail with the I/O error `errno` (e.g.
    /// `libc::ENOSPC`), classified as the local backend would classify it.
    pub fn fail_next(&self, op: Operation, times: u64, errno: i32) {
        self.lock().faults.insert(op, (times, errno));
    }

    /// How many times `op` was asked for (failed calls included).
    pub fn count(&self, op: Operation) -> u64 {
        self.lock().counts.get(&op).copied().unwrap_or(0)
    }

    /// Forgets every put and delete since the last sync, as a power cut would.
    pub fn crash(&self) {
        let mut st = self.lock();
        st.objects = st.durable.clone();
    }

    /// Counts `op` and takes the state, or fails as injected. Every operation starts here.
    fn begin(
        &self,
        op: Operation,
        kind: Option<ObjectKind>,
        name: Option<&ObjectName>,
    ) -> Result<MutexGuard<'_, State>, BackendError> {
        let mut st = self.lock();
        *st.counts.entry(op).or_default() += 1;
        let ctx = || ErrorContext::new(op, kind, name, LOCATION);
        if let (Some(k), Some(n)) = (kind, name) {
            check_kind_name(ctx, k, n)?;
        }
        let fail = |errno| BackendError::from_io(ctx(), io::Error::from_raw_os_error(errno));
        if let Some((left, errno)) = st.faults.get_mut(&op) {
            if *left > 0 {
                *left -= 1;
                return Err(fail(*errno));
            }
        }
        if st.read_only && matches!(op, Operation::Put | Operation::Create | Operation::Delete) {
            return Err(fail(libc::EROFS));
        }
        Ok(st)
    }

    /// Checks that storing `len` bytes as `key` (replacing what is there) fits.
    fn check_space(
        st: &State,
        key: &(ObjectKind, ObjectName),
        len: usize,
        op: Operation,
    ) -> Result<(), BackendError> {
        let Some(capacity) = st.capacity else {
            return Ok(());
        };
        let replaced = st.objects.get(key).map_or(0, |o| o.data.len() as u64);
        if st.used() - replaced + len as u64 > capacity {
            let ctx = ErrorContext::new(op, Some(key.0), Some(&key.1), LOCATION);
            return Err(BackendError::from_io(
                ctx,
                io::Error::from_raw_os_error(libc::ENOSPC),
            ));
        }
        Ok(())
    }

    /// The object, or NotFound.
    fn object(
        &self,
        op: Operation,
        kind: ObjectKind,
        name: &ObjectName,
    ) -> Result<Arc<[u8]>, BackendError> {
        let st = self.begin(op, Some(kind), Some(name))?;
        match st.objects.get(&(kind, name.clone())) {
            Some(o) => Ok(o.data.clone()),
            None => Err(BackendError::NotFound {
                ctx: ErrorContext::new(op, Some(kind), Some(name), LOCATION),
            }),
        }
    }
}

fn stored(data: &[u8]) -> Stored {
    Stored {
        data: data.into(),
        modified: SystemTime::now(),
    }
}

impl Backend for MemoryBackend {
    fn location(&self) -> &str {
        LOCATION
    }

    fn put(&self, kind: ObjectKind, name: &ObjectName, data: &[u8]) -> Result<(), BackendError> {
        let mut st = self.begin(Operation::Put, Some(kind), Some(name))?;
        let key = (kind, name.clone());
        Self::check_space(&st, &key, data.len(), Operation::Put)?;
        st.objects.insert(key, stored(data));
        Ok(())
    }

    fn create(
        &self,
        kind: ObjectKind,
        name: &ObjectName,
        data: &[u8],
    ) -> Result<Created, BackendError> {
        let mut st = self.begin(Operation::Create, Some(kind), Some(name))?;
        let key = (kind, name.clone());
        if st.objects.contains_key(&key) {
            return Ok(Created::AlreadyExists);
        }
        Self::check_space(&st, &key, data.len(), Operation::Create)?;
        let o = stored(data);
        st.durable.insert(key.clone(), o.clone());
        st.objects.insert(key, o);
        Ok(Created::New)
    }

    fn get_into(
        &self,
        kind: ObjectKind,
        name: &ObjectName,
        buf: &mut Vec<u8>,
        max: u64,
    ) -> Result<(), BackendError> {
        let data = self.object(Operation::Get, kind, name)?;
        if data.len() as u64 > max {
            return Err(BackendError::TooLarge {
                ctx: ErrorContext::new(Operation::Get, Some(kind), Some(name), LOCATION),
                size: data.len() as u64,
                max,
            });
        }
        buf.clear();
        buf.extend_from_slice(&data);
        Ok(())
    }

    fn get_range(
        &self,
        kind: ObjectKind,
        name: &ObjectName,
        offset: u64,
        len: usize,
    ) -> Result<Vec<u8>, BackendError> {
        let data = self.object(Operation::GetRange, kind, name)?;
        let ctx = || ErrorContext::new(Operation::GetRange, Some(kind), Some(name), LOCATION);
        let range = checked_range(ctx, data.len() as u64, offset, len)?;
        // Within `data`, so within usize.
        Ok(data[range.start as usize..range.end as usize].to_vec())
    }

    fn stat(
        &self,
        kind: ObjectKind,
        name: &ObjectName,
    ) -> Result<Option<ObjectInfo>, BackendError> {
        let st = self.begin(Operation::Stat, Some(kind), Some(name))?;
        Ok(st.objects.get(&(kind, name.clone())).map(|o| ObjectInfo {
            name: name.clone(),
            size: o.data.len() as u64,
            modified: o.modified,
        }))
    }

    fn list(&self, kind: ObjectKind) -> ObjectList<'_> {
        let items: Vec<Result<ObjectInfo, BackendError>> =
            match self.begin(Operation::List, Some(kind), None) {
                Ok(st) => st
                    .objects
                    .iter()
                    .filter(|((k, _), _)| *k == kind)
                    .map(|((_, name), o)| {
                        Ok(ObjectInfo {
                            name: name.clone(),
                            size: o.data.len() as u64,
                            modified: o.modified,
                        })
                    })
                    .collect(),
                Err(e) => vec![Err(e)],
            };
        Box::new(items.into_iter())
    }

    fn delete(&self, kind: ObjectKind, name: &ObjectName) -> Result<(), BackendError> {
        let mut st = self.begin(Operation::Delete, Some(kind), Some(name))?;
        st.objects.remove(&(kind, name.clone()));
        Ok(())
    }

    fn sync(&self) -> Result<(), BackendError> {
        let mut st = self.begin(Operation::Sync, None, None)?;
        st.durable = st.objects.clone();
        Ok(())
    }

    fn cleanup_temp(&self, _older_than: SystemTime) -> Result<u64, BackendError> {
        // Every change is one map operation: nothing is ever left half done.
        drop(self.begin(Operation::Sweep, None, None)?);
        Ok(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> ObjectName {
        ObjectName::new(s).unwrap()
    }

    #[test]
    fn a_crash_forgets_what_was_not_synced_but_keeps_creates() {
        let b = MemoryBackend::new();
        let m = ObjectKind::Manifest;
        b.put(m, &name("synced"), b"1").unwrap();
        b.put(m, &name("replaced"), b"old").unwrap();
        b.put(m, &name("deleted"), b"x").unwrap();
        b.sync().unwrap();
        b.put(m, &name("replaced"), b"new").unwrap();
        b.delete(m, &name("deleted")).unwrap();
        b.put(m, &name("unsynced"), b"2").unwrap();
        assert_eq!(
            b.create(ObjectKind::Lock, &name("l"), b"me").unwrap(),
            Created::New
        );
        b.crash();
        assert_eq!(b.get(m, &name("synced")).unwrap(), b"1");
        assert_eq!(b.get(m, &name("replaced")).unwrap(), b"old");
        assert_eq!(b.get(m, &name("deleted")).unwrap(), b"x");
        assert!(b.get(m, &name("unsynced")).unwrap_err().is_not_found());
        assert_eq!(b.get(ObjectKind::Lock, &name("l")).unwrap(), b"me");
    }

    #[test]
    fn injected_faults_fail_the_next_calls_then_stop() {
        let b = MemoryBackend::new();
        let c = ObjectKind::Chunk;
        b.fail_next(Operation::Put, 2, libc::ENOSPC);
        for _ in 0..2 {
            let e = b.put(c, &name("ab"), b"x").unwrap_err();
            assert!(matches!(e, BackendError::Full { .. }), "{e}");
            assert!(e.to_string().contains("storing chunk ab (memory)"), "{e}");
        }
        assert!(b.get(c, &name("ab")).unwrap_err().is_not_found());
        b.put(c, &name("ab"), b"x").unwrap();
        b.fail_next(Operation::Get, 1, libc::EIO);
        assert!(matches!(
            b.get(c, &name("ab")),
            Err(BackendError::Io { .. })
        ));
        assert_eq!(b.get(c, &name("ab")).unwrap(), b"x");
        b.fail_next(Operation::Sync, 1, libc::EROFS);
        assert!(matches!(b.sync(), Err(BackendError::ReadOnly { .. })));
        assert_eq!(b.count(Operation::Put), 3);
        assert_eq!(b.count(Operation::Get), 3);
        assert_eq!(b.count(Operation::Sync), 1);
        assert_eq!(b.count(Operation::Delete), 0);
    }
}
