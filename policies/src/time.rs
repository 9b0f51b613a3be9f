//! Integer time shared by the simulator and the live backend.
//!
//! Time is a count of nanoseconds in a `u64` newtype. The simulator counts from the start of the run; the
//! backend counts from the moment its clock was started. `f64` seconds appear only at the boundaries
//! (configuration files and reports), never in the core, so that event order never depends on rounding.
//!
//! Arithmetic never wraps: `+` saturates at [`Nanos::MAX`] ("never"), `-` at zero (and asserts in debug
//! builds, where a negative duration is a bug), and the constructors saturate.

use std::fmt;
use std::ops::{Add, AddAssign, Sub};

/// A point in time or a duration, in nanoseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Nanos(pub u64);

impl Nanos {
    /// Zero: the start of a run, or an empty duration.
    pub const ZERO: Nanos = Nanos(0);
    /// The largest representable time, used as "never".
    pub const MAX: Nanos = Nanos(u64::MAX);

    /// Whole seconds.
    pub const fn from_secs(s: u64) -> Nanos {
        Nanos(s.saturating_mul(1_000_000_000))
    }

    /// Whole milliseconds.
    pub const fn from_millis(ms: u64) -> Nanos {
        Nanos(ms.saturating_mul(1_000_000))
    }

    /// Whole microseconds.
    pub const fn from_micros(us: u64) -> Nanos {
        Nanos(us.saturating_mul(1_000))
    }

    /// Seconds as a float, rounded to the nearest nanosecond (half away from zero); negative or non-finite
    /// input gives zero and values past the range saturate. The simulator converts each sampled service time
    /// with it, so it is kept cheap.
    #[inline]
    pub fn from_secs_f64(s: f64) -> Nanos {
        Nanos::scaled(s, 1e9)
    }

    /// Milliseconds as a float, as [`Nanos::from_secs_f64`]: `ms × 10^6` rounded once (converting to
    /// seconds first would round twice, and can differ by a nanosecond on a half).
    #[inline]
    pub fn from_millis_f64(ms: f64) -> Nanos {
        Nanos::scaled(ms, 1e6)
    }

    /// `x × ns_per_unit` rounded to the nearest nanosecond; zero for negative or non-finite `x`, saturating.
    #[inline]
    fn scaled(x: f64, ns_per_unit: f64) -> Nanos {
        // Positive and finite, as two float comparisons (NaN fails both): `is_finite() && x > 0.0` compiled to
        // some twenty integer instructions classifying the bits, on every sampled duration.
        if !(x > 0.0 && x <= f64::MAX) {
            return Nanos::ZERO;
        }
        let ns = x * ns_per_unit;
        if ns >= u64::MAX as f64 { Nanos::MAX } else { Nanos(nearest(ns)) }
    }

    /// This time in seconds, for reports.
    pub fn as_secs_f64(self) -> f64 {
        self.0 as f64 / 1e9
    }

    /// This time in milliseconds, for reports.
    pub fn as_millis_f64(self) -> f64 {
        self.0 as f64 / 1e6
    }

    /// `self - other`, or zero when `other` is later.
    pub fn saturating_sub(self, other: Nanos) -> Nanos {
        Nanos(self.0.saturating_sub(other.0))
    }

    /// `self + other`, saturating at [`Nanos::MAX`].
    pub fn saturating_add(self, other: Nanos) -> Nanos {
        Nanos(self.0.saturating_add(other.0))
    }

    /// `self × factor` rounded to the nearest nanosecond (halves away from zero), at least 1 ns: a duration
    /// scaled by a noise factor. Whatever rounds below 1 ns (a zero duration, a tiny, non-positive or NaN
    /// factor) gives 1 ns, an overflow `Nanos::MAX`. The same
    /// figure as `(self as f64 × factor).round().max(1.0) as u64`, without the library call `round` is (2% of
    /// the VM workload's time).
    #[inline]
    pub fn scaled_by(self, factor: f64) -> Nanos {
        let x = self.0 as f64 * factor;
        if x > 0.0 {
            Nanos(if x >= u64::MAX as f64 { u64::MAX } else { nearest(x) }.max(1))
        } else {
            // Not positive, or NaN.
            Nanos(1)
        }
    }

