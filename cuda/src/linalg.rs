//! [`CudaBackend`]: the metrics' heavy operations on one GPU, in float64.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use cudarc::cublas::{sys::cublasOperation_t, CudaBlas, Gemm, GemmConfig};
use cudarc::cusolver::{sys as sol, DnHandle};
use cudarc::driver::{CudaContext, CudaSlice, CudaStream, DevicePtr, DevicePtrMut};
use faer::{Mat, MatRef};
use repflow_kernels::backend::{Backend, Cpu};
use repflow_kernels::batch::{chunks, run_shrinking};
use repflow_kernels::shift_cross::MapDims;
use repflow_kernels::KernelError;

use crate::batched::{by_shape, classify, cross_bytes, polar_bytes, FREE_SHARE};
use crate::held::{self, HeldLayers};
use crate::{staging, Custom, Unavailable};

/// Products smaller than this many multiply-adds stay on the CPU: a transfer to the device
/// and back costs more than they do. (A first choice, not yet measured on a GPU.)
pub const MIN_GPU_WORK: usize = 1 << 22;

/// The device's stream and library handles; one thread at a time.
pub(crate) struct Gpu {
    pub(crate) stream: Arc<CudaStream>,
    pub(crate) blas: CudaBlas,
    solver: DnHandle,
}

/// One CUDA device serving [`Backend`]; calls from rayon's threads take turns on its stream.
pub struct CudaBackend {
    gpu: Mutex<Gpu>,
    name: String,
    min_work: usize,
    batch_bytes: Option<u64>,
    ordinal: usize,
    ptx_cache: Option<PathBuf>,
    /// repflow's own kernels, compiled at their first use.
    custom: OnceLock<Result<Custom, String>>,
    /// Layers kept on the device ([`Backend::hold`]); taken before `gpu` where both are.
    held: Mutex<HeldLayers>,
}

/// A device operation's result; the error says which call failed and how.
pub(crate) type GpuResult<T> = Result<T, String>;

/// Maps a library error to the message of a failed `what`.
pub(crate) fn driver<E: std::fmt::Debug>(what: &'static str) -> impl Fn(E) -> String {
    move |e| format!("{what}: {e:?}")
}

impl CudaBackend {
    /// Opens device `ordinal` (after [`crate::probe`] says the libraries are there).
    pub fn open(ordinal: usize) -> Result<Self, Unavailable> {
        let count = crate::probe()?;
        if ordinal >= count {
            return Err(Unavailable(format!(
                "there is no CUDA device {ordinal}; this machine has {count}"
            )));
        }
        let ctx = CudaContext::new(ordinal)
            .map_err(|e| Unavailable(format!("cannot open CUDA device {ordinal}: {e:?}")))?;
        let stream = ctx.default_stream();
        let blas =
            CudaBlas::new(stream.clone()).map_err(|e| Unavailable(format!("cuBLAS: {e:?}")))?;
        let solver =
            DnHandle::new(stream.clone()).map_err(|e| Unavailable(format!("cuSOLVER: {e:?}")))?;
        let name = format!(
            "cuda:{ordinal} {}",
            ctx.name().unwrap_or_else(|_| "unknown device".into())
        );
        Ok(CudaBackend {
            gpu: Mutex::new(Gpu {
                stream,
                blas,
                solver,
            }),
            name,
            min_work: MIN_GPU_WORK,
            batch_bytes: None,
            ordinal,
            ptx_cache: None,
            custom: OnceLock::new(),
            held: Mutex::new(HeldLayers::default()),
        })
    }

    /// The same backend keeping compiled kernels (PTX) in `dir` (the store's `ptx/`).
    pub fn with_ptx_cache(mut self, dir: PathBuf) -> Self {
        self.ptx_cache = Some(dir);
        self
    }

    fn custom(&self) -> Result<&Custom, String> {
        self.custom
            .get_or_init(|| Custom::open(self.ordinal, self.ptx_cache.as_deref()).map_err(|e| e.0))
            .as_ref()
            .map_err(Clone::clone)
    }

    /// The same backend with batches of at most `bytes` of device memory (below what the
    /// free memory allows; for the parity tests, which cut batches small).
    pub fn with_batch_bytes(mut self, bytes: u64) -> Self {
        self.batch_bytes = Some(bytes);
        self
    }

