//! Vault format 2: what is stored is encrypted by default, a vault opens only with its own
//! key, and a lost catalog comes back from the vault's own description.

mod common;

use common::*;
use serde_json::Value;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// The vault's id, from its vault.toml.
fn vault_id(vault: &Path) -> String {
    let text = std::fs::read_to_string(vault.join("vault.toml")).unwrap();
    let t: toml::Table = toml::from_str(&text).unwrap();
    t["id"].as_str().unwrap().to_string()
}

fn key_file(env: &Env, vault: &Path) -> PathBuf {
    env.dir
        .path()
        .join("keys")
        .join(format!("{}.key", vault_id(vault)))
}

fn remove_catalog(vault: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for n in ["catalog.db", "catalog.db-wal", "catalog.db-shm"] {
        let p = vault.join(n);
        if p.exists() {
            std::fs::rename(&p, to.join(n)).unwrap();
        }
    }
}

#[test]
fn a_new_vault_encrypts_what_it_stores_with_a_key_kept_outside_it() {
    let env = Env::new();
    env.protect(&["app01"]);
    let point = env.backup("app01");
    let vault = env.vault_dir("test-we");
    let vaults = env.json(&["vaults"]);
    assert_eq!(vaults[0]["format"], 2, "{vaults:#}");
    assert_eq!(vaults[0]["encryption"], "aes-256-gcm", "{vaults:#}");
    assert_eq!(vaults[1]["format"], Value::Null, "not made yet: {vaults:#}");
    let key = key_file(&env, &vault);
    let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert!(!key.starts_with(&vault));

    // No stretch of the disk is in any chunk file, nor does any chunk file decompress.
    let time = env.point_time("app01", &point);
    let export = env.path("disk0.raw");
    env.ok(&[
        "sim",
        "export-disk",
        "app01",
        "--at",
        &time,
        "--to",
        export.to_str().unwrap(),
    ]);
    // 64-byte samples from the data (not the holes) of the sparse image.
    let f = std::fs::File::open(&export).unwrap();
    let len = f.metadata().unwrap().len();
    let mut samples: Vec<Vec<u8>> = Vec::new();
    for (start, end) in data_extents(&f, len) {
        let mut at = start;
        while at + 64 <= end && samples.len() < 32 {
            let mut s = vec![0u8; 64];
            std::os::unix::fs::FileExt::read_exact_at(&f, &mut s, at).unwrap();
            if s.iter().any(|b| *b != 0) {
                samples.push(s);
            }
            at += 1 << 20;
        }
    }
    assert!(!samples.is_empty());
    let mut chunk_files = 0;
    for f in files_under(&vault.join("chunks")) {
        let bytes = std::fs::read(&f).unwrap();
        for s in &samples {
            assert!(
                !bytes.windows(s.len()).any(|w| w == &s[..]),
                "{} holds plaintext of the disk",
                f.display()
            );
        }
        assert!(zstd::decode_all(&bytes[..]).is_err());
        chunk_files += 1;
    }
    assert!(chunk_files > 0);
    env.assert_restore_matches_source("app01", &point, "enc");
}

#[test]
fn without_its_key_an_encrypted_vault_lists_but_reads_and_writes_nothing() {
    let env = Env::new();
    env.protect(&["app01"]);
    env.backup("app01");
    let vault = env.vault_dir("test-we");
    let key = key_file(&env, &vault);
    let away = env.path("key-away");
    std::fs::rename(&key, &away).unwrap();
    let (_, err) = env.fails_with(1, &["backup", "app01"]);
    assert!(err.contains("no key was found"), "{err}");
    assert!(err.contains(key.to_str().unwrap()), "{err}");
    // Only what can open this vault is offered: it has no passphrase slot.
    assert!(
        err.contains("paper key") && !err.contains("passphrase"),
        "{err}"
    );
    assert_eq!(env.json(&["points", "app01"]).as_array().unwrap().len(), 1);
    // A key file that is a link to a medium that is not there says so.
    std::os::unix::fs::symlink(env.path("usb/vault.key"), &key).unwrap();
    let (_, err) = env.fails_with(1, &["backup", "app01"]);
    assert!(
        err.contains("symbolic link") && err.contains("usb/vault.key"),
        "{err}"
    );
    std::fs::remove_file(&key).unwrap();

    // Another vault's key file at its place: refused as the wrong key.
    env.ok(&["--vault", "test-eus", "discover"]);
    let other = key_file(&env, &env.vault_dir("test-eus"));
    std::fs::copy(&other, &key).unwrap();
    let (_, err) = env.fails_with(1, &["backup", "app01"]);
    assert!(err.contains("key file"), "{err}");

    std::fs::remove_file(&key).unwrap();
    std::fs::rename(&away, &key).unwrap();
    env.backup("app01");
    assert_eq!(env.json(&["points", "app01"]).as_array().unwrap().len(), 2);
}

