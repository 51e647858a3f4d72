//! The simulated subscription: which VMs exist (regions, cloud services, sizes, disks), read
//! from a TOML file (`assets/subscription.toml` is embedded; a user's file replaces it), or
//! synthesized in bulk for scale tests.
//!
//! Every error names the file, the line, the key and what was expected, like the
//! configuration's errors: a subscription file is configuration a user edits.

use super::layout::Content;
use super::SimError;
use crate::model::{DiskInfo, ErrorDetails, Os, PowerState, Vm};
use chrono::NaiveDate;
use serde::Deserialize;
use std::ops::Range;
use toml::Spanned;

const GIB: u64 = 1 << 30;
const MIB: u64 = 1 << 20;

/// The subscription embedded in the binary.
pub const EMBEDDED: &str = include_str!("../../../assets/subscription.toml");
/// How errors in the embedded subscription name it.
pub const EMBEDDED_ORIGIN: &str = "embedded subscription (assets/subscription.toml)";

/// Churn when neither the file nor the settings say.
pub const DEFAULT_DAILY_CHANGE_PERCENT: f64 = 0.5;

/// A simulated subscription: its VMs and what makes their disks deterministic.
#[derive(Debug, Clone, PartialEq)]
pub struct Subscription {
    /// Display name ("Contoso (simulated)").
    pub name: String,
    /// Seeds every disk's contents, changes and transient failures.
    pub seed: u64,
    /// Simulated day 0 (UTC midnight); disk contents change once per whole day after it.
    pub origin: NaiveDate,
    /// Churn of a running VM's disks per simulated day, in percent of their allocated size.
    pub daily_change_percent: f64,
    pub vms: Vec<SimVm>,
    /// Where it was read from (a path, or the embedded file).
    pub loaded_from: String,
}

/// One VM of the subscription: what discovery reports plus what the simulator needs.
#[derive(Debug, Clone, PartialEq)]
pub struct SimVm {
    pub vm: Vm,
    /// Parallel to `vm.disks`.
    pub disks: Vec<SimDisk>,
    /// Overrides the subscription's churn for this VM.
    pub daily_change_percent: Option<f64>,
    pub vm_agent: VmAgent,
    /// Every backup of this VM fails with these details.
    pub backup_failure: Option<ErrorDetails>,
    /// Registering this VM fails with these details.
    pub registration_failure: Option<ErrorDetails>,
}

/// What the simulator needs to know of a disk beyond `DiskInfo`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SimDisk {
    /// Bytes holding data on day 0; the rest of the capacity is holes.
    pub allocated: u64,
    pub content: Content,
}

/// Status of the guest agent inside a VM (Azure's VM agent, which backup needs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VmAgent {
    Ready,
    /// Installed but not reporting: a running VM's backups fail.
    NotReady,
}

impl Subscription {
    /// The subscription embedded in the binary (tested to parse).
    pub fn embedded_default() -> Subscription {
        match Subscription::from_toml_str(EMBEDDED, EMBEDDED_ORIGIN) {
            Ok(s) => s,
            // Unreachable in a released binary: `tests::embedded_subscription_*` parse it.
            Err(e) => panic!("the embedded subscription is broken: {e}"),
        }
    }

