//! Seeded synthetic arrivals: Poisson, a two-state MMPP, a diurnal (sinusoidal) rate, rate surges as in
//! MArk's surge experiments, and gamma renewal. Each is an iterator of [`Arrival`]s ending at its duration;
//! the same parameters and seed give the same stream. Time accumulates in `f64` seconds and is rounded to
//! nanoseconds once per arrival, so gaps never drift.

use rand::{RngExt, SeedableRng};
use rand_distr::{Distribution, Exp, Gamma};
use rand_pcg::Pcg64Mcg;
use serde::Deserialize;

use crate::{Arrival, Nanos, TraceError};

fn invalid(what: &str, value: f64, rule: &str) -> TraceError {
    TraceError::InvalidParameters(format!("{what} must be {rule}, got {value}"))
}

fn positive(what: &str, value: f64) -> Result<f64, TraceError> {
    if value.is_finite() && value > 0.0 { Ok(value) } else { Err(invalid(what, value, "a positive number")) }
}

fn non_negative(what: &str, value: f64) -> Result<f64, TraceError> {
    if value.is_finite() && value >= 0.0 { Ok(value) } else { Err(invalid(what, value, "a non-negative number")) }
}

fn arrival(t_s: f64) -> Arrival {
    Arrival { time: Nanos::from_secs_f64(t_s), model: 0, input_size: 0, output_size: 0 }
}

/// A generator's parameters, as a scenario's `[trace]` table names them (`kind = "poisson"`, ...).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum GeneratorSpec {
    /// A homogeneous Poisson process.
    Poisson {
        /// Mean arrivals per second.
        rate_per_s: f64,
        /// Length, seconds.
        duration_s: f64,
    },
    /// A two-state Markov-modulated Poisson process: Poisson at the state's rate, with exponential sojourns
    /// in each state. Starts in the low state.
    Mmpp {
        /// Rate in the low state, per second.
        low_rate_per_s: f64,
        /// Rate in the high state, per second.
        high_rate_per_s: f64,
        /// Mean time in the low state, seconds.
        mean_low_s: f64,
        /// Mean time in the high state, seconds.
        mean_high_s: f64,
        /// Length, seconds.
        duration_s: f64,
    },
    /// A Poisson process whose rate follows a sine: `mean * (1 + amplitude * cos(2π (t - peak_at) / period))`.
    Diurnal {
        /// Mean rate over a period, per second.
        mean_rate_per_s: f64,
        /// Relative swing, 0 (flat) to 1 (down to zero at the trough).
        amplitude: f64,
        /// Period, seconds (86 400 for a day).
        #[serde(default = "day")]
        period_s: f64,
        /// When the rate peaks first, seconds.
        #[serde(default)]
        peak_at_s: f64,
        /// Length, seconds.
        duration_s: f64,
    },
    /// A Poisson process at a base rate, multiplied by `factor` for a window (MArk's surge experiments).
    Surge {
        /// Rate outside the surge, per second.
        base_rate_per_s: f64,
        /// Rate multiplier during the surge.
        factor: f64,
        /// When the surge starts, seconds.
        surge_start_s: f64,
        /// How long it lasts, seconds.
        surge_duration_s: f64,
        /// Length, seconds.
        duration_s: f64,
    },
    /// A renewal process with gamma-distributed gaps: mean rate `rate_per_s`, gap coefficient of variation
    /// `cv` (1 is Poisson; above 1 burstier, below 1 more regular).
    Gamma {
        /// Mean arrivals per second.
        rate_per_s: f64,
        /// Coefficient of variation of the gaps.
        cv: f64,
        /// Length, seconds.
        duration_s: f64,
    },
}

fn day() -> f64 {
    86_400.0
}

impl GeneratorSpec {
    /// The names of the generators.
    pub const NAMES: &[&str] = &["poisson", "mmpp", "diurnal", "surge", "gamma"];

