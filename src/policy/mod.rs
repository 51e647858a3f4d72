//! Backup policies: what a policy is, when it runs, and how long its recovery points live.
//!
//! Everything here is a pure function of its inputs (no clock, no I/O), so the engine's
//! scheduler, `sim advance`, `policy preview` and the tests all agree by construction.
//!
//! - [`model`]: the [`Policy`] value (schedule + long-term retention), its words
//!   ([`Policy::describe`]) and its serde shape, which is exactly the TOML policy file.
//! - [`mod@file`]: reading and writing the TOML file with precise, line-numbered problems.
//! - [`validate`]: every rule a policy must satisfy, all problems collected at once.
//! - [`schedule`]: the scheduled instants of a policy (wall-clock time in its time zone,
//!   daylight-saving rules below).
//! - [`retention`]: which rules select a point, its expiry, what a clean-up prunes, and the
//!   bound on live points the rules imply.
//! - [`mod@preview`]: the admin's "what would exist after N days" — the same sequence of backups
//!   and clean-ups that `sim advance` performs.
//! - [`azure`] and [`windows_tz`]: importing Azure Backup `AzureIaasVM` policies as Azure's
//!   REST API returns them, with Windows time-zone names mapped to IANA names.
//!
//! # Time rules (shared by schedule and retention)
//! A wall-clock time is resolved in the policy's time zone. A time that does not exist that
//! day (spring-forward gap) resolves to the first valid instant after it (02:30 on the
//! Europe/Berlin spring-forward day is 03:00 CEST). An ambiguous time (fall-back overlap)
//! resolves to the earlier instant. Retention is judged on the point's scheduled instant seen
//! in the policy's time zone (its local date and weekday); durations add calendar days,
//! weeks, months or years to that local date-time (months clamp to the month's end, so
//! 31 January + 1 month is 28/29 February) and the result is resolved with the same rules.
//!
//! # Why all validation problems are collected
//! An administrator editing a policy file wants the whole list at once, each problem naming
//! the field, the value given and what is allowed — not a fix-one-rerun loop.

pub mod azure;
pub mod file;
pub mod model;
pub mod preview;
#[cfg(test)]
mod proptests;
pub mod retention;
pub mod schedule;
pub mod validate;
pub mod windows_tz;

pub use azure::{import_azure, AzureImport, SkippedPolicy};
pub use model::{
    DailyRule, DayOfMonth, DaySelector, Frequency, MonthlyRule, Policy, PolicyError, Problem,
    Retention, RuleKind, Schedule, WeekOfMonth, WeeklyRule, YearlyRule, DEFAULT_POLICY_NAME,
};
pub use preview::{preview, preview_window, Preview, PreviewPoint};
pub use retention::{
    expiry_of, max_points_bound, points_to_prune, rule_expiries, rules_selecting, PointRef,
};
pub use schedule::{last_run_at_or_before, next_run_after, run_on, runs_between, Runs};
pub use windows_tz::windows_to_iana;
