//! The baseline policies, each in a small simulated scenario that shows its defining behaviour, with every
//! figure worked out by hand in the comments.

use hyscale_policies::batch_fn::Batch;
use hyscale_policies::kpa::Kpa;
use hyscale_policies::static_peak::StaticPeak;
use hyscale_policies::target_tracking::TargetTracking;
use hyscale_policies::{Action, Market, VmTypeId};

use crate::support::{Cloud, Decision, approx, assert_conserved, fixture, run, run_recorded};

/// Arrival times of evenly spaced phases `(from_s, to_s, rate_per_s)`, half a gap after each phase starts
/// (so that no arrival falls exactly on a control tick).
fn phases(list: &[(f64, f64, f64)]) -> Vec<f64> {
    let mut times = Vec::new();
    for &(from, to, rate) in list {
        let n = ((to - from) * rate).round() as u64;
        times.extend((0..n).map(|k| from + (k as f64 + 0.5) / rate));
    }
    times
}

/// The decisions that did something, as (time in whole seconds, actions).
fn acted<S>(log: &[Decision<S>]) -> Vec<(u64, Vec<Action>)> {
    log.iter().filter(|d| !d.actions.is_empty()).map(|d| (d.t_s.round() as u64, d.actions.clone())).collect()
}

const VM1: VmTypeId = VmTypeId(0);

fn provision(count: u32) -> Action {
    Action::Provision { vm_type: VM1, market: Market::OnDemand, count }
}

fn release(count: u32) -> Action {
    Action::ReleaseVms { vm_type: VM1, market: Market::OnDemand, count }
}

fn prewarm(n: u32) -> Action {
    Action::ConfigureFunctions { memory_mb: None, concurrency: None, keep_alive: None, prewarm: Some(n) }
}

#[test]
fn target_tracking_scales_out_once_per_cooldown_and_scales_in_conservatively() {
    // vm1 serves 10 requests/s; target 300 invocations per instance per minute; min 1, max 10; AWS defaults
    // otherwise: 300 s cooldowns, scale out after 3 one-minute datapoints above 300, scale in after 15 below
    // 270. VMs take 30 s to provision.
    let body = "policy = \"target-tracking\"\n[policies.target-tracking]\nvm_type = \"vm1\"\n\
                target_invocations_per_instance_per_min = 300.0\n";
    let f = fixture(&Cloud { boot_s: 30.0, ..Cloud::default() }, body);
    let config = f.scenario.file.policies.target_tracking.clone().expect("section");
    let policy = TargetTracking::new(&config, &f.scenario.catalog).expect("builds");
    // 8/s until 200 s, 16/s until 600 s, 6/s until 1500 s, then 1/s until 2100 s.
    let times = phases(&[(0.0, 200.0, 8.0), (200.0, 600.0, 16.0), (600.0, 1500.0, 6.0), (1500.0, 2100.0, 1.0)]);
    let (r, log) = run_recorded(&f, policy, |_| (), &times);
    assert_conserved(&r);
    assert_eq!(r.requests.arrivals, 14_000);
    assert_eq!(r.requests.completed, 14_000);
    let set_batching =
        Action::SetBatching { pool: hyscale_policies::Pool::Vm(VM1), rule: hyscale_policies::BatchRule::NONE };
    assert_eq!(
        acted(&log),
        vec![
            // The initial instance (min_instances).
            (0, vec![set_batching, provision(1)]),
            // 480 a minute on one instance at 60, 120 and 180 s: desired ceil(480 / 300) = 2.
            (180, vec![provision(1)]),
            // From 240 s desired is 3, then 4 (960 a minute), but the scale-out cooldown runs until 480 s.
            (480, vec![provision(2)]),
            // 960 / 4 = 240 < 270 from 540 s on: the 15th low datapoint is at 1380 s; 360 a minute needs 2.
            (1380, vec![release(2)]),
            // 60 a minute from 1500 s needs 1 at 1560 s, but the scale-in cooldown runs until 1680 s.
            (1680, vec![release(1)]),
        ]
    );
    assert_eq!(r.instances.vms_launched["vm1/on-demand"], 4);
}

