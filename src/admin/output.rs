//! What `ringmq admin` prints: mqadmin's left-aligned tables (each column at least as wide as
//! mqadmin's printf width, wider when a cell is longer, so rows stay aligned where mqadmin would
//! truncate), JSON for `--json`, and mqadmin's time and version formats.

use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};

use serde::Serialize;

use super::AdminError;

/// Set once writing to stdout failed; later output is dropped and the command fails.
static STDOUT_FAILED: AtomicBool = AtomicBool::new(false);

/// Writes to stdout without `println!`'s panic when the reader is gone (`… | head`).
pub fn write_out(args: std::fmt::Arguments<'_>) {
    if STDOUT_FAILED.load(Ordering::Relaxed) {
        return;
    }
    let mut stdout = io::stdout().lock();
    if let Err(e) = stdout
        .write_fmt(args)
        .and_then(|()| stdout.write_all(b"\n"))
    {
        STDOUT_FAILED.store(true, Ordering::Relaxed);
        if e.kind() != io::ErrorKind::BrokenPipe {
            eprintln!("ringmq admin: cannot write to stdout: {e}");
        }
    }
}

/// Whether some output could not be written.
pub fn stdout_failed() -> bool {
    STDOUT_FAILED.load(Ordering::Relaxed)
}

/// `println!` to stdout through [`write_out`].
macro_rules! out {
    () => {
        $crate::admin::output::write_out(format_args!(""))
    };
    ($($arg:tt)*) => {
        $crate::admin::output::write_out(format_args!($($arg)*))
    };
}
pub(crate) use out;

/// One column: its title, mqadmin's width, right alignment (`%19s`) and the text after it.
#[derive(Debug, Clone, Copy)]
pub struct Column {
    pub title: &'static str,
    pub width: usize,
    pub right: bool,
    pub gap: &'static str,
}

/// A left-aligned column (`%-<width>s` followed by `gap`).
pub const fn left(title: &'static str, width: usize, gap: &'static str) -> Column {
    Column {
        title,
        width,
        right: false,
        gap,
    }
}

/// A right-aligned column (`%<width>s` followed by `gap`).
pub const fn right(title: &'static str, width: usize, gap: &'static str) -> Column {
    Column {
        title,
        width,
        right: true,
        gap,
    }
}

/// A table printed at once, so every column fits its longest cell.
#[derive(Debug)]
pub struct Table {
    columns: Vec<Column>,
    rows: Vec<Vec<String>>,
    /// Whether the title line is printed.
    pub titles: bool,
}

impl Table {
    pub fn new(columns: &[Column]) -> Table {
        Table {
            columns: columns.to_vec(),
            rows: Vec::new(),
            titles: true,
        }
    }

    /// Adds a row; missing cells are blank, extra ones dropped.
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// The table as text, one line per row, trailing blanks trimmed.
    pub fn render(&self) -> String {
        let widths: Vec<usize> = self
            .columns
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let longest = self
                    .rows
                    .iter()
                    .filter_map(|r| r.get(i))
                    .map(|s| s.chars().count());
                let title = if self.titles { c.title.len() } else { 0 };
                longest.chain([c.width, title]).max().unwrap_or(0)
            })
            .collect();
        let titles: Vec<String> = self.columns.iter().map(|c| c.title.to_string()).collect();
        let header = self.titles.then_some(&titles);
        let mut out = String::new();
        for row in header.into_iter().chain(&self.rows) {
            let mut line = String::new();
            for (i, column) in self.columns.iter().enumerate() {
                let cell = row.get(i).map_or("", String::as_str);
                let last = i + 1 == self.columns.len();
                let width = if last && !column.right { 0 } else { widths[i] };
                line.push_str(&pad(cell, width, column.right));
                if !last {
                    line.push_str(column.gap);
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }

    /// Prints the table to stdout.
    pub fn print(&self) {
        let text = self.render();
        out!("{}", text.trim_end_matches('\n'));
    }
}

fn pad(cell: &str, width: usize, right: bool) -> String {
    if right {
        format!("{cell:>width$}")
    } else {
        format!("{cell:<width$}")
    }
}

/// Prints `value` as pretty JSON (`--json`).
pub fn print_json<T: Serialize + ?Sized>(value: &T) -> Result<(), AdminError> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| AdminError::Failed(format!("cannot write the JSON output: {e}")))?;
    out!("{text}");
    Ok(())
}

/// Milliseconds since the epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// A broken-down local time.
struct LocalTime {
    year: i64,
    month: i64,
    day: i64,
    hour: i64,
    minute: i64,
    second: i64,
    millis: i64,
}

/// `ms` since the epoch in the local time zone (UTC if the zone cannot be read).
fn local_time(ms: i64) -> LocalTime {
    let secs = ms.div_euclid(1000);
    let millis = ms.rem_euclid(1000);
    let t = secs as libc::time_t;
    // SAFETY: `tm` is plain old data, so all zeroes is a valid value.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: localtime_r only reads `t` and writes `tm`, both live locals; it is thread-safe.
    let converted = unsafe { !libc::localtime_r(&t, &mut tm).is_null() };
    if !converted {
        return utc_time(secs, millis);
    }
    LocalTime {
        year: i64::from(tm.tm_year) + 1900,
        month: i64::from(tm.tm_mon) + 1,
        day: i64::from(tm.tm_mday),
        hour: i64::from(tm.tm_hour),
        minute: i64::from(tm.tm_min),
        second: i64::from(tm.tm_sec),
        millis,
    }
}

