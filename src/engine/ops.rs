//! Item operations: discover, register, protect, stop / resume protection, undelete, and
//! policy management. Each validates first (refusing bad input with nothing changed),
//! then runs as jobs.

use super::jobs::{JobEnd, JobFail, JobSpec};
use super::{usage, Engine, Event, NoticeLevel, Result};
use crate::model::*;
use crate::policy::Policy;
use crate::provider::Discovery;
use chrono::{DateTime, Duration, Utc};
use std::collections::HashMap;
use std::path::Path;

/// What re-evaluating recovery points' expiries did (a policy edit).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExpiryChanges {
    /// Points looked at (every point of the items under the policy).
    pub evaluated: usize,
    /// Points whose expiry changed (on-demand points keep their own date).
    pub changed: usize,
}

/// Limits from DOMAIN.md (Azure Backup's): protected VMs per vault, VMs in one protect
/// operation.
pub const MAX_PROTECTED_PER_VAULT: usize = 1000;
pub const MAX_ITEMS_PER_PROTECT: usize = 100;
/// VMs in one register operation (one job each): as many as a vault can protect, so one
/// command can register a whole vault's worth.
pub const MAX_ITEMS_PER_REGISTER: usize = MAX_PROTECTED_PER_VAULT;
/// Soft-deleted data is kept this long before it is purged.
pub const SOFT_DELETE_DAYS: i64 = 14;

/// What a discovery found.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct DiscoveryResult {
    pub found: usize,
    pub new: usize,
    pub no_longer_found: usize,
    /// The Discover job's warnings: VMs that cannot be read, VMs that became part of
    /// another, and what the source reported.
    pub warnings: Vec<String>,
}

impl Engine {
    /// Starts a Discover job.
    pub fn discover(&self) -> Result<String> {
        self.require_owner()?;
        if let Some(id) = self.running_of_op(JobOperation::Discover) {
            return usage(format!("discovery is already running (job {id})"));
        }
        let spec = JobSpec::new(JobOperation::Discover, None, &["Discover virtual machines"]);
        self.spawn_job(spec, |ctx| {
            ctx.start_task(0);
            ctx.engine.notice(
                NoticeLevel::Info,
                "Discovering virtual machines…",
                Some(&ctx.id()),
            );
            let found = ctx.engine.inner.opts.provider.discover(&ctx.cancel)?;
            ctx.cancel.check()?;
            let r = ctx.engine.merge_discovery(&found)?;
            ctx.detail("found", r.found);
            ctx.detail("new", r.new);
            ctx.detail("no_longer_found", r.no_longer_found);
            let warnings = r.warnings;
            let with_warnings = if warnings.is_empty() {
                String::new()
            } else {
                format!(", {} warning(s) (see job {})", warnings.len(), ctx.id())
            };
            ctx.engine.notice(
                if warnings.is_empty() {
                    NoticeLevel::Info
                } else {
                    NoticeLevel::Warning
                },
                format!(
                    "Discovery complete: {} found, {} new, {} no longer found{with_warnings}",
                    r.found, r.new, r.no_longer_found
                ),
                Some(&ctx.id()),
            );
            ctx.engine.publish(Event::ItemsChanged);
            Ok(JobEnd::Done { warnings })
        })
    }

