//! Duration strings as Istio and the Gateway API write them.
//!
//! Istio's CRDs accept what Go's `time.ParseDuration` accepts (`"1s"`, `"500ms"`, `"1.5s"`,
//! `"2m"`, `"1h30m"`); the Gateway API (GEP-2257) accepts a stricter subset: one to four
//! `<1-5 digits><h|m|s|ms>` parts, no fractions, no sign. [`IstioDuration`] and
//! [`GatewayDuration`] are the field types that parse on deserialization, so a bad string is
//! reported with its field path like any other schema error.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::{fmt, time::Duration};

/// Why a duration string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// Nothing to parse.
    #[error("invalid duration \"\": empty string (write e.g. \"1s\", \"500ms\", \"2m\")")]
    Empty,
    /// A negative duration (`-1s`) where only non-negative ones make sense.
    #[error("invalid duration {0:?}: durations cannot be negative")]
    Negative(String),
    /// A part without a number or unit, or garbage.
    #[error(
        "invalid duration {0:?}: expected numbers with units, like \"1s\", \"500ms\", \"1.5s\", \"2m\", \"1h\""
    )]
    Malformed(String),
    /// A number followed by something that is not one of the units.
    #[error("invalid duration {input:?}: unknown unit {unit:?} (valid units: {valid})")]
    UnknownUnit { input: String, unit: String, valid: &'static str },
    /// Too large to represent.
    #[error("invalid duration {0:?}: out of range")]
    Overflow(String),
    /// Valid for Istio but not for the Gateway API (GEP-2257).
    #[error(
        "invalid duration {0:?}: Gateway API durations are 1 to 4 parts of up to 5 digits with unit h, m, s or ms, like \"1h30m\" or \"500ms\" (no fractions)"
    )]
    NotGep2257(String),
}

/// Parses and formats duration strings.
pub struct Durations;

const ISTIO_UNITS: &str = "ns, us, ms, s, m, h";

impl Durations {
    /// Parses an Istio duration: Go's `time.ParseDuration` syntax without a sign.
    pub fn parse(input: &str) -> Result<Duration, DurationError> {
        let s = input.trim();
        if s.is_empty() {
            return Err(DurationError::Empty);
        }
        let s = match s.as_bytes()[0] {
            b'-' => return Err(DurationError::Negative(input.to_string())),
            b'+' => &s[1..],
            _ => s,
        };
        if s == "0" {
            return Ok(Duration::ZERO);
        }
        if s.is_empty() {
            return Err(DurationError::Malformed(input.to_string()));
        }
        let mut rest = s;
        let mut total_nanos: u128 = 0;
        while !rest.is_empty() {
            // number: digits, optional '.', digits; at least one digit overall.
            let int_len = rest.bytes().take_while(u8::is_ascii_digit).count();
            let (int_part, after) = rest.split_at(int_len);
            let (frac_part, after) = match after.strip_prefix('.') {
                Some(a) => {
                    let n = a.bytes().take_while(u8::is_ascii_digit).count();
                    a.split_at(n)
                }
                None => ("", after),
            };
            if int_part.is_empty() && frac_part.is_empty() {
                return Err(DurationError::Malformed(input.to_string()));
            }
            let unit_len = after.bytes().take_while(|b| !b.is_ascii_digit() && *b != b'.').count();
            let (unit, after) = after.split_at(unit_len);
            let unit_nanos: u128 = match unit {
                "ns" => 1,
                "us" | "µs" | "μs" => 1_000,
                "ms" => 1_000_000,
                "s" => 1_000_000_000,
                "m" => 60 * 1_000_000_000,
                "h" => 3600 * 1_000_000_000,
                "" => return Err(DurationError::Malformed(input.to_string())),
                other => {
                    return Err(DurationError::UnknownUnit {
                        input: input.to_string(),
                        unit: other.to_string(),
                        valid: ISTIO_UNITS,
                    });
                }
            };
            let overflow = || DurationError::Overflow(input.to_string());
            let int: u128 = if int_part.is_empty() { 0 } else { int_part.parse().map_err(|_| overflow())? };
            let mut nanos = int.checked_mul(unit_nanos).ok_or_else(overflow)?;
            // The fraction, to nanosecond precision (like Go, extra digits are dropped).
            let mut scale = unit_nanos;
            for d in frac_part.bytes() {
                scale /= 10;
                if scale == 0 {
                    break;
                }
                nanos += u128::from(d - b'0') * scale;
            }
            total_nanos = total_nanos.checked_add(nanos).ok_or_else(overflow)?;
            rest = after;
        }
        let secs =
            u64::try_from(total_nanos / 1_000_000_000).map_err(|_| DurationError::Overflow(input.into()))?;
        Ok(Duration::new(secs, (total_nanos % 1_000_000_000) as u32))
    }