/// UTC civil time (Howard Hinnant's days-to-civil).
fn utc_time(secs: i64, millis: i64) -> LocalTime {
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    LocalTime {
        year,
        month,
        day,
        hour: rem / 3600,
        minute: rem % 3600 / 60,
        second: rem % 60,
        millis,
    }
}

/// mqadmin's `yyyy-MM-dd HH:mm:ss` (UtilAll.YYYY_MM_DD_HH_MM_SS), local time.
pub fn date_time(ms: i64) -> String {
    let t = local_time(ms);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
        t.year, t.month, t.day, t.hour, t.minute, t.second
    )
}

/// mqadmin's `yyyy-MM-dd HH:mm:ss,SSS` (UtilAll.timeMillisToHumanString2), local time.
pub fn date_time_millis(ms: i64) -> String {
    format!("{},{:03}", date_time(ms), local_time(ms).millis)
}

/// Local time `yyyy-MM-dd#HH:mm:ss:SSS` (UtilAll.YYYY_MM_DD_HH_MM_SS_SSS) in ms since the
/// epoch; `None` when the text is not such a time.
pub fn parse_date_time_millis(text: &str) -> Option<i64> {
    let (date, time) = text.split_once('#')?;
    let date: Vec<i32> = date
        .split('-')
        .map(|p| p.parse().ok())
        .collect::<Option<_>>()?;
    let time: Vec<i32> = time
        .split(':')
        .map(|p| p.parse().ok())
        .collect::<Option<_>>()?;
    let [year, month, day] = <[i32; 3]>::try_from(date).ok()?;
    let [hour, minute, second, millis] = <[i32; 4]>::try_from(time).ok()?;
    let valid = (1..=12).contains(&month)
        && (1..=31).contains(&day)
        && (0..24).contains(&hour)
        && (0..60).contains(&minute)
        && (0..61).contains(&second)
        && (0..1000).contains(&millis);
    if !valid {
        return None;
    }
    // SAFETY: `tm` is plain old data, so all zeroes is a valid value.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    tm.tm_year = year - 1900;
    tm.tm_mon = month - 1;
    tm.tm_mday = day;
    tm.tm_hour = hour;
    tm.tm_min = minute;
    tm.tm_sec = second;
    tm.tm_isdst = -1;
    // SAFETY: mktime reads and normalizes `tm`, a live local; it returns -1 on failure.
    let secs = unsafe { libc::mktime(&mut tm) };
    (secs != -1).then(|| secs * 1000 + i64::from(millis))
}

/// The MQVersion name of a version ordinal (`MQVersion.getVersionDesc`), for 4.x and 5.x:
/// V4_0_0_SNAPSHOT is 212 and every release takes a SNAPSHOT ordinal and a release ordinal.
pub fn version_desc(ordinal: i32) -> String {
    const V4_0_0_SNAPSHOT: i32 = 212;
    if !(V4_0_0_SNAPSHOT..V4_0_0_SNAPSHOT + 1200).contains(&ordinal) {
        return format!("version ordinal {ordinal}");
    }
    let steps = ordinal - V4_0_0_SNAPSHOT;
    let release = steps / 2;
    let snapshot = if steps % 2 == 0 { "_SNAPSHOT" } else { "" };
    let major = 4 + release / 100;
    format!("V{major}_{}_{}{snapshot}", release % 100 / 10, release % 10)
}

/// Java's `PermName.perm2String`: `RW-`, `R--`, `-WX`…
pub fn perm_string(perm: i32) -> String {
    let flag = |bit: i32, c: char| if perm & bit != 0 { c } else { '-' };
    [flag(4, 'R'), flag(2, 'W'), flag(1, 'X')].iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_are_at_least_mqadmins_width_and_fit_long_cells() {
        let mut table = Table::new(&[left("#A", 4, "  "), right("#N", 3, " "), left("#C", 2, "")]);
        table.row(vec!["x".into(), "1".into(), "end".into()]);
        table.row(vec!["longer".into(), "22".into()]);
        assert_eq!(
            table.render(),
            "#A       #N #C\nx         1 end\nlonger   22\n"
        );
    }

    #[test]
    fn versions_are_named_like_mqversion() {
        let named = [
            (317, "V4_5_2"),
            (333, "V4_6_0"),
            (401, "V4_9_4"),
            (409, "V4_9_8"),
            (474, "V5_3_1_SNAPSHOT"),
            (212, "V4_0_0_SNAPSHOT"),
        ];
        for (ordinal, name) in named {
            assert_eq!(version_desc(ordinal), name);
        }
        assert_eq!(version_desc(37), "version ordinal 37");
    }

    #[test]
    fn times_and_perms() {
        let t = utc_time(1_700_000_000, 123);
        let fields = (t.year, t.month, t.day, t.hour, t.minute, t.second);
        assert_eq!(fields, (2023, 11, 14, 22, 13, 20));
        assert_eq!(date_time_millis(1_700_000_000_123).len(), 23);
        assert!(date_time_millis(1_700_000_000_123).ends_with(",123"));
        assert_eq!(perm_string(6), "RW-");
        assert_eq!(perm_string(4), "R--");
        assert_eq!(perm_string(3), "-WX");
    }
}
