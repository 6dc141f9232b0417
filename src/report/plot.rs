//! Chart kinds the report draws, with plotters, to SVG (inline in the report) and PNG (for
//! papers): line panels with error bars, a log-step panel with a second accuracy axis,
//! scatter panels and a heatmap with its row and column maxima. Every chart has labelled axes,
//! units and a legend.

use std::sync::Once;

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::error::UserError;

/// The font every label uses (DejaVu Sans, shipped in `assets/`: no system fonts needed).
static FONT: &[u8] = include_bytes!("../../assets/DejaVuSans.ttf");

fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        plotters::style::register_font("sans-serif", FontStyle::Normal, FONT)
            .unwrap_or_else(|_| panic!("the bundled font is a valid TrueType font"));
    });
}

/// A colour per series, distinguishable in print.
pub const COLOURS: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
];

/// A line with optional error bars.
#[derive(Debug, Clone)]
pub struct Series {
    /// Legend text.
    pub label: String,
    /// Colour.
    pub colour: RGBColor,
    /// Drawn lighter and dashed (e.g. untrained networks).
    pub light: bool,
    /// (x, y, error bar half-length; 0 for none).
    pub points: Vec<(f64, f64, f64)>,
    /// Points only, no line.
    pub scatter: bool,
}

/// One panel of line or scatter series.
#[derive(Debug, Clone)]
pub struct Panel {
    /// Panel title.
    pub title: String,
    /// The series.
    pub series: Vec<Series>,
}

/// Panels side by side sharing axis labels and ranges.
#[derive(Debug, Clone)]
pub struct Lines {
    /// The panels.
    pub panels: Vec<Panel>,
    /// x-axis label (with unit).
    pub x_desc: String,
    /// y-axis label (with unit).
    pub y_desc: String,
    /// x range.
    pub x_range: (f64, f64),
    /// y range.
    pub y_range: (f64, f64),
    /// Logarithmic x axis.
    pub log_x: bool,
    /// A second y axis (right) for some of the series.
    pub secondary: Option<Secondary>,
}

/// The right-hand y axis of a [`Lines`] chart.
#[derive(Debug, Clone)]
pub struct Secondary {
    /// Series whose label starts with this are drawn against it.
    pub prefix: String,
    /// Its label (with unit).
    pub desc: String,
    /// Its range.
    pub range: (f64, f64),
}

/// A matrix of scores between the layers of two models.
#[derive(Debug, Clone)]
pub struct Heatmap {
    /// Title.
    pub title: String,
    /// Row labels (first model's layers, forward order).
    pub rows: Vec<String>,
    /// Column labels (second model's layers).
    pub cols: Vec<String>,
    /// values[i][j]: row i, column j (NaN where missing).
    pub values: Vec<Vec<f64>>,
    /// Axis names of rows and columns.
    pub axes: (String, String),
}

/// Something drawn on any plotters backend.
pub trait Chart {
    /// Draws on `root`.
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), String>;
}

fn err<E: std::fmt::Display>(e: E) -> String {
    e.to_string()
}

/// SVG text and PNG bytes of `chart` at `size` pixels.
pub fn render<C: Chart>(chart: &C, size: (u32, u32)) -> Result<(String, Vec<u8>), UserError> {
    register_font();
    let fail = |e: String| UserError::input(format!("drawing a figure: {e}"));
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, size).into_drawing_area();
        chart.draw(&root).map_err(fail)?;
        root.present().map_err(|e| fail(e.to_string()))?;
    }
    let mut rgb = vec![0u8; (size.0 * size.1 * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, size).into_drawing_area();
        chart.draw(&root).map_err(fail)?;
        root.present().map_err(|e| fail(e.to_string()))?;
    }
    let img = image::RgbImage::from_raw(size.0, size.1, rgb).expect("buffer of the image's size");
    let mut png = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .map_err(|e| fail(e.to_string()))?;
    Ok((svg, png))
}

fn style(s: &Series) -> ShapeStyle {
    let c = if s.light {
        s.colour.mix(0.45)
    } else {
        s.colour.mix(1.0)
    };
    c.stroke_width(if s.light { 1 } else { 2 })
}

