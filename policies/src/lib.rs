//! The seam between hyscale's simulator and its live backend.
//!
//! Everything both halves must agree on lives here, once: integer [`time`](crate::time), the read-only
//! [`View`] a policy sees, the [`Action`]s and [`Route`]s it returns, the batch-formation rule
//! ([`BatchRule`]), request accounting and the SLO ([`Ledger`], [`Slo`]), billing ([`billing`]), the
//! catalog and latency profiles, the report format ([`report`]), and the policies themselves.
//!
//! This crate does no I/O and reads no clock: a policy sees a snapshot and returns decisions.
//!
//! ```
//! use hyscale_policies::{BatchDecision, BatchRule, Nanos};
//!
//! // Batch up to 4, waiting at most 50 ms for the oldest request.
//! let rule = BatchRule::new(4, Nanos::from_millis(50));
//! // Three requests queued, the oldest since t = 0: at t = 10 ms, wait until t = 50 ms.
//! assert_eq!(rule.decide(3, Nanos::ZERO, Nanos::from_millis(10)), BatchDecision::WaitUntil(Nanos::from_millis(50)));
//! assert_eq!(rule.decide(3, Nanos::ZERO, Nanos::from_millis(50)), BatchDecision::Start(3));
//! ```

pub mod action;
pub mod batch_fn;
pub mod batching;
pub mod billing;
pub mod catalog;
pub mod clock;
pub mod error;
pub mod fsd;
pub mod function_only;
pub mod hybrid;
pub mod idmap;
pub mod keepalive;
pub mod kpa;
pub mod ledger;
pub mod mark;
pub mod oracle;
pub mod policy;
pub mod predict;
pub mod profile;
pub mod report;
pub mod rules;
pub mod spec;
pub mod static_fleet;
pub mod static_peak;
pub mod target_tracking;
pub mod time;
pub mod view;

pub use action::{Action, Pool, Route};
pub use batching::{BatchDecision, BatchRule};
pub use billing::CostBreakdown;
pub use catalog::{Catalog, FunctionPlatform, Market, VmType, VmTypeId};
pub use clock::Clock;
pub use error::PolicyError;
pub use idmap::IdMap;
pub use ledger::{DropReason, Ledger, MissCause, RejectReason, Slo};
pub use policy::{Policy, Router, Scaler};
pub use profile::LatencyTable;
pub use rules::{Refusal, SloConfig};
pub use spec::{POLICY_NAMES, PolicyConfigs};
pub use time::{Nanos, TimeScale};
pub use view::{
    ArrivalWindow, FunctionCounts, FunctionSettings, FunctionView, InstanceId, MarketCounts, PoolView, RecentStats,
    RequestInfo, SpotNotice, View, VmInstanceView, VmState,
};
