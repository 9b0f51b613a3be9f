//! Prometheus metrics of the server, exposed at `/metrics` in the OpenMetrics text format
//! (prometheus-client, the Prometheus project's Rust client).

use axum::http::StatusCode;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// The `model` label of requests for a model the server does not serve: one series for all of them, so
/// clients cannot grow the label set.
pub const UNKNOWN_MODEL: &str = "(unknown)";

/// How a request ended, as a closed set of label values.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum RequestOutcome {
    /// Answered with outputs.
    ok,
    /// 400: malformed, wrong shape or datatype, over a size limit.
    bad_request,
    /// 404: unknown model or version.
    not_found,
    /// 408: the body did not arrive in time.
    body_timeout,
    /// 413: the body is over the size limit.
    too_large,
    /// 429: queue full or throttled.
    queue_full,
    /// 503: not serving (stopped batcher, cluster refusal).
    unavailable,
    /// 504: no result within the request timeout.
    timed_out,
    /// Anything else (500, 502).
    error,
}

impl RequestOutcome {
    /// The outcome of an answer with this status.
    pub fn of_status(status: StatusCode) -> RequestOutcome {
        match status {
            s if s.is_success() => RequestOutcome::ok,
            StatusCode::BAD_REQUEST => RequestOutcome::bad_request,
            StatusCode::NOT_FOUND => RequestOutcome::not_found,
            StatusCode::REQUEST_TIMEOUT => RequestOutcome::body_timeout,
            StatusCode::PAYLOAD_TOO_LARGE => RequestOutcome::too_large,
            StatusCode::TOO_MANY_REQUESTS => RequestOutcome::queue_full,
            StatusCode::SERVICE_UNAVAILABLE => RequestOutcome::unavailable,
            StatusCode::GATEWAY_TIMEOUT => RequestOutcome::timed_out,
            _ => RequestOutcome::error,
        }
    }
}

/// Labels of per-model request counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Outcome {
    /// The model (or [`UNKNOWN_MODEL`]).
    pub model: String,
    /// How it ended.
    pub outcome: RequestOutcome,
}

/// Labels of per-model series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModelLabel {
    /// The model.
    pub model: String,
}

/// Labels of instance counts.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct InstanceLabel {
    /// `vm` or `function`.
    pub kind: String,
    /// `provisioning`, `ready`, `draining`; `cold_starting`, `idle`, `busy`.
    pub state: String,
}

/// Labels of the engine info series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EngineLabel {
    /// `tract` or `onnxruntime`.
    pub engine: String,
    /// Its version.
    pub version: String,
    /// `cpu` or `cuda`.
    pub device: String,
}

/// Every metric the server keeps.
pub struct Metrics {
    /// The registry `/metrics` encodes.
    pub registry: Registry,
    /// Requests by model and outcome.
    pub requests: Family<Outcome, Counter>,
    /// Requests waiting for a batch, by model.
    pub queue_depth: Family<ModelLabel, Gauge>,
    /// Batch sizes run, by model.
    pub batch_size: Family<ModelLabel, Histogram>,
    /// Request latency in seconds (arrival at the server to response), by model.
    pub latency: Family<ModelLabel, Histogram>,
    /// Worker instances by kind and state.
    pub instances: Family<InstanceLabel, Gauge>,
    /// Function cold starts.
    pub cold_starts: Counter,
    /// Always 1, labelled with the engine in use.
    pub engine: Family<EngineLabel, Gauge>,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

impl Metrics {
    /// A registry with every metric registered under the `hyscale_` prefix.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("hyscale");
        let requests = Family::<Outcome, Counter>::default();
        registry.register("requests", "Inference requests by model and outcome", requests.clone());
        let queue_depth = Family::<ModelLabel, Gauge>::default();
        registry.register("queue_depth", "Requests waiting for a batch", queue_depth.clone());
        let batch_size = Family::<ModelLabel, Histogram>::new_with_constructor(|| {
            Histogram::new([1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0])
        });
        registry.register("batch_size", "Requests per batch run", batch_size.clone());
        let latency = Family::<ModelLabel, Histogram>::new_with_constructor(|| {
            Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(0.0005, 2.0, 16))
        });
        registry.register("request_latency_seconds", "Request latency at the server", latency.clone());
        let instances = Family::<InstanceLabel, Gauge>::default();
        registry.register("instances", "Worker instances by kind and state", instances.clone());
        let cold_starts = Counter::default();
        registry.register("function_cold_starts", "Function sandbox cold starts", cold_starts.clone());
        let engine = Family::<EngineLabel, Gauge>::default();
        registry.register("engine_info", "The inference engine in use", engine.clone());
        Metrics { registry, requests, queue_depth, batch_size, latency, instances, cold_starts, engine }
    }

    /// Counts one request's outcome.
    pub fn count(&self, model: &str, outcome: RequestOutcome) {
        self.requests.get_or_create(&Outcome { model: model.into(), outcome }).inc();
    }

    /// The OpenMetrics text.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_counters_with_labels() {
        let m = Metrics::new();
        m.count("mlp", RequestOutcome::ok);
        m.count("mlp", RequestOutcome::ok);
        m.engine
            .get_or_create(&EngineLabel { engine: "tract".into(), version: "0.21".into(), device: "cpu".into() })
            .set(1);
        let text = m.encode();
        assert!(text.contains("hyscale_requests_total{model=\"mlp\",outcome=\"ok\"} 2"), "{text}");
        assert!(text.contains("hyscale_engine_info{engine=\"tract\",version=\"0.21\",device=\"cpu\"} 1"), "{text}");
    }
}
