//! The conformance suite: what every [`Backend`] must do, as one set of checks run against
//! each backend. To add a backend, add one line at the end of this file:
//! `conformance!(name, factory);` where the factory returns `Option<Fixture>` (None after
//! explaining the skip with `test_support::skip`, e.g. when an emulator is not running).

use super::{Backend, BackendError, Created, ObjectKind, ObjectName};
use crate::vault::store::testutil::random;
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

/// A backend under test, and whatever must live as long as it (a temp folder).
pub(crate) struct Fixture {
    pub backend: Box<dyn Backend>,
    _keep: Option<Box<dyn std::any::Any + Send>>,
}

impl Fixture {
    pub fn new(backend: Box<dyn Backend>, keep: Option<Box<dyn std::any::Any + Send>>) -> Self {
        Fixture {
            backend,
            _keep: keep,
        }
    }
}

fn name(s: &str) -> ObjectName {
    ObjectName::new(s).unwrap()
}

/// A chunk name: the hex BLAKE3 of `data`, as the codec names unkeyed chunks.
fn chunk_name(data: &[u8]) -> ObjectName {
    name(&blake3::hash(data).to_hex())
}

/// A valid name for every kind (chunks need hex).
fn name_for(kind: ObjectKind, i: u64) -> ObjectName {
    if kind == ObjectKind::Chunk {
        chunk_name(&i.to_le_bytes())
    } else {
        name(&format!("obj-{i}.d0"))
    }
}

/// Name → size, of a kind.
fn listed(b: &dyn Backend, kind: ObjectKind) -> BTreeMap<String, u64> {
    b.list(kind)
        .map(|r| {
            let o = r.unwrap();
            (o.name.to_string(), o.size)
        })
        .collect()
}

pub fn round_trip_every_kind(b: &dyn Backend) {
    let mut buf = Vec::with_capacity(1 << 16);
    for (i, kind) in ObjectKind::ALL.into_iter().enumerate() {
        let n = name_for(kind, i as u64);
        let data = random(i as u64, 1000 + i * 4097);
        b.put(kind, &n, &data).unwrap();
        assert_eq!(b.get(kind, &n).unwrap(), data, "{kind}");
        let cap = buf.capacity();
        b.get_into(kind, &n, &mut buf).unwrap();
        assert_eq!(buf, data, "{kind}");
        assert_eq!(buf.capacity(), cap, "get_into reuses the buffer");
        let info = b.stat(kind, &n).unwrap().unwrap();
        assert_eq!((info.name, info.size), (n.clone(), data.len() as u64));
        // An empty object is an object.
        let empty = name_for(kind, 1000 + i as u64);
        b.put(kind, &empty, b"").unwrap();
        assert_eq!(b.get(kind, &empty).unwrap(), b"");
        assert_eq!(b.stat(kind, &empty).unwrap().unwrap().size, 0);
    }
    b.sync().unwrap();
}

pub fn kinds_are_separate_namespaces(b: &dyn Backend) {
    let n = name("p1.d0");
    b.put(ObjectKind::Index, &n, b"index").unwrap();
    b.put(ObjectKind::Manifest, &n, b"manifest").unwrap();
    assert_eq!(b.get(ObjectKind::Index, &n).unwrap(), b"index");
    b.delete(ObjectKind::Manifest, &n).unwrap();
    assert_eq!(b.get(ObjectKind::Index, &n).unwrap(), b"index");
    assert!(b.stat(ObjectKind::Item, &n).unwrap().is_none());
    assert!(listed(b, ObjectKind::Policy).is_empty());
}

pub fn put_replaces(b: &dyn Backend) {
    let n = name("m");
    b.put(ObjectKind::Manifest, &n, &random(1, 5000)).unwrap();
    b.put(ObjectKind::Manifest, &n, b"short").unwrap();
    assert_eq!(b.get(ObjectKind::Manifest, &n).unwrap(), b"short");
    assert_eq!(b.stat(ObjectKind::Manifest, &n).unwrap().unwrap().size, 5);
    assert_eq!(listed(b, ObjectKind::Manifest).len(), 1);
}

pub fn create_only_if_absent(b: &dyn Backend) {
    let n = name("vault");
    assert_eq!(
        b.create(ObjectKind::Lock, &n, b"first").unwrap(),
        Created::New
    );
    assert_eq!(
        b.create(ObjectKind::Lock, &n, b"second").unwrap(),
        Created::AlreadyExists
    );
    assert_eq!(b.get(ObjectKind::Lock, &n).unwrap(), b"first");
    // Over an object that was put: also taken.
    b.put(ObjectKind::Key, &n, b"put").unwrap();
    assert_eq!(
        b.create(ObjectKind::Key, &n, b"created").unwrap(),
        Created::AlreadyExists
    );
    assert_eq!(b.get(ObjectKind::Key, &n).unwrap(), b"put");
    // Free again after a delete.
    b.delete(ObjectKind::Lock, &n).unwrap();
    assert_eq!(
        b.create(ObjectKind::Lock, &n, b"third").unwrap(),
        Created::New
    );
    assert_eq!(listed(b, ObjectKind::Lock).len(), 1);
}