#[test]
fn encryption_none_is_an_explicit_opt_out_and_vault_toml_cannot_switch_it() {
    let env = Env::with_config(|_| {
        format!(
            "[[vault]]\nname = \"plain\"\nregion = \"westeurope\"\nencryption = \"none\"\nsource = {{ {FAST_SIM} }}\n"
        )
    });
    env.protect(&["app01"]);
    let point = env.backup("app01");
    let vaults = env.json(&["vaults"]);
    assert_eq!(vaults[0]["encryption"], "none", "{vaults:#}");
    assert!(
        !env.path("keys").exists(),
        "no key for an unencrypted vault"
    );
    env.assert_restore_matches_source("app01", &point, "plain");

    // vault.toml edited to claim encryption: the catalog says otherwise, nothing is read.
    let marker = env.vault_dir("plain").join("vault.toml");
    let text = std::fs::read_to_string(&marker).unwrap();
    std::fs::write(&marker, text.replace("\"none\"", "\"aes-256-gcm\"")).unwrap();
    let (_, err) = env.fails_with(1, &["items"]);
    assert!(err.contains("one of them was changed"), "{err}");
    std::fs::write(&marker, text).unwrap();
    env.ok(&["items"]);
}

#[test]
fn a_lost_catalog_is_rebuilt_from_the_vault_and_nothing_is_lost() {
    let env = Env::new();
    // etl01 fails every backup: its item must come back with its last failure.
    env.protect(&["app01", "sales/sql01", "analytics/etl01"]);
    let first = env.backup("app01");
    // Long enough for the first points to expire: the prune restates the STORED size of
    // the points after them (which their manifests do not keep up with), and the items'
    // objects are not rewritten for every backup (their last backup comes from the points).
    env.ok(&["sim", "advance", "33d"]);
    let vms = ["app01", "sales/sql01"];
    let items = env.json(&["items"]);
    let points: Vec<Value> = vms.iter().map(|vm| env.json(&["points", vm])).collect();
    assert!(
        !points[0].to_string().contains(&first),
        "the first point expired: {:#}",
        points[0]
    );
    let policies = env.json(&["policy", "list"]);
    let vault = env.vault_dir("test-we");

    remove_catalog(&vault, &env.path("lost"));
    let (_, err) = env.fails_with(1, &["items"]);
    assert!(err.contains("vmvault vault rebuild"), "{err}");
    let report = env.json(&["vault", "rebuild"]);
    assert!(report["points"].as_u64().unwrap() >= 3, "{report:#}");
    assert_eq!(report["problems"], Value::Array(vec![]), "{report:#}");

    assert_eq!(env.json(&["items"]), items);
    for (vm, before) in vms.iter().zip(&points) {
        assert_eq!(&env.json(&["points", vm]), before, "{vm}");
    }
    assert_eq!(env.json(&["policy", "list"]), policies);
    // Every chunk a point needs is known again: garbage collection frees nothing.
    let gc = env.json(&["gc"]);
    assert_eq!(gc["details"]["chunks_freed"], 0, "{gc:#}");
    env.ok(&["verify"]);
    let newest = points[1].as_array().unwrap().last().unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    env.assert_restore_matches_source("sales/sql01", &newest, "rebuilt");
    // A rebuild never replaces a catalog.
    let (_, err) = env.fails_with(2, &["vault", "rebuild"]);
    assert!(err.contains("never replaces"), "{err}");
    // And the vault goes on: a new backup after the rebuild.
    env.backup("app01");
}

