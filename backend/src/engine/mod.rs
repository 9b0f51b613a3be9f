//! Inference engines: ONNX models run through ort 2.0 on one of two engines, chosen when the process starts.
//!
//! - **tract** (the `ort-tract` crate): pure Rust, compiled into every build, so a fresh checkout serves a
//!   model with no setup. The zero-setup default.
//! - **ONNX Runtime**: the shared library from the `onnxruntime` Python wheel (or any `libonnxruntime.so`),
//!   found at run time (see [`find_onnxruntime`]) and opened with libloading; faster, and the only way to a GPU.
//!
//! Both sit behind ort's `alternative-backend` feature: ort talks to whichever C API table it is given with
//! `ort::set_api`, and that table is **process-global** and can be set once. So there is one engine per
//! process: [`Engine::init`] picks it (`auto`: ONNX Runtime when found, else tract), and a later call that
//! asks for the other engine is an error ([`EngineError::AlreadyRunning`]). A process that needs both (the
//! tests) runs the second in a child process.
//!
//! ```no_run
//! use hyscale_backend::engine::{Engine, EngineConfig, Tensor};
//!
//! let engine = Engine::init(&EngineConfig::default())?;
//! println!("engine: {}", engine.describe());
//! let mut session = engine.load("backend/models/mlp.onnx".as_ref())?;
//! let x = Tensor::zeros(vec![4, 64]);
//! let logits = &session.run(&[x])?[0];
//! assert_eq!(logits.shape, [4, 10]);
//! # Ok::<(), hyscale_backend::engine::EngineError>(())
//! ```
//!
//! GPU: `execution_provider = "cuda"` registers ONNX Runtime's CUDA execution provider when the library has
//! one (the `onnxruntime-gpu` wheel) and a session can be created with it; otherwise the engine says so (a
//! note, and a `tracing` warning) and the session runs on the CPU. [`Session::device`] tells which.

mod error;
mod metadata;
mod onnxruntime;
mod session;

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Mutex, OnceLock};

use ort::ep::ExecutionProvider as _;
use ort::session::builder::GraphOptimizationLevel;
use serde::Deserialize;

pub use self::error::EngineError;
pub use self::metadata::{BatchDim, Dim, ElementType, ModelMetadata, TensorInfo};
pub use self::session::{Session, Tensor, element_count};

/// Which engine to run, as configured.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EngineChoice {
    /// ONNX Runtime when a library is found, else tract.
    #[default]
    Auto,
    /// tract, pure Rust.
    Tract,
    /// ONNX Runtime; an error when no library is found.
    #[serde(rename = "onnxruntime")]
    OnnxRuntime,
}

impl FromStr for EngineChoice {
    type Err = String;

    fn from_str(s: &str) -> Result<EngineChoice, String> {
        match s {
            "auto" => Ok(EngineChoice::Auto),
            "tract" => Ok(EngineChoice::Tract),
            "onnxruntime" | "ort" => Ok(EngineChoice::OnnxRuntime),
            other => Err(format!("unknown engine '{other}': expected auto, tract or onnxruntime")),
        }
    }
}

impl fmt::Display for EngineChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EngineChoice::Auto => "auto",
            EngineChoice::Tract => "tract",
            EngineChoice::OnnxRuntime => "onnxruntime",
        })
    }
}

/// The engine that actually runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// tract, through ort-tract.
    Tract,
    /// ONNX Runtime, opened at run time.
    OnnxRuntime,
}

impl Backend {
    /// `tract` or `onnxruntime`, as in configuration files and metrics labels.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Tract => "tract",
            Backend::OnnxRuntime => "onnxruntime",
        }
    }
}

/// Where sessions should run, as configured.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExecutionProvider {
    /// The CPU.
    #[default]
    Cpu,
    /// NVIDIA GPU through ONNX Runtime's CUDA execution provider, falling back to the CPU (and saying so)
    /// where there is none.
    Cuda,
}

/// Where a session actually runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Device {
    /// The CPU.
    Cpu,
    /// An NVIDIA GPU (CUDA execution provider).
    Cuda,
}

