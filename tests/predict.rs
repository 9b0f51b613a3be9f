//! `hyscale predict`: the predictors are compared on a shipped trace, and bad names are the user's error.

use std::process::Command;

fn hyscale(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_hyscale")).args(args).output().expect("hyscale runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const CONV: &str = "traces/data/azure_llm_2023/AzureLLMInferenceTrace_conv.csv";

#[test]
fn the_table_has_a_row_per_predictor() {
    let (code, stdout, stderr) = hyscale(&["predict", "--trace", CONV, "--predictor", "last-value,ewma"]);
    assert_eq!(code, 0, "{stderr}");
    // The conversation trace spans 58 full minutes: 41 fit (70%), 17 tested.
    assert!(stdout.contains("58 of 60 s: 41 to fit"), "{stdout}");
    let rows: Vec<&str> = stdout.lines().filter(|l| l.starts_with("last-value ") || l.starts_with("ewma ")).collect();
    assert_eq!(rows.len(), 2, "{stdout}");
    for row in rows {
        let mape: f64 = row.split_whitespace().nth(1).unwrap().parse().unwrap();
        assert!(mape > 0.0 && mape < 100.0, "{row}");
    }
}

#[test]
fn json_reports_every_predictor_with_its_errors() {
    let (code, stdout, stderr) = hyscale(&[
        "predict",
        "--trace",
        CONV,
        "--predictor",
        "moving-max,holt-winters",
        "--interval-s",
        "10",
        "--json",
    ]);
    assert_eq!(code, 0, "{stderr}");
    let json: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(json["intervals"], 350);
    assert_eq!(json["test_intervals"], 105);
    let names: Vec<&str> = json["predictors"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["moving-max", "holt-winters"]);
    assert_eq!(json["predictors"][0]["forecasts"], 105);
    assert!(json["predictors"][1]["rmse"].as_f64().unwrap() > 0.0);
}

#[test]
fn an_unknown_predictor_lists_the_known_ones() {
    let (code, _, stderr) = hyscale(&["predict", "--trace", CONV, "--predictor", "ewma,prophet"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("no such predictor 'prophet'") && stderr.contains("holt-winters"), "{stderr}");
}

#[test]
fn a_trace_too_short_to_split_is_the_users_error() {
    let (code, _, stderr) = hyscale(&["predict", "--trace", "poisson:5:120", "--predictor", "ewma"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("too few"), "{stderr}");
}
