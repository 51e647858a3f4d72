//! The conformance suite: what every [`Backend`] must do (the promises of the module docs),
//! as one set of checks run against each backend. To add a backend, implement [`Harness`]
//! for a type of the test module and add one line at the end of this file:
//! `conformance!(module_name, HarnessType);` — each check becomes a `#[test]` of
//! `vault::backend::conformance::module_name`.

use super::{Actor, Backend, BackendError, Created, MemoryBackend, ObjectKind, ObjectName};
use crate::vault::store::testutil::random;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// About how many bytes the store of a [`Harness::small`] fixture holds.
pub(crate) const SMALL: u64 = 2 << 20;

/// How the suite gets backends of one kind to test.
pub(crate) trait Harness {
    /// A fresh, empty backend; None when it cannot be had here (after
    /// `test_support::skip` said why: e.g. an emulator that is not running).
    fn fresh() -> Option<Fixture>;

    /// A fresh, empty backend whose store holds only about [`SMALL`] bytes and that
    /// [`Fixture::read_only`] can make refuse writes (a small tmpfs for the local backend);
    /// None when it cannot be had here, after saying why (object stores have no such
    /// limits: theirs say so with a plain `eprintln!`, their full-store checks do not
    /// apply).
    fn small() -> Option<Fixture>;
}

/// A backend under test, how to change the conditions of its store, and whatever must
/// live as long as it (a temp folder, a mount).
pub(crate) struct Fixture {
    // Dropped first: a mount cannot go while the backend holds folders open in it.
    pub backend: Arc<dyn Backend>,
    /// Makes the store refuse writes (true) or take them again (false).
    read_only: Option<Box<dyn Fn(bool)>>,
    /// Cuts the power: forgets whatever was not durable (where the backend can simulate
    /// that; a no-op elsewhere).
    crash: Option<Box<dyn Fn()>>,
    _keep: Option<Box<dyn std::any::Any>>,
}

impl Fixture {
    pub fn new(backend: Arc<dyn Backend>) -> Self {
        Fixture {
            backend,
            read_only: None,
            crash: None,
            _keep: None,
        }
    }

    /// Keeps `what` alive as long as the backend.
    pub fn keeping(mut self, what: impl std::any::Any) -> Self {
        self._keep = Some(Box::new(what));
        self
    }

    pub fn with_read_only(mut self, f: impl Fn(bool) + 'static) -> Self {
        self.read_only = Some(Box::new(f));
        self
    }

    pub fn with_crash(mut self, f: impl Fn() + 'static) -> Self {
        self.crash = Some(Box::new(f));
        self
    }

    fn backend(&self) -> &dyn Backend {
        &*self.backend
    }

    fn set_read_only(&self, read_only: bool) {
        let f = self
            .read_only
            .as_ref()
            .expect("a small fixture can be made read-only");
        f(read_only);
    }

