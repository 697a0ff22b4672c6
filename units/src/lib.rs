//! How rankline prints and parses quantities: one formatter each for
//! durations, clock offsets and sizes, and the size parser of `--max-size`,
//! so every table and message of every command reads the same.
//!
//! Clock offsets have one sign convention everywhere, [`OFFSET_CONVENTION`]:
//! a host whose clock runs ahead of the coordinator's has a positive offset.

/// The sign convention of every clock offset rankline prints or stores,
/// named in the headings of the tables that show offsets.
pub const OFFSET_CONVENTION: &str = "host − coordinator";

/// The heading of every column of clock offsets.
pub const OFFSET_HEADING: &str = "offset (host − coordinator)";

/// A duration for people: `120 ns`, `7.8 µs`, `12.345 ms`, `1.234 s`
/// (negative values keep their `-`).
pub fn duration(ns: i64) -> String {
    let sign = if ns < 0 { "-" } else { "" };
    format!("{sign}{}", magnitude(ns.unsigned_abs()))
}

/// A clock offset (or any signed correction): [`duration`] with its sign
/// always written, `+7.8 µs`, `-12.345 ms`.
pub fn offset(ns: i64) -> String {
    let sign = if ns < 0 { '-' } else { '+' };
    format!("{sign}{}", magnitude(ns.unsigned_abs()))
}

fn magnitude(ns: u64) -> String {
    match ns {
        0..=999 => format!("{ns} ns"),
        1_000..=999_999 => format!("{:.1} µs", ns as f64 / 1e3),
        1_000_000..=999_999_999 => format!("{:.3} ms", ns as f64 / 1e6),
        _ => format!("{:.3} s", ns as f64 / 1e9),
    }
}

/// A size in decimal units, as storage consoles and `--max-size` write them:
/// `512 B`, `1.5 kB`, `12.3 MB`, `4.21 GB`.
pub fn bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit + 1 < UNITS.len() {
        value /= 1000.0;
        unit += 1;
    }
    match unit {
        0 => format!("{bytes} B"),
        1 | 2 => format!("{value:.1} {}", UNITS[unit]),
        _ => format!("{value:.2} {}", UNITS[unit]),
    }
}

/// Parses a size such as `1GB`, `500MB`, `2GiB` or `4096` (bytes): decimal
/// units are powers of 1000, `KiB`/`MiB`/... powers of 1024. The error says
/// how to write one.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let trimmed = text.trim();
    let split = trimmed
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a size: write e.g. 1GB, 500MB or 2GiB"))?;
    let scale: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "m" | "mb" => 1e6,
        "g" | "gb" => 1e9,
        "t" | "tb" => 1e12,
        "kib" => 1024.0,
        "mib" => 1024.0 * 1024.0,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        "tib" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        other => {
            return Err(format!(
                "{text:?}: unknown unit {other:?} (use B, KB, MB, GB, TB, KiB, MiB, GiB or TiB)"
            ))
        }
    };
    let bytes = value * scale;
    if !(1.0..=u64::MAX as f64).contains(&bytes) {
        return Err(format!("{text:?}: a size must be at least one byte"));
    }
    Ok(bytes as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_naturally() {
        assert_eq!(duration(120), "120 ns");
        assert_eq!(duration(7_800), "7.8 µs");
        assert_eq!(duration(-2_430_000), "-2.430 ms");
        assert_eq!(duration(1_234_000_000), "1.234 s");
    }

    #[test]
    fn offsets_always_carry_their_sign() {
        assert_eq!(offset(0), "+0 ns");
        assert_eq!(offset(-9_000), "-9.0 µs");
        assert_eq!(offset(16_000), "+16.0 µs");
        assert_eq!(offset(1_234_000), "+1.234 ms");
        assert_eq!(offset(i64::MIN), "-9223372036.855 s");
    }

    #[test]
    fn the_offset_heading_names_the_convention() {
        assert!(OFFSET_HEADING.contains(OFFSET_CONVENTION));
    }

    #[test]
    fn sizes_use_decimal_units() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1_500), "1.5 kB");
        assert_eq!(bytes(12_345_678), "12.3 MB");
        assert_eq!(bytes(4_210_000_000), "4.21 GB");
    }

    #[test]
    fn sizes_parse_in_either_unit_family() {
        assert_eq!(parse_size("1GB"), Ok(1_000_000_000));
        assert_eq!(parse_size("1.5 GiB"), Ok(1_610_612_736));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("2GiB"), Ok(2 << 30));
        assert_eq!(parse_size(" 500 mb "), Ok(500_000_000));
        assert!(parse_size("lots").unwrap_err().contains("1GB"));
        assert!(parse_size("3 parsecs")
            .unwrap_err()
            .contains("unknown unit"));
        assert!(parse_size("GB").is_err());
        assert!(parse_size("0").is_err());
    }
}