    /// The same backend sending every product to the device, however small (for the parity
    /// tests).
    pub fn with_min_work(mut self, min_work: usize) -> Self {
        self.min_work = min_work;
        self
    }

    fn run<T>(&self, f: impl FnOnce(&mut Gpu) -> GpuResult<T>) -> GpuResult<T> {
        let mut gpu = self.gpu.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut gpu)
    }

    /// The CPU's answer when the device fails, said once on stderr: a number is never lost
    /// or made up, only computed more slowly.
    fn fallback<T>(&self, what: &str, error: String, cpu: impl FnOnce() -> T) -> T {
        static SAID: OnceLock<()> = OnceLock::new();
        SAID.get_or_init(|| {
            eprintln!(
                "warning: {} failed ({what}: {error}); using the CPU for it",
                self.name
            )
        });
        cpu()
    }
}

impl Gpu {
    pub(crate) fn upload(&self, m: MatRef<'_, f64>) -> GpuResult<CudaSlice<f64>> {
        self.stream
            .clone_htod(&staging::column_major(m))
            .map_err(driver("copy to the device"))
    }

    fn download(&self, d: &CudaSlice<f64>, rows: usize, cols: usize) -> GpuResult<Mat<f64>> {
        let host = self
            .stream
            .clone_dtoh(d)
            .map_err(driver("copy from the device"))?;
        Ok(staging::from_column_major(&host, 0, rows, cols))
    }

