//! `--device auto|cpu|cuda[:N]` (or `REPFLOW_DEVICE`, or a pipeline's `[options] device`):
//! which compute backend the metric kernels use. The device is never part of a cache key;
//! every backend computes the same numbers to rounding.

use std::sync::Arc;

use repflow_kernels::backend::{self, Cpu};

use crate::error::UserError;

/// The accepted values, for messages.
pub const CHOICES: &str = "auto, cpu, cuda or cuda:N";

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
    let gpu = |ordinal: usize| {
        let mut b = repflow_cuda::CudaBackend::open(ordinal)?;
        if let Some(dir) = ptx_cache {
            b = b.with_ptx_cache(dir.to_path_buf());
        }
        b.self_check()?;
        Ok::<_, repflow_cuda::Unavailable>(b)
    };
    let chosen: Arc<dyn backend::Backend> = match choice {
        "cpu" => Arc::new(Cpu),
        "auto" => match gpu(0) {
            Ok(b) => Arc::new(b),
            Err(_) => Arc::new(Cpu),
        },
        c if c == "cuda" || c.starts_with("cuda:") => {
            let ordinal = match c.strip_prefix("cuda:") {
                None => 0,
                Some(n) => n.parse().map_err(|_| {
                    UserError::input(format!(
                        "{origin}: `{c}` is not a device; expected {CHOICES}"
                    ))
                })?,
            };
            Arc::new(gpu(ordinal).map_err(|e| {
                UserError::input(format!("{origin}: `{c}` cannot be used: {e}"))
                    .hint("use `--device cpu` (or `auto`, which falls back to the CPU)")
            })?)
        }
        other => {
            return Err(UserError::input(format!(
                "{origin}: unknown device `{other}`; expected {CHOICES}"
            )))
        }
    };
    let name = chosen.name();
    backend::install(chosen);
    Ok(name)
}
