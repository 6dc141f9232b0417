//! The paper's findings, checked against a pipeline's own numbers: each claim states what
//! was measured and whether it holds here (or why it could not be measured).

use std::collections::BTreeMap;

use serde::Serialize;

use super::data::{bucket, by_depth, mean, pearson, Results};

/// One finding and what this pipeline's numbers say about it.
#[derive(Debug, Clone, Serialize)]
pub struct Claim {
    /// Short identifier.
    pub id: &'static str,
    /// The finding, as the paper states it.
    pub finding: &'static str,
    /// Whether it holds here; `None` when the pipeline does not measure it.
    pub holds: Option<bool>,
    /// The numbers behind the verdict, in words.
    pub measured: String,
    /// The same numbers, by name (for tests and scripts).
    pub values: BTreeMap<String, f64>,
}

/// Size of a rotation effect treated as "lowered" (score units).
pub const ROTATION_EFFECT: f64 = 0.02;

fn not_measured(id: &'static str, finding: &'static str, why: &str) -> Claim {
    Claim {
        id,
        finding,
        holds: None,
        measured: format!("not measured: {why}"),
        values: BTreeMap::new(),
    }
}

fn has_metric(r: &Results, metric: &str) -> bool {
    r.scores.iter().any(|s| s.metric == metric)
}

/// The metric the single-metric claims use: Procrustes, else the first unrotated metric.
pub fn main_metric(r: &Results) -> Option<String> {
    if has_metric(r, "procrustes") {
        return Some("procrustes".into());
    }
    r.scores
        .iter()
        .find(|s| !s.metric.ends_with(":rotated"))
        .map(|s| s.metric.clone())
}

/// Mean score of `arch`'s seed pairs over layers (optionally one depth bucket).
fn layer_mean(
    r: &Results,
    arch: &str,
    step: Option<u64>,
    set: &str,
    metric: &str,
    b: Option<usize>,
) -> f64 {
    let rows = r.within(arch, step, set, metric);
    let v: Vec<f64> = by_depth(&rows)
        .into_iter()
        .filter(|(d, _, _)| b.is_none_or(|b| bucket(*d) == b))
        .map(|(_, s, _)| s)
        .collect();
    mean(&v)
}

fn all_hold(per_arch: &[(String, bool)]) -> Option<bool> {
    (!per_arch.is_empty()).then(|| per_arch.iter().all(|(_, h)| *h))
}

/// Every claim, in the paper's order.
pub fn claims(r: &Results) -> Vec<Claim> {
    let archs = r.archs();
    let last = r.final_step();
    let metric = main_metric(r).unwrap_or_default();
    vec![
        ordering(r, &archs, last),
        early_late(r, &archs, last, &metric),
        trained_untrained(r, &archs, last, &metric),
        rotation(r, &archs, last, true),
        rotation(r, &archs, last, false),
        first_epoch(r, &archs, &metric),
        ood_late(r, &archs, last, &metric),
        ood_accuracy_trend(r, &archs, last, &metric),
        above_chance(r),
    ]
}

/// Holm's step-down adjustment of `p` (same order as given).
pub fn holm(p: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..p.len()).collect();
    order.sort_by(|&a, &b| p[a].total_cmp(&p[b]));
    let mut adjusted = vec![0.0; p.len()];
    let mut running: f64 = 0.0;
    for (rank, &i) in order.iter().enumerate() {
        running = running.max(((p.len() - rank) as f64 * p[i]).min(1.0));
        adjusted[i] = running;
    }
    adjusted
}

/// Significance level of the above-chance claim, after Holm's correction over layers.
pub const ABOVE_CHANCE_ALPHA: f64 = 0.01;

