//! `UnitSet`: which units of a job the merger has collected, one bit per video segment and a
//! flag for the tracks unit. It is what lets the job record stay small for any job length: the
//! per-unit facts (cut, result, digest, frames) live in the unit's own record in the segments
//! bucket, and the job record keeps only this set (12.5 KB at `MAX_VIDEO_UNITS`).

use crate::ids::Unit;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Video segments one job may have: unit names carry five digits (`v00000`..`v99999`).
pub const MAX_VIDEO_UNITS: u32 = 100_000;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnitSet {
    /// Bit `i % 8` of byte `i / 8` is video segment `i`.
    bits: Vec<u8>,
    audio: bool,
}

impl UnitSet {
    pub fn contains(&self, unit: Unit) -> bool {
        match unit {
            Unit::Video(i) => self
                .bits
                .get(i as usize / 8)
                .is_some_and(|b| b & (1 << (i % 8)) != 0),
            Unit::Audio => self.audio,
        }
    }

    /// Adds `unit`; false when it was already in.
    pub fn insert(&mut self, unit: Unit) -> bool {
        if self.contains(unit) {
            return false;
        }
        match unit {
            Unit::Video(i) => {
                let byte = i as usize / 8;
                if self.bits.len() <= byte {
                    self.bits.resize(byte + 1, 0);
                }
                self.bits[byte] |= 1 << (i % 8);
            }
            Unit::Audio => self.audio = true,
        }
        true
    }

    /// Removes `unit`; false when it was not in.
    pub fn remove(&mut self, unit: Unit) -> bool {
        if !self.contains(unit) {
            return false;
        }
        match unit {
            Unit::Video(i) => {
                self.bits[i as usize / 8] &= !(1 << (i % 8));
                while self.bits.last() == Some(&0) {
                    self.bits.pop();
                }
            }
            Unit::Audio => self.audio = false,
        }
        true
    }

    pub fn len(&self) -> usize {
        self.bits
            .iter()
            .map(|b| b.count_ones() as usize)
            .sum::<usize>()
            + usize::from(self.audio)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Video segments in index order, then the tracks unit.
    pub fn iter(&self) -> impl Iterator<Item = Unit> + '_ {
        self.bits
            .iter()
            .enumerate()
            .flat_map(|(byte, b)| {
                (0..8)
                    .filter(move |bit| b & (1 << bit) != 0)
                    .map(move |bit| Unit::Video((byte * 8 + bit) as u32))
            })
            .chain(self.audio.then_some(Unit::Audio))
    }
}

/// On the wire: `{"video": "<base64 bitmap>", "audio": true}`, both left out when empty.
#[derive(Serialize, Deserialize)]
struct Wire {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    video: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    audio: bool,
}

impl Serialize for UnitSet {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let used = self.bits.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
        Wire {
            video: STANDARD.encode(&self.bits[..used]),
            audio: self.audio,
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for UnitSet {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let w = Wire::deserialize(d)?;
        let bits = STANDARD
            .decode(w.video.as_bytes())
            .map_err(serde::de::Error::custom)?;
        if bits.len() > MAX_VIDEO_UNITS.div_ceil(8) as usize {
            return Err(serde::de::Error::custom("unit set larger than any job"));
        }
        Ok(UnitSet {
            bits,
            audio: w.audio,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inserts_removes_and_round_trips() {
        let mut s = UnitSet::default();
        assert!(s.insert(Unit::Video(9)));
        assert!(!s.insert(Unit::Video(9)));
        assert!(s.insert(Unit::Video(0)));
        assert!(s.insert(Unit::Audio));
        assert_eq!(
            s.iter().collect::<Vec<_>>(),
            [Unit::Video(0), Unit::Video(9), Unit::Audio]
        );
        assert_eq!(s.len(), 3);
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(serde_json::from_str::<UnitSet>(&json).unwrap(), s);
        assert!(s.remove(Unit::Video(9)));
        assert!(!s.remove(Unit::Video(9)));
        assert!(!s.contains(Unit::Video(9)));
        assert_eq!(s.len(), 2);
        // Trailing empty bytes are not written, so equal sets serialise equally.
        let mut t = UnitSet::default();
        t.insert(Unit::Video(0));
        t.insert(Unit::Audio);
        assert_eq!(
            serde_json::to_string(&s).unwrap(),
            serde_json::to_string(&t).unwrap()
        );
    }

    #[test]
    fn a_full_job_is_a_few_kilobytes() {
        let mut s = UnitSet::default();
        for i in 0..MAX_VIDEO_UNITS {
            s.insert(Unit::Video(i));
        }
        s.insert(Unit::Audio);
        assert_eq!(s.len(), MAX_VIDEO_UNITS as usize + 1);
        let json = serde_json::to_vec(&s).unwrap();
        assert!(json.len() < 17_000, "{} bytes", json.len());
    }
}