/// Width of the legend column to the right of line charts, in pixels.
const LEGEND_WIDTH: u32 = 230;

/// Draws the legend of `series` (each label once) in `area`: a line or a dot, then the text.
fn legend<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    series: &[&Series],
) -> Result<(), String> {
    let mut seen = std::collections::BTreeSet::new();
    let mut y = 40;
    for s in series {
        if !seen.insert(s.label.clone()) {
            continue;
        }
        let st = style(s);
        if s.scatter {
            area.draw(&Circle::new((18, y), 4, st.filled()))
                .map_err(err)?;
        } else {
            area.draw(&PathElement::new(vec![(6, y), (30, y)], st))
                .map_err(err)?;
        }
        area.draw(&Text::new(s.label.clone(), (38, y - 7), ("sans-serif", 12)))
            .map_err(err)?;
        y += 20;
    }
    Ok(())
}

impl Chart for Lines {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), String> {
        root.fill(&WHITE).map_err(err)?;
        let (w, _) = root.dim_in_pixel();
        let (charts, key) = root.split_horizontally(w.saturating_sub(LEGEND_WIDTH));
        let areas = charts.split_evenly((1, self.panels.len().max(1)));
        let light = RGBColor(235, 235, 235);
        for (panel, area) in self.panels.iter().zip(&areas) {
            let mut b = ChartBuilder::on(area);
            b.caption(&panel.title, ("sans-serif", 18))
                .margin(12)
                .x_label_area_size(42)
                .y_label_area_size(56);
            if self.secondary.is_some() {
                b.right_y_label_area_size(56);
            }
            let (x0, x1) = self.x_range;
            let (y0, y1) = self.y_range;
            if self.log_x {
                let mut c = b
                    .build_cartesian_2d((x0.max(1e-9)..x1).log_scale(), y0..y1)
                    .map_err(err)?
                    .set_secondary_coord(
                        (x0.max(1e-9)..x1).log_scale(),
                        self.secondary
                            .as_ref()
                            .map_or(0.0..1.0, |s| s.range.0..s.range.1),
                    );
                c.configure_mesh()
                    .x_desc(&self.x_desc)
                    .y_desc(&self.y_desc)
                    .x_labels(8)
                    .x_label_formatter(&|x| format!("{x:.0}"))
                    .light_line_style(light)
                    .label_style(("sans-serif", 12))
                    .draw()
                    .map_err(err)?;
                if let Some(sec) = &self.secondary {
                    c.configure_secondary_axes()
                        .y_desc(&sec.desc)
                        .label_style(("sans-serif", 12))
                        .draw()
                        .map_err(err)?;
                }
                for s in &panel.series {
                    let on_secondary = self
                        .secondary
                        .as_ref()
                        .is_some_and(|sec| s.label.starts_with(sec.prefix.as_str()));
                    let st = style(s);
                    let pts: Vec<(f64, f64)> = s.points.iter().map(|p| (p.0, p.1)).collect();
                    if let Some(sec) = self.secondary.as_ref().filter(|_| on_secondary) {
                        let (lo, hi) = sec.range;
                        if let Some(p) = pts
                            .iter()
                            .find(|p| p.1.is_finite() && !(lo..=hi).contains(&p.1))
                        {
                            // a value off its axis would be drawn at the edge: a wrong figure
                            return Err(format!(
                                "`{}` has {} outside its axis {lo}..{hi}",
                                s.label, p.1
                            ));
                        }
                        c.draw_secondary_series(LineSeries::new(pts, st).point_size(3))
                            .map_err(err)?;
                    } else {
                        c.draw_series(LineSeries::new(pts, st).point_size(3))
                            .map_err(err)?;
                    }
                }
            } else {
                let mut c = b.build_cartesian_2d(x0..x1, y0..y1).map_err(err)?;
                c.configure_mesh()
                    .x_desc(&self.x_desc)
                    .y_desc(&self.y_desc)
                    .light_line_style(light)
                    .label_style(("sans-serif", 12))
                    .draw()
                    .map_err(err)?;
                for s in &panel.series {
                    let st = style(s);
                    let pts: Vec<(f64, f64)> = s.points.iter().map(|p| (p.0, p.1)).collect();
                    if s.scatter {
                        c.draw_series(pts.iter().map(|&p| Circle::new(p, 4, st.filled())))
                            .map_err(err)?;
                    } else {
                        c.draw_series(LineSeries::new(pts, st).point_size(2))
                            .map_err(err)?;
                    }
                    c.draw_series(
                        s.points
                            .iter()
                            .filter(|p| p.2 > 0.0)
                            .map(|&(x, y, e)| ErrorBar::new_vertical(x, y - e, y, y + e, st, 6)),
                    )
                    .map_err(err)?;
                }
            }
        }
        let all: Vec<&Series> = self.panels.iter().flat_map(|p| &p.series).collect();
        legend(&key, &all)
    }
}

