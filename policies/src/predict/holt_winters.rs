//! `holt-winters`: triple exponential smoothing with a level, a trend and additive seasonality.
//!
//! Models: Holt-Winters' additive method in the error-correction form of Hyndman and Athanasopoulos,
//! *Forecasting: Principles and Practice* (3rd ed., section 8.3), for a season of `season` intervals:
//!
//! ```text
//! level_t    = alpha (y_t - season_{t-m}) + (1 - alpha)(level_{t-1} + trend_{t-1})
//! trend_t    = beta (level_t - level_{t-1}) + (1 - beta) trend_{t-1}
//! season_t   = gamma (y_t - level_{t-1} - trend_{t-1}) + (1 - gamma) season_{t-m}
//! forecast_k = level_t + k trend_t + season_{t+k-m}
//! ```
//!
//! The seasonal state is initialised once two full seasons have been seen: the level from the first
//! season's mean, the trend from the change of mean between the two, each seasonal index from the
//! detrended counts at its position in both. Until then the predictor is Holt's linear method (the same
//! equations without the seasonal terms), and before a second count it is the last value.
//! Leaves out: multiplicative seasonality, damped trends, several seasonal periods, and fitting alpha,
//! beta and gamma to the data (they are configured). Forecasts below zero are clamped to zero.

use serde::Deserialize;

use super::{PredictError, Predictor};

/// Configuration of [`HoltWinters`].
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct HoltWintersConfig {
    /// Smoothing of the level, in [0, 1] (default 0.5).
    pub alpha: f64,
    /// Smoothing of the trend, in [0, 1] (default 0.1).
    pub beta: f64,
    /// Smoothing of the seasonal indices, in [0, 1] (default 0.3).
    pub gamma: f64,
    /// Intervals per season, at least 2 (default 24: a day of hourly counts).
    pub season: usize,
}

impl Default for HoltWintersConfig {
    fn default() -> Self {
        HoltWintersConfig { alpha: 0.5, beta: 0.1, gamma: 0.3, season: 24 }
    }
}

/// Additive Holt-Winters; see the module docs.
#[derive(Clone, Debug, PartialEq)]
pub struct HoltWinters {
    config: HoltWintersConfig,
    level: f64,
    trend: f64,
    /// Seasonal index by position in the season; empty until two seasons have been observed.
    seasonal: Vec<f64>,
    /// The counts observed before the seasonal state exists (at most two seasons), to initialise it.
    warmup: Vec<f64>,
    observed: usize,
}

impl HoltWinters {
    /// A predictor with the given smoothing weights and season length.
    pub fn new(config: &HoltWintersConfig) -> Result<HoltWinters, PredictError> {
        let invalid = |reason: String| PredictError::InvalidConfig { predictor: "holt-winters".into(), reason };
        for (name, value) in [("alpha", config.alpha), ("beta", config.beta), ("gamma", config.gamma)] {
            if !(0.0..=1.0).contains(&value) {
                return Err(invalid(format!("{name} must lie in [0, 1], not {value}")));
            }
        }
        if config.season < 2 {
            return Err(invalid(format!("season must be at least 2 intervals, not {}", config.season)));
        }
        Ok(HoltWinters {
            config: config.clone(),
            level: 0.0,
            trend: 0.0,
            seasonal: Vec::new(),
            warmup: Vec::with_capacity(2 * config.season),
            observed: 0,
        })
    }

    /// Whether two seasons have been seen and the seasonal terms are in use.
    pub fn is_seasonal(&self) -> bool {
        !self.seasonal.is_empty()
    }

    /// One step of the equations in the module docs; `seasonal` selects the full or the Holt form.
    fn update(&mut self, value: f64, seasonal: bool) {
        let HoltWintersConfig { alpha, beta, gamma, season } = self.config;
        let (level, trend) = (self.level, self.trend);
        let index = self.observed % season;
        let s = if seasonal { self.seasonal[index] } else { 0.0 };
        self.level = alpha * (value - s) + (1.0 - alpha) * (level + trend);
        self.trend = beta * (self.level - level) + (1.0 - beta) * trend;
        if seasonal {
            self.seasonal[index] = gamma * (value - level - trend) + (1.0 - gamma) * s;
        }
        self.observed += 1;
    }