pub fn racing_creates_have_one_winner(b: &dyn Backend) {
    const THREADS: usize = 8;
    for round in 0..20 {
        let n = name(&format!("lock-{round}"));
        let barrier = std::sync::Barrier::new(THREADS);
        let outcomes: Vec<(usize, Created)> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..THREADS)
                .map(|t| {
                    let (n, barrier) = (&n, &barrier);
                    s.spawn(move || {
                        barrier.wait();
                        let data = format!("holder {t}");
                        (t, b.create(ObjectKind::Lock, n, data.as_bytes()).unwrap())
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let winners: Vec<usize> = outcomes
            .iter()
            .filter(|(_, c)| *c == Created::New)
            .map(|(t, _)| *t)
            .collect();
        assert_eq!(winners.len(), 1, "round {round}: {outcomes:?}");
        let held = b.get(ObjectKind::Lock, &n).unwrap();
        assert_eq!(held, format!("holder {}", winners[0]).as_bytes());
    }
}

pub fn racing_puts_of_one_chunk_leave_one_whole_object(b: &dyn Backend) {
    let data = random(7, 300_000);
    let n = chunk_name(&data);
    std::thread::scope(|s| {
        for _ in 0..6 {
            s.spawn(|| {
                for _ in 0..20 {
                    b.put(ObjectKind::Chunk, &n, &data).unwrap();
                    // Every reader sees the whole object, whichever put it comes from.
                    assert!(b.get(ObjectKind::Chunk, &n).unwrap() == data);
                }
            });
        }
    });
    assert_eq!(
        listed(b, ObjectKind::Chunk),
        BTreeMap::from([(n.to_string(), data.len() as u64)])
    );
}

pub fn get_range_at_the_edges(b: &dyn Backend) {
    let data = random(3, 1000);
    let n = name("i.d0");
    let k = ObjectKind::Index;
    b.put(k, &n, &data).unwrap();
    assert_eq!(b.get_range(k, &n, 0, 0).unwrap(), b"");
    assert_eq!(b.get_range(k, &n, 0, 1000).unwrap(), data);
    assert_eq!(b.get_range(k, &n, 0, 1).unwrap(), &data[..1]);
    assert_eq!(b.get_range(k, &n, 999, 1).unwrap(), &data[999..]);
    assert_eq!(b.get_range(k, &n, 500, 200).unwrap(), &data[500..700]);
    assert_eq!(b.get_range(k, &n, 1000, 0).unwrap(), b"");
    for (offset, len) in [(1000, 1), (990, 11), (0, 1001), (1001, 0), (u64::MAX, 1)] {
        let e = b.get_range(k, &n, offset, len).unwrap_err();
        assert!(
            matches!(e, BackendError::OutOfRange { size: 1000, .. }),
            "{offset}+{len}: {e}"
        );
        assert!(e.to_string().contains("holds 1000 bytes"), "{e}");
    }
    let e = b.get_range(k, &name("missing"), 0, 1).unwrap_err();
    assert!(e.is_not_found(), "{e}");
}

pub fn list_follows_puts_and_deletes(b: &dyn Backend) {
    let start = SystemTime::now();
    let k = ObjectKind::Manifest;
    for (n, len) in [("a", 1), ("b", 20), ("c", 300)] {
        b.put(k, &name(n), &vec![1; len]).unwrap();
    }
    b.put(ObjectKind::Item, &name("x"), b"item").unwrap();
    let want = |v: &[(&str, u64)]| {
        v.iter()
            .map(|(n, s)| (n.to_string(), *s))
            .collect::<BTreeMap<_, _>>()
    };
    assert_eq!(listed(b, k), want(&[("a", 1), ("b", 20), ("c", 300)]));
    b.delete(k, &name("b")).unwrap();
    b.put(k, &name("a"), b"four").unwrap();
    assert_eq!(listed(b, k), want(&[("a", 4), ("c", 300)]));
    assert_eq!(listed(b, ObjectKind::Item), want(&[("x", 4)]));
    // Times are the write times (coarse clocks: a little slack either way).
    let slack = Duration::from_secs(5);
    for o in b.list(k) {
        let o = o.unwrap();
        assert!(o.modified + slack >= start, "{o:?}");
        assert!(o.modified <= SystemTime::now() + slack, "{o:?}");
    }
}

pub fn delete_of_a_missing_object_is_ok(b: &dyn Backend) {
    for kind in ObjectKind::ALL {
        let n = name_for(kind, 1);
        b.delete(kind, &n).unwrap();
        b.put(kind, &n, b"x").unwrap();
        b.delete(kind, &n).unwrap();
        b.delete(kind, &n).unwrap();
        assert!(b.stat(kind, &n).unwrap().is_none());
        assert!(b.get(kind, &n).unwrap_err().is_not_found());
    }
    b.sync().unwrap();
}

pub fn missing_objects_are_typed_not_found(b: &dyn Backend) {
    for kind in ObjectKind::ALL {
        let n = name_for(kind, 42);
        for e in [
            b.get(kind, &n).unwrap_err(),
            b.get_into(kind, &n, &mut Vec::new()).unwrap_err(),
            b.get_range(kind, &n, 0, 0).unwrap_err(),
        ] {
            assert!(e.is_not_found(), "{kind}: {e}");
            let ctx = e.context();
            assert_eq!((ctx.kind, ctx.name.as_ref()), (Some(kind), Some(&n)));
            assert!(e.to_string().contains(&format!("{kind} {n}")), "{e}");
        }
        assert_eq!(b.stat(kind, &n).unwrap(), None);
    }
}

pub fn names_that_break_a_kind_rule_are_refused(b: &dyn Backend) {
    // Names that are invalid for every kind cannot even be made (ObjectName::new, tested
    // in the module); a chunk name must also be hex.
    for bad in ["zz", "a", "ab-cd", "ab.cd"] {
        let n = name(bad);
        let k = ObjectKind::Chunk;
        let errors = [
            b.put(k, &n, b"x").unwrap_err(),
            b.create(k, &n, b"x").unwrap_err(),
            b.get(k, &n).unwrap_err(),
            b.get_range(k, &n, 0, 0).unwrap_err(),
            b.stat(k, &n).unwrap_err(),
            b.delete(k, &n).unwrap_err(),
        ];
        for e in errors {
            assert!(matches!(e, BackendError::InvalidName { .. }), "{bad}: {e}");
            assert!(e.to_string().contains("hex digest"), "{e}");
        }
        // Fine for other kinds.
        b.put(ObjectKind::Manifest, &n, b"x").unwrap();
    }
    assert!(listed(b, ObjectKind::Chunk).is_empty());
}

pub fn large_objects_round_trip(b: &dyn Backend) {
    let data = random(20, 20 << 20);
    let n = chunk_name(&data);
    b.put(ObjectKind::Chunk, &n, &data).unwrap();
    assert!(b.get(ObjectKind::Chunk, &n).unwrap() == data);
    let mid: usize = 10 << 20;
    let part = b.get_range(ObjectKind::Chunk, &n, mid as u64 - 3, 4099).unwrap();
    assert!(part[..] == data[mid - 3..mid + 4096]);
    assert_eq!(
        b.stat(ObjectKind::Chunk, &n).unwrap().unwrap().size,
        20 << 20
    );
    b.sync().unwrap();
}

pub fn many_chunks_are_all_listed(b: &dyn Backend) {
    let mut want = BTreeMap::new();
    for i in 0..10_000u64 {
        let data = i.to_le_bytes().repeat((i % 4 + 1) as usize);
        let n = chunk_name(&data);
        b.put(ObjectKind::Chunk, &n, &data).unwrap();
        want.insert(n.to_string(), data.len() as u64);
    }
    b.sync().unwrap();
    assert_eq!(listed(b, ObjectKind::Chunk), want);
}

/// Defines one `#[test]` per check of the suite for a backend.
macro_rules! conformance {
    ($backend:ident, $factory:expr) => {
        mod $backend {
            use super::*;
            conformance!(@tests $factory;
                round_trip_every_kind,
                kinds_are_separate_namespaces,
                put_replaces,
                create_only_if_absent,
                racing_creates_have_one_winner,
                racing_puts_of_one_chunk_leave_one_whole_object,
                get_range_at_the_edges,
                list_follows_puts_and_deletes,
                delete_of_a_missing_object_is_ok,
                missing_objects_are_typed_not_found,
                names_that_break_a_kind_rule_are_refused,
                large_objects_round_trip,
                many_chunks_are_all_listed,
            );
        }
    };
    (@tests $factory:expr; $($check:ident),* $(,)?) => {
        $(
            #[test]
            fn $check() {
                let factory: fn() -> Option<Fixture> = $factory;
                if let Some(f) = factory() {
                    super::$check(&*f.backend);
                }
            }
        )*
    };
}

fn memory() -> Option<Fixture> {
    Some(Fixture::new(Box::new(super::MemoryBackend::new()), None))
}

fn local() -> Option<Fixture> {
    use std::os::unix::fs::PermissionsExt;
    let t = tempfile::tempdir().unwrap();
    std::fs::set_permissions(t.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let dir = crate::fsx::Dir::open_private(&t.path().join("vault"), true).unwrap();
    let b = super::LocalBackend::open(&dir).unwrap();
    Some(Fixture::new(Box::new(b), Some(Box::new(t))))
}

conformance!(memory_backend, memory);
conformance!(local_backend, local);