#[test]
fn kpa_panics_on_a_burst_holds_its_count_in_panic_and_scales_to_zero_after_the_grace_period() {
    // Functions at 128 MB (1/8 vCPU: a request takes 1.6 s), one request per instance, 5 s cold starts.
    // Target 1 request per instance at 100% utilisation; Knative's defaults otherwise: 2 s ticks, 60 s stable
    // window (30 samples), 6 s panic window (3 samples), panic at 200%, one initial instance, 30 s grace.
    let body = "policy = \"kpa\"\n[policies.kpa]\nmemory_mb = 128\ntarget_utilization = 1.0\n";
    let f = fixture(&Cloud { cold_s: 5.0, ..Cloud::default() }, body);
    let config = f.scenario.file.policies.kpa.clone().expect("section");
    let policy = Kpa::new(&config, &f.scenario.catalog).expect("builds");
    // One request every 2 s from 11 s to 19 s (each finds the initial instance warm and idle), a burst of
    // six at 20.5 s (each starts a new instance: the first is busy), and one at 199 s, after scale to zero.
    let mut times = vec![11.0, 13.0, 15.0, 17.0, 19.0];
    times.extend([20.5; 6]);
    times.push(199.0);
    let (r, log) = run_recorded(&f, policy, |k: &Kpa| k.in_panic(), &times);
    assert_conserved(&r);
    assert_eq!(r.requests.completed, 12);
    let start = Action::ConfigureFunctions {
        memory_mb: Some(128),
        concurrency: Some(1),
        keep_alive: Some(hyscale_policies::Nanos::from_secs(2)),
        prewarm: Some(1),
    };
    assert_eq!(
        acted(&log),
        vec![
            (0, vec![start]),
            // Samples 0 (2..10 s), 1 (12..20 s), 6 (22 s); one ready instance. Panic average 8/3 needs 3,
            // three times the ready count: panic.
            (22, vec![prewarm(3)]),
            // Panic average 13/3 needs 5 (the six new instances are still cold).
            (24, vec![prewarm(5)]),
            // Six ready and busy: panic average 6 needs 6; below the threshold now, but still in panic.
            (26, vec![prewarm(6)]),
            // The load ended at 27.1 s; panic lasts until 60 s after 24 s, so the count holds at 6 until
            // 86 s, then halves per tick as instances go: 3, then 1. The three released at 86 s expire at
            // 88 s, after the tick of that instant (it was scheduled first), so the next halving is at 90 s.
            (86, vec![prewarm(3)]),
            (90, vec![prewarm(1)]),
            // The last instance is kept for the 30 s grace period: released at 124 s.
            (124, vec![prewarm(0)]),
            // The request at 199 s starts an instance itself (a cold start); the KPA follows with a count of 1.
            (200, vec![prewarm(1)]),
        ]
    );
    let panic: Vec<u64> = log.iter().filter(|d| d.probe).map(|d| d.t_s.round() as u64).collect();
    assert_eq!(panic, (22..=84).step_by(2).collect::<Vec<u64>>(), "ticks in panic");
    // Never fewer than six instances while in panic, though idle from 27.1 s. The six the KPA asks for are
    // provisioned (never expire while asked for); the seventh, started on demand by the burst, lives out its
    // 2 s keep-alive after the load ends (idle at 27.1 s, gone by 30 s).
    let live: Vec<(u64, u32)> = log.iter().filter(|d| d.probe).map(|d| (d.t_s.round() as u64, d.fn_live)).collect();
    assert!(live.iter().filter(|(t, _)| *t >= 26).all(|&(t, n)| if t < 30 { n == 7 } else { n == 6 }), "{live:?}");
    let at = |t: f64| log.iter().find(|d| approx(d.t_s, t)).expect("a tick then");
    // Ready (warm) instances the panic decisions saw: the first (provisioned) one at 22 s and 24 s, all seven
    // at 26 s.
    assert_eq!((at(22.0).fn_warm, at(24.0).fn_warm, at(26.0).fn_warm), (1, 1, 7));
    assert_eq!(at(122.0).fn_live, 1);
    // Released at 124 s, it lives out its 2 s keep-alive (gone after the tick of 126 s).
    assert_eq!(at(128.0).fn_live, 0);
    // The initial instance, the six of the burst, and the one at 199 s.
    assert_eq!(r.instances.function_cold_starts, 8);
}

