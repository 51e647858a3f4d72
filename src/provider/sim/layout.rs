//! One simulated disk over time: its day-0 layout, the change runs of every later day, and a
//! cache of its states.
//!
//! * **Layout (day 0).** The allocated bytes are split into a few dozen pieces of text,
//!   incompressible and all-zero data (in proportions set by the disk's `content`), placed
//!   on 4 KiB boundaries with heavily skewed gaps, so data clusters like a real filesystem's
//!   and the rest of the capacity is holes.
//! * **Hot windows.** Up to two windows (a log file, database pages), each within one aligned
//!   4 MiB chunk, take most of the daily writes. This is why a day of changes touches about
//!   one 4 MiB chunk per disk: incremental backups (and `sim advance`) stay cheap.
//! * **Change runs.** The runs of day `d` are a pure function of `(disk key, d)`: a few
//!   writes of about `daily_change_percent` of the allocated size in total, mostly in one hot
//!   window, sometimes anywhere allocated, and now and then a new allocation in a hole.
//!   Nothing is ever freed, so allocations only grow.
//! * **Bursts.** A daily budget smaller than `MIN_BURST` is written as one burst of that
//!   size on a matching share of days (quiet days write nothing), keeping the expected churn
//!   while touching fewer chunks: the cost of replaying years of daily backups scales with
//!   the churn, not with the number of days.
//! * **States.** The state of day `d` is the layout with runs `1..=d` overlaid. States are
//!   kept at every `CHECKPOINT_EVERY` days plus the few last requested days, so any day costs
//!   at most that many days of overlays (microseconds), even at day 3000.

use super::diskgen::{derive, Fill, SplitMix};
use super::overlay::{self, Segment};
use crate::model::Extent;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;
/// Allocation granularity of the simulated filesystems.
pub const BLOCK: u64 = 4 * KIB;
/// The vault's default chunk size; hot windows stay within one aligned chunk of this size.
const HOT_WINDOW: u64 = 4 * MIB;
const CHECKPOINT_EVERY: u32 = 128;
/// Recently requested non-checkpoint days kept per disk.
const RECENT_STATES: usize = 4;
/// Share of a day's runs that land in that day's hot window.
const HOT_SHARE: f64 = 0.9;
/// Chance per day that a running disk allocates new space.
const NEW_ALLOCATION_CHANCE: f64 = 0.02;
/// Smallest amount a disk writes on a day it writes at all (or a quarter of its data).
const MIN_BURST: u64 = MIB;

const TAG_LAYOUT: u64 = 0x4C41_594F_5554; // "LAYOUT"
const TAG_BASE: u64 = 0x4241_5345; // "BASE"
const TAG_DAY: u64 = 0x0044_4159; // "DAY"

/// What a disk mostly holds; sets the mix of text, incompressible and zero data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Content {
    /// An operating system disk: binaries, configuration, logs.
    Os,
    /// Database files: mostly incompressible pages.
    Database,
    /// Log and text files: mostly compressible.
    Logs,
    /// A file share: a mix.
    Files,
}

impl Content {
    pub const NAMES: &'static str = "os, database, logs, files";

    pub fn parse(s: &str) -> Option<Content> {
        match s.trim().to_ascii_lowercase().as_str() {
            "os" => Some(Content::Os),
            "database" => Some(Content::Database),
            "logs" => Some(Content::Logs),
            "files" => Some(Content::Files),
            _ => None,
        }
    }

    /// Percent of the allocated bytes that are text, incompressible and zero.
    fn mix(self) -> [(Fill, u64); 3] {
        match self {
            Content::Os => [(Fill::Text, 50), (Fill::Random, 35), (Fill::Zero, 15)],
            Content::Database => [(Fill::Text, 15), (Fill::Random, 70), (Fill::Zero, 15)],
            Content::Logs => [(Fill::Text, 85), (Fill::Random, 10), (Fill::Zero, 5)],
            Content::Files => [(Fill::Text, 40), (Fill::Random, 50), (Fill::Zero, 10)],
        }
    }
}

