//! Two prepared layers compared together: the pair's shared cross-products and the
//! scores of every metric.

use crate::lazy::Lazy;

use faer::Mat;

use crate::layer::PreparedLayer;
use crate::settings::Metric;
use crate::{cka, linear, matching, procrustes, rsa, stats, KernelError};

/// The result of one metric on one pair of layers.
///
/// For cross-validated metrics `fold_scores[f]` is fold `f`'s score (the mean of both
/// directions for the asymmetric linear and Procrustes metrics), `score` their mean and
/// `std` their standard deviation (ddof = 0). CKA and RSA use all stimuli at once: they
/// have no fold scores and no `std`.
#[derive(Clone, Debug, PartialEq)]
pub struct Score {
    /// The metric.
    pub metric: Metric,
    /// The score: mean over folds (a similarity; 1 means identical up to the metric's invariances).
    pub score: f64,
    /// Standard deviation of the fold scores (ddof = 0); `None` for CKA and RSA.
    pub std: Option<f64>,
    /// Score of each fold.
    pub fold_scores: Vec<f64>,
    /// Per-fold scores predicting Y from X (asymmetric metrics only).
    pub x_to_y: Option<Vec<f64>>,
    /// Per-fold scores predicting X from Y (asymmetric metrics only).
    pub y_to_x: Option<Vec<f64>>,
    /// Number of correlations that were undefined (a unit constant on a fold) and counted as 0.
    pub nan_units: usize,
    /// Procrustes only: netrep's angular distance (radians) of each fold.
    pub angular_distance: Option<Vec<f64>>,
    /// Linear only: the ridge penalty chosen in each fold, X→Y then Y→X.
    pub alphas: Option<(Vec<f64>, Vec<f64>)>,
}

impl Score {
    /// A score whose folds are already direction-symmetric.
    pub(crate) fn symmetric(metric: Metric, fold_scores: Vec<f64>, nan_units: usize) -> Self {
        Self {
            metric,
            score: stats::mean(&fold_scores),
            std: Some(stats::std(&fold_scores)),
            fold_scores,
            x_to_y: None,
            y_to_x: None,
            nan_units,
            angular_distance: None,
            alphas: None,
        }
    }

    /// A score averaged over both directions, fold by fold.
    pub(crate) fn directional(
        metric: Metric,
        xy: Vec<f64>,
        yx: Vec<f64>,
        nan_units: usize,
    ) -> Self {
        let folds: Vec<f64> = xy.iter().zip(&yx).map(|(a, b)| 0.5 * (a + b)).collect();
        let mut s = Self::symmetric(metric, folds, nan_units);
        s.x_to_y = Some(xy);
        s.y_to_x = Some(yx);
        s
    }

    /// A score computed once on all stimuli.
    pub(crate) fn whole(metric: Metric, value: f64, nan_units: usize) -> Self {
        Self {
            metric,
            score: value,
            std: None,
            fold_scores: Vec::new(),
            x_to_y: None,
            y_to_x: None,
            nan_units,
            angular_distance: None,
            alphas: None,
        }
    }
}

/// Two layers over the same stimuli, with the cross-products every metric shares.
pub struct Pair<'a> {
    a: &'a PreparedLayer,
    b: &'a PreparedLayer,
    blocks: Lazy<Vec<Mat<f64>>>,
    total: Lazy<Mat<f64>>,
}

impl<'a> Pair<'a> {
    /// Pairs `a` (X) and `b` (Y); they must cover the same stimuli with the same settings.
    pub fn new(a: &'a PreparedLayer, b: &'a PreparedLayer) -> Result<Self, KernelError> {
        if a.n_rows() != b.n_rows() {
            return Err(KernelError::Invalid(format!(
                "X has {} rows (stimuli) but Y has {}; rows must be the same stimuli in the same order",
                a.n_rows(),
                b.n_rows()
            )));
        }
        if a.settings() != b.settings() {
            return Err(KernelError::Invalid(
                "the two layers were prepared with different settings".into(),
            ));
        }
        Ok(Self {
            a,
            b,
            blocks: Lazy::new(),
            total: Lazy::new(),
        })
    }

    /// X's layer.
    pub fn x(&self) -> &'a PreparedLayer {
        self.a
    }

    /// Y's layer.
    pub fn y(&self) -> &'a PreparedLayer {
        self.b
    }

    /// Per-fold test-block cross-products `X_teᵀ Y_te` (centred data).
    pub(crate) fn blocks(&self) -> &[Mat<f64>] {
        self.blocks
            .get_or_compute(|| {
                let blocks: Vec<_> = (0..self.a.k())
                    .map(|f| (self.a.test_rows(f), self.b.test_rows(f)))
                    .collect();
                crate::backend::current().cross_many(&blocks)
            })
            .as_slice()
    }

    /// `Xᵀ Y` over all stimuli: the sum of the test blocks when they exist (the folds
    /// partition the rows), else one product (CKA alone needs no blocks).
    pub fn cross_total(&self) -> &Mat<f64> {
        self.total.get_or_compute(|| {
            let Some(blocks) = self.blocks.get() else {
                return crate::backend::current().cross(self.a.data(), self.b.data());
            };
            let mut total = blocks[0].clone();
            for b in &blocks[1..] {
                total += b;
            }
            total
        })
    }

    /// Computes the test blocks, their sum and both layers' fold statistics once. A metric
    /// calls this before its folds
    /// run side by side: a fold finding them missing would compute its own copy (see
    /// `lazy`), and a total asked for before the blocks would be a second full product.
    pub(crate) fn fold_products(&self) {
        self.blocks();
        self.cross_total();
        self.a.stats(0);
        self.b.stats(0);
    }

    /// Fold `f`'s train cross-product centred with the train means:
    /// `(XᵀY − X_teᵀY_te) − m_tr μ_x μ_yᵀ`.
    pub fn train_cross(&self, f: usize) -> Mat<f64> {
        let m = self.a.n_train(f) as f64;
        let (sa, sb) = (self.a.stats(f), self.b.stats(f));
        // blocks first: the total is then their sum, not a second full product
        let block = &self.blocks()[f];
        let total = self.cross_total();
        Mat::from_fn(total.nrows(), total.ncols(), |i, j| {
            (total[(i, j)] - block[(i, j)]) - m * sa.train_mean[i] * sb.train_mean[j]
        })
    }

    /// Scores every pair with `metric`, with the numbers [`Pair::score`] gives each.
    /// Procrustes fits all the pairs' folds first and asks the backend for all their maps in
    /// one call (batched SVDs on a GPU); the other metrics score the pairs in turn. The
    /// caller bounds the memory by how many pairs it passes at once.
    pub fn score_many(pairs: &[Pair<'_>], metric: Metric) -> Vec<Result<Score, KernelError>> {
        match metric {
            Metric::Procrustes => procrustes::score_many(pairs),
            _ => pairs.iter().map(|p| p.score(metric)).collect(),
        }
    }

    /// Scores the pair with `metric`.
    pub fn score(&self, metric: Metric) -> Result<Score, KernelError> {
        match metric {
            Metric::Linear => linear::score(self),
            Metric::Procrustes => procrustes::score(self),
            Metric::Permutation => matching::permutation_score(self),
            Metric::SoftMatching => matching::soft_matching_score(self),
            Metric::Cka => cka::score(self),
            Metric::Rsa => Ok(rsa::score(self)),
        }
    }
}
