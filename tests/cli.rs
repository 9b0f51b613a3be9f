//! The command line: the quick start works, and bad input gets exit code 2 and a message that names it.

use std::process::Command;

use crate::support::write;

fn hyscale(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_hyscale")).args(args).output().expect("hyscale runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_quick_start_prints_a_report_and_writes_json() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("report.json");
    let (code, stdout, stderr) =
        hyscale(&["simulate", "--scenario", "scenarios/conv_static.toml", "--out", out.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("requests           19366"), "{stdout}");
    assert!(stdout.contains("SLO"), "{stdout}");
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert_eq!(json["requests"]["arrivals"], 19366);
    assert_eq!(json["policy"], "static");
}

/// `hyscale plot`: a report drawn as SVG and PNG (real files, real text), the SLO misses explained in the
/// report, and bad input refused with code 2.
#[test]
fn plot_draws_a_report_and_refuses_what_is_not_one() {
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("conv-target-tracking.json");
    let (code, stdout, stderr) =
        hyscale(&["simulate", "--scenario", "scenarios/conv_target_tracking.toml", "--out", report.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    // Why it misses: requests queue behind busy instances while it scales out.
    assert!(stdout.contains("late") && stdout.contains("queued_behind_busy_instance="), "{stdout}");
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert!(json["slo"]["misses_by_cause"]["queued_behind_busy_instance"].as_u64().unwrap() > 0, "{}", json["slo"]);
    assert_eq!(json["latency_ms"]["cdf"].as_array().map(Vec::len), Some(55));
    let plots = dir.path().join("plots");
    let (code, stdout, stderr) = hyscale(&["plot", report.to_str().unwrap(), "--out", plots.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    for name in ["reports-latency-cdf", "reports-cost", "conv-target-tracking-timeline"] {
        let svg = std::fs::read_to_string(plots.join(format!("{name}.svg"))).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("<text"), "{name}.svg");
        let png = std::fs::read(plots.join(format!("{name}.png"))).unwrap();
        assert_eq!(&png[1..4], b"PNG", "{name}.png");
        assert!(stdout.contains(&format!("{name}.png")), "{stdout}");
    }
    let svg = std::fs::read_to_string(plots.join("reports-latency-cdf.svg")).unwrap();
    assert!(svg.contains("Latency CDF") && svg.contains("SLO 200 ms"), "the CDF's title and SLO line");

    let not_a_report = dir.path().join("x.json");
    std::fs::write(&not_a_report, "{\"a\": 1}").unwrap();
    let (code, _, stderr) = hyscale(&["plot", not_a_report.to_str().unwrap(), "--out", plots.to_str().unwrap()]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("x.json: not a hyscale report"), "{stderr}");
    let (code, _, stderr) = hyscale(&["plot", "/no/such.json", "--out", plots.to_str().unwrap()]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("/no/such.json"), "{stderr}");
}

#[test]
fn fidelity_refuses_bad_input_before_starting_anything() {
    let trace = "traces/data/azure_llm_2023/AzureLLMInferenceTrace_conv.csv";
    let (code, _, stderr) = hyscale(&["fidelity", "--trace", trace, "--policy", "static,nosuch"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("unknown policy 'nosuch'") && stderr.contains("function-only"), "{stderr}");
    let (code, _, stderr) = hyscale(&["fidelity", "--trace", trace, "--policy", "static", "--duration-s=-5"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("--duration-s"), "{stderr}");
    let (code, _, stderr) = hyscale(&["fidelity", "--trace", trace, "--policy", "static", "--config", "live/mlp.toml"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("mlp.toml: no [cluster] table"), "{stderr}");
    let (code, _, stderr) = hyscale(&["fidelity", "--trace", trace, "--policy", "static", "--model", "no/such.onnx"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("no/such.onnx: no such file"), "{stderr}");
}

#[test]
fn overrides_change_policy_seed_and_trace() {
    let (code, stdout, stderr) = hyscale(&[
        "simulate",
        "--scenario",
        "scenarios/conv_static.toml",
        "--policy",
        "function-only",
        "--seed",
        "9",
        "--trace",
        "poisson:5:60",
        "--json",
    ]);
    assert_eq!(code, 0, "{stderr}");
    let json: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(json["policy"], "function-only");
    assert_eq!(json["seed"], 9);
    assert!(json["trace"].as_str().unwrap().starts_with("poisson:5/s"));
}

#[test]
fn a_bad_scenario_field_is_named_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "s.toml", "name = \"x\"\nseed = \"not a number\"\npolicy = \"static\"\n");
    let path = dir.path().join("s.toml");
    let (code, _, stderr) = hyscale(&["simulate", "--scenario", path.to_str().unwrap()]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("s.toml"), "{stderr}");
    assert!(stderr.contains("line 2"), "{stderr}");
}

#[test]
fn an_unknown_policy_lists_the_known_ones() {
    let (code, _, stderr) = hyscale(&["simulate", "--scenario", "scenarios/conv_static.toml", "--policy", "magic"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("no such policy") && stderr.contains("function-only"), "{stderr}");
}

#[test]
fn a_malformed_trace_row_is_named_by_file_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "t.csv",
        "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.1,1,1\n2023-11-16 18:15:47.1,12x,1\n",
    );
    let trace = dir.path().join("t.csv");
    let (code, _, stderr) =
        hyscale(&["simulate", "--scenario", "scenarios/conv_static.toml", "--trace", trace.to_str().unwrap()]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("t.csv:3: column 'ContextTokens'"), "{stderr}");
}

#[test]
fn a_missing_catalog_is_named() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "s.toml",
        "name = \"x\"\npolicy = \"static\"\ncatalog = \"nope.toml\"\nprofile = \"p.toml\"\n[trace]\nkind = \"poisson\"\nrate_per_s = 1.0\nduration_s = 1.0\n",
    );
    let (code, _, stderr) = hyscale(&["simulate", "--scenario", dir.path().join("s.toml").to_str().unwrap()]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("nope.toml"), "{stderr}");
}

/// Every command, given a missing, malformed or impossible input, exits with code 2 and a message naming the
/// problem: never a panic, never a partial output file.
#[test]
fn every_command_refuses_bad_input_with_code_2_and_no_output_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let write = |name: &str, text: &str| {
        let p = d.join(name);
        std::fs::write(&p, text).unwrap();
        p.to_str().unwrap().to_string()
    };
    let scenario = std::fs::read_to_string("scenarios/conv_static.toml").unwrap();
    let base = std::path::absolute("scenarios").unwrap();
    let rebased = scenario.replace("\"../", &format!("\"{}/../", base.display()));
    assert!(rebased.contains("sl_min = 0.98"), "the scenario's SLO changed");
    let sl_min = write("slmin.toml", &rebased.replace("sl_min = 0.98", "sl_min = 1.5"));
    let unknown_key = write("unknown.toml", &format!("colour = \"blue\"\n{rebased}"));
    let not_onnx = write("model.onnx", "this is not an ONNX file");
    let bad_serve = write("serve.toml", "listen = \"127.0.0.1:0\"\nmodels = 5\n");
    let no_threads = write("serve3.toml", "server_threads = 0\nmodels = []\n");
    let bad_rows = write("bad.csv", "time_s,model,input_size,output_size\n0.5,0,1,1\n1.0,0,1,1\nsoon,0,1,1\n");
    let missing_model =
        write("serve2.toml", "[engine]\nengine = \"tract\"\n\n[[models]]\nname = \"m\"\npath = \"nope.onnx\"\n");
    let out = d.join("out.json");
    let o = out.to_str().unwrap();
    let txt = d.join("t.txt").to_str().unwrap().to_string();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["simulate", "--scenario", "nope.toml", "--out", o], "nope.toml"),
        (vec!["simulate", "--scenario", &sl_min, "--out", o], "sl_min"),
        (vec!["simulate", "--scenario", &unknown_key, "--out", o], "colour"),
        (vec!["simulate", "--scenario", "scenarios/conv_static.toml", "--policy", "nope", "--out", o], "nope"),
        (vec!["simulate", "--scenario", "scenarios/conv_static.toml", "--trace", "poisson:-5:10", "--out", o], "-5"),
        (vec!["predict", "--trace", "nope.csv", "--predictor", "ewma"], "nope.csv"),
        (vec!["predict", "--trace", "poisson:10:600", "--predictor", "nope"], "nope"),
        (vec!["predict", "--trace", "poisson:10:600", "--predictor", "ewma", "--train-fraction", "1.5"], "train"),
        (vec!["profile", "--model", "nope.onnx", "--out", o], "nope.onnx"),
        (vec!["profile", "--model", &not_onnx, "--cold-starts", "0", "--out", o], "model.onnx"),
        (vec!["profile", "--model", "backend/models/mlp.onnx", "--max-batch", "0", "--out", o], "max-batch"),
        (vec!["simulate", "--scenario", "scenarios/conv4x_compare.toml", "--policy", "all", "--table", &txt], "t.txt"),
        (vec!["trace", "stats", "nope.csv"], "nope.csv"),
        (vec!["trace", "convert", &bad_rows, "--out", o], "bad.csv:4"),
        (vec!["replay", "--trace", "poisson:1:1", "--endpoint", "not a url", "--model", "m", "--out", o], "endpoint"),
        (vec!["serve", "--config", &missing_model], "nope.onnx"),
        (vec!["trace", "gen", "poisson:-1:10", "--out", o], "-1"),
        (
            vec!["replay", "--trace", "poisson:-1:1", "--endpoint", "http://127.0.0.1:9", "--model", "m", "--out", o],
            "-1",
        ),
        (
            vec![
                "replay",
                "--trace",
                "poisson:1:1",
                "--endpoint",
                "http://127.0.0.1:9",
                "--model",
                "m",
                "--sl-min",
                "1.5",
                "--out",
                o,
            ],
            "sl-min",
        ),
        (vec!["serve", "--config", "nope.toml"], "nope.toml"),
        (vec!["serve", "--config", &bad_serve], "models"),
        (vec!["serve", "--config", &no_threads], "server_threads must be 1 to 1024, got 0"),
        (vec!["keepalive", "--scenario", "nope.toml", "--table", o], "nope.toml"),
        (vec!["fsd", "--mlp", "16,32,10", "--parallelism", "0", "--out", o], "--parallelism"),
        (vec!["fsd", "--mlp", "16", "--out", o], "--mlp"),
        (vec!["fsd", "--mlp", "16,32,10", "--channel", "smoke", "--out", o], "smoke"),
        (vec!["fsd", "--mlp", "16,32,10", "--parallelism", "16", "--out", o], "exceeds layer 2's 10 outputs"),
        (vec!["fsd", "--model", "backend/models/cnn.onnx", "--out", o], "Conv"),
        (vec!["sweep", "nope.toml", "--out", o], "nope.toml"),
        (vec!["sweep", &unknown_key, "--shard", "3/2", "--out", o], "--shard"),
        (vec!["sweep", "merge", "nope.json", "--out", o], "nope.json"),
        (vec!["bench", "--hours", "0", "--out", o], "--hours"),
        (vec!["bench", "--against", "no/such/hyscale", "--out", o], "no/such/hyscale"),
        (vec!["bench", "serve", "--protocols", "smtp", "--out", o], "smtp"),
        (vec!["bench", "serve", "--concurrency", "0", "--out", o], "--concurrency"),
        (vec!["bench", "serve", "--server-threads", "0", "--out", o], "--server-threads"),
        (vec!["bench", "serve", "--rate", "0", "--out", o], "--rate"),
        (vec!["bench", "serve", "--models", "resnet", "--out", o], "resnet"),
        (vec!["bench", "serve", "--config", "nope.toml", "--out", o], "nope.toml"),
        (vec!["keepalive", "--scenario", "scenarios/azf_keepalive.toml", "--minutes", "-5", "--table", o], "-5"),
    ];
    for (args, named) in cases {
        let (code, _, err) = hyscale(&args);
        assert_eq!(code, 2, "hyscale {args:?}: exit {code}, {err}");
        assert!(!err.contains("panicked"), "hyscale {args:?} panicked: {err}");
        assert!(err.contains(named), "hyscale {args:?} does not name {named:?}: {err}");
        assert!(!out.exists() && !d.join("t.txt").exists(), "hyscale {args:?} left an output file behind");
    }
}

