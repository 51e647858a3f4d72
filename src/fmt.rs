//! Formatting shared by the CLI and the console: sizes, durations, times, and parsing of
//! the time and period arguments users type.

use chrono::{
    DateTime, Datelike, Duration, NaiveDate, NaiveDateTime, SecondsFormat, TimeZone, Utc,
};
use std::borrow::Cow;

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

/// The last instant vmvault takes or shows: the end of the year 9999 (later years would
/// print as `+10000-…`, which no reader expects).
pub fn max_time() -> DateTime<Utc> {
    NaiveDate::from_ymd_opt(9999, 12, 31)
        .and_then(|d| d.and_hms_opt(23, 59, 59))
        .map_or(DateTime::<Utc>::MAX_UTC, |t| Utc.from_utc_datetime(&t))
}

/// Parses a time a user typed: RFC 3339, `YYYY-MM-DD HH:MM[:SS]` or `YYYY-MM-DDTHH:MM[:SS]`
/// (UTC), or `YYYY-MM-DD` (at the end of the day when `end_of_day`, else at its start).
/// Years 1 to 9999 only.
pub fn parse_time(s: &str, end_of_day: bool) -> Result<DateTime<Utc>, String> {
    let s = s.trim();
    let t = parse_time_any_year(s, end_of_day).ok_or_else(|| {
        format!(
            "\"{}\" is not a time: use YYYY-MM-DD, YYYY-MM-DD HH:MM (UTC) or RFC 3339 such as 2027-01-31T22:30:00Z",
            echo(s)
        )
    })?;
    if !(1..=9999).contains(&t.year()) {
        return Err(format!(
            "\"{}\" is out of range: give a time in the years 1 to 9999",
            echo(s)
        ));
    }
    Ok(t)
}

/// Parses a date a user typed (`YYYY-MM-DD`), years 1 to 9999.
pub fn parse_date(s: &str) -> Result<NaiveDate, String> {
    let s = s.trim();
    match NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        Ok(d) if (1..=9999).contains(&d.year()) => Ok(d),
        Ok(_) => Err(format!(
            "\"{}\" is out of range: give a date in the years 1 to 9999",
            echo(s)
        )),
        Err(_) => Err(format!(
            "\"{}\" is not a date: use YYYY-MM-DD, e.g. 2027-01-31",
            echo(s)
        )),
    }
}

fn parse_time_any_year(s: &str, end_of_day: bool) -> Option<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    for f in [
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%d %H:%M",
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%dT%H:%M",
    ] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, f) {
            return Some(Utc.from_utc_datetime(&t));
        }
    }
    let d = NaiveDate::parse_from_str(s, "%Y-%m-%d").ok()?;
    let (h, m, sec) = if end_of_day { (23, 59, 59) } else { (0, 0, 0) };
    d.and_hms_opt(h, m, sec).map(|t| Utc.from_utc_datetime(&t))
}

/// The longest period a user may type (`jobs --since`, `sim advance`).
pub const MAX_PERIOD_YEARS: i64 = 100;
const MAX_PERIOD_SECONDS: i64 = MAX_PERIOD_YEARS * 365 * 86_400;

/// Parses a period like `24h`, `7d`, `30m`, `2w`, `90s`, `1y` (365 days), at most
/// [`MAX_PERIOD_YEARS`] years. Never panics: the arithmetic is checked, so `300000y` is a
/// "too long" error, not an overflow.
pub fn parse_period(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let err = || {
        format!(
            "\"{}\" is not a period: use a number and a unit, e.g. 30m, 24h, 7d, 2w, 1y",
            echo(s)
        )
    };
    let split = s.find(|c: char| !c.is_ascii_digit()).ok_or_else(err)?;
    let (num, unit) = s.split_at(split);
    if num.is_empty() {
        return Err(err());
    }
    let unit_seconds: i64 = match unit.trim() {
        "s" | "sec" | "secs" => 1,
        "m" | "min" | "mins" => 60,
        "h" | "hour" | "hours" => 3_600,
        "d" | "day" | "days" => 86_400,
        "w" | "week" | "weeks" => 7 * 86_400,
        "y" | "year" | "years" => 365 * 86_400,
        _ => return Err(err()),
    };
    // `num` is all ASCII digits: the only parse error left is a number too large for i64.
    num.parse::<i64>()
        .ok()
        .and_then(|n| n.checked_mul(unit_seconds))
        .filter(|secs| *secs <= MAX_PERIOD_SECONDS)
        .map(Duration::seconds)
        .ok_or_else(|| {
            format!(
                "\"{}\" is too long: a period is at most {MAX_PERIOD_YEARS} years ({}d)",
                echo(s),
                MAX_PERIOD_SECONDS / 86_400
            )
        })
}

