//! # repflow-cuda
//!
//! repflow's GPU backend. [`CudaBackend`] implements the kernels' [`Backend`] seam (Gram and
//! cross-products with cuBLAS `dgemm`, the polar factor with cuSOLVER `dgesvd`, symmetric
//! eigendecompositions with `dsyevd`, all in float64), and [`Custom`] runs repflow's own
//! kernels (`kernels/cuda/*.cu`: activation reduction, column statistics, matched-column
//! correlation, the spatial-shift cross-products), compiled by NVRTC at first use.
//!
//! Everything is loaded at run time (cudarc's `dynamic-loading`): the crate builds without a
//! CUDA toolkit, and [`probe`] says — without panicking — whether a driver, a device and the
//! libraries are there.
//!
//! [`Backend`]: repflow_kernels::backend::Backend

mod batched;
mod custom;
mod held;
mod linalg;
mod sources;
mod staging;

pub use custom::Custom;
pub use linalg::{one_tiny_singular_value, CudaBackend};
pub use sources::{cache_path, compile, compile_all, compile_cached, Source, SOURCES};

/// Why the GPU path cannot be used here, in words a user can act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unavailable(pub String);

impl std::fmt::Display for Unavailable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Unavailable {}

/// Whether one of cudarc's names for library `name` (`cuda`, `cublas`, `cusolver`, `nvrtc`)
/// opens here.
pub fn library_present(name: &str) -> bool {
    cudarc::get_lib_name_candidates(name)
        .iter()
        // SAFETY: opening a shared library runs its initialisers; these are NVIDIA's own
        // libraries, the same ones cudarc opens.
        .any(|c| unsafe { libloading::Library::new(c) }.is_ok())
}

/// Checks, without panicking, that the driver, at least one device and the libraries the
/// backend needs are present; returns the number of devices.
pub fn probe() -> Result<usize, Unavailable> {
    for (lib, what) in [
        ("cuda", "the NVIDIA driver (libcuda)"),
        ("cublas", "cuBLAS"),
        ("cusolver", "cuSOLVER"),
        ("nvrtc", "NVRTC"),
    ] {
        if !library_present(lib) {
            return Err(Unavailable(format!(
                "{what} was not found (tried {})",
                cudarc::get_lib_name_candidates(lib)
                    .into_iter()
                    .filter(|c| !c.contains("64"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
    }
    let count = cudarc::driver::CudaContext::device_count()
        .map_err(|e| Unavailable(format!("the CUDA driver reports no device: {e:?}")))?;
    if count < 1 {
        return Err(Unavailable("the CUDA driver reports no device".into()));
    }
    Ok(count as usize)
}