/// What determines a simulated disk.
#[derive(Debug, Clone, PartialEq)]
pub struct DiskParams {
    /// Derived from the seed, the VM's source id and the disk index.
    pub key: u64,
    pub capacity: u64,
    /// Allocated bytes on day 0.
    pub allocated: u64,
    pub content: Content,
    /// Fraction of `allocated` rewritten per day (0 for a VM that is not running).
    pub daily_change: f64,
}

/// A hot window: a range inside one allocated piece and one aligned 4 MiB chunk.
#[derive(Debug, Clone, Copy)]
struct Window {
    start: u64,
    end: u64,
    fill: Fill,
}

/// A simulated disk: its layout and the change runs of every day, with a cache of states.
#[derive(Debug)]
pub struct DiskModel {
    params: DiskParams,
    base: Arc<Vec<Segment>>,
    /// Day-0 pieces that are not all-zero, for runs outside the hot windows.
    pieces: Vec<Segment>,
    pieces_total: u64,
    hot: Vec<Window>,
    cache: Mutex<StateCache>,
}

#[derive(Debug, Default)]
struct StateCache {
    states: BTreeMap<u32, Arc<Vec<Segment>>>,
    /// Non-checkpoint days in `states`, oldest first.
    recent: Vec<u32>,
}

impl DiskModel {
    pub fn new(params: DiskParams) -> DiskModel {
        let base = layout(&params);
        let pieces: Vec<Segment> = base
            .iter()
            .copied()
            .filter(|s| s.fill != Fill::Zero)
            .collect();
        let pieces_total = pieces.iter().map(Segment::len).sum();
        let hot = hot_windows(&base);
        let base = Arc::new(base);
        let mut cache = StateCache::default();
        cache.states.insert(0, base.clone());
        DiskModel {
            params,
            base,
            pieces,
            pieces_total,
            hot,
            cache: Mutex::new(cache),
        }
    }

    pub fn params(&self) -> &DiskParams {
        &self.params
    }

    /// The day-0 state.
    #[cfg(test)]
    pub fn base(&self) -> &[Segment] {
        &self.base
    }

    /// The writes of day `day` (≥ 1), in the order they happen.
    pub fn runs_of_day(&self, day: u32) -> Vec<Segment> {
        let p = &self.params;
        let mut runs = Vec::new();
        if day == 0 || p.daily_change <= 0.0 {
            return runs;
        }
        let day_key = derive(p.key, TAG_DAY ^ (u64::from(day) << 20));
        let mut rng = SplitMix::new(day_key);
        let mut budget = p.daily_change * p.allocated as f64;
        let burst = MIN_BURST.min(p.allocated / 4).max(BLOCK) as f64;
        if budget < burst {
            // A quiet day, or a burst: the expected bytes per day stay `budget`.
            let writes_today = rng.chance(budget / burst);
            budget = if writes_today { burst } else { 0.0 };
        }
        let count = if budget > 0.0 { rng.range(1, 3) } else { 0 };
        let window = if self.hot.is_empty() {
            None
        } else {
            Some(self.hot[rng.below(self.hot.len() as u64) as usize])
        };
        for j in 0..count {
            let want = budget / count as f64 * (0.5 + rng.unit());
            let len = round_up((want as u64).max(1), BLOCK);
            let key = derive(day_key, j);
            let in_window = rng.chance(HOT_SHARE);
            let (area_start, area_end, fill) = match (window, in_window) {
                (Some(w), true) => (w.start, w.end, w.fill),
                _ if self.pieces_total > 0 => {
                    // A piece chosen in proportion to its size.
                    let mut at = rng.below(self.pieces_total);
                    let piece = self
                        .pieces
                        .iter()
                        .find(|s| {
                            let hit = at < s.len();
                            if !hit {
                                at -= s.len();
                            }
                            hit
                        })
                        .copied()
                        .unwrap_or(self.pieces[0]);
                    (piece.start, piece.end, piece.fill)
                }
                _ => continue,
            };
            let len = len.min(area_end - area_start);
            let slack = area_end - area_start - len;
            let start = area_start + round_down(rng.below(slack + 1), BLOCK).min(slack);
            runs.push(Segment {
                start,
                end: start + len,
                fill,
                key,
            });
        }
        if rng.chance(NEW_ALLOCATION_CHANCE) {
            let len = (rng.range(64, 512) * BLOCK).min(round_down(p.capacity, BLOCK));
            if len > 0 {
                let start = round_down(rng.below(p.capacity - len + 1), BLOCK);
                let fill = if rng.chance(0.5) {
                    Fill::Text
                } else {
                    Fill::Random
                };
                runs.push(Segment {
                    start,
                    end: start + len,
                    fill,
                    key: derive(day_key, 0xA110C),
                });
            }
        }
        runs
    }

