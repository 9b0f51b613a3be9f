//! The Azure Functions trace 2019 ("Serverless in the Wild", ATC'20): invocation counts per minute per
//! function, `HashOwner,HashApp,HashFunction,Trigger,<minute>,<minute>,...`, with optional per-function
//! execution-time percentiles (`durations`) and per-app (or per-function) memory percentiles (`memory`).
//!
//! The reader keeps the per-minute counts of the *selected* functions (4 bytes per function-minute: the
//! trace's own size, never per-request arrivals), minute by minute, and makes arrivals one minute at a time,
//! spreading each minute's count by the chosen [`Spread`]. Each selected function becomes one model id,
//! numbered in the order of the selection (file order; by volume, largest first, for a top-N selection).

use std::collections::HashMap;
use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use rand::distr::Uniform;
use rand::{RngExt, SeedableRng};
use rand_distr::Exp1;
use rand_pcg::Pcg64Mcg;
use serde::Deserialize;

use crate::counts::{MAX_PER_BIN, Spread};
use crate::per_request::csv_error;
use crate::{Arrival, Nanos, TraceError};

const KEY_COLUMNS: [&str; 4] = ["HashOwner", "HashApp", "HashFunction", "Trigger"];
const MINUTE: Nanos = Nanos::from_secs(60);

/// Which functions of the trace to replay. Filters apply in order: trigger, ids, then top N by volume.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Selection {
    /// Keep functions with one of these triggers (`http`, `timer`, `queue`, `event`, `storage`,
    /// `orchestration`, `others`); empty keeps all.
    pub triggers: Vec<String>,
    /// Keep these functions, by `HashFunction` (a unique prefix of at least 8 characters is enough); empty
    /// keeps all. Every id must match.
    pub ids: Vec<String>,
    /// Keep only the N functions with the most invocations.
    pub top: Option<usize>,
}

/// The percentiles of execution time the Azure Functions 2019 `durations` file gives, in its column order
/// (`percentile_Average_0` … `percentile_Average_100`).
pub const DURATION_PERCENTILES: [f64; 7] = [0.0, 1.0, 25.0, 50.0, 75.0, 99.0, 100.0];

/// `1 / (DURATION_PERCENTILES[i + 1] - DURATION_PERCENTILES[i])`.
const INVERSE_WIDTHS: [f64; DURATION_PERCENTILES.len() - 1] = {
    let pc = DURATION_PERCENTILES;
    let mut out = [0.0; DURATION_PERCENTILES.len() - 1];
    let mut i = 0;
    while i < out.len() {
        out[i] = 1.0 / (pc[i + 1] - pc[i]);
        i += 1;
    }
    out
};

/// Execution-time percentiles of one function, ms (the trace's `durations` file). Plain values (one cache
/// line), so the simulator keeps a copy beside its function's other per-request state.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DurationPercentiles {
    /// Mean execution time.
    pub average_ms: f64,
    /// The execution time at each of [`DURATION_PERCENTILES`].
    pub ms: [f64; 7],
}

impl DurationPercentiles {
    /// All zeros (a placeholder where a function has no execution times).
    pub const ZERO: DurationPercentiles = DurationPercentiles { average_ms: 0.0, ms: [0.0; 7] };

    /// The execution time at quantile `q` in [0, 1], interpolated linearly between the trace's percentiles:
    /// feed it a uniform random number to sample a duration that follows the trace.
    #[inline]
    pub fn at_quantile(&self, q: f64) -> f64 {
        let p = q.clamp(0.0, 1.0) * 100.0;
        let (pc, ms) = (&DURATION_PERCENTILES, &self.ms);
        // The segment [pc[i - 1], pc[i]] holding p (the first whose upper end reaches it): the percentiles
        // increase, so it is one past the count of upper ends below p, counted without a branch (a uniform
        // q picks a random segment, which a search would mispredict).
        let below: usize = pc[1..pc.len() - 1].iter().map(|&upper| usize::from(upper < p)).sum();
        let i = below + 1;
        let (p0, v0, v1) = (pc[i - 1], ms[i - 1], ms[i]);
        // Over the segment's width, as a multiplication by its reciprocal (a division per sample showed; the
        // result can differ from dividing in its last bit).
        v0 + (v1 - v0) * (p - p0) * INVERSE_WIDTHS[i - 1]
    }
}

