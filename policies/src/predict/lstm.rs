//! `lstm`: a small LSTM trained on the trace's past, as MArk's proactive controller predicts its load.
//!
//! Models: MArk (Zhang et al., USENIX ATC 2019) forecasts the next intervals' request rate with an LSTM
//! trained on the history of rates. Here one LSTM layer (`hidden` units) reads the last `lookback` counts,
//! standardised by the training history's mean and standard deviation, each paired with its difference from
//! the window's last count; a linear layer maps its final hidden state to the change from the last count to
//! the next. Predicting the change rather than the level keeps a trace whose level drifts away from the
//! training range from pulling forecasts back to the training mean: a network that outputs zero is the
//! last value.
//!
//! [`fit`](Predictor::fit) trains on every sliding window of the history, on burn's pure-Rust CPU backend
//! (flex), with Adam for `steps` steps (minibatches of `batch` windows, reshuffled each epoch by the seed,
//! when there are more windows than that). The latest `holdout` share of the windows does not train: it is
//! scored before training and every ten steps, and the weights that scored best are kept (early stopping;
//! on noisy counts the network otherwise learns the noise). Longer horizons feed each forecast back in as
//! the next input. [`observe`](Predictor::observe) slides the input window; it does not retrain.
//!
//! Determinism: burn keeps its random generator in a process-wide slot, so training seeds it and runs under
//! a lock shared by every [`Lstm`] in the process; with the single-threaded backend, the same seed and
//! history give bit-identical weights and forecasts on one machine. Another CPU may round differently: the
//! matrix products (the gemm crate) choose SIMD kernels by CPU feature and block sizes by cache size, which
//! they read once from the operating system; that probe is the only I/O on this path. Other code in the
//! same process that draws random burn tensors while a fit runs would also break reproducibility.
//!
//! Falls back to [`LastValue`](super::LastValue)'s forecast when the history is too short for four
//! windows (the lookback shrinks to half the history first) or is constant. Forecasts are clamped at zero.
//! Leaves out: online retraining, prediction intervals, and any input beyond the counts themselves (time
//! of day, request sizes).

use std::collections::VecDeque;
use std::sync::Mutex;

use burn::module::Module;
use burn::nn::loss::{MseLoss, Reduction};
use burn::nn::{Linear, LinearConfig};
use burn::optim::grad_clipping::GradientClippingConfig;
use burn::optim::{AdamConfig, GradientsParams};
use burn::tensor::{Device, Tensor, TensorData};
use serde::Deserialize;

use super::{PredictError, Predictor, check_history};

/// Serialises training: burn's flex backend draws initial weights from one process-wide generator.
static TRAINING: Mutex<()> = Mutex::new(());

/// Configuration of [`Lstm`]. The defaults train on a few hundred windows in about five seconds on one
/// core of an optimised build (an unoptimised one is some twenty times slower).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LstmConfig {
    /// Hidden units of the LSTM layer (default 24).
    pub hidden: usize,
    /// Past intervals the network reads for each forecast (default 24).
    pub lookback: usize,
    /// Adam steps (default 300).
    pub steps: usize,
    /// Adam's learning rate (default 0.01).
    pub learning_rate: f64,
    /// Windows per minibatch (default 256); a history with fewer windows trains on all of them at once.
    pub batch: usize,
    /// Share of the windows, the latest ones, held out to choose which step's weights to keep (early
    /// stopping: scored before training and every 10 steps); in [0, 0.5], default 0.2. With 0, every
    /// window trains and the last step's weights are kept.
    pub holdout: f64,
}

impl Default for LstmConfig {
    fn default() -> Self {
        LstmConfig { hidden: 24, lookback: 24, steps: 300, learning_rate: 0.01, batch: 256, holdout: 0.2 }
    }
}

/// Steps between two scorings of the held-out windows.
const VALIDATE_EVERY: usize = 10;

/// Inputs per interval: the standardised count, and its difference from the window's last one.
const FEATURES: usize = 2;

/// Appends the network's input for `window` (standardised counts, oldest first) to `out`.
fn encode(window: &[f32], out: &mut Vec<f32>) {
    let last = window.last().copied().unwrap_or(0.0);
    for &z in window {
        out.extend_from_slice(&[z, z - last]);
    }
}

