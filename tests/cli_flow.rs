//! The portal flow from the command line, end to end on the simulated subscription
//! (issue 2's "done when").

mod common;
use common::*;
use serde_json::Value;

fn find<'a>(items: &'a Value, cs: &str, name: &str) -> &'a Value {
    items
        .as_array()
        .expect("array")
        .iter()
        .find(|i| i["cloud_service"] == cs && i["name"] == name)
        .unwrap_or_else(|| panic!("{cs}/{name} not in {items:#}"))
}

#[test]
fn scripted_flow_end_to_end() {
    let env = Env::new();
    // Before discovery nothing is known, and naming a VM says what to do.
    let (_, err) = env.fails_with(2, &["register", "web01"]);
    assert!(err.contains("vmvault discover"), "{err}");

    let d = env.json(&["discover"]);
    assert_eq!(d["job"]["operation"], "Discover");
    assert_eq!(d["job"]["status"], "Completed");
    assert!(d["found"].as_u64().unwrap() >= 12, "{d:#}");

    let items = env.json(&["items"]);
    let web = find(&items, "sales", "web01");
    for key in [
        "id",
        "name",
        "cloud_service",
        "region",
        "os",
        "power_state",
        "registration_state",
        "protection_state",
        "policy",
        "last_backup_time",
        "last_backup_status",
    ] {
        assert!(web.get(key).is_some(), "items JSON lacks {key}: {web:#}");
    }
    assert_eq!(web["registration_state"], "NotRegistered");
    assert_eq!(web["protection_state"], "NotProtected");

    // Two VMs are named web01: the bare name is ambiguous and the error lists both.
    let (_, err) = env.fails_with(2, &["register", "web01"]);
    assert!(
        err.contains("sales/web01") && err.contains("hr/web01"),
        "{err}"
    );

    env.ok(&["register", "sales/web01", "app01"]);
    let items = env.json(&["items"]);
    assert_eq!(
        find(&items, "sales", "web01")["registration_state"],
        "Registered"
    );
    assert_eq!(
        find(&items, "hr", "web01")["registration_state"],
        "NotRegistered"
    );

    env.ok(&[
        "protect",
        "sales/web01",
        "app01",
        "--policy",
        "DefaultPolicy",
    ]);
    let items = env.json(&["items"]);
    let web = find(&items, "sales", "web01");
    assert_eq!(web["protection_state"], "IRPending");
    assert_eq!(web["policy"], "DefaultPolicy");

    // Back up now, with a retain-until date.
    let job = env.json(&["backup", "sales/web01", "--retain-until", "2099-01-31"]);
    assert_eq!(job["status"], "Completed", "{job:#}");
    assert_eq!(job["operation"], "Backup");
    assert_eq!(job["tasks"][0]["name"], "Take snapshot");
    assert_eq!(job["tasks"][1]["name"], "Transfer data to vault");
    assert_eq!(job["progress"], 100.0);
    assert!(job["bytes_total"].as_u64().unwrap() > 0);
    let point = job["details"]["recovery_point"]
        .as_str()
        .unwrap()
        .to_string();

    let items = env.json(&["items"]);
    let web = find(&items, "sales", "web01");
    assert_eq!(web["protection_state"], "Protected");
    assert_eq!(web["last_backup_status"], "Completed");

    let points = env.json(&["points", "sales/web01"]);
    let p = &points[0];
    assert_eq!(p["id"], point.as_str());
    assert_eq!(p["kind"], "on_demand");
    assert!(
        p["expiry"].as_str().unwrap().starts_with("2099-01-31"),
        "{p:#}"
    );
    for key in [
        "id",
        "item",
        "time",
        "expiry",
        "kind",
        "consistency",
        "logical_bytes",
        "stored_bytes",
    ] {
        assert!(p.get(key).is_some(), "points JSON lacks {key}");
    }

    // The job is listed and readable by id (and by a prefix).
    let jobs = env.json(&["jobs", "--operation", "Backup"]);
    assert_eq!(jobs.as_array().unwrap().len(), 1);
    let id = jobs[0]["id"].as_str().unwrap();
    let one = env.json(&["job", &id[..8]]);
    assert_eq!(one["id"], id);
    for key in [
        "id",
        "operation",
        "item",
        "status",
        "start_time",
        "end_time",
        "duration_seconds",
        "progress",
        "bytes_done",
        "bytes_total",
        "tasks",
        "error",
    ] {
        assert!(one.get(key).is_some(), "job JSON lacks {key}");
    }
    // JSON keeps raw details; the text says them in words and sizes.
    assert!(one["details"]["bytes_read"].is_u64(), "{one:#}");
    let text = env.ok(&["job", id]);
    assert!(text.contains("\n  Bytes read "), "{text}");
    assert!(!text.contains("bytes_read"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("  Logical bytes") && l.ends_with("iB")),
        "{text}"
    );

    // Restore is bit-identical to what the simulated disk held at the point's time.
    env.assert_restore_matches_source("sales/web01", &point, "a");

    // A second backup is incremental and also restores exactly.
    let p2 = env.backup("sales/web01");
    env.assert_restore_matches_source("sales/web01", &p2, "b");

    // The dashboard counts agree with the job list of the last 24 hours.
    let s = env.json(&["summary"]);
    assert_eq!(s["protected"], 2);
    assert_eq!(s["registered"], 2);
    let jobs = env.json(&["jobs", "--since", "24h"]);
    let count = |st: &[&str]| {
        jobs.as_array()
            .unwrap()
            .iter()
            .filter(|j| st.contains(&j["status"].as_str().unwrap()))
            .count() as u64
    };
    assert_eq!(
        s["jobs_24h"]["completed"].as_u64().unwrap(),
        count(&["Completed", "CompletedWithWarnings"])
    );
    assert_eq!(
        s["jobs_24h"]["failed"].as_u64().unwrap(),
        count(&["Failed"])
    );
    assert_eq!(
        s["jobs_24h"]["in_progress"].as_u64().unwrap(),
        count(&["InProgress", "Cancelling"])
    );
    assert!(s["jobs_24h"]["completed"].as_u64().unwrap() >= 8);

    env.ok(&["verify", "sales/web01"]);

    // Stop protection keeping data, resume, stop deleting data, undelete.
    env.ok(&["stop-protection", "sales/web01", "--retain-data"]);
    let web = find(&env.json(&["items"]), "sales", "web01").clone();
    assert_eq!(web["protection_state"], "ProtectionStopped");
    let (_, err) = env.fails_with(2, &["backup", "sales/web01"]);
    assert!(err.contains("resume"), "{err}");
    assert!(env
        .json(&["points", "sales/web01"])
        .as_array()
        .unwrap()
        .iter()
        .all(|p| p["expiry"].is_null()));
    env.ok(&[
        "resume-protection",
        "sales/web01",
        "--policy",
        "DefaultPolicy",
    ]);
    assert_eq!(
        find(&env.json(&["items"]), "sales", "web01")["protection_state"],
        "Protected"
    );
    env.ok(&["stop-protection", "sales/web01", "--delete-data"]);
    assert_eq!(
        find(&env.json(&["items"]), "sales", "web01")["protection_state"],
        "SoftDeleted"
    );
    // Soft-deleted data is restored only after an undelete.
    let point = env.json(&["points", "sales/web01"])[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let to = env.path("soft-deleted-restore");
    let (_, err) = env.fails_with(
        2,
        &[
            "restore",
            "sales/web01",
            "--point",
            &point,
            "--to",
            common::s(&to),
        ],
    );
    assert!(
        err.contains("soft-deleted") && err.contains("vmvault undelete sales/web01"),
        "{err}"
    );
    assert!(!to.exists());
    env.ok(&["undelete", "sales/web01"]);
    assert_eq!(
        find(&env.json(&["items"]), "sales", "web01")["protection_state"],
        "ProtectionStopped"
    );
    // Points survived all of it.
    assert_eq!(
        env.json(&["points", "sales/web01"])
            .as_array()
            .unwrap()
            .len(),
        2
    );
    env.assert_restore_matches_source("sales/web01", &point, "c");
}

#[test]
fn registering_a_vm_of_another_region_is_refused_and_changes_nothing() {
    let env = Env::new();
    env.ok(&["discover"]);
    let before = env.json(&["items"]);
    let jobs_before = env.json(&["jobs"]);
    let (_, err) = env.fails_with(2, &["register", "shop01"]);
    assert!(
        err.contains("eastus") && err.contains("westeurope"),
        "{err}"
    );
    assert!(
        err.contains("test-eus"),
        "should point at the vault of that region: {err}"
    );
    assert_eq!(env.json(&["items"]), before);
    assert_eq!(env.json(&["jobs"]), jobs_before);
    // The vault of that region takes it.
    env.ok(&["--vault", "test-eus", "discover"]);
    env.ok(&["--vault", "test-eus", "register", "shop01"]);
}

#[test]
fn failing_vm_reports_error_details_and_exit_1() {
    let env = Env::new();
    let items = {
        env.ok(&["discover"]);
        env.json(&["items"])
    };
    // The subscription has one VM whose backups fail with a realistic error.
    let failing = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/assets/subscription.toml"
    ))
    .unwrap();
    let _ = failing;
    let names: Vec<(String, String)> = items
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["region"] == "westeurope")
        .map(|i| {
            (
                i["cloud_service"].as_str().unwrap().to_string(),
                i["name"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let mut saw_failure = false;
    for (cs, name) in names {
        let q = format!("{cs}/{name}");
        env.ok(&["register", &q]);
        env.ok(&["protect", &q, "--policy", "DefaultPolicy"]);
        let out = env.run(&["backup", &q, "--json"]);
        let job: Value = serde_json::from_slice(&out.stdout).unwrap();
        if job["status"] == "Failed" {
            assert_eq!(out.status.code(), Some(1));
            let e = &job["error"];
            assert!(!e["code"].as_str().unwrap().is_empty());
            assert!(!e["message"].as_str().unwrap().is_empty());
            assert!(
                !e["recommendations"].as_array().unwrap().is_empty(),
                "{e:#}"
            );
            let item = find(&env.json(&["items"]), &cs, &name).clone();
            assert_eq!(item["protection_state"], "ProtectionError");
            assert_eq!(item["last_backup_status"], "Failed");
            assert_eq!(env.json(&["summary"])["needs_attention"], 1);
            saw_failure = true;
        } else {
            assert_eq!(out.status.code(), Some(0));
        }
    }
    assert!(saw_failure, "one VM of westeurope should fail its backups");
}

#[test]
fn broken_config_names_file_and_line() {
    let env = Env::new();
    let bad = env.path("bad.toml");
    std::fs::write(&bad, "[engine]\nmax_concurrent_jobs = 2\n\n[[vault]]\nname = \"x\"\nregion = \"westeurope\"\nchunk_size_kib = \"large\"\nsource = { kind = \"simulated\" }\n").unwrap();
    let out = env
        .cmd()
        .arg("--config")
        .arg(&bad)
        .arg("items")
        .output()
        .unwrap();
    // The later --config wins over the one Env adds.
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains(&format!("{}:7", bad.display())), "{err}");
    assert!(err.contains("expected"), "{err}");

    std::fs::write(&bad, "[[vault]]\nname = \"x\"\nregion = \"westeurope\"\nsource = { kind = \"simulated\", discovery_latency = 3 }\n").unwrap();
    let out = env
        .cmd()
        .arg("--config")
        .arg(&bad)
        .arg("items")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains(":4") && err.contains("discovery_latency"),
        "{err}"
    );
}

#[test]
fn bad_input_is_exit_2_with_guidance() {
    let env = Env::new();
    env.protect(&["app01"]);
    let (_, err) = env.fails_with(2, &["backup", "app01", "--retain-until", "yesterday"]);
    assert!(err.contains("YYYY-MM-DD"), "{err}");
    let (_, err) = env.fails_with(2, &["backup", "app01", "--retain-until", "2001-01-01"]);
    assert!(err.contains("not in the future"), "{err}");
    let (_, err) = env.fails_with(2, &["protect", "sql01", "--policy", "DefaultPolicy"]);
    assert!(
        err.contains("not registered") && err.contains("vmvault register"),
        "{err}"
    );
    let (_, err) = env.fails_with(2, &["protect", "app01", "--policy", "Nope"]);
    assert!(
        err.contains("no policy named") && err.contains("DefaultPolicy"),
        "{err}"
    );
    let (_, err) = env.fails_with(2, &["jobs", "--status", "Done"]);
    assert!(err.contains("InProgress"), "{err}");
    let (_, err) = env.fails_with(2, &["job", "00000000-dead"]);
    assert!(err.contains("no job"), "{err}");
    let (_, err) = env.fails_with(
        2,
        &["restore", "app01", "--point", "dead00", "--to", "/tmp/x"],
    );
    assert!(err.contains("no recovery point"), "{err}");
    for offline in [false, true] {
        let mut args = vec!["sim", "advance", "40000d"];
        if offline {
            args.push("--offline");
        }
        let (_, err) = env.fails_with(2, &args);
        assert!(err.contains("at most 100 years"), "{args:?}: {err}");
    }
}

/// Polls the jobs list until a job of `operation` is running and has moved data; its id.
fn running_job(env: &Env, operation: &str) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let out = env.run(&[
            "jobs",
            "--operation",
            operation,
            "--status",
            "InProgress",
            "--json",
        ]);
        let jobs: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        if let Some(j) = jobs.as_array().and_then(|a| a.first()) {
            if j["bytes_done"].as_u64().unwrap_or(0) > 0 {
                return j["id"].as_str().unwrap().to_string();
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no {operation} job started"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// A cancelled job did not do what was asked: `backup` and `job ID --wait` exit 3 (not 0,
/// which scripts take for success), as `--help` says.
#[test]
fn a_cancelled_backup_exits_3_and_so_does_job_wait() {
    let env = Env::with_source("read_throughput_mib_s = 4");
    env.protect(&["app01"]);
    let backup = env
        .std_cmd()
        .args(["backup", "app01"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let id = running_job(&env, "Backup");
    // Cancelled once it has stored chunks: they go with it.
    let chunks = env.vault_dir("test-we").join("chunks");
    let t0 = std::time::Instant::now();
    while files_under(&chunks).is_empty() {
        assert!(t0.elapsed().as_secs() < 60, "the backup stored nothing");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let waiter = env
        .std_cmd()
        .args(["job", &id, "--wait"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    env.ok(&["cancel", &id]);
    let out = backup.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("Cancelled"));
    assert_eq!(waiter.wait_with_output().unwrap().status.code(), Some(3));
    let left = files_under(&chunks);
    assert!(
        left.is_empty(),
        "a cancelled backup left {} chunk file(s)",
        left.len()
    );
    // On a job that has ended: --wait gives its outcome, a plain look succeeds.
    env.fails_with(3, &["job", &id, "--wait"]);
    env.ok(&["job", &id]);
    let help = env.ok(&["--help"]);
    assert!(help.contains("3 a job was cancelled"), "{help}");
}

/// Numbers too large for any date, in every argument that takes a period, a time, a date or
/// a count: a usage error (exit 2) that says the bound, never a panic (exit 101).
#[test]
fn huge_numbers_are_usage_errors_not_panics() {
    let env = Env::new();
    env.protect(&["app01"]);
    let cases: &[(&[&str], &str)] = &[
        (&["jobs", "--since", "9999999999d"], "at most 100 years"),
        (&["jobs", "--since", "300000y"], "at most 100 years"),
        (&["jobs", "--since", "999999999999h"], "at most 100 years"),
        (&["jobs", "--since", "99999999999w"], "at most 100 years"),
        (&["jobs", "--since", "+99999-01-01"], "years 1 to 9999"),
        (&["sim", "advance", "99999999999999d"], "at most 100 years"),
        (
            &["sim", "advance", "99999999999999999999999s"],
            "at most 100 years",
        ),
        (&["jobs", "--limit", "99999999999999999999"], "--limit"),
        (
            &["backup", "app01", "--retain-until", "+99999-12-31"],
            "years 1 to 9999",
        ),
        (
            &["backup", "app01", "--retain-until", "9999-12-31"],
            "99 years",
        ),
        (
            &["policy", "preview", "DefaultPolicy", "--from", "9999-12-01"],
            "year 9999",
        ),
        (
            &[
                "policy",
                "preview",
                "DefaultPolicy",
                "--from",
                "+10000-01-01",
            ],
            "years 1 to 9999",
        ),
        (
            &[
                "policy",
                "preview",
                "DefaultPolicy",
                "--days",
                "99999999999",
            ],
            "--days",
        ),
        (
            &[
                "sim",
                "export-disk",
                "app01",
                "--at",
                "+99999-01-01",
                "--to",
                "/tmp/x",
            ],
            "years 1 to 9999",
        ),
        (
            &[
                "sim",
                "export-disk",
                "app01",
                "--at",
                "9999-01-01",
                "--to",
                "/tmp/x",
            ],
            "after the simulated clock",
        ),
        (
            &[
                "sim",
                "export-disk",
                "app01",
                "--disk",
                "99999999999",
                "--to",
                "/tmp/x",
            ],
            "--disk",
        ),
    ];
    for (args, says) in cases {
        let (_, err) = env.fails_with(2, args);
        assert!(err.contains(says), "{args:?}: {err}");
    }
    // Many advances cannot take the clock past 9999 either: the 80th century-long one stops.
    let refused = (0..85).find_map(|_| {
        let out = env.run(&["sim", "advance", "36500d", "--offline"]);
        (out.status.code() != Some(0)).then_some(out)
    });
    let out = refused.expect("the clock went past the year 9999");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("past the year 9999"));
    let now = env.ok(&["sim", "now"]);
    assert!(now.starts_with("99"), "{now}");
    env.ok(&["jobs"]);
}

/// One rule for ids typed on the command line, jobs and recovery points alike: the whole
/// id or at least 4 of its first characters; an empty one is refused.
#[test]
fn job_and_point_ids_follow_one_rule() {
    let env = Env::new();
    env.protect(&["app01"]);
    let point = env.backup("app01");
    let job = env.json(&["jobs", "--limit", "1"])[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let to = env.path("restored");
    let to = to.to_str().unwrap();
    for short in ["", "  ", &point[..1], &point[..3]] {
        let (_, err) = env.fails_with(2, &["restore", "app01", "--point", short, "--to", to]);
        assert!(err.contains("at least 4 characters"), "{short:?}: {err}");
        let (_, err) = env.fails_with(2, &["job", short]);
        assert!(err.contains("at least 4 characters"), "{short:?}: {err}");
    }
    let (_, err) = env.fails_with(2, &["job", "zzzz"]);
    assert!(err.contains("hex digits"), "{err}");
    env.ok(&["job", &job[..4]]);
    env.ok(&["restore", "app01", "--point", &point[..4], "--to", to]);
}

/// STORED of a point is what it holds beyond the point before it (the oldest: all it
/// holds), so it stays true when a prune removes the point before it: the points of the
/// only item add up to the whole store before and after.
#[test]
fn points_stored_stays_true_after_a_prune_and_damage_shows_in_the_table() {
    let env = Env::new();
    env.protect(&["app01"]);
    let stored = |env: &Env| -> (u64, Vec<u64>) {
        let total = env.json(&["summary"])["storage"]["stored_bytes"]
            .as_u64()
            .unwrap();
        let points = env.json(&["points", "app01"]);
        let each = points
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["stored_bytes"].as_u64().unwrap())
            .collect();
        (total, each)
    };
    let soon = |env: &Env, days: i64| {
        let now = chrono::DateTime::parse_from_rfc3339(env.ok(&["sim", "now"]).trim()).unwrap();
        (now + chrono::Duration::days(days))
            .format("%Y-%m-%d")
            .to_string()
    };
    env.ok(&["backup", "app01", "--retain-until", &soon(&env, 2)]);
    env.ok(&["sim", "advance", "1d", "--offline"]);
    env.ok(&["backup", "app01"]);
    let (total, each) = stored(&env);
    assert_eq!(each.len(), 2);
    assert_eq!(each.iter().sum::<u64>(), total, "{each:?}");

    // The first point expires and is pruned; its chunks the second point needs stay.
    env.ok(&["sim", "advance", "3d", "--offline"]);
    env.ok(&["prune"]);
    env.ok(&["gc"]);
    let (total, each) = stored(&env);
    assert_eq!(
        each,
        vec![total],
        "the remaining point holds the whole store"
    );

    // Damage shows in the table, not only in --json.
    let table = env.ok(&["points", "app01"]);
    assert!(table.lines().next().unwrap().contains("DAMAGED"), "{table}");
    assert!(
        table.lines().nth(1).unwrap().trim_end().ends_with("no"),
        "{table}"
    );
    let chunks = env.vault_dir("test-we").join("chunks");
    std::fs::remove_dir_all(&chunks).unwrap();
    std::fs::create_dir(&chunks).unwrap();
    env.fails_with(1, &["verify"]);
    let table = env.ok(&["points", "app01"]);
    assert!(table.lines().nth(1).unwrap().contains("yes"), "{table}");
}

/// Every job that starts is logged as finished, exactly once, also when the process exits
/// as soon as it has printed the result.
#[test]
fn every_job_end_is_logged_once() {
    let env = Env::new();
    env.protect(&["app01", "sql01"]);
    for _ in 0..4 {
        env.ok(&["backup", "app01"]);
        env.ok(&["backup", "sql01"]);
    }
    env.ok(&["verify"]);
    env.ok(&["prune"]);
    env.ok(&["gc"]);
    let log = std::fs::read_to_string(env.data.join("vmvault.log")).unwrap();
    let ids = |what: &str| -> Vec<String> {
        let mut v: Vec<String> = log
            .lines()
            .filter(|l| l.contains(what))
            .filter_map(|l| l.split("job=").nth(1))
            .map(|rest| rest.split_whitespace().next().unwrap().to_string())
            .collect();
        v.sort();
        v
    };
    let started = ids("job started");
    assert!(started.len() >= 14, "{log}");
    assert_eq!(ids("job finished"), started, "{log}");
}

/// Names from outside (here an image file's name) with line breaks and terminal escapes
/// are shown escaped: in tables, in messages and in the log.
#[test]
fn control_characters_in_names_are_escaped_everywhere() {
    if !require_tool("qemu-img") {
        return;
    }
    let env = Env::with_config(|dir| {
        let images = dir.join("imgs");
        std::fs::create_dir(&images).unwrap();
        let f = std::fs::File::create(images.join("evil\u{1b}[2J\nvm.raw")).unwrap();
        f.set_len(1 << 20).unwrap();
        format!(
            "[[vault]]\nname = \"lab\"\nregion = \"lab-1\"\nsource = {{ kind = \"images\", path = \"{}\", region = \"lab-1\" }}\n",
            images.display()
        )
    });
    env.ok(&["discover"]);
    let items = env.ok(&["items"]);
    assert!(!items.contains('\u{1b}'), "{items:?}");
    assert!(items.contains("evil\\u{1b}[2J\\nvm"), "{items}");
    assert_eq!(items.lines().count(), 2, "one header, one row: {items}");
    let (_, err) = env.fails_with(2, &["register", "evil\u{1b}[2J\nnone"]);
    assert!(
        !err.contains('\u{1b}') && err.contains("evil\\u{1b}[2J\\nnone"),
        "{err:?}"
    );
    env.ok(&["register", "evil\u{1b}[2J\nvm"]);
    let log = std::fs::read_to_string(env.data.join("vmvault.log")).unwrap();
    assert!(!log.contains('\u{1b}'), "{log:?}");
    assert!(
        log.lines()
            .all(|l| l.starts_with(|c: char| c.is_ascii_digit())),
        "a line of the log does not start with its time: {log}"
    );
}

/// Limits of one operation are stated, with whose they are: protect stops at Azure
/// Backup's 100 VMs per operation, register at 1000.
#[test]
fn register_and_protect_state_their_limits() {
    let env = Env::with_source("generate_vms = 1010");
    env.ok(&["discover"]);
    let names: Vec<String> = (1..=1001).map(|i| format!("vm-{i:05}")).collect();
    let mut args = vec!["protect"];
    args.extend(names[..101].iter().map(String::as_str));
    args.extend(["--policy", "DefaultPolicy"]);
    let (_, err) = env.fails_with(2, &args);
    assert!(
        err.contains("at most 100") && err.contains("Azure Backup"),
        "{err}"
    );
    let mut args = vec!["register"];
    args.extend(names.iter().map(String::as_str));
    let (_, err) = env.fails_with(2, &args);
    assert!(err.contains("at most 1000"), "{err}");
    let help = env.ok(&["help", "protect"]);
    assert!(help.contains("at most 100"), "{help}");
}

/// Bad input files (`tests/fixtures/bad/`), each with the words its error must have (the
/// file, the line, the key, what is allowed): every one is exit 2 with a short message.
/// Besides them, files that are not files (a device, a FIFO) and files too large.
#[test]
fn bad_input_files_each_give_their_error() {
    let env = Env::new();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/bad");
    let cases: &[(&str, &[&str])] = &[
        (
            "config/chunk-size.toml",
            &[":4:", "chunk_size_kib", "power of two"],
        ),
        (
            "config/compression.toml",
            &[":4:", "compression_level", "1..=19"],
        ),
        (
            "config/default-vault.toml",
            &[":1:", "default_vault", "nope"],
        ),
        (
            "config/duplicate-vault.toml",
            &[":7:", "vault.name", "twice"],
        ),
        ("config/empty-data-dir.toml", &[":1:", "data_dir is empty"]),
        ("config/empty-log-file.toml", &[":1:", "log_file is empty"]),
        ("config/empty-storage.toml", &[":4:", "storage is empty"]),
        (
            "config/gc-grace-too-long.toml",
            &[":4:", "gc_grace_minutes", "a year"],
        ),
        (
            "config/huge-vault-name.toml",
            &[":2:", "vault.name", "more characters", "1 to 50"],
        ),
        ("config/no-vault.toml", &["no [[vault]]"]),
        ("config/not-toml.toml", &[":4:", "expected `}`"]),
        (
            "config/sim-latency.toml",
            &[":4:", "snapshot_latency_ms", "0 to 600000"],
        ),
        (
            "config/sim-setting.toml",
            &[":4:", "failure_probability", "0 to 1"],
        ),
        ("config/threads.toml", &[":2:", "engine.threads", "256"]),
        ("config/unknown-key.toml", &[":3:", "threds", "expected"]),
        (
            "config/unknown-source.toml",
            &[":4:", "vmware", "simulated"],
        ),
        ("config/vault-name.toml", &[":2:", "vault.name", "my vault"]),
        (
            "config/wrong-type.toml",
            &[":4:", "invalid type", "expected u32"],
        ),
        (
            "policy/daily-zero.toml",
            &["line 6", "retention.daily.days", "1..=9999"],
        ),
        (
            "policy/huge-name.toml",
            &["line 1", "name", "more characters", "1 to 100"],
        ),
        (
            "policy/huge-number.toml",
            &["line 6", "retention.daily.days"],
        ),
        ("policy/not-toml.toml", &["line 2", "toml"]),
        (
            "policy/time-zone.toml",
            &["line 2", "time_zone", "Mars/Olympus", "IANA"],
        ),
        ("policy/time.toml", &["line 4", "schedule.time", "25:00"]),
        ("policy/unknown-key.toml", &["line 2", "colour"]),
        (
            "policy/weekly-without-days.toml",
            &["line 2", "schedule.days", "weekdays"],
        ),
        (
            "azure/daily-zero.json",
            &["dailySchedule.retentionDuration.count", "1..=9999"],
        ),
        (
            "azure/duplicate-key.json",
            &["line 8", "\"timeZone\" appears twice"],
        ),
        (
            "azure/foreign-offset.json",
            &["scheduleRunTimes", "+05:30", "America/Los_Angeles", "12:30"],
        ),
        (
            "azure/hourly.json",
            &["scheduleRunFrequency", "Hourly", "Daily"],
        ),
        (
            "azure/many-bad-days.json",
            &["100 problems", "scheduleRunDays", "… and 80 more"],
        ),
        ("azure/no-properties.json", &["properties"]),
        ("azure/not-json.json", &["line 4", "json"]),
        (
            "azure/not-vm.json",
            &["backupManagementType", "AzureIaasVM"],
        ),
        ("azure/time-zone.json", &["timeZone", "Mars Standard Time"]),
        ("azure/utf16.json", &["UTF-16", "save it as UTF-8"]),
    ];
    let run = |file: &std::path::Path| -> String {
        let f = file.to_str().unwrap();
        let kind = file
            .parent()
            .unwrap()
            .file_name()
            .unwrap()
            .to_str()
            .unwrap();
        let args: Vec<&str> = match kind {
            "config" => vec!["--config", f, "items"],
            "policy" => vec!["policy", "create", "--file", f],
            _ => vec!["policy", "import", f],
        };
        let (_, err) = env.fails_with(2, &args);
        assert!(
            err.len() < 4000,
            "{} gave a {} byte message",
            file.display(),
            err.len()
        );
        err
    };
    let mut covered = 0;
    for (name, words) in cases {
        let file = dir.join(name);
        let err = run(&file);
        let file_name = file.file_name().unwrap().to_str().unwrap();
        assert!(
            err.contains(file_name),
            "{name}: the error names no file: {err}"
        );
        for w in *words {
            assert!(err.contains(w), "{name}: no {w:?} in {err}");
        }
        covered += 1;
    }
    let on_disk: usize = ["config", "policy", "azure"]
        .iter()
        .map(|k| std::fs::read_dir(dir.join(k)).unwrap().count())
        .sum();
    assert_eq!(covered, on_disk, "every fixture has its expected error");

    // Not files, and files over the limit: refused at once, with the reason.
    let fifo = env.path("policy.fifo");
    sh("mkfifo", &[fifo.to_str().unwrap()]);
    let big = env.path("big.json");
    std::fs::File::create(&big)
        .unwrap()
        .set_len(5 << 20)
        .unwrap();
    let sub = env.path("sub.toml");
    std::fs::write(
        &sub,
        "[[vault]]\nname = \"v\"\nregion = \"westeurope\"\nsource = { kind = \"simulated\", subscription = \"/dev/zero\" }\n",
    )
    .unwrap();
    let specials: &[(&[&str], &str)] = &[
        (&["--config", "/dev/zero", "items"], "not a regular file"),
        (
            &["policy", "create", "--file", "/dev/zero"],
            "not a regular file",
        ),
        (
            &["policy", "create", "--file", fifo.to_str().unwrap()],
            "FIFO",
        ),
        (&["policy", "import", big.to_str().unwrap()], "too large"),
        (&["policy", "import", "/dev/urandom"], "not a regular file"),
        (
            &["--config", sub.to_str().unwrap(), "items"],
            "subscription file /dev/zero",
        ),
    ];
    for (args, says) in specials {
        let (_, err) = env.fails_with(2, args);
        assert!(err.contains(says), "{args:?}: {err}");
    }
}

/// An environment variable of a global flag set but empty counts as unset; an empty value
/// on the command line is refused.
#[test]
fn empty_environment_variables_count_as_unset_and_empty_flags_are_refused() {
    let env = Env::new();
    let mut cmd = assert_cmd::Command::cargo_bin("vmvault").unwrap();
    let out = cmd
        .env("VMVAULT_CONFIG", &env.config)
        .env("VMVAULT_DATA_DIR", "")
        .env("VMVAULT_VAULT", "")
        .env("XDG_DATA_HOME", env.path("xdg"))
        .args(["vaults", "--json"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    let vaults: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(vaults[0]["name"], "test-we", "{vaults:#}");
    let (_, err) = env.fails_with(2, &["--data-dir", "", "vaults"]);
    assert!(err.contains("empty path"), "{err}");
}
