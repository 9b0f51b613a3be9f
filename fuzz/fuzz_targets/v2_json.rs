//! Any bytes as an Open Inference Protocol v2 JSON request body, decoded and checked against two models
//! (one input; two inputs sharing the batch dimension) with the server's default limits, exactly as
//! `hyscale serve` decodes a request (`server::decode_infer`). Errors (a 400) are fine, panics and
//! allocations sized by the client are not.
#![no_main]

use hyscale_fuzz::{models, with_header};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for meta in models() {
        let _ = with_header(None, data, &meta);
    }
});
