//! Summary figures of an arrival stream, computed in one pass with memory independent of its length.

use serde::Serialize;

use crate::{Arrival, Nanos, TraceError};

/// Burstiness at one bin width.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct BinStats {
    /// Bin width, seconds.
    pub bin_s: f64,
    /// Bins from time zero to the bin of the last arrival.
    pub bins: u64,
    /// Mean arrivals per bin.
    pub mean: f64,
    /// Most arrivals in one bin.
    pub peak: u64,
    /// Peak over mean.
    pub peak_to_mean: f64,
    /// Coefficient of variation of the per-bin counts (standard deviation over mean).
    pub cv: f64,
    /// Share of bins with no arrival.
    pub idle_share: f64,
}

/// The figures `hyscale trace stats` prints.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TraceStats {
    /// Arrivals.
    pub requests: u64,
    /// Time of the first arrival, seconds.
    pub first_s: f64,
    /// Time of the last arrival, seconds.
    pub last_s: f64,
    /// Last minus first, seconds.
    pub span_s: f64,
    /// Requests over the span, per second.
    pub mean_rate_per_s: f64,
    /// Distinct model ids seen (counted up to the largest id).
    pub models: u32,
    /// At 1 s.
    pub per_second: BinStats,
    /// At 60 s.
    pub per_minute: BinStats,
}

/// Streaming accumulator of per-bin counts, zero bins included.
struct Binner {
    width: Nanos,
    current: u64,
    count: u64,
    closed: u64,
    sum: f64,
    sum_sq: f64,
    peak: u64,
    idle: u64,
}

impl Binner {
    fn new(width: Nanos) -> Binner {
        Binner { width, current: 0, count: 0, closed: 0, sum: 0.0, sum_sq: 0.0, peak: 0, idle: 0 }
    }

    fn close(&mut self) {
        self.closed += 1;
        self.sum += self.count as f64;
        self.sum_sq += (self.count as f64).powi(2);
        self.peak = self.peak.max(self.count);
        self.idle += u64::from(self.count == 0);
        self.count = 0;
    }

    fn add(&mut self, t: Nanos) {
        let bin = t.0 / self.width.0;
        if bin > self.current {
            self.close();
            // Bins skipped entirely were empty.
            let empty = bin - self.current - 1;
            self.closed += empty;
            self.idle += empty;
            self.current = bin;
        }
        self.count += 1;
    }

    fn finish(mut self, any: bool) -> BinStats {
        if any {
            self.close();
        }
        let n = self.closed.max(1) as f64;
        let mean = self.sum / n;
        let var = (self.sum_sq / n - mean * mean).max(0.0);
        BinStats {
            bin_s: self.width.as_secs_f64(),
            bins: self.closed,
            mean,
            peak: self.peak,
            peak_to_mean: if mean > 0.0 { self.peak as f64 / mean } else { 0.0 },
            cv: if mean > 0.0 { var.sqrt() / mean } else { 0.0 },
            idle_share: self.idle as f64 / n,
        }
    }
}

impl TraceStats {
    /// Reads `arrivals` to the end; the first error stops it. Arrivals out of time order are an error.
    pub fn compute(arrivals: impl Iterator<Item = Result<Arrival, TraceError>>) -> Result<TraceStats, TraceError> {
        let mut second = Binner::new(Nanos::from_secs(1));
        let mut minute = Binner::new(Nanos::from_secs(60));
        let (mut n, mut first, mut last, mut models) = (0u64, Nanos::ZERO, Nanos::ZERO, 0u32);
        for a in arrivals {
            let a = a?;
            if n > 0 && a.time < last {
                return Err(TraceError::InvalidParameters(format!(
                    "arrival {} at {} comes before the previous one at {last}",
                    n + 1,
                    a.time
                )));
            }
            if n == 0 {
                first = a.time;
            }
            last = a.time;
            models = models.max(a.model + 1);
            second.add(a.time);
            minute.add(a.time);
            n += 1;
        }
        let span_s = (last - first).as_secs_f64();
        Ok(TraceStats {
            requests: n,
            first_s: first.as_secs_f64(),
            last_s: last.as_secs_f64(),
            span_s,
            mean_rate_per_s: if span_s > 0.0 { n as f64 / span_s } else { 0.0 },
            models,
            per_second: second.finish(n > 0),
            per_minute: minute.finish(n > 0),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_by_hand() {
        // Seconds 0, 0, 0, 2 (second 1 is empty): counts 3, 0, 1.
        let times = [0, 100, 900, 2500];
        let stats = TraceStats::compute(
            times
                .iter()
                .map(|&ms| Ok(Arrival { time: Nanos::from_millis(ms), model: 1, input_size: 0, output_size: 0 })),
        )
        .unwrap();
        assert_eq!(stats.requests, 4);
        assert_eq!(stats.span_s, 2.5);
        assert_eq!(stats.models, 2);
        let s = stats.per_second;
        assert_eq!((s.bins, s.peak), (3, 3));
        assert!((s.mean - 4.0 / 3.0).abs() < 1e-12);
        assert!((s.peak_to_mean - 2.25).abs() < 1e-12);
        // Population variance of 3, 0, 1: mean 4/3, E[x^2] = 10/3, var = 10/3 - 16/9 = 14/9.
        assert!((s.cv - (14.0f64 / 9.0).sqrt() / (4.0 / 3.0)).abs() < 1e-12);
        assert!((s.idle_share - 1.0 / 3.0).abs() < 1e-12);
        assert_eq!((stats.per_minute.bins, stats.per_minute.idle_share), (1, 0.0));
    }
}
