//! What can go wrong while choosing an engine, loading a model or running it.

use std::path::PathBuf;

/// An error of the inference engines. Messages name the file, model, input or output concerned.
#[derive(Clone, Debug, thiserror::Error)]
pub enum EngineError {
    /// The engine is process-global (`ort::set_api`) and another one is already running in this process.
    #[error(
        "the {running} engine is already running in this process and cannot be replaced by {requested} \
         (one engine per process: ort's API table is process-global)"
    )]
    AlreadyRunning {
        /// The engine that runs.
        running: String,
        /// The engine that was asked for.
        requested: String,
    },
    /// ONNX Runtime was asked for but no library was found.
    #[error(
        "ONNX Runtime not found: set ORT_DYLIB_PATH to libonnxruntime.so, or `pip install onnxruntime` into .venv \
         (looked in: {})",
        .searched.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
    )]
    OnnxRuntimeNotFound {
        /// Where it looked.
        searched: Vec<PathBuf>,
    },
    /// An ONNX Runtime library was found but could not be used.
    #[error("ONNX Runtime library {path}: {reason}")]
    OnnxRuntimeUnusable {
        /// The library file.
        path: PathBuf,
        /// Why it cannot be used.
        reason: String,
    },
    /// The engine's environment could not be created.
    #[error("creating the {engine} environment: {reason}")]
    Environment {
        /// The engine.
        engine: String,
        /// The engine's message.
        reason: String,
    },
    /// A model file could not be loaded.
    #[error("loading model {path}: {reason}")]
    Load {
        /// The model file.
        path: PathBuf,
        /// The engine's message.
        reason: String,
    },
    /// The model uses something the backend does not support (non-tensor inputs, non-f32 tensors).
    #[error("model {model}: {what}")]
    Unsupported {
        /// The model's name.
        model: String,
        /// What is not supported.
        what: String,
    },
    /// The inputs given do not match the model's metadata.
    #[error("model {model}: {reason}")]
    BadInput {
        /// The model's name.
        model: String,
        /// What does not match, naming the input.
        reason: String,
    },
    /// The engine failed while running the model.
    #[error("running model {model}: {reason}")]
    Run {
        /// The model's name.
        model: String,
        /// The engine's message.
        reason: String,
    },
}
