//! Tiny scenarios whose every figure is computed by hand.

use crate::support::{
    Cloud, PROFILE, approx, assert_conserved, fixture, fixture_with_files, fixture_with_profile, run, run_arrivals,
    run_models,
};
use hyscale_policies::Nanos;
use hyscale_traces::Arrival;

const STATIC_ONE: &str = "policy = \"static\"\n[policies.static]\nfleet = [{ vm_type = \"vm1\", count = 1 }]\n";

#[test]
fn a_request_at_time_zero_waits_for_provisioning_then_its_service() {
    // One VM takes 30 s to provision; the request arrives at t = 0 and is served in 100 ms.
    let f = fixture(&Cloud { boot_s: 30.0, ..Cloud::default() }, STATIC_ONE);
    let r = run(&f, &[0.0]);
    assert_conserved(&r);
    assert_eq!(r.requests.completed, 1);
    assert!(approx(r.latency_ms.mean, 30_100.0), "latency {}", r.latency_ms.mean);
    assert!(approx(r.duration_s, 30.1));
    // Billed 30.1 s, raised to the 60 s minimum, at $3.60/h; it ran 30.1 s.
    assert!(approx(r.cost.vm_on_demand, 0.06), "cost {}", r.cost.vm_on_demand);
    assert!(approx(r.instances.vm_hours_on_demand, 30.1 / 3600.0));
    assert_eq!(r.slo.fulfilled, 0);
}

#[test]
fn two_requests_within_the_keep_alive_pay_one_cold_start() {
    // 800 ms cold start, 10 min keep-alive, 200 ms service at 1 vCPU: requests 5 minutes apart.
    let body = "policy = \"function-only\"\n[policies.function-only]\nmemory_mb = 1024\nkeep_alive_s = 600.0\n";
    let f = fixture(&Cloud::default(), body);
    let r = run(&f, &[0.0, 300.0]);
    assert_conserved(&r);
    assert_eq!(r.instances.function_cold_starts, 1);
    // Latencies 1000 ms (cold) and 200 ms (warm).
    assert!(approx(r.latency_ms.mean, 600.0), "mean {}", r.latency_ms.mean);
    // Init 0.8 s + two executions of 0.2 s, at 1 GB and $0.001/GB-s; two invocations at $0.01.
    assert!(approx(r.cost.function_compute, 0.0012), "compute {}", r.cost.function_compute);
    assert!(approx(r.cost.function_requests, 0.02));
    assert_eq!(r.model_memory.copies_peak, 1);
}

#[test]
fn requests_further_apart_than_the_keep_alive_pay_two_cold_starts() {
    let body = "policy = \"function-only\"\n[policies.function-only]\nmemory_mb = 1024\nkeep_alive_s = 600.0\n";
    let f = fixture(&Cloud::default(), body);
    let r = run(&f, &[0.0, 660.0]);
    assert_conserved(&r);
    assert_eq!(r.instances.function_cold_starts, 2);
    assert!(approx(r.latency_ms.mean, 1000.0));
}

#[test]
fn a_partial_batch_starts_when_its_oldest_request_has_waited_max_wait() {
    // Batch up to 4, wait at most 50 ms; the VM is ready at t = 0. Three requests at 0, 10 and 20 ms:
    // the batch starts at 50 ms and takes 120 ms (100 ms at 1, 130 ms at 4, linear between).
    let body = "policy = \"static\"\n[policies.static]\nfleet = [{ vm_type = \"vm1\", count = 1, max_batch = 4, max_wait_ms = 50.0 }]\n";
    let f = fixture(&Cloud { boot_s: 0.0, ..Cloud::default() }, body);
    let r = run(&f, &[0.0, 0.010, 0.020]);
    assert_conserved(&r);
    // Completed at 170 ms: latencies 170, 160, 150.
    assert!(approx(r.latency_ms.mean, 160.0), "mean {}", r.latency_ms.mean);
    assert!(approx(r.duration_s, 0.170));
}

