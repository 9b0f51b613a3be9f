//! Latency profiles: how long a batch takes on a piece of hardware.
//!
//! A profile is a table of measured points `(batch size, latency)` for one model on one kind of hardware
//! (a VM type, or a function at its reference memory size). Between measured batch sizes the latency is
//! interpolated linearly; below the smallest measured size the smallest point's latency is used (a smaller
//! batch is never assumed faster than measured); above the largest it is extrapolated along the last segment
//! (or proportionally to the batch size when only one point was measured).
//!
//! The file format (TOML, read by the simulator, written by `hyscale profile`) is documented in
//! `profiles/README.md`.

use serde::{Deserialize, Serialize};

use crate::error::PolicyError;
use crate::time::Nanos;

/// Measured batch latencies for one model on one kind of hardware; validated on construction.
#[derive(Clone, Debug, PartialEq)]
pub struct LatencyTable {
    batch: Vec<u32>,
    latency: Vec<Nanos>,
    /// Nanoseconds added per unit of a request's input size and output size (0: size does not matter).
    per_input_ns: f64,
    per_output_ns: f64,
}

impl LatencyTable {
    /// Builds a table from measured points. `what` names the table in errors (e.g. `profile c5.large`).
    ///
    /// The batch sizes must be positive and strictly increasing, the latencies positive and non-decreasing,
    /// and both lists of the same, non-zero length.
    pub fn new(what: &str, batch: Vec<u32>, latency: Vec<Nanos>) -> Result<LatencyTable, PolicyError> {
        let bad = |reason: String| PolicyError::InvalidProfile { what: what.to_string(), reason };
        if batch.is_empty() {
            return Err(bad("no measured points".into()));
        }
        if batch.len() != latency.len() {
            return Err(bad(format!("{} batch sizes but {} latencies", batch.len(), latency.len())));
        }
        if batch[0] == 0 {
            return Err(bad("batch sizes must be at least 1".into()));
        }
        for i in 1..batch.len() {
            if batch[i] <= batch[i - 1] {
                return Err(bad(format!("batch sizes must increase strictly: {} after {}", batch[i], batch[i - 1])));
            }
            if latency[i] < latency[i - 1] {
                return Err(bad(format!(
                    "latency must not fall as the batch grows: batch {} takes {} after {} at batch {}",
                    batch[i],
                    latency[i],
                    latency[i - 1],
                    batch[i - 1]
                )));
            }
        }
        if latency.iter().any(|l| l.0 == 0) {
            return Err(bad("latencies must be positive".into()));
        }
        Ok(LatencyTable { batch, latency, per_input_ns: 0.0, per_output_ns: 0.0 })
    }

