//! The live cluster end to end with real processes: `hyscale serve` with a `[cluster]` table on loopback,
//! VM-like workers and `hyscale-fn` sandboxes, driven by `hyscale replay`. Each policy's requests go where
//! it routes them, and every request is accounted for.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::{Server, replay_report, start_server};

/// The function binary next to `hyscale`, built when missing (a `cargo test` of the root package alone
/// does not build the backend's binaries).
fn function_binary() -> PathBuf {
    let exe = PathBuf::from(env!("CARGO_BIN_EXE_hyscale"));
    let f = exe.with_file_name("hyscale-fn");
    if !f.is_file() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "-p", "hyscale-backend", "--bin", "hyscale-fn"])
            .status()
            .expect("cargo builds hyscale-fn");
        assert!(status.success());
    }
    f
}

fn serve(dir: &Path, policy: &str, sections: &str) -> Server {
    let root = std::path::absolute(".").unwrap();
    let text = format!(
        "request_timeout_s = 20.0\n[engine]\nengine = \"tract\"\n\n[[models]]\nname = \"mlp\"\npath = {:?}\n\
         queue_capacity = 256\n\n[cluster]\nmodel = \"mlp\"\ncatalog = {:?}\nprofile = {:?}\npolicy = \"{policy}\"\n\
         time_scale = 0.1\nfunction_binary = {:?}\nfunction_max_sandboxes = 4\n\n\
         [cluster.vm_types.\"c5.large\"]\nprovision_s = 1.5\n\n{sections}",
        root.join("backend/models/mlp.onnx"),
        root.join("data/aws_us_east_1.toml"),
        root.join("live/mlp_profile.toml"),
        function_binary(),
    );
    let config = dir.join("cluster.toml");
    std::fs::write(&config, text).unwrap();
    start_server(&config)
}

