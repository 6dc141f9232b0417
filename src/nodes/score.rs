//! `score`: one metric on one layer pair.

use repflow_cache::Bundle;
use repflow_engine::{Batch, Inputs, Kind, NodeError};
use repflow_kernels::batch::{chunks, BATCH_BYTES};
use repflow_kernels::{Metric, Pair, SettingValue, Settings};
use serde::{Deserialize, Serialize};

use super::folds::fold_params;
use super::RunContext;
use crate::error::UserError;
use crate::score_json::to_json;

/// A metric on a layer pair.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScoreNode {
    /// The metric.
    #[serde(with = "crate::named_serde")]
    pub metric: Metric,
    /// The metric engine's settings (only the ones the metric reads enter the key).
    #[serde(with = "settings_serde")]
    pub settings: Settings,
    /// First model and layer.
    pub a: (String, String),
    /// Second model and layer.
    pub b: (String, String),
}

/// Inputs: the prepared layers `x` and `y`.
impl Kind<RunContext> for ScoreNode {
    const KIND: &'static str = "score";
    const VERSION: u32 = 1;

    /// The metric, the settings it declares it reads (so changing one metric's option
    /// reruns that metric only), and the fold split.
    fn key_params(&self) -> serde_json::Value {
        metric_params(self.metric, &self.settings)
    }

    /// The metric's estimate for the pair's shapes ([`pair_memory`]).
    fn memory(&self, inputs: &Inputs) -> u64 {
        pair_memory(self.metric, inputs)
    }

    /// Scores the pair: metadata is `repflow score --json`'s object.
    fn run(&self, ctx: &RunContext, inputs: &Inputs) -> Result<Bundle, NodeError> {
        let (x, y) = pair_inputs(ctx, inputs, &self.settings)?;
        let s = Pair::new(&x, &y)
            .map_err(UserError::from)?
            .score(self.metric)
            .map_err(UserError::from)?;
        Ok(Bundle::meta(
            to_json(&s, &x, &y, &self.settings).to_string(),
        ))
    }

    /// Procrustes nodes with the same key parameters batch when the run allows it
    /// ([`RunContext::score_batch`]): the other metrics gain nothing from it.
    fn batch(&self, ctx: &RunContext) -> Option<Batch> {
        (self.metric == Metric::Procrustes && ctx.score_batch() > 1).then(|| Batch {
            key: self.key_params().to_string(),
            max: ctx.score_batch(),
        })
    }

    /// Scores the nodes' pairs with [`Pair::score_many`], in chunks of at most
    /// [`BATCH_BYTES`] of fold products; the numbers are those of [`Kind::run`].
    fn run_many(ctx: &RunContext, nodes: &[(&Self, &Inputs)]) -> Vec<Result<Bundle, NodeError>> {
        let loaded: Vec<_> = nodes
            .iter()
            .map(|(n, i)| pair_inputs(ctx, i, &n.settings))
            .collect();
        let mut out: Vec<Option<Result<Bundle, NodeError>>> = loaded
            .iter()
            .map(|l| l.as_ref().err().map(|e| Err(e.clone())))
            .collect();
        let ready: Vec<usize> = (0..nodes.len()).filter(|&i| out[i].is_none()).collect();
        let layers = |i: usize| loaded[i].as_ref().expect("loaded");
        let costs: Vec<u64> = ready
            .iter()
            .map(|&i| {
                let (x, y) = layers(i);
                let k = nodes[i].0.settings.folds.k;
                nodes[i].0.metric.batch_bytes(k, x.n_units(), y.n_units())
            })
            .collect();
        for chunk in chunks(&costs, BATCH_BYTES) {
            let mut pairs = Vec::with_capacity(chunk.len());
            let mut members = Vec::with_capacity(chunk.len());
            for &i in &ready[chunk] {
                let (x, y) = layers(i);
                match Pair::new(x, y) {
                    Ok(p) => {
                        pairs.push(p);
                        members.push(i);
                    }
                    Err(e) => out[i] = Some(Err(UserError::from(e).into())),
                }
            }
            let Some(&first) = members.first() else {
                continue;
            };
            let metric = nodes[first].0.metric;
            for (i, s) in members.into_iter().zip(Pair::score_many(&pairs, metric)) {
                let (x, y) = layers(i);
                let settings = &nodes[i].0.settings;
                out[i] = Some(
                    s.map(|s| Bundle::meta(to_json(&s, x, y, settings).to_string()))
                        .map_err(|e| UserError::from(e).into()),
                );
            }
        }
        out.into_iter()
            .map(|r| r.expect("every node scored or failed"))
            .collect()
    }
}

