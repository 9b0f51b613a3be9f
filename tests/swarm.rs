//! Swarm testing of the simulator, as TigerBeetle's VOPR and FoundationDB's simulation test their systems: one
//! master seed draws random scenarios (a catalog of one to three VM types with random prices, memory, spot
//! hazards and provisioning distributions; a function platform with random cold-start distributions, limits and
//! billing; a profile with random batch curves, model size and load time; spot events; keep-alive policies;
//! a trace from every generator; every policy), and checkers that are not the simulator's code look at its
//! state after every event:
//!
//! - time never goes back;
//! - every request is accounted for: arrivals = completed + rejected + dropped + outstanding, and the
//!   outstanding ones are exactly those held in instances' queues and batches;
//! - the view a policy sees agrees with itself: pool counts with the instance list, function counts with
//!   the per-function counts and the requests held at functions;
//! - every VM's life is well formed: provisioning → ready → draining → gone, never back, never seen again once
//!   gone; no service while provisioning; no new request once under an interruption notice;
//! - cost is never negative and never falls.
//!
//! `cargo test` runs `HYSCALE_SWARM_CASES` cases (default 24) from `HYSCALE_SWARM_MASTER` (default 0). The long
//! sweep: `HYSCALE_SWARM_CASES=10000 cargo test --release --locked --test integration swarm -- --nocapture`. A
//! failure prints the command that runs the failing case alone (`HYSCALE_SWARM_SEED=...`).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use hyscale_policies::view::VmState;
use hyscale_policies::{InstanceId, Nanos, POLICY_NAMES};
use hyscale_sim::{Observer, Snapshot};
use rand::{RngExt, SeedableRng};
use rand_pcg::Pcg64Mcg;

/// The checkers: state carried from one event to the next, and what they found.
#[derive(Default)]
struct Checker {
    now: Nanos,
    cost: f64,
    vms: BTreeMap<InstanceId, (VmState, u32, bool)>,
    gone: std::collections::BTreeSet<InstanceId>,
    events: u64,
    violations: Vec<String>,
}

impl Checker {
    fn fail(&mut self, what: String) {
        if self.violations.len() < 10 {
            self.violations.push(format!("event {} at {}: {what}", self.events, self.now));
        }
    }
}

