//! [`Custom`]: repflow's own kernels (`kernels/cuda/*.cu`) compiled for one device and
//! launched on host data.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use cudarc::driver::{
    CudaContext, CudaFunction, CudaSlice, CudaStream, CudaView, LaunchConfig, PushKernelArg,
};
use faer::MatRef;
use repflow_kernels::maps::{MapReduction, MapShape};

use crate::Unavailable;

/// Threads per block of the column kernels (a power of two, as their reductions need).
const COLUMN_THREADS: u32 = 256;

/// The compiled kernels on one device.
pub struct Custom {
    stream: Arc<CudaStream>,
    functions: HashMap<&'static str, CudaFunction>,
}

fn launch_error<E: std::fmt::Debug>(what: &'static str) -> impl Fn(E) -> String {
    move |e| format!("{what}: {e:?}")
}

impl Custom {
    /// Compiles every source for device `ordinal`'s compute capability (through the PTX
    /// cache in `ptx_cache` when given) and loads it.
    pub fn open(ordinal: usize, ptx_cache: Option<&Path>) -> Result<Self, Unavailable> {
        crate::probe()?;
        let ctx = CudaContext::new(ordinal)
            .map_err(|e| Unavailable(format!("cannot open CUDA device {ordinal}: {e:?}")))?;
        let (major, minor) = ctx
            .compute_capability()
            .map_err(|e| Unavailable(format!("compute capability of device {ordinal}: {e:?}")))?;
        // NVRTC takes the architecture as a static string: one per process and device kind.
        let arch: &'static str = Box::leak(format!("compute_{major}{minor}").into_boxed_str());
        let mut functions = HashMap::new();
        for (source, ptx) in crate::compile_all(Some(arch), ptx_cache).map_err(Unavailable)? {
            let module = ctx
                .load_module(ptx)
                .map_err(|e| Unavailable(format!("loading {}: {e:?}", source.file)))?;
            for &entry in source.entry_points {
                let f = module
                    .load_function(entry)
                    .map_err(|e| Unavailable(format!("{}: kernel {entry}: {e:?}", source.file)))?;
                functions.insert(entry, f);
            }
        }
        Ok(Custom {
            stream: ctx.default_stream(),
            functions,
        })
    }

    /// Reduces `x` (`shape`, row-major) to n × c with the CPU's arithmetic in its order
    /// ([`repflow_kernels::maps`]).
    pub fn reduce_maps(
        &self,
        x: &[f32],
        shape: MapShape,
        how: MapReduction,
    ) -> Result<Vec<f32>, String> {
        shape.check(x.len()).map_err(|e| e.to_string())?;
        let MapShape { n, c, h, w } = shape;
        let name = match how {
            MapReduction::CenterPixel => "reduce_center_pixel",
            MapReduction::MeanPool => "reduce_mean_pool",
            MapReduction::MaxPool => "reduce_max_pool",
        };
        let s = &self.stream;
        let dx = s
            .clone_htod(x)
            .map_err(launch_error("copy to the device"))?;
        let mut out = s
            .alloc_zeros::<f32>((n * c).max(1))
            .map_err(launch_error("device allocation"))?;
        let dims = [n as i32, c as i32, h as i32, w as i32];
        let mut b = s.launch_builder(&self.functions[name]);
        b.arg(&dx).arg(&mut out);
        for d in &dims {
            b.arg(d);
        }
        // SAFETY: the kernel reads n·c·h·w floats and writes n·c, the sizes allocated.
        unsafe { b.launch(LaunchConfig::for_num_elems((n * c) as u32)) }
            .map_err(launch_error(name))?;
        let mut v = s
            .clone_dtoh(&out)
            .map_err(launch_error("copy from the device"))?;
        v.truncate(n * c);
        Ok(v)
    }

    fn upload(&self, m: MatRef<'_, f64>) -> Result<cudarc::driver::CudaSlice<f64>, String> {
        self.stream
            .clone_htod(&crate::staging::column_major(m))
            .map_err(launch_error("copy to the device"))
    }

    fn columns(&self, cols: usize) -> LaunchConfig {
        LaunchConfig {
            grid_dim: (cols as u32, 1, 1),
            block_dim: (COLUMN_THREADS, 1, 1),
            shared_mem_bytes: 0,
        }
    }

    /// Mean and standard deviation (ddof = 0) of rows `r0..r1` of each column of `a`.
    pub fn column_stats(
        &self,
        a: MatRef<'_, f64>,
        r0: usize,
        r1: usize,
    ) -> Result<(Vec<f64>, Vec<f64>), String> {
        if r0 >= r1 || r1 > a.nrows() || a.ncols() == 0 {
            return Err(format!(
                "rows {r0}..{r1} of a {} × {} matrix",
                a.nrows(),
                a.ncols()
            ));
        }
        let s = &self.stream;
        let da = self.upload(a)?;
        let alloc = || {
            s.alloc_zeros::<f64>(a.ncols())
                .map_err(launch_error("device allocation"))
        };
        let (mut mean, mut std) = (alloc()?, alloc()?);
        let (ld, lo, hi) = (a.nrows() as i32, r0 as i32, r1 as i32);
        let mut b = s.launch_builder(&self.functions["column_stats"]);
        b.arg(&da)
            .arg(&ld)
            .arg(&lo)
            .arg(&hi)
            .arg(&mut mean)
            .arg(&mut std);
        // SAFETY: one block per column of the uploaded matrix; outputs hold one per column.
        unsafe { b.launch(self.columns(a.ncols())) }.map_err(launch_error("column_stats"))?;
        Ok((
            s.clone_dtoh(&mean)
                .map_err(launch_error("copy from the device"))?,
            s.clone_dtoh(&std)
                .map_err(launch_error("copy from the device"))?,
        ))
    }

