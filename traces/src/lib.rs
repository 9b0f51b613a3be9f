//! Request arrival traces, read as streams and generated from seeds.
//!
//! Every source is an iterator of [`Arrival`]s in time order, yielding `Result` so that a malformed row
//! ends the stream with an error naming the file, line and column instead of a panic. Nothing here holds
//! a trace's arrivals in memory: files are read row by row (binned traces one bin at a time), generators
//! draw as they go, and transforms wrap streams.
//!
//! - per-request files: the Azure LLM 2023 CSV ([`AzureLlmReader`]) and generic CSV / JSON Lines with
//!   configurable columns ([`RequestReader`], which also reads the canonical CSV of `hyscale trace convert`);
//! - per-minute counts per function: the Azure Functions 2019 schema ([`AzureFunctionsReader`]);
//! - per-bin count series, straight from a `.tbz2` ([`CountSeriesReader`], the NASA 1995 trace);
//! - generators ([`GeneratorSpec`]): Poisson, 2-state MMPP, diurnal, surge, gamma renewal;
//! - transforms ([`transform`]): window, rate scaling, time compression, k-way merge, model mix;
//! - [`TraceSpec`] names any of them in a scenario or on the command line; [`TraceStats`] summarises a stream.
//!
//! ```
//! use hyscale_traces::{Arrival, GeneratorSpec};
//!
//! // Ten seconds of Poisson arrivals at 5 per second, seeded.
//! let spec = GeneratorSpec::Poisson { rate_per_s: 5.0, duration_s: 10.0 };
//! let arrivals: Vec<Arrival> = spec.open(7).unwrap().map(Result::unwrap).collect();
//! assert!(arrivals.windows(2).all(|w| w[0].time <= w[1].time));
//! ```

mod azure_functions;
mod azure_llm;
mod count_series;
mod counts;
mod error;
mod generate;
mod keysort;
mod per_request;
mod spec;
mod stats;
pub mod transform;

pub use azure_functions::{AzureFunctionsReader, AzureFunctionsSpec, DurationPercentiles, FunctionInfo, Selection};
pub use azure_llm::AzureLlmReader;
pub use count_series::{CountSeriesReader, CountSeriesSpec, Outage, OutageMode, OutageRule};
pub use counts::Spread;
pub use error::TraceError;
pub use generate::{Generator, GeneratorSpec};
pub use hyscale_policies::Nanos;
pub use per_request::{CANONICAL_HEADER, Origin, RequestFormat, RequestReader, Syntax, TimeUnit, write_canonical};
pub use spec::{SourceSpec, TraceSpec, TransformSpec};
pub use stats::{BinStats, TraceStats};

/// One request arrival.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
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

/// An iterator of arrivals that can also be seen as its own type (`Any`), for [`read_chunk`]'s fast paths.
/// Every `Iterator<Item = Result<Arrival, TraceError>> + Send + 'static` is one.
pub trait ArrivalIter: Iterator<Item = Result<Arrival, TraceError>> + Send + std::any::Any {}

impl<T: Iterator<Item = Result<Arrival, TraceError>> + Send + std::any::Any> ArrivalIter for T {}

/// A boxed stream of arrivals, as a scenario opens it.
pub type ArrivalStream = Box<dyn ArrivalIter>;

/// The stream's own reader when it is an Azure Functions one. The boxed value is looked at, not the box
/// (which, an iterator too, is also an `ArrivalIter`).
fn azure_functions_reader(stream: &mut ArrivalStream) -> Option<&mut AzureFunctionsReader> {
    let inner: &mut dyn std::any::Any = &mut **stream;
    inner.downcast_mut()
}

/// The stream's own generator when it is a synthetic one, as [`azure_functions_reader`].
fn generator(stream: &mut ArrivalStream) -> Option<&mut generate::Generator> {
    let inner: &mut dyn std::any::Any = &mut **stream;
    inner.downcast_mut()
}

/// How [`read_chunk`] stopped.
#[derive(Debug)]
pub enum ChunkEnd {
    /// It read as many as asked; the stream may have more.
    Full,
    /// The stream has no more arrivals.
    Ended,
    /// The stream failed after the arrivals read (it is not to be read again).
    Failed(TraceError),
}