impl Observer for Checker {
    fn after_event(&mut self, s: &Snapshot<'_>) {
        self.events += 1;
        if s.now < self.now {
            self.fail(format!("time went back to {}", s.now));
        }
        self.now = s.now;
        // Every request accounted for.
        let ended = s.completed + s.rejected + s.dropped;
        if s.arrivals != ended + s.outstanding {
            self.fail(format!(
                "arrivals {} != completed {} + rejected {} + dropped {} + outstanding {}",
                s.arrivals, s.completed, s.rejected, s.dropped, s.outstanding
            ));
        }
        if !s.run_ended && s.outstanding != s.held_at_vms + s.held_at_functions {
            self.fail(format!(
                "outstanding {} but {} held at VMs and {} at functions",
                s.outstanding, s.held_at_vms, s.held_at_functions
            ));
        }
        // The view agrees with itself.
        let v = s.view;
        for (t, pool) in v.pools.iter().enumerate() {
            let mine = v.vms.iter().filter(|i| i.vm_type.0 as usize == t);
            let (mut prov, mut ready, mut drain, mut queued, mut busy) = (0, 0, 0, 0u64, 0u64);
            let mut loads: Vec<u32> = Vec::new();
            for i in mine {
                match i.state {
                    VmState::Provisioning => prov += 1,
                    VmState::Ready => {
                        ready += 1;
                        let k = (i.queued + i.in_service) as usize;
                        if loads.len() <= k {
                            loads.resize(k + 1, 0);
                        }
                        loads[k] += 1;
                    }
                    VmState::Draining => drain += 1,
                }
                queued += u64::from(i.queued);
                busy += u64::from(i.in_service);
            }
            if pool.ready_loads != loads {
                self.fail(format!(
                    "pool {t}: ready loads {:?} but its ready instances hold {loads:?}",
                    pool.ready_loads
                ));
            }
            let counted = (pool.provisioning.total(), pool.ready.total(), pool.draining.total());
            if counted != (prov, ready, drain) || (pool.queued, pool.in_service) != (queued, busy) {
                self.fail(format!(
                    "pool {t}: counts {counted:?}, queued {}, in service {} but its instances say ({prov}, {ready}, \
                     {drain}), {queued}, {busy}",
                    pool.queued, pool.in_service
                ));
            }
        }
        let f = &v.functions;
        let per_instances: u32 = f.per_function.values().map(|c| c.instances).sum();
        let per_in_flight: u64 = f.per_function.values().map(|c| u64::from(c.in_flight)).sum();
        if per_instances != f.instances()
            || per_in_flight != f.in_flight
            || (!s.run_ended && f.in_flight != s.held_at_functions)
        {
            self.fail(format!(
                "functions: {} instances, {} in flight; per function {per_instances}, {per_in_flight}; held {}",
                f.instances(),
                f.in_flight,
                s.held_at_functions
            ));
        }
        // Every VM's life well formed.
        let mut seen = BTreeMap::new();
        for i in &v.vms {
            if self.gone.contains(&i.id) {
                self.fail(format!("instance {} came back after it was gone", i.id.0));
            }
            if i.state == VmState::Provisioning && i.in_service > 0 {
                self.fail(format!("instance {} serves while provisioning", i.id.0));
            }
            if let Some(&(before, queued, noticed)) = self.vms.get(&i.id) {
                let order = |s: VmState| match s {
                    VmState::Provisioning => 0,
                    VmState::Ready => 1,
                    VmState::Draining => 2,
                };
                if order(i.state) < order(before) {
                    self.fail(format!("instance {} went from {before:?} back to {:?}", i.id.0, i.state));
                }
                if noticed && i.queued > queued {
                    self.fail(format!("instance {} took requests under an interruption notice", i.id.0));
                }
            }
            seen.insert(i.id, (i.state, i.queued, i.interruption_at.is_some()));
        }
        for id in self.vms.keys() {
            if !seen.contains_key(id) {
                self.gone.insert(*id);
            }
        }
        self.vms = seen;
        // Cost never negative, never falling.
        if s.cost < 0.0 || s.cost + 1e-12 < self.cost {
            self.fail(format!("cost went from {} to {}", self.cost, s.cost));
        }
        self.cost = s.cost;
    }
}

