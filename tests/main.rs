//! Cross-crate tests, one binary; files are named by the behaviour they check.

mod support;

mod cli;
mod conservation;
mod determinism;
mod hand_computed;
mod live;
mod live_policies;
mod policies;
mod predict;
mod server_limits;
mod swarm;
mod trace_cli;
