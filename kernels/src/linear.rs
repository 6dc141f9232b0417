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
//! $T_\alpha = W^\top \mathrm{diag}((1-h(\alpha))^{-2})\,W$ depend on the source alone
//! ([`RidgeFactor`], cached in the [`PreparedLayer`]); a pair then needs one product
//! $B = Y_c C^\top$ per fold and direction, and $E(\alpha)$ expands as
//! $\sum_i w_i\|y_i\|^2 - 2\sum_{ik} w_i W_{ik} g_k B_{ik} + \sum_{kl} g_k g_l (CC^\top)_{kl} (T_\alpha)_{kl}$
//! with $C = V^\top Z^\top Y_c$.

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
    /// `W = Z V` over the train rows (m_tr × r).
    w: Mat<f64>,
    /// `g_k(α) = 1/(λ_k + α)` for every α of the grid (r × n_α).
    g: Mat<f64>,
    /// Leave-one-out weights `(1 − h_i(α))⁻²` (m_tr × n_α); empty for a single α.
    weights: Mat<f64>,
    /// `T_α = Wᵀ diag(weights_α) W` per α; empty for a single α.
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

        // W = Z V = X_tr V' − 1 (μᵀ V'), V' = D⁻¹ V, evaluated on the two train row blocks.
        let v_scaled = Mat::from_fn(n, r, |i, k| v[(i, k)] / scale[i]);
        let offset: Vec<f64> = (0..r).map(|k| (0..n).map(|i| mu[i] * v_scaled[(i, k)]).sum()).collect();
        let [p0, p1] = layer.train_parts(f);
        let w0 = p0 * &v_scaled;
        let w1 = p1 * &v_scaled;
        let w = Mat::from_fn(m_tr, r, |i, k| {
            let raw = if i < p0.nrows() { w0[(i, k)] } else { w1[(i - p0.nrows(), k)] };
            raw - offset[k]
        });

        let alphas = &layer.settings().alphas;
        let g = Mat::from_fn(r, alphas.len(), |k, a| 1.0 / (lambda[k] + alphas[a]));
        let (weights, t) = if alphas.len() > 1 {
            let w2 = Mat::from_fn(m_tr, r, |i, k| w[(i, k)] * w[(i, k)]);
            let h = &w2 * &g;
            let weights = Mat::from_fn(m_tr, alphas.len(), |i, a| {
                let one_minus_h = 1.0 - (h[(i, a)] + 1.0 / m_tr as f64);
                1.0 / (one_minus_h * one_minus_h)
            });
            let t = (0..alphas.len())
                .into_par_iter()
                .map(|a| {
                    let ws = Mat::from_fn(m_tr, r, |i, k| w[(i, k)] * weights[(i, a)].sqrt());
                    ws.transpose() * &ws
                })
                .collect();
            (weights, t)
        } else {
            (Mat::zeros(0, 0), Vec::new())
        };
        Ok(Self { scale, constant, v, lambda, w, g, weights, t })
    }

    /// Number of directions kept (the rank of the z-scored train source).
    pub fn rank(&self) -> usize {
        self.lambda.len()
    }
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
    let st_t = tgt.stats(f);

    // C = Vᵀ Zᵀ Y_c with Zᵀ Y_c = D⁻¹ (centred train cross-product).
    let zty = Mat::from_fn(n_s, n_t, |i, j| {
        if rf.constant[i] {
            0.0
        } else {
            cross_tr[(i, j)] / rf.scale[i]
        }
    });
    let c = rf.v.transpose() * &zty;

    let best = if alphas.len() == 1 {
        0
    } else {
        let yc = tgt.train_rows_minus(f, &st_t.train_mean);
        let b = &yc * c.transpose();
        let wb = Mat::from_fn(b.nrows(), b.ncols(), |i, k| rf.w[(i, k)] * b[(i, k)]);
        let s = &wb * &rf.g;
        let gram_c = &c * c.transpose();
        let y_sq: Vec<f64> = (0..yc.nrows())
            .map(|i| (0..n_t).map(|j| yc[(i, j)] * yc[(i, j)]).sum())
            .collect();
        let errors: Vec<f64> = (0..alphas.len())
            .map(|a| {
                let mut e = 0.0;
                for i in 0..yc.nrows() {
                    e += rf.weights[(i, a)] * (y_sq[i] - 2.0 * s[(i, a)]);
                }
                let t = &rf.t[a];
                let r = rf.rank();
                for l in 0..r {
                    let gl = rf.g[(l, a)];
                    for k in 0..r {
                        e += rf.g[(k, a)] * gl * gram_c[(k, l)] * t[(k, l)];
                    }
                }
                e
            })
            .collect();
        // The first minimum, as RidgeCV keeps the first best score.
        let mut best = 0;
        for a in 1..errors.len() {
            if errors[a] < errors[best] {
                best = a;
            }
        }
        best
    };

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
