//! The ridge factorisation of a source layer and the exact leave-one-out choice of α.
//!
//! For fold f, let $Z$ be the source's train rows z-scored with their own mean and standard
//! deviation, $Z^\top Z = V\Lambda V^\top$ and $U = ZV\Lambda^{-1/2}$ (orthonormal columns).
//! Ridge with an unpenalised intercept has hat matrix
//! $H(\alpha) = U\,\mathrm{diag}(f)\,U^\top + \mathbf 1\mathbf 1^\top/m$, $f_k = \lambda_k/(\lambda_k+\alpha)$,
//! and the exact leave-one-out error of targets $Y_c$ (centred) is
//! $E(\alpha) = \sum_i w_i\|y_i - \hat y_i\|^2$, $w_i = (1 - h_i)^{-2}$, $\hat Y = U\,\mathrm{diag}(f)A$,
//! $A = U^\top Y_c$ — scikit-learn's `RidgeCV(alpha_per_target=False)` criterion. It expands as
//! $E = \sum_i w_i\|y_i\|^2 - 2\sum_i w_i (U\circ B)_i f + \langle (ff^\top)\circ AA^\top,\ T_\alpha\rangle$
//! with $B = Y_c A^\top$ and $T_\alpha = U^\top\mathrm{diag}(w)U$.
//!
//! Everything but $A$ and $B$ depends on the source alone and is computed once per layer
//! ([`RidgeFactor`]), then shared by every target. $T_\alpha$ costs a weighted Gram per α,
//! so a rank-p approximation of the weights $w(\alpha)$ (p weighted Grams for all 17 α) gives
//! each $E(\alpha)$ within a proven interval; only the α whose intervals can hold the minimum
//! get an exact $T_\alpha$, computed on first use and kept for the next target.
//! Rows of leverage near 1 (a unit active on a single train stimulus; more units than rows)
//! would lose their tiny residuals to cancellation in the expansion: theirs are computed
//! directly.

use crate::lazy::Lazy;

use faer::linalg::matmul::matmul;
use faer::{Accum, Mat, MatRef};
use rayon::prelude::*;

use crate::layer::PreparedLayer;
use crate::{products, stats, KernelError};

/// Rows with `1 − h_i` below this at the smallest α have their residuals computed directly.
const HIGH_LEVERAGE: f64 = 1e-2;
/// Target relative accuracy of the low-rank weights that bound `E(α)`.
const BOUND_ACCURACY: f64 = 1e-4;
/// Largest rank of the low-rank weights.
const MAX_BOUND_RANK: usize = 8;

/// One fold's ridge factorisation of a source layer, shared by all its targets.
pub struct RidgeFactor {
    /// Z-score divisor of each unit: the train standard deviation, 1 where it is 0.
    pub(crate) scale: Vec<f64>,
    /// Units constant on the train rows (their z-scores are 0).
    pub(crate) constant: Vec<bool>,
    /// Eigenvectors of `ZᵀZ` with non-negligible eigenvalues (n × r).
    pub(crate) v: Mat<f64>,
    /// Their eigenvalues.
    pub(crate) lambda: Vec<f64>,
    /// `U = Z V Λ^{-1/2}` over the train rows (m_tr × r).
    u: Mat<f64>,
    /// `f_k(α) = λ_k/(λ_k + α)` (r × n_α).
    f: Mat<f64>,
    /// Leave-one-out weights `(1 − h_i(α))⁻²` (m_tr × n_α); empty for a single α.
    weights: Mat<f64>,
    /// Rows of high leverage, handled directly.
    high: Vec<usize>,
    is_high: Vec<bool>,
    /// Weighted Grams `Uᵀ diag(b_q) U` of the low-rank weight basis (over ordinary rows).
    basis: Vec<Mat<f64>>,
    /// Coefficients of each α's weights in that basis (n_α × p).
    coef: Mat<f64>,
    /// Relative error bound of each α's low-rank weights.
    rho: Vec<f64>,
    /// Exact `T_α` (over ordinary rows), computed on first use.
    exact: Vec<Lazy<Mat<f64>>>,
}

