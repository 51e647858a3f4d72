//! Property tests: every parser of what users type or hand vmvault (arguments, the config,
//! policy files, Azure JSON, a simulated subscription, ids) is fed arbitrary text and
//! arbitrary numbers in documents that are otherwise valid. None may panic, and what they
//! accept stays usable: the dates and durations that come out can be shown and computed
//! with (the periods and times of `crate::fmt` have their own tests there).

use crate::config::Config;
use crate::fmt;
use crate::model::{JobOperation, JobStatus, ProtectionState};
use crate::policy::{expiry_of, import_azure, last_run_at_or_before, next_run_after, preview};
use chrono::{Datelike, Duration, NaiveDate};
use proptest::prelude::*;

/// A value as a user might write it in a document: numbers of any size and sign, floats,
/// quoted text with anything in it, times, and nothing useful at all.
fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<u64>().prop_map(|n| n.to_string()),
        any::<i64>().prop_map(|n| n.to_string()),
        "[0-9]{15,40}",
        any::<f64>().prop_map(|f| format!("{f:?}")),
        any::<String>().prop_map(|s| format!("{s:?}")),
        "\"[0-9]{1,6}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}(:[0-9]{2})?([+-][0-9]{2}:?[0-9]{2}|Z)?\"",
        Just("\"\"".to_string()),
        Just("[]".to_string()),
    ]
}

/// The value of `k` in a document whose key under test is `key`: `v` there, else `default`.
fn pick(key: &str, v: &str, k: &str, default: &str) -> String {
    if k == key { v } else { default }.to_string()
}

fn config_doc(key: &'static str, v: &str) -> String {
    let engine = |k: &str| {
        if k == key {
            v.to_string()
        } else {
            "2".to_string()
        }
    };
    format!(
        "[engine]\nmax_concurrent_jobs = {}\nthreads = {}\n\n[[vault]]\nname = \"v\"\nregion = \"westeurope\"\n{key_line}source = {{ kind = \"simulated\", discovery_latency_ms = 0 }}\n",
        engine("max_concurrent_jobs"),
        engine("threads"),
        key_line = key
            .strip_prefix("vault.")
            .map(|k| format!("{k} = {v}\n"))
            .unwrap_or_default(),
    )
}

fn policy_doc(key: &'static str, v: &str) -> String {
    let pick = |k: &str, default: &str| pick(key, v, k, default);
    format!(
        "name = {}\ntime_zone = {}\n[schedule]\nfrequency = \"daily\"\ntime = {}\n[retention.daily]\ndays = {}\n[retention.monthly]\nmonths = {}\ndays_of_month = [{}]\n[retention.yearly]\nyears = {}\nmonths_of_year = [\"January\"]\ndays_of_month = [1]\n",
        pick("name", "\"P\""),
        pick("time_zone", "\"Europe/Berlin\""),
        pick("time", "\"22:30\""),
        pick("days", "30"),
        pick("months", "12"),
        pick("day_of_month", "1"),
        pick("years", "10"),
    )
}

fn azure_doc(key: &'static str, v: &str) -> String {
    let pick = |k: &str, default: &str| pick(key, v, k, default);
    format!(
        r#"{{"name": {}, "properties": {{"backupManagementType": "AzureIaasVM", "timeZone": {},
            "schedulePolicy": {{"schedulePolicyType": "SimpleSchedulePolicy", "scheduleRunFrequency": "Weekly",
                "scheduleRunDays": ["Sunday"], "scheduleRunTimes": [{}]}},
            "retentionPolicy": {{"retentionPolicyType": "LongTermRetentionPolicy",
                "weeklySchedule": {{"daysOfTheWeek": ["Sunday"], "retentionTimes": ["2018-01-24T02:00:00Z"],
                    "retentionDuration": {{"count": {}, "durationType": "Weeks"}}}},
                "yearlySchedule": {{"retentionScheduleFormatType": "Daily", "monthsOfYear": ["January"],
                    "retentionScheduleDaily": {{"daysOfTheMonth": [{{"date": {}, "isLast": false}}]}},
                    "retentionTimes": ["2018-01-24T02:00:00Z"],
                    "retentionDuration": {{"count": {}, "durationType": "Years"}}}}}}}}}}"#,
        pick("name", "\"P\""),
        pick("timeZone", "\"Pacific Standard Time\""),
        pick("runTime", "\"2018-01-24T02:00:00Z\""),
        pick("weeks", "12"),
        pick("date", "1"),
        pick("years", "10"),
    )
}