    /// `op(a) op(b)` for column-major device matrices: (m × k)(k × n) after the ops.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn gemm<A: DevicePtr<f64>, B: DevicePtr<f64>>(
        &self,
        ta: bool,
        tb: bool,
        (m, n, k): (usize, usize, usize),
        a: &A,
        lda: usize,
        b: &B,
        ldb: usize,
    ) -> GpuResult<CudaSlice<f64>> {
        let mut c = self
            .stream
            .alloc_zeros::<f64>((m * n).max(1))
            .map_err(driver("device allocation"))?;
        let op = |t| {
            if t {
                cublasOperation_t::CUBLAS_OP_T
            } else {
                cublasOperation_t::CUBLAS_OP_N
            }
        };
        let cfg = GemmConfig {
            transa: op(ta),
            transb: op(tb),
            m: m as i32,
            n: n as i32,
            k: k as i32,
            alpha: 1.0,
            lda: lda.max(1) as i32,
            ldb: ldb.max(1) as i32,
            beta: 0.0,
            ldc: m.max(1) as i32,
        };
        // SAFETY: the buffers hold the column-major matrices the config describes.
        unsafe { self.blas.gemm(cfg, a, b, &mut c) }.map_err(driver("cuBLAS dgemm"))?;
        Ok(c)
    }

    fn cross(&self, a: MatRef<'_, f64>, b: MatRef<'_, f64>) -> GpuResult<Mat<f64>> {
        let (rows, p, q) = (a.nrows(), a.ncols(), b.ncols());
        let (da, db) = (self.upload(a)?, self.upload(b)?);
        let c = self.gemm(true, false, (p, q, rows), &da, rows, &db, rows)?;
        self.download(&c, p, q)
    }

    fn product(&self, a: MatRef<'_, f64>, b: MatRef<'_, f64>) -> GpuResult<Mat<f64>> {
        let (rows, k, q) = (a.nrows(), a.ncols(), b.ncols());
        let (da, db) = (self.upload(a)?, self.upload(b)?);
        let c = self.gemm(false, false, (rows, q, k), &da, rows, &db, k)?;
        self.download(&c, rows, q)
    }

    fn check_info(&self, info: &CudaSlice<i32>, what: &str) -> GpuResult<()> {
        let info = self
            .stream
            .clone_dtoh(info)
            .map_err(driver("copy from the device"))?;
        match info[0] {
            0 => Ok(()),
            i if i < 0 => Err(format!("{what}: argument {} was invalid", -i)),
            i => Err(format!("{what} did not converge ({i} superdiagonals)")),
        }
    }

    /// The polar factor of a tall (rows ≥ cols) matrix.
    fn polar_tall(&self, c: MatRef<'_, f64>) -> GpuResult<Mat<f64>> {
        let (m, n) = c.shape();
        let mut a = self.upload(c)?;
        let alloc = |len: usize| {
            self.stream
                .alloc_zeros::<f64>(len.max(1))
                .map_err(driver("device allocation"))
        };
        let (mut s, mut u, mut vt) = (alloc(n)?, alloc(m * n)?, alloc(n * n)?);
        let mut info = self
            .stream
            .alloc_zeros::<i32>(1)
            .map_err(driver("device allocation"))?;
        let mut lwork = 0i32;
        let h = self.solver.cu();
        // SAFETY: sizes as cuSOLVER documents for jobu = jobvt = 'S'; rwork may be null.
        unsafe {
            check(
                sol::cusolverDnDgesvd_bufferSize(h, m as i32, n as i32, &mut lwork),
                "dgesvd workspace",
            )?;
            let mut work = alloc(lwork as usize)?;
            let (pa, _ra) = a.device_ptr_mut(&self.stream);
            let (ps, _rs) = s.device_ptr_mut(&self.stream);
            let (pu, _ru) = u.device_ptr_mut(&self.stream);
            let (pv, _rv) = vt.device_ptr_mut(&self.stream);
            let (pw, _rw) = work.device_ptr_mut(&self.stream);
            let (pi, _ri) = info.device_ptr_mut(&self.stream);
            check(
                sol::cusolverDnDgesvd(
                    h,
                    b'S' as i8,
                    b'S' as i8,
                    m as i32,
                    n as i32,
                    pa as *mut f64,
                    m as i32,
                    ps as *mut f64,
                    pu as *mut f64,
                    m as i32,
                    pv as *mut f64,
                    n as i32,
                    pw as *mut f64,
                    lwork,
                    std::ptr::null_mut(),
                    pi as *mut i32,
                ),
                "dgesvd",
            )?;
        }
        self.check_info(&info, "the SVD of the cross-covariance")?;
        let p = self.gemm(false, false, (m, n, n), &u, m, &vt, n)?;
        self.download(&p, m, n)
    }

    fn sym_eigen(&self, s: MatRef<'_, f64>) -> GpuResult<(Vec<f64>, Mat<f64>)> {
        let n = s.nrows();
        let mut a = self.upload(s)?;
        let mut w = self
            .stream
            .alloc_zeros::<f64>(n.max(1))
            .map_err(driver("device allocation"))?;
        let mut info = self
            .stream
            .alloc_zeros::<i32>(1)
            .map_err(driver("device allocation"))?;
        let (jobz, uplo) = (
            sol::cusolverEigMode_t::CUSOLVER_EIG_MODE_VECTOR,
            sol::cublasFillMode_t::CUBLAS_FILL_MODE_LOWER,
        );
        let h = self.solver.cu();
        let mut lwork = 0i32;
        // SAFETY: a is n × n column-major, w holds n values, as cuSOLVER documents.
        unsafe {
            {
                let (pa, _ra) = a.device_ptr(&self.stream);
                let (pw, _rw) = w.device_ptr(&self.stream);
                check(
                    sol::cusolverDnDsyevd_bufferSize(
                        h,
                        jobz,
                        uplo,
                        n as i32,
                        pa as *const f64,
                        n as i32,
                        pw as *const f64,
                        &mut lwork,
                    ),
                    "dsyevd workspace",
                )?;
            }
            let mut work = self
                .stream
                .alloc_zeros::<f64>((lwork as usize).max(1))
                .map_err(driver("device allocation"))?;
            let (pa, _ra) = a.device_ptr_mut(&self.stream);
            let (pw, _rw) = w.device_ptr_mut(&self.stream);
            let (pk, _rk) = work.device_ptr_mut(&self.stream);
            let (pi, _ri) = info.device_ptr_mut(&self.stream);
            check(
                sol::cusolverDnDsyevd(
                    h,
                    jobz,
                    uplo,
                    n as i32,
                    pa as *mut f64,
                    n as i32,
                    pw as *mut f64,
                    pk as *mut f64,
                    lwork,
                    pi as *mut i32,
                ),
                "dsyevd",
            )?;
        }
        self.check_info(&info, "the eigendecomposition")?;
        let values = self
            .stream
            .clone_dtoh(&w)
            .map_err(driver("copy from the device"))?;
        Ok((values[..n].to_vec(), self.download(&a, n, n)?))
    }
}

