//! The Azure LLM inference trace 2023 (Splitwise, ISCA 2024): `TIMESTAMP,ContextTokens,GeneratedTokens`,
//! one row per request, timestamps like `2023-11-16 18:15:46.6805900`. Arrivals are replayed as they are,
//! offset from the first row.

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use chrono::NaiveDateTime;

use crate::per_request::csv_error;
use crate::{Arrival, Nanos, TraceError};

const TIMESTAMP: &str = "TIMESTAMP";
const CONTEXT: &str = "ContextTokens";
const GENERATED: &str = "GeneratedTokens";

/// Streams arrivals from an Azure LLM 2023 CSV file.
pub struct AzureLlmReader {
    path: PathBuf,
    records: csv::StringRecordsIntoIter<BufReader<crate::per_request::CrlfAsLf<BufReader<File>>>>,
    columns: [usize; 3],
    first: Option<NaiveDateTime>,
    previous: Nanos,
    rows: u64,
    done: bool,
}

impl AzureLlmReader {
    /// Opens `path` and checks its header.
    pub fn open(path: &Path) -> Result<AzureLlmReader, TraceError> {
        let io = |source| TraceError::Io { path: path.to_path_buf(), source };
        let file = File::open(path).map_err(io)?;
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(true)
            .from_reader(BufReader::new(crate::per_request::CrlfAsLf::new(BufReader::new(file))));
        let header = reader.headers().map_err(|e| csv_error(path, e))?.clone();
        let find = |name: &str| {
            header.iter().position(|h| h.trim() == name).ok_or_else(|| TraceError::MissingColumn {
                path: path.to_path_buf(),
                column: name.to_string(),
                found: header.iter().collect::<Vec<_>>().join(","),
            })
        };
        let columns = [find(TIMESTAMP)?, find(CONTEXT)?, find(GENERATED)?];
        Ok(AzureLlmReader {
            path: path.to_path_buf(),
            records: reader.into_records(),
            columns,
            first: None,
            previous: Nanos::ZERO,
            rows: 0,
            done: false,
        })
    }

    fn parse(&mut self, record: &csv::StringRecord) -> Result<Arrival, TraceError> {
        let line = record.position().map_or(0, |p| p.line());
        let field = |i: usize, name: &str| {
            record.get(self.columns[i]).ok_or_else(|| TraceError::Malformed {
                path: self.path.clone(),
                line,
                column: name.to_string(),
                reason: "missing field".into(),
            })
        };
        let malformed = |column: &str, reason: String| TraceError::Malformed {
            path: self.path.clone(),
            line,
            column: column.to_string(),
            reason,
        };
        let ts_text = field(0, TIMESTAMP)?;
        let ts = NaiveDateTime::parse_from_str(ts_text.trim(), "%Y-%m-%d %H:%M:%S%.f").map_err(|e| {
            malformed(TIMESTAMP, format!("'{ts_text}' is not a timestamp like 2023-11-16 18:15:46.68: {e}"))
        })?;
        let tokens = |i: usize, name: &str| -> Result<u32, TraceError> {
            let text = field(i, name)?;
            text.trim().parse::<u32>().map_err(|e| malformed(name, format!("'{text}' is not a token count: {e}")))
        };
        let input_size = tokens(1, CONTEXT)?;
        let output_size = tokens(2, GENERATED)?;
        let first = *self.first.get_or_insert(ts);
        let delta = ts.signed_duration_since(first);
        let ns = delta.num_nanoseconds().ok_or_else(|| malformed(TIMESTAMP, "too far from the first row".into()))?;
        if ns < 0 || Nanos(ns as u64) < self.previous {
            let back = self.previous.0 as f64 - ns as f64;
            return Err(TraceError::Unsorted { path: self.path.clone(), line, back_ms: back / 1e6 });
        }
        let time = Nanos(ns as u64);
        self.previous = time;
        Ok(Arrival { time, model: 0, input_size, output_size })
    }
}

impl Iterator for AzureLlmReader {
    type Item = Result<Arrival, TraceError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let item = match self.records.next() {
            None if self.rows == 0 => Err(TraceError::Empty { path: self.path.clone() }),
            None => {
                self.done = true;
                return None;
            }
            Some(Err(e)) => Err(csv_error(&self.path, e)),
            Some(Ok(record)) => self.parse(&record),
        };
        self.rows += 1;
        if item.is_err() {
            self.done = true;
        }
        Some(item)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn write(content: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(content.as_bytes()).unwrap();
        f
    }

    fn read(content: &str) -> Vec<Result<Arrival, TraceError>> {
        let f = write(content);
        AzureLlmReader::open(f.path()).unwrap().collect()
    }

    #[test]
    fn offsets_from_the_first_row() {
        let rows = read(
            "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.5,374,44\n2023-11-16 18:15:47.75,10,2\n",
        );
        let a: Vec<Arrival> = rows.into_iter().map(Result::unwrap).collect();
        assert_eq!(a[0].time, Nanos::ZERO);
        assert_eq!(a[1].time, Nanos::from_millis(1250));
        assert_eq!((a[1].input_size, a[1].output_size), (10, 2));
    }

    #[test]
    fn bad_rows_name_line_and_column() {
        let rows =
            read("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.5,374,44\n2023-11-16 18:15:47,x,2\n");
        let e = rows[1].as_ref().unwrap_err().to_string();
        assert!(e.contains(":3: column 'ContextTokens'"), "{e}");
        let rows = read("TIMESTAMP,ContextTokens,GeneratedTokens\nyesterday,1,2\n");
        let e = rows[0].as_ref().unwrap_err().to_string();
        assert!(e.contains(":2: column 'TIMESTAMP'"), "{e}");
    }

    #[test]
    fn line_numbers_count_crlf_lines_too() {
        // The shipped Azure LLM traces end their lines with CRLF: a bad row on line 4 is reported as line 4.
        let rows = read(
            "TIMESTAMP,ContextTokens,GeneratedTokens\r\n2023-11-16 18:15:46,1,1\r\n2023-11-16 18:15:47,1,1\r\n\
             2023-11-16 18:15:48,x,1\r\n",
        );
        let e = rows[2].as_ref().unwrap_err().to_string();
        assert!(e.contains(":4: column 'ContextTokens'"), "{e}");
    }

    #[test]
    fn unsorted_and_empty_and_missing_columns_are_errors() {
        let rows = read("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:47,1,1\n2023-11-16 18:15:46,1,1\n");
        assert!(matches!(rows[1], Err(TraceError::Unsorted { line: 3, .. })), "{:?}", rows[1]);
        let rows = read("TIMESTAMP,ContextTokens,GeneratedTokens\n");
        assert!(matches!(rows[0], Err(TraceError::Empty { .. })));
        let f = write("TIMESTAMP,Tokens\n2023-11-16 18:15:47,1\n");
        let e = AzureLlmReader::open(f.path()).err().unwrap().to_string();
        assert!(e.contains("missing column 'ContextTokens'"), "{e}");
    }
}
