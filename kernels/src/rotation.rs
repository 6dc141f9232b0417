//! Haar-random rotations for the privileged-basis test.
//!
//! $G$ is an n × n standard normal matrix drawn with numpy's legacy
//! `RandomState(seed).standard_normal((n, n))` (row by row), $G = QR$, and
//! $Q \leftarrow Q\,\mathrm{diag}(\mathrm{sign}\,\mathrm{diag}\,R)$ makes the factorisation unique
//! and $Q$ Haar-distributed on O(n); if $\det Q < 0$ its last column is negated so that
//! $Q \in SO(n)$. Because the sign correction makes $Q$ unique, the result equals numpy's
//! for the same seed whatever QR routine computed it.

use faer::{Mat, MatRef};

use crate::rng::LegacyRandomState;
use crate::KernelError;

/// A Haar-random rotation in SO(n) from `seed`.
pub fn haar_rotation(n: usize, seed: u32) -> Result<Mat<f64>, KernelError> {
    let mut rng = LegacyRandomState::new(seed);
    let mut draws = Vec::with_capacity(n * n);
    for _ in 0..n * n {
        draws.push(rng.gauss());
    }
    let g = Mat::from_fn(n, n, |i, j| draws[i * n + j]);
    let qr = g.qr();
    let r = qr.R();
    let mut q = qr.compute_Q();
    for j in 0..n {
        if r[(j, j)] < 0.0 {
            q.col_mut(j).iter_mut().for_each(|v| *v = -*v);
        }
    }
    if (0..n).any(|j| r[(j, j)] == 0.0 || !r[(j, j)].is_finite()) {
        return Err(KernelError::Numerical(
            "singular Gaussian matrix for the rotation".into(),
        ));
    }
    // det Q is ±1; computed on Q itself (det G overflows f64 from n ≈ 300 on).
    let det = q.determinant();
    if det < 0.0 {
        q.col_mut(n - 1).iter_mut().for_each(|v| *v = -*v);
    }
    Ok(q)
}

/// `X Q` for a Haar-random rotation `Q` of X's width drawn from `seed`, computed on X
/// brought to unit scale by a power of two (exact) so that it neither over- nor underflows;
/// an error if the result does not fit in f64 at X's own scale.
pub fn rotate(x: MatRef<'_, f64>, seed: u32) -> Result<Mat<f64>, KernelError> {
    let [f0, f1] = crate::layer::unit_scale(x);
    let unit = Mat::from_fn(x.nrows(), x.ncols(), |i, j| x[(i, j)] * f0 * f1);
    let mut r = unit * haar_rotation(x.ncols(), seed)?;
    let (b0, b1) = (1.0 / f0, 1.0 / f1);
    for j in 0..r.ncols() {
        for v in r.col_mut(j).iter_mut() {
            *v = *v * b1 * b0;
            if !v.is_finite() {
                return Err(KernelError::Numerical(
                    "the rotated matrix overflows f64 at this scale; scale the activations down"
                        .into(),
                ));
            }
        }
    }
    Ok(r)
}
