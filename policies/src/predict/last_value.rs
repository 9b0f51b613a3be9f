//! `last-value`: the next interval repeats the last one.
//!
//! The naive forecast, the yardstick every other predictor has to beat. Leaves out: everything.

use super::Predictor;

/// Forecasts the last observed count for every interval ahead.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LastValue {
    last: Option<f64>,
}

impl LastValue {
    /// A predictor that has seen nothing yet.
    pub fn new() -> LastValue {
        LastValue::default()
    }
}

impl Predictor for LastValue {
    fn name(&self) -> &str {
        "last-value"
    }

    fn observe(&mut self, value: f64) {
        debug_assert!(value.is_finite() && value >= 0.0, "count {value}");
        self.last = Some(value);
    }

    fn forecast(&self, horizon: usize) -> Vec<f64> {
        vec![self.last.unwrap_or(0.0); horizon]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forecasts_the_last_observation_at_every_step() {
        let mut p = LastValue::new();
        assert_eq!(p.forecast(2), vec![0.0, 0.0]);
        p.fit(&[3.0, 9.0, 4.0]).unwrap();
        assert_eq!(p.forecast(3), vec![4.0, 4.0, 4.0]);
        p.observe(7.0);
        assert_eq!(p.forecast(1), vec![7.0]);
        assert!(p.forecast(0).is_empty());
    }

    #[test]
    fn a_negative_count_in_the_history_is_refused_with_its_index() {
        let err = LastValue::new().fit(&[1.0, -2.0]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "history for predictor 'last-value' has -2 at index 1; counts are finite and non-negative"
        );
    }
}
