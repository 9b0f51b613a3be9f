//! Predictors by name, with their configuration from a scenario file or the command line.

use serde::Deserialize;

use super::{
    Ewma, EwmaConfig, HoltWinters, HoltWintersConfig, LastValue, MovingMax, MovingMaxConfig, PredictError, Predictor,
};

/// The names of all predictors compiled in, as [`PredictorSpec::from_name`] accepts them.
#[cfg(feature = "lstm")]
pub const PREDICTOR_NAMES: &[&str] = &["last-value", "moving-max", "ewma", "holt-winters", "lstm"];
/// The names of all predictors compiled in, as [`PredictorSpec::from_name`] accepts them.
#[cfg(not(feature = "lstm"))]
pub const PREDICTOR_NAMES: &[&str] = &["last-value", "moving-max", "ewma", "holt-winters"];

/// A predictor and its parameters, as a scenario's `[predictor]` table names it.
///
/// ```toml
/// [predictor]
/// kind = "holt-winters"
/// season = 60
/// ```
///
/// Parameters left out take their defaults; unknown ones are an error.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum PredictorSpec {
    /// [`LastValue`].
    LastValue,
    /// [`MovingMax`].
    MovingMax(MovingMaxConfig),
    /// [`Ewma`].
    Ewma(EwmaConfig),
    /// [`HoltWinters`].
    HoltWinters(HoltWintersConfig),
    /// [`Lstm`](super::Lstm).
    #[cfg(feature = "lstm")]
    Lstm(super::LstmConfig),
}

impl PredictorSpec {
    /// The predictor called `name`, with default parameters.
    pub fn from_name(name: &str) -> Result<PredictorSpec, PredictError> {
        Ok(match name {
            "last-value" => PredictorSpec::LastValue,
            "moving-max" => PredictorSpec::MovingMax(MovingMaxConfig::default()),
            "ewma" => PredictorSpec::Ewma(EwmaConfig::default()),
            "holt-winters" => PredictorSpec::HoltWinters(HoltWintersConfig::default()),
            #[cfg(feature = "lstm")]
            "lstm" => PredictorSpec::Lstm(super::LstmConfig::default()),
            other => {
                return Err(PredictError::UnknownPredictor {
                    name: other.to_string(),
                    known: PREDICTOR_NAMES.join(", "),
                });
            }
        })
    }

    /// The predictor's name, as [`PREDICTOR_NAMES`] lists it.
    pub fn name(&self) -> &'static str {
        match self {
            PredictorSpec::LastValue => "last-value",
            PredictorSpec::MovingMax(_) => "moving-max",
            PredictorSpec::Ewma(_) => "ewma",
            PredictorSpec::HoltWinters(_) => "holt-winters",
            #[cfg(feature = "lstm")]
            PredictorSpec::Lstm(_) => "lstm",
        }
    }

    /// Builds the predictor, unfitted, checking its parameters; `seed` drives whatever randomness it has
    /// (only the LSTM's initial weights).
    #[cfg_attr(not(feature = "lstm"), allow(unused_variables))]
    pub fn build(&self, seed: u64) -> Result<Box<dyn Predictor>, PredictError> {
        Ok(match self {
            PredictorSpec::LastValue => Box::new(LastValue::new()),
            PredictorSpec::MovingMax(config) => Box::new(MovingMax::new(config)?),
            PredictorSpec::Ewma(config) => Box::new(Ewma::new(config)?),
            PredictorSpec::HoltWinters(config) => Box::new(HoltWinters::new(config)?),
            #[cfg(feature = "lstm")]
            PredictorSpec::Lstm(config) => Box::new(super::Lstm::new(config, seed)?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_builds_the_predictor_of_that_name() {
        for &name in PREDICTOR_NAMES {
            let spec = PredictorSpec::from_name(name).unwrap();
            assert_eq!(spec.name(), name);
            assert_eq!(spec.build(1).unwrap().name(), name);
        }
    }

    #[test]
    fn an_unknown_name_lists_the_known_ones() {
        let err = PredictorSpec::from_name("prophet").unwrap_err().to_string();
        assert!(err.starts_with("no such predictor 'prophet'; the predictors are: last-value, moving-max"), "{err}");
    }

    /// Parses `[predictor]` tables; `Err` holds the start of the error message.
    fn check(toml_text: &str, expected: Result<PredictorSpec, &str>) {
        #[derive(Deserialize)]
        struct File {
            predictor: PredictorSpec,
        }
        let got = toml::from_str::<File>(toml_text).map(|f| f.predictor).map_err(|e| e.to_string());
        match (got, expected) {
            (Ok(got), Ok(want)) => assert_eq!(got, want),
            (Err(got), Err(want)) => assert!(got.contains(want), "{got}"),
            (got, want) => panic!("{toml_text}: got {got:?}, want {want:?}"),
        }
    }

    #[test]
    fn scenario_tables_name_a_predictor_and_its_parameters() {
        check("[predictor]\nkind = \"last-value\"\n", Ok(PredictorSpec::LastValue));
        check(
            "[predictor]\nkind = \"moving-max\"\nwindow = 3\n",
            Ok(PredictorSpec::MovingMax(MovingMaxConfig { window: 3 })),
        );
        check("[predictor]\nkind = \"ewma\"\n", Ok(PredictorSpec::Ewma(EwmaConfig::default())));
        check(
            "[predictor]\nkind = \"holt-winters\"\nseason = 60\n",
            Ok(PredictorSpec::HoltWinters(HoltWintersConfig { season: 60, ..HoltWintersConfig::default() })),
        );
        check("[predictor]\nkind = \"ewma\"\nbeta = 0.2\n", Err("unknown field `beta`"));
        check("[predictor]\nkind = \"arima\"\n", Err("unknown variant `arima`"));
    }

    #[test]
    fn parameters_out_of_range_fail_at_build() {
        let spec = PredictorSpec::Ewma(EwmaConfig { alpha: 2.0 });
        assert!(matches!(spec.build(0), Err(PredictError::InvalidConfig { .. })));
    }
}
