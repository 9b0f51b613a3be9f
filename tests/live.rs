//! The live half end to end with real parts: `hyscale serve` on loopback running the project's ONNX test
//! models, and `hyscale replay` sending a trace to it open loop. Every request is accounted for, and an
//! overloaded model answers 429 (counted as rejected, `throttled`), never silence.

use crate::support::{replay_report as replay, start_server as serve};

fn config(dir: &std::path::Path, max_batch: u32, queue_capacity: usize) -> std::path::PathBuf {
    let models = std::path::absolute("backend/models").unwrap();
    let text = format!(
        "[engine]\nengine = \"tract\"\n\n[[models]]\nname = \"mlp\"\npath = {:?}\nmax_batch = {max_batch}\n\
         max_wait_ms = 2.0\nqueue_capacity = {queue_capacity}\n\n[[models]]\nname = \"cnn\"\npath = {:?}\n\
         max_batch = 1\nqueue_capacity = {queue_capacity}\n",
        models.join("mlp.onnx").to_str().unwrap(),
        models.join("cnn.onnx").to_str().unwrap()
    );
    let path = dir.join("live.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn accounted(report: &serde_json::Value) -> (u64, u64, u64, u64) {
    let q = &report["requests"];
    let n = |k: &str| q[k].as_u64().unwrap();
    let (a, c, r, d) = (n("arrivals"), n("completed"), n("rejected"), n("dropped"));
    assert_eq!(a, c + r + d, "requests lost: {q}");
    (a, c, r, d)
}

#[test]
fn replay_against_serve_accounts_for_every_request() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve(&config(dir.path(), 8, 256));
    let report = replay(&server.url, "mlp", "poisson:40:3", &dir.path().join("r.json"));
    let (arrivals, completed, _, _) = accounted(&report);
    assert!(arrivals > 60, "{arrivals}");
    assert_eq!(completed, arrivals, "{}", report["requests"]);
    assert_eq!(report["mode"], "replay");
    assert_eq!(report["model"], "mlp");
}

#[test]
fn an_overloaded_model_answers_429_and_nothing_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    // The CNN one request at a time, two waiting at most, offered 2,000 requests/s.
    let server = serve(&config(dir.path(), 1, 2));
    let report = replay(&server.url, "cnn", "poisson:2000:1", &dir.path().join("r.json"));
    let (_, completed, rejected, _) = accounted(&report);
    assert!(completed > 0, "{}", report["requests"]);
    assert!(rejected > 0, "{}", report["requests"]);
    assert_eq!(report["requests"]["rejected_by_reason"]["throttled"].as_u64(), Some(rejected));
}
