//! `hyscale plot`: a report's pictures, as SVG and PNG (plotters), without Jupyter.
//!
//! For reports (`hyscale simulate --out`, `hyscale replay --out`) it draws the latency CDF of all of them
//! on one chart (overlaid, so a simulated and a live report compare at a glance), the cost of each by kind,
//! and each one's timeline: arrivals, completions and refusals per second above, instances by kind and state
//! below (VMs provisioning, ready and draining; function sandboxes cold-starting, idle and busy). Given a
//! `fidelity.json` (`hyscale fidelity`), it draws those for every policy's simulated and live pair.
//!
//! Text is set in DejaVu Sans, shipped in `src/fonts/` (its licence beside it), so the pictures look the same
//! on a machine without fonts.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use hyscale_policies::fsd::FsdRow;
use hyscale_policies::report::{Report, TimelineRow};
use plotters::coord::Shift;
use plotters::prelude::*;

use crate::BadInput;

#[derive(Args)]
pub struct PlotArgs {
    /// Reports (`hyscale simulate --out`, `hyscale replay --out`) or a `fidelity.json`.
    #[arg(required = true)]
    reports: Vec<PathBuf>,
    /// Folder for the pictures (SVG and PNG of each).
    #[arg(long)]
    out: PathBuf,
}

const FONT: &[u8] = include_bytes!("fonts/DejaVuSans.ttf");
const SIZE: (u32, u32) = (960, 540);
const COLOURS: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
];

/// One figure of a report, or of a timeline row.
type ReportFigure = fn(&Report) -> f64;
type RowFigure = fn(&TimelineRow) -> f64;

/// A report and the name it is drawn under.
struct Labelled {
    label: String,
    report: Report,
}

pub fn run(args: PlotArgs) -> anyhow::Result<()> {
    plotters::style::register_font("sans-serif", FontStyle::Normal, FONT)
        .map_err(|_| anyhow::anyhow!("the shipped font could not be read"))?;
    let mut groups: Vec<(String, Vec<Labelled>)> = Vec::new();
    for path in &args.reports {
        let text = std::fs::read_to_string(path).map_err(|e| BadInput(format!("{}: {e}", path.display())))?;
        let value: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| BadInput(format!("{}: not JSON: {e}", path.display())))?;
        if value.get("grid_fingerprint").is_some() {
            // A `hyscale sweep` table: every cell's cost against its SLO attainment, coloured by policy.
            let rows: Vec<crate::sweep::Row> = serde_json::from_value(value["rows"].clone())
                .map_err(|e| BadInput(format!("{}: not a hyscale sweep table: {e}", path.display())))?;
            std::fs::create_dir_all(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
            let stem = slug(&path.file_stem().map_or_else(|| "sweep".into(), |s| s.to_string_lossy().into_owned()));
            for w in picture(&args.out, &format!("{stem}-cost-vs-slo"), &Chart::Sweep(&rows))? {
                println!("{}", w.display());
            }
            continue;
        }
        if value.get("fsd").is_some() {
            // A `hyscale fsd --out` table: cost and latency against the parallelism, per channel and mode.
            let rows: Vec<FsdRow> = serde_json::from_value(value["rows"].clone())
                .map_err(|e| BadInput(format!("{}: not a hyscale fsd table: {e}", path.display())))?;
            std::fs::create_dir_all(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
            let stem = slug(&path.file_stem().map_or_else(|| "fsd".into(), |s| s.to_string_lossy().into_owned()));
            for (what, name) in [(FsdFigure::Cost, "cost"), (FsdFigure::Latency, "latency")] {
                for w in picture(&args.out, &format!("{stem}-{name}"), &Chart::Fsd(&rows, what))? {
                    println!("{}", w.display());
                }
            }
            continue;
        }
        if let Some(runs) = value.get("runs").and_then(|r| r.as_array()) {
            // A fidelity.json: each policy's simulated and live reports, side by side.
            for run in runs {
                let policy = run["policy"].as_str().unwrap_or("run").to_string();
                let mut pair = Vec::new();
                for (key, half) in [("sim_report", "sim"), ("live_report", "live")] {
                    let p = run[key]
                        .as_str()
                        .ok_or_else(|| BadInput(format!("{}: run '{policy}' has no {key}", path.display())))?;
                    pair.push(Labelled { label: format!("{policy} {half}"), report: read_report(Path::new(p))? });
                }
                groups.push((policy, pair));
            }
        } else {
            let report: Report = serde_json::from_value(value)
                .map_err(|e| BadInput(format!("{}: not a hyscale report: {e}", path.display())))?;
            let label = path.file_stem().map_or_else(|| "report".into(), |s| s.to_string_lossy().into_owned());
            match groups.iter_mut().find(|(name, _)| name == "reports") {
                Some((_, list)) => list.push(Labelled { label, report }),
                None => groups.push(("reports".into(), vec![Labelled { label, report }])),
            }
        }
    }
    std::fs::create_dir_all(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
    let mut written = Vec::new();
    for (name, reports) in &groups {
        let group = slug(name);
        written.extend(picture(&args.out, &format!("{group}-latency-cdf"), &Chart::Cdf(reports))?);
        written.extend(picture(&args.out, &format!("{group}-cost"), &Chart::Cost(reports))?);
        for r in reports {
            written.extend(picture(&args.out, &format!("{}-timeline", slug(&r.label)), &Chart::Timeline(r))?);
        }
    }
    for w in &written {
        println!("{}", w.display());
    }
    Ok(())
}

fn read_report(path: &Path) -> anyhow::Result<Report> {
    let text = std::fs::read_to_string(path).map_err(|e| BadInput(format!("{}: {e}", path.display())))?;
    Ok(serde_json::from_str(&text).map_err(|e| BadInput(format!("{}: not a hyscale report: {e}", path.display())))?)
}

fn slug(name: &str) -> String {
    name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '-' }).collect()
}

