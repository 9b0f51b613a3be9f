//! What decoding one request costs the server: the CNN test model's input (3 × 32 × 32 = 3,072 numbers)
//! through `decode_infer` as JSON and as binary tensors, and the JSON body alone through serde_json and
//! through sonic-rs, the parser the server uses (issue 13 asks for JSON "as fast as a well-kept JSON crate
//! allows"). The numbers are written as clients write FP32 values — widened to f64, 17 significant digits —
//! where serde_json's correctly rounded parsing (`float_roundtrip`, which the reports need) is slowest.
//! Measured here: the body in 71-75 µs with serde_json, 50 µs with sonic-rs. criterion reports elements
//! (numbers) per second.

use axum::http::HeaderMap;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use hyscale_backend::engine::{Dim, ElementType, ModelMetadata, TensorInfo};
use hyscale_backend::server::decode_infer;
use hyscale_backend::server::protocol::InferRequest;

const SHAPE: [usize; 4] = [1, 3, 32, 32];

fn values() -> Vec<f32> {
    // The values `hyscale bench serve` sends, in [-1, 1].
    (0..SHAPE.iter().product::<usize>()).map(|i| ((i * 37) % 101) as f32 / 50.0 - 1.0).collect()
}

fn metadata() -> ModelMetadata {
    let info = |name: &str, shape: Vec<Dim>| TensorInfo { name: name.into(), element_type: ElementType::F32, shape };
    ModelMetadata {
        inputs: vec![info(
            "input",
            vec![Dim::Dynamic(Some("batch".into())), Dim::Fixed(3), Dim::Fixed(32), Dim::Fixed(32)],
        )],
        outputs: vec![info("logits", vec![Dim::Dynamic(Some("batch".into())), Dim::Fixed(10)])],
    }
}

fn decode(c: &mut Criterion) {
    let meta = metadata();
    let limits = Default::default();
    let data = values();
    // `json!` widens each f32 to f64, as Python clients' `tolist()` does.
    let json = serde_json::to_vec(&serde_json::json!({
        "inputs": [{ "name": "input", "shape": SHAPE, "datatype": "FP32", "data": data }]
    }))
    .expect("serialises");
    let header = serde_json::to_vec(&serde_json::json!({
        "inputs": [{ "name": "input", "shape": SHAPE, "datatype": "FP32",
                     "parameters": { "binary_data_size": data.len() * 4 } }]
    }))
    .expect("serialises");
    let mut binary = header.clone();
    binary.extend(data.iter().flat_map(|x| x.to_le_bytes()));
    let mut binary_headers = HeaderMap::new();
    binary_headers.insert("inference-header-content-length", header.len().into());

    let mut group = c.benchmark_group("decode CNN input (3,072 numbers)");
    group.throughput(Throughput::Elements(data.len() as u64));
    group.bench_function("body, serde_json", |b| {
        b.iter(|| serde_json::from_slice::<InferRequest>(&json).expect("parses"))
    });
    group.bench_function("body, sonic-rs", |b| b.iter(|| sonic_rs::from_slice::<InferRequest>(&json).expect("parses")));
    group.bench_function("decode_infer JSON", |b| {
        b.iter(|| decode_infer(&HeaderMap::new(), &json, &meta, &limits).expect("decodes"))
    });
    group.bench_function("decode_infer binary", |b| {
        b.iter(|| decode_infer(&binary_headers, &binary, &meta, &limits).expect("decodes"))
    });
    group.finish();
}

criterion_group!(benches, decode);
criterion_main!(benches);