impl Device {
    /// `cpu` or `cuda`.
    pub fn name(self) -> &'static str {
        match self {
            Device::Cpu => "cpu",
            Device::Cuda => "cuda",
        }
    }
}

/// Engine settings (the `[engine]` table of a live configuration).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EngineConfig {
    /// `auto` (default), `tract` or `onnxruntime`.
    pub engine: EngineChoice,
    /// `cpu` (default) or `cuda`.
    pub execution_provider: ExecutionProvider,
    /// Threads one session uses inside an operator (ONNX Runtime's intra-op pool); `None` leaves the engine's
    /// default (ONNX Runtime: one per physical core). tract always runs on one thread.
    pub intra_threads: Option<usize>,
    /// The ONNX Runtime library to open, before `ORT_DYLIB_PATH` and the Python search.
    pub onnxruntime_library: Option<PathBuf>,
}

/// The process's inference engine. Created once by [`Engine::init`]; lives as long as the process.
pub struct Engine {
    env: ort::environment::Environment,
    backend: Backend,
    version: String,
    library: Option<PathBuf>,
    config: EngineConfig,
    cuda_usable: bool,
    notes: Vec<String>,
}

impl fmt::Debug for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Engine").field("backend", &self.backend).field("version", &self.version).finish()
    }
}

static ENGINE: OnceLock<Engine> = OnceLock::new();
static INIT: Mutex<()> = Mutex::new(());

/// Where the ONNX Runtime library is (`configured`, else `ORT_DYLIB_PATH`, else the Python search described
/// in the module docs), without opening it.
pub fn find_onnxruntime(configured: Option<&Path>) -> Result<PathBuf, EngineError> {
    onnxruntime::locate(configured).map_err(|searched| EngineError::OnnxRuntimeNotFound { searched })
}