/// A sequential colour map (dark blue → yellow, perceptually ordered) on [0, 1].
fn colour_map(v: f64) -> RGBColor {
    let stops = [
        (68.0, 1.0, 84.0),
        (59.0, 82.0, 139.0),
        (33.0, 145.0, 140.0),
        (94.0, 201.0, 98.0),
        (253.0, 231.0, 37.0),
    ];
    let t = v.clamp(0.0, 1.0) * (stops.len() - 1) as f64;
    let i = (t.floor() as usize).min(stops.len() - 2);
    let f = t - i as f64;
    let lerp = |a: f64, b: f64| (a + (b - a) * f).round() as u8;
    RGBColor(
        lerp(stops[i].0, stops[i + 1].0),
        lerp(stops[i].1, stops[i + 1].1),
        lerp(stops[i].2, stops[i + 1].2),
    )
}

impl Chart for Heatmap {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), String> {
        root.fill(&WHITE).map_err(err)?;
        let root = root.titled(&self.title, ("sans-serif", 18)).map_err(err)?;
        let (w, h) = root.dim_in_pixel();
        // [ heatmap | row maxima | colour bar ] over [ column maxima ]
        let (top, bottom) = root.split_vertically(h * 3 / 4);
        let (main, side) = top.split_horizontally(w * 62 / 100);
        let (side, bar) = side.split_horizontally((w * 38 / 100) * 60 / 100);
        let (below, _) = bottom.split_horizontally(w * 62 / 100);
        let (nr, nc) = (self.rows.len(), self.cols.len());
        let finite = |v: &f64| v.is_finite();
        let lo = self
            .values
            .iter()
            .flatten()
            .copied()
            .filter(finite)
            .fold(f64::INFINITY, f64::min);
        let hi = self
            .values
            .iter()
            .flatten()
            .copied()
            .filter(finite)
            .fold(f64::NEG_INFINITY, f64::max);
        let (lo, hi) = if lo < hi {
            (lo, hi)
        } else {
            (lo - 0.5, lo + 0.5)
        };
        let norm = |v: f64| (v - lo) / (hi - lo);

        let mut c = ChartBuilder::on(&main)
            .margin(8)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(0f64..nc as f64, 0f64..nr as f64)
            .map_err(err)?;
        c.configure_mesh()
            .disable_mesh()
            .x_desc(&self.axes.1)
            .y_desc(&self.axes.0)
            .x_labels(nc.min(12))
            .y_labels(nr.min(12))
            .x_label_formatter(&|x| format!("{:.0}", x.floor()))
            .y_label_formatter(&|y| format!("{:.0}", y.floor()))
            .label_style(("sans-serif", 11))
            .draw()
            .map_err(err)?;
        c.draw_series(self.values.iter().enumerate().flat_map(|(i, row)| {
            row.iter().enumerate().map(move |(j, &v)| {
                let fill = if v.is_finite() {
                    colour_map(norm(v)).filled()
                } else {
                    WHITE.filled()
                };
                Rectangle::new(
                    [(j as f64, i as f64), (j as f64 + 1.0, i as f64 + 1.0)],
                    fill,
                )
            })
        }))
        .map_err(err)?;

