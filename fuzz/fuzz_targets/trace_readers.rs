//! Any bytes as a trace file, read by every per-request and binned reader: errors are fine, panics are not.
#![no_main]

use std::io::Write;

use hyscale_traces::{AzureLlmReader, RequestFormat, RequestReader};
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
});
