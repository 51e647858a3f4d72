//! The shared table: selection and scrolling ([`TableNav`]) and a renderer that builds
//! only the rows that fit on screen, so 10,000 items or a window of jobs cost no more to
//! draw than twenty.

use super::text::fit_line;
use crate::tui::theme::Theme;
use ratatui::layout::{Constraint, Flex, Layout, Rect};
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Paragraph, Row, Table, TableState};
use ratatui::Frame;
use std::cell::Cell;

/// A column: its title and width.
#[derive(Debug, Clone, Copy)]
pub struct Column {
    pub title: &'static str,
    pub width: Constraint,
}

impl Column {
    pub const fn new(title: &'static str, width: Constraint) -> Column {
        Column { title, width }
    }
}

/// Selection and scroll position of a table. The offset and the viewport are written by
/// the renderer (it is the one that knows the height) and read by key and mouse handling.
#[derive(Debug, Default, Clone)]
pub struct TableNav {
    pub selected: usize,
    offset: Cell<usize>,
    /// Rows visible at the last draw.
    viewport: Cell<usize>,
    /// Where the rows were drawn (for mouse clicks).
    rows_area: Cell<Rect>,
}

impl PartialEq for TableNav {
    fn eq(&self, other: &Self) -> bool {
        self.selected == other.selected
    }
}

impl TableNav {
    pub fn offset(&self) -> usize {
        self.offset.get()
    }
    pub fn page(&self) -> usize {
        self.viewport.get().max(1)
    }
    pub fn clamp(&mut self, len: usize) {
        if len == 0 {
            self.selected = 0;
        } else if self.selected >= len {
            self.selected = len - 1;
        }
    }
    pub fn up(&mut self, n: usize) {
        self.selected = self.selected.saturating_sub(n);
    }
    pub fn down(&mut self, n: usize, len: usize) {
        if len > 0 {
            self.selected = (self.selected + n).min(len - 1);
        }
    }
    pub fn top(&mut self) {
        self.selected = 0;
    }
    pub fn bottom(&mut self, len: usize) {
        self.selected = len.saturating_sub(1);
    }
    /// Moves the selection for a movement key (up, down, page up/down, top, bottom) of
    /// `keys`; false when `k` is no movement key.
    pub fn navigate(
        &mut self,
        keys: &crate::tui::keys::KeyMap,
        k: &crossterm::event::KeyEvent,
        len: usize,
    ) -> bool {
        use crate::tui::keys::Action;
        if keys.is(Action::Up, k) {
            self.up(1);
        } else if keys.is(Action::Down, k) {
            self.down(1, len);
        } else if keys.is(Action::PageUp, k) {
            self.up(self.page());
        } else if keys.is(Action::PageDown, k) {
            self.down(self.page(), len);
        } else if keys.is(Action::Top, k) {
            self.top();
        } else if keys.is(Action::Bottom, k) {
            self.bottom(len);
        } else {
            return false;
        }
        true
    }
    /// The row under a click at (`x`, `y`), if any.
    pub fn row_at(&self, x: u16, y: u16, len: usize) -> Option<usize> {
        let a = self.rows_area.get();
        if x < a.x || x >= a.x + a.width || y < a.y || y >= a.y + a.height {
            return None;
        }
        let i = self.offset.get() + (y - a.y) as usize;
        (i < len).then_some(i)
    }
    /// Scrolls the view by `n` rows (mouse wheel) keeping the selection visible.
    pub fn scroll(&mut self, down: bool, n: usize, len: usize) {
        if down {
            self.down(n, len);
        } else {
            self.up(n);
        }
    }

    /// The first visible row for a viewport of `height` rows: the old offset when the
    /// selection is still visible, else the nearest offset that shows it.
    fn visible_offset(&self, height: usize, len: usize) -> usize {
        let mut off = self.offset.get();
        if height == 0 {
            return 0;
        }
        if self.selected < off {
            off = self.selected;
        } else if self.selected >= off + height {
            off = self.selected + 1 - height;
        }
        // No empty space below the last row when rows were removed.
        off.min(len.saturating_sub(height))
    }
}

