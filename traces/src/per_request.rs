//! Generic per-request traces: one row per request in CSV or JSON Lines, with configurable column names and
//! time units, and the canonical CSV that `hyscale trace convert` writes.
//!
//! The canonical format is a CSV with the header `time_s,model,input_size,output_size`: the arrival time in
//! seconds since the start of the trace (nine decimals, so nanoseconds survive a round trip), the model id,
//! and the request's input and output sizes (0 where unknown).
//!
//! Rules, the same for every per-request source:
//! - rows must be sorted by time; a row earlier than the one before it is an error naming its line
//!   (hyscale streams traces and never sorts them in memory: sort the file first, e.g. with `sort -t, -k1g`);
//! - times are offset from the first row unless [`Origin::Zero`] is chosen;
//! - a model column holds either integers (used as ids) or names (given ids in order of first appearance),
//!   as its first row decides.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Lines, Write};
use std::path::{Path, PathBuf};

use chrono::NaiveDateTime;
use serde::Deserialize;

use crate::{Arrival, Nanos, TraceError};

/// The header of the canonical per-request CSV.
pub const CANONICAL_HEADER: &str = "time_s,model,input_size,output_size";

/// How a time column is written.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum TimeUnit {
    /// Seconds (a decimal number).
    #[default]
    S,
    /// Milliseconds.
    Ms,
    /// Microseconds.
    Us,
    /// Nanoseconds.
    Ns,
    /// A date and time, parsed with [`RequestFormat::datetime_format`].
    Datetime,
}

impl TimeUnit {
    fn nanos_per_unit(self) -> f64 {
        match self {
            TimeUnit::S | TimeUnit::Datetime => 1e9,
            TimeUnit::Ms => 1e6,
            TimeUnit::Us => 1e3,
            TimeUnit::Ns => 1.0,
        }
    }
}

/// Where time zero is.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Origin {
    /// The first row's time is zero.
    #[default]
    FirstRow,
    /// Times are already relative to the start of the trace (they must not be negative).
    Zero,
}

/// The file's syntax.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Syntax {
    /// Comma-separated values with a header row.
    #[default]
    Csv,
    /// One JSON object per line.
    Jsonl,
}

/// Column names and units of a per-request file. Without a `format` the canonical CSV is read; in a written
/// `format`, an omitted time column or unit takes the canonical one, and an omitted model or size column
/// means the file has none (every request reads model 0, size 0).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RequestFormat {
    /// CSV or JSON Lines.
    #[serde(default)]
    pub syntax: Syntax,
    /// The arrival time's column.
    #[serde(default = "time_column")]
    pub time_column: String,
    /// The arrival time's unit.
    #[serde(default = "time_unit")]
    pub time_unit: TimeUnit,
    /// A chrono format string for [`TimeUnit::Datetime`].
    #[serde(default = "datetime_format")]
    pub datetime_format: String,
    /// Where time zero is.
    #[serde(default = "origin")]
    pub origin: Origin,
    /// The model id or name column, if any (else every request is model 0).
    #[serde(default)]
    pub model_column: Option<String>,
    /// The input size column, if any (else 0).
    #[serde(default)]
    pub input_size_column: Option<String>,
    /// The output size column, if any (else 0).
    #[serde(default)]
    pub output_size_column: Option<String>,
}

fn time_column() -> String {
    "time_s".into()
}

fn time_unit() -> TimeUnit {
    TimeUnit::S
}

fn datetime_format() -> String {
    "%Y-%m-%d %H:%M:%S%.f".into()
}

fn origin() -> Origin {
    Origin::Zero
}

impl Default for RequestFormat {
    fn default() -> RequestFormat {
        RequestFormat {
            syntax: Syntax::Csv,
            time_column: time_column(),
            time_unit: time_unit(),
            datetime_format: datetime_format(),
            origin: origin(),
            model_column: Some("model".into()),
            input_size_column: Some("input_size".into()),
            output_size_column: Some("output_size".into()),
        }
    }
}

impl RequestFormat {
    /// The canonical CSV (the default).
    pub fn canonical() -> RequestFormat {
        RequestFormat::default()
    }

    /// JSON Lines with the canonical field names.
    pub fn canonical_jsonl() -> RequestFormat {
        RequestFormat { syntax: Syntax::Jsonl, ..RequestFormat::default() }
    }
}

enum Rows {
    Csv(csv::StringRecordsIntoIter<BufReader<CrlfAsLf<BufReader<File>>>>),
    Jsonl(Lines<BufReader<CrlfAsLf<BufReader<File>>>>, u64),
}

