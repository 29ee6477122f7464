//! Plots (feature `plot`): an evaluation's comparison of judges, and one
//! simulated rollout's timeline. PNG or SVG by the file's extension.
//!
//! Drawn with plotters and no system library: PNGs are rasterised with
//! ab_glyph and an embedded DejaVu Sans font (whose metrics also lay out the
//! SVGs' text).

use std::path::Path;

use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;

use crate::evaluate::{Evaluation, PairResult, RollbackMeaning};
use crate::run::Simulation;

/// Why a plot could not be drawn.
#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    /// The file name does not end in `.png` or `.svg`.
    #[error("a plot is a .png or .svg file, not `{0}`")]
    Format(String),
    /// Nothing to draw.
    #[error("nothing to plot: {0}")]
    Empty(&'static str),
    /// Drawing or writing failed.
    #[error("drawing failed: {0}")]
    Draw(String),
}

/// The file formats a plot can be written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// A 2D bitmap.
    Png,
    /// Scalable vector graphics.
    Svg,
}

impl Format {
    /// The format named by `path`'s extension.
    ///
    /// # Errors
    /// [`PlotError::Format`] for any other extension.
    pub fn of(path: &Path) -> Result<Format, PlotError> {
        match path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            Some("png") => Ok(Format::Png),
            Some("svg") => Ok(Format::Svg),
            _ => Err(PlotError::Format(path.display().to_string())),
        }
    }
}

fn draw_err<E: std::fmt::Display>(e: E) -> PlotError {
    PlotError::Draw(e.to_string())
}

fn register_font() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // The embedded font is a valid TrueType file: it cannot fail, and if
        // it did, text would be missing from PNGs, nothing worse.
        let _ = plotters::style::register_font(
            "sans-serif",
            FontStyle::Normal,
            dejavu::sans::regular(),
        );
    });
}

