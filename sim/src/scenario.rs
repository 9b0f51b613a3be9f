//! Scenario, catalog and profile files, loaded and checked.
//!
//! A scenario names a trace, a catalog of cloud figures (`data/*.toml`), a latency profile of the model
//! (`profiles/*.toml`), the SLO, the policy and its settings. Paths inside a scenario are relative to the
//! scenario file. Every error names the file and, where TOML parsing found it, the line, column and field.
//! The formats are documented in `scenarios/README.md`, `data/README.md` and `profiles/README.md`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use hyscale_policies::catalog::{Catalog, FunctionPlatform, ModelSpec, VmType, VmTypeId};
use hyscale_policies::profile::ProfileFile;
use hyscale_policies::{LatencyTable, Nanos, PolicyConfigs, Slo};
use hyscale_traces::{AzureFunctionsReader, DurationPercentiles, SourceSpec, TraceSpec};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::dist::{Dist, DistSpec, Overhead};
use crate::error::SimError;

/// The scenario file as written.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScenarioFile {
    /// A name for reports.
    pub name: String,
    /// Master seed of every random stream.
    #[serde(default)]
    pub seed: u64,
    /// The policy to run (a name from `hyscale_policies::POLICY_NAMES`).
    pub policy: String,
    /// Catalog file.
    pub catalog: PathBuf,
    /// Latency profile file.
    pub profile: PathBuf,
    /// The arrivals.
    pub trace: TraceSpec,
    /// The SLO.
    #[serde(default)]
    pub slo: SloFile,
    /// Simulator settings.
    #[serde(default)]
    pub sim: SimSettings,
    /// Spot interruptions.
    #[serde(default)]
    pub spot: SpotSettings,
    /// Per-policy settings.
    #[serde(default)]
    pub policies: PolicyConfigs,
    /// `[keep_alive]`: how long each function's idle instances stay loaded, decided per function by a
    /// keep-alive policy (`kind = "fixed"` with `minutes`, or `kind = "hybrid"`: the hybrid histogram policy of
    /// "Serverless in the Wild"). It overrides the keep-alive a scaling policy configures. Absent: the scaling
    /// policy's (or the catalog's default) keep-alive, the same for every function.
    #[serde(default)]
    pub keep_alive: Option<hyscale_policies::keepalive::KeepAliveSpec>,
    /// `[[models]]`: other models in the same cluster, by model id, each with its own profile; ids not listed
    /// use `profile`.
    #[serde(default)]
    pub models: Vec<ModelMapping>,
}

/// One `[[models]]` entry.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelMapping {
    /// The model ids (the requests' `model`: an Azure Functions function, a model column value).
    pub ids: Vec<u32>,
    /// Their profile file (`profiles/README.md` format), relative to the scenario.
    pub profile: PathBuf,
}

/// `[slo]`: the SLO configuration both halves read (`hyscale_policies::SloConfig`).
pub type SloFile = hyscale_policies::SloConfig;

/// `[sim]`: the simulator's own settings.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SimSettings {
    /// Timeline interval, seconds.
    pub report_interval_s: f64,
    /// Arrival-count interval a policy sees, seconds (MArk samples load every 5 s).
    pub arrival_window_s: f64,
    /// How many arrival intervals a policy sees.
    pub arrival_history: usize,
    /// Most requests one VM instance queues before refusing more.
    pub vm_queue_limit: u32,
    /// After the last arrival, how long to wait for outstanding requests before dropping them, seconds.
    pub drain_limit_s: f64,
    /// Shifts every arrival this much later, seconds, so that a fleet requested at time zero can be ready
    /// before the traffic starts (as a deployment would be). Default 0: traffic starts at once.
    pub trace_offset_s: f64,
    /// Take each function's execution time and memory from the trace (an `azure-functions` trace with its
    /// `durations` and `memory` files): a function instance's memory is its function's average allocated
    /// memory (within the platform's sizes), and each execution's time is drawn from the function's
    /// duration percentiles. Default false: the profile's service time and the configured memory.
    pub functions_from_trace: bool,
    /// Idle start for every batch rule a policy sets (`policies::BatchRule::idle_start`): a request that finds
    /// its VM or function instance idle starts its batch at once instead of waiting `max_wait` for it to fill
    /// (Triton's dynamic batcher with no queue delay). The live server's `idle_start` per model is the same.
    /// Default false.
    pub batch_idle_start: bool,
}