/// Model ids from a model column: integers as they are, names numbered in order of first appearance.
#[derive(Default)]
struct ModelIds {
    numeric: Option<bool>,
    names: HashMap<String, u32>,
}

impl ModelIds {
    fn id(&mut self, text: &str) -> Result<u32, String> {
        let numeric = *self.numeric.get_or_insert_with(|| text.parse::<u32>().is_ok());
        if numeric {
            return text.parse::<u32>().map_err(|_| {
                format!("'{text}' is not an integer model id (the first row's model was an integer, so all must be)")
            });
        }
        let next = self.names.len() as u32;
        Ok(*self.names.entry(text.to_string()).or_insert(next))
    }
}

/// Streams arrivals from a per-request CSV or JSON Lines file.
pub struct RequestReader {
    path: PathBuf,
    format: RequestFormat,
    rows: Rows,
    /// Column indices (CSV): time, model, input, output.
    columns: [Option<usize>; 4],
    models: ModelIds,
    first: Option<i128>,
    previous: Nanos,
    count: u64,
    done: bool,
}

impl RequestReader {
    /// Opens `path` read as `format`; for CSV, checks the header has every named column.
    pub fn open(path: &Path, format: RequestFormat) -> Result<RequestReader, TraceError> {
        let io = |source| TraceError::Io { path: path.to_path_buf(), source };
        let file = BufReader::new(CrlfAsLf::new(BufReader::new(File::open(path).map_err(io)?)));
        let mut columns = [None; 4];
        let rows = match format.syntax {
            Syntax::Csv => {
                let mut reader = csv::ReaderBuilder::new().has_headers(true).from_reader(file);
                let header = reader.headers().map_err(|e| csv_error(path, e))?.clone();
                let find = |name: &str| {
                    header.iter().position(|h| h.trim() == name).ok_or_else(|| TraceError::MissingColumn {
                        path: path.to_path_buf(),
                        column: name.to_string(),
                        found: header.iter().collect::<Vec<_>>().join(","),
                    })
                };
                columns[0] = Some(find(&format.time_column)?);
                for (slot, name) in
                    [&format.model_column, &format.input_size_column, &format.output_size_column].iter().enumerate()
                {
                    if let Some(name) = name {
                        columns[slot + 1] = Some(find(name)?);
                    }
                }
                Rows::Csv(reader.into_records())
            }
            Syntax::Jsonl => Rows::Jsonl(file.lines(), 0),
        };
        Ok(RequestReader {
            path: path.to_path_buf(),
            format,
            rows,
            columns,
            models: ModelIds::default(),
            first: None,
            previous: Nanos::ZERO,
            count: 0,
            done: false,
        })
    }

    fn malformed(&self, line: u64, column: &str, reason: String) -> TraceError {
        TraceError::Malformed { path: self.path.clone(), line, column: column.to_string(), reason }
    }

    /// Parses a time field into nanoseconds on the file's own scale (before the origin is applied).
    fn parse_time(&self, line: u64, text: &str) -> Result<i128, TraceError> {
        let column = &self.format.time_column;
        let text = text.trim();
        if self.format.time_unit == TimeUnit::Datetime {
            let t = NaiveDateTime::parse_from_str(text, &self.format.datetime_format).map_err(|e| {
                self.malformed(line, column, format!("'{text}' does not match '{}': {e}", self.format.datetime_format))
            })?;
            let t = t.and_utc();
            return Ok(t.timestamp() as i128 * 1_000_000_000 + t.timestamp_subsec_nanos() as i128);
        }
        if let Ok(i) = text.parse::<i64>() {
            return Ok(i as i128 * self.format.time_unit.nanos_per_unit() as i128);
        }
        match text.parse::<f64>() {
            Ok(x) if x.is_finite() => Ok((x * self.format.time_unit.nanos_per_unit()).round() as i128),
            _ => Err(self.malformed(line, column, format!("'{text}' is not a number"))),
        }
    }

    fn size(&self, line: u64, column: &str, text: &str) -> Result<u32, TraceError> {
        let text = text.trim();
        text.parse::<u32>().map_err(|e| self.malformed(line, column, format!("'{text}' is not a size: {e}")))
    }