/// The ids of `vm`'s points that read as damaged.
fn damaged_points(env: &Env, vm: &str) -> Vec<String> {
    env.json(&["points", vm])
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["damaged"] == true)
        .map(|p| p["id"].as_str().unwrap().to_string())
        .collect()
}

/// A chunk lost with the catalog: every point that needs it reads as damaged after the
/// rebuild (so the next backup stores it again instead of taking it for stored), not only
/// the first one the rebuild looked at.
#[test]
fn a_rebuild_marks_every_point_that_needs_a_missing_chunk() {
    let env = Env::new();
    env.protect(&["app01"]);
    env.backup("app01");
    env.ok(&["sim", "advance", "4d"]);
    let vault = env.vault_dir("test-we");
    remove_catalog(&vault, &env.path("lost"));
    // The oldest chunk: written by the first backup, needed by the points after it too.
    let oldest = files_under(&vault.join("chunks"))
        .into_iter()
        .min_by_key(|f| std::fs::metadata(f).unwrap().modified().unwrap())
        .unwrap();
    std::fs::remove_file(&oldest).unwrap();
    let report = env.json(&["vault", "rebuild"]);
    assert_eq!(report["missing_chunks"], 1, "{report:#}");
    let after_rebuild = damaged_points(&env, "app01");
    // What verify finds, reading every chunk.
    let _ = env.run(&["verify"]);
    let after_verify = damaged_points(&env, "app01");
    assert!(after_verify.len() >= 2, "{after_verify:?}");
    assert_eq!(after_rebuild, after_verify);
    // The next backup reads the whole VM again (its base is damaged), stores the chunk
    // again, and its point restores.
    let job = env.json(&["backup", "app01"]);
    assert_eq!(job["status"], "CompletedWithWarnings", "{job:#}");
    let point = job["details"]["recovery_point"].as_str().unwrap();
    env.assert_restore_matches_source("app01", point, "after");
}

/// A rebuilt catalog whose DefaultPolicy object was lost does not get the built-in one
/// back under the items that name it (its rules could keep their points shorter than the
/// lost ones did): they read ProtectionError until the policy is created again.
#[test]
fn a_lost_default_policy_is_not_replaced_by_the_built_in_one() {
    let env = Env::new();
    env.protect(&["app01"]);
    env.backup("app01");
    let vault = env.vault_dir("test-we");
    for f in files_under(&vault.join("policies")) {
        std::fs::remove_file(f).unwrap();
    }
    remove_catalog(&vault, &env.path("lost"));
    // It says what is missing (exit 1: a problem found).
    let out = env.run(&["vault", "rebuild", "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        report["problems"].to_string().contains("DefaultPolicy"),
        "{report:#}"
    );
    env.ok(&["sim", "advance", "1d"]);
    assert_eq!(env.json(&["policy", "list"]), Value::Array(vec![]));
    let items = env.json(&["items"]).to_string();
    let app01 = env
        .json(&["items"])
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == "app01")
        .cloned()
        .unwrap_or_else(|| panic!("{items}"));
    assert_eq!(app01["protection_state"], "ProtectionError", "{app01:#}");
    assert_eq!(app01["policy"], "DefaultPolicy", "{app01:#}");
}

