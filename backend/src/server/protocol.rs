//! The Open Inference Protocol v2 (KServe / Triton) REST messages, and the checks of a request against the
//! model's metadata.
//!
//! Tensors travel as JSON: `{"name", "shape", "datatype", "data"}`, with `data` flat in row-major order or
//! nested as the shape. This server accepts and returns `FP32` only; any other datatype, a wrong name,
//! rank, dimension or element count is a 400 whose message names the input and what is wrong.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::engine::{BatchDim, ElementType, ModelMetadata, TensorInfo, element_count};

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
    /// Elements, flat or nested (absent when they travel as binary data), read straight into FP32.
    #[serde(default)]
    pub data: TensorData,
    /// Elements that travelled as binary data (Triton's extension), decoded from the body.
    #[serde(skip)]
    pub binary: Option<Vec<f32>>,
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

/// How large a request may be (`[limits]` of a live configuration). Every bound is checked before anything
/// sized by the client is allocated: the body is read at most `max_body_bytes` (413 beyond), shapes are
/// multiplied with overflow checks, and an input's element count and row count are compared with these
/// bounds before its data is decoded.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RequestLimits {
    /// Largest request body, bytes (JSON header and binary tensors together). Default 64 MiB.
    #[serde(default = "max_body_bytes")]
    pub max_body_bytes: usize,
    /// Most elements in one input tensor. Default 16 Mi (64 MiB of FP32).
    #[serde(default = "max_elements")]
    pub max_elements: usize,
    /// Most rows (the batch dimension) in one request. Default 1,024.
    #[serde(default = "max_rows")]
    pub max_rows: usize,
    /// Longest time a client may take to send its body, seconds; then 408. A stalled client holds only
    /// its own connection: the body is read before the request takes a queue or batch slot. Default 10.
    #[serde(default = "body_timeout_s")]
    pub body_timeout_s: f64,
    /// Most inference requests the server holds at once, from reading their body to answering them; beyond,
    /// 503 with `Retry-After` before the body is read. With `max_body_bytes` it bounds the memory requests
    /// can take under any overload. Default 1,024.
    #[serde(default = "max_in_flight")]
    pub max_in_flight: usize,
}

fn max_body_bytes() -> usize {
    64 << 20
}

fn max_elements() -> usize {
    16 << 20
}

fn max_rows() -> usize {
    1024
}

fn body_timeout_s() -> f64 {
    10.0
}

fn max_in_flight() -> usize {
    1024
}

impl Default for RequestLimits {
    fn default() -> RequestLimits {
        RequestLimits {
            max_body_bytes: max_body_bytes(),
            max_elements: max_elements(),
            max_rows: max_rows(),
            body_timeout_s: body_timeout_s(),
            max_in_flight: max_in_flight(),
        }
    }
}

impl RequestLimits {
    /// Checks the bounds themselves; the error names the field.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_body_bytes == 0 || self.max_elements == 0 || self.max_rows == 0 || self.max_in_flight == 0 {
            return Err("[limits]: max_body_bytes, max_elements, max_rows and max_in_flight must be at least 1".into());
        }
        if !(self.body_timeout_s.is_finite() && self.body_timeout_s > 0.0) {
            return Err(format!(
                "[limits]: body_timeout_s must be a positive number of seconds, got {}",
                self.body_timeout_s
            ));
        }
        Ok(())
    }
}

/// A tensor's JSON `data`, read into FP32 while it is parsed — flat or nested arrays of numbers — with no JSON
/// value per element in between (the profile of a CNN's 3,072-element inputs showed that tree as the JSON
/// path's cost). The first element that is not a number is remembered, with its position and JSON text, for
/// the 400 that names it; the rest of the data is still read through (and ignored).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TensorData {
    /// The numbers, row-major.
    pub values: Vec<f32>,
    /// Whether `data` was there (not absent or `null`).
    pub present: bool,
    /// The first element that is not a number: its index among the elements and its JSON text.
    pub not_a_number: Option<(usize, String)>,
}

