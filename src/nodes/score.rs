//! `score`: one metric on one layer pair.

use repflow_cache::Bundle;
use repflow_kernels::{Metric, Pair, PreparedLayer, Settings};
use serde::{Deserialize, Serialize};

use crate::commands::score::to_json;
use crate::error::UserError;

/// Kind name.
pub const KIND: &str = "score";
/// Kind version.
pub const VERSION: u32 = 1;

/// A metric on a layer pair.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScoreNode {
    /// The metric's name.
    pub metric: String,
    /// The metric engine's settings (only the ones the metric uses enter the key).
    #[serde(with = "settings_serde")]
    pub settings: Settings,
    /// First model and layer.
    pub a: (String, String),
    /// Second model and layer.
    pub b: (String, String),
}

impl ScoreNode {
    /// The metric.
    pub fn metric(&self) -> Metric {
        Metric::from_name(&self.metric).expect("score nodes hold checked metric names")
    }

    /// Key parameters: the metric and the options it depends on (so changing one metric's
    /// option reruns that metric only), and the fold split.
    pub fn key_params(&self) -> serde_json::Value {
        let mut p = super::metric_params(self.metric(), &self.settings);
        p["folds"] = super::fold_params(&self.settings.folds);
        p
    }

    /// Scores the pair: metadata is `repflow score --json`'s object.
    pub fn run(&self, x: &PreparedLayer, y: &PreparedLayer) -> Result<Bundle, UserError> {
        let s = Pair::new(x, y)?.score(self.metric())?;
        Ok(Bundle::meta(to_json(&s, x, y, &self.settings).to_string()))
    }
}

/// Settings as the same JSON a pipeline's `[options]` holds.
mod settings_serde {
    use repflow_kernels::{Corr, DimMatch, FoldSpec, HsicEstimator, Settings, TestZscore};
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Serialize, Deserialize)]
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

    fn corr(c: Corr) -> String {
        match c {
            Corr::Pearson => "pearson".into(),
            Corr::Spearman => "spearman".into(),
        }
    }

    pub fn serialize<S: Serializer>(s: &Settings, ser: S) -> Result<S::Ok, S::Error> {
        Plain {
            k: s.folds.k,
            shuffle_seed: s.folds.shuffle_seed,
            corr: corr(s.corr),
            test_zscore: if s.test_zscore == TestZscore::Own {
                "own"
            } else {
                "train"
            }
            .into(),
            alphas: s.alphas.clone(),
            dim_match: if s.dim_match == DimMatch::Pca {
                "pca"
            } else {
                "zeropad"
            }
            .into(),
            hsic: if s.hsic == HsicEstimator::Unbiased {
                "unbiased"
            } else {
                "biased"
            }
            .into(),
            rsa_compare: corr(s.rsa_compare),
        }
        .serialize(ser)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(de: D) -> Result<Settings, D::Error> {
        let p = Plain::deserialize(de)?;
        let c = |s: &str| {
            if s == "spearman" {
                Corr::Spearman
            } else {
                Corr::Pearson
            }
        };
        Ok(Settings {
            folds: FoldSpec {
                k: p.k,
                shuffle_seed: p.shuffle_seed,
            },
            corr: c(&p.corr),
            test_zscore: if p.test_zscore == "own" {
                TestZscore::Own
            } else {
                TestZscore::Train
            },
            alphas: p.alphas,
            dim_match: if p.dim_match == "pca" {
                DimMatch::Pca
            } else {
                DimMatch::ZeroPad
            },
            hsic: if p.hsic == "unbiased" {
                HsicEstimator::Unbiased
            } else {
                HsicEstimator::Biased
            },
            rsa_compare: c(&p.rsa_compare),
        })
    }
}