    fn arrival(&mut self, line: u64, fields: [Option<String>; 4]) -> Result<Arrival, TraceError> {
        let [time, model, input, output] = fields;
        let names = [
            Some(self.format.time_column.clone()),
            self.format.model_column.clone(),
            self.format.input_size_column.clone(),
            self.format.output_size_column.clone(),
        ];
        let time = time.ok_or_else(|| self.malformed(line, &self.format.time_column, "missing field".into()))?;
        let raw = self.parse_time(line, &time)?;
        let origin = match self.format.origin {
            Origin::FirstRow => *self.first.get_or_insert(raw),
            Origin::Zero => 0,
        };
        let ns = raw - origin;
        if ns < 0 && self.format.origin == Origin::Zero {
            return Err(self.malformed(line, &self.format.time_column, format!("negative time '{time}'")));
        }
        if ns < 0 || ns as u64 as i128 != ns || Nanos(ns as u64) < self.previous {
            let back = self.previous.0 as f64 - ns as f64;
            return Err(TraceError::Unsorted { path: self.path.clone(), line, back_ms: back / 1e6 });
        }
        let time = Nanos(ns as u64);
        let get = |i: usize, value: Option<String>| -> Result<Option<String>, TraceError> {
            match (&names[i], value) {
                (None, _) => Ok(None),
                (Some(_), Some(v)) => Ok(Some(v)),
                (Some(name), None) => Err(self.malformed(line, name, "missing field".into())),
            }
        };
        let model = get(1, model)?;
        let input = get(2, input)?;
        let output = get(3, output)?;
        let model = match model {
            None => 0,
            Some(text) => {
                let name = names[1].clone().unwrap_or_default();
                self.models.id(text.trim()).map_err(|reason| self.malformed(line, &name, reason))?
            }
        };
        let input_size = match input {
            None => 0,
            Some(text) => self.size(line, names[2].as_deref().unwrap_or_default(), &text)?,
        };
        let output_size = match output {
            None => 0,
            Some(text) => self.size(line, names[3].as_deref().unwrap_or_default(), &text)?,
        };
        self.previous = time;
        Ok(Arrival { time, model, input_size, output_size })
    }

    fn next_row(&mut self) -> Option<Result<Arrival, TraceError>> {
        match &mut self.rows {
            Rows::Csv(records) => {
                let record = match records.next()? {
                    Ok(r) => r,
                    Err(e) => return Some(Err(csv_error(&self.path, e))),
                };
                let line = record.position().map_or(0, |p| p.line());
                let field = |c: Option<usize>| c.and_then(|i| record.get(i)).map(str::to_string);
                let fields = self.columns.map(field);
                // A column named in the header but absent from this short row is reported as missing.
                let fields: [Option<String>; 4] = std::array::from_fn(|i| match (self.columns[i], &fields[i]) {
                    (Some(_), None) => None,
                    (_, f) => f.clone(),
                });
                Some(self.arrival(line, fields))
            }
            Rows::Jsonl(lines, number) => {
                let (line, text) = loop {
                    *number += 1;
                    let line = *number;
                    match lines.next()? {
                        Err(source) => return Some(Err(TraceError::Io { path: self.path.clone(), source })),
                        Ok(text) if text.trim().is_empty() => continue,
                        Ok(text) => break (line, text),
                    }
                };
                let object: serde_json::Map<String, serde_json::Value> = match serde_json::from_str(&text) {
                    Ok(o) => o,
                    Err(e) => return Some(Err(self.malformed(line, "(row)", format!("not a JSON object: {e}")))),
                };
                let field = |name: &Option<String>| {
                    name.as_ref().and_then(|n| object.get(n)).map(|v| match v {
                        serde_json::Value::String(s) => s.clone(),
                        other => other.to_string(),
                    })
                };
                let fields = [
                    field(&Some(self.format.time_column.clone())),
                    field(&self.format.model_column),
                    field(&self.format.input_size_column),
                    field(&self.format.output_size_column),
                ];
                Some(self.arrival(line, fields))
            }
        }
    }
}

impl Iterator for RequestReader {
    type Item = Result<Arrival, TraceError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let item = match self.next_row() {
            None if self.count == 0 => Err(TraceError::Empty { path: self.path.clone() }),
            None => {
                self.done = true;
                return None;
            }
            Some(item) => item,
        };
        self.count += 1;
        if item.is_err() {
            self.done = true;
        }
        Some(item)
    }
}

/// Reads a text file with its CRLF line ends turned into LF, so that the csv crate's line numbers are right
/// (after CRLF lines they come out one short; the shipped Azure LLM traces are CRLF). A lone CR is kept.
pub(crate) struct CrlfAsLf<R> {
    inner: R,
}

