//! Any bytes as a trace file, read by every per-request reader and the Azure Functions one: errors are fine,
//! panics (and allocations no machine can make) are not.
#![no_main]

use std::io::Write;

use hyscale_traces::{AzureFunctionsReader, AzureFunctionsSpec, AzureLlmReader, RequestFormat, RequestReader, Spread};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(mut file) = tempfile::NamedTempFile::new() else { return };
    if file.write_all(data).is_err() {
        return;
    }
    let path = file.path();
    if let Ok(r) = AzureLlmReader::open(path) {
        r.take(10_000).for_each(drop);
    }
    if let Ok(r) = RequestReader::open(path, RequestFormat::canonical()) {
        r.take(10_000).for_each(drop);
    }
    if let Ok(r) = RequestReader::open(path, RequestFormat::canonical_jsonl()) {
        r.take(10_000).for_each(drop);
    }
    // As an Azure Functions invocations file (counts per minute, read as bytes).
    let spec = AzureFunctionsSpec {
        path: path.to_path_buf(),
        spread: Spread::Uniform,
        select: Default::default(),
        durations: None,
        memory: None,
    };
    if let Ok(r) = AzureFunctionsReader::open(&spec, std::path::Path::new(""), 1) {
        r.take(10_000).for_each(drop);
    }
});
