//! `ewma`: an exponentially weighted moving average of the counts.
//!
//! Simple exponential smoothing: `level = alpha * count + (1 - alpha) * level`, starting from the first
//! count. Leaves out: trend and seasonality; the forecast is flat at the level.

use serde::Deserialize;

use super::{PredictError, Predictor};

/// Configuration of [`Ewma`].
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct EwmaConfig {
    /// Weight of the newest count, in (0, 1] (default 0.5); 1 is [`LastValue`](super::LastValue).
    pub alpha: f64,
}

impl Default for EwmaConfig {
    fn default() -> Self {
        EwmaConfig { alpha: 0.5 }
    }
}

/// Exponential smoothing; see the module docs.
#[derive(Clone, Debug, PartialEq)]
pub struct Ewma {
    alpha: f64,
    level: Option<f64>,
}

impl Ewma {
    /// A predictor with smoothing weight `config.alpha`, which must lie in (0, 1].
    pub fn new(config: &EwmaConfig) -> Result<Ewma, PredictError> {
        if !(config.alpha > 0.0 && config.alpha <= 1.0) {
            return Err(PredictError::InvalidConfig {
                predictor: "ewma".into(),
                reason: format!("alpha must lie in (0, 1], not {}", config.alpha),
            });
        }
        Ok(Ewma { alpha: config.alpha, level: None })
    }
}

impl Predictor for Ewma {
    fn name(&self) -> &str {
        "ewma"
    }

    fn observe(&mut self, value: f64) {
        debug_assert!(value.is_finite() && value >= 0.0, "count {value}");
        self.level = Some(match self.level {
            None => value,
            Some(level) => self.alpha * value + (1.0 - self.alpha) * level,
        });
    }

    fn forecast(&self, horizon: usize) -> Vec<f64> {
        vec![self.level.unwrap_or(0.0); horizon]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_hand_computed_level() {
        // alpha 0.25 over 8, 12, 4: 8, then 0.25 * 12 + 0.75 * 8 = 9, then 0.25 * 4 + 0.75 * 9 = 7.75.
        let mut p = Ewma::new(&EwmaConfig { alpha: 0.25 }).unwrap();
        p.fit(&[8.0, 12.0]).unwrap();
        assert_eq!(p.forecast(1), vec![9.0]);
        p.observe(4.0);
        assert_eq!(p.forecast(2), vec![7.75, 7.75]);
    }

    #[test]
    fn alpha_outside_the_unit_interval_is_refused() {
        for alpha in [0.0, -0.1, 1.5, f64::NAN] {
            assert!(Ewma::new(&EwmaConfig { alpha }).is_err(), "alpha {alpha}");
        }
        assert!(Ewma::new(&EwmaConfig { alpha: 1.0 }).is_ok());
    }
}
