//! What a report is made from: the rows of `scores.json` and `models.csv` in a results
//! folder, and the questions the figures and claims ask of them.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use repflow_kernels::across_scores::{pair_mean, PairMean};

use crate::error::UserError;

/// One score: a pair of layers under one metric on one stimulus set.
#[derive(Debug, Clone)]
pub struct ScoreRow {
    /// First model (`net@step<N>` for a checkpoint).
    pub model_a: String,
    /// Second model.
    pub model_b: String,
    /// First layer.
    pub layer_a: String,
    /// Second layer.
    pub layer_b: String,
    /// First layer's normalised depth.
    pub depth_a: f64,
    /// Second layer's normalised depth.
    pub depth_b: f64,
    /// Metric, e.g. `procrustes` or `permutation:rotated`.
    pub metric: String,
    /// Mean over folds.
    pub score: f64,
    /// Standard deviation over folds.
    pub std: f64,
    /// `base` or an out-of-distribution set.
    pub stimuli: String,
    /// The stimulus-permutation null's p-value, when `[statistics]` ran it.
    pub null_p: Option<f64>,
    /// Its number of draws.
    pub null_n: Option<usize>,
    /// Its 95% quantile.
    pub null_q95: Option<f64>,
    /// The rotation null's 95% quantile, when `[statistics]` ran it.
    pub rotation_q95: Option<f64>,
    /// The rotation null's p-value, when `[statistics]` ran it.
    pub rotation_p: Option<f64>,
    /// The rotation null's draws, in order (draw k: Haar rotation seed + k).
    pub rotation_draws: Option<Vec<f64>>,
    /// Half the width of the bootstrap interval, when `[statistics]` ran it.
    pub ci_half_width: Option<f64>,
}

#[cfg(test)]
impl ScoreRow {
    /// A base-set row between namesake layers `layer` of `model_a` and `model_b` at depths
    /// `depth`, fold standard deviation 0.01, no statistics (for report tests).
    pub fn for_test(
        model_a: &str,
        model_b: &str,
        layer: &str,
        depth: (f64, f64),
        score: f64,
    ) -> ScoreRow {
        ScoreRow {
            model_a: model_a.into(),
            model_b: model_b.into(),
            layer_a: layer.into(),
            layer_b: layer.into(),
            depth_a: depth.0,
            depth_b: depth.1,
            metric: "procrustes".into(),
            score,
            std: 0.01,
            stimuli: "base".into(),
            null_p: None,
            null_n: None,
            null_q95: None,
            rotation_q95: None,
            rotation_p: None,
            rotation_draws: None,
            ci_half_width: None,
        }
    }
}

/// One extracted network on one stimulus set (a row of `models.csv`).
#[derive(Debug, Clone)]
pub struct ModelRow {
    /// The comparable model's name.
    pub model: String,
    /// The `[[model]]` it comes from.
    pub network: String,
    /// Its architecture (`resnet18`, `vgg16-bn`, `vit`, …).
    pub arch: String,
    /// `base` or an out-of-distribution set.
    pub stimuli: String,
    /// Accuracy on that set.
    pub accuracy: Option<f64>,
    /// Training step of a checkpoint.
    pub step: Option<u64>,
    /// Epoch of a checkpoint.
    pub epoch: Option<f64>,
    /// Test accuracy of a checkpoint.
    pub test_accuracy: Option<f64>,
    /// Held-out loss (nats per byte) of a language-model checkpoint.
    pub held_out_loss: Option<f64>,
}

/// Everything a report is made from.
#[derive(Debug, Clone, Default)]
pub struct Results {
    /// The scores.
    pub scores: Vec<ScoreRow>,
    /// The networks (empty for pipelines of activation files).
    pub models: Vec<ModelRow>,
}

fn num(v: &serde_json::Value) -> f64 {
    v.as_f64().unwrap_or(f64::NAN)
}

