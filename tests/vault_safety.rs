//! Crash, corruption and ownership: nothing already stored is ever lost.

mod common;
use common::*;
use serde_json::Value;
use std::time::{Duration, Instant};

/// Polls `cond` until it holds (or panics after `secs`).
fn wait_until(secs: u64, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if cond() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("timed out waiting for {what}");
}

fn running_backup(env: &Env) -> Option<Value> {
    let out = env.run(&[
        "jobs",
        "--operation",
        "Backup",
        "--status",
        "InProgress",
        "--json",
    ]);
    let v: Value = serde_json::from_slice(&out.stdout).ok()?;
    v.as_array()?.first().cloned()
}

#[test]
fn kill_during_backup_leaves_earlier_points_intact() {
    // Reads throttled so the backup is still running when it is killed.
    let env = Env::with_source("read_throughput_mib_s = 8");
    env.protect(&["app01", "sql01"]);
    let fast = Env::new();
    // Earlier points: taken with the same vault through an unthrottled config.
    std::fs::copy(&fast.config, env.path("fast.toml")).unwrap();
    let fast_cfg = env.path("fast.toml");
    let backup_fast = |vm: &str| -> String {
        let out = env
            .cmd()
            .arg("--config")
            .arg(&fast_cfg)
            .args(["backup", vm, "--json"])
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        v["details"]["recovery_point"].as_str().unwrap().to_string()
    };
    let p1 = backup_fast("app01");

    // A first (full) backup of another VM is killed while it moves data.
    let mut child = env
        .std_cmd()
        .args(["backup", "sql01"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut job_id = String::new();
    wait_until(60, "the backup to move data", || {
        match running_backup(&env) {
            Some(j) if j["bytes_done"].as_u64().unwrap_or(0) > 0 => {
                job_id = j["id"].as_str().unwrap().to_string();
                true
            }
            _ => false,
        }
    });
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();

    // At the next start the job reads Failed (interrupted).
    let job = env.json(&["job", &job_id]);
    assert_eq!(job["status"], "Failed", "{job:#}");
    assert_eq!(job["error"]["code"], "JobInterrupted");
    assert!(job["error"]["message"]
        .as_str()
        .unwrap()
        .contains("interrupted"));

    // Earlier points still restore bit-identical; a new backup succeeds and restores too.
    env.assert_restore_matches_source("app01", &p1, "p1");
    assert_eq!(env.json(&["points", "sql01"]).as_array().unwrap().len(), 0);
    let p2 = backup_fast("sql01");
    env.assert_restore_matches_source("sql01", &p2, "p2");
    env.ok(&["verify"]);
    // The killed backup's chunk files are garbage: collection keeps every committed one.
    env.ok(&["gc"]);
    env.ok(&["verify"]);
}

fn chunk_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if !p.file_name().unwrap().to_string_lossy().starts_with('.') {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

#[test]
fn flipped_byte_is_found_by_verify_and_only_its_points_fail_to_restore() {
    let env = Env::new();
    env.protect(&["app01", "sql01"]);
    let pa = env.backup("app01");
    let chunks = env.vault_dir("test-we").join("chunks");
    let before: std::collections::HashSet<_> = chunk_files(&chunks).into_iter().collect();
    let pb = env.backup("sql01");
    let new: Vec<_> = chunk_files(&chunks)
        .into_iter()
        .filter(|p| !before.contains(p))
        .collect();
    assert!(!new.is_empty(), "sql01's backup stored chunks of its own");

    // Flip one byte in the middle of one of sql01's chunks.
    let victim = &new[new.len() / 2];
    let mut bytes = std::fs::read(victim).unwrap();
    let i = bytes.len() / 2;
    bytes[i] ^= 0x40;
    std::fs::write(victim, &bytes).unwrap();

    let out = env.run(&["verify", "--json"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let job: Value = serde_json::from_slice(&out.stdout).unwrap();
    let affected: Vec<&str> = job["details"]["affected_points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["point"].as_str().unwrap())
        .collect();
    assert_eq!(affected, vec![pb.as_str()], "{job:#}");
    assert!(job["error"]["message"].as_str().unwrap().contains(&pb));

    // Human output names the point too.
    let (_, err) = env.fails_with(1, &["verify"]);
    assert!(err.contains(&pb), "{err}");

    // Restoring the damaged point fails clearly and leaves no image behind.
    let to = env.path("bad-restore");
    let (_, err) = env.fails_with(
        1,
        &[
            "restore",
            "sql01",
            "--point",
            &pb,
            "--to",
            to.to_str().unwrap(),
        ],
    );
    assert!(err.contains(&pb) && err.contains("verify"), "{err}");
    assert!(!to.join("sql01-disk0.raw").exists());

    // The other item's point still restores exactly.
    env.assert_restore_matches_source("app01", &pa, "ok");

    // The damaged point is marked; the next backup of sql01 reads it whole, writes the
    // damaged chunk again, and so repairs the old point too.
    let points = env.json(&["points", "sql01"]);
    assert_eq!(points[0]["damaged"], true);
    let job = env.json(&["backup", "sql01"]);
    assert_eq!(job["status"], "CompletedWithWarnings", "{job:#}");
    env.ok(&["verify"]);
    assert_eq!(env.json(&["points", "sql01"])[1]["damaged"], false);
    env.assert_restore_matches_source("sql01", &pb, "repaired");
}

#[test]
fn second_process_gets_the_owner_pid() {
    let env = Env::with_source("read_throughput_mib_s = 4");
    env.protect(&["app01"]);
    let mut child = env
        .std_cmd()
        .args(["backup", "app01"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_until(60, "the backup to start", || running_backup(&env).is_some());
    let (_, err) = env.fails_with(2, &["register", "sql01"]);
    assert!(err.contains(&format!("process {}", child.id())), "{err}");
    assert!(err.contains("in use"), "{err}");
    // Reading still works while the owner runs, and sees the running job.
    let running = env.json(&["jobs", "--status", "InProgress"]);
    assert_eq!(running.as_array().unwrap().len(), 1);
    // Ending the owner with a cancel from its own terminal is recorded as Cancelled.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGINT);
    }
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    let jobs = env.json(&["jobs", "--operation", "Backup"]);
    assert_eq!(jobs[0]["status"], "Cancelled", "{jobs:#}");
    // Nothing was committed by the cancelled backup.
    assert_eq!(env.json(&["points", "app01"]).as_array().unwrap().len(), 0);
}

#[test]
fn no_wait_returns_a_job_id_that_completes_in_the_background() {
    let env = Env::new();
    env.protect(&["app01"]);
    let out = env.ok(&["backup", "app01", "--no-wait"]);
    let id = out.trim().to_string();
    assert_eq!(id.len(), 36, "a job id: {out}");
    wait_until(120, "the background backup to complete", || {
        let out = env.run(&["job", &id, "--json"]);
        serde_json::from_slice::<Value>(&out.stdout)
            .map(|j| j["status"] == "Completed")
            .unwrap_or(false)
    });
    assert_eq!(env.json(&["points", "app01"]).as_array().unwrap().len(), 1);
}

#[test]
fn vault_files_are_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let env = Env::new();
    env.protect(&["app01"]);
    env.backup("app01");
    let vault = env.vault_dir("test-we");
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&vault), 0o700);
    assert_eq!(mode(&vault.join("catalog.db")), 0o600);
    for f in chunk_files(&vault.join("chunks")).iter().take(5) {
        assert_eq!(mode(f), 0o600, "{}", f.display());
    }
}

#[test]
fn cancel_from_another_shell_stops_a_background_backup() {
    let env = Env::with_source("read_throughput_mib_s = 4");
    env.protect(&["app01"]);
    let id = env.ok(&["backup", "app01", "--no-wait"]).trim().to_string();
    wait_until(60, "the backup to start", || running_backup(&env).is_some());
    let out = env.ok(&["cancel", &id]);
    assert!(out.contains(&id), "{out}");
    wait_until(60, "the backup to be cancelled", || {
        let out = env.run(&["job", &id, "--json"]);
        serde_json::from_slice::<Value>(&out.stdout)
            .map(|j| j["status"] == "Cancelled")
            .unwrap_or(false)
    });
    assert_eq!(env.json(&["points", "app01"]).as_array().unwrap().len(), 0);
    // Cancelling a finished job is refused as bad input.
    let (_, err) = env.fails_with(2, &["cancel", &id]);
    assert!(err.contains("not running"), "{err}");
}

#[test]
fn a_killed_restore_leaves_no_half_written_file_once_the_vault_reopens() {
    let env = Env::new();
    env.protect(&["app01"]);
    let point = env.backup("app01");
    let partials = |dir: &std::path::Path| -> Vec<std::path::PathBuf> {
        std::fs::read_dir(dir)
            .map(|rd| {
                rd.filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.to_string_lossy().contains("partial"))
                    .collect()
            })
            .unwrap_or_default()
    };
    // A restore takes a fraction of a second: kill restores until one dies while its image
    // is half-written (its `.partial` file exists).
    for attempt in 0..30 {
        let dir = env.path(&format!("r{attempt}"));
        // A relative folder, from the vault's folder: the cleanup below runs from another
        // working directory and must still find the file.
        let mut child = env
            .std_cmd()
            .current_dir(env.path(""))
            .args(["restore", "app01", "--point", &point, "--to"])
            .arg(format!("r{attempt}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let caught = loop {
            if !partials(&dir).is_empty() {
                child.kill().unwrap(); // SIGKILL
                child.wait().unwrap();
                break true;
            }
            if child.try_wait().unwrap().is_some() {
                break false;
            }
            std::thread::sleep(Duration::from_micros(200));
        };
        if !caught || partials(&dir).is_empty() {
            continue; // finished before the kill landed
        }
        // The restore reads Failed (interrupted) at once.
        let jobs = env.json(&["jobs", "--operation", "Restore", "--json"]);
        let job = jobs
            .as_array()
            .unwrap()
            .iter()
            .find(|j| j["status"] == "Failed")
            .cloned()
            .expect("the killed restore");
        assert_eq!(job["error"]["code"], "JobInterrupted", "{job:#}");
        // The next command that owns the vault removes what it left half-written (before,
        // a new restore into that folder was refused until the user removed it), and the
        // same folder takes a new restore, which completes.
        env.ok(&[
            "restore",
            "app01",
            "--point",
            &point,
            "--to",
            dir.to_str().unwrap(),
        ]);
        assert!(dir.join("app01-disk0.raw").exists());
        assert_eq!(partials(&dir), Vec::<std::path::PathBuf>::new());
        return;
    }
    panic!("no restore was caught half-way in 30 attempts");
}

/// A VM whose name looks like an option is a value, never an option, in the command line
/// `--no-wait` builds for its background process (`vmvault detached …`).
#[test]
fn no_wait_passes_a_vm_named_like_an_option_as_a_value() {
    let env = Env::with_config(|dir| {
        let sub = dir.join("subscription.toml");
        std::fs::write(
            &sub,
            "name = \"t\"\nseed = 1\norigin = \"2025-01-01\"\n\n[[vm]]\nname = \"--help\"\n\
             cloud_service = \"lab\"\nregion = \"westeurope\"\nos = \"Linux\"\n\
             size = \"Standard_B1s\"\npower_state = \"Running\"\n\
             disks = [ { capacity_gib = 1, allocated_mib = 8, content = \"os\" } ]\n",
        )
        .unwrap();
        format!(
            "[[vault]]\nname = \"v\"\nregion = \"westeurope\"\nsource = {{ {FAST_SIM}, subscription = \"{}\" }}\n",
            sub.display()
        )
    });
    env.ok(&["discover"]);
    env.ok(&["register", "--", "--help"]);
    env.ok(&["protect", "--policy", "DefaultPolicy", "--", "--help"]);
    let wait_completed = |id: &str| {
        wait_until(120, "the background job to complete", || {
            let out = env.run(&["job", id, "--json"]);
            serde_json::from_slice::<Value>(&out.stdout)
                .map(|j| j["status"] == "Completed")
                .unwrap_or(false)
        })
    };
    let out = env.ok(&["backup", "--no-wait", "--", "--help"]);
    let id = out.trim();
    assert_eq!(id.len(), 36, "a job id: {out}");
    wait_completed(id);
    let points: Value =
        serde_json::from_str(&env.ok(&["points", "--json", "--", "--help"])).unwrap();
    let point = points[0]["id"].as_str().expect("a point").to_string();
    let to = env.path("-restored");
    let out = env.ok(&[
        "restore",
        "--no-wait",
        "--point",
        &point,
        "--to",
        to.to_str().unwrap(),
        "--",
        "--help",
    ]);
    let id = out.trim();
    assert_eq!(id.len(), 36, "a job id: {out}");
    wait_completed(id);
    assert!(to.join("--help-disk0.raw").is_file());
}

/// SIGTERM and SIGHUP stop a command the way `vmvault cancel` does: the running job is
/// cancelled and recorded as Cancelled (not left for the next run to find interrupted),
/// nothing is committed, and the exit code is 3 (cancelled).
#[test]
fn sigterm_and_sighup_cancel_the_running_backup_cleanly() {
    let env = Env::with_source("read_throughput_mib_s = 4");
    env.protect(&["app01"]);
    for signal in [libc::SIGTERM, libc::SIGHUP] {
        let child = env
            .std_cmd()
            .args(["backup", "app01"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        wait_until(60, "the backup to start", || running_backup(&env).is_some());
        unsafe {
            libc::kill(child.id() as i32, signal);
        }
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "signal {signal}: {err}");
        assert!(err.contains("the job(s) were cancelled"), "{err}");
        let jobs = env.json(&["jobs", "--operation", "Backup"]);
        assert_eq!(jobs[0]["status"], "Cancelled", "{jobs:#}");
        assert_eq!(jobs[0]["error"]["code"], "OperationCancelled", "{jobs:#}");
    }
    assert_eq!(env.json(&["points", "app01"]).as_array().unwrap().len(), 0);
}

/// `vmvault run` stops on SIGTERM without starting anything: the scheduled backups it
/// runs are cancelled, and no clean-up (Prune, GarbageCollect) follows them.
#[test]
fn vmvault_run_stops_on_sigterm_without_starting_new_work() {
    let env = Env::new();
    env.protect(&["app01"]);
    // A point that expires in two days, so that a clean-up would have work after the
    // next backup; then the scheduled backup is due at once.
    let now = env.ok(&["sim", "now"]);
    let now = chrono::DateTime::parse_from_rfc3339(now.trim()).unwrap();
    let expiry = (now + chrono::Duration::days(2))
        .format("%Y-%m-%d")
        .to_string();
    env.ok(&["backup", "app01", "--retain-until", &expiry]);
    env.ok(&["sim", "advance", "5d", "--offline"]);
    // Slow snapshots from now on: the scheduled backup is running when the signal comes.
    let config = std::fs::read_to_string(&env.config).unwrap();
    std::fs::write(
        &env.config,
        config.replace("snapshot_latency_ms = 0", "snapshot_latency_ms = 600000"),
    )
    .unwrap();
    let child = env
        .std_cmd()
        .arg("run")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_until(60, "the scheduled backup to start", || {
        running_backup(&env).is_some()
    });
    let before = env.json(&["jobs"]).as_array().unwrap().len();
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    let jobs = env.json(&["jobs"]);
    let jobs = jobs.as_array().unwrap();
    assert_eq!(
        jobs.len(),
        before,
        "no job started after the signal: {jobs:#?}"
    );
    assert!(
        jobs.iter()
            .all(|j| j["status"] != "InProgress" && j["status"] != "Cancelling"),
        "{jobs:#?}"
    );
    assert_eq!(jobs[0]["operation"], "Backup", "{jobs:#?}");
    assert_eq!(jobs[0]["status"], "Cancelled", "{jobs:#?}");
}
