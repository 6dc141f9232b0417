//! `statistic`: one statistical test of one score — its stimulus-permutation null, its
//! bootstrap interval or its rotation null ([`repflow_kernels::inference`]).

use repflow_cache::Bundle;
use repflow_engine::{Inputs, Kind, NodeError};
use repflow_kernels::{inference, Metric, Pair, Settings};
use serde::{Deserialize, Serialize};

use super::score::{metric_params, pair_inputs, pair_memory};
use super::RunContext;
use crate::error::UserError;
use crate::score_json::{draws_json, interval_json};

/// Which test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Test {
    /// Y's rows permuted relative to X's.
    Null,
    /// Stimulus bootstrap of the held-out evaluation.
    Bootstrap,
    /// Haar rotations of X (privileged-basis test).
    Rotation,
}

impl Test {
    /// The field it adds to a score's row: `null`, `bootstrap` or `rotation_null`.
    pub fn field(self) -> &'static str {
        match self {
            Test::Null => "null",
            Test::Bootstrap => "bootstrap",
            Test::Rotation => "rotation_null",
        }
    }
}

/// A statistical test of one metric on one layer pair.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatisticNode {
    /// The metric.
    #[serde(with = "crate::named_serde")]
    pub metric: Metric,
    /// The metric engine's settings (as the score node's).
    #[serde(with = "super::score::settings_serde")]
    pub settings: Settings,
    /// The test.
    pub test: Test,
    /// Number of draws.
    pub n: usize,
    /// Seed of the draws.
    pub seed: u32,
    /// Confidence level (bootstrap only).
    pub level: Option<f64>,
}

/// Inputs: the prepared layers `x` and `y` (the score's).
impl Kind<RunContext> for StatisticNode {
    const KIND: &'static str = "statistic";
    /// 2: null objects carry their draws.
    const VERSION: u32 = 2;

    /// The score's parameters, the test, its number of draws, seed and level: raising N is
    /// a new node, never a reuse of fewer draws.
    fn key_params(&self) -> serde_json::Value {
        let mut p = metric_params(self.metric, &self.settings);
        p["test"] = serde_json::to_value(self.test).expect("tests serialise");
        p["n"] = self.n.into();
        p["seed"] = self.seed.into();
        if let Some(l) = self.level {
            p["level"] = format!("{:016x}", l.to_bits()).into();
        }
        p
    }

    /// Runs the test: metadata `{"<field>": {...}}` as in `repflow score --json`.
    /// As the score node's: the draws reuse the layers' factorisations.
    fn memory(&self, inputs: &Inputs) -> u64 {
        pair_memory(self.metric, inputs)
    }

    fn run(&self, ctx: &RunContext, inputs: &Inputs) -> Result<Bundle, NodeError> {
        let (x, y) = pair_inputs(ctx, inputs, &self.settings)?;
        let observed = Pair::new(&x, &y)
            .and_then(|p| p.score(self.metric))
            .map_err(UserError::from)?
            .score;
        let (m, n, seed) = (self.metric, self.n, self.seed);
        let value = match self.test {
            Test::Null => {
                let v = inference::permutation_null(&x, &y, m, n, seed).map_err(UserError::from)?;
                draws_json(&inference::Draws::new(observed, v, seed))
            }
            Test::Rotation => {
                let v = inference::rotation_null(&x, &y, m, n, seed).map_err(UserError::from)?;
                draws_json(&inference::Draws::new(observed, v, seed))
            }
            Test::Bootstrap => {
                let level = self.level.unwrap_or(0.95);
                interval_json(
                    &inference::bootstrap(&x, &y, m, n, seed, level).map_err(UserError::from)?,
                )
            }
        };
        let mut out = serde_json::json!({ "metric": m.name(), "score": observed });
        out[self.test.field()] = value;
        Ok(Bundle::meta(out.to_string()))
    }
}
