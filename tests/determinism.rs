//! Same seed and inputs, same bytes; another seed, other bytes.

use std::path::Path;

use hyscale_sim::{Scenario, run_scenario};

fn report_bytes(path: &str, seed: Option<u64>) -> String {
    let mut s = Scenario::load(Path::new(path)).expect("shipped scenario loads");
    if let Some(seed) = seed {
        s.file.seed = seed;
    }
    serde_json::to_string(&run_scenario(&s).expect("runs")).expect("serialises")
}

#[test]
fn the_same_seed_gives_identical_report_bytes() {
    for path in ["scenarios/conv_static.toml", "scenarios/conv_function_only.toml", "scenarios/code_spot.toml"] {
        assert_eq!(report_bytes(path, None), report_bytes(path, None), "{path} is not deterministic");
    }
}

#[test]
fn another_seed_gives_other_bytes() {
    let a = report_bytes("scenarios/conv_static.toml", Some(1));
    let b = report_bytes("scenarios/conv_static.toml", Some(2));
    assert_ne!(a, b);
    let a = report_bytes("scenarios/poisson_gpu_batching.toml", Some(1));
    let b = report_bytes("scenarios/poisson_gpu_batching.toml", Some(2));
    assert_ne!(a, b);
}
