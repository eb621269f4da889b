//! Figures with plotters, each drawn once per backend: PNG and SVG.
//! Text uses DejaVu Sans compiled into the binary, so no system fonts are needed.

use std::path::{Path, PathBuf};
use std::sync::Once;

use anyhow::{anyhow, Result};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters::style::FontStyle;

use super::{Report, Row};

static FONT: Once = Once::new();

fn register_font() {
    FONT.call_once(|| {
        let bytes: &'static [u8] = include_bytes!("../../assets/DejaVuSans.ttf");
        // Only fails on a malformed font, which the tests would catch.
        let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, bytes);
        let _ = plotters::style::register_font("sans-serif", FontStyle::Bold, bytes);
    });
}

fn err<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow!("drawing failed: {e:?}")
}

/// Something drawn the same way on any plotters backend.
trait Figure {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()>;
}

/// Draws `figure` into `<base>.png` and `<base>.svg`; returns both paths.
fn both(base: &Path, size: (u32, u32), figure: &impl Figure) -> Result<Vec<PathBuf>> {
    register_font();
    let png = base.with_extension("png");
    let svg = base.with_extension("svg");
    // Drawn to temporary names, then renamed: no half-written figure is ever seen.
    let tmp = |p: &Path| {
        p.with_file_name(format!(
            ".tmp-{}",
            p.file_name().unwrap_or_default().to_string_lossy()
        ))
    };
    let (tmp_png, tmp_svg) = (tmp(&png), tmp(&svg));
    {
        let root = BitMapBackend::new(&tmp_png, size).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        figure.draw(&root)?;
        root.present().map_err(err)?;
    }
    {
        let root = SVGBackend::new(&tmp_svg, size).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        figure.draw(&root)?;
        root.present().map_err(err)?;
    }
    for path in [&png, &svg] {
        std::fs::rename(tmp(path), path).map_err(|e| anyhow!("writing {}: {e}", path.display()))?;
    }
    Ok(vec![png, svg])
}

/// A short label for a row: its column values.
/// Its column values only (the figure names the columns once, see
/// `columns_title`), so that labels stay short when many keys differ.
pub fn row_label(report: &Report, row: &Row) -> String {
    if report.columns.is_empty() {
        return "all runs".into();
    }
    report
        .columns
        .iter()
        .map(|c| row.values[c].as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// What the values of a row label are: the columns' short titles.
fn columns_title(report: &Report) -> String {
    super::format::titles(&report.columns).join(", ")
}

fn color(i: usize) -> RGBColor {
    const COLORS: [RGBColor; 10] = [
        RGBColor(31, 119, 180),
        RGBColor(255, 127, 14),
        RGBColor(44, 160, 44),
        RGBColor(214, 39, 40),
        RGBColor(148, 103, 189),
        RGBColor(140, 86, 75),
        RGBColor(227, 119, 194),
        RGBColor(127, 127, 127),
        RGBColor(188, 189, 34),
        RGBColor(23, 190, 207),
    ];
    COLORS[i % COLORS.len()]
}

/// Per epoch, the mean over a row's runs of `pick(metrics)`.
fn curve(
    report: &Report,
    row: &Row,
    pick: fn(&crate::metrics::EpochMetrics) -> f64,
) -> Vec<(f64, f64)> {
    let epochs = row
        .members
        .iter()
        .map(|&i| report.runs[i].metrics.len())
        .max()
        .unwrap_or(0);
    (0..epochs)
        .filter_map(|e| {
            let vals: Vec<f64> = row
                .members
                .iter()
                .filter_map(|&i| report.runs[i].metrics.get(e).map(pick))
                .collect();
            (!vals.is_empty())
                .then(|| ((e + 1) as f64, vals.iter().sum::<f64>() / vals.len() as f64))
        })
        .collect()
}

/// Reads one metric from an epoch's row.
type Pick = fn(&crate::metrics::EpochMetrics) -> f64;

/// Rows that get a colour and a legend entry; the rest are thin grey
/// lines, counted in the legend.
const LABELLED: usize = 10;

/// Legend and row labels are cut to this many characters (with "…").
const LABEL_CHARS: usize = 44;

fn shorten(label: &str) -> String {
    if label.chars().count() <= LABEL_CHARS {
        label.to_string()
    } else {
        let mut s: String = label.chars().take(LABEL_CHARS - 1).collect();
        s.push('…');
        s
    }
}

/// Validation accuracy and loss per epoch, one line per row (mean over
/// its runs): the first `LABELLED` rows (in the report's order) in
/// colour, the rest grey. Epochs on whole-number ticks; the y axis
/// zoomed to the data unless `full_range`.
pub fn learning_curves(report: &Report, base: &Path, full_range: bool) -> Result<Vec<PathBuf>> {
    let rows: Vec<&Row> = report.rows.iter().collect();
    both(
        base,
        (1400, 520),
        &Curves {
            report,
            rows,
            full_range,
        },
    )
}

struct Curves<'a> {
    report: &'a Report,
    rows: Vec<&'a Row>,
    full_range: bool,
}

impl Figure for Curves<'_> {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()> {
        // The legend gets its own area right of the plots: it never covers
        // a line, and long labels never run into the plots.
        let (plots, legend) = root.split_horizontally(root.dim_in_pixel().0 as i32 - 360);
        let panels = plots.split_evenly((1, 2));
        let metrics: [(&str, Pick, bool); 2] = [
            ("validation accuracy", |m| m.val_acc, true),
            ("validation loss", |m| m.val_loss, false),
        ];
        for (panel, (title, pick, is_acc)) in panels.iter().zip(metrics) {
            curves_on(self, panel, title, pick, is_acc)?;
        }
        legend_on(self.report, &self.rows, &legend)
    }
}