impl RidgeFactor {
    /// Bytes of memory it holds (its matrices and vectors, the exact `T_α` computed so far).
    pub fn heap_bytes(&self) -> u64 {
        let mats = [&self.v, &self.u, &self.f, &self.weights, &self.coef]
            .into_iter()
            .chain(&self.basis)
            .chain(self.exact.iter().filter_map(Lazy::get));
        let values: usize = mats.map(|m| m.nrows() * m.ncols()).sum::<usize>()
            + self.scale.len()
            + self.lambda.len()
            + self.rho.len()
            + self.high.len();
        (values * 8 + self.constant.len() + self.is_high.len()) as u64
    }
}

/// `Mᵀ diag(d) M`.
fn weighted_gram(m: MatRef<'_, f64>, d: impl Fn(usize) -> f64) -> Mat<f64> {
    stats::gram(m, Some(&d))
}

/// `Σ_kl M_kl N_kl`.
fn inner(m: &Mat<f64>, n: &Mat<f64>) -> f64 {
    let mut s = 0.0;
    for j in 0..m.ncols() {
        for i in 0..m.nrows() {
            s += m[(i, j)] * n[(i, j)];
        }
    }
    s
}

impl RidgeFactor {
    /// Factorises fold `f` of `layer` as a regression source.
    pub fn new(layer: &PreparedLayer, fold: usize) -> Result<Self, KernelError> {
        let st = layer.stats(fold);
        let n = layer.n_units();
        let m_tr = layer.n_train(fold);
        let constant: Vec<bool> = st.train_std.iter().map(|&s| s == 0.0).collect();
        let scale: Vec<f64> = st
            .train_std
            .iter()
            .map(|&s| if s == 0.0 { 1.0 } else { s })
            .collect();

        // ZᵀZ from the total Gram minus the test block, centred and scaled.
        let te = layer.test_rows(fold);
        let backend = crate::backend::current();
        let block = backend.gram(te);
        let total = layer.gram_total();
        let mu = &st.train_mean;
        let gz = Mat::from_fn(n, n, |i, j| {
            if constant[i] || constant[j] {
                return 0.0;
            }
            ((total[(i, j)] - block[(i, j)]) - m_tr as f64 * mu[i] * mu[j]) / (scale[i] * scale[j])
        });
        let (eigenvalues, vectors) = backend
            .sym_eigen(gz.as_ref())
            .map_err(|e| e.context("ZᵀZ"))?;
        let lambda_max = eigenvalues.iter().cloned().fold(0.0, f64::max);
        // Directions at the level of rounding noise in ZᵀZ are its null space.
        let tol = lambda_max * n as f64 * f64::EPSILON * 10.0;
        let keep: Vec<usize> = (0..n).filter(|&k| eigenvalues[k] > tol).collect();
        let r = keep.len();
        let v = Mat::from_fn(n, r, |i, k| {
            if constant[i] {
                0.0
            } else {
                vectors[(i, keep[k])]
            }
        });
        let lambda: Vec<f64> = keep.iter().map(|&k| eigenvalues[k]).collect();

        // U = X_tr V' − 1 (μᵀ V'), V' = D⁻¹ V Λ^{-1/2}, on the two train row blocks.
        let v_scaled = Mat::from_fn(n, r, |i, k| v[(i, k)] / (scale[i] * lambda[k].sqrt()));
        let offset: Vec<f64> = (0..r)
            .map(|k| (0..n).map(|i| mu[i] * v_scaled[(i, k)]).sum())
            .collect();
        // written block by block into one matrix (no copy of the m_tr × r products)
        let [p0, p1] = layer.train_parts(fold);
        let mut u = Mat::<f64>::zeros(m_tr, r);
        for (rows, part) in [(0, p0), (p0.nrows(), p1)] {
            products::matmul_into(
                u.as_mut().subrows_mut(rows, part.nrows()),
                part,
                v_scaled.as_ref(),
            );
        }
        for (k, &o) in offset.iter().enumerate() {
            u.col_mut(k).iter_mut().for_each(|v| *v -= o);
        }

        let alphas = &layer.settings().alphas;
        let n_alpha = alphas.len();
        let f = Mat::from_fn(r, n_alpha, |k, a| lambda[k] / (lambda[k] + alphas[a]));
        let mut factor = Self {
            scale,
            constant,
            v,
            lambda,
            u,
            f,
            weights: Mat::zeros(0, 0),
            high: Vec::new(),
            is_high: vec![false; m_tr],
            basis: Vec::new(),
            coef: Mat::zeros(0, 0),
            rho: Vec::new(),
            exact: Vec::new(),
        };
        if n_alpha > 1 {
            factor.prepare_loo(alphas);
        }
        Ok(factor)
    }