/// Appends up to `max` arrivals of `stream` to `out`. The same arrivals, in the same order, as calling
/// `next` until then; the Azure Functions reader writes them straight from its sorted minute, and a
/// synthetic generator in one loop, instead of one call at a time (the engine's profile showed each
/// arrival waiting on the value its call had just written).
pub fn read_chunk(stream: &mut ArrivalStream, out: &mut Vec<Arrival>, max: usize) -> ChunkEnd {
    if let Some(reader) = azure_functions_reader(stream) {
        return if reader.read_into(out, max) { ChunkEnd::Ended } else { ChunkEnd::Full };
    }
    if let Some(generator) = generator(stream) {
        return if generator.read_into(out, max) { ChunkEnd::Ended } else { ChunkEnd::Full };
    }
    let wanted = out.len() + max;
    while out.len() < wanted {
        match stream.next() {
            Some(Ok(a)) => out.push(a),
            Some(Err(e)) => return ChunkEnd::Failed(e),
            None => return ChunkEnd::Ended,
        }
    }
    ChunkEnd::Full
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn the_fast_path_finds_the_azure_functions_reader_in_its_box() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("invocations.csv");
        std::fs::write(&path, "HashOwner,HashApp,HashFunction,Trigger,1\no,a,f,http,2\n").unwrap();
        let spec = AzureFunctionsSpec {
            path,
            spread: Spread::Even,
            select: Selection::default(),
            durations: None,
            memory: None,
        };
        let mut stream: ArrivalStream = Box::new(AzureFunctionsReader::open(&spec, Path::new(""), 1).unwrap());
        assert!(azure_functions_reader(&mut stream).is_some());
        let mut other: ArrivalStream = Box::new(Vec::new().into_iter());
        assert!(azure_functions_reader(&mut other).is_none());
        assert!(generator(&mut other).is_none());
    }

    #[test]
    fn a_generators_chunks_are_its_arrivals_one_by_one() {
        let spec = GeneratorSpec::Poisson { rate_per_s: 40.0, duration_s: 60.0 };
        let one_by_one: Vec<Arrival> = spec.open(3).unwrap().map(|a| a.unwrap()).collect();
        assert!(one_by_one.len() > 2000, "{}", one_by_one.len());
        let mut stream: ArrivalStream = Box::new(spec.open(3).unwrap());
        assert!(generator(&mut stream).is_some());
        let mut out = Vec::new();
        // Chunks of 1,000 then the end: an empty last chunk when the count is a multiple, as from `next`.
        let mut ends = Vec::new();
        loop {
            let end = read_chunk(&mut stream, &mut out, 1000);
            let ended = matches!(end, ChunkEnd::Ended);
            ends.push(ended);
            if ended {
                break;
            }
        }
        assert_eq!(out, one_by_one);
        assert_eq!(ends.len(), one_by_one.len() / 1000 + 1);
        assert!(matches!(read_chunk(&mut stream, &mut out, 1000), ChunkEnd::Ended));
        assert_eq!(out.len(), one_by_one.len());
    }

    #[test]
    fn a_chunk_of_any_stream_stops_at_its_error_or_end() {
        let a = |s| Arrival { time: Nanos::from_secs(s), model: 0, input_size: 0, output_size: 0 };
        let items = vec![Ok(a(1)), Ok(a(2)), Err(TraceError::InvalidParameters("row 3".into())), Ok(a(4))];
        let mut stream: ArrivalStream = Box::new(items.into_iter());
        let mut out = Vec::new();
        assert!(matches!(read_chunk(&mut stream, &mut out, 1), ChunkEnd::Full));
        assert!(
            matches!(read_chunk(&mut stream, &mut out, 5), ChunkEnd::Failed(TraceError::InvalidParameters(m)) if m == "row 3")
        );
        assert_eq!(out, [a(1), a(2)]);
        let mut stream: ArrivalStream = Box::new(vec![Ok(a(1))].into_iter());
        out.clear();
        assert!(matches!(read_chunk(&mut stream, &mut out, 5), ChunkEnd::Ended));
        assert_eq!(out, [a(1)]);
    }
}
