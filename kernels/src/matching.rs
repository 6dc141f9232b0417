//! Cross-validated unit matching: the permutation score (exact assignment) and the
//! soft-matching score (exact optimal transport with uniform marginals).
//!
//! In each fold $R^{tr}_{ij}$ is the train-row correlation between X's unit $i$ and Y's
//! unit $j$. Permutation: $\pi = \arg\max_\pi \sum_i R^{tr}_{i\pi(i)}$, score
//! $\frac1n\sum_i R^{te}_{i\pi(i)}$. Soft matching:
//! $P = \arg\min_{P\mathbf 1 = \mathbf 1/n_x,\ P^\top\mathbf 1 = \mathbf 1/n_y} \langle P, 1 - R^{tr}\rangle$,
//! score $\sum_{ij} P_{ij} R^{te}_{ij}$, where $R^{te}$ uses the test rows' own centring.
//! Both are symmetric in X and Y; with equal widths the optimal plan is a permutation
//! divided by n, so the two scores agree.

use faer::Mat;
use rayon::prelude::*;

use crate::pair::{Pair, Score};
use crate::settings::{Corr, Metric, Setting};
use crate::{products, stats, transport, KernelError};

/// Fold `f`'s train correlation matrix between X's and Y's units (n_x × n_y); undefined
/// correlations (a unit constant on the train rows) are 0.
pub fn train_correlations(pair: &Pair<'_>, f: usize) -> Mat<f64> {
    let (x, y) = (pair.x(), pair.y());
    match x.settings().corr {
        Corr::Pearson => {
            let cross = pair.train_cross(f);
            let m = x.n_train(f) as f64;
            let (sx, sy) = (&x.stats(f).train_std, &y.stats(f).train_std);
            Mat::from_fn(cross.nrows(), cross.ncols(), |i, j| {
                if sx[i] == 0.0 || sy[j] == 0.0 {
                    0.0
                } else {
                    (cross[(i, j)] / (m * sx[i] * sy[j])).clamp(-1.0, 1.0)
                }
            })
        }
        Corr::Spearman => {
            let (rx, ry) = (&x.ranks()[f].train, &y.ranks()[f].train);
            let zx = standardise_columns(rx);
            let zy = standardise_columns(ry);
            let r = products::cross(zx.as_ref(), zy.as_ref());
            Mat::from_fn(r.nrows(), r.ncols(), |i, j| r[(i, j)].clamp(-1.0, 1.0))
        }
    }
}

/// What every fold's train correlations read, computed once before the folds run side by
/// side: the shared cross-products (Pearson) or the layers' ranks (Spearman).
fn fold_products(pair: &Pair<'_>) {
    match pair.x().settings().corr {
        Corr::Pearson => pair.fold_products(),
        Corr::Spearman => {
            pair.x().ranks();
            pair.y().ranks();
        }
    }
}

/// Columns centred and scaled to unit norm (a constant column becomes 0).
fn standardise_columns(a: &Mat<f64>) -> Mat<f64> {
    let (m, n) = a.shape();
    let mut z = a.clone();
    for j in 0..n {
        let mu = (0..m).map(|i| a[(i, j)]).sum::<f64>() / m as f64;
        let norm = (0..m).map(|i| (a[(i, j)] - mu).powi(2)).sum::<f64>().sqrt();
        let inv = if stats::is_constant(a.col(j).iter().copied()) {
            0.0
        } else {
            1.0 / norm
        };
        for i in 0..m {
            z[(i, j)] = (a[(i, j)] - mu) * inv;
        }
    }
    z
}

/// Test-row correlation between X's unit `i` and Y's unit `j` in fold `f`.
fn test_correlation(pair: &Pair<'_>, f: usize, i: usize, j: usize) -> Option<f64> {
    let (x, y) = (pair.x(), pair.y());
    let (a, b): (Vec<f64>, Vec<f64>) = match x.settings().corr {
        Corr::Pearson => (
            x.test_rows(f).col(i).iter().copied().collect(),
            y.test_rows(f).col(j).iter().copied().collect(),
        ),
        Corr::Spearman => (
            x.ranks()[f].test.col(i).iter().copied().collect(),
            y.ranks()[f].test.col(j).iter().copied().collect(),
        ),
    };
    stats::pearson(&a, &b)
}

/// The permutation score: exact assignment on train correlations (equal widths only).
/// The settings the permutation metric reads (its score's key holds exactly these).
pub const PERMUTATION_READS: &[Setting] = &[Setting::Corr];

pub(crate) fn permutation_score(pair: &Pair<'_>) -> Result<Score, KernelError> {
    let (nx, ny) = (pair.x().n_units(), pair.y().n_units());
    if nx != ny {
        return Err(KernelError::Invalid(format!(
            "permutation needs equal widths but X has {nx} units and Y has {ny} \
             (after dropping constant units); use --metric soft-matching for unequal widths"
        )));
    }
    fold_products(pair);
    let folds: Vec<Result<(f64, usize), KernelError>> = (0..pair.x().k())
        .into_par_iter()
        .map(|f| {
            let r = train_correlations(pair, f);
            let mut undefined = 0;
            let mut sum = 0.0;
            for (i, j) in transport::assignment(r.as_ref(), true)? {
                match test_correlation(pair, f, i, j) {
                    Some(r) => sum += r,
                    None => undefined += 1,
                }
            }
            Ok((sum / nx as f64, undefined))
        })
        .collect();
    collect(Metric::Permutation, folds)
}

/// The soft-matching score: exact optimal transport with uniform marginals.
/// The settings soft matching reads (its score's key holds exactly these).
pub const SOFT_MATCHING_READS: &[Setting] = &[Setting::Corr];

pub(crate) fn soft_matching_score(pair: &Pair<'_>) -> Result<Score, KernelError> {
    fold_products(pair);
    let folds: Vec<Result<(f64, usize), KernelError>> = (0..pair.x().k())
        .into_par_iter()
        .map(|f| {
            let r = train_correlations(pair, f);
            let cost = Mat::from_fn(r.nrows(), r.ncols(), |i, j| 1.0 - r[(i, j)]);
            let plan = transport::uniform_transport(cost.as_ref())?;
            let mut undefined = 0;
            let mut sum = 0.0;
            for &(i, j, p) in &plan.entries {
                match test_correlation(pair, f, i, j) {
                    Some(r) => sum += p * r,
                    None => undefined += 1,
                }
            }
            Ok((sum, undefined))
        })
        .collect();
    collect(Metric::SoftMatching, folds)
}

fn collect(
    metric: Metric,
    folds: Vec<Result<(f64, usize), KernelError>>,
) -> Result<Score, KernelError> {
    let mut scores = Vec::with_capacity(folds.len());
    let mut undefined = 0;
    for r in folds {
        let (s, u) = r?;
        scores.push(s);
        undefined += u;
    }
    Ok(Score::symmetric(metric, scores, undefined))
}
