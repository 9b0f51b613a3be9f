//! Writes backend/src/server/grpc/inference.rs from backend/proto/inference.proto.

use std::path::Path;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let proto_dir = root.join("backend/proto");
    let out = root.join("backend/src/server/grpc");
    let fds = protox::compile([proto_dir.join("inference.proto")], [&proto_dir])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // Tensor bytes as `Bytes`: decoded as a view of the received buffer (no copy), cloned by reference.
        .bytes(".inference.ModelInferRequest.raw_input_contents")
        .bytes(".inference.ModelInferResponse.raw_output_contents")
        .out_dir(&out)
        .compile_fds(fds)?;
    println!("wrote {}", out.join("inference.rs").display());
    Ok(())
}
