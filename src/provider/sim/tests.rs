//! Behaviour of the simulated source through the `Provider` trait.

use super::*;
use crate::model::ErrorDetails;
use chrono::TimeZone;
use std::collections::BTreeSet;
use std::time::Instant;

const MIB: u64 = 1 << 20;
/// See `generated_bytes_never_change`.
const GOLDEN: (usize, u64) = (4, 0xbeddd085d257e771);
const GOLDEN_TOKEN: &str = "sim1:0926035ffff7ae2f:30";

fn instant() -> SimSettings {
    SimSettings {
        discovery_latency_ms: Some(0),
        registration_latency_ms: Some(0),
        snapshot_latency_ms: Some(0),
        ..SimSettings::default()
    }
}

fn day(d: i64) -> DateTime<Utc> {
    // Noon, so that the day is unambiguous.
    Utc.with_ymd_and_hms(2025, 1, 1, 12, 0, 0).unwrap() + chrono::Duration::days(d)
}

fn embedded() -> SimProvider {
    SimProvider::new(Subscription::embedded_default(), &instant())
}

/// The embedded subscription with every VM healthy, to look at every disk.
fn healthy() -> SimProvider {
    let mut sub = Subscription::embedded_default();
    for v in &mut sub.vms {
        v.backup_failure = None;
        v.vm_agent = VmAgent::Ready;
    }
    SimProvider::new(sub, &instant())
}

fn vm_of(p: &SimProvider, id: &str) -> Vm {
    p.vm(id)
        .unwrap_or_else(|| panic!("{id} not in the subscription"))
}

/// A subscription of one running VM with one small disk (24 MiB, 8 MiB allocated), so tests
/// can compare whole disks byte by byte.
fn small(seed: u64, churn_percent: f64) -> SimProvider {
    let text = "name = \"small\"\nseed = 1\norigin = \"2025-01-01\"\n[[vm]]\nname = \"tiny\"\n\
                cloud_service = \"test\"\nregion = \"westeurope\"\nos = \"Linux\"\n\
                size = \"Standard_B1s\"\npower_state = \"Running\"\n\
                disks = [{ capacity_gib = 1, allocated_mib = 8, content = \"files\" }]\n";
    let mut sub = Subscription::from_toml_str(text, "small.toml").unwrap();
    sub.seed = seed;
    sub.vms[0].vm.disks[0].capacity = 24 * MIB;
    sub.daily_change_percent = churn_percent;
    SimProvider::new(sub, &instant())
}

fn snap(p: &SimProvider, id: &str, at: DateTime<Utc>) -> Box<dyn Snapshot> {
    p.snapshot(&vm_of(p, id), at, None, &CancelToken::new())
        .unwrap()
}

fn whole_disk(p: &SimProvider, id: &str, disk: u32, at: DateTime<Utc>) -> Vec<u8> {
    let r = snap(p, id, at).open_disk(disk).unwrap();
    let mut buf = vec![0xEEu8; r.capacity() as usize];
    r.read_at(0, &mut buf).unwrap();
    buf
}

fn check_extents(extents: &[Extent], capacity: u64, what: &str) {
    for e in extents {
        assert!(
            e.len > 0 && e.end() <= capacity,
            "{what}: {e:?} outside capacity {capacity}"
        );
    }
    for w in extents.windows(2) {
        assert!(
            w[0].end() <= w[1].offset,
            "{what}: unsorted or overlapping {:?} {:?}",
            w[0],
            w[1]
        );
    }
}

fn contains(extents: &[Extent], at: u64) -> bool {
    let i = extents.partition_point(|e| e.end() <= at);
    extents.get(i).is_some_and(|e| e.offset <= at)
}

#[test]
fn same_seed_same_bytes_other_seed_other_bytes() {
    let a = whole_disk(&small(7, 1.0), "sim:/test/tiny", 0, day(30));
    let b = whole_disk(&small(7, 1.0), "sim:/test/tiny", 0, day(30));
    let c = whole_disk(&small(8, 1.0), "sim:/test/tiny", 0, day(30));
    assert!(a == b, "same seed, same bytes");
    assert!(a != c, "another seed, other bytes");
    assert!(a.iter().any(|&x| x != 0));
}

