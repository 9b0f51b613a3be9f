//! Property: over random scenarios, every request ends exactly once (completed, rejected or dropped).

use proptest::prelude::*;

use crate::support::{Cloud, assert_conserved, fixture};

#[derive(Debug, Clone)]
struct Case {
    seed: u64,
    function_only: bool,
    count: u32,
    spot: bool,
    max_batch: u32,
    max_wait_ms: f64,
    rate: f64,
    duration_s: f64,
    boot_s: f64,
    cold_s: f64,
    regional: u32,
    queue_limit: u32,
    drain_s: f64,
    hazard_per_h: f64,
    notice_s: f64,
    events: Vec<(f64, u32)>,
    memory_mb: u32,
    keep_alive_s: f64,
    prewarm: u32,
}

fn case() -> impl Strategy<Value = Case> {
    (
        (any::<u64>(), any::<bool>(), 0u32..4, any::<bool>(), 1u32..9, 0.0f64..100.0),
        (0.5f64..60.0, 1.0f64..90.0, 0.0f64..40.0, 0.0f64..2.0, 1u32..40, 1u32..50),
        (0.0f64..60.0, prop_oneof![Just(0.0), 10.0f64..500.0], 0.0f64..130.0),
        (proptest::collection::vec((0.0f64..120.0, 1u32..3), 0..3), 128u32..4096, 0.0f64..30.0, 0u32..3),
    )
        .prop_map(|(a, b, c, d)| Case {
            seed: a.0,
            function_only: a.1,
            count: a.2,
            spot: a.3,
            max_batch: a.4,
            max_wait_ms: a.5,
            rate: b.0,
            duration_s: b.1,
            boot_s: b.2,
            cold_s: b.3,
            regional: b.4,
            queue_limit: b.5,
            drain_s: c.0,
            hazard_per_h: c.1,
            notice_s: c.2,
            events: d.0,
            memory_mb: d.1,
            keep_alive_s: d.2,
            prewarm: d.3,
        })
}

fn scenario_body(c: &Case) -> String {
    let events: Vec<String> =
        c.events.iter().map(|(t, n)| format!("{{ at_s = {t:?}, vm_type = \"vm1\", count = {n} }}")).collect();
    format!(
        "seed = {seed}\npolicy = \"{policy}\"\n\
         [trace]\nkind = \"poisson\"\nrate_per_s = {rate:?}\nduration_s = {dur:?}\n\
         [sim]\nvm_queue_limit = {ql}\ndrain_limit_s = {drain:?}\nreport_interval_s = 7.0\n\
         [spot]\nnotice_s = {notice:?}\nevents = [{events}]\n\
         [policies.static]\nfleet = [{{ vm_type = \"vm1\", count = {count}, market = \"{market}\", max_batch = {mb}, max_wait_ms = {mw:?} }}]\n\
         [policies.function-only]\nmemory_mb = {mem}\nkeep_alive_s = {ka:?}\nprewarm = {pw}\n",
        seed = c.seed,
        policy = if c.function_only { "function-only" } else { "static" },
        rate = c.rate,
        dur = c.duration_s,
        ql = c.queue_limit,
        drain = c.drain_s,
        notice = c.notice_s,
        events = events.join(", "),
        count = c.count,
        market = if c.spot { "spot" } else { "on-demand" },
        mb = c.max_batch,
        mw = c.max_wait_ms,
        mem = c.memory_mb,
        ka = c.keep_alive_s,
        pw = c.prewarm.min(c.regional),
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn no_request_is_lost(c in case()) {
        let body = scenario_body(&c);
        let cloud = Cloud { regional: c.regional, hazard_per_h: c.hazard_per_h, boot_s: c.boot_s, cold_s: c.cold_s, ..Cloud::default() };
        let f = fixture(&cloud, &body);
        let r = hyscale_sim::run_scenario(&f.scenario)
            .unwrap_or_else(|e| panic!("run failed: {e}\nscenario:\n{body}"));
        let q = &r.requests;
        prop_assert_eq!(q.arrivals, q.completed + q.rejected + q.dropped, "requests lost; scenario (seed {}):\n{}", c.seed, body);
        assert_conserved(&r);
        prop_assert!(r.cost.total >= 0.0 && r.cost.total.is_finite());
        prop_assert!(r.slo.attainment >= 0.0 && r.slo.attainment <= 1.0);
    }
}
