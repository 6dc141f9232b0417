//! Do two training objectives converge? For each self-supervised (MoCo) family whose
//! networks were also compared with supervised networks of the same architecture, layer by
//! layer by name (`layers = "named"`), Figure 6E sets three curves side by side, one panel
//! per metric: MoCo seed against MoCo seed, supervised against MoCo, and supervised seed
//! against supervised seed where the pipeline has such pairs. Where the cross-objective
//! curve meets the within-objective ones, the objectives share the layer's representation.

use std::collections::BTreeMap;

use repflow_kernels::{Metric, Named};

use super::data::{finite_mean, over_pairs, Results, ScoreRow};
use super::figures::{figure, is_moco, panel_size, score_range, Figure};
use super::plot::{Lines, Panel, Series, COLOURS};
use crate::error::UserError;

/// Figure 6E, when some MoCo family of `moco` was compared with its supervised architecture
/// at checkpoint `last`.
pub fn figure_of(
    r: &Results,
    moco: &[String],
    last: Option<u64>,
) -> Result<Option<Figure>, UserError> {
    let Some(chart) = chart(r, moco, last) else {
        return Ok(None);
    };
    let n = chart.panels.len();
    Ok(Some(figure(
        "fig6e_objectives",
        "Supervised versus self-supervised, layer by layer (Figure 6E)",
        "Alignment of the layers a supervised and a MoCo network share by name, at the final checkpoint, one panel per metric: between MoCo seeds, between a supervised and a MoCo network, and between supervised seeds where the pipeline compares them (mean over network pairs; error bars: standard error over pairs with three or more networks, else the fold standard deviation).".into(),
        &chart,
        panel_size(n),
    )?))
}

/// The chart of Figure 6E: a panel per (MoCo family, metric) with cross-objective scores.
fn chart(r: &Results, moco: &[String], last: Option<u64>) -> Option<Lines> {
    let mut panels = Vec::new();
    for fam in moco.iter().filter(|f| is_moco(f)) {
        let base = fam.trim_end_matches("-moco");
        for metric in Metric::names() {
            let cross = r.between(base, fam, last, "base", metric);
            if cross.is_empty() {
                continue;
            }
            // x: the layer's normalised depth in the MoCo network, whichever side it is on
            let mut depth: BTreeMap<&str, f64> = BTreeMap::new();
            for row in &cross {
                let d = if r.arch(&row.model_a) == Some(fam.as_str()) {
                    row.depth_a
                } else {
                    row.depth_b
                };
                depth.insert(&row.layer_a, d);
            }
            let curves = [
                (
                    "MoCo × MoCo (seed pairs)",
                    COLOURS[0],
                    on_layers(r.within(fam, last, "base", metric), &depth),
                ),
                ("supervised × MoCo", COLOURS[3], cross.clone()),
                (
                    "supervised × supervised (seed pairs)",
                    COLOURS[2],
                    on_layers(r.within(base, last, "base", metric), &depth),
                ),
            ];
            let series: Vec<Series> = curves
                .into_iter()
                .filter(|(_, _, rows)| !rows.is_empty())
                .map(|(label, colour, rows)| Series {
                    label: label.into(),
                    colour,
                    light: false,
                    points: by_layer(&rows, &depth),
                    scatter: false,
                })
                .collect();
            panels.push(Panel {
                title: format!("{metric}: {base} vs {fam}"),
                series,
            });
        }
    }
    if panels.is_empty() {
        return None;
    }
    let y = score_range(&panels);
    Some(Lines {
        x_desc: "normalised depth in the MoCo network (layers both networks have)".into(),
        y_desc: "alignment score (fold mean)".into(),
        x_range: (-0.03, 1.03),
        y_range: y,
        log_x: false,
        secondary: None,
        panels,
    })
}

/// The rows of `rows` that pair a layer with its namesake among the layers in `depth`.
fn on_layers<'a>(mut rows: Vec<&'a ScoreRow>, depth: &BTreeMap<&str, f64>) -> Vec<&'a ScoreRow> {
    rows.retain(|row| row.layer_a == row.layer_b && depth.contains_key(row.layer_a.as_str()));
    rows
}