#[test]
fn with_idle_start_a_request_that_finds_the_vm_idle_starts_at_once() {
    // As above, with idle start: the request at 0 finds the VM idle and runs alone at once (100 ms); those at
    // 10 and 20 ms queue behind it, and when it ends at 100 ms their oldest has waited past max_wait, so they
    // start together (110 ms at 2).
    let body = "policy = \"static\"\n[policies.static]\nfleet = [{ vm_type = \"vm1\", count = 1, max_batch = 4, max_wait_ms = 50.0 }]\n[sim]\nbatch_idle_start = true\n";
    let f = fixture(&Cloud { boot_s: 0.0, ..Cloud::default() }, body);
    let r = run(&f, &[0.0, 0.010, 0.020]);
    assert_conserved(&r);
    // Latencies 100, 200 and 190 ms.
    assert!(approx(r.latency_ms.mean, 490.0 / 3.0), "mean {}", r.latency_ms.mean);
    assert!(approx(r.duration_s, 0.210));
    // A lone request later, the VM idle again: served in its service time, not after max_wait.
    let r = run(&f, &[0.0, 5.0]);
    assert!(approx(r.latency_ms.mean, 100.0), "mean {}", r.latency_ms.mean);
}

#[test]
fn a_full_batch_starts_at_once() {
    let body = "policy = \"static\"\n[policies.static]\nfleet = [{ vm_type = \"vm1\", count = 1, max_batch = 4, max_wait_ms = 50.0 }]\n";
    let f = fixture(&Cloud { boot_s: 0.0, ..Cloud::default() }, body);
    let r = run(&f, &[0.0, 0.010, 0.020, 0.030]);
    // The fourth request fills the batch at 30 ms; 130 ms later all four complete: 160, 150, 140, 130.
    assert!(approx(r.latency_ms.mean, 145.0), "mean {}", r.latency_ms.mean);
}

#[test]
fn the_regional_concurrency_limit_throttles() {
    let f = fixture(&Cloud { regional: 2, ..Cloud::default() }, "policy = \"function-only\"\n");
    let r = run(&f, &[0.0, 0.0, 0.0]);
    assert_conserved(&r);
    assert_eq!(r.requests.rejected_by_reason.get("throttled"), Some(&1));
    assert_eq!(r.instances.function_cold_starts, 2);
}

#[test]
fn a_full_queue_rejects_with_its_reason() {
    let body = format!("{STATIC_ONE}[sim]\nvm_queue_limit = 2\n");
    let f = fixture(&Cloud::default(), &body);
    let r = run(&f, &[0.0, 0.0, 0.0]);
    assert_conserved(&r);
    assert_eq!(r.requests.rejected_by_reason.get("queue_full"), Some(&1));
    assert_eq!(r.requests.completed, 2);
}

#[test]
fn work_of_an_interrupted_spot_instance_is_routed_again() {
    // Two spot VMs ready at 0; ten requests at 0 alternate between them (100 ms each). vm 0 gets its
    // notice at 50 ms and is taken at 250 ms, holding one request in service and two queued; they move
    // to vm 1, which finishes its own five at 500 ms and the three at 800 ms.
    let body = "policy = \"static\"\n[spot]\nnotice_s = 0.2\nevents = [{ at_s = 0.05, vm_type = \"vm1\", count = 1 }]\n\
                [policies.static]\nfleet = [{ vm_type = \"vm1\", count = 2, market = \"spot\" }]\n";
    let f = fixture(&Cloud { boot_s: 0.0, ..Cloud::default() }, body);
    let r = run(&f, &[0.0; 10]);
    assert_conserved(&r);
    assert_eq!(r.requests.completed, 10);
    assert_eq!(r.instances.spot_interruptions, 1);
    assert_eq!(r.instances.rerouted, 3);
    assert!((r.latency_ms.max - 800.0).abs() < 1.0, "max {}", r.latency_ms.max);
    // vm 0, interrupted by the provider within its first hour, is free (EC2's rule); vm 1, released at the
    // end of the run after 0.8 s, pays the 60 s minimum at $1.80/h.
    assert!(approx(r.cost.vm_spot, 0.03), "spot cost {}", r.cost.vm_spot);
}

