//! `--device auto|cpu|cuda[:N]` (or `REPFLOW_DEVICE`, or a pipeline's `[options] device`):
//! which compute backend the metric kernels use. The device is never part of a cache key;
//! every backend computes the same numbers to rounding.

use std::sync::Arc;

use repflow_kernels::backend::{self, Cpu};

use crate::error::UserError;

/// The accepted values, for messages.
pub const CHOICES: &str = "auto, cpu, cuda or cuda:N";

/// A parsed device choice.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Choice {
    Cpu,
    Auto,
    Cuda(usize),
}

/// `choice` parsed (`origin`: where it was given, for errors).
fn parse(choice: &str, origin: &str) -> Result<Choice, UserError> {
    match choice {
        "cpu" => Ok(Choice::Cpu),
        "auto" => Ok(Choice::Auto),
        "cuda" => Ok(Choice::Cuda(0)),
        c => match c.strip_prefix("cuda:") {
            Some(n) => n.parse().map(Choice::Cuda).map_err(|_| {
                UserError::input(format!(
                    "{origin}: `{c}` is not a device; expected {CHOICES}"
                ))
            }),
            None => Err(UserError::input(format!(
                "{origin}: unknown device `{c}`; expected {CHOICES}"
            ))),
        },
    }
}

/// GPU `ordinal` opened and self-checked, its compiled kernels kept in `ptx_cache`.
fn gpu(
    ordinal: usize,
    ptx_cache: Option<&std::path::Path>,
) -> Result<repflow_cuda::CudaBackend, repflow_cuda::Unavailable> {
    let mut b = repflow_cuda::CudaBackend::open(ordinal)?;
    if let Some(dir) = ptx_cache {
        b = b.with_ptx_cache(dir.to_path_buf());
    }
    b.self_check()?;
    Ok(b)
}

/// Installs the backend `choice` names (`origin`: where it was given, for errors) and
/// returns its name. `auto` uses GPU 0 when a driver, a device and the CUDA libraries are
/// present and it passes a parity self-check, else the CPU, silently; `cuda` that cannot be
/// had is an error saying why. A GPU keeps its compiled kernels in `ptx_cache` (the store's
/// `ptx/` folder) when given.
pub fn install(
    choice: &str,
    origin: &str,
    ptx_cache: Option<&std::path::Path>,
) -> Result<String, UserError> {
    let chosen: Arc<dyn backend::Backend> = match parse(choice, origin)? {
        Choice::Cpu => Arc::new(Cpu),
        Choice::Auto => match gpu(0, ptx_cache) {
            Ok(b) => Arc::new(b),
            Err(_) => Arc::new(Cpu),
        },
        Choice::Cuda(ordinal) => Arc::new(gpu(ordinal, ptx_cache).map_err(|e| {
            UserError::input(format!("{origin}: `{choice}` cannot be used: {e}"))
                .hint("use `--device cpu` (or `auto`, which falls back to the CPU)")
        })?),
    };
    Ok(finish(chosen))
}

/// [`install`] for the driver of a cluster run, whose nodes mostly run on other machines
/// (which get `choice` through `REPFLOW_DEVICE`): a `cuda` this machine cannot have — a
/// login node without a GPU — is not an error here; the driver's own nodes run on the CPU
/// and stderr says so once. A choice that does not parse is still an error.
pub fn install_for_driver(
    choice: &str,
    origin: &str,
    ptx_cache: Option<&std::path::Path>,
) -> Result<String, UserError> {
    let Choice::Cuda(ordinal) = parse(choice, origin)? else {
        return install(choice, origin, ptx_cache);
    };
    match gpu(ordinal, ptx_cache) {
        Ok(b) => Ok(finish(Arc::new(b))),
        Err(e) => {
            eprintln!(
                "note: {origin}: `{choice}` is not usable on this machine ({e}); the nodes run \
                 here (folds, table, --slurm-driver kinds) use the CPU, the cluster's jobs `{choice}`"
            );
            Ok(finish(Arc::new(Cpu)))
        }
    }
}

/// Makes `chosen` the process's backend; returns its name.
fn finish(chosen: Arc<dyn backend::Backend>) -> String {
    let name = chosen.name();
    backend::install(chosen);
    name
}
