//! What can go wrong when naming, configuring or fitting a predictor.

use thiserror::Error;

/// An error from a [`Predictor`](super::Predictor) or its [`PredictorSpec`](super::PredictorSpec).
#[derive(Debug, Error, Clone, PartialEq)]
pub enum PredictError {
    /// No predictor has this name.
    #[error("no such predictor '{name}'; the predictors are: {known}")]
    UnknownPredictor {
        /// The name asked for.
        name: String,
        /// The names there are, comma-separated.
        known: String,
    },
    /// A predictor's parameters are out of range.
    #[error("invalid configuration for predictor '{predictor}': {reason}")]
    InvalidConfig {
        /// The predictor.
        predictor: String,
        /// What is wrong.
        reason: String,
    },
    /// A value given to [`fit`](super::Predictor::fit) is not a count.
    #[error("history for predictor '{predictor}' has {value} at index {index}; counts are finite and non-negative")]
    InvalidHistory {
        /// The predictor.
        predictor: String,
        /// Where in the history.
        index: usize,
        /// The value found there.
        value: f64,
    },
    /// Training diverged or the training library failed.
    #[error("training predictor '{predictor}' failed: {reason}")]
    Training {
        /// The predictor.
        predictor: String,
        /// What happened.
        reason: String,
    },
}