    /// Rounds up to a whole multiple of `unit` (billing granularity). A zero unit returns `self`.
    #[inline]
    pub fn round_up_to(self, unit: Nanos) -> Nanos {
        if unit.0 == 0 {
            return self;
        }
        Nanos(self.0.div_ceil(unit.0).saturating_mul(unit.0))
    }
}

impl Add for Nanos {
    type Output = Nanos;
    fn add(self, rhs: Nanos) -> Nanos {
        self.saturating_add(rhs)
    }
}

impl AddAssign for Nanos {
    fn add_assign(&mut self, rhs: Nanos) {
        *self = self.saturating_add(rhs);
    }
}

impl Sub for Nanos {
    type Output = Nanos;
    fn sub(self, rhs: Nanos) -> Nanos {
        debug_assert!(self.0 >= rhs.0, "time went backwards: {} - {}", self.0, rhs.0);
        self.saturating_sub(rhs)
    }
}

impl fmt::Display for Nanos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:.3}s", self.as_secs_f64())
    }
}

/// How live wall-clock time relates to the model time a policy runs on (the live backend's `time_scale`).
///
/// A policy runs on model time in both halves: its control interval, cooldowns, grace periods, keep-alive
/// windows, arrival-count interval, provisioning delays and spot notices are all model durations. Live, the
/// cloud's slow processes run `scale` times as long on the wall clock (`0.1`: ten times faster), so the
/// controller shows the policy `wall / scale` and carries out the durations it asks for as `model × scale`.
/// Work that cannot be compressed (an inference, a request's latency, a real cold start) is not converted.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TimeScale(f64);

impl TimeScale {
    /// Real time: model time is wall time.
    pub const REAL: TimeScale = TimeScale(1.0);

    /// A scale; `None` unless finite and positive.
    pub fn new(scale: f64) -> Option<TimeScale> {
        (scale.is_finite() && scale > 0.0).then_some(TimeScale(scale))
    }

    /// The factor (wall seconds per model second).
    pub fn factor(self) -> f64 {
        self.0
    }

    /// A wall-clock time or duration as model time.
    pub fn to_model(self, wall: Nanos) -> Nanos {
        if self.0 == 1.0 || wall == Nanos::MAX { wall } else { Nanos::from_secs_f64(wall.as_secs_f64() / self.0) }
    }

    /// A model time or duration as wall-clock time.
    pub fn to_wall(self, model: Nanos) -> Nanos {
        if self.0 == 1.0 || model == Nanos::MAX { model } else { Nanos::from_secs_f64(model.as_secs_f64() * self.0) }
    }
}

