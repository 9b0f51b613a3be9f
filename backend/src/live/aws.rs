//! Real-cloud adapters (the `aws` feature): [`Ec2Vms`] runs the VM workers as EC2 instances, on demand or
//! spot, and [`AwsLambdaFunctions`] invokes a deployed `hyscale-fn` Lambda function, both through the
//! official AWS SDK for Rust. A `[cluster.aws]` table ([`AwsConfig`]) selects them instead of the local
//! defaults; `live/README.md` says how to set the cloud side up.
//!
//! - **EC2.** `Provision` is one `RunInstances` per worker from the configured launch template, with the
//!   catalog's VM type name as the instance type and, on the spot market, `InstanceMarketOptions` of type
//!   spot. The launch template's user data is expected to start `hyscale serve` on [`AwsConfig::port`]
//!   serving the cluster's model. A background task polls `DescribeInstances` every
//!   [`AwsConfig::poll_s`]: an instance is ready once it is running and its
//!   `/v2/models/NAME/ready` answers 200 on its private address; an instance found shutting down or
//!   terminated (a spot reclaim, a console action) is gone and the requests it holds are routed again.
//!   A request is forwarded as an Open Inference Protocol infer request to
//!   `http://PRIVATE_IP:PORT/v2/models/NAME/infer`: 429 is the worker's full queue, 503 and connection
//!   failures make the request route again, other 4xx/5xx drop it with the worker's message. `Release`
//!   terminates a provisioning instance at once and a ready one after it has answered what it holds.
//!   Left out: spot interruption notices (the instance metadata's `spot/instance-action` is not read,
//!   and `interrupt` is refused), `SetBatching` (the instance's batching is its own `hyscale serve`
//!   configuration: the rule is shown in the view and the action counted as refused). Auto Scaling groups
//!   are the other [`Fleet`], `super::aws_asg`: only how instances come and go differs.
//! - **Lambda.** `Invoke` of the function (and qualifier, when set) with the JSON event the local sandboxes
//!   get ([`crate::lambda::payload`]); `TooManyRequestsException` is a throttle. `ConfigureFunctions`:
//!   memory → `UpdateFunctionConfiguration` (memory and timeout); pre-warm →
//!   `PutProvisionedConcurrencyConfig` on the qualifier (an alias or version: required by AWS; 0 deletes
//!   it); concurrency above 1 is refused (one request per invocation); keep-alive is AWS's own and only
//!   recorded. The view counts the adapter's own invocations in flight as busy and the provisioned
//!   concurrency as idle; cold starts are not observed (0).
//!
//! Nothing here has run against AWS itself from this repository: the build has no credentials and no network.
//! The pure parts (URLs, the forwarded body, the answer's decoding) have unit tests, and the adapters' calls
//! (RunInstances with and without spot options, TerminateInstances, SetDesiredCapacity,
//! TerminateInstanceInAutoScalingGroup, UpdateFunctionConfiguration, PutProvisionedConcurrencyConfig, Invoke)
//! run through the real SDK against a local AWS API emulator (moto) in `tests/aws_emulator.rs`. The SDK takes
//! its endpoint from the environment (`AWS_ENDPOINT_URL`), so a cluster can be pointed at an emulator or a VPC
//! endpoint the same way.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use aws_sdk_ec2::error::DisplayErrorContext as Ec2Err;
use aws_sdk_ec2::types::{
    InstanceMarketOptionsRequest, InstanceStateName, InstanceType, LaunchTemplateSpecification, MarketType,
};
use aws_sdk_lambda::error::DisplayErrorContext as LambdaErr;
use aws_sdk_lambda::primitives::Blob;
use hyscale_policies::rules::{DispatchCandidate, ReleaseStep, dispatch_to, release_step};
use hyscale_policies::{
    BatchRule, Catalog, Clock, FunctionPlatform, FunctionSettings, FunctionView, InstanceId, Market, Nanos, Refusal,
    RejectReason, SpotNotice, View, VmInstanceView, VmState, VmTypeId,
};
use serde::Deserialize;
use tokio::sync::watch;

use super::ClusterConfig;
use super::functions::{decode_outputs, encode_event};
use super::provider::{
    BoxFuture, FnFailure, FunctionProvider, VmCounters, VmOutcome, VmProvider, push_instance, release_order,
    reset_pools,
};
use crate::WallClock;
use crate::engine::{ModelMetadata, Tensor};
use crate::lambda::payload::{self, InferResult};

/// The SDK crates the adapters are built on, for callers that build their own clients (an endpoint, a
/// credentials provider) and hand them to [`Ec2Setup`], [`AwsLambdaFunctions::new`] or
/// [`super::aws_asg::AsgVms::new`].
pub mod sdk {
    pub use aws_config;
    pub use aws_sdk_autoscaling;
    pub use aws_sdk_ec2;
    pub use aws_sdk_lambda;
    /// The HTTP client [`Ec2Setup`](super::Ec2Setup) forwards requests to the workers with.
    pub use reqwest;
}

