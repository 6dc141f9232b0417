//! The paper's findings, checked against a pipeline's own numbers: each claim states what
//! was measured and whether it holds here (or why it could not be measured).

use std::collections::BTreeMap;

use serde::Serialize;

use repflow_kernels::across_scores::{correlation_test, pooled_null, PairMean};
use repflow_kernels::stats;

use super::data::{bucket, finite_mean, over_pairs, plus_minus, Results, ScoreRow};

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

/// A claim the pipeline does not measure, and why.
pub(super) fn not_measured(id: &'static str, finding: &'static str, why: &str) -> Claim {
    Claim {
        id,
        finding,
        holds: None,
        measured: format!("not measured: {why}"),
        values: BTreeMap::new(),
    }
}

/// Whether any score is of `metric`.
pub(super) fn has_metric(r: &Results, metric: &str) -> bool {
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

/// Mean score of `arch`'s seed pairs over layers (optionally one depth bucket): each pair's
/// mean over its layers, then the mean over pairs with its standard error.
pub(super) fn layer_mean(
    r: &Results,
    arch: &str,
    step: Option<u64>,
    set: &str,
    metric: &str,
    b: Option<usize>,
) -> PairMean {
    let rows: Vec<&ScoreRow> = r
        .within(arch, step, set, metric)
        .into_iter()
        .filter(|row| b.is_none_or(|b| bucket(row.depth_a) == b))
        .collect();
    over_pairs(&rows, |row| Some(row.score))
}

/// Records a mean and, when there is one, its standard error as `<name>` and `<name>_se`.
pub(super) fn record(values: &mut BTreeMap<String, f64>, name: String, m: &PairMean) {
    if let Some(se) = m.se {
        values.insert(format!("{name}_se"), se);
    }
    values.insert(name, m.mean);
}

/// Whether every architecture's verdict holds (`None` with none).
pub(super) fn all_hold(per_arch: &[(String, bool)]) -> Option<bool> {
    (!per_arch.is_empty()).then(|| per_arch.iter().all(|(_, h)| *h))
}

/// Every claim, in the paper's order.
pub fn claims(r: &Results) -> Vec<Claim> {
    if r.is_language() {
        return super::language::claims(r);
    }
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
        ood_accuracy(r, &archs, last, &metric),
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

/// "linear ≥ Procrustes ≥ permutation" per architecture; without permutation scores,
/// soft-matching stands in (between layers of equal width its optimal plan is a permutation,
/// so the two scores are the same).
pub(super) fn ordering(r: &Results, archs: &[String], last: Option<u64>) -> Claim {
    let (id, finding) = (
        "metric-order",
        "linear ≥ Procrustes ≥ permutation, on average over layers",
    );
    let third = if has_metric(r, "permutation") {
        "permutation"
    } else {
        "soft-matching"
    };
    let three = ["linear", "procrustes", third];
    if !three.iter().all(|m| has_metric(r, m)) || archs.is_empty() {
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
        let m: Vec<PairMean> = three
            .iter()
            .map(|metric| layer_mean(r, a, last, "base", metric, None))
            .collect();
        for (name, v) in three.iter().zip(&m) {
            record(&mut values, format!("{a}.{name}"), v);
        }
        text.push(format!(
            "{a} (linear / procrustes / {third}): {} / {} / {}",
            plus_minus(&m[0]),
            plus_minus(&m[1]),
            plus_minus(&m[2])
        ));
        verdicts.push((a.clone(), m[0].mean >= m[1].mean && m[1].mean >= m[2].mean));
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
        record(&mut values, format!("{a}.early"), &e);
        record(&mut values, format!("{a}.late"), &l);
        text.push(format!(
            "{a} ({metric}): early {}, late {}",
            plus_minus(&e),
            plus_minus(&l)
        ));
        verdicts.push((a.clone(), e.mean > l.mean));
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
        record(&mut values, format!("{a}.trained"), &t);
        record(&mut values, format!("{a}.untrained"), &u);
        text.push(format!(
            "{a} ({metric}, late layers): trained {}, untrained {}",
            plus_minus(&t),
            plus_minus(&u)
        ));
        verdicts.push((a.clone(), t.mean > u.mean));
    }
    Claim {
        id,
        finding,
        holds: all_hold(&verdicts),
        measured: text.join("; "),
        values,
    }
}

/// Significance level of the rotation and OOD-correlation claims.
pub const CLAIM_ALPHA: f64 = 0.05;

/// "A rotation lowers the permutation score in CNNs / not in ViTs". With a rotation null
/// (`[statistics] rotations`), the test is the mean native permutation score over the
/// architecture's layer pairs and seed pairs against the same mean of the rotation null's
/// draws taken draw by draw ([`pooled_null`]): lowered when p < 0.05, not lowered (native and
/// rotated statistically indistinguishable) otherwise. Without one, the verdict falls back to
/// the effect of the single rotation of `permutation:rotated` (> 0.02), and says so.
fn rotation(r: &Results, archs: &[String], last: Option<u64>, cnn: bool) -> Claim {
    let (id, finding) = if cnn {
        (
            "rotation-cnn",
            "a random rotation lowers the permutation score in CNNs (rotation null, p < 0.05)",
        )
    } else {
        (
            "rotation-vit",
            "a random rotation does not lower the permutation score in ViTs (rotation null, p ≥ 0.05)",
        )
    };
    let chosen: Vec<&String> = archs
        .iter()
        .filter(|a| (a.as_str() == "vit") != cnn)
        .collect();
    let has_null = |a: &str| {
        r.within(a, last, "base", "permutation")
            .iter()
            .any(|row| row.rotation_draws.is_some())
    };
    let measurable = |a: &&String| has_null(a) || has_metric(r, "permutation:rotated");
    if chosen.is_empty() || !chosen.iter().any(measurable) {
        let what = if cnn { "CNN" } else { "ViT" };
        return not_measured(
            id,
            finding,
            &format!("needs permutation scores of {what} seed pairs with a rotation null (`[statistics] rotations`) or permutation:rotated scores"),
        );
    }
    let mut values = BTreeMap::new();
    let (mut text, mut verdicts) = (Vec::new(), Vec::new());
    for a in chosen.into_iter().filter(measurable) {
        let native = layer_mean(r, a, last, "base", "permutation", None);
        record(&mut values, format!("{a}.native"), &native);
        let mut line = format!("{a}: native {}", plus_minus(&native));
        let rotated = layer_mean(r, a, last, "base", "permutation:rotated", None);
        if rotated.pairs > 0 {
            record(&mut values, format!("{a}.rotated"), &rotated);
            let percent = 100.0 * (native.mean - rotated.mean) / native.mean;
            values.insert(format!("{a}.rotation_drop_percent"), percent);
            line.push_str(&format!(
                ", one rotation {} (drop {:.3}, {percent:.2}% of native)",
                plus_minus(&rotated),
                native.mean - rotated.mean
            ));
        }
        let tested: Vec<&ScoreRow> = r
            .within(a, last, "base", "permutation")
            .into_iter()
            .filter(|row| row.rotation_draws.is_some())
            .collect();
        let observed: Vec<f64> = tested.iter().map(|row| row.score).collect();
        let draws: Vec<&[f64]> = tested
            .iter()
            .filter_map(|row| row.rotation_draws.as_deref())
            .collect();
        if tested.is_empty() && rotated.pairs > 0 {
            let drop = native.mean - rotated.mean;
            line.push_str(&format!(
                " — no rotation null (set `[statistics] rotations`): verdict by the effect size alone (> {ROTATION_EFFECT})"
            ));
            verdicts.push((
                a.clone(),
                if cnn {
                    drop > ROTATION_EFFECT
                } else {
                    drop <= ROTATION_EFFECT
                },
            ));
        } else if !tested.is_empty() {
            match pooled_null(&observed, &draws, 0) {
                Ok(null) => {
                    let per_layer = tested
                        .iter()
                        .filter(|row| row.rotation_p.is_some_and(|p| p < CLAIM_ALPHA))
                        .count();
                    let native_tested = observed.iter().sum::<f64>() / observed.len() as f64;
                    let percent = 100.0 * (native_tested - null.mean) / native_tested;
                    values.insert(format!("{a}.rotation_null_mean"), null.mean);
                    values.insert(format!("{a}.rotation_null_drop_percent"), percent);
                    values.insert(format!("{a}.rotation_p"), null.p_value);
                    line.push_str(&format!(
                        "; rotation null ({} Haar rotations of each of {} layer pairs): mean {:.3} (rotation lowers the mean by {percent:.2}%), p = {:.3} for the mean over layers; p < {CLAIM_ALPHA} at {per_layer} of {} layer pairs (uncorrected)",
                        null.n,
                        tested.len(),
                        null.mean,
                        null.p_value,
                        tested.len()
                    ));
                    verdicts.push((a.clone(), (null.p_value < CLAIM_ALPHA) == cnn));
                }
                Err(e) => line.push_str(&format!("; rotation null not usable: {e}")),
            }
        }
        text.push(line);
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
        .map(|s| (s, layer_mean(r, arch, Some(s), "base", metric, None).mean))
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
        // a fraction of the net change means something only when the net change dominates
        // the curve: a dip and recovery to where it started has no "90% of the change"
        let (lo, hi) = curve
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), &(_, v)| {
                (l.min(v), h.max(v))
            });
        let net = end - start;
        // (a NaN net change counts as too small)
        if net.is_nan() || net.abs() < 0.5 * (hi - lo) {
            text.push(format!(
                "{a} ({metric}): no fraction of the change is defined — the net change from step 0 ({net:+.3}) is under half the curve's range ({lo:.3}–{hi:.3})"
            ));
            continue;
        }
        let progress = |v: f64| (v - start) / net;
        // the first checkpoint from which the curve stays at 90% of the change or beyond
        let at90 = (0..curve.len())
            .find(|&i| curve[i..].iter().all(|(_, v)| progress(*v) >= 0.9))
            .map(|i| curve[i].0);
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
            .map(|s| layer_mean(r, a, last, s, metric, Some(2)).mean)
            .collect();
        let ood_late = finite_mean(&ood);
        record(&mut values, format!("{a}.id_late"), &id_late);
        values.insert(format!("{a}.ood_late"), ood_late);
        text.push(format!(
            "{a} ({metric}, late layers): in-distribution {}, OOD mean {ood_late:.3} over {} sets",
            plus_minus(&id_late),
            sets.len()
        ));
        verdicts.push((a.clone(), ood_late < id_late.mean));
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
        .map(|(d, s, a)| (d, stats::pearson(&s, &a).unwrap_or(f64::NAN)))
        .filter(|(_, c)| c.is_finite())
        .collect()
}

/// Random pairings of the OOD-correlation test when there are too many sets to enumerate.
pub const CORRELATION_PERMUTATIONS: usize = 9999;

/// "OOD alignment correlates with OOD accuracy": per architecture, over the OOD sets, the
/// Pearson correlation between a set's late-layer alignment (mean over the seed pairs) and
/// the networks' mean accuracy on it, with its one-sided permutation p-value (every pairing
/// of sets up to eight, else 9,999 seeded ones: [`correlation_test`]). Holds when r > 0 and
/// p < 0.05 for every architecture.
fn ood_accuracy(r: &Results, archs: &[String], last: Option<u64>, metric: &str) -> Claim {
    let (id, finding) = (
        "ood-accuracy",
        "out-of-distribution alignment of late layers correlates with out-of-distribution accuracy (over OOD sets; permutation test, p < 0.05)",
    );
    let sets = r.ood_sets();
    if archs.is_empty() || sets.len() < 3 {
        return not_measured(id, finding, "needs at least three OOD sets with accuracies");
    }
    let mut values = BTreeMap::new();
    let (mut text, mut verdicts) = (Vec::new(), Vec::new());
    for a in archs {
        let (mut align, mut acc, mut without) = (Vec::new(), Vec::new(), Vec::new());
        for set in &sets {
            let rows: Vec<&ScoreRow> = r
                .within(a, last, set, metric)
                .into_iter()
                .filter(|row| bucket(row.depth_a) == 2)
                .collect();
            let mut networks: Vec<&str> = rows
                .iter()
                .flat_map(|row| [row.model_a.as_str(), row.model_b.as_str()])
                .collect();
            networks.sort_unstable();
            networks.dedup();
            let accuracies: Option<Vec<f64>> =
                networks.iter().map(|m| r.accuracy(m, set)).collect();
            let (m, Some(accuracies)) = (over_pairs(&rows, |row| Some(row.score)), accuracies)
            else {
                without.push(set.as_str());
                continue;
            };
            if m.pairs > 0 && !accuracies.is_empty() {
                align.push(m.mean);
                acc.push(finite_mean(&accuracies));
            }
        }
        let left_out = if without.is_empty() {
            String::new()
        } else {
            format!(" ({} left out: no accuracy)", without.join(", "))
        };
        match correlation_test(&align, &acc, CORRELATION_PERMUTATIONS, 0) {
            Ok(t) => {
                values.insert(format!("{a}.r"), t.r);
                values.insert(format!("{a}.p"), t.p_value);
                text.push(format!(
                    "{a} ({metric}, late layers): r = {:.2} over {} OOD sets{left_out}, one-sided permutation p = {:.4} ({} {} pairings)",
                    t.r,
                    align.len(),
                    t.p_value,
                    if t.exact { "all" } else { "random" },
                    t.permutations
                ));
                verdicts.push((a.clone(), t.r > 0.0 && t.p_value < CLAIM_ALPHA));
            }
            Err(e) => text.push(format!(
                "{a}: not measured with {} OOD sets{left_out} ({e})",
                align.len()
            )),
        }
    }
    Claim {
        id,
        finding,
        holds: all_hold(&verdicts),
        measured: text.join("; "),
        values,
    }
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
        let (md, mv) = (finite_mean(&d), finite_mean(&v));
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

    /// Two networks at checkpoints 0, 10, 100 and 200 (epochs 0, 0.5, 1, 2) whose one layer
    /// pair scores `curve[k]` at checkpoint k.
    fn trajectory(curve: [f64; 4]) -> Results {
        let steps = [0u64, 10, 100, 200];
        let mut r = Results::default();
        for (k, &s) in steps.iter().enumerate() {
            for net in ["a", "b"] {
                r.models.push(super::super::data::ModelRow {
                    model: format!("{net}@step{s}"),
                    network: net.into(),
                    arch: "resnet18".into(),
                    stimuli: "base".into(),
                    accuracy: None,
                    step: Some(s),
                    epoch: Some(s as f64 / 100.0),
                    test_accuracy: None,
                    held_out_loss: None,
                });
            }
            r.scores.push(ScoreRow::for_test(
                &format!("a@step{s}"),
                &format!("b@step{s}"),
                "conv1",
                (0.0, 0.0),
                curve[k],
            ));
        }
        r
    }

    #[test]
    fn the_first_epoch_claim_needs_a_net_change_and_a_curve_that_stays() {
        let archs = vec!["resnet18".to_string()];
        // a dip and a recovery to where it started: no fraction of a change, no verdict
        let dip = first_epoch(&trajectory([0.70, 0.45, 0.60, 0.696]), &archs, "procrustes");
        assert_eq!(dip.holds, None, "{}", dip.measured);
        assert!(
            dip.measured.contains("no fraction of the change"),
            "{}",
            dip.measured
        );
        assert!(dip.values.is_empty());
        // a rise that stays at 90% of its change from epoch 0.5; one that passes it at epoch
        // 0.5, falls back and stays only from epoch 2: the step from which it stays is the
        // one reported, and 55% of the change by epoch 1 still counts as "most"
        let rise = first_epoch(&trajectory([0.40, 0.80, 0.78, 0.80]), &archs, "procrustes");
        assert_eq!(rise.values["resnet18.step_90"], 10.0);
        let back = first_epoch(&trajectory([0.40, 0.80, 0.62, 0.80]), &archs, "procrustes");
        assert_eq!(back.values["resnet18.step_90"], 200.0);
        assert_eq!(back.holds, Some(true), "{}", back.measured);
        assert!((back.values["resnet18.progress_epoch1"] - 0.55).abs() < 1e-12);
    }

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
