//! Builds small scenarios in a temporary folder, with the production loaders.

use std::path::Path;

use hyscale_policies::report::Report;
use hyscale_policies::{Action, Nanos, Policy, RequestInfo, Route, Router, Scaler, SpotNotice, View};
use hyscale_sim::Scenario;
use hyscale_traces::{Arrival, ArrivalStream};
use tempfile::TempDir;

/// One VM type `vm1` ($3.60/h, so $0.001 per second) with fixed `BOOT_S` seconds to provision, spot at
/// $1.80/h; functions with a fixed `COLD_S` cold start and a model of size 0 (so no load time).
pub const CATALOG: &str = r#"
[[vm]]
name = "vm1"
vcpus = 2
memory_gib = 4
price_on_demand_per_h = 3.6
price_spot_per_h = 1.8
spot_interruptions_per_h = HAZARD
launch_boot_s = { kind = "fixed", value = BOOT_S }
model_load_mb_per_s = 100.0

[functions]
price_per_gb_s = 0.001
price_per_request = 0.01
provisioned_price_per_gb_s = 0.0001
provisioned_duration_price_per_gb_s = 0.0005
provisioned_granularity_s = 300.0
billing_granularity_ms = 1.0
bill_init = true
memory_min_mb = 128
memory_max_mb = 10240
mb_per_vcpu = 1024.0
regional_concurrency = REGIONAL
function_scale_step = SCALE_STEP
function_scale_interval_s = 10.0
default_memory_mb = 1024
default_keep_alive_s = 600.0
sandbox_init_s = { kind = "fixed", value = COLD_S }
model_load_mb_per_s = { kind = "fixed", value = 100.0 }
"#;

/// vm1 serves a batch in 100 ms + 10 ms per extra request; a function with one vCPU in 200 ms.
pub const PROFILE: &str = r#"
[model]
name = "tiny"
size_mb = 0.0

[[hardware]]
hardware = "vm1"
batch = [1, 4]
latency_ms = [100.0, 130.0]

[[hardware]]
hardware = "function"
batch = [1]
latency_ms = [200.0]
"#;

/// Knobs of the fixture catalog.
pub struct Cloud {
    pub boot_s: f64,
    pub cold_s: f64,
    pub regional: u32,
    pub hazard_per_h: f64,
    /// Concurrent executions one function may add per 10 s.
    pub scale_step: u32,
}

impl Default for Cloud {
    fn default() -> Cloud {
        Cloud { boot_s: 30.0, cold_s: 0.8, regional: 1000, hazard_per_h: 0.0, scale_step: 1000 }
    }
}

/// A scenario folder: `scenario.toml` (header + `body`), `catalog.toml`, `profile.toml`.
pub struct Fixture {
    pub _dir: TempDir,
    pub scenario: Scenario,
}

pub fn fixture(cloud: &Cloud, body: &str) -> Fixture {
    fixture_with_profile(cloud, PROFILE, body)
}

/// As [`fixture`], with another profile file.
pub fn fixture_with_profile(cloud: &Cloud, profile: &str, body: &str) -> Fixture {
    fixture_with_files(cloud, profile, body, &[])
}

/// As [`fixture_with_profile`], with more files (name, text) in the scenario's folder.
pub fn fixture_with_files(cloud: &Cloud, profile: &str, body: &str, files: &[(&str, &str)]) -> Fixture {
    let dir = tempfile::tempdir().expect("temp dir");
    let catalog = CATALOG
        .replace("BOOT_S", &format!("{:?}", cloud.boot_s))
        .replace("COLD_S", &format!("{:?}", cloud.cold_s))
        .replace("REGIONAL", &cloud.regional.to_string())
        .replace("SCALE_STEP", &cloud.scale_step.to_string())
        .replace("HAZARD", &format!("{:?}", cloud.hazard_per_h));
    write(dir.path(), "catalog.toml", &catalog);
    write(dir.path(), "profile.toml", profile);
    for (name, text) in files {
        write(dir.path(), name, text);
    }
    let scenario = format!(
        "name = \"test\"\ncatalog = \"catalog.toml\"\nprofile = \"profile.toml\"\n{body}\n{}",
        if body.contains("[trace]") { "" } else { "[trace]\nkind = \"poisson\"\nrate_per_s = 1.0\nduration_s = 1.0\n" }
    );
    let path = dir.path().join("scenario.toml");
    write(dir.path(), "scenario.toml", &scenario);
    let scenario = Scenario::load(&path).unwrap_or_else(|e| panic!("fixture scenario does not load: {e}\n{scenario}"));
    Fixture { _dir: dir, scenario }
}

