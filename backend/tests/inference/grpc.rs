//! The v2 protocol over gRPC, through the generated tonic client, on the real MLP: the answer equals the
//! engine's own, whichever way the inputs travel (raw bytes or FP32 contents); malformed requests get the
//! matching code with a message naming the problem; a message over `limits.max_body_bytes` is refused by the
//! transport, and the server answers the next request.

use std::sync::Arc;
use std::time::Duration;

use hyscale_backend::engine::{EngineChoice, EngineConfig};
use hyscale_backend::server::grpc::inference::grpc_inference_service_client::GrpcInferenceServiceClient;
use hyscale_backend::server::grpc::inference::model_infer_request::InferInputTensor;
use hyscale_backend::server::grpc::inference::{InferTensorContents, ModelInferRequest, ModelMetadataRequest};
use hyscale_backend::server::grpc::serve_grpc;
use hyscale_backend::server::{AppState, ModelConfig, ServeConfig};
use tonic::Code;
use tonic::transport::Channel;

use crate::support::{self, fixed_input, model};

async fn start(max_body_bytes: usize) -> GrpcInferenceServiceClient<Channel> {
    support::tract();
    let mut config = ServeConfig {
        listen: "127.0.0.1:0".into(),
        request_timeout_s: 30.0,
        retry_after_s: 1,
        engine: EngineConfig { engine: EngineChoice::Tract, intra_threads: Some(1), ..EngineConfig::default() },
        limits: Default::default(),
        models: vec![ModelConfig {
            name: "mlp".into(),
            path: model("mlp.onnx"),
            version: "1".into(),
            max_batch: 4,
            max_wait_ms: 0.0,
            queue_capacity: 64,
            idle_start: false,
        }],
        grpc_listen: None,
        server_threads: None,
    };
    config.limits.max_body_bytes = max_body_bytes;
    let state = Arc::new(AppState::load(&config, std::path::Path::new("")).expect("server loads"));
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let _ = serve_grpc(state, "127.0.0.1:0", move |a| tx.send(a).unwrap_or(()), std::future::pending()).await;
    });
    let addr = tokio::time::timeout(Duration::from_secs(30), rx).await.expect("binds").expect("address");
    GrpcInferenceServiceClient::connect(format!("http://{addr}")).await.expect("connects")
}

fn request(shape: &[i64], raw: Option<Vec<u8>>, contents: Option<Vec<f32>>) -> ModelInferRequest {
    ModelInferRequest {
        model_name: "mlp".into(),
        id: "r1".into(),
        inputs: vec![InferInputTensor {
            name: "input".into(),
            datatype: "FP32".into(),
            shape: shape.to_vec(),
            contents: contents.map(|fp32_contents| InferTensorContents { fp32_contents, ..Default::default() }),
            ..Default::default()
        }],
        raw_input_contents: raw.into_iter().map(Into::into).collect(),
        ..Default::default()
    }
}

fn le_bytes(x: &[f32]) -> Vec<u8> {
    x.iter().flat_map(|v| v.to_le_bytes()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_answers_as_the_engine_does_and_names_what_is_wrong() {
    let mut client = start(64 << 20).await;
    let x = fixed_input(&[2, 64]);
    let want = support::tract().load(&model("mlp.onnx")).unwrap().run(std::slice::from_ref(&x)).unwrap().remove(0);

    let meta = client.model_metadata(ModelMetadataRequest { name: "mlp".into(), version: String::new() }).await;
    let meta = meta.expect("metadata").into_inner();
    assert_eq!((meta.inputs[0].name.as_str(), meta.inputs[0].shape.as_slice()), ("input", &[-1i64, 64][..]));

    for (raw, contents) in [(Some(le_bytes(&x.data)), None), (None, Some(x.data.clone()))] {
        let r = client.model_infer(request(&[2, 64], raw, contents)).await.expect("served").into_inner();
        assert_eq!((r.id.as_str(), r.outputs[0].shape.as_slice()), ("r1", &[2i64, 10][..]));
        let got: Vec<f32> =
            r.raw_output_contents[0].chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
        let diff = got.iter().zip(&want.data).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
        assert!(diff <= 1e-5, "max |diff| {diff}");
    }

    let status = |r: Result<tonic::Response<_>, tonic::Status>| r.map(|_: tonic::Response<_>| ()).unwrap_err();
    let s = status(client.model_infer(request(&[1, 63], Some(le_bytes(&[0.0; 63])), None)).await);
    assert_eq!(s.code(), Code::InvalidArgument, "{s:?}");
    assert!(s.message().contains("dimension 1 must be 64"), "{s:?}");
    let mut two_raw = request(&[1, 64], Some(le_bytes(&[0.0; 64])), None);
    two_raw.raw_input_contents.push(vec![0; 8].into());
    let s = status(client.model_infer(two_raw).await);
    assert!(s.code() == Code::InvalidArgument && s.message().contains("2 entries for 1 inputs"), "{s:?}");
    let s = status(client.model_infer(request(&[1, 64], Some(vec![0; 7]), None)).await);
    assert!(s.code() == Code::InvalidArgument && s.message().contains("not a whole number of FP32"), "{s:?}");
    let mut unknown = request(&[1, 64], Some(le_bytes(&[0.0; 64])), None);
    unknown.model_name = "resnet".into();
    let s = status(client.model_infer(unknown).await);
    assert!(s.code() == Code::NotFound && s.message().contains("unknown model 'resnet'"), "{s:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_over_the_body_limit_is_refused_and_the_server_answers_the_next() {
    let mut client = start(1024).await;
    let big = fixed_input(&[8, 64]);
    let s = client.model_infer(request(&[8, 64], Some(le_bytes(&big.data)), None)).await.unwrap_err();
    assert_eq!(s.code(), Code::OutOfRange, "{s:?}");
    assert!(s.message().contains("too large"), "{s:?}");
    let small = fixed_input(&[1, 64]);
    let r = client.model_infer(request(&[1, 64], Some(le_bytes(&small.data)), None)).await.expect("served");
    assert_eq!(r.into_inner().outputs[0].shape, [1, 10]);
}
