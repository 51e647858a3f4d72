//! What a recovery point stores: the STORED column of `vmvault points`.
//!
//! A point's STORED size is the on-disk (compressed) size of the chunks it references that
//! the item's point before it does not reference; for the item's oldest point, of every
//! chunk it references. Added up over an item's points, it is what those points take in the
//! vault (each chunk counted once, at the first point that has it; chunks shared with other
//! items are counted for each item).
//!
//! It is set when a point is committed and set again, in the prune's own transaction, for
//! every point whose predecessor a prune removes: a point that becomes the oldest takes
//! over the chunks of the points removed before it, so no point shows `0 B` only because
//! the point it was measured against is gone.
//!
//! The work stays proportional to what changed between neighbouring points: only chunks
//! one point has and the other has not are looked up in the catalog. The new oldest point
//! `s`, after the old oldest `r` goes: `size(s) = size(s \ r) + STORED(r) - size(r \ s)`.

use super::{Engine, Result};
use crate::model::RecoveryPoint;
use crate::vault::catalog::ChunkRow;
use crate::vault::store::{Digest, DiskIndex};
use std::collections::{HashMap, HashSet};

impl Engine {
    /// Every chunk a committed point references, over all its disks.
    fn point_digests(&self, p: &RecoveryPoint) -> Result<HashSet<Digest>> {
        let mut out = HashSet::new();
        for d in &p.disks {
            let ix = self.read_index(p, d.index)?;
            out.extend(ix.entries.iter().map(|(_, digest)| *digest));
        }
        Ok(out)
    }

    /// The chunks of `p`, or none when its indexes cannot be read (a damaged point is then
    /// measured as if it held nothing; `vmvault verify` reports the damage itself).
    fn digests_or_empty(&self, p: Option<&RecoveryPoint>) -> HashSet<Digest> {
        p.and_then(|p| self.point_digests(p).ok())
            .unwrap_or_default()
    }

    /// Stored bytes of the chunks of `own` that `base` lacks; `fresh` holds chunks not yet
    /// in the catalog (a point being committed) with their stored size.
    fn size_beyond(
        &self,
        own: &HashSet<Digest>,
        base: &HashSet<Digest>,
        fresh: &HashMap<Digest, u64>,
    ) -> Result<u64> {
        let mut sum = 0u64;
        let mut known = Vec::new();
        for d in own.difference(base) {
            match fresh.get(d) {
                Some(n) => sum += n,
                None => known.push(d),
            }
        }
        Ok(sum + self.inner.catalog.chunks_stored_bytes(known)?)
    }

    /// STORED of a point about to be committed for `item_id` (its indexes and the chunks it
    /// added, which the catalog does not hold yet), against the item's newest point.
    pub(crate) fn stored_of_new_point(
        &self,
        item_id: &str,
        indexes: &[(u32, DiskIndex)],
        new_chunks: &[ChunkRow],
    ) -> Result<u64> {
        let own: HashSet<Digest> = indexes
            .iter()
            .flat_map(|(_, ix)| ix.entries.iter().map(|(_, d)| *d))
            .collect();
        let previous = self.inner.catalog.points(item_id)?.into_iter().last();
        let base = self.digests_or_empty(previous.as_ref());
        let fresh = new_chunks
            .iter()
            .map(|c| (c.digest, c.stored_len))
            .collect();
        self.size_beyond(&own, &base, &fresh)
    }

    /// New STORED sizes for the points of one item that follow points a prune removes.
    /// `points`: the item's points before the prune, oldest first; `removed`: the ids that
    /// go (their indexes are still readable). A point whose index cannot be read keeps its
    /// size.
    pub(crate) fn stored_after_prune(
        &self,
        points: &[RecoveryPoint],
        removed: &HashSet<String>,
    ) -> Result<Vec<(String, u64)>> {
        let mut out = Vec::new();
        let mut kept: Option<&RecoveryPoint> = None;
        let mut after_removed = false;
        for p in points {
            if removed.contains(&p.id) {
                after_removed = true;
                continue;
            }
            if after_removed {
                if let Ok(own) = self.point_digests(p) {
                    let size = match kept {
                        Some(k) => {
                            let base = self.digests_or_empty(Some(k));
                            self.size_beyond(&own, &base, &HashMap::new())?
                        }
                        None => self.size_as_oldest(&own, &points[0])?,
                    };
                    out.push((p.id.clone(), size));
                }
                after_removed = false;
            }
            kept = Some(p);
        }
        Ok(out)
    }

    /// The size of every chunk (`own`) of the new oldest point `s`, from the old
    /// oldest point `r` that goes: `size(s \ r) + STORED(r) - size(r \ s)`, so only the
    /// chunks that differ are looked up. Without `r`'s index: every chunk of `s`.
    fn size_as_oldest(&self, own: &HashSet<Digest>, r: &RecoveryPoint) -> Result<u64> {
        let none = HashMap::new();
        let Ok(old) = self.point_digests(r) else {
            return self.size_beyond(own, &HashSet::new(), &none);
        };
        let only_s = self.size_beyond(own, &old, &none)?;
        let only_r = self.size_beyond(&old, own, &none)?;
        match (only_s + r.stored_bytes).checked_sub(only_r) {
            Some(size) => Ok(size),
            // `r`'s STORED was not its whole size (a vault from before this rule).
            None => self.size_beyond(own, &HashSet::new(), &none),
        }
    }
}
