//! How many documents go in one bulk request: additive increase, multiplicative decrease (like
//! TCP congestion control). Pressure from the engine (a 429 on the request or on items, a
//! timeout) halves the size; each clean request grows it by `step` up to `max`. Pure.

use serde::{Deserialize, Serialize};

/// The adaptive bulk size and what it went through.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BulkSizer {
    pub size: usize,
    pub min: usize,
    pub max: usize,
    pub step: usize,
    /// Smallest size used so far.
    pub low_water: usize,
    pub shrinks: u64,
    pub grows: u64,
}

impl BulkSizer {
    pub fn new(start: usize, min: usize, max: usize) -> BulkSizer {
        let min = min.max(1);
        let max = max.max(min);
        let size = start.clamp(min, max);
        BulkSizer { size, min, max, step: (max / 16).max(1), low_water: size, shrinks: 0, grows: 0 }
    }

    /// The engine pushed back: halve.
    pub fn pressure(&mut self) {
        let next = (self.size / 2).max(self.min);
        if next < self.size {
            self.shrinks += 1;
        }
        self.size = next;
        self.low_water = self.low_water.min(self.size);
    }

    /// A request went through without pushback: grow a little.
    pub fn healthy(&mut self) {
        let next = (self.size + self.step).min(self.max);
        if next > self.size {
            self.grows += 1;
        }
        self.size = next;
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn halves_on_pressure_and_grows_back_by_steps() {
        let mut s = BulkSizer::new(256, 8, 512);
        s.pressure();
        s.pressure();
        assert_eq!((s.size, s.shrinks, s.low_water), (64, 2, 64));
        for _ in 0..100 {
            s.healthy();
        }
        assert_eq!(s.size, 512);
        for _ in 0..20 {
            s.pressure();
        }
        assert_eq!(s.size, 8);
    }

    proptest! {
        #[test]
        fn always_within_bounds(start in 0usize..2000, min in 0usize..50, max in 0usize..2000, events in proptest::collection::vec(any::<bool>(), 0..200)) {
            let mut s = BulkSizer::new(start, min, max);
            for up in events {
                if up { s.healthy() } else { s.pressure() }
                prop_assert!(s.size >= s.min && s.size <= s.max && s.min >= 1);
                prop_assert!(s.low_water <= s.size);
            }
        }
    }
}
