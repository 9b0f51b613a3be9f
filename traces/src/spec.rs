//! Trace sources, generators and transforms as a scenario's `[trace]` table or a command line names them.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer};

use crate::azure_functions::{AzureFunctionsReader, AzureFunctionsSpec, Selection};
use crate::count_series::{CountSeriesReader, CountSeriesSpec, OutageMode, OutageRule};
use crate::counts::Spread;
use crate::generate::GeneratorSpec;
use crate::per_request::{CANONICAL_HEADER, RequestFormat, RequestReader};
use crate::transform::{Compress, Merge, Mix, Scale, Window};
use crate::{ArrivalStream, AzureLlmReader, TraceError};

/// A source of arrivals: a file reader, a generator, or a transform of other sources.
///
/// In TOML every kind is a table with a `kind` key; transforms hold their source(s) as nested tables:
///
/// ```toml
/// [trace]
/// kind = "scale"
/// factor = 4.0
/// [trace.source]
/// kind = "azure-llm"
/// path = "../traces/data/azure_llm_2023/AzureLLMInferenceTrace_conv.csv"
/// ```
///
/// Relative paths are resolved against the folder of the file that names them.
#[derive(Clone, Debug, PartialEq)]
pub enum TraceSpec {
    /// A file.
    Source(SourceSpec),
    /// A seeded generator.
    Generator(GeneratorSpec),
    /// A transform of other specs.
    Transform(TransformSpec),
}

/// Trace files.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum SourceSpec {
    /// The Azure LLM inference 2023 per-request CSV.
    AzureLlm {
        /// The CSV file.
        path: PathBuf,
    },
    /// A generic per-request CSV or JSON Lines file (the canonical CSV by default).
    Requests {
        /// The file.
        path: PathBuf,
        /// Its columns and units.
        #[serde(default)]
        format: RequestFormat,
    },
    /// The Azure Functions 2019 per-minute invocation counts.
    AzureFunctions(AzureFunctionsSpec),
    /// A series of counts per bin (the NASA 1995 trace).
    CountSeries(CountSeriesSpec),
}

/// Transforms of other specs.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum TransformSpec {
    /// Keep `[start_s, end_s)` and make `start_s` time zero.
    Window {
        /// Window start, seconds.
        #[serde(default)]
        start_s: f64,
        /// Window end, seconds (default: the end of the source).
        #[serde(default)]
        end_s: Option<f64>,
        /// The source.
        source: Box<TraceSpec>,
    },
    /// Scale the rate: thinning below 1, jittered superposition above.
    Scale {
        /// Rate multiplier.
        factor: f64,
        /// Largest delay of an added copy, seconds.
        #[serde(default = "one")]
        jitter_s: f64,
        /// The source.
        source: Box<TraceSpec>,
    },
    /// Divide every time by `factor`.
    Compress {
        /// Speed-up.
        factor: f64,
        /// The source.
        source: Box<TraceSpec>,
    },
    /// Merge sources in time order.
    Merge {
        /// The sources.
        sources: Vec<TraceSpec>,
        /// Give each arrival its source's index as model id.
        #[serde(default)]
        relabel: bool,
    },
    /// Assign model ids by weights.
    Mix {
        /// Weight of model id 0, 1, ...
        weights: Vec<f64>,
        /// The source.
        source: Box<TraceSpec>,
    },
}

fn one() -> f64 {
    1.0
}

const SOURCE_KINDS: &[&str] = &["azure-llm", "requests", "azure-functions", "count-series"];
const TRANSFORM_KINDS: &[&str] = &["window", "scale", "compress", "merge", "mix"];

impl<'de> Deserialize<'de> for TraceSpec {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        // Read the table once, then dispatch on its kind so each family keeps its own precise errors.
        let value = serde_json::Value::deserialize(deserializer)?;
        let kind =
            value.get("kind").and_then(|k| k.as_str()).ok_or_else(|| D::Error::missing_field("kind"))?.to_string();
        let kind = kind.as_str();
        let all = || [SOURCE_KINDS, GeneratorSpec::NAMES, TRANSFORM_KINDS].concat().join(", ");
        let spec = if SOURCE_KINDS.contains(&kind) {
            serde_json::from_value(value).map(TraceSpec::Source)
        } else if GeneratorSpec::NAMES.contains(&kind) {
            serde_json::from_value(value).map(TraceSpec::Generator)
        } else if TRANSFORM_KINDS.contains(&kind) {
            serde_json::from_value(value).map(TraceSpec::Transform)
        } else {
            return Err(D::Error::custom(format!("unknown trace kind '{kind}'; the kinds are: {}", all())));
        };
        spec.map_err(|e| D::Error::custom(format!("trace kind '{kind}': {e}")))
    }
}