/// The bytes of a disk are a contract: recovery points in existing vaults are compared with
/// `sim export-disk`. If this fails, the generator changed: restore the old behaviour, or
/// version it (a new token prefix and a subscription key choosing the generator).
#[test]
fn generated_bytes_never_change() {
    let p = small(7, 15.0);
    let s = snap(&p, "sim:/test/tiny", day(30));
    let r = s.open_disk(0).unwrap();
    let extents = r.allocated_extents().unwrap();
    let mut digest = 0u64;
    for e in &extents {
        let mut buf = vec![0u8; e.len as usize];
        r.read_at(e.offset, &mut buf).unwrap();
        digest = diskgen::hash_bytes(digest, &buf);
    }
    let layout: Vec<(u64, u64)> = extents.iter().map(|e| (e.offset, e.len)).collect();
    assert_eq!(
        (layout.len(), digest),
        GOLDEN,
        "layout {layout:?}, digest {digest:#x}"
    );
    assert_eq!(s.cbt_token().unwrap(), GOLDEN_TOKEN);
}

#[test]
fn disks_change_a_little_each_day() {
    // 15 % of 8 MiB: over the 1 MiB burst size, so the disk is written every day.
    let p = small(7, 15.0);
    let d10 = whole_disk(&p, "sim:/test/tiny", 0, day(10));
    let d11 = whole_disk(&p, "sim:/test/tiny", 0, day(11));
    let differing = d10.iter().zip(&d11).filter(|(x, y)| x != y).count() as u64;
    assert!(differing > 0, "nothing changed in a day");
    assert!(
        differing < 8 * MIB / 2,
        "{differing} bytes changed in a day: more than a little"
    );
    // Two instants of the same day are the same disk.
    let later = whole_disk(
        &p,
        "sim:/test/tiny",
        0,
        day(10) + chrono::Duration::hours(11),
    );
    assert!(later == d10);
}

#[test]
fn changed_extents_cover_every_difference() {
    let p = small(11, 15.0);
    let vm = "sim:/test/tiny";
    for (from, to) in [(3, 4), (3, 20), (0, 90), (40, 41)] {
        let old_snap = snap(&p, vm, day(from));
        let new_snap = snap(&p, vm, day(to));
        let old_reader = old_snap.open_disk(0).unwrap();
        let new_reader = new_snap.open_disk(0).unwrap();
        let cap = new_reader.capacity();
        let token = old_snap.cbt_token().unwrap();
        let changed = new_reader
            .changed_extents(&token)
            .unwrap()
            .expect("same disk, later day");
        check_extents(&changed, cap, "changed");
        let old_alloc = old_reader.allocated_extents().unwrap();
        let new_alloc = new_reader.allocated_extents().unwrap();
        assert!(
            old_alloc.iter().all(|o| new_alloc
                .iter()
                .any(|n| n.offset <= o.offset && o.end() <= n.end())),
            "allocations never shrink"
        );
        // Outside both days' allocated extents both read as zeros; compare inside them,
        // block by block (fast), then byte by byte where a block differs.
        let union = overlay::merge_unsorted(old_alloc.iter().chain(&new_alloc).copied().collect());
        let mut differing = 0;
        for e in union {
            let mut old = vec![0u8; e.len as usize];
            let mut new = vec![0u8; e.len as usize];
            old_reader.read_at(e.offset, &mut old).unwrap();
            new_reader.read_at(e.offset, &mut new).unwrap();
            for (b, (o, n)) in old.chunks(4096).zip(new.chunks(4096)).enumerate() {
                if o == n {
                    continue;
                }
                for i in (0..o.len()).filter(|&i| o[i] != n[i]) {
                    let at = e.offset + (b * 4096 + i) as u64;
                    differing += 1;
                    assert!(
                        contains(&changed, at),
                        "byte {at} differs between day {from} and {to} but is not in the changed extents"
                    );
                }
            }
        }
        assert!(differing > 0, "day {from} → {to}: nothing changed");
        // Changed extents are a small part of the disk, not "everything".
        let changed_bytes: u64 = changed.iter().map(|e| e.len).sum();
        assert!(changed_bytes < cap / 2, "{changed_bytes} changed bytes");
    }
    // The same day: nothing changed.
    let s = snap(&p, vm, day(9));
    assert_eq!(
        s.open_disk(0)
            .unwrap()
            .changed_extents(&s.cbt_token().unwrap())
            .unwrap(),
        Some(vec![])
    );
}

