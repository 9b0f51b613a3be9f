//! Loader and generator throughput, in arrivals per second of wall time.

use std::path::Path;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use hyscale_traces::{AzureLlmReader, Poisson};

fn loaders(c: &mut Criterion) {
    let conv = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/azure_llm_2023/AzureLLMInferenceTrace_conv.csv");
    let mut group = c.benchmark_group("traces");
    group.sample_size(10);
    group.throughput(Throughput::Elements(19_366));
    group.bench_function("azure-llm conv", |b| {
        b.iter(|| {
            AzureLlmReader::open(&conv)
                .expect("shipped trace opens")
                .map(|a| a.expect("valid row").time.0)
                .fold(0u64, u64::wrapping_add)
        })
    });
    group.throughput(Throughput::Elements(1_000_000));
    group.bench_function("poisson 1M", |b| {
        b.iter(|| {
            Poisson::new(1000.0, 1000.0, 7)
                .expect("valid")
                .take(1_000_000)
                .map(|a| a.expect("ok").time.0)
                .fold(0u64, u64::wrapping_add)
        })
    });
    group.finish();
}

criterion_group!(benches, loaders);
criterion_main!(benches);
