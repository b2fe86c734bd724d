//! Go `time.Duration` strings ("20s", "1m30s", "2h45m0.5s", "300ms"), the form
//! KubeletConfiguration uses for every duration field.

use anyhow::{bail, Result};
use std::time::Duration;

pub fn parse(s: &str) -> Result<Duration> {
    let t = s.trim();
    if t == "0" {
        return Ok(Duration::ZERO);
    }
    if t.is_empty() {
        bail!("invalid duration {s:?}");
    }
    if t.starts_with('-') {
        bail!("invalid duration {s:?}: negative");
    }
    let mut rest = t.strip_prefix('+').unwrap_or(t);
    let mut total: f64 = 0.0;
    while !rest.is_empty() {
        let n = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if n == 0 {
            bail!("invalid duration {s:?}");
        }
        let num: f64 = rest[..n]
            .parse()
            .map_err(|_| anyhow::anyhow!("invalid duration {s:?}"))?;
        rest = &rest[n..];
        let u = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = match &rest[..u] {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            "" => bail!("invalid duration {s:?}: missing unit"),
            other => bail!("invalid duration {s:?}: unknown unit {other:?}"),
        };
        total += num * unit;
        rest = &rest[u..];
    }
    if !total.is_finite() || total > 1e12 {
        bail!("invalid duration {s:?}: out of range");
    }
    Ok(Duration::from_secs_f64(total))
}

/// Formats like Go's `Duration.String()` for whole-second-ish values ("1m30s").
pub fn format(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        return "0s".into();
    }
    let (h, m, s, frac) = (
        ms / 3_600_000,
        (ms / 60_000) % 60,
        (ms / 1000) % 60,
        ms % 1000,
    );
    let mut out = String::new();
    if h > 0 {
        out += &format!("{h}h");
    }
    if h > 0 || m > 0 {
        out += &format!("{m}m");
    }
    if frac > 0 {
        let f = format!("{s}.{frac:03}");
        out += f.trim_end_matches('0');
        out += "s";
    } else {
        out += &format!("{s}s");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_go_durations() {
        assert_eq!(parse("20s").unwrap(), Duration::from_secs(20));
        assert_eq!(parse("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse("2h0m0s").unwrap(), Duration::from_secs(7200));
        assert_eq!(parse("300ms").unwrap(), Duration::from_millis(300));
        assert_eq!(parse("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse("0").unwrap(), Duration::ZERO);
    }

    #[test]
    fn rejects_bad_durations() {
        for s in ["", "20", "s", "1x", "-5s", "1m30", "abc"] {
            assert!(parse(s).is_err(), "{s}");
        }
    }

    #[test]
    fn formats_like_go() {
        assert_eq!(format(Duration::from_secs(90)), "1m30s");
        assert_eq!(format(Duration::from_secs(20)), "20s");
        assert_eq!(format(Duration::from_secs(7200)), "2h0m0s");
        assert_eq!(format(Duration::from_millis(1500)), "1.5s");
    }
}