/// Draws `f` on a `w` × `h` canvas written to `path` in its format.
fn with_canvas(
    path: &Path,
    w: u32,
    h: u32,
    f: impl FnOnce(&DrawingArea<BitMapBackend<'_>, Shift>) -> Result<(), PlotError>,
    g: impl FnOnce(&DrawingArea<SVGBackend<'_>, Shift>) -> Result<(), PlotError>,
) -> Result<(), PlotError> {
    // Both backends lay text out with the font's metrics.
    register_font();
    match Format::of(path)? {
        Format::Png => {
            let root = BitMapBackend::new(path, (w, h)).into_drawing_area();
            root.fill(&WHITE).map_err(draw_err)?;
            f(&root)?;
            root.present().map_err(draw_err)
        }
        Format::Svg => {
            let root = SVGBackend::new(path, (w, h)).into_drawing_area();
            root.fill(&WHITE).map_err(draw_err)?;
            g(&root)?;
            root.present().map_err(draw_err)
        }
    }
}

/// Distinct colours for judges, in order.
fn colour(i: usize) -> RGBColor {
    const C: [RGBColor; 6] = [
        RGBColor(31, 119, 180),
        RGBColor(255, 127, 14),
        RGBColor(44, 160, 44),
        RGBColor(214, 39, 40),
        RGBColor(148, 103, 189),
        RGBColor(140, 86, 75),
    ];
    C[i % C.len()]
}

/// Draws an evaluation: one row per scenario; on the left the rollback rate
/// of each judge with its 95 % interval (false rollbacks on a healthy
/// scenario, detections otherwise), on the right the median canary requests
/// served before a rollback with its interval.
///
/// # Errors
/// [`PlotError`] for a bad extension, an empty evaluation or a failed write.
pub fn evaluation(e: &Evaluation, path: &Path) -> Result<(), PlotError> {
    let mut scenarios: Vec<&str> = Vec::new();
    for r in &e.results {
        if !scenarios.contains(&r.scenario.as_str()) {
            scenarios.push(&r.scenario);
        }
    }
    if scenarios.is_empty() {
        return Err(PlotError::Empty("the evaluation has no results"));
    }
    let h = 60 + 260 * scenarios.len() as u32;
    with_canvas(
        path,
        1200,
        h,
        |root| draw_evaluation(root, e, &scenarios),
        |root| draw_evaluation(root, e, &scenarios),
    )
}

fn draw_evaluation<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    e: &Evaluation,
    scenarios: &[&str],
) -> Result<(), PlotError> {
    let title = format!(
        "canary evaluate: policy `{}`, {} runs per pair, seed {} (bars: 95 % intervals)",
        e.policy, e.runs, e.seed
    );
    let (top, body) = root.split_vertically(60);
    top.draw(&Text::new(
        title,
        (20, 10),
        ("sans-serif", 22).into_font().color(&BLACK),
    ))
    .map_err(draw_err)?;
    if let Some(r) = e.results.iter().find(|r| r.note.is_some()) {
        let note = format!("* {}: {}", r.judge, r.note.as_deref().unwrap_or_default());
        top.draw(&Text::new(
            shorten(&note, 150),
            (20, 38),
            ("sans-serif", 13).into_font().color(&BLACK),
        ))
        .map_err(draw_err)?;
    }
    let rows = body.split_evenly((scenarios.len(), 2));
    for (i, scenario) in scenarios.iter().enumerate() {
        let results: Vec<&PairResult> = e
            .results
            .iter()
            .filter(|r| r.scenario == *scenario)
            .collect();
        rate_panel(&rows[2 * i], scenario, &results)?;
        exposure_panel(&rows[2 * i + 1], scenario, &results)?;
    }
    Ok(())
}

fn judge_axis(results: &[&PairResult]) -> impl Fn(&f64) -> String {
    // A judge with a caveat (ztest: one look only) is starred, as in the table.
    let names: Vec<String> = results
        .iter()
        .map(|r| {
            if r.note.is_some() {
                format!("{}*", r.judge)
            } else {
                r.judge.clone()
            }
        })
        .collect();
    move |x: &f64| {
        let i = x.round();
        if (x - i).abs() < 1e-6 && i >= 0.0 && (i as usize) < names.len() {
            names[i as usize].clone()
        } else {
            String::new()
        }
    }
}

fn rate_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    scenario: &str,
    results: &[&PairResult],
) -> Result<(), PlotError> {
    let healthy = results
        .first()
        .is_some_and(|r| r.rolled_back_means == RollbackMeaning::FalseRollbackRate);
    let what = if healthy {
        "false-rollback rate"
    } else {
        "detection rate (rolled back)"
    };
    let mut chart = judge_bar_chart(
        area,
        format!("{scenario}: {what}"),
        results,
        100.0,
        55,
        "% of runs",
    )?;
    for (i, r) in results.iter().enumerate() {
        let x = i as f64;
        let value = 100.0 * r.rolled_back;
        let ci = r.rolled_back_ci.map(|y| 100.0 * y);
        bar_with_interval(
            &mut chart,
            i,
            value,
            ci,
            format!("{value:.1}%"),
            value.clamp(8.0, 92.0),
        )?;
        for y in r.rolled_back_ci {
            chart
                .draw_series(std::iter::once(PathElement::new(
                    vec![(x - 0.1, 100.0 * y), (x + 0.1, 100.0 * y)],
                    BLACK.stroke_width(2),
                )))
                .map_err(draw_err)?;
        }
    }
    Ok(())
}

fn exposure_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    scenario: &str,
    results: &[&PairResult],
) -> Result<(), PlotError> {
    let top = results
        .iter()
        .filter_map(|r| r.exposure_requests.median_ci.map(|c| c[1]))
        .fold(1.0f64, f64::max)
        * 1.15;
    let mut chart = judge_bar_chart(
        area,
        format!("{scenario}: canary requests served before rollback (median)"),
        results,
        top,
        70,
        "requests",
    )?;
    for (i, r) in results.iter().enumerate() {
        let x = i as f64;
        let (Some(m), Some(ci)) = (r.exposure_requests.median, r.exposure_requests.median_ci)
        else {
            chart
                .draw_series(std::iter::once(Text::new(
                    "no rollback",
                    (x - 0.25, top * 0.05),
                    ("sans-serif", 14).into_font(),
                )))
                .map_err(draw_err)?;
            continue;
        };
        bar_with_interval(&mut chart, i, m, ci, format!("{m:.0}"), m.max(top * 0.08))?;
    }
    Ok(())
}

/// A judge-by-judge bar chart: judges on x, the value on y.
type BarChart<'a, DB> = ChartContext<'a, DB, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// A chart with one bar slot per judge on x and `0..top` on y, its mesh drawn.
fn judge_bar_chart<'a, DB: DrawingBackend>(
    area: &'a DrawingArea<DB, Shift>,
    caption: String,
    results: &[&PairResult],
    top: f64,
    y_label_area: u32,
    y_desc: &str,
) -> Result<BarChart<'a, DB>, PlotError> {
    let n = results.len();
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 18))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(y_label_area)
        .build_cartesian_2d(-0.5f64..(n as f64 - 0.5), 0f64..top)
        .map_err(draw_err)?;
    let fmt = judge_axis(results);
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(n.max(2) * 2 + 1)
        .x_label_formatter(&fmt)
        .y_desc(y_desc)
        .draw()
        .map_err(draw_err)?;
    Ok(chart)
}