#[test]
fn work_that_cannot_be_routed_again_is_dropped_with_a_reason() {
    let body = "policy = \"static\"\n[spot]\nnotice_s = 0.2\nevents = [{ at_s = 0.05, vm_type = \"vm1\" }]\n\
                [policies.static]\nfleet = [{ vm_type = \"vm1\", count = 1, market = \"spot\" }]\n";
    let f = fixture(&Cloud { boot_s: 0.0, ..Cloud::default() }, body);
    let r = run(&f, &[0.0; 4]);
    assert_conserved(&r);
    // Two complete (100 and 200 ms); the third (in service) and fourth (queued) are lost with their VM.
    assert_eq!(r.requests.completed, 2);
    assert_eq!(r.requests.dropped_by_reason.get("reroute_failed:no_vm_capacity"), Some(&2));
}

#[test]
fn the_drain_limit_drops_what_is_still_outstanding() {
    let body = format!("{STATIC_ONE}[sim]\ndrain_limit_s = 10.0\n");
    let f = fixture(&Cloud { boot_s: 30.0, ..Cloud::default() }, &body);
    let r = run(&f, &[0.0]);
    assert_conserved(&r);
    assert_eq!(r.requests.dropped_by_reason.get("run_ended"), Some(&1));
    assert!(approx(r.duration_s, 10.0));
    assert!(approx(r.cost.vm_on_demand, 0.06));
}

#[test]
fn prewarmed_functions_skip_the_cold_start_and_bill_provisioned_capacity() {
    let body = "policy = \"function-only\"\n[policies.function-only]\nmemory_mb = 1024\nprewarm = 1\n";
    let f = fixture(&Cloud::default(), body);
    // The pre-warmed instance is warm at 0.8 s; a request at 5 s finds it warm.
    let r = run(&f, &[5.0]);
    assert_eq!(r.instances.function_cold_starts, 1);
    assert!(approx(r.latency_ms.mean, 200.0), "mean {}", r.latency_ms.mean);
    // Provisioned capacity 1 GB for 5.2 s, billed as 5 minutes at $0.0001/GB-s; no init charge for a
    // provisioned instance; its 0.2 s of work at the provisioned duration price, $0.0005/GB-s.
    let expected = 300.0 * 0.0001 + 0.2 * 0.0005;
    assert!(approx(r.cost.function_compute, expected), "compute {} vs {expected}", r.cost.function_compute);
}

#[test]
fn pre_warming_past_the_account_limit_is_refused_at_the_limit() {
    // A limit of 2: three provisioned instances asked for, two started, the action refused.
    let body = "policy = \"function-only\"\n[policies.function-only]\nmemory_mb = 1024\nprewarm = 3\n";
    let f = fixture(&Cloud { regional: 2, ..Cloud::default() }, body);
    let r = run(&f, &[5.0]);
    assert_eq!(r.instances.function_cold_starts, 2);
    assert_eq!(r.actions.refused.get("prewarm_over_limit"), Some(&1));
    assert_eq!(r.requests.completed, 1);
}

#[test]
fn an_empty_trace_ends_at_once() {
    let f = fixture(&Cloud::default(), STATIC_ONE);
    let r = run(&f, &[]);
    assert_conserved(&r);
    assert_eq!(r.requests.arrivals, 0);
    assert!(approx(r.slo.attainment, 1.0));
}

#[test]
fn a_spot_hazard_interrupts_at_random_and_the_fleet_is_replaced() {
    // A hazard of 60 per hour: a spot VM lasts a minute on average, so 20 minutes of traffic see dozens of
    // interruptions; the static policy keeps replacing them (every 10 s) and no request goes unaccounted.
    let body = "policy = \"static\"\nseed = 5\n[spot]\nnotice_s = 2.0\n\
                [trace]\nkind = \"poisson\"\nrate_per_s = 2.0\nduration_s = 1200.0\n\
                [policies.static]\nfleet = [{ vm_type = \"vm1\", count = 2, market = \"spot\" }]\n";
    let f = fixture(&Cloud { boot_s: 1.0, hazard_per_h: 60.0, ..Cloud::default() }, body);
    let r = hyscale_sim::run_scenario(&f.scenario).expect("runs");
    assert_conserved(&r);
    assert!(r.instances.spot_interruptions > 20, "only {} interruptions", r.instances.spot_interruptions);
    assert!(r.instances.vms_launched["vm1/spot"] > r.instances.spot_interruptions);
    assert!(r.requests.completed > r.requests.arrivals * 8 / 10, "{:?}", r.requests);
}

