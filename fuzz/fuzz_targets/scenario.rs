//! Any text as a scenario file, loaded and checked against the shipped catalog and profile (paths in it are
//! relative to `scenarios/`). Errors are fine, panics are not.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(file) = toml::from_str::<hyscale_sim::scenario::ScenarioFile>(text) else { return };
    let base = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios");
    let _ = hyscale_sim::Scenario::from_file(&base.join("fuzz.toml"), base, file);
});