    /// Leverages, weights, high-leverage rows and the low-rank weight basis.
    fn prepare_loo(&mut self, alphas: &[f64]) {
        let (m_tr, r) = self.u.shape();
        let n_alpha = alphas.len();
        // leverages h = (U ∘ U) f, a row block at a time (no m_tr × r square of U)
        let mut h = Mat::<f64>::zeros(m_tr, n_alpha);
        let block = 256;
        for start in (0..m_tr).step_by(block) {
            let rows = block.min(m_tr - start);
            let u2 = Mat::from_fn(rows, r, |i, k| {
                self.u[(start + i, k)] * self.u[(start + i, k)]
            });
            matmul(
                h.as_mut().subrows_mut(start, rows),
                Accum::Replace,
                u2.as_ref(),
                self.f.as_ref(),
                1.0,
                faer::get_global_parallelism(),
            );
        }
        let one_minus_h = Mat::from_fn(m_tr, n_alpha, |i, a| 1.0 - 1.0 / m_tr as f64 - h[(i, a)]);
        self.weights = Mat::from_fn(m_tr, n_alpha, |i, a| {
            1.0 / (one_minus_h[(i, a)] * one_minus_h[(i, a)])
        });
        let smallest = (0..n_alpha)
            .min_by(|&a, &b| alphas[a].total_cmp(&alphas[b]))
            .unwrap_or(0);
        self.high = (0..m_tr)
            .filter(|&i| one_minus_h[(i, smallest)] < HIGH_LEVERAGE)
            .collect();
        self.high.iter().for_each(|&i| self.is_high[i] = true);

        // Low-rank weights over the ordinary rows: W ≈ P S Qᵀ, and each α's relative error.
        let ordinary = Mat::from_fn(m_tr, n_alpha, |i, a| {
            if self.is_high[i] {
                0.0
            } else {
                self.weights[(i, a)]
            }
        });
        let (p, coef, rho) = match ordinary.thin_svd() {
            Ok(svd) => {
                let mut chosen = (
                    Mat::zeros(m_tr, 0),
                    Mat::zeros(n_alpha, 0),
                    vec![f64::INFINITY; n_alpha],
                );
                for rank in 1..=MAX_BOUND_RANK.min(n_alpha) {
                    let p = Mat::from_fn(m_tr, rank, |i, q| svd.U()[(i, q)] * svd.S()[q]);
                    let coef = Mat::from_fn(n_alpha, rank, |a, q| svd.V()[(a, q)]);
                    let approx = &p * coef.transpose();
                    let rho: Vec<f64> = (0..n_alpha)
                        .map(|a| {
                            (0..m_tr)
                                .filter(|&i| !self.is_high[i])
                                .map(|i| {
                                    (approx[(i, a)] - ordinary[(i, a)]).abs() / ordinary[(i, a)]
                                })
                                .fold(0.0, f64::max)
                        })
                        .collect();
                    let worst = rho.iter().cloned().fold(0.0, f64::max);
                    chosen = (p, coef, rho);
                    if worst <= BOUND_ACCURACY {
                        break;
                    }
                }
                chosen
            }
            // Without a basis every α is a candidate and gets its exact Gram.
            Err(_) => (
                Mat::zeros(m_tr, 0),
                Mat::zeros(n_alpha, 0),
                vec![f64::INFINITY; n_alpha],
            ),
        };
        let u = self.u.as_ref();
        let is_high = &self.is_high;
        self.basis = (0..p.ncols())
            .into_par_iter()
            .map(|q| weighted_gram(u, |i| if is_high[i] { 0.0 } else { p[(i, q)] }))
            .collect();
        self.coef = coef;
        self.rho = rho;
        self.exact = (0..n_alpha).map(|_| Lazy::new()).collect();
    }

    /// Number of directions kept (the rank of the z-scored train source).
    pub fn rank(&self) -> usize {
        self.lambda.len()
    }

