//! Both engines reproduce the Python onnxruntime outputs in expected.json, report the models' metadata, and
//! refuse what they cannot run with errors that name the problem.

use hyscale_backend::engine::{
    BatchDim, Device, Dim, ElementType, Engine, EngineChoice, EngineConfig, EngineError, ExecutionProvider, Tensor,
    find_onnxruntime,
};

use crate::support::{self, fixed_input, model};

/// Set in the child process that runs the ONNX Runtime checks.
const CHILD: &str = "HYSCALE_TEST_ENGINE_CHILD";

#[test]
fn tract_reproduces_the_python_onnxruntime_outputs() {
    let engine = support::tract();
    assert_eq!(engine.name(), "tract");
    assert!(engine.version().starts_with("0.5"), "{}", engine.version());
    support::check_expected_outputs(engine);
}

#[test]
fn onnx_runtime_reproduces_the_python_onnxruntime_outputs() {
    if std::env::var_os(CHILD).is_some() {
        // The child: this process's engine is ONNX Runtime.
        let config = EngineConfig { engine: EngineChoice::OnnxRuntime, intra_threads: Some(1), ..Default::default() };
        let engine = Engine::init(&config).expect("starting ONNX Runtime");
        assert_eq!(engine.name(), "onnxruntime");
        assert!(engine.library().is_some());
        support::check_expected_outputs(engine);
        // ONNX Runtime reports the symbolic batch dimension's name.
        let session = engine.load(&model("cnn.onnx")).unwrap();
        assert_eq!(session.metadata().inputs[0].shape[0], Dim::Dynamic(Some("batch".into())));
        // The engine is process-global: tract cannot be started beside it; auto gets the running one.
        let tract = EngineConfig { engine: EngineChoice::Tract, ..Default::default() };
        assert!(matches!(Engine::init(&tract), Err(EngineError::AlreadyRunning { .. })));
        assert_eq!(Engine::init(&EngineConfig::default()).unwrap().name(), "onnxruntime");
        return;
    }
    let library = match find_onnxruntime(None) {
        Ok(library) => library,
        Err(e) => {
            println!("skipped: ONNX Runtime is not installed ({e})");
            return;
        }
    };
    println!("ONNX Runtime: {}", library.display());
    run_child("engines::onnx_runtime_reproduces_the_python_onnxruntime_outputs", &[]);
}

#[test]
fn metadata_names_inputs_outputs_types_and_the_batch_dimension() {
    let engine = support::tract();
    let mlp = engine.load(&model("mlp.onnx")).unwrap();
    let m = mlp.metadata();
    assert_eq!(mlp.name(), "mlp");
    assert_eq!((m.inputs.len(), m.outputs.len()), (1, 1));
    assert_eq!(m.inputs[0].name, "input");
    assert_eq!(m.inputs[0].element_type, ElementType::F32);
    assert_eq!(m.inputs[0].element_type.protocol_name(), "FP32");
    assert!(matches!(m.inputs[0].shape[0], Dim::Dynamic(_)), "{:?}", m.inputs[0].shape);
    assert_eq!(m.inputs[0].shape[1], Dim::Fixed(64));
    assert_eq!(m.outputs[0].name, "logits");
    assert_eq!(m.outputs[0].shape[1], Dim::Fixed(10));
    assert_eq!(m.batch_dim(), BatchDim::Dynamic);

    let cnn = engine.load(&model("cnn.onnx")).unwrap();
    let shape: Vec<i64> = cnn.metadata().inputs[0].shape.iter().map(Dim::protocol_size).collect();
    assert_eq!(shape, [-1, 3, 32, 32]);

    let fixed = engine.load(&model("mlp_batch1.onnx")).unwrap();
    assert_eq!(fixed.metadata().batch_dim(), BatchDim::Fixed(1));
    assert_eq!(fixed.metadata().inputs[0].shape_string(), "[1, 64]");
}

#[test]
fn bad_inputs_are_refused_naming_the_input() {
    let engine = support::tract();
    let mut mlp = engine.load(&model("mlp.onnx")).unwrap();
    let e = mlp.run(&[fixed_input(&[2, 63])]).unwrap_err().to_string();
    assert!(e.contains("'input'") && e.contains("[?, 64]"), "{e}");
    let e = mlp.run(&[]).unwrap_err().to_string();
    assert!(e.contains("0 inputs given") && e.contains("input"), "{e}");
    let bad = Tensor { shape: vec![2, 64], data: vec![0.0; 3] };
    let e = mlp.run(&[bad]).unwrap_err().to_string();
    assert!(e.contains("3 values"), "{e}");
    let mut fixed = engine.load(&model("mlp_batch1.onnx")).unwrap();
    let e = fixed.run(&[fixed_input(&[2, 64])]).unwrap_err().to_string();
    assert!(e.contains("dimension 0 must be 1"), "{e}");
    // A good run still works after refusals.
    assert_eq!(mlp.run(&[fixed_input(&[2, 64])]).unwrap()[0].shape, [2, 10]);
}

#[test]
fn a_missing_model_is_an_error_naming_the_file() {
    let e = support::tract().load(&model("no-such-model.onnx")).unwrap_err();
    assert!(matches!(e, EngineError::Load { .. }));
    assert!(e.to_string().contains("no-such-model.onnx"), "{e}");
}

#[test]
fn the_engine_is_one_per_process() {
    let engine = support::tract();
    let other = EngineConfig { engine: EngineChoice::OnnxRuntime, ..Default::default() };
    let e = Engine::init(&other).unwrap_err();
    assert!(matches!(e, EngineError::AlreadyRunning { .. }), "{e}");
    assert!(e.to_string().contains("one engine per process"), "{e}");
    assert_eq!(Engine::init(&EngineConfig::default()).unwrap().name(), engine.name());
}

#[test]
fn auto_without_onnx_runtime_falls_back_to_tract_and_cuda_to_the_cpu_saying_why() {
    if std::env::var_os(CHILD).is_some() {
        let config = EngineConfig { execution_provider: ExecutionProvider::Cuda, ..Default::default() };
        let engine = Engine::init(&config).expect("auto always starts an engine");
        assert_eq!(engine.name(), "tract");
        let notes = engine.notes().join("\n");
        assert!(notes.contains("using tract") && notes.contains("does-not-exist"), "{notes}");
        assert!(notes.contains("running on CPU"), "{notes}");
        assert_eq!(engine.load(&model("mlp.onnx")).unwrap().device(), Device::Cpu);
        return;
    }
    let missing = std::env::temp_dir().join("does-not-exist").join("libonnxruntime.so");
    run_child(
        "engines::auto_without_onnx_runtime_falls_back_to_tract_and_cuda_to_the_cpu_saying_why",
        &[("ORT_DYLIB_PATH", missing.to_str().unwrap())],
    );
}

/// Runs one test of this binary in a child process (with [`CHILD`] set) and fails if it fails.
fn run_child(test: &str, env: &[(&str, &str)]) {
    let exe = std::env::current_exe().unwrap();
    let out = std::process::Command::new(exe)
        .args([test, "--exact", "--nocapture"])
        .env(CHILD, "1")
        .envs(env.iter().copied())
        .output()
        .expect("running the child test");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    println!("{text}");
    assert!(out.status.success(), "the child test failed:\n{text}");
    assert!(text.contains("1 passed"), "the child ran no test:\n{text}");
}