/// How many characters of a user's input an error message repeats.
pub const ECHO_MAX_CHARS: usize = 200;

/// Whether `c` must not reach a terminal or a log raw: control characters (they end lines,
/// move the cursor, recolour) and the bidirectional overrides (they reorder what is shown).
fn is_unsafe(c: char) -> bool {
    c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

fn escape_where(s: &str, unsafe_char: impl Fn(char) -> bool) -> Cow<'_, str> {
    if !s.chars().any(&unsafe_char) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if unsafe_char(c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// A name or value from outside (an image file name, a VM name, a user's argument) made
/// safe to show: control characters are written as escapes (`\n`, `\u{1b}`), so a name
/// cannot break a table row, move the cursor or forge a log line.
pub fn escape(s: &str) -> Cow<'_, str> {
    escape_where(s, is_unsafe)
}

/// Text vmvault prints (messages that may hold names): like [`escape`], but its own line
/// breaks stay.
pub fn printable(s: &str) -> Cow<'_, str> {
    escape_where(s, |c| c != '\n' && is_unsafe(c))
}

/// A user's input as an error message repeats it: escaped, and cut after
/// [`ECHO_MAX_CHARS`] characters with how many were left out (`abc… (99800 more
/// characters)`), so a huge argument or file cannot make a huge message.
pub fn echo(s: &str) -> String {
    echo_at_most(s, ECHO_MAX_CHARS)
}

/// Like [`echo`] with another cap: for a parser's whole message, which may quote the input.
pub fn echo_at_most(s: &str, max_chars: usize) -> String {
    cut(&escape(s), max_chars).into_owned()
}

/// `s` cut after `max_chars` characters, saying how many were left out.
pub fn cut(s: &str, max_chars: usize) -> Cow<'_, str> {
    match s.char_indices().nth(max_chars) {
        None => Cow::Borrowed(s),
        Some((end, _)) => Cow::Owned(format!(
            "{}… ({} more characters)",
            &s[..end],
            s[end..].chars().count()
        )),
    }
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
        assert!(parse_period("d").is_err());
        assert!(parse_period("-5d").is_err());
        assert_eq!(parse_period("100y").unwrap(), Duration::days(36_500));
    }

    /// The periods the hostile test fed `jobs --since` and `sim advance` (they panicked).
    #[test]
    fn huge_periods_are_refused_not_overflowed() {
        for s in [
            "9999999999d",
            "300000y",
            "999999999999h",
            "99999999999w",
            "99999999999999d",
            "36501d",
            "99999999999999999999999999s",
        ] {
            let e = parse_period(s).unwrap_err();
            assert!(e.contains("at most 100 years"), "{s}: {e}");
        }
    }

    #[test]
    fn times_outside_years_1_to_9999_are_refused() {
        assert_eq!(
            rfc3339(parse_time("9999-12-31", true).unwrap()),
            "9999-12-31T23:59:59Z"
        );
        for s in ["+10000-01-01", "+99999-12-31", "-0001-01-01", "0000-06-01"] {
            let e = parse_time(s, true).unwrap_err();
            assert!(e.contains("years 1 to 9999"), "{s}: {e}");
        }
        assert_eq!(max_time().year(), 9999);
    }

    #[test]
    fn names_are_escaped_and_echoes_capped() {
        assert_eq!(escape("web01"), "web01");
        assert_eq!(escape("a\nb\x1b[31mc\t"), "a\\nb\\u{1b}[31mc\\t");
        assert_eq!(escape("x\u{202e}y"), "x\\u{202e}y");
        assert_eq!(printable("line 1\nline\r2"), "line 1\nline\\r2");
        let long = "n".repeat(100_000);
        let e = echo(&long);
        assert!(e.starts_with(&"n".repeat(ECHO_MAX_CHARS)), "{e}");
        assert!(e.ends_with("… (99800 more characters)"), "{e}");
        assert!(e.chars().count() < ECHO_MAX_CHARS + 40);
        assert_eq!(echo("short"), "short");
        assert_eq!(cut("abcdéf", 3), "abc… (3 more characters)");
        assert_eq!(cut("abc", 3), "abc");
    }
}

