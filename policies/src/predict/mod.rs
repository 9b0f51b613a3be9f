//! Arrival predictors: forecasts of per-interval request counts, behind one trait.
//!
//! A proactive scaler (MArk's, for one) provisions for the load it expects over the next few control
//! intervals, because a VM ordered now serves only after it boots. A [`Predictor`] is that expectation: it
//! is fitted on the trace's past, observes each interval's count as the interval closes, and forecasts the
//! counts of the next `horizon` intervals. The implementations, by name:
//!
//! | name | predictor |
//! | --- | --- |
//! | `last-value` | [`LastValue`]: the next interval repeats the last one |
//! | `moving-max` | [`MovingMax`]: the largest of the last `window` counts (MArk's released fallback) |
//! | `ewma` | [`Ewma`]: an exponentially weighted moving average |
//! | `holt-winters` | [`HoltWinters`]: level, trend and additive seasonality |
//! | `lstm` | `Lstm`: a small LSTM trained with burn on the CPU (cargo feature `lstm`, on by default) |
//!
//! A scenario file or the command line names one with a [`PredictorSpec`]; [`walk_forward`] scores one on
//! held-out intervals. Like the rest of this crate, predictors do no I/O and read no clock; the LSTM's only
//! randomness, its initial weights, comes from the seed given to [`PredictorSpec::build`].
//!
//! ```
//! use hyscale_policies::predict::{Predictor, PredictorSpec};
//!
//! let mut ewma = PredictorSpec::from_name("ewma")?.build(0)?;
//! ewma.fit(&[10.0, 12.0, 11.0])?;
//! ewma.observe(13.0);
//! assert_eq!(ewma.forecast(3).len(), 3);
//! # Ok::<(), hyscale_policies::predict::PredictError>(())
//! ```

mod backtest;
mod error;
mod ewma;
mod holt_winters;
mod last_value;
#[cfg(feature = "lstm")]
mod lstm;
mod moving_max;
mod spec;

pub use backtest::{Accuracy, walk_forward};
pub use error::PredictError;
pub use ewma::{Ewma, EwmaConfig};
pub use holt_winters::{HoltWinters, HoltWintersConfig};
pub use last_value::LastValue;
#[cfg(feature = "lstm")]
pub use lstm::{Lstm, LstmConfig};
pub use moving_max::{MovingMax, MovingMaxConfig};
pub use spec::{PREDICTOR_NAMES, PredictorSpec};

/// A forecaster of per-interval arrival counts (or rates: nothing here depends on the unit).
///
/// The life of a predictor: [`fit`](Predictor::fit) once on the past, then, as each interval closes,
/// [`forecast`](Predictor::forecast) the next ones and [`observe`](Predictor::observe) what came.
/// Values are finite and non-negative; forecasts are too.
pub trait Predictor: Send {
    /// The predictor's name, as [`PREDICTOR_NAMES`] lists it.
    fn name(&self) -> &str;

    /// Learns from `history`, oldest first, and ends as if it had observed every value of it.
    ///
    /// The default observes each value in turn; predictors that train (the LSTM) do more. A non-finite
    /// or negative value is an error.
    fn fit(&mut self, history: &[f64]) -> Result<(), PredictError> {
        check_history(self.name(), history)?;
        for &value in history {
            self.observe(value);
        }
        Ok(())
    }

    /// Records the count of the interval that just closed.
    fn observe(&mut self, value: f64);

    /// The expected counts of the next `horizon` intervals, nearest first; `horizon` values, each finite
    /// and non-negative. Before any observation, the forecast is zero.
    fn forecast(&self, horizon: usize) -> Vec<f64>;
}

/// Rejects a history with a non-finite or negative value, naming the predictor and the index.
pub(crate) fn check_history(predictor: &str, history: &[f64]) -> Result<(), PredictError> {
    match history.iter().position(|v| !v.is_finite() || *v < 0.0) {
        Some(index) => {
            Err(PredictError::InvalidHistory { predictor: predictor.to_string(), index, value: history[index] })
        }
        None => Ok(()),
    }
}
