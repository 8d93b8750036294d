//! Generation numbers: 1..=i64::MAX, because they are stored in `INT8`.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A generation number: at least 1 and at most `i64::MAX`.
///
/// `next()` is checked: running out of generations is an error, never a
/// wrap-around to a value that compares lower.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize,
)]
#[serde(transparent)]
pub struct Generation(u64);

/// Why a number is not a generation.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum GenerationError {
    /// Generations start at 1.
    #[error("generation 0 is not allowed (generations start at 1)")]
    Zero,
    /// Generations are stored in `INT8`.
    #[error("generation {0} is above the largest allowed, {max}", max = i64::MAX)]
    TooLarge(u64),
}

impl Generation {
    /// The first generation, 1.
    pub const FIRST: Generation = Generation(1);
    /// The largest generation, `i64::MAX`.
    pub const MAX: Generation = Generation(i64::MAX as u64);

    /// Checks that `value` is a generation.
    pub const fn new(value: u64) -> Result<Generation, GenerationError> {
        if value == 0 {
            Err(GenerationError::Zero)
        } else if value > i64::MAX as u64 {
            Err(GenerationError::TooLarge(value))
        } else {
            Ok(Generation(value))
        }
    }

    /// The generation after this one, or an error at `i64::MAX`.
    pub const fn next(self) -> Result<Generation, GenerationError> {
        Generation::new(self.0 + 1)
    }

    /// The number, as it appears in JSON.
    pub const fn get(self) -> u64 {
        self.0
    }

    /// The number as stored in an `INT8` column (always fits).
    pub const fn as_i64(self) -> i64 {
        self.0 as i64
    }
}

impl TryFrom<u64> for Generation {
    type Error = GenerationError;
    fn try_from(value: u64) -> Result<Self, Self::Error> {
        Generation::new(value)
    }
}

impl TryFrom<i64> for Generation {
    type Error = GenerationError;
    fn try_from(value: i64) -> Result<Self, Self::Error> {
        // Negative values are as meaningless as zero.
        Generation::new(u64::try_from(value).unwrap_or(0))
    }
}

impl<'de> Deserialize<'de> for Generation {
    fn deserialize<D: serde::Deserializer<'de>>(
        d: D,
    ) -> Result<Self, D::Error> {
        let value = u64::deserialize(d)?;
        Generation::new(value).map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for Generation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_and_too_large_are_refused() {
        assert_eq!(Generation::new(0), Err(GenerationError::Zero));
        let big = i64::MAX as u64 + 1;
        assert_eq!(Generation::new(big), Err(GenerationError::TooLarge(big)));
        assert_eq!(Generation::new(i64::MAX as u64), Ok(Generation::MAX));
    }

    #[test]
    fn next_is_checked() {
        assert_eq!(Generation::FIRST.next().unwrap().get(), 2);
        assert!(Generation::MAX.next().is_err());
    }

    #[test]
    fn negative_i64_is_refused() {
        assert_eq!(Generation::try_from(-1i64), Err(GenerationError::Zero));
        assert_eq!(Generation::try_from(7i64).unwrap().get(), 7);
    }
}