impl Default for SimSettings {
    fn default() -> SimSettings {
        SimSettings {
            report_interval_s: 60.0,
            arrival_window_s: 5.0,
            arrival_history: 720,
            vm_queue_limit: 10_000,
            drain_limit_s: 600.0,
            trace_offset_s: 0.0,
            functions_from_trace: false,
            batch_idle_start: false,
        }
    }
}

/// `[spot]`: interruptions from the catalog's hazards (scaled) and/or a list of events.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SpotSettings {
    /// Multiplies every type's interruption hazard (0 turns random interruptions off).
    pub hazard_scale: f64,
    /// Interruption notice, seconds before the instance is taken (AWS: 120).
    pub notice_s: f64,
    /// Interruptions at given times.
    pub events: Vec<SpotEvent>,
}

impl Default for SpotSettings {
    fn default() -> SpotSettings {
        SpotSettings { hazard_scale: 1.0, notice_s: 120.0, events: Vec::new() }
    }
}

/// One listed interruption: at `at_s`, `count` live spot instances of `vm_type` receive their notice
/// (oldest first).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SpotEvent {
    /// When, seconds from the start.
    pub at_s: f64,
    /// Which type.
    pub vm_type: String,
    /// How many instances.
    #[serde(default = "one")]
    pub count: u32,
}

fn one() -> u32 {
    1
}

/// The catalog file as written (`data/*.toml`).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogFile {
    /// VM types.
    pub vm: Vec<VmFile>,
    /// The function platform.
    pub functions: FunctionsFile,
}

/// One `[[vm]]` entry.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmFile {
    /// Type name.
    pub name: String,
    /// vCPUs.
    pub vcpus: u32,
    /// GPUs.
    #[serde(default)]
    pub gpus: u32,
    /// Memory, GiB.
    pub memory_gib: f64,
    /// On-demand $/h.
    pub price_on_demand_per_h: f64,
    /// Spot $/h, if sold on spot.
    pub price_spot_per_h: Option<f64>,
    /// Spot interruptions per instance-hour.
    #[serde(default)]
    pub spot_interruptions_per_h: f64,
    /// Launch + boot, seconds.
    pub launch_boot_s: DistSpec,
    /// Model load bandwidth from storage, MB/s.
    pub model_load_mb_per_s: f64,
}

/// The `[functions]` table.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FunctionsFile {
    /// $/GB-s.
    pub price_per_gb_s: f64,
    /// $/request.
    pub price_per_request: f64,
    /// $/GB-s of pre-warmed capacity.
    pub provisioned_price_per_gb_s: f64,
    /// $/GB-s of execution on pre-warmed capacity.
    pub provisioned_duration_price_per_gb_s: f64,
    /// Rounding of each configured period of pre-warmed capacity, s.
    pub provisioned_granularity_s: f64,
    /// Billing granularity, ms.
    pub billing_granularity_ms: f64,
    /// Whether init is billed.
    pub bill_init: bool,
    /// Memory range, MB.
    pub memory_min_mb: u32,
    /// Memory range, MB.
    pub memory_max_mb: u32,
    /// Default memory, MB.
    pub default_memory_mb: u32,
    /// MB per vCPU.
    pub mb_per_vcpu: f64,
    /// Regional concurrency limit.
    pub regional_concurrency: u32,
    /// Concurrent executions a function may add per interval.
    pub function_scale_step: u32,
    /// That interval, seconds.
    pub function_scale_interval_s: f64,
    /// Default keep-alive, seconds.
    pub default_keep_alive_s: f64,
    /// Sandbox (microVM) creation, seconds.
    pub sandbox_init_s: DistSpec,
    /// Language runtime start in a new sandbox, seconds (hello-world init of the runtime; default 0).
    #[serde(default)]
    pub runtime_init_s: f64,
    /// Model load bandwidth, MB/s.
    pub model_load_mb_per_s: DistSpec,
}