/// The network: one LSTM layer, then a linear read-out of its last hidden state.
#[derive(Module, Debug)]
struct Net {
    lstm: burn::nn::Lstm,
    head: Linear,
}

impl Net {
    fn new(hidden: usize, device: &Device) -> Net {
        Net {
            lstm: burn::nn::LstmConfig::new(FEATURES, hidden, true).init(device),
            head: LinearConfig::new(hidden, 1).init(device),
        }
    }

    /// `[batch, lookback, FEATURES]` encoded windows to `[batch, 1]` standardised changes to the next count.
    fn forward(&self, windows: Tensor<3>) -> Tensor<2> {
        let (_, state) = self.lstm.forward(windows, None);
        self.head.forward(state.hidden)
    }
}

/// The trained state: the network for inference and the scale it was trained in.
#[derive(Debug)]
struct Trained {
    net: Net,
    lookback: usize,
    mean: f64,
    std: f64,
}

/// An LSTM forecaster; see the module docs.
#[derive(Debug)]
pub struct Lstm {
    config: LstmConfig,
    seed: u64,
    trained: Option<Trained>,
    /// The latest counts, at most `config.lookback` of them, oldest first.
    recent: VecDeque<f64>,
    /// See [`Lstm::loss`].
    loss: Option<f64>,
}

impl Lstm {
    /// An untrained predictor with the given shape and training budget; `seed` drives its initial weights
    /// and minibatch order.
    pub fn new(config: &LstmConfig, seed: u64) -> Result<Lstm, PredictError> {
        let invalid =
            |reason: &str| Err(PredictError::InvalidConfig { predictor: "lstm".into(), reason: reason.into() });
        if config.hidden == 0 {
            return invalid("hidden must be at least 1 unit");
        }
        if config.lookback < 2 {
            return invalid("lookback must be at least 2 intervals");
        }
        if config.batch == 0 {
            return invalid("batch must be at least 1 window");
        }
        if !(config.learning_rate.is_finite() && config.learning_rate > 0.0) {
            return invalid("learning_rate must be positive");
        }
        if !(0.0..=0.5).contains(&config.holdout) {
            return invalid("holdout must lie in [0, 0.5]");
        }
        Ok(Lstm { config: config.clone(), seed, trained: None, recent: VecDeque::new(), loss: None })
    }

    /// The loss of the weights the last [`fit`](Predictor::fit) kept: the mean squared error, in standard
    /// deviations of the history, of the held-out windows' forecasts (of the last training step's minibatch
    /// without a holdout); `None` when the fit fell back to the last value.
    pub fn loss(&self) -> Option<f64> {
        self.loss
    }