fn check(status: sol::cusolverStatus_t, what: &str) -> GpuResult<()> {
    if status == sol::cusolverStatus_t::CUSOLVER_STATUS_SUCCESS {
        Ok(())
    } else {
        Err(format!("cuSOLVER {what}: {status:?}"))
    }
}

impl Backend for CudaBackend {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn gram(&self, a: MatRef<'_, f64>) -> Mat<f64> {
        if a.nrows() * a.ncols() * a.ncols() < self.min_work {
            return Cpu.gram(a);
        }
        match self.run(|g| g.cross(a, a)) {
            // exactly symmetric, as the CPU's
            Ok(c) => Mat::from_fn(c.nrows(), c.ncols(), |i, j| c[(i.max(j), i.min(j))]),
            Err(e) => self.fallback("Gram matrix", e, || Cpu.gram(a)),
        }
    }

    fn cross(&self, a: MatRef<'_, f64>, b: MatRef<'_, f64>) -> Mat<f64> {
        if a.nrows() * a.ncols() * b.ncols() < self.min_work {
            return Cpu.cross(a, b);
        }
        self.run(|g| g.cross(a, b))
            .unwrap_or_else(|e| self.fallback("cross-product", e, || Cpu.cross(a, b)))
    }

    fn product(&self, a: MatRef<'_, f64>, b: MatRef<'_, f64>) -> Mat<f64> {
        if a.nrows() * a.ncols() * b.ncols() < self.min_work {
            return Cpu.product(a, b);
        }
        self.run(|g| g.product(a, b))
            .unwrap_or_else(|e| self.fallback("product", e, || Cpu.product(a, b)))
    }

