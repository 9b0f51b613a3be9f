//! `hyscale serve --config live.toml`: the Open Inference Protocol v2 server over the configured models.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
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
}

pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let text =
        std::fs::read_to_string(&args.config).map_err(|e| BadInput(format!("{}: {e}", args.config.display())))?;
    let mut config: ServeConfig =
        toml::from_str(&text).map_err(|e| BadInput(format!("{}: {e}", args.config.display())))?;
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    let base = args.config.parent().map(Path::to_path_buf).unwrap_or_default();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting tokio")?;
    runtime.block_on(async {
        let state = AppState::load(&config, &base).map_err(|e| match e {
            ServeError::Io { .. } => anyhow::Error::new(e),
            other => anyhow::Error::new(BadInput(format!("{}: {other}", args.config.display()))),
        })?;
        let shutdown = async {
            let _ = tokio::signal::ctrl_c().await;
            tracing::info!("shutting down");
        };
        serve(Arc::new(state), &config.listen, |addr| println!("listening on http://{addr}"), shutdown)
            .await
            .map_err(anyhow::Error::new)
    })
}
