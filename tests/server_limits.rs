//! `hyscale serve` against requests that used to hurt it, over real TCP: a shape announcing 10^12 rows (it
//! aborted the process on a 256 TB allocation), a product that overflows, a body over the limit, a client
//! that stalls mid-body, and made-up model names that must not grow the metric labels. After each one the
//! server still answers a good request.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::support::start_server as serve;

fn config(dir: &std::path::Path, limits: &str) -> std::path::PathBuf {
    let model = std::path::absolute("backend/models/mlp.onnx").unwrap();
    let text = format!(
        "[engine]\nengine = \"tract\"\n\n[limits]\n{limits}\n\n[[models]]\nname = \"mlp\"\npath = {:?}\nmax_batch = 4\n",
        model.to_str().unwrap()
    );
    let path = dir.join("live.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Sends raw bytes, reads the whole answer (the request says `Connection: close`); returns status and text.
fn exchange(addr: &str, raw: &[u8]) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(raw).unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let status = text.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or_else(|| panic!("no status: {text:?}"));
    (status, text)
}

fn post(addr: &str, path: &str, body: &str) -> (u16, String) {
    let raw = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    exchange(addr, raw.as_bytes())
}

fn good(addr: &str) -> (u16, String) {
    let data = vec!["0.5"; 64].join(",");
    post(
        addr,
        "/v2/models/mlp/infer",
        &format!(r#"{{"inputs":[{{"name":"input","datatype":"FP32","shape":[1,64],"data":[{data}]}}]}}"#),
    )
}

#[test]
fn the_request_that_aborted_the_server_is_a_400_and_the_server_lives_on() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve(&config(dir.path(), ""));
    let (status, text) = post(
        &server.addr,
        "/v2/models/mlp/infer",
        r#"{"inputs":[{"name":"input","datatype":"FP32","shape":[1000000000000,64],"data":[1.0]}]}"#,
    );
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("limits.max_elements"), "{text}");
    // A product that overflows 64 bits.
    let (status, text) = post(
        &server.addr,
        "/v2/models/mlp/infer",
        r#"{"inputs":[{"name":"input","datatype":"FP32","shape":[9223372036854775807,64],"data":[1.0]}]}"#,
    );
    assert_eq!(status, 400, "{text}");
    let (status, text) = good(&server.addr);
    assert_eq!(status, 200, "{text}");
}

#[test]
fn a_body_over_the_limit_is_413_announced_or_not() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve(&config(dir.path(), "max_body_bytes = 2048"));
    let big = format!(
        r#"{{"inputs":[{{"name":"input","datatype":"FP32","shape":[1,64],"data":[{}]}}]}}"#,
        vec!["0.125"; 600].join(",")
    );
    let (status, text) = post(&server.addr, "/v2/models/mlp/infer", &big);
    assert_eq!(status, 413, "{text}");
    assert!(text.contains("limits.max_body_bytes"), "{text}");
    // Chunked, so no Content-Length announces it: the limit still holds while reading.
    let raw = format!(
        "POST /v2/models/mlp/infer HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{:x}\r\n{big}\r\n0\r\n\r\n",
        big.len()
    );
    let (status, text) = exchange(&server.addr, raw.as_bytes());
    assert_eq!(status, 413, "{text}");
    assert_eq!(good(&server.addr).0, 200);
}

#[test]
fn a_stalled_client_gets_408_and_holds_no_one_else_up() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve(&config(dir.path(), "body_timeout_s = 0.5"));
    let mut stalled = TcpStream::connect(&server.addr).unwrap();
    stalled
        .write_all(b"POST /v2/models/mlp/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\nConnection: close\r\n\r\n{\"inputs\":")
        .unwrap();
    // Others are served while it stalls.
    for _ in 0..3 {
        assert_eq!(good(&server.addr).0, 200);
    }
    let started = Instant::now();
    stalled.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut text = String::new();
    stalled.read_to_string(&mut text).unwrap();
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("limits.body_timeout_s"), "{text}");
    assert!(started.elapsed() < Duration::from_secs(20));
}

