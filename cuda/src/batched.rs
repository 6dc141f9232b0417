//! The batched operations of [`CudaBackend`](crate::CudaBackend): many fold blocks'
//! cross-products as one strided-batched `dgemm`, and many polar factors by Newton–Schulz
//! iterations — two strided-batched `dgemm`s per step for the whole batch — with a
//! per-matrix `dgesvd` for any matrix the iterations do not bring to orthonormal columns
//! (rank-deficient or badly conditioned). Work is cut into chunks that fit the device's free
//! memory, and a chunk that does not fit after all is halved and retried (said once on
//! stderr), never an out-of-memory crash.
//!
//! Why Newton–Schulz: cuSOLVER's batched SVD (`gesvdjBatched`) takes matrices up to
//! 32 × 32 and a layer has 64 to 2,048 units; one `dgesvd` per matrix leaves the GPU idle
//! between small launches. The iteration `X ← X (1.5 I − 0.5 XᵀX)` from `X₀ = C / ‖C‖_F`
//! keeps C's singular vectors and drives every singular value to 1, so its limit is C's
//! polar factor `U Vᵀ`; it is all GEMMs. (A first choice, to be confirmed by measurement on
//! a GPU: issue 13.)

use cudarc::cublas::{sys::cublasOperation_t, Gemm, GemmConfig, StridedBatchedConfig};
use cudarc::driver::CudaSlice;
use faer::{Mat, MatRef};
use repflow_kernels::batch::ChunkError;

use crate::linalg::{driver, Gpu, GpuResult};
use crate::{staging, Custom};

/// Share of the device's free memory one batch may take (cuBLAS keeps workspace too).
pub(crate) const FREE_SHARE: f64 = 0.7;

/// Newton–Schulz steps: from `X₀ = C / ‖C‖_F`, a singular value at `σ / ‖C‖_F ≥ 2·10⁻⁸`
/// (a condition number up to ~10⁶ at 2,048 units) grows 1.5-fold a step to ½ in 42 steps,
/// and is 1 to rounding 7 steps later.
const NS_STEPS: usize = 56;

/// How far `XᵀX` may be from the identity (largest entry) for `X` to be taken as the polar
/// factor: every singular value within this of 1, so `X` is within it of `U Vᵀ`.
const ORTHONORMAL_TOL: f64 = 1e-10;

/// The steps stop early once every matrix of the batch has `‖XᵀX − I‖_max` at most this:
/// the step that follows squares it to rounding (the distance falls as ¾δ² near 1). The
/// benchmark's maps stop after 24–40 steps of the 56 (`scripts/newton_schulz.py`).
const STOP_TOL: f64 = 1e-9;

/// Whether the distance is checked before step `step` (counted from 1): from step 16,
/// every 4th (a check costs one pass over the q × q matrices and a wait for the device).
fn check_due(step: usize) -> bool {
    step >= 16 && step.is_multiple_of(4)
}

/// Whether every matrix is close enough to stop, given each step matrix
/// `H = 1.5 I − 0.5 XᵀX`'s largest distance from `I` (`XᵀX − I = 2 (I − H)`); never
/// for a NaN or infinite distance.
fn converged(h_distances: &[f64]) -> bool {
    h_distances.iter().all(|d| 2.0 * d <= STOP_TOL)
}

/// Indices of `shapes` grouped by equal shape, groups in order of first appearance.
pub(crate) fn by_shape(shapes: &[(usize, usize)]) -> Vec<((usize, usize), Vec<usize>)> {
    let mut groups: Vec<((usize, usize), Vec<usize>)> = Vec::new();
    for (i, &s) in shapes.iter().enumerate() {
        match groups.iter_mut().find(|(g, _)| *g == s) {
            Some((_, idx)) => idx.push(i),
            None => groups.push((s, vec![i])),
        }
    }
    groups
}

/// A device error as a chunk's outcome: out of memory (a smaller batch may fit) or not.
pub(crate) fn classify(e: String) -> ChunkError<String> {
    if e.contains("OUT_OF_MEMORY") || e.contains("ALLOC_FAILED") {
        ChunkError::TooBig(e)
    } else {
        ChunkError::Failed(e)
    }
}

/// Device bytes one polar factor of a `p × q` matrix (p ≥ q) takes in a batch.
pub(crate) fn polar_bytes(p: usize, q: usize) -> u64 {
    // X and the next X, the q × q step matrix and its start, host staging
    8 * (3 * p * q + 2 * q * q) as u64
}

/// Device bytes one cross-product of `rows`-row blocks with `p` and `q` columns takes.
pub(crate) fn cross_bytes(rows: usize, p: usize, q: usize) -> u64 {
    8 * (rows * (p + q) + p * q) as u64
}

