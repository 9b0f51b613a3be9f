//! Keep-alive policies for function instances: how long an idle function stays loaded, and whether it is
//! unloaded at once and loaded again shortly before its next invocation is expected.
//!
//! Source: Shahrad et al., "Serverless in the Wild: Characterizing and Optimizing the Serverless Workload at
//! a Large Cloud Provider" (USENIX ATC 2020, arXiv:2003.03423), Section 4; thresholds the paper leaves
//! unnumbered follow DSLab's reproduction (`osukhoroslov/dslab`, `dslab-faas/src/extra/hybrid_histogram.rs`).
//!
//! Models:
//! - [`FixedKeepAlive`]: the state of practice, a fixed keep-alive after each execution (AWS Lambda about
//!   10 minutes, Azure Functions 20 minutes); [`FIXED_MINUTES`] are the lengths the paper compares against.
//! - [`HybridHistogram`], the paper's hybrid histogram policy, per function. Every idle time (IT: the time
//!   from the end of a function's last execution to the start of its next invocation) goes into a histogram
//!   of 1-minute bins over a 4-hour range; longer ITs are counted out of bounds (OOB). When the function goes
//!   idle, in this order:
//!   1. More than `oob_threshold` of its ITs out of bounds: forecast the next IT (the paper uses ARIMA; see
//!      below) and keep the function loaded from `forecast x (1 - 0.15)` to `forecast x (1 + 0.15)`.
//!   2. Histogram not representative (fewer than `min_samples` ITs in range, or the coefficient of variation
//!      of the bin counts below `cv_threshold`): the paper's conservative fallback, no pre-warming and a
//!      keep-alive of the whole histogram range (4 h).
//!   3. Otherwise the head (5th percentile) and tail (99th percentile) of the histogram, in whole bins: the
//!      head rounded down (the lower edge of its bin), the tail rounded up (the upper edge of its bin). The
//!      pre-warming window is the head less the 10% margin; the function is then loaded until the tail plus
//!      the 10% margin, so the keep-alive window, counted from the pre-warm, is
//!      `tail x 1.1 - head x 0.9`. A head in the first bin gives no pre-warming: the function is simply kept
//!      loaded until `tail x 1.1` after it went idle.
//!
//! The paper sets the keep-alive window to the span from head to tail, widened by the 10% margin; that also
//! reads as `(tail - head) x 1.1` counted from the pre-warm. We keep the instance loaded over the whole window
//! `[head x 0.9, tail x 1.1]`, the more conservative reading (DSLab goes further still and keeps
//! `tail x 1.1` counted from the pre-warm).
//!
//! The ARIMA stand-in: an AR(1) model, fitted by least squares to the logarithms of the function's last
//! `forecast_history` ITs (in range or not, as the paper models the IT series), predicts the next one; the
//! slope is held within `[-1, 1]` and the forecast within the range of the ITs it was fitted to, so a short or
//! odd series cannot run away. With fewer than 3 ITs the forecast is their exponentially weighted mean in log
//! space (weight 0.5 on the newest).
//!
//! Leaves out: the paper's per-application histograms (here one per function id), ARIMA itself (see above),
//! any ageing or reset of the histograms, and the paper's minute granularity of ITs (the trace it used counts
//! invocations per minute; here ITs are exact and only the bins are a minute wide).

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

use crate::error::PolicyError;
use crate::time::Nanos;

/// The fixed keep-alive lengths, minutes, that the paper's evaluation sweeps for the fixed policy.
pub const FIXED_MINUTES: [u32; 8] = [5, 10, 20, 30, 45, 60, 90, 120];

/// One minute, the histogram's bin width (the paper's).
const MINUTE: u64 = 60_000_000_000;
/// Longest histogram range accepted, minutes (about 69 days; a bound on per-function memory, our choice).
const MAX_RANGE_MINUTES: u32 = 100_000;
/// Shortest IT the forecast takes, seconds, so that its logarithm is finite.
const MIN_FORECAST_S: f64 = 1e-3;
/// Weight of the newest IT in the forecast's exponentially weighted mean (fewer than 3 ITs); our choice.
const EWMA_ALPHA: f64 = 0.5;

/// What to do with an instance of a function that has just gone idle (its execution ended).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KeepAliveDecision {
    /// The pre-warming window. Zero: keep the instance loaded for `keep_alive`, then unload it. Positive:
    /// unload it now, load the function again `prewarm` after it went idle, and keep that instance loaded for
    /// `keep_alive` from then.
    pub prewarm: Nanos,
    /// The keep-alive window, counted from the idle start (`prewarm` zero) or from the pre-warm.
    pub keep_alive: Nanos,
}