const FUNCTIONS_1GB: &str =
    "policy = \"function-only\"\n[policies.function-only]\nmemory_mb = 1024\nkeep_alive_s = 600.0\n";

#[test]
fn an_instance_serves_only_its_own_function() {
    // Function 0 at 0 s and 300 s, function 1 at 100 s: function 1 finds function 0's idle instance but may
    // not use it, so it pays its own cold start; function 0's second request is warm.
    let f = fixture(&Cloud::default(), FUNCTIONS_1GB);
    let r = run_models(&f, &[(0.0, 0), (100.0, 1), (300.0, 0)]);
    assert_conserved(&r);
    assert_eq!(r.instances.function_cold_starts, 2);
    assert_eq!(r.functions.functions, 2);
    assert_eq!((r.functions.invocations, r.functions.cold_invocations), (3, 2));
    // Cold percentages by function: 50% (function 0) and 100% (function 1); nearest rank p50 = 50, p75 = 100.
    assert!(approx(r.functions.cold_pct_p50, 50.0) && approx(r.functions.cold_pct_p75, 100.0), "{:?}", r.functions);
    // Latencies: 1,000 ms (cold), 1,000 ms (cold), 200 ms (warm): mean 733.3 ms.
    assert!(
        (r.latency_ms.max - 1000.0).abs() < 1.0 && (r.latency_ms.mean - 2200.0 / 3.0).abs() < 1.0,
        "{:?}",
        r.latency_ms
    );
}

#[test]
fn a_fixed_keep_alive_policy_sets_every_functions_window_and_idle_memory_is_counted() {
    // [keep_alive] one minute overrides the policy's 600 s. Requests at 0 s and 120 s: the instance is idle
    // from 1.0 s (0.8 s cold start + 0.2 s service), expires at 61.0 s, so the second request is cold too.
    let body = format!("{FUNCTIONS_1GB}[keep_alive]\nkind = \"fixed\"\nminutes = 1\n");
    let f = fixture(&Cloud::default(), &body);
    let r = run(&f, &[0.0, 120.0]);
    assert_conserved(&r);
    assert_eq!(r.functions.keep_alive, "fixed-1min");
    assert_eq!((r.functions.invocations, r.functions.cold_invocations), (2, 2));
    // Idle 1 GB from 1.0 s to 61.0 s; the run ends as the second request completes (121.0 s).
    assert!(approx(r.functions.wasted_memory_gb_s, 60.0), "{}", r.functions.wasted_memory_gb_s);
    // Without the keep-alive policy the 600 s window keeps it: one cold start, idle 1.0 s to 120.0 s.
    let f = fixture(&Cloud::default(), FUNCTIONS_1GB);
    let r = run(&f, &[0.0, 120.0]);
    assert_eq!(r.functions.keep_alive, "settings");
    assert_eq!(r.functions.cold_invocations, 1);
    assert!(approx(r.functions.wasted_memory_gb_s, 119.0), "{}", r.functions.wasted_memory_gb_s);
}

#[test]
fn the_account_concurrency_limit_counts_requests_in_flight() {
    // A limit of 2 concurrent executions: three requests at 0 s, the third is throttled; at 5 s the first two
    // are done and two more run (on the two warm instances).
    let f = fixture(&Cloud { regional: 2, ..Cloud::default() }, FUNCTIONS_1GB);
    let r = run(&f, &[0.0, 0.0, 0.0, 5.0, 5.0]);
    assert_conserved(&r);
    assert_eq!(r.requests.rejected_by_reason.get("throttled"), Some(&1));
    assert_eq!(r.requests.completed, 4);
    assert_eq!(r.instances.function_cold_starts, 2);
}

#[test]
fn idle_instances_of_other_functions_do_not_count_against_the_account_limit() {
    // A limit of 2 concurrent executions: function 0's two requests at 0 s leave two idle instances (kept alive
    // 600 s); at 5 s nothing runs, so function 1's request gets an instance of its own (a third cold start),
    // as on AWS, where concurrency is executions in flight and idle environments hold none.
    let f = fixture(&Cloud { regional: 2, ..Cloud::default() }, FUNCTIONS_1GB);
    let r = run_models(&f, &[(0.0, 0), (0.0, 0), (5.0, 1)]);
    assert_conserved(&r);
    assert_eq!(r.requests.rejected, 0);
    assert_eq!(r.requests.completed, 3);
    assert_eq!(r.instances.function_cold_starts, 3);
}