    /// Initialises level, trend and seasonal indices from the two seasons in `warmup`, then replays them.
    fn start_seasons(&mut self) {
        let m = self.config.season;
        let history = std::mem::take(&mut self.warmup);
        debug_assert_eq!(history.len(), 2 * m);
        let mean = |s: &[f64]| s.iter().sum::<f64>() / s.len() as f64;
        let (first, second) = history.split_at(m);
        let trend = (mean(second) - mean(first)) / m as f64;
        // The first season's mean is the level at its middle, (m - 1) / 2; step back to just before it.
        let level = mean(first) - trend * (m as f64 + 1.0) / 2.0;
        self.seasonal = (0..m)
            .map(|i| {
                let detrended = |t: usize| history[t] - (level + trend * (t as f64 + 1.0));
                (detrended(i) + detrended(i + m)) / 2.0
            })
            .collect();
        self.level = level;
        self.trend = trend;
        self.observed = 0;
        for value in history {
            self.update(value, true);
        }
    }
}

impl Predictor for HoltWinters {
    fn name(&self) -> &str {
        "holt-winters"
    }

    fn observe(&mut self, value: f64) {
        debug_assert!(value.is_finite() && value >= 0.0, "count {value}");
        if self.is_seasonal() {
            self.update(value, true);
            return;
        }
        if self.observed == 0 {
            self.level = value;
            self.trend = 0.0;
            self.observed = 1;
        } else {
            self.update(value, false);
        }
        self.warmup.push(value);
        if self.warmup.len() == 2 * self.config.season {
            self.start_seasons();
        }
    }

    fn forecast(&self, horizon: usize) -> Vec<f64> {
        if self.observed == 0 {
            return vec![0.0; horizon];
        }
        (1..=horizon)
            .map(|k| {
                let s =
                    if self.is_seasonal() { self.seasonal[(self.observed + k - 1) % self.config.season] } else { 0.0 };
                (self.level + k as f64 * self.trend + s).max(0.0)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn predictor(season: usize) -> HoltWinters {
        HoltWinters::new(&HoltWintersConfig { season, ..HoltWintersConfig::default() }).unwrap()
    }

    /// A season of 12 intervals: a daily-looking shape between 5 and 40.
    fn season_shape(t: usize) -> f64 {
        [5.0, 6.0, 8.0, 14.0, 25.0, 38.0, 40.0, 33.0, 22.0, 15.0, 9.0, 6.0][t % 12]
    }

    #[test]
    fn a_pure_seasonal_series_forecasts_the_next_season_exactly() {
        let mut p = predictor(12);
        let history: Vec<f64> = (0..60).map(season_shape).collect();
        p.fit(&history).unwrap();
        assert!(p.is_seasonal());
        let expected: Vec<f64> = (60..72).map(season_shape).collect();
        for (got, want) in p.forecast(12).iter().zip(&expected) {
            assert!((got - want).abs() < 1e-9, "got {got}, want {want}");
        }
    }

    #[test]
    fn a_seasonal_series_with_a_trend_keeps_both() {
        let mut p = predictor(12);
        let series = |t: usize| season_shape(t) + 0.5 * t as f64;
        p.fit(&(0..96).map(series).collect::<Vec<_>>()).unwrap();
        for (k, got) in p.forecast(12).iter().enumerate() {
            let want = series(96 + k);
            assert!((got - want).abs() < 1e-6, "step {k}: got {got}, want {want}");
        }
    }

    #[test]
    fn fewer_than_two_seasons_fall_back_to_holt_linear() {
        let mut p = predictor(24);
        assert_eq!(p.forecast(1), vec![0.0]);
        p.observe(10.0);
        assert_eq!(p.forecast(2), vec![10.0, 10.0]);
        // A straight line: Holt's method follows it without the seasonal terms.
        p.fit(&(2..30).map(|t| 5.0 * t as f64).collect::<Vec<_>>()).unwrap();
        assert!(!p.is_seasonal());
        let f = p.forecast(2);
        assert!(f[1] > f[0] && f[0] > 140.0, "{f:?}");
        // The 48th count starts the seasons.
        p.fit(&[20.0; 47 - 29]).unwrap();
        assert!(!p.is_seasonal());
        p.observe(20.0);
        assert!(p.is_seasonal());
    }

    #[test]
    fn forecasts_are_never_negative() {
        let mut p = predictor(4);
        p.fit(&[100.0, 80.0, 60.0, 40.0, 20.0, 0.0]).unwrap();
        assert!(p.forecast(10).iter().all(|&v| v >= 0.0));
    }

    #[test]
    fn parameters_out_of_range_are_refused() {
        let bad = [
            HoltWintersConfig { alpha: 1.5, ..HoltWintersConfig::default() },
            HoltWintersConfig { gamma: -0.1, ..HoltWintersConfig::default() },
            HoltWintersConfig { season: 1, ..HoltWintersConfig::default() },
        ];
        for config in bad {
            assert!(HoltWinters::new(&config).is_err(), "{config:?}");
        }
    }
}