/// A keep-alive policy: learns from a function's idle times and decides the windows of its instances as
/// they go idle (as DSLab's reproduction applies the paper's policy: per container, ITs per function).
pub trait KeepAlivePolicy: Send {
    /// An invocation of `function` arrives `idle` after the end of the function's previous execution (the
    /// paper's idle time; zero when executions overlap). Not called for a function's first invocation.
    fn observe_idle(&mut self, function: u32, idle: Nanos);

    /// The windows for an instance of `function` that has just gone idle.
    fn decide(&mut self, function: u32) -> KeepAliveDecision;

    /// The policy's name for reports, e.g. `fixed-10min` or `hybrid`.
    fn name(&self) -> String;
}

/// The fixed keep-alive policy: no pre-warming, the same keep-alive for every function.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FixedKeepAlive {
    /// How long an idle function stays loaded.
    pub keep_alive: Nanos,
}

impl KeepAlivePolicy for FixedKeepAlive {
    fn observe_idle(&mut self, _function: u32, _idle: Nanos) {}

    fn decide(&mut self, _function: u32) -> KeepAliveDecision {
        KeepAliveDecision { prewarm: Nanos::ZERO, keep_alive: self.keep_alive }
    }

    fn name(&self) -> String {
        let ns = self.keep_alive.0;
        if ns.is_multiple_of(MINUTE) {
            format!("fixed-{}min", ns / MINUTE)
        } else {
            format!("fixed-{}min", ns as f64 / MINUTE as f64)
        }
    }
}

/// Configuration of [`HybridHistogram`]; every default is the paper's unless its line says otherwise.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HybridConfig {
    /// Histogram range, minutes, in 1-minute bins; longer ITs are out of bounds (default 240: the paper's
    /// 4 hours). Also the keep-alive of the conservative fallback.
    pub range_minutes: u32,
    /// Percentile of the ITs that sets the pre-warming window (default 5: the paper's head).
    pub head_percentile: f64,
    /// Percentile of the ITs up to which the function stays loaded (default 99: the paper's tail).
    pub tail_percentile: f64,
    /// Margin taken off the head and added to the tail, as a fraction (default 0.1: the paper's 10%).
    pub margin: f64,
    /// Coefficient of variation of the bin counts at or above which the histogram is representative
    /// (default 2: the paper gives no number; DSLab's reproduction uses 2).
    pub cv_threshold: f64,
    /// Fewest ITs in range before the histogram is trusted (default 1: as in DSLab's reproduction, the
    /// coefficient of variation alone decides; a histogram of a few ITs in one bin is representative).
    pub min_samples: u32,
    /// Share of out-of-bounds ITs above which the forecast is used (default 0.5: the paper says "too many";
    /// DSLab's reproduction uses 0.5).
    pub oob_threshold: f64,
    /// Margin either side of the forecast IT, as a fraction (default 0.15: the paper's 15%).
    pub forecast_margin: f64,
    /// Most recent ITs the forecast is fitted to (default 32: our choice; the paper refits ARIMA on the
    /// IT series without stating a length).
    pub forecast_history: u32,
}

impl Default for HybridConfig {
    fn default() -> HybridConfig {
        HybridConfig {
            range_minutes: 240,
            head_percentile: 5.0,
            tail_percentile: 99.0,
            margin: 0.1,
            cv_threshold: 2.0,
            min_samples: 1,
            oob_threshold: 0.5,
            forecast_margin: 0.15,
            forecast_history: 32,
        }
    }
}

fn invalid(policy: &str, reason: String) -> PolicyError {
    PolicyError::InvalidConfig { policy: policy.into(), reason }
}

