//! The event `hyscale-fn` takes and the answer it gives, as JSON.
//!
//! Tensors are written as in the Open Inference Protocol's JSON (`name`, `shape`, `datatype`, flat
//! row-major `data`), so a router can forward the `inputs` of a v2 infer request to a function unchanged:
//!
//! ```json
//! {"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32", "data": [0.1, 0.2, ...]}]}
//! ```
//!
//! and gets back
//!
//! ```json
//! {"model_name": "mlp", "engine": "tract", "outputs": [{"name": "logits", "shape": [1, 10], "datatype": "FP32", "data": [...]}]}
//! ```

use serde::{Deserialize, Serialize};

/// The datatype name of 32-bit floats in the Open Inference Protocol.
pub const FP32: &str = "FP32";

/// One tensor: its name, shape, datatype and flat row-major data.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Tensor {
    /// The model input or output it binds to (empty: the model's first input).
    #[serde(default)]
    pub name: String,
    /// Its shape, batch dimension first.
    pub shape: Vec<usize>,
    /// Its datatype; only `FP32` is served.
    #[serde(default = "fp32")]
    pub datatype: String,
    /// Its elements, row-major.
    pub data: Vec<f32>,
}

fn fp32() -> String {
    FP32.to_owned()
}

/// The event: the inputs of one batch.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InferEvent {
    /// The input tensors.
    pub inputs: Vec<Tensor>,
    /// Extra milliseconds the function waits before answering: a synthetic service time, to emulate a
    /// slower model or to hold a sandbox busy in tests. Absent or 0 in normal use.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub sleep_ms: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// The answer: the outputs of the batch.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InferResult {
    /// The model's name (its file stem).
    pub model_name: String,
    /// The inference engine that ran it.
    pub engine: String,
    /// The output tensors.
    pub outputs: Vec<Tensor>,
}

impl Tensor {
    /// An `FP32` tensor.
    pub fn fp32(name: impl Into<String>, shape: Vec<usize>, data: Vec<f32>) -> Tensor {
        Tensor { name: name.into(), shape, datatype: fp32(), data }
    }
}
