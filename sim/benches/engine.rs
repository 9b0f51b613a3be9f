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

/// The event queue alone: a steady population of pending events (as a run keeps), each pop followed by a push
/// a random delay later. Elements = pops.
fn queue(c: &mut Criterion) {
    use hyscale_policies::Nanos;
    use hyscale_sim::queue::EventQueue;
    const POPS: u64 = 1_000_000;
    let mut group = c.benchmark_group("event-queue");
    group.throughput(Throughput::Elements(POPS));
    for pending in [16u64, 1024, 65_536] {
        group.bench_function(format!("{pending} pending"), |b| {
            b.iter(|| {
                let mut q = EventQueue::new();
                // A fixed pseudo-random sequence of delays (xorshift), so runs compare.
                let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
                let mut delay = || {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    Nanos(x % 1_000_000_000)
                };
                for i in 0..pending {
                    q.push(delay(), i);
                }
                for _ in 0..POPS {
                    let (t, e) = q.pop().expect("a pending event");
                    q.push(Nanos(t.0 + delay().0), e);
                }
                q.len()
            })
        });
    }
    group.finish();
}

/// A policy's two decisions on a view of a running cluster (a few VMs, arrivals in the window): `route` per
/// request (elements = routes) and `tick` per control interval.
fn policy(c: &mut Criterion) {
    use hyscale_policies::{ArrivalWindow, BatchRule, FunctionSettings, Nanos, RequestInfo, View};
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let scenario = Scenario::load(&root.join("scenarios/conv4x_compare.toml")).expect("shipped scenario loads");
    let catalog = scenario.catalog.clone();
    let mut window = ArrivalWindow::new(Nanos::from_secs(5), 720);
    for k in 0..720 {
        window.current = 100 + (k % 37);
        window.roll();
    }
    let settings = FunctionSettings {
        memory_mb: 3008,
        concurrency: 1,
        keep_alive: Nanos::from_secs(600),
        prewarm: 0,
        batching: BatchRule::NONE,
    };
    let mut view = View::new(catalog.clone(), scenario.slo, window, settings);
    view.now = Nanos::from_secs(3600);
    const ROUTES: u64 = 100_000;
    let mut group = c.benchmark_group("policy");
    group.sample_size(20);
    for name in ["function-only", "target-tracking", "mark", "hybrid"] {
        let mut p = scenario.file.policies.build(name, &catalog).expect("policy builds");
        let mut actions = Vec::new();
        p.start(&view, &mut actions);
        group.throughput(Throughput::Elements(ROUTES));
        group.bench_function(format!("{name} route"), |b| {
            b.iter(|| {
                let mut n = 0u32;
                for i in 0..ROUTES {
                    let info = RequestInfo { arrival: Nanos(view.now.0 + i), model: 0, attempt: 0 };
                    n += matches!(p.route(&info, &view), hyscale_policies::Route::Functions) as u32;
                }
                n
            })
        });
        group.throughput(Throughput::Elements(1));
        group.bench_function(format!("{name} tick"), |b| {
            b.iter(|| {
                actions.clear();
                p.tick(&view, &mut actions);
                actions.len()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, engine, queue, policy);
criterion_main!(benches);