impl HybridConfig {
    /// Checks every field, naming the first one out of range.
    pub fn validate(&self) -> Result<(), PolicyError> {
        let bad = |reason: String| Err(invalid("hybrid", reason));
        if !(1..=MAX_RANGE_MINUTES).contains(&self.range_minutes) {
            return bad(format!("range_minutes must be in [1, {MAX_RANGE_MINUTES}], got {}", self.range_minutes));
        }
        for (name, v) in [("head_percentile", self.head_percentile), ("tail_percentile", self.tail_percentile)] {
            if !(v > 0.0 && v < 100.0) {
                return bad(format!("{name} must be in (0, 100), got {v}"));
            }
        }
        if self.head_percentile >= self.tail_percentile {
            return bad(format!(
                "head_percentile {} must be below tail_percentile {}",
                self.head_percentile, self.tail_percentile
            ));
        }
        for (name, v) in [("margin", self.margin), ("oob_threshold", self.oob_threshold)] {
            if !(0.0..1.0).contains(&v) {
                return bad(format!("{name} must be in [0, 1), got {v}"));
            }
        }
        if !(self.forecast_margin > 0.0 && self.forecast_margin < 1.0) {
            return bad(format!("forecast_margin must be in (0, 1), got {}", self.forecast_margin));
        }
        if !(self.cv_threshold.is_finite() && self.cv_threshold >= 0.0) {
            return bad(format!("cv_threshold must be a non-negative number, got {}", self.cv_threshold));
        }
        if self.min_samples == 0 {
            return bad("min_samples must be at least 1".into());
        }
        if self.forecast_history == 0 {
            return bad("forecast_history must be at least 1".into());
        }
        Ok(())
    }
}

/// What the hybrid policy knows of one function.
#[derive(Clone, Debug, Default)]
struct History {
    /// IT counts per 1-minute bin; empty until the first IT in range.
    bins: Vec<u32>,
    /// ITs in range.
    in_range: u64,
    /// ITs out of bounds.
    oob: u64,
    /// The last ITs, seconds, oldest first, at most `forecast_history`.
    recent: VecDeque<f64>,
}

/// The paper's hybrid histogram policy; see the module docs.
#[derive(Clone, Debug)]
pub struct HybridHistogram {
    config: HybridConfig,
    functions: BTreeMap<u32, History>,
}

impl HybridHistogram {
    /// A policy with no history, after checking `config`.
    pub fn new(config: &HybridConfig) -> Result<HybridHistogram, PolicyError> {
        config.validate()?;
        Ok(HybridHistogram { config: config.clone(), functions: BTreeMap::new() })
    }

    /// The conservative fallback: no pre-warming, loaded for the whole histogram range.
    fn fallback(&self) -> KeepAliveDecision {
        KeepAliveDecision { prewarm: Nanos::ZERO, keep_alive: Nanos(u64::from(self.config.range_minutes) * MINUTE) }
    }
}

impl KeepAlivePolicy for HybridHistogram {
    fn observe_idle(&mut self, function: u32, idle: Nanos) {
        let bins = self.config.range_minutes as usize;
        let cap = self.config.forecast_history as usize;
        let h = self.functions.entry(function).or_default();
        let bin = idle.0 / MINUTE;
        if bin < bins as u64 {
            if h.bins.is_empty() {
                h.bins = vec![0; bins];
            }
            if let Some(count) = h.bins.get_mut(bin as usize) {
                *count = count.saturating_add(1);
            }
            h.in_range += 1;
        } else {
            h.oob += 1;
        }
        h.recent.push_back(idle.as_secs_f64());
        while h.recent.len() > cap {
            h.recent.pop_front();
        }
    }

    fn decide(&mut self, function: u32) -> KeepAliveDecision {
        let Some(h) = self.functions.get(&function) else {
            return self.fallback();
        };
        let c = &self.config;
        let total = h.in_range + h.oob;
        if total > 0
            && h.oob as f64 > c.oob_threshold * total as f64
            && let Some(next) = forecast(&h.recent)
        {
            return KeepAliveDecision {
                prewarm: Nanos::from_secs_f64(next * (1.0 - c.forecast_margin)),
                keep_alive: Nanos::from_secs_f64(next * 2.0 * c.forecast_margin),
            };
        }
        let counted: u64 = h.bins.iter().map(|&n| u64::from(n)).sum();
        if counted == 0 || counted < u64::from(c.min_samples) || coefficient_of_variation(&h.bins) < c.cv_threshold {
            return self.fallback();
        }
        let head = percentile_bin(&h.bins, counted, c.head_percentile) as u64;
        let tail = percentile_bin(&h.bins, counted, c.tail_percentile) as u64;
        let prewarm = scale(Nanos(head * MINUTE), 1.0 - c.margin);
        let loaded_until = scale(Nanos((tail + 1) * MINUTE), 1.0 + c.margin);
        KeepAliveDecision { prewarm, keep_alive: loaded_until.saturating_sub(prewarm) }
    }

    fn name(&self) -> String {
        "hybrid".into()
    }
}

/// `d x factor`, rounded to the nanosecond (saturating).
fn scale(d: Nanos, factor: f64) -> Nanos {
    Nanos((d.0 as f64 * factor).round() as u64)
}