/// `[cluster.aws]`: where the cluster's workers run on AWS.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AwsConfig {
    /// The region (default: the SDK's environment and profile chain, `AWS_REGION`).
    pub region: Option<String>,
    /// The deployed `hyscale-fn` function's name or ARN.
    pub function_name: String,
    /// The alias or version invoked and pre-warmed (provisioned concurrency needs one); default `$LATEST`,
    /// which cannot be pre-warmed.
    pub function_qualifier: Option<String>,
    /// How VM workers are started: `"ec2"` (default, one `RunInstances` each) or `"asg"` (the Auto
    /// Scaling groups of [`AwsConfig::asg`]; see `super::aws_asg`).
    #[serde(default)]
    pub vm_provider: VmProviderKind,
    /// The launch template VM workers start from: an id (`lt-...`) or a name (needed with `"ec2"`).
    #[serde(default)]
    pub launch_template: String,
    /// The Auto Scaling group of each catalog VM type, by the type's name (with `vm_provider = "asg"`).
    #[serde(default)]
    pub asg: BTreeMap<String, String>,
    /// The subnet instances launch in (default: the launch template's).
    pub subnet: Option<String>,
    /// The port `hyscale serve` listens on inside each instance.
    #[serde(default = "port")]
    pub port: u16,
    /// How often instance states are polled, seconds.
    #[serde(default = "poll")]
    pub poll_s: f64,
}

/// `[cluster.aws] vm_provider`.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum VmProviderKind {
    /// [`Ec2Vms`]: one `RunInstances` per worker.
    #[default]
    Ec2,
    /// `super::aws_asg::AsgVms`: one Auto Scaling group per VM type.
    Asg,
}

fn port() -> u16 {
    8000
}
fn poll() -> f64 {
    2.0
}

/// The SDK configuration (the default credential chain, `aws.region` when set), the shared part of the
/// VM adapter's setup and the Lambda adapter, from `aws` (the `[cluster.aws]` table of `config`).
pub async fn setup(
    config: &ClusterConfig,
    aws: &AwsConfig,
    catalog: &Catalog,
    metadata: &ModelMetadata,
) -> Result<(aws_config::SdkConfig, Ec2Setup, Arc<dyn FunctionProvider>), String> {
    if !(aws.poll_s.is_finite() && aws.poll_s > 0.0) {
        return Err(format!("poll_s must be positive, got {}", aws.poll_s));
    }
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
    if let Some(region) = &aws.region {
        loader = loader.region(aws_config::Region::new(region.clone()));
    }
    let sdk = loader.load().await;
    let http = reqwest::Client::builder().build().map_err(|e| format!("HTTP client: {e}"))?;
    let vms = Ec2Setup {
        ec2: aws_sdk_ec2::Client::new(&sdk),
        http,
        config: aws.clone(),
        model: config.model.clone(),
        metadata: metadata.clone(),
    };
    let functions = AwsLambdaFunctions::new(
        aws_sdk_lambda::Client::new(&sdk),
        aws.function_name.clone(),
        aws.function_qualifier.clone(),
        catalog.functions.clone(),
        config.function_timeout_s,
    );
    Ok((sdk, vms, Arc::new(functions)))
}

/// The URL of a model's infer endpoint on a worker.
pub fn infer_url(private_ip: &str, port: u16, model: &str) -> String {
    format!("http://{private_ip}:{port}/v2/models/{model}/infer")
}

/// The URL of a model's readiness endpoint on a worker.
pub fn ready_url(private_ip: &str, port: u16, model: &str) -> String {
    format!("http://{private_ip}:{port}/v2/models/{model}/ready")
}

/// The part of an Open Inference Protocol infer response the adapter reads.
#[derive(Deserialize)]
struct InferResponse {
    outputs: Vec<payload::Tensor>,
}

/// What a worker's HTTP answer means for the request (status and body of the infer response).
pub fn classify_answer(metadata: &ModelMetadata, status: u16, body: &[u8]) -> VmOutcome {
    let text = || String::from_utf8_lossy(body).chars().take(300).collect::<String>();
    match status {
        200 => match serde_json::from_slice::<InferResponse>(body) {
            Ok(r) => match decode_outputs(metadata, &r.outputs) {
                Ok(out) => VmOutcome::Done(out),
                Err(why) => VmOutcome::Failed(why),
            },
            Err(e) => VmOutcome::Failed(format!("infer answer: {e}")),
        },
        429 => VmOutcome::QueueFull,
        503 => VmOutcome::Lost(format!("worker unavailable: {}", text())),
        _ => VmOutcome::Failed(format!("worker answered {status}: {}", text())),
    }
}

// ---------------------------------------------------------------------------------------------------------
// EC2