#[test]
fn tokens_of_later_days_other_vms_or_garbage_are_unknown() {
    let p = embedded();
    let web = "sim:/sales/web01";
    let later = snap(&p, web, day(20)).cbt_token().unwrap();
    let other_vm = snap(&p, "sim:/hr/web01", day(5)).cbt_token().unwrap();
    let reader = snap(&p, web, day(10)).open_disk(0).unwrap();
    assert_eq!(
        reader.changed_extents(&later).unwrap(),
        None,
        "since a later day"
    );
    assert_eq!(
        reader.changed_extents(&other_vm).unwrap(),
        None,
        "since another VM"
    );
    for garbage in ["", "sim1:", "sim1:zz:3", "sim2:0000000000000000:3", "abc"] {
        assert_eq!(
            reader.changed_extents(garbage).unwrap(),
            None,
            "{garbage:?}"
        );
    }
    // Another seed is other disks: its tokens do not apply either.
    let reseeded = SimProvider::new(
        Subscription::load(&SimSettings {
            seed: Some(99),
            ..instant()
        })
        .unwrap(),
        &instant(),
    );
    let earlier = snap(&reseeded, web, day(1)).cbt_token().unwrap();
    assert_eq!(
        reader.changed_extents(&earlier).unwrap(),
        None,
        "another seed"
    );
    let own_earlier = snap(&p, web, day(1)).cbt_token().unwrap();
    assert!(reader.changed_extents(&own_earlier).unwrap().is_some());
}

#[test]
fn allocated_extents_are_sorted_disjoint_and_within_capacity() {
    let p = healthy();
    for vm in p.discover(&CancelToken::new()).unwrap().vms {
        for d in [0, 1, 365, 3000] {
            let s = snap(&p, &vm.source_id, day(d));
            for info in s.disks() {
                let r = s.open_disk(info.index).unwrap();
                assert_eq!(r.capacity(), info.capacity);
                let ext = r.allocated_extents().unwrap();
                check_extents(
                    &ext,
                    r.capacity(),
                    &format!("{} {} day {d}", vm.source_id, info.name),
                );
                assert!(!ext.is_empty());
            }
        }
    }
}

#[test]
fn default_subscription_allocates_one_to_two_gib() {
    let p = healthy();
    let mut total = 0;
    for vm in p.discover(&CancelToken::new()).unwrap().vms {
        let s = snap(&p, &vm.source_id, day(0));
        for info in s.disks() {
            total += s
                .open_disk(info.index)
                .unwrap()
                .allocated_extents()
                .unwrap()
                .iter()
                .map(|e| e.len)
                .sum::<u64>();
        }
    }
    assert!(
        (1024 * MIB..=2048 * MIB).contains(&total),
        "{} MiB",
        total / MIB
    );
}

#[test]
fn holes_read_as_zeros() {
    let p = embedded();
    let r = snap(&p, "sim:/sales/sql01", day(100)).open_disk(1).unwrap();
    let ext = r.allocated_extents().unwrap();
    let gap = ext
        .windows(2)
        .find(|w| w[1].offset - w[0].end() >= 2 * MIB)
        .expect("a hole of 2 MiB");
    let mut buf = vec![0xAAu8; 2 * MIB as usize];
    r.read_at(gap[0].end(), &mut buf).unwrap();
    assert!(buf.iter().all(|&b| b == 0));
    // A read straddling the end of an extent: data, then zeros.
    let e = ext[0];
    let mut buf = vec![0xAAu8; 8192];
    r.read_at(e.end() - 4096, &mut buf).unwrap();
    if ext.get(1).is_none_or(|n| n.offset >= e.end() + 4096) {
        assert!(buf[4096..].iter().all(|&b| b == 0));
    }
    let mut tail = vec![0xAAu8; 4096];
    if ext.last().is_some_and(|l| l.end() <= r.capacity() - 4096) {
        r.read_at(r.capacity() - 4096, &mut tail).unwrap();
        assert!(tail.iter().all(|&b| b == 0));
    }
}

