//! The CUDA C sources of repflow's own kernels (`kernels/cuda/*.cu`, embedded at build
//! time) and their compilation to PTX with NVRTC, cached in the store's `ptx/` folder keyed
//! by the source's digest and the target architecture.

use std::path::Path;

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
        file: "polar.cu",
        text: include_str!("../../kernels/cuda/polar.cu"),
        entry_points: &["identity_distance"],
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

/// Compiles every source: `(source, ptx)` in [`SOURCES`] order, through the cache in
/// `cache_dir` when given.
pub fn compile_all(
    arch: Option<&'static str>,
    cache_dir: Option<&Path>,
) -> Result<Vec<(Source, Ptx)>, String> {
    SOURCES
        .iter()
        .map(|s| match cache_dir {
            Some(dir) => compile_cached(s, arch, dir).map(|(p, _)| (*s, p)),
            None => compile(s, arch).map(|p| (*s, p)),
        })
        .collect()
}

/// The cache file of `source` compiled for `arch`: `<dir>/<stem>-<digest>.ptx`, the digest
/// (blake3) of the source text and the architecture.
pub fn cache_path(source: &Source, arch: Option<&str>, dir: &Path) -> std::path::PathBuf {
    let mut h = blake3::Hasher::new();
    h.update(source.text.as_bytes());
    h.update(b"\0");
    h.update(arch.unwrap_or("nvrtc-default").as_bytes());
    let stem = source.file.trim_end_matches(".cu");
    dir.join(format!("{stem}-{}.ptx", &h.finalize().to_hex()[..32]))
}

/// Compiles `source` for `arch` once per source text and architecture: a cached PTX file
/// (its first line the blake3 digest of the rest, checked on every read) is used when it is
/// whole, else the source is compiled and the file written atomically (temporary file,
/// then rename). Returns the PTX and whether it came from the cache. A cache that cannot be
/// written costs a compilation, never a failure.
pub fn compile_cached(
    source: &Source,
    arch: Option<&'static str>,
    dir: &Path,
) -> Result<(Ptx, bool), String> {
    let path = cache_path(source, arch, dir);
    if let Ok(text) = std::fs::read_to_string(&path) {
        if let Some((digest, ptx)) = text.split_once('\n') {
            if blake3::hash(ptx.as_bytes()).to_hex().as_str() == digest {
                return Ok((Ptx::from_src(ptx), true));
            }
        }
    }
    let ptx = compile(source, arch)?;
    let text = ptx.to_src();
    let framed = format!("{}\n{text}", blake3::hash(text.as_bytes()).to_hex());
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let written = std::fs::create_dir_all(dir)
        .and_then(|_| std::fs::write(&tmp, framed))
        .and_then(|_| std::fs::rename(&tmp, &path));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    Ok((ptx, false))
}