fn curves_on<DB: DrawingBackend>(
    fig: &Curves,
    panel: &DrawingArea<DB, Shift>,
    title: &str,
    pick: Pick,
    is_acc: bool,
) -> Result<()> {
    let series: Vec<Vec<(i32, f64)>> = fig
        .rows
        .iter()
        .map(|r| {
            curve(fig.report, r, pick)
                .into_iter()
                .map(|(e, v)| (e as i32, v))
                .filter(|(_, v)| v.is_finite())
                .collect()
        })
        .collect();
    let points = series.iter().flatten();
    let max_epoch = points.clone().map(|p| p.0).max().unwrap_or(1).max(2);
    let (lo, hi) = points.fold((f64::MAX, f64::MIN), |(lo, hi), p| {
        (lo.min(p.1), hi.max(p.1))
    });
    let (lo, hi) = if lo > hi { (0.0, 1.0) } else { (lo, hi) };
    let (lo, hi) = if fig.full_range {
        (lo.min(0.0), if is_acc { 1.0 } else { hi * 1.05 })
    } else {
        let pad = ((hi - lo) * 0.06).max(1e-3);
        (lo - pad, hi + pad)
    };
    let mut chart = ChartBuilder::on(panel)
        .caption(title, ("sans-serif", 20))
        .margin(14)
        .x_label_area_size(40)
        .y_label_area_size(64)
        .build_cartesian_2d(1..max_epoch, lo..hi)
        .map_err(err)?;
    chart
        .configure_mesh()
        .light_line_style(WHITE)
        .x_desc("epoch")
        .x_labels((max_epoch as usize).min(12))
        .x_label_formatter(&|x| x.to_string())
        .label_style(("sans-serif", 13))
        .draw()
        .map_err(err)?;
    // Grey first, so the coloured lines stay on top.
    for points in series.iter().skip(LABELLED) {
        chart
            .draw_series(LineSeries::new(
                points.iter().cloned(),
                RGBColor(190, 190, 190).stroke_width(1),
            ))
            .map_err(err)?;
    }
    for (i, points) in series.iter().enumerate().take(LABELLED) {
        chart
            .draw_series(LineSeries::new(
                points.iter().cloned(),
                color(i).stroke_width(2),
            ))
            .map_err(err)?;
    }
    Ok(())
}

/// The legend: one entry per coloured row, then the grey ones counted.
fn legend_on<DB: DrawingBackend>(
    report: &Report,
    rows: &[&Row],
    area: &DrawingArea<DB, Shift>,
) -> Result<()> {
    let style = ("sans-serif", 13).into_font();
    if !report.columns.is_empty() {
        area.draw(&Text::new(
            shorten(&columns_title(report)),
            (8, 22),
            ("sans-serif", 13).into_font().style(FontStyle::Bold),
        ))
        .map_err(err)?;
    }
    let mut y = 48;
    for (i, row) in rows.iter().enumerate().take(LABELLED) {
        area.draw(&PathElement::new(
            vec![(8, y), (30, y)],
            color(i).stroke_width(3),
        ))
        .map_err(err)?;
        area.draw(&Text::new(
            shorten(&row_label(report, row)),
            (38, y - 7),
            style.clone(),
        ))
        .map_err(err)?;
        y += 22;
    }
    if rows.len() > LABELLED {
        area.draw(&PathElement::new(
            vec![(8, y), (30, y)],
            RGBColor(190, 190, 190).stroke_width(2),
        ))
        .map_err(err)?;
        let more = rows.len() - LABELLED;
        area.draw(&Text::new(
            format!("{more} more rows (grey)"),
            (38, y - 7),
            style,
        ))
        .map_err(err)?;
    }
    Ok(())
}