/// Where a worker is: what a request waiting on it needs to know.
#[derive(Clone, PartialEq)]
pub(super) enum Phase {
    Provisioning,
    /// Serving at this private address.
    Serving(String),
    Gone,
}

pub(super) struct Ec2Worker {
    pub(super) vm_type: VmTypeId,
    market: Market,
    launched_at: Nanos,
    pub(super) state: VmState,
    /// The EC2 instance id, once `RunInstances` has answered (or, in an Auto Scaling group, once the
    /// group's instance is assigned to the worker).
    pub(super) ec2_id: Option<String>,
    phase: watch::Sender<Phase>,
    outstanding: Arc<AtomicU32>,
}

#[derive(Default)]
pub(super) struct Ec2State {
    pub(super) workers: BTreeMap<InstanceId, Ec2Worker>,
    next_id: u64,
    batching: Vec<BatchRule>,
    launched: u64,
    spot_interruptions: u64,
    pub(super) load_failures: u64,
}

/// How a [`CloudVms`] starts and stops its workers' instances: [`Ec2Fleet`] (one `RunInstances` each) or
/// `super::aws_asg::AsgFleet` (Auto Scaling groups). Everything else (the workers' states, readiness,
/// dispatch, draining, the view) is shared.
pub trait Fleet: Send + Sync + Sized + 'static {
    /// Whether workers of `vm_type` (its instance type `type_name`) can be provisioned on `market`.
    fn check(&self, vm_type: VmTypeId, type_name: &str, market: Market) -> Result<(), String>;

    /// Starts instances for the provisioning workers `ids` of `vm_type` on `market`, just added; a worker
    /// whose instance cannot be started is removed (a load failure).
    fn launch(inner: &Arc<Inner<Self>>, ids: Vec<InstanceId>, vm_type: VmTypeId, market: Market);

    /// Stops a removed worker's instance: `Some(instance id)` once known, `None` while none is assigned.
    fn stop(inner: &Inner<Self>, vm_type: VmTypeId, instance: Option<String>);

    /// Work done before each poll of the instances' EC2 states (assigning new instances to workers).
    fn refresh(inner: &Inner<Self>) -> BoxFuture<'_, ()>;
}

/// VM workers as cloud instances running `hyscale serve` (see the module documentation), started by the
/// fleet `F`. Cheap to clone.
pub struct CloudVms<F: Fleet> {
    inner: Arc<Inner<F>>,
}

impl<F: Fleet> Clone for CloudVms<F> {
    fn clone(&self) -> Self {
        CloudVms { inner: Arc::clone(&self.inner) }
    }
}

/// VM workers as EC2 instances launched one by one.
pub type Ec2Vms = CloudVms<Ec2Fleet>;

/// The state shared by a [`CloudVms`] and its background tasks.
pub struct Inner<F> {
    pub(super) fleet: F,
    pub(super) ec2: aws_sdk_ec2::Client,
    http: reqwest::Client,
    pub(super) config: AwsConfig,
    model: String,
    metadata: ModelMetadata,
    /// Instance type name per VM type (the catalog's names).
    pub(super) type_names: Vec<String>,
    spot_sold: Vec<bool>,
    clock: WallClock,
    state: Mutex<Ec2State>,
}

/// What [`Ec2Vms`] is built from.
pub struct Ec2Setup {
    /// The EC2 client.
    pub ec2: aws_sdk_ec2::Client,
    /// The client that forwards requests to the workers.
    pub http: reqwest::Client,
    /// `[cluster.aws]`.
    pub config: AwsConfig,
    /// The served model's name (the `[[models]]` entry each instance's `hyscale serve` serves).
    pub model: String,
    /// The model's metadata (the inputs' names of forwarded requests).
    pub metadata: ModelMetadata,
}

impl Ec2Vms {
    /// The adapter for the catalog's VM types, with its state poller running on the current tokio runtime
    /// until the adapter is dropped.
    pub fn new(setup: Ec2Setup, catalog: &Catalog, clock: WallClock) -> Result<Ec2Vms, String> {
        if setup.config.launch_template.is_empty() {
            return Err("launch_template is needed with vm_provider = \"ec2\"".into());
        }
        Ok(CloudVms::with_fleet(Ec2Fleet, setup, catalog, clock))
    }
}

impl<F: Fleet> CloudVms<F> {
    /// The adapter for the catalog's VM types on `fleet`, with its state poller running on the current
    /// tokio runtime until the adapter is dropped.
    pub fn with_fleet(fleet: F, setup: Ec2Setup, catalog: &Catalog, clock: WallClock) -> CloudVms<F> {
        let Ec2Setup { ec2, http, config, model, metadata } = setup;
        let state = Ec2State { batching: vec![BatchRule::NONE; catalog.vm_types.len()], ..Ec2State::default() };
        let inner = Arc::new(Inner {
            fleet,
            ec2,
            http,
            config,
            model,
            metadata,
            type_names: catalog.vm_types.iter().map(|t| t.name.clone()).collect(),
            spot_sold: catalog.vm_types.iter().map(|t| t.price_spot_per_h.is_some()).collect(),
            clock,
            state: Mutex::new(state),
        });
        tokio::spawn(poll_loop(Arc::downgrade(&inner)));
        CloudVms { inner }
    }
}