/// One selected function.
#[derive(Clone, Debug, PartialEq)]
pub struct FunctionInfo {
    /// The model id its arrivals carry.
    pub model: u32,
    /// `HashOwner`.
    pub owner: String,
    /// `HashApp`.
    pub app: String,
    /// `HashFunction`.
    pub function: String,
    /// `Trigger`.
    pub trigger: String,
    /// Invocations over the whole trace.
    pub invocations: u64,
    /// Its execution-time percentiles, when a durations file was given and lists it.
    pub duration: Option<DurationPercentiles>,
    /// Its app's (or its own) mean allocated memory, MB, when a memory file was given and lists it.
    pub memory_mb: Option<f64>,
}

/// A whole Azure Functions 2019 source, as a scenario names it.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AzureFunctionsSpec {
    /// The invocations-per-minute CSV.
    pub path: PathBuf,
    /// How each minute's count is spread over the minute (required: there is no neutral choice).
    pub spread: Spread,
    /// Which functions to replay.
    #[serde(default)]
    pub select: Selection,
    /// The per-function durations CSV, to attach execution times.
    #[serde(default)]
    pub durations: Option<PathBuf>,
    /// The memory CSV, to attach memory sizes.
    #[serde(default)]
    pub memory: Option<PathBuf>,
}

/// Streams arrivals from an Azure Functions 2019 invocations file.
pub struct AzureFunctionsReader {
    functions: Vec<FunctionInfo>,
    /// Minute `m`'s counts, by model, are `counts[m]`: a minute reads one run of memory, not a cell of every
    /// function's row (the profile showed those cache misses).
    counts: Vec<Vec<u32>>,
    /// Bits of a buffered arrival's key that hold its model id (enough for the selection, at most
    /// `MODEL_BITS`).
    model_bits: u32,
    minutes: usize,
    spread: Spread,
    rng: Pcg64Mcg,
    minute: usize,
    /// The current minute's arrivals as keys: offset into the minute (ns) above `model_bits` bits of model
    /// id, in time order. The uniform and even spreads make them out of order and one sort of `u64`s orders
    /// them by time, then model (the profile showed the tuple sort, then the comparison sort, then an LSD
    /// radix sort); the Poisson spread makes them in order (`poisson_minute`).
    buffer: Vec<u64>,
    sorter: crate::keysort::KeySorter,
    /// The Poisson spread's urn: the current minute's invocations, each its function's model id (4 bytes an
    /// invocation, where the other spreads' sort takes 12).
    urn: Vec<u32>,
    buffer_start: Nanos,
    next: usize,
}

/// Arrival times of one model in the minute from `start`, appended to `out` as sort keys (see
/// `AzureFunctionsReader::buffer`).
struct SortKeys<'a> {
    out: &'a mut Vec<u64>,
    start: Nanos,
    model: u64,
    bits: u32,
}

impl Extend<Nanos> for SortKeys<'_> {
    fn extend<I: IntoIterator<Item = Nanos>>(&mut self, times: I) {
        let (start, model, bits) = (self.start.0, self.model, self.bits);
        self.out.extend(times.into_iter().map(|t| ((t.0 - start) << bits) | model));
    }
}

/// Bits of a buffered arrival's key that hold its model id; a minute's offset in ns (< 6·10^10 < 2^36) fits
/// above them.
const MODEL_BITS: u32 = 28;

impl AzureFunctionsReader {
    /// Reads and selects functions from `spec` (paths relative to `base`); `seed` drives the spreading.
    pub fn open(spec: &AzureFunctionsSpec, base: &Path, seed: u64) -> Result<AzureFunctionsReader, TraceError> {
        let path = base.join(&spec.path);
        let (mut functions, counts, minutes) = read_invocations(&path, &spec.select)?;
        if let Some(d) = &spec.durations {
            attach_durations(&base.join(d), &mut functions)?;
        }
        if let Some(m) = &spec.memory {
            attach_memory(&base.join(m), &mut functions)?;
        }
        if functions.is_empty() {
            return Err(TraceError::InvalidParameters(format!(
                "{}: no function matches the selection {:?}",
                path.display(),
                spec.select
            )));
        }
        if functions.len() >= 1 << MODEL_BITS {
            return Err(TraceError::InvalidParameters(format!(
                "{}: {} functions selected; at most {} can be replayed at once",
                path.display(),
                functions.len(),
                (1u64 << MODEL_BITS) - 1
            )));
        }
        for (i, f) in functions.iter_mut().enumerate() {
            f.model = i as u32;
        }
        let model_bits = (u32::BITS - (functions.len() as u32).leading_zeros()).max(1);
        Ok(AzureFunctionsReader {
            functions,
            counts,
            model_bits,
            minutes,
            spread: spec.spread,
            rng: Pcg64Mcg::seed_from_u64(seed),
            minute: 0,
            buffer: Vec::new(),
            sorter: Default::default(),
            urn: Vec::new(),
            buffer_start: Nanos::ZERO,
            next: 0,
        })
    }