/// Random parts of one VM type's model.
#[derive(Clone, Debug)]
pub struct VmModel {
    /// Launch + boot, seconds.
    pub launch_boot_s: Dist,
    /// Model load time, fixed by size and bandwidth.
    pub model_load: Nanos,
    /// The type's bandwidth for fetching a model, MB/s (loads of other models on a running instance).
    pub load_mb_per_s: f64,
    /// Spot interruptions per hour (already scaled).
    pub spot_hazard_per_h: f64,
    /// Service-time CV from the profile.
    pub service_cv: f64,
    /// Serving overhead per request (the profile's `overhead_ms`, or a log-normal with its `overhead_p99_ms`),
    /// added to each request's latency.
    pub overhead: Overhead,
}

/// Random parts of the function platform's model.
#[derive(Clone, Debug)]
pub struct FunctionModel {
    /// Sandbox (microVM) creation, seconds.
    pub sandbox_init_s: Dist,
    /// Language runtime start inside the sandbox.
    pub runtime_init: Nanos,
    /// The model's deserialisation and first inference at one vCPU, seconds (the profile's `load_s`).
    pub load_s_one_vcpu: f64,
    /// Model load bandwidth, MB/s.
    pub model_load_mb_per_s: Dist,
    /// Service-time CV from the profile.
    pub service_cv: f64,
    /// Serving overhead per request (as [`VmModel::overhead`]).
    pub overhead: Overhead,
}

/// A loaded, checked scenario: everything `simulate` needs but the policy object and the arrivals.
#[derive(Clone, Debug)]
pub struct Scenario {
    /// The scenario file's path.
    pub path: PathBuf,
    /// Folder relative paths are resolved against.
    pub base_dir: PathBuf,
    /// The file as written (with command-line overrides applied).
    pub file: ScenarioFile,
    /// The catalog a policy sees.
    pub catalog: Arc<Catalog>,
    /// Per VM type, indexed like the catalog.
    pub vm_models: Vec<VmModel>,
    /// The function platform.
    pub function_model: FunctionModel,
    /// The SLO.
    pub slo: Slo,
    /// Listed spot events, resolved: (time, type, count).
    pub spot_events: Vec<(Nanos, VmTypeId, u32)>,
    /// Per function (model id), its execution times and memory from the trace (`sim.functions_from_trace`).
    pub function_traits: BTreeMap<u32, FunctionTraits>,
}

/// A model's figures: its own profile's where the scenario maps its id (`[[models]]`), else the scenario's
/// `profile`'s.
#[derive(Clone, Copy, Debug)]
pub struct ModelFigures<'s> {
    /// One loaded copy, MB.
    pub size_mb: f64,
    /// Deserialisation and first inference at one vCPU, seconds.
    pub load_s: f64,
    /// Most vCPUs one request can use.
    pub max_vcpus_per_request: f64,
    /// Batch latency on a function with one vCPU per request.
    pub function_service: &'s LatencyTable,
}

impl Scenario {
    /// The figures of model `id`.
    pub fn model(&self, id: u32) -> ModelFigures<'_> {
        let f = &self.catalog.functions;
        match self.catalog.models.get(&id) {
            Some(s) => ModelFigures {
                size_mb: s.size_mb,
                load_s: s.load_s,
                max_vcpus_per_request: s.max_vcpus_per_request,
                function_service: &s.function_service,
            },
            None => ModelFigures {
                size_mb: f.model_size_mb,
                load_s: self.function_model.load_s_one_vcpu,
                max_vcpus_per_request: f.max_vcpus_per_request,
                function_service: &f.service,
            },
        }
    }

    /// Model `id`'s batch latency on VM type `t`; `None` where its profile does not cover the type (it cannot
    /// run there).
    pub fn vm_service(&self, id: u32, t: VmTypeId) -> Option<&LatencyTable> {
        match self.catalog.models.get(&id) {
            Some(s) => s.vm_service.get(t.0 as usize)?.as_ref(),
            None => self.catalog.vm_types.get(t.0 as usize).map(|v| &v.service),
        }
    }
}