impl<'de> Deserialize<'de> for TensorData {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<TensorData, D::Error> {
        let mut data = TensorData::default();
        d.deserialize_any(Flatten { data: &mut data, top: true })?;
        Ok(data)
    }
}

/// Reads one JSON value of `data` into a [`TensorData`].
struct Flatten<'a> {
    data: &'a mut TensorData,
    top: bool,
}

impl Flatten<'_> {
    fn number(self, x: f64) {
        self.data.present = true;
        self.data.values.push(x as f32);
    }

    fn not_a_number(self, text: String) {
        if self.top && text == "null" {
            return;
        }
        self.data.present = true;
        if self.data.not_a_number.is_none() {
            self.data.not_a_number = Some((self.data.values.len(), text));
        }
    }
}

impl<'de> serde::de::DeserializeSeed<'de> for Flatten<'_> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Flatten<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("numbers, flat or in nested arrays")
    }
    fn visit_f64<E>(self, x: f64) -> Result<(), E> {
        self.number(x);
        Ok(())
    }
    fn visit_i64<E>(self, x: i64) -> Result<(), E> {
        self.number(x as f64);
        Ok(())
    }
    fn visit_u64<E>(self, x: u64) -> Result<(), E> {
        self.number(x as f64);
        Ok(())
    }
    fn visit_bool<E>(self, b: bool) -> Result<(), E> {
        self.not_a_number(b.to_string());
        Ok(())
    }
    fn visit_str<E>(self, s: &str) -> Result<(), E> {
        self.not_a_number(Value::from(s).to_string());
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        self.not_a_number("null".into());
        Ok(())
    }
    fn visit_none<E>(self) -> Result<(), E> {
        self.not_a_number("null".into());
        Ok(())
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while map.next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?.is_some() {}
        self.not_a_number("an object".into());
        Ok(())
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        self.data.present = true;
        while seq.next_element_seed(Flatten { data: &mut *self.data, top: false })?.is_some() {}
        Ok(())
    }
}

/// The elements of `data` for an input of `expected` elements, or the 400's message: data missing, an
/// element not a number, or more elements than the shape needs.
fn elements(data: &mut TensorData, input: &str, expected: usize) -> Result<Vec<f32>, String> {
    if let Some((i, text)) = &data.not_a_number {
        return Err(format!("input '{input}': element {i} is {text}, not a number"));
    }
    if !data.present {
        return Err(format!("input '{input}' has no data"));
    }
    if data.values.len() > expected {
        return Err(format!("input '{input}': the data has more than the {expected} elements its shape needs"));
    }
    Ok(std::mem::take(&mut data.values))
}

/// The shape of `tensor` as sizes, checked against the model's declaration and `limits`; returns it with
/// its element count. Nothing is allocated from the client's numbers before this passes.
fn checked_shape(
    tensor: &RequestTensor,
    info: &TensorInfo,
    limits: &RequestLimits,
) -> Result<(Vec<usize>, usize), String> {
    let name = &tensor.name;
    let shape = tensor
        .shape
        .iter()
        .map(|&d| usize::try_from(d).map_err(|_| format!("input '{name}': negative dimension {d}")))
        .collect::<Result<Vec<usize>, String>>()?;
    if let Some(problem) = info.shape_mismatch(&shape) {
        return Err(problem);
    }
    let elements = element_count(&shape).filter(|&n| n <= limits.max_elements).ok_or_else(|| {
        format!(
            "input '{name}': shape {shape:?} has more than the {} elements a tensor may have (limits.max_elements)",
            limits.max_elements
        )
    })?;
    if let Some(&rows) = shape.first()
        && rows > limits.max_rows
    {
        return Err(format!(
            "input '{name}': {rows} rows, more than the {} a request may have (limits.max_rows)",
            limits.max_rows
        ));
    }
    Ok((shape, elements))
}