pub fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).expect("write fixture file");
}

/// Arrivals at the given times (seconds).
pub fn arrivals(times_s: &[f64]) -> ArrivalStream {
    let v: Vec<_> = times_s
        .iter()
        .map(|&t| Ok(Arrival { time: Nanos::from_secs_f64(t), model: 0, input_size: 0, output_size: 0 }))
        .collect();
    Box::new(v.into_iter())
}

/// Runs the fixture's own policy on `times_s`.
pub fn run(f: &Fixture, times_s: &[f64]) -> Report {
    let with_model: Vec<(f64, u32)> = times_s.iter().map(|&t| (t, 0)).collect();
    run_models(f, &with_model)
}

/// Runs the fixture's own policy on arrivals `(time_s, model or function id)`.
pub fn run_models(f: &Fixture, arrivals: &[(f64, u32)]) -> Report {
    let v: Vec<Arrival> = arrivals
        .iter()
        .map(|&(t, model)| Arrival { time: Nanos::from_secs_f64(t), model, input_size: 0, output_size: 0 })
        .collect();
    run_arrivals(f, v)
}

/// Runs the fixture's own policy on these arrivals.
pub fn run_arrivals(f: &Fixture, arrivals: Vec<Arrival>) -> Report {
    let s = &f.scenario;
    let mut policy = s.file.policies.build(&s.file.policy, &s.catalog).expect("policy builds");
    hyscale_sim::simulate(s, policy.as_mut(), Box::new(arrivals.into_iter().map(Ok)), None).expect("simulation runs")
}

/// Asserts that every request ended in exactly one way.
pub fn assert_conserved(r: &Report) {
    let q = &r.requests;
    assert_eq!(q.arrivals, q.completed + q.rejected + q.dropped, "requests lost: {q:?}");
    assert_eq!(q.rejected, q.rejected_by_reason.values().sum::<u64>());
    assert_eq!(q.dropped, q.dropped_by_reason.values().sum::<u64>());
    let t: u64 = r.timeline.iter().map(|row| row.arrivals).sum();
    assert_eq!(t, q.arrivals, "timeline arrivals disagree with the total");
    let c: u64 = r.timeline.iter().map(|row| row.completed + row.rejected + row.dropped).sum();
    assert_eq!(c, q.arrivals, "timeline outcomes disagree with the total");
}

pub fn approx(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}

/// One call of a recorded policy: when, what it returned, what it saw, and what `probe` read from it after.
#[derive(Clone, Debug)]
pub struct Decision<S> {
    /// Simulated time, seconds.
    pub t_s: f64,
    /// The actions the policy returned.
    pub actions: Vec<Action>,
    /// Warm function instances (idle or busy) in the view it saw.
    pub fn_warm: u32,
    /// Function instances alive (cold ones included) in the view it saw.
    pub fn_live: u32,
    /// What the probe read from the policy after it decided.
    pub probe: S,
}

/// Wraps a policy and records every `start` and `tick`, so tests can check the decisions themselves.
pub struct Recorder<P, S> {
    pub policy: P,
    probe: fn(&P) -> S,
    pub log: Vec<Decision<S>>,
}