/// One function's behaviour as the trace records it.
#[derive(Clone, Debug, PartialEq)]
pub struct FunctionTraits {
    /// Execution-time percentiles, ms (`None` when the durations file lacks the function).
    pub duration: Option<DurationPercentiles>,
    /// Memory of an instance, MB, within the platform's sizes (`None` when the memory file lacks it).
    pub memory_mb: Option<u32>,
}

/// Reads the per-function traits of the scenario's `azure-functions` trace.
fn function_traits(
    path: &Path,
    base: &Path,
    file: &ScenarioFile,
    platform: &FunctionPlatform,
) -> Result<BTreeMap<u32, FunctionTraits>, SimError> {
    let TraceSpec::Source(SourceSpec::AzureFunctions(spec)) = &file.trace else {
        return Err(config_err(
            path,
            "sim.functions_from_trace needs a [trace] of kind \"azure-functions\" (not wrapped in a transform)",
        ));
    };
    if spec.durations.is_none() && spec.memory.is_none() {
        return Err(config_err(
            path,
            "sim.functions_from_trace: the azure-functions [trace] names neither `durations` nor `memory`",
        ));
    }
    let reader = AzureFunctionsReader::open(spec, base, 0)?;
    Ok(reader
        .functions()
        .iter()
        .map(|f| {
            let memory_mb =
                f.memory_mb.map(|mb| (mb.ceil() as u32).clamp(platform.memory_min_mb, platform.memory_max_mb));
            (f.model, FunctionTraits { duration: f.duration, memory_mb })
        })
        .collect())
}

fn read_toml<T: DeserializeOwned>(path: &Path) -> Result<T, SimError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| SimError::Config { path: path.to_path_buf(), reason: e.to_string() })?;
    toml::from_str(&text).map_err(|e| SimError::Config { path: path.to_path_buf(), reason: e.to_string() })
}

fn config_err(path: &Path, reason: impl Into<String>) -> SimError {
    SimError::Config { path: path.to_path_buf(), reason: reason.into() }
}

fn positive(path: &Path, field: &str, v: f64) -> Result<f64, SimError> {
    if v.is_finite() && v > 0.0 { Ok(v) } else { Err(config_err(path, format!("{field} must be positive, got {v}"))) }
}

fn non_negative(path: &Path, field: &str, v: f64) -> Result<f64, SimError> {
    if v.is_finite() && v >= 0.0 {
        Ok(v)
    } else {
        Err(config_err(path, format!("{field} must be a non-negative number, got {v}")))
    }
}

impl Scenario {
    /// Reads the scenario at `path` and the catalog and profile it names.
    pub fn load(path: &Path) -> Result<Scenario, SimError> {
        let file: ScenarioFile = read_toml(path)?;
        let base_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        Scenario::from_file(path, base_dir, file)
    }