/// A child's seed: the parent's seed mixed with the child's position (SplitMix64's finaliser).
fn child_seed(seed: u64, index: u64) -> u64 {
    let mut z = seed ^ (index + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl TraceSpec {
    /// Opens the stream; `base` resolves relative paths and `seed` drives every random choice.
    pub fn open(&self, base: &Path, seed: u64) -> Result<ArrivalStream, TraceError> {
        Ok(match self {
            TraceSpec::Source(SourceSpec::AzureLlm { path }) => Box::new(AzureLlmReader::open(&base.join(path))?),
            TraceSpec::Source(SourceSpec::Requests { path, format }) => {
                Box::new(RequestReader::open(&base.join(path), format.clone())?)
            }
            TraceSpec::Source(SourceSpec::AzureFunctions(spec)) => {
                Box::new(AzureFunctionsReader::open(spec, base, seed)?)
            }
            TraceSpec::Source(SourceSpec::CountSeries(spec)) => Box::new(CountSeriesReader::open(spec, base, seed)?),
            TraceSpec::Generator(g) => Box::new(g.open(seed)?),
            TraceSpec::Transform(t) => match t {
                TransformSpec::Window { start_s, end_s, source } => {
                    Box::new(Window::new(source.open(base, child_seed(seed, 0))?, *start_s, *end_s)?)
                }
                TransformSpec::Scale { factor, jitter_s, source } => Box::new(Scale::new(
                    source.open(base, child_seed(seed, 0))?,
                    *factor,
                    *jitter_s,
                    child_seed(seed, 1_000_000),
                )?),
                TransformSpec::Compress { factor, source } => {
                    Box::new(Compress::new(source.open(base, child_seed(seed, 0))?, *factor)?)
                }
                TransformSpec::Merge { sources, relabel } => {
                    let streams = sources
                        .iter()
                        .enumerate()
                        .map(|(i, s)| s.open(base, child_seed(seed, i as u64)))
                        .collect::<Result<Vec<_>, _>>()?;
                    Box::new(Merge::new(streams, *relabel)?)
                }
                TransformSpec::Mix { weights, source } => {
                    Box::new(Mix::new(source.open(base, child_seed(seed, 0))?, weights, child_seed(seed, 1_000_000))?)
                }
            },
        })
    }

    /// A short description for reports.
    pub fn describe(&self) -> String {
        match self {
            TraceSpec::Source(SourceSpec::AzureLlm { path }) => format!("azure-llm:{}", path.display()),
            TraceSpec::Source(SourceSpec::Requests { path, .. }) => format!("requests:{}", path.display()),
            TraceSpec::Source(SourceSpec::AzureFunctions(s)) => {
                format!("azure-functions:{}:{}", s.spread.name(), s.path.display())
            }
            TraceSpec::Source(SourceSpec::CountSeries(s)) => {
                let outages = match s.outages.mode {
                    OutageMode::Cut => format!(" (zero runs >= {} s cut)", s.outages.min_zero_s),
                    OutageMode::Keep => String::new(),
                };
                format!("count-series:{}:{}{outages}", s.spread.name(), s.path.display())
            }
            TraceSpec::Generator(g) => g.describe(),
            TraceSpec::Transform(TransformSpec::Window { start_s, end_s, source }) => {
                format!(
                    "window[{start_s}s..{}]({})",
                    end_s.map_or("end".into(), |e| format!("{e}s")),
                    source.describe()
                )
            }
            TraceSpec::Transform(TransformSpec::Scale { factor, source, .. }) => {
                format!("scale x{factor}({})", source.describe())
            }
            TraceSpec::Transform(TransformSpec::Compress { factor, source }) => {
                format!("compress x{factor}({})", source.describe())
            }
            TraceSpec::Transform(TransformSpec::Merge { sources, .. }) => {
                format!("merge({})", sources.iter().map(TraceSpec::describe).collect::<Vec<_>>().join(", "))
            }
            TraceSpec::Transform(TransformSpec::Mix { weights, source }) => {
                format!("mix{weights:?}({})", source.describe())
            }
        }
    }

    /// Makes relative paths absolute against `base` (for a spec given on the command line, whose paths are
    /// relative to the working directory rather than to a scenario file).
    pub fn rebase(&mut self, base: &Path) {
        match self {
            TraceSpec::Source(SourceSpec::AzureLlm { path })
            | TraceSpec::Source(SourceSpec::Requests { path, .. })
            | TraceSpec::Source(SourceSpec::CountSeries(CountSeriesSpec { path, .. })) => *path = base.join(&*path),
            TraceSpec::Source(SourceSpec::AzureFunctions(s)) => {
                s.path = base.join(&s.path);
                for p in [&mut s.durations, &mut s.memory].into_iter().flatten() {
                    *p = base.join(&*p);
                }
            }
            TraceSpec::Generator(_) => {}
            TraceSpec::Transform(
                TransformSpec::Window { source, .. }
                | TransformSpec::Scale { source, .. }
                | TransformSpec::Compress { source, .. }
                | TransformSpec::Mix { source, .. },
            ) => source.rebase(base),
            TraceSpec::Transform(TransformSpec::Merge { sources, .. }) => {
                sources.iter_mut().for_each(|s| s.rebase(base))
            }
        }
    }

    /// Interprets a command-line trace argument. Paths are kept as given (relative to the working
    /// directory; see [`TraceSpec::rebase`]).
    ///
    /// - `poisson:RATE_PER_S:DURATION_S`
    /// - `gen:KIND:key=value,key=value` for any generator (`gen:diurnal:mean_rate_per_s=5,amplitude=0.8,duration_s=86400`)
    /// - `azure-functions:SPREAD:PATH` and `count-series:SPREAD:PATH` for binned traces, SPREAD being `even`,
    ///   `uniform` or `poisson` (binned traces need the choice made; durations.csv and memory.csv beside an
    ///   Azure Functions file are attached);
    /// - `FILE.toml`: a trace spec file (a table with `kind`, or a `[trace]` table);
    /// - `FILE.csv`: an Azure LLM trace or a canonical per-request CSV, told apart by the header;
    /// - `FILE.jsonl`: JSON Lines with the canonical field names.
    pub fn from_arg(arg: &str) -> Result<TraceSpec, TraceError> {
        let bad = |why: String| TraceError::InvalidParameters(format!("trace '{arg}': {why}"));
        if let Some(rest) = arg.strip_prefix("poisson:") {
            let parts: Vec<&str> = rest.split(':').collect();
            let num = |s: &str, what: &str| s.parse::<f64>().map_err(|_| bad(format!("{what} '{s}' is not a number")));
            return match parts.as_slice() {
                [rate, dur] => Ok(TraceSpec::Generator(GeneratorSpec::Poisson {
                    rate_per_s: num(rate, "rate")?,
                    duration_s: num(dur, "duration")?,
                })),
                _ => Err(bad("expected poisson:RATE_PER_S:DURATION_S".into())),
            };
        }
        if let Some(rest) = arg.strip_prefix("gen:") {
            let (kind, params) = rest.split_once(':').unwrap_or((rest, ""));
            let mut table = serde_json::Map::new();
            table.insert("kind".into(), kind.into());
            for pair in params.split(',').filter(|p| !p.is_empty()) {
                let (k, v) = pair.split_once('=').ok_or_else(|| bad(format!("'{pair}' is not key=value")))?;
                let value = v.parse::<f64>().map(serde_json::Value::from).unwrap_or_else(|_| v.into());
                table.insert(k.trim().into(), value);
            }
            return serde_json::from_value::<TraceSpec>(serde_json::Value::Object(table))
                .map_err(|e| bad(e.to_string()));
        }
        for (prefix, functions) in [("azure-functions:", true), ("count-series:", false)] {
            if let Some(rest) = arg.strip_prefix(prefix) {
                let (spread, path) =
                    rest.split_once(':').ok_or_else(|| bad(format!("expected {prefix}SPREAD:PATH")))?;
                let spread = Spread::from_name(spread)
                    .ok_or_else(|| bad(format!("spread '{spread}' is not one of even, uniform, poisson")))?;
                let path = PathBuf::from(path);
                return Ok(TraceSpec::Source(if functions {
                    let sibling = |name: &str| {
                        let p = path.with_file_name(name);
                        p.exists().then_some(p)
                    };
                    SourceSpec::AzureFunctions(AzureFunctionsSpec {
                        durations: sibling("durations.csv"),
                        memory: sibling("memory.csv"),
                        path,
                        spread,
                        select: Selection::default(),
                    })
                } else {
                    SourceSpec::CountSeries(CountSeriesSpec {
                        path,
                        member: None,
                        bin_s: 1.0,
                        spread,
                        outages: OutageRule::default(),
                    })
                }));
            }
        }
        let path = PathBuf::from(arg);
        let lower = arg.to_ascii_lowercase();
        if lower.ends_with(".toml") {
            return TraceSpec::from_toml_file(&path);
        }
        if lower.ends_with(".jsonl") {
            return Ok(TraceSpec::Source(SourceSpec::Requests { path, format: RequestFormat::canonical_jsonl() }));
        }
        if lower.ends_with(".tbz2") || lower.ends_with(".tar.bz2") {
            return Err(bad(format!(
                "a count series needs a spread choice: use count-series:even:{arg} (or uniform, poisson)"
            )));
        }
        let header = first_line(&path)?;
        if header.starts_with("TIMESTAMP") {
            Ok(TraceSpec::Source(SourceSpec::AzureLlm { path }))
        } else if header == CANONICAL_HEADER {
            Ok(TraceSpec::Source(SourceSpec::Requests { path, format: RequestFormat::canonical() }))
        } else if header.starts_with("HashOwner") {
            Err(bad(format!(
                "per-minute counts need a spread choice: use azure-functions:uniform:{arg} (or even, poisson)"
            )))
        } else {
            Err(bad(format!(
                "the header '{}' is neither the Azure LLM trace's nor the canonical '{CANONICAL_HEADER}'; describe \
                 the columns in a trace spec file (kind = \"requests\", see traces/README.md)",
                header.chars().take(80).collect::<String>()
            )))
        }
    }

    /// Reads a spec from a TOML file: a table with `kind` at the top, or under `[trace]`. Relative paths in it
    /// are made relative to the file's folder.
    pub fn from_toml_file(path: &Path) -> Result<TraceSpec, TraceError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| TraceError::Io { path: path.to_path_buf(), source })?;
        #[derive(Deserialize)]
        struct Wrapped {
            trace: TraceSpec,
        }
        let parsed = if text.lines().any(|l| l.trim() == "[trace]" || l.trim_start().starts_with("[trace.")) {
            toml::from_str::<Wrapped>(&text).map(|w| w.trace)
        } else {
            toml::from_str::<TraceSpec>(&text)
        };
        let mut spec = parsed.map_err(|e| TraceError::InvalidParameters(format!("{}: {e}", path.display())))?;
        spec.rebase(path.parent().unwrap_or(Path::new("")));
        Ok(spec)
    }
}