/// "Alignment is above chance at every layer": the stimulus-permutation null's p-values of
/// the base-set scores of one metric (permutation, else soft-matching, else the first with a
/// null), Holm-corrected over those scores.
fn above_chance(r: &Results) -> Claim {
    const ID: &str = "above-chance";
    const FINDING: &str = "Alignment between networks is above chance at every layer (stimulus-permutation null, Holm-corrected over layers, p < 0.01)";
    let with_null = |m: &str| {
        r.scores
            .iter()
            .filter(|s| s.metric == m && s.stimuli == "base")
            .filter_map(|s| s.null_p)
            .collect::<Vec<f64>>()
    };
    let metric = ["permutation", "soft-matching"]
        .into_iter()
        .map(str::to_string)
        .chain(r.scores.iter().map(|s| s.metric.clone()))
        .find(|m| !with_null(m).is_empty());
    let Some(metric) = metric else {
        return not_measured(ID, FINDING, "no score has a null (set `[statistics] null`)");
    };
    let p = with_null(&metric);
    let draws = r
        .scores
        .iter()
        .filter(|s| s.metric == metric && s.stimuli == "base")
        .filter_map(|s| s.null_n)
        .min()
        .unwrap_or(0);
    // With N draws no p-value is below 1/(N+1), so Holm over L scores can reject all of them
    // only when L/(N+1) < α.
    let needed = (p.len() as f64 / ABOVE_CHANCE_ALPHA).ceil() as usize;
    if draws < needed {
        return not_measured(
            ID,
            FINDING,
            &format!(
                "{metric}: {} layer pairs with {draws} null draws each; Holm's correction at p < {ABOVE_CHANCE_ALPHA} needs at least {needed} draws",
                p.len()
            ),
        );
    }
    let adjusted = holm(&p);
    let above = adjusted.iter().filter(|&&a| a < ABOVE_CHANCE_ALPHA).count();
    let smallest = p.iter().cloned().fold(f64::INFINITY, f64::min);
    let mut values = BTreeMap::new();
    values.insert("scores".into(), p.len() as f64);
    values.insert("above_chance".into(), above as f64);
    values.insert("smallest_p".into(), smallest);
    Claim {
        id: ID,
        finding: FINDING,
        holds: Some(above == p.len()),
        measured: format!(
            "{metric}: {above} of {} layer pairs above chance after Holm's correction ({draws} null draws each; smallest raw p {smallest:.5})",
            p.len()
        ),
        values,
    }
}

fn ordering(r: &Results, archs: &[String], last: Option<u64>) -> Claim {
    let (id, finding) = (
        "metric-order",
        "linear ≥ Procrustes ≥ permutation, on average over layers",
    );
    if !["linear", "procrustes", "permutation"]
        .iter()
        .all(|m| has_metric(r, m))
        || archs.is_empty()
    {
        return not_measured(
            id,
            finding,
            "needs linear, procrustes and permutation scores of seed pairs",
        );
    }
    let mut values = BTreeMap::new();
    let mut text = Vec::new();
    let mut verdicts = Vec::new();
    for a in archs {
        let m: Vec<f64> = ["linear", "procrustes", "permutation"]
            .iter()
            .map(|metric| layer_mean(r, a, last, "base", metric, None))
            .collect();
        for (name, v) in ["linear", "procrustes", "permutation"].iter().zip(&m) {
            values.insert(format!("{a}.{name}"), *v);
        }
        text.push(format!("{a}: {:.3} / {:.3} / {:.3}", m[0], m[1], m[2]));
        verdicts.push((a.clone(), m[0] >= m[1] && m[1] >= m[2]));
    }
    Claim {
        id,
        finding,
        holds: all_hold(&verdicts),
        measured: text.join("; "),
        values,
    }
}

fn early_late(r: &Results, archs: &[String], last: Option<u64>, metric: &str) -> Claim {
    let (id, finding) = (
        "early-vs-late",
        "early layers are more aligned than late ones",
    );
    if archs.is_empty() {
        return not_measured(id, finding, "needs seed pairs of one architecture");
    }
    let mut values = BTreeMap::new();
    let (mut text, mut verdicts) = (Vec::new(), Vec::new());
    for a in archs {
        let (e, l) = (
            layer_mean(r, a, last, "base", metric, Some(0)),
            layer_mean(r, a, last, "base", metric, Some(2)),
        );
        values.insert(format!("{a}.early"), e);
        values.insert(format!("{a}.late"), l);
        text.push(format!("{a} ({metric}): early {e:.3}, late {l:.3}"));
        verdicts.push((a.clone(), e > l));
    }
    Claim {
        id,
        finding,
        holds: all_hold(&verdicts),
        measured: text.join("; "),
        values,
    }
}

fn trained_untrained(r: &Results, archs: &[String], last: Option<u64>, metric: &str) -> Claim {
    let (id, finding) = (
        "trained-vs-untrained",
        "trained networks are more aligned than untrained ones in deep layers",
    );
    let steps = r.steps();
    if archs.is_empty() || steps.first() != Some(&0) || last.unwrap_or(0) == 0 {
        return not_measured(
            id,
            finding,
            "needs checkpoints at step 0 and after training",
        );
    }
    let mut values = BTreeMap::new();
    let (mut text, mut verdicts) = (Vec::new(), Vec::new());
    for a in archs {
        let (t, u) = (
            layer_mean(r, a, last, "base", metric, Some(2)),
            layer_mean(r, a, Some(0), "base", metric, Some(2)),
        );
        values.insert(format!("{a}.trained"), t);
        values.insert(format!("{a}.untrained"), u);
        text.push(format!(
            "{a} ({metric}, late layers): trained {t:.3}, untrained {u:.3}"
        ));
        verdicts.push((a.clone(), t > u));
    }
    Claim {
        id,
        finding,
        holds: all_hold(&verdicts),
        measured: text.join("; "),
        values,
    }
}