/// Checks `request` against the model's inputs and `limits` and returns the inputs in the model's order.
/// Where the model's inputs share a batch dimension, every input must have the same number of rows.
pub fn check_request(
    request: &mut InferRequest,
    meta: &ModelMetadata,
    limits: &RequestLimits,
) -> Result<Vec<CheckedInput>, String> {
    let mut found = Vec::with_capacity(meta.inputs.len());
    for info in &meta.inputs {
        let Some(index) = request.inputs.iter().position(|t| t.name == info.name) else {
            return Err(format!(
                "missing input '{}' (the model's inputs are: {})",
                info.name,
                meta.inputs.iter().map(|i| i.name.as_str()).collect::<Vec<_>>().join(", ")
            ));
        };
        let tensor = &request.inputs[index];
        if tensor.datatype != "FP32" || info.element_type != ElementType::F32 {
            return Err(format!(
                "input '{}' has datatype {}, the model expects {} (this server accepts FP32)",
                tensor.name, tensor.datatype, info.element_type
            ));
        }
        let (shape, elements) = checked_shape(tensor, info, limits)?;
        found.push((index, shape, elements));
    }
    if let Some(extra) = request.inputs.iter().find(|t| !meta.inputs.iter().any(|i| i.name == t.name)) {
        return Err(format!("unknown input '{}'", extra.name));
    }
    if meta.batch_dim() != BatchDim::None
        && let Some(((a, sa, _), (b, sb, _))) = found
            .first()
            .and_then(|first| found.iter().find(|(_, s, _)| s.first() != first.1.first()).map(|o| (first, o)))
    {
        return Err(format!(
            "inputs '{}' and '{}' have different row counts ({} and {}): every input of a request needs the same \
             batch dimension",
            request.inputs[*a].name,
            request.inputs[*b].name,
            sa.first().copied().unwrap_or(1),
            sb.first().copied().unwrap_or(1)
        ));
    }
    let mut checked = Vec::with_capacity(found.len());
    for (index, shape, expected) in found {
        let tensor = &mut request.inputs[index];
        // Bounded above by `limits.max_elements`, so this allocation is safe whatever the client sent.
        let data = match tensor.binary.take() {
            Some(values) => values,
            None => elements(&mut tensor.data, &tensor.name, expected)?,
        };
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
    Ok(checked)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Dim;

    fn model(inputs: &[&str]) -> ModelMetadata {
        let info = |n: &&str| TensorInfo {
            name: n.to_string(),
            element_type: ElementType::F32,
            shape: vec![Dim::Dynamic(Some("batch".into())), Dim::Fixed(4)],
        };
        ModelMetadata { inputs: inputs.iter().map(info).collect(), outputs: vec![] }
    }

    fn request(json: &str) -> InferRequest {
        // The parser the server uses (`binary::parse`).
        sonic_rs::from_str(json).unwrap()
    }

    fn check(json: &str, meta: &ModelMetadata, limits: &RequestLimits) -> Result<Vec<CheckedInput>, String> {
        check_request(&mut request(json), meta, limits)
    }

    /// The error a request that must be refused gets.
    fn refused(json: &str, meta: &ModelMetadata, limits: &RequestLimits) -> String {
        match check(json, meta, limits) {
            Ok(inputs) => panic!("accepted: {inputs:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn json_data_is_read_straight_into_fp32_and_what_is_not_a_number_is_named() {
        let meta = model(&["x"]);
        let limits = RequestLimits::default();
        let ok = |data: &str| {
            let json = format!(r#"{{"inputs":[{{"name":"x","shape":[2,4],"datatype":"FP32","data":{data}}}]}}"#);
            check(&json, &meta, &limits)
        };
        let flat = ok("[1,2,3,4,5,6,7,8.5]").unwrap();
        assert_eq!(flat[0].data, [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.5]);
        assert_eq!(ok("[[1,2,3,4],[5,6,7,-8e0]]").unwrap()[0].data, [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, -8.0]);
        assert_eq!(ok(r#"[[1,2,3,4],[5,"x",7,8]]"#).unwrap_err(), r#"input 'x': element 5 is "x", not a number"#);
        assert_eq!(ok("[1,2,true,4,5,6,7,8]").unwrap_err(), "input 'x': element 2 is true, not a number");
        assert_eq!(ok("[1,{\"a\":[1]},3]").unwrap_err(), "input 'x': element 1 is an object, not a number");
        assert_eq!(ok("null").unwrap_err(), "input 'x' has no data");
        assert_eq!(ok("[1,2,3]").unwrap_err(), "input 'x': shape [2, 4] needs 8 elements, the data has 3");
    }

    #[test]
    fn a_huge_shape_is_refused_before_anything_is_allocated() {
        // The request that used to abort the server: 10^12 rows of 64 announced, one element sent.
        let meta = ModelMetadata {
            inputs: vec![TensorInfo {
                name: "input".into(),
                element_type: ElementType::F32,
                shape: vec![Dim::Dynamic(None), Dim::Fixed(64)],
            }],
            outputs: vec![],
        };
        let e = refused(
            r#"{"inputs":[{"name":"input","datatype":"FP32","shape":[1000000000000,64],"data":[1.0]}]}"#,
            &meta,
            &RequestLimits::default(),
        );
        assert!(e.contains("'input'") && e.contains("limits.max_elements"), "{e}");
        // A product that overflows usize is the same error, not a wrapped small number.
        let e = refused(
            r#"{"inputs":[{"name":"input","datatype":"FP32","shape":[288230376151711744,64],"data":[]}]}"#,
            &meta,
            &RequestLimits::default(),
        );
        assert!(e.contains("limits.max_elements"), "{e}");
    }

    #[test]
    fn rows_and_elements_are_bounded_by_the_limits() {
        let meta = model(&["x"]);
        let limits = RequestLimits { max_rows: 2, max_elements: 8, ..RequestLimits::default() };
        let ok = check(
            r#"{"inputs":[{"name":"x","datatype":"FP32","shape":[2,4],"data":[1,2,3,4,5,6,7,8]}]}"#,
            &meta,
            &limits,
        );
        assert_eq!(ok.unwrap()[0].data.len(), 8);
        let e = refused(r#"{"inputs":[{"name":"x","datatype":"FP32","shape":[3,4],"data":[]}]}"#, &meta, &limits);
        assert!(e.contains("limits.max_elements"), "{e}");
        let limits = RequestLimits { max_rows: 2, ..RequestLimits::default() };
        let e = refused(r#"{"inputs":[{"name":"x","datatype":"FP32","shape":[3,4],"data":[]}]}"#, &meta, &limits);
        assert!(e.contains("3 rows") && e.contains("limits.max_rows"), "{e}");
    }

    #[test]
    fn more_data_than_the_shape_needs_stops_at_the_shape() {
        let meta = model(&["x"]);
        let e = refused(
            r#"{"inputs":[{"name":"x","datatype":"FP32","shape":[1,4],"data":[1,2,3,4,5,6]}]}"#,
            &meta,
            &RequestLimits::default(),
        );
        assert!(e.contains("more than the 4 elements"), "{e}");
        let e = refused(
            r#"{"inputs":[{"name":"x","datatype":"FP32","shape":[2,4],"data":[1,2]}]}"#,
            &meta,
            &RequestLimits::default(),
        );
        assert!(e.contains("needs 8 elements, the data has 2"), "{e}");
    }

    #[test]
    fn inputs_with_different_row_counts_are_a_bad_request_naming_both() {
        let meta = model(&["a", "b"]);
        let e = check(
            r#"{"inputs":[{"name":"a","datatype":"FP32","shape":[1,4],"data":[1,2,3,4]},
                          {"name":"b","datatype":"FP32","shape":[2,4],"data":[1,2,3,4,5,6,7,8]}]}"#,
            &meta,
            &RequestLimits::default(),
        )
        .unwrap_err();
        assert!(e.contains("'a' and 'b'") && e.contains("1 and 2"), "{e}");
    }

    #[test]
    fn limits_must_be_positive() {
        assert!(RequestLimits::default().validate().is_ok());
        let e = RequestLimits { body_timeout_s: 0.0, ..RequestLimits::default() }.validate().unwrap_err();
        assert!(e.contains("body_timeout_s"), "{e}");
        assert!(RequestLimits { max_rows: 0, ..RequestLimits::default() }.validate().is_err());
    }
}