/// Population coefficient of variation (standard deviation over mean) of the bin counts; 0 when empty.
fn coefficient_of_variation(bins: &[u32]) -> f64 {
    if bins.is_empty() {
        return 0.0;
    }
    let n = bins.len() as f64;
    let mean = bins.iter().map(|&c| f64::from(c)).sum::<f64>() / n;
    if mean <= 0.0 {
        return 0.0;
    }
    let var = bins.iter().map(|&c| (f64::from(c) - mean).powi(2)).sum::<f64>() / n;
    var.sqrt() / mean
}

/// The first bin at which the cumulative count reaches `percentile`% of `total`.
fn percentile_bin(bins: &[u32], total: u64, percentile: f64) -> usize {
    let want = percentile * total as f64;
    let mut cumulative = 0u64;
    for (i, &c) in bins.iter().enumerate() {
        cumulative += u64::from(c);
        if cumulative as f64 * 100.0 >= want {
            return i;
        }
    }
    bins.len().saturating_sub(1)
}

/// The next IT, seconds, forecast from `history` (oldest first): AR(1) in log space, or an exponentially
/// weighted mean with fewer than 3 ITs; held within the range of `history`. `None` when it is empty.
fn forecast(history: &VecDeque<f64>) -> Option<f64> {
    let logs: Vec<f64> = history.iter().map(|&s| s.max(MIN_FORECAST_S).ln()).collect();
    let (&last, _) = logs.split_last()?;
    let lo = history.iter().copied().fold(f64::INFINITY, f64::min).max(MIN_FORECAST_S);
    let hi = history.iter().copied().fold(f64::NEG_INFINITY, f64::max).max(MIN_FORECAST_S);
    let log_forecast = if logs.len() < 3 {
        let (&first, rest) = logs.split_first()?;
        rest.iter().fold(first, |m, &y| m + EWMA_ALPHA * (y - m))
    } else {
        let (xs, ys) = (&logs[..logs.len() - 1], &logs[1..]);
        let n = xs.len() as f64;
        let mx = xs.iter().sum::<f64>() / n;
        let my = ys.iter().sum::<f64>() / n;
        let sxx = xs.iter().map(|x| (x - mx).powi(2)).sum::<f64>();
        let sxy = xs.iter().zip(ys).map(|(x, y)| (x - mx) * (y - my)).sum::<f64>();
        if sxx <= 1e-12 { my } else { my + (sxy / sxx).clamp(-1.0, 1.0) * (last - mx) }
    };
    Some(log_forecast.exp().clamp(lo, hi))
}

/// A keep-alive policy and its parameters, as a scenario names it:
///
/// ```toml
/// [keep_alive]
/// kind = "fixed"
/// minutes = 10
/// ```
///
/// or `kind = "hybrid"` with any [`HybridConfig`] fields (the rest take their defaults); unknown fields are
/// an error.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum KeepAliveSpec {
    /// [`FixedKeepAlive`] of `minutes`.
    Fixed {
        /// The keep-alive, minutes.
        minutes: f64,
    },
    /// [`HybridHistogram`].
    Hybrid(HybridConfig),
}