/// Every parser of what users type, fed arbitrary text: none may panic, and what they
/// accept stays within the bounds the rest of vmvault relies on.
#[cfg(test)]
mod input_proptests {
    use super::*;
    use proptest::prelude::*;

    fn period_like() -> impl Strategy<Value = String> {
        (
            prop_oneof![
                Just(String::new()),
                "[0-9]{1,30}",
                any::<u64>().prop_map(|n| n.to_string()),
                any::<i64>().prop_map(|n| n.to_string()),
            ],
            prop_oneof![
                Just(""),
                Just("s"),
                Just("m"),
                Just("h"),
                Just("d"),
                Just("w"),
                Just("y"),
                Just("years"),
                Just(" d"),
                Just("x"),
            ],
        )
            .prop_map(|(n, u)| format!("{n}{u}"))
    }

    fn time_like() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<String>(),
            (any::<i32>(), 0u32..14, 0u32..33)
                .prop_map(|(y, m, d)| format!("{y:04}-{m:02}-{d:02}")),
            (any::<i32>(), 0u32..25, 0u32..61, -20i32..20)
                .prop_map(|(y, h, mi, off)| format!("{y:+05}-01-31T{h:02}:{mi:02}:00{off:+03}:00")),
            "[+-]?[0-9]{1,9}-[0-9]{2}-[0-9]{2}( [0-9]{2}:[0-9]{2})?",
        ]
    }

    proptest! {
        #[test]
        fn parse_period_never_panics_and_stays_bounded(s in prop_oneof![any::<String>(), period_like()]) {
            if let Ok(d) = parse_period(&s) {
                prop_assert!(d >= Duration::zero());
                prop_assert!(d <= Duration::days(365 * MAX_PERIOD_YEARS));
            }
        }

        #[test]
        fn parse_time_never_panics_and_stays_in_years_1_to_9999(s in time_like(), eod in any::<bool>()) {
            if let Ok(t) = parse_time(&s, eod) {
                prop_assert!((1..=9999).contains(&t.year()));
                // What is accepted can be shown and moved by any accepted period.
                let _ = time(t);
                prop_assert!(t.checked_add_signed(Duration::days(365 * MAX_PERIOD_YEARS)).is_some());
                prop_assert!(t.checked_sub_signed(Duration::days(365 * MAX_PERIOD_YEARS)).is_some());
            }
        }

        #[test]
        fn parse_date_never_panics_and_stays_in_years_1_to_9999(s in time_like()) {
            if let Ok(d) = parse_date(&s) {
                prop_assert!((1..=9999).contains(&d.year()));
            }
        }

        #[test]
        fn echo_is_bounded_and_escape_leaves_no_control(s in any::<String>()) {
            prop_assert!(echo(&s).chars().count() <= ECHO_MAX_CHARS + 40);
            prop_assert!(!escape(&s).chars().any(is_unsafe));
            prop_assert!(!printable(&s).chars().any(|c| c != '\n' && is_unsafe(c)));
        }
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
