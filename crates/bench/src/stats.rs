//! Latency samples and their percentiles.

use std::time::Duration;

/// Latencies of one measured phase, in microseconds.
#[derive(Debug, Default, Clone)]
pub struct Samples {
    micros: Vec<u64>,
}

impl Samples {
    /// Adds one latency.
    pub fn push(&mut self, latency: Duration) {
        self.micros
            .push(u64::try_from(latency.as_micros()).unwrap_or(u64::MAX));
    }

    /// Adds every sample of `other`.
    pub fn extend(&mut self, other: Samples) {
        self.micros.extend(other.micros);
    }

    /// How many samples there are.
    pub fn len(&self) -> usize {
        self.micros.len()
    }

    /// The `p`-th percentile (0–100) in milliseconds, nearest rank; 0 without samples.
    pub fn percentile_ms(&mut self, p: f64) -> f64 {
        if self.micros.is_empty() {
            return 0.0;
        }
        self.micros.sort_unstable();
        let rank = ((p / 100.0) * self.micros.len() as f64).ceil() as usize;
        let index = rank.clamp(1, self.micros.len()) - 1;
        self.micros[index] as f64 / 1000.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let mut samples = Samples::default();
        for ms in 1..=100 {
            samples.push(Duration::from_millis(ms));
        }
        assert_eq!(samples.percentile_ms(50.0), 50.0);
        assert_eq!(samples.percentile_ms(99.0), 99.0);
        assert_eq!(samples.percentile_ms(100.0), 100.0);
        assert_eq!(Samples::default().percentile_ms(50.0), 0.0);
    }
}
