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

/// Deepest nesting of arrays and objects a request's JSON may have. A request needs three levels plus its
/// tensors' rank; parsing recurses once per level, and a server thread's 2 MiB stack holds fewer levels than
/// the parser allows in an unoptimised build (sonic-rs allows 255: 128 overflowed it, 64 did not).
pub const MAX_JSON_DEPTH: usize = 32;

/// Whether arrays and objects in `json` nest at most `max` deep (brackets inside strings do not count).
fn nesting_within(json: &[u8], max: usize) -> bool {
    // Fewer openers in all than the bound: no need to follow the structure (memchr's vectorised search,
    // about 2 µs for a CNN's 60 KB; a byte loop took 15).
    if memchr::memchr2_iter(b'[', b'{', json).nth(max).is_none() {
        return true;
    }
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for &b in json {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return false;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    true
}

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
    let json = &body[..json_len];
    if !nesting_within(json, MAX_JSON_DEPTH) {
        return Err(format!(
            "the request is not a valid v2 inference request: its JSON is nested deeper than {MAX_JSON_DEPTH} levels"
        ));
    }
    // sonic-rs: a CNN's 3,072 numbers (as clients write FP32, 17 significant digits) parse 1.5x as fast as
    // through serde_json (benches/decode.rs), into the same serde types.
    let mut request: InferRequest = sonic_rs::from_slice(json)
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

    #[test]
    fn nesting_past_the_bound_is_refused_and_the_bound_fits_a_server_thread() {
        // Up to `MAX_JSON_DEPTH` levels, in `parameters` (any JSON) and in a tensor's `data` (nested arrays),
        // parse in an unoptimised build on a thread with tokio's default 2 MiB stack; one more is refused
        // before parsing, however deep; brackets inside strings do not count.
        let deep = |levels: usize| format!("{}1{}", "[".repeat(levels), "]".repeat(levels));
        let body = |data: &str, params: &str| {
            format!(
                r#"{{"inputs": [{{"name": "x", "shape": [1], "datatype": "FP32", "data": {data}}}], "parameters": {{"p": {params}}}}}"#
            )
        };
        std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(move || {
                // Three levels of structure around `data`, two around the parameter's value.
                let bodies = [
                    (body(&deep(MAX_JSON_DEPTH - 3), "1"), true),
                    (body("[1]", &deep(MAX_JSON_DEPTH - 2)), true),
                    (body(&deep(MAX_JSON_DEPTH - 2), "1"), false),
                    (body("[1]", &deep(MAX_JSON_DEPTH - 1)), false),
                    (body("[1]", &deep(100_000)), false),
                    (body("[1]", &format!("\"{}\\\"[\"", "[".repeat(1000))), true),
                ];
                for (body, fits) in bodies {
                    let parsed = parse(&HeaderMap::new(), body.as_bytes());
                    if fits {
                        assert!(parsed.is_ok(), "{:?}", parsed.err());
                    } else {
                        let err = parsed.map(|_| ()).expect_err("too deep");
                        assert!(err.ends_with(&format!("nested deeper than {MAX_JSON_DEPTH} levels")), "{err}");
                    }
                }
            })
            .expect("thread starts")
            .join()
            .expect("no stack overflow");
    }
}