    /// Starts the stream; `seed` fixes it completely.
    pub fn open(&self, seed: u64) -> Result<Generator, TraceError> {
        let rng = Pcg64Mcg::seed_from_u64(seed);
        let (process, duration_s) = match *self {
            GeneratorSpec::Poisson { rate_per_s, duration_s } => {
                let rate = positive("poisson rate_per_s", rate_per_s)?;
                (Process::Poisson { gap: exp(rate)? }, duration_s)
            }
            GeneratorSpec::Mmpp { low_rate_per_s, high_rate_per_s, mean_low_s, mean_high_s, duration_s } => {
                let rates = [
                    non_negative("mmpp low_rate_per_s", low_rate_per_s)?,
                    non_negative("mmpp high_rate_per_s", high_rate_per_s)?,
                ];
                if rates[0] + rates[1] == 0.0 {
                    return Err(TraceError::InvalidParameters("mmpp needs at least one positive rate".into()));
                }
                let means = [positive("mmpp mean_low_s", mean_low_s)?, positive("mmpp mean_high_s", mean_high_s)?];
                (Process::Mmpp { rates, means, state: 0, switch_at: f64::NAN }, duration_s)
            }
            GeneratorSpec::Diurnal { mean_rate_per_s, amplitude, period_s, peak_at_s, duration_s } => {
                let mean = positive("diurnal mean_rate_per_s", mean_rate_per_s)?;
                if !(0.0..=1.0).contains(&amplitude) {
                    return Err(invalid("diurnal amplitude", amplitude, "between 0 and 1"));
                }
                let period = positive("diurnal period_s", period_s)?;
                let peak = non_negative("diurnal peak_at_s", peak_at_s)?;
                let rate = move |t: f64| mean * (1.0 + amplitude * (std::f64::consts::TAU * (t - peak) / period).cos());
                (
                    Process::Thinned {
                        rate: Box::new(rate),
                        max: mean * (1.0 + amplitude),
                        gap: exp(mean * (1.0 + amplitude))?,
                    },
                    duration_s,
                )
            }
            GeneratorSpec::Surge { base_rate_per_s, factor, surge_start_s, surge_duration_s, duration_s } => {
                let base = positive("surge base_rate_per_s", base_rate_per_s)?;
                let k = non_negative("surge factor", factor)?;
                let start = non_negative("surge surge_start_s", surge_start_s)?;
                let end = start + non_negative("surge surge_duration_s", surge_duration_s)?;
                let rate = move |t: f64| if (start..end).contains(&t) { base * k } else { base };
                let max = base * k.max(1.0);
                (Process::Thinned { rate: Box::new(rate), max, gap: exp(max)? }, duration_s)
            }
            GeneratorSpec::Gamma { rate_per_s, cv, duration_s } => {
                let rate = positive("gamma rate_per_s", rate_per_s)?;
                let cv = positive("gamma cv", cv)?;
                let shape = 1.0 / (cv * cv);
                let gap = Gamma::new(shape, 1.0 / (rate * shape))
                    .map_err(|e| TraceError::InvalidParameters(format!("gamma: {e}")))?;
                (Process::Gamma { gap }, duration_s)
            }
        };
        let duration_s = non_negative("duration_s", duration_s)?;
        Ok(Generator { rng, process, end_s: duration_s, now_s: 0.0 })
    }

    /// A short description for reports.
    pub fn describe(&self) -> String {
        match *self {
            GeneratorSpec::Poisson { rate_per_s, duration_s } => format!("poisson:{rate_per_s}/s for {duration_s}s"),
            GeneratorSpec::Mmpp { low_rate_per_s, high_rate_per_s, mean_low_s, mean_high_s, duration_s } => format!(
                "mmpp:{low_rate_per_s}/s (mean {mean_low_s}s) <-> {high_rate_per_s}/s (mean {mean_high_s}s) for {duration_s}s"
            ),
            GeneratorSpec::Diurnal { mean_rate_per_s, amplitude, period_s, peak_at_s, duration_s } => format!(
                "diurnal:{mean_rate_per_s}/s +-{}% period {period_s}s peak at {peak_at_s}s for {duration_s}s",
                amplitude * 100.0
            ),
            GeneratorSpec::Surge { base_rate_per_s, factor, surge_start_s, surge_duration_s, duration_s } => format!(
                "surge:{base_rate_per_s}/s x{factor} from {surge_start_s}s for {surge_duration_s}s, {duration_s}s in all"
            ),
            GeneratorSpec::Gamma { rate_per_s, cv, duration_s } => {
                format!("gamma:{rate_per_s}/s cv {cv} for {duration_s}s")
            }
        }
    }

