//! Cross-validated orthogonal Procrustes score.
//!
//! In each fold both layers are centred with their train means and
//! $M = \arg\min_{M^\top M = I} \|X_c M - Y_c\|_F = U V^\top$ from the SVD
//! $X_c^\top Y_c = U S V^\top$ (scipy's `orthogonal_procrustes`). The narrower layer is
//! zero-padded to the wider width; only the real units of the target are scored, and the
//! padded map restricted to them is the polar factor of the (unpadded) cross-covariance,
//! so no padding is materialised. X→Y predicts $(X_{te} - \mu_x) M$, Y→X predicts
//! $(Y_{te} - \mu_y) M^\top$. netrep's angular distance
//! $\arccos \langle X_{te} M, Y_{te}\rangle / (\|X_{te}\|\,\|Y_{te}\|)$ is reported beside it.

use faer::{Mat, MatRef};
use rayon::prelude::*;

use crate::backend::Held;
use crate::layer::PreparedLayer;
use crate::pair::{Pair, Score};
use crate::settings::{Corr, DimMatch, Metric, Setting};
use crate::{stats, KernelError};

/// Top-`k` principal axes (n × k, largest variance first) of a layer's fold-`f` train rows.
fn pca_axes(layer: &PreparedLayer, f: usize, k: usize) -> Result<Mat<f64>, KernelError> {
    let te = layer.test_rows(f);
    let backend = crate::backend::current();
    let block = backend.gram(te);
    let total = layer.gram_total();
    let mu = &layer.stats(f).train_mean;
    let m = layer.n_train(f) as f64;
    let scatter = Mat::from_fn(total.nrows(), total.ncols(), |i, j| {
        (total[(i, j)] - block[(i, j)]) - m * mu[i] * mu[j]
    });
    let (_, vectors) = backend
        .sym_eigen(scatter.as_ref())
        .map_err(|e| e.context("PCA of the wider layer"))?;
    let n = layer.n_units();
    // eigenvalues ascend: the last k columns, largest first
    Ok(Mat::from_fn(n, k, |i, c| vectors[(i, n - 1 - c)]))
}

/// A layer's fold-`f` test rows centred with its train means.
fn centred_test(layer: &PreparedLayer, f: usize) -> Mat<f64> {
    let te = layer.test_rows(f);
    let mu = &layer.stats(f).train_mean;
    Mat::from_fn(te.nrows(), te.ncols(), |i, j| te[(i, j)] - mu[j])
}

struct FoldResult {
    xy: f64,
    yx: f64,
    angular: f64,
    undefined: usize,
}

/// What fold `f`'s map is fitted from: the matrix whose polar factor is the map, and the
/// principal axes of the wider layer when it is reduced to the narrower one's width.
struct FoldFit {
    target: Mat<f64>,
    axes: Option<Mat<f64>>,
}

fn fold_fit(pair: &Pair<'_>, f: usize) -> Result<FoldFit, KernelError> {
    let (x, y) = (pair.x(), pair.y());
    let cross = pair.train_cross(f);
    let (nx, ny) = (x.n_units(), y.n_units());
    let pca = x.settings().dim_match == DimMatch::Pca;
    Ok(if pca && nx > ny {
        // X reduced to its ny principal axes P: the map acts on X P.
        let p = pca_axes(x, f, ny)?;
        FoldFit {
            target: p.transpose() * &cross,
            axes: Some(p),
        }
    } else if pca && nx < ny {
        // Y reduced to its nx principal axes P: the map acts into Y P.
        let p = pca_axes(y, f, nx)?;
        FoldFit {
            target: &cross * &p,
            axes: Some(p),
        }
    } else {
        FoldFit {
            target: cross,
            axes: None,
        }
    })
}

