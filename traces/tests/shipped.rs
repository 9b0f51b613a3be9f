//! The shipped traces, counted exactly, and the generators' rates checked statistically.

use std::path::{Path, PathBuf};

use hyscale_traces::{
    AzureFunctionsReader, AzureFunctionsSpec, AzureLlmReader, CountSeriesReader, CountSeriesSpec, GeneratorSpec,
    Outage, OutageMode, OutageRule, Selection, Spread, TraceSpec, TraceStats,
};
use statrs::distribution::{ContinuousCDF, StudentsT};

fn data(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("data").join(path)
}

#[test]
fn azure_llm_traces_count_exactly() {
    for (file, n) in [("AzureLLMInferenceTrace_conv.csv", 19_366), ("AzureLLMInferenceTrace_code.csv", 8_819)] {
        let reader = AzureLlmReader::open(&data(&format!("azure_llm_2023/{file}"))).unwrap();
        let stats = TraceStats::compute(reader).unwrap();
        assert_eq!(stats.requests, n, "{file}");
    }
}

#[test]
fn azure_functions_sample_counts_exactly() {
    let spec = AzureFunctionsSpec {
        path: data("azure_functions_2019_sample/invocations.csv"),
        spread: Spread::Uniform,
        select: Selection::default(),
        durations: Some(data("azure_functions_2019_sample/durations.csv")),
        memory: Some(data("azure_functions_2019_sample/memory.csv")),
    };
    let reader = AzureFunctionsReader::open(&spec, Path::new(""), 1).unwrap();
    assert_eq!(reader.functions().len(), 500);
    assert_eq!(reader.minutes(), 480);
    assert_eq!(reader.invocations(), 3_037_902);
    assert!(reader.functions().iter().all(|f| f.duration.is_some()), "every sampled function has durations");
    assert!(reader.functions().iter().all(|f| f.memory_mb.is_some()), "every sampled function has memory");
    let stats = TraceStats::compute(reader).unwrap();
    assert_eq!(stats.requests, 3_037_902);
    assert_eq!(stats.per_minute.bins, 480);
    assert_eq!(stats.models, 500);

    let http = Selection { triggers: vec!["http".into()], top: Some(10), ..Selection::default() };
    let reader = AzureFunctionsReader::open(&AzureFunctionsSpec { select: http, ..spec }, Path::new(""), 1).unwrap();
    let volumes: Vec<u64> = reader.functions().iter().map(|f| f.invocations).collect();
    assert_eq!(volumes.len(), 10);
    assert!(volumes.windows(2).all(|w| w[0] >= w[1]), "{volumes:?}");
    assert!(reader.functions().iter().all(|f| f.trigger == "http"));
}

#[test]
fn nasa_counts_exactly_and_its_outage_is_found() {
    let spec = CountSeriesSpec {
        path: data("nasa_1995/per_second_counts.tbz2"),
        member: None,
        bin_s: 1.0,
        spread: Spread::Even,
        outages: OutageRule { mode: OutageMode::Keep, ..OutageRule::default() },
    };
    let mut reader = CountSeriesReader::open(&spec, Path::new(""), 1).unwrap();
    let stats = TraceStats::compute(reader.by_ref()).unwrap();
    assert_eq!(stats.requests, 3_461_610);
    assert_eq!(reader.bins(), 5_059_950);
    assert_eq!(stats.per_second.bins, 5_059_950);
    assert_eq!(reader.outages(), [Outage { first_bin: 2_435_065, bins: 135_851 }]);

    let cut = CountSeriesSpec { outages: OutageRule::default(), ..spec };
    let mut reader = CountSeriesReader::open(&cut, Path::new(""), 1).unwrap();
    let stats = TraceStats::compute(reader.by_ref()).unwrap();
    assert_eq!(stats.requests, 3_461_610);
    assert_eq!(stats.per_second.bins, 5_059_950 - 135_851);
}

