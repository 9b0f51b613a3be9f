//! The two decision points of a scaling policy, and the trait that joins them.
//!
//! A policy sees a [`View`] and answers; `&mut self` is only for its own memory (a moving average, a
//! trained predictor), never for the world. The simulator calls it on simulated time, the live backend on
//! the wall clock; neither calls it concurrently.

use crate::action::{Action, Route};
use crate::billing::FunctionBilling;
use crate::time::Nanos;
use crate::view::{RequestInfo, SpotNotice, View};

/// Changes the fleet on a fixed control interval.
pub trait Scaler {
    /// How often [`Scaler::tick`] runs.
    fn control_interval(&self) -> Nanos;

    /// Runs once at time zero, before any request; by default the same as a tick.
    fn start(&mut self, view: &View, out: &mut Vec<Action>) {
        self.tick(view, out);
    }

    /// Runs every control interval; pushes the actions to take now onto `out`.
    fn tick(&mut self, view: &View, out: &mut Vec<Action>);

    /// Runs when a spot instance receives its interruption notice (the notice is also in the view).
    fn on_spot_notice(&mut self, _notice: &SpotNotice, _view: &View, _out: &mut Vec<Action>) {}

    /// How the function instances this policy runs are billed: as AWS Lambda bills (the default), or as
    /// pods on VMs for a policy that models a Kubernetes autoscaler.
    fn function_billing(&self) -> FunctionBilling {
        FunctionBilling::Lambda
    }
}

/// Chooses where each request goes.
pub trait Router {
    /// The route for `request`, given the cluster now.
    fn route(&mut self, request: &RequestInfo, view: &View) -> Route;
}

/// A complete policy: a scaler and a router under one name.
pub trait Policy: Scaler + Router + Send {
    /// The policy's name, as on the command line.
    fn name(&self) -> &str;
}
