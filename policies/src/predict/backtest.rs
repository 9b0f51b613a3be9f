//! Scoring a predictor on held-out intervals, one step at a time, as a scaler would use it.

use super::Predictor;

/// How far a predictor's forecasts were from what came, over a [`walk_forward`] test.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Accuracy {
    /// Forecasts scored.
    pub forecasts: usize,
    /// Mean absolute percentage error, percent, over the forecasts whose actual count was not zero;
    /// `None` when every actual count was zero.
    pub mape_pct: Option<f64>,
    /// Forecasts left out of the MAPE because the actual count was zero.
    pub zero_actuals_skipped: usize,
    /// Root mean squared error, in counts, over all forecasts (0 when there were none).
    pub rmse: f64,
    /// Mean absolute error, in counts, over all forecasts (0 when there were none).
    pub mae: f64,
}

/// Walks `test` one interval at a time: forecast `horizon` intervals ahead, score the last of them against
/// the actual count, then observe the interval's count. The predictor should already be fitted on the
/// intervals before `test`; a horizon of 0 is taken as 1.
///
/// ```
/// use hyscale_policies::predict::{LastValue, Predictor, walk_forward};
///
/// let mut p = LastValue::new();
/// p.fit(&[4.0])?;
/// // Forecasts 4 for 5 (20% off), then 5 for 0 (left out of the MAPE), then 0 for 4 (100% off).
/// let a = walk_forward(&mut p, &[5.0, 0.0, 4.0], 1);
/// assert_eq!((a.forecasts, a.zero_actuals_skipped), (3, 1));
/// assert_eq!(a.mape_pct, Some(60.0));
/// assert_eq!(a.rmse, ((1.0 + 25.0 + 16.0) / 3.0_f64).sqrt());
/// # Ok::<(), hyscale_policies::predict::PredictError>(())
/// ```
pub fn walk_forward(predictor: &mut dyn Predictor, test: &[f64], horizon: usize) -> Accuracy {
    let horizon = horizon.max(1);
    let (mut squared, mut absolute, mut percent) = (0.0, 0.0, 0.0);
    let mut accuracy = Accuracy::default();
    for (t, &value) in test.iter().enumerate() {
        if let Some(&actual) = test.get(t + horizon - 1) {
            let forecast = predictor.forecast(horizon)[horizon - 1];
            let error = forecast - actual;
            squared += error * error;
            absolute += error.abs();
            if actual == 0.0 {
                accuracy.zero_actuals_skipped += 1;
            } else {
                percent += (error / actual).abs();
            }
            accuracy.forecasts += 1;
        }
        predictor.observe(value);
    }
    let n = accuracy.forecasts as f64;
    if accuracy.forecasts > 0 {
        accuracy.rmse = (squared / n).sqrt();
        accuracy.mae = absolute / n;
    }
    let scored = accuracy.forecasts - accuracy.zero_actuals_skipped;
    accuracy.mape_pct = (scored > 0).then(|| 100.0 * percent / scored as f64);
    accuracy
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::predict::LastValue;

    #[test]
    fn a_longer_horizon_scores_the_forecast_made_horizon_intervals_earlier() {
        let mut p = LastValue::new();
        p.fit(&[1.0]).unwrap();
        // Horizon 2: at t = 0 the forecast (1) is for test[1] = 3; at t = 1 (seen 2), for test[2] = 6.
        let a = walk_forward(&mut p, &[2.0, 3.0, 6.0], 2);
        assert_eq!(a.forecasts, 2);
        assert_eq!(a.mae, (2.0 + 4.0) / 2.0);
        assert_eq!(a.mape_pct, Some(100.0 * (2.0 / 3.0 + 4.0 / 6.0) / 2.0));
    }

    #[test]
    fn all_zero_actuals_have_no_mape() {
        let mut p = LastValue::new();
        let a = walk_forward(&mut p, &[0.0, 0.0], 1);
        assert_eq!((a.mape_pct, a.zero_actuals_skipped, a.rmse), (None, 2, 0.0));
        assert_eq!(walk_forward(&mut p, &[], 1), Accuracy::default());
    }
}