#[test]
fn a_function_adds_at_most_its_scaling_step_of_executions_per_interval() {
    // At most 2 more executions per function per 10 s. Three requests of function 0 at 0 s: the third is
    // refused `function_scaling`; function 1 has its own budget. At 10.5 s (all done by 1 s, so the interval
    // starts from 0 in flight) again two run and the third is refused.
    let f = fixture(&Cloud { scale_step: 2, ..Cloud::default() }, FUNCTIONS_1GB);
    let r = run_models(&f, &[(0.0, 0), (0.0, 0), (0.0, 0), (0.0, 1), (10.5, 0), (10.5, 0), (10.5, 0)]);
    assert_conserved(&r);
    assert_eq!(r.requests.rejected_by_reason.get("function_scaling"), Some(&2));
    assert_eq!(r.requests.completed, 5);
}

#[test]
fn a_vm_under_an_interruption_notice_takes_no_new_requests() {
    // Two spot VMs ready at 0; vm 0 gets a 10 s notice at 50 ms. Requests at 0 go one to each; the two at
    // 150 ms (both VMs idle) both go to vm 1, which serves them one after the other: 100 and 200 ms.
    let body = "policy = \"static\"\n[spot]\nnotice_s = 10.0\nevents = [{ at_s = 0.05, vm_type = \"vm1\", count = 1 }]\n\
                [policies.static]\nfleet = [{ vm_type = \"vm1\", count = 2, market = \"spot\" }]\n";
    let f = fixture(&Cloud { boot_s: 0.0, ..Cloud::default() }, body);
    let r = run(&f, &[0.0, 0.0, 0.15, 0.15]);
    assert_conserved(&r);
    assert_eq!(r.requests.completed, 4);
    assert_eq!(r.instances.rerouted, 0);
    assert!((r.latency_ms.max - 200.0).abs() < 1.0, "max {}", r.latency_ms.max);
}

#[test]
fn a_cold_start_adds_the_model_load_at_the_vcpu_share_its_memory_buys() {
    // load_s = 0.5 s at one vCPU; 512 MB buys half a vCPU (1,024 MB per vCPU), so loading takes 1.0 s on top of
    // the 0.8 s sandbox; the 200 ms request then takes 400 ms: 2.2 s in all. The fetch is 0 (size 0).
    let profile = PROFILE.replace("size_mb = 0.0", "size_mb = 0.0\nload_s = 0.5");
    let body = "policy = \"function-only\"\n[policies.function-only]\nmemory_mb = 512\n";
    let f = fixture_with_profile(&Cloud::default(), &profile, body);
    let r = run(&f, &[0.0]);
    assert!((r.latency_ms.max - 2200.0).abs() < 2.0, "{:?}", r.latency_ms);
    // The planning estimate a policy sees is the mean at the default memory (1,024 MB: one vCPU): 1.3 s.
    assert_eq!(f.scenario.catalog.functions.cold_start_mean, Nanos::from_millis(1300));
}

#[test]
fn a_requests_size_adds_to_its_service_time_through_the_profile() {
    // vm1: 100 ms per batch of one, plus 1 ms per input token and 10 ms per output token: a request of 5 in
    // and 3 out takes 135 ms; one without sizes 100 ms.
    let profile =
        PROFILE.replace("latency_ms = [100.0, 130.0]", "latency_ms = [100.0, 130.0]\ninput_ms = 1.0\noutput_ms = 10.0");
    let f = fixture_with_profile(&Cloud { boot_s: 0.0, ..Cloud::default() }, &profile, STATIC_ONE);
    let at =
        |t: f64, i: u32, o: u32| Arrival { time: Nanos::from_secs_f64(t), model: 0, input_size: i, output_size: o };
    let r = run_arrivals(&f, vec![at(1.0, 5, 3), at(2.0, 0, 0)]);
    assert_conserved(&r);
    assert!((r.latency_ms.max - 135.0).abs() < 0.5, "{:?}", r.latency_ms);
    assert!((r.latency_ms.mean - 117.5).abs() < 0.5, "{:?}", r.latency_ms);
}

