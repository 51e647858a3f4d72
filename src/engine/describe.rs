//! Keeping a format 2 vault's description of itself up to date: the catalog's mirror
//! writes item and policy objects and rewrites point manifests after each change (see
//! [`crate::vault::manifest`]).

use crate::vault::catalog::{Catalog, CatalogMirror};
use crate::vault::manifest::{self, PointManifest};
use crate::vault::store::ChunkStore;
use std::path::PathBuf;

/// The catalog mirror of a format 2 vault.
pub(crate) struct VaultMirror {
    /// Its own handle on the vault's store (for the codec and the format).
    pub store: ChunkStore,
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
            if let Err(e) =
                manifest::write_item(&self.store, &self.dir, &self.vault_id, id, item.as_ref())
            {
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
            if let Err(e) =
                manifest::write_policy(&self.store, &self.dir, &self.vault_id, name, row.as_ref())
            {
                self.warn("policy", &e);
            }
        }
    }

    /// Rewrites the manifests of the points `ids` whose rows changed, side by side: each is
    /// written durably (fsynced, renamed, its folder fsynced), and fsyncs that run at once
    /// share the file system's journal commits (a prune restates a point per item: one by
    /// one, their 2 fsyncs each were most of a `sim advance` round's prune).
    fn points_changed(&self, catalog: &Catalog, ids: &[String]) {
        super::in_parallel(ids, |id| {
            let point = match catalog.point(id) {
                Ok(Some(p)) => p,
                Ok(None) => return,
                Err(e) => return self.warn("reading a point", &e),
            };
            let mut m: PointManifest =
                match manifest::read_manifest(&self.store, &self.dir, id, &self.vault_id) {
                    Ok(m) => m,
                    Err(e) => return self.warn("reading a point manifest", &e),
                };
            if m.point == point {
                return;
            }
            m.point = point;
            if let Err(e) = manifest::write_manifest(&self.store, &self.dir, &m, true) {
                self.warn("point manifest", &e);
            }
        });
    }
}
