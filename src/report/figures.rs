//! The paper's figures from a pipeline's results: each is drawn only when the pipeline
//! measured what it shows.

use std::collections::BTreeMap;

use repflow_kernels::{Metric, Named};

use super::claims::{main_metric, ood_accuracy_correlation};
use super::data::{bucket, by_depth, finite_mean, over_pairs, Results, ScoreRow, BUCKETS};
use super::plot::{Chart, Heatmap, Lines, Panel, Secondary, Series, COLOURS};
use crate::error::UserError;

/// A drawn figure.
pub struct Figure {
    /// File stem, e.g. `fig1_depth`.
    pub name: String,
    /// Title.
    pub title: String,
    /// One-line caption.
    pub caption: String,
    /// SVG text.
    pub svg: String,
    /// PNG bytes.
    pub png: Vec<u8>,
}

/// Renders `chart` as a figure.
pub(super) fn figure<C: Chart>(
    name: &str,
    title: &str,
    caption: String,
    chart: &C,
    size: (u32, u32),
) -> Result<Figure, UserError> {
    let (svg, png) = super::plot::render(chart, size)?;
    Ok(Figure {
        name: name.into(),
        title: title.into(),
        caption,
        svg,
        png,
    })
}

/// The names and titles one family group's figures take: the supervised CNNs' Figures 1, 3,
/// 4 and 5, the ViTs' versions of them, and the self-supervised networks' Figure 6 (panels
/// A–D of the paper: depth, OOD, training, rotation).
pub(super) struct FigureSet {
    /// Figure 1's file stem.
    pub depth: &'static str,
    /// Figure 3's.
    pub rotation: &'static str,
    /// Figure 4's.
    pub training: &'static str,
    /// Figure 5's.
    pub ood: &'static str,
    /// Appended to each title: depth, rotation, training, OOD.
    pub tags: [&'static str; 4],
}

/// Supervised CNNs (and the OOD figure of every supervised family).
pub(super) const SUPERVISED: FigureSet = FigureSet {
    depth: "fig1_depth",
    rotation: "fig3_rotation",
    training: "fig4_training",
    ood: "fig5_ood",
    tags: ["", "", "", ""],
};

/// Vision transformers.
pub(super) const VIT: FigureSet = FigureSet {
    depth: "fig1_depth_vit",
    rotation: "fig3_rotation_vit",
    training: "fig4_training_vit",
    ood: "fig5_ood",
    tags: [" (ViT)", " (ViT)", " (ViT)", ""],
};

/// Self-supervised (MoCo) networks: the paper's Figure 6.
pub(super) const MOCO: FigureSet = FigureSet {
    depth: "fig6a_depth",
    rotation: "fig6d_rotation",
    training: "fig6c_training",
    ood: "fig6b_ood",
    tags: [
        " (MoCo, Figure 6A)",
        " (MoCo, Figure 6D)",
        " (MoCo, Figure 6C)",
        " (MoCo, Figure 6B)",
    ],
};

/// The colour of a metric (its rotated variant shares it).
pub(super) fn colour_of(metric: &str) -> plotters::style::RGBColor {
    let base = metric.trim_end_matches(":rotated");
    let i = Metric::names()
        .iter()
        .position(|m| *m == base)
        .unwrap_or(7)
        .min(COLOURS.len() - 1);
    COLOURS[i]
}

/// The pixel size of a figure with `panels` side by side.
pub(super) fn panel_size(panels: usize) -> (u32, u32) {
    ((430 * panels.max(1)) as u32 + 230, 400)
}

/// Range of the values with a margin (at least `[lo, hi]`).
pub(super) fn y_range(values: impl Iterator<Item = f64>, lo: f64, hi: f64) -> (f64, f64) {
    let (mut a, mut b) = (lo, hi);
    for v in values.filter(|v| v.is_finite()) {
        a = a.min(v);
        b = b.max(v);
    }
    (a - 0.02, b + 0.02)
}

/// [`y_range`] of every point of `panels`, at least `[0, 1]` (scores).
pub(super) fn score_range(panels: &[Panel]) -> (f64, f64) {
    y_range(
        panels
            .iter()
            .flat_map(|p| p.series.iter().flat_map(|s| s.points.iter().map(|p| p.1))),
        0.0,
        1.0,
    )
}

/// What the error bars of a depth curve are (see `data::by_depth`), for captions.
fn bars(r: &Results) -> String {
    let mut parts = Vec::new();
    if r.has_seed_errors() {
        parts.push("standard error of the mean over seed pairs (delete-one-network jackknife: pairs sharing a network are not independent)");
    }
    if r.scores.iter().any(|s| s.ci_half_width.is_some()) {
        parts.push("half the bootstrap confidence interval (mean over pairs) where `[statistics]` computed one");
    }
    parts.push("standard deviation over folds (mean over pairs)");
    let mut text = parts[0].to_string();
    for p in &parts[1..] {
        text.push_str(&format!("; where there is none, {p}"));
    }
    text
}

/// The light line of a null's 95% quantile over depth (`None` when no row has one).
fn null_series(
    label: String,
    colour: plotters::style::RGBColor,
    rows: &[&ScoreRow],
    q95: fn(&ScoreRow) -> Option<f64>,
) -> Option<Series> {
    // a reference line: its spread over pairs is not an error of the scores, so no bars
    let points: Vec<(f64, f64, f64)> = super::data::by_depth_of(rows, q95, |_| 0.0)
        .into_iter()
        .map(|(d, v, _)| (d, v, 0.0))
        .collect();
    (!points.is_empty()).then_some(Series {
        label,
        colour,
        light: true,
        points,
        scatter: false,
    })
}

/// A depth curve of `rows` (mean over pairs per layer depth).
pub(super) fn depth_series(
    label: String,
    colour: plotters::style::RGBColor,
    light: bool,
    rows: &[&ScoreRow],
) -> Series {
    Series {
        label,
        colour,
        light,
        points: by_depth(rows),
        scatter: false,
    }
}

/// Every figure this pipeline's results support.
pub fn figures(r: &Results) -> Result<Vec<Figure>, UserError> {
    if r.is_language() {
        return super::language::figures(r);
    }
    let mut out = Vec::new();
    let archs = r.archs();
    let last = r.final_step();
    let (moco, supervised): (Vec<String>, Vec<String>) =
        archs.iter().cloned().partition(|a| is_moco(a));
    let cnns: Vec<String> = supervised.iter().filter(|a| *a != "vit").cloned().collect();
    let vits: Vec<String> = supervised.iter().filter(|a| *a == "vit").cloned().collect();
    for (group, names) in [(&cnns, &SUPERVISED), (&vits, &VIT), (&moco, &MOCO)] {
        if group.is_empty() {
            continue;
        }
        out.extend(depth_figure(r, group, last, names)?);
        out.extend(rotation_figure(r, group, last, names)?);
        out.extend(training_figure(r, group, names)?);
    }
    out.extend(heatmaps(r)?);
    out.extend(ood_figure(r, &supervised, last, &SUPERVISED)?);
    out.extend(ood_figure(r, &moco, last, &MOCO)?);
    out.extend(super::objectives::figure_of(r, &moco, last)?);
    Ok(out)
}

/// Whether a family is of networks trained with MoCo (`models.csv` names them `<arch>-moco`).
pub(super) fn is_moco(arch: &str) -> bool {
    arch.ends_with("-moco")
}

/// Figure 1: alignment versus depth per metric, trained and untrained.
fn depth_figure(
    r: &Results,
    archs: &[String],
    last: Option<u64>,
    names: &FigureSet,
) -> Result<Option<Figure>, UserError> {
    let metrics: Vec<&str> = Metric::names()
        .into_iter()
        .filter(|m| r.scores.iter().any(|s| s.metric == *m))
        .collect();
    let untrained = r
        .steps()
        .first()
        .copied()
        .filter(|&s| s == 0 && last != Some(0));
    let mut panels = Vec::new();
    for a in archs {
        let mut series = Vec::new();
        for m in &metrics {
            let rows = r.within(a, last, "base", m);
            if rows.is_empty() {
                continue;
            }
            let what = if last.is_some() { " (trained)" } else { "" };
            series.push(depth_series(
                format!("{m}{what}"),
                colour_of(m),
                false,
                &rows,
            ));
            series.extend(null_series(
                format!("{m}: chance (null 95%)"),
                colour_of(m),
                &rows,
                |r| r.null_q95,
            ));
            if let Some(s0) = untrained {
                let rows = r.within(a, Some(s0), "base", m);
                series.push(depth_series(
                    format!("{m} (untrained)"),
                    colour_of(m),
                    true,
                    &rows,
                ));
            }
        }
        if !series.is_empty() {
            panels.push(Panel {
                title: a.clone(),
                series,
            });
        }
    }
    if panels.is_empty() {
        return Ok(None);
    }
    let y = score_range(&panels);
    let with_null = r.scores.iter().any(|s| s.null_q95.is_some());
    let chart = Lines {
        x_desc: "normalised depth (0 = first layer, 1 = last)".into(),
        y_desc: "alignment score (fold mean)".into(),
        x_range: (-0.03, 1.03),
        y_range: y,
        log_x: false,
        secondary: None,
        panels,
    };
    let n = chart.panels.len();
    Ok(Some(figure(
        names.depth,
        &format!("Alignment versus depth{}", names.tags[0]),
        format!(
            "Seed-pair alignment per layer for each metric (mean over pairs); trained solid, untrained (step 0) light; error bars: {}.{}",
            bars(r),
            if with_null {
                " Light lines marked \"chance\": the 95% quantile of the stimulus-permutation null (Y's rows permuted), mean over pairs."
            } else {
                ""
            }
        ),
        &chart,
        panel_size(n),
    )?))
}

/// Figure 3: permutation score in the native and a rotated basis per layer.
fn rotation_figure(
    r: &Results,
    archs: &[String],
    last: Option<u64>,
    names: &FigureSet,
) -> Result<Option<Figure>, UserError> {
    let mut panels = Vec::new();
    for a in archs {
        let native = r.within(a, last, "base", "permutation");
        let rotated = r.within(a, last, "base", "permutation:rotated");
        if native.is_empty() || rotated.is_empty() {
            continue;
        }
        panels.push(Panel {
            title: a.clone(),
            series: vec![
                depth_series(
                    "permutation, native basis".into(),
                    COLOURS[2],
                    false,
                    &native,
                ),
                depth_series(
                    "permutation, rotated basis".into(),
                    COLOURS[3],
                    false,
                    &rotated,
                ),
            ]
            .into_iter()
            .chain(null_series(
                "rotation null 95% (Haar rotations)".into(),
                COLOURS[3],
                &native,
                |r| r.rotation_q95,
            ))
            .collect(),
        });
    }
    if panels.is_empty() {
        return Ok(None);
    }
    let y = score_range(&panels);
    let n = panels.len();
    let chart = Lines {
        x_desc: "normalised depth (0 = first layer, 1 = last)".into(),
        y_desc: "permutation score (fold mean)".into(),
        x_range: (-0.03, 1.03),
        y_range: y,
        log_x: false,
        secondary: None,
        panels,
    };
    Ok(Some(figure(
        names.rotation,
        &format!("Privileged basis: native versus rotated{}", names.tags[1]),
        format!(
            "Permutation score of seed pairs with one network's layer in its native basis and after a Haar-random rotation; error bars: {}.{}",
            bars(r),
            if r.scores.iter().any(|s| s.rotation_q95.is_some()) {
                " Light line: the 95% quantile of the rotation null (the native score against many Haar rotations), mean over pairs."
            } else {
                ""
            }
        ),
        &chart,
        panel_size(n),
    )?))
}

/// Figure 4: alignment versus training step per depth bucket, test accuracy on a second axis.
fn training_figure(
    r: &Results,
    archs: &[String],
    names: &FigureSet,
) -> Result<Option<Figure>, UserError> {
    let steps = r.steps();
    let Some(metric) = main_metric(r) else {
        return Ok(None);
    };
    if steps.len() < 3 {
        return Ok(None);
    }
    let mut panels = Vec::new();
    for a in archs {
        let mut series = Vec::new();
        for (b, name) in BUCKETS.iter().enumerate() {
            let points: Vec<(f64, f64, f64)> = steps
                .iter()
                .filter_map(|&s| {
                    let rows: Vec<&ScoreRow> = r
                        .within(a, Some(s), "base", &metric)
                        .into_iter()
                        .filter(|row| bucket(row.depth_a) == b)
                        .collect();
                    let m = over_pairs(&rows, |row| Some(row.score));
                    (m.pairs > 0).then(|| (s as f64 + 1.0, m.mean, m.se.unwrap_or(0.0)))
                })
                .collect();
            if !points.is_empty() {
                series.push(Series {
                    label: format!("{metric}, {name}"),
                    colour: COLOURS[b],
                    light: false,
                    points,
                    scatter: false,
                });
            }
        }
        let acc = r.test_accuracy_by_step(a);
        if !acc.is_empty() {
            series.push(Series {
                // a MoCo network's top-1 is its linear probe's
                label: if is_moco(a) {
                    "linear-probe accuracy (right axis)".into()
                } else {
                    "test accuracy (right axis)".into()
                },
                colour: COLOURS[7],
                light: true,
                points: acc.iter().map(|&(s, v)| (s as f64 + 1.0, v, 0.0)).collect(),
                scatter: false,
            });
        }
        if !series.is_empty() {
            panels.push(Panel {
                title: a.clone(),
                series,
            });
        }
    }
    if panels.is_empty() {
        return Ok(None);
    }
    let y = y_range(
        panels.iter().flat_map(|p| {
            p.series
                .iter()
                .filter(|s| !s.label.ends_with("(right axis)"))
                .flat_map(|s| s.points.iter().map(|p| p.1))
        }),
        0.0,
        1.0,
    );
    let last = *steps.last().expect("steps") as f64 + 1.0;
    let n = panels.len();
    let chart = Lines {
        x_desc: "training step + 1 (log scale; 1 = untrained)".into(),
        y_desc: format!("{metric} alignment (fold mean)"),
        x_range: (1.0, last * 1.2),
        y_range: y,
        log_x: true,
        secondary: Some(Secondary {
            prefix: "test accuracy".into(),
            desc: if archs.iter().any(|a| is_moco(a)) {
                "test accuracy (fraction correct; MoCo: linear probe)".into()
            } else {
                "test accuracy (fraction correct)".into()
            },
            range: (0.0, 1.0),
        }),
        panels,
    };
    let epochs: Vec<String> = steps
        .iter()
        .filter_map(|&s| r.epoch_of(s).map(|e| format!("{s}→{e:.2}")))
        .collect();
    Ok(Some(figure(
        names.training,
        &format!("Alignment during training{}", names.tags[2]),
        format!(
            "Seed-pair {metric} alignment by depth bucket at each checkpoint (mean over layers, then over pairs{}), with test accuracy (grey, right axis). Steps → epochs: {}.",
            if r.has_seed_errors() { "; error bars: standard error over seed pairs, delete-one-network jackknife" } else { "" },
            epochs.join(", ")
        ),
        &chart,
        panel_size(n),
    )?))
}

/// The scores of one model pair's layer pairs as a layer × layer grid.
pub(super) struct LayerGrid {
    /// The first model's layers (depth, name), by depth.
    pub la: Vec<(f64, String)>,
    /// The second model's layers.
    pub lb: Vec<(f64, String)>,
    /// `values[i][j]`: layer `i` of the first against layer `j` of the second.
    pub values: Vec<Vec<f64>>,
}

/// The grid of `rows` (one model pair, one metric), when every layer of the first model was
/// scored against every one of at least three layers of the second.
pub(super) fn layer_grid(rows: &[&ScoreRow]) -> Option<LayerGrid> {
    let mut la: Vec<(f64, String)> = rows
        .iter()
        .map(|r| (r.depth_a, r.layer_a.clone()))
        .collect();
    let mut lb: Vec<(f64, String)> = rows
        .iter()
        .map(|r| (r.depth_b, r.layer_b.clone()))
        .collect();
    for l in [&mut la, &mut lb] {
        l.sort_by(|x, y| x.0.total_cmp(&y.0).then(x.1.cmp(&y.1)));
        l.dedup();
    }
    if lb.len() < 3 || rows.len() < la.len() * lb.len() {
        return None;
    }
    let idx = |list: &[(f64, String)], name: &str| list.iter().position(|l| l.1 == name);
    let mut values = vec![vec![f64::NAN; lb.len()]; la.len()];
    for row in rows {
        if let (Some(i), Some(j)) = (idx(&la, &row.layer_a), idx(&lb, &row.layer_b)) {
            values[i][j] = row.score;
        }
    }
    Some(LayerGrid { la, lb, values })
}

/// Figure 2: layer × layer heatmaps between two models (the first pair of each kind with all
/// layer pairs scored), Procrustes and soft-matching.
fn heatmaps(r: &Results) -> Result<Vec<Figure>, UserError> {
    let mut out = Vec::new();
    let mut grids: BTreeMap<(String, String, String), Vec<&ScoreRow>> = BTreeMap::new();
    for row in r.scores.iter().filter(|s| s.stimuli == "base") {
        if ["procrustes", "soft-matching"].contains(&row.metric.as_str())
            && r.step(&row.model_a) == r.final_step()
        {
            grids
                .entry((row.metric.clone(), row.model_a.clone(), row.model_b.clone()))
                .or_default()
                .push(row);
        }
    }
    let mut kinds_done = std::collections::BTreeSet::new();
    for ((metric, a, b), rows) in grids {
        let Some(LayerGrid { la, lb, values }) = layer_grid(&rows) else {
            continue;
        };
        let (aa, ab) = (r.arch(&a).unwrap_or("?"), r.arch(&b).unwrap_or("?"));
        let kind = (metric.clone(), aa == ab);
        if !kinds_done.insert(kind) {
            continue;
        }
        let within = if aa == ab { "within" } else { "across" };
        let chart = Heatmap {
            title: format!("{metric}: {a} × {b}"),
            rows: la.iter().map(|l| l.1.clone()).collect(),
            cols: lb.iter().map(|l| l.1.clone()).collect(),
            values,
            axes: (
                format!("layer of {a} ({aa}, forward order)"),
                format!("layer of {b} ({ab}, forward order)"),
            ),
        };
        out.push(figure(
            &format!("fig2_heatmap_{}_{within}", metric.replace(':', "_")),
            &format!("Layer × layer {metric} ({within} architectures)"),
            format!("{metric} score of every layer of {a} against every layer of {b}, with each row's and column's maximum beside the map."),
            &chart,
            (900, 760),
        )?);
    }
    Ok(out)
}

/// Figure 5: in-distribution versus OOD alignment by depth; alignment versus OOD accuracy for
/// the first and last layer; their correlation by depth.
fn ood_figure(
    r: &Results,
    archs: &[String],
    last: Option<u64>,
    names: &FigureSet,
) -> Result<Option<Figure>, UserError> {
    let sets = r.ood_sets();
    let Some(metric) = main_metric(r) else {
        return Ok(None);
    };
    if sets.is_empty() || archs.is_empty() {
        return Ok(None);
    }
    let mut id_ood = Vec::new();
    let mut scatter_first = Vec::new();
    let mut scatter_last = Vec::new();
    let mut corr = Vec::new();
    for (k, a) in archs.iter().enumerate() {
        let c = COLOURS[k % COLOURS.len()];
        id_ood.push(depth_series(
            format!("{a}, in-distribution"),
            c,
            false,
            &r.within(a, last, "base", &metric),
        ));
        // per depth: mean over OOD sets of the set's mean over pairs; error = standard error
        let mut per_depth: BTreeMap<i64, (f64, Vec<f64>)> = BTreeMap::new();
        for s in &sets {
            for (d, v, _) in by_depth(&r.within(a, last, s, &metric)) {
                per_depth
                    .entry((d * 1e6).round() as i64)
                    .or_insert((d, Vec::new()))
                    .1
                    .push(v);
            }
        }
        let points = per_depth
            .into_values()
            .map(|(d, v)| {
                let m = finite_mean(&v);
                let sd = (v.iter().map(|x| (x - m).powi(2)).sum::<f64>()
                    / (v.len().max(2) - 1) as f64)
                    .sqrt();
                (d, m, sd / (v.len() as f64).sqrt())
            })
            .collect();
        id_ood.push(Series {
            label: format!("{a}, OOD mean"),
            colour: c,
            light: true,
            points,
            scatter: false,
        });
        // alignment vs accuracy at the first and last layer
        let depths: Vec<f64> = by_depth(&r.within(a, last, "base", &metric))
            .iter()
            .map(|p| p.0)
            .collect();
        for (target, list) in [
            (depths.first(), &mut scatter_first),
            (depths.last(), &mut scatter_last),
        ] {
            let Some(&target) = target else { continue };
            let points: Vec<(f64, f64, f64)> = sets
                .iter()
                .flat_map(|s| {
                    r.within(a, last, s, &metric)
                        .into_iter()
                        .filter(|row| (row.depth_a - target).abs() < 1e-9)
                        .filter_map(|row| {
                            let acc =
                                (r.accuracy(&row.model_a, s)? + r.accuracy(&row.model_b, s)?) / 2.0;
                            Some((acc, row.score, 0.0))
                        })
                        .collect::<Vec<_>>()
                })
                .collect();
            list.push(Series {
                label: a.clone(),
                colour: c,
                light: false,
                points,
                scatter: true,
            });
        }
        corr.push(Series {
            label: a.clone(),
            colour: c,
            light: false,
            points: ood_accuracy_correlation(r, a, last, &metric)
                .into_iter()
                .map(|(d, v)| (d, v, 0.0))
                .collect(),
            scatter: false,
        });
    }
    let y = y_range(
        id_ood.iter().flat_map(|s| s.points.iter().map(|p| p.1)),
        0.0,
        1.0,
    );
    let first = Lines {
        panels: vec![Panel {
            title: "in-distribution vs OOD".into(),
            series: id_ood,
        }],
        x_desc: "normalised depth".into(),
        y_desc: format!("{metric} alignment (fold mean)"),
        x_range: (-0.03, 1.03),
        y_range: y,
        log_x: false,
        secondary: None,
    };
    let acc_range = y_range(
        scatter_first
            .iter()
            .chain(&scatter_last)
            .flat_map(|s| s.points.iter().map(|p| p.0)),
        0.5,
        0.5,
    );
    let sy = y_range(
        scatter_first
            .iter()
            .chain(&scatter_last)
            .flat_map(|s| s.points.iter().map(|p| p.1)),
        0.5,
        0.5,
    );
    let scatter = Lines {
        panels: vec![
            Panel {
                title: "first layer".into(),
                series: scatter_first,
            },
            Panel {
                title: "last layer".into(),
                series: scatter_last,
            },
        ],
        x_desc: if archs.iter().any(|a| is_moco(a)) {
            "OOD accuracy of the pair's linear probes (fraction correct)".into()
        } else {
            "OOD accuracy of the pair (fraction correct)".into()
        },
        y_desc: format!("{metric} alignment on the set"),
        x_range: acc_range,
        y_range: sy,
        log_x: false,
        secondary: None,
    };
    let correlation = Lines {
        panels: vec![Panel {
            title: "alignment–accuracy correlation".into(),
            series: corr,
        }],
        x_desc: "normalised depth".into(),
        y_desc: "Pearson r over OOD sets and pairs".into(),
        x_range: (-0.03, 1.03),
        y_range: (-1.05, 1.05),
        log_x: false,
        secondary: None,
    };
    let chart = Stacked(first, scatter, correlation);
    Ok(Some(figure(
        names.ood,
        &format!("Out-of-distribution alignment{}", names.tags[3]),
        format!(
            "Top: seed-pair {metric} alignment by depth on the in-distribution set and averaged over {} OOD sets (error bars: standard error over sets). Middle: alignment versus the pair's accuracy on each OOD set, first and last layer. Bottom: their correlation at each depth.",
            sets.len()
        ),
        &chart,
        (1130, 1200),
    )?))
}

/// Three charts stacked vertically.
struct Stacked(Lines, Lines, Lines);

impl Chart for Stacked {
    fn draw<DB: plotters::prelude::DrawingBackend>(
        &self,
        root: &plotters::prelude::DrawingArea<DB, plotters::coord::Shift>,
    ) -> Result<(), String> {
        let areas = root.split_evenly((3, 1));
        self.0.draw(&areas[0])?;
        self.1.draw(&areas[1])?;
        self.2.draw(&areas[2])
    }
}
