//! Backup policies from the command line: files, validation, Azure import, preview, and
//! preview agreeing with what simulated time leaves behind (issue 3).

mod common;
use common::*;
use serde_json::Value;

const GOLD: &str = r#"
name = "Gold"
time_zone = "Europe/Berlin"
[schedule]
frequency = "daily"
time = "22:30"
[retention.daily]
days = 30
[retention.weekly]
weeks = 104
days_of_week = ["Sunday"]
[retention.monthly]
months = 120
weeks_of_month = ["Last"]
days_of_week = ["Sunday"]
[retention.yearly]
years = 99
months_of_year = ["January"]
weeks_of_month = ["First"]
days_of_week = ["Sunday"]
"#;

fn write(env: &Env, name: &str, text: &str) -> String {
    let p = env.path(name);
    std::fs::write(&p, text).unwrap();
    p.to_str().unwrap().to_string()
}

#[test]
fn create_show_update_delete() {
    let env = Env::new();
    let list = env.json(&["policy", "list"]);
    assert_eq!(list[0]["name"], "DefaultPolicy");
    assert_eq!(list[0]["builtin"], true);

    let gold = write(&env, "gold.toml", GOLD);
    env.ok(&["policy", "create", "--file", &gold]);
    let show = env.json(&["policy", "show", "Gold"]);
    assert_eq!(show["time_zone"], "Europe/Berlin");
    assert_eq!(show["schedule"]["time"], "22:30");
    assert_eq!(show["retention"]["monthly"]["months"], 120);
    let words = env.ok(&["policy", "show", "Gold"]);
    assert!(
        words.contains("22:30") && words.contains("Europe/Berlin"),
        "{words}"
    );
    assert!(words.to_lowercase().contains("last sunday"), "{words}");

    // Creating it twice is refused.
    let (_, err) = env.fails_with(2, &["policy", "create", "--file", &gold]);
    assert!(err.contains("exists already"), "{err}");

    // In use: delete refused; update re-evaluates existing points.
    env.protect(&["app01"]);
    env.ok(&["stop-protection", "app01", "--retain-data"]);
    env.ok(&["resume-protection", "app01", "--policy", "Gold"]);
    // Stopped again: a backup is refused in plain words, suggesting the policy it had.
    env.ok(&["stop-protection", "app01", "--retain-data"]);
    let (_, err) = env.fails_with(2, &["backup", "app01"]);
    assert!(
        err.contains("cannot back up sales/app01: its protection is stopped")
            && err.contains("`vmvault resume-protection sales/app01 --policy Gold`"),
        "{err}"
    );
    env.ok(&["resume-protection", "app01", "--policy", "Gold"]);
    let (_, err) = env.fails_with(2, &["policy", "delete", "Gold"]);
    assert!(
        err.contains("used by") && err.contains("sales/app01"),
        "{err}"
    );
    let shorter = write(&env, "gold2.toml", &GOLD.replace("days = 30", "days = 7"));
    let out = env.json(&["policy", "update", "Gold", "--file", &shorter]);
    assert_eq!(out["policy"]["retention"]["daily"]["days"], 7);
    let (_, err) = env.fails_with(2, &["policy", "delete", "DefaultPolicy"]);
    assert!(err.contains("used by") || err.contains("built in"), "{err}");
    env.ok(&["stop-protection", "app01", "--delete-data"]);
    env.ok(&["policy", "delete", "Gold"]);
    assert!(env
        .json(&["policy", "list"])
        .as_array()
        .unwrap()
        .iter()
        .all(|p| p["name"] != "Gold"));
}

#[test]
fn validation_errors_name_field_given_and_allowed() {
    let env = Env::new();
    let bad = write(
        &env,
        "bad.toml",
        "name = \"Bad\"\n[schedule]\nfrequency = \"weekly\"\ntime = \"22:30\"\ndays = [\"Sunday\"]\n[retention.daily]\ndays = 0\n[retention.weekly]\nweeks = 4\ndays_of_week = [\"Monday\"]\n",
    );
    let (_, err) = env.fails_with(2, &["policy", "create", "--file", &bad]);
    assert!(
        err.contains("retention.daily"),
        "weekly schedule with a daily rule: {err}"
    );
    assert!(
        err.contains("Monday"),
        "weekly rule on a day that is not scheduled: {err}"
    );
    let no_month = write(
        &env,
        "nomonth.toml",
        "name = \"Y\"\n[schedule]\nfrequency = \"daily\"\ntime = \"01:00\"\n[retention.daily]\ndays = 7\n[retention.yearly]\nyears = 2\nmonths_of_year = []\ndays_of_month = [1]\n",
    );
    let (_, err) = env.fails_with(2, &["policy", "create", "--file", &no_month]);
    assert!(err.contains("months_of_year"), "{err}");
    let typo = write(
        &env,
        "typo.toml",
        "name = \"T\"\n[schedule]\nfrequncy = \"daily\"\n",
    );
    let (_, err) = env.fails_with(2, &["policy", "create", "--file", &typo]);
    assert!(err.contains("frequncy") && err.contains(":3"), "{err}");
    // Nothing was created.
    assert_eq!(env.json(&["policy", "list"]).as_array().unwrap().len(), 1);
}