    /// Checks a parsed scenario file (e.g. after command-line overrides) and loads what it names.
    pub fn from_file(path: &Path, base_dir: PathBuf, file: ScenarioFile) -> Result<Scenario, SimError> {
        let slo = file.slo.slo().map_err(|e| config_err(path, e))?;
        if let Some(k) = &file.keep_alive {
            k.build().map_err(|e| config_err(path, format!("keep_alive: {e}")))?;
        }
        let s = &file.sim;
        positive(path, "sim.report_interval_s", s.report_interval_s)?;
        positive(path, "sim.arrival_window_s", s.arrival_window_s)?;
        non_negative(path, "sim.drain_limit_s", s.drain_limit_s)?;
        non_negative(path, "sim.trace_offset_s", s.trace_offset_s)?;
        if s.arrival_history == 0 {
            return Err(config_err(path, "sim.arrival_history must be at least 1"));
        }
        if s.vm_queue_limit == 0 {
            return Err(config_err(path, "sim.vm_queue_limit must be at least 1"));
        }
        non_negative(path, "spot.hazard_scale", file.spot.hazard_scale)?;
        non_negative(path, "spot.notice_s", file.spot.notice_s)?;

        let catalog_path = base_dir.join(&file.catalog);
        let profile_path = base_dir.join(&file.profile);
        let catalog_file: CatalogFile = read_toml(&catalog_path)?;
        let profile: ProfileFile = read_toml(&profile_path)?;
        let (mut catalog, vm_models, function_model) =
            build_catalog(&catalog_path, &catalog_file, &profile_path, &profile, file.spot.hazard_scale)?;
        for (k, m) in file.models.iter().enumerate() {
            let spec = model_spec(&base_dir.join(&m.profile), &catalog)?;
            if m.ids.is_empty() {
                return Err(config_err(path, format!("models[{k}]: ids is empty")));
            }
            for &id in &m.ids {
                if catalog.models.insert(id, spec.clone()).is_some() {
                    return Err(config_err(path, format!("models[{k}]: model id {id} is mapped twice")));
                }
            }
        }

        let mut spot_events = Vec::new();
        for (i, e) in file.spot.events.iter().enumerate() {
            let at = non_negative(path, &format!("spot.events[{i}].at_s"), e.at_s)?;
            let id = catalog.vm_id(&e.vm_type).map_err(|err| config_err(path, format!("spot.events[{i}]: {err}")))?;
            spot_events.push((Nanos::from_secs_f64(at), id, e.count));
        }
        spot_events.sort_by_key(|e| e.0);
        let function_traits = if file.sim.functions_from_trace {
            function_traits(path, &base_dir, &file, &catalog.functions)?
        } else {
            BTreeMap::new()
        };
        Ok(Scenario {
            path: path.to_path_buf(),
            base_dir,
            file,
            catalog: Arc::new(catalog),
            vm_models,
            function_model,
            slo,
            spot_events,
            function_traits,
        })
    }
}

/// The profile at `path` as another model of `catalog` (its VM types; types it lacks cannot run it).
fn model_spec(path: &Path, catalog: &Catalog) -> Result<ModelSpec, SimError> {
    let p: ProfileFile = read_toml(path)?;
    let m = &p.model;
    non_negative(path, "model.size_mb", m.size_mb)?;
    non_negative(path, "model.per_request_mb", m.per_request_mb)?;
    non_negative(path, "model.load_s", m.load_s)?;
    positive(path, "model.max_vcpus_per_request", m.max_vcpus_per_request)?;
    let table =
        |e: &hyscale_policies::profile::HardwareProfile| e.table().map_err(|err| config_err(path, err.to_string()));
    for h in &p.hardware {
        if h.hardware != "function" && catalog.vm_id(&h.hardware).is_err() {
            return Err(config_err(
                path,
                format!("hardware '{}' is neither 'function' nor a VM type the scenario's profile covers", h.hardware),
            ));
        }
    }
    let vm_service =
        catalog.vm_types.iter().map(|t| p.entry(&t.name).map(table).transpose()).collect::<Result<Vec<_>, _>>()?;
    let f = p.entry("function").ok_or_else(|| config_err(path, "no [[hardware]] entry for 'function'"))?;
    Ok(ModelSpec {
        name: m.name.clone(),
        vm_service,
        function_service: table(f)?,
        size_mb: m.size_mb,
        per_request_mb: m.per_request_mb,
        max_vcpus_per_request: m.max_vcpus_per_request,
        load_s: m.load_s,
    })
}

