//! Kubernetes resource quantities ("100m", "64Mi", "1.5G", "2e3").
//! Values are kept in nano units so both CPU (millicores) and memory (bytes)
//! round the way the API machinery does: up, towards the next whole unit.

use anyhow::{bail, Result};

/// A parsed quantity, in units of 10^-9.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Quantity(i128);

const NANO: i128 = 1_000_000_000;

impl Quantity {
    pub fn parse(s: &str) -> Result<Self> {
        let t = s.trim();
        if t.is_empty() {
            bail!("empty quantity");
        }
        let (neg, body) = match t.as_bytes()[0] {
            b'-' => (true, &t[1..]),
            b'+' => (false, &t[1..]),
            _ => (false, t),
        };
        let num_end = body
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(body.len());
        let (num, suffix) = body.split_at(num_end);
        if num.is_empty() || num == "." || num.matches('.').count() > 1 {
            bail!("invalid quantity {s:?}");
        }
        let (int_part, frac_part) = num.split_once('.').unwrap_or((num, ""));
        // value * 10^9 from the digits, frac digits past 9 round up
        let mut nano: i128 = 0;
        for c in int_part.bytes() {
            nano = nano
                .checked_mul(10)
                .and_then(|n| n.checked_add((c - b'0') as i128))
                .ok_or_else(|| anyhow::anyhow!("quantity {s:?} is too large"))?;
        }
        nano = nano
            .checked_mul(NANO)
            .ok_or_else(|| anyhow::anyhow!("quantity {s:?} is too large"))?;
        let mut scale = NANO / 10;
        let mut rest = false;
        for c in frac_part.bytes() {
            let d = (c - b'0') as i128;
            if scale == 0 {
                rest |= d != 0;
            } else {
                nano += d * scale;
                scale /= 10;
            }
        }
        if rest {
            nano += 1;
        }
        let scaled = match suffix {
            "" => Some(nano),
            "n" => Some(ceil_div(nano, NANO)),
            "u" => Some(ceil_div(nano, 1_000_000)),
            "m" => Some(ceil_div(nano, 1000)),
            "k" => nano.checked_mul(1000),
            "M" => nano.checked_mul(1_000_000),
            "G" => nano.checked_mul(1_000_000_000),
            "T" => nano.checked_mul(1_000_000_000_000),
            "P" => nano.checked_mul(1_000_000_000_000_000),
            "E" => nano.checked_mul(1_000_000_000_000_000_000),
            "Ki" => nano.checked_mul(1 << 10),
            "Mi" => nano.checked_mul(1 << 20),
            "Gi" => nano.checked_mul(1 << 30),
            "Ti" => nano.checked_mul(1 << 40),
            "Pi" => nano.checked_mul(1 << 50),
            "Ei" => nano.checked_mul(1 << 60),
            e if e.starts_with(['e', 'E']) => {
                let exp: i32 = e[1..]
                    .parse()
                    .map_err(|_| anyhow::anyhow!("invalid quantity {s:?}"))?;
                if !(-9..=18).contains(&exp) {
                    bail!("quantity {s:?}: exponent out of range");
                }
                if exp >= 0 {
                    nano.checked_mul(10i128.pow(exp as u32))
                } else {
                    Some(ceil_div(nano, 10i128.pow((-exp) as u32)))
                }
            }
            _ => bail!("invalid quantity {s:?}: unknown suffix {suffix:?}"),
        };
        let v = scaled.ok_or_else(|| anyhow::anyhow!("quantity {s:?} is too large"))?;
        Ok(Quantity(if neg { -v } else { v }))
    }

    /// Whole units, rounded up (bytes for memory, cores for CPU).
    pub fn value(self) -> i64 {
        clamp(ceil_div(self.0, NANO))
    }

    /// Thousandths, rounded up (millicores for CPU).
    pub fn milli_value(self) -> i64 {
        clamp(ceil_div(self.0, NANO / 1000))
    }