    /// The generator's length, seconds.
    pub fn duration_s(&self) -> f64 {
        match *self {
            GeneratorSpec::Poisson { duration_s, .. }
            | GeneratorSpec::Mmpp { duration_s, .. }
            | GeneratorSpec::Diurnal { duration_s, .. }
            | GeneratorSpec::Surge { duration_s, .. }
            | GeneratorSpec::Gamma { duration_s, .. } => duration_s,
        }
    }

    /// The long-run mean rate, per second (for tests and summaries).
    pub fn mean_rate_per_s(&self) -> f64 {
        match *self {
            GeneratorSpec::Poisson { rate_per_s, .. } | GeneratorSpec::Gamma { rate_per_s, .. } => rate_per_s,
            GeneratorSpec::Mmpp { low_rate_per_s, high_rate_per_s, mean_low_s, mean_high_s, .. } => {
                (low_rate_per_s * mean_low_s + high_rate_per_s * mean_high_s) / (mean_low_s + mean_high_s)
            }
            GeneratorSpec::Diurnal { mean_rate_per_s, .. } => mean_rate_per_s,
            GeneratorSpec::Surge { base_rate_per_s, factor, surge_start_s, surge_duration_s, duration_s } => {
                let surge = (surge_start_s + surge_duration_s).min(duration_s) - surge_start_s.min(duration_s);
                base_rate_per_s * (duration_s + (factor - 1.0) * surge.max(0.0)) / duration_s.max(f64::MIN_POSITIVE)
            }
        }
    }
}

fn exp(rate: f64) -> Result<Exp<f64>, TraceError> {
    Exp::new(rate).map_err(|e| TraceError::InvalidParameters(format!("rate {rate}: {e}")))
}

type RateFn = Box<dyn Fn(f64) -> f64 + Send>;

enum Process {
    Poisson {
        gap: Exp<f64>,
    },
    Mmpp {
        rates: [f64; 2],
        means: [f64; 2],
        state: usize,
        switch_at: f64,
    },
    /// Lewis–Shedler thinning: candidates at the maximum rate, each kept with probability rate(t) / max.
    Thinned {
        rate: RateFn,
        max: f64,
        gap: Exp<f64>,
    },
    Gamma {
        gap: Gamma<f64>,
    },
}

/// A running generator.
pub struct Generator {
    rng: Pcg64Mcg,
    process: Process,
    end_s: f64,
    now_s: f64,
}

impl Generator {
    fn next_time(&mut self) -> f64 {
        let rng = &mut self.rng;
        match &mut self.process {
            Process::Poisson { gap } => self.now_s + gap.sample(rng),
            Process::Gamma { gap } => self.now_s + gap.sample(rng),
            Process::Thinned { rate, max, gap } => {
                let mut t = self.now_s;
                loop {
                    t += gap.sample(rng);
                    if t > self.end_s || rng.random::<f64>() * *max < rate(t) {
                        return t;
                    }
                }
            }
            Process::Mmpp { rates, means, state, switch_at } => {
                let mut t = self.now_s;
                if switch_at.is_nan() {
                    *switch_at = Exp::new(1.0 / means[0]).map_or(f64::INFINITY, |d| d.sample(rng));
                }
                loop {
                    // Memorylessness: redraw the gap from the current time at every state switch.
                    let gap = if rates[*state] > 0.0 {
                        Exp::new(rates[*state]).map_or(f64::INFINITY, |d| d.sample(rng))
                    } else {
                        f64::INFINITY
                    };
                    if t + gap <= *switch_at {
                        return t + gap;
                    }
                    t = *switch_at;
                    if t > self.end_s {
                        return t;
                    }
                    *state = 1 - *state;
                    *switch_at = t + Exp::new(1.0 / means[*state]).map_or(f64::INFINITY, |d| d.sample(rng));
                }
            }
        }
    }
}