impl<R: std::io::BufRead> CrlfAsLf<R> {
    /// Wraps `inner`.
    pub(crate) fn new(inner: R) -> CrlfAsLf<R> {
        CrlfAsLf { inner }
    }
}

impl<R: std::io::BufRead> std::io::Read for CrlfAsLf<R> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        let mut w = 0;
        while w < out.len() {
            let buf = self.inner.fill_buf()?;
            if buf.is_empty() {
                break;
            }
            // Whole runs up to the next CR are copied at once (a byte at a time showed in the profile of a
            // day's Azure Functions file, 7.6 MB).
            let room = &buf[..buf.len().min(out.len() - w)];
            let Some(cr) = memchr::memchr(b'\r', room) else {
                out[w..w + room.len()].copy_from_slice(room);
                w += room.len();
                let n = room.len();
                self.inner.consume(n);
                continue;
            };
            out[w..w + cr].copy_from_slice(&room[..cr]);
            w += cr;
            // `cr` is inside `room`, so `out` has room for the CR if it is kept.
            let next = buf.get(cr + 1).copied();
            self.inner.consume(cr + 1);
            let lf_follows = match next {
                Some(b) => b == b'\n',
                // The CR ends the buffer: look at the next one before deciding.
                None => self.inner.fill_buf()?.first() == Some(&b'\n'),
            };
            if !lf_follows {
                out[w] = b'\r';
                w += 1;
            }
        }
        Ok(w)
    }
}

pub(crate) fn csv_error(path: &Path, e: csv::Error) -> TraceError {
    let line = e.position().map_or(0, |p| p.line());
    match e.into_kind() {
        csv::ErrorKind::Io(source) => TraceError::Io { path: path.to_path_buf(), source },
        csv::ErrorKind::UnequalLengths { expected_len, len, .. } => TraceError::Malformed {
            path: path.to_path_buf(),
            line,
            column: "(row)".into(),
            reason: format!("{len} fields where the header has {expected_len}"),
        },
        other => TraceError::Malformed {
            path: path.to_path_buf(),
            line,
            column: "(row)".into(),
            reason: format!("{other:?}"),
        },
    }
}