#[test]
fn reads_at_odd_offsets_equal_slices_of_a_big_read() {
    let p = embedded();
    let r = snap(&p, "sim:/sales/web01", day(42)).open_disk(0).unwrap();
    // A window over the start of the disk, which mixes pieces of every kind and holes.
    let base = 1234u64;
    let mut big = vec![0u8; 24 * MIB as usize];
    r.read_at(base, &mut big).unwrap();
    assert!(big.iter().any(|&b| b != 0));
    let mut rng = SplitMix::new(3);
    for _ in 0..300 {
        let start = rng.below(big.len() as u64 - 1) as usize;
        let len = (1 + rng.below(70_000) as usize).min(big.len() - start);
        let mut part = vec![0xEEu8; len];
        r.read_at(base + start as u64, &mut part).unwrap();
        assert!(
            part == big[start..start + len],
            "read at {} + {len}",
            base + start as u64
        );
    }
    // Reads from several threads at once agree too.
    let r: Arc<dyn DiskReader> = Arc::from(r);
    std::thread::scope(|s| {
        for t in 0..4u64 {
            let r = r.clone();
            let big = &big;
            s.spawn(move || {
                let start = (t * 5 * MIB + 17) as usize;
                let mut part = vec![0u8; 3 * MIB as usize + 5];
                r.read_at(base + start as u64, &mut part).unwrap();
                assert!(part == big[start..start + part.len()]);
            });
        }
    });
    let mut past_end = [0u8; 2];
    assert!(r.read_at(r.capacity() - 1, &mut past_end).is_err());
}

/// An export killed before it finished leaves its temporary file; the next export to that
/// name removes it (its process is gone), and leaves those of live processes alone.
#[test]
fn export_disk_removes_the_leftovers_of_killed_exports() {
    let p = small(5, 3.0);
    let dir = tempfile::tempdir().unwrap();
    let to = dir.path().join("tiny-disk0.raw");
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    let dead_leftover = dir.path().join(format!(".tiny-disk0.raw.partial-{dead}"));
    let live_leftover = dir.path().join(".tiny-disk0.raw.partial-1");
    std::fs::write(&dead_leftover, b"half").unwrap();
    std::fs::write(&live_leftover, b"busy").unwrap();
    p.export_disk("sim:/test/tiny", 0, day(3), &to).unwrap();
    assert!(
        !dead_leftover.exists(),
        "the leftover of a dead export stays"
    );
    assert!(live_leftover.exists(), "removed the file of a live process");
    assert!(to.is_file());
}

#[test]
fn export_disk_equals_read_at_and_is_sparse() {
    let p = small(5, 3.0);
    let dir = tempfile::tempdir().unwrap();
    let to = dir.path().join("tiny-disk0.raw");
    let at = day(77);
    let written = p.export_disk("sim:/test/tiny", 0, at, &to).unwrap();
    let file = std::fs::read(&to).unwrap();
    let expected = whole_disk(&p, "sim:/test/tiny", 0, at);
    assert_eq!(file.len(), expected.len());
    assert!(file == expected, "exported image differs from read_at");
    let allocated: u64 = snap(&p, "sim:/test/tiny", at)
        .open_disk(0)
        .unwrap()
        .allocated_extents()
        .unwrap()
        .iter()
        .map(|e| e.len)
        .sum();
    assert!(
        written > 0 && written < allocated,
        "zero blocks are skipped: {written} of {allocated}"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let on_disk = std::fs::metadata(&to).unwrap().blocks() * 512;
        assert!(
            on_disk <= written + MIB,
            "not sparse: {on_disk} bytes on disk"
        );
    }
    let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(leftovers.len(), 1, "no temporary file left behind");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&to).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "owner-only like a restore");
    }
    // Never replaced, never written through a symlink (dangling or not).
    let e = p.export_disk("sim:/test/tiny", 0, at, &to).unwrap_err();
    assert!(e.details().message.contains("already exists"), "{e}");
    assert!(std::fs::read(&to).unwrap() == file);
    let link = dir.path().join("link.raw");
    std::os::unix::fs::symlink(dir.path().join("nothing"), &link).unwrap();
    assert!(p.export_disk("sim:/test/tiny", 0, at, &link).is_err());
    assert!(!dir.path().join("nothing").exists());
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
    // Unknown VM or disk: clear errors.
    let e = p.export_disk("sim:/test/nope", 0, at, &to).unwrap_err();
    assert_eq!(e.details().code, "UserErrorVmNotFound");
    let e = p.export_disk("sim:/test/tiny", 3, at, &to).unwrap_err();
    assert_eq!(e.details().code, "DiskNotFound");
}