/// `x.round() as u64` (half away from zero) for `0 <= x < 2^64`, without the library call `round` compiles
/// to: the integer part, plus one when the fraction reaches one half (exact: below 2^53 both parts are
/// representable, and from there on `x` is whole). Below 2^63 through signed conversions, one instruction
/// each way on x86-64 (the unsigned ones are several).
#[inline]
fn nearest(x: f64) -> u64 {
    if x < 9_223_372_036_854_775_808.0 {
        let whole = x as i64;
        whole as u64 + u64::from(x - whole as f64 >= 0.5)
    } else {
        // Whole already (2^63 and up).
        x as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversions_round_trip() {
        assert_eq!(Nanos::from_secs(30), Nanos(30_000_000_000));
        assert_eq!(Nanos::from_millis_f64(0.5), Nanos(500_000));
        assert_eq!(Nanos::from_secs_f64(-1.0), Nanos::ZERO);
        assert_eq!(Nanos::from_secs_f64(f64::NAN), Nanos::ZERO);
        // Non-finite is zero, either way; the smallest positive double rounds to zero; the largest saturates.
        assert_eq!(Nanos::from_secs_f64(f64::INFINITY), Nanos::ZERO);
        assert_eq!(Nanos::from_millis_f64(f64::NEG_INFINITY), Nanos::ZERO);
        assert_eq!(Nanos::from_secs_f64(-0.0), Nanos::ZERO);
        assert_eq!(Nanos::from_secs_f64(f64::MIN_POSITIVE / 4.0), Nanos::ZERO);
        assert_eq!(Nanos::from_secs_f64(f64::MAX), Nanos::MAX);
        assert_eq!(Nanos::from_secs_f64(1e-9), Nanos(1));
        assert_eq!(Nanos::from_millis(1500).as_secs_f64(), 1.5);
    }

    #[test]
    fn scaling_by_a_factor_rounds_as_the_float_formula_did() {
        let old = |t: Nanos, f: f64| Nanos((t.0 as f64 * f).round().max(1.0) as u64);
        let times = [0, 1, 2, 3, 999, 1_000_000, 12_345_678_901, 1 << 53, (1 << 53) + 1, u64::MAX / 3, u64::MAX];
        let factors = [0.0, 1e-12, 0.25, 0.5, 0.9999999999, 1.0, 1.5, 2.5, 3.7e8, 1e300, f64::INFINITY, -1.0];
        for &t in &times {
            for &f in &factors {
                assert_eq!(Nanos(t).scaled_by(f), old(Nanos(t), f), "{t} x {f}");
            }
        }
        assert_eq!(Nanos(10).scaled_by(f64::NAN), Nanos(1));
        assert_eq!(Nanos(3).scaled_by(0.5), Nanos(2));
    }

    #[test]
    fn rounds_to_the_nearest_integer_as_f64_round_does() {
        // Halves, the largest double below one half, the edges of exact integers, then doubles of every
        // magnitude up to the saturation point from their bit patterns.
        let mut xs =
            vec![0.0, 0.5, 1.5, 2.5, 0.49999999999999994, 1e9 + 0.5, 4503599627370495.5, 9007199254740993.0, 1.2e19];
        let mut bits = 0x9E37_79B9_7F4A_7C15u64;
        for _ in 0..100_000 {
            bits ^= bits << 13;
            bits ^= bits >> 7;
            bits ^= bits << 17;
            // Exponents from 2^-64 to 2^63, any mantissa.
            let x = f64::from_bits((bits & 0x800F_FFFF_FFFF_FFFF) & !(1 << 63) | ((959 + (bits >> 52) % 127) << 52));
            xs.push(x);
        }
        for x in xs {
            assert!(x < u64::MAX as f64);
            assert_eq!(nearest(x), x.round() as u64, "{x:e}");
        }
        assert_eq!(Nanos::from_secs_f64(1.0000000005), Nanos(1_000_000_001));
        assert_eq!(Nanos::from_secs_f64(1.9e10), Nanos::MAX);
        assert_eq!(nearest(9_223_372_036_854_775_808.0), 1 << 63);
        assert_eq!(Nanos::from_millis_f64(0.0000005), Nanos(1));
        assert_eq!(Nanos::from_millis_f64(1.9e13), Nanos::MAX);
        assert_eq!(Nanos::from_millis_f64(f64::NAN), Nanos::ZERO);
    }

    #[test]
    fn arithmetic_saturates_instead_of_wrapping() {
        assert_eq!(Nanos::MAX + Nanos(1), Nanos::MAX);
        let mut t = Nanos(u64::MAX - 1);
        t += Nanos(5);
        assert_eq!(t, Nanos::MAX);
        assert_eq!(Nanos::from_secs(u64::MAX / 10), Nanos::MAX);
        assert_eq!(Nanos::from_millis(5) - Nanos::from_millis(2), Nanos::from_millis(3));
    }

    #[test]
    fn rounding_up_to_a_billing_unit() {
        let ms = Nanos::from_millis(1);
        assert_eq!(Nanos(1).round_up_to(ms), ms);
        assert_eq!(Nanos::from_millis(3).round_up_to(ms), Nanos::from_millis(3));
        assert_eq!(Nanos(3_000_001).round_up_to(ms), Nanos::from_millis(4));
        assert_eq!(Nanos::ZERO.round_up_to(ms), Nanos::ZERO);
    }

    #[test]
    fn a_time_scale_converts_both_ways_and_leaves_never_alone() {
        let tenth = TimeScale::new(0.1).unwrap();
        // 300 s of cooldown last 30 s on the wall clock; 4.8 s of wall clock are 48 s of model time.
        assert_eq!(tenth.to_wall(Nanos::from_secs(300)), Nanos::from_secs(30));
        assert_eq!(tenth.to_model(Nanos::from_millis(4800)), Nanos::from_secs(48));
        assert_eq!(tenth.to_model(Nanos::MAX), Nanos::MAX);
        assert_eq!(TimeScale::REAL.to_wall(Nanos(7)), Nanos(7));
        assert_eq!(TimeScale::new(0.0), None);
        assert_eq!(TimeScale::new(f64::NAN), None);
    }
}
