//! Simulator throughput: simulated requests per second of wall time, per policy, on Poisson arrivals.
//! The figure to watch is the `thrpt` line (elements = requests).

use std::path::Path;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use hyscale_sim::Scenario;
use hyscale_sim::rng::SeedFan;
use hyscale_traces::GeneratorSpec;

const REQUESTS_PER_S: f64 = 200.0;
const DURATION_S: f64 = 500.0;

fn engine(c: &mut Criterion) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut group = c.benchmark_group("simulate");
    group.sample_size(10);
    group.throughput(Throughput::Elements((REQUESTS_PER_S * DURATION_S) as u64));
    for (name, fleet) in [("static", 30), ("function-only", 0)] {
        let mut scenario = Scenario::load(&root.join("scenarios/conv_static.toml")).expect("shipped scenario loads");
        if let Some(s) = scenario.file.policies.static_fleet.as_mut() {
            s.fleet[0].count = fleet.max(1);
        }
        group.bench_function(name, |b| {
            b.iter(|| {
                let mut policy = scenario.file.policies.build(name, &scenario.catalog).expect("policy builds");
                let seed = SeedFan::new(1).seed("arrivals");
                let arrivals = Box::new(
                    GeneratorSpec::Poisson { rate_per_s: REQUESTS_PER_S, duration_s: DURATION_S }
                        .open(seed)
                        .expect("valid rate"),
                );
                hyscale_sim::simulate(&scenario, policy.as_mut(), arrivals, None).expect("runs")
            })
        });
    }
    group.finish();
}

criterion_group!(benches, engine);
criterion_main!(benches);
