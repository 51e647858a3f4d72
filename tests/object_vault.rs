//! Vaults in object storage, through the CLI, on the S3 emulator (moto) that `.ci/run`
//! starts: backup and restore bit-identical, nothing of the vault's data on the local disk,
//! a new machine (a second data folder) that has only the config and the key rebuilds the
//! catalog from the bucket, a stale catalog is refused, the lock lives in the bucket.
//! (The same flow on Azurite runs as a library test: `engine::tests_object`.)

mod common;

use common::*;
use std::path::Path;

#[path = "support/emulators.rs"]
mod emulators;

/// The emulator settings in `var`, or None (after saying why) when it is not set up.
fn endpoint(var: &str, what: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(e) if !e.is_empty() => Some(e.trim_end_matches('/').to_string()),
        _ => {
            if std::env::var("VMVAULT_REQUIRE_TOOLS").as_deref() == Ok("1") {
                panic!(
                    "{var} is required (VMVAULT_REQUIRE_TOOLS=1): run the tests through .ci/run"
                );
            }
            eprintln!("skipping: {var} is not set ({what}; see .ci/run)");
            None
        }
    }
}

const BUCKET: &str = "vmvault-cli-test";

/// The `storage` of a vault in the S3 emulator under `prefix` (the bucket made).
fn s3(prefix: &str) -> Option<String> {
    let endpoint = endpoint(
        "VMVAULT_TEST_S3_ENDPOINT",
        "an S3 server such as moto_server",
    )?;
    emulators::create_bucket(&endpoint, BUCKET).expect("the S3 emulator makes the bucket");
    Some(format!(
        "{{ kind = \"s3\", bucket = \"{BUCKET}\", prefix = \"{prefix}\", endpoint = \"{endpoint}\", region = \"us-east-1\" }}"
    ))
}

/// The `storage` of a vault in Azurite under `prefix` (the container made).
fn azure(prefix: &str) -> Option<String> {
    let endpoint = endpoint("VMVAULT_TEST_AZURE_ENDPOINT", "Azurite's account URL")?;
    let key =
        std::env::var("AZURE_STORAGE_ACCOUNT_KEY").expect("AZURE_STORAGE_ACCOUNT_KEY for Azurite");
    let account = endpoint
        .rsplit('/')
        .next()
        .unwrap_or("devstoreaccount1")
        .to_string();
    emulators::create_container(&endpoint, &account, &key, BUCKET)
        .expect("Azurite makes the container");
    Some(format!(
        "{{ kind = \"azure\", account = \"{account}\", container = \"{BUCKET}\", prefix = \"{prefix}\", endpoint = \"{endpoint}\" }}"
    ))
}

/// A machine: a data folder and config of its own, with the vault `test-we` in `storage`.
fn machine(storage: &str) -> Env {
    Env::with_config(|_| {
        format!(
            "[[vault]]\nname = \"test-we\"\nregion = \"westeurope\"\nsource = {{ {FAST_SIM} }}\nstorage = {storage}\n"
        )
    })
}

fn fresh_prefix() -> String {
    format!(
        "cli/{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    )
}

/// The key files of `from` given to `to` (what an administrator keeps off the machine).
fn copy_keys(from: &Env, to: &Env) {
    let keys = to.path("keys");
    std::fs::create_dir_all(&keys).unwrap();
    for e in std::fs::read_dir(from.path("keys")).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), keys.join(e.file_name())).unwrap();
    }
}

fn names_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn a_vault_in_s3_restores_bit_identical_and_a_new_machine_rebuilds_its_catalog() {
    if let Some(storage) = s3(&fresh_prefix()) {
        restores_and_rebuilds(&storage);
    }
}

#[test]
fn a_vault_in_azure_blob_restores_bit_identical_and_a_new_machine_rebuilds_its_catalog() {
    if let Some(storage) = azure(&fresh_prefix()) {
        restores_and_rebuilds(&storage);
    }
}

