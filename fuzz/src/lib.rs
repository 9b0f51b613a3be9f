//! What the v2 request targets share: the models they decode against and the call the server makes.

use hyscale_backend::engine::{Dim, ElementType, ModelMetadata, TensorInfo};
use hyscale_backend::server::protocol::RequestLimits;
use hyscale_backend::server::{DecodedInfer, binary::HEADER_LENGTH, decode_infer};

fn info(name: &str, width: usize) -> TensorInfo {
    TensorInfo {
        name: name.into(),
        element_type: ElementType::F32,
        shape: vec![Dim::Dynamic(Some("batch".into())), Dim::Fixed(width)],
    }
}

/// The MLP's signature (one input of 64 features) and a model with two inputs sharing the batch dimension.
pub fn models() -> [ModelMetadata; 2] {
    [
        ModelMetadata { inputs: vec![info("input", 64)], outputs: vec![info("output", 10)] },
        ModelMetadata { inputs: vec![info("a", 4), info("b", 2)], outputs: vec![info("y", 1)] },
    ]
}

/// `body` decoded as the server decodes it, with the binary header length when given.
pub fn with_header(header: Option<usize>, body: &[u8], meta: &ModelMetadata) -> Result<DecodedInfer, String> {
    let mut headers = http::HeaderMap::new();
    if let Some(n) = header {
        headers.insert(HEADER_LENGTH, n.into());
    }
    decode_infer(&headers, body, meta, &RequestLimits::default())
}
