//! Text formatting for humans: ages, sizes, aligned tables shortened to the terminal width.

use std::time::Duration;

use unicode_width::{UnicodeWidthChar, UnicodeWidthStr};

/// `4s ago`, `3m ago`, `2h ago`, `5d ago`: the coarsest unit that is at least one.
pub(crate) fn age(age: Duration) -> String {
    let secs = age.as_secs();
    match secs {
        0..=59 => format!("{secs}s ago"),
        60..=3599 => format!("{}m ago", secs / 60),
        3600..=86_399 => format!("{}h ago", secs / 3600),
        _ => format!("{}d ago", secs / 86_400),
    }
}

/// `512 B`, `8.0 KiB`, `1.5 MiB`, …
pub(crate) fn bytes(n: i64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// Width to shorten tables to: `COLUMNS` when set (as shells export it and tests pin it),
/// else the terminal's width, else none — output piped to a file or `grep` keeps every byte.
pub(crate) fn terminal_width() -> Option<usize> {
    if let Some(columns) = std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.trim().parse::<usize>().ok())
        .filter(|&c| c > 0)
    {
        return Some(columns);
    }
    terminal_size::terminal_size().map(|(width, _)| usize::from(width.0))
}

/// Columns `text` takes in a terminal: double-width characters (CJK, most emoji) take two,
/// combining marks none.
pub(crate) fn display_width(text: &str) -> usize {
    UnicodeWidthStr::width(text)
}

/// `text` cut to at most `max` terminal columns, ending in `…` when cut.
pub(crate) fn shorten(text: &str, max: usize) -> String {
    if display_width(text) <= max {
        return text.to_owned();
    }
    let budget = max.saturating_sub(1);
    let mut used = 0;
    let mut short = String::new();
    for c in text.chars() {
        let w = UnicodeWidthChar::width(c).unwrap_or(0);
        if used + w > budget {
            break;
        }
        used += w;
        short.push(c);
    }
    short.push('…');
    short
}

/// `text` padded with spaces to `width` terminal columns.
fn pad(text: &str, width: usize) -> String {
    let mut padded = text.to_owned();
    padded.extend(std::iter::repeat_n(
        ' ',
        width.saturating_sub(display_width(text)),
    ));
    padded
}

/// Narrowest the last column gets, however narrow the terminal: a few characters of state
/// say more than none.
const MIN_LAST_COLUMN: usize = 12;

/// Rows aligned in columns two spaces apart; the last column is shortened so each line fits
/// `width` (when given).
pub(crate) fn table(header: &[&str], rows: &[Vec<String>], width: Option<usize>) -> String {
    let columns = header.len();
    let mut widths: Vec<usize> = header.iter().map(|h| display_width(h)).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row).take(columns - 1) {
            *w = (*w).max(display_width(cell));
        }
    }
    let prefix: usize = widths[..columns - 1].iter().map(|w| w + 2).sum();
    let last_max = width.map(|w| w.saturating_sub(prefix).max(MIN_LAST_COLUMN));
    let mut out = String::new();
    let header: Vec<String> = header.iter().map(|h| (*h).to_owned()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 < columns {
                line.push_str(&pad(cell, widths[i]));
                line.push_str("  ");
            } else {
                match last_max {
                    Some(max) => line.push_str(&shorten(cell, max)),
                    None => line.push_str(cell),
                }
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_use_the_coarsest_unit() {
        assert_eq!(age(Duration::from_millis(4_900)), "4s ago");
        assert_eq!(age(Duration::from_secs(125)), "2m ago");
        assert_eq!(age(Duration::from_secs(7_300)), "2h ago");
        assert_eq!(age(Duration::from_secs(200_000)), "2d ago");
    }

    #[test]
    fn sizes_are_binary_units() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(8192), "8.0 KiB");
        assert_eq!(bytes(3 * 1024 * 1024 / 2), "1.5 MiB");
    }

    #[test]
    fn tables_align_and_fit_the_width() {
        let rows = vec![
            vec!["alice".into(), "1".into(), "{\"cursor\":17}".into()],
            vec!["bob-the-builder".into(), "12".into(), "x".repeat(100)],
        ];
        let text = table(&["CLIENT", "CLOCK", "STATE"], &rows, Some(40));
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "CLIENT           CLOCK  STATE");
        assert_eq!(lines[1], "alice            1      {\"cursor\":17}");
        assert_eq!(lines[2].chars().count(), 40);
        assert!(lines[2].ends_with('…'));
        let unlimited = table(&["CLIENT", "CLOCK", "STATE"], &rows, None);
        assert!(unlimited.contains(&"x".repeat(100)));
    }

    #[test]
    fn double_width_characters_keep_the_columns_aligned() {
        let rows = vec![
            vec!["李小龍".into(), "1".into(), "😀".repeat(30)],
            vec!["ana".into(), "2".into(), "{}".into()],
        ];
        let text = table(&["CLIENT", "CLOCK", "STATE"], &rows, Some(30));
        let lines: Vec<&str> = text.lines().collect();
        // The CLOCK column starts at the same terminal column on every line.
        let clock_at = |line: &str, clock: &str| display_width(&line[..line.find(clock).unwrap()]);
        assert_eq!(clock_at(lines[0], "CLOCK"), clock_at(lines[1], "1"));
        assert_eq!(clock_at(lines[1], "1"), clock_at(lines[2], "2"));
        // The emoji state is cut to the width, never past it.
        assert!(display_width(lines[1]) <= 30, "{}", lines[1]);
        assert!(lines[1].ends_with('…'));
    }
}
