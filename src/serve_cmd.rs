//! `hyscale serve --config live.toml`: the Open Inference Protocol v2 server over the configured models.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use hyscale_backend::live::ClusterConfig;
use hyscale_backend::server::{AppState, ServeConfig, ServeError, serve};

use crate::BadInput;

#[derive(Args)]
pub struct ServeArgs {
    /// The live configuration (TOML; see live/README.md).
    #[arg(long)]
    config: PathBuf,
    /// Listen here instead of the configuration's address (port 0: any free port, printed at start).
    #[arg(long)]
    listen: Option<String>,
    /// Serve gRPC here instead of the configuration's `grpc_listen` (port 0: any free port, printed at start).
    #[arg(long)]
    grpc_listen: Option<String>,
    /// Log lines as plain text (coloured only on a terminal) or as JSON objects, one a line, for log shippers.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

/// How `hyscale serve` writes its log to standard error.
#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match args.log_format {
        // Colour escapes only when a person reads it: a file or a pipe gets plain text.
        LogFormat::Text => builder.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())).init(),
        LogFormat::Json => builder.json().init(),
    }
    let (mut config, cluster_config) = read_config(&args.config)?;
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    if let Some(listen) = args.grpc_listen {
        config.grpc_listen = Some(listen);
    }
    let base = args.config.parent().map(Path::to_path_buf).unwrap_or_default();
    let cluster = match cluster_config {
        Some(c) => {
            let (catalog, slo) = cluster_catalog(&args.config, &base, &c)?;
            Some((c, catalog, slo))
        }
        None => None,
    };
    let threads = config.checked_server_threads().map_err(|e| BadInput(format!("{}: {e}", args.config.display())))?;
    let runtime = server_runtime(threads).build().context("starting tokio")?;
    runtime.block_on(async {
        let state = AppState::start(&config, &base, cluster).await.map_err(|e| match e {
            ServeError::Io { .. } => anyhow::Error::new(e),
            other => anyhow::Error::new(BadInput(format!("{}: {other}", args.config.display()))),
        })?;
        // One Ctrl-C stops both services.
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            let _ = tokio::signal::ctrl_c().await;
            tracing::info!("shutting down");
            let _ = stop_tx.send(true);
        });
        let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        let state = Arc::new(state);
        let rest = serve(
            Arc::clone(&state),
            &config.listen,
            |addr| println!("listening on http://{addr}"),
            stopped(stop_rx.clone()),
        );
        let grpc = async {
            match &config.grpc_listen {
                Some(listen) => {
                    hyscale_backend::server::grpc::serve_grpc(
                        Arc::clone(&state),
                        listen,
                        |addr| println!("gRPC on {addr}"),
                        stopped(stop_rx.clone()),
                    )
                    .await
                }
                None => Ok(()),
            }
        };
        tokio::try_join!(rest, grpc).map(|_| ()).map_err(anyhow::Error::new)
    })
}

/// Reads a live configuration: the server's settings and, apart from them, its `[cluster]` table if any (see
/// live/README.md).
pub fn read_config(path: &Path) -> anyhow::Result<(ServeConfig, Option<ClusterConfig>)> {
    let text = std::fs::read_to_string(path).map_err(|e| BadInput(format!("{}: {e}", path.display())))?;
    let mut table: toml::Table = toml::from_str(&text).map_err(|e| BadInput(format!("{}: {e}", path.display())))?;
    let cluster_table = table.remove("cluster");
    let config: ServeConfig = table.try_into().map_err(|e| BadInput(format!("{}: {e}", path.display())))?;
    let cluster_config: Option<ClusterConfig> = cluster_table
        .map(|t| t.try_into())
        .transpose()
        .map_err(|e| BadInput(format!("{}: [cluster]: {e}", path.display())))?;
    Ok((config, cluster_config))
}

/// The catalog and SLO of a `[cluster]` table, loaded and checked by the simulator's scenario loader (so
/// that live and simulated runs see the same catalog for the same files).
pub fn cluster_catalog(
    config_path: &Path,
    base: &Path,
    c: &ClusterConfig,
) -> anyhow::Result<(Arc<hyscale_policies::Catalog>, hyscale_policies::Slo)> {
    // The loader needs a trace; the live cluster's arrivals are its requests, so this one is never opened.
    let trace = hyscale_traces::TraceSpec::from_arg("poisson:1:1").map_err(|e| BadInput(e.to_string()))?;
    let scenario = cluster_scenario(config_path, base, c, trace, 0, Default::default())?;
    Ok((scenario.catalog, scenario.slo))
}

/// The scenario a `[cluster]` table describes for the simulator: its catalog, profile, policy sections and SLO,
/// with `trace`, `seed` and the simulator's `sim` settings.
pub fn cluster_scenario(
    config_path: &Path,
    base: &Path,
    c: &ClusterConfig,
    trace: hyscale_traces::TraceSpec,
    seed: u64,
    sim: hyscale_sim::scenario::SimSettings,
) -> anyhow::Result<hyscale_sim::scenario::Scenario> {
    let bad = |e: String| anyhow::Error::new(BadInput(format!("{}: [cluster]: {e}", config_path.display())));
    let file = hyscale_sim::scenario::ScenarioFile {
        name: "live".into(),
        seed,
        policy: c.policy.clone(),
        catalog: c.catalog.clone(),
        profile: c.profile.clone(),
        trace,
        slo: c.slo.clone(),
        sim,
        spot: Default::default(),
        policies: c.policies.clone(),
        keep_alive: None,
        models: Vec::new(),
    };
    hyscale_sim::scenario::Scenario::from_file(config_path, base.to_path_buf(), file).map_err(|e| bad(e.to_string()))
}

/// The runtime the HTTP and gRPC services run on: `threads` workers (checked by
/// `hyscale_backend::server::check_server_threads`; `None`: one per core), drivers enabled.
pub fn server_runtime(threads: Option<usize>) -> tokio::runtime::Builder {
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = threads {
        runtime.worker_threads(n);
    }
    runtime.enable_all();
    runtime
}