#[test]
fn a_serving_overhead_adds_to_latency_but_not_to_the_instances_busy_time() {
    // vm1: 100 ms per request plus a 20 ms serving overhead; two requests 110 ms apart: the second starts at
    // 110 ms (the first's batch ended at 100 ms: the overhead does not hold the VM), so both take 120 ms.
    let profile = PROFILE.replace("latency_ms = [100.0, 130.0]", "latency_ms = [100.0, 130.0]\noverhead_ms = 20.0");
    let f = fixture_with_profile(&Cloud { boot_s: 0.0, ..Cloud::default() }, &profile, STATIC_ONE);
    let r = run(&f, &[1.0, 1.11]);
    assert_conserved(&r);
    assert!((r.latency_ms.max - 120.0).abs() < 0.5, "{:?}", r.latency_ms);
    assert!((r.latency_ms.mean - 120.0).abs() < 0.5, "{:?}", r.latency_ms);
    // With a 99th percentile the overhead is drawn per request (log-normal, median 20 ms): the median of many
    // requests is close to 120 ms and the spread shows in the tail; a p99 not above the median is refused.
    let spread = profile.replace("overhead_ms = 20.0", "overhead_ms = 20.0\noverhead_p99_ms = 60.0");
    let f = fixture_with_profile(&Cloud { boot_s: 0.0, ..Cloud::default() }, &spread, STATIC_ONE);
    let times: Vec<f64> = (0..2000).map(|i| 1.0 + 0.2 * i as f64).collect();
    let r = run(&f, &times);
    assert!((r.latency_ms.p50 - 120.0).abs() < 3.0, "{:?}", r.latency_ms);
    assert!(r.latency_ms.p99 > 150.0 && r.latency_ms.p99 < 175.0, "{:?}", r.latency_ms);
    let bad = profile.replace("overhead_ms = 20.0", "overhead_ms = 20.0\noverhead_p99_ms = 10.0");
    let file: hyscale_policies::profile::ProfileFile = toml::from_str(&bad).unwrap();
    let err = file.hardware[0].table().unwrap_err().to_string();
    assert!(err.contains("overhead_p99_ms"), "{err}");
}

#[test]
fn keep_alive_checks_do_not_pile_up_in_the_event_queue() {
    // 2,000 requests 1.5 s apart on one function with a 600 s keep-alive: its instance goes idle 2,000 times,
    // and a check armed per idle period would hold ~400 events at once; one armed per instance holds a handful.
    let f = fixture(&Cloud::default(), FUNCTIONS_1GB);
    let s = &f.scenario;
    let mut policy = s.file.policies.build(&s.file.policy, &s.catalog).unwrap();
    let times: Vec<_> = (0..2000)
        .map(|i| Ok(Arrival { time: Nanos::from_millis(1500 * i), model: 0, input_size: 0, output_size: 0 }))
        .collect();
    let (r, stats) = hyscale_sim::simulate_with_stats(s, policy.as_mut(), Box::new(times.into_iter()), None).unwrap();
    assert_eq!(r.requests.completed, 2000);
    assert_eq!(r.instances.function_cold_starts, 1);
    assert!(stats.queue_peak <= 8, "{stats:?}");
}

#[test]
fn knative_pods_are_billed_as_their_share_of_a_node_not_as_lambda() {
    // The KPA keeps one pod from 0 s (initial scale 1); the request at 10 s runs on it (warm since 0.8 s) and
    // the run ends at 10.2 s. The node vm1 ($3.60/h, 4 GiB) bills $0.00025 per GB-s: a 1 GB pod for 10.2 s
    // costs $0.00255; no per-request fee, no GB-s of execution, no init, no provisioned concurrency.
    let body = "policy = \"kpa\"\n[policies.kpa]\nmemory_mb = 1024\n";
    let f = fixture(&Cloud::default(), body);
    let r = run(&f, &[10.0]);
    assert_conserved(&r);
    assert_eq!(r.requests.completed, 1);
    assert!(approx(r.cost.pods, 0.00255), "{:?}", r.cost);
    assert_eq!((r.cost.function_compute, r.cost.function_requests), (0.0, 0.0));
    assert!(approx(r.cost.total, 0.00255));
}