#[test]
fn batch_serves_full_batches_at_once_and_partial_ones_at_the_timeout() {
    // Fixed BATCH settings: 1,024 MB (one vCPU: a batch of b takes 200 ms x b), batch 4, timeout 50 ms;
    // 0.8 s cold starts.
    let body = "policy = \"batch\"\n[policies.batch]\nmode = \"fixed\"\nmemory_mb = 1024\nbatch_size = 4\n\
                timeout_ms = 50.0\n";
    let f = fixture(&Cloud::default(), body);
    let config = f.scenario.file.policies.batch.clone().expect("section");
    let policy = Batch::new(&config, &f.scenario.catalog).expect("builds");
    let (r, log) = run_recorded(&f, policy, |b: &Batch| b.plan(), &[0.0, 0.01, 0.02, 0.03, 5.0, 5.01]);
    assert_conserved(&r);
    assert_eq!(log[0].probe, (1024, 4, hyscale_policies::Nanos::from_millis(50)));
    // Four requests wait for the one cold instance (warm at 0.8 s) and run as one batch of 4 (800 ms):
    // latencies 1600, 1590, 1580, 1570 ms. At 5 s the instance is idle; the two requests wait for the
    // oldest's 50 ms timeout and run as a batch of 2 (400 ms): 450 and 440 ms.
    assert_eq!(r.requests.completed, 6);
    assert!(approx(r.latency_ms.mean, 7230.0 / 6.0), "mean {}", r.latency_ms.mean);
    // (The histogram keeps three significant digits.)
    assert!((r.latency_ms.max - 1600.0).abs() < 1.0, "max {}", r.latency_ms.max);
    assert!(approx(r.duration_s, 5.45));
    // Two invocations for six requests at $0.01; 0.8 s of init and 1.2 s of execution at 1 GB, $0.001/GB-s.
    assert!(approx(r.cost.function_requests, 0.02), "requests {}", r.cost.function_requests);
    assert!(approx(r.cost.function_compute, 0.002), "compute {}", r.cost.function_compute);
    assert_eq!(r.instances.function_cold_starts, 1);
}

#[test]
fn static_peak_provisions_the_peak_over_the_capacity_at_the_slo() {
    // vm1 takes 100 ms for one request and 130 ms for four; the SLO is 200 ms.
    let one = "policy = \"static-peak\"\n[policies.static-peak]\nvm_type = \"vm1\"\npeak_rate_per_s = 100.0\n";
    // Batches up to the profile's largest (4) fit 200 ms: 4 / 0.13 s = 30.8 requests/s per instance,
    // ceil(100 / 30.8) = 4 instances, each billed its 60 s minimum at $0.001/s.
    let f = fixture(&Cloud { boot_s: 0.0, ..Cloud::default() }, one);
    let config = f.scenario.file.policies.static_peak.clone().expect("section");
    let (r, log) =
        run_recorded(&f, StaticPeak::new(&config, &f.scenario.catalog).expect("builds"), |p| p.size(), &[1.0]);
    assert_conserved(&r);
    assert_eq!(log[0].probe.map(|s| (s.batch, s.instances)), Some((4, 4)));
    assert_eq!(r.instances.vms_launched["vm1/on-demand"], 4);
    assert!(approx(r.cost.vm_on_demand, 0.24), "cost {}", r.cost.vm_on_demand);
    assert!(approx(r.latency_ms.mean, 100.0));
    // Without batching an instance serves 10/s: ten instances.
    let f = fixture(&Cloud { boot_s: 0.0, ..Cloud::default() }, &format!("{one}max_batch = 1\n"));
    let r = run(&f, &[1.0]);
    assert_eq!(r.instances.vms_launched["vm1/on-demand"], 10);
    assert!(approx(r.cost.vm_on_demand, 0.6), "cost {}", r.cost.vm_on_demand);
}

