//! Request accounting and the SLO, shared by the simulator and the live backend.
//!
//! Every request that arrives ends in exactly one of three ways: **completed** (with its latency from
//! arrival to response), **rejected** at admission with a [`RejectReason`], or **dropped** after admission
//! with a [`DropReason`]. The [`Ledger`] counts them and keeps latencies in an HDR histogram (no
//! per-request record), so memory stays flat however long the trace.
//!
//! The SLO follows MArk: a request is *fulfilled* when it completes within `rt_max`; the service meets the
//! SLO when at least `sl_min` of all arrived requests are fulfilled. Rejected and dropped requests count
//! as not fulfilled.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::time::Nanos;

/// A latency SLO: at least `sl_min` of requests complete within `rt_max`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Slo {
    /// Response-time threshold.
    pub rt_max: Nanos,
    /// Fraction of requests that must meet it, in `0..=1`.
    pub sl_min: f64,
}

impl Slo {
    /// MArk's SLO: 98% of requests within 200 ms.
    pub const MARK: Slo = Slo { rt_max: Nanos::from_millis(200), sl_min: 0.98 };

    /// Whether one request's latency fulfils the SLO.
    pub fn fulfilled(&self, latency: Nanos) -> bool {
        latency <= self.rt_max
    }
}

/// Why a request was refused at admission.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RejectReason {
    /// The chosen VM pool has no instance (ready or provisioning) to queue at.
    NoVmCapacity,
    /// Every instance of the chosen pool has a full queue.
    QueueFull,
    /// The function platform is at its regional concurrency limit.
    Throttled,
    /// The function is scaling faster than the platform allows (AWS: 1,000 more concurrent executions per
    /// function every 10 seconds).
    FunctionScaling,
    /// The server's admission control refused it (live backend: bounded queues).
    Overloaded,
    /// The policy refused it, for the reason given.
    Policy(&'static str),
}

impl RejectReason {
    /// The name used in reports.
    pub fn key(&self) -> String {
        match self {
            RejectReason::NoVmCapacity => "no_vm_capacity".into(),
            RejectReason::QueueFull => "queue_full".into(),
            RejectReason::Throttled => "throttled".into(),
            RejectReason::FunctionScaling => "function_scaling".into(),
            RejectReason::Overloaded => "overloaded".into(),
            RejectReason::Policy(why) => format!("policy:{why}"),
        }
    }
}

/// Why a completed request missed the SLO: where it spent the time that made it late (the simulator knows;
/// a client replaying against a server does not).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum MissCause {
    /// It queued at a VM that was still provisioning.
    WaitedForVm,
    /// It queued at a function instance that was cold-starting.
    WaitedForColdStart,
    /// It queued behind other requests at a busy instance for longer than its service took.
    Queued,
    /// Its service (batch, serving path) alone took most of the time.
    SlowService,
}

impl MissCause {
    /// Every cause, in declaration order (`cause as usize` indexes this).
    pub const ALL: [MissCause; 4] =
        [MissCause::WaitedForVm, MissCause::WaitedForColdStart, MissCause::Queued, MissCause::SlowService];

    /// The key reports use.
    pub fn key(self) -> &'static str {
        match self {
            MissCause::WaitedForVm => "waited_for_provisioning_vm",
            MissCause::WaitedForColdStart => "waited_for_cold_start",
            MissCause::Queued => "queued_behind_busy_instance",
            MissCause::SlowService => "slow_service",
        }
    }
}

/// Why an admitted request was given up.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DropReason {
    /// Its instance was preempted or released, and re-routing it was refused for this reason.
    RerouteFailed(RejectReason),
    /// The run ended (trace over and drain limit reached) before it completed.
    RunEnded,
    /// It waited longer than the server's request timeout (live backend).
    TimedOut,
    /// The worker serving it failed (live backend).
    WorkerFailed,
}

impl DropReason {
    /// The name used in reports.
    pub fn key(&self) -> String {
        match self {
            DropReason::RerouteFailed(r) => format!("reroute_failed:{}", r.key()),
            DropReason::RunEnded => "run_ended".into(),
            DropReason::TimedOut => "timed_out".into(),
            DropReason::WorkerFailed => "worker_failed".into(),
        }
    }
}

/// Highest latency the histograms track: one day, in microseconds. Longer latencies are clamped.
const MAX_LATENCY_US: u64 = 86_400_000_000;

fn new_histogram() -> Histogram<u64> {
    // Three significant figures over 1 µs..1 day; the bounds are constants, so this cannot fail.
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("constant histogram bounds are valid")
}

/// Counts by reason, each reason once, in the order first seen (a report sorts them by name). A run meets
/// a handful of reasons, so a scan of a short `Vec` beats a map: 30% of the function workload's requests
/// are refused, each counted here.
#[derive(Clone, Debug)]
struct Tally<K>(Vec<(K, u64)>);

impl<K> Default for Tally<K> {
    fn default() -> Self {
        Tally(Vec::new())
    }
}