    pub fn is_zero(self) -> bool {
        self.0 == 0
    }
}

fn ceil_div(a: i128, b: i128) -> i128 {
    let q = a / b;
    if a % b > 0 {
        q + 1
    } else {
        q
    }
}

fn clamp(v: i128) -> i64 {
    v.clamp(i64::MIN as i128, i64::MAX as i128) as i64
}

/// `v` as the API machinery prints a BinarySI quantity (memory, storage):
/// in the largest power-of-1024 unit that divides it exactly (`16Gi`,
/// `8039624Ki`), plainly below 1024 or when nothing divides it.
pub fn format_binary_si(v: i64) -> String {
    const UNITS: [&str; 6] = ["Ki", "Mi", "Gi", "Ti", "Pi", "Ei"];
    if v.unsigned_abs() < 1024 {
        return v.to_string();
    }
    let (mut n, mut unit) = (v, None);
    for u in UNITS {
        if n % 1024 != 0 {
            break;
        }
        n /= 1024;
        unit = Some(u);
    }
    format!("{n}{}", unit.unwrap_or(""))
}

/// Millis as the API machinery prints a DecimalSI quantity (cpu): whole
/// units when exact (`2`), else millis (`1500m`).
pub fn format_milli(m: i64) -> String {
    if m % 1000 == 0 {
        (m / 1000).to_string()
    } else {
        format!("{m}m")
    }
}

/// Parses a k8s-openapi `Quantity`.
pub fn parse(q: &k8s_openapi::apimachinery::pkg::api::resource::Quantity) -> Result<Quantity> {
    Quantity::parse(&q.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_like_the_api_machinery() {
        assert_eq!(format_binary_si(0), "0");
        assert_eq!(format_binary_si(1000), "1000");
        assert_eq!(format_binary_si(1024), "1Ki");
        assert_eq!(format_binary_si(16 << 30), "16Gi");
        assert_eq!(format_binary_si(8_232_574_976), "8039624Ki");
        assert_eq!(format_binary_si(8_232_574_977), "8232574977");
        assert_eq!(format_milli(2000), "2");
        assert_eq!(format_milli(1500), "1500m");
        assert_eq!(format_milli(0), "0");
        for v in [0i64, 1023, 1024, 5 << 20, 8_232_574_977] {
            assert_eq!(Quantity::parse(&format_binary_si(v)).unwrap().value(), v);
        }
    }

    fn q(s: &str) -> Quantity {
        Quantity::parse(s).unwrap()
    }

    #[test]
    fn cpu() {
        assert_eq!(q("100m").milli_value(), 100);
        assert_eq!(q("0.5").milli_value(), 500);
        assert_eq!(q("2").milli_value(), 2000);
        assert_eq!(q("1.0001").milli_value(), 1001); // rounds up
        assert_eq!(q("250u").milli_value(), 1);
    }

    #[test]
    fn memory() {
        assert_eq!(q("64Mi").value(), 64 << 20);
        assert_eq!(q("1Gi").value(), 1 << 30);
        assert_eq!(q("1.5Gi").value(), 3 << 29);
        assert_eq!(q("128M").value(), 128_000_000);
        assert_eq!(q("1e3").value(), 1000);
        assert_eq!(
            q("12E").value(),
            12_000_000_000_000_000_000i128.min(i64::MAX as i128) as i64
        );
        assert_eq!(q("100").value(), 100);
        assert_eq!(q("0.1").value(), 1); // rounds up
    }

    #[test]
    fn rejects_garbage() {
        for s in ["", "abc", "1.2.3", "10Qi", "Mi", "1e99", "."] {
            assert!(Quantity::parse(s).is_err(), "{s}");
        }
    }

    #[test]
    fn ordering_and_sign() {
        assert!(q("1Gi") > q("1G"));
        assert_eq!(q("-1").value(), -1);
        assert!(q("0").is_zero());
    }
}