/// Rows drawn at most in the best accuracy figure (the best ones).
const MAX_DOTS: usize = 100;

/// Best validation accuracy per row as a dot (the mean) with a whisker
/// (± the sample std over its runs), one line per row, best first: no
/// bar that starts at an arbitrary baseline.
pub fn best_accuracy(report: &Report, base: &Path) -> Result<Vec<PathBuf>> {
    let rows: Vec<&Row> = report
        .rows
        .iter()
        .filter(|r| r.best_val_acc.mean.is_some())
        .take(MAX_DOTS)
        .collect();
    let height = 110 + 22 * rows.len().max(1) as u32;
    both(base, (1100, height), &Dots { report, rows })
}

struct Dots<'a> {
    report: &'a Report,
    rows: Vec<&'a Row>,
}

impl Figure for Dots<'_> {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()> {
        dots_on(self.report, &self.rows, root)
    }
}

fn dots_on<DB: DrawingBackend>(
    report: &Report,
    rows: &[&Row],
    root: &DrawingArea<DB, Shift>,
) -> Result<()> {
    let values: Vec<(f64, f64)> = rows
        .iter()
        .map(|r| {
            (
                r.best_val_acc.mean.unwrap_or(0.0),
                r.best_val_acc.std.unwrap_or(0.0),
            )
        })
        .collect();
    let lo = values.iter().map(|(m, s)| m - s).fold(1.0, f64::min);
    let hi = values.iter().map(|(m, s)| m + s).fold(0.0, f64::max);
    let pad = ((hi - lo) * 0.1).max(0.002);
    let shown = if report.rows.len() > rows.len() {
        format!(", the best {} of {} rows", rows.len(), report.rows.len())
    } else {
        String::new()
    };
    let rows_are = if report.columns.is_empty() {
        String::new()
    } else {
        format!("; rows: {}", shorten(&columns_title(report)))
    };
    let caption = format!("best validation accuracy (dot: mean, whisker: ± std{shown}{rows_are})");
    let n = rows.len().max(1) as i32;
    let labels: Vec<String> = rows
        .iter()
        .map(|r| shorten(&row_label(report, r)))
        .collect();
    let mut chart = ChartBuilder::on(root)
        .caption(caption, ("sans-serif", 18))
        .margin(16)
        .x_label_area_size(40)
        .y_label_area_size(380)
        .build_cartesian_2d((lo - pad)..(hi + pad), (-n..0).into_segmented())
        .map_err(err)?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(n as usize + 1)
        .y_label_formatter(&|y| match y {
            SegmentValue::CenterOf(v) if *v < 0 => {
                labels.get((-v - 1) as usize).cloned().unwrap_or_default()
            }
            _ => String::new(),
        })
        .x_desc("best validation accuracy")
        .label_style(("sans-serif", 13))
        .draw()
        .map_err(err)?;
    for (i, (mean, std)) in values.iter().enumerate() {
        let y = SegmentValue::CenterOf(-(i as i32) - 1);
        // One colour: the rows are told apart by their labels.
        let c = color(0);
        if *std > 0.0 {
            chart
                .draw_series(std::iter::once(PathElement::new(
                    vec![(mean - std, y.clone()), (mean + std, y.clone())],
                    BLACK.stroke_width(2),
                )))
                .map_err(err)?;
        }
        chart
            .draw_series(std::iter::once(Circle::new((*mean, y), 5, c.filled())))
            .map_err(err)?;
    }
    Ok(())
}

/// Confusion matrix: rows are true labels, columns predictions.
pub fn confusion_matrix(
    counts: &[[u32; 10]; 10],
    title: &str,
    base: &Path,
) -> Result<Vec<PathBuf>> {
    both(base, (620, 620), &Confusion { counts, title })
}

struct Confusion<'a> {
    counts: &'a [[u32; 10]; 10],
    title: &'a str,
}

impl Figure for Confusion<'_> {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()> {
        confusion_on(self.counts, self.title, root)
    }
}