/// Draws a table of `len` rows in `block`: the header, then only the visible rows, whose
/// cells `row(i, widths)` builds for each visible index `i` (`widths`: the columns' widths
/// on screen, for cells that lay themselves out, like progress bars). A cell wider than its
/// column is cut with "…" ([`fit_line`]), never silently. `empty` is shown when there are
/// no rows.
#[allow(clippy::too_many_arguments)]
pub fn render_table<'a>(
    f: &mut Frame,
    area: Rect,
    block: Block<'a>,
    columns: &[Column],
    nav: &TableNav,
    len: usize,
    focused: bool,
    theme: &Theme,
    empty: &str,
    row: impl Fn(usize, &[u16]) -> Vec<Line<'a>>,
) {
    let inner = block.inner(area);
    f.render_widget(block, area);
    if inner.height == 0 || inner.width == 0 {
        return;
    }
    let header = Row::new(
        columns
            .iter()
            .map(|c| Span::styled(c.title, theme.header())),
    );
    let body_height = inner.height.saturating_sub(1) as usize;
    nav.viewport.set(body_height);
    nav.rows_area.set(Rect {
        x: inner.x,
        y: inner.y + 1,
        width: inner.width,
        height: body_height as u16,
    });
    if len == 0 {
        let t = Table::new(Vec::<Row>::new(), columns.iter().map(|c| c.width)).header(header);
        f.render_widget(t, inner);
        if inner.height > 2 {
            let msg = Rect {
                y: inner.y + 2,
                height: inner.height - 2,
                ..inner
            };
            f.render_widget(
                Paragraph::new(Line::from(Span::styled(empty.to_string(), theme.muted())))
                    .centered(),
                msg,
            );
        }
        nav.offset.set(0);
        return;
    }
    let offset = nav.visible_offset(body_height, len);
    nav.offset.set(offset);
    let end = (offset + body_height).min(len);
    let widths = column_widths(columns, inner.width);
    let rows: Vec<Row> = (offset..end)
        .map(|i| {
            Row::new(
                row(i, &widths)
                    .into_iter()
                    .zip(&widths)
                    .map(|(cell, w)| fit_line(cell, *w as usize)),
            )
        })
        .collect();
    let mut state = TableState::default();
    if focused {
        state.select(Some(nav.selected.saturating_sub(offset)));
    }
    let t = Table::new(rows, columns.iter().map(|c| c.width))
        .header(header)
        .column_spacing(COLUMN_SPACING)
        .row_highlight_style(theme.selected());
    f.render_stateful_widget(t, inner, &mut state);
}

/// The widths ratatui's table gives `columns` in `width` (no highlight symbol, one blank
/// between columns).
pub fn column_widths(columns: &[Column], width: u16) -> Vec<u16> {
    Layout::horizontal(columns.iter().map(|c| c.width))
        .flex(Flex::Start)
        .spacing(COLUMN_SPACING)
        .split(Rect::new(0, 0, width, 1))
        .iter()
        .map(|r| r.width)
        .collect()
}

const COLUMN_SPACING: u16 = 1;

/// Drops columns, in `drop_order`, until the one `Fill` column (the item's name) gets at
/// least `name_min` of a bordered table `width` wide: the name is the last thing to go.
/// `cols` pairs each column with its index in the view's full list.
pub fn fit_columns(
    cols: &mut Vec<(usize, Column)>,
    width: u16,
    name_min: u16,
    drop_order: &[usize],
) {
    let name_width = |cols: &[(usize, Column)]| {
        let fixed: u16 = cols
            .iter()
            .map(|(_, c)| match c.width {
                Constraint::Length(n) | Constraint::Min(n) => n,
                _ => 0,
            })
            .sum();
        let gaps = cols.len().saturating_sub(1) as u16;
        width.saturating_sub(2).saturating_sub(fixed + gaps)
    };
    for drop in drop_order {
        if name_width(cols) >= name_min {
            break;
        }
        cols.retain(|(i, _)| i != drop);
    }
}

/// A cell's text in a style (shorthand for rows).
pub fn cell<'a>(text: impl Into<String>, style: Style) -> Line<'a> {
    Line::from(Span::styled(text.into(), style))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_follows_the_selection() {
        let mut n = TableNav::default();
        n.down(30, 100);
        assert_eq!(n.visible_offset(10, 100), 21);
        n.offset.set(21);
        n.up(5);
        assert_eq!(n.visible_offset(10, 100), 21, "still visible: no scroll");
        n.up(10);
        assert_eq!(n.visible_offset(10, 100), 15);
        n.offset.set(95);
        n.selected = 97;
        assert_eq!(n.visible_offset(10, 98), 88, "no blank rows after the last");
    }
}