/// The pictures.
enum Chart<'a> {
    Cdf(&'a [Labelled]),
    Cost(&'a [Labelled]),
    Timeline(&'a Labelled),
    Fsd(&'a [FsdRow], FsdFigure),
    Sweep(&'a [crate::sweep::Row]),
}

/// What an FSD picture shows against the parallelism.
#[derive(Clone, Copy)]
enum FsdFigure {
    /// Cost per 1,000 requests.
    Cost,
    /// Median latency.
    Latency,
}

impl Chart<'_> {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), String> {
        match self {
            Chart::Cdf(reports) => cdf(root, reports),
            Chart::Cost(reports) => cost(root, reports),
            Chart::Timeline(r) => timeline(root, r),
            Chart::Fsd(rows, what) => fsd(root, rows, *what),
            Chart::Sweep(rows) => sweep(root, rows),
        }
    }
}

/// Draws one picture twice, as `DIR/NAME.svg` and `DIR/NAME.png`.
fn picture(dir: &Path, name: &str, chart: &Chart) -> anyhow::Result<Vec<PathBuf>> {
    let svg = dir.join(format!("{name}.svg"));
    {
        let root = SVGBackend::new(&svg, SIZE).into_drawing_area();
        chart.draw(&root).map_err(|e| anyhow::anyhow!("drawing {}: {e}", svg.display()))?;
        root.present().map_err(|e| anyhow::anyhow!("writing {}: {e}", svg.display()))?;
    }
    let png = dir.join(format!("{name}.png"));
    let mut pixels = vec![0u8; (SIZE.0 * SIZE.1 * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut pixels, SIZE).into_drawing_area();
        chart.draw(&root).map_err(|e| anyhow::anyhow!("drawing {}: {e}", png.display()))?;
        root.present().map_err(|e| anyhow::anyhow!("drawing {}: {e}", png.display()))?;
    }
    write_png(&png, &pixels)?;
    Ok(vec![svg, png])
}

fn write_png(path: &Path, rgb: &[u8]) -> anyhow::Result<()> {
    let file = std::fs::File::create(path).with_context(|| format!("writing {}", path.display()))?;
    let mut encoder = png::Encoder::new(std::io::BufWriter::new(file), SIZE.0, SIZE.1);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header().with_context(|| format!("writing {}", path.display()))?;
    writer.write_image_data(rgb).with_context(|| format!("writing {}", path.display()))?;
    writer.finish().with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

fn err<E: std::fmt::Display>(e: E) -> String {
    e.to_string()
}

/// Draws a chart's legend at `position`, as every picture here does.
fn legend<'a, DB: DrawingBackend + 'a, CT: plotters::coord::CoordTranslate>(
    chart: &mut ChartContext<'a, DB, CT>,
    position: SeriesLabelPosition,
) -> Result<(), String> {
    chart
        .configure_series_labels()
        .position(position)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(err)
}

/// The latency CDFs of `reports`, overlaid, on a log latency axis.
fn cdf<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, reports: &[Labelled]) -> Result<(), String> {
    root.fill(&WHITE).map_err(err)?;
    let points = |r: &Report| -> Vec<(f64, f64)> {
        r.latency_ms.cdf.iter().map(|&[q, ms]| (ms.max(1e-3), q)).collect::<Vec<_>>()
    };
    let all: Vec<f64> = reports.iter().flat_map(|r| points(&r.report)).map(|(x, _)| x).collect();
    let lo = all.iter().copied().fold(f64::INFINITY, f64::min).min(1.0);
    let hi = all.iter().copied().fold(0.0, f64::max).max(lo * 10.0);
    let mut chart = ChartBuilder::on(root)
        .caption("Latency CDF", ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(44)
        .y_label_area_size(56)
        .build_cartesian_2d((lo * 0.8..hi * 1.25).log_scale(), 0.0..1.0)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("latency (ms, log scale)")
        .y_desc("fraction of completed requests")
        .draw()
        .map_err(err)?;
    for (i, r) in reports.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let slo = r.report.slo.rt_max_ms;
        chart
            .draw_series(LineSeries::new(points(&r.report), colour.stroke_width(2)))
            .map_err(err)?
            .label(format!("{} (p99 {:.1} ms)", r.label, r.report.latency_ms.p99))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2)));
        if i == 0 && slo > lo && slo < hi * 1.25 {
            chart
                .draw_series(LineSeries::new(vec![(slo, 0.0), (slo, 1.0)], RED.stroke_width(1)))
                .map_err(err)?
                .label(format!("SLO {slo} ms"))
                .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED.stroke_width(1)));
        }
    }
    legend(&mut chart, SeriesLabelPosition::LowerRight)
}