    /// The selected functions, indexed by model id.
    pub fn functions(&self) -> &[FunctionInfo] {
        &self.functions
    }

    /// How many minutes the trace covers.
    pub fn minutes(&self) -> usize {
        self.minutes
    }

    /// Total invocations of the selected functions, as counted in the file.
    pub fn invocations(&self) -> u64 {
        self.functions.iter().map(|f| f.invocations).sum()
    }

    fn fill(&mut self) {
        self.buffer.clear();
        self.next = 0;
        let start = Nanos(MINUTE.0 * self.minute as u64);
        self.buffer_start = start;
        let bits = self.model_bits;
        let counts = &self.counts[self.minute];
        self.minute += 1;
        if self.spread == Spread::Poisson {
            poisson_minute(counts, bits, &mut self.rng, &mut self.urn, &mut self.buffer);
            return;
        }
        for (model, &count) in counts.iter().enumerate() {
            let mut keys = SortKeys { out: &mut self.buffer, start, model: model as u64, bits };
            self.spread.place(start, MINUTE, count, &mut self.rng, &mut keys);
        }
        self.sorter.sort(&mut self.buffer, MINUTE.0 << bits);
    }

    /// Whether an arrival is buffered, making the next minute's when the current one is used up: false
    /// once the trace has ended.
    fn buffered(&mut self) -> bool {
        while self.next == self.buffer.len() {
            if self.minute == self.minutes {
                return false;
            }
            self.fill();
        }
        true
    }

    /// Appends up to `max` arrivals to `out` (those `next` would give); whether the trace has ended.
    pub(crate) fn read_into(&mut self, out: &mut Vec<Arrival>, max: usize) -> bool {
        let wanted = out.len() + max;
        while out.len() < wanted {
            if !self.buffered() {
                return true;
            }
            let n = (wanted - out.len()).min(self.buffer.len() - self.next);
            let (start, bits) = (self.buffer_start, self.model_bits);
            out.extend(self.buffer[self.next..self.next + n].iter().map(|&key| arrival_of(key, start, bits)));
            self.next += n;
        }
        false
    }
}

/// A minute's arrivals under the Poisson spread, as keys in time order (see `AzureFunctionsReader::buffer`):
/// one Poisson process at the minute's total rate, each arrival's function drawn in proportion to its count.
///
/// This is the process the spread defines, each function's own Poisson process at its count's rate, all
/// merged: the superposition of independent Poisson processes is the Poisson process of their summed rate,
/// and each of its points comes from process `i` with probability `λᵢ / Σλ`, independently (Kingman, *Poisson
/// Processes*, 1993, §2.2 and §5.1). Made this way the arrivals come out in order, from exponential gaps: no
/// sort, and one gap and one draw from an urn of the minute's invocations (`urn`: each function's id as many
/// times as its count) per arrival, where the merged processes took a Poisson draw per function, a uniform draw
/// per arrival and a share of a sort (together 14% of the function workload's instructions).
fn poisson_minute(counts: &[u32], bits: u32, rng: &mut Pcg64Mcg, urn: &mut Vec<u32>, out: &mut Vec<u64>) {
    urn.clear();
    for (model, &n) in counts.iter().enumerate() {
        urn.extend(std::iter::repeat_n(model as u32, n as usize));
    }
    // At most `MAX_PER_BIN` (< 2^32) invocations in a minute (`read_invocations`): a `u32` draw picks one.
    let Some(pick) = u32::try_from(urn.len()).ok().and_then(|n| Uniform::new(0, n).ok()) else {
        return;
    };
    let (mean_gap_ns, end) = (MINUTE.0 as f64 / urn.len() as f64, MINUTE.0 as f64);
    let mut t = 0.0;
    loop {
        let gap: f64 = rng.sample(Exp1);
        t += gap * mean_gap_ns;
        if t >= end {
            return;
        }
        let model = urn[rng.sample(pick) as usize];
        // `t` is in [0, 6·10^10): through `i64`, one conversion instruction (to `u64`, a dozen).
        out.push(((t as i64 as u64) << bits) | u64::from(model));
    }
}

/// The arrival a minute's sort key stands for (see `AzureFunctionsReader::buffer`).
#[inline]
fn arrival_of(key: u64, minute_start: Nanos, model_bits: u32) -> Arrival {
    Arrival {
        time: Nanos(minute_start.0 + (key >> model_bits)),
        model: (key & ((1 << model_bits) - 1)) as u32,
        input_size: 0,
        output_size: 0,
    }
}