/// The serving overhead of a profile entry (validated by `HardwareProfile::table`): fixed at `overhead_ms`, or
/// log-normal between it (median) and `overhead_p99_ms`.
fn overhead_dist(h: &hyscale_policies::profile::HardwareProfile) -> Dist {
    if h.overhead_p99_ms > h.overhead_ms && h.overhead_ms > 0.0 {
        DistSpec::Lognormal { p50: h.overhead_ms, p99: h.overhead_p99_ms }.build().unwrap_or(Dist::Fixed(h.overhead_ms))
    } else {
        Dist::Fixed(h.overhead_ms)
    }
}

fn build_catalog(
    catalog_path: &Path,
    c: &CatalogFile,
    profile_path: &Path,
    p: &ProfileFile,
    hazard_scale: f64,
) -> Result<(Catalog, Vec<VmModel>, FunctionModel), SimError> {
    let model = &p.model;
    non_negative(profile_path, "model.size_mb", model.size_mb)?;
    non_negative(profile_path, "model.per_request_mb", model.per_request_mb)?;
    positive(profile_path, "model.max_vcpus_per_request", model.max_vcpus_per_request)?;
    for h in &p.hardware {
        if h.hardware != "function" && !c.vm.iter().any(|v| v.name == h.hardware) {
            return Err(config_err(
                profile_path,
                format!("hardware '{}' is neither 'function' nor a VM type in {}", h.hardware, catalog_path.display()),
            ));
        }
    }
    let mut vm_types = Vec::new();
    let mut vm_models = Vec::new();
    for v in &c.vm {
        // Types the model was not profiled on cannot serve it and are left out of the catalog.
        let Some(entry) = p.entry(&v.name) else {
            continue;
        };
        let table = entry.table().map_err(|e| config_err(profile_path, e.to_string()))?;
        let field = |f: &str| format!("vm '{}'.{f}", v.name);
        positive(catalog_path, &field("price_on_demand_per_h"), v.price_on_demand_per_h)?;
        if let Some(s) = v.price_spot_per_h {
            positive(catalog_path, &field("price_spot_per_h"), s)?;
        }
        non_negative(catalog_path, &field("spot_interruptions_per_h"), v.spot_interruptions_per_h)?;
        positive(catalog_path, &field("model_load_mb_per_s"), v.model_load_mb_per_s)?;
        let launch_boot_s = v
            .launch_boot_s
            .build()
            .map_err(|e| config_err(catalog_path, format!("{}: {e}", field("launch_boot_s"))))?;
        // Fetch the model's bytes, then deserialise it and run its first inference (at one vCPU).
        let model_load = Nanos::from_secs_f64(model.size_mb / v.model_load_mb_per_s + model.load_s.max(0.0));
        let id = VmTypeId(vm_types.len() as u16);
        vm_types.push(VmType {
            id,
            name: v.name.clone(),
            vcpus: v.vcpus,
            gpus: v.gpus,
            memory_gib: v.memory_gib,
            price_on_demand_per_h: v.price_on_demand_per_h,
            price_spot_per_h: v.price_spot_per_h,
            provision_mean: Nanos::from_secs_f64(launch_boot_s.mean()) + model_load,
            service: table,
        });
        vm_models.push(VmModel {
            launch_boot_s,
            model_load,
            spot_hazard_per_h: v.spot_interruptions_per_h * hazard_scale,
            load_mb_per_s: v.model_load_mb_per_s,
            service_cv: entry.cv,
            overhead: Overhead::from_millis(overhead_dist(entry)),
        });
    }
    let f = &c.functions;
    let fentry = p.entry("function").ok_or_else(|| {
        config_err(profile_path, "no [[hardware]] entry for 'function' (the model's latency at one vCPU)")
    })?;
    let ftable = fentry.table().map_err(|e| config_err(profile_path, e.to_string()))?;
    let sandbox =
        f.sandbox_init_s.build().map_err(|e| config_err(catalog_path, format!("functions.sandbox_init_s: {e}")))?;
    let bandwidth = f
        .model_load_mb_per_s
        .build()
        .map_err(|e| config_err(catalog_path, format!("functions.model_load_mb_per_s: {e}")))?;
    if bandwidth.mean() <= 0.0 || !bandwidth.mean_reciprocal().is_finite() {
        return Err(config_err(
            catalog_path,
            "functions.model_load_mb_per_s must be a positive rate whose reciprocal has a mean (fixed, uniform \
             above 0 or lognormal; not exponential)",
        ));
    }
    let runtime_init = non_negative(catalog_path, "functions.runtime_init_s", f.runtime_init_s)?;
    let load_s = non_negative(profile_path, "model.load_s", model.load_s)?;
    let vcpus_at_default = (f64::from(f.default_memory_mb) / f.mb_per_vcpu).min(model.max_vcpus_per_request);
    positive(catalog_path, "functions.mb_per_vcpu", f.mb_per_vcpu)?;
    non_negative(catalog_path, "functions.default_keep_alive_s", f.default_keep_alive_s)?;
    non_negative(catalog_path, "functions.billing_granularity_ms", f.billing_granularity_ms)?;
    if f.function_scale_step == 0 {
        return Err(config_err(catalog_path, "functions.function_scale_step must be at least 1"));
    }
    if f.memory_min_mb == 0 || f.memory_min_mb > f.memory_max_mb {
        return Err(config_err(catalog_path, "functions: needs 0 < memory_min_mb <= memory_max_mb"));
    }
    let platform = FunctionPlatform {
        price_per_gb_s: non_negative(catalog_path, "functions.price_per_gb_s", f.price_per_gb_s)?,
        price_per_request: non_negative(catalog_path, "functions.price_per_request", f.price_per_request)?,
        provisioned_price_per_gb_s: non_negative(
            catalog_path,
            "functions.provisioned_price_per_gb_s",
            f.provisioned_price_per_gb_s,
        )?,
        provisioned_duration_price_per_gb_s: non_negative(
            catalog_path,
            "functions.provisioned_duration_price_per_gb_s",
            f.provisioned_duration_price_per_gb_s,
        )?,
        provisioned_granularity: Nanos::from_secs_f64(non_negative(
            catalog_path,
            "functions.provisioned_granularity_s",
            f.provisioned_granularity_s,
        )?),
        billing_granularity: Nanos::from_millis_f64(f.billing_granularity_ms),
        bill_init: f.bill_init,
        memory_min_mb: f.memory_min_mb,
        memory_max_mb: f.memory_max_mb,
        mb_per_vcpu: f.mb_per_vcpu,
        regional_concurrency: f.regional_concurrency,
        function_scale_step: f.function_scale_step,
        function_scale_interval: Nanos::from_secs_f64(positive(
            catalog_path,
            "functions.function_scale_interval_s",
            f.function_scale_interval_s,
        )?),
        default_keep_alive: Nanos::from_secs_f64(f.default_keep_alive_s),
        default_memory_mb: f.default_memory_mb,
        // The true mean of the modelled cold start at the default memory: E[size / bandwidth] is size x
        // E[1 / bandwidth], not size / E[bandwidth].
        cold_start_mean: Nanos::from_secs_f64(
            sandbox.mean()
                + runtime_init
                + model.size_mb * bandwidth.mean_reciprocal()
                + load_s / vcpus_at_default.max(1e-6),
        ),
        service: ftable,
        model_size_mb: model.size_mb,
        per_request_mb: model.per_request_mb,
        max_vcpus_per_request: model.max_vcpus_per_request,
    };
    platform
        .check_settings(f.default_memory_mb, 1)
        .map_err(|e| config_err(catalog_path, format!("functions.default_memory_mb: {e}")))?;
    let catalog = Catalog { model: model.name.clone(), models: BTreeMap::new(), vm_types, functions: platform };
    let function_model = FunctionModel {
        sandbox_init_s: sandbox,
        runtime_init: Nanos::from_secs_f64(runtime_init),
        load_s_one_vcpu: load_s,
        model_load_mb_per_s: bandwidth,
        service_cv: fentry.cv,
        overhead: Overhead::from_millis(overhead_dist(fentry)),
    };
    Ok((catalog, vm_models, function_model))
}