    /// Exact `T_α` over the ordinary rows, computed once.
    fn exact_t(&self, a: usize) -> &Mat<f64> {
        self.exact[a].get_or_compute(|| {
            weighted_gram(self.u.as_ref(), |i| {
                if self.is_high[i] {
                    0.0
                } else {
                    self.weights[(i, a)]
                }
            })
        })
    }

    /// Index of the α with the smallest leave-one-out error for targets `yc` (the train rows
    /// of the target, centred), given `c = Vᵀ Zᵀ Y_c`; the first minimum, as RidgeCV.
    pub(crate) fn best_alpha(&self, yc: &Mat<f64>, c: &Mat<f64>) -> usize {
        let n_alpha = self.f.ncols();
        if n_alpha == 1 {
            return 0;
        }
        let r = self.rank();
        let (m_tr, n_t) = yc.shape();
        let a_mat = Mat::from_fn(r, n_t, |k, j| c[(k, j)] / self.lambda[k].sqrt());
        // U ∘ (Y_c Aᵀ), in place
        let mut ub = yc * a_mat.transpose();
        for k in 0..r {
            for (v, u) in ub.col_mut(k).iter_mut().zip(self.u.col(k).iter()) {
                *v *= u;
            }
        }
        let s = &ub * &self.f;
        let gram_a = &a_mat * a_mat.transpose();
        let y_sq: Vec<f64> = (0..m_tr)
            .map(|i| (0..n_t).map(|j| yc[(i, j)] * yc[(i, j)]).sum())
            .collect();

        // Everything but the T_α term, exactly.
        let rest: Vec<f64> = (0..n_alpha)
            .into_par_iter()
            .map(|a| {
                let mut e = 0.0;
                for i in 0..m_tr {
                    if !self.is_high[i] {
                        e += self.weights[(i, a)] * (y_sq[i] - 2.0 * s[(i, a)]);
                    }
                }
                for &i in &self.high {
                    let mut sq = 0.0;
                    for j in 0..n_t {
                        let fit: f64 = (0..r)
                            .map(|k| self.u[(i, k)] * self.f[(k, a)] * a_mat[(k, j)])
                            .sum();
                        sq += (yc[(i, j)] - fit) * (yc[(i, j)] - fit);
                    }
                    e += self.weights[(i, a)] * sq;
                }
                e
            })
            .collect();
        let ffg = |a: usize| {
            Mat::from_fn(r, r, |k, l| {
                self.f[(k, a)] * self.f[(l, a)] * gram_a[(k, l)]
            })
        };
        // Intervals from the low-rank weights: |t̂ − t| ≤ ρ t.
        let bounds: Vec<(f64, f64)> = (0..n_alpha)
            .map(|a| {
                let rho = self.rho[a] * (1.0 + 1e-6) + 1e-12;
                if !rho.is_finite() || rho >= 1.0 {
                    return (f64::NEG_INFINITY, f64::INFINITY);
                }
                let m = ffg(a);
                let t_hat: f64 = (0..self.basis.len())
                    .map(|q| self.coef[(a, q)] * inner(&m, &self.basis[q]))
                    .sum();
                let slack = 1e-12 * (rest[a].abs() + t_hat.abs());
                (
                    rest[a] + t_hat / (1.0 + rho) - slack,
                    rest[a] + t_hat / (1.0 - rho) + slack,
                )
            })
            .collect();
        let best_upper = bounds.iter().map(|b| b.1).fold(f64::INFINITY, f64::min);
        let mut candidates: Vec<usize> = (0..n_alpha)
            .filter(|&a| bounds[a].0 <= best_upper)
            .collect();
        if candidates.is_empty() {
            // Non-finite bounds (a leverage of exactly 1 at α = 0): evaluate every α exactly.
            candidates = (0..n_alpha).collect();
        }
        let exact: Vec<(usize, f64)> = candidates
            .par_iter()
            .map(|&a| (a, rest[a] + inner(&ffg(a), self.exact_t(a))))
            .collect();
        let mut best = exact[0];
        for &(a, e) in &exact[1..] {
            if e < best.1 {
                best = (a, e);
            }
        }
        best.0
    }
}