fn restores_and_rebuilds(storage: &str) {
    let a = machine(storage);
    a.protect(&["app01"]);
    let first = a.backup("app01");
    let second = a.backup("app01");
    a.assert_restore_matches_source("app01", &first, "a1");

    // Nothing of the vault's data is on this machine: only the catalog and its lock.
    let cache = a.vault_dir("test-we");
    for name in names_in(&cache) {
        assert!(
            name.starts_with("catalog.db") || name == "vault.lock",
            "{name} in the catalog's folder {}",
            cache.display()
        );
    }
    let vaults = a.json(&["vaults"]);
    assert_eq!(vaults[0]["format"], 2, "{vaults:#}");
    let shown = vaults[0]["storage"].as_str().unwrap();
    assert!(shown.contains(BUCKET), "{shown}");

    // A new machine with the config and the key: no catalog yet, and it says what to do.
    let b = machine(storage);
    copy_keys(&a, &b);
    let (_, err) = b.fails_with(1, &["points", "app01"]);
    assert!(
        err.contains("no catalog of it") && err.contains("vault rebuild"),
        "{err}"
    );
    let (_, err) = b.fails_with(1, &["backup", "app01"]);
    assert!(err.contains("vault rebuild"), "{err}");
    b.ok(&["vault", "rebuild"]);
    let points = b.json(&["points", "app01"]);
    let ids: Vec<&str> = points
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap())
        .collect();
    assert!(
        ids.contains(&first.as_str()) && ids.contains(&second.as_str()) && ids.len() == 2,
        "{points:#}"
    );
    b.assert_restore_matches_source("app01", &second, "b2");
    let third = b.backup("app01");

    // The first machine's catalog does not know the third point: it must not write.
    let (_, err) = a.fails_with(1, &["gc"]);
    assert!(
        err.contains("another catalog") && err.contains("vault rebuild"),
        "{err}"
    );
    let (_, err) = a.fails_with(1, &["backup", "app01"]);
    assert!(err.contains("another catalog"), "{err}");
    // …and nothing was lost by trying.
    b.ok(&["gc"]);
    let verify = b.json(&["verify"]);
    assert_eq!(verify["status"], "Completed", "{verify:#}");
    b.assert_restore_matches_source("app01", &third, "b3");
}

#[test]
fn the_lock_of_a_vault_in_s3_is_in_the_bucket_and_a_dead_owner_lets_go() {
    let Some(storage) = s3(&fresh_prefix()) else {
        return;
    };
    let a = machine(&storage);
    a.protect(&["app01"]);
    a.backup("app01");
    let b = machine(&storage);
    copy_keys(&a, &b);

    // `run` on the first machine owns the vault: the second one is told who does.
    let mut run = a
        .std_cmd()
        .arg("run")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    let mut out = std::io::BufReader::new(run.stderr.take().unwrap());
    std::io::BufRead::read_line(&mut out, &mut line).unwrap();
    assert!(line.contains("scheduler running"), "{line}");
    let (_, err) = b.fails_with(2, &["vault", "rebuild"]);
    assert!(
        err.contains(&format!("in use by process {}", run.id())) && err.contains("on host"),
        "{err}"
    );
    assert!(!b.vault_dir("test-we").join("catalog.db").exists());

    // Killed, it cannot release the lock; on this host its pid is gone, so the lock is
    // taken over at once (another host would wait for it to expire).
    run.kill().unwrap();
    run.wait().unwrap();
    b.ok(&["vault", "rebuild"]);
    assert_eq!(b.json(&["points", "app01"]).as_array().unwrap().len(), 1);
}

#[test]
fn object_storage_settings_that_cannot_work_are_refused_with_what_to_change() {
    for (storage, says) in [
        (
            "{ kind = \"gcs\", bucket = \"b\" }",
            "unknown variant `gcs`",
        ),
        ("{ kind = \"s3\" }", "missing field `bucket`"),
        ("42", "expected a folder (a string) or object storage"),
        (
            "{ kind = \"s3\", bucket = \"b\", endpoint = \"http://s3.example.net\" }",
            "plain http to another machine",
        ),
        ("{ kind = \"s3\", bucket = \"b/../c\" }", "the bucket name"),
        (
            "{ kind = \"azure\", account = \"a\", container = \"c\", prefix = \"x//y\" }",
            "prefix",
        ),
        (
            "{ kind = \"s3\", bucket = \"b\", secret_access_key = \"AKIA…\" }",
            "unknown field `secret_access_key`",
        ),
    ] {
        let env = Env::with_config(|_| {
            format!(
                "[[vault]]\nname = \"v\"\nregion = \"westeurope\"\nsource = {{ {FAST_SIM} }}\nstorage = {storage}\n"
            )
        });
        let (_, err) = env.fails_with(2, &["vaults"]);
        assert!(
            err.contains("storage") && err.contains(says),
            "{storage}: {err}"
        );
        assert!(!err.contains("AKIA"), "a secret is echoed: {err}");
    }
    // Two vaults in one place of one bucket.
    let env = Env::with_config(|_| {
        let v = |name: &str, prefix: &str| {
            format!(
                "[[vault]]\nname = \"{name}\"\nregion = \"westeurope\"\nsource = {{ {FAST_SIM} }}\nstorage = {{ kind = \"s3\", bucket = \"b\", prefix = \"{prefix}\" }}\n"
            )
        };
        format!("{}{}", v("one", "vaults"), v("two", "vaults/two"))
    });
    let (_, err) = env.fails_with(2, &["vaults"]);
    assert!(err.contains("\"one\" and \"two\""), "{err}");
}