#[test]
fn consistency_follows_os_and_power_state() {
    let p = embedded();
    let c = |id: &str| snap(&p, id, day(3)).consistency();
    assert_eq!(c("sim:/hr/web01"), Consistency::ApplicationConsistent); // running Windows
    assert_eq!(c("sim:/sales/web01"), Consistency::FileSystemConsistent); // running Linux
    assert_eq!(c("sim:/hr/payroll01"), Consistency::CrashConsistent); // deallocated
    assert_eq!(c("sim:/shared-infra/jump01"), Consistency::CrashConsistent); // stopped
}

#[test]
fn stopped_vms_do_not_change() {
    let p = embedded();
    let s = snap(&p, "sim:/shared-infra/jump01", day(200));
    let since = snap(&p, "sim:/shared-infra/jump01", day(1))
        .cbt_token()
        .unwrap();
    assert_eq!(
        s.open_disk(0).unwrap().changed_extents(&since).unwrap(),
        Some(vec![])
    );
}

#[test]
fn the_churn_setting_overrides_every_vm() {
    let frozen = SimProvider::new(
        Subscription::embedded_default(),
        &SimSettings {
            daily_change_percent: Some(0.0),
            ..instant()
        },
    );
    // retail-us/db01 has its own daily_change_percent in the file; the setting still wins.
    let since = snap(&frozen, "sim:/retail-us/db01", day(1))
        .cbt_token()
        .unwrap();
    let later = snap(&frozen, "sim:/retail-us/db01", day(300));
    for disk in 0..2 {
        let changed = later
            .open_disk(disk)
            .unwrap()
            .changed_extents(&since)
            .unwrap();
        assert_eq!(changed, Some(vec![]), "disk {disk}");
    }
    let p = embedded();
    let since = snap(&p, "sim:/retail-us/db01", day(1)).cbt_token().unwrap();
    let changed = snap(&p, "sim:/retail-us/db01", day(300))
        .open_disk(1)
        .unwrap()
        .changed_extents(&since)
        .unwrap();
    assert!(!changed.unwrap().is_empty());
}

#[test]
fn registration_checks_the_vm() {
    let p = embedded();
    let cancel = CancelToken::new();
    let running = p.register(&vm_of(&p, "sim:/sales/web01"), &cancel).unwrap();
    assert!(running.warnings.is_empty());
    assert!(
        running
            .findings
            .iter()
            .any(|f| f.contains("VM agent: Ready")),
        "{running:?}"
    );
    let stopped = p
        .register(&vm_of(&p, "sim:/hr/payroll01"), &cancel)
        .unwrap();
    assert!(
        stopped
            .warnings
            .iter()
            .any(|w| w.contains("crash-consistent")),
        "{stopped:?}"
    );
    let agent_down = p
        .register(&vm_of(&p, "sim:/analytics/etl01"), &cancel)
        .unwrap();
    assert!(
        agent_down
            .warnings
            .iter()
            .any(|w| w.contains("not reporting")),
        "{agent_down:?}"
    );
    // A VM the subscription does not have.
    let mut ghost = vm_of(&p, "sim:/sales/web01");
    ghost.source_id = "sim:/sales/ghost".into();
    assert_eq!(
        p.register(&ghost, &cancel).unwrap_err().details().code,
        "UserErrorVmNotFound"
    );
}

#[test]
fn registration_failure_from_the_file() {
    let mut sub = Subscription::embedded_default();
    sub.vms[0].registration_failure = Some(ErrorDetails::new(
        "UserErrorBackupOperationInProgress",
        "t",
        "m",
    ));
    let p = SimProvider::new(sub, &instant());
    let vm = p.subscription().vms[0].vm.clone();
    let e = p.register(&vm, &CancelToken::new()).unwrap_err();
    assert_eq!(e.details().code, "UserErrorBackupOperationInProgress");
}