    fn crash(&self) {
        if let Some(f) = &self.crash {
            f();
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
        b.get_into(kind, &n, &mut buf, u64::MAX).unwrap();
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
    let e = b.get_range(k, &name("missing.d0"), 0, 1).unwrap_err();
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
            b.get_into(kind, &n, &mut Vec::new(), u64::MAX).unwrap_err(),
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
    let part = b
        .get_range(ObjectKind::Chunk, &n, mid as u64 - 3, 4099)
        .unwrap();
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

pub fn sync_makes_puts_and_deletes_durable(f: &Fixture) {
    let b = &*f.backend;
    let m = ObjectKind::Manifest;
    b.put(m, &name("kept"), b"kept").unwrap();
    b.put(m, &name("replaced"), b"old").unwrap();
    b.put(m, &name("deleted"), b"x").unwrap();
    b.sync().unwrap();
    b.delete(m, &name("deleted")).unwrap();
    b.sync().unwrap();
    // After the last sync: may or may not survive a crash, but never in part.
    b.put(m, &name("replaced"), b"new").unwrap();
    b.put(m, &name("late"), b"late").unwrap();
    // Durable at once, without a sync.
    assert_eq!(
        b.create(ObjectKind::Lock, &name("l"), b"me").unwrap(),
        Created::New
    );
    f.crash();
    assert_eq!(b.get(m, &name("kept")).unwrap(), b"kept");
    let replaced = b.get(m, &name("replaced")).unwrap();
    assert!(replaced == b"old" || replaced == b"new", "{replaced:?}");
    assert!(b.get(m, &name("deleted")).unwrap_err().is_not_found());
    if let Ok(late) = b.get(m, &name("late")) {
        assert_eq!(late, b"late");
    }
    assert_eq!(b.get(ObjectKind::Lock, &name("l")).unwrap(), b"me");
}

pub fn cleanup_temp_leaves_objects_alone(b: &dyn Backend) {
    let mut want = BTreeMap::new();
    for (i, kind) in ObjectKind::ALL.into_iter().enumerate() {
        let n = name_for(kind, i as u64);
        b.put(kind, &n, &random(i as u64, 100)).unwrap();
        want.insert(kind, BTreeMap::from([(n.to_string(), 100)]));
    }
    let lock = name("held");
    assert_eq!(
        b.create(ObjectKind::Lock, &lock, b"me").unwrap(),
        Created::New
    );
    want.entry(ObjectKind::Lock)
        .or_default()
        .insert(lock.to_string(), 2);
    // Even with a cut-off in the future (everything counts as stale).
    let future = SystemTime::now() + Duration::from_secs(86_400);
    assert_eq!(b.cleanup_temp(future).unwrap(), 0);
    for kind in ObjectKind::ALL {
        assert_eq!(listed(b, kind), want[&kind], "{kind}");
    }
}

/// Fills the store of a small fixture with chunks of this size.
const PIECE: usize = 256 << 10;

pub fn a_full_store_says_full_and_keeps_what_it_held(f: &Fixture) {
    let b = &*f.backend;
    let c = ObjectKind::Chunk;
    let m = ObjectKind::Manifest;
    b.put(m, &name("m"), b"before").unwrap();
    let mut stored = BTreeMap::new();
    let (failed, e) = (0..)
        .find_map(|i: u64| {
            assert!(i < 4 * SMALL / PIECE as u64, "{i} puts and still not full");
            let data = random(1000 + i, PIECE);
            let n = chunk_name(&data);
            match b.put(c, &n, &data) {
                Ok(()) => {
                    stored.insert(n.to_string(), PIECE as u64);
                    None
                }
                Err(e) => Some((n, e)),
            }
        })
        .unwrap();
    assert!(matches!(e, BackendError::Full { .. }), "{e}");
    assert_eq!(e.actor(), Actor::Administrator);
    assert_eq!(e.details().code, "VaultStorageFull", "{e}");
    assert_eq!(e.context().name.as_ref(), Some(&failed), "{e}");
    assert!(e.to_string().contains("full"), "{e}");
    // A failed write leaves nothing (and nothing half written) behind.
    assert_eq!(b.stat(c, &failed).unwrap(), None);
    let big = random(7, 2 * PIECE);
    let e = b.create(ObjectKind::Key, &name("k"), &big).unwrap_err();
    assert!(matches!(e, BackendError::Full { .. }), "{e}");
    assert_eq!(b.stat(ObjectKind::Key, &name("k")).unwrap(), None);
    // A replacement that does not fit keeps the old object.
    let e = b.put(m, &name("m"), &big).unwrap_err();
    assert!(matches!(e, BackendError::Full { .. }), "{e}");
    assert_eq!(b.get(m, &name("m")).unwrap(), b"before");
    assert_eq!(listed(b, c), stored);
    // Deleting makes room again.
    for n in stored.keys() {
        b.delete(c, &name(n)).unwrap();
    }
    b.sync().unwrap();
    b.put(m, &name("m"), &big).unwrap();
    assert!(b.get(m, &name("m")).unwrap() == big);
}

pub fn a_read_only_store_refuses_writes_and_still_reads(f: &Fixture) {
    let b = &*f.backend;
    let data = random(5, 10_000);
    let n = chunk_name(&data);
    let c = ObjectKind::Chunk;
    b.put(c, &n, &data).unwrap();
    b.put(ObjectKind::Manifest, &name("m"), b"m").unwrap();
    b.sync().unwrap();
    f.set_read_only(true);
    let errors = [
        b.put(c, &n, b"other").unwrap_err(),
        b.put(ObjectKind::Manifest, &name("new"), b"x").unwrap_err(),
        b.create(ObjectKind::Lock, &name("l"), b"x").unwrap_err(),
        b.delete(c, &n).unwrap_err(),
    ];
    for e in errors {
        assert!(matches!(e, BackendError::ReadOnly { .. }), "{e}");
        assert_eq!(e.actor(), Actor::Administrator);
        assert_eq!(e.details().code, "VaultStorageReadOnly", "{e}");
        assert!(e.to_string().contains("read-only"), "{e}");
    }
    assert!(b.get(c, &n).unwrap() == data);
    assert_eq!(b.get_range(c, &n, 10, 5).unwrap(), &data[10..15]);
    assert_eq!(b.stat(c, &n).unwrap().unwrap().size, 10_000);
    assert_eq!(listed(b, c).len(), 1);
    assert_eq!(listed(b, ObjectKind::Manifest).len(), 1);
    assert!(listed(b, ObjectKind::Lock).is_empty());
    f.set_read_only(false);
    b.put(ObjectKind::Manifest, &name("new"), b"x").unwrap();
    b.delete(c, &n).unwrap();
    assert!(listed(b, c).is_empty());
}

/// Defines one `#[test]` per check of the suite for a backend, from its [`Harness`].
pub fn set_aside_takes_an_object_out_of_its_namespace(b: &dyn Backend) {
    let data = random(21, 3000);
    let c = chunk_name(&data);
    b.put(ObjectKind::Chunk, &c, &data).unwrap();
    b.set_aside(ObjectKind::Chunk, &c).unwrap();
    assert!(b.get(ObjectKind::Chunk, &c).unwrap_err().is_not_found());
    assert_eq!(b.stat(ObjectKind::Chunk, &c).unwrap(), None);
    assert!(listed(b, ObjectKind::Chunk).is_empty());
    // The name is free again: a backup stores the chunk anew, and a second damage of it is
    // set aside too (never over the first) or deleted.
    b.put(ObjectKind::Chunk, &c, &data).unwrap();
    assert_eq!(b.get(ObjectKind::Chunk, &c).unwrap(), data);
    b.set_aside(ObjectKind::Chunk, &c).unwrap();
    assert!(b.get(ObjectKind::Chunk, &c).unwrap_err().is_not_found());
    assert!(!b.set_aside(ObjectKind::Chunk, &c).unwrap());
    assert!(b.strays(ObjectKind::Chunk).unwrap().is_empty());
}

/// The vault's own objects on this backend, through the store, in every data format: a
/// point's indexes and manifest are written, read back and checked, listed as one point,
/// and removed manifest first.
pub fn a_points_objects_round_trip_list_and_go(f: &Fixture) {
    use crate::vault::codec::BlobKind;
    use crate::vault::store::index::IndexExpect;
    use crate::vault::store::{DataFormat, DiskIndex, StoreError, Vault};
    let keys = crate::vault::keys::MasterKey::generate().unwrap().keys();
    let formats = [
        DataFormat::V1,
        DataFormat::V2 { keys: None },
        DataFormat::V2 {
            keys: Some(Arc::new(keys)),
        },
    ];
    let index = DiskIndex {
        capacity: (3 << 20) + 7,
        chunk_size: 1 << 20,
        entries: vec![(0, [1; 32]), (3, [2; 32])],
    };
    for (i, format) in formats.into_iter().enumerate() {
        let v2 = format.version() >= 2;
        let store = Vault::on(f.backend.clone(), "chunks".into(), format);
        let p = format!("point-{i}");
        let s0 = store.write_point_index(&p, 0, &index, false).unwrap();
        let s3 = store.write_point_index(&p, 3, &index, true).unwrap();
        let f0 = store.read_point_index(&p, 0).unwrap();
        assert_eq!((&f0.index, f0.checksum), (&index, s0));
        let expect = |disk, checksum| IndexExpect {
            point_id: &p,
            disk,
            capacity: index.capacity,
            checksum: Some(checksum),
        };
        assert_eq!(store.read_point_index_for(&expect(3, s3)).unwrap(), index);
        // A checksum recorded for another disk is refused.
        assert!(store.read_point_index_for(&expect(0, s3)).is_err());
        if v2 {
            let m = name(&p);
            let body = format!("{{\"point\":\"{p}\"}}");
            store
                .put_description(
                    ObjectKind::Manifest,
                    &m,
                    BlobKind::Manifest,
                    body.as_bytes(),
                    true,
                )
                .unwrap();
            assert_eq!(
                store
                    .get_description(ObjectKind::Manifest, &m, BlobKind::Manifest)
                    .unwrap(),
                body.as_bytes()
            );
            // Authenticated under its own name: another point's manifest is refused.
            let other = name("another-point");
            let blob = f.backend.get(ObjectKind::Manifest, &m).unwrap();
            f.backend.put(ObjectKind::Manifest, &other, &blob).unwrap();
            let e = store
                .get_description(ObjectKind::Manifest, &other, BlobKind::Manifest)
                .unwrap_err();
            assert!(matches!(e, StoreError::IndexCorrupt { .. }), "{e}");
            f.backend.delete(ObjectKind::Manifest, &other).unwrap();
        } else {
            assert!(store
                .put_description(
                    ObjectKind::Manifest,
                    &name(&p),
                    BlobKind::Manifest,
                    b"{}",
                    true
                )
                .is_err());
        }
        let stored = store.stored_points().unwrap();
        let held = &stored[&p];
        assert_eq!((held.manifest, &held.disks[..]), (v2, &[0, 3][..]));
        assert_eq!(
            store.remove_manifests(std::slice::from_ref(&p)).unwrap(),
            usize::from(v2)
        );
        assert!(!store.stored_points().unwrap()[&p].manifest);
        store.remove_point(&p, &[0, 3]).unwrap();
        store.sync().unwrap();
        assert!(!store.stored_points().unwrap().contains_key(&p));
        let e = store.read_point_index(&p, 0).unwrap_err();
        assert!(matches!(e, StoreError::IndexCorrupt { .. }), "{e}");
        assert!(e.to_string().contains("missing"), "{e}");
    }
}

macro_rules! conformance {
    ($module:ident, $harness:ty) => {
        mod $module {
            use super::*;
            conformance!(@each $harness, fresh, Fixture::backend;
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
                cleanup_temp_leaves_objects_alone,
                set_aside_takes_an_object_out_of_its_namespace,
            );
            conformance!(@each $harness, fresh, std::convert::identity;
                sync_makes_puts_and_deletes_durable,
                a_points_objects_round_trip_list_and_go,
            );
            conformance!(@each $harness, small, std::convert::identity;
                a_full_store_says_full_and_keeps_what_it_held,
                a_read_only_store_refuses_writes_and_still_reads,
            );
        }
    };
    (@each $harness:ty, $make:ident, $arg:path; $($check:ident),* $(,)?) => {
        $(
            #[test]
            fn $check() {
                if let Some(f) = <$harness as Harness>::$make() {
                    super::$check($arg(&f));
                }
            }
        )*
    };
}

/// The in-memory backend; its crash forgets what was not synced.
struct Memory;

impl Memory {
    fn fixture(b: MemoryBackend) -> Fixture {
        let b = Arc::new(b);
        let (crashed, read_only) = (b.clone(), b.clone());
        Fixture::new(b)
            .with_crash(move || crashed.crash())
            .with_read_only(move |ro| read_only.set_read_only(ro))
    }
}

impl Harness for Memory {
    fn fresh() -> Option<Fixture> {
        Some(Memory::fixture(MemoryBackend::new()))
    }

    fn small() -> Option<Fixture> {
        Some(Memory::fixture(MemoryBackend::with_capacity(SMALL)))
    }
}

/// The local-folder backend: in a temp folder, and on a small tmpfs (root only) that is
/// remounted read-only on demand.
struct Local;

impl Local {
    fn open(parent: &std::path::Path) -> Arc<super::LocalBackend> {
        let dir = crate::fsx::Dir::open_private(&parent.join("vault"), true).unwrap();
        Arc::new(super::LocalBackend::open(&dir).unwrap())
    }
}

impl Harness for Local {
    fn fresh() -> Option<Fixture> {
        use std::os::unix::fs::PermissionsExt;
        let t = tempfile::tempdir().unwrap();
        std::fs::set_permissions(t.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        Some(Fixture::new(Local::open(t.path())).keeping(t))
    }

    fn small() -> Option<Fixture> {
        let fs = Arc::new(crate::vault::store::testutil::Tmpfs::mount(&format!(
            "size={SMALL},mode=0700"
        ))?);
        let remount = fs.clone();
        Some(
            Fixture::new(Local::open(fs.path()))
                .with_read_only(move |ro| remount.remount(if ro { "ro" } else { "rw" }))
                .keeping(fs),
        )
    }
}

/// Object storage: S3 on an S3 server (moto in CI, `VMVAULT_TEST_S3_ENDPOINT`) and Azure
/// Blob on Azurite (`VMVAULT_TEST_AZURE_ENDPOINT`), each test in a fresh random prefix.
/// Every write is durable when it returns, so there is nothing for a crash to forget; and
/// a bucket has no size to fill or read-only switch, so the small fixtures do not apply.
struct S3;

impl Harness for S3 {
    fn fresh() -> Option<Fixture> {
        let spec = super::object::testenv::s3()?;
        Some(Fixture::new(Arc::new(super::object::open(&spec).unwrap())))
    }

    fn small() -> Option<Fixture> {
        eprintln!("not applicable: an S3 bucket has no size limit or read-only switch to test");
        None
    }
}

struct Azure;

impl Harness for Azure {
    fn fresh() -> Option<Fixture> {
        let spec = super::object::testenv::azure()?;
        Some(Fixture::new(Arc::new(super::object::open(&spec).unwrap())))
    }

    fn small() -> Option<Fixture> {
        eprintln!(
            "not applicable: an Azure container has no size limit or read-only switch to test"
        );
        None
    }
}

conformance!(memory_backend, Memory);
conformance!(local_backend, Local);
conformance!(s3_backend, S3);
conformance!(azure_backend, Azure);
