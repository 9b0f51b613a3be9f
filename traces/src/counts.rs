//! Turning counts per time bin into arrival times: the one modelling choice that binned traces force.

use rand::RngExt;
use rand_distr::{Distribution, Poisson as PoissonDist};
use rand_pcg::Pcg64Mcg;
use serde::Deserialize;

use crate::Nanos;

/// Most requests one bin may hold (a minute of the Azure Functions trace, all selected functions together; a
/// bin of a count series): a bin's arrivals are made, buffered and sorted at once, 8 bytes each (about 24
/// with the Azure Functions reader's sort's working memory), so this bounds the buffers at 1–3 GiB. A count of billions (a corrupt or made-up file) is an error naming it, not
/// an allocation the machine cannot make.
pub(crate) const MAX_PER_BIN: u64 = 1 << 27;

/// How a bin's count of requests is spread over the bin. Binned traces do not say when inside a bin each
/// request came; the choice is the user's and is never made silently.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Spread {
    /// Evenly spaced: request `i` of `n` at `(i + 0.5) / n` of the bin. Deterministic; the smoothest arrivals.
    Even,
    /// Each request at an independent uniform point of the bin (seeded): a Poisson process conditioned on the
    /// bin's count. Keeps every count exactly.
    Uniform,
    /// A Poisson process at the bin's mean rate (seeded): the number in a bin is itself Poisson with the
    /// trace's count as its mean, so totals match only in expectation.
    Poisson,
}

impl Spread {
    /// Its name, as in specs.
    pub fn name(self) -> &'static str {
        match self {
            Spread::Even => "even",
            Spread::Uniform => "uniform",
            Spread::Poisson => "poisson",
        }
    }

    /// Parses a name.
    pub fn from_name(name: &str) -> Option<Spread> {
        match name {
            "even" => Some(Spread::Even),
            "uniform" => Some(Spread::Uniform),
            "poisson" => Some(Spread::Poisson),
            _ => None,
        }
    }

    /// Appends the arrival times of `count` requests in the bin `[start, start + len)` to `out`, unsorted
    /// for the random spreads (`out` may turn each time into what its reader keeps, with no copy between).
    pub(crate) fn place(self, start: Nanos, len: Nanos, count: u32, rng: &mut Pcg64Mcg, out: &mut impl Extend<Nanos>) {
        if count == 0 && self != Spread::Poisson {
            return;
        }
        let len_ns = len.0 as f64;
        match self {
            Spread::Even => {
                let step = len_ns / count as f64;
                out.extend((0..count).map(|i| Nanos(start.0 + ((i as f64 + 0.5) * step) as u64)));
            }
            Spread::Uniform => {
                out.extend((0..count).map(|_| Nanos(start.0 + (rng.random::<f64>() * len_ns) as u64)));
            }
            Spread::Poisson => {
                if count == 0 {
                    return;
                }
                let n = PoissonDist::new(count as f64).map(|d| d.sample(rng) as u64).unwrap_or(0);
                out.extend((0..n).map(|_| Nanos(start.0 + (rng.random::<f64>() * len_ns) as u64)));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn even_and_uniform_keep_counts_inside_the_bin() {
        let mut rng = Pcg64Mcg::seed_from_u64(1);
        let mut out = Vec::new();
        Spread::Even.place(Nanos::from_secs(60), Nanos::from_secs(60), 4, &mut rng, &mut out);
        assert_eq!(out, [67_500, 82_500, 97_500, 112_500].map(Nanos::from_millis));
        out.clear();
        Spread::Uniform.place(Nanos::from_secs(60), Nanos::from_secs(60), 1000, &mut rng, &mut out);
        assert_eq!(out.len(), 1000);
        assert!(out.iter().all(|t| (Nanos::from_secs(60)..Nanos::from_secs(120)).contains(t)));
    }

    #[test]
    fn poisson_spread_keeps_the_count_in_expectation() {
        let mut rng = Pcg64Mcg::seed_from_u64(2);
        let mut out = Vec::new();
        for _ in 0..1000 {
            Spread::Poisson.place(Nanos::ZERO, Nanos::from_secs(1), 20, &mut rng, &mut out);
        }
        // Mean 20 000, standard deviation sqrt(20 000) = 141: five sigma is 707.
        assert!((out.len() as i64 - 20_000).abs() < 707, "{}", out.len());
    }
}
