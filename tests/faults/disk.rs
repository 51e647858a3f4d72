//! A full disk under the vault: the job fails saying the storage is full and where, nothing
//! half-written is committed, listings keep working, and once there is room the next run
//! works.

use crate::common::*;
use serde_json::Value;

/// Runs vmvault with `env`'s config and its data folder at `data` (on a small mount).
fn run_with_data(env: &Env, data: &std::path::Path, args: &[&str]) -> std::process::Output {
    assert_cmd::Command::cargo_bin("vmvault")
        .expect("binary")
        .timeout(std::time::Duration::from_secs(120))
        .arg("--config")
        .arg(&env.config)
        .arg("--data-dir")
        .arg(data)
        .args(args)
        .output()
        .expect("run vmvault")
}

#[test]
fn a_full_vault_disk_fails_the_backup_clearly_and_the_next_one_works() {
    let env = Env::new();
    let Some(disk) = Tmpfs::mount(&env, "small", "size=24m,mode=0700") else {
        return;
    };
    let data = disk.0.join("data");
    let run = |args: &[&str]| run_with_data(&env, &data, args);
    let ok = |args: &[&str]| {
        let out = run(args);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    };
    ok(&["discover"]);
    ok(&["register", "app01"]);
    ok(&["protect", "app01", "--policy", "DefaultPolicy"]);

    // app01 stores about 55 MiB: more than the disk holds.
    let out = run(&["backup", "app01", "--json"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let job: Value = serde_json::from_slice(&out.stdout).expect("job JSON");
    assert_eq!(job["status"], "Failed", "{job:#}");
    assert_eq!(job["error"]["code"], "VaultStorageFull", "{job:#}");
    let msg = job["error"]["message"].as_str().unwrap_or_default();
    assert!(msg.contains("free of"), "{msg}");
    eprintln!(
        "{}",
        String::from_utf8_lossy(&run(&["job", job["id"].as_str().unwrap_or_default()]).stdout)
    );
    let advice = job["error"]["recommendations"].to_string();
    assert!(
        !advice.contains("verify"),
        "a full disk is not damage: {advice}"
    );
    // What it wrote is given back at once, not at the next garbage collection (whose
    // grace period would keep it for an hour).
    let chunks = data.join("vaults").join("test-we").join("chunks");
    let left = files_under(&chunks);
    assert!(
        left.is_empty(),
        "chunks left by the failed backup: {}",
        left.len()
    );
    assert!(msg.contains("after what it wrote was removed"), "{msg}");

    // Listings still work on the full disk, and nothing was committed.
    let points: Value =
        serde_json::from_slice(&ok(&["points", "app01", "--json"]).stdout).expect("points JSON");
    assert_eq!(points.as_array().map(Vec::len), Some(0), "{points:#}");
    ok(&["items"]);
    ok(&["jobs"]);

    // Room again: the next backup works and restores exactly.
    disk.remount("size=400m");
    let out = ok(&["backup", "app01", "--json"]);
    let job: Value = serde_json::from_slice(&out.stdout).expect("job JSON");
    assert_eq!(job["status"], "Completed", "{job:#}");
    ok(&["verify"]);
    ok(&["gc"]);
    ok(&["verify"]);
}

/// A disk full to the last byte: SQLite cannot create a file there, so listings work only
/// because the catalog keeps its WAL and shared-memory files; a change fails naming the
/// full file system, not with a bare "disk I/O error".
#[test]
fn a_disk_full_to_the_last_byte_still_lists_and_says_it_is_full() {
    let env = Env::new();
    let Some(disk) = Tmpfs::mount(&env, "tiny", "size=8m,mode=0700") else {
        return;
    };
    let data = disk.0.join("data");
    let run = |args: &[&str]| run_with_data(&env, &data, args);
    let code = |args: &[&str]| {
        let out = run(args);
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    assert_eq!(code(&["discover"]).0, Some(0));
    fill(&disk.0.join("fill"));
    for args in [&["items"][..], &["jobs"], &["summary"]] {
        let (c, err) = code(args);
        assert_eq!(c, Some(0), "{args:?} on a full disk: {err}");
    }
    let (c, err) = code(&["register", "app01"]);
    assert_eq!(c, Some(1), "{err}");
    assert!(err.contains("0 B free of"), "{err}");
    std::fs::remove_file(disk.0.join("fill")).expect("remove fill");
    assert_eq!(code(&["register", "app01"]).0, Some(0));
}

/// Writes zeros into `path` until the file system is full.
fn fill(path: &std::path::Path) {
    use std::io::Write;
    let mut f = std::fs::File::create(path).expect("create fill file");
    let block = vec![0u8; 64 * 1024];
    while f.write_all(&block).is_ok() {}
    let _ = f.sync_all();
}

#[test]
fn a_disk_that_fills_up_while_a_backup_runs_ends_it_without_hanging() {
    // Reads throttled: the backup is still running when the disk fills up.
    let env = Env::with_source("read_throughput_mib_s = 20");
    let Some(disk) = Tmpfs::mount(&env, "small", "size=64m,mode=0700") else {
        return;
    };
    let data = disk.0.join("data");
    let cmd = || {
        let mut c = assert_cmd::Command::cargo_bin("vmvault").expect("binary");
        c.timeout(std::time::Duration::from_secs(120))
            .arg("--config")
            .arg(&env.config)
            .arg("--data-dir")
            .arg(&data);
        c
    };
    for args in [
        &["discover"][..],
        &["register", "app01"],
        &["protect", "app01", "--policy", "DefaultPolicy"],
    ] {
        cmd().args(args).assert().success();
    }
    let mut backup = std::process::Command::new(assert_cmd::cargo::cargo_bin("vmvault"))
        .arg("--config")
        .arg(&env.config)
        .arg("--data-dir")
        .arg(&data)
        .args(["backup", "app01", "--json"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("start backup");
    // Once the job runs, nothing is left: the chunk writes and then the catalog fail.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let out = cmd()
            .args(["jobs", "--status", "InProgress", "--json"])
            .output();
        let running = out
            .ok()
            .and_then(|o| serde_json::from_slice::<Value>(&o.stdout).ok())
            .and_then(|v| v.as_array().map(|a| !a.is_empty()))
            .unwrap_or(false);
        if running {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the backup never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    fill(&disk.0.join("fill"));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let status = loop {
        if let Some(s) = backup.try_wait().expect("wait") {
            break s;
        }
        if std::time::Instant::now() > deadline {
            let _ = backup.kill();
            panic!("the backup hung after its disk filled up");
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert_eq!(status.code(), Some(1));
    let mut stdout = Vec::new();
    use std::io::Read;
    if let Some(mut o) = backup.stdout.take() {
        let _ = o.read_to_end(&mut stdout);
    }
    let job: Value = serde_json::from_slice(&stdout).expect("job JSON");
    assert_eq!(job["status"], "Failed", "{job:#}");
    assert_eq!(job["error"]["code"], "VaultStorageFull", "{job:#}");

    // Room again: the next owner closes the job, and a backup works.
    std::fs::remove_file(disk.0.join("fill")).expect("remove fill");
    cmd().args(["backup", "app01"]).assert().success();
    let jobs: Value = serde_json::from_slice(
        &cmd()
            .args(["jobs", "--status", "InProgress", "--json"])
            .output()
            .expect("jobs")
            .stdout,
    )
    .expect("jobs JSON");
    assert_eq!(jobs.as_array().map(Vec::len), Some(0), "{jobs:#}");
    cmd().arg("verify").assert().success();
}