impl<K: PartialEq> Tally<K> {
    #[inline]
    fn add(&mut self, key: K, n: u64) {
        match self.0.iter_mut().find(|(k, _)| *k == key) {
            Some((_, count)) => *count += n,
            None => self.0.push((key, n)),
        }
    }
}

/// Counts of outcomes and the latency distribution of completed requests.
#[derive(Clone, Debug)]
pub struct Ledger {
    slo: Slo,
    arrivals: u64,
    completed: u64,
    fulfilled: u64,
    rejected: Tally<RejectReason>,
    dropped: Tally<DropReason>,
    rejected_total: u64,
    dropped_total: u64,
    latency_us: Histogram<u64>,
    latency_sum_ns: u128,
    /// SLO misses by cause, indexed by `MissCause as usize` (counted on every late completion: no map).
    misses: [u64; MissCause::ALL.len()],
}

impl Ledger {
    /// An empty ledger for `slo`.
    pub fn new(slo: Slo) -> Ledger {
        Ledger {
            slo,
            arrivals: 0,
            completed: 0,
            fulfilled: 0,
            rejected: Tally::default(),
            dropped: Tally::default(),
            rejected_total: 0,
            dropped_total: 0,
            latency_us: new_histogram(),
            latency_sum_ns: 0,
            misses: [0; MissCause::ALL.len()],
        }
    }

    /// The SLO this ledger judges by.
    pub fn slo(&self) -> Slo {
        self.slo
    }

    /// A request arrived.
    pub fn arrive(&mut self) {
        self.arrivals += 1;
    }

    /// A request completed after `latency`; returns whether it fulfilled the SLO.
    #[inline]
    pub fn complete(&mut self, latency: Nanos) -> bool {
        self.completed += 1;
        let ok = self.slo.fulfilled(latency);
        self.fulfilled += ok as u64;
        self.latency_sum_ns += latency.0 as u128;
        let us = latency.0.div_ceil(1000).clamp(1, MAX_LATENCY_US);
        self.latency_us.saturating_record(us);
        ok
    }

    /// A request completed after `latency`, and if it missed the SLO, `cause` says why; returns whether it
    /// fulfilled the SLO.
    #[inline]
    pub fn complete_explained(&mut self, latency: Nanos, cause: impl FnOnce() -> MissCause) -> bool {
        let ok = self.complete(latency);
        if !ok {
            self.misses[cause() as usize] += 1;
        }
        ok
    }

    /// A request was refused at admission.
    #[inline]
    pub fn reject(&mut self, reason: RejectReason) {
        self.rejected_total += 1;
        self.rejected.add(reason, 1);
    }

    /// An admitted request was given up.
    pub fn drop_request(&mut self, reason: DropReason) {
        self.dropped_total += 1;
        self.dropped.add(reason, 1);
    }

    /// Requests arrived so far.
    pub fn arrivals(&self) -> u64 {
        self.arrivals
    }

    /// Requests completed so far.
    pub fn completed(&self) -> u64 {
        self.completed
    }

    /// Completed within `rt_max`.
    pub fn fulfilled(&self) -> u64 {
        self.fulfilled
    }

    /// Requests rejected so far.
    pub fn rejected(&self) -> u64 {
        self.rejected_total
    }

    /// Requests dropped so far.
    pub fn dropped(&self) -> u64 {
        self.dropped_total
    }

    /// Requests that have arrived but not yet ended.
    pub fn outstanding(&self) -> u64 {
        self.arrivals - self.completed - self.rejected_total - self.dropped_total
    }

    /// Fraction of arrivals fulfilled (1 when nothing arrived).
    pub fn attainment(&self) -> f64 {
        if self.arrivals == 0 { 1.0 } else { self.fulfilled as f64 / self.arrivals as f64 }
    }

    /// Latency at quantile `q` (0..=1) of completed requests, in ms; 0 when none completed.
    pub fn latency_ms_at(&self, q: f64) -> f64 {
        if self.completed == 0 { 0.0 } else { self.latency_us.value_at_quantile(q) as f64 / 1000.0 }
    }

    /// Adds another ledger's counts into this one (shards of one run, or live workers).
    pub fn merge(&mut self, other: &Ledger) {
        self.arrivals += other.arrivals;
        self.completed += other.completed;
        self.fulfilled += other.fulfilled;
        self.rejected_total += other.rejected_total;
        self.dropped_total += other.dropped_total;
        for &(k, v) in &other.rejected.0 {
            self.rejected.add(k, v);
        }
        for &(k, v) in &other.dropped.0 {
            self.dropped.add(k, v);
        }
        for (m, o) in self.misses.iter_mut().zip(other.misses) {
            *m += o;
        }
        self.latency_sum_ns += other.latency_sum_ns;
        // Both histograms share bounds, so adding cannot fail.
        let _ = self.latency_us.add(&other.latency_us);
    }