#[test]
fn the_failing_vm_fails_every_backup() {
    let p = embedded();
    let vm = vm_of(&p, "sim:/analytics/etl01");
    for d in [0, 1, 50, 400] {
        let e = p
            .snapshot(&vm, day(d), None, &CancelToken::new())
            .err()
            .expect("backups of etl01 fail");
        let details = e.details();
        assert_eq!(details.code, "UserErrorGuestAgentStatusUnavailable");
        assert!(!details.recommendations.is_empty());
    }
    // Its disks still exist (export works).
    let dir = tempfile::tempdir().unwrap();
    assert!(p
        .export_disk(&vm.source_id, 0, day(1), &dir.path().join("etl.raw"))
        .is_ok());
}

#[test]
fn transient_failures_are_deterministic() {
    let settings = SimSettings {
        failure_probability: Some(0.3),
        ..instant()
    };
    let outcomes = |seed: u64| {
        let p = SimProvider::new(
            Subscription::load(&SimSettings {
                seed: Some(seed),
                ..instant()
            })
            .unwrap(),
            &settings,
        );
        let vm = vm_of(&p, "sim:/sales/app01");
        (0..200)
            .map(|h| {
                match p.snapshot(
                    &vm,
                    day(0) + chrono::Duration::hours(h),
                    None,
                    &CancelToken::new(),
                ) {
                    Ok(_) => None,
                    Err(e) => Some(e.details().code),
                }
            })
            .collect::<Vec<_>>()
    };
    let a = outcomes(1);
    assert_eq!(a, outcomes(1), "same seed, same failures");
    assert_ne!(a, outcomes(2), "another seed, other failures");
    let failures = a.iter().flatten().count();
    assert!(
        (20..=100).contains(&failures),
        "{failures} of 200 failed at p = 0.3"
    );
    assert!(
        a.iter().flatten().collect::<BTreeSet<_>>().len() > 1,
        "a few kinds of transient errors"
    );
    // Without a probability nothing fails.
    let p = embedded();
    let vm = vm_of(&p, "sim:/sales/app01");
    assert!((0..50).all(|h| p
        .snapshot(
            &vm,
            day(0) + chrono::Duration::hours(h),
            None,
            &CancelToken::new()
        )
        .is_ok()));
}

#[test]
fn discovery_lists_every_vm_of_every_region() {
    let p = embedded();
    let vms = p.discover(&CancelToken::new()).unwrap().vms;
    assert_eq!(vms.len(), p.subscription().vms.len());
    let regions: BTreeSet<_> = vms.iter().map(|v| v.region.clone()).collect();
    assert!(regions.len() >= 3);
    assert_eq!(p.kind(), "simulated");
    assert!(
        p.describe().contains("VMs in 3 regions"),
        "{}",
        p.describe()
    );
    let again = p.discover(&CancelToken::new()).unwrap().vms;
    assert_eq!(vms, again);
}

#[test]
fn generated_subscription_of_ten_thousand_vms() {
    let settings = SimSettings {
        generate_vms: Some(10_000),
        ..instant()
    };
    let p = SimProvider::from_settings(&settings).unwrap();
    let vms = p.discover(&CancelToken::new()).unwrap().vms;
    assert_eq!(vms.len(), 10_000);
    let s = snap(&p, "sim:/scale-040/vm-10000", day(3));
    let r = s.open_disk(0).unwrap();
    assert_eq!(
        r.allocated_extents()
            .unwrap()
            .iter()
            .map(|e| e.len)
            .sum::<u64>(),
        2 * MIB
    );
}

#[test]
fn cancel_interrupts_latencies() {
    let settings = SimSettings {
        discovery_latency_ms: Some(600_000),
        snapshot_latency_ms: Some(600_000),
        ..SimSettings::default()
    };
    let p = SimProvider::new(Subscription::embedded_default(), &settings);
    let cancel = CancelToken::new();
    let c = cancel.clone();
    let canceller = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(100));
        c.cancel();
    });
    assert!(matches!(p.discover(&cancel), Err(ProviderError::Cancelled)));
    canceller.join().unwrap();
    let vm = vm_of(&p, "sim:/sales/web01");
    assert!(matches!(
        p.snapshot(&vm, day(1), None, &cancel),
        Err(ProviderError::Cancelled)
    ));
    // Fast-forward skips latencies altogether.
    p.set_fast_forward(true);
    assert!(p.snapshot(&vm, day(1), None, &CancelToken::new()).is_ok());
}