    /// Records what discovery saw: new VMs, changed facts, VMs no longer found. Nothing
    /// backed up is deleted because a VM disappeared. A VM the source lists as unreadable
    /// is kept (its facts as last known) with its error; one the source says became part
    /// of another is marked not found with the reason. Returns the counts and the Discover
    /// job's warnings.
    pub(crate) fn merge_discovery(&self, found: &Discovery) -> Result<DiscoveryResult> {
        let now = self.now();
        let existing: HashMap<String, Item> = self
            .inner
            .catalog
            .items()?
            .into_iter()
            .map(|i| (i.id.clone(), i))
            .collect();
        let mut result = DiscoveryResult {
            found: found.vms.len() + found.unreadable.len(),
            warnings: found.warnings.clone(),
            ..Default::default()
        };
        let listed = found
            .vms
            .iter()
            .map(|vm| (vm, None))
            .chain(found.unreadable.iter().map(|(vm, e)| (vm, Some(e))));
        let absorbed: HashMap<&str, &ErrorDetails> = found
            .absorbed
            .iter()
            .map(|(id, e)| (id.as_str(), e))
            .collect();
        let mut seen = std::collections::HashSet::new();
        self.inner.catalog.transaction(|tx| {
            for (vm, error) in listed {
                seen.insert(vm.source_id.as_str());
                if let Some(e) = error {
                    result
                        .warnings
                        .push(format!("{}: {}", vm.qualified_name(), e.message));
                }
                let item = match (existing.get(&vm.source_id), error) {
                    // Unreadable: what was known stays, with the error.
                    (Some(old), Some(e)) => Item {
                        not_found: false,
                        last_error: Some(e.clone()),
                        ..old.clone()
                    },
                    (Some(old), None) => Item {
                        // A VM again on its own: the reason it was not is gone.
                        last_error: old
                            .last_error
                            .clone()
                            .filter(|e| e.code != crate::provider::VM_ABSORBED),
                        name: vm.name.clone(),
                        cloud_service: vm.cloud_service.clone(),
                        region: vm.region.clone(),
                        os: vm.os,
                        size: vm.size.clone(),
                        power_state: vm.power_state,
                        disks: vm.disks.clone(),
                        not_found: false,
                        ..old.clone()
                    },
                    (None, error) => {
                        result.new += 1;
                        Item {
                            id: vm.source_id.clone(),
                            name: vm.name.clone(),
                            cloud_service: vm.cloud_service.clone(),
                            region: vm.region.clone(),
                            os: vm.os,
                            size: vm.size.clone(),
                            power_state: vm.power_state,
                            disks: vm.disks.clone(),
                            registration_state: RegistrationState::NotRegistered,
                            protection_state: ProtectionState::NotProtected,
                            policy: None,
                            last_backup_time: None,
                            last_backup_status: None,
                            not_found: false,
                            discovered_at: now,
                            purge_at: None,
                            last_scheduled_run: None,
                            last_error: error.cloned(),
                        }
                    }
                };
                crate::vault::catalog::Catalog::put_item_tx(tx, &item)?;
            }
            for (id, old) in &existing {
                if seen.contains(id.as_str()) {
                    continue;
                }
                let why = absorbed.get(id.as_str());
                if let Some(e) = why {
                    result
                        .warnings
                        .push(format!("{}: {}", old.qualified_name(), e.message));
                }
                if old.not_found && why.is_none() {
                    continue;
                }
                if !old.not_found {
                    result.no_longer_found += 1;
                }
                let item = Item {
                    not_found: true,
                    last_error: why.map(|e| (*e).clone()).or_else(|| old.last_error.clone()),
                    ..old.clone()
                };
                crate::vault::catalog::Catalog::put_item_tx(tx, &item)?;
            }
            Ok(())
        })?;
        // Every item this discovery wrote (found now, or known before).
        let mut changed: Vec<String> = seen.iter().map(|s| s.to_string()).collect();
        changed.extend(
            existing
                .keys()
                .filter(|id| !seen.contains(id.as_str()))
                .cloned(),
        );
        self.inner.catalog.notify_items(&changed);
        Ok(result)
    }

    /// The message for a VM of another region than the vault's.
    fn region_refusal(&self, item: &Item, what: &str) -> String {
        let others: Vec<&(String, String)> = self
            .inner
            .opts
            .other_vaults
            .iter()
            .filter(|(_, r)| r.eq_ignore_ascii_case(&item.region))
            .collect();
        let hint = match others.first() {
            Some((name, _)) => format!("use vault {name}, which is in {}: `vmvault --vault {name} {what} {}`", item.region, item.qualified_name()),
            None => format!("create a vault in region {} (a [[vault]] with region = \"{}\" in the config file) and use it with --vault", item.region, item.region),
        };
        format!(
            "cannot {what} {}: the VM is in region {}, but vault {} is in region {}. A VM can only be backed up into a vault in its own region; {hint}",
            item.qualified_name(),
            item.region,
            self.vault_name(),
            self.region()
        )
    }