    /// The request, SLO and latency sections of a report.
    pub fn summary(&self) -> (RequestSummary, SloSummary, LatencySummary) {
        let requests = RequestSummary {
            arrivals: self.arrivals,
            completed: self.completed,
            rejected: self.rejected_total,
            dropped: self.dropped_total,
            rejected_by_reason: self.rejected.0.iter().map(|(k, v)| (k.key(), *v)).collect(),
            dropped_by_reason: self.dropped.0.iter().map(|(k, v)| (k.key(), *v)).collect(),
        };
        let attainment = self.attainment();
        let slo = SloSummary {
            rt_max_ms: self.slo.rt_max.as_millis_f64(),
            sl_min: self.slo.sl_min,
            fulfilled: self.fulfilled,
            attainment,
            met: attainment >= self.slo.sl_min,
            misses_by_cause: MissCause::ALL
                .iter()
                .zip(self.misses)
                .filter(|&(_, v)| v > 0)
                .map(|(k, v)| (k.key().to_string(), v))
                .collect(),
        };
        let mean_ms = if self.completed == 0 { 0.0 } else { self.latency_sum_ns as f64 / self.completed as f64 / 1e6 };
        let latency = LatencySummary {
            p50: self.latency_ms_at(0.5),
            p90: self.latency_ms_at(0.9),
            p99: self.latency_ms_at(0.99),
            p999: self.latency_ms_at(0.999),
            mean: mean_ms,
            max: if self.completed == 0 { 0.0 } else { self.latency_us.max() as f64 / 1000.0 },
            cdf: if self.completed == 0 {
                Vec::new()
            } else {
                CDF_QUANTILES.iter().map(|&q| [q, self.latency_ms_at(q)]).collect()
            },
        };
        (requests, slo, latency)
    }
}

/// How requests ended.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RequestSummary {
    /// Requests that arrived.
    pub arrivals: u64,
    /// Completed, whatever their latency.
    pub completed: u64,
    /// Refused at admission.
    pub rejected: u64,
    /// Given up after admission.
    pub dropped: u64,
    /// Rejections by reason.
    pub rejected_by_reason: BTreeMap<String, u64>,
    /// Drops by reason.
    pub dropped_by_reason: BTreeMap<String, u64>,
}

/// SLO attainment.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SloSummary {
    /// Response-time threshold, ms.
    pub rt_max_ms: f64,
    /// Required fraction.
    pub sl_min: f64,
    /// Requests completed within `rt_max`.
    pub fulfilled: u64,
    /// `fulfilled / arrivals`.
    pub attainment: f64,
    /// `attainment >= sl_min`.
    pub met: bool,
    /// Completed requests that missed `rt_max`, by where they spent the time (`MissCause` keys; empty when
    /// not known, as in a replay's report). Rejected and dropped requests miss too, and are counted by
    /// reason under `requests`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub misses_by_cause: BTreeMap<String, u64>,
}

/// Latency of completed requests, ms (HDR histogram, 3 significant figures).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LatencySummary {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Mean (exact).
    pub mean: f64,
    /// Largest.
    pub max: f64,
    /// The distribution as `[quantile, ms]` pairs at [`CDF_QUANTILES`] (empty when nothing completed): what
    /// `hyscale plot` and the notebooks draw the latency CDF from.
    #[serde(default)]
    pub cdf: Vec<[f64; 2]>,
}

/// The quantiles a report's latency CDF is given at: every 2% up to 98%, then the tail.
pub const CDF_QUANTILES: &[f64] = &[
    0.0, 0.02, 0.04, 0.06, 0.08, 0.1, 0.12, 0.14, 0.16, 0.18, 0.2, 0.22, 0.24, 0.26, 0.28, 0.3, 0.32, 0.34, 0.36, 0.38,
    0.4, 0.42, 0.44, 0.46, 0.48, 0.5, 0.52, 0.54, 0.56, 0.58, 0.6, 0.62, 0.64, 0.66, 0.68, 0.7, 0.72, 0.74, 0.76, 0.78,
    0.8, 0.82, 0.84, 0.86, 0.88, 0.9, 0.92, 0.94, 0.96, 0.98, 0.99, 0.995, 0.999, 0.9999, 1.0,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_request_ends_in_one_bucket() {
        let mut l = Ledger::new(Slo::MARK);
        for _ in 0..5 {
            l.arrive();
        }
        assert!(l.complete(Nanos::from_millis(100)));
        assert!(!l.complete(Nanos::from_millis(300)));
        l.reject(RejectReason::Throttled);
        l.drop_request(DropReason::RunEnded);
        assert_eq!(l.outstanding(), 1);
        let (r, s, lat) = l.summary();
        assert_eq!(r.rejected_by_reason["throttled"], 1);
        assert_eq!(r.dropped_by_reason["run_ended"], 1);
        assert_eq!(s.fulfilled, 1);
        assert!((s.attainment - 0.2).abs() < 1e-12);
        assert!(!s.met);
        assert!((lat.mean - 200.0).abs() < 1e-9);
        assert!((lat.max - 300.0).abs() < 0.5);
    }

    #[test]
    fn boundary_latency_fulfils_the_slo() {
        assert!(Slo::MARK.fulfilled(Nanos::from_millis(200)));
        assert!(!Slo::MARK.fulfilled(Nanos(200_000_001)));
    }
}