/// Judge `i`'s bar up to `value`, its interval as a whisker, and `label`
/// beside it at height `label_y`.
fn bar_with_interval<DB: DrawingBackend>(
    chart: &mut BarChart<'_, DB>,
    i: usize,
    value: f64,
    ci: [f64; 2],
    label: String,
    label_y: f64,
) -> Result<(), PlotError> {
    let x = i as f64;
    chart
        .draw_series(std::iter::once(Rectangle::new(
            [(x - 0.3, 0.0), (x + 0.3, value)],
            colour(i).mix(0.6).filled(),
        )))
        .map_err(draw_err)?;
    chart
        .draw_series(std::iter::once(PathElement::new(
            vec![(x, ci[0]), (x, ci[1])],
            BLACK.stroke_width(2),
        )))
        .map_err(draw_err)?;
    chart
        .draw_series(std::iter::once(Text::new(
            label,
            (x + 0.12, label_y),
            ("sans-serif", 14).into_font(),
        )))
        .map_err(draw_err)?;
    Ok(())
}

/// Draws one rollout's timeline (it needs `SimOptions::timeline`): the
/// canary's weight, the error rates and the median latencies of both
/// versions per tick, with every decision marked.
///
/// # Errors
/// [`PlotError`] for a bad extension, an empty timeline or a failed write.
pub fn timeline(sim: &Simulation, path: &Path) -> Result<(), PlotError> {
    if sim.timeline.is_empty() {
        return Err(PlotError::Empty(
            "the simulation has no timeline (run it with the timeline on)",
        ));
    }
    with_canvas(
        path,
        1200,
        900,
        |root| draw_timeline(root, sim),
        |root| draw_timeline(root, sim),
    )
}

fn draw_timeline<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    sim: &Simulation,
) -> Result<(), PlotError> {
    let t_end = sim
        .timeline
        .last()
        .map_or(1.0, |t| t.t)
        .max(sim.report.elapsed_seconds)
        .max(1.0)
        * 1.06;
    let r = &sim.report;
    let title = format!(
        "canary simulate: scenario `{}`, judge {}, seed {}: {}",
        sim.scenario, r.judge, sim.seed, r.phase,
    );
    let (top, body) = root.split_vertically(50);
    top.draw(&Text::new(
        title,
        (20, 6),
        ("sans-serif", 20).into_font().color(&BLACK),
    ))
    .map_err(draw_err)?;
    if !r.rollback_reason.is_empty() {
        // The reason on a line of its own, cut to what the width holds.
        top.draw(&Text::new(
            shorten(&r.rollback_reason, 150),
            (20, 30),
            ("sans-serif", 13).into_font().color(&BLACK),
        ))
        .map_err(draw_err)?;
    }
    let panels = body.split_evenly((3, 1));
    let ticks = &sim.timeline;
    let t0 = |i: usize| if i == 0 { 0.0 } else { ticks[i - 1].t };

    // Weight, as a step function.
    let mut chart = ChartBuilder::on(&panels[0])
        .caption("canary weight (%)", ("sans-serif", 16))
        .margin(8)
        .x_label_area_size(25)
        .y_label_area_size(55)
        .build_cartesian_2d(0f64..t_end, 0f64..105f64)
        .map_err(draw_err)?;
    chart
        .configure_mesh()
        .y_desc("%")
        .draw()
        .map_err(draw_err)?;
    let mut steps = Vec::with_capacity(2 * ticks.len());
    for (i, k) in ticks.iter().enumerate() {
        steps.push((t0(i), k.weight));
        steps.push((k.t, k.weight));
    }
    chart
        .draw_series(LineSeries::new(steps, colour(0).stroke_width(2)))
        .map_err(draw_err)?
        .label("canary weight")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour(0)));
    mark_decisions(&mut chart, sim, 105.0)?;

    // Error rates per tick.
    let rate = |s: &canary_core::VersionSummary| s.error_rate.map(|r| 100.0 * r);
    let top_rate = ticks
        .iter()
        .flat_map(|k| [rate(&k.baseline), rate(&k.canary)])
        .flatten()
        .fold(1.0f64, f64::max)
        * 1.1;
    let mut chart = ChartBuilder::on(&panels[1])
        .caption("error rate per tick (%)", ("sans-serif", 16))
        .margin(8)
        .x_label_area_size(25)
        .y_label_area_size(55)
        .build_cartesian_2d(0f64..t_end, 0f64..top_rate)
        .map_err(draw_err)?;
    chart
        .configure_mesh()
        .y_desc("%")
        .draw()
        .map_err(draw_err)?;
    two_versions(&mut chart, ticks, rate)?;
    mark_decisions(&mut chart, sim, top_rate)?;

    // Median latency per tick.
    let lat = |s: &canary_core::VersionSummary| s.latency_p50_ms;
    let top_lat = ticks
        .iter()
        .flat_map(|k| [lat(&k.baseline), lat(&k.canary)])
        .flatten()
        .fold(1.0f64, f64::max)
        * 1.1;
    let mut chart = ChartBuilder::on(&panels[2])
        .caption(
            "median latency per tick (ms); x: simulated seconds",
            ("sans-serif", 16),
        )
        .margin(8)
        .x_label_area_size(25)
        .y_label_area_size(55)
        .build_cartesian_2d(0f64..t_end, 0f64..top_lat)
        .map_err(draw_err)?;
    chart
        .configure_mesh()
        .y_desc("ms")
        .draw()
        .map_err(draw_err)?;
    two_versions(&mut chart, ticks, lat)?;
    mark_decisions(&mut chart, sim, top_lat)?;
    Ok(())
}