    /// Starts one Register job per item. All items are checked first; if any is refused,
    /// nothing starts.
    pub fn register(&self, items: &[Item]) -> Result<Vec<String>> {
        self.require_owner()?;
        if items.is_empty() {
            return usage("name at least one VM to register");
        }
        if items.len() > MAX_ITEMS_PER_REGISTER {
            return usage(format!(
                "{} VMs in one register operation: at most {MAX_ITEMS_PER_REGISTER} can be registered at once (as many as a vault protects); split the list",
                items.len()
            ));
        }
        for item in items {
            let item = self.item(&item.id)?.unwrap_or_else(|| item.clone());
            if !item.region.eq_ignore_ascii_case(self.region()) {
                return usage(self.region_refusal(&item, "register"));
            }
            if item.not_found {
                return usage(match absorbed_reason(&item) {
                    Some(e) => format!("cannot register {}: {}", item.qualified_name(), e.message),
                    None => format!(
                        "cannot register {}: the VM was not found at the last discovery; run `vmvault discover` to refresh",
                        item.qualified_name()
                    ),
                });
            }
            match item.registration_state {
                RegistrationState::Registered => {
                    return usage(format!(
                        "{} is already registered with vault {}",
                        item.qualified_name(),
                        self.vault_name()
                    ))
                }
                RegistrationState::Registering => {
                    return usage(format!(
                        "{} is being registered already",
                        item.qualified_name()
                    ))
                }
                _ => {}
            }
        }
        let mut ids = Vec::new();
        for item in items {
            let updated = self.inner.catalog.update_item(&item.id, |i| {
                i.registration_state = RegistrationState::Registering;
                i.last_error = None;
            })?;
            self.publish(Event::ItemsChanged);
            let spec = JobSpec::new(
                JobOperation::Register,
                Some(&updated),
                &["Register virtual machine"],
            );
            let item_id = updated.id.clone();
            let vm = item_vm(&updated);
            let id = self.spawn_job(spec, move |ctx| {
                ctx.start_task(0);
                let result = ctx.engine.inner.opts.provider.register(&vm, &ctx.cancel);
                let (state, error, outcome) = match result {
                    Ok(report) => {
                        ctx.detail("findings", report.findings.clone());
                        let warnings = report.warnings.clone();
                        (
                            RegistrationState::Registered,
                            None,
                            Ok(JobEnd::Done { warnings }),
                        )
                    }
                    Err(crate::provider::ProviderError::Cancelled) => (
                        RegistrationState::NotRegistered,
                        None,
                        Err(JobFail::Cancelled),
                    ),
                    Err(crate::provider::ProviderError::Failed(d)) => (
                        RegistrationState::RegistrationFailed,
                        Some(d.clone()),
                        Err(JobFail::Failed(d)),
                    ),
                };
                ctx.engine.inner.catalog.update_item(&item_id, |i| {
                    i.registration_state = state;
                    i.last_error = error;
                })?;
                ctx.engine.publish(Event::ItemsChanged);
                outcome
            })?;
            ids.push(id);
        }
        Ok(ids)
    }

    /// Protects items with a policy: one ConfigureBackup job per item. The items become
    /// IRPending ("Protected (pending initial backup)"); the first scheduled backup (or a
    /// Back up now) is the initial backup.
    pub fn protect(&self, items: &[Item], policy_name: &str) -> Result<Vec<String>> {
        self.require_owner()?;
        if items.is_empty() {
            return usage("name at least one VM to protect");
        }
        if items.len() > MAX_ITEMS_PER_PROTECT {
            return usage(format!(
                "{} VMs in one protect operation: at most {MAX_ITEMS_PER_PROTECT} can be protected at once (Azure Backup's limit per operation); split the list",
                items.len()
            ));
        }
        let policy = self.policy(policy_name)?;
        let all = self.items()?;
        let protected = all
            .iter()
            .filter(|i| i.protection_state.is_under_policy())
            .count();
        if protected + items.len() > MAX_PROTECTED_PER_VAULT {
            return usage(format!(
                "vault {} protects {protected} VMs; protecting {} more would pass the limit of {MAX_PROTECTED_PER_VAULT} per vault. Use another vault in the same region",
                self.vault_name(),
                items.len()
            ));
        }
        for item in items {
            let item = self.item(&item.id)?.unwrap_or_else(|| item.clone());
            if !item.region.eq_ignore_ascii_case(self.region()) {
                return usage(self.region_refusal(&item, "protect"));
            }
            if item.registration_state != RegistrationState::Registered {
                return usage(format!(
                    "cannot protect {}: it is not registered (state {}); run `vmvault register {}` first",
                    item.qualified_name(),
                    item.registration_state,
                    item.qualified_name()
                ));
            }
            if item.protection_state != ProtectionState::NotProtected {
                let hint = match item.protection_state {
                    ProtectionState::ProtectionStopped => format!(
                        "; use `vmvault resume-protection {} --policy {}` to resume it",
                        item.qualified_name(),
                        policy.name
                    ),
                    ProtectionState::SoftDeleted => format!(
                        "; its data is soft-deleted: `vmvault undelete {}` first",
                        item.qualified_name()
                    ),
                    _ => String::new(),
                };
                return usage(format!(
                    "{} is already {} (policy {}){hint}",
                    item.qualified_name(),
                    item.protection_state.label().to_lowercase(),
                    item.policy.as_deref().unwrap_or("none")
                ));
            }
            if let Some(id) = self.running_on_item(&item.id, &[JobOperation::ConfigureBackup]) {
                return usage(format!(
                    "{} is being protected already (job {id})",
                    item.qualified_name()
                ));
            }
        }
        let mut ids = Vec::new();
        for item in items {
            let mut spec = JobSpec::new(
                JobOperation::ConfigureBackup,
                Some(item),
                &["Configure protection"],
            );
            spec.details
                .insert("policy".into(), policy.name.clone().into());
            let item_id = item.id.clone();
            let policy_name = policy.name.clone();
            let id = self.spawn_job(spec, move |ctx| {
                ctx.start_task(0);
                let now = ctx.engine.now();
                ctx.engine.inner.catalog.update_item(&item_id, |i| {
                    i.protection_state = ProtectionState::IrPending;
                    i.policy = Some(policy_name.clone());
                    i.last_scheduled_run = Some(now);
                    i.last_error = None;
                })?;
                ctx.engine.publish(Event::ItemsChanged);
                Ok(JobEnd::Done { warnings: vec![] })
            })?;
            ids.push(id);
        }
        Ok(ids)
    }