impl Iterator for AzureFunctionsReader {
    type Item = Result<Arrival, TraceError>;

    fn next(&mut self) -> Option<Self::Item> {
        if !self.buffered() {
            return None;
        }
        let arrival = arrival_of(self.buffer[self.next], self.buffer_start, self.model_bits);
        self.next += 1;
        Some(Ok(arrival))
    }
}

fn open_csv(path: &Path) -> Result<csv::Reader<BufReader<crate::per_request::CrlfAsLf<BufReader<File>>>>, TraceError> {
    let file = File::open(path).map_err(|source| TraceError::Io { path: path.to_path_buf(), source })?;
    Ok(csv::ReaderBuilder::new()
        .has_headers(true)
        .from_reader(BufReader::new(crate::per_request::CrlfAsLf::new(BufReader::new(file)))))
}

fn header_index(path: &Path, header: &csv::StringRecord, name: &str) -> Result<usize, TraceError> {
    header.iter().position(|h| h.trim() == name).ok_or_else(|| TraceError::MissingColumn {
        path: path.to_path_buf(),
        column: name.to_string(),
        found: abbreviated(header),
    })
}

fn abbreviated(header: &csv::StringRecord) -> String {
    let all: Vec<&str> = header.iter().collect();
    if all.len() <= 12 { all.join(",") } else { format!("{},... ({} columns)", all[..8].join(","), all.len()) }
}

/// The selected functions, each minute's counts by function (in the functions' order), and the minutes.
type Invocations = (Vec<FunctionInfo>, Vec<Vec<u32>>, usize);

fn read_invocations(path: &Path, select: &Selection) -> Result<Invocations, TraceError> {
    let mut reader = open_csv(path)?;
    let header = reader.headers().map_err(|e| csv_error(path, e))?.clone();
    for (i, name) in KEY_COLUMNS.iter().enumerate() {
        if header.get(i).map(str::trim) != Some(name) {
            return Err(TraceError::MissingColumn {
                path: path.to_path_buf(),
                column: format!("{name} (as column {})", i + 1),
                found: abbreviated(&header),
            });
        }
    }
    // Minute columns: consecutive integers.
    let mut previous: Option<i64> = None;
    for (i, name) in header.iter().enumerate().skip(4) {
        let minute = name.trim().parse::<i64>().map_err(|_| TraceError::Malformed {
            path: path.to_path_buf(),
            line: 1,
            column: name.to_string(),
            reason: format!("column {} of the header should be a minute number", i + 1),
        })?;
        if previous.is_some_and(|p| minute != p + 1) {
            return Err(TraceError::Malformed {
                path: path.to_path_buf(),
                line: 1,
                column: name.to_string(),
                reason: format!("minute columns must be consecutive; {minute} follows {}", previous.unwrap_or(0)),
            });
        }
        previous = Some(minute);
    }
    let minutes = header.len() - 4;
    if minutes == 0 {
        return Err(TraceError::MissingColumn {
            path: path.to_path_buf(),
            column: "a minute column".into(),
            found: abbreviated(&header),
        });
    }
    let mut found_ids = vec![false; select.ids.len()];
    let mut functions = Vec::new();
    // Minute-major from the start (a kept row's counts go to their minutes' columns), so the counts are
    // held once: the reader walks a minute at a time.
    let mut columns: Vec<Vec<u32>> = vec![Vec::new(); minutes];
    let mut row = Vec::with_capacity(minutes);
    // Rows as bytes: a day's file is 1,440 counts per function, and checking each row as UTF-8 and each count
    // as a signed integer took longer than the rest of reading it (the profile of `hyscale bench`); a count
    // is read straight from its digits, and only the key columns are text.
    let mut record = csv::ByteRecord::new();
    while reader.read_byte_record(&mut record).map_err(|e| csv_error(path, e))? {
        let line = record.position().map_or(0, |p| p.line());
        row.clear();
        let mut total = 0u64;
        for (i, bytes) in record.iter().enumerate().skip(4) {
            let n = count(bytes).map_err(|reason| TraceError::Malformed {
                path: path.to_path_buf(),
                line,
                column: header[i].to_string(),
                reason,
            })?;
            total += n as u64;
            row.push(n);
        }
        let key = |i: usize| -> Result<String, TraceError> {
            let text = std::str::from_utf8(&record[i]).map_err(|_| TraceError::Malformed {
                path: path.to_path_buf(),
                line,
                column: header[i].to_string(),
                reason: "not valid UTF-8".into(),
            })?;
            Ok(text.trim().to_string())
        };
        let trigger = key(3)?;
        if !select.triggers.is_empty() && !select.triggers.iter().any(|t| t.eq_ignore_ascii_case(&trigger)) {
            continue;
        }
        let function = key(2)?;
        if !select.ids.is_empty() {
            let Some(k) = select.ids.iter().position(|id| id.len() >= 8 && function.starts_with(id.as_str())) else {
                continue;
            };
            found_ids[k] = true;
        }
        functions.push(FunctionInfo {
            model: 0,
            owner: key(0)?,
            app: key(1)?,
            function,
            trigger,
            invocations: total,
            duration: None,
            memory_mb: None,
        });
        for (column, &n) in columns.iter_mut().zip(&row) {
            column.push(n);
        }
    }
    if let Some(k) = found_ids.iter().position(|f| !f) {
        let id = &select.ids[k];
        let why = if id.len() < 8 { " (ids need at least 8 characters)" } else { "" };
        return Err(TraceError::InvalidParameters(format!(
            "{}: no function with id '{id}'{why} (after the trigger filter)",
            path.display()
        )));
    }
    if let Some(n) = select.top {
        let mut order: Vec<usize> = (0..functions.len()).collect();
        order.sort_by(|&a, &b| functions[b].invocations.cmp(&functions[a].invocations).then(a.cmp(&b)));
        order.truncate(n);
        let mut f: Vec<Option<FunctionInfo>> = functions.into_iter().map(Some).collect();
        functions = order.iter().filter_map(|&i| f[i].take()).collect();
        for column in &mut columns {
            *column = order.iter().map(|&i| column[i]).collect();
        }
    }
    columns.iter_mut().for_each(Vec::shrink_to_fit);
    // A minute's arrivals are made and sorted together: a count far beyond any real trace's would take more
    // memory than the machine has (an abort, not an error).
    for (m, column) in columns.iter().enumerate() {
        let total: u64 = column.iter().map(|&n| u64::from(n)).sum();
        if total > MAX_PER_BIN {
            return Err(TraceError::InvalidParameters(format!(
                "{}: minute column '{}': the selected functions' counts add up to {total} invocations; at most \
                 {MAX_PER_BIN} can be replayed in one minute (a minute's arrivals are buffered and sorted together, about 24 bytes each)",
                path.display(),
                header[m + 4].trim()
            )));
        }
    }
    Ok((functions, columns, minutes))
}