impl Generator {
    /// Appends up to `max` arrivals to `out` (those `next` would give, in one loop without the stream's
    /// per-arrival call and `Result`); whether the stream has ended.
    pub(crate) fn read_into(&mut self, out: &mut Vec<Arrival>, max: usize) -> bool {
        out.reserve(max.min(1 << 12));
        for _ in 0..max {
            match self.next_arrival() {
                Some(a) => out.push(a),
                None => return true,
            }
        }
        false
    }

    #[inline(always)]
    fn next_arrival(&mut self) -> Option<Arrival> {
        if self.now_s > self.end_s {
            return None;
        }
        self.now_s = self.next_time();
        (self.now_s <= self.end_s).then(|| arrival(self.now_s))
    }
}

impl Iterator for Generator {
    type Item = Result<Arrival, TraceError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_arrival().map(Ok)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn times(spec: &GeneratorSpec, seed: u64) -> Vec<f64> {
        spec.open(seed).unwrap().map(|a| a.unwrap().time.as_secs_f64()).collect()
    }

    #[test]
    fn same_seed_same_stream_and_sorted() {
        let specs = [
            GeneratorSpec::Poisson { rate_per_s: 50.0, duration_s: 100.0 },
            GeneratorSpec::Mmpp {
                low_rate_per_s: 5.0,
                high_rate_per_s: 80.0,
                mean_low_s: 20.0,
                mean_high_s: 5.0,
                duration_s: 100.0,
            },
            GeneratorSpec::Diurnal {
                mean_rate_per_s: 20.0,
                amplitude: 0.9,
                period_s: 50.0,
                peak_at_s: 10.0,
                duration_s: 100.0,
            },
            GeneratorSpec::Surge {
                base_rate_per_s: 10.0,
                factor: 4.0,
                surge_start_s: 20.0,
                surge_duration_s: 10.0,
                duration_s: 100.0,
            },
            GeneratorSpec::Gamma { rate_per_s: 30.0, cv: 3.0, duration_s: 100.0 },
        ];
        for spec in &specs {
            let a = times(spec, 7);
            assert!(!a.is_empty(), "{spec:?}");
            assert_eq!(a, times(spec, 7), "{spec:?}");
            assert_ne!(a, times(spec, 8), "{spec:?}");
            assert!(a.windows(2).all(|w| w[0] <= w[1]), "{spec:?}");
            assert!(a.iter().all(|&t| t <= 100.0), "{spec:?}");
        }
    }

    #[test]
    fn surge_multiplies_the_rate_only_inside_its_window() {
        let spec = GeneratorSpec::Surge {
            base_rate_per_s: 100.0,
            factor: 5.0,
            surge_start_s: 100.0,
            surge_duration_s: 100.0,
            duration_s: 300.0,
        };
        let t = times(&spec, 3);
        let inside = t.iter().filter(|&&x| (100.0..200.0).contains(&x)).count() as f64;
        let before = t.iter().filter(|&&x| x < 100.0).count() as f64;
        // Expected 50 000 and 10 000, standard deviations 224 and 100.
        assert!((inside - 50_000.0).abs() < 1_200.0, "{inside}");
        assert!((before - 10_000.0).abs() < 500.0, "{before}");
    }

    #[test]
    fn bad_parameters_are_errors() {
        for spec in [
            GeneratorSpec::Poisson { rate_per_s: 0.0, duration_s: 1.0 },
            GeneratorSpec::Poisson { rate_per_s: 1.0, duration_s: -1.0 },
            GeneratorSpec::Diurnal {
                mean_rate_per_s: 1.0,
                amplitude: 1.5,
                period_s: 10.0,
                peak_at_s: 0.0,
                duration_s: 1.0,
            },
            GeneratorSpec::Gamma { rate_per_s: 1.0, cv: f64::NAN, duration_s: 1.0 },
            GeneratorSpec::Mmpp {
                low_rate_per_s: 0.0,
                high_rate_per_s: 0.0,
                mean_low_s: 1.0,
                mean_high_s: 1.0,
                duration_s: 1.0,
            },
        ] {
            let e = spec.open(1).err().map(|e| e.to_string()).unwrap_or_default();
            assert!(e.starts_with("invalid trace parameters"), "{spec:?}: {e}");
        }
    }
}