/// One random case: the files of a scenario, written into `dir`, and its policy.
fn write_case(seed: u64, dir: &std::path::Path) -> String {
    let mut r = Pcg64Mcg::seed_from_u64(seed);
    let types = r.random_range(1..=3usize);
    let mut catalog = String::new();
    let mut profile = String::from("[model]\nname = \"m\"\n");
    let (size_mb, per_request_mb): (f64, f64) = (r.random_range(0.0..600.0), r.random_range(0.0..80.0));
    // Functions at least big enough for one request (smaller ones are a configuration error, tested elsewhere).
    let least_mb = (size_mb + per_request_mb).ceil() as u32 + 1;
    let _ = writeln!(
        profile,
        "size_mb = {size_mb:.1}\nper_request_mb = {per_request_mb:.1}\nmax_vcpus_per_request = {:.1}\nload_s = {:.3}\n",
        r.random_range(1.0..3.0),
        r.random_range(0.0..1.5)
    );
    let dist = |r: &mut Pcg64Mcg, scale: f64| match r.random_range(0..4) {
        0 => format!("{{ kind = \"fixed\", value = {:.3} }}", r.random_range(0.0..scale)),
        1 => {
            let lo = r.random_range(0.0..scale);
            format!("{{ kind = \"uniform\", min = {lo:.3}, max = {:.3} }}", lo + r.random_range(0.0..scale))
        }
        2 => format!("{{ kind = \"exponential\", mean = {:.3} }}", r.random_range(0.01..scale)),
        _ => {
            let p50 = r.random_range(0.01..scale);
            format!("{{ kind = \"lognormal\", p50 = {p50:.3}, p99 = {:.3} }}", p50 * r.random_range(1.1..5.0))
        }
    };
    for t in 0..types {
        let price = r.random_range(0.05..3.0);
        let spot = if r.random_bool(0.6) { format!("price_spot_per_h = {:.4}\n", price * 0.3) } else { String::new() };
        let _ = writeln!(
            catalog,
            "[[vm]]\nname = \"t{t}\"\nvcpus = {}\nmemory_gib = {:.1}\nprice_on_demand_per_h = {price:.4}\n{spot}\
             spot_interruptions_per_h = {:.3}\nlaunch_boot_s = {}\nmodel_load_mb_per_s = {:.1}\n",
            r.random_range(1..=16),
            r.random_range(1.0..64.0),
            if r.random_bool(0.5) { r.random_range(0.0..4.0) } else { 0.0 },
            dist(&mut r, 60.0),
            r.random_range(20.0..500.0)
        );
        let b1 = r.random_range(5.0..300.0);
        let _ = writeln!(
            profile,
            "[[hardware]]\nhardware = \"t{t}\"\nbatch = [1, 8]\nlatency_ms = [{b1:.2}, {:.2}]\ncv = {:.2}\n",
            b1 * r.random_range(1.0..8.0),
            r.random_range(0.0..0.5)
        );
    }
    let _ = writeln!(
        profile,
        "[[hardware]]\nhardware = \"function\"\nbatch = [1, 4]\nlatency_ms = [{0:.2}, {1:.2}]\ncv = {2:.2}\n",
        r.random_range(10.0..400.0),
        r.random_range(400.0..1600.0),
        r.random_range(0.0..0.4)
    );
    let _ = writeln!(
        catalog,
        "[functions]\nprice_per_gb_s = 0.0000166667\nprice_per_request = 0.0000002\nprovisioned_price_per_gb_s = \
         0.0000041667\nprovisioned_duration_price_per_gb_s = 0.0000097222\nprovisioned_granularity_s = {:.1}\n\
         billing_granularity_ms = 1.0\nbill_init = {}\nmemory_min_mb = 128\nmemory_max_mb = 10240\nmb_per_vcpu = \
         1769.0\nregional_concurrency = {}\nfunction_scale_step = {}\nfunction_scale_interval_s = 10.0\n\
         default_memory_mb = {}\ndefault_keep_alive_s = {:.1}\nsandbox_init_s = {}\nruntime_init_s = {:.3}\n\
         model_load_mb_per_s = {{ kind = \"lognormal\", p50 = {:.1}, p99 = 400.0 }}\n",
        r.random_range(0.0..600.0),
        r.random_bool(0.5),
        r.random_range(1..200),
        r.random_range(1..100),
        r.random_range(least_mb.max(1024)..4096),
        r.random_range(0.0..900.0),
        dist(&mut r, 2.0),
        r.random_range(0.0..0.3),
        r.random_range(20.0..300.0)
    );
    let duration = r.random_range(5.0..150.0);
    let rate = r.random_range(0.2..12.0);
    let trace = match r.random_range(0..5) {
        0 => format!("kind = \"poisson\"\nrate_per_s = {rate:.3}\nduration_s = {duration:.1}"),
        1 => format!(
            "kind = \"mmpp\"\nlow_rate_per_s = {:.3}\nhigh_rate_per_s = {:.3}\nmean_low_s = {:.1}\nmean_high_s = {:.1}\n\
             duration_s = {duration:.1}",
            rate / 4.0,
            rate * 2.0,
            r.random_range(1.0..30.0),
            r.random_range(1.0..10.0)
        ),
        2 => format!(
            "kind = \"diurnal\"\nmean_rate_per_s = {rate:.3}\namplitude = {:.2}\nperiod_s = {:.1}\npeak_at_s = {:.1}\n\
             duration_s = {duration:.1}",
            r.random_range(0.0..1.0),
            r.random_range(10.0..200.0),
            r.random_range(0.0..100.0)
        ),
        3 => format!(
            "kind = \"surge\"\nbase_rate_per_s = {rate:.3}\nfactor = {:.2}\nsurge_start_s = {:.1}\nsurge_duration_s = \
             {:.1}\nduration_s = {duration:.1}",
            r.random_range(1.0..5.0),
            r.random_range(0.0..duration),
            r.random_range(1.0..60.0)
        ),
        _ => format!(
            "kind = \"gamma\"\nrate_per_s = {rate:.3}\ncv = {:.2}\nduration_s = {duration:.1}",
            r.random_range(0.2..4.0)
        ),
    };
    let policy = POLICY_NAMES[r.random_range(0..POLICY_NAMES.len())];
    let t = r.random_range(0..types);
    let market = if r.random_bool(0.5) && catalog.contains("price_spot") { "spot" } else { "on-demand" };
    let market =
        if catalog.split("[[vm]]").nth(t + 1).is_some_and(|s| s.contains("price_spot")) { market } else { "on-demand" };
    let mut scenario = format!(
        "name = \"swarm-{seed}\"\nseed = {seed}\npolicy = \"{policy}\"\ncatalog = \"catalog.toml\"\nprofile = \
         \"profile.toml\"\n\n[trace]\n{trace}\n\n[slo]\nrt_max_ms = {:.1}\nsl_min = 0.95\n\n[sim]\nreport_interval_s = \
         {:.1}\narrival_window_s = {:.1}\nvm_queue_limit = {}\ndrain_limit_s = {:.1}\ntrace_offset_s = {:.1}\n\n\
         [spot]\nhazard_scale = {:.2}\nnotice_s = {:.1}\n",
        r.random_range(50.0..2000.0),
        r.random_range(1.0..60.0),
        r.random_range(1.0..10.0),
        r.random_range(1..200),
        r.random_range(0.0..300.0),
        r.random_range(0.0..60.0),
        r.random_range(0.0..200.0),
        r.random_range(0.0..120.0)
    );
    if r.random_bool(0.4) {
        let _ = writeln!(
            scenario,
            "events = [{{ at_s = {:.1}, vm_type = \"t{t}\", count = {} }}]",
            r.random_range(0.0..duration),
            r.random_range(1..3)
        );
    }
    let _ = writeln!(
        scenario,
        "\n[policies.static]\nfleet = [{{ vm_type = \"t{t}\", count = {}, market = \"{market}\", max_batch = {}, \
         max_wait_ms = {:.1} }}]\n\n[policies.static-peak]\nvm_type = \"t{t}\"\npeak_rate_per_s = {:.2}\n\n\
         [policies.target-tracking]\nvm_type = \"t{t}\"\n\n[policies.function-only]\nmemory_mb = {}\nkeep_alive_s = \
         {:.1}\nprewarm = {}\n",
        r.random_range(0..4),
        r.random_range(1..9),
        r.random_range(0.0..200.0),
        rate * 2.0,
        r.random_range(least_mb.max(128)..4096),
        r.random_range(0.0..600.0),
        r.random_range(0..3)
    );
    match r.random_range(0..3) {
        0 => {}
        1 => {
            let _ = writeln!(scenario, "[keep_alive]\nkind = \"fixed\"\nminutes = {:.2}", r.random_range(0.1..30.0));
        }
        _ => {
            let _ = writeln!(scenario, "[keep_alive]\nkind = \"hybrid\"");
        }
    }
    std::fs::write(dir.join("catalog.toml"), &catalog).expect("write catalog");
    std::fs::write(dir.join("profile.toml"), &profile).expect("write profile");
    std::fs::write(dir.join("scenario.toml"), &scenario).expect("write scenario");
    policy.to_string()
}