/// A minute's count, from its cell: digits, maybe padded with spaces; the reason it is not one otherwise.
fn count(cell: &[u8]) -> Result<u32, String> {
    let digits = cell.trim_ascii();
    // Up to nine digits cannot overflow a u32: no check per digit on the common path.
    if !digits.is_empty() && digits.len() <= 9 && digits.iter().all(u8::is_ascii_digit) {
        return Ok(digits.iter().fold(0, |n, d| n * 10 + u32::from(d - b'0')));
    }
    // Otherwise as the text parse it replaces: trimmed of any whitespace (not only ASCII's), then signed.
    let text = String::from_utf8_lossy(cell);
    let text = text.trim();
    let n = text.parse::<i64>().map_err(|_| format!("'{text}' is not a count"))?;
    u32::try_from(n).map_err(|_| format!("count {n} is out of range (counts are 0 to 4294967295)"))
}

fn number(path: &Path, record: &csv::StringRecord, header: &csv::StringRecord, i: usize) -> Result<f64, TraceError> {
    let text = record.get(i).unwrap_or("").trim();
    text.parse::<f64>().ok().filter(|x| x.is_finite() && *x >= 0.0).ok_or_else(|| TraceError::Malformed {
        path: path.to_path_buf(),
        line: record.position().map_or(0, |p| p.line()),
        column: header.get(i).unwrap_or("?").to_string(),
        reason: format!("'{text}' is not a non-negative number"),
    })
}