    /// Pearson correlation of each column of `a` with the same column of `b` (NaN where
    /// either is constant).
    pub fn matched_correlation(
        &self,
        a: MatRef<'_, f64>,
        b: MatRef<'_, f64>,
    ) -> Result<Vec<f64>, String> {
        if a.shape() != b.shape() || a.nrows() == 0 || a.ncols() == 0 {
            return Err(format!(
                "matched columns need equal, non-empty shapes ({:?} vs {:?})",
                a.shape(),
                b.shape()
            ));
        }
        let (da, db) = (self.upload(a)?, self.upload(b)?);
        let rows = a.nrows();
        self.matched_correlation_on_device(
            (&da.slice(..), rows),
            (&db.slice(..), rows),
            rows,
            a.ncols(),
        )
    }

    /// [`Custom::matched_correlation`] of the first `rows` rows of `cols` columns of two
    /// column-major device matrices, each given with its leading dimension (≥ `rows`).
    pub(crate) fn matched_correlation_on_device(
        &self,
        (a, lda): (&CudaView<'_, f64>, usize),
        (b, ldb): (&CudaView<'_, f64>, usize),
        rows: usize,
        cols: usize,
    ) -> Result<Vec<f64>, String> {
        let fits = |v: &CudaView<'_, f64>, ld: usize| {
            ld >= rows && v.len() >= ld * cols.saturating_sub(1) + rows
        };
        if rows == 0 || cols == 0 || !fits(a, lda) || !fits(b, ldb) {
            return Err(format!(
                "matched columns: {rows} × {cols} does not fit the device matrices"
            ));
        }
        let s = &self.stream;
        let mut r = s
            .alloc_zeros::<f64>(cols)
            .map_err(launch_error("device allocation"))?;
        let (rows, lda, ldb) = (rows as i32, lda as i32, ldb as i32);
        let mut l = s.launch_builder(&self.functions["matched_correlation"]);
        l.arg(a).arg(&lda).arg(b).arg(&ldb).arg(&rows).arg(&mut r);
        // SAFETY: one block per column; each reads `rows` values of its column, within the
        // views (checked above).
        unsafe { l.launch(self.columns(cols)) }.map_err(launch_error("matched_correlation"))?;
        s.clone_dtoh(&r)
            .map_err(launch_error("copy from the device"))
    }

    /// [`Custom::identity_distance`] of host matrices (all `q × q`, one `q`).
    pub fn identity_distance_of(
        &self,
        mats: &[MatRef<'_, f64>],
        s: f64,
    ) -> Result<Vec<f64>, String> {
        let q = mats.first().map_or(0, |m| m.nrows());
        if mats.iter().any(|m| m.shape() != (q, q)) {
            return Err("identity distance: the matrices must be square and of one size".into());
        }
        let d = self
            .stream
            .clone_htod(&crate::staging::stacked(mats, q, q))
            .map_err(launch_error("copy to the device"))?;
        self.identity_distance(&d, q, mats.len(), s)
    }

    /// The largest `|a_ij − s δ_ij|` of each of the `batch` column-major `q × q` matrices in
    /// `a` (infinite where one holds a NaN): how far each is from `s I`.
    pub(crate) fn identity_distance(
        &self,
        a: &CudaSlice<f64>,
        q: usize,
        batch: usize,
        s: f64,
    ) -> Result<Vec<f64>, String> {
        if q == 0 || batch == 0 || a.len() < batch * q * q {
            return Err(format!(
                "{batch} matrices of {q} × {q} do not fit the device buffer"
            ));
        }
        let st = &self.stream;
        let mut out = st
            .alloc_zeros::<f64>(batch)
            .map_err(launch_error("device allocation"))?;
        let q32 = q as i32;
        let mut l = st.launch_builder(&self.functions["identity_distance"]);
        l.arg(a).arg(&q32).arg(&s).arg(&mut out);
        // SAFETY: one block per matrix, each reading its q × q entries (checked above).
        unsafe { l.launch(self.columns(batch)) }.map_err(launch_error("identity_distance"))?;
        st.clone_dtoh(&out)
            .map_err(launch_error("copy from the device"))
    }

    /// The cross-products of map `a` (n × ca × h × w) with every circular shift of map `b`
    /// (n × cb × h × w): `h·w` blocks of ca × cb, row-major, shift `dy·w + dx` first.
    pub fn shifted_cross(
        &self,
        a: &[f32],
        b: &[f32],
        (n, ca, cb, h, w): (usize, usize, usize, usize, usize),
    ) -> Result<Vec<f64>, String> {
        if a.len() != n * ca * h * w || b.len() != n * cb * h * w {
            return Err(format!("maps are not {n} × {ca}|{cb} × {h} × {w}"));
        }
        let total = h * w * ca * cb;
        let s = &self.stream;
        let (da, db) = (
            s.clone_htod(a)
                .map_err(launch_error("copy to the device"))?,
            s.clone_htod(b)
                .map_err(launch_error("copy to the device"))?,
        );
        let mut out = s
            .alloc_zeros::<f64>(total.max(1))
            .map_err(launch_error("device allocation"))?;
        let dims = [n as i32, ca as i32, cb as i32, h as i32, w as i32];
        let mut l = s.launch_builder(&self.functions["shifted_cross"]);
        l.arg(&da).arg(&db);
        for d in &dims {
            l.arg(d);
        }
        l.arg(&mut out);
        // SAFETY: one thread per output entry; inputs have the sizes checked above.
        unsafe { l.launch(LaunchConfig::for_num_elems(total as u32)) }
            .map_err(launch_error("shifted_cross"))?;
        let mut v = s
            .clone_dtoh(&out)
            .map_err(launch_error("copy from the device"))?;
        v.truncate(total);
        Ok(v)
    }
}
