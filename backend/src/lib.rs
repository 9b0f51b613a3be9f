//! The live half of hyscale.
//!
//! For now this crate holds the wall clock through which the live backend will drive the same policy
//! objects the simulator drives: it implements the [`Clock`] seam of `hyscale-policies` on
//! [`std::time::Instant`], so live runs measure time in the same integer nanoseconds the simulator uses.
//! The inference server, workers and controller land here with the live-backend issue.

pub mod batcher;
pub mod engine;
pub mod fsd;
pub mod lambda;
pub mod live;
pub mod replay;
pub mod server;

use std::time::Instant;

pub use hyscale_policies::Clock;
use hyscale_policies::Nanos;

/// The wall clock, as nanoseconds since the clock was started. Monotonic: it never goes back.
#[derive(Clone, Copy, Debug)]
pub struct WallClock {
    start: Instant,
}

impl WallClock {
    /// A clock reading zero now.
    pub fn start() -> WallClock {
        WallClock { start: Instant::now() }
    }

    /// The wall-clock instant that corresponds to `t` on this clock (for sleeping until a deadline).
    pub fn instant_at(&self, t: Nanos) -> Instant {
        self.start + std::time::Duration::from_nanos(t.0)
    }
}

impl Clock for WallClock {
    fn now(&self) -> Nanos {
        Nanos(u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wall_clock_starts_near_zero_and_moves_forward() {
        let c = WallClock::start();
        let a = c.now();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = c.now();
        assert!(b > a, "{a} then {b}");
        assert!(b >= Nanos::from_millis(2));
        assert!(c.instant_at(b) <= Instant::now());
    }
}