#[test]
fn settings_are_strict_and_validated() {
    let s: SimSettings = toml::from_str(
        "subscription = \"/tmp/s.toml\"\nseed = 3\ndiscovery_latency_ms = 0\nregistration_latency_ms = 0\n\
         snapshot_latency_ms = 0\nfailure_probability = 0.1\nread_throughput_mib_s = 50\n\
         generate_vms = 100\ndaily_change_percent = 2.5\n",
    )
    .unwrap();
    assert_eq!(s.generate_vms, Some(100));
    assert!(
        toml::from_str::<SimSettings>("sead = 3").is_err(),
        "unknown keys are refused"
    );
    let bad = SimSettings {
        failure_probability: Some(1.5),
        ..SimSettings::default()
    };
    let e = Subscription::load(&bad).unwrap_err();
    assert!(
        matches!(
            e,
            SimError::Setting {
                key: "failure_probability",
                ..
            }
        ),
        "{e}"
    );
    // A latency that would look like a hang is refused, naming its key.
    let slow = SimSettings {
        snapshot_latency_ms: Some(MAX_LATENCY_MS + 1),
        ..SimSettings::default()
    };
    let e = slow.validate().unwrap_err();
    assert!(
        matches!(
            e,
            SimError::Setting {
                key: "snapshot_latency_ms",
                ..
            }
        ),
        "{e}"
    );
    assert!(SimSettings {
        discovery_latency_ms: Some(MAX_LATENCY_MS),
        ..SimSettings::default()
    }
    .validate()
    .is_ok());
}

#[test]
fn a_users_subscription_file_replaces_the_embedded_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mine.toml");
    let good = subscription::EMBEDDED.replace("name = \"Contoso (simulated)\"", "name = \"Mine\"");
    std::fs::write(&path, good).unwrap();
    let settings = SimSettings {
        subscription: Some(path.clone()),
        ..instant()
    };
    assert_eq!(Subscription::load(&settings).unwrap().name, "Mine");
    std::fs::write(
        &path,
        "name = \"x\"\nseed = 1\norigin = \"2025-01-01\"\n[[vm]]\nname = 3\n",
    )
    .unwrap();
    let e = Subscription::load(&settings).unwrap_err().to_string();
    assert!(e.starts_with(&format!("{}:5:", path.display())), "{e}");
    assert!(e.contains("`name`"), "{e}");
    let missing = SimSettings {
        subscription: Some(dir.path().join("absent.toml")),
        ..instant()
    };
    let e = Subscription::load(&missing).unwrap_err();
    assert!(
        matches!(e, SimError::Io { .. }) && e.to_string().contains("absent.toml"),
        "{e}"
    );
}

#[test]
fn throttled_reads_return_the_same_bytes() {
    let throttled = SimProvider::new(
        Subscription::embedded_default(),
        &SimSettings {
            read_throughput_mib_s: Some(400),
            ..instant()
        },
    );
    let plain = embedded();
    let read = |p: &SimProvider| {
        let r = snap(p, "sim:/sales/web01", day(2)).open_disk(0).unwrap();
        let mut buf = vec![0u8; 4 * MIB as usize];
        r.read_at(0, &mut buf).unwrap();
        buf
    };
    assert!(read(&throttled) == read(&plain));
}