impl<P: Policy, S: Send> Recorder<P, S> {
    fn record(&mut self, view: &View, out: &[Action]) {
        let f = &view.functions;
        self.log.push(Decision {
            t_s: view.now.as_secs_f64(),
            actions: out.to_vec(),
            fn_warm: f.idle_warm + f.busy,
            fn_live: f.instances(),
            probe: (self.probe)(&self.policy),
        });
    }
}

impl<P: Policy, S: Send> Scaler for Recorder<P, S> {
    fn control_interval(&self) -> Nanos {
        self.policy.control_interval()
    }

    fn start(&mut self, view: &View, out: &mut Vec<Action>) {
        let before = out.len();
        self.policy.start(view, out);
        self.record(view, &out[before..]);
    }

    fn tick(&mut self, view: &View, out: &mut Vec<Action>) {
        let before = out.len();
        self.policy.tick(view, out);
        self.record(view, &out[before..]);
    }

    fn on_spot_notice(&mut self, notice: &SpotNotice, view: &View, out: &mut Vec<Action>) {
        self.policy.on_spot_notice(notice, view, out);
    }
}

impl<P: Policy, S: Send> Router for Recorder<P, S> {
    fn route(&mut self, request: &RequestInfo, view: &View) -> Route {
        self.policy.route(request, view)
    }
}

impl<P: Policy, S: Send> Policy for Recorder<P, S> {
    fn name(&self) -> &str {
        self.policy.name()
    }
}

/// Runs `policy` on the fixture's scenario with arrivals at `times_s`, recording its decisions.
pub fn run_recorded<P: Policy, S: Send>(
    f: &Fixture,
    policy: P,
    probe: fn(&P) -> S,
    times_s: &[f64],
) -> (Report, Vec<Decision<S>>) {
    let mut rec = Recorder { policy, probe, log: Vec::new() };
    let report = hyscale_sim::simulate(&f.scenario, &mut rec, arrivals(times_s), None).expect("simulation runs");
    (report, rec.log)
}

/// A running `hyscale serve`, killed when dropped.
pub struct Server {
    child: std::process::Child,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// `127.0.0.1:PORT`.
    pub addr: String,
}

impl Server {
    /// The server process's resident memory now and at its peak, KiB (`VmRSS`, `VmHWM` of /proc).
    pub fn memory_kib(&self) -> (u64, u64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).expect("/proc status");
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("no {name} in /proc status"))
        };
        (field("VmRSS:"), field("VmHWM:"))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `hyscale serve --config CONFIG` on a free loopback port and waits for its address.
pub fn start_server(config: &Path) -> Server {
    start_server_on(config, "127.0.0.1:0")
}

/// Starts `hyscale serve --config CONFIG --listen LISTEN` and waits for its address.
pub fn start_server_on(config: &Path, listen: &str) -> Server {
    use std::io::BufRead;
    use std::process::{Command, Stdio};
    let mut child = Command::new(env!("CARGO_BIN_EXE_hyscale"))
        .args(["serve", "--config", config.to_str().expect("utf-8 path"), "--listen", listen])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("hyscale serve starts");
    let mut line = String::new();
    let stdout = child.stdout.take().expect("piped stdout");
    std::io::BufReader::new(stdout).read_line(&mut line).expect("reads the address");
    let url = line.trim().strip_prefix("listening on ").unwrap_or_else(|| panic!("unexpected: {line:?}")).to_string();
    let addr = url.trim_start_matches("http://").to_string();
    Server { child, url, addr }
}

/// Runs `hyscale replay` of `trace` against `url` for `model` and returns its JSON report.
pub fn replay_report(url: &str, model: &str, trace: &str, out: &Path) -> serde_json::Value {
    use std::process::{Command, Stdio};
    let status = Command::new(env!("CARGO_BIN_EXE_hyscale"))
        .args(["replay", "--trace", trace, "--endpoint", url, "--model", model, "--timeout-s", "20"])
        .args(["--out", out.to_str().expect("utf-8 path")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("hyscale replay runs");
    assert!(status.success());
    serde_json::from_str(&std::fs::read_to_string(out).expect("report written")).expect("report is JSON")
}