/// Fold `f`'s held-out scores under the map `m` fitted from `fit`.
fn fold_scores(pair: &Pair<'_>, f: usize, fit: &FoldFit, m: Mat<f64>) -> FoldResult {
    let (x, y) = (pair.x(), pair.y());
    let spearman = x.settings().corr == Corr::Spearman;
    if fit.axes.is_none() && !spearman {
        if let Some(r) = held_fold_scores(pair, f, m.as_ref()) {
            return r;
        }
    }
    let xte = centred_test(x, f);
    let yte = centred_test(y, f);
    let x_reduced = x.n_units() > y.n_units();
    // pred_y, pred_x: predictions on the real units; mapped, target: X's mapped test rows
    // and Y's test rows in the space where the map acts (for the angular distance).
    let (pred_y, pred_x, mapped, target) = match &fit.axes {
        Some(p) if x_reduced => {
            let pred_y = (&xte * p) * &m;
            let pred_x = (&yte * m.transpose()) * p.transpose();
            (pred_y.clone(), pred_x, pred_y, yte.clone())
        }
        Some(p) => {
            let mapped = &xte * &m;
            let pred_y = &mapped * p.transpose();
            let yred = &yte * p;
            let pred_x = &yred * m.transpose();
            (pred_y, pred_x, mapped, yred)
        }
        None => {
            let backend = crate::backend::current();
            let pred_y = backend.product(xte.as_ref(), m.as_ref());
            let pred_x = backend.product(yte.as_ref(), m.transpose());
            (pred_y.clone(), pred_x, pred_y, yte.clone())
        }
    };
    let (ry, uy) = stats::paired_column_correlations(pred_y.as_ref(), yte.as_ref(), spearman);
    let (rx, ux) = stats::paired_column_correlations(pred_x.as_ref(), xte.as_ref(), spearman);
    // An orthogonal map keeps norms, so ‖X_te M‖ = ‖X_te‖ (or ‖X_te P‖ after reduction).
    let inner: f64 = (0..target.ncols())
        .map(|j| {
            (0..target.nrows())
                .map(|i| mapped[(i, j)] * target[(i, j)])
                .sum::<f64>()
        })
        .sum();
    let x_norm = if fit.axes.is_some() && x_reduced {
        mapped.norm_l2()
    } else {
        xte.norm_l2()
    };
    let angular = (inner / (x_norm * target.norm_l2()))
        .clamp(-1.0, 1.0)
        .acos();
    FoldResult {
        xy: stats::mean(&ry),
        yx: stats::mean(&rx),
        angular,
        undefined: ux + uy,
    }
}

/// Fold `f`'s Pearson scores from layers the backend holds ([`Backend::held_correlations`]):
/// the predictions never leave the device — a column's Pearson correlation is blind to the
/// train means' shift, so the raw test blocks serve — and the angular distance comes from
/// the fold's block and test moments ([`angular_from_moments`]). `None` where the backend
/// does not hold the layers (the CPU): the caller predicts.
///
/// [`Backend::held_correlations`]: crate::backend::Backend::held_correlations
fn held_fold_scores(pair: &Pair<'_>, f: usize, m: MatRef<'_, f64>) -> Option<FoldResult> {
    let backend = crate::backend::current();
    let (xt, yt) = (pair.x().test_rows(f), pair.y().test_rows(f));
    let ry = backend.held_correlations(xt, m, yt)?;
    let rx = backend.held_correlations(yt, m.transpose(), xt)?;
    let (ry, uy) = stats::defined_correlations(ry);
    let (rx, ux) = stats::defined_correlations(rx);
    Some(FoldResult {
        xy: stats::mean(&ry),
        yx: stats::mean(&rx),
        angular: angular_from_moments(pair, f, m),
        undefined: ux + uy,
    })
}

/// Fold `f`'s angular distance under the map `m` (no dimension matching) from its block
/// `B = X_teᵀ Y_te` and the test rows' moments, with no prediction: for test rows centred
/// with the train means μ (x̄: test means, σ: test standard deviations, r test rows),
/// `⟨X_c M, Y_c⟩ = Σ M ∘ [(B − r x̄ ȳᵀ) + r (x̄ − μ_x)(ȳ − μ_y)ᵀ]` and
/// `‖X_c‖² = r Σ (σ² + (x̄ − μ)²)`.
fn angular_from_moments(pair: &Pair<'_>, f: usize, m: MatRef<'_, f64>) -> f64 {
    let (sx, sy) = (pair.x().stats(f), pair.y().stats(f));
    let r = pair.x().test_rows(f).nrows() as f64;
    let block = &pair.blocks()[f];
    let mut inner = 0.0;
    for j in 0..m.ncols() {
        let (ty, dy) = (sy.test_mean[j], sy.test_mean[j] - sy.train_mean[j]);
        for i in 0..m.nrows() {
            let (tx, dx) = (sx.test_mean[i], sx.test_mean[i] - sx.train_mean[i]);
            inner += m[(i, j)] * ((block[(i, j)] - r * tx * ty) + r * dx * dy);
        }
    }
    let norm = |s: &crate::layer::FoldStats| {
        let squares: f64 = (0..s.test_mean.len())
            .map(|j| {
                let d = s.test_mean[j] - s.train_mean[j];
                s.test_std[j] * s.test_std[j] + d * d
            })
            .sum();
        (r * squares).sqrt()
    };
    (inner / (norm(sx) * norm(sy))).clamp(-1.0, 1.0).acos()
}