/// Writes `arrivals` to `out` as the canonical CSV and returns how many were written. The first error of the
/// stream stops the writing and is returned.
pub fn write_canonical<W: Write>(
    arrivals: impl Iterator<Item = Result<Arrival, TraceError>>,
    out: W,
    out_path: &Path,
) -> Result<u64, TraceError> {
    let io = |source| TraceError::Io { path: out_path.to_path_buf(), source };
    let mut out = std::io::BufWriter::new(out);
    writeln!(out, "{CANONICAL_HEADER}").map_err(io)?;
    let mut n = 0;
    for a in arrivals {
        let a = a?;
        let (s, ns) = (a.time.0 / 1_000_000_000, a.time.0 % 1_000_000_000);
        writeln!(out, "{s}.{ns:09},{},{},{}", a.model, a.input_size, a.output_size).map_err(io)?;
        n += 1;
    }
    out.flush().map_err(io)?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_format_without_model_or_size_columns_reads_them_as_zero() {
        let format: RequestFormat = toml::from_str("time_column = \"t\"\ntime_unit = \"ms\"").unwrap();
        assert_eq!((format.model_column.as_deref(), format.input_size_column.as_deref()), (None, None));
        let mut f = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(&mut f, b"t\n0\n1500\n").unwrap();
        let rows: Vec<_> = RequestReader::open(f.path(), format).unwrap().collect::<Result<_, _>>().unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!((rows[1].time, rows[1].model, rows[1].input_size), (Nanos::from_millis(1500), 0, 0));
    }

    #[test]
    fn crlf_becomes_lf_whatever_the_buffer_boundaries() {
        use std::io::Read;
        let text = b"a,b\r\n1,2\r\n\r3\r\r\n4\r";
        for cap in 1..text.len() + 2 {
            let mut r = CrlfAsLf::new(BufReader::with_capacity(cap, &text[..]));
            let mut out = Vec::new();
            r.read_to_end(&mut out).unwrap();
            assert_eq!(out, b"a,b\n1,2\n\r3\r\n4\r", "buffer of {cap}");
        }
    }

    fn file(content: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(content.as_bytes()).unwrap();
        f
    }

    fn read(content: &str, format: RequestFormat) -> Vec<Result<Arrival, TraceError>> {
        let f = file(content);
        RequestReader::open(f.path(), format).unwrap().collect()
    }

    #[test]
    fn canonical_round_trip_keeps_nanoseconds() {
        let arrivals = vec![
            Arrival { time: Nanos(1_500_000_001), model: 2, input_size: 7, output_size: 9 },
            Arrival { time: Nanos(86_400_000_000_123), model: 0, input_size: 0, output_size: 1 },
        ];
        let f = tempfile::NamedTempFile::new().unwrap();
        let n = write_canonical(arrivals.iter().copied().map(Ok), f.reopen().unwrap(), f.path()).unwrap();
        assert_eq!(n, 2);
        let back: Vec<Arrival> =
            RequestReader::open(f.path(), RequestFormat::canonical()).unwrap().map(Result::unwrap).collect();
        assert_eq!(back, arrivals);
    }

    #[test]
    fn custom_columns_units_and_model_names() {
        let format = RequestFormat {
            time_column: "ts".into(),
            time_unit: TimeUnit::Ms,
            origin: Origin::FirstRow,
            model_column: Some("fn".into()),
            input_size_column: None,
            output_size_column: None,
            ..RequestFormat::default()
        };
        let rows = read("fn,ts,extra\nresnet,1000,x\nbert,1250.5,y\nresnet,2000,z\n", format);
        let a: Vec<Arrival> = rows.into_iter().map(Result::unwrap).collect();
        assert_eq!(a.iter().map(|a| a.time).collect::<Vec<_>>(), [Nanos(0), Nanos(250_500_000), Nanos(1_000_000_000)]);
        assert_eq!(a.iter().map(|a| a.model).collect::<Vec<_>>(), [0, 1, 0]);
    }

    #[test]
    fn jsonl_with_datetimes() {
        let format = RequestFormat {
            time_column: "at".into(),
            time_unit: TimeUnit::Datetime,
            origin: Origin::FirstRow,
            model_column: None,
            input_size_column: Some("prompt".into()),
            output_size_column: None,
            ..RequestFormat::canonical_jsonl()
        };
        let rows = read(
            "{\"at\": \"2024-01-01 00:00:00\", \"prompt\": 5}\n\n{\"at\": \"2024-01-01 00:00:01.5\", \"prompt\": 6}\n",
            format,
        );
        let a: Vec<Arrival> = rows.into_iter().map(Result::unwrap).collect();
        assert_eq!(a[1].time, Nanos::from_millis(1500));
        assert_eq!(a[1].input_size, 6);
    }

    #[test]
    fn errors_name_file_line_and_column() {
        let e = read("time_s,model,input_size,output_size\n0.5,0,1,1\n0.25,0,1,1\n", RequestFormat::canonical());
        assert!(matches!(e[1], Err(TraceError::Unsorted { line: 3, .. })), "{:?}", e[1]);
        let e = read("time_s,model,input_size,output_size\n0.5,0,-1,1\n", RequestFormat::canonical());
        let msg = e[0].as_ref().unwrap_err().to_string();
        assert!(msg.contains(":2: column 'input_size'"), "{msg}");
        let e = read("time_s,model,input_size,output_size\n0.5,0,1\n", RequestFormat::canonical());
        let msg = e[0].as_ref().unwrap_err().to_string();
        assert!(msg.contains(":2: column '(row)': 3 fields where the header has 4"), "{msg}");
        let only_time = RequestFormat {
            model_column: None,
            input_size_column: None,
            output_size_column: None,
            ..RequestFormat::canonical_jsonl()
        };
        let e = read("{\"time_s\": 1}\nnot json\n", only_time);
        let msg = e[1].as_ref().unwrap_err().to_string();
        assert!(msg.contains(":2: column '(row)': not a JSON object"), "{msg}");
        let f = file("when,model\n1,2\n");
        let msg = RequestReader::open(f.path(), RequestFormat::canonical()).err().unwrap().to_string();
        assert!(msg.contains("missing column 'time_s' (the header has: when,model)"), "{msg}");
        let e = read("time_s,model,input_size,output_size\n", RequestFormat::canonical());
        assert!(matches!(e[0], Err(TraceError::Empty { .. })));
        let e = read("time_s,model,input_size,output_size\n1,3,0,0\n2,bert,0,0\n", RequestFormat::canonical());
        let msg = e[1].as_ref().unwrap_err().to_string();
        assert!(msg.contains(":3: column 'model'"), "{msg}");
    }
}