/// Model 1: 3,000 MB, 50 ms on vm1, 100 ms on a function at one vCPU, 0.5 s to load at one vCPU.
const BIG_MODEL: &str = "[model]\nname = \"big\"\nsize_mb = 3000.0\nload_s = 0.5\n\n[[hardware]]\nhardware = \"vm1\"\n\
                         batch = [1]\nlatency_ms = [50.0]\n\n[[hardware]]\nhardware = \"function\"\nbatch = [1]\n\
                         latency_ms = [100.0]\n";
/// Model 2: 2,000 MB, 70 ms on vm1, no load beyond the fetch.
const MID_MODEL: &str = "[model]\nname = \"mid\"\nsize_mb = 2000.0\n\n[[hardware]]\nhardware = \"vm1\"\nbatch = [1]\n\
                         latency_ms = [70.0]\n\n[[hardware]]\nhardware = \"function\"\nbatch = [1]\nlatency_ms = [140.0]\n";
/// Model 3: profiled on functions only.
const FN_ONLY_MODEL: &str = "[model]\nname = \"fn-only\"\nsize_mb = 10.0\n\n[[hardware]]\nhardware = \"function\"\n\
                             batch = [1]\nlatency_ms = [100.0]\n";
const MODELS: &str = "[[models]]\nids = [1]\nprofile = \"big.toml\"\n[[models]]\nids = [2]\nprofile = \"mid.toml\"\n\
                      [[models]]\nids = [3]\nprofile = \"fn.toml\"\n";

fn models_fixture(body: &str) -> crate::support::Fixture {
    let files = [("big.toml", BIG_MODEL), ("mid.toml", MID_MODEL), ("fn.toml", FN_ONLY_MODEL)];
    fixture_with_files(&Cloud { boot_s: 0.0, ..Cloud::default() }, PROFILE, &format!("{body}{MODELS}"), &files)
}

#[test]
fn a_vm_hosts_several_models_loading_them_on_demand_and_evicting_the_least_recently_used() {
    // One vm1 (4 GiB, 100 MB/s), booted with model 0 (0 MB). Model 1 at 1 s: fetch 3,000 MB in 30 s + 0.5 s
    // load + 50 ms = 30.55 s. Model 1 at 40 s: loaded, 50 ms. Model 0 at 50 s: 100 ms. Model 2 at 60 s:
    // 3,000 + 2,000 MB do not fit, so model 1 (used last at 40 s, before model 0 at 50 s) is evicted; 20 s +
    // 70 ms. Model 1 at 100 s: models 0 and then 2 are evicted; 30.55 s again. Three loads in all.
    let f = models_fixture(STATIC_ONE);
    let r = run_models(&f, &[(1.0, 1), (40.0, 1), (50.0, 0), (60.0, 2), (100.0, 1)]);
    assert_conserved(&r);
    assert_eq!(r.requests.completed, 5);
    assert_eq!(r.instances.vm_model_loads, 3);
    assert!((r.latency_ms.max - 30_550.0).abs() < 40.0, "{:?}", r.latency_ms);
    let mean = (30_550.0 + 50.0 + 100.0 + 20_070.0 + 30_550.0) / 5.0;
    assert!((r.latency_ms.mean - mean).abs() < 20.0, "{} vs {mean}", r.latency_ms.mean);
    // Model 3 has no profile on vm1: refused with the reason.
    let r = run_models(&f, &[(1.0, 3)]);
    assert_eq!(r.requests.rejected_by_reason.get("policy:model not profiled on this VM type"), Some(&1));
}

#[test]
fn a_function_of_another_model_cold_starts_and_serves_with_that_models_profile() {
    // Model 1 on a 1,024 MB function (one vCPU): 0.8 s sandbox + 3,000 MB at 100 MB/s + 0.5 s load = 31.3 s,
    // then 100 ms; model 3 (10 MB): 0.8 + 0.1 s, then 100 ms.
    let f = models_fixture(FUNCTIONS_1GB);
    let r = run_models(&f, &[(0.0, 1), (0.0, 3)]);
    assert_conserved(&r);
    assert!((r.latency_ms.max - 31_400.0).abs() < 40.0, "{:?}", r.latency_ms);
    assert!((r.latency_ms.mean - (31_400.0 + 1_000.0) / 2.0).abs() < 20.0, "{:?}", r.latency_ms);
}