#[test]
fn each_new_policy_runs_by_name_from_its_section() {
    for (name, section) in [
        ("target-tracking", "[policies.target-tracking]\nvm_type = \"vm1\"\n"),
        ("kpa", ""),
        ("batch", ""),
        ("static-peak", "[policies.static-peak]\nvm_type = \"vm1\"\npeak_rate_per_s = 5.0\n"),
    ] {
        let f = fixture(&Cloud { boot_s: 1.0, ..Cloud::default() }, &format!("policy = \"{name}\"\n{section}"));
        let r = run(&f, &[0.0, 0.5, 1.0, 1.5, 2.0]);
        assert_conserved(&r);
        assert_eq!(r.policy, name);
        assert_eq!(r.requests.completed, 5, "{name}: {:?}", r.requests);
    }
    // A policy that cannot run on defaults says which section it needs.
    let f = fixture(&Cloud::default(), "policy = \"static-peak\"\n");
    let err = f.scenario.file.policies.build("static-peak", &f.scenario.catalog).err().expect("refused");
    assert!(err.to_string().contains("[policies.static-peak]"), "{err}");
}

#[test]
fn mark_sends_to_functions_while_its_vm_provisions_then_stops() {
    // 2 requests/s from 0.25 s to 299.75 s (600 in all). MArk plans every 60 s from the minute just seen:
    // at 0 s it has seen nothing and buys nothing; at 60 s it has seen 120 requests, so it plans for
    // 2/s x 1.2 = 2.4/s: one vm1 (batch 4 in 130 ms fits the 160 ms budget, with a 30 ms timeout: 30.8/s),
    // bought on the spot market. The VM serves from 90 s (30 s to provision). Until then every request goes
    // to functions: the 180 arrivals before 90 s; after it, none.
    let f = fixture(&Cloud { boot_s: 30.0, ..Cloud::default() }, "policy = \"mark\"\n");
    let times = phases(&[(0.0, 300.0, 2.0)]);
    let r = run(&f, &times);
    assert_conserved(&r);
    assert_eq!(r.requests.completed, 600);
    assert!(approx(r.cost.function_requests, 180.0 * 0.01), "{:?}", r.cost);
    assert_eq!(r.instances.vms_launched.get("vm1/spot"), Some(&1), "{:?}", r.instances);
    assert_eq!(r.instances.vms_launched.len(), 1, "{:?}", r.instances);
    assert!(r.slo.met, "{:?}", r.slo);
}

#[test]
fn the_oracle_bound_is_below_every_policy_that_meets_the_slo() {
    use hyscale_policies::oracle::lower_bound;
    // A load that needs several vm1s, and every policy that has defaults or a section here.
    // The fixture's functions take exactly 200 ms, so the SLO here is 300 ms.
    let body = "policy = \"mark\"\n[slo]\nrt_max_ms = 300.0\nsl_min = 0.98\n[sim]\ntrace_offset_s = 120.0\n\
                [policies.static]\nfleet = [{ vm_type = \"vm1\", count = 3 }]\n\
                [policies.static-peak]\nvm_type = \"vm1\"\npeak_rate_per_s = 60.0\n\
                [policies.target-tracking]\nvm_type = \"vm1\"\n";
    let f = fixture(&Cloud::default(), body);
    let times = phases(&[(0.0, 600.0, 20.0), (600.0, 900.0, 50.0), (900.0, 1200.0, 10.0)]);
    let s = &f.scenario;
    let bound = lower_bound(&s.catalog, &s.slo, times.len() as u64);
    // vm1 on spot ($1.80/h) at batch 4 in 130 ms (within 300 ms): 30.77 requests/s, $1.625e-5 per request;
    // 98% of 30 000 must be served.
    assert_eq!(bound.requests_needed, 29_400);
    assert!(approx(bound.cost_per_request, 1.8 / 3600.0 / (4.0 / 0.13)), "{bound:?}");
    let mut met = Vec::new();
    for name in hyscale_policies::spec::POLICY_NAMES {
        let mut policy = s.file.policies.build(name, &s.catalog).expect("policy builds");
        let r = hyscale_sim::simulate(s, policy.as_mut(), crate::support::arrivals(&times), None).expect("runs");
        assert_conserved(&r);
        eprintln!("{name}: {:?} {:?} {:?} {:?}", r.slo, r.cost, r.latency_ms, r.instances.vms_launched);
        if r.slo.met {
            assert!(bound.cost <= r.cost.total, "{name}: bound {} above cost {}", bound.cost, r.cost.total);
            met.push(*name);
        }
    }
    assert!(met.len() >= 3 && met.contains(&"mark"), "policies meeting the SLO: {met:?}");
}

