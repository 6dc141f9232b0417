//! The paper's language-model audit (its section 4.6 and Figure 8) from a language
//! pipeline's results: alignment per layer by metric within a depth (8a), layer × layer maps
//! within a depth (8b) and across depths (8c), and alignment over training at relative depths
//! 0, ½ and 1 beside the held-out loss (8d); and the claims those numbers decide.

use std::collections::BTreeMap;

use super::claims::{has_metric, not_measured, ordering, Claim};
use super::data::{over_pairs, Results, ScoreRow};
use super::figures::{
    colour_of, depth_series, figure, layer_grid, panel_size, score_range, y_range, Figure,
    LayerGrid,
};
use super::plot::{Heatmap, Lines, Panel, Secondary, Series, COLOURS};
use crate::error::UserError;

/// The metrics of Figure 8a, in order of decreasing freedom.
const METRICS: [&str; 5] = [
    "linear",
    "procrustes",
    "permutation",
    "soft-matching",
    "cka",
];
/// The metric of the layer maps and the training curves (the paper's choice).
const MAIN: &str = "procrustes";
/// The relative depths of Figure 8d.
const DEPTHS: [f64; 3] = [0.0, 0.5, 1.0];
/// The share of its change from step 0 to the end that alignment must reach.
const REACHED: f64 = 0.9;
/// A fall from the peak larger than this share of the change counts as a decline.
const DECLINE: f64 = 0.1;

/// The decoder architectures trained here (`gpt-<blocks>`), by depth.
fn decoders(r: &Results) -> Vec<String> {
    let mut a: Vec<String> = r
        .archs()
        .into_iter()
        .filter(|a| a.starts_with("gpt-"))
        .collect();
    a.sort_by_key(|a| a[4..].parse::<usize>().unwrap_or(0));
    a
}

/// Figure 8's panels this pipeline's results support.
pub fn figures(r: &Results) -> Result<Vec<Figure>, UserError> {
    let mut out = Vec::new();
    let archs = decoders(r);
    let last = r.final_step();
    out.extend(per_layer(r, &archs, last)?);
    for map in grids(r, last) {
        out.push(grid_figure(map)?);
    }
    out.extend(over_training(r, &archs)?);
    Ok(out)
}

/// 8a: seed-pair alignment per layer for each metric, one panel per depth.
fn per_layer(
    r: &Results,
    archs: &[String],
    last: Option<u64>,
) -> Result<Option<Figure>, UserError> {
    let mut panels = Vec::new();
    for a in archs {
        let series: Vec<Series> = METRICS
            .iter()
            .filter_map(|m| {
                let rows = r.within(a, last, "base", m);
                (!rows.is_empty()).then(|| depth_series(m.to_string(), colour_of(m), false, &rows))
            })
            .collect();
        if !series.is_empty() {
            panels.push(Panel {
                title: format!("{a} (seed pairs)"),
                series,
            });
        }
    }
    if panels.is_empty() {
        return Ok(None);
    }
    let y = score_range(&panels);
    let n = panels.len();
    let chart = Lines {
        x_desc: "relative depth (0 = embedding output, 1 = last block)".into(),
        y_desc: "alignment score (fold mean)".into(),
        x_range: (-0.03, 1.03),
        y_range: y,
        log_x: false,
        secondary: None,
        panels,
    };
    Ok(Some(figure(
        "fig8a_layers",
        "Language models: alignment per layer (seeds within a depth)",
        format!(
            "Alignment of decoders that differ only by seed, layer with layer, for each metric, at the last checkpoint (step {}); mean over seed pairs, error bars: standard error over seed pairs (delete-one-network jackknife) where there are three or more seeds, else the fold standard deviation.",
            last.map_or("-".into(), |s| s.to_string())
        ),
        &chart,
        panel_size(n),
    )?))
}

/// One layer × layer map: its figure name, the two models and their architectures.
struct LayerMap {
    name: String,
    a: String,
    b: String,
    arch_a: String,
    arch_b: String,
    grid: LayerGrid,
}