        let row_max: Vec<f64> = self
            .values
            .iter()
            .map(|r| r.iter().copied().filter(finite).fold(f64::NAN, f64::max))
            .collect();
        let col_max: Vec<f64> = (0..nc)
            .map(|j| {
                self.values
                    .iter()
                    .map(|r| r[j])
                    .filter(finite)
                    .fold(f64::NAN, f64::max)
            })
            .collect();
        let mut s = ChartBuilder::on(&side)
            .margin(8)
            .x_label_area_size(40)
            .y_label_area_size(30)
            .build_cartesian_2d(lo..hi, 0f64..nr as f64)
            .map_err(err)?;
        s.configure_mesh()
            .x_desc("row maximum (score)")
            .y_labels(0)
            .x_labels(4)
            .x_label_formatter(&|v| format!("{v:.2}"))
            .label_style(("sans-serif", 10))
            .draw()
            .map_err(err)?;
        s.draw_series(
            LineSeries::new(
                row_max
                    .iter()
                    .enumerate()
                    .map(|(i, &v)| (v, i as f64 + 0.5)),
                COLOURS[3].stroke_width(2),
            )
            .point_size(2),
        )
        .map_err(err)?
        .label("max over columns")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 14, y)], COLOURS[3].stroke_width(2)));
        s.configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .label_font(("sans-serif", 9))
            .background_style(WHITE.mix(0.85))
            .draw()
            .map_err(err)?;

        let mut b = ChartBuilder::on(&below)
            .margin(8)
            .x_label_area_size(30)
            .y_label_area_size(60)
            .build_cartesian_2d(0f64..nc as f64, lo..hi)
            .map_err(err)?;
        b.configure_mesh()
            .y_desc("column maximum (score)")
            .x_labels(0)
            .y_labels(4)
            .y_label_formatter(&|v| format!("{v:.2}"))
            .label_style(("sans-serif", 10))
            .draw()
            .map_err(err)?;
        b.draw_series(
            LineSeries::new(
                col_max
                    .iter()
                    .enumerate()
                    .map(|(j, &v)| (j as f64 + 0.5, v)),
                COLOURS[0].stroke_width(2),
            )
            .point_size(2),
        )
        .map_err(err)?
        .label("max over rows")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 14, y)], COLOURS[0].stroke_width(2)));
        b.configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .label_font(("sans-serif", 9))
            .background_style(WHITE.mix(0.85))
            .draw()
            .map_err(err)?;

        // colour bar: the legend of the heatmap
        let mut cb = ChartBuilder::on(&bar)
            .margin(8)
            .x_label_area_size(40)
            .y_label_area_size(40)
            .build_cartesian_2d(0f64..1f64, lo..hi)
            .map_err(err)?;
        cb.configure_mesh()
            .disable_mesh()
            .x_labels(0)
            .x_desc("score")
            .y_labels(5)
            .label_style(("sans-serif", 10))
            .draw()
            .map_err(err)?;
        let steps = 50;
        cb.draw_series((0..steps).map(|k| {
            let (a, b2) = (
                lo + (hi - lo) * k as f64 / steps as f64,
                lo + (hi - lo) * (k + 1) as f64 / steps as f64,
            );
            Rectangle::new(
                [(0.0, a), (1.0, b2)],
                colour_map(k as f64 / (steps - 1) as f64).filled(),
            )
        }))
        .map_err(err)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chart(loss: f64, range: (f64, f64)) -> Lines {
        let series = |label: &str, y: f64| Series {
            label: label.into(),
            colour: COLOURS[0],
            light: false,
            points: vec![(1.0, y, 0.0), (10.0, y, 0.0)],
            scatter: false,
        };
        Lines {
            panels: vec![Panel {
                title: "p".into(),
                series: vec![series("score", 0.5), series("held-out loss", loss)],
            }],
            x_desc: "step".into(),
            y_desc: "score".into(),
            x_range: (1.0, 20.0),
            y_range: (0.0, 1.0),
            log_x: true,
            secondary: Some(Secondary {
                prefix: "held-out".into(),
                desc: "loss (nats)".into(),
                range,
            }),
        }
    }

    #[test]
    fn a_value_off_its_secondary_axis_is_an_error_not_a_point_at_the_edge() {
        assert!(render(&chart(2.5, (0.0, 6.0)), (300, 200)).is_ok());
        let e = render(&chart(2.5, (0.0, 1.0)), (300, 200)).unwrap_err();
        assert!(e.message.contains("outside its axis"), "{}", e.message);
    }
}
