//! The CUDA C sources of repflow's own kernels (`kernels/cuda/*.cu`, embedded at build
//! time) and their compilation to PTX with NVRTC.

use cudarc::nvrtc::{compile_ptx_with_opts, CompileOptions, Ptx};

/// One `.cu` file and the kernels it defines.
#[derive(Debug, Clone, Copy)]
pub struct Source {
    /// The file name under `kernels/cuda/`.
    pub file: &'static str,
    /// The CUDA C text.
    pub text: &'static str,
    /// The `extern "C" __global__` entry points it defines.
    pub entry_points: &'static [&'static str],
}

/// Every kernel source, with its entry points.
pub const SOURCES: &[Source] = &[
    Source {
        file: "reduce.cu",
        text: include_str!("../../kernels/cuda/reduce.cu"),
        entry_points: &["reduce_center_pixel", "reduce_mean_pool", "reduce_max_pool"],
    },
    Source {
        file: "columns.cu",
        text: include_str!("../../kernels/cuda/columns.cu"),
        entry_points: &["column_stats", "matched_correlation"],
    },
    Source {
        file: "shift.cu",
        text: include_str!("../../kernels/cuda/shift.cu"),
        entry_points: &["shifted_cross"],
    },
];

/// Compiles one source to PTX for `arch` (`"compute_90"`, …; the NVRTC default when
/// `None`). Needs NVRTC only: no GPU, no driver.
pub fn compile(source: &Source, arch: Option<&'static str>) -> Result<Ptx, String> {
    if !crate::library_present("nvrtc") {
        return Err("NVRTC (libnvrtc) was not found".into());
    }
    compile_ptx_with_opts(
        source.text,
        CompileOptions {
            arch,
            name: Some(source.file.into()),
            ..Default::default()
        },
    )
    .map_err(|e| format!("{}: {e}", source.file))
}

/// Compiles every source: `(source, ptx)` in [`SOURCES`] order.
pub fn compile_all(arch: Option<&'static str>) -> Result<Vec<(Source, Ptx)>, String> {
    SOURCES
        .iter()
        .map(|s| compile(s, arch).map(|p| (*s, p)))
        .collect()
}