/// A fixture whose model has a size, so that function instances hold real copies: the fixture catalog
/// (instant sandbox start, 100 MB/s model load, one vCPU per 1,024 MB) with a 5 MB model (a 50 ms cold
/// start), 10 MB per request, and 200 ms per request at one vCPU.
fn shared_model_fixture(body: &str) -> crate::support::Fixture {
    let dir = tempfile::tempdir().expect("temp dir");
    let catalog = crate::support::CATALOG
        .replace("BOOT_S", "30.0")
        .replace("COLD_S", "0.0")
        .replace("REGIONAL", "1000")
        .replace("HAZARD", "0.0")
        .replace("SCALE_STEP", "1000");
    let profile = "[model]\nname = \"shared\"\nsize_mb = 5.0\nper_request_mb = 10.0\n\n\
                   [[hardware]]\nhardware = \"vm1\"\nbatch = [1]\nlatency_ms = [100.0]\n\n\
                   [[hardware]]\nhardware = \"function\"\nbatch = [1]\nlatency_ms = [200.0]\n";
    let scenario = format!(
        "name = \"test\"\ncatalog = \"catalog.toml\"\nprofile = \"profile.toml\"\n{body}\n\
         [trace]\nkind = \"poisson\"\nrate_per_s = 1.0\nduration_s = 1.0\n"
    );
    crate::support::write(dir.path(), "catalog.toml", &catalog);
    crate::support::write(dir.path(), "profile.toml", profile);
    crate::support::write(dir.path(), "scenario.toml", &scenario);
    let scenario = hyscale_sim::Scenario::load(&dir.path().join("scenario.toml")).expect("fixture scenario loads");
    crate::support::Fixture { _dir: dir, scenario }
}

