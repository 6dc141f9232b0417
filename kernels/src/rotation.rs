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
    // After the sign fix R has a positive diagonal, so sign(det Q) = sign(det G).
    let det = g.determinant();
    if !det.is_finite() || det == 0.0 {
        return Err(KernelError::Numerical(
            "singular Gaussian matrix for the rotation".into(),
        ));
    }
    if det < 0.0 {
        q.col_mut(n - 1).iter_mut().for_each(|v| *v = -*v);
    }
    Ok(q)
}

/// `X Q` for a Haar-random rotation `Q` of X's width drawn from `seed`.
pub fn rotate(x: MatRef<'_, f64>, seed: u32) -> Result<Mat<f64>, KernelError> {
    Ok(x * haar_rotation(x.ncols(), seed)?)
}