type Chart<'a, DB> = ChartContext<
    'a,
    DB,
    Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>,
>;

fn two_versions<'a, DB: DrawingBackend + 'a>(
    chart: &mut Chart<'a, DB>,
    ticks: &[crate::run::TickRecord],
    f: impl Fn(&canary_core::VersionSummary) -> Option<f64>,
) -> Result<(), PlotError> {
    let base: Vec<(f64, f64)> = ticks
        .iter()
        .filter_map(|k| f(&k.baseline).map(|v| (k.t, v)))
        .collect();
    let canary: Vec<(f64, f64)> = ticks
        .iter()
        .filter_map(|k| f(&k.canary).map(|v| (k.t, v)))
        .collect();
    let blue = colour(0);
    let orange = colour(1);
    chart
        .draw_series(LineSeries::new(base, blue.stroke_width(2)))
        .map_err(draw_err)?
        .label("baseline (stable)")
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], blue.stroke_width(2)));
    chart
        .draw_series(LineSeries::new(canary, orange.stroke_width(2)))
        .map_err(draw_err)?
        .label("canary")
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], orange.stroke_width(2)));
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(draw_err)
}

/// Vertical lines at each decision: green when a stage passed, red at a
/// rollback, grey otherwise; labelled with the action.
fn mark_decisions<'a, DB: DrawingBackend + 'a>(
    chart: &mut Chart<'a, DB>,
    sim: &Simulation,
    top: f64,
) -> Result<(), PlotError> {
    use canary_core::Action;
    for d in &sim.report.decisions {
        let (c, label) = match d.action {
            Action::Start => continue,
            Action::Advance | Action::Succeed | Action::Promote | Action::PromoteFull => (
                RGBColor(0, 150, 0),
                format!("{:?}", d.action).to_lowercase(),
            ),
            Action::Rollback | Action::Abort => (RED, "rollback".to_string()),
            Action::RollbackStep => (RED, "step down".to_string()),
            Action::Pause | Action::Resume | Action::AwaitGate => (
                RGBColor(120, 120, 120),
                format!("{:?}", d.action).to_lowercase(),
            ),
        };
        let x = d.at_seconds;
        chart
            .draw_series(std::iter::once(PathElement::new(
                vec![(x, 0.0), (x, top)],
                c.stroke_width(2),
            )))
            .map_err(draw_err)?;
        chart
            .draw_series(std::iter::once(Text::new(
                label,
                (x, top * 0.97),
                ("sans-serif", 13).into_font().color(&c),
            )))
            .map_err(draw_err)?;
    }
    Ok(())
}

fn shorten(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(n - 1).collect::<String>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_follows_the_extension() {
        assert_eq!(Format::of(Path::new("a.png")).unwrap(), Format::Png);
        assert_eq!(Format::of(Path::new("a.SVG")).unwrap(), Format::Svg);
        assert!(matches!(
            Format::of(Path::new("a.jpg")),
            Err(PlotError::Format(_))
        ));
        assert!(Format::of(Path::new("noext")).is_err());
    }
}
