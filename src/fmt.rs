//! Formatting shared by the CLI and the console: sizes, durations, times, and parsing of
//! the time and period arguments users type.

use chrono::{DateTime, Duration, NaiveDate, NaiveDateTime, SecondsFormat, TimeZone, Utc};

/// `1.5 GiB`, `512 B`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if v >= 100.0 {
        format!("{v:.0} {}", UNITS[u])
    } else if v >= 10.0 {
        format!("{v:.1} {}", UNITS[u])
    } else {
        format!("{v:.2} {}", UNITS[u])
    }
}

/// A job's detail for people (the console's job details and `vmvault job ID`): a label
/// ("bytes_read" → "Bytes read") and its value as lines — a list one item a line, byte
/// counts in KiB/MiB/GiB, never raw JSON. `--json` keeps the raw details.
pub fn job_detail(key: &str, value: &serde_json::Value) -> (String, Vec<String>) {
    use serde_json::Value;
    let mut label = key.replace('_', " ");
    if let Some(first) = label.get(..1) {
        label = first.to_uppercase() + &label[1..];
    }
    let is_bytes = key.split('_').any(|w| w == "bytes");
    let scalar = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => match n.as_u64() {
            Some(b) if is_bytes => bytes(b),
            _ => n.to_string(),
        },
        Value::Bool(b) => if *b { "yes" } else { "no" }.to_string(),
        Value::Null => "—".to_string(),
        other => other.to_string(),
    };
    let lines = match value {
        Value::Array(a) if a.is_empty() => vec!["none".to_string()],
        Value::Array(a) => a.iter().map(scalar).collect(),
        Value::Object(o) => o
            .iter()
            .map(|(k, v)| format!("{k}: {}", scalar(v)))
            .collect(),
        v => vec![scalar(v)],
    };
    (label, lines)
}

/// `85.3 MiB/s`.
pub fn rate(bytes_per_second: f64) -> String {
    format!("{}/s", bytes(bytes_per_second.max(0.0) as u64))
}

/// `42s`, `3m 05s`, `2h 10m`, `3d 4h`.
pub fn duration_secs(secs: f64) -> String {
    let s = secs.max(0.0).round() as u64;
    if s < 60 {
        format!("{s}s")
    } else if s < 3600 {
        format!("{}m {:02}s", s / 60, s % 60)
    } else if s < 86400 {
        format!("{}h {:02}m", s / 3600, (s % 3600) / 60)
    } else {
        format!("{}d {}h", s / 86400, (s % 86400) / 3600)
    }
}

pub fn duration(d: Duration) -> String {
    duration_secs(d.num_milliseconds() as f64 / 1000.0)
}

/// `2026-11-28 10:01` (UTC).
pub fn time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M").to_string()
}

/// RFC 3339 UTC, the JSON form (fractional seconds only when there are any).
pub fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// Parses a time a user typed: RFC 3339, `YYYY-MM-DD HH:MM[:SS]` or `YYYY-MM-DDTHH:MM[:SS]`
/// (UTC), or `YYYY-MM-DD` (at `date_time_of_day`).
pub fn parse_time(s: &str, end_of_day: bool) -> Result<DateTime<Utc>, String> {
    let s = s.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    for f in [
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%d %H:%M",
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%dT%H:%M",
    ] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, f) {
            return Ok(Utc.from_utc_datetime(&t));
        }
    }
    if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        let t = if end_of_day {
            d.and_hms_opt(23, 59, 59)
        } else {
            d.and_hms_opt(0, 0, 0)
        };
        if let Some(t) = t {
            return Ok(Utc.from_utc_datetime(&t));
        }
    }
    Err(format!(
        "\"{s}\" is not a time: use YYYY-MM-DD, YYYY-MM-DD HH:MM (UTC) or RFC 3339 such as 2027-01-31T22:30:00Z"
    ))
}

/// Parses a period like `24h`, `7d`, `30m`, `2w`, `90s`, `1y` (365 days).
pub fn parse_period(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let err =
        || format!("\"{s}\" is not a period: use a number and a unit, e.g. 30m, 24h, 7d, 2w, 1y");
    let split = s.find(|c: char| !c.is_ascii_digit()).ok_or_else(err)?;
    let (num, unit) = s.split_at(split);
    let n: i64 = num.parse().map_err(|_| err())?;
    let d = match unit.trim() {
        "s" | "sec" | "secs" => Duration::seconds(n),
        "m" | "min" | "mins" => Duration::minutes(n),
        "h" | "hour" | "hours" => Duration::hours(n),
        "d" | "day" | "days" => Duration::days(n),
        "w" | "week" | "weeks" => Duration::weeks(n),
        "y" | "year" | "years" => Duration::days(365 * n),
        _ => return Err(err()),
    };
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_durations_read_well() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.50 KiB");
        assert_eq!(bytes(300 * 1024 * 1024), "300 MiB");
        assert_eq!(duration_secs(185.0), "3m 05s");
        assert_eq!(duration_secs(7200.0 + 600.0), "2h 10m");
    }

    #[test]
    fn times_and_periods_parse() {
        assert_eq!(
            rfc3339(parse_time("2027-01-31", true).unwrap()),
            "2027-01-31T23:59:59Z"
        );
        assert_eq!(
            rfc3339(parse_time("2027-01-31 22:30", false).unwrap()),
            "2027-01-31T22:30:00Z"
        );
        assert_eq!(
            rfc3339(parse_time("2027-01-31T22:30:00+01:00", false).unwrap()),
            "2027-01-31T21:30:00Z"
        );
        assert!(parse_time("tomorrow", false)
            .unwrap_err()
            .contains("YYYY-MM-DD"));
        assert_eq!(parse_period("24h").unwrap(), Duration::hours(24));
        assert_eq!(parse_period("800d").unwrap(), Duration::days(800));
        assert!(parse_period("soon").is_err());
        assert!(parse_period("5x").is_err());
    }
}

#[cfg(test)]
mod job_detail_tests {
    use super::job_detail;
    use serde_json::json;

    #[test]
    fn lists_are_lines_and_bytes_are_sizes() {
        assert_eq!(
            job_detail("bytes_read", &json!(365551616u64)),
            ("Bytes read".to_string(), vec!["349 MiB".to_string()])
        );
        assert_eq!(
            job_detail(
                "findings",
                &json!(["VM agent: ready", "2 disk(s) readable"])
            ),
            (
                "Findings".to_string(),
                vec![
                    "VM agent: ready".to_string(),
                    "2 disk(s) readable".to_string()
                ]
            )
        );
        assert_eq!(job_detail("new_chunks", &json!(42)).1, vec!["42"]);
        assert_eq!(job_detail("warnings", &json!([])).1, vec!["none"]);
        assert_eq!(job_detail("recovery_point", &json!("abc")).1, vec!["abc"]);
    }
}