fn first_line(path: &Path) -> Result<String, TraceError> {
    let io = |source| TraceError::Io { path: path.to_path_buf(), source };
    let mut line = String::new();
    BufReader::new(File::open(path).map_err(io)?).read_line(&mut line).map_err(io)?;
    Ok(line.trim_end().trim_start_matches('\u{feff}').to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_specs_parse_from_toml() {
        let spec: TraceSpec = toml::from_str(
            r#"
            kind = "merge"
            relabel = true
            [[sources]]
            kind = "poisson"
            rate_per_s = 5
            duration_s = 10
            [[sources]]
            kind = "scale"
            factor = 2.0
            [sources.source]
            kind = "azure-functions"
            path = "f.csv"
            spread = "uniform"
            select = { top = 3 }
            "#,
        )
        .unwrap();
        let TraceSpec::Transform(TransformSpec::Merge { sources, relabel: true }) = &spec else { panic!("{spec:?}") };
        assert_eq!(sources[0], TraceSpec::Generator(GeneratorSpec::Poisson { rate_per_s: 5.0, duration_s: 10.0 }));
        assert!(spec.describe().starts_with("merge(poisson:5/s for 10s, scale x2(azure-functions:uniform:f.csv))"));
    }

    #[test]
    fn errors_name_the_kind_and_field() {
        let e = toml::from_str::<TraceSpec>("kind = \"poisson\"\nrate = 3\nduration_s = 1\n").unwrap_err().to_string();
        assert!(e.contains("trace kind 'poisson': unknown field `rate`"), "{e}");
        let e = toml::from_str::<TraceSpec>("kind = \"nasa\"\n").unwrap_err().to_string();
        assert!(e.contains("unknown trace kind 'nasa'; the kinds are: azure-llm,"), "{e}");
        let e = toml::from_str::<TraceSpec>("kind = \"azure-functions\"\npath = \"x\"\n").unwrap_err().to_string();
        assert!(e.contains("missing field `spread`"), "{e}");
    }

    #[test]
    fn command_line_forms() {
        assert!(matches!(TraceSpec::from_arg("poisson:3:10"), Ok(TraceSpec::Generator(GeneratorSpec::Poisson { .. }))));
        let g = TraceSpec::from_arg("gen:gamma:rate_per_s=4,cv=2,duration_s=60").unwrap();
        assert_eq!(g, TraceSpec::Generator(GeneratorSpec::Gamma { rate_per_s: 4.0, cv: 2.0, duration_s: 60.0 }));
        let e = TraceSpec::from_arg("gen:gamma:rate_per_s=4").unwrap_err().to_string();
        assert!(e.contains("missing field `cv`"), "{e}");
        let e = TraceSpec::from_arg("azure-functions:sorted:x.csv").unwrap_err().to_string();
        assert!(e.contains("spread 'sorted' is not one of"), "{e}");
        let e = TraceSpec::from_arg("x.tbz2").unwrap_err().to_string();
        assert!(e.contains("count-series:even:x.tbz2"), "{e}");
    }
}