/// FSD-Inference: cost per 1,000 requests or median latency against the number of workers, one line per
/// channel and mode (one function, P = 1, starts every line; a VM is a dashed level), log scales.
fn fsd<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, rows: &[FsdRow], what: FsdFigure) -> Result<(), String> {
    root.fill(&WHITE).map_err(err)?;
    let y = |r: &FsdRow| {
        match what {
            FsdFigure::Cost => r.cost_per_1000.total,
            FsdFigure::Latency => r.latency_ms.p50,
        }
        .max(1e-9)
    };
    let functions: Vec<&FsdRow> = rows.iter().filter(|r| r.kind == "functions").collect();
    let max_p = functions.iter().map(|r| r.parallelism).max().unwrap_or(1).max(2) as f64;
    let ys: Vec<f64> = rows.iter().map(y).collect();
    let lo = ys.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = ys.iter().copied().fold(0.0, f64::max).max(lo * 10.0);
    let (caption, desc) = match what {
        FsdFigure::Cost => ("FSD-Inference: cost per 1,000 requests", "$ per 1,000 requests (log scale)"),
        FsdFigure::Latency => ("FSD-Inference: median latency", "p50 latency, ms (log scale)"),
    };
    let mut chart = ChartBuilder::on(root)
        .caption(caption, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(44)
        .y_label_area_size(70)
        .build_cartesian_2d((0.9..max_p * 1.1).log_scale(), (lo * 0.7..hi * 1.4).log_scale())
        .map_err(err)?;
    chart.configure_mesh().x_desc("workers per request, P (log scale)").y_desc(desc).draw().map_err(err)?;
    let mut series: Vec<(String, Vec<(f64, f64)>)> = Vec::new();
    for r in &functions {
        let channels: Vec<&str> = if r.parallelism == 1 { vec!["queue", "object"] } else { vec![r.channel.as_str()] };
        for c in channels {
            let label = format!("{} {c}", r.mode);
            let point = (r.parallelism as f64, y(r));
            match series.iter_mut().find(|(l, _)| *l == label) {
                Some((_, points)) => points.push(point),
                None => series.push((label, vec![point])),
            }
        }
    }
    for (i, (label, mut points)) in series.into_iter().enumerate() {
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
        let colour = COLOURS[i % COLOURS.len()];
        chart
            .draw_series(LineSeries::new(points.clone(), colour.stroke_width(2)))
            .map_err(err)?
            .label(label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2)));
        chart.draw_series(points.iter().map(|&p| Circle::new(p, 4, colour.filled()))).map_err(err)?;
    }
    for r in rows.iter().filter(|r| r.kind != "functions") {
        let level = y(r);
        chart
            .draw_series(DashedLineSeries::new(vec![(0.9, level), (max_p * 1.1, level)], 6, 4, BLACK.stroke_width(1)))
            .map_err(err)?
            .label(format!("{} ({})", r.kind, r.mode))
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK.stroke_width(1)));
    }
    legend(&mut chart, SeriesLabelPosition::UpperLeft)
}

