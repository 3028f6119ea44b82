//! Owns the conversions between RocketMQ's textual values and typed ones: booleans, bounded
//! integers, IP addresses, `host:port`, delay levels (`1s 5s … 2h`) and deletion hours
//! (`04;16`), plus their inverse for printing a config back as properties. Pure functions; each
//! parser's `Err` is the "expected …" half of a `ConfigError::Value` message.

use std::net::IpAddr;
use std::path::PathBuf;

/// One day in milliseconds: the upper bound of most intervals and timeouts.
pub const DAY_MS: u64 = 86_400_000;

/// The reason a value was rejected, e.g. `expected true or false`. Wrapped with key, value, file
/// and line by the caller.
pub type Reason = String;

/// `true` or `false`, case-insensitive. Java's `Boolean.parseBoolean` turns anything else into
/// `false`; ringmq rejects it instead.
pub fn parse_bool(value: &str) -> Result<bool, Reason> {
    if value.eq_ignore_ascii_case("true") {
        Ok(true)
    } else if value.eq_ignore_ascii_case("false") {
        Ok(false)
    } else {
        Err("expected true or false".to_string())
    }
}

macro_rules! uint_parser {
    ($name:ident, $ty:ty) => {
        #[doc = concat!("A whole number that fits a `", stringify!($ty), "`.")]
        pub fn $name(value: &str) -> Result<$ty, Reason> {
            value
                .parse::<$ty>()
                .map_err(|_| format!("expected a whole number in 0..={}", <$ty>::MAX))
        }
    };
}

uint_parser!(parse_u8, u8);
uint_parser!(parse_u16, u16);
uint_parser!(parse_u32, u32);
uint_parser!(parse_u64, u64);

/// Any text, kept as is (the caller already removed trailing whitespace).
pub fn parse_string(value: &str) -> Result<String, Reason> {
    Ok(value.to_string())
}

/// Text, or `None` when empty.
pub fn parse_opt_string(value: &str) -> Result<Option<String>, Reason> {
    Ok((!value.is_empty()).then(|| value.to_string()))
}

/// A non-empty path.
pub fn parse_path(value: &str) -> Result<PathBuf, Reason> {
    if value.is_empty() {
        return Err("expected a path".to_string());
    }
    Ok(PathBuf::from(value))
}

/// A path, or `None` when empty.
pub fn parse_opt_path(value: &str) -> Result<Option<PathBuf>, Reason> {
    Ok((!value.is_empty()).then(|| PathBuf::from(value)))
}

/// An IPv4 or IPv6 address (no host names: the broker writes this address into every stored
/// message as its storeHost).
pub fn parse_ip(value: &str) -> Result<IpAddr, Reason> {
    value
        .parse()
        .map_err(|_| "expected an IPv4 or IPv6 address".to_string())
}

/// Checks one `host:port` (Java's `RemotingUtil.string2SocketAddress`: split at the last `:`).
/// The host is an IP address (IPv6 optionally in brackets) or a DNS name; the port is 1..=65535.
pub fn check_host_port(addr: &str) -> Result<(), Reason> {
    let Some((host, port)) = addr.rsplit_once(':') else {
        return Err("expected host:port".to_string());
    };
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let dns_name = !bare.is_empty()
        && bare
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'));
    if bare.parse::<IpAddr>().is_err() && !dns_name {
        return Err(format!("{host:?} is not an IP address or host name"));
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(()),
        _ => Err(format!("port {port:?} is not in 1..=65535")),
    }
}

/// A `host:port`, or `None` when empty.
pub fn parse_opt_host_port(value: &str) -> Result<Option<String>, Reason> {
    if value.is_empty() {
        return Ok(None);
    }
    check_host_port(value)?;
    Ok(Some(value.to_string()))
}

/// The units of `messageDelayLevel`, as `ScheduleMessageService.parseDelayLevel` knows them.
const DELAY_UNITS: [(char, u64); 4] = [
    ('s', 1_000),
    ('m', 60_000),
    ('h', 3_600_000),
    ('d', 86_400_000),
];

/// Most delay levels accepted (a level is carried as an int property; 255 is already generous).
pub const DELAY_LEVELS_MAX: usize = 255;

/// `1s 5s 10s … 2h` → milliseconds. Levels are separated by blanks; each is a positive whole
/// number followed by one of `s`, `m`, `h`, `d` (lower case, as in Java).
pub fn parse_delay_levels(value: &str) -> Result<Vec<u64>, Reason> {
    let mut levels = Vec::new();
    for level in value.split_whitespace() {
        levels.push(parse_delay_level(level)?);
    }
    if levels.is_empty() || levels.len() > DELAY_LEVELS_MAX {
        return Err(format!(
            "expected 1..={DELAY_LEVELS_MAX} levels like \"1s 5s 1m 2h\""
        ));
    }
    Ok(levels)
}

fn parse_delay_level(level: &str) -> Result<u64, Reason> {
    let bad = || format!("level {level:?}: expected a positive number followed by s, m, h or d");
    let unit = level.chars().last().ok_or_else(bad)?;
    let (_, ms_per_unit) = DELAY_UNITS
        .iter()
        .find(|(u, _)| *u == unit)
        .ok_or_else(bad)?;
    let count: u64 = level[..level.len() - unit.len_utf8()]
        .parse()
        .map_err(|_| bad())?;
    match count.checked_mul(*ms_per_unit) {
        Some(ms) if ms > 0 => Ok(ms),
        _ => Err(bad()),
    }
}

