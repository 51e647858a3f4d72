//! Keeping a format 2 vault's description of itself up to date: the catalog's mirror
//! writes item and policy objects and rewrites point manifests after each change (see
//! [`crate::vault::manifest`]).

use crate::vault::catalog::{Catalog, CatalogMirror};
use crate::vault::manifest::{self, PointManifest};
use crate::vault::store::Vault;
use std::path::PathBuf;

/// The catalog mirror of a format 2 vault.
pub(crate) struct VaultMirror {
    /// Its own handle on the vault's store (for the codec and the format).
    pub store: Vault,
    pub dir: PathBuf,
    pub vault_id: String,
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
            if let Err(e) = manifest::write_item(&self.store, &self.vault_id, id, item.as_ref()) {
                self.warn("item", &e);
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
            if m.point == point {
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
