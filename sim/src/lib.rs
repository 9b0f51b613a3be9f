//! A deterministic discrete-event simulator of ML inference on VMs, spot instances and functions.
//!
//! [`simulate`] drives a policy from `hyscale-policies` against a stream of arrivals from
//! `hyscale-traces` on a [`Scenario`] (catalog, latency profile, SLO) and returns a
//! [`Report`](hyscale_policies::report::Report). The same scenario and seed give the same report, byte for
//! byte: time is an integer, event ties break by scheduling order, and every random draw comes from a named
//! stream of one master seed ([`rng::SeedFan`]).
//!
//! The cloud model: VMs go provisioning → ready → draining → gone, billed per second with a 60 s minimum;
//! function instances start cold (sandbox init + model load), are reused while warm, expire after a
//! keep-alive, serve `concurrency` requests at once from one model copy, and are throttled at the regional
//! limit; each instance batches by the shared [`BatchRule`](hyscale_policies::BatchRule); spot VMs are
//! interrupted by a seeded hazard or a list, with a notice first, and their work is routed again.

pub mod dist;
mod error;
pub mod fsd;
mod keyset;
pub mod queue;
pub mod rng;
pub mod scenario;
mod world;

pub use error::SimError;
pub use scenario::Scenario;
pub use world::{EngineStats, Observer, Snapshot, simulate, simulate_observed, simulate_with_stats};

use hyscale_policies::report::Report;

/// Loads nothing and builds nothing: runs the scenario's own policy on its own trace. A convenience for
/// tests and the command line.
pub fn run_scenario(scenario: &Scenario) -> Result<Report, SimError> {
    run_scenario_with(scenario, &scenario.file.policy, None)
}

/// Runs policy `policy_name` (configured from the scenario's sections) on the scenario's trace.
pub fn run_scenario_with(
    scenario: &Scenario,
    policy_name: &str,
    progress: Option<&mut dyn FnMut(hyscale_policies::Nanos, u64)>,
) -> Result<Report, SimError> {
    let mut policy = scenario.file.policies.build(policy_name, &scenario.catalog)?;
    let seed = rng::SeedFan::new(scenario.file.seed).seed("arrivals");
    let arrivals = scenario.file.trace.open(&scenario.base_dir, seed)?;
    simulate(scenario, policy.as_mut(), arrivals, progress)
}