    /// The state of day `day`: sorted, non-overlapping segments within the capacity.
    pub fn state_at(&self, day: u32) -> Arc<Vec<Segment>> {
        let mut cache = match self.cache.lock() {
            Ok(c) => c,
            // A panic while holding the lock cannot leave a wrong state behind (states are
            // inserted whole), so the cache is still good.
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Some(s) = cache.states.get(&day) {
            return s.clone();
        }
        let (mut at, from) = match cache.states.range(..=day).next_back() {
            Some((d, s)) => (*d, s.clone()),
            None => (0, self.base.clone()),
        };
        let mut state: Vec<Segment> = (*from).clone();
        while at < day {
            at += 1;
            for run in self.runs_of_day(at) {
                overlay::overlay(&mut state, run);
            }
            if at.is_multiple_of(CHECKPOINT_EVERY) && at < day {
                cache.states.insert(at, Arc::new(state.clone()));
            }
        }
        let state = Arc::new(state);
        cache.states.insert(day, state.clone());
        if !day.is_multiple_of(CHECKPOINT_EVERY) {
            cache.recent.push(day);
            if cache.recent.len() > RECENT_STATES {
                let old = cache.recent.remove(0);
                cache.states.remove(&old);
            }
        }
        state
    }

    /// Byte ranges written on days `from+1..=to` (sorted, merged). Empty when `from >= to`.
    pub fn changed_between(&self, from: u32, to: u32) -> Vec<Extent> {
        let mut extents = Vec::new();
        for day in from.saturating_add(1)..=to {
            extents.extend(
                self.runs_of_day(day)
                    .iter()
                    .map(|r| Extent::new(r.start, r.len())),
            );
        }
        overlay::merge_unsorted(extents)
    }
}

fn round_up(x: u64, to: u64) -> u64 {
    x.div_ceil(to) * to
}

fn round_down(x: u64, to: u64) -> u64 {
    x / to * to
}

/// The day-0 layout of a disk.
fn layout(p: &DiskParams) -> Vec<Segment> {
    let mut rng = SplitMix::new(derive(p.key, TAG_LAYOUT));
    let capacity = round_down(p.capacity, BLOCK);
    let allocated = round_up(p.allocated, BLOCK).min(capacity);
    let blocks = allocated / BLOCK;
    if blocks == 0 {
        return Vec::new();
    }
    // Piece count: about one per 6 MiB, at least 3, at most 48.
    let count = ((allocated / (6 * MIB)).clamp(3, 48) + rng.below(3)).min(blocks) as usize;

    // Piece sizes in blocks, each at least one, summing to `blocks`.
    let weights: Vec<f64> = (0..count)
        .map(|_| 0.2 + rng.unit() * rng.unit() * 3.0)
        .collect();
    let total_w: f64 = weights.iter().sum();
    let spare = blocks - count as u64;
    let mut sizes: Vec<u64> = weights
        .iter()
        .map(|w| 1 + (spare as f64 * w / total_w) as u64)
        .collect();
    let assigned: u64 = sizes.iter().sum();
    if let Some(biggest) = (0..count).max_by_key(|&i| sizes[i]) {
        sizes[biggest] += blocks - assigned;
    }

    // Kinds: the biggest pieces first, each to the kind furthest below its share.
    let mix = p.content.mix();
    let mut given = [0u64; 3];
    let mut order: Vec<usize> = (0..count).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(sizes[i]));
    let mut fills = vec![Fill::Zero; count];
    for &i in &order {
        let k = (0..3)
            .max_by_key(|&k| {
                let target = blocks * mix[k].1 / 100;
                target as i64 - given[k] as i64
            })
            .unwrap_or(0);
        fills[i] = mix[k].0;
        given[k] += sizes[i];
    }
    // Shuffle the pieces (Fisher–Yates) so kinds interleave on the disk.
    let mut pieces: Vec<(u64, Fill)> = sizes.into_iter().zip(fills).collect();
    for i in (1..pieces.len()).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        pieces.swap(i, j);
    }

    // Gaps: skewed so that a few are huge and many are small or none (adjacent pieces).
    // An OS disk starts with data (boot sector, partition table).
    let free_blocks = capacity / BLOCK - blocks;
    let gap_weights: Vec<f64> = (0..count)
        .map(|i| {
            if (i == 0 && p.content == Content::Os) || rng.chance(0.3) {
                0.0
            } else {
                rng.unit().powi(6)
            }
        })
        .collect();
    // The share of the free space before the last piece (the rest trails it).
    let used_share = 0.3 + 0.6 * rng.unit();
    let gw_total: f64 = gap_weights.iter().sum::<f64>().max(f64::MIN_POSITIVE);
    let mut state = Vec::with_capacity(count);
    let mut at = 0u64;
    for (i, (size, fill)) in pieces.into_iter().enumerate() {
        let gap = (free_blocks as f64 * used_share * gap_weights[i] / gw_total) as u64;
        at += gap * BLOCK;
        let end = at + size * BLOCK;
        state.push(Segment {
            start: at,
            end,
            fill,
            key: derive(p.key, TAG_BASE + i as u64),
        });
        at = end;
    }
    debug_assert!(at <= capacity);
    state
}