impl Engine {
    /// Starts the process's engine as `config` says, or returns the running one when it fits `config` (same
    /// engine, or `auto`). Asking for the other engine once one runs is [`EngineError::AlreadyRunning`].
    pub fn init(config: &EngineConfig) -> Result<&'static Engine, EngineError> {
        let _guard = INIT.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(running) = ENGINE.get() {
            return match (config.engine, running.backend) {
                (EngineChoice::Auto, _)
                | (EngineChoice::Tract, Backend::Tract)
                | (EngineChoice::OnnxRuntime, Backend::OnnxRuntime) => Ok(running),
                (requested, backend) => Err(EngineError::AlreadyRunning {
                    running: backend.name().to_string(),
                    requested: requested.to_string(),
                }),
            };
        }
        let engine = Engine::start(config)?;
        Ok(ENGINE.get_or_init(|| engine))
    }

    /// The running engine, if [`Engine::init`] has been called.
    pub fn get() -> Option<&'static Engine> {
        ENGINE.get()
    }

    fn start(config: &EngineConfig) -> Result<Engine, EngineError> {
        let mut notes = Vec::new();
        let (backend, api, version, library) = match config.engine {
            EngineChoice::Tract => (Backend::Tract, ort_tract::api(), tract_version(), None),
            EngineChoice::OnnxRuntime => {
                let path = find_onnxruntime(config.onnxruntime_library.as_deref())?;
                let loaded = onnxruntime::open(&path)?;
                (Backend::OnnxRuntime, loaded.api, loaded.version, Some(loaded.path))
            }
            EngineChoice::Auto => match find_onnxruntime(config.onnxruntime_library.as_deref())
                .and_then(|path| onnxruntime::open(&path))
            {
                Ok(loaded) => (Backend::OnnxRuntime, loaded.api, loaded.version, Some(loaded.path)),
                Err(e) => {
                    notes.push(format!("engine auto: using tract, because {e}"));
                    (Backend::Tract, ort_tract::api(), tract_version(), None)
                }
            },
        };
        if !ort::set_api(api) {
            // Only reachable if something else in the process called `ort::set_api` behind our back.
            return Err(EngineError::AlreadyRunning {
                running: "another ort backend".into(),
                requested: backend.name().into(),
            });
        }
        let env = ort::init()
            .with_name("hyscale")
            .with_telemetry(false)
            .build()
            .map_err(|e| EngineError::Environment { engine: backend.name().into(), reason: e.to_string() })?;
        let mut cuda_usable = false;
        if config.execution_provider == ExecutionProvider::Cuda {
            match backend {
                Backend::Tract => {
                    notes.push("execution_provider cuda: tract runs on the CPU only; running on CPU".into())
                }
                Backend::OnnxRuntime => match ort::ep::CUDA::is_available() {
                    Ok(true) => cuda_usable = true,
                    Ok(false) => notes.push(format!(
                        "execution_provider cuda: ONNX Runtime {version} has no CUDA execution provider \
                         (the onnxruntime-gpu wheel has one); running on CPU"
                    )),
                    Err(e) => notes.push(format!("execution_provider cuda: {e}; running on CPU")),
                },
            }
        }
        for note in &notes {
            tracing::warn!("{note}");
        }
        let engine = Engine { env, backend, version, library, config: config.clone(), cuda_usable, notes };
        tracing::info!(engine = engine.name(), version = %engine.version, "inference engine started: {}", engine.describe());
        Ok(engine)
    }

    /// `tract` or `onnxruntime`.
    pub fn name(&self) -> &'static str {
        self.backend.name()
    }

    /// The engine that runs.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The engine's version: ONNX Runtime's own version string (`1.31.1`), or ort-tract's (`0.5.0+0.23`: the
    /// crate, then tract's minor version).
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The ONNX Runtime library in use, if that is the engine.
    pub fn library(&self) -> Option<&Path> {
        self.library.as_deref()
    }

    /// The settings it was started with.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// Why the engine or device differs from what was asked (auto fell back to tract; no GPU), one sentence
    /// each; also logged as warnings.
    pub fn notes(&self) -> &[String] {
        &self.notes
    }

    /// One line for logs: `onnxruntime 1.31.1 (/path/libonnxruntime.so.1.31.1)` or `tract 0.5.0+0.23 (pure Rust)`.
    pub fn describe(&self) -> String {
        match &self.library {
            Some(lib) => format!("{} {} ({})", self.name(), self.version, lib.display()),
            None => format!("{} {} (pure Rust)", self.name(), self.version),
        }
    }

    /// Loads an ONNX model (graph optimisation level 3; without it tract runs the unoptimised graph, ~25x
    /// slower on the test MLP).
    pub fn load(&self, path: &Path) -> Result<Session, EngineError> {
        let load_error = |reason: String| EngineError::Load { path: path.to_path_buf(), reason };
        let name = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "model".into());
        let mut builder = ort::session::Session::builder(&self.env)
            .map_err(|e| load_error(e.to_string()))?
            .with_optimization_level(GraphOptimizationLevel::Level3)
            .map_err(|e| load_error(e.to_string()))?;
        if let Some(n) = self.config.intra_threads {
            builder = builder.with_intra_threads(n).map_err(|e| load_error(e.to_string()))?;
        }
        if self.cuda_usable {
            let cuda = [ort::ep::CUDA::default().build().error_on_failure()];
            let tried = builder
                .clone()
                .with_execution_providers(cuda)
                .map_err(|e| e.to_string())
                .and_then(|mut b| b.commit_from_file(path).map_err(|e| e.to_string()));
            match tried {
                Ok(s) => return Session::new(s, name, self.backend, Device::Cuda),
                Err(e) => tracing::warn!(model = %name, "CUDA execution provider unusable ({e}); running on CPU"),
            }
        }
        let session = builder.commit_from_file(path).map_err(|e| load_error(e.to_string()))?;
        Session::new(session, name, self.backend, Device::Cpu)
    }
}

/// ort-tract's version as its build-info string reports it (`0.5.0+0.23`).
fn tract_version() -> String {
    // `ort::info()` needs the API table, which is not set yet here; ort-tract's table answers the same call.
    let api = ort_tract::api();
    // SAFETY: ort-tract's GetBuildInfoString returns a pointer to a static NUL-terminated string.
    let info = unsafe { std::ffi::CStr::from_ptr((api.GetBuildInfoString)()) }.to_string_lossy().into_owned();
    info.split("version=").nth(1).map(|v| v.trim().to_string()).unwrap_or_else(|| "0.5".into())
}
