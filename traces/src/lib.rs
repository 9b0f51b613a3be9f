//! Request arrival traces, read as streams and generated from seeds.
//!
//! Every source is an iterator of [`Arrival`]s in time order, yielding `Result` so that a malformed row
//! ends the stream with an error naming the file, line and column instead of a panic. Nothing here holds
//! a whole trace in memory.
//!
//! ```
//! use hyscale_traces::{Poisson, Arrival};
//!
//! // Ten seconds of Poisson arrivals at 5 per second, seeded.
//! let arrivals: Vec<Arrival> = Poisson::new(5.0, 10.0, 7).unwrap().map(Result::unwrap).collect();
//! assert!(arrivals.windows(2).all(|w| w[0].time <= w[1].time));
//! ```

mod azure_llm;
mod error;
mod generate;
mod spec;

pub use azure_llm::AzureLlmReader;
pub use error::TraceError;
pub use generate::Poisson;
pub use hyscale_policies::Nanos;
pub use spec::TraceSpec;

/// One request arrival.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Arrival {
    /// Time since the start of the trace.
    pub time: Nanos,
    /// Model or function id (0 when the source has a single one).
    pub model: u32,
    /// Size of the request's input where the source has it (tokens for LLM traces), else 0.
    pub input_size: u32,
    /// Size of the request's output where the source has it, else 0.
    pub output_size: u32,
}

/// A boxed stream of arrivals, as a scenario opens it.
pub type ArrivalStream = Box<dyn Iterator<Item = Result<Arrival, TraceError>> + Send>;