/// The settings Procrustes reads (its score's key holds exactly these).
pub const READS: &[Setting] = &[Setting::Corr, Setting::DimMatch];

/// The Procrustes score of a pair, both directions, every fold.
pub(crate) fn score(pair: &Pair<'_>) -> Result<Score, KernelError> {
    score_many(std::slice::from_ref(pair))
        .pop()
        .expect("one score per pair")
}

/// The Procrustes scores of many pairs: every fold of every pair is fitted first, then all
/// their maps are asked of the backend in one call ([`Backend::polar_many`]: batched SVDs
/// on a GPU), then every fold is scored. The numbers are those of scoring each pair alone.
/// The caller bounds the memory by the number of pairs it passes (each holds its folds'
/// cross-products until it is dropped).
///
/// [`Backend::polar_many`]: crate::backend::Backend::polar_many
pub(crate) fn score_many(pairs: &[Pair<'_>]) -> Vec<Result<Score, KernelError>> {
    // a GPU keeps the layers for every fold of every pair (no-op on the CPU)
    let _held = Held::new(
        crate::backend::current(),
        pairs.iter().flat_map(|p| [p.x().data(), p.y().data()]),
    );
    pairs.par_iter().for_each(prepare);
    let folds: Vec<(usize, usize)> = (0..pairs.len())
        .flat_map(|p| (0..pairs[p].x().k()).map(move |f| (p, f)))
        .collect();
    let fits: Vec<Result<FoldFit, KernelError>> = folds
        .par_iter()
        .map(|&(p, f)| fold_fit(&pairs[p], f))
        .collect();
    let targets: Vec<MatRef<'_, f64>> = fits
        .iter()
        .filter_map(|fit| fit.as_ref().ok().map(|fit| fit.target.as_ref()))
        .collect();
    let mut maps = crate::backend::current().polar_many(&targets).into_iter();
    // the maps in fold order, an error where the fit or the SVD failed
    let maps: Vec<Result<Mat<f64>, KernelError>> = fits
        .iter()
        .map(|fit| match fit {
            Ok(_) => maps.next().expect("one map per fit"),
            Err(e) => Err(e.clone()),
        })
        .collect();
    let mut results: Vec<Option<Result<FoldResult, KernelError>>> = folds
        .par_iter()
        .zip(fits.par_iter().zip(maps))
        .map(|(&(p, f), (fit, map))| {
            let fit = fit.as_ref().map_err(Clone::clone)?;
            Ok(fold_scores(&pairs[p], f, fit, map?))
        })
        .map(Some)
        .collect();
    let mut at = 0;
    pairs
        .iter()
        .map(|pair| {
            let k = pair.x().k();
            let pair_folds = results[at..at + k]
                .iter_mut()
                .map(|r| r.take().expect("unread"));
            at += k;
            assemble(pair_folds)
        })
        .collect()
}

/// Computes what every fold of `pair` reads: its blocks, both layers' fold statistics and,
/// when one layer is reduced to the other's width, the wider layer's Gram.
fn prepare(pair: &Pair<'_>) {
    pair.fold_products();
    let (x, y) = (pair.x(), pair.y());
    if x.settings().dim_match == DimMatch::Pca && x.n_units() != y.n_units() {
        let wider = if x.n_units() > y.n_units() { x } else { y };
        wider.gram_total();
    }
}

/// A pair's score from its folds' results, in fold order.
fn assemble(
    folds: impl Iterator<Item = Result<FoldResult, KernelError>>,
) -> Result<Score, KernelError> {
    let (mut xy, mut yx, mut ang, mut undefined) = (vec![], vec![], vec![], 0);
    for r in folds {
        let r = r?;
        xy.push(r.xy);
        yx.push(r.yx);
        ang.push(r.angular);
        undefined += r.undefined;
    }
    let mut s = Score::directional(Metric::Procrustes, xy, yx, undefined);
    s.angular_distance = Some(ang);
    Ok(s)
}