impl<F: Fleet> Inner<F> {
    pub(super) fn lock(&self) -> MutexGuard<'_, Ec2State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn check_type(&self, vm_type: VmTypeId) -> Result<(), String> {
        if (vm_type.0 as usize) < self.type_names.len() { Ok(()) } else { Err(Refusal::UnknownVmType.to_string()) }
    }

    /// Forgets a worker (it is gone: whoever waits on it routes again) and stops its instance.
    pub(super) fn remove(&self, st: &mut Ec2State, id: InstanceId) {
        if let Some(w) = self.forget(st, id) {
            F::stop(self, w.vm_type, w.ec2_id);
        }
    }

    /// Forgets a worker whose instance is already going away (whoever waits on it routes again).
    pub(super) fn forget(&self, st: &mut Ec2State, id: InstanceId) -> Option<Ec2Worker> {
        let w = st.workers.remove(&id)?;
        w.phase.send_replace(Phase::Gone);
        Some(w)
    }
}

/// The [`Fleet`] that launches each worker with its own `RunInstances` from the launch template.
pub struct Ec2Fleet;

impl Ec2Fleet {
    /// `TerminateInstances` in the background (failures logged).
    fn terminate(inner: &Inner<Self>, ids: Vec<String>) {
        if ids.is_empty() {
            return;
        }
        let ec2 = inner.ec2.clone();
        tokio::spawn(async move {
            if let Err(e) = ec2.terminate_instances().set_instance_ids(Some(ids.clone())).send().await {
                tracing::error!(?ids, error = %Ec2Err(&e), "terminating EC2 instances failed; terminate them by hand");
            }
        });
    }

    async fn launch_one(inner: Arc<Inner<Self>>, id: InstanceId, vm_type: VmTypeId, market: Market) {
        let template = if inner.config.launch_template.starts_with("lt-") {
            LaunchTemplateSpecification::builder().launch_template_id(&inner.config.launch_template)
        } else {
            LaunchTemplateSpecification::builder().launch_template_name(&inner.config.launch_template)
        };
        let mut run = inner
            .ec2
            .run_instances()
            .launch_template(template.build())
            .instance_type(InstanceType::from(inner.type_names[vm_type.0 as usize].as_str()))
            .min_count(1)
            .max_count(1)
            .set_subnet_id(inner.config.subnet.clone());
        if market == Market::Spot {
            run = run
                .instance_market_options(InstanceMarketOptionsRequest::builder().market_type(MarketType::Spot).build());
        }
        let answer = run.send().await;
        let mut st = inner.lock();
        match answer {
            Ok(out) => {
                let ec2_id = out.instances().first().and_then(|i| i.instance_id()).map(str::to_owned);
                match (st.workers.get_mut(&id), ec2_id) {
                    (Some(w), Some(ec2_id)) => {
                        tracing::info!(instance = id.0, %ec2_id, "EC2 instance launched");
                        w.ec2_id = Some(ec2_id);
                    }
                    // Released while launching: the instance is not wanted.
                    (None, Some(ec2_id)) => Ec2Fleet::terminate(&inner, vec![ec2_id]),
                    (_, None) => {
                        tracing::error!(instance = id.0, "RunInstances answered no instance");
                        st.load_failures += 1;
                        inner.remove(&mut st, id);
                    }
                }
            }
            Err(e) => {
                tracing::error!(instance = id.0, error = %Ec2Err(&e), "RunInstances failed");
                st.load_failures += 1;
                inner.remove(&mut st, id);
            }
        }
    }
}

impl Fleet for Ec2Fleet {
    fn check(&self, _vm_type: VmTypeId, _type_name: &str, _market: Market) -> Result<(), String> {
        Ok(())
    }

    fn launch(inner: &Arc<Inner<Self>>, ids: Vec<InstanceId>, vm_type: VmTypeId, market: Market) {
        for id in ids {
            tokio::spawn(Ec2Fleet::launch_one(Arc::clone(inner), id, vm_type, market));
        }
    }

    fn stop(inner: &Inner<Self>, _vm_type: VmTypeId, instance: Option<String>) {
        // Without an id the launch is still answering: its answer terminates the unwanted instance.
        Ec2Fleet::terminate(inner, instance.into_iter().collect());
    }

    fn refresh(_inner: &Inner<Self>) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
}

