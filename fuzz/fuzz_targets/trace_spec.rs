//! Any text as a trace spec: a TOML spec file and a `--trace` argument; opened (generators are streamed a
//! little) when they parse. Errors are fine, panics are not.
#![no_main]

use hyscale_traces::TraceSpec;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(spec) = toml::from_str::<TraceSpec>(text)
        && let Ok(stream) = spec.open(std::path::Path::new("/nonexistent"), 0)
    {
        stream.take(1_000).for_each(drop);
    }
    if let Ok(spec) = TraceSpec::from_arg(text)
        && let Ok(stream) = spec.open(std::path::Path::new("/nonexistent"), 0)
    {
        stream.take(1_000).for_each(drop);
    }
});