/// The memory `metric` needs on the prepared layers `x` and `y` of a pair node's inputs
/// ([`Metric::working_bytes`] of their shapes; 0 when an input is not a prepared layer, which
/// the node's run then reports).
pub fn pair_memory(metric: Metric, inputs: &Inputs) -> u64 {
    let shape = |name: &str| inputs.bundle(name).ok().and_then(super::prepared::shape);
    match (shape("x"), shape("y")) {
        (Some((m, nx)), Some((_, ny))) => metric.working_bytes(m, nx, ny),
        _ => 0,
    }
}

/// The prepared layers `x` and `y` of a pair node's inputs, loaded once per run with
/// `settings` (shared by the score and statistic nodes).
pub fn pair_inputs(
    ctx: &RunContext,
    inputs: &Inputs,
    settings: &Settings,
) -> Result<
    (
        std::sync::Arc<repflow_kernels::PreparedLayer>,
        std::sync::Arc<repflow_kernels::PreparedLayer>,
    ),
    NodeError,
> {
    let layer = |name: &str| -> Result<_, NodeError> {
        let input = inputs.get(name)?;
        Ok(ctx.prepared(&input.digest, &input.bundle, settings)?)
    };
    Ok((layer("x")?, layer("y")?))
}

/// The key parameters of `metric` under `settings`: its name, the settings it declares it
/// reads, and the fold split (shared by the score and statistic nodes).
pub fn metric_params(metric: Metric, settings: &Settings) -> serde_json::Value {
    let mut p = serde_json::json!({ "metric": metric.name() });
    for s in metric.reads() {
        p[s.name()] = match s.value(settings) {
            SettingValue::Name(n) => n.into(),
            SettingValue::Bits(bits) => bits
                .iter()
                .map(|b| format!("{b:016x}"))
                .collect::<Vec<_>>()
                .into(),
        };
    }
    p["folds"] = fold_params(&settings.folds);
    p
}

/// Settings as the same JSON a pipeline's `[options]` holds; a name this build does not
/// know is an error, never a default.
pub(crate) mod settings_serde {
    use repflow_kernels::{FoldSpec, Named, Settings};
    use serde::de::Error;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Plain {
        k: usize,
        shuffle_seed: Option<u32>,
        corr: String,
        test_zscore: String,
        alphas: Vec<f64>,
        dim_match: String,
        hsic: String,
        rsa_compare: String,
    }

    pub fn serialize<S: Serializer>(s: &Settings, ser: S) -> Result<S::Ok, S::Error> {
        Plain {
            k: s.folds.k,
            shuffle_seed: s.folds.shuffle_seed,
            corr: s.corr.name().into(),
            test_zscore: s.test_zscore.name().into(),
            alphas: s.alphas.clone(),
            dim_match: s.dim_match.name().into(),
            hsic: s.hsic.name().into(),
            rsa_compare: s.rsa_compare.name().into(),
        }
        .serialize(ser)
    }

    fn named<T: Named, E: Error>(field: &str, value: &str) -> Result<T, E> {
        T::from_name(value).ok_or_else(|| {
            E::custom(format!(
                "`{field}` is `{value}`; expected one of {}",
                T::names().join(", ")
            ))
        })
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(de: D) -> Result<Settings, D::Error> {
        let p = Plain::deserialize(de)?;
        Ok(Settings {
            folds: FoldSpec {
                k: p.k,
                shuffle_seed: p.shuffle_seed,
            },
            corr: named("corr", &p.corr)?,
            test_zscore: named("test_zscore", &p.test_zscore)?,
            alphas: p.alphas,
            dim_match: named("dim_match", &p.dim_match)?,
            hsic: named("hsic", &p.hsic)?,
            rsa_compare: named("rsa_compare", &p.rsa_compare)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recipes_round_trip_and_unknown_names_are_errors() {
        let node = ScoreNode {
            metric: Metric::SoftMatching,
            settings: Settings::default(),
            a: ("a".into(), "l1".into()),
            b: ("b".into(), "l1".into()),
        };
        let v = serde_json::to_value(&node).unwrap();
        assert_eq!(
            serde_json::from_value::<ScoreNode>(v.clone()).unwrap(),
            node
        );
        for (field, bad) in [
            ("/settings/corr", "kendall"),
            ("/settings/hsic", "x"),
            ("/metric", "lin"),
        ] {
            let mut w = v.clone();
            *w.pointer_mut(field).unwrap() = bad.into();
            let e = serde_json::from_value::<ScoreNode>(w)
                .unwrap_err()
                .to_string();
            assert!(e.contains(bad), "{e}");
        }
    }
}