impl KeepAliveSpec {
    /// Builds the policy, checking its parameters.
    pub fn build(&self) -> Result<Box<dyn KeepAlivePolicy>, PolicyError> {
        match self {
            KeepAliveSpec::Fixed { minutes } => {
                let m = *minutes;
                if !(m.is_finite() && m > 0.0) {
                    return Err(invalid("fixed", format!("minutes must be a positive number, got {m}")));
                }
                Ok(Box::new(FixedKeepAlive { keep_alive: Nanos::from_secs_f64(m * 60.0) }))
            }
            KeepAliveSpec::Hybrid(config) => Ok(Box::new(HybridHistogram::new(config)?)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn min(m: u64) -> Nanos {
        Nanos::from_secs(m * 60)
    }

    fn hybrid() -> HybridHistogram {
        HybridHistogram::new(&HybridConfig::default()).unwrap()
    }

    fn decision(prewarm: Nanos, keep_alive: Nanos) -> KeepAliveDecision {
        KeepAliveDecision { prewarm, keep_alive }
    }

    #[test]
    fn fixed_keeps_every_function_for_its_window() {
        let mut p = KeepAliveSpec::Fixed { minutes: 10.0 }.build().unwrap();
        p.observe_idle(3, min(30));
        assert_eq!(p.decide(3), decision(Nanos::ZERO, min(10)));
        assert_eq!(p.decide(7), decision(Nanos::ZERO, min(10)));
        assert_eq!(p.name(), "fixed-10min");
        assert_eq!(FixedKeepAlive { keep_alive: Nanos::from_secs(150) }.name(), "fixed-2.5min");
        for m in FIXED_MINUTES {
            assert_eq!(KeepAliveSpec::Fixed { minutes: f64::from(m) }.build().unwrap().name(), format!("fixed-{m}min"));
        }
    }

    #[test]
    fn hybrid_without_enough_idle_times_keeps_the_whole_range() {
        let mut p = HybridHistogram::new(&HybridConfig { min_samples: 10, ..HybridConfig::default() }).unwrap();
        assert_eq!(p.decide(1), decision(Nanos::ZERO, min(240)));
        // 9 ITs in range, one short of min_samples.
        for _ in 0..9 {
            p.observe_idle(1, min(30));
        }
        assert_eq!(p.decide(1), decision(Nanos::ZERO, min(240)));
        assert_eq!(p.name(), "hybrid");
        // With the default (1), the same nine ITs in bin 30 are a representative histogram: pre-warm at
        // 30 min x 0.9 = 1620 s, loaded until 31 min x 1.1 = 2046 s, so a keep-alive of 426 s.
        let mut p = hybrid();
        assert_eq!(p.decide(1), decision(Nanos::ZERO, min(240)));
        for _ in 0..9 {
            p.observe_idle(1, min(30));
        }
        assert_eq!(p.decide(1), decision(Nanos::from_secs(1620), Nanos::from_secs(426)));
    }

    #[test]
    fn hybrid_uses_the_head_and_tail_of_a_concentrated_histogram() {
        let mut p = hybrid();
        // 50 ITs of 30 min +- 1 min: 10 in bin 29, 30 in bin 30, 10 in bin 31 (CV about 10.2).
        for i in 0..50u64 {
            let secs = match i % 5 {
                0 => 29 * 60 + 30,
                4 => 31 * 60 + 30,
                _ => 30 * 60 + 30,
            };
            p.observe_idle(4, Nanos::from_secs(secs));
        }
        // Head: 5% of 50 = 2.5, reached in bin 29 (10), lower edge 29 min -> pre-warm 29 x 0.9 = 26.1 min.
        // Tail: 99% of 50 = 49.5, reached in bin 31 (50), upper edge 32 min -> loaded until 32 x 1.1 =
        // 35.2 min = 2112 s, so the keep-alive from the pre-warm is 2112 - 1566 = 546 s.
        assert_eq!(p.decide(4), decision(Nanos::from_secs(1566), Nanos::from_secs(546)));
        // Another function is untouched.
        assert_eq!(p.decide(5), decision(Nanos::ZERO, min(240)));
    }

    #[test]
    fn a_head_in_the_first_bin_means_no_prewarming() {
        let mut p = hybrid();
        for _ in 0..20 {
            p.observe_idle(0, Nanos::from_secs(10));
        }
        // Head and tail both bin 0: no pre-warm, loaded until 1 min x 1.1 = 66 s.
        assert_eq!(p.decide(0), decision(Nanos::ZERO, Nanos::from_secs(66)));
    }

    #[test]
    fn a_spread_out_histogram_falls_back_to_the_whole_range() {
        let mut p = hybrid();
        // One IT in each of 100 bins (0, 2, ..., 198): CV = sqrt(240 / 100 - 1) = 1.18 < 2.
        for i in 0..100u64 {
            p.observe_idle(2, Nanos::from_secs(i * 120 + 30));
        }
        assert!(coefficient_of_variation(&p.functions[&2].bins) < 2.0);
        assert_eq!(p.decide(2), decision(Nanos::ZERO, min(240)));
    }

    #[test]
    fn many_out_of_bounds_idle_times_use_the_forecast() {
        let mut p = hybrid();
        // One IT of 6 h: out of bounds, forecast 6 h = 21600 s -> pre-warm 0.85 x 21600 = 18360 s, keep-alive
        // 0.3 x 21600 = 6480 s.
        p.observe_idle(9, min(360));
        let six_hours = decision(Nanos::from_secs(18_360), Nanos::from_secs(6_480));
        assert_eq!(p.decide(9), six_hours);
        // 20 of them: AR(1) on a constant series forecasts the constant.
        for _ in 0..19 {
            p.observe_idle(9, min(360));
        }
        assert_eq!(p.decide(9), six_hours);
        // Alternating 5 h and 7 h, ending on 7 h: the AR(1) fit is exact (slope -1), forecast 5 h = 18000 s.
        let mut p = hybrid();
        for i in 0..20u64 {
            p.observe_idle(9, min(if i % 2 == 0 { 300 } else { 420 }));
        }
        let d = p.decide(9);
        assert!(d.prewarm.0.abs_diff(Nanos::from_secs(15_300).0) < 1_000, "{d:?}");
        assert!(d.keep_alive.0.abs_diff(Nanos::from_secs(5_400).0) < 1_000, "{d:?}");
        // A minority of OOB ITs leaves the histogram in charge.
        let mut p = hybrid();
        for _ in 0..10 {
            p.observe_idle(9, Nanos::from_secs(30));
        }
        for _ in 0..10 {
            p.observe_idle(9, min(360));
        }
        assert_eq!(p.decide(9), decision(Nanos::ZERO, Nanos::from_secs(66)));
    }

    /// Parses a `[keep_alive]` table; `Err` holds part of the error message.
    fn check(toml_text: &str, expected: Result<KeepAliveSpec, &str>) {
        #[derive(Deserialize)]
        struct File {
            keep_alive: KeepAliveSpec,
        }
        let got = toml::from_str::<File>(toml_text).map(|f| f.keep_alive).map_err(|e| e.to_string());
        match (got, expected) {
            (Ok(got), Ok(want)) => assert_eq!(got, want),
            (Err(got), Err(want)) => assert!(got.contains(want), "{got}"),
            (got, want) => panic!("{toml_text}: got {got:?}, want {want:?}"),
        }
    }

    #[test]
    fn scenario_tables_name_a_policy_and_its_parameters() {
        check("[keep_alive]\nkind = \"fixed\"\nminutes = 10\n", Ok(KeepAliveSpec::Fixed { minutes: 10.0 }));
        check("[keep_alive]\nkind = \"fixed\"\nminutes = 2.5\n", Ok(KeepAliveSpec::Fixed { minutes: 2.5 }));
        check("[keep_alive]\nkind = \"hybrid\"\n", Ok(KeepAliveSpec::Hybrid(HybridConfig::default())));
        check(
            "[keep_alive]\nkind = \"hybrid\"\ntail_percentile = 95.0\nmin_samples = 5\n",
            Ok(KeepAliveSpec::Hybrid(HybridConfig {
                tail_percentile: 95.0,
                min_samples: 5,
                ..HybridConfig::default()
            })),
        );
        check("[keep_alive]\nkind = \"hybrid\"\nbins = 3\n", Err("unknown field `bins`"));
        check("[keep_alive]\nkind = \"fixed\"\nminutes = 1\nextra = 2\n", Err("unknown field `extra`"));
        check("[keep_alive]\nkind = \"arima\"\n", Err("unknown variant `arima`"));
    }

    #[test]
    fn invalid_parameters_are_refused_naming_the_field() {
        let refused = |spec: KeepAliveSpec, field: &str| match spec.build() {
            Err(e) => assert!(e.to_string().contains(field), "{e}"),
            Ok(p) => panic!("{} accepted, expected an error naming {field}", p.name()),
        };
        refused(KeepAliveSpec::Fixed { minutes: 0.0 }, "minutes");
        refused(KeepAliveSpec::Fixed { minutes: f64::NAN }, "minutes");
        fn with(f: impl FnOnce(&mut HybridConfig)) -> KeepAliveSpec {
            let mut c = HybridConfig::default();
            f(&mut c);
            KeepAliveSpec::Hybrid(c)
        }
        refused(with(|c| c.range_minutes = 0), "range_minutes");
        refused(with(|c| c.head_percentile = 0.0), "head_percentile");
        refused(with(|c| c.tail_percentile = 100.0), "tail_percentile");
        refused(with(|c| c.head_percentile = 99.5), "head_percentile");
        refused(with(|c| c.margin = 1.0), "margin");
        refused(with(|c| c.oob_threshold = -0.1), "oob_threshold");
        refused(with(|c| c.forecast_margin = 0.0), "forecast_margin");
        refused(with(|c| c.cv_threshold = f64::INFINITY), "cv_threshold");
        refused(with(|c| c.min_samples = 0), "min_samples");
        refused(with(|c| c.forecast_history = 0), "forecast_history");
        assert!(KeepAliveSpec::Hybrid(HybridConfig::default()).build().is_ok());
    }
}
