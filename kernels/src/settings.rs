//! The choices a score depends on: metric, folds, correlation type and per-metric options.

use crate::folds::FoldSpec;

/// An alignment metric.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Metric {
    /// Cross-validated ridge regression (affine-invariant), both directions.
    Linear,
    /// Cross-validated orthogonal Procrustes map (rotations and reflections), both directions.
    Procrustes,
    /// Cross-validated one-to-one unit matching by exact assignment (equal widths).
    Permutation,
    /// Cross-validated exact optimal transport between units with uniform marginals.
    SoftMatching,
    /// Linear centred kernel alignment on all stimuli.
    Cka,
    /// Correlation between the upper triangles of correlation-distance RDMs.
    Rsa,
}

impl Metric {
    /// Every metric, in report order.
    pub const ALL: [Metric; 6] = [
        Metric::Linear,
        Metric::Procrustes,
        Metric::Permutation,
        Metric::SoftMatching,
        Metric::Cka,
        Metric::Rsa,
    ];

    /// The name used on the command line and in tables.
    pub fn name(self) -> &'static str {
        match self {
            Metric::Linear => "linear",
            Metric::Procrustes => "procrustes",
            Metric::Permutation => "permutation",
            Metric::SoftMatching => "soft-matching",
            Metric::Cka => "cka",
            Metric::Rsa => "rsa",
        }
    }

    /// Parses a command-line name.
    pub fn from_name(name: &str) -> Option<Metric> {
        Metric::ALL.into_iter().find(|m| m.name() == name)
    }

    /// Whether the metric is cross-validated over folds.
    pub fn is_cross_validated(self) -> bool {
        !matches!(self, Metric::Cka | Metric::Rsa)
    }
}

/// Which correlation compares responses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Corr {
    /// Pearson's r.
    Pearson,
    /// Spearman's rho: Pearson's r on average ranks (ties share the mean rank).
    Spearman,
}

/// Which statistics z-score the source's test fold in the linear metric.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TestZscore {
    /// The train fold's mean and standard deviation (no leakage; the default).
    Train,
    /// The test fold's own mean and standard deviation (as the seed lab's code does).
    Own,
}

/// How Procrustes handles layers of different widths.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DimMatch {
    /// Zero-pad the narrower layer to the wider width (netrep's default).
    ZeroPad,
    /// Reduce the wider layer to the narrower width by PCA fitted on the train fold;
    /// predictions of a reduced target are projected back onto its units.
    Pca,
}

/// Which HSIC estimator CKA uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HsicEstimator {
    /// The biased estimator `tr(KHLH)` (Kornblith et al., 2019).
    Biased,
    /// The unbiased U-statistic estimator (Song et al., 2012).
    Unbiased,
}

/// Every setting a score depends on. Two layers compared together must share them.
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    /// Fold count and shuffling.
    pub folds: FoldSpec,
    /// Correlation type for fold scores and matching costs.
    pub corr: Corr,
    /// Z-scoring of the linear metric's test fold.
    pub test_zscore: TestZscore,
    /// Ridge penalties searched by leave-one-out error; `[0]` means least squares.
    pub alphas: Vec<f64>,
    /// Procrustes width matching.
    pub dim_match: DimMatch,
    /// CKA's HSIC estimator.
    pub hsic: HsicEstimator,
    /// How RSA compares the two RDMs' upper triangles.
    pub rsa_compare: Corr,
}

impl Settings {
    /// scikit-learn's `RidgeCV` grid used by the seed lab: `10^-8, 10^-7, ..., 10^8`.
    pub fn default_alphas() -> Vec<f64> {
        // Parsed, not `powi`, so each value is the correctly rounded decimal like numpy's.
        (-8..=8)
            .map(|e: i32| format!("1e{e}").parse().expect("valid literal"))
            .collect()
    }
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            folds: FoldSpec::default(),
            corr: Corr::Pearson,
            test_zscore: TestZscore::Train,
            alphas: Settings::default_alphas(),
            dim_match: DimMatch::ZeroPad,
            hsic: HsicEstimator::Biased,
            rsa_compare: Corr::Spearman,
        }
    }
}