    /// Stops protection: keep the data (DisableBackup: points kept until deleted by hand,
    /// retention no longer applies) or delete it (DeleteBackupData: soft delete for 14
    /// days, then purged; `undelete` brings it back).
    pub fn stop_protection(&self, item: &Item, delete_data: bool) -> Result<String> {
        self.require_owner()?;
        let item = self.item(&item.id)?.unwrap_or_else(|| item.clone());
        let allowed = if delete_data {
            item.protection_state.is_under_policy()
                || item.protection_state == ProtectionState::ProtectionStopped
        } else {
            item.protection_state.is_under_policy()
        };
        if !allowed {
            return usage(format!(
                "cannot stop protection of {}: it is {}",
                item.qualified_name(),
                item.protection_state.label().to_lowercase()
            ));
        }
        if let Some(id) =
            self.running_on_item(&item.id, &[JobOperation::Backup, JobOperation::Restore])
        {
            return usage(format!(
                "{} has a job running (job {id}); wait for it or cancel it (`vmvault cancel {id}`), then stop protection",
                item.qualified_name()
            ));
        }
        let op = if delete_data {
            JobOperation::DeleteBackupData
        } else {
            JobOperation::DisableBackup
        };
        let spec = JobSpec::new(op, Some(&item), &["Stop protection"]);
        let item_id = item.id.clone();
        self.spawn_job(spec, move |ctx| {
            ctx.start_task(0);
            let now = ctx.engine.now();
            let points = ctx.engine.inner.catalog.points(&item_id)?;
            // Points are kept until deleted by hand (retain) or until the purge (delete).
            let keep: Vec<(String, Option<DateTime<Utc>>)> =
                points.iter().map(|p| (p.id.clone(), None)).collect();
            ctx.engine.inner.catalog.set_point_expiries(&keep)?;
            let purge_at = now + Duration::days(SOFT_DELETE_DAYS);
            ctx.engine.inner.catalog.update_item(&item_id, |i| {
                if delete_data {
                    i.protection_state = ProtectionState::SoftDeleted;
                    i.purge_at = Some(purge_at);
                } else {
                    i.protection_state = ProtectionState::ProtectionStopped;
                }
                i.policy = None;
            })?;
            if delete_data {
                ctx.detail("purge_at", crate::vault::catalog::fmt_time(purge_at));
            }
            ctx.detail("points", points.len());
            ctx.engine.publish(Event::ItemsChanged);
            ctx.engine.publish(Event::PointsChanged {
                item_id: item_id.clone(),
            });
            Ok(JobEnd::Done { warnings: vec![] })
        })
    }

