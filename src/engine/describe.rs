//! Keeping a format 2 vault's description of itself up to date: the catalog's mirror
//! writes item and policy objects and rewrites point manifests after each change (see
//! [`crate::vault::manifest`]).
//!
//! What a rebuild can work out from the points is left out of the triggers: an item's
//! object is rewritten when what it says about the item changes, not when only its last
//! successful backup (time, status) or its last scheduled run moved on (a failed,
//! cancelled or warned backup leaves no point to tell, and rewrites it), and a point's manifest
//! when its row changes other than its STORED size (a prune restates the point after the
//! one it removes). A rebuild takes the last backup and the last scheduled run from the
//! newest point when that is newer than the item's object, and measures STORED from the
//! indexes again ([`crate::engine::rebuild`]). Each backup otherwise rewrote its item's
//! object twice (as it started and as it was committed), and each prune a manifest per
//! item: on an object store every rewrite is a request, on a local disk an fsync.

use crate::model::JobStatus;
use crate::vault::catalog::{Catalog, CatalogMirror};
use crate::vault::manifest::{self, PointManifest};
use crate::vault::store::Vault;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;

/// The catalog mirror of a format 2 vault.
pub(crate) struct VaultMirror {
    /// Its own handle on the vault's store (for the codec and the format).
    pub store: Vault,
    pub dir: PathBuf,
    pub vault_id: String,
    /// What this mirror last wrote of each item (a hash of [`described`]); an item seen
    /// for the first time is always written.
    pub written_items: Mutex<HashMap<String, blake3::Hash>>,
}

/// The part of an item its object must keep up with: all of it but what moves on with
/// every successful backup and can be worked out from the points. After any other outcome
/// (failed, cancelled, completed with warnings: no point says so) all of it, so that the
/// object is rewritten for each such outcome.
fn described(item: &crate::model::Item) -> blake3::Hash {
    if !matches!(item.last_backup_status, None | Some(JobStatus::Completed)) {
        return blake3::hash(&serde_json::to_vec(item).unwrap_or_default());
    }
    let mut stable = item.clone();
    stable.last_backup_time = None;
    stable.last_backup_status = None;
    stable.last_scheduled_run = None;
    stable.last_error = None;
    // Serializing an item cannot fail (plain data); an empty encoding, never equal to a
    // real one, makes the item written.
    blake3::hash(&serde_json::to_vec(&stable).unwrap_or_default())
}

/// Whether two rows of a point differ in more than their STORED size.
fn point_differs(a: &crate::model::RecoveryPoint, b: &crate::model::RecoveryPoint) -> bool {
    let mut a = a.clone();
    a.stored_bytes = b.stored_bytes;
    a != *b
}

impl VaultMirror {
    fn warn(&self, what: &str, e: &dyn std::fmt::Display) {
        tracing::warn!(
            vault = %self.dir.display(),
            "could not update the vault's own description ({what}): {e}; the catalog is unaffected, and a rebuild would use an older description"
        );
    }
}

impl CatalogMirror for VaultMirror {
    /// Rewrites the objects of the items `ids`, side by side (replacing a file waits for
    /// the disk to discard the old one's blocks on file systems mounted with `discard`).
    fn items_changed(&self, catalog: &Catalog, ids: &[String]) {
        super::in_parallel(ids, |id| {
            let item = match catalog.item(id) {
                Ok(i) => i,
                Err(e) => return self.warn("reading an item", &e),
            };
            let form = item.as_ref().map(described);
            {
                let written = self.written_items.lock().unwrap_or_else(|p| p.into_inner());
                if form.is_some() && written.get(id) == form.as_ref() {
                    return;
                }
            }
            match manifest::write_item(&self.store, &self.vault_id, id, item.as_ref()) {
                Ok(()) => {
                    let mut written = self.written_items.lock().unwrap_or_else(|p| p.into_inner());
                    match form {
                        Some(f) => written.insert(id.clone(), f),
                        None => written.remove(id),
                    };
                }
                Err(e) => {
                    // Written again at its next change.
                    self.written_items
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .remove(id);
                    self.warn("item", &e);
                }
            }
        });
    }

    fn policies_changed(&self, catalog: &Catalog, names: &[String]) {
        for name in names {
            let row = match catalog.policy(name) {
                Ok(r) => r,
                Err(e) => return self.warn("reading a policy", &e),
            };
            if let Err(e) = manifest::write_policy(&self.store, &self.vault_id, name, row.as_ref())
            {
                self.warn("policy", &e);
            }
        }
    }

    /// Rewrites the manifests of the points `ids` whose rows changed, side by side and
    /// unsynced, then makes them durable with one sync of the store (a prune restates a
    /// point per item: one by one, their fsyncs were most of a `sim advance` round's prune;
    /// a replacing put still waits for its own temp file's fsync, and those run at once).
    fn points_changed(&self, catalog: &Catalog, ids: &[String]) {
        let written = super::in_parallel(ids, |id| {
            let point = match catalog.point(id) {
                Ok(Some(p)) => p,
                Ok(None) => return false,
                Err(e) => {
                    self.warn("reading a point", &e);
                    return false;
                }
            };
            let mut m: PointManifest =
                match manifest::read_manifest(&self.store, id, &self.vault_id) {
                    Ok(m) => m,
                    Err(e) => {
                        self.warn("reading a point manifest", &e);
                        return false;
                    }
                };
            if !point_differs(&m.point, &point) {
                return false;
            }
            m.point = point;
            match manifest::write_manifest(&self.store, &m, false) {
                Ok(()) => true,
                Err(e) => {
                    self.warn("point manifest", &e);
                    false
                }
            }
        });
        if written.contains(&true) {
            if let Err(e) = self.store.sync() {
                self.warn("syncing point manifests", &e);
            }
        }
    }
}

