//! `function-only`: every request on functions, one request per instance, as plain AWS Lambda runs it.
//!
//! Models: the platform's own scaling (a new instance, with its cold start, whenever no warm instance is
//! free), keep-alive of idle instances, the regional concurrency limit (throttling). The policy only sets
//! memory size and keep-alive once at the start. Leaves out: provisioned concurrency (see `prewarm`),
//! batching, and any VM.

use serde::Deserialize;

use crate::action::{Action, Route};
use crate::catalog::Catalog;
use crate::error::PolicyError;
use crate::policy::{Policy, Router, Scaler};
use crate::time::Nanos;
use crate::view::{RequestInfo, View};

/// Configuration of [`FunctionOnly`]; unset fields take the platform's defaults.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FunctionOnlyConfig {
    /// Memory per instance, MB.
    pub memory_mb: Option<u32>,
    /// Keep-alive of idle instances, seconds.
    pub keep_alive_s: Option<f64>,
    /// Instances kept warm from the start (provisioned concurrency); default 0.
    #[serde(default)]
    pub prewarm: u32,
}

/// Everything on functions; see the module docs.
#[derive(Clone, Debug)]
pub struct FunctionOnly {
    memory_mb: u32,
    keep_alive: Nanos,
    prewarm: u32,
}

impl FunctionOnly {
    /// Resolves the configuration against the catalog.
    pub fn new(config: &FunctionOnlyConfig, catalog: &Catalog) -> Result<FunctionOnly, PolicyError> {
        let f = &catalog.functions;
        let memory_mb = config.memory_mb.unwrap_or(f.default_memory_mb);
        f.check_settings(memory_mb, 1)
            .map_err(|e| PolicyError::InvalidConfig { policy: "function-only".into(), reason: e.to_string() })?;
        let keep_alive = match config.keep_alive_s {
            Some(s) if !(s.is_finite() && s >= 0.0) => {
                return Err(PolicyError::InvalidConfig {
                    policy: "function-only".into(),
                    reason: format!("keep_alive_s must be a non-negative number, got {s}"),
                });
            }
            Some(s) => Nanos::from_secs_f64(s),
            None => f.default_keep_alive,
        };
        Ok(FunctionOnly { memory_mb, keep_alive, prewarm: config.prewarm })
    }
}

impl Scaler for FunctionOnly {
    fn control_interval(&self) -> Nanos {
        Nanos::from_secs(60)
    }

    fn start(&mut self, _view: &View, out: &mut Vec<Action>) {
        out.push(Action::ConfigureFunctions {
            memory_mb: Some(self.memory_mb),
            concurrency: Some(1),
            keep_alive: Some(self.keep_alive),
            prewarm: Some(self.prewarm),
        });
    }

    fn tick(&mut self, _view: &View, _out: &mut Vec<Action>) {}
}

impl Router for FunctionOnly {
    fn route(&mut self, _request: &RequestInfo, _view: &View) -> Route {
        Route::Functions
    }
}

impl Policy for FunctionOnly {
    fn name(&self) -> &str {
        "function-only"
    }
}
