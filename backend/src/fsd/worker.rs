//! One FSD worker: its slices of every layer loaded at initialisation (one engine session per layer), and
//! per request: run its slice of a layer on the whole previous activation, send it, gather the other
//! workers' slices, go on; after the last layer, worker 0 gathers every slice and answers the output, the
//! others send theirs to worker 0 and answer with their counts only.

use std::path::Path;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::channel::{Channel, ChannelSetup, Meter};
use super::{FsdError, concat_columns};
use crate::engine::{Engine, Session, Tensor};

/// The worker's environment: its index, the number of workers, its slices' folder, the channel.
pub const WORKER_ENV: &str = "HYSCALE_FSD_WORKER";
/// Workers per request.
pub const WORKERS_ENV: &str = "HYSCALE_FSD_WORKERS";
/// The folder with `layer0.onnx`, `layer1.onnx`, ... of this worker.
pub const DIR_ENV: &str = "HYSCALE_FSD_DIR";
/// The [`ChannelSetup`] as JSON.
pub const CHANNEL_ENV: &str = "HYSCALE_FSD_CHANNEL";

/// A request to one worker.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FsdEvent {
    /// The request's id (names its messages and objects).
    pub request: String,
    /// Rows of the input.
    pub rows: usize,
    /// The input, `rows` × the model's inputs, row-major (every worker gets it).
    pub input: Vec<f32>,
    /// How long the worker may wait on the channel in all, ms.
    pub timeout_ms: u64,
    /// Fault injection, for the failure tests: what one worker does wrong at one layer.
    #[serde(default)]
    pub fault: Option<Fault>,
}

/// A fault a worker is told to commit (tests of the failure paths).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Fault {
    /// Worker `worker` exits (a crash) instead of sending its slice of layer `layer`.
    Die {
        /// The worker.
        worker: usize,
        /// The layer.
        layer: usize,
    },
    /// Worker `worker` does not send its slice of layer `layer` (a lost message).
    Lose {
        /// The worker.
        worker: usize,
        /// The layer.
        layer: usize,
    },
    /// Worker `worker` sends its slice of layer `layer` twice (a duplicated message).
    Duplicate {
        /// The worker.
        worker: usize,
        /// The layer.
        layer: usize,
    },
}

/// A worker's answer.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FsdAnswer {
    /// Which worker answered.
    pub worker: usize,
    /// The model's output (worker 0 only), `rows` × outputs.
    pub output: Option<Vec<f32>>,
    /// Its channel calls and their latencies.
    pub meter: Meter,
    /// Its time computing, ms.
    pub compute_ms: f64,
}

/// A worker ready to serve.
pub struct Worker {
    index: usize,
    workers: usize,
    layers: Vec<Session>,
    channel: Channel,
}

impl Worker {
    /// Loads the worker's slices (`dir/layer{l}.onnx` until one is missing) with `engine` and connects to
    /// the channel.
    pub async fn start(
        engine: &Engine,
        index: usize,
        workers: usize,
        dir: &Path,
        setup: &ChannelSetup,
    ) -> Result<Worker, FsdError> {
        let mut layers = Vec::new();
        while dir.join(format!("layer{}.onnx", layers.len())).exists() {
            let path = dir.join(format!("layer{}.onnx", layers.len()));
            layers.push(engine.load(&path).map_err(|e| FsdError::Engine(e.to_string()))?);
        }
        if layers.is_empty() {
            return Err(FsdError::Model(format!("{}: no layer0.onnx", dir.display())));
        }
        if index >= workers {
            return Err(FsdError::Model(format!("worker {index} of {workers}")));
        }
        let channel = Channel::connect(setup).await?;
        Ok(Worker { index, workers, layers, channel })
    }

    /// Serves one request.
    pub async fn serve(&mut self, event: &FsdEvent) -> Result<FsdAnswer, FsdError> {
        let deadline = Instant::now() + Duration::from_millis(event.timeout_ms);
        let (me, p) = (self.index, self.workers);
        let mut answer = FsdAnswer { worker: me, ..FsdAnswer::default() };
        let rows = event.rows.max(1);
        let mut x = event.input.clone();
        let last = self.layers.len() - 1;
        for l in 0..=last {
            let inputs = x.len() / rows;
            let started = Instant::now();
            let input = Tensor::new(vec![rows, inputs], x)
                .ok_or_else(|| FsdError::Model(format!("layer {}: the input does not fill {rows} rows", l + 1)))?;
            let mut out = self.layers[l].run(&[input]).map_err(|e| FsdError::Engine(e.to_string()))?;
            answer.compute_ms += started.elapsed().as_secs_f64() * 1e3;
            let mine = out.pop().map(|t| t.data).unwrap_or_default();
            if p == 1 {
                x = mine;
                continue;
            }
            let sends = match event.fault {
                Some(Fault::Die { worker, layer }) if (worker, layer) == (me, l) => std::process::exit(3),
                Some(Fault::Lose { worker, layer }) if (worker, layer) == (me, l) => 0,
                Some(Fault::Duplicate { worker, layer }) if (worker, layer) == (me, l) => 2,
                _ => 1,
            };
            let others: Vec<usize> = (0..p).filter(|&w| w != me).collect();
            let to: &[usize] = if l < last { &others } else { &[0] };
            if l < last || me != 0 {
                for _ in 0..sends {
                    self.channel.send(&event.request, l, me, to, &mine, &mut answer.meter).await?;
                }
            }
            if l < last {
                let mut got = self.channel.gather(&event.request, l, me, &others, deadline, &mut answer.meter).await?;
                got.insert(me, mine);
                x = concat_columns(&got, rows);
            } else if me != 0 {
                return Ok(answer);
            } else {
                let mut got = self.channel.gather(&event.request, l, me, &others, deadline, &mut answer.meter).await?;
                got.insert(0, mine);
                x = concat_columns(&got, rows);
            }
        }
        answer.output = Some(x);
        Ok(answer)
    }
}