    /// The same table, with `input_ms` and `output_ms` added to a batch's latency per unit of each
    /// request's input and output size (tokens for the LLM traces, bytes for payloads).
    pub fn with_size_cost(self, what: &str, input_ms: f64, output_ms: f64) -> Result<LatencyTable, PolicyError> {
        for (name, v) in [("input_ms", input_ms), ("output_ms", output_ms)] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(PolicyError::InvalidProfile {
                    what: what.to_string(),
                    reason: format!("{name} must be a non-negative number, got {v}"),
                });
            }
        }
        Ok(LatencyTable { per_input_ns: input_ms * 1e6, per_output_ns: output_ms * 1e6, ..self })
    }

    /// Latency of a batch of `batch` requests whose input and output sizes add up to `input` and `output`.
    #[inline]
    pub fn latency_sized(&self, batch: u32, input: u64, output: u64) -> Nanos {
        if input == 0 && output == 0 {
            // Nothing to add (and no float rounding, a library call, on every batch).
            return self.latency(batch);
        }
        let extra = (input as f64 * self.per_input_ns + output as f64 * self.per_output_ns).round();
        self.latency(batch).saturating_add(Nanos(extra.min(u64::MAX as f64) as u64))
    }

    /// Whether a request's size changes its latency.
    #[inline]
    pub fn sized(&self) -> bool {
        self.per_input_ns > 0.0 || self.per_output_ns > 0.0
    }

    /// Builds a table from milliseconds, as written in profile files.
    pub fn from_millis(what: &str, batch: Vec<u32>, latency_ms: &[f64]) -> Result<LatencyTable, PolicyError> {
        if let Some(bad) = latency_ms.iter().find(|l| !l.is_finite() || **l <= 0.0) {
            return Err(PolicyError::InvalidProfile {
                what: what.to_string(),
                reason: format!("latency {bad} ms is not a positive number"),
            });
        }
        let latency = latency_ms.iter().map(|&ms| Nanos::from_millis_f64(ms)).collect();
        LatencyTable::new(what, batch, latency)
    }

    /// The measured batch sizes.
    pub fn batch_sizes(&self) -> &[u32] {
        &self.batch
    }

    /// The measured latencies, one per batch size.
    pub fn latencies(&self) -> &[Nanos] {
        &self.latency
    }

    /// The largest measured batch size.
    pub fn max_measured_batch(&self) -> u32 {
        *self.batch.last().unwrap_or(&1)
    }

    /// Service time of one batch of `batch` requests (`batch` of 0 is treated as 1).
    #[inline]
    pub fn latency(&self, batch: u32) -> Nanos {
        let b = batch.max(1);
        let n = self.batch.len();
        if b <= self.batch[0] {
            return self.latency[0];
        }
        if n == 1 {
            // One point: assume time proportional to the batch size (no batching gain).
            let per = self.latency[0].0 as f64 / self.batch[0] as f64;
            return Nanos((per * b as f64).round() as u64);
        }
        // Segment [i-1, i] that holds b, or the last one for extrapolation.
        let i = match self.batch.binary_search(&b) {
            Ok(i) => return self.latency[i],
            Err(i) => i.min(n - 1),
        };
        let (b0, b1) = (self.batch[i - 1] as f64, self.batch[i] as f64);
        let (l0, l1) = (self.latency[i - 1].0 as f64, self.latency[i].0 as f64);
        let l = l0 + (l1 - l0) * (b as f64 - b0) / (b1 - b0);
        Nanos(l.round().max(1.0) as u64)
    }

    /// Requests per second one executor sustains when it always runs batches of `batch`.
    pub fn throughput_per_s(&self, batch: u32) -> f64 {
        batch.max(1) as f64 / self.latency(batch).as_secs_f64()
    }

    /// The largest batch size whose worst-case latency, `max_wait` of queueing for the oldest request plus
    /// the batch's service time, fits within `budget`; at least 1. Used to size batches to the SLO (MArk).
    pub fn largest_batch_within(&self, budget: Nanos, max_wait: Nanos, cap: u32) -> u32 {
        let mut best = 1;
        for b in 1..=cap.max(1) {
            if max_wait.saturating_add(self.latency(b)) <= budget {
                best = b;
            } else {
                break;
            }
        }
        best
    }
}

/// The on-disk form of one hardware entry in a profile file (see `profiles/README.md`).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HardwareProfile {
    /// A VM type name from the catalog, or `function` for the function platform at its reference memory.
    pub hardware: String,
    /// Measured batch sizes, strictly increasing.
    pub batch: Vec<u32>,
    /// Mean latency of a batch of each size, in milliseconds.
    pub latency_ms: Vec<f64>,
    /// Coefficient of variation of the service time (0 = deterministic); the simulator draws a log-normal
    /// multiplier with mean 1 and this CV.
    #[serde(default)]
    pub cv: f64,
    /// Milliseconds added to a batch per unit of each request's input size (tokens, bytes); default 0.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub input_ms: f64,
    /// Milliseconds added to a batch per unit of each request's output size (generated tokens); default 0.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub output_ms: f64,
    /// Milliseconds every request served on this hardware spends outside the model, on the way in and out
    /// (protocol decoding and encoding, routing, the invocation path of a function): added to the request's
    /// latency, not to the instance's busy time; default 0. `hyscale fidelity` measures it on the live
    /// half (lone requests' served latency minus the engine's own).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub overhead_ms: f64,
    /// The serving path's 99th percentile, ms: with it, each request's overhead is drawn from the log-normal
    /// with median `overhead_ms` and this 99th percentile (default 0: the overhead is `overhead_ms` for every
    /// request).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub overhead_p99_ms: f64,
}

fn is_zero(v: &f64) -> bool {
    *v == 0.0
}

/// The model a profile file describes.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ModelProfile {
    /// The model's name.
    pub name: String,
    /// Size of one loaded copy of the model (weights plus runtime), in MB; drives function cold starts
    /// (load time) and the memory held by model copies.
    pub size_mb: f64,
    /// Extra memory each concurrent request needs beyond the shared model copy, in MB.
    #[serde(default)]
    pub per_request_mb: f64,
    /// How many vCPUs one request can use at most on a function; past this, more memory does not make a
    /// request faster. 1.0 for a single-threaded runtime.
    #[serde(default = "one")]
    pub max_vcpus_per_request: f64,
    /// Seconds to deserialise the model and run its first inference with one vCPU, after its bytes are
    /// fetched: the model-load part of every cold start (on a function it scales with the vCPU share its
    /// memory buys; on a VM it runs at one vCPU). `hyscale profile` measures it (session creation + first
    /// inference, in fresh processes). Default 0: not measured.
    #[serde(default)]
    pub load_s: f64,
}

