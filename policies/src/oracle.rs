//! The offline oracle: a **lower bound** on the cost of meeting the SLO on a trace, for a catalog and profile.
//!
//! It knows the whole trace (the number of requests) and everything the catalog says, and asks: what is
//! the least any policy could pay to serve `ceil(sl_min x requests)` of them within `rt_max`? Every served
//! request is served either by a VM or by a function:
//! - a VM of type t, on its cheaper market, serves at most `capacity_t` requests per second of its billed
//!   life (its best throughput over the batch sizes whose latency fits `rt_max`), so it costs at least
//!   `price_t / capacity_t` per request;
//! - a function invocation costs at least its billed service time at the cheapest memory size and
//!   per-instance concurrency that still finish within `rt_max`, shared among the concurrent requests, plus
//!   the per-request fee.
//!
//! So no policy pays less than `ceil(sl_min x requests) x` the cheapest of those per-request costs. The bound
//! ignores idle capacity, provisioning lead times, cold starts, billing minimums and the time structure of
//! the trace, each of which only adds cost, which is why it is a bound and not a plan: real policies sit
//! above it, and how far above is the headroom any policy could still win.

use serde::Serialize;

use crate::catalog::{Catalog, Market};
use crate::ledger::Slo;
use crate::time::Nanos;

/// The oracle's answer.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct OracleBound {
    /// The lower bound on total cost, dollars.
    pub cost: f64,
    /// Requests that must be served within the SLO.
    pub requests_needed: u64,
    /// The least cost per served request, dollars.
    pub cost_per_request: f64,
    /// What achieves it (`c5.large/spot at batch 1`, `functions at 3538 MB x 1`).
    pub cheapest: String,
}

/// The lower bound for `requests` arrivals under `slo`; see the module docs.
pub fn lower_bound(catalog: &Catalog, slo: &Slo, requests: u64) -> OracleBound {
    let mut best = (f64::INFINITY, String::from("nothing can meet rt_max"));
    for t in &catalog.vm_types {
        let table = &t.service;
        let capacity = (1..=table.max_measured_batch())
            .filter(|&b| table.latency(b) <= slo.rt_max)
            .map(|b| (table.throughput_per_s(b), b))
            .fold((0.0, 0), |a, x| if x.0 > a.0 { x } else { a });
        if capacity.0 <= 0.0 {
            continue;
        }
        for market in [Market::OnDemand, Market::Spot] {
            if let Some(price) = t.price_per_h(market) {
                let per_request = price / 3600.0 / capacity.0;
                if per_request < best.0 {
                    best = (per_request, format!("{}/{} at batch {}", t.name, market.name(), capacity.1));
                }
            }
        }
    }
    let f = &catalog.functions;
    let step = 64;
    let mut memory = f.memory_min_mb;
    while memory <= f.memory_max_mb {
        for concurrency in 1..=64u32 {
            if f.memory_needed_mb(concurrency) > memory as f64 {
                break;
            }
            let service = f.service_time(1, memory, concurrency);
            if service > slo.rt_max {
                continue;
            }
            let billed = service.round_up_to(f.billing_granularity.max(Nanos(1)));
            let per_request = billed.as_secs_f64() * memory as f64 / 1024.0 * f.price_per_gb_s / concurrency as f64
                + f.price_per_request;
            if per_request < best.0 {
                best = (per_request, format!("functions at {memory} MB x {concurrency}"));
            }
        }
        memory += step;
    }
    let requests_needed = (slo.sl_min * requests as f64).ceil() as u64;
    let cost_per_request = if best.0.is_finite() { best.0 } else { 0.0 };
    OracleBound { cost: cost_per_request * requests_needed as f64, requests_needed, cost_per_request, cheapest: best.1 }
}
