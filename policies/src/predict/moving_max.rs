//! `moving-max`: the largest count of the last `window` intervals.
//!
//! Models: the fallback predictor of MArk's released code (Zhang et al., "MArk: Exploiting Cloud Services
//! for Cost-Effective, SLO-Aware Machine Learning Inference Serving", USENIX ATC 2019), which provisions for
//! the recent peak rather than the recent mean, trading cost for fewer SLO misses on a rising load.
//! Leaves out: trend and seasonality; the forecast is flat.

use std::collections::VecDeque;

use serde::Deserialize;

use super::{PredictError, Predictor};

/// Configuration of [`MovingMax`].
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct MovingMaxConfig {
    /// How many of the latest intervals the maximum is over (default 5).
    pub window: usize,
}

impl Default for MovingMaxConfig {
    fn default() -> Self {
        MovingMaxConfig { window: 5 }
    }
}

/// Forecasts the maximum of the last `window` observed counts; see the module docs.
#[derive(Clone, Debug, PartialEq)]
pub struct MovingMax {
    window: usize,
    recent: VecDeque<f64>,
}

impl MovingMax {
    /// A predictor over `config.window` intervals; the window must be at least 1.
    pub fn new(config: &MovingMaxConfig) -> Result<MovingMax, PredictError> {
        if config.window == 0 {
            return Err(PredictError::InvalidConfig {
                predictor: "moving-max".into(),
                reason: "window must be at least 1 interval".into(),
            });
        }
        Ok(MovingMax { window: config.window, recent: VecDeque::with_capacity(config.window) })
    }
}

impl Predictor for MovingMax {
    fn name(&self) -> &str {
        "moving-max"
    }

    fn observe(&mut self, value: f64) {
        debug_assert!(value.is_finite() && value >= 0.0, "count {value}");
        if self.recent.len() == self.window {
            self.recent.pop_front();
        }
        self.recent.push_back(value);
    }

    fn forecast(&self, horizon: usize) -> Vec<f64> {
        let max = self.recent.iter().copied().fold(0.0, f64::max);
        vec![max; horizon]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Observes `values` with a window of `window` and checks the forecast after each one.
    fn check(window: usize, values: &[f64], expected: &[f64]) {
        let mut p = MovingMax::new(&MovingMaxConfig { window }).unwrap();
        let got: Vec<f64> = values
            .iter()
            .map(|&v| {
                p.observe(v);
                p.forecast(1)[0]
            })
            .collect();
        assert_eq!(got, expected, "window {window}, values {values:?}");
    }

    #[test]
    fn the_maximum_leaves_the_window_after_window_intervals() {
        check(3, &[1.0, 5.0, 2.0, 3.0, 1.0, 1.0, 4.0], &[1.0, 5.0, 5.0, 5.0, 3.0, 3.0, 4.0]);
        check(1, &[1.0, 5.0, 2.0], &[1.0, 5.0, 2.0]);
    }

    #[test]
    fn a_zero_window_is_refused() {
        assert!(matches!(MovingMax::new(&MovingMaxConfig { window: 0 }), Err(PredictError::InvalidConfig { .. })));
    }
}
