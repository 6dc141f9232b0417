//! Cross-validated ridge regression score.
//!
//! In each fold the source is z-scored with the train rows' mean and standard deviation,
//! the target is centred, and
//! $\hat\beta = \arg\min_\beta \|Y_c - Z\beta\|_F^2 + \alpha\|\beta\|_F^2$ with an unpenalised
//! intercept. One $\alpha$ for all targets is chosen from the grid by exact leave-one-out
//! error on the train rows, as scikit-learn's `RidgeCV(alpha_per_target=False)`:
//! $E(\alpha) = \sum_i \|r_i(\alpha)\|^2 / (1 - h_i(\alpha))^2$ with $H = W\,\mathrm{diag}(g)\,W^\top + \mathbf{1}\mathbf{1}^\top/m$,
//! $Z^\top Z = V \Lambda V^\top$, $W = ZV$, $g_k = 1/(\lambda_k + \alpha)$.
//!
//! The source's factorisation, its leverages and the weighted Grams
//! $T_\alpha = U^\top \mathrm{diag}((1-h(\alpha))^{-2})\,U$ ($U = W\Lambda^{-1/2}$) depend on
//! the source alone ([`RidgeFactor`], cached in the [`PreparedLayer`]); a pair then needs
//! one product $B = Y_c A^\top$ per fold and direction ($A = U^\top Y_c$), and
//! $E(\alpha)$ expands as
//! $\sum_i w_i\|y_i\|^2 - 2\sum_{ik} w_i U_{ik} f_k B_{ik} + \sum_{kl} f_k f_l (AA^\top)_{kl} (T_\alpha)_{kl}$
//! with $f_k = \lambda_k/(\lambda_k+\alpha)$. Rows of leverage near 1 (a unit active on a
//! single train stimulus, or more units than train rows) would lose their tiny residuals
//! to cancellation in that expansion, so theirs are computed directly.

use faer::{Mat, MatRef, Side};
use rayon::prelude::*;

use crate::layer::PreparedLayer;
use crate::pair::{Pair, Score};
use crate::settings::{Corr, Metric, TestZscore};
use crate::{stats, KernelError};

/// One fold's ridge factorisation of a source layer, shared by all its targets.
pub struct RidgeFactor {
    /// Z-score divisor of each unit: the train standard deviation, 1 where it is 0.
    scale: Vec<f64>,
    /// Units constant on the train rows (their z-scores are 0).
    constant: Vec<bool>,
    /// Eigenvectors of `ZᵀZ` with non-negligible eigenvalues (n × r).
    v: Mat<f64>,
    /// Their eigenvalues.
    lambda: Vec<f64>,
    /// `U = Z V Λ^{-1/2}` over the train rows (m_tr × r, orthonormal columns).
    u: Mat<f64>,
    /// `g_k(α) = 1/(λ_k + α)` for every α of the grid (r × n_α).
    g: Mat<f64>,
    /// `f_k(α) = λ_k/(λ_k + α)`, the shrinkage of each direction (r × n_α).
    f: Mat<f64>,
    /// Leave-one-out weights `(1 − h_i(α))⁻²` (m_tr × n_α); empty for a single α.
    weights: Mat<f64>,
    /// Train rows of high leverage (`1 − h_i < 10⁻²` at the smallest α), whose residuals
    /// are computed directly: the expansion would lose them to cancellation.
    high_leverage: Vec<usize>,
    /// `T_α = Uᵀ diag(weights_α) U` over the other rows, per α; empty for a single α.
    t: Vec<Mat<f64>>,
}

