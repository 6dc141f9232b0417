//! Pipelines: the TOML experiment files under `pipelines/`, parsed, checked and expanded
//! into the nodes of the DAG.
//!
//! ```toml
//! name = "example"                 # default: the file's stem
//! results = "results/example"      # default: results/<name>
//! models = ["net_a", "net_b"]
//! pairs = "all"                    # every pair of distinct models, or [["net_a", "net_b"]]
//! layers = "matched"               # matched by normalised depth, "named", or "all" (every x every)
//! metrics = ["linear", "procrustes"]
//!
//! [source]
//! dir = "../data/example"          # DIR/<model>/<layer>.npy, relative to this file
//! format = "npy"                   # or "safetensors": DIR/<model>.safetensors, a tensor per layer
//!
//! [layer_lists]                    # optional: explicit layers (and order) of a model
//! net_a = ["conv1", "fc"]
//!
//! [options]                        # the metric engine's options (all optional)
//! folds = 5
//! seed = 42
//! shuffle = true
//! corr = "pearson"
//! test_zscore = "train"
//! alphas = [1e-8, 1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 0.1, 1.0, 10.0, 100.0, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8]
//! dim_match = "zeropad"
//! hsic = "biased"
//! rsa_compare = "spearman"
//! ```

mod expand;
pub mod graph;
pub mod language;
pub mod layer_pairs;
pub mod networks;
mod spec;

pub use expand::{expand, Layer, LayerPair, Model, Plan};
pub use spec::{
    closest, load, NetworkSpec, Options, Pairs, PipelineSpec, SentencesSpec, SlurmSpec,
    SourceFormat, SourceSpec, StimuliSpec, TrainingSpec,
};

/// The label closest to `word`, for "did you mean" hints.
pub fn closest_label<'a>(word: &str, labels: &[&'a str]) -> Option<&'a str> {
    closest(word, labels.iter().copied())
}
