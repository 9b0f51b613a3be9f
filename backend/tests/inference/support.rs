//! Shared helpers: the models, their fixed inputs and expected outputs, the tract engine.

use std::path::PathBuf;

use hyscale_backend::engine::{Engine, EngineChoice, EngineConfig, Tensor};
use serde_json::Value;

/// The generated models' folder.
pub fn models() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models")
}

/// A model file.
pub fn model(name: &str) -> PathBuf {
    models().join(name)
}

/// The fixed input of gen_models.py: x[i] = ((i * 37) mod 101) / 50 - 1 over the flattened tensor.
pub fn fixed_input(shape: &[usize]) -> Tensor {
    let n: usize = shape.iter().product();
    let data = (0..n).map(|i| ((i * 37) % 101) as f32 / 50.0 - 1.0).collect();
    Tensor::new(shape.to_vec(), data).expect("shape and data agree")
}

/// Rows `from..to` of a tensor.
pub fn rows(t: &Tensor, from: usize, to: usize) -> Tensor {
    let row_len: usize = t.shape[1..].iter().product();
    let mut shape = t.shape.clone();
    shape[0] = to - from;
    Tensor::new(shape, t.data[from * row_len..to * row_len].to_vec()).expect("rows")
}

/// One case of expected.json.
pub struct Case {
    pub model: String,
    pub input_shape: Vec<usize>,
    pub output_shape: Vec<usize>,
    pub output: Vec<f32>,
}

/// The cases of expected.json and its tolerance.
pub fn expected() -> (Vec<Case>, f32) {
    let text = std::fs::read_to_string(models().join("expected.json")).expect("reading expected.json");
    let json: Value = serde_json::from_str(&text).expect("parsing expected.json");
    let dims = |v: &Value| -> Vec<usize> {
        v.as_array().expect("a shape").iter().map(|d| d.as_u64().expect("a dimension") as usize).collect()
    };
    let cases = json["cases"]
        .as_array()
        .expect("cases")
        .iter()
        .map(|c| Case {
            model: c["model"].as_str().expect("model").to_string(),
            input_shape: dims(&c["input"]["shape"]),
            output_shape: dims(&c["output"]["shape"]),
            output: c["output"]["data"].as_array().expect("data").iter().map(|v| v.as_f64().unwrap() as f32).collect(),
        })
        .collect();
    (cases, json["tolerance"].as_f64().expect("tolerance") as f32)
}

/// The largest absolute difference between two tensors of the same shape.
pub fn max_diff(got: &Tensor, want_shape: &[usize], want: &[f32]) -> f32 {
    assert_eq!(got.shape, want_shape, "output shape");
    got.data.iter().zip(want).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max)
}

/// This process's engine: tract, one thread.
pub fn tract() -> &'static Engine {
    let config = EngineConfig { engine: EngineChoice::Tract, intra_threads: Some(1), ..EngineConfig::default() };
    Engine::init(&config).expect("starting tract")
}

/// Every case of expected.json on `engine`, within the tolerance.
pub fn check_expected_outputs(engine: &Engine) {
    let (cases, tolerance) = expected();
    assert!(cases.len() >= 3, "expected.json has {} cases", cases.len());
    for case in cases {
        let mut session = engine.load(&model(&case.model)).expect("loading");
        let out = session.run(&[fixed_input(&case.input_shape)]).expect("running");
        assert_eq!(out.len(), 1);
        let diff = max_diff(&out[0], &case.output_shape, &case.output);
        println!("{} on {}: max |diff| {diff:.2e} (tolerance {tolerance:.0e})", case.model, engine.describe());
        assert!(diff <= tolerance, "{}: max |diff| {diff} > {tolerance}", case.model);
    }
}