/// Mean arrival rate over `batches` equal batches; a two-sided t-test against `expected` at level 1e-6.
fn assert_mean_rate(spec: &GeneratorSpec, batches: usize, seed: u64) {
    let duration = spec.duration_s();
    let width = duration / batches as f64;
    let mut counts = vec![0f64; batches];
    for a in spec.open(seed).unwrap() {
        let t = a.unwrap().time.as_secs_f64();
        counts[((t / width) as usize).min(batches - 1)] += 1.0;
    }
    let rates: Vec<f64> = counts.iter().map(|c| c / width).collect();
    let n = batches as f64;
    let mean = rates.iter().sum::<f64>() / n;
    let sd = (rates.iter().map(|r| (r - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt();
    let t = (mean - spec.mean_rate_per_s()) / (sd / n.sqrt());
    let p = 2.0 * (1.0 - StudentsT::new(0.0, 1.0, n - 1.0).unwrap().cdf(t.abs()));
    assert!(p > 1e-6, "{spec:?}: mean rate {mean:.3} vs {:.3}, t = {t:.2}, p = {p:.2e}", spec.mean_rate_per_s());
}

#[test]
fn generators_hit_their_mean_rate() {
    assert_mean_rate(&GeneratorSpec::Poisson { rate_per_s: 40.0, duration_s: 20_000.0 }, 50, 1);
    assert_mean_rate(&GeneratorSpec::Gamma { rate_per_s: 40.0, cv: 4.0, duration_s: 20_000.0 }, 50, 2);
    assert_mean_rate(
        &GeneratorSpec::Mmpp {
            low_rate_per_s: 5.0,
            high_rate_per_s: 100.0,
            mean_low_s: 30.0,
            mean_high_s: 10.0,
            duration_s: 40_000.0,
        },
        40,
        3,
    );
    assert_mean_rate(
        &GeneratorSpec::Diurnal {
            mean_rate_per_s: 20.0,
            amplitude: 0.8,
            period_s: 500.0,
            peak_at_s: 100.0,
            duration_s: 25_000.0,
        },
        50,
        4,
    );
    let surge = GeneratorSpec::Surge {
        base_rate_per_s: 20.0,
        factor: 3.0,
        surge_start_s: 1_000.0,
        surge_duration_s: 1_000.0,
        duration_s: 4_000.0,
    };
    assert_eq!(surge.mean_rate_per_s(), 30.0);
    let n = surge.open(5).unwrap().count() as f64;
    // Poisson with mean 120 000: five standard deviations are 1 732.
    assert!((n - 120_000.0).abs() < 1_732.0, "{n}");
}

#[test]
fn gamma_gaps_have_the_asked_burstiness() {
    let spec = GeneratorSpec::Gamma { rate_per_s: 100.0, cv: 3.0, duration_s: 5_000.0 };
    let times: Vec<f64> = spec.open(9).unwrap().map(|a| a.unwrap().time.as_secs_f64()).collect();
    let gaps: Vec<f64> = times.windows(2).map(|w| w[1] - w[0]).collect();
    let mean = gaps.iter().sum::<f64>() / gaps.len() as f64;
    let sd = (gaps.iter().map(|g| (g - mean).powi(2)).sum::<f64>() / gaps.len() as f64).sqrt();
    assert!((sd / mean - 3.0).abs() < 0.15, "cv {}", sd / mean);
}

#[test]
fn specs_open_every_kind_deterministically() {
    let dir = data("");
    let spec: TraceSpec = toml::from_str(
        r#"
        kind = "mix"
        weights = [1, 1]
        [source]
        kind = "window"
        start_s = 600
        end_s = 1200
        [source.source]
        kind = "merge"
        [[source.source.sources]]
        kind = "compress"
        factor = 2
        source = { kind = "azure-llm", path = "azure_llm_2023/AzureLLMInferenceTrace_code.csv" }
        [[source.source.sources]]
        kind = "scale"
        factor = 0.5
        source = { kind = "count-series", path = "nasa_1995/per_second_counts.tbz2", spread = "uniform" }
        "#,
    )
    .unwrap();
    let run = |seed| -> Vec<(u64, u32)> {
        spec.open(&dir, seed).unwrap().map(|a| a.unwrap()).map(|a| (a.time.0, a.model)).collect()
    };
    let a = run(1);
    assert!(a.len() > 1_000, "{}", a.len());
    assert!(a.iter().all(|&(t, m)| t < 600_000_000_000 && m < 2));
    assert_eq!(a, run(1));
    assert_ne!(a, run(2));
}
