//! Triton's binary tensor data extension of the v2 REST protocol, which Triton's own clients use by
//! default: the body starts with a JSON header of `Inference-Header-Content-Length` bytes, and a tensor whose
//! parameters hold `binary_data_size` takes that many raw little-endian bytes from what follows, in order.
//! Outputs come back the same way when the request asks for binary outputs.

use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::protocol::{InferRequest, InferResponse};

/// FP32 elements from little-endian bytes (a whole number of 4-byte elements; any tail is ignored): the
/// binary extension's and gRPC's raw tensor contents alike.
pub fn f32s_from_le(bytes: &[u8]) -> Vec<f32> {
    bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
}

/// FP32 elements as little-endian bytes, appended to `out`.
pub fn extend_le(out: &mut Vec<u8>, values: &[f32]) {
    out.reserve(values.len() * 4);
    for x in values {
        out.extend_from_slice(&x.to_le_bytes());
    }
}

/// The header that announces the JSON part's length.
pub const HEADER_LENGTH: &str = "inference-header-content-length";

fn binary_size(parameters: &Option<Value>) -> Option<u64> {
    parameters.as_ref().and_then(|p| p.get("binary_data_size")).and_then(Value::as_u64)
}

fn wants_binary(parameters: &Option<Value>, key: &str) -> bool {
    parameters.as_ref().and_then(|p| p.get(key)).and_then(Value::as_bool).unwrap_or(false)
}

/// Parses a request body, JSON or JSON + binary tensors; returns the request (binary tensors turned into
/// decoded `binary` elements) and whether outputs should be sent binary.
pub fn parse(headers: &HeaderMap, body: &[u8]) -> Result<(InferRequest, bool), String> {
    let json_len = match headers.get(HEADER_LENGTH) {
        None => body.len(),
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse::<usize>().ok())
            .filter(|&n| n <= body.len())
            .ok_or_else(|| format!("{HEADER_LENGTH} must be a length within the body ({} bytes)", body.len()))?,
    };
    // sonic-rs: a CNN's 3,072 numbers (as clients write FP32, 17 significant digits) parse 1.5x as fast as
    // through serde_json (benches/decode.rs), into the same serde types.
    let mut request: InferRequest = sonic_rs::from_slice(&body[..json_len])
        // Its message's first line says what and where; the lines after it quote the body around the spot.
        .map_err(|e| {
            let e = e.to_string();
            format!("the request is not a valid v2 inference request: {}", e.lines().next().unwrap_or_default())
        })?;
    let mut rest = &body[json_len..];
    for tensor in &mut request.inputs {
        if let Some(size) = binary_size(&tensor.parameters) {
            let size = usize::try_from(size).map_err(|_| format!("input '{}': binary size too large", tensor.name))?;
            if tensor.datatype != "FP32" {
                return Err(format!("input '{}': binary data of datatype {}; FP32 only", tensor.name, tensor.datatype));
            }
            if size > rest.len() || size % 4 != 0 {
                return Err(format!(
                    "input '{}': binary_data_size {size} does not fit the {} bytes left (4 bytes per FP32)",
                    tensor.name,
                    rest.len()
                ));
            }
            let (bytes, tail) = rest.split_at(size);
            rest = tail;
            tensor.binary = Some(f32s_from_le(bytes));
        }
    }
    if !rest.is_empty() {
        return Err(format!("{} bytes after the last binary input", rest.len()));
    }
    let binary_outputs = wants_binary(&request.parameters, "binary_data_output")
        || request.outputs.as_ref().is_some_and(|o| o.iter().any(|o| wants_binary(&o.parameters, "binary_data")));
    Ok((request, binary_outputs))
}

/// The response with every output as binary data after the JSON header.
pub fn respond(response: InferResponse) -> Response {
    let mut payload = Vec::new();
    let outputs: Vec<Value> = response
        .outputs
        .iter()
        .map(|o| {
            let start = payload.len();
            extend_le(&mut payload, &o.data);
            json!({
                "name": o.name,
                "shape": o.shape,
                "datatype": o.datatype,
                "parameters": { "binary_data_size": payload.len() - start },
            })
        })
        .collect();
    let mut head = json!({
        "model_name": response.model_name,
        "model_version": response.model_version,
        "outputs": outputs,
    });
    if let Some(id) = &response.id {
        head["id"] = json!(id);
    }
    let head = serde_json::to_vec(&head).unwrap_or_default();
    let length = head.len();
    let mut body = head;
    body.extend_from_slice(&payload);
    let mut r = ([(header::CONTENT_TYPE, "application/octet-stream")], body).into_response();
    if let Ok(v) = HeaderValue::from_str(&length.to_string()) {
        r.headers_mut().insert(HEADER_LENGTH, v);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_malformed_body_is_refused_with_what_and_where() {
        for (body, wanted) in [
            (&b"{\"inputs\": 3}"[..], "invalid type"),
            (b"{\"inputs\": [", "EOF"),
            (b"{\"id\": \"x\"}", "missing field `inputs`"),
            (b"not json", "at line 1 column 4"),
        ] {
            let err = parse(&HeaderMap::new(), body).map(|_| ()).expect_err("refused");
            assert!(!err.contains('\n'), "one line: {err}");
            assert!(err.starts_with("the request is not a valid v2 inference request: "), "{err}");
            assert!(err.contains(wanted), "{err}");
        }
    }
}
