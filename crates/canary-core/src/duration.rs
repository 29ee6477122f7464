//! Human durations (`90s`, `5m`, `1h30m`, `250ms`) for specs and the CLI.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A duration written as `250ms`, `30s`, `5m`, `2h` or a sum such as `1m30s`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct HumanDuration(pub Duration);

/// Why a duration string was not understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{text}` is not a duration: {why} (write e.g. 30s, 5m, 1h30m, 250ms)")]
pub struct DurationError {
    /// The text that was given.
    pub text: String,
    /// What is wrong with it.
    pub why: &'static str,
}

/// The longest duration canary takes anywhere: 365 days. Longer stages,
/// timeouts or intervals are mistakes (a number meant as ms, a stray digit),
/// and beyond about 5.8 × 10¹¹ years they would not fit in a `Duration`.
pub const MAX: Duration = Duration::from_secs(365 * 86_400);

impl HumanDuration {
    /// Parses `text`.
    ///
    /// # Errors
    /// [`DurationError`] when a number has no unit, a unit is unknown, or
    /// the text is empty.
    pub fn parse(text: &str) -> Result<Self, DurationError> {
        let err = |why| DurationError {
            text: text.to_string(),
            why,
        };
        let t = text.trim();
        if t.is_empty() {
            return Err(err("it is empty"));
        }
        let mut total_ms: u128 = 0;
        let mut rest = t;
        while !rest.is_empty() {
            let digits = rest
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .unwrap_or(rest.len());
            if digits == 0 {
                return Err(err("expected a number"));
            }
            let number: f64 = rest[..digits].parse().map_err(|_| err("bad number"))?;
            rest = &rest[digits..];
            let unit_len = rest
                .find(|c: char| c.is_ascii_digit() || c == '.')
                .unwrap_or(rest.len());
            let unit_ms = match rest[..unit_len].trim() {
                "ms" => 1.0,
                "s" | "sec" => 1_000.0,
                "m" | "min" => 60_000.0,
                "h" => 3_600_000.0,
                "d" => 86_400_000.0,
                "" => return Err(err("a number needs a unit")),
                _ => return Err(err("unknown unit")),
            };
            rest = &rest[unit_len..];
            total_ms += (number * unit_ms).round() as u128;
        }
        let ms = u64::try_from(total_ms).map_err(|_| err("longer than the 365-day maximum"))?;
        let d = Duration::from_millis(ms);
        if d > MAX {
            return Err(err("longer than the 365-day maximum"));
        }
        Ok(Self(d))
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        if ms == 0 {
            return f.write_str("0s");
        }
        let (h, m, s, rem) = (
            ms / 3_600_000,
            (ms / 60_000) % 60,
            (ms / 1000) % 60,
            ms % 1000,
        );
        if h > 0 {
            write!(f, "{h}h")?;
        }
        if m > 0 {
            write!(f, "{m}m")?;
        }
        if s > 0 {
            write!(f, "{s}s")?;
        }
        if rem > 0 {
            write!(f, "{rem}ms")?;
        }
        Ok(())
    }
}

impl std::str::FromStr for HumanDuration {
    type Err = DurationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl Serialize for HumanDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Text(String),
            Seconds(f64),
        }
        match Raw::deserialize(d)? {
            Raw::Text(t) => Self::parse(&t).map_err(serde::de::Error::custom),
            Raw::Seconds(s) if s.is_finite() && s >= 0.0 && s <= MAX.as_secs_f64() => {
                Ok(Self(Duration::from_secs_f64(s)))
            }
            Raw::Seconds(s) if s.is_finite() && s >= 0.0 => Err(serde::de::Error::custom(format!(
                "{s} seconds is longer than the 365-day maximum"
            ))),
            Raw::Seconds(s) => Err(serde::de::Error::custom(format!(
                "{s} is not a duration: seconds must be finite and not negative"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units_and_sums() {
        let p = |t| HumanDuration::parse(t).unwrap().0;
        assert_eq!(p("250ms"), Duration::from_millis(250));
        assert_eq!(p("30s"), Duration::from_secs(30));
        assert_eq!(p("5m"), Duration::from_secs(300));
        assert_eq!(p("1h30m"), Duration::from_secs(5400));
        assert_eq!(p("1.5s"), Duration::from_millis(1500));
    }

    #[test]
    fn rejects_bad_text() {
        for bad in ["", "5", "5 parsecs", "m", "-5m"] {
            assert!(HumanDuration::parse(bad).is_err(), "{bad}");
        }
    }

    /// Issue 10: a duration of 1e19 seconds panicked (exit 101).
    #[test]
    fn durations_past_a_year_are_refused_not_a_panic() {
        assert!(HumanDuration::parse("365d").is_ok());
        let e = HumanDuration::parse("366d").unwrap_err();
        assert!(e.to_string().contains("365-day maximum"), "{e}");
        assert!(HumanDuration::parse("99999999999999999999999h").is_err());
        let v: Result<HumanDuration, _> = serde_json::from_str("10000000000000000000");
        assert!(v.unwrap_err().to_string().contains("365-day maximum"));
        let v: Result<HumanDuration, _> = serde_json::from_str("1e300");
        assert!(v.is_err());
    }

    #[test]
    fn display_round_trips() {
        for t in ["1h30m", "5m", "250ms", "1m5s", "0s"] {
            let d = HumanDuration::parse(t).unwrap();
            assert_eq!(d.to_string(), t);
        }
    }
}