fn azure_body(file: &str) -> String {
    let path = format!(
        "{}/tests/fixtures/azure-rest/{file}",
        env!("CARGO_MANIFEST_DIR")
    );
    let v: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    serde_json::to_string_pretty(&v["responses"]["200"]["body"]).unwrap()
}

#[test]
fn azure_policies_import_with_their_schedule_and_rules() {
    let env = Env::new();
    let complex = write(
        &env,
        "complex.json",
        &azure_body("ProtectionPolicies_CreateOrUpdate_Complex.json"),
    );
    env.ok(&["policy", "import", &complex]);
    let p = env.json(&["policy", "show", "testPolicy1"]);
    assert_eq!(p["time_zone"], "America/Los_Angeles");
    assert_eq!(p["schedule"]["frequency"], "weekly");
    assert_eq!(p["schedule"]["time"], "10:00");
    assert_eq!(
        p["schedule"]["days"],
        serde_json::json!(["Monday", "Wednesday", "Thursday"])
    );
    assert_eq!(p["retention"]["weekly"]["weeks"], 1);
    assert_eq!(p["retention"]["monthly"]["months"], 2);
    assert_eq!(
        p["retention"]["monthly"]["weeks_of_month"],
        serde_json::json!(["First", "Third"])
    );
    assert_eq!(p["retention"]["yearly"]["years"], 4);
    assert_eq!(
        p["retention"]["yearly"]["months_of_year"],
        serde_json::json!(["February", "November"])
    );

    // Same name again: refused unless --name gives another.
    let simple = write(
        &env,
        "simple.json",
        &azure_body("ProtectionPolicies_Get.json"),
    );
    let (_, err) = env.fails_with(2, &["policy", "import", &simple]);
    assert!(err.contains("--name"), "{err}");
    env.ok(&["policy", "import", &simple, "--name", "PacificDaily"]);
    let p = env.json(&["policy", "show", "PacificDaily"]);
    assert_eq!(p["schedule"]["frequency"], "daily");
    assert_eq!(p["schedule"]["time"], "02:00");
    assert_eq!(p["retention"]["daily"]["days"], 1);

    // A {value: [...]} list imports every AzureIaasVM policy in it.
    let list = write(&env, "list.json", &azure_body("BackupPolicies_List.json"));
    let out = env.run(&["policy", "import", &list, "--json"]);
    let code = out.status.code();
    let imported: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    assert!(
        code == Some(0) || code == Some(2),
        "{:?}",
        String::from_utf8_lossy(&out.stderr)
    );
    if code == Some(0) {
        assert!(!imported.as_array().unwrap().is_empty());
    } else {
        // DefaultPolicy is in the list and exists already: the error says how to proceed.
        assert!(String::from_utf8_lossy(&out.stderr).contains("exists already"));
    }
}

fn sim_now(env: &Env) -> chrono::DateTime<chrono::Utc> {
    let s = env.ok(&["sim", "now"]);
    chrono::DateTime::parse_from_rfc3339(s.trim())
        .unwrap()
        .with_timezone(&chrono::Utc)
}