    /// Parses a subscription file; `origin` names it in errors (a path).
    pub fn from_toml_str(text: &str, origin: &str) -> Result<Subscription, SimError> {
        let file: FileDef = toml::from_str(text).map_err(|e| parse_error(text, origin, &e))?;
        let at = |span: Range<usize>, key: &str, message: String| {
            let (line, column) = line_col(text, span.start);
            SimError::Subscription {
                origin: origin.to_string(),
                line,
                column,
                key: Some(key.to_string()),
                message,
            }
        };

        let name = file.name.get_ref().trim().to_string();
        if name.is_empty() {
            return Err(at(
                file.name.span(),
                "name",
                "expected a non-empty name".into(),
            ));
        }
        let origin_date = NaiveDate::parse_from_str(file.origin.get_ref().trim(), "%Y-%m-%d")
            .map_err(|_| {
                at(
                    file.origin.span(),
                    "origin",
                    format!(
                        "expected a date as \"YYYY-MM-DD\" (simulated day 0), found {:?}",
                        file.origin.get_ref()
                    ),
                )
            })?;
        let daily_change_percent = match &file.daily_change_percent {
            Some(p) => {
                check_percent(*p.get_ref()).map_err(|m| at(p.span(), "daily_change_percent", m))?
            }
            None => DEFAULT_DAILY_CHANGE_PERCENT,
        };

        let mut vms: Vec<SimVm> = Vec::with_capacity(file.vms.len());
        for def in &file.vms {
            let vm = vm_from_def(def, &at)?;
            if let Some(other) = vms.iter().find(|v| v.vm.source_id == vm.vm.source_id) {
                return Err(at(
                    def.name.span(),
                    "vm.name",
                    format!(
                        "a second VM named {:?} in cloud service {:?}: names must be unique \
                         within a cloud service (the first is {})",
                        vm.vm.name, vm.vm.cloud_service, other.vm.source_id
                    ),
                ));
            }
            vms.push(vm);
        }
        Ok(Subscription {
            name,
            seed: *file.seed.get_ref(),
            origin: origin_date,
            daily_change_percent,
            vms,
            loaded_from: origin.to_string(),
        })
    }

    /// Regions of the subscription, most VMs first (ties by name).
    pub fn regions(&self) -> Vec<String> {
        let mut counts: Vec<(String, usize)> = Vec::new();
        for v in &self.vms {
            match counts.iter_mut().find(|(r, _)| *r == v.vm.region) {
                Some((_, n)) => *n += 1,
                None => counts.push((v.vm.region.clone(), 1)),
            }
        }
        counts.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        counts.into_iter().map(|(r, _)| r).collect()
    }

    /// Replaces the VMs with `n` synthesized ones (`vm-00001`, …): spread over the
    /// subscription's regions (most in the first) and over cloud services of 250 VMs, with
    /// one tiny OS disk each. For scale tests: cheap to discover, register and back up.
    pub fn synthesize(&mut self, n: usize) {
        let mut regions = self.regions();
        if regions.is_empty() {
            regions = vec!["westeurope".into(), "eastus".into(), "southeastasia".into()];
        }
        // Six in ten VMs in the main region, then the others.
        const PATTERN: [usize; 10] = [0, 1, 0, 2, 0, 1, 0, 0, 2, 0];
        let width = n.to_string().len().max(5);
        self.vms = (0..n)
            .map(|i| {
                let name = format!("vm-{:0width$}", i + 1);
                let cloud_service = format!("scale-{:03}", i / 250 + 1);
                let os = if i % 3 == 2 { Os::Windows } else { Os::Linux };
                let power_state = match i % 10 {
                    7 => PowerState::Deallocated,
                    9 if i % 20 == 19 => PowerState::Stopped,
                    _ => PowerState::Running,
                };
                let capacity = if os == Os::Windows {
                    127 * GIB
                } else {
                    30 * GIB
                };
                SimVm {
                    vm: Vm {
                        source_id: format!("sim:/{cloud_service}/{name}"),
                        disks: vec![DiskInfo {
                            index: 0,
                            name: format!("{name}_OsDisk_1"),
                            capacity,
                        }],
                        name,
                        cloud_service,
                        region: regions[PATTERN[i % 10] % regions.len()].clone(),
                        os,
                        size: "Standard_B1s".into(),
                        power_state,
                    },
                    disks: vec![SimDisk {
                        allocated: 2 * MIB,
                        content: Content::Os,
                    }],
                    daily_change_percent: None,
                    vm_agent: VmAgent::Ready,
                    backup_failure: None,
                    registration_failure: None,
                }
            })
            .collect();
    }
}

