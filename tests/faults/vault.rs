//! A lost or swapped catalog, swapped indexes, planted symlinks and folders of other users:
//! what is stored is never lost, and nothing outside the vault is written.

use crate::common::*;
use serde_json::Value;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// One vault (westeurope) with no grace period for garbage collection.
fn env_without_grace() -> Env {
    Env::with_config(|_| {
        format!(
            "[[vault]]\nname = \"test-we\"\nregion = \"westeurope\"\ngc_grace_minutes = 0\nsource = {{ {FAST_SIM} }}\n\n\
             [[vault]]\nname = \"test-eus\"\nregion = \"eastus\"\nsource = {{ {FAST_SIM} }}\n"
        )
    })
}

/// The id of the one point of `vm` that is not `known`.
fn other_point(env: &Env, vm: &str, known: &str) -> String {
    let points = env.json(&["points", vm]);
    let ids: Vec<&str> = points
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap())
        .filter(|id| *id != known)
        .collect();
    assert_eq!(ids.len(), 1, "{points:#}");
    ids[0].to_string()
}

fn catalog_files(vault: &Path) -> Vec<PathBuf> {
    ["catalog.db", "catalog.db-wal", "catalog.db-shm"]
        .iter()
        .map(|n| vault.join(n))
        .filter(|p| p.exists())
        .collect()
}

fn save_catalog(vault: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for f in catalog_files(vault) {
        std::fs::copy(&f, to.join(f.file_name().unwrap())).unwrap();
    }
}

fn put_back_catalog(from: &Path, vault: &Path) {
    for f in catalog_files(vault) {
        std::fs::remove_file(f).unwrap();
    }
    for e in std::fs::read_dir(from).unwrap().flatten() {
        std::fs::copy(e.path(), vault.join(e.file_name())).unwrap();
    }
}

#[test]
fn a_lost_catalog_is_never_replaced_and_nothing_is_deleted() {
    let env = env_without_grace();
    env.protect(&["app01"]);
    let p1 = env.backup("app01");
    let vault = env.vault_dir("test-we");
    let stored = files_under(&vault.join("chunks"));
    assert!(!stored.is_empty());
    let copy = env.path("catalog-copy");
    save_catalog(&vault, &copy);

    for f in catalog_files(&vault) {
        std::fs::remove_file(f).unwrap();
    }
    // Every command refuses, listings included, and none creates a catalog.
    for args in [
        &["items"][..],
        &["discover"],
        &["gc"],
        &["jobs"],
        &["backup", "app01"],
    ] {
        let (_, err) = env.fails_with(1, args);
        assert!(err.contains("catalog.db is missing"), "{args:?}: {err}");
        assert!(
            err.contains("Restore catalog.db (with its catalog.db-wal"),
            "{err}"
        );
        assert!(!err.contains("vmvault discover"), "{err}");
        assert!(
            !vault.join("catalog.db").exists(),
            "{args:?} created a catalog"
        );
    }
    assert_eq!(files_under(&vault.join("chunks")), stored);

    // A zero-length catalog (SQLite would take it for a new, empty one) is refused too.
    std::fs::write(vault.join("catalog.db"), b"").unwrap();
    let (_, err) = env.fails_with(1, &["gc"]);
    assert!(err.contains("is empty (0 bytes)"), "{err}");
    assert!(!err.contains("vmvault discover"), "{err}");

    // Another vault's catalog is refused.
    env.ok(&["--vault", "test-eus", "items"]);
    std::fs::remove_file(vault.join("catalog.db")).unwrap();
    std::fs::copy(
        env.vault_dir("test-eus").join("catalog.db"),
        vault.join("catalog.db"),
    )
    .unwrap();
    let (_, err) = env.fails_with(1, &["items"]);
    assert!(err.contains("belongs to vault"), "{err}");

    // The copy put back: everything is there.
    put_back_catalog(&copy, &vault);
    env.ok(&["verify"]);
    env.assert_restore_matches_source("app01", &p1, "after");
}