/// What [`check_description`] found and did.
#[derive(Debug, Default)]
pub(crate) struct DescriptionCheck {
    /// Item and policy objects that were missing, damaged or behind the catalog, and were
    /// written again from it ("item sales/app01", "policy Gold").
    pub rewritten: Vec<String>,
    /// Objects that could not be written again, with why.
    pub not_rewritten: Vec<String>,
    /// Points whose manifest cannot be read (the point itself may be whole), with why.
    pub unreadable_manifests: Vec<String>,
}

/// Checks a format 2 vault's description of `items` (and the policies they name, or every
/// policy when `all_policies`) and of `points` against the catalog: an item or policy
/// object that is missing, cannot be read or says less than the catalog is written again
/// from the catalog (which is what a rebuild would need), durably; a point's manifest
/// cannot be (it keeps what the source said of the VM at that time, which the catalog does
/// not), so one that cannot be read is named. `verify` runs this: the description is
/// otherwise read only by a rebuild, when it is too late to mend it.
pub(crate) fn check_description(
    store: &Vault,
    catalog: &Catalog,
    vault_id: &str,
    items: &[crate::model::Item],
    points: &[crate::model::RecoveryPoint],
    all_policies: bool,
) -> crate::vault::catalog::Result<DescriptionCheck> {
    let mut out = DescriptionCheck::default();
    let mut names: Vec<String> = Vec::new();
    for item in items {
        let behind = match manifest::hashed_name(&item.id) {
            Ok(name) => match manifest::read_item(store, &name, vault_id) {
                Ok(r) => described(&r.item) != described(item),
                Err(_) => true,
            },
            Err(_) => true,
        };
        if behind {
            match manifest::write_item(store, vault_id, &item.id, Some(item)) {
                Ok(()) => out
                    .rewritten
                    .push(format!("item {}", item.qualified_name())),
                Err(e) => out
                    .not_rewritten
                    .push(format!("item {}: {e}", item.qualified_name())),
            }
        }
        names.extend(item.policy.iter().map(|p| p.to_lowercase()));
    }
    for row in catalog.policies()? {
        if !all_policies && !names.contains(&row.name.to_lowercase()) {
            continue;
        }
        let behind = match manifest::hashed_name(&row.name.to_lowercase()) {
            Ok(name) => match manifest::read_policy(store, &name, vault_id) {
                Ok(r) => r.row() != row,
                Err(_) => true,
            },
            Err(_) => true,
        };
        if behind {
            match manifest::write_policy(store, vault_id, &row.name, Some(&row)) {
                Ok(()) => out.rewritten.push(format!("policy {}", row.name)),
                Err(e) => out.not_rewritten.push(format!("policy {}: {e}", row.name)),
            }
        }
    }
    if !out.rewritten.is_empty() {
        if let Err(e) = store.sync() {
            out.not_rewritten.push(format!(
                "the rewritten objects could not be made durable: {e}"
            ));
        }
    }
    for p in points {
        if let Err(e) = manifest::read_manifest(store, &p.id, vault_id) {
            out.unreadable_manifests
                .push(format!("recovery point {}: {e}", p.id));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ProtectionState;
    use crate::vault::catalog::tests::{point_of, protected_item};

    #[test]
    fn an_item_is_described_anew_only_when_more_than_its_last_backup_changed() {
        let item = protected_item("a");
        let mut backed_up = item.clone();
        backed_up.last_backup_time = Some(chrono::Utc::now());
        backed_up.last_backup_status = Some(JobStatus::Completed);
        backed_up.last_scheduled_run = Some(chrono::Utc::now());
        assert_eq!(described(&item), described(&backed_up));
        let mut failing = backed_up.clone();
        failing.protection_state = ProtectionState::ProtectionError;
        assert_ne!(described(&backed_up), described(&failing));
        // No point tells of a failure or a warning: each one is described anew.
        for status in [JobStatus::Failed, JobStatus::CompletedWithWarnings] {
            let mut again = failing.clone();
            again.last_backup_status = Some(status);
            let mut later = again.clone();
            later.last_backup_time = Some(chrono::Utc::now() + chrono::Duration::days(1));
            assert_ne!(described(&again), described(&later), "{status:?}");
        }
        let mut other_policy = item.clone();
        other_policy.policy = Some("Other".into());
        assert_ne!(described(&item), described(&other_policy));
    }

    #[test]
    fn a_manifest_is_rewritten_only_when_more_than_stored_changed() {
        let item = protected_item("a");
        let p = point_of("p", &item);
        let mut restated = p.clone();
        restated.stored_bytes += 100;
        assert!(!point_differs(&p, &restated));
        let mut longer = p.clone();
        longer.expiry = Some(chrono::Utc::now());
        assert!(point_differs(&p, &longer));
    }
}
