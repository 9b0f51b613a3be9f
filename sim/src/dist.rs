//! Distributions of the cloud model's random quantities, as written in data files.
//!
//! ```toml
//! provision_s = { kind = "lognormal", p50 = 40.0, p99 = 90.0 }
//! sandbox_init_s = { kind = "fixed", value = 0.8 }
//! ```
//!
//! The log-normal is given by its median and 99th percentile, the figures measurement studies publish;
//! its parameters follow from the standard normal quantile z(0.99) (statrs).

use hyscale_policies::Nanos;
use rand_distr::{Distribution, Exp, LogNormal, Uniform};
use serde::{Deserialize, Serialize};
use statrs::distribution::{ContinuousCDF, Normal};

use crate::rng::SimRng;

/// A non-negative random quantity (its unit is in the field's name).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum DistSpec {
    /// Always `value`.
    Fixed {
        /// The value.
        value: f64,
    },
    /// Uniform on `[min, max]`.
    Uniform {
        /// Lower bound.
        min: f64,
        /// Upper bound.
        max: f64,
    },
    /// Exponential with this mean.
    Exponential {
        /// Mean.
        mean: f64,
    },
    /// Log-normal with this median and 99th percentile.
    Lognormal {
        /// Median.
        p50: f64,
        /// 99th percentile, above the median.
        p99: f64,
    },
}

/// A validated distribution, ready to sample.
#[derive(Clone, Debug)]
pub enum Dist {
    /// A constant.
    Fixed(f64),
    /// Uniform (the distribution, its mean, the mean of its reciprocal).
    Uniform(Uniform<f64>, f64, f64),
    /// Exponential (the distribution, its mean).
    Exponential(Exp<f64>, f64),
    /// Log-normal (the distribution, its mean, the mean of its reciprocal).
    Lognormal(LogNormal<f64>, f64, f64),
}

impl DistSpec {
    /// Validates and builds the sampler; the error says what is wrong with which parameter.
    pub fn build(&self) -> Result<Dist, String> {
        let check = |name: &str, v: f64| {
            if v.is_finite() && v >= 0.0 {
                Ok(v)
            } else {
                Err(format!("{name} must be a non-negative number, got {v}"))
            }
        };
        match *self {
            DistSpec::Fixed { value } => Ok(Dist::Fixed(check("value", value)?)),
            DistSpec::Uniform { min, max } => {
                let (lo, hi) = (check("min", min)?, check("max", max)?);
                if hi < lo {
                    return Err(format!("max ({hi}) is below min ({lo})"));
                }
                if hi == lo {
                    return Ok(Dist::Fixed(lo));
                }
                let u = Uniform::new_inclusive(lo, hi).map_err(|e| e.to_string())?;
                // E[1/X] = ln(hi / lo) / (hi - lo); unbounded when lo is 0.
                let recip = if lo > 0.0 { (hi / lo).ln() / (hi - lo) } else { f64::INFINITY };
                Ok(Dist::Uniform(u, (lo + hi) / 2.0, recip))
            }
            DistSpec::Exponential { mean } => {
                let m = check("mean", mean)?;
                if m == 0.0 {
                    return Ok(Dist::Fixed(0.0));
                }
                Ok(Dist::Exponential(Exp::new(1.0 / m).map_err(|e| e.to_string())?, m))
            }
            DistSpec::Lognormal { p50, p99 } => {
                let (p50, p99) = (check("p50", p50)?, check("p99", p99)?);
                if p50 <= 0.0 || p99 <= p50 {
                    return Err(format!("needs 0 < p50 < p99, got p50 = {p50}, p99 = {p99}"));
                }
                let z99 = Normal::standard().inverse_cdf(0.99);
                let mu = p50.ln();
                let sigma = (p99 / p50).ln() / z99;
                let d = LogNormal::new(mu, sigma).map_err(|e| e.to_string())?;
                // E[X] = exp(mu + sigma^2 / 2); 1/X is log-normal (-mu, sigma), so E[1/X] = exp(-mu + sigma^2 / 2).
                Ok(Dist::Lognormal(d, (mu + sigma * sigma / 2.0).exp(), (-mu + sigma * sigma / 2.0).exp()))
            }
        }
    }
}

impl Dist {
    /// One draw.
    #[inline]
    pub fn sample(&self, rng: &mut SimRng) -> f64 {
        match self {
            Dist::Fixed(v) => *v,
            Dist::Uniform(d, ..) => d.sample(rng),
            Dist::Exponential(d, _) => d.sample(rng),
            Dist::Lognormal(d, ..) => d.sample(rng),
        }
    }

    /// The mean.
    pub fn mean(&self) -> f64 {
        match self {
            Dist::Fixed(v) => *v,
            Dist::Uniform(_, m, _) | Dist::Exponential(_, m) | Dist::Lognormal(_, m, _) => *m,
        }
    }

    /// The mean of `1 / X` (infinite when `X` can come arbitrarily close to 0 with enough weight, as an
    /// exponential can): what a quantity divided by a random rate (a size over a bandwidth) averages to.
    pub fn mean_reciprocal(&self) -> f64 {
        match self {
            Dist::Fixed(v) => 1.0 / v,
            Dist::Uniform(_, _, r) | Dist::Lognormal(_, _, r) => *r,
            Dist::Exponential(..) => f64::INFINITY,
        }
    }
}

