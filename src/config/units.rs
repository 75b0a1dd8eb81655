//! Human units in the config file: durations (`"30s"`, `"2m"`, `"1h 30m"`, `"500ms"`) and
//! sizes (`"1MiB"`, `"512KiB"`, `"2GB"`, `"4096"`).

use std::time::Duration;

/// Parses a duration such as `30s`, `2m`, `500ms` or `1h 30m`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err("empty duration; write e.g. \"30s\" or \"2m\"".into());
    }
    humantime::parse_duration(trimmed)
        .map_err(|e| format!("invalid duration \"{text}\" ({e}); write e.g. \"30s\" or \"2m\""))
}

/// Parses a byte size: a number with an optional unit, binary (`KiB`, `MiB`, `GiB`, `TiB`)
/// or decimal (`kB`, `MB`, `GB`, `TB`); a bare number (or `B`) is bytes.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let trimmed = text.trim();
    let split = trimmed
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(split);
    let unit = unit.trim();
    let bad = || format!("invalid size \"{text}\"; write e.g. \"1MiB\", \"512KiB\" or \"2GiB\"");
    let multiplier: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "m" | "mb" => 1_000_000,
        "g" | "gb" => 1_000_000_000,
        "t" | "tb" => 1_000_000_000_000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "tib" => 1 << 40,
        _ => return Err(bad()),
    };
    if number.is_empty() {
        return Err(bad());
    }
    if let Ok(whole) = number.parse::<u64>() {
        return whole.checked_mul(multiplier).ok_or_else(bad);
    }
    let fractional: f64 = number.parse().map_err(|_| bad())?;
    let bytes = fractional * multiplier as f64;
    if !bytes.is_finite() || bytes < 0.0 || bytes > u64::MAX as f64 {
        return Err(bad());
    }
    Ok(bytes.round() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        let cases = [
            ("30s", Some(Duration::from_secs(30))),
            ("2m", Some(Duration::from_secs(120))),
            ("500ms", Some(Duration::from_millis(500))),
            ("1h 30m", Some(Duration::from_secs(5400))),
            (" 10s ", Some(Duration::from_secs(10))),
            ("", None),
            ("30", None),
            ("30x", None),
            ("-1s", None),
        ];
        for (text, want) in cases {
            assert_eq!(parse_duration(text).ok(), want, "{text:?}");
        }
    }

    #[test]
    fn sizes() {
        let cases = [
            ("1MiB", Some(1 << 20)),
            ("512KiB", Some(512 << 10)),
            ("2GiB", Some(2 << 30)),
            ("2 GiB", Some(2 << 30)),
            ("1mb", Some(1_000_000)),
            ("4096", Some(4096)),
            ("10B", Some(10)),
            ("1.5KiB", Some(1536)),
            ("", None),
            ("MiB", None),
            ("1XB", None),
            ("-1MiB", None),
            ("99999999999TiB", None),
        ];
        for (text, want) in cases {
            assert_eq!(parse_size(text).ok(), want, "{text:?}");
        }
    }
}