fn one() -> f64 {
    1.0
}

/// A whole profile file: one model, one table per hardware.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ProfileFile {
    /// The model.
    pub model: ModelProfile,
    /// One entry per hardware.
    pub hardware: Vec<HardwareProfile>,
}

impl ProfileFile {
    /// The entry for `hardware`, if measured.
    pub fn entry(&self, hardware: &str) -> Option<&HardwareProfile> {
        self.hardware.iter().find(|h| h.hardware == hardware)
    }
}

impl HardwareProfile {
    /// The validated table of this entry.
    pub fn table(&self) -> Result<LatencyTable, PolicyError> {
        if !(self.cv.is_finite() && self.cv >= 0.0) {
            return Err(PolicyError::InvalidProfile {
                what: format!("hardware '{}'", self.hardware),
                reason: format!("cv must be a non-negative number, got {}", self.cv),
            });
        }
        let spread = self.overhead_p99_ms == 0.0
            || (self.overhead_p99_ms.is_finite() && self.overhead_p99_ms > self.overhead_ms);
        if !spread || (self.overhead_p99_ms > 0.0 && self.overhead_ms <= 0.0) {
            return Err(PolicyError::InvalidProfile {
                what: format!("hardware '{}'", self.hardware),
                reason: format!(
                    "overhead_p99_ms must be 0 or above a positive overhead_ms, got {} and {}",
                    self.overhead_p99_ms, self.overhead_ms
                ),
            });
        }
        if !(self.overhead_ms.is_finite() && self.overhead_ms >= 0.0) {
            return Err(PolicyError::InvalidProfile {
                what: format!("hardware '{}'", self.hardware),
                reason: format!("overhead_ms must be a non-negative number, got {}", self.overhead_ms),
            });
        }
        let what = format!("hardware '{}'", self.hardware);
        LatencyTable::from_millis(&what, self.batch.clone(), &self.latency_ms)?.with_size_cost(
            &what,
            self.input_ms,
            self.output_ms,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(points: &[(u32, f64)]) -> LatencyTable {
        let (b, l): (Vec<u32>, Vec<f64>) = points.iter().copied().unzip();
        LatencyTable::from_millis("test", b, &l).unwrap()
    }

    #[test]
    fn interpolates_between_and_extrapolates_past_points() {
        let t = table(&[(1, 10.0), (4, 16.0), (8, 24.0)]);
        assert_eq!(t.latency(1), Nanos::from_millis(10));
        assert_eq!(t.latency(2), Nanos::from_millis(12));
        assert_eq!(t.latency(4), Nanos::from_millis(16));
        assert_eq!(t.latency(6), Nanos::from_millis(20));
        assert_eq!(t.latency(10), Nanos::from_millis(28));
        assert_eq!(t.latency(0), Nanos::from_millis(10));
    }

    #[test]
    fn one_point_scales_with_batch() {
        let t = table(&[(2, 10.0)]);
        assert_eq!(t.latency(1), Nanos::from_millis(10));
        assert_eq!(t.latency(4), Nanos::from_millis(20));
    }

    #[test]
    fn rejects_bad_tables_with_reasons() {
        let e = LatencyTable::from_millis("p", vec![1, 1], &[1.0, 2.0]).unwrap_err().to_string();
        assert!(e.contains("increase strictly"), "{e}");
        let e = LatencyTable::from_millis("p", vec![1, 2], &[3.0, 2.0]).unwrap_err().to_string();
        assert!(e.contains("must not fall"), "{e}");
        let e = LatencyTable::from_millis("p", vec![1], &[1.0, 2.0]).unwrap_err().to_string();
        assert!(e.contains("1 batch sizes but 2 latencies"), "{e}");
        let e = LatencyTable::from_millis("p", vec![1], &[-2.0]).unwrap_err().to_string();
        assert!(e.contains("not a positive number"), "{e}");
    }

    #[test]
    fn sizes_batches_to_a_budget() {
        let t = table(&[(1, 50.0), (8, 120.0)]);
        // 50 ms of waiting plus the batch must fit 200 ms: 150 ms of service allows batch 8 (120 ms).
        assert_eq!(t.largest_batch_within(Nanos::from_millis(200), Nanos::from_millis(50), 8), 8);
        // 60 ms of service: batch 2 takes exactly 60 ms (50 + 10 per request), batch 3 would take 70.
        assert_eq!(t.largest_batch_within(Nanos::from_millis(100), Nanos::from_millis(40), 8), 2);
        assert_eq!(t.largest_batch_within(Nanos::from_millis(80), Nanos::from_millis(40), 8), 1);
    }
}