fn attach_durations(path: &Path, functions: &mut [FunctionInfo]) -> Result<(), TraceError> {
    let mut reader = open_csv(path)?;
    let header = reader.headers().map_err(|e| csv_error(path, e))?.clone();
    let owner = header_index(path, &header, "HashOwner")?;
    let app = header_index(path, &header, "HashApp")?;
    let function = header_index(path, &header, "HashFunction")?;
    let average = header_index(path, &header, "Average")?;
    let mut pcts = [0usize; 7];
    for (col, p) in pcts.iter_mut().zip(DURATION_PERCENTILES) {
        *col = header_index(path, &header, &format!("percentile_Average_{p}"))?;
    }
    let mut by_key: HashMap<(String, String, String), usize> = HashMap::new();
    for (i, f) in functions.iter().enumerate() {
        by_key.insert((f.owner.clone(), f.app.clone(), f.function.clone()), i);
    }
    for record in reader.records() {
        let record = record.map_err(|e| csv_error(path, e))?;
        let key = (record[owner].trim().to_string(), record[app].trim().to_string(), record[function].trim().into());
        let Some(&i) = by_key.get(&key) else { continue };
        let mut ms = [0.0; 7];
        for (v, &col) in ms.iter_mut().zip(&pcts) {
            *v = number(path, &record, &header, col)?;
        }
        functions[i].duration = Some(DurationPercentiles { average_ms: number(path, &record, &header, average)?, ms });
    }
    Ok(())
}