fn rotation(r: &Results, archs: &[String], last: Option<u64>, cnn: bool) -> Claim {
    let (id, finding) = if cnn {
        (
            "rotation-cnn",
            "a random rotation lowers the permutation score in CNNs (by > 0.02)",
        )
    } else {
        (
            "rotation-vit",
            "a random rotation does not lower the permutation score in ViTs (by > 0.02)",
        )
    };
    let chosen: Vec<&String> = archs
        .iter()
        .filter(|a| (a.as_str() == "vit") != cnn)
        .collect();
    if !has_metric(r, "permutation:rotated") || chosen.is_empty() {
        let what = if cnn { "CNN" } else { "ViT" };
        return not_measured(
            id,
            finding,
            &format!("needs permutation and permutation:rotated scores of {what} seed pairs"),
        );
    }
    let mut values = BTreeMap::new();
    let (mut text, mut verdicts) = (Vec::new(), Vec::new());
    for a in chosen {
        let native = layer_mean(r, a, last, "base", "permutation", None);
        let rotated = layer_mean(r, a, last, "base", "permutation:rotated", None);
        let drop = native - rotated;
        values.insert(format!("{a}.native"), native);
        values.insert(format!("{a}.rotated"), rotated);
        text.push(format!(
            "{a}: native {native:.3}, rotated {rotated:.3} (drop {drop:.3})"
        ));
        verdicts.push((
            a.clone(),
            if cnn {
                drop > ROTATION_EFFECT
            } else {
                drop <= ROTATION_EFFECT
            },
        ));
    }
    Claim {
        id,
        finding,
        holds: all_hold(&verdicts),
        measured: text.join("; "),
        values,
    }
}

/// Alignment (mean over layers and seed pairs) at each checkpoint of `arch`.
pub fn alignment_by_step(r: &Results, arch: &str, metric: &str) -> Vec<(u64, f64)> {
    r.steps()
        .into_iter()
        .map(|s| (s, layer_mean(r, arch, Some(s), "base", metric, None)))
        .filter(|(_, v)| v.is_finite())
        .collect()
}

fn first_epoch(r: &Results, archs: &[String], metric: &str) -> Claim {
    let (id, finding) = (
        "first-epoch",
        "most of the final alignment is reached within the first epoch",
    );
    let steps = r.steps();
    if archs.is_empty() || steps.len() < 3 || steps[0] != 0 {
        return not_measured(
            id,
            finding,
            "needs step 0 and at least two later checkpoints",
        );
    }
    let epoch = |s: u64| r.epoch_of(s).unwrap_or(f64::NAN);
    let last_epoch = epoch(*steps.last().expect("checkpoints"));
    let mut values = BTreeMap::new();
    let (mut text, mut verdicts) = (Vec::new(), Vec::new());
    for a in archs {
        let curve = alignment_by_step(r, a, metric);
        let (Some(&(_, start)), Some(&(_, end))) = (curve.first(), curve.last()) else {
            continue;
        };
        let progress = |v: f64| (v - start) / (end - start);
        let at90 = curve
            .iter()
            .find(|(_, v)| progress(*v) >= 0.9)
            .map(|(s, _)| *s);
        let within = curve
            .iter()
            .rfind(|(s, _)| epoch(*s) <= 1.0 + 1e-9)
            .copied();
        if let Some(s) = at90 {
            values.insert(format!("{a}.step_90"), s as f64);
        }
        let mut line = format!(
            "{a} ({metric}): 90% of the change from step 0 reached at step {} (epoch {:.2})",
            at90.map(|s| s.to_string()).unwrap_or("-".into()),
            at90.map(epoch).unwrap_or(f64::NAN)
        );
        if let Some((s, v)) = within.filter(|_| last_epoch > 1.0 + 1e-9) {
            values.insert(format!("{a}.progress_epoch1"), progress(v));
            line.push_str(&format!(
                "; {:.0}% by step {s} (epoch {:.2})",
                100.0 * progress(v),
                epoch(s)
            ));
            verdicts.push((a.clone(), progress(v) >= 0.5));
        }
        text.push(line);
    }
    let mut measured = text.join("; ");
    if last_epoch <= 1.0 + 1e-9 {
        measured.push_str(" — training lasts one epoch or less, so the claim itself is not tested");
    }
    Claim {
        id,
        finding,
        holds: all_hold(&verdicts),
        measured,
        values,
    }
}