    /// Trains a network on `history`; `None` when it is too short or constant to learn from. Also returns
    /// the kept weights' loss (see [`Lstm::loss`]).
    fn train(&self, history: &[f64]) -> Result<Option<(Trained, f64)>, PredictError> {
        let lookback = self.config.lookback.min(history.len() / 2);
        let windows = history.len().saturating_sub(lookback);
        if lookback < 2 || windows < 4 {
            return Ok(None);
        }
        let n = history.len() as f64;
        let mean = history.iter().sum::<f64>() / n;
        let std = (history.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n).sqrt();
        if std < 1e-9 * mean.max(1.0) {
            return Ok(None);
        }
        let scaled: Vec<f32> = history.iter().map(|v| ((v - mean) / std) as f32).collect();
        let failed = |reason: String| PredictError::Training { predictor: "lstm".into(), reason };
        let finite = |loss: f64| {
            if loss.is_finite() { Ok(loss) } else { Err(failed(format!("the loss became {loss}"))) }
        };
        // The latest windows are held out: at least one when asked for, and never more than leaves three.
        let fitted = if self.config.holdout > 0.0 {
            windows - ((windows as f64 * self.config.holdout).round() as usize).clamp(1, windows - 3)
        } else {
            windows
        };
        let held_out: Vec<usize> = (fitted..windows).collect();
        let validation = (!held_out.is_empty()).then(|| minibatch(&scaled, lookback, &held_out, &Device::flex()));

        // The lock only guards burn's generator, which a panic elsewhere cannot leave half-written.
        let _guard = TRAINING.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let device = Device::flex().autodiff();
        device.seed(self.seed);
        let mut net = Net::new(self.config.hidden, &device);
        let mut optimizer = AdamConfig::new().with_grad_clipping(Some(GradientClippingConfig::Norm(1.0))).init();
        let batch = self.config.batch.min(fitted);
        let mut order: Vec<usize> = (0..fitted).collect();
        let mut rng = SplitMix64(self.seed);
        let mut cursor = fitted; // Forces a shuffle before the first minibatch.
        let mut full: Option<(Tensor<3>, Tensor<2>)> = None;
        let mut best: Option<(f64, Net)> = None;
        let mut loss_value = f64::NAN;
        for step in 0..=self.config.steps {
            if let Some((inputs, targets)) = &validation
                && (step % VALIDATE_EVERY == 0 || step == self.config.steps)
            {
                let candidate = net.valid();
                let output = candidate.forward(inputs.clone());
                let loss =
                    finite(scalar(MseLoss::new().forward(output, targets.clone(), Reduction::Mean)).map_err(failed)?)?;
                if best.as_ref().is_none_or(|(b, _)| loss < *b) {
                    best = Some((loss, candidate));
                }
            }
            if step == self.config.steps {
                break;
            }
            let (inputs, targets) = if batch == fitted {
                // One batch of every window, built once.
                full.get_or_insert_with(|| minibatch(&scaled, lookback, &order, &device)).clone()
            } else {
                if cursor + batch > fitted {
                    rng.shuffle(&mut order);
                    cursor = 0;
                }
                cursor += batch;
                minibatch(&scaled, lookback, &order[cursor - batch..cursor], &device)
            };
            let loss = MseLoss::new().forward(net.forward(inputs), targets, Reduction::Mean);
            let grads = GradientsParams::from_grads(loss.backward(), &net);
            loss_value = finite(scalar(loss).map_err(failed)?)?;
            net = optimizer.step(self.config.learning_rate, net, grads);
        }
        let (loss, net) = best.unwrap_or_else(|| (loss_value, net.valid()));
        Ok(Some((Trained { net, lookback, mean, std }, loss)))
    }

    /// The next standardised count after `window` (standardised, oldest first).
    fn step(trained: &Trained, window: &[f32]) -> Result<f32, String> {
        let mut input = Vec::with_capacity(window.len() * FEATURES);
        encode(window, &mut input);
        let input = Tensor::<3>::from_data(TensorData::new(input, [1, window.len(), FEATURES]), &Device::flex());
        let change = scalar(trained.net.forward(input))? as f32;
        Ok(window.last().copied().unwrap_or(0.0) + change)
    }
}

/// The inputs `[n, lookback, FEATURES]` and targets `[n, 1]` of the windows starting at `starts`.
fn minibatch(scaled: &[f32], lookback: usize, starts: &[usize], device: &Device) -> (Tensor<3>, Tensor<2>) {
    let mut inputs = Vec::with_capacity(starts.len() * lookback * FEATURES);
    let mut targets = Vec::with_capacity(starts.len());
    for &s in starts {
        encode(&scaled[s..s + lookback], &mut inputs);
        targets.push(scaled[s + lookback] - scaled[s + lookback - 1]);
    }
    (
        Tensor::from_data(TensorData::new(inputs, [starts.len(), lookback, FEATURES]), device),
        Tensor::from_data(TensorData::new(targets, [starts.len(), 1]), device),
    )
}

/// The only value of a one-element tensor.
fn scalar<const D: usize>(tensor: Tensor<D>) -> Result<f64, String> {
    let values = tensor.into_data().try_into_vec_as::<f32>().map_err(|e| format!("reading a tensor: {e:?}"))?;
    values.first().map(|&v| f64::from(v)).ok_or_else(|| "an empty tensor".to_string())
}

impl Predictor for Lstm {
    fn name(&self) -> &str {
        "lstm"
    }

    fn fit(&mut self, history: &[f64]) -> Result<(), PredictError> {
        check_history(self.name(), history)?;
        let trained = self.train(history)?;
        self.loss = trained.as_ref().map(|(_, loss)| *loss);
        self.trained = trained.map(|(trained, _)| trained);
        for &value in history {
            self.observe(value);
        }
        Ok(())
    }