/// With `max_in_flight = 1`, a client stalled mid-body holds the one place: another request is refused at
/// once with 503 and a Retry-After (its body read and thrown away, so the answer arrives whole), and once
/// the stalled one has timed out the server serves again.
#[test]
fn requests_over_max_in_flight_get_503_before_their_body_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve(&config(dir.path(), "body_timeout_s = 1.0\nmax_in_flight = 1"));
    let mut stalled = TcpStream::connect(&server.addr).unwrap();
    stalled
        .write_all(
            b"POST /v2/models/mlp/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\nConnection: close\r\n\r\n{",
        )
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let (status, text) = good(&server.addr);
    assert_eq!(status, 503, "{text}");
    assert!(text.contains("limits.max_in_flight"), "{text}");
    assert!(text.to_ascii_lowercase().contains("retry-after:"), "{text}");
    let mut rest = String::new();
    stalled.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    stalled.read_to_string(&mut rest).unwrap();
    assert!(rest.starts_with("HTTP/1.1 408"), "{rest}");
    assert_eq!(good(&server.addr).0, 200);
}

#[test]
fn made_up_model_names_do_not_become_metric_labels() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve(&config(dir.path(), ""));
    for i in 0..20 {
        assert_eq!(post(&server.addr, &format!("/v2/models/nope{i}/infer"), "{}").0, 404);
    }
    assert_eq!(good(&server.addr).0, 200);
    let raw = "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    let (status, text) = exchange(&server.addr, raw.as_bytes());
    assert_eq!(status, 200);
    assert!(!text.contains("nope"), "{text}");
    assert!(text.contains(r#"hyscale_requests_total{model="(unknown)",outcome="not_found"} 20"#), "{text}");
    assert!(text.contains(r#"hyscale_requests_total{model="mlp",outcome="ok"} 1"#), "{text}");
}

#[test]
fn an_overloaded_model_answers_429_with_retry_after_and_serves_again_after() {
    // The CNN one request at a time with one waiting, 24 clients at once: the surplus is refused at once with
    // 429 and a Retry-After, never queued without bound; every request gets exactly one answer, and once the
    // burst is over the model serves again.
    let dir = tempfile::tempdir().unwrap();
    let model = std::path::absolute("backend/models/cnn.onnx").unwrap();
    let text = format!(
        "retry_after_s = 3\n[engine]\nengine = \"tract\"\n\n[[models]]\nname = \"cnn\"\npath = {:?}\nmax_batch = 1\n\
         queue_capacity = 1\n",
        model.to_str().unwrap()
    );
    let path = dir.path().join("live.toml");
    std::fs::write(&path, text).unwrap();
    let server = serve(&path);
    let data = vec!["0.25"; 3 * 32 * 32].join(",");
    let body = format!(r#"{{"inputs":[{{"name":"input","datatype":"FP32","shape":[1,3,32,32],"data":[{data}]}}]}}"#);
    let answers: Vec<(u16, String)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..24).map(|_| s.spawn(|| post(&server.addr, "/v2/models/cnn/infer", &body))).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let ok = answers.iter().filter(|(st, _)| *st == 200).count();
    let refused: Vec<&String> = answers.iter().filter(|(st, _)| *st == 429).map(|(_, t)| t).collect();
    eprintln!("overload: sent 24, completed {ok}, refused 429 {}", refused.len());
    assert_eq!(ok + refused.len(), 24, "{answers:?}");
    assert!(ok >= 1 && !refused.is_empty(), "{answers:?}");
    assert!(refused.iter().all(|t| t.to_ascii_lowercase().contains("retry-after: 3")), "{refused:?}");
    assert_eq!(post(&server.addr, "/v2/models/cnn/infer", &body).0, 200);
}
