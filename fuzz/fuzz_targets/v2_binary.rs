//! Any bytes as a v2 request with binary tensors (Triton's extension): the first two bytes pick the JSON
//! header's length (`Inference-Header-Content-Length`), the rest is the body, JSON then raw FP32 data.
#![no_main]

use hyscale_fuzz::{models, with_header};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((len, body)) = data.split_first_chunk::<2>() else { return };
    let header = usize::from(u16::from_le_bytes(*len)) % (body.len() + 2);
    for meta in models() {
        let _ = with_header(Some(header), body, &meta);
    }
});
