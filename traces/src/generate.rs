//! Seeded synthetic arrivals.

use rand::SeedableRng;
use rand_distr::{Distribution, Exp};
use rand_pcg::Pcg64Mcg;

use crate::{Arrival, Nanos, TraceError};

/// A homogeneous Poisson process: exponential gaps at `rate_per_s` until `duration_s`.
pub struct Poisson {
    rng: Pcg64Mcg,
    gap: Exp<f64>,
    end: Nanos,
    now_s: f64,
}

impl Poisson {
    /// A Poisson stream; `seed` fixes it completely.
    pub fn new(rate_per_s: f64, duration_s: f64, seed: u64) -> Result<Poisson, TraceError> {
        if !(rate_per_s.is_finite() && rate_per_s > 0.0) {
            return Err(TraceError::InvalidParameters(format!(
                "Poisson rate_per_s must be positive, got {rate_per_s}"
            )));
        }
        if !(duration_s.is_finite() && duration_s >= 0.0) {
            return Err(TraceError::InvalidParameters(format!(
                "Poisson duration_s must be a non-negative number, got {duration_s}"
            )));
        }
        let gap = Exp::new(rate_per_s).map_err(|e| TraceError::InvalidParameters(e.to_string()))?;
        Ok(Poisson { rng: Pcg64Mcg::seed_from_u64(seed), gap, end: Nanos::from_secs_f64(duration_s), now_s: 0.0 })
    }
}

impl Iterator for Poisson {
    type Item = Result<Arrival, TraceError>;

    fn next(&mut self) -> Option<Self::Item> {
        // Time accumulates in f64 seconds and is rounded once per arrival, so gaps never drift.
        self.now_s += self.gap.sample(&mut self.rng);
        let time = Nanos::from_secs_f64(self.now_s);
        (time <= self.end).then_some(Ok(Arrival { time, model: 0, input_size: 0, output_size: 0 }))
    }
}
