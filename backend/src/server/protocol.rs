//! The Open Inference Protocol v2 (KServe / Triton) REST messages, and the checks of a request against the
//! model's metadata.
//!
//! Tensors travel as JSON: `{"name", "shape", "datatype", "data"}`, with `data` flat in row-major order or
//! nested as the shape. This server accepts and returns `FP32` only; any other datatype, a wrong name,
//! rank, dimension or element count is a 400 whose message names the input and what is wrong.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::engine::{ElementType, ModelMetadata, TensorInfo};

/// `POST /v2/models/{name}/infer` request.
#[derive(Clone, Debug, Deserialize)]
pub struct InferRequest {
    /// Echoed back in the response.
    #[serde(default)]
    pub id: Option<String>,
    /// Input tensors.
    pub inputs: Vec<RequestTensor>,
    /// Outputs wanted (default: all).
    #[serde(default)]
    pub outputs: Option<Vec<RequestedOutput>>,
    /// Request parameters (accepted, ignored).
    #[serde(default)]
    pub parameters: Option<Value>,
}

/// One input tensor of a request.
#[derive(Clone, Debug, Deserialize)]
pub struct RequestTensor {
    /// Input name.
    pub name: String,
    /// Shape.
    pub shape: Vec<i64>,
    /// Element type (`FP32`).
    pub datatype: String,
    /// Elements, flat or nested (absent when they travel as binary data).
    #[serde(default)]
    pub data: Value,
    /// Tensor parameters (accepted, ignored).
    #[serde(default)]
    pub parameters: Option<Value>,
}

/// An output asked for by name.
#[derive(Clone, Debug, Deserialize)]
pub struct RequestedOutput {
    /// Output name.
    pub name: String,
    /// Output parameters (accepted, ignored).
    #[serde(default)]
    pub parameters: Option<Value>,
}

/// `POST /v2/models/{name}/infer` response.
#[derive(Clone, Debug, Serialize)]
pub struct InferResponse {
    /// The model.
    pub model_name: String,
    /// Its version.
    pub model_version: String,
    /// The request's id, if it had one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Output tensors.
    pub outputs: Vec<ResponseTensor>,
}

/// One output tensor.
#[derive(Clone, Debug, Serialize)]
pub struct ResponseTensor {
    /// Output name.
    pub name: String,
    /// Shape.
    pub shape: Vec<i64>,
    /// `FP32`.
    pub datatype: &'static str,
    /// Elements, flat, row-major.
    pub data: Vec<f32>,
}

/// `GET /v2/models/{name}` response.
#[derive(Clone, Debug, Serialize)]
pub struct MetadataResponse {
    /// The model.
    pub name: String,
    /// Versions served.
    pub versions: Vec<String>,
    /// `onnx`.
    pub platform: &'static str,
    /// Inputs.
    pub inputs: Vec<TensorMetadata>,
    /// Outputs.
    pub outputs: Vec<TensorMetadata>,
}

/// One tensor in the metadata: `-1` marks a dynamic dimension.
#[derive(Clone, Debug, Serialize)]
pub struct TensorMetadata {
    /// Name.
    pub name: String,
    /// Element type, protocol spelling.
    pub datatype: String,
    /// Shape.
    pub shape: Vec<i64>,
}

impl TensorMetadata {
    /// From the engine's view of a tensor.
    pub fn from_info(info: &TensorInfo) -> TensorMetadata {
        TensorMetadata {
            name: info.name.clone(),
            datatype: info.element_type.protocol_name().to_string(),
            shape: info.shape.iter().map(|d| d.protocol_size()).collect(),
        }
    }
}

/// The metadata response for `name` served at `version`.
pub fn metadata_response(name: &str, version: &str, meta: &ModelMetadata) -> MetadataResponse {
    MetadataResponse {
        name: name.to_string(),
        versions: vec![version.to_string()],
        platform: "onnx",
        inputs: meta.inputs.iter().map(TensorMetadata::from_info).collect(),
        outputs: meta.outputs.iter().map(TensorMetadata::from_info).collect(),
    }
}

/// One checked input: its shape and its elements.
#[derive(Clone, Debug, PartialEq)]
pub struct CheckedInput {
    /// Input name.
    pub name: String,
    /// Shape.
    pub shape: Vec<usize>,
    /// Elements, row-major.
    pub data: Vec<f32>,
}

/// Flattens `data` (flat or nested JSON arrays of numbers) into `out`; the error names the first element
/// that is not a number.
fn flatten(value: &Value, out: &mut Vec<f32>, input: &str) -> Result<(), String> {
    match value {
        Value::Array(items) => items.iter().try_for_each(|v| flatten(v, out, input)),
        Value::Number(n) => {
            out.push(n.as_f64().unwrap_or(f64::NAN) as f32);
            Ok(())
        }
        Value::Null if out.is_empty() => Err(format!("input '{input}' has no data")),
        other => Err(format!("input '{input}': element {} is {other}, not a number", out.len())),
    }
}

/// Checks `request` against the model's inputs and returns them in the model's input order.
pub fn check_request(request: &InferRequest, meta: &ModelMetadata) -> Result<Vec<CheckedInput>, String> {
    let mut checked = Vec::with_capacity(meta.inputs.len());
    for info in &meta.inputs {
        let Some(tensor) = request.inputs.iter().find(|t| t.name == info.name) else {
            return Err(format!(
                "missing input '{}' (the model's inputs are: {})",
                info.name,
                meta.inputs.iter().map(|i| i.name.as_str()).collect::<Vec<_>>().join(", ")
            ));
        };
        if tensor.datatype != "FP32" || info.element_type != ElementType::F32 {
            return Err(format!(
                "input '{}' has datatype {}, the model expects {} (this server accepts FP32)",
                tensor.name, tensor.datatype, info.element_type
            ));
        }
        let shape = tensor
            .shape
            .iter()
            .map(|&d| usize::try_from(d).map_err(|_| format!("input '{}': negative dimension {d}", tensor.name)))
            .collect::<Result<Vec<usize>, String>>()?;
        if let Some(problem) = info.shape_mismatch(&shape) {
            return Err(problem);
        }
        let mut data = Vec::with_capacity(shape.iter().product());
        flatten(&tensor.data, &mut data, &tensor.name)?;
        let expected: usize = shape.iter().product();
        if data.len() != expected {
            return Err(format!(
                "input '{}': shape {:?} needs {expected} elements, the data has {}",
                tensor.name,
                shape,
                data.len()
            ));
        }
        checked.push(CheckedInput { name: tensor.name.clone(), shape, data });
    }
    if let Some(extra) = request.inputs.iter().find(|t| !meta.inputs.iter().any(|i| i.name == t.name)) {
        return Err(format!("unknown input '{}'", extra.name));
    }
    Ok(checked)
}
