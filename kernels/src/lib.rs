//! # repflow-kernels
//!
//! The mathematics of repflow: fold splits, correlations and the cross-validated
//! alignment metrics between two layers' activations, with no I/O and no knowledge of
//! pipelines or caches.
//!
//! Inputs are activation matrices `X` (m × n_x) and `Y` (m × n_y) whose rows are the same
//! stimuli in the same order and whose columns are units. Work that depends on one layer
//! only (dead units, fold statistics, the ridge factorisation, ranks, the RDM) lives in a
//! [`PreparedLayer`], computed once and shared by every pair and both directions the layer
//! takes part in; a [`Pair`] does only the pair's own work.
//!
//! ```
//! use faer::Mat;
//! use repflow_kernels::{Metric, Pair, PreparedLayer, Settings};
//!
//! let x = Mat::from_fn(50, 4, |i, j| ((i * 7 + j * 3) % 11) as f64 + (i as f64).sin());
//! let settings = Settings::default();
//! let a = PreparedLayer::new(x.as_ref(), &settings).unwrap();
//! let b = PreparedLayer::new(x.as_ref(), &settings).unwrap();
//! let score = Pair::new(&a, &b).unwrap().score(Metric::Procrustes).unwrap();
//! assert!((score.score - 1.0).abs() < 1e-12);
//! ```

pub mod across_scores;
pub mod backend;
pub mod batch;
pub mod cka;
pub mod folds;
pub mod inference;
pub mod layer;
pub mod lazy;
pub mod linear;
pub mod maps;
pub mod matching;
pub mod pair;
pub mod procrustes;
pub mod products;
pub mod ridge;
pub mod rng;
pub mod rotation;
pub mod rsa;
pub mod settings;
pub mod shift;
pub mod shift_cross;
pub mod stats;
pub mod transport;

pub use folds::{FoldSpec, Folds};
pub use layer::{DataBuffer, FoldStats, LayerParts, PreparedLayer};
pub use pair::{Pair, Score};
pub use settings::{
    Corr, DimMatch, HsicEstimator, Metric, Named, Setting, SettingValue, Settings, TestZscore,
};

/// Errors of the kernels: invalid shapes or settings, or a numerical failure.
#[derive(Debug, Clone, PartialEq)]
pub enum KernelError {
    /// The inputs or settings cannot be used; the message says what to change.
    Invalid(String),
    /// A decomposition failed to converge or a solver met an impossible state.
    Numerical(String),
}

impl std::fmt::Display for KernelError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KernelError::Invalid(msg) => write!(f, "{msg}"),
            KernelError::Numerical(msg) => write!(f, "numerical failure: {msg}"),
        }
    }
}

impl std::error::Error for KernelError {}

impl KernelError {
    /// The same error with `what` (the quantity being computed) in front of its message.
    pub fn context(self, what: &str) -> Self {
        match self {
            KernelError::Invalid(m) => KernelError::Invalid(format!("{what}: {m}")),
            KernelError::Numerical(m) => KernelError::Numerical(format!("{what}: {m}")),
        }
    }
}