/// verify reads the vault's description of itself too (otherwise only a rebuild does,
/// when it is too late): a damaged item object and a lost policy object are written again
/// from the catalog, an unreadable manifest is named; a rebuild then brings the items and
/// policies back.
#[test]
fn verify_mends_the_vaults_description_from_the_catalog() {
    let env = Env::new();
    env.protect(&["app01"]);
    let first = env.backup("app01");
    env.backup("app01");
    let vault = env.vault_dir("test-we");
    let items = env.json(&["items"]);
    let policies = env.json(&["policy", "list"]);
    // Every item object damaged, every policy object gone, the first point's manifest
    // damaged.
    for f in files_under(&vault.join("items")) {
        let mut bytes = std::fs::read(&f).unwrap();
        let at = bytes.len() / 2;
        bytes[at] ^= 1;
        std::fs::write(&f, &bytes).unwrap();
    }
    for f in files_under(&vault.join("policies")) {
        std::fs::remove_file(f).unwrap();
    }
    let manifest = vault.join("points").join(&first).join("manifest");
    let mut bytes = std::fs::read(&manifest).unwrap();
    bytes[20] ^= 1;
    std::fs::write(&manifest, &bytes).unwrap();

    let job = env.json(&["verify"]);
    assert_eq!(job["status"], "CompletedWithWarnings", "{job:#}");
    let rewritten = job["details"]["description_rewritten"].to_string();
    assert!(rewritten.contains("item sales/app01"), "{job:#}");
    assert!(rewritten.contains("policy DefaultPolicy"), "{job:#}");
    assert!(
        job["details"]["unreadable_manifests"]
            .to_string()
            .contains(&first),
        "{job:#}"
    );
    // Mended: a second verify rewrites nothing (the manifest is still named).
    let again = env.json(&["verify"]);
    assert_eq!(
        again["details"]["description_rewritten"],
        Value::Null,
        "{again:#}"
    );
    assert!(again["details"]["unreadable_manifests"]
        .to_string()
        .contains(&first));

    // With the manifest put right, a rebuild brings back what the catalog had.
    bytes[20] ^= 1;
    std::fs::write(&manifest, &bytes).unwrap();
    remove_catalog(&vault, &env.path("lost"));
    env.json(&["vault", "rebuild"]);
    assert_eq!(env.json(&["items"]), items);
    assert_eq!(env.json(&["policy", "list"]), policies);
}

