//! `hyscale trace stats|convert|gen` on the shipped traces, and `hyscale simulate` on every trace shape.

use std::process::Command;

fn hyscale(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_hyscale")).args(args).output().expect("hyscale runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn stats_json(source: &str) -> serde_json::Value {
    let (code, stdout, stderr) = hyscale(&["trace", "stats", source, "--json"]);
    assert_eq!(code, 0, "{source}: {stderr}");
    serde_json::from_str(&stdout).unwrap()
}

#[test]
fn stats_of_the_shipped_traces() {
    let conv = stats_json("traces/data/azure_llm_2023/AzureLLMInferenceTrace_conv.csv");
    assert_eq!(conv["requests"], 19_366);
    let code = stats_json("traces/data/azure_llm_2023/AzureLLMInferenceTrace_code.csv");
    assert_eq!(code["requests"], 8_819);
    // The code trace is bursty: about a fifth of its minutes are empty (12 of 58).
    assert_eq!(code["per_minute"]["bins"], 58);
    assert!((code["per_minute"]["idle_share"].as_f64().unwrap() - 12.0 / 58.0).abs() < 1e-9);
    let azf = stats_json("azure-functions:even:traces/data/azure_functions_2019_sample/invocations.csv");
    assert_eq!(azf["requests"], 3_037_902);
    assert_eq!(azf["models"], 500);
    assert_eq!(azf["per_minute"]["bins"], 480);

    let (code, stdout, stderr) =
        hyscale(&["trace", "stats", "traces/data/azure_llm_2023/AzureLLMInferenceTrace_conv.csv"]);
    assert_eq!(code, 0, "{stderr}");
    for line in ["requests    19366", "mean rate", "peak/mean", "1 s", "60 s"] {
        assert!(stdout.contains(line), "{line}: {stdout}");
    }
    assert!(stderr.contains("arrivals/s"), "{stderr}");
}

#[test]
fn convert_and_gen_write_the_canonical_csv_that_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("code.csv");
    let (code, stdout, stderr) = hyscale(&[
        "trace",
        "convert",
        "traces/data/azure_llm_2023/AzureLLMInferenceTrace_code.csv",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("wrote 8819 arrivals"), "{stdout}");
    let text = std::fs::read_to_string(&out).unwrap();
    assert!(text.starts_with("time_s,model,input_size,output_size\n0.000000000,0,"), "{}", &text[..80]);
    assert_eq!(stats_json(out.to_str().unwrap())["requests"], 8_819);

    let generated = dir.path().join("mmpp.csv");
    let args = ["low_rate_per_s=1", "high_rate_per_s=20", "mean_low_s=60", "mean_high_s=20", "duration_s=600"];
    let mut gen_args = vec!["trace", "gen", "mmpp"];
    gen_args.extend(args);
    gen_args.extend(["--seed", "4", "--out", generated.to_str().unwrap()]);
    let (code, _, stderr) = hyscale(&gen_args);
    assert_eq!(code, 0, "{stderr}");
    let first = std::fs::read(&generated).unwrap();
    let (code, _, _) = hyscale(&gen_args);
    assert_eq!(code, 0);
    assert_eq!(first, std::fs::read(&generated).unwrap(), "same seed, same bytes");
}

#[test]
fn bad_trace_input_is_named_with_exit_code_2() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.csv");
    std::fs::write(&bad, "time_s,model,input_size,output_size\n0.5,0,1,1\n0.4,0,1,1\n").unwrap();
    let (code, _, stderr) = hyscale(&["trace", "stats", bad.to_str().unwrap()]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("bad.csv:3: timestamp goes back 100.000 ms"), "{stderr}");
    let (code, _, stderr) = hyscale(&["trace", "stats", "traces/data/azure_functions_2019_sample/invocations.csv"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("azure-functions:uniform:"), "{stderr}");
    let (code, _, stderr) = hyscale(&["trace", "gen", "zipf", "--out", "x.csv"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("no generator 'zipf'; the generators are: poisson, mmpp"), "{stderr}");
    let (code, _, stderr) = hyscale(&["trace", "gen", "poisson", "rate_per_s=-1", "duration_s=5", "--out", "x.csv"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("poisson rate_per_s must be a positive number, got -1"), "{stderr}");
}

#[test]
fn simulate_runs_on_every_trace_shape() {
    for trace in [
        "gen:diurnal:mean_rate_per_s=3,amplitude=0.5,period_s=600,duration_s=600",
        "gen:gamma:rate_per_s=3,cv=2,duration_s=600",
    ] {
        let (code, stdout, stderr) =
            hyscale(&["simulate", "--scenario", "scenarios/conv_function_only.toml", "--trace", trace, "--json"]);
        assert_eq!(code, 0, "{trace}: {stderr}");
        let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
        let q = &report["requests"];
        let total = q["completed"].as_u64().unwrap() + q["rejected"].as_u64().unwrap() + q["dropped"].as_u64().unwrap();
        assert_eq!(q["arrivals"].as_u64().unwrap(), total, "{trace}");
        assert!(total > 0, "{trace}");
    }
    // The NASA trace's first day, through a trace spec file (a window over the .tbz2 count series).
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("nasa_day.toml");
    let nasa = std::path::absolute("traces/data/nasa_1995/per_second_counts.tbz2").unwrap();
    std::fs::write(
        &spec,
        format!(
            "kind = \"window\"\nend_s = 86400\n[source]\nkind = \"count-series\"\npath = {:?}\nspread = \"even\"\n",
            nasa.to_str().unwrap()
        ),
    )
    .unwrap();
    let (code, stdout, stderr) = hyscale(&[
        "simulate",
        "--scenario",
        "scenarios/nasa_week_static.toml",
        "--trace",
        spec.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(code, 0, "{stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["requests"]["arrivals"], stats_json(spec.to_str().unwrap())["requests"]);
    assert!(
        report["trace"].as_str().unwrap().starts_with("window[0s..86400s](count-series:even:"),
        "{}",
        report["trace"]
    );
    let (code, stdout, stderr) = hyscale(&["simulate", "--scenario", "scenarios/azf_function_only.toml"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("azure-functions:uniform:"), "{stdout}");
}