impl Results {
    /// Reads `scores.json` and, when present, `models.csv` from `dir`.
    pub fn load(dir: &Path) -> Result<Results, UserError> {
        let path = dir.join("scores.json");
        let text = std::fs::read_to_string(&path).map_err(|e| {
            UserError::input(format!("cannot read `{}`: {e}", path.display()))
                .hint("run the pipeline first: `repflow run <pipeline>`")
        })?;
        let rows: Vec<serde_json::Value> = serde_json::from_str(&text).map_err(|e| {
            UserError::input(format!("`{}` is not a score table: {e}", path.display()))
        })?;
        let text_of = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_string();
        let scores = rows
            .iter()
            .map(|r| ScoreRow {
                model_a: text_of(&r["model_a"]),
                model_b: text_of(&r["model_b"]),
                layer_a: text_of(&r["layer_a"]),
                layer_b: text_of(&r["layer_b"]),
                depth_a: num(&r["depth_a"]),
                depth_b: num(&r["depth_b"]),
                metric: text_of(&r["metric"]),
                score: num(&r["score"]),
                std: num(&r["std"]),
                stimuli: r["stimuli"].as_str().unwrap_or("base").to_string(),
                null_p: r["null"]["p_value"].as_f64(),
                null_n: r["null"]["n"].as_u64().map(|n| n as usize),
                null_q95: r["null"]["quantiles"]["0.95"].as_f64(),
                rotation_q95: r["rotation_null"]["quantiles"]["0.95"].as_f64(),
                rotation_p: r["rotation_null"]["p_value"].as_f64(),
                rotation_draws: r["rotation_null"]["draws"]
                    .as_array()
                    .map(|d| d.iter().map(num).collect()),
                ci_half_width: match (
                    r["bootstrap"]["low"].as_f64(),
                    r["bootstrap"]["high"].as_f64(),
                ) {
                    (Some(lo), Some(hi)) => Some((hi - lo) / 2.0),
                    _ => None,
                },
            })
            .collect();
        let models = match std::fs::read_to_string(dir.join("models.csv")) {
            Ok(text) => parse_models(&text),
            Err(_) => Vec::new(),
        };
        Ok(Results { scores, models })
    }

    /// Whether these are language models' results (shown sentences).
    pub fn is_language(&self) -> bool {
        self.models.iter().any(|m| m.stimuli == "sentences")
    }

    /// Held-out loss (nats per byte) at each checkpoint step of the decoders of `arch`,
    /// averaged over them.
    pub fn held_out_loss_by_step(&self, arch: &str) -> Vec<(u64, f64)> {
        let mut by: BTreeMap<u64, Vec<f64>> = BTreeMap::new();
        for m in self.models.iter().filter(|m| m.arch == arch) {
            if let (Some(s), Some(l)) = (m.step, m.held_out_loss) {
                by.entry(s).or_default().push(l);
            }
        }
        by.into_iter().map(|(s, v)| (s, finite_mean(&v))).collect()
    }

    /// The architecture of a model, from `models.csv`; pipelines of activation files have
    /// none, and all their models count as one group, `activations`.
    pub fn arch(&self, model: &str) -> Option<&str> {
        if self.models.is_empty() {
            return Some("activations");
        }
        self.models
            .iter()
            .find(|m| m.model == model)
            .map(|m| m.arch.as_str())
    }

    /// The training step of a model's checkpoint.
    pub fn step(&self, model: &str) -> Option<u64> {
        self.models.iter().find(|m| m.model == model)?.step
    }

    /// The checkpoint steps present, ascending.
    pub fn steps(&self) -> Vec<u64> {
        let s: BTreeSet<u64> = self.models.iter().filter_map(|m| m.step).collect();
        s.into_iter().collect()
    }

    /// The architectures of the compared pairs, in first-seen order: pairs within one
    /// architecture are the audit's seed pairs.
    pub fn archs(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for r in &self.scores {
            if let Some(a) = self.pair_arch(r) {
                if !out.iter().any(|x| x == a) {
                    out.push(a.to_string());
                }
            }
        }
        out
    }

    /// The architecture of a within-architecture pair (None across architectures).
    pub fn pair_arch(&self, r: &ScoreRow) -> Option<&str> {
        let (a, b) = (self.arch(&r.model_a)?, self.arch(&r.model_b)?);
        (a == b).then_some(a)
    }

