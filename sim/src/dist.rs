//! Distributions of the cloud model's random quantities, as written in data files.
//!
//! ```toml
//! provision_s = { kind = "lognormal", p50 = 40.0, p99 = 90.0 }
//! sandbox_init_s = { kind = "fixed", value = 0.8 }
//! ```
//!
//! The log-normal is given by its median and 99th percentile, the figures measurement studies publish;
//! its parameters follow from the standard normal quantile z(0.99) (statrs).

use rand_distr::{Distribution, Exp, LogNormal, Uniform};
use serde::Deserialize;
use statrs::distribution::{ContinuousCDF, Normal};

use crate::rng::SimRng;

/// A non-negative random quantity (its unit is in the field's name).
#[derive(Clone, Debug, Deserialize, PartialEq)]
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
    /// Uniform.
    Uniform(Uniform<f64>, f64),
    /// Exponential (the distribution, its mean).
    Exponential(Exp<f64>, f64),
    /// Log-normal (the distribution, its mean).
    Lognormal(LogNormal<f64>, f64),
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
                Ok(Dist::Uniform(u, (lo + hi) / 2.0))
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
                Ok(Dist::Lognormal(d, (mu + sigma * sigma / 2.0).exp()))
            }
        }
    }
}

impl Dist {
    /// One draw.
    pub fn sample(&self, rng: &mut SimRng) -> f64 {
        match self {
            Dist::Fixed(v) => *v,
            Dist::Uniform(d, _) => d.sample(rng),
            Dist::Exponential(d, _) => d.sample(rng),
            Dist::Lognormal(d, _) => d.sample(rng),
        }
    }

    /// The mean.
    pub fn mean(&self) -> f64 {
        match self {
            Dist::Fixed(v) => *v,
            Dist::Uniform(_, m) | Dist::Exponential(_, m) | Dist::Lognormal(_, m) => *m,
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
    fn noise_has_unit_mean() {
        let n = unit_mean_noise(0.3).unwrap();
        let mut rng = SimRng::seed_from_u64(9);
        let mean: f64 = (0..50_000).map(|_| n.sample(&mut rng)).sum::<f64>() / 50_000.0;
        assert!((mean - 1.0).abs() < 0.01, "{mean}");
    }
}
