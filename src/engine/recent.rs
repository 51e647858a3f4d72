//! The disk indexes of each item's newest point, as this process wrote them.
//!
//! Each backup starts from the index of its item's newest point (which slots changed, which
//! chunks the unchanged ones hold). When this process wrote that point, the index is still
//! in memory: reading it back from the vault (get, decrypt, decompress, check) was about a
//! fifth of what a `sim advance` round spent on each backup. An index is kept with the
//! checksum it was written with and is handed out only against the same checksum, for the
//! same point, disk and capacity (what [`crate::engine::Engine::read_index`] checks on an
//! index it reads), so a kept index is exactly the committed one. One point per item is
//! kept (a new one replaces it), and no more than [`MAX_ENTRIES`] slots in all: an item
//! whose indexes would not fit is read from the vault as before.

use crate::vault::store::{Digest, DiskIndex};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Slots kept over all items (40 bytes each: 10 MiB; 256 GiB of disks at 1 MiB chunks).
pub(crate) const MAX_ENTRIES: usize = 256 * 1024;

struct Kept {
    point_id: String,
    /// (disk, checksum, index)
    disks: Vec<(u32, Digest, Arc<DiskIndex>)>,
    entries: usize,
}

/// See the module documentation.
#[derive(Default)]
pub(crate) struct RecentIndexes {
    by_item: Mutex<HashMap<String, Kept>>,
}

impl RecentIndexes {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Kept>> {
        self.by_item.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Keeps the indexes of point `point_id` of item `item_id`, written with `checksums`
    /// (by disk), in place of the item's earlier point.
    pub(crate) fn keep(
        &self,
        item_id: &str,
        point_id: &str,
        indexes: &[(u32, DiskIndex)],
        checksums: &[(u32, Digest)],
    ) {
        let mut disks = Vec::with_capacity(indexes.len());
        for (disk, index) in indexes {
            let Some((_, sum)) = checksums.iter().find(|(d, _)| d == disk) else {
                return;
            };
            disks.push((*disk, *sum, Arc::new(index.clone())));
        }
        let entries = indexes.iter().map(|(_, i)| i.entries.len()).sum();
        let mut kept = self.lock();
        kept.remove(item_id);
        let in_use: usize = kept.values().map(|k| k.entries).sum();
        if in_use + entries > MAX_ENTRIES {
            return;
        }
        kept.insert(
            item_id.to_string(),
            Kept {
                point_id: point_id.to_string(),
                disks,
                entries,
            },
        );
    }

    /// The kept index of disk `disk` of point `point_id` of item `item_id`, when it was
    /// written with `checksum` and has `capacity`.
    pub(crate) fn get(
        &self,
        item_id: &str,
        point_id: &str,
        disk: u32,
        capacity: u64,
        checksum: &Digest,
    ) -> Option<Arc<DiskIndex>> {
        let kept = self.lock();
        let k = kept.get(item_id).filter(|k| k.point_id == point_id)?;
        k.disks
            .iter()
            .find(|(d, sum, ix)| *d == disk && sum == checksum && ix.capacity == capacity)
            .map(|(_, _, ix)| ix.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index(slots: u64) -> DiskIndex {
        DiskIndex {
            capacity: slots * 1024,
            chunk_size: 1024,
            entries: (0..slots).map(|s| (s, [s as u8; 32])).collect(),
        }
    }

    #[test]
    fn hands_out_only_the_same_point_disk_capacity_and_checksum() {
        let r = RecentIndexes::default();
        r.keep("item", "p1", &[(0, index(4))], &[(0, [7; 32])]);
        assert!(r.get("item", "p1", 0, 4096, &[7; 32]).is_some());
        assert!(
            r.get("item", "p1", 0, 4096, &[8; 32]).is_none(),
            "other checksum"
        );
        assert!(
            r.get("item", "p1", 1, 4096, &[7; 32]).is_none(),
            "other disk"
        );
        assert!(
            r.get("item", "p1", 0, 8192, &[7; 32]).is_none(),
            "other capacity"
        );
        assert!(
            r.get("item", "p0", 0, 4096, &[7; 32]).is_none(),
            "other point"
        );
        assert!(
            r.get("other", "p1", 0, 4096, &[7; 32]).is_none(),
            "other item"
        );
        // A newer point of the item replaces it.
        r.keep("item", "p2", &[(0, index(4))], &[(0, [9; 32])]);
        assert!(r.get("item", "p1", 0, 4096, &[7; 32]).is_none());
        assert!(r.get("item", "p2", 0, 4096, &[9; 32]).is_some());
    }

    #[test]
    fn keeps_no_more_than_the_limit_and_nothing_without_every_checksum() {
        let r = RecentIndexes::default();
        r.keep(
            "a",
            "p",
            &[(0, index(MAX_ENTRIES as u64 - 10))],
            &[(0, [1; 32])],
        );
        r.keep("b", "q", &[(0, index(11))], &[(0, [2; 32])]);
        assert!(r
            .get("a", "p", 0, (MAX_ENTRIES as u64 - 10) * 1024, &[1; 32])
            .is_some());
        assert!(
            r.get("b", "q", 0, 11 * 1024, &[2; 32]).is_none(),
            "over the limit"
        );
        r.keep("c", "s", &[(0, index(2)), (1, index(2))], &[(0, [3; 32])]);
        assert!(
            r.get("c", "s", 0, 2048, &[3; 32]).is_none(),
            "disk 1 has no checksum"
        );
    }
}