    fn hold(&self, layers: &[MatRef<'_, f64>]) {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        let gpu = self.gpu.lock().unwrap_or_else(|e| e.into_inner());
        held.hold(&gpu, layers);
    }

    fn release(&self, layers: &[MatRef<'_, f64>]) {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        held.release(layers);
    }

    fn held_correlations(
        &self,
        x: MatRef<'_, f64>,
        m: MatRef<'_, f64>,
        y: MatRef<'_, f64>,
    ) -> Option<Vec<f64>> {
        let (rows, p, q) = (x.nrows(), x.ncols(), m.ncols());
        if rows * p * q < self.min_work || m.nrows() != p || y.shape() != (rows, q) {
            return None;
        }
        let held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        match self.correlate_held(&held, x, m, y)? {
            Ok(r) => Some(r),
            // the caller predicts on the CPU
            Err(e) => self.fallback("held-out correlations", e, || None),
        }
    }

    fn polar(&self, c: MatRef<'_, f64>) -> Result<Mat<f64>, KernelError> {
        let (p, q) = c.shape();
        if p.min(q) == 0 || p * q * p.min(q) < self.min_work {
            return Cpu.polar(c);
        }
        let gpu = if p >= q {
            self.run(|g| g.polar_tall(c))
        } else {
            // polar(cᵀ) = polar(c)ᵀ
            self.run(|g| g.polar_tall(c.transpose()))
                .map(|t| t.transpose().to_owned())
        };
        match gpu {
            Ok(m) => Ok(m),
            Err(e) => self.fallback("SVD", e, || Cpu.polar(c)),
        }
    }

    fn sym_eigen(&self, s: MatRef<'_, f64>) -> Result<(Vec<f64>, Mat<f64>), KernelError> {
        let n = s.nrows();
        if n == 0 || n * n * n < self.min_work {
            return Cpu.sym_eigen(s);
        }
        match self.run(|g| g.sym_eigen(s)) {
            Ok(r) => Ok(r),
            Err(e) => self.fallback("eigendecomposition", e, || Cpu.sym_eigen(s)),
        }
    }

    fn prefers_batches(&self) -> bool {
        true
    }

    fn cross_many(&self, blocks: &[(MatRef<'_, f64>, MatRef<'_, f64>)]) -> Vec<Mat<f64>> {
        let work: usize = blocks
            .iter()
            .map(|(a, b)| a.nrows() * a.ncols() * b.ncols())
            .sum();
        if work < self.min_work {
            return Cpu.cross_many(blocks);
        }
        if let Some(done) = self.held_cross_many(blocks) {
            return done;
        }
        let shapes: Vec<_> = blocks.iter().map(|(a, b)| (a.ncols(), b.ncols())).collect();
        let mut out: Vec<Option<Mat<f64>>> = vec![None; blocks.len()];
        for ((p, q), idx) in by_shape(&shapes) {
            let group: Vec<_> = idx.iter().map(|&i| blocks[i]).collect();
            let rows = group.iter().map(|(a, _)| a.nrows()).max().unwrap_or(0);
            let done = if rows * p * q == 0 {
                Cpu.cross_many(&group)
            } else {
                self.in_chunks(
                    group.len(),
                    cross_bytes(rows, p, q),
                    "cross-products",
                    |r| self.run(|g| g.cross_batch(&group[r])),
                )
                .unwrap_or_else(|e| {
                    self.fallback("batched cross-products", e, || Cpu.cross_many(&group))
                })
            };
            for (i, c) in idx.into_iter().zip(done) {
                out[i] = Some(c);
            }
        }
        out.into_iter().map(|c| c.expect("every block")).collect()
    }

    fn polar_many(&self, cs: &[MatRef<'_, f64>]) -> Vec<Result<Mat<f64>, KernelError>> {
        let work: usize = cs
            .iter()
            .map(|c| c.nrows() * c.ncols() * c.nrows().min(c.ncols()))
            .sum();
        if work < self.min_work {
            return Cpu.polar_many(cs);
        }
        self.polar_many_on_device(cs)
    }

    fn shifted_cross(&self, a: &[f32], b: &[f32], d: MapDims) -> Vec<f64> {
        let p = d.positions();
        if d.n * p * p * d.ca * d.cb < self.min_work {
            return Cpu.shifted_cross(a, b, d);
        }
        let _turn = self.gpu.lock().unwrap_or_else(|e| e.into_inner());
        self.custom()
            .and_then(|k| k.shifted_cross(a, b, (d.n, d.ca, d.cb, d.h, d.w)))
            .unwrap_or_else(|e| {
                self.fallback("shifted cross-products", e, || Cpu.shifted_cross(a, b, d))
            })
    }
}

impl CudaBackend {
    /// Runs `run` on chunks of `count` items costing `bytes` of device memory each, within
    /// a share of the free memory; a chunk that does not fit is halved and retried, and the
    /// first time that happens it is said on stderr.
    fn in_chunks<T>(
        &self,
        count: usize,
        bytes: u64,
        what: &str,
        mut run: impl FnMut(std::ops::Range<usize>) -> GpuResult<Vec<T>>,
    ) -> GpuResult<Vec<T>> {
        let free = self.run(|g| g.free_bytes())?;
        let bound = ((free as f64 * FREE_SHARE) as u64).min(self.batch_bytes.unwrap_or(u64::MAX));
        run_shrinking(
            chunks(&vec![bytes; count], bound),
            |r| run(r).map_err(classify),
            |e| {
                eprintln!(
                    "note: {}: a batch of {what} did not fit in device memory ({e}); \
                     running it in smaller batches",
                    self.name
                )
            },
        )
    }

    /// Polar factors on the device whatever their size: each group of equal shapes by
    /// batched Newton–Schulz iterations, a matrix they do not converge on by `dgesvd`, and
    /// the CPU where the device fails.
    fn polar_many_on_device(&self, cs: &[MatRef<'_, f64>]) -> Vec<Result<Mat<f64>, KernelError>> {
        let shapes: Vec<_> = cs.iter().map(|c| c.shape()).collect();
        let mut out: Vec<Option<Result<Mat<f64>, KernelError>>> = vec![None; cs.len()];
        for ((p, q), idx) in by_shape(&shapes) {
            // tall: polar(cᵀ) = polar(c)ᵀ
            let tall: Vec<MatRef<'_, f64>> = idx
                .iter()
                .map(|&i| if p >= q { cs[i] } else { cs[i].transpose() })
                .collect();
            let (rows, cols) = (p.max(q), p.min(q));
            if cols == 0 {
                for i in idx {
                    out[i] = Some(Cpu.polar(cs[i]));
                }
                continue;
            }
            // the convergence check's kernel (without it the steps run to the end)
            let check = self.custom().ok();
            let done = self.in_chunks(tall.len(), polar_bytes(rows, cols), "polar factors", |r| {
                self.run(|g| g.polar_newton_schulz(&tall[r], check))
            });
            match done {
                Ok(done) => {
                    for (i, factor) in idx.into_iter().zip(done) {
                        out[i] = Some(match factor {
                            Some(f) if p >= q => Ok(f),
                            Some(f) => Ok(f.transpose().to_owned()),
                            // not converged: one SVD, on the device where it is large enough
                            None => self.polar(cs[i]),
                        });
                    }
                }
                Err(e) => {
                    let cpu = || idx.iter().map(|&i| Cpu.polar(cs[i])).collect::<Vec<_>>();
                    let done = self.fallback("batched polar factors", e, cpu);
                    for (i, r) in idx.iter().zip(done) {
                        out[*i] = Some(r);
                    }
                }
            }
        }
        out.into_iter().map(|r| r.expect("every matrix")).collect()
    }

    /// [`Backend::held_correlations`] on `held`, whatever the size: `None` when `x` or `y`
    /// is not in it.
    fn correlate_held(
        &self,
        held: &HeldLayers,
        x: MatRef<'_, f64>,
        m: MatRef<'_, f64>,
        y: MatRef<'_, f64>,
    ) -> Option<GpuResult<Vec<f64>>> {
        let ((dx, ldx), (dy, ldy)) = (held.device_view(x)?, held.device_view(y)?);
        let (rows, q) = (x.nrows(), m.ncols());
        Some(self.custom().and_then(|custom| {
            let pred = self.run(|g| held::predict(g, (&dx, ldx), rows, m))?;
            custom.matched_correlation_on_device((&pred.slice(..), rows), (&dy, ldy), rows, q)
        }))
    }

    /// [`Backend::cross_many`] of blocks that all lie in held layers: one product per block
    /// on the device's copy, only the results coming back; `None` when a block is not held
    /// (or the device fails, said once: the caller's batched path sends the blocks instead).
    fn held_cross_many(
        &self,
        blocks: &[(MatRef<'_, f64>, MatRef<'_, f64>)],
    ) -> Option<Vec<Mat<f64>>> {
        let held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        let views = blocks
            .iter()
            .map(|(a, b)| Some((held.device_view(*a)?, held.device_view(*b)?)))
            .collect::<Option<Vec<_>>>()?;
        let result = self.run(|g| {
            views
                .iter()
                .zip(blocks)
                .map(|(((da, lda), (db, ldb)), (a, b))| {
                    let (rows, p, q) = (a.nrows(), a.ncols(), b.ncols());
                    let c = g.gemm(true, false, (p, q, rows), da, *lda, db, *ldb)?;
                    g.download(&c, p, q)
                })
                .collect::<GpuResult<Vec<_>>>()
        });
        match result {
            Ok(done) => Some(done),
            Err(e) => self.fallback("cross-products of held layers", e, || None),
        }
    }

    /// Runs each operation on the device and on the CPU on small fixed matrices and
    /// compares them (1e-9 relative): a driver or library that computes wrong numbers is
    /// caught before any score uses it.
    pub fn self_check(&self) -> Result<(), Unavailable> {
        let a = Mat::from_fn(37, 9, |i, j| {
            ((i * 7 + j * 13) % 17) as f64 - 8.0 + (i as f64).sin()
        });
        let b = Mat::from_fn(37, 6, |i, j| {
            ((i * 5 + j * 11) % 19) as f64 - 9.0 + (j as f64).cos()
        });
        let differs =
            |what: &str| Unavailable(format!("{}: its {what} differs from the CPU's", self.name));
        let close = |x: &Mat<f64>, y: &Mat<f64>, what: &str| {
            let scale = y.norm_max().max(1.0);
            if x.shape() == y.shape() && (x - y).norm_max() <= 1e-9 * scale {
                Ok(())
            } else {
                Err(differs(what))
            }
        };
        let c = Cpu.cross(a.as_ref(), b.as_ref());
        let gpu_c = self
            .run(|g| g.cross(a.as_ref(), b.as_ref()))
            .map_err(Unavailable)?;
        close(&gpu_c, &c, "cross-product")?;
        // a prediction: rows times a map (the 9 × 6 cross-product serves as one)
        let gpu_p = self
            .run(|g| g.product(a.as_ref(), c.as_ref()))
            .map_err(Unavailable)?;
        close(&gpu_p, &Cpu.product(a.as_ref(), c.as_ref()), "product")?;
        let gpu_polar = self
            .run(|g| g.polar_tall(c.as_ref()))
            .map_err(Unavailable)?;
        let cpu_polar = Cpu
            .polar(c.as_ref())
            .map_err(|e| Unavailable(e.to_string()))?;
        close(&gpu_polar, &cpu_polar, "polar factor")?;
        // the batched path: fold blocks of unequal rows in one product; polar factors of a
        // tall, a wide and a badly conditioned matrix (the last one by SVD after the
        // Newton–Schulz steps do not converge on it; one tiny singular value leaves its
        // polar factor well determined, so both devices must agree on it)
        let blocks = [
            (a.as_ref().subrows(0, 19), b.as_ref().subrows(0, 19)),
            (a.as_ref().subrows(19, 18), b.as_ref().subrows(19, 18)),
        ];
        let gpu_blocks = self.run(|g| g.cross_batch(&blocks)).map_err(Unavailable)?;
        for (gpu, (x, y)) in gpu_blocks.iter().zip(blocks) {
            close(gpu, &Cpu.cross(x, y), "batched cross-product")?;
        }
        let badly = one_tiny_singular_value(c.as_ref())?;
        let cs = [c.as_ref(), c.transpose(), badly.as_ref()];
        for (gpu, c) in self.polar_many_on_device(&cs).into_iter().zip(cs) {
            let gpu = gpu.map_err(|e| Unavailable(e.to_string()))?;
            let cpu = Cpu.polar(c).map_err(|e| Unavailable(e.to_string()))?;
            close(&gpu, &cpu, "batched polar factor")?;
        }
        // the held path: both matrices kept on the device, a block's predictions made and
        // correlated there
        let (ad, bd) = (
            staging::column_major(a.as_ref()),
            staging::column_major(b.as_ref()),
        );
        let (al, bl) = (
            MatRef::from_column_major_slice(&ad, a.nrows(), a.ncols()),
            MatRef::from_column_major_slice(&bd, b.nrows(), b.ncols()),
        );
        let mut held = HeldLayers::default();
        self.run(|g| {
            held.hold(g, &[al, bl]);
            Ok(())
        })
        .map_err(Unavailable)?;
        let (xt, yt) = (al.subrows(19, 18), bl.subrows(19, 18));
        let gpu_r = self
            .correlate_held(&held, xt, cpu_polar.as_ref(), yt)
            .ok_or_else(|| differs("held layers (not kept on the device)"))?
            .map_err(Unavailable)?;
        let cpu_r = Cpu.product(xt, cpu_polar.as_ref());
        let (cpu_r, _) =
            repflow_kernels::stats::paired_column_correlations(cpu_r.as_ref(), yt, false);
        let as_column = |r: &[f64]| Mat::from_fn(r.len(), 1, |i, _| r[i]);
        close(
            &as_column(&gpu_r),
            &as_column(&cpu_r),
            "held-out correlations",
        )?;
        let gram = Cpu.gram(a.as_ref());
        let (values, vectors) = self
            .run(|g| g.sym_eigen(gram.as_ref()))
            .map_err(Unavailable)?;
        // eigenvectors are defined up to sign: rebuild V diag(λ) Vᵀ and compare
        let n = gram.nrows();
        let rebuilt = Mat::from_fn(n, n, |i, j| {
            (0..n)
                .map(|k| vectors[(i, k)] * values[k] * vectors[(j, k)])
                .sum::<f64>()
        });
        close(&rebuilt, &gram, "eigendecomposition")
    }
}

/// `c` (tall) with its smallest singular value set to 10⁻¹⁴ of its largest: Newton–Schulz
/// cannot converge on it in its steps, and its polar factor is still well determined.
pub fn one_tiny_singular_value(c: MatRef<'_, f64>) -> Result<Mat<f64>, Unavailable> {
    let svd = c
        .thin_svd()
        .map_err(|e| Unavailable(format!("the CPU's SVD of a fixed matrix: {e:?}")))?;
    let k = c.ncols();
    let s: Vec<f64> = (0..k)
        .map(|i| {
            if i + 1 == k {
                1e-14 * svd.S()[0]
            } else {
                svd.S()[i]
            }
        })
        .collect();
    let (u, v) = (svd.U(), svd.V());
    Ok(Mat::from_fn(c.nrows(), k, |i, j| {
        (0..k).map(|l| u[(i, l)] * s[l] * v[(j, l)]).sum::<f64>()
    }))
}