/// Runs case `seed` with the checkers; the violations found, or why it could not run.
fn run_case(seed: u64) -> Result<(u64, Vec<String>), String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let policy = write_case(seed, dir.path());
    let scenario = hyscale_sim::Scenario::load(&dir.path().join("scenario.toml"))
        .map_err(|e| format!("the generated scenario does not load: {e}"))?;
    let mut p =
        scenario.file.policies.build(&policy, &scenario.catalog).map_err(|e| format!("policy {policy}: {e}"))?;
    let arrivals = scenario.file.trace.open(&scenario.base_dir, seed).map_err(|e| format!("trace: {e}"))?;
    let mut checker = Checker::default();
    let (report, _) = hyscale_sim::simulate_observed(&scenario, p.as_mut(), arrivals, &mut checker)
        .map_err(|e| format!("the simulation failed: {e}"))?;
    let q = &report.requests;
    if q.arrivals != q.completed + q.rejected + q.dropped {
        checker.violations.push(format!("the report loses requests: {q:?}"));
    }
    Ok((checker.events, checker.violations))
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

#[test]
fn swarm_of_random_scenarios_keeps_every_invariant() {
    let cases: Vec<u64> = match env_u64("HYSCALE_SWARM_SEED") {
        Some(seed) => vec![seed],
        None => {
            let master = env_u64("HYSCALE_SWARM_MASTER").unwrap_or(0);
            let n = env_u64("HYSCALE_SWARM_CASES").unwrap_or(24);
            let mut r = Pcg64Mcg::seed_from_u64(master);
            (0..n).map(|_| r.random::<u64>()).collect()
        }
    };
    let (mut events, mut failures) = (0u64, Vec::new());
    for (k, &seed) in cases.iter().enumerate() {
        match run_case(seed) {
            Ok((n, v)) if v.is_empty() => events += n,
            Ok((_, v)) => failures.push(format!("case {k} (seed {seed}):\n  {}", v.join("\n  "))),
            Err(why) => failures.push(format!("case {k} (seed {seed}): {why}")),
        }
        if (k + 1) % 1000 == 0 {
            eprintln!("swarm: {} cases, {events} events checked, {} failing", k + 1, failures.len());
        }
    }
    eprintln!("swarm: {} cases, {events} events checked, {} failing", cases.len(), failures.len());
    assert!(
        failures.is_empty(),
        "{} of {} swarm cases failed; run one alone with\n  HYSCALE_SWARM_SEED=<seed> cargo test --locked --test \
         integration swarm -- --nocapture\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn the_checkers_catch_what_they_are_for() {
    // A view from a real scenario, and snapshots that break the rules: each is reported.
    let f = crate::support::fixture(&crate::support::Cloud::default(), "policy = \"function-only\"\n");
    let s = &f.scenario;
    let window = hyscale_policies::ArrivalWindow::new(Nanos::from_secs(5), 10);
    let settings = hyscale_policies::FunctionSettings {
        memory_mb: 1024,
        concurrency: 1,
        keep_alive: Nanos::from_secs(60),
        prewarm: 0,
        batching: hyscale_policies::BatchRule::NONE,
    };
    let view = hyscale_policies::View::new(s.catalog.clone(), s.slo, window, settings);
    let snap = |now: u64, arrivals: u64, completed: u64, held: u64, cost: f64| Snapshot {
        now: Nanos::from_secs(now),
        view: &view,
        arrivals,
        completed,
        rejected: 0,
        dropped: 0,
        outstanding: arrivals - completed,
        held_at_vms: held,
        held_at_functions: 0,
        cost,
        run_ended: false,
    };
    let mut c = Checker::default();
    c.after_event(&snap(10, 2, 2, 0, 1.0));
    assert!(c.violations.is_empty(), "{:?}", c.violations);
    c.after_event(&snap(5, 2, 2, 0, 1.0)); // time went back
    c.after_event(&snap(6, 3, 2, 0, 1.0)); // one outstanding, none held
    c.after_event(&snap(7, 3, 3, 0, 0.5)); // cost fell
    assert_eq!(c.violations.len(), 3, "{:?}", c.violations);
    assert!(c.violations[0].contains("time went back"));
    assert!(c.violations[1].contains("outstanding 1 but 0 held"));
    assert!(c.violations[2].contains("cost went from 1 to 0.5"));
}