// ---- the file format (see assets/subscription.toml for the documented keys) ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileDef {
    name: Spanned<String>,
    seed: Spanned<u64>,
    origin: Spanned<String>,
    daily_change_percent: Option<Spanned<f64>>,
    #[serde(default, rename = "vm")]
    vms: Vec<VmDef>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VmDef {
    name: Spanned<String>,
    cloud_service: Spanned<String>,
    region: Spanned<String>,
    os: Spanned<String>,
    size: Spanned<String>,
    power_state: Spanned<String>,
    disks: Spanned<Vec<DiskDef>>,
    daily_change_percent: Option<Spanned<f64>>,
    vm_agent: Option<Spanned<String>>,
    backup_failure: Option<FailureDef>,
    registration_failure: Option<FailureDef>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DiskDef {
    name: Option<Spanned<String>>,
    capacity_gib: Spanned<u64>,
    allocated_mib: Spanned<u64>,
    content: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FailureDef {
    code: Spanned<String>,
    title: String,
    message: String,
    #[serde(default)]
    recommendations: Vec<String>,
}

/// Largest disk Azure offers (32 TiB - 1 GiB, in GiB).
const MAX_CAPACITY_GIB: u64 = 32_767;
/// An OS disk and up to 64 data disks.
const MAX_DISKS: usize = 65;

fn vm_from_def(
    def: &VmDef,
    at: &impl Fn(Range<usize>, &str, String) -> SimError,
) -> Result<SimVm, SimError> {
    let name = check_name(&def.name, 64).map_err(|m| at(def.name.span(), "vm.name", m))?;
    let cloud_service = check_name(&def.cloud_service, 90)
        .map_err(|m| at(def.cloud_service.span(), "vm.cloud_service", m))?;
    let region = def.region.get_ref().trim().to_string();
    if region.is_empty()
        || !region
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    {
        return Err(at(
            def.region.span(),
            "vm.region",
            format!(
                "expected an Azure region name in lower case without spaces, such as \
                 \"westeurope\", found {:?}",
                def.region.get_ref()
            ),
        ));
    }
    let os = Os::parse(def.os.get_ref()).ok_or_else(|| {
        at(
            def.os.span(),
            "vm.os",
            format!(
                "expected one of {}, found {:?}",
                Os::names(),
                def.os.get_ref()
            ),
        )
    })?;
    let power_state = PowerState::parse(def.power_state.get_ref()).ok_or_else(|| {
        at(
            def.power_state.span(),
            "vm.power_state",
            format!(
                "expected one of {}, found {:?}",
                PowerState::names(),
                def.power_state.get_ref()
            ),
        )
    })?;
    let size = def.size.get_ref().trim().to_string();
    if size.is_empty() {
        return Err(at(
            def.size.span(),
            "vm.size",
            "expected an Azure VM size such as \"Standard_D2s_v3\"".into(),
        ));
    }
    let daily_change_percent = match &def.daily_change_percent {
        Some(p) => Some(
            check_percent(*p.get_ref()).map_err(|m| at(p.span(), "vm.daily_change_percent", m))?,
        ),
        None => None,
    };
    let vm_agent = match &def.vm_agent {
        None => VmAgent::Ready,
        Some(a) => match a.get_ref().trim().to_ascii_lowercase().as_str() {
            "ready" => VmAgent::Ready,
            "notready" => VmAgent::NotReady,
            _ => {
                return Err(at(
                    a.span(),
                    "vm.vm_agent",
                    format!(
                        "expected \"Ready\" or \"NotReady\", found {:?}",
                        a.get_ref()
                    ),
                ))
            }
        },
    };

    let disk_defs = def.disks.get_ref();
    if disk_defs.is_empty() || disk_defs.len() > MAX_DISKS {
        return Err(at(
            def.disks.span(),
            "vm.disks",
            format!(
                "expected 1 to {MAX_DISKS} disks (the OS disk first, then data disks), found {}",
                disk_defs.len()
            ),
        ));
    }
    let mut disks = Vec::with_capacity(disk_defs.len());
    let mut infos = Vec::with_capacity(disk_defs.len());
    for (i, d) in disk_defs.iter().enumerate() {
        let gib = *d.capacity_gib.get_ref();
        if !(1..=MAX_CAPACITY_GIB).contains(&gib) {
            return Err(at(
                d.capacity_gib.span(),
                "vm.disks.capacity_gib",
                format!("expected a capacity from 1 to {MAX_CAPACITY_GIB} GiB, found {gib}"),
            ));
        }
        let mib = *d.allocated_mib.get_ref();
        if mib > gib * 1024 {
            return Err(at(
                d.allocated_mib.span(),
                "vm.disks.allocated_mib",
                format!(
                    "expected at most the disk's capacity ({} MiB), found {mib}",
                    gib * 1024
                ),
            ));
        }
        let content = match &d.content {
            None if i == 0 => Content::Os,
            None => Content::Files,
            Some(c) => Content::parse(c.get_ref()).ok_or_else(|| {
                at(
                    c.span(),
                    "vm.disks.content",
                    format!(
                        "expected one of {}, found {:?}",
                        Content::NAMES,
                        c.get_ref()
                    ),
                )
            })?,
        };
        let disk_name = match &d.name {
            Some(n) if !n.get_ref().trim().is_empty() => n.get_ref().trim().to_string(),
            Some(n) => {
                return Err(at(
                    n.span(),
                    "vm.disks.name",
                    "expected a non-empty disk name".into(),
                ))
            }
            None if i == 0 => format!("{name}_OsDisk_1"),
            None => format!("{name}_DataDisk_{}", i - 1),
        };
        infos.push(DiskInfo {
            index: i as u32,
            name: disk_name,
            capacity: gib * GIB,
        });
        disks.push(SimDisk {
            allocated: mib * MIB,
            content,
        });
    }

    Ok(SimVm {
        vm: Vm {
            source_id: format!("sim:/{cloud_service}/{name}"),
            name,
            cloud_service,
            region,
            os,
            size,
            power_state,
            disks: infos,
        },
        disks,
        daily_change_percent,
        vm_agent,
        backup_failure: failure_details(def.backup_failure.as_ref(), "vm.backup_failure.code", at)?,
        registration_failure: failure_details(
            def.registration_failure.as_ref(),
            "vm.registration_failure.code",
            at,
        )?,
    })
}

fn failure_details(
    def: Option<&FailureDef>,
    key: &str,
    at: &impl Fn(Range<usize>, &str, String) -> SimError,
) -> Result<Option<ErrorDetails>, SimError> {
    let Some(f) = def else { return Ok(None) };
    let code = f.code.get_ref().trim();
    if code.is_empty() || !code.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(at(
            f.code.span(),
            key,
            format!(
                "expected an error code of letters and digits such as \
                 \"UserErrorGuestAgentStatusUnavailable\", found {:?}",
                f.code.get_ref()
            ),
        ));
    }
    let mut details = ErrorDetails::new(code, f.title.trim(), f.message.trim());
    for r in &f.recommendations {
        details = details.recommend(r.trim());
    }
    Ok(Some(details))
}

/// A VM or cloud service name: it becomes part of the source id `sim:/<cloud_service>/<name>`.
fn check_name(s: &Spanned<String>, max: usize) -> Result<String, String> {
    let v = s.get_ref().trim();
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    if v.is_empty() || v.len() > max || !v.chars().all(ok_char) {
        return Err(format!(
            "expected 1 to {max} letters, digits, '-', '_' or '.', found {:?}",
            s.get_ref()
        ));
    }
    Ok(v.to_string())
}

fn check_percent(p: f64) -> Result<f64, String> {
    if p.is_finite() && (0.0..=100.0).contains(&p) {
        Ok(p)
    } else {
        Err(format!("expected a percentage from 0 to 100, found {p}"))
    }
}

/// 1-based line and column of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text.as_bytes()[..offset];
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let line_start = before
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |p| p + 1);
    (line, offset - line_start + 1)
}