impl<F: Fleet> Inner<F> {
    /// One poll: the fleet's own refresh, instance states from `DescribeInstances`, readiness from the
    /// workers' own endpoint.
    async fn poll(&self) {
        F::refresh(self).await;
        let known: Vec<(InstanceId, String)> =
            self.lock().workers.iter().filter_map(|(id, w)| w.ec2_id.clone().map(|e| (*id, e))).collect();
        if known.is_empty() {
            return;
        }
        let ids: Vec<String> = known.iter().map(|(_, e)| e.clone()).collect();
        let answer = match self.ec2.describe_instances().set_instance_ids(Some(ids)).send().await {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %Ec2Err(&e), "DescribeInstances failed");
                return;
            }
        };
        let mut found: BTreeMap<String, (InstanceStateName, Option<String>)> = BTreeMap::new();
        for i in answer.reservations().iter().flat_map(|r| r.instances()) {
            if let (Some(id), Some(name)) = (i.instance_id(), i.state().and_then(|s| s.name())) {
                found.insert(id.to_owned(), (name.clone(), i.private_ip_address().map(str::to_owned)));
            }
        }
        for (id, ec2_id) in known {
            let Some((state, ip)) = found.get(&ec2_id) else { continue };
            match state {
                InstanceStateName::ShuttingDown | InstanceStateName::Terminated | InstanceStateName::Stopped => {
                    let mut st = self.lock();
                    if let Some(w) = st.workers.get(&id) {
                        tracing::warn!(instance = id.0, %ec2_id, ?state, "EC2 instance went away");
                        if w.market == Market::Spot {
                            st.spot_interruptions += 1;
                        }
                        self.remove(&mut st, id);
                    }
                }
                InstanceStateName::Running => {
                    let provisioning = self.lock().workers.get(&id).is_some_and(|w| w.state == VmState::Provisioning);
                    if let (true, Some(ip)) = (provisioning, ip) {
                        let ready = self.probe_ready(ip).await;
                        let mut st = self.lock();
                        if let (true, Some(w)) = (ready, st.workers.get_mut(&id))
                            && w.state == VmState::Provisioning
                        {
                            w.state = VmState::Ready;
                            w.phase.send_replace(Phase::Serving(ip.clone()));
                            tracing::info!(instance = id.0, %ec2_id, %ip, "EC2 worker ready");
                        }
                    }
                }
                _ => {}
            }
        }
    }

    /// Whether the model answers ready on the worker at `ip`.
    async fn probe_ready(&self, ip: &str) -> bool {
        self.http
            .get(ready_url(ip, self.config.port, &self.model))
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
    }

    async fn forward(&self, ip: &str, inputs: &[Tensor]) -> VmOutcome {
        let body = match encode_event(&self.metadata, inputs) {
            Ok(b) => b,
            Err(why) => return VmOutcome::Failed(why),
        };
        let answer = self
            .http
            .post(infer_url(ip, self.config.port, &self.model))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await;
        match answer {
            Ok(r) => {
                let status = r.status().as_u16();
                match r.bytes().await {
                    Ok(bytes) => classify_answer(&self.metadata, status, &bytes),
                    Err(e) => VmOutcome::Lost(format!("reading the worker's answer: {e}")),
                }
            }
            Err(e) => VmOutcome::Lost(format!("worker unreachable: {e}")),
        }
    }
}

/// Polls instance states until the adapter is dropped.
async fn poll_loop<F: Fleet>(vms: Weak<Inner<F>>) {
    loop {
        let Some(v) = vms.upgrade() else { return };
        let every = Duration::from_secs_f64(v.config.poll_s);
        v.poll().await;
        drop(v);
        tokio::time::sleep(every).await;
    }
}

/// Holds a request's place in a worker's outstanding count until dropped.
struct Claim(Arc<AtomicU32>);

impl Drop for Claim {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl<F: Fleet> VmProvider for CloudVms<F> {
    fn provision(&self, vm_type: VmTypeId, market: Market, count: u32) -> Result<(), String> {
        let v = &self.inner;
        v.check_type(vm_type)?;
        if market == Market::Spot && !v.spot_sold[vm_type.0 as usize] {
            return Err(Refusal::NotSoldOnMarket.to_string());
        }
        v.fleet.check(vm_type, &v.type_names[vm_type.0 as usize], market)?;
        let mut ids = Vec::with_capacity(count as usize);
        for _ in 0..count {
            ids.push({
                let mut st = v.lock();
                let id = InstanceId(st.next_id);
                st.next_id += 1;
                st.launched += 1;
                let (phase, _) = watch::channel(Phase::Provisioning);
                st.workers.insert(
                    id,
                    Ec2Worker {
                        vm_type,
                        market,
                        launched_at: v.clock.now(),
                        state: VmState::Provisioning,
                        ec2_id: None,
                        phase,
                        outstanding: Arc::new(AtomicU32::new(0)),
                    },
                );
                id
            });
        }
        F::launch(v, ids, vm_type, market);
        Ok(())
    }

