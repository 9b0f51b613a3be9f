//! Inference tests on the project's generated models (backend/models): the engines against the outputs the
//! Python onnxruntime package computed, and dynamic batching. One binary; files are named by behaviour.
//!
//! The engine is process-global, so this process runs tract; the ONNX Runtime checks run in a child process
//! (this same binary, filtered to one test) when ONNX Runtime is installed, and are skipped, saying why,
//! when it is not.

mod support;

mod batching;
mod engines;
mod grpc;