/// A plain HTTP/1.1 request on loopback; returns the body.
fn http(addr: &str, method: &str, path: &str) -> String {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(s, "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default()
}

fn status(server: &Server) -> serde_json::Value {
    serde_json::from_str(&http(&server.addr, "GET", "/v2/cluster/mlp")).unwrap()
}

/// Waits until `ready` VM workers serve.
fn wait_ready(server: &Server, ready: u64) {
    let start = Instant::now();
    while status(server)["vms"][1].as_u64() != Some(ready) {
        assert!(start.elapsed() < Duration::from_secs(30), "workers never ready: {}", status(server));
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn replay(server: &Server, trace: &str, out: &Path) -> serde_json::Value {
    replay_report(&server.url, "mlp", trace, out)
}

/// Checks that the replay and the controller both account for every request, and that all completed.
fn all_completed(report: &serde_json::Value, st: &serde_json::Value) -> u64 {
    let q = &report["requests"];
    let n = |k: &str| q[k].as_u64().unwrap();
    assert_eq!(n("arrivals"), n("completed") + n("rejected") + n("dropped"), "requests lost: {q}");
    assert_eq!(n("completed"), n("arrivals"), "{q}");
    let c = |k: &str| st[k].as_u64().unwrap();
    assert_eq!(c("arrivals"), n("arrivals"), "{st}");
    assert_eq!(c("completed"), c("arrivals"), "{st}");
    assert_eq!(c("completed_vm") + c("completed_functions"), c("completed"), "{st}");
    n("arrivals")
}

fn metric(server: &Server, name: &str) -> f64 {
    let text = http(&server.addr, "GET", "/metrics");
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
        .unwrap_or_else(|| panic!("no {name} in {text}"))
}

#[test]
fn static_fleet_serves_every_request_on_its_two_workers() {
    let dir = tempfile::tempdir().unwrap();
    let server =
        serve(dir.path(), "static", "[cluster.policies.static]\nfleet = [{ vm_type = \"c5.large\", count = 2 }]\n");
    wait_ready(&server, 2);
    let report = replay(&server, "poisson:40:2", &dir.path().join("r.json"));
    let st = status(&server);
    let arrivals = all_completed(&report, &st);
    assert!(arrivals > 40, "{arrivals}");
    assert_eq!(st["completed_vm"].as_u64(), Some(arrivals), "{st}");
    assert_eq!(metric(&server, "hyscale_instances{kind=\"vm\",state=\"ready\"}"), 2.0);
}

#[test]
fn function_only_serves_from_sandboxes_with_cold_starts() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve(dir.path(), "function-only", "");
    let report = replay(&server, "poisson:20:2", &dir.path().join("r.json"));
    let st = status(&server);
    let arrivals = all_completed(&report, &st);
    assert_eq!(st["completed_functions"].as_u64(), Some(arrivals), "{st}");
    assert_eq!(st["vms_launched"].as_u64(), Some(0), "{st}");
    assert!(metric(&server, "hyscale_function_cold_starts_total") >= 1.0);
    // The live report bills what ran, by the simulator's rules: $0.20 per million invocations (one per
    // request here), and GB-s of execution at the catalog's price; no VM.
    let cost = &report["cost"];
    let fee = cost["function_requests"].as_f64().unwrap();
    assert!((fee - arrivals as f64 * 0.0000002).abs() < 1e-12, "{cost}");
    assert!(cost["function_compute"].as_f64().unwrap() > 0.0, "{cost}");
    assert_eq!(cost["vm_on_demand"].as_f64(), Some(0.0), "{cost}");
    assert_eq!(st["cost"]["function_requests"], cost["function_requests"], "{st}");
}

/// At `time_scale = 0.1` the policy runs on model time: its 20 s keep-alive lasts 2 s on the wall clock
/// (idle sandboxes are gone 4 s after the last request, where a wall-clock keep-alive would keep them 20 s),
/// and the clock it reads runs ten times as fast as the wall clock.
#[test]
fn a_policys_own_durations_are_compressed_with_the_time_scale() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve(dir.path(), "function-only", "[cluster.policies.function-only]\nkeep_alive_s = 20.0\n");
    let report = replay(&server, "poisson:20:1", &dir.path().join("r.json"));
    let st = status(&server);
    all_completed(&report, &st);
    let warm = |st: &serde_json::Value| st["functions"][1].as_u64().unwrap() + st["functions"][2].as_u64().unwrap();
    assert!(warm(&st) >= 1, "sandboxes stay warm right after the requests: {st}");
    let t0 = (Instant::now(), st["now_s"].as_f64().unwrap());
    std::thread::sleep(std::time::Duration::from_secs(4));
    let st = status(&server);
    assert_eq!(warm(&st), 0, "a 20 s keep-alive at time scale 0.1 is over after 4 s: {st}");
    let model_s = st["now_s"].as_f64().unwrap() - t0.1;
    let wall_s = t0.0.elapsed().as_secs_f64();
    assert!((model_s / wall_s - 10.0).abs() < 1.0, "model clock {model_s} s over {wall_s} s of wall clock");
}

/// `batch` (fixed: 8 requests or 30 ms): requests for the functions wait by the shared batch rule and run
/// as one invocation of their stacked rows; fewer invocations (request fees) than requests, all answered.
#[test]
fn the_batch_policy_batches_function_invocations_live() {
    let dir = tempfile::tempdir().unwrap();
    let sections = "[cluster.policies.batch]\nmode = \"fixed\"\nbatch_size = 8\ntimeout_ms = 30.0\n";
    let server = serve(dir.path(), "batch", sections);
    let report = replay(&server, "poisson:200:2", &dir.path().join("r.json"));
    let st = status(&server);
    let arrivals = all_completed(&report, &st);
    assert_eq!(st["completed_functions"].as_u64(), Some(arrivals), "{st}");
    let invocations = (report["cost"]["function_requests"].as_f64().unwrap() / 0.0000002).round() as u64;
    assert!(invocations > 0 && invocations * 2 < arrivals, "{invocations} invocations for {arrivals} requests");
    assert!(st["actions_refused"].as_object().unwrap().is_empty(), "{st}");
}

/// `hybrid` scales functions vertically (concurrency above 1): live, the action is carried out (one
/// sandbox serves several requests from its one model), never refused.
#[test]
fn hybrid_sets_function_concurrency_live() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve(dir.path(), "hybrid", "[cluster.policies.hybrid]\nmax_concurrency = 4\n");
    let report = replay(&server, "poisson:50:2", &dir.path().join("r.json"));
    let st = status(&server);
    all_completed(&report, &st);
    let refused = st["actions_refused"].as_object().unwrap();
    assert!(!refused.contains_key("not_supported_live"), "{st}");
}