impl RidgeFactor {
    /// Factorises fold `f` of `layer` as a regression source.
    pub fn new(layer: &PreparedLayer, f: usize) -> Result<Self, KernelError> {
        let st = layer.stats(f);
        let n = layer.n_units();
        let m_tr = layer.n_train(f);
        let constant: Vec<bool> = st.train_std.iter().map(|&s| s == 0.0).collect();
        let scale: Vec<f64> = st.train_std.iter().map(|&s| if s == 0.0 { 1.0 } else { s }).collect();

        // ZᵀZ from the total Gram minus the test block, centred and scaled.
        let te = layer.test_rows(f);
        let block = te.transpose() * te;
        let total = layer.gram_total();
        let mu = &st.train_mean;
        let gz = Mat::from_fn(n, n, |i, j| {
            if constant[i] || constant[j] {
                return 0.0;
            }
            ((total[(i, j)] - block[(i, j)]) - m_tr as f64 * mu[i] * mu[j]) / (scale[i] * scale[j])
        });
        let eig = gz
            .self_adjoint_eigen(Side::Lower)
            .map_err(|e| KernelError::Numerical(format!("eigendecomposition of ZᵀZ: {e:?}")))?;
        let eigenvalues: Vec<f64> = (0..n).map(|k| eig.S()[k]).collect();
        let lambda_max = eigenvalues.iter().cloned().fold(0.0, f64::max);
        // Directions at the level of rounding noise in ZᵀZ are its null space.
        let tol = lambda_max * n as f64 * f64::EPSILON * 10.0;
        let keep: Vec<usize> = (0..n).filter(|&k| eigenvalues[k] > tol).collect();
        let r = keep.len();
        let v = Mat::from_fn(n, r, |i, k| if constant[i] { 0.0 } else { eig.U()[(i, keep[k])] });
        let lambda: Vec<f64> = keep.iter().map(|&k| eigenvalues[k]).collect();

        // U = Z V Λ^{-1/2} = X_tr V' − 1 (μᵀ V'), V' = D⁻¹ V Λ^{-1/2}, on the two train row blocks.
        let v_scaled = Mat::from_fn(n, r, |i, k| v[(i, k)] / (scale[i] * lambda[k].sqrt()));
        let offset: Vec<f64> = (0..r).map(|k| (0..n).map(|i| mu[i] * v_scaled[(i, k)]).sum()).collect();
        let [p0, p1] = layer.train_parts(f);
        let u0 = p0 * &v_scaled;
        let u1 = p1 * &v_scaled;
        let u = Mat::from_fn(m_tr, r, |i, k| {
            let raw = if i < p0.nrows() { u0[(i, k)] } else { u1[(i - p0.nrows(), k)] };
            raw - offset[k]
        });

        let alphas = &layer.settings().alphas;
        let g = Mat::from_fn(r, alphas.len(), |k, a| 1.0 / (lambda[k] + alphas[a]));
        let shrink = Mat::from_fn(r, alphas.len(), |k, a| lambda[k] * g[(k, a)]);
        let (weights, high_leverage, t) = if alphas.len() > 1 {
            let u2 = Mat::from_fn(m_tr, r, |i, k| u[(i, k)] * u[(i, k)]);
            let h = &u2 * &shrink;
            let one_minus_h = Mat::from_fn(m_tr, alphas.len(), |i, a| 1.0 - 1.0 / m_tr as f64 - h[(i, a)]);
            let weights = Mat::from_fn(m_tr, alphas.len(), |i, a| 1.0 / (one_minus_h[(i, a)] * one_minus_h[(i, a)]));
            let smallest = (0..alphas.len()).min_by(|&a, &b| alphas[a].total_cmp(&alphas[b])).unwrap_or(0);
            let high: Vec<usize> = (0..m_tr).filter(|&i| one_minus_h[(i, smallest)] < 1e-2).collect();
            let mut is_high = vec![false; m_tr];
            high.iter().for_each(|&i| is_high[i] = true);
            let t = (0..alphas.len())
                .into_par_iter()
                .map(|a| {
                    let us = Mat::from_fn(m_tr, r, |i, k| {
                        if is_high[i] {
                            0.0
                        } else {
                            u[(i, k)] * weights[(i, a)].sqrt()
                        }
                    });
                    us.transpose() * &us
                })
                .collect();
            (weights, high, t)
        } else {
            (Mat::zeros(0, 0), Vec::new(), Vec::new())
        };
        Ok(Self { scale, constant, v, lambda, u, g, f: shrink, weights, high_leverage, t })
    }

    /// Number of directions kept (the rank of the z-scored train source).
    pub fn rank(&self) -> usize {
        self.lambda.len()
    }
}