    fn release(&self, id: InstanceId) -> Result<(), String> {
        let v = &self.inner;
        let mut st = v.lock();
        // The release rule both halves follow (`rules::release_step`).
        let step = release_step(st.workers.get(&id).map(|w| w.state)).map_err(|r| r.to_string())?;
        let Some(w) = st.workers.get_mut(&id) else { return Err(Refusal::NoSuchInstance.to_string()) };
        match step {
            ReleaseStep::GoneNow => {
                v.remove(&mut st, id);
                Ok(())
            }
            ReleaseStep::Drain => {
                w.state = VmState::Draining;
                let outstanding = Arc::clone(&w.outstanding);
                drop(st);
                let vms = Arc::downgrade(v);
                tokio::spawn(async move {
                    while outstanding.load(Ordering::Relaxed) > 0 {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    if let Some(v) = vms.upgrade() {
                        v.remove(&mut v.lock(), id);
                    }
                });
                Ok(())
            }
        }
    }

    fn release_vms(&self, vm_type: VmTypeId, market: Market, count: u32) -> Result<(), String> {
        self.inner.check_type(vm_type)?;
        let victims: Vec<InstanceId> = {
            let st = self.inner.lock();
            let mine = st.workers.iter().filter(|(_, w)| w.vm_type == vm_type && w.market == market);
            release_order(mine.map(|(id, w)| (*id, w.state, w.outstanding.load(Ordering::Relaxed))), count)
        };
        let short = (victims.len() as u32) < count;
        for id in victims {
            self.release(id)?;
        }
        if short {
            return Err(Refusal::FewerInstancesThanAsked.to_string());
        }
        Ok(())
    }

    fn set_batching(&self, vm_type: VmTypeId, rule: BatchRule) -> Result<(), String> {
        self.inner.check_type(vm_type)?;
        self.inner.lock().batching[vm_type.0 as usize] =
            BatchRule::new(rule.max_batch, rule.max_wait).with_idle_start(rule.idle_start);
        // A cloud worker batches as its own `hyscale serve` configuration says: recorded only.
        Err(Refusal::NotSupportedLive.to_string())
    }

    fn interrupt(&self, _id: InstanceId, _notice: Nanos) -> Result<SpotNotice, String> {
        Err("spot interruption notices are not supported on AWS (the instance metadata is not read)".into())
    }

    fn fill_view(&self, view: &mut View) {
        let st = self.inner.lock();
        reset_pools(view, &st.batching);
        for (id, w) in &st.workers {
            // A remote worker's queue is not visible: everything outstanding counts as queued.
            push_instance(
                view,
                VmInstanceView {
                    id: *id,
                    vm_type: w.vm_type,
                    market: w.market,
                    state: w.state,
                    launched_at: w.launched_at,
                    queued: w.outstanding.load(Ordering::Relaxed),
                    in_service: 0,
                    interruption_at: None,
                    models: vec![0],
                },
            );
        }
        view.notices.clear();
    }

    fn state_counts(&self) -> (u32, u32, u32) {
        let st = self.inner.lock();
        let n = |s| st.workers.values().filter(|w| w.state == s).count() as u32;
        (n(VmState::Provisioning), n(VmState::Ready), n(VmState::Draining))
    }

    fn counters(&self) -> VmCounters {
        let st = self.inner.lock();
        VmCounters { launched: st.launched, spot_interruptions: st.spot_interruptions, load_failures: st.load_failures }
    }

    fn shutdown(&self) {
        let mut st = self.inner.lock();
        let ids: Vec<InstanceId> = st.workers.keys().copied().collect();
        for id in ids {
            self.inner.remove(&mut st, id);
        }
    }

    fn dispatch(
        &self,
        vm_type: VmTypeId,
        queue_limit: u32,
        inputs: Vec<Tensor>,
    ) -> BoxFuture<'_, Result<(InstanceId, VmOutcome), RejectReason>> {
        Box::pin(async move {
            let (id, mut phase, claim) = {
                let st = self.inner.lock();
                // The dispatch rule both halves follow (`rules::dispatch_to`); notices are not read on AWS.
                let candidates =
                    st.workers.iter().filter(|(_, w)| w.vm_type == vm_type).map(|(id, w)| DispatchCandidate {
                        key: *id,
                        state: w.state,
                        outstanding: w.outstanding.load(Ordering::Relaxed) as usize,
                        noticed: false,
                    });
                let id = dispatch_to(candidates, queue_limit as usize)?;
                let Some(w) = st.workers.get(&id) else { return Err(RejectReason::NoVmCapacity) };
                w.outstanding.fetch_add(1, Ordering::Relaxed);
                (id, w.phase.subscribe(), Claim(Arc::clone(&w.outstanding)))
            };
            let lost = || VmOutcome::Lost(format!("EC2 worker {} went away", id.0));
            let outcome = loop {
                let now = phase.borrow_and_update().clone();
                match now {
                    Phase::Provisioning => {
                        if phase.changed().await.is_err() {
                            break lost();
                        }
                    }
                    Phase::Gone => break lost(),
                    Phase::Serving(ip) => {
                        let mut gone = phase.clone();
                        break tokio::select! {
                            out = self.inner.forward(&ip, &inputs) => out,
                            _ = gone.wait_for(|p| *p == Phase::Gone) => lost(),
                        };
                    }
                }
            };
            drop(claim);
            Ok((id, outcome))
        })
    }
}

// ---------------------------------------------------------------------------------------------------------
// Lambda

/// A deployed `hyscale-fn` Lambda function (see the module documentation).
pub struct AwsLambdaFunctions {
    lambda: aws_sdk_lambda::Client,
    function_name: String,
    qualifier: Option<String>,
    platform: FunctionPlatform,
    timeout_s: f64,
    settings: Mutex<FunctionSettings>,
    in_flight: AtomicU32,
    throttled_total: AtomicU64,
}

impl AwsLambdaFunctions {
    /// The adapter, with the catalog's default settings (the function's own configuration is changed only
    /// by `ConfigureFunctions`).
    pub fn new(
        lambda: aws_sdk_lambda::Client,
        function_name: String,
        qualifier: Option<String>,
        platform: FunctionPlatform,
        timeout_s: f64,
    ) -> AwsLambdaFunctions {
        let settings = FunctionSettings {
            memory_mb: platform.default_memory_mb,
            concurrency: 1,
            keep_alive: platform.default_keep_alive,
            prewarm: 0,
            batching: BatchRule::NONE,
        };
        AwsLambdaFunctions {
            lambda,
            function_name,
            qualifier,
            platform,
            timeout_s,
            settings: Mutex::new(settings),
            in_flight: AtomicU32::new(0),
            throttled_total: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, FunctionSettings> {
        self.settings.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn set_prewarm(&self, prewarm: u32) -> Result<(), String> {
        let Some(qualifier) = &self.qualifier else {
            tracing::warn!("pre-warming needs function_qualifier (an alias or version) in [cluster.aws]");
            return Err(Refusal::NotSupportedLive.to_string());
        };
        let result = if prewarm == 0 {
            self.lambda
                .delete_provisioned_concurrency_config()
                .function_name(&self.function_name)
                .qualifier(qualifier)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| LambdaErr(&e).to_string())
        } else {
            self.lambda
                .put_provisioned_concurrency_config()
                .function_name(&self.function_name)
                .qualifier(qualifier)
                .provisioned_concurrent_executions(i32::try_from(prewarm).unwrap_or(i32::MAX))
                .send()
                .await
                .map(|_| ())
                .map_err(|e| LambdaErr(&e).to_string())
        };
        result.map_err(|e| {
            tracing::warn!(error = %e, "provisioned concurrency");
            Refusal::ProviderFailed.to_string()
        })
    }
}

struct InFlight<'a>(&'a AtomicU32);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl FunctionProvider for AwsLambdaFunctions {
    fn settings(&self) -> FunctionSettings {
        *self.lock()
    }

