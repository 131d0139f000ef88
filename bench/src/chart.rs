//! SVG charts (plotters, no system fonts needed): latency percentiles, throughput bars,
//! timelines (ops and p99 per 100 ms — the availability view for fault runs) and knee curves.

use std::path::Path;

use anyhow::anyhow;
use plotters::prelude::*;

use crate::load::Knee;
use crate::record::TimelinePoint;

const COLORS: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(23, 190, 207),
];

fn color(i: usize) -> RGBColor {
    COLORS[i % COLORS.len()]
}

fn err<E: std::fmt::Display>(e: E) -> anyhow::Error {
    anyhow!("drawing chart: {e}")
}

fn nines(p: f64) -> f64 {
    -(1.0 - p / 100.0).max(1e-6).log10()
}

/// Latency by percentile, one line per series; x is spaced in "nines" (50, 90, 99, 99.9 …).
pub fn percentiles(
    path: &Path,
    title: &str,
    series: &[(String, Vec<(f64, f64)>)],
) -> anyhow::Result<()> {
    let root = SVGBackend::new(path, (900, 520)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let ymax = series
        .iter()
        .flat_map(|(_, c)| c.iter().map(|p| p.1))
        .fold(0.01f64, f64::max)
        * 1.5;
    let ymin = series
        .iter()
        .flat_map(|(_, c)| c.iter().map(|p| p.1))
        .filter(|v| *v > 0.0)
        .fold(ymax, f64::min)
        * 0.7;
    let xmax = series
        .iter()
        .flat_map(|(_, c)| c.iter().map(|p| nines(p.0)))
        .fold(1.0f64, f64::max);
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..xmax, (ymin.max(0.001)..ymax).log_scale())
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("percentile")
        .y_desc("latency (ms, log)")
        .x_labels(xmax.ceil() as usize + 1)
        .x_label_formatter(&|x| {
            let p = 100.0 * (1.0 - 10f64.powf(-x));
            if p < 99.0 {
                format!("{p:.0}%")
            } else {
                format!(
                    "{}%",
                    format!("{p:.4}")
                        .trim_end_matches('0')
                        .trim_end_matches('.')
                )
            }
        })
        .y_label_formatter(&|y| format!("{y:.2}"))
        .draw()
        .map_err(err)?;
    for (i, (name, curve)) in series.iter().enumerate() {
        let c = color(i);
        chart
            .draw_series(LineSeries::new(
                curve.iter().map(|(p, v)| (nines(*p), v.max(ymin))),
                c.stroke_width(2),
            ))
            .map_err(err)?
            .label(name.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(err)?;
    root.present().map_err(err)?;
    Ok(())
}

/// Grouped bars: one group per `groups` entry, one bar per series (values aligned with groups).
pub fn bars(
    path: &Path,
    title: &str,
    y_desc: &str,
    groups: &[String],
    series: &[(String, Vec<f64>)],
) -> anyhow::Result<()> {
    let root = SVGBackend::new(path, (900, 520)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let ymax = series
        .iter()
        .flat_map(|(_, v)| v.iter().copied())
        .fold(1.0f64, f64::max)
        * 1.15;
    let n = groups.len().max(1) as f64;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(10)
        .y_label_area_size(80)
        .build_cartesian_2d(0f64..n, (-0.08 * ymax)..ymax)
        .map_err(err)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(0)
        .y_desc(y_desc)
        .y_label_formatter(&|y| {
            if *y < 0.0 {
                String::new()
            } else {
                format!("{y:.0}")
            }
        })
        .draw()
        .map_err(err)?;
    let k = series.len().max(1) as f64;
    let width = 0.8 / k;
    for (j, (name, values)) in series.iter().enumerate() {
        let c = color(j);
        chart
            .draw_series(values.iter().enumerate().map(|(i, v)| {
                let x0 = i as f64 + 0.1 + j as f64 * width;
                Rectangle::new([(x0, 0.0), (x0 + width * 0.95, *v)], c.filled())
            }))
            .map_err(err)?
            .label(name.clone())
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 15, y + 5)], c.filled()));
        chart
            .draw_series(values.iter().enumerate().map(|(i, v)| {
                let x = i as f64 + 0.1 + (j as f64 + 0.5) * width;
                Text::new(
                    format!("{v:.0}"),
                    (x, *v),
                    ("sans-serif", 12).into_font().color(&BLACK).pos(
                        plotters::style::text_anchor::Pos::new(
                            plotters::style::text_anchor::HPos::Center,
                            plotters::style::text_anchor::VPos::Bottom,
                        ),
                    ),
                )
            }))
            .map_err(err)?;
    }
    chart
        .draw_series(groups.iter().enumerate().map(|(i, g)| {
            Text::new(
                g.clone(),
                (i as f64 + 0.5, -0.04 * ymax),
                ("sans-serif", 14).into_font().color(&BLACK).pos(
                    plotters::style::text_anchor::Pos::new(
                        plotters::style::text_anchor::HPos::Center,
                        plotters::style::text_anchor::VPos::Center,
                    ),
                ),
            )
        }))
        .map_err(err)?;
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(err)?;
    root.present().map_err(err)?;
    Ok(())
}