/// A sweep: each cell's cost against its SLO attainment, one colour per policy (the cheapest point meeting
/// the SLO is what a sweep looks for).
fn sweep<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, rows: &[crate::sweep::Row]) -> Result<(), String> {
    root.fill(&WHITE).map_err(err)?;
    let lo = rows.iter().map(|r| r.slo_attainment * 100.0).fold(100.0, f64::min).min(99.0);
    let top = rows.iter().map(|r| r.cost_total).fold(0.0, f64::max).max(1e-9) * 1.1;
    let mut chart = ChartBuilder::on(root)
        .caption("Sweep: cost against SLO attainment", ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(44)
        .y_label_area_size(72)
        .build_cartesian_2d((lo - 0.5).max(0.0)..100.5, 0.0..top)
        .map_err(err)?;
    chart.configure_mesh().x_desc("SLO attainment (%)").y_desc("cost ($)").draw().map_err(err)?;
    let mut policies: Vec<&str> = rows.iter().map(|r| r.policy.as_str()).collect();
    policies.sort_unstable();
    policies.dedup();
    for (i, policy) in policies.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let points = rows.iter().filter(|r| r.policy == *policy).map(|r| (r.slo_attainment * 100.0, r.cost_total));
        chart
            .draw_series(points.map(|p| Circle::new(p, 5, colour.filled())))
            .map_err(err)?
            .label(*policy)
            .legend(move |(x, y)| Circle::new((x + 6, y), 5, colour.filled()));
    }
    legend(&mut chart, SeriesLabelPosition::UpperLeft)
}