/// Generation speed, and the cost of two years of daily incremental backups.
/// `cargo test --release --lib sim::tests::generation_speed -- --ignored --nocapture`
#[test]
#[ignore = "benchmark: run in release mode and read the numbers"]
fn generation_speed() {
    use super::diskgen::Fill;
    let mut buf = vec![0u8; 4 * MIB as usize];
    for kind in [Fill::Text, Fill::Random] {
        let t = Instant::now();
        let rounds = 512u64;
        for i in 0..rounds {
            diskgen::fill(kind, 5, i * 4 * MIB, &mut buf);
        }
        let mbs = (rounds * 4 * MIB) as f64 / t.elapsed().as_secs_f64() / 1e6;
        let ratio = buf.len() as f64 / zstd::bulk::compress(&buf, 3).unwrap().len() as f64;
        println!("fill {kind:?}: {mbs:.0} MB/s, zstd-3 ratio {ratio:.2}");
    }

    // read_at over every allocated extent of the default subscription (one thread).
    let p = healthy();
    let t = Instant::now();
    let mut bytes = 0u64;
    let mut compressed = 0u64;
    let mut sample = Vec::new();
    for vm in p.discover(&CancelToken::new()).unwrap().vms {
        let s = snap(&p, &vm.source_id, day(100));
        for info in s.disks() {
            let r = s.open_disk(info.index).unwrap();
            for e in r.allocated_extents().unwrap() {
                let mut off = e.offset;
                while off < e.end() {
                    let n = (e.end() - off).min(4 * MIB) as usize;
                    r.read_at(off, &mut buf[..n]).unwrap();
                    if sample.len() < 64 {
                        sample.push(buf[..n].to_vec());
                    }
                    bytes += n as u64;
                    off += n as u64;
                }
            }
        }
    }
    let secs = t.elapsed().as_secs_f64();
    for s in &sample {
        compressed += zstd::bulk::compress(s, 3).unwrap().len() as u64;
    }
    let sampled: u64 = sample.iter().map(|s| s.len() as u64).sum();
    println!(
        "read_at, default subscription day 100: {} MiB in {secs:.2} s = {:.0} MB/s; zstd-3 ratio of a sample {:.2}",
        bytes / MIB,
        bytes as f64 / secs / 1e6,
        sampled as f64 / compressed as f64
    );

    // Two years of daily backups of every running VM: snapshot, changed extents, read the
    // 4 MiB chunks they touch.
    let t = Instant::now();
    let mut chunks = 0u64;
    let mut disk_days = 0u64;
    let vms = p.discover(&CancelToken::new()).unwrap().vms;
    let mut tokens: HashMap<String, String> = HashMap::new();
    for d in 1..=800 {
        for vm in &vms {
            let Ok(s) = p.snapshot(vm, day(d), None, &CancelToken::new()) else {
                continue;
            };
            for info in s.disks() {
                let r = s.open_disk(info.index).unwrap();
                disk_days += 1;
                let Some(since) = tokens.get(&vm.source_id) else {
                    continue;
                };
                let changed = r.changed_extents(since).unwrap().unwrap();
                let mut touched: Vec<u64> = changed
                    .iter()
                    .flat_map(|e| e.offset / (4 * MIB)..=(e.end() - 1) / (4 * MIB))
                    .collect();
                touched.dedup();
                for c in touched {
                    let n = (r.capacity() - c * 4 * MIB).min(4 * MIB) as usize;
                    r.read_at(c * 4 * MIB, &mut buf[..n]).unwrap();
                    chunks += 1;
                }
            }
            tokens.insert(vm.source_id.clone(), s.cbt_token().unwrap());
        }
    }
    println!(
        "800 days x {} VMs: {disk_days} disk-days, {chunks} changed 4 MiB chunks read ({:.2} per disk-day), {:.2} s",
        vms.len(),
        chunks as f64 / disk_days as f64,
        t.elapsed().as_secs_f64()
    );
    let t = Instant::now();
    let far = snap(&p, "sim:/sales/sql01", day(3000));
    let r = far.open_disk(1).unwrap();
    println!(
        "state of day 3000 from scratch (sql01 data disk): {} extents in {:.1} ms",
        r.allocated_extents().unwrap().len(),
        t.elapsed().as_secs_f64() * 1e3
    );
    let t = Instant::now();
    let settings = SimSettings {
        generate_vms: Some(10_000),
        ..instant()
    };
    let big = SimProvider::from_settings(&settings).unwrap();
    let n = big.discover(&CancelToken::new()).unwrap().vms.len();
    println!(
        "generate_vms = {n}: subscription + discovery in {:.1} ms",
        t.elapsed().as_secs_f64() * 1e3
    );
}