/// Up to two hot windows: in the biggest text piece (a log) and the biggest incompressible
/// piece (database pages), each the piece's largest overlap with an aligned 4 MiB chunk.
fn hot_windows(base: &[Segment]) -> Vec<Window> {
    let mut out = Vec::new();
    for fill in [Fill::Text, Fill::Random] {
        let Some(piece) = base
            .iter()
            .filter(|s| s.fill == fill)
            .max_by_key(|s| s.len())
        else {
            continue;
        };
        let mut best: Option<Window> = None;
        let mut chunk = round_down(piece.start, HOT_WINDOW);
        while chunk < piece.end {
            let start = piece.start.max(chunk);
            let end = piece.end.min(chunk + HOT_WINDOW);
            if best.is_none_or(|b| end - start > b.end - b.start) {
                best = Some(Window { start, end, fill });
            }
            if end - start == HOT_WINDOW {
                break;
            }
            chunk += HOT_WINDOW;
        }
        out.extend(best);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(capacity: u64, allocated: u64, content: Content) -> DiskParams {
        DiskParams {
            key: 0x5EED,
            capacity,
            allocated,
            content,
            daily_change: 0.01,
        }
    }

    fn check_state(state: &[Segment], capacity: u64) {
        for w in state.windows(2) {
            assert!(
                w[0].end <= w[1].start,
                "overlap or unsorted: {:?} {:?}",
                w[0],
                w[1]
            );
        }
        for s in state {
            assert!(
                s.start < s.end && s.end <= capacity,
                "{s:?} outside {capacity}"
            );
        }
    }

    #[test]
    fn layout_allocates_what_was_asked_within_capacity() {
        for (cap, alloc, content) in [
            (30 << 30, 120 * MIB, Content::Os),
            (1 << 40, 200 * MIB, Content::Database),
            (64 << 30, 3 * MIB + 5, Content::Logs),
            (1 << 30, 4 * KIB, Content::Files),
            (8 * MIB, 8 * MIB, Content::Files),
        ] {
            let m = DiskModel::new(params(cap, alloc, content));
            check_state(m.base(), cap);
            let total: u64 = m.base().iter().map(Segment::len).sum();
            assert_eq!(total, round_up(alloc, BLOCK), "{content:?}");
        }
        assert!(DiskModel::new(params(1 << 30, 0, Content::Os))
            .base()
            .is_empty());
    }

    #[test]
    fn layout_mixes_kinds_as_the_content_says() {
        let m = DiskModel::new(params(30 << 30, 120 * MIB, Content::Os));
        let share = |f: Fill| {
            m.base()
                .iter()
                .filter(|s| s.fill == f)
                .map(Segment::len)
                .sum::<u64>() as f64
                / (120 * MIB) as f64
        };
        assert!(
            (share(Fill::Text) - 0.5).abs() < 0.15,
            "text {}",
            share(Fill::Text)
        );
        assert!((share(Fill::Random) - 0.35).abs() < 0.15);
        assert!(share(Fill::Zero) > 0.0, "some allocated all-zero regions");
        assert_eq!(m.base()[0].start, 0, "an OS disk starts with data");
        assert!(
            m.base().len() >= 10,
            "data is split into pieces, with holes between"
        );
        assert!(m.base().windows(2).any(|w| w[0].end < w[1].start));
    }

    #[test]
    fn states_only_grow_and_stay_well_formed() {
        let m = DiskModel::new(params(2 << 30, 40 * MIB, Content::Files));
        let mut prev = 0u64;
        for day in [0, 1, 2, 50, 127, 128, 129, 400, 3000] {
            let st = m.state_at(day);
            check_state(&st, 2 << 30);
            let total: u64 = st.iter().map(Segment::len).sum();
            assert!(total >= prev, "allocation shrank on day {day}");
            prev = total;
        }
        // Asking out of order gives the same states as asking in order.
        let fresh = DiskModel::new(params(2 << 30, 40 * MIB, Content::Files));
        for day in [3000, 5, 129, 1] {
            assert_eq!(*fresh.state_at(day), *m.state_at(day), "day {day}");
        }
    }

    #[test]
    fn daily_runs_touch_about_one_aligned_chunk() {
        let m = DiskModel::new(params(30 << 30, 120 * MIB, Content::Os));
        let mut chunks = 0usize;
        let days = 1000u32;
        let mut written = 0u64;
        for day in 1..=days {
            let mut touched: Vec<u64> = Vec::new();
            for r in m.runs_of_day(day) {
                assert!(r.end <= 30 << 30);
                written += r.len();
                touched.extend(r.start / HOT_WINDOW..=(r.end - 1) / HOT_WINDOW);
            }
            touched.sort_unstable();
            touched.dedup();
            chunks += touched.len();
        }
        let per_day = chunks as f64 / f64::from(days);
        assert!((0.8..2.0).contains(&per_day), "{per_day} chunks per day");
        let churn = written as f64 / f64::from(days) / (120 * MIB) as f64;
        assert!(
            (0.007..0.02).contains(&churn),
            "{churn} of the data written per day"
        );
    }

    #[test]
    fn small_budgets_write_in_bursts_on_some_days() {
        let mut p = params(30 << 30, 100 * MIB, Content::Os);
        p.daily_change = 0.0025; // 256 KiB a day: a 1 MiB burst every fourth day or so
        let m = DiskModel::new(p);
        let days = 2000u32;
        let active = (1..=days)
            .filter(|&d| m.runs_of_day(d).iter().any(|r| r.len() < 64 * MIB))
            .count();
        let share = active as f64 / f64::from(days);
        assert!((0.2..0.35).contains(&share), "writes on {share} of days");
        let written: u64 = (1..=days)
            .flat_map(|d| m.runs_of_day(d))
            .map(|r| r.len())
            .sum();
        let churn = written as f64 / f64::from(days) / (100 * MIB) as f64;
        assert!(
            (0.0015..0.004).contains(&churn),
            "{churn} of the data written per day"
        );
    }

    #[test]
    fn no_runs_when_the_disk_does_not_change() {
        let mut p = params(30 << 30, 120 * MIB, Content::Os);
        p.daily_change = 0.0;
        let m = DiskModel::new(p);
        assert!((1..100).all(|d| m.runs_of_day(d).is_empty()));
        assert_eq!(*m.state_at(99), *m.state_at(0));
    }
}