#[test]
fn a_rebuild_leaves_what_it_cannot_vouch_for_and_gc_keeps_its_data() {
    let env = Env::new();
    env.protect(&["app01"]);
    let p1 = env.backup("app01");
    env.ok(&["sim", "advance", "1d"]);
    let vault = env.vault_dir("test-we");
    let points = env.json(&["points", "app01"]);
    let p2 = points
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap().to_string())
        .find(|id| *id != p1)
        .unwrap();
    remove_catalog(&vault, &env.path("lost"));
    // p2's manifest damaged; a killed earlier rebuild left its temporary catalog.
    let manifest = vault.join("points").join(&p2).join("manifest");
    let mut bytes = std::fs::read(&manifest).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 1;
    std::fs::write(&manifest, &bytes).unwrap();
    std::fs::write(vault.join("catalog.db.rebuild"), b"half a catalog").unwrap();

    let out = env.run(&["vault", "rebuild", "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["points"], 1, "{report:#}");
    let problems = report["problems"].to_string();
    assert!(problems.contains(&p2), "{report:#}");
    assert!(!vault.join("catalog.db.rebuild").exists());
    // The point it could not read is not listed, and its folder and chunks stay: garbage
    // collection refuses while the folder is unknown.
    assert_eq!(env.json(&["points", "app01"]).as_array().unwrap().len(), 1);
    let before = files_under(&vault.join("chunks")).len();
    let out = env.run(&["gc", "--json"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(files_under(&vault.join("chunks")).len(), before);
    assert!(vault.join("points").join(&p2).exists());
    env.assert_restore_matches_source("app01", &p1, "p1");
}

/// A vault of format 1 (made before format 2; built here the way that vmvault made them):
/// it keeps working as it is, unencrypted, and says so.
#[test]
fn a_format_1_vault_keeps_working_unencrypted() {
    let env = Env::new();
    let dir = format_1_vault(&env);

    env.protect(&["app01"]);
    let p1 = env.backup("app01");
    env.ok(&["sim", "advance", "1d"]);
    let vaults = env.json(&["vaults"]);
    assert_eq!(vaults[0]["format"], 1, "{vaults:#}");
    assert_eq!(vaults[0]["encryption"], "none", "{vaults:#}");
    assert!(!dir.join("keys").exists() && !dir.join("items").exists());
    assert!(!dir.join("points").join(&p1).join("manifest").exists());
    // Chunks are format 1 files: a header, then zstd or the raw bytes.
    let chunk = files_under(&dir.join("chunks")).into_iter().next().unwrap();
    assert_eq!(&std::fs::read(&chunk).unwrap()[..4], b"VMVC");
    env.ok(&["verify"]);
    env.assert_restore_matches_source("app01", &p1, "v1");
    // Its catalog is its only description: no rebuild.
    remove_catalog(&dir, &env.path("lost"));
    let (_, err) = env.fails_with(2, &["vault", "rebuild"]);
    assert!(err.contains("format 1"), "{err}");
}

/// What a rebuild must not trust: a vault.toml that says the vault is not encrypted, a
/// point folder with indexes but no manifest; and a stray file among the key slots does not
/// lock the vault out.
#[test]
fn a_rebuild_trusts_neither_an_edited_vault_toml_nor_a_missing_manifest() {
    let env = Env::new();
    env.protect(&["app01"]);
    let p1 = env.backup("app01");
    env.ok(&["sim", "advance", "1d"]);
    let vault = env.vault_dir("test-we");
    std::fs::write(vault.join("keys").join("README"), b"not a slot").unwrap();
    env.ok(&["verify"]);

    remove_catalog(&vault, &env.path("lost"));
    let marker = vault.join("vault.toml");
    let text = std::fs::read_to_string(&marker).unwrap();
    std::fs::write(&marker, text.replace("\"aes-256-gcm\"", "\"none\"")).unwrap();
    let (_, err) = env.fails_with(1, &["vault", "rebuild"]);
    assert!(err.contains("vault.toml was changed"), "{err}");
    assert!(!vault.join("catalog.db").exists());
    std::fs::write(&marker, &text).unwrap();

    // p1's manifest lost: its folder (indexes intact) is left, not taken for an
    // uncommitted backup that garbage collection would remove.
    std::fs::remove_file(vault.join("points").join(&p1).join("manifest")).unwrap();
    let out = env.run(&["vault", "rebuild", "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(report["problems"].to_string().contains(&p1), "{report:#}");
    let gc = env.run(&["gc", "--json"]);
    assert_eq!(gc.status.code(), Some(1), "garbage collection must refuse");
    assert!(vault.join("points").join(&p1).join("disk0.idx").exists());
}

/// A vault whose catalog was created but never got its id (a full disk, a kill) goes on as
/// the vault it was being made as: encrypted.
#[test]
fn a_vault_creation_cut_short_stays_encrypted() {
    let env = Env::new();
    let dir = env.vault_dir("test-we");
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .unwrap();
        let d = vmvault::fsx::Dir::open_private(&dir, false).unwrap();
        drop(vmvault::vault::catalog::Catalog::create(&d, "catalog.db").unwrap());
    }
    env.ok(&["discover"]);
    let vaults = env.json(&["vaults"]);
    assert_eq!(vaults[0]["format"], 2, "{vaults:#}");
    assert_eq!(vaults[0]["encryption"], "aes-256-gcm", "{vaults:#}");
}

/// A format 1 vault named test-we (made the way vmvault made them before format 2).
fn format_1_vault(env: &Env) -> PathBuf {
    use std::os::unix::fs::DirBuilderExt;
    use vmvault::vault::folder::{open_catalog_as, Layout, VaultFolder};
    let dir = env.vault_dir("test-we");
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir.parent().unwrap())
        .unwrap();
    let folder = VaultFolder::open(&dir, true).unwrap();
    drop(open_catalog_as(&folder, "test-we", Layout::V1).unwrap());
    dir
}

/// An upgrade killed in the middle leaves the format 1 vault working at its place, and the
/// next run goes on from where it stopped.
#[test]
fn a_killed_upgrade_leaves_the_old_vault_and_goes_on() {
    use std::io::BufRead;
    let env = Env::new();
    let dir = format_1_vault(&env);
    env.protect(&["app01", "sales/sql01"]);
    env.backup("app01");
    env.ok(&["sim", "advance", "3d"]);
    let mut child = env
        .std_cmd()
        .args(["vault", "upgrade"])
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    for line in std::io::BufReader::new(stderr).lines() {
        if line.unwrap().contains("copying recovery point 3/") {
            break;
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let vaults = env.json(&["vaults"]);
    assert_eq!(vaults[0]["format"], 1, "{vaults:#}");
    env.ok(&["verify"]);
    let out = env.json(&["vault", "upgrade"]);
    assert!(
        out["report"]["points_already_there"].as_u64().unwrap() >= 1,
        "{out:#}"
    );
    assert_eq!(env.json(&["vaults"])[0]["format"], 2);
    env.ok(&["verify"]);
    assert!(dir.with_file_name("test-we.format1").exists());
}

/// `vault upgrade` turns a format 1 vault into an encrypted format 2 vault with the same
/// recovery points, which restore bit-identical; the old vault is kept beside it.
#[test]
fn a_format_1_vault_is_upgraded_to_format_2_with_every_point() {
    let env = Env::new();
    let dir = format_1_vault(&env);
    env.protect(&["app01", "sales/sql01"]);
    let p1 = env.backup("app01");
    env.ok(&["sim", "advance", "2d"]);
    let items = env.json(&["items"]);
    let before: Vec<Vec<String>> = ["app01", "sales/sql01"]
        .iter()
        .map(|vm| {
            env.json(&["points", vm])
                .as_array()
                .unwrap()
                .iter()
                .map(|p| format!("{} {} {}", p["id"], p["time"], p["expiry"]))
                .collect()
        })
        .collect();
    let jobs = env.json(&["jobs"]).as_array().unwrap().len();

    let out = env.json(&["vault", "upgrade"]);
    assert!(
        out["report"]["points_copied"].as_u64().unwrap() >= 3,
        "{out:#}"
    );
    let vaults = env.json(&["vaults"]);
    assert_eq!(vaults[0]["format"], 2, "{vaults:#}");
    assert_eq!(vaults[0]["encryption"], "aes-256-gcm", "{vaults:#}");
    assert!(dir
        .with_file_name("test-we.format1")
        .join("vault.toml")
        .exists());
    assert_eq!(env.json(&["items"]), items);
    for (vm, b) in ["app01", "sales/sql01"].iter().zip(&before) {
        let after: Vec<String> = env
            .json(&["points", vm])
            .as_array()
            .unwrap()
            .iter()
            .map(|p| format!("{} {} {}", p["id"], p["time"], p["expiry"]))
            .collect();
        assert_eq!(&after, b, "{vm}");
    }
    assert!(env.json(&["jobs"]).as_array().unwrap().len() >= jobs);
    env.ok(&["verify"]);
    env.assert_restore_matches_source("app01", &p1, "upgraded");
    // A second run has nothing to do.
    let (_, err) = env.fails_with(2, &["vault", "upgrade"]);
    assert!(err.contains("format 2 already"), "{err}");
    env.backup("app01");
}

/// A rebuild never follows a symbolic link in the vault: a linked folder of objects is
/// refused, a linked point folder is named and not read (and neither is imported).
#[test]
fn a_rebuild_follows_no_link_planted_in_the_vault() {
    let env = Env::new();
    env.protect(&["app01", "sales/web01"]);
    let p1 = env.backup("app01");
    let vault = env.vault_dir("test-we");
    remove_catalog(&vault, &env.path("lost"));
    // items/ moved away and linked back.
    let elsewhere = env.path("items-elsewhere");
    std::fs::rename(vault.join("items"), &elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, vault.join("items")).unwrap();
    let (_, err) = env.fails_with(1, &["vault", "rebuild"]);
    assert!(
        err.contains("items") && err.contains("symbolic link"),
        "{err}"
    );
    assert!(!vault.join("catalog.db").exists());
    std::fs::remove_file(vault.join("items")).unwrap();
    std::fs::rename(&elsewhere, vault.join("items")).unwrap();

    // A planted name with a terminal escape in it: named escaped, never read.
    std::fs::write(vault.join("items").join("x\u{1b}[31mred"), b"junk").unwrap();
    // A point folder moved away and linked back: named, not read, not imported.
    let moved = env.path("point-elsewhere");
    let folder = vault.join("points").join(&p1);
    std::fs::rename(&folder, &moved).unwrap();
    std::os::unix::fs::symlink(&moved, &folder).unwrap();
    let out = env.run(&["vault", "rebuild", "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let problems = report["problems"].to_string();
    assert!(
        problems.contains(&p1) && problems.contains("symbolic link"),
        "{report:#}"
    );
    let named: Vec<&str> = report["problems"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p.as_str())
        .filter(|p| p.contains("never gives"))
        .collect();
    assert_eq!(named.len(), 1, "{report:#}");
    assert!(!named[0].contains('\u{1b}'), "echoed raw: {:?}", named[0]);
    assert!(env
        .json(&["points", "app01"])
        .as_array()
        .unwrap()
        .is_empty());
}

/// The key slots of a vault with items but no backup yet removed: the vault says its keys
/// are lost (its items and policies are stored under them) rather than making new ones.
#[test]
fn lost_key_slots_are_never_replaced_by_new_keys() {
    let env = Env::new();
    env.protect(&["app01"]);
    let vault = env.vault_dir("test-we");
    let key = key_file(&env, &vault);
    let before = std::fs::read(&key).unwrap();
    std::fs::remove_dir_all(vault.join("keys")).unwrap();
    let (_, err) = env.fails_with(1, &["backup", "app01"]);
    assert!(
        err.contains("key slots") && err.contains("paper key"),
        "{err}"
    );
    assert!(!vault.join("keys").exists());
    assert_eq!(
        std::fs::read(&key).unwrap(),
        before,
        "the key file is untouched"
    );
    let out = env.run(&["key", "list"]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("no key slot") && text.contains("paper key"),
        "{text}"
    );
}

/// A point folder replaced by a link: verify and restore refuse to read through it, and
/// removing the point removes the link, never what it names.
#[test]
fn a_linked_point_folder_is_never_read_or_emptied_through() {
    let env = Env::new();
    env.protect(&["app01"]);
    let p1 = env.backup("app01");
    let vault = env.vault_dir("test-we");
    let folder = vault.join("points").join(&p1);
    let outside = env.path("outside");
    std::fs::rename(&folder, &outside).unwrap();
    std::fs::write(outside.join("precious"), b"keep me").unwrap();
    std::os::unix::fs::symlink(&outside, &folder).unwrap();

    let out = env.run(&["verify"]);
    assert_eq!(out.status.code(), Some(1));
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("disk index") && text.contains(&p1), "{text}");
    let (_, err) = env.fails_with(
        1,
        &[
            "restore",
            "app01",
            "--point",
            &p1,
            "--to",
            env.path("r").to_str().unwrap(),
        ],
    );
    assert!(err.contains("symbolic link"), "{err}");
    // Named as what it is: the point's folder. Removing `<folder>/disk0.idx`, as a message
    // naming that would ask, would delete the file outside the vault the link points to.
    assert!(
        err.contains(&format!("Remove it in {}\n", folder.display()))
            || err.contains(&format!("Remove it in {} ", folder.display()))
            || err
                .trim_end()
                .ends_with(&format!("Remove it in {}", folder.display())),
        "{err}"
    );
    assert!(!err.contains("disk0.idx): a symbolic link"), "{err}");

    env.ok(&["stop-protection", "app01", "--delete-data"]);
    env.ok(&["sim", "advance", "15d"]);
    assert!(env
        .json(&["points", "app01"])
        .as_array()
        .unwrap()
        .is_empty());
    assert!(
        std::fs::symlink_metadata(&folder).is_err(),
        "the link is gone"
    );
    assert!(
        outside.join("manifest").exists(),
        "nothing is removed through the link"
    );
    assert_eq!(std::fs::read(outside.join("precious")).unwrap(), b"keep me");
}

/// A folder where a chunk should be: verify sets it aside (renamed, its content kept) and
/// says so; the next backup stores the chunk again, and the point it commits is sound.
#[test]
fn a_folder_at_a_chunk_name_is_set_aside_and_the_next_backup_repairs() {
    let env = Env::new();
    env.protect(&["app01"]);
    env.backup("app01");
    let vault = env.vault_dir("test-we");
    let chunk = files_under(&vault.join("chunks"))
        .into_iter()
        .next()
        .unwrap();
    std::fs::remove_file(&chunk).unwrap();
    std::fs::create_dir(&chunk).unwrap();
    std::fs::write(chunk.join("note"), b"someone's").unwrap();

    let out = env.run(&["verify", "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let job: Value = serde_json::from_slice(&out.stdout).unwrap();
    let advice = job["error"]["recommendations"].to_string();
    assert!(
        advice.contains("1 damaged chunk file(s) were set aside"),
        "{job:#}"
    );
    let aside = chunk.with_extension("damaged");
    assert_eq!(std::fs::read(aside.join("note")).unwrap(), b"someone's");

    let j = env.json(&["backup", "app01"]);
    assert!(
        j["status"].as_str().unwrap().starts_with("Completed"),
        "{j:#}"
    );
    env.ok(&["verify"]);
}

/// Entries planted in the vault folder that are no objects of it (a link, a file with a
/// name vmvault never gives, a note left in a point's folder): verify names every one,
/// escaped, reads none, and stays clean once they are gone.
#[test]
fn verify_names_what_is_in_the_vault_but_not_stored_by_it() {
    let env = Env::new();
    env.protect(&["app01"]);
    let p1 = env.backup("app01");
    let vault = env.vault_dir("test-we");
    let planted = [
        vault.join("chunks").join("ab").join("NOTES"),
        vault.join("chunks").join("stray"),
        vault.join("points").join(&p1).join("notes.txt"),
        vault.join("policies").join("x\u{1b}[31mred"),
        vault.join("keys").join("README"),
    ];
    for p in &planted {
        std::fs::write(p, b"junk").unwrap();
    }
    let secret = env.path("secret");
    std::fs::write(&secret, b"not the vault's").unwrap();
    let link = vault.join("items").join("aaaa");
    std::os::unix::fs::symlink(&secret, &link).unwrap();

    let job = env.json(&["verify"]);
    assert_eq!(job["status"], "CompletedWithWarnings", "{job:#}");
    let strays: Vec<String> = job["details"]["stray_entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect();
    assert_eq!(strays.len(), 6, "{strays:#?}");
    for p in &planted[..3] {
        let shown = p.display().to_string();
        assert!(
            strays.iter().any(|s| s.contains(&shown)),
            "{shown}: {strays:#?}"
        );
    }
    assert!(strays
        .iter()
        .any(|s| s.contains("aaaa") && s.contains("symbolic link")));
    assert!(
        strays
            .iter()
            .any(|s| s.contains("key slots") && s.contains("README")),
        "{strays:#?}"
    );
    assert!(strays.iter().all(|s| !s.contains('\u{1b}')), "{strays:#?}");
    assert!(
        job["details"]["warnings"].to_string().contains("6 entries"),
        "{job:#}"
    );
    // Nothing was read or changed through them, and the point is whole.
    assert_eq!(std::fs::read(&secret).unwrap(), b"not the vault's");
    env.assert_restore_matches_source("app01", &p1, "r");

    for p in &planted {
        std::fs::remove_file(p).unwrap();
    }
    std::fs::remove_file(&link).unwrap();
    assert_eq!(env.json(&["verify"])["status"], "Completed");

    // One entry is "it"; a folder that cannot be looked through (others may write it) is
    // said as such, not counted as an entry.
    std::fs::write(&planted[0], b"junk").unwrap();
    let open = vault.join("points").join("open-to-all");
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
    let job = env.json(&["verify"]);
    let warnings = job["details"]["warnings"].to_string();
    assert!(warnings.contains("1 entry"), "{job:#}");
    assert!(warnings.contains("Remove it while"), "{job:#}");
    assert!(
        warnings.contains("could not be looked through") && warnings.contains("open-to-all"),
        "{job:#}"
    );
    assert_eq!(job["details"]["stray_entries"].as_array().unwrap().len(), 1);
}
