//! The compute backend: the few heavy dense operations the metrics spend their time in —
//! Gram and cross-products over all stimuli or one fold's block, held-out predictions
//! (a test block times a fitted map), the polar factor of a
//! cross-covariance, the eigendecomposition of a symmetric matrix, the cross-products of full
//! feature maps under every spatial shift — behind one small trait,
//! so that a GPU can do them (`repflow-cuda`) while the rest of the mathematics stays here.
//!
//! [`Cpu`] is faer on rayon's threads and always present. One backend serves the whole
//! process ([`install`], [`current`]); it is never part of a cache key, since every backend
//! computes the same numbers to rounding (the CUDA backend's parity tests say how close).

use std::sync::{Arc, RwLock};

use faer::{Mat, MatRef, Side};
use rayon::prelude::*;

use crate::shift_cross::MapDims;
use crate::KernelError;

/// The heavy operations of the metric kernels.
pub trait Backend: Send + Sync {
    /// A short name for logs and summaries (`"cpu"`, `"cuda:0 NVIDIA H200"`).
    fn name(&self) -> String;

    /// `aᵀ a` (a: rows × r → r × r, exactly symmetric).
    fn gram(&self, a: MatRef<'_, f64>) -> Mat<f64>;

    /// `aᵀ b` (a: rows × p, b: rows × q → p × q).
    fn cross(&self, a: MatRef<'_, f64>, b: MatRef<'_, f64>) -> Mat<f64>;

    /// `a b` (a: rows × k, b: k × q → rows × q): held-out predictions under a fitted map.
    /// faer's product on the CPU unless overridden.
    fn product(&self, a: MatRef<'_, f64>, b: MatRef<'_, f64>) -> Mat<f64> {
        crate::products::product(a, b)
    }

    /// The polar factor `U Vᵀ` of `c` from its thin SVD `c = U S Vᵀ` (orthogonal
    /// Procrustes' map).
    fn polar(&self, c: MatRef<'_, f64>) -> Result<Mat<f64>, KernelError>;

    /// Eigenvalues (ascending) and eigenvectors (columns) of the symmetric `s`, read from
    /// its lower triangle.
    fn sym_eigen(&self, s: MatRef<'_, f64>) -> Result<(Vec<f64>, Mat<f64>), KernelError>;

    /// Whether batched calls ([`Backend::cross_many`], [`Backend::polar_many`]) are much
    /// faster here than the same calls one at a time (a GPU: fewer, larger launches), so
    /// that callers gather work into batches. False on the CPU.
    fn prefers_batches(&self) -> bool {
        false
    }

    /// `aᵢᵀ bᵢ` for every pair of blocks, in one call: a GPU does them as one batched
    /// product; by default (the CPU) they run side by side on rayon's threads.
    fn cross_many(&self, blocks: &[(MatRef<'_, f64>, MatRef<'_, f64>)]) -> Vec<Mat<f64>> {
        blocks.par_iter().map(|(a, b)| self.cross(*a, *b)).collect()
    }

    /// The polar factor of every matrix in `cs`, in one call: a GPU does them as batched
    /// SVDs; by default (the CPU) they run side by side on rayon's threads.
    fn polar_many(&self, cs: &[MatRef<'_, f64>]) -> Vec<Result<Mat<f64>, KernelError>> {
        cs.par_iter().map(|c| self.polar(*c)).collect()
    }

    /// Keeps `layers` — whole layers' data, contiguous and column-major — on the device
    /// while work on views into them follows, so that their fold blocks are not sent again
    /// for every pair and fold (a GPU, as far as its memory allows; by default, the CPU,
    /// nothing). Each `hold` is ended by a [`Backend::release`] of the same layers before
    /// their data may change or be freed; [`Held`] does both.
    fn hold(&self, _layers: &[MatRef<'_, f64>]) {}

    /// Ends a [`Backend::hold`] of `layers`.
    fn release(&self, _layers: &[MatRef<'_, f64>]) {}

    /// The Pearson correlation of each column of the prediction `x m` with the same column
    /// of `y` (`x`: rows × p and `y`: rows × q, views into held layers; `m`: p × q), the
    /// prediction never leaving the device: `Some` (NaN where a column is constant), or
    /// `None` where this backend does not do it here — the CPU, a view it does not hold, or
    /// work too small to be worth it — and the caller computes the prediction itself.
    fn held_correlations(
        &self,
        _x: MatRef<'_, f64>,
        _m: MatRef<'_, f64>,
        _y: MatRef<'_, f64>,
    ) -> Option<Vec<f64>> {
        None
    }

    /// The cross-products of two layers' full maps under every circular spatial shift
    /// (layout and definition: [`crate::shift_cross`]); by FFT on the CPU unless overridden.
    fn shifted_cross(&self, a: &[f32], b: &[f32], dims: MapDims) -> Vec<f64> {
        crate::shift_cross::shifted_cross_cpu(a, b, dims)
    }
}

/// faer on the CPU: the reference every other backend is tested against.
#[derive(Debug, Default, Clone, Copy)]
pub struct Cpu;

impl Backend for Cpu {
    fn name(&self) -> String {
        "cpu".into()
    }

    fn gram(&self, a: MatRef<'_, f64>) -> Mat<f64> {
        crate::stats::gram(a, None)
    }

    fn cross(&self, a: MatRef<'_, f64>, b: MatRef<'_, f64>) -> Mat<f64> {
        crate::products::cross(a, b)
    }

    fn polar(&self, c: MatRef<'_, f64>) -> Result<Mat<f64>, KernelError> {
        let svd = c
            .thin_svd()
            .map_err(|e| KernelError::Numerical(format!("SVD of the cross-covariance: {e:?}")))?;
        Ok(svd.U() * svd.V().transpose())
    }

    fn sym_eigen(&self, s: MatRef<'_, f64>) -> Result<(Vec<f64>, Mat<f64>), KernelError> {
        let eig = s
            .self_adjoint_eigen(Side::Lower)
            .map_err(|e| KernelError::Numerical(format!("eigendecomposition: {e:?}")))?;
        let n = s.nrows();
        Ok(((0..n).map(|k| eig.S()[k]).collect(), eig.U().to_owned()))
    }
}

/// Layers held on a backend ([`Backend::hold`]) for as long as this lives.
pub struct Held<'a> {
    backend: Arc<dyn Backend>,
    layers: Vec<MatRef<'a, f64>>,
}

impl<'a> Held<'a> {
    /// Holds `layers` on `backend`, each once (by its data's address).
    pub fn new(
        backend: Arc<dyn Backend>,
        layers: impl IntoIterator<Item = MatRef<'a, f64>>,
    ) -> Self {
        let mut unique: Vec<MatRef<'a, f64>> = Vec::new();
        for layer in layers {
            if !unique.iter().any(|u| u.as_ptr() == layer.as_ptr()) {
                unique.push(layer);
            }
        }
        backend.hold(&unique);
        Held {
            backend,
            layers: unique,
        }
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.backend.release(&self.layers);
    }
}

static CURRENT: RwLock<Option<Arc<dyn Backend>>> = RwLock::new(None);

/// Makes `backend` the one every kernel uses from now on (the command line does this once,
/// from `--device`).
pub fn install(backend: Arc<dyn Backend>) {
    *CURRENT.write().unwrap_or_else(|e| e.into_inner()) = Some(backend);
}

/// Whether a backend was installed (else [`current`] is the CPU).
pub fn installed() -> bool {
    CURRENT.read().unwrap_or_else(|e| e.into_inner()).is_some()
}

/// The backend in use: the installed one, else [`Cpu`].
pub fn current() -> Arc<dyn Backend> {
    CURRENT
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
        .unwrap_or_else(|| Arc::new(Cpu))
}
