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