    fn observe(&mut self, value: f64) {
        debug_assert!(value.is_finite() && value >= 0.0, "count {value}");
        if self.recent.len() == self.config.lookback {
            self.recent.pop_front();
        }
        self.recent.push_back(value);
    }

    fn forecast(&self, horizon: usize) -> Vec<f64> {
        let last = self.recent.back().copied().unwrap_or(0.0);
        let Some(trained) = self.trained.as_ref().filter(|t| self.recent.len() >= t.lookback) else {
            return vec![last; horizon];
        };
        let mut window: Vec<f32> = self
            .recent
            .range(self.recent.len() - trained.lookback..)
            .map(|v| ((v - trained.mean) / trained.std) as f32)
            .collect();
        let mut forecasts = Vec::with_capacity(horizon);
        for _ in 0..horizon {
            let Ok(next) = Lstm::step(trained, &window) else {
                // Inference on a network that trained cannot fail short of a bug in burn; degrade to the
                // last value rather than panic in a controller.
                debug_assert!(false, "LSTM inference failed");
                forecasts.resize(horizon, last);
                break;
            };
            forecasts.push((f64::from(next) * trained.std + trained.mean).max(0.0));
            window.remove(0);
            window.push(next);
        }
        forecasts
    }
}

/// Steele, Lea and Flood's SplitMix64: a tiny seeded generator for the minibatch order.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Fisher-Yates.
    fn shuffle(&mut self, items: &mut [usize]) {
        for i in (1..items.len()).rev() {
            let j = (self.next() % (i as u64 + 1)) as usize;
            items.swap(i, j);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::predict::{LastValue, walk_forward};

    /// A clean sine of period 20 intervals between 10 and 30.
    fn sine(len: usize) -> Vec<f64> {
        (0..len).map(|t| 20.0 + 10.0 * (t as f64 * std::f64::consts::TAU / 20.0).sin()).collect()
    }

    /// Small enough to train in well under a second even unoptimised.
    fn small() -> LstmConfig {
        LstmConfig { hidden: 16, lookback: 16, steps: 150, learning_rate: 0.02, batch: 64, holdout: 0.2 }
    }

    #[test]
    fn the_same_seed_and_history_give_identical_forecasts() {
        let history = sine(120);
        let config = LstmConfig { steps: 30, ..small() };
        let forecasts = |seed| {
            let mut p = Lstm::new(&config, seed).unwrap();
            p.fit(&history).unwrap();
            let f = p.forecast(5);
            (f.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), p.loss().unwrap().to_bits())
        };
        let first = forecasts(7);
        assert_eq!(first, forecasts(7));
        assert_ne!(first, forecasts(8), "another seed should start from other weights");
    }

    #[test]
    fn on_a_clean_sine_it_beats_the_last_value() {
        let series = sine(240);
        let (train, test) = series.split_at(180);
        let mut lstm = Lstm::new(&small(), 1).unwrap();
        lstm.fit(train).unwrap();
        let mut last = LastValue::new();
        last.fit(train).unwrap();
        let (lstm, last) = (walk_forward(&mut lstm, test, 1), walk_forward(&mut last, test, 1));
        assert!(lstm.rmse < 0.5 * last.rmse, "LSTM RMSE {} vs last value {}", lstm.rmse, last.rmse);
    }

    #[test]
    fn a_short_or_constant_history_falls_back_to_the_last_value() {
        for history in [vec![3.0, 5.0, 4.0], vec![7.0; 100]] {
            let mut p = Lstm::new(&small(), 0).unwrap();
            p.fit(&history).unwrap();
            assert_eq!(p.loss(), None);
            assert_eq!(p.forecast(2), vec![*history.last().unwrap(); 2]);
        }
    }

    #[test]
    fn the_minibatch_order_is_a_seeded_permutation() {
        let shuffled = |seed| {
            let mut items: Vec<usize> = (0..10).collect();
            SplitMix64(seed).shuffle(&mut items);
            items
        };
        let mut sorted = shuffled(3);
        assert_eq!(sorted, shuffled(3));
        sorted.sort_unstable();
        assert_eq!(sorted, (0..10).collect::<Vec<_>>());
    }
}