/// The keys under `prefix` of the S3 test bucket whose path has `/{kind}/` in it.
fn s3_keys(prefix: &str, kind: &str) -> Vec<String> {
    let endpoint = std::env::var("VMVAULT_TEST_S3_ENDPOINT").unwrap();
    let mut keys = Vec::new();
    let mut token = String::new();
    loop {
        let url = format!(
            "{}/{BUCKET}?list-type=2&prefix={prefix}/{kind}/{token}",
            endpoint.trim_end_matches('/')
        );
        let (status, body) = emulators::http(&url, "GET", &[], "").unwrap();
        assert_eq!(status, 200, "{body}");
        keys.extend(
            body.split("<Key>")
                .skip(1)
                .filter_map(|k| k.split("</Key>").next())
                .map(str::to_string),
        );
        match body
            .split("<NextContinuationToken>")
            .nth(1)
            .and_then(|t| t.split('<').next())
        {
            Some(t) => token = format!("&continuation-token={t}"),
            None => return keys,
        }
    }
}

#[test]
fn a_full_catalog_disk_fails_the_backup_and_leaves_nothing_in_the_bucket() {
    let prefix = fresh_prefix();
    let Some(storage) = s3(&prefix) else {
        return;
    };
    // Reads throttled: the backup is still uploading when the catalog's disk fills up.
    let env = Env::with_config(|_| {
        format!(
            "[[vault]]\nname = \"test-we\"\nregion = \"westeurope\"\nsource = {{ {FAST_SIM}, read_throughput_mib_s = 30 }}\nstorage = {storage}\n"
        )
    });
    let Some(disk) = Tmpfs::mount(&env, "small", "size=16m,mode=0700") else {
        return;
    };
    let data = disk.0.join("data");
    let run = |args: &[&str]| {
        std::process::Command::new(assert_cmd::cargo::cargo_bin("vmvault"))
            .arg("--config")
            .arg(&env.config)
            .arg("--data-dir")
            .arg(&data)
            .args(args)
            .output()
            .unwrap()
    };
    for args in [
        &["discover"][..],
        &["register", "app01"],
        &["protect", "app01", "--policy", "DefaultPolicy"],
    ] {
        assert_eq!(run(args).status.code(), Some(0), "{args:?}");
    }
    let backup = std::process::Command::new(assert_cmd::cargo::cargo_bin("vmvault"))
        .arg("--config")
        .arg(&env.config)
        .arg("--data-dir")
        .arg(&data)
        .args(["backup", "app01", "--json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let fill = disk.0.join("fill");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&fill).unwrap();
        let block = vec![0u8; 64 * 1024];
        while f.write_all(&block).is_ok() {}
    }
    let out = backup.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let job: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("not a job ({e}): {err}"));
    assert_eq!(job["status"], "Failed", "{job:#}");
    assert_eq!(job["error"]["code"], "VaultStorageFull", "{job:#}");
    std::fs::remove_file(&fill).unwrap();

    // Nothing committed, and what the failed backup uploaded was taken back.
    let points = run(&["points", "app01", "--json"]);
    let points: serde_json::Value = serde_json::from_slice(&points.stdout).unwrap();
    assert_eq!(points.as_array().map(Vec::len), Some(0), "{points:#}");
    let left = s3_keys(&prefix, "chunk");
    assert!(
        left.is_empty(),
        "{} chunk(s) left in the bucket",
        left.len()
    );

    // Room again: the next backup works, and verify reads it all back.
    let out = run(&["backup", "app01", "--json"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!s3_keys(&prefix, "chunk").is_empty());
    assert_eq!(run(&["verify"]).status.code(), Some(0));
}