/// Milliseconds → `1s 5s … 2h`, each level in the largest unit that divides it exactly.
pub fn format_delay_levels(levels_ms: &[u64]) -> String {
    let level = |ms: u64| {
        let (unit, per) = DELAY_UNITS
            .iter()
            .rev()
            .find(|(_, per)| ms % per == 0)
            .copied()
            .unwrap_or(('s', 1_000));
        if ms % per == 0 {
            format!("{}{unit}", ms / per)
        } else {
            // Not expressible in whole seconds; print the nearest whole second up.
            format!("{}s", ms.div_ceil(1_000))
        }
    };
    levels_ms
        .iter()
        .map(|&ms| level(ms))
        .collect::<Vec<_>>()
        .join(" ")
}

/// `04;16` → `[4, 16]`: hours of the day, `;`-separated, each 0..=23. Blanks around an hour and
/// empty parts are ignored; at least one hour is required.
pub fn parse_hours(value: &str) -> Result<Vec<u8>, Reason> {
    let mut hours = Vec::new();
    for part in value.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        match part.parse::<u8>() {
            Ok(hour) if hour <= 23 => hours.push(hour),
            _ => return Err(format!("hour {part:?} is not in 0..=23")),
        }
    }
    if hours.is_empty() {
        return Err("expected hours of the day like \"04\" or \"04;16\"".to_string());
    }
    Ok(hours)
}

/// `[4, 16]` → `04;16`.
pub fn format_hours(hours: &[u8]) -> String {
    hours
        .iter()
        .map(|h| format!("{h:02}"))
        .collect::<Vec<_>>()
        .join(";")
}

/// A typed value printed back the way a properties file spells it (for `-p` style dumps).
pub trait ToProperty {
    /// The text that, parsed again, gives back this value.
    fn to_property(&self) -> String;
}

macro_rules! display_property {
    ($($ty:ty),*) => {
        $(impl ToProperty for $ty {
            fn to_property(&self) -> String {
                self.to_string()
            }
        })*
    };
}

display_property!(bool, u8, u16, u32, u64, String, IpAddr);

impl ToProperty for PathBuf {
    fn to_property(&self) -> String {
        self.display().to_string()
    }
}

impl<T: ToProperty> ToProperty for Option<T> {
    fn to_property(&self) -> String {
        self.as_ref()
            .map(ToProperty::to_property)
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEFAULT_LEVELS: &str = "1s 5s 10s 30s 1m 2m 3m 4m 5m 6m 7m 8m 9m 10m 20m 30m 1h 2h";

    #[test]
    fn booleans_are_true_or_false_in_any_case() {
        assert_eq!(parse_bool("TRUE"), Ok(true));
        assert_eq!(parse_bool("False"), Ok(false));
        for bad in ["yes", "1", "", "tru"] {
            assert!(parse_bool(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn integers_are_range_checked_by_type() {
        assert_eq!(parse_u16("65535"), Ok(65535));
        let err = parse_u16("65536").expect_err("too big");
        assert!(err.contains("0..=65535"), "{err}");
        assert!(parse_u32("-1").is_err());
        assert!(parse_u64("12ms").is_err());
    }

    #[test]
    fn default_delay_levels_parse_to_milliseconds() {
        let levels = parse_delay_levels(DEFAULT_LEVELS).expect("parses");
        let expected: Vec<u64> = vec![
            1, 5, 10, 30, 60, 120, 180, 240, 300, 360, 420, 480, 540, 600, 1200, 1800, 3600, 7200,
        ]
        .into_iter()
        .map(|s| s * 1_000)
        .collect();
        assert_eq!(levels, expected);
        assert_eq!(format_delay_levels(&levels), DEFAULT_LEVELS);
        assert_eq!(
            parse_delay_levels("  1d\t90s "),
            Ok(vec![86_400_000, 90_000])
        );
    }

    #[test]
    fn delay_levels_reject_bad_units_and_numbers() {
        for bad in [
            "1s 5x",
            "1S",
            "s",
            "0s",
            "1.5s",
            "",
            "-1s",
            "99999999999999999d",
        ] {
            assert!(parse_delay_levels(bad).is_err(), "{bad:?}");
        }
        let err = parse_delay_levels("1s 1w").expect_err("bad unit");
        assert!(err.contains("\"1w\""), "{err}");
    }

    #[test]
    fn hours_parse_and_print() {
        assert_eq!(parse_hours("04"), Ok(vec![4]));
        assert_eq!(parse_hours("04; 16;"), Ok(vec![4, 16]));
        assert_eq!(format_hours(&[4, 16]), "04;16");
        for bad in ["24", "", ";", "4am"] {
            assert!(parse_hours(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn host_port_accepts_ips_and_names() {
        for good in [
            "127.0.0.1:9876",
            "ns-1.example.com:9876",
            "[::1]:9876",
            "::1:9876",
        ] {
            assert_eq!(check_host_port(good), Ok(()), "{good}");
        }
        for bad in [
            "127.0.0.1",
            ":9876",
            "host:0",
            "host:65536",
            "ho st:1",
            "h:x",
        ] {
            assert!(check_host_port(bad).is_err(), "{bad}");
        }
    }
}