fn attach_memory(path: &Path, functions: &mut [FunctionInfo]) -> Result<(), TraceError> {
    let mut reader = open_csv(path)?;
    let header = reader.headers().map_err(|e| csv_error(path, e))?.clone();
    let owner = header_index(path, &header, "HashOwner")?;
    let app = header_index(path, &header, "HashApp")?;
    // The published 2019 schema is per app; some samples add HashFunction, which then refines the match.
    let function = header.iter().position(|h| h.trim() == "HashFunction");
    let average = header_index(path, &header, "AverageAllocatedMb")?;
    let mut per_app: HashMap<(String, String), f64> = HashMap::new();
    let mut per_function: HashMap<(String, String, String), f64> = HashMap::new();
    for record in reader.records() {
        let record = record.map_err(|e| csv_error(path, e))?;
        let mb = number(path, &record, &header, average)?;
        let key = (record[owner].trim().to_string(), record[app].trim().to_string());
        if let Some(fc) = function {
            per_function.insert((key.0.clone(), key.1.clone(), record[fc].trim().to_string()), mb);
        }
        per_app.entry(key).or_insert(mb);
    }
    for f in functions {
        let exact = per_function.get(&(f.owner.clone(), f.app.clone(), f.function.clone()));
        f.memory_mb = exact.or_else(|| per_app.get(&(f.owner.clone(), f.app.clone()))).copied();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn file(content: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(content.as_bytes()).unwrap();
        f
    }

    const SMALL: &str = "HashOwner,HashApp,HashFunction,Trigger,1,2,3\n\
        o1,a1,f1aaaaaaaa,http,2,0,1\n\
        o1,a1,f2bbbbbbbb,timer,0,5,0\n\
        o2,a2,f3cccccccc,http,1,1,1\n";

    fn spec(f: &tempfile::NamedTempFile, spread: Spread, select: Selection) -> AzureFunctionsSpec {
        AzureFunctionsSpec { path: f.path().to_path_buf(), spread, select, durations: None, memory: None }
    }

    /// The error opening `f` gives, as text.
    fn open_error(f: &tempfile::NamedTempFile, spread: Spread, select: Selection) -> String {
        AzureFunctionsReader::open(&spec(f, spread, select), Path::new(""), 1).err().expect("an error").to_string()
    }

    #[test]
    fn chunks_give_the_arrivals_that_next_gives() {
        // Poisson spreading over three minutes, read one at a time and in chunks of 1, 2, 3 and 64 (through
        // the boxed stream the engine holds): the same arrivals in the same order, and the end reported.
        let f = file(SMALL);
        let one_by_one: Vec<Arrival> =
            AzureFunctionsReader::open(&spec(&f, Spread::Poisson, Selection::default()), Path::new(""), 7)
                .unwrap()
                .map(Result::unwrap)
                .collect();
        assert!(one_by_one.len() > 3, "{one_by_one:?}");
        for chunk in [1, 2, 3, 64] {
            let reader = AzureFunctionsReader::open(&spec(&f, Spread::Poisson, Selection::default()), Path::new(""), 7);
            let mut stream: crate::ArrivalStream = Box::new(reader.unwrap());
            let mut out = Vec::new();
            let ended = loop {
                match crate::read_chunk(&mut stream, &mut out, chunk) {
                    crate::ChunkEnd::Full => assert_eq!(out.len() % chunk, 0),
                    end => break end,
                }
            };
            assert!(matches!(ended, crate::ChunkEnd::Ended), "{ended:?}");
            assert_eq!(out, one_by_one, "chunks of {chunk}");
        }
    }

    #[test]
    fn poisson_spread_is_each_functions_poisson_process() {
        // Two functions invoked 40 and 10 times a minute (a third never) for 300 minutes, spread as Poisson
        // processes: each function's count per minute has mean and variance its count (an exact spread would
        // have variance 0), its arrivals are uniform inside the minute, and the arrivals come in time order.
        const MINUTES: usize = 300;
        let header: Vec<String> = (1..=MINUTES).map(|m| m.to_string()).collect();
        let row = |name: &str, n: u32| format!("o,a,{name},http,{}\n", vec![n.to_string(); MINUTES].join(","));
        let text = format!(
            "HashOwner,HashApp,HashFunction,Trigger,{}\n{}{}{}",
            header.join(","),
            row("f0", 40),
            row("f1", 0),
            row("f2", 10)
        );
        let f = file(&text);
        let arrivals: Vec<Arrival> =
            AzureFunctionsReader::open(&spec(&f, Spread::Poisson, Selection::default()), Path::new(""), 3)
                .unwrap()
                .map(Result::unwrap)
                .collect();
        assert!(arrivals.windows(2).all(|w| w[0].time <= w[1].time), "arrivals out of order");
        assert!(arrivals.iter().all(|a| a.model != 1), "a function with no invocations was invoked");
        for (model, rate) in [(0u32, 40.0), (2, 10.0)] {
            let mut per_minute = vec![0.0f64; MINUTES];
            let mut offset_sum = 0.0;
            for a in arrivals.iter().filter(|a| a.model == model) {
                per_minute[(a.time.0 / MINUTE.0) as usize] += 1.0;
                offset_sum += (a.time.0 % MINUTE.0) as f64 / 1e9;
            }
            let n = per_minute.iter().sum::<f64>();
            let mean = n / MINUTES as f64;
            let var = per_minute.iter().map(|c| (c - mean).powi(2)).sum::<f64>() / (MINUTES - 1) as f64;
            // Mean: five standard errors (sqrt(rate / minutes)). Variance over mean: 1 for a Poisson count, with a
            // standard error of about sqrt(2 / minutes) = 0.08; 0 for an exact spread.
            assert!((mean - rate).abs() < 5.0 * (rate / MINUTES as f64).sqrt(), "model {model}: mean {mean}");
            assert!((0.6..1.4).contains(&(var / mean)), "model {model}: variance {var}, mean {mean}");
            // Offsets uniform over the minute: mean 30 s, standard error 60 / sqrt(12 n).
            let offset_mean = offset_sum / n;
            assert!((offset_mean - 30.0).abs() < 5.0 * 60.0 / (12.0 * n).sqrt(), "model {model}: {offset_mean} s");
        }
    }

    #[test]
    fn counts_per_minute_become_sorted_arrivals() {
        let f = file(SMALL);
        let r = AzureFunctionsReader::open(&spec(&f, Spread::Even, Selection::default()), Path::new(""), 1).unwrap();
        assert_eq!(r.minutes(), 3);
        assert_eq!(r.invocations(), 11);
        let a: Vec<Arrival> = r.map(Result::unwrap).collect();
        assert_eq!(a.len(), 11);
        assert!(a.windows(2).all(|w| w[0].time <= w[1].time));
        // Minute 0: f1 twice (15 s, 45 s), f3 once (30 s).
        let first: Vec<(u64, u32)> = a[..3].iter().map(|a| (a.time.0 / 1_000_000_000, a.model)).collect();
        assert_eq!(first, [(15, 0), (30, 2), (45, 0)]);
    }

    #[test]
    fn selection_by_trigger_id_and_top() {
        let f = file(SMALL);
        let http = Selection { triggers: vec!["HTTP".into()], ..Selection::default() };
        let r = AzureFunctionsReader::open(&spec(&f, Spread::Uniform, http), Path::new(""), 1).unwrap();
        assert_eq!(r.functions().iter().map(|f| f.function.as_str()).collect::<Vec<_>>(), ["f1aaaaaaaa", "f3cccccccc"]);
        let top = Selection { top: Some(1), ..Selection::default() };
        let r = AzureFunctionsReader::open(&spec(&f, Spread::Uniform, top), Path::new(""), 1).unwrap();
        assert_eq!(r.functions()[0].function, "f2bbbbbbbb");
        assert_eq!(r.count(), 5);
        let ids = Selection { ids: vec!["f3cccccc".into()], ..Selection::default() };
        let r = AzureFunctionsReader::open(&spec(&f, Spread::Uniform, ids), Path::new(""), 1).unwrap();
        assert_eq!(r.functions().len(), 1);
        let missing = Selection { ids: vec!["f9zzzzzz".into()], ..Selection::default() };
        let e = AzureFunctionsReader::open(&spec(&f, Spread::Uniform, missing), Path::new(""), 1).err().unwrap();
        assert!(e.to_string().contains("no function with id 'f9zzzzzz'"), "{e}");
    }

    #[test]
    fn a_count_is_read_from_its_digits_as_a_signed_parse_would() {
        for (cell, want) in [
            (&b"0"[..], Ok(0)),
            (b" 42 ", Ok(42)),
            (b"999999999", Ok(999_999_999)),
            (b"4294967295", Ok(u32::MAX)),
            (b"+7", Ok(7)),
            (b"007", Ok(7)),
            ("\u{a0}12\u{b}".as_bytes(), Ok(12)),
        ] {
            assert_eq!(count(cell), want, "{:?}", String::from_utf8_lossy(cell));
        }
        assert_eq!(count(b"4294967296"), Err("count 4294967296 is out of range (counts are 0 to 4294967295)".into()));
        assert_eq!(count(b"-1"), Err("count -1 is out of range (counts are 0 to 4294967295)".into()));
        for bad in [&b""[..], b" ", b"1.5", b"1e3", b"x", b"\xff"] {
            assert!(count(bad).unwrap_err().ends_with("is not a count"), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn a_key_column_that_is_not_utf8_is_named() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(b"HashOwner,HashApp,HashFunction,Trigger,1\no,a\xff,f,http,1\n").unwrap();
        let msg = open_error(&f, Spread::Even, Selection::default());
        assert!(msg.contains(":2: column 'HashApp': not valid UTF-8"), "{msg}");
    }

    #[test]
    fn a_minute_over_the_bound_is_refused_at_open_naming_it() {
        // Two functions whose counts in minute 2 add up past the bound, each count a valid u32.
        let half = MAX_PER_BIN / 2 + 1;
        let f =
            file(&format!("HashOwner,HashApp,HashFunction,Trigger,1,2\no,a,f1,http,1,{half}\no,a,f2,http,0,{half}\n"));
        let msg = open_error(&f, Spread::Uniform, Selection::default());
        assert!(
            msg.contains(&format!("minute column '2': the selected functions' counts add up to {}", 2 * half)),
            "{msg}"
        );
        // Selecting one of them brings the minute under it.
        let one = Selection { top: Some(1), ..Selection::default() };
        assert!(AzureFunctionsReader::open(&spec(&f, Spread::Uniform, one), Path::new(""), 1).is_ok());
    }

    #[test]
    fn bad_counts_and_headers_are_named() {
        let f = file("HashOwner,HashApp,HashFunction,Trigger,1,2\no,a,f,http,1,-2\n");
        let e = AzureFunctionsReader::open(&spec(&f, Spread::Even, Selection::default()), Path::new(""), 1).err();
        let msg = e.unwrap().to_string();
        assert!(msg.contains(":2: column '2': count -2 is out of range"), "{msg}");
        let f = file("HashOwner,HashApp,HashFunction,Trigger,1,2\no,a,f,http,1,x\n");
        let msg = open_error(&f, Spread::Even, Selection::default());
        assert!(msg.contains(":2: column '2': 'x' is not a count"), "{msg}");
        let f = file("Owner,HashApp,HashFunction,Trigger,1\n");
        let msg = open_error(&f, Spread::Even, Selection::default());
        assert!(msg.contains("missing column 'HashOwner (as column 1)'"), "{msg}");
        let f = file("HashOwner,HashApp,HashFunction,Trigger,1,3\n");
        let msg = open_error(&f, Spread::Even, Selection::default());
        assert!(msg.contains("minute columns must be consecutive"), "{msg}");
    }

    #[test]
    fn duration_quantiles_interpolate() {
        let d = DurationPercentiles {
            average_ms: 10.0,
            // At percentiles 0, 1, 25, 50, 75, 99, 100.
            ms: [1.0, 2.0, 5.0, 8.0, 12.0, 40.0, 90.0],
        };
        assert_eq!(d.at_quantile(0.0), 1.0);
        assert_eq!(d.at_quantile(-3.0), 1.0);
        // Half-way from percentile 0 to 1.
        assert!((d.at_quantile(0.005) - 1.5).abs() < 1e-12);
        assert_eq!(d.at_quantile(0.01), 2.0);
        assert_eq!(d.at_quantile(0.5), 8.0);
        assert!((d.at_quantile(0.625) - 10.0).abs() < 1e-9);
        // 99.5: half-way from 40 to 90.
        assert!((d.at_quantile(0.995) - 65.0).abs() < 1e-9);
        assert_eq!(d.at_quantile(1.0), 90.0);
        assert_eq!(d.at_quantile(7.0), 90.0);
    }
}
