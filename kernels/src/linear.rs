//! Cross-validated ridge regression score.
//!
//! In each fold the source is z-scored with the train rows' mean and standard deviation,
//! the target is centred, and
//! $\hat\beta = \arg\min_\beta \|Y_c - Z\beta\|_F^2 + \alpha\|\beta\|_F^2$ with an unpenalised
//! intercept; α is chosen per fold and direction by exact leave-one-out error
//! ([`crate::ridge`]). The fold score is the mean over target units of the correlation
//! between predicted and actual test responses.

use faer::{Mat, MatRef};
use rayon::prelude::*;

use crate::backend::Held;
use crate::layer::PreparedLayer;
use crate::pair::{Pair, Score};
use crate::settings::{Corr, Metric, Setting, TestZscore};
use crate::{products, stats, KernelError};

/// One direction of one fold: (score, undefined correlations, chosen α).
type FoldDirection = (f64, usize, f64);

/// One direction of one fold: returns (score, undefined correlations, chosen α).
fn fold_direction(
    src: &PreparedLayer,
    tgt: &PreparedLayer,
    cross_tr: MatRef<'_, f64>,
    f: usize,
) -> Result<FoldDirection, KernelError> {
    let rf = src.ridge_fold(f)?;
    let settings = src.settings();
    let alphas = &settings.alphas;
    let (n_s, n_t) = (src.n_units(), tgt.n_units());

    // C = Vᵀ Zᵀ Y_c with Zᵀ Y_c = D⁻¹ (centred train cross-product).
    let zty = Mat::from_fn(n_s, n_t, |i, j| {
        if rf.constant[i] {
            0.0
        } else {
            cross_tr[(i, j)] / rf.scale[i]
        }
    });
    let c = products::product(rf.v.transpose(), zty.as_ref());

    let best = if alphas.len() == 1 {
        0
    } else {
        rf.best_alpha(&tgt.train_rows_minus(f, &tgt.stats(f).train_mean), &c)
    };

    // β_z = V diag(1/(λ + α)) C; predict the test rows.
    let alpha = alphas[best];
    let gc = Mat::from_fn(c.nrows(), c.ncols(), |k, j| {
        c[(k, j)] / (rf.lambda[k] + alpha)
    });
    let beta = &rf.v * &gc;
    let st_s = src.stats(f);
    let (shift, scale): (&[f64], Vec<f64>) = match settings.test_zscore {
        TestZscore::Train => (&st_s.train_mean, rf.scale.clone()),
        TestZscore::Own => (
            &st_s.test_mean,
            st_s.test_std
                .iter()
                .map(|&s| if s == 0.0 { 1.0 } else { s })
                .collect(),
        ),
    };
    let xte = src.test_rows(f);
    let spearman = settings.corr == Corr::Spearman;
    if !spearman {
        // Pearson is blind to each prediction column's shift: (X_te − 1 shiftᵀ) D⁻¹ β and
        // X_te (D⁻¹ β) correlate alike, so a backend holding the layers scores the raw
        // test block (a GPU: the prediction never leaves the device)
        let scaled = Mat::from_fn(n_s, n_t, |i, j| beta[(i, j)] / scale[i]);
        let held =
            crate::backend::current().held_correlations(xte, scaled.as_ref(), tgt.test_rows(f));
        if let Some(rs) = held {
            let (rs, undefined) = stats::defined_correlations(rs);
            return Ok((stats::mean(&rs), undefined, alphas[best]));
        }
    }
    let zte = Mat::from_fn(xte.nrows(), n_s, |i, j| (xte[(i, j)] - shift[j]) / scale[j]);
    let pred = &zte * &beta;
    let (rs, undefined) =
        stats::paired_column_correlations(pred.as_ref(), tgt.test_rows(f), spearman);
    Ok((stats::mean(&rs), undefined, alphas[best]))
}

/// The linear score of a pair: ridge X→Y and Y→X in every fold.
/// The settings the linear metric reads (its score's key holds exactly these).
pub const READS: &[Setting] = &[Setting::Corr, Setting::TestZscore, Setting::Alphas];

pub(crate) fn score(pair: &Pair<'_>) -> Result<Score, KernelError> {
    let (x, y) = (pair.x(), pair.y());
    let k = x.k();
    // a GPU keeps both layers while their folds are scored (no-op on the CPU)
    let _held = Held::new(crate::backend::current(), [x.data(), y.data()]);
    pair.fold_products();
    for layer in [x, y] {
        if layer.keeps_factors() {
            layer.ridge()?;
        }
    }
    let fold = |f: usize| -> Result<[FoldDirection; 2], KernelError> {
        let cross = pair.train_cross(f);
        let xy = fold_direction(x, y, cross.as_ref(), f)?;
        let yx = fold_direction(y, x, cross.transpose(), f)?;
        Ok([xy, yx])
    };
    // Layers that keep their factorisations share them between folds run side by side;
    // single-use ones build a factorisation per fold and direction, so folds run one after
    // another (the products inside are parallel) and only one is alive at a time.
    let results: Vec<Result<[FoldDirection; 2], KernelError>> =
        if x.keeps_factors() || y.keeps_factors() {
            (0..k).into_par_iter().map(fold).collect()
        } else {
            (0..k).map(fold).collect()
        };
    let mut xy = Vec::with_capacity(k);
    let mut yx = Vec::with_capacity(k);
    let (mut alpha_xy, mut alpha_yx) = (Vec::with_capacity(k), Vec::with_capacity(k));
    let mut undefined = 0;
    for r in results {
        let [a, b] = r?;
        xy.push(a.0);
        yx.push(b.0);
        alpha_xy.push(a.2);
        alpha_yx.push(b.2);
        undefined += a.1 + b.1;
    }
    let mut s = Score::directional(Metric::Linear, xy, yx, undefined);
    s.alphas = Some((alpha_xy, alpha_yx));
    Ok(s)
}