/// A policy that parsed must be usable at both ends of the dates vmvault handles.
fn exercise_policy(p: &crate::policy::Policy) {
    for t in [chrono::Utc::now(), fmt::max_time()] {
        let _ = expiry_of(p, t);
        let _ = next_run_after(p, t);
        let _ = last_run_at_or_before(p, t);
    }
    let from = NaiveDate::from_ymd_opt(2027, 1, 1).unwrap_or_default();
    let _ = preview(p, from, 40);
    let _ = preview(
        p,
        NaiveDate::from_ymd_opt(9999, 12, 1).unwrap_or_default(),
        60,
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn config_values_never_panic_and_stay_usable(
        key in prop::sample::select(vec![
            "max_concurrent_jobs", "threads", "vault.chunk_size_kib", "vault.compression_level",
            "vault.gc_grace_minutes", "vault.storage", "vault.name", "vault.region",
        ]),
        v in value(),
    ) {
        if let Ok(c) = Config::parse(&config_doc(key, &v), "c.toml") {
            let vault = &c.vaults[0];
            // What the engine computes from it (`Setup::open_vault`).
            prop_assert!(Duration::try_minutes(vault.gc_grace_minutes as i64).is_some());
            prop_assert!(vault.chunk_size_kib.checked_mul(1024).is_some());
            prop_assert!(c.engine.threads <= crate::config::MAX_THREADS);
        }
    }

    #[test]
    fn any_config_text_never_panics(text in any::<String>()) {
        let _ = Config::parse(&text, "c.toml");
    }

    #[test]
    fn policy_values_never_panic_and_stay_usable(
        key in prop::sample::select(vec!["name", "time_zone", "time", "days", "months", "day_of_month", "years"]),
        v in value(),
    ) {
        match crate::policy::Policy::from_toml_str(&policy_doc(key, &v), "p.toml") {
            Ok(p) => exercise_policy(&p),
            Err(e) => prop_assert!(e.to_string().len() < 4000),
        }
    }

    #[test]
    fn azure_values_never_panic_and_stay_usable(
        key in prop::sample::select(vec!["name", "timeZone", "runTime", "weeks", "date", "years"]),
        v in value(),
    ) {
        match import_azure(&azure_doc(key, &v), "a.json") {
            Ok(imported) => imported.policies.iter().for_each(exercise_policy),
            Err(e) => prop_assert!(e.to_string().len() < 4000),
        }
    }

    #[test]
    fn any_text_as_policy_azure_or_subscription_never_panics(text in any::<String>()) {
        let _ = crate::policy::Policy::from_toml_str(&text, "p.toml");
        let _ = import_azure(&text, "a.json");
        let _ = crate::provider::sim::Subscription::from_toml_str(&text, "s.toml");
    }

    #[test]
    fn words_and_ids_never_panic(s in any::<String>()) {
        let _ = JobStatus::parse(&s);
        let _ = JobOperation::parse(&s);
        let _ = ProtectionState::parse(&s);
        let _ = crate::engine::RestoreFormat::parse(&s);
        if let Ok(id) = crate::engine::id_prefix(&s, "job id") {
            prop_assert!(id.len() >= crate::engine::MIN_ID_PREFIX);
        }
        if let Ok(d) = fmt::parse_date(&s) {
            prop_assert!((1..=9999).contains(&d.year()));
        }
    }
}
