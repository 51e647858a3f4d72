//! A small vertical bar chart drawn with eighth-block characters: the dashboard's jobs
//! per hour and the wizard's retention preview.

use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::style::Style;

const EIGHTHS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];

/// Draws `values` as bars in `area` (bottom-aligned), each `bar_w` wide with `gap` between,
/// scaled to `max` (or the largest value). Values that do not fit are dropped from the left
/// (the newest stay visible).
pub fn draw(
    buf: &mut Buffer,
    area: Rect,
    values: &[u64],
    max: Option<u64>,
    bar_w: u16,
    gap: u16,
    style: Style,
) {
    if area.width == 0 || area.height == 0 || values.is_empty() || bar_w == 0 {
        return;
    }
    let step = bar_w + gap;
    let fit = ((area.width + gap) / step) as usize;
    let values = &values[values.len().saturating_sub(fit)..];
    let max = max
        .unwrap_or_else(|| values.iter().copied().max().unwrap_or(0))
        .max(1);
    let levels = area.height as u64 * 8;
    for (i, v) in values.iter().enumerate() {
        // A non-zero value always shows at least one eighth.
        let mut h = (*v * levels + max / 2) / max;
        if *v > 0 && h == 0 {
            h = 1;
        }
        let h = h.min(levels);
        let x0 = area.x + i as u16 * step;
        for row in 0..area.height {
            let from_bottom = (area.height - 1 - row) as u64;
            let fill = h.saturating_sub(from_bottom * 8).min(8);
            if fill == 0 {
                continue;
            }
            let ch = EIGHTHS[(fill - 1) as usize];
            for dx in 0..bar_w {
                let x = x0 + dx;
                if x < area.x + area.width {
                    buf[(x, area.y + row)].set_char(ch).set_style(style);
                }
            }
        }
    }
}

/// Fits `values` to exactly `n` columns: the maximum of each bucket when there are more
/// values than columns, each value repeated over its share of columns when fewer.
pub fn resample(values: &[u64], n: usize) -> Vec<u64> {
    if values.len() >= n {
        return bucket_max(values, n);
    }
    if values.is_empty() {
        return Vec::new();
    }
    (0..n).map(|c| values[c * values.len() / n]).collect()
}

/// Averages `values` into at most `n` buckets (for a long series in a narrow chart); the
/// maximum of each bucket is kept so peaks stay visible.
pub fn bucket_max(values: &[u64], n: usize) -> Vec<u64> {
    if n == 0 || values.is_empty() {
        return Vec::new();
    }
    if values.len() <= n {
        return values.to_vec();
    }
    (0..n)
        .map(|b| {
            let from = b * values.len() / n;
            let to = ((b + 1) * values.len() / n).max(from + 1);
            values[from..to].iter().copied().max().unwrap_or(0)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_scale_to_the_height() {
        let mut buf = Buffer::empty(Rect::new(0, 0, 5, 2));
        draw(
            &mut buf,
            Rect::new(0, 0, 5, 2),
            &[0, 1, 2],
            None,
            1,
            1,
            Style::default(),
        );
        assert_eq!(buf[(0, 1)].symbol(), " ");
        assert_eq!(buf[(2, 1)].symbol(), "█");
        assert_eq!(buf[(2, 0)].symbol(), " ");
        assert_eq!(buf[(4, 0)].symbol(), "█");
    }

    #[test]
    fn buckets_keep_peaks() {
        assert_eq!(bucket_max(&[1, 9, 1, 1, 2, 3], 3), vec![9, 1, 3]);
        assert_eq!(bucket_max(&[1, 2], 5), vec![1, 2]);
        assert_eq!(resample(&[1, 2], 4), vec![1, 1, 2, 2]);
        assert_eq!(resample(&[1, 9, 1, 1], 2), vec![9, 1]);
    }
}