#[test]
fn mark_uses_functions_while_its_first_vm_provisions_then_the_vm() {
    let dir = tempfile::tempdir().unwrap();
    // One on-demand standby: MArk provisions a c5.large at start (ready after 1.5 s); meanwhile it sends
    // requests to functions, then to the VM once it is ready.
    let server = serve(
        dir.path(),
        "mark",
        "[cluster.policies.mark]\nvm_types = [\"c5.large\"]\nstandbys = 1\nprefer_spot = false\n",
    );
    let report = replay(&server, "poisson:30:4", &dir.path().join("r.json"));
    let st = status(&server);
    all_completed(&report, &st);
    assert!(st["completed_functions"].as_u64().unwrap() > 0, "{st}");
    assert!(st["completed_vm"].as_u64().unwrap() > 0, "{st}");
    assert!(st["vms_launched"].as_u64().unwrap() >= 1, "{st}");
    // And once the VM serves, new requests go to it.
    let before = status(&server);
    replay(&server, "poisson:30:1", &dir.path().join("r2.json"));
    let after = status(&server);
    let delta = |k: &str| after[k].as_u64().unwrap() - before[k].as_u64().unwrap();
    assert!(delta("completed_vm") > delta("completed_functions"), "{before} then {after}");
}

#[test]
fn a_spot_interruption_takes_the_worker_and_loses_no_request() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve(
        dir.path(),
        "static",
        "[cluster.policies.static]\nfleet = [{ vm_type = \"c5.large\", count = 2, market = \"spot\" }]\n",
    );
    wait_ready(&server, 2);
    let addr = server.addr.clone();
    // Interrupt worker 0 half a second into a 3 s replay; it is taken half a second later.
    let interrupter = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(500));
        http(&addr, "POST", "/v2/cluster/mlp/instances/0/interrupt?notice_s=0.5")
    });
    let report = replay(&server, "poisson:60:3", &dir.path().join("r.json"));
    interrupter.join().unwrap();
    let st = status(&server);
    all_completed(&report, &st);
    assert_eq!(st["spot_interruptions"].as_u64(), Some(1), "{st}");
    // The static policy replaces the interrupted worker at its notice (`on_spot_notice`).
    assert_eq!(st["vms_launched"].as_u64(), Some(3), "{st}");
    assert!(st["instances"].as_array().unwrap().iter().all(|i| i[0] != 0), "{st}");
}

#[test]
fn every_policy_runs_live_by_name_and_loses_nothing() {
    let sections = "[cluster.policies.static]\nfleet = [{ vm_type = \"c5.large\", count = 1 }]\n\
                    [cluster.policies.target-tracking]\nvm_type = \"c5.large\"\n\
                    [cluster.policies.static-peak]\nvm_type = \"c5.large\"\npeak_rate_per_s = 20.0\n";
    for policy in hyscale_policies::POLICY_NAMES {
        let dir = tempfile::tempdir().unwrap();
        let server = serve(dir.path(), policy, sections);
        let report = replay(&server, "poisson:20:1", &dir.path().join("r.json"));
        let q = &report["requests"];
        let n = |k: &str| q[k].as_u64().unwrap();
        assert_eq!(n("arrivals"), n("completed") + n("rejected") + n("dropped"), "{policy}: {q}");
        let st = status(&server);
        assert_eq!(st["policy"], *policy);
        let c = |k: &str| st[k].as_u64().unwrap();
        assert_eq!(c("arrivals"), c("completed") + c("rejected") + c("dropped"), "{policy}: {st}");
        if *policy == "static" {
            // One c5.large ($0.085/h) alive for seconds: at least its 60 s minimum, $0.085 / 60.
            let vm = report["cost"]["vm_on_demand"].as_f64().unwrap();
            assert!(vm >= 0.085 / 60.0 - 1e-12, "{}", report["cost"]);
        }
    }
}