/// One curve over training: the layer's relative depth and (step, mean, error) points.
struct Trajectory {
    depth: f64,
    points: Vec<(u64, f64, f64)>,
}

/// The layer × layer Procrustes maps at the last checkpoint: the first seed pair of each
/// depth (8b) and the first pair across depths (8c).
fn grids(r: &Results, last: Option<u64>) -> Vec<LayerMap> {
    let mut by: BTreeMap<(String, String), Vec<&ScoreRow>> = BTreeMap::new();
    for row in r
        .scores
        .iter()
        .filter(|s| s.metric == MAIN && s.stimuli == "base")
    {
        if r.step(&row.model_a) == last && r.step(&row.model_b) == last {
            by.entry((row.model_a.clone(), row.model_b.clone()))
                .or_default()
                .push(row);
        }
    }
    let mut out: Vec<LayerMap> = Vec::new();
    for ((a, b), rows) in by {
        let (aa, ab) = (r.arch(&a).unwrap_or("?"), r.arch(&b).unwrap_or("?"));
        if !aa.starts_with("gpt-") || !ab.starts_with("gpt-") {
            continue;
        }
        let name = if aa == ab {
            format!("fig8b_map_{aa}")
        } else {
            "fig8c_map_across".to_string()
        };
        if out.iter().any(|m| m.name == name) {
            continue;
        }
        if let Some(grid) = layer_grid(&rows) {
            out.push(LayerMap {
                name,
                arch_a: aa.to_string(),
                arch_b: ab.to_string(),
                a,
                b,
                grid,
            });
        }
    }
    out
}

fn grid_figure(map: LayerMap) -> Result<Figure, UserError> {
    let LayerMap {
        name,
        a,
        b,
        arch_a: aa,
        arch_b: ab,
        grid: g,
    } = map;
    let within = aa == ab;
    let chart = Heatmap {
        title: format!("{MAIN}: {a} × {b}"),
        rows: g.la.iter().map(|l| l.1.clone()).collect(),
        cols: g.lb.iter().map(|l| l.1.clone()).collect(),
        values: g.values,
        axes: (
            format!("layer of {a} ({aa}, embedding output first)"),
            format!("layer of {b} ({ab}, embedding output first)"),
        ),
    };
    figure(
        &name,
        &if within {
            format!("Language models: layer × layer {MAIN} within {aa}")
        } else {
            format!("Language models: layer × layer {MAIN} across depths ({aa} × {ab})")
        },
        format!(
            "{MAIN} score of every layer of {a} against every layer of {b} at the last checkpoint, with each row's and column's maximum beside the map."
        ),
        &chart,
        (900, 760),
    )
}

/// The seed-pair Procrustes score of `arch` at each step for the layer nearest relative
/// depth `d` (mean over pairs), with that layer's depth.
fn trajectory(r: &Results, arch: &str, d: f64) -> Option<Trajectory> {
    let last = r.final_step()?;
    let depths: Vec<f64> = r
        .within(arch, Some(last), "base", MAIN)
        .iter()
        .map(|x| x.depth_a)
        .collect();
    let near = depths
        .iter()
        .copied()
        .min_by(|x, y| (x - d).abs().total_cmp(&(y - d).abs()))?;
    let points: Vec<(u64, f64, f64)> = r
        .steps()
        .into_iter()
        .filter_map(|s| {
            let rows: Vec<&ScoreRow> = r
                .within(arch, Some(s), "base", MAIN)
                .into_iter()
                .filter(|x| (x.depth_a - near).abs() < 1e-9)
                .collect();
            let m = over_pairs(&rows, |x| Some(x.score));
            (m.pairs > 0).then(|| (s, m.mean, m.se.unwrap_or(0.0)))
        })
        .collect();
    (points.len() >= 3).then_some(Trajectory {
        depth: near,
        points,
    })
}