/// A TOML or shape error (unknown key, wrong type, missing key) as a `SimError`, naming the
/// key: from the message when serde names it, else the `key =` the error points into.
fn parse_error(text: &str, origin: &str, e: &toml::de::Error) -> SimError {
    let span = e.span().unwrap_or(0..0);
    let (line, column) = line_col(text, span.start);
    // Serde names Rust types; say what a user writes instead.
    let message = e
        .message()
        .trim()
        .replace("expected u64", "expected a whole number (0 or more)")
        .replace("expected f64", "expected a number");
    let key = key_in_message(&message).or_else(|| key_before(text, span.start));
    SimError::Subscription {
        origin: origin.to_string(),
        line,
        column,
        key,
        message,
    }
}

/// `unknown field `x`` / `missing field `x``: the key serde names.
fn key_in_message(message: &str) -> Option<String> {
    let rest = message.split("field `").nth(1)?;
    Some(rest.split('`').next()?.to_string())
}

/// The key of the `key = value` the offset falls in (on its line, the last `=` before it).
fn key_before(text: &str, offset: usize) -> Option<String> {
    let offset = offset.min(text.len());
    let line_start = text[..offset].rfind('\n').map_or(0, |p| p + 1);
    let head = &text[line_start..offset];
    let eq = head.rfind('=')?;
    let key = head[..eq]
        .trim_end()
        .rsplit(|c: char| c == '{' || c == ',' || c.is_whitespace())
        .next()?
        .trim_matches('"');
    (!key.is_empty()).then(|| key.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn embedded_subscription_meets_the_brief() {
        let s = Subscription::embedded_default();
        assert!(s.vms.len() >= 12, "{} VMs", s.vms.len());
        let regions: BTreeSet<_> = s.vms.iter().map(|v| v.vm.region.as_str()).collect();
        assert!(regions.len() >= 3, "{regions:?}");
        let services: BTreeSet<_> = s.vms.iter().map(|v| v.vm.cloud_service.as_str()).collect();
        assert!(services.len() >= 4, "{services:?}");
        assert!(s.vms.iter().any(|v| v.vm.os == Os::Linux));
        assert!(s.vms.iter().any(|v| v.vm.os == Os::Windows));
        assert!(s
            .vms
            .iter()
            .any(|v| v.vm.power_state == PowerState::Running));
        assert!(s
            .vms
            .iter()
            .any(|v| v.vm.power_state != PowerState::Running));
        // Two VMs share a name in different cloud services of the same region.
        let dup = s.vms.iter().any(|a| {
            s.vms.iter().any(|b| {
                a.vm.name == b.vm.name
                    && a.vm.cloud_service != b.vm.cloud_service
                    && a.vm.region == b.vm.region
            })
        });
        assert!(dup, "a duplicated name in one region");
        // One VM fails every backup with details an administrator can act on.
        let failing: Vec<_> = s
            .vms
            .iter()
            .filter(|v| v.backup_failure.is_some())
            .collect();
        assert_eq!(failing.len(), 1);
        let f = failing[0].backup_failure.as_ref().unwrap();
        assert!(!f.code.is_empty() && !f.title.is_empty() && !f.message.is_empty());
        assert!(!f.recommendations.is_empty());
        // Capacities 30 GiB – 1 TiB, a small allocated part, some data disks.
        let mut total_allocated = 0;
        for v in &s.vms {
            for (info, d) in v.vm.disks.iter().zip(&v.disks) {
                assert!(
                    (30 * GIB..=1024 * GIB).contains(&info.capacity),
                    "{}",
                    info.name
                );
                assert!(
                    (10 * MIB..=400 * MIB).contains(&d.allocated),
                    "{}",
                    info.name
                );
                total_allocated += d.allocated;
            }
            assert!(v.vm.source_id == format!("sim:/{}/{}", v.vm.cloud_service, v.vm.name));
        }
        assert!(s.vms.iter().any(|v| v.vm.disks.len() > 1));
        assert!(
            (GIB..=2 * GIB).contains(&total_allocated),
            "{} MiB",
            total_allocated / MIB
        );
    }

    fn error_of(text: &str) -> SimError {
        Subscription::from_toml_str(text, "my-sub.toml").unwrap_err()
    }

    const HEAD: &str = "name = \"t\"\nseed = 1\norigin = \"2025-01-01\"\n";
    const VM: &str = "[[vm]]\nname = \"a\"\ncloud_service = \"rg\"\nregion = \"westeurope\"\nos = \"Linux\"\nsize = \"Standard_B1s\"\npower_state = \"Running\"\n";

    fn line_and_key(e: &SimError) -> (usize, Option<String>) {
        match e {
            SimError::Subscription { line, key, .. } => (*line, key.clone()),
            other => panic!("not a subscription error: {other}"),
        }
    }

    #[test]
    fn a_minimal_file_parses_with_defaults() {
        let text = format!("{HEAD}{VM}disks = [{{ capacity_gib = 30, allocated_mib = 10 }}, {{ capacity_gib = 64, allocated_mib = 0 }}]\n");
        let s = Subscription::from_toml_str(&text, "x.toml").unwrap();
        let v = &s.vms[0];
        assert_eq!(v.vm.source_id, "sim:/rg/a");
        assert_eq!(v.vm.disks[0].name, "a_OsDisk_1");
        assert_eq!(v.vm.disks[1].name, "a_DataDisk_0");
        assert_eq!(v.disks[0].content, Content::Os);
        assert_eq!(v.disks[1].content, Content::Files);
        assert_eq!(v.vm_agent, VmAgent::Ready);
        assert_eq!(s.daily_change_percent, DEFAULT_DAILY_CHANGE_PERCENT);
    }

    #[test]
    fn broken_files_name_the_line_and_key() {
        let disks = "disks = [{ capacity_gib = 30, allocated_mib = 10 }]\n";
        // An unknown key (line 11: after 3 head lines and 7 VM lines).
        let e = error_of(&format!("{HEAD}{VM}{disks}colour = \"blue\"\n"));
        assert_eq!(line_and_key(&e), (12, Some("colour".into())), "{e}");
        assert!(e.to_string().starts_with("my-sub.toml:12:"), "{e}");
        // A wrong type, inside an inline table.
        let e = error_of(&format!(
            "{HEAD}{VM}disks = [{{ capacity_gib = \"big\", allocated_mib = 10 }}]\n"
        ));
        assert_eq!(line_and_key(&e), (11, Some("capacity_gib".into())), "{e}");
        // An invalid value.
        let e = error_of(&format!(
            "{HEAD}{}{disks}",
            VM.replace("\"Linux\"", "\"Solaris\"")
        ));
        assert_eq!(line_and_key(&e), (8, Some("vm.os".into())));
        assert!(e.to_string().contains("Linux, Windows"), "{e}");
        // A missing key.
        let e = error_of(&format!(
            "{HEAD}{}{disks}",
            VM.replace("region = \"westeurope\"\n", "")
        ));
        assert_eq!(line_and_key(&e).1, Some("region".into()), "{e}");
        // Allocated more than the capacity.
        let e = error_of(&format!(
            "{HEAD}{VM}disks = [{{ capacity_gib = 1, allocated_mib = 2048 }}]\n"
        ));
        assert_eq!(
            line_and_key(&e),
            (11, Some("vm.disks.allocated_mib".into()))
        );
        // Not TOML at all.
        let e = error_of("name = \n");
        assert_eq!(line_and_key(&e).0, 1);
        // A bad date.
        let e = error_of("name = \"t\"\nseed = 1\norigin = \"1 Jan\"\n");
        assert_eq!(line_and_key(&e), (3, Some("origin".into())));
        // The same VM twice.
        let e = error_of(&format!("{HEAD}{VM}{disks}{VM}{disks}"));
        assert_eq!(line_and_key(&e), (13, Some("vm.name".into())), "{e}");
    }

    #[test]
    fn synthesizes_ten_thousand_vms() {
        let mut s = Subscription::embedded_default();
        s.synthesize(10_000);
        assert_eq!(s.vms.len(), 10_000);
        assert_eq!(s.vms[0].vm.name, "vm-00001");
        assert_eq!(s.vms[9_999].vm.name, "vm-10000");
        let ids: BTreeSet<_> = s.vms.iter().map(|v| v.vm.source_id.as_str()).collect();
        assert_eq!(ids.len(), 10_000, "source ids are unique");
        let regions: BTreeSet<_> = s.vms.iter().map(|v| v.vm.region.as_str()).collect();
        assert_eq!(regions.len(), 3);
        let services: BTreeSet<_> = s.vms.iter().map(|v| v.vm.cloud_service.as_str()).collect();
        assert_eq!(services.len(), 40);
        assert_eq!(s.regions()[0], "westeurope");
    }
}