/// A serving overhead per request (a profile's `overhead_ms`, see `scenario::VmModel::overhead`): fixed, as a
/// time converted once (most profiles': a read per request), or drawn in ms and converted per draw.
#[derive(Clone, Debug)]
pub enum Overhead {
    /// Always this.
    Fixed(Nanos),
    /// Drawn from this, in ms.
    Drawn(Dist),
}

impl Overhead {
    /// The overhead whose milliseconds are `ms`.
    pub fn from_millis(ms: Dist) -> Overhead {
        match ms {
            Dist::Fixed(v) => Overhead::Fixed(Nanos::from_millis_f64(v)),
            d => Overhead::Drawn(d),
        }
    }

    /// One request's (a fixed one draws nothing from `rng`).
    #[inline(always)]
    pub fn sample(&self, rng: &mut SimRng) -> Nanos {
        match self {
            Overhead::Fixed(t) => *t,
            Overhead::Drawn(d) => Nanos::from_millis_f64(d.sample(rng)),
        }
    }
}

/// A multiplicative noise with mean 1 and coefficient of variation `cv` (log-normal); `None` when `cv` is 0.
pub fn unit_mean_noise(cv: f64) -> Option<LogNormal<f64>> {
    if cv <= 0.0 {
        return None;
    }
    let sigma2 = (1.0 + cv * cv).ln();
    LogNormal::new(-sigma2 / 2.0, sigma2.sqrt()).ok()
}

#[cfg(test)]
mod tests {

    #[test]
    fn the_mean_of_a_reciprocal_is_computed_not_guessed() {
        // Log-normal with median 90 and p99 160: sigma = ln(160 / 90) / z(0.99) = 0.24735; E[1/X] =
        // exp(-ln 90 + sigma^2 / 2) = 0.0111111 x 1.03107 = 0.0114563, above 1 / E[X] = 1 / 92.80 = 0.010776.
        let d = DistSpec::Lognormal { p50: 90.0, p99: 160.0 }.build().unwrap();
        assert!((d.mean_reciprocal() - 0.0114563).abs() < 1e-6, "{}", d.mean_reciprocal());
        assert!((d.mean() - 92.803).abs() < 1e-2, "{}", d.mean());
        // Uniform on [50, 150]: ln(3) / 100.
        let u = DistSpec::Uniform { min: 50.0, max: 150.0 }.build().unwrap();
        assert!((u.mean_reciprocal() - 3f64.ln() / 100.0).abs() < 1e-12);
        assert_eq!(DistSpec::Fixed { value: 4.0 }.build().unwrap().mean_reciprocal(), 0.25);
        assert!(DistSpec::Exponential { mean: 1.0 }.build().unwrap().mean_reciprocal().is_infinite());
    }

    use super::*;
    use rand::SeedableRng;

    #[test]
    fn lognormal_matches_its_quantiles() {
        let d = DistSpec::Lognormal { p50: 40.0, p99: 90.0 }.build().unwrap();
        let mut rng = SimRng::seed_from_u64(3);
        let mut xs: Vec<f64> = (0..20_000).map(|_| d.sample(&mut rng)).collect();
        xs.sort_by(|a, b| a.total_cmp(b));
        let p50 = xs[10_000];
        let p99 = xs[19_800];
        assert!((p50 - 40.0).abs() < 1.0, "p50 {p50}");
        assert!((p99 - 90.0).abs() < 5.0, "p99 {p99}");
    }

    #[test]
    fn bad_parameters_are_explained() {
        assert!(DistSpec::Lognormal { p50: 5.0, p99: 2.0 }.build().unwrap_err().contains("p50 < p99"));
        assert!(DistSpec::Uniform { min: 2.0, max: 1.0 }.build().unwrap_err().contains("below min"));
        assert!(DistSpec::Fixed { value: -1.0 }.build().unwrap_err().contains("non-negative"));
    }

    #[test]
    fn a_fixed_overhead_is_converted_once_and_draws_nothing() {
        let mut rng = SimRng::seed_from_u64(4);
        let fixed = Overhead::from_millis(Dist::Fixed(1.5));
        assert_eq!(fixed.sample(&mut rng), Nanos::from_micros(1500));
        // The stream is where it was: the next draw equals a fresh stream's first.
        let drawn = Overhead::from_millis(DistSpec::Uniform { min: 1.0, max: 2.0 }.build().unwrap());
        let first = drawn.sample(&mut rng);
        assert_eq!(first, drawn.sample(&mut SimRng::seed_from_u64(4)));
        assert!((Nanos::from_millis(1)..=Nanos::from_millis(2)).contains(&first), "{first}");
    }

    #[test]
    fn noise_has_unit_mean() {
        let n = unit_mean_noise(0.3).unwrap();
        let mut rng = SimRng::seed_from_u64(9);
        let mean: f64 = (0..50_000).map(|_| n.sample(&mut rng)).sum::<f64>() / 50_000.0;
        assert!((mean - 1.0).abs() < 0.01, "{mean}");
    }
}
