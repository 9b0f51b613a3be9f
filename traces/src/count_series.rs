//! Count series: one integer per fixed bin (the NASA 1995 trace: requests per second), read from a plain
//! text file or straight from a `.tbz2` / `.tar.bz2` archive, one bin at a time.
//!
//! **Outage rule.** Logging outages appear as long runs of zero bins (the NASA trace has one of 135,851 s,
//! about 37.7 h, on 1–3 August 1995, while its next longest quiet run is 2,732 s). A run of zero bins at least
//! [`OutageRule::min_zero_s`] long (default 3,600 s) that ends with traffic is an outage. With
//! [`OutageMode::Cut`] (the default) the outage is cut out of the timeline: later arrivals move earlier by
//! its length, so a policy is not scored on a silence that was a broken logger. With [`OutageMode::Keep`] the
//! zeros are replayed as they are. Quiet runs shorter than the threshold are always kept.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use rand::SeedableRng;
use rand_pcg::Pcg64Mcg;
use serde::Deserialize;

use crate::counts::Spread;
use crate::{Arrival, Nanos, TraceError};

/// What to do with outages.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum OutageMode {
    /// Remove outages from the timeline.
    #[default]
    Cut,
    /// Replay outages as silence.
    Keep,
}

/// When a run of zero bins is an outage, and what to do with it.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct OutageRule {
    /// Shortest run of zero bins, seconds, that counts as an outage.
    pub min_zero_s: f64,
    /// Cut or keep.
    pub mode: OutageMode,
}

impl Default for OutageRule {
    fn default() -> OutageRule {
        OutageRule { min_zero_s: 3600.0, mode: OutageMode::Cut }
    }
}

/// A count series source, as a scenario names it.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CountSeriesSpec {
    /// A text file of whitespace-separated counts, or a bzip2 tar archive holding one.
    pub path: PathBuf,
    /// The archive member to read (default: the first regular file).
    #[serde(default)]
    pub member: Option<String>,
    /// Bin length, seconds.
    #[serde(default = "one")]
    pub bin_s: f64,
    /// How each bin's count is spread over the bin.
    pub spread: Spread,
    /// The outage rule.
    #[serde(default)]
    pub outages: OutageRule,
}

fn one() -> f64 {
    1.0
}

/// One outage found while reading.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outage {
    /// Index of its first zero bin.
    pub first_bin: u64,
    /// Its length in bins.
    pub bins: u64,
}

/// Streams arrivals from a count series.
pub struct CountSeriesReader {
    name: PathBuf,
    input: Box<dyn BufRead + Send>,
    bin: Nanos,
    spread: Spread,
    rule: OutageRule,
    min_zero_bins: u64,
    rng: Pcg64Mcg,
    bins: u64,
    total: u64,
    zero_run: u64,
    shift: Nanos,
    outages: Vec<Outage>,
    times: Vec<Nanos>,
    next: usize,
    token: Vec<u8>,
    done: bool,
}

impl CountSeriesReader {
    /// Opens the source of `spec` (relative paths against `base`); `seed` drives the spreading.
    pub fn open(spec: &CountSeriesSpec, base: &Path, seed: u64) -> Result<CountSeriesReader, TraceError> {
        if !(spec.bin_s.is_finite() && spec.bin_s > 0.0) {
            return Err(TraceError::InvalidParameters(format!("bin_s must be positive, got {}", spec.bin_s)));
        }
        if !(spec.outages.min_zero_s.is_finite() && spec.outages.min_zero_s > 0.0) {
            return Err(TraceError::InvalidParameters(format!(
                "outages.min_zero_s must be positive, got {}",
                spec.outages.min_zero_s
            )));
        }
        let path = base.join(&spec.path);
        let (name, input) = open_input(&path, spec.member.as_deref())?;
        Ok(CountSeriesReader {
            name,
            input,
            bin: Nanos::from_secs_f64(spec.bin_s),
            spread: spec.spread,
            rule: spec.outages,
            min_zero_bins: (spec.outages.min_zero_s / spec.bin_s).ceil() as u64,
            rng: Pcg64Mcg::seed_from_u64(seed),
            bins: 0,
            total: 0,
            zero_run: 0,
            shift: Nanos::ZERO,
            outages: Vec::new(),
            times: Vec::new(),
            next: 0,
            token: Vec::new(),
            done: false,
        })
    }

    /// Bins read so far (all of them once the stream has ended).
    pub fn bins(&self) -> u64 {
        self.bins
    }

    /// Requests counted in the bins read so far.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Outages found so far.
    pub fn outages(&self) -> &[Outage] {
        &self.outages
    }