    fn configure(
        &self,
        memory_mb: Option<u32>,
        concurrency: Option<u32>,
        keep_alive: Option<Nanos>,
        prewarm: Option<u32>,
    ) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            let old = self.settings();
            let memory = memory_mb.unwrap_or(old.memory_mb);
            self.platform.check_settings(memory, 1).map_err(|e| {
                tracing::debug!(error = %e, "configure functions");
                Refusal::InvalidFunctionSettings.to_string()
            })?;
            if memory != old.memory_mb {
                self.lambda
                    .update_function_configuration()
                    .function_name(&self.function_name)
                    .memory_size(i32::try_from(memory).unwrap_or(i32::MAX))
                    .timeout(self.timeout_s.ceil().clamp(1.0, 900.0) as i32)
                    .send()
                    .await
                    .map_err(|e| {
                        tracing::warn!(error = %LambdaErr(&e), "UpdateFunctionConfiguration");
                        Refusal::ProviderFailed.to_string()
                    })?;
                self.lock().memory_mb = memory;
            }
            // Keep-alive is AWS's own: recorded for the view only.
            self.lock().keep_alive = keep_alive.unwrap_or(old.keep_alive);
            if let Some(p) = prewarm
                && p != old.prewarm
            {
                self.set_prewarm(p).await?;
                self.lock().prewarm = p;
            }
            if concurrency.unwrap_or(old.concurrency) != 1 {
                // A deployed function runs one request per invocation here (kept at 1).
                return Err(Refusal::NotSupportedLive.to_string());
            }
            Ok(())
        })
    }

    fn set_batching(&self, rule: BatchRule) {
        self.lock().batching = rule;
    }

    fn top_up_prewarm(&self) {
        // Provisioned concurrency is kept up by AWS.
    }

    fn invoke<'a>(
        &'a self,
        metadata: &'a ModelMetadata,
        inputs: &'a [Tensor],
    ) -> BoxFuture<'a, Result<Vec<Tensor>, FnFailure>> {
        Box::pin(async move {
            let body = encode_event(metadata, inputs).map_err(FnFailure::Failed)?;
            self.in_flight.fetch_add(1, Ordering::Relaxed);
            let _in_flight = InFlight(&self.in_flight);
            let answer = self
                .lambda
                .invoke()
                .function_name(&self.function_name)
                .set_qualifier(self.qualifier.clone())
                .payload(Blob::new(body))
                .send()
                .await;
            let out = match answer {
                Ok(out) => out,
                Err(e) if e.as_service_error().is_some_and(|s| s.is_too_many_requests_exception()) => {
                    self.throttled_total.fetch_add(1, Ordering::Relaxed);
                    return Err(FnFailure::Throttled);
                }
                Err(e) => return Err(FnFailure::Failed(format!("Invoke: {}", LambdaErr(&e)))),
            };
            let bytes = out.payload().map(|b| b.as_ref()).unwrap_or_default();
            if let Some(kind) = out.function_error() {
                let text: String = String::from_utf8_lossy(bytes).chars().take(300).collect();
                return Err(FnFailure::Failed(format!("function error ({kind}): {text}")));
            }
            let result: InferResult =
                serde_json::from_slice(bytes).map_err(|e| FnFailure::Failed(format!("function answer: {e}")))?;
            decode_outputs(metadata, &result.outputs).map_err(FnFailure::Failed)
        })
    }

    fn view(&self) -> FunctionView {
        let settings = self.settings();
        let busy = self.in_flight.load(Ordering::Relaxed);
        let mut v = FunctionView {
            settings,
            cold_starting: 0,
            idle_warm: settings.prewarm.saturating_sub(busy),
            busy,
            in_flight: u64::from(busy),
            throttled_total: self.throttled_total.load(Ordering::Relaxed),
            cold_starts_total: 0,
            per_function: Default::default(),
        };
        v.as_one_function(0);
        v
    }

    fn shutdown(&self) {
        // Nothing local; provisioned concurrency stays configured (and billed) until set to 0.
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{Dim, ElementType, TensorInfo};

    fn metadata() -> ModelMetadata {
        let info = |name: &str, n| TensorInfo {
            name: name.into(),
            element_type: ElementType::F32,
            shape: vec![Dim::Dynamic(Some("batch".into())), Dim::Fixed(n)],
        };
        ModelMetadata { inputs: vec![info("input", 2)], outputs: vec![info("logits", 3)] }
    }

    #[test]
    fn config_defaults_port_and_poll() {
        let c: AwsConfig = serde_json::from_value(serde_json::json!({
            "function_name": "hyscale-fn", "launch_template": "lt-0abc"
        }))
        .unwrap();
        assert_eq!((c.port, c.poll_s, c.region, c.subnet), (8000, 2.0, None, None));
        let unknown = serde_json::json!({"function_name": "f", "launch_template": "t", "prot": 1});
        assert!(serde_json::from_value::<AwsConfig>(unknown).is_err());
    }

    #[test]
    fn urls_name_the_worker_and_model() {
        assert_eq!(infer_url("10.0.1.7", 8000, "mlp"), "http://10.0.1.7:8000/v2/models/mlp/infer");
        assert_eq!(ready_url("10.0.1.7", 9000, "cnn"), "http://10.0.1.7:9000/v2/models/cnn/ready");
    }

    #[test]
    fn forwarded_body_is_the_v2_request_and_the_function_event() {
        let body = encode_event(&metadata(), &[Tensor::new(vec![1, 2], vec![0.5, 1.0]).unwrap()]).unwrap();
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"inputs": [{"name": "input", "shape": [1, 2], "datatype": "FP32", "data": [0.5, 1.0]}]})
        );
    }

    #[test]
    fn worker_answers_map_to_outcomes() {
        let m = metadata();
        let ok =
            br#"{"model_name":"mlp","outputs":[{"name":"logits","shape":[1,3],"datatype":"FP32","data":[1,2,3]}]}"#;
        match classify_answer(&m, 200, ok) {
            VmOutcome::Done(out) => assert_eq!(out, vec![Tensor::new(vec![1, 3], vec![1.0, 2.0, 3.0]).unwrap()]),
            other => panic!("{other:?}"),
        }
        assert!(matches!(classify_answer(&m, 429, b""), VmOutcome::QueueFull));
        assert!(matches!(classify_answer(&m, 503, b"draining"), VmOutcome::Lost(_)));
        assert!(matches!(classify_answer(&m, 400, b"bad shape"), VmOutcome::Failed(w) if w.contains("bad shape")));
        let short = br#"{"outputs":[{"name":"logits","shape":[1,3],"data":[1,2]}]}"#;
        assert!(matches!(classify_answer(&m, 200, short), VmOutcome::Failed(_)));
    }
}
