//! Loader, generator and transform throughput, in arrivals per second of wall time (criterion reports
//! elements/s). Every loader reads a shipped trace; the canonical CSV and JSON Lines inputs are the conv
//! trace converted once, before timing.

use std::path::{Path, PathBuf};
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use hyscale_traces::{
    Arrival, ArrivalStream, AzureFunctionsReader, AzureFunctionsSpec, AzureLlmReader, CountSeriesReader,
    CountSeriesSpec, GeneratorSpec, OutageRule, RequestFormat, RequestReader, Selection, Spread, TraceError,
    transform::{Merge, Scale},
    write_canonical,
};

fn data(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("data").join(path)
}

/// Drains a stream, folding the times so nothing is optimised away; returns the count.
fn drain(stream: impl Iterator<Item = Result<Arrival, TraceError>>) -> (u64, u64) {
    stream.fold((0, 0), |(n, acc), a| (n + 1, acc ^ a.expect("valid arrival").time.0))
}

fn count(stream: impl Iterator<Item = Result<Arrival, TraceError>>) -> u64 {
    drain(stream).0
}

fn loaders(c: &mut Criterion) {
    let conv = data("azure_llm_2023/AzureLLMInferenceTrace_conv.csv");
    let dir = tempfile::tempdir().expect("temp dir");
    let canonical = dir.path().join("conv.csv");
    let file = std::fs::File::create(&canonical).expect("create");
    write_canonical(AzureLlmReader::open(&conv).expect("opens"), file, &canonical).expect("writes");
    let jsonl = dir.path().join("conv.jsonl");
    let lines: String = RequestReader::open(&canonical, RequestFormat::canonical())
        .expect("opens")
        .map(|a| {
            let a = a.expect("valid");
            format!(
                "{{\"time_s\":{},\"model\":{},\"input_size\":{},\"output_size\":{}}}\n",
                a.time.as_secs_f64(),
                a.model,
                a.input_size,
                a.output_size
            )
        })
        .collect();
    std::fs::write(&jsonl, lines).expect("writes");
    let functions = AzureFunctionsSpec {
        path: data("azure_functions_2019_sample/invocations.csv"),
        spread: Spread::Uniform,
        select: Selection::default(),
        durations: None,
        memory: None,
    };
    let nasa = CountSeriesSpec {
        path: data("nasa_1995/per_second_counts.tbz2"),
        member: None,
        bin_s: 1.0,
        spread: Spread::Even,
        outages: OutageRule::default(),
    };

    let mut group = c.benchmark_group("loaders");
    group.sample_size(10).measurement_time(Duration::from_secs(5));
    group.throughput(Throughput::Elements(19_366));
    group.bench_function("azure-llm conv", |b| b.iter(|| drain(AzureLlmReader::open(&conv).expect("opens"))));
    group.bench_function("canonical csv", |b| {
        b.iter(|| drain(RequestReader::open(&canonical, RequestFormat::canonical()).expect("opens")))
    });
    group.bench_function("jsonl", |b| {
        b.iter(|| drain(RequestReader::open(&jsonl, RequestFormat::canonical_jsonl()).expect("opens")))
    });
    group.throughput(Throughput::Elements(3_037_902));
    group.bench_function("azure-functions 500 x 480 min", |b| {
        b.iter(|| drain(AzureFunctionsReader::open(&functions, Path::new(""), 1).expect("opens")))
    });
    group.throughput(Throughput::Elements(3_461_610));
    group.bench_function("nasa tbz2", |b| {
        b.iter(|| drain(CountSeriesReader::open(&nasa, Path::new(""), 1).expect("opens")))
    });
    group.finish();
}

fn generators(c: &mut Criterion) {
    const N: u64 = 1_000_000;
    let specs = [
        GeneratorSpec::Poisson { rate_per_s: 1000.0, duration_s: 1e9 },
        GeneratorSpec::Mmpp {
            low_rate_per_s: 200.0,
            high_rate_per_s: 3000.0,
            mean_low_s: 60.0,
            mean_high_s: 20.0,
            duration_s: 1e9,
        },
        GeneratorSpec::Diurnal {
            mean_rate_per_s: 1000.0,
            amplitude: 0.8,
            period_s: 3600.0,
            peak_at_s: 0.0,
            duration_s: 1e9,
        },
        GeneratorSpec::Surge {
            base_rate_per_s: 1000.0,
            factor: 3.0,
            surge_start_s: 100.0,
            surge_duration_s: 300.0,
            duration_s: 1e9,
        },
        GeneratorSpec::Gamma { rate_per_s: 1000.0, cv: 3.0, duration_s: 1e9 },
    ];
    let mut group = c.benchmark_group("generators");
    group.sample_size(10).throughput(Throughput::Elements(N));
    for spec in &specs {
        let name = spec.describe().split(':').next().unwrap_or("generator").to_string();
        group.bench_function(format!("{name} 1M"), |b| b.iter(|| count(spec.open(7).expect("valid").take(N as usize))));
    }
    let poisson = |seed| -> ArrivalStream {
        Box::new(GeneratorSpec::Poisson { rate_per_s: 250.0, duration_s: 1e9 }.open(seed).expect("valid"))
    };
    group.bench_function("merge of 4 poisson 1M", |b| {
        b.iter(|| count(Merge::new((0..4).map(poisson).collect(), true).expect("valid").take(N as usize)))
    });
    group.bench_function("scale x2.5 1M", |b| {
        b.iter(|| count(Scale::new(poisson(1), 2.5, 1.0, 3).expect("valid").take(N as usize)))
    });
    group.finish();
}

criterion_group!(benches, loaders, generators);
criterion_main!(benches);