/// `policy preview` tells exactly which points `sim advance` leaves behind, with their
/// expiries, over three years of the seed's example policy (leap year 2028, DST changes).
#[test]
fn preview_agrees_with_simulated_time() {
    use chrono::{Duration, TimeZone};
    let env = Env::new();
    let gold = write(&env, "gold.toml", GOLD);
    env.ok(&["policy", "create", "--file", &gold]);
    // A stopped VM: its disks do not change, so three years of backups are quick.
    env.ok(&["discover"]);
    env.ok(&["register", "jump01"]);

    // Start just after a local midnight in Berlin, so the advanced span covers whole days.
    let now = sim_now(&env);
    let berlin = chrono_tz::Europe::Berlin;
    let local_next = (now.with_timezone(&berlin).date_naive() + Duration::days(1))
        .and_hms_opt(0, 1, 0)
        .unwrap();
    let start = berlin
        .from_local_datetime(&local_next)
        .earliest()
        .unwrap()
        .with_timezone(&chrono::Utc);
    env.ok(&[
        "sim",
        "advance",
        &format!("{}s", (start - now).num_seconds() + 1),
        "--offline",
    ]);
    env.ok(&["protect", "jump01", "--policy", "Gold"]);
    let from = start.with_timezone(&berlin).date_naive();
    let days: i64 = 3 * 365 + 1;
    // Up to 1 minute before local midnight at the end (23:59 local on the last day).
    let end_local = (from + Duration::days(days)).and_hms_opt(0, 0, 0).unwrap();
    let end = berlin
        .from_local_datetime(&end_local)
        .earliest()
        .unwrap()
        .with_timezone(&chrono::Utc)
        - Duration::minutes(1);
    let by = (end - sim_now(&env)).num_seconds();
    let report = env.json(&["sim", "advance", &format!("{by}s")]);
    assert_eq!(
        report["backups"].as_u64().unwrap(),
        days as u64,
        "{report:#}"
    );
    assert_eq!(report["backups_failed"], 0);

    let preview = env.json(&[
        "policy",
        "preview",
        "Gold",
        "--from",
        &from.to_string(),
        "--days",
        &days.to_string(),
    ]);
    let expected: Vec<(String, String)> = preview["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["time"].as_str().unwrap().to_string(),
                p["expiry"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let mut actual: Vec<(String, String)> = env
        .json(&["points", "jump01"])
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["scheduled_time"].as_str().unwrap().to_string(),
                p["expiry"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    actual.sort();
    assert_eq!(actual, expected);
    // Sanity of the scheme itself: 30 dailies, ~104 Sundays, monthly Last Sundays, Januaries.
    assert!(actual.len() > 130 && actual.len() < 200, "{}", actual.len());
    // Every point restores; the newest one checked byte for byte.
    env.ok(&["verify", "jump01"]);
    let newest = env.json(&["points", "jump01"])[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    env.assert_restore_matches_source("jump01", &newest, "newest");
}

#[test]
fn soft_deleted_data_is_purged_after_14_days_and_undelete_before_keeps_it() {
    let env = Env::new();
    env.protect(&["jump01", "payroll01"]);
    env.backup("jump01");
    env.backup("payroll01");
    env.ok(&["stop-protection", "jump01", "--delete-data"]);
    env.ok(&["stop-protection", "payroll01", "--delete-data"]);
    let stored_before = env.json(&["summary"])["storage"]["stored_bytes"]
        .as_u64()
        .unwrap();
    env.ok(&["sim", "advance", "13d"]);
    // Still there on day 13; undelete one of them.
    assert_eq!(env.json(&["points", "jump01"]).as_array().unwrap().len(), 1);
    env.ok(&["undelete", "payroll01"]);
    env.ok(&["sim", "advance", "2d"]);
    let items = env.json(&["items"]);
    let get = |n: &str| {
        items
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["name"] == n)
            .unwrap()
            .clone()
    };
    assert_eq!(get("jump01")["protection_state"], "NotProtected");
    assert_eq!(
        get("jump01")["registration_state"],
        "Registered",
        "purge removes data, not the registration"
    );
    assert!(env
        .json(&["points", "jump01"])
        .as_array()
        .unwrap()
        .is_empty());
    assert_eq!(get("payroll01")["protection_state"], "ProtectionStopped");
    assert_eq!(
        env.json(&["points", "payroll01"]).as_array().unwrap().len(),
        1
    );
    // The purge freed jump01's chunks (garbage collection ran after it).
    let stored_after = env.json(&["summary"])["storage"]["stored_bytes"]
        .as_u64()
        .unwrap();
    assert!(
        stored_after < stored_before,
        "{stored_after} < {stored_before}"
    );
    env.ok(&["verify"]);
    let prunes = env.json(&["jobs", "--operation", "Prune"]);
    assert!(prunes
        .as_array()
        .unwrap()
        .iter()
        .any(|j| j["details"]["items_purged"]
            .as_array()
            .is_some_and(|a| !a.is_empty())));
}

#[test]
fn retention_changes_apply_to_existing_points() {
    let env = Env::new();
    let gold = write(&env, "gold.toml", GOLD);
    env.ok(&["policy", "create", "--file", &gold]);
    env.ok(&["discover"]);
    env.ok(&["register", "jump01"]);
    env.ok(&["protect", "jump01", "--policy", "Gold"]);
    env.ok(&["sim", "advance", "20d"]);
    let count = |env: &Env| env.json(&["points", "jump01"]).as_array().unwrap().len();
    let before = count(&env);
    assert!(before >= 19, "{before}");
    // Shorter daily retention: existing points get earlier expiries at once…
    let short = write(&env, "short.toml", &GOLD.replace("days = 30", "days = 3"));
    env.ok(&["policy", "update", "Gold", "--file", &short]);
    let points = env.json(&["points", "jump01"]);
    let newest =
        chrono::DateTime::parse_from_rfc3339(points[0]["scheduled_time"].as_str().unwrap())
            .unwrap();
    let newest_expiry =
        chrono::DateTime::parse_from_rfc3339(points[0]["expiry"].as_str().unwrap()).unwrap();
    assert!(
        newest_expiry - newest <= chrono::Duration::days(104 * 7),
        "re-evaluated"
    );
    let non_sunday_old = points
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| {
            let t = chrono::DateTime::parse_from_rfc3339(p["scheduled_time"].as_str().unwrap())
                .unwrap();
            let e = chrono::DateTime::parse_from_rfc3339(p["expiry"].as_str().unwrap()).unwrap();
            e - t == chrono::Duration::days(3)
        })
        .count();
    assert!(
        non_sunday_old > 0,
        "dailies now expire after 3 days: {points:#}"
    );
    // …and the next clean-up (after the next scheduled backup) removes what expired.
    env.ok(&["sim", "advance", "1d"]);
    let after = count(&env);
    assert!(after < before, "{after} < {before}");
    // Sundays are kept by the weekly rule; at most 3 days of dailies plus Sundays remain.
    assert!(after <= 3 + 4, "{after}");
}

#[test]
fn an_item_whose_policy_is_gone_reads_protection_error_and_the_others_go_on() {
    let env = Env::new();
    let gold = write(&env, "gold.toml", GOLD);
    env.ok(&["policy", "create", "--file", &gold]);
    env.ok(&["discover"]);
    env.ok(&["register", "app01"]);
    env.ok(&["protect", "app01", "--policy", "Gold"]);
    env.protect(&["sales/web01"]);
    // The policy row goes behind vmvault's back (a catalog edited by hand, or rebuilt
    // from a vault whose policy object was lost).
    let db = env.vault_dir("test-we").join("catalog.db");
    let c = rusqlite::Connection::open(&db).unwrap();
    assert_eq!(
        c.execute("DELETE FROM policies WHERE name = 'Gold'", [])
            .unwrap(),
        1
    );
    drop(c);

    env.ok(&["sim", "advance", "2d"]);
    let items = env.json(&["items"]);
    let app = item(&items, "app01");
    assert_eq!(app["protection_state"], "ProtectionError", "{app:#}");
    assert_eq!(app["last_error"]["code"], "PolicyNotFound", "{app:#}");
    let message = app["last_error"]["message"].as_str().unwrap_or("");
    assert!(message.contains("\"Gold\""), "{message}");
    // The other item's scheduled backups ran.
    let web = item(&items, "sales/web01");
    assert_eq!(web["protection_state"], "Protected", "{web:#}");
    let jobs = env.json(&["jobs", "--operation", "Backup"]);
    let ran: Vec<&str> = jobs
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|j| j["item"].as_str())
        .collect();
    assert!(ran.contains(&"sales/web01"), "{jobs:#}");
    assert!(!ran.contains(&"app01"), "{jobs:#}");
    assert!(
        app["last_error"]["recommendations"]
            .to_string()
            .contains("resume-protection sales/app01 --policy"),
        "{app:#}"
    );
    // A backup now keeps a point, but the item still has no schedule and says so.
    let j = env.json(&["backup", "app01"]);
    assert_eq!(j["status"], "Completed", "{j:#}");
    let app = item(&env.json(&["items"]), "app01").clone();
    assert_eq!(app["protection_state"], "ProtectionError", "{app:#}");
    assert_eq!(app["last_error"]["code"], "PolicyNotFound", "{app:#}");
    // Moved to an existing policy as it says, it is scheduled again.
    env.ok(&["stop-protection", "app01", "--retain-data"]);
    env.ok(&["resume-protection", "app01", "--policy", "DefaultPolicy"]);
    env.ok(&["sim", "advance", "1d"]);
    let app = item(&env.json(&["items"]), "app01").clone();
    assert_eq!(app["protection_state"], "Protected", "{app:#}");
}