    /// Brings soft-deleted data back; the item becomes ProtectionStopped.
    pub fn undelete(&self, item: &Item) -> Result<String> {
        self.require_owner()?;
        let item = self.item(&item.id)?.unwrap_or_else(|| item.clone());
        if item.protection_state != ProtectionState::SoftDeleted {
            return usage(format!(
                "{} is not soft-deleted (it is {}); nothing to undelete",
                item.qualified_name(),
                item.protection_state.label().to_lowercase()
            ));
        }
        let spec = JobSpec::new(JobOperation::Undelete, Some(&item), &["Undelete"]);
        let item_id = item.id.clone();
        self.spawn_job(spec, move |ctx| {
            ctx.start_task(0);
            ctx.engine.inner.catalog.update_item(&item_id, |i| {
                i.protection_state = ProtectionState::ProtectionStopped;
                i.purge_at = None;
            })?;
            ctx.engine.publish(Event::ItemsChanged);
            Ok(JobEnd::Done { warnings: vec![] })
        })
    }

    /// Resumes protection of a stopped item with a policy (a ConfigureBackup job). Its
    /// scheduled points get their expiry from the policy again.
    pub fn resume_protection(&self, item: &Item, policy_name: &str) -> Result<String> {
        self.require_owner()?;
        let item = self.item(&item.id)?.unwrap_or_else(|| item.clone());
        let policy = self.policy(policy_name)?;
        match item.protection_state {
            ProtectionState::ProtectionStopped | ProtectionState::BackupsSuspended => {}
            ProtectionState::SoftDeleted => {
                return usage(format!(
                    "{} is soft-deleted: run `vmvault undelete {}` first, then resume protection",
                    item.qualified_name(),
                    item.qualified_name()
                ))
            }
            s => {
                return usage(format!(
                "cannot resume protection of {}: it is {} (resume applies to stopped protection)",
                item.qualified_name(),
                s.label().to_lowercase()
            ))
            }
        }
        if !item.region.eq_ignore_ascii_case(self.region()) {
            return usage(self.region_refusal(&item, "protect"));
        }
        let mut spec = JobSpec::new(
            JobOperation::ConfigureBackup,
            Some(&item),
            &["Resume protection"],
        );
        spec.details
            .insert("policy".into(), policy.name.clone().into());
        let item_id = item.id.clone();
        self.spawn_job(spec, move |ctx| {
            ctx.start_task(0);
            let now = ctx.engine.now();
            let has_points = !ctx.engine.inner.catalog.points(&item_id)?.is_empty();
            ctx.engine.inner.catalog.update_item(&item_id, |i| {
                i.protection_state = if has_points {
                    ProtectionState::Protected
                } else {
                    ProtectionState::IrPending
                };
                i.policy = Some(policy.name.clone());
                i.last_scheduled_run = Some(now);
            })?;
            ctx.engine.reevaluate_item_expiries(&item_id, &policy)?;
            ctx.engine.publish(Event::ItemsChanged);
            ctx.engine.publish(Event::PointsChanged {
                item_id: item_id.clone(),
            });
            Ok(JobEnd::Done { warnings: vec![] })
        })
    }

    // ---------------------------------------------------------------- policies

    /// Adds a new policy. Its name must be new.
    pub fn create_policy(&self, policy: &Policy) -> Result<()> {
        self.require_owner()?;
        policy
            .validate()
            .map_err(|e| super::EngineError::Usage(e.to_string()))?;
        if let Some(existing) = self.inner.catalog.policy(&policy.name)? {
            return usage(format!(
                "a policy named \"{}\" exists already; choose another name or use `vmvault policy update {}`",
                policy.name, existing.name
            ));
        }
        self.inner
            .catalog
            .put_policy(&policy.name, &policy.to_toml_string(), false, self.now())?;
        self.publish(Event::PoliciesChanged);
        Ok(())
    }

    /// Replaces a policy's schedule and retention. Existing points of its items are
    /// re-evaluated: longer retention keeps them longer, shorter lets them go at the next
    /// clean-up.
    pub fn update_policy(&self, name: &str, policy: &Policy) -> Result<ExpiryChanges> {
        self.require_owner()?;
        let old = self.policy(name)?;
        if !policy.name.eq_ignore_ascii_case(&old.name) {
            return usage(format!(
                "the file names policy \"{}\" but you are updating \"{}\"; renaming is not supported (create a new policy and resume items with it)",
                policy.name, old.name
            ));
        }
        policy
            .validate()
            .map_err(|e| super::EngineError::Usage(e.to_string()))?;
        let mut p = policy.clone();
        p.name = old.name.clone();
        self.inner
            .catalog
            .put_policy(&p.name, &p.to_toml_string(), false, self.now())?;
        let mut n = ExpiryChanges::default();
        for item in self.items()? {
            if item.policy.as_deref() == Some(p.name.as_str())
                && item.protection_state.is_under_policy()
            {
                let c = self.reevaluate_item_expiries(&item.id, &p)?;
                n.evaluated += c.evaluated;
                n.changed += c.changed;
            }
        }
        self.publish(Event::PoliciesChanged);
        Ok(n)
    }

