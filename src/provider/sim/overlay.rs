//! The state of a simulated disk on one day, as a sorted list of segments.
//!
//! A segment is a byte range whose bytes are `diskgen::fill(fill, key, offset)`; gaps between
//! segments are holes (never written, read as zeros). The state of day `d` is the day-0
//! layout with every change run of days `1..=d` laid over it in order: a run replaces whatever
//! it covers, trimming the segments at its edges. Because content is a pure function of the
//! absolute offset, trimming a segment keeps its bytes unchanged.

use super::diskgen::{self, Fill};
use crate::model::Extent;

/// A byte range `[start, end)` holding the content `fill` keyed `key`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    pub start: u64,
    pub end: u64,
    pub fill: Fill,
    pub key: u64,
}

impl Segment {
    pub fn len(&self) -> u64 {
        self.end - self.start
    }
}

/// Lays `run` over `state` (sorted, non-overlapping), keeping it sorted and non-overlapping.
pub fn overlay(state: &mut Vec<Segment>, run: Segment) {
    if run.start >= run.end {
        return;
    }
    // Segments i..j overlap the run.
    let i = state.partition_point(|s| s.end <= run.start);
    let j = state.partition_point(|s| s.start < run.end);
    let mut replacement = [run; 3];
    let mut n = 0;
    if i < j && state[i].start < run.start {
        replacement[n] = Segment {
            end: run.start,
            ..state[i]
        };
        n += 1;
    }
    replacement[n] = run;
    n += 1;
    if i < j && state[j - 1].end > run.end {
        replacement[n] = Segment {
            start: run.end,
            ..state[j - 1]
        };
        n += 1;
    }
    state.splice(i..j, replacement[..n].iter().copied());
}

/// The allocated extents of a state: its segments, adjacent ones merged.
pub fn allocated_extents(state: &[Segment]) -> Vec<Extent> {
    merge(state.iter().map(|s| Extent::new(s.start, s.len())))
}

/// Sorts extents and merges overlapping or touching ones.
pub fn merge_unsorted(mut extents: Vec<Extent>) -> Vec<Extent> {
    extents.sort_unstable();
    merge(extents.into_iter())
}

/// Merges sorted extents that overlap or touch.
fn merge(sorted: impl Iterator<Item = Extent>) -> Vec<Extent> {
    let mut out: Vec<Extent> = Vec::new();
    for e in sorted {
        if e.len == 0 {
            continue;
        }
        match out.last_mut() {
            Some(last) if e.offset <= last.end() => {
                let end = last.end().max(e.end());
                last.len = end - last.offset;
            }
            _ => out.push(e),
        }
    }
    out
}

/// Fills `buf` with the bytes of `state` at `offset`; holes read as zeros.
pub fn read(state: &[Segment], offset: u64, buf: &mut [u8]) {
    let end = offset + buf.len() as u64;
    let mut pos = offset;
    let first = state.partition_point(|s| s.end <= offset);
    for s in &state[first..] {
        if s.start >= end {
            break;
        }
        if s.start > pos {
            buf[(pos - offset) as usize..(s.start - offset) as usize].fill(0);
            pos = s.start;
        }
        let stop = s.end.min(end);
        diskgen::fill(
            s.fill,
            s.key,
            pos,
            &mut buf[(pos - offset) as usize..(stop - offset) as usize],
        );
        pos = stop;
    }
    if pos < end {
        buf[(pos - offset) as usize..].fill(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(start: u64, end: u64, key: u64) -> Segment {
        Segment {
            start,
            end,
            fill: Fill::Random,
            key,
        }
    }

    fn check_sorted(state: &[Segment]) {
        for w in state.windows(2) {
            assert!(w[0].end <= w[1].start, "{state:?}");
        }
        assert!(state.iter().all(|s| s.start < s.end));
    }

    #[test]
    fn overlay_splits_trims_and_replaces() {
        let mut st = vec![seg(0, 100, 1), seg(200, 300, 2)];
        overlay(&mut st, seg(50, 60, 3)); // inside the first: split in three
        assert_eq!(
            st,
            vec![
                seg(0, 50, 1),
                seg(50, 60, 3),
                seg(60, 100, 1),
                seg(200, 300, 2)
            ]
        );
        overlay(&mut st, seg(90, 250, 4)); // spans a hole and two segments
        assert_eq!(
            st,
            vec![
                seg(0, 50, 1),
                seg(50, 60, 3),
                seg(60, 90, 1),
                seg(90, 250, 4),
                seg(250, 300, 2)
            ]
        );
        overlay(&mut st, seg(400, 500, 5)); // in a hole: a new allocation
        overlay(&mut st, seg(0, 1000, 6)); // covers everything
        assert_eq!(st, vec![seg(0, 1000, 6)]);
        check_sorted(&st);
    }

    #[test]
    fn overlay_matches_a_byte_map() {
        // Random runs over a small disk, compared with a per-byte owner map.
        let mut rng = diskgen::SplitMix::new(5);
        let mut st = Vec::new();
        let mut owner = vec![0u64; 1000];
        for k in 1..300u64 {
            let a = rng.below(1000);
            let b = (a + 1 + rng.below(120)).min(1000);
            overlay(&mut st, seg(a, b, k));
            owner[a as usize..b as usize].fill(k);
            check_sorted(&st);
        }
        for (i, &k) in owner.iter().enumerate() {
            let i = i as u64;
            let found = st.iter().find(|s| s.start <= i && i < s.end).map(|s| s.key);
            assert_eq!(found, (k != 0).then_some(k), "byte {i}");
        }
    }

    #[test]
    fn extents_merge_touching_segments() {
        let st = vec![seg(0, 10, 1), seg(10, 20, 2), seg(30, 40, 3)];
        assert_eq!(
            allocated_extents(&st),
            vec![Extent::new(0, 20), Extent::new(30, 10)]
        );
        let m = merge_unsorted(vec![
            Extent::new(50, 10),
            Extent::new(0, 5),
            Extent::new(3, 4),
            Extent::new(55, 1),
        ]);
        assert_eq!(m, vec![Extent::new(0, 7), Extent::new(50, 10)]);
    }

    #[test]
    fn read_zeroes_holes_and_fills_segments() {
        let st = vec![seg(8, 16, 1), seg(20, 30, 2)];
        let mut buf = vec![0xAAu8; 40];
        read(&st, 0, &mut buf);
        assert!(buf[..8].iter().all(|&b| b == 0));
        assert!(buf[16..20].iter().all(|&b| b == 0));
        assert!(buf[30..].iter().all(|&b| b == 0));
        let mut expect = vec![0u8; 8];
        diskgen::fill(Fill::Random, 1, 8, &mut expect);
        assert_eq!(&buf[8..16], &expect[..]);
        let mut part = vec![0u8; 7];
        read(&st, 13, &mut part);
        assert_eq!(part, buf[13..20]);
    }
}