    /// Scores of within-architecture pairs of `arch` at checkpoint `step` (any when None) on
    /// set `stimuli` under `metric`: one row per (pair, layer of the first model), the layer
    /// pair of nearest depth (the matched pair), also when the pipeline scored all layer
    /// pairs.
    pub fn within(
        &self,
        arch: &str,
        step: Option<u64>,
        stimuli: &str,
        metric: &str,
    ) -> Vec<&ScoreRow> {
        let mut matched: BTreeMap<(&str, &str, &str), &ScoreRow> = BTreeMap::new();
        let candidates = self.scores.iter().filter(|r| {
            r.metric == metric
                && r.stimuli == stimuli
                && self.pair_arch(r) == Some(arch)
                && (step.is_none() || self.step(&r.model_a) == step)
        });
        for r in candidates {
            let gap = |r: &ScoreRow| (r.depth_a - r.depth_b).abs();
            matched
                .entry((&r.model_a, &r.model_b, &r.layer_a))
                .and_modify(|best| {
                    if gap(r) < gap(best) {
                        *best = r;
                    }
                })
                .or_insert(r);
        }
        let mut rows: Vec<&ScoreRow> = matched.into_values().collect();
        rows.sort_by(|a, b| {
            (&a.model_a, &a.model_b, a.depth_a)
                .partial_cmp(&(&b.model_a, &b.model_b, b.depth_a))
                .unwrap_or(std::cmp::Ordering::Equal)
        });
        rows
    }

    /// Scores between a network of family `a` and one of another family `b` (either order)
    /// at checkpoint `step` (any when None) on set `stimuli` under `metric`, for the layers
    /// both networks have by name (pipelines with `layers = "named"`).
    pub fn between(
        &self,
        a: &str,
        b: &str,
        step: Option<u64>,
        stimuli: &str,
        metric: &str,
    ) -> Vec<&ScoreRow> {
        self.scores
            .iter()
            .filter(|r| {
                let fams = (self.arch(&r.model_a), self.arch(&r.model_b));
                r.metric == metric
                    && r.stimuli == stimuli
                    && r.layer_a == r.layer_b
                    && (fams == (Some(a), Some(b)) || fams == (Some(b), Some(a)))
                    && (step.is_none() || self.step(&r.model_a) == step)
            })
            .collect()
    }

    /// Whether any architecture's depth curves carry a standard error over seed pairs (three
    /// or more networks of one architecture in two or more pairs).
    pub fn has_seed_errors(&self) -> bool {
        let last = self.final_step();
        self.archs().iter().any(|a| {
            let rows: Vec<&ScoreRow> = self
                .scores
                .iter()
                .filter(|r| self.pair_arch(r) == Some(a) && self.step(&r.model_a) == last)
                .collect();
            over_pairs(&rows, |r| Some(r.score)).se.is_some()
        })
    }

    /// The last checkpoint step (None without trained networks).
    pub fn final_step(&self) -> Option<u64> {
        self.steps().last().copied()
    }

    /// The out-of-distribution sets scored, in first-seen order.
    pub fn ood_sets(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for r in &self.scores {
            if r.stimuli != "base" && !out.contains(&r.stimuli) {
                out.push(r.stimuli.clone());
            }
        }
        out
    }

    /// Accuracy of `model` on set `stimuli`.
    pub fn accuracy(&self, model: &str, stimuli: &str) -> Option<f64> {
        self.models
            .iter()
            .find(|m| m.model == model && m.stimuli == stimuli)?
            .accuracy
    }

    /// Test accuracy at each checkpoint step of the networks of `arch`, averaged over them.
    pub fn test_accuracy_by_step(&self, arch: &str) -> Vec<(u64, f64)> {
        let mut by: BTreeMap<u64, Vec<f64>> = BTreeMap::new();
        for m in &self.models {
            if let (true, Some(s), Some(a)) = (
                m.arch == arch && m.stimuli == "base",
                m.step,
                m.test_accuracy,
            ) {
                by.entry(s).or_default().push(a);
            }
        }
        by.into_iter().map(|(s, v)| (s, finite_mean(&v))).collect()
    }

    /// The epoch of a step (from the checkpoints' records).
    pub fn epoch_of(&self, step: u64) -> Option<f64> {
        self.models.iter().find(|m| m.step == Some(step))?.epoch
    }
}

/// Mean over seed pairs per layer depth of `rows`: (depth, mean, error bar), by depth. The
/// error bar is the standard error over seed pairs where there are enough seeds
/// ([`pair_mean`]), else half the bootstrap interval where the rows have one, else the fold
/// standard deviation (each averaged over the pairs).
pub fn by_depth(rows: &[&ScoreRow]) -> Vec<(f64, f64, f64)> {
    by_depth_of(
        rows,
        |r| Some(r.score),
        |r| r.ci_half_width.unwrap_or(r.std),
    )
}