    /// Deletes a policy no item uses.
    pub fn delete_policy(&self, name: &str) -> Result<()> {
        self.require_owner()?;
        let p = self.policy(name)?;
        let users: Vec<String> = self
            .items()?
            .into_iter()
            .filter(|i| i.policy.as_deref() == Some(p.name.as_str()))
            .map(|i| i.qualified_name())
            .collect();
        if !users.is_empty() {
            return usage(format!(
                "policy {} is used by {} item(s): {}; stop or move their protection first",
                p.name,
                users.len(),
                users.join(", ")
            ));
        }
        if let Some(row) = self.inner.catalog.policy(&p.name)? {
            if row.builtin {
                return usage(format!("{} is built in and cannot be deleted", p.name));
            }
        }
        self.inner.catalog.delete_policy(&p.name)?;
        self.publish(Event::PoliciesChanged);
        Ok(())
    }

    /// Sets the expiry of every point of an item under `policy`: scheduled points from the
    /// retention rules, on-demand points from their own retain-until. Says how many points
    /// were evaluated and how many of them now expire at another time.
    pub(crate) fn reevaluate_item_expiries(
        &self,
        item_id: &str,
        policy: &Policy,
    ) -> Result<ExpiryChanges> {
        let points = self.inner.catalog.points(item_id)?;
        let mut updates = Vec::with_capacity(points.len());
        for p in &points {
            let expiry = match p.kind {
                PointKind::Scheduled => Some(crate::policy::expiry_of(policy, p.scheduled_time)),
                PointKind::OnDemand => self.inner.catalog.point_retain_until(&p.id)?,
            };
            if expiry != p.expiry {
                updates.push((p.id.clone(), expiry));
            }
        }
        self.inner.catalog.set_point_expiries(&updates)?;
        if !updates.is_empty() {
            self.publish(Event::PointsChanged {
                item_id: item_id.to_string(),
            });
        }
        Ok(ExpiryChanges {
            evaluated: points.len(),
            changed: updates.len(),
        })
    }

    /// After a restart: items left mid-operation by an interrupted job get a settled state.
    pub(crate) fn after_interrupted(&self, job: &Job) -> Result<()> {
        let Some(item_id) = &job.item_id else {
            return Ok(());
        };
        match job.operation {
            JobOperation::Register => {
                self.inner.catalog.update_item(item_id, |i| {
                    if i.registration_state == RegistrationState::Registering {
                        i.registration_state = RegistrationState::RegistrationFailed;
                        i.last_error = job.error.clone();
                    }
                })?;
            }
            JobOperation::Restore => {
                let targets = job.details.get("targets").and_then(|v| v.as_array());
                for t in targets.into_iter().flatten().filter_map(|v| v.as_str()) {
                    super::restore_target::remove_leftovers(&job.id, Path::new(t));
                }
            }
            JobOperation::Backup => {
                self.inner.catalog.update_item(item_id, |i| {
                    i.last_backup_status = Some(JobStatus::Failed);
                    i.last_backup_time = Some(job.start_time);
                    if i.protection_state.is_under_policy() {
                        i.protection_state = ProtectionState::ProtectionError;
                    }
                    i.last_error = job.error.clone();
                })?;
            }
            _ => {}
        }
        Ok(())
    }
}

/// Why an item that is not found is no VM of its own any more, when the source said (an
/// image that became the backing file of another).
pub(crate) fn absorbed_reason(item: &Item) -> Option<&ErrorDetails> {
    item.last_error
        .as_ref()
        .filter(|e| item.not_found && e.code == crate::provider::VM_ABSORBED)
}

/// The VM an item stands for (as the provider needs it).
pub(crate) fn item_vm(item: &Item) -> Vm {
    Vm {
        source_id: item.id.clone(),
        name: item.name.clone(),
        cloud_service: item.cloud_service.clone(),
        region: item.region.clone(),
        os: item.os,
        size: item.size.clone(),
        power_state: item.power_state,
        disks: item.disks.clone(),
    }
}