/// Provisions two on-demand vm1 at start; at its first tick (1 s) asks to release three, then instance 0.
struct ReleaseTooMany;

impl hyscale_policies::Scaler for ReleaseTooMany {
    fn control_interval(&self) -> Nanos {
        Nanos::from_secs(1)
    }
    fn start(&mut self, _: &hyscale_policies::View, out: &mut Vec<hyscale_policies::Action>) {
        let vm1 = hyscale_policies::VmTypeId(0);
        out.push(hyscale_policies::Action::Provision {
            vm_type: vm1,
            market: hyscale_policies::Market::OnDemand,
            count: 2,
        });
    }
    fn tick(&mut self, view: &hyscale_policies::View, out: &mut Vec<hyscale_policies::Action>) {
        if view.now == Nanos::from_secs(1) {
            let vm1 = hyscale_policies::VmTypeId(0);
            out.push(hyscale_policies::Action::ReleaseVms {
                vm_type: vm1,
                market: hyscale_policies::Market::OnDemand,
                count: 3,
            });
            out.push(hyscale_policies::Action::Release { instance: hyscale_policies::InstanceId(0) });
        }
    }
}

impl hyscale_policies::Router for ReleaseTooMany {
    fn route(&mut self, _: &hyscale_policies::RequestInfo, _: &hyscale_policies::View) -> hyscale_policies::Route {
        hyscale_policies::Route::Vm(hyscale_policies::VmTypeId(0))
    }
}

impl hyscale_policies::Policy for ReleaseTooMany {
    fn name(&self) -> &str {
        "release-too-many"
    }
}

#[test]
fn releases_follow_the_shared_rule_and_refusals_have_the_shared_keys() {
    // Releasing 3 of 2 releases both and is refused (`fewer_instances_than_asked`); releasing instance 0 once
    // it is gone is refused (`no_such_instance`): the keys and rules the live backend uses too. The request
    // at 5 s finds no VM.
    let f = fixture(&Cloud { boot_s: 0.0, ..Cloud::default() }, STATIC_ONE);
    let mut policy = ReleaseTooMany;
    let arrivals = vec![Ok(Arrival { time: Nanos::from_secs(5), model: 0, input_size: 0, output_size: 0 })];
    let r = hyscale_sim::simulate(&f.scenario, &mut policy, Box::new(arrivals.into_iter()), None).unwrap();
    assert_conserved(&r);
    assert_eq!(r.actions.refused.get("fewer_instances_than_asked"), Some(&1), "{:?}", r.actions.refused);
    assert_eq!(r.actions.refused.get("no_such_instance"), Some(&1), "{:?}", r.actions.refused);
    assert_eq!(r.requests.rejected_by_reason.get("no_vm_capacity"), Some(&1));
}

#[test]
fn a_trace_error_after_thousands_of_arrivals_ends_the_run_with_it_and_the_trace_is_not_read_past_it() {
    // The engine reads arrivals ahead in chunks; an error in the middle of a chunk still ends the run with
    // that error, and the stream is not asked for more once it has failed.
    let f = fixture(&Cloud { boot_s: 0.0, ..Cloud::default() }, STATIC_ONE);
    let calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = calls.clone();
    let stream = (0..5000u64).map(move |i| {
        counted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if i == 3000 {
            Err(hyscale_traces::TraceError::InvalidParameters("row 3001 is broken".into()))
        } else {
            Ok(Arrival { time: Nanos::from_millis(i), model: 0, input_size: 0, output_size: 0 })
        }
    });
    let s = &f.scenario;
    let mut policy = s.file.policies.build(&s.file.policy, &s.catalog).expect("policy builds");
    let err = hyscale_sim::simulate(s, policy.as_mut(), Box::new(stream), None).expect_err("the trace's error");
    assert!(err.to_string().contains("row 3001 is broken"), "{err}");
    assert_eq!(calls.load(std::sync::atomic::Ordering::Relaxed), 3001);
}
