//! The clock seam: where "now" comes from.
//!
//! The simulator's clock is the time of the event being handled; the live backend's is the wall clock
//! (`hyscale_backend::WallClock`). Code that must run in both reads time only through this trait.

use crate::time::Nanos;

/// A source of the current time, as nanoseconds since the run started.
pub trait Clock {
    /// The time now.
    fn now(&self) -> Nanos;
}