/// Like [`by_depth`] for another value of each row (rows without it are skipped), with
/// `err` as the error bar when there is no standard error over seed pairs.
pub fn by_depth_of(
    rows: &[&ScoreRow],
    value: impl Fn(&ScoreRow) -> Option<f64>,
    err: impl Fn(&ScoreRow) -> f64,
) -> Vec<(f64, f64, f64)> {
    depth_groups(rows)
        .into_iter()
        .filter_map(|(d, group)| {
            let m = over_pairs(&group, &value);
            if m.pairs == 0 {
                return None;
            }
            let fallback = || {
                let e: Vec<f64> = group
                    .iter()
                    .filter(|r| value(r).is_some())
                    .map(|r| err(r))
                    .collect();
                finite_mean(&e)
            };
            Some((d, m.mean, m.se.unwrap_or_else(fallback)))
        })
        .collect()
}

/// Rows grouped by layer depth (of the first model), ascending: (depth, rows).
pub fn depth_groups<'a>(rows: &[&'a ScoreRow]) -> Vec<(f64, Vec<&'a ScoreRow>)> {
    let mut by: BTreeMap<i64, (f64, Vec<&ScoreRow>)> = BTreeMap::new();
    for r in rows {
        by.entry((r.depth_a * 1e6).round() as i64)
            .or_insert((r.depth_a, Vec::new()))
            .1
            .push(r);
    }
    by.into_values().collect()
}

/// The mean over seed pairs of `value` (each pair's rows averaged first, rows without the
/// value skipped) and its standard error over pairs ([`pair_mean`]).
pub fn over_pairs(rows: &[&ScoreRow], value: impl Fn(&ScoreRow) -> Option<f64>) -> PairMean {
    let mut by: BTreeMap<(&str, &str), Vec<f64>> = BTreeMap::new();
    for r in rows {
        if let Some(v) = value(r) {
            by.entry((&r.model_a, &r.model_b)).or_default().push(v);
        }
    }
    let per_pair: Vec<(&str, &str, f64)> = by
        .into_iter()
        .map(|((a, b), v)| (network_of(a), network_of(b), finite_mean(&v)))
        .collect();
    pair_mean(&per_pair)
}

/// The network a comparable model comes from (`net@step<N>` → `net`): checkpoints of one
/// network are one seed.
fn network_of(model: &str) -> &str {
    model.split_once('@').map_or(model, |(net, _)| net)
}

/// `mean ± se` (or just the mean) with three decimals.
pub fn plus_minus(m: &PairMean) -> String {
    match m.se {
        Some(se) => format!("{:.3} ± {se:.3}", m.mean),
        None => format!("{:.3}", m.mean),
    }
}

/// The arithmetic mean of the finite entries (NaN and infinities skipped; NaN when none is
/// left): a missing score in a table is skipped, not propagated.
pub fn finite_mean(v: &[f64]) -> f64 {
    let ok: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if ok.is_empty() {
        f64::NAN
    } else {
        ok.iter().sum::<f64>() / ok.len() as f64
    }
}

/// Early, middle and late layers: normalised depth in [0, ⅓), [⅓, ⅔), [⅔, 1].
pub fn bucket(depth: f64) -> usize {
    ((depth * 3.0).floor() as usize).min(2)
}

/// Names of the depth buckets.
pub const BUCKETS: [&str; 3] = ["early (depth < 1/3)", "middle", "late (depth ≥ 2/3)"];

fn parse_models(text: &str) -> Vec<ModelRow> {
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap_or_default().split(',').collect();
    let col = |name: &str| header.iter().position(|h| *h == name);
    let held_out = col("held_out_loss");
    let (model, network, arch, stimuli, acc, step, epoch, test) = (
        col("model"),
        col("network"),
        col("arch"),
        col("stimuli"),
        col("accuracy_on_stimuli"),
        col("step"),
        col("epoch"),
        col("test_accuracy"),
    );
    lines
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            let get = |c: Option<usize>| c.and_then(|i| f.get(i)).copied().unwrap_or_default();
            ModelRow {
                model: get(model).to_string(),
                network: get(network).to_string(),
                arch: get(arch).to_string(),
                stimuli: match get(stimuli) {
                    "" => "base".into(),
                    s => s.to_string(),
                },
                accuracy: get(acc).parse().ok(),
                step: get(step).parse().ok(),
                epoch: get(epoch).parse().ok(),
                test_accuracy: get(test).parse().ok(),
                held_out_loss: get(held_out).parse().ok(),
            }
        })
        .collect()
}