fn confusion_on<DB: DrawingBackend>(
    counts: &[[u32; 10]; 10],
    title: &str,
    root: &DrawingArea<DB, Shift>,
) -> Result<()> {
    // Cell (true t, predicted p) spans x in p..p+1 and y in 9-t..10-t, so row 0 is on top.
    let mut chart = ChartBuilder::on(root)
        .caption(title, ("sans-serif", 18))
        .margin(14)
        .x_label_area_size(44)
        .y_label_area_size(44)
        .build_cartesian_2d(0f64..10f64, 0f64..10f64)
        .map_err(err)?;
    chart
        .configure_mesh()
        .disable_mesh()
        .x_labels(0)
        .y_labels(0)
        .x_desc("predicted")
        .y_desc("true label")
        .label_style(("sans-serif", 13))
        .draw()
        .map_err(err)?;
    for (t, row) in counts.iter().enumerate() {
        let total: u32 = row.iter().sum::<u32>().max(1);
        let y = 9.0 - t as f64;
        for (p, &count) in row.iter().enumerate() {
            let share = count as f64 / total as f64;
            let fill = if t == p {
                RGBColor(
                    255 - (share * 200.0) as u8,
                    255 - (share * 90.0) as u8,
                    255 - (share * 200.0) as u8,
                )
            } else {
                let s = (share * 20.0).min(1.0);
                RGBColor(255, 255 - (s * 180.0) as u8, 255 - (s * 180.0) as u8)
            };
            let x = p as f64;
            chart
                .draw_series(std::iter::once(Rectangle::new(
                    [(x, y), (x + 1.0, y + 1.0)],
                    fill.filled(),
                )))
                .map_err(err)?;
            chart
                .draw_series(std::iter::once(Text::new(
                    count.to_string(),
                    (x + 0.5, y + 0.5),
                    centered(12),
                )))
                .map_err(err)?;
        }
        // Tick labels: the digit beside its row and under its column.
        let (lx, ly) = chart.backend_coord(&(0.0, y + 0.5));
        root.draw(&Text::new(t.to_string(), (lx - 12, ly), centered(13)))
            .map_err(err)?;
        let (bx, by) = chart.backend_coord(&(t as f64 + 0.5, 0.0));
        root.draw(&Text::new(t.to_string(), (bx, by + 12), centered(13)))
            .map_err(err)?;
    }
    Ok(())
}

/// Text centred on its position.
fn centered(size: u32) -> TextStyle<'static> {
    ("sans-serif", size)
        .into_font()
        .color(&BLACK)
        .pos(Pos::new(HPos::Center, VPos::Center))
}

/// One image cell of a prediction grid.
pub struct Labelled<'a> {
    /// 28x28 pixels in [0, 1].
    pub pixels: &'a [f32],
    /// The true label, when known.
    pub label: Option<usize>,
    pub predicted: usize,
}

pub const CELL: u32 = 112;
const TITLE: u32 = 36;

/// The tutorial's picture: images in a grid of `columns`, each titled with its
/// label and the prediction; mistakes in red with a red frame.
pub fn prediction_grid(items: &[Labelled], columns: usize, base: &Path) -> Result<Vec<PathBuf>> {
    let columns = columns.max(1);
    let rows = items.len().div_ceil(columns).max(1);
    let size = (columns as u32 * CELL, rows as u32 * (CELL + TITLE));
    both(base, size, &Grid { items, columns })
}

struct Grid<'a> {
    items: &'a [Labelled<'a>],
    columns: usize,
}

impl Figure for Grid<'_> {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()> {
        grid_on(self.items, self.columns, root)
    }
}

fn grid_on<DB: DrawingBackend>(
    items: &[Labelled],
    columns: usize,
    root: &DrawingArea<DB, Shift>,
) -> Result<()> {
    let scale = (CELL / 28) as i32;
    for (i, item) in items.iter().enumerate() {
        let (cx, cy) = (
            (i % columns) as i32 * CELL as i32,
            (i / columns) as i32 * (CELL + TITLE) as i32,
        );
        let wrong = item.label.is_some_and(|l| l != item.predicted);
        let title = match item.label {
            Some(l) => format!("{l}  pred: {}", item.predicted),
            None => format!("pred: {}", item.predicted),
        };
        let colour = if wrong { RED } else { BLACK };
        root.draw(&Text::new(
            title,
            (cx + 8, cy + 8),
            ("sans-serif", 16).into_font().color(&colour),
        ))
        .map_err(err)?;
        for y in 0..28 {
            for x in 0..28 {
                let v = (item.pixels[y * 28 + x].clamp(0.0, 1.0) * 255.0) as u8;
                let (px, py) = (cx + x as i32 * scale, cy + TITLE as i32 + y as i32 * scale);
                root.draw(&Rectangle::new(
                    [(px, py), (px + scale, py + scale)],
                    RGBColor(v, v, v).filled(),
                ))
                .map_err(err)?;
            }
        }
        if wrong {
            let top = cy + TITLE as i32;
            root.draw(&Rectangle::new(
                [
                    (cx + 1, top + 1),
                    (cx + CELL as i32 - 2, top + CELL as i32 - 2),
                ],
                RED.stroke_width(3),
            ))
            .map_err(err)?;
        }
    }
    Ok(())
}