fn ood_late(r: &Results, archs: &[String], last: Option<u64>, metric: &str) -> Claim {
    let (id, finding) = (
        "ood-late",
        "out-of-distribution alignment is below in-distribution alignment in late layers",
    );
    let sets = r.ood_sets();
    if archs.is_empty() || sets.is_empty() {
        return not_measured(
            id,
            finding,
            "needs out-of-distribution sets (`stimuli.ood`)",
        );
    }
    let mut values = BTreeMap::new();
    let (mut text, mut verdicts) = (Vec::new(), Vec::new());
    for a in archs {
        let id_late = layer_mean(r, a, last, "base", metric, Some(2));
        let ood: Vec<f64> = sets
            .iter()
            .map(|s| layer_mean(r, a, last, s, metric, Some(2)))
            .collect();
        let ood_late = mean(&ood);
        values.insert(format!("{a}.id_late"), id_late);
        values.insert(format!("{a}.ood_late"), ood_late);
        text.push(format!(
            "{a} ({metric}, late layers): in-distribution {id_late:.3}, OOD mean {ood_late:.3} over {} sets",
            sets.len()
        ));
        verdicts.push((a.clone(), ood_late < id_late));
    }
    Claim {
        id,
        finding,
        holds: all_hold(&verdicts),
        measured: text.join("; "),
        values,
    }
}

/// Per layer depth of `arch`: the correlation, over OOD sets and seed pairs, between a pair's
/// alignment on a set and the pair's mean accuracy on it.
pub fn ood_accuracy_correlation(
    r: &Results,
    arch: &str,
    last: Option<u64>,
    metric: &str,
) -> Vec<(f64, f64)> {
    let mut by: BTreeMap<i64, (f64, Vec<f64>, Vec<f64>)> = BTreeMap::new();
    for set in r.ood_sets() {
        for row in r.within(arch, last, &set, metric) {
            let (Some(x), Some(y)) = (
                r.accuracy(&row.model_a, &set),
                r.accuracy(&row.model_b, &set),
            ) else {
                continue;
            };
            let e = by.entry((row.depth_a * 1e6).round() as i64).or_insert((
                row.depth_a,
                Vec::new(),
                Vec::new(),
            ));
            e.1.push(row.score);
            e.2.push((x + y) / 2.0);
        }
    }
    by.into_values()
        .map(|(d, s, a)| (d, pearson(&s, &a)))
        .filter(|(_, c)| c.is_finite())
        .collect()
}

fn ood_accuracy_trend(r: &Results, archs: &[String], last: Option<u64>, metric: &str) -> Claim {
    let (id, finding) = (
        "ood-accuracy-trend",
        "the correlation between OOD alignment and OOD accuracy grows with depth",
    );
    if archs.is_empty() || r.ood_sets().len() < 3 {
        return not_measured(id, finding, "needs at least three OOD sets with accuracies");
    }
    let mut values = BTreeMap::new();
    let (mut text, mut verdicts) = (Vec::new(), Vec::new());
    for a in archs {
        let c = ood_accuracy_correlation(r, a, last, metric);
        if c.len() < 2 {
            continue;
        }
        let (d, v): (Vec<f64>, Vec<f64>) = c.iter().copied().unzip();
        let (md, mv) = (mean(&d), mean(&v));
        let slope = d
            .iter()
            .zip(&v)
            .map(|(x, y)| (x - md) * (y - mv))
            .sum::<f64>()
            / d.iter().map(|x| (x - md).powi(2)).sum::<f64>();
        values.insert(format!("{a}.first"), v[0]);
        values.insert(format!("{a}.last"), v[v.len() - 1]);
        values.insert(format!("{a}.slope"), slope);
        text.push(format!(
            "{a} ({metric}): r = {:.2} at the first layer, {:.2} at the last, slope {slope:.2} per unit depth",
            v[0],
            v[v.len() - 1]
        ));
        verdicts.push((a.clone(), slope > 0.0));
    }
    Claim {
        id,
        finding,
        holds: all_hold(&verdicts),
        measured: text.join("; "),
        values,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holm_matches_statsmodels() {
        // statsmodels.stats.multitest.multipletests([0.01, 0.04, 0.03, 0.005], method="holm")
        let a = holm(&[0.01, 0.04, 0.03, 0.005]);
        let want = [0.03, 0.06, 0.06, 0.02];
        for (g, w) in a.iter().zip(want) {
            assert!((g - w).abs() < 1e-12, "{a:?}");
        }
    }
}
