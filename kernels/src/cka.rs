//! Linear centred kernel alignment on all stimuli.
//!
//! With centred $X$, $Y$ and $K = XX^\top$, $L = YY^\top$:
//! $\mathrm{CKA} = \mathrm{HSIC}(K, L) / \sqrt{\mathrm{HSIC}(K, K)\,\mathrm{HSIC}(L, L)}$.
//! The biased estimator is $\|X^\top Y\|_F^2 / (\|X^\top X\|_F \|Y^\top Y\|_F)$; the unbiased
//! one (Song et al., 2012) is
//! $\frac{1}{m(m-3)}\big[\mathrm{tr}(\tilde K\tilde L) + \frac{\mathbf 1^\top\tilde K\mathbf 1\,\mathbf 1^\top\tilde L\mathbf 1}{(m-1)(m-2)} - \frac{2}{m-2}\mathbf 1^\top\tilde K\tilde L\mathbf 1\big]$
//! with zeroed diagonals. Both are evaluated in feature space (no m × m Gram matrices).

use faer::{Mat, MatRef};

use crate::layer::PreparedLayer;
use crate::pair::{Pair, Score};
use crate::settings::{HsicEstimator, Metric, Setting};
use crate::KernelError;

/// Squared Frobenius norm.
fn frob2(a: &Mat<f64>) -> f64 {
    let n = a.norm_l2();
    n * n
}

/// Parts of the unbiased HSIC estimator for one kernel: diagonal, `Xᵀ1`.
struct KernelParts {
    diag: Vec<f64>,
    col_sum: Vec<f64>,
}

fn parts(x: MatRef<'_, f64>) -> KernelParts {
    let (m, n) = x.shape();
    let diag = (0..m)
        .map(|i| (0..n).map(|j| x[(i, j)] * x[(i, j)]).sum())
        .collect();
    let col_sum = (0..n).map(|j| x.col(j).iter().sum()).collect();
    KernelParts { diag, col_sum }
}

/// `K̃ 1 = X (Xᵀ1) − diag(K)`.
fn row_sums(x: MatRef<'_, f64>, p: &KernelParts) -> Vec<f64> {
    (0..x.nrows())
        .map(|i| {
            (0..x.ncols())
                .map(|j| x[(i, j)] * p.col_sum[j])
                .sum::<f64>()
                - p.diag[i]
        })
        .collect()
}

fn unbiased_hsic(
    cross_frob2: f64,
    x: MatRef<'_, f64>,
    px: &KernelParts,
    y: MatRef<'_, f64>,
    py: &KernelParts,
) -> f64 {
    let m = x.nrows() as f64;
    let tr = cross_frob2
        - px.diag
            .iter()
            .zip(&py.diag)
            .map(|(a, b)| a * b)
            .sum::<f64>();
    let sum =
        |p: &KernelParts| p.col_sum.iter().map(|c| c * c).sum::<f64>() - p.diag.iter().sum::<f64>();
    let (kx, ky) = (row_sums(x, px), row_sums(y, py));
    let cross_rows: f64 = kx.iter().zip(&ky).map(|(a, b)| a * b).sum();
    (tr + sum(px) * sum(py) / ((m - 1.0) * (m - 2.0)) - 2.0 / (m - 2.0) * cross_rows)
        / (m * (m - 3.0))
}

fn cka(
    x: &PreparedLayer,
    y: &PreparedLayer,
    cross: &Mat<f64>,
    estimator: HsicEstimator,
) -> Result<f64, KernelError> {
    let (gx, gy) = (x.gram_total(), y.gram_total());
    match estimator {
        HsicEstimator::Biased => Ok(frob2(cross) / (gx.norm_l2() * gy.norm_l2())),
        HsicEstimator::Unbiased => {
            let m = x.n_rows();
            if m < 4 {
                return Err(KernelError::Invalid(format!(
                    "the unbiased HSIC estimator needs at least 4 stimuli; there are {m} \
                     (use the biased estimator, or more stimuli)"
                )));
            }
            let (xd, yd) = (x.data(), y.data());
            let (px, py) = (parts(xd), parts(yd));
            let hxy = unbiased_hsic(frob2(cross), xd, &px, yd, &py);
            let hxx = unbiased_hsic(frob2(gx), xd, &px, xd, &px);
            let hyy = unbiased_hsic(frob2(gy), yd, &py, yd, &py);
            if !(hxx > 0.0 && hyy > 0.0) {
                return Err(KernelError::Numerical(format!(
                    "the unbiased HSIC of a layer with itself is not positive ({hxx:e}, {hyy:e}): \
                     too few stimuli for this estimator"
                )));
            }
            Ok(hxy / (hxx.sqrt() * hyy.sqrt()))
        }
    }
}

/// The CKA score of a pair (on all stimuli, not cross-validated).
/// The settings CKA reads (its score's key holds exactly these).
pub const READS: &[Setting] = &[Setting::Hsic];

pub(crate) fn score(pair: &Pair<'_>) -> Result<Score, KernelError> {
    let estimator = pair.x().settings().hsic;
    Ok(Score::whole(
        Metric::Cka,
        cka(pair.x(), pair.y(), pair.cross_total(), estimator)?,
        0,
    ))
}