/// 8d: Procrustes over training at relative depths 0, ½ and 1, held-out loss on the right.
fn over_training(r: &Results, archs: &[String]) -> Result<Option<Figure>, UserError> {
    let mut panels = Vec::new();
    for a in archs {
        let mut series: Vec<Series> = DEPTHS
            .iter()
            .enumerate()
            .filter_map(|(i, &d)| {
                let Trajectory {
                    depth: near,
                    points,
                } = trajectory(r, a, d)?;
                Some(Series {
                    label: format!("relative depth {d} (layer at {near:.2})"),
                    colour: COLOURS[i],
                    light: false,
                    points: points
                        .iter()
                        .map(|&(s, v, e)| (s as f64 + 1.0, v, e))
                        .collect(),
                    scatter: false,
                })
            })
            .collect();
        let loss = r.held_out_loss_by_step(a);
        if !loss.is_empty() && !series.is_empty() {
            series.push(Series {
                label: "held-out loss (right axis)".into(),
                colour: COLOURS[7],
                light: true,
                points: loss
                    .iter()
                    .map(|&(s, v)| (s as f64 + 1.0, v, 0.0))
                    .collect(),
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
                .filter(|s| !s.label.starts_with("held-out"))
                .flat_map(|s| s.points.iter().map(|p| p.1))
        }),
        0.0,
        1.0,
    );
    let last = r.final_step().unwrap_or(1) as f64 + 1.0;
    let n = panels.len();
    // the losses' own range: from 0 to the largest (step 0's, ~ln 256 = 5.5 nats per byte)
    let top_loss = panels
        .iter()
        .flat_map(|p| p.series.iter().filter(|s| s.label.starts_with("held-out")))
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .filter(|v| v.is_finite())
        .fold(0.0f64, f64::max);
    let chart = Lines {
        x_desc: "training step + 1 (log scale; 1 = untrained)".into(),
        y_desc: format!("{MAIN} alignment of seed pairs (fold mean)"),
        x_range: (1.0, last * 1.2),
        y_range: y,
        log_x: true,
        secondary: Some(Secondary {
            prefix: "held-out loss".into(),
            desc: "held-out loss (nats per byte)".into(),
            range: (0.0, if top_loss > 0.0 { top_loss * 1.05 } else { 1.0 }),
        }),
        panels,
    };
    Ok(Some(figure(
        "fig8d_training",
        "Language models: alignment during training",
        format!(
            "Seed-pair {MAIN} alignment of the layer nearest relative depths 0, 0.5 and 1 at each checkpoint (mean over pairs; error bars: standard error over seed pairs where there are three or more seeds), with the held-out loss (grey, right axis, mean over the decoders)."
        ),
        &chart,
        panel_size(n),
    )?))
}

/// The claims of the language audit.
pub fn claims(r: &Results) -> Vec<Claim> {
    let archs = decoders(r);
    vec![
        ordering(r, &archs, r.final_step()),
        relative_depth(r),
        emergence(r, &archs),
    ]
}

/// "Layers at similar relative depth align most": each row's argmax of the last checkpoint's
/// layer maps, its distance in relative depth from the row's layer, against the distance of
/// a layer drawn uniformly (chance).
fn relative_depth(r: &Results) -> Claim {
    let (id, finding) = (
        "relative-depth",
        "layers at similar relative depth align most (each layer's best match lies near the diagonal of relative depth)",
    );
    let maps = grids(r, r.final_step());
    if maps.is_empty() {
        return not_measured(
            id,
            finding,
            "needs procrustes scores of every layer pair (`layers = \"all\"`) of decoders at their last checkpoint",
        );
    }
    let mut values = BTreeMap::new();
    let mut text = Vec::new();
    let mut verdicts = Vec::new();
    for LayerMap {
        name,
        a,
        b,
        grid: g,
        ..
    } in &maps
    {
        let (mut dist, mut chance) = (Vec::new(), Vec::new());
        for (i, row) in g.values.iter().enumerate() {
            let Some(j) = (0..row.len())
                .filter(|&j| row[j].is_finite())
                .max_by(|&x, &y| row[x].total_cmp(&row[y]))
            else {
                continue;
            };
            let di = g.la[i].0;
            dist.push((di - g.lb[j].0).abs());
            chance.push(g.lb.iter().map(|l| (di - l.0).abs()).sum::<f64>() / g.lb.len() as f64);
        }
        let (d, c) = (
            super::data::finite_mean(&dist),
            super::data::finite_mean(&chance),
        );
        let key = name.trim_start_matches("fig8");
        values.insert(format!("{key}.argmax_distance"), d);
        values.insert(format!("{key}.chance_distance"), c);
        text.push(format!(
            "{a} × {b}: best match {d:.3} from the diagonal on average (chance {c:.3})"
        ));
        verdicts.push(d < 0.5 * c);
    }
    Claim {
        id,
        finding,
        holds: Some(verdicts.iter().all(|v| *v)),
        measured: format!(
            "{}; holds when the distance is under half of chance",
            text.join("; ")
        ),
        values,
    }
}

/// "Alignment emerges early and plateaus while the loss still falls": per depth and relative
/// depth, the first step reaching 90% of the change from step 0 to the last checkpoint,
/// whether the curve then plateaus or declines, and the held-out loss then and at the end.
fn emergence(r: &Results, archs: &[String]) -> Claim {
    let (id, finding) = (
        "emerges-early",
        "alignment reaches 90% of its change from step 0 early in training and plateaus (or declines) while the held-out loss still falls",
    );
    if !has_metric(r, MAIN) || r.steps().len() < 3 {
        return not_measured(
            id,
            finding,
            "needs procrustes scores of decoders at three or more checkpoints",
        );
    }
    let mut values = BTreeMap::new();
    let mut text = Vec::new();
    let mut verdicts = Vec::new();
    for a in archs {
        let loss = r.held_out_loss_by_step(a);
        let loss_at = |s: u64| loss.iter().find(|l| l.0 == s).map_or(f64::NAN, |l| l.1);
        for d in DEPTHS {
            let Some(Trajectory { points, .. }) = trajectory(r, a, d) else {
                continue;
            };
            let (first, end) = (points[0], *points.last().expect("three points"));
            let change = end.1 - first.1;
            let key = format!("{a}.depth{d}");
            values.insert(format!("{key}.final"), end.1);
            if change <= 0.0 {
                text.push(format!(
                    "{a} at depth {d}: alignment does not rise ({:.3} at step 0, {:.3} at step {})",
                    first.1, end.1, end.0
                ));
                verdicts.push(false);
                continue;
            }
            let reached = points
                .iter()
                .find(|p| p.1 - first.1 >= REACHED * change)
                .expect("the last point reaches it");
            let peak = points
                .iter()
                .filter(|p| p.0 >= reached.0)
                .map(|p| p.1)
                .fold(f64::NEG_INFINITY, f64::max);
            let shape = if peak - end.1 > DECLINE * change {
                "then declines"
            } else {
                "then plateaus"
            };
            let (l_then, l_end) = (loss_at(reached.0), loss_at(end.0));
            values.insert(format!("{key}.step_90"), reached.0 as f64);
            values.insert(format!("{key}.loss_at_step_90"), l_then);
            values.insert(format!("{key}.loss_final"), l_end);
            text.push(format!(
                "{a} at depth {d}: 90% of the rise ({:.3} → {:.3}) by step {} of {}, {shape}; held-out loss {l_then:.3} then, {l_end:.3} at the end",
                first.1, end.1, reached.0, end.0
            ));
            verdicts.push(reached.0 < end.0 && l_end < l_then);
        }
    }
    if verdicts.is_empty() {
        return not_measured(
            id,
            finding,
            "needs seed pairs of decoders at three or more checkpoints",
        );
    }
    Claim {
        id,
        finding,
        holds: Some(verdicts.iter().all(|v| *v)),
        measured: format!(
            "{}; holds when every curve reaches 90% before the last checkpoint and the loss falls after",
            text.join("; ")
        ),
        values,
    }
}