fn op(t: bool) -> cublasOperation_t {
    if t {
        cublasOperation_t::CUBLAS_OP_T
    } else {
        cublasOperation_t::CUBLAS_OP_N
    }
}

/// One strided-batched product: `c_i = alpha op(a_i) op(b_i) + beta c_i`, column-major.
struct Batched {
    ta: bool,
    tb: bool,
    mnk: (usize, usize, usize),
    lda: usize,
    ldb: usize,
    alpha: f64,
    beta: f64,
    batch: usize,
}

impl Gpu {
    /// Free device memory, bytes.
    pub(crate) fn free_bytes(&self) -> GpuResult<u64> {
        self.stream
            .context()
            .mem_get_info()
            .map(|(free, _)| free as u64)
            .map_err(driver("device memory query"))
    }

    /// `mats` as one buffer of `rows × cols` column-major matrices, each padded below with
    /// zero rows.
    fn upload_padded(
        &self,
        mats: &[MatRef<'_, f64>],
        rows: usize,
        cols: usize,
    ) -> GpuResult<CudaSlice<f64>> {
        self.stream
            .clone_htod(&staging::stacked(mats, rows, cols))
            .map_err(driver("copy to the device"))
    }

    fn batched(
        &self,
        g: Batched,
        a: &CudaSlice<f64>,
        b: &CudaSlice<f64>,
        c: &mut CudaSlice<f64>,
    ) -> GpuResult<()> {
        let (m, n, k) = g.mnk;
        let cols_a = if g.ta { m } else { k };
        let cols_b = if g.tb { k } else { n };
        let cfg = StridedBatchedConfig {
            gemm: GemmConfig {
                transa: op(g.ta),
                transb: op(g.tb),
                m: m as i32,
                n: n as i32,
                k: k as i32,
                alpha: g.alpha,
                lda: g.lda.max(1) as i32,
                ldb: g.ldb.max(1) as i32,
                beta: g.beta,
                ldc: m.max(1) as i32,
            },
            batch_size: g.batch as i32,
            stride_a: (g.lda * cols_a) as i64,
            stride_b: (g.ldb * cols_b) as i64,
            stride_c: (m * n) as i64,
        };
        // SAFETY: a, b and c hold `batch` column-major matrices of the strides above.
        unsafe { self.blas.gemm_strided_batched(cfg, a, b, c) }
            .map_err(driver("cuBLAS dgemmStridedBatched"))
    }

    /// `aᵢᵀ bᵢ` for blocks sharing their column counts: one strided-batched product, each
    /// block padded to the longest with zero rows (which add nothing).
    pub(crate) fn cross_batch(
        &self,
        blocks: &[(MatRef<'_, f64>, MatRef<'_, f64>)],
    ) -> GpuResult<Vec<Mat<f64>>> {
        let Some(&(a0, b0)) = blocks.first() else {
            return Ok(Vec::new());
        };
        let (p, q) = (a0.ncols(), b0.ncols());
        let rows = blocks.iter().map(|(a, _)| a.nrows()).max().unwrap_or(0);
        let a: Vec<_> = blocks.iter().map(|b| b.0).collect();
        let b: Vec<_> = blocks.iter().map(|b| b.1).collect();
        let (da, db) = (
            self.upload_padded(&a, rows, p)?,
            self.upload_padded(&b, rows, q)?,
        );
        let mut c = self
            .stream
            .alloc_zeros::<f64>((blocks.len() * p * q).max(1))
            .map_err(driver("device allocation"))?;
        let g = Batched {
            ta: true,
            tb: false,
            mnk: (p, q, rows),
            lda: rows,
            ldb: rows,
            alpha: 1.0,
            beta: 0.0,
            batch: blocks.len(),
        };
        self.batched(g, &da, &db, &mut c)?;
        self.download_many(&c, blocks.len(), p, q)
    }

    /// `count` consecutive `rows × cols` column-major matrices from the device.
    fn download_many(
        &self,
        d: &CudaSlice<f64>,
        count: usize,
        rows: usize,
        cols: usize,
    ) -> GpuResult<Vec<Mat<f64>>> {
        let host = self
            .stream
            .clone_dtoh(d)
            .map_err(driver("copy from the device"))?;
        Ok((0..count)
            .map(|b| staging::from_column_major(&host, b * rows * cols, rows, cols))
            .collect())
    }

    /// Polar factors of same-shape tall matrices (`p ≥ q`) by Newton–Schulz; `None` for a
    /// matrix the steps did not bring to orthonormal columns (its caller computes that one
    /// by SVD). With `check` (the `identity_distance` kernel), the steps stop once every
    /// matrix has converged ([`converged`]); a failed check is ignored (the steps go on).
    pub(crate) fn polar_newton_schulz(
        &self,
        cs: &[MatRef<'_, f64>],
        check: Option<&Custom>,
    ) -> GpuResult<Vec<Option<Mat<f64>>>> {
        let Some(c0) = cs.first() else {
            return Ok(Vec::new());
        };
        let (p, q, batch) = (c0.nrows(), c0.ncols(), cs.len());
        // X₀ = C / ‖C‖_F (a zero or non-finite C stays zero and fails the check)
        let scaled: Vec<Mat<f64>> = cs
            .iter()
            .map(|c| {
                let norm = c.norm_l2();
                let s = if norm > 0.0 && norm.is_finite() {
                    1.0 / norm
                } else {
                    0.0
                };
                Mat::from_fn(p, q, |i, j| c[(i, j)] * s)
            })
            .collect();
        let refs: Vec<_> = scaled.iter().map(|m| m.as_ref()).collect();
        let mut x = self.upload_padded(&refs, p, q)?;
        let identity = |scale: f64| -> Vec<f64> {
            let mut h = vec![0.0; batch * q * q];
            for b in 0..batch {
                for d in 0..q {
                    h[b * q * q + d * q + d] = scale;
                }
            }
            h
        };
        let start = self
            .stream
            .clone_htod(&identity(1.5))
            .map_err(driver("copy to the device"))?;
        let alloc = |len: usize| {
            self.stream
                .alloc_zeros::<f64>(len.max(1))
                .map_err(driver("device allocation"))
        };
        let (mut h, mut y) = (alloc(batch * q * q)?, alloc(batch * p * q)?);
        let gram = |a: f64, b: f64| Batched {
            ta: true,
            tb: false,
            mnk: (q, q, p),
            lda: p,
            ldb: p,
            alpha: a,
            beta: b,
            batch,
        };
        for step in 1..=NS_STEPS {
            // H = 1.5 I − 0.5 XᵀX, then X ← X H
            self.stream
                .memcpy_dtod(&start, &mut h)
                .map_err(driver("copy on the device"))?;
            self.batched(gram(-0.5, 1.0), &x, &x, &mut h)?;
            let last = check.filter(|_| check_due(step)).is_some_and(|k| {
                k.identity_distance(&h, q, batch, 1.0)
                    .is_ok_and(|d| converged(&d))
            });
            let update = Batched {
                ta: false,
                tb: false,
                mnk: (p, q, q),
                lda: p,
                ldb: q,
                alpha: 1.0,
                beta: 0.0,
                batch,
            };
            self.batched(update, &x, &h, &mut y)?;
            std::mem::swap(&mut x, &mut y);
            if last {
                break;
            }
        }
        // XᵀX − I: the start's 1.5 I times −⅔
        self.stream
            .memcpy_dtod(&start, &mut h)
            .map_err(driver("copy on the device"))?;
        self.batched(gram(1.0, -2.0 / 3.0), &x, &x, &mut h)?;
        let off = self.download_many(&h, batch, q, q)?;
        let factors = self.download_many(&x, batch, p, q)?;
        Ok(factors
            .into_iter()
            .zip(off)
            .map(|(f, e)| {
                let err = e.norm_max();
                (err <= ORTHONORMAL_TOL && err.is_finite()).then_some(f)
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_group_in_order_of_first_appearance() {
        let shapes = [(3, 2), (4, 4), (3, 2), (1, 1), (4, 4)];
        assert_eq!(
            by_shape(&shapes),
            vec![
                ((3, 2), vec![0, 2]),
                ((4, 4), vec![1, 4]),
                ((1, 1), vec![3]),
            ]
        );
        assert!(by_shape(&[]).is_empty());
    }

    #[test]
    fn the_steps_stop_only_when_every_matrix_has_converged() {
        assert!(!check_due(15) && check_due(16) && !check_due(17) && check_due(20));
        // distances of H from I: XᵀX − I is twice that
        assert!(converged(&[1e-12, 4e-10]));
        assert!(!converged(&[1e-12, 6e-10]));
        assert!(!converged(&[f64::NAN]) && !converged(&[f64::INFINITY]));
        assert!(converged(&[]));
    }

    #[test]
    fn out_of_memory_errors_ask_for_smaller_batches_and_others_do_not() {
        for e in [
            "device allocation: DriverError(CUDA_ERROR_OUT_OF_MEMORY, \"out of memory\")",
            "cuBLAS dgemmStridedBatched: CublasError(CUBLAS_STATUS_ALLOC_FAILED)",
        ] {
            assert!(matches!(classify(e.into()), ChunkError::TooBig(_)), "{e}");
        }
        let other = "cuBLAS dgemmStridedBatched: CublasError(CUBLAS_STATUS_EXECUTION_FAILED)";
        assert!(matches!(classify(other.into()), ChunkError::Failed(_)));
    }
}