/// `hyscale bench --against OTHER` alternates runs of another build with this one's on the same workloads and
/// gives the per-pair speed ratios (here the other build is this one: the same requests, any speed).
#[test]
fn bench_against_another_build_pairs_their_runs() {
    let dir = tempfile::tempdir().unwrap();
    let (files, out) = (dir.path().join("bench"), dir.path().join("bench.json"));
    let exe = env!("CARGO_BIN_EXE_hyscale");
    let (code, stdout, stderr) = hyscale(&[
        "bench",
        "--hours",
        "0.01",
        "--runs",
        "2",
        "--against",
        exe,
        "--dir",
        files.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("ratio") && stdout.contains("faster"), "{stdout}");
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    let workloads = json["workloads"].as_array().unwrap();
    assert_eq!(workloads.len(), 2, "{json}");
    for w in workloads {
        let (mine, other) = (w["runs"].as_array().unwrap(), w["against"]["runs"].as_array().unwrap());
        assert_eq!((mine.len(), other.len()), (2, 2), "{w}");
        for (m, o) in mine.iter().zip(other) {
            assert!(m["requests"].as_u64().unwrap() > 1000, "{m}");
            assert_eq!(m["requests"], o["requests"], "{w}");
            assert_eq!(m["events"], o["events"], "{w}");
        }
        let ratios = w["against"]["speed_ratios"].as_array().unwrap();
        assert_eq!(ratios.len(), 2, "{w}");
        assert!(ratios.iter().all(|r| r.as_f64().is_some_and(|x| x.is_finite() && x > 0.0)), "{w}");
        assert!(w["against"]["pairs_faster"].as_u64().unwrap() <= 2, "{w}");
    }
}

/// `hyscale bench serve` drives the server it starts over REST JSON, REST binary and gRPC, closed loop and open
/// loop, and measures the engine alone: every row answered, with the engine's figures beside it.
#[test]
fn bench_serve_measures_every_protocol_against_the_engine() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("serve.json");
    let o = out.to_str().unwrap();
    let common = ["bench", "serve", "--models", "mlp", "--duration-s", "0.3", "--warmup-s", "0.1", "--out", o];
    let (code, stdout, err) = hyscale(&[&common[..], &["--concurrency", "1,4", "--server-threads", "1"]].concat());
    assert_eq!(code, 0, "{err}");
    assert!(stdout.contains("ratio"), "{stdout}");
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    let rows = json["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 6, "3 protocols x 2 levels: {json}");
    for r in rows {
        assert!(r["completed"].as_u64().unwrap() > 0 && r["failed"].as_u64().unwrap() == 0, "{r}");
        assert!(r["engine_samples_per_s"].as_f64().unwrap() > 0.0 && r["mean_batch"].as_f64().unwrap() >= 1.0, "{r}");
        assert!(r["p50_ms"].as_f64().unwrap() <= r["p99_ms"].as_f64().unwrap(), "{r}");
        assert!(r["floor_p50_us"].as_f64().unwrap() > 0.0, "the protocol's floor measured: {r}");
        // Where the CPU went, from the kernel's per-thread run time: the server's threads and the load
        // generator each spent some per request; the engine ran part of the time.
        assert!(r["server_cpu_us_per_request"].as_f64().unwrap() > 0.0, "{r}");
        assert!(r["client_cpu_us_per_request"].as_f64().unwrap() > 0.0, "{r}");
        let busy = r["engine_busy"].as_f64().unwrap();
        assert!(busy > 0.0 && busy <= 1.2, "{r}");
    }
    // The engine alone at every batch size up to the model's max_batch (8 in live/mlp.toml).
    assert_eq!(json["engine_alone"]["mlp"].as_array().unwrap().len(), 8, "{json}");
    // Open loop at a fixed rate: about rate x duration requests answered.
    let (code, _, err) = hyscale(&[&common[..], &["--rate", "200", "--protocols", "binary"]].concat());
    assert_eq!(code, 0, "{err}");
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    let row = &json["rows"][0];
    assert_eq!((row["concurrency"].as_u64(), row["rate_per_s"].as_f64()), (Some(0), Some(200.0)), "{row}");
    assert_eq!(row["completed"].as_u64(), Some(60), "{row}");
}

/// `hyscale fsd` (simulated): the table for P = 1, 2, 4 over both channels, one function and a VM; the queue
/// is cheaper than object storage at the highest P; the JSON draws.
#[test]
fn fsd_prints_the_table_and_writes_json_that_plots() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("fsd.json");
    let (code, stdout, err) = hyscale(&[
        "fsd",
        "--mlp",
        "64,256,256,10",
        "--parallelism",
        "1,2,4",
        "--requests",
        "200",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(stdout.contains("FSD-Inference") && stdout.contains("vm c5.large"), "{stdout}");
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    let rows = json["rows"].as_array().unwrap();
    // P = 1, then 2 and 4 over each channel, then the VM.
    assert_eq!(rows.len(), 6, "{json}");
    let total = |p: u64, c: &str| {
        rows.iter().find(|r| r["parallelism"] == p && r["channel"] == c).unwrap()["cost_per_1000"]["total"]
            .as_f64()
            .unwrap()
    };
    assert!(total(4, "queue") < total(4, "object"), "{json}");
    let (code, stdout, err) =
        hyscale(&["plot", out.to_str().unwrap(), "--out", dir.path().join("pics").to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(stdout.contains("fsd-cost.svg") && stdout.contains("fsd-latency.png"), "{stdout}");
}

/// A sweep run whole equals the merge of its shards, byte for byte, with the shards run as the shipped
/// Slurm script and Kubernetes Indexed Job run them (their commands, with the index the scheduler gives).
#[test]
fn sweep_shards_merge_into_the_whole_grids_table() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let scenario = std::path::absolute("scenarios/conv4x_compare.toml").unwrap();
    let grid = d.join("grid.toml");
    std::fs::write(
        &grid,
        format!(
            "scenarios = [{scenario:?}]\npolicies = [\"static\", \"function-only\", \"mark\"]\nseeds = [1, 2]\n\
             traces = [\"poisson:10:60\"]\n[[params]]\nname = \"a\"\nset = {{ \"slo.rt_max_ms\" = 150.0, \"slo.sl_min\" = 0.95 }}\n\
             [[params]]\nname = \"b\"\nset = {{ \"slo.rt_max_ms\" = 150.0, \"slo.sl_min\" = 0.99 }}\n"
        ),
    )
    .unwrap();
    let (code, out, err) = hyscale(&["sweep", grid.to_str().unwrap(), "--out", d.join("whole").to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("wrote 12 rows"), "{out}");
    let bin_dir = std::path::Path::new(env!("CARGO_BIN_EXE_hyscale")).parent().unwrap();
    let path = format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap_or_default());
    // Three shards as Slurm array tasks.
    for k in 0..3 {
        let status = Command::new("bash")
            .arg("sweeps/slurm.sbatch")
            .env("PATH", &path)
            .env("SLURM_ARRAY_TASK_ID", k.to_string())
            .env("SLURM_ARRAY_TASK_COUNT", "3")
            .env("GRID", &grid)
            .env("OUT", d.join("slurm"))
            .status()
            .unwrap();
        assert!(status.success());
    }
    // Two shards as the Indexed Job's pods: its container command, with the index Kubernetes sets.
    let manifest = std::fs::read_to_string("sweeps/k8s-indexed-job.yaml").unwrap();
    let line = manifest.lines().find(|l| l.trim_start().starts_with("command:")).unwrap();
    let script: String =
        serde_json::from_str::<Vec<String>>(line.trim().trim_start_matches("command:").trim()).unwrap()[2].clone();
    for k in 0..2 {
        let status = Command::new("sh")
            .args(["-c", &script])
            .env("PATH", &path)
            .env("JOB_COMPLETION_INDEX", k.to_string())
            .env("SHARDS", "2")
            .env("GRID", &grid)
            .env("OUT", d.join("k8s"))
            .status()
            .unwrap();
        assert!(status.success());
    }
    let whole = std::fs::read(d.join("whole/sweep.json")).unwrap();
    let pics = d.join("pics");
    let (code, out, err) =
        hyscale(&["plot", d.join("whole/sweep.json").to_str().unwrap(), "--out", pics.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("sweep-cost-vs-slo.png"), "{out}");
    for (folder, n) in [("slurm", 3), ("k8s", 2)] {
        let shards: Vec<String> =
            (0..n).map(|k| d.join(format!("{folder}/shard-{k}-of-{n}.json")).to_str().unwrap().to_string()).collect();
        let merged = d.join(format!("{folder}-merged"));
        let mut args = vec!["sweep", "merge"];
        args.extend(shards.iter().map(String::as_str));
        args.extend(["--out", merged.to_str().unwrap()]);
        let (code, _, err) = hyscale(&args);
        assert_eq!(code, 0, "{err}");
        assert_eq!(std::fs::read(merged.join("sweep.json")).unwrap(), whole, "{folder} shards merged differ");
        assert_eq!(std::fs::read(merged.join("sweep.csv")).unwrap(), std::fs::read(d.join("whole/sweep.csv")).unwrap());
        // A shard missing is refused, naming the missing cells.
        let (code, _, err) = hyscale(&["sweep", "merge", &shards[0], "--out", merged.to_str().unwrap()]);
        assert_eq!(code, 2, "{err}");
        assert!(err.contains("in no shard given"), "{err}");
    }
}

/// `hyscale serve` logs plain text without colour escapes when standard error is not a terminal, and one JSON
/// object a line with `--log-format json`.
#[test]
fn serve_logs_plain_text_to_a_pipe_and_json_on_request() {
    use std::io::{BufRead, Read};
    for format in ["text", "json"] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_hyscale"))
            .args([
                "serve",
                "--config",
                "live/mlp.toml",
                "--listen",
                "127.0.0.1:0",
                "--grpc-listen",
                "127.0.0.1:0",
                "--log-format",
                format,
            ])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut first = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut first).unwrap();
        assert!(first.starts_with("listening on") || first.starts_with("gRPC on"), "{first}");
        child.kill().unwrap();
        child.wait().unwrap();
        let mut log = String::new();
        child.stderr.take().unwrap().read_to_string(&mut log).unwrap();
        let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
        assert!(!lines.is_empty(), "no log");
        assert!(!log.contains('\u{1b}'), "colour escapes in a piped log: {log}");
        if format == "json" {
            for l in &lines {
                let v: serde_json::Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
                assert!(v.get("level").is_some() && v.get("fields").is_some(), "{l}");
            }
        }
    }
}