#[test]
fn hybrid_raises_concurrency_first_and_adds_instances_only_at_the_cap() {
    use hyscale_policies::hybrid::{Hybrid, HybridPlan};
    use hyscale_policies::{BatchRule, Nanos, Pool};

    // SLO 500 ms; the service-time budget is 0.8 x 500 = 400 ms, half a vCPU per request slot: 512 MB per
    // slot (more than the 5 MB model and 10 MB per request). Concurrency up to 4 (2,048 MB), demand filling
    // the slots to 100%, defaults otherwise: 5 s ticks, at least one instance, scale down after 12 ticks at
    // or below half the planned slots, 60 s keep-alive.
    let body = "policy = \"hybrid\"\n[slo]\nrt_max_ms = 500.0\nsl_min = 0.9\n\
                [policies.hybrid]\nmax_concurrency = 4\ntarget_utilization = 1.0\n";
    let f = shared_model_fixture(body);
    let config = f.scenario.file.policies.hybrid.clone().expect("section");
    let policy = Hybrid::new(&config, &f.scenario.catalog).expect("builds");
    // Rising load, 20 s per step, then a long quiet tail. Every request takes 400 ms at any concurrency, so
    // Little's law gives 0.8, 1.6, 3.2 and 6.4 requests in service: 1, 2, 4 and 7 slots.
    let times =
        phases(&[(0.0, 20.0, 2.0), (20.0, 40.0, 4.0), (40.0, 60.0, 8.0), (60.0, 80.0, 16.0), (80.0, 160.0, 2.0)]);
    let (r, log) = run_recorded(&f, policy, |h: &Hybrid| h.plan_in_force(), &times);
    assert_conserved(&r);
    assert_eq!(r.requests.arrivals, 760);
    assert_eq!(r.requests.completed, 760);
    let set = |memory_mb: Option<u32>, concurrency: Option<u32>, prewarm: u32| Action::ConfigureFunctions {
        memory_mb,
        concurrency,
        keep_alive: None,
        prewarm: Some(prewarm),
    };
    assert_eq!(
        acted(&log),
        vec![
            // One instance with one slot of 512 MB, kept warm.
            (
                0,
                vec![
                    Action::SetBatching { pool: Pool::Functions, rule: BatchRule::NONE },
                    Action::ConfigureFunctions {
                        memory_mb: Some(512),
                        concurrency: Some(1),
                        keep_alive: Some(Nanos::from_secs(60)),
                        prewarm: Some(1),
                    },
                ],
            ),
            // The tick at 20 s sees the 10 arrivals of 15..20 s (2/s: 1 slot). At 25 s: 20 arrivals in 5 s,
            // 4/s x 0.4 s = 1.6, 2 slots: vertical, one instance of 2 at 1,024 MB.
            (25, vec![set(Some(1024), Some(2), 1)]),
            // 8/s from 40 s: at 45 s, 3.2, 4 slots: vertical again, to the cap (4 at 2,048 MB).
            (45, vec![set(Some(2048), Some(4), 1)]),
            // 16/s from 60 s: at 65 s, 6.4, 7 slots, past the cap: horizontal, a second instance of 4.
            (65, vec![set(None, None, 2)]),
            // 2/s from 80 s. At 85 s the window's last interval (75..80 s) still says 16/s; from 90 s on,
            // 0.8: 1 slot, at most half of 8. The 12th such tick, at 145 s, goes back to the plan for 1.
            (145, vec![set(Some(512), Some(1), 1)]),
        ]
    );
    // The plan after each decision, as (concurrency, instances): concurrency first, instances at the cap.
    let plans: Vec<(u32, u32)> = log
        .iter()
        .filter(|d| !d.actions.is_empty())
        .map(|d| {
            let HybridPlan { concurrency, instances, .. } = d.probe;
            (concurrency, instances)
        })
        .collect();
    assert_eq!(plans, vec![(1, 1), (2, 1), (4, 1), (4, 2), (1, 1)]);
    // Instances: the prewarmed one from 0 s (P); at 20.125 s P still serves the request of 19.75 s, so the
    // first request at 4/s starts Q (one slot each). At 25 s the redeploy starts X (2 slots) while P and Q
    // finish their last requests (to 25.275 and 25.025 s). At 40.1875 s X's two slots are busy: Y starts;
    // at 45 s Z (4 slots) starts while X and Y finish (to 45.2125 and 45.3375 s). At 60.15625 s Z is full:
    // V starts, and at 65 s it is the second planned instance. At 145 s W (1 slot) replaces Z (idle) and V
    // (done at 145.15 s). Seven cold starts; never more than three instances alive (at 25 s: P, Q, X; at
    // 45 s: X, Y, Z).
    assert_eq!(r.instances.function_cold_starts, 7);
    // Requests: 400 ms each, except the first on Q, Y and V, which wait for its 50 ms cold start.
    assert!(approx(r.latency_ms.mean, (757.0 * 400.0 + 3.0 * 450.0) / 760.0), "mean {}", r.latency_ms.mean);
    // Model copies. One copy per request would hold 8 at once: at 60.59375 s, the 7 requests that arrived in
    // the last 0.4 s at 16/s and the one that started 50 ms late on V (until 60.60625 s). The hybrid holds 3.
    let m = &r.model_memory;
    assert_eq!((m.copies_peak, m.one_copy_per_request_peak), (3, 8));
    assert_eq!(r.instances.function_instances_peak, 3);
    // GB-hours of 5 MB copies: instances alive P 25.275 + Q 4.9 + X 20.2125 + Y 5.15 + Z 100 + V 84.99375 +
    // W 15.15 (to the end at 160.15 s) = 255.68125 s, against 760 x 0.4 s = 304 s in service.
    let gb_h = |seconds: f64| seconds * 5.0 / 1024.0 / 3600.0;
    assert!(approx(m.gb_hours, gb_h(255.68125)), "held {}", m.gb_hours);
    assert!(
        approx(m.one_copy_per_request_gb_hours, gb_h(304.0)),
        "one per request {}",
        m.one_copy_per_request_gb_hours
    );
}