    /// Reads the next whitespace-separated token into `self.token`; false at the end of input.
    fn read_token(&mut self) -> Result<bool, TraceError> {
        self.token.clear();
        loop {
            let buf = self.input.fill_buf().map_err(|source| TraceError::Io { path: self.name.clone(), source })?;
            if buf.is_empty() {
                return Ok(!self.token.is_empty());
            }
            let mut used = 0;
            let mut complete = false;
            for &b in buf {
                used += 1;
                if b.is_ascii_whitespace() {
                    if !self.token.is_empty() {
                        complete = true;
                        break;
                    }
                } else {
                    self.token.push(b);
                }
            }
            self.input.consume(used);
            if complete {
                return Ok(true);
            }
        }
    }

    fn parse_count(&self) -> Result<u32, TraceError> {
        let text = String::from_utf8_lossy(&self.token);
        let malformed = |reason: String| TraceError::Malformed {
            path: self.name.clone(),
            line: 0,
            column: format!("bin {}", self.bins),
            reason,
        };
        match text.parse::<i64>() {
            Ok(n) if n < 0 => Err(malformed(format!("negative count {n}"))),
            Ok(n) if n as u64 > crate::counts::MAX_PER_BIN => Err(malformed(format!(
                "count {n} is too large: at most {} requests can be replayed in one bin (a bin's arrivals are \
                 buffered together, 8 bytes each)",
                crate::counts::MAX_PER_BIN
            ))),
            Ok(n) => u32::try_from(n).map_err(|_| malformed(format!("count {n} is too large"))),
            Err(_) => Err(malformed(format!("'{text}' is not a count"))),
        }
    }

    fn next_bin(&mut self) -> Result<bool, TraceError> {
        loop {
            if !self.read_token()? {
                if self.bins == 0 {
                    return Err(TraceError::Empty { path: self.name.clone() });
                }
                return Ok(false);
            }
            let count = self.parse_count()?;
            let index = self.bins;
            self.bins += 1;
            if count == 0 {
                self.zero_run += 1;
                if self.spread != Spread::Poisson {
                    continue;
                }
            } else if self.zero_run > 0 {
                if self.zero_run >= self.min_zero_bins {
                    self.outages.push(Outage { first_bin: index - self.zero_run, bins: self.zero_run });
                    if self.rule.mode == OutageMode::Cut {
                        self.shift += Nanos(self.bin.0 * self.zero_run);
                    }
                }
                self.zero_run = 0;
            }
            self.total += count as u64;
            let start = Nanos(self.bin.0 * index).saturating_sub(self.shift);
            self.times.clear();
            self.next = 0;
            self.spread.place(start, self.bin, count, &mut self.rng, &mut self.times);
            if !self.times.is_empty() {
                self.times.sort_unstable();
                return Ok(true);
            }
        }
    }
}

impl Iterator for CountSeriesReader {
    type Item = Result<Arrival, TraceError>;

    fn next(&mut self) -> Option<Self::Item> {
        while self.next == self.times.len() {
            if self.done {
                return None;
            }
            match self.next_bin() {
                Ok(true) => {}
                Ok(false) => {
                    self.done = true;
                    return None;
                }
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            }
        }
        let time = self.times[self.next];
        self.next += 1;
        Some(Ok(Arrival { time, model: 0, input_size: 0, output_size: 0 }))
    }
}

/// Opens `path` as text, or, for `.tbz2` / `.tar.bz2`, as the named (or first regular) member of the
/// archive, streamed through the decompressor. Returns a name for error messages and the reader.
fn open_input(path: &Path, member: Option<&str>) -> Result<(PathBuf, Box<dyn BufRead + Send>), TraceError> {
    let io = |source| TraceError::Io { path: path.to_path_buf(), source };
    let file = File::open(path).map_err(io)?;
    let name = path.to_string_lossy();
    if !(name.ends_with(".tbz2") || name.ends_with(".tar.bz2")) {
        return Ok((path.to_path_buf(), Box::new(BufReader::with_capacity(1 << 16, file))));
    }
    let decoder = bzip2::read::BzDecoder::new(BufReader::new(file));
    let mut archive = tar::Archive::new(decoder);
    // The tar entry borrows the archive; walk the headers and hand back a reader that owns everything.
    let entries = archive.entries().map_err(io)?;
    let mut position = None;
    let mut names = Vec::new();
    for (i, entry) in entries.enumerate() {
        let entry = entry.map_err(io)?;
        let entry_name = entry.path().map_err(io)?.to_string_lossy().into_owned();
        if entry.header().entry_type().is_file() {
            if member.is_none_or(|m| m == entry_name) {
                position = Some((i, entry_name));
                break;
            }
            names.push(entry_name);
        }
    }
    let Some((index, entry_name)) = position else {
        return Err(TraceError::InvalidParameters(match member {
            Some(m) => format!("{}: the archive has no member '{m}' (it has: {})", path.display(), names.join(", ")),
            None => format!("{}: the archive holds no regular file", path.display()),
        }));
    };
    let reader = TarMember::open(path, index).map_err(io)?;
    Ok((PathBuf::from(format!("{}:{entry_name}", path.display())), Box::new(BufReader::with_capacity(1 << 16, reader))))
}