/// Index of the α with the smallest leave-one-out error (the first, on ties, as RidgeCV).
///
/// With `A = Λ^{-1/2} C` (so that `Y_c`'s projection is `U A`), the residual of row i is
/// `r_i(α) = y_i − U_i diag(f(α)) A`, and
/// `E(α) = Σ_i w_i ‖y_i‖² − 2 Σ_i w_i (U∘B)_i f(α) + Σ_kl f_k f_l (AAᵀ)_kl (T_α)_kl`
/// with `B = Y_c Aᵀ`, over rows of ordinary leverage; high-leverage rows add
/// `w_i ‖r_i(α)‖²` computed directly.
fn loo_best_alpha(rf: &RidgeFactor, tgt: &PreparedLayer, f: usize, c: &Mat<f64>, n_alpha: usize) -> usize {
    let r = rf.rank();
    let n_t = tgt.n_units();
    let a_mat = Mat::from_fn(r, n_t, |k, j| c[(k, j)] / rf.lambda[k].sqrt());
    let yc = tgt.train_rows_minus(f, &tgt.stats(f).train_mean);
    let b = &yc * a_mat.transpose();
    let ub = Mat::from_fn(b.nrows(), r, |i, k| rf.u[(i, k)] * b[(i, k)]);
    let s = &ub * &rf.f;
    let gram_a = &a_mat * a_mat.transpose();
    let mut is_high = vec![false; yc.nrows()];
    rf.high_leverage.iter().for_each(|&i| is_high[i] = true);
    let y_sq: Vec<f64> = (0..yc.nrows()).map(|i| (0..n_t).map(|j| yc[(i, j)] * yc[(i, j)]).sum()).collect();
    let errors: Vec<f64> = (0..n_alpha)
        .into_par_iter()
        .map(|a| {
            let mut e = 0.0;
            for i in 0..yc.nrows() {
                if !is_high[i] {
                    e += rf.weights[(i, a)] * (y_sq[i] - 2.0 * s[(i, a)]);
                }
            }
            let t = &rf.t[a];
            for l in 0..r {
                let fl = rf.f[(l, a)];
                for k in 0..r {
                    e += rf.f[(k, a)] * fl * gram_a[(k, l)] * t[(k, l)];
                }
            }
            for &i in &rf.high_leverage {
                let mut sq = 0.0;
                for j in 0..n_t {
                    let fit: f64 = (0..r).map(|k| rf.u[(i, k)] * rf.f[(k, a)] * a_mat[(k, j)]).sum();
                    let res = yc[(i, j)] - fit;
                    sq += res * res;
                }
                e += rf.weights[(i, a)] * sq;
            }
            e
        })
        .collect();
    let mut best = 0;
    for a in 1..errors.len() {
        if errors[a] < errors[best] {
            best = a;
        }
    }
    best
}

/// One direction of one fold: returns (score, undefined correlations, chosen α).
fn fold_direction(
    src: &PreparedLayer,
    tgt: &PreparedLayer,
    cross_tr: MatRef<'_, f64>,
    f: usize,
) -> Result<(f64, usize, f64), KernelError> {
    let rf = &src.ridge()?[f];
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
    let c = rf.v.transpose() * &zty;

    let best = if alphas.len() == 1 { 0 } else { loo_best_alpha(rf, tgt, f, &c, alphas.len()) };

    // β_z = V diag(g) C; predict the test rows.
    let gc = Mat::from_fn(c.nrows(), c.ncols(), |k, j| rf.g[(k, best)] * c[(k, j)]);
    let beta = &rf.v * &gc;
    let st_s = src.stats(f);
    let (shift, scale): (&[f64], Vec<f64>) = match settings.test_zscore {
        TestZscore::Train => (&st_s.train_mean, rf.scale.clone()),
        TestZscore::Own => (
            &st_s.test_mean,
            st_s.test_std.iter().map(|&s| if s == 0.0 { 1.0 } else { s }).collect(),
        ),
    };
    let xte = src.test_rows(f);
    let zte = Mat::from_fn(xte.nrows(), n_s, |i, j| (xte[(i, j)] - shift[j]) / scale[j]);
    let pred = &zte * &beta;
    let (rs, undefined) =
        stats::paired_column_correlations(pred.as_ref(), tgt.test_rows(f), settings.corr == Corr::Spearman);
    Ok((stats::mean(&rs), undefined, alphas[best]))
}

/// The linear score of a pair: ridge X→Y and Y→X in every fold.
pub(crate) fn score(pair: &Pair<'_>) -> Result<Score, KernelError> {
    let (x, y) = (pair.x(), pair.y());
    let k = x.k();
    let results: Vec<Result<((f64, usize, f64), (f64, usize, f64)), KernelError>> = (0..k)
        .into_par_iter()
        .map(|f| {
            let cross = pair.train_cross(f);
            let xy = fold_direction(x, y, cross.as_ref(), f)?;
            let yx = fold_direction(y, x, cross.transpose(), f)?;
            Ok((xy, yx))
        })
        .collect();
    let mut xy = Vec::with_capacity(k);
    let mut yx = Vec::with_capacity(k);
    let (mut alpha_xy, mut alpha_yx) = (Vec::with_capacity(k), Vec::with_capacity(k));
    let mut undefined = 0;
    for r in results {
        let (a, b) = r?;
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