/// Throughput (ops/s per 100 ms bucket) over time, one line per series; errors as dots.
pub fn timeline(
    path: &Path,
    title: &str,
    series: &[(String, Vec<TimelinePoint>)],
) -> anyhow::Result<()> {
    let root = SVGBackend::new(path, (900, 420)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let per_s = |p: &TimelinePoint| p.ok as f64 * 10.0;
    let ymax = series
        .iter()
        .flat_map(|(_, t)| t.iter().map(per_s))
        .fold(1.0f64, f64::max)
        * 1.1;
    let xmax = series
        .iter()
        .flat_map(|(_, t)| t.iter().map(|p| p.t_s))
        .fold(0.1f64, f64::max);
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(80)
        .build_cartesian_2d(0f64..xmax, 0f64..ymax)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("seconds")
        .y_desc("ops/s (100 ms buckets)")
        .draw()
        .map_err(err)?;
    for (i, (name, points)) in series.iter().enumerate() {
        let c = color(i);
        chart
            .draw_series(LineSeries::new(
                points.iter().map(|p| (p.t_s, per_s(p))),
                c.stroke_width(1),
            ))
            .map_err(err)?
            .label(name.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
        chart
            .draw_series(
                points
                    .iter()
                    .filter(|p| p.errors > 0)
                    .map(|p| Circle::new((p.t_s, 0.0), 3, RED.filled())),
            )
            .map_err(err)?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(err)?;
    root.present().map_err(err)?;
    Ok(())
}

/// One system's run under a fault, for [`fault_timeline`].
pub struct FaultSeries {
    pub name: String,
    pub timeline: Vec<TimelinePoint>,
    pub injected_at_s: f64,
    pub healed_at_s: Option<f64>,
    pub recovered_at_s: Option<f64>,
}

/// The availability view of fault runs: successes/s (solid) and errors/s (dashed) per 100 ms
/// bucket on top, p99 per bucket below (log scale); per system a solid vertical line where the
/// fault hit, a dotted one where it was healed and a dashed one where service was back.
pub fn fault_timeline(path: &Path, title: &str, series: &[FaultSeries]) -> anyhow::Result<()> {
    let root = SVGBackend::new(path, (1000, 700)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let root = root.titled(title, ("sans-serif", 20)).map_err(err)?;
    let (top, bottom) = root.split_vertically(420);
    let per_s = |n: u64| n as f64 * 10.0;
    let xmax = series
        .iter()
        .flat_map(|s| s.timeline.iter().map(|p| p.t_s))
        .fold(0.1f64, f64::max);
    let ymax = series
        .iter()
        .flat_map(|s| s.timeline.iter().map(|p| per_s(p.ok).max(per_s(p.errors))))
        .fold(1.0f64, f64::max)
        * 1.1;
    let mut chart = ChartBuilder::on(&top)
        .margin(15)
        .x_label_area_size(30)
        .y_label_area_size(80)
        .build_cartesian_2d(0f64..xmax, 0f64..ymax)
        .map_err(err)?;
    chart
        .configure_mesh()
        .y_desc("per second (100 ms buckets)")
        .draw()
        .map_err(err)?;
    let vline = |x: f64, hi: f64| vec![(x, 0.0), (x, hi)];
    for (i, s) in series.iter().enumerate() {
        let c = color(i);
        chart
            .draw_series(LineSeries::new(
                s.timeline.iter().map(|p| (p.t_s, per_s(p.ok))),
                c.stroke_width(2),
            ))
            .map_err(err)?
            .label(format!("{} successes/s", s.name))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
        chart
            .draw_series(DashedLineSeries::new(
                s.timeline.iter().map(|p| (p.t_s, per_s(p.errors))),
                4,
                3,
                c.mix(0.8).stroke_width(1),
            ))
            .map_err(err)?
            .label(format!("{} errors/s", s.name))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.mix(0.8)));
        chart
            .draw_series(LineSeries::new(
                vline(s.injected_at_s, ymax),
                c.stroke_width(3),
            ))
            .map_err(err)?;
        if let Some(h) = s.healed_at_s {
            chart
                .draw_series(DashedLineSeries::new(
                    vline(h, ymax),
                    2,
                    4,
                    c.stroke_width(2),
                ))
                .map_err(err)?;
        }
        if let Some(r) = s.recovered_at_s {
            chart
                .draw_series(DashedLineSeries::new(
                    vline(r, ymax),
                    8,
                    4,
                    c.stroke_width(2),
                ))
                .map_err(err)?;
        }
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(err)?;

    let p99s = || {
        series
            .iter()
            .flat_map(|s| s.timeline.iter().map(|p| p.p99_ms))
            .filter(|v| *v > 0.0)
    };
    let pmax = p99s().fold(1.0f64, f64::max) * 1.5;
    let pmin = p99s().fold(pmax, f64::min).max(0.01) * 0.7;
    let mut lower = ChartBuilder::on(&bottom)
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(80)
        .build_cartesian_2d(0f64..xmax, (pmin..pmax).log_scale())
        .map_err(err)?;
    lower
        .configure_mesh()
        .x_desc("seconds (solid vertical: fault; dotted: healed; dashed: recovered)")
        .y_desc("p99 ms per 100 ms")
        .draw()
        .map_err(err)?;
    for (i, s) in series.iter().enumerate() {
        let c = color(i);
        // Buckets without a success have no p99: the line breaks there.
        let mut run: Vec<(f64, f64)> = Vec::new();
        let mut runs = Vec::new();
        for p in &s.timeline {
            if p.ok > 0 {
                run.push((p.t_s, p.p99_ms.max(pmin)));
            } else if !run.is_empty() {
                runs.push(std::mem::take(&mut run));
            }
        }
        runs.push(run);
        for r in runs.into_iter().filter(|r| !r.is_empty()) {
            lower
                .draw_series(LineSeries::new(r, c.stroke_width(1)))
                .map_err(err)?;
        }
        lower
            .draw_series(LineSeries::new(
                [(s.injected_at_s, pmin), (s.injected_at_s, pmax)],
                c.stroke_width(3),
            ))
            .map_err(err)?;
    }
    root.present().map_err(err)?;
    Ok(())
}

/// p50 and p99 against the offered open-loop rate, with the bound marked.
pub fn knee(path: &Path, title: &str, knee: &Knee) -> anyhow::Result<()> {
    let root = SVGBackend::new(path, (900, 480)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let xmax = knee
        .steps
        .iter()
        .map(|s| s.offered_rate)
        .fold(1.0f64, f64::max)
        * 1.05;
    let ymax = knee
        .steps
        .iter()
        .map(|s| s.p99_ms)
        .fold(knee.p99_bound_ms, f64::max)
        * 1.2;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..xmax, 0f64..ymax)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("offered rate (ops/s)")
        .y_desc("latency (ms)")
        .draw()
        .map_err(err)?;
    for (i, (name, f)) in [
        (
            "p50",
            (|s: &crate::load::KneeStep| s.p50_ms) as fn(&_) -> f64,
        ),
        ("p99", |s| s.p99_ms),
    ]
    .into_iter()
    .enumerate()
    {
        let c = color(i);
        chart
            .draw_series(LineSeries::new(
                knee.steps.iter().map(|s| (s.offered_rate, f(s))),
                c.stroke_width(2),
            ))
            .map_err(err)?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
    }
    chart
        .draw_series(LineSeries::new(
            [(0.0, knee.p99_bound_ms), (xmax, knee.p99_bound_ms)],
            BLACK.stroke_width(1),
        ))
        .map_err(err)?
        .label(format!("bound {} ms", knee.p99_bound_ms))
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK));
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(err)?;
    root.present().map_err(err)?;
    Ok(())
}