/// The bytes of the `index`-th entry of a bzip2 tar archive, read through to it from a fresh decoder.
struct TarMember {
    inner: std::io::Take<bzip2::read::BzDecoder<BufReader<File>>>,
}

impl TarMember {
    fn open(path: &Path, index: usize) -> std::io::Result<TarMember> {
        // Walk the 512-byte headers (parsed by the tar crate) only to skip to the member: the tar crate's
        // entries borrow their archive, so an entry cannot be handed out as an owned reader.
        let mut decoder = bzip2::read::BzDecoder::new(BufReader::new(File::open(path)?));
        let mut header = [0u8; 512];
        let mut i = 0;
        loop {
            decoder.read_exact(&mut header)?;
            let parsed = tar::Header::from_byte_slice(&header);
            let size = parsed.entry_size()?;
            let kind = parsed.entry_type();
            let padded = size.div_ceil(512) * 512;
            if kind.is_file() && i == index {
                return Ok(TarMember { inner: decoder.take(size) });
            }
            // Long-name and pax extension headers describe the next entry; the tar crate does not count them.
            if !(kind.is_gnu_longname() || kind.is_pax_local_extensions()) {
                i += 1;
            }
            std::io::copy(&mut (&mut decoder).take(padded), &mut std::io::sink())?;
        }
    }
}

impl Read for TarMember {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.inner.read(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn spec(path: &Path, spread: Spread, outages: OutageRule) -> CountSeriesSpec {
        CountSeriesSpec { path: path.to_path_buf(), member: None, bin_s: 1.0, spread, outages }
    }

    fn text(content: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(content.as_bytes()).unwrap();
        f
    }

    #[test]
    fn counts_become_arrivals_and_outages_are_cut() {
        let f = text("2 0\n0 0 0 1\t3 ");
        let rule = OutageRule { min_zero_s: 4.0, mode: OutageMode::Cut };
        let mut r = CountSeriesReader::open(&spec(f.path(), Spread::Even, rule), Path::new(""), 1).unwrap();
        let times: Vec<u64> = r.by_ref().map(|a| a.unwrap().time.0 / 1_000_000).collect();
        // Bins 0 (2 requests), 5 (1), 6 (3); bins 1-4 are an outage of 4 s and are cut.
        assert_eq!(times, [250, 750, 1500, 2166, 2500, 2833]);
        assert_eq!((r.bins(), r.total()), (7, 6));
        assert_eq!(r.outages(), [Outage { first_bin: 1, bins: 4 }]);
        let keep = OutageRule { min_zero_s: 4.0, mode: OutageMode::Keep };
        let r = CountSeriesReader::open(&spec(f.path(), Spread::Even, keep), Path::new(""), 1).unwrap();
        let last = r.map(|a| a.unwrap().time).last().unwrap();
        assert_eq!(last.0 / 1_000_000, 6833);
    }

    #[test]
    fn bad_counts_are_named() {
        let f = text("1 2 -3");
        let r = CountSeriesReader::open(&spec(f.path(), Spread::Even, OutageRule::default()), Path::new(""), 1);
        let e = r.unwrap().find_map(Result::err).unwrap().to_string();
        assert!(e.contains("column 'bin 2': negative count -3"), "{e}");
        // A count whose arrivals would not fit in memory (it aborted the process): an error, before any is made.
        let f = text("1 4294967295 2");
        let r = CountSeriesReader::open(&spec(f.path(), Spread::Uniform, OutageRule::default()), Path::new(""), 1);
        let e = r.unwrap().find_map(Result::err).unwrap().to_string();
        assert!(e.contains("column 'bin 1': count 4294967295 is too large: at most 134217728"), "{e}");
        let f = text("  \n");
        let r = CountSeriesReader::open(&spec(f.path(), Spread::Even, OutageRule::default()), Path::new(""), 1);
        assert!(matches!(r.unwrap().next(), Some(Err(TraceError::Empty { .. }))));
    }

    #[test]
    fn reads_a_member_of_a_bzip2_tar() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("counts.tbz2");
        let encoder = bzip2::write::BzEncoder::new(File::create(&path).unwrap(), bzip2::Compression::fast());
        let mut builder = tar::Builder::new(encoder);
        for (name, body) in [("readme.txt", &b"not counts"[..]), ("workload.txt", &b"1 0 2"[..])] {
            let mut header = tar::Header::new_gnu();
            header.set_size(body.len() as u64);
            header.set_mode(0o644);
            header.set_cksum();
            builder.append_data(&mut header, name, body).unwrap();
        }
        builder.into_inner().unwrap().finish().unwrap();
        let mut s = spec(&path, Spread::Even, OutageRule::default());
        s.member = Some("workload.txt".into());
        let n = CountSeriesReader::open(&s, Path::new(""), 1).unwrap().count();
        assert_eq!(n, 3);
        s.member = Some("nope".into());
        let e = CountSeriesReader::open(&s, Path::new(""), 1).err().unwrap().to_string();
        assert!(e.contains("no member 'nope' (it has: readme.txt, workload.txt)"), "{e}");
    }
}