/// Cost of each report, stacked by kind.
fn cost<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, reports: &[Labelled]) -> Result<(), String> {
    root.fill(&WHITE).map_err(err)?;
    let kinds: [(&str, ReportFigure); 5] = [
        ("VM on demand", |r| r.cost.vm_on_demand),
        ("VM spot", |r| r.cost.vm_spot),
        ("function compute", |r| r.cost.function_compute),
        ("function requests", |r| r.cost.function_requests),
        ("pods", |r| r.cost.pods),
    ];
    let top = reports.iter().map(|r| r.report.cost.total).fold(0.0, f64::max).max(1e-9) * 1.15;
    let n = reports.len() as f64;
    let mut chart = ChartBuilder::on(root)
        .caption("Cost by kind ($)", ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(44)
        .y_label_area_size(72)
        .build_cartesian_2d(0.0..n, 0.0..top)
        .map_err(err)?;
    let labels: Vec<String> = reports.iter().map(|r| r.label.clone()).collect();
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(reports.len().max(1) * 2 + 1)
        .x_label_formatter(&|x| {
            let i = (x - 0.5).round();
            if (x - 0.5 - i).abs() < 1e-6 && i >= 0.0 {
                labels.get(i as usize).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        })
        .y_desc("$")
        .draw()
        .map_err(err)?;
    for (k, (kind, get)) in kinds.iter().enumerate() {
        let colour = COLOURS[k % COLOURS.len()];
        let bars: Vec<Rectangle<(f64, f64)>> = reports
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let below: f64 = kinds[..k].iter().map(|(_, g)| g(&r.report)).sum();
                let x = i as f64;
                Rectangle::new([(x + 0.2, below), (x + 0.8, below + get(&r.report))], colour.filled())
            })
            .collect();
        chart
            .draw_series(bars)
            .map_err(err)?
            .label(*kind)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], colour.filled()));
    }
    legend(&mut chart, SeriesLabelPosition::UpperRight)
}

/// One report's timeline: requests per second above, instances below.
fn timeline<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, r: &Labelled) -> Result<(), String> {
    root.fill(&WHITE).map_err(err)?;
    let rows = &r.report.timeline;
    let (upper, lower) = root.split_vertically(SIZE.1 / 2);
    let end = rows.last().map_or(1.0, |row| row.t_s).max(1.0);
    let interval = match rows.as_slice() {
        [a, b, ..] => (b.t_s - a.t_s).max(1e-9),
        [a] => a.t_s.max(1e-9),
        [] => 1.0,
    };
    let requests: [(&str, RowFigure); 4] = [
        ("arrivals", |w| w.arrivals as f64),
        ("completed", |w| w.completed as f64),
        ("within SLO", |w| w.fulfilled as f64),
        ("rejected + dropped", |w| (w.rejected + w.dropped) as f64),
    ];
    let instances: [(&str, RowFigure); 6] = [
        ("VMs provisioning", |w| f64::from(w.vm_provisioning)),
        ("VMs ready", |w| f64::from(w.vm_ready_on_demand + w.vm_ready_spot)),
        ("VMs draining", |w| f64::from(w.vm_draining)),
        ("sandboxes cold-starting", |w| f64::from(w.fn_cold_starting)),
        ("sandboxes idle", |w| f64::from(w.fn_idle)),
        ("sandboxes busy", |w| f64::from(w.fn_busy)),
    ];
    let title = format!("{}: requests per second", r.label);
    panel(&upper, &title, "per second", (end, interval), &requests, rows, 1.0 / interval)?;
    panel(&lower, "instances (at the end of each interval)", "instances", (end, interval), &instances, rows, 1.0)
}

fn panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    title: &str,
    y_desc: &str,
    (end, interval): (f64, f64),
    series: &[(&str, RowFigure)],
    rows: &[TimelineRow],
    scale: f64,
) -> Result<(), String> {
    let top =
        series.iter().flat_map(|(_, get)| rows.iter().map(move |w| get(w) * scale)).fold(0.0, f64::max).max(1.0) * 1.15;
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 18))
        .margin(8)
        .x_label_area_size(36)
        .y_label_area_size(56)
        .build_cartesian_2d(0.0..end, 0.0..top)
        .map_err(err)?;
    chart.configure_mesh().x_desc("time (s)").y_desc(y_desc).draw().map_err(err)?;
    for (i, (name, get)) in series.iter().enumerate() {
        if rows.iter().all(|w| get(w) == 0.0) {
            continue;
        }
        let colour = COLOURS[i % COLOURS.len()];
        chart
            .draw_series(LineSeries::new(
                // Steps: each row holds over its interval.
                rows.iter().flat_map(|w| [((w.t_s - interval).max(0.0), get(w) * scale), (w.t_s, get(w) * scale)]),
                colour.stroke_width(2),
            ))
            .map_err(err)?
            .label(*name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2)));
    }
    legend(&mut chart, SeriesLabelPosition::UpperRight)
}
