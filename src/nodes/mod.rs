//! Node kinds: one module per kind. Each says its `KIND`, its `VERSION` (bumped when its
//! output changes meaning), its key parameters, and how to compute its output from its
//! inputs' outputs. Nodes do no store I/O: the scheduler hands them their inputs and
//! stores what they return.

pub mod folds;
pub mod images;
pub mod network;
pub mod prepared;
pub mod score;
pub mod source;
pub mod table;

use std::path::PathBuf;

use repflow_kernels::{FoldSpec, Metric, Settings};
use serde::{Deserialize, Serialize};

/// A node: its kind and everything it needs besides its inputs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum NodeSpec {
    /// Reads one layer's activations from a file. No inputs.
    Source(source::Source),
    /// Splits the stimuli into folds. No inputs.
    Folds(folds::FoldsNode),
    /// Prepares a layer. Inputs: its source, its folds.
    Prepared(prepared::Prepared),
    /// Scores a layer pair with one metric. Inputs: the two prepared layers.
    Score(score::ScoreNode),
    /// Gathers the scores of a pipeline. Inputs: its score nodes.
    Table(table::Table),
    /// Reads a real image set from its package. No inputs.
    Images(images::ImageSet),
    /// Transforms an image set. Input: the set.
    Transform(images::TransformNode),
    /// A checkpoint file. No inputs.
    Weights(network::Weights),
    /// One checkpoint of a training run. Inputs: train set, test set, previous checkpoint (if any).
    Train(network::Train),
    /// A network's activations on a stimulus set. Inputs: weights (or a checkpoint), stimuli.
    Extract(network::Extract),
}

impl NodeSpec {
    /// The kind's name.
    pub fn kind(&self) -> &'static str {
        match self {
            NodeSpec::Source(_) => source::KIND,
            NodeSpec::Folds(_) => folds::KIND,
            NodeSpec::Prepared(_) => prepared::KIND,
            NodeSpec::Score(_) => score::KIND,
            NodeSpec::Table(_) => table::KIND,
            NodeSpec::Images(_) => images::KIND,
            NodeSpec::Transform(_) => images::TRANSFORM_KIND,
            NodeSpec::Weights(_) => network::WEIGHTS_KIND,
            NodeSpec::Train(_) => network::TRAIN_KIND,
            NodeSpec::Extract(_) => network::EXTRACT_KIND,
        }
    }

    /// The kind's version.
    pub fn version(&self) -> u32 {
        match self {
            NodeSpec::Source(_) => source::VERSION,
            NodeSpec::Folds(_) => folds::VERSION,
            NodeSpec::Prepared(_) => prepared::VERSION,
            NodeSpec::Score(_) => score::VERSION,
            NodeSpec::Table(_) => table::VERSION,
            NodeSpec::Images(_) => images::VERSION,
            NodeSpec::Transform(_) => images::TRANSFORM_VERSION,
            NodeSpec::Weights(_) => network::WEIGHTS_VERSION,
            NodeSpec::Train(_) => network::TRAIN_VERSION,
            NodeSpec::Extract(_) => network::EXTRACT_VERSION,
        }
    }

    /// The parameters that enter the key (typed and canonical: sorted keys, no file paths).
    pub fn key_params(&self) -> serde_json::Value {
        match self {
            NodeSpec::Source(s) => s.key_params(),
            NodeSpec::Folds(f) => f.key_params(),
            NodeSpec::Prepared(p) => p.key_params(),
            NodeSpec::Score(s) => s.key_params(),
            NodeSpec::Table(t) => t.key_params(),
            NodeSpec::Images(i) => i.key_params(),
            NodeSpec::Transform(t) => t.key_params(),
            NodeSpec::Weights(w) => w.key_params(),
            NodeSpec::Train(t) => t.key_params(),
            NodeSpec::Extract(e) => e.key_params(),
        }
    }

    /// Files outside the store whose contents enter the key.
    pub fn external_files(&self) -> Vec<PathBuf> {
        match self {
            NodeSpec::Source(s) => s.files(),
            NodeSpec::Images(i) => vec![i.package.clone()],
            NodeSpec::Weights(w) => vec![w.file.clone()],
            _ => Vec::new(),
        }
    }
}

/// The canonical JSON of `FoldSpec` (shared by folds and score parameters).
pub fn fold_params(f: &FoldSpec) -> serde_json::Value {
    serde_json::json!({ "k": f.k, "shuffle_seed": f.shuffle_seed })
}

/// The options of `settings` that `metric` depends on, canonically.
pub fn metric_params(metric: Metric, settings: &Settings) -> serde_json::Value {
    use repflow_kernels::{Corr, DimMatch, HsicEstimator, TestZscore};
    let corr = |c: Corr| match c {
        Corr::Pearson => "pearson",
        Corr::Spearman => "spearman",
    };
    let mut p = serde_json::json!({ "metric": metric.name() });
    match metric {
        Metric::Linear => {
            p["corr"] = corr(settings.corr).into();
            p["test_zscore"] = match settings.test_zscore {
                TestZscore::Train => "train",
                TestZscore::Own => "own",
            }
            .into();
            // Exact bit patterns, so that equal floats give equal keys everywhere.
            p["alphas"] = settings
                .alphas
                .iter()
                .map(|a| format!("{:016x}", a.to_bits()))
                .collect::<Vec<_>>()
                .into();
        }
        Metric::Procrustes => {
            p["corr"] = corr(settings.corr).into();
            p["dim_match"] = match settings.dim_match {
                DimMatch::ZeroPad => "zeropad",
                DimMatch::Pca => "pca",
            }
            .into();
        }
        Metric::Permutation | Metric::SoftMatching => p["corr"] = corr(settings.corr).into(),
        Metric::Cka => {
            p["hsic"] = match settings.hsic {
                HsicEstimator::Biased => "biased",
                HsicEstimator::Unbiased => "unbiased",
            }
            .into()
        }
        Metric::Rsa => p["rsa_compare"] = corr(settings.rsa_compare).into(),
    }
    p
}