    /// Parses a Gateway API duration (GEP-2257): `^([0-9]{1,5}(h|m|s|ms)){1,4}$`.
    pub fn parse_gateway_api(input: &str) -> Result<Duration, DurationError> {
        let bad = || DurationError::NotGep2257(input.to_string());
        if input.is_empty() {
            return Err(DurationError::Empty);
        }
        let mut rest = input;
        let mut parts = 0;
        let mut total = Duration::ZERO;
        while !rest.is_empty() {
            let n = rest.bytes().take_while(u8::is_ascii_digit).count();
            if n == 0 || n > 5 {
                return Err(bad());
            }
            let value: u64 = rest[..n].parse().map_err(|_| bad())?;
            rest = &rest[n..];
            let (unit, len) = if rest.starts_with("ms") {
                (Duration::from_millis(1), 2)
            } else if rest.starts_with('h') {
                (Duration::from_secs(3600), 1)
            } else if rest.starts_with('m') {
                (Duration::from_secs(60), 1)
            } else if rest.starts_with('s') {
                (Duration::from_secs(1), 1)
            } else {
                return Err(bad());
            };
            rest = &rest[len..];
            total += unit * value as u32;
            parts += 1;
            if parts > 4 {
                return Err(bad());
            }
        }
        Ok(total)
    }

    /// Formats like Go's `Duration.String()` for the common cases: `"1.5s"`, `"500ms"`,
    /// `"1h30m0s"`, `"0s"`.
    pub fn format(d: Duration) -> String {
        let nanos = d.as_nanos();
        if nanos == 0 {
            return "0s".into();
        }
        if nanos < 1_000_000_000 {
            return if nanos.is_multiple_of(1_000_000) {
                format!("{}ms", nanos / 1_000_000)
            } else if nanos.is_multiple_of(1_000) {
                format!("{}us", nanos / 1_000)
            } else {
                format!("{nanos}ns")
            };
        }
        let total_secs = d.as_secs();
        let (h, m, s) = (total_secs / 3600, (total_secs / 60) % 60, total_secs % 60);
        let frac = d.subsec_nanos();
        let secs = if frac == 0 {
            format!("{s}s")
        } else {
            let f = format!("{frac:09}");
            format!("{s}.{}s", f.trim_end_matches('0'))
        };
        match (h, m) {
            (0, 0) => secs,
            (0, m) => format!("{m}m{secs}"),
            (h, m) => format!("{h}h{m}m{secs}"),
        }
    }
}

/// A duration field in an Istio resource (`timeout: 1.5s`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IstioDuration(pub Duration);

impl<'de> Deserialize<'de> for IstioDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        Durations::parse(&s).map(IstioDuration).map_err(serde::de::Error::custom)
    }
}

impl Serialize for IstioDuration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&Durations::format(self.0))
    }
}

impl fmt::Display for IstioDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&Durations::format(self.0))
    }
}

/// A duration field in a Gateway API resource (`timeouts.request: 10s`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GatewayDuration(pub Duration);

impl<'de> Deserialize<'de> for GatewayDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        Durations::parse_gateway_api(&s).map(GatewayDuration).map_err(serde::de::Error::custom)
    }
}

impl Serialize for GatewayDuration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // GEP-2257 has no fractions: write whole milliseconds.
        let ms = self.0.as_millis();
        if ms.is_multiple_of(1000) {
            serializer.serialize_str(&format!("{}s", ms / 1000))
        } else {
            serializer.serialize_str(&format!("{ms}ms"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn istio_durations() {
        assert_eq!(Durations::parse("1s").unwrap(), Duration::from_secs(1));
        assert_eq!(Durations::parse("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(Durations::parse("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(Durations::parse("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(Durations::parse("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(Durations::parse("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(Durations::parse("0.5ms").unwrap(), Duration::from_micros(500));
        assert_eq!(Durations::parse(".5s").unwrap(), Duration::from_millis(500));
        assert_eq!(Durations::parse("0").unwrap(), Duration::ZERO);
        assert_eq!(Durations::parse("10us").unwrap(), Duration::from_micros(10));
    }

    #[test]
    fn istio_duration_errors_say_why() {
        assert_eq!(Durations::parse(""), Err(DurationError::Empty));
        assert!(matches!(Durations::parse("-1s"), Err(DurationError::Negative(_))));
        assert!(matches!(Durations::parse("10"), Err(DurationError::Malformed(_))));
        assert!(matches!(Durations::parse("s"), Err(DurationError::Malformed(_))));
        assert!(matches!(Durations::parse("."), Err(DurationError::Malformed(_))));
        let err = Durations::parse("1x").unwrap_err();
        assert!(matches!(err, DurationError::UnknownUnit { ref unit, .. } if unit == "x"));
        assert!(err.to_string().contains("unknown unit \"x\""), "{err}");
        assert!(matches!(Durations::parse("1 s"), Err(DurationError::UnknownUnit { .. })));
        assert!(matches!(Durations::parse("99999999999999999999999h"), Err(DurationError::Overflow(_))));
    }

    #[test]
    fn gateway_api_durations() {
        assert_eq!(Durations::parse_gateway_api("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(Durations::parse_gateway_api("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(Durations::parse_gateway_api("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(Durations::parse_gateway_api("0s").unwrap(), Duration::ZERO);
        for bad in ["1.5s", "100000s", "1h1h1h1h1h", "-1s", "1", "s", "1d"] {
            assert!(Durations::parse_gateway_api(bad).is_err(), "{bad} should fail");
        }
    }

    #[test]
    fn formats_round_trip() {
        for s in ["0s", "500ms", "1.5s", "2m0s", "1h30m0s", "250us"] {
            assert_eq!(Durations::format(Durations::parse(s).unwrap()), s);
        }
    }
}
