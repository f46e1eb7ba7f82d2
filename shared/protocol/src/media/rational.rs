//! Exact rational numbers for time bases and frame rates, so timestamps are converted once, at
//! the edge, instead of accumulating float error across segments.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rational {
    pub num: i64,
    pub den: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a rational number: {0:?}")]
pub struct RationalError(String);

impl Rational {
    pub fn new(num: i64, den: i64) -> Self {
        Self { num, den }
    }

    pub fn is_valid(&self) -> bool {
        self.num > 0 && self.den > 0
    }

    /// `ticks` of this time base, in seconds.
    pub fn seconds(&self, ticks: i64) -> f64 {
        ticks as f64 * self.num as f64 / self.den as f64
    }

    /// `ticks` of this time base in whole microseconds, rounded to nearest, computed in i128 so
    /// that long durations in fine time bases cannot overflow.
    pub fn micros(&self, ticks: i64) -> i64 {
        let n = i128::from(ticks) * i128::from(self.num) * 1_000_000;
        let d = i128::from(self.den);
        let q = (2 * n + d.signum() * d) / (2 * d);
        q as i64
    }

    /// 1 / self in seconds (the frame duration of a frame rate).
    pub fn inverse_secs(&self) -> Option<f64> {
        self.is_valid().then(|| self.den as f64 / self.num as f64)
    }

    pub fn as_f64(&self) -> f64 {
        self.num as f64 / self.den as f64
    }
}

impl FromStr for Rational {
    type Err = RationalError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (n, d) = s.split_once('/').unwrap_or((s, "1"));
        match (n.trim().parse(), d.trim().parse()) {
            (Ok(num), Ok(den)) if den != 0 => Ok(Self { num, den }),
            _ => Err(RationalError(s.into())),
        }
    }
}

impl fmt::Display for Rational {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.num, self.den)
    }
}

/// Formats microseconds as seconds with six decimals (what ffconcat's `duration` parses exactly).
pub fn micros_to_secs_string(us: i64) -> String {
    let sign = if us < 0 { "-" } else { "" };
    let us = us.unsigned_abs();
    format!("{sign}{}.{:06}", us / 1_000_000, us % 1_000_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_ntsc_ticks_exactly() {
        let tb: Rational = "1/30000".parse().unwrap();
        assert_eq!(tb.micros(1001), 33367);
        assert_eq!(tb.micros(144 * 1001), 4_804_800);
        assert_eq!(micros_to_secs_string(4_804_800), "4.804800");
        assert_eq!(micros_to_secs_string(-1500), "-0.001500");
        assert!("1/0".parse::<Rational>().is_err());
        assert_eq!("25".parse::<Rational>().unwrap(), Rational::new(25, 1));
    }
}