#[test]
fn garbage_collection_refuses_while_the_catalog_does_not_know_the_store() {
    let env = env_without_grace();
    env.protect(&["app01"]);
    let p1 = env.backup("app01");
    let vault = env.vault_dir("test-we");
    let old = env.path("old-catalog");
    save_catalog(&vault, &old);
    env.ok(&["sim", "advance", "1d"]);
    let newer = env.path("newer-catalog");
    save_catalog(&vault, &newer);
    let p2 = other_point(&env, "app01", &p1);
    let before = files_under(&vault);

    // An old copy of the catalog (it knows p1 only): GC deletes nothing.
    put_back_catalog(&old, &vault);
    let out = env.run(&["gc", "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let job: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(job["error"]["code"], "GarbageCollectionRefused", "{job:#}");
    assert!(
        job["error"]["message"].as_str().unwrap().contains(&p2),
        "{job:#}"
    );
    let after: Vec<PathBuf> = files_under(&vault)
        .into_iter()
        .filter(|p| {
            !p.starts_with(vault.join("catalog.db")) && !p.to_string_lossy().contains("catalog.db")
        })
        .collect();
    let before: Vec<PathBuf> = before
        .into_iter()
        .filter(|p| !p.to_string_lossy().contains("catalog.db"))
        .collect();
    assert_eq!(after, before, "garbage collection deleted files");

    // The newer catalog back: GC runs, and the newest point restores.
    put_back_catalog(&newer, &vault);
    env.ok(&["gc"]);
    env.assert_restore_matches_source("app01", &p2, "newer");
}

/// A catalog restored from a copy taken while a backup was writing its point: the copy
/// announced the point's folder but never saw it committed. The folder holds a whole point
/// (a newer catalog committed it), so garbage collection keeps it and its chunks.
#[test]
fn garbage_collection_keeps_a_point_a_newer_catalog_committed() {
    let env = env_without_grace();
    env.protect(&["app01"]);
    let p1 = env.backup("app01");
    env.ok(&["sim", "advance", "1d"]);
    let p2 = other_point(&env, "app01", &p1);
    let vault = env.vault_dir("test-we");
    let newer = env.path("newer-catalog");
    save_catalog(&vault, &newer);
    let points = env.json(&["points", "app01"]);
    let disks: Vec<String> = points
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"] == p2.as_str())
        .unwrap()["disks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["index"].to_string())
        .collect();
    assert!(!disks.is_empty(), "{points:#}");

    // The catalog as a copy taken between the announcement and the commit of p2 sees it.
    {
        let db = rusqlite::Connection::open(vault.join("catalog.db")).unwrap();
        db.execute("DELETE FROM points WHERE id = ?1", [&p2])
            .unwrap();
        db.execute(
            "INSERT INTO point_writes (point_id, job_id, started, purpose, disks) VALUES (?1, 'a-backup-job', '2020-01-01T00:00:00.000000Z', 'write', ?2)",
            [&p2, &disks.join(",")],
        )
        .unwrap();
    }
    let out = env.run(&["gc", "--json"]);
    let job: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(job["status"], "CompletedWithWarnings", "{job:#}");
    assert_eq!(
        job["details"]["uncommitted_points_kept"][0],
        p2.as_str(),
        "{job:#}"
    );
    assert!(
        job["details"]["warnings"]
            .to_string()
            .contains("restored from a copy"),
        "{job:#}"
    );
    assert!(vault.join("points").join(&p2).is_dir());

    // The newer catalog back: the point is whole.
    put_back_catalog(&newer, &vault);
    env.ok(&["verify"]);
    env.assert_restore_matches_source("app01", &p2, "newer");
}

/// The same, with the point's folder younger than the grace period (which protects chunk
/// files, not catalog rows): the chunks it shares with a point being pruned are kept too.
#[test]
fn garbage_collection_keeps_the_chunks_of_a_young_point_a_newer_catalog_committed() {
    let env = Env::new();
    env.protect(&["app01"]);
    let p1 = env.backup("app01");
    env.ok(&["sim", "advance", "1d"]);
    let p2 = other_point(&env, "app01", &p1);
    let vault = env.vault_dir("test-we");
    let newer = env.path("newer-catalog");
    save_catalog(&vault, &newer);
    {
        // A copy taken while p2 was being written and p1 pruned.
        let db = rusqlite::Connection::open(vault.join("catalog.db")).unwrap();
        for p in [&p1, &p2] {
            db.execute("DELETE FROM points WHERE id = ?1", [p]).unwrap();
        }
        db.execute(
            "INSERT INTO point_writes (point_id, job_id, started, purpose, disks) VALUES (?1, 'a-backup-job', '2020-01-01T00:00:00.000000Z', 'write', '0')",
            [&p2],
        )
        .unwrap();
        db.execute(
            "INSERT INTO point_writes (point_id, job_id, started, purpose) VALUES (?1, 'a-prune-job', '2020-01-01T00:00:00.000000Z', 'remove')",
            [&p1],
        )
        .unwrap();
    }
    let job = env.json(&["gc"]);
    assert_eq!(job["status"], "Completed", "{job:#}");
    assert!(vault.join("points").join(&p2).is_dir());
    put_back_catalog(&newer, &vault);
    env.assert_restore_matches_source("app01", &p2, "newer");
}

#[test]
fn garbage_collection_reports_the_orphans_it_frees() {
    let env = env_without_grace();
    env.protect(&["app01"]);
    env.backup("app01");
    let chunks = env.vault_dir("test-we").join("chunks");
    // Orphans: chunk files no point references (as a killed backup leaves them).
    let mut orphan_bytes = 0;
    for (i, f) in files_under(&chunks).iter().take(3).enumerate() {
        let name = format!("{:02x}{}", i + 0xf0, "e".repeat(62));
        let dir = chunks.join(&name[..2]);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::copy(f, dir.join(&name)).unwrap();
        orphan_bytes += std::fs::metadata(f).unwrap().len();
    }
    let job = env.json(&["gc"]);
    assert_eq!(job["details"]["chunks_freed"], 3, "{job:#}");
    assert_eq!(job["details"]["bytes_freed"], orphan_bytes, "{job:#}");
    env.ok(&["verify"]);
}

#[test]
fn an_index_copied_from_another_point_is_refused() {
    let env = Env::new();
    env.protect(&["app01"]);
    let p1 = env.backup("app01");
    env.ok(&["sim", "advance", "1d"]);
    let p2 = other_point(&env, "app01", &p1);
    let dir = env.vault_dir("test-we").join("points");
    std::fs::copy(
        dir.join(&p1).join("disk0.idx"),
        dir.join(&p2).join("disk0.idx"),
    )
    .unwrap();

    let out = env.run(&["verify", "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let job: Value = serde_json::from_slice(&out.stdout).unwrap();
    let affected = job["details"]["affected_points"].as_array().unwrap();
    assert_eq!(affected.len(), 1, "{job:#}");
    assert_eq!(affected[0]["point"], p2.as_str());
    assert!(
        affected[0]["problems"][0]
            .as_str()
            .unwrap()
            .contains("copied from another point"),
        "{job:#}"
    );
    // The summary names the index problem, and gives the advice for an index (a backup
    // repairs chunks, not indexes).
    let message = job["error"]["message"].as_str().unwrap();
    assert!(
        message.starts_with("1 damaged or missing disk index(es); 1 recovery point(s)"),
        "{job:#}"
    );
    assert!(!message.contains("chunk"), "{job:#}");
    let advice = job["error"]["recommendations"].to_string();
    assert!(
        advice.contains("points/") && !advice.contains("Back up the affected"),
        "{advice}"
    );
    let to = env.path("swapped");
    let (_, err) = env.fails_with(
        1,
        &[
            "restore",
            "app01",
            "--point",
            &p2,
            "--to",
            to.to_str().unwrap(),
        ],
    );
    assert!(err.contains("another point"), "{err}");
    assert!(!to.join("app01-disk0.raw").exists());
    env.assert_restore_matches_source("app01", &p1, "p1");
}

#[test]
fn planted_symlinks_in_the_data_folder_are_never_written_through() {
    let env = Env::new();
    env.ok(&["items"]);
    let victim = env.path("victim");
    std::fs::write(&victim, b"precious\n").unwrap();
    let log = env.data.join("vmvault.log");
    std::fs::remove_file(&log).unwrap();
    std::os::unix::fs::symlink(&victim, &log).unwrap();
    let lock = env.vault_dir("test-we").join("vault.lock");
    let _ = std::fs::remove_file(&lock);
    std::os::unix::fs::symlink(&victim, &lock).unwrap();

    let (_, err) = env.fails_with(2, &["discover"]);
    assert!(err.contains("symbolic link"), "{err}");
    assert!(err.contains("vault.lock"), "{err}");
    assert!(err.contains("not logging"), "{err}");
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious\n");
    // Listings do not follow it either, and still work.
    env.ok(&["items"]);
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious\n");

    // A chunks folder that is a link elsewhere is refused.
    std::fs::remove_file(&lock).unwrap();
    let chunks = env.vault_dir("test-we").join("chunks");
    std::fs::remove_dir_all(&chunks).unwrap();
    let elsewhere = env.path("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, &chunks).unwrap();
    let (_, err) = env.fails_with(1, &["discover"]);
    assert!(err.contains("symbolic link"), "{err}");
    assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 0);
}

#[test]
fn folders_others_can_write_or_own_are_refused_with_the_fix() {
    let env = Env::new();
    env.ok(&["items"]);
    std::fs::set_permissions(&env.data, std::fs::Permissions::from_mode(0o777)).unwrap();
    let (_, err) = env.fails_with(1, &["items"]);
    assert!(err.contains("can be written by other users"), "{err}");
    assert!(err.contains("chmod go-w"), "{err}");
    std::fs::set_permissions(&env.data, std::fs::Permissions::from_mode(0o700)).unwrap();
    let vault = env.vault_dir("test-we");
    std::fs::set_permissions(&vault, std::fs::Permissions::from_mode(0o770)).unwrap();
    let (_, err) = env.fails_with(1, &["items"]);
    assert!(err.contains("chmod go-w"), "{err}");
    std::fs::set_permissions(&vault, std::fs::Permissions::from_mode(0o700)).unwrap();
    env.ok(&["items"]);

    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        if std::env::var("VMVAULT_REQUIRE_TOOLS").as_deref() == Ok("1") {
            panic!("required by VMVAULT_REQUIRE_TOOLS=1: root, to give a folder to another user");
        }
        eprintln!("skipped: giving a folder to another user needs root");
        return;
    }
    // Root on a folder another user prepared: refused, nothing written there.
    let theirs = env.path("theirs");
    std::fs::create_dir(&theirs).unwrap();
    std::fs::set_permissions(&theirs, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::os::unix::fs::chown(&theirs, Some(65534), Some(65534)).unwrap();
    let out = std::process::Command::new(assert_cmd::cargo::cargo_bin("vmvault"))
        .arg("--config")
        .arg(&env.config)
        .arg("--data-dir")
        .arg(&theirs)
        .arg("items")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("belongs to"), "{err}");
    assert_eq!(std::fs::read_dir(&theirs).unwrap().count(), 0);
}

#[test]
fn a_damaged_catalog_says_so_and_how_to_recover() {
    let env = Env::new();
    env.protect(&["app01"]);
    env.backup("app01");
    let vault = env.vault_dir("test-we");
    let copy = env.path("catalog-copy");
    save_catalog(&vault, &copy);
    let catalog = vault.join("catalog.db");
    let good = std::fs::read(&catalog).unwrap();
    // Garbage over the file's header, then over the schema in its first page.
    for range in [0..16, 100..4000] {
        let mut bytes = good.clone();
        for (i, b) in bytes[range.clone()].iter_mut().enumerate() {
            *b = (i * 7 + 13) as u8;
        }
        std::fs::write(&catalog, &bytes).unwrap();
        for args in [&["items"][..], &["backup", "app01"]] {
            let (_, err) = env.fails_with(1, args);
            assert!(
                err.contains("The catalog is damaged"),
                "{range:?} {args:?}: {err}"
            );
            assert!(
                err.contains("Restore catalog.db (with its catalog.db-wal"),
                "{err}"
            );
        }
    }
    put_back_catalog(&copy, &vault);
    env.ok(&["verify"]);
}

/// A data folder whose path is too long for SQLite is refused before anything is created
/// (and the next run still finds nothing to mistake for a lost catalog).
#[test]
fn a_data_folder_path_too_long_for_sqlite_is_refused_and_leaves_no_catalog() {
    let env = Env::new();
    let mut long = env.path("d");
    while long.as_os_str().len() < 600 {
        long.push("x".repeat(100));
    }
    std::fs::create_dir_all(&long).unwrap();
    let run = || {
        let out = std::process::Command::new(assert_cmd::cargo::cargo_bin("vmvault"))
            .env_remove("VMVAULT_CONFIG")
            .env_remove("VMVAULT_DATA_DIR")
            .env_remove("VMVAULT_VAULT")
            .arg("--config")
            .arg(&env.config)
            .arg("--data-dir")
            .arg(&long)
            .arg("items")
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    for _ in 0..2 {
        let (code, err) = run();
        assert_eq!(code, Some(2), "{err}");
        assert!(
            err.contains("at most 512 bytes") && err.contains("--data-dir"),
            "{err}"
        );
        assert!(!err.contains("lost"), "{err}");
    }
    let catalog = long.join("vaults/test-we/catalog.db");
    assert!(catalog.symlink_metadata().is_err(), "{}", catalog.display());
}

/// A backup whose catalog commit fails (a full disk under the catalog; here a trigger)
/// gives back its chunks and takes back its manifest first: no manifest is left naming
/// chunks that are gone, so garbage collection keeps no "finished" point forever and a
/// rebuild brings back no damaged one.
#[test]
fn a_backup_whose_commit_fails_leaves_no_manifest_naming_its_discarded_chunks() {
    let env = env_without_grace();
    env.protect(&["app01"]);
    let p1 = env.backup("app01");
    // The disk changes while vmvault is not running: the next backup stores new chunks.
    env.ok(&["sim", "advance", "5d", "--offline"]);
    let vault = env.vault_dir("test-we");
    let db = rusqlite::Connection::open(vault.join("catalog.db")).unwrap();
    db.execute_batch(
        "CREATE TRIGGER inject BEFORE INSERT ON points BEGIN SELECT RAISE(ABORT, 'injected failure'); END;",
    )
    .unwrap();
    let out = env.run(&["backup", "app01", "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let job: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(job["status"], "Failed", "{job:#}");
    assert!(
        job["details"]["new_chunks"].as_u64().unwrap() > 0,
        "{job:#}"
    );
    let failed = job["details"]["recovery_point"].as_str().unwrap();
    assert!(
        !vault.join("points").join(failed).exists(),
        "the failed backup left its point folder"
    );
    db.execute_batch("DROP TRIGGER inject").unwrap();
    drop(db);

    let gc = env.json(&["gc"]);
    assert_eq!(gc["status"], "Completed", "{gc:#}");
    env.ok(&["verify"]);
    // A rebuild finds the committed point only, whole.
    let lost = env.path("lost");
    save_catalog(&vault, &lost);
    for f in catalog_files(&vault) {
        std::fs::remove_file(f).unwrap();
    }
    let report = env.json(&["vault", "rebuild"]);
    assert_eq!(report["points"], 1, "{report:#}");
    assert_eq!(report["missing_chunks"], 0, "{report:#}");
    env.ok(&["verify"]);
    env.assert_restore_matches_source("app01", &p1, "p1");
}

/// A prune removes a point's objects and leaves its announcement until garbage collection
/// has made the removal durable (one sync for all the prunes since the last one); GC then
/// clears it, and counts it as no unfinished point.
#[test]
fn a_pruned_points_announcement_goes_once_gc_made_its_removal_durable() {
    let env = env_without_grace();
    env.protect(&["app01"]);
    let tomorrow = (chrono::Utc::now() + chrono::Duration::days(1))
        .format("%Y-%m-%d")
        .to_string();
    let job = env.json(&["backup", "app01", "--retain-until", &tomorrow]);
    assert!(
        job["status"].as_str().unwrap().starts_with("Completed"),
        "{job:#}"
    );
    // The newest point is never pruned: another one after it.
    let gone = env.json(&["points", "app01"])[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let kept = env.backup("app01");
    let vault = env.vault_dir("test-we");
    env.ok(&["sim", "advance", "3d", "--offline"]);
    let announced = |purpose: &str| -> i64 {
        let db = rusqlite::Connection::open(vault.join("catalog.db")).unwrap();
        db.query_row(
            "SELECT COUNT(*) FROM point_writes WHERE purpose = ?1",
            [purpose],
            |r| r.get(0),
        )
        .unwrap()
    };
    let prune = env.json(&["prune"]);
    assert_eq!(prune["status"], "Completed", "{prune:#}");
    assert!(
        !vault.join("points").join(&gone).exists(),
        "{prune:#} {:#}",
        env.json(&["points", "app01"])
    );
    assert!(vault.join("points").join(&kept).join("manifest").exists());
    assert_eq!(announced("remove"), 1);

    let gc = env.json(&["gc"]);
    assert_eq!(gc["status"], "Completed", "{gc:#}");
    assert_eq!(gc["details"]["unfinished_points_removed"], 0, "{gc:#}");
    assert_eq!(announced("remove"), 0);
    env.ok(&["verify"]);
    env.assert_restore_matches_source("app01", &kept, "kept");
}