/// Mean over network pairs per shared layer (named by `layer_a`), at the layer's depth in
/// `depth`: (depth, mean, error bar), by depth. The error bar is the standard error over
/// pairs where there are enough networks, else the mean fold standard deviation.
fn by_layer(rows: &[&ScoreRow], depth: &BTreeMap<&str, f64>) -> Vec<(f64, f64, f64)> {
    let mut by: BTreeMap<&str, Vec<&ScoreRow>> = BTreeMap::new();
    for row in rows {
        by.entry(row.layer_a.as_str()).or_default().push(row);
    }
    let mut points: Vec<(f64, f64, f64)> = by
        .into_iter()
        .filter_map(|(layer, group)| {
            let m = over_pairs(&group, |row| Some(row.score));
            let std: Vec<f64> = group.iter().map(|row| row.std).collect();
            (m.pairs > 0).then(|| {
                (
                    depth[layer],
                    m.mean,
                    m.se.unwrap_or_else(|| finite_mean(&std)),
                )
            })
        })
        .collect();
    points.sort_by(|a, b| a.0.total_cmp(&b.0));
    points
}

#[cfg(test)]
mod tests {
    use super::super::data::ModelRow;
    use super::*;

    fn model(name: &str, arch: &str) -> ModelRow {
        ModelRow {
            model: format!("{name}@step9"),
            network: name.into(),
            arch: arch.into(),
            stimuli: "base".into(),
            accuracy: None,
            step: Some(9),
            epoch: None,
            test_accuracy: None,
            held_out_loss: None,
        }
    }

    fn row(a: &str, b: &str, layer: &str, depth: (f64, f64), score: f64) -> ScoreRow {
        ScoreRow::for_test(
            &format!("{a}@step9"),
            &format!("{b}@step9"),
            layer,
            depth,
            score,
        )
    }

    #[test]
    fn cross_objective_curves_pair_layers_by_name_at_the_moco_depth() {
        // conv1 is at depth 0 in both networks; layer4 at 0.5 in the supervised network and
        // 0.25 in the MoCo ones (the projection head adds layers); the head has no namesake
        let r = Results {
            models: vec![
                model("sup", "resnet18"),
                model("m0", "resnet18-moco"),
                model("m1", "resnet18-moco"),
            ],
            scores: vec![
                row("m0", "m1", "conv1", (0.0, 0.0), 0.9),
                row("m0", "m1", "layer4", (0.25, 0.25), 0.6),
                row("m0", "m1", "fc.2", (1.0, 1.0), 0.8),
                row("sup", "m0", "conv1", (0.0, 0.0), 0.85),
                row("sup", "m0", "layer4", (0.5, 0.25), 0.3),
                row("m1", "sup", "conv1", (0.0, 0.0), 0.95),
                row("m1", "sup", "layer4", (0.25, 0.5), 0.5),
            ],
        };
        let moco = vec!["resnet18-moco".to_string()];
        let lines = chart(&r, &moco, Some(9)).expect("a chart");
        assert_eq!(lines.panels.len(), 1);
        let series = &lines.panels[0].series;
        let labels: Vec<&str> = series.iter().map(|s| s.label.as_str()).collect();
        assert_eq!(labels, ["MoCo × MoCo (seed pairs)", "supervised × MoCo"]);
        let xy = |s: &Series| -> Vec<(f64, f64)> { s.points.iter().map(|p| (p.0, p.1)).collect() };
        // the head is not a shared layer, so the MoCo curve stops at layer4
        assert_eq!(xy(&series[0]), [(0.0, 0.9), (0.25, 0.6)]);
        let cross = xy(&series[1]);
        assert_eq!(cross.len(), 2);
        assert!((cross[0].1 - 0.9).abs() < 1e-12 && (cross[1].1 - 0.4).abs() < 1e-12);
        assert_eq!((cross[0].0, cross[1].0), (0.0, 0.25));
        // no supervised family compared with a MoCo one: no figure
        let alone = Results {
            scores: r.scores[..3].to_vec(),
            models: r.models.clone(),
        };
        assert!(chart(&alone, &moco, Some(9)).is_none());
    }
}
